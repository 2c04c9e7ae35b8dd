/* Numeric primitives of the forward pass. Matrix products with more than one row
 * go through OpenBLAS, run single-threaded (the caller pins it, see model.c) from
 * inside OpenMP regions that split the work: two thread pools on the same cores
 * spin against each other (OpenMP workers busy-wait between regions while
 * OpenBLAS's workers need the core), which made 2 threads 4x slower than 1 on
 * small models. Elementwise work is spread with OpenMP too. Reductions
 * (norms, softmax sums) accumulate in double so the f32 engine stays close to
 * HF's results computed in higher precision. */
#include "kernels.h"
#include "internal.h"

#include <cblas.h>
#ifdef __AVX512F__
#include <immintrin.h>
#endif
#include <math.h>
#include <omp.h>
#include <string.h>

/* Weight rows are converted to f32 in blocks of about this many elements: big
 * enough for BLAS to run at full speed, small enough to stay in L2/L3-ish sizes
 * and never to hold a whole embedding matrix. */
#define MATMUL_BLOCK_ELEMS ((size_t)1 << 21)

/* Rows of a K-column weight converted at once. */
static size_t block_rows(size_t K) {
    size_t rows = MATMUL_BLOCK_ELEMS / (K ? K : 1);
    return rows ? rows : 1;
}

/* Threads a matmul or attention call splits its work over. */
static int team_size(void) {
    int n = stetho_get_threads();
    return n > 0 ? n : 1;
}

/* One block of block_rows(k) * k elements for each thread of the team. */
static size_t f32_scratch_elems(int K) {
    size_t k = K > 0 ? (size_t)K : 1;
    return (k > MATMUL_BLOCK_ELEMS ? k : MATMUL_BLOCK_ELEMS) * (size_t)team_size();
}

/* The f32 path's blocks, then (bf16 mode) what gemm_bf16.c needs. */
size_t st_matmul_scratch_elems(int K, int T, stetho_compute mode) {
    return f32_scratch_elems(K) + (mode == STETHO_COMPUTE_BF16 ? st_matmul_bf16_scratch_elems(T, K) : 0);
}

static void convert_rows(float *dst, const stetho_tensor *W, size_t row0, size_t nrows, size_t K) {
    size_t esz = stetho_dtype_bits(W->dtype) / 8;
    const uint8_t *src = (const uint8_t *)W->data + row0 * K * esz;
    /* The dtype was checked at load, so the conversion cannot fail. */
    for (long r = 0; r < (long)nrows; r++)
        (void)stetho_convert_to_f32(dst + (size_t)r * K, src + (size_t)r * K * esz, W->dtype, K);
}

/* Columns converted at a time by the few-rows kernel (a stack buffer). */
#define ROWDOT_CHUNK 512
#define LANES 32

#ifdef __AVX512F__
/* res[i] = x[i * K ..] . w for NT (1-4, a constant after inlining) rows, the
 * bf16 weight widened in registers (a 16-bit shift). Two accumulators per row
 * so the FMA chains overlap; a fixed order, so a row's result does not depend
 * on the other rows. */
static inline __attribute__((always_inline)) void dot_rows_bf16(const uint16_t *w, const float *x, int K, int NT,
                                                                 float *res) {
    __m512 a0[4], a1[4];
    for (int i = 0; i < NT; i++) a0[i] = a1[i] = _mm512_setzero_ps();
    int k = 0;
    for (; k + 32 <= K; k += 32) {
        __m512i wi = _mm512_loadu_si512(w + k);
        __m512 wlo = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(wi)), 16));
        __m512 whi = _mm512_castsi512_ps(
            _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(wi, 1)), 16));
        for (int i = 0; i < NT; i++) {
            a0[i] = _mm512_fmadd_ps(wlo, _mm512_loadu_ps(x + (size_t)i * (size_t)K + k), a0[i]);
            a1[i] = _mm512_fmadd_ps(whi, _mm512_loadu_ps(x + (size_t)i * (size_t)K + k + 16), a1[i]);
        }
    }
    for (; k < K; k += 16) {
        __mmask16 m = K - k >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (K - k)) - 1);
        __m512 wv = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, w + k)), 16));
        for (int i = 0; i < NT; i++)
            a0[i] = _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(m, x + (size_t)i * (size_t)K + k), a0[i]);
    }
    for (int i = 0; i < NT; i++) res[i] = _mm512_reduce_add_ps(_mm512_add_ps(a0[i], a1[i]));
}
#endif

