/* SAEs for several layers of one model from a JSONL file of texts: the texts
 * are tokenized and run through the model one at a time, and the hooked
 * activations stream into one trainer per layer (stetho_sae_train_texts). The
 * driver behind `stetho sae train` and the tiny world's SAEs. */
#include "stetho/sae_train.h"
#include "stetho/texts.h"

#include "internal.h"

#include <stdlib.h>
#include <string.h>

void stetho_sae_run_opts_default(stetho_sae_run_opts *o) {
    memset(o, 0, sizeof *o);
    o->kind = STETHO_HOOK_RESID_POST;
    stetho_sae_train_config_default(&o->sae);
    o->field = "text";
    o->max_tokens_per_prompt = 1024;
    o->heldout_every = 10;
    o->heldout_tokens = 8192;
}

void stetho_sae_run_result_free(stetho_sae_run_result *r) {
    for (int i = 0; r->saes && i < r->n; i++) stetho_sae_free(&r->saes[i]);
    st_free(r->saes);
    st_free(r->reports);
    memset(r, 0, sizeof *r);
}

static bool held_out(const stetho_sae_run_opts *o, long index) {
    return o->heldout_every > 0 && index % o->heldout_every == o->heldout_every - 1;
}

/* One pass counting the training tokens (the default budget). */
static stetho_status count_tokens(const stetho_tokenizer *tok, const char *input, const stetho_sae_run_opts *o,
                                  int max_tok, uint8_t *keep, uint64_t *out) {
    stetho_texts ts;
    stetho_status st = stetho_texts_open(&ts, input, tok, o->field, max_tok);
    if (st) return st;
    bool got;
    uint64_t n = 0;
    while (!(st = stetho_texts_next(&ts, &got)) && got)
        if (!held_out(o, ts.index)) n += (uint64_t)stetho_texts_mask_special(tok, ts.ids, ts.n, keep);
    stetho_texts_close(&ts);
    *out = n;
    return st;
}

stetho_status stetho_sae_train_texts(stetho_model *m, const stetho_tokenizer *tok, const char *input,
                                     const stetho_sae_run_opts *o, stetho_sae_run_result *out) {
    memset(out, 0, sizeof *out);
    if (o->n_layers < 1 || !o->layers) return st_err(STETHO_ERR_INVALID, "sae train: no layers");
    for (int i = 0; i < o->n_layers; i++)
        if (o->layers[i] < 0 || o->layers[i] >= m->cfg.n_layers)
            return st_err(STETHO_ERR_INVALID, "sae train: layer %d: the model has layers 0-%d", o->layers[i],
                          m->cfg.n_layers - 1);
    int n = o->n_layers, max_tok = o->max_tokens_per_prompt > 0 ? o->max_tokens_per_prompt : 1024;
    if (m->cfg.max_position > 0 && max_tok > m->cfg.max_position) max_tok = m->cfg.max_position;
    stetho_sae_trainer **tr = st_calloc((size_t)n, sizeof *tr);
    uint8_t *keep = st_malloc((size_t)max_tok);
    stetho_hooks hooks;
    stetho_hooks_init(&hooks);
    stetho_texts ts;
    bool ts_open = false;
    stetho_status st = tr && keep ? STETHO_OK : STETHO_ERR_NOMEM;
    uint64_t budget = o->tokens;
    if (!st && !budget && !(st = count_tokens(tok, input, o, max_tok, keep, &budget)) && !budget)
        st = st_err(STETHO_ERR_INVALID, "%s: no training tokens (every text is empty or held out)", input);
    for (int i = 0; i < n && !st; i++) {
        stetho_sae_train_config c = o->sae;
        c.d_model = m->cfg.hidden;
        c.total_tokens = budget;
        c.heldout_tokens = o->heldout_every > 0 ? (size_t)o->heldout_tokens : 0;
        c.layer = o->layers[i];
        snprintf(c.hook, sizeof c.hook, "blocks.%d.%s", o->layers[i], stetho_hook_kind_name(o->kind));
        if (!(st = stetho_sae_trainer_init(&tr[i], &c))) st = stetho_hooks_add(&hooks, c.hook, stetho_sae_trainer_hook, tr[i]);
    }

    /* passes until the budget is used; held-out texts only in the first */
    uint64_t held_fed = 0;
    for (int pass = 0; !st && !stetho_sae_trainer_done(tr[0]); pass++) {
        stetho_sae_train_progress p;
        stetho_sae_trainer_progress(tr[0], &p);
        uint64_t before = p.tokens_seen;
        if ((st = stetho_texts_open(&ts, input, tok, o->field, max_tok))) break;
        ts_open = true;
        bool got;
        while (!(st = stetho_texts_next(&ts, &got)) && got) {
            bool held = held_out(o, ts.index);
            bool want_held = o->heldout_every > 0 && pass == 0 && held_fed < o->heldout_tokens;
            bool done = stetho_sae_trainer_done(tr[0]);
            if (done && !want_held) break; /* after the budget, the first pass still collects held-out texts */
            if (held ? !want_held : done) continue;
            int kept = stetho_texts_mask_special(tok, ts.ids, ts.n, keep);
            if (!kept) continue;
            for (int i = 0; i < n; i++) {
                stetho_sae_trainer_set_mask(tr[i], keep, (size_t)ts.n);
                stetho_sae_trainer_set_heldout(tr[i], held);
            }
            if ((st = stetho_model_forward(m, ts.ids, ts.n, NULL, &hooks))) {
                st = st_err_context(st, "%s: text %ld", input, ts.index + 1);
                break;
            }
            if (held) held_fed += (uint64_t)kept, out->heldout_texts++;
            if (o->progress) o->progress(o->user, tr, n, budget, pass);
        }
        if (pass == 0) out->texts_read = ts.index + 1;
        stetho_texts_close(&ts);
        ts_open = false;
        stetho_sae_trainer_progress(tr[0], &p);
        if (!st && p.tokens_seen == before && !stetho_sae_trainer_done(tr[0]))
            st = st_err(STETHO_ERR_INVALID, "%s: no training tokens (every text is empty or held out)", input);
    }

    if (!st) {
        out->saes = st_calloc((size_t)n, sizeof *out->saes);
        out->reports = st_calloc((size_t)n, sizeof *out->reports);
        if (!out->saes || !out->reports) st = STETHO_ERR_NOMEM;
    }
    for (int i = 0; i < n && !st; i++)
        if (!(st = stetho_sae_trainer_finish(tr[i], &out->saes[i], &out->reports[i]))) out->n = i + 1;
    out->budget = budget;
    if (ts_open) stetho_texts_close(&ts);
    for (int i = 0; tr && i < n; i++) stetho_sae_trainer_free(tr[i]);
    stetho_hooks_free(&hooks);
    st_free(tr);
    st_free(keep);
    if (st) stetho_sae_run_result_free(out);
    return st;
}
