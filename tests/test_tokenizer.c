/* Tokenizer: every public reference row for Gemma 3 and Mistral (ids from HF
 * `tokenizers`) must match exactly, decode must give HF's text; byte-level BPE,
 * Metaspace and added-token flags are checked on small tokenizer.json files
 * generated here; bad files and bad ids must fail cleanly. */
#include "testutil.h"

#include "stetho/tokenizer.h"
#include "tokenizer_internal.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void print_ids(const char *label, const int32_t *ids, size_t n) {
    fprintf(stderr, "  %s [", label);
    for (size_t i = 0; i < n && i < 40; i++) fprintf(stderr, "%s%d", i ? "," : "", ids[i]);
    fprintf(stderr, "%s]\n", n > 40 ? ",..." : "");
}

/* Every row of a reference file: encode must equal "ids", decode(ids) "decoded". */
static void check_reference(const char *tok_rel, const char *ref_rel) {
    const char *shared = tu_shared(tok_rel);
    if (!shared || !tu_shared(ref_rel)) {
        printf("skipping: %s or %s not found under the shared data directory\n", tok_rel, ref_rel);
        skip();
    }
    const char *tpath = tu_path(shared, tok_rel), *rpath = tu_path(shared, ref_rel);
    stetho_tokenizer tok;
    double t0 = now_s();
    stetho_status st = stetho_tokenizer_load(&tok, tpath);
    double t_load = now_s() - t0;
    if (st) fprintf(stderr, "%s\n", stetho_last_error());
    assert_int_equal(st, STETHO_OK);

    /* read with jansson directly: some texts hold U+0000, which needs JSON_ALLOW_NUL */
    FILE *fp = fopen(rpath, "r");
    assert_non_null(fp);
    char *line = NULL;
    size_t cap = 0, lines = 0;
    size_t rows = 0, enc_ok = 0, dec_ok = 0, chars = 0, toks = 0;
    double t_enc = 0;
    while (getline(&line, &cap, fp) > 0) {
        lines++;
        json_error_t jerr;
        json_t *o = json_loads(line, JSON_ALLOW_NUL, &jerr);
        if (!o) fprintf(stderr, "%s:%zu: %s\n", rpath, lines, jerr.text);
        assert_non_null(o);
        json_t *jt = json_object_get(o, "text"), *jids = json_object_get(o, "ids");
        const char *dec_want = json_string_value(json_object_get(o, "decoded"));
        assert_non_null(jt);
        assert_non_null(jids);
        bool add = json_is_true(json_object_get(o, "add_special_tokens"));
        rows++;
        int32_t *ids;
        size_t n;
        double t1 = now_s();
        st = stetho_tokenizer_encode(&tok, json_string_value(jt), json_string_length(jt), add, &ids, &n);
        t_enc += now_s() - t1;
        chars += json_string_length(jt);
        toks += n;
        assert_int_equal(st, STETHO_OK);
        bool same = n == json_array_size(jids);
        for (size_t i = 0; same && i < n; i++) same = ids[i] == json_integer_value(json_array_get(jids, i));
        if (same) enc_ok++;
        else if (rows - enc_ok <= 5) {
            fprintf(stderr, "mismatch %s: %.80s\n", json_string_value(json_object_get(o, "id")), json_string_value(jt));
            print_ids("got ", ids, n);
            int32_t *w = malloc((json_array_size(jids) + 1) * sizeof *w);
            for (size_t i = 0; i < json_array_size(jids); i++) w[i] = (int32_t)json_integer_value(json_array_get(jids, i));
            print_ids("want", w, json_array_size(jids));
            free(w);
        }
        /* decode the reference ids (not ours) so a decode bug shows on its own */
        size_t m = json_array_size(jids);
        int32_t *ref = malloc((m + 1) * sizeof *ref);
        for (size_t i = 0; i < m; i++) ref[i] = (int32_t)json_integer_value(json_array_get(jids, i));
        char *text;
        size_t tl;
        assert_int_equal(stetho_tokenizer_decode(&tok, ref, m, false, &text, &tl), STETHO_OK);
        if (dec_want && tl == json_string_length(json_object_get(o, "decoded")) && !memcmp(text, dec_want, tl))
            dec_ok++;
        else if (rows - dec_ok <= 5)
            fprintf(stderr, "decode mismatch %s:\n  got  '%.120s'\n  want '%.120s'\n",
                    json_string_value(json_object_get(o, "id")), text, dec_want ? dec_want : "(none)");
        free(text);
        free(ref);
        free(ids);
        json_decref(o);
    }
    free(line);
    fclose(fp);
    assert_int_equal(rows, lines);
    printf("%s: load %.3f s; encode matched %zu/%zu rows, decode matched %zu/%zu; "
           "encode %.2f MB/s (%zu tokens in %.3f s)\n",
           tok_rel, t_load, enc_ok, rows, dec_ok, rows, chars / 1e6 / (t_enc > 0 ? t_enc : 1e-9), toks, t_enc);
    assert_true(rows > 1000);
    assert_int_equal(enc_ok, rows);
    assert_int_equal(dec_ok, rows);
    stetho_tokenizer_free(&tok);
}

