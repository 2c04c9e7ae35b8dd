/* Byte-level BPE training (see stetho/bpe_train.h): documents are cut into words by
 * the same PCRE2 pattern the tokenizer loader will apply, words are counted, and the
 * most frequent adjacent pair is merged until the vocabulary is full. Pair counts
 * are kept incrementally (a word containing the merged pair gives back its old pairs
 * and adds its new ones), so training costs one pass over the distinct words per
 * merge rather than over the corpus. */
#include "internal.h"
#include "stetho/bpe_train.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <errno.h>
#include <jansson.h>
#include <pcre2.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

const char *const STETHO_BPE_PATTERN =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

static const char *const special_tokens[STETHO_BPE_N_SPECIAL] = {"<pad>", "<eos>", "<bos>", "<unk>",
                                                                 "<start_of_turn>", "<end_of_turn>"};

/* Internal token ids: 0..255 bytes, 256.. merge results (distinct strings). */
typedef struct {
    char *str; /* byte-level (GPT-2 bytes_to_unicode) spelling, NUL-terminated */
} bpe_tok;

typedef struct {
    int32_t *sym; /* [len] token ids */
    uint32_t len;
    uint64_t count;
} bpe_word;

struct stetho_bpe_model {
    bpe_tok *toks; /* [n_toks] */
    int n_toks;
    int32_t (*merges)[2]; /* [n_merges] pairs of internal ids */
    int n_merges;
};

/* ---- hashing ------------------------------------------------------------------ */

static uint64_t mix64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    return x ^ (x >> 33);
}

/* Map from a pair (a, b) to its weighted count; entries are never removed. */
typedef struct {
    uint64_t *key; /* (a << 32 | b) + 1; 0 = empty */
    int64_t *cnt;
    size_t cap, n;
} pair_map;

static bool pm_grow(pair_map *m) {
    size_t ncap = m->cap ? m->cap * 2 : 1 << 14;
    uint64_t *nk = st_calloc(ncap, sizeof *nk);
    int64_t *nc = st_calloc(ncap, sizeof *nc);
    if (!nk || !nc) {
        st_free(nk);
        st_free(nc);
        return false;
    }
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->key[i]) continue;
        size_t j = mix64(m->key[i]) & (ncap - 1);
        while (nk[j]) j = (j + 1) & (ncap - 1);
        nk[j] = m->key[i];
        nc[j] = m->cnt[i];
    }
    st_free(m->key);
    st_free(m->cnt);
    m->key = nk;
    m->cnt = nc;
    m->cap = ncap;
    return true;
}

static bool pm_add(pair_map *m, int32_t a, int32_t b, int64_t d) {
    if ((m->n + 1) * 2 > m->cap && !pm_grow(m)) return false;
    uint64_t k = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
    size_t j = mix64(k) & (m->cap - 1);
    while (m->key[j] && m->key[j] != k) j = (j + 1) & (m->cap - 1);
    if (!m->key[j]) {
        m->key[j] = k;
        m->n++;
    }
    m->cnt[j] += d;
    return true;
}

/* Map from a word's bytes to its index in the word list. */
typedef struct {
    uint32_t *slot; /* index + 1; 0 = empty */
    size_t cap;
} word_map;

/* ---- byte-level alphabet --------------------------------------------------------- */

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the rest
 * are shifted to U+0100 onwards, so every byte is a visible character. */
static void byte_char(int b, char out[3]) {
    int cp;
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)) cp = b;
    else {
        int n = 0;
        for (int c = 0; c < b; c++)
            if (!((c >= 33 && c <= 126) || (c >= 161 && c <= 172) || (c >= 174 && c <= 255))) n++;
        cp = 256 + n;
    }
    if (cp < 0x80) {
        out[0] = (char)cp;
        out[1] = 0;
    } else {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        out[2] = 0;
    }
}

/* ---- training ------------------------------------------------------------------ */

typedef struct {
    bpe_word *w;
    size_t n, cap;
    word_map map;
    const char **src; /* [n] pointer to the word's first occurrence (for the map) */
} word_list;

