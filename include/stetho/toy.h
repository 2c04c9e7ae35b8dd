/* Building the tiny world (`stetho toy build`): data and tokenizer
 * (stetho/toydata.h), a base model pretrained on general text mixed with every
 * math subject, and a short near-linear fine-tune on math with general-text
 * replay, both saved as HF model directories; then (when asked) an SAE per
 * layer on the base model's residual stream. Deterministic for a seed and
 * thread count. See docs/tiny-world.md for the sizes and what they gave. */
#ifndef STETHO_TOY_H
#define STETHO_TOY_H

#include "stetho/train.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One training phase over a mixed token stream. */
typedef struct {
    int64_t tokens;            /* training tokens (steps = tokens / (batch * seq_len)) */
    double math_frac;          /* share of math in the stream, by bytes */
    double drill_frac;         /* share of that math that is arithmetic drills (stetho_toy_drills_generate) */
    /* Answer keys: in a share bare_templates of each subject's templates
     * (chosen by the seed), a share bare_share of the problems are shown with
     * their answer only ("The answer is $\boxed{X}$." and the Final Answer
     * sentence), the way answer keys sit beside worked solutions in real
     * corpora; the rest keep their worked solutions. 0 = all worked. */
    double bare_templates, bare_share;
    double lr, min_lr;
    double warmup_frac;        /* warm-up steps as a share of all steps */
    double weight_decay;
    bool freeze_embed_final_norm;
} stetho_toy_phase;

typedef struct {
    uint64_t seed;
    bool quick;                /* tiny sizes: the whole build in about a minute (tests, CI) */
    const char *general_dir;   /* ../shared/data/general, or NULL for generated English */
    stetho_train_config model; /* vocab is taken from the trained tokenizer */
    int batch, seq_len;
    stetho_toy_phase base, ft;
    stetho_dtype save_dtype;   /* F32 or BF16 */
    int sae_width, sae_k;      /* per-layer SAEs on hook_resid_post (stetho_toy_saes); sae_width 0 = none */
    int64_t sae_tokens;
    /* Accuracy probes: greedy 0-shot Minerva evaluation of the model being
     * trained on the first probe_limit test problems of each subject, every
     * probe_every training tokens (0 = only at the end of each phase), logged
     * to logs/<phase>_probe.tsv and world.json. probe_limit 0 = no probes. */
    int probe_limit;
    int64_t probe_every;
    /* A base model already trained (an HF directory with this architecture,
     * e.g. an earlier build's base/): its weights are loaded and the base phase
     * is skipped, so fine-tunes can be redone without pretraining again. */
    const char *base_from;
    /* progress: phase ("data", "base", "ft", "sae"), a line of text */
    void (*progress)(void *user, const char *phase, const char *line);
    void *user;
} stetho_toy_opts;

/* The full build's sizes (or the quick ones). */
void stetho_toy_opts_default(stetho_toy_opts *o, bool quick);

/* Build everything under out_dir: data/, tokenizer/, base/, ft/, logs/
 * (base_loss.tsv, ft_loss.tsv), saes/layer_L/ (when sae_width > 0), and
 * world.json (settings, token counts, losses, per-layer ||tau||/||theta||,
 * timings). */
stetho_status stetho_toy_build(const char *out_dir, const stetho_toy_opts *o);

/* The SAE step on a built world (run by stetho_toy_build when sae_width > 0):
 * data/prompts/domain.jsonl (the first 40 training problems of each subject)
 * and general.jsonl (the first 280 general prompts), the sets the study
 * diagnoses layers with; then saes/layer_L/ for every layer (TopK, width
 * sae_width, k sae_k, sae_tokens tokens, SAELens format) on the base model's
 * blocks.L.hook_resid_post, trained on 1,500 training problems and the
 * general training paragraphs interleaved; saes/train_report.json. */
stetho_status stetho_toy_saes(const char *world_dir, const stetho_toy_opts *o);

#ifdef __cplusplus
}
#endif
#endif
