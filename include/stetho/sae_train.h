/* Training sparse autoencoders on activations streamed from a model (or any
 * source): a trainer takes [n, d_model] blocks as they come (it is a model hook
 * consumer), mixes them in a bounded shuffle buffer, takes Adam steps on
 * batches drawn from it, and at the end hands back a stetho_sae that
 * stetho_sae_save_saelens writes in SAELens format. See docs/sae.md.
 *
 *   architectures  topk (k largest pre-activations, ReLU'd; default k 32),
 *                  relu (SAELens "standard": ReLU with an L1 penalty),
 *                  jumprelu (ReLU gated by a learnt per-feature threshold >= 0 with
 *                  an L0 penalty; threshold gradients by straight-through
 *                  estimation with a rectangle kernel, as in Rajamanoharan et al.
 *                  2024; the threshold itself is the parameter, not its log)
 *   loss           sum over d_model of (x - x_hat)^2, averaged over the batch,
 *                  + sparsity (relu: l1 * sum f; jumprelu: l1 * L0)
 *                  + AuxK (every architecture): the top k_aux pre-activations of
 *                  the dead features reconstruct the residual x - x_hat
 *                  (Gao et al. 2024), weighted aux_coef * min(n_dead / k_aux, 1)
 *   optimiser      Adam; learning rate warmed up over the first 5% of steps and
 *                  decayed linearly to 0 over the last 20%; decoder rows kept at
 *                  unit norm (gradient projected, rows renormalised after each step)
 *   input          scaled by s = sqrt(d_model) / mean ||x|| (estimated on the first
 *                  buffer fill, SAELens' expected_average_only_in), so E||s x|| =
 *                  sqrt(d_model) whatever the model's scale; b_dec starts at the
 *                  mean (or geometric median) of that first fill. The saved SAE
 *                  has s folded in (normalize_activations "none"; decoder rows still
 *                  unit norm, feature activations divided by s).
 *
 * Deterministic for a given seed, sequence of fed blocks and thread count
 * (stetho_set_threads). */
#ifndef STETHO_SAE_TRAIN_H
#define STETHO_SAE_TRAIN_H

#include "stetho/model.h"
#include "stetho/sae.h"
#include "stetho/sae_eval.h"
#include "stetho/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    STETHO_SAE_BDEC_MEAN,             /* mean of the first buffer fill (default) */
    STETHO_SAE_BDEC_GEOMETRIC_MEDIAN, /* Weiszfeld iterations on the first fill */
    STETHO_SAE_BDEC_ZERO,
} stetho_sae_bdec_init;

typedef struct {
    int d_model, d_sae;
    stetho_sae_arch arch;      /* STETHO_SAE_TOPK (default), STETHO_SAE_RELU, STETHO_SAE_JUMPRELU */
    int k;                     /* topk: active features per token (default 32) */
    double l1;                 /* relu: L1 coefficient; jumprelu: L0 coefficient; both on inputs
                                  scaled to E||x|| = sqrt(d_model). 0 = default: 0.1 sqrt(d_model)
                                  (relu), 0.2 sqrt(d_model) (jumprelu) */
    double lr;                 /* peak Adam learning rate (0 = 2e-4 / sqrt(d_sae / 16384), Gao et al.) */
    double beta1, beta2, eps;  /* Adam (0.9, 0.999, 1e-8) */
    int batch;                 /* tokens per step (default 4096) */
    size_t buffer_tokens;      /* shuffle buffer in tokens (default 0 = 8 batches); a multiple of
                                  batch, at least 2 batches */
    uint64_t total_tokens;     /* training budget: the learning-rate schedule ends here and later
                                  blocks are ignored (required) */
    uint64_t seed;
    double aux_coef;           /* AuxK weight (default 1/32, Gao et al.) */
    int aux_k;                 /* dead features used per token by AuxK (0 = d_model / 2) */
    uint64_t dead_window;      /* a feature that has not fired for this many training tokens is
                                  dead (0 = min(10M, total_tokens / 5)) */
    double jump_bandwidth;     /* jumprelu: STE kernel width (default 0.05, on scaled inputs) */
    double jump_init_threshold;/* jumprelu: initial threshold (default 0.001 on scaled inputs) */
    stetho_sae_bdec_init b_dec_init;
    size_t heldout_tokens;     /* held-out rows kept for the final report (default 8192) */
    char hook[128];            /* written to cfg.json (may be "") */
    int layer;                 /* written to cfg.json (-1 = unknown) */
} stetho_sae_train_config;

/* The defaults above; d_model, d_sae and total_tokens stay 0 for the caller. */
void stetho_sae_train_config_default(stetho_sae_train_config *c);

typedef struct stetho_sae_trainer stetho_sae_trainer;

/* Check cfg and allocate a trainer (weights initialised from cfg->seed: decoder
 * rows random unit vectors, encoder their transpose, biases 0). */