static void test_gemma3_reference(void **state) {
    (void)state;
    check_reference("tokenizers/gemma3/tokenizer.json", "reference/tokenizers/gemma3_public.jsonl");
}

static void test_mistral_reference(void **state) {
    (void)state;
    check_reference("tokenizers/mistral/tokenizer.json", "reference/tokenizers/mistral_public.jsonl");
}

/* ---- generated tokenizers ------------------------------------------------------ */

static bool ids_eq(const int32_t *got, size_t n, const int32_t *want, size_t m) {
    if (n != m) return false;
    for (size_t i = 0; i < n; i++)
        if (got[i] != want[i]) return false;
    return true;
}

#define CHECK_ENC(tok, text, special, ...)                                                                   \
    do {                                                                                                     \
        const int32_t want_[] = {__VA_ARGS__};                                                               \
        int32_t *got_;                                                                                       \
        size_t n_;                                                                                           \
        assert_int_equal(stetho_tokenizer_encode(tok, text, strlen(text), special, &got_, &n_), STETHO_OK);   \
        if (!ids_eq(got_, n_, want_, sizeof want_ / sizeof want_[0])) {                                      \
            fprintf(stderr, "encode '%s':\n", text);                                                         \
            print_ids("got ", got_, n_);                                                                     \
            print_ids("want", want_, sizeof want_ / sizeof want_[0]);                                        \
            fail();                                                                                          \
        }                                                                                                    \
        free(got_);                                                                                          \
    } while (0)

static void check_dec(const stetho_tokenizer *tok, const int32_t *ids, size_t n, bool skip, const char *want) {
    char *text;
    size_t len;
    assert_int_equal(stetho_tokenizer_decode(tok, ids, n, skip, &text, &len), STETHO_OK);
    assert_int_equal(len, strlen(want));
    assert_string_equal(text, want);
    free(text);
}

/* A small SentencePiece-style BPE (the Llama 2 / Mistral pipeline) with `pre` and
 * `dec` spliced in; merges as "a b" strings. */
static const char *sp_json(const char *normalizer, const char *pre, const char *dec, const char *extra_added) {
    static char buf[8192];
    snprintf(buf, sizeof buf,
             "{\"version\":\"1.0\",\"truncation\":null,\"padding\":null,"
             "\"added_tokens\":[{\"id\":0,\"content\":\"<unk>\",\"special\":true,\"normalized\":false},"
             "{\"id\":1,\"content\":\"<s>\",\"special\":true,\"normalized\":false},"
             "{\"id\":2,\"content\":\"</s>\",\"special\":true,\"normalized\":false}%s],"
             "\"normalizer\":%s,\"pre_tokenizer\":%s,"
             "\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<s>\","
             "\"type_id\":0}},{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}],\"pair\":[],\"special_tokens\":{\"<s>\":"
             "{\"id\":\"<s>\",\"ids\":[1],\"tokens\":[\"<s>\"]}}},"
             "\"decoder\":%s,"
             "\"model\":{\"type\":\"BPE\",\"dropout\":null,\"unk_token\":\"<unk>\",\"fuse_unk\":true,"
             "\"byte_fallback\":true,\"vocab\":{\"<unk>\":0,\"<s>\":1,\"</s>\":2,\"<0x0A>\":3,\"\u2581\":4,\"h\":5,"
             "\"e\":6,\"l\":7,\"o\":8,\"\u2581h\":9,\"ll\":10,\"\u2581he\":11,\"llo\":12,\"\u2581hello\":13,\"w\":14,"
             "\"r\":15,\"d\":16},"
             "\"merges\":[\"\u2581 h\",\"l l\",\"\u2581h e\",\"ll o\",\"\u2581he llo\"]}}",
             extra_added, normalizer, pre, dec);
    return buf;
}

