/* The forward pass against independent references (../shared/reference/models:
 * float64 HF-semantics numpy and llama.cpp logits and residual streams), plus
 * generated Gemma 2 / Qwen2 / Llama models for what the references lack, hook
 * semantics and bad input. */
#include "testutil.h"

#include "stetho/model.h"
#include "stetho/safetensors.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Max abs difference allowed against the f64 references. The references agree
 * with each other to <= 5e-6; the smallest mistake their REFERENCE.md files list
 * (rope scaling ignored) moves logits by 0.93, an off-by-one window by > 2. */
#define TOL_LOGITS 1e-4
#define TOL_RESID 1e-4

typedef struct {
    int n_layers, T, D;
    float **pre, **post, **attn, **mlp; /* [n_layers][T * D] */
} capture;

static stetho_status keep(void *user, int layer, stetho_hook_kind kind, const float *data, int T, int D) {
    capture *c = user;
    assert_int_equal(T, c->T);
    assert_int_equal(D, c->D);
    float **dst = kind == STETHO_HOOK_RESID_PRE ? c->pre : kind == STETHO_HOOK_RESID_POST ? c->post
                  : kind == STETHO_HOOK_ATTN_OUT ? c->attn : c->mlp;
    assert_null(dst[layer]); /* each hook fires once per layer */
    dst[layer] = malloc((size_t)T * D * sizeof(float));
    memcpy(dst[layer], data, (size_t)T * D * sizeof(float));
    return STETHO_OK;
}

static void capture_init(capture *c, stetho_hooks *h, int n_layers, int T, int D) {
    c->n_layers = n_layers;
    c->T = T;
    c->D = D;
    c->pre = calloc((size_t)n_layers, sizeof(float *));
    c->post = calloc((size_t)n_layers, sizeof(float *));
    c->attn = calloc((size_t)n_layers, sizeof(float *));
    c->mlp = calloc((size_t)n_layers, sizeof(float *));
    stetho_hooks_init(h);
    assert_int_equal(stetho_hooks_add(h, "blocks.*.hook_resid_pre", keep, c), STETHO_OK);
    assert_int_equal(stetho_hooks_add(h, "blocks.*.hook_resid_post", keep, c), STETHO_OK);
    assert_int_equal(stetho_hooks_add(h, "blocks.*.hook_attn_out", keep, c), STETHO_OK);
    assert_int_equal(stetho_hooks_add(h, "blocks.*.hook_mlp_out", keep, c), STETHO_OK);
}

static void capture_free(capture *c) {
    for (int l = 0; l < c->n_layers; l++) {
        free(c->pre[l]);
        free(c->post[l]);
        free(c->attn[l]);
        free(c->mlp[l]);
    }
    free(c->pre);
    free(c->post);
    free(c->attn);
    free(c->mlp);
}

static double max_abs_diff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= m)) m = d; /* NaN propagates as a failure */
    }
    return m;
}

static int read_tokens(const char *path, int32_t *out, int cap) {
    char *text = tu_read_file(path, NULL);
    assert_non_null(text);
    int n = 0;
    for (char *p = text; *p && n < cap;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p) break;
        out[n++] = (int32_t)v;
        p = end;
        while (*p == ',' || *p == ' ' || *p == '\n') p++;
    }
    free(text);
    return n;
}

