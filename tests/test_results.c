/* Results and samples files: the writer's output has lm-eval's shape, the reader
 * gets back what was written, and the comparison of two runs gives the statistics
 * computed independently here. Fixtures are written with the writer. */
#include "testutil.h"

#include "stetho/results.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define assert_close(got, want, tol)                                                                      \
    do {                                                                                                  \
        double g_ = (got), w_ = (want);                                                                   \
        if (!(fabs(g_ - w_) <= (tol))) fail_msg("%s = %.17g, want %.17g (tol %g)", #got, g_, w_, (double)(tol)); \
    } while (0)

static const char *const until[] = {"Problem:"};
static const stetho_gen_kwargs gen = {until, 1, 256, false, 0.0};

/* A run directory: tasks with verdicts v[t][i] for doc_ids ids[t][i]. */
typedef struct {
    const char *name;
    size_t n;
    const uint8_t *verdicts; /* [n] */
    const int64_t *ids;      /* [n] or NULL: 0..n-1 */
} task_fix;

static void write_run(const char *dir, const task_fix *t, size_t nt, const char *ts, bool with_samples) {
    stetho_results_task_spec specs[8];
    for (size_t k = 0; k < nt; k++) {
        uint64_t correct = 0;
        if (with_samples) {
            stetho_samples_writer w;
            assert_int_equal(stetho_samples_writer_open(&w, dir, t[k].name, ts, &gen), STETHO_OK);
            for (size_t i = 0; i < t[k].n; i++) {
                char prob[64], gold[32];
                snprintf(prob, sizeof prob, "What is %zu + 1?", i);
                snprintf(gold, sizeof gold, "%zu", i + 1);
                stetho_sample s = {.doc_id = t[k].ids ? t[k].ids[i] : (int64_t)i,
                                   .problem = prob, .level = "Level 2", .type = "Algebra",
                                   .solution = "$\\boxed{1}$", .target = "$\\boxed{1}$",
                                   .prompt = "Problem:\nWhat?\n\nSolution:", .generation = "The answer is 1.",
                                   .extracted = gold, .normalized = gold, .gold = gold,
                                   .correct = t[k].verdicts[i] != 0};
                assert_int_equal(stetho_samples_writer_add(&w, &s), STETHO_OK);
            }
            assert_int_equal(stetho_samples_writer_close(&w), STETHO_OK);
        }
        for (size_t i = 0; i < t[k].n; i++) correct += t[k].verdicts[i];
        specs[k] = (stetho_results_task_spec){t[k].name, correct, t[k].n, t[k].n + 10, 4, 1.0};
    }
    stetho_results_spec rs = {.tasks = specs, .n_tasks = nt, .group = "minerva_math", .model = "stetho",
                              .model_args = "pretrained=/m", .batch_size = 8, .limit = -1, .gen = &gen,
                              .timestamp = ts};
    char *path = NULL;
    assert_int_equal(stetho_results_write(dir, &rs, &path), STETHO_OK);
    assert_non_null(path);
    free(path);
}

/* The Number Theory figure as paired verdicts: 140 both right, 20 only A, 73 only B,
 * 307 neither -> A 160/540, B 213/540. */
static uint8_t nt_a[540], nt_b[540], alg_a[30], alg_b[30];
static void make_verdicts(void) {
    for (int i = 0; i < 540; i++) {
        nt_a[i] = i < 140 || (i >= 140 && i < 160);
        nt_b[i] = i < 140 || (i >= 160 && i < 233);
    }
    for (int i = 0; i < 30; i++) {
        alg_a[i] = i % 3 == 0; /* 10/30 */
        alg_b[i] = i % 3 != 2; /* 20/30, 10 newly right (i%3==1), 0 lost */
    }
}

static void test_write_shape(void **state) {
    (void)state;
    make_verdicts();
    const char *dir = tu_tmpdir("results-shape");
    task_fix t[] = {{"minerva_math_num_theory", 540, nt_a, NULL}, {"minerva_math_algebra", 30, alg_a, NULL}};
    write_run(dir, t, 2, "2025-01-02T03-04-05.000006", true);
    json_error_t je;
    json_t *root = json_load_file(tu_path(dir, "results_2025-01-02T03-04-05.000006.json"), 0, &je);
    assert_non_null(root);
    json_t *r = json_object_get(json_object_get(root, "results"), "minerva_math_num_theory");
    assert_close(json_real_value(json_object_get(r, "exact_match,none")), 160.0 / 540, 1e-15);
    double p = 160.0 / 540;
    assert_close(json_real_value(json_object_get(r, "exact_match_stderr,none")), sqrt(p * (1 - p) / 539), 1e-15);
    assert_string_equal(json_string_value(json_object_get(r, "alias")), " - minerva_math_num_theory");
    json_t *ns = json_object_get(json_object_get(root, "n-samples"), "minerva_math_algebra");
    assert_int_equal(json_integer_value(json_object_get(ns, "effective")), 30);
    assert_int_equal(json_integer_value(json_object_get(ns, "original")), 40);
    /* group weighted by size, and lm-eval's pooled stderr computed here from its formula */
    json_t *g = json_object_get(json_object_get(root, "groups"), "minerva_math");
    assert_close(json_real_value(json_object_get(g, "exact_match,none")), 170.0 / 570, 1e-15);
    double pa = 10.0 / 30, sa2 = pa * (1 - pa) / 29, sn2 = p * (1 - p) / 539;
    double pooled = sqrt((539.0 * 540 * sn2 + 29.0 * 30 * sa2) / (570 - 2) / 570);
    assert_close(json_real_value(json_object_get(g, "exact_match_stderr,none")), pooled, 1e-15);
    assert_true(json_is_array(json_object_get(json_object_get(root, "group_subtasks"), "minerva_math")));
    assert_int_equal(json_integer_value(json_object_get(json_object_get(root, "n-shot"), "minerva_math_algebra")), 4);
    assert_non_null(json_object_get(json_object_get(root, "config"), "model_args"));
    json_decref(root);
    /* a samples line carries lm-eval's fields */
    const char *sp = tu_path(dir, "samples_minerva_math_algebra_2025-01-02T03-04-05.000006.jsonl");
    char *text = tu_read_file(sp, NULL);
    assert_non_null(text);
    *strchr(text, '\n') = '\0';
    json_t *s = json_loads(text, 0, &je);
    assert_non_null(s);
    static const char *fields[] = {"doc_id", "doc", "target", "arguments", "resps", "filtered_resps", "exact_match",
                                   "extracted", "normalized", "gold"};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) assert_non_null(json_object_get(s, fields[i]));
    assert_int_equal(json_integer_value(json_object_get(s, "exact_match")), 1);
    assert_string_equal(json_string_value(json_object_get(json_object_get(s, "doc"), "level")), "Level 2");
    json_t *a1 = json_object_get(json_object_get(json_object_get(s, "arguments"), "gen_args_0"), "arg_1");
    assert_int_equal(json_integer_value(json_object_get(a1, "max_gen_toks")), 256);
    assert_string_equal(json_string_value(json_array_get(json_object_get(s, "filtered_resps"), 0)), "The answer is 1.");
    json_decref(s);
    free(text);
}

