/* Answer equivalence for Minerva Math: a small LaTeX reader and evaluator.
 *
 * Both answers are first canonicalised (spacing, \left/\right, \dfrac, percent, dollar
 * and degree signs, unit words dropped); equal canonical strings are equivalent. Then
 * each answer is read as a structure (matrix, union of intervals, set, tuple/interval,
 * unordered list, or a single expression) whose leaves are evaluated in double
 * precision at NPOINTS fixed assignments of the variables. Anything the evaluator does
 * not understand makes the comparison fall back to string equality, so unknown
 * notation can only cost a missed equivalence, never a false "correct". */
#include "stetho/latex.h"
#include "internal.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define NPOINTS 3
#define MAX_DEPTH 64    /* nesting limit for the recursive readers */
#define MAX_ITEMS 256   /* structure size limit (items per level; on the stack) */

/* ---- canonical form */

static bool starts(const char *p, const char *e, const char *lit) {
    size_t n = strlen(lit);
    return (size_t)(e - p) >= n && !memcmp(p, lit, n);
}

/* Rewrites that do not change an answer's meaning. Longest literals first where
 * one is a prefix of another. */
static const char *const canon_rules[][2] = {
    {"\\displaystyle", ""}, {"\\left", ""}, {"\\right", ""}, {"\\dfrac", "\\frac"}, {"\\tfrac", "\\frac"},
    {"\\cfrac", "\\frac"}, {"^{\\circ}", ""}, {"^\\circ", ""}, {"\\circ", ""}, {"\xC2\xB0", ""},
    {"\\%", ""}, {"%", ""}, {"\\$", ""}, {"$", ""}, {"{,}", ""}, {",\\!", ""}, {"\\!", ""},
    {"\\,", ""}, {"\\:", ""}, {"\\;", ""}, {"\\ ", ""}, {"~", ""}, {"\\infty", "\\infty"},
    {"\\iny", "\\infty"}, {"\xE2\x88\x9E", "\\infty"}, {"\\cdot", "*"}, {"\\times", "*"},
    {"\\div", "/"}, {"\\mathrm{", "{"}, {"\\mathbf{", "{"}, {"\\textbf{", "{"}, {"\\text{", "{"},
    {"\\operatorname{", "{"}, {"\\dots", "\\dots"},
};

static char *canonical(const char *s) {
    const char *p = s, *e = s + strlen(s);
    st_buf b;
    st_buf_init(&b);
    bool in_env = false; /* inside \begin{...}: a lone backslash separates rows */
    while (p < e) {
        if (isspace((unsigned char)*p)) {
            p++;
            continue;
        }
        if (starts(p, e, "\\begin{")) in_env = true;
        if (starts(p, e, "\\end{")) in_env = false;
        /* removing "\ " leaves stray backslashes before numbers ("1,\2") */
        if (!in_env && *p == '\\' && p + 1 < e && (isdigit((unsigned char)p[1]) || p[1] == '-')) {
            p++;
            continue;
        }
        /* normalize_final_answer turns "\left(" into "\le(": undo that damage */
        if (starts(p, e, "\\le") && (p + 3 < e) && strchr("([|.", p[3]) && p[3]) {
            p += 3;
            continue;
        }
        if (starts(p, e, "\\le\\{")) {
            p += 3;
            continue;
        }
        bool done = false;
        for (size_t i = 0; i < ST_ARRAY_LEN(canon_rules) && !done; i++) {
            const char *from = canon_rules[i][0];
            size_t n = strlen(from);
            if (!starts(p, e, from)) continue;
            /* a command name must end where the match ends (\left vs \leftarrow) */
            if (from[0] == '\\' && isalpha((unsigned char)from[n - 1]) && p + n < e && isalpha((unsigned char)p[n]))
                continue;
            st_buf_append(&b, canon_rules[i][1], strlen(canon_rules[i][1]));
            p += n;
            done = true;
        }
        if (!done) st_buf_append(&b, p++, 1);
    }
    if (!st_buf_append(&b, "", 1) || b.failed) {
        st_buf_free(&b);
        return NULL;
    }
    return b.data;
}

