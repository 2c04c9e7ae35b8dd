/* .npz / .npy reading: libzip for the archive, a strict parser for the .npy
 * header dictionary, conversion of float payloads to f32. */
#include "stetho/npz.h"
#include "stetho/tensor.h"
#include "internal.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zip.h>

#define NPY_MAX_ARRAY_BYTES ((uint64_t)16 << 30)

void stetho_npy_array_free(stetho_npy_array *a) {
    st_free(a->name);
    st_free(a->data);
    memset(a, 0, sizeof *a);
}

/* Find `'key':` in the header dict and return a pointer just after the colon. */
static const char *dict_value(const char *h, const char *key) {
    char pat[32];
    snprintf(pat, sizeof pat, "'%s'", key);
    const char *p = strstr(h, pat);
    if (!p) return NULL;
    p += strlen(pat);
    while (*p == ' ') p++;
    if (*p != ':') return NULL;
    p++;
    while (*p == ' ') p++;
    return p;
}

stetho_status stetho_npy_parse(const void *buf, size_t len, const char *label, stetho_npy_array *a) {
    memset(a, 0, sizeof *a);
    const uint8_t *b = buf;
    if (len < 10 || memcmp(b, "\x93NUMPY", 6) != 0)
        return st_err(STETHO_ERR_FORMAT, "%s: not a .npy array (bad magic)", label);
    size_t hl, off;
    if (b[6] == 1) {
        hl = (size_t)b[8] | (size_t)b[9] << 8;
        off = 10;
    } else if (b[6] == 2 || b[6] == 3) {
        if (len < 12) return st_err(STETHO_ERR_FORMAT, "%s: truncated .npy header", label);
        hl = (size_t)b[8] | (size_t)b[9] << 8 | (size_t)b[10] << 16 | (size_t)b[11] << 24;
        off = 12;
    } else {
        return st_err(STETHO_ERR_UNSUPPORTED, "%s: .npy format version %d", label, b[6]);
    }
    if (hl > len - off || hl > (1u << 20)) return st_err(STETHO_ERR_FORMAT, "%s: .npy header runs past the data", label);
    char *h = st_malloc(hl + 1);
    if (!h) return STETHO_ERR_NOMEM;
    memcpy(h, b + off, hl);
    h[hl] = '\0';
    stetho_status st = STETHO_OK;
    stetho_dtype dt = STETHO_DTYPE_F32;
    const char *v = dict_value(h, "descr");
    if (!v || *v != '\'') {
        st = st_err(STETHO_ERR_FORMAT, "%s: .npy header lacks 'descr'", label);
        goto done;
    }
    if (!strncmp(v, "'<f4'", 5)) dt = STETHO_DTYPE_F32;
    else if (!strncmp(v, "'<f2'", 5)) dt = STETHO_DTYPE_F16;
    else if (!strncmp(v, "'<f8'", 5)) dt = STETHO_DTYPE_F64;
    else {
        const char *end = strchr(v + 1, '\'');
        st = st_err(STETHO_ERR_UNSUPPORTED, "%s: array dtype %.*s is not a little-endian float (f2, f4, f8)", label,
                    end ? (int)(end - v + 1) : 8, v);
        goto done;
    }
    v = dict_value(h, "fortran_order");
    if (!v || strncmp(v, "False", 5) != 0) {
        st = st_err(STETHO_ERR_UNSUPPORTED, "%s: Fortran-ordered or unmarked arrays are not supported", label);
        goto done;
    }
    v = dict_value(h, "shape");
    if (!v || *v != '(') {
        st = st_err(STETHO_ERR_FORMAT, "%s: .npy header lacks 'shape'", label);
        goto done;
    }
    v++;
    uint64_t n = 1;
    for (;;) {
        while (*v == ' ') v++;
        if (*v == ')') break;
        if (!isdigit((unsigned char)*v) || a->ndim == STETHO_NPY_MAX_DIMS) {
            st = st_err(STETHO_ERR_FORMAT, "%s: bad shape in .npy header", label);
            goto done;
        }
        char *end;
        unsigned long long d = strtoull(v, &end, 10);
        a->shape[a->ndim++] = d;
        if (!st_mul_u64(n, d, &n)) {
            st = st_err(STETHO_ERR_FORMAT, "%s: array size overflows", label);
            goto done;
        }
        v = end;
        while (*v == ' ') v++;
        if (*v == ',') v++;
    }
    uint64_t bytes;
    size_t esz = stetho_dtype_bits(dt) / 8;
    if (!st_mul_u64(n, esz, &bytes) || bytes > NPY_MAX_ARRAY_BYTES) {
        st = st_err(STETHO_ERR_NOMEM, "%s: array of %llu elements is too large", label, (unsigned long long)n);
        goto done;
    }
    if (bytes != len - off - hl) {
        st = st_err(STETHO_ERR_FORMAT, "%s: shape needs %llu bytes of data but the array holds %zu", label,
                    (unsigned long long)bytes, len - off - hl);
        goto done;
    }
    a->n_elements = n;
    a->stored = dt;
    a->data = st_malloc((size_t)n * sizeof(float));
    if (!a->data) {
        st = STETHO_ERR_NOMEM;
        goto done;
    }
    /* the payload may be unaligned inside the archive buffer: convert via memcpy */
    const uint8_t *p = b + off + hl;
    if (dt == STETHO_DTYPE_F32) memcpy(a->data, p, (size_t)bytes);
    else if (dt == STETHO_DTYPE_F16)
        for (uint64_t i = 0; i < n; i++) {
            uint16_t x;
            memcpy(&x, p + 2 * i, 2);
            a->data[i] = stetho_f16_to_f32(x);
        }
    else
        for (uint64_t i = 0; i < n; i++) {
            double x;
            memcpy(&x, p + 8 * i, 8);
            a->data[i] = (float)x;
        }
done:
    st_free(h);
    if (st) stetho_npy_array_free(a);
    return st;
}

