/* Helpers for stetho's cmocka tests: scratch directories, the ../shared data
 * directory, small files, and generated Hugging Face checkpoints. */
#ifndef STETHO_TESTUTIL_H
#define STETHO_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "stetho/tensor.h"

/* A fresh empty directory under $STETHO_TMP (or /tmp), named after `tag`.
 * Returned strings here and below live until the program exits. */
const char *tu_tmpdir(const char *tag);
/* The shared data directory ($STETHO_SHARED, else ../shared relative to the
 * source tree) if it holds `rel` (a relative path), else NULL: tests then skip. */
const char *tu_shared(const char *rel);
/* Path join into a new string. */
const char *tu_path(const char *dir, const char *name);
void tu_write_file(const char *path, const void *data, size_t len);
/* Whole file into a new buffer (NUL-terminated); NULL if unreadable. */
char *tu_read_file(const char *path, size_t *len);
bool tu_exists(const char *path);
/* Count entries in a directory (excluding . and ..). */
int tu_count_entries(const char *dir);

/* Deterministic pseudo-random numbers (splitmix64). */
uint64_t tu_rand_u64(uint64_t *state);
float tu_rand_normal(uint64_t *state);

typedef struct {
    const char *model_type;  /* "gemma3_text" (default), "llama", "qwen2", "gemma2", "gemma3" (multimodal) */
    int n_layers;            /* default 2 */
    int hidden;              /* default 16 */
    int intermediate;        /* default 32 */
    int n_heads, n_kv_heads, head_dim; /* default 2, 1, 8 */
    int vocab;               /* default 32 */
    stetho_dtype dtype;      /* F32 (default), BF16, F16 */
    uint64_t seed;
    int n_shards;            /* >1 writes model-0000i-of-0000n + index */
    float scale;             /* std of weights, default 0.02 */
    /* derive from another checkpoint: weights = base + perturb * noise */
    const char *perturb_from;
    float perturb;
    int max_position;        /* max_position_embeddings, default 512 */
} tu_model_spec;

/* Write a complete HF directory (config.json, tokenizer_config.json,
 * model.safetensors or shards + index) at dir (created). Returns dir. */
const char *tu_make_model(const char *dir, const tu_model_spec *spec);

#endif
