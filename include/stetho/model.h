/* The inference engine: a decoder-only transformer (Gemma 3, Gemma 2, Llama,
 * Qwen2) computed in f32 over weights that stay mmapped in their stored dtype,
 * exactly as Hugging Face transformers computes it in float32.
 *
 * One forward function runs a token sequence (prompt processing: all tokens at
 * once, matrix products through BLAS) and produces logits [tokens, vocab]. At
 * every hook point it hands a [tokens, d_model] f32 block to the consumers
 * registered for that hook (TransformerLens names):
 *   blocks.L.hook_resid_pre   input of layer L (L = 0: scaled embeddings)
 *   blocks.L.hook_attn_out    what the attention block adds to the residual
 *                             (after Gemma's post_attention_layernorm)
 *   blocks.L.hook_mlp_out     what the MLP block adds to the residual
 *                             (after Gemma's post_feedforward_layernorm)
 *   blocks.L.hook_resid_post  resid_pre + attn_out + mlp_out (before the final norm)
 * so activations stream to a consumer (capture file, SAE, statistics) without
 * the engine storing them. */
#ifndef STETHO_MODEL_H
#define STETHO_MODEL_H

#include "stetho/checkpoint.h"
#include "stetho/taskvec.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    STETHO_ACT_GELU_TANH, /* gelu_pytorch_tanh (Gemma) */
    STETHO_ACT_GELU,      /* exact erf gelu */
    STETHO_ACT_SILU,      /* Llama, Qwen2 */
} stetho_activation;

typedef enum {
    STETHO_ROPE_DEFAULT,
    STETHO_ROPE_LINEAR, /* positions / factor */
    STETHO_ROPE_LLAMA3, /* Llama 3.1 frequency-dependent scaling */
} stetho_rope_type;

/* RoPE parameters of one attention kind (sliding or global). */
typedef struct {
    double theta;
    stetho_rope_type type;
    double factor;              /* LINEAR, LLAMA3 */
    double low_freq_factor;     /* LLAMA3 */
    double high_freq_factor;    /* LLAMA3 */
    double original_max_pos;    /* LLAMA3 original_max_position_embeddings */
} stetho_rope;

/* How matrix products with bf16-stored weights are computed.
 *   STETHO_COMPUTE_F32   (default) activations stay f32, weights are widened
 *                        exactly: HF transformers' float32 results.
 *   STETHO_COMPUTE_BF16  activations are rounded to bf16 (round to nearest
 *                        even) where they enter a product with a bf16 weight,
 *                        products are summed in f32: what llama.cpp and HF's
 *                        bf16 kernels do, at twice the multiply rate on CPUs
 *                        with AVX512-BF16. Norms, attention, activations and
 *                        the residual stream stay f32; f32/f16 weights are
 *                        always computed in f32.
 * A process-wide setting, like the thread count; it applies to forward passes
 * started after the call. */
typedef enum {
    STETHO_COMPUTE_F32,
    STETHO_COMPUTE_BF16,
} stetho_compute;

void stetho_set_compute(stetho_compute c);
stetho_compute stetho_get_compute(void);
/* "f32" / "bf16" */
const char *stetho_compute_name(stetho_compute c);
/* Parse "f32" or "bf16"; STETHO_ERR_INVALID names the value otherwise. */
stetho_status stetho_compute_parse(const char *s, stetho_compute *out);
/* Whether this build has dedicated kernels for c (bf16: compiled for a CPU with
 * AVX512-BF16). Without them bf16 compute gives the same numbers as with them
 * (the activations are rounded, the products run in f32), only no faster. */
bool stetho_compute_native(stetho_compute c);

/* Everything the forward pass needs from config.json, per family. */
typedef struct {
    stetho_family family;
    int n_layers, hidden, intermediate;
    int n_heads, n_kv_heads, head_dim;
    int vocab, max_position;
    double rms_eps;
    bool norm_plus_one;      /* Gemma RMSNorm: x * (1 + w) */
    bool sandwich_norms;     /* Gemma 2/3: post-attention and pre/post-FFN norms (4 per layer) */
    bool qk_norm;            /* Gemma 3: RMSNorm on each q/k head before RoPE */
    bool scale_embeddings;   /* Gemma: embeddings * sqrt(hidden) */
    double attn_scale;       /* query_pre_attn_scalar^-0.5 or head_dim^-0.5 */
    double attn_softcap;     /* Gemma 2: tanh(s / cap) * cap on scores; 0 = off */
    double final_softcap;    /* Gemma 2: same on logits; 0 = off */
    int sliding_window;      /* keys q - w + 1 .. q on sliding layers; 0 = none */
    bool *layer_sliding;     /* [n_layers] true for sliding-window layers */
    stetho_rope rope_global; /* full-attention layers */
    stetho_rope rope_local;  /* sliding layers */
    stetho_activation act;
} stetho_model_config;

