/* Loading a tokenizer.json into the tables of tokenizer_internal.h: hash maps for
 * the vocabulary and merge ranks, tries for added tokens, and small trees for the
 * normalizer, pre-tokenizer and decoder. Anything stetho cannot reproduce exactly
 * is refused at load time with STETHO_ERR_UNSUPPORTED rather than approximated. */
#include "tokenizer_internal.h"

#include <jansson.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- hash maps ---------------------------------------------------------- */

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a, then a final mix for the low bits */
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ull;
    return h ^ (h >> 32);
}

static uint64_t hash_u64(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static size_t pow2_at_least(size_t n) {
    size_t c = 16;
    while (c < n && c < ((size_t)1 << 40)) c <<= 1;
    return c;
}

bool tk_strmap_init(tk_strmap *m, size_t expect) {
    memset(m, 0, sizeof *m);
    m->cap = pow2_at_least(expect * 2);
    m->slots = st_calloc(m->cap, sizeof *m->slots);
    return m->slots != NULL;
}

void tk_strmap_free(tk_strmap *m) {
    st_free(m->arena);
    st_free(m->slots);
    st_free(m->koff);
    st_free(m->klen);
    st_free(m->val);
    memset(m, 0, sizeof *m);
}

/* A slot keeps the hash's high half beside the key index, so a probe compares
 * strings only when those bits agree (most misses cost no arena access). */
static uint64_t slot_of(uint64_t h, size_t k) { return (h >> 32) << 32 | (uint64_t)(k + 1); }

static bool strmap_grow(tk_strmap *m) {
    size_t ncap = m->cap * 2;
    uint64_t *ns = st_calloc(ncap, sizeof *ns);
    if (!ns) return false;
    for (size_t k = 0; k < m->count; k++) {
        uint64_t h = hash_bytes(m->arena + m->koff[k], m->klen[k]);
        size_t i = h & (ncap - 1);
        while (ns[i]) i = (i + 1) & (ncap - 1);
        ns[i] = slot_of(h, k);
    }
    st_free(m->slots);
    m->slots = ns;
    m->cap = ncap;
    return true;
}

int32_t tk_strmap_get(const tk_strmap *m, const char *s, size_t len) {
    if (!m->slots) return -1;
    uint64_t h = hash_bytes(s, len), tag = h >> 32;
    size_t i = h & (m->cap - 1);
    for (;;) {
        uint64_t sl = m->slots[i];
        if (!sl) return -1;
        size_t k = (uint32_t)sl - 1;
        if ((sl >> 32) == tag && m->klen[k] == len && !memcmp(m->arena + m->koff[k], s, len)) return m->val[k];
        i = (i + 1) & (m->cap - 1);
    }
}

bool tk_strmap_put(tk_strmap *m, const char *s, size_t len, int32_t val, int32_t *key_index) {
    if (len > UINT32_MAX / 2) {
        st_err(STETHO_ERR_NOMEM, "token of %zu bytes is too long", len);
        return false;
    }
    uint64_t h = hash_bytes(s, len), tag = h >> 32;
    size_t i = h & (m->cap - 1);
    for (;;) {
        uint64_t sl = m->slots[i];
        if (!sl) break;
        size_t k = (uint32_t)sl - 1;
        if ((sl >> 32) == tag && m->klen[k] == len && !memcmp(m->arena + m->koff[k], s, len)) {
            m->val[k] = val;
            if (key_index) *key_index = (int32_t)k;
            return true;
        }
        i = (i + 1) & (m->cap - 1);
    }
    if (m->count >= INT32_MAX - 1) {
        st_err(STETHO_ERR_NOMEM, "too many tokens");
        return false;
    }
    if (m->count == m->kcap) {
        size_t nc = m->kcap ? m->kcap * 2 : 256, bytes;
        if (!st_mul_size(nc, sizeof(uint32_t), &bytes)) return false;
        uint32_t *o = st_realloc(m->koff, bytes);
        if (!o) return false;
        m->koff = o;
        uint32_t *l = st_realloc(m->klen, bytes);
        if (!l) return false;
        m->klen = l;
        int32_t *v = st_realloc(m->val, nc * sizeof(int32_t));
        if (!v) return false;
        m->val = v;
        m->kcap = nc;
    }
    size_t need;
    if (!st_add_size(m->arena_len, len + 1, &need) || need > UINT32_MAX) {
        st_err(STETHO_ERR_NOMEM, "token strings exceed 4 GB");
        return false;
    }
    if (need > m->arena_cap) {
        size_t nc = m->arena_cap ? m->arena_cap : 4096;
        while (nc < need) nc *= 2;
        char *a = st_realloc(m->arena, nc);
        if (!a) return false;
        m->arena = a;
        m->arena_cap = nc;
    }
    memcpy(m->arena + m->arena_len, s, len);
    m->arena[m->arena_len + len] = 0;
    size_t k = m->count++;
    m->koff[k] = (uint32_t)m->arena_len;
    m->klen[k] = (uint32_t)len;
    m->val[k] = val;
    m->arena_len = need;
    m->slots[i] = slot_of(h, k);
    if (key_index) *key_index = (int32_t)k;
    if (m->count * 4 > m->cap * 3 && !strmap_grow(m)) return false; /* keep load <= 3/4 */
    return true;
}

bool tk_u64map_init(tk_u64map *m, size_t expect) {
    memset(m, 0, sizeof *m);
    m->cap = pow2_at_least(expect * 2);
    m->slots = st_calloc(m->cap, sizeof *m->slots);
    return m->slots != NULL;
}

void tk_u64map_free(tk_u64map *m) {
    st_free(m->slots);
    memset(m, 0, sizeof *m);
}

static void u64map_insert_raw(tk_u64map *m, uint64_t key, int32_t a, int32_t b) {
    size_t i = hash_u64(key) & (m->cap - 1);
    while (m->slots[i].key && m->slots[i].key != key + 1) i = (i + 1) & (m->cap - 1);
    if (!m->slots[i].key) m->count++;
    m->slots[i] = (tk_u64slot){key + 1, a, b};
}

bool tk_u64map_put(tk_u64map *m, uint64_t key, int32_t a, int32_t b) {
    if ((m->count + 1) * 4 > m->cap * 3) {
        tk_u64map n;
        if (!tk_u64map_init(&n, m->cap)) return false;
        for (size_t i = 0; i < m->cap; i++)
            if (m->slots[i].key) u64map_insert_raw(&n, m->slots[i].key - 1, m->slots[i].a, m->slots[i].b);
        tk_u64map_free(m);
        *m = n;
    }
    u64map_insert_raw(m, key, a, b);
    return true;
}

bool tk_u64map_get(const tk_u64map *m, uint64_t key, int32_t *a, int32_t *b) {
    if (!m->slots) return false;
    size_t i = hash_u64(key) & (m->cap - 1);
    for (;;) {
        const tk_u64slot *s = &m->slots[i];
        if (!s->key) return false;
        if (s->key == key + 1) {
            *a = s->a;
            if (b) *b = s->b;
            return true;
        }
        i = (i + 1) & (m->cap - 1);
    }
}

/* ---- pipeline components -------------------------------------------------- */

static void pattern_free(tk_pattern *p) {
    st_free(p->lit);
    if (p->re) pcre2_code_free(p->re);
    memset(p, 0, sizeof *p);
}

void tk_node_free(tk_node *n) {
    if (!n) return;
    for (size_t i = 0; i < n->n_children; i++) tk_node_free(&n->children[i]);
    st_free(n->children);
    pattern_free(&n->pat);
    st_free(n->content);
    memset(n, 0, sizeof *n);
}

static char *dup_json_string(const json_t *s, size_t *len) {
    size_t n = json_string_length(s);
    char *p = st_malloc(n + 1);
    if (!p) return NULL;
    memcpy(p, json_string_value(s), n);
    p[n] = 0;
    if (len) *len = n;
    return p;
}

/* {"String": "..."} or {"Regex": "..."} */
static stetho_status parse_pattern(const json_t *j, tk_pattern *p, const char *where) {
    const json_t *s = json_object_get(j, "String"), *r = json_object_get(j, "Regex");
    if (json_is_string(s)) {
        if (json_string_length(s) == 0) return st_err(STETHO_ERR_FORMAT, "%s: empty String pattern", where);
        p->lit = dup_json_string(s, &p->lit_len);
        return p->lit ? STETHO_OK : STETHO_ERR_NOMEM;
    }
    if (json_is_string(r)) {
        int code;
        PCRE2_SIZE off;
        p->re = pcre2_compile((PCRE2_SPTR)json_string_value(r), json_string_length(r), PCRE2_UTF | PCRE2_UCP,
                              &code, &off, NULL);
        if (!p->re) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(code, msg, sizeof msg);
            return st_err(STETHO_ERR_UNSUPPORTED, "%s: regex '%s' does not compile at offset %zu: %s", where,
                          json_string_value(r), (size_t)off, (const char *)msg);
        }
        pcre2_jit_compile(p->re, PCRE2_JIT_COMPLETE); /* optional: falls back to the interpreter */
        return STETHO_OK;
    }
    return st_err(STETHO_ERR_FORMAT, "%s: pattern must be {\"String\": ...} or {\"Regex\": ...}", where);
}

