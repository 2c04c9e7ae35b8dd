/* The study report: a summary.json generated here (counts chosen so some
 * differences are significant and some are not; intervals computed from the
 * formulas written out below) rendered to HTML and Markdown. Checks the numbers,
 * rows and marks that must appear, that the HTML's tags balance and it loads
 * nothing, escaping of hostile names, clear errors naming the key for malformed
 * summaries with nothing written, and fault injection of every allocation and
 * write. Also the SVG chart helpers on their own. */
#include "testutil.h"

#include "stetho/report.h"
#include "stetho/stats.h"
#include "stetho/svg.h"
#include "internal.h"

#include <ctype.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the fixture -------------------------------------------------------------- */

#define Z95 1.959963984540054

/* Wilson score interval, written out (independent of stats.c). */
static void wilson(double k, double n, double *lo, double *hi) {
    double p = k / n, z2 = Z95 * Z95, d = 1 + z2 / n, c = (p + z2 / (2 * n)) / d;
    double h = Z95 * sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / d;
    *lo = c - h, *hi = c + h;
}

/* Newcombe's hybrid score interval for k1/n1 - k2/n2. */
static void newcombe(double k1, double n1, double k2, double n2, double *lo, double *hi) {
    double l1, u1, l2, u2, p1 = k1 / n1, p2 = k2 / n2, d = p1 - p2;
    wilson(k1, n1, &l1, &u1);
    wilson(k2, n2, &l2, &u2);
    *lo = d - sqrt((p1 - l1) * (p1 - l1) + (u2 - p2) * (u2 - p2));
    *hi = d + sqrt((u1 - p1) * (u1 - p1) + (p2 - l2) * (p2 - l2));
}

static json_t *pair(double a, double b) {
    json_t *x = json_array();
    json_array_append_new(x, json_real(a));
    json_array_append_new(x, json_real(b));
    return x;
}

enum { N_ALG = 300, N_NT = 540, N_LAYERS = 4 };
static const char *TASKS[2] = {"minerva_math_algebra", "minerva_math_num_theory"};

typedef struct {
    const char *name, *kind, *label;
    int layers[4], n_layers; /* n_layers < 0: null */
    int alg, nt;             /* correct answers */
    double ppl;              /* 0 = null */
} vspec;

#define EVIL_NAME "<script>alert('x')</script>"
#define EVIL_LABEL "a & b | c *d* _e_ `f` [g](h) <i>"

static const vspec VARIANTS[] = {
    {"base", "base", "base", {0}, -1, 61, 160, 4.31},
    {"finetuned", "finetuned", "fine-tuned", {0, 1, 2, 3}, 4, 90, 213, 4.19},
    {"stetho_top2", "stethoscope", "stethoscope top-2", {1, 2}, 2, 70, 150, 4.25},
    {"norm2", "norm", "norm-ranked top-2", {0, 3}, 2, 30, 150, 4.40},
    {"scalpel", "scalpel", "projected", {0, 1, 2, 3}, 4, 62, 161, 0},
    {EVIL_NAME, "random", EVIL_LABEL, {0, 1}, 2, 61, 160, 4.30},
    {"single_0", "single", "tau in layer 0 only", {0}, 1, 65, 170, 0},
    {"loo_0", "leave_one_out", "tau in all but layer 0", {1, 2, 3}, 3, 80, 200, 0},
};
#define N_VARIANTS (sizeof VARIANTS / sizeof VARIANTS[0])

static json_t *acc_json(int k, int n) {
    json_t *o = json_object();
    double lo, hi;
    wilson(k, n, &lo, &hi);
    json_object_set_new(o, "correct", json_integer(k));
    json_object_set_new(o, "n", json_integer(n));
    json_object_set_new(o, "acc", json_real(round(10000.0 * k / n) / 10000)); /* rounded as a runner might */
    json_object_set_new(o, "ci", pair(lo, hi));
    return o;
}

/* Comparison of k1/n1 against base k2/n2 (unpooled z, a made-up McNemar p). */
static json_t *cmp_json(int k1, int n1, int k2, int n2, double p_holm, bool holm_null) {
    json_t *o = json_object();
    double p1 = (double)k1 / n1, p2 = (double)k2 / n2, lo, hi;
    double se = sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2), z = se > 0 ? (p1 - p2) / se : 0;
    double p = erfc(fabs(z) / sqrt(2));
    newcombe(k1, n1, k2, n2, &lo, &hi);
    json_object_set_new(o, "diff", json_real(p1 - p2));
    json_object_set_new(o, "ci", pair(lo, hi));
    json_object_set_new(o, "z", json_real(z));
    json_object_set_new(o, "p", json_real(p));
    json_object_set_new(o, "p_holm", holm_null ? json_null() : json_real(p_holm));
    json_object_set_new(o, "mcnemar_p", json_real(fmin(1, 0.9 * p)));
    bool sig = (holm_null ? p : p_holm) < 0.05;
    json_object_set_new(o, "significant", json_boolean(sig));
    json_object_set_new(o, "direction", json_string(k1 * n2 > k2 * n1 ? "up" : k1 * n2 < k2 * n1 ? "down" : "none"));
    return o;
}

static double pz(int k1, int n1, int k2, int n2) {
    double p1 = (double)k1 / n1, p2 = (double)k2 / n2, se = sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2);
    return se > 0 ? erfc(fabs((p1 - p2) / se) / sqrt(2)) : 1;
}

