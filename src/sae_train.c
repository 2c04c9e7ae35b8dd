/* SAE training on streamed activations: shuffle buffer, TopK / ReLU / JumpReLU
 * forward and backward (sparse for TopK, sgemm for the dense architectures),
 * AuxK for dead features, Adam with unit-norm decoder rows, and folding the
 * input scale into the finished SAE. The formulas are in stetho/sae_train.h and
 * docs/sae.md. */
#include "stetho/sae_train.h"
#include "internal.h"
#include "sae_train_internal.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* Loops over fewer elements than this run on one thread: on tiny SAEs the fork and
 * join (and, on a busy machine, waiting for a descheduled thread) cost more than
 * the work. */
#define PAR_MIN 100000

void stetho_sae_train_config_default(stetho_sae_train_config *c) {
    *c = (stetho_sae_train_config){
        .arch = STETHO_SAE_TOPK, .k = 32, .l1 = 0, .lr = 0, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8,
        .batch = 4096, .seed = 42, .aux_coef = 1.0 / 32, .jump_bandwidth = 0.05, .jump_init_threshold = 0.001,
        .b_dec_init = STETHO_SAE_BDEC_MEAN, .heldout_tokens = 8192, .layer = -1,
    };
}

struct stetho_sae_trainer {
    stetho_sae_train_config cfg;
    int d, m;                 /* d_model, d_sae */
    int ka_max;               /* AuxK features per token at most */
    uint64_t dead_window;
    /* parameters in the scaled input space, contiguous for Adam */
    size_t n_params;
    float *params, *grads, *adam_m, *adam_v;
    float *W_encT, *W_dec;    /* [m, d] each: encoder rows (W_enc transposed), decoder rows */
    float *b_enc, *b_dec;     /* [m], [d] */
    float *thr;               /* [m] jumprelu thresholds, else NULL */
    float *g_W_encT, *g_W_dec, *g_b_enc, *g_b_dec, *g_thr;
    /* shuffle buffer of raw rows: order[0, n_free) are free slots, the rest hold rows */
    float *buf;               /* [cap, d] */
    int32_t *order;           /* [cap] */
    size_t cap, n_free, train_rows;
    float *held;              /* [held_cap, d] raw held-out rows */
    size_t held_cap, held_n;
    /* step scratch (B = batch rows) */
    float *xb;                /* [B, d] scaled batch */
    float *xc;                /* [B, d] xb - b_dec */
    float *pre;               /* [B, m] pre-activations */
    float *f, *dpre;          /* [B, m] dense architectures only */
    float *xhat, *dxhat;      /* [B, d] */
    float *ehat, *dehat;      /* [B, d] AuxK reconstruction of the residual and its gradient */
    float *dxc;               /* [B, d] */
    float *ones;              /* [B] */
    int32_t *e_idx;           /* [B, k + ka_max] per row: k main entries (TopK), then AuxK entries */
    float *e_val, *e_grad;    /* same: activation and d loss / d pre */
    int32_t *csc_start, *csc; /* [m + 1], [B * (k + ka_max)]: entries grouped by feature */
    int32_t *csc_pos;         /* [m] cursor while grouping */
    double *colsum;           /* [d] */
    int32_t *dead;            /* [m] indices of dead features this step */
    float *scratch;           /* [threads, 2m] */
    uint8_t *fired;           /* [threads, m] */
    float *th_grad;           /* [threads, m] jumprelu threshold gradient partials */
    float *th;                /* [m] jumprelu thresholds of this step */
    double *row_stats;        /* [B, 4] per row: sse, l0, sparsity penalty term, AuxK sse */
    uint64_t *last_fired;     /* [m] tokens_trained when the feature last fired */
    int threads;
    /* state */
    uint64_t rng;
    bool initialized, heldout, finished;
    double scale;
    const uint8_t *mask;
    size_t mask_n;
    uint64_t tokens_seen, tokens_trained, step, total_steps;
    stetho_sae_train_progress prog;
    bool have_prog;
};

/* ---------------------------------------------------------------- helpers */