static stetho_status get_string_field(const json_t *j, const char *key, const char *where, char **out, size_t *len) {
    const json_t *s = json_object_get(j, key);
    if (!json_is_string(s)) return st_err(STETHO_ERR_FORMAT, "%s: missing string field '%s'", where, key);
    *out = dup_json_string(s, len);
    return *out ? STETHO_OK : STETHO_ERR_NOMEM;
}

static bool get_bool(const json_t *j, const char *key, bool dflt) {
    const json_t *b = json_object_get(j, key);
    return json_is_boolean(b) ? json_is_true(b) : dflt;
}

typedef enum { STAGE_NORM, STAGE_PRE, STAGE_DEC } stage;
static const char *stage_name[] = {"normalizer", "pre_tokenizer", "decoder"};

static stetho_status parse_node(const json_t *j, stage sg, tk_node *n, const char *file, int depth);

static stetho_status parse_sequence(const json_t *arr, stage sg, tk_node *n, const char *file, int depth) {
    if (!json_is_array(arr))
        return st_err(STETHO_ERR_FORMAT, "%s: %s Sequence without a list", file, stage_name[sg]);
    size_t cnt = json_array_size(arr);
    if (cnt) {
        n->children = st_calloc(cnt, sizeof *n->children);
        if (!n->children) return STETHO_ERR_NOMEM;
    }
    for (size_t i = 0; i < cnt; i++) {
        stetho_status st = parse_node(json_array_get(arr, i), sg, &n->children[i], file, depth + 1);
        n->n_children = i + 1;
        if (st) return st;
    }
    return STETHO_OK;
}

static stetho_status parse_split_behavior(const char *b, tk_split_behavior *out, const char *file) {
    static const struct { const char *name; tk_split_behavior v; } tab[] = {
        {"Removed", TK_SPLIT_REMOVED},           {"Isolated", TK_SPLIT_ISOLATED},
        {"MergedWithPrevious", TK_SPLIT_MERGED_PREV}, {"MergedWithNext", TK_SPLIT_MERGED_NEXT},
        {"Contiguous", TK_SPLIT_CONTIGUOUS},
    };
    for (size_t i = 0; b && i < ST_ARRAY_LEN(tab); i++)
        if (!strcmp(b, tab[i].name)) {
            *out = tab[i].v;
            return STETHO_OK;
        }
    return st_err(STETHO_ERR_FORMAT, "%s: pre_tokenizer Split has unknown behavior '%s'", file, b ? b : "(none)");
}

