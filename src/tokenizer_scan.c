/* A fast path for the two huge members of tokenizer.json, model.vocab (262k entries
 * for Gemma 3) and model.merges (515k pairs). jansson builds a node per value and
 * takes about a second on Gemma 3's 33 MB file; this scanner reads those two members
 * straight into the hash maps, and jansson parses everything else (with the two
 * members replaced by {} and []). It is strict: anything it does not accept exactly
 * (escapes it cannot decode, floats, odd layout) makes the loader fall back to jansson
 * for the whole file, so error messages for malformed files always come from jansson. */
#include "tokenizer_internal.h"

#include <stddef.h>
#include <string.h>

static const char *skip_ws(const char *p, const char *e) {
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    return p;
}

/* p at '"': the position after the closing quote, or NULL. */
static const char *skip_string(const char *p, const char *e) {
    for (p++; p < e;) {
        const char *q = memchr(p, '"', (size_t)(e - p));
        if (!q) return NULL;
        size_t bs = 0; /* an odd run of backslashes escapes the quote */
        while (q - bs > p && q[-1 - (ptrdiff_t)bs] == '\\') bs++;
        if (!(bs & 1)) return q + 1;
        p = q + 1;
    }
    return NULL;
}

/* Lenient skip of any value (exact validation is jansson's, or the strict parsers'). */
static const char *skip_value(const char *p, const char *e) {
    if (p >= e) return NULL;
    if (*p == '"') return skip_string(p, e);
    if (*p == '{' || *p == '[') {
        int depth = 0;
        while (p < e) {
            char c = *p;
            if (c == '"') {
                if (!(p = skip_string(p, e))) return NULL;
                continue;
            }
            if (c == '{' || c == '[') depth++;
            else if (c == '}' || c == ']') {
                if (--depth == 0) return p + 1;
            }
            p++;
        }
        return NULL;
    }
    const char *s = p;
    while (p < e && !strchr(",}] \t\r\n", *p)) p++;
    return p > s ? p : NULL;
}

/* The values of members keys[0..n) of the object at p (vs[i] = NULL when absent), in
 * one pass; false if a key repeats or if any key holds an escape (it could spell one
 * of the keys in a way a byte comparison misses). */
static bool members(const char *p, const char *e, const char *const *keys, int n, const char **vs, const char **ve) {
    for (int i = 0; i < n; i++) vs[i] = ve[i] = NULL;
    p = skip_ws(p, e);
    if (p >= e || *p != '{') return false;
    p = skip_ws(p + 1, e);
    if (p < e && *p == '}') return true;
    for (;;) {
        if (p >= e || *p != '"') return false;
        const char *ks = p + 1, *kend = skip_string(p, e);
        if (!kend) return false;
        size_t kl = (size_t)(kend - 1 - ks);
        if (memchr(ks, '\\', kl)) return false;
        int hit = -1;
        for (int i = 0; i < n && hit < 0; i++)
            if (strlen(keys[i]) == kl && !memcmp(ks, keys[i], kl)) hit = i;
        p = skip_ws(kend, e);
        if (p >= e || *p != ':') return false;
        p = skip_ws(p + 1, e);
        const char *v = p;
        if (!(p = skip_value(p, e))) return false;
        if (hit >= 0) {
            if (vs[hit]) return false;
            vs[hit] = v, ve[hit] = p;
        }
        p = skip_ws(p, e);
        if (p < e && *p == ',') {
            p = skip_ws(p + 1, e);
            continue;
        }
        return p < e && *p == '}';
    }
}