static json_t *fixture(void) {
    json_t *s = json_object();
    json_object_set_new(s, "stetho_version", json_string("0.1.0"));
    json_object_set_new(s, "title", json_string("tiny world, seed 1 <test>"));
    json_object_set_new(s, "created", json_string("2025-06-01T12:00:00Z"));
    json_t *m = json_object();
    json_object_set_new(m, "base", json_string("models/base"));
    json_object_set_new(m, "finetuned", json_string("models/ft"));
    json_object_set_new(m, "family", json_string("gemma3"));
    json_object_set_new(m, "n_layers", json_integer(N_LAYERS));
    json_object_set_new(m, "d_model", json_integer(16));
    json_object_set_new(s, "model", m);

    json_t *tv = json_object(), *tl = json_array();
    json_object_set_new(tv, "total_norm", json_real(2.5));
    for (int l = 0; l < N_LAYERS; l++) {
        json_t *e = json_object();
        json_object_set_new(e, "layer", json_integer(l));
        json_object_set_new(e, "norm", json_real(1.0 + 0.25 * l));
        json_object_set_new(e, "rel_norm", json_real(0.05));
        json_object_set_new(e, "energy_share", json_real(0.25));
        json_array_append_new(tl, e);
    }
    json_object_set_new(tv, "layers", tl);
    json_object_set_new(s, "task_vector", tv);

    json_t *sp = json_object(), *ms = json_array(), *sl = json_array();
    json_object_set_new(sp, "metric", json_string("mass_share"));
    json_array_append_new(ms, json_string("mass_share"));
    json_array_append_new(ms, json_string("auroc"));
    json_object_set_new(sp, "metrics", ms);
    for (int l = 0; l < N_LAYERS; l++) {
        json_t *e = json_object(), *sc = json_object();
        json_object_set_new(e, "layer", json_integer(l));
        /* layer 3 has no SAE */
        json_object_set_new(e, "score", l == 3 ? json_null() : json_real(0.1 * (l + 1)));
        json_object_set_new(sc, "mass_share", l == 3 ? json_null() : json_real(0.1 * (l + 1)));
        json_object_set_new(sc, "auroc", json_real(0.5 + 0.01 * l));
        json_object_set_new(e, "scores", sc);
        json_array_append_new(sl, e);
    }
    json_object_set_new(sp, "layers", sl);
    json_object_set_new(s, "specificity", sp);

    json_t *sc = json_object(), *cl = json_array();
    json_object_set_new(sc, "features", json_integer(2));
    json_object_set_new(sc, "d_model", json_integer(16));
    json_object_set_new(sc, "retained", json_real(0.071));
    json_object_set_new(sc, "expected_random", json_real(0.125));
    for (int l = 0; l < N_LAYERS; l++) {
        json_t *e = json_object();
        json_object_set_new(e, "layer", json_integer(l));
        json_object_set_new(e, "rank", json_integer(2));
        json_object_set_new(e, "retained", json_real(0.1 + 0.01 * l));
        json_object_set_new(e, "expected", json_real(0.125));
        json_array_append_new(cl, e);
    }
    json_object_set_new(sc, "layers", cl);
    json_object_set_new(s, "scalpel", sc);

    json_t *tasks = json_array();
    for (int i = 0; i < 2; i++) json_array_append_new(tasks, json_string(TASKS[i]));
    json_object_set_new(s, "tasks", tasks);

    json_t *vs = json_array();
    const vspec *b = &VARIANTS[0];
    for (size_t i = 0; i < N_VARIANTS; i++) {
        const vspec *x = &VARIANTS[i];
        json_t *v = json_object(), *res = json_object();
        json_object_set_new(v, "name", json_string(x->name));
        json_object_set_new(v, "kind", json_string(x->kind));
        json_object_set_new(v, "label", json_string(x->label));
        if (x->n_layers < 0) {
            json_object_set_new(v, "layers", json_null());
            json_object_set_new(v, "selection", json_null());
        } else {
            json_t *ls = json_array(), *sel = json_object();
            for (int j = 0; j < x->n_layers; j++) json_array_append_new(ls, json_integer(x->layers[j]));
            json_object_set_new(v, "layers", ls);
            json_object_set_new(sel, "method", json_string("top"));
            json_object_set_new(sel, "k", json_integer(x->n_layers));
            json_object_set_new(sel, "seed", json_integer(7));
            json_object_set_new(v, "selection", sel);
        }
        json_object_set_new(v, "alpha", json_real(1.0));
        json_object_set_new(res, TASKS[0], acc_json(x->alg, N_ALG));
        json_object_set_new(res, TASKS[1], acc_json(x->nt, N_NT));
        json_object_set_new(res, "minerva_math", acc_json(x->alg + x->nt, N_ALG + N_NT));
        json_object_set_new(v, "results", res);
        json_object_set_new(v, "perplexity", x->ppl > 0 ? json_real(x->ppl) : json_null());
        if (i == 0) {
            json_object_set_new(v, "vs_base", json_null());
        } else {
            /* Holm over the two subjects */
            double pa = pz(x->alg, N_ALG, b->alg, N_ALG), pn = pz(x->nt, N_NT, b->nt, N_NT);
            double ha = pa <= pn ? fmin(1, 2 * pa) : fmax(fmin(1, 2 * pn), pa);
            double hn = pn < pa ? fmin(1, 2 * pn) : fmax(fmin(1, 2 * pa), pn);
            json_t *vb = json_object();
            json_object_set_new(vb, TASKS[0], cmp_json(x->alg, N_ALG, b->alg, N_ALG, ha, false));
            json_object_set_new(vb, TASKS[1], cmp_json(x->nt, N_NT, b->nt, N_NT, hn, false));
            json_object_set_new(vb, "minerva_math", cmp_json(x->alg + x->nt, N_ALG + N_NT, b->alg + b->nt, N_ALG + N_NT, 0, true));
            json_object_set_new(v, "vs_base", vb);
        }
        if (!strcmp(x->name, "stetho_top2")) {
            json_t *o = json_object(), *g = json_object();
            json_object_set_new(g, "minerva_math", cmp_json(220, 840, 180, 840, 0, true));
            json_object_set_new(o, "norm2", g);
            json_object_set_new(v, "vs", o);
        }
        json_array_append_new(vs, v);
    }
    json_object_set_new(s, "variants", vs);

    json_t *ab = json_object(), *al = json_array(), *cs = json_array();
    for (int l = 0; l < N_LAYERS; l++) {
        json_t *e = json_object();
        json_object_set_new(e, "layer", json_integer(l));
        json_object_set_new(e, "single", json_real(0.26 + 0.01 * l));
        json_object_set_new(e, "leave_one_out", json_real(0.33 - 0.01 * l));
        json_object_set_new(e, "importance", json_real(0.03 + 0.01 * l));
        json_array_append_new(al, e);
    }
    json_object_set_new(ab, "layers", al);
    json_t *c0 = json_object(), *c1 = json_object();
    json_object_set_new(c0, "metric", json_string("mass_share"));
    json_object_set_new(c0, "rho", json_real(0.4));
    json_object_set_new(c0, "p", json_real(0.75));
    json_object_set_new(c1, "metric", json_string("auroc"));
    json_object_set_new(c1, "rho", json_null());
    json_object_set_new(c1, "p", json_null());
    json_array_append_new(cs, c0);
    json_array_append_new(cs, c1);
    json_object_set_new(ab, "correlations", cs);
    json_object_set_new(s, "ablation", ab);

    json_t *t = json_object(), *steps = json_object();
    json_object_set_new(t, "total_s", json_real(123.4));
    json_object_set_new(steps, "diagnose", json_real(12.5));
    json_object_set_new(steps, "eval", json_real(100.0));
    json_object_set_new(t, "steps", steps);
    json_object_set_new(s, "timings", t);
    json_t *notes = json_array();
    json_array_append_new(notes, json_string("layer 3 has no SAE: unscored"));
    json_array_append_new(notes, json_string("a note with <b>markup</b> & a | pipe"));
    json_object_set_new(s, "notes", notes);
    return s;
}