static stetho_status parse_metaspace(const json_t *j, tk_node *n, const char *file, bool decoder) {
    const json_t *rep = json_object_get(j, "replacement");
    if (json_is_string(rep)) n->content = dup_json_string(rep, &n->content_len);
    else n->content = st_strdup("\xe2\x96\x81"), n->content_len = 3;
    if (!n->content) return STETHO_ERR_NOMEM;
    n->flag_a = get_bool(j, "split", true);
    const char *scheme = json_string_value(json_object_get(j, "prepend_scheme"));
    if (scheme) {
        if (!strcmp(scheme, "always")) n->scheme = TK_PREPEND_ALWAYS;
        else if (!strcmp(scheme, "first")) n->scheme = TK_PREPEND_FIRST;
        else if (!strcmp(scheme, "never")) n->scheme = TK_PREPEND_NEVER;
        else return st_err(STETHO_ERR_FORMAT, "%s: Metaspace prepend_scheme '%s' unknown", file, scheme);
    } else {
        n->scheme = get_bool(j, "add_prefix_space", true) ? TK_PREPEND_ALWAYS : TK_PREPEND_NEVER;
    }
    (void)decoder;
    return STETHO_OK;
}

static stetho_status parse_node(const json_t *j, stage sg, tk_node *n, const char *file, int depth) {
    if (depth > 16) return st_err(STETHO_ERR_FORMAT, "%s: %s nested too deeply", file, stage_name[sg]);
    const char *type = json_string_value(json_object_get(j, "type"));
    if (!type) return st_err(STETHO_ERR_FORMAT, "%s: %s without a 'type'", file, stage_name[sg]);
    char where[160];
    snprintf(where, sizeof where, "%s: %s %s", file, stage_name[sg], type);
    if (!strcmp(type, "Sequence")) {
        n->kind = sg == STAGE_NORM ? TK_NORM_SEQUENCE : sg == STAGE_PRE ? TK_PRE_SEQUENCE : TK_DEC_SEQUENCE;
        const char *key = sg == STAGE_NORM ? "normalizers" : sg == STAGE_PRE ? "pretokenizers" : "decoders";
        return parse_sequence(json_object_get(j, key), sg, n, file, depth);
    }
    if (sg == STAGE_NORM) {
        if (!strcmp(type, "Replace")) {
            n->kind = TK_NORM_REPLACE;
            stetho_status st = parse_pattern(json_object_get(j, "pattern"), &n->pat, where);
            return st ? st : get_string_field(j, "content", where, &n->content, &n->content_len);
        }
        if (!strcmp(type, "Prepend")) {
            n->kind = TK_NORM_PREPEND;
            return get_string_field(j, "prepend", where, &n->content, &n->content_len);
        }
        if (!strcmp(type, "Strip")) {
            n->kind = TK_NORM_STRIP;
            n->flag_a = get_bool(j, "strip_left", true);
            n->flag_b = get_bool(j, "strip_right", true);
            return STETHO_OK;
        }
        if (!strcmp(type, "NFC") || !strcmp(type, "NFD") || !strcmp(type, "NFKC") || !strcmp(type, "NFKD")) {
            n->kind = TK_NORM_UNICODE;
            return STETHO_OK;
        }
    } else if (sg == STAGE_PRE) {
        if (!strcmp(type, "Split")) {
            n->kind = TK_PRE_SPLIT;
            n->invert = get_bool(j, "invert", false);
            stetho_status st = parse_pattern(json_object_get(j, "pattern"), &n->pat, where);
            return st ? st : parse_split_behavior(json_string_value(json_object_get(j, "behavior")), &n->behavior, file);
        }
        if (!strcmp(type, "Metaspace")) {
            n->kind = TK_PRE_METASPACE;
            return parse_metaspace(j, n, file, false);
        }
        if (!strcmp(type, "ByteLevel")) {
            n->kind = TK_PRE_BYTELEVEL;
            n->flag_a = get_bool(j, "add_prefix_space", true);
            n->flag_b = get_bool(j, "use_regex", true);
            if (n->flag_b) {
                /* the GPT-2 pattern of HF's ByteLevel pre-tokenizer */
                static const char gpt2[] =
                    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
                json_t *pj = json_pack("{s:s}", "Regex", gpt2);
                if (!pj) return st_err(STETHO_ERR_NOMEM, "out of memory");
                stetho_status st = parse_pattern(pj, &n->pat, where);
                json_decref(pj);
                return st;
            }
            return STETHO_OK;
        }
        if (!strcmp(type, "Digits")) {
            /* HF splits on char::is_numeric: each digit isolated, or runs kept together */
            n->kind = TK_PRE_DIGITS;
            n->flag_a = get_bool(j, "individual_digits", false);
            json_t *pj = json_pack("{s:s}", "Regex", n->flag_a ? "\\p{N}" : "\\p{N}+");
            if (!pj) return st_err(STETHO_ERR_NOMEM, "out of memory");
            stetho_status st = parse_pattern(pj, &n->pat, where);
            json_decref(pj);
            return st;
        }
    } else {
        if (!strcmp(type, "Replace")) {
            n->kind = TK_DEC_REPLACE;
            stetho_status st = parse_pattern(json_object_get(j, "pattern"), &n->pat, where);
            if (!st && n->pat.re)
                return st_err(STETHO_ERR_UNSUPPORTED, "%s: regex patterns in decoders are not supported", where);
            return st ? st : get_string_field(j, "content", where, &n->content, &n->content_len);
        }
        if (!strcmp(type, "ByteFallback")) return n->kind = TK_DEC_BYTEFALLBACK, STETHO_OK;
        if (!strcmp(type, "Fuse")) return n->kind = TK_DEC_FUSE, STETHO_OK;
        if (!strcmp(type, "ByteLevel")) return n->kind = TK_DEC_BYTELEVEL, STETHO_OK;
        if (!strcmp(type, "Strip")) {
            n->kind = TK_DEC_STRIP;
            stetho_status st = get_string_field(j, "content", where, &n->content, &n->content_len);
            if (st) return st;
            json_int_t a = json_integer_value(json_object_get(j, "start")), b = json_integer_value(json_object_get(j, "stop"));
            if (a < 0 || b < 0 || a > 1 << 20 || b > 1 << 20)
                return st_err(STETHO_ERR_FORMAT, "%s: start/stop out of range", where);
            n->start = (int)a;
            n->stop = (int)b;
            return STETHO_OK;
        }
        if (!strcmp(type, "Metaspace")) {
            n->kind = TK_DEC_METASPACE;
            return parse_metaspace(j, n, file, true);
        }
    }
    return st_err(STETHO_ERR_UNSUPPORTED, "%s: %s type '%s' is not supported", file, stage_name[sg], type);
}

