/* Hugging Face checkpoint directories: config.json, shards and their index. */
#include "stetho/checkpoint.h"
#include "internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_CONFIG_BYTES (16u << 20)
#define MAX_INDEX_BYTES (256u << 20)

stetho_status stetho_read_file(const char *path, size_t max_size, char **out, size_t *len) {
    *out = NULL;
    if (len) *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return st_err(errno == ENOENT ? STETHO_ERR_NOTFOUND : STETHO_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return st_err(STETHO_ERR_IO, "%s: not a regular file", path);
    }
    if ((uint64_t)sb.st_size > max_size) {
        close(fd);
        return st_err(STETHO_ERR_FORMAT, "%s: %lld bytes is larger than the %zu-byte limit for this file",
                      path, (long long)sb.st_size, max_size);
    }
    size_t n = (size_t)sb.st_size;
    char *buf = st_malloc(n + 1);
    if (!buf) {
        close(fd);
        return STETHO_ERR_NOMEM;
    }
    size_t got = 0;
    while (got < n) {
        ssize_t k = read(fd, buf + got, n - got);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            int e = errno;
            close(fd);
            st_free(buf);
            return st_err(STETHO_ERR_IO, "%s: read failed: %s", path, k < 0 ? strerror(e) : "file shrank");
        }
        got += (size_t)k;
    }
    close(fd);
    buf[n] = '\0';
    *out = buf;
    if (len) *len = n;
    return STETHO_OK;
}

