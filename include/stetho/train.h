/* Training of a Gemma 3 text model in f32 (the tiny world's base model and
 * fine-tunes): parameters, forward over a batch with saved activations,
 * next-token cross-entropy, backward for every op, AdamW with warm-up + cosine
 * schedule and global gradient-norm clipping, and saving as an HF directory that
 * stetho_model_load (and transformers) reads as a Gemma3ForCausalLM.
 *
 * The trainer has its own forward code (it must keep every intermediate for the
 * backward pass); tests check its logits against the inference engine's on the
 * saved model, so the model that is trained is exactly the model that is
 * evaluated.
 *
 * Shapes below: B sequences of T tokens (BT = B*T rows), D = hidden,
 * Q = n_heads*head_dim, KV = n_kv_heads*head_dim, F = intermediate, V = vocab.
 * Deterministic for a given seed and thread count (stetho_set_threads). */
#ifndef STETHO_TRAIN_H
#define STETHO_TRAIN_H

#include "stetho/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int n_layers, hidden, intermediate;
    int n_heads, n_kv_heads, head_dim;
    int vocab;
    int max_position;            /* max_position_embeddings written to config.json */
    int sliding_window;          /* local layers: a query at t sees keys t-w+1..t */
    int sliding_window_pattern;  /* layer l is global when (l+1) % pattern == 0 (Gemma 3: 6) */
    double rope_theta_global;    /* rope_theta (full-attention layers) */
    double rope_theta_local;     /* rope_local_base_freq (sliding layers) */
    double query_pre_attn_scalar;/* scores scaled by query_pre_attn_scalar^-0.5 */
    double rms_eps;
    int bos_token_id, eos_token_id, pad_token_id; /* written to config.json; < 0 = omitted */
} stetho_train_config;

/* The tiny-world size: 8 layers, d 128, MLP 512, 4/2 heads of 32,
 * vocab 512, window 64 with pattern 6, thetas 1e6 / 1e4, qpas = head_dim. */
void stetho_train_config_default(stetho_train_config *c);

typedef enum {
    STETHO_TRAIN_EMBED,  /* model.embed_tokens.weight (tied unembedding) */
    STETHO_TRAIN_MATRIX, /* projections */
    STETHO_TRAIN_NORM,   /* RMSNorm weights, applied as (1 + w) */
} stetho_train_kind;

/* A named view into the parameter buffer (HF tensor name). */
typedef struct {
    char name[96];
    stetho_train_kind kind;
    int layer;           /* -1 for embeddings and the final norm */
    int ndim;
    uint64_t shape[2];
    size_t offset, n;    /* elements into params/grads */
} stetho_train_tensor;

/* Pointers of one layer into params (or grads). */
typedef struct {
    float *ln_in;               /* [D] input_layernorm */
    float *wq, *wk, *wv, *wo;   /* [Q, D], [KV, D], [KV, D], [D, Q] */
    float *q_norm, *k_norm;     /* [head_dim] */
    float *ln_post_attn;        /* [D] post_attention_layernorm */
    float *ln_pre_ffn;          /* [D] pre_feedforward_layernorm */
    float *w_gate, *w_up;       /* [F, D] */
    float *w_down;              /* [D, F] */
    float *ln_post_ffn;         /* [D] post_feedforward_layernorm */
} stetho_train_layer;

/* What one layer's forward keeps for the backward pass. */
typedef struct {
    float *x;        /* [BT, D] residual stream entering the layer */
    float *xn1;      /* [BT, D] input_layernorm(x) */
    float *r1;       /* [BT] its 1/rms */
    float *q, *k;    /* [BT, Q], [BT, KV] projections before QK-norm */
    float *rq, *rk;  /* [BT*nh], [BT*nkv] QK-norm 1/rms per head */
    float *qr, *kr;  /* [BT, Q], [BT, KV] after QK-norm and RoPE */
    float *v;        /* [BT, KV] */
    float *p;        /* [B, nh, T, T] attention probabilities (0 where masked) */
    float *att;      /* [BT, Q] attention output before o_proj */
    float *ao;       /* [BT, D] o_proj output */
    float *r_pa;     /* [BT] post_attention_layernorm 1/rms */
    float *x1;       /* [BT, D] residual after the attention block */
    float *xn2;      /* [BT, D] pre_feedforward_layernorm(x1) */
    float *r2;       /* [BT] */
    float *gate, *up;/* [BT, F] */
    float *h;        /* [BT, F] gelu_tanh(gate) * up */
    float *mo;       /* [BT, D] down_proj output */
    float *r_pf;     /* [BT] post_feedforward_layernorm 1/rms */
} stetho_train_layer_acts;