/* Parse the text model's settings from config.json text (nested text_config for
 * multimodal checkpoints). Unknown families, missing keys and unsupported rope
 * types fail with a message naming `label`. Free with stetho_model_config_free. */
stetho_status stetho_model_config_parse(stetho_model_config *c, const char *json, size_t len, const char *label);
void stetho_model_config_free(stetho_model_config *c);

/* Views of one layer's weights (into the checkpoint's mappings). Biases and the
 * Gemma-only norms are NULL when absent. */
/* One layer's weights. Matrices are views into the checkpoint's mappings in
 * their stored dtype; the small vectors (norm weights, with Gemma's 1 + w folded
 * in as HF computes it in f32, and biases) are f32 copies. Optional ones are
 * NULL when the family or checkpoint lacks them. */
typedef struct {
    const stetho_tensor *wq, *wk, *wv, *wo;      /* [nh*hd, hidden], [nkv*hd, hidden] x2, [hidden, nh*hd] */
    const stetho_tensor *w_gate, *w_up, *w_down; /* [inter, hidden] x2, [hidden, inter] */
    const float *bq, *bk, *bv, *bo;              /* [nh*hd], [nkv*hd] x2, [hidden] or NULL */
    const float *ln_in;                          /* [hidden] input_layernorm */
    const float *ln_post_attn;                   /* [hidden] post_attention_layernorm */
    const float *ln_pre_ffn, *ln_post_ffn;       /* [hidden] (Gemma 2/3) or NULL */
    const float *q_norm, *k_norm;                /* [head_dim] (Gemma 3) or NULL */
} stetho_layer_weights;

typedef struct {
    stetho_checkpoint ckpt;
    stetho_model_config cfg;
    const stetho_tensor *embed;   /* [vocab, hidden] */
    const stetho_tensor *lm_head; /* [vocab, hidden]; == embed when tied */
    stetho_layer_weights *layers; /* [n_layers] */
    const float *final_norm;      /* [hidden] final norm weight, (1 + w) folded in for Gemma */
    float *vectors;               /* storage of every f32 norm/bias vector */
} stetho_model;

/* Open an HF directory (or .safetensors with a config.json beside it), parse its
 * config and check every weight the forward pass uses exists with the right
 * shape and a float dtype. */
stetho_status stetho_model_load(stetho_model *m, const char *path);
/* Load base + alpha * tau on a selection without writing a checkpoint: the
 * checkpoint at path is opened and stetho_taskvec_edit_in_memory applied
 * before the weights are bound, so the model computes exactly what loading the
 * directory `stetho edit` would write computes. Memory: the edited tensors. */
stetho_status stetho_model_load_edit(stetho_model *m, const char *path, const stetho_checkpoint *delta, bool is_finetuned,
                                     const stetho_selection *sel, const stetho_edit_opts *opts);
void stetho_model_free(stetho_model *m);

typedef enum {
    STETHO_HOOK_RESID_PRE,
    STETHO_HOOK_ATTN_OUT,
    STETHO_HOOK_MLP_OUT,
    STETHO_HOOK_RESID_POST,
    STETHO_HOOK_KIND_COUNT
} stetho_hook_kind;

/* "hook_resid_pre", ... */
const char *stetho_hook_kind_name(stetho_hook_kind k);

/* A consumer. `data` is [n_tokens, dim] f32, valid only during the call. A status
 * other than STETHO_OK aborts the forward pass and is returned by it. */
typedef stetho_status (*stetho_hook_fn)(void *user, int layer, stetho_hook_kind kind, const float *data,
                                        int n_tokens, int dim);

/* An editing consumer: like stetho_hook_fn, but `data` is the live block and may
 * be changed in place. At hook_resid_pre / hook_resid_post the change becomes the
 * residual stream the rest of the model sees (e.g. splicing in an SAE's
 * reconstruction); at hook_attn_out / hook_mlp_out it changes what is added. */
typedef stetho_status (*stetho_hook_edit_fn)(void *user, int layer, stetho_hook_kind kind, float *data, int n_tokens,
                                             int dim);

typedef struct {
    int layer; /* -1 = every layer */
    stetho_hook_kind kind;
    stetho_hook_fn fn;        /* exactly one of fn and edit is set */
    stetho_hook_edit_fn edit;
    void *user;
} stetho_hook_reg;

