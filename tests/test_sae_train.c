/* SAE training and evaluation: a planted dictionary (sparse combinations of known
 * unit directions plus noise) is recovered by every architecture, training is
 * deterministic, the trained SAE survives a SAELens save/load, the evaluation
 * metrics hold on SAEs whose answers are known (an exact reconstruction, a zero
 * one), and bad configurations are refused.
 *
 * Run as `test_sae_train --make-cli-fixture DIR` it instead writes the small model,
 * tokenizer and texts tests/cli_sae_train.sh trains on. */
#include "testutil.h"

#include "stetho/bpe_train.h"
#include "stetho/model.h"
#include "stetho/sae.h"
#include "stetho/sae_eval.h"
#include "stetho/sae_train.h"
#include "stetho/tokenizer.h"
#include "stetho/toydata.h"
#include "stetho/train.h"
#include "sae_train_internal.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- planted data */

enum { PD = 32, PF = 64 }; /* d_model, planted features */

typedef struct {
    float dirs[PF * PD]; /* unit rows */
    float offset[PD];    /* a constant the SAE's b_dec should absorb */
    uint64_t rng;
} planted;

static void planted_init(planted *p, uint64_t seed) {
    p->rng = seed;
    for (int f = 0; f < PF; f++) {
        double ss = 0;
        for (int i = 0; i < PD; i++) {
            p->dirs[f * PD + i] = tu_rand_normal(&p->rng);
            ss += (double)p->dirs[f * PD + i] * p->dirs[f * PD + i];
        }
        for (int i = 0; i < PD; i++) p->dirs[f * PD + i] /= (float)sqrt(ss);
    }
    for (int i = 0; i < PD; i++) p->offset[i] = 0.5f * tu_rand_normal(&p->rng);
}

static float uniform01(uint64_t *rng) { return (float)(tu_rand_u64(rng) >> 40) / 16777216.0f; }

/* n rows: each feature on with probability 3/PF, coefficient uniform in [1, 3],
 * plus the offset and uniform noise of standard deviation 0.05 per dimension; the
 * whole thing times 7 (the trainer's input scaling must not care). */
static void planted_rows(planted *p, float *x, size_t n) {
    for (size_t r = 0; r < n; r++) {
        float *row = x + r * PD;
        for (int i = 0; i < PD; i++) row[i] = p->offset[i] + 0.05f * 1.7320508f * (2 * uniform01(&p->rng) - 1);
        for (int f = 0; f < PF; f++)
            if (tu_rand_u64(&p->rng) % PF < 3) {
                float c = 1.0f + 2.0f * uniform01(&p->rng);
                for (int i = 0; i < PD; i++) row[i] += c * p->dirs[f * PD + i];
            }
        for (int i = 0; i < PD; i++) row[i] *= 7.0f;
    }
}

/* Planted directions matched by some decoder row with cosine > 0.9. */
static int recovered(const planted *p, const stetho_sae *s) {
    int hits = 0;
    for (int f = 0; f < PF; f++) {
        double best = -1;
        for (int j = 0; j < s->d_sae; j++) {
            double dot = 0, nn = 0;
            for (int i = 0; i < PD; i++) {
                dot += (double)p->dirs[f * PD + i] * s->W_dec[(size_t)j * PD + i];
                nn += (double)s->W_dec[(size_t)j * PD + i] * s->W_dec[(size_t)j * PD + i];
            }
            if (nn > 0 && dot / sqrt(nn) > best) best = dot / sqrt(nn);
        }
        hits += best > 0.9;
    }
    return hits;
}

/* Train on `tokens` planted rows fed in blocks of 100 (a model's prompts), with
 * 4000 held-out rows. */
static void train_planted(const stetho_sae_train_config *cfg, uint64_t data_seed, stetho_sae *out,
                          stetho_sae_train_report *rep) {
    planted p;
    planted_init(&p, data_seed);
    stetho_sae_trainer *tr;
    stetho_status st = stetho_sae_trainer_init(&tr, cfg);
    if (st) fail_msg("init: %s", stetho_last_error());
    float *x = malloc(sizeof(float) * PD * 100);
    for (uint64_t done = 0; done < cfg->total_tokens; done += 100) {
        planted_rows(&p, x, 100);
        assert_int_equal(stetho_sae_trainer_feed(tr, x, 100), STETHO_OK);
    }
    assert_true(stetho_sae_trainer_done(tr));
    stetho_sae_trainer_set_heldout(tr, true);
    for (int b = 0; b < 40; b++) {
        planted_rows(&p, x, 100);
        assert_int_equal(stetho_sae_trainer_feed(tr, x, 100), STETHO_OK);
    }
    free(x);
    if ((st = stetho_sae_trainer_finish(tr, out, rep))) fail_msg("finish: %s", stetho_last_error());
    stetho_sae_trainer_free(tr);
}