static stetho_status parse_stage(const json_t *root, const char *key, stage sg, tk_node **out, const char *file) {
    const json_t *j = json_object_get(root, key);
    if (!j || json_is_null(j)) return STETHO_OK;
    if (!json_is_object(j)) return st_err(STETHO_ERR_FORMAT, "%s: '%s' must be an object or null", file, key);
    *out = st_calloc(1, sizeof **out);
    if (!*out) return STETHO_ERR_NOMEM;
    return parse_node(j, sg, *out, file, 0);
}

/* ---- model ------------------------------------------------------------------ */

stetho_status tk_vocab_add(stetho_tok_impl *t, const char *key, size_t klen, bool is_int, int64_t v, const char *file,
                           int32_t *max_id) {
    if (!is_int || v < 0 || v >= (1 << 28))
        return st_err(STETHO_ERR_FORMAT, "%s: model.vocab['%.*s'] is not an id in [0, 2^28)", file,
                      (int)(klen > 80 ? 80 : klen), key);
    if (!tk_strmap_put(&t->vocab, key, klen, (int32_t)v, NULL)) return STETHO_ERR_NOMEM;
    if ((int32_t)v > *max_id) *max_id = (int32_t)v;
    return STETHO_OK;
}

bool tk_merge_split(const char *s, size_t n, const char **a, size_t *al, const char **b, size_t *bl) {
    /* legacy "a b": exactly one space, as HF requires */
    const char *sp = memchr(s, ' ', n);
    if (!sp || memchr(sp + 1, ' ', n - (size_t)(sp + 1 - s))) return false;
    *a = s, *al = (size_t)(sp - s), *b = sp + 1, *bl = n - *al - 1;
    return true;
}

stetho_status tk_merge_add(stetho_tok_impl *t, size_t rank, const char *a, size_t al, const char *b, size_t bl,
                           st_buf *nt, const char *file) {
    if (rank >= INT32_MAX) return st_err(STETHO_ERR_FORMAT, "%s: too many merges", file);
    int32_t ia = tk_strmap_get(&t->vocab, a, al), ib = tk_strmap_get(&t->vocab, b, bl);
    if (ia < 0 || ib < 0)
        return st_err(STETHO_ERR_FORMAT, "%s: merge %zu: token '%.*s' is not in the vocabulary", file, rank,
                      ia < 0 ? (int)al : (int)bl, ia < 0 ? a : b);
    size_t plen = t->cont_prefix ? strlen(t->cont_prefix) : 0;
    size_t skip = plen && bl >= plen && !memcmp(b, t->cont_prefix, plen) ? plen : 0;
    nt->len = 0;
    if (!st_buf_append(nt, a, al) || !st_buf_append(nt, b + skip, bl - skip)) return STETHO_ERR_NOMEM;
    int32_t inew = tk_strmap_get(&t->vocab, nt->data, nt->len);
    if (inew < 0)
        return st_err(STETHO_ERR_FORMAT, "%s: merge %zu: merged token '%.*s' is not in the vocabulary", file, rank,
                      (int)nt->len, nt->data);
    /* a repeated pair keeps its last rank, as HF's HashMap collect does */
    if (!tk_u64map_put(&t->merges, (uint64_t)ia << 32 | (uint32_t)ib, (int32_t)rank, inew)) return STETHO_ERR_NOMEM;
    return STETHO_OK;
}

/* The model section. With `fast` the raw text's vocab and merges are parsed by
 * tokenizer_scan.c (jansson saw empty placeholders for them); *fallback is set when
 * that scanner meets syntax it does not handle, so the caller re-parses with jansson. */
