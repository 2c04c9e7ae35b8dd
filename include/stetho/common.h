/* Status codes, error messages and allocation hooks shared by every stetho module.
 *
 * The library never prints and never exits. A failing call returns a status other
 * than STETHO_OK and leaves a one-line message (naming the file, tensor or line at
 * fault) in a thread-local buffer that stetho_last_error() returns. */
#ifndef STETHO_COMMON_H
#define STETHO_COMMON_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    STETHO_OK = 0,
    STETHO_ERR_INVALID,     /* bad argument from the caller (usage) */
    STETHO_ERR_IO,          /* open/read/write/rename failed; disk full */
    STETHO_ERR_FORMAT,      /* malformed input file */
    STETHO_ERR_UNSUPPORTED, /* well-formed but not something stetho handles */
    STETHO_ERR_MISMATCH,    /* two inputs that should agree do not */
    STETHO_ERR_NOMEM,       /* allocation failed or would be absurdly large */
    STETHO_ERR_EXISTS,      /* output exists and overwriting was not asked for */
    STETHO_ERR_NOTFOUND,    /* a named tensor, file or key is absent */
} stetho_status;

/* Message of the last failure on this thread ("" if none). */
const char *stetho_last_error(void);
/* Short name of a status ("format error", ...). */
const char *stetho_status_name(stetho_status st);
/* Clear the thread's error message. */
void stetho_clear_error(void);

/* Fault injection (SQLite style): make the Nth allocation from now fail (1 = the
 * next one). 0 disables. Returns the number of allocations made since the last
 * call, so a test can first count and then fail each one in turn. */
uint64_t stetho_fault_alloc_after(uint64_t n);
/* Same for writes: the Nth write to an output file fails with ENOSPC. */
uint64_t stetho_fault_write_after(uint64_t n);
/* Short writes: the Nth write(2) of a write loop writes only part of what it
 * was given (no error), so the loop must carry on with the rest. */
uint64_t stetho_fault_short_write_after(uint64_t n);

/* Write len bytes to path through a temporary name in the same directory,
 * renamed into place once every byte is written and the file closed: on
 * failure neither the temporary nor a partial path is left behind (an
 * existing path is untouched). */
stetho_status stetho_write_file(const char *path, const void *data, size_t len);

/* Number of threads stetho uses (OpenMP); 0 = the default. */
void stetho_set_threads(int n);
int stetho_get_threads(void);

#define STETHO_VERSION "0.1.0"

#ifdef __cplusplus
}
#endif
#endif
