/* The tiny world's last step (`stetho toy build`, or `stetho toy saes` on a
 * built world): the prompt sets the study diagnoses layers with
 * (data/prompts/domain.jsonl: the first problems of each subject;
 * general.jsonl: the first general prompts) and one SAE per layer on the base
 * model's hook_resid_post, trained on problems and general text interleaved. */
#include "stetho/toy.h"

#include "stetho/jsonl.h"
#include "stetho/model.h"
#include "stetho/sae_train.h"
#include "stetho/tokenizer.h"
#include "stetho/toydata.h"
#include "internal.h"

#include <errno.h>
#include <math.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum { DOMAIN_PER_SUBJECT = 40, GENERAL_PROMPTS = 280, SAE_PROBLEMS = 1500 };

/* Lines of a JSONL file, as JSON objects (kept whole so they are written back unchanged). */
typedef struct {
    json_t **obj;
    size_t n, cap;
} lines;

static void lines_free(lines *l) {
    for (size_t i = 0; i < l->n; i++) json_decref(l->obj[i]);
    st_free(l->obj);
    memset(l, 0, sizeof *l);
}

static stetho_status lines_read(const char *path, lines *out) {
    stetho_jsonl_reader r;
    stetho_status st = stetho_jsonl_open(&r, path);
    if (st) return st;
    bool got;
    while (!(st = stetho_jsonl_next(&r, &got)) && got) {
        if (out->n == out->cap) {
            size_t cap = out->cap ? 2 * out->cap : 1024;
            json_t **p = st_realloc(out->obj, cap * sizeof *p);
            if (!p) {
                st = STETHO_ERR_NOMEM;
                break;
            }
            out->obj = p;
            out->cap = cap;
        }
        out->obj[out->n++] = json_incref(r.obj);
    }
    stetho_jsonl_close(&r);
    return st;
}

/* Write objects to path, one per line, through a temporary name. */
static stetho_status write_lines(const char *path, json_t *const *obj, size_t n) {
    st_buf b;
    st_buf_init(&b);
    for (size_t i = 0; i < n && !b.failed; i++) {
        char *s = json_dumps(obj[i], JSON_COMPACT | JSON_ENSURE_ASCII | JSON_PRESERVE_ORDER);
        if (!s || !st_buf_append(&b, s, strlen(s)) || !st_buf_append(&b, "\n", 1)) b.failed = true;
        free(s);
    }
    stetho_status st = b.failed ? st_err(STETHO_ERR_NOMEM, "%s: out of memory", path) : stetho_write_file(path, b.data, b.len);
    st_buf_free(&b);
    return st;
}

static char *join(const char *dir, const char *name) { return st_path_join(dir, name); }

/* data/prompts/{domain,general}.jsonl */
static stetho_status write_prompts(const char *world, const lines *train) {
    char *dir = join(world, "data/prompts"), *dom = join(world, "data/prompts/domain.jsonl"),
         *gen = join(world, "data/prompts/general.jsonl"), *src = join(world, "data/general/general_prompts.jsonl");
    stetho_status st = dir && dom && gen && src ? STETHO_OK : STETHO_ERR_NOMEM;
    if (!st && mkdir(dir, 0755) && errno != EEXIST) st = st_err(STETHO_ERR_IO, "cannot create %s: %s", dir, strerror(errno));
    json_t **pick = st ? NULL : st_malloc(train->n * sizeof *pick + 1);
    if (!st && !pick) st = STETHO_ERR_NOMEM;
    size_t n = 0;
    /* the first problems of each subject, subjects in order of first appearance */
    json_t *seen = json_object();
    for (size_t i = 0; i < train->n && !st; i++) {
        const char *subj = json_string_value(json_object_get(train->obj[i], "subject"));
        if (!subj) continue;
        json_int_t c = json_integer_value(json_object_get(seen, subj));
        if (c >= DOMAIN_PER_SUBJECT) continue;
        json_object_set_new(seen, subj, json_integer(c + 1));
        pick[n++] = train->obj[i];
    }
    json_decref(seen);
    if (!st) st = write_lines(dom, pick, n);
    st_free(pick);
    lines gp = {0};
    if (!st && !(st = lines_read(src, &gp)))
        st = write_lines(gen, gp.obj, gp.n < GENERAL_PROMPTS ? gp.n : GENERAL_PROMPTS);
    lines_free(&gp);
    st_free(dir), st_free(dom), st_free(gen), st_free(src);
    return st;
}

