/* lm-evaluation-harness minerva_math answer extraction and normalisation, re-expressed
 * in C so that stetho's scores equal lm-eval's. Python semantics that matter (code
 * points, `.` not matching only "\n", str.strip's and str.isdigit's Unicode tables,
 * re.sub's left-to-right non-overlapping replacement) are reproduced exactly; the
 * regular expressions run on PCRE2 in UTF mode, whose backtracking order is Python's. */
#include "stetho/answer.h"
#include "internal.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

/* ---- UTF-8 helpers */

/* Decode one code point at s[i] (s valid UTF-8, as after sanitize()); returns its
 * length in bytes. */
static size_t utf8_decode(const unsigned char *s, size_t i, size_t n, uint32_t *cp) {
    unsigned char c = s[i];
    size_t len = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    if (i + len > n) len = 1;
    uint32_t v = len == 1 ? c : len == 2 ? (c & 0x1Fu) : len == 3 ? (c & 0x0Fu) : (c & 0x07u);
    for (size_t k = 1; k < len; k++) v = (v << 6) | (s[i + k] & 0x3Fu);
    *cp = v;
    return len;
}

/* Length of a valid UTF-8 sequence starting at s[i], or 0 if invalid (overlong,
 * surrogate, beyond U+10FFFF, truncated). */
static size_t utf8_valid_len(const unsigned char *s, size_t i, size_t n) {
    unsigned char c = s[i];
    if (c < 0x80) return 1;
    size_t len;
    uint32_t min;
    if (c >= 0xC2 && c <= 0xDF) len = 2, min = 0x80;
    else if (c >= 0xE0 && c <= 0xEF) len = 3, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4) len = 4, min = 0x10000;
    else return 0;
    if (i + len > n) return 0;
    uint32_t v = c & (len == 2 ? 0x1Fu : len == 3 ? 0x0Fu : 0x07u);
    for (size_t k = 1; k < len; k++) {
        if ((s[i + k] & 0xC0) != 0x80) return 0;
        v = (v << 6) | (s[i + k] & 0x3Fu);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return 0;
    return len;
}

/* A copy of s in which every invalid byte becomes U+FFFD. */
static char *sanitize(const char *s) {
    const unsigned char *u = (const unsigned char *)s;
    size_t n = strlen(s);
    st_buf b;
    st_buf_init(&b);
    size_t i = 0, run = 0; /* bytes [run, i) are valid and not yet copied */
    while (i < n) {
        size_t l = utf8_valid_len(u, i, n);
        if (l) {
            i += l;
            continue;
        }
        st_buf_append(&b, s + run, i - run);
        st_buf_append(&b, "\xEF\xBF\xBD", 3);
        run = ++i;
    }
    st_buf_append(&b, s + run, n - run);
    if (!st_buf_append(&b, "", 1) || b.failed) {
        st_buf_free(&b);
        return NULL;
    }
    return b.data;
}

/* Python's str.isspace (Unicode 14 as in CPython 3.11). */
static bool py_isspace(uint32_t c) {
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
           c == 0x3000;
}

/* Python's str.isdigit per code point (Numeric_Type Digit or Decimal; CPython 3.11,
 * Unicode 14: 3.10-3.13 agree on every reference vector). */
