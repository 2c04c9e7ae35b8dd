/* Encoding and decoding with a loaded tokenizer, following HF `tokenizers` step by
 * step: added tokens are split out of the raw text first (leftmost-longest), each
 * remaining segment is normalized on its own (so Prepend applies per segment, as in
 * HF), split again on normalized added tokens, pre-tokenized into words, and each
 * word goes through BPE (byte fallback, priority-queue merges). Decoding runs the
 * decoder chain over the list of token strings, as HF's decode_chain does. */
#include "tokenizer_internal.h"

#include <stdlib.h>
#include <string.h>

/* ---- UTF-8 ---------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at s (1..4), or -k where k >= 1 is the length
 * of the maximal invalid prefix to replace by one U+FFFD (Rust's from_utf8_lossy). */
int tk_utf8_seq(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    int need;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) need = 1;
    else if (c >= 0xE0 && c <= 0xEF) {
        need = 2;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 3;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else return -1;
    for (int k = 1; k <= need; k++) {
        if ((size_t)k >= n) return -k;
        unsigned b = s[k];
        if (k == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) return -k;
    }
    return need + 1;
}

static uint32_t utf8_decode(const unsigned char *s, int len) {
    if (len == 1) return s[0];
    uint32_t cp = s[0] & (0x7F >> len);
    for (int k = 1; k < len; k++) cp = cp << 6 | (s[k] & 0x3F);
    return cp;
}

static int utf8_encode(uint32_t cp, char *out) {
    if (cp < 0x80) return out[0] = (char)cp, 1;
    if (cp < 0x800) return out[0] = (char)(0xC0 | cp >> 6), out[1] = (char)(0x80 | (cp & 0x3F)), 2;
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | cp >> 12), out[1] = (char)(0x80 | ((cp >> 6) & 0x3F)), out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | cp >> 18), out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F)), out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Rust's char::is_whitespace (Unicode White_Space). */
static bool is_ws(uint32_t c) {
    return (c >= 9 && c <= 13) || c == 32 || c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
           c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

/* Start of the code point that ends at s[end) (s is valid UTF-8). */
static size_t utf8_prev(const char *s, size_t end) {
    size_t i = end - 1;
    while (i > 0 && ((unsigned char)s[i] & 0xC0) == 0x80) i--;
    return i;
}

static const char fffd[] = "\xef\xbf\xbd";

/* Append bytes to b replacing invalid UTF-8 like String::from_utf8_lossy. */
static bool append_lossy(st_buf *b, const char *p, size_t n) {
    size_t i = 0;
    while (i < n) {
        int k = tk_utf8_seq((const unsigned char *)p + i, n - i);
        if (k > 0) {
            size_t j = i;
            while (j < n && (k = tk_utf8_seq((const unsigned char *)p + j, n - j)) > 0) j += (size_t)k;
            if (!st_buf_append(b, p + i, j - i)) return false;
            i = j;
        } else {
            if (!st_buf_append(b, fffd, 3)) return false;
            i += (size_t)-k;
        }
    }
    return true;
}

/* ---- byte-level alphabet ------------------------------------------------------ */

void tk_bytelevel_tables(uint32_t byte_to_cp[256]) {
    /* GPT-2: printable bytes map to themselves, the rest to 256, 257, ... in order */
    uint32_t next = 256;
    for (int b = 0; b < 256; b++) {
        bool keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        byte_to_cp[b] = keep ? (uint32_t)b : next++;
    }
}

static int cp_to_byte(uint32_t cp) {
    if ((cp >= 33 && cp <= 126) || (cp >= 161 && cp <= 172) || (cp >= 174 && cp <= 255)) return (int)cp;
    /* the remapped bytes, in order: 0..32, 127..160, 173 became 256, 257, ... 323 */
    if (cp < 256 || cp > 323) return -1;
    uint32_t n = cp - 256;
    return n <= 32 ? (int)n : n <= 66 ? (int)(127 + n - 33) : 173;
}

/* ---- growable vectors ---------------------------------------------------------- */

typedef struct {
    int32_t *v;
    size_t n, cap;
} idvec;

static bool idvec_push(idvec *a, int32_t x) {
    if (a->n == a->cap) {
        size_t nc = a->cap ? a->cap * 2 : 64, bytes;
        if (!st_mul_size(nc, sizeof *a->v, &bytes)) return false;
        int32_t *p = st_realloc(a->v, bytes);
        if (!p) return false;
        a->v = p;
        a->cap = nc;
    }
    a->v[a->n++] = x;
    return true;
}

/* A list of strings held in one arena: pieces of text during pre-tokenization, or
 * token strings during decoding. `first` marks a piece that starts the input
 * (Metaspace's prepend_scheme "first"). */
typedef struct {
    size_t off, len;
    bool first;
} piece;
typedef struct {
    st_buf arena;
    piece *p;
    size_t n, cap;
} plist;

static void plist_init(plist *l) {
    memset(l, 0, sizeof *l);
    st_buf_init(&l->arena);
}
static void plist_free(plist *l) {
    st_buf_free(&l->arena);
    st_free(l->p);
    memset(l, 0, sizeof *l);
}
static void plist_clear(plist *l) {
    l->arena.len = 0;
    l->n = 0;
}
static const char *pstr(const plist *l, size_t i) { return l->arena.data ? l->arena.data + l->p[i].off : ""; }

/* Start a new piece; its bytes are appended to l->arena afterwards. */
static bool plist_begin(plist *l, bool first) {
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 16;
        piece *p = st_realloc(l->p, nc * sizeof *p);
        if (!p) return false;
        l->p = p;
        l->cap = nc;
    }
    l->p[l->n++] = (piece){l->arena.len, 0, first};
    return true;
}
static bool plist_end(plist *l) {
    if (l->arena.failed) return false;
    piece *p = &l->p[l->n - 1];
    p->len = l->arena.len - p->off;
    return true;
}
static bool plist_add(plist *l, const char *s, size_t n, bool first) {
    return plist_begin(l, first) && (n == 0 || st_buf_append(&l->arena, s, n)) && plist_end(l);
}

