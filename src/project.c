/* Subspace projection of task vectors onto SAE decoder spans, with energy
 * accounting. */
#include "stetho/project.h"
#include "stetho/select.h"
#include "internal.h"

#include <cblas.h>
#include <jansson.h>
#include <lapacke.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

stetho_status stetho_project_basis(const stetho_sae *sae, const int *features, size_t k, double tol, double **Q_out,
                                   int *rank_out) {
    int dm = sae->d_model;
    if (k == 0) return st_err(STETHO_ERR_INVALID, "no features to project onto");
    for (size_t j = 0; j < k; j++)
        if (features[j] < 0 || features[j] >= sae->d_sae)
            return st_err(STETHO_ERR_INVALID, "%s: feature index %d is outside the SAE's %d features", sae->dir, features[j],
                          sae->d_sae);
    if (tol <= 0) tol = 1e-6;
    /* A [d_model, k] column-major: column j = W_dec[features[j]] */
    double *A = st_malloc((size_t)dm * k * sizeof *A);
    double *tau = st_malloc((k < (size_t)dm ? k : (size_t)dm) * sizeof *tau + sizeof *tau);
    lapack_int *jpvt = st_calloc(k, sizeof *jpvt);
    if (!A || !tau || !jpvt) {
        st_free(A), st_free(tau), st_free(jpvt);
        return STETHO_ERR_NOMEM;
    }
    for (size_t j = 0; j < k; j++)
        for (int i = 0; i < dm; i++) A[j * (size_t)dm + (size_t)i] = sae->W_dec[(size_t)features[j] * (size_t)dm + (size_t)i];
    lapack_int info = LAPACKE_dgeqp3(LAPACK_COL_MAJOR, dm, (lapack_int)k, A, dm, jpvt, tau);
    stetho_status st = STETHO_OK;
    if (info != 0) st = st_err(STETHO_ERR_INVALID, "QR of the decoder directions failed (LAPACK info %d)", (int)info);
    int m = (int)(k < (size_t)dm ? k : (size_t)dm), rank = 0;
    double r00 = st ? 0 : fabs(A[0]);
    for (int i = 0; i < m && !st; i++)
        if (fabs(A[(size_t)i * dm + (size_t)i]) > tol * r00) rank++;
    if (!st && rank == 0) st = st_err(STETHO_ERR_INVALID, "the chosen decoder directions are all zero");
    if (!st) {
        info = LAPACKE_dorgqr(LAPACK_COL_MAJOR, dm, rank, rank, A, dm, tau);
        if (info != 0) st = st_err(STETHO_ERR_INVALID, "forming Q failed (LAPACK info %d)", (int)info);
    }
    double *Q = st ? NULL : st_malloc((size_t)dm * (size_t)rank * sizeof *Q);
    if (!st && !Q) st = STETHO_ERR_NOMEM;
    if (!st) /* to row-major [d_model, rank] */
        for (int i = 0; i < dm; i++)
            for (int j = 0; j < rank; j++) Q[(size_t)i * rank + j] = A[(size_t)j * dm + i];
    st_free(A), st_free(tau), st_free(jpvt);
    if (st) return st;
    *Q_out = Q;
    *rank_out = rank;
    return STETHO_OK;
}

static bool reads_residual(stetho_module m) {
    return m == STETHO_MOD_ATTN_Q || m == STETHO_MOD_ATTN_K || m == STETHO_MOD_ATTN_V || m == STETHO_MOD_MLP_GATE ||
           m == STETHO_MOD_MLP_UP;
}
static bool writes_residual(stetho_module m) { return m == STETHO_MOD_ATTN_O || m == STETHO_MOD_MLP_DOWN; }

void stetho_project_report_free(stetho_project_report *r) {
    st_free(r->tensors);
    st_free(r->layers);
    memset(r, 0, sizeof *r);
}

/* Floats per streamed block (4 MB). */
#define PROJECT_BLOCK ((size_t)1 << 20)

