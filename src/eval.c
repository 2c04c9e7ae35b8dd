/* Minerva Math evaluation (see stetho/eval.h): documents, prompts, batched
 * greedy generation, grading, resumable samples and lm-eval results. */
#include "stetho/eval.h"

#include "stetho/grade.h"
#include "stetho/jsonl.h"
#include "stetho/results.h"
#include "internal.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <time.h>

const char *const STETHO_EVAL_TASKS[STETHO_EVAL_N_SUBJECTS] = {
    "minerva_math_algebra",  "minerva_math_counting_and_prob", "minerva_math_geometry", "minerva_math_intermediate_algebra",
    "minerva_math_num_theory", "minerva_math_prealgebra",       "minerva_math_precalc"};
const char *const STETHO_EVAL_SUBJECTS[STETHO_EVAL_N_SUBJECTS] = {
    "algebra", "counting_and_probability", "geometry", "intermediate_algebra", "number_theory", "prealgebra", "precalculus"};

#define MATH500 "minerva_math500"

void stetho_eval_opts_default(stetho_eval_opts *o) {
    memset(o, 0, sizeof *o);
    o->tasks = "minerva_math";
    o->num_fewshot = 4;
    o->limit = -1;
    o->max_gen_toks = 256;
    o->batch_size = 8;
    o->log_samples = true;
}

void stetho_eval_result_free(stetho_eval_result *r) {
    if (!r) return;
    st_free(r->tasks);
    free(r->results_path);
    memset(r, 0, sizeof *r);
}

stetho_status stetho_eval_prompt(const char *const *shot_problems, const char *const *shot_solutions, int n_shots,
                                 const char *problem, char **out) {
    st_buf b;
    st_buf_init(&b);
    for (int i = 0; i < n_shots; i++)
        st_buf_printf(&b, "Problem:\n%s\n\nSolution: %s\n\n", shot_problems[i], shot_solutions[i]);
    st_buf_printf(&b, "Problem:\n%s\n\nSolution:", problem);
    if (b.failed || !b.data) {
        st_buf_free(&b);
        return st_err(STETHO_ERR_NOMEM, "out of memory building a prompt");
    }
    *out = b.data;
    return STETHO_OK;
}

/* ------------------------------------------------------------ documents */

typedef struct {
    char *problem, *solution, *level, *type, *answer; /* answer: MATH-500's own field, else NULL */
} doc;

typedef struct {
    char name[64];
    const char *subject;  /* NULL: MATH-500 (every subject) */
    doc *docs;
    size_t n, cap;
} task;

static void tasks_free(task *t, size_t n) {
    for (size_t i = 0; t && i < n; i++) {
        for (size_t j = 0; j < t[i].n; j++) {
            doc *d = &t[i].docs[j];
            st_free(d->problem), st_free(d->solution), st_free(d->level), st_free(d->type), st_free(d->answer);
        }
        st_free(t[i].docs);
    }
    st_free(t);
}

static char *dup_field(json_t *o, const char *k) {
    const char *s = json_string_value(json_object_get(o, k));
    return s ? st_strdup(s) : NULL;
}