static stetho_status nomem(void) { return st_err(STETHO_ERR_NOMEM, "out of memory in the tokenizer"); }

/* ---- pattern matching ------------------------------------------------------------ */

typedef struct {
    size_t start, end;
    bool match;
} span;
typedef struct {
    span *s;
    size_t n, cap;
} spans;

static bool spans_push(spans *v, size_t a, size_t b, bool m) {
    if (v->n == v->cap) {
        size_t nc = v->cap ? v->cap * 2 : 32;
        span *p = st_realloc(v->s, nc * sizeof *p);
        if (!p) return false;
        v->s = p;
        v->cap = nc;
    }
    v->s[v->n++] = (span){a, b, m};
    return true;
}

/* Non-empty, non-overlapping matches of pat in s, left to right, with the gaps between
 * them: the whole string is covered (HF's Pattern::find_matches). */
static stetho_status find_matches(const tk_pattern *pat, const char *s, size_t n, spans *out) {
    out->n = 0;
    size_t prev = 0;
    if (pat->lit) {
        size_t i = 0;
        while (i + pat->lit_len <= n) {
            const char *m = memmem(s + i, n - i, pat->lit, pat->lit_len);
            if (!m) break;
            size_t a = (size_t)(m - s);
            if (a > prev && !spans_push(out, prev, a, false)) return nomem();
            if (!spans_push(out, a, a + pat->lit_len, true)) return nomem();
            prev = i = a + pat->lit_len;
        }
    } else {
        pcre2_match_data *md = pcre2_match_data_create_from_pattern(pat->re, NULL);
        if (!md) return nomem();
        size_t i = 0;
        while (i <= n) {
            int rc = pcre2_match(pat->re, (PCRE2_SPTR)s, n, i, PCRE2_NO_UTF_CHECK, md, NULL);
            if (rc == PCRE2_ERROR_NOMATCH) break;
            if (rc < 0) {
                PCRE2_UCHAR msg[200];
                pcre2_get_error_message(rc, msg, sizeof msg);
                pcre2_match_data_free(md);
                return st_err(STETHO_ERR_UNSUPPORTED, "tokenizer regex failed: %s", (const char *)msg);
            }
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
            size_t a = ov[0], b = ov[1];
            if (b == a) { /* empty match: skip one character */
                if (a >= n) break;
                int k = tk_utf8_seq((const unsigned char *)s + a, n - a);
                i = a + (size_t)(k > 0 ? k : 1);
                continue;
            }
            if (a > prev && !spans_push(out, prev, a, false)) {
                pcre2_match_data_free(md);
                return nomem();
            }
            if (!spans_push(out, a, b, true)) {
                pcre2_match_data_free(md);
                return nomem();
            }
            prev = i = b;
        }
        pcre2_match_data_free(md);
    }
    if (prev < n && !spans_push(out, prev, n, false)) return nomem();
    return STETHO_OK;
}

/* HF's NormalizedString::split with a SplitDelimiterBehavior: pieces of s appended to out. */
static stetho_status split_piece(const tk_pattern *pat, tk_split_behavior beh, bool invert, const char *s, size_t n,
                                 bool first, plist *out, spans *sp) {
    stetho_status st = find_matches(pat, s, n, sp);
    if (st) return st;
    if (invert)
        for (size_t i = 0; i < sp->n; i++) sp->s[i].match = !sp->s[i].match;
    /* Build (start, end, remove) pieces in place. */
    size_t m = 0;
    bool prev_match = false;
    if (beh == TK_SPLIT_MERGED_NEXT) {
        /* fold from the right: a match joins the piece after it */
        size_t w = sp->n;
        for (size_t k = sp->n; k-- > 0;) {
            span cur = sp->s[k];
            if (cur.match && !prev_match && w < sp->n) sp->s[w].start = cur.start;
            else sp->s[--w] = (span){cur.start, cur.end, false};
            prev_match = cur.match;
        }
        memmove(sp->s, sp->s + w, (sp->n - w) * sizeof(span));
        m = sp->n - w;
    } else {
        for (size_t k = 0; k < sp->n; k++) {
            span cur = sp->s[k];
            switch (beh) {
            case TK_SPLIT_REMOVED: sp->s[m++] = cur; break; /* match = remove */
            case TK_SPLIT_ISOLATED: sp->s[m++] = (span){cur.start, cur.end, false}; break;
            case TK_SPLIT_MERGED_PREV:
                if (cur.match && !prev_match && m) sp->s[m - 1].end = cur.end;
                else sp->s[m++] = (span){cur.start, cur.end, false};
                break;
            case TK_SPLIT_CONTIGUOUS:
                if (cur.match == prev_match && m) sp->s[m - 1].end = cur.end;
                else sp->s[m++] = (span){cur.start, cur.end, false};
                break;
            default: break;
            }
            prev_match = cur.match;
        }
    }
    for (size_t k = 0; k < m; k++) {
        if (sp->s[k].match || sp->s[k].end == sp->s[k].start) continue;
        if (!plist_add(out, s + sp->s[k].start, sp->s[k].end - sp->s[k].start, first && sp->s[k].start == 0))
            return nomem();
    }
    return STETHO_OK;
}