static const uint32_t digit_ranges[][2] = {
    {0x30, 0x39}, {0xB2, 0xB3}, {0xB9, 0xB9}, {0x660, 0x669}, {0x6F0, 0x6F9}, {0x7C0, 0x7C9},
    {0x966, 0x96F}, {0x9E6, 0x9EF}, {0xA66, 0xA6F}, {0xAE6, 0xAEF}, {0xB66, 0xB6F}, {0xBE6, 0xBEF},
    {0xC66, 0xC6F}, {0xCE6, 0xCEF}, {0xD66, 0xD6F}, {0xDE6, 0xDEF}, {0xE50, 0xE59}, {0xED0, 0xED9},
    {0xF20, 0xF29}, {0x1040, 0x1049}, {0x1090, 0x1099}, {0x1369, 0x1371}, {0x17E0, 0x17E9},
    {0x1810, 0x1819}, {0x1946, 0x194F}, {0x19D0, 0x19DA}, {0x1A80, 0x1A89}, {0x1A90, 0x1A99},
    {0x1B50, 0x1B59}, {0x1BB0, 0x1BB9}, {0x1C40, 0x1C49}, {0x1C50, 0x1C59}, {0x2070, 0x2070},
    {0x2074, 0x2079}, {0x2080, 0x2089}, {0x2460, 0x2468}, {0x2474, 0x247C}, {0x2488, 0x2490},
    {0x24EA, 0x24EA}, {0x24F5, 0x24FD}, {0x24FF, 0x24FF}, {0x2776, 0x277E}, {0x2780, 0x2788},
    {0x278A, 0x2792}, {0xA620, 0xA629}, {0xA8D0, 0xA8D9}, {0xA900, 0xA909}, {0xA9D0, 0xA9D9},
    {0xA9F0, 0xA9F9}, {0xAA50, 0xAA59}, {0xABF0, 0xABF9}, {0xFF10, 0xFF19}, {0x104A0, 0x104A9},
    {0x10A40, 0x10A43}, {0x10D30, 0x10D39}, {0x10E60, 0x10E68}, {0x11052, 0x1105A},
    {0x11066, 0x1106F}, {0x110F0, 0x110F9}, {0x11136, 0x1113F}, {0x111D0, 0x111D9},
    {0x112F0, 0x112F9}, {0x11450, 0x11459}, {0x114D0, 0x114D9}, {0x11650, 0x11659},
    {0x116C0, 0x116C9}, {0x11730, 0x11739}, {0x118E0, 0x118E9}, {0x11950, 0x11959},
    {0x11C50, 0x11C59}, {0x11D50, 0x11D59}, {0x11DA0, 0x11DA9}, {0x16A60, 0x16A69},
    {0x16AC0, 0x16AC9}, {0x16B50, 0x16B59}, {0x1D7CE, 0x1D7FF}, {0x1E140, 0x1E149},
    {0x1E2F0, 0x1E2F9}, {0x1E950, 0x1E959}, {0x1F100, 0x1F10A}, {0x1FBF0, 0x1FBF9},
};

static bool py_isdigit_cp(uint32_t c) {
    size_t lo = 0, hi = ST_ARRAY_LEN(digit_ranges);
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (c < digit_ranges[mid][0]) hi = mid;
        else if (c > digit_ranges[mid][1]) lo = mid + 1;
        else return true;
    }
    return false;
}

/* ---- string operations with Python semantics */

/* str.replace(before, after) for every occurrence, left to right, into a new string. */
static char *replace_all(const char *s, const char *before, const char *after) {
    size_t bl = strlen(before), al = strlen(after);
    st_buf b;
    st_buf_init(&b);
    const char *p = s, *q;
    while ((q = strstr(p, before)) != NULL) {
        st_buf_append(&b, p, (size_t)(q - p));
        st_buf_append(&b, after, al);
        p = q + bl;
    }
    st_buf_append(&b, p, strlen(p));
    if (!st_buf_append(&b, "", 1) || b.failed) {
        st_buf_free(&b);
        return NULL;
    }
    return b.data;
}

/* Replace *s by f(*s, ...) result, freeing the old one; false on allocation failure. */
static bool swap_in(char **s, char *next) {
    if (!next) return false;
    st_free(*s);
    *s = next;
    return true;
}

/* ---- regular expressions (compiled once, shared by all threads) */

enum {
    RX_FINAL,
    RX_DOLLARS,
    RX_TEXT,
    RX_TEXTBF,
    RX_OVERLINE,
    RX_BOXED,
    RX_FRAC,
    RX_SQRT,
    RX_COUNT,
};

