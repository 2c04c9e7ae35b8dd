/* Sparse autoencoders: format detection and loading (Gemma Scope 1/2, SAELens),
 * encode/decode through sgemm, and saving in SAELens format. */
#include "stetho/sae.h"
#include "stetho/checkpoint.h"
#include "stetho/npz.h"
#include "stetho/safetensors.h"
#include "internal.h"

#include <cblas.h>
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define ENCODE_ROWS 256 /* rows per sgemm block: bounds scratch memory */

const char *stetho_sae_format_name(stetho_sae_format f) {
    switch (f) {
    case STETHO_SAE_FORMAT_GEMMA_SCOPE_2: return "gemma-scope-2";
    case STETHO_SAE_FORMAT_GEMMA_SCOPE_1: return "gemma-scope-1";
    case STETHO_SAE_FORMAT_SAELENS: return "saelens";
    }
    return "?";
}

const char *stetho_sae_arch_name(stetho_sae_arch a) {
    switch (a) {
    case STETHO_SAE_RELU: return "standard";
    case STETHO_SAE_JUMPRELU: return "jumprelu";
    case STETHO_SAE_TOPK: return "topk";
    case STETHO_SAE_GATED: return "gated";
    }
    return "?";
}

bool stetho_sae_arch_from_name(const char *name, stetho_sae_arch *out) {
    static const struct { const char *n; stetho_sae_arch a; } names[] = {
        {"standard", STETHO_SAE_RELU}, {"relu", STETHO_SAE_RELU}, {"jumprelu", STETHO_SAE_JUMPRELU},
        {"topk", STETHO_SAE_TOPK},     {"gated", STETHO_SAE_GATED},
    };
    for (size_t i = 0; i < ST_ARRAY_LEN(names); i++)
        if (!strcmp(name, names[i].n)) {
            *out = names[i].a;
            return true;
        }
    return false;
}

void stetho_sae_free(stetho_sae *s) {
    st_free(s->dir);
    st_free(s->W_enc);
    st_free(s->W_dec);
    st_free(s->b_enc);
    st_free(s->b_dec);
    st_free(s->threshold);
    st_free(s->b_gate);
    st_free(s->r_mag);
    st_free(s->b_mag);
    memset(s, 0, sizeof *s);
}

static bool file_exists(const char *dir, const char *name) {
    char *p = st_path_join(dir, name);
    struct stat sb;
    bool ok = p && stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
    st_free(p);
    return ok;
}

/* A parameter source: a safetensors file or an npz archive. */
typedef struct {
    const char *label;
    stetho_st_file *st;
    stetho_npz *npz;
} param_src;

static bool src_has(const param_src *src, const char *name) {
    return src->st ? stetho_st_find(src->st, name) != NULL : stetho_npz_find(src->npz, name) != NULL;
}

/* Copy parameter `name` as f32, checking its shape (d1 = 0 for a vector) and
 * that every value is finite. */
static stetho_status load_param(const param_src *src, const char *name, uint64_t d0, uint64_t d1, float **out) {
    int ndim;
    const uint64_t *shape;
    uint64_t n;
    if (src->st) {
        const stetho_tensor *t = stetho_st_find(src->st, name);
        if (!t) return st_err(STETHO_ERR_FORMAT, "%s: missing parameter '%s'", src->label, name);
        if (!stetho_dtype_is_float(t->dtype) && t->dtype != STETHO_DTYPE_F64)
            return st_err(STETHO_ERR_FORMAT, "%s: parameter '%s' is %s, not a float type", src->label, name,
                          stetho_dtype_name(t->dtype));
        ndim = t->ndim;
        shape = t->shape;
        n = t->n_elements;
    } else {
        const stetho_npy_array *a = stetho_npz_find(src->npz, name);
        if (!a) return st_err(STETHO_ERR_FORMAT, "%s: missing array '%s'", src->label, name);
        ndim = a->ndim;
        shape = a->shape;
        n = a->n_elements;
    }
    int want_ndim = d1 ? 2 : 1;
    if (ndim != want_ndim || shape[0] != d0 || (d1 && shape[1] != d1)) {
        char got[96] = "";
        size_t o = 0;
        for (int d = 0; d < ndim && o < sizeof got; d++)
            o += (size_t)snprintf(got + o, sizeof got - o, "%s%llu", d ? ", " : "", (unsigned long long)shape[d]);
        if (d1)
            return st_err(STETHO_ERR_FORMAT, "%s: parameter '%s' has shape [%s], expected [%llu, %llu]", src->label,
                          name, got, (unsigned long long)d0, (unsigned long long)d1);
        return st_err(STETHO_ERR_FORMAT, "%s: parameter '%s' has shape [%s], expected [%llu]", src->label, name, got,
                      (unsigned long long)d0);
    }
    float *buf = st_malloc((size_t)n * sizeof *buf + 1);
    if (!buf) return STETHO_ERR_NOMEM;
    if (src->st) {
        const stetho_tensor *t = stetho_st_find(src->st, name);
        stetho_convert_to_f32(buf, t->data, t->dtype, (size_t)n);
    } else {
        memcpy(buf, stetho_npz_find(src->npz, name)->data, (size_t)n * sizeof *buf);
    }
    for (uint64_t i = 0; i < n; i++)
        if (!isfinite(buf[i])) {
            st_free(buf);
            return st_err(STETHO_ERR_FORMAT, "%s: parameter '%s' holds a non-finite value (NaN or Inf) at element %llu",
                          src->label, name, (unsigned long long)i);
        }
    *out = buf;
    return STETHO_OK;
}