static void test_read_back(void **state) {
    (void)state;
    make_verdicts();
    const char *dir = tu_tmpdir("results-read");
    int64_t ids[30];
    for (int i = 0; i < 30; i++) ids[i] = 29 - i; /* written in reverse; the reader sorts */
    task_fix t[] = {{"minerva_math_num_theory", 540, nt_a, NULL}, {"minerva_math_algebra", 30, alg_a, ids}};
    write_run(dir, t, 2, "2025-01-01T00-00-00.000000", false);
    write_run(dir, t, 2, "2025-01-02T00-00-00.000000", true); /* newer */
    stetho_results r;
    assert_int_equal(stetho_results_read(dir, true, &r), STETHO_OK);
    assert_non_null(strstr(r.path, "results_2025-01-02T00-00-00.000000.json"));
    assert_string_equal(r.group, "minerva_math");
    assert_int_equal(r.n_tasks, 2);
    assert_string_equal(r.tasks[0].name, "minerva_math_algebra"); /* sorted */
    const stetho_results_task *a = stetho_results_task_get(&r, "minerva_math_algebra");
    assert_int_equal(a->n, 30);
    assert_int_equal(a->n_correct, 10);
    assert_int_equal(a->n_samples, 30);
    for (int i = 0; i < 30; i++) {
        assert_int_equal(a->doc_ids[i], i);
        assert_int_equal(a->correct[i], alg_a[29 - i]);
    }
    const stetho_results_task *n = stetho_results_task_get(&r, "minerva_math_num_theory");
    assert_int_equal(n->n_correct, 160);
    assert_close(n->stderr, sqrt((160.0 / 540) * (380.0 / 540) / 539), 1e-15);
    assert_null(stetho_results_task_get(&r, "minerva_math"));
    stetho_results_free(&r);
    /* lm-eval's DIR/<model>/ layout, and a plain samples_<task>.jsonl */
    const char *top = tu_tmpdir("results-nested");
    const char *sub = tu_path(top, "my__model");
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", sub);
    assert_int_equal(system(cmd), 0);
    write_run(sub, t, 1, "2025-02-02T00-00-00.000000", false);
    stetho_samples_writer w;
    assert_int_equal(stetho_samples_writer_open(&w, sub, "minerva_math_num_theory", NULL, NULL), STETHO_OK);
    for (int i = 0; i < 540; i++) {
        stetho_sample s = {.doc_id = i, .correct = nt_a[i]};
        assert_int_equal(stetho_samples_writer_add(&w, &s), STETHO_OK);
    }
    assert_int_equal(stetho_samples_writer_close(&w), STETHO_OK);
    assert_int_equal(stetho_results_read(top, true, &r), STETHO_OK);
    assert_int_equal(r.n_tasks, 1);
    assert_int_equal(r.tasks[0].n_samples, 540);
    assert_non_null(strstr(r.tasks[0].samples_path, "samples_minerva_math_num_theory.jsonl"));
    stetho_results_free(&r);
}

