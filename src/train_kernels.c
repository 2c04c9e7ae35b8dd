/* The trainer's kernels, each forward beside its backward (llm.c style).
 * Matrix products go through single-threaded OpenBLAS calls made from OpenMP
 * threads, each on its share of rows or heads; elementwise loops use OpenMP. Sums over rows (weight gradients) run per column in row
 * order so that the bytes do not depend on the thread count's partition. */
#include "train_kernels.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

/* ---------------------------------------------------------------- linear */

/* The trainer runs BLAS single-threaded (st_blas_single_thread: on 2 cores
 * OpenBLAS's threads spinning against OpenMP's halved the speed) and splits
 * each product's output rows over the OpenMP threads. The split depends only on
 * the thread count. C [M, N] = alpha op(A) op(B) + beta C. */
static void par_sgemm(bool ta, bool tb, int M, int N, int K, const float *A, int lda, const float *Bm, int ldb,
                      float beta, float *C, int ldc) {
    #pragma omp parallel
    {
        int nt = omp_get_num_threads(), id = omp_get_thread_num();
        int chunk = (M + nt - 1) / nt, m0 = id * chunk, m1 = m0 + chunk < M ? m0 + chunk : M;
        if (m1 > m0) {
            const float *a = ta ? A + m0 : A + (size_t)m0 * lda; /* row m of op(A) */
            cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m1 - m0, N,
                        K, 1.0f, a, lda, Bm, ldb, beta, C + (size_t)m0 * ldc, ldc);
        }
    }
}

void tk_linear_fwd(float *out, const float *in, const float *W, int N, int Din, int Dout) {
    par_sgemm(false, true, N, Dout, Din, in, Din, W, Din, 0.0f, out, Dout);
}

void tk_linear_bwd(float *d_in, bool accumulate, float *d_W, const float *d_out, const float *in, const float *W,
                   int N, int Din, int Dout) {
    if (d_in) /* d_in [N, Din] = d_out [N, Dout] . W [Dout, Din] */
        par_sgemm(false, false, N, Din, Dout, d_out, Dout, W, Din, accumulate ? 1.0f : 0.0f, d_in, Din);
    if (d_W) /* d_W [Dout, Din] += d_out^T [Dout, N] . in [N, Din] */
        par_sgemm(true, false, Dout, Din, N, d_out, Dout, in, Din, 1.0f, d_W, Din);
}

/* ---------------------------------------------------------------- RMSNorm */

void tk_rmsnorm_fwd(float *y, float *r, const float *x, const float *w, int N, int D, double eps) {
    #pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *xr = x + (size_t)n * D;
        float *yr = y + (size_t)n * D;
        double ss = 0; /* in double, as the inference engine does */
        for (int i = 0; i < D; i++) ss += (double)xr[i] * xr[i];
        float rs = (float)(1.0 / sqrt(ss / D + eps));
        r[n] = rs;
        for (int i = 0; i < D; i++) yr[i] = xr[i] * rs * (1.0f + w[i]);
    }
}

/* y_i = x_i r g_i with g = 1 + w and r = (mean x^2 + eps)^-1/2, so
 * dx_i = r (dy_i g_i - x_i r^2 mean_j(dy_j g_j x_j)) and dw_i = sum dy_i x_i r. */
void tk_rmsnorm_bwd(float *d_x, bool accumulate, float *d_w, const float *d_y, const float *x, const float *r,
                    const float *w, int N, int D) {
    if (d_w) {
        #pragma omp parallel for schedule(static)
        for (int i = 0; i < D; i++) {
            double s = 0;
            for (int n = 0; n < N; n++) s += (double)d_y[(size_t)n * D + i] * x[(size_t)n * D + i] * r[n];
            d_w[i] += (float)s;
        }
    }
    #pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *xr = x + (size_t)n * D, *dy = d_y + (size_t)n * D;
        float *dx = d_x + (size_t)n * D;
        double dot = 0;
        for (int i = 0; i < D; i++) dot += (double)dy[i] * (1.0f + w[i]) * xr[i];
        float rs = r[n], c = (float)(dot / D) * rs * rs;
        for (int i = 0; i < D; i++) {
            float g = rs * (dy[i] * (1.0f + w[i]) - xr[i] * c);
            dx[i] = accumulate ? dx[i] + g : g;
        }
    }
}

/* ---------------------------------------------------------------- RoPE */