/* ---- normalizers ---------------------------------------------------------------- */

/* Replace every match of pat in *b by rep (tmp is scratch). */
static stetho_status replace_all(const tk_pattern *pat, const char *rep, size_t rep_len, st_buf *b, st_buf *tmp,
                                 spans *sp) {
    stetho_status st = find_matches(pat, b->data ? b->data : "", b->len, sp);
    if (st) return st;
    tmp->len = 0;
    st_buf_append(tmp, "", 0); /* allocate even when empty: callers read ->data */
    for (size_t k = 0; k < sp->n; k++) {
        if (sp->s[k].match) st_buf_append(tmp, rep, rep_len);
        else st_buf_append(tmp, b->data + sp->s[k].start, sp->s[k].end - sp->s[k].start);
    }
    if (tmp->failed) return nomem();
    st_buf t = *b;
    *b = *tmp;
    *tmp = t;
    return STETHO_OK;
}

static stetho_status normalize(const tk_node *n, st_buf *b, st_buf *tmp, spans *sp) {
    switch (n->kind) {
    case TK_NORM_SEQUENCE:
        for (size_t i = 0; i < n->n_children; i++) {
            stetho_status st = normalize(&n->children[i], b, tmp, sp);
            if (st) return st;
        }
        return STETHO_OK;
    case TK_NORM_REPLACE: return replace_all(&n->pat, n->content, n->content_len, b, tmp, sp);
    case TK_NORM_PREPEND:
        if (!b->len) return STETHO_OK; /* HF prepends only to non-empty strings */
        tmp->len = 0;
        st_buf_append(tmp, n->content, n->content_len);
        st_buf_append(tmp, b->data, b->len);
        if (tmp->failed) return nomem();
        {
            st_buf t = *b;
            *b = *tmp;
            *tmp = t;
        }
        return STETHO_OK;
    case TK_NORM_STRIP: {
        size_t a = 0, e = b->len;
        while (n->flag_a && a < e) {
            int k = tk_utf8_seq((unsigned char *)b->data + a, e - a);
            if (!is_ws(utf8_decode((unsigned char *)b->data + a, k))) break;
            a += (size_t)k;
        }
        while (n->flag_b && e > a) {
            size_t p = utf8_prev(b->data, e);
            if (!is_ws(utf8_decode((unsigned char *)b->data + p, (int)(e - p)))) break;
            e = p;
        }
        memmove(b->data, b->data + a, e - a);
        b->len = e - a;
        return STETHO_OK;
    }
    case TK_NORM_UNICODE:
        for (size_t i = 0; i < b->len; i++)
            if ((unsigned char)b->data[i] >= 0x80)
                return st_err(STETHO_ERR_UNSUPPORTED,
                              "this tokenizer's Unicode normalizer (NFC/NFKC/...) is only supported on ASCII text; "
                              "byte %zu of the segment is not ASCII",
                              i);
        return STETHO_OK;
    }
    return STETHO_OK;
}

/* ---- pre-tokenizers ------------------------------------------------------------ */

static stetho_status pretokenize(const tk_node *n, plist *in, plist *out, spans *sp);

static stetho_status pre_metaspace(const tk_node *n, plist *in, plist *out, spans *sp) {
    st_buf b, tmp;
    st_buf_init(&b);
    st_buf_init(&tmp);
    tk_pattern space = {.lit = " ", .lit_len = 1}, rep = {.lit = n->content, .lit_len = n->content_len};
    stetho_status st = STETHO_OK;
    for (size_t i = 0; i < in->n && !st; i++) {
        b.len = 0;
        st_buf_append(&b, pstr(in, i), in->p[i].len);
        if (b.failed) {
            st = nomem();
            break;
        }
        if ((st = replace_all(&space, n->content, n->content_len, &b, &tmp, sp))) break;
        bool starts = b.len >= n->content_len && !memcmp(b.data, n->content, n->content_len);
        if (!starts && (n->scheme == TK_PREPEND_ALWAYS || (n->scheme == TK_PREPEND_FIRST && in->p[i].first))) {
            tmp.len = 0;
            st_buf_append(&tmp, n->content, n->content_len);
            st_buf_append(&tmp, b.data, b.len);
            if (tmp.failed) {
                st = nomem();
                break;
            }
            st_buf t = b;
            b = tmp;
            tmp = t;
        }
        if (n->flag_a) st = split_piece(&rep, TK_SPLIT_MERGED_NEXT, false, b.data, b.len, in->p[i].first, out, sp);
        else if (b.len && !plist_add(out, b.data, b.len, in->p[i].first)) st = nomem();
    }
    st_buf_free(&b);
    st_buf_free(&tmp);
    return st;
}

