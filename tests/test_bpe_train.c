/* BPE trainer: a tokenizer trained on a small corpus must load with
 * stetho_tokenizer_load, round-trip held-out text exactly, compress it, keep every
 * digit a token of its own, place the special tokens at their ids, be
 * deterministic, and fail cleanly on bad input and on every allocation failure. */
#include "testutil.h"

#include "stetho/bpe_train.h"
#include "stetho/tokenizer.h"
#include "stetho/toydata.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Corpus: generated English and rendered math problems; the last 40 of each are held out. */
static stetho_toy_docs g_docs;
static size_t g_train_n;
static const char **g_held;
static size_t *g_held_len, g_held_n;

static int setup(void **state) {
    (void)state;
    stetho_toy_docs gen = {0}, math = {0};
    stetho_toy_set tr, te;
    stetho_toy_math_options o = {.train_per_subject = 200, .test_per_subject = 20, .seed = 3};
    if (stetho_toy_general_generate(240, 9, &gen) || stetho_toy_math_generate(&o, &tr, &te) ||
        stetho_toy_docs_add_math(&math, &tr))
        return 1;
    g_held = calloc(80, sizeof *g_held);
    g_held_len = calloc(80, sizeof *g_held_len);
    for (size_t i = 0; i < gen.n; i++)
        if (i < 200 && stetho_toy_docs_add(&g_docs, gen.text[i], gen.len[i], false)) return 1;
    for (size_t i = 0; i < math.n; i++)
        if (i < math.n - 40 && stetho_toy_docs_add(&g_docs, math.text[i], math.len[i], true)) return 1;
    g_train_n = g_docs.n;
    for (size_t i = 200; i < 240; i++) stetho_toy_docs_add(&g_docs, gen.text[i], gen.len[i], false);
    for (size_t i = math.n - 40; i < math.n; i++) stetho_toy_docs_add(&g_docs, math.text[i], math.len[i], true);
    for (size_t i = g_train_n; i < g_docs.n; i++) {
        g_held[g_held_n] = g_docs.text[i];
        g_held_len[g_held_n++] = g_docs.len[i];
    }
    stetho_toy_docs_free(&gen);
    stetho_toy_docs_free(&math);
    stetho_toy_set_free(&tr);
    stetho_toy_set_free(&te);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    stetho_toy_docs_free(&g_docs);
    free(g_held);
    free(g_held_len);
    return 0;
}

static const char *train_save(const char *tag, int vocab) {
    stetho_bpe_options o = {.vocab_size = vocab};
    stetho_bpe_model *m;
    stetho_status st = stetho_bpe_train((const char *const *)g_docs.text, g_docs.len, g_train_n, &o, &m);
    if (st) fprintf(stderr, "%s\n", stetho_last_error());
    assert_int_equal(st, STETHO_OK);
    assert_int_equal(stetho_bpe_vocab_size(m), vocab);
    assert_true(stetho_bpe_n_merges(m) >= vocab - STETHO_BPE_MIN_VOCAB);
    const char *dir = tu_tmpdir(tag);
    assert_int_equal(stetho_bpe_save(m, dir), STETHO_OK);
    stetho_bpe_free(m);
    assert_int_equal(tu_count_entries(dir), 2); /* tokenizer.json, tokenizer_config.json, no temporaries */
    return dir;
}

