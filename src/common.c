/* Thread-local error messages, checked allocation with fault injection, threads,
 * and a small string builder used across the library. */
#include "internal.h"

#include <cblas.h>

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define ST_ERRMSG_MAX 1024

static _Thread_local char tl_errmsg[ST_ERRMSG_MAX];

const char *stetho_last_error(void) { return tl_errmsg; }

void stetho_clear_error(void) { tl_errmsg[0] = '\0'; }

const char *stetho_status_name(stetho_status st) {
    switch (st) {
    case STETHO_OK: return "ok";
    case STETHO_ERR_INVALID: return "invalid argument";
    case STETHO_ERR_IO: return "I/O error";
    case STETHO_ERR_FORMAT: return "format error";
    case STETHO_ERR_UNSUPPORTED: return "unsupported";
    case STETHO_ERR_MISMATCH: return "mismatch";
    case STETHO_ERR_NOMEM: return "out of memory";
    case STETHO_ERR_EXISTS: return "already exists";
    case STETHO_ERR_NOTFOUND: return "not found";
    }
    return "unknown status";
}

stetho_status st_err(stetho_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tl_errmsg, sizeof tl_errmsg, fmt, ap);
    va_end(ap);
    return st;
}

stetho_status st_err_context(stetho_status st, const char *fmt, ...) {
    char prefix[ST_ERRMSG_MAX], old[ST_ERRMSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, tl_errmsg, sizeof old);
    size_t n = strlen(prefix);
    if (n > ST_ERRMSG_MAX - 3) n = ST_ERRMSG_MAX - 3;
    memcpy(tl_errmsg, prefix, n);
    memcpy(tl_errmsg + n, ": ", 2);
    size_t room = ST_ERRMSG_MAX - n - 3, k = strlen(old);
    if (k > room) k = room;
    memcpy(tl_errmsg + n + 2, old, k);
    tl_errmsg[n + 2 + k] = '\0';
    return st;
}

/* Fault injection counters. Tests run single-threaded when they use them; the
 * atomics keep threaded code well defined anyway. */
static _Atomic uint64_t g_alloc_count, g_alloc_fail_at;
static _Atomic uint64_t g_write_count, g_write_fail_at;

uint64_t stetho_fault_alloc_after(uint64_t n) {
    uint64_t c = g_alloc_count;
    g_alloc_count = 0;
    g_alloc_fail_at = n;
    return c;
}

uint64_t stetho_fault_write_after(uint64_t n) {
    uint64_t c = g_write_count;
    g_write_count = 0;
    g_write_fail_at = n;
    return c;
}

static _Atomic uint64_t g_short_count, g_short_at;

uint64_t stetho_fault_short_write_after(uint64_t n) {
    uint64_t c = g_short_count;
    g_short_count = 0;
    g_short_at = n;
    return c;
}

size_t st_fault_write_len(size_t n) {
    uint64_t c = ++g_short_count, at = g_short_at;
    return at != 0 && c == at && n > 1 ? n / 2 : n;
}

static bool alloc_fault_fires(void) {
    uint64_t c = ++g_alloc_count;
    uint64_t at = g_alloc_fail_at;
    return at != 0 && c == at;
}

bool st_fault_write_fires(void) {
    uint64_t c = ++g_write_count;
    uint64_t at = g_write_fail_at;
    return at != 0 && c == at;
}

void *st_malloc(size_t n) {
    if (alloc_fault_fires()) {
        st_err(STETHO_ERR_NOMEM, "out of memory (injected fault) allocating %zu bytes", n);
        return NULL;
    }
    void *p = malloc(n ? n : 1);
    if (!p) st_err(STETHO_ERR_NOMEM, "out of memory allocating %zu bytes", n);
    return p;
}

void *st_calloc(size_t count, size_t size) {
    size_t n;
    if (!st_mul_size(count, size, &n)) {
        st_err(STETHO_ERR_NOMEM, "allocation of %zu x %zu bytes overflows", count, size);
        return NULL;
    }
    if (alloc_fault_fires()) {
        st_err(STETHO_ERR_NOMEM, "out of memory (injected fault) allocating %zu bytes", n);
        return NULL;
    }
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) st_err(STETHO_ERR_NOMEM, "out of memory allocating %zu bytes", n);
    return p;
}