static void check_reference(const char *name) {
    char rel[256];
    snprintf(rel, sizeof rel, "reference/models/%s", name);
    const char *shared = tu_shared(rel);
    if (!shared) {
        print_message("skipping %s: ../shared/reference/models not found\n", name);
        skip();
    }
    const char *dir = tu_path(shared, rel);
    stetho_model m;
    stetho_status st = stetho_model_load(&m, dir);
    if (st) print_message("%s\n", stetho_last_error());
    assert_int_equal(st, STETHO_OK);
    int32_t tokens[512];
    int T = read_tokens(tu_path(dir, "tokens.txt"), tokens, 512);
    assert_true(T > m.cfg.sliding_window); /* the window is exercised */
    int V = m.cfg.vocab, D = m.cfg.hidden, L = m.cfg.n_layers;
    float *logits = malloc((size_t)T * V * sizeof(float));
    capture cap;
    stetho_hooks hooks;
    capture_init(&cap, &hooks, L, T, D);
    assert_int_equal(stetho_model_forward(&m, tokens, T, logits, &hooks), STETHO_OK);

    stetho_st_file ref;
    assert_int_equal(stetho_st_open(&ref, tu_path(dir, "reference.safetensors")), STETHO_OK);
    const stetho_tensor *rt = stetho_st_find(&ref, "tokens");
    assert_non_null(rt);
    assert_int_equal(rt->n_elements, (uint64_t)T);
    assert_memory_equal(rt->data, tokens, (size_t)T * 4);
    const stetho_tensor *rl = stetho_st_find(&ref, "logits");
    assert_non_null(rl);
    assert_int_equal(rl->n_elements, (uint64_t)T * V);
    double dl = max_abs_diff(logits, rl->data, (size_t)T * V);
    double dr = 0;
    for (int l = 0; l < L; l++) {
        for (int post = 0; post < 2; post++) {
            char tn[64];
            snprintf(tn, sizeof tn, "blocks.%d.hook_resid_%s", l, post ? "post" : "pre");
            const stetho_tensor *t = stetho_st_find(&ref, tn);
            assert_non_null(t);
            assert_int_equal(t->n_elements, (uint64_t)T * D);
            float *mine = post ? cap.post[l] : cap.pre[l];
            assert_non_null(mine);
            double d = max_abs_diff(mine, t->data, (size_t)T * D);
            if (d > dr) dr = d;
        }
        /* resid_post = resid_pre + attn_out + mlp_out, and feeds the next layer */
        for (size_t i = 0; i < (size_t)T * D; i++)
            assert_true(fabsf(cap.pre[l][i] + cap.attn[l][i] + cap.mlp[l][i] - cap.post[l][i]) <=
                        1e-5f * (1 + fabsf(cap.post[l][i])));
        if (l + 1 < L) assert_memory_equal(cap.post[l], cap.pre[l + 1], (size_t)T * D * sizeof(float));
    }
    double dc = -1;
    const char *lc = tu_path(dir, "logits_llamacpp.f32");
    if (tu_exists(lc)) {
        size_t len;
        char *buf = tu_read_file(lc, &len);
        assert_int_equal(len, (size_t)T * V * 4);
        dc = max_abs_diff(logits, (const float *)buf, (size_t)T * V);
        free(buf);
    }
    print_message("%-26s tokens %2d  max|dlogits| %.3e  max|dresid| %.3e  max|dlogits llama.cpp| %s%.3e\n", name, T,
                  dl, dr, dc < 0 ? "(none) " : "", dc < 0 ? 0.0 : dc);
    assert_true(dl <= TOL_LOGITS);
    assert_true(dr <= TOL_RESID);
    if (dc >= 0) assert_true(dc <= TOL_LOGITS);
    if (m.layers[0].wq->dtype == STETHO_DTYPE_BF16) {
        /* bf16 compute (activations rounded at every product): within bf16's
         * precision of the reference, and really rounded (not equal to f32) */
        float *l16 = malloc((size_t)T * V * sizeof(float));
        stetho_set_compute(STETHO_COMPUTE_BF16);
        assert_int_equal(stetho_model_forward(&m, tokens, T, l16, NULL), STETHO_OK);
        stetho_set_compute(STETHO_COMPUTE_F32);
        const float *r = rl->data;
        double lo = r[0], hi = r[0];
        for (size_t i = 0; i < (size_t)T * V; i++) lo = fmin(lo, r[i]), hi = fmax(hi, r[i]);
        double d16 = max_abs_diff(l16, rl->data, (size_t)T * V);
        print_message("%-26s bf16 compute: max|dlogits| %.3e = %.2e of the logit range\n", name, d16, d16 / (hi - lo));
        assert_true(d16 > TOL_LOGITS && d16 <= 2e-2 * (hi - lo));
        free(l16);
    }
    stetho_st_close(&ref);
    capture_free(&cap);
    stetho_hooks_free(&hooks);
    free(logits);
    stetho_model_free(&m);
}

static void test_ref_gemma3_4l_swa2_bf16(void **s) { (void)s; check_reference("gemma3-4l-swa2-bf16"); }
static void test_ref_gemma3_6l_swa6_f32(void **s) { (void)s; check_reference("gemma3-6l-swa6-f32"); }
static void test_ref_gemma3_mqa_bf16(void **s) { (void)s; check_reference("gemma3-mqa-bf16"); }
static void test_ref_gemma3_multimodal_naming(void **s) { (void)s; check_reference("gemma3-multimodal-naming"); }
static void test_ref_gemma3_ropescale_qpas(void **s) { (void)s; check_reference("gemma3-ropescale-qpas"); }
static void test_ref_llama_gqa_untied_f32(void **s) { (void)s; check_reference("llama-gqa-untied-f32"); }
static void test_ref_llama_tiny_f32(void **s) { (void)s; check_reference("llama-tiny-f32"); }

/* ------------------------------------------------ generated models, naive reference */

/* Append `extra` ("\"key\": value, ...") to the top level of dir/config.json. */
static void config_add(const char *dir, const char *extra) {
    const char *path = tu_path(dir, "config.json");
    char *text = tu_read_file(path, NULL);
    assert_non_null(text);
    char *end = strrchr(text, '}');
    assert_non_null(end);
    *end = '\0';
    size_t n = strlen(text) + strlen(extra) + 8;
    char *out = malloc(n);
    snprintf(out, n, "%s, %s}\n", text, extra);
    tu_write_file(path, out, strlen(out));
    free(out);
    free(text);
}

static double *weight(const stetho_checkpoint *c, const char *prefix, int layer, const char *name) {
    char full[256];
    if (layer >= 0) snprintf(full, sizeof full, "%slayers.%d.%s", prefix, layer, name);
    else snprintf(full, sizeof full, "%s%s", prefix, name);
    const stetho_tensor *t = stetho_checkpoint_find(c, full);
    if (!t) return NULL;
    float *f = malloc(t->n_elements * sizeof *f);
    assert_int_equal(stetho_convert_to_f32(f, t->data, t->dtype, t->n_elements), STETHO_OK);
    double *d = malloc(t->n_elements * sizeof *d);
    for (uint64_t i = 0; i < t->n_elements; i++) d[i] = f[i];
    free(f);
    return d;
}

/* y[t, n] = x[t, :] . W[n, :] + b[n] */
static void lin(double *y, const double *x, const double *W, const double *b, int T, int K, int N) {
    for (int t = 0; t < T; t++)
        for (int n = 0; n < N; n++) {
            double s = b ? b[n] : 0;
            for (int k = 0; k < K; k++) s += x[(size_t)t * K + k] * W[(size_t)n * K + k];
            y[(size_t)t * N + n] = s;
        }
}

