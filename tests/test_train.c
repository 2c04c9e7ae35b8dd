/* The Gemma 3 trainer: gradients against central finite differences for every
 * parameter kind, the loss and its mask against an independent computation,
 * AdamW steps that fit a fixed batch, frozen groups, the schedule, the saved HF
 * directory read back by the inference engine with identical logits, and
 * determinism. */
#include "testutil.h"

#include "stetho/model.h"
#include "stetho/train.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* 2 layers (layer 0 sliding with window 3, layer 1 global), hidden 16, 2 heads
 * sharing 1 kv head of 8: every op and both attention kinds in a model small
 * enough for finite differences. */
static stetho_train_config tiny_config(void) {
    stetho_train_config c;
    stetho_train_config_default(&c);
    c.n_layers = 2;
    c.hidden = 16;
    c.intermediate = 32;
    c.n_heads = 2;
    c.n_kv_heads = 1;
    c.head_dim = 8;
    c.vocab = 32;
    c.max_position = 64;
    c.sliding_window = 3;
    c.sliding_window_pattern = 2;
    c.query_pre_attn_scalar = 8;
    return c;
}

static void init_tiny(stetho_train_model *m, const stetho_train_config *c, uint64_t seed) {
    stetho_status st = stetho_train_model_init(m, c, seed);
    if (st) print_message("%s\n", stetho_last_error());
    assert_int_equal(st, STETHO_OK);
}

/* Every parameter (norm weights included) random with std `sd`, so each (1 + w)
 * and each gradient is far from trivial. */
static void randomize(stetho_train_model *m, float sd, uint64_t seed) {
    uint64_t s = seed;
    for (size_t i = 0; i < m->n_params; i++) m->params[i] = sd * tu_rand_normal(&s);
}

static void random_tokens(int32_t *t, int n, int V, uint64_t seed) {
    uint64_t s = seed;
    for (int i = 0; i < n; i++) t[i] = (int32_t)(tu_rand_u64(&s) % (uint64_t)V);
}

static float loss_of(stetho_train_model *m, const int32_t *tok, const int32_t *tgt, const float *mask, int B, int T) {
    float loss = NAN;
    assert_int_equal(stetho_train_forward(m, tok, tgt, mask, B, T, &loss), STETHO_OK);
    return loss;
}

/* ------------------------------------------------------------ gradients */

static void test_gradients_match_finite_differences(void **state) {
    (void)state;
    stetho_train_config c = tiny_config();
    stetho_train_model m;
    init_tiny(&m, &c, 1);
    randomize(&m, 0.3f, 7);
    enum { B = 2, T = 6 };
    int32_t tok[B * T], tgt[B * T];
    random_tokens(tok, B * T, c.vocab, 3);
    random_tokens(tgt, B * T, c.vocab, 4);
    float mask[B * T];
    for (int i = 0; i < B * T; i++) mask[i] = i % 5 == 1 ? 0.0f : 1.0f; /* some positions do not count */
    loss_of(&m, tok, tgt, mask, B, T);
    assert_int_equal(stetho_train_backward(&m), STETHO_OK);
    float *an = malloc(m.n_params * sizeof *an);
    memcpy(an, m.grads, m.n_params * sizeof *an);

    /* per tensor: the largest analytic entry and 5 random ones among those at
     * least 5% of it (smaller ones drown in the f32 loss's rounding, ~1e-5 in a
     * difference quotient with h = 1e-2); relative error |fd - an| / max(|fd|, |an|) */
    const double h = 1e-2;
    double worst = 0;
    const char *worst_name = "";
    int checked = 0;
    uint64_t rs = 11;
    for (size_t ti = 0; ti < m.n_tensors; ti++) {
        const stetho_train_tensor *t = &m.tensors[ti];
        size_t arg = 0;
        double gmax = 0;
        for (size_t j = 0; j < t->n; j++)
            if (fabs(an[t->offset + j]) > gmax) gmax = fabs(an[t->offset + j]), arg = j;
        assert_true(gmax > 1e-3); /* every tensor gets gradient */
        for (int k = 0; k < 6; k++) {
            size_t j = arg;
            for (int tries = 0; k > 0 && tries < 1000; tries++) {
                j = (size_t)(tu_rand_u64(&rs) % t->n);
                if (fabs(an[t->offset + j]) >= 0.05 * gmax) break;
            }
            float *p = &m.params[t->offset + j], saved = *p;
            *p = (float)(saved + h);
            double lp = loss_of(&m, tok, tgt, mask, B, T);
            *p = (float)(saved - h);
            double lm = loss_of(&m, tok, tgt, mask, B, T);
            *p = saved;
            double fd = (lp - lm) / (2 * h), g = an[t->offset + j];
            double err = fabs(fd - g) / fmax(fmax(fabs(fd), fabs(g)), 1e-30);
            if (err > worst) worst = err, worst_name = t->name;
            checked++;
        }
    }
    print_message("gradient check: %d entries of %zu tensors, worst relative error %.2e (%s)\n", checked,
                  m.n_tensors, worst, worst_name);
    assert_true(worst < 1e-2);
    free(an);
    stetho_train_model_free(&m);
}

