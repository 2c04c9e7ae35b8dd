/* Diagnosis: SAE feature statistics accumulated while the model runs, the
 * per-layer specificity scores, and the driver that reads prompt sets,
 * tokenizes them and feeds every layer's SAE from one forward pass per prompt.
 * Writers of SCORES.json, the TSV and the SVG chart are in diagnose_write.c. */
#include "stetho/diagnose.h"
#include "stetho/jsonl.h"
#include "stetho/tokenizer.h"
#include "internal.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ENCODE_CHUNK 128 /* rows encoded at a time: bounds the [rows, d_sae] activation buffer */

static const char *metric_names[STETHO_METRIC_COUNT] = {"specific_mass", "specific_frac", "topk_contrast", "effect",
                                                        "probe"};
static const char *metric_desc[STETHO_METRIC_COUNT] = {
    "share of the layer's domain activation mass carried by domain-specific features (smoothed frequency ratio > R)",
    "share of the layer's live features that are domain-specific (smoothed frequency ratio > R)",
    "mean over the K features with the most domain mass of (normalised domain mass - normalised general mass)",
    "mean Cohen's d (token level, domain vs general) of the K features with the largest d",
    "balanced cross-validated accuracy of a K-sparse logistic probe on mean-pooled prompt activations",
};

const char *stetho_metric_name(stetho_metric m) { return (unsigned)m < STETHO_METRIC_COUNT ? metric_names[m] : "?"; }
const char *stetho_metric_description(stetho_metric m) {
    return (unsigned)m < STETHO_METRIC_COUNT ? metric_desc[m] : "?";
}

bool stetho_metric_from_name(const char *name, stetho_metric *out) {
    for (int m = 0; m < STETHO_METRIC_COUNT; m++)
        if (name && !strcmp(name, metric_names[m])) {
            *out = (stetho_metric)m;
            return true;
        }
    return false;
}

void stetho_diagnose_opts_default(stetho_diagnose_opts *o) {
    memset(o, 0, sizeof *o);
    o->metric = STETHO_METRIC_DEFAULT;
    o->ratio = 4.0;
    o->smoothing = 0.5;
    o->k = 0; /* STETHO_DIAG_DEFAULT_K, fewer on a narrower SAE */
    o->probe_folds = 5;
    o->probe_l2 = 1.0;
    o->top_features = 0; /* STETHO_DIAG_DEFAULT_TOP_FEATURES, likewise */
}

/* K and the top-feature count on an SAE of d_sae features: a value asked for is
 * used as it is (check_width refuses it when too large), the default is capped
 * so that narrow SAEs still work without options. */
static int eff_k(const stetho_diagnose_opts *o, int d_sae) {
    int k = o->k > 0 ? o->k : STETHO_DIAG_DEFAULT_K;
    return k < d_sae ? k : d_sae;
}
static int eff_top(const stetho_diagnose_opts *o, int d_sae) {
    int n = o->top_features > 0 ? o->top_features : STETHO_DIAG_DEFAULT_TOP_FEATURES;
    return n < d_sae ? n : d_sae;
}

/* A K or top-feature count asked for beyond the SAE's width would silently
 * mean fewer features than the user believes they scored. */
static stetho_status check_width(const stetho_diagnose_opts *o, int layer, int d_sae, const char *sae) {
    if (o->k > d_sae)
        return st_err(STETHO_ERR_INVALID, "%s%sK = %d is larger than the %d features (d_sae) of the layer %d SAE", sae ? sae : "",
                      sae ? ": " : "", o->k, d_sae, layer);
    if (o->top_features > d_sae)
        return st_err(STETHO_ERR_INVALID, "%s%stop_features = %d is larger than the %d features (d_sae) of the layer %d SAE",
                      sae ? sae : "", sae ? ": " : "", o->top_features, d_sae, layer);
    return STETHO_OK;
}

static stetho_status check_opts(const stetho_diagnose_opts *o) {
    if ((unsigned)o->metric >= STETHO_METRIC_COUNT) return st_err(STETHO_ERR_INVALID, "unknown specificity metric");
    if (!(o->ratio > 0) || !isfinite(o->ratio)) return st_err(STETHO_ERR_INVALID, "the frequency-ratio threshold must be > 0");
    if (!(o->smoothing > 0) || !isfinite(o->smoothing))
        return st_err(STETHO_ERR_INVALID, "the log-ratio pseudo-count must be > 0 (0 makes features absent from a set infinite)");
    if (o->k < 0) return st_err(STETHO_ERR_INVALID, "K must be at least 1 (0: the default)");
    if (o->probe_folds < 2) return st_err(STETHO_ERR_INVALID, "the probe needs at least 2 folds");
    if (!(o->probe_l2 > 0) || !isfinite(o->probe_l2)) return st_err(STETHO_ERR_INVALID, "the probe's L2 penalty must be > 0");
    if (o->top_features < 0)
        return st_err(STETHO_ERR_INVALID, "at least one top feature per layer must be listed (0: the default)");
    if (o->max_tokens < 0) return st_err(STETHO_ERR_INVALID, "max_tokens must be >= 0");
    return STETHO_OK;
}

/* ------------------------------------------------------------ accumulators */