/* out[t, n] = in[t] . W[n] for few rows T (decoding): one pass over the weight,
 * each weight row converted once in chunks and dotted with every input row.
 * Memory-bound, so the weight is read straight from its stored dtype instead of
 * being widened into scratch first; each output element is summed by one
 * thread in a fixed order, so results do not depend on the thread count or on
 * which other rows are in the batch. */
static void matmul_few_rows(float *out, int ldo, const float *in, int T, int K, const stetho_tensor *W) {
    size_t N = (size_t)W->shape[0], esz = stetho_dtype_bits(W->dtype) / 8;
#ifdef __AVX512F__
    if (W->dtype == STETHO_DTYPE_BF16) {
        const uint16_t *Wd = W->data;
        #pragma omp parallel for schedule(static)
        for (long n = 0; n < (long)N; n++) {
            const uint16_t *w = Wd + (size_t)n * (size_t)K;
            for (int t0 = 0; t0 < T; t0 += 4) {
                float r[4];
                int nt = T - t0 < 4 ? T - t0 : 4;
                const float *x = in + (size_t)t0 * (size_t)K;
                switch (nt) {
                case 1: dot_rows_bf16(w, x, K, 1, r); break;
                case 2: dot_rows_bf16(w, x, K, 2, r); break;
                case 3: dot_rows_bf16(w, x, K, 3, r); break;
                default: dot_rows_bf16(w, x, K, 4, r); break;
                }
                for (int i = 0; i < nt; i++) out[(size_t)(t0 + i) * (size_t)ldo + (size_t)n] = r[i];
            }
        }
        return;
    }
#endif
    #pragma omp parallel for schedule(static)
    for (long n = 0; n < (long)N; n++) {
        const uint8_t *wrow = (const uint8_t *)W->data + (size_t)n * (size_t)K * esz;
        float wbuf[ROWDOT_CHUNK];
        float acc[ST_FEW_ROWS][LANES];
        memset(acc, 0, sizeof acc);
        for (int k0 = 0; k0 < K; k0 += ROWDOT_CHUNK) {
            int kn = K - k0 < ROWDOT_CHUNK ? K - k0 : ROWDOT_CHUNK;
            (void)stetho_convert_to_f32(wbuf, wrow + (size_t)k0 * esz, W->dtype, (size_t)kn);
            for (int t = 0; t < T; t++) {
                const float *x = in + (size_t)t * (size_t)K + k0;
                float a[LANES] = {0}; /* independent partial sums hide the FMA latency */
                int k = 0;
                for (; k + LANES <= kn; k += LANES)
                    for (int j = 0; j < LANES; j++) a[j] += wbuf[k + j] * x[k + j];
                for (; k < kn; k++) a[k % LANES] += wbuf[k] * x[k];
                for (int j = 0; j < LANES; j++) acc[t][j] += a[j];
            }
        }
        for (int t = 0; t < T; t++) {
            float *a = acc[t];
            for (int w = LANES / 2; w >= 1; w /= 2)
                for (int j = 0; j < w; j++) a[j] += a[j + w];
            out[(size_t)t * (size_t)ldo + (size_t)n] = a[0];
        }
    }
}

/* out[t, n] = in[t] . W[n] for T > ST_FEW_ROWS through sgemm: each thread takes
 * a contiguous range of output columns (weight rows). */
static void matmul_many_rows(float *out, int ldo, const float *in, int T, int K, const stetho_tensor *W,
                             float *scratch) {
    size_t N = (size_t)W->shape[0];
    int nt = team_size();
    if ((size_t)nt > N) nt = (int)N;
    bool direct = W->dtype == STETHO_DTYPE_F32 && ((uintptr_t)W->data % sizeof(float)) == 0;
    size_t rows_per_block = block_rows((size_t)K), per_thread = f32_scratch_elems(K) / (size_t)team_size();
    #pragma omp parallel for schedule(static) num_threads(nt)
    for (int p = 0; p < nt; p++) {
        size_t lo = N * (size_t)p / (size_t)nt, hi = N * (size_t)(p + 1) / (size_t)nt;
        if (direct) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, (int)(hi - lo), K, 1.0f, in, K,
                        (const float *)W->data + lo * (size_t)K, K, 0.0f, out + lo, ldo);
            continue;
        }
        float *buf = scratch + (size_t)p * per_thread;
        for (size_t n0 = lo; n0 < hi; n0 += rows_per_block) {
            size_t nb = hi - n0 < rows_per_block ? hi - n0 : rows_per_block;
            convert_rows(buf, W, n0, nb, (size_t)K);
            /* out[:, n0:n0+nb] = in [T, K] . buf[nb, K]^T */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, (int)nb, K, 1.0f, in, K, buf, K, 0.0f,
                        out + n0, ldo);
        }
    }
}

