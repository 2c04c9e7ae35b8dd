/* Evaluation results in lm-evaluation-harness's file shapes, and the comparison of
 * two runs.
 *
 * Files (as `lm_eval --output_path DIR --log_samples` writes them):
 *   results_<timestamp>.json          "results": {"<task>": {"alias", "exact_match,none",
 *                                     "exact_match_stderr,none"}}, "groups", "group_subtasks",
 *                                     "configs", "versions", "n-shot", "higher_is_better",
 *                                     "n-samples": {"<task>": {"original", "effective"}}, "config"
 *   samples_<task>_<timestamp>.jsonl  one line per problem: "doc_id", "doc", "target",
 *                                     "arguments", "resps", "filtered_resps", "filter", "metrics",
 *                                     "exact_match" (0/1) plus stetho's "extracted",
 *                                     "normalized", "gold"
 * The timestamp is lm-eval's: local time, ISO 8601 with ':' replaced by '-'
 * ("2025-03-01T14-05-09.123456"). Readers also accept samples_<task>.jsonl. */
#ifndef STETHO_RESULTS_H
#define STETHO_RESULTS_H

#include "stetho/common.h"
#include "stetho/stats.h"
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- writing ---------------------------------------------------------------- */

/* Generation settings recorded in "arguments" and "configs" (lm-eval's gen_kwargs). */
typedef struct {
    const char *const *until; /* stop strings, e.g. {"Problem:"} */
    size_t n_until;
    int max_gen_toks;
    bool do_sample;
    double temperature;
} stetho_gen_kwargs;

/* One problem's record. Strings may be NULL (written as ""). */
typedef struct {
    int64_t doc_id;                                /* index in the task's document order */
    const char *problem, *level, *type, *solution; /* the doc, in Hendrycks MATH fields */
    const char *target;                            /* lm-eval's target (the reference solution) */
    const char *prompt;                            /* the full prompt given to the model */
    const char *generation;                        /* the raw model output */
    const char *extracted, *normalized, *gold;     /* stetho's grading trace */
    bool correct;
} stetho_sample;

typedef struct {
    FILE *fp;
    char *path;
    stetho_gen_kwargs gen; /* borrowed: the caller keeps `until` alive until close */
    uint64_t n, n_correct;
} stetho_samples_writer;

/* lm-eval's timestamp for the current local time into buf (at least 32 bytes). */
void stetho_results_timestamp(char *buf, size_t size);

/* Create DIR/samples_<task>_<timestamp>.jsonl (timestamp NULL: no suffix). Lines are
 * flushed one by one so an interrupted run leaves whole records. Existing files are
 * replaced (STETHO_ERR_EXISTS is not used: the evaluator decides about resuming). */
stetho_status stetho_samples_writer_open(stetho_samples_writer *w, const char *dir, const char *task,
                                         const char *timestamp, const stetho_gen_kwargs *gen);
stetho_status stetho_samples_writer_add(stetho_samples_writer *w, const stetho_sample *s);
/* Close; returns the first write error. Safe on a zeroed or failed writer. */
stetho_status stetho_samples_writer_close(stetho_samples_writer *w);

typedef struct {
    const char *name;     /* "minerva_math_algebra" */
    uint64_t n_correct;
    uint64_t n_effective; /* problems scored (after --limit) */
    uint64_t n_original;  /* problems in the task */
    int num_fewshot;
    double version;       /* lm-eval task version (minerva_math_*: 1.0) */
} stetho_results_task_spec;

typedef struct {
    const stetho_results_task_spec *tasks;
    size_t n_tasks;
    const char *group;        /* e.g. "minerva_math": an entry over all tasks, weighted by size; NULL for none */
    const char *model;        /* config.model, e.g. "stetho" */
    const char *model_args;   /* config.model_args, e.g. "pretrained=/models/x" */
    long batch_size;
    long limit;               /* -1: none (written as null) */
    const stetho_gen_kwargs *gen;
    const char *timestamp;    /* NULL: now */
} stetho_results_spec;

/* Write DIR/results_<timestamp>.json (atomically: temp file + rename). Accuracy is
 * n_correct/n_effective, its stderr stetho_stats_mean_stderr ("N/A" for n < 2, as
 * lm-eval writes); the group's stderr is lm-eval's pooled_sample_stderr. *path_out
 * (optional) receives the path (free()). */