/* d_model and d_sae from the encoder's shape. */
static stetho_status param_dims(const param_src *src, const char *enc, int *d_model, int *d_sae) {
    const uint64_t *shape = NULL;
    int ndim = 0;
    if (src->st) {
        const stetho_tensor *t = stetho_st_find(src->st, enc);
        if (t) shape = t->shape, ndim = t->ndim;
    } else {
        const stetho_npy_array *a = stetho_npz_find(src->npz, enc);
        if (a) shape = a->shape, ndim = a->ndim;
    }
    if (!shape) return st_err(STETHO_ERR_FORMAT, "%s: missing encoder '%s'", src->label, enc);
    if (ndim != 2 || shape[0] == 0 || shape[1] == 0 || shape[0] > (1u << 20) || shape[1] > (1u << 24))
        return st_err(STETHO_ERR_FORMAT, "%s: encoder '%s' must be a non-empty 2-D [d_model, d_sae] matrix", src->label, enc);
    *d_model = (int)shape[0];
    *d_sae = (int)shape[1];
    return STETHO_OK;
}

/* "layer_12" anywhere in the path gives the layer when a config does not. */
static int layer_from_path(const char *dir) {
    const char *p = dir;
    while ((p = strstr(p, "layer_"))) {
        p += 6;
        if (*p >= '0' && *p <= '9') return atoi(p);
    }
    return -1;
}

/* "model.layers.12.output" (Gemma Scope 2 configs name HF modules) -> 12 */
static int layer_from_hf_hook(const char *s) {
    const char *p = strstr(s, "layers.");
    if (!p || p[7] < '0' || p[7] > '9') return -1;
    int l = atoi(p + 7);
    const char *rest = strchr(p + 7, '.');
    return (rest && !strcmp(rest, ".output")) || !rest ? l : -1;
}

static json_t *load_json(const char *dir, const char *name, stetho_status *st) {
    char *p = st_path_join(dir, name);
    if (!p) return *st = STETHO_ERR_NOMEM, NULL;
    json_t *root = st_json_load_object(p, 16u << 20, st);
    st_free(p);
    return root;
}