/* Parse the task list: the group, MATH-500, or subtask names. */
static stetho_status parse_tasks(const char *spec, task **out, size_t *n_out) {
    task *t = st_calloc(STETHO_EVAL_N_SUBJECTS, sizeof *t);
    if (!t) return STETHO_ERR_NOMEM;
    size_t n = 0;
    const char *p = spec;
    while (p && *p) {
        size_t len = strcspn(p, ",");
        char name[64];
        if (len == 0 || len >= sizeof name) {
            tasks_free(t, n);
            return st_err(STETHO_ERR_INVALID, "bad task list '%s'", spec);
        }
        memcpy(name, p, len);
        name[len] = '\0';
        p += len + (p[len] == ',');
        if (!strcmp(name, "minerva_math") || !strcmp(name, MATH500)) {
            if (n || *p) {
                tasks_free(t, n);
                return st_err(STETHO_ERR_INVALID, "'%s' is a whole task set: give it alone", name);
            }
            if (!strcmp(name, MATH500)) {
                snprintf(t[0].name, sizeof t[0].name, "%s", MATH500);
                n = 1;
            } else
                for (int s = 0; s < STETHO_EVAL_N_SUBJECTS; s++, n++) {
                    snprintf(t[n].name, sizeof t[n].name, "%s", STETHO_EVAL_TASKS[s]);
                    t[n].subject = STETHO_EVAL_SUBJECTS[s];
                }
            break;
        }
        int s = 0;
        while (s < STETHO_EVAL_N_SUBJECTS && strcmp(name, STETHO_EVAL_TASKS[s])) s++;
        if (s == STETHO_EVAL_N_SUBJECTS) {
            tasks_free(t, n);
            return st_err(STETHO_ERR_INVALID,
                          "unknown task '%s'; valid: minerva_math, minerva_math500, minerva_math_algebra, "
                          "minerva_math_counting_and_prob, minerva_math_geometry, minerva_math_intermediate_algebra, "
                          "minerva_math_num_theory, minerva_math_prealgebra, minerva_math_precalc",
                          name);
        }
        for (size_t i = 0; i < n; i++)
            if (t[i].subject == STETHO_EVAL_SUBJECTS[s]) {
                tasks_free(t, n);
                return st_err(STETHO_ERR_INVALID, "task '%s' given twice", name);
            }
        snprintf(t[n].name, sizeof t[n].name, "%s", name);
        t[n++].subject = STETHO_EVAL_SUBJECTS[s];
    }
    if (!n) {
        tasks_free(t, 0);
        return st_err(STETHO_ERR_INVALID, "no tasks given");
    }
    *out = t;
    *n_out = n;
    return STETHO_OK;
}

stetho_status stetho_eval_check_tasks(const char *tasks) {
    task *t = NULL;
    size_t n = 0;
    stetho_status st = parse_tasks(tasks, &t, &n);
    if (!st) tasks_free(t, n);
    return st;
}

static stetho_status add_doc(task *t, json_t *o, const char *path, size_t line) {
    if (t->n == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 256;
        doc *d = st_realloc(t->docs, cap * sizeof *d);
        if (!d) return STETHO_ERR_NOMEM;
        t->docs = d;
        t->cap = cap;
    }
    doc *d = &t->docs[t->n];
    memset(d, 0, sizeof *d);
    d->problem = dup_field(o, "problem");
    d->solution = dup_field(o, "solution");
    d->level = dup_field(o, "level");
    d->type = dup_field(o, "type");
    d->answer = dup_field(o, "answer");
    t->n++;
    if (!d->problem || !d->solution)
        return st_err(STETHO_ERR_FORMAT, "%s:%zu: needs string fields problem and solution", path, line);
    return STETHO_OK;
}

/* Documents of every task, in file order (= lm-eval's order for test.jsonl). */
static stetho_status load_docs(const char *data_dir, task *t, size_t n) {
    bool m500 = n == 1 && !t[0].subject;
    char *path = st_path_join(data_dir, m500 ? "math500_test.jsonl" : "test.jsonl");
    if (!path) return STETHO_ERR_NOMEM;
    stetho_jsonl_reader r;
    stetho_status st = stetho_jsonl_open(&r, path);
    if (st) {
        st_free(path);
        return st;
    }
    bool got;
    while (!(st = stetho_jsonl_next(&r, &got)) && got) {
        if (m500) {
            if ((st = add_doc(&t[0], r.obj, path, r.line_no))) break;
            continue;
        }
        const char *subject = json_string_value(json_object_get(r.obj, "subject"));
        if (!subject) {
            st = st_err(STETHO_ERR_FORMAT, "%s:%zu: no \"subject\" field", path, r.line_no);
            break;
        }
        for (size_t i = 0; i < n; i++)
            if (!strcmp(subject, t[i].subject) && (st = add_doc(&t[i], r.obj, path, r.line_no))) break;
        if (st) break;
    }
    stetho_jsonl_close(&r);
    for (size_t i = 0; !st && i < n; i++)
        if (!t[i].n) st = st_err(STETHO_ERR_FORMAT, "%s has no problems of %s", path, t[i].name);
    st_free(path);
    return st;
}

typedef struct {
    char *problem[4], *solution[4];
    int n;
} shots;

static void shots_free(shots *s) {
    for (int i = 0; i < s->n; i++) st_free(s->problem[i]), st_free(s->solution[i]);
    s->n = 0;
}