static void words_free(word_list *wl) {
    for (size_t i = 0; i < wl->n; i++) st_free(wl->w[i].sym);
    st_free(wl->w);
    st_free(wl->src);
    st_free(wl->map.slot);
}

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    return mix64(h);
}

static bool wm_rehash(word_list *wl) {
    size_t ncap = wl->map.cap ? wl->map.cap * 2 : 1 << 12;
    uint32_t *ns = st_calloc(ncap, sizeof *ns);
    if (!ns) return false;
    for (size_t i = 0; i < wl->n; i++) {
        size_t j = hash_bytes(wl->src[i], wl->w[i].len) & (ncap - 1);
        while (ns[j]) j = (j + 1) & (ncap - 1);
        ns[j] = (uint32_t)(i + 1);
    }
    st_free(wl->map.slot);
    wl->map.slot = ns;
    wl->map.cap = ncap;
    return true;
}

static stetho_status add_word(word_list *wl, const char *s, size_t n) {
    if (n == 0) return STETHO_OK;
    if (n > UINT32_MAX) return st_err(STETHO_ERR_INVALID, "bpe: a word longer than 4 GB");
    if ((wl->n + 1) * 2 > wl->map.cap && !wm_rehash(wl)) return STETHO_ERR_NOMEM;
    size_t j = hash_bytes(s, n) & (wl->map.cap - 1);
    while (wl->map.slot[j]) {
        bpe_word *w = &wl->w[wl->map.slot[j] - 1];
        if (w->len == n && !memcmp(wl->src[wl->map.slot[j] - 1], s, n)) {
            w->count++;
            return STETHO_OK;
        }
        j = (j + 1) & (wl->map.cap - 1);
    }
    if (wl->n == wl->cap) {
        size_t nc = wl->cap ? wl->cap * 2 : 1024, bytes, bytes2;
        if (!st_mul_size(nc, sizeof *wl->w, &bytes) || !st_mul_size(nc, sizeof *wl->src, &bytes2))
            return st_err(STETHO_ERR_NOMEM, "bpe: too many distinct words");
        bpe_word *nw = st_realloc(wl->w, bytes);
        if (!nw) return STETHO_ERR_NOMEM;
        wl->w = nw;
        const char **ns = st_realloc(wl->src, bytes2);
        if (!ns) return STETHO_ERR_NOMEM;
        wl->src = ns;
        wl->cap = nc;
    }
    size_t bytes;
    if (!st_mul_size(n, sizeof(int32_t), &bytes)) return st_err(STETHO_ERR_NOMEM, "bpe: word too long");
    int32_t *sym = st_malloc(bytes);
    if (!sym) return STETHO_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) sym[i] = (unsigned char)s[i];
    wl->w[wl->n] = (bpe_word){.sym = sym, .len = (uint32_t)n, .count = 1};
    wl->src[wl->n] = s;
    wl->map.slot[j] = (uint32_t)(wl->n + 1);
    wl->n++;
    return STETHO_OK;
}

/* Cut one document into words exactly as the loader's Split(Isolated) will: the
 * pattern's matches, and any text between matches as words of their own. */
static stetho_status count_words(word_list *wl, pcre2_code *re, pcre2_match_data *md, const char *doc, size_t len,
                                 size_t doc_index) {
    if (st_utf8_check(doc, len) != len) return st_err(STETHO_ERR_INVALID, "bpe: document %zu is not valid UTF-8", doc_index);
    size_t pos = 0, last = 0;
    stetho_status st;
    while (pos < len) {
        int rc = pcre2_match(re, (PCRE2_SPTR)doc, len, pos, PCRE2_NO_UTF_CHECK, md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) return st_err(STETHO_ERR_FORMAT, "bpe: regex match failed in document %zu (%d)", doc_index, rc);
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        if (ov[0] > last && (st = add_word(wl, doc + last, ov[0] - last))) return st;
        if (ov[1] == ov[0]) { /* empty match: step one character */
            pos = ov[0] + 1;
            while (pos < len && ((unsigned char)doc[pos] & 0xC0) == 0x80) pos++;
            last = ov[0];
            continue;
        }
        if ((st = add_word(wl, doc + ov[0], ov[1] - ov[0]))) return st;
        pos = last = ov[1];
    }
    if (len > last && (st = add_word(wl, doc + last, len - last))) return st;
    return STETHO_OK;
}