static void planted_config(stetho_sae_train_config *c, stetho_sae_arch arch) {
    stetho_sae_train_config_default(c);
    c->d_model = PD;
    c->d_sae = 2 * PF;
    c->arch = arch;
    c->k = 4;
    c->batch = 256;
    c->total_tokens = 120000;
    c->seed = 7;
    c->heldout_tokens = 4000;
    snprintf(c->hook, sizeof c->hook, "blocks.1.hook_resid_post");
    c->layer = 1;
}

static void check_planted(stetho_sae_arch arch, uint64_t tokens, int batch, int min_hits, double min_ev) {
    stetho_set_threads(1); /* the test machine is shared: no barrier waits on tiny steps */
    stetho_sae_train_config c;
    planted_config(&c, arch);
    c.total_tokens = tokens;
    c.batch = batch;
    stetho_sae s;
    stetho_sae_train_report rep;
    train_planted(&c, 11, &s, &rep);
    planted p;
    planted_init(&p, 11);
    int hits = recovered(&p, &s);
    printf("%-8s planted directions recovered (cos > 0.9): %d/%d; held-out (%llu tokens): explained variance %.4f, "
           "L0 %.2f, cossim %.4f; %llu training tokens\n",
           stetho_sae_arch_name(arch), hits, PF, (unsigned long long)rep.heldout.n_tokens,
           rep.heldout.explained_variance, rep.heldout.l0, rep.heldout.cossim,
           (unsigned long long)rep.final.tokens_trained);
    assert_int_equal(rep.heldout.n_tokens, 4000);
    assert_int_equal(rep.final.tokens_trained, tokens);
    assert_int_equal(rep.final.steps, (tokens + (uint64_t)batch - 1) / (uint64_t)batch);
    assert_true(hits >= min_hits);
    assert_true(rep.heldout.explained_variance >= min_ev);
    if (arch == STETHO_SAE_TOPK) assert_true(rep.heldout.l0 <= c.k + 1e-9);
    /* decoder rows stay unit norm after folding the input scale in */
    for (int j = 0; j < s.d_sae; j++) {
        double nn = 0;
        for (int i = 0; i < PD; i++) nn += (double)s.W_dec[j * PD + i] * s.W_dec[j * PD + i];
        assert_true(fabs(sqrt(nn) - 1) < 1e-4);
    }
    assert_string_equal(s.hook, "blocks.1.hook_resid_post");
    assert_int_equal(s.layer, 1);
    stetho_sae_free(&s);
}

static void test_planted_topk(void **state) {
    (void)state;
    check_planted(STETHO_SAE_TOPK, 120000, 128, 60, 0.85);
}

static void test_planted_relu(void **state) {
    (void)state;
    check_planted(STETHO_SAE_RELU, 150000, 32, 56, 0.85);
}

static void test_planted_jumprelu(void **state) {
    (void)state;
    check_planted(STETHO_SAE_JUMPRELU, 150000, 32, 54, 0.8);
}

/* ---------------------------------------------------------------- gradients */

/* Analytic gradients of compute_grads against central differences of its loss on
 * a small SAE. With AuxK off every parameter is checked. With AuxK on (half the
 * features marked dead, their encoder biases so low they never fire), only the
 * dead features' parameters are: AuxK treats its target x - x_hat as a constant,
 * which a finite difference of the other parameters would not. JumpReLU's
 * threshold gradient is a straight-through estimate, not a derivative: skipped. */
static void check_gradients(stetho_sae_arch arch, bool aux) {
    enum { D = 8, M = 16, N = 12 };
    stetho_sae_train_config c;
    stetho_sae_train_config_default(&c);
    c.d_model = D, c.d_sae = M, c.arch = arch, c.k = 3, c.batch = N, c.total_tokens = 1000, c.seed = 5;
    c.aux_coef = aux ? 0.5 : 0;
    c.aux_k = 3;
    c.jump_init_threshold = 0.3;
    stetho_sae_trainer *tr;
    assert_int_equal(stetho_sae_trainer_init(&tr, &c), STETHO_OK);
    uint64_t rng = 99;
    float x[N * D];
    for (int i = 0; i < N * D; i++) x[i] = 1.5f * tu_rand_normal(&rng);
    uint8_t dead[M];
    for (int j = 0; j < M; j++) dead[j] = j % 2;
    st_sae_trainer_set_dead(tr, dead);
    float *p, *g;
    size_t np;
    st_sae_trainer_loss_grad(tr, x, N, &p, &g, &np);
    float *b_enc = p + 2 * M * D;
    for (int i = 0; i < M + D; i++) b_enc[i] = 0.2f * tu_rand_normal(&rng); /* b_enc, b_dec */
    if (aux)
        for (int j = 1; j < M; j += 2) b_enc[j] = -8.0f;
    double loss = st_sae_trainer_loss_grad(tr, x, N, &p, &g, &np);
    float *ga = malloc(np * sizeof *ga);
    memcpy(ga, g, np * sizeof *ga);
    int checked = 0, bad = 0;
    double aux_norm = 0;
    for (size_t i = 0; i < 2 * M * D + M + D; i++) {
        int feature = i < 2 * M * D ? (int)(i / D) % M : i < 2 * M * D + M ? (int)(i - 2 * M * D) : -1;
        if (aux && (feature < 0 || !dead[feature])) continue;
        float keep = p[i], h = 1e-2f;
        p[i] = keep + h;
        double lp = st_sae_trainer_loss_grad(tr, x, N, &p, &g, &np);
        p[i] = keep - h;
        double lm = st_sae_trainer_loss_grad(tr, x, N, &p, &g, &np);
        p[i] = keep;
        double num = (lp - lm) / (2 * h), ana = ga[i];
        checked++;
        aux_norm += ana * ana;
        if (fabs(num - ana) > 2e-2 * fmax(1.0, fabs(ana))) {
            bad++;
            printf("%s: parameter %zu: analytic %.6f numeric %.6f\n", stetho_sae_arch_name(arch), i, ana, num);
        }
    }
    printf("%s%s: loss %.4f; %d of %d gradients agree with central differences\n", stetho_sae_arch_name(arch),
           aux ? " (AuxK, dead features)" : "", loss, checked - bad, checked);
    assert_true(bad <= checked / 50); /* a probe may cross a ReLU/TopK kink */
    if (aux) assert_true(aux_norm > 1e-4); /* AuxK's gradient is there */
    free(ga);
    stetho_sae_trainer_free(tr);
}