static char *dump(const json_t *j) {
    char *t = json_dumps(j, JSON_INDENT(1));
    assert_non_null(t);
    return t;
}

static void render(const json_t *j, char **html, char **md) {
    char *text = dump(j);
    stetho_status st = stetho_report_render(text, strlen(text), "summary.json", html, md);
    if (st) fail_msg("render failed: %s", stetho_last_error());
    free(text);
}

/* ---- checks ----------------------------------------------------------------------- */

/* The Markdown line that starts with prefix (NULL if none), copied. */
static char *md_line(const char *md, const char *prefix, int nth) {
    const char *p = md;
    while (p && *p) {
        const char *e = strchr(p, '\n');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (!strncmp(p, prefix, strlen(prefix)) && nth-- == 0) {
            char *l = malloc(n + 1);
            memcpy(l, p, n);
            l[n] = '\0';
            return l;
        }
        p = e ? e + 1 : NULL;
    }
    return NULL;
}

/* Table cells of a Markdown row: '|' not escaped with a backslash. */
static int md_cells(const char *row) {
    int n = 0;
    for (const char *p = row; *p; p++)
        if (*p == '|' && (p == row || p[-1] != '\\')) n++;
    return n - 1;
}

static bool is_void(const char *name) {
    static const char *v[] = {"meta", "br", "hr", "img", "input", "link", "wbr", "col", "area", "base", "source"};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
        if (!strcasecmp(name, v[i])) return true;
    return false;
}

/* Every element opened is closed in order (void elements and <x/> excepted);
 * the content of <style> is skipped. Returns NULL or a message. */
static const char *balanced(const char *h, char *msg, size_t msz) {
    char stack[256][24];
    int depth = 0;
    for (const char *p = h; (p = strchr(p, '<'));) {
        if (!strncmp(p, "<!--", 4)) {
            p = strstr(p, "-->");
            if (!p) return "unterminated comment";
            continue;
        }
        if (!strncmp(p, "<!", 2)) {
            p = strchr(p, '>');
            if (!p) return "unterminated declaration";
            continue;
        }
        bool close = p[1] == '/';
        const char *n = p + 1 + close;
        size_t len = 0;
        while (isalnum((unsigned char)n[len]) || n[len] == '-') len++;
        if (!len) {
            snprintf(msg, msz, "stray '<' at offset %zu", (size_t)(p - h));
            return msg;
        }
        const char *end = strchr(n, '>');
        if (!end) return "unterminated tag";
        char name[24];
        snprintf(name, sizeof name, "%.*s", (int)(len < 23 ? len : 23), n);
        if (close) {
            if (depth == 0 || strcmp(stack[depth - 1], name)) {
                snprintf(msg, msz, "</%s> closes <%s> at offset %zu", name, depth ? stack[depth - 1] : "(none)",
                         (size_t)(p - h));
                return msg;
            }
            depth--;
        } else if (end[-1] != '/' && !is_void(name)) {
            if (depth == 256) return "nesting too deep";
            strcpy(stack[depth++], name);
            if (!strcmp(name, "style")) {
                end = strstr(end, "</style>");
                if (!end) return "unterminated <style>";
                p = end;
                continue;
            }
        }
        p = end + 1;
    }
    if (depth) {
        snprintf(msg, msz, "<%s> never closed", stack[depth - 1]);
        return msg;
    }
    return NULL;
}

static void assert_contains(const char *hay, const char *needle) {
    if (!strstr(hay, needle)) fail_msg("expected to find \"%s\"", needle);
}

