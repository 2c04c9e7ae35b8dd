/* `stetho toy build`: the tiny world from nothing. Data and tokenizer come from
 * toydata.c; this file turns them into token streams (documents mixed by
 * stetho_toy_mix, each wrapped in BOS ... EOS, packed into fixed windows),
 * pretrains the base model, fine-tunes it (fresh optimizer state, low learning
 * rate, general-text replay, embeddings and final norm frozen), saves both as
 * HF directories with the tokenizer, and records everything it measured in
 * world.json and the loss logs. */
#include "stetho/toy.h"

#include "stetho/checkpoint.h"
#include "stetho/eval.h"
#include "stetho/jsonl.h"
#include "stetho/model.h"
#include "stetho/tokenizer.h"
#include "stetho/toydata.h"
#include "internal.h"
#include "toydata_internal.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

void stetho_toy_opts_default(stetho_toy_opts *o, bool quick) {
    memset(o, 0, sizeof *o);
    o->seed = 1;
    o->quick = quick;
    stetho_train_config_default(&o->model);
    /* windows long enough to hold a whole problem and its solution; local
     * layers see 128 tokens, every 4th layer is global */
    o->model.sliding_window = 128;
    o->model.sliding_window_pattern = 4;
    o->batch = 8;
    o->seq_len = 256;
    o->save_dtype = STETHO_DTYPE_BF16;
    /* base: general text with every subject (issue 7: the base must already
     * solve a fair share); ft: short, gentle, with replay */
    o->base = (stetho_toy_phase){.tokens = 10000000, .math_frac = 0.75, .drill_frac = 0.25, .bare_templates = 0.6,
                                 .bare_share = 0.75, .lr = 2e-3, .min_lr = 2e-4,
                                 .warmup_frac = 0.03, .weight_decay = 0.1};
    o->ft = (stetho_toy_phase){.tokens = 2000000, .math_frac = 0.75, .drill_frac = 0, .lr = 5e-4, .min_lr = 5e-5,
                               .warmup_frac = 0.05, .weight_decay = 0.0, .freeze_embed_final_norm = true};
    o->sae_width = 4 * o->model.hidden;
    o->sae_k = 16;
    o->sae_tokens = 400000;
    o->probe_limit = 20;
    if (quick) {
        o->probe_limit = 3;
        o->model.n_layers = 4;
        o->model.hidden = 64;
        o->model.intermediate = 128;
        o->model.head_dim = 16;
        o->model.query_pre_attn_scalar = 16;
        o->model.sliding_window = 32;
        o->batch = 8;
        o->seq_len = 64;
        o->base.tokens = 150000;
        o->ft.tokens = 30000;
        o->sae_width = 128;
        o->sae_k = 8;
        o->sae_tokens = 20000;
    }
}

typedef struct {
    const stetho_toy_opts *o;
    const char *out;
    json_t *world;
    double t0;
    const stetho_tokenizer *tok; /* for the probes */
} builder;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void say(builder *b, const char *phase, const char *fmt, ...) ST_PRINTF(3, 4);
static void say(builder *b, const char *phase, const char *fmt, ...) {
    if (!b->o->progress) return;
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    b->o->progress(b->o->user, phase, line);
}

/* ------------------------------------------------------------ streams */

typedef struct {
    int32_t *ids;
    size_t n, cap;
} tokens;

static stetho_status tokens_push(tokens *t, const int32_t *ids, size_t n) {
    if (t->n + n > t->cap) {
        size_t cap = t->cap ? t->cap : 1 << 16;
        while (cap < t->n + n) cap *= 2;
        int32_t *p = st_realloc(t->ids, cap * sizeof *p);
        if (!p) return st_err(STETHO_ERR_NOMEM, "toy: out of memory for the token stream");
        t->ids = p;
        t->cap = cap;
    }
    memcpy(t->ids + t->n, ids, n * sizeof *ids);
    t->n += n;
    return STETHO_OK;
}

/* Each document as BOS text EOS, appended to the stream. */
static stetho_status tokenize_docs(const stetho_tokenizer *tok, const stetho_toy_docs *docs, tokens *out) {
    for (size_t i = 0; i < docs->n; i++) {
        int32_t *ids = NULL;
        size_t n = 0;
        stetho_status st = stetho_tokenizer_encode(tok, docs->text[i], docs->len[i], false, &ids, &n);
        if (st) return st;
        int32_t bos = tok->bos_id, eos = tok->eos_id;
        if ((st = tokens_push(out, &bos, 1)) || (st = tokens_push(out, ids, n)) || (st = tokens_push(out, &eos, 1))) {
            free(ids);
            return st;
        }
        free(ids);
    }
    return STETHO_OK;
}

/* Math problems rendered as the model will see them at evaluation. kind
 * (optional) receives each problem's template as subject * 8 + template index,
 * or -1 when the file names none (a MATH file from elsewhere). */
