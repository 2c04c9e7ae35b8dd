/* summary.json for the report: parsed and validated in full before anything is
 * rendered. Every error names the key path ("variants[2].results.x.ci") so a
 * runner bug or a hand-edited file is found at once; unknown keys are ignored so
 * the runner can add fields without breaking older reports. */
#include "report_internal.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

enum { T_OBJ, T_ARR, T_STR, T_NUM, T_INT, T_BOOL };
enum { REQ = 0, NULLABLE = 1, OPTIONAL = 2 }; /* OPTIONAL: absent or null */

typedef struct {
    const char *file;
} vctx;

static const char *type_name(const json_t *j) {
    switch (json_typeof(j)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "?";
}

static const char *want_name(int t) {
    static const char *names[] = {"an object", "an array", "a string", "a number", "an integer", "a boolean"};
    return names[t];
}

/* "file: where.key: message" (where and key may be empty). */
static stetho_status bad(const vctx *v, const char *where, const char *key, const char *fmt, ...) ST_PRINTF(4, 5);
static stetho_status bad(const vctx *v, const char *where, const char *key, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    bool w = where && *where, k = key && *key;
    return st_err(STETHO_ERR_FORMAT, "%s: %s%s%s%s%s", v->file, w ? where : "", w && k ? "." : "", k ? key : "",
                  w || k ? ": " : "", msg);
}

static bool type_ok(const json_t *j, int t) {
    switch (t) {
    case T_OBJ: return json_is_object(j);
    case T_ARR: return json_is_array(j);
    case T_STR: return json_is_string(j);
    case T_NUM: return json_is_number(j);
    case T_INT: return json_is_integer(j) || (json_is_real(j) && json_real_value(j) == floor(json_real_value(j)) &&
                                              fabs(json_real_value(j)) < 9e15);
    case T_BOOL: return json_is_boolean(j);
    }
    return false;
}

/* The member key of o (which must be an object) with type t; *out = NULL for a
 * permitted null or absence. */
static stetho_status field(const vctx *v, json_t *o, const char *where, const char *key, int t, int flags, json_t **out) {
    *out = NULL;
    json_t *j = json_object_get(o, key);
    if (!j) return flags & OPTIONAL ? STETHO_OK : bad(v, where, key, "missing");
    if (json_is_null(j)) return flags & (NULLABLE | OPTIONAL) ? STETHO_OK : bad(v, where, key, "is null; expected %s", want_name(t));
    if (!type_ok(j, t)) return bad(v, where, key, "expected %s, got %s", want_name(t), type_name(j));
    if (t == T_STR && json_string_length(j) != strlen(json_string_value(j)))
        return bad(v, where, key, "string holds a NUL character");
    *out = j;
    return STETHO_OK;
}

static double num(const json_t *j) { return json_number_value(j); }

static stetho_status get_str(const vctx *v, json_t *o, const char *where, const char *key, int flags, bool nonempty,
                             const char **out) {
    json_t *j;
    stetho_status st = field(v, o, where, key, T_STR, flags, &j);
    *out = j ? json_string_value(j) : NULL;
    if (!st && nonempty && j && !**out) st = bad(v, where, key, "is empty");
    return st;
}

/* A number in [lo, hi]; NaN for a permitted null. */
static stetho_status get_num(const vctx *v, json_t *o, const char *where, const char *key, int flags, double lo,
                             double hi, double *out) {
    json_t *j;
    stetho_status st = field(v, o, where, key, T_NUM, flags, &j);
    *out = NAN;
    if (st || !j) return st;
    double d = num(j);
    if (!(d >= lo && d <= hi)) return bad(v, where, key, "%g is outside [%g, %g]", d, lo, hi);
    *out = d;
    return STETHO_OK;
}

static stetho_status get_int(const vctx *v, json_t *o, const char *where, const char *key, int flags, long long lo,
                             long long hi, long long *out, bool *present) {
    json_t *j;
    stetho_status st = field(v, o, where, key, T_INT, flags, &j);
    if (present) *present = j != NULL;
    *out = 0;
    if (st || !j) return st;
    long long x = json_is_integer(j) ? (long long)json_integer_value(j) : (long long)json_real_value(j);
    if (x < lo || x > hi) return bad(v, where, key, "%lld is outside [%lld, %lld]", x, lo, hi);
    *out = x;
    return STETHO_OK;
}

static stetho_status get_bool(const vctx *v, json_t *o, const char *where, const char *key, bool *out) {
    json_t *j;
    stetho_status st = field(v, o, where, key, T_BOOL, REQ, &j);
    *out = j && json_is_true(j);
    return st;
}

/* An array of n elements -> a zeroed C array of n items of size sz (NULL for n = 0). */
static stetho_status alloc_items(size_t n, size_t sz, void **out) {
    *out = NULL;
    if (n == 0) return STETHO_OK;
    *out = st_calloc(n, sz);
    return *out ? STETHO_OK : STETHO_ERR_NOMEM;
}

static void sub(char *buf, size_t n, const char *where, const char *key, size_t i) {
    snprintf(buf, n, "%s%s%s[%zu]", where, *where ? "." : "", key, i);
}
static void subk(char *buf, size_t n, const char *where, const char *key) {
    snprintf(buf, n, "%s%s%s", where, *where ? "." : "", key);
}

/* A layer index field in [0, n_layers), distinct from the layers seen so far. */
static stetho_status get_layer(const vctx *v, const rp_summary *s, json_t *o, const char *where, bool *seen, long *out) {
    long long x;
    stetho_status st = get_int(v, o, where, "layer", REQ, 0, s->n_layers - 1, &x, NULL);
    if (st) return st;
    if (seen[x]) return bad(v, where, "layer", "layer %lld appears twice", x);
    seen[x] = true;
    *out = (long)x;
    return STETHO_OK;
}

/* ---- sections ---------------------------------------------------------------- */

static stetho_status parse_model(const vctx *v, rp_summary *s) {
    json_t *m;
    stetho_status st = field(v, s->root, "", "model", T_OBJ, REQ, &m);
    long long x;
    if (!st) st = get_str(v, m, "model", "base", REQ, true, &s->base_model);
    if (!st) st = get_str(v, m, "model", "finetuned", NULLABLE, false, &s->ft_model);
    if (!st) st = get_str(v, m, "model", "family", REQ, false, &s->family);
    if (!st) st = get_int(v, m, "model", "n_layers", REQ, 1, 100000, &x, NULL), s->n_layers = (long)x;
    if (!st) st = get_int(v, m, "model", "d_model", REQ, 1, 1 << 24, &x, NULL), s->d_model = (long)x;
    return st;
}

/* The layers array of a section: each element an object, returned one by one. */
static stetho_status layers_array(const vctx *v, json_t *sec, const char *where, bool allow_empty, json_t **arr) {
    stetho_status st = field(v, sec, where, "layers", T_ARR, REQ, arr);
    if (st) return st;
    if (!allow_empty && json_array_size(*arr) == 0) return bad(v, where, "layers", "is empty");
    for (size_t i = 0; i < json_array_size(*arr); i++)
        if (!json_is_object(json_array_get(*arr, i))) {
            char w[64];
            sub(w, sizeof w, where, "layers", i);
            return bad(v, w, NULL, "expected an object, got %s", type_name(json_array_get(*arr, i)));
        }
    return STETHO_OK;
}

static stetho_status parse_taskvec(const vctx *v, rp_summary *s, bool *seen) {
    json_t *t, *arr;
    stetho_status st = field(v, s->root, "", "task_vector", T_OBJ, NULLABLE, &t);
    if (st || !t) return st;
    s->has_tv = true;
    if ((st = get_num(v, t, "task_vector", "total_norm", REQ, 0, INFINITY, &s->tv_total))) return st;
    if ((st = layers_array(v, t, "task_vector", true, &arr))) return st;
    s->n_tv = json_array_size(arr);
    if ((st = alloc_items(s->n_tv, sizeof *s->tv, (void **)&s->tv))) return st;
    for (size_t i = 0; i < s->n_tv && !st; i++) {
        json_t *e = json_array_get(arr, i);
        char w[64];
        sub(w, sizeof w, "task_vector", "layers", i);
        rp_tv_layer *L = &s->tv[i];
        st = get_layer(v, s, e, w, seen, &L->layer);
        if (!st) st = get_num(v, e, w, "norm", REQ, 0, INFINITY, &L->norm);
        if (!st) st = get_num(v, e, w, "rel_norm", NULLABLE, 0, INFINITY, &L->rel_norm);
        if (!st) st = get_num(v, e, w, "energy_share", NULLABLE, 0, 1 + 1e-9, &L->energy_share);
    }
    return st;
}

static stetho_status parse_specificity(const vctx *v, rp_summary *s, bool *seen) {
    json_t *sp, *arr, *ms;
    stetho_status st = field(v, s->root, "", "specificity", T_OBJ, NULLABLE, &sp);
    if (st || !sp) return st;
    s->has_spec = true;
    if ((st = get_str(v, sp, "specificity", "metric", REQ, true, &s->metric))) return st;
    if ((st = field(v, sp, "specificity", "metrics", T_ARR, REQ, &ms))) return st;
    s->n_metrics = json_array_size(ms);
    if ((st = alloc_items(s->n_metrics, sizeof *s->metrics, (void **)&s->metrics))) return st;
    bool metric_listed = false;
    for (size_t i = 0; i < s->n_metrics; i++) {
        json_t *e = json_array_get(ms, i);
        char w[64];
        sub(w, sizeof w, "specificity", "metrics", i);
        if (!json_is_string(e) || !*json_string_value(e) || json_string_length(e) != strlen(json_string_value(e)))
            return bad(v, w, NULL, "expected a metric name");
        s->metrics[i] = json_string_value(e);
        for (size_t j = 0; j < i; j++)
            if (!strcmp(s->metrics[j], s->metrics[i])) return bad(v, w, NULL, "'%s' is listed twice", s->metrics[i]);
        if (!strcmp(s->metrics[i], s->metric)) metric_listed = true;
    }
    if (s->n_metrics && !metric_listed)
        return bad(v, "specificity", "metric", "'%s' is not in specificity.metrics", s->metric);
    if ((st = layers_array(v, sp, "specificity", true, &arr))) return st;
    s->n_spec = json_array_size(arr);
    if ((st = alloc_items(s->n_spec, sizeof *s->spec, (void **)&s->spec))) return st;
    for (size_t i = 0; i < s->n_spec && !st; i++) {
        json_t *e = json_array_get(arr, i), *sc;
        char w[64];
        sub(w, sizeof w, "specificity", "layers", i);
        rp_spec_layer *L = &s->spec[i];
        st = get_layer(v, s, e, w, seen, &L->layer);
        if (!st) st = get_num(v, e, w, "score", NULLABLE, -INFINITY, INFINITY, &L->score);
        if (!st) st = field(v, e, w, "scores", T_OBJ, OPTIONAL, &sc);
        if (st) break;
        if (s->n_metrics && !(L->scores = st_calloc(s->n_metrics, sizeof *L->scores))) return STETHO_ERR_NOMEM;
        for (size_t m = 0; m < s->n_metrics; m++) L->scores[m] = NAN;
        if (!sc) continue;
        const char *key;
        json_t *val;
        char ws[96];
        subk(ws, sizeof ws, w, "scores");
        json_object_foreach(sc, key, val) {
            size_t m = 0;
            while (m < s->n_metrics && strcmp(s->metrics[m], key)) m++;
            if (m == s->n_metrics) return bad(v, ws, key, "is not in specificity.metrics");
            if (!json_is_null(val) && !json_is_number(val))
                return bad(v, ws, key, "expected a number or null, got %s", type_name(val));
            L->scores[m] = json_is_null(val) ? NAN : num(val);
        }
    }
    return st;
}

static stetho_status parse_scalpel(const vctx *v, rp_summary *s, bool *seen) {
    json_t *sc, *arr;
    stetho_status st = field(v, s->root, "", "scalpel", T_OBJ, NULLABLE, &sc);
    if (st || !sc) return st;
    s->has_scalpel = true;
    long long x;
    if ((st = get_int(v, sc, "scalpel", "features", REQ, 1, 1LL << 31, &x, NULL))) return st;
    s->sc_features = (long)x;
    if ((st = get_int(v, sc, "scalpel", "d_model", REQ, 1, 1 << 24, &x, NULL))) return st;
    s->sc_d = (long)x;
    if ((st = get_num(v, sc, "scalpel", "retained", REQ, 0, 1 + 1e-6, &s->sc_retained))) return st;
    if ((st = get_num(v, sc, "scalpel", "expected_random", REQ, 0, 1 + 1e-6, &s->sc_expected))) return st;
    if ((st = layers_array(v, sc, "scalpel", true, &arr))) return st;
    s->n_sc = json_array_size(arr);
    if ((st = alloc_items(s->n_sc, sizeof *s->sc, (void **)&s->sc))) return st;
    for (size_t i = 0; i < s->n_sc && !st; i++) {
        json_t *e = json_array_get(arr, i);
        char w[64];
        sub(w, sizeof w, "scalpel", "layers", i);
        rp_scalpel_layer *L = &s->sc[i];
        st = get_layer(v, s, e, w, seen, &L->layer);
        if (!st) st = get_int(v, e, w, "rank", REQ, 0, 1LL << 31, &x, NULL), L->rank = (long)x;
        if (!st) st = get_num(v, e, w, "retained", REQ, 0, 1 + 1e-6, &L->retained);
        if (!st) st = get_num(v, e, w, "expected", REQ, 0, 1 + 1e-6, &L->expected);
    }
    return st;
}

static stetho_status parse_tasks(const vctx *v, rp_summary *s) {
    json_t *t, *v0, *r0;
    stetho_status st = field(v, s->root, "", "tasks", T_ARR, REQ, &t);
    if (st) return st;
    s->n_tasks = json_array_size(t);
    if (s->n_tasks == 0) return bad(v, "", "tasks", "is empty");
    /* aggregate rows: keys of the first variant's results that are not tasks */
    json_t *vs = json_object_get(s->root, "variants");
    size_t n_extra = 0;
    if (json_is_array(vs) && (v0 = json_array_get(vs, 0)) && json_is_object(v0) &&
        json_is_object(r0 = json_object_get(v0, "results")))
        n_extra = json_object_size(r0);
    if ((st = alloc_items(s->n_tasks + n_extra, sizeof *s->rows, (void **)&s->rows))) return st;
    for (size_t i = 0; i < s->n_tasks; i++) {
        json_t *e = json_array_get(t, i);
        char w[32];
        sub(w, sizeof w, "", "tasks", i);
        if (!json_is_string(e) || !*json_string_value(e) || json_string_length(e) != strlen(json_string_value(e)))
            return bad(v, w, NULL, "expected a task name");
        s->rows[i] = json_string_value(e);
        for (size_t j = 0; j < i; j++)
            if (!strcmp(s->rows[j], s->rows[i])) return bad(v, w, NULL, "'%s' is listed twice", s->rows[i]);
    }
    s->n_rows = s->n_tasks;
    if (n_extra) {
        const char *key;
        json_t *val;
        json_object_foreach(r0, key, val) {
            size_t j = 0;
            while (j < s->n_tasks && strcmp(s->rows[j], key)) j++;
            if (j == s->n_tasks) s->rows[s->n_rows++] = key;
        }
    }
    return STETHO_OK;
}

static size_t row_index(const rp_summary *s, const char *key) {
    for (size_t i = 0; i < s->n_rows; i++)
        if (!strcmp(s->rows[i], key)) return i;
    return (size_t)-1;
}

static stetho_status parse_acc(const vctx *v, json_t *e, const char *w, rp_acc *a) {
    long long c, n;
    json_t *ci;
    double acc;
    stetho_status st = get_int(v, e, w, "n", REQ, 1, INT64_MAX, &n, NULL);
    if (!st) st = get_int(v, e, w, "correct", REQ, 0, n, &c, NULL);
    if (!st) st = get_num(v, e, w, "acc", REQ, 0, 1, &acc);
    if (!st) st = field(v, e, w, "ci", T_ARR, REQ, &ci);
    if (st) return st;
    a->correct = (uint64_t)c, a->n = (uint64_t)n, a->acc = (double)c / (double)n;
    /* acc may be rounded in the file, but must be correct / n */
    if (fabs(acc - a->acc) > 1e-3)
        return bad(v, w, "acc", "%g disagrees with correct / n = %lld/%lld = %.6f", acc, c, n, a->acc);
    if (json_array_size(ci) != 2 || !json_is_number(json_array_get(ci, 0)) || !json_is_number(json_array_get(ci, 1)))
        return bad(v, w, "ci", "expected [low, high], two numbers");
    a->lo = num(json_array_get(ci, 0)), a->hi = num(json_array_get(ci, 1));
    if (!(a->lo >= 0 && a->lo <= a->hi && a->hi <= 1)) return bad(v, w, "ci", "[%g, %g] is not an interval in [0, 1]", a->lo, a->hi);
    if (a->lo > a->acc + 1e-3 || a->hi < a->acc - 1e-3)
        return bad(v, w, "ci", "[%g, %g] does not contain the accuracy %.6f", a->lo, a->hi, a->acc);
    return STETHO_OK;
}

static stetho_status parse_cmp(const vctx *v, json_t *e, const char *w, rp_cmp *c) {
    json_t *ci, *dir;
    stetho_status st = get_num(v, e, w, "diff", REQ, -1, 1, &c->diff);
    if (!st) st = field(v, e, w, "ci", T_ARR, REQ, &ci);
    if (!st) st = get_num(v, e, w, "z", NULLABLE, -INFINITY, INFINITY, &c->z);
    if (!st) st = get_num(v, e, w, "p", NULLABLE, 0, 1, &c->p);
    if (!st) st = get_num(v, e, w, "p_holm", OPTIONAL, 0, 1, &c->p_holm);
    if (!st) st = get_num(v, e, w, "mcnemar_p", OPTIONAL, 0, 1, &c->mcnemar_p);
    if (!st) st = get_bool(v, e, w, "significant", &c->significant);
    if (!st) st = field(v, e, w, "direction", T_STR, REQ, &dir);
    if (st) return st;
    if (json_array_size(ci) != 2 || !json_is_number(json_array_get(ci, 0)) || !json_is_number(json_array_get(ci, 1)))
        return bad(v, w, "ci", "expected [low, high], two numbers");
    c->lo = num(json_array_get(ci, 0)), c->hi = num(json_array_get(ci, 1));
    if (!(c->lo >= -1 && c->lo <= c->hi && c->hi <= 1))
        return bad(v, w, "ci", "[%g, %g] is not an interval in [-1, 1]", c->lo, c->hi);
    const char *d = json_string_value(dir);
    if (!strcmp(d, "up")) c->dir = 1;
    else if (!strcmp(d, "down")) c->dir = -1;
    else if (!strcmp(d, "none")) c->dir = 0;
    else return bad(v, w, "direction", "'%s' is not up, down or none", d);
    if (c->significant && c->dir == 0) return bad(v, w, "direction", "is none for a significant difference");
    if ((c->dir > 0 && c->diff < 0) || (c->dir < 0 && c->diff > 0))
        return bad(v, w, "direction", "'%s' disagrees with diff %g", d, c->diff);
    return STETHO_OK;
}

static const char *const kinds[] = {"base", "finetuned", "stethoscope", "scalpel", "random", "norm",
                                    "bottom", "all", "single", "leave_one_out"};
static const char *const methods[] = {"top", "random", "norm", "bottom", "all", "only", "except"};

static bool in_list(const char *s, const char *const *list, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!strcmp(s, list[i])) return true;
    return false;
}

