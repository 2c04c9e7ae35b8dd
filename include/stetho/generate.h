/* Text generation: KV-cached decoding of one or many sequences at once, greedy
 * or sampled (temperature, top-p), stopping at EOS / end-of-turn or at stop
 * strings, and chat templates.
 *
 * Prompts are processed in one batched forward each (sgemm); decoding then
 * advances every live sequence by one token per step, so each weight read is
 * shared by the batch. Greedy decoding is deterministic; sampling is
 * deterministic given the seed. */
#ifndef STETHO_GENERATE_H
#define STETHO_GENERATE_H

#include "stetho/model.h"
#include "stetho/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int max_new_tokens;          /* default 256 */
    float temperature;           /* 0 = greedy (argmax, lowest id on ties) */
    float top_p;                 /* nucleus sampling; 1 = off */
    uint64_t seed;
    const char *const *stop;     /* stop strings: output ends before the first match */
    size_t n_stop;
    bool stop_at_eos;            /* stop at EOS and end-of-turn tokens (default true) */
    int batch_size;              /* sequences decoded together (default 8) */
} stetho_gen_opts;

void stetho_gen_opts_default(stetho_gen_opts *o);

typedef enum {
    STETHO_FINISH_LENGTH, /* max_new_tokens reached */
    STETHO_FINISH_STOP,   /* a stop string matched */
    STETHO_FINISH_EOS,    /* EOS or end-of-turn token */
} stetho_finish_reason;

typedef struct {
    char *text;                  /* decoded continuation, cut before a stop string */
    int32_t *tokens;             /* generated ids */
    int n_tokens;
    stetho_finish_reason finish;
} stetho_gen_result;

/* Streaming: called with each newly decoded piece of text of sequence `seq`. */
typedef void (*stetho_gen_token_fn)(void *user, size_t seq, const char *piece, size_t len);
/* Called once per sequence when it finishes (results[seq] is final). */
typedef void (*stetho_gen_done_fn)(void *user, size_t seq, const stetho_gen_result *r);

/* Continue n_prompts token sequences. results[n_prompts] is filled (free each
 * with stetho_gen_result_free). Callbacks may be NULL. */
stetho_status stetho_generate(stetho_model *m, const stetho_tokenizer *tok, const int32_t *const *prompts,
                              const int *prompt_lens, size_t n_prompts, const stetho_gen_opts *opts,
                              stetho_gen_result *results, stetho_gen_token_fn on_token, stetho_gen_done_fn on_done,
                              void *user);
void stetho_gen_result_free(stetho_gen_result *r);

/* The model's chat template for one user turn, ending where the model's reply
 * begins (Gemma: "<bos><start_of_turn>user\n{msg}<end_of_turn>\n<start_of_turn>model\n").
 * family comes from the model config; *out is malloc'd. */
stetho_status stetho_chat_render(const stetho_model *m, const stetho_tokenizer *tok, const char *user_msg, char **out);

#ifdef __cplusplus
}
#endif
#endif