static const char *json_str(json_t *o, const char *key) {
    json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static stetho_status load_saelens(stetho_sae *s, const char *dir) {
    stetho_status st;
    json_t *cfg = load_json(dir, "cfg.json", &st);
    if (!cfg) return st;
    char *wpath = st_path_join(dir, "sae_weights.safetensors");
    stetho_st_file f;
    if (!wpath || (st = stetho_st_open(&f, wpath))) {
        st_free(wpath);
        json_decref(cfg);
        return st ? st : STETHO_ERR_NOMEM;
    }
    param_src src = {wpath, &f, NULL};
    const char *arch = json_str(cfg, "architecture");
    if (!arch) arch = "standard";
    if (!stetho_sae_arch_from_name(arch, &s->arch)) {
        st = st_err(STETHO_ERR_UNSUPPORTED, "%s/cfg.json: unknown SAE architecture '%s' (known: standard, jumprelu, topk, gated)",
                    dir, arch);
        goto done;
    }
    json_t *v = json_object_get(cfg, "apply_b_dec_to_input");
    s->apply_b_dec_to_input = v ? json_is_true(v) : true;
    const char *norm = json_str(cfg, "normalize_activations");
    if (!norm || !strcmp(norm, "none")) s->norm = STETHO_SAE_NORM_NONE;
    else if (!strcmp(norm, "constant_norm_rescale")) s->norm = STETHO_SAE_NORM_CONSTANT_NORM_RESCALE;
    else if (!strcmp(norm, "layer_norm")) s->norm = STETHO_SAE_NORM_LAYER_NORM;
    else if (!strcmp(norm, "expected_average_only_in")) {
        json_t *f = json_object_get(cfg, "norm_scaling_factor");
        if (!json_is_number(f)) {
            st = st_err(STETHO_ERR_UNSUPPORTED,
                        "%s/cfg.json: normalize_activations 'expected_average_only_in' needs a \"norm_scaling_factor\" (or fold it into the weights)",
                        dir);
            goto done;
        }
        s->norm = STETHO_SAE_NORM_SCALAR;
        s->norm_scale = (float)json_number_value(f);
    } else {
        st = st_err(STETHO_ERR_UNSUPPORTED, "%s/cfg.json: unknown normalize_activations '%s'", dir, norm);
        goto done;
    }
    json_t *k = json_object_get(cfg, "k");
    if (!k) k = json_object_get(json_object_get(cfg, "activation_fn_kwargs"), "k");
    if (s->arch == STETHO_SAE_TOPK) {
        if (!json_is_integer(k) || json_integer_value(k) < 1) {
            st = st_err(STETHO_ERR_FORMAT, "%s/cfg.json: a topk SAE needs a positive integer \"k\"", dir);
            goto done;
        }
        s->k = (int)json_integer_value(k) > (1 << 24) ? (1 << 24) : (int)json_integer_value(k);
    }
    const char *hook = json_str(cfg, "hook_name");
    json_t *meta = json_object_get(cfg, "metadata");
    if (!meta) meta = json_object_get(cfg, "meta");
    if (!hook && meta) hook = json_str(meta, "hook_name");
    if (hook) snprintf(s->hook, sizeof s->hook, "%s", hook);
    /* what the weights are stored as, not what cfg.json says they should run in */
    const stetho_tensor *w_enc_t = stetho_st_find(src.st, "W_enc");
    snprintf(s->stored_dtype, sizeof s->stored_dtype, "%s", w_enc_t ? stetho_dtype_name(w_enc_t->dtype) : "F32");
    if ((st = param_dims(&src, "W_enc", &s->d_model, &s->d_sae))) goto done;
    json_t *din = json_object_get(cfg, "d_in"), *dsae = json_object_get(cfg, "d_sae");
    if ((json_is_integer(din) && json_integer_value(din) != s->d_model) ||
        (json_is_integer(dsae) && json_integer_value(dsae) != s->d_sae)) {
        st = st_err(STETHO_ERR_FORMAT, "%s: W_enc is [%d, %d] but cfg.json says d_in %lld, d_sae %lld", wpath, s->d_model,
                    s->d_sae, (long long)json_integer_value(din), (long long)json_integer_value(dsae));
        goto done;
    }
    if (s->arch == STETHO_SAE_TOPK && s->k > s->d_sae) {
        st = st_err(STETHO_ERR_FORMAT, "%s/cfg.json: k = %d exceeds d_sae = %d", dir, s->k, s->d_sae);
        goto done;
    }
    uint64_t dm = (uint64_t)s->d_model, ds = (uint64_t)s->d_sae;
    if ((st = load_param(&src, "W_enc", dm, ds, &s->W_enc)) || (st = load_param(&src, "W_dec", ds, dm, &s->W_dec)) ||
        (st = load_param(&src, "b_dec", dm, 0, &s->b_dec)))
        goto done;
    if (s->arch == STETHO_SAE_GATED) {
        if ((st = load_param(&src, "b_gate", ds, 0, &s->b_gate)) || (st = load_param(&src, "r_mag", ds, 0, &s->r_mag)) ||
            (st = load_param(&src, "b_mag", ds, 0, &s->b_mag)))
            goto done;
    } else if ((st = load_param(&src, "b_enc", ds, 0, &s->b_enc))) {
        goto done;
    }
    if (s->arch == STETHO_SAE_JUMPRELU) {
        if (src_has(&src, "threshold")) st = load_param(&src, "threshold", ds, 0, &s->threshold);
        else if (src_has(&src, "log_threshold")) {
            if (!(st = load_param(&src, "log_threshold", ds, 0, &s->threshold)))
                for (int i = 0; i < s->d_sae; i++) s->threshold[i] = expf(s->threshold[i]);
        } else st = st_err(STETHO_ERR_FORMAT, "%s: a jumprelu SAE needs 'threshold' (or 'log_threshold')", wpath);
    }
done:
    stetho_st_close(&f);
    st_free(wpath);
    json_decref(cfg);
    return st;
}

/* Gemma Scope 1 (npz) and 2 (safetensors): JumpReLU, no input normalisation. */
static stetho_status load_gemma_scope(stetho_sae *s, const char *dir, bool v2) {
    stetho_status st = STETHO_OK;
    stetho_st_file f;
    stetho_npz z;
    bool have_f = false, have_z = false;
    char *path = st_path_join(dir, v2 ? "params.safetensors" : "params.npz");
    if (!path) return STETHO_ERR_NOMEM;
    param_src src = {path, NULL, NULL};
    if (v2) {
        if ((st = stetho_st_open(&f, path))) goto done;
        have_f = true;
        src.st = &f;
    } else {
        if ((st = stetho_npz_load(&z, path))) goto done;
        have_z = true;
        src.npz = &z;
    }
    const char *enc = v2 ? "w_enc" : "W_enc", *dec = v2 ? "w_dec" : "W_dec";
    s->arch = STETHO_SAE_JUMPRELU;
    s->apply_b_dec_to_input = false; /* Gemma Scope encodes x directly: pre = x W_enc + b_enc */
    const stetho_npy_array *enc_arr = v2 ? NULL : stetho_npz_find(&z, enc);
    const stetho_tensor *enc_t = v2 ? stetho_st_find(&f, enc) : NULL;
    snprintf(s->stored_dtype, sizeof s->stored_dtype, "%s",
             stetho_dtype_name(enc_t ? enc_t->dtype : enc_arr ? enc_arr->stored : STETHO_DTYPE_F32));
    if ((st = param_dims(&src, enc, &s->d_model, &s->d_sae))) goto done;
    uint64_t dm = (uint64_t)s->d_model, ds = (uint64_t)s->d_sae;
    if ((st = load_param(&src, enc, dm, ds, &s->W_enc)) || (st = load_param(&src, dec, ds, dm, &s->W_dec)) ||
        (st = load_param(&src, "b_enc", ds, 0, &s->b_enc)) || (st = load_param(&src, "b_dec", dm, 0, &s->b_dec)) ||
        (st = load_param(&src, "threshold", ds, 0, &s->threshold)))
        goto done;
    if (v2 && file_exists(dir, "config.json")) {
        json_t *cfg = load_json(dir, "config.json", &st);
        if (!cfg) goto done;
        const char *key;
        json_t *v;
        json_object_foreach(cfg, key, v) {
            if (json_is_string(v) && s->layer < 0) s->layer = layer_from_hf_hook(json_string_value(v));
        }
        json_decref(cfg);
    }
    if (s->layer < 0) s->layer = layer_from_path(dir);
    if (s->layer >= 0) snprintf(s->hook, sizeof s->hook, "blocks.%d.hook_resid_post", s->layer);
done:
    if (have_f) stetho_st_close(&f);
    if (have_z) stetho_npz_free(&z);
    st_free(path);
    return st;
}

stetho_status stetho_sae_load(stetho_sae *s, const char *dir) {
    memset(s, 0, sizeof *s);
    s->layer = -1;
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return st_err(STETHO_ERR_NOTFOUND, "%s: not a directory (an SAE is a directory of weights and config)", dir);
    if (!(s->dir = st_strdup(dir))) return STETHO_ERR_NOMEM;
    stetho_status st;
    if (file_exists(dir, "sae_weights.safetensors")) {
        s->format = STETHO_SAE_FORMAT_SAELENS;
        st = file_exists(dir, "cfg.json") ? load_saelens(s, dir)
                                          : st_err(STETHO_ERR_FORMAT, "%s: sae_weights.safetensors without cfg.json", dir);
    } else if (file_exists(dir, "params.safetensors")) {
        s->format = STETHO_SAE_FORMAT_GEMMA_SCOPE_2;
        st = load_gemma_scope(s, dir, true);
    } else if (file_exists(dir, "params.npz")) {
        s->format = STETHO_SAE_FORMAT_GEMMA_SCOPE_1;
        st = load_gemma_scope(s, dir, false);
    } else {
        st = st_err(STETHO_ERR_NOTFOUND,
                    "%s: no SAE found (expected cfg.json + sae_weights.safetensors, params.safetensors or params.npz)", dir);
    }
    if (!st && s->layer < 0 && s->hook[0]) {
        int l;
        if (sscanf(s->hook, "blocks.%d.", &l) == 1) s->layer = l;
    }
    if (!st && s->layer < 0) s->layer = layer_from_path(dir);
    if (st) stetho_sae_free(s);
    return st;
}

/* In-place input normalisation of one row; returns what decode needs to undo it. */
static void norm_in(const stetho_sae *s, float *x, float *a, float *b) {
    int d = s->d_model;
    *a = 1, *b = 0;
    if (s->norm == STETHO_SAE_NORM_CONSTANT_NORM_RESCALE) {
        double ss = 0;
        for (int i = 0; i < d; i++) ss += (double)x[i] * x[i];
        float c = ss > 0 ? (float)(sqrt((double)d) / sqrt(ss)) : 1.0f;
        for (int i = 0; i < d; i++) x[i] *= c;
        *a = 1.0f / c;
    } else if (s->norm == STETHO_SAE_NORM_LAYER_NORM) {
        double mu = 0, var = 0;
        for (int i = 0; i < d; i++) mu += x[i];
        mu /= d;
        for (int i = 0; i < d; i++) var += (x[i] - mu) * (x[i] - mu);
        double sd = d > 1 ? sqrt(var / (d - 1)) : 0; /* torch.std is unbiased */
        for (int i = 0; i < d; i++) x[i] = (float)((x[i] - mu) / (sd + 1e-5));
        *a = (float)sd, *b = (float)mu;
    } else if (s->norm == STETHO_SAE_NORM_SCALAR) {
        for (int i = 0; i < d; i++) x[i] *= s->norm_scale;
        *a = 1.0f / s->norm_scale;
    }
}

/* Keep the k largest entries of row (ties broken by lower index), ReLU'd. */
static void topk_row(float *row, int n, int k, float *scratch) {
    memcpy(scratch, row, (size_t)n * sizeof *row);
    /* quickselect for the k-th largest value */
    int lo = 0, hi = n - 1, target = k - 1;
    while (lo < hi) {
        float pivot = scratch[lo + (hi - lo) / 2];
        int i = lo, j = hi;
        while (i <= j) {
            while (scratch[i] > pivot) i++;
            while (scratch[j] < pivot) j--;
            if (i <= j) {
                float t = scratch[i];
                scratch[i] = scratch[j];
                scratch[j] = t;
                i++, j--;
            }
        }
        if (target <= j) hi = j;
        else if (target >= i) lo = i;
        else break;
    }
    float kth = scratch[target];
    int above = 0;
    for (int i = 0; i < n; i++) above += row[i] > kth;
    int ties = k - above;
    for (int i = 0; i < n; i++) {
        if (row[i] > kth) row[i] = row[i] > 0 ? row[i] : 0;
        else if (row[i] == kth && ties > 0) {
            ties--;
            row[i] = row[i] > 0 ? row[i] : 0;
        } else row[i] = 0;
    }
}

/* Encode rows [0, rows) of x into acts [rows, d_sae] on the calling thread.
 * xin: [rows, d_model] scratch; mag: [rows, d_sae] (gated); sc: [d_sae] (top-k). */
static void encode_block(const stetho_sae *s, const float *x, int rows, float *acts, float *xin, float *mag,
                         const float *wmag, float *sc) {
    int dm = s->d_model, ds = s->d_sae;
    memcpy(xin, x, (size_t)rows * (size_t)dm * sizeof *xin);
    for (int r = 0; r < rows; r++) {
        float a, b;
        norm_in(s, xin + (size_t)r * dm, &a, &b);
        if (s->apply_b_dec_to_input)
            for (int i = 0; i < dm; i++) xin[(size_t)r * dm + i] -= s->b_dec[i];
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, ds, dm, 1.0f, xin, dm, s->W_enc, ds, 0.0f, acts, ds);
    if (wmag) cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, ds, dm, 1.0f, xin, dm, wmag, ds, 0.0f, mag, ds);
    for (int r = 0; r < rows; r++) {
        float *p = acts + (size_t)r * ds;
        switch (s->arch) {
        case STETHO_SAE_RELU:
            for (int j = 0; j < ds; j++) {
                float v = p[j] + s->b_enc[j];
                p[j] = v > 0 ? v : 0;
            }
            break;
        case STETHO_SAE_JUMPRELU:
            for (int j = 0; j < ds; j++) {
                float v = p[j] + s->b_enc[j];
                p[j] = (v > s->threshold[j] && v > 0) ? v : 0;
            }
            break;
        case STETHO_SAE_TOPK:
            for (int j = 0; j < ds; j++) p[j] += s->b_enc[j];
            topk_row(p, ds, s->k, sc);
            break;
        case STETHO_SAE_GATED: {
            const float *m = mag + (size_t)r * ds;
            for (int j = 0; j < ds; j++) {
                float g = p[j] + s->b_gate[j], v = m[j] + s->b_mag[j];
                p[j] = (g > 0 && v > 0) ? v : 0;
            }
            break;
        }
        }
    }
}

