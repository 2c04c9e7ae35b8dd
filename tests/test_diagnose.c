/* Diagnosis: every statistic and score against a small example computed by
 * hand; the probe on separable, partly separable and inseparable prompts; a
 * generated Gemma 3 model with generated SAEs where a planted feature fires
 * only on domain text (top of its layer, raises only its layer's scores);
 * hook routing; BOS exclusion, limits and truncation; outputs that `stetho
 * edit` (select.c) and `stetho project` read back; refusals. */
#include "testutil.h"

#include "stetho/bpe_train.h"
#include "stetho/diagnose.h"
#include "stetho/project.h"
#include "stetho/select.h"
#include "stetho/tokenizer.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NEAR(a, b) assert_true(fabs((double)(a) - (double)(b)) < 1e-9 * (1 + fabs((double)(b))))

/* ------------------------------------------------------------ hand example */

/* Three features, two prompts of two tokens per set (acts [token][feature]):
 *   domain  P1 [1,0,2] [3,0,0]   P2 [0,0,1] [2,1,0]
 *   general P1 [0,1,1] [0,2,0]   P2 [1,0,1] [0,1,0]
 * N_D = N_G = 4.  f0: c 3|1, mass 6|1, sum sq 14|1;  f1: c 1|3, mass 1|4, sq 1|6;
 * f2: c 2|2, mass 3|2, sq 5|2.  Domain mass 10, general mass 7. */
static void feed_example(stetho_diag_acc *a) {
    float d1[] = {1, 0, 2, 3, 0, 0}, d2[] = {0, 0, 1, 2, 1, 0}, g1[] = {0, 1, 1, 0, 2, 0}, g2[] = {1, 0, 1, 0, 1, 0};
    assert_int_equal(stetho_diag_acc_init(a, 5, 3), STETHO_OK);
    assert_int_equal(stetho_diag_acc_add(a, STETHO_SET_DOMAIN, d1, 2), STETHO_OK);
    assert_int_equal(stetho_diag_acc_add(a, STETHO_SET_GENERAL, g1, 2), STETHO_OK);
    assert_int_equal(stetho_diag_acc_add(a, STETHO_SET_DOMAIN, d2, 2), STETHO_OK);
    assert_int_equal(stetho_diag_acc_add(a, STETHO_SET_GENERAL, g2, 2), STETHO_OK);
    assert_int_equal(stetho_diag_acc_add(a, STETHO_SET_GENERAL, g2, 0), STETHO_OK); /* nothing */
    assert_int_equal(stetho_diag_acc_add(a, 2, g2, 2), STETHO_ERR_INVALID);
}