static stetho_status parse_variant(const vctx *v, rp_summary *s, size_t i, json_t *e) {
    char w[64], w2[192];
    sub(w, sizeof w, "", "variants", i);
    rp_variant *x = &s->v[i];
    x->ppl = NAN;
    if (!json_is_object(e)) return bad(v, w, NULL, "expected an object, got %s", type_name(e));
    stetho_status st = get_str(v, e, w, "name", REQ, true, &x->name);
    if (!st) st = get_str(v, e, w, "kind", REQ, true, &x->kind);
    if (!st) st = get_str(v, e, w, "label", REQ, false, &x->label);
    if (st) return st;
    for (size_t j = 0; j < i; j++)
        if (!strcmp(s->v[j].name, x->name)) return bad(v, w, "name", "'%s' is used by variants[%zu] too", x->name, j);
    if (!in_list(x->kind, kinds, ST_ARRAY_LEN(kinds)))
        return bad(v, w, "kind", "'%s' is not one of base, finetuned, stethoscope, scalpel, random, norm, bottom, all, "
                                 "single, leave_one_out",
                   x->kind);
    x->ablation = !strcmp(x->kind, "single") || !strcmp(x->kind, "leave_one_out");

    json_t *layers, *sel, *res, *vb, *vsx;
    if ((st = field(v, e, w, "layers", T_ARR, NULLABLE, &layers))) return st;
    if (layers) {
        x->has_layers = true;
        x->n_layers = json_array_size(layers);
        if ((st = alloc_items(x->n_layers, sizeof *x->layers, (void **)&x->layers))) return st;
        for (size_t j = 0; j < x->n_layers; j++) {
            json_t *l = json_array_get(layers, j);
            sub(w2, sizeof w2, w, "layers", j);
            if (!type_ok(l, T_INT)) return bad(v, w2, NULL, "expected a layer index, got %s", type_name(l));
            double d = num(l);
            if (d < 0 || d >= (double)s->n_layers)
                return bad(v, w2, NULL, "layer %g is outside the model's %ld layers", d, s->n_layers);
            x->layers[j] = (int)d;
            for (size_t k = 0; k < j; k++)
                if (x->layers[k] == x->layers[j]) return bad(v, w2, NULL, "layer %d appears twice", x->layers[j]);
        }
    }
    if ((st = field(v, e, w, "selection", T_OBJ, NULLABLE, &sel))) return st;
    if (sel) {
        x->has_sel = true;
        subk(w2, sizeof w2, w, "selection");
        if ((st = get_str(v, sel, w2, "method", REQ, true, &x->method))) return st;
        if (!in_list(x->method, methods, ST_ARRAY_LEN(methods)))
            return bad(v, w2, "method", "'%s' is not one of top, random, norm, bottom, all, only, except", x->method);
        if ((st = get_int(v, sel, w2, "k", OPTIONAL, 0, s->n_layers, &x->k, &x->has_k))) return st;
        if ((st = get_int(v, sel, w2, "seed", OPTIONAL, INT64_MIN, INT64_MAX, &x->seed, &x->has_seed))) return st;
    }
    if ((st = get_num(v, e, w, "alpha", REQ, -1e6, 1e6, &x->alpha))) return st;
    if ((st = get_num(v, e, w, "perplexity", NULLABLE, 0, INFINITY, &x->ppl))) return st;
    if (x->ppl == 0) return bad(v, w, "perplexity", "is 0");

    if ((st = field(v, e, w, "results", T_OBJ, REQ, &res))) return st;
    if ((st = alloc_items(s->n_rows, sizeof *x->acc, (void **)&x->acc))) return st;
    subk(w2, sizeof w2, w, "results");
    for (size_t r = 0; r < s->n_rows; r++) {
        json_t *a;
        if ((st = field(v, res, w2, s->rows[r], T_OBJ, REQ, &a))) return st;
        char w3[320];
        subk(w3, sizeof w3, w2, s->rows[r]);
        if ((st = parse_acc(v, a, w3, &x->acc[r]))) return st;
    }
    const char *key;
    json_t *val;
    json_object_foreach(res, key, val) {
        if (row_index(s, key) == (size_t)-1)
            return bad(v, w2, key, "is neither in tasks nor in variants[0].results (every variant needs the same rows)");
    }

    if ((st = field(v, e, w, "vs_base", T_OBJ, NULLABLE, &vb))) return st;
    if (vb) {
        if ((st = alloc_items(s->n_rows, sizeof *x->vs_base, (void **)&x->vs_base))) return st;
        if ((st = alloc_items(s->n_rows, sizeof *x->has_vs_base, (void **)&x->has_vs_base))) return st;
        subk(w2, sizeof w2, w, "vs_base");
        json_object_foreach(vb, key, val) {
            size_t r = row_index(s, key);
            if (r == (size_t)-1) return bad(v, w2, key, "is not a row of results");
            char w3[320];
            subk(w3, sizeof w3, w2, key);
            if (!json_is_object(val)) return bad(v, w3, NULL, "expected an object, got %s", type_name(val));
            if ((st = parse_cmp(v, val, w3, &x->vs_base[r]))) return st;
            x->has_vs_base[r] = true;
        }
    }
    if ((st = field(v, e, w, "vs", T_OBJ, OPTIONAL, &vsx))) return st;
    return STETHO_OK;
}