/* The rows are split over the OpenMP team and each thread runs its own
 * single-threaded sgemm: with OpenBLAS's threads as well, the two pools
 * busy-wait against each other on the same cores (profiled in diagnose: most
 * of its time went to their spinning). */
stetho_status stetho_sae_encode(const stetho_sae *s, const float *x, size_t n, float *acts) {
    int dm = s->d_model, ds = s->d_sae, nt = stetho_get_threads();
    bool gated = s->arch == STETHO_SAE_GATED, topk = s->arch == STETHO_SAE_TOPK;
    if (n == 0) return STETHO_OK;
    if ((size_t)nt > n) nt = (int)n;
    size_t per = (size_t)ENCODE_ROWS * dm + (gated ? (size_t)ENCODE_ROWS * ds : 0) + (topk ? (size_t)ds : 0);
    float *ws = st_malloc((size_t)nt * per * sizeof *ws);
    float *wmag = gated ? st_malloc((size_t)dm * (size_t)ds * sizeof *wmag) : NULL;
    if (!ws || (gated && !wmag)) {
        st_free(ws), st_free(wmag);
        return STETHO_ERR_NOMEM;
    }
    if (wmag) /* gated magnitude path: W_enc scaled per feature by exp(r_mag) */
        for (int i = 0; i < dm; i++)
            for (int j = 0; j < ds; j++) wmag[(size_t)i * ds + j] = s->W_enc[(size_t)i * ds + j] * expf(s->r_mag[j]);
    int blas_threads = st_blas_single_thread();
#pragma omp parallel num_threads(nt)
    {
#ifdef _OPENMP
        size_t id = (size_t)omp_get_thread_num(), team = (size_t)omp_get_num_threads();
#else
        size_t id = 0, team = 1;
#endif
        float *xin = ws + id * per, *mag = gated ? xin + (size_t)ENCODE_ROWS * dm : NULL;
        float *sc = topk ? xin + per - (size_t)ds : NULL;
        size_t lo = n * id / team, hi = n * (id + 1) / team;
        for (size_t r0 = lo; r0 < hi; r0 += ENCODE_ROWS) {
            int rows = (int)(hi - r0 < ENCODE_ROWS ? hi - r0 : ENCODE_ROWS);
            encode_block(s, x + r0 * (size_t)dm, rows, acts + r0 * (size_t)ds, xin, mag, wmag, sc);
        }
    }
    st_blas_restore(blas_threads);
    st_free(ws), st_free(wmag);
    return STETHO_OK;
}