static stetho_status pre_bytelevel(const tk_node *n, plist *in, plist *out, spans *sp) {
    uint32_t map[256];
    tk_bytelevel_tables(map);
    plist mid;
    plist_init(&mid);
    stetho_status st = STETHO_OK;
    for (size_t i = 0; i < in->n && !st; i++) {
        const char *s = pstr(in, i);
        size_t len = in->p[i].len;
        if (n->flag_a && !(len && s[0] == ' ')) {
            plist tmp1;
            plist_init(&tmp1);
            if (!plist_begin(&tmp1, in->p[i].first) || !st_buf_append(&tmp1.arena, " ", 1) ||
                !st_buf_append(&tmp1.arena, s, len) || !plist_end(&tmp1)) {
                plist_free(&tmp1);
                st = nomem();
                break;
            }
            if (n->flag_b) st = split_piece(&n->pat, TK_SPLIT_ISOLATED, false, pstr(&tmp1, 0), tmp1.p[0].len,
                                            in->p[i].first, &mid, sp);
            else if (!plist_add(&mid, pstr(&tmp1, 0), tmp1.p[0].len, in->p[i].first)) st = nomem();
            plist_free(&tmp1);
        } else if (n->flag_b) {
            st = split_piece(&n->pat, TK_SPLIT_ISOLATED, false, s, len, in->p[i].first, &mid, sp);
        } else if (!plist_add(&mid, s, len, in->p[i].first)) {
            st = nomem();
        }
    }
    for (size_t i = 0; i < mid.n && !st; i++) {
        if (!plist_begin(out, mid.p[i].first)) {
            st = nomem();
            break;
        }
        const unsigned char *s = (const unsigned char *)pstr(&mid, i);
        for (size_t k = 0; k < mid.p[i].len; k++) {
            char enc[4];
            st_buf_append(&out->arena, enc, (size_t)utf8_encode(map[s[k]], enc));
        }
        if (!plist_end(out)) st = nomem();
    }
    plist_free(&mid);
    return st;
}

static stetho_status pretokenize(const tk_node *n, plist *in, plist *out, spans *sp) {
    plist_clear(out);
    switch (n->kind) {
    case TK_PRE_SEQUENCE: {
        plist a, b;
        plist_init(&a);
        plist_init(&b);
        stetho_status st = STETHO_OK;
        for (size_t i = 0; i < in->n && !st; i++)
            if (!plist_add(&a, pstr(in, i), in->p[i].len, in->p[i].first)) st = nomem();
        for (size_t c = 0; c < n->n_children && !st; c++) {
            st = pretokenize(&n->children[c], &a, &b, sp);
            plist t = a;
            a = b;
            b = t;
        }
        for (size_t i = 0; i < a.n && !st; i++)
            if (!plist_add(out, pstr(&a, i), a.p[i].len, a.p[i].first)) st = nomem();
        plist_free(&a);
        plist_free(&b);
        return st;
    }
    case TK_PRE_SPLIT:
    case TK_PRE_DIGITS:
        for (size_t i = 0; i < in->n; i++) {
            tk_split_behavior beh = n->kind == TK_PRE_SPLIT ? n->behavior : TK_SPLIT_ISOLATED;
            stetho_status st = split_piece(&n->pat, beh, n->invert, pstr(in, i), in->p[i].len, in->p[i].first, out, sp);
            if (st) return st;
        }
        return STETHO_OK;
    case TK_PRE_METASPACE: return pre_metaspace(n, in, out, sp);
    case TK_PRE_BYTELEVEL: return pre_bytelevel(n, in, out, sp);
    }
    return STETHO_OK;
}

/* ---- BPE ------------------------------------------------------------------------ */

typedef struct {
    int32_t id, prev, next;
    uint32_t len; /* 0 once merged away */
} sym;
typedef struct {
    int32_t rank, pos, new_id;
} merge_item;

typedef struct {
    sym *s;
    size_t n, cap;
    merge_item *h;
    size_t hn, hcap;
    st_buf key;
} bpe_scratch;

static bool merge_less(merge_item a, merge_item b) { return a.rank != b.rank ? a.rank < b.rank : a.pos < b.pos; }

static bool heap_push(bpe_scratch *w, merge_item m) {
    if (w->hn == w->hcap) {
        size_t nc = w->hcap ? w->hcap * 2 : 64;
        merge_item *p = st_realloc(w->h, nc * sizeof *p);
        if (!p) return false;
        w->h = p;
        w->hcap = nc;
    }
    size_t i = w->hn++;
    while (i > 0) {
        size_t par = (i - 1) / 2;
        if (!merge_less(m, w->h[par])) break;
        w->h[i] = w->h[par];
        i = par;
    }
    w->h[i] = m;
    return true;
}

static merge_item heap_pop(bpe_scratch *w) {
    merge_item top = w->h[0], last = w->h[--w->hn];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= w->hn) break;
        if (c + 1 < w->hn && merge_less(w->h[c + 1], w->h[c])) c++;
        if (!merge_less(w->h[c], last)) break;
        w->h[i] = w->h[c];
        i = c;
    }
    if (w->hn) w->h[i] = last;
    return top;
}

static bool sym_push(bpe_scratch *w, int32_t id, uint32_t len) {
    if (w->n == w->cap) {
        size_t nc = w->cap ? w->cap * 2 : 64, bytes;
        if (!st_mul_size(nc, sizeof(sym), &bytes)) return false;
        sym *p = st_realloc(w->s, bytes);
        if (!p) return false;
        w->s = p;
        w->cap = nc;
    }
    int32_t i = (int32_t)w->n++;
    w->s[i] = (sym){id, i - 1, i + 1, len};
    return true;
}