static void test_contents(void **state) {
    (void)state;
    json_t *j = fixture();
    char *html, *md;
    render(j, &html, &md);
    char buf[256];
    double lo, hi;

    /* accuracies: algebra 61/300 = 20.3% with its Wilson interval, in both documents */
    wilson(61, 300, &lo, &hi);
    snprintf(buf, sizeof buf, "[%.1f, %.1f]", 100 * lo, 100 * hi);
    char *row = md_line(md, "| base |", 1); /* 0: the variants table, 1: overall, 2: per subject */
    assert_non_null(row);
    row = (free(row), md_line(md, "| base |", 2));
    assert_non_null(row);
    assert_contains(row, "20.3");
    assert_contains(row, buf);
    assert_contains(row, "29.6"); /* 160/540 */
    free(row);
    assert_contains(html, buf);

    /* fine-tuned: both subjects significantly up; its Number Theory difference +9.8 points with
     * Newcombe's interval; the accuracy row carries the marks */
    row = md_line(md, "| fine-tuned |", 1);
    assert_non_null(row);
    assert_contains(row, "30.0 \xe2\x96\xb2"); /* 90/300 */
    assert_contains(row, "39.4 \xe2\x96\xb2"); /* 213/540 */
    free(row);
    newcombe(213, 540, 160, 540, &lo, &hi);
    snprintf(buf, sizeof buf, "+9.8 \xe2\x96\xb2 [%+.1f, %+.1f]", 100 * lo, 100 * hi);
    row = md_line(md, "| fine-tuned |", 2);
    assert_non_null(row);
    assert_contains(row, buf);
    free(row);
    /* norm2 dropped algebra from 61 to 30 of 300: marked down */
    row = md_line(md, "| norm-ranked top-2 |", 1);
    assert_non_null(row);
    assert_contains(row, "10.0 \xe2\x96\xbc");
    free(row);
    /* stethoscope: no significant change, no mark */
    row = md_line(md, "| stethoscope top-2 |", 1);
    assert_non_null(row);
    assert_true(!strstr(row, "\xe2\x96\xb2") && !strstr(row, "\xe2\x96\xbc"));
    free(row);
    assert_contains(html, "class=\"up\"");
    assert_contains(html, "class=\"down\"");

    /* the tests table: p of the Number Theory z-test (z = 3.41) */
    snprintf(buf, sizeof buf, "%.1e", pz(213, 540, 160, 540));
    assert_contains(md, buf);
    assert_contains(md, "| fine-tuned | num theory |");
    /* the pairwise comparison */
    assert_contains(md, "| stethoscope top-2 | norm-ranked top-2 | minerva math |");

    /* perplexity: values and change against base 4.31 */
    assert_contains(md, "| fine-tuned | 4.190 | -2.8% |");
    assert_contains(md, "| norm-ranked top-2 | 4.400 | +2.1% |");
    /* shares of the fine-tune's gain: stethoscope (220 - 221) / (303 - 221) = -1% */
    assert_contains(md, "share of fine-tune gain");

    /* per layer: norms, specificity (layer 3 unscored), scalpel, ablation */
    assert_contains(md, "| 1 | 1.25 | 0.05 | 25.0% | 0.2 | stethoscope | 11.00% | 12.50% | 27.0% | 32.0% | 0.04 |");
    assert_contains(md, "| 3 | 1.75 | 0.05 | 25.0% | \xe2\x80\x94 | norm | 13.00% | 12.50% | 29.0% | 30.0% | 0.06 |");
    assert_contains(md, "7.10% retained, 12.50% expected at random");
    assert_contains(md, "| mass_share | +0.400 | 0.750 |");
    assert_contains(md, "| auroc | undefined |");
    /* the ablation variants get their own table */
    assert_contains(md, "| tau in layer 0 only | 0 |");
    /* notes and timings */
    assert_contains(md, "- layer 3 has no SAE: unscored");
    assert_contains(md, "| eval | 100.0 |");

    /* the charts: accuracy (overall, by subject), perplexity, norm, specificity, scalpel, scatter, ablation */
    int n_svg = 0;
    for (const char *p = html; (p = strstr(p, "<svg ")); p++) n_svg++;
    assert_int_equal(n_svg, 8);
    assert_contains(html, "Spearman \xcf\x81 = 0.40, p = 0.750");
    assert_contains(html, ">n/a</text>"); /* layer 3's missing specificity bar */

    /* Markdown tables are rectangular */
    const char *p = md;
    int cols = -1;
    while (*p) {
        const char *e = strchr(p, '\n');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        char *l = strndup(p, n);
        if (l[0] == '|') {
            int c = md_cells(l);
            if (cols < 0) cols = c;
            else if (c != cols) fail_msg("table row with %d cells, header had %d: %s", c, cols, l);
        } else {
            cols = -1;
        }
        free(l);
        p = e ? e + 1 : p + n;
    }
    free(html);
    free(md);
    json_decref(j);
}

/* The leave-one-out bars are drawn against tau in all layers at the ablation's
 * alpha (what importance subtracts them from), the fine-tune only without one. */
static void test_ablation_reference(void **state) {
    (void)state;
    const char *ref = "\xcf\x84 in all layers";
    json_t *j = fixture();
    char *html, *md;
    render(j, &html, &md);
    assert_null(strstr(html, ref));
    free(html), free(md);
    json_t *v = json_array_get(json_object_get(j, "variants"), 3); /* norm2 becomes the all-layers variant */
    json_object_set_new(v, "kind", json_string("all"));
    json_object_set_new(json_object_get(j, "ablation"), "alpha", json_real(2.0));
    render(j, &html, &md);
    assert_null(strstr(html, ref)); /* another alpha than the variant's */
    free(html), free(md);
    json_object_set_new(json_object_get(j, "ablation"), "alpha", json_real(1.0));
    render(j, &html, &md);
    assert_non_null(strstr(html, ref));
    free(html), free(md);
    json_decref(j);
}

