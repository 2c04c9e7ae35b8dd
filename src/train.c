/* Training of a Gemma 3 text model in f32: parameter layout and init, the
 * forward pass that keeps activations, the backward pass beside it, AdamW with
 * warm-up + cosine schedule and clipping, and saving as an HF directory.
 * Kernels (each forward next to its backward) are in train_kernels.c. */
#include "stetho/train.h"
#include "stetho/safetensors.h"
#include "internal.h"
#include "train_kernels.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void stetho_train_config_default(stetho_train_config *c) {
    *c = (stetho_train_config){
        .n_layers = 8, .hidden = 128, .intermediate = 512, .n_heads = 4, .n_kv_heads = 2, .head_dim = 32,
        .vocab = 512, .max_position = 1024, .sliding_window = 64, .sliding_window_pattern = 6,
        .rope_theta_global = 1e6, .rope_theta_local = 1e4, .query_pre_attn_scalar = 32, .rms_eps = 1e-6,
        .bos_token_id = 2, .eos_token_id = 1, .pad_token_id = 0,
    };
}

/* ---------------------------------------------------------------- parameters */

static stetho_status check_config(const stetho_train_config *c) {
    if (c->n_layers <= 0 || c->hidden <= 0 || c->intermediate <= 0 || c->n_heads <= 0 || c->n_kv_heads <= 0 ||
        c->head_dim <= 0 || c->vocab <= 0 || c->max_position <= 0 || c->sliding_window <= 0 ||
        c->sliding_window_pattern <= 0)
        return st_err(STETHO_ERR_INVALID, "train config: every size must be positive");
    if (c->head_dim % 2) return st_err(STETHO_ERR_INVALID, "train config: head_dim %d must be even", c->head_dim);
    if (c->n_heads % c->n_kv_heads)
        return st_err(STETHO_ERR_INVALID, "train config: %d heads are not a multiple of %d kv heads", c->n_heads,
                      c->n_kv_heads);
    if (!(c->rope_theta_global > 0) || !(c->rope_theta_local > 0) || !(c->query_pre_attn_scalar > 0) ||
        !(c->rms_eps > 0))
        return st_err(STETHO_ERR_INVALID, "train config: rope thetas, query_pre_attn_scalar and rms_eps must be > 0");
    /* sizes up to 2^20 keep every product below int and size_t limits */
    int dims[] = {c->n_layers, c->hidden, c->intermediate, c->n_heads * c->head_dim, c->vocab};
    for (size_t i = 0; i < ST_ARRAY_LEN(dims); i++)
        if (dims[i] > (1 << 20)) return st_err(STETHO_ERR_INVALID, "train config: a dimension exceeds 2^20");
    return STETHO_OK;
}

/* Lay out tensors in HF order; with m->params set, also point the views. */
static size_t layout(stetho_train_model *m) {
    const stetho_train_config *c = &m->cfg;
    size_t D = (size_t)c->hidden, hd = (size_t)c->head_dim, F = (size_t)c->intermediate;
    size_t Q = (size_t)c->n_heads * hd, KV = (size_t)c->n_kv_heads * hd;
    size_t off = 0, nt = 0;
#define ADD(layer_, kind_, r_, c_, fmt, ...)                                                            \
    do {                                                                                                \
        if (m->tensors) {                                                                               \
            stetho_train_tensor *t = &m->tensors[nt];                                                   \
            snprintf(t->name, sizeof t->name, fmt, __VA_ARGS__);                                        \
            t->kind = kind_;                                                                            \
            t->layer = layer_;                                                                          \
            t->ndim = (c_) ? 2 : 1;                                                                     \
            t->shape[0] = r_;                                                                           \
            t->shape[1] = c_;                                                                           \
            t->offset = off;                                                                            \
            t->n = (size_t)(r_) * ((c_) ? (size_t)(c_) : 1);                                            \
        }                                                                                               \
        off += (size_t)(r_) * ((c_) ? (size_t)(c_) : 1);                                                \
        nt++;                                                                                           \
    } while (0)
    ADD(-1, STETHO_TRAIN_EMBED, (size_t)c->vocab, D, "%s", "model.embed_tokens.weight");
    for (int l = 0; l < c->n_layers; l++) {
        ADD(l, STETHO_TRAIN_NORM, D, 0, "model.layers.%d.input_layernorm.weight", l);
        ADD(l, STETHO_TRAIN_MATRIX, Q, D, "model.layers.%d.self_attn.q_proj.weight", l);
        ADD(l, STETHO_TRAIN_MATRIX, KV, D, "model.layers.%d.self_attn.k_proj.weight", l);
        ADD(l, STETHO_TRAIN_MATRIX, KV, D, "model.layers.%d.self_attn.v_proj.weight", l);
        ADD(l, STETHO_TRAIN_MATRIX, D, Q, "model.layers.%d.self_attn.o_proj.weight", l);
        ADD(l, STETHO_TRAIN_NORM, hd, 0, "model.layers.%d.self_attn.q_norm.weight", l);
        ADD(l, STETHO_TRAIN_NORM, hd, 0, "model.layers.%d.self_attn.k_norm.weight", l);
        ADD(l, STETHO_TRAIN_NORM, D, 0, "model.layers.%d.post_attention_layernorm.weight", l);
        ADD(l, STETHO_TRAIN_NORM, D, 0, "model.layers.%d.pre_feedforward_layernorm.weight", l);
        ADD(l, STETHO_TRAIN_MATRIX, F, D, "model.layers.%d.mlp.gate_proj.weight", l);
        ADD(l, STETHO_TRAIN_MATRIX, F, D, "model.layers.%d.mlp.up_proj.weight", l);
        ADD(l, STETHO_TRAIN_MATRIX, D, F, "model.layers.%d.mlp.down_proj.weight", l);
        ADD(l, STETHO_TRAIN_NORM, D, 0, "model.layers.%d.post_feedforward_layernorm.weight", l);
    }
    ADD(-1, STETHO_TRAIN_NORM, D, 0, "%s", "model.norm.weight");
#undef ADD
    m->n_tensors = nt;
    return off;
}