static const char *sp_norm = "{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Prepend\",\"prepend\":\"\u2581\"},"
                             "{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"\u2581\"}]}";
static const char *sp_dec = "{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Replace\",\"pattern\":{\"String\":"
                            "\"\u2581\"},\"content\":\" \"},{\"type\":\"ByteFallback\"},{\"type\":\"Fuse\"},"
                            "{\"type\":\"Strip\",\"content\":\" \",\"start\":1,\"stop\":0}]}";

static void load_text(stetho_tokenizer *tok, const char *tag, const char *json) {
    const char *dir = tu_tmpdir(tag), *path = tu_path(dir, "tokenizer.json");
    tu_write_file(path, json, strlen(json));
    stetho_status st = stetho_tokenizer_load(tok, path);
    if (st) fprintf(stderr, "%s\n", stetho_last_error());
    assert_int_equal(st, STETHO_OK);
}

static void test_sentencepiece_bpe(void **state) {
    (void)state;
    stetho_tokenizer tok;
    load_text(&tok, "tok_sp", sp_json(sp_norm, "null", sp_dec, ""));
    assert_int_equal(tok.vocab_size, 17);
    assert_int_equal(tok.bos_id, 1);
    CHECK_ENC(&tok, "hello", false, 13);
    CHECK_ENC(&tok, "hello", true, 1, 13);
    CHECK_ENC(&tok, "", true, 1);
    CHECK_ENC(&tok, "hello\nworld", true, 1, 13, 3, 14, 8, 15, 7, 16); /* \n by byte fallback */
    CHECK_ENC(&tok, "hello wd", false, 13, 4, 14, 16);
    CHECK_ENC(&tok, "h\xc3\xa9\xc3\xa9o", false, 9, 0, 8); /* no <0xC3>: one fused unk for both */
    CHECK_ENC(&tok, "<s>hello</s>", false, 1, 13, 2);   /* Prepend applies per segment, as in HF */
    const int32_t a[] = {1, 13, 3, 14, 8, 15, 7, 16};
    check_dec(&tok, a, 8, false, "<s> hello\nworld");
    check_dec(&tok, a, 8, true, "hello\nworld");
    assert_string_equal(stetho_tokenizer_id_to_token(&tok, 13), "\xe2\x96\x81hello");
    assert_int_equal(stetho_tokenizer_token_to_id(&tok, "</s>"), 2);
    assert_int_equal(stetho_tokenizer_token_to_id(&tok, "nope"), -1);
    assert_true(stetho_tokenizer_is_special(&tok, 1));
    assert_false(stetho_tokenizer_is_special(&tok, 13));
    stetho_tokenizer_free(&tok);
}

static void test_metaspace(void **state) {
    (void)state;
    stetho_tokenizer tok;
    const char *ms = "{\"type\":\"Metaspace\",\"replacement\":\"\u2581\",\"prepend_scheme\":\"%s\",\"split\":true}";
    char pre[256], dec[256];
    snprintf(pre, sizeof pre, ms, "first");
    snprintf(dec, sizeof dec, ms, "first");
    load_text(&tok, "tok_ms_first", sp_json("null", pre, dec, ""));
    CHECK_ENC(&tok, "hello wd", false, 13, 4, 14, 16);
    CHECK_ENC(&tok, "<s>hello", false, 1, 5, 6, 12); /* not at the start: no prepended space */
    const int32_t a[] = {1, 13, 4, 14};
    check_dec(&tok, a, 4, false, "<s> hello w");
    check_dec(&tok, a + 1, 3, false, "hello w");
    stetho_tokenizer_free(&tok);
    snprintf(pre, sizeof pre, ms, "always");
    load_text(&tok, "tok_ms_always", sp_json("null", pre, dec, ""));
    CHECK_ENC(&tok, "<s>hello", false, 1, 13);
    stetho_tokenizer_free(&tok);
}