static void test_html_well_formed(void **state) {
    (void)state;
    json_t *j = fixture();
    char *html;
    render(j, &html, NULL);
    char msg[256];
    const char *err = balanced(html, msg, sizeof msg);
    if (err) fail_msg("HTML: %s", err);
    assert_true(!strncmp(html, "<!DOCTYPE html>", 15));
    assert_contains(html, "<meta charset=\"utf-8\">");
    /* self-contained: no scripts, no external resources; the only URL is SVG's namespace */
    for (const char *p = html; (p = strstr(p, "http")); p++)
        if (strncmp(p, "http://www.w3.org/2000/svg\"", 27)) fail_msg("a URL in the page: %.60s", p);
    const char *bad[] = {"<script", "src=", "@import", "url(", "<link", "<iframe", "javascript:"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (strcasestr(html, bad[i])) fail_msg("found \"%s\" in the page", bad[i]);
    free(html);
    json_decref(j);
}

static void test_escaping(void **state) {
    (void)state;
    json_t *j = fixture();
    char *html, *md;
    render(j, &html, &md);
    /* the hostile name and label are text, never markup */
    assert_contains(html, "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;");
    assert_contains(html, "a &amp; b | c *d* _e_ `f` [g](h) &lt;i&gt;");
    assert_contains(html, "tiny world, seed 1 &lt;test&gt;");
    assert_contains(html, "a note with &lt;b&gt;markup&lt;/b&gt; &amp; a | pipe");
    assert_null(strcasestr(html, "<script"));
    assert_null(strstr(html, "<i>"));
    assert_null(strstr(html, "<b>"));
    /* Markdown: escaped so it renders as typed, and the pipe does not split the row */
    assert_contains(md, "\\<script\\>alert('x')\\</script\\>");
    assert_contains(md, "a & b \\| c \\*d\\* \\_e\\_ \\`f\\` \\[g\\](h) \\<i\\>");
    for (const char *q = md; (q = strchr(q, '<')); q++)
        if (q == md || q[-1] != '\\') fail_msg("unescaped '<' in the Markdown: %.40s", q);
    char *row = md_line(md, "| \\<script\\>", 0);
    assert_non_null(row);
    assert_int_equal(md_cells(row), 6);
    free(row);
    free(html);
    free(md);
    json_decref(j);

    /* long multi-byte names are shown whole, and every output stays valid UTF-8 even
     * where a chart label has to be cut */
    j = fixture();
    char longname[1300] = "", metric[1000] = "";
    for (int i = 0; i < 600; i++) strcat(longname, "\xc3\xa9");
    for (int i = 0; i < 300; i++) strcat(metric, "\xe2\x82\xac");
    json_object_set_new(json_array_get(json_object_get(j, "variants"), 2), "label", json_string(longname));
    json_t *sp = json_object_get(j, "specificity"), *ms = json_array();
    json_array_append_new(ms, json_string(metric));
    json_object_set_new(sp, "metrics", ms);
    json_object_set_new(sp, "metric", json_string(metric));
    json_t *ls = json_object_get(sp, "layers");
    for (size_t i = 0; i < json_array_size(ls); i++) json_object_del(json_array_get(ls, i), "scores");
    render(j, &html, &md);
    assert_contains(html, longname);
    assert_contains(md, longname);
    assert_int_equal(st_utf8_check(html, strlen(html)), strlen(html));
    assert_int_equal(st_utf8_check(md, strlen(md)), strlen(md));
    free(html);
    free(md);
    json_decref(j);
}

/* ---- files, errors, faults --------------------------------------------------------- */

static const char *write_summary(const char *dir, const json_t *j) {
    char *t = dump(j);
    const char *p = tu_path(dir, "summary.json");
    tu_write_file(p, t, strlen(t));
    free(t);
    return p;
}

static void test_write(void **state) {
    (void)state;
    const char *dir = tu_tmpdir("report-write");
    json_t *j = fixture();
    const char *sp = write_summary(dir, j);
    size_t len0, len1;
    char *before = tu_read_file(sp, &len0);
    assert_int_equal(stetho_report_write(dir, NULL), STETHO_OK);
    assert_int_equal(tu_count_entries(dir), 3); /* summary, html, md: no temp files */
    char *html = tu_read_file(tu_path(dir, "report.html"), NULL), *md = tu_read_file(tu_path(dir, "report.md"), NULL);
    assert_non_null(html);
    assert_non_null(md);
    char *want_h, *want_m;
    render(j, &want_h, &want_m);
    assert_string_equal(html, want_h);
    assert_string_equal(md, want_m);
    /* the input is untouched; a second run replaces the reports */
    char *after = tu_read_file(sp, &len1);
    assert_int_equal(len0, len1);
    assert_memory_equal(before, after, len0);
    assert_int_equal(stetho_report_write(dir, NULL), STETHO_OK);
    assert_int_equal(tu_count_entries(dir), 3);
    /* -o: a new directory */
    const char *out = tu_path(dir, "out");
    assert_int_equal(stetho_report_write(dir, out), STETHO_OK);
    assert_int_equal(tu_count_entries(out), 2);
    /* -o under a missing parent: an error naming it, nothing created */
    assert_int_equal(stetho_report_write(dir, tu_path(dir, "no/such")), STETHO_ERR_IO);
    assert_non_null(strstr(stetho_last_error(), "no/such"));
    /* no summary */
    const char *empty = tu_tmpdir("report-empty");
    assert_int_equal(stetho_report_write(empty, NULL), STETHO_ERR_NOTFOUND);
    assert_non_null(strstr(stetho_last_error(), "summary.json"));
    assert_int_equal(tu_count_entries(empty), 0);
    free(before), free(after), free(html), free(md), free(want_h), free(want_m);
    json_decref(j);
}

/* Edit the fixture at a path like "variants.1.results.minerva_math_algebra.ci"; value
 * NULL deletes the key. */
static void edit(json_t *root, const char *path, json_t *value) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    json_t *cur = root;
    char *save, *tok = strtok_r(buf, ".", &save), *next;
    while ((next = strtok_r(NULL, ".", &save))) {
        cur = json_is_array(cur) ? json_array_get(cur, (size_t)atoi(tok)) : json_object_get(cur, tok);
        assert_non_null(cur);
        tok = next;
    }
    if (json_is_array(cur)) {
        if (value) json_array_set_new(cur, (size_t)atoi(tok), value);
        else json_array_remove(cur, (size_t)atoi(tok));
    } else if (value) {
        json_object_set_new(cur, tok, value);
    } else {
        assert_int_equal(json_object_del(cur, tok), 0);
    }
}