static void rms(double *y, const double *x, const double *w, int rows, int D, double eps, bool plus1) {
    for (int r = 0; r < rows; r++) {
        double ss = 0;
        for (int i = 0; i < D; i++) ss += x[(size_t)r * D + i] * x[(size_t)r * D + i];
        double inv = 1 / sqrt(ss / D + eps);
        for (int i = 0; i < D; i++) y[(size_t)r * D + i] = x[(size_t)r * D + i] * inv * (plus1 ? 1 + w[i] : w[i]);
    }
}

static void rope_ref(double *x, int T, int nh, int hd, const stetho_rope *r) {
    for (int t = 0; t < T; t++)
        for (int h = 0; h < nh; h++)
            for (int i = 0; i < hd / 2; i++) {
                double inv = 1 / pow(r->theta, 2.0 * i / hd);
                if (r->type == STETHO_ROPE_LINEAR) inv /= r->factor;
                double a = t * inv, *v = x + ((size_t)t * nh + h) * hd;
                double x1 = v[i], x2 = v[i + hd / 2];
                v[i] = x1 * cos(a) - x2 * sin(a);
                v[i + hd / 2] = x2 * cos(a) + x1 * sin(a);
            }
}

/* A plain double-precision forward written from the HF modelling code, one loop
 * per formula: the check for everything the shared references do not cover. */
static void naive_forward(const stetho_model *m, const char *prefix, const int32_t *tok, int T, double *logits) {
    const stetho_model_config *c = &m->cfg;
    const stetho_checkpoint *ck = &m->ckpt;
    int D = c->hidden, F = c->intermediate, nh = c->n_heads, nkv = c->n_kv_heads, hd = c->head_dim;
    int Q = nh * hd, KV = nkv * hd, V = c->vocab;
    bool g = c->norm_plus_one;
    double *x = calloc((size_t)T * D, 8), *xn = calloc((size_t)T * D, 8), *q = calloc((size_t)T * Q, 8);
    double *k = calloc((size_t)T * KV, 8), *v = calloc((size_t)T * KV, 8), *o = calloc((size_t)T * Q, 8);
    double *a = calloc((size_t)T * D, 8), *gt = calloc((size_t)T * F, 8), *up = calloc((size_t)T * F, 8);
    double *p = calloc((size_t)T, 8);
    double *E = weight(ck, prefix, -1, "embed_tokens.weight");
    for (int t = 0; t < T; t++)
        for (int i = 0; i < D; i++) x[(size_t)t * D + i] = E[(size_t)tok[t] * D + i] * (g ? sqrt((double)D) : 1);
    for (int l = 0; l < c->n_layers; l++) {
        double *w_in = weight(ck, prefix, l, "input_layernorm.weight");
        double *wq = weight(ck, prefix, l, "self_attn.q_proj.weight"), *bq = weight(ck, prefix, l, "self_attn.q_proj.bias");
        double *wk = weight(ck, prefix, l, "self_attn.k_proj.weight"), *bk = weight(ck, prefix, l, "self_attn.k_proj.bias");
        double *wv = weight(ck, prefix, l, "self_attn.v_proj.weight"), *bv = weight(ck, prefix, l, "self_attn.v_proj.bias");
        double *wo = weight(ck, prefix, l, "self_attn.o_proj.weight");
        double *qn = weight(ck, prefix, l, "self_attn.q_norm.weight"), *kn = weight(ck, prefix, l, "self_attn.k_norm.weight");
        double *pa = weight(ck, prefix, l, "post_attention_layernorm.weight");
        double *pf = weight(ck, prefix, l, "pre_feedforward_layernorm.weight");
        double *po = weight(ck, prefix, l, "post_feedforward_layernorm.weight");
        double *wg = weight(ck, prefix, l, "mlp.gate_proj.weight"), *wu = weight(ck, prefix, l, "mlp.up_proj.weight");
        double *wd = weight(ck, prefix, l, "mlp.down_proj.weight");
        rms(xn, x, w_in, T, D, c->rms_eps, g);
        lin(q, xn, wq, bq, T, D, Q);
        lin(k, xn, wk, bk, T, D, KV);
        lin(v, xn, wv, bv, T, D, KV);
        if (qn) {
            rms(q, q, qn, T * nh, hd, c->rms_eps, g);
            rms(k, k, kn, T * nkv, hd, c->rms_eps, g);
        }
        bool sl = c->layer_sliding[l];
        rope_ref(q, T, nh, hd, sl ? &c->rope_local : &c->rope_global);
        rope_ref(k, T, nkv, hd, sl ? &c->rope_local : &c->rope_global);
        for (int h = 0; h < nh; h++) {
            int kvh = h / (nh / nkv);
            for (int t = 0; t < T; t++) {
                double mx = -INFINITY, sum = 0;
                for (int s = 0; s <= t; s++) {
                    p[s] = -INFINITY;
                    if (sl && t - s >= c->sliding_window) continue;
                    double d = 0;
                    for (int i = 0; i < hd; i++) d += q[((size_t)t * nh + h) * hd + i] * k[((size_t)s * nkv + kvh) * hd + i];
                    d *= c->attn_scale;
                    if (c->attn_softcap > 0) d = tanh(d / c->attn_softcap) * c->attn_softcap;
                    p[s] = d;
                    if (d > mx) mx = d;
                }
                for (int s = 0; s <= t; s++) sum += p[s] = exp(p[s] - mx);
                for (int i = 0; i < hd; i++) {
                    double acc = 0;
                    for (int s = 0; s <= t; s++) acc += p[s] / sum * v[((size_t)s * nkv + kvh) * hd + i];
                    o[((size_t)t * nh + h) * hd + i] = acc;
                }
            }
        }
        lin(a, o, wo, NULL, T, Q, D);
        if (pf) rms(a, a, pa, T, D, c->rms_eps, g);
        for (size_t i = 0; i < (size_t)T * D; i++) x[i] += a[i];
        rms(xn, x, pf ? pf : pa, T, D, c->rms_eps, g);
        lin(gt, xn, wg, NULL, T, D, F);
        lin(up, xn, wu, NULL, T, D, F);
        for (size_t i = 0; i < (size_t)T * F; i++) {
            double z = gt[i];
            z = c->act == STETHO_ACT_SILU ? z / (1 + exp(-z))
                                          : 0.5 * z * (1 + tanh(sqrt(2 / M_PI) * (z + 0.044715 * z * z * z)));
            gt[i] = z * up[i];
        }
        lin(a, gt, wd, NULL, T, F, D);
        if (po) rms(a, a, po, T, D, c->rms_eps, g);
        for (size_t i = 0; i < (size_t)T * D; i++) x[i] += a[i];
        double *all[] = {w_in, wq, bq, wk, bk, wv, bv, wo, qn, kn, pa, pf, po, wg, wu, wd};
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) free(all[i]);
    }
    double *fn = weight(ck, prefix, -1, "norm.weight");
    rms(xn, x, fn, T, D, c->rms_eps, g);
    double *head = weight(ck, "", -1, "lm_head.weight");
    lin(logits, xn, head ? head : E, NULL, T, D, V);
    if (c->final_softcap > 0)
        for (size_t i = 0; i < (size_t)T * V; i++) logits[i] = tanh(logits[i] / c->final_softcap) * c->final_softcap;
    free(head);
    free(fn);
    free(E);
    double *bufs[] = {x, xn, q, k, v, o, a, gt, up, p};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
}