static stetho_status load_shots(const char *data_dir, int want, shots *s) {
    memset(s, 0, sizeof *s);
    if (want == 0) return STETHO_OK;
    char *path = st_path_join(data_dir, "minerva_fewshot.json");
    if (!path) return STETHO_ERR_NOMEM;
    char *text = NULL;
    size_t len = 0;
    stetho_status st = stetho_read_file(path, (size_t)1 << 24, &text, &len);
    json_t *root = st ? NULL : json_loadb(text, len, 0, NULL);
    free(text);
    if (!st && !json_is_array(root)) st = st_err(STETHO_ERR_FORMAT, "%s: expected a JSON array of examples", path);
    for (size_t i = 0; !st && i < (size_t)want; i++) {
        json_t *e = json_array_get(root, i);
        const char *p = json_string_value(json_object_get(e, "problem"));
        const char *sol = json_string_value(json_object_get(e, "solution"));
        if (!p || !sol) {
            st = st_err(STETHO_ERR_FORMAT, "%s: example %zu needs problem and solution (there are %zu examples)", path,
                        i, json_array_size(root));
            break;
        }
        s->problem[s->n] = st_strdup(p);
        s->solution[s->n] = st_strdup(sol);
        s->n++;
        if (!s->problem[s->n - 1] || !s->solution[s->n - 1]) st = STETHO_ERR_NOMEM;
    }
    json_decref(root);
    st_free(path);
    if (st) shots_free(s);
    return st;
}

/* ------------------------------------------------------------ grading */

typedef struct {
    char *prompt;      /* the text given to the model (chat-rendered when asked) */
    int32_t *ids;
    int n_ids;
    char *generation;  /* NULL until generated */
    char *extracted, *normalized, *gold;
    bool correct, done;
} item;

static void item_free(item *it) {
    free(it->prompt);
    free(it->ids);
    free(it->generation);
    free(it->extracted);
    free(it->normalized);
    free(it->gold);
    memset(it, 0, sizeof *it);
}

/* lm-eval's process_results with stetho's equivalence check: the same rule as
 * `stetho grade` (stetho/grade.h). An explicit answer (MATH-500) wins over the
 * solution's last box. */
static stetho_status grade(const doc *d, item *it) {
    stetho_grade_result g;
    stetho_status st = stetho_grade_generation(it->generation, d->solution, d->answer, &g);
    if (st) return st;
    free(it->gold), free(it->extracted), free(it->normalized);
    it->gold = g.gold, it->extracted = g.extracted, it->normalized = g.normalized;
    it->correct = g.correct;
    return STETHO_OK;
}

/* ------------------------------------------------------------ resuming */

/* Resuming must never mix generations of different runs, so a partial file
 * starts with a header naming everything its generations depend on besides
 * the prompt: the task, the model's content and the decoding settings. Every
 * line then carries its prompt and a hash of the prompt's token ids (which
 * catches another tokenizer). --limit and --batch-size are not in it: a rerun
 * with a larger limit reuses what is there, and batching does not change what
 * greedy decoding asks for. */
#define PARTIAL_FORMAT 1

/* xxHash64's constants and round; any good 64-bit mix would do. */
#define P1 0x9E3779B185EBCA87ULL
#define P2 0xC2B2AE3D27D4EB4FULL
#define P3 0x165667B19E3779F9ULL

static uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

static uint64_t fmix64(uint64_t h) {
    h ^= h >> 33;
    h *= P2;
    h ^= h >> 29;
    h *= P3;
    h ^= h >> 32;
    return h;
}

/* A 64-bit non-cryptographic hash of n bytes: four independent lanes, so it
 * runs near memory speed. It tells checkpoints apart; it resists no forgery. */
static uint64_t hash_bytes(const void *data, size_t n, uint64_t seed) {
    const unsigned char *p = data;
    uint64_t v[4] = {seed + P1 + P2, seed + P2, seed, seed - P1};
    size_t i = 0;
    for (; i + 32 <= n; i += 32)
        for (int k = 0; k < 4; k++) {
            uint64_t w;
            memcpy(&w, p + i + 8 * k, 8);
            v[k] = rotl64(v[k] + w * P2, 31) * P1;
        }
    uint64_t h = rotl64(v[0], 1) + rotl64(v[1], 7) + rotl64(v[2], 12) + rotl64(v[3], 18) + (uint64_t)n;
    for (; i < n; i++) h = rotl64(h ^ (p[i] * P3), 11) * P1;
    return fmix64(h);
}