typedef struct {
    int *v;
    size_t n, cap;
} kinds;

static int template_kind(const char *subject, const char *tmpl) {
    if (!subject || !tmpl) return -1;
    for (int s = 0; s < STETHO_TOY_N_SUBJECTS; s++) {
        if (strcmp(subject, stetho_toy_subject_name(s))) continue;
        for (int t = 0; t < toy_n_templates(s); t++)
            if (!strcmp(tmpl, toy_template_name(s, t))) return s * 8 + t;
    }
    return -1;
}

static stetho_status load_math(const char *path, stetho_toy_docs *docs, kinds *kind) {
    stetho_jsonl_reader r;
    stetho_status st = stetho_jsonl_open(&r, path);
    if (st) return st;
    bool got;
    while (!(st = stetho_jsonl_next(&r, &got)) && got) {
        const char *p = json_string_value(json_object_get(r.obj, "problem"));
        const char *s = json_string_value(json_object_get(r.obj, "solution"));
        if (!p || !s) {
            st = st_err(STETHO_ERR_FORMAT, "%s:%zu: needs string fields problem and solution", path, r.line_no);
            break;
        }
        if (kind) {
            if (kind->n == kind->cap) {
                size_t cap = kind->cap ? 2 * kind->cap : 1024;
                int *v = st_realloc(kind->v, cap * sizeof *v);
                if (!v) {
                    st = st_err(STETHO_ERR_NOMEM, "toy: out of memory");
                    break;
                }
                kind->v = v;
                kind->cap = cap;
            }
            kind->v[kind->n++] = template_kind(json_string_value(json_object_get(r.obj, "subject")),
                                               json_string_value(json_object_get(r.obj, "template")));
        }
        char *text = NULL;
        if ((st = stetho_toy_render(p, s, &text))) break;
        st = stetho_toy_docs_add(docs, text, strlen(text), true);
        free(text);
        if (st) break;
    }
    stetho_jsonl_close(&r);
    return st;
}

static uint64_t mix64(uint64_t h) {
    h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ULL;
    h = (h ^ (h >> 27)) * 0x94d049bb133111ebULL;
    return h ^ (h >> 31);
}

static uint64_t hash_bytes(const char *s, size_t n, uint64_t seed) {
    uint64_t h = 1469598103934665603ULL ^ seed;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    return mix64(h);
}

/* The templates whose problems a phase mostly shows as answer keys: in each
 * subject the round(frac * n) templates that a seeded hash ranks first. */
static void bare_choose(double frac, uint64_t seed, bool bare[STETHO_TOY_N_SUBJECTS][8]) {
    memset(bare, 0, sizeof(bool) * STETHO_TOY_N_SUBJECTS * 8);
    for (int s = 0; s < STETHO_TOY_N_SUBJECTS; s++) {
        int nt = toy_n_templates(s), want = (int)lround(frac * nt);
        uint64_t rank[8];
        for (int t = 0; t < nt; t++) rank[t] = mix64(seed * 0x9E3779B97F4A7C15ULL + (uint64_t)(s * 8 + t) + 1);
        for (int k = 0; k < want; k++) {
            int best = -1;
            for (int t = 0; t < nt; t++)
                if (!bare[s][t] && (best < 0 || rank[t] < rank[best])) best = t;
            bare[s][best] = true;
        }
    }
}

/* A rendered problem as its answer key: the worked steps before "Therefore
 * the answer is" are dropped, so "...Solution: <steps> Therefore the answer is
 * $\boxed{X}$.\nFinal Answer: ..." becomes "...Solution: The answer is
 * $\boxed{X}$.\nFinal Answer: ...". NULL (no error) when the document does
 * not have that shape. */
static char *render_bare(const char *doc) {
    static const char sol[] = "\n\nSolution: ", ther[] = "Therefore the answer is ";
    const char *a = strstr(doc, sol), *b = NULL;
    if (!a) return NULL;
    for (const char *q = strstr(a, ther); q; q = strstr(q + 1, ther)) b = q;
    if (!b) return NULL;
    size_t head = (size_t)(a - doc) + sizeof sol - 1, tail = strlen(b + sizeof ther - 1);
    char *out = st_malloc(head + 14 + tail + 1);
    if (!out) return NULL;
    memcpy(out, doc, head);
    memcpy(out + head, "The answer is ", 14);
    memcpy(out + head + 14, b + sizeof ther - 1, tail + 1);
    return out;
}

/* A phase's math pool: every training problem (as its answer key where the
 * phase asks for bare answers), plus arithmetic drills to make up drill_frac
 * of the pool's bytes. */