/* The SAEs' training texts: problems (as the model sees them) spread over all
 * subjects, and the general training paragraphs, interleaved. */
static stetho_status write_mix(const char *path, const lines *train, const char *general_path, const char *heldout_path) {
    lines gen = {0}, held = {0};
    stetho_status st = lines_read(general_path, &gen);
    if (!st) st = lines_read(heldout_path, &held);
    size_t n_gen = gen.n > held.n ? gen.n - held.n : 0; /* toy build holds out the last paragraphs */
    size_t n_prob = train->n < SAE_PROBLEMS ? train->n : SAE_PROBLEMS, total = n_prob + n_gen;
    json_t **all = st ? NULL : st_calloc(total + 1, sizeof *all);
    if (!st && !all) st = STETHO_ERR_NOMEM;
    size_t gi = 0, pi = 0;
    for (size_t k = 0; k < total && !st; k++) {
        /* interleave: the k-th text is general when the general share so far is behind */
        bool general = gi < n_gen && (pi >= n_prob || gi * total < k * n_gen + n_gen / 2);
        char *text = NULL;
        if (general) {
            const char *t = json_string_value(json_object_get(gen.obj[gi++], "text"));
            text = t ? st_strdup(t) : NULL;
            if (!t) st = st_err(STETHO_ERR_FORMAT, "%s: a line has no text", general_path);
        } else {
            const json_t *o = train->obj[(size_t)((double)pi++ * (double)train->n / (double)n_prob)];
            const char *p = json_string_value(json_object_get(o, "problem")), *s = json_string_value(json_object_get(o, "solution"));
            if (!p || !s) st = st_err(STETHO_ERR_FORMAT, "toy saes: a training problem has no problem/solution");
            else st = stetho_toy_render(p, s, &text);
        }
        if (!st && !text) st = STETHO_ERR_NOMEM;
        if (!st) all[k] = json_pack("{s:s}", "text", text);
        st_free(text);
        if (!st && !all[k]) st = STETHO_ERR_NOMEM;
    }
    if (!st) st = write_lines(path, all, total);
    for (size_t k = 0; all && k < total; k++) json_decref(all[k]);
    st_free(all);
    lines_free(&gen);
    lines_free(&held);
    return st;
}

static json_t *jnum(double v) { return isfinite(v) ? json_real(v) : json_null(); }