static void test_added_token_flags(void **state) {
    (void)state;
    stetho_tokenizer tok;
    const char *extra = ",{\"id\":17,\"content\":\"<mask>\",\"special\":true,\"normalized\":false,\"lstrip\":true,"
                        "\"rstrip\":true},{\"id\":18,\"content\":\"wd\",\"special\":false,\"normalized\":false,"
                        "\"single_word\":true},{\"id\":19,\"content\":\"\u2581o\",\"special\":false,\"normalized\":true}";
    load_text(&tok, "tok_flags", sp_json(sp_norm, "null", sp_dec, extra));
    assert_int_equal(tok.vocab_size, 20);
    CHECK_ENC(&tok, "hello <mask> wd", false, 13, 17, 18);
    CHECK_ENC(&tok, "xwd", false, 4, 0, 14, 16); /* not a single word: BPE, x is unknown */
    CHECK_ENC(&tok, "wd.", false, 18, 4, 0);     /* '.' is not a word character */
    /* a normalized added token matches after normalization: " o" -> "\u2581o" */
    CHECK_ENC(&tok, "hello o", false, 13, 19);
    CHECK_ENC(&tok, "<mask><mask>", false, 17, 17);
    const int32_t a[] = {13, 17, 18};
    check_dec(&tok, a, 3, true, "hellowd");
    stetho_tokenizer_free(&tok);
}

/* Byte-level BPE: the GPT-2 alphabet as ids 0..255, then merges given as pairs. */
static const char *bytelevel_json(const char *pre, bool ignore_merges) {
    static char *out;
    json_t *vocab = json_object();
    for (int b = 0; b < 256; b++) {
        bool keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        static int next = 256;
        if (b == 0) next = 256;
        int cp = keep ? b : next++;
        char s[4];
        if (cp < 0x80) s[0] = (char)cp, s[1] = 0;
        else s[0] = (char)(0xC0 | cp >> 6), s[1] = (char)(0x80 | (cp & 0x3F)), s[2] = 0;
        json_object_set_new(vocab, s, json_integer(b));
    }
    const char *merges[][2] = {{"l", "l"},       {"H", "e"},  {"He", "ll"}, {"Hell", "o"}, {"\xc4\xa0", "w"},
                               {"o", "r"},       {"\xc4\xa0w", "or"}, {"1", "2"}, {"\xc4\xa0", "a"}};
    json_t *jm = json_array();
    int id = 256;
    for (size_t i = 0; i < sizeof merges / sizeof merges[0]; i++) {
        char m[32];
        snprintf(m, sizeof m, "%s%s", merges[i][0], merges[i][1]);
        json_object_set_new(vocab, m, json_integer(id++));
        json_array_append_new(jm, json_pack("[ss]", merges[i][0], merges[i][1]));
    }
    json_error_t e;
    json_t *root = json_pack(
        "{s:[{s:i,s:s,s:b,s:b},{s:i,s:s,s:b,s:b}],s:n,s:o,s:{s:s,s:[{s:{s:s,s:i}},{s:{s:s,s:i}}],s:{s:{s:s,s:[i]}}},"
        "s:{s:s},s:{s:s,s:b,s:b,s:o,s:o}}",
        "added_tokens", "id", 265, "content", "<|begin_of_text|>", "special", 1, "normalized", 0, "id", 266, "content",
        "<|eot_id|>", "special", 1, "normalized", 0, "normalizer", "pre_tokenizer", json_loads(pre, 0, &e),
        "post_processor", "type", "TemplateProcessing", "single", "SpecialToken", "id", "<|begin_of_text|>", "type_id",
        0, "Sequence", "id", "A", "type_id", 0, "special_tokens", "<|begin_of_text|>", "id", "<|begin_of_text|>", "ids",
        265, "decoder", "type", "ByteLevel", "model", "type", "BPE", "byte_fallback", 0, "ignore_merges",
        ignore_merges, "vocab", vocab, "merges", jm);
    assert_non_null(root);
    free(out);
    out = json_dumps(root, 0);
    json_decref(root);
    return out;
}

