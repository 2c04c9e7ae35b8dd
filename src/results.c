/* lm-eval-shaped results and samples files (write and read), and the comparison of
 * two evaluation runs that `stetho compare` prints. */
#include "stetho/results.h"
#include "internal.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>

/* ---- writing ---------------------------------------------------------------- */

void stetho_results_timestamp(char *buf, size_t size) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    time_t t = tv.tv_sec;
    localtime_r(&t, &tm);
    char base[32];
    strftime(base, sizeof base, "%Y-%m-%dT%H-%M-%S", &tm);
    snprintf(buf, size, "%s.%06ld", base, (long)tv.tv_usec);
}

static char *join3(const char *dir, const char *a, const char *b, const char *c) {
    st_buf s;
    st_buf_init(&s);
    st_buf_printf(&s, "%s/%s%s%s", dir, a, b ? b : "", c ? c : "");
    if (s.failed) {
        st_buf_free(&s);
        return NULL;
    }
    return s.data;
}

static json_t *str_or_empty(const char *s) { return json_string(s ? s : ""); }

static json_t *gen_kwargs_json(const stetho_gen_kwargs *g) {
    json_t *o = json_object(), *until = json_array();
    if (g)
        for (size_t i = 0; i < g->n_until; i++) json_array_append_new(until, json_string(g->until[i]));
    json_object_set_new(o, "until", until);
    json_object_set_new(o, "do_sample", json_boolean(g ? g->do_sample : false));
    json_object_set_new(o, "temperature", json_real(g ? g->temperature : 0.0));
    json_object_set_new(o, "max_gen_toks", json_integer(g ? g->max_gen_toks : 256));
    return o;
}

