/* Benchmark: SAE encoding and training against the machine's sgemm, measured in
 * the same run (issue 4's Speed section).
 *
 *   encode   stetho_sae_encode of 4096 tokens with a d_model 2560, d_sae 16384 SAE
 *            (Gemma Scope's 16k width on Gemma 3 4B), JumpReLU and TopK: its
 *            2 n d_model d_sae flops per second as a fraction of cblas_sgemm's on
 *            the same product (target >= 0.70)
 *   train    stetho_sae_trainer tokens/s (TopK, k 32) at the tiny world's width
 *            (d_model 128, d_sae 4096) and at d_model 1152 (Gemma 3 1B), d_sae
 *            8192, as a fraction of what the encoder product alone would allow at
 *            sgemm speed (2 d_model d_sae flops per token)
 *
 * usage: bench_sae STETHO_BINARY WORK_DIR [JSON_OUT]  (the first two are unused:
 * make bench's convention). Threads: all cores (stetho_set_threads default). */
#include "bench_util.h"
#include "stetho/sae.h"
#include "stetho/sae_train.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { DM = 2560, DS = 16384, NTOK = 4096 };

static uint64_t g_rng = 12345;
static float frand(void) { /* uniform in [-1, 1) */
    g_rng ^= g_rng << 13, g_rng ^= g_rng >> 7, g_rng ^= g_rng << 17;
    return (float)(g_rng >> 40) / (float)(1 << 23) - 1.0f;
}

static void *xmalloc(size_t n) {
    void *p = malloc(n);
    if (!p) {
        fprintf(stderr, "bench_sae: out of memory (%zu bytes)\n", n);
        exit(1);
    }
    return p;
}

static void die(const char *what) {
    fprintf(stderr, "bench_sae: %s: %s\n", what, stetho_last_error());
    exit(1);
}

/* Best of reps of C = A B with A [n, k], B [k, m]: GFLOP/s. */
static double sgemm_gflops(const float *a, const float *b, float *c, int n, int k, int m, int reps) {
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, m, k, 1.0f, a, k, b, m, 0.0f, c, m);
        double dt = now() - t0;
        if (dt < best) best = dt;
    }
    return 2.0 * n * k * (double)m / best / 1e9;
}

static double encode_gflops(const stetho_sae *s, const float *x, float *acts, int reps) {
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        if (stetho_sae_encode(s, x, NTOK, acts)) die("encode");
        double dt = now() - t0;
        if (dt < best) best = dt;
    }
    return 2.0 * NTOK * DM * (double)DS / best / 1e9;
}

/* Training tokens/s over `steps` steps of `batch` tokens after one warm-up step. */
static double train_tok_s(int d, int m, int batch, int steps) {
    stetho_sae_train_config c;
    stetho_sae_train_config_default(&c);
    c.d_model = d, c.d_sae = m, c.k = 32, c.batch = batch, c.buffer_tokens = (size_t)2 * batch;
    c.total_tokens = (uint64_t)batch * (steps + 2), c.heldout_tokens = 0;
    stetho_sae_trainer *t;
    if (stetho_sae_trainer_init(&t, &c)) die("trainer init");
    float *x = xmalloc((size_t)batch * d * sizeof *x);
    for (size_t i = 0; i < (size_t)batch * d; i++) x[i] = frand() + (i % 7 == 0 ? 2.0f : 0.0f);
    /* the first buffer fill (2 batches) trains one step: the warm-up */
    if (stetho_sae_trainer_feed(t, x, (size_t)batch) || stetho_sae_trainer_feed(t, x, (size_t)batch)) die("feed");
    stetho_sae_train_progress p0, p1;
    stetho_sae_trainer_progress(t, &p0);
    double t0 = now();
    for (int s = 0; s < steps; s++)
        if (stetho_sae_trainer_feed(t, x, (size_t)batch)) die("feed");
    double dt = now() - t0;
    stetho_sae_trainer_progress(t, &p1);
    stetho_sae_trainer_free(t);
    free(x);
    return (double)(p1.tokens_trained - p0.tokens_trained) / dt;
}

