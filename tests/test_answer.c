/* lm-eval minerva_math extraction/normalisation: every row of the reference vectors
 * (produced by lm-eval's own Python code) must match byte for byte, plus malformed
 * inputs that must not crash. */
#include "testutil.h"

#include "stetho/answer.h"
#include "stetho/jsonl.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Expected value of a pipeline field: a string, null (Python None) or an error
 * object whose type we map to a status. */
static void check_field(json_t *want, stetho_status st, const char *got, const char *id, const char *what,
                        size_t *bad) {
    bool ok;
    if (json_is_string(want)) ok = !st && got && !strcmp(got, json_string_value(want));
    else if (json_is_null(want)) ok = !st && !got;
    else {
        const char *err = json_string_value(json_object_get(want, "error"));
        ok = err && ((!strncmp(err, "TypeError", 9) && st == STETHO_ERR_INVALID) ||
                     (!strncmp(err, "AssertionError", 14) && st == STETHO_ERR_FORMAT));
    }
    if (!ok) {
        if (*bad < 10) {
            char *w = json_dumps(want, JSON_ENCODE_ANY);
            json_t *g = got ? json_string(got) : json_null();
            char *gs = json_dumps(g, JSON_ENCODE_ANY);
            fprintf(stderr, "%s %s: want %s got %s (status %d)\n", id, what, w, gs ? gs : "(invalid utf8)", st);
            free(w);
            free(gs);
            json_decref(g);
        }
        (*bad)++;
    }
}

/* Runs the boxed pipeline on `input` and checks last_boxed/boxed_content/normalized. */
static void check_boxed_row(json_t *o, const char *input, const char *id, size_t *bad) {
    char *lb = NULL, *bc = NULL, *nm = NULL;
    stetho_status st = stetho_answer_last_boxed(input, &lb);
    assert_int_equal(st, STETHO_OK);
    check_field(json_object_get(o, "last_boxed"), STETHO_OK, lb, id, "last_boxed", bad);
    stetho_status st2 = stetho_answer_remove_boxed(lb, &bc);
    check_field(json_object_get(o, "boxed_content"), st2, bc, id, "boxed_content", bad);
    stetho_status st3 = st2;
    if (!st2) st3 = stetho_answer_normalize(bc, &nm);
    check_field(json_object_get(o, "normalized"), st3, nm, id, "normalized", bad);
    free(lb);
    free(bc);
    free(nm);
}

static size_t run_vectors(const char *rel, const char *input_field, bool generation) {
    const char *base = tu_shared(rel);
    if (!base) {
        printf("skipping: %s not found (set STETHO_SHARED)\n", rel);
        skip();
    }
    stetho_jsonl_reader r;
    assert_int_equal(stetho_jsonl_open(&r, tu_path(base, rel)), STETHO_OK);
    size_t rows = 0, bad = 0;
    bool got;
    while (stetho_jsonl_next(&r, &got) == STETHO_OK && got) {
        const char *input = stetho_jsonl_string(&r, input_field);
        assert_non_null(input);
        json_t *idv = json_object_get(r.obj, "id");
        if (!idv) idv = json_object_get(r.obj, "unique_id");
        const char *id = json_string_value(idv);
        if (generation) {
            char *ex = NULL, *nm = NULL;
            stetho_status st = stetho_answer_extract(input, &ex);
            check_field(json_object_get(r.obj, "extracted"), st, ex, id, "extracted", &bad);
            if (!st) {
                st = stetho_answer_normalize(ex, &nm);
                check_field(json_object_get(r.obj, "normalized"), st, nm, id, "normalized", &bad);
            }
            free(ex);
            free(nm);
        } else {
            check_boxed_row(r.obj, input, id, &bad);
        }
        rows++;
    }
    stetho_jsonl_close(&r);
    printf("%s: %zu rows, %zu mismatching fields\n", rel, rows, bad);
    assert_true(rows > 0);
    assert_int_equal(bad, 0);
    return rows;
}

static void test_gold_vectors(void **state) {
    (void)state;
    assert_int_equal(run_vectors("reference/answers/gold_vectors_public.jsonl", "solution", false), 2485);
}

static void test_generation_vectors(void **state) {
    (void)state;
    assert_int_equal(run_vectors("reference/answers/generation_vectors_public.jsonl", "generation", true), 3109);
}

static void test_boxed_vectors(void **state) {
    (void)state;
    assert_int_equal(run_vectors("reference/answers/boxed_vectors_public.jsonl", "input", false), 313);
}

static char *extract(const char *g) {
    char *out = NULL;
    assert_int_equal(stetho_answer_extract(g, &out), STETHO_OK);
    return out;
}
static char *norm(const char *s) {
    char *out = NULL;
    assert_int_equal(stetho_answer_normalize(s, &out), STETHO_OK);
    return out;
}

#define EXPECT(call, want)                                                                                    \
    do {                                                                                                      \
        char *got_ = (call);                                                                                  \
        assert_string_equal(got_, want);                                                                      \
        free(got_);                                                                                           \
    } while (0)

