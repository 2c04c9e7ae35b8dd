/* Layer selection: ranking by scores or ||tau||, seeded random draws,
 * ablations, SCORES.json loading and the metadata record of a selection. */
#include "stetho/select.h"
#include "stetho/study.h"
#include "internal.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define NORM_BLOCK ((size_t)1 << 20) /* elements converted per step */

static const char *method_names[] = {"top", "bottom", "random", "norm", "all", "only", "except"};

const char *stetho_select_method_name(stetho_select_method m) {
    return (unsigned)m < ST_ARRAY_LEN(method_names) ? method_names[m] : "?";
}

bool stetho_select_needs_k(stetho_select_method m) {
    return m == STETHO_SELECT_TOP || m == STETHO_SELECT_BOTTOM || m == STETHO_SELECT_RANDOM || m == STETHO_SELECT_NORM;
}

bool stetho_select_needs_scores(stetho_select_method m) { return m == STETHO_SELECT_TOP || m == STETHO_SELECT_BOTTOM; }

stetho_status stetho_select_spec_parse(const char *s, stetho_select_spec *spec) {
    if (!s) return st_err(STETHO_ERR_INVALID, "empty layer selection");
    for (size_t i = 0; i < ST_ARRAY_LEN(method_names); i++) {
        size_t n = strlen(method_names[i]);
        if (strncmp(s, method_names[i], n) != 0) continue;
        bool takes_layer = i == STETHO_SELECT_ONLY || i == STETHO_SELECT_EXCEPT;
        if (!takes_layer && s[n] == '\0') {
            spec->method = (stetho_select_method)i;
            return STETHO_OK;
        }
        if (takes_layer && s[n] == ':') {
            const char *p = s + n + 1;
            char *end;
            long l = strtol(p, &end, 10);
            if (*p < '0' || *p > '9' || *end || l > 1000000)
                return st_err(STETHO_ERR_INVALID, "selection '%s': expected %s:LAYER with LAYER a number from 0", s,
                              method_names[i]);
            spec->method = (stetho_select_method)i;
            spec->layer = (int)l;
            return STETHO_OK;
        }
    }
    return st_err(STETHO_ERR_INVALID, "unknown layer selection '%s' (known: top, bottom, random, norm, all, only:L, except:L)",
                  s);
}

/* splitmix64: small, fast and fully specified, so draws are reproducible anywhere */
static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [0, n) without modulo bias (rejection of the short last interval). */
static uint64_t uniform_below(uint64_t *state, uint64_t n) {
    uint64_t limit = UINT64_MAX - UINT64_MAX % n, r;
    do r = splitmix64(state);
    while (r >= limit);
    return r % n;
}

typedef struct {
    int layer;
    double v;
} ranked;

static int cmp_desc(const void *a, const void *b) {
    const ranked *x = a, *y = b;
    if (x->v != y->v) return x->v > y->v ? -1 : 1;
    return x->layer - y->layer;
}

static int cmp_asc(const void *a, const void *b) {
    const ranked *x = a, *y = b;
    if (x->v != y->v) return x->v < y->v ? -1 : 1;
    return x->layer - y->layer;
}