static void test_hand_example(void **state) {
    (void)state;
    stetho_diag_acc a;
    feed_example(&a);
    assert_int_equal(a.n_tokens[0], 4);
    assert_int_equal(a.n_tokens[1], 4);
    assert_int_equal(a.n_prompts, 4);
    stetho_diagnose_opts o;
    stetho_diagnose_opts_default(&o);
    o.ratio = 2; /* ln 2 = 0.693 < ln(7/3) = 0.847: f0 is domain-specific */
    o.k = 2;
    o.top_features = 3;
    stetho_diag_layer L;
    assert_int_equal(stetho_diag_layer_compute(&a, &o, &L), STETHO_OK);
    assert_int_equal(L.layer, 5);
    const stetho_diag_feature *f = L.features;
    NEAR(f[0].freq[0], 0.75), NEAR(f[0].freq[1], 0.25), NEAR(f[1].freq[0], 0.25), NEAR(f[2].freq[1], 0.5);
    NEAR(f[0].mean[0], 1.5), NEAR(f[0].mean[1], 0.25), NEAR(f[1].mean[1], 1.0), NEAR(f[2].mean[0], 0.75);
    /* smoothed: ln(((3 + .5) / (4 + 1)) / ((1 + .5) / (4 + 1))) = ln(7/3) */
    NEAR(f[0].log_ratio, log(7.0 / 3)), NEAR(f[1].log_ratio, -log(7.0 / 3)), NEAR(f[2].log_ratio, 0);
    NEAR(f[0].contrast, 0.6 - 1.0 / 7), NEAR(f[1].contrast, 0.1 - 4.0 / 7), NEAR(f[2].contrast, 0.3 - 2.0 / 7);
    /* Cohen's d, pooled over 4 + 4 - 2 = 6 degrees of freedom:
     * f0: squared deviations 14 - 36/4 = 5 and 1 - 1/4 = 0.75 -> d = 1.25 / sqrt(5.75/6) */
    NEAR(f[0].effect, 1.25 / sqrt(5.75 / 6));
    NEAR(f[1].effect, -0.75 / sqrt((0.75 + 2.0) / 6));
    NEAR(f[2].effect, 0.25 / sqrt((2.75 + 1.0) / 6));
    assert_int_equal(L.n_live, 3);
    assert_int_equal(L.n_specific, 1);
    NEAR(L.scores[STETHO_METRIC_SPECIFIC_MASS], 6.0 / 10);
    NEAR(L.scores[STETHO_METRIC_SPECIFIC_FRAC], 1.0 / 3);
    /* the two features with most domain mass: f0 (6) and f2 (3) */
    NEAR(L.scores[STETHO_METRIC_TOPK_CONTRAST], ((0.6 - 1.0 / 7) + (0.3 - 2.0 / 7)) / 2);
    /* the two largest d > 0: f0 and f2 */
    NEAR(L.scores[STETHO_METRIC_EFFECT], (1.25 / sqrt(5.75 / 6) + 0.25 / sqrt(3.75 / 6)) / 2);
    NEAR(L.score, L.scores[STETHO_METRIC_SPECIFIC_MASS]);
    assert_int_equal(L.n_top, 3);
    assert_int_equal(L.top[0], 0), assert_int_equal(L.top[1], 2), assert_int_equal(L.top[2], 1);
    stetho_diag_layer_free(&L);

    /* the default ratio 4 (ln 4 = 1.39) makes nothing specific; K = 1 */
    stetho_diagnose_opts_default(&o);
    o.k = 1;
    o.metric = STETHO_METRIC_EFFECT;
    /* asked for beyond the SAE's 3 features: refused, naming d_sae and the layer;
     * the defaults (K 8, 32 top features) are capped instead */
    o.top_features = 100;
    assert_int_equal(stetho_diag_layer_compute(&a, &o, &L), STETHO_ERR_INVALID);
    assert_non_null(strstr(stetho_last_error(), "top_features = 100 is larger than the 3 features (d_sae) of the layer 5 SAE"));
    o.top_features = 0;
    o.k = 4;
    assert_int_equal(stetho_diag_layer_compute(&a, &o, &L), STETHO_ERR_INVALID);
    assert_non_null(strstr(stetho_last_error(), "K = 4 is larger than the 3 features (d_sae) of the layer 5 SAE"));
    o.k = 1;
    assert_int_equal(stetho_diag_layer_compute(&a, &o, &L), STETHO_OK);
    NEAR(L.scores[STETHO_METRIC_SPECIFIC_MASS], 0);
    NEAR(L.scores[STETHO_METRIC_SPECIFIC_FRAC], 0);
    NEAR(L.scores[STETHO_METRIC_TOPK_CONTRAST], 0.6 - 1.0 / 7);
    NEAR(L.score, 1.25 / sqrt(5.75 / 6));
    assert_int_equal(L.n_top, 3);
    stetho_diag_layer_free(&L);
    o.smoothing = 0;
    assert_int_equal(stetho_diag_layer_compute(&a, &o, &L), STETHO_ERR_INVALID);
    stetho_diag_acc_free(&a);

    /* one set only: no general tokens -> effect and probe undefined, mass scores defined */
    float d1[] = {1, 0, 2, 3, 0, 0};
    assert_int_equal(stetho_diag_acc_init(&a, 0, 3), STETHO_OK);
    assert_int_equal(stetho_diag_acc_add(&a, STETHO_SET_DOMAIN, d1, 2), STETHO_OK);
    stetho_diagnose_opts_default(&o);
    assert_int_equal(stetho_diag_layer_compute(&a, &o, &L), STETHO_OK);
    /* the pseudo-count keeps an empty set from making everything specific:
     * f0 fires on both tokens, r = ln((2 + .5) / 3) - ln(.5 / 1) = ln(5/3) < ln 4 */
    NEAR(L.features[0].log_ratio, log(5.0 / 3));
    NEAR(L.scores[STETHO_METRIC_SPECIFIC_MASS], 0);
    assert_true(isnan(L.scores[STETHO_METRIC_EFFECT]) && isnan(L.scores[STETHO_METRIC_PROBE]));
    stetho_diag_layer_free(&L);
    stetho_diag_acc_free(&a);
}

