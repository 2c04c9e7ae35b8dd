/* stetho report: summary.json -> report.html (self-contained: inline CSS and
 * SVG, no scripts, no network) and report.md (the same tables in Markdown).
 *
 * Both documents are built side by side from one description: a section
 * heading, a paragraph, a table or a figure is emitted to the HTML and the
 * Markdown buffer at once, so the two never disagree. Every string that comes
 * from the summary is escaped where it is emitted (HTML entities; Markdown
 * backslash escapes), never before. The wording reports what was measured. */
#include "stetho/report.h"
#include "stetho/checkpoint.h"
#include "stetho/svg.h"
#include "report_internal.h"
#include "svg_internal.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- escaping --------------------------------------------------------------- */

/* Markdown: escape what could start markup (emphasis, code, links, raw HTML,
 * entities, table cells, GitHub's strikethrough and math) so names render as the
 * text they are, while the raw file stays readable: '_' inside a word (d_model)
 * is not emphasis in CommonMark and is left alone. Line breaks become spaces so
 * a table row stays one line. */
static void md_escape(st_buf *b, const char *s) {
    const char *start = s;
    for (; s && *s; s++) {
        unsigned char c = (unsigned char)*s;
        bool word_before = s > start && (isalnum((unsigned char)s[-1]) || (unsigned char)s[-1] >= 0x80);
        bool word_after = isalnum((unsigned char)s[1]) || (unsigned char)s[1] >= 0x80;
        if (c == '\n' || c == '\r' || c == '\t') {
            st_buf_append(b, " ", 1);
            continue;
        }
        if (c < 0x20 || c == 0x7f) {
            st_buf_append(b, "\xef\xbf\xbd", 3);
            continue;
        }
        bool esc = strchr("\\`*[]<>|~$", c) != NULL || (c == '_' && !(word_before && word_after)) ||
                   (c == '&' && (word_after || s[1] == '#'));
        if (esc) st_buf_append(b, "\\", 1);
        st_buf_append(b, s, 1);
    }
}

/* snprintf into a fixed buffer may cut a multi-byte character; drop the partial
 * tail so the output stays valid UTF-8. */
static char *utf8_trim(char *s) {
    size_t n = strlen(s), i = n;
    while (i > 0 && ((unsigned char)s[i - 1] & 0xc0) == 0x80) i--;
    if (i > 0) {
        unsigned char c = (unsigned char)s[i - 1];
        size_t need = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
        if (n - (i - 1) < need) s[i - 1] = '\0';
    }
    return s;
}

/* ---- the two documents -------------------------------------------------------- */

typedef struct {
    st_buf h, m;     /* HTML, Markdown */
    char *svg;       /* scratch for a chart */
    bool nomem;      /* a chart could not be built */
} doc;

static void H(doc *d, const char *raw) { st_buf_append(&d->h, raw, strlen(raw)); }
static void M(doc *d, const char *raw) { st_buf_append(&d->m, raw, strlen(raw)); }
static void Hf(doc *d, const char *fmt, ...) ST_PRINTF(2, 3);
static void Hf(doc *d, const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    H(d, buf);
}
/* text from the summary, escaped for each document */
static void Ht(doc *d, const char *s) { st_xml_escape(&d->h, s); }
static void Mt(doc *d, const char *s) { md_escape(&d->m, s); }

static void section(doc *d, const char *id, const char *title) {
    Hf(d, "<h2 id=\"%s\">", id);
    Ht(d, title);
    H(d, "</h2>\n");
    M(d, "\n## ");
    Mt(d, title);
    M(d, "\n\n");
}

static void subsection(doc *d, const char *title) {
    H(d, "<h3>");
    Ht(d, title);
    H(d, "</h3>\n");
    M(d, "\n### ");
    Mt(d, title);
    M(d, "\n\n");
}

