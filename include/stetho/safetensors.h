/* safetensors: a validating mmap reader and a streaming writer.
 *
 * Reading maps the file and checks everything before any tensor is handed out:
 * the 8-byte header length (<= 100 MB and inside the file), UTF-8 JSON object
 * without duplicate keys, known dtypes, shape x dtype size == byte length with
 * overflow checks, offsets inside the data section, tensors contiguous with no
 * gap or overlap and covering the data section exactly.
 *
 * Writing declares every tensor first (the header must precede the data), then
 * streams each tensor's bytes in order, in as many pieces as the caller likes,
 * into "<path>.tmp.<pid>"; finish renames it into place, abort removes it. */
#ifndef STETHO_SAFETENSORS_H
#define STETHO_SAFETENSORS_H

#include "stetho/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define STETHO_ST_MAX_HEADER (100u * 1000u * 1000u)

typedef struct {
    char *key, *value;
} stetho_kv;

typedef struct {
    char *path;
    int fd;
    const uint8_t *map;     /* whole file, read-only, or the caller's buffer */
    size_t map_size;
    bool owns_map;
    const uint8_t *data;    /* start of the data section */
    uint64_t data_size;
    uint64_t header_size;   /* JSON header length (the 8-byte prefix) */
    size_t n_tensors;
    stetho_tensor *tensors; /* in file (offset) order */
    size_t *by_name;        /* tensor indices sorted by name, for lookup */
    size_t n_meta;
    stetho_kv *meta;        /* __metadata__ string pairs */
    char *names;            /* storage for tensor names */
} stetho_st_file;

/* Map and validate a file. On failure f is left closed and zeroed. */
stetho_status stetho_st_open(stetho_st_file *f, const char *path);
/* Validate a complete file image held in memory (not copied: buf must outlive f).
 * `label` names it in error messages. Used by tests and fuzzers. */
stetho_status stetho_st_open_buffer(stetho_st_file *f, const void *buf, size_t len, const char *label);
void stetho_st_close(stetho_st_file *f);
/* Find a tensor by exact name; NULL if absent. */
const stetho_tensor *stetho_st_find(const stetho_st_file *f, const char *name);
/* Value of a __metadata__ key; NULL if absent. */
const char *stetho_st_meta(const stetho_st_file *f, const char *key);
/* Hint that a tensor's pages will be read soon / are no longer needed. */
void stetho_st_prefetch(const stetho_st_file *f, const stetho_tensor *t);
void stetho_st_release(const stetho_st_file *f, const stetho_tensor *t);

typedef struct {
    char *name;
    stetho_dtype dtype;
    int ndim;
    uint64_t shape[STETHO_MAX_DIMS];
    uint64_t nbytes;
} stetho_st_decl;

typedef struct {
    char *path, *tmp_path;
    int fd;
    size_t n_decl, cap_decl;
    stetho_st_decl *decl;
    size_t n_meta, cap_meta;
    stetho_kv *meta;
    bool header_written;
    size_t cur;             /* tensor now being written */
    uint64_t cur_written;   /* bytes of it written so far */
    uint8_t *buf;           /* write-combining buffer */
    size_t buf_len, buf_cap;
    uint64_t total_bytes;   /* header + data written */
} stetho_st_writer;

/* Start a file. Nothing is created until the header is written. */
stetho_status stetho_st_writer_init(stetho_st_writer *w, const char *path);
/* Declare the next tensor (order of declaration = order on disk). */
stetho_status stetho_st_writer_declare(stetho_st_writer *w, const char *name, stetho_dtype dt,
                                       int ndim, const uint64_t *shape);
stetho_status stetho_st_writer_set_meta(stetho_st_writer *w, const char *key, const char *value);
/* Bytes of the whole file once complete (after all declarations). */
uint64_t stetho_st_writer_file_size(const stetho_st_writer *w);
/* Append bytes to the current tensor; moves to the next when it is full. The
 * header is written on the first call. */
stetho_status stetho_st_writer_write(stetho_st_writer *w, const void *data, size_t n);
/* Check every tensor is complete, flush and rename into place. Always consumes
 * the writer: on failure the temporary file is removed too. */
stetho_status stetho_st_writer_finish(stetho_st_writer *w);
/* Remove the temporary file and free everything (safe after finish, too). */
void stetho_st_writer_abort(stetho_st_writer *w);

/* Write a small file from in-memory tensors (tests, fixtures, small outputs). */
stetho_status stetho_st_write_tensors(const char *path, const stetho_tensor *tensors, size_t n,
                                      const stetho_kv *meta, size_t n_meta);

#ifdef __cplusplus
}
#endif
#endif