stetho_status stetho_sae_trainer_init(stetho_sae_trainer **tr, const stetho_sae_train_config *cfg);
void stetho_sae_trainer_free(stetho_sae_trainer *tr);

/* Feed n rows x [n, d_model] (copied). Training steps run inside this call
 * whenever the buffer fills. Rows past the budget are ignored. */
stetho_status stetho_sae_trainer_feed(stetho_sae_trainer *tr, const float *x, size_t n);

/* A stetho_hook_fn: user is the trainer. Register it with stetho_hooks_add for the
 * trainer's hook; dim must equal d_model. */
stetho_status stetho_sae_trainer_hook(void *user, int layer, stetho_hook_kind kind, const float *data,
                                      int n_tokens, int dim);

/* Rows of the next blocks to use: keep [n] (1 = use; e.g. 0 for BOS, whose
 * activations are outliers). The array must stay valid while it is set; blocks
 * of another length are an error. NULL = every row. */
void stetho_sae_trainer_set_mask(stetho_sae_trainer *tr, const uint8_t *keep, size_t n);

/* While on, fed rows go to the held-out set (up to heldout_tokens, the rest are
 * dropped) instead of training. */
void stetho_sae_trainer_set_heldout(stetho_sae_trainer *tr, bool on);

/* True once the training budget is used up. */
bool stetho_sae_trainer_done(const stetho_sae_trainer *tr);

/* Progress: training so far; loss, mse, l0 and explained variance are
 * exponential moving averages over recent batches (scaled-input units). */
typedef struct {
    uint64_t tokens_seen;     /* rows fed for training (incl. those still buffered) */
    uint64_t tokens_trained;  /* rows used by steps */
    uint64_t steps, total_steps;
    double lr;
    double loss, mse, aux_loss, l0, explained_variance;
    int dead_features;
} stetho_sae_train_progress;

void stetho_sae_trainer_progress(const stetho_sae_trainer *tr, stetho_sae_train_progress *p);

typedef struct {
    stetho_sae_train_progress final;  /* progress at the end */
    double norm_scale;                /* s, folded into the saved weights */
    stetho_sae_metrics heldout;       /* reconstruction metrics of the saved SAE on the held-out
                                         rows (n_tokens 0 and NaNs when none were fed) */
} stetho_sae_train_report;

/* Train on what is still buffered, then build the SAE (normalisation folded in,
 * hook and layer from the config) into *out (free with stetho_sae_free) and
 * evaluate it on the held-out rows. rep may be NULL. The trainer can only be
 * freed afterwards. */
stetho_status stetho_sae_trainer_finish(stetho_sae_trainer *tr, stetho_sae *out, stetho_sae_train_report *rep);

/* ---- SAEs for several layers from one model and a file of texts ---------------- */

typedef void (*stetho_sae_run_progress_fn)(void *user, stetho_sae_trainer *const *trainers, int n, uint64_t budget,
                                           int pass);

typedef struct {
    const int *layers;          /* [n_layers] one SAE per layer, all fed by one forward per text */
    int n_layers;
    stetho_hook_kind kind;      /* default STETHO_HOOK_RESID_POST */
    stetho_sae_train_config sae;/* the settings shared by every SAE (d_sae, arch, k, lr, batch, seed...);
                                   d_model, layer, hook, total_tokens and heldout_tokens are set here */
    uint64_t tokens;            /* training tokens per SAE; 0 = one pass over the texts. The texts
                                   are read again as often as needed. */
    const char *field;          /* JSONL field holding the text (default "text") */
    int max_tokens_per_prompt;  /* default 1024, at most the model's context */
    long heldout_every;         /* every Nth text is held out, never trained on (default 10; 0 = none) */
    uint64_t heldout_tokens;    /* at most this many held-out tokens (default 8192) */
    stetho_sae_run_progress_fn progress; /* after every text (may be NULL); pass is 0-based */
    void *user;
} stetho_sae_run_opts;

void stetho_sae_run_opts_default(stetho_sae_run_opts *o);

typedef struct {
    int n;
    stetho_sae *saes;                  /* [n] in the order of opts.layers */
    stetho_sae_train_report *reports;  /* [n] */
    uint64_t budget;                   /* training tokens per SAE */
    long heldout_texts;                /* texts held out and fed for the final metrics */
    long texts_read;                   /* texts read in the first pass */
} stetho_sae_run_result;

/* Train the SAEs: each text (BOS added, truncated) runs through the model and
 * the hooked activations of every token but BOS/EOS/pad feed the layers'
 * trainers, pass after pass until the budget is used (held-out texts only in
 * the first pass). Deterministic for the inputs, opts and thread count. */
stetho_status stetho_sae_train_texts(stetho_model *m, const stetho_tokenizer *tok, const char *input,
                                     const stetho_sae_run_opts *o, stetho_sae_run_result *out);
void stetho_sae_run_result_free(stetho_sae_run_result *r);

#ifdef __cplusplus
}
#endif
#endif