#define FP_CHUNK ((size_t)64 << 20) /* bytes hashed per task of the parallel loop */

typedef struct {
    const unsigned char *p;
    size_t n;
    uint64_t h;
} fp_chunk;

/* The model's identity: config.json and every tensor's name, dtype, shape and
 * bytes, in name order. It hashes the loaded mapping, so what is compared is
 * what the forward pass computes with, whatever the files are called or when
 * they were written (file names, sizes and times would miss an edit written
 * over a checkpoint in place, and match two copies made at different times
 * never). Cost: one parallel pass over the weights, which generation reads
 * anyway. */
static stetho_status model_fingerprint(const stetho_model *m, char out[17]) {
    const stetho_checkpoint *c = &m->ckpt;
    size_t n_chunks = 0;
    for (size_t i = 0; i < c->n_tensors; i++) n_chunks += (c->sorted[i]->nbytes + FP_CHUNK - 1) / FP_CHUNK;
    fp_chunk *ch = st_calloc(n_chunks ? n_chunks : 1, sizeof *ch);
    if (!ch) return STETHO_ERR_NOMEM;
    size_t k = 0;
    for (size_t i = 0; i < c->n_tensors; i++) {
        const stetho_tensor *t = c->sorted[i];
        for (uint64_t off = 0; off < t->nbytes; off += FP_CHUNK, k++) {
            ch[k].p = (const unsigned char *)t->data + off;
            ch[k].n = t->nbytes - off < FP_CHUNK ? (size_t)(t->nbytes - off) : FP_CHUNK;
        }
    }
    long nk = (long)n_chunks;
#pragma omp parallel for schedule(dynamic, 1)
    for (long j = 0; j < nk; j++) ch[j].h = hash_bytes(ch[j].p, ch[j].n, (uint64_t)j);
    uint64_t h = c->config_json ? hash_bytes(c->config_json, c->config_json_len, 1) : 0;
    k = 0;
    for (size_t i = 0; i < c->n_tensors; i++) {
        const stetho_tensor *t = c->sorted[i];
        uint64_t meta[2 + STETHO_MAX_DIMS] = {(uint64_t)t->dtype, (uint64_t)t->ndim};
        for (int d = 0; d < t->ndim && d < STETHO_MAX_DIMS; d++) meta[2 + d] = t->shape[d];
        h = hash_bytes(t->name, strlen(t->name), h);
        h = hash_bytes(meta, sizeof meta, h);
        for (uint64_t off = 0; off < t->nbytes; off += FP_CHUNK, k++) h = fmix64(h ^ ch[k].h) + P1;
    }
    st_free(ch);
    snprintf(out, 17, "%016" PRIx64, h);
    return STETHO_OK;
}

static void ids_hash(const item *it, char out[17]) {
    snprintf(out, 17, "%016" PRIx64, hash_bytes(it->ids, (size_t)it->n_ids * sizeof *it->ids, 2));
}

static char *partial_path(const char *dir, const char *task) {
    char name[128];
    snprintf(name, sizeof name, ".samples_%s.partial.jsonl", task);
    return st_path_join(dir, name);
}

/* The header this run writes and expects. */
static json_t *partial_header(const char *task, const char *model_fp, const stetho_eval_opts *o,
                              const stetho_gen_kwargs *gk) {
    json_t *until = json_array();
    for (size_t i = 0; until && i < gk->n_until; i++) json_array_append_new(until, json_string(gk->until[i]));
    json_t *h = json_pack("{s:i, s:s, s:s, s:i, s:i, s:b, s:o, s:b, s:f}", "stetho_eval_partial", PARTIAL_FORMAT,
                          "task", task, "model", model_fp, "num_fewshot", o->num_fewshot, "max_gen_toks",
                          o->max_gen_toks, "chat", o->chat, "until", until, "do_sample", gk->do_sample, "temperature",
                          gk->temperature);
    /* bf16 compute gives other generations: never mixed with f32 ones (the
     * key is absent in f32, so files from before the setting still resume) */
    if (h && stetho_get_compute() != STETHO_COMPUTE_F32)
        json_object_set_new(h, "compute", json_string(stetho_compute_name(stetho_get_compute())));
    return h;
}

