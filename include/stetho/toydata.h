/* The tiny world's data: seven synthetic math subjects mirroring MATH, general text,
 * a mixed training stream, and the tokenizer trained on them (stetho/bpe_train.h).
 *
 * Problems are generated from templates with small operands so that a model of a
 * million or two parameters can learn them; every solution is a short worked
 * solution in the Minerva format: steps, "$\boxed{X}$", then
 * "Final Answer: The final answer is $X$. I hope it is correct."
 * Each problem has a *fact key* (the template and the operands that determine the
 * answer, not the wording); train and test are split by a hash of the key, so a
 * test fact never appears in training, not even reworded. Everything is
 * deterministic for a given seed. See docs/tiny-world.md. */
#ifndef STETHO_TOYDATA_H
#define STETHO_TOYDATA_H

#include "stetho/common.h"
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* In the order MATH's files (and lm-eval) list them. */
typedef enum {
    STETHO_TOY_ALGEBRA,
    STETHO_TOY_COUNTING,
    STETHO_TOY_GEOMETRY,
    STETHO_TOY_INTERMEDIATE,
    STETHO_TOY_NUMBER_THEORY,
    STETHO_TOY_PREALGEBRA,
    STETHO_TOY_PRECALCULUS,
    STETHO_TOY_N_SUBJECTS
} stetho_toy_subject;

/* "algebra", "counting_and_probability", ... (MATH's config names). */
const char *stetho_toy_subject_name(int subject);
/* "Algebra", "Counting & Probability", ... (MATH's "type" field). */
const char *stetho_toy_subject_type(int subject);

typedef struct {
    char *problem;
    char *solution; /* ends with the Final Answer sentence */
    char *answer;   /* the LaTeX in \boxed{} and in the final sentence */
    char *key;      /* the fact key the split is made on */
    int level;      /* 1..5 */
    int subject;    /* stetho_toy_subject */
    int template_id;/* index of the template within its subject */
} stetho_toy_problem;

typedef struct {
    stetho_toy_problem *items;
    size_t n, cap;
} stetho_toy_set;

typedef struct {
    size_t train_per_subject; /* problems per subject in train (fewer only if the templates run out) */
    size_t test_per_subject;  /* problems per subject in test */
    uint64_t seed;
} stetho_toy_math_options;

/* Generate both splits: subject by subject, train and test never share a fact key
 * (hence never a problem), and no problem text repeats within a split. */
stetho_status stetho_toy_math_generate(const stetho_toy_math_options *opt, stetho_toy_set *train,
                                       stetho_toy_set *test);
void stetho_toy_set_free(stetho_toy_set *set);

/* Write a set as MATH-style JSONL: unique_id ("<split>/<subject>/<i>"), subject,
 * level ("Level N"), type, template (the generating template's name, e.g.
 * "gcd": for per-template analysis; MATH has no such field), problem,
 * solution. Temp file renamed into place. */
stetho_status stetho_toy_math_write(const stetho_toy_set *set, const char *split, const char *path);

/* A problem as lm-eval's minerva_math shows it with its solution:
 * "Problem:\n" problem "\n\nSolution: " solution. New string (free with free()). */
stetho_status stetho_toy_render(const char *problem, const char *solution, char **out);

/* ---- documents and the mixed stream ---------------------------------------------- */

typedef struct {
    char **text;    /* [n] owned, NUL-terminated */
    size_t *len;    /* [n] */
    uint8_t *is_math; /* [n] 1 for a math document */
    size_t n, cap;
} stetho_toy_docs;

/* Append the string field `field` of every line of a JSONL file. */
stetho_status stetho_toy_docs_load_jsonl(stetho_toy_docs *docs, const char *path, const char *field, bool is_math);
/* Append each problem of a set rendered with stetho_toy_render. */
stetho_status stetho_toy_docs_add_math(stetho_toy_docs *docs, const stetho_toy_set *set);
/* Append one document (copied). */
stetho_status stetho_toy_docs_add(stetho_toy_docs *docs, const char *text, size_t len, bool is_math);
void stetho_toy_docs_free(stetho_toy_docs *docs);

/* A training stream of about total_bytes bytes in which a fraction math_frac
 * (0..1, by bytes) comes from `math` and the rest from `general`. Each pool is
 * walked in a shuffled order and reshuffled whenever it is used up, so a small
 * general corpus is repeated epoch by epoch; documents are interleaved so that at
 * every point of the stream the math share stays near math_frac. Deterministic in
 * seed. out receives copies. */
stetho_status stetho_toy_mix(const stetho_toy_docs *general, const stetho_toy_docs *math, double math_frac,
                             size_t total_bytes, uint64_t seed, stetho_toy_docs *out);

/* A small generated English corpus (no numbers, no mathematics) for when the shared
 * general text is absent: n_docs paragraphs. */
stetho_status stetho_toy_general_generate(size_t n_docs, uint64_t seed, stetho_toy_docs *out);

/* Arithmetic drills: documents of one-step facts ("$7 \times 8 = 56$",
 * "$9 + (-21) = -12$", "$\frac{42}{6} = 7$") written in the notations the
 * worked solutions use, with small operands, appended to out as math until
 * they hold at least `bytes` bytes. They stand for the arithmetic a real
 * pretraining corpus is full of: the skill every problem composes. */
stetho_status stetho_toy_drills_generate(size_t bytes, uint64_t seed, stetho_toy_docs *out);

/* ---- the whole data step of `stetho toy build` ------------------------------------- */

typedef struct {
    size_t train[STETHO_TOY_N_SUBJECTS], test[STETHO_TOY_N_SUBJECTS]; /* problems */
    size_t math_train_tokens, math_test_tokens; /* rendered problems, with the trained tokenizer */
    size_t math_train_bytes;
    size_t general_docs, general_bytes, general_tokens; /* general_text.jsonl */
    size_t prompt_docs;                                  /* general_prompts.jsonl */
    bool general_generated; /* no shared general text was found */
    int vocab_size, n_merges;
    double bytes_per_token; /* over the tokenizer's training corpus */
} stetho_toy_data_report;

/* Write out_dir/data/math/{train,test}.jsonl, out_dir/data/general/
 * {general_text,general_prompts}.jsonl (copied from general_dir when it holds them,
 * else generated) and out_dir/tokenizer/{tokenizer.json,tokenizer_config.json}
 * (vocabulary 768; trained on math train + general text). out_dir is created if
 * absent. quick: fewer training problems (1000 per subject instead of 6000; test
 * stays 300 per subject). rep may be NULL. */
stetho_status stetho_toy_write_data(const char *out_dir, uint64_t seed, bool quick, const char *general_dir,
                                    stetho_toy_data_report *rep);

#ifdef __cplusplus
}
#endif
#endif