static double sumsq(const float *x, size_t n) {
    double s = 0;
#pragma omp parallel for reduction(+ : s)
    for (size_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    return s;
}

typedef struct {
    int layer;
    int rank, d_model;
    float *Q; /* [d_model, rank] */
} layer_basis;

static bool same_file(const char *a, const char *b) {
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* Whether path is one of the task vector's own files: the projection streams
 * from the mapped input, so replacing it would also corrupt what is read. */
static stetho_status overwrites_input(const stetho_checkpoint *tv, const char *path, bool *hit) {
    *hit = !tv->dir && same_file(path, tv->path);
    for (size_t i = 0; tv->dir && i < tv->n_shards && !*hit; i++) {
        char *shard = st_path_join(tv->dir, tv->shard_names[i]);
        if (!shard) return STETHO_ERR_NOMEM;
        *hit = same_file(path, shard);
        st_free(shard);
    }
    return STETHO_OK;
}

stetho_status stetho_project_taskvec(const stetho_checkpoint *tv, const stetho_sae_entry *saes, size_t n_saes,
                                     const stetho_project_layer *sel, size_t n_sel, const stetho_project_opts *opts,
                                     const char *out_path, stetho_project_report *rep) {
    memset(rep, 0, sizeof *rep);
    stetho_project_opts o = opts ? *opts : (stetho_project_opts){false, 1e-6, false};
    stetho_status st = STETHO_OK;
    layer_basis *bases = st_calloc(n_sel ? n_sel : 1, sizeof *bases);
    rep->layers = st_calloc(n_sel ? n_sel : 1, sizeof *rep->layers);
    rep->tensors = st_calloc(tv->n_tensors ? tv->n_tensors : 1, sizeof *rep->tensors);
    float *buf = NULL, *tmp = NULL, *outb = NULL; /* buf, outb: one block each; tmp: r x (block rows | cols) */
    size_t tmp_cap = 0;
    stetho_st_writer w;
    /* the products are thin (k columns): OpenBLAS's own threads would only
     * busy-wait against the OpenMP team (profiled: half the run) */
    int blas_threads = st_blas_single_thread();
    bool have_writer = false;
    if (!bases || !rep->layers || !rep->tensors) {
        st = STETHO_ERR_NOMEM;
        goto done;
    }
    int n_model_layers = stetho_checkpoint_n_layers(tv);
    for (size_t i = 0; i < n_sel && !st; i++) {
        const stetho_project_layer *L = &sel[i];
        if (L->layer < 0 || L->layer >= n_model_layers) {
            st = st_err(STETHO_ERR_INVALID, "layer %d is not in the task vector (layers 0-%d)", L->layer, n_model_layers - 1);
            break;
        }
        for (size_t j = 0; j < i; j++)
            if (sel[j].layer == L->layer) st = st_err(STETHO_ERR_INVALID, "layer %d chosen twice", L->layer);
        const stetho_sae_entry *e = NULL;
        for (size_t j = 0; j < n_saes; j++)
            if (saes[j].layer == L->layer) e = &saes[j];
        if (!st && !e) st = st_err(STETHO_ERR_NOTFOUND, "no SAE for layer %d in the SAE directory", L->layer);
        if (st) break;
        stetho_sae sae;
        if ((st = stetho_sae_load(&sae, e->path))) break;
        double *Q;
        int rank;
        st = stetho_project_basis(&sae, L->features, L->n_features, o.rank_tol, &Q, &rank);
        int dm = sae.d_model;
        stetho_sae_free(&sae);
        if (st) break;
        bases[i] = (layer_basis){L->layer, rank, dm, st_malloc((size_t)dm * rank * sizeof(float))};
        if (!bases[i].Q) {
            st_free(Q);
            st = STETHO_ERR_NOMEM;
            break;
        }
        for (size_t q = 0; q < (size_t)dm * rank; q++) bases[i].Q[q] = (float)Q[q];
        st_free(Q);
        rep->layers[i] = (stetho_project_layer_stats){L->layer, (int)L->n_features, rank, dm, 0, 0};
        rep->n_layers++;
    }
    if (st) goto done;

    if (out_path) {
        bool hit;
        struct stat sb;
        if ((st = overwrites_input(tv, out_path, &hit))) goto done;
        if (hit) {
            st = st_err(STETHO_ERR_INVALID, "%s: the output would overwrite the task vector it is projected from", out_path);
            goto done;
        }
        if (!o.force && lstat(out_path, &sb) == 0) {
            st = st_err(STETHO_ERR_EXISTS, "%s: already exists (use --force to replace it)", out_path);
            goto done;
        }
        if ((st = stetho_st_writer_init(&w, out_path))) goto done;
        have_writer = true;
        st = stetho_st_writer_set_meta(&w, "format", "pt");
        if (!st) st = stetho_st_writer_set_meta(&w, "stetho_projection", "{\"tool\": \"stetho " STETHO_VERSION "\"}");
        for (size_t i = 0; i < tv->n_tensors && !st; i++) {
            const stetho_tensor *t = tv->tensors[i];
            if (stetho_dtype_is_float(t->dtype)) st = stetho_st_writer_declare(&w, t->name, STETHO_DTYPE_F32, t->ndim, t->shape);
        }
        if (st) goto done;
    }
    for (size_t i = 0; i < tv->n_tensors && !st; i++) {
        const stetho_tensor *t = tv->tensors[i];
        if (!stetho_dtype_is_float(t->dtype)) continue;
        stetho_tensor_role role = stetho_arch_classify(t->name);
        stetho_project_tensor_stats *ts = &rep->tensors[rep->n_tensors++];
        ts->name = t->name;
        ts->layer = role.layer;
        ts->module = role.module;
        const layer_basis *B = NULL;
        stetho_project_layer_stats *LS = NULL;
        for (size_t j = 0; j < rep->n_layers; j++)
            if (bases[j].layer == role.layer) B = &bases[j], LS = &rep->layers[j];
        bool rd = reads_residual(role.module), wr = writes_residual(role.module);
        bool project = B && !role.is_bias && t->ndim == 2 && (rd || wr);
        size_t n = (size_t)t->n_elements;
        if (project && ((rd && t->shape[1] != (uint64_t)B->d_model) || (wr && t->shape[0] != (uint64_t)B->d_model))) {
            st = st_err(STETHO_ERR_MISMATCH, "tensor '%s' has shape [%llu, %llu] but the layer %d SAE has d_model %d",
                        t->name, (unsigned long long)t->shape[0], (unsigned long long)t->shape[1], B->layer, B->d_model);
            break;
        }
        /* streamed in blocks of rows, so memory stays bounded by the block and
         * the r x cols accumulator whatever the tensor's size */
        size_t cols = t->ndim >= 2 && t->shape[0] ? n / (size_t)t->shape[0] : 1, rows = cols ? n / cols : 0;
        size_t rb = cols >= PROJECT_BLOCK ? 1 : PROJECT_BLOCK / cols;
        size_t r = project ? (size_t)B->rank : 0, esz = stetho_dtype_bits(t->dtype) / 8;
        size_t need_tmp = project ? r * (rd ? rb : cols) : 0;
        if (!buf) {
            buf = st_malloc(PROJECT_BLOCK * sizeof *buf + PROJECT_BLOCK * sizeof *buf);
            if (!buf) {
                st = STETHO_ERR_NOMEM;
                break;
            }
            outb = buf + PROJECT_BLOCK;
        }
        if (need_tmp > tmp_cap) {
            float *nt = st_realloc(tmp, need_tmp * sizeof *tmp);
            if (!nt) {
                st = STETHO_ERR_NOMEM;
                break;
            }
            tmp = nt;
            tmp_cap = need_tmp;
        }
        const uint8_t *src = t->data;
        int dm = project ? B->d_model : 0;
        /* f32 blocks are read from the mapping as they are (when aligned for floats:
         * a file's tensor offsets need not be) */
        bool direct = t->dtype == STETHO_DTYPE_F32 && (uintptr_t)t->data % sizeof(float) == 0;
        if (project && wr) { /* dW [d_model, cols]: Q (Q^T dW), Q^T dW accumulated over row blocks first */
            memset(tmp, 0, r * cols * sizeof *tmp);
            for (size_t i0 = 0; i0 < rows; i0 += rb) {
                size_t nr = rows - i0 < rb ? rows - i0 : rb;
                const float *in = direct ? (const float *)(const void *)(src + i0 * cols * esz) : buf;
                if (!direct) stetho_convert_to_f32(buf, src + i0 * cols * esz, t->dtype, nr * cols);
                ts->energy_before += sumsq(in, nr * cols);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)r, (int)cols, (int)nr, 1.0f, B->Q + i0 * r,
                            (int)r, in, (int)cols, 1.0f, tmp, (int)cols);
            }
            ts->energy_after = sumsq(tmp, r * cols); /* ||Q Q^T dW||^2 = ||Q^T dW||^2: Q is orthonormal */
        }
        for (size_t i0 = 0; i0 < rows && !st; i0 += rb) {
            size_t nr = rows - i0 < rb ? rows - i0 : rb, nb = nr * cols;
            const float *out = outb;
            if (project && wr) {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)nr, (int)cols, (int)r, 1.0f, B->Q + i0 * r,
                            (int)r, tmp, (int)cols, 0.0f, outb, (int)cols);
            } else {
                const float *in = direct ? (const float *)(const void *)(src + i0 * cols * esz) : buf;
                if (!direct) stetho_convert_to_f32(buf, src + i0 * cols * esz, t->dtype, nb);
                double e = sumsq(in, nb);
                ts->energy_before += e;
                if (project) { /* dW [rows, d_model]: (dW Q) Q^T, and ||dW Q Q^T||^2 = ||dW Q||^2 */
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)nr, (int)r, dm, 1.0f, in, (int)cols, B->Q,
                                (int)r, 0.0f, tmp, (int)r);
                    ts->energy_after += sumsq(tmp, nr * r);
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nr, dm, (int)r, 1.0f, tmp, (int)r, B->Q,
                                (int)r, 0.0f, outb, (int)cols);
                } else if (o.keep_other) {
                    out = in;
                    ts->energy_after += e;
                } else {
                    memset(outb, 0, nb * sizeof *outb);
                }
            }
            if (have_writer && nb) st = stetho_st_writer_write(&w, out, nb * sizeof *out);
        }
        rep->total_before += ts->energy_before;
        if (project) {
            ts->projected = true;
            rep->projected_before += ts->energy_before;
            rep->projected_after += ts->energy_after;
            LS->energy_before += ts->energy_before;
            LS->energy_after += ts->energy_after;
        }
        rep->total_after += ts->energy_after;
    }
    for (size_t j = 0; j < rep->n_layers; j++)
        rep->expected_random += rep->layers[j].energy_before * rep->layers[j].rank / rep->layers[j].d_model;
    if (!st && have_writer) {
        st = stetho_st_writer_finish(&w);
        have_writer = false;
    }