static void test_malformed(void **state) {
    (void)state;
    struct {
        const char *path;
        const char *value; /* JSON text; NULL = delete */
        const char *want;  /* in the message */
    } cases[] = {
        {"title", NULL, "summary.json: title: missing"},
        {"title", "3", "title: expected a string, got an integer"},
        {"model.n_layers", "\"8\"", "model.n_layers: expected an integer, got a string"},
        {"model.n_layers", "0", "model.n_layers: 0 is outside"},
        {"model", "[]", "model: expected an object, got an array"},
        {"tasks", "[]", "tasks: is empty"},
        {"tasks.1", "\"minerva_math_algebra\"", "tasks[1]: 'minerva_math_algebra' is listed twice"},
        {"variants", "[]", "variants: is empty"},
        {"variants.1.results.minerva_math_algebra.ci", "[0.5]", "variants[1].results.minerva_math_algebra.ci: expected [low, high]"},
        {"variants.1.results.minerva_math_algebra.ci", "[0.4, 0.2]", "is not an interval"},
        {"variants.1.results.minerva_math_algebra.ci", "[0.01, 0.02]", "does not contain the accuracy"},
        {"variants.1.results.minerva_math_algebra.correct", "301", "variants[1].results.minerva_math_algebra.correct: 301 is outside [0, 300]"},
        {"variants.1.results.minerva_math_algebra.acc", "0.5", "disagrees with correct / n"},
        {"variants.1.results.minerva_math_algebra.n", "0", "results.minerva_math_algebra.n: 0 is outside"},
        {"variants.2.results.minerva_math", NULL, "variants[2].results.minerva_math: missing"},
        {"variants.2.results.gsm8k", "{}", "variants[2].results.gsm8k: is neither in tasks"},
        {"variants.2.layers", "[0, 99]", "variants[2].layers[1]: layer 99 is outside the model's 4 layers"},
        {"variants.2.layers", "[1, 1]", "variants[2].layers[1]: layer 1 appears twice"},
        {"variants.2.layers", "[0.5]", "variants[2].layers[0]: expected a layer index"},
        {"variants.3.name", "\"finetuned\"", "variants[3].name: 'finetuned' is used by variants[1] too"},
        {"variants.3.name", "\"\"", "variants[3].name: is empty"},
        {"variants.3.kind", "\"magic\"", "variants[3].kind: 'magic' is not one of base, finetuned"},
        {"variants.3.selection.method", "\"best\"", "variants[3].selection.method: 'best' is not one of"},
        {"variants.3.alpha", "null", "variants[3].alpha: is null"},
        {"variants.3.perplexity", "-1", "variants[3].perplexity: -1 is outside"},
        {"variants.3.vs_base.minerva_math_algebra.direction", "\"sideways\"", "'sideways' is not up, down or none"},
        {"variants.3.vs_base.minerva_math_algebra.direction", "\"up\"", "direction: 'up' disagrees with diff"},
        {"variants.3.vs_base.minerva_math_algebra.significant", "1", "significant: expected a boolean"},
        {"variants.3.vs_base.minerva_math_algebra.p", "1.5", "vs_base.minerva_math_algebra.p: 1.5 is outside [0, 1]"},
        {"variants.3.vs_base.minerva_math_number", "{}", "variants[3].vs_base.minerva_math_number: is not a row"},
        {"variants.2.vs.norm2", NULL, NULL}, /* removing it is fine: see below */
        {"variants.2.vs.nope", "{}", "variants[2].vs.nope: is not the name of a variant"},
        {"variants.2.vs.stetho_top2", "{}", "compares the variant with itself"},
        {"specificity.layers.1.layer", "0", "specificity.layers[1].layer: layer 0 appears twice"},
        {"specificity.layers.1.scores.entropy", "0.3", "specificity.layers[1].scores.entropy: is not in specificity.metrics"},
        {"specificity.metric", "\"entropy\"", "specificity.metric: 'entropy' is not in specificity.metrics"},
        {"task_vector.layers.0.layer", "4", "task_vector.layers[0].layer: 4 is outside [0, 3]"},
        {"task_vector.layers.0", "7", "task_vector.layers[0]: expected an object, got an integer"},
        {"scalpel.retained", "2", "scalpel.retained: 2 is outside"},
        {"scalpel.layers.2.rank", "-1", "scalpel.layers[2].rank"},
        {"ablation.correlations.0.rho", "\"high\"", "ablation.correlations[0].rho: expected a number"},
        {"timings.steps.eval", "\"long\"", "timings.steps.eval: expected seconds"},
        {"notes.0", "{}", "notes[0]: expected a string, got an object"},
    };
    const char *dir = tu_tmpdir("report-malformed");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *j = fixture();
        json_error_t e;
        json_t *v = cases[i].value ? json_loads(cases[i].value, JSON_DECODE_ANY, &e) : NULL;
        if (cases[i].value) assert_non_null(v);
        edit(j, cases[i].path, v);
        write_summary(dir, j);
        stetho_status st = stetho_report_write(dir, NULL);
        if (!cases[i].want) {
            assert_int_equal(st, STETHO_OK);
            remove(tu_path(dir, "report.html"));
            remove(tu_path(dir, "report.md"));
        } else {
            if (st != STETHO_ERR_FORMAT) fail_msg("case %s: status %d, want a format error", cases[i].path, st);
            if (!strstr(stetho_last_error(), cases[i].want))
                fail_msg("case %s: message \"%s\" lacks \"%s\"", cases[i].path, stetho_last_error(), cases[i].want);
            if (tu_count_entries(dir) != 1) fail_msg("case %s left files behind", cases[i].path);
        }
        json_decref(j);
    }
    /* text that is not a summary at all */
    struct {
        const char *text, *want;
    } raw[] = {
        {"{\"title\": ", "summary.json:1:"},
        {"[1, 2]", "the top level is an array"},
        {"{\"title\": \"a\", \"title\": \"b\"}", "duplicate"},
        {"", "not valid JSON"},
        {"{\"stetho_version\": \"0\", \"title\": \"a\\u0000b\"}", "summary.json"},
    };
    for (size_t i = 0; i < sizeof raw / sizeof raw[0]; i++) {
        tu_write_file(tu_path(dir, "summary.json"), raw[i].text, strlen(raw[i].text));
        assert_int_equal(stetho_report_write(dir, NULL), STETHO_ERR_FORMAT);
        if (!strstr(stetho_last_error(), raw[i].want))
            fail_msg("raw case %zu: message \"%s\" lacks \"%s\"", i, stetho_last_error(), raw[i].want);
        assert_int_equal(tu_count_entries(dir), 1);
    }
}

