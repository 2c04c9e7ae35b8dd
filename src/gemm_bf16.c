/* Matrix products for the bf16 compute mode (stetho_set_compute): activations
 * rounded to bf16, weights read in their stored bf16 without widening, f32
 * sums. Debian's OpenBLAS has no bf16 gemm, and an f32 sgemm needs the weights
 * widened first (a write of 4 bytes per weight per product) and runs at half
 * the multiply rate of AVX512-BF16's vdpbf16ps, so the kernels are here.
 *
 * Prompt processing (many rows): the weight is packed panel by panel, 64
 * output columns by up to 2 * KC_PAIRS of K, into k-pair-interleaved order
 * ([k/2][64][2], one 32-bit word per column and k-pair) so one vector load
 * gives 16 columns' pairs; a 6x64 register tile then takes one broadcast of
 * an activation pair per row and four vdpbf16ps per row and k-pair. Panels
 * are split over the OpenMP team; each thread packs into its own buffer,
 * sized to stay in L2.
 *
 * Decoding (few rows) is memory-bound: the weight rows are read once, 32
 * values at a time, straight from the mapping and dotted with every row.
 *
 * Without AVX512-BF16 the same rounding is applied and the products run
 * through the f32 path (kernels.c), so results agree up to summation order. */
#include "kernels.h"
#include "internal.h"
#include "stetho/tensor.h"

#include <omp.h>
#include <string.h>

#if defined(__AVX512BF16__) && defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define ST_HAVE_BF16_KERNELS 1
#include <immintrin.h>
#endif

static stetho_compute g_compute = STETHO_COMPUTE_F32;

void stetho_set_compute(stetho_compute c) { g_compute = c == STETHO_COMPUTE_BF16 ? c : STETHO_COMPUTE_F32; }
stetho_compute stetho_get_compute(void) { return g_compute; }

const char *stetho_compute_name(stetho_compute c) { return c == STETHO_COMPUTE_BF16 ? "bf16" : "f32"; }

stetho_status stetho_compute_parse(const char *s, stetho_compute *out) {
    if (s && !strcmp(s, "f32")) *out = STETHO_COMPUTE_F32;
    else if (s && !strcmp(s, "bf16")) *out = STETHO_COMPUTE_BF16;
    else return st_err(STETHO_ERR_INVALID, "unknown compute mode '%s' (expected f32 or bf16)", s ? s : "");
    return STETHO_OK;
}

bool stetho_compute_native(stetho_compute c) {
#ifdef ST_HAVE_BF16_KERNELS
    (void)c;
    return true;
#else
    return c == STETHO_COMPUTE_F32;
#endif
}

void st_round_to_bf16(float *dst, const float *src, size_t n) {
    #pragma omp parallel for schedule(static)
    for (long i = 0; i < (long)n; i++) {
        uint32_t u = (uint32_t)stetho_f32_to_bf16(src[i]) << 16; /* nearest even, as torch */
        memcpy(&dst[i], &u, 4);
    }
}

#ifdef ST_HAVE_BF16_KERNELS

#define MR 6          /* rows (tokens) of a register tile */
#define NR 64         /* columns of a panel: 4 vectors of 16 */
#define KC_PAIRS 1024 /* k-pairs packed at once: 64 x 2048 bf16 = 256 KB */

/* Activations [T, K] f32 -> [T, Kp] bf16 with Kp = K rounded up to even (the
 * pad is 0, so an odd K adds nothing). */
static void convert_rows_bf16(uint16_t *dst, size_t Kp, const float *in, int T, int K) {
    #pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++) {
        const float *x = in + (size_t)t * (size_t)K;
        uint16_t *d = dst + (size_t)t * Kp;
        int k = 0;
        for (; k + 32 <= K; k += 32) {
            __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + k + 16), _mm512_loadu_ps(x + k));
            _mm512_storeu_si512(d + k, (__m512i)v);
        }
        for (; k < K; k++) d[k] = stetho_f32_to_bf16(x[k]);
        if ((size_t)K < Kp) d[K] = 0;
    }
}