stetho_status stetho_diag_acc_init(stetho_diag_acc *a, int layer, int d_sae) {
    memset(a, 0, sizeof *a);
    a->layer = layer;
    a->d_sae = d_sae;
    if (d_sae < 1) return st_err(STETHO_ERR_INVALID, "layer %d: an SAE needs at least one feature", layer);
    size_t n = (size_t)d_sae;
    for (int s = 0; s < 2; s++) {
        a->n_active[s] = st_calloc(n, sizeof *a->n_active[s]);
        a->sum[s] = st_calloc(n, sizeof *a->sum[s]);
        a->sum_sq[s] = st_calloc(n, sizeof *a->sum_sq[s]);
    }
    a->pool = st_calloc(n, sizeof *a->pool);
    if (!a->n_active[0] || !a->n_active[1] || !a->sum[0] || !a->sum[1] || !a->sum_sq[0] || !a->sum_sq[1] || !a->pool) {
        stetho_diag_acc_free(a);
        return STETHO_ERR_NOMEM;
    }
    return STETHO_OK;
}

void stetho_diag_acc_free(stetho_diag_acc *a) {
    for (int s = 0; s < 2; s++) {
        st_free(a->n_active[s]);
        st_free(a->sum[s]);
        st_free(a->sum_sq[s]);
    }
    st_free(a->pool);
    st_free(a->prompts);
    st_free(a->idx);
    st_free(a->val);
    memset(a, 0, sizeof *a);
}

#define ACC_TILE 64 /* features per accumulation tile: its sums stay in L1 and the row loop vectorises */

/* Token statistics and the running prompt sums of n rows acts [n, d_sae].
 * Threads own disjoint feature tiles (no reduction) and walk the rows in
 * order, so every sum is the same whatever the thread count; an inactive
 * entry adds exactly zero. */
static void acc_add_rows(stetho_diag_acc *a, int set, const float *acts, size_t n) {
    int ds = a->d_sae, n_tiles = (ds + ACC_TILE - 1) / ACC_TILE;
#pragma omp parallel for schedule(static)
    for (int t = 0; t < n_tiles; t++) {
        int j0 = t * ACC_TILE, w = ds - j0 < ACC_TILE ? ds - j0 : ACC_TILE;
        uint64_t c[ACC_TILE] = {0};
        double x[ACC_TILE] = {0}, xx[ACC_TILE] = {0};
        for (size_t r = 0; r < n; r++) {
            const float *row = acts + r * (size_t)ds + (size_t)j0;
            for (int j = 0; j < w; j++) {
                double v = row[j] > 0 ? row[j] : 0;
                c[j] += row[j] > 0;
                x[j] += v;
                xx[j] += v * v;
            }
        }
        for (int j = 0; j < w; j++) {
            a->n_active[set][j0 + j] += c[j];
            a->sum[set][j0 + j] += x[j];
            a->sum_sq[set][j0 + j] += xx[j];
            a->pool[j0 + j] += x[j];
        }
    }
    a->n_tokens[set] += n;
}

/* Close the current prompt: its mean-pooled activations become a sparse sample. */
static stetho_status acc_end_prompt(stetho_diag_acc *a, int set, size_t n_tokens) {
    int ds = a->d_sae;
    stetho_status st = STETHO_OK;
    size_t nnz = 0;
    for (int j = 0; j < ds; j++) nnz += a->pool[j] > 0;
    if (a->n_prompts == a->cap_prompts) {
        size_t cap = a->cap_prompts ? a->cap_prompts * 2 : 64;
        stetho_diag_prompt *p = st_realloc(a->prompts, cap * sizeof *p);
        if (!p) st = STETHO_ERR_NOMEM;
        else a->prompts = p, a->cap_prompts = cap;
    }
    if (!st && a->nnz + nnz > a->cap_nnz) {
        size_t cap = a->cap_nnz ? a->cap_nnz : 1024, bytes;
        while (cap < a->nnz + nnz) cap *= 2;
        if (!st_mul_size(cap, sizeof *a->val, &bytes)) st = st_err(STETHO_ERR_NOMEM, "probe samples too large");
        uint32_t *ni = st ? NULL : st_realloc(a->idx, cap * sizeof *ni);
        if (ni) a->idx = ni;
        float *nv = ni ? st_realloc(a->val, cap * sizeof *nv) : NULL;
        if (nv) a->val = nv;
        if (!st && (!ni || !nv)) st = STETHO_ERR_NOMEM;
        if (!st) a->cap_nnz = cap;
    }
    if (!st) {
        stetho_diag_prompt *p = &a->prompts[a->n_prompts++];
        p->set = (uint32_t)set;
        p->nnz = (uint32_t)nnz;
        p->offset = a->nnz;
        for (int j = 0; j < ds; j++)
            if (a->pool[j] > 0) {
                a->idx[a->nnz] = (uint32_t)j;
                a->val[a->nnz] = (float)(a->pool[j] / (double)n_tokens);
                a->nnz++;
            }
    }
    memset(a->pool, 0, (size_t)ds * sizeof *a->pool);
    return st;
}

stetho_status stetho_diag_acc_add(stetho_diag_acc *a, int set, const float *acts, size_t n) {
    if (set != STETHO_SET_DOMAIN && set != STETHO_SET_GENERAL) return st_err(STETHO_ERR_INVALID, "bad prompt set %d", set);
    if (n == 0) return STETHO_OK;
    acc_add_rows(a, set, acts, n);
    return acc_end_prompt(a, set, n);
}

