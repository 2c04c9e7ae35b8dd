/* SAE evaluation: SAELens' reconstruction metrics (l0, mse, explained variance,
 * cosine, dead/dense features) from running sums, and the downstream metrics
 * (ce_loss_score, kl_div_score) from three forward passes per prompt: clean,
 * with the reconstruction spliced in at the SAE's hook, and with the hook's
 * activations zeroed. Definitions in stetho/sae_eval.h. */
#include "stetho/sae_eval.h"
#include "internal.h"

#include <math.h>
#include <string.h>

#define EVAL_ROWS 256      /* rows encoded at a time: bounds the [rows, d_sae] scratch */
#define DENSE_DENSITY 0.1  /* a feature firing on more tokens than this is "dense" */

/* ---------------------------------------------------------------- reconstruction */

stetho_status stetho_sae_recon_init(stetho_sae_recon_acc *a, int d_model, int d_sae) {
    memset(a, 0, sizeof *a);
    a->d_model = d_model;
    a->d_sae = d_sae;
    a->sum_x = st_calloc((size_t)d_model, sizeof *a->sum_x);
    a->fires = st_calloc((size_t)d_sae, sizeof *a->fires);
    if (!a->sum_x || !a->fires) {
        stetho_sae_recon_free(a);
        return STETHO_ERR_NOMEM;
    }
    return STETHO_OK;
}

void stetho_sae_recon_free(stetho_sae_recon_acc *a) {
    st_free(a->sum_x);
    st_free(a->fires);
    memset(a, 0, sizeof *a);
}

void stetho_sae_recon_add(stetho_sae_recon_acc *a, const float *x, const float *x_hat, const float *f, size_t n,
                          const uint8_t *keep) {
    size_t D = (size_t)a->d_model, M = (size_t)a->d_sae;
    for (size_t r = 0; r < n; r++) {
        if (keep && !keep[r]) continue;
        const float *xr = x + r * D, *yr = x_hat + r * D, *fr = f + r * M;
        double e2 = 0, x2 = 0, y2 = 0, xy = 0, l0 = 0, l1 = 0;
        for (size_t i = 0; i < D; i++) {
            double e = (double)xr[i] - yr[i];
            e2 += e * e;
            x2 += (double)xr[i] * xr[i];
            y2 += (double)yr[i] * yr[i];
            xy += (double)xr[i] * yr[i];
            a->sum_x[i] += xr[i];
        }
        for (size_t j = 0; j < M; j++)
            if (fr[j] > 0) {
                l0++;
                l1 += fr[j];
                a->fires[j]++;
            }
        a->n++;
        a->sse += e2;
        a->sum_sq += x2;
        a->sum_cos += (x2 > 0 && y2 > 0) ? xy / sqrt(x2 * y2) : 0;
        a->sum_l0 += l0;
        a->sum_l1 += l1;
    }
}

void stetho_sae_recon_result(const stetho_sae_recon_acc *a, stetho_sae_metrics *m) {
    memset(m, 0, sizeof *m);
    m->n_tokens = a->n;
    m->d_sae = a->d_sae;
    double n = (double)a->n;
    if (a->n) {
        double mu2 = 0;
        for (int i = 0; i < a->d_model; i++) mu2 += (a->sum_x[i] / n) * (a->sum_x[i] / n);
        double var = a->sum_sq / n - mu2; /* E|x - E x|^2 */
        m->l0 = a->sum_l0 / n;
        m->l1 = a->sum_l1 / n;
        m->mse = a->sse / n;
        m->explained_variance = var > 0 ? 1 - m->mse / var : NAN;
        m->cossim = a->sum_cos / n;
        for (int j = 0; j < a->d_sae; j++) {
            m->dead_features += a->fires[j] == 0;
            m->dense_features += (double)a->fires[j] > DENSE_DENSITY * n;
        }
    } else {
        m->l0 = m->l1 = m->mse = m->explained_variance = m->cossim = NAN;
    }
    m->ce_loss_without_sae = m->ce_loss_with_sae = m->ce_loss_with_ablation = m->ce_loss_score = NAN;
    m->kl_div_with_sae = m->kl_div_with_ablation = m->kl_div_score = NAN;
}

