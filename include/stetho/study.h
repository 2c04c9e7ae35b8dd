/* The study: one mergekit-style YAML file describing a whole experiment (models,
 * SAEs, prompt sets, variants and controls, evaluation), parsed and validated
 * here. Unknown keys are errors that name their path ("eval.limt"); anchors,
 * aliases and merge keys (<<: *defaults) work; relative paths are resolved
 * against the YAML file's directory.
 *
 *   models:      {base: DIR, finetuned: DIR | task_vector: FILE}
 *   sae_dir:     DIR
 *   prompts:     {domain: JSONL, general: JSONL}
 *   diagnose:    {metric: NAME, max_tokens: N, top_features: N, limit: N, k: K, ratio: R,
 *                 smoothing: A, probe_folds: F, field: NAME}
 *   edit:        {modules: SPEC, alpha: A | [A, ...], in_memory: bool}
 *   variants:    {base: bool, finetuned: bool, stethoscope: {top_k: K | [K, ...]},
 *                 scalpel: {features: K} | false,
 *                 controls: {random: {seeds: [S, ...]}, norm: bool, bottom: bool, all_layers: bool},
 *                 ablation: {single_layer: bool, leave_one_out: bool}}
 *   eval:        {tasks: LIST, limit: N, num_fewshot: N, max_gen_toks: N, batch_size: N,
 *                 chat: bool, data: DIR}
 *   perplexity:  {input: JSONL, max_tokens: N}
 *   threads:     N
 *   compute:     f32 | bf16   (stetho_set_compute; default: the process's setting)
 * Top-level keys starting with '.' or '_' are ignored (holders of anchors). */
#ifndef STETHO_STUDY_H
#define STETHO_STUDY_H

#include "stetho/common.h"
#include "stetho/model.h"
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    char *path;                 /* the YAML file */
    char *base_model, *finetuned_model, *task_vector;
    char *sae_dir;
    char *domain_prompts, *general_prompts;
    char *metric;               /* NULL = diagnose's default */
    int diagnose_max_tokens;    /* 0 = all */
    int top_features;           /* features kept per layer in the scores (0 = diagnose's default:
                                 * 32, capped at a narrower SAE; stetho_study_top_features) */
    int diagnose_limit;         /* prompts per set (0 = all) */
    int diagnose_k;             /* K of topk_contrast, effect, probe (0 = diagnose's default) */
    double diagnose_ratio;      /* frequency-ratio threshold R (0 = default 4) */
    double diagnose_smoothing;  /* log-ratio pseudo-count (0 = default 0.5) */
    int diagnose_probe_folds;   /* probe folds (0 = default 5) */
    char *diagnose_field;       /* JSONL prompt field (NULL = "text", else "problem") */
    char *modules;              /* default "all" */
    bool in_memory;             /* evaluate edits applied in memory, writing no checkpoints (default false) */
    double *alpha;              /* default {1} */
    size_t n_alpha;
    bool v_base, v_finetuned;   /* default true, true */
    int *top_k;                 /* stethoscope K values (default {4}) */
    size_t n_top_k;
    int scalpel_features;       /* 0 = no scalpel variant (default 8) */
    uint64_t *random_seeds;     /* random-K control, one variant per seed and K (default {1, 2, 3}) */
    size_t n_random_seeds;
    bool c_norm, c_bottom, c_all_layers; /* default true */
    bool ablation_single, ablation_leave_one_out; /* default false */
    char *tasks;                /* default "minerva_math" */
    int limit;                  /* 0 = every problem */
    int num_fewshot;            /* default 4 */
    int max_gen_toks;           /* default 256 */
    int batch_size;             /* default 8 */
    bool chat;
    char *data_dir;             /* NULL = the built-in search (../shared/data/math) */
    char *perplexity_input;     /* NULL = no retention measurement */
    int perplexity_max_tokens;  /* default 512 */
    int threads;                /* 0 = default */
    bool has_compute;           /* compute: given (else the process's stetho_get_compute()) */
    stetho_compute compute;
} stetho_study_config;

/* Parse and validate a study file (or YAML text, for tests: label names it and
 * base_dir resolves relative paths). Free with stetho_study_config_free. */
stetho_status stetho_study_config_load(stetho_study_config *c, const char *path);
stetho_status stetho_study_config_parse(stetho_study_config *c, const char *yaml, size_t len, const char *label,
                                        const char *base_dir);
void stetho_study_config_free(stetho_study_config *c);

/* diagnose.top_features in force: the value given, else diagnose's default (32). */
int stetho_study_top_features(const stetho_study_config *c);
/* The compute mode the study's forward passes run in: the config's `compute`,
 * else the process's (stetho_get_compute). */
stetho_compute stetho_study_compute(const stetho_study_config *c);

/* The configuration after defaults, as canonical JSON (sorted keys): what a run
 * directory records and what step hashes are computed from. */
stetho_status stetho_study_config_json(const stetho_study_config *c, char **out);

/* 64-bit FNV-1a, for hashing settings and input file identities. */
uint64_t stetho_hash64(const void *data, size_t len, uint64_t seed);

#ifdef __cplusplus
}
#endif
#endif