stetho_status st_matmul_wt(float *out, int ldo, const float *in, int T, int K, const stetho_tensor *W,
                           const float *bias, float *scratch, stetho_compute mode) {
    if (W->ndim != 2 || W->shape[1] != (uint64_t)K)
        return st_err(STETHO_ERR_MISMATCH, "%s: expected %d columns", W->name, K);
    size_t N = (size_t)W->shape[0];
    if (T <= 0 || N == 0) return STETHO_OK;
    bool done = false;
    if (mode == STETHO_COMPUTE_BF16 && W->dtype == STETHO_DTYPE_BF16) {
        float *bf16_scratch = scratch + f32_scratch_elems(K);
        done = st_matmul_bf16(out, ldo, in, T, K, W, bf16_scratch);
        if (!done) { /* no bf16 kernels in this build: the same rounding, then f32 products */
            st_round_to_bf16(bf16_scratch, in, (size_t)T * (size_t)K);
            in = bf16_scratch;
        }
    }
    if (!done && T <= ST_FEW_ROWS) matmul_few_rows(out, ldo, in, T, K, W);
    else if (!done) matmul_many_rows(out, ldo, in, T, K, W, scratch);
    if (bias) {
        #pragma omp parallel for schedule(static)
        for (int t = 0; t < T; t++) {
            float *row = out + (size_t)t * (size_t)ldo;
            for (size_t n = 0; n < N; n++) row[n] += bias[n];
        }
    }
    return STETHO_OK;
}

void st_rmsnorm(float *out, const float *x, const float *w, int T, int D, double eps) {
    #pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++) {
        const float *xr = x + (size_t)t * (size_t)D;
        float *o = out + (size_t)t * (size_t)D;
        double ss = 0;
        for (int i = 0; i < D; i++) ss += (double)xr[i] * xr[i];
        float r = (float)(1.0 / sqrt(ss / D + eps));
        for (int i = 0; i < D; i++) o[i] = xr[i] * r * w[i];
    }
}

void st_rope_tables(float *cos_t, float *sin_t, const int *pos, int T, int hd, const stetho_rope *rope) {
    int half = hd / 2;
    for (int i = 0; i < half; i++) {
        /* HF: inv_freq = 1 / base^(2i / dim) */
        double inv = 1.0 / pow(rope->theta, (2.0 * i) / hd);
        if (rope->type == STETHO_ROPE_LINEAR) {
            inv /= rope->factor;
        } else if (rope->type == STETHO_ROPE_LLAMA3) {
            double low_wl = rope->original_max_pos / rope->low_freq_factor;
            double high_wl = rope->original_max_pos / rope->high_freq_factor;
            double wl = 2.0 * M_PI / inv;
            if (wl > low_wl) {
                inv /= rope->factor;
            } else if (wl >= high_wl) {
                /* medium frequencies: blend scaled and unscaled */
                double smooth = (rope->original_max_pos / wl - rope->low_freq_factor) /
                                (rope->high_freq_factor - rope->low_freq_factor);
                inv = (1.0 - smooth) * inv / rope->factor + smooth * inv;
            }
        }
        for (int t = 0; t < T; t++) {
            double a = (double)(pos ? pos[t] : t) * inv;
            cos_t[(size_t)t * half + i] = (float)cos(a);
            sin_t[(size_t)t * half + i] = (float)sin(a);
        }
    }
}