/* Behaviours documented in the reference README, checked without the shared data. */
static void test_known_behaviours(void **state) {
    (void)state;
    EXPECT(extract("Final Answer: The final answer is $5$. I hope it is correct."), "$5$");
    EXPECT(extract("Final Answer: The final answer is $5$."), STETHO_ANSWER_INVALID); /* no space */
    EXPECT(extract("Final Answer: The final answer is $5$. "), "$5$");
    EXPECT(extract("Final Answer: The final answer is 42 I hope it is correct."), "4");
    EXPECT(extract("Final Answer: The final answer is 5\xC3\xA9 I hope it is correct."), "5"); /* é is one code point */
    EXPECT(extract("Final Answer: The final answer is\r5. I hope it is correct."), "5");
    EXPECT(extract("Final Answer: The final answer is 5.\nI hope it is correct."), STETHO_ANSWER_INVALID);
    EXPECT(extract("Final Answer: The final answer is \xC2\xA0" "7\xE3\x80\x80. I hope it is correct."), "7");
    EXPECT(norm("\\boxed{x = 5}"), "5}");
    EXPECT(norm("$1$ and $2$"), "1");
    EXPECT(norm("\\frac12"), "\\frac{1}{2}");
    EXPECT(norm("\\frac1{2}"), "\\frac{1}{{}2}");
    EXPECT(norm("\\fracπ2"), "\\frac{π}{2}");
    EXPECT(norm("\\sqrt\\pi"), "\\sqrt{\\}pi");
    EXPECT(norm("1,000"), "1000");
    EXPECT(norm("-1,000"), "-1,000");
    EXPECT(norm("\xD9\xA1,\xD9\xA2"), "\xD9\xA1\xD9\xA2"); /* Arabic-Indic digits are digits */
    EXPECT(norm("\xC2\xBD,\xC2\xBD"), "\xC2\xBD,\xC2\xBD"); /* ½ is not */
    EXPECT(norm("\\infty"), "\\iny");
    EXPECT(norm("1 \\text{ and } 2"), "12");
    char *lb = NULL;
    assert_int_equal(stetho_answer_last_boxed("\\boxed 5 then \\boxed{6}", &lb), STETHO_OK);
    assert_string_equal(lb, "\\boxed 5 then \\boxed{6}");
    free(lb);
    assert_int_equal(stetho_answer_last_boxed("\\boxed{5}\\boxed", &lb), STETHO_OK);
    assert_null(lb);
    char *g = NULL;
    assert_int_equal(stetho_answer_gold("so $\\boxed{\\frac{3}{4}}$.", &g), STETHO_OK);
    assert_string_equal(g, "\\frac{3}{4}");
    free(g);
    assert_int_equal(stetho_answer_gold("no box here", &g), STETHO_ERR_NOTFOUND);
    assert_null(g);
}

/* Malformed input: unbalanced braces, deep nesting, empty strings, invalid UTF-8,
 * long inputs. Nothing may crash; results stay valid UTF-8 where input was fixed. */
static void test_malformed(void **state) {
    (void)state;
    char *out = NULL;
    EXPECT(extract(""), STETHO_ANSWER_INVALID);
    EXPECT(norm(""), "");
    assert_int_equal(stetho_answer_last_boxed("", &out), STETHO_OK);
    assert_null(out);
    assert_int_equal(stetho_answer_remove_boxed(NULL, &out), STETHO_ERR_INVALID);
    assert_int_equal(stetho_answer_remove_boxed("", &out), STETHO_ERR_FORMAT);
    assert_int_equal(stetho_answer_remove_boxed("\\fbox{5}", &out), STETHO_ERR_FORMAT);
    assert_int_equal(stetho_answer_last_boxed("\\boxed{{{{{5}", &out), STETHO_OK);
    assert_null(out);
    assert_int_equal(stetho_answer_last_boxed("\\boxed}}}{", &out), STETHO_OK);
    assert_null(out);
    /* invalid UTF-8: lone continuation, truncated sequence, overlong, surrogate */
    EXPECT(norm("5\x80\xC3"), "5\xEF\xBF\xBD\xEF\xBF\xBD");
    EXPECT(extract("Final Answer: The final answer is \xC0\xAF\xED\xA0\x80. I hope it is correct."),
           "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
    /* deep nesting and long inputs */
    size_t n = 200000;
    char *big = malloc(2 * n + 16);
    assert_non_null(big);
    memcpy(big, "\\boxed", 6);
    for (size_t i = 0; i < n; i++) big[6 + i] = '{';
    for (size_t i = 0; i < n; i++) big[6 + n + i] = '}';
    big[6 + 2 * n] = '\0';
    assert_int_equal(stetho_answer_last_boxed(big, &out), STETHO_OK);
    assert_non_null(out);
    assert_int_equal(strlen(out), 6 + 2 * n);
    free(out);
    out = norm(big);
    assert_int_equal(strlen(out), 2 * n - 2); /* \\boxed{...} unwrapped once */
    free(out);
    for (size_t i = 0; i < 2 * n; i++) big[i] = (i % 7 == 0) ? '$' : 'a';
    big[2 * n] = '\0';
    out = norm(big);
    assert_non_null(out);
    free(out);
    out = extract(big);
    assert_string_equal(out, STETHO_ANSWER_INVALID);
    free(out);
    free(big);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gold_vectors),
        cmocka_unit_test(test_generation_vectors),
        cmocka_unit_test(test_boxed_vectors),
        cmocka_unit_test(test_known_behaviours),
        cmocka_unit_test(test_malformed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