/* Encode and decode rows [n] in blocks; calls back with each block. */
static stetho_status encode_block(const stetho_sae *s, const float *x, size_t n, float *f, float *x_hat) {
    stetho_status st = stetho_sae_encode(s, x, n, f);
    return st ? st : stetho_sae_decode(s, f, x, n, x_hat);
}

stetho_status stetho_sae_eval_rows(const stetho_sae *s, const float *x, size_t n, stetho_sae_metrics *out) {
    stetho_sae_recon_acc a;
    stetho_status st = stetho_sae_recon_init(&a, s->d_model, s->d_sae);
    if (st) return st;
    float *f = st_malloc((size_t)EVAL_ROWS * (size_t)s->d_sae * sizeof *f);
    float *xh = st_malloc((size_t)EVAL_ROWS * (size_t)s->d_model * sizeof *xh);
    if (!f || !xh) st = STETHO_ERR_NOMEM;
    for (size_t r0 = 0; r0 < n && !st; r0 += EVAL_ROWS) {
        size_t rows = n - r0 < EVAL_ROWS ? n - r0 : EVAL_ROWS;
        const float *xr = x + r0 * (size_t)s->d_model;
        if (!(st = encode_block(s, xr, rows, f, xh))) stetho_sae_recon_add(&a, xr, xh, f, rows, NULL);
    }
    if (!st) stetho_sae_recon_result(&a, out);
    st_free(f);
    st_free(xh);
    stetho_sae_recon_free(&a);
    return st;
}

/* ---------------------------------------------------------------- with a model */

typedef struct {
    stetho_sae_evaluator *ev;
    size_t i;
} sae_ctx;

struct stetho_sae_evaluator {
    stetho_model *model;
    const stetho_sae *const *saes;
    size_t n;
    int32_t *ignore;
    size_t n_ignore;
    bool downstream;
    stetho_sae_recon_acc *acc; /* [n] */
    sae_ctx *ctx;              /* [n] */
    stetho_hooks clean;        /* capture hooks of every SAE */
    stetho_hooks *edit;        /* [n] one editing hook each */
    /* per prompt */
    int cap_T, T;
    const int32_t *tokens;
    uint8_t *keep;             /* [T] */
    float **xhat;              /* [n][T, d_model] reconstructions from the clean pass */
    float *f;                  /* [EVAL_ROWS, max d_sae] */
    float *logp_clean, *logits;/* [T, vocab] */
    double *row_val;           /* [T] */
    bool zero;                 /* the edit hooks zero instead of splicing */
    /* downstream sums */
    double ce_clean, *ce_sae, *ce_abl, *kl_sae, *kl_abl;
    uint64_t n_ce, n_kl;
};

static stetho_status capture_hook(void *user, int layer, stetho_hook_kind kind, const float *data, int T, int dim) {
    (void)layer, (void)kind;
    sae_ctx *c = user;
    stetho_sae_evaluator *ev = c->ev;
    const stetho_sae *s = ev->saes[c->i];
    (void)dim;
    size_t D = (size_t)s->d_model;
    for (int r0 = 0; r0 < T; r0 += EVAL_ROWS) {
        size_t rows = (size_t)(T - r0 < EVAL_ROWS ? T - r0 : EVAL_ROWS);
        const float *x = data + (size_t)r0 * D;
        float *xh = ev->xhat[c->i] + (size_t)r0 * D;
        stetho_status st = encode_block(s, x, rows, ev->f, xh);
        if (st) return st;
        stetho_sae_recon_add(&ev->acc[c->i], x, xh, ev->f, rows, ev->keep + r0);
    }
    return STETHO_OK;
}

