/* safetensors reader (mmap + full validation) and streaming writer. */
#include "stetho/safetensors.h"
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---------------------------------------------------------------- reading */

static int cmp_offset(const void *a, const void *b) {
    const stetho_tensor *x = a, *y = b;
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    /* zero-sized tensors can share an offset: order by name for determinism */
    return strcmp(x->name, y->name);
}

static int cmp_by_name(const void *a, const void *b, void *file) {
    const stetho_tensor *t = ((const stetho_st_file *)file)->tensors;
    return strcmp(t[*(const size_t *)a].name, t[*(const size_t *)b].name);
}

static int cmp_kv(const void *a, const void *b) {
    return strcmp(((const stetho_kv *)a)->key, ((const stetho_kv *)b)->key);
}

static stetho_status parse_u64(json_t *v, uint64_t *out) {
    if (!json_is_integer(v)) return STETHO_ERR_FORMAT;
    json_int_t i = json_integer_value(v);
    if (i < 0) return STETHO_ERR_FORMAT;
    *out = (uint64_t)i;
    return STETHO_OK;
}

static stetho_status parse_entry(const char *label, const char *name, json_t *info,
                                 uint64_t data_size, stetho_tensor *t) {
    if (!json_is_object(info))
        return st_err(STETHO_ERR_FORMAT, "%s: tensor '%s': entry is not an object", label, name);
    json_t *jd = json_object_get(info, "dtype");
    json_t *js = json_object_get(info, "shape");
    json_t *jo = json_object_get(info, "data_offsets");
    if (!json_is_string(jd) || !json_is_array(js) || !json_is_array(jo))
        return st_err(STETHO_ERR_FORMAT,
                      "%s: tensor '%s': needs string 'dtype', array 'shape' and array 'data_offsets'",
                      label, name);
    const char *key;
    json_t *val;
    json_object_foreach(info, key, val) {
        if (strcmp(key, "dtype") && strcmp(key, "shape") && strcmp(key, "data_offsets"))
            return st_err(STETHO_ERR_FORMAT, "%s: tensor '%s': unexpected key '%s'", label, name, key);
    }
    if (!stetho_dtype_from_name(json_string_value(jd), &t->dtype))
        return st_err(STETHO_ERR_FORMAT, "%s: tensor '%s': unknown dtype '%s'", label, name,
                      json_string_value(jd));
    size_t nd = json_array_size(js);
    if (nd > STETHO_MAX_DIMS)
        return st_err(STETHO_ERR_UNSUPPORTED, "%s: tensor '%s': %zu dimensions (at most %d supported)",
                      label, name, nd, STETHO_MAX_DIMS);
    t->ndim = (int)nd;
    uint64_t n = 1;
    for (size_t d = 0; d < nd; d++) {
        if (parse_u64(json_array_get(js, d), &t->shape[d]) != STETHO_OK)
            return st_err(STETHO_ERR_FORMAT, "%s: tensor '%s': shape[%zu] is not a non-negative integer",
                          label, name, d);
        if (!st_mul_u64(n, t->shape[d], &n))
            return st_err(STETHO_ERR_FORMAT, "%s: tensor '%s': element count overflows", label, name);
    }
    t->n_elements = n;
    uint64_t bits;
    if (!st_mul_u64(n, stetho_dtype_bits(t->dtype), &bits))
        return st_err(STETHO_ERR_FORMAT, "%s: tensor '%s': byte size overflows", label, name);
    if (bits % 8)
        return st_err(STETHO_ERR_FORMAT, "%s: tensor '%s': %llu elements of %s do not fill whole bytes",
                      label, name, (unsigned long long)n, stetho_dtype_name(t->dtype));
    t->nbytes = bits / 8;
    uint64_t b, e;
    if (json_array_size(jo) != 2 || parse_u64(json_array_get(jo, 0), &b) != STETHO_OK ||
        parse_u64(json_array_get(jo, 1), &e) != STETHO_OK)
        return st_err(STETHO_ERR_FORMAT, "%s: tensor '%s': data_offsets must be two non-negative integers",
                      label, name);
    if (b > e || e > data_size)
        return st_err(STETHO_ERR_FORMAT,
                      "%s: tensor '%s': data_offsets [%llu, %llu] outside the data section (%llu bytes)",
                      label, name, (unsigned long long)b, (unsigned long long)e,
                      (unsigned long long)data_size);
    if (e - b != t->nbytes)
        return st_err(STETHO_ERR_FORMAT,
                      "%s: tensor '%s': %s shape needs %llu bytes but data_offsets span %llu", label,
                      name, stetho_dtype_name(t->dtype), (unsigned long long)t->nbytes,
                      (unsigned long long)(e - b));
    t->offset = b;
    return STETHO_OK;
}