/* ------------------------------------------------------------ scores */

typedef struct {
    int j;
    double v;
} fv;

/* value descending, then index ascending: every ranking is deterministic */
static int cmp_fv_desc(const void *a, const void *b) {
    const fv *x = a, *y = b;
    if (x->v != y->v) return x->v > y->v ? -1 : 1;
    return x->j - y->j;
}

/* Solve the SPD system H x = g (n x n, row-major; overwritten) by Cholesky. */
static bool chol_solve(double *H, double *g, int n) {
    for (int i = 0; i < n; i++) {
        for (int k = 0; k < i; k++) H[i * n + i] -= H[i * n + k] * H[i * n + k];
        if (!(H[i * n + i] > 0)) return false;
        H[i * n + i] = sqrt(H[i * n + i]);
        for (int r = i + 1; r < n; r++) {
            for (int k = 0; k < i; k++) H[r * n + i] -= H[r * n + k] * H[i * n + k];
            H[r * n + i] /= H[i * n + i];
        }
    }
    for (int i = 0; i < n; i++) {
        for (int k = 0; k < i; k++) g[i] -= H[i * n + k] * g[k];
        g[i] /= H[i * n + i];
    }
    for (int i = n - 1; i >= 0; i--) {
        for (int k = i + 1; k < n; k++) g[i] -= H[k * n + i] * g[k];
        g[i] /= H[i * n + i];
    }
    return true;
}

static double log1pexp(double z) { return z > 0 ? z + log1p(exp(-z)) : log1p(exp(z)); }

/* Weighted L2-penalised logistic regression by Newton's method with
 * backtracking. X [n, p] (no intercept column), y in {0,1}, w weights;
 * theta [p + 1] (theta[0] the unpenalised intercept). */
static stetho_status fit_logistic(const double *X, const int *y, const double *w, int n, int p, double l2, double *theta) {
    int q = p + 1;
    double *H = st_malloc((size_t)q * q * sizeof *H), *g = st_malloc((size_t)q * sizeof *g);
    double *t2 = st_malloc((size_t)q * sizeof *t2);
    if (!H || !g || !t2) {
        st_free(H), st_free(g), st_free(t2);
        return STETHO_ERR_NOMEM;
    }
    memset(theta, 0, (size_t)q * sizeof *theta);
    /* plain loops: p is K, small */
    for (int it = 0; it < 100; it++) {
        memset(H, 0, (size_t)q * q * sizeof *H);
        memset(g, 0, (size_t)q * sizeof *g);
        double loss = 0;
        for (int i = 0; i < n; i++) {
            const double *x = X + (size_t)i * p;
            double z = theta[0];
            for (int c = 0; c < p; c++) z += theta[c + 1] * x[c];
            double pr = 1 / (1 + exp(-z)), r = w[i] * (pr - y[i]), h = w[i] * pr * (1 - pr);
            loss += w[i] * (log1pexp(z) - y[i] * z);
            g[0] += r;
            H[0] += h;
            for (int a = 0; a < p; a++) {
                g[a + 1] += r * x[a];
                H[a + 1] += h * x[a];
                for (int b = 0; b <= a; b++) H[(a + 1) * q + b + 1] += h * x[a] * x[b];
            }
        }
        for (int a = 0; a < p; a++) {
            loss += 0.5 * l2 * theta[a + 1] * theta[a + 1];
            g[a + 1] += l2 * theta[a + 1];
            H[(a + 1) * q + a + 1] += l2;
        }
        H[0] += 1e-9; /* keeps the intercept's pivot positive when one class has all the weight */
        for (int a = 1; a < q; a++) {
            H[a * q] = H[a];
            for (int b = 0; b < a; b++) H[b * q + a] = H[a * q + b];
        }
        if (!chol_solve(H, g, q)) break;
        /* backtracking on the step g: the Newton direction is a descent direction */
        double step = 1, best = loss;
        for (int bt = 0; bt < 30; bt++) {
            for (int a = 0; a < q; a++) t2[a] = theta[a] - step * g[a];
            double l = 0;
            for (int i = 0; i < n; i++) {
                const double *x = X + (size_t)i * p;
                double z = t2[0];
                for (int c = 0; c < p; c++) z += t2[c + 1] * x[c];
                l += w[i] * (log1pexp(z) - y[i] * z);
            }
            for (int a = 0; a < p; a++) l += 0.5 * l2 * t2[a + 1] * t2[a + 1];
            if (l <= best) {
                best = l;
                break;
            }
            step *= 0.5;
        }
        double mx = 0;
        for (int a = 0; a < q; a++) {
            double d = step * g[a];
            theta[a] -= d;
            if (fabs(d) > mx) mx = fabs(d);
        }
        if (mx < 1e-10 || best >= loss) break;
    }
    st_free(H), st_free(g), st_free(t2);
    return STETHO_OK;
}

/* The K-sparse probe's balanced accuracy (NaN when a set has < 2 prompts).
 * Folds: prompt i of a set goes to fold i mod F. Inside each fold the K
 * features with the largest |mean_domain - mean_general| over the training
 * prompts are standardised (training mean and SD) and a class-balanced
 * logistic regression is fitted; held-out prompts are classified at p = 0.5. */