static stetho_status math_pool(const stetho_toy_docs *problems, const kinds *kind, const stetho_toy_phase *ph,
                               uint64_t seed, stetho_toy_docs *pool, size_t *n_drills, size_t *n_bare) {
    stetho_status st = STETHO_OK;
    bool bare[STETHO_TOY_N_SUBJECTS][8];
    bare_choose(ph->bare_templates, seed, bare);
    size_t bytes = 0;
    *n_bare = 0;
    for (size_t i = 0; i < problems->n && !st; i++) {
        int k = kind && i < kind->n ? kind->v[i] : -1;
        char *key = NULL;
        if (k >= 0 && bare[k / 8][k % 8] && ph->bare_share > 0 &&
            (double)(hash_bytes(problems->text[i], problems->len[i], seed) % 1000000) < ph->bare_share * 1e6) {
            if (!(key = render_bare(problems->text[i])))
                st = st_err(STETHO_ERR_FORMAT, "toy: training problem %zu has no 'Therefore the answer is' to cut at", i);
        }
        if (!st) st = stetho_toy_docs_add(pool, key ? key : problems->text[i], key ? strlen(key) : problems->len[i], true);
        if (key) ++*n_bare;
        bytes += pool->len[pool->n - 1];
        st_free(key);
    }
    size_t before = pool->n;
    if (!st && ph->drill_frac > 0 && ph->drill_frac < 1)
        st = stetho_toy_drills_generate((size_t)((double)bytes * ph->drill_frac / (1 - ph->drill_frac)), seed, pool);
    *n_drills = pool->n - before;
    return st;
}

/* The "subject/template" names a phase shows mostly as answer keys. */
static json_t *bare_names(const stetho_toy_phase *ph, uint64_t seed) {
    json_t *a = json_array();
    if (ph->bare_share <= 0) return a;
    bool bare[STETHO_TOY_N_SUBJECTS][8];
    bare_choose(ph->bare_templates, seed, bare);
    for (int s = 0; s < STETHO_TOY_N_SUBJECTS; s++)
        for (int t = 0; t < toy_n_templates(s); t++)
            if (bare[s][t]) {
                char name[96];
                snprintf(name, sizeof name, "%s/%s", stetho_toy_subject_name(s), toy_template_name(s, t));
                json_array_append_new(a, json_string(name));
            }
    return a;
}

/* ------------------------------------------------------------ training */

/* Mean loss over fixed windows of a stream (no gradient). */
static stetho_status eval_loss(stetho_train_model *m, const tokens *s, int B, int T, int n_batches, double *out) {
    int32_t *in = st_malloc((size_t)B * T * sizeof *in), *tg = st_malloc((size_t)B * T * sizeof *tg);
    if (!in || !tg) {
        st_free(in);
        st_free(tg);
        return st_err(STETHO_ERR_NOMEM, "toy: out of memory");
    }
    double sum = 0;
    int done = 0;
    stetho_status st = STETHO_OK;
    size_t stride = s->n > (size_t)T + 1 ? (s->n - (size_t)T - 1) / ((size_t)n_batches * B) : 0;
    for (int i = 0; i < n_batches && !st && stride; i++) {
        for (int b = 0; b < B; b++) {
            size_t off = ((size_t)i * B + b) * stride;
            for (int t = 0; t < T; t++) {
                in[(size_t)b * T + t] = s->ids[off + t];
                tg[(size_t)b * T + t] = s->ids[off + t + 1];
            }
        }
        float loss;
        if (!(st = stetho_train_forward(m, in, tg, NULL, B, T, &loss))) {
            sum += loss;
            done++;
        }
    }
    st_free(in);
    st_free(tg);
    *out = done ? sum / done : NAN;
    return st;
}

/* Greedy 0-shot accuracy of the model as it is now, on the first probe_limit
 * test problems of each subject, exactly as `stetho eval` would score them:
 * the weights are written (f32) to a scratch directory under logs/ and loaded
 * by the inference engine. One TSV row and one JSON object per probe. */