static void test_gradients(void **state) {
    (void)state;
    stetho_set_threads(2);
    stetho_sae_arch archs[] = {STETHO_SAE_TOPK, STETHO_SAE_RELU, STETHO_SAE_JUMPRELU};
    for (int a = 0; a < 3; a++) {
        check_gradients(archs[a], false);
        check_gradients(archs[a], true);
    }
}

/* ---------------------------------------------------------------- determinism, round trip */

static void small_config(stetho_sae_train_config *c, stetho_sae_arch arch, uint64_t seed) {
    planted_config(c, arch);
    c->total_tokens = 20000;
    c->batch = 128;
    c->buffer_tokens = 1024;
    c->seed = seed;
    c->b_dec_init = STETHO_SAE_BDEC_GEOMETRIC_MEDIAN;
}

static bool same_sae(const stetho_sae *a, const stetho_sae *b) {
    size_t dm = (size_t)a->d_model, ds = (size_t)a->d_sae;
    return a->d_model == b->d_model && a->d_sae == b->d_sae && a->arch == b->arch && a->k == b->k &&
           !memcmp(a->W_enc, b->W_enc, dm * ds * 4) && !memcmp(a->W_dec, b->W_dec, dm * ds * 4) &&
           !memcmp(a->b_enc, b->b_enc, ds * 4) && !memcmp(a->b_dec, b->b_dec, dm * 4) &&
           (!a->threshold || !memcmp(a->threshold, b->threshold, ds * 4));
}

static void test_deterministic(void **state) {
    (void)state;
    stetho_sae_arch archs[] = {STETHO_SAE_TOPK, STETHO_SAE_JUMPRELU};
    for (int threads = 1; threads <= 2; threads++)
        for (size_t a = 0; a < 2; a++) {
            stetho_set_threads(threads);
            stetho_sae_train_config c;
            stetho_sae s1, s2, s3;
            small_config(&c, archs[a], 3);
            train_planted(&c, 5, &s1, NULL);
            train_planted(&c, 5, &s2, NULL);
            small_config(&c, archs[a], 4);
            train_planted(&c, 5, &s3, NULL);
            assert_true(same_sae(&s1, &s2));
            assert_false(same_sae(&s1, &s3));
            stetho_sae_free(&s1), stetho_sae_free(&s2), stetho_sae_free(&s3);
        }
}

/* Large enough that the OpenMP loops and BLAS run on several threads. */
static void train_random(stetho_sae_arch arch, uint64_t seed, stetho_sae *out) {
    enum { D = 64, M = 2048, B = 256 };
    stetho_sae_train_config c;
    stetho_sae_train_config_default(&c);
    c.d_model = D, c.d_sae = M, c.arch = arch, c.k = 16, c.batch = B, c.buffer_tokens = 2 * B;
    c.total_tokens = 6 * B, c.seed = seed, c.dead_window = 2 * B, c.heldout_tokens = 0;
    stetho_sae_trainer *tr;
    assert_int_equal(stetho_sae_trainer_init(&tr, &c), STETHO_OK);
    uint64_t rng = 77;
    float *x = malloc(sizeof(float) * D * B);
    for (int b = 0; b < 6; b++) {
        for (int i = 0; i < D * B; i++) x[i] = tu_rand_normal(&rng) + (i % D == 3 ? 4.0f : 0.0f);
        assert_int_equal(stetho_sae_trainer_feed(tr, x, B), STETHO_OK);
    }
    free(x);
    assert_int_equal(stetho_sae_trainer_finish(tr, out, NULL), STETHO_OK);
    stetho_sae_trainer_free(tr);
}