static stetho_status probe_score(const stetho_diag_acc *a, const stetho_diagnose_opts *o, double *out) {
    *out = NAN;
    size_t np = a->n_prompts, ncls[2] = {0, 0};
    for (size_t i = 0; i < np; i++) ncls[a->prompts[i].set]++;
    size_t F = (size_t)o->probe_folds;
    if (ncls[0] < F) F = ncls[0];
    if (ncls[1] < F) F = ncls[1];
    if (F < 2) return STETHO_OK;
    int ds = a->d_sae, K = eff_k(o, ds);
    stetho_status st = STETHO_OK;
    int *fold = st_malloc(np * sizeof *fold), *y = st_malloc(np * sizeof *y), *col = st_malloc((size_t)ds * sizeof *col);
    double *m[2] = {st_malloc((size_t)ds * sizeof(double)), st_malloc((size_t)ds * sizeof(double))};
    double *X = st_calloc(np * (size_t)K, sizeof *X), *w = st_malloc(np * sizeof *w);
    double *mu = st_malloc((size_t)K * sizeof *mu), *sd = st_malloc((size_t)K * sizeof *sd);
    double *theta = st_malloc((size_t)(K + 1) * sizeof *theta), *Xt = st_malloc(np * (size_t)K * sizeof *Xt);
    int *yt = st_malloc(np * sizeof *yt);
    fv *best = st_malloc((size_t)ds * sizeof *best);
    if (!fold || !y || !col || !m[0] || !m[1] || !X || !w || !mu || !sd || !theta || !Xt || !yt || !best) {
        st = STETHO_ERR_NOMEM;
        goto done;
    }
    size_t seen[2] = {0, 0};
    for (size_t i = 0; i < np; i++) {
        int s = (int)a->prompts[i].set;
        fold[i] = (int)(seen[s]++ % F);
        y[i] = s == STETHO_SET_DOMAIN;
    }
    size_t correct[2] = {0, 0};
    for (int f = 0; f < (int)F && !st; f++) {
        size_t ntr[2] = {0, 0};
        memset(m[0], 0, (size_t)ds * sizeof(double));
        memset(m[1], 0, (size_t)ds * sizeof(double));
        for (size_t i = 0; i < np; i++) {
            if (fold[i] == f) continue;
            const stetho_diag_prompt *p = &a->prompts[i];
            ntr[p->set]++;
            for (uint32_t e = 0; e < p->nnz; e++) m[p->set][a->idx[p->offset + e]] += a->val[p->offset + e];
        }
        for (int j = 0; j < ds; j++) {
            best[j].j = j;
            best[j].v = fabs(m[0][j] / (double)ntr[0] - m[1][j] / (double)ntr[1]);
        }
        qsort(best, (size_t)ds, sizeof *best, cmp_fv_desc);
        for (int j = 0; j < ds; j++) col[j] = -1;
        for (int c = 0; c < K; c++) col[best[c].j] = c;
        memset(X, 0, np * (size_t)K * sizeof *X);
        for (size_t i = 0; i < np; i++) {
            const stetho_diag_prompt *p = &a->prompts[i];
            for (uint32_t e = 0; e < p->nnz; e++) {
                int c = col[a->idx[p->offset + e]];
                if (c >= 0) X[i * (size_t)K + (size_t)c] = a->val[p->offset + e];
            }
        }
        size_t nt = 0;
        for (int c = 0; c < K; c++) {
            double s = 0, ss = 0;
            for (size_t i = 0; i < np; i++)
                if (fold[i] != f) s += X[i * (size_t)K + (size_t)c];
            double n_train = (double)(ntr[0] + ntr[1]);
            mu[c] = s / n_train;
            for (size_t i = 0; i < np; i++)
                if (fold[i] != f) {
                    double d = X[i * (size_t)K + (size_t)c] - mu[c];
                    ss += d * d;
                }
            sd[c] = ss > 0 ? sqrt(ss / n_train) : 1;
        }
        for (size_t i = 0; i < np; i++) {
            if (fold[i] == f) continue;
            for (int c = 0; c < K; c++) Xt[nt * (size_t)K + (size_t)c] = (X[i * (size_t)K + (size_t)c] - mu[c]) / sd[c];
            yt[nt] = y[i];
            /* class-balanced: each class carries half the total weight */
            w[nt] = (double)(ntr[0] + ntr[1]) / (2.0 * (double)ntr[a->prompts[i].set]);
            nt++;
        }
        if ((st = fit_logistic(Xt, yt, w, (int)nt, K, o->probe_l2, theta))) break;
        for (size_t i = 0; i < np; i++) {
            if (fold[i] != f) continue;
            double z = theta[0];
            for (int c = 0; c < K; c++) z += theta[c + 1] * (X[i * (size_t)K + (size_t)c] - mu[c]) / sd[c];
            int pred = z >= 0;
            if (pred == y[i]) correct[a->prompts[i].set]++;
        }
    }
    if (!st) *out = 0.5 * ((double)correct[0] / (double)ncls[0] + (double)correct[1] / (double)ncls[1]);
done:
    st_free(fold), st_free(y), st_free(col), st_free(m[0]), st_free(m[1]), st_free(X), st_free(w);
    st_free(mu), st_free(sd), st_free(theta), st_free(Xt), st_free(yt), st_free(best);
    return st;
}