/* One token per prompt, so the pooled sample is the token itself. */
static double probe_of(const float (*dom)[3], int nd, const float (*gen)[3], int ng, int folds) {
    stetho_diag_acc a;
    assert_int_equal(stetho_diag_acc_init(&a, 0, 3), STETHO_OK);
    for (int i = 0; i < nd; i++) assert_int_equal(stetho_diag_acc_add(&a, STETHO_SET_DOMAIN, dom[i], 1), STETHO_OK);
    for (int i = 0; i < ng; i++) assert_int_equal(stetho_diag_acc_add(&a, STETHO_SET_GENERAL, gen[i], 1), STETHO_OK);
    stetho_diagnose_opts o;
    stetho_diagnose_opts_default(&o);
    o.k = 1;
    o.probe_folds = folds;
    stetho_diag_layer L;
    assert_int_equal(stetho_diag_layer_compute(&a, &o, &L), STETHO_OK);
    double p = L.scores[STETHO_METRIC_PROBE];
    stetho_diag_layer_free(&L);
    stetho_diag_acc_free(&a);
    return p;
}

static void test_probe(void **state) {
    (void)state;
    /* separable on feature 0 (feature 2 is noise) */
    const float dom[6][3] = {{2, 0, 1}, {3, 0, 0}, {3.5f, 0, 2}, {2.5f, 0, 0}, {4, 0, 1}, {3, 0, 0}};
    const float gen[6][3] = {{0, 2, 1}, {0, 1, 0}, {0, 3, 2}, {0, 2, 0}, {0, 1, 1}, {0, 2.5f, 0}};
    NEAR(probe_of(dom, 6, gen, 6, 5), 1.0);
    /* one domain prompt looks exactly like general text: it is misclassified in
     * whichever fold holds it, everything else is right: (5/6 + 6/6) / 2 */
    const float odd[6][3] = {{2, 0, 1}, {3, 0, 0}, {0, 2, 0}, {2.5f, 0, 0}, {4, 0, 1}, {3, 0, 0}};
    NEAR(probe_of(odd, 6, gen, 6, 5), (5.0 / 6 + 1.0) / 2);
    /* identical sets: each test pair gets one prediction, so exactly one of the two is right */
    NEAR(probe_of(gen, 6, gen, 6, 3), 0.5);
    /* fewer than 2 prompts in a set: undefined */
    assert_true(isnan(probe_of(dom, 1, gen, 6, 5)));
}

/* ------------------------------------------------------------ the model */

static const char *DOMAIN[] = {"12 + 7 = 19", "x^2 - 4 = 0", "3 * 5 = 15", "sqrt(16) = 4", "9 / 3 = 3"};
static const char *GENERAL[] = {"the cat sat on the mat", "rain fell over the quiet town", "she sang a song",
                                "birds fly south", "a red boat"};
#define NP 5
#define HID 128
#define DSAE 16
#define PLANT 11

static const char *g_dir, *g_model;
static int32_t *g_ids[2][NP];
static size_t g_len[2][NP];

static void write_jsonl(const char *path, const char *field, const char **texts, int n) {
    FILE *f = fopen(path, "w");
    for (int i = 0; i < n; i++) fprintf(f, "{\"%s\": \"%s\"}\n", field, texts[i]);
    fclose(f);
}