static bool is_dir(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static bool is_file(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int cmp_tensor_name(const void *a, const void *b) {
    return strcmp((*(const stetho_tensor *const *)a)->name, (*(const stetho_tensor *const *)b)->name);
}

static stetho_status add_shard_name(stetho_checkpoint *c, const char *name, size_t *cap) {
    for (size_t i = 0; i < c->n_shards; i++)
        if (!strcmp(c->shard_names[i], name)) return STETHO_OK;
    if (c->n_shards == *cap) {
        size_t nc = *cap ? *cap * 2 : 8;
        char **p = st_realloc(c->shard_names, nc * sizeof *p);
        if (!p) return STETHO_ERR_NOMEM;
        c->shard_names = p;
        *cap = nc;
    }
    if (!(c->shard_names[c->n_shards] = st_strdup(name))) return STETHO_ERR_NOMEM;
    c->n_shards++;
    return STETHO_OK;
}

/* A shard file name from an index must stay inside the checkpoint directory. */
static bool safe_shard_name(const char *s) {
    return *s && !strchr(s, '/') && !strchr(s, '\\') && strcmp(s, ".") && strcmp(s, "..");
}

static stetho_status read_index(stetho_checkpoint *c, const char *index_path, json_t **weight_map) {
    char *text;
    size_t len;
    stetho_status st = stetho_read_file(index_path, MAX_INDEX_BYTES, &text, &len);
    if (st) return st;
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    st_free(text);
    if (!root) return st_err(STETHO_ERR_FORMAT, "%s: invalid JSON (%s, line %d)", index_path, jerr.text, jerr.line);
    json_t *wm = json_object_get(root, "weight_map");
    if (!json_is_object(root) || !json_is_object(wm)) {
        json_decref(root);
        return st_err(STETHO_ERR_FORMAT, "%s: no \"weight_map\" object", index_path);
    }
    size_t cap = 0;
    const char *key;
    json_t *val;
    /* collect the distinct files in sorted order, so shard indices are stable */
    json_object_foreach(wm, key, val) {
        if (!json_is_string(val) || !safe_shard_name(json_string_value(val))) {
            st = st_err(STETHO_ERR_FORMAT, "%s: weight_map entry for '%s' is not a plain file name", index_path, key);
            json_decref(root);
            return st;
        }
        if ((st = add_shard_name(c, json_string_value(val), &cap))) {
            json_decref(root);
            return st;
        }
    }
    if (c->n_shards > 1) qsort(c->shard_names, c->n_shards, sizeof *c->shard_names, cmp_str);
    json_incref(wm);
    *weight_map = wm;
    json_decref(root);
    return STETHO_OK;
}

static stetho_status list_safetensors(stetho_checkpoint *c) {
    DIR *d = opendir(c->dir);
    if (!d) return st_err(STETHO_ERR_IO, "%s: cannot list directory: %s", c->dir, strerror(errno));
    size_t cap = 0;
    stetho_status st = STETHO_OK;
    struct dirent *e;
    while ((e = readdir(d)) && !st)
        if (e->d_name[0] != '.' && st_ends_with(e->d_name, ".safetensors")) st = add_shard_name(c, e->d_name, &cap);
    closedir(d);
    if (!st && c->n_shards > 1) qsort(c->shard_names, c->n_shards, sizeof *c->shard_names, cmp_str);
    return st;
}

stetho_status stetho_checkpoint_open(stetho_checkpoint *c, const char *path) {
    memset(c, 0, sizeof *c);
    stetho_status st = STETHO_OK;
    json_t *weight_map = NULL;
    if (!(c->path = st_strdup(path))) return STETHO_ERR_NOMEM;

    if (is_dir(path)) {
        if (!(c->dir = st_strdup(path))) { st = STETHO_ERR_NOMEM; goto fail; }
        char *cfg = st_path_join(path, "config.json");
        if (!cfg) { st = STETHO_ERR_NOMEM; goto fail; }
        if (is_file(cfg)) {
            st = stetho_read_file(cfg, MAX_CONFIG_BYTES, &c->config_json, &c->config_json_len);
            if (!st) st = stetho_config_parse(&c->config, c->config_json, c->config_json_len, cfg);
            c->has_config = st == STETHO_OK;
        }
        st_free(cfg);
        if (st) goto fail;
        char *index = st_path_join(path, "model.safetensors.index.json");
        if (!index) { st = STETHO_ERR_NOMEM; goto fail; }
        if (is_file(index)) {
            c->has_index = true;
            st = read_index(c, index, &weight_map);
        } else {
            /* like transformers: model.safetensors alone when there is no index;
             * otherwise a directory holding exactly one .safetensors file */
            char *single = st_path_join(path, "model.safetensors");
            if (!single) { st_free(index); st = STETHO_ERR_NOMEM; goto fail; }
            if (is_file(single)) {
                size_t cap = 0;
                st = add_shard_name(c, "model.safetensors", &cap);
            } else {
                st = list_safetensors(c);
                if (!st && c->n_shards > 1)
                    st = st_err(STETHO_ERR_FORMAT,
                                "%s: %zu .safetensors files (%s, %s, ...) but no model.safetensors.index.json to say which form the model",
                                path, c->n_shards, c->shard_names[0], c->shard_names[1]);
            }
            st_free(single);
        }
        if (!st && c->n_shards == 0)
            st = st_err(STETHO_ERR_NOTFOUND, "%s: no model.safetensors or .safetensors files in this directory", path);
        st_free(index);
        if (st) goto fail;
    } else if (is_file(path)) {
        c->shard_names = st_calloc(1, sizeof *c->shard_names);
        if (!c->shard_names || !(c->shard_names[0] = st_strdup(path))) { st = STETHO_ERR_NOMEM; goto fail; }
        c->n_shards = 1;
    } else {
        st = st_err(STETHO_ERR_NOTFOUND, "%s: no such file or directory", path);
        goto fail;
    }

    c->shards = st_calloc(c->n_shards, sizeof *c->shards);
    if (!c->shards) { st = STETHO_ERR_NOMEM; goto fail; }
    for (size_t i = 0; i < c->n_shards; i++) c->shards[i].fd = -1;
    size_t total = 0;
    for (size_t i = 0; i < c->n_shards; i++) {
        char *p = c->dir ? st_path_join(c->dir, c->shard_names[i]) : st_strdup(c->shard_names[i]);
        if (!p) { st = STETHO_ERR_NOMEM; goto fail; }
        if (c->has_index && !is_file(p)) {
            st = st_err(STETHO_ERR_NOTFOUND, "%s: shard listed in model.safetensors.index.json is missing", p);
            st_free(p);
            goto fail;
        }
        st = stetho_st_open(&c->shards[i], p);
        st_free(p);
        if (st) goto fail;
        for (size_t k = 0; k < c->shards[i].n_tensors; k++) c->shards[i].tensors[k].shard = (int)i;
        total += c->shards[i].n_tensors;
    }
    c->tensors = st_calloc(total, sizeof *c->tensors);
    c->sorted = st_calloc(total, sizeof *c->sorted);
    if (!c->tensors || !c->sorted) { st = STETHO_ERR_NOMEM; goto fail; }
    for (size_t i = 0; i < c->n_shards; i++)
        for (size_t k = 0; k < c->shards[i].n_tensors; k++) c->tensors[c->n_tensors++] = &c->shards[i].tensors[k];
    memcpy(c->sorted, c->tensors, total * sizeof *c->sorted);
    if (total > 1) qsort(c->sorted, total, sizeof *c->sorted, cmp_tensor_name);
    for (size_t i = 1; i < total; i++)
        if (!strcmp(c->sorted[i]->name, c->sorted[i - 1]->name)) {
            st = st_err(STETHO_ERR_FORMAT, "%s: tensor '%s' appears in both %s and %s", path, c->sorted[i]->name,
                        c->shard_names[c->sorted[i - 1]->shard], c->shard_names[c->sorted[i]->shard]);
            goto fail;
        }
    if (weight_map) {
        /* the index and the shards must agree exactly */
        const char *key;
        json_t *val;
        json_object_foreach(weight_map, key, val) {
            const stetho_tensor *t = stetho_checkpoint_find(c, key);
            if (!t) {
                st = st_err(STETHO_ERR_FORMAT, "%s: index lists tensor '%s' in %s, but that shard does not hold it",
                            path, key, json_string_value(val));
                goto fail;
            }
            if (strcmp(c->shard_names[t->shard], json_string_value(val))) {
                st = st_err(STETHO_ERR_FORMAT, "%s: index puts tensor '%s' in %s, but it is in %s", path, key,
                            json_string_value(val), c->shard_names[t->shard]);
                goto fail;
            }
        }
        if (json_object_size(weight_map) != total) {
            for (size_t i = 0; i < total; i++)
                if (!json_object_get(weight_map, c->tensors[i]->name)) {
                    st = st_err(STETHO_ERR_FORMAT, "%s: tensor '%s' in %s is not listed in the index", path,
                                c->tensors[i]->name, c->shard_names[c->tensors[i]->shard]);
                    goto fail;
                }
        }
        json_decref(weight_map);
        weight_map = NULL;
    }
    return STETHO_OK;
fail:
    json_decref(weight_map);
    stetho_checkpoint_close(c);
    return st;
}

void stetho_checkpoint_close(stetho_checkpoint *c) {
    if (c->shards)
        for (size_t i = 0; i < c->n_shards; i++) stetho_st_close(&c->shards[i]);
    if (c->shard_names)
        for (size_t i = 0; i < c->n_shards; i++) st_free(c->shard_names[i]);
    st_free(c->shards);
    st_free(c->shard_names);
    st_free(c->tensors);
    st_free(c->sorted);
    st_free(c->config_json);
    st_free(c->dir);
    st_free(c->path);
    for (size_t i = 0; i < c->n_owned; i++) st_free(c->owned[i]);
    st_free(c->owned);
    memset(c, 0, sizeof *c);
}

const stetho_tensor *stetho_checkpoint_find(const stetho_checkpoint *c, const char *name) {
    size_t lo = 0, hi = c->n_tensors;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int r = strcmp(name, c->sorted[mid]->name);
        if (r == 0) return c->sorted[mid];
        if (r < 0) hi = mid;
        else lo = mid + 1;
    }
    return NULL;
}

const stetho_st_file *stetho_checkpoint_shard(const stetho_checkpoint *c, const stetho_tensor *t) {
    return (t->shard >= 0 && (size_t)t->shard < c->n_shards) ? &c->shards[t->shard] : NULL;
}

int stetho_checkpoint_n_layers(const stetho_checkpoint *c) {
    int n = c->has_config && c->config.n_layers > 0 ? c->config.n_layers : 0;
    for (size_t i = 0; i < c->n_tensors; i++) {
        stetho_tensor_role r = stetho_arch_classify(c->tensors[i]->name);
        if (r.module != STETHO_MOD_VISION && r.layer + 1 > n) n = r.layer + 1;
    }
    return n;
}

json_t *st_json_load_object(const char *path, size_t max_size, stetho_status *st) {
    char *text;
    size_t len;
    if ((*st = stetho_read_file(path, max_size, &text, &len))) return NULL;
    json_error_t e;
    json_t *root = json_loadb(text, len, 0, &e);
    st_free(text);
    if (!root || !json_is_object(root)) {
        *st = st_err(STETHO_ERR_FORMAT, "%s: not a JSON object (%s)", path, root ? "wrong type" : e.text);
        json_decref(root);
        return NULL;
    }
    return root;
}
