/* The forward pass's matrix products and activations against double-precision
 * references: f32 compute over bf16/f16/f32 weights (few-row decoding kernel
 * and the BLAS path), bf16 compute (activations rounded to bf16, f32 sums) on
 * shapes that hit every edge of the packed kernel (odd K, K past one packed
 * block, N not a multiple of the panel, T not a multiple of the tile), and the
 * vectorised gelu_tanh / silu against libm. */
#include "testutil.h"

#include "kernels.h"
#include "stetho/model.h"
#include "stetho/tensor.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static uint64_t g_rng = 99;
static float frand(void) { /* uniform in [-1, 1) */
    g_rng ^= g_rng << 13, g_rng ^= g_rng >> 7, g_rng ^= g_rng << 17;
    return (float)(g_rng >> 40) / (float)(1 << 23) - 1.0f;
}

static float round_bf16(float f) { return stetho_bf16_to_f32(stetho_f32_to_bf16(f)); }

typedef struct {
    stetho_tensor t;
    void *data;
    float *wf; /* [N, K] the weight's values as f32 */
} weight;

static void weight_make(weight *w, int N, int K, stetho_dtype dt) {
    size_t n = (size_t)N * (size_t)K, esz = stetho_dtype_bits(dt) / 8;
    w->wf = malloc(n * sizeof *w->wf);
    for (size_t i = 0; i < n; i++) w->wf[i] = frand() * 0.5f;
    /* one element of offset: rows aligned to their dtype only, not to vectors */
    uint8_t *raw = malloc(n * esz + esz);
    w->data = raw;
    assert_int_equal(stetho_convert_from_f32(raw + esz, dt, w->wf, n), STETHO_OK);
    assert_int_equal(stetho_convert_to_f32(w->wf, raw + esz, dt, n), STETHO_OK); /* the stored values */
    memset(&w->t, 0, sizeof w->t);
    w->t.name = "w";
    w->t.dtype = dt;
    w->t.ndim = 2;
    w->t.shape[0] = (uint64_t)N;
    w->t.shape[1] = (uint64_t)K;
    w->t.n_elements = n;
    w->t.nbytes = n * esz;
    w->t.data = raw + esz;
}

static void weight_free(weight *w) {
    free(w->data);
    free(w->wf);
}

/* max over outputs of |got - ref| / (sum_k |x w| + tiny): the error relative to
 * the size of the terms summed, which bounds f32 summation-order effects */
static double check_product(int T, int N, int K, stetho_dtype dt, stetho_compute mode, bool bias_on) {
    weight w;
    weight_make(&w, N, K, dt);
    float *x = malloc((size_t)T * K * sizeof *x), *bias = malloc((size_t)N * sizeof *bias);
    for (size_t i = 0; i < (size_t)T * K; i++) x[i] = frand();
    for (int n = 0; n < N; n++) bias[n] = frand();
    int ldo = N + 3; /* out has spare columns the product must leave alone */
    float *out = malloc((size_t)T * ldo * sizeof *out);
    for (size_t i = 0; i < (size_t)T * ldo; i++) out[i] = 12345.0f;
    float *scratch = malloc(st_matmul_scratch_elems(K, T, mode) * sizeof *scratch);
    assert_int_equal(st_matmul_wt(out, ldo, x, T, K, &w.t, bias_on ? bias : NULL, scratch, mode), STETHO_OK);
    bool rounded = mode == STETHO_COMPUTE_BF16 && dt == STETHO_DTYPE_BF16;
    double worst = 0;
    for (int t = 0; t < T; t++) {
        for (int n = 0; n < N; n++) {
            double ref = bias_on ? bias[n] : 0, mag = 1e-30;
            for (int k = 0; k < K; k++) {
                double xv = rounded ? round_bf16(x[(size_t)t * K + k]) : x[(size_t)t * K + k];
                ref += xv * w.wf[(size_t)n * K + k];
                mag += fabs(xv * w.wf[(size_t)n * K + k]);
            }
            double e = fabs(out[(size_t)t * ldo + n] - ref) / mag;
            if (e > worst) worst = e;
        }
        for (int n = N; n < ldo; n++) assert_true(out[(size_t)t * ldo + n] == 12345.0f);
    }
    free(scratch);
    free(out);
    free(bias);
    free(x);
    weight_free(&w);
    return worst;
}

/* f32 sums of up to ~7000 terms: a few K * 2^-24 relative to the magnitude at worst */
#define TOL 2e-5

static void test_f32_compute_every_dtype(void **s) {
    (void)s;
    static const int shapes[][3] = {{1, 37, 45}, {3, 70, 1152}, {16, 33, 257}, {17, 65, 31}, {40, 130, 300}};
    static const stetho_dtype dts[] = {STETHO_DTYPE_F32, STETHO_DTYPE_BF16, STETHO_DTYPE_F16};
    for (size_t d = 0; d < 3; d++)
        for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
            double e = check_product(shapes[i][0], shapes[i][1], shapes[i][2], dts[d], STETHO_COMPUTE_F32, i & 1);
            if (e > TOL) print_message("%s T=%d N=%d K=%d: %.3e\n", stetho_dtype_name(dts[d]), shapes[i][0],
                                       shapes[i][1], shapes[i][2], e);
            assert_true(e <= TOL);
        }
}

