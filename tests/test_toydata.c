/* The tiny world's data: every generated gold answer must grade correct against
 * itself with the project's grader, the boxed answer must equal the Final Answer
 * line, train and test must share no fact and no problem, each subject must have
 * its test quota, and everything must be deterministic in the seed. */
#include "testutil.h"

#include "stetho/answer.h"
#include "stetho/jsonl.h"
#include "stetho/latex.h"
#include "stetho/tokenizer.h"
#include "stetho/toydata.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static stetho_toy_set g_train, g_test;

static int setup(void **state) {
    (void)state;
    stetho_toy_math_options o = {.train_per_subject = 1000, .test_per_subject = 300, .seed = 7};
    stetho_status st = stetho_toy_math_generate(&o, &g_train, &g_test);
    if (st) fprintf(stderr, "%s\n", stetho_last_error());
    return st != STETHO_OK;
}

static int teardown(void **state) {
    (void)state;
    stetho_toy_set_free(&g_train);
    stetho_toy_set_free(&g_test);
    return 0;
}

static const char *final_tail = ". I hope it is correct.";

/* The grader's view of one problem: gold from the box, candidate from the final line. */
static void check_problem(const stetho_toy_problem *p, size_t *bad) {
    char *boxed = NULL, *gold_raw = NULL, *gold = NULL, *cand_raw = NULL, *cand = NULL;
    assert_int_equal(stetho_answer_last_boxed(p->solution, &boxed), STETHO_OK);
    assert_non_null(boxed);
    assert_int_equal(stetho_answer_remove_boxed(boxed, &gold_raw), STETHO_OK);
    assert_int_equal(stetho_answer_gold(p->solution, &gold), STETHO_OK);
    assert_int_equal(stetho_answer_extract(p->solution, &cand_raw), STETHO_OK);
    assert_int_equal(stetho_answer_normalize(cand_raw, &cand), STETHO_OK);
    bool ok = false;
    assert_int_equal(stetho_latex_grade(gold_raw, gold, cand_raw, cand, &ok), STETHO_OK);
    /* the final line holds exactly "$" boxed "$" */
    size_t gl = strlen(gold_raw);
    bool same = strlen(cand_raw) == gl + 2 && cand_raw[0] == '$' && cand_raw[gl + 1] == '$' &&
                !memcmp(cand_raw + 1, gold_raw, gl) && !strcmp(gold_raw, p->answer);
    size_t sl = strlen(p->solution), tl = strlen(final_tail);
    bool ends = sl > tl && !strcmp(p->solution + sl - tl, final_tail);
    if (!ok || !same || !ends || p->level < 1 || p->level > 5) {
        if ((*bad)++ < 10)
            fprintf(stderr, "bad problem (%s): '%s' gold '%s' cand '%s' -> %s\n", p->key, p->answer, gold, cand,
                    ok ? "graded correct" : "graded wrong");
    }
    free(boxed);
    free(gold_raw);
    free(gold);
    free(cand_raw);
    free(cand);
}