static stetho_status edit_hook(void *user, int layer, stetho_hook_kind kind, float *data, int T, int dim) {
    (void)layer, (void)kind;
    sae_ctx *c = user;
    stetho_sae_evaluator *ev = c->ev;
    size_t D = (size_t)dim;
    if (ev->zero) {
        memset(data, 0, (size_t)T * D * sizeof *data);
        return STETHO_OK;
    }
    for (int t = 0; t < T; t++) /* ignored tokens keep their own activations */
        if (ev->keep[t]) memcpy(data + (size_t)t * D, ev->xhat[c->i] + (size_t)t * D, D * sizeof *data);
    return STETHO_OK;
}

void stetho_sae_evaluator_free(stetho_sae_evaluator *ev) {
    if (!ev) return;
    for (size_t i = 0; i < ev->n; i++) {
        if (ev->acc) stetho_sae_recon_free(&ev->acc[i]);
        if (ev->edit) stetho_hooks_free(&ev->edit[i]);
        if (ev->xhat) st_free(ev->xhat[i]);
    }
    stetho_hooks_free(&ev->clean);
    void *all[] = {ev->ignore, ev->acc, ev->ctx, ev->edit, ev->xhat, ev->keep, ev->f, ev->logp_clean,
                   ev->logits, ev->row_val, ev->ce_sae, ev->ce_abl, ev->kl_sae, ev->kl_abl};
    for (size_t i = 0; i < ST_ARRAY_LEN(all); i++) st_free(all[i]);
    st_free(ev);
}

stetho_status stetho_sae_evaluator_init(stetho_sae_evaluator **out, stetho_model *m, const stetho_sae *const *saes,
                                        size_t n_saes, const int32_t *ignore_ids, size_t n_ignore, bool downstream) {
    *out = NULL;
    if (n_saes == 0) return st_err(STETHO_ERR_INVALID, "sae eval: no SAEs");
    for (size_t i = 0; i < n_saes; i++) {
        const stetho_sae *s = saes[i];
        const char *where = s->dir ? s->dir : "SAE";
        if (!s->hook[0]) return st_err(STETHO_ERR_INVALID, "%s: the SAE names no hook (set one with --hook)", where);
        int layer;
        stetho_hook_kind kind;
        stetho_status st = stetho_hook_parse(s->hook, &layer, &kind);
        if (st) return st_err_context(st, "%s", where);
        if (layer < 0 || layer >= m->cfg.n_layers)
            return st_err(STETHO_ERR_MISMATCH, "%s: hook %s is outside the model's layers 0-%d", where, s->hook,
                          m->cfg.n_layers - 1);
        if (s->d_model != m->cfg.hidden)
            return st_err(STETHO_ERR_MISMATCH, "%s: the SAE's d_model %d does not match the model's hidden size %d at "
                          "%s", where, s->d_model, m->cfg.hidden, s->hook);
    }
    stetho_sae_evaluator *ev = st_calloc(1, sizeof *ev);
    if (!ev) return STETHO_ERR_NOMEM;
    ev->model = m;
    ev->saes = saes;
    ev->downstream = downstream;
    stetho_hooks_init(&ev->clean);
    stetho_status st = STETHO_OK;
    int max_sae = 1;
    for (size_t i = 0; i < n_saes; i++) max_sae = saes[i]->d_sae > max_sae ? saes[i]->d_sae : max_sae;
    ev->acc = st_calloc(n_saes, sizeof *ev->acc);
    ev->ctx = st_calloc(n_saes, sizeof *ev->ctx);
    ev->edit = st_calloc(n_saes, sizeof *ev->edit);
    ev->xhat = st_calloc(n_saes, sizeof *ev->xhat);
    ev->f = st_malloc((size_t)EVAL_ROWS * (size_t)max_sae * sizeof *ev->f);
    ev->ce_sae = st_calloc(n_saes, sizeof(double));
    ev->ce_abl = st_calloc(n_saes, sizeof(double));
    ev->kl_sae = st_calloc(n_saes, sizeof(double));
    ev->kl_abl = st_calloc(n_saes, sizeof(double));
    ev->ignore = st_malloc((n_ignore ? n_ignore : 1) * sizeof *ev->ignore);
    if (!ev->acc || !ev->ctx || !ev->edit || !ev->xhat || !ev->f || !ev->ce_sae || !ev->ce_abl ||
        !ev->kl_sae || !ev->kl_abl || !ev->ignore) {
        stetho_sae_evaluator_free(ev);
        return STETHO_ERR_NOMEM;
    }
    if (n_ignore) memcpy(ev->ignore, ignore_ids, n_ignore * sizeof *ev->ignore);
    ev->n_ignore = n_ignore;
    for (size_t i = 0; i < n_saes && !st; i++, ev->n++) {
        ev->ctx[i] = (sae_ctx){ev, i};
        stetho_hooks_init(&ev->edit[i]);
        if (!(st = stetho_sae_recon_init(&ev->acc[i], saes[i]->d_model, saes[i]->d_sae)) &&
            !(st = stetho_hooks_add(&ev->clean, saes[i]->hook, capture_hook, &ev->ctx[i])))
            st = stetho_hooks_add_edit(&ev->edit[i], saes[i]->hook, edit_hook, &ev->ctx[i]);
    }
    if (st) {
        stetho_sae_evaluator_free(ev);
        return st;
    }
    *out = ev;
    return STETHO_OK;
}