static stetho_status parse_model(stetho_tok_impl *t, const json_t *model, const char *file, int32_t *max_id,
                                 int32_t *unk_id, const char *raw, const size_t spans[2][2], bool *fallback) {
    if (!json_is_object(model)) return st_err(STETHO_ERR_FORMAT, "%s: missing 'model' object", file);
    const char *type = json_string_value(json_object_get(model, "type"));
    const json_t *vocab = json_object_get(model, "vocab"), *merges = json_object_get(model, "merges");
    if (type && strcmp(type, "BPE"))
        return st_err(STETHO_ERR_UNSUPPORTED, "%s: model type '%s' is not supported (only BPE)", file, type);
    if (!type && !json_is_array(merges))
        return st_err(STETHO_ERR_UNSUPPORTED, "%s: model has no type and no merges; only BPE is supported", file);
    if (!json_is_object(vocab)) return st_err(STETHO_ERR_FORMAT, "%s: model.vocab missing or not an object", file);
    if (!json_is_array(merges)) return st_err(STETHO_ERR_FORMAT, "%s: model.merges missing or not a list", file);
    const json_t *dropout = json_object_get(model, "dropout");
    if (json_is_number(dropout) && json_number_value(dropout) > 0)
        return st_err(STETHO_ERR_UNSUPPORTED, "%s: BPE dropout is not supported", file);
    t->byte_fallback = get_bool(model, "byte_fallback", false);
    t->fuse_unk = get_bool(model, "fuse_unk", false);
    t->ignore_merges = get_bool(model, "ignore_merges", false);
    const json_t *cp = json_object_get(model, "continuing_subword_prefix"), *ew = json_object_get(model, "end_of_word_suffix");
    if (json_is_string(cp) && json_string_length(cp) && !(t->cont_prefix = dup_json_string(cp, NULL))) return STETHO_ERR_NOMEM;
    if (json_is_string(ew) && json_string_length(ew) && !(t->eow_suffix = dup_json_string(ew, NULL))) return STETHO_ERR_NOMEM;

    stetho_status st = STETHO_OK;
    if (raw) {
        if (!tk_strmap_init(&t->vocab, 1024)) return STETHO_ERR_NOMEM;
        if ((st = tk_scan_vocab(t, raw, spans[0], file, max_id, fallback)) || *fallback) return st;
    } else {
        if (!tk_strmap_init(&t->vocab, json_object_size(vocab))) return STETHO_ERR_NOMEM;
        const char *key;
        size_t klen;
        json_t *val;
        json_object_keylen_foreach((json_t *)vocab, key, klen, val) {
            if ((st = tk_vocab_add(t, key, klen, json_is_integer(val), json_integer_value(val), file, max_id))) return st;
        }
    }
    if (t->vocab.count == 0) return st_err(STETHO_ERR_FORMAT, "%s: model.vocab is empty", file);

    st_buf nt;
    st_buf_init(&nt);
    if (raw) {
        if (!tk_u64map_init(&t->merges, t->vocab.count * 2)) return STETHO_ERR_NOMEM;
        st = tk_scan_merges(t, raw, spans[1], file, &nt, fallback);
    } else {
        size_t nm = json_array_size(merges);
        if (!tk_u64map_init(&t->merges, nm)) return STETHO_ERR_NOMEM;
        for (size_t r = 0; r < nm && !st; r++) {
            const json_t *m = json_array_get(merges, r);
            const char *a = NULL, *b = NULL;
            size_t al = 0, bl = 0;
            if (json_is_string(m)) {
                if (!tk_merge_split(json_string_value(m), json_string_length(m), &a, &al, &b, &bl))
                    st = st_err(STETHO_ERR_FORMAT, "%s: merge %zu ('%s') is not two tokens separated by one space",
                                file, r, json_string_value(m));
            } else if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
                       json_is_string(json_array_get(m, 1))) {
                a = json_string_value(json_array_get(m, 0)), al = json_string_length(json_array_get(m, 0));
                b = json_string_value(json_array_get(m, 1)), bl = json_string_length(json_array_get(m, 1));
            } else {
                st = st_err(STETHO_ERR_FORMAT, "%s: merge %zu is neither \"a b\" nor [\"a\", \"b\"]", file, r);
            }
            if (!st) st = tk_merge_add(t, r, a, al, b, bl, &nt, file);
        }
    }
    st_buf_free(&nt);
    if (st || *fallback) return st;

    const json_t *unk = json_object_get(model, "unk_token");
    if (json_is_string(unk)) *unk_id = tk_strmap_get(&t->vocab, json_string_value(unk), json_string_length(unk));
    return STETHO_OK;
}

/* ---- added tokens ------------------------------------------------------------ */

static bool trie_new_node(tk_trie *tr, int32_t *out) {
    if (tr->n_nodes == tr->cap_nodes) {
        size_t nc = tr->cap_nodes ? tr->cap_nodes * 2 : 256;
        int32_t *t = st_realloc(tr->term, nc * sizeof *t);
        if (!t) return false;
        tr->term = t;
        tr->cap_nodes = nc;
    }
    tr->term[tr->n_nodes] = -1;
    *out = (int32_t)tr->n_nodes++;
    return true;
}

static bool trie_insert(tk_trie *tr, const char *s, size_t len, int32_t idx) {
    int32_t node = 0, child, dummy;
    for (size_t i = 0; i < len; i++) {
        uint64_t key = (uint64_t)node << 8 | (unsigned char)s[i];
        if (!tk_u64map_get(&tr->edges, key, &child, &dummy)) {
            if (!trie_new_node(tr, &child) || !tk_u64map_put(&tr->edges, key, child, 0)) return false;
        }
        node = child;
    }
    tr->term[node] = idx;
    tr->empty = false;
    return true;
}