/* ------------------------------------------------------------ loss */

static void test_loss_and_mask(void **state) {
    (void)state;
    stetho_train_config c = tiny_config();
    stetho_train_model m;
    init_tiny(&m, &c, 2);
    randomize(&m, 0.3f, 9);
    enum { B = 3, T = 5 };
    int32_t tok[B * T], tgt[B * T];
    float mask[B * T];
    random_tokens(tok, B * T, c.vocab, 5);
    random_tokens(tgt, B * T, c.vocab, 6);
    for (int i = 0; i < B * T; i++) mask[i] = (float)(i % 3); /* weights 0, 1, 2 */
    float loss = loss_of(&m, tok, tgt, mask, B, T);
    /* independent: log-softmax in double over the logits the forward left */
    double num = 0, den = 0;
    for (int i = 0; i < B * T; i++) {
        const float *l = m.logits + (size_t)i * c.vocab;
        double mx = l[0], s = 0;
        for (int j = 1; j < c.vocab; j++) mx = fmax(mx, l[j]);
        for (int j = 0; j < c.vocab; j++) s += exp(l[j] - mx);
        num += mask[i] * (log(s) + mx - l[tgt[i]]);
        den += mask[i];
    }
    assert_true(fabs(loss - num / den) < 1e-5);
    /* no mask = every position with weight 1; fresh init = near-uniform, loss ~ ln V */
    stetho_train_model f;
    init_tiny(&f, &c, 2);
    float l0 = loss_of(&f, tok, tgt, NULL, B, T);
    assert_true(fabs(l0 - log(c.vocab)) < 0.05);

    /* bad input */
    int32_t bad[B * T];
    memcpy(bad, tok, sizeof bad);
    bad[4] = c.vocab;
    assert_int_equal(stetho_train_forward(&m, bad, tgt, NULL, B, T, &loss), STETHO_ERR_INVALID);
    assert_int_equal(stetho_train_forward(&m, tok, bad, NULL, B, T, &loss), STETHO_ERR_INVALID);
    float zero[B * T] = {0};
    assert_int_equal(stetho_train_forward(&m, tok, tgt, zero, B, T, &loss), STETHO_ERR_INVALID);
    assert_int_equal(stetho_train_forward(&m, tok, NULL, NULL, B, T, NULL), STETHO_OK);
    assert_int_equal(stetho_train_backward(&m), STETHO_ERR_INVALID); /* no targets: nothing to differentiate */
    stetho_train_config bc = c;
    bc.n_kv_heads = 3;
    stetho_train_model x;
    assert_int_equal(stetho_train_model_init(&x, &bc, 1), STETHO_ERR_INVALID);
    bc = c;
    bc.head_dim = 7;
    assert_int_equal(stetho_train_model_init(&x, &bc, 1), STETHO_ERR_INVALID);
    stetho_train_model_free(&f);
    stetho_train_model_free(&m);
}