static stetho_status grow(stetho_sae_evaluator *ev, int T) {
    if (T <= ev->cap_T) return STETHO_OK;
    size_t V = (size_t)ev->model->cfg.vocab, D = (size_t)ev->model->cfg.hidden, TT = (size_t)T;
    st_free(ev->keep), st_free(ev->logp_clean), st_free(ev->logits), st_free(ev->row_val);
    ev->keep = NULL, ev->logp_clean = ev->logits = NULL, ev->row_val = NULL;
    ev->cap_T = 0;
    size_t tv;
    if (!st_mul_size(TT, V, &tv) || tv > SIZE_MAX / sizeof(float))
        return st_err(STETHO_ERR_NOMEM, "sae eval: %d tokens x %zu vocabulary is too large", T, V);
    ev->keep = st_malloc(TT);
    ev->row_val = st_malloc(TT * sizeof *ev->row_val);
    if (ev->downstream) {
        ev->logp_clean = st_malloc(tv * sizeof(float));
        ev->logits = st_malloc(tv * sizeof(float));
    }
    if (!ev->keep || !ev->row_val || (ev->downstream && (!ev->logp_clean || !ev->logits))) return STETHO_ERR_NOMEM;
    for (size_t i = 0; i < ev->n; i++) {
        st_free(ev->xhat[i]);
        if (!(ev->xhat[i] = st_malloc(TT * D * sizeof(float)))) return STETHO_ERR_NOMEM;
    }
    ev->cap_T = T;
    return STETHO_OK;
}

/* Rows of logits [T, V] -> log-softmax in place. */
static void log_softmax_rows(float *x, int T, size_t V) {
    #pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++) {
        float *r = x + (size_t)t * V, mx = r[0];
        for (size_t v = 1; v < V; v++) mx = r[v] > mx ? r[v] : mx;
        double s = 0;
        for (size_t v = 0; v < V; v++) s += exp((double)r[v] - mx);
        float lse = (float)(mx + log(s));
        for (size_t v = 0; v < V; v++) r[v] -= lse;
    }
}

/* CE (over positions 0..T-2 predicting the next token) and KL(clean || new)
 * (over every position), summed over kept positions. */