/* "model (was X, now Y), max_gen_toks (was 32, now 256)" for the keys of want
 * that got lacks or holds otherwise. */
static void header_diff(const json_t *want, const json_t *got, st_buf *b) {
    const char *key;
    json_t *w;
    json_object_foreach((json_t *)want, key, w) {
        json_t *g = json_object_get(got, key);
        if (g && json_equal(w, g)) continue;
        char *ws = json_dumps(w, JSON_COMPACT | JSON_ENCODE_ANY);
        char *gs = g ? json_dumps(g, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
        st_buf_printf(b, "%s%s (was %s, now %s)", b->len ? ", " : "", key, gs ? gs : "absent", ws ? ws : "?");
        free(ws);
        free(gs);
    }
    json_object_foreach((json_t *)got, key, w) { /* keys only the file has (compute: bf16) */
        if (json_object_get(want, key)) continue;
        char *gs = json_dumps(w, JSON_COMPACT | JSON_ENCODE_ANY);
        st_buf_printf(b, "%s%s (was %s, now absent)", b->len ? ", " : "", key, gs ? gs : "?");
        free(gs);
    }
}

typedef struct {
    size_t reused, stale; /* lines taken; lines whose doc_id or prompt did not match */
    bool discarded;       /* the file was of another run (or unreadable) */
    char why[512];
} partial_load;

/* Reuse generations of an interrupted run of this very run: same header, same
 * prompt and prompt ids. A file with another header is discarded whole. */
static stetho_status load_partial(const char *path, const json_t *header, item *items, size_t n, partial_load *pl) {
    memset(pl, 0, sizeof *pl);
    struct stat sb;
    if (stat(path, &sb)) return STETHO_OK;
    stetho_jsonl_reader r;
    stetho_status st = stetho_jsonl_open(&r, path);
    if (st) return st;
    bool got = false;
    st = stetho_jsonl_next(&r, &got);
    if (st == STETHO_ERR_FORMAT || !got || !json_object_get(r.obj, "stetho_eval_partial")) {
        stetho_clear_error();
        st = STETHO_OK;
        pl->discarded = got || sb.st_size > 0;
        snprintf(pl->why, sizeof pl->why, "it has no settings header (an older stetho wrote it, or it was cut short)");
        got = false;
    } else if (!st && !json_equal(r.obj, (json_t *)header)) {
        st_buf d;
        st_buf_init(&d);
        header_diff(header, r.obj, &d);
        pl->discarded = true;
        snprintf(pl->why, sizeof pl->why, "it was made with other settings: %s", d.data && !d.failed ? d.data : "?");
        st_buf_free(&d);
        got = false;
    }
    while (!st && got && !(st = stetho_jsonl_next(&r, &got)) && got) {
        json_t *id = json_object_get(r.obj, "doc_id");
        const char *prompt = json_string_value(json_object_get(r.obj, "prompt"));
        const char *ids = json_string_value(json_object_get(r.obj, "prompt_ids"));
        const char *gen = json_string_value(json_object_get(r.obj, "generation"));
        if (!json_is_integer(id) || !prompt || !ids || !gen) continue; /* a line cut by the interruption */
        json_int_t i = json_integer_value(id);
        char want_ids[17] = "";
        if (i >= 0 && (size_t)i < n) ids_hash(&items[i], want_ids);
        if (i < 0 || (size_t)i >= n || items[i].generation || strcmp(items[i].prompt, prompt) ||
            strcmp(want_ids, ids)) {
            /* a line beyond --limit is not wanted now, but it is no sign of another run */
            pl->stale += i >= 0 && (size_t)i < n;
            continue;
        }
        if (!(items[i].generation = st_strdup(gen))) {
            st = STETHO_ERR_NOMEM;
            break;
        }
        pl->reused++;
    }
    stetho_jsonl_close(&r);
    if (st == STETHO_ERR_FORMAT) { /* a torn last line: keep what was read */
        stetho_clear_error();
        st = STETHO_OK;
    }
    return st;
}

static stetho_status write_line(FILE *f, const char *path, json_t *o) {
    errno = 0;
    char *text = o ? json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII | JSON_PRESERVE_ORDER) : NULL;
    json_decref(o);
    if (!text) return st_err(STETHO_ERR_NOMEM, "out of memory");
    bool ok = !st_fault_write_fires() && fprintf(f, "%s\n", text) > 0 && fflush(f) == 0;
    free(text);
    return ok ? STETHO_OK : st_err(STETHO_ERR_IO, "%s: write failed: %s", path, strerror(errno ? errno : ENOSPC));
}