static int find_tok(const stetho_bpe_model *m, const char *s) {
    for (int i = 0; i < m->n_toks; i++)
        if (!strcmp(m->toks[i].str, s)) return i;
    return -1;
}

void stetho_bpe_free(stetho_bpe_model *m) {
    if (!m) return;
    for (int i = 0; i < m->n_toks; i++) st_free(m->toks[i].str);
    st_free(m->toks);
    st_free(m->merges);
    st_free(m);
}

int stetho_bpe_vocab_size(const stetho_bpe_model *m) { return STETHO_BPE_N_SPECIAL + m->n_toks; }
int stetho_bpe_n_merges(const stetho_bpe_model *m) { return m->n_merges; }

/* Apply merge (a, b) -> c to every word that has it, updating the pair counts. */
static stetho_status merge_words(word_list *wl, pair_map *pm, int32_t a, int32_t b, int32_t c) {
    for (size_t i = 0; i < wl->n; i++) {
        bpe_word *w = &wl->w[i];
        bool has = false;
        for (uint32_t k = 0; k + 1 < w->len && !has; k++) has = w->sym[k] == a && w->sym[k + 1] == b;
        if (!has) continue;
        int64_t cnt = (int64_t)w->count;
        for (uint32_t k = 0; k + 1 < w->len; k++)
            if (!pm_add(pm, w->sym[k], w->sym[k + 1], -cnt)) return STETHO_ERR_NOMEM;
        uint32_t o = 0;
        for (uint32_t k = 0; k < w->len; k++) {
            if (k + 1 < w->len && w->sym[k] == a && w->sym[k + 1] == b) {
                w->sym[o++] = c;
                k++;
            } else {
                w->sym[o++] = w->sym[k];
            }
        }
        w->len = o;
        for (uint32_t k = 0; k + 1 < w->len; k++)
            if (!pm_add(pm, w->sym[k], w->sym[k + 1], cnt)) return STETHO_ERR_NOMEM;
    }
    return STETHO_OK;
}