/* Binomial two-sided exact p in long double, summed term by term. */
static double exact_mcnemar(uint64_t b, uint64_t c) {
    uint64_t n = b + c, m = b < c ? b : c;
    long double s = 0;
    for (uint64_t i = 0; i <= m; i++)
        s += expl(lgammal(n + 1.0L) - lgammal(i + 1.0L) - lgammal(n - i + 1.0L) - n * logl(2.0L));
    return (double)fminl(1, 2 * s);
}

static void test_compare(void **state) {
    (void)state;
    make_verdicts();
    const char *da = tu_tmpdir("cmp-a"), *db = tu_tmpdir("cmp-b");
    task_fix ta[] = {{"minerva_math_num_theory", 540, nt_a, NULL}, {"minerva_math_algebra", 30, alg_a, NULL}};
    task_fix tb[] = {{"minerva_math_num_theory", 540, nt_b, NULL}, {"minerva_math_algebra", 30, alg_b, NULL}};
    write_run(da, ta, 2, "2025-01-01T00-00-00.000000", true);
    write_run(db, tb, 2, "2025-01-01T00-00-00.000000", true);
    stetho_results a, b;
    assert_int_equal(stetho_results_read(da, true, &a), STETHO_OK);
    assert_int_equal(stetho_results_read(db, true, &b), STETHO_OK);
    stetho_comparison c;
    assert_int_equal(stetho_results_compare(&a, &b, 0.05, &c), STETHO_OK);
    assert_int_equal(c.n_rows, 3);
    const stetho_cmp_row *alg = &c.rows[0], *nt = &c.rows[1], *all = &c.rows[2];
    assert_string_equal(nt->task, "minerva_math_num_theory");
    assert_true(nt->paired);
    assert_int_equal(nt->mcnemar.b, 20);
    assert_int_equal(nt->mcnemar.c, 73);
    assert_int_equal(nt->both_correct, 140);
    assert_int_equal(nt->both_wrong, 307);
    assert_close(nt->z.z_unpooled, 3.41, 0.005);
    assert_close(nt->z.p_unpooled, 0.0007, 0.0000503);
    assert_close(nt->diff, 53.0 / 540, 1e-15);
    assert_close(nt->mcnemar.p_exact / exact_mcnemar(20, 73), 1, 1e-10);
    assert_int_equal(nt->test, STETHO_CMP_TEST_MCNEMAR);
    /* algebra: b = 0, c = 10 -> p = 2/1024 */
    assert_close(alg->mcnemar.p_exact, 2.0 / 1024, 1e-18);
    /* Holm over the two subjects */
    double p1 = nt->mcnemar.p_exact, p2 = alg->mcnemar.p_exact;
    double lo = fmin(p1, p2), hi = fmax(p1, p2);
    double want_lo = fmin(1, 2 * lo), want_hi = fmax(want_lo, hi);
    assert_close(fmin(nt->p_holm, alg->p_holm), want_lo, 1e-18);
    assert_close(fmax(nt->p_holm, alg->p_holm), want_hi, 1e-18);
    assert_int_equal(nt->mark, 1);
    assert_int_equal(alg->mark, 1);
    /* overall pools the counts and the discordant pairs */
    assert_true(all->overall);
    assert_string_equal(all->task, "minerva_math");
    assert_int_equal(all->k_a, 170);
    assert_int_equal(all->k_b, 233);
    assert_int_equal(all->mcnemar.b, 20);
    assert_int_equal(all->mcnemar.c, 83);
    stetho_interval nw;
    assert_int_equal(stetho_stats_newcombe(233, 570, 170, 570, STETHO_Z95, &nw), STETHO_OK);
    assert_close(all->ci_diff.lo, nw.lo, 1e-15);
    assert_close(all->ci_diff.hi, nw.hi, 1e-15);
    /* the JSON carries the same numbers */
    char *text;
    assert_int_equal(stetho_comparison_json(&c, &text), STETHO_OK);
    json_error_t je;
    json_t *j = json_loads(text, 0, &je);
    assert_non_null(j);
    json_t *row = json_array_get(json_object_get(j, "rows"), 1);
    assert_close(json_real_value(json_object_get(row, "z_unpooled")), nt->z.z_unpooled, 0);
    assert_string_equal(json_string_value(json_object_get(row, "mark")), "+");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(row, "mcnemar"), "only_b")), 73);
    json_decref(j);
    free(text);
    double z_nt = nt->z.z_unpooled;
    stetho_comparison_free(&c);
    /* reversed: degradations */
    assert_int_equal(stetho_results_compare(&b, &a, 0.05, &c), STETHO_OK);
    assert_int_equal(c.rows[1].mark, -1);
    assert_close(c.rows[1].z.z_unpooled, -z_nt, 1e-12);
    /* a tiny alpha leaves algebra (p_holm ~ 0.004) unmarked */
    stetho_comparison_free(&c);
    assert_int_equal(stetho_results_compare(&a, &b, 0.001, &c), STETHO_OK);
    assert_int_equal(c.rows[0].mark, 0);
    assert_close(c.z, 3.2905267314918945, 1e-12);
    stetho_comparison_free(&c);
    stetho_results_free(&a);
    stetho_results_free(&b);
    /* without samples: unpaired, decided by the unpooled z */
    assert_int_equal(stetho_results_read(da, false, &a), STETHO_OK);
    assert_int_equal(stetho_results_read(db, false, &b), STETHO_OK);
    assert_int_equal(stetho_results_compare(&a, &b, 0.05, &c), STETHO_OK);
    assert_false(c.rows[1].paired);
    assert_int_equal(c.rows[1].test, STETHO_CMP_TEST_ZTEST);
    assert_close(c.rows[1].p, c.rows[1].z.p_unpooled, 0);
    stetho_comparison_free(&c);
    stetho_results_free(&a);
    stetho_results_free(&b);
}

