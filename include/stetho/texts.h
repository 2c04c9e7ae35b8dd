/* A JSONL file of texts read one line at a time and tokenized as it goes (BOS
 * added, truncated to a maximum length): how SAE training and SAE evaluation
 * feed prompts to a model without holding the file in memory. */
#ifndef STETHO_TEXTS_H
#define STETHO_TEXTS_H

#include "stetho/jsonl.h"
#include "stetho/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    stetho_jsonl_reader r;
    const stetho_tokenizer *tok;
    const char *field;
    int max_tokens;
    int32_t *ids;  /* [n] the current text's ids */
    int n;
    long index;    /* 0-based number of the text last read */
} stetho_texts;

stetho_status stetho_texts_open(stetho_texts *ts, const char *path, const stetho_tokenizer *tok, const char *field,
                                int max_tokens);
/* The next text's ids; *got = false at the end. A line without the string
 * field is an error naming the file and line. */
stetho_status stetho_texts_next(stetho_texts *ts, bool *got);
void stetho_texts_close(stetho_texts *ts);

/* keep[t] = 0 for BOS, EOS and pad (outlier activations that SAELens' tools
 * leave out too), else 1; returns the number kept. */
int stetho_texts_mask_special(const stetho_tokenizer *tok, const int32_t *ids, int n, uint8_t *keep);

#ifdef __cplusplus
}
#endif
#endif