static void test_bytelevel_llama3(void **state) {
    (void)state;
    const char *pre = "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":"
                      "\"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}{1,3}| ?"
                      "[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"},"
                      "\"behavior\":\"Isolated\",\"invert\":false},{\"type\":\"ByteLevel\",\"add_prefix_space\":false,"
                      "\"trim_offsets\":true,\"use_regex\":false}]}";
    stetho_tokenizer tok;
    load_text(&tok, "tok_bl3", bytelevel_json(pre, true));
    assert_int_equal(tok.vocab_size, 267);
    assert_int_equal(tok.bos_id, 265);
    /* "Hello" is whole in the vocab (ignore_merges); " world" -> "\u0120wor" l d; " " alone; "123" -> "12" "3" */
    CHECK_ENC(&tok, "Hello world 123", true, 265, 259, 262, 'l', 'd', ' ', 263, '3');
    CHECK_ENC(&tok, "1234", false, 263, '3', '4'); /* digits in groups of at most three */
    CHECK_ENC(&tok, "I'M", false, 'I', '\'', 'M'); /* case-insensitive contraction, no merges */
    CHECK_ENC(&tok, "<|eot_id|>x\xc3\xa9", false, 266, 'x', 0xC3, 0xA9);
    CHECK_ENC(&tok, "a\r\n\nb", false, 'a', '\r', '\n', '\n', 'b');
    const int32_t a[] = {265, 259, 262, 'l', 'd', ' ', 263, '3'};
    check_dec(&tok, a, 8, true, "Hello world 123");
    check_dec(&tok, a, 8, false, "<|begin_of_text|>Hello world 123");
    const int32_t ctl[] = {'a', '\r', '\n', 0xC2, 0xA0, 0x7F, 0xC2, 0xAD}; /* remapped bytes 0..32, 127..160, 173 */
    check_dec(&tok, ctl, 8, false, "a\r\n\xc2\xa0\x7f\xc2\xad");
    const int32_t e[] = {'x', 0xC3, 0xA9};
    check_dec(&tok, e, 3, false, "x\xc3\xa9");
    /* invalid UTF-8 decodes lossily: E2 82 is one maximal invalid subpart -> one U+FFFD */
    const int32_t bad[] = {'a', 0xE2, 0x82, 'b', 0xFF};
    check_dec(&tok, bad, 5, false, "a\xef\xbf\xbd" "b\xef\xbf\xbd");
    stetho_tokenizer_free(&tok);
}

static void test_bytelevel_gpt2(void **state) {
    (void)state;
    const char *pre = "{\"type\":\"ByteLevel\",\"add_prefix_space\":true,\"trim_offsets\":true,\"use_regex\":true}";
    stetho_tokenizer tok;
    load_text(&tok, "tok_bl2", bytelevel_json(pre, false));
    /* prefix space, then the GPT-2 regex: " a", " b", " Hello", "'s" */
    CHECK_ENC(&tok, "a b", false, 264, ' ', 'b');
    CHECK_ENC(&tok, "Hello's", false, ' ', 259, '\'', 's');
    CHECK_ENC(&tok, " a", false, 264); /* already starts with a space: none added */
    stetho_tokenizer_free(&tok);
}

static stetho_status load_bad(const char *tag, const char *json, stetho_tokenizer *tok);

/* ---- the fast vocab/merges scanner against jansson ---------------------------- */

/* Same tables either way: a root key holding an escape makes the loader skip the
 * fast scanner (it cannot rule out that the key spells "model"), so loading the
 * same content with and without such a key compares the two paths. */
static void compare_tables(const stetho_tokenizer *a, const stetho_tokenizer *b) {
    assert_int_equal(a->vocab_size, b->vocab_size);
    assert_int_equal(a->impl->vocab.count, b->impl->vocab.count);
    assert_int_equal(a->impl->merges.count, b->impl->merges.count);
    for (int32_t id = 0; id < a->vocab_size; id++) {
        const char *x = stetho_tokenizer_id_to_token(a, id), *y = stetho_tokenizer_id_to_token(b, id);
        assert_true((x == NULL) == (y == NULL));
        if (x) assert_string_equal(x, y);
    }
    const tk_u64map *m = &a->impl->merges;
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->slots[i].key) continue;
        int32_t r, nid;
        assert_true(tk_u64map_get(&b->impl->merges, m->slots[i].key - 1, &r, &nid));
        assert_int_equal(r, m->slots[i].a);
        assert_int_equal(nid, m->slots[i].b);
    }
}

