/* Private structures of the tokenizer, shared by tokenizer_load.c (tokenizer.json
 * -> these tables) and tokenizer.c (encode/decode). Not installed. */
#ifndef STETHO_TOKENIZER_INTERNAL_H
#define STETHO_TOKENIZER_INTERNAL_H

#include "internal.h"
#include "stetho/tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

/* Open-addressing hash map from byte strings (in an arena) to int32. */
typedef struct {
    char *arena;         /* keys, NUL-separated: arena[koff .. koff+klen) */
    size_t arena_len, arena_cap;
    uint64_t *slots;     /* (hash >> 32) << 32 | (key index + 1); 0 = empty */
    size_t cap;          /* power of two */
    size_t count;
    uint32_t *koff, *klen; /* [count] */
    int32_t *val;          /* [count] */
    size_t kcap;
} tk_strmap;

/* Open-addressing hash map from uint64 keys to two int32 values. */
typedef struct {
    uint64_t key;        /* key+1, 0 = empty */
    int32_t a, b;
} tk_u64slot;            /* one cache line holds four: a lookup is one miss */
typedef struct {
    tk_u64slot *slots;
    size_t cap, count;
} tk_u64map;

typedef enum {
    TK_NORM_SEQUENCE,
    TK_NORM_REPLACE,
    TK_NORM_PREPEND,
    TK_NORM_STRIP,
    TK_NORM_UNICODE, /* NFC/NFD/NFKC/NFKD: identity on ASCII, unsupported otherwise */
} tk_norm_kind;

typedef enum {
    TK_PRE_SEQUENCE,
    TK_PRE_SPLIT,
    TK_PRE_METASPACE,
    TK_PRE_BYTELEVEL,
    TK_PRE_DIGITS,
} tk_pre_kind;

typedef enum {
    TK_DEC_SEQUENCE,
    TK_DEC_REPLACE,
    TK_DEC_BYTEFALLBACK,
    TK_DEC_FUSE,
    TK_DEC_STRIP,
    TK_DEC_METASPACE,
    TK_DEC_BYTELEVEL,
} tk_dec_kind;

typedef enum {
    TK_SPLIT_REMOVED,
    TK_SPLIT_ISOLATED,
    TK_SPLIT_MERGED_PREV,
    TK_SPLIT_MERGED_NEXT,
    TK_SPLIT_CONTIGUOUS,
} tk_split_behavior;

typedef enum { TK_PREPEND_ALWAYS, TK_PREPEND_FIRST, TK_PREPEND_NEVER } tk_prepend_scheme;

/* A literal-or-regex pattern (normalizer Replace, pre-tokenizer Split, decoder Replace). */
typedef struct {
    char *lit;            /* literal pattern, or NULL when re is set */
    size_t lit_len;
    pcre2_code *re;
} tk_pattern;

typedef struct tk_node tk_node;
struct tk_node {
    int kind;             /* tk_norm_kind / tk_pre_kind / tk_dec_kind */
    tk_node *children;    /* Sequence */
    size_t n_children;
    tk_pattern pat;       /* Replace / Split */
    char *content;        /* Replace content, Prepend text, Metaspace replacement, Strip char */
    size_t content_len;
    tk_split_behavior behavior;
    bool invert;
    bool flag_a, flag_b;  /* Strip: left/right; ByteLevel: add_prefix_space/use_regex; Metaspace: split; Digits: individual */
    int start, stop;      /* Strip decoder */
    tk_prepend_scheme scheme;
};

typedef struct {
    char *content;
    size_t len;
    int32_t id;
    bool special, normalized, single_word, lstrip, rstrip;
} tk_added;

/* Trie over added-token contents: edges in a u64 map (node << 8 | byte) -> child;
 * term[node] is the added-token index ending there or -1. */
typedef struct {
    tk_u64map edges;
    int32_t *term;
    size_t n_nodes, cap_nodes;
    bool empty;
} tk_trie;