static uint64_t rng_next(uint64_t *s) { /* splitmix64 */
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double rng_normal(uint64_t *s) {
    double u1 = ((rng_next(s) >> 11) + 1.0) / 9007199254740993.0; /* (0, 1] */
    double u2 = (rng_next(s) >> 11) / 9007199254740992.0;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* Uniform in [0, n) without modulo bias worth caring about at these sizes. */
static size_t rng_below(uint64_t *s, size_t n) { return (size_t)((__uint128_t)rng_next(s) * n >> 64); }

static int thread_id(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* a is a worse pick than b: smaller value, or equal value and larger index. */
static inline bool worse(float va, int32_t ia, float vb, int32_t ib) { return va < vb || (va == vb && ia > ib); }

/* Restore the heap (worst pick at the root) below position i. */
static void sift_down(float *hv, int32_t *hi, int k, int i) {
    for (;;) {
        int c = 2 * i + 1, w = i;
        if (c < k && worse(hv[c], hi[c], hv[w], hi[w])) w = c;
        if (c + 1 < k && worse(hv[c + 1], hi[c + 1], hv[w], hi[w])) w = c + 1;
        if (w == i) return;
        float tv = hv[i];
        int32_t ti = hi[i];
        hv[i] = hv[w], hi[i] = hi[w];
        hv[w] = tv, hi[w] = ti;
        i = w;
    }
}

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* Indices of the k largest values of v[0, n) (ties: lower index first), into
 * out[0, k) in increasing index order. A heap of the k best so far: after the
 * first few hundred elements almost every value fails the one comparison with
 * the worst kept, which is far cheaper than a quickselect's partitions.
 * scratch: k floats. */
static void top_k_indices(const float *v, int n, int k, float *scratch, int32_t *out) {
    if (k >= n) {
        for (int i = 0; i < n; i++) out[i] = i;
        return;
    }
    float *hv = scratch;
    for (int i = 0; i < k; i++) hv[i] = v[i], out[i] = i;
    for (int i = k / 2 - 1; i >= 0; i--) sift_down(hv, out, k, i);
    for (int i = k; i < n; i++)
        if (v[i] > hv[0]) { /* a later index wins only with a strictly larger value */
            hv[0] = v[i], out[0] = i;
            sift_down(hv, out, k, 0);
        }
    qsort(out, (size_t)k, sizeof *out, cmp_i32);
}

static double lr_at(const stetho_sae_trainer *t, uint64_t step) {
    double T = (double)t->total_steps, s = (double)step;
    double warm = fmax(1.0, floor(T / 20)), decay0 = floor(T * 0.8);
    double f = fmin(1.0, (s + 1) / warm);
    if (s >= decay0 && T > decay0) f = fmin(f, fmax(0.0, (T - s) / (T - decay0)));
    return t->cfg.lr * f;
}

/* ---------------------------------------------------------------- init / free */

void stetho_sae_trainer_free(stetho_sae_trainer *t) {
    if (!t) return;
    void *all[] = {t->params, t->grads, t->adam_m, t->adam_v, t->buf, t->order, t->held, t->xb, t->xc, t->pre,
                   t->f, t->dpre, t->xhat, t->dxhat, t->ehat, t->dehat, t->dxc, t->ones, t->e_idx, t->e_val,
                   t->e_grad, t->csc_start, t->csc, t->csc_pos, t->colsum, t->dead, t->scratch, t->fired, t->th_grad,
                   t->th, t->row_stats,
                   t->last_fired};
    for (size_t i = 0; i < ST_ARRAY_LEN(all); i++) st_free(all[i]);
    st_free(t);
}

static stetho_status check_config(const stetho_sae_train_config *c) {
    if (c->d_model <= 0 || c->d_sae <= 0 || c->d_model > (1 << 20) || c->d_sae > (1 << 24))
        return st_err(STETHO_ERR_INVALID, "sae train: d_model (%d) and d_sae (%d) must be positive", c->d_model,
                      c->d_sae);
    if ((uint64_t)c->d_model * (uint64_t)c->d_sae > (1ull << 32))
        return st_err(STETHO_ERR_INVALID, "sae train: d_model x d_sae = %d x %d is too large", c->d_model, c->d_sae);
    if (c->arch != STETHO_SAE_TOPK && c->arch != STETHO_SAE_RELU && c->arch != STETHO_SAE_JUMPRELU)
        return st_err(STETHO_ERR_UNSUPPORTED, "sae train: architecture '%s' cannot be trained (topk, relu, jumprelu)",
                      stetho_sae_arch_name(c->arch));
    if (c->arch == STETHO_SAE_TOPK && (c->k < 1 || c->k > c->d_sae))
        return st_err(STETHO_ERR_INVALID, "sae train: k = %d must be between 1 and d_sae = %d", c->k, c->d_sae);
    if (!(c->l1 >= 0) || !(c->lr >= 0) || !(c->beta1 >= 0 && c->beta1 < 1) || !(c->beta2 >= 0 && c->beta2 < 1) ||
        !(c->eps > 0) || !(c->aux_coef >= 0) || !(c->jump_bandwidth > 0) || !(c->jump_init_threshold > 0))
        return st_err(STETHO_ERR_INVALID, "sae train: l1, lr, Adam, aux and threshold settings out of range");
    if (c->batch < 1 || c->batch > (1 << 20)) return st_err(STETHO_ERR_INVALID, "sae train: batch must be 1 .. 2^20");
    if (c->total_tokens == 0) return st_err(STETHO_ERR_INVALID, "sae train: total_tokens (the budget) must be set");
    if (c->aux_k < 0) return st_err(STETHO_ERR_INVALID, "sae train: aux_k must be >= 0");
    return STETHO_OK;
}

stetho_status stetho_sae_trainer_init(stetho_sae_trainer **out, const stetho_sae_train_config *cfg) {
    *out = NULL;
    stetho_status st = check_config(cfg);
    if (st) return st;
    stetho_sae_trainer *t = st_calloc(1, sizeof *t);
    if (!t) return STETHO_ERR_NOMEM;
    t->cfg = *cfg;
    int d = t->d = cfg->d_model, m = t->m = cfg->d_sae;
    size_t B = (size_t)cfg->batch, D = (size_t)d, M = (size_t)m;
    int aux_k = cfg->aux_k ? cfg->aux_k : (d / 2 > 0 ? d / 2 : 1);
    t->ka_max = cfg->aux_coef > 0 ? (aux_k < m ? aux_k : m) : 0;
    t->dead_window = cfg->dead_window ? cfg->dead_window : cfg->total_tokens / 5;
    if (!cfg->dead_window && t->dead_window > 10000000) t->dead_window = 10000000;
    if (t->dead_window < B) t->dead_window = B;
    size_t nb = cfg->buffer_tokens ? cfg->buffer_tokens / B : 8;
    if (nb < 2) nb = 2;
    t->cap = nb * B;
    t->train_rows = nb / 2 * B;
    t->n_free = t->cap;
    t->held_cap = cfg->heldout_tokens;
    t->total_steps = (cfg->total_tokens + B - 1) / B;
    t->threads = stetho_get_threads();
    /* Gao et al.'s learning-rate scaling with the number of latents */
    if (!(t->cfg.lr > 0)) t->cfg.lr = 2e-4 / sqrt((double)cfg->d_sae / 16384.0);
    /* sparsity coefficients on inputs with E|x| = sqrt(d): a feature's activation grows like sqrt(d) */
    if (!(t->cfg.l1 > 0)) t->cfg.l1 = (cfg->arch == STETHO_SAE_JUMPRELU ? 0.2 : 0.1) * sqrt((double)cfg->d_model);
    t->rng = cfg->seed ^ 0x5ae5ae5ae5ae5aeull;

    bool jump = cfg->arch == STETHO_SAE_JUMPRELU, dense = cfg->arch != STETHO_SAE_TOPK, ok = true;
    t->n_params = 2 * M * D + M + D + (jump ? M : 0);
    t->params = st_alloc_floats(t->n_params, 1, &ok);
    t->grads = st_alloc_floats(t->n_params, 1, &ok);
    t->adam_m = st_alloc_floats(t->n_params, 1, &ok);
    t->adam_v = st_alloc_floats(t->n_params, 1, &ok);
    t->buf = st_alloc_floats(t->cap, D, &ok);
    t->order = (int32_t *)st_alloc_floats(t->cap, 1, &ok);
    t->held = st_alloc_floats(t->held_cap ? t->held_cap : 1, D, &ok);
    t->xb = st_alloc_floats(B, D, &ok);
    t->xc = st_alloc_floats(B, D, &ok);
    t->pre = st_alloc_floats(B, M, &ok);
    if (dense) {
        t->f = st_alloc_floats(B, M, &ok);
        t->dpre = st_alloc_floats(B, M, &ok);
    }
    t->xhat = st_alloc_floats(B, D, &ok);
    t->dxhat = st_alloc_floats(B, D, &ok);
    t->ehat = st_alloc_floats(B, D, &ok);
    t->dehat = st_alloc_floats(B, D, &ok);
    t->dxc = st_alloc_floats(B, D, &ok);
    t->ones = st_alloc_floats(B, 1, &ok);
    size_t per_row = (size_t)(dense ? 0 : cfg->k) + (size_t)t->ka_max;
    t->e_idx = (int32_t *)st_alloc_floats(B, per_row ? per_row : 1, &ok);
    t->e_val = st_alloc_floats(B, per_row ? per_row : 1, &ok);
    t->e_grad = st_alloc_floats(B, per_row ? per_row : 1, &ok);
    t->csc_start = (int32_t *)st_alloc_floats(M + 1, 1, &ok);
    t->csc = (int32_t *)st_alloc_floats(B, per_row ? per_row : 1, &ok);
    t->csc_pos = (int32_t *)st_alloc_floats(M, 1, &ok);
    t->dead = (int32_t *)st_alloc_floats(M, 1, &ok);
    t->scratch = st_alloc_floats((size_t)t->threads, 2 * M, &ok);
    t->fired = (uint8_t *)st_alloc_floats((size_t)t->threads, (M + 3) / 4, &ok);
    if (jump) t->th_grad = st_alloc_floats((size_t)t->threads, M, &ok);
    if (jump) t->th = st_alloc_floats(M, 1, &ok);
    if (ok && !(t->row_stats = st_malloc(B * 4 * sizeof(double)))) ok = false;
    if (ok && !(t->colsum = st_malloc(D * sizeof(double)))) ok = false;
    if (ok && !(t->last_fired = st_calloc(M, sizeof(uint64_t)))) ok = false;
    if (ok && B * per_row > INT32_MAX) ok = !st_err(STETHO_ERR_NOMEM, "sae train: batch x active features too large");
    if (!ok) {
        stetho_sae_trainer_free(t);
        return STETHO_ERR_NOMEM;
    }
    float *p = t->params, *g = t->grads;
    t->W_encT = p, t->g_W_encT = g;
    t->W_dec = p + M * D, t->g_W_dec = g + M * D;
    t->b_enc = p + 2 * M * D, t->g_b_enc = g + 2 * M * D;
    t->b_dec = t->b_enc + M, t->g_b_dec = t->g_b_enc + M;
    if (jump) t->thr = t->b_dec + D, t->g_thr = t->g_b_dec + D;
    memset(t->adam_m, 0, t->n_params * sizeof(float));
    memset(t->adam_v, 0, t->n_params * sizeof(float));
    for (size_t i = 0; i < t->cap; i++) t->order[i] = (int32_t)i;
    for (size_t i = 0; i < B; i++) t->ones[i] = 1.0f;

    /* decoder rows: random unit directions; encoder rows tied to them */
    uint64_t s = cfg->seed;
    for (size_t j = 0; j < M; j++) {
        float *w = t->W_dec + j * D;
        double ss = 0;
        for (size_t i = 0; i < D; i++) {
            w[i] = (float)rng_normal(&s);
            ss += (double)w[i] * w[i];
        }
        float inv = (float)(1.0 / sqrt(ss > 0 ? ss : 1));
        for (size_t i = 0; i < D; i++) w[i] *= inv;
    }
    memcpy(t->W_encT, t->W_dec, M * D * sizeof(float));
    memset(t->b_enc, 0, (M + D) * sizeof(float));
    if (jump)
        for (size_t j = 0; j < M; j++) t->thr[j] = (float)cfg->jump_init_threshold;
    *out = t;
    return STETHO_OK;
}

/* ---------------------------------------------------------------- the step */

/* Input scale and b_dec from the first rows buffered (slots [n]). */
static void init_from_rows(stetho_sae_trainer *t, const int32_t *slots, size_t n) {
    size_t D = (size_t)t->d;
    double norm_sum = 0;
    for (size_t r = 0; r < n; r++) {
        const float *x = t->buf + (size_t)slots[r] * D;
        double ss = 0;
        for (size_t i = 0; i < D; i++) ss += (double)x[i] * x[i];
        norm_sum += sqrt(ss);
    }
    double mean_norm = n ? norm_sum / (double)n : 0;
    t->scale = mean_norm > 0 && isfinite(mean_norm) ? sqrt((double)D) / mean_norm : 1.0;
    double *mu = st_calloc(D, sizeof *mu), *y = st_calloc(D, sizeof *y);
    if (mu && y && n && t->cfg.b_dec_init != STETHO_SAE_BDEC_ZERO) {
        for (size_t r = 0; r < n; r++) {
            const float *x = t->buf + (size_t)slots[r] * D;
            for (size_t i = 0; i < D; i++) mu[i] += x[i] * t->scale;
        }
        for (size_t i = 0; i < D; i++) mu[i] /= (double)n;
        if (t->cfg.b_dec_init == STETHO_SAE_BDEC_GEOMETRIC_MEDIAN) {
            /* Weiszfeld: y <- sum(x / |x - y|) / sum(1 / |x - y|), from the mean */
            for (int it = 0; it < 30; it++) {
                double wsum = 0;
                memset(y, 0, D * sizeof *y);
                for (size_t r = 0; r < n; r++) {
                    const float *x = t->buf + (size_t)slots[r] * D;
                    double dist = 0;
                    for (size_t i = 0; i < D; i++) {
                        double e = x[i] * t->scale - mu[i];
                        dist += e * e;
                    }
                    double w = 1.0 / fmax(sqrt(dist), 1e-6);
                    wsum += w;
                    for (size_t i = 0; i < D; i++) y[i] += w * x[i] * t->scale;
                }
                for (size_t i = 0; i < D; i++) mu[i] = y[i] / wsum;
            }
        }
        for (size_t i = 0; i < D; i++) t->b_dec[i] = (float)mu[i];
    }
    st_free(mu);
    st_free(y);
    t->initialized = true;
}

/* Counting sort of the entries e (with e_idx[e] = feature) by feature, stable. */
static void build_csc(stetho_sae_trainer *t, size_t n_entries) {
    int m = t->m;
    memset(t->csc_start, 0, ((size_t)m + 1) * sizeof *t->csc_start);
    for (size_t e = 0; e < n_entries; e++) t->csc_start[t->e_idx[e] + 1]++;
    for (int j = 0; j < m; j++) t->csc_start[j + 1] += t->csc_start[j];
    int32_t *pos = t->csc_pos;
    memcpy(pos, t->csc_start, (size_t)m * sizeof *pos);
    for (size_t e = 0; e < n_entries; e++) t->csc[pos[t->e_idx[e]]++] = (int32_t)e;
}

/* The sparse (TopK) passes are made of these: vectorised explicitly, since a plain
 * float loop is a chain of dependent scalar adds (the simd reduction's order is
 * fixed, so results stay deterministic). x and y never overlap. */
static inline void axpy(int n, float a, const float *restrict x, float *restrict y) {
    #pragma omp simd
    for (int i = 0; i < n; i++) y[i] += a * x[i];
}

static inline float dot(int n, const float *restrict x, const float *restrict y) {
    float s = 0;
    #pragma omp simd reduction(+ : s)
    for (int i = 0; i < n; i++) s += x[i] * y[i];
    return s;
}

/* What one batch's forward pass measured (sums over its rows). */
typedef struct {
    int n;
    double sse, l0, pen, aux_sse, var, aux_w;
    double mse, aux, loss;
} step_stats;

/* Forward and backward on the n scaled rows in t->xb: t->grads and *ss. */
static void compute_grads(stetho_sae_trainer *t, int n, step_stats *ss) {
    const stetho_sae_train_config *c = &t->cfg;
    int d = t->d, m = t->m;
    size_t D = (size_t)d, M = (size_t)m;
    bool topk = c->arch == STETHO_SAE_TOPK, jump = c->arch == STETHO_SAE_JUMPRELU;
    int k = topk ? c->k : 0;
    /* BLAS threads only where the products are big enough to pay for them */
    openblas_set_num_threads((double)n * m * d > 4e6 ? t->threads : 1);

    /* dead features (as of before this step) for AuxK */
    int n_dead = 0;
    if (t->ka_max > 0)
        for (int j = 0; j < m; j++)
            if (t->tokens_trained - t->last_fired[j] >= t->dead_window) t->dead[n_dead++] = j;
    int ka = n_dead < t->ka_max ? n_dead : t->ka_max;
    double aux_w = t->ka_max ? c->aux_coef * fmin((double)n_dead / t->ka_max, 1.0) : 0;
    int per_row = k + ka;
    float inv_n = 1.0f / (float)n, l1n = (float)(c->l1 / n), eps_jump = (float)c->jump_bandwidth;

    if (jump)
        for (int j = 0; j < m; j++) t->th[j] = t->thr[j];

    /* ---- forward: xc = x - b_dec; pre = xc W_enc + b_enc; f = act(pre) */
    #pragma omp parallel for schedule(static) if ((size_t)n * D > PAR_MIN)
    for (int r = 0; r < n; r++)
        for (int i = 0; i < d; i++) t->xc[(size_t)r * D + i] = t->xb[(size_t)r * D + i] - t->b_dec[i];
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, m, d, 1.0f, t->xc, d, t->W_encT, d, 0.0f, t->pre, m);

    size_t fstride = (M + 3) / 4 * 4;
    memset(t->fired, 0, (size_t)t->threads * fstride);
    #pragma omp parallel for schedule(static) if ((size_t)n * M > PAR_MIN)
    for (int r = 0; r < n; r++) {
        float *p = t->pre + (size_t)r * M;
        uint8_t *fired = t->fired + (size_t)thread_id() * fstride;
        float *sc = t->scratch + (size_t)thread_id() * 2 * M;
        int32_t *ei = t->e_idx + (size_t)r * per_row;
        float *ev = t->e_val + (size_t)r * per_row;
        double l0 = 0, pen = 0;
        for (int j = 0; j < m; j++) p[j] += t->b_enc[j];
        if (topk) {
            top_k_indices(p, m, k, sc, ei);
            for (int a = 0; a < k; a++) {
                float v = p[ei[a]];
                ev[a] = v > 0 ? v : 0;
                if (v > 0) fired[ei[a]] = 1, l0++;
            }
        } else {
            float *f = t->f + (size_t)r * M;
            for (int j = 0; j < m; j++) {
                float v = p[j];
                bool on = v > 0 && (!jump || v > t->th[j]);
                f[j] = on ? v : 0;
                if (on) fired[j] = 1, l0++, pen += v;
            }
            if (jump) pen = l0;
        }
        if (ka > 0) { /* AuxK: the ka largest pre-activations among dead features, raw */
            float *dv = sc + M;
            for (int a = 0; a < n_dead; a++) dv[a] = p[t->dead[a]];
            int32_t *ai = ei + k;
            top_k_indices(dv, n_dead, ka, sc, ai);
            for (int a = 0; a < ka; a++) {
                ai[a] = t->dead[ai[a]];
                ev[k + a] = p[ai[a]];
            }
        }
        t->row_stats[(size_t)r * 4 + 1] = l0;
        t->row_stats[(size_t)r * 4 + 2] = pen;
    }

    /* ---- decode: xhat = f W_dec + b_dec; AuxK: ehat = f_aux W_dec predicts x - xhat */
    if (!topk)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, d, m, 1.0f, t->f, m, t->W_dec, d, 0.0f, t->xhat, d);
    #pragma omp parallel for schedule(static) if ((size_t)n * D * (size_t)(per_row + 1) > PAR_MIN)
    for (int r = 0; r < n; r++) {
        float *xh = t->xhat + (size_t)r * D, *eh = t->ehat + (size_t)r * D;
        float *dx = t->dxhat + (size_t)r * D, *de = t->dehat + (size_t)r * D;
        const float *x = t->xb + (size_t)r * D;
        const int32_t *ei = t->e_idx + (size_t)r * per_row;
        const float *ev = t->e_val + (size_t)r * per_row;
        if (topk) {
            memset(xh, 0, D * sizeof *xh);
            for (int a = 0; a < k; a++)
                if (ev[a] != 0) axpy(d, ev[a], t->W_dec + (size_t)ei[a] * D, xh);
        }
        memset(eh, 0, D * sizeof *eh);
        for (int a = k; a < per_row; a++) axpy(d, ev[a], t->W_dec + (size_t)ei[a] * D, eh);
        double e2 = 0, a2 = 0;
        for (int i = 0; i < d; i++) {
            xh[i] += t->b_dec[i];
            float e = xh[i] - x[i];
            e2 += (double)e * e;
            dx[i] = 2.0f * e * inv_n;
            float ea = eh[i] + e; /* ehat - (x - xhat), the residual taken as a constant */
            a2 += (double)ea * ea;
            de[i] = (float)(2.0 * aux_w) * ea * inv_n;
        }
        t->row_stats[(size_t)r * 4] = e2;
        t->row_stats[(size_t)r * 4 + 3] = ka ? a2 : 0;
    }

    /* ---- backward */
    if (!topk) {
        /* d loss / d f = dxhat W_dec^T, then through the activation */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, m, d, 1.0f, t->dxhat, d, t->W_dec, d, 0.0f, t->dpre, m);
        if (jump) memset(t->th_grad, 0, (size_t)t->threads * M * sizeof(float));
        #pragma omp parallel for schedule(static) if ((size_t)n * M > PAR_MIN)
        for (int r = 0; r < n; r++) {
            const float *p = t->pre + (size_t)r * M;
            float *dp = t->dpre + (size_t)r * M;
            if (jump) {
                /* f = pre H(pre - th): d f / d th ~ -(th / eps) K, d H / d th ~ -(1 / eps) K, with the
                 * rectangle kernel K = 1 on |pre - th| < eps / 2 (Rajamanoharan et al.) */
                float *tg = t->th_grad + (size_t)thread_id() * M;
                for (int j = 0; j < m; j++) {
                    float th = t->th[j], u = p[j] - th;
                    if (fabsf(u) < 0.5f * eps_jump) tg[j] += dp[j] * (-th / eps_jump) - l1n / eps_jump;
                    dp[j] = (p[j] > th && p[j] > 0) ? dp[j] : 0;
                }
            } else {
                for (int j = 0; j < m; j++) dp[j] = p[j] > 0 ? dp[j] + l1n : 0;
            }
            const int32_t *ei = t->e_idx + (size_t)r * per_row;
            const float *de = t->dehat + (size_t)r * D;
            for (int a = 0; a < ka; a++) dp[ei[a]] += dot(d, de, t->W_dec + (size_t)ei[a] * D);
        }
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, m, d, n, 1.0f, t->f, m, t->dxhat, d, 0.0f, t->g_W_dec, d);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, m, d, n, 1.0f, t->dpre, m, t->xc, d, 0.0f, t->g_W_encT, d);
        cblas_sgemv(CblasRowMajor, CblasTrans, n, m, 1.0f, t->dpre, m, t->ones, 1, 0.0f, t->g_b_enc, 1);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, d, m, 1.0f, t->dpre, m, t->W_encT, d, 0.0f, t->dxc,
                    d);
        if (jump)
            for (int j = 0; j < m; j++) {
                float s = 0;
                for (int th = 0; th < t->threads; th++) s += t->th_grad[(size_t)th * M + j];
                t->g_thr[j] = s;
            }
        if (ka > 0) { /* AuxK's decoder gradient, feature by feature */
            build_csc(t, (size_t)n * per_row);
            #pragma omp parallel for schedule(dynamic, 64) if ((size_t)n * (size_t)per_row * D > PAR_MIN)
            for (int j = 0; j < m; j++)
                for (int q = t->csc_start[j]; q < t->csc_start[j + 1]; q++) {
                    int e = t->csc[q];
                    axpy(d, t->e_val[e], t->dehat + (size_t)(e / per_row) * D, t->g_W_dec + (size_t)j * D);
                }
        }
    } else {
        /* d loss / d pre of each active entry; dxc by rows */
        #pragma omp parallel for schedule(static) if ((size_t)n * (size_t)per_row * D > PAR_MIN)
        for (int r = 0; r < n; r++) {
            const int32_t *ei = t->e_idx + (size_t)r * per_row;
            const float *ev = t->e_val + (size_t)r * per_row;
            float *eg = t->e_grad + (size_t)r * per_row, *dxc = t->dxc + (size_t)r * D;
            const float *dx = t->dxhat + (size_t)r * D, *de = t->dehat + (size_t)r * D;
            memset(dxc, 0, D * sizeof *dxc);
            for (int a = 0; a < per_row; a++) {
                const float *w = t->W_dec + (size_t)ei[a] * D;
                eg[a] = a < k ? (ev[a] > 0 ? dot(d, dx, w) : 0) : dot(d, de, w);
                if (eg[a] != 0) axpy(d, eg[a], t->W_encT + (size_t)ei[a] * D, dxc);
            }
        }
        /* parameter gradients feature by feature (entries in row order: deterministic) */
        build_csc(t, (size_t)n * per_row);
        #pragma omp parallel for schedule(dynamic, 64) if ((size_t)n * (size_t)per_row * D > PAR_MIN)
        for (int j = 0; j < m; j++) {
            float *gd = t->g_W_dec + (size_t)j * D, *ge = t->g_W_encT + (size_t)j * D;
            memset(gd, 0, D * sizeof *gd);
            memset(ge, 0, D * sizeof *ge);
            float gb = 0;
            for (int q = t->csc_start[j]; q < t->csc_start[j + 1]; q++) {
                int e = t->csc[q], r = e / per_row;
                bool main = e % per_row < k;
                axpy(d, t->e_val[e], (main ? t->dxhat : t->dehat) + (size_t)r * D, gd);
                if (t->e_grad[e] != 0) axpy(d, t->e_grad[e], t->xc + (size_t)r * D, ge);
                gb += t->e_grad[e];
            }
            t->g_b_enc[j] = gb;
        }
    }
    /* b_dec enters twice: added to xhat and subtracted from the encoder's input */
    #pragma omp parallel for schedule(static) if ((size_t)n * D > PAR_MIN)
    for (int i = 0; i < d; i++) {
        double g = 0, s = 0;
        for (int r = 0; r < n; r++) {
            g += t->dxhat[(size_t)r * D + i] - t->dxc[(size_t)r * D + i];
            s += t->xb[(size_t)r * D + i];
        }
        t->g_b_dec[i] = (float)g;
        t->colsum[i] = s;
    }

    /* ---- batch statistics (sums in row order: deterministic whatever the thread count) */
    double sse = 0, l0 = 0, pen = 0, a2 = 0, x2 = 0, mu2 = 0;
    for (int r = 0; r < n; r++) {
        sse += t->row_stats[(size_t)r * 4];
        l0 += t->row_stats[(size_t)r * 4 + 1];
        pen += t->row_stats[(size_t)r * 4 + 2];
        a2 += t->row_stats[(size_t)r * 4 + 3];
        const float *x = t->xb + (size_t)r * D;
        for (int i = 0; i < d; i++) x2 += (double)x[i] * x[i];
    }
    for (int i = 0; i < d; i++) mu2 += t->colsum[i] * t->colsum[i];
    *ss = (step_stats){.n = n, .sse = sse, .l0 = l0, .pen = pen, .aux_sse = a2, .var = x2 - mu2 / n, .aux_w = aux_w};
    ss->mse = sse / n;
    ss->aux = aux_w * a2 / n;
    ss->loss = ss->mse + (topk ? 0 : c->l1 * pen / n) + ss->aux;
}