static char *with_escaped_key(const char *json, size_t len, size_t *out_len) {
    static const char extra[] = "{\"note\\u0021\": null, ";
    char *out = malloc(len + sizeof extra);
    assert_non_null(out);
    const char *brace = memchr(json, '{', len);
    assert_non_null(brace);
    size_t pre = (size_t)(brace - json);
    memcpy(out, json, pre);
    memcpy(out + pre, extra, sizeof extra - 1);
    memcpy(out + pre + sizeof extra - 1, brace + 1, len - pre - 1);
    *out_len = len + sizeof extra - 2;
    return out;
}

static void test_fast_scanner_matches_jansson_generated(void **state) {
    (void)state;
    /* escapes of every kind in vocab and merges: \uXXXX, a surrogate pair, \n, \", \\, \/ */
    const char *json = "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"\\u00e9\": 1, \"\\ud83d\\ude00\": 2,"
                       " \"\\n\": 3, \"\\\"\": 4, \"\\\\\": 5, \"\\/\": 6, \"a\\u00e9\": 7, \"\\n\\n\": 8, \"x\" :9 ,"
                       "\"\\u0041b\": 10, \"\xc3\xa9\\\"\": 11},\n \"merges\": [[\"a\", \"\\u00e9\"], \"\\n \\n\","
                       " [ \"\xc3\xa9\" , \"\\\"\" ] ]}}";
    const char *d1 = tu_tmpdir("tok_fast1"), *d2 = tu_tmpdir("tok_fast2");
    size_t l2;
    char *json2 = with_escaped_key(json, strlen(json), &l2);
    tu_write_file(tu_path(d1, "tokenizer.json"), json, strlen(json));
    tu_write_file(tu_path(d2, "tokenizer.json"), json2, l2);
    free(json2);
    stetho_tokenizer a, b;
    assert_int_equal(stetho_tokenizer_load(&a, d1), STETHO_OK);
    assert_int_equal(stetho_tokenizer_load(&b, d2), STETHO_OK);
    assert_int_equal(a.impl->merges.count, 3);
    assert_int_equal(stetho_tokenizer_token_to_id(&a, "\xf0\x9f\x98\x80"), 2);
    compare_tables(&a, &b);
    CHECK_ENC(&a, "a\xc3\xa9\n\n", false, 7, 8);
    stetho_tokenizer_free(&a);
    stetho_tokenizer_free(&b);
    /* syntax the scanner refuses falls back to jansson, whose message names line:column */
    const char *bad = "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0,}, \"merges\": []}}";
    assert_int_equal(load_bad("tok_fast_bad", bad, &a), STETHO_ERR_FORMAT);
    assert_non_null(strstr(stetho_last_error(), "invalid JSON"));
    const char *flt = "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0.5}, \"merges\": []}}";
    assert_int_equal(load_bad("tok_fast_float", flt, &a), STETHO_ERR_FORMAT);
    assert_non_null(strstr(stetho_last_error(), "not an id"));
}

static void test_fast_scanner_matches_jansson_gemma3(void **state) {
    (void)state;
    const char *rel = "tokenizers/gemma3/tokenizer.json", *shared = tu_shared(rel);
    if (!shared) {
        printf("skipping: %s not found under the shared data directory\n", rel);
        skip();
    }
    size_t len, l2;
    char *json = tu_read_file(tu_path(shared, rel), &len);
    assert_non_null(json);
    char *json2 = with_escaped_key(json, len, &l2);
    free(json);
    const char *dir = tu_tmpdir("tok_fast_gemma");
    tu_write_file(tu_path(dir, "tokenizer.json"), json2, l2);
    free(json2);
    stetho_tokenizer a, b;
    double t0 = now_s();
    assert_int_equal(stetho_tokenizer_load(&a, tu_path(shared, rel)), STETHO_OK);
    double t1 = now_s();
    assert_int_equal(stetho_tokenizer_load(&b, dir), STETHO_OK);
    double t2 = now_s();
    printf("gemma3 load: fast scanner %.3f s, jansson throughout %.3f s\n", t1 - t0, t2 - t1);
    compare_tables(&a, &b);
    stetho_tokenizer_free(&a);
    stetho_tokenizer_free(&b);
}

/* ---- bad input ------------------------------------------------------------------ */