/* "vs" of every variant, after all names are known. */
static stetho_status parse_pairs(const vctx *v, rp_summary *s, json_t *vs) {
    size_t n = 0;
    for (size_t i = 0; i < s->n_v; i++) {
        json_t *o = json_object_get(json_array_get(vs, i), "vs"), *val;
        const char *key;
        if (!json_is_object(o)) continue;
        json_object_foreach(o, key, val) n += json_is_object(val) ? json_object_size(val) : 1;
    }
    stetho_status st = alloc_items(n, sizeof *s->pairs, (void **)&s->pairs);
    if (st) return st;
    for (size_t i = 0; i < s->n_v; i++) {
        json_t *o = json_object_get(json_array_get(vs, i), "vs"), *val, *cv;
        const char *key, *rk;
        if (!json_is_object(o)) continue;
        char w[320], w2[640];
        sub(w, sizeof w, "", "variants", i);
        strcat(w, ".vs");
        json_object_foreach(o, key, val) {
            size_t b = 0;
            while (b < s->n_v && strcmp(s->v[b].name, key)) b++;
            if (b == s->n_v) return bad(v, w, key, "is not the name of a variant");
            if (b == i) return bad(v, w, key, "compares the variant with itself");
            if (!json_is_object(val)) return bad(v, w, key, "expected an object, got %s", type_name(val));
            char wk[480];
            snprintf(wk, sizeof wk, "%s.%s", w, key);
            json_object_foreach(val, rk, cv) {
                size_t r = row_index(s, rk);
                if (r == (size_t)-1) return bad(v, wk, rk, "is not a row of results");
                snprintf(w2, sizeof w2, "%s.%s", wk, rk);
                if (!json_is_object(cv)) return bad(v, w2, NULL, "expected an object, got %s", type_name(cv));
                rp_pair *p = &s->pairs[s->n_pairs];
                if ((st = parse_cmp(v, cv, w2, &p->c))) return st;
                p->a = i, p->b = b, p->row = r;
                s->n_pairs++;
            }
        }
    }
    return STETHO_OK;
}