static stetho_status probe(builder *bd, const stetho_train_model *m, const char *phase, int64_t tokens, FILE *tsv,
                           json_t *probes) {
    char *logs = st_path_join(bd->out, "logs"), *data = st_path_join(bd->out, "data/math");
    char *mdir = logs ? st_path_join(logs, ".probe-model") : NULL, *edir = logs ? st_path_join(logs, ".probe-eval") : NULL;
    stetho_status st = logs && data && mdir && edir ? STETHO_OK : STETHO_ERR_NOMEM;
    stetho_model model;
    bool loaded = false;
    stetho_eval_result res = {0};
    double t0 = now_s();
    if (!st) st_remove_tree(edir);
    if (!st && !(st = stetho_train_save(m, mdir, STETHO_DTYPE_F32)) && !(st = stetho_model_load(&model, mdir))) {
        loaded = true;
        stetho_eval_opts eo;
        stetho_eval_opts_default(&eo);
        eo.tasks = "minerva_math";
        eo.num_fewshot = 0;
        eo.limit = bd->o->probe_limit;
        eo.max_gen_toks = 200;
        eo.batch_size = 16;
        eo.data_dir = data;
        eo.log_samples = false;
        eo.model_args = "toy build probe";
        st = stetho_eval_run(&model, bd->tok, &eo, edir, &res);
    }
    if (!st) {
        uint64_t c = 0, n = 0;
        json_t *subj = json_object();
        fprintf(tsv, "%lld", (long long)tokens);
        for (size_t i = 0; i < res.n_tasks; i++) {
            c += res.tasks[i].n_correct;
            n += res.tasks[i].n;
            double a = res.tasks[i].n ? (double)res.tasks[i].n_correct / (double)res.tasks[i].n : 0;
            fprintf(tsv, "\t%.4f", a);
            json_object_set_new(subj, res.tasks[i].task, json_real(a));
        }
        double acc = n ? (double)c / (double)n : 0;
        fprintf(tsv, "\t%.4f\t%llu\n", acc, (unsigned long long)n);
        fflush(tsv);
        json_array_append_new(probes, json_pack("{s:I, s:f, s:I, s:I, s:o}", "tokens", (json_int_t)tokens, "accuracy",
                                                acc, "correct", (json_int_t)c, "problems", (json_int_t)n,
                                                "subjects", subj));
        say(bd, phase, "probe at %lld tokens: %.1f%% (%llu/%llu) in %.0fs", (long long)tokens, 100 * acc,
            (unsigned long long)c, (unsigned long long)n, now_s() - t0);
    }
    if (loaded) stetho_model_free(&model);
    stetho_eval_result_free(&res);
    if (mdir) st_remove_tree(mdir);
    if (edir) st_remove_tree(edir);
    st_free(logs);
    st_free(data);
    st_free(mdir);
    st_free(edir);
    return st;
}

/* logs/<phase>_probe.tsv with its header. */
static stetho_status probe_log_open(builder *bd, const char *phase, FILE **f, char **path) {
    char name[64];
    snprintf(name, sizeof name, "logs/%s_probe.tsv", phase);
    if (!(*path = st_path_join(bd->out, name))) return STETHO_ERR_NOMEM;
    if (!(*f = fopen(*path, "w"))) return st_err(STETHO_ERR_IO, "cannot write %s: %s", *path, strerror(errno));
    fprintf(*f, "tokens");
    for (int i = 0; i < STETHO_EVAL_N_SUBJECTS; i++) fprintf(*f, "\t%s", STETHO_EVAL_SUBJECTS[i]);
    fprintf(*f, "\taccuracy\tproblems\n");
    return STETHO_OK;
}