static stetho_status parse_added(stetho_tok_impl *t, const json_t *arr, const char *file, int32_t *max_id) {
    if (!arr || json_is_null(arr)) arr = NULL;
    else if (!json_is_array(arr)) return st_err(STETHO_ERR_FORMAT, "%s: 'added_tokens' must be a list", file);
    size_t n = arr ? json_array_size(arr) : 0;
    if (!tk_strmap_init(&t->added_map, n)) return STETHO_ERR_NOMEM;
    int32_t root;
    for (int k = 0; k < 2; k++) {
        tk_trie *tr = k ? &t->trie_norm : &t->trie_raw;
        tr->empty = true;
        if (!tk_u64map_init(&tr->edges, 1024) || !trie_new_node(tr, &root)) return STETHO_ERR_NOMEM;
    }
    if (!n) return STETHO_OK;
    t->added = st_calloc(n, sizeof *t->added);
    if (!t->added) return STETHO_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        const json_t *a = json_array_get(arr, i), *c = json_object_get(a, "content"), *id = json_object_get(a, "id");
        if (!json_is_string(c) || !json_is_integer(id) || json_integer_value(id) < 0 ||
            json_integer_value(id) >= (1 << 28))
            return st_err(STETHO_ERR_FORMAT, "%s: added_tokens[%zu] needs a string 'content' and an id in [0, 2^28)",
                          file, i);
        if (json_string_length(c) == 0) return st_err(STETHO_ERR_FORMAT, "%s: added_tokens[%zu] is empty", file, i);
        tk_added *ad = &t->added[t->n_added++];
        if (!(ad->content = dup_json_string(c, &ad->len))) return STETHO_ERR_NOMEM;
        ad->id = (int32_t)json_integer_value(id);
        ad->special = get_bool(a, "special", false);
        ad->normalized = get_bool(a, "normalized", !ad->special); /* HF's default */
        ad->single_word = get_bool(a, "single_word", false);
        ad->lstrip = get_bool(a, "lstrip", false);
        ad->rstrip = get_bool(a, "rstrip", false);
        if (ad->id > *max_id) *max_id = ad->id;
        if (!tk_strmap_put(&t->added_map, ad->content, ad->len, (int32_t)i, NULL)) return STETHO_ERR_NOMEM;
        if (!trie_insert(ad->normalized ? &t->trie_norm : &t->trie_raw, ad->content, ad->len, (int32_t)i))
            return STETHO_ERR_NOMEM;
        if (ad->single_word && !t->word_re) {
            /* Rust's char::is_alphanumeric() or '_', anchored at the start of the subject */
            int code;
            PCRE2_SIZE off;
            t->word_re = pcre2_compile((PCRE2_SPTR) "[\\p{L}\\p{N}_]", PCRE2_ZERO_TERMINATED,
                                       PCRE2_UTF | PCRE2_UCP | PCRE2_ANCHORED, &code, &off, NULL);
            if (!t->word_re) return st_err(STETHO_ERR_NOMEM, "cannot compile the word-character pattern");
        }
    }
    return STETHO_OK;
}

/* ---- post-processor -------------------------------------------------------------- */

static stetho_status append_id(int32_t **arr, size_t *n, int32_t id) {
    int32_t *p = st_realloc(*arr, (*n + 1) * sizeof *p);
    if (!p) return STETHO_ERR_NOMEM;
    p[(*n)++] = id;
    *arr = p;
    return STETHO_OK;
}

static stetho_status parse_post(stetho_tok_impl *t, const json_t *pp, const char *file, int depth) {
    if (!pp || json_is_null(pp)) return STETHO_OK;
    if (depth > 8) return st_err(STETHO_ERR_FORMAT, "%s: post_processor nested too deeply", file);
    const char *type = json_string_value(json_object_get(pp, "type"));
    if (!type) return st_err(STETHO_ERR_FORMAT, "%s: post_processor without a 'type'", file);
    if (!strcmp(type, "ByteLevel")) return STETHO_OK; /* only adjusts offsets */
    if (!strcmp(type, "Sequence")) {
        const json_t *arr = json_object_get(pp, "processors");
        if (!json_is_array(arr)) return st_err(STETHO_ERR_FORMAT, "%s: post_processor Sequence without 'processors'", file);
        for (size_t i = 0; i < json_array_size(arr); i++) {
            stetho_status st = parse_post(t, json_array_get(arr, i), file, depth + 1);
            if (st) return st;
        }
        return STETHO_OK;
    }
    if (strcmp(type, "TemplateProcessing"))
        return st_err(STETHO_ERR_UNSUPPORTED, "%s: post_processor type '%s' is not supported", file, type);
    if (t->n_tmpl_pre || t->n_tmpl_post)
        return st_err(STETHO_ERR_UNSUPPORTED, "%s: more than one TemplateProcessing post-processor", file);
    const json_t *single = json_object_get(pp, "single"), *specials = json_object_get(pp, "special_tokens");
    if (!json_is_array(single)) return st_err(STETHO_ERR_FORMAT, "%s: TemplateProcessing without 'single'", file);
    bool seen_seq = false;
    for (size_t i = 0; i < json_array_size(single); i++) {
        const json_t *piece = json_array_get(single, i), *sp = json_object_get(piece, "SpecialToken");
        if (json_object_get(piece, "Sequence")) {
            if (seen_seq) return st_err(STETHO_ERR_FORMAT, "%s: TemplateProcessing 'single' has two sequences", file);
            seen_seq = true;
            continue;
        }
        const char *name = json_string_value(json_object_get(sp, "id"));
        if (!name) return st_err(STETHO_ERR_FORMAT, "%s: TemplateProcessing piece %zu is malformed", file, i);
        const json_t *ids = json_object_get(json_object_get(specials, name), "ids");
        if (!json_is_array(ids))
            return st_err(STETHO_ERR_FORMAT, "%s: TemplateProcessing special token '%s' has no 'ids'", file, name);
        for (size_t k = 0; k < json_array_size(ids); k++) {
            json_int_t v = json_integer_value(json_array_get(ids, k));
            if (!json_is_integer(json_array_get(ids, k)) || v < 0 || v >= (1 << 28))
                return st_err(STETHO_ERR_FORMAT, "%s: TemplateProcessing '%s' has a bad id", file, name);
            stetho_status st = seen_seq ? append_id(&t->tmpl_post, &t->n_tmpl_post, (int32_t)v)
                                        : append_id(&t->tmpl_pre, &t->n_tmpl_pre, (int32_t)v);
            if (st) return st;
        }
    }
    if (!seen_seq) return st_err(STETHO_ERR_FORMAT, "%s: TemplateProcessing 'single' has no sequence", file);
    return STETHO_OK;
}