/* HF's BPE::merge_word + Word::merge_all for one word, ids appended to out. */
static stetho_status bpe_word(const stetho_tok_impl *t, const char *word, size_t n, bpe_scratch *w, idvec *out) {
    if (n > INT32_MAX / 2) return st_err(STETHO_ERR_INVALID, "a word of %zu bytes is too long to tokenize", n);
    if (t->ignore_merges) {
        int32_t id = tk_strmap_get(&t->vocab, word, n);
        if (id >= 0) return idvec_push(out, id) ? STETHO_OK : nomem();
    }
    w->n = 0;
    int32_t unk_pending = -1;
    uint32_t unk_len = 0;
    size_t plen = t->cont_prefix ? strlen(t->cont_prefix) : 0, slen = t->eow_suffix ? strlen(t->eow_suffix) : 0;
    for (size_t i = 0; i < n;) {
        int k = tk_utf8_seq((const unsigned char *)word + i, n - i);
        if (k <= 0) k = 1; /* input was validated; defensive */
        bool last = i + (size_t)k >= n;
        const char *s = word + i;
        size_t sl = (size_t)k;
        if ((i > 0 && plen) || (last && slen)) {
            w->key.len = 0;
            if (i > 0 && plen) st_buf_append(&w->key, t->cont_prefix, plen);
            st_buf_append(&w->key, word + i, (size_t)k);
            if (last && slen) st_buf_append(&w->key, t->eow_suffix, slen);
            if (w->key.failed) return nomem();
            s = w->key.data;
            sl = w->key.len;
        }
        int32_t id = tk_strmap_get(&t->vocab, s, sl);
        if (id >= 0) {
            if (unk_pending >= 0 && !sym_push(w, unk_pending, unk_len)) return nomem();
            unk_pending = -1;
            if (!sym_push(w, id, (uint32_t)k)) return nomem();
        } else {
            bool done = false;
            if (t->byte_fallback) {
                bool all = true;
                for (size_t b = 0; b < sl; b++) all = all && t->byte_id[(unsigned char)s[b]] >= 0;
                if (all) {
                    /* HF leaves a pending unk in place here, to be flushed later */
                    for (size_t b = 0; b < sl; b++)
                        if (!sym_push(w, t->byte_id[(unsigned char)s[b]], 1)) return nomem();
                    done = true;
                }
            }
            if (!done && t->unk_id >= 0) {
                if (unk_pending >= 0 && t->fuse_unk) unk_len += (uint32_t)k;
                else {
                    if (unk_pending >= 0 && !sym_push(w, unk_pending, unk_len)) return nomem();
                    unk_pending = t->unk_id;
                    unk_len = (uint32_t)k;
                }
            }
        }
        i += (size_t)k;
    }
    if (unk_pending >= 0 && !sym_push(w, unk_pending, unk_len)) return nomem();
    if (!w->n) return STETHO_OK;
    w->s[w->n - 1].next = -1;

    /* priority queue of candidate merges: lowest rank first, then leftmost */
    w->hn = 0;
    int32_t rank, nid;
    for (size_t i = 0; i + 1 < w->n; i++)
        if (tk_u64map_get(&t->merges, (uint64_t)w->s[i].id << 32 | (uint32_t)w->s[i + 1].id, &rank, &nid) &&
            !heap_push(w, (merge_item){rank, (int32_t)i, nid}))
            return nomem();
    while (w->hn) {
        merge_item top = heap_pop(w);
        sym *cur = &w->s[top.pos];
        if (cur->len == 0 || cur->next < 0) continue;
        sym *right = &w->s[cur->next];
        if (!tk_u64map_get(&t->merges, (uint64_t)cur->id << 32 | (uint32_t)right->id, &rank, &nid) ||
            nid != top.new_id)
            continue; /* stale entry: one side changed since it was queued */
        cur->id = top.new_id;
        cur->len += right->len;
        right->len = 0;
        cur->next = right->next;
        if (cur->next >= 0) w->s[cur->next].prev = top.pos;
        if (cur->prev >= 0) {
            sym *p = &w->s[cur->prev];
            if (tk_u64map_get(&t->merges, (uint64_t)p->id << 32 | (uint32_t)cur->id, &rank, &nid) &&
                !heap_push(w, (merge_item){rank, cur->prev, nid}))
                return nomem();
        }
        if (cur->next >= 0) {
            sym *nx = &w->s[cur->next];
            if (tk_u64map_get(&t->merges, (uint64_t)cur->id << 32 | (uint32_t)nx->id, &rank, &nid) &&
                !heap_push(w, (merge_item){rank, top.pos, nid}))
                return nomem();
        }
    }
    for (size_t i = 0; i < w->n; i++)
        if (w->s[i].len && !idvec_push(out, w->s[i].id)) return nomem();
    return STETHO_OK;
}

/* ---- added tokens -------------------------------------------------------------- */

typedef struct {
    size_t start, end;
    int32_t added; /* index in t->added, or -1 for text */
} seg;
typedef struct {
    seg *s;
    size_t n, cap;
} segs;

static bool segs_push(segs *v, size_t a, size_t b, int32_t added) {
    if (v->n == v->cap) {
        size_t nc = v->cap ? v->cap * 2 : 16;
        seg *p = st_realloc(v->s, nc * sizeof *p);
        if (!p) return false;
        v->s = p;
        v->cap = nc;
    }
    v->s[v->n++] = (seg){a, b, added};
    return true;
}