/* Transpose a 16x16 block of 32-bit words: out[c] = (in[0][c], ..., in[15][c]). */
static void transpose16(__m512i r[16]) {
    __m512i t[16], u[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    /* per 128-bit lane l, u[4g + e] holds rows 4g..4g+3 of column 4l + e */
    for (int g = 0; g < 4; g++) {
        __m512i a = t[4 * g], b = t[4 * g + 1], c = t[4 * g + 2], d = t[4 * g + 3];
        u[4 * g] = _mm512_unpacklo_epi64(a, c);
        u[4 * g + 1] = _mm512_unpackhi_epi64(a, c);
        u[4 * g + 2] = _mm512_unpacklo_epi64(b, d);
        u[4 * g + 3] = _mm512_unpackhi_epi64(b, d);
    }
    for (int e = 0; e < 4; e++) {
        __m512i v = _mm512_shuffle_i32x4(u[e], u[4 + e], 0x88), w = _mm512_shuffle_i32x4(u[e], u[4 + e], 0xdd);
        __m512i v2 = _mm512_shuffle_i32x4(u[8 + e], u[12 + e], 0x88);
        __m512i w2 = _mm512_shuffle_i32x4(u[8 + e], u[12 + e], 0xdd);
        r[e] = _mm512_shuffle_i32x4(v, v2, 0x88);
        r[8 + e] = _mm512_shuffle_i32x4(v, v2, 0xdd);
        r[4 + e] = _mm512_shuffle_i32x4(w, w2, 0x88);
        r[12 + e] = _mm512_shuffle_i32x4(w, w2, 0xdd);
    }
}

/* dst[kp][j] = (W[n0+j][2(kp0+kp)], W[n0+j][2(kp0+kp)+1]) as one word, for
 * kp < kc and j < NR; columns j >= nn and k >= K are 0. Whole 16x16 blocks of
 * words are transposed in registers, the edges word by word. */
static void pack_panel(uint32_t *dst, const uint16_t *W, size_t K, size_t n0, size_t nn, size_t kp0, size_t kc) {
    size_t k_end = K / 2; /* k-pairs wholly inside K */
    size_t kc_vec = kp0 + kc <= k_end ? kc / 16 * 16 : 0;
    for (size_t j0 = 0; j0 < NR; j0 += 16) {
        if (j0 + 16 <= nn)
            for (size_t kb = 0; kb < kc_vec; kb += 16) {
                __m512i r[16];
                for (int i = 0; i < 16; i++) r[i] = _mm512_loadu_si512(W + (n0 + j0 + i) * K + 2 * (kp0 + kb));
                transpose16(r);
                for (int i = 0; i < 16; i++) _mm512_storeu_si512(dst + (kb + i) * NR + j0, r[i]);
            }
        size_t kfrom = j0 + 16 <= nn ? kc_vec : 0;
        for (size_t j = j0; j < j0 + 16; j++) {
            if (j >= nn) {
                for (size_t kp = kfrom; kp < kc; kp++) dst[kp * NR + j] = 0;
                continue;
            }
            const uint16_t *row = W + (n0 + j) * K;
            for (size_t kp = kfrom; kp < kc; kp++) {
                size_t p = kp0 + kp;
                uint32_t w;
                if (p < k_end) {
                    memcpy(&w, row + 2 * p, 4);
                } else { /* odd K: the last pair holds one value */
                    w = 2 * p < K ? row[2 * p] : 0;
                }
                dst[kp * NR + j] = w;
            }
        }
    }
}

/* C[r][0..nn) (+)= sum over kc k-pairs of A[r] pairs . panel, r < rows.
 * a[r]: row r of the bf16 activations at the block's first k-pair. */
static void tile_6x64(float *c, int ldc, const uint32_t *const a[MR], const uint32_t *panel, size_t kc, int rows,
                      size_t nn, bool accumulate) {
    __m512 acc[MR][4];
    for (int r = 0; r < MR; r++)
        for (int v = 0; v < 4; v++) acc[r][v] = _mm512_setzero_ps();
    for (size_t kp = 0; kp < kc; kp++) {
        const uint32_t *b = panel + kp * NR;
        __m512bh b0 = (__m512bh)_mm512_loadu_si512(b), b1 = (__m512bh)_mm512_loadu_si512(b + 16);
        __m512bh b2 = (__m512bh)_mm512_loadu_si512(b + 32), b3 = (__m512bh)_mm512_loadu_si512(b + 48);
#pragma GCC unroll 6
        for (int r = 0; r < MR; r++) {
            __m512bh x = (__m512bh)_mm512_set1_epi32((int)a[r][kp]);
            acc[r][0] = _mm512_dpbf16_ps(acc[r][0], x, b0);
            acc[r][1] = _mm512_dpbf16_ps(acc[r][1], x, b1);
            acc[r][2] = _mm512_dpbf16_ps(acc[r][2], x, b2);
            acc[r][3] = _mm512_dpbf16_ps(acc[r][3], x, b3);
        }
    }
    for (int r = 0; r < rows; r++) {
        float *row = c + (size_t)r * (size_t)ldc;
        for (int v = 0; v < 4; v++) {
            size_t j = (size_t)v * 16;
            if (j >= nn) break;
            __mmask16 m = nn - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (nn - j)) - 1);
            __m512 s = acc[r][v];
            if (accumulate) s = _mm512_add_ps(s, _mm512_maskz_loadu_ps(m, row + j));
            _mm512_mask_storeu_ps(row + j, m, s);
        }
    }
}

size_t st_matmul_bf16_scratch_elems(int T, int K) {
    size_t Kp = (size_t)(K > 0 ? K : 1) + 1, t = (size_t)(T > 0 ? T : 1);
    /* bf16 activations (2 per float) + one packed panel per thread + a zero
     * row, each rounded up to 64 bytes */
    return (t * Kp + 1) / 2 + 16 + (size_t)stetho_get_threads() * (KC_PAIRS * NR + 16) + Kp / 2 + 16;
}

