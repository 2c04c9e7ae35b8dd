/* Minerva Math evaluation as lm-evaluation-harness's `minerva_math` runs it:
 * the MATH test set in lm-eval's document order (so --limit picks the same
 * problems), the 4 fixed Minerva examples then "Problem:\n…\n\nSolution:",
 * greedy decoding until "Problem:" or EOS, lm-eval's answer extraction and
 * normalisation, stetho's equivalence check (see docs/grading.md), and
 * lm-eval-shaped results_<timestamp>.json + samples_<task>_<timestamp>.jsonl.
 *
 * Resumable: every graded problem is appended to
 * OUTPUT/.samples_<task>.partial.jsonl as it finishes; a rerun reuses those
 * generations and only generates the rest, but only when the file's header
 * names the same task, model content (a hash of config.json and every
 * tensor), num_fewshot, max_gen_toks, chat and stop strings, and each line's
 * prompt and prompt token ids are this run's. A file from any other run is
 * discarded whole, and the notice callback says why (docs/eval.md). */
#ifndef STETHO_EVAL_H
#define STETHO_EVAL_H

#include "stetho/generate.h"

#ifdef __cplusplus
extern "C" {
#endif

/* lm-eval's subtask names, in MATH's subject order, and their subjects. */
#define STETHO_EVAL_N_SUBJECTS 7
extern const char *const STETHO_EVAL_TASKS[STETHO_EVAL_N_SUBJECTS];   /* "minerva_math_algebra", ... */
extern const char *const STETHO_EVAL_SUBJECTS[STETHO_EVAL_N_SUBJECTS]; /* "algebra", ... */

typedef void (*stetho_eval_progress_fn)(void *user, const char *task, size_t done, size_t total, size_t correct,
                                        double elapsed_s);
/* Things a user should know that are not errors: resuming, or refusing to
 * resume from another run's partial file. One sentence, no newline. */
typedef void (*stetho_eval_notice_fn)(void *user, const char *task, const char *message);

typedef struct {
    const char *tasks;      /* "minerva_math", "minerva_math500", or a comma list of subtasks */
    int num_fewshot;        /* 0..4 (default 4) */
    long limit;             /* problems per task; < 0 = all */
    int max_gen_toks;       /* default 256 */
    int batch_size;         /* sequences decoded together (default 8) */
    bool chat;              /* wrap each prompt in the model's chat template */
    const char *data_dir;   /* holds test.jsonl, math500_test.jsonl, minerva_fewshot.json */
    bool log_samples;       /* write samples_<task>_<timestamp>.jsonl (the study always does) */
    const char *model_args; /* recorded as config.model_args, e.g. "pretrained=DIR" */
    stetho_eval_progress_fn progress;
    stetho_eval_notice_fn notice;
    void *user;             /* passed to progress and notice */
} stetho_eval_opts;

void stetho_eval_opts_default(stetho_eval_opts *o);

/* Per-task outcome of a run. */
typedef struct {
    char task[64];
    uint64_t n_correct, n, n_original;
    uint64_t n_reused;      /* generations taken from an interrupted run's partial file */
    bool partial_discarded; /* a partial file of another run was found and ignored */
} stetho_eval_task_result;

typedef struct {
    stetho_eval_task_result *tasks;
    size_t n_tasks;
    char *results_path;     /* the results_<timestamp>.json written */
} stetho_eval_result;

void stetho_eval_result_free(stetho_eval_result *r);

/* Check a task list (as opts.tasks takes it) without loading anything, so a
 * caller can reject a typo before the model loads: STETHO_ERR_INVALID with a
 * message listing the valid names. */
stetho_status stetho_eval_check_tasks(const char *tasks);

/* Evaluate a loaded model; outputs go to output_dir (created). */
stetho_status stetho_eval_run(stetho_model *m, const stetho_tokenizer *tok, const stetho_eval_opts *o,
                              const char *output_dir, stetho_eval_result *out);

/* The prompt lm-eval builds for a problem: the first n_shots fewshot examples,
 * each "Problem:\n" p "\n\nSolution:" " " s "\n\n", then "Problem:\n" problem
 * "\n\nSolution:". *out is malloc'd. */
stetho_status stetho_eval_prompt(const char *const *shot_problems, const char *const *shot_solutions, int n_shots,
                                 const char *problem, char **out);

#ifdef __cplusplus
}
#endif
#endif
