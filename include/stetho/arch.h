/* Model families: config.json -> stetho_config, and the tensor-name table that
 * gives every checkpoint tensor its decoder layer and module kind.
 *
 * Names are matched after stripping the family's prefix: Gemma 3 multimodal
 * checkpoints use `language_model.model.` (transformers < 4.52) or
 * `model.language_model.` (>= 4.52), text-only ones and Gemma 2 / Llama / Qwen2
 * use `model.`. Vision tower and projector tensors are classed
 * STETHO_MOD_VISION and carried through edits untouched. */
#ifndef STETHO_ARCH_H
#define STETHO_ARCH_H

#include "stetho/common.h"
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    STETHO_FAMILY_UNKNOWN,
    STETHO_FAMILY_GEMMA3,
    STETHO_FAMILY_GEMMA2,
    STETHO_FAMILY_LLAMA, /* also mistral */
    STETHO_FAMILY_QWEN2,
} stetho_family;

typedef enum {
    STETHO_MOD_ATTN_Q,
    STETHO_MOD_ATTN_K,
    STETHO_MOD_ATTN_V,
    STETHO_MOD_ATTN_O,
    STETHO_MOD_MLP_GATE,
    STETHO_MOD_MLP_UP,
    STETHO_MOD_MLP_DOWN,
    STETHO_MOD_NORM_INPUT,     /* input_layernorm */
    STETHO_MOD_NORM_POST_ATTN, /* post_attention_layernorm */
    STETHO_MOD_NORM_PRE_FFN,   /* pre_feedforward_layernorm (Gemma 2/3) */
    STETHO_MOD_NORM_POST_FFN,  /* post_feedforward_layernorm (Gemma 2/3) */
    STETHO_MOD_NORM_Q,         /* q_norm (Gemma 3) */
    STETHO_MOD_NORM_K,         /* k_norm (Gemma 3) */
    STETHO_MOD_EMBED,          /* embed_tokens */
    STETHO_MOD_LM_HEAD,
    STETHO_MOD_NORM_FINAL,     /* model.norm */
    STETHO_MOD_VISION,         /* vision tower, multimodal projector */
    STETHO_MOD_OTHER,
    STETHO_MOD_COUNT
} stetho_module;

/* Module groups, used by --modules selections. */
enum {
    STETHO_GROUP_ATTN = 1u << 0,
    STETHO_GROUP_MLP = 1u << 1,
    STETHO_GROUP_NORM = 1u << 2,
    STETHO_GROUP_EMBED = 1u << 3,
    STETHO_GROUP_OTHER = 1u << 4,
    STETHO_GROUP_VISION = 1u << 5,
    STETHO_GROUP_ALL = 0x1f, /* everything but the vision tower */
};

typedef struct {
    int layer;            /* decoder layer index, -1 outside the layers */
    stetho_module module;
    bool is_bias;         /* .bias rather than .weight */
} stetho_tensor_role;

/* Classify a tensor name (any supported family and prefix). */
stetho_tensor_role stetho_arch_classify(const char *name);
/* "q_proj", "down_proj", "input_layernorm", "embed_tokens", ... */
const char *stetho_module_name(stetho_module m);
/* Short column name for tables: "q", "k", "v", "o", "gate", "up", "down", "norm", ... */
const char *stetho_module_short(stetho_module m);
unsigned stetho_module_group(stetho_module m);
const char *stetho_group_name(unsigned group_bit);
/* Parse "attn,mlp", "norm", "all", or single modules ("q_proj", "down", ...).
 * Single modules are returned in *module_mask (bit per stetho_module); groups are
 * expanded into it too. */
stetho_status stetho_module_spec_parse(const char *spec, uint32_t *module_mask);

typedef struct {
    stetho_family family;
    char model_type[64];          /* text model's model_type ("gemma3_text", "llama", ...) */
    char outer_model_type[64];    /* top-level model_type ("gemma3" for multimodal) */
    char architecture[96];        /* architectures[0] */
    char torch_dtype[16];
    bool multimodal;              /* config nests a text_config */
    int n_layers;                 /* num_hidden_layers */
    int hidden;                   /* hidden_size */
    int intermediate;             /* intermediate_size */
    int n_heads;                  /* num_attention_heads */
    int n_kv_heads;               /* num_key_value_heads */
    int head_dim;
    int vocab;                    /* vocab_size */
    int max_position;             /* max_position_embeddings */
    int sliding_window;           /* 0 = none */
    double rope_theta;
    double rms_eps;
    bool tie_embeddings;
} stetho_config;

/* Parse config.json text. `label` names the file in errors. Unknown model types
 * parse with family UNKNOWN (inspect/diff/edit work on any checkpoint); the
 * inference engine refuses them. */
stetho_status stetho_config_parse(stetho_config *c, const char *json, size_t len, const char *label);
const char *stetho_family_name(stetho_family f);

/* Parse a layer selection "3,5,10-12": comma-separated items, each N (one layer),
 * A-B (A through B inclusive), A- (A through the last), -B (0 through B) or
 * A:B (half-open, A through B-1, like a Python slice). Sets sel[0..n_layers). */
stetho_status stetho_layer_spec_parse(const char *spec, int n_layers, bool *sel);

#ifdef __cplusplus
}
#endif
#endif