static void test_layout_and_init(void **state) {
    (void)state;
    stetho_train_config c = tiny_config();
    stetho_train_model m;
    init_tiny(&m, &c, 3);
    assert_int_equal(m.n_tensors, 2 + 13 * 2);
    size_t total = 0;
    for (size_t i = 0; i < m.n_tensors; i++) {
        assert_int_equal(m.tensors[i].offset, total); /* contiguous, in order */
        total += m.tensors[i].n;
    }
    assert_int_equal(total, m.n_params);
    const stetho_train_tensor *e = stetho_train_find(&m, "model.embed_tokens.weight");
    const stetho_train_tensor *k = stetho_train_find(&m, "model.layers.1.self_attn.k_proj.weight");
    const stetho_train_tensor *qn = stetho_train_find(&m, "model.layers.0.self_attn.q_norm.weight");
    assert_non_null(e);
    assert_non_null(k);
    assert_non_null(qn);
    assert_null(stetho_train_find(&m, "lm_head.weight")); /* tied */
    assert_int_equal(k->shape[0], 8);
    assert_int_equal(k->shape[1], 16);
    assert_ptr_equal(m.params + k->offset, m.w[1].wk);
    assert_int_equal(qn->n, 8);
    for (size_t i = 0; i < qn->n; i++) assert_true(m.params[qn->offset + i] == 0.0f);
    double s2 = 0;
    for (size_t i = 0; i < e->n; i++) s2 += (double)m.params[i] * m.params[i];
    assert_true(fabs(sqrt(s2 / e->n) - 0.02) < 0.003);
    assert_true(m.layer_sliding[0]);
    assert_false(m.layer_sliding[1]);
    stetho_train_model_free(&m);
}

/* ------------------------------------------------------------ optimizer */

static void test_schedule(void **state) {
    (void)state;
    stetho_train_opt o;
    stetho_train_opt_default(&o);
    o.lr = 1e-3;
    o.min_lr = 1e-4;
    o.warmup_steps = 10;
    o.total_steps = 110;
    assert_true(fabs(stetho_train_lr(&o, 0) - 1e-4) < 1e-12);
    assert_true(fabs(stetho_train_lr(&o, 9) - 1e-3) < 1e-12);
    assert_true(fabs(stetho_train_lr(&o, 10) - 1e-3) < 1e-12);
    assert_true(fabs(stetho_train_lr(&o, 60) - 5.5e-4) < 1e-12);
    assert_true(fabs(stetho_train_lr(&o, 110) - 1e-4) < 1e-12);
    assert_true(fabs(stetho_train_lr(&o, 500) - 1e-4) < 1e-12);
    assert_true(stetho_train_lr(&o, 30) > stetho_train_lr(&o, 31));
}

static void test_steps_reduce_loss(void **state) {
    (void)state;
    stetho_train_config c = tiny_config();
    c.vocab = 64;
    stetho_train_model m;
    init_tiny(&m, &c, 4);
    enum { B = 4, T = 16 };
    int32_t seq[B * (T + 1)], tok[B * T], tgt[B * T];
    random_tokens(seq, B * (T + 1), c.vocab, 8);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            tok[b * T + t] = seq[b * (T + 1) + t];
            tgt[b * T + t] = seq[b * (T + 1) + t + 1];
        }
    stetho_train_opt o;
    stetho_train_opt_default(&o);
    o.lr = 1e-2;
    o.min_lr = 1e-3;
    o.warmup_steps = 5;
    o.total_steps = 60;
    float first = 0, loss = 0;
    double gn;
    for (int s = 0; s < 60; s++) {
        loss = loss_of(&m, tok, tgt, NULL, B, T);
        if (s == 0) first = loss;
        assert_int_equal(stetho_train_backward(&m), STETHO_OK);
        assert_int_equal(stetho_train_step(&m, &o, &gn), STETHO_OK);
        assert_true(isfinite(gn) && gn > 0);
    }
    loss = loss_of(&m, tok, tgt, NULL, B, T);
    print_message("fixed batch of %d x %d: loss %.3f -> %.3f after 60 AdamW steps\n", B, T, first, loss);
    assert_true(loss < 0.5f * first);
    assert_int_equal(m.step, 60);
    stetho_train_model_free(&m);
}