/* Point a layer table at buffer base using the tensor views (13 per layer, after the embedding). */
static void point_layers(const stetho_train_model *m, float *base, stetho_train_layer *ly) {
    for (int l = 0; l < m->cfg.n_layers; l++) {
        const stetho_train_tensor *t = &m->tensors[1 + (size_t)l * 13];
        float **dst[] = {&ly[l].ln_in, &ly[l].wq, &ly[l].wk, &ly[l].wv, &ly[l].wo, &ly[l].q_norm, &ly[l].k_norm,
                         &ly[l].ln_post_attn, &ly[l].ln_pre_ffn, &ly[l].w_gate, &ly[l].w_up, &ly[l].w_down,
                         &ly[l].ln_post_ffn};
        for (size_t i = 0; i < 13; i++) *dst[i] = base + t[i].offset;
    }
}

/* splitmix64 and Box-Muller: the same numbers on every platform. */
static uint64_t rng_next(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double rng_normal(uint64_t *s) {
    double u1 = ((rng_next(s) >> 11) + 1.0) / 9007199254740993.0; /* (0, 1] */
    double u2 = (rng_next(s) >> 11) / 9007199254740992.0;
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

stetho_status stetho_train_model_init(stetho_train_model *m, const stetho_train_config *cfg, uint64_t seed) {
    memset(m, 0, sizeof *m);
    stetho_status st = check_config(cfg);
    if (st) return st;
    m->cfg = *cfg;
    size_t n = layout(m), bytes;
    if (!st_mul_size(n, sizeof(float), &bytes)) return st_err(STETHO_ERR_NOMEM, "train: model too large");
    m->tensors = st_calloc(m->n_tensors, sizeof *m->tensors);
    m->params = st_malloc(bytes);
    m->grads = st_calloc(n, sizeof(float));
    m->w = st_calloc((size_t)cfg->n_layers, sizeof *m->w);
    m->g = st_calloc((size_t)cfg->n_layers, sizeof *m->g);
    m->layer_sliding = st_calloc((size_t)cfg->n_layers, sizeof *m->layer_sliding);
    if (!m->tensors || !m->params || !m->grads || !m->w || !m->g || !m->layer_sliding) {
        stetho_train_model_free(m);
        return STETHO_ERR_NOMEM;
    }
    m->n_params = layout(m);
    point_layers(m, m->params, m->w);
    point_layers(m, m->grads, m->g);
    m->embed = m->params;
    m->g_embed = m->grads;
    m->final_norm = m->params + m->tensors[m->n_tensors - 1].offset;
    m->g_final_norm = m->grads + m->tensors[m->n_tensors - 1].offset;
    for (int l = 0; l < cfg->n_layers; l++) m->layer_sliding[l] = (l + 1) % cfg->sliding_window_pattern != 0;
    /* one stream in tensor order: the init does not depend on threads */
    uint64_t s = seed;
    for (size_t i = 0; i < m->n_tensors; i++) {
        const stetho_train_tensor *t = &m->tensors[i];
        float *p = m->params + t->offset;
        if (t->kind == STETHO_TRAIN_NORM) memset(p, 0, t->n * sizeof *p); /* (1 + w) = 1 */
        else
            for (size_t j = 0; j < t->n; j++) p[j] = (float)(0.02 * rng_normal(&s));
    }
    return STETHO_OK;
}

static void free_acts(stetho_train_model *m) {
    st_free(m->act_mem);
    st_free(m->grad_act_mem);
    st_free(m->acts);
    st_free(m->tokens);
    m->act_mem = m->grad_act_mem = NULL;
    m->acts = NULL;
    m->tokens = NULL;
    m->act_cap_bt = m->act_cap_p = 0;
    m->B = m->T = 0;
}

void stetho_train_model_free(stetho_train_model *m) {
    free_acts(m);
    st_free(m->params);
    st_free(m->grads);
    st_free(m->adam_m);
    st_free(m->adam_v);
    st_free(m->tensors);
    st_free(m->w);
    st_free(m->g);
    st_free(m->layer_sliding);
    memset(m, 0, sizeof *m);
}

const stetho_train_tensor *stetho_train_find(const stetho_train_model *m, const char *name) {
    for (size_t i = 0; i < m->n_tensors; i++)
        if (!strcmp(m->tensors[i].name, name)) return &m->tensors[i];
    return NULL;
}

/* ---------------------------------------------------------------- activations */

/* Carve n floats from *cur. */
static float *carve(float **cur, size_t n) {
    float *p = *cur;
    *cur += n;
    return p;
}

/* (Re)allocate activation and gradient buffers for B x T. */
static stetho_status ensure_acts(stetho_train_model *m, int B, int T) {
    if (m->act_mem && m->B == B && m->T == T) return STETHO_OK;
    free_acts(m);
    const stetho_train_config *c = &m->cfg;
    size_t D = (size_t)c->hidden, hd = (size_t)c->head_dim, F = (size_t)c->intermediate, V = (size_t)c->vocab;
    size_t nh = (size_t)c->n_heads, nkv = (size_t)c->n_kv_heads, Q = nh * hd, KV = nkv * hd, L = (size_t)c->n_layers;
    size_t BT = (size_t)B * (size_t)T, P, per_row = 6 * D + 3 * Q + 3 * KV + 3 * F + nh + nkv + 4;
    size_t layer_elems, total, grad_total, tables = 4 * (size_t)T * (hd / 2);
    bool ok = st_mul_size(BT, (size_t)T * nh, &P) && st_mul_size(BT, per_row, &layer_elems) &&
              st_add_size(layer_elems, P, &layer_elems) && st_mul_size(layer_elems, L, &total) &&
              st_add_size(total, BT * (2 * D + V + 3) + tables, &total) && total < ((size_t)1 << 40);
    ok = ok && st_mul_size(BT, 4 * D + 2 * Q + 2 * KV + 2 * F + V, &grad_total) &&
         st_add_size(grad_total, P, &grad_total);
    if (!ok) return st_err(STETHO_ERR_NOMEM, "train: activations of %d x %d tokens are too large", B, T);
    m->act_mem = st_malloc(total * sizeof(float));
    m->grad_act_mem = st_malloc(grad_total * sizeof(float));
    m->acts = st_calloc(L, sizeof *m->acts);
    m->tokens = st_malloc(2 * BT * sizeof(int32_t));
    if (!m->act_mem || !m->grad_act_mem || !m->acts || !m->tokens) {
        free_acts(m);
        return STETHO_ERR_NOMEM;
    }
    m->targets = m->tokens + BT;
    float *cur = m->act_mem;
    for (size_t l = 0; l < L; l++) {
        stetho_train_layer_acts *a = &m->acts[l];
        a->x = carve(&cur, BT * D);
        a->xn1 = carve(&cur, BT * D);
        a->r1 = carve(&cur, BT);
        a->q = carve(&cur, BT * Q);
        a->k = carve(&cur, BT * KV);
        a->rq = carve(&cur, BT * nh);
        a->rk = carve(&cur, BT * nkv);
        a->qr = carve(&cur, BT * Q);
        a->kr = carve(&cur, BT * KV);
        a->v = carve(&cur, BT * KV);
        a->p = carve(&cur, P);
        a->att = carve(&cur, BT * Q);
        a->ao = carve(&cur, BT * D);
        a->r_pa = carve(&cur, BT);
        a->x1 = carve(&cur, BT * D);
        a->xn2 = carve(&cur, BT * D);
        a->r2 = carve(&cur, BT);
        a->gate = carve(&cur, BT * F);
        a->up = carve(&cur, BT * F);
        a->h = carve(&cur, BT * F);
        a->mo = carve(&cur, BT * D);
        a->r_pf = carve(&cur, BT);
    }
    m->xL = carve(&cur, BT * D);
    m->xf = carve(&cur, BT * D);
    m->rf = carve(&cur, BT);
    m->logits = carve(&cur, BT * V);
    m->row_loss = carve(&cur, BT);
    m->mask = carve(&cur, BT);
    m->cos_g = carve(&cur, (size_t)T * (hd / 2));
    m->sin_g = carve(&cur, (size_t)T * (hd / 2));
    m->cos_l = carve(&cur, (size_t)T * (hd / 2));
    m->sin_l = carve(&cur, (size_t)T * (hd / 2));
    cur = m->grad_act_mem;
    m->d_x = carve(&cur, BT * D);
    m->d_xn = carve(&cur, BT * D);
    m->d_ao = carve(&cur, BT * D);
    m->d_mo = carve(&cur, BT * D);
    m->d_q = carve(&cur, BT * Q);
    m->d_att = carve(&cur, BT * Q);
    m->d_k = carve(&cur, BT * KV);
    m->d_v = carve(&cur, BT * KV);
    m->d_gate = carve(&cur, BT * F);
    m->d_up = carve(&cur, BT * F);
    m->d_logits = carve(&cur, BT * V);
    m->d_p = carve(&cur, P);
    m->act_cap_bt = BT;
    m->act_cap_p = P;
    m->B = B;
    m->T = T;
    tk_rope_tables(m->cos_g, m->sin_g, T, (int)hd, c->rope_theta_global);
    tk_rope_tables(m->cos_l, m->sin_l, T, (int)hd, c->rope_theta_local);
    return STETHO_OK;
}

static void add_into(float *y, const float *x, size_t n) {
    #pragma omp parallel for schedule(static)
    for (long i = 0; i < (long)n; i++) y[i] += x[i];
}

/* ---------------------------------------------------------------- forward */

stetho_status stetho_train_forward(stetho_train_model *m, const int32_t *tokens, const int32_t *targets,
                                   const float *mask, int B, int T, float *loss) {
    const stetho_train_config *c = &m->cfg;
    if (B <= 0 || T <= 0) return st_err(STETHO_ERR_INVALID, "train forward: empty batch (%d x %d)", B, T);
    if (T > c->max_position)
        return st_err(STETHO_ERR_INVALID, "train forward: %d tokens exceed max_position %d", T, c->max_position);
    if ((size_t)B * (size_t)T > ((size_t)1 << 28))
        return st_err(STETHO_ERR_INVALID, "train forward: batch of %d x %d is too large", B, T);
    int BT = B * T, D = c->hidden, hd = c->head_dim, nh = c->n_heads, nkv = c->n_kv_heads, F = c->intermediate;
    int Q = nh * hd, KV = nkv * hd, V = c->vocab;
    for (int i = 0; i < BT; i++) {
        if (tokens[i] < 0 || tokens[i] >= V)
            return st_err(STETHO_ERR_INVALID, "train forward: token %d at %d is outside the vocabulary (0-%d)",
                          (int)tokens[i], i, V - 1);
        if (targets && (targets[i] < 0 || targets[i] >= V))
            return st_err(STETHO_ERR_INVALID, "train forward: target %d at %d is outside the vocabulary (0-%d)",
                          (int)targets[i], i, V - 1);
        if (mask && !(mask[i] >= 0 && isfinite(mask[i])))
            return st_err(STETHO_ERR_INVALID, "train forward: loss mask at %d is not a finite value >= 0", i);
    }
    stetho_status st = ensure_acts(m, B, T);
    if (st) return st;
    int blas_threads = st_blas_single_thread();
    memcpy(m->tokens, tokens, (size_t)BT * sizeof *tokens);
    m->have_loss = false;

    /* embeddings * sqrt(D), the f32 normaliser HF multiplies by */
    float escale = (float)sqrt((double)D);
    float *x0 = m->acts[0].x; /* [BT, D] */
    #pragma omp parallel for schedule(static)
    for (int i = 0; i < BT; i++)
        for (int j = 0; j < D; j++) x0[(size_t)i * D + j] = m->embed[(size_t)tokens[i] * D + j] * escale;

    float scale = (float)(1.0 / sqrt(c->query_pre_attn_scalar));
    for (int l = 0; l < c->n_layers; l++) {
        const stetho_train_layer *w = &m->w[l];
        stetho_train_layer_acts *a = &m->acts[l];
        float *x_out = l + 1 < c->n_layers ? m->acts[l + 1].x : m->xL; /* [BT, D] */
        bool sliding = m->layer_sliding[l];
        const float *cs = sliding ? m->cos_l : m->cos_g, *sn = sliding ? m->sin_l : m->sin_g;

        /* attention block: x1 = x + post_attn_norm(o_proj(attn(rope(qk_norm(proj(norm(x))))))) */
        tk_rmsnorm_fwd(a->xn1, a->r1, a->x, w->ln_in, BT, D, c->rms_eps);
        tk_linear_fwd(a->q, a->xn1, w->wq, BT, D, Q);
        tk_linear_fwd(a->k, a->xn1, w->wk, BT, D, KV);
        tk_linear_fwd(a->v, a->xn1, w->wv, BT, D, KV);
        tk_rmsnorm_fwd(a->qr, a->rq, a->q, w->q_norm, BT * nh, hd, c->rms_eps);
        tk_rmsnorm_fwd(a->kr, a->rk, a->k, w->k_norm, BT * nkv, hd, c->rms_eps);
        tk_rope_fwd(a->qr, B, T, nh, hd, cs, sn);
        tk_rope_fwd(a->kr, B, T, nkv, hd, cs, sn);
        tk_attention_fwd(a->att, a->p, a->qr, a->kr, a->v, B, T, nh, nkv, hd, scale, sliding ? c->sliding_window : 0);
        tk_linear_fwd(a->ao, a->att, w->wo, BT, Q, D);
        tk_rmsnorm_fwd(a->x1, a->r_pa, a->ao, w->ln_post_attn, BT, D, c->rms_eps);
        add_into(a->x1, a->x, (size_t)BT * D);

        /* MLP block: x_out = x1 + post_ffn_norm(down(gelu(gate(n)) * up(n))), n = pre_ffn_norm(x1) */
        tk_rmsnorm_fwd(a->xn2, a->r2, a->x1, w->ln_pre_ffn, BT, D, c->rms_eps);
        tk_linear_fwd(a->gate, a->xn2, w->w_gate, BT, D, F);
        tk_linear_fwd(a->up, a->xn2, w->w_up, BT, D, F);
        tk_geglu_fwd(a->h, a->gate, a->up, (size_t)BT * F);
        tk_linear_fwd(a->mo, a->h, w->w_down, BT, F, D);
        tk_rmsnorm_fwd(x_out, a->r_pf, a->mo, w->ln_post_ffn, BT, D, c->rms_eps);
        add_into(x_out, a->x1, (size_t)BT * D);
    }
    tk_rmsnorm_fwd(m->xf, m->rf, m->xL, m->final_norm, BT, D, c->rms_eps);
    tk_linear_fwd(m->logits, m->xf, m->embed, BT, D, V); /* tied unembedding */
    st_blas_restore(blas_threads);

    if (!targets) return STETHO_OK;
    memcpy(m->targets, targets, (size_t)BT * sizeof *targets);
    double msum = 0, lsum = 0;
    for (int i = 0; i < BT; i++) {
        m->mask[i] = mask ? mask[i] : 1.0f;
        msum += m->mask[i];
    }
    if (!(msum > 0)) return st_err(STETHO_ERR_INVALID, "train forward: the loss mask selects no position");
    tk_xent_fwd(m->row_loss, m->logits, m->targets, BT, V);
    for (int i = 0; i < BT; i++) lsum += (double)m->mask[i] * m->row_loss[i]; /* in order: deterministic */
    m->mask_sum = msum;
    m->have_loss = true;
    if (loss) *loss = (float)(lsum / msum);
    return STETHO_OK;
}

/* ---------------------------------------------------------------- backward */

stetho_status stetho_train_backward(stetho_train_model *m) {
    if (!m->have_loss) return st_err(STETHO_ERR_INVALID, "train backward: the last forward had no targets");
    const stetho_train_config *c = &m->cfg;
    int B = m->B, T = m->T, BT = B * T, D = c->hidden, hd = c->head_dim, nh = c->n_heads, nkv = c->n_kv_heads;
    int F = c->intermediate, Q = nh * hd, KV = nkv * hd, V = c->vocab;
    int blas_threads = st_blas_single_thread();
    memset(m->grads, 0, m->n_params * sizeof *m->grads);

    /* loss -> logits -> final norm (tied unembedding: the embedding gets both uses) */
    tk_xent_bwd(m->d_logits, m->logits, m->targets, m->mask, 1.0 / m->mask_sum, BT, V);
    tk_linear_bwd(m->d_xn, false, m->g_embed, m->d_logits, m->xf, m->embed, BT, D, V);
    tk_rmsnorm_bwd(m->d_x, false, m->g_final_norm, m->d_xn, m->xL, m->rf, m->final_norm, BT, D);

    float scale = (float)(1.0 / sqrt(c->query_pre_attn_scalar));
    for (int l = c->n_layers - 1; l >= 0; l--) {
        const stetho_train_layer *w = &m->w[l];
        const stetho_train_layer *g = &m->g[l];
        const stetho_train_layer_acts *a = &m->acts[l];
        bool sliding = m->layer_sliding[l];
        const float *cs = sliding ? m->cos_l : m->cos_g, *sn = sliding ? m->sin_l : m->sin_g;
        /* d_x holds d loss / d x_out; it flows unchanged into x1 through the residual */

        /* MLP block */
        tk_rmsnorm_bwd(m->d_mo, false, g->ln_post_ffn, m->d_x, a->mo, a->r_pf, w->ln_post_ffn, BT, D);
        tk_linear_bwd(m->d_gate, false, g->w_down, m->d_mo, a->h, w->w_down, BT, F, D); /* d_gate = d h */
        tk_geglu_bwd(m->d_gate, m->d_up, m->d_gate, a->gate, a->up, (size_t)BT * F);
        tk_linear_bwd(m->d_xn, false, g->w_gate, m->d_gate, a->xn2, w->w_gate, BT, D, F);
        tk_linear_bwd(m->d_xn, true, g->w_up, m->d_up, a->xn2, w->w_up, BT, D, F);
        tk_rmsnorm_bwd(m->d_x, true, g->ln_pre_ffn, m->d_xn, a->x1, a->r2, w->ln_pre_ffn, BT, D);
        /* d_x now d loss / d x1, which flows unchanged into x */

        /* attention block */
        tk_rmsnorm_bwd(m->d_ao, false, g->ln_post_attn, m->d_x, a->ao, a->r_pa, w->ln_post_attn, BT, D);
        tk_linear_bwd(m->d_att, false, g->wo, m->d_ao, a->att, w->wo, BT, Q, D);
        tk_attention_bwd(m->d_q, m->d_k, m->d_v, m->d_p, m->d_att, a->p, a->qr, a->kr, a->v, B, T, nh, nkv, hd,
                         scale);
        tk_rope_bwd(m->d_q, B, T, nh, hd, cs, sn);
        tk_rope_bwd(m->d_k, B, T, nkv, hd, cs, sn);
        tk_rmsnorm_bwd(m->d_q, false, g->q_norm, m->d_q, a->q, a->rq, w->q_norm, BT * nh, hd);
        tk_rmsnorm_bwd(m->d_k, false, g->k_norm, m->d_k, a->k, a->rk, w->k_norm, BT * nkv, hd);
        tk_linear_bwd(m->d_xn, false, g->wq, m->d_q, a->xn1, w->wq, BT, D, Q);
        tk_linear_bwd(m->d_xn, true, g->wk, m->d_k, a->xn1, w->wk, BT, D, KV);
        tk_linear_bwd(m->d_xn, true, g->wv, m->d_v, a->xn1, w->wv, BT, D, KV);
        tk_rmsnorm_bwd(m->d_x, true, g->ln_in, m->d_xn, a->x, a->r1, w->ln_in, BT, D);
    }

    /* embedding rows: per column, tokens in order, so repeated tokens add deterministically */
    float escale = (float)sqrt((double)D);
    #pragma omp parallel for schedule(static)
    for (int j = 0; j < D; j++)
        for (int i = 0; i < BT; i++) m->g_embed[(size_t)m->tokens[i] * D + j] += m->d_x[(size_t)i * D + j] * escale;
    st_blas_restore(blas_threads);
    return STETHO_OK;
}

/* ---------------------------------------------------------------- AdamW */

void stetho_train_opt_default(stetho_train_opt *o) {
    *o = (stetho_train_opt){.lr = 1e-3, .min_lr = 1e-4, .warmup_steps = 100, .total_steps = 1000, .beta1 = 0.9,
                            .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1, .grad_clip = 1.0};
}

double stetho_train_lr(const stetho_train_opt *o, int64_t step) {
    if (step < o->warmup_steps) return o->lr * (double)(step + 1) / (double)o->warmup_steps;
    int64_t span = o->total_steps - o->warmup_steps;
    double p = span > 0 ? (double)(step - o->warmup_steps) / (double)span : 1.0;
    if (p > 1) p = 1;
    return o->min_lr + 0.5 * (o->lr - o->min_lr) * (1.0 + cos(M_PI * p));
}

static bool frozen(const stetho_train_opt *o, const stetho_train_tensor *t) {
    return o->freeze_embed_final_norm && t->layer < 0;
}

stetho_status stetho_train_step(stetho_train_model *m, const stetho_train_opt *o, double *grad_norm) {
    if (!(o->lr >= 0) || !(o->min_lr >= 0) || !(o->beta1 >= 0 && o->beta1 < 1) || !(o->beta2 >= 0 && o->beta2 < 1) ||
        !(o->eps > 0) || !(o->weight_decay >= 0) || o->warmup_steps < 0)
        return st_err(STETHO_ERR_INVALID, "train step: bad optimizer settings");
    if (!m->adam_m) {
        m->adam_m = st_calloc(m->n_params, sizeof(float));
        m->adam_v = st_calloc(m->n_params, sizeof(float));
        if (!m->adam_m || !m->adam_v) return STETHO_ERR_NOMEM;
    }
    /* global norm over the trained tensors: each tensor summed in order, then in tensor order */
    double *sq = st_calloc(m->n_tensors, sizeof *sq);
    if (!sq) return STETHO_ERR_NOMEM;
    #pragma omp parallel for schedule(dynamic)
    for (long i = 0; i < (long)m->n_tensors; i++) {
        const stetho_train_tensor *t = &m->tensors[i];
        if (frozen(o, t)) continue;
        const float *gp = m->grads + t->offset;
        double s = 0;
        for (size_t j = 0; j < t->n; j++) s += (double)gp[j] * gp[j];
        sq[i] = s;
    }
    double total = 0;
    for (size_t i = 0; i < m->n_tensors; i++) total += sq[i];
    st_free(sq);
    double norm = sqrt(total);
    if (grad_norm) *grad_norm = norm;
    if (!isfinite(norm)) return st_err(STETHO_ERR_INVALID, "train step: the gradient is not finite");
    float clip = o->grad_clip > 0 && norm > o->grad_clip ? (float)(o->grad_clip / norm) : 1.0f;

    double lr = stetho_train_lr(o, (int64_t)m->step);
    m->step++;
    double bc1 = 1.0 - pow(o->beta1, (double)m->step), bc2 = 1.0 - pow(o->beta2, (double)m->step);
    float b1 = (float)o->beta1, b2 = (float)o->beta2, eps = (float)o->eps;
    for (size_t i = 0; i < m->n_tensors; i++) {
        const stetho_train_tensor *t = &m->tensors[i];
        if (frozen(o, t)) continue;
        bool decay = t->kind == STETHO_TRAIN_MATRIX || o->decay_embed_norms;
        float wd = decay ? (float)(lr * o->weight_decay) : 0.0f;
        float step_m = (float)(lr / bc1), inv_bc2 = (float)(1.0 / bc2);
        float *p = m->params + t->offset, *gp = m->grads + t->offset;
        float *mm = m->adam_m + t->offset, *vv = m->adam_v + t->offset;
        #pragma omp parallel for schedule(static)
        for (long j = 0; j < (long)t->n; j++) {
            float gr = gp[j] * clip;
            mm[j] = b1 * mm[j] + (1.0f - b1) * gr;
            vv[j] = b2 * vv[j] + (1.0f - b2) * gr * gr;
            /* decoupled decay: p -= lr (m_hat / (sqrt(v_hat) + eps) + wd p) */
            p[j] -= step_m * mm[j] / (sqrtf(vv[j] * inv_bc2) + eps) + wd * p[j];
        }
    }
    return STETHO_OK;
}

/* ---------------------------------------------------------------- saving */

static stetho_status write_config(const stetho_train_model *m, const char *dir, stetho_dtype dtype) {
    const stetho_train_config *c = &m->cfg;
    json_t *o = json_object(), *arch = json_array(), *lt = json_array();
    if (!o || !arch || !lt) {
        json_decref(o);
        json_decref(arch);
        json_decref(lt);
        return st_err(STETHO_ERR_NOMEM, "out of memory for config.json");
    }
    json_array_append_new(arch, json_string("Gemma3ForCausalLM"));
    for (int l = 0; l < c->n_layers; l++)
        json_array_append_new(lt, json_string(m->layer_sliding[l] ? "sliding_attention" : "full_attention"));
    json_object_set_new(o, "architectures", arch);
    json_object_set_new(o, "model_type", json_string("gemma3_text"));
    json_object_set_new(o, "torch_dtype", json_string(dtype == STETHO_DTYPE_BF16 ? "bfloat16" : "float32"));
    json_object_set_new(o, "vocab_size", json_integer(c->vocab));
    json_object_set_new(o, "hidden_size", json_integer(c->hidden));
    json_object_set_new(o, "intermediate_size", json_integer(c->intermediate));
    json_object_set_new(o, "num_hidden_layers", json_integer(c->n_layers));
    json_object_set_new(o, "num_attention_heads", json_integer(c->n_heads));
    json_object_set_new(o, "num_key_value_heads", json_integer(c->n_kv_heads));
    json_object_set_new(o, "head_dim", json_integer(c->head_dim));
    json_object_set_new(o, "max_position_embeddings", json_integer(c->max_position));
    json_object_set_new(o, "rms_norm_eps", json_real(c->rms_eps));
    json_object_set_new(o, "rope_theta", json_real(c->rope_theta_global));
    json_object_set_new(o, "rope_local_base_freq", json_real(c->rope_theta_local));
    json_object_set_new(o, "rope_scaling", json_null());
    json_object_set_new(o, "sliding_window", json_integer(c->sliding_window));
    json_object_set_new(o, "sliding_window_pattern", json_integer(c->sliding_window_pattern));
    json_object_set_new(o, "layer_types", lt);
    json_object_set_new(o, "query_pre_attn_scalar", json_real(c->query_pre_attn_scalar));
    json_object_set_new(o, "hidden_activation", json_string("gelu_pytorch_tanh"));
    json_object_set_new(o, "attention_bias", json_false());
    json_object_set_new(o, "attention_dropout", json_real(0.0));
    json_object_set_new(o, "attn_logit_softcapping", json_null());
    json_object_set_new(o, "final_logit_softcapping", json_null());
    json_object_set_new(o, "tie_word_embeddings", json_true());
    json_object_set_new(o, "initializer_range", json_real(0.02));
    json_object_set_new(o, "use_cache", json_true());
    if (c->bos_token_id >= 0) json_object_set_new(o, "bos_token_id", json_integer(c->bos_token_id));
    if (c->eos_token_id >= 0) json_object_set_new(o, "eos_token_id", json_integer(c->eos_token_id));
    if (c->pad_token_id >= 0) json_object_set_new(o, "pad_token_id", json_integer(c->pad_token_id));
    char *text = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
    json_decref(o);
    if (!text) return st_err(STETHO_ERR_NOMEM, "out of memory for config.json");

    char path[4096], tmp[4200];
    snprintf(path, sizeof path, "%s/config.json", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    stetho_status st = STETHO_OK;
    if (!f) {
        st = st_err(STETHO_ERR_IO, "%s: %s", tmp, strerror(errno));
    } else {
        size_t len = strlen(text);
        bool ok = !st_fault_write_fires() && fwrite(text, 1, len, f) == len && fputc('\n', f) != EOF;
        int err = ok ? 0 : errno ? errno : ENOSPC;
        if (fclose(f) != 0 && ok) {
            ok = false;
            err = errno;
        }
        if (!ok || rename(tmp, path) != 0) {
            st = st_err(STETHO_ERR_IO, "%s: %s", path, strerror(ok ? errno : err));
            remove(tmp);
        }
    }
    free(text); /* jansson's allocator */
    return st;
}

stetho_status stetho_train_save(const stetho_train_model *m, const char *dir, stetho_dtype dtype) {
    if (dtype != STETHO_DTYPE_F32 && dtype != STETHO_DTYPE_BF16)
        return st_err(STETHO_ERR_INVALID, "train save: dtype %s (F32 or BF16 only)", stetho_dtype_name(dtype));
    if (strlen(dir) > 3000) return st_err(STETHO_ERR_INVALID, "train save: path too long");
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) return st_err(STETHO_ERR_IO, "%s: %s", dir, strerror(errno));
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    stetho_st_writer wr;
    stetho_status st = stetho_st_writer_init(&wr, path);
    if (st) return st;
    size_t maxn = 0;
    for (size_t i = 0; i < m->n_tensors && !st; i++) {
        const stetho_train_tensor *t = &m->tensors[i];
        st = stetho_st_writer_declare(&wr, t->name, dtype, t->ndim, t->shape);
        if (t->n > maxn) maxn = t->n;
    }
    if (!st) st = stetho_st_writer_set_meta(&wr, "format", "pt");
    uint16_t *buf = NULL;
    if (!st && dtype == STETHO_DTYPE_BF16 && !(buf = st_malloc(maxn * sizeof *buf))) st = STETHO_ERR_NOMEM;
    for (size_t i = 0; i < m->n_tensors && !st; i++) {
        const stetho_train_tensor *t = &m->tensors[i];
        if (dtype == STETHO_DTYPE_F32) {
            st = stetho_st_writer_write(&wr, m->params + t->offset, t->n * sizeof(float));
        } else {
            st = stetho_convert_from_f32(buf, dtype, m->params + t->offset, t->n);
            if (!st) st = stetho_st_writer_write(&wr, buf, t->n * sizeof *buf);
        }
    }
    st_free(buf);
    if (st) {
        stetho_st_writer_abort(&wr);
        return st;
    }
    if ((st = stetho_st_writer_finish(&wr))) return st;
    return write_config(m, dir, dtype);
}

stetho_status stetho_train_load_params(stetho_train_model *m, const char *dir) {
    char *path = st_path_join(dir, "model.safetensors");
    if (!path) return STETHO_ERR_NOMEM;
    stetho_st_file f;
    stetho_status st = stetho_st_open(&f, path);
    bool opened = !st;
    float *tmp = st ? NULL : st_malloc(m->n_params * sizeof *tmp);
    if (!st && !tmp) st = STETHO_ERR_NOMEM;
    for (size_t i = 0; i < m->n_tensors && !st; i++) {
        const stetho_train_tensor *t = &m->tensors[i];
        const stetho_tensor *src = stetho_st_find(&f, t->name);
        if (!src) {
            st = st_err(STETHO_ERR_NOTFOUND, "%s: no tensor %s", path, t->name);
            break;
        }
        bool same = src->ndim == t->ndim;
        for (int d = 0; same && d < t->ndim; d++) same = src->shape[d] == t->shape[d];
        if (!same) {
            st = st_err(STETHO_ERR_MISMATCH, "%s: %s has another shape than the model's", path, t->name);
            break;
        }
        if (src->dtype != STETHO_DTYPE_F32 && src->dtype != STETHO_DTYPE_BF16) {
            st = st_err(STETHO_ERR_UNSUPPORTED, "%s: %s is %s (F32 or BF16 only)", path, t->name,
                        stetho_dtype_name(src->dtype));
            break;
        }
        st = stetho_convert_to_f32(tmp + t->offset, src->data, src->dtype, t->n);
    }
    if (!st) memcpy(m->params, tmp, m->n_params * sizeof *tmp);
    st_free(tmp);
    if (opened) stetho_st_close(&f);
    st_free(path);
    return st;
}