static stetho_status parse_header(stetho_st_file *f, const char *label) {
    json_error_t jerr;
    const char *hdr = (const char *)f->map + 8;
    json_t *root = json_loadb(hdr, (size_t)f->header_size, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return st_err(STETHO_ERR_FORMAT, "%s: header is not valid JSON (%s at byte %d)", label,
                      jerr.text, jerr.position);
    stetho_status st = STETHO_OK;
    if (!json_is_object(root)) {
        st = st_err(STETHO_ERR_FORMAT, "%s: header is not a JSON object", label);
        goto done;
    }
    size_t n = json_object_size(root);
    json_t *meta = json_object_get(root, "__metadata__");
    if (meta) {
        if (!json_is_object(meta)) {
            st = st_err(STETHO_ERR_FORMAT, "%s: __metadata__ is not an object", label);
            goto done;
        }
        n--;
    }
    /* names storage: sum of key lengths, bounded by the header size */
    f->names = st_malloc((size_t)f->header_size + 1);
    f->tensors = st_calloc(n, sizeof *f->tensors);
    f->by_name = st_calloc(n, sizeof *f->by_name);
    f->meta = meta ? st_calloc(json_object_size(meta), sizeof *f->meta) : NULL;
    if (!f->names || !f->tensors || !f->by_name || (meta && !f->meta)) {
        st = STETHO_ERR_NOMEM;
        goto done;
    }
    size_t names_used = 0, i = 0;
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0) continue;
        stetho_tensor *t = &f->tensors[i];
        st = parse_entry(label, key, val, f->data_size, t);
        if (st) goto done;
        size_t kl = strlen(key) + 1;
        if (names_used + kl > (size_t)f->header_size + 1) {
            st = st_err(STETHO_ERR_FORMAT, "%s: tensor names longer than the header", label);
            goto done;
        }
        memcpy(f->names + names_used, key, kl);
        t->name = f->names + names_used;
        names_used += kl;
        t->shard = 0;
        i++;
    }
    f->n_tensors = n;
    if (meta) {
        json_object_foreach(meta, key, val) {
            if (!json_is_string(val)) {
                st = st_err(STETHO_ERR_FORMAT, "%s: __metadata__ value for '%s' is not a string", label, key);
                goto done;
            }
            stetho_kv *kv = &f->meta[f->n_meta];
            kv->key = st_strdup(key);
            kv->value = st_strdup(json_string_value(val));
            f->n_meta++;
            if (!kv->key || !kv->value) {
                st = STETHO_ERR_NOMEM;
                goto done;
            }
        }
        qsort(f->meta, f->n_meta, sizeof *f->meta, cmp_kv);
    }
    /* names[] pointers are stable now; sort into file order and check coverage */
    qsort(f->tensors, n, sizeof *f->tensors, cmp_offset);
    uint64_t pos = 0;
    for (i = 0; i < n; i++) {
        stetho_tensor *t = &f->tensors[i];
        if (t->offset != pos) {
            st = st_err(STETHO_ERR_FORMAT, "%s: tensor '%s' starts at byte %llu of the data but %s %llu",
                        label, t->name, (unsigned long long)t->offset,
                        t->offset > pos ? "the previous tensor ends at" : "overlaps data ending at",
                        (unsigned long long)pos);
            goto done;
        }
        pos += t->nbytes;
        t->data = f->data + t->offset;
    }
    if (pos != f->data_size) {
        st = st_err(STETHO_ERR_FORMAT, "%s: tensors cover %llu bytes but the data section has %llu",
                    label, (unsigned long long)pos, (unsigned long long)f->data_size);
        goto done;
    }
    for (i = 0; i < n; i++) f->by_name[i] = i;
    qsort_r(f->by_name, n, sizeof *f->by_name, cmp_by_name, f);
done:
    json_decref(root);
    return st;
}