static bool is_word_at(const stetho_tok_impl *t, const char *s, size_t n, size_t at) {
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    if (!md) return false;
    int rc = pcre2_match(t->word_re, (PCRE2_SPTR)s, n, at, PCRE2_NO_UTF_CHECK, md, NULL);
    pcre2_match_data_free(md);
    return rc >= 0;
}

/* Split s into text segments and added-token matches (leftmost-longest, as HF's
 * aho-corasick), honouring single_word, lstrip and rstrip. */
static stetho_status split_added(const stetho_tok_impl *t, const tk_trie *tr, const char *s, size_t n, segs *out) {
    out->n = 0;
    size_t pos = 0, prev_end = 0;
    while (pos < n && !tr->empty) {
        int32_t node = 0, child, dummy, best = -1;
        size_t best_end = 0;
        for (size_t i = pos; i < n; i++) {
            if (!tk_u64map_get(&tr->edges, (uint64_t)node << 8 | (unsigned char)s[i], &child, &dummy)) break;
            node = child;
            if (tr->term[node] >= 0) best = tr->term[node], best_end = i + 1;
        }
        if (best < 0) {
            pos++;
            continue;
        }
        const tk_added *a = &t->added[best];
        size_t start = pos, stop = best_end;
        if (a->single_word) {
            bool word_before = start > 0 && is_word_at(t, s, n, utf8_prev(s, start));
            bool word_after = stop < n && is_word_at(t, s, n, stop);
            if (word_before || word_after) {
                pos = stop; /* HF's matcher has consumed it: no overlapping retry */
                continue;
            }
        }
        if (a->lstrip)
            while (start > prev_end) {
                size_t p = utf8_prev(s, start);
                if (!is_ws(utf8_decode((const unsigned char *)s + p, (int)(start - p)))) break;
                start = p;
            }
        if (a->rstrip)
            while (stop < n) {
                int k = tk_utf8_seq((const unsigned char *)s + stop, n - stop);
                if (k <= 0 || !is_ws(utf8_decode((const unsigned char *)s + stop, k))) break;
                stop += (size_t)k;
            }
        if (start > prev_end && !segs_push(out, prev_end, start, -1)) return nomem();
        if (!segs_push(out, start, stop, best)) return nomem();
        prev_end = pos = stop;
    }
    if (prev_end < n && !segs_push(out, prev_end, n, -1)) return nomem();
    return STETHO_OK;
}

/* ---- encode ------------------------------------------------------------------- */

typedef struct {
    st_buf norm, tmp;
    spans sp;
    segs s2;
    plist in, out;
    bpe_scratch bpe;
} enc_scratch;

static void enc_scratch_free(enc_scratch *e) {
    st_buf_free(&e->norm);
    st_buf_free(&e->tmp);
    st_free(e->sp.s);
    st_free(e->s2.s);
    plist_free(&e->in);
    plist_free(&e->out);
    st_free(e->bpe.s);
    st_free(e->bpe.h);
    st_buf_free(&e->bpe.key);
}

/* One raw text segment (no raw added tokens inside): normalize, split on normalized
 * added tokens, pre-tokenize, BPE. */
static stetho_status encode_segment(const stetho_tok_impl *t, const char *s, size_t n, bool first, enc_scratch *e,
                                    idvec *ids) {
    e->norm.len = 0;
    if (!st_buf_append(&e->norm, s, n)) return nomem();
    stetho_status st;
    if (t->normalizer && (st = normalize(t->normalizer, &e->norm, &e->tmp, &e->sp))) return st;
    const char *ns = e->norm.data ? e->norm.data : "";
    if ((st = split_added(t, &t->trie_norm, ns, e->norm.len, &e->s2))) return st;
    for (size_t k = 0; k < e->s2.n; k++) {
        seg g = e->s2.s[k];
        if (g.added >= 0) {
            if (!idvec_push(ids, t->added[g.added].id)) return nomem();
            continue;
        }
        plist_clear(&e->in);
        if (!plist_add(&e->in, ns + g.start, g.end - g.start, first && g.start == 0)) return nomem();
        plist *words = &e->in;
        if (t->pre) {
            if ((st = pretokenize(t->pre, &e->in, &e->out, &e->sp))) return st;
            words = &e->out;
        }
        for (size_t w = 0; w < words->n; w++)
            if (words->p[w].len && (st = bpe_word(t, pstr(words, w), words->p[w].len, &e->bpe, ids))) return st;
    }
    return STETHO_OK;
}