static int setup(void **state) {
    (void)state;
    g_dir = tu_tmpdir("diagnose");
    /* a tokenizer trained on both sets (repeated so merges form) */
    const char *docs[4 * 2 * NP];
    size_t lens[4 * 2 * NP];
    for (int r = 0, k = 0; r < 4; r++)
        for (int i = 0; i < NP; i++) {
            docs[k] = DOMAIN[i], lens[k++] = strlen(DOMAIN[i]);
            docs[k] = GENERAL[i], lens[k++] = strlen(GENERAL[i]);
        }
    stetho_bpe_options bo = {.vocab_size = 300};
    stetho_bpe_model *bpe;
    if (stetho_bpe_train(docs, lens, 4 * 2 * NP, &bo, &bpe)) return 1;
    tu_model_spec spec = {.n_layers = 3, .hidden = HID, .intermediate = 64, .n_heads = 2, .n_kv_heads = 1,
                          .head_dim = 16, .vocab = 300, .seed = 11};
    g_model = tu_make_model(tu_path(g_dir, "model"), &spec);
    stetho_status st = stetho_bpe_save(bpe, g_model); /* replaces the generated tokenizer_config.json */
    stetho_bpe_free(bpe);
    if (st) return 1;
    stetho_tokenizer tok;
    if (stetho_tokenizer_load(&tok, g_model)) return 1;
    for (int i = 0; i < NP; i++) {
        if (stetho_tokenizer_encode(&tok, DOMAIN[i], strlen(DOMAIN[i]), true, &g_ids[0][i], &g_len[0][i]) ||
            stetho_tokenizer_encode(&tok, GENERAL[i], strlen(GENERAL[i]), true, &g_ids[1][i], &g_len[1][i]))
            return 1;
        if (g_ids[0][i][0] != tok.bos_id || g_ids[1][i][0] != tok.bos_id) return 1;
    }
    stetho_tokenizer_free(&tok);
    write_jsonl(tu_path(g_dir, "domain.jsonl"), "problem", DOMAIN, NP);
    write_jsonl(tu_path(g_dir, "general.jsonl"), "text", GENERAL, NP);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    for (int s = 0; s < 2; s++)
        for (int i = 0; i < NP; i++) free(g_ids[s][i]);
    return 0;
}

/* Residual rows (BOS left out) at layer 1's resid_post, every prompt of both sets. */
typedef struct {
    double *rows; /* [cap, HID] */
    int n, cap;
} rows_buf;

static stetho_status grab(void *user, int layer, stetho_hook_kind kind, const float *data, int T, int D) {
    (void)layer, (void)kind;
    rows_buf *b = user;
    for (int t = 1; t < T; t++) {
        assert_true(b->n < b->cap);
        for (int i = 0; i < D; i++) b->rows[(size_t)b->n * HID + i] = data[(size_t)t * D + i];
        b->n++;
    }
    return STETHO_OK;
}

/* w with x.w = +1 on domain rows and -1 on general rows: the minimum-norm
 * interpolant w = X^T (X X^T + eps I)^-1 y (rows < HID, so it exists). */
static void planted_direction(double *w, double *margin_dom, double *margin_gen) {
    stetho_model m;
    assert_int_equal(stetho_model_load(&m, g_model), STETHO_OK);
    rows_buf b = {calloc(400 * HID, sizeof(double)), 0, 400};
    int *label = calloc(400, sizeof *label);
    stetho_hooks h;
    stetho_hooks_init(&h);
    assert_int_equal(stetho_hooks_add_at(&h, 1, STETHO_HOOK_RESID_POST, grab, &b), STETHO_OK);
    for (int s = 0; s < 2; s++)
        for (int i = 0; i < NP; i++) {
            int before = b.n;
            assert_int_equal(stetho_model_forward(&m, g_ids[s][i], (int)g_len[s][i], NULL, &h), STETHO_OK);
            for (int r = before; r < b.n; r++) label[r] = s == 0 ? 1 : -1;
        }
    stetho_hooks_free(&h);
    stetho_model_free(&m);
    int n = b.n;
    assert_true(n < HID);
    double *G = calloc((size_t)n * (2 * n), sizeof *G); /* [G | I], Gauss-Jordan */
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < n; j++) {
            double s = 0;
            for (int k = 0; k < HID; k++) s += b.rows[(size_t)i * HID + k] * b.rows[(size_t)j * HID + k];
            G[(size_t)i * 2 * n + j] = s + (i == j ? 1e-9 : 0);
        }
        G[(size_t)i * 2 * n + n + i] = 1;
    }
    for (int c = 0; c < n; c++) {
        int p = c;
        for (int r = c + 1; r < n; r++)
            if (fabs(G[(size_t)r * 2 * n + c]) > fabs(G[(size_t)p * 2 * n + c])) p = r;
        for (int j = 0; j < 2 * n; j++) {
            double t = G[(size_t)c * 2 * n + j];
            G[(size_t)c * 2 * n + j] = G[(size_t)p * 2 * n + j];
            G[(size_t)p * 2 * n + j] = t;
        }
        double piv = G[(size_t)c * 2 * n + c];
        for (int j = 0; j < 2 * n; j++) G[(size_t)c * 2 * n + j] /= piv;
        for (int r = 0; r < n; r++)
            if (r != c) {
                double f = G[(size_t)r * 2 * n + c];
                for (int j = 0; j < 2 * n; j++) G[(size_t)r * 2 * n + j] -= f * G[(size_t)c * 2 * n + j];
            }
    }
    for (int k = 0; k < HID; k++) w[k] = 0;
    for (int i = 0; i < n; i++) {
        double alpha = 0;
        for (int j = 0; j < n; j++) alpha += G[(size_t)i * 2 * n + n + j] * label[j];
        for (int k = 0; k < HID; k++) w[k] += alpha * b.rows[(size_t)i * HID + k];
    }
    *margin_dom = INFINITY, *margin_gen = -INFINITY;
    for (int i = 0; i < n; i++) {
        double z = 0;
        for (int k = 0; k < HID; k++) z += w[k] * b.rows[(size_t)i * HID + k];
        if (label[i] > 0 && z < *margin_dom) *margin_dom = z;
        if (label[i] < 0 && z > *margin_gen) *margin_gen = z;
    }
    free(G), free(b.rows), free(label);
}