stetho_status stetho_select_layers(const stetho_select_spec *spec, int n_layers, const double *values, bool *chosen,
                                   int *order, int *n_chosen) {
    *n_chosen = 0;
    if (n_layers <= 0) return st_err(STETHO_ERR_INVALID, "the model has no decoder layers to select from");
    memset(chosen, 0, (size_t)n_layers * sizeof *chosen);
    stetho_select_method m = spec->method;
    const char *name = stetho_select_method_name(m);
    int k = spec->k, n = 0;
    if (stetho_select_needs_k(m) && k < 1) return st_err(STETHO_ERR_INVALID, "--select %s needs K >= 1 (got %d)", name, k);
    switch (m) {
    case STETHO_SELECT_TOP:
    case STETHO_SELECT_BOTTOM:
    case STETHO_SELECT_NORM: {
        if (!values) return st_err(STETHO_ERR_INVALID, "--select %s needs per-layer %s", name, m == STETHO_SELECT_NORM ? "norms" : "scores");
        ranked *r = st_malloc((size_t)n_layers * sizeof *r);
        if (!r) return STETHO_ERR_NOMEM;
        int nc = 0;
        for (int l = 0; l < n_layers; l++)
            if (isfinite(values[l])) r[nc++] = (ranked){l, values[l]};
        if (k > nc) {
            st_free(r);
            return st_err(STETHO_ERR_INVALID, "K = %d but only %d of the %d layers have %s", k, nc, n_layers,
                          m == STETHO_SELECT_NORM ? "a task-vector norm" : "a score");
        }
        qsort(r, (size_t)nc, sizeof *r, m == STETHO_SELECT_BOTTOM ? cmp_asc : cmp_desc);
        for (int i = 0; i < k; i++) {
            chosen[r[i].layer] = true;
            if (order) order[n] = r[i].layer;
            n++;
        }
        st_free(r);
        break;
    }
    case STETHO_SELECT_RANDOM: {
        if (k > n_layers) return st_err(STETHO_ERR_INVALID, "K = %d but the model has %d layers", k, n_layers);
        int *perm = st_malloc((size_t)n_layers * sizeof *perm);
        if (!perm) return STETHO_ERR_NOMEM;
        for (int l = 0; l < n_layers; l++) perm[l] = l;
        uint64_t state = spec->seed;
        for (int i = 0; i < k; i++) {
            int j = i + (int)uniform_below(&state, (uint64_t)(n_layers - i));
            int t = perm[i];
            perm[i] = perm[j];
            perm[j] = t;
            chosen[perm[i]] = true;
            if (order) order[n] = perm[i];
            n++;
        }
        st_free(perm);
        break;
    }
    case STETHO_SELECT_ALL:
    case STETHO_SELECT_ONLY:
    case STETHO_SELECT_EXCEPT:
        if (m != STETHO_SELECT_ALL && (spec->layer < 0 || spec->layer >= n_layers))
            return st_err(STETHO_ERR_INVALID, "%s:%d: the model has layers 0-%d", name, spec->layer, n_layers - 1);
        if (m == STETHO_SELECT_EXCEPT && n_layers < 2)
            return st_err(STETHO_ERR_INVALID, "except:%d would leave no layer (the model has one)", spec->layer);
        for (int l = 0; l < n_layers; l++) {
            bool on = m == STETHO_SELECT_ALL || (m == STETHO_SELECT_ONLY ? l == spec->layer : l != spec->layer);
            if (!on) continue;
            chosen[l] = true;
            if (order) order[n] = l;
            n++;
        }
        break;
    default:
        return st_err(STETHO_ERR_INVALID, "unknown selection method %d", (int)m);
    }
    *n_chosen = n;
    return STETHO_OK;
}

/* ------------------------------------------------------------ scores files */

void stetho_scores_free(stetho_scores *s) {
    st_free(s->path);
    st_free(s->metric);
    st_free(s->model);
    st_free(s->score);
    memset(s, 0, sizeof *s);
}

stetho_status stetho_scores_load(stetho_scores *s, const char *path, const char *metric) {
    memset(s, 0, sizeof *s);
    char *text = NULL;
    size_t len = 0;
    stetho_status st = stetho_read_file(path, (size_t)1 << 30, &text, &len);
    if (st) return st;
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    s->hash = stetho_hash64(text, len, 0);
    free(text);
    if (!json_is_object(root)) {
        json_decref(root);
        return st_err(STETHO_ERR_FORMAT, "%s: not a JSON object (line %d: %s)", path, jerr.line, jerr.text);
    }
    json_t *layers = json_object_get(root, "layers"), *nl = json_object_get(root, "n_layers");
    const char *file_metric = json_string_value(json_object_get(root, "metric"));
    const char *model = json_string_value(json_object_get(root, "model"));
    json_t *dm = json_object_get(root, "d_model");
    if (!json_is_array(layers) || !file_metric) {
        json_decref(root);
        return st_err(STETHO_ERR_FORMAT, "%s: no \"metric\" and \"layers\" (is this a SCORES.json from 'stetho diagnose'?)",
                      path);
    }
    if (!json_is_integer(nl) || json_integer_value(nl) < 1 || json_integer_value(nl) > 100000) {
        json_decref(root);
        return st_err(STETHO_ERR_FORMAT, "%s: no valid \"n_layers\" (the diagnosed model's layer count)", path);
    }
    s->n_layers = (int)json_integer_value(nl);
    s->d_model = json_is_integer(dm) && json_integer_value(dm) > 0 && json_integer_value(dm) < (1 << 30)
                     ? (int)json_integer_value(dm) : 0;
    s->path = st_strdup(path);
    s->metric = st_strdup(metric ? metric : file_metric);
    s->model = st_strdup(model ? model : "");
    s->score = st_malloc((size_t)s->n_layers * sizeof *s->score);
    if (!s->path || !s->metric || !s->model || !s->score) {
        json_decref(root);
        stetho_scores_free(s);
        return STETHO_ERR_NOMEM;
    }
    for (int l = 0; l < s->n_layers; l++) s->score[l] = NAN;
    bool *seen = st_calloc((size_t)s->n_layers, sizeof *seen);
    if (!seen) st = STETHO_ERR_NOMEM;
    int n_scored = 0;
    size_t i;
    json_t *row;
    json_array_foreach(layers, i, row) {
        if (st) break;
        json_t *lv = json_object_get(row, "layer");
        if (!json_is_integer(lv) || json_integer_value(lv) < 0 || json_integer_value(lv) >= s->n_layers) {
            st = st_err(STETHO_ERR_FORMAT, "%s: layers[%zu] has no \"layer\" in 0-%d", path, i, s->n_layers - 1);
            break;
        }
        int l = (int)json_integer_value(lv);
        if (seen[l]) {
            st = st_err(STETHO_ERR_FORMAT, "%s: layer %d is listed twice", path, l);
            break;
        }
        seen[l] = true;
        json_t *v = json_object_get(row, "score");
        if (metric) {
            json_t *all = json_object_get(row, "scores");
            if (json_is_object(all)) {
                v = json_object_get(all, metric);
                if (!v) {
                    st = st_err(STETHO_ERR_NOTFOUND, "%s: layer %d has no score for metric '%s'", path, l, metric);
                    break;
                }
            } else if (json_is_number(v)) {
                st = st_err(STETHO_ERR_FORMAT, "%s: layer %d has no \"scores\" object to take '%s' from", path, l, metric);
                break;
            }
        }
        if (json_is_number(v) && isfinite(json_number_value(v))) {
            s->score[l] = json_number_value(v);
            n_scored++;
        } else if (v && !json_is_null(v)) {
            st = st_err(STETHO_ERR_FORMAT, "%s: layer %d: score is not a number or null", path, l);
        }
    }
    st_free(seen);
    json_decref(root);
    if (!st && n_scored == 0)
        st = st_err(STETHO_ERR_FORMAT, "%s: no layer has a %s score", path, metric ? metric : "finite");
    if (st) stetho_scores_free(s);
    return st;
}

