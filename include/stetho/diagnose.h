/* Diagnosis: which layers carry a domain? The model runs on two prompt sets
 * (domain, e.g. MATH problems; general, e.g. Wikipedia and instructions); at
 * every layer with an SAE the hook's [tokens, d_model] block goes straight
 * into the SAE encoder and the feature activations into running statistics
 * (no activation dump). Per feature and set: activation frequency (act > 0),
 * mean activation; then a smoothed log frequency ratio, the normalised mass
 * contrast and Cohen's d; per layer several specificity scores (see
 * stetho_metric and docs/diagnose.md for the exact definitions).
 *
 * The first position of a prompt is left out of every statistic when it is
 * the BOS token: it is the same token in every prompt of both sets, and in
 * Gemma its residual stream is an outlier (the attention sink) whose features
 * say nothing about the text. */
#ifndef STETHO_DIAGNOSE_H
#define STETHO_DIAGNOSE_H

#include "stetho/model.h"
#include "stetho/sae.h"

#ifdef __cplusplus
extern "C" {
#endif

enum { STETHO_SET_DOMAIN = 0, STETHO_SET_GENERAL = 1 };

/* Layer specificity scores; higher = more domain-specific. N_s tokens of set s,
 * c_s[j] tokens where feature j fires, M_s[j] its activation mass (sum).
 *   SPECIFIC_MASS  share of the layer's domain mass carried by domain-specific
 *                  features: sum_{j: r_j > ln R} M_D[j] / sum_j M_D[j]
 *   SPECIFIC_FRAC  share of the live features (firing on either set) that are
 *                  domain-specific (r_j > ln R)
 *   TOPK_CONTRAST  mean over the K features with the largest domain mass of
 *                  (M_D[j] / sum M_D - M_G[j] / sum M_G) (fewer if fewer fire on
 *                  the domain)
 *   EFFECT         mean Cohen's d (token level) of the K features with the
 *                  largest d > 0 (fewer if fewer have d > 0; 0 if none)
 *   PROBE          balanced accuracy of a K-sparse logistic probe telling domain
 *                  from general prompts (mean-pooled activations, features
 *                  picked by class-mean difference inside each fold, F-fold
 *                  cross-validation)
 * with r_j = ln((c_D[j] + a) / (N_D + 2a)) - ln((c_G[j] + a) / (N_G + 2a)) the
 * log frequency ratio smoothed by a pseudo-count a (default 0.5). */
typedef enum {
    STETHO_METRIC_SPECIFIC_MASS,
    STETHO_METRIC_SPECIFIC_FRAC,
    STETHO_METRIC_TOPK_CONTRAST,
    STETHO_METRIC_EFFECT,
    STETHO_METRIC_PROBE,
    STETHO_METRIC_COUNT
} stetho_metric;

#define STETHO_METRIC_DEFAULT STETHO_METRIC_SPECIFIC_MASS

/* "specific_mass", "specific_frac", "topk_contrast", "effect", "probe" */
const char *stetho_metric_name(stetho_metric m);
bool stetho_metric_from_name(const char *name, stetho_metric *out);
/* One line saying what the score is. */
const char *stetho_metric_description(stetho_metric m);

#define STETHO_DIAG_DEFAULT_K 8
#define STETHO_DIAG_DEFAULT_TOP_FEATURES 32

typedef struct {
    stetho_metric metric;  /* the score written as "score" and used for ranking */
    double ratio;          /* R: a feature is domain-specific when its smoothed frequency ratio exceeds R (default 4) */
    double smoothing;      /* pseudo-count a of the log frequency ratio (default 0.5) */
    int k;                 /* K of TOPK_CONTRAST, EFFECT and PROBE (0: STETHO_DIAG_DEFAULT_K, capped at a
                            * narrower SAE's d_sae; a K above a layer's d_sae is an error) */
    int probe_folds;       /* F (default 5; fewer when a set has fewer prompts) */
    double probe_l2;       /* ridge penalty of the probe on standardised features (default 1) */
    int top_features;      /* features listed per layer, best mass contrast first (0: the default
                            * STETHO_DIAG_DEFAULT_TOP_FEATURES, capped like k; above d_sae: an error) */
    int max_tokens;        /* tokens per prompt incl. BOS, longer prompts truncated (0 = the model's context) */
    size_t limit;          /* prompts per set (0 = all) */
    const char *field;     /* JSONL field of the prompt text (NULL: "text", else "problem") */
    /* progress: called after each prompt (set, prompts done in it, its total) */
    void (*progress)(void *user, int set, size_t done, size_t total);
    void *progress_user;
} stetho_diagnose_opts;

void stetho_diagnose_opts_default(stetho_diagnose_opts *o);

/* ---- running statistics of one layer's SAE features */
typedef struct {
    uint32_t set;        /* STETHO_SET_* */
    uint32_t nnz;        /* features with a non-zero mean */
    size_t offset;       /* into idx/val */
} stetho_diag_prompt;

typedef struct {
    int layer;
    int d_sae;
    uint64_t n_tokens[2];      /* tokens counted per set */
    uint64_t *n_active[2];     /* [d_sae] tokens with act > 0 */
    double *sum[2];            /* [d_sae] activation mass */
    double *sum_sq[2];         /* [d_sae] sum of squared activations */
    /* per-prompt mean-pooled activations, sparse (the probe's samples) */
    size_t n_prompts, cap_prompts;
    stetho_diag_prompt *prompts;
    size_t nnz, cap_nnz;
    uint32_t *idx;             /* [nnz] feature index */
    float *val;                /* [nnz] mean activation over the prompt's tokens */
    double *pool;              /* [d_sae] scratch: the current prompt's sums */
} stetho_diag_acc;

stetho_status stetho_diag_acc_init(stetho_diag_acc *a, int layer, int d_sae);
void stetho_diag_acc_free(stetho_diag_acc *a);
/* Add one prompt's activations acts [n, d_sae] (BOS already left out) to set.
 * n = 0 adds nothing. Threaded over features. */
stetho_status stetho_diag_acc_add(stetho_diag_acc *a, int set, const float *acts, size_t n);

/* ---- results */
typedef struct {
    double freq[2];        /* c_s / N_s */
    double mean[2];        /* M_s / N_s (zeros included) */
    double log_ratio;      /* r_j (smoothed, natural log) */
    double contrast;       /* M_D / sum M_D - M_G / sum M_G (0 where a set has no mass) */
    double effect;         /* Cohen's d of the token activations, pooled SD; 0 when the SD is 0 */
} stetho_diag_feature;

typedef struct {
    int layer;
    bool scored;           /* false: no SAE for this layer */
    char *sae_path;
    char hook[64];         /* "blocks.L.hook_resid_post", ... */
    int d_sae;
    uint64_t n_tokens[2];
    size_t n_prompts[2];
    double scores[STETHO_METRIC_COUNT]; /* NaN where undefined (no mass, too few prompts) */
    double score;          /* scores[metric] */
    int n_live;            /* features firing at least once on either set */
    int n_specific;        /* live features with r_j > ln R */
    int n_top;
    int *top;              /* [n_top] feature indices, largest contrast first (ties: lower index) */
    stetho_diag_feature *features; /* [d_sae] */
} stetho_diag_layer;

/* Statistics and every score of one accumulated layer (into out, which the
 * caller frees with stetho_diag_layer_free). out->layer, d_sae, n_tokens are set
 * from acc; sae_path and hook are left for the caller. */
stetho_status stetho_diag_layer_compute(const stetho_diag_acc *acc, const stetho_diagnose_opts *o, stetho_diag_layer *out);
void stetho_diag_layer_free(stetho_diag_layer *l);

typedef struct {
    stetho_diagnose_opts opts;  /* as run (field, progress pointers cleared) */
    char *model_path, *sae_dir, *domain_path, *general_path, *field;
    char model_type[64];
    int n_layers, d_model;
    size_t n_prompts[2];        /* prompts that contributed tokens */
    size_t n_empty[2];          /* prompts with no token besides BOS */
    size_t n_truncated[2];      /* prompts cut at max_tokens */
    uint64_t n_tokens[2];
    bool bos_excluded;          /* the tokenizer adds BOS and position 0 was left out */
    int n_scored;
    stetho_diag_layer *layers;  /* [n_layers]; unscored ones have scored = false */
} stetho_diagnose_result;

void stetho_diagnose_result_free(stetho_diagnose_result *r);

/* ---- running the model: a diagnoser owns the SAEs and accumulators for one
 * model; feed it token sequences, then finish. */
typedef struct stetho_diagnoser stetho_diagnoser;

/* Load every SAE in saes (from stetho_sae_scan) and hook it to its layer and
 * hook point (an SAE without a hook name reads hook_resid_post). Refuses an SAE
 * whose d_model differs from the model's hidden size, a layer the model lacks,
 * and hooks the engine does not produce. The decoder weights are dropped after
 * loading (encoding does not need them). */
stetho_status stetho_diagnoser_init(stetho_diagnoser **d, stetho_model *m, const stetho_sae_entry *saes, size_t n_saes,
                                    const stetho_diagnose_opts *o);
/* Run one prompt (tokens[0..n)) of set; the first `skip` positions are left
 * out of the statistics (1 for a BOS). */
stetho_status stetho_diagnoser_add(stetho_diagnoser *d, int set, const int32_t *tokens, int n, int skip);
/* Compute every layer's statistics into r (model-level fields: n_layers,
 * d_model, layers and token counts; the caller fills paths). */
stetho_status stetho_diagnoser_finish(stetho_diagnoser *d, stetho_diagnose_result *r);
void stetho_diagnoser_free(stetho_diagnoser *d);

/* The whole diagnosis: load the model at model_path and its tokenizer.json,
 * scan sae_dir, read both JSONL files (opts->field, else "text", else
 * "problem"), encode each prompt with BOS, run, compute. Empty prompt sets,
 * lines without the field and a set left with no tokens are errors. */
stetho_status stetho_diagnose_run(const char *model_path, const char *sae_dir, const char *domain_path,
                                  const char *general_path, const stetho_diagnose_opts *opts, stetho_diagnose_result *r);

/* Output paths beside SCORES.json: "X.json" -> "X.tsv", "X.svg" (other names get
 * the suffix appended). Free with free(). */
stetho_status stetho_diagnose_paths(const char *json_path, char **tsv_path, char **svg_path);
/* Write SCORES.json, the TSV and the SVG chart (each to a temp name, renamed
 * when complete). Existing outputs are refused unless overwrite. */
stetho_status stetho_diagnose_write(const stetho_diagnose_result *r, const char *json_path, bool overwrite);
/* The three documents as strings (for tests and the study report). */
stetho_status stetho_diagnose_json(const stetho_diagnose_result *r, char **out);
stetho_status stetho_diagnose_tsv(const stetho_diagnose_result *r, char **out);
stetho_status stetho_diagnose_svg(const stetho_diagnose_result *r, char **out);

#ifdef __cplusplus
}
#endif
#endif