/* A paragraph of fixed text (ours, so written as is in both). */
static void para(doc *d, const char *fmt, ...) ST_PRINTF(2, 3);
static void para(doc *d, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *buf = n >= 0 ? st_malloc((size_t)n + 1) : NULL;
    if (!buf) {
        d->nomem = true;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(buf, (size_t)n + 1, fmt, ap);
    va_end(ap);
    H(d, "<p>");
    Ht(d, buf);
    H(d, "</p>\n");
    Mt(d, buf);
    M(d, "\n\n");
    st_free(buf);
}

static void figure(doc *d, stetho_status st, const char *caption) {
    if (st) {
        d->nomem = true;
        return;
    }
    H(d, "<figure>");
    H(d, d->svg);
    if (caption) {
        H(d, "<figcaption>");
        Ht(d, caption);
        H(d, "</figcaption>");
    }
    H(d, "</figure>\n");
    free(d->svg);
    d->svg = NULL;
}

/* ---- tables -------------------------------------------------------------------- */

/* A cell: main text, a secondary part (an interval, shown smaller in HTML) and a
 * mark (+1 ▲, -1 ▼). Plain text, escaped on output; the secondary part is always
 * the report's own numbers, so Markdown gets it unescaped to keep "[lo, hi]"
 * readable in the raw file. */
typedef struct {
    char *text, *sub, *title;
    int mark;
    const char *swatch; /* a colour key shown before the text (HTML only), or NULL */
} cell;

typedef struct {
    size_t n_cols, n_rows, cap;
    cell *head; /* [n_cols] */
    cell *c;    /* [n_rows * n_cols] */
    bool failed;
    const char *cls; /* HTML class of the table */
    size_t n_left;   /* leading columns of text, aligned left (the rest are numbers) */
} table;

static void tbl_init(table *t, size_t n_cols, const char *cls) {
    memset(t, 0, sizeof *t);
    t->n_cols = n_cols;
    t->cls = cls;
    t->n_left = 1;
    if (!(t->head = st_calloc(n_cols, sizeof *t->head))) t->failed = true;
}

static char *dupf(table *t, const char *fmt, va_list ap) {
    if (!fmt) return NULL;
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    char *s = n >= 0 ? st_malloc((size_t)n + 1) : NULL;
    if (!s) {
        t->failed = true;
        return NULL;
    }
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    return s;
}

static void tbl_head(table *t, size_t col, const char *title, const char *fmt, ...) ST_PRINTF(4, 5);
static void tbl_head(table *t, size_t col, const char *title, const char *fmt, ...) {
    if (t->failed) return;
    va_list ap;
    va_start(ap, fmt);
    t->head[col].text = dupf(t, fmt, ap);
    va_end(ap);
    if (title && !t->failed && !(t->head[col].title = st_strdup(title))) t->failed = true;
}

static void tbl_row(table *t) {
    if (t->failed) return;
    if (t->n_rows == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 16, bytes;
        cell *c = NULL;
        if (st_mul_size(cap * t->n_cols, sizeof *c, &bytes)) c = st_realloc(t->c, bytes);
        if (!c) {
            t->failed = true;
            return;
        }
        memset(c + t->cap * t->n_cols, 0, (cap - t->cap) * t->n_cols * sizeof *c);
        t->c = c, t->cap = cap;
    }
    t->n_rows++;
}

/* Cell col of the last row: text (printf), then optional sub and mark via tbl_sub/tbl_mark. */
static void tbl_cell(table *t, size_t col, const char *fmt, ...) ST_PRINTF(3, 4);
static void tbl_cell(table *t, size_t col, const char *fmt, ...) {
    if (t->failed || !t->n_rows) return;
    va_list ap;
    va_start(ap, fmt);
    t->c[(t->n_rows - 1) * t->n_cols + col].text = dupf(t, fmt, ap);
    va_end(ap);
}
static void tbl_sub(table *t, size_t col, const char *fmt, ...) ST_PRINTF(3, 4);
static void tbl_sub(table *t, size_t col, const char *fmt, ...) {
    if (t->failed || !t->n_rows) return;
    va_list ap;
    va_start(ap, fmt);
    t->c[(t->n_rows - 1) * t->n_cols + col].sub = dupf(t, fmt, ap);
    va_end(ap);
}
/* swatch colours are static strings (palette entries), not copied */
static void tbl_swatch(table *t, size_t col, const char *color) {
    if (!t->failed && t->n_rows) t->c[(t->n_rows - 1) * t->n_cols + col].swatch = color;
}
static void tbl_mark(table *t, size_t col, int mark) {
    if (!t->failed && t->n_rows) t->c[(t->n_rows - 1) * t->n_cols + col].mark = mark;
}

static void tbl_free(table *t) {
    for (size_t i = 0; i < t->n_rows * t->n_cols; i++) st_free(t->c[i].text), st_free(t->c[i].sub), st_free(t->c[i].title);
    if (t->head)
        for (size_t i = 0; i < t->n_cols; i++) st_free(t->head[i].text), st_free(t->head[i].title);
    st_free(t->c), st_free(t->head);
    memset(t, 0, sizeof *t);
}

static const char *mark_text(int m) { return m > 0 ? "\xe2\x96\xb2" : m < 0 ? "\xe2\x96\xbc" : ""; }

/* Emit the table to both documents and free it. */
static void tbl_emit(doc *d, table *t) {
    if (t->failed) {
        d->nomem = true;
        tbl_free(t);
        return;
    }
    Hf(d, "<div class=\"scroll\"><table%s%s%s>\n<thead><tr>", t->cls ? " class=\"" : "", t->cls ? t->cls : "",
       t->cls ? "\"" : "");
    M(d, "|");
    for (size_t j = 0; j < t->n_cols; j++) {
        const cell *h = &t->head[j];
        H(d, j < t->n_left ? "<th class=\"l\"" : "<th");
        if (h->title) {
            H(d, " title=\"");
            Ht(d, h->title);
            H(d, "\"");
        }
        H(d, ">");
        Ht(d, h->text ? h->text : "");
        H(d, "</th>");
        M(d, " ");
        Mt(d, h->text ? h->text : "");
        M(d, " |");
    }
    H(d, "</tr></thead>\n<tbody>\n");
    M(d, "\n|");
    for (size_t j = 0; j < t->n_cols; j++) M(d, j < t->n_left ? ":---|" : "---:|");
    M(d, "\n");
    for (size_t i = 0; i < t->n_rows; i++) {
        H(d, "<tr>");
        M(d, "|");
        for (size_t j = 0; j < t->n_cols; j++) {
            const cell *c = &t->c[i * t->n_cols + j];
            H(d, !j ? "<th scope=\"row\" class=\"l\">" : j < t->n_left ? "<td class=\"l\">" : "<td>");
            if (c->swatch) Hf(d, "<span class=\"key\" style=\"background:%s\"></span>", c->swatch);
            if (c->text) Ht(d, c->text);
            if (c->mark)
                Hf(d, " <span class=\"%s\" title=\"%s\">%s</span>", c->mark > 0 ? "up" : "down",
                   c->mark > 0 ? "significant improvement" : "significant degradation", mark_text(c->mark));
            if (c->sub) H(d, " <span class=\"ci\">"), Ht(d, c->sub), H(d, "</span>");
            H(d, j ? "</td>" : "</th>");
            M(d, " ");
            if (c->text) Mt(d, c->text);
            if (c->mark) M(d, " "), M(d, mark_text(c->mark));
            if (c->sub) M(d, " "), M(d, c->sub); /* ours: numbers in brackets */
            M(d, " |");
        }
        H(d, "</tr>\n");
        M(d, "\n");
    }
    H(d, "</tbody></table></div>\n");
    M(d, "\n");
    tbl_free(t);
}

/* ---- numbers ------------------------------------------------------------------- */

static const char *fmt_p(char *buf, size_t n, double p) {
    if (isnan(p)) snprintf(buf, n, "\xe2\x80\x94");
    else if (p < 1e-3) snprintf(buf, n, "%.1e", p);
    else snprintf(buf, n, "%.3f", p);
    return buf;
}

static const char *fmt_g(char *buf, size_t n, double x) {
    if (isnan(x)) snprintf(buf, n, "\xe2\x80\x94");
    else snprintf(buf, n, "%.4g", x);
    return buf;
}

static const char *fmt_pct(char *buf, size_t n, double x, int dec) {
    if (isnan(x)) snprintf(buf, n, "\xe2\x80\x94");
    else snprintf(buf, n, "%.*f%%", dec, 100 * x);
    return buf;
}

#define DASH "\xe2\x80\x94"

/* ---- summary helpers ------------------------------------------------------------ */

typedef struct {
    const rp_summary *s;
    size_t *main;     /* indices of non-ablation variants */
    size_t n_main;
    const char **color; /* [n_v] */
    long base, ft;    /* variant index of kind base / finetuned, -1 if none */
    long overall;     /* row shown as the overall accuracy, -1 if none */
    char **short_rows; /* [n_rows] display names */
} ctx;

/* Display name of a task: without lm-eval's "minerva_math_" prefix. */
static char *short_row(const char *r) {
    const char *pre = "minerva_math_";
    if (!strncmp(r, pre, strlen(pre)) && r[strlen(pre)]) r += strlen(pre);
    char *o = st_strdup(r);
    if (o)
        for (char *p = o; *p; p++)
            if (*p == '_') *p = ' ';
    return o;
}

/* Layers edited by any variant of the given kind; NULL when none. */
static bool *kind_layers(const rp_summary *s, const char *kind, bool *any) {
    *any = false;
    bool *h = st_calloc((size_t)s->n_layers, sizeof *h);
    if (!h) return NULL;
    for (size_t i = 0; i < s->n_v; i++)
        if (!strcmp(s->v[i].kind, kind) && s->v[i].has_layers)
            for (size_t j = 0; j < s->v[i].n_layers; j++) h[s->v[i].layers[j]] = *any = true;
    return h;
}

static void layers_text(const rp_variant *v, char *buf, size_t n) {
    if (!v->has_layers) {
        snprintf(buf, n, DASH);
        return;
    }
    size_t o = 0;
    buf[0] = '\0';
    size_t i = 0;
    for (; i < v->n_layers && o + 20 < n; i++) o += (size_t)snprintf(buf + o, n - o, "%s%d", i ? ", " : "", v->layers[i]);
    if (i < v->n_layers) snprintf(buf + o, n - o, ", \xe2\x80\xa6");
    if (v->n_layers == 0) snprintf(buf, n, "none");
}

/* ---- sections -------------------------------------------------------------------- */

static void sec_header(doc *d, const ctx *c) {
    const rp_summary *s = c->s;
    H(d, "<header><p class=\"kicker\">stetho study report</p><h1>");
    Ht(d, s->title);
    H(d, "</h1>\n<p class=\"sub\">");
    Ht(d, s->created);
    H(d, " &middot; stetho ");
    Ht(d, s->version);
    H(d, "</p></header>\n");
    M(d, "# ");
    Mt(d, s->title);
    M(d, "\n\nstetho study report \xc2\xb7 ");
    Mt(d, s->created);
    M(d, " \xc2\xb7 stetho ");
    Mt(d, s->version);
    M(d, "\n");
}

static void nav(doc *d, const ctx *c) {
    const rp_summary *s = c->s;
    bool any_vs = false, any_ppl = false;
    for (size_t i = 0; i < s->n_v; i++) any_vs |= s->v[i].vs_base != NULL, any_ppl |= !isnan(s->v[i].ppl);
    H(d, "<nav><a href=\"#run\">Run</a><a href=\"#accuracy\">Accuracy</a>");
    if (any_vs) H(d, "<a href=\"#vs-base\">Difference from base</a>");
    if (s->n_pairs) H(d, "<a href=\"#pairs\">Other comparisons</a>");
    if (any_ppl) H(d, "<a href=\"#forgetting\">Forgetting</a>");
    if (s->has_tv) H(d, "<a href=\"#task-vector\">Task vector</a>");
    if (s->has_spec) H(d, "<a href=\"#specificity\">Specificity</a>");
    if (s->has_scalpel) H(d, "<a href=\"#scalpel\">Scalpel</a>");
    if (s->has_ablation) H(d, "<a href=\"#ablation\">Ablation</a>");
    if (s->has_tv || s->has_spec || s->has_scalpel || s->has_ablation) H(d, "<a href=\"#layers\">Per layer</a>");
    if (s->n_notes || s->has_timings) H(d, "<a href=\"#notes\">Notes</a>");
    H(d, "</nav>\n");
}

static void kv(doc *d, const char *k, const char *v) {
    H(d, "<dt>");
    Ht(d, k);
    H(d, "</dt><dd>");
    Ht(d, v);
    H(d, "</dd>\n");
    M(d, "- **");
    Mt(d, k);
    M(d, ":** ");
    Mt(d, v);
    M(d, "\n");
}

static void sec_run(doc *d, const ctx *c) {
    const rp_summary *s = c->s;
    section(d, "run", "Run");
    char buf[1024];
    H(d, "<dl class=\"meta\">\n");
    kv(d, "base model", s->base_model);
    kv(d, "fine-tuned model", s->ft_model ? s->ft_model : DASH);
    snprintf(buf, sizeof buf, "%s, %ld layers, d_model %ld", *s->family ? s->family : "?", s->n_layers, s->d_model);
    utf8_trim(buf);
    kv(d, "architecture", buf);
    st_buf tasks;
    st_buf_init(&tasks);
    for (size_t r = 0; r < s->n_tasks; r++)
        st_buf_printf(&tasks, "%s%s (%llu)", r ? ", " : "", s->rows[r], (unsigned long long)s->v[0].acc[r].n);
    if (tasks.failed) d->nomem = true;
    kv(d, "tasks (problems)", tasks.data ? tasks.data : "");
    st_buf_free(&tasks);
    if (s->has_timings && !isnan(s->total_s)) {
        snprintf(buf, sizeof buf, "%.1f s (%.1f min)", s->total_s, s->total_s / 60);
        kv(d, "wall time", buf);
    }
    H(d, "</dl>\n");
    M(d, "\n");

    subsection(d, "Variants");
    para(d, "Each variant is the base model plus alpha times the task vector on the layers listed "
            "(for the scalpel, the projected task vector). Colours are those of the charts.");
    table t;
    tbl_init(&t, 6, "variants");
    t.n_left = 5;
    tbl_head(&t, 0, NULL, "variant");
    tbl_head(&t, 1, NULL, "label");
    tbl_head(&t, 2, NULL, "kind");
    tbl_head(&t, 3, NULL, "layers");
    tbl_head(&t, 4, NULL, "selection");
    tbl_head(&t, 5, NULL, "alpha");
    for (size_t i = 0; i < s->n_v; i++) {
        const rp_variant *v = &s->v[i];
        tbl_row(&t);
        tbl_cell(&t, 0, "%s", v->name);
        tbl_swatch(&t, 0, c->color[i]);
        tbl_cell(&t, 1, "%s", v->label);
        tbl_cell(&t, 2, "%s", v->kind);
        layers_text(v, buf, sizeof buf);
        tbl_cell(&t, 3, "%s", buf);
        if (v->has_sel) {
            char k[32] = "", seed[40] = "";
            if (v->has_k) snprintf(k, sizeof k, " k=%lld", v->k);
            if (v->has_seed) snprintf(seed, sizeof seed, " seed=%lld", v->seed);
            tbl_cell(&t, 4, "%s%s%s", v->method, k, seed);
        } else {
            tbl_cell(&t, 4, DASH);
        }
        tbl_cell(&t, 5, "%g", v->alpha);
    }
    tbl_emit(d, &t);
}

/* Accuracy cell: "20.3" with "[16.0, 25.0]" and the mark against base. */
static void acc_cell(table *t, size_t col, const rp_variant *v, size_t r, uint64_t n_ref) {
    const rp_acc *a = &v->acc[r];
    if (a->n != n_ref) tbl_cell(t, col, "%.1f (n=%llu)", 100 * a->acc, (unsigned long long)a->n);
    else tbl_cell(t, col, "%.1f", 100 * a->acc);
    tbl_sub(t, col, "[%.1f, %.1f]", 100 * a->lo, 100 * a->hi);
    if (v->vs_base && v->has_vs_base[r] && v->vs_base[r].significant) tbl_mark(t, col, v->vs_base[r].dir);
}

/* Difference cell in percentage points with its Newcombe interval and mark. */
/* percentage points to one decimal, never "-0.0" */
static double pp(double x) {
    double v = 100 * x;
    return fabs(v) < 0.05 ? 0.0 : v;
}

static void diff_cell(table *t, size_t col, const rp_cmp *x) {
    tbl_cell(t, col, "%+.1f", pp(x->diff));
    tbl_sub(t, col, "[%+.1f, %+.1f]", pp(x->lo), pp(x->hi));
    if (x->significant) tbl_mark(t, col, x->dir);
}

static const char *vname(const rp_variant *v) { return v->label && *v->label ? v->label : v->name; }

/* Share of the fine-tune's effect that a variant reproduces: (x - base) / (ft - base),
 * shown only when the fine-tune moved the quantity in the expected direction. */
static double share_of(double x, double base, double ft) {
    double span = ft - base;
    if (isnan(x) || isnan(base) || isnan(ft) || span <= 0) return NAN;
    return (x - base) / span;
}

static void sec_accuracy(doc *d, const ctx *c) {
    const rp_summary *s = c->s;
    size_t nm = c->n_main;
    section(d, "accuracy", "Accuracy");
    para(d, "Exact-match accuracy in %% with Wilson 95%% intervals in brackets. \xe2\x96\xb2 / \xe2\x96\xbc mark a "
            "difference from base that the study flagged as significant after Holm\xe2\x80\x93"
            "Bonferroni adjustment (tests in the next section).");
    if (nm == 0) {
        para(d, "No variant other than the per-layer ablations was evaluated.");
        return;
    }
    const char **names = st_calloc(nm, sizeof *names), **cols = st_calloc(nm, sizeof *cols);
    double *v = st_calloc(3 * nm, sizeof *v);
    if (!names || !cols || !v) goto oom;
    for (size_t k = 0; k < nm; k++) names[k] = vname(&s->v[c->main[k]]), cols[k] = c->color[c->main[k]];

    if (c->overall >= 0) {
        size_t r = (size_t)c->overall;
        const rp_variant *b = c->base >= 0 ? &s->v[c->base] : NULL, *f = c->ft >= 0 ? &s->v[c->ft] : NULL;
        for (size_t k = 0; k < nm; k++) {
            const rp_acc *a = &s->v[c->main[k]].acc[r];
            v[k] = a->acc, v[nm + k] = a->lo, v[2 * nm + k] = a->hi;
        }
        stetho_svg_bar_series se = {.colors = cols, .value = v, .lo = v + nm, .hi = v + 2 * nm};
        char title[256];
        snprintf(title, sizeof title, "Accuracy on %s by variant", s->rows[r]);
        utf8_trim(title);
        stetho_svg_bar_chart ch = {.title = title, .value_label = "accuracy (bars: Wilson 95% interval)",
                                   .n_groups = nm, .groups = names, .n_series = 1, .series = &se, .v_min = 0,
                                   .v_max = NAN, .percent = true, .horizontal = true, .value_labels = true};
        char st_title[300];
        snprintf(st_title, sizeof st_title, "Overall: %s", s->rows[r]);
        utf8_trim(st_title);
        subsection(d, st_title);
        figure(d, stetho_svg_bars(&ch, &d->svg), NULL);

        bool ppl = false;
        for (size_t k = 0; k < nm; k++) ppl |= !isnan(s->v[c->main[k]].ppl);
        bool gain = b && f && !isnan(share_of(f->acc[r].acc, b->acc[r].acc, f->acc[r].acc));
        bool forget = ppl && b && f && !isnan(share_of(f->ppl, b->ppl, f->ppl));
        size_t ncol = 3 + gain + ppl + forget, col;
        table t;
        tbl_init(&t, ncol, NULL);
        tbl_head(&t, 0, NULL, "variant");
        tbl_head(&t, 1, s->rows[r], "accuracy %%");
        tbl_head(&t, 2, NULL, "vs base (points)");
        col = 3;
        if (gain) tbl_head(&t, col++, "(variant - base) / (fine-tuned - base)", "share of fine-tune gain");
        if (ppl) tbl_head(&t, col++, NULL, "perplexity");
        if (forget) tbl_head(&t, col++, "(variant - base) / (fine-tuned - base), general-text perplexity",
                             "share of fine-tune perplexity rise");
        for (size_t k = 0; k < nm; k++) {
            const rp_variant *x = &s->v[c->main[k]];
            tbl_row(&t);
            tbl_cell(&t, 0, "%s", vname(x));
            acc_cell(&t, 1, x, r, x->acc[r].n);
            if (x->vs_base && x->has_vs_base[r]) diff_cell(&t, 2, &x->vs_base[r]);
            else tbl_cell(&t, 2, DASH);
            col = 3;
            char buf[64];
            if (gain) tbl_cell(&t, col++, "%s", fmt_pct(buf, sizeof buf, share_of(x->acc[r].acc, b->acc[r].acc, f->acc[r].acc), 0));
            if (ppl) tbl_cell(&t, col++, "%s", isnan(x->ppl) ? DASH : (snprintf(buf, sizeof buf, "%.3f", x->ppl), buf));
            if (forget) tbl_cell(&t, col++, "%s", fmt_pct(buf, sizeof buf, share_of(x->ppl, b->ppl, f->ppl), 0));
        }
        tbl_emit(d, &t);
        if (gain || forget)
            para(d, "Shares relate each variant to the full fine-tune: 0%% is the base model, 100%% the fine-tuned "
                    "model. They are ratios of measured differences and carry those differences' uncertainty.");
    }

    if (s->n_tasks > 1) {
        subsection(d, "By subject");
        stetho_svg_bar_series *ser = st_calloc(nm, sizeof *ser);
        double *a = st_calloc(3 * nm * s->n_tasks, sizeof *a);
        if (!ser || !a) {
            st_free(ser), st_free(a);
            goto oom;
        }
        for (size_t k = 0; k < nm; k++) {
            const rp_variant *x = &s->v[c->main[k]];
            double *val = a + 3 * k * s->n_tasks, *lo = val + s->n_tasks, *hi = lo + s->n_tasks;
            for (size_t r = 0; r < s->n_tasks; r++) val[r] = x->acc[r].acc, lo[r] = x->acc[r].lo, hi[r] = x->acc[r].hi;
            ser[k] = (stetho_svg_bar_series){.name = names[k], .color = cols[k], .value = val, .lo = lo, .hi = hi};
        }
        stetho_svg_bar_chart ch = {.title = "Accuracy by subject and variant", .value_label = "accuracy",
                                   .n_groups = s->n_tasks, .groups = (const char *const *)c->short_rows,
                                   .n_series = nm, .series = ser, .v_min = 0, .v_max = NAN, .percent = true,
                                   .value_labels = true, .width = 900};
        figure(d, stetho_svg_bars(&ch, &d->svg), "Whiskers: Wilson 95% intervals. Hover a bar for its value.");
        st_free(ser), st_free(a);
    }

    table t;
    tbl_init(&t, 1 + s->n_rows, s->n_rows > 3 ? "stack" : NULL);
    tbl_head(&t, 0, NULL, "variant");
    for (size_t r = 0; r < s->n_rows; r++) tbl_head(&t, 1 + r, s->rows[r], "%s", c->short_rows[r]);
    tbl_row(&t);
    tbl_cell(&t, 0, "problems");
    for (size_t r = 0; r < s->n_rows; r++) tbl_cell(&t, 1 + r, "%llu", (unsigned long long)s->v[c->main[0]].acc[r].n);
    for (size_t k = 0; k < nm; k++) {
        const rp_variant *x = &s->v[c->main[k]];
        tbl_row(&t);
        tbl_cell(&t, 0, "%s", vname(x));
        for (size_t r = 0; r < s->n_rows; r++) acc_cell(&t, 1 + r, x, r, s->v[c->main[0]].acc[r].n);
    }
    subsection(d, "Table");
    tbl_emit(d, &t);
    st_free(names), st_free(cols), st_free(v);
    return;
oom:
    d->nomem = true;
    st_free(names), st_free(cols), st_free(v);
}

static void tests_table(doc *d, const ctx *c) {
    const rp_summary *s = c->s;
    char b1[32], b2[32], b3[32];
    table t;
    tbl_init(&t, 8, "tests");
    t.n_left = 2;
    tbl_head(&t, 0, NULL, "variant");
    tbl_head(&t, 1, NULL, "subject");
    tbl_head(&t, 2, "variant - base, percentage points [Newcombe 95%]", "diff");
    tbl_head(&t, 3, "two-proportion z", "z");
    tbl_head(&t, 4, "two-sided p of the z-test", "p");
    tbl_head(&t, 5, "McNemar exact test on paired per-problem verdicts", "McNemar p");
    tbl_head(&t, 6, "Holm-Bonferroni adjusted p", "Holm p");
    tbl_head(&t, 7, NULL, "significant");
    for (size_t i = 0; i < s->n_v; i++) {
        const rp_variant *x = &s->v[i];
        if (!x->vs_base) continue;
        for (size_t r = 0; r < s->n_rows; r++) {
            if (!x->has_vs_base[r]) continue;
            const rp_cmp *q = &x->vs_base[r];
            tbl_row(&t);
            tbl_cell(&t, 0, "%s", vname(x));
            tbl_cell(&t, 1, "%s", c->short_rows[r]);
            diff_cell(&t, 2, q);
            tbl_cell(&t, 3, "%s", isnan(q->z) ? DASH : (snprintf(b1, sizeof b1, "%.2f", q->z), b1));
            tbl_cell(&t, 4, "%s", fmt_p(b1, sizeof b1, q->p));
            tbl_cell(&t, 5, "%s", fmt_p(b2, sizeof b2, q->mcnemar_p));
            tbl_cell(&t, 6, "%s", fmt_p(b3, sizeof b3, q->p_holm));
            tbl_cell(&t, 7, "%s", q->significant ? (q->dir > 0 ? "yes, up" : "yes, down") : "no");
        }
    }
    tbl_emit(d, &t);
}

static void sec_vs_base(doc *d, const ctx *c) {
    const rp_summary *s = c->s;
    size_t n = 0;
    for (size_t k = 0; k < c->n_main; k++) n += s->v[c->main[k]].vs_base != NULL;
    if (!n) return;
    section(d, "vs-base", "Difference from base");
    para(d, "Accuracy of each variant minus the base model's, in percentage points, with Newcombe (hybrid score) "
            "95%% intervals. The marks are the study's: significant after Holm\xe2\x80\x93"
            "Bonferroni adjustment across subjects.");
    table t;
    tbl_init(&t, 1 + s->n_rows, s->n_rows > 3 ? "stack" : NULL);
    tbl_head(&t, 0, NULL, "variant");
    for (size_t r = 0; r < s->n_rows; r++) tbl_head(&t, 1 + r, s->rows[r], "%s", c->short_rows[r]);
    for (size_t k = 0; k < c->n_main; k++) {
        const rp_variant *x = &s->v[c->main[k]];
        if (!x->vs_base) continue;
        tbl_row(&t);
        tbl_cell(&t, 0, "%s", vname(x));
        for (size_t r = 0; r < s->n_rows; r++) {
            if (x->has_vs_base[r]) diff_cell(&t, 1 + r, &x->vs_base[r]);
            else tbl_cell(&t, 1 + r, DASH);
        }
    }
    tbl_emit(d, &t);
    subsection(d, "All tests");
    para(d, "z and p: two-proportion z-test; McNemar: exact test on the paired per-problem verdicts (when the runs "
            "share problems); Holm: the adjusted p-value behind the marks.");
    H(d, "<details><summary>Show every test</summary>\n");
    tests_table(d, c);
    H(d, "</details>\n");
}

static void sec_pairs(doc *d, const ctx *c) {
    const rp_summary *s = c->s;
    if (!s->n_pairs) return;
    section(d, "pairs", "Other comparisons");
    para(d, "Variant minus the variant it is compared with, in percentage points with Newcombe 95%% intervals; "
            "marks as the study flagged them.");
    char b1[32], b2[32], b3[32];
    table t;
    tbl_init(&t, 7, "tests");
    t.n_left = 3;
    tbl_head(&t, 0, NULL, "variant");
    tbl_head(&t, 1, NULL, "compared with");
    tbl_head(&t, 2, NULL, "subject");
    tbl_head(&t, 3, NULL, "diff");
    tbl_head(&t, 4, "two-sided p of the z-test", "p");
    tbl_head(&t, 5, "McNemar exact test", "McNemar p");
    tbl_head(&t, 6, "Holm-Bonferroni adjusted p", "Holm p");
    for (size_t i = 0; i < s->n_pairs; i++) {
        const rp_pair *p = &s->pairs[i];
        tbl_row(&t);
        tbl_cell(&t, 0, "%s", vname(&s->v[p->a]));
        tbl_cell(&t, 1, "%s", vname(&s->v[p->b]));
        tbl_cell(&t, 2, "%s", c->short_rows[p->row]);
        diff_cell(&t, 3, &p->c);
        tbl_cell(&t, 4, "%s", fmt_p(b1, sizeof b1, p->c.p));
        tbl_cell(&t, 5, "%s", fmt_p(b2, sizeof b2, p->c.mcnemar_p));
        tbl_cell(&t, 6, "%s", fmt_p(b3, sizeof b3, p->c.p_holm));
    }
    tbl_emit(d, &t);
}

static void sec_forgetting(doc *d, const ctx *c) {
    const rp_summary *s = c->s;
    size_t n = 0, n_main = 0;
    for (size_t i = 0; i < s->n_v; i++) n += !isnan(s->v[i].ppl), n_main += !isnan(s->v[i].ppl) && !s->v[i].ablation;
    if (!n) return;
    section(d, "forgetting", "Forgetting: general-text perplexity");
    const rp_variant *b = c->base >= 0 && !isnan(s->v[c->base].ppl) ? &s->v[c->base] : NULL;
    para(d, "Perplexity of each variant on the general-text set (lower is better). A rise over the base model is "
            "what the edit costs outside the domain.%s",
         b ? " The chart shows the change relative to the base model." : "");
    /* the chart: change vs base in % (or raw perplexity without a base), main variants */
    if (n_main) {
        const char **names = st_calloc(n_main, sizeof *names), **cols = st_calloc(n_main, sizeof *cols);
        double *v = st_calloc(n_main, sizeof *v);
        if (!names || !cols || !v) d->nomem = true;
        else {
            size_t k = 0;
            for (size_t i = 0; i < s->n_v; i++) {
                const rp_variant *x = &s->v[i];
                if (isnan(x->ppl) || x->ablation) continue;
                names[k] = vname(x), cols[k] = c->color[i], v[k++] = b ? x->ppl / b->ppl - 1 : x->ppl;
            }
            stetho_svg_bar_series se = {.colors = cols, .value = v};
            stetho_svg_bar_chart ch = {.title = "General-text perplexity by variant",
                                       .value_label = b ? "perplexity change vs base" : "perplexity",
                                       .n_groups = n_main, .groups = names, .n_series = 1, .series = &se,
                                       .v_min = NAN, .v_max = NAN, .percent = b != NULL, .horizontal = true,
                                       .value_labels = true};
            figure(d, stetho_svg_bars(&ch, &d->svg), NULL);
        }
        st_free(names), st_free(cols), st_free(v);
    }
    table t;
    tbl_init(&t, b ? 3 : 2, NULL);
    tbl_head(&t, 0, NULL, "variant");
    tbl_head(&t, 1, NULL, "perplexity");
    if (b) tbl_head(&t, 2, NULL, "change vs base");
    for (size_t i = 0; i < s->n_v; i++) {
        const rp_variant *x = &s->v[i];
        if (isnan(x->ppl)) continue;
        tbl_row(&t);
        tbl_cell(&t, 0, "%s", vname(x));
        tbl_cell(&t, 1, "%.3f", x->ppl);
        if (b) tbl_cell(&t, 2, "%+.1f%%", pp(x->ppl / b->ppl - 1));
    }
    tbl_emit(d, &t);
}

/* Group labels "0", "1", ... for n layers. */
static char **layer_labels(const long *layers, size_t n) {
    char **l = st_calloc(n ? n : 1, sizeof *l);
    if (!l) return NULL;
    for (size_t i = 0; i < n; i++) {
        char buf[24];
        snprintf(buf, sizeof buf, "%ld", layers[i]);
        if (!(l[i] = st_strdup(buf))) {
            for (size_t j = 0; j < i; j++) st_free(l[j]);
            st_free(l);
            return NULL;
        }
    }
    return l;
}
static void free_labels(char **l, size_t n) {
    if (!l) return;
    for (size_t i = 0; i < n; i++) st_free(l[i]);
    st_free(l);
}

/* A per-layer chart: values (and optional level values) at the given layers. */
static void layer_chart(doc *d, const long *layers, size_t n, const double *val, const double *level,
                        const char *val_name, const char *level_name, const bool *hl_by_layer, const char *hl_label,
                        bool percent, const char *title, const char *axis, const char *caption) {
    char **labels = layer_labels(layers, n);
    bool *hl = hl_by_layer ? st_calloc(n ? n : 1, sizeof *hl) : NULL;
    if (!labels || (hl_by_layer && !hl)) {
        d->nomem = true;
        free_labels(labels, n), st_free(hl);
        return;
    }
    for (size_t i = 0; hl && i < n; i++) hl[i] = hl_by_layer[layers[i]];
    stetho_svg_bar_series se[2] = {{.name = level ? val_name : NULL, .color = "#4e79a7", .value = val},
                                   {.name = level_name, .color = "#e15759", .style = STETHO_SVG_LEVEL, .value = level}};
    stetho_svg_bar_chart ch = {.title = title, .value_label = axis, .category_label = "layer", .n_groups = n,
                               .groups = (const char *const *)labels, .n_series = level ? 2 : 1, .series = se,
                               .highlight = hl, .highlight_label = hl_label, .v_min = NAN, .v_max = NAN,
                               .percent = percent, .value_labels = n <= 12};
    figure(d, stetho_svg_bars(&ch, &d->svg), caption);
    free_labels(labels, n);
    st_free(hl);
}

/* "stethoscope top-3, stethoscope top-4" (labels of the variants of a kind) */
static char *kind_names(const rp_summary *s, const char *kind, const char *prefix) {
    st_buf b;
    st_buf_init(&b);
    st_buf_printf(&b, "%s", prefix);
    size_t n = 0;
    for (size_t i = 0; i < s->n_v; i++)
        if (!strcmp(s->v[i].kind, kind) && s->v[i].has_layers) st_buf_printf(&b, "%s%s", n++ ? ", " : "", vname(&s->v[i]));
    if (b.failed) st_buf_free(&b);
    return b.data;
}

static void sec_taskvec(doc *d, const ctx *c) {
    const rp_summary *s = c->s;
    if (!s->has_tv) return;
    section(d, "task-vector", "Task vector");
    para(d, "\xe2\x80\x96\xcf\x84\xe2\x80\x96 = %.4g over the whole model. Per layer: the Frobenius norm of the "
            "layer's part of \xcf\x84 = \xce\xb8_fine-tuned \xe2\x88\x92 \xce\xb8_base (table below: relative to the "
            "base weights, and the layer's share of \xe2\x80\x96\xcf\x84\xe2\x80\x96\xc2\xb2).",
         s->tv_total);
    if (!s->n_tv) return;
    long *layers = st_calloc(s->n_tv, sizeof *layers);
    double *v = st_calloc(s->n_tv, sizeof *v);
    bool any = false, *hl = kind_layers(s, "norm", &any);
    char *hl_label = any ? kind_names(s, "norm", "layers of ") : NULL;
    if (!layers || !v || !hl || (any && !hl_label)) d->nomem = true;
    else {
        for (size_t i = 0; i < s->n_tv; i++) layers[i] = s->tv[i].layer, v[i] = s->tv[i].norm;
        layer_chart(d, layers, s->n_tv, v, NULL, NULL, NULL, any ? hl : NULL, hl_label, false,
                    "Task-vector norm per layer", "\xe2\x80\x96\xcf\x84_layer\xe2\x80\x96", NULL);
    }
    st_free(layers), st_free(v), st_free(hl), st_free(hl_label);
}

static void sec_specificity(doc *d, const ctx *c) {
    const rp_summary *s = c->s;
    if (!s->has_spec) return;
    section(d, "specificity", "Specificity per layer");
    para(d, "Specificity score of each layer's SAE features for the domain prompts against the general prompts "
            "(metric: %s; stetho diagnose). Layers without an SAE have no score (n/a).",
         s->metric);
    if (!s->n_spec) return;
    long *layers = st_calloc(s->n_spec, sizeof *layers);
    double *v = st_calloc(s->n_spec, sizeof *v);
    bool any = false, *hl = kind_layers(s, "stethoscope", &any);
    char *hl_label = any ? kind_names(s, "stethoscope", "layers of ") : NULL;
    if (!layers || !v || !hl || (any && !hl_label)) d->nomem = true;
    else {
        for (size_t i = 0; i < s->n_spec; i++) layers[i] = s->spec[i].layer, v[i] = s->spec[i].score;
        char axis[160];
        snprintf(axis, sizeof axis, "specificity (%s)", s->metric);
        utf8_trim(axis);
        layer_chart(d, layers, s->n_spec, v, NULL, NULL, NULL, any ? hl : NULL, hl_label, false,
                    "Specificity per layer", axis, any ? "Shaded: the layers the stethoscope variants edited." : NULL);
    }
    st_free(layers), st_free(v), st_free(hl), st_free(hl_label);
    if (s->n_metrics > 1) {
        table t;
        tbl_init(&t, 1 + s->n_metrics, NULL);
        tbl_head(&t, 0, NULL, "layer");
        for (size_t m = 0; m < s->n_metrics; m++)
            tbl_head(&t, 1 + m, NULL, "%s%s", s->metrics[m], strcmp(s->metrics[m], s->metric) ? "" : " (used)");
        for (size_t i = 0; i < s->n_spec; i++) {
            tbl_row(&t);
            tbl_cell(&t, 0, "%ld", s->spec[i].layer);
            char buf[32];
            for (size_t m = 0; m < s->n_metrics; m++) tbl_cell(&t, 1 + m, "%s", fmt_g(buf, sizeof buf, s->spec[i].scores[m]));
        }
        subsection(d, "Every metric");
        tbl_emit(d, &t);
    }
}

static void sec_scalpel(doc *d, const ctx *c) {
    const rp_summary *s = c->s;
    if (!s->has_scalpel) return;
    section(d, "scalpel", "Scalpel: energy retained by the projection");
    char a[32], b[32];
    para(d, "Share of the task vector's energy (\xe2\x80\x96P\xcf\x84\xe2\x80\x96\xc2\xb2 / \xe2\x80\x96\xcf\x84\xe2\x80"
            "\x96\xc2\xb2) kept by projecting each layer onto the span of %ld SAE decoder directions, next to the "
            "share a random subspace of the same rank keeps in expectation (k/d, d = %ld). Whole model: %s retained, "
            "%s expected at random.",
         s->sc_features, s->sc_d, fmt_pct(a, sizeof a, s->sc_retained, 2), fmt_pct(b, sizeof b, s->sc_expected, 2));
    if (!s->n_sc) return;
    long *layers = st_calloc(s->n_sc, sizeof *layers);
    double *v = st_calloc(2 * s->n_sc, sizeof *v);
    if (!layers || !v) d->nomem = true;
    else {
        for (size_t i = 0; i < s->n_sc; i++)
            layers[i] = s->sc[i].layer, v[i] = s->sc[i].retained, v[s->n_sc + i] = s->sc[i].expected;
        layer_chart(d, layers, s->n_sc, v, v + s->n_sc, "retained", "random subspace (k/d)", NULL, NULL, true,
                    "Scalpel retained energy per layer", "share of \xe2\x80\x96\xcf\x84_layer\xe2\x80\x96\xc2\xb2", NULL);
    }
    st_free(layers), st_free(v);
}

/* Specificity score of a layer (NaN when unscored or absent). */
static double spec_of(const rp_summary *s, long layer) {
    for (size_t i = 0; i < s->n_spec; i++)
        if (s->spec[i].layer == layer) return s->spec[i].score;
    return NAN;
}

static void sec_ablation(doc *d, const ctx *c) {
    const rp_summary *s = c->s;
    size_t n_abl_v = 0;
    for (size_t i = 0; i < s->n_v; i++) n_abl_v += s->v[i].ablation;
    if (!s->has_ablation && !n_abl_v) return;
    section(d, "ablation", "Ablation: does specificity track importance?");
    para(d, "Per layer: accuracy with \xcf\x84 in that layer only (single) and with \xcf\x84 everywhere but that "
            "layer (leave-one-out), and the importance the study derived from them. \xcf\x81: Spearman rank "
            "correlation between a specificity metric and importance, with its permutation p-value.");
    if (s->n_abl) {
        long *layers = st_calloc(s->n_abl, sizeof *layers);
        double *x = st_calloc(3 * s->n_abl, sizeof *x);
        char **labels = NULL;
        if (!layers || !x) {
            d->nomem = true;
            st_free(layers), st_free(x);
            return;
        }
        double *y = x + s->n_abl;
        size_t n_pts = 0;
        for (size_t i = 0; i < s->n_abl; i++) {
            layers[i] = s->abl[i].layer;
            x[i] = spec_of(s, s->abl[i].layer), y[i] = s->abl[i].importance;
            n_pts += !isnan(x[i]) && !isnan(y[i]);
        }
        if (n_pts && (labels = layer_labels(layers, s->n_abl))) {
            for (size_t i = 0; i < s->n_abl; i++) {
                char buf[32];
                snprintf(buf, sizeof buf, "L%ld", layers[i]);
                st_free(labels[i]);
                labels[i] = st_strdup(buf);
                if (!labels[i]) d->nomem = true;
            }
            char note[160] = "", xl[160];
            for (size_t k = 0; k < s->n_corr; k++)
                if (!strcmp(s->corr[k].metric, s->metric)) {
                    char pb[32];
                    if (isnan(s->corr[k].rho)) snprintf(note, sizeof note, "Spearman \xcf\x81 undefined");
                    else snprintf(note, sizeof note, "Spearman \xcf\x81 = %.2f, p = %s", s->corr[k].rho, fmt_p(pb, sizeof pb, s->corr[k].p));
                }
            snprintf(xl, sizeof xl, "specificity (%s)", s->metric);
            utf8_trim(xl);
            stetho_svg_xy_series se = {.name = NULL, .color = "#4e79a7", .n = s->n_abl, .x = x, .y = y,
                                       .labels = (const char *const *)labels, .points = true};
            stetho_svg_xy_chart ch = {.title = "Importance vs specificity per layer", .x_label = xl,
                                      .y_label = "importance", .n_series = 1, .series = &se, .x_min = NAN,
                                      .x_max = NAN, .y_min = NAN, .y_max = NAN, .note = *note ? note : NULL};
            if (!d->nomem) figure(d, stetho_svg_xy(&ch, &d->svg), "One point per layer.");
        } else if (n_pts) {
            d->nomem = true;
        }
        free_labels(labels, s->n_abl);
        /* single and leave-one-out accuracies, with what each is measured against as levels */
        double *sg = x, *lo = x + s->n_abl;
        bool any = false;
        for (size_t i = 0; i < s->n_abl; i++) {
            sg[i] = s->abl[i].single, lo[i] = s->abl[i].loo;
            any |= !isnan(sg[i]) || !isnan(lo[i]);
        }
        if (any) {
            char **gl = layer_labels(layers, s->n_abl);
            double *lev = st_calloc(2 * s->n_abl, sizeof *lev);
            if (!gl || !lev) d->nomem = true;
            else {
                size_t ns = 2;
                stetho_svg_bar_series se[4] = {{.name = "\xcf\x84 in this layer only", .color = "#f28e2b", .value = sg},
                                               {.name = "\xcf\x84 in all but this layer", .color = "#4e79a7", .value = lo}};
                if (c->overall >= 0 && c->base >= 0) {
                    for (size_t i = 0; i < s->n_abl; i++) lev[i] = s->v[c->base].acc[c->overall].acc;
                    se[ns++] = (stetho_svg_bar_series){.name = "base", .color = "#888", .style = STETHO_SVG_LEVEL, .value = lev};
                }
                /* leave-one-out is measured against tau in all layers at the ablation's
                 * alpha, not the fine-tune (whose tau also reaches the embeddings) */
                long ref = -1;
                for (size_t i = 0; i < s->n_v && ref < 0; i++)
                    if (!strcmp(s->v[i].kind, "all") && (isnan(s->abl_alpha) || s->v[i].alpha == s->abl_alpha))
                        ref = (long)i;
                const char *ref_name = "\xcf\x84 in all layers";
                if (ref < 0) ref = c->ft, ref_name = "fine-tuned";
                if (c->overall >= 0 && ref >= 0) {
                    for (size_t i = 0; i < s->n_abl; i++) lev[s->n_abl + i] = s->v[ref].acc[c->overall].acc;
                    se[ns++] = (stetho_svg_bar_series){.name = ref_name, .color = "#222", .style = STETHO_SVG_LEVEL,
                                                       .value = lev + s->n_abl};
                }
                stetho_svg_bar_chart ch = {.title = "Single-layer and leave-one-out accuracy", .value_label = "accuracy",
                                           .category_label = "layer", .n_groups = s->n_abl,
                                           .groups = (const char *const *)gl, .n_series = ns, .series = se,
                                           .v_min = 0, .v_max = NAN, .percent = true};
                figure(d, stetho_svg_bars(&ch, &d->svg), NULL);
            }
            free_labels(gl, s->n_abl);
            st_free(lev);
        }
        st_free(layers), st_free(x);
    }
    if (s->n_corr) {
        table t;
        tbl_init(&t, 3, NULL);
        tbl_head(&t, 0, NULL, "specificity metric");
        tbl_head(&t, 1, NULL, "Spearman \xcf\x81 with importance");
        tbl_head(&t, 2, "permutation p-value", "p");
        for (size_t k = 0; k < s->n_corr; k++) {
            char a[32], b[32];
            tbl_row(&t);
            tbl_cell(&t, 0, "%s", s->corr[k].metric);
            tbl_cell(&t, 1, "%s", isnan(s->corr[k].rho) ? "undefined" : (snprintf(a, sizeof a, "%+.3f", s->corr[k].rho), a));
            tbl_cell(&t, 2, "%s", fmt_p(b, sizeof b, s->corr[k].p));
        }
        tbl_emit(d, &t);
    }
    if (n_abl_v && c->overall >= 0) {
        size_t r = (size_t)c->overall;
        subsection(d, "Ablation variants");
        table t;
        tbl_init(&t, 4, NULL);
        t.n_left = 2;
        tbl_head(&t, 0, NULL, "variant");
        tbl_head(&t, 1, NULL, "layers");
        tbl_head(&t, 2, s->rows[r], "accuracy %%");
        tbl_head(&t, 3, NULL, "vs base (points)");
        for (size_t i = 0; i < s->n_v; i++) {
            const rp_variant *x = &s->v[i];
            if (!x->ablation) continue;
            char buf[1024];
            layers_text(x, buf, sizeof buf);
            tbl_row(&t);
            tbl_cell(&t, 0, "%s", vname(x));
            tbl_cell(&t, 1, "%s", buf);
            acc_cell(&t, 2, x, r, x->acc[r].n);
            if (x->vs_base && x->has_vs_base[r]) diff_cell(&t, 3, &x->vs_base[r]);
            else tbl_cell(&t, 3, DASH);
        }
        tbl_emit(d, &t);
    }
}

static void sec_layers(doc *d, const ctx *c) {
    const rp_summary *s = c->s;
    if (!s->has_tv && !s->has_spec && !s->has_scalpel && !s->has_ablation) return;
    section(d, "layers", "Per-layer table");
    bool any_st = false, *st_l = kind_layers(s, "stethoscope", &any_st);
    bool any_nm = false, *nm_l = kind_layers(s, "norm", &any_nm);
    /* columns: layer, tv: norm rel share, spec: score chosen, scalpel: retained k/d, ablation: single loo importance */
    size_t n_cols = 1 + (s->has_tv ? 3 : 0) + (s->has_spec ? 1 : 0) + (any_st || any_nm ? 1 : 0) +
                    (s->has_scalpel ? 2 : 0) + (s->has_ablation ? 3 : 0);
    table t;
    tbl_init(&t, n_cols, NULL);
    if (!st_l || !nm_l) t.failed = true;
    size_t col = 0;
    tbl_head(&t, col++, NULL, "layer");
    if (s->has_tv) {
        tbl_head(&t, col++, "Frobenius norm of the layer's task vector", "\xe2\x80\x96\xcf\x84\xe2\x80\x96");
        tbl_head(&t, col++, "norm of tau over norm of the base weights", "rel");
        tbl_head(&t, col++, "share of the task vector's squared norm", "energy share");
    }
    if (s->has_spec) tbl_head(&t, col++, s->metric, "specificity");
    if (any_st || any_nm) tbl_head(&t, col++, NULL, "edited by");
    if (s->has_scalpel) {
        tbl_head(&t, col++, NULL, "scalpel retained");
        tbl_head(&t, col++, NULL, "random k/d");
    }
    if (s->has_ablation) {
        tbl_head(&t, col++, "accuracy with tau in this layer only", "single");
        tbl_head(&t, col++, "accuracy with tau in every layer but this one", "leave-one-out");
        tbl_head(&t, col++, NULL, "importance");
    }
    for (long L = 0; L < s->n_layers && !t.failed; L++) {
        const rp_tv_layer *tv = NULL;
        const rp_scalpel_layer *sc = NULL;
        const rp_abl_layer *ab = NULL;
        bool in_spec = false;
        for (size_t i = 0; i < s->n_tv; i++) tv = s->tv[i].layer == L ? &s->tv[i] : tv;
        for (size_t i = 0; i < s->n_sc; i++) sc = s->sc[i].layer == L ? &s->sc[i] : sc;
        for (size_t i = 0; i < s->n_abl; i++) ab = s->abl[i].layer == L ? &s->abl[i] : ab;
        for (size_t i = 0; i < s->n_spec; i++) in_spec |= s->spec[i].layer == L;
        if (!tv && !sc && !ab && !in_spec) continue;
        char b[64];
        tbl_row(&t);
        col = 0;
        tbl_cell(&t, col++, "%ld", L);
        if (s->has_tv) {
            tbl_cell(&t, col++, "%s", tv ? fmt_g(b, sizeof b, tv->norm) : DASH);
            tbl_cell(&t, col++, "%s", tv ? fmt_g(b, sizeof b, tv->rel_norm) : DASH);
            tbl_cell(&t, col++, "%s", tv ? fmt_pct(b, sizeof b, tv->energy_share, 1) : DASH);
        }
        if (s->has_spec) tbl_cell(&t, col++, "%s", fmt_g(b, sizeof b, spec_of(s, L)));
        if (any_st || any_nm) {
            bool a = st_l[L], n = nm_l[L];
            tbl_cell(&t, col++, "%s%s%s", a ? "stethoscope" : "", a && n ? ", " : "", n ? "norm" : "");
        }
        if (s->has_scalpel) {
            tbl_cell(&t, col++, "%s", sc ? fmt_pct(b, sizeof b, sc->retained, 2) : DASH);
            tbl_cell(&t, col++, "%s", sc ? fmt_pct(b, sizeof b, sc->expected, 2) : DASH);
        }
        if (s->has_ablation) {
            tbl_cell(&t, col++, "%s", ab ? fmt_pct(b, sizeof b, ab->single, 1) : DASH);
            tbl_cell(&t, col++, "%s", ab ? fmt_pct(b, sizeof b, ab->loo, 1) : DASH);
            tbl_cell(&t, col++, "%s", ab ? fmt_g(b, sizeof b, ab->importance) : DASH);
        }
    }
    tbl_emit(d, &t);
    st_free(st_l), st_free(nm_l);
}

static void sec_notes(doc *d, const ctx *c) {
    const rp_summary *s = c->s;
    if (!s->n_notes && !(s->has_timings && s->n_steps)) return;
    section(d, "notes", "Notes");
    if (s->n_notes) {
        H(d, "<ul class=\"notes\">\n");
        for (size_t i = 0; i < s->n_notes; i++) {
            H(d, "<li>");
            Ht(d, s->notes[i]);
            H(d, "</li>\n");
            M(d, "- ");
            Mt(d, s->notes[i]);
            M(d, "\n");
        }
        H(d, "</ul>\n");
        M(d, "\n");
    }
    if (s->has_timings && s->n_steps) {
        subsection(d, "Timings");
        table t;
        tbl_init(&t, 2, NULL);
        tbl_head(&t, 0, NULL, "step");
        tbl_head(&t, 1, NULL, "seconds");
        for (size_t i = 0; i < s->n_steps; i++) {
            tbl_row(&t);
            tbl_cell(&t, 0, "%s", s->step_names[i]);
            tbl_cell(&t, 1, "%.1f", s->step_s[i]);
        }
        if (!isnan(s->total_s)) {
            tbl_row(&t);
            tbl_cell(&t, 0, "total");
            tbl_cell(&t, 1, "%.1f", s->total_s);
        }
        tbl_emit(d, &t);
    }
}

static const char *css =
    ":root{--ink:#1d1d1f;--muted:#6b6b70;--line:#e4e4e7;--up:#1a7f37;--down:#c62828;--accent:#3d6a99}\n"
    "*{box-sizing:border-box}\n"
    "body{margin:0;background:#fff;color:var(--ink);font:15px/1.55 system-ui,-apple-system,'Segoe UI',Roboto,"
    "'Helvetica Neue',Arial,sans-serif;-webkit-font-smoothing:antialiased}\n"
    "main{max-width:1120px;margin:0 auto;padding:36px 28px 72px}\n"
    "header{margin-bottom:10px}.kicker{margin:0;color:var(--accent);font-size:.8rem;font-weight:600;"
    "letter-spacing:.08em;text-transform:uppercase}\n"
    "h1{font-size:1.9rem;line-height:1.2;margin:.2rem 0 .3rem;font-weight:700}\n"
    "h2{font-size:1.3rem;margin:2.6rem 0 .7rem;padding-bottom:.35rem;border-bottom:1px solid var(--line)}\n"
    "h3{font-size:1.02rem;margin:1.6rem 0 .4rem}\n"
    ".sub{color:var(--muted);margin:0}p{max-width:760px}\n"
    "nav{display:flex;flex-wrap:wrap;gap:.3rem 1.1rem;margin:18px 0 6px;padding:10px 0;border-top:1px solid var(--line);"
    "border-bottom:1px solid var(--line);font-size:.9rem}\n"
    "a{color:var(--accent);text-decoration:none}a:hover{text-decoration:underline}\n"
    "dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:.25rem 1.2rem;margin:.5rem 0 1rem}\n"
    "dt{color:var(--muted)}dd{margin:0;overflow-wrap:anywhere}\n"
    ".scroll{overflow-x:auto;margin:.5rem 0 1.2rem}\n"
    "table{border-collapse:collapse;font-size:.86rem;font-variant-numeric:tabular-nums}\n"
    "th,td{padding:.32rem .7rem;border-bottom:1px solid var(--line);text-align:right;white-space:nowrap}\n"
    "tbody th{font-weight:500}thead th{font-weight:600;border-bottom:2px solid #c8c8cc;"
    "vertical-align:bottom}\n"
    "thead th[title]{text-decoration:underline dotted #aaa;text-underline-offset:3px}\n"
    "th.l,td.l{text-align:left}table.stack .ci{display:block;line-height:1.2}table.stack thead th{white-space:normal}table.stack th,table.stack td{padding:.3rem .45rem}\n"
    ".key{display:inline-block;width:.7em;height:.7em;border-radius:2px;margin-right:.45em;vertical-align:baseline}\n"
    "tbody tr:hover{background:#f6f7f9}\n"
    ".ci{color:var(--muted);font-size:.82em}.up{color:var(--up)}.down{color:var(--down)}\n"
    "figure{margin:.6rem 0 1.2rem}figcaption{color:var(--muted);font-size:.84rem;margin-top:.2rem}\n"
    "svg.chart{display:block;max-width:100%;height:auto}\n"
    "details{margin:.4rem 0 1rem}summary{cursor:pointer;color:var(--accent);font-size:.9rem}\n"
    "ul.notes{padding-left:1.2rem}footer{margin-top:3rem;color:var(--muted);font-size:.8rem;"
    "border-top:1px solid var(--line);padding-top:.8rem}\n"
    "@media print{nav{display:none}main{max-width:none;padding:0}h2{break-after:avoid}figure,table{break-inside:avoid}}\n";

stetho_status stetho_report_render(const char *json, size_t len, const char *label, char **html, char **md) {
    if (html) *html = NULL;
    if (md) *md = NULL;
    rp_summary s;
    stetho_status st = rp_summary_parse(&s, json, len, label);
    if (st) return st;
    ctx c = {.s = &s, .base = -1, .ft = -1, .overall = -1};
    doc d;
    memset(&d, 0, sizeof d);
    st_buf_init(&d.h);
    st_buf_init(&d.m);
    c.main = st_calloc(s.n_v, sizeof *c.main);
    c.color = st_calloc(s.n_v, sizeof *c.color);
    c.short_rows = st_calloc(s.n_rows, sizeof *c.short_rows);
    if (!c.main || !c.color || !c.short_rows) goto oom;
    for (size_t r = 0; r < s.n_rows; r++)
        if (!(c.short_rows[r] = short_row(s.rows[r]))) goto oom;
    size_t pal = 1;
    for (size_t i = 0; i < s.n_v; i++) {
        const rp_variant *v = &s.v[i];
        if (!strcmp(v->kind, "base") && c.base < 0) c.base = (long)i;
        if (!strcmp(v->kind, "finetuned") && c.ft < 0) c.ft = (long)i;
        if (v->ablation) {
            c.color[i] = "#bab0ac";
            continue;
        }
        c.main[c.n_main++] = i;
        /* base grey, fine-tuned the first palette colour, the rest in order */
        c.color[i] = !strcmp(v->kind, "base") ? "#a3a3a3" : !strcmp(v->kind, "finetuned") ? stetho_svg_palette(0)
                                                                                          : stetho_svg_palette(pal++);
        if (pal % 10 == 9) pal++; /* skip the palette's grey */
    }
    c.overall = s.n_rows > s.n_tasks ? (long)s.n_tasks : s.n_tasks == 1 ? 0 : -1;

    H(&d, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
          "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>");
    Ht(&d, s.title);
    H(&d, " \xe2\x80\x94 stetho report</title>\n<style>\n");
    H(&d, css);
    H(&d, "</style>\n</head>\n<body>\n<main>\n");
    sec_header(&d, &c);
    nav(&d, &c);
    sec_run(&d, &c);
    sec_accuracy(&d, &c);
    sec_vs_base(&d, &c);
    sec_pairs(&d, &c);
    sec_forgetting(&d, &c);
    sec_taskvec(&d, &c);
    sec_specificity(&d, &c);
    sec_scalpel(&d, &c);
    sec_ablation(&d, &c);
    sec_layers(&d, &c);
    sec_notes(&d, &c);
    H(&d, "<footer>Written by stetho ");
    Ht(&d, STETHO_VERSION);
    H(&d, " from summary.json. The figures are as measured and recorded by the study; charts are inline SVG "
          "(hover a bar or point for its value).</footer>\n</main>\n</body>\n</html>\n");
    M(&d, "\n---\nWritten by stetho " STETHO_VERSION " from summary.json; report.html has the charts.\n");
    if (d.nomem || d.h.failed || d.m.failed || !d.h.data || !d.m.data) goto oom;
    if (html) *html = d.h.data, d.h.data = NULL;
    if (md) *md = d.m.data, d.m.data = NULL;
    st = STETHO_OK;
    goto done;
oom:
    st = st_err(STETHO_ERR_NOMEM, "%s: out of memory while rendering the report", label ? label : "summary.json");
done:
    free(d.svg);
    st_buf_free(&d.h);
    st_buf_free(&d.m);
    if (c.short_rows)
        for (size_t r = 0; r < s.n_rows; r++) st_free(c.short_rows[r]);
    st_free(c.short_rows), st_free(c.main), st_free(c.color);
    rp_summary_free(&s);
    return st;
}

/* ---- files ----------------------------------------------------------------------- */

/* Write data to "<path>.tmp.<pid>" (the name is returned in *tmp for the rename). */
static stetho_status write_tmp(const char *path, const char *data, char **tmp) {
    st_buf b;
    st_buf_init(&b);
    if (!st_buf_printf(&b, "%s.tmp.%ld", path, (long)getpid())) {
        st_buf_free(&b);
        return STETHO_ERR_NOMEM;
    }
    *tmp = b.data;
    FILE *f = fopen(b.data, "wb");
    if (!f) return st_err(STETHO_ERR_IO, "%s: cannot create: %s", b.data, strerror(errno));
    size_t len = strlen(data);
    errno = 0;
    bool ok = !st_fault_write_fires() && fwrite(data, 1, len, f) == len;
    int err = ok ? 0 : errno ? errno : ENOSPC;
    if (fclose(f) != 0 && ok) ok = false, err = errno;
    if (!ok) {
        remove(b.data);
        return st_err(STETHO_ERR_IO, "%s: write failed: %s", path, strerror(err));
    }
    return STETHO_OK;
}

stetho_status stetho_report_write(const char *run_dir, const char *out_dir) {
    if (!run_dir || !*run_dir) return st_err(STETHO_ERR_INVALID, "report: no run directory");
    if (!out_dir) out_dir = run_dir;
    char *summary = st_path_join(run_dir, "summary.json"), *text = NULL, *html = NULL, *md = NULL;
    char *p_html = NULL, *p_md = NULL, *t_html = NULL, *t_md = NULL;
    bool made_dir = false;
    size_t len = 0;
    stetho_status st = summary ? STETHO_OK : STETHO_ERR_NOMEM;
    if (!st) st = stetho_read_file(summary, STETHO_REPORT_MAX_SUMMARY, &text, &len);
    if (!st) st = stetho_report_render(text, len, summary, &html, &md);
    if (!st) {
        p_html = st_path_join(out_dir, "report.html");
        p_md = st_path_join(out_dir, "report.md");
        if (!p_html || !p_md) st = STETHO_ERR_NOMEM;
    }
    if (!st) {
        struct stat sb;
        if (stat(out_dir, &sb) != 0) {
            if (mkdir(out_dir, 0777) != 0) st = st_err(STETHO_ERR_IO, "%s: cannot create directory: %s", out_dir, strerror(errno));
            else made_dir = true;
        } else if (!S_ISDIR(sb.st_mode)) {
            st = st_err(STETHO_ERR_IO, "%s: not a directory", out_dir);
        }
    }
    if (!st) st = write_tmp(p_html, html, &t_html);
    if (!st) st = write_tmp(p_md, md, &t_md);
    if (!st && rename(t_html, p_html) != 0)
        st = st_err(STETHO_ERR_IO, "%s: cannot rename into place: %s", p_html, strerror(errno));
    if (!st && rename(t_md, p_md) != 0) {
        st = st_err(STETHO_ERR_IO, "%s: cannot rename into place: %s", p_md, strerror(errno));
        remove(p_html); /* the two files go together */
    }
    if (st) {
        if (t_html) remove(t_html);
        if (t_md) remove(t_md);
        if (made_dir) rmdir(out_dir);
    }
    st_free(summary), st_free(text), free(html), free(md);
    st_free(p_html), st_free(p_md), st_free(t_html), st_free(t_md);
    return st;
}