static void test_deterministic_threads(void **state) {
    (void)state;
    stetho_sae_arch archs[] = {STETHO_SAE_TOPK, STETHO_SAE_RELU};
    for (size_t a = 0; a < 2; a++) {
        stetho_sae s1, s2, s3;
        stetho_set_threads(2);
        train_random(archs[a], 1, &s1);
        train_random(archs[a], 1, &s2);
        stetho_set_threads(1);
        train_random(archs[a], 1, &s3);
        assert_true(same_sae(&s1, &s2));
        /* another thread count may round differently, but trains the same SAE */
        double diff = 0, norm = 0;
        for (size_t i = 0; i < (size_t)64 * 2048; i++) {
            diff += fabs((double)s1.W_dec[i] - s3.W_dec[i]);
            norm += fabs((double)s1.W_dec[i]);
        }
        assert_true(diff < 1e-3 * norm);
        stetho_sae_free(&s1), stetho_sae_free(&s2), stetho_sae_free(&s3);
    }
}

static void test_save_load(void **state) {
    (void)state;
    stetho_set_threads(2);
    stetho_sae_arch archs[] = {STETHO_SAE_TOPK, STETHO_SAE_RELU, STETHO_SAE_JUMPRELU};
    planted p;
    planted_init(&p, 5);
    float *x = malloc(sizeof(float) * PD * 500);
    planted_rows(&p, x, 500);
    for (size_t a = 0; a < 3; a++) {
        stetho_sae_train_config c;
        small_config(&c, archs[a], 8);
        stetho_sae s, back;
        stetho_sae_train_report rep;
        train_planted(&c, 5, &s, &rep);
        char tag[32];
        snprintf(tag, sizeof tag, "sae_rt_%zu", a);
        const char *dir = tu_path(tu_tmpdir(tag), "sae");
        assert_int_equal(stetho_sae_save_saelens(&s, dir, false), STETHO_OK);
        assert_int_equal(stetho_sae_save_saelens(&s, dir, false), STETHO_ERR_EXISTS);
        if (stetho_sae_load(&back, dir)) fail_msg("load: %s", stetho_last_error());
        assert_int_equal(back.format, STETHO_SAE_FORMAT_SAELENS);
        assert_int_equal(back.norm, STETHO_SAE_NORM_NONE);
        assert_true(back.apply_b_dec_to_input);
        assert_string_equal(back.hook, "blocks.1.hook_resid_post");
        assert_int_equal(back.layer, 1);
        assert_true(same_sae(&s, &back));
        /* the loaded SAE measures what the trainer reported on the same held-out kind of data */
        stetho_sae_metrics m1, m2;
        assert_int_equal(stetho_sae_eval_rows(&s, x, 500, &m1), STETHO_OK);
        assert_int_equal(stetho_sae_eval_rows(&back, x, 500, &m2), STETHO_OK);
        assert_true(m1.explained_variance == m2.explained_variance && m1.l0 == m2.l0);
        assert_true(fabs(m1.explained_variance - rep.heldout.explained_variance) < 0.05);
        stetho_sae_free(&s);
        stetho_sae_free(&back);
    }
    free(x);
}

/* ---------------------------------------------------------------- metrics */

/* Reconstruction metrics against a double-precision computation written here. */
static void test_recon_metrics(void **state) {
    (void)state;
    enum { D = 6, M = 10, N = 50 };
    stetho_sae s = {.arch = STETHO_SAE_TOPK, .d_model = D, .d_sae = M, .k = 3, .layer = -1,
                    .apply_b_dec_to_input = true};
    s.W_enc = malloc(sizeof(float) * D * M), s.W_dec = malloc(sizeof(float) * D * M);
    s.b_enc = malloc(sizeof(float) * M), s.b_dec = malloc(sizeof(float) * D);
    uint64_t rng = 4;
    for (int i = 0; i < D * M; i++) s.W_enc[i] = tu_rand_normal(&rng), s.W_dec[i] = tu_rand_normal(&rng);
    for (int j = 0; j < M; j++) s.b_enc[j] = j < 3 ? -50.0f : 0.3f * tu_rand_normal(&rng); /* 0-2 never fire */
    for (int i = 0; i < D; i++) s.b_dec[i] = tu_rand_normal(&rng);
    float x[N * D], f[N * M], xh[N * D];
    for (int i = 0; i < N * D; i++) x[i] = 2 * tu_rand_normal(&rng) + (float)(i % D);
    assert_int_equal(stetho_sae_encode(&s, x, N, f), STETHO_OK);
    assert_int_equal(stetho_sae_decode(&s, f, x, N, xh), STETHO_OK);
    double sse = 0, l0 = 0, cos = 0, mu[D] = {0}, var = 0;
    int fires[M] = {0};
    for (int r = 0; r < N; r++) {
        double xx = 0, yy = 0, xy = 0;
        for (int i = 0; i < D; i++) {
            double a = x[r * D + i], b = xh[r * D + i];
            sse += (a - b) * (a - b), xx += a * a, yy += b * b, xy += a * b;
            mu[i] += a / N;
        }
        cos += xy / sqrt(xx * yy) / N;
        for (int j = 0; j < M; j++)
            if (f[r * M + j] > 0) l0++, fires[j]++;
    }
    for (int r = 0; r < N; r++)
        for (int i = 0; i < D; i++) var += (x[r * D + i] - mu[i]) * (x[r * D + i] - mu[i]);
    int dead = 0, dense = 0;
    for (int j = 0; j < M; j++) dead += fires[j] == 0, dense += fires[j] > 0.1 * N;
    stetho_sae_metrics m;
    assert_int_equal(stetho_sae_eval_rows(&s, x, N, &m), STETHO_OK);
    assert_int_equal(m.n_tokens, N);
    assert_true(fabs(m.mse - sse / N) < 1e-6 * (1 + sse / N));
    assert_true(fabs(m.explained_variance - (1 - sse / var)) < 1e-6);
    assert_true(fabs(m.l0 - l0 / N) < 1e-12);
    assert_true(fabs(m.cossim - cos) < 1e-6);
    assert_int_equal(m.dead_features, dead);
    assert_true(dead >= 3);
    assert_int_equal(m.dense_features, dense);
    assert_true(isnan(m.ce_loss_score));
    stetho_sae_free(&s);
}