static void test_bf16_compute(void **s) {
    (void)s;
    print_message("bf16 kernels in this build: %s\n", stetho_compute_native(STETHO_COMPUTE_BF16) ? "yes" : "no");
    /* T: 1 (decode), 16 (last few-rows size), 17 and 23 (first tile-kernel
     * sizes, partial 6-row tiles); K: odd, below 32, past one packed block of
     * 2048; N: below one 16-wide vector, partial 64-wide panels */
    static const int shapes[][3] = {{1, 37, 45},  {5, 70, 33},    {16, 200, 7},  {17, 65, 31},
                                    {23, 130, 2101}, {48, 64, 2048}, {30, 9, 4500}, {64, 300, 256}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        double e = check_product(shapes[i][0], shapes[i][1], shapes[i][2], STETHO_DTYPE_BF16, STETHO_COMPUTE_BF16,
                                 i & 1);
        if (e > TOL) print_message("T=%d N=%d K=%d: %.3e\n", shapes[i][0], shapes[i][1], shapes[i][2], e);
        assert_true(e <= TOL);
    }
    /* f32 and f16 weights are computed in f32 whatever the mode */
    assert_true(check_product(20, 40, 50, STETHO_DTYPE_F32, STETHO_COMPUTE_BF16, false) <= TOL);
    assert_true(check_product(3, 40, 50, STETHO_DTYPE_F16, STETHO_COMPUTE_BF16, false) <= TOL);
}

/* The rounding is really there: bf16 compute differs from f32 compute by
 * about bf16's precision (2^-9 relative per input), not by float noise. */
static void test_bf16_compute_rounds(void **s) {
    (void)s;
    int T = 20, N = 50, K = 300;
    weight w;
    weight_make(&w, N, K, STETHO_DTYPE_BF16);
    float *x = malloc((size_t)T * K * sizeof *x), *a = malloc((size_t)T * N * sizeof *a), *b = malloc((size_t)T * N * 4);
    for (size_t i = 0; i < (size_t)T * K; i++) x[i] = frand();
    float *scratch = malloc(st_matmul_scratch_elems(K, T, STETHO_COMPUTE_BF16) * sizeof *scratch);
    assert_int_equal(st_matmul_wt(a, N, x, T, K, &w.t, NULL, scratch, STETHO_COMPUTE_F32), STETHO_OK);
    assert_int_equal(st_matmul_wt(b, N, x, T, K, &w.t, NULL, scratch, STETHO_COMPUTE_BF16), STETHO_OK);
    double md = 0;
    for (int i = 0; i < T * N; i++) md = fmax(md, fabs(a[i] - b[i]));
    print_message("max |bf16 - f32 compute| = %.3e\n", md);
    assert_true(md > 1e-4 && md < 0.2);
    free(scratch);
    free(x);
    free(a);
    free(b);
    weight_free(&w);
}

static void test_compute_names(void **s) {
    (void)s;
    stetho_compute c;
    assert_int_equal(stetho_compute_parse("bf16", &c), STETHO_OK);
    assert_int_equal(c, STETHO_COMPUTE_BF16);
    assert_string_equal(stetho_compute_name(c), "bf16");
    assert_int_equal(stetho_compute_parse("f32", &c), STETHO_OK);
    assert_int_equal(c, STETHO_COMPUTE_F32);
    assert_int_equal(stetho_compute_parse("fp8", &c), STETHO_ERR_INVALID);
    assert_non_null(strstr(stetho_last_error(), "fp8"));
    assert_int_equal(stetho_compute_parse(NULL, &c), STETHO_ERR_INVALID);
    assert_true(stetho_compute_native(STETHO_COMPUTE_F32));
    assert_int_equal(stetho_get_compute(), STETHO_COMPUTE_F32);
    stetho_set_compute(STETHO_COMPUTE_BF16);
    assert_int_equal(stetho_get_compute(), STETHO_COMPUTE_BF16);
    stetho_set_compute((stetho_compute)7); /* not a mode: the default */
    assert_int_equal(stetho_get_compute(), STETHO_COMPUTE_F32);
}

/* gelu_tanh and silu (e^x by a polynomial) against libm in double, over the
 * range activations take and far outside it; NaN and infinities propagate. */
static void test_gated_activations(void **s) {
    (void)s;
    enum { N = 20001 };
    float *g = malloc(N * sizeof *g), *u = malloc(N * sizeof *u), *x = malloc(N * sizeof *x);
    for (int act = 0; act < 2; act++) {
        stetho_activation a = act ? STETHO_ACT_SILU : STETHO_ACT_GELU_TANH;
        for (int i = 0; i < N; i++) {
            x[i] = (float)((i - N / 2) * 0.003); /* -30 .. 30 */
            if (i % 97 == 0) x[i] = (float)((i - N / 2) * 1e3);
            g[i] = x[i];
            u[i] = 1.0f + (float)(i % 7) * 0.25f;
        }
        st_gated_act(g, u, N, a);
        double worst = 0;
        for (int i = 0; i < N; i++) {
            double v = x[i], ref;
            if (a == STETHO_ACT_GELU_TANH) ref = 0.5 * v * (1 + tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)));
            else ref = v / (1 + exp(-v));
            ref *= u[i];
            /* relative to the value, with an absolute floor where gelu/silu -> 0 */
            double e = fabs(g[i] - ref) / (fabs(ref) + 1e-6);
            if (e > worst) worst = e;
        }
        print_message("%s: max relative error %.3e\n", act ? "silu" : "gelu_tanh", worst);
        assert_true(worst < 1e-5);
    }
    float sp[4] = {NAN, INFINITY, -INFINITY, 0.0f}, one[4] = {1, 1, 1, 1};
    st_gated_act(sp, one, 4, STETHO_ACT_GELU_TANH);
    assert_true(isnan(sp[0]));
    assert_true(sp[1] == INFINITY);
    assert_true(sp[3] == 0.0f);
    free(g);
    free(u);
    free(x);
}

int main(void) {
    stetho_set_threads(2);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f32_compute_every_dtype),
        cmocka_unit_test(test_bf16_compute),
        cmocka_unit_test(test_bf16_compute_rounds),
        cmocka_unit_test(test_compute_names),
        cmocka_unit_test(test_gated_activations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