/* ---- expression evaluation */

typedef struct {
    const char *p, *e;
    int k;         /* which variable assignment */
    int depth;
    bool ok;
    bool infinite; /* an explicit \infty was read */
} ev;

static double var_value(const char *name, size_t n, int k) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)name[i]) * 16777619u;
    h ^= (uint32_t)(k + 1) * 0x9E3779B9u;
    h = (h ^ (h >> 15)) * 0x2C1B3C6Du;
    h ^= h >> 12;
    return 0.5 + 2.0 * (double)(h % 100003u) / 100003.0; /* (0.5, 2.5): keeps roots real */
}

static double ev_expr(ev *x);
static double ev_factor(ev *x);

static bool ev_eat(ev *x, const char *lit) {
    if (!starts(x->p, x->e, lit)) return false;
    x->p += strlen(lit);
    return true;
}

/* An argument of \frac / \sqrt / ^: a braced group, a command, or one character. */
static double ev_arg(ev *x) {
    if (x->p >= x->e) {
        x->ok = false;
        return NAN;
    }
    if (*x->p == '{') {
        x->p++;
        double v = ev_expr(x);
        if (!ev_eat(x, "}")) x->ok = false;
        return v;
    }
    if (isdigit((unsigned char)*x->p)) return (double)(*x->p++ - '0');
    if (isalpha((unsigned char)*x->p)) return var_value(x->p++, 1, x->k);
    return ev_factor(x);
}

static const char *const greek[] = {"alpha", "beta", "gamma", "delta", "theta", "lambda", "mu", "phi", "omega",
                                    "sigma", "tau", "rho", "psi", "epsilon", "varepsilon", "eta", "zeta", "xi",
                                    "kappa", "nu", "chi", "varphi", "vartheta"};

static double apply_fn(const char *name, size_t n, double a) {
#define FN(s, expr) \
    if (n == strlen(s) && !memcmp(name, s, n)) return (expr)
    FN("sin", sin(a));
    FN("cos", cos(a));
    FN("tan", tan(a));
    FN("cot", 1 / tan(a));
    FN("sec", 1 / cos(a));
    FN("csc", 1 / sin(a));
    FN("ln", log(a));
    FN("log", log(a));
    FN("exp", exp(a));
    FN("arcsin", asin(a));
    FN("arccos", acos(a));
    FN("arctan", atan(a));
#undef FN
    return NAN;
}

static double ev_primary(ev *x) {
    const char *p = x->p, *e = x->e;
    if (p >= e) {
        x->ok = false;
        return NAN;
    }
    if (isdigit((unsigned char)*p) || (*p == '.' && p + 1 < e && isdigit((unsigned char)p[1]))) {
        char buf[128];
        size_t n = 0;
        bool dot = false;
        while (p < e && (isdigit((unsigned char)*p) || (*p == '.' && !dot && p + 1 < e && isdigit((unsigned char)p[1])))) {
            if (*p == '.') dot = true;
            if (n + 1 < sizeof buf) buf[n++] = *p;
            else x->ok = false;
            p++;
        }
        buf[n] = '\0';
        x->p = p;
        return strtod(buf, NULL);
    }
    if (*p == '(' || *p == '[' || *p == '{') {
        char close = *p == '(' ? ')' : *p == '[' ? ']' : '}';
        x->p++;
        double v = ev_expr(x);
        if (x->p < x->e && *x->p == close) x->p++;
        else x->ok = false;
        return v;
    }
    if (*p == '|') {
        x->p++;
        double v = ev_expr(x);
        if (!ev_eat(x, "|")) x->ok = false;
        return fabs(v);
    }
    if (isalpha((unsigned char)*p)) {
        x->p++;
        return var_value(p, 1, x->k);
    }
    if (*p == '\\') {
        const char *q = p + 1;
        while (q < e && isalpha((unsigned char)*q)) q++;
        const char *name = p + 1;
        size_t n = (size_t)(q - name);
        x->p = q;
        if (n == 4 && !memcmp(name, "frac", 4)) {
            double a = ev_arg(x), b = ev_arg(x);
            return a / b;
        }
        if (n == 4 && !memcmp(name, "sqrt", 4)) {
            double idx = 2;
            if (x->p < x->e && *x->p == '[') {
                x->p++;
                idx = ev_expr(x);
                if (!ev_eat(x, "]")) x->ok = false;
            }
            double a = ev_arg(x);
            if (idx == 2) return sqrt(a);
            return a < 0 && fmod(idx, 2) == 1 ? -pow(-a, 1 / idx) : pow(a, 1 / idx);
        }
        if (n == 2 && !memcmp(name, "pi", 2)) return M_PI;
        if (n == 5 && !memcmp(name, "infty", 5)) {
            x->infinite = true;
            return INFINITY;
        }
        for (size_t i = 0; i < ST_ARRAY_LEN(greek); i++)
            if (n == strlen(greek[i]) && !memcmp(name, greek[i], n)) return var_value(p, (size_t)(q - p), x->k);
        if (n > 0 && !isnan(apply_fn(name, n, 1.0))) {
            double power = 1;
            if (ev_eat(x, "^")) power = ev_arg(x);
            double a = ev_factor(x);
            return pow(apply_fn(name, n, a), power);
        }
    }
    x->ok = false;
    return NAN;
}