static void test_frozen_groups_and_grad_norm(void **state) {
    (void)state;
    stetho_train_config c = tiny_config();
    stetho_train_model m;
    init_tiny(&m, &c, 5);
    randomize(&m, 0.1f, 12);
    enum { B = 2, T = 8 };
    int32_t tok[B * T], tgt[B * T];
    random_tokens(tok, B * T, c.vocab, 13);
    random_tokens(tgt, B * T, c.vocab, 14);
    float *before = malloc(m.n_params * sizeof *before);
    memcpy(before, m.params, m.n_params * sizeof *before);
    stetho_train_opt o;
    stetho_train_opt_default(&o);
    o.warmup_steps = 0;
    o.freeze_embed_final_norm = true;
    loss_of(&m, tok, tgt, NULL, B, T);
    assert_int_equal(stetho_train_backward(&m), STETHO_OK);
    double expect = 0, gn = 0;
    for (size_t i = 0; i < m.n_tensors; i++)
        if (m.tensors[i].layer >= 0)
            for (size_t j = 0; j < m.tensors[i].n; j++)
                expect += (double)m.grads[m.tensors[i].offset + j] * m.grads[m.tensors[i].offset + j];
    assert_int_equal(stetho_train_step(&m, &o, &gn), STETHO_OK);
    assert_true(fabs(gn - sqrt(expect)) < 1e-6 * sqrt(expect));
    const stetho_train_tensor *e = stetho_train_find(&m, "model.embed_tokens.weight");
    const stetho_train_tensor *fn = stetho_train_find(&m, "model.norm.weight");
    assert_memory_equal(m.params + e->offset, before + e->offset, e->n * sizeof(float));
    assert_memory_equal(m.params + fn->offset, before + fn->offset, fn->n * sizeof(float));
    for (size_t i = 0; i < m.n_tensors; i++) {
        const stetho_train_tensor *t = &m.tensors[i];
        if (t->layer < 0) continue;
        assert_memory_not_equal(m.params + t->offset, before + t->offset, t->n * sizeof(float));
    }
    free(before);
    stetho_train_model_free(&m);
}

/* ------------------------------------------------------------ saved model = evaluated model */

static double max_abs_diff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= m)) m = d;
    }
    return m;
}

/* Load dir with the inference engine and compare its logits for each sequence
 * with the trainer's (whose forward must have just run on tok [B, T]). */
static double engine_vs_trainer(const stetho_train_model *m, const char *dir, const int32_t *tok, int B, int T) {
    stetho_model im;
    stetho_status st = stetho_model_load(&im, dir);
    if (st) print_message("%s\n", stetho_last_error());
    assert_int_equal(st, STETHO_OK);
    assert_int_equal(im.cfg.family, STETHO_FAMILY_GEMMA3);
    assert_int_equal(im.cfg.sliding_window, m->cfg.sliding_window);
    for (int l = 0; l < m->cfg.n_layers; l++) assert_int_equal(im.cfg.layer_sliding[l], m->layer_sliding[l]);
    assert_ptr_equal(im.lm_head, im.embed);
    int V = m->cfg.vocab;
    float *lg = malloc((size_t)T * V * sizeof *lg);
    double worst = 0;
    for (int b = 0; b < B; b++) {
        assert_int_equal(stetho_model_forward(&im, tok + (size_t)b * T, T, lg, NULL), STETHO_OK);
        double d = max_abs_diff(lg, m->logits + (size_t)b * T * V, (size_t)T * V);
        if (d > worst) worst = d;
    }
    free(lg);
    stetho_model_free(&im);
    return worst;
}