/* An SAE whose reconstruction is exact: relu(x) - relu(-x) = x. */
static void exact_sae(stetho_sae *s, int d, const char *hook) {
    *s = (stetho_sae){.arch = STETHO_SAE_RELU, .d_model = d, .d_sae = 2 * d, .layer = -1, .apply_b_dec_to_input = true};
    snprintf(s->hook, sizeof s->hook, "%s", hook);
    s->W_enc = calloc((size_t)(2 * d * d), sizeof(float));
    s->W_dec = calloc((size_t)(2 * d * d), sizeof(float));
    s->b_enc = calloc((size_t)(2 * d), sizeof(float));
    s->b_dec = calloc((size_t)d, sizeof(float));
    for (int i = 0; i < d; i++) {
        s->W_enc[i * 2 * d + i] = 1, s->W_enc[i * 2 * d + d + i] = -1;
        s->W_dec[i * d + i] = 1, s->W_dec[(d + i) * d + i] = -1;
    }
}

static stetho_status zero_edit(void *user, int layer, stetho_hook_kind kind, float *data, int n, int dim) {
    (void)user, (void)layer, (void)kind;
    memset(data, 0, sizeof(float) * (size_t)n * (size_t)dim);
    return STETHO_OK;
}

/* Mean next-token cross-entropy over positions whose token is not `skip`. */
static double ref_ce(stetho_model *m, const int32_t *tok, int T, const stetho_hooks *h, int32_t skip, int *count) {
    int V = m->cfg.vocab;
    float *logits = malloc(sizeof(float) * (size_t)T * V);
    assert_int_equal(stetho_model_forward(m, tok, T, logits, h), STETHO_OK);
    double ce = 0;
    *count = 0;
    for (int t = 0; t + 1 < T; t++) {
        if (tok[t] == skip) continue;
        double mx = -1e30, s = 0;
        for (int v = 0; v < V; v++) mx = fmax(mx, logits[(size_t)t * V + v]);
        for (int v = 0; v < V; v++) s += exp(logits[(size_t)t * V + v] - mx);
        ce += -(logits[(size_t)t * V + tok[t + 1]] - mx - log(s));
        (*count)++;
    }
    free(logits);
    return ce / *count;
}