/* Dead-feature bookkeeping, the Adam step and progress after compute_grads. */
static void apply_update(stetho_sae_trainer *t, const step_stats *ss) {
    const stetho_sae_train_config *c = &t->cfg;
    int d = t->d, m = t->m, n = ss->n;
    size_t D = (size_t)d, fstride = ((size_t)m + 3) / 4 * 4;
    for (int th = 0; th < t->threads; th++)
        for (int j = 0; j < m; j++)
            if (t->fired[(size_t)th * fstride + j]) t->last_fired[j] = t->tokens_trained + (uint64_t)n;

    /* ---- update: decoder gradient tangent to the unit sphere, Adam, renormalise */
    #pragma omp parallel for schedule(static) if ((size_t)m * D > PAR_MIN)
    for (int j = 0; j < m; j++) {
        const float *w = t->W_dec + (size_t)j * D;
        float *g = t->g_W_dec + (size_t)j * D;
        axpy(d, -dot(d, g, w), w, g);
    }
    double lr = lr_at(t, t->step);
    t->step++;
    double b1 = c->beta1, b2 = c->beta2;
    float a = (float)(lr * sqrt(1 - pow(b2, (double)t->step)) / (1 - pow(b1, (double)t->step)));
    float fb1 = (float)b1, fb2 = (float)b2, eps = (float)c->eps;
    #pragma omp parallel for schedule(static) if (t->n_params > PAR_MIN)
    for (size_t i = 0; i < t->n_params; i++) {
        float g = t->grads[i];
        float mm = t->adam_m[i] = fb1 * t->adam_m[i] + (1 - fb1) * g;
        float vv = t->adam_v[i] = fb2 * t->adam_v[i] + (1 - fb2) * g * g;
        t->params[i] -= a * mm / (sqrtf(vv) + eps);
    }
    #pragma omp parallel for schedule(static) if ((size_t)m * D > PAR_MIN)
    for (int j = 0; j < m; j++) {
        float *w = t->W_dec + (size_t)j * D;
        float nn = sqrtf(dot(d, w, w));
        if (nn > 0)
            for (int i = 0; i < d; i++) w[i] /= nn;
    }
    if (t->thr) /* a threshold below 0 would make JumpReLU a ReLU: keep it there */
        for (int j = 0; j < m; j++) t->thr[j] = t->thr[j] > 0 ? t->thr[j] : 0;

    stetho_sae_train_progress *pg = &t->prog;
    double ev = ss->var > 0 ? 1 - ss->sse / ss->var : NAN, w = t->have_prog ? 0.1 : 1.0;
    pg->loss += w * (ss->loss - pg->loss);
    pg->mse += w * (ss->mse - pg->mse);
    pg->aux_loss += w * (ss->aux - pg->aux_loss);
    pg->l0 += w * (ss->l0 / n - pg->l0);
    if (isfinite(ev)) pg->explained_variance += w * (ev - pg->explained_variance);
    pg->lr = lr;
    t->have_prog = true;
    t->tokens_trained += (uint64_t)n;
}