struct stetho_tok_impl {
    /* model vocabulary */
    tk_strmap vocab;          /* token -> id; its arena holds every token string */
    int32_t *id_key;          /* [n_ids] key index in vocab, or -1 */
    int32_t n_ids;
    tk_u64map merges;         /* (left id << 32 | right id) -> (rank, merged id) */
    int32_t byte_id[256];     /* <0xNN> ids, -1 when absent */
    bool byte_fallback, fuse_unk, ignore_merges;
    int32_t unk_id;           /* -1 when the model has no unk_token */
    char *cont_prefix, *eow_suffix;
    /* added tokens */
    tk_added *added;
    size_t n_added;
    tk_strmap added_map;      /* content -> index in added */
    int32_t *added_by_id;     /* [n_ids] index in added or -1 */
    tk_trie trie_raw, trie_norm;
    pcre2_code *word_re;      /* one word character (single_word tokens), compiled only when needed */
    /* pipeline */
    tk_node *normalizer, *pre, *decoder;
    int32_t *tmpl_pre, *tmpl_post; /* ids added before / after the sequence */
    size_t n_tmpl_pre, n_tmpl_post;
};

/* tokenizer_load.c */
bool tk_strmap_init(tk_strmap *m, size_t expect);
void tk_strmap_free(tk_strmap *m);
/* Inserts (copying the key) or overwrites; *key_index (optional) receives the key's index. */
bool tk_strmap_put(tk_strmap *m, const char *s, size_t len, int32_t val, int32_t *key_index);
static inline const char *tk_strmap_key(const tk_strmap *m, int32_t k, size_t *len) {
    *len = m->klen[k];
    return m->arena + m->koff[k];
}
int32_t tk_strmap_get(const tk_strmap *m, const char *s, size_t len);
bool tk_u64map_init(tk_u64map *m, size_t expect);
void tk_u64map_free(tk_u64map *m);
bool tk_u64map_put(tk_u64map *m, uint64_t key, int32_t a, int32_t b);
bool tk_u64map_get(const tk_u64map *m, uint64_t key, int32_t *a, int32_t *b);
void tk_node_free(tk_node *n);
/* One vocab entry / one merge; shared by the jansson path and the fast scanner so
 * both give the same tables and the same errors. */
stetho_status tk_vocab_add(stetho_tok_impl *t, const char *key, size_t klen, bool is_int, int64_t v, const char *file,
                           int32_t *max_id);
bool tk_merge_split(const char *s, size_t n, const char **a, size_t *al, const char **b, size_t *bl);
stetho_status tk_merge_add(stetho_tok_impl *t, size_t rank, const char *a, size_t al, const char *b, size_t bl,
                           st_buf *scratch, const char *file);

/* tokenizer_scan.c: a fast path for the two huge members of tokenizer.json. */
/* Byte spans [start, end) of model.vocab and model.merges in the raw text; false when
 * they cannot be located unambiguously (the caller then uses jansson throughout). */
bool tk_scan_locate(const char *s, size_t n, size_t vocab[2], size_t merges[2]);
/* Parse the spans into t's tables. Syntax the scanner does not accept sets *fallback
 * (and returns STETHO_OK); semantic errors are returned as from tk_vocab_add/tk_merge_add. */
stetho_status tk_scan_vocab(stetho_tok_impl *t, const char *s, const size_t span[2], const char *file, int32_t *max_id,
                            bool *fallback);
stetho_status tk_scan_merges(stetho_tok_impl *t, const char *s, const size_t span[2], const char *file, st_buf *scratch,
                             bool *fallback);

/* tokenizer.c: length of the valid UTF-8 sequence at s (1..4), or -k with k the
 * length of the maximal invalid prefix (Rust's from_utf8_lossy unit of replacement). */
int tk_utf8_seq(const unsigned char *s, size_t n);
/* tokenizer.c: the GPT-2 byte <-> unicode alphabet. */
void tk_bytelevel_tables(uint32_t byte_to_cp[256]);

#endif