static void test_saved_model_matches_inference(void **state) {
    (void)state;
    stetho_train_config c = tiny_config();
    c.n_layers = 3; /* sliding, global, sliding */
    c.rope_theta_local = 100;
    c.rope_theta_global = 5000;
    c.query_pre_attn_scalar = 10;
    stetho_train_model m;
    init_tiny(&m, &c, 6);
    randomize(&m, 0.2f, 15); /* non-zero norm weights: (1 + w) must be read the same way */
    enum { B = 2, T = 12 }; /* T > window: the local layers mask */
    int32_t tok[B * T];
    random_tokens(tok, B * T, c.vocab, 16);
    assert_int_equal(stetho_train_forward(&m, tok, NULL, NULL, B, T, NULL), STETHO_OK);

    const char *dir = tu_tmpdir("train_save_f32");
    assert_int_equal(stetho_train_save(&m, dir, STETHO_DTYPE_F32), STETHO_OK);
    double d32 = engine_vs_trainer(&m, dir, tok, B, T);

    /* config.json has what transformers needs */
    char *text = tu_read_file(tu_path(dir, "config.json"), NULL);
    assert_non_null(text);
    json_t *cj = json_loads(text, 0, NULL);
    assert_non_null(cj);
    assert_string_equal(json_string_value(json_object_get(cj, "model_type")), "gemma3_text");
    assert_string_equal(json_string_value(json_array_get(json_object_get(cj, "architectures"), 0)),
                        "Gemma3ForCausalLM");
    assert_string_equal(json_string_value(json_object_get(cj, "torch_dtype")), "float32");
    assert_true(json_is_true(json_object_get(cj, "tie_word_embeddings")));
    assert_int_equal(json_array_size(json_object_get(cj, "layer_types")), 3);
    assert_string_equal(json_string_value(json_array_get(json_object_get(cj, "layer_types"), 1)), "full_attention");
    static const char *keys[] = {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                 "num_attention_heads", "num_key_value_heads", "head_dim", "rms_norm_eps",
                                 "rope_theta", "rope_local_base_freq", "sliding_window", "query_pre_attn_scalar",
                                 "hidden_activation", "max_position_embeddings"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) assert_non_null(json_object_get(cj, keys[i]));
    json_decref(cj);
    free(text);

    /* bf16: the engine on the rounded weights = the trainer on the same rounded weights */
    const char *dir16 = tu_tmpdir("train_save_bf16");
    assert_int_equal(stetho_train_save(&m, dir16, STETHO_DTYPE_BF16), STETHO_OK);
    for (size_t i = 0; i < m.n_params; i++) m.params[i] = stetho_bf16_to_f32(stetho_f32_to_bf16(m.params[i]));
    assert_int_equal(stetho_train_forward(&m, tok, NULL, NULL, B, T, NULL), STETHO_OK);
    double d16 = engine_vs_trainer(&m, dir16, tok, B, T);
    print_message("saved model vs trainer: max|dlogits| f32 %.3e, bf16 %.3e\n", d32, d16);
    assert_true(d32 < 1e-4);
    assert_true(d16 < 1e-4);
    /* the comparison can fail: one norm weight changed after saving shows up */
    m.w[1].ln_post_attn[3] += 0.5f;
    assert_int_equal(stetho_train_forward(&m, tok, NULL, NULL, B, T, NULL), STETHO_OK);
    assert_true(engine_vs_trainer(&m, dir16, tok, B, T) > 1e-3);
    assert_int_equal(stetho_train_save(&m, dir, STETHO_DTYPE_F16), STETHO_ERR_INVALID);
    stetho_train_model_free(&m);
}

/* ------------------------------------------------------------ loading saved weights */