static stetho_status validate_image(stetho_st_file *f, const char *label) {
    if (f->map_size < 8)
        return st_err(STETHO_ERR_FORMAT, "%s: truncated: %zu bytes, too short for the 8-byte header length",
                      label, f->map_size);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = (hl << 8) | f->map[i];
    if (hl > STETHO_ST_MAX_HEADER)
        return st_err(STETHO_ERR_FORMAT, "%s: header length %llu exceeds the 100 MB limit", label,
                      (unsigned long long)hl);
    if (hl > f->map_size - 8)
        return st_err(STETHO_ERR_FORMAT, "%s: truncated: header length %llu runs past the end of the %zu-byte file",
                      label, (unsigned long long)hl, f->map_size);
    if (hl < 2 || f->map[8] != '{')
        return st_err(STETHO_ERR_FORMAT, "%s: header does not start with a JSON object", label);
    f->header_size = hl;
    f->data = f->map + 8 + hl;
    f->data_size = f->map_size - 8 - hl;
    stetho_status st = parse_header(f, label);
    return st;
}

static void free_parsed(stetho_st_file *f) {
    for (size_t i = 0; i < f->n_meta; i++) {
        st_free(f->meta[i].key);
        st_free(f->meta[i].value);
    }
    st_free(f->meta);
    st_free(f->tensors);
    st_free(f->by_name);
    st_free(f->names);
    st_free(f->path);
}

stetho_status stetho_st_open_buffer(stetho_st_file *f, const void *buf, size_t len, const char *label) {
    memset(f, 0, sizeof *f);
    f->fd = -1;
    f->map = buf;
    f->map_size = len;
    f->path = st_strdup(label);
    if (!f->path) return STETHO_ERR_NOMEM;
    stetho_status st = validate_image(f, label);
    if (st) {
        free_parsed(f);
        memset(f, 0, sizeof *f);
        f->fd = -1;
    }
    return st;
}

stetho_status stetho_st_open(stetho_st_file *f, const char *path) {
    memset(f, 0, sizeof *f);
    f->fd = -1;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return st_err(STETHO_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return st_err(STETHO_ERR_IO, "%s: not a regular file", path);
    }
    if (sb.st_size < 8) {
        close(fd);
        return st_err(STETHO_ERR_FORMAT, "%s: truncated: %lld bytes, too short for the 8-byte header length",
                      path, (long long)sb.st_size);
    }
    void *m = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) {
        close(fd);
        return st_err(STETHO_ERR_IO, "%s: cannot mmap: %s", path, strerror(errno));
    }
    f->fd = fd;
    f->map = m;
    f->map_size = (size_t)sb.st_size;
    f->owns_map = true;
    f->path = st_strdup(path);
    stetho_status st = f->path ? validate_image(f, path) : STETHO_ERR_NOMEM;
    if (st) stetho_st_close(f);
    return st;
}

void stetho_st_close(stetho_st_file *f) {
    if (f->owns_map && f->map) munmap((void *)f->map, f->map_size);
    if (f->fd >= 0) close(f->fd);
    free_parsed(f);
    memset(f, 0, sizeof *f);
    f->fd = -1;
}

const stetho_tensor *stetho_st_find(const stetho_st_file *f, const char *name) {
    size_t lo = 0, hi = f->n_tensors;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const stetho_tensor *t = &f->tensors[f->by_name[mid]];
        int c = strcmp(name, t->name);
        if (c == 0) return t;
        if (c < 0) hi = mid;
        else lo = mid + 1;
    }
    return NULL;
}

const char *stetho_st_meta(const stetho_st_file *f, const char *key) {
    stetho_kv probe = {(char *)key, NULL};
    const stetho_kv *kv = f->n_meta ? bsearch(&probe, f->meta, f->n_meta, sizeof *f->meta, cmp_kv) : NULL;
    return kv ? kv->value : NULL;
}

static void advise_range(const stetho_st_file *f, const stetho_tensor *t, int advice) {
    if (!f->owns_map || t->nbytes == 0) return;
    /* data an in-memory edit put in place is private memory: advice would zero it */
    const uint8_t *p = t->data;
    if (p < f->map || p > f->map + f->map_size || t->nbytes > (uint64_t)(f->map + f->map_size - p)) return;
    long page = sysconf(_SC_PAGESIZE);
    uintptr_t start = (uintptr_t)t->data & ~(uintptr_t)(page - 1);
    uintptr_t end = (uintptr_t)t->data + t->nbytes;
    madvise((void *)start, end - start, advice);
}