stetho_status stetho_tokenizer_encode(const stetho_tokenizer *tok, const char *text, size_t len, bool add_special,
                                      int32_t **ids_out, size_t *n_out) {
    *ids_out = NULL;
    *n_out = 0;
    if (!tok || !tok->impl) return st_err(STETHO_ERR_INVALID, "tokenizer not loaded");
    if (!text && len) return st_err(STETHO_ERR_INVALID, "NULL text");
    const stetho_tok_impl *t = tok->impl;
    for (size_t i = 0; i < len;) {
        int k = tk_utf8_seq((const unsigned char *)text + i, len - i);
        if (k <= 0) return st_err(STETHO_ERR_INVALID, "text is not valid UTF-8 at byte %zu", i);
        i += (size_t)k;
    }
    idvec ids = {0};
    segs s1 = {0};
    enc_scratch e;
    memset(&e, 0, sizeof e);
    st_buf_init(&e.norm);
    st_buf_init(&e.tmp);
    st_buf_init(&e.bpe.key);
    plist_init(&e.in);
    plist_init(&e.out);
    stetho_status st = STETHO_OK;
    if (add_special)
        for (size_t i = 0; i < t->n_tmpl_pre && !st; i++)
            if (!idvec_push(&ids, t->tmpl_pre[i])) st = nomem();
    if (!st) st = split_added(t, &t->trie_raw, text ? text : "", len, &s1);
    for (size_t k = 0; k < s1.n && !st; k++) {
        seg g = s1.s[k];
        if (g.added >= 0) {
            if (!idvec_push(&ids, t->added[g.added].id)) st = nomem();
        } else {
            st = encode_segment(t, text + g.start, g.end - g.start, g.start == 0, &e, &ids);
        }
    }
    if (add_special)
        for (size_t i = 0; i < t->n_tmpl_post && !st; i++)
            if (!idvec_push(&ids, t->tmpl_post[i])) st = nomem();
    enc_scratch_free(&e);
    st_free(s1.s);
    if (st) {
        st_free(ids.v);
        return st;
    }
    *ids_out = ids.v;
    *n_out = ids.n;
    return STETHO_OK;
}

/* ---- decode ------------------------------------------------------------------- */

static bool tok_append(plist *l, const char *s, size_t n) { return plist_add(l, s, n, false); }

static stetho_status decode_chain(const tk_node *n, plist *in, plist *out, spans *sp) {
    plist_clear(out);
    switch (n->kind) {
    case TK_DEC_SEQUENCE: {
        plist a, b;
        plist_init(&a);
        plist_init(&b);
        stetho_status st = STETHO_OK;
        for (size_t i = 0; i < in->n && !st; i++)
            if (!tok_append(&a, pstr(in, i), in->p[i].len)) st = nomem();
        for (size_t c = 0; c < n->n_children && !st; c++) {
            st = decode_chain(&n->children[c], &a, &b, sp);
            plist t = a;
            a = b;
            b = t;
        }
        for (size_t i = 0; i < a.n && !st; i++)
            if (!tok_append(out, pstr(&a, i), a.p[i].len)) st = nomem();
        plist_free(&a);
        plist_free(&b);
        return st;
    }
    case TK_DEC_REPLACE: {
        st_buf b, tmp;
        st_buf_init(&b);
        st_buf_init(&tmp);
        stetho_status st = STETHO_OK;
        for (size_t i = 0; i < in->n && !st; i++) {
            b.len = 0;
            if (!st_buf_append(&b, pstr(in, i), in->p[i].len)) st = nomem();
            else if (!(st = replace_all(&n->pat, n->content, n->content_len, &b, &tmp, sp)) &&
                     !tok_append(out, b.data ? b.data : "", b.len))
                st = nomem();
        }
        st_buf_free(&b);
        st_buf_free(&tmp);
        return st;
    }
    case TK_DEC_BYTEFALLBACK: {
        st_buf bytes;
        st_buf_init(&bytes);
        bool ok = true;
        for (size_t i = 0; i <= in->n && ok; i++) {
            const char *s = i < in->n ? pstr(in, i) : NULL;
            int v = -1;
            if (s && in->p[i].len == 6 && !memcmp(s, "<0x", 3) && s[5] == '>') {
                char hex[3] = {s[3], s[4], 0}, *end;
                bool digits = (hex[0] == '+' || strchr("0123456789abcdefABCDEF", hex[0])) && hex[1] &&
                              strchr("0123456789abcdefABCDEF", hex[1]);
                if (digits) v = (int)strtol(hex, &end, 16);
            }
            if (v >= 0) {
                unsigned char c = (unsigned char)v;
                ok = st_buf_append(&bytes, &c, 1);
                continue;
            }
            if (bytes.len) {
                /* a run of byte tokens: valid UTF-8 as one token, else one U+FFFD per byte */
                bool valid = true;
                for (size_t k = 0; k < bytes.len && valid;) {
                    int q = tk_utf8_seq((unsigned char *)bytes.data + k, bytes.len - k);
                    if (q <= 0) valid = false;
                    else k += (size_t)q;
                }
                if (valid) ok = tok_append(out, bytes.data, bytes.len);
                else
                    for (size_t k = 0; k < bytes.len && ok; k++) ok = tok_append(out, fffd, 3);
                bytes.len = 0;
            }
            if (s && ok) ok = tok_append(out, s, in->p[i].len);
        }
        st_buf_free(&bytes);
        return ok ? STETHO_OK : nomem();
    }
    case TK_DEC_FUSE: {
        if (!plist_begin(out, false)) return nomem();
        for (size_t i = 0; i < in->n; i++) st_buf_append(&out->arena, pstr(in, i), in->p[i].len);
        return plist_end(out) ? STETHO_OK : nomem();
    }
    case TK_DEC_STRIP: {
        for (size_t i = 0; i < in->n; i++) {
            const char *s = pstr(in, i);
            size_t a = 0, e = in->p[i].len;
            for (int k = 0; k < n->start && e - a >= n->content_len && !memcmp(s + a, n->content, n->content_len); k++)
                a += n->content_len;
            for (int k = 0; k < n->stop && e - a >= n->content_len &&
                            !memcmp(s + e - n->content_len, n->content, n->content_len);
                 k++)
                e -= n->content_len;
            if (!tok_append(out, s + a, e - a)) return nomem();
        }
        return STETHO_OK;
    }
    case TK_DEC_METASPACE: {
        for (size_t i = 0; i < in->n; i++) {
            const char *s = pstr(in, i);
            size_t len = in->p[i].len;
            if (!plist_begin(out, false)) return nomem();
            for (size_t k = 0; k < len;) {
                if (len - k >= n->content_len && !memcmp(s + k, n->content, n->content_len)) {
                    if (!(i == 0 && n->scheme != TK_PREPEND_NEVER)) st_buf_append(&out->arena, " ", 1);
                    k += n->content_len;
                } else {
                    st_buf_append(&out->arena, s + k, 1);
                    k++;
                }
            }
            if (!plist_end(out)) return nomem();
        }
        return STETHO_OK;
    }
    case TK_DEC_BYTELEVEL: {
        st_buf raw;
        st_buf_init(&raw);
        for (size_t i = 0; i < in->n; i++) {
            const unsigned char *s = (const unsigned char *)pstr(in, i);
            size_t len = in->p[i].len, mark = raw.len;
            bool all = true;
            for (size_t k = 0; k < len && all;) {
                int q = tk_utf8_seq(s + k, len - k);
                int b = q > 0 ? cp_to_byte(utf8_decode(s + k, q)) : -1;
                if (b < 0) all = false;
                else {
                    unsigned char c = (unsigned char)b;
                    st_buf_append(&raw, &c, 1);
                    k += (size_t)q;
                }
            }
            if (!all) { /* not byte-level text (an added token): its own bytes */
                raw.len = mark;
                st_buf_append(&raw, s, len);
            }
        }
        bool ok = !raw.failed && plist_begin(out, false) && append_lossy(&out->arena, raw.data, raw.len) &&
                  plist_end(out);
        st_buf_free(&raw);
        return ok ? STETHO_OK : nomem();
    }
    }
    return STETHO_OK;
}