/* An SAELens ReLU SAE of DSAE random features reading hook (at layer); when
 * plant is non-NULL, feature PLANT reads 5 x plant with bias -2.5. */
static void make_sae(const char *dir, int layer, const char *hook, int d_model, uint64_t seed, const double *plant) {
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", dir);
    assert_int_equal(system(cmd), 0);
    stetho_sae s = {0};
    s.arch = STETHO_SAE_RELU;
    s.d_model = d_model;
    s.d_sae = DSAE;
    s.layer = layer;
    snprintf(s.hook, sizeof s.hook, "%s", hook);
    s.W_enc = calloc((size_t)d_model * DSAE, sizeof(float));
    s.W_dec = calloc((size_t)d_model * DSAE, sizeof(float));
    s.b_enc = calloc(DSAE, sizeof(float));
    s.b_dec = calloc((size_t)d_model, sizeof(float));
    for (int i = 0; i < d_model * DSAE; i++) {
        s.W_enc[i] = 0.3f * tu_rand_normal(&seed) / sqrtf((float)d_model);
        s.W_dec[i] = tu_rand_normal(&seed);
    }
    if (plant)
        for (int k = 0; k < d_model; k++) s.W_enc[(size_t)k * DSAE + PLANT] = (float)(5 * plant[k]);
    if (plant) s.b_enc[PLANT] = -2.5f;
    assert_int_equal(stetho_sae_save_saelens(&s, dir, false), STETHO_OK);
    free(s.W_enc), free(s.W_dec), free(s.b_enc), free(s.b_dec);
}

static stetho_status run(const char *saes, const stetho_diagnose_opts *o, stetho_diagnose_result *r) {
    return stetho_diagnose_run(g_model, saes, tu_path(g_dir, "domain.jsonl"), tu_path(g_dir, "general.jsonl"), o, r);
}

static bool same(double a, double b) { return (isnan(a) && isnan(b)) || a == b; }