void stetho_st_prefetch(const stetho_st_file *f, const stetho_tensor *t) {
    advise_range(f, t, MADV_WILLNEED);
}

void stetho_st_release(const stetho_st_file *f, const stetho_tensor *t) {
    /* file-backed and read-only: dropping the pages only frees resident memory */
    advise_range(f, t, MADV_DONTNEED);
}

/* ---------------------------------------------------------------- writing */

#define WRITER_BUF (8u << 20)

stetho_status stetho_st_writer_init(stetho_st_writer *w, const char *path) {
    memset(w, 0, sizeof *w);
    w->fd = -1;
    w->path = st_strdup(path);
    size_t tl = strlen(path) + 32;
    w->tmp_path = st_malloc(tl);
    if (!w->path || !w->tmp_path) {
        stetho_st_writer_abort(w);
        return STETHO_ERR_NOMEM;
    }
    snprintf(w->tmp_path, tl, "%s.tmp.%ld", path, (long)getpid());
    return STETHO_OK;
}

stetho_status stetho_st_writer_declare(stetho_st_writer *w, const char *name, stetho_dtype dt,
                                       int ndim, const uint64_t *shape) {
    if (w->header_written)
        return st_err(STETHO_ERR_INVALID, "%s: tensor '%s' declared after writing began", w->path, name);
    if (ndim < 0 || ndim > STETHO_MAX_DIMS || (unsigned)dt >= STETHO_DTYPE_COUNT)
        return st_err(STETHO_ERR_INVALID, "%s: tensor '%s': bad dtype or rank", w->path, name);
    for (size_t i = 0; i < w->n_decl; i++)
        if (strcmp(w->decl[i].name, name) == 0)
            return st_err(STETHO_ERR_INVALID, "%s: tensor '%s' declared twice", w->path, name);
    if (strcmp(name, "__metadata__") == 0)
        return st_err(STETHO_ERR_INVALID, "%s: '__metadata__' is not a tensor name", w->path);
    if (w->n_decl == w->cap_decl) {
        size_t cap = w->cap_decl ? w->cap_decl * 2 : 64;
        stetho_st_decl *d = st_realloc(w->decl, cap * sizeof *d);
        if (!d) return STETHO_ERR_NOMEM;
        w->decl = d;
        w->cap_decl = cap;
    }
    stetho_st_decl *d = &w->decl[w->n_decl];
    memset(d, 0, sizeof *d);
    uint64_t n = 1, bits;
    for (int i = 0; i < ndim; i++) {
        d->shape[i] = shape[i];
        if (!st_mul_u64(n, shape[i], &n))
            return st_err(STETHO_ERR_INVALID, "%s: tensor '%s': size overflows", w->path, name);
    }
    if (!st_mul_u64(n, stetho_dtype_bits(dt), &bits) || bits % 8)
        return st_err(STETHO_ERR_INVALID, "%s: tensor '%s': bad size", w->path, name);
    d->name = st_strdup(name);
    if (!d->name) return STETHO_ERR_NOMEM;
    d->dtype = dt;
    d->ndim = ndim;
    d->nbytes = bits / 8;
    w->n_decl++;
    return STETHO_OK;
}

stetho_status stetho_st_writer_set_meta(stetho_st_writer *w, const char *key, const char *value) {
    if (w->header_written)
        return st_err(STETHO_ERR_INVALID, "%s: metadata set after writing began", w->path);
    for (size_t i = 0; i < w->n_meta; i++) {
        if (strcmp(w->meta[i].key, key) == 0) {
            char *v = st_strdup(value);
            if (!v) return STETHO_ERR_NOMEM;
            st_free(w->meta[i].value);
            w->meta[i].value = v;
            return STETHO_OK;
        }
    }
    if (w->n_meta == w->cap_meta) {
        size_t cap = w->cap_meta ? w->cap_meta * 2 : 8;
        stetho_kv *m = st_realloc(w->meta, cap * sizeof *m);
        if (!m) return STETHO_ERR_NOMEM;
        w->meta = m;
        w->cap_meta = cap;
    }
    stetho_kv *kv = &w->meta[w->n_meta];
    kv->key = st_strdup(key);
    kv->value = st_strdup(value);
    if (!kv->key || !kv->value) {
        st_free(kv->key);
        st_free(kv->value);
        return STETHO_ERR_NOMEM;
    }
    w->n_meta++;
    return STETHO_OK;
}

