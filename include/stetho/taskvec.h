/* Task vectors: tau = theta_ft - theta_base, its statistics, and edits that write
 * theta_base + alpha * tau restricted to chosen layers and modules.
 *
 * Both operations stream tensor by tensor over mmapped inputs, in blocks converted
 * to f32, and write through the streaming safetensors writer: memory stays bounded
 * by the block size whatever the model size. */
#ifndef STETHO_TASKVEC_H
#define STETHO_TASKVEC_H

#include "stetho/checkpoint.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Statistics of one tensor's update. Sums are in double. */
typedef struct {
    const char *name;        /* points into the base checkpoint */
    int layer;
    stetho_module module;
    uint64_t n_elements;
    double tau_sq;           /* ||tau||^2 */
    double base_sq;          /* ||theta_base||^2 */
    double ft_sq;            /* ||theta_ft||^2 */
    double base_dot_ft;      /* <theta_base, theta_ft> */
    double tau_max_abs;
} stetho_tv_stats;

typedef struct {
    char *name;
    char *reason;
} stetho_tv_skip;

typedef struct {
    size_t n_tensors;
    stetho_tv_stats *tensors;   /* in output order */
    size_t n_skipped;
    stetho_tv_skip *skipped;    /* tensors left out and why (--allow-missing, non-float) */
    int n_layers;
    double total_tau_sq, total_base_sq;
} stetho_tv_report;

typedef struct {
    stetho_dtype out_dtype;     /* F32 (default), BF16 or F16 */
    bool allow_missing;         /* skip tensors present in only one input */
} stetho_diff_opts;

/* Write tau = ft - base to out_path (a .safetensors file, written to a temp name
 * and renamed) and fill rep (free with stetho_tv_report_free). Refuses tensors
 * whose shape or dtype differ; tensors present in only one checkpoint are an
 * error unless allow_missing. out_path may be NULL to compute statistics only. */
stetho_status stetho_taskvec_diff(const stetho_checkpoint *base, const stetho_checkpoint *ft,
                                  const char *out_path, const stetho_diff_opts *opts, stetho_tv_report *rep);
void stetho_tv_report_free(stetho_tv_report *rep);

/* Aggregate a report per (layer, module group) for tables. One row per layer
 * plus row n_layers for tensors outside the layers (embeddings, final norm). */
typedef struct {
    double tau_sq[STETHO_MOD_COUNT], base_sq[STETHO_MOD_COUNT], ft_sq[STETHO_MOD_COUNT],
        dot[STETHO_MOD_COUNT];
    bool present[STETHO_MOD_COUNT];
    double layer_tau_sq, layer_base_sq, layer_ft_sq, layer_dot;
} stetho_tv_layer_row;

/* rows has rep->n_layers + 1 entries (last = non-layer tensors); free with free(). */
stetho_status stetho_tv_report_by_layer(const stetho_tv_report *rep, stetho_tv_layer_row **rows);
/* The report as a JSON document (per tensor, per layer x module, totals). */
stetho_status stetho_tv_report_json(const stetho_tv_report *rep, const char *base_path, const char *ft_path,
                                    char **out);

/* Which tensors an edit touches. */
typedef struct {
    int n_layers;
    bool *layers;          /* [n_layers]: decoder layers to edit */
    bool non_layer;        /* also edit tensors outside the layers (embeddings, final norm) */
    uint32_t modules;      /* bit per stetho_module (see stetho_module_spec_parse) */
} stetho_selection;

/* True if a tensor with this role is selected. Vision-tower tensors never are. */
bool stetho_selection_has(const stetho_selection *sel, stetho_tensor_role role);

typedef struct {
    double alpha;              /* scale of tau (default 1) */
    uint64_t shard_size;       /* max bytes per output shard (default 5e9, like mergekit) */
    bool force;                /* replace an existing output directory */
    bool allow_missing;        /* tensors absent from the task vector count as tau = 0 */
    const char *extra_meta;    /* JSON object text merged into the recorded edit, or NULL */
} stetho_edit_opts;

/* Write base + alpha * tau on the selection as a complete HF directory at
 * out_dir: non-weight files of base copied, safetensors in base's dtypes
 * (round-to-nearest-even when narrowing), sharded with an index when larger than
 * shard_size, and the edit recorded in every shard's __metadata__ under
 * "stetho_edit" (with "format": "pt" kept, as transformers requires).
 * tau comes from `delta`: a task vector (is_finetuned = false) or a fine-tuned
 * checkpoint (tau = delta - base computed on the fly). The directory is built
 * under a temporary name and renamed into place; inputs are never modified. */
stetho_status stetho_taskvec_edit(const stetho_checkpoint *base, const stetho_checkpoint *delta, bool is_finetuned,
                                  const stetho_selection *sel, const stetho_edit_opts *opts, const char *out_dir);
/* The same edit applied in memory to an open checkpoint: each edited tensor's
 * data is replaced by a private buffer holding exactly the bytes
 * stetho_taskvec_edit would write (same arithmetic, same rounding), freed by
 * stetho_checkpoint_close; the files and mappings are untouched, and tensors
 * the edit leaves alone stay mapped. Memory: the edited tensors' size. On
 * failure base is unchanged. shard_size, force and extra_meta are unused. */
stetho_status stetho_taskvec_edit_in_memory(stetho_checkpoint *base, const stetho_checkpoint *delta, bool is_finetuned,
                                            const stetho_selection *sel, const stetho_edit_opts *opts);

#ifdef __cplusplus
}
#endif
#endif