static stetho_status parse_ablation(const vctx *v, rp_summary *s, bool *seen) {
    json_t *ab, *arr, *cs;
    stetho_status st = field(v, s->root, "", "ablation", T_OBJ, OPTIONAL, &ab);
    if (st || !ab) return st;
    s->has_ablation = true;
    s->abl_alpha = NAN;
    if ((st = get_num(v, ab, "ablation", "alpha", OPTIONAL, -1e6, 1e6, &s->abl_alpha))) return st;
    if ((st = layers_array(v, ab, "ablation", true, &arr))) return st;
    s->n_abl = json_array_size(arr);
    if ((st = alloc_items(s->n_abl, sizeof *s->abl, (void **)&s->abl))) return st;
    for (size_t i = 0; i < s->n_abl && !st; i++) {
        json_t *e = json_array_get(arr, i);
        char w[64];
        sub(w, sizeof w, "ablation", "layers", i);
        rp_abl_layer *L = &s->abl[i];
        st = get_layer(v, s, e, w, seen, &L->layer);
        if (!st) st = get_num(v, e, w, "single", OPTIONAL, 0, 1, &L->single);
        if (!st) st = get_num(v, e, w, "leave_one_out", OPTIONAL, 0, 1, &L->loo);
        if (!st) st = get_num(v, e, w, "importance", NULLABLE, -INFINITY, INFINITY, &L->importance);
    }
    if (st || (st = field(v, ab, "ablation", "correlations", T_ARR, OPTIONAL, &cs)) || !cs) return st;
    s->n_corr = json_array_size(cs);
    if ((st = alloc_items(s->n_corr, sizeof *s->corr, (void **)&s->corr))) return st;
    for (size_t i = 0; i < s->n_corr && !st; i++) {
        json_t *e = json_array_get(cs, i);
        char w[64];
        sub(w, sizeof w, "ablation", "correlations", i);
        if (!json_is_object(e)) return bad(v, w, NULL, "expected an object, got %s", type_name(e));
        st = get_str(v, e, w, "metric", REQ, true, &s->corr[i].metric);
        if (!st) st = get_num(v, e, w, "rho", NULLABLE, -1 - 1e-9, 1 + 1e-9, &s->corr[i].rho);
        if (!st) st = get_num(v, e, w, "p", NULLABLE, 0, 1, &s->corr[i].p);
    }
    return st;
}