done:
    st_blas_restore(blas_threads);
    if (have_writer) stetho_st_writer_abort(&w);
    for (size_t i = 0; i < n_sel && bases; i++) st_free(bases[i].Q);
    st_free(bases);
    st_free(buf), st_free(tmp);
    if (st) stetho_project_report_free(rep);
    return st;
}

static json_t *num(double x) { return isfinite(x) ? json_real(x) : json_null(); }
static double ratio(double a, double b) { return b > 0 ? a / b : 0; }

stetho_status stetho_project_report_json(const stetho_project_report *r, char **out) {
    json_t *root = json_object(), *layers = json_array(), *tensors = json_array();
    json_object_set_new(root, "energy_retained_projected", num(ratio(r->projected_after, r->projected_before)));
    json_object_set_new(root, "random_subspace_expectation", num(ratio(r->expected_random, r->projected_before)));
    json_object_set_new(root, "energy_retained_total", num(ratio(r->total_after, r->total_before)));
    json_object_set_new(root, "tau_energy_total", num(r->total_before));
    for (size_t i = 0; i < r->n_layers; i++) {
        const stetho_project_layer_stats *l = &r->layers[i];
        json_t *o = json_object();
        json_object_set_new(o, "layer", json_integer(l->layer));
        json_object_set_new(o, "k", json_integer(l->k));
        json_object_set_new(o, "rank", json_integer(l->rank));
        json_object_set_new(o, "d_model", json_integer(l->d_model));
        json_object_set_new(o, "energy_retained", num(ratio(l->energy_after, l->energy_before)));
        json_object_set_new(o, "random_expectation", num((double)l->rank / l->d_model));
        json_array_append_new(layers, o);
    }
    for (size_t i = 0; i < r->n_tensors; i++) {
        const stetho_project_tensor_stats *t = &r->tensors[i];
        if (!t->projected) continue;
        json_t *o = json_object();
        json_object_set_new(o, "name", json_string(t->name));
        json_object_set_new(o, "layer", json_integer(t->layer));
        json_object_set_new(o, "module", json_string(stetho_module_name(t->module)));
        json_object_set_new(o, "energy_before", num(t->energy_before));
        json_object_set_new(o, "energy_retained", num(ratio(t->energy_after, t->energy_before)));
        json_array_append_new(tensors, o);
    }
    json_object_set_new(root, "layers", layers);
    json_object_set_new(root, "tensors", tensors);
    *out = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(root);
    return *out ? STETHO_OK : STETHO_ERR_NOMEM;
}