/* The patterns of lm-eval's utils.py; Python's `re` and PCRE2 agree on all of them
 * (no Python-only syntax, lazy/greedy quantifiers backtrack in the same order). */
static const char *const rx_src[RX_COUNT] = {
    [RX_FINAL] = "Final Answer: The final answer is(.*?). I hope it is correct.",
    [RX_DOLLARS] = "(.*?)(\\$)(.*?)(\\$)(.*)",
    [RX_TEXT] = "(\\\\text\\{)(.*?)(\\})",
    [RX_TEXTBF] = "(\\\\textbf\\{)(.*?)(\\})",
    [RX_OVERLINE] = "(\\\\overline\\{)(.*?)(\\})",
    [RX_BOXED] = "(\\\\boxed\\{)(.*)(\\})",
    [RX_FRAC] = "(frac)([^{])(.)",
    [RX_SQRT] = "(sqrt)([^{])",
};

static pcre2_code *rx[RX_COUNT];
static bool rx_ok;
static pthread_once_t rx_once = PTHREAD_ONCE_INIT;

static void rx_compile(void) {
    pcre2_compile_context *cc = pcre2_compile_context_create(NULL);
    if (!cc) return;
    /* Python's `.` excludes "\n" only; PCRE2's newline convention decides what `.`
     * excludes, so pin it to LF. */
    pcre2_set_newline(cc, PCRE2_NEWLINE_LF);
    rx_ok = true;
    for (int i = 0; i < RX_COUNT; i++) {
        int err;
        PCRE2_SIZE off;
        rx[i] = pcre2_compile((PCRE2_SPTR)rx_src[i], PCRE2_ZERO_TERMINATED, PCRE2_UTF, &err, &off, cc);
        if (!rx[i]) {
            rx_ok = false;
            continue;
        }
        pcre2_jit_compile(rx[i], PCRE2_JIT_COMPLETE); /* optional: interpreter otherwise */
    }
    pcre2_compile_context_free(cc);
}

static stetho_status rx_ready(void) {
    pthread_once(&rx_once, rx_compile);
    return rx_ok ? STETHO_OK : st_err(STETHO_ERR_UNSUPPORTED, "answer: cannot compile regular expressions");
}

/* One search from `start`: >0 on match (ovector filled), 0 on no match, <0 error. */
static int rx_search(int which, const char *s, size_t n, size_t start, pcre2_match_data *md) {
    int rc = pcre2_match(rx[which], (PCRE2_SPTR)s, n, start, PCRE2_NO_UTF_CHECK, md, NULL);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT || rc == PCRE2_ERROR_MATCHLIMIT || rc == PCRE2_ERROR_DEPTHLIMIT) {
        /* Long subjects can exhaust the JIT stack; the interpreter keeps its
         * backtracking state on the heap, so retry there with generous limits. */
        pcre2_match_context *mc = pcre2_match_context_create(NULL);
        if (!mc) return PCRE2_ERROR_NOMEMORY;
        pcre2_set_match_limit(mc, 4000000000u);
        pcre2_set_depth_limit(mc, 4000000000u);
        rc = pcre2_match(rx[which], (PCRE2_SPTR)s, n, start, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md, mc);
        pcre2_match_context_free(mc);
    }
    if (rc == PCRE2_ERROR_NOMATCH) return 0;
    return rc < 0 ? rc : 1;
}

/* re.sub(pattern, template, s) with Python's template syntax restricted to literal
 * text and \N group references. Replaces *s. */