void tk_rope_tables(float *cos_t, float *sin_t, int T, int hd, double theta) {
    int half = hd / 2;
    for (int i = 0; i < half; i++) {
        double inv = 1.0 / pow(theta, (2.0 * i) / hd);
        for (int t = 0; t < T; t++) {
            cos_t[(size_t)t * half + i] = (float)cos(t * inv);
            sin_t[(size_t)t * half + i] = (float)sin(t * inv);
        }
    }
}

/* Pairs (i, i + hd/2) rotate by the position's angle: [a, b] -> [a c - b s, b c + a s]. */
static void rope(float *x, int B, int T, int nh, int hd, const float *cos_t, const float *sin_t, float sign) {
    int half = hd / 2;
    #pragma omp parallel for schedule(static)
    for (long bt = 0; bt < (long)B * T; bt++) {
        int t = (int)(bt % T);
        const float *c = cos_t + (size_t)t * half, *s = sin_t + (size_t)t * half;
        for (int h = 0; h < nh; h++) {
            float *v = x + ((size_t)bt * nh + h) * hd;
            for (int i = 0; i < half; i++) {
                float a = v[i], b = v[i + half], si = sign * s[i];
                v[i] = a * c[i] - b * si;
                v[i + half] = b * c[i] + a * si;
            }
        }
    }
}

void tk_rope_fwd(float *x, int B, int T, int nh, int hd, const float *cos_t, const float *sin_t) {
    rope(x, B, T, nh, hd, cos_t, sin_t, 1.0f);
}

/* A rotation's transpose is the rotation by the opposite angle. */
void tk_rope_bwd(float *dx, int B, int T, int nh, int hd, const float *cos_t, const float *sin_t) {
    rope(dx, B, T, nh, hd, cos_t, sin_t, -1.0f);
}

/* ---------------------------------------------------------------- attention */

void tk_attention_fwd(float *out, float *p, const float *q, const float *k, const float *v, int B, int T, int nh,
                      int nkv, int hd, float scale, int window) {
    int ldq = nh * hd, ldk = nkv * hd, group = nh / nkv;
    size_t TT = (size_t)T * T;
    /* one (sequence, head) per task: scores, masked softmax, weighted values */
    #pragma omp parallel for schedule(static)
    for (int bh = 0; bh < B * nh; bh++) {
        int b = bh / nh, h = bh % nh;
        float *pp = p + (size_t)bh * TT; /* [T, T] */
        const float *qh = q + (size_t)b * T * ldq + (size_t)h * hd;
        const float *kg = k + (size_t)b * T * ldk + (size_t)(h / group) * hd;
        const float *vg = v + (size_t)b * T * ldk + (size_t)(h / group) * hd;
        /* S [T, T] = scale * Q_bh [T, hd] . K_bg [T, hd]^T */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hd, scale, qh, ldq, kg, ldk, 0.0f, pp, T);
        for (int t = 0; t < T; t++) {
            float *s = pp + (size_t)t * T;
            int lo = window > 0 && t - window + 1 > 0 ? t - window + 1 : 0; /* keys lo..t visible */
            float mx = -INFINITY;
            for (int j = lo; j <= t; j++) mx = s[j] > mx ? s[j] : mx;
            double sum = 0;
            for (int j = lo; j <= t; j++) {
                s[j] = expf(s[j] - mx);
                sum += s[j];
            }
            float inv = (float)(1.0 / sum);
            for (int j = 0; j < T; j++) s[j] = j >= lo && j <= t ? s[j] * inv : 0.0f;
        }
        /* out_bh [T, hd] = P [T, T] . V_bg [T, hd] */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hd, T, 1.0f, pp, T, vg, ldk, 0.0f,
                    out + (size_t)b * T * ldq + (size_t)h * hd, ldq);
    }
}

/* With S = scale Q K^T, P = softmax(S) (masked), O = P V:
 *   dV = P^T dO, dP = dO V^T, dS = P * (dP - rowsum(P * dP)), dQ = scale dS K,
 *   dK = scale dS^T Q; the heads of a group add into their shared K and V, so
 *   a task is one (sequence, kv head) and walks its query heads in order. */