static stetho_status append_partial(FILE *f, const char *path, size_t doc_id, const item *it) {
    char ids[17];
    ids_hash(it, ids);
    return write_line(f, path,
                      json_pack("{s:I, s:s, s:s, s:s}", "doc_id", (json_int_t)doc_id, "prompt", it->prompt,
                                "prompt_ids", ids, "generation", it->generation));
}

/* ------------------------------------------------------------ one task */

typedef struct {
    const stetho_eval_opts *o;
    const task *t;
    item *items;
    size_t *index;     /* generation slot -> doc index */
    FILE *partial;
    const char *partial_path;
    size_t done, total, correct;
    double t0;
    stetho_status err;
} run_ctx;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void on_done(void *user, size_t seq, const stetho_gen_result *r) {
    run_ctx *c = user;
    if (c->err) return;
    size_t i = c->index[seq];
    item *it = &c->items[i];
    if (!(it->generation = st_strdup(r->text ? r->text : ""))) {
        c->err = STETHO_ERR_NOMEM;
        return;
    }
    if ((c->err = append_partial(c->partial, c->partial_path, i, it))) return;
    if ((c->err = grade(&c->t->docs[i], it))) return;
    it->done = true;
    c->done++;
    c->correct += it->correct;
    if (c->o->progress) c->o->progress(c->o->user, c->t->name, c->done, c->total, c->correct, now_s() - c->t0);
}

static void notice(const stetho_eval_opts *o, const char *task, const char *fmt, ...) ST_PRINTF(3, 4);
static void notice(const stetho_eval_opts *o, const char *task, const char *fmt, ...) {
    if (!o->notice) return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    o->notice(o->user, task, msg);
}

/* Start the partial file afresh with the header and the reused lines, written
 * under a temporary name and renamed, so an interruption now loses nothing
 * already generated; new lines are appended to the renamed file. */
static stetho_status rewrite_partial(const char *ppath, json_t *header, const item *items, size_t n, FILE **out) {
    *out = NULL;
    size_t len = strlen(ppath) + 5;
    char *tmp = st_malloc(len);
    if (!tmp) return STETHO_ERR_NOMEM;
    snprintf(tmp, len, "%s.tmp", ppath);
    FILE *f = fopen(tmp, "wb");
    stetho_status st = f ? STETHO_OK : st_err(STETHO_ERR_IO, "cannot write %s: %s", tmp, strerror(errno));
    if (!st) st = write_line(f, tmp, json_incref(header));
    for (size_t i = 0; !st && i < n; i++)
        if (items[i].generation) st = append_partial(f, tmp, i, &items[i]);
    if (!st && rename(tmp, ppath))
        st = st_err(STETHO_ERR_IO, "cannot rename %s to %s: %s", tmp, ppath, strerror(errno));
    if (st && f) {
        fclose(f);
        remove(tmp);
        f = NULL;
    }
    st_free(tmp);
    *out = f;
    return st;
}