/* primary with postfix ^ and ! */
static double ev_postfix(ev *x) {
    double v = ev_primary(x);
    while (x->ok && x->p < x->e) {
        if (*x->p == '^') {
            x->p++;
            double ex = ev_arg(x);
            v = pow(v, ex);
        } else if (*x->p == '!') {
            x->p++;
            if (v < 0 || v > 170 || v != floor(v)) x->ok = false;
            else v = tgamma(v + 1);
        } else {
            break;
        }
    }
    return v;
}

static double ev_factor(ev *x) {
    if (++x->depth > MAX_DEPTH) {
        x->ok = false;
        return NAN;
    }
    double v;
    if (ev_eat(x, "-")) v = -ev_factor(x);
    else if (ev_eat(x, "+")) v = ev_factor(x);
    else v = ev_postfix(x);
    x->depth--;
    return v;
}

/* Can the text at p start a factor (for implicit multiplication)? */
static bool starts_factor(const ev *x) {
    if (x->p >= x->e) return false;
    char c = *x->p;
    if (isalnum((unsigned char)c) || c == '(' || c == '{' || c == '.') return true;
    if (c == '\\') return !starts(x->p, x->e, "\\pm") && !starts(x->p, x->e, "\\mp");
    return false;
}

static double ev_term(ev *x) {
    double v = ev_factor(x);
    while (x->ok && x->p < x->e) {
        if (ev_eat(x, "{}")) continue; /* empty groups left by normalisation */
        if (ev_eat(x, "*")) v *= ev_factor(x);
        else if (ev_eat(x, "/")) v /= ev_factor(x);
        else if (starts_factor(x)) v *= ev_factor(x);
        else break;
    }
    return v;
}

static double ev_expr(ev *x) {
    if (++x->depth > MAX_DEPTH) {
        x->ok = false;
        return NAN;
    }
    double v = ev_term(x);
    while (x->ok && x->p < x->e) {
        if (ev_eat(x, "+")) v += ev_term(x);
        else if (ev_eat(x, "-")) v -= ev_term(x);
        /* a +- b: the sign becomes a variable of its own so that 1\pm2 equals
         * 1\pm 2 but not 3 */
        else if (ev_eat(x, "\\pm")) v += var_value("\\pm", 3, x->k) * ev_term(x);
        else if (ev_eat(x, "\\mp")) v -= var_value("\\pm", 3, x->k) * ev_term(x);
        else break;
    }
    x->depth--;
    return v;
}

/* Evaluate [p, e) at every point; false if it does not parse completely or gives a
 * non-finite value that no \infty explains. */
