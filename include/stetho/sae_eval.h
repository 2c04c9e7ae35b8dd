/* Evaluating SAEs on a model: the SAELens metrics of sae_lens/evals.py.
 *
 * Reconstruction (on the hooked activations x, reconstruction x_hat, features f;
 * averaged over scored tokens):
 *   l0                  mean number of features > 0 per token
 *   l1                  mean sum of f per token
 *   mse                 mean over tokens of sum over d_model of (x - x_hat)^2 (the
 *                       per-token error SAELens trains on; its eval additionally
 *                       divides by the batch's token count, which we do not)
 *   explained_variance  1 - E||x - x_hat||^2 / E||x - E x||^2 over all scored tokens
 *                       (what SAELens' "new" explained_variance intends; its code
 *                       subtracts the squared mean of x^2 instead of ||E x||^2)
 *   cossim              mean cosine between x and x_hat
 *   dead / dense        features that never fire / fire on more than 10% of tokens
 * Downstream (with a model): next-token cross-entropy averaged over scored
 * positions, clean, with x_hat spliced in at the hook, and with the hook's
 * activations zeroed at every position;
 *   ce_loss_score = (CE_ablation - CE_sae) / (CE_ablation - CE_clean)
 *   kl_div_score  = (KL_ablation - KL_sae) / KL_ablation
 * with KL(clean || other) per position. Tokens listed as ignored (BOS, EOS, pad)
 * are not scored and keep their own activations in the splice, as SAELens' eval
 * runner does. */
#ifndef STETHO_SAE_EVAL_H
#define STETHO_SAE_EVAL_H

#include "stetho/model.h"
#include "stetho/sae.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    uint64_t n_tokens;                /* tokens scored for reconstruction */
    double l0, l1, mse, explained_variance, cossim;
    int d_sae, dead_features, dense_features;
    /* downstream (NaN when not computed) */
    uint64_t n_ce_positions;
    double ce_loss_without_sae, ce_loss_with_sae, ce_loss_with_ablation, ce_loss_score;
    double kl_div_with_sae, kl_div_with_ablation, kl_div_score;
} stetho_sae_metrics;

/* Running sums for the reconstruction metrics. */
typedef struct {
    int d_model, d_sae;
    uint64_t n;
    double sse, sum_sq, sum_cos, sum_l0, sum_l1; /* sums over tokens */
    double *sum_x;       /* [d_model] */
    uint64_t *fires;     /* [d_sae] tokens on which each feature was > 0 */
} stetho_sae_recon_acc;

stetho_status stetho_sae_recon_init(stetho_sae_recon_acc *a, int d_model, int d_sae);
void stetho_sae_recon_free(stetho_sae_recon_acc *a);
/* Add n tokens: x, x_hat [n, d_model], f [n, d_sae]; keep [n] may be NULL (all). */
void stetho_sae_recon_add(stetho_sae_recon_acc *a, const float *x, const float *x_hat, const float *f, size_t n,
                          const uint8_t *keep);
/* The reconstruction metrics so far (downstream fields NaN). */
void stetho_sae_recon_result(const stetho_sae_recon_acc *a, stetho_sae_metrics *m);

/* Reconstruction metrics of an SAE on rows x [n, d_model] (no model needed). */
stetho_status stetho_sae_eval_rows(const stetho_sae *sae, const float *x, size_t n, stetho_sae_metrics *out);

/* An evaluation of several SAEs (each at its own hook, sae->hook) over prompts
 * run through one model. */
typedef struct stetho_sae_evaluator stetho_sae_evaluator;

/* saes [n_saes] stay owned by the caller and must outlive the evaluator. Each
 * needs a hook name the model has and d_model = the model's hidden size.
 * ignore_ids [n_ignore]: token ids not scored (may be NULL). downstream: also run
 * the spliced and zero-ablated forward passes (2 per SAE per prompt). */
stetho_status stetho_sae_evaluator_init(stetho_sae_evaluator **ev, stetho_model *m, const stetho_sae *const *saes,
                                        size_t n_saes, const int32_t *ignore_ids, size_t n_ignore, bool downstream);
void stetho_sae_evaluator_free(stetho_sae_evaluator *ev);
/* Score one prompt (tokens as the model takes them, BOS included). */
stetho_status stetho_sae_evaluator_prompt(stetho_sae_evaluator *ev, const int32_t *tokens, int n_tokens);
/* Metrics of SAE i over the prompts so far. */
void stetho_sae_evaluator_result(const stetho_sae_evaluator *ev, size_t i, stetho_sae_metrics *out);

#ifdef __cplusplus
}
#endif
#endif