static void train_step(stetho_sae_trainer *t, int n) {
    step_stats ss;
    compute_grads(t, n, &ss);
    apply_update(t, &ss);
}

/* ---------------------------------------------------------------- test access */

double st_sae_trainer_loss_grad(stetho_sae_trainer *t, const float *x, int n, float **params, float **grads,
                                size_t *n_params) {
    memcpy(t->xb, x, (size_t)n * (size_t)t->d * sizeof *x);
    step_stats ss;
    compute_grads(t, n, &ss);
    *params = t->params;
    *grads = t->grads;
    *n_params = t->n_params;
    return ss.loss;
}

void st_sae_trainer_set_dead(stetho_sae_trainer *t, const uint8_t *dead) {
    t->tokens_trained = t->dead_window;
    for (int j = 0; j < t->m; j++) t->last_fired[j] = dead[j] ? 0 : t->dead_window;
}

/* Train on the rows in slots [n] in batches (the last one may be short). */
static void train_slots(stetho_sae_trainer *t, const int32_t *slots, size_t n) {
    size_t D = (size_t)t->d, B = (size_t)t->cfg.batch;
    float s = (float)t->scale;
    for (size_t b0 = 0; b0 < n; b0 += B) {
        size_t nb = n - b0 < B ? n - b0 : B;
        #pragma omp parallel for schedule(static) if (nb * D > PAR_MIN)
        for (size_t r = 0; r < nb; r++) {
            const float *src = t->buf + (size_t)slots[b0 + r] * D;
            float *dst = t->xb + r * D;
            for (size_t i = 0; i < D; i++) dst[i] = src[i] * s;
        }
        train_step(t, (int)nb);
    }
}

