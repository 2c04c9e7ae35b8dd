/* The study summary as the report reads it (private to report.c and
 * report_summary.c): every field of summary.json validated and converted, with
 * strings borrowed from the JSON tree, which the summary keeps alive. */
#ifndef STETHO_REPORT_INTERNAL_H
#define STETHO_REPORT_INTERNAL_H

#include "internal.h"
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct json_t json_t;

typedef struct {
    uint64_t correct, n;
    double acc, lo, hi;        /* acc recomputed as correct / n; Wilson interval from the file */
} rp_acc;

typedef struct {
    double diff, lo, hi;       /* B - A and its Newcombe interval */
    double z, p, p_holm, mcnemar_p; /* NaN where the file has null */
    bool significant;
    int dir;                   /* +1 up, -1 down, 0 none */
} rp_cmp;

typedef struct {
    const char *name, *kind, *label;
    bool has_layers;
    int *layers;               /* [n_layers] edited layers */
    size_t n_layers;
    bool has_sel, has_k, has_seed;
    const char *method;
    long long k, seed;
    double alpha;
    rp_acc *acc;               /* [summary n_rows] */
    double ppl;                /* NaN = not measured */
    rp_cmp *vs_base;           /* [n_rows], NULL when null; entries may be absent: */
    bool *has_vs_base;         /* [n_rows] */
    bool ablation;             /* kind single or leave_one_out */
} rp_variant;

typedef struct {
    size_t a, b, row;          /* variant a compared with variant b (a's "vs"), on row */
    rp_cmp c;
} rp_pair;

typedef struct {
    long layer;
    double norm, rel_norm, energy_share;
} rp_tv_layer;

typedef struct {
    long layer;
    double score;              /* NaN = no SAE */
    double *scores;            /* [n_metrics], NaN = null or absent */
} rp_spec_layer;

typedef struct {
    long layer, rank;
    double retained, expected;
} rp_scalpel_layer;

typedef struct {
    long layer;
    double single, loo, importance; /* NaN = null */
} rp_abl_layer;

typedef struct {
    const char *metric;
    double rho, p;
} rp_corr;

typedef struct {
    json_t *root;
    const char *version, *title, *created;
    const char *base_model, *ft_model, *family; /* ft_model NULL = null */
    long n_layers, d_model;

    bool has_tv;
    double tv_total;
    rp_tv_layer *tv;
    size_t n_tv;

    bool has_spec;
    const char *metric;
    const char **metrics;
    size_t n_metrics;
    rp_spec_layer *spec;
    size_t n_spec;

    bool has_scalpel;
    long sc_features, sc_d;
    double sc_retained, sc_expected;
    rp_scalpel_layer *sc;
    size_t n_sc;

    const char **rows;         /* tasks in display order, then aggregate keys (e.g. the group) */
    size_t n_rows, n_tasks;

    rp_variant *v;
    size_t n_v;
    rp_pair *pairs;
    size_t n_pairs;

    bool has_ablation;
    double abl_alpha;          /* the alpha the ablation ran at; NaN when not given */
    rp_abl_layer *abl;
    size_t n_abl;
    rp_corr *corr;
    size_t n_corr;

    bool has_timings;
    double total_s;
    const char **step_names;
    double *step_s;
    size_t n_steps;

    const char **notes;
    size_t n_notes;
} rp_summary;

/* Parse and validate summary JSON; label names the file in errors. */
stetho_status rp_summary_parse(rp_summary *s, const char *json, size_t len, const char *label);
void rp_summary_free(rp_summary *s);

#endif