typedef struct {
    stetho_train_config cfg;
    size_t n_params;
    float *params;                 /* [n_params] every tensor, contiguous */
    float *grads;                  /* [n_params] d loss / d params of the last backward */
    float *adam_m, *adam_v;        /* [n_params] AdamW moments (allocated at the first step) */
    uint64_t step;                 /* optimizer steps taken */
    size_t n_tensors;
    stetho_train_tensor *tensors;  /* [n_tensors] in HF order */
    float *embed, *final_norm;     /* [V, D], [D] into params */
    float *g_embed, *g_final_norm; /* same into grads */
    stetho_train_layer *w, *g;     /* [n_layers] into params, grads */
    bool *layer_sliding;           /* [n_layers] */

    /* activations of the last forward (sized for act_cap rows) */
    int B, T;                      /* shape of the last forward */
    size_t act_cap_bt, act_cap_p;  /* rows, attention-probability elements allocated */
    float *act_mem, *grad_act_mem;
    stetho_train_layer_acts *acts; /* [n_layers] */
    float *xL;                     /* [BT, D] residual after the last layer */
    float *xf;                     /* [BT, D] final norm output */
    float *rf;                     /* [BT] its 1/rms */
    float *logits;                 /* [BT, V] */
    float *row_loss;               /* [BT] cross-entropy per position */
    float *cos_g, *sin_g, *cos_l, *sin_l; /* [T, head_dim/2] RoPE tables */
    int32_t *tokens, *targets;     /* [BT] copies of the last batch */
    float *mask;                   /* [BT] loss weight per position */
    double mask_sum;
    bool have_loss;                /* the last forward had targets */
    /* backward scratch */
    float *d_x, *d_xn, *d_q, *d_k, *d_v, *d_att, *d_ao, *d_gate, *d_up, *d_mo; /* [BT, *] */
    float *d_p;                    /* [B, nh, T, T] */
    float *d_logits;               /* [BT, V] */
} stetho_train_model;

/* Check the configuration and allocate a model initialised from seed: matrices
 * and embeddings normal(0, 0.02), norm weights 0 (Gemma's 1 + w = 1). */
stetho_status stetho_train_model_init(stetho_train_model *m, const stetho_train_config *cfg, uint64_t seed);
void stetho_train_model_free(stetho_train_model *m);
/* A tensor by HF name; NULL if absent. */
const stetho_train_tensor *stetho_train_find(const stetho_train_model *m, const char *name);

/* Forward over tokens [B, T] (every sequence at positions 0..T-1), keeping the
 * activations. targets [B, T] (next tokens) may be NULL: then only m->logits
 * [BT, V] is computed and *loss is untouched. mask [B, T] (may be NULL = all 1)
 * weighs each position's cross-entropy; loss = sum(mask*ce) / sum(mask). */
stetho_status stetho_train_forward(stetho_train_model *m, const int32_t *tokens, const int32_t *targets,
                                   const float *mask, int B, int T, float *loss);
/* d loss / d params of the last forward (which must have had targets) into
 * m->grads (overwritten). */
stetho_status stetho_train_backward(stetho_train_model *m);

typedef struct {
    double lr, min_lr;           /* peak and final learning rate */
    int64_t warmup_steps, total_steps; /* linear warm-up to lr, then cosine to min_lr at total_steps */
    double beta1, beta2, eps;
    double weight_decay;         /* decoupled (AdamW), on matrices */
    bool decay_embed_norms;      /* also decay embeddings and norm weights */
    double grad_clip;            /* global L2 norm bound; <= 0 = off */
    bool freeze_embed_final_norm;/* leave model.embed_tokens and model.norm unchanged */
} stetho_train_opt;

/* lr 1e-3 -> 1e-4, warm-up 100 of 1000 steps, betas 0.9/0.95, eps 1e-8, wd 0.1, clip 1. */
void stetho_train_opt_default(stetho_train_opt *o);
/* Learning rate of step (0-based) under o's schedule. */
double stetho_train_lr(const stetho_train_opt *o, int64_t step);
/* One AdamW step with m->grads at learning rate stetho_train_lr(o, m->step).
 * grad_norm (may be NULL) receives the global gradient norm of the trained
 * parameters before clipping. */
stetho_status stetho_train_step(stetho_train_model *m, const stetho_train_opt *o, double *grad_norm);

/* Write dir/config.json (gemma3_text, Gemma3ForCausalLM, tied embeddings) and
 * dir/model.safetensors in dtype (F32 or BF16). dir is created if absent. */
stetho_status stetho_train_save(const stetho_train_model *m, const char *dir, stetho_dtype dtype);

/* Replace m's parameters with dir/model.safetensors (as stetho_train_save
 * writes it, F32 or BF16): every tensor of m must be there with its shape.
 * Optimizer state is untouched. On failure m's parameters are unchanged. */
stetho_status stetho_train_load_params(stetho_train_model *m, const char *dir);

#ifdef __cplusplus
}
#endif
#endif