static void random_tokens(int32_t *tok, int T, int V, uint64_t seed) {
    for (int t = 0; t < T; t++) tok[t] = (int32_t)(tu_rand_u64(&seed) % (uint64_t)V);
}

/* Engine vs naive reference; returns max abs logit difference and range. */
static double compare_naive(stetho_model *m, const char *prefix, int T, double *range, float **out_logits) {
    int V = m->cfg.vocab;
    int32_t *tok = malloc((size_t)T * sizeof *tok);
    random_tokens(tok, T, V, 99);
    float *lg = malloc((size_t)T * V * sizeof *lg);
    double *ref = malloc((size_t)T * V * sizeof *ref);
    assert_int_equal(stetho_model_forward(m, tok, T, lg, NULL), STETHO_OK);
    naive_forward(m, prefix, tok, T, ref);
    double d = 0, lo = INFINITY, hi = -INFINITY;
    for (size_t i = 0; i < (size_t)T * V; i++) {
        double e = fabs(lg[i] - ref[i]);
        if (!(e <= d)) d = e;
        if (ref[i] < lo) lo = ref[i];
        if (ref[i] > hi) hi = ref[i];
    }
    *range = hi - lo;
    if (out_logits) *out_logits = lg;
    else free(lg);
    free(ref);
    free(tok);
    return d;
}

/* Gemma 2: alternating local/global (even layers sliding), query_pre_attn_scalar,
 * attention and final soft-capping. 150 tokens > one 128-query block, window 5. */
static void test_gemma2_softcap(void **state) {
    (void)state;
    tu_model_spec s = {.model_type = "gemma2", .n_layers = 3, .hidden = 32, .intermediate = 48, .n_heads = 4,
                       .n_kv_heads = 2, .head_dim = 16, .vocab = 64, .seed = 5, .scale = 0.3f,
                       .dtype = STETHO_DTYPE_BF16};
    const char *plain = tu_make_model(tu_tmpdir("model_g2_plain"), &s);
    config_add(plain, "\"sliding_window\": 5, \"query_pre_attn_scalar\": 12");
    const char *capped = tu_make_model(tu_tmpdir("model_g2_cap"), &s);
    config_add(capped, "\"sliding_window\": 5, \"query_pre_attn_scalar\": 12, \"attn_logit_softcapping\": 0.5, "
                       "\"final_logit_softcapping\": 2.0");
    stetho_model a, b;
    assert_int_equal(stetho_model_load(&a, plain), STETHO_OK);
    assert_int_equal(stetho_model_load(&b, capped), STETHO_OK);
    assert_true(a.cfg.layer_sliding[0] && !a.cfg.layer_sliding[1] && a.cfg.layer_sliding[2]);
    assert_true(fabs(a.cfg.attn_scale - 1 / sqrt(12.0)) < 1e-15);
    double ra, rb;
    float *la, *lb;
    int T = 150;
    double da = compare_naive(&a, "model.", T, &ra, &la);
    double db = compare_naive(&b, "model.", T, &rb, &lb);
    print_message("gemma2 naive: plain max|d| %.3e (range %.2f), soft-capped %.3e (range %.2f)\n", da, ra, db, rb);
    assert_true(da <= 1e-4 * (1 + ra));
    assert_true(db <= 1e-4 * (1 + rb));
    double maxa = 0, maxb = 0;
    for (size_t i = 0; i < (size_t)T * 64; i++) {
        if (fabsf(la[i]) > maxa) maxa = fabsf(la[i]);
        if (fabsf(lb[i]) > maxb) maxb = fabsf(lb[i]);
    }
    assert_true(maxa > 2.0); /* uncapped logits exceed the cap ... */
    assert_true(maxb < 2.0); /* ... capped ones cannot */
    free(la);
    free(lb);
    stetho_model_free(&a);
    stetho_model_free(&b);
}

