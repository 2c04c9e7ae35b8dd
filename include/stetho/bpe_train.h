/* Training a small byte-level BPE tokenizer and writing it as a Hugging Face
 * `tokenizer.json` + `tokenizer_config.json` that stetho_tokenizer_load (and HF
 * `tokenizers`) read like any other. Used by the tiny world (stetho/toydata.h).
 *
 * The tokenizer is the Llama 3 pipeline with one change: numbers are split into
 * single digits, so every number is spelled digit by digit and the model never has
 * to learn an arithmetic table per multi-digit token. Layout of the vocabulary:
 *   0 <pad>, 1 <eos>, 2 <bos>, 3 <unk>, 4 <start_of_turn>, 5 <end_of_turn>
 *   (the Gemma ids for the first four), then the 256 byte tokens in byte order,
 *   then one token per merge in the order learnt.
 * Training is deterministic: the same documents and options give the same bytes. */
#ifndef STETHO_BPE_TRAIN_H
#define STETHO_BPE_TRAIN_H

#include "stetho/common.h"
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Number of special tokens and the first byte token's id. */
#define STETHO_BPE_N_SPECIAL 6
#define STETHO_BPE_FIRST_BYTE STETHO_BPE_N_SPECIAL
#define STETHO_BPE_MIN_VOCAB (STETHO_BPE_N_SPECIAL + 256)

/* The pre-tokenizer's split pattern (Llama 3's with \p{N} instead of \p{N}{1,3}). */
extern const char *const STETHO_BPE_PATTERN;

typedef struct {
    int vocab_size;     /* total vocabulary incl. specials and bytes: 262 .. 65536 */
    int min_frequency;  /* a pair seen fewer times is never merged (0 = 2) */
    size_t max_bytes;   /* read at most this many bytes of the documents (0 = all) */
} stetho_bpe_options;

typedef struct stetho_bpe_model stetho_bpe_model;

/* Learn merges from n documents (UTF-8; invalid UTF-8 is an error naming the
 * document). Stops early when no pair reaches min_frequency. */
stetho_status stetho_bpe_train(const char *const *docs, const size_t *lens, size_t n,
                               const stetho_bpe_options *opt, stetho_bpe_model **out);

/* Tokens in the vocabulary (specials + 256 + distinct merge results) and merges learnt. */
int stetho_bpe_vocab_size(const stetho_bpe_model *m);
int stetho_bpe_n_merges(const stetho_bpe_model *m);

/* Write dir/tokenizer.json and dir/tokenizer_config.json (dir must exist); each is
 * written to a temporary name and renamed into place. The config names bos/eos/pad/
 * unk and holds a Gemma-style chat template (<start_of_turn>role ... <end_of_turn>). */
stetho_status stetho_bpe_save(const stetho_bpe_model *m, const char *dir);

void stetho_bpe_free(stetho_bpe_model *m);

#ifdef __cplusplus
}
#endif
#endif