stetho_status stetho_results_write(const char *dir, const stetho_results_spec *spec, char **path_out);

/* Group aggregation exactly as lm-eval's weight_by_size: accuracy = sum(n_i acc_i)/sum(n_i),
 * stderr = sqrt(sum((n_i - 1) n_i se_i^2) / (sum(n_i) - m) / sum(n_i)). */
void stetho_results_pool(const double *acc, const double *se, const uint64_t *n, size_t m, double *acc_out,
                         double *se_out);

/* ---- reading ---------------------------------------------------------------- */

typedef struct {
    char *name;
    double acc, stderr;    /* stderr NaN when the file says "N/A" */
    uint64_t n;            /* effective problems */
    uint64_t n_original;
    uint64_t n_correct;    /* from the samples when loaded, else acc * n (checked to be whole) */
    char *samples_path;    /* NULL: no samples file found (or not asked for) */
    size_t n_samples;
    int64_t *doc_ids;      /* [n_samples], ascending */
    uint8_t *correct;      /* [n_samples], 0/1, aligned with doc_ids */
} stetho_results_task;

typedef struct {
    char *path;            /* the results_*.json read */
    char *group;           /* first group in "groups" (NULL when none) */
    stetho_results_task *tasks; /* leaf tasks (groups excluded), sorted by name */
    size_t n_tasks;
} stetho_results;

/* PATH is a results_*.json file, or a directory holding one (the newest by the
 * timestamp in its name), searched one level of subdirectories deep too (lm-eval
 * writes DIR/<model>/results_*.json). With samples, each task's samples file from
 * the same directory is loaded (the one with the results file's timestamp, else the
 * newest); a samples file that disagrees with the results (count, accuracy,
 * duplicate doc_ids) is a format error naming it. */
stetho_status stetho_results_read(const char *path, bool samples, stetho_results *out);
void stetho_results_free(stetho_results *r);
const stetho_results_task *stetho_results_task_get(const stetho_results *r, const char *name);

/* ---- comparing two runs --------------------------------------------------------- */

typedef enum {
    STETHO_CMP_TEST_MCNEMAR = 0, /* paired verdicts available: McNemar's exact test */
    STETHO_CMP_TEST_ZTEST,       /* otherwise: the unpooled two-proportion z-test */
} stetho_cmp_test;

typedef struct {
    char *task;                  /* subject, or the overall row's name */
    bool overall;
    uint64_t k_a, n_a, k_b, n_b;
    double acc_a, acc_b;
    stetho_interval ci_a, ci_b;  /* Wilson */
    double diff;                 /* acc_b - acc_a */
    stetho_interval ci_diff;     /* Newcombe hybrid score */
    stetho_ztest z;              /* p1 = B, p2 = A */
    bool paired;
    uint64_t n_pairs, both_correct, both_wrong;
    stetho_mcnemar mcnemar;      /* b = only A correct, c = only B correct */
    stetho_cmp_test test;        /* which p decides significance */
    double p;                    /* that test's two-sided p */
    double p_holm;               /* Holm-adjusted over the subject rows; = p for the overall row */
    int mark;                    /* +1 significant improvement (B > A), -1 degradation, 0 none */
} stetho_cmp_row;

typedef struct {
    double alpha, z;             /* significance level; intervals are at 1 - alpha */
    char *path_a, *path_b;
    stetho_cmp_row *rows;        /* common subjects (sorted), then the overall row */
    size_t n_rows;
    char **only_a, **only_b;     /* tasks present in one file only */
    size_t n_only_a, n_only_b;
} stetho_comparison;

/* Compare B against A. STETHO_ERR_MISMATCH when the files share no task (the message
 * lists both task sets) or when both have samples for a task but not for the same
 * problems (names the task and a doc_id). Tasks with samples on one side only are
 * compared unpaired. */
stetho_status stetho_results_compare(const stetho_results *a, const stetho_results *b, double alpha,
                                     stetho_comparison *out);
void stetho_comparison_free(stetho_comparison *c);
/* The comparison as a JSON document (free() the text). NaN/inf become null. */
stetho_status stetho_comparison_json(const stetho_comparison *c, char **text);

#ifdef __cplusplus
}
#endif
#endif