void stetho_diag_layer_free(stetho_diag_layer *l) {
    st_free(l->sae_path);
    st_free(l->top);
    st_free(l->features);
    memset(l, 0, sizeof *l);
}

stetho_status stetho_diag_layer_compute(const stetho_diag_acc *acc, const stetho_diagnose_opts *o, stetho_diag_layer *out) {
    memset(out, 0, sizeof *out);
    stetho_status st = check_opts(o);
    if (!st) st = check_width(o, acc->layer, acc->d_sae, NULL);
    if (st) return st;
    int ds = acc->d_sae, K = eff_k(o, ds);
    out->layer = acc->layer;
    out->scored = true;
    out->d_sae = ds;
    for (int s = 0; s < 2; s++) out->n_tokens[s] = acc->n_tokens[s];
    for (size_t i = 0; i < acc->n_prompts; i++) out->n_prompts[acc->prompts[i].set]++;
    for (int m = 0; m < STETHO_METRIC_COUNT; m++) out->scores[m] = NAN;
    out->features = st_calloc((size_t)ds, sizeof *out->features);
    fv *rank = st_malloc((size_t)ds * sizeof *rank);
    if (!out->features || !rank) {
        st_free(rank);
        stetho_diag_layer_free(out);
        return STETHO_ERR_NOMEM;
    }
    double N[2] = {(double)acc->n_tokens[0], (double)acc->n_tokens[1]}, mass[2] = {0, 0};
    for (int s = 0; s < 2; s++)
        for (int j = 0; j < ds; j++) mass[s] += acc->sum[s][j];
    double a = o->smoothing, thr = log(o->ratio), spec_mass = 0, dof = N[0] + N[1] - 2;
    for (int j = 0; j < ds; j++) {
        stetho_diag_feature *f = &out->features[j];
        double var[2];
        for (int s = 0; s < 2; s++) {
            f->freq[s] = N[s] > 0 ? (double)acc->n_active[s][j] / N[s] : 0;
            f->mean[s] = N[s] > 0 ? acc->sum[s][j] / N[s] : 0;
            /* sum of squared deviations, clamped against rounding below zero */
            double ssd = N[s] > 0 ? acc->sum_sq[s][j] - acc->sum[s][j] * acc->sum[s][j] / N[s] : 0;
            var[s] = ssd > 0 ? ssd : 0;
        }
        f->log_ratio = log(((double)acc->n_active[0][j] + a) / (N[0] + 2 * a)) -
                       log(((double)acc->n_active[1][j] + a) / (N[1] + 2 * a));
        f->contrast = (mass[0] > 0 ? acc->sum[0][j] / mass[0] : 0) - (mass[1] > 0 ? acc->sum[1][j] / mass[1] : 0);
        double pooled = dof > 0 ? sqrt((var[0] + var[1]) / dof) : 0;
        f->effect = pooled > 0 ? (f->mean[0] - f->mean[1]) / pooled : 0;
        bool live = acc->n_active[0][j] + acc->n_active[1][j] > 0;
        out->n_live += live;
        if (live && f->log_ratio > thr) {
            out->n_specific++;
            spec_mass += acc->sum[0][j];
        }
    }
    if (mass[0] > 0) out->scores[STETHO_METRIC_SPECIFIC_MASS] = spec_mass / mass[0];
    if (out->n_live > 0) out->scores[STETHO_METRIC_SPECIFIC_FRAC] = (double)out->n_specific / out->n_live;
    if (mass[0] > 0) {
        int n = 0;
        for (int j = 0; j < ds; j++)
            if (acc->sum[0][j] > 0) rank[n++] = (fv){j, acc->sum[0][j]};
        qsort(rank, (size_t)n, sizeof *rank, cmp_fv_desc);
        int k = K < n ? K : n;
        double s = 0;
        for (int i = 0; i < k; i++) s += out->features[rank[i].j].contrast;
        out->scores[STETHO_METRIC_TOPK_CONTRAST] = s / k;
    }
    if (dof > 0 && N[0] > 0 && N[1] > 0) {
        /* only features more active on the domain: with K near d_sae the mean
         * would otherwise fold in general-text features with d < 0 */
        int n = 0;
        for (int j = 0; j < ds; j++)
            if (out->features[j].effect > 0) rank[n++] = (fv){j, out->features[j].effect};
        qsort(rank, (size_t)n, sizeof *rank, cmp_fv_desc);
        int k = K < n ? K : n;
        double s = 0;
        for (int i = 0; i < k; i++) s += rank[i].v;
        out->scores[STETHO_METRIC_EFFECT] = k ? s / k : 0;
    }
    st = probe_score(acc, o, &out->scores[STETHO_METRIC_PROBE]);
    if (!st) {
        for (int j = 0; j < ds; j++) rank[j] = (fv){j, out->features[j].contrast};
        qsort(rank, (size_t)ds, sizeof *rank, cmp_fv_desc);
        out->n_top = eff_top(o, ds);
        out->top = st_malloc((size_t)out->n_top * sizeof *out->top);
        if (!out->top) st = STETHO_ERR_NOMEM;
        for (int i = 0; !st && i < out->n_top; i++) out->top[i] = rank[i].j;
    }
    out->score = out->scores[o->metric];
    st_free(rank);
    if (st) stetho_diag_layer_free(out);
    return st;
}

