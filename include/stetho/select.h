/* Layer selection for edits: the stethoscope (the K layers a diagnose score
 * ranks highest) and the controls a reviewer asks for (K random layers, the K
 * layers with the largest ||tau||, the K lowest-scoring layers, every layer),
 * plus the ablations (one layer only, every layer but one). One module so that
 * `stetho edit` and the study runner choose layers the same way and record the
 * choice the same way.
 *
 * Candidates: TOP and BOTTOM rank the layers that have a score (unscored layers,
 * NaN, are never chosen); NORM ranks every layer with a finite ||tau||; RANDOM
 * draws from every decoder layer. Ties are broken by the lower layer index, so
 * a selection is a pure function of its inputs. */
#ifndef STETHO_SELECT_H
#define STETHO_SELECT_H

#include "stetho/checkpoint.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    STETHO_SELECT_TOP,    /* the K highest-scoring layers (needs scores) */
    STETHO_SELECT_BOTTOM, /* the K lowest-scoring layers (needs scores) */
    STETHO_SELECT_RANDOM, /* K distinct layers drawn with a seed */
    STETHO_SELECT_NORM,   /* the K layers with the largest ||tau|| */
    STETHO_SELECT_ALL,    /* every decoder layer */
    STETHO_SELECT_ONLY,   /* one layer (ablation) */
    STETHO_SELECT_EXCEPT, /* every decoder layer but one (leave-one-out) */
} stetho_select_method;

typedef struct {
    stetho_select_method method;
    int k;          /* TOP, BOTTOM, RANDOM, NORM */
    uint64_t seed;  /* RANDOM */
    int layer;      /* ONLY, EXCEPT */
} stetho_select_spec;

/* "top", "bottom", "random", "norm", "all", "only", "except" */
const char *stetho_select_method_name(stetho_select_method m);
/* Parse "top", "bottom", "random", "norm", "all", "only:L" or "except:L" into
 * spec->method (and spec->layer); k and seed are left as they are. */
stetho_status stetho_select_spec_parse(const char *s, stetho_select_spec *spec);
bool stetho_select_needs_k(stetho_select_method m);
bool stetho_select_needs_scores(stetho_select_method m);

/* Choose layers. values [n_layers]: the scores for TOP/BOTTOM, ||tau|| for NORM
 * (NaN: not a candidate); NULL allowed for the other methods. chosen [n_layers]
 * receives the mask; order [n_layers] (may be NULL) the chosen layers in the
 * order of choice (rank order for TOP/BOTTOM/NORM, draw order for RANDOM,
 * ascending otherwise) and *n_chosen their number. K larger than the number of
 * candidates, K < 1 and a layer outside 0..n_layers-1 are errors.
 * RANDOM: a partial Fisher-Yates shuffle of 0..n_layers-1 driven by splitmix64
 * from the seed, so the same seed and n_layers give the same layers. */
stetho_status stetho_select_layers(const stetho_select_spec *spec, int n_layers, const double *values, bool *chosen,
                                   int *order, int *n_chosen);

/* Per-layer scores from a SCORES.json written by `stetho diagnose`. */
typedef struct {
    char *path;
    char *metric;      /* the ranking used: the file's "metric" or the one asked for */
    char *model;       /* the model the scores were computed on, as recorded ("" if absent) */
    int n_layers;      /* that model's decoder layers */
    int d_model;       /* its hidden size (0 if not recorded) */
    double *score;     /* [n_layers] NaN = unscored */
    uint64_t hash;     /* FNV-1a 64 of the file's bytes */
} stetho_scores;

/* Load path; metric (may be NULL: the file's default "score") picks another
 * definition from each layer's "scores" object. Unknown metric names, layers
 * outside 0..n_layers-1, duplicate layers and a file with no scored layer are
 * errors naming the file. */
stetho_status stetho_scores_load(stetho_scores *s, const char *path, const char *metric);
void stetho_scores_free(stetho_scores *s);
/* Refuse scores computed for a model of another shape: n_layers must equal the
 * checkpoint's, and d_model its hidden size when both are known (config.json's,
 * else the width of its decoder matrices: a task vector file has no config). */
stetho_status stetho_scores_check_model(const stetho_scores *s, const stetho_checkpoint *base);

/* ||tau|| of each decoder layer over the float tensors whose module is in
 * `modules` (bit per stetho_module): tau read from a task vector (is_ft false)
 * or computed as delta - base (is_ft true), streamed in blocks; nothing is
 * held whole. norms [n_layers] receives sqrt(sum of squares) (0 for a layer
 * with no such tensor). */
stetho_status stetho_select_layer_norms(const stetho_checkpoint *base, const stetho_checkpoint *delta, bool is_ft,
                                        uint32_t modules, int n_layers, double *norms);

/* The selection as a JSON object text {"selection": {method, k, seed, layers,
 * order, values, scores: {path, hash, metric, model}}} for the edit's metadata
 * (stetho_edit_opts.extra_meta). scores and values may be NULL. Free with free(). */
stetho_status stetho_select_record(const stetho_select_spec *spec, int n_layers, const bool *chosen, const int *order,
                                   int n_chosen, const double *values, const stetho_scores *scores, char **json);

#ifdef __cplusplus
}
#endif
#endif