static stetho_status run_phase(builder *bd, stetho_train_model *m, const char *name, const stetho_toy_phase *ph,
                               const tokens *stream, const tokens *heldout_math, const tokens *heldout_general,
                               json_t *report) {
    const stetho_toy_opts *o = bd->o;
    int B = o->batch, T = o->seq_len;
    int64_t per_step = (int64_t)B * T;
    int64_t steps = ph->tokens / per_step;
    if (steps < 1) steps = 1;
    if (stream->n < (size_t)T + 2) return st_err(STETHO_ERR_INVALID, "toy: the %s stream is too short", name);
    stetho_train_opt opt;
    stetho_train_opt_default(&opt);
    opt.lr = ph->lr;
    opt.min_lr = ph->min_lr;
    opt.total_steps = steps;
    opt.warmup_steps = (int64_t)(ph->warmup_frac * (double)steps);
    opt.weight_decay = ph->weight_decay;
    opt.freeze_embed_final_norm = ph->freeze_embed_final_norm;
    /* a fresh optimizer for each phase */
    m->step = 0;
    if (m->adam_m) memset(m->adam_m, 0, m->n_params * sizeof *m->adam_m);
    if (m->adam_v) memset(m->adam_v, 0, m->n_params * sizeof *m->adam_v);

    char *logdir = st_path_join(bd->out, "logs");
    char fname[64];
    snprintf(fname, sizeof fname, "%s_loss.tsv", name);
    char *logpath = logdir ? st_path_join(logdir, fname) : NULL;
    int32_t *in = st_malloc((size_t)per_step * sizeof *in), *tg = st_malloc((size_t)per_step * sizeof *tg);
    FILE *log = logpath ? fopen(logpath, "w") : NULL;
    stetho_status st = STETHO_OK;
    if (!logdir || !logpath || !in || !tg) st = st_err(STETHO_ERR_NOMEM, "toy: out of memory");
    else if (!log) st = st_err(STETHO_ERR_IO, "cannot write %s: %s", logpath, strerror(errno));
    if (log) fprintf(log, "step\ttokens\tlr\tloss\tgrad_norm\ttokens_per_s\n");
    /* accuracy probes: logs/<phase>_probe.tsv */
    FILE *ptsv = NULL;
    char *ppath = NULL;
    json_t *probes = json_array();
    if (!st && o->probe_limit > 0) st = probe_log_open(bd, name, &ptsv, &ppath);
    int64_t next_probe = o->probe_every > 0 ? o->probe_every : INT64_MAX;
    double t0 = now_s(), last_report = t0, smooth = NAN, probe_s = 0;
    size_t pos = 0, span = stream->n - 1;
    for (int64_t s = 0; s < steps && !st; s++) {
        for (int b = 0; b < B; b++) {
            if (pos + (size_t)T > span) pos = 0;
            for (int t = 0; t < T; t++) {
                in[(size_t)b * T + t] = stream->ids[pos + t];
                tg[(size_t)b * T + t] = stream->ids[pos + t + 1];
            }
            pos += (size_t)T;
        }
        float loss;
        double gn = 0, lr = stetho_train_lr(&opt, m->step);
        if ((st = stetho_train_forward(m, in, tg, NULL, B, T, &loss)) || (st = stetho_train_backward(m)) ||
            (st = stetho_train_step(m, &opt, &gn)))
            break;
        smooth = isnan(smooth) ? loss : 0.98 * smooth + 0.02 * loss;
        double t = now_s();
        double tps = (double)(s + 1) * per_step / (t - t0 - probe_s);
        if (log && (s % 10 == 0 || s + 1 == steps))
            fprintf(log, "%lld\t%lld\t%.6g\t%.5f\t%.4f\t%.0f\n", (long long)s, (long long)((s + 1) * per_step), lr,
                    loss, gn, tps);
        if (t - last_report > 5 || s + 1 == steps) {
            last_report = t;
            double eta = (double)(steps - s - 1) * per_step / tps;
            say(bd, name, "step %lld/%lld  loss %.3f  lr %.2e  %.0f tok/s  ETA %.0fs", (long long)s + 1,
                (long long)steps, smooth, lr, tps, eta);
        }
        if (ptsv && (s + 1) * per_step >= next_probe && s + 1 < steps) {
            double tp = now_s();
            st = probe(bd, m, name, (s + 1) * per_step, ptsv, probes);
            probe_s += now_s() - tp;
            next_probe += o->probe_every;
        }
    }
    double dt = now_s() - t0 - probe_s, lm = NAN, lg = NAN;
    if (!st && ptsv) st = probe(bd, m, name, steps * per_step, ptsv, probes);
    if (ptsv && fclose(ptsv) && !st) st = st_err(STETHO_ERR_IO, "cannot write %s", ppath);
    st_free(ppath);
    if (log && fclose(log) && !st) st = st_err(STETHO_ERR_IO, "cannot write %s", logpath);
    st_free(in);
    st_free(tg);
    if (!st) st = eval_loss(m, heldout_math, B, T, 8, &lm);
    if (!st) st = eval_loss(m, heldout_general, B, T, 8, &lg);
    if (!st) {
        say(bd, name, "done in %.0fs: held-out loss math %.3f, general %.3f", dt, lm, lg);
        json_object_set_new(report, "steps", json_integer(steps));
        json_object_set_new(report, "tokens", json_integer(steps * per_step));
        json_object_set_new(report, "math_frac", json_real(ph->math_frac));
        json_object_set_new(report, "drill_frac", json_real(ph->drill_frac));
        json_object_set_new(report, "bare_templates", json_real(ph->bare_templates));
        json_object_set_new(report, "bare_share", json_real(ph->bare_share));
        json_object_set_new(report, "bare_template_names", bare_names(ph, !strcmp(name, "base") ? o->seed : o->seed + 1));
        json_object_set_new(report, "lr", json_real(ph->lr));
        json_object_set_new(report, "min_lr", json_real(ph->min_lr));
        json_object_set_new(report, "warmup_steps", json_integer(opt.warmup_steps));
        json_object_set_new(report, "weight_decay", json_real(ph->weight_decay));
        json_object_set_new(report, "freeze_embed_final_norm", json_boolean(ph->freeze_embed_final_norm));
        json_object_set_new(report, "final_train_loss", json_real(smooth));
        json_object_set_new(report, "heldout_loss_math", json_real(lm));
        json_object_set_new(report, "heldout_loss_general", json_real(lg));
        json_object_set_new(report, "seconds", json_real(dt));
        json_object_set_new(report, "tokens_per_s", json_real((double)steps * per_step / dt));
        json_object_set_new(report, "log", json_string(fname));
        if (json_array_size(probes)) {
            json_object_set(report, "probes", probes);
            json_object_set(report, "accuracy",
                            json_object_get(json_array_get(probes, json_array_size(probes) - 1), "accuracy"));
        }
    }
    json_decref(probes);
    st_free(logpath);
    st_free(logdir);
    return st;
}

/* The base phase replaced by an earlier build's base: same tokenizer (byte for
 * byte) and architecture, or an error naming what differs. */