static bool eval_leaf(const char *p, const char *e, double out[NPOINTS]) {
    if (p >= e) return false;
    for (int k = 0; k < NPOINTS; k++) {
        ev x = {p, e, k, 0, true, false};
        out[k] = ev_expr(&x);
        if (!x.ok || x.p != e || isnan(out[k]) || (isinf(out[k]) && !x.infinite)) return false;
    }
    return true;
}

static bool close_enough(double a, double b) {
    if (a == b) return true;
    if (isinf(a) || isinf(b)) return false;
    /* integers must agree exactly: 1000000001 is not 1000000000 */
    if (a == floor(a) && b == floor(b) && fabs(a) < 9e15 && fabs(b) < 9e15) return false;
    return fabs(a - b) <= STETHO_LATEX_RTOL * fmax(fabs(a), fabs(b));
}

/* ---- structure */

typedef enum { V_LEAF, V_TUPLE, V_SET, V_MATRIX } vkind;

typedef struct value {
    vkind kind;
    char open, close;     /* V_TUPLE: brackets; 0 for a bare (unordered) list */
    bool unordered;       /* V_SET and bare lists and unions */
    size_t n;             /* items */
    struct value *items;
    const char *p, *e;    /* V_LEAF text */
} value;

static void value_free(value *v) {
    for (size_t i = 0; i < v->n; i++) value_free(&v->items[i]);
    st_free(v->items);
    v->items = NULL;
    v->n = 0;
}

static bool is_open(char c) { return c == '(' || c == '[' || c == '{'; }
static bool is_close(char c) { return c == ')' || c == ']' || c == '}'; }

/* Positions of top-level separators `sep` in [p, e); brackets of any kind nest (so
 * half-open intervals balance). Returns the number of pieces, 0 on unbalanced text. */
static size_t split_top(const char *p, const char *e, const char *sep, const char **cuts, size_t max_cuts) {
    size_t sl = strlen(sep), n = 0;
    long depth = 0;
    for (const char *q = p; q < e; q++) {
        if (*q == '\\' && q + 1 < e && (q[1] == '{' || q[1] == '}' || q[1] == '\\')) {
            if (depth == 0 && !strcmp(sep, "\\\\") && q[1] == '\\') {
                if (n >= max_cuts) return 0;
                cuts[n++] = q;
            }
            if (q[1] == '{') depth++;
            if (q[1] == '}') depth--;
            q++;
            continue;
        }
        if (is_open(*q)) depth++;
        else if (is_close(*q)) depth--;
        if (depth < 0) return 0;
        if (depth == 0 && (size_t)(e - q) >= sl && !memcmp(q, sep, sl) && strcmp(sep, "\\\\")) {
            if (n >= max_cuts) return 0;
            cuts[n++] = q;
        }
    }
    return depth == 0 ? n + 1 : 0;
}

/* True when the bracket opened at p closes exactly at e-1. */
static bool wraps(const char *p, const char *e, size_t open_len) {
    long depth = 0;
    for (const char *q = p; q < e; q++) {
        if (*q == '\\' && q + 1 < e && (q[1] == '{' || q[1] == '}')) {
            depth += q[1] == '{' ? 1 : -1;
            q++;
        } else if (is_open(*q)) depth++;
        else if (is_close(*q)) depth--;
        if (depth == 0 && q + 1 < e && q >= p + open_len - 1) return false;
    }
    return depth == 0;
}

static bool parse_value(const char *p, const char *e, int depth, value *v);

static bool parse_list(const char *p, const char *e, const char *sep, size_t seplen, int depth, value *v) {
    const char *cuts[MAX_ITEMS];
    size_t n = split_top(p, e, sep, cuts, MAX_ITEMS);
    if (n == 0) return false;
    v->items = st_calloc(n, sizeof *v->items);
    if (!v->items) return false;
    v->n = n;
    for (size_t i = 0; i < n; i++) {
        const char *a = i == 0 ? p : cuts[i - 1] + seplen;
        const char *b = i + 1 < n ? cuts[i] : e;
        if (!parse_value(a, b, depth + 1, &v->items[i])) return false;
    }
    return true;
}