void stetho_npz_free(stetho_npz *z) {
    for (size_t i = 0; i < z->n_arrays; i++) stetho_npy_array_free(&z->arrays[i]);
    st_free(z->arrays);
    st_free(z->path);
    memset(z, 0, sizeof *z);
}

stetho_status stetho_npz_load(stetho_npz *z, const char *path) {
    memset(z, 0, sizeof *z);
    int zerr = 0;
    zip_t *zip = zip_open(path, ZIP_RDONLY, &zerr);
    if (!zip) {
        zip_error_t e;
        zip_error_init_with_code(&e, zerr);
        stetho_status st = st_err(zerr == ZIP_ER_NOENT || zerr == ZIP_ER_OPEN ? STETHO_ERR_IO : STETHO_ERR_FORMAT,
                                  "%s: not a readable .npz (zip) archive: %s", path, zip_error_strerror(&e));
        zip_error_fini(&e);
        return st;
    }
    stetho_status st = STETHO_OK;
    struct stat fsb;
    uint64_t archive_bytes = stat(path, &fsb) == 0 ? (uint64_t)fsb.st_size : 0;
    zip_int64_t n = zip_get_num_entries(zip, 0);
    if (!(z->path = st_strdup(path)) || !(z->arrays = st_calloc(n > 0 ? (size_t)n : 1, sizeof *z->arrays))) {
        st = STETHO_ERR_NOMEM;
        goto done;
    }
    for (zip_int64_t i = 0; i < n && !st; i++) {
        zip_stat_t zs;
        if (zip_stat_index(zip, (zip_uint64_t)i, 0, &zs) != 0 || !(zs.valid & ZIP_STAT_SIZE) || !(zs.valid & ZIP_STAT_NAME)) {
            st = st_err(STETHO_ERR_FORMAT, "%s: unreadable zip entry %lld", path, (long long)i);
            break;
        }
        size_t nl = strlen(zs.name);
        if (nl < 5 || strcmp(zs.name + nl - 4, ".npy") != 0) continue;
        if (zs.size > NPY_MAX_ARRAY_BYTES + (1u << 20)) {
            st = st_err(STETHO_ERR_NOMEM, "%s: entry %s is too large (%llu bytes)", path, zs.name, (unsigned long long)zs.size);
            break;
        }
        /* the declared size must be one the stored bytes can give: deflate
         * expands at most ~1032:1, a stored entry not at all */
        /* both sizes are the archive's own claims: the compressed one must fit
         * in the file, and the declared one must be what that can expand to */
        uint64_t comp = (zs.valid & ZIP_STAT_COMP_SIZE) ? zs.comp_size : 0;
        bool stored = (zs.valid & ZIP_STAT_COMP_METHOD) && zs.comp_method == ZIP_CM_STORE;
        if (!(zs.valid & ZIP_STAT_COMP_SIZE) || comp > archive_bytes ||
            (stored ? zs.size != comp : zs.size / 1032 > comp + 1)) {
            st = st_err(STETHO_ERR_FORMAT, "%s: entry %s declares %llu bytes from %llu compressed: not a real array", path,
                        zs.name, (unsigned long long)zs.size, (unsigned long long)comp);
            break;
        }
        char label[1024];
        snprintf(label, sizeof label, "%s: %s", path, zs.name);
        uint8_t *buf = st_malloc((size_t)zs.size);
        zip_file_t *zf = buf ? zip_fopen_index(zip, (zip_uint64_t)i, 0) : NULL;
        if (!buf || !zf) {
            st = buf ? st_err(STETHO_ERR_FORMAT, "%s: cannot open entry: %s", label, zip_strerror(zip)) : STETHO_ERR_NOMEM;
            st_free(buf);
            break;
        }
        zip_int64_t got = zip_fread(zf, buf, zs.size);
        zip_fclose(zf);
        if (got < 0 || (zip_uint64_t)got != zs.size) {
            st = st_err(STETHO_ERR_FORMAT, "%s: truncated or corrupt entry", label);
            st_free(buf);
            break;
        }
        stetho_npy_array *a = &z->arrays[z->n_arrays];
        st = stetho_npy_parse(buf, (size_t)zs.size, label, a);
        st_free(buf);
        if (st) break;
        if (!(a->name = st_malloc(nl - 3))) {
            stetho_npy_array_free(a);
            st = STETHO_ERR_NOMEM;
            break;
        }
        memcpy(a->name, zs.name, nl - 4);
        a->name[nl - 4] = '\0';
        z->n_arrays++;
    }
done:
    zip_discard(zip);
    if (st) stetho_npz_free(z);
    return st;
}

const stetho_npy_array *stetho_npz_find(const stetho_npz *z, const char *name) {
    for (size_t i = 0; i < z->n_arrays; i++)
        if (!strcmp(z->arrays[i].name, name)) return &z->arrays[i];
    return NULL;
}