stetho_status stetho_sae_decode(const stetho_sae *s, const float *acts, const float *x, size_t n, float *x_hat) {
    int dm = s->d_model, ds = s->d_sae;
    if (!x && (s->norm == STETHO_SAE_NORM_CONSTANT_NORM_RESCALE || s->norm == STETHO_SAE_NORM_LAYER_NORM))
        return st_err(STETHO_ERR_INVALID, "decoding this SAE needs its input to undo the input normalisation");
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, dm, ds, 1.0f, acts, ds, s->W_dec, dm, 0.0f, x_hat, dm);
    float *row = st_malloc((size_t)dm * sizeof *row);
    if (!row) return STETHO_ERR_NOMEM;
    for (size_t r = 0; r < n; r++) {
        float *y = x_hat + r * (size_t)dm;
        for (int i = 0; i < dm; i++) y[i] += s->b_dec[i];
        if (s->norm == STETHO_SAE_NORM_NONE) continue;
        float a = 1, b = 0;
        if (x) {
            memcpy(row, x + r * (size_t)dm, (size_t)dm * sizeof *row);
            norm_in(s, row, &a, &b);
        } else {
            a = 1.0f / s->norm_scale;
        }
        for (int i = 0; i < dm; i++) y[i] = y[i] * a + b;
    }
    st_free(row);
    return STETHO_OK;
}