static stetho_status parse_timings_notes(const vctx *v, rp_summary *s) {
    json_t *t, *steps, *notes;
    stetho_status st = field(v, s->root, "", "timings", T_OBJ, OPTIONAL, &t);
    if (st) return st;
    if (t) {
        s->has_timings = true;
        if ((st = get_num(v, t, "timings", "total_s", NULLABLE, 0, INFINITY, &s->total_s))) return st;
        if ((st = field(v, t, "timings", "steps", T_OBJ, OPTIONAL, &steps))) return st;
        if (steps) {
            size_t n = json_object_size(steps);
            if ((st = alloc_items(n, sizeof *s->step_names, (void **)&s->step_names))) return st;
            if ((st = alloc_items(n, sizeof *s->step_s, (void **)&s->step_s))) return st;
            const char *key;
            json_t *val;
            json_object_foreach(steps, key, val) {
                if (!json_is_number(val) || num(val) < 0)
                    return bad(v, "timings.steps", key, "expected seconds (a number >= 0), got %s", type_name(val));
                s->step_names[s->n_steps] = key;
                s->step_s[s->n_steps++] = num(val);
            }
        }
    }
    if ((st = field(v, s->root, "", "notes", T_ARR, OPTIONAL, &notes)) || !notes) return st;
    s->n_notes = json_array_size(notes);
    if ((st = alloc_items(s->n_notes, sizeof *s->notes, (void **)&s->notes))) return st;
    for (size_t i = 0; i < s->n_notes; i++) {
        json_t *e = json_array_get(notes, i);
        char w[32];
        sub(w, sizeof w, "", "notes", i);
        if (!json_is_string(e) || json_string_length(e) != strlen(json_string_value(e)))
            return bad(v, w, NULL, "expected a string, got %s", type_name(e));
        s->notes[i] = json_string_value(e);
    }
    return STETHO_OK;
}

