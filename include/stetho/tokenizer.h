/* Tokenizers: a Hugging Face `tokenizer.json` implementation with the semantics of
 * the Rust `tokenizers` library for BPE models. Covers SentencePiece-style BPE with
 * byte fallback (Gemma 3, Llama 2, Mistral) and byte-level BPE with a regex
 * pre-tokenizer (GPT-2, Llama 3, Qwen2): added/special tokens matched first
 * (leftmost-longest), normalizers, pre-tokenizers, the BPE model, the
 * post-processor (BOS via TemplateProcessing) and decoders. See docs/tokenizer.md
 * for exactly which components are supported. */
#ifndef STETHO_TOKENIZER_H
#define STETHO_TOKENIZER_H

#include "stetho/common.h"
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct stetho_tok_impl stetho_tok_impl;

typedef struct {
    char *path;          /* the tokenizer.json that was loaded */
    int32_t vocab_size;  /* 1 + the largest id (model vocab and added tokens) */
    int32_t bos_id;      /* -1 when unknown: tokenizer_config.json, else the post-processor's first special token */
    int32_t eos_id;      /* -1 when unknown: tokenizer_config.json's eos_token */
    int32_t pad_id;      /* -1 when unknown: tokenizer_config.json's pad_token */
    int32_t unk_id;      /* -1 when the model has no unk_token */
    stetho_tok_impl *impl;
} stetho_tokenizer;

/* Load a tokenizer from a tokenizer.json file or a model directory holding one.
 * tokenizer_config.json beside it, when present, supplies bos/eos/pad. */
stetho_status stetho_tokenizer_load(stetho_tokenizer *tok, const char *path);
void stetho_tokenizer_free(stetho_tokenizer *tok);

/* Encode len bytes of UTF-8 text (invalid UTF-8 is an error). add_special runs the
 * post-processor (e.g. prepends BOS), like add_special_tokens=True in HF.
 * *ids is allocated (free with free()); *n may be 0 (then *ids may be NULL). */
stetho_status stetho_tokenizer_encode(const stetho_tokenizer *tok, const char *text, size_t len,
                                      bool add_special, int32_t **ids, size_t *n);

/* Decode ids to UTF-8 text (NUL-terminated, free with free()), like HF's
 * decode(ids, skip_special_tokens) without clean-up. An id outside the vocabulary
 * is an error (STETHO_ERR_INVALID) naming its position. */
stetho_status stetho_tokenizer_decode(const stetho_tokenizer *tok, const int32_t *ids, size_t n,
                                      bool skip_special, char **text, size_t *text_len);

/* The token string of an id (added tokens first, then the model vocabulary), or
 * NULL when the id is unknown. The string lives as long as the tokenizer. */
const char *stetho_tokenizer_id_to_token(const stetho_tokenizer *tok, int32_t id);
/* The id of a token string (added tokens first), or -1. */
int32_t stetho_tokenizer_token_to_id(const stetho_tokenizer *tok, const char *token);
/* True if id is an added token flagged special (what skip_special drops). */
bool stetho_tokenizer_is_special(const stetho_tokenizer *tok, int32_t id);

#ifdef __cplusplus
}
#endif
#endif