/* The residual-stream width: config.json's hidden size, else read off a
 * decoder matrix (a task vector file carries no config). 0 when unknown. */
static int residual_width(const stetho_checkpoint *c) {
    if (c->has_config && c->config.hidden > 0) return c->config.hidden;
    for (size_t i = 0; i < c->n_tensors; i++) {
        const stetho_tensor *t = c->tensors[i];
        stetho_tensor_role r = stetho_arch_classify(t->name);
        if (r.layer < 0 || r.is_bias || t->ndim != 2) continue;
        if (r.module == STETHO_MOD_ATTN_O || r.module == STETHO_MOD_MLP_DOWN) return (int)t->shape[0];
        if (r.module == STETHO_MOD_ATTN_Q || r.module == STETHO_MOD_ATTN_K || r.module == STETHO_MOD_ATTN_V ||
            r.module == STETHO_MOD_MLP_GATE || r.module == STETHO_MOD_MLP_UP)
            return (int)t->shape[1];
    }
    return 0;
}

stetho_status stetho_scores_check_model(const stetho_scores *s, const stetho_checkpoint *base) {
    int n = stetho_checkpoint_n_layers(base);
    if (s->n_layers != n)
        return st_err(STETHO_ERR_MISMATCH, "%s was computed on a model with %d layers (%s), but %s has %d: scores for another model?",
                      s->path, s->n_layers, s->model[0] ? s->model : "?", base->path, n);
    int width = residual_width(base);
    if (s->d_model > 0 && width > 0 && width != s->d_model)
        return st_err(STETHO_ERR_MISMATCH, "%s was computed on a model with hidden size %d, but %s has %d: scores for another model?",
                      s->path, s->d_model, base->path, width);
    return STETHO_OK;
}

/* ------------------------------------------------------------ task-vector norms */

/* Sum of squares of y - x (x may be NULL: of y) over n elements, in blocks. */
static stetho_status sum_sq(const stetho_tensor *y, const stetho_tensor *x, float *a, float *b, double *out) {
    size_t ey = stetho_dtype_bits(y->dtype) / 8, ex = x ? stetho_dtype_bits(x->dtype) / 8 : 0;
    double total = 0;
    for (uint64_t done = 0; done < y->n_elements;) {
        size_t n = y->n_elements - done < NORM_BLOCK ? (size_t)(y->n_elements - done) : NORM_BLOCK;
        double s = 0;
#pragma omp parallel reduction(+ : s)
        {
#ifdef _OPENMP
            size_t nt = (size_t)omp_get_num_threads(), id = (size_t)omp_get_thread_num();
#else
            size_t nt = 1, id = 0;
#endif
            size_t lo = n * id / nt, hi = n * (id + 1) / nt;
            (void)stetho_convert_to_f32(a + lo, (const uint8_t *)y->data + (done + lo) * ey, y->dtype, hi - lo);
            if (x) (void)stetho_convert_to_f32(b + lo, (const uint8_t *)x->data + (done + lo) * ex, x->dtype, hi - lo);
            for (size_t i = lo; i < hi; i++) {
                double d = x ? (double)a[i] - (double)b[i] : (double)a[i];
                s += d * d;
            }
        }
        total += s;
        done += n;
    }
    *out = total;
    return STETHO_OK;
}