static stetho_status load_bad(const char *tag, const char *json, stetho_tokenizer *tok) {
    const char *dir = tu_tmpdir(tag), *path = tu_path(dir, "tokenizer.json");
    tu_write_file(path, json, strlen(json));
    stetho_status st = stetho_tokenizer_load(tok, path);
    printf("  %s -> %s: %s\n", tag, stetho_status_name(st), stetho_last_error());
    return st;
}

static void test_bad_files(void **state) {
    (void)state;
    stetho_tokenizer tok;
    assert_int_equal(load_bad("tok_wp", "{\"model\":{\"type\":\"WordPiece\",\"vocab\":{\"a\":0}}}", &tok),
                     STETHO_ERR_UNSUPPORTED);
    assert_non_null(strstr(stetho_last_error(), "WordPiece"));
    assert_int_equal(load_bad("tok_uni", "{\"model\":{\"type\":\"Unigram\",\"vocab\":[[\"a\",0.0]]}}", &tok),
                     STETHO_ERR_UNSUPPORTED);
    assert_int_equal(load_bad("tok_trunc", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0", &tok),
                     STETHO_ERR_FORMAT);
    assert_non_null(strstr(stetho_last_error(), "invalid JSON"));
    assert_int_equal(load_bad("tok_novocab", "{\"model\":{\"type\":\"BPE\",\"merges\":[]}}", &tok), STETHO_ERR_FORMAT);
    assert_non_null(strstr(stetho_last_error(), "vocab"));
    assert_int_equal(load_bad("tok_nomodel", "{\"added_tokens\":[]}", &tok), STETHO_ERR_FORMAT);
    assert_int_equal(load_bad("tok_badmerge", "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1},"
                                              "\"merges\":[\"a b\"]}}", &tok),
                     STETHO_ERR_FORMAT);
    assert_non_null(strstr(stetho_last_error(), "'ab'"));
    assert_int_equal(load_bad("tok_badmerge2", "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[\"a\"]}}",
                              &tok),
                     STETHO_ERR_FORMAT);
    assert_int_equal(load_bad("tok_badid", "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":-3},\"merges\":[]}}", &tok),
                     STETHO_ERR_FORMAT);
    assert_int_equal(load_bad("tok_bertnorm", "{\"normalizer\":{\"type\":\"BertNormalizer\"},\"model\":{\"type\":"
                                              "\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}", &tok),
                     STETHO_ERR_UNSUPPORTED);
    assert_int_equal(load_bad("tok_badre", "{\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(\"},"
                                           "\"behavior\":\"Isolated\"},\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},"
                                           "\"merges\":[]}}", &tok),
                     STETHO_ERR_UNSUPPORTED);
    assert_int_equal(load_bad("tok_array", "[1,2]", &tok), STETHO_ERR_FORMAT);
    assert_int_equal(stetho_tokenizer_load(&tok, "/nonexistent/dir/tokenizer.json"), STETHO_ERR_NOTFOUND);
    /* a file far larger than any real tokenizer is refused before parsing
     * (sparse: no disk is used) */
    {
        const char *dir = tu_tmpdir("tok_huge"), *path = tu_path(dir, "tokenizer.json");
        FILE *f = fopen(path, "wb");
        assert_non_null(f);
        assert_int_equal(fputc('{', f), '{');
        fclose(f);
        assert_int_equal(truncate(path, (off_t)600 << 20), 0);
        assert_int_equal(stetho_tokenizer_load(&tok, path), STETHO_ERR_FORMAT);
        assert_non_null(strstr(stetho_last_error(), "limit 512 MB"));
    }
    /* a model directory without tokenizer.json */
    assert_int_equal(stetho_tokenizer_load(&tok, tu_tmpdir("tok_emptydir")), STETHO_ERR_NOTFOUND);
    assert_non_null(strstr(stetho_last_error(), "tokenizer.json"));
}