/* Every prefix and many single-byte corruptions of a valid summary: either a
 * report or a format error, never a crash (ASan builds make this a real check). */
static void test_truncated_and_corrupted(void **state) {
    (void)state;
    json_t *j = fixture();
    char *text = json_dumps(j, JSON_COMPACT);
    size_t len = strlen(text), ok = 0, bad = 0;
    for (size_t n = 0; n < len; n += 13) {
        char *h = NULL, *m = NULL;
        stetho_status st = stetho_report_render(text, n, "t.json", &h, &m);
        assert_int_equal(st, STETHO_ERR_FORMAT);
        bad++;
    }
    uint64_t rng = 42;
    static const char subs[] = "0123456789.-e\"{}[],:nul x\\";
    for (int k = 0; k < 3000; k++) {
        char *c = strdup(text);
        size_t at = tu_rand_u64(&rng) % len;
        c[at] = subs[tu_rand_u64(&rng) % (sizeof subs - 1)];
        char *h = NULL, *m = NULL;
        stetho_status st = stetho_report_render(c, len, "t.json", &h, &m);
        if (st == STETHO_OK) {
            assert_non_null(h);
            assert_non_null(m);
            char msg[256];
            const char *err = balanced(h, msg, sizeof msg);
            if (err) fail_msg("corruption at %zu: HTML %s", at, err);
            ok++;
        } else {
            assert_int_equal(st, STETHO_ERR_FORMAT);
            assert_true(strlen(stetho_last_error()) > 0);
            bad++;
        }
        free(h), free(m), free(c);
    }
    print_message("%zu corrupted summaries rendered, %zu refused\n", ok, bad);
    free(text);
    json_decref(j);
}

static void test_minimal(void **state) {
    (void)state;
    /* one task, no group, no base, every optional section null or absent */
    const char *text =
        "{\"stetho_version\": \"0.1.0\", \"title\": \"minimal\", \"created\": \"now\","
        " \"model\": {\"base\": \"b\", \"finetuned\": null, \"family\": \"\", \"n_layers\": 2, \"d_model\": 8},"
        " \"task_vector\": null, \"specificity\": null, \"scalpel\": null, \"ablation\": null,"
        " \"tasks\": [\"minerva_math500\"],"
        " \"variants\": [{\"name\": \"only\", \"kind\": \"all\", \"label\": \"\", \"layers\": [], \"selection\": null,"
        "   \"alpha\": 0.5, \"results\": {\"minerva_math500\": {\"correct\": 0, \"n\": 10, \"acc\": 0, \"ci\": [0, 0.28]}},"
        "   \"perplexity\": null, \"vs_base\": null}]}";
    char *h, *m;
    assert_int_equal(stetho_report_render(text, strlen(text), "min.json", &h, &m), STETHO_OK);
    char msg[256];
    assert_null(balanced(h, msg, sizeof msg));
    assert_null(strstr(h, "id=\"scalpel\""));
    assert_null(strstr(h, "id=\"forgetting\""));
    assert_null(strstr(h, "id=\"vs-base\""));
    assert_contains(m, "| only | 0.0 [0.0, 28.0] |");
    assert_contains(m, "| only |  | all | none | \xe2\x80\x94 | 0.5 |");
    free(h), free(m);
}