bool tk_scan_locate(const char *s, size_t n, size_t vocab[2], size_t merges[2]) {
    static const char *const root_keys[] = {"model"}, *const model_keys[] = {"vocab", "merges"};
    const char *e = s + n, *ms[1], *me[1], *vs[2], *ve[2];
    if (!members(s, e, root_keys, 1, ms, me) || !ms[0] || *ms[0] != '{') return false;
    if (!members(ms[0], me[0], model_keys, 2, vs, ve) || !vs[0] || !vs[1] || *vs[0] != '{' || *vs[1] != '[')
        return false;
    vocab[0] = (size_t)(vs[0] - s), vocab[1] = (size_t)(ve[0] - s);
    merges[0] = (size_t)(vs[1] - s), merges[1] = (size_t)(ve[1] - s);
    return true;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static bool hex4(const char *p, const char *e, uint32_t *out) {
    if (e - p < 4) return false;
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(p[i]);
        if (h < 0) return false;
        v = v << 4 | (uint32_t)h;
    }
    *out = v;
    return true;
}

/* A JSON string at *pp: (*str, *len) points into the text when it has no escapes,
 * else into buf. False on anything jansson would reject (or that needs its judgment). */
static bool scan_string(const char **pp, const char *e, st_buf *buf, const char **str, size_t *len) {
    const char *p = *pp;
    if (p >= e || *p != '"') return false;
    const char *run = ++p;
    bool esc = false, high = false;
    buf->len = 0;
    while (p < e) {
        unsigned char c = (unsigned char)*p;
        if (c == '"') break;
        if (c < 0x20) return false;
        if (c >= 0x80) high = true;
        if (c != '\\') {
            p++;
            continue;
        }
        esc = true;
        if (!st_buf_append(buf, run, (size_t)(p - run)) || p + 1 >= e) return false;
        char k = p[1], out = 0;
        p += 2;
        switch (k) {
        case '"': out = '"'; break;
        case '\\': out = '\\'; break;
        case '/': out = '/'; break;
        case 'b': out = '\b'; break;
        case 'f': out = '\f'; break;
        case 'n': out = '\n'; break;
        case 'r': out = '\r'; break;
        case 't': out = '\t'; break;
        case 'u': {
            uint32_t cp, lo;
            if (!hex4(p, e, &cp)) return false;
            p += 4;
            if (cp >= 0xDC00 && cp <= 0xDFFF) return false;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (e - p < 6 || p[0] != '\\' || p[1] != 'u' || !hex4(p + 2, e, &lo) || lo < 0xDC00 || lo > 0xDFFF)
                    return false;
                p += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            char u[4];
            int ul;
            if (cp < 0x80) u[0] = (char)cp, ul = 1;
            else if (cp < 0x800) u[0] = (char)(0xC0 | cp >> 6), u[1] = (char)(0x80 | (cp & 0x3F)), ul = 2;
            else if (cp < 0x10000)
                u[0] = (char)(0xE0 | cp >> 12), u[1] = (char)(0x80 | ((cp >> 6) & 0x3F)),
                u[2] = (char)(0x80 | (cp & 0x3F)), ul = 3;
            else
                u[0] = (char)(0xF0 | cp >> 18), u[1] = (char)(0x80 | ((cp >> 12) & 0x3F)),
                u[2] = (char)(0x80 | ((cp >> 6) & 0x3F)), u[3] = (char)(0x80 | (cp & 0x3F)), ul = 4;
            if (!st_buf_append(buf, u, (size_t)ul)) return false;
            run = p;
            continue;
        }
        default: return false;
        }
        if (!st_buf_append(buf, &out, 1)) return false;
        run = p;
    }
    if (p >= e) return false;
    if (esc) {
        if (!st_buf_append(buf, run, (size_t)(p - run))) return false;
        *str = buf->data, *len = buf->len;
    } else {
        *str = run, *len = (size_t)(p - run);
    }
    if (high) /* raw bytes must be valid UTF-8, as jansson requires */
        for (size_t i = 0; i < *len;) {
            int k = tk_utf8_seq((const unsigned char *)*str + i, *len - i);
            if (k <= 0) return false;
            i += (size_t)k;
        }
    *pp = p + 1;
    return true;
}

