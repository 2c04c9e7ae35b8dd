/* Access to the SAE trainer's insides for its tests (gradient checks). */
#ifndef STETHO_SAE_TRAIN_INTERNAL_H
#define STETHO_SAE_TRAIN_INTERNAL_H

#include "stetho/sae_train.h"

/* Loss and gradients (into the trainer's buffers, nothing updated) of the current
 * parameters on rows x [n, d_model] taken as already scaled; n <= batch. The
 * parameters are laid out W_enc^T [d_sae, d_model], W_dec [d_sae, d_model], b_enc
 * [d_sae], b_dec [d_model], then (jumprelu) log thresholds [d_sae]. */
double st_sae_trainer_loss_grad(stetho_sae_trainer *t, const float *x, int n, float **params, float **grads,
                                size_t *n_params);
/* Make the features with dead[j] != 0 count as dead (AuxK applies to them). */
void st_sae_trainer_set_dead(stetho_sae_trainer *t, const uint8_t *dead);

#endif