static void test_bad_ids_and_text(void **state) {
    (void)state;
    stetho_tokenizer tok;
    load_text(&tok, "tok_badids", sp_json(sp_norm, "null", sp_dec, ""));
    char *text = (char *)1;
    const int32_t big[] = {13, 17}, neg[] = {-1};
    assert_int_equal(stetho_tokenizer_decode(&tok, big, 2, false, &text, NULL), STETHO_ERR_INVALID);
    assert_null(text);
    assert_non_null(strstr(stetho_last_error(), "position 1"));
    assert_int_equal(stetho_tokenizer_decode(&tok, neg, 1, false, &text, NULL), STETHO_ERR_INVALID);
    int32_t *ids;
    size_t n;
    assert_int_equal(stetho_tokenizer_encode(&tok, "a\xff", 2, false, &ids, &n), STETHO_ERR_INVALID);
    assert_int_equal(stetho_tokenizer_encode(&tok, "\xed\xa0\x80", 3, false, &ids, &n), STETHO_ERR_INVALID);
    assert_null(stetho_tokenizer_id_to_token(&tok, 99));
    stetho_tokenizer_free(&tok);
}

/* bos/eos/pad come from tokenizer_config.json beside tokenizer.json (string or AddedToken form). */
static void test_special_ids_from_config(void **state) {
    (void)state;
    const char *dir = tu_tmpdir("tok_cfg");
    const char *json = sp_json(sp_norm, "null", sp_dec, "");
    tu_write_file(tu_path(dir, "tokenizer.json"), json, strlen(json));
    const char *cfg = "{\"bos_token\":\"<s>\",\"eos_token\":{\"content\":\"</s>\",\"lstrip\":false},\"pad_token\":null}";
    tu_write_file(tu_path(dir, "tokenizer_config.json"), cfg, strlen(cfg));
    stetho_tokenizer tok;
    assert_int_equal(stetho_tokenizer_load(&tok, dir), STETHO_OK);
    assert_int_equal(tok.bos_id, 1);
    assert_int_equal(tok.eos_id, 2);
    assert_int_equal(tok.pad_id, -1);
    assert_int_equal(tok.unk_id, 0);
    stetho_tokenizer_free(&tok);
}

/* Allocation failures at every step of load and encode fail cleanly (ASan checks leaks). */
static void test_alloc_failures(void **state) {
    (void)state;
    const char *dir = tu_tmpdir("tok_alloc"), *path = tu_path(dir, "tokenizer.json");
    const char *json = sp_json(sp_norm, "null", sp_dec, "");
    tu_write_file(path, json, strlen(json));
    stetho_tokenizer tok;
    stetho_fault_alloc_after(0);
    assert_int_equal(stetho_tokenizer_load(&tok, path), STETHO_OK);
    uint64_t n_alloc = stetho_fault_alloc_after(0);
    stetho_tokenizer_free(&tok);
    for (uint64_t k = 1; k <= n_alloc; k++) {
        stetho_fault_alloc_after(k);
        stetho_status st = stetho_tokenizer_load(&tok, path);
        stetho_fault_alloc_after(0);
        if (st == STETHO_OK) stetho_tokenizer_free(&tok);
        else assert_int_equal(st, STETHO_ERR_NOMEM);
    }
    assert_int_equal(stetho_tokenizer_load(&tok, path), STETHO_OK);
    stetho_fault_alloc_after(0);
    int32_t *ids;
    size_t n;
    assert_int_equal(stetho_tokenizer_encode(&tok, "hello world\nhello", 17, true, &ids, &n), STETHO_OK);
    free(ids);
    uint64_t n_enc = stetho_fault_alloc_after(0);
    for (uint64_t k = 1; k <= n_enc; k++) {
        stetho_fault_alloc_after(k);
        stetho_status st = stetho_tokenizer_encode(&tok, "hello world\nhello", 17, true, &ids, &n);
        stetho_fault_alloc_after(0);
        if (st == STETHO_OK) free(ids);
        else assert_int_equal(st, STETHO_ERR_NOMEM);
    }
    stetho_tokenizer_free(&tok);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gemma3_reference),
        cmocka_unit_test(test_mistral_reference),
        cmocka_unit_test(test_sentencepiece_bpe),
        cmocka_unit_test(test_metaspace),
        cmocka_unit_test(test_added_token_flags),
        cmocka_unit_test(test_bytelevel_llama3),
        cmocka_unit_test(test_bytelevel_gpt2),
        cmocka_unit_test(test_fast_scanner_matches_jansson_generated),
        cmocka_unit_test(test_fast_scanner_matches_jansson_gemma3),
        cmocka_unit_test(test_bad_files),
        cmocka_unit_test(test_bad_ids_and_text),
        cmocka_unit_test(test_special_ids_from_config),
        cmocka_unit_test(test_alloc_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