/* Qwen2: q/k/v biases are applied (zeroing them changes the logits), naive match. */
static void test_qwen2_bias(void **state) {
    (void)state;
    tu_model_spec s = {.model_type = "qwen2", .n_layers = 2, .hidden = 32, .intermediate = 64, .n_heads = 4,
                       .n_kv_heads = 2, .head_dim = 8, .vocab = 48, .seed = 9, .scale = 0.2f};
    const char *dir = tu_make_model(tu_tmpdir("model_qwen2"), &s);
    stetho_model m;
    assert_int_equal(stetho_model_load(&m, dir), STETHO_OK);
    assert_non_null(m.layers[0].bq);
    double r;
    float *with;
    double d = compare_naive(&m, "model.", 40, &r, &with);
    print_message("qwen2 naive: max|d| %.3e (range %.2f)\n", d, r);
    assert_true(d <= 1e-4 * (1 + r));
    for (int l = 0; l < m.cfg.n_layers; l++) { /* the engine's own f32 copies */
        memset((float *)m.layers[l].bq, 0, (size_t)m.cfg.n_heads * m.cfg.head_dim * sizeof(float));
        memset((float *)m.layers[l].bk, 0, (size_t)m.cfg.n_kv_heads * m.cfg.head_dim * sizeof(float));
        memset((float *)m.layers[l].bv, 0, (size_t)m.cfg.n_kv_heads * m.cfg.head_dim * sizeof(float));
    }
    float *without;
    compare_naive(&m, "model.", 40, &r, &without);
    assert_true(max_abs_diff(with, without, (size_t)40 * 48) > 1e-3);
    free(with);
    free(without);
    stetho_model_free(&m);
}

/* Gemma 3 text on a longer sequence than the references: 300 tokens (three
 * query blocks), window 7 with a 3:1 pattern, rope_parameters (transformers
 * >= 4.57 style) with linear scaling on full attention only, f16 weights. */
static void test_gemma3_long_rope_parameters(void **state) {
    (void)state;
    tu_model_spec s = {.n_layers = 4, .hidden = 32, .intermediate = 64, .n_heads = 2, .n_kv_heads = 1,
                       .head_dim = 16, .vocab = 40, .seed = 3, .scale = 0.2f, .dtype = STETHO_DTYPE_F16};
    const char *dir = tu_make_model(tu_tmpdir("model_g3_long"), &s);
    config_add(dir, "\"sliding_window\": 7, \"sliding_window_pattern\": 3, \"query_pre_attn_scalar\": 16, "
                    "\"rope_parameters\": {\"full_attention\": {\"rope_type\": \"linear\", \"factor\": 4.0, "
                    "\"rope_theta\": 1000000.0}, \"sliding_attention\": {\"rope_type\": \"default\", "
                    "\"rope_theta\": 10000.0}}");
    stetho_model m;
    assert_int_equal(stetho_model_load(&m, dir), STETHO_OK);
    assert_true(m.cfg.layer_sliding[0] && m.cfg.layer_sliding[1] && !m.cfg.layer_sliding[2] && m.cfg.layer_sliding[3]);
    assert_int_equal(m.cfg.rope_global.type, STETHO_ROPE_LINEAR);
    assert_int_equal(m.cfg.rope_local.type, STETHO_ROPE_DEFAULT);
    assert_true(m.cfg.rope_local.theta == 10000.0 && m.cfg.rope_global.theta == 1e6);
    double r;
    double d = compare_naive(&m, "model.", 300, &r, NULL);
    print_message("gemma3 300 tokens naive: max|d| %.3e (range %.2f)\n", d, r);
    assert_true(d <= 1e-4 * (1 + r));
    stetho_model_free(&m);
}

/* Llama (untied lm_head, SiLU) and the multimodal prefix on generated models. */
static void test_llama_and_multimodal_generated(void **state) {
    (void)state;
    tu_model_spec s = {.model_type = "llama", .n_layers = 2, .hidden = 32, .intermediate = 40, .n_heads = 4,
                       .n_kv_heads = 2, .head_dim = 8, .vocab = 50, .seed = 4, .scale = 0.2f,
                       .dtype = STETHO_DTYPE_BF16};
    stetho_model m;
    assert_int_equal(stetho_model_load(&m, tu_make_model(tu_tmpdir("model_llama"), &s)), STETHO_OK);
    assert_true(m.lm_head != m.embed);
    double r, d = compare_naive(&m, "model.", 30, &r, NULL);
    assert_true(d <= 1e-4 * (1 + r));
    stetho_model_free(&m);
    tu_model_spec mm = {.model_type = "gemma3", .n_layers = 2, .seed = 8, .scale = 0.2f};
    assert_int_equal(stetho_model_load(&m, tu_make_model(tu_tmpdir("model_mm"), &mm)), STETHO_OK);
    assert_true(m.lm_head == m.embed);
    d = compare_naive(&m, "language_model.model.", 30, &r, NULL);
    assert_true(d <= 1e-4 * (1 + r));
    stetho_model_free(&m);
}