static void test_load_params(void **state) {
    (void)state;
    stetho_train_config c = tiny_config();
    stetho_train_model a, b;
    init_tiny(&a, &c, 31);
    randomize(&a, 0.2f, 32);
    init_tiny(&b, &c, 33);
    const char *dir = tu_tmpdir("train_load_f32"), *dir16 = tu_tmpdir("train_load_bf16");
    assert_int_equal(stetho_train_save(&a, dir, STETHO_DTYPE_F32), STETHO_OK);
    assert_int_equal(stetho_train_save(&a, dir16, STETHO_DTYPE_BF16), STETHO_OK);
    /* f32: exact */
    assert_int_equal(stetho_train_load_params(&b, dir), STETHO_OK);
    assert_memory_equal(a.params, b.params, a.n_params * sizeof *a.params);
    /* bf16: each parameter is its rounding */
    assert_int_equal(stetho_train_load_params(&b, dir16), STETHO_OK);
    for (size_t i = 0; i < a.n_params; i++)
        assert_true(b.params[i] == stetho_bf16_to_f32(stetho_f32_to_bf16(a.params[i])));

    /* another architecture: refused, parameters unchanged */
    stetho_train_config c2 = c;
    c2.intermediate += 4;
    stetho_train_model w;
    init_tiny(&w, &c2, 34);
    float *before = malloc(w.n_params * sizeof *before);
    assert_non_null(before);
    memcpy(before, w.params, w.n_params * sizeof *before);
    assert_int_equal(stetho_train_load_params(&w, dir), STETHO_ERR_MISMATCH);
    assert_non_null(strstr(stetho_last_error(), "mlp"));
    assert_memory_equal(before, w.params, w.n_params * sizeof *before);
    free(before);
    stetho_train_model_free(&w);
    /* more layers than the file has: the missing tensor is named */
    c2 = c;
    c2.n_layers += 1;
    init_tiny(&w, &c2, 35);
    assert_int_equal(stetho_train_load_params(&w, dir), STETHO_ERR_NOTFOUND);
    assert_non_null(strstr(stetho_last_error(), "layers.2."));
    stetho_train_model_free(&w);
    /* no checkpoint at all */
    assert_int_not_equal(stetho_train_load_params(&b, tu_tmpdir("train_load_empty")), STETHO_OK);
    stetho_train_model_free(&a);
    stetho_train_model_free(&b);
}

/* ------------------------------------------------------------ determinism */

static void run_steps(stetho_train_model *m, const stetho_train_config *c, uint64_t seed) {
    init_tiny(m, c, seed);
    enum { B = 2, T = 10 };
    int32_t tok[B * T], tgt[B * T];
    random_tokens(tok, B * T, c->vocab, 21);
    random_tokens(tgt, B * T, c->vocab, 22);
    stetho_train_opt o;
    stetho_train_opt_default(&o);
    o.warmup_steps = 2;
    o.total_steps = 4;
    for (int s = 0; s < 4; s++) {
        loss_of(m, tok, tgt, NULL, B, T);
        assert_int_equal(stetho_train_backward(m), STETHO_OK);
        assert_int_equal(stetho_train_step(m, &o, NULL), STETHO_OK);
    }
}

static void test_deterministic(void **state) {
    (void)state;
    stetho_train_config c = tiny_config();
    stetho_train_model a, b, d;
    run_steps(&a, &c, 42);
    run_steps(&b, &c, 42);
    run_steps(&d, &c, 43);
    assert_memory_equal(a.params, b.params, a.n_params * sizeof(float));
    assert_memory_equal(a.grads, b.grads, a.n_params * sizeof(float));
    assert_memory_not_equal(a.params, d.params, a.n_params * sizeof(float));
    stetho_train_model_free(&a);
    stetho_train_model_free(&b);
    stetho_train_model_free(&d);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layout_and_init),
        cmocka_unit_test(test_gradients_match_finite_differences),
        cmocka_unit_test(test_loss_and_mask),
        cmocka_unit_test(test_schedule),
        cmocka_unit_test(test_steps_reduce_loss),
        cmocka_unit_test(test_frozen_groups_and_grad_norm),
        cmocka_unit_test(test_saved_model_matches_inference),
        cmocka_unit_test(test_load_params),
        cmocka_unit_test(test_deterministic),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