static void test_compare_errors(void **state) {
    (void)state;
    make_verdicts();
    /* no common task: both task sets named */
    const char *da = tu_tmpdir("err-a"), *db = tu_tmpdir("err-b");
    task_fix ta[] = {{"minerva_math_algebra", 30, alg_a, NULL}};
    task_fix tb[] = {{"gsm8k", 30, alg_b, NULL}};
    write_run(da, ta, 1, "2025-01-01T00-00-00.000000", true);
    write_run(db, tb, 1, "2025-01-01T00-00-00.000000", true);
    stetho_results a, b;
    stetho_comparison c;
    assert_int_equal(stetho_results_read(da, true, &a), STETHO_OK);
    assert_int_equal(stetho_results_read(db, true, &b), STETHO_OK);
    assert_int_equal(stetho_results_compare(&a, &b, 0.05, &c), STETHO_ERR_MISMATCH);
    assert_non_null(strstr(stetho_last_error(), "minerva_math_algebra"));
    assert_non_null(strstr(stetho_last_error(), "gsm8k"));
    stetho_results_free(&b);
    /* same task, different problems */
    int64_t ids[30];
    for (int i = 0; i < 30; i++) ids[i] = i == 17 ? 99 : i;
    const char *dc = tu_tmpdir("err-c");
    task_fix tc[] = {{"minerva_math_algebra", 30, alg_b, ids}};
    write_run(dc, tc, 1, "2025-01-01T00-00-00.000000", true);
    assert_int_equal(stetho_results_read(dc, true, &b), STETHO_OK);
    assert_int_equal(stetho_results_compare(&a, &b, 0.05, &c), STETHO_ERR_MISMATCH);
    assert_non_null(strstr(stetho_last_error(), "task minerva_math_algebra"));
    assert_non_null(strstr(stetho_last_error(), "doc_id 17"));
    assert_int_equal(stetho_results_compare(&a, &b, 1.5, &c), STETHO_ERR_INVALID);
    stetho_results_free(&a);
    stetho_results_free(&b);
    /* malformed files */
    const char *dm = tu_tmpdir("err-m");
    const char *bad = "{\"results\": {\"t\": {\"exact_match,none\": 0.5}}, \"n-samples\": {\"t\": {\"effective\": 7}}}";
    tu_write_file(tu_path(dm, "results_1.json"), bad, strlen(bad));
    assert_int_equal(stetho_results_read(dm, false, &a), STETHO_ERR_FORMAT);
    assert_non_null(strstr(stetho_last_error(), "not a whole count out of 7"));
    const char *trunc = "{\"results\": {\"t\": ";
    tu_write_file(tu_path(dm, "results_2.json"), trunc, strlen(trunc));
    assert_int_equal(stetho_results_read(dm, false, &a), STETHO_ERR_FORMAT);
    assert_non_null(strstr(stetho_last_error(), "results_2.json"));
    const char *ok = "{\"results\": {\"t\": {\"exact_match,none\": 0.5}}, \"n-samples\": {\"t\": {\"effective\": 2}}}";
    tu_write_file(tu_path(dm, "results_3.json"), ok, strlen(ok));
    const char *samples = "{\"doc_id\": 0, \"exact_match\": 1}\n{\"doc_id\": 0, \"exact_match\": 0}\n";
    tu_write_file(tu_path(dm, "samples_t_3.jsonl"), samples, strlen(samples));
    assert_int_equal(stetho_results_read(dm, true, &a), STETHO_ERR_FORMAT);
    assert_non_null(strstr(stetho_last_error(), "doc_id 0 appears twice"));
    const char *samples2 = "{\"doc_id\": 0, \"exact_match\": 1}\n{\"doc_id\": 1, \"exact_match\": 1}\n";
    tu_write_file(tu_path(dm, "samples_t_3.jsonl"), samples2, strlen(samples2));
    assert_int_equal(stetho_results_read(dm, true, &a), STETHO_ERR_FORMAT);
    assert_non_null(strstr(stetho_last_error(), "2 of 2 correct"));
    const char *samples3 = "{\"doc_id\": 0, \"exact_match\": 1}\n{\"doc_id\": 1, \"exact_match\": 0}\nnot json\n";
    tu_write_file(tu_path(dm, "samples_t_3.jsonl"), samples3, strlen(samples3));
    assert_int_equal(stetho_results_read(dm, true, &a), STETHO_ERR_FORMAT);
    assert_non_null(strstr(stetho_last_error(), "samples_t_3.jsonl:3"));
    assert_int_equal(stetho_results_read(dm, false, &a), STETHO_OK); /* samples ignored when not asked */
    stetho_results_free(&a);
    assert_int_equal(stetho_results_read(tu_path(dm, "nope.json"), false, &a), STETHO_ERR_NOTFOUND);
    assert_int_equal(stetho_results_read(tu_tmpdir("err-empty"), false, &a), STETHO_ERR_NOTFOUND);
}