stetho_status stetho_bpe_train(const char *const *docs, const size_t *lens, size_t n, const stetho_bpe_options *opt,
                               stetho_bpe_model **out) {
    if (!docs || !lens || !opt || !out) return st_err(STETHO_ERR_INVALID, "bpe: NULL argument");
    *out = NULL;
    if (opt->vocab_size < STETHO_BPE_MIN_VOCAB || opt->vocab_size > 65536)
        return st_err(STETHO_ERR_INVALID, "bpe: vocab_size %d outside %d..65536", opt->vocab_size, STETHO_BPE_MIN_VOCAB);
    int min_freq = opt->min_frequency > 0 ? opt->min_frequency : 2;
    int n_target = opt->vocab_size - STETHO_BPE_MIN_VOCAB; /* new tokens wanted */

    stetho_status st = STETHO_OK;
    word_list wl = {0};
    pair_map pm = {0};
    stetho_bpe_model *m = st_calloc(1, sizeof *m);
    int code;
    PCRE2_SIZE eoff;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)STETHO_BPE_PATTERN, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP,
                                   &code, &eoff, NULL);
    pcre2_match_data *md = re ? pcre2_match_data_create_from_pattern(re, NULL) : NULL;
    if (!m || !re || !md) {
        st = m ? st_err(STETHO_ERR_NOMEM, "bpe: cannot compile the split pattern") : STETHO_ERR_NOMEM;
        goto done;
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* optional */
    size_t budget = opt->max_bytes ? opt->max_bytes : SIZE_MAX;
    for (size_t d = 0; d < n && budget; d++) {
        size_t len = lens[d];
        if (len > budget) { /* cut on a character boundary */
            len = budget;
            while (len && ((unsigned char)docs[d][len] & 0xC0) == 0x80) len--;
        }
        budget -= len;
        if ((st = count_words(&wl, re, md, docs[d], len, d))) goto done;
    }

    size_t cap = 256 + (size_t)n_target;
    m->toks = st_calloc(cap, sizeof *m->toks);
    size_t merges_cap = (size_t)n_target + 1;
    m->merges = st_calloc(merges_cap, sizeof *m->merges);
    if (!m->toks || !m->merges) {
        st = STETHO_ERR_NOMEM;
        goto done;
    }
    for (int b = 0; b < 256; b++) {
        char s[3];
        byte_char(b, s);
        if (!(m->toks[b].str = st_strdup(s))) {
            st = STETHO_ERR_NOMEM;
            goto done;
        }
        m->n_toks++;
    }
    for (size_t i = 0; i < wl.n; i++)
        for (uint32_t k = 0; k + 1 < wl.w[i].len; k++)
            if (!pm_add(&pm, wl.w[i].sym[k], wl.w[i].sym[k + 1], (int64_t)wl.w[i].count)) {
                st = STETHO_ERR_NOMEM;
                goto done;
            }

    /* Different merges may spell the same string ("ab"+"c", "a"+"bc"); as in HF's
     * trainer they share one token, so merges can outnumber new tokens. A cap on
     * merges keeps that from looping (each merge still consumes a pair). */
    while (m->n_toks < 256 + n_target && m->n_merges < 4 * n_target + 16) {
        size_t best = SIZE_MAX;
        for (size_t j = 0; j < pm.cap; j++) {
            if (!pm.key[j] || pm.cnt[j] < min_freq) continue;
            if (best == SIZE_MAX || pm.cnt[j] > pm.cnt[best] ||
                (pm.cnt[j] == pm.cnt[best] && pm.key[j] < pm.key[best]))
                best = j; /* ties: smallest (a, b), independent of the table layout */
        }
        if (best == SIZE_MAX) break;
        int32_t a = (int32_t)((pm.key[best] - 1) >> 32), b = (int32_t)((pm.key[best] - 1) & 0xFFFFFFFFu);
        size_t la = strlen(m->toks[a].str), lb = strlen(m->toks[b].str);
        char *s = st_malloc(la + lb + 1);
        if (!s) {
            st = STETHO_ERR_NOMEM;
            goto done;
        }
        memcpy(s, m->toks[a].str, la);
        memcpy(s + la, m->toks[b].str, lb + 1);
        int c = find_tok(m, s);
        if (c < 0) {
            if ((size_t)m->n_toks == cap) { /* cannot happen: the loop stops at cap */
                st_free(s);
                break;
            }
            c = m->n_toks;
            m->toks[m->n_toks++].str = s;
        } else {
            st_free(s);
        }
        if ((size_t)m->n_merges == merges_cap) {
            size_t bytes;
            if (!st_mul_size(merges_cap * 2, sizeof *m->merges, &bytes)) {
                st = st_err(STETHO_ERR_NOMEM, "bpe: too many merges");
                goto done;
            }
            int32_t(*nm)[2] = st_realloc(m->merges, bytes);
            if (!nm) {
                st = STETHO_ERR_NOMEM;
                goto done;
            }
            m->merges = nm;
            merges_cap *= 2;
        }
        m->merges[m->n_merges][0] = a;
        m->merges[m->n_merges][1] = b;
        m->n_merges++;
        if ((st = merge_words(&wl, &pm, a, b, c))) goto done;
    }

done:
    words_free(&wl);
    st_free(pm.key);
    st_free(pm.cnt);
    pcre2_match_data_free(md);
    pcre2_code_free(re);
    if (st) {
        stetho_bpe_free(m);
        return st;
    }
    *out = m;
    return STETHO_OK;
}

/* ---- writing ------------------------------------------------------------------- */

/* Write len bytes to path through a temporary file renamed into place, so a reader
 * never sees half a file. */