static void shuffle(uint64_t *rng, int32_t *a, size_t n) {
    for (size_t i = n; i > 1; i--) {
        size_t j = rng_below(rng, i);
        int32_t tmp = a[i - 1];
        a[i - 1] = a[j];
        a[j] = tmp;
    }
}

static stetho_status feed_rows(stetho_sae_trainer *t, const float *x, size_t n, const uint8_t *keep) {
    if (t->finished) return st_err(STETHO_ERR_INVALID, "sae train: fed after finish");
    size_t D = (size_t)t->d;
    for (size_t r = 0; r < n; r++) {
        if (keep && !keep[r]) continue;
        const float *row = x + r * D;
        if (t->heldout) {
            if (t->held_n < t->held_cap) memcpy(t->held + t->held_n++ * D, row, D * sizeof *row);
            continue;
        }
        if (t->tokens_seen >= t->cfg.total_tokens) continue;
        for (size_t i = 0; i < D; i++)
            if (!isfinite(row[i]))
                return st_err(STETHO_ERR_INVALID, "sae train: activation row %zu holds a non-finite value", r);
        int32_t slot = t->order[--t->n_free];
        memcpy(t->buf + (size_t)slot * D, row, D * sizeof *row);
        t->tokens_seen++;
        if (t->n_free == 0) { /* full: mix everything, train on half, keep the other half mixed in */
            if (!t->initialized) init_from_rows(t, t->order, t->cap);
            shuffle(&t->rng, t->order, t->cap);
            train_slots(t, t->order, t->train_rows);
            t->n_free = t->train_rows;
        }
    }
    return STETHO_OK;
}