static void test_planted_feature(void **state) {
    (void)state;
    double w[HID], md, mg;
    planted_direction(w, &md, &mg);
    assert_true(md > 0.9 && mg < -0.9); /* the fixture: domain and general rows are separated */
    const char *with = tu_path(g_dir, "saes-planted"), *without = tu_path(g_dir, "saes-random");
    for (int l = 0; l < 3; l++) {
        char sub[32], hook[64];
        snprintf(sub, sizeof sub, "layer_%d", l);
        snprintf(hook, sizeof hook, "blocks.%d.hook_resid_post", l);
        make_sae(tu_path(with, sub), l, hook, HID, 100 + (uint64_t)l, l == 1 ? w : NULL);
        make_sae(tu_path(without, sub), l, hook, HID, 100 + (uint64_t)l, NULL);
    }
    stetho_diagnose_opts o;
    stetho_diagnose_opts_default(&o);
    stetho_diagnose_result a, b;
    assert_int_equal(run(with, &o, &a), STETHO_OK);
    assert_int_equal(run(without, &o, &b), STETHO_OK);

    /* counts: every token but the BOS */
    uint64_t want[2] = {0, 0};
    for (int s = 0; s < 2; s++)
        for (int i = 0; i < NP; i++) want[s] += g_len[s][i] - 1;
    assert_int_equal(a.n_tokens[0], want[0]);
    assert_int_equal(a.n_tokens[1], want[1]);
    assert_true(a.bos_excluded);
    assert_int_equal(a.n_prompts[0], NP);
    assert_int_equal(a.n_scored, 3);
    assert_int_equal(a.n_layers, 3);
    assert_int_equal(a.d_model, HID);

    const stetho_diag_layer *L = &a.layers[1];
    const stetho_diag_feature *p = &L->features[PLANT];
    assert_int_equal(L->top[0], PLANT); /* the planted feature tops its layer */
    NEAR(p->freq[0], 1.0);
    NEAR(p->freq[1], 0.0);
    for (int j = 0; j < DSAE; j++) {
        if (j == PLANT) continue;
        assert_true(L->features[j].log_ratio < p->log_ratio);
        assert_true(L->features[j].effect < p->effect);
    }
    assert_true(L->scores[STETHO_METRIC_PROBE] >= b.layers[1].scores[STETHO_METRIC_PROBE]);
    /* planting changes its own layer only, and raises its scores */
    for (int l = 0; l < 3; l += 2)
        for (int m = 0; m < STETHO_METRIC_COUNT; m++) assert_true(same(a.layers[l].scores[m], b.layers[l].scores[m]));
    assert_true(L->scores[STETHO_METRIC_SPECIFIC_MASS] > b.layers[1].scores[STETHO_METRIC_SPECIFIC_MASS]);
    assert_true(L->scores[STETHO_METRIC_TOPK_CONTRAST] > b.layers[1].scores[STETHO_METRIC_TOPK_CONTRAST]);
    assert_true(L->scores[STETHO_METRIC_EFFECT] > b.layers[1].scores[STETHO_METRIC_EFFECT]);
    bool was_specific = b.layers[1].features[PLANT].log_ratio > log(o.ratio);
    assert_int_equal(L->n_specific, b.layers[1].n_specific - was_specific + 1);
    /* and, carrying most of the domain mass, makes its layer the top one */
    for (int l = 0; l < 3; l += 2) assert_true(a.layers[l].score < L->score);
    stetho_diagnose_result_free(&b);
    /* a 1-sparse probe finds the planted feature and separates the sets perfectly */
    o.k = 1;
    assert_int_equal(run(with, &o, &b), STETHO_OK);
    NEAR(b.layers[1].scores[STETHO_METRIC_PROBE], 1.0);
    stetho_diagnose_result_free(&b);

    /* outputs: refused over existing files, read back by select and project */
    const char *out = tu_path(g_dir, "scores.json");
    assert_int_equal(stetho_diagnose_write(&a, out, false), STETHO_OK);
    assert_true(tu_exists(tu_path(g_dir, "scores.tsv")) && tu_exists(tu_path(g_dir, "scores.svg")));
    size_t len0, len1;
    char *before = tu_read_file(out, &len0);
    assert_int_equal(stetho_diagnose_write(&a, out, false), STETHO_ERR_EXISTS);
    char *after = tu_read_file(out, &len1);
    assert_true(len0 == len1 && !memcmp(before, after, len0));
    free(before), free(after);
    assert_int_equal(stetho_diagnose_write(&a, out, true), STETHO_OK);
    stetho_scores sc;
    assert_int_equal(stetho_scores_load(&sc, out, NULL), STETHO_OK);
    assert_int_equal(sc.n_layers, 3);
    assert_int_equal(sc.d_model, HID);
    for (int l = 0; l < 3; l++) assert_true(fabs(sc.score[l] - a.layers[l].score) <= 1e-8 * fabs(a.layers[l].score));
    stetho_scores_free(&sc);
    assert_int_equal(stetho_scores_load(&sc, out, "probe"), STETHO_OK);
    for (int l = 0; l < 3; l++) assert_true(fabs(sc.score[l] - a.layers[l].scores[STETHO_METRIC_PROBE]) < 1e-8);
    stetho_scores_free(&sc);
    stetho_project_layer *pl;
    size_t npl;
    stetho_checkpoint ck; /* the diagnosed model: its scores pass the shape check */
    assert_int_equal(stetho_checkpoint_open(&ck, g_model), STETHO_OK);
    assert_int_equal(stetho_project_layers_from_scores(out, 4, &ck, &pl, &npl), STETHO_OK);
    stetho_checkpoint_close(&ck);
    assert_int_equal(npl, 3);
    assert_int_equal(pl[1].layer, 1);
    for (int i = 0; i < 4; i++) assert_int_equal(pl[1].features[i], L->top[i]);
    stetho_project_layers_free(pl, npl);
    json_t *root = json_load_file(out, 0, NULL);
    assert_non_null(root);
    json_t *feats = json_object_get(json_array_get(json_object_get(root, "layers"), 1), "features");
    assert_int_equal(json_array_size(json_object_get(feats, "log_ratio")), DSAE);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(root, "domain"), "tokens")), (json_int_t)want[0]);
    json_decref(root);
    /* every failing allocation or write leaves no output and no temp file behind */
    const char *fdir = tu_tmpdir("diagnose-faults"), *fout = tu_path(fdir, "s.json");
    for (int kind = 0; kind < 2; kind++) {
        uint64_t (*fault)(uint64_t) = kind ? stetho_fault_write_after : stetho_fault_alloc_after;
        fault(0);
        assert_int_equal(stetho_diagnose_write(&a, fout, false), STETHO_OK);
        uint64_t total = fault(0);
        assert_true(total > 0);
        for (int i = 0; i < 3; i++) remove(tu_path(fdir, i == 0 ? "s.json" : i == 1 ? "s.tsv" : "s.svg"));
        for (uint64_t n = 1; n <= total; n++) {
            fault(n);
            stetho_status st = stetho_diagnose_write(&a, fout, false);
            fault(0);
            assert_int_not_equal(st, STETHO_OK);
            assert_int_equal(tu_count_entries(fdir), 0);
        }
    }
    char *tsv;
    assert_int_equal(stetho_diagnose_tsv(&a, &tsv), STETHO_OK);
    assert_non_null(strstr(tsv, "\n1\tyes\t1\t"));
    free(tsv);
    stetho_diagnose_result_free(&a);
}

