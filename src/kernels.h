/* Numeric primitives of the forward pass: matrix products against stored
 * (f32/bf16/f16) weights through BLAS, RMSNorm, RoPE, gated activations and
 * causal (optionally windowed, soft-capped) attention. Private to the library. */
#ifndef STETHO_KERNELS_H
#define STETHO_KERNELS_H

#include "stetho/model.h"

/* Elements of f32 scratch st_matmul_wt needs for products of at most T rows
 * and K columns in compute mode `mode`. */
size_t st_matmul_scratch_elems(int K, int T, stetho_compute mode);

/* Up to this many input rows, st_matmul_wt reads the weight directly (decoding). */
#define ST_FEW_ROWS 16

/* out[t, n] = sum_k in[t, k] * W[n, k] (+ bias[n]) for t < T, n < N = W rows.
 * in: [T, K] (row stride K), out: [T, ldo] (writes columns 0..N). W's rows are
 * converted to f32 in blocks into scratch (st_matmul_scratch_elems(K) floats)
 * unless W is already aligned f32. Calls BLAS: not from inside a parallel region. */
stetho_status st_matmul_wt(float *out, int ldo, const float *in, int T, int K, const stetho_tensor *W,
                           const float *bias, float *scratch, stetho_compute mode);

/* gemm_bf16.c: the bf16 compute mode's products (bf16 W only). */
/* Scratch (floats) st_matmul_bf16 needs for T rows of K columns. */
size_t st_matmul_bf16_scratch_elems(int T, int K);
/* out[t, n] = bf16(in[t]) . W[n] with f32 sums; false when this build has no
 * bf16 kernels (the caller then rounds in with st_round_to_bf16 and runs the
 * f32 product). Not from inside a parallel region. */
bool st_matmul_bf16(float *out, int ldo, const float *in, int T, int K, const stetho_tensor *W, float *scratch);
/* dst[i] = src[i] rounded to bf16 (nearest even), kept as f32 (dst may be src). */
void st_round_to_bf16(float *dst, const float *src, size_t n);

/* out[t] = x[t] * rsqrt(mean(x[t]^2) + eps) * w for T rows of D (out may be x).
 * w already holds (1 + w) for Gemma. */
void st_rmsnorm(float *out, const float *x, const float *w, int T, int D, double eps);

/* Rotate-half RoPE in place on x [T, n_heads * hd] with tables cos/sin [T, hd/2]. */
void st_rope(float *x, int T, int n_heads, int hd, const float *cos_t, const float *sin_t);

/* Fill cos/sin [T, hd/2] for positions pos[0..T) (NULL: 0..T-1) with the given
 * rope parameters. */
void st_rope_tables(float *cos_t, float *sin_t, const int *pos, int T, int hd, const stetho_rope *rope);

/* gate[i] = act(gate[i]) * up[i] for n elements. */
void st_gated_act(float *gate, const float *up, size_t n, stetho_activation act);

/* Causal self-attention over T tokens.
 * q: [T, nh*hd] (scaled by nothing), k, v: [T, nkv*hd], out: [T, nh*hd].
 * window: a query at t sees keys max(0, t - window + 1)..t (0 = all keys <= t).
 * scores: scratch of st_attention_scratch_elems(T) floats. */
size_t st_attention_scratch_elems(int T);
void st_attention(float *out, const float *q, const float *k, const float *v, int T, int nh, int nkv, int hd,
                  double scale, double softcap, int window, float *scores);

/* Attention of T single queries (one per decoding sequence) over cached keys.
 * q: [T, nh*hd] (at their positions, RoPE applied); kc[t], vc[t]: n_keys[t]
 * cached rows of [nkv*hd] each for query t, in any order (softmax does not care),
 * all visible. out: [T, nh*hd]. scores: scratch of T * nh * max_keys floats. */
void st_attention_cached(float *out, const float *q, int T, const float *const *kc, const float *const *vc,
                         const int *n_keys, int nh, int nkv, int hd, double scale, double softcap, int max_keys,
                         float *scores);

#endif