static stetho_status write_text_atomic(const char *path, const char *text) {
    return stetho_write_file(path, text, strlen(text));
}

/* A min-heap of the k best (value, index) pairs; "better" = larger value, or
 * equal value and smaller index, so the order is total and deterministic. */
static inline bool topk_better(float va, int32_t ia, float vb, int32_t ib) { return va > vb || (va == vb && ia < ib); }

static void topk_sift(float *hv, int32_t *hi, int k, int i) {
    for (;;) {
        int l = 2 * i + 1, r = l + 1, w = i;
        if (l < k && topk_better(hv[w], hi[w], hv[l], hi[l])) w = l;
        if (r < k && topk_better(hv[w], hi[w], hv[r], hi[r])) w = r;
        if (w == i) return;
        float tv = hv[i];
        int32_t ti = hi[i];
        hv[i] = hv[w], hi[i] = hi[w], hv[w] = tv, hi[w] = ti;
        i = w;
    }
}

stetho_status stetho_sae_top_k(const float *acts, size_t n, int d_sae, int k, int32_t *idx, float *val) {
    if (!acts || !idx || !val || d_sae <= 0 || k <= 0 || k > d_sae)
        return st_err(STETHO_ERR_INVALID, "sae top-k: k must be in 1..d_sae (%d), got %d", d_sae, k);
#pragma omp parallel for schedule(static)
    for (size_t r = 0; r < n; r++) {
        const float *a = acts + r * (size_t)d_sae;
        float *hv = val + r * (size_t)k;
        int32_t *hi = idx + r * (size_t)k;
        for (int j = 0; j < k; j++) hv[j] = a[j], hi[j] = j;
        for (int j = k / 2 - 1; j >= 0; j--) topk_sift(hv, hi, k, j);
        for (int j = k; j < d_sae; j++)
            if (topk_better(a[j], j, hv[0], hi[0])) {
                hv[0] = a[j], hi[0] = j;
                topk_sift(hv, hi, k, 0);
            }
        /* heap sort in place: the root (the worst kept) goes to the back each
         * time, which leaves the row best first */
        for (int m = k - 1; m > 0; m--) {
            float tv = hv[0];
            int32_t ti = hi[0];
            hv[0] = hv[m], hi[0] = hi[m], hv[m] = tv, hi[m] = ti;
            topk_sift(hv, hi, m, 0);
        }
    }
    return STETHO_OK;
}