/* Serialise the header JSON; padded with spaces to a multiple of 8 like the
 * reference implementation, so the data section starts aligned. */
static stetho_status build_header(const stetho_st_writer *w, char **out, size_t *out_len) {
    json_t *root = json_object();
    if (!root) return st_err(STETHO_ERR_NOMEM, "out of memory building header");
    stetho_status st = STETHO_OK;
    if (w->n_meta) {
        json_t *m = json_object();
        json_object_set_new(root, "__metadata__", m);
        for (size_t i = 0; i < w->n_meta; i++)
            json_object_set_new(m, w->meta[i].key, json_string(w->meta[i].value));
    }
    uint64_t off = 0;
    for (size_t i = 0; i < w->n_decl; i++) {
        const stetho_st_decl *d = &w->decl[i];
        json_t *e = json_object(), *shape = json_array();
        json_object_set_new(e, "dtype", json_string(stetho_dtype_name(d->dtype)));
        for (int k = 0; k < d->ndim; k++) json_array_append_new(shape, json_integer((json_int_t)d->shape[k]));
        json_object_set_new(e, "shape", shape);
        json_t *offs = json_array();
        json_array_append_new(offs, json_integer((json_int_t)off));
        json_array_append_new(offs, json_integer((json_int_t)(off + d->nbytes)));
        json_object_set_new(e, "data_offsets", offs);
        if (json_object_set_new(root, d->name, e) != 0) {
            st = st_err(STETHO_ERR_INVALID, "%s: tensor name '%s' is not valid UTF-8", w->path, d->name);
            break;
        }
        off += d->nbytes;
    }
    char *s = st ? NULL : json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (st) return st;
    if (!s) return st_err(STETHO_ERR_INVALID, "%s: cannot serialise header (invalid UTF-8 in a name or metadata?)", w->path);
    size_t n = strlen(s), padded = (n + 7) & ~(size_t)7;
    char *h = st_malloc(padded + 8);
    if (!h) {
        free(s);
        return STETHO_ERR_NOMEM;
    }
    for (int i = 0; i < 8; i++) h[i] = (char)(((uint64_t)padded >> (8 * i)) & 0xff);
    memcpy(h + 8, s, n);
    memset(h + 8 + n, ' ', padded - n);
    free(s);
    *out = h;
    *out_len = padded + 8;
    return STETHO_OK;
}

uint64_t stetho_st_writer_file_size(const stetho_st_writer *w) {
    char *h;
    size_t hl;
    if (build_header(w, &h, &hl)) return 0;
    st_free(h);
    uint64_t total = hl;
    for (size_t i = 0; i < w->n_decl; i++) total += w->decl[i].nbytes;
    return total;
}

static stetho_status write_all(stetho_st_writer *w, const void *p, size_t n) {
    const uint8_t *b = p;
    while (n) {
        ssize_t k;
        if (st_fault_write_fires()) {
            errno = ENOSPC;
            k = -1;
        } else {
            k = write(w->fd, b, st_fault_write_len(n > (1u << 30) ? (1u << 30) : n));
        }
        if (k < 0) {
            if (errno == EINTR) continue;
            return st_err(STETHO_ERR_IO, "%s: write failed: %s", w->tmp_path, strerror(errno));
        }
        if (k == 0) return st_err(STETHO_ERR_IO, "%s: write returned 0 bytes", w->tmp_path);
        b += k;
        n -= (size_t)k;
        w->total_bytes += (uint64_t)k;
    }
    return STETHO_OK;
}

static stetho_status flush_buf(stetho_st_writer *w) {
    stetho_status st = write_all(w, w->buf, w->buf_len);
    w->buf_len = 0;
    return st;
}

static stetho_status buffered_write(stetho_st_writer *w, const void *p, size_t n) {
    if (n >= w->buf_cap) {
        stetho_status st = flush_buf(w);
        return st ? st : write_all(w, p, n);
    }
    if (w->buf_len + n > w->buf_cap) {
        stetho_status st = flush_buf(w);
        if (st) return st;
    }
    memcpy(w->buf + w->buf_len, p, n);
    w->buf_len += n;
    return STETHO_OK;
}