static stetho_status run_task(stetho_model *m, const stetho_tokenizer *tok, const stetho_eval_opts *o, const task *t,
                              const shots *sh, const char *out_dir, const char *timestamp,
                              const stetho_gen_kwargs *gk, const char *model_fp, stetho_eval_task_result *res) {
    size_t n = o->limit >= 0 && (size_t)o->limit < t->n ? (size_t)o->limit : t->n;
    item *items = st_calloc(n ? n : 1, sizeof *items);
    size_t *index = st_malloc((n ? n : 1) * sizeof *index);
    const int32_t **prompts = st_malloc((n ? n : 1) * sizeof *prompts);
    int *lens = st_malloc((n ? n : 1) * sizeof *lens);
    char *ppath = partial_path(out_dir, t->name);
    run_ctx c = {o, t, items, index, NULL, ppath, 0, n, 0, now_s(), STETHO_OK};
    stetho_status st = items && index && prompts && lens && ppath ? STETHO_OK : STETHO_ERR_NOMEM;
    for (size_t i = 0; !st && i < n; i++) {
        char *text = NULL;
        st = stetho_eval_prompt((const char *const *)sh->problem, (const char *const *)sh->solution, sh->n,
                                t->docs[i].problem, &text);
        if (!st && o->chat) {
            char *chat = NULL;
            st = stetho_chat_render(m, tok, text, &chat);
            free(text);
            text = chat;
        }
        if (st) break;
        items[i].prompt = text;
        size_t len = 0;
        /* a chat rendering carries its own BOS */
        if ((st = stetho_tokenizer_encode(tok, text, strlen(text), !o->chat, &items[i].ids, &len))) break;
        items[i].n_ids = (int)len;
    }
    partial_load pl;
    memset(&pl, 0, sizeof pl);
    json_t *header = st ? NULL : partial_header(t->name, model_fp, o, gk);
    if (!st && !header) st = st_err(STETHO_ERR_NOMEM, "out of memory");
    if (!st) st = load_partial(ppath, header, items, n, &pl);
    if (!st && pl.discarded)
        notice(o, t->name, "not resuming from %s: %s; generating every problem afresh", ppath, pl.why);
    else if (!st && (pl.reused || pl.stale))
        notice(o, t->name, "resuming from %s: %zu of %zu generations reused%s", ppath, pl.reused, n,
               pl.stale ? " (lines with other prompts dropped)" : "");
    if (!st) st = rewrite_partial(ppath, header, items, n, &c.partial);
    json_decref(header);
    size_t todo = 0;
    for (size_t i = 0; !st && i < n; i++) {
        if (items[i].generation) {
            if (!(st = grade(&t->docs[i], &items[i]))) {
                items[i].done = true;
                c.done++;
                c.correct += items[i].correct;
            }
        } else {
            index[todo] = i;
            prompts[todo] = items[i].ids;
            lens[todo++] = items[i].n_ids;
        }
    }
    if (!st && o->progress) o->progress(o->user, t->name, c.done, n, c.correct, 0);
    if (!st && todo) {
        stetho_gen_opts go;
        stetho_gen_opts_default(&go);
        static const char *const until[] = {"Problem:"};
        go.max_new_tokens = o->max_gen_toks;
        go.batch_size = o->batch_size;
        go.stop = until;
        go.n_stop = 1;
        stetho_gen_result *gr = st_calloc(todo, sizeof *gr);
        if (!gr) st = STETHO_ERR_NOMEM;
        else {
            st = stetho_generate(m, tok, prompts, lens, todo, &go, gr, NULL, on_done, &c);
            if (!st) st = c.err;
            for (size_t i = 0; i < todo; i++) stetho_gen_result_free(&gr[i]);
            st_free(gr);
        }
    }
    if (c.partial && fclose(c.partial) && !st) st = st_err(STETHO_ERR_IO, "cannot write %s", ppath);
    if (!st && o->log_samples) {
        stetho_samples_writer w;
        memset(&w, 0, sizeof w);
        st = stetho_samples_writer_open(&w, out_dir, t->name, timestamp, gk);
        for (size_t i = 0; !st && i < n; i++) {
            const doc *d = &t->docs[i];
            stetho_sample s = {.doc_id = (int64_t)i, .problem = d->problem, .level = d->level, .type = d->type,
                               .solution = d->solution, .target = items[i].gold, .prompt = items[i].prompt,
                               .generation = items[i].generation, .extracted = items[i].extracted,
                               .normalized = items[i].normalized, .gold = items[i].gold, .correct = items[i].correct};
            st = stetho_samples_writer_add(&w, &s);
        }
        stetho_status cs = stetho_samples_writer_close(&w);
        if (!st) st = cs;
    }
    if (!st) {
        snprintf(res->task, sizeof res->task, "%s", t->name);
        res->n = n;
        res->n_original = t->n;
        res->n_correct = c.correct;
        res->n_reused = pl.reused;
        res->partial_discarded = pl.discarded;
    }
    for (size_t i = 0; items && i < n; i++) item_free(&items[i]);
    st_free(items);
    st_free(index);
    st_free(prompts);
    st_free(lens);
    st_free(ppath);
    return st;
}

/* ------------------------------------------------------------ the run */