void st_rope(float *x, int T, int n_heads, int hd, const float *cos_t, const float *sin_t) {
    int half = hd / 2;
    #pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++) {
        const float *c = cos_t + (size_t)t * half, *s = sin_t + (size_t)t * half;
        for (int h = 0; h < n_heads; h++) {
            float *v = x + ((size_t)t * n_heads + h) * hd;
            for (int i = 0; i < half; i++) {
                /* rotate_half pairs element i with i + hd/2 */
                float a = v[i], b = v[i + half];
                v[i] = a * c[i] - b * s[i];
                v[i + half] = b * c[i] + a * s[i];
            }
        }
    }
}

/* e^x in f32 as a loop the compiler vectorises (libm's expf is a call per
 * element: gelu was a third of bf16 prompt processing). Cody-Waite reduction
 * x = n ln2 + r, Cephes' degree-6 polynomial for e^r, 2^n put into the
 * exponent: within 2 ulp of expf over the clamped range; NaN stays NaN. */
static inline float exp_f32(float x) {
    float c = x > 88.3762626647949f ? 88.3762626647949f : x;
    c = c < -87.3365447505531f ? -87.3365447505531f : c;
    bool nan = c != c;
    c = nan ? 0.0f : c;
    float fn = (c * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round to nearest */
    float r = c - fn * 0.693359375f - fn * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    uint32_t bits = (uint32_t)((int32_t)fn + 127) << 23;
    float scale;
    memcpy(&scale, &bits, 4);
    return nan ? x : p * scale;
}

/* g[i] = act(g[i]) * u[i] for the two sigmoid-shaped activations, written as
 * plain loops so they vectorise. */
static void gated_gelu_tanh(float *restrict g, const float *restrict u, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float x = g[i];
        g[i] = x / (1.0f + exp_f32(-1.5957691216057308f * (x + 0.044715f * x * x * x))) * u[i];
    }
}

static void gated_silu(float *restrict g, const float *restrict u, size_t n) {
    for (size_t i = 0; i < n; i++) g[i] = g[i] / (1.0f + exp_f32(-g[i])) * u[i];
}

void st_gated_act(float *gate, const float *up, size_t n, stetho_activation act) {
    if (act == STETHO_ACT_GELU) {
        #pragma omp parallel for schedule(static)
        for (long i = 0; i < (long)n; i++) gate[i] = 0.5f * gate[i] * (1.0f + erff(gate[i] * 0.7071067811865476f)) * up[i];
        return;
    }
    /* gelu_tanh(x) = 0.5 x (1 + tanh(u)) = x / (1 + e^(-2u)), u = sqrt(2/pi) (x + 0.044715 x^3);
     * silu(x) = x / (1 + e^(-x)) */
    size_t chunk = 4096;
    #pragma omp parallel for schedule(static)
    for (long c = 0; c < (long)((n + chunk - 1) / chunk); c++) {
        size_t i0 = (size_t)c * chunk, i1 = i0 + chunk < n ? i0 + chunk : n;
        if (act == STETHO_ACT_GELU_TANH) gated_gelu_tanh(gate + i0, up + i0, i1 - i0);
        else gated_silu(gate + i0, up + i0, i1 - i0);
    }
}

/* a . b over n in 16 interleaved partial sums, added pairwise at the end: a
 * fixed order the compiler can vectorise (a single running sum cannot be). */
static float dot_lanes(const float *restrict a, const float *restrict b, int n) {
    float acc[16] = {0};
    int i = 0;
    for (; i + 16 <= n; i += 16)
        for (int l = 0; l < 16; l++) acc[l] += a[i + l] * b[i + l];
    for (; i < n; i++) acc[i % 16] += a[i] * b[i];
    for (int w = 8; w >= 1; w /= 2)
        for (int l = 0; l < w; l++) acc[l] += acc[l + w];
    return acc[0];
}

/* s[j] = e^(s[j] - mx) for j < n (vectorised). */
static void exp_shifted(float *restrict s, int n, float mx) {
    for (int j = 0; j < n; j++) s[j] = exp_f32(s[j] - mx);
}

/* Queries are processed in blocks of this many rows: scores [QBLOCK, keys]. */
#define QBLOCK 128

/* One [QBLOCK, T] block of scores for each thread of the team. */
size_t st_attention_scratch_elems(int T) { return (size_t)QBLOCK * (size_t)(T > 0 ? T : 1) * (size_t)team_size(); }