static stetho_status load_base(builder *bd, stetho_train_model *m, const char *tok_dir, json_t *report) {
    const char *from = bd->o->base_from;
    char *a_path = st_path_join(from, "tokenizer.json"), *b_path = st_path_join(tok_dir, "tokenizer.json");
    char *a = NULL, *b = NULL;
    size_t na = 0, nb = 0;
    stetho_status st = a_path && b_path ? STETHO_OK : STETHO_ERR_NOMEM;
    if (!st && !(st = stetho_read_file(a_path, (size_t)1 << 28, &a, &na)) &&
        !(st = stetho_read_file(b_path, (size_t)1 << 28, &b, &nb)) && (na != nb || memcmp(a, b, na)))
        st = st_err(STETHO_ERR_MISMATCH,
                    "%s was trained with another tokenizer than this build's (%s): build with the seed and data of "
                    "the build that made it",
                    a_path, b_path);
    free(a);
    free(b);
    st_free(a_path);
    st_free(b_path);
    if (!st) st = stetho_train_load_params(m, from);
    if (st) return st;
    say(bd, "base", "loaded from %s (base phase skipped)", from);
    json_object_set_new(report, "from", json_string(from));
    if (bd->o->probe_limit > 0) {
        FILE *f = NULL;
        char *path = NULL;
        json_t *probes = json_array();
        st = probe_log_open(bd, "base", &f, &path);
        if (!st) st = probe(bd, m, "base", 0, f, probes);
        if (f && fclose(f) && !st) st = st_err(STETHO_ERR_IO, "cannot write %s", path);
        if (!st) {
            json_object_set(report, "probes", probes);
            json_object_set(report, "accuracy", json_object_get(json_array_get(probes, 0), "accuracy"));
        }
        json_decref(probes);
        st_free(path);
    }
    return st;
}

/* ------------------------------------------------------------ outputs */

static stetho_status save_model(builder *bd, const stetho_train_model *m, const char *name) {
    char *dir = st_path_join(bd->out, name);
    if (!dir) return STETHO_ERR_NOMEM;
    stetho_status st = stetho_train_save(m, dir, bd->o->save_dtype);
    static const char *const files[] = {"tokenizer.json", "tokenizer_config.json"};
    for (size_t i = 0; !st && i < ST_ARRAY_LEN(files); i++) {
        char *src = st_path_join(bd->out, "tokenizer"), *from = src ? st_path_join(src, files[i]) : NULL;
        char *to = st_path_join(dir, files[i]);
        st = from && to ? toy_copy_file(from, to) : STETHO_ERR_NOMEM;
        st_free(src);
        st_free(from);
        st_free(to);
    }
    st_free(dir);
    return st;
}

/* ||tau_l|| / ||theta_l|| per layer over the layer's tensors. */
static json_t *tau_ratio_json(const stetho_train_model *m, const float *base) {
    int L = m->cfg.n_layers;
    json_t *a = json_array();
    for (int l = -1; l < L; l++) {
        double t2 = 0, b2 = 0;
        for (size_t i = 0; i < m->n_tensors; i++) {
            const stetho_train_tensor *t = &m->tensors[i];
            if (t->layer != l) continue;
            for (size_t j = 0; j < t->n; j++) {
                double b = base[t->offset + j], d = m->params[t->offset + j] - b;
                t2 += d * d;
                b2 += b * b;
            }
        }
        json_array_append_new(a, json_pack("{s:o, s:f, s:f, s:f}", "layer", l >= 0 ? json_integer(l) : json_null(),
                                           "tau_norm", sqrt(t2), "theta_norm", sqrt(b2), "ratio",
                                           b2 > 0 ? sqrt(t2 / b2) : 0.0));
    }
    return a;
}

static stetho_status write_world_json(builder *bd) {
    char *path = st_path_join(bd->out, "world.json"), *tmp = path ? st_path_join(bd->out, ".world.json.tmp") : NULL;
    stetho_status st = STETHO_OK;
    if (!tmp) st = STETHO_ERR_NOMEM;
    else if (json_dump_file(bd->world, tmp, JSON_INDENT(1) | JSON_SORT_KEYS) || rename(tmp, path)) {
        remove(tmp);
        st = st_err(STETHO_ERR_IO, "cannot write %s", path);
    }
    st_free(path);
    st_free(tmp);
    return st;
}

/* ------------------------------------------------------------ the build */