static stetho_status rx_sub(int which, const char *tmpl, char **s) {
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(rx[which], NULL);
    if (!md) return st_err(STETHO_ERR_NOMEM, "answer: out of memory");
    const char *in = *s;
    size_t n = strlen(in), pos = 0;
    st_buf b;
    st_buf_init(&b);
    stetho_status st = STETHO_OK;
    while (pos <= n) {
        int rc = rx_search(which, in, n, pos, md);
        if (rc < 0) {
            st = st_err(STETHO_ERR_UNSUPPORTED, "answer: regular expression failed (PCRE2 error %d)", rc);
            break;
        }
        if (rc == 0) break;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        st_buf_append(&b, in + pos, ov[0] - pos);
        for (const char *t = tmpl; *t; t++) {
            if (t[0] == '\\' && t[1] >= '1' && t[1] <= '9') {
                int g = t[1] - '0';
                if (ov[2 * g] != PCRE2_UNSET) st_buf_append(&b, in + ov[2 * g], ov[2 * g + 1] - ov[2 * g]);
                t++;
            } else {
                st_buf_append(&b, t, 1);
            }
        }
        if (ov[1] > ov[0]) {
            pos = ov[1];
        } else { /* empty match: keep one code point and move on (none of ours can) */
            uint32_t cp;
            size_t l = pos < n ? utf8_decode((const unsigned char *)in, pos, n, &cp) : 1;
            if (pos < n) st_buf_append(&b, in + pos, l);
            pos += l;
        }
    }
    if (pos < n) st_buf_append(&b, in + pos, n - pos);
    pcre2_match_data_free(md);
    if (!st && (!st_buf_append(&b, "", 1) || b.failed)) st = st_err(STETHO_ERR_NOMEM, "answer: out of memory");
    if (st) {
        st_buf_free(&b);
        return st;
    }
    st_free(*s);
    *s = b.data;
    return STETHO_OK;
}

/* ---- the lm-eval functions */

stetho_status stetho_answer_extract(const char *generation, char **out) {
    *out = NULL;
    if (!generation) return st_err(STETHO_ERR_INVALID, "answer: no generation text");
    stetho_status st = rx_ready();
    if (st) return st;
    char *clean = sanitize(generation);
    if (!clean) return STETHO_ERR_NOMEM;
    /* lm-eval appends the end sentence so that an answer cut off right after its
     * final period still matches. */
    static const char end_seq[] = "I hope it is correct.";
    size_t n = strlen(clean), total;
    if (!st_add_size(n, sizeof end_seq, &total)) {
        st_free(clean);
        return st_err(STETHO_ERR_NOMEM, "answer: generation too long");
    }
    /* 64 zero bytes of slack: PCRE2's JIT scans with 16- and 32-byte loads
     * that may reach past the subject's end (harmless, but a read past the
     * block for memcheck) */
    char *text = total <= SIZE_MAX - 64 ? st_realloc(clean, total + 64) : NULL;
    if (!text) {
        st_free(clean);
        return STETHO_ERR_NOMEM;
    }
    memset(text + total, 0, 64);
    memcpy(text + n, end_seq, sizeof end_seq);
    n += sizeof end_seq - 1;

    pcre2_match_data *md = pcre2_match_data_create_from_pattern(rx[RX_FINAL], NULL);
    if (!md) {
        st_free(text);
        return st_err(STETHO_ERR_NOMEM, "answer: out of memory");
    }
    int rc = rx_search(RX_FINAL, text, n, 0, md);
    if (rc < 0) {
        st = st_err(STETHO_ERR_UNSUPPORTED, "answer: regular expression failed (PCRE2 error %d)", rc);
    } else if (rc == 0) {
        if (!(*out = st_strdup(STETHO_ANSWER_INVALID))) st = STETHO_ERR_NOMEM;
    } else {
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        const unsigned char *u = (const unsigned char *)text;
        size_t a = ov[2], e = ov[3];
        /* str.strip(): Unicode whitespace off both ends, code point by code point. */
        size_t first = e, last_end = a;
        for (size_t i = a; i < e;) {
            uint32_t cp;
            size_t l = utf8_decode(u, i, e, &cp);
            if (!py_isspace(cp)) {
                if (first == e) first = i;
                last_end = i + l;
            }
            i += l;
        }
        size_t len = first < last_end ? last_end - first : 0;
        char *r = st_malloc(len + 1);
        if (!r) {
            st = STETHO_ERR_NOMEM;
        } else {
            memcpy(r, text + (len ? first : 0), len);
            r[len] = '\0';
            *out = r;
        }
    }
    pcre2_match_data_free(md);
    st_free(text);
    return st;
}

