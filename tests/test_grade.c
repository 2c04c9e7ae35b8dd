/* The one grading rule (stetho/grade.h) that eval and `stetho grade` share:
 * gold from the answer or the last box, lm-eval's extraction, the equivalence
 * rule, and the guards that keep empty answers from matching each other. */
#include "testutil.h"

#include "stetho/grade.h"

#include <stdlib.h>
#include <string.h>

#define SAY(x) "We find it.\nFinal Answer: The final answer is " x ". I hope it is correct."

/* correct?, and the trace */
static bool grade(const char *gen, const char *solution, const char *answer, stetho_grade_result *g) {
    assert_int_equal(stetho_grade_generation(gen, solution, answer, g), STETHO_OK);
    return g->correct;
}

static void test_rule(void **state) {
    (void)state;
    stetho_grade_result g;
    /* the plain case, and the equivalence rule beyond string equality */
    assert_true(grade(SAY("$\\frac{1}{2}$"), "So $\\boxed{\\frac12}$.", NULL, &g));
    assert_string_equal(g.extracted, "$\\frac{1}{2}$");
    assert_string_equal(g.normalized, "\\frac{1}{2}");
    assert_string_equal(g.gold, "\\frac{1}{2}");
    assert_true(g.has_gold);
    stetho_grade_result_free(&g);
    assert_true(grade(SAY("$0.5$"), "So $\\boxed{\\frac12}$.", NULL, &g));
    stetho_grade_result_free(&g);
    assert_false(grade(SAY("$3$"), "So $\\boxed{4}$.", NULL, &g));
    stetho_grade_result_free(&g);
    /* the last box is the gold */
    assert_true(grade(SAY("$6$"), "First $\\boxed{5}$, then $\\boxed{6}$.", NULL, &g));
    stetho_grade_result_free(&g);

    /* the audit's case: an empty gold box and "$$" both normalise to "" */
    assert_false(grade(SAY("$$"), "It is $\\boxed{}$.", NULL, &g));
    assert_string_equal(g.gold, "");
    assert_string_equal(g.normalized, "");
    assert_false(g.has_gold);
    stetho_grade_result_free(&g);
    assert_false(grade(SAY("$ $"), "It is $\\boxed{ }$.", NULL, &g));
    stetho_grade_result_free(&g);
    assert_false(grade(SAY("$$"), NULL, "", &g));
    stetho_grade_result_free(&g);
    /* no usable box: no gold, nothing is right */
    assert_false(grade(SAY("$5$"), "It is 5, no box.", NULL, &g));
    assert_false(g.has_gold);
    stetho_grade_result_free(&g);
    assert_false(grade(SAY("$5$"), "It is $\\fbox{5}$.", NULL, &g)); /* lm-eval's remove_boxed asserts */
    stetho_grade_result_free(&g);
    /* no final-answer sentence: wrong even when the gold spells lm-eval's marker */
    assert_false(grade("the answer is 5", NULL, "[invalidanswer]", &g));
    assert_string_equal(g.extracted, "[invalidanswer]");
    stetho_grade_result_free(&g);
    /* normalisation leaves nothing of the gold: only the raw answers decide */
    assert_false(grade(SAY("$$"), NULL, "\\frac{6}{7}=", &g));
    assert_string_equal(g.gold, "");
    stetho_grade_result_free(&g);
    assert_true(grade(SAY("$\\frac{6}{7}=$"), NULL, "\\frac{6}{7}=", &g));
    stetho_grade_result_free(&g);

    /* an explicit answer wins over the solution (MATH-500 has both) */
    assert_true(grade(SAY("$7$"), "So $\\boxed{8}$.", "7", &g));
    stetho_grade_result_free(&g);
    assert_false(grade(SAY("$8$"), "So $\\boxed{8}$.", "7", &g));
    stetho_grade_result_free(&g);

    /* misuse */
    assert_int_equal(stetho_grade_generation(NULL, "x", NULL, &g), STETHO_ERR_INVALID);
    assert_int_equal(stetho_grade_generation("x", NULL, NULL, &g), STETHO_ERR_INVALID);
    stetho_grade_result_free(&g); /* safe on a failed result */
}

/* Allocation failures come back as STETHO_ERR_NOMEM with nothing leaked. */
static void test_alloc_faults(void **state) {
    (void)state;
    for (uint64_t n = 1;; n++) {
        stetho_fault_alloc_after(n);
        stetho_grade_result g;
        stetho_status st = stetho_grade_generation(SAY("$0.5$"), "So $\\boxed{\\frac12}$.", NULL, &g);
        stetho_fault_alloc_after(0);
        if (st == STETHO_OK) {
            assert_true(g.correct);
            stetho_grade_result_free(&g);
            break;
        }
        assert_int_equal(st, STETHO_ERR_NOMEM);
        assert_null(g.gold);
        assert_true(n < 10000);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rule),
        cmocka_unit_test(test_alloc_faults),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