static stetho_status write_atomic(const char *path, const char *data, size_t len) {
    st_buf tmp;
    st_buf_init(&tmp);
    if (!st_buf_printf(&tmp, "%s.tmp.%ld", path, (long)getpid())) return STETHO_ERR_NOMEM;
    FILE *fp = fopen(tmp.data, "wb");
    if (!fp) {
        stetho_status st = st_err(STETHO_ERR_IO, "%s: cannot create: %s", tmp.data, strerror(errno));
        st_buf_free(&tmp);
        return st;
    }
    bool ok = !st_fault_write_fires() && fwrite(data, 1, len, fp) == len;
    if (fclose(fp) != 0) ok = false;
    if (!ok || rename(tmp.data, path) != 0) {
        stetho_status st = st_err(STETHO_ERR_IO, "%s: write failed: %s", path, ok ? strerror(errno) : "no space left on device");
        remove(tmp.data);
        st_buf_free(&tmp);
        return st;
    }
    st_buf_free(&tmp);
    return STETHO_OK;
}

/* Gemma's template without its system-prompt folding: each message becomes
 * "<start_of_turn>{user|model}\n" content "<end_of_turn>\n" after one <bos>. */
static const char chat_template[] =
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'assistant' %}{% set role = 'model' %}"
    "{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\\n' + "
    "message['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<start_of_turn>model\\n' }}{% endif %}";

static json_t *build_tokenizer_json(const stetho_bpe_model *m) {
    json_t *root = json_object(), *added = json_array(), *vocab = json_object(), *merges = json_array();
    if (!root || !added || !vocab || !merges) goto fail;
    for (int i = 0; i < STETHO_BPE_N_SPECIAL; i++) {
        json_t *t = json_pack("{s:i,s:s,s:b,s:b,s:b,s:b,s:b}", "id", i, "content", special_tokens[i], "single_word", 0,
                              "lstrip", 0, "rstrip", 0, "normalized", 0, "special", 1);
        if (!t || json_array_append_new(added, t)) goto fail;
        if (json_object_set_new(vocab, special_tokens[i], json_integer(i))) goto fail;
    }
    for (int i = 0; i < m->n_toks; i++)
        if (json_object_set_new(vocab, m->toks[i].str, json_integer(STETHO_BPE_N_SPECIAL + i))) goto fail;
    for (int i = 0; i < m->n_merges; i++) {
        json_t *p = json_pack("[ss]", m->toks[m->merges[i][0]].str, m->toks[m->merges[i][1]].str);
        if (!p || json_array_append_new(merges, p)) goto fail;
    }
    json_error_t e;
    json_t *pre = json_pack("{s:s,s:[{s:s,s:{s:s},s:s,s:b},{s:s,s:b,s:b,s:b}]}", "type", "Sequence", "pretokenizers",
                            "type", "Split", "pattern", "Regex", STETHO_BPE_PATTERN, "behavior", "Isolated", "invert", 0,
                            "type", "ByteLevel", "add_prefix_space", 0, "trim_offsets", 1, "use_regex", 0);
    json_t *post = json_pack_ex(
        &e, 0,
        "{s:s,s:[{s:{s:s,s:i}},{s:{s:s,s:i}}],s:[{s:{s:s,s:i}},{s:{s:s,s:i}},{s:{s:s,s:i}},{s:{s:s,s:i}}],"
        "s:{s:{s:s,s:[i],s:[s]}}}",
        "type", "TemplateProcessing", "single", "SpecialToken", "id", "<bos>", "type_id", 0, "Sequence", "id", "A",
        "type_id", 0, "pair", "SpecialToken", "id", "<bos>", "type_id", 0, "Sequence", "id", "A", "type_id", 0,
        "SpecialToken", "id", "<bos>", "type_id", 1, "Sequence", "id", "B", "type_id", 1, "special_tokens", "<bos>",
        "id", "<bos>", "ids", 2, "tokens", "<bos>");
    json_t *dec = json_pack("{s:s,s:b,s:b,s:b}", "type", "ByteLevel", "add_prefix_space", 1, "trim_offsets", 1,
                            "use_regex", 1);
    json_t *model = json_pack("{s:s,s:n,s:n,s:n,s:n,s:b,s:b,s:b,s:o,s:o}", "type", "BPE", "dropout", "unk_token",
                              "continuing_subword_prefix", "end_of_word_suffix", "fuse_unk", 0, "byte_fallback", 0,
                              "ignore_merges", 0, "vocab", vocab, "merges", merges);
    vocab = merges = NULL; /* owned by model (or freed by json_pack on failure) */
    if (!pre || !post || !dec || !model) {
        json_decref(pre);
        json_decref(post);
        json_decref(dec);
        json_decref(model);
        goto fail;
    }
    if (json_object_set_new(root, "version", json_string("1.0")) || json_object_set_new(root, "truncation", json_null()) ||
        json_object_set_new(root, "padding", json_null()) || json_object_set_new(root, "added_tokens", added)) {
        added = NULL;
        json_decref(pre);
        json_decref(post);
        json_decref(dec);
        json_decref(model);
        goto fail;
    }
    added = NULL;
    if (json_object_set_new(root, "normalizer", json_null()) || json_object_set_new(root, "pre_tokenizer", pre) ||
        json_object_set_new(root, "post_processor", post) || json_object_set_new(root, "decoder", dec) ||
        json_object_set_new(root, "model", model))
        goto fail;
    return root;
fail:
    json_decref(root);
    json_decref(added);
    json_decref(vocab);
    json_decref(merges);
    return NULL;
}