void *st_realloc(void *old, size_t n) {
    if (alloc_fault_fires()) {
        st_err(STETHO_ERR_NOMEM, "out of memory (injected fault) allocating %zu bytes", n);
        return NULL;
    }
    void *p = realloc(old, n ? n : 1);
    if (!p) st_err(STETHO_ERR_NOMEM, "out of memory allocating %zu bytes", n);
    return p;
}

char *st_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = st_malloc(n);
    if (p) memcpy(p, s, n);
    return p;
}

void st_free(void *p) { free(p); }

static int g_threads;

void stetho_set_threads(int n) {
    g_threads = n > 0 ? n : 0;
#ifdef _OPENMP
    if (n > 0) omp_set_num_threads(n);
#endif
}

int stetho_get_threads(void) {
#ifdef _OPENMP
    return g_threads > 0 ? g_threads : omp_get_max_threads();
#else
    return 1;
#endif
}

void st_buf_init(st_buf *b) { memset(b, 0, sizeof *b); }

void st_buf_free(st_buf *b) {
    st_free(b->data);
    memset(b, 0, sizeof *b);
}

bool st_buf_append(st_buf *b, const void *p, size_t n) {
    if (b->failed) return false;
    size_t need;
    if (!st_add_size(b->len, n + 1, &need)) return !(b->failed = true);
    if (need > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < need) cap *= 2;
        char *d = st_realloc(b->data, cap);
        if (!d) return !(b->failed = true);
        /* the spare capacity is zeroed: PCRE2's JIT reads whole words past a
         * subject's end (harmless, inside the block), which memcheck would
         * otherwise report as uses of uninitialised memory */
        memset(d + b->cap, 0, cap - b->cap);
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return true;
}

bool st_buf_printf(st_buf *b, const char *fmt, ...) {
    char small[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) return !(b->failed = true);
    if ((size_t)n < sizeof small) return st_buf_append(b, small, (size_t)n);
    char *big = st_malloc((size_t)n + 1);
    if (!big) return !(b->failed = true);
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    bool ok = st_buf_append(b, big, (size_t)n);
    st_free(big);
    return ok;
}

size_t st_utf8_check(const char *str, size_t len) {
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < len) {
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t n;
        unsigned cp, min;
        if (c >= 0xc2 && c <= 0xdf) n = 1, cp = c & 0x1f, min = 0x80;
        else if (c >= 0xe0 && c <= 0xef) n = 2, cp = c & 0x0f, min = 0x800;
        else if (c >= 0xf0 && c <= 0xf4) n = 3, cp = c & 0x07, min = 0x10000;
        else return i;
        if (len - i <= n) return i;
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return i;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return i;
        i += n + 1;
    }
    return len;
}

char *st_path_join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = st_malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

bool st_ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

void st_remove_tree(const char *path) { nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

float *st_alloc_floats(size_t a, size_t b, bool *ok) {
    size_t n;
    if (!*ok || !st_mul_size(a, b, &n) || !st_mul_size(n, sizeof(float), &n)) {
        *ok = false;
        return NULL;
    }
    float *p = st_malloc(n ? n : sizeof(float));
    if (!p) *ok = false;
    return p;
}

stetho_status stetho_write_file(const char *path, const void *data, size_t len) {
    if (!path || (!data && len)) return st_err(STETHO_ERR_INVALID, "write: NULL argument");
    size_t n = strlen(path) + 32;
    char *tmp = st_malloc(n);
    if (!tmp) return STETHO_ERR_NOMEM;
    snprintf(tmp, n, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        stetho_status st = st_err(STETHO_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
        st_free(tmp);
        return st;
    }
    errno = 0;
    bool ok = !st_fault_write_fires() && fwrite(data, 1, len, f) == len;
    int err = ok ? 0 : errno ? errno : ENOSPC;
    if (fclose(f) != 0 && ok) ok = false, err = errno;
    if (ok && rename(tmp, path) != 0) ok = false, err = errno;
    if (!ok) {
        remove(tmp);
        st_free(tmp);
        return st_err(STETHO_ERR_IO, "%s: write failed: %s", path, strerror(err));
    }
    st_free(tmp);
    return STETHO_OK;
}

int st_blas_single_thread(void) {
    int n = openblas_get_num_threads();
    openblas_set_num_threads(1);
    return n;
}

void st_blas_restore(int n) { openblas_set_num_threads(n); }