static bool parse_value(const char *p, const char *e, int depth, value *v) {
    memset(v, 0, sizeof *v);
    if (depth > MAX_DEPTH) return false;
    v->kind = V_LEAF;
    v->p = p;
    v->e = e;
    if (p >= e) return true;
    /* matrices: \begin{pmatrix} rows \\ ... \end{pmatrix}; normalisation may have
     * turned the row separator into a single backslash. */
    if (starts(p, e, "\\begin{")) {
        const char *q = memchr(p, '}', (size_t)(e - p));
        const char *end = NULL;
        for (const char *r = p; r + 5 <= e; r++)
            if (!memcmp(r, "\\end{", 5)) end = r;
        if (!q || !end || end < q) return false;
        v->kind = V_MATRIX;
        const char *body = q + 1;
        /* rows: split on "\\" or on a lone "\" not starting a command */
        const char *rows[MAX_ITEMS + 1], *rows_end[MAX_ITEMS + 1];
        size_t nr = 0;
        long d = 0;
        const char *start = body;
        for (const char *r = body; r < end; r++) {
            if (*r == '\\' && r + 1 < end && (r[1] == '{' || r[1] == '}')) {
                r++;
                continue;
            }
            if (is_open(*r)) d++;
            else if (is_close(*r)) d--;
            if (d == 0 && *r == '\\') {
                size_t sl = (r + 1 < end && r[1] == '\\') ? 2 : (r + 1 < end && isalpha((unsigned char)r[1])) ? 0 : 1;
                if (sl == 0) continue;
                if (nr >= MAX_ITEMS) return false;
                rows[nr] = start;
                rows_end[nr++] = r;
                start = r + sl;
                r += sl - 1;
            }
        }
        if (start < end) {
            rows[nr] = start;
            rows_end[nr++] = end;
        }
        v->items = st_calloc(nr ? nr : 1, sizeof *v->items);
        if (!v->items) return false;
        v->n = nr;
        for (size_t i = 0; i < nr; i++) {
            value *row = &v->items[i];
            row->kind = V_TUPLE;
            row->open = 'r';
            if (!parse_list(rows[i], rows_end[i], "&", 1, depth + 1, row)) return false;
        }
        return true;
    }
    /* unions of intervals: unordered */
    {
        const char *cuts[MAX_ITEMS];
        if (split_top(p, e, "\\cup", cuts, MAX_ITEMS) >= 2) {
            v->kind = V_SET;
            v->unordered = true;
            return parse_list(p, e, "\\cup", 4, depth, v);
        }
    }
    if (starts(p, e, "\\{") && e - p >= 4 && e[-2] == '\\' && e[-1] == '}' && wraps(p, e, 2)) {
        v->kind = V_SET;
        v->unordered = true;
        return parse_list(p + 2, e - 2, ",", 1, depth, v);
    }
    if ((*p == '(' || *p == '[') && (e[-1] == ')' || e[-1] == ']') && e - p >= 2 && wraps(p, e, 1)) {
        const char *cuts[MAX_ITEMS];
        size_t n = split_top(p + 1, e - 1, ",", cuts, MAX_ITEMS);
        if (n >= 2 || n == 0) {
            v->kind = V_TUPLE;
            v->open = *p;
            v->close = e[-1];
            return parse_list(p + 1, e - 1, ",", 1, depth, v);
        }
        return true; /* a parenthesised expression */
    }
    {
        const char *cuts[MAX_ITEMS];
        size_t n = split_top(p, e, ",", cuts, MAX_ITEMS);
        if (n >= 2) {
            v->kind = V_SET; /* a bare list of solutions: order does not matter */
            v->unordered = true;
            return parse_list(p, e, ",", 1, depth, v);
        }
    }
    return true;
}

/* Leaf text without a trailing unit word ("54miles", "22.8ounces", "5cm^2"). */
static const char *strip_unit(const char *p, const char *e) {
    const char *q = e;
    if (q - p >= 2 && q[-2] == '^' && (q[-1] == '2' || q[-1] == '3')) q -= 2;
    const char *w = q;
    while (w > p && isalpha((unsigned char)w[-1])) w--;
    if (q - w >= 3 && w > p && (isdigit((unsigned char)w[-1]) || w[-1] == '}') && (w - p < 2 || w[-2] != '\\')) {
        /* and the word is not a command's name */
        const char *c = w;
        while (c > p && isalpha((unsigned char)c[-1])) c--;
        if (!(c > p && c[-1] == '\\')) return w;
    }
    return e;
}