static void test_fault_injection(void **state) {
    (void)state;
    const char *dir = tu_tmpdir("report-faults");
    json_t *j = fixture();
    write_summary(dir, j);
    json_decref(j);
    int failures = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (uint64_t n = 1;; n++) {
            if (pass == 0) stetho_fault_write_after(n);
            else stetho_fault_alloc_after(n);
            stetho_status st = stetho_report_write(dir, tu_path(dir, "out"));
            stetho_fault_write_after(0);
            stetho_fault_alloc_after(0);
            if (st == STETHO_OK) break;
            failures++;
            if (!(st == STETHO_ERR_IO || st == STETHO_ERR_NOMEM))
                fail_msg("pass %d fault %llu: status %d (%s)", pass, (unsigned long long)n, st, stetho_last_error());
            assert_true(strlen(stetho_last_error()) > 0);
            if (tu_count_entries(dir) != 1) fail_msg("pass %d fault %llu left files behind", pass, (unsigned long long)n);
            assert_true(n < 100000);
        }
        assert_int_equal(tu_count_entries(tu_path(dir, "out")), 2);
        remove(tu_path(dir, "out/report.html"));
        remove(tu_path(dir, "out/report.md"));
        remove(tu_path(dir, "out"));
    }
    print_message("%d injected faults, each ended cleanly\n", failures);
    assert_true(failures > 100);
}

/* ---- SVG helpers -------------------------------------------------------------------- */

static void test_svg(void **state) {
    (void)state;
    char *out = NULL, msg[256];
    stetho_svg_bar_chart c = {.v_min = NAN, .v_max = NAN};
    assert_int_equal(stetho_svg_bars(&c, &out), STETHO_ERR_INVALID);
    assert_null(out);

    const char *groups[] = {"a<b", "long & \"quoted\" label that will not fit in the margin at all, surely", "c"};
    double v[] = {0.2, NAN, -0.1}, lo[] = {0.1, NAN, -0.2}, hi[] = {0.3, NAN, 0.05}, lvl[] = {0.15, 0.15, 0.15};
    bool hl[] = {false, true, false};
    stetho_svg_bar_series se[2] = {{.name = "s<1>", .value = v, .lo = lo, .hi = hi},
                                   {.name = "k/d", .style = STETHO_SVG_LEVEL, .value = lvl}};
    for (int horiz = 0; horiz < 2; horiz++) {
        c = (stetho_svg_bar_chart){.title = "t & t", .value_label = "acc", .category_label = "layer", .n_groups = 3,
                                   .groups = groups, .n_series = 2, .series = se, .highlight = hl,
                                   .highlight_label = "chosen", .v_min = NAN, .v_max = NAN, .percent = true,
                                   .horizontal = horiz, .value_labels = true};
        assert_int_equal(stetho_svg_bars(&c, &out), STETHO_OK);
        assert_null(balanced(out, msg, sizeof msg));
        assert_contains(out, "a&lt;b");
        assert_contains(out, "s&lt;1&gt;");
        assert_contains(out, "<title>t &amp; t</title>");
        assert_contains(out, ">n/a</text>");
        assert_contains(out, "-10%"); /* the axis reaches below 0 for the negative bar */
        assert_contains(out, "20.0%");
        assert_null(strstr(out, "nan"));
        assert_null(strstr(out, "inf"));
        free(out);
    }
    /* all values missing, or all zero: a valid chart with a sensible axis */
    double zeros[] = {0, 0, 0}, nans[] = {NAN, NAN, NAN};
    stetho_svg_bar_series z = {.value = zeros}, n = {.value = nans};
    c = (stetho_svg_bar_chart){.n_groups = 3, .groups = groups, .n_series = 1, .series = &z, .v_min = NAN, .v_max = NAN};
    assert_int_equal(stetho_svg_bars(&c, &out), STETHO_OK);
    assert_null(balanced(out, msg, sizeof msg));
    free(out);
    c.series = &n;
    assert_int_equal(stetho_svg_bars(&c, &out), STETHO_OK);
    assert_null(strstr(out, "nan"));
    free(out);

    double x[] = {0.1, 0.2, NAN, 0.4}, y[] = {1, 3, 2, -1};
    const char *labels[] = {"L0", "L<1>", "L2", "L3"};
    stetho_svg_xy_series xs = {.name = "pts", .n = 4, .x = x, .y = y, .labels = labels, .line = true, .points = true};
    stetho_svg_xy_chart xc = {.title = "xy", .x_label = "x", .y_label = "y", .n_series = 1, .series = &xs,
                              .x_min = NAN, .x_max = NAN, .y_min = NAN, .y_max = NAN, .note = "rho = 0.5"};
    assert_int_equal(stetho_svg_xy(&xc, &out), STETHO_OK);
    assert_null(balanced(out, msg, sizeof msg));
    assert_contains(out, "L&lt;1&gt;");
    assert_contains(out, "rho = 0.5");
    int circles = 0;
    for (const char *p = out; (p = strstr(p, "<circle")); p++) circles++;
    assert_int_equal(circles, 3 + 1); /* three finite points and the legend's dot */
    free(out);
    xc.n_series = 0;
    assert_int_equal(stetho_svg_xy(&xc, &out), STETHO_ERR_INVALID);
    /* allocation failures end cleanly */
    for (uint64_t k = 1;; k++) {
        stetho_fault_alloc_after(k);
        xc.n_series = 1;
        stetho_status st = stetho_svg_xy(&xc, &out);
        stetho_fault_alloc_after(0);
        if (st == STETHO_OK) {
            free(out);
            break;
        }
        assert_int_equal(st, STETHO_ERR_NOMEM);
        assert_null(out);
    }
    assert_string_equal(stetho_svg_palette(0), stetho_svg_palette(10));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_contents),
        cmocka_unit_test(test_ablation_reference),
        cmocka_unit_test(test_html_well_formed),
        cmocka_unit_test(test_escaping),
        cmocka_unit_test(test_write),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_truncated_and_corrupted),
        cmocka_unit_test(test_minimal),
        cmocka_unit_test(test_fault_injection),
        cmocka_unit_test(test_svg),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