/* Hooks: only the requested ones fire, names parse, a consumer's error aborts the
 * pass, and without logits the layers after the last hook are skipped. */
static int n_calls;
static stetho_status count_hook(void *user, int layer, stetho_hook_kind kind, const float *data, int T, int D) {
    (void)data;
    (void)T;
    (void)D;
    int *want = user;
    assert_int_equal(layer, want[0]);
    assert_int_equal((int)kind, want[1]);
    n_calls++;
    return STETHO_OK;
}
static stetho_status fail_hook(void *user, int layer, stetho_hook_kind kind, const float *data, int T, int D) {
    (void)user, (void)layer, (void)kind, (void)data, (void)T, (void)D;
    return STETHO_ERR_IO;
}

static void test_hooks(void **state) {
    (void)state;
    int layer;
    stetho_hook_kind kind;
    assert_int_equal(stetho_hook_parse("blocks.12.hook_mlp_out", &layer, &kind), STETHO_OK);
    assert_int_equal(layer, 12);
    assert_int_equal(kind, STETHO_HOOK_MLP_OUT);
    assert_int_equal(stetho_hook_parse("blocks.*.hook_resid_pre", &layer, &kind), STETHO_OK);
    assert_int_equal(layer, -1);
    assert_int_equal(stetho_hook_parse("blocks.1.hook_resid", &layer, &kind), STETHO_ERR_INVALID);
    assert_int_equal(stetho_hook_parse("blocks.x.hook_attn_out", &layer, &kind), STETHO_ERR_INVALID);
    assert_int_equal(stetho_hook_parse("logits", &layer, &kind), STETHO_ERR_INVALID);

    tu_model_spec s = {.n_layers = 3, .seed = 1};
    stetho_model m;
    assert_int_equal(stetho_model_load(&m, tu_make_model(tu_tmpdir("model_hooks"), &s)), STETHO_OK);
    int32_t tok[5] = {2, 7, 9, 1, 30};
    stetho_hooks h;
    stetho_hooks_init(&h);
    int want[2] = {1, STETHO_HOOK_ATTN_OUT};
    assert_int_equal(stetho_hooks_add(&h, "blocks.1.hook_attn_out", count_hook, want), STETHO_OK);
    n_calls = 0;
    assert_int_equal(stetho_model_forward(&m, tok, 5, NULL, &h), STETHO_OK);
    assert_int_equal(n_calls, 1);
    assert_int_equal(stetho_hooks_add(&h, "blocks.0.hook_resid_post", fail_hook, NULL), STETHO_OK);
    assert_int_equal(stetho_model_forward(&m, tok, 5, NULL, &h), STETHO_ERR_IO);
    stetho_hooks_free(&h);
    stetho_hooks_init(&h);
    assert_int_equal(stetho_hooks_add(&h, "blocks.3.hook_attn_out", count_hook, want), STETHO_OK);
    assert_int_equal(stetho_model_forward(&m, tok, 5, NULL, &h), STETHO_ERR_INVALID); /* layer 3 of 3 */
    stetho_hooks_free(&h);
    stetho_model_free(&m);
}

static stetho_status zero_edit(void *user, int layer, stetho_hook_kind kind, float *data, int T, int D) {
    (void)user, (void)layer, (void)kind;
    memset(data, 0, sizeof(float) * (size_t)T * (size_t)D);
    return STETHO_OK;
}

static double g_seen_sum;
static stetho_status sum_hook(void *user, int layer, stetho_hook_kind kind, const float *data, int T, int D) {
    (void)user, (void)layer, (void)kind;
    for (size_t i = 0; i < (size_t)T * (size_t)D; i++) g_seen_sum += fabs(data[i]);
    return STETHO_OK;
}

/* Editing hooks change what the rest of the model sees: zeroing the last
 * residual stream makes Gemma's final norm output 0, so every logit is 0, and a
 * reader registered after the editor sees the edited block. */
static void test_edit_hooks(void **state) {
    (void)state;
    tu_model_spec s = {.n_layers = 2, .seed = 3};
    stetho_model m;
    assert_int_equal(stetho_model_load(&m, tu_make_model(tu_tmpdir("model_edit"), &s)), STETHO_OK);
    int32_t tok[4] = {2, 5, 6, 7};
    float *logits = malloc(sizeof(float) * 4 * 32);
    assert_int_equal(stetho_model_forward(&m, tok, 4, logits, NULL), STETHO_OK);
    double before = 0;
    for (int i = 0; i < 4 * 32; i++) before += fabs(logits[i]);
    assert_true(before > 0);
    stetho_hooks h;
    stetho_hooks_init(&h);
    assert_int_equal(stetho_hooks_add_edit(&h, "blocks.1.hook_resid_post", zero_edit, NULL), STETHO_OK);
    assert_int_equal(stetho_hooks_add(&h, "blocks.1.hook_resid_post", sum_hook, NULL), STETHO_OK);
    g_seen_sum = 0;
    assert_int_equal(stetho_model_forward(&m, tok, 4, logits, &h), STETHO_OK);
    assert_true(g_seen_sum == 0);
    for (int i = 0; i < 4 * 32; i++) assert_true(logits[i] == 0.0f);
    assert_int_equal(stetho_hooks_add_edit(&h, "blocks.9.hook_nope", zero_edit, NULL), STETHO_ERR_INVALID);
    stetho_hooks_free(&h);
    free(logits);
    stetho_model_free(&m);
}

