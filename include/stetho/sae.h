/* Sparse autoencoders: the formats a Gemma user meets, loaded into one struct,
 * and batched encode/decode through BLAS.
 *
 *   Gemma Scope 2 (Gemma 3): config.json + params.safetensors
 *       w_enc [d_model, d_sae], w_dec [d_sae, d_model], b_enc, b_dec, threshold
 *   Gemma Scope 1 (Gemma 2): params.npz (W_enc, W_dec, b_enc, b_dec, threshold)
 *   SAELens: cfg.json + sae_weights.safetensors, architectures standard (ReLU),
 *       jumprelu, topk, gated; apply_b_dec_to_input and normalize_activations
 *
 * Encoding follows SAELens: x' = norm_in(x) - b_dec·[apply_b_dec_to_input];
 * pre = x' W_enc + b_enc; then ReLU, JumpReLU (relu(pre)·[pre > threshold]),
 * TopK (the k largest of pre, ReLU'd) or gated. Decoding: f W_dec + b_dec, then
 * norm_out. */
#ifndef STETHO_SAE_H
#define STETHO_SAE_H

#include "stetho/common.h"
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    STETHO_SAE_FORMAT_GEMMA_SCOPE_2,
    STETHO_SAE_FORMAT_GEMMA_SCOPE_1,
    STETHO_SAE_FORMAT_SAELENS,
} stetho_sae_format;

typedef enum {
    STETHO_SAE_RELU,     /* SAELens "standard" */
    STETHO_SAE_JUMPRELU,
    STETHO_SAE_TOPK,
    STETHO_SAE_GATED,
} stetho_sae_arch;

typedef enum {
    STETHO_SAE_NORM_NONE,
    STETHO_SAE_NORM_CONSTANT_NORM_RESCALE, /* x * sqrt(d_in) / ||x|| */
    STETHO_SAE_NORM_LAYER_NORM,            /* (x - mean) / (std + 1e-5) */
    STETHO_SAE_NORM_SCALAR,                /* x * scaling factor (expected_average_only_in) */
} stetho_sae_norm;

typedef struct {
    char *dir;
    stetho_sae_format format;
    stetho_sae_arch arch;
    int d_model, d_sae;
    int k;                      /* TopK */
    bool apply_b_dec_to_input;
    stetho_sae_norm norm;
    float norm_scale;           /* STETHO_SAE_NORM_SCALAR */
    char hook[128];             /* TransformerLens hook name, "" if unknown */
    int layer;                  /* -1 if unknown */
    char stored_dtype[16];      /* dtype of the parameters on disk */
    float *W_enc;               /* [d_model, d_sae] */
    float *W_dec;               /* [d_sae, d_model] */
    float *b_enc;               /* [d_sae] (NULL for gated) */
    float *b_dec;               /* [d_model] */
    float *threshold;           /* [d_sae] JumpReLU */
    float *b_gate, *r_mag, *b_mag; /* [d_sae] gated */
} stetho_sae;

const char *stetho_sae_format_name(stetho_sae_format f);
const char *stetho_sae_arch_name(stetho_sae_arch a);
/* Parse "relu"/"standard", "jumprelu", "topk", "gated". */
bool stetho_sae_arch_from_name(const char *name, stetho_sae_arch *out);

/* Load the SAE in dir (format detected from its files). Parameters are checked
 * for shape and for NaN/Inf; errors name the file and array. */
stetho_status stetho_sae_load(stetho_sae *sae, const char *dir);
void stetho_sae_free(stetho_sae *sae);

/* acts [n, d_sae] = encode(x [n, d_model]). Batched through sgemm; threaded. */
stetho_status stetho_sae_encode(const stetho_sae *sae, const float *x, size_t n, float *acts);
/* x_hat [n, d_model] = decode(acts [n, d_sae]); x is the encoder's input, needed
 * to undo input normalisation (may be NULL when norm is NONE or SCALAR). */
stetho_status stetho_sae_decode(const stetho_sae *sae, const float *acts, const float *x, size_t n, float *x_hat);

/* The k largest of each row of acts [n, d_sae]: idx, val [n, k], each row in
 * descending order of value (ties: the smaller index first). A heap per row,
 * rows in parallel: O(n d_sae log k), not a sort of every row. */
stetho_status stetho_sae_top_k(const float *acts, size_t n, int d_sae, int k, int32_t *idx, float *val);

/* One SAE per layer under a directory (diagnose, project). */
typedef struct {
    int layer;
    char *path;
} stetho_sae_entry;

/* Find the SAEs under dir: dir itself if it is one, else its subdirectories and
 * theirs (a Gemma Scope release's resid_post_all/layer_L_width_16k_l0_small/, or
 * layer_L/ folders). The layer comes from the SAE's config (hook name) or from
 * "layer_L" in the path, without loading weights. Sorted by layer; two SAEs for
 * one layer are an error naming both. */
stetho_status stetho_sae_scan(const char *dir, stetho_sae_entry **entries, size_t *n);
void stetho_sae_entries_free(stetho_sae_entry *entries, size_t n);

/* Write an SAE in SAELens format (cfg.json + sae_weights.safetensors) into dir
 * (created; refused if it holds an SAE already unless overwrite). */
stetho_status stetho_sae_save_saelens(const stetho_sae *sae, const char *dir, bool overwrite);

#ifdef __cplusplus
}
#endif
#endif