stetho_status stetho_sae_trainer_feed(stetho_sae_trainer *t, const float *x, size_t n) {
    return feed_rows(t, x, n, NULL);
}

void stetho_sae_trainer_set_mask(stetho_sae_trainer *t, const uint8_t *keep, size_t n) {
    t->mask = keep;
    t->mask_n = keep ? n : 0;
}

void stetho_sae_trainer_set_heldout(stetho_sae_trainer *t, bool on) { t->heldout = on; }

bool stetho_sae_trainer_done(const stetho_sae_trainer *t) { return t->tokens_seen >= t->cfg.total_tokens; }

stetho_status stetho_sae_trainer_hook(void *user, int layer, stetho_hook_kind kind, const float *data, int n_tokens,
                                      int dim) {
    stetho_sae_trainer *t = user;
    if (dim != t->d)
        return st_err(STETHO_ERR_MISMATCH, "sae train: blocks.%d.%s has width %d but the SAE's d_model is %d", layer,
                      stetho_hook_kind_name(kind), dim, t->d);
    if (t->mask && t->mask_n != (size_t)n_tokens)
        return st_err(STETHO_ERR_INVALID, "sae train: token mask of %zu rows for a block of %d", t->mask_n, n_tokens);
    return feed_rows(t, data, (size_t)n_tokens, t->mask);
}