/* ---- tokenizer_config.json ----------------------------------------------------------- */

static int32_t config_token_id(const stetho_tokenizer *tok, const json_t *cfg, const char *key) {
    const json_t *v = json_object_get(cfg, key);
    if (json_is_object(v)) v = json_object_get(v, "content");
    if (!json_is_string(v)) return -1;
    return stetho_tokenizer_token_to_id(tok, json_string_value(v));
}

static bool is_dir(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

/* Parse the file with jansson, except (when fast) model.vocab and model.merges,
 * which tokenizer_scan.c reads; see there for why. */
/* The file mapped read-only (the page cache is used in place: no 33 MB copy), or NULL. */
static char *map_file(const char *path, size_t *n) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return NULL;
    struct stat sb;
    void *p = NULL;
    if (fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode) && sb.st_size > 0) {
        p = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) p = NULL;
        else *n = (size_t)sb.st_size;
    }
    close(fd);
    return p;
}

/* The largest tokenizer.json on the Hub is tens of MB (Gemma 3's: 33 MB); a
 * file past this is refused before it is parsed. */
#define TOKENIZER_MAX_BYTES ((size_t)512 << 20)
#define TOKENIZER_CONFIG_MAX_BYTES ((size_t)64 << 20)

static stetho_status check_size(const char *file, size_t max) {
    struct stat sb;
    if (stat(file, &sb) == 0 && S_ISREG(sb.st_mode) && (uint64_t)sb.st_size > max)
        return st_err(STETHO_ERR_FORMAT, "%s: %llu bytes is more than a tokenizer file can need (limit %zu MB)", file,
                      (unsigned long long)sb.st_size, max >> 20);
    return STETHO_OK;
}

static stetho_status load_json(const char *file, bool fast, json_t **root, char **raw, size_t *raw_len,
                               size_t spans[2][2]) {
    json_error_t jerr;
    *root = NULL;
    *raw = NULL;
    stetho_status lim = check_size(file, TOKENIZER_MAX_BYTES);
    if (lim) return lim;
    if (fast) {
        size_t n = 0;
        char *text = map_file(file, &n);
        if (text) {
            if (tk_scan_locate(text, n, spans[0], spans[1])) {
                /* the text with the two members replaced by {} and [] (both spans are inside model) */
                int first = spans[0][0] < spans[1][0] ? 0 : 1, second = 1 - first;
                st_buf b;
                st_buf_init(&b);
                st_buf_append(&b, text, spans[first][0]);
                st_buf_append(&b, first == 0 ? "{}" : "[]", 2);
                st_buf_append(&b, text + spans[first][1], spans[second][0] - spans[first][1]);
                st_buf_append(&b, second == 0 ? "{}" : "[]", 2);
                st_buf_append(&b, text + spans[second][1], n - spans[second][1]);
                if (!b.failed) *root = json_loadb(b.data, b.len, JSON_ALLOW_NUL, &jerr);
                st_buf_free(&b);
            }
            if (*root) {
                *raw = text;
                *raw_len = n;
                return STETHO_OK;
            }
            munmap(text, n);
        }
        stetho_clear_error();
    }
    /* the plain path; also gives jansson's own message for malformed files */
    *root = json_load_file(file, JSON_ALLOW_NUL, &jerr);
    if (*root) return STETHO_OK;
    FILE *fp = fopen(file, "rb");
    if (!fp) return st_err(STETHO_ERR_NOTFOUND, "%s: cannot open (no such file)", file);
    fclose(fp);
    return st_err(STETHO_ERR_FORMAT, "%s:%d:%d: invalid JSON: %s", file, jerr.line, jerr.column, jerr.text);
}