/* A run of three or more letters outside a command name marks prose ("Devon",
 * "east"): such leaves are compared as text, since a product of letters would
 * make anagrams equal. */
static bool looks_like_text(const char *p, const char *e) {
    size_t run = 0;
    bool in_cmd = false;
    for (const char *q = p; q < e; q++) {
        if (*q == '\\') {
            in_cmd = true;
            run = 0;
            continue;
        }
        if (isalpha((unsigned char)*q)) {
            if (!in_cmd && ++run >= 3) return true;
        } else {
            in_cmd = false;
            run = 0;
        }
    }
    return false;
}

static bool leaf_equal(const value *a, const value *b) {
    const char *ae = strip_unit(a->p, a->e), *be = strip_unit(b->p, b->e);
    size_t al = (size_t)(ae - a->p), bl = (size_t)(be - b->p);
    if (al == bl && !memcmp(a->p, b->p, al)) return true;
    if (looks_like_text(a->p, ae) || looks_like_text(b->p, be)) return false;
    double va[NPOINTS], vb[NPOINTS];
    if (!eval_leaf(a->p, ae, va) || !eval_leaf(b->p, be, vb)) return false;
    for (int k = 0; k < NPOINTS; k++)
        if (!close_enough(va[k], vb[k])) return false;
    return true;
}

static bool value_equal(const value *a, const value *b, int depth) {
    if (depth > MAX_DEPTH) return false;
    if (a->kind != b->kind) return false;
    switch (a->kind) {
    case V_LEAF: return leaf_equal(a, b);
    case V_TUPLE:
    case V_MATRIX:
        if (a->open != b->open || a->close != b->close || a->n != b->n) return false;
        for (size_t i = 0; i < a->n; i++)
            if (!value_equal(&a->items[i], &b->items[i], depth + 1)) return false;
        return true;
    case V_SET: {
        if (a->n != b->n) return false;
        bool *used = st_calloc(b->n ? b->n : 1, sizeof *used);
        if (!used) return false;
        bool all = true;
        for (size_t i = 0; i < a->n && all; i++) {
            bool found = false;
            for (size_t j = 0; j < b->n && !found; j++)
                if (!used[j] && value_equal(&a->items[i], &b->items[j], depth + 1)) found = used[j] = true;
            all = found;
        }
        st_free(used);
        return all;
    }
    }
    return false;
}

stetho_status stetho_latex_grade(const char *gold_raw, const char *gold_norm, const char *cand_raw,
                                 const char *cand_norm, bool *correct) {
    *correct = false;
    stetho_status st = stetho_latex_equivalent(gold_norm, cand_norm, correct);
    if (st || *correct || !gold_raw || !cand_raw) return st;
    return stetho_latex_equivalent(gold_raw, cand_raw, correct);
}

stetho_status stetho_latex_equivalent(const char *a, const char *b, bool *equal) {
    *equal = false;
    if (!a || !b) return st_err(STETHO_ERR_INVALID, "latex: missing answer");
    if (!strcmp(a, b)) {
        *equal = true;
        return STETHO_OK;
    }
    char *ca = canonical(a), *cb = canonical(b);
    if (!ca || !cb) {
        st_free(ca);
        st_free(cb);
        return st_err(STETHO_ERR_NOMEM, "latex: out of memory");
    }
    if (!strcmp(ca, cb)) {
        *equal = true;
    } else {
        value va, vb;
        bool oka = parse_value(ca, ca + strlen(ca), 0, &va);
        bool okb = parse_value(cb, cb + strlen(cb), 0, &vb);
        if (oka && okb) *equal = value_equal(&va, &vb, 0);
        value_free(&va);
        value_free(&vb);
    }
    st_free(ca);
    st_free(cb);
    return STETHO_OK;
}