/* Bad input: clear errors, no crash. */
static void test_bad_input(void **state) {
    (void)state;
    tu_model_spec s = {.n_layers = 1, .seed = 2};
    const char *dir = tu_make_model(tu_tmpdir("model_bad"), &s);
    stetho_model m;
    assert_int_equal(stetho_model_load(&m, dir), STETHO_OK);
    float logits[3 * 32];
    int32_t tok[3] = {2, 32, 5};
    assert_int_equal(stetho_model_forward(&m, tok, 3, logits, NULL), STETHO_ERR_INVALID);
    assert_non_null(strstr(stetho_last_error(), "vocabulary"));
    tok[1] = -1;
    assert_int_equal(stetho_model_forward(&m, tok, 3, logits, NULL), STETHO_ERR_INVALID);
    assert_int_equal(stetho_model_forward(&m, tok, 0, logits, NULL), STETHO_ERR_INVALID);
    int32_t *many = calloc(513, sizeof *many); /* max_position_embeddings is 512 */
    assert_int_equal(stetho_model_forward(&m, many, 513, NULL, NULL), STETHO_ERR_INVALID);
    free(many);
    stetho_model_free(&m);

    stetho_model_config c;
    const char *unk = "{\"model_type\": \"gpt2\", \"num_hidden_layers\": 1}";
    assert_int_equal(stetho_model_config_parse(&c, unk, strlen(unk), "cfg"), STETHO_ERR_UNSUPPORTED);
    const char *missing = "{\"model_type\": \"llama\", \"num_hidden_layers\": 1, \"hidden_size\": 8}";
    assert_int_equal(stetho_model_config_parse(&c, missing, strlen(missing), "cfg"), STETHO_ERR_FORMAT);
    assert_non_null(strstr(stetho_last_error(), "intermediate_size"));
    /* no max_position_embeddings: the family's transformers default still bounds the context */
    const char *nomax[][2] = {{"llama", "2048"}, {"qwen2", "32768"}, {"gemma2", "8192"}, {"gemma3_text", "131072"}};
    for (size_t i = 0; i < 4; i++) {
        char js[512];
        snprintf(js, sizeof js, "{\"model_type\": \"%s\", \"num_hidden_layers\": 1, \"hidden_size\": 8, "
                 "\"intermediate_size\": 8, \"num_attention_heads\": 2, \"vocab_size\": 8}", nomax[i][0]);
        assert_int_equal(stetho_model_config_parse(&c, js, strlen(js), "cfg"), STETHO_OK);
        assert_int_equal(c.max_position, atoi(nomax[i][1]));
        stetho_model_config_free(&c);
    }
    const char *yarn = "{\"model_type\": \"llama\", \"num_hidden_layers\": 1, \"hidden_size\": 8, "
                       "\"intermediate_size\": 8, \"num_attention_heads\": 2, \"vocab_size\": 8, "
                       "\"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4}}";
    assert_int_equal(stetho_model_config_parse(&c, yarn, strlen(yarn), "cfg"), STETHO_ERR_UNSUPPORTED);

    /* a tensor of the wrong shape: declare hidden 20 over a hidden-16 checkpoint */
    config_add(dir, "\"hidden_size\": 20");
    assert_int_equal(stetho_model_load(&m, dir), STETHO_ERR_FORMAT);
    assert_non_null(strstr(stetho_last_error(), "shape"));
}

/* Capture to a file: requested tensors only, in forward order, equal to what the
 * forward pass hands to hooks; bad hook names refused before anything is written. */
static void test_capture_file(void **state) {
    (void)state;
    tu_model_spec s = {.n_layers = 3, .seed = 6, .scale = 0.2f, .dtype = STETHO_DTYPE_BF16};
    const char *dir = tu_make_model(tu_tmpdir("model_capture"), &s);
    stetho_model m;
    assert_int_equal(stetho_model_load(&m, dir), STETHO_OK);
    int32_t tok[7] = {2, 5, 9, 31, 0, 4, 4};
    int T = 7, D = m.cfg.hidden, V = m.cfg.vocab;
    const char *out = tu_path(tu_tmpdir("capture_out"), "acts.safetensors");
    assert_int_equal(stetho_model_capture(&m, tok, T, "logits,blocks.*.hook_resid_post,blocks.1.hook_mlp_out", out),
                     STETHO_OK);
    float *logits = malloc((size_t)T * V * sizeof *logits);
    capture cap;
    stetho_hooks hooks;
    capture_init(&cap, &hooks, 3, T, D);
    assert_int_equal(stetho_model_forward(&m, tok, T, logits, &hooks), STETHO_OK);
    stetho_st_file f;
    assert_int_equal(stetho_st_open(&f, out), STETHO_OK);
    static const char *order[] = {"tokens", "blocks.0.hook_resid_post", "blocks.1.hook_mlp_out",
                                  "blocks.1.hook_resid_post", "blocks.2.hook_resid_post", "logits"};
    assert_int_equal(f.n_tensors, 6);
    for (int i = 0; i < 6; i++) assert_string_equal(f.tensors[i].name, order[i]);
    assert_memory_equal(f.tensors[0].data, tok, sizeof tok);
    assert_memory_equal(f.tensors[1].data, cap.post[0], (size_t)T * D * 4);
    assert_memory_equal(f.tensors[2].data, cap.mlp[1], (size_t)T * D * 4);
    assert_memory_equal(f.tensors[4].data, cap.post[2], (size_t)T * D * 4);
    assert_int_equal(f.tensors[5].shape[1], (uint64_t)V);
    assert_memory_equal(f.tensors[5].data, logits, (size_t)T * V * 4);
    stetho_st_close(&f);
    const char *out2 = tu_path(tu_tmpdir("capture_out"), "bad.safetensors");
    assert_int_equal(stetho_model_capture(&m, tok, T, "blocks.3.hook_resid_post", out2), STETHO_ERR_INVALID);
    assert_int_equal(stetho_model_capture(&m, tok, T, "blocks.0.resid", out2), STETHO_ERR_INVALID);
    assert_false(tu_exists(out2));
    capture_free(&cap);
    stetho_hooks_free(&hooks);
    free(logits);
    stetho_model_free(&m);
}