/* The same SAE read at blocks.0.hook_resid_post and at blocks.1.hook_resid_pre
 * sees the same residual stream: identical statistics. Layers without an SAE
 * are listed unscored. */
static void test_hook_routing(void **state) {
    (void)state;
    const char *p = tu_path(g_dir, "route-post"), *q = tu_path(g_dir, "route-pre");
    make_sae(tu_path(p, "a"), 0, "blocks.0.hook_resid_post", HID, 7, NULL);
    make_sae(tu_path(q, "a"), 1, "blocks.1.hook_resid_pre", HID, 7, NULL);
    stetho_diagnose_opts o;
    stetho_diagnose_opts_default(&o);
    stetho_diagnose_result a, b;
    assert_int_equal(run(p, &o, &a), STETHO_OK);
    assert_int_equal(run(q, &o, &b), STETHO_OK);
    assert_true(a.layers[0].scored && !a.layers[1].scored && !a.layers[2].scored);
    assert_true(!b.layers[0].scored && b.layers[1].scored);
    assert_string_equal(b.layers[1].hook, "blocks.1.hook_resid_pre");
    assert_int_equal(a.n_scored, 1);
    for (int j = 0; j < DSAE; j++) {
        const stetho_diag_feature *x = &a.layers[0].features[j], *y = &b.layers[1].features[j];
        assert_true(x->freq[0] == y->freq[0] && x->mean[1] == y->mean[1] && x->effect == y->effect);
    }
    for (int m = 0; m < STETHO_METRIC_COUNT; m++) assert_true(same(a.layers[0].scores[m], b.layers[1].scores[m]));
    char *json;
    assert_int_equal(stetho_diagnose_json(&a, &json), STETHO_OK);
    assert_non_null(strstr(json, "\"unscored_layers\": [1, 2]"));
    assert_non_null(strstr(json, "{\"layer\": 2, \"scored\": false, \"score\": null, \"top_features\": []}"));
    free(json);
    char *svg;
    assert_int_equal(stetho_diagnose_svg(&a, &svg), STETHO_OK);
    assert_non_null(strstr(svg, "<svg") && strstr(svg, "n/a") && strstr(svg, "</svg>"));
    free(svg);
    stetho_diagnose_result_free(&a);
    stetho_diagnose_result_free(&b);

    /* --limit and --max-tokens */
    o.limit = 2;
    o.max_tokens = 3;
    assert_int_equal(run(p, &o, &a), STETHO_OK);
    assert_int_equal(a.n_prompts[0], 2);
    assert_int_equal(a.n_tokens[0], 4); /* 2 prompts x (3 - BOS) */
    size_t trunc = 0;
    for (int i = 0; i < 2; i++) trunc += g_len[0][i] > 3;
    assert_int_equal(a.n_truncated[0], trunc);
    assert_int_equal(a.opts.max_tokens, 3);
    stetho_diagnose_result_free(&a);
}