void st_attention(float *out, const float *q, const float *k, const float *v, int T, int nh, int nkv, int hd,
                  double scale, double softcap, int window, float *scores) {
    int ldq = nh * hd, ldk = nkv * hd;
    int group = nh / nkv; /* query heads per kv head: q head h uses kv head h / group */
    int nt = team_size();
    if (nt > nh) nt = nh;
    size_t per_thread = (size_t)QBLOCK * (size_t)(T > 0 ? T : 1);
    float *all_scores = scores;
    /* heads in parallel, each thread with its own block of scores */
    #pragma omp parallel for schedule(static) num_threads(nt)
    for (int h = 0; h < nh; h++) {
        int g = h / group;
        float *scores = all_scores + (size_t)omp_get_thread_num() * per_thread;
        for (int t0 = 0; t0 < T; t0 += QBLOCK) {
            int t1 = t0 + QBLOCK < T ? t0 + QBLOCK : T;
            int qb = t1 - t0;
            int k0 = window > 0 && t0 - window + 1 > 0 ? t0 - window + 1 : 0;
            int klen = t1 - k0;
            /* scores [qb, klen] = scale * Q_h[t0:t1] . K_g[k0:t1]^T */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, qb, klen, hd, (float)scale,
                        q + (size_t)t0 * ldq + (size_t)h * hd, ldq, k + (size_t)k0 * ldk + (size_t)g * hd, ldk,
                        0.0f, scores, klen);
            for (int r = 0; r < qb; r++) {
                int t = t0 + r;
                float *s = scores + (size_t)r * klen;
                /* visible keys: lo..t (HF: q - k < window) */
                int lo = window > 0 && t - window + 1 > k0 ? t - window + 1 : k0;
                float mx = -INFINITY;
                for (int j = lo - k0; j <= t - k0; j++) {
                    if (softcap > 0) s[j] = (float)(tanh(s[j] / softcap) * softcap);
                    if (s[j] > mx) mx = s[j];
                }
                exp_shifted(s + (lo - k0), t - lo + 1, mx);
                double sum = 0;
                for (int j = lo - k0; j <= t - k0; j++) sum += s[j];
                float inv = (float)(1.0 / sum);
                for (int j = 0; j < klen; j++) s[j] = (j >= lo - k0 && j <= t - k0) ? s[j] * inv : 0.0f;
            }
            /* out_h[t0:t1] = P [qb, klen] . V_g[k0:t1] [klen, hd] */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, qb, hd, klen, 1.0f, scores, klen,
                        v + (size_t)k0 * ldk + (size_t)g * hd, ldk, 0.0f, out + (size_t)t0 * ldq + (size_t)h * hd,
                        ldq);
        }
    }
}

void st_attention_cached(float *out, const float *q, int T, const float *const *kc, const float *const *vc,
                         const int *n_keys, int nh, int nkv, int hd, double scale, double softcap, int max_keys,
                         float *scores) {
    int ldq = nh * hd, ldk = nkv * hd, group = nh / nkv;
    #pragma omp parallel for schedule(static)
    for (long th = 0; th < (long)T * nh; th++) {
        int t = (int)(th / nh), h = (int)(th % nh), g = h / group, n = n_keys[t];
        const float *qv = q + (size_t)t * ldq + (size_t)h * hd;
        float *s = scores + (size_t)th * (size_t)max_keys;
        float mx = -INFINITY;
        for (int j = 0; j < n; j++) {
            const float *kv = kc[t] + (size_t)j * ldk + (size_t)g * hd;
            float d = (float)(dot_lanes(qv, kv, hd) * scale);
            if (softcap > 0) d = (float)(tanh(d / softcap) * softcap);
            s[j] = d;
            if (d > mx) mx = d;
        }
        exp_shifted(s, n, mx);
        double sum = 0;
        for (int j = 0; j < n; j++) sum += s[j];
        float inv = (float)(1.0 / sum);
        float *o = out + (size_t)t * ldq + (size_t)h * hd;
        for (int i = 0; i < hd; i++) o[i] = 0;
        for (int j = 0; j < n; j++) {
            const float *vv = vc[t] + (size_t)j * ldk + (size_t)g * hd;
            float p = s[j] * inv;
            for (int i = 0; i < hd; i++) o[i] += p * vv[i];
        }
    }
}