static void test_downstream_metrics(void **state) {
    (void)state;
    stetho_set_threads(1); /* a forward pass of this toy model is all fork-join overhead */
    const char *dir = tu_make_model(tu_path(tu_tmpdir("sae_eval_model"), "m"),
                                    &(tu_model_spec){.hidden = 16, .vocab = 32, .seed = 3, .scale = 0.3f});
    stetho_model m;
    assert_int_equal(stetho_model_load(&m, dir), STETHO_OK);
    stetho_sae exact, zero, bad;
    exact_sae(&exact, 16, "blocks.0.hook_resid_post");
    exact_sae(&zero, 16, "blocks.0.hook_resid_post");
    memset(zero.W_dec, 0, sizeof(float) * 2 * 16 * 16); /* reconstructs 0: the same as ablation */
    const stetho_sae *saes[] = {&exact, &zero};
    int32_t skip = 2;
    stetho_sae_evaluator *ev;
    assert_int_equal(stetho_sae_evaluator_init(&ev, &m, saes, 2, &skip, 1, true), STETHO_OK);
    int32_t tok[2][20];
    uint64_t rng = 8;
    int kept = 0;
    for (int p = 0; p < 2; p++)
        for (int t = 0; t < 20; t++) {
            tok[p][t] = t == 0 ? 2 : (int32_t)(tu_rand_u64(&rng) % 32);
            kept += tok[p][t] != 2;
        }
    for (int p = 0; p < 2; p++) assert_int_equal(stetho_sae_evaluator_prompt(ev, tok[p], 20), STETHO_OK);
    stetho_sae_metrics a, z;
    stetho_sae_evaluator_result(ev, 0, &a);
    stetho_sae_evaluator_result(ev, 1, &z);
    printf("exact SAE: ce clean %.5f with sae %.5f ablation %.5f score %.5f; kl %.3g / %.5f score %.5f\n",
           a.ce_loss_without_sae, a.ce_loss_with_sae, a.ce_loss_with_ablation, a.ce_loss_score, a.kl_div_with_sae,
           a.kl_div_with_ablation, a.kl_div_score);
    assert_int_equal(a.n_tokens, (uint64_t)kept);
    assert_true(a.explained_variance == 1.0 && a.mse == 0.0 && fabs(a.cossim - 1) < 1e-9);
    assert_true(a.ce_loss_score == 1.0 && a.kl_div_with_sae == 0.0 && a.kl_div_score == 1.0);
    assert_true(fabs(a.ce_loss_with_ablation - a.ce_loss_without_sae) > 0.01);
    /* the zero SAE with BOS ignored: spliced = ablated except at BOS */
    assert_true(z.explained_variance <= 0 && z.mse > 0 && z.l0 > 0);
    assert_true(z.ce_loss_score != 1.0 && isfinite(z.ce_loss_score));
    /* independent CE: clean, and ablated with a hook of our own */
    int n1, n2, n3, n4;
    double clean = (ref_ce(&m, tok[0], 20, NULL, 2, &n1) * n1 + ref_ce(&m, tok[1], 20, NULL, 2, &n2) * n2) / (n1 + n2);
    stetho_hooks h;
    stetho_hooks_init(&h);
    assert_int_equal(stetho_hooks_add_edit(&h, "blocks.0.hook_resid_post", zero_edit, NULL), STETHO_OK);
    double abl = (ref_ce(&m, tok[0], 20, &h, 2, &n3) * n3 + ref_ce(&m, tok[1], 20, &h, 2, &n4) * n4) / (n3 + n4);
    stetho_hooks_free(&h);
    assert_int_equal(a.n_ce_positions, (uint64_t)(n1 + n2));
    assert_true(fabs(clean - a.ce_loss_without_sae) < 1e-4);
    assert_true(fabs(abl - a.ce_loss_with_ablation) < 1e-4);
    stetho_sae_evaluator_free(ev);
    /* nothing ignored: the zero SAE's splice is the ablation itself */
    const stetho_sae *zs[] = {&zero};
    assert_int_equal(stetho_sae_evaluator_init(&ev, &m, zs, 1, NULL, 0, true), STETHO_OK);
    for (int p = 0; p < 2; p++) assert_int_equal(stetho_sae_evaluator_prompt(ev, tok[p], 20), STETHO_OK);
    stetho_sae_evaluator_result(ev, 0, &z);
    assert_int_equal(z.n_tokens, 40);
    assert_true(z.ce_loss_score == 0.0 && z.kl_div_score == 0.0);
    assert_true(z.ce_loss_with_sae == z.ce_loss_with_ablation);
    stetho_sae_evaluator_free(ev);

    /* refusals name the SAE and the mismatch */
    exact_sae(&bad, 8, "blocks.0.hook_resid_post");
    const stetho_sae *b1[] = {&bad};
    assert_int_equal(stetho_sae_evaluator_init(&ev, &m, b1, 1, NULL, 0, true), STETHO_ERR_MISMATCH);
    assert_non_null(strstr(stetho_last_error(), "d_model 8"));
    snprintf(exact.hook, sizeof exact.hook, "blocks.7.hook_resid_post");
    assert_int_equal(stetho_sae_evaluator_init(&ev, &m, saes, 1, NULL, 0, true), STETHO_ERR_MISMATCH);
    exact.hook[0] = 0;
    assert_int_equal(stetho_sae_evaluator_init(&ev, &m, saes, 1, NULL, 0, true), STETHO_ERR_INVALID);
    stetho_sae_free(&exact), stetho_sae_free(&zero), stetho_sae_free(&bad);
    stetho_model_free(&m);
}

/* ---------------------------------------------------------------- training from a model */

/* The trainer as a hook consumer of a real forward pass, with a token mask, and
 * two layers fed by the same forward; a mismatched width is refused. */