static float *align64(float *p) { return (float *)(((uintptr_t)p + 63) & ~(uintptr_t)63); }

/* out[t, n] = bf16(in[t]) . W[n] for T > ST_FEW_ROWS. */
static void matmul_many_rows_bf16(float *out, int ldo, const float *in, int T, int K, const stetho_tensor *W,
                                  float *scratch) {
    size_t N = (size_t)W->shape[0], Kp = (size_t)K + ((size_t)K & 1), kpairs = Kp / 2;
    uint16_t *A = (uint16_t *)align64(scratch);
    float *after_a = scratch + ((size_t)T * Kp + 1) / 2 + 16;
    uint32_t *zero_row = (uint32_t *)align64(after_a);
    memset(zero_row, 0, kpairs * sizeof *zero_row);
    float *packs = after_a + Kp / 2 + 16;
    convert_rows_bf16(A, Kp, in, T, K);
    const uint16_t *Wd = W->data;
    size_t n_panels = (N + NR - 1) / NR;
    int nt = stetho_get_threads();
    if ((size_t)nt > n_panels) nt = (int)n_panels;
    #pragma omp parallel num_threads(nt)
    {
        uint32_t *panel = (uint32_t *)align64(packs + (size_t)omp_get_thread_num() * (KC_PAIRS * NR + 16));
        #pragma omp for schedule(static)
        for (long p = 0; p < (long)n_panels; p++) {
            size_t n0 = (size_t)p * NR, nn = N - n0 < NR ? N - n0 : NR;
            for (size_t kp0 = 0; kp0 < kpairs; kp0 += KC_PAIRS) {
                size_t kc = kpairs - kp0 < KC_PAIRS ? kpairs - kp0 : KC_PAIRS;
                pack_panel(panel, Wd, (size_t)K, n0, nn, kp0, kc);
                for (int t0 = 0; t0 < T; t0 += MR) {
                    int rows = T - t0 < MR ? T - t0 : MR;
                    const uint32_t *a[MR];
                    for (int r = 0; r < MR; r++)
                        a[r] = r < rows ? (const uint32_t *)(A + (size_t)(t0 + r) * Kp) + kp0 : zero_row;
                    tile_6x64(out + (size_t)t0 * (size_t)ldo + n0, ldo, a, panel, kc, rows, nn, kp0 > 0);
                }
            }
        }
    }
}

/* out[t, n] = bf16(in[t]) . W[n] for few rows: one pass over W, each row read
 * 32 values at a time and dotted with every activation row; each output is
 * summed by one thread in a fixed order. */
static void matmul_few_rows_bf16(float *out, int ldo, const float *in, int T, int K, const stetho_tensor *W,
                                 float *scratch) {
    size_t N = (size_t)W->shape[0], Kp = (size_t)K + ((size_t)K & 1);
    uint16_t *A = (uint16_t *)align64(scratch);
    convert_rows_bf16(A, Kp, in, T, K);
    const uint16_t *Wd = W->data;
    #pragma omp parallel for schedule(static)
    for (long n = 0; n < (long)N; n++) {
        const uint16_t *w = Wd + (size_t)n * (size_t)K;
        __m512 acc[ST_FEW_ROWS];
        for (int t = 0; t < T; t++) acc[t] = _mm512_setzero_ps();
        for (int k = 0; k < K; k += 32) {
            __mmask32 m = K - k >= 32 ? (__mmask32)0xffffffffu : (__mmask32)((1u << (K - k)) - 1);
            __m512bh wv = (__m512bh)_mm512_maskz_loadu_epi16(m, w + k);
            for (int t = 0; t < T; t++) {
                __m512bh xv = (__m512bh)_mm512_maskz_loadu_epi16(m, A + (size_t)t * Kp + k);
                acc[t] = _mm512_dpbf16_ps(acc[t], xv, wv);
            }
        }
        for (int t = 0; t < T; t++) out[(size_t)t * (size_t)ldo + (size_t)n] = _mm512_reduce_add_ps(acc[t]);
    }
}

bool st_matmul_bf16(float *out, int ldo, const float *in, int T, int K, const stetho_tensor *W, float *scratch) {
    if (T <= ST_FEW_ROWS) matmul_few_rows_bf16(out, ldo, in, T, K, W, scratch);
    else matmul_many_rows_bf16(out, ldo, in, T, K, W, scratch);
    return true;
}

#else

size_t st_matmul_bf16_scratch_elems(int T, int K) {
    /* the rounded copy of the activations */
    return (size_t)(T > 0 ? T : 1) * (size_t)(K > 0 ? K : 1);
}

bool st_matmul_bf16(float *out, int ldo, const float *in, int T, int K, const stetho_tensor *W, float *scratch) {
    (void)out, (void)ldo, (void)in, (void)T, (void)K, (void)W, (void)scratch;
    return false;
}

#endif
