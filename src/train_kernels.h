/* Forward/backward kernel pairs of the trainer (src/train.c). Each forward is
 * followed by its backward in train_kernels.c. Work is split over OpenMP
 * threads, each calling single-threaded BLAS on its share. Reductions over rows
 * (weight gradients) run per column in row order, so the results do not
 * depend on the thread count. Private to the library. */
#ifndef STETHO_TRAIN_KERNELS_H
#define STETHO_TRAIN_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* out [N, Dout] = in [N, Din] . W [Dout, Din]^T */
void tk_linear_fwd(float *out, const float *in, const float *W, int N, int Din, int Dout);
/* d_in [N, Din] (= or +=) d_out [N, Dout] . W [Dout, Din];  d_W [Dout, Din] += d_out^T . in.
 * Either output may be NULL to skip it. */
void tk_linear_bwd(float *d_in, bool accumulate, float *d_W, const float *d_out, const float *in, const float *W,
                   int N, int Din, int Dout);

/* Gemma RMSNorm: y = x / rms(x) * (1 + w) over N rows of D; r [N] = 1/rms. */
void tk_rmsnorm_fwd(float *y, float *r, const float *x, const float *w, int N, int D, double eps);
/* d_x (= or +=) ..., d_w [D] += sum over rows. d_y may alias d_x only when !accumulate. */
void tk_rmsnorm_bwd(float *d_x, bool accumulate, float *d_w, const float *d_y, const float *x, const float *r,
                    const float *w, int N, int D);

/* cos/sin [T, hd/2] for positions 0..T-1: inv_freq_i = theta^(-2i/hd). */
void tk_rope_tables(float *cos_t, float *sin_t, int T, int hd, double theta);
/* Rotate-half RoPE in place on x [B*T, nh*hd] (row t of a sequence = position t). */
void tk_rope_fwd(float *x, int B, int T, int nh, int hd, const float *cos_t, const float *sin_t);
/* The transpose rotation, in place on the gradient. */
void tk_rope_bwd(float *dx, int B, int T, int nh, int hd, const float *cos_t, const float *sin_t);

/* Causal attention, window > 0 limiting a query at t to keys t-window+1..t.
 * q [B*T, nh*hd], k, v [B*T, nkv*hd] -> out [B*T, nh*hd], p [B, nh, T, T]. */
void tk_attention_fwd(float *out, float *p, const float *q, const float *k, const float *v, int B, int T, int nh,
                      int nkv, int hd, float scale, int window);
/* d_q, d_k, d_v (overwritten) from d_out; d_p [B, nh, T, T] scratch. */
void tk_attention_bwd(float *d_q, float *d_k, float *d_v, float *d_p, const float *d_out, const float *p,
                      const float *q, const float *k, const float *v, int B, int T, int nh, int nkv, int hd,
                      float scale);

/* h = gelu_tanh(gate) * up over n elements. */
void tk_geglu_fwd(float *h, const float *gate, const float *up, size_t n);
/* d_h may be d_gate. */
void tk_geglu_bwd(float *d_gate, float *d_up, const float *d_h, const float *gate, const float *up, size_t n);

/* Cross-entropy of each row of logits [N, V] against targets: row_loss [N]. */
void tk_xent_fwd(float *row_loss, const float *logits, const int32_t *targets, int N, int V);
/* d_logits [N, V] = (softmax - onehot) * mask[row] * inv_total. */
void tk_xent_bwd(float *d_logits, const float *logits, const int32_t *targets, const float *mask, double inv_total,
                 int N, int V);

#endif