static char *substr(const char *s, size_t a, size_t b) {
    char *r = st_malloc(b - a + 1);
    if (!r) return NULL;
    memcpy(r, s + a, b - a);
    r[b - a] = '\0';
    return r;
}

/* Last occurrence of needle in s, or NULL (Python's rfind). */
static const char *rfind(const char *s, const char *needle) {
    const char *last = NULL, *p = s;
    while ((p = strstr(p, needle)) != NULL) last = p++;
    return last;
}

stetho_status stetho_answer_last_boxed(const char *s, char **out) {
    *out = NULL;
    if (!s) return st_err(STETHO_ERR_INVALID, "answer: no text");
    const char *sp = rfind(s, "\\boxed ");
    if (sp) {
        /* The space form wins over any brace form: everything after the last
         * "\boxed " up to the first '$'. */
        const char *rest = sp + 7;
        size_t len = strcspn(rest, "$");
        size_t total;
        if (!st_add_size(len, 8, &total)) return st_err(STETHO_ERR_NOMEM, "answer: text too long");
        char *r = st_malloc(total);
        if (!r) return STETHO_ERR_NOMEM;
        memcpy(r, "\\boxed ", 7);
        memcpy(r + 7, rest, len);
        r[7 + len] = '\0';
        *out = r;
        return STETHO_OK;
    }
    const char *start = rfind(s, "\\boxed");
    if (!start) start = rfind(s, "\\fbox");
    if (!start) return STETHO_OK;
    /* Braces are counted without regard to backslash escapes, as lm-eval does. */
    long open = 0;
    for (const char *p = start; *p; p++) {
        if (*p == '{') open++;
        if (*p == '}') {
            open--;
            if (open == 0) {
                size_t a = (size_t)(start - s), b = (size_t)(p - s) + 1;
                if (!(*out = substr(s, a, b))) return STETHO_ERR_NOMEM;
                return STETHO_OK;
            }
        }
    }
    return STETHO_OK;
}

stetho_status stetho_answer_remove_boxed(const char *s, char **out) {
    *out = NULL;
    if (!s) return st_err(STETHO_ERR_INVALID, "answer: remove_boxed: no boxed expression (TypeError in lm-eval)");
    size_t n = strlen(s);
    if (strstr(s, "\\boxed ")) {
        if (strncmp(s, "\\boxed ", 7) != 0)
            return st_err(STETHO_ERR_FORMAT, "answer: remove_boxed: '\\boxed ' not at the start (AssertionError in lm-eval)");
        if (!(*out = st_strdup(s + 7))) return STETHO_ERR_NOMEM;
        return STETHO_OK;
    }
    if (strncmp(s, "\\boxed{", 7) != 0 || s[n - 1] != '}')
        return st_err(STETHO_ERR_FORMAT, "answer: remove_boxed: not of the form \\boxed{...} (AssertionError in lm-eval)");
    if (!(*out = substr(s, 7, n - 1))) return STETHO_ERR_NOMEM;
    return STETHO_OK;
}

/* lm-eval's SUBSTITUTIONS, applied in order. */
static const char *const substitutions[][2] = {
    {"an ", ""}, {"a ", ""}, {".$", "$"}, {"\\$", ""}, {"\\ ", ""}, {" ", ""},
    {"mbox", "text"}, {",\\text{and}", ","}, {"\\text{and}", ","}, {"\\text{m}", "\\text{}"},
};

/* lm-eval's REMOVED_EXPRESSIONS, removed in order. Some damage LaTeX ("ft" in
 * "\infty", "\left"); that is lm-eval's behaviour and is kept on purpose. */