void stetho_project_layers_free(stetho_project_layer *l, size_t n) {
    for (size_t i = 0; i < n; i++) st_free(l[i].features);
    st_free(l);
}

/* Append indices from a JSON array (of integers or of {"index": i}) to a layer. */
static stetho_status take_features(const char *path, int layer, json_t *arr, size_t limit, stetho_project_layer *L) {
    size_t n = json_array_size(arr) < limit ? json_array_size(arr) : limit;
    L->layer = layer;
    L->features = st_calloc(n ? n : 1, sizeof *L->features);
    if (!L->features) return STETHO_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(arr, i);
        if (json_is_object(v)) v = json_object_get(v, "index");
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > (1 << 30))
            return st_err(STETHO_ERR_FORMAT, "%s: layer %d: feature %zu is not a non-negative integer index", path, layer, i);
        L->features[L->n_features++] = (int)json_integer_value(v);
    }
    return STETHO_OK;
}

stetho_status stetho_project_layers_from_scores(const char *path, int k, const stetho_checkpoint *tv,
                                                stetho_project_layer **out, size_t *n_out) {
    *out = NULL;
    *n_out = 0;
    stetho_status st;
    if (tv) { /* layer numbers and feature indices only mean something on the diagnosed model */
        stetho_scores sc;
        if ((st = stetho_scores_load(&sc, path, NULL))) return st;
        st = stetho_scores_check_model(&sc, tv);
        stetho_scores_free(&sc);
        if (st) return st;
    }
    json_t *root = st_json_load_object(path, 256u << 20, &st);
    if (!root) return st;
    json_t *layers = json_object_get(root, "layers");
    if (!json_is_array(layers)) {
        json_decref(root);
        return st_err(STETHO_ERR_FORMAT, "%s: no \"layers\" array (is this a SCORES.json from 'stetho diagnose'?)", path);
    }
    stetho_project_layer *L = st_calloc(json_array_size(layers) + 1, sizeof *L);
    size_t n = 0, i;
    json_t *row;
    st = L ? STETHO_OK : STETHO_ERR_NOMEM;
    json_array_foreach(layers, i, row) {
        if (st) break;
        json_t *layer = json_object_get(row, "layer"), *feats = json_object_get(row, "top_features");
        if (!json_is_integer(layer)) {
            st = st_err(STETHO_ERR_FORMAT, "%s: layers[%zu] has no integer \"layer\"", path, i);
            break;
        }
        if (!json_is_array(feats) || json_array_size(feats) == 0) continue; /* unscored */
        if (json_array_size(feats) < (size_t)k) {
            st = st_err(STETHO_ERR_INVALID, "%s: layer %lld lists %zu top features, fewer than the %d asked for", path,
                        (long long)json_integer_value(layer), json_array_size(feats), k);
            break;
        }
        st = take_features(path, (int)json_integer_value(layer), feats, (size_t)k, &L[n]);
        n++;
    }
    json_decref(root);
    if (!st && n == 0) st = st_err(STETHO_ERR_FORMAT, "%s: no scored layers with top_features", path);
    if (st) {
        stetho_project_layers_free(L, n);
        return st;
    }
    *out = L;
    *n_out = n;
    return STETHO_OK;
}