/* Many prompts: each prompt's rows of every tensor equal its own capture, and
 * every failing write or allocation leaves no output behind. */
static void test_capture_many(void **state) {
    (void)state;
    tu_model_spec s = {.n_layers = 2, .seed = 8, .scale = 0.2f};
    const char *dir = tu_make_model(tu_tmpdir("model_capture_many"), &s);
    stetho_model m;
    assert_int_equal(stetho_model_load(&m, dir), STETHO_OK);
    int32_t a[3] = {2, 7, 9}, b[5] = {2, 1, 1, 30, 4}, c[1] = {2};
    const int32_t *prompts[3] = {a, b, c};
    int lens[3] = {3, 5, 1}, D = m.cfg.hidden, V = m.cfg.vocab;
    const char *odir = tu_tmpdir("capture_many_out");
    const char *out = tu_path(odir, "many.safetensors");
    const char *hooks = "blocks.*.hook_resid_post,blocks.0.hook_attn_out,logits";
    assert_int_equal(stetho_model_capture_many(&m, prompts, lens, 3, hooks, out), STETHO_OK);
    stetho_st_file f;
    assert_int_equal(stetho_st_open(&f, out), STETHO_OK);
    static const char *order[] = {"tokens", "prompt_offsets", "blocks.0.hook_attn_out", "blocks.0.hook_resid_post",
                                  "blocks.1.hook_resid_post", "logits"};
    assert_int_equal(f.n_tensors, 6);
    for (int i = 0; i < 6; i++) assert_string_equal(f.tensors[i].name, order[i]);
    int64_t off[4]; /* the tensor follows 9 I32 tokens: not 8-byte aligned in the mapping */
    memcpy(off, f.tensors[1].data, sizeof off);
    assert_int_equal(off[0], 0);
    assert_int_equal(off[1], 3);
    assert_int_equal(off[2], 8);
    assert_int_equal(off[3], 9);
    for (int p = 0; p < 3; p++) {
        const char *one = tu_path(odir, "one.safetensors");
        assert_int_equal(stetho_model_capture(&m, prompts[p], lens[p], hooks, one), STETHO_OK);
        stetho_st_file g;
        assert_int_equal(stetho_st_open(&g, one), STETHO_OK);
        assert_memory_equal((const int32_t *)f.tensors[0].data + off[p], prompts[p], (size_t)lens[p] * 4);
        for (int t = 2; t < 6; t++) {
            const stetho_tensor *mine = stetho_st_find(&g, order[t]);
            assert_non_null(mine);
            size_t w = t == 5 ? (size_t)V : (size_t)D;
            assert_memory_equal((const float *)f.tensors[t].data + (size_t)off[p] * w, mine->data, (size_t)lens[p] * w * 4);
        }
        stetho_st_close(&g);
    }
    stetho_st_close(&f);
    int fails = 0;
    for (uint64_t n = 1;; n++) {
        const char *o2 = tu_path(odir, "faulty.safetensors");
        stetho_fault_write_after(n);
        stetho_status st = stetho_model_capture_many(&m, prompts, lens, 3, hooks, o2);
        stetho_fault_write_after(0);
        if (st == STETHO_OK) {
            remove(o2);
            break;
        }
        assert_false(tu_exists(o2));
        fails++;
    }
    for (uint64_t n = 1;; n++) {
        const char *o2 = tu_path(odir, "faulty.safetensors");
        stetho_fault_alloc_after(n);
        stetho_status st = stetho_model_capture_many(&m, prompts, lens, 3, hooks, o2);
        stetho_fault_alloc_after(0);
        if (st == STETHO_OK) break;
        assert_int_equal(st, STETHO_ERR_NOMEM);
        assert_false(tu_exists(o2));
        fails++;
    }
    assert_true(fails > 10);
    stetho_model_free(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_capture_many),
        cmocka_unit_test(test_ref_gemma3_4l_swa2_bf16),
        cmocka_unit_test(test_ref_gemma3_6l_swa6_f32),
        cmocka_unit_test(test_ref_gemma3_mqa_bf16),
        cmocka_unit_test(test_ref_gemma3_multimodal_naming),
        cmocka_unit_test(test_ref_gemma3_ropescale_qpas),
        cmocka_unit_test(test_ref_llama_gqa_untied_f32),
        cmocka_unit_test(test_ref_llama_tiny_f32),
        cmocka_unit_test(test_gemma2_softcap),
        cmocka_unit_test(test_qwen2_bias),
        cmocka_unit_test(test_gemma3_long_rope_parameters),
        cmocka_unit_test(test_llama_and_multimodal_generated),
        cmocka_unit_test(test_hooks),
        cmocka_unit_test(test_edit_hooks),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_capture_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