stetho_status stetho_toy_saes(const char *world, const stetho_toy_opts *o) {
    char *train_path = join(world, "data/math/train.jsonl"), *gen_path = join(world, "data/general/general_text.jsonl"),
         *held_path = join(world, "data/general/heldout_text.jsonl"), *base = join(world, "base"),
         *sae_dir = join(world, "saes"), *mix = join(world, "saes/.train_mix.jsonl"),
         *report_path = join(world, "saes/train_report.json");
    stetho_status st = train_path && gen_path && held_path && base && sae_dir && mix && report_path ? STETHO_OK
                                                                                                   : STETHO_ERR_NOMEM;
    lines train = {0};
    stetho_model m;
    stetho_tokenizer tok;
    bool m_ok = false, tok_ok = false;
    stetho_sae_run_result res = {0};
    int *layers = NULL;
    json_t *report = NULL;
    if (!st && o->sae_width <= 0) st = st_err(STETHO_ERR_INVALID, "toy saes: the SAE width must be positive");
    if (!st) st = lines_read(train_path, &train);
    if (!st) st = write_prompts(world, &train);
    if (!st && mkdir(sae_dir, 0755) && errno != EEXIST)
        st = st_err(STETHO_ERR_IO, "cannot create %s: %s", sae_dir, strerror(errno));
    if (!st) st = write_mix(mix, &train, gen_path, held_path);
    if (!st && !(st = stetho_model_load(&m, base))) m_ok = true;
    if (!st && !(st = stetho_tokenizer_load(&tok, base))) tok_ok = true;
    if (!st && !(layers = st_malloc((size_t)m.cfg.n_layers * sizeof *layers))) st = STETHO_ERR_NOMEM;
    if (!st) {
        for (int l = 0; l < m.cfg.n_layers; l++) layers[l] = l;
        stetho_sae_run_opts ro;
        stetho_sae_run_opts_default(&ro);
        ro.layers = layers;
        ro.n_layers = m.cfg.n_layers;
        ro.sae.d_sae = o->sae_width;
        ro.sae.k = o->sae_k < o->sae_width ? o->sae_k : o->sae_width;
        ro.sae.batch = 512;
        ro.sae.seed = o->seed;
        ro.tokens = (uint64_t)o->sae_tokens;
        ro.max_tokens_per_prompt = 256;
        if (o->progress) o->progress(o->user, "sae", "training one SAE per layer on the base model's hook_resid_post");
        st = stetho_sae_train_texts(&m, &tok, mix, &ro, &res);
    }
    if (!st) {
        report = json_pack("{s:s, s:s, s:s, s:i, s:i, s:I, s:I, s:I, s:[]}", "model", "base",
                           "input", "1,500 training problems (problem + solution, spread over the subjects) and the "
                                    "general training paragraphs, interleaved",
                           "architecture", "topk", "d_sae", o->sae_width, "k", o->sae_k, "tokens",
                           (json_int_t)res.budget, "seed", (json_int_t)o->seed, "heldout_prompts",
                           (json_int_t)res.heldout_texts, "saes");
        if (!report) st = STETHO_ERR_NOMEM;
    }
    for (int i = 0; i < res.n && !st; i++) {
        char name[64];
        snprintf(name, sizeof name, "layer_%d", res.saes[i].layer);
        char *dir = join(sae_dir, name);
        if (!dir) st = STETHO_ERR_NOMEM;
        else st = stetho_sae_save_saelens(&res.saes[i], dir, true);
        st_free(dir);
        const stetho_sae_metrics *h = &res.reports[i].heldout;
        json_array_append_new(json_object_get(report, "saes"),
                              json_pack("{s:i, s:s, s:s+, s:o, s:o, s:o, s:i}", "layer", res.saes[i].layer, "hook",
                                        res.saes[i].hook, "path", "saes/", name, "explained_variance",
                                        jnum(h->explained_variance), "mse", jnum(h->mse), "cossim", jnum(h->cossim),
                                        "dead_features", h->dead_features));
        if (!st && o->progress) {
            char line[160];
            snprintf(line, sizeof line, "layer %d: held-out explained variance %.3f, dead %d/%d", res.saes[i].layer,
                     h->explained_variance, h->dead_features, o->sae_width);
            o->progress(o->user, "sae", line);
        }
    }
    if (!st) {
        char *text = json_dumps(report, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
        st = text ? stetho_write_file(report_path, text, strlen(text)) : st_err(STETHO_ERR_NOMEM, "out of memory");
        free(text);
    }
    if (mix) remove(mix);
    json_decref(report);
    stetho_sae_run_result_free(&res);
    st_free(layers);
    if (m_ok) stetho_model_free(&m);
    if (tok_ok) stetho_tokenizer_free(&tok);
    lines_free(&train);
    st_free(train_path), st_free(gen_path), st_free(held_path), st_free(base), st_free(sae_dir), st_free(mix),
        st_free(report_path);
    return st;
}