stetho_status stetho_tokenizer_decode(const stetho_tokenizer *tok, const int32_t *ids, size_t n, bool skip_special,
                                      char **text, size_t *text_len) {
    *text = NULL;
    if (text_len) *text_len = 0;
    if (!tok || !tok->impl) return st_err(STETHO_ERR_INVALID, "tokenizer not loaded");
    const stetho_tok_impl *t = tok->impl;
    plist in, out;
    plist_init(&in);
    plist_init(&out);
    spans sp = {0};
    st_buf res;
    st_buf_init(&res);
    stetho_status st = STETHO_OK;
    for (size_t i = 0; i < n; i++) {
        const char *s = stetho_tokenizer_id_to_token(tok, ids[i]);
        if (!s) {
            st = st_err(STETHO_ERR_INVALID, "id %d at position %zu is not in the vocabulary (size %d)", ids[i], i,
                        t->n_ids);
            goto done;
        }
        if (skip_special && stetho_tokenizer_is_special(tok, ids[i])) continue;
        size_t len = t->added_by_id[ids[i]] >= 0 ? t->added[t->added_by_id[ids[i]]].len : t->vocab.klen[t->id_key[ids[i]]];
        if (!tok_append(&in, s, len)) {
            st = nomem();
            goto done;
        }
    }
    if (t->decoder) {
        if ((st = decode_chain(t->decoder, &in, &out, &sp))) goto done;
        for (size_t i = 0; i < out.n; i++) st_buf_append(&res, pstr(&out, i), out.p[i].len);
    } else {
        for (size_t i = 0; i < in.n; i++) { /* HF joins with spaces when there is no decoder */
            if (i) st_buf_append(&res, " ", 1);
            st_buf_append(&res, pstr(&in, i), in.p[i].len);
        }
    }
    if (!st_buf_append(&res, "", 1)) {
        st = nomem();
        goto done;
    }
    *text = res.data;
    if (text_len) *text_len = res.len - 1;
    res.data = NULL;
done:
    st_buf_free(&res);
    plist_free(&in);
    plist_free(&out);
    st_free(sp.s);
    return st;
}

/* ---- lookups -------------------------------------------------------------------- */

const char *stetho_tokenizer_id_to_token(const stetho_tokenizer *tok, int32_t id) {
    if (!tok || !tok->impl || id < 0 || id >= tok->impl->n_ids) return NULL;
    const stetho_tok_impl *t = tok->impl;
    if (t->added_by_id[id] >= 0) return t->added[t->added_by_id[id]].content;
    if (t->id_key[id] >= 0) return t->vocab.arena + t->vocab.koff[t->id_key[id]];
    return NULL;
}

int32_t stetho_tokenizer_token_to_id(const stetho_tokenizer *tok, const char *token) {
    if (!tok || !tok->impl || !token) return -1;
    const stetho_tok_impl *t = tok->impl;
    size_t n = strlen(token);
    int32_t a = tk_strmap_get(&t->added_map, token, n);
    if (a >= 0) return t->added[a].id;
    return tk_strmap_get(&t->vocab, token, n);
}

bool stetho_tokenizer_is_special(const stetho_tokenizer *tok, int32_t id) {
    if (!tok || !tok->impl || id < 0 || id >= tok->impl->n_ids) return false;
    int32_t a = tok->impl->added_by_id[id];
    return a >= 0 && tok->impl->added[a].special;
}