void stetho_sae_trainer_progress(const stetho_sae_trainer *t, stetho_sae_train_progress *p) {
    *p = t->prog;
    p->tokens_seen = t->tokens_seen;
    p->tokens_trained = t->tokens_trained;
    p->steps = t->step;
    p->total_steps = t->total_steps;
    int dead = 0;
    for (int j = 0; j < t->m; j++) dead += t->tokens_trained - t->last_fired[j] >= t->dead_window;
    p->dead_features = dead;
    if (!t->have_prog) p->loss = p->mse = p->aux_loss = p->l0 = p->explained_variance = p->lr = NAN;
}

stetho_status stetho_sae_trainer_finish(stetho_sae_trainer *t, stetho_sae *out, stetho_sae_train_report *rep) {
    memset(out, 0, sizeof *out);
    if (t->finished) return st_err(STETHO_ERR_INVALID, "sae train: finished twice");
    size_t occ = t->cap - t->n_free, D = (size_t)t->d, M = (size_t)t->m;
    int32_t *rest = t->order + t->n_free;
    if (!t->initialized) {
        if (occ == 0) return st_err(STETHO_ERR_INVALID, "sae train: no training activations were fed");
        init_from_rows(t, rest, occ);
    }
    shuffle(&t->rng, rest, occ);
    train_slots(t, rest, occ);
    t->n_free = t->cap;
    t->finished = true;

    /* fold the input scale s in: f = f' / s keeps unit decoder rows (see the header) */
    stetho_sae *s = out;
    s->format = STETHO_SAE_FORMAT_SAELENS;
    s->arch = t->cfg.arch;
    s->d_model = t->d;
    s->d_sae = t->m;
    s->k = t->cfg.arch == STETHO_SAE_TOPK ? t->cfg.k : 0;
    s->apply_b_dec_to_input = true;
    s->norm = STETHO_SAE_NORM_NONE;
    s->layer = t->cfg.layer;
    snprintf(s->hook, sizeof s->hook, "%s", t->cfg.hook);
    snprintf(s->stored_dtype, sizeof s->stored_dtype, "float32");
    bool ok = true;
    s->W_enc = st_alloc_floats(D, M, &ok);
    s->W_dec = st_alloc_floats(M, D, &ok);
    s->b_enc = st_alloc_floats(M, 1, &ok);
    s->b_dec = st_alloc_floats(D, 1, &ok);
    if (t->thr) s->threshold = st_alloc_floats(M, 1, &ok);
    if (!ok) {
        stetho_sae_free(s);
        return STETHO_ERR_NOMEM;
    }
    float inv = (float)(1.0 / t->scale);
    for (size_t j = 0; j < M; j++)
        for (size_t i = 0; i < D; i++) s->W_enc[i * M + j] = t->W_encT[j * D + i];
    memcpy(s->W_dec, t->W_dec, M * D * sizeof(float));
    for (size_t j = 0; j < M; j++) s->b_enc[j] = t->b_enc[j] * inv;
    for (size_t i = 0; i < D; i++) s->b_dec[i] = t->b_dec[i] * inv;
    if (t->thr)
        for (size_t j = 0; j < M; j++) s->threshold[j] = t->thr[j] * inv;
    for (size_t i = 0; i < M * D; i++)
        if (!isfinite(s->W_enc[i]) || !isfinite(s->W_dec[i])) {
            stetho_sae_free(s);
            return st_err(STETHO_ERR_INVALID, "sae train: the weights diverged (non-finite); lower the learning rate");
        }
    if (rep) {
        memset(rep, 0, sizeof *rep);
        stetho_sae_trainer_progress(t, &rep->final);
        rep->norm_scale = t->scale;
        stetho_status st = stetho_sae_eval_rows(s, t->held, t->held_n, &rep->heldout);
        if (st) {
            stetho_sae_free(s);
            return st;
        }
    }
    return STETHO_OK;
}