static void test_refusals(void **state) {
    (void)state;
    stetho_diagnose_opts o;
    stetho_diagnose_opts_default(&o);
    stetho_diagnose_result r;
    const char *bad = tu_path(g_dir, "bad-dmodel");
    make_sae(tu_path(bad, "layer_0"), 0, "blocks.0.hook_resid_post", 8, 1, NULL);
    assert_int_equal(run(bad, &o, &r), STETHO_ERR_MISMATCH);
    assert_non_null(strstr(stetho_last_error(), "d_model is 8 but the model's hidden size is 128"));
    bad = tu_path(g_dir, "bad-layer");
    make_sae(tu_path(bad, "x"), 5, "blocks.5.hook_resid_post", HID, 1, NULL);
    assert_int_equal(run(bad, &o, &r), STETHO_ERR_MISMATCH);
    assert_non_null(strstr(stetho_last_error(), "layers 0-2"));
    bad = tu_path(g_dir, "bad-hook");
    make_sae(tu_path(bad, "x"), 1, "blocks.1.attn.hook_z", HID, 1, NULL);
    assert_int_equal(run(bad, &o, &r), STETHO_ERR_UNSUPPORTED);
    assert_non_null(strstr(stetho_last_error(), "hook_z"));

    const char *good = tu_path(g_dir, "route-post");
    const char *empty = tu_path(g_dir, "empty.jsonl"), *blank = tu_path(g_dir, "blank.jsonl");
    tu_write_file(empty, "", 0);
    tu_write_file(blank, "{\"text\": \"\"}\n", 13);
    const char *dom = tu_path(g_dir, "domain.jsonl"), *gen = tu_path(g_dir, "general.jsonl");
    assert_int_equal(stetho_diagnose_run(g_model, good, empty, gen, &o, &r), STETHO_ERR_INVALID);
    assert_non_null(strstr(stetho_last_error(), "no prompts"));
    assert_int_equal(stetho_diagnose_run(g_model, good, dom, blank, &o, &r), STETHO_ERR_INVALID);
    assert_non_null(strstr(stetho_last_error(), "no tokens"));
    o.field = "text";
    assert_int_equal(stetho_diagnose_run(g_model, good, dom, gen, &o, &r), STETHO_ERR_FORMAT);
    assert_non_null(strstr(stetho_last_error(), "domain.jsonl:1: no string field 'text'"));
    o.field = NULL;
    assert_int_equal(stetho_diagnose_run(g_model, tu_path(g_dir, "nothing-here"), dom, gen, &o, &r), STETHO_ERR_NOTFOUND);
    o.k = -1;
    assert_int_equal(stetho_diagnose_run(g_model, good, dom, gen, &o, &r), STETHO_ERR_INVALID);
    /* K or top features beyond the SAEs' DSAE features: refused before any prompt runs */
    o.k = DSAE + 1;
    assert_int_equal(stetho_diagnose_run(g_model, good, dom, gen, &o, &r), STETHO_ERR_INVALID);
    assert_non_null(strstr(stetho_last_error(), "is larger than the 16 features (d_sae) of the layer 0 SAE"));
    o.k = DSAE;
    o.top_features = DSAE + 5;
    assert_int_equal(stetho_diagnose_run(g_model, good, dom, gen, &o, &r), STETHO_ERR_INVALID);
    assert_non_null(strstr(stetho_last_error(), "top_features = 21"));
    stetho_diagnose_opts_default(&o);

    char *tsv, *svg;
    assert_int_equal(stetho_diagnose_paths("/x/s.json", &tsv, &svg), STETHO_OK);
    assert_string_equal(tsv, "/x/s.tsv");
    assert_string_equal(svg, "/x/s.svg");
    free(tsv), free(svg);
    assert_int_equal(stetho_diagnose_paths("scores", &tsv, &svg), STETHO_OK);
    assert_string_equal(tsv, "scores.tsv");
    free(tsv), free(svg);
    stetho_metric m;
    assert_true(stetho_metric_from_name("topk_contrast", &m) && m == STETHO_METRIC_TOPK_CONTRAST);
    assert_false(stetho_metric_from_name("best", &m));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hand_example),    cmocka_unit_test(test_probe),   cmocka_unit_test(test_planted_feature),
        cmocka_unit_test(test_hook_routing),    cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