void stetho_diagnose_result_free(stetho_diagnose_result *r) {
    for (int l = 0; r->layers && l < r->n_layers; l++) stetho_diag_layer_free(&r->layers[l]);
    st_free(r->layers);
    st_free(r->model_path);
    st_free(r->sae_dir);
    st_free(r->domain_path);
    st_free(r->general_path);
    st_free(r->field);
    memset(r, 0, sizeof *r);
}

/* ------------------------------------------------------------ the diagnoser */

typedef struct {
    stetho_diagnoser *d;
    size_t i;
} hook_ctx;

struct stetho_diagnoser {
    stetho_model *m;
    stetho_diagnose_opts o;
    size_t n;
    stetho_sae *saes;          /* [n] */
    stetho_diag_acc *accs;     /* [n] */
    char (*hook)[64];          /* [n] hook names */
    hook_ctx *ctx;             /* [n] */
    stetho_hooks hooks;
    float *acts;               /* [ENCODE_CHUNK, max d_sae] encoder output */
    int set, skip;             /* of the prompt being run */
    size_t n_prompts[2];
    uint64_t n_tokens[2];
};

void stetho_diagnoser_free(stetho_diagnoser *d) {
    if (!d) return;
    for (size_t i = 0; i < d->n; i++) {
        if (d->saes) stetho_sae_free(&d->saes[i]);
        if (d->accs) stetho_diag_acc_free(&d->accs[i]);
    }
    st_free(d->saes);
    st_free(d->accs);
    st_free(d->hook);
    st_free(d->ctx);
    st_free(d->acts);
    stetho_hooks_free(&d->hooks);
    st_free(d);
}

static stetho_status on_hook(void *user, int layer, stetho_hook_kind kind, const float *data, int T, int D) {
    (void)layer, (void)kind;
    hook_ctx *c = user;
    stetho_diagnoser *d = c->d;
    const stetho_sae *sae = &d->saes[c->i];
    stetho_diag_acc *acc = &d->accs[c->i];
    if (T <= d->skip) return STETHO_OK;
    for (int r0 = d->skip; r0 < T; r0 += ENCODE_CHUNK) {
        int rows = T - r0 < ENCODE_CHUNK ? T - r0 : ENCODE_CHUNK;
        stetho_status st = stetho_sae_encode(sae, data + (size_t)r0 * (size_t)D, (size_t)rows, d->acts);
        if (st) return st_err_context(st, "%s", sae->dir);
        acc_add_rows(acc, d->set, d->acts, (size_t)rows);
    }
    return acc_end_prompt(acc, d->set, (size_t)(T - d->skip));
}

stetho_status stetho_diagnoser_init(stetho_diagnoser **out, stetho_model *m, const stetho_sae_entry *saes, size_t n,
                                    const stetho_diagnose_opts *o) {
    *out = NULL;
    stetho_diagnose_opts def;
    stetho_diagnose_opts_default(&def);
    if (!o) o = &def;
    stetho_status st = check_opts(o);
    if (st) return st;
    if (n == 0) return st_err(STETHO_ERR_INVALID, "no SAEs to diagnose with");
    stetho_diagnoser *d = st_calloc(1, sizeof *d);
    if (!d) return STETHO_ERR_NOMEM;
    d->m = m;
    d->o = *o;
    d->n = n; /* arrays are zeroed, so freeing all n after a partial load is safe */
    stetho_hooks_init(&d->hooks);
    d->saes = st_calloc(n, sizeof *d->saes);
    d->accs = st_calloc(n, sizeof *d->accs);
    d->hook = st_calloc(n, sizeof *d->hook);
    d->ctx = st_calloc(n, sizeof *d->ctx);
    if (!d->saes || !d->accs || !d->hook || !d->ctx) {
        d->n = 0;
        stetho_diagnoser_free(d);
        return STETHO_ERR_NOMEM;
    }
    const stetho_model_config *c = &m->cfg;
    int max_ds = 0;
    for (size_t i = 0; i < n && !st; i++) {
        const stetho_sae_entry *e = &saes[i];
        if (e->layer < 0 || e->layer >= c->n_layers) {
            st = st_err(STETHO_ERR_MISMATCH, "%s: SAE for layer %d, but the model has layers 0-%d", e->path, e->layer,
                        c->n_layers - 1);
            break;
        }
        if ((st = stetho_sae_load(&d->saes[i], e->path))) break;
        stetho_sae *s = &d->saes[i];
        st_free(s->W_dec); /* encoding never reads the decoder: halve the memory of wide SAEs */
        s->W_dec = NULL;
        if (s->d_model != c->hidden) {
            st = st_err(STETHO_ERR_MISMATCH, "%s: SAE d_model is %d but the model's hidden size is %d (an SAE for another model?)",
                        e->path, s->d_model, c->hidden);
            break;
        }
        stetho_hook_kind kind = STETHO_HOOK_RESID_POST;
        if (s->hook[0]) {
            int hl;
            if (stetho_hook_parse(s->hook, &hl, &kind) != STETHO_OK) {
                st = st_err(STETHO_ERR_UNSUPPORTED,
                            "%s: the SAE reads hook '%s'; diagnose can feed hook_resid_pre, hook_attn_out, hook_mlp_out and hook_resid_post",
                            e->path, s->hook);
                break;
            }
        }
        snprintf(d->hook[i], sizeof d->hook[i], "blocks.%d.%s", e->layer, stetho_hook_kind_name(kind));
        if ((st = check_width(o, e->layer, s->d_sae, e->path))) break; /* before the run, not after it */
        if ((st = stetho_diag_acc_init(&d->accs[i], e->layer, s->d_sae))) break;
        d->ctx[i] = (hook_ctx){d, i};
        if ((st = stetho_hooks_add_at(&d->hooks, e->layer, kind, on_hook, &d->ctx[i]))) break;
        if (s->d_sae > max_ds) max_ds = s->d_sae;
    }
    size_t bytes;
    if (!st && !st_mul_size((size_t)ENCODE_CHUNK * sizeof(float), (size_t)max_ds, &bytes))
        st = st_err(STETHO_ERR_NOMEM, "SAE too wide");
    if (!st && !(d->acts = st_malloc(bytes))) st = STETHO_ERR_NOMEM;
    if (st) {
        stetho_diagnoser_free(d);
        return st;
    }
    *out = d;
    return STETHO_OK;
}