/* A JSON integer (no fraction or exponent) at *pp. */
static bool scan_int(const char **pp, const char *e, int64_t *v) {
    const char *p = *pp;
    bool neg = p < e && *p == '-';
    if (neg) p++;
    if (p >= e || *p < '0' || *p > '9' || (*p == '0' && p + 1 < e && p[1] >= '0' && p[1] <= '9')) return false;
    int64_t x = 0;
    while (p < e && *p >= '0' && *p <= '9') {
        if (x > (INT64_MAX - 9) / 10) return false;
        x = x * 10 + (*p++ - '0');
    }
    if (p < e && (*p == '.' || *p == 'e' || *p == 'E')) return false;
    *v = neg ? -x : x;
    *pp = p;
    return true;
}

stetho_status tk_scan_vocab(stetho_tok_impl *t, const char *s, const size_t span[2], const char *file, int32_t *max_id,
                            bool *fallback) {
    const char *p = s + span[0] + 1, *e = s + span[1] - 1; /* inside the braces */
    st_buf kb;
    st_buf_init(&kb);
    stetho_status st = STETHO_OK;
    bool done = false;
    p = skip_ws(p, e);
    while (p < e) {
        const char *key;
        size_t klen;
        int64_t v;
        if (!scan_string(&p, e, &kb, &key, &klen)) break;
        p = skip_ws(p, e);
        if (p >= e || *p != ':') break;
        p = skip_ws(p + 1, e);
        if (!scan_int(&p, e, &v)) break;
        if ((st = tk_vocab_add(t, key, klen, true, v, file, max_id))) break;
        p = skip_ws(p, e);
        if (p < e && *p == ',') {
            p = skip_ws(p + 1, e);
            if (p >= e) break; /* trailing comma */
        } else if (p != e) break;
        else done = true;
    }
    if (!st && !done && skip_ws(s + span[0] + 1, e) != e) *fallback = true; /* stopped early, and not empty */
    if (kb.failed && !st) st = st_err(STETHO_ERR_NOMEM, "out of memory reading the vocabulary");
    st_buf_free(&kb);
    return st;
}

stetho_status tk_scan_merges(stetho_tok_impl *t, const char *s, const size_t span[2], const char *file, st_buf *scratch,
                             bool *fallback) {
    const char *p = s + span[0] + 1, *e = s + span[1] - 1; /* inside the brackets */
    st_buf ab, bb;
    st_buf_init(&ab);
    st_buf_init(&bb);
    stetho_status st = STETHO_OK;
    size_t rank = 0;
    bool done = false;
    p = skip_ws(p, e);
    while (p < e) {
        const char *a, *b, *m;
        size_t al, bl, ml;
        if (*p == '"') {
            if (!scan_string(&p, e, &ab, &m, &ml)) break;
            if (!tk_merge_split(m, ml, &a, &al, &b, &bl)) {
                st = st_err(STETHO_ERR_FORMAT, "%s: merge %zu ('%.*s') is not two tokens separated by one space", file,
                            rank, (int)ml, m);
                break;
            }
        } else if (*p == '[') {
            p = skip_ws(p + 1, e);
            if (!scan_string(&p, e, &ab, &a, &al)) break;
            p = skip_ws(p, e);
            if (p >= e || *p != ',') break;
            p = skip_ws(p + 1, e);
            if (!scan_string(&p, e, &bb, &b, &bl)) break;
            p = skip_ws(p, e);
            if (p >= e || *p != ']') break;
            p++;
        } else break;
        if ((st = tk_merge_add(t, rank++, a, al, b, bl, scratch, file))) break;
        p = skip_ws(p, e);
        if (p < e && *p == ',') {
            p = skip_ws(p + 1, e);
            if (p >= e) break; /* trailing comma */
        } else if (p != e) break;
        else done = true;
    }
    if (!st && !done && skip_ws(s + span[0] + 1, e) != e) *fallback = true;
    if ((ab.failed || bb.failed) && !st) st = st_err(STETHO_ERR_NOMEM, "out of memory reading merges");
    st_buf_free(&ab);
    st_buf_free(&bb);
    return st;
}