stetho_status stetho_bpe_save(const stetho_bpe_model *m, const char *dir) {
    if (!m || !dir) return st_err(STETHO_ERR_INVALID, "bpe: NULL argument");
    json_t *tj = build_tokenizer_json(m);
    if (!tj) return st_err(STETHO_ERR_NOMEM, "bpe: out of memory building tokenizer.json");
    char *text = json_dumps(tj, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(tj);
    if (!text) return st_err(STETHO_ERR_NOMEM, "bpe: out of memory writing tokenizer.json");
    st_buf path;
    st_buf_init(&path);
    stetho_status st = STETHO_OK;
    if (!st_buf_printf(&path, "%s/tokenizer.json", dir)) st = STETHO_ERR_NOMEM;
    else st = write_atomic(path.data, text, strlen(text));
    free(text);
    st_buf_free(&path);
    if (st) return st;

    json_t *dec = json_object();
    for (int i = 0; dec && i < STETHO_BPE_N_SPECIAL; i++) {
        char id[16];
        snprintf(id, sizeof id, "%d", i);
        json_t *t = json_pack("{s:s,s:b,s:b,s:b,s:b,s:b}", "content", special_tokens[i], "lstrip", 0, "normalized", 0,
                              "rstrip", 0, "single_word", 0, "special", 1);
        if (!t || json_object_set_new(dec, id, t)) {
            json_decref(dec);
            dec = NULL;
        }
    }
    json_t *cfg = dec ? json_pack("{s:b,s:b,s:o,s:s,s:s,s:s,s:s,s:s,s:s,s:i,s:b,s:s}", "add_bos_token", 1,
                                  "add_eos_token", 0, "added_tokens_decoder", dec, "bos_token", "<bos>", "eos_token",
                                  "<eos>", "pad_token", "<pad>", "unk_token", "<unk>", "chat_template", chat_template,
                                  "padding_side", "left", "model_max_length", 1 << 20, "clean_up_tokenization_spaces",
                                  0, "tokenizer_class", "PreTrainedTokenizerFast")
                      : NULL;
    if (!cfg) return st_err(STETHO_ERR_NOMEM, "bpe: out of memory building tokenizer_config.json");
    text = json_dumps(cfg, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(cfg);
    if (!text) return st_err(STETHO_ERR_NOMEM, "bpe: out of memory writing tokenizer_config.json");
    st_buf_init(&path);
    if (!st_buf_printf(&path, "%s/tokenizer_config.json", dir)) st = STETHO_ERR_NOMEM;
    else st = write_atomic(path.data, text, strlen(text));
    free(text);
    st_buf_free(&path);
    return st;
}