stetho_status stetho_toy_build(const char *out_dir, const stetho_toy_opts *o) {
    builder bd = {o, out_dir, json_object(), now_s(), NULL};
    stetho_toy_data_report rep;
    stetho_tokenizer tok = {0};
    bool tok_loaded = false;
    stetho_toy_docs general = {0}, heldout = {0}, prompts = {0}, math = {0}, mtest = {0}, mix = {0}, pool = {0};
    kinds math_kind = {0};
    tokens s_base = {0}, s_ft = {0}, s_hm = {0}, s_hg = {0};
    stetho_train_model m;
    bool model_init = false;
    float *base_params = NULL;
    char *p_tok = NULL, *p_text = NULL, *p_prompts = NULL, *p_train = NULL, *p_test = NULL, *p_held = NULL;
    stetho_status st = STETHO_OK;

    say(&bd, "data", "generating the seven subjects and training the tokenizer");
    if ((st = stetho_toy_write_data(out_dir, o->seed, o->quick, o->general_dir, &rep))) goto done;
    p_tok = st_path_join(out_dir, "tokenizer");
    p_text = st_path_join(out_dir, "data/general/general_text.jsonl");
    p_prompts = st_path_join(out_dir, "data/general/general_prompts.jsonl");
    p_train = st_path_join(out_dir, "data/math/train.jsonl");
    p_test = st_path_join(out_dir, "data/math/test.jsonl");
    p_held = st_path_join(out_dir, "data/general/heldout_text.jsonl");
    if (!p_tok || !p_text || !p_prompts || !p_train || !p_test || !p_held) {
        st = STETHO_ERR_NOMEM;
        goto done;
    }
    {
        char *logs = st_path_join(out_dir, "logs");
        if (!logs || (mkdir(logs, 0755) && errno != EEXIST)) {
            st = logs ? st_err(STETHO_ERR_IO, "cannot create %s: %s", logs, strerror(errno)) : STETHO_ERR_NOMEM;
            st_free(logs);
            goto done;
        }
        st_free(logs);
    }
    if ((st = stetho_tokenizer_load(&tok, p_tok))) goto done;
    tok_loaded = true;
    bd.tok = &tok;
    if (tok.bos_id < 0 || tok.eos_id < 0) {
        st = st_err(STETHO_ERR_FORMAT, "toy: the tokenizer has no BOS/EOS");
        goto done;
    }
    /* general text: the last tenth of the paragraphs is held out (perplexity),
     * the rest and the instruction prompts are training text */
    stetho_toy_docs all = {0};
    if ((st = stetho_toy_docs_load_jsonl(&all, p_text, "text", false))) {
        stetho_toy_docs_free(&all);
        goto done;
    }
    size_t n_held = all.n / 10 > 0 ? all.n / 10 : (all.n > 1 ? 1 : 0);
    for (size_t i = 0; i < all.n && !st; i++)
        st = stetho_toy_docs_add(i < all.n - n_held ? &general : &heldout, all.text[i], all.len[i], false);
    stetho_toy_docs_free(&all);
    if (st || (st = stetho_toy_docs_load_jsonl(&prompts, p_prompts, "text", false))) goto done;
    for (size_t i = 0; i < prompts.n && !st; i++) st = stetho_toy_docs_add(&general, prompts.text[i], prompts.len[i], false);
    if (st) goto done;
    {
        FILE *f = fopen(p_held, "w");
        if (!f) {
            st = st_err(STETHO_ERR_IO, "cannot write %s: %s", p_held, strerror(errno));
            goto done;
        }
        for (size_t i = 0; i < heldout.n; i++) {
            json_t *line = json_pack("{s:s%, s:s}", "text", heldout.text[i], heldout.len[i], "source", "general_text.jsonl (held out)");
            char *txt = json_dumps(line, JSON_COMPACT | JSON_ENSURE_ASCII);
            if (txt) fprintf(f, "%s\n", txt);
            free(txt);
            json_decref(line);
        }
        if (fclose(f)) {
            st = st_err(STETHO_ERR_IO, "cannot write %s", p_held);
            goto done;
        }
    }
    if ((st = load_math(p_train, &math, &math_kind)) || (st = load_math(p_test, &mtest, NULL))) goto done;
    say(&bd, "data", "%zu math train problems, %zu general documents (+%zu held out), vocabulary %d", math.n, general.n,
        heldout.n, tok.vocab_size);

    /* streams */
    double bpt = rep.bytes_per_token > 0 ? rep.bytes_per_token : 3.0;
    size_t drills_base = 0, drills_ft = 0, bare_base = 0, bare_ft = 0;
    if ((st = math_pool(&math, &math_kind, &o->base, o->seed, &pool, &drills_base, &bare_base)) ||
        (st = stetho_toy_mix(&general, &pool, o->base.math_frac, (size_t)((double)o->base.tokens * bpt * 1.05),
                             o->seed, &mix)) ||
        (st = tokenize_docs(&tok, &mix, &s_base)))
        goto done;
    stetho_toy_docs_free(&mix);
    stetho_toy_docs_free(&pool);
    if ((st = math_pool(&math, &math_kind, &o->ft, o->seed + 1, &pool, &drills_ft, &bare_ft)) ||
        (st = stetho_toy_mix(&general, &pool, o->ft.math_frac, (size_t)((double)o->ft.tokens * bpt * 1.05),
                             o->seed + 1, &mix)) ||
        (st = tokenize_docs(&tok, &mix, &s_ft)) || (st = tokenize_docs(&tok, &mtest, &s_hm)) ||
        (st = tokenize_docs(&tok, &heldout, &s_hg)))
        goto done;
    stetho_toy_docs_free(&mix);
    stetho_toy_docs_free(&pool);
    say(&bd, "data", "streams: base %zu tokens, fine-tune %zu tokens; arithmetic drill documents: base %zu, fine-tune %zu",
        s_base.n, s_ft.n, drills_base, drills_ft);
    if (bare_base || bare_ft)
        say(&bd, "data", "answer keys (problems shown with their answer only): base %zu, fine-tune %zu of %zu", bare_base,
            bare_ft, math.n);

    stetho_train_config cfg = o->model;
    cfg.vocab = tok.vocab_size;
    cfg.bos_token_id = tok.bos_id;
    cfg.eos_token_id = tok.eos_id;
    cfg.pad_token_id = tok.pad_id;
    if ((st = stetho_train_model_init(&m, &cfg, o->seed))) goto done;
    model_init = true;
    say(&bd, "base", "%d layers, d_model %d, %zu parameters, batch %d x %d tokens", cfg.n_layers, cfg.hidden,
        m.n_params, o->batch, o->seq_len);
    json_t *jb = json_object(), *jf = json_object();
    json_object_set_new(bd.world, "base", jb);
    json_object_set_new(bd.world, "ft", jf);
    if (o->base_from) {
        if ((st = load_base(&bd, &m, p_tok, jb))) goto done;
    } else if ((st = run_phase(&bd, &m, "base", &o->base, &s_base, &s_hm, &s_hg, jb))) {
        goto done;
    }
    if ((st = save_model(&bd, &m, "base"))) goto done;
    if (!(base_params = st_malloc(m.n_params * sizeof *base_params))) {
        st = STETHO_ERR_NOMEM;
        goto done;
    }
    memcpy(base_params, m.params, m.n_params * sizeof *base_params);
    if ((st = run_phase(&bd, &m, "ft", &o->ft, &s_ft, &s_hm, &s_hg, jf)) || (st = save_model(&bd, &m, "ft"))) goto done;
    json_object_set_new(bd.world, "tau_over_theta", tau_ratio_json(&m, base_params));

    json_object_set_new(bd.world, "seed", json_integer((json_int_t)o->seed));
    json_object_set_new(bd.world, "quick", json_boolean(o->quick));
    json_object_set_new(bd.world, "threads", json_integer(stetho_get_threads()));
    json_object_set_new(bd.world, "model", json_pack("{s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:I}", "n_layers", cfg.n_layers,
                                                     "hidden", cfg.hidden, "intermediate", cfg.intermediate, "n_heads",
                                                     cfg.n_heads, "n_kv_heads", cfg.n_kv_heads, "vocab", cfg.vocab,
                                                     "sliding_window", cfg.sliding_window, "params", (json_int_t)m.n_params));
    json_object_set_new(bd.world, "data", json_pack("{s:I, s:I, s:I, s:I, s:I, s:f}", "math_train_problems", (json_int_t)math.n,
                                                    "math_test_problems", (json_int_t)mtest.n, "general_docs",
                                                    (json_int_t)general.n, "heldout_docs", (json_int_t)heldout.n,
                                                    "math_train_tokens", (json_int_t)rep.math_train_tokens,
                                                    "bytes_per_token", bpt));
    json_object_set_new(bd.world, "batch", json_integer(o->batch));
    json_object_set_new(bd.world, "seq_len", json_integer(o->seq_len));
    json_object_set_new(bd.world, "save_dtype", json_string(stetho_dtype_name(o->save_dtype)));
    json_object_set_new(bd.world, "seconds", json_real(now_s() - bd.t0));
    if ((st = write_world_json(&bd))) goto done;
    if (o->sae_width > 0) {
        double ts = now_s();
        if ((st = stetho_toy_saes(out_dir, o))) goto done;
        json_object_set_new(bd.world, "sae", json_pack("{s:i, s:i, s:I, s:f}", "width", o->sae_width, "k", o->sae_k,
                                                       "tokens", (json_int_t)o->sae_tokens, "seconds", now_s() - ts));
        json_object_set_new(bd.world, "seconds", json_real(now_s() - bd.t0));
        st = write_world_json(&bd);
    }

done:
    if (model_init) stetho_train_model_free(&m);
    if (tok_loaded) stetho_tokenizer_free(&tok);
    stetho_toy_docs_free(&general);
    stetho_toy_docs_free(&heldout);
    stetho_toy_docs_free(&prompts);
    stetho_toy_docs_free(&math);
    st_free(math_kind.v);
    stetho_toy_docs_free(&mtest);
    stetho_toy_docs_free(&mix);
    stetho_toy_docs_free(&pool);
    st_free(s_base.ids);
    st_free(s_ft.ids);
    st_free(s_hm.ids);
    st_free(s_hg.ids);
    st_free(base_params);
    st_free(p_tok);
    st_free(p_text);
    st_free(p_prompts);
    st_free(p_train);
    st_free(p_test);
    st_free(p_held);
    json_decref(bd.world);
    return st;
}