static void score_logits(stetho_sae_evaluator *ev, float *logits, double *ce, double *kl) {
    int T = ev->T;
    size_t V = (size_t)ev->model->cfg.vocab;
    log_softmax_rows(logits, T, V);
    #pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++) {
        const float *q = logits + (size_t)t * V, *p = ev->logp_clean + (size_t)t * V;
        double s = 0;
        for (size_t v = 0; v < V; v++) s += exp((double)p[v]) * ((double)p[v] - q[v]);
        ev->row_val[t] = s;
    }
    double c = 0, k = 0;
    for (int t = 0; t < T; t++) {
        if (!ev->keep[t]) continue;
        k += ev->row_val[t];
        if (t + 1 < T) c -= logits[(size_t)t * V + (size_t)ev->tokens[t + 1]];
    }
    *ce += c;
    *kl += k;
}

stetho_status stetho_sae_evaluator_prompt(stetho_sae_evaluator *ev, const int32_t *tokens, int T) {
    if (T <= 0) return STETHO_OK;
    stetho_status st = grow(ev, T);
    if (st) return st;
    ev->T = T;
    ev->tokens = tokens;
    for (int t = 0; t < T; t++) {
        ev->keep[t] = 1;
        for (size_t i = 0; i < ev->n_ignore; i++)
            if (tokens[t] == ev->ignore[i]) ev->keep[t] = 0;
    }
    /* clean pass: reconstruction metrics and the reconstructions to splice */
    if ((st = stetho_model_forward(ev->model, tokens, T, ev->downstream ? ev->logp_clean : NULL, &ev->clean)))
        return st;
    if (!ev->downstream) return STETHO_OK;
    size_t V = (size_t)ev->model->cfg.vocab;
    log_softmax_rows(ev->logp_clean, T, V);
    uint64_t n_ce = 0, n_kl = 0;
    for (int t = 0; t < T; t++) {
        if (!ev->keep[t]) continue;
        n_kl++;
        if (t + 1 < T) {
            n_ce++;
            ev->ce_clean -= ev->logp_clean[(size_t)t * V + (size_t)tokens[t + 1]];
        }
    }
    for (size_t i = 0; i < ev->n; i++) {
        ev->zero = false;
        if ((st = stetho_model_forward(ev->model, tokens, T, ev->logits, &ev->edit[i]))) return st;
        score_logits(ev, ev->logits, &ev->ce_sae[i], &ev->kl_sae[i]);
        ev->zero = true;
        if ((st = stetho_model_forward(ev->model, tokens, T, ev->logits, &ev->edit[i]))) return st;
        score_logits(ev, ev->logits, &ev->ce_abl[i], &ev->kl_abl[i]);
    }
    ev->n_ce += n_ce;
    ev->n_kl += n_kl;
    return STETHO_OK;
}

void stetho_sae_evaluator_result(const stetho_sae_evaluator *ev, size_t i, stetho_sae_metrics *m) {
    stetho_sae_recon_result(&ev->acc[i], m);
    if (!ev->downstream || ev->n_ce == 0) return;
    m->n_ce_positions = ev->n_ce;
    m->ce_loss_without_sae = ev->ce_clean / (double)ev->n_ce;
    m->ce_loss_with_sae = ev->ce_sae[i] / (double)ev->n_ce;
    m->ce_loss_with_ablation = ev->ce_abl[i] / (double)ev->n_ce;
    double den = m->ce_loss_with_ablation - m->ce_loss_without_sae;
    m->ce_loss_score = den != 0 ? (m->ce_loss_with_ablation - m->ce_loss_with_sae) / den : NAN;
    m->kl_div_with_sae = ev->kl_sae[i] / (double)ev->n_kl;
    m->kl_div_with_ablation = ev->kl_abl[i] / (double)ev->n_kl;
    m->kl_div_score = m->kl_div_with_ablation != 0
                          ? (m->kl_div_with_ablation - m->kl_div_with_sae) / m->kl_div_with_ablation
                          : NAN;
}