stetho_status stetho_select_layer_norms(const stetho_checkpoint *base, const stetho_checkpoint *delta, bool is_ft,
                                        uint32_t modules, int n_layers, double *norms) {
    for (int l = 0; l < n_layers; l++) norms[l] = 0;
    float *a = st_malloc(NORM_BLOCK * sizeof *a), *b = st_malloc(NORM_BLOCK * sizeof *b);
    stetho_status st = (a && b) ? STETHO_OK : STETHO_ERR_NOMEM;
    for (size_t i = 0; i < delta->n_tensors && !st; i++) {
        const stetho_tensor *t = delta->tensors[i];
        stetho_tensor_role r = stetho_arch_classify(t->name);
        if (r.layer < 0 || r.layer >= n_layers || r.module == STETHO_MOD_VISION || !(modules & (1u << r.module)) ||
            !stetho_dtype_is_float(t->dtype))
            continue;
        const stetho_tensor *x = NULL;
        if (is_ft) {
            x = stetho_checkpoint_find(base, t->name);
            if (!x) continue; /* the edit refuses or skips it; it adds nothing to the norm */
            if (x->n_elements != t->n_elements || !stetho_dtype_is_float(x->dtype)) {
                st = st_err(STETHO_ERR_MISMATCH, "tensor '%s' differs in shape or type between %s and %s", t->name,
                            base->path, delta->path);
                break;
            }
        }
        double s = 0;
        st = sum_sq(t, x, a, b, &s);
        stetho_st_release(stetho_checkpoint_shard(delta, t), t);
        if (x) stetho_st_release(stetho_checkpoint_shard(base, x), x);
        norms[r.layer] += s;
    }
    for (int l = 0; l < n_layers; l++) norms[l] = sqrt(norms[l]);
    st_free(a);
    st_free(b);
    return st;
}

/* ------------------------------------------------------------ metadata */

static json_t *num_or_null(double v) { return isfinite(v) ? json_real(v) : json_null(); }

stetho_status stetho_select_record(const stetho_select_spec *spec, int n_layers, const bool *chosen, const int *order,
                                   int n_chosen, const double *values, const stetho_scores *scores, char **out) {
    *out = NULL;
    json_t *sel = json_object();
    json_object_set_new(sel, "method", json_string(stetho_select_method_name(spec->method)));
    if (stetho_select_needs_k(spec->method)) json_object_set_new(sel, "k", json_integer(spec->k));
    if (spec->method == STETHO_SELECT_RANDOM) {
        char seed[32]; /* as a string too: JSON integers beyond 2^53 do not survive every reader */
        snprintf(seed, sizeof seed, "%llu", (unsigned long long)spec->seed);
        json_object_set_new(sel, "seed", json_string(seed));
    }
    if (spec->method == STETHO_SELECT_ONLY || spec->method == STETHO_SELECT_EXCEPT)
        json_object_set_new(sel, "layer", json_integer(spec->layer));
    json_t *layers = json_array(), *ord = json_array();
    for (int l = 0; l < n_layers; l++)
        if (chosen[l]) json_array_append_new(layers, json_integer(l));
    for (int i = 0; order && i < n_chosen; i++) json_array_append_new(ord, json_integer(order[i]));
    json_object_set_new(sel, "layers", layers);
    json_object_set_new(sel, "order", ord);
    json_object_set_new(sel, "n_layers", json_integer(n_layers));
    if (values) {
        json_t *v = json_array();
        for (int l = 0; l < n_layers; l++) json_array_append_new(v, num_or_null(values[l]));
        json_object_set_new(sel, spec->method == STETHO_SELECT_NORM ? "tau_norms" : "values", v);
    }
    if (scores) {
        char hash[17];
        snprintf(hash, sizeof hash, "%016llx", (unsigned long long)scores->hash);
        json_t *sc = json_pack("{s:s, s:s, s:s, s:s}", "path", scores->path, "fnv1a64", hash, "metric", scores->metric,
                               "model", scores->model);
        if (!sc) {
            json_decref(sel);
            return st_err(STETHO_ERR_INVALID, "cannot record the scores file in metadata (path not valid UTF-8?)");
        }
        json_object_set_new(sel, "scores", sc);
    }
    json_t *root = json_object();
    json_object_set_new(root, "selection", sel);
    *out = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    return *out ? STETHO_OK : st_err(STETHO_ERR_INVALID, "cannot record the selection (paths not valid UTF-8?)");
}