int main(int argc, char **argv) {
    const char *json = argc > 3 ? argv[3] : NULL;
    int threads = stetho_get_threads();
    openblas_set_num_threads(threads);

    /* a JumpReLU SAE of Gemma Scope's shape with random weights, and activations */
    stetho_sae s = {.arch = STETHO_SAE_JUMPRELU, .d_model = DM, .d_sae = DS, .layer = -1, .k = 64};
    s.W_enc = xmalloc((size_t)DM * DS * sizeof(float));
    s.W_dec = xmalloc((size_t)DM * DS * sizeof(float));
    s.b_enc = xmalloc(DS * sizeof(float));
    s.b_dec = xmalloc(DM * sizeof(float));
    s.threshold = xmalloc(DS * sizeof(float));
    for (size_t i = 0; i < (size_t)DM * DS; i++) s.W_enc[i] = 0.02f * frand(), s.W_dec[i] = 0.02f * frand();
    for (int j = 0; j < DS; j++) s.b_enc[j] = 0.01f * frand(), s.threshold[j] = 0.05f;
    for (int i = 0; i < DM; i++) s.b_dec[i] = 0.1f * frand();
    float *x = xmalloc((size_t)NTOK * DM * sizeof *x), *acts = xmalloc((size_t)NTOK * DS * sizeof *acts);
    for (size_t i = 0; i < (size_t)NTOK * DM; i++) x[i] = frand();

    /* the baseline: the same product through sgemm. Rounds interleave the three
     * measurements and each keeps its best, so a busy spell on a shared machine
     * does not land on one of them only. */
    sgemm_gflops(x, s.W_enc, acts, NTOK, DM, DS, 1); /* warm-up: faults the output in */
    double base = 0, jr = 0, tk = 0;
    for (int round = 0; round < 4; round++) {
        double g = sgemm_gflops(x, s.W_enc, acts, NTOK, DM, DS, 1);
        base = g > base ? g : base;
        s.arch = STETHO_SAE_JUMPRELU;
        g = encode_gflops(&s, x, acts, 1);
        jr = g > jr ? g : jr;
        s.arch = STETHO_SAE_TOPK;
        g = encode_gflops(&s, x, acts, 1);
        tk = g > tk ? g : tk;
    }
    printf("sgemm [%d x %d] x [%d x %d], %d threads: %.1f GFLOP/s (best of 4)\n", NTOK, DM, DM, DS, threads, base);
    printf("encode %d tokens, d_model %d, d_sae %d: jumprelu %.1f GFLOP/s (%.0f tokens/s), topk k=64 %.1f GFLOP/s "
           "(%.0f tokens/s)\n",
           NTOK, DM, DS, jr, jr * 1e9 / (2.0 * DM * DS), tk, tk * 1e9 / (2.0 * DM * DS));
    /* top-K selection over the encoded activations (`sae encode --top 64`),
     * against the encode itself measured above */
    int32_t *ti = xmalloc((size_t)NTOK * 64 * sizeof *ti);
    float *tvv = xmalloc((size_t)NTOK * 64 * sizeof *tvv);
    double sel_best = 1e30;
    for (int round = 0; round < 3; round++) {
        double t0 = now();
        stetho_sae_top_k(acts, NTOK, DS, 64, ti, tvv);
        double dt = now() - t0;
        sel_best = dt < sel_best ? dt : sel_best;
    }
    double enc_s = 2.0 * NTOK * DM * DS / (jr * 1e9);
    printf("top-64 selection over %d x %d activations: %.3f s (encode %.3f s)\n", NTOK, DS, sel_best, enc_s);
    free(ti);
    free(tvv);
    stetho_sae_free(&s);
    free(x);
    free(acts);

    double tiny = train_tok_s(128, 4096, 4096, 6), mid = train_tok_s(1152, 8192, 4096, 2);
    double ideal_tiny = base * 1e9 / (2.0 * 128 * 4096), ideal_mid = base * 1e9 / (2.0 * 1152 * 8192);
    printf("train topk k=32, batch 4096: d_model 128 / d_sae 4096 %.0f tokens/s; d_model 1152 / d_sae 8192 %.0f "
           "tokens/s\n",
           tiny, mid);
    printf("RESULT\tsae_encode_jumprelu_gflops_2560x16384\t%.1f\tGFLOP/s\t%.1f\t%.3f\n", jr, base, jr / base);
    printf("RESULT\tsae_encode_topk_gflops_2560x16384\t%.1f\tGFLOP/s\t%.1f\t%.3f\n", tk, base, tk / base);
    printf("RESULT\tsae_topk64_select_s_4096x16384\t%.4f\ts\t%.4f\t%.3f\n", sel_best, enc_s, sel_best / enc_s);
    printf("RESULT\tsae_train_tok_s_128x4096\t%.0f\ttok/s\t%.0f\t%.3f\n", tiny, ideal_tiny, tiny / ideal_tiny);
    printf("RESULT\tsae_train_tok_s_1152x8192\t%.0f\ttok/s\t%.0f\t%.3f\n", mid, ideal_mid, mid / ideal_mid);
    if (json) {
        FILE *f = fopen(json, "w");
        if (f) {
            fprintf(f,
                    "{\"threads\": %d, \"sgemm_gflops\": %.2f, \"encode_jumprelu_gflops\": %.2f, "
                    "\"encode_topk_gflops\": %.2f, \"train_tok_s_128x4096\": %.0f, \"train_tok_s_1152x8192\": %.0f}\n",
                    threads, base, jr, tk, tiny, mid);
            fclose(f);
        }
    }
    return 0;
}