static void test_hook_consumer(void **state) {
    (void)state;
    stetho_set_threads(1);
    const char *dir = tu_make_model(tu_path(tu_tmpdir("sae_hook_model"), "m"),
                                    &(tu_model_spec){.hidden = 16, .vocab = 32, .seed = 5, .scale = 0.3f});
    stetho_model m;
    assert_int_equal(stetho_model_load(&m, dir), STETHO_OK);
    stetho_sae_trainer *tr[2];
    stetho_hooks h;
    stetho_hooks_init(&h);
    for (int l = 0; l < 2; l++) {
        stetho_sae_train_config c;
        stetho_sae_train_config_default(&c);
        c.d_model = 16, c.d_sae = 32, c.k = 4, c.batch = 64, c.total_tokens = 2000, c.layer = l;
        snprintf(c.hook, sizeof c.hook, "blocks.%d.hook_resid_post", l);
        assert_int_equal(stetho_sae_trainer_init(&tr[l], &c), STETHO_OK);
        assert_int_equal(stetho_hooks_add(&h, c.hook, stetho_sae_trainer_hook, tr[l]), STETHO_OK);
    }
    int32_t tok[25];
    uint8_t keep[25];
    uint64_t rng = 1;
    int prompts = 0;
    while (!stetho_sae_trainer_done(tr[0]) && prompts < 1000) {
        for (int t = 0; t < 25; t++) tok[t] = t == 0 ? 2 : (int32_t)(tu_rand_u64(&rng) % 32), keep[t] = t > 0;
        for (int l = 0; l < 2; l++) stetho_sae_trainer_set_mask(tr[l], keep, 25);
        assert_int_equal(stetho_model_forward(&m, tok, 25, NULL, &h), STETHO_OK);
        prompts++;
    }
    assert_int_equal(prompts, (2000 + 23) / 24); /* 24 kept tokens per prompt */
    assert_true(stetho_sae_trainer_done(tr[1]));
    stetho_sae_train_progress pg;
    stetho_sae_trainer_progress(tr[1], &pg);
    assert_int_equal(pg.tokens_seen, 2000);
    for (int l = 0; l < 2; l++) stetho_sae_trainer_set_mask(tr[l], keep, 24);
    assert_int_equal(stetho_model_forward(&m, tok, 25, NULL, &h), STETHO_ERR_INVALID); /* mask length */
    stetho_sae s;
    for (int l = 0; l < 2; l++) {
        assert_int_equal(stetho_sae_trainer_finish(tr[l], &s, NULL), STETHO_OK);
        assert_int_equal(s.layer, l);
        stetho_sae_free(&s);
        stetho_sae_trainer_free(tr[l]);
    }
    stetho_hooks_free(&h);
    /* width mismatch */
    stetho_sae_train_config c;
    stetho_sae_train_config_default(&c);
    c.d_model = 8, c.d_sae = 16, c.k = 4, c.total_tokens = 100;
    stetho_sae_trainer *t8;
    assert_int_equal(stetho_sae_trainer_init(&t8, &c), STETHO_OK);
    stetho_hooks_init(&h);
    assert_int_equal(stetho_hooks_add(&h, "blocks.0.hook_resid_post", stetho_sae_trainer_hook, t8), STETHO_OK);
    assert_int_equal(stetho_model_forward(&m, tok, 25, NULL, &h), STETHO_ERR_MISMATCH);
    assert_non_null(strstr(stetho_last_error(), "blocks.0.hook_resid_post has width 16"));
    stetho_hooks_free(&h);
    stetho_sae_trainer_free(t8);
    stetho_model_free(&m);
}

static void test_bad_config(void **state) {
    (void)state;
    stetho_sae_train_config c;
    stetho_sae_trainer *t;
    stetho_sae_train_config_default(&c);
    c.d_model = 8, c.d_sae = 16, c.total_tokens = 100;
    c.k = 17;
    assert_int_equal(stetho_sae_trainer_init(&t, &c), STETHO_ERR_INVALID);
    assert_non_null(strstr(stetho_last_error(), "k = 17"));
    c.k = 4, c.arch = STETHO_SAE_GATED;
    assert_int_equal(stetho_sae_trainer_init(&t, &c), STETHO_ERR_UNSUPPORTED);
    c.arch = STETHO_SAE_TOPK, c.total_tokens = 0;
    assert_int_equal(stetho_sae_trainer_init(&t, &c), STETHO_ERR_INVALID);
    c.total_tokens = 100, c.d_sae = 0;
    assert_int_equal(stetho_sae_trainer_init(&t, &c), STETHO_ERR_INVALID);
    c.d_sae = 16;
    assert_int_equal(stetho_sae_trainer_init(&t, &c), STETHO_OK);
    stetho_sae s;
    assert_int_equal(stetho_sae_trainer_finish(t, &s, NULL), STETHO_ERR_INVALID); /* nothing fed */
    float row[8] = {1, 2, NAN, 0, 0, 0, 0, 0};
    assert_int_equal(stetho_sae_trainer_feed(t, row, 1), STETHO_ERR_INVALID);
    stetho_sae_trainer_free(t);
    /* every allocation of init failing in turn is reported, not crashed on */
    for (uint64_t i = 1; i < 60; i++) {
        stetho_fault_alloc_after(i);
        stetho_status st = stetho_sae_trainer_init(&t, &c);
        stetho_fault_alloc_after(0);
        if (st == STETHO_OK) {
            stetho_sae_trainer_free(t);
            break;
        }
        assert_int_equal(st, STETHO_ERR_NOMEM);
        assert_null(t);
    }
}