stetho_status rp_summary_parse(rp_summary *s, const char *json, size_t len, const char *label) {
    memset(s, 0, sizeof *s);
    vctx v = {.file = label ? label : "summary.json"};
    json_error_t je;
    s->root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
    if (!s->root)
        return st_err(STETHO_ERR_FORMAT, "%s:%d:%d: not valid JSON: %s", v.file, je.line, je.column, je.text);
    if (!json_is_object(s->root)) {
        stetho_status st = bad(&v, "", NULL, "the top level is %s, not an object", type_name(s->root));
        rp_summary_free(s);
        return st;
    }
    bool *seen = NULL;
    json_t *vs;
    stetho_status st = get_str(&v, s->root, "", "stetho_version", REQ, false, &s->version);
    if (!st) st = get_str(&v, s->root, "", "title", REQ, false, &s->title);
    if (!st) st = get_str(&v, s->root, "", "created", REQ, false, &s->created);
    if (!st) st = parse_model(&v, s);
    if (!st) st = (seen = st_calloc((size_t)s->n_layers, 4 * sizeof *seen)) ? STETHO_OK : STETHO_ERR_NOMEM;
    /* one "seen" row per per-layer section, so each catches its own duplicates */
    if (!st) st = parse_taskvec(&v, s, seen);
    if (!st) st = parse_specificity(&v, s, seen + s->n_layers);
    if (!st) st = parse_scalpel(&v, s, seen + 2 * s->n_layers);
    if (!st) st = parse_ablation(&v, s, seen + 3 * s->n_layers);
    if (!st) st = parse_tasks(&v, s);
    if (!st) st = field(&v, s->root, "", "variants", T_ARR, REQ, &vs);
    if (!st && json_array_size(vs) == 0) st = bad(&v, "", "variants", "is empty");
    if (!st) st = alloc_items(json_array_size(vs), sizeof *s->v, (void **)&s->v);
    for (size_t i = 0; !st && i < json_array_size(vs); i++) {
        s->n_v = i + 1;
        st = parse_variant(&v, s, i, json_array_get(vs, i));
    }
    if (!st) st = parse_pairs(&v, s, vs);
    if (!st) st = parse_timings_notes(&v, s);
    st_free(seen);
    if (st) rp_summary_free(s);
    return st;
}

void rp_summary_free(rp_summary *s) {
    for (size_t i = 0; i < s->n_v; i++) {
        st_free(s->v[i].layers);
        st_free(s->v[i].acc);
        st_free(s->v[i].vs_base);
        st_free(s->v[i].has_vs_base);
    }
    st_free(s->v);
    for (size_t i = 0; s->spec && i < s->n_spec; i++) st_free(s->spec[i].scores);
    st_free(s->tv), st_free(s->metrics), st_free(s->spec), st_free(s->sc), st_free(s->rows);
    st_free(s->pairs), st_free(s->abl), st_free(s->corr), st_free(s->step_names), st_free(s->step_s);
    st_free(s->notes);
    json_decref(s->root);
    memset(s, 0, sizeof *s);
}