stetho_status stetho_sae_save_saelens(const stetho_sae *s, const char *dir, bool overwrite) {
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) return st_err(STETHO_ERR_IO, "%s: cannot create: %s", dir, strerror(errno));
    if (!overwrite && (file_exists(dir, "cfg.json") || file_exists(dir, "sae_weights.safetensors")))
        return st_err(STETHO_ERR_EXISTS, "%s: already holds an SAE", dir);
    char *wpath = st_path_join(dir, "sae_weights.safetensors"), *cpath = st_path_join(dir, "cfg.json");
    stetho_status st = (wpath && cpath) ? STETHO_OK : STETHO_ERR_NOMEM;
    uint64_t dm = (uint64_t)s->d_model, ds = (uint64_t)s->d_sae;
    stetho_tensor ts[5] = {
        {.name = "W_enc", .dtype = STETHO_DTYPE_F32, .ndim = 2, .shape = {dm, ds}, .nbytes = dm * ds * 4, .data = s->W_enc},
        {.name = "W_dec", .dtype = STETHO_DTYPE_F32, .ndim = 2, .shape = {ds, dm}, .nbytes = dm * ds * 4, .data = s->W_dec},
        {.name = "b_dec", .dtype = STETHO_DTYPE_F32, .ndim = 1, .shape = {dm}, .nbytes = dm * 4, .data = s->b_dec},
        {.name = "b_enc", .dtype = STETHO_DTYPE_F32, .ndim = 1, .shape = {ds}, .nbytes = ds * 4, .data = s->b_enc},
        {.name = "threshold", .dtype = STETHO_DTYPE_F32, .ndim = 1, .shape = {ds}, .nbytes = ds * 4, .data = s->threshold},
    };
    size_t nt = s->arch == STETHO_SAE_JUMPRELU ? 5 : 4;
    if (s->arch == STETHO_SAE_GATED) st = st_err(STETHO_ERR_UNSUPPORTED, "saving gated SAEs is not supported");
    stetho_kv meta = {"format", "pt"};
    if (!st) st = stetho_st_write_tensors(wpath, ts, nt, &meta, 1);
    if (!st) {
        json_t *cfg = json_object();
        json_object_set_new(cfg, "architecture", json_string(stetho_sae_arch_name(s->arch)));
        json_object_set_new(cfg, "d_in", json_integer(s->d_model));
        json_object_set_new(cfg, "d_sae", json_integer(s->d_sae));
        json_object_set_new(cfg, "dtype", json_string("float32"));
        json_object_set_new(cfg, "device", json_string("cpu"));
        json_object_set_new(cfg, "apply_b_dec_to_input", json_boolean(s->apply_b_dec_to_input));
        json_object_set_new(cfg, "normalize_activations", json_string("none"));
        json_object_set_new(cfg, "reshape_activations", json_string("none"));
        if (s->arch == STETHO_SAE_TOPK) json_object_set_new(cfg, "k", json_integer(s->k));
        json_t *meta_o = json_object();
        if (s->hook[0]) json_object_set_new(meta_o, "hook_name", json_string(s->hook));
        if (s->layer >= 0) json_object_set_new(meta_o, "hook_layer", json_integer(s->layer));
        json_object_set_new(meta_o, "sae_lens_training_version", json_string("stetho " STETHO_VERSION));
        json_object_set_new(cfg, "metadata", meta_o);
        char *text = json_dumps(cfg, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        json_decref(cfg);
        st = text ? write_text_atomic(cpath, text) : STETHO_ERR_NOMEM;
        free(text);
        if (st) remove(wpath);
    }
    st_free(wpath);
    st_free(cpath);
    return st;
}