stetho_status stetho_diagnoser_add(stetho_diagnoser *d, int set, const int32_t *tokens, int n, int skip) {
    if (set != STETHO_SET_DOMAIN && set != STETHO_SET_GENERAL) return st_err(STETHO_ERR_INVALID, "bad prompt set %d", set);
    if (skip < 0) skip = 0;
    if (n <= skip) return STETHO_OK; /* nothing to count */
    d->set = set;
    d->skip = skip;
    stetho_status st = stetho_model_forward(d->m, tokens, n, NULL, &d->hooks);
    if (st) return st;
    d->n_prompts[set]++;
    d->n_tokens[set] += (uint64_t)(n - skip);
    return STETHO_OK;
}

stetho_status stetho_diagnoser_finish(stetho_diagnoser *d, stetho_diagnose_result *r) {
    memset(r, 0, sizeof *r);
    const stetho_model_config *c = &d->m->cfg;
    r->opts = d->o;
    r->opts.field = NULL;
    r->opts.progress = NULL;
    r->opts.progress_user = NULL;
    /* SCORES.json records the values in force: the defaults by number (capped
     * per layer at its d_sae, which each layer's entry lists) */
    if (r->opts.k == 0) r->opts.k = STETHO_DIAG_DEFAULT_K;
    if (r->opts.top_features == 0) r->opts.top_features = STETHO_DIAG_DEFAULT_TOP_FEATURES;
    r->n_layers = c->n_layers;
    r->d_model = c->hidden;
    if (d->m->ckpt.has_config) snprintf(r->model_type, sizeof r->model_type, "%s", d->m->ckpt.config.model_type);
    for (int s = 0; s < 2; s++) {
        r->n_prompts[s] = d->n_prompts[s];
        r->n_tokens[s] = d->n_tokens[s];
    }
    r->layers = st_calloc((size_t)c->n_layers, sizeof *r->layers);
    if (!r->layers) return STETHO_ERR_NOMEM;
    for (int l = 0; l < c->n_layers; l++) {
        r->layers[l].layer = l;
        for (int m = 0; m < STETHO_METRIC_COUNT; m++) r->layers[l].scores[m] = NAN;
        r->layers[l].score = NAN;
    }
    stetho_status st = STETHO_OK;
    for (size_t i = 0; i < d->n && !st; i++) {
        stetho_diag_layer *L = &r->layers[d->accs[i].layer];
        if ((st = stetho_diag_layer_compute(&d->accs[i], &d->o, L))) break;
        snprintf(L->hook, sizeof L->hook, "%s", d->hook[i]);
        if (!(L->sae_path = st_strdup(d->saes[i].dir))) st = STETHO_ERR_NOMEM;
        r->n_scored++;
    }
    if (st) stetho_diagnose_result_free(r);
    return st;
}

/* ------------------------------------------------------------ the whole run */

typedef struct {
    char **text;
    size_t *len;
    size_t n, cap;
} prompt_list;

static void prompts_free(prompt_list *p) {
    for (size_t i = 0; i < p->n; i++) st_free(p->text[i]);
    st_free(p->text);
    st_free(p->len);
    memset(p, 0, sizeof *p);
}