static stetho_status begin_file(stetho_st_writer *w) {
    char *h;
    size_t hl;
    stetho_status st = build_header(w, &h, &hl);
    if (st) return st;
    w->buf = st_malloc(WRITER_BUF);
    if (!w->buf) {
        st_free(h);
        return STETHO_ERR_NOMEM;
    }
    w->buf_cap = WRITER_BUF;
    w->fd = open(w->tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (w->fd < 0) {
        st_free(h);
        return st_err(STETHO_ERR_IO, "%s: cannot create: %s", w->tmp_path, strerror(errno));
    }
    w->header_written = true;
    st = buffered_write(w, h, hl);
    st_free(h);
    /* skip past zero-sized tensors at the start */
    while (w->cur < w->n_decl && w->decl[w->cur].nbytes == 0) w->cur++;
    return st;
}

stetho_status stetho_st_writer_write(stetho_st_writer *w, const void *data, size_t n) {
    stetho_status st;
    if (!w->header_written && (st = begin_file(w))) return st;
    const uint8_t *p = data;
    while (n) {
        if (w->cur >= w->n_decl)
            return st_err(STETHO_ERR_INVALID, "%s: more data written than the declared tensors hold", w->path);
        const stetho_st_decl *d = &w->decl[w->cur];
        uint64_t room = d->nbytes - w->cur_written;
        size_t k = n < room ? n : (size_t)room;
        if ((st = buffered_write(w, p, k))) return st;
        p += k;
        n -= k;
        w->cur_written += k;
        if (w->cur_written == d->nbytes) {
            w->cur++;
            w->cur_written = 0;
            while (w->cur < w->n_decl && w->decl[w->cur].nbytes == 0) w->cur++;
        }
    }
    return STETHO_OK;
}

stetho_status stetho_st_writer_finish(stetho_st_writer *w) {
    stetho_status st = STETHO_OK;
    if (!w->header_written) st = begin_file(w);
    if (!st && w->cur < w->n_decl)
        st = st_err(STETHO_ERR_INVALID, "%s: tensor '%s' incomplete (%llu of %llu bytes written)", w->path,
                    w->decl[w->cur].name, (unsigned long long)w->cur_written,
                    (unsigned long long)w->decl[w->cur].nbytes);
    if (!st) st = flush_buf(w);
    if (!st) {
        int fd = w->fd;
        w->fd = -1;
        if (close(fd) != 0) st = st_err(STETHO_ERR_IO, "%s: close failed: %s", w->tmp_path, strerror(errno));
    }
    if (!st && rename(w->tmp_path, w->path) != 0)
        st = st_err(STETHO_ERR_IO, "%s: cannot rename into place: %s", w->path, strerror(errno));
    if (!st) {
        st_free(w->tmp_path); /* in place now: nothing for abort to remove */
        w->tmp_path = NULL;
    }
    stetho_st_writer_abort(w);
    return st;
}

void stetho_st_writer_abort(stetho_st_writer *w) {
    if (w->fd >= 0) close(w->fd);
    if (w->tmp_path && w->header_written) unlink(w->tmp_path);
    for (size_t i = 0; i < w->n_decl; i++) st_free(w->decl[i].name);
    for (size_t i = 0; i < w->n_meta; i++) {
        st_free(w->meta[i].key);
        st_free(w->meta[i].value);
    }
    st_free(w->decl);
    st_free(w->meta);
    st_free(w->buf);
    st_free(w->path);
    st_free(w->tmp_path);
    memset(w, 0, sizeof *w);
    w->fd = -1;
}

stetho_status stetho_st_write_tensors(const char *path, const stetho_tensor *tensors, size_t n,
                                      const stetho_kv *meta, size_t n_meta) {
    stetho_st_writer w;
    stetho_status st = stetho_st_writer_init(&w, path);
    if (st) return st;
    for (size_t i = 0; i < n_meta && !st; i++) st = stetho_st_writer_set_meta(&w, meta[i].key, meta[i].value);
    for (size_t i = 0; i < n && !st; i++)
        st = stetho_st_writer_declare(&w, tensors[i].name, tensors[i].dtype, tensors[i].ndim, tensors[i].shape);
    for (size_t i = 0; i < n && !st; i++)
        if (tensors[i].nbytes) st = stetho_st_writer_write(&w, tensors[i].data, (size_t)tensors[i].nbytes);
    if (!st) st = stetho_st_writer_finish(&w);
    if (st) stetho_st_writer_abort(&w);
    return st;
}