/* Injected write and allocation failures surface as errors, never crashes or leaks. */
static void test_faults(void **state) {
    (void)state;
    make_verdicts();
    const char *d = tu_tmpdir("faults");
    stetho_samples_writer w;
    assert_int_equal(stetho_samples_writer_open(&w, d, "t", NULL, &gen), STETHO_OK);
    stetho_sample s = {.doc_id = 0, .correct = true};
    stetho_fault_write_after(1);
    assert_int_equal(stetho_samples_writer_add(&w, &s), STETHO_ERR_IO);
    stetho_fault_write_after(0);
    assert_int_equal(stetho_samples_writer_close(&w), STETHO_OK);
    stetho_results_task_spec spec = {"t", 3, 5, 5, 4, 1.0};
    stetho_results_spec rs = {.tasks = &spec, .n_tasks = 1, .limit = -1, .timestamp = "9"};
    stetho_fault_write_after(1);
    assert_int_equal(stetho_results_write(d, &rs, NULL), STETHO_ERR_IO);
    stetho_fault_write_after(0);
    assert_false(tu_exists(tu_path(d, "results_9.json")));
    assert_false(tu_exists(tu_path(d, "results_9.json.tmp")));
    /* every allocation of a read + compare failing in turn */
    task_fix ta[] = {{"minerva_math_num_theory", 540, nt_a, NULL}, {"minerva_math_algebra", 30, alg_a, NULL}};
    write_run(d, ta, 2, "2025-01-01T00-00-00.000000", true);
    stetho_results a, b;
    stetho_comparison c;
    stetho_fault_alloc_after(0);
    assert_int_equal(stetho_results_read(d, true, &a), STETHO_OK);
    assert_int_equal(stetho_results_read(d, true, &b), STETHO_OK);
    assert_int_equal(stetho_results_compare(&a, &b, 0.05, &c), STETHO_OK);
    stetho_comparison_free(&c);
    stetho_results_free(&b);
    uint64_t n_alloc = stetho_fault_alloc_after(0);
    assert_true(n_alloc > 5);
    for (uint64_t k = 1; k <= n_alloc; k++) {
        stetho_fault_alloc_after(k);
        stetho_status st = stetho_results_read(d, true, &b);
        if (!st) {
            st = stetho_results_compare(&a, &b, 0.05, &c);
            if (!st) stetho_comparison_free(&c);
            stetho_results_free(&b);
        }
        stetho_fault_alloc_after(0);
    }
    stetho_results_free(&a);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_write_shape),    cmocka_unit_test(test_read_back),
        cmocka_unit_test(test_compare),        cmocka_unit_test(test_compare_errors),
        cmocka_unit_test(test_faults),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