static const char *const removed_expressions[] = {
    "square", "ways", "integers", "dollars", "mph", "inches", "ft", "hours", "km", "units",
    "\\ldots", "sue", "points", "feet", "minutes", "digits", "cents", "degrees", "cm", "gm",
    "pounds", "meters", "meals", "edges", "students", "childrentickets", "multiples",
    "\\text{s}", "\\text{.}", "\\text{\ns}", "\\text{}^2", "\\text{}^3", "\\text{\n}", "\\text{}",
    "\\mathrm{th}", "^\\circ", "^{\\circ}", "\\;", ",\\!", "{,}", "\"", "\\dots",
};

/* The regex steps: extract the first $...$ per line, unwrap \text, \textbf,
 * \overline and \boxed, and expand \fracab / \sqrta shorthand. */
static const struct {
    int rx;
    const char *tmpl;
} regex_steps[] = {
    {RX_DOLLARS, "$\\3$"}, {RX_TEXT, "\\2"}, {RX_TEXTBF, "\\2"}, {RX_OVERLINE, "\\2"},
    {RX_BOXED, "\\2"}, {RX_FRAC, "frac{\\2}{\\3}"}, {RX_SQRT, "sqrt{\\2}"},
};

/* str.replace(",", "").isdigit() on s (code points; false for ""). */
static bool digits_and_commas_only(const char *s) {
    const unsigned char *u = (const unsigned char *)s;
    size_t n = strlen(s), digits = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t l = utf8_decode(u, i, n, &cp);
        if (cp != ',') {
            if (!py_isdigit_cp(cp)) return false;
            digits++;
        }
        i += l;
    }
    return digits > 0;
}

stetho_status stetho_answer_normalize(const char *answer, char **out) {
    *out = NULL;
    if (!answer) return st_err(STETHO_ERR_INVALID, "answer: no answer text");
    stetho_status st = rx_ready();
    if (st) return st;
    char *clean = sanitize(answer);
    if (!clean) return STETHO_ERR_NOMEM;
    /* split("=")[-1]: only the text after the last '='. */
    const char *eq = strrchr(clean, '=');
    char *s = st_strdup(eq ? eq + 1 : clean);
    st_free(clean);
    if (!s) return STETHO_ERR_NOMEM;
    for (size_t i = 0; i < ST_ARRAY_LEN(substitutions); i++)
        if (!swap_in(&s, replace_all(s, substitutions[i][0], substitutions[i][1]))) goto nomem;
    for (size_t i = 0; i < ST_ARRAY_LEN(removed_expressions); i++)
        if (!swap_in(&s, replace_all(s, removed_expressions[i], ""))) goto nomem;
    for (size_t i = 0; i < ST_ARRAY_LEN(regex_steps); i++) {
        if ((st = rx_sub(regex_steps[i].rx, regex_steps[i].tmpl, &s)) != STETHO_OK) {
            st_free(s);
            return st;
        }
    }
    if (!swap_in(&s, replace_all(s, "$", ""))) goto nomem;
    /* "100,000" -> "100000", but only when nothing but digits and commas remain. */
    if (digits_and_commas_only(s) && !swap_in(&s, replace_all(s, ",", ""))) goto nomem;
    *out = s;
    return STETHO_OK;
nomem:
    st_free(s);
    return st_err(STETHO_ERR_NOMEM, "answer: out of memory");
}

stetho_status stetho_answer_gold(const char *solution, char **out) {
    *out = NULL;
    char *boxed = NULL, *content = NULL;
    stetho_status st = stetho_answer_last_boxed(solution, &boxed);
    if (st) return st;
    if (!boxed) return st_err(STETHO_ERR_NOTFOUND, "answer: the solution has no \\boxed{...} answer");
    st = stetho_answer_remove_boxed(boxed, &content);
    st_free(boxed);
    if (st == STETHO_ERR_FORMAT) st = st_err_context(STETHO_ERR_NOTFOUND, "gold answer");
    if (st) return st;
    st = stetho_answer_normalize(content, out);
    st_free(content);
    return st;
}
