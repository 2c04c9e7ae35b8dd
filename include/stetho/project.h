/* The scalpel: project a task vector onto the span of SAE decoder directions.
 *
 * For each chosen layer, the decoder rows W_dec[i] of its chosen features span a
 * subspace of the residual stream; Q is an orthonormal basis of that span (QR
 * with column pivoting in double precision, so dependent directions only lower
 * the rank) and P = Q Q^T. Matrices that write to the residual stream (o_proj,
 * down_proj: [d_model, in]) become P dW; matrices that read from it (q, k, v,
 * gate, up: [out, d_model]) become dW P. Everything else (norms, biases,
 * embeddings, unscored layers) is left out (zero) unless keep_other is set.
 * A random dW keeps rank/d_model of its energy in expectation: the report puts
 * the two side by side. */
#ifndef STETHO_PROJECT_H
#define STETHO_PROJECT_H

#include "stetho/checkpoint.h"
#include "stetho/sae.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int layer;
    size_t n_features;
    int *features; /* indices into the layer's SAE */
} stetho_project_layer;

typedef struct {
    const char *name;      /* points into the task vector */
    int layer;
    stetho_module module;
    bool projected;        /* false: left out (zeroed) or kept unchanged */
    double energy_before;  /* ||dW||^2 */
    double energy_after;   /* ||dW'||^2 */
} stetho_project_tensor_stats;

typedef struct {
    int layer;
    int k, rank, d_model;
    double energy_before, energy_after; /* over its projected matrices */
} stetho_project_layer_stats;

typedef struct {
    size_t n_tensors;
    stetho_project_tensor_stats *tensors;
    size_t n_layers;
    stetho_project_layer_stats *layers;
    double total_before;           /* ||tau||^2 over every float tensor */
    double projected_before;       /* over the matrices that were projected */
    double projected_after;
    double total_after;            /* ||tau'||^2 (incl. kept tensors) */
    double expected_random;        /* sum over layers of rank/d_model weighted by energy */
} stetho_project_report;

typedef struct {
    bool keep_other;     /* copy unprojected tensors unchanged instead of zeroing them */
    double rank_tol;     /* relative |R_ii| below which a direction is dependent (default 1e-6) */
    bool force;          /* replace an existing out_path (never the task vector itself) */
} stetho_project_opts;

/* Q [d_model, rank] (row-major, malloc'd doubles) spanning W_dec[features]. */
stetho_status stetho_project_basis(const stetho_sae *sae, const int *features, size_t k, double rank_tol, double **Q,
                                   int *rank);

/* Project tv on the given layers with the SAEs found by stetho_sae_scan; write
 * the projected task vector to out_path (NULL: report only) through a temporary
 * name. An existing out_path is STETHO_ERR_EXISTS unless opts->force; one of
 * tv's own files is always refused (STETHO_ERR_INVALID). */
stetho_status stetho_project_taskvec(const stetho_checkpoint *tv, const stetho_sae_entry *saes, size_t n_saes,
                                     const stetho_project_layer *layers, size_t n_layers, const stetho_project_opts *opts,
                                     const char *out_path, stetho_project_report *rep);
void stetho_project_report_free(stetho_project_report *rep);
stetho_status stetho_project_report_json(const stetho_project_report *rep, char **out);

/* Layer/feature choices from a diagnose SCORES.json (top k of each scored layer's
 * "top_features") or from {"L": [i, ...], ...}. Free with stetho_project_layers_free.
 * With tv, scores computed on a model of another shape (n_layers, d_model: see
 * stetho_scores_check_model) are refused with STETHO_ERR_MISMATCH; NULL: unchecked. */
stetho_status stetho_project_layers_from_scores(const char *path, int k, const stetho_checkpoint *tv,
                                                stetho_project_layer **layers, size_t *n);
stetho_status stetho_project_layers_from_file(const char *path, stetho_project_layer **layers, size_t *n);
void stetho_project_layers_free(stetho_project_layer *layers, size_t n);

#ifdef __cplusplus
}
#endif
#endif