stetho_status stetho_project_layers_from_file(const char *path, stetho_project_layer **out, size_t *n_out) {
    *out = NULL;
    *n_out = 0;
    stetho_status st;
    json_t *root = st_json_load_object(path, 256u << 20, &st);
    if (!root) return st;
    stetho_project_layer *L = st_calloc(json_object_size(root) + 1, sizeof *L);
    size_t n = 0;
    const char *key;
    json_t *v;
    st = L ? STETHO_OK : STETHO_ERR_NOMEM;
    json_object_foreach(root, key, v) {
        if (st) break;
        char *end;
        long layer = strtol(key, &end, 10);
        if (*key == '\0' || *end || layer < 0 || layer > 100000 || !json_is_array(v) || json_array_size(v) == 0) {
            st = st_err(STETHO_ERR_FORMAT, "%s: expected {\"LAYER\": [feature indices], ...}; bad entry '%s'", path, key);
            break;
        }
        st = take_features(path, (int)layer, v, json_array_size(v), &L[n]);
        n++;
    }
    json_decref(root);
    if (!st && n == 0) st = st_err(STETHO_ERR_FORMAT, "%s: no layers", path);
    if (st) {
        stetho_project_layers_free(L, n);
        return st;
    }
    *out = L;
    *n_out = n;
    return STETHO_OK;
}