static stetho_status mkdirs(const char *path) {
    char *p = st_strdup(path);
    if (!p) return STETHO_ERR_NOMEM;
    stetho_status st = STETHO_OK;
    for (char *s = p + 1; !st; s++) {
        bool end = !*s;
        if (*s != '/' && !end) continue;
        *s = '\0';
        if (mkdir(p, 0755) && errno != EEXIST) st = st_err(STETHO_ERR_IO, "cannot create %s: %s", p, strerror(errno));
        if (end) break;
        *s = '/';
    }
    st_free(p);
    return st;
}

stetho_status stetho_eval_run(stetho_model *m, const stetho_tokenizer *tok, const stetho_eval_opts *o,
                              const char *output_dir, stetho_eval_result *out) {
    memset(out, 0, sizeof *out);
    if (o->num_fewshot < 0 || o->num_fewshot > 4)
        return st_err(STETHO_ERR_INVALID, "minerva_math has 4 fixed examples: --num-fewshot must be 0-4, not %d",
                      o->num_fewshot);
    if (o->max_gen_toks <= 0) return st_err(STETHO_ERR_INVALID, "max_gen_toks must be positive");
    const char *data = o->data_dir ? o->data_dir : "../shared/data/math";
    task *t = NULL;
    size_t n = 0;
    shots sh;
    memset(&sh, 0, sizeof sh);
    char ts[64] = "";
    stetho_status st = parse_tasks(o->tasks, &t, &n);
    if (st) return st;
    struct stat od;
    bool made_dir = stat(output_dir, &od) != 0;
    if ((st = load_docs(data, t, n)) || (st = load_shots(data, o->num_fewshot, &sh)) || (st = mkdirs(output_dir))) {
        if (st == STETHO_ERR_IO && !o->data_dir) st = st_err_context(st, "no --data DIR given and ../shared/data/math");
        goto done;
    }
    char fp[17];
    if ((st = model_fingerprint(m, fp))) goto done;
    stetho_results_timestamp(ts, sizeof ts);
    static const char *const until[] = {"Problem:"};
    stetho_gen_kwargs gk = {until, 1, o->max_gen_toks, false, 0.0};
    if (!(out->tasks = st_calloc(n, sizeof *out->tasks))) {
        st = STETHO_ERR_NOMEM;
        goto done;
    }
    for (size_t i = 0; i < n && !st; i++) {
        st = run_task(m, tok, o, &t[i], &sh, output_dir, ts, &gk, fp, &out->tasks[i]);
        if (st) st = st_err_context(st, "%s", t[i].name);
        else out->n_tasks++;
    }
    if (!st) {
        stetho_results_task_spec *spec = st_calloc(n, sizeof *spec);
        if (!spec) st = STETHO_ERR_NOMEM;
        for (size_t i = 0; spec && i < n; i++)
            spec[i] = (stetho_results_task_spec){out->tasks[i].task, out->tasks[i].n_correct, out->tasks[i].n,
                                                 out->tasks[i].n_original, o->num_fewshot, 1.0};
        bool group = n == STETHO_EVAL_N_SUBJECTS && t[0].subject;
        stetho_results_spec rs = {spec, n, group ? "minerva_math" : NULL, "stetho", o->model_args, o->batch_size,
                                  o->limit, &gk, ts};
        if (spec) st = stetho_results_write(output_dir, &rs, &out->results_path);
        st_free(spec);
    }
    if (!st) /* finished: the partial files have served their purpose */
        for (size_t i = 0; i < n; i++) {
            char *pp = partial_path(output_dir, t[i].name);
            if (pp) remove(pp);
            st_free(pp);
        }
done:
    if (st && ts[0]) {
        /* a failed run takes back the samples files it finished (results are
         * all or nothing); the hidden partial files stay, so a rerun resumes */
        for (size_t i = 0; i < n; i++) {
            st_buf pb;
            st_buf_init(&pb);
            if (st_buf_printf(&pb, "%s/samples_%s_%s.jsonl", output_dir, t[i].name, ts)) remove(pb.data);
            st_buf_free(&pb);
        }
    }
    if (st && made_dir) rmdir(output_dir); /* only when nothing is left in it */
    if (st) stetho_eval_result_free(out);
    shots_free(&sh);
    tasks_free(t, n);
    return st;
}