void tk_attention_bwd(float *d_q, float *d_k, float *d_v, float *d_p, const float *d_out, const float *p,
                      const float *q, const float *k, const float *v, int B, int T, int nh, int nkv, int hd,
                      float scale) {
    int ldq = nh * hd, ldk = nkv * hd, group = nh / nkv;
    size_t TT = (size_t)T * T;
    #pragma omp parallel for schedule(static)
    for (int bg = 0; bg < B * nkv; bg++) {
        int b = bg / nkv, g = bg % nkv;
        size_t ko = (size_t)b * T * ldk + (size_t)g * hd;
        for (int h = g * group; h < (g + 1) * group; h++) {
            size_t qo = (size_t)b * T * ldq + (size_t)h * hd;
            const float *pp = p + ((size_t)b * nh + h) * TT;
            float *ds = d_p + ((size_t)b * nh + h) * TT; /* [T, T] */
            float beta = h > g * group ? 1.0f : 0.0f;     /* first head of the group overwrites */
            /* dP [T, T] = dO_bh [T, hd] . V_bg^T */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hd, 1.0f, d_out + qo, ldq, v + ko, ldk, 0.0f,
                        ds, T);
            /* dS (scaled) in place; masked entries have P = 0 and so dS = 0 */
            for (int t = 0; t < T; t++) {
                const float *pr = pp + (size_t)t * T;
                float *dr = ds + (size_t)t * T;
                double dot = 0;
                for (int j = 0; j <= t; j++) dot += (double)pr[j] * dr[j];
                for (int j = 0; j < T; j++) dr[j] = j <= t ? scale * pr[j] * (dr[j] - (float)dot) : 0.0f;
            }
            /* dQ_bh [T, hd] = dS [T, T] . K_bg [T, hd] */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hd, T, 1.0f, ds, T, k + ko, ldk, 0.0f,
                        d_q + qo, ldq);
            /* dK_bg [T, hd] += dS^T . Q_bh */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hd, T, 1.0f, ds, T, q + qo, ldq, beta, d_k + ko,
                        ldk);
            /* dV_bg [T, hd] += P^T . dO_bh */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hd, T, 1.0f, pp, T, d_out + qo, ldq, beta,
                        d_v + ko, ldk);
        }
    }
}

/* ---------------------------------------------------------------- gated MLP */

#define GELU_K 0.7978845608028654f /* sqrt(2 / pi) */
#define GELU_C 0.044715f

/* tanh through expf: glibc's tanhf (via expm1f) took a fifth of a training
 * step. Differs from tanhf by a few ulp; overflow of expf gives exactly -1. */
static inline float fast_tanh(float u) { return 2.0f / (1.0f + expf(-2.0f * u)) - 1.0f; }

void tk_geglu_fwd(float *h, const float *gate, const float *up, size_t n) {
    #pragma omp parallel for schedule(static)
    for (long i = 0; i < (long)n; i++) {
        float x = gate[i];
        h[i] = 0.5f * x * (1.0f + fast_tanh(GELU_K * (x + GELU_C * x * x * x))) * up[i];
    }
}

/* gelu_tanh'(x) = 0.5 (1 + th) + 0.5 x (1 - th^2) K (1 + 3 C x^2), th = tanh(K (x + C x^3)). */
void tk_geglu_bwd(float *d_gate, float *d_up, const float *d_h, const float *gate, const float *up, size_t n) {
    #pragma omp parallel for schedule(static)
    for (long i = 0; i < (long)n; i++) {
        float x = gate[i], dh = d_h[i], th = fast_tanh(GELU_K * (x + GELU_C * x * x * x));
        float a = 0.5f * x * (1.0f + th);
        float da = 0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * GELU_K * (1.0f + 3.0f * GELU_C * x * x);
        d_gate[i] = dh * up[i] * da; /* d_h may be d_gate: read first */
        d_up[i] = dh * a;
    }
}

/* ---------------------------------------------------------------- cross-entropy */

void tk_xent_fwd(float *row_loss, const float *logits, const int32_t *targets, int N, int V) {
    #pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *l = logits + (size_t)n * V;
        float mx = l[0];
        for (int j = 1; j < V; j++) mx = l[j] > mx ? l[j] : mx;
        double sum = 0;
        for (int j = 0; j < V; j++) sum += exp((double)l[j] - mx);
        row_loss[n] = (float)(log(sum) + mx - l[targets[n]]);
    }
}

void tk_xent_bwd(float *d_logits, const float *logits, const int32_t *targets, const float *mask, double inv_total,
                 int N, int V) {
    #pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *l = logits + (size_t)n * V;
        float *d = d_logits + (size_t)n * V;
        float wgt = (float)(mask[n] * inv_total);
        if (wgt == 0.0f) {
            memset(d, 0, (size_t)V * sizeof *d);
            continue;
        }
        float mx = l[0];
        for (int j = 1; j < V; j++) mx = l[j] > mx ? l[j] : mx;
        double sum = 0;
        for (int j = 0; j < V; j++) sum += exp((double)l[j] - mx);
        double inv = 1.0 / sum;
        for (int j = 0; j < V; j++) d[j] = (float)(exp((double)l[j] - mx) * inv) * wgt;
        d[targets[n]] -= wgt;
    }
}