stetho_status stetho_samples_writer_open(stetho_samples_writer *w, const char *dir, const char *task,
                                         const char *timestamp, const stetho_gen_kwargs *gen) {
    memset(w, 0, sizeof *w);
    if (!task || !*task || strchr(task, '/'))
        return st_err(STETHO_ERR_INVALID, "samples file: bad task name '%s'", task ? task : "");
    st_buf pb;
    st_buf_init(&pb);
    if (timestamp) st_buf_printf(&pb, "%s/samples_%s_%s.jsonl", dir, task, timestamp);
    else st_buf_printf(&pb, "%s/samples_%s.jsonl", dir, task);
    if (pb.failed) st_buf_free(&pb);
    char *path = pb.data;
    if (!path) return STETHO_ERR_NOMEM;
    w->fp = fopen(path, "wb");
    if (!w->fp) {
        stetho_status st = st_err(STETHO_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
        st_free(path);
        return st;
    }
    w->path = path;
    if (gen) w->gen = *gen;
    else w->gen.max_gen_toks = 256;
    return STETHO_OK;
}

stetho_status stetho_samples_writer_add(stetho_samples_writer *w, const stetho_sample *s) {
    if (!w->fp) return st_err(STETHO_ERR_INVALID, "samples writer is not open");
    json_t *o = json_object();
    json_object_set_new(o, "doc_id", json_integer(s->doc_id));
    json_t *doc = json_object();
    json_object_set_new(doc, "problem", str_or_empty(s->problem));
    json_object_set_new(doc, "level", str_or_empty(s->level));
    json_object_set_new(doc, "type", str_or_empty(s->type));
    json_object_set_new(doc, "solution", str_or_empty(s->solution));
    json_object_set_new(o, "doc", doc);
    json_object_set_new(o, "target", str_or_empty(s->target));
    /* lm-eval's generate_until request: (context, gen_kwargs) */
    json_t *args = json_object(), *a0 = json_object();
    json_object_set_new(a0, "arg_0", str_or_empty(s->prompt));
    json_object_set_new(a0, "arg_1", gen_kwargs_json(&w->gen));
    json_object_set_new(args, "gen_args_0", a0);
    json_object_set_new(o, "arguments", args);
    json_t *resps = json_array(), *inner = json_array(), *filtered = json_array();
    json_array_append_new(inner, str_or_empty(s->generation));
    json_array_append_new(resps, inner);
    json_array_append_new(filtered, str_or_empty(s->generation));
    json_object_set_new(o, "resps", resps);
    json_object_set_new(o, "filtered_resps", filtered);
    json_object_set_new(o, "filter", json_string("none"));
    json_t *metrics = json_array();
    json_array_append_new(metrics, json_string("exact_match"));
    json_object_set_new(o, "metrics", metrics);
    json_object_set_new(o, "exact_match", json_integer(s->correct ? 1 : 0));
    json_object_set_new(o, "extracted", str_or_empty(s->extracted));
    json_object_set_new(o, "normalized", str_or_empty(s->normalized));
    json_object_set_new(o, "gold", str_or_empty(s->gold));
    char *text = json_dumps(o, 0);
    json_decref(o);
    if (!text) return st_err(STETHO_ERR_NOMEM, "%s: cannot encode sample %lld", w->path, (long long)s->doc_id);
    size_t len = strlen(text);
    bool ok = !st_fault_write_fires() && fwrite(text, 1, len, w->fp) == len && fputc('\n', w->fp) != EOF &&
              fflush(w->fp) == 0;
    free(text);
    if (!ok) return st_err(STETHO_ERR_IO, "%s: write failed: %s", w->path, strerror(errno ? errno : ENOSPC));
    w->n++;
    w->n_correct += s->correct ? 1 : 0;
    return STETHO_OK;
}

stetho_status stetho_samples_writer_close(stetho_samples_writer *w) {
    stetho_status st = STETHO_OK;
    if (w->fp && fclose(w->fp) != 0) st = st_err(STETHO_ERR_IO, "%s: close failed: %s", w->path, strerror(errno));
    st_free(w->path);
    memset(w, 0, sizeof *w);
    return st;
}

void stetho_results_pool(const double *acc, const double *se, const uint64_t *n, size_t m, double *acc_out,
                         double *se_out) {
    double sn = 0, sacc = 0, svar = 0;
    for (size_t i = 0; i < m; i++) {
        double ni = (double)n[i];
        sn += ni;
        sacc += ni * acc[i];
        svar += (ni - 1) * ni * se[i] * se[i];
    }
    *acc_out = sn > 0 ? sacc / sn : NAN;
    *se_out = sn > (double)m ? sqrt(svar / (sn - (double)m) / sn) : NAN;
}

static json_t *metric_entry(const char *alias, double acc, double se) {
    json_t *o = json_object();
    json_object_set_new(o, "alias", json_string(alias));
    json_object_set_new(o, "exact_match,none", json_real(acc));
    json_object_set_new(o, "exact_match_stderr,none", isnan(se) ? json_string("N/A") : json_real(se));
    return o;
}

static stetho_status write_json_atomic(const char *path, json_t *root) {
    char *text = json_dumps(root, JSON_INDENT(2));
    if (!text) return st_err(STETHO_ERR_NOMEM, "%s: cannot encode JSON", path);
    st_buf tb;
    st_buf_init(&tb);
    st_buf_printf(&tb, "%s.tmp", path);
    char *tmp = tb.data;
    stetho_status st = STETHO_OK;
    if (tb.failed || !tmp) {
        st_buf_free(&tb);
        free(text);
        return STETHO_ERR_NOMEM;
    }
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        st = st_err(STETHO_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    } else {
        size_t len = strlen(text);
        bool ok = !st_fault_write_fires() && fwrite(text, 1, len, f) == len && fputc('\n', f) != EOF;
        if (fclose(f) != 0) ok = false;
        if (!ok) st = st_err(STETHO_ERR_IO, "%s: write failed", tmp);
        else if (rename(tmp, path) != 0) st = st_err(STETHO_ERR_IO, "%s: cannot rename: %s", path, strerror(errno));
        if (st) remove(tmp);
    }
    free(text);
    st_free(tmp);
    return st;
}

stetho_status stetho_results_write(const char *dir, const stetho_results_spec *spec, char **path_out) {
    if (path_out) *path_out = NULL;
    if (spec->n_tasks == 0) return st_err(STETHO_ERR_INVALID, "results file: no tasks");
    for (size_t i = 0; i < spec->n_tasks; i++) {
        const stetho_results_task_spec *t = &spec->tasks[i];
        if (!t->name || !*t->name) return st_err(STETHO_ERR_INVALID, "results file: task %zu has no name", i);
        if (t->n_effective == 0 || t->n_correct > t->n_effective)
            return st_err(STETHO_ERR_INVALID, "results file: task %s: %llu correct of %llu", t->name,
                          (unsigned long long)t->n_correct, (unsigned long long)t->n_effective);
    }
    size_t bytes;
    if (!st_mul_size(spec->n_tasks, 2 * sizeof(double) + sizeof(uint64_t), &bytes))
        return st_err(STETHO_ERR_NOMEM, "results file: too many tasks");
    double *acc = st_malloc(bytes);
    if (!acc) return STETHO_ERR_NOMEM;
    double *se = acc + spec->n_tasks;
    uint64_t *ns = (uint64_t *)(se + spec->n_tasks);

    json_t *root = json_object(), *results = json_object(), *groups = json_object(), *gsub = json_object();
    json_t *configs = json_object(), *versions = json_object(), *nshot = json_object(), *hib = json_object();
    json_t *nsamples = json_object(), *subtasks = json_array();
    for (size_t i = 0; i < spec->n_tasks; i++) {
        const stetho_results_task_spec *t = &spec->tasks[i];
        acc[i] = (double)t->n_correct / (double)t->n_effective;
        se[i] = stetho_stats_mean_stderr(t->n_correct, t->n_effective);
        ns[i] = t->n_effective;
        json_array_append_new(subtasks, json_string(t->name));
    }
    if (spec->group) {
        double gacc, gse;
        stetho_results_pool(acc, se, ns, spec->n_tasks, &gacc, &gse);
        json_object_set_new(results, spec->group, metric_entry(spec->group, gacc, gse));
        json_object_set_new(groups, spec->group, metric_entry(spec->group, gacc, gse));
        json_object_set(gsub, spec->group, subtasks);
        json_object_set_new(versions, spec->group, json_real(1.0));
    }
    for (size_t i = 0; i < spec->n_tasks; i++) {
        const stetho_results_task_spec *t = &spec->tasks[i];
        st_buf alias;
        st_buf_init(&alias);
        st_buf_printf(&alias, "%s%s", spec->group ? " - " : "", t->name);
        json_object_set_new(results, t->name, metric_entry(alias.failed ? t->name : alias.data, acc[i], se[i]));
        st_buf_free(&alias);
        json_t *c = json_object(), *ml = json_array(), *m = json_object(), *md = json_object();
        json_object_set_new(c, "task", json_string(t->name));
        if (spec->group) {
            json_t *tag = json_array();
            json_array_append_new(tag, json_string(spec->group));
            json_object_set_new(c, "tag", tag);
        }
        json_object_set_new(c, "output_type", json_string("generate_until"));
        json_object_set_new(c, "num_fewshot", json_integer(t->num_fewshot));
        json_object_set_new(c, "generation_kwargs", gen_kwargs_json(spec->gen));
        json_object_set_new(m, "metric", json_string("exact_match"));
        json_object_set_new(m, "aggregation", json_string("mean"));
        json_object_set_new(m, "higher_is_better", json_true());
        json_array_append_new(ml, m);
        json_object_set_new(c, "metric_list", ml);
        json_object_set_new(md, "version", json_real(t->version));
        json_object_set_new(c, "metadata", md);
        json_object_set_new(configs, t->name, c);
        json_object_set_new(versions, t->name, json_real(t->version));
        json_object_set_new(nshot, t->name, json_integer(t->num_fewshot));
        json_t *h = json_object();
        json_object_set_new(h, "exact_match", json_true());
        json_object_set_new(hib, t->name, h);
        json_t *nn = json_object();
        json_object_set_new(nn, "original", json_integer((json_int_t)t->n_original));
        json_object_set_new(nn, "effective", json_integer((json_int_t)t->n_effective));
        json_object_set_new(nsamples, t->name, nn);
    }
    json_decref(subtasks);
    json_object_set_new(root, "results", results);
    json_object_set_new(root, "groups", groups);
    json_object_set_new(root, "group_subtasks", gsub);
    json_object_set_new(root, "configs", configs);
    json_object_set_new(root, "versions", versions);
    json_object_set_new(root, "n-shot", nshot);
    json_object_set_new(root, "higher_is_better", hib);
    json_object_set_new(root, "n-samples", nsamples);
    json_t *cfg = json_object();
    json_object_set_new(cfg, "model", json_string(spec->model ? spec->model : "stetho"));
    json_object_set_new(cfg, "model_args", str_or_empty(spec->model_args));
    json_object_set_new(cfg, "batch_size", json_integer(spec->batch_size));
    json_object_set_new(cfg, "limit", spec->limit >= 0 ? json_integer(spec->limit) : json_null());
    json_object_set_new(cfg, "gen_kwargs", gen_kwargs_json(spec->gen));
    json_object_set_new(root, "config", cfg);
    json_object_set_new(root, "date", json_real((double)time(NULL)));
    json_object_set_new(root, "stetho_version", json_string(STETHO_VERSION));
    st_free(acc);

    char ts[64];
    if (spec->timestamp) snprintf(ts, sizeof ts, "%s", spec->timestamp);
    else stetho_results_timestamp(ts, sizeof ts);
    char *path = join3(dir, "results_", ts, ".json");
    stetho_status st = path ? write_json_atomic(path, root) : STETHO_ERR_NOMEM;
    json_decref(root);
    if (!st && path_out) *path_out = path;
    else st_free(path);
    return st;
}

/* ---- reading ---------------------------------------------------------------- */

static bool has_prefix(const char *s, const char *p) { return strncmp(s, p, strlen(p)) == 0; }
static bool has_suffix(const char *s, const char *x) {
    size_t a = strlen(s), b = strlen(x);
    return a >= b && !strcmp(s + a - b, x);
}

static bool is_dir(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

/* Newest results_*.json directly in dir: the greatest name (timestamps sort). */
static stetho_status newest_in(const char *dir, char **best) {
    DIR *d = opendir(dir);
    if (!d) return st_err(STETHO_ERR_IO, "%s: cannot open directory: %s", dir, strerror(errno));
    struct dirent *e;
    stetho_status st = STETHO_OK;
    while ((e = readdir(d))) {
        if (!has_prefix(e->d_name, "results_") || !has_suffix(e->d_name, ".json")) continue;
        char *p = join3(dir, e->d_name, NULL, NULL);
        if (!p) {
            st = STETHO_ERR_NOMEM;
            break;
        }
        const char *cur = *best ? strrchr(*best, '/') + 1 : NULL;
        if (!cur || strcmp(e->d_name, cur) > 0) {
            st_free(*best);
            *best = p;
        } else {
            st_free(p);
        }
    }
    closedir(d);
    return st;
}

static stetho_status find_results_file(const char *path, char **out) {
    *out = NULL;
    if (!is_dir(path)) {
        FILE *f = fopen(path, "rb");
        if (!f) return st_err(errno == ENOENT ? STETHO_ERR_NOTFOUND : STETHO_ERR_IO, "%s: cannot open: %s", path,
                              strerror(errno));
        fclose(f);
        return (*out = st_strdup(path)) ? STETHO_OK : STETHO_ERR_NOMEM;
    }
    stetho_status st = newest_in(path, out);
    if (st || *out) return st;
    DIR *d = opendir(path);
    if (!d) return st_err(STETHO_ERR_IO, "%s: cannot open directory: %s", path, strerror(errno));
    struct dirent *e;
    while ((e = readdir(d)) && !st) {
        if (e->d_name[0] == '.') continue;
        char *sub = join3(path, e->d_name, NULL, NULL);
        if (!sub) {
            st = STETHO_ERR_NOMEM;
            break;
        }
        if (is_dir(sub)) {
            char *cand = NULL;
            st = newest_in(sub, &cand);
            if (cand && (!*out || strcmp(strrchr(cand, '/'), strrchr(*out, '/')) > 0)) {
                st_free(*out);
                *out = cand;
            } else {
                st_free(cand);
            }
        }
        st_free(sub);
    }
    closedir(d);
    if (!st && !*out)
        st = st_err(STETHO_ERR_NOTFOUND, "%s: no results_*.json file in this directory or its subdirectories", path);
    return st;
}

/* samples_<task>.jsonl or samples_<task>_<timestamp>.jsonl (timestamps start with a
 * digit, so task "a" never picks up task "a_b"'s file). Prefers the results file's
 * timestamp, else the newest. */
static stetho_status find_samples(const char *dir, const char *task, const char *ts, char **out) {
    *out = NULL;
    DIR *d = opendir(dir);
    if (!d) return st_err(STETHO_ERR_IO, "%s: cannot open directory: %s", dir, strerror(errno));
    st_buf pre;
    st_buf_init(&pre);
    st_buf_printf(&pre, "samples_%s", task);
    if (pre.failed) {
        closedir(d);
        return STETHO_ERR_NOMEM;
    }
    char *best = NULL;
    bool best_exact = false;
    stetho_status st = STETHO_OK;
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *n = e->d_name;
        if (!has_prefix(n, pre.data) || !has_suffix(n, ".jsonl")) continue;
        const char *rest = n + pre.len;
        bool plain = !strcmp(rest, ".jsonl");
        if (!plain && !(rest[0] == '_' && rest[1] >= '0' && rest[1] <= '9')) continue;
        bool exact = !plain && ts && !strncmp(rest + 1, ts, strlen(ts)) && !strcmp(rest + 1 + strlen(ts), ".jsonl");
        if (best && (best_exact || (!exact && strcmp(n, strrchr(best, '/') + 1) <= 0))) continue;
        char *p = join3(dir, n, NULL, NULL);
        if (!p) {
            st = STETHO_ERR_NOMEM;
            break;
        }
        st_free(best);
        best = p;
        best_exact = exact;
    }
    closedir(d);
    st_buf_free(&pre);
    if (st) st_free(best);
    else *out = best;
    return st;
}

typedef struct {
    int64_t id;
    uint8_t ok;
} id_ok;

static int cmp_id_ok(const void *a, const void *b) {
    int64_t x = ((const id_ok *)a)->id, y = ((const id_ok *)b)->id;
    return x < y ? -1 : x > y;
}

static stetho_status load_samples(stetho_results_task *t, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return st_err(STETHO_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    id_ok *v = NULL;
    size_t n = 0, cap = 0, line_no = 0;
    stetho_status st = STETHO_OK;
    char *line = NULL;
    size_t lcap = 0;
    ssize_t len;
    while ((len = getline(&line, &lcap, f)) >= 0) {
        line_no++;
        size_t i = 0;
        while (i < (size_t)len && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r' || line[i] == '\n')) i++;
        if (i == (size_t)len) continue;
        json_error_t je;
        json_t *o = json_loadb(line, (size_t)len, 0, &je);
        if (!o || !json_is_object(o)) {
            json_decref(o);
            st = st_err(STETHO_ERR_FORMAT, "%s:%zu: %s", path, line_no, o ? "expected a JSON object" : je.text);
            break;
        }
        json_t *id = json_object_get(o, "doc_id"), *em = json_object_get(o, "exact_match");
        double emv = json_is_number(em) ? json_number_value(em) : json_is_boolean(em) ? (json_is_true(em) ? 1 : 0) : -1;
        if (!json_is_integer(id) || json_integer_value(id) < 0) {
            st = st_err(STETHO_ERR_FORMAT, "%s:%zu: missing non-negative integer 'doc_id'", path, line_no);
        } else if (emv != 0 && emv != 1) {
            st = st_err(STETHO_ERR_FORMAT, "%s:%zu: 'exact_match' must be 0 or 1", path, line_no);
        } else if (n == cap) {
            size_t nc = cap ? cap * 2 : 256, bytes;
            id_ok *nv = st_mul_size(nc, sizeof *nv, &bytes) ? st_realloc(v, bytes) : NULL;
            if (!nv) st = STETHO_ERR_NOMEM;
            else v = nv, cap = nc;
        }
        if (!st) v[n++] = (id_ok){json_integer_value(id), (uint8_t)emv};
        json_decref(o);
        if (st) break;
    }
    if (!st && ferror(f)) st = st_err(STETHO_ERR_IO, "%s: read error", path);
    free(line);
    fclose(f);
    if (!st && n == 0) st = st_err(STETHO_ERR_FORMAT, "%s: no samples", path);
    if (!st) {
        qsort(v, n, sizeof *v, cmp_id_ok);
        for (size_t i = 1; i < n && !st; i++)
            if (v[i].id == v[i - 1].id)
                st = st_err(STETHO_ERR_FORMAT, "%s: doc_id %lld appears twice", path, (long long)v[i].id);
    }
    if (!st) {
        t->doc_ids = st_malloc(n * sizeof *t->doc_ids);
        t->correct = st_malloc(n);
        if (!t->doc_ids || !t->correct) st = STETHO_ERR_NOMEM;
    }
    if (!st) {
        uint64_t k = 0;
        for (size_t i = 0; i < n; i++) {
            t->doc_ids[i] = v[i].id;
            t->correct[i] = v[i].ok;
            k += v[i].ok;
        }
        t->n_samples = n;
        if (t->n != n)
            st = st_err(STETHO_ERR_FORMAT, "%s: %zu samples but the results file says %llu were scored for task %s",
                        path, n, (unsigned long long)t->n, t->name);
        else if (fabs((double)k / (double)n - t->acc) > 1e-9)
            st = st_err(STETHO_ERR_FORMAT, "%s: %llu of %zu correct (%.6f) but the results file says %.6f for task %s",
                        path, (unsigned long long)k, n, (double)k / (double)n, t->acc, t->name);
        t->n_correct = k;
    }
    st_free(v);
    if (!st) st = (t->samples_path = st_strdup(path)) ? STETHO_OK : STETHO_ERR_NOMEM;
    return st;
}

static int cmp_task(const void *a, const void *b) {
    return strcmp(((const stetho_results_task *)a)->name, ((const stetho_results_task *)b)->name);
}

static bool is_group(json_t *root, const char *name) {
    return json_object_get(json_object_get(root, "groups"), name) ||
           json_object_get(json_object_get(root, "group_subtasks"), name);
}

static stetho_status parse_results(const char *path, json_t *root, stetho_results *out) {
    json_t *res = json_object_get(root, "results");
    if (!json_is_object(root) || !json_is_object(res))
        return st_err(STETHO_ERR_FORMAT, "%s: not an lm-eval results file (no \"results\" object)", path);
    json_t *groups = json_object_get(root, "groups");
    if (json_is_object(groups) && json_object_size(groups)) {
        const char *g = json_object_iter_key(json_object_iter(groups));
        if (!(out->group = st_strdup(g))) return STETHO_ERR_NOMEM;
    }
    size_t cap = json_object_size(res);
    out->tasks = st_calloc(cap ? cap : 1, sizeof *out->tasks);
    if (!out->tasks) return STETHO_ERR_NOMEM;
    json_t *nsamples = json_object_get(root, "n-samples");
    const char *key;
    json_t *val;
    json_object_foreach(res, key, val) {
        if (is_group(root, key)) continue;
        if (!json_is_object(val))
            return st_err(STETHO_ERR_FORMAT, "%s: results.%s is not an object", path, key);
        stetho_results_task *t = &out->tasks[out->n_tasks];
        if (!(t->name = st_strdup(key))) return STETHO_ERR_NOMEM;
        out->n_tasks++;
        json_t *acc = json_object_get(val, "exact_match,none"), *se = json_object_get(val, "exact_match_stderr,none");
        if (!json_is_number(acc))
            return st_err(STETHO_ERR_FORMAT, "%s: task %s has no numeric \"exact_match,none\"", path, key);
        t->acc = json_number_value(acc);
        if (!(t->acc >= 0 && t->acc <= 1))
            return st_err(STETHO_ERR_FORMAT, "%s: task %s: accuracy %g outside [0, 1]", path, key, t->acc);
        t->stderr = json_is_number(se) ? json_number_value(se) : NAN;
        json_t *ns = json_object_get(nsamples, key);
        json_t *eff = json_object_get(ns, "effective"), *orig = json_object_get(ns, "original");
        if (!json_is_integer(eff) || json_integer_value(eff) <= 0)
            return st_err(STETHO_ERR_FORMAT, "%s: task %s: missing or zero \"n-samples\".%s.effective", path, key, key);
        t->n = (uint64_t)json_integer_value(eff);
        t->n_original = json_is_integer(orig) ? (uint64_t)json_integer_value(orig) : t->n;
        double k = t->acc * (double)t->n, kr = nearbyint(k);
        if (fabs(k - kr) > 1e-6)
            return st_err(STETHO_ERR_FORMAT, "%s: task %s: accuracy %.17g is not a whole count out of %llu", path, key,
                          t->acc, (unsigned long long)t->n);
        t->n_correct = (uint64_t)kr;
    }
    if (out->n_tasks == 0) return st_err(STETHO_ERR_FORMAT, "%s: no tasks in \"results\"", path);
    qsort(out->tasks, out->n_tasks, sizeof *out->tasks, cmp_task);
    return STETHO_OK;
}

stetho_status stetho_results_read(const char *path, bool samples, stetho_results *out) {
    memset(out, 0, sizeof *out);
    stetho_status st = find_results_file(path, &out->path);
    if (st) return st;
    json_error_t je;
    json_t *root = json_load_file(out->path, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        st = st_err(errno == ENOENT ? STETHO_ERR_NOTFOUND : STETHO_ERR_FORMAT, "%s:%d: invalid JSON (%s)", out->path,
                    je.line, je.text);
    } else {
        st = parse_results(out->path, root, out);
        json_decref(root);
    }
    if (!st && samples) {
        char *dir = st_strdup(out->path);
        if (!dir) st = STETHO_ERR_NOMEM;
        else {
            char *slash = strrchr(dir, '/');
            const char *base = slash ? slash + 1 : out->path;
            if (slash) *slash = '\0';
            else strcpy(dir, ".");
            /* "results_<ts>.json" -> "<ts>" */
            char ts[256] = "";
            size_t bl = strlen(base);
            if (bl > 13 && bl - 13 < sizeof ts) {
                memcpy(ts, base + 8, bl - 13);
                ts[bl - 13] = '\0';
            }
            for (size_t i = 0; i < out->n_tasks && !st; i++) {
                char *sp = NULL;
                st = find_samples(dir, out->tasks[i].name, ts, &sp);
                if (!st && sp) st = load_samples(&out->tasks[i], sp);
                st_free(sp);
            }
            st_free(dir);
        }
    }
    if (st) stetho_results_free(out);
    return st;
}

void stetho_results_free(stetho_results *r) {
    for (size_t i = 0; i < r->n_tasks; i++) {
        st_free(r->tasks[i].name);
        st_free(r->tasks[i].samples_path);
        st_free(r->tasks[i].doc_ids);
        st_free(r->tasks[i].correct);
    }
    st_free(r->tasks);
    st_free(r->path);
    st_free(r->group);
    memset(r, 0, sizeof *r);
}

const stetho_results_task *stetho_results_task_get(const stetho_results *r, const char *name) {
    for (size_t i = 0; i < r->n_tasks; i++)
        if (!strcmp(r->tasks[i].name, name)) return &r->tasks[i];
    return NULL;
}

/* ---- comparing ---------------------------------------------------------------- */

static stetho_status fill_row(stetho_cmp_row *row, double z) {
    stetho_status st = stetho_stats_wilson(row->k_a, row->n_a, z, &row->ci_a);
    if (!st) st = stetho_stats_wilson(row->k_b, row->n_b, z, &row->ci_b);
    if (!st) st = stetho_stats_newcombe(row->k_b, row->n_b, row->k_a, row->n_a, z, &row->ci_diff);
    if (!st) st = stetho_stats_ztest(row->k_b, row->n_b, row->k_a, row->n_a, &row->z);
    if (st) return st_err_context(st, "task %s", row->task);
    row->acc_a = (double)row->k_a / (double)row->n_a;
    row->acc_b = (double)row->k_b / (double)row->n_b;
    row->diff = row->acc_b - row->acc_a;
    if (row->paired) {
        row->test = STETHO_CMP_TEST_MCNEMAR;
        row->p = row->mcnemar.p_exact;
    } else {
        row->test = STETHO_CMP_TEST_ZTEST;
        row->p = row->z.p_unpooled;
    }
    return STETHO_OK;
}

/* Paired counts from two sorted doc_id lists that must be identical. */
static stetho_status pair_up(const stetho_results_task *ta, const stetho_results_task *tb, stetho_cmp_row *row) {
    size_t i = 0, j = 0;
    uint64_t b = 0, c = 0, both = 0, none = 0;
    while (i < ta->n_samples || j < tb->n_samples) {
        if (j >= tb->n_samples || (i < ta->n_samples && ta->doc_ids[i] < tb->doc_ids[j]))
            return st_err(STETHO_ERR_MISMATCH,
                          "task %s: the samples files hold different problems (doc_id %lld is only in %s; %zu vs %zu "
                          "samples)",
                          ta->name, (long long)ta->doc_ids[i], ta->samples_path, ta->n_samples, tb->n_samples);
        if (i >= ta->n_samples || tb->doc_ids[j] < ta->doc_ids[i])
            return st_err(STETHO_ERR_MISMATCH,
                          "task %s: the samples files hold different problems (doc_id %lld is only in %s; %zu vs %zu "
                          "samples)",
                          ta->name, (long long)tb->doc_ids[j], tb->samples_path, ta->n_samples, tb->n_samples);
        uint8_t x = ta->correct[i++], y = tb->correct[j++];
        if (x && y) both++;
        else if (x) b++;
        else if (y) c++;
        else none++;
    }
    row->paired = true;
    row->n_pairs = ta->n_samples;
    row->both_correct = both;
    row->both_wrong = none;
    return stetho_stats_mcnemar(b, c, &row->mcnemar);
}

static stetho_status list_only(const stetho_results *x, const stetho_results *y, char ***out, size_t *n) {
    *out = st_calloc(x->n_tasks, sizeof **out);
    if (!*out) return STETHO_ERR_NOMEM;
    for (size_t i = 0; i < x->n_tasks; i++)
        if (!stetho_results_task_get(y, x->tasks[i].name) && !((*out)[(*n)++] = st_strdup(x->tasks[i].name)))
            return STETHO_ERR_NOMEM;
    return STETHO_OK;
}

static char *task_list(const stetho_results *r) {
    st_buf s;
    st_buf_init(&s);
    for (size_t i = 0; i < r->n_tasks && i < 12; i++) st_buf_printf(&s, "%s%s", i ? ", " : "", r->tasks[i].name);
    if (r->n_tasks > 12) st_buf_printf(&s, ", ... (%zu in all)", r->n_tasks);
    if (s.failed) {
        st_buf_free(&s);
        return NULL;
    }
    return s.data;
}

stetho_status stetho_results_compare(const stetho_results *a, const stetho_results *b, double alpha,
                                     stetho_comparison *out) {
    memset(out, 0, sizeof *out);
    if (!(alpha > 0 && alpha < 1)) return st_err(STETHO_ERR_INVALID, "alpha must be in (0, 1), got %g", alpha);
    out->alpha = alpha;
    out->z = stetho_stats_normal_quantile(1 - alpha / 2);
    stetho_status st = STETHO_OK;
    if (!(out->path_a = st_strdup(a->path ? a->path : "A")) || !(out->path_b = st_strdup(b->path ? b->path : "B")))
        st = STETHO_ERR_NOMEM;
    if (!st) st = list_only(a, b, &out->only_a, &out->n_only_a);
    if (!st) st = list_only(b, a, &out->only_b, &out->n_only_b);
    size_t n_common = st ? 0 : a->n_tasks - out->n_only_a;
    if (!st && n_common == 0) {
        char *la = task_list(a), *lb = task_list(b);
        st = st_err(STETHO_ERR_MISMATCH, "the two results files share no task: %s has [%s], %s has [%s]", out->path_a,
                    la ? la : "?", out->path_b, lb ? lb : "?");
        st_free(la);
        st_free(lb);
    }
    if (!st) {
        size_t nrows = n_common > 1 ? n_common + 1 : n_common;
        out->rows = st_calloc(nrows, sizeof *out->rows);
        if (!out->rows) st = STETHO_ERR_NOMEM;
    }
    uint64_t ka = 0, na = 0, kb = 0, nb = 0, sb = 0, sc = 0, npairs = 0, both = 0, none = 0;
    bool all_paired = true;
    for (size_t i = 0; i < a->n_tasks && !st; i++) {
        const stetho_results_task *ta = &a->tasks[i], *tb = stetho_results_task_get(b, ta->name);
        if (!tb) continue;
        stetho_cmp_row *row = &out->rows[out->n_rows++];
        if (!(row->task = st_strdup(ta->name))) {
            st = STETHO_ERR_NOMEM;
            break;
        }
        row->k_a = ta->n_correct, row->n_a = ta->n;
        row->k_b = tb->n_correct, row->n_b = tb->n;
        if (ta->samples_path && tb->samples_path) st = pair_up(ta, tb, row);
        if (!st) st = fill_row(row, out->z);
        ka += row->k_a, na += row->n_a, kb += row->k_b, nb += row->n_b;
        all_paired = all_paired && row->paired;
        sb += row->mcnemar.b, sc += row->mcnemar.c, npairs += row->n_pairs;
        both += row->both_correct, none += row->both_wrong;
    }
    if (!st) {
        double *p = st_malloc(out->n_rows * sizeof *p);
        if (!p) st = STETHO_ERR_NOMEM;
        for (size_t i = 0; i < out->n_rows && !st; i++) p[i] = out->rows[i].p;
        if (!st) st = stetho_stats_holm(p, out->n_rows, p);
        for (size_t i = 0; i < out->n_rows && !st; i++) out->rows[i].p_holm = p[i];
        st_free(p);
    }
    if (!st && n_common > 1) {
        stetho_cmp_row *row = &out->rows[out->n_rows++];
        const char *name = (a->group && b->group && !strcmp(a->group, b->group)) ? a->group : "overall";
        row->overall = true;
        if (!(row->task = st_strdup(name))) st = STETHO_ERR_NOMEM;
        row->k_a = ka, row->n_a = na, row->k_b = kb, row->n_b = nb;
        if (!st && all_paired) {
            row->paired = true;
            row->n_pairs = npairs, row->both_correct = both, row->both_wrong = none;
            st = stetho_stats_mcnemar(sb, sc, &row->mcnemar);
        }
        if (!st) st = fill_row(row, out->z);
        row->p_holm = row->p;
    }
    for (size_t i = 0; i < out->n_rows && !st; i++) {
        stetho_cmp_row *row = &out->rows[i];
        row->mark = row->p_holm < alpha ? (row->diff > 0 ? 1 : row->diff < 0 ? -1 : 0) : 0;
    }
    if (st) stetho_comparison_free(out);
    return st;
}

void stetho_comparison_free(stetho_comparison *c) {
    for (size_t i = 0; i < c->n_rows; i++) st_free(c->rows[i].task);
    for (size_t i = 0; i < c->n_only_a; i++) st_free(c->only_a[i]);
    for (size_t i = 0; i < c->n_only_b; i++) st_free(c->only_b[i]);
    st_free(c->rows);
    st_free(c->only_a);
    st_free(c->only_b);
    st_free(c->path_a);
    st_free(c->path_b);
    memset(c, 0, sizeof *c);
}

static json_t *num(double v) { return isfinite(v) ? json_real(v) : json_null(); }

static json_t *interval(stetho_interval iv) {
    json_t *a = json_array();
    json_array_append_new(a, num(iv.lo));
    json_array_append_new(a, num(iv.hi));
    return a;
}

static json_t *side(uint64_t k, uint64_t n, double acc, stetho_interval ci) {
    json_t *o = json_object();
    json_object_set_new(o, "correct", json_integer((json_int_t)k));
    json_object_set_new(o, "n", json_integer((json_int_t)n));
    json_object_set_new(o, "acc", num(acc));
    json_object_set_new(o, "ci", interval(ci));
    return o;
}

static json_t *string_list(char **v, size_t n) {
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) json_array_append_new(a, json_string(v[i]));
    return a;
}

stetho_status stetho_comparison_json(const stetho_comparison *c, char **text) {
    json_t *root = json_object(), *rows = json_array();
    json_object_set_new(root, "a", json_string(c->path_a));
    json_object_set_new(root, "b", json_string(c->path_b));
    json_object_set_new(root, "alpha", json_real(c->alpha));
    json_object_set_new(root, "confidence", json_real(1 - c->alpha));
    for (size_t i = 0; i < c->n_rows; i++) {
        const stetho_cmp_row *r = &c->rows[i];
        json_t *o = json_object();
        json_object_set_new(o, "task", json_string(r->task));
        json_object_set_new(o, "overall", json_boolean(r->overall));
        json_object_set_new(o, "a", side(r->k_a, r->n_a, r->acc_a, r->ci_a));
        json_object_set_new(o, "b", side(r->k_b, r->n_b, r->acc_b, r->ci_b));
        json_object_set_new(o, "diff", num(r->diff));
        json_object_set_new(o, "diff_ci", interval(r->ci_diff));
        json_object_set_new(o, "z_pooled", num(r->z.z_pooled));
        json_object_set_new(o, "p_pooled", num(r->z.p_pooled));
        json_object_set_new(o, "z_unpooled", num(r->z.z_unpooled));
        json_object_set_new(o, "p_unpooled", num(r->z.p_unpooled));
        if (r->paired) {
            json_t *m = json_object();
            json_object_set_new(m, "pairs", json_integer((json_int_t)r->n_pairs));
            json_object_set_new(m, "both_correct", json_integer((json_int_t)r->both_correct));
            json_object_set_new(m, "both_wrong", json_integer((json_int_t)r->both_wrong));
            json_object_set_new(m, "only_a", json_integer((json_int_t)r->mcnemar.b));
            json_object_set_new(m, "only_b", json_integer((json_int_t)r->mcnemar.c));
            json_object_set_new(m, "p_exact", num(r->mcnemar.p_exact));
            json_object_set_new(m, "p_midp", num(r->mcnemar.p_midp));
            json_object_set_new(m, "chi2", num(r->mcnemar.chi2));
            json_object_set_new(m, "p_chi2", num(r->mcnemar.p_chi2));
            json_object_set_new(o, "mcnemar", m);
        } else {
            json_object_set_new(o, "mcnemar", json_null());
        }
        json_object_set_new(o, "test", json_string(r->test == STETHO_CMP_TEST_MCNEMAR ? "mcnemar_exact" : "z_unpooled"));
        json_object_set_new(o, "p", num(r->p));
        json_object_set_new(o, "p_holm", num(r->p_holm));
        json_object_set_new(o, "significant", json_boolean(r->mark != 0));
        json_object_set_new(o, "mark", json_string(r->mark > 0 ? "+" : r->mark < 0 ? "-" : ""));
        json_array_append_new(rows, o);
    }
    json_object_set_new(root, "rows", rows);
    json_object_set_new(root, "only_in_a", string_list(c->only_a, c->n_only_a));
    json_object_set_new(root, "only_in_b", string_list(c->only_b, c->n_only_b));
    char *s = json_dumps(root, JSON_INDENT(2));
    json_decref(root);
    if (!s) return st_err(STETHO_ERR_NOMEM, "cannot encode the comparison as JSON");
    *text = s;
    return STETHO_OK;
}