/* The layer of the SAE in dir without loading its weights; -2 if dir holds none. */
static int probe_layer(const char *dir) {
    stetho_status st;
    if (file_exists(dir, "sae_weights.safetensors") && file_exists(dir, "cfg.json")) {
        json_t *cfg = load_json(dir, "cfg.json", &st);
        int layer = -1, l;
        if (cfg) {
            json_t *meta = json_object_get(cfg, "metadata");
            if (!meta) meta = json_object_get(cfg, "meta");
            const char *hook = json_str(cfg, "hook_name");
            if (!hook && meta) hook = json_str(meta, "hook_name");
            if (hook && sscanf(hook, "blocks.%d.", &l) == 1) layer = l;
            json_decref(cfg);
        }
        return layer >= 0 ? layer : layer_from_path(dir);
    }
    if (file_exists(dir, "params.safetensors")) {
        int layer = -1;
        if (file_exists(dir, "config.json")) {
            json_t *cfg = load_json(dir, "config.json", &st);
            const char *key;
            json_t *v;
            if (cfg) {
                json_object_foreach(cfg, key, v) if (json_is_string(v) && layer < 0) layer = layer_from_hf_hook(json_string_value(v));
                json_decref(cfg);
            }
        }
        return layer >= 0 ? layer : layer_from_path(dir);
    }
    if (file_exists(dir, "params.npz")) return layer_from_path(dir);
    return -2;
}

void stetho_sae_entries_free(stetho_sae_entry *e, size_t n) {
    for (size_t i = 0; i < n; i++) st_free(e[i].path);
    st_free(e);
}

static int cmp_entry(const void *a, const void *b) {
    const stetho_sae_entry *x = a, *y = b;
    return x->layer != y->layer ? (x->layer < y->layer ? -1 : 1) : strcmp(x->path, y->path);
}

static stetho_status scan_into(const char *dir, int depth, stetho_sae_entry **e, size_t *n, size_t *cap) {
    int layer = probe_layer(dir);
    if (layer != -2) {
        if (layer < 0)
            return st_err(STETHO_ERR_FORMAT, "%s: cannot tell which layer this SAE reads (no hook name, no layer_N in the path)", dir);
        if (*n == *cap) {
            size_t nc = *cap ? *cap * 2 : 16;
            stetho_sae_entry *p = st_realloc(*e, nc * sizeof *p);
            if (!p) return STETHO_ERR_NOMEM;
            *e = p;
            *cap = nc;
        }
        (*e)[*n].layer = layer;
        if (!((*e)[*n].path = st_strdup(dir))) return STETHO_ERR_NOMEM;
        (*n)++;
        return STETHO_OK;
    }
    if (depth == 0) return STETHO_OK;
    DIR *d = opendir(dir);
    if (!d) return st_err(STETHO_ERR_IO, "%s: cannot list: %s", dir, strerror(errno));
    stetho_status st = STETHO_OK;
    struct dirent *de;
    while (!st && (de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        char *sub = st_path_join(dir, de->d_name);
        struct stat sb;
        if (!sub) st = STETHO_ERR_NOMEM;
        else if (stat(sub, &sb) == 0 && S_ISDIR(sb.st_mode)) st = scan_into(sub, depth - 1, e, n, cap);
        st_free(sub);
    }
    closedir(d);
    return st;
}

stetho_status stetho_sae_scan(const char *dir, stetho_sae_entry **entries, size_t *n) {
    *entries = NULL;
    *n = 0;
    size_t cap = 0;
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) return st_err(STETHO_ERR_NOTFOUND, "%s: not a directory", dir);
    stetho_status st = scan_into(dir, 3, entries, n, &cap);
    if (!st && *n == 0) st = st_err(STETHO_ERR_NOTFOUND, "%s: no SAEs found (looked three levels deep)", dir);
    if (!st) {
        qsort(*entries, *n, sizeof **entries, cmp_entry);
        for (size_t i = 1; i < *n && !st; i++)
            if ((*entries)[i].layer == (*entries)[i - 1].layer)
                st = st_err(STETHO_ERR_FORMAT, "two SAEs for layer %d: %s and %s (point --sae-dir at one set)",
                            (*entries)[i].layer, (*entries)[i - 1].path, (*entries)[i].path);
    }
    if (st) {
        stetho_sae_entries_free(*entries, *n);
        *entries = NULL;
        *n = 0;
    }
    return st;
}