static stetho_status load_impl(stetho_tokenizer *tok, const char *path, bool fast, bool *fallback) {
    memset(tok, 0, sizeof *tok);
    tok->bos_id = tok->eos_id = tok->pad_id = tok->unk_id = -1;
    if (!path) return st_err(STETHO_ERR_INVALID, "no tokenizer path given");
    st_buf file, cfgpath;
    st_buf_init(&file);
    st_buf_init(&cfgpath);
    if (is_dir(path)) {
        st_buf_printf(&file, "%s/tokenizer.json", path);
        st_buf_printf(&cfgpath, "%s/tokenizer_config.json", path);
    } else {
        st_buf_printf(&file, "%s", path);
        const char *slash = strrchr(path, '/');
        if (slash) st_buf_printf(&cfgpath, "%.*s/tokenizer_config.json", (int)(slash - path), path);
        else st_buf_printf(&cfgpath, "tokenizer_config.json");
    }
    if (file.failed || cfgpath.failed) {
        st_buf_free(&file);
        st_buf_free(&cfgpath);
        return st_err(STETHO_ERR_NOMEM, "out of memory");
    }
    stetho_status st = STETHO_OK;
    json_t *root = NULL, *cfg = NULL;
    json_error_t jerr;
    char *raw = NULL;
    size_t raw_len = 0, spans[2][2];
    tok->path = st_strdup(file.data);
    tok->impl = st_calloc(1, sizeof *tok->impl);
    if (!tok->path || !tok->impl) {
        st = STETHO_ERR_NOMEM;
        goto done;
    }
    stetho_tok_impl *t = tok->impl;
    for (int i = 0; i < 256; i++) t->byte_id[i] = -1;
    if ((st = load_json(file.data, fast, &root, &raw, &raw_len, spans))) {
        if (st == STETHO_ERR_NOTFOUND && is_dir(path))
            st = st_err(st, "%s: cannot open (no tokenizer.json in this directory)", file.data);
        goto done;
    }
    if (!json_is_object(root)) {
        st = st_err(STETHO_ERR_FORMAT, "%s: expected a JSON object", file.data);
        goto done;
    }
    int32_t max_id = -1, unk = -1;
    if ((st = parse_model(t, json_object_get(root, "model"), file.data, &max_id, &unk, raw, (const size_t(*)[2])spans,
                          fallback)) ||
        *fallback)
        goto done;
    if ((st = parse_added(t, json_object_get(root, "added_tokens"), file.data, &max_id))) goto done;
    if ((st = parse_stage(root, "normalizer", STAGE_NORM, &t->normalizer, file.data))) goto done;
    if ((st = parse_stage(root, "pre_tokenizer", STAGE_PRE, &t->pre, file.data))) goto done;
    if ((st = parse_stage(root, "decoder", STAGE_DEC, &t->decoder, file.data))) goto done;
    if ((st = parse_post(t, json_object_get(root, "post_processor"), file.data, 0))) goto done;
    const json_t *trunc = json_object_get(root, "truncation"), *pad = json_object_get(root, "padding");
    if ((trunc && !json_is_null(trunc)) || (pad && !json_is_null(pad))) {
        st = st_err(STETHO_ERR_UNSUPPORTED, "%s: truncation/padding settings are not supported", file.data);
        goto done;
    }

    /* id -> string tables */
    t->n_ids = max_id + 1;
    tok->vocab_size = t->n_ids;
    t->id_key = st_malloc((size_t)t->n_ids * sizeof *t->id_key);
    t->added_by_id = st_malloc((size_t)t->n_ids * sizeof *t->added_by_id);
    if (!t->id_key || !t->added_by_id) {
        st = STETHO_ERR_NOMEM;
        goto done;
    }
    for (int32_t i = 0; i < t->n_ids; i++) t->id_key[i] = t->added_by_id[i] = -1;
    for (size_t k = 0; k < t->vocab.count; k++) t->id_key[t->vocab.val[k]] = (int32_t)k;
    for (size_t k = 0; k < t->n_added; k++) t->added_by_id[t->added[k].id] = (int32_t)k;
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        t->byte_id[b] = tk_strmap_get(&t->vocab, name, 6);
    }
    for (size_t i = 0; i < t->n_tmpl_pre; i++)
        if (t->tmpl_pre[i] >= t->n_ids) {
            st = st_err(STETHO_ERR_FORMAT, "%s: post_processor id %d is outside the vocabulary", file.data, t->tmpl_pre[i]);
            goto done;
        }
    for (size_t i = 0; i < t->n_tmpl_post; i++)
        if (t->tmpl_post[i] >= t->n_ids) {
            st = st_err(STETHO_ERR_FORMAT, "%s: post_processor id %d is outside the vocabulary", file.data, t->tmpl_post[i]);
            goto done;
        }
    tok->unk_id = t->unk_id = unk;

    /* special ids: tokenizer_config.json when present, else the template's first special token */
    if ((st = check_size(cfgpath.data, TOKENIZER_CONFIG_MAX_BYTES))) goto done;
    cfg = json_load_file(cfgpath.data, 0, &jerr);
    if (cfg) {
        tok->bos_id = config_token_id(tok, cfg, "bos_token");
        tok->eos_id = config_token_id(tok, cfg, "eos_token");
        tok->pad_id = config_token_id(tok, cfg, "pad_token");
    }
    if (tok->bos_id < 0 && t->n_tmpl_pre) tok->bos_id = t->tmpl_pre[0];

done:
    if (raw) munmap(raw, raw_len);
    json_decref(root);
    json_decref(cfg);
    st_buf_free(&file);
    st_buf_free(&cfgpath);
    if (st || *fallback) {
        if (st == STETHO_ERR_NOMEM && !*stetho_last_error()) st_err(st, "out of memory loading a tokenizer");
        stetho_tokenizer_free(tok);
    }
    return st;
}

stetho_status stetho_tokenizer_load(stetho_tokenizer *tok, const char *path) {
    bool fallback = false;
    stetho_status st = load_impl(tok, path, true, &fallback);
    if (!st && fallback) {
        fallback = false;
        st = load_impl(tok, path, false, &fallback);
    }
    return st;
}

void stetho_tokenizer_free(stetho_tokenizer *tok) {
    if (!tok) return;
    stetho_tok_impl *t = tok->impl;
    if (t) {
        tk_strmap_free(&t->vocab);
        st_free(t->id_key);
        tk_u64map_free(&t->merges);
        st_free(t->cont_prefix);
        st_free(t->eow_suffix);
        for (size_t i = 0; i < t->n_added; i++) st_free(t->added[i].content);
        st_free(t->added);
        tk_strmap_free(&t->added_map);
        st_free(t->added_by_id);
        if (t->word_re) pcre2_code_free(t->word_re);
        for (int k = 0; k < 2; k++) {
            tk_trie *tr = k ? &t->trie_norm : &t->trie_raw;
            tk_u64map_free(&tr->edges);
            st_free(tr->term);
        }
        tk_node *nodes[3] = {t->normalizer, t->pre, t->decoder};
        for (int k = 0; k < 3; k++) {
            tk_node_free(nodes[k]);
            st_free(nodes[k]);
        }
        st_free(t->tmpl_pre);
        st_free(t->tmpl_post);
        st_free(t);
    }
    st_free(tok->path);
    memset(tok, 0, sizeof *tok);
    tok->bos_id = tok->eos_id = tok->pad_id = tok->unk_id = -1;
}