/* Read up to limit prompts (0 = all) from a JSONL file. */
static stetho_status read_prompts(const char *path, const char *field, size_t limit, prompt_list *out) {
    memset(out, 0, sizeof *out);
    stetho_jsonl_reader r;
    stetho_status st = stetho_jsonl_open(&r, path);
    if (st) return st;
    bool got;
    while (!st && (!limit || out->n < limit)) {
        if ((st = stetho_jsonl_next(&r, &got)) || !got) break;
        json_t *v = NULL;
        if (field) v = json_object_get(r.obj, field);
        else if (!(v = json_object_get(r.obj, "text"))) v = json_object_get(r.obj, "problem");
        if (!json_is_string(v)) {
            st = field ? st_err(STETHO_ERR_FORMAT, "%s:%zu: no string field '%s'", path, r.line_no, field)
                       : st_err(STETHO_ERR_FORMAT, "%s:%zu: no string field 'text' or 'problem' (name the field with --field)",
                                path, r.line_no);
            break;
        }
        if (out->n == out->cap) {
            size_t cap = out->cap ? out->cap * 2 : 256;
            char **t = st_realloc(out->text, cap * sizeof *t);
            if (t) out->text = t;
            size_t *l = t ? st_realloc(out->len, cap * sizeof *l) : NULL;
            if (l) out->len = l;
            if (!t || !l) {
                st = STETHO_ERR_NOMEM;
                break;
            }
            out->cap = cap;
        }
        size_t len = json_string_length(v);
        char *s = st_malloc(len + 1);
        if (!s) {
            st = STETHO_ERR_NOMEM;
            break;
        }
        memcpy(s, json_string_value(v), len);
        s[len] = '\0';
        out->text[out->n] = s;
        out->len[out->n++] = len;
    }
    stetho_jsonl_close(&r);
    if (!st && out->n == 0) st = st_err(STETHO_ERR_INVALID, "%s: no prompts (an empty prompt set cannot be diagnosed)", path);
    if (st) prompts_free(out);
    return st;
}

stetho_status stetho_diagnose_run(const char *model_path, const char *sae_dir, const char *domain_path,
                                  const char *general_path, const stetho_diagnose_opts *opts, stetho_diagnose_result *r) {
    memset(r, 0, sizeof *r);
    stetho_diagnose_opts o;
    if (opts) o = *opts;
    else stetho_diagnose_opts_default(&o);
    stetho_status st = check_opts(&o);
    if (st) return st;
    prompt_list sets[2] = {{0}, {0}};
    stetho_tokenizer tok;
    bool have_tok = false, have_model = false;
    stetho_model m;
    stetho_sae_entry *saes = NULL;
    size_t n_saes = 0;
    stetho_diagnoser *d = NULL;
    const char *paths[2] = {domain_path, general_path};
    size_t n_empty[2] = {0, 0}, n_trunc[2] = {0, 0};
    bool bos_seen = false;
    int32_t *ids = NULL;

    /* cheap checks first: a bad prompt file should not cost a model load */
    for (int s = 0; s < 2 && !st; s++) st = read_prompts(paths[s], o.field, o.limit, &sets[s]);
    if (!st && !(st = stetho_sae_scan(sae_dir, &saes, &n_saes))) {
        if ((st = stetho_tokenizer_load(&tok, model_path)))
            st = st_err_context(st, "diagnose needs the model's tokenizer.json to encode the prompts");
        else have_tok = true;
    }
    if (!st && !(st = stetho_model_load(&m, model_path))) have_model = true;
    if (!st) st = stetho_diagnoser_init(&d, &m, saes, n_saes, &o);
    int ctx = have_model ? m.cfg.max_position : 0;
    int max_len = o.max_tokens > 0 && (ctx <= 0 || o.max_tokens < ctx) ? o.max_tokens : ctx;
    for (int s = 0; s < 2 && !st; s++) {
        for (size_t i = 0; i < sets[s].n && !st; i++) {
            size_t n = 0;
            free(ids);
            ids = NULL;
            if ((st = stetho_tokenizer_encode(&tok, sets[s].text[i], sets[s].len[i], true, &ids, &n))) {
                st = st_err_context(st, "%s: prompt %zu", paths[s], i + 1);
                break;
            }
            int skip = n > 0 && tok.bos_id >= 0 && ids[0] == tok.bos_id;
            bos_seen |= skip;
            if (max_len > 0 && n > (size_t)max_len) {
                n = (size_t)max_len;
                n_trunc[s]++;
            }
            if (n <= (size_t)skip) n_empty[s]++;
            else st = stetho_diagnoser_add(d, s, ids, (int)n, skip);
            if (!st && o.progress) o.progress(o.progress_user, s, i + 1, sets[s].n);
        }
    }
    free(ids);
    if (!st) st = stetho_diagnoser_finish(d, r);
    for (int s = 0; s < 2 && !st; s++)
        if (r->n_tokens[s] == 0)
            st = st_err(STETHO_ERR_INVALID, "%s: no tokens to count (every prompt is empty after the BOS)", paths[s]);
    if (!st) {
        r->model_path = st_strdup(model_path);
        r->sae_dir = st_strdup(sae_dir);
        r->domain_path = st_strdup(domain_path);
        r->general_path = st_strdup(general_path);
        r->field = st_strdup(o.field ? o.field : "text|problem");
        if (!r->model_path || !r->sae_dir || !r->domain_path || !r->general_path || !r->field) st = STETHO_ERR_NOMEM;
        r->bos_excluded = bos_seen;
        for (int s = 0; s < 2; s++) {
            r->n_empty[s] = n_empty[s];
            r->n_truncated[s] = n_trunc[s];
        }
        if (o.max_tokens == 0) r->opts.max_tokens = max_len;
        r->opts.limit = o.limit;
    }
    if (st) stetho_diagnose_result_free(r);
    stetho_diagnoser_free(d);
    stetho_sae_entries_free(saes, n_saes);
    if (have_model) stetho_model_free(&m);
    if (have_tok) stetho_tokenizer_free(&tok);
    for (int s = 0; s < 2; s++) prompts_free(&sets[s]);
    return st;
}