typedef struct {
    size_t n, cap;
    stetho_hook_reg *regs;
} stetho_hooks;

void stetho_hooks_init(stetho_hooks *h);
void stetho_hooks_free(stetho_hooks *h);
/* Parse "blocks.L.hook_X" or "blocks.*.hook_X" (layer -1). */
stetho_status stetho_hook_parse(const char *name, int *layer, stetho_hook_kind *kind);
/* Register fn for a hook name (as stetho_hook_parse takes). Consumers of the
 * same hook are called in registration order. */
stetho_status stetho_hooks_add(stetho_hooks *h, const char *name, stetho_hook_fn fn, void *user);
/* Register an editing consumer (see stetho_hook_edit_fn) for a hook name. */
stetho_status stetho_hooks_add_edit(stetho_hooks *h, const char *name, stetho_hook_edit_fn fn, void *user);
/* Register for (layer, kind) directly (layer -1 = all). */
stetho_status stetho_hooks_add_at(stetho_hooks *h, int layer, stetho_hook_kind kind, stetho_hook_fn fn, void *user);

/* Run tokens[0..n_tokens) (positions 0..n_tokens-1) through the model.
 * logits: [n_tokens, vocab] output, or NULL to skip the head (then layers after
 * the last one a hook needs are skipped too). hooks may be NULL. Token ids must
 * be < vocab and n_tokens <= max_position. */
stetho_status stetho_model_forward(stetho_model *m, const int32_t *tokens, int n_tokens, float *logits,
                                   const stetho_hooks *hooks);

/* Run one prompt and write the activations named in hook_list to a safetensors
 * file at out_path, streaming each block to disk as the forward pass produces it.
 * hook_list is comma-separated: `logits` and `blocks.L.hook_X` (L may be `*` for
 * every layer). The file holds I32 `tokens` [n_tokens], then each requested
 * hook as F32 [n_tokens, hidden] in forward order (layer by layer, resid_pre,
 * attn_out, mlp_out, resid_post), then F32 `logits` [n_tokens, vocab]. */
stetho_status stetho_model_capture(stetho_model *m, const int32_t *tokens, int n_tokens, const char *hook_list,
                                   const char *out_path);

/* Many prompts into one file: I32 `tokens` [total] (the prompts concatenated),
 * I64 `prompt_offsets` [n_prompts + 1] (prompt i is rows offsets[i] ..
 * offsets[i+1]), then each hook F32 [total, hidden] and `logits` [total, vocab]
 * as stetho_model_capture orders them. Blocks are spooled to temporary files
 * while the prompts run, so memory holds one prompt's block at a time. */
stetho_status stetho_model_capture_many(stetho_model *m, const int32_t *const *prompts, const int *lens,
                                        size_t n_prompts, const char *hook_list, const char *out_path);

/* ------------------------------------------------------------ decoding */

/* Keys (after RoPE) and values of every layer for n_seqs sequences of up to
 * max_len positions. A sliding-window layer keeps only a ring of
 * sliding_window slots per sequence (position p lives in slot p % window), so
 * its cache does not grow with the sequence. */
typedef struct {
    int n_seqs, max_len, n_layers, kv_dim;
    int *cap;       /* [n_layers] slots per sequence */
    float **k, **v; /* [n_layers] -> [n_seqs, cap[l], kv_dim] */
    int *len;       /* [n_seqs] positions stored so far */
} stetho_kv_cache;

stetho_status stetho_kv_cache_init(stetho_kv_cache *c, const stetho_model *m, int n_seqs, int max_len);
void stetho_kv_cache_free(stetho_kv_cache *c);

/* Run a prompt tokens[0..n_tokens) as sequence `seq` of the cache from position
 * 0 (whatever the slot held is dropped), storing its keys and values.
 * logits_last: [vocab] logits of the last token, or NULL. hooks see the prompt
 * as one [n_tokens, dim] block. */
stetho_status stetho_model_prefill(stetho_model *m, stetho_kv_cache *c, int seq, const int32_t *tokens, int n_tokens,
                                   float *logits_last, const stetho_hooks *hooks);

/* Advance n sequences by one token each: tokens[i] goes to sequence seqs[i]
 * (distinct) at position c->len[seqs[i]]. logits: [n, vocab] or NULL. Each
 * row's result does not depend on the other rows (hooks see the n rows as one
 * [n, dim] block, one row per sequence). */
stetho_status stetho_model_decode(stetho_model *m, stetho_kv_cache *c, const int *seqs, const int32_t *tokens, int n,
                                  float *logits, const stetho_hooks *hooks);

#ifdef __cplusplus
}
#endif
#endif
