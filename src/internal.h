/* Helpers private to the library: error reporting, checked allocation and
 * overflow-safe size arithmetic. Not installed. */
#ifndef STETHO_INTERNAL_H
#define STETHO_INTERNAL_H

#include "stetho/common.h"
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define ST_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define ST_PRINTF(a, b)
#endif

/* Record a message and return st, so callers can write `return st_err(...)`. */
stetho_status st_err(stetho_status st, const char *fmt, ...) ST_PRINTF(2, 3);
/* Prefix the current message with "context: " (keeps the status). */
stetho_status st_err_context(stetho_status st, const char *fmt, ...) ST_PRINTF(2, 3);

/* Allocation: NULL on failure with a message set (and under fault injection). */
void *st_malloc(size_t n);
void *st_calloc(size_t count, size_t size);
void *st_realloc(void *p, size_t n);
char *st_strdup(const char *s);
void st_free(void *p);
/* Called by every write path: true when an injected write fault fires. */
bool st_fault_write_fires(void);

/* Run OpenBLAS single-threaded where the caller splits work over the OpenMP
 * team itself: with both pools live on the same cores, each busy-waits on the
 * core the other needs (docs/design.md, "Threads"). Returns the previous count
 * for st_blas_restore. */
int st_blas_single_thread(void);
void st_blas_restore(int n);
/* What a write(2) of n bytes should be asked to write: n, or less when an
 * injected short write fires. */
size_t st_fault_write_len(size_t n);

/* Overflow-checked arithmetic: false on overflow. */
static inline bool st_mul_size(size_t a, size_t b, size_t *out) {
    return !__builtin_mul_overflow(a, b, out);
}
static inline bool st_add_size(size_t a, size_t b, size_t *out) {
    return !__builtin_add_overflow(a, b, out);
}
static inline bool st_mul_u64(uint64_t a, uint64_t b, uint64_t *out) {
    return !__builtin_mul_overflow(a, b, out);
}
static inline bool st_add_u64(uint64_t a, uint64_t b, uint64_t *out) {
    return !__builtin_add_overflow(a, b, out);
}

/* "dir/name" in a new string (NULL with a message when out of memory). */
char *st_path_join(const char *dir, const char *name);
/* An [a, b] float buffer (overflow-checked, fault-injectable); NULL and
 * *ok = false on failure, and nothing allocated once *ok is false, so a run of
 * allocations can be checked once at the end. */
float *st_alloc_floats(size_t a, size_t b, bool *ok);
/* Remove a file or a directory and everything under it (best effort). */
void st_remove_tree(const char *path);
bool st_ends_with(const char *s, const char *suffix);

/* Read a file of at most max_size bytes as a JSON object (jansson). NULL with
 * *st set and a message naming the file when it is unreadable, not JSON or not
 * an object. */
struct json_t *st_json_load_object(const char *path, size_t max_size, stetho_status *st);

/* Strict UTF-8 check (no overlongs, surrogates or code points past U+10FFFF).
 * Returns len when valid, else the byte offset of the first bad sequence. */
size_t st_utf8_check(const char *s, size_t len);

/* Growable byte buffer for building strings. */
typedef struct {
    char *data;
    size_t len, cap;
    bool failed; /* an append ran out of memory; data stays valid */
} st_buf;
void st_buf_init(st_buf *b);
void st_buf_free(st_buf *b);
bool st_buf_append(st_buf *b, const void *p, size_t n);
bool st_buf_printf(st_buf *b, const char *fmt, ...) ST_PRINTF(2, 3);

#define ST_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#endif