static void test_roundtrip_and_compression(void **state) {
    (void)state;
    const char *dir = train_save("bpe_main", 512);
    stetho_tokenizer tok;
    stetho_status st = stetho_tokenizer_load(&tok, dir);
    if (st) fprintf(stderr, "%s\n", stetho_last_error());
    assert_int_equal(st, STETHO_OK);
    assert_int_equal(tok.vocab_size, 512);
    assert_int_equal(tok.pad_id, 0);
    assert_int_equal(tok.eos_id, 1);
    assert_int_equal(tok.bos_id, 2);
    assert_int_equal(stetho_tokenizer_token_to_id(&tok, "<unk>"), 3);
    assert_int_equal(stetho_tokenizer_token_to_id(&tok, "<start_of_turn>"), 4);
    assert_int_equal(stetho_tokenizer_token_to_id(&tok, "<end_of_turn>"), 5);
    for (int i = 0; i < STETHO_BPE_N_SPECIAL; i++) assert_true(stetho_tokenizer_is_special(&tok, i));

    size_t bytes = 0, toks = 0, math_bytes = 0, math_toks = 0;
    for (size_t i = 0; i < g_held_n; i++) {
        int32_t *ids;
        size_t n;
        assert_int_equal(stetho_tokenizer_encode(&tok, g_held[i], g_held_len[i], false, &ids, &n), STETHO_OK);
        char *back;
        size_t bl;
        assert_int_equal(stetho_tokenizer_decode(&tok, ids, n, false, &back, &bl), STETHO_OK);
        assert_int_equal(bl, g_held_len[i]);
        assert_memory_equal(back, g_held[i], bl);
        bytes += g_held_len[i];
        toks += n;
        if (!strncmp(g_held[i], "Problem:", 8)) {
            math_bytes += g_held_len[i];
            math_toks += n;
        }
        /* every token holding a digit is that digit alone */
        for (size_t k = 0; k < n; k++) {
            const char *t = stetho_tokenizer_id_to_token(&tok, ids[k]);
            bool digit = false;
            for (const char *c = t; *c; c++) digit |= *c >= '0' && *c <= '9';
            if (digit && strlen(t) != 1) fail_msg("token '%s' holds a digit and more", t);
        }
        free(ids);
        free(back);
    }
    printf("held-out: %zu bytes -> %zu tokens (%.2fx fewer than bytes); math %.2fx, general %.2fx\n", bytes, toks,
           (double)bytes / toks, (double)math_bytes / math_toks, (double)(bytes - math_bytes) / (toks - math_toks));
    assert_true((double)bytes / toks > 2.0);

    /* text outside the training alphabet (bytes never seen) and specials inside text */
    const char *odd = "<start_of_turn>user\nCaf\xc3\xa9 \xe2\x88\x9a 12345 \t\r\n\xf0\x9f\x99\x82<end_of_turn>\n";
    int32_t *ids;
    size_t n;
    assert_int_equal(stetho_tokenizer_encode(&tok, odd, strlen(odd), true, &ids, &n), STETHO_OK);
    assert_int_equal(ids[0], 2);
    assert_int_equal(ids[1], 4);
    char *back;
    assert_int_equal(stetho_tokenizer_decode(&tok, ids, n, false, &back, NULL), STETHO_OK);
    assert_string_equal(back, "<bos>" "<start_of_turn>user\nCaf\xc3\xa9 \xe2\x88\x9a 12345 \t\r\n\xf0\x9f\x99\x82<end_of_turn>\n");
    free(back);
    size_t digits = 0;
    for (size_t k = 0; k < n; k++) {
        const char *t = stetho_tokenizer_id_to_token(&tok, ids[k]);
        if (strlen(t) == 1 && *t >= '1' && *t <= '5') digits++;
    }
    assert_int_equal(digits, 5);
    free(ids);
    stetho_tokenizer_free(&tok);

    size_t cl;
    char *cfg = tu_read_file(tu_path(dir, "tokenizer_config.json"), &cl);
    assert_non_null(strstr(cfg, "\"chat_template\""));
    assert_non_null(strstr(cfg, "<start_of_turn>"));
    free(cfg);
}

static void test_deterministic(void **state) {
    (void)state;
    const char *a = train_save("bpe_det_a", 400), *b = train_save("bpe_det_b", 400);
    size_t la, lb;
    char *ta = tu_read_file(tu_path(a, "tokenizer.json"), &la), *tb = tu_read_file(tu_path(b, "tokenizer.json"), &lb);
    assert_int_equal(la, lb);
    assert_memory_equal(ta, tb, la);
    free(ta);
    free(tb);
}

static void test_bad_input(void **state) {
    (void)state;
    stetho_bpe_model *m = NULL;
    const char *docs[] = {"abc abc", "ab\xff"};
    size_t lens[] = {7, 3};
    stetho_bpe_options o = {.vocab_size = 300};
    assert_int_equal(stetho_bpe_train(docs, lens, 2, &o, &m), STETHO_ERR_INVALID);
    assert_null(m);
    o.vocab_size = 100;
    assert_int_equal(stetho_bpe_train(docs, lens, 1, &o, &m), STETHO_ERR_INVALID);
    /* a tiny corpus stops early: no pair is seen twice after "abc" is formed */
    o.vocab_size = 300;
    assert_int_equal(stetho_bpe_train(docs, lens, 1, &o, &m), STETHO_OK);
    assert_true(stetho_bpe_vocab_size(m) < 300);
    assert_int_equal(stetho_bpe_save(m, tu_path(tu_tmpdir("bpe_bad"), "missing/dir")), STETHO_ERR_IO);
    stetho_bpe_free(m);
}

static void test_alloc_failures(void **state) {
    (void)state;
    stetho_bpe_options o = {.vocab_size = 280};
    stetho_bpe_model *m;
    size_t n = 40; /* a slice keeps the loop short */
    stetho_fault_alloc_after(0);
    assert_int_equal(stetho_bpe_train((const char *const *)g_docs.text, g_docs.len, n, &o, &m), STETHO_OK);
    uint64_t count = stetho_fault_alloc_after(0);
    stetho_bpe_free(m);
    for (uint64_t k = 1; k <= count; k++) {
        stetho_fault_alloc_after(k);
        m = NULL;
        stetho_status st = stetho_bpe_train((const char *const *)g_docs.text, g_docs.len, n, &o, &m);
        stetho_fault_alloc_after(0);
        assert_int_equal(st, STETHO_ERR_NOMEM);
        assert_null(m);
    }
    printf("failed each of %llu allocations in turn\n", (unsigned long long)count);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_and_compression),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_alloc_failures),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