/* ---------------------------------------------------------------- CLI fixture */

/* DIR/model (a Gemma 3 text model of 2 layers, d 32, trained briefly on the texts so
 * that its predictions mean something, with its BPE tokenizer), DIR/train.jsonl (120
 * texts) and DIR/eval.jsonl (20 other texts). */
static int make_cli_fixture(const char *dir) {
    stetho_set_threads(1);
    stetho_toy_docs docs = {0};
    if (stetho_toy_general_generate(140, 17, &docs)) goto fail;
    char path[4096];
    snprintf(path, sizeof path, "%s/model", dir);
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", path);
    if (system(cmd)) goto fail;
    stetho_bpe_options bo = {.vocab_size = 320};
    stetho_bpe_model *bpe;
    if (stetho_bpe_train((const char *const *)docs.text, docs.len, 120, &bo, &bpe)) goto fail;
    stetho_status st = stetho_bpe_save(bpe, path);
    stetho_bpe_free(bpe);
    if (st) goto fail;
    stetho_tokenizer tok;
    if (stetho_tokenizer_load(&tok, path)) goto fail;
    /* training stream: the first 120 texts, BOS before each */
    size_t n_stream = 0, cap = 1 << 16;
    int32_t *stream = malloc(cap * sizeof *stream);
    for (size_t d = 0; d < 120; d++) {
        int32_t *ids;
        size_t n;
        if (stetho_tokenizer_encode(&tok, docs.text[d], docs.len[d], true, &ids, &n)) goto fail;
        for (size_t i = 0; i < n && n_stream < cap; i++) stream[n_stream++] = ids[i];
        free(ids);
    }
    stetho_tokenizer_free(&tok);
    stetho_train_config tc;
    stetho_train_config_default(&tc);
    tc.n_layers = 2, tc.hidden = 32, tc.intermediate = 64, tc.n_heads = 2, tc.n_kv_heads = 1, tc.head_dim = 16;
    tc.vocab = 320, tc.max_position = 256, tc.query_pre_attn_scalar = 16;
    stetho_train_model tm;
    if (stetho_train_model_init(&tm, &tc, 1)) goto fail;
    stetho_train_opt o;
    stetho_train_opt_default(&o);
    o.lr = 1e-2, o.min_lr = 1e-3, o.warmup_steps = 5, o.total_steps = 60;
    enum { B = 4, T = 64 };
    int32_t in[B * T], tg[B * T];
    uint64_t rng = 3;
    float loss = 0;
    for (int step = 0; step < 60; step++) {
        for (int b = 0; b < B; b++) {
            size_t at = (size_t)(tu_rand_u64(&rng) % (n_stream - T - 1));
            for (int t = 0; t < T; t++) in[b * T + t] = stream[at + t], tg[b * T + t] = stream[at + t + 1];
        }
        if (stetho_train_forward(&tm, in, tg, NULL, B, T, &loss) || stetho_train_backward(&tm) ||
            stetho_train_step(&tm, &o, NULL))
            goto fail;
    }
    free(stream);
    if (stetho_train_save(&tm, path, STETHO_DTYPE_F32)) goto fail;
    stetho_train_model_free(&tm);
    for (int f = 0; f < 2; f++) {
        snprintf(path, sizeof path, "%s/%s", dir, f ? "eval.jsonl" : "train.jsonl");
        FILE *out = fopen(path, "w");
        if (!out) goto fail;
        for (size_t d = f ? 120 : 0; d < (f ? 140u : 120u); d++) {
            json_t *o = json_pack("{s:s%}", "text", docs.text[d], docs.len[d]);
            char *line = json_dumps(o, JSON_COMPACT);
            fprintf(out, "%s\n", line);
            free(line);
            json_decref(o);
        }
        if (fclose(out)) goto fail;
    }
    stetho_toy_docs_free(&docs);
    printf("fixture in %s (model loss after training %.3f)\n", dir, loss);
    return 0;
fail:
    fprintf(stderr, "make-cli-fixture: %s\n", stetho_last_error());
    return 1;
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "--make-cli-fixture")) return make_cli_fixture(argv[2]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gradients),         cmocka_unit_test(test_planted_topk),
        cmocka_unit_test(test_planted_relu),      cmocka_unit_test(test_planted_jumprelu),
        cmocka_unit_test(test_deterministic),     cmocka_unit_test(test_deterministic_threads),
        cmocka_unit_test(test_save_load),
        cmocka_unit_test(test_recon_metrics),     cmocka_unit_test(test_downstream_metrics),
        cmocka_unit_test(test_hook_consumer),     cmocka_unit_test(test_bad_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