static void test_gold_answers_grade(void **state) {
    (void)state;
    size_t bad = 0;
    for (size_t i = 0; i < g_train.n; i++) check_problem(&g_train.items[i], &bad);
    for (size_t i = 0; i < g_test.n; i++) check_problem(&g_test.items[i], &bad);
    printf("graded %zu train + %zu test gold answers against themselves: %zu bad\n", g_train.n, g_test.n, bad);
    assert_int_equal(bad, 0);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Sorted copy of one field of a set. */
static char **sorted_field(const stetho_toy_set *s, bool key) {
    char **v = malloc((s->n + 1) * sizeof *v);
    for (size_t i = 0; i < s->n; i++) v[i] = key ? s->items[i].key : s->items[i].problem;
    qsort(v, s->n, sizeof *v, cmp_str);
    return v;
}

static size_t n_common(char **a, size_t na, char **b, size_t nb) {
    size_t i = 0, j = 0, c = 0;
    while (i < na && j < nb) {
        int d = strcmp(a[i], b[j]);
        if (!d) {
            c++;
            i++;
            j++;
        } else if (d < 0) i++;
        else j++;
    }
    return c;
}

static void test_split_and_quota(void **state) {
    (void)state;
    size_t tr[STETHO_TOY_N_SUBJECTS] = {0}, te[STETHO_TOY_N_SUBJECTS] = {0};
    size_t lv[6] = {0}, tmpl_test[STETHO_TOY_N_SUBJECTS][8] = {{0}};
    for (size_t i = 0; i < g_train.n; i++) tr[g_train.items[i].subject]++;
    for (size_t i = 0; i < g_test.n; i++) {
        te[g_test.items[i].subject]++;
        lv[g_test.items[i].level]++;
        tmpl_test[g_test.items[i].subject][g_test.items[i].template_id]++;
    }
    for (int s = 0; s < STETHO_TOY_N_SUBJECTS; s++) {
        printf("%-26s train %4zu test %3zu (per template:", stetho_toy_subject_name(s), tr[s], te[s]);
        for (int t = 0; t < 8 && tmpl_test[s][t]; t++) printf(" %zu", tmpl_test[s][t]);
        printf(")\n");
        assert_int_equal(te[s], 300);
        assert_int_equal(tr[s], 1000);
        for (int t = 0; t < 5; t++) assert_true(tmpl_test[s][t] >= 3); /* every template is tested */
        for (int t = 0; t < 8; t++) assert_true(tmpl_test[s][t] <= 3 * 60); /* none dominates (cap 3 x 300/templates) */
    }
    for (int l = 1; l <= 5; l++) assert_true(lv[l] >= 200); /* every level is well represented */
    char **ktr = sorted_field(&g_train, true), **kte = sorted_field(&g_test, true);
    char **ptr = sorted_field(&g_train, false), **pte = sorted_field(&g_test, false);
    assert_int_equal(n_common(ktr, g_train.n, kte, g_test.n), 0);
    assert_int_equal(n_common(ptr, g_train.n, pte, g_test.n), 0);
    for (size_t i = 1; i < g_train.n; i++) assert_true(strcmp(ptr[i - 1], ptr[i]) != 0);
    for (size_t i = 1; i < g_test.n; i++) assert_true(strcmp(pte[i - 1], pte[i]) != 0);
    free(ktr);
    free(kte);
    free(ptr);
    free(pte);
}

static void test_deterministic(void **state) {
    (void)state;
    stetho_toy_set a, b, c, d;
    stetho_toy_math_options o = {.train_per_subject = 1000, .test_per_subject = 300, .seed = 7};
    assert_int_equal(stetho_toy_math_generate(&o, &a, &b), STETHO_OK);
    assert_int_equal(a.n, g_train.n);
    assert_int_equal(b.n, g_test.n);
    for (size_t i = 0; i < a.n; i++) assert_string_equal(a.items[i].solution, g_train.items[i].solution);
    for (size_t i = 0; i < b.n; i++) assert_string_equal(b.items[i].problem, g_test.items[i].problem);
    o.seed = 8;
    assert_int_equal(stetho_toy_math_generate(&o, &c, &d), STETHO_OK);
    size_t diff = 0;
    for (size_t i = 0; i < d.n && i < b.n; i++) diff += strcmp(d.items[i].problem, b.items[i].problem) != 0;
    assert_true(diff > b.n / 2);
    stetho_toy_set_free(&a);
    stetho_toy_set_free(&b);
    stetho_toy_set_free(&c);
    stetho_toy_set_free(&d);
}

static void test_jsonl_roundtrip(void **state) {
    (void)state;
    const char *dir = tu_tmpdir("toy_jsonl"), *path = tu_path(dir, "test.jsonl");
    assert_int_equal(stetho_toy_math_write(&g_test, "test", path), STETHO_OK);
    assert_int_equal(tu_count_entries(dir), 1); /* no temporary left */
    stetho_jsonl_reader r;
    assert_int_equal(stetho_jsonl_open(&r, path), STETHO_OK);
    bool got;
    size_t n = 0;
    while (stetho_jsonl_next(&r, &got) == STETHO_OK && got) {
        const stetho_toy_problem *p = &g_test.items[n];
        assert_string_equal(stetho_jsonl_string(&r, "problem"), p->problem);
        assert_string_equal(stetho_jsonl_string(&r, "solution"), p->solution);
        assert_string_equal(stetho_jsonl_string(&r, "type"), stetho_toy_subject_type(p->subject));
        assert_string_equal(stetho_jsonl_string(&r, "subject"), stetho_toy_subject_name(p->subject));
        char lv[16];
        snprintf(lv, sizeof lv, "Level %d", p->level);
        assert_string_equal(stetho_jsonl_string(&r, "level"), lv);
        assert_non_null(stetho_jsonl_string(&r, "unique_id"));
        n++;
    }
    stetho_jsonl_close(&r);
    assert_int_equal(n, g_test.n);
    /* MATH's type names */
    assert_string_equal(stetho_toy_subject_type(STETHO_TOY_COUNTING), "Counting & Probability");
    assert_string_equal(stetho_toy_subject_type(STETHO_TOY_INTERMEDIATE), "Intermediate Algebra");
    assert_string_equal(stetho_toy_subject_name(STETHO_TOY_NUMBER_THEORY), "number_theory");
}

static void test_mix_ratio(void **state) {
    (void)state;
    stetho_toy_docs gen = {0}, math = {0}, mix = {0}, mix2 = {0};
    assert_int_equal(stetho_toy_general_generate(300, 1, &gen), STETHO_OK);
    assert_int_equal(stetho_toy_docs_add_math(&math, &g_test), STETHO_OK);
    const size_t total = 2u << 20;
    assert_int_equal(stetho_toy_mix(&gen, &math, 0.3, total, 5, &mix), STETHO_OK);
    size_t bm = 0, ba = 0, half_m = 0, half_a = 0;
    for (size_t i = 0; i < mix.n; i++) {
        ba += mix.len[i];
        if (mix.is_math[i]) bm += mix.len[i];
        if (i == mix.n / 2) {
            half_m = bm;
            half_a = ba;
        }
        assert_true(mix.is_math[i] ? strncmp(mix.text[i], "Problem:\n", 9) == 0 : strstr(mix.text[i], "Problem:") == NULL);
    }
    double f = (double)bm / (double)ba, fh = (double)half_m / (double)half_a;
    printf("mix: %zu docs, %zu bytes, math share %.3f overall, %.3f in the first half\n", mix.n, ba, f, fh);
    assert_true(ba + mix.n >= total && ba < total + 10000); /* the mix counts a separator per document */
    assert_true(f > 0.29 && f < 0.31);
    assert_true(fh > 0.29 && fh < 0.31);
    assert_int_equal(stetho_toy_mix(&gen, &math, 0.3, total, 5, &mix2), STETHO_OK);
    assert_int_equal(mix2.n, mix.n);
    for (size_t i = 0; i < mix.n; i++) assert_string_equal(mix.text[i], mix2.text[i]);
    stetho_toy_docs_free(&mix2);
    assert_int_equal(stetho_toy_mix(&gen, &math, 1.5, total, 5, &mix2), STETHO_ERR_INVALID);
    stetho_toy_docs empty = {0};
    assert_int_equal(stetho_toy_mix(&gen, &empty, 0.3, total, 5, &mix2), STETHO_ERR_INVALID);
    /* generated general text has no digits (it stands in for non-mathematical text) */
    for (size_t i = 0; i < gen.n; i++)
        for (size_t k = 0; k < gen.len[i]; k++) assert_false(gen.text[i][k] >= '0' && gen.text[i][k] <= '9');
    stetho_toy_docs_free(&gen);
    stetho_toy_docs_free(&math);
    stetho_toy_docs_free(&mix);
}

static void print_report(const char *label, const stetho_toy_data_report *r) {
    printf("%s: general text %s: %zu docs, %zu bytes, %zu tokens; %zu prompts; vocab %d (%d merges), %.2f bytes/token\n",
           label, r->general_generated ? "generated" : "from shared", r->general_docs, r->general_bytes,
           r->general_tokens, r->prompt_docs, r->vocab_size, r->n_merges, r->bytes_per_token);
    size_t tr = 0, te = 0;
    for (int s = 0; s < STETHO_TOY_N_SUBJECTS; s++) {
        tr += r->train[s];
        te += r->test[s];
    }
    printf("%s: math train %zu problems, %zu bytes, %zu tokens; test %zu problems, %zu tokens\n", label, tr,
           r->math_train_bytes, r->math_train_tokens, te, r->math_test_tokens);
}

static void check_written(const char *dir) {
    const char *files[] = {"data/math/train.jsonl", "data/math/test.jsonl", "data/general/general_text.jsonl",
                           "data/general/general_prompts.jsonl", "tokenizer/tokenizer.json",
                           "tokenizer/tokenizer_config.json"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) assert_true(tu_exists(tu_path(dir, files[i])));
    assert_int_equal(tu_count_entries(tu_path(dir, "data/math")), 2);
    assert_int_equal(tu_count_entries(tu_path(dir, "tokenizer")), 2);
    stetho_tokenizer tok;
    assert_int_equal(stetho_tokenizer_load(&tok, tu_path(dir, "tokenizer")), STETHO_OK);
    assert_int_equal(tok.bos_id, 2);
    assert_int_equal(tok.eos_id, 1);
    stetho_tokenizer_free(&tok);
}

static void test_write_data(void **state) {
    (void)state;
    const char *shared = tu_shared("data/general/general_text.jsonl");
    const char *general_dir = shared ? tu_path(shared, "data/general") : NULL;
    const char *dir = tu_path(tu_tmpdir("toy_data"), "world");
    stetho_toy_data_report r;
    stetho_status st = stetho_toy_write_data(dir, 1, true, general_dir, &r);
    if (st) fprintf(stderr, "%s\n", stetho_last_error());
    assert_int_equal(st, STETHO_OK);
    print_report("quick", &r);
    check_written(dir);
    assert_true(r.general_generated == (general_dir == NULL));
    for (int s = 0; s < STETHO_TOY_N_SUBJECTS; s++) assert_int_equal(r.test[s], 300);
    assert_true(r.bytes_per_token > 2.0);
    /* the same seed writes the same bytes */
    const char *dir2 = tu_path(tu_tmpdir("toy_data2"), "world");
    assert_int_equal(stetho_toy_write_data(dir2, 1, true, general_dir, NULL), STETHO_OK);
    const char *cmp[] = {"data/math/train.jsonl", "data/math/test.jsonl", "tokenizer/tokenizer.json"};
    for (size_t i = 0; i < 3; i++) {
        size_t la, lb;
        char *a = tu_read_file(tu_path(dir, cmp[i]), &la), *b = tu_read_file(tu_path(dir2, cmp[i]), &lb);
        assert_int_equal(la, lb);
        assert_memory_equal(a, b, la);
        free(a);
        free(b);
    }
}

static void test_write_data_generated_general(void **state) {
    (void)state;
    const char *dir = tu_path(tu_tmpdir("toy_data_gen"), "world");
    stetho_toy_data_report r;
    assert_int_equal(stetho_toy_write_data(dir, 2, true, tu_tmpdir("toy_no_general"), &r), STETHO_OK);
    print_report("quick, generated general text", &r);
    assert_true(r.general_generated);
    assert_int_equal(r.general_docs, 500);
    check_written(dir);
}

/* ---- arithmetic drills: every fact checked by an independent little evaluator */

typedef struct {
    const char *p;
    bool bad;
} ev;

static long ev_sum(ev *e);

static long ev_atom(ev *e) {
    long v = 0;
    if (!strncmp(e->p, "\\frac{", 6)) {
        e->p += 6;
        long a = ev_sum(e);
        if (strncmp(e->p, "}{", 2)) return e->bad = true, 0;
        e->p += 2;
        long b = ev_sum(e);
        if (*e->p != '}' || b == 0 || a % b) return e->bad = true, 0;
        e->p++;
        v = a / b;
    } else if (*e->p == '(') {
        e->p++;
        v = ev_sum(e);
        if (*e->p != ')') return e->bad = true, 0;
        e->p++;
    } else {
        bool neg = *e->p == '-';
        if (neg) e->p++;
        if (*e->p < '0' || *e->p > '9') return e->bad = true, 0;
        while (*e->p >= '0' && *e->p <= '9') v = 10 * v + (*e->p++ - '0');
        if (neg) v = -v;
    }
    if (!strncmp(e->p, "^2", 2)) e->p += 2, v *= v;
    return v;
}

/* products: "a \times b", "a(b)", "(a)(b)" */
static long ev_prod(ev *e) {
    long v = ev_atom(e);
    for (;;) {
        if (!strncmp(e->p, " \\times ", 8)) e->p += 8, v *= ev_atom(e);
        else if (*e->p == '(') v *= ev_atom(e);
        else return v;
    }
}

static long ev_sum(ev *e) {
    long v = ev_prod(e);
    for (;;) {
        if (!strncmp(e->p, " + ", 3)) e->p += 3, v += ev_prod(e);
        else if (!strncmp(e->p, " - ", 3)) e->p += 3, v -= ev_prod(e);
        else return v;
    }
}

static void test_drills(void **state) {
    (void)state;
    stetho_toy_docs d = {0}, d2 = {0};
    assert_int_equal(stetho_toy_drills_generate(50000, 3, &d), STETHO_OK);
    size_t bytes = 0, facts = 0;
    int ops[4] = {0}; /* +, -, \times or juxtaposition, \frac */
    for (size_t i = 0; i < d.n; i++) {
        assert_true(d.is_math[i]);
        bytes += d.len[i];
        char *text = strndup(d.text[i], d.len[i]);
        assert_non_null(text);
        for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n"), facts++) {
            size_t n = strlen(line);
            assert_true(n > 2 && line[0] == '$' && line[n - 1] == '$');
            line[n - 1] = 0;
            char *eq = strstr(line, " = ");
            assert_non_null(eq);
            *eq = 0;
            ev l = {line + 1, false}, r = {eq + 3, false};
            long lv = ev_sum(&l), rv = ev_sum(&r);
            if (l.bad || r.bad || *l.p || *r.p || lv != rv) fail_msg("drill fact wrong: %s = %s", line + 1, eq + 3);
            ops[0] += strstr(line, " + ") != NULL;
            ops[1] += strstr(line, " - ") != NULL;
            ops[2] += strstr(line, "\\times") || strstr(line, ")(") || strchr(line + 2, '(');
            ops[3] += strstr(line, "\\frac") != NULL;
        }
        free(text);
    }
    assert_true(bytes >= 50000 && bytes < 50000 + 2000);
    assert_true(facts > 2000);
    for (int k = 0; k < 4; k++) assert_true(ops[k] > (int)facts / 20);
    /* deterministic in the seed */
    assert_int_equal(stetho_toy_drills_generate(50000, 3, &d2), STETHO_OK);
    assert_int_equal(d2.n, d.n);
    for (size_t i = 0; i < d.n; i++) assert_memory_equal(d.text[i], d2.text[i], d.len[i]);
    stetho_toy_docs_free(&d);
    stetho_toy_docs_free(&d2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gold_answers_grade), cmocka_unit_test(test_split_and_quota),
        cmocka_unit_test(test_deterministic),      cmocka_unit_test(test_jsonl_roundtrip),
        cmocka_unit_test(test_mix_ratio),          cmocka_unit_test(test_write_data),
        cmocka_unit_test(test_write_data_generated_general), cmocka_unit_test(test_drills),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
