/* The one rule that scores a Minerva Math generation, shared by `stetho eval`,
 * `stetho grade` and the study so that they cannot disagree (docs/grading.md):
 *
 *   gold      = the explicit answer when there is one (MATH-500's "answer"),
 *               else remove_boxed(last_boxed(solution)), lm-eval's process_docs
 *   extracted = get_unnormalized_answer(generation), lm-eval's process_results
 *   correct   = there is a gold answer, the generation has a final-answer
 *               sentence, and stetho_latex_grade accepts the pair
 *
 * The first two conditions matter because both sides can be empty: a solution
 * whose last box is "\boxed{}" and a generation ending "is $$." both normalise
 * to "", and equal strings would otherwise grade correct. lm-eval scores such
 * pairs 0 too (sympy cannot parse an empty string). */
#ifndef STETHO_GRADE_H
#define STETHO_GRADE_H

#include "stetho/common.h"
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    char *gold;       /* normalised gold answer ("" when there is none) */
    char *extracted;  /* get_unnormalized_answer(generation), or "[invalidanswer]" */
    char *normalized; /* normalize_final_answer(extracted) */
    bool has_gold;    /* the gold answer has a non-space character */
    bool correct;
} stetho_grade_result;

/* Grade one generation. `answer` (the gold answer itself) wins over `solution`
 * (a MATH solution; its last \boxed{} is the gold) when both are given; at least
 * one must be. A solution without a usable box is not an error: it has no gold,
 * so the generation grades wrong. Fails only on NULL input (STETHO_ERR_INVALID)
 * or allocation failure. Free *out with stetho_grade_result_free. */
stetho_status stetho_grade_generation(const char *generation, const char *solution, const char *answer,
                                      stetho_grade_result *out);
void stetho_grade_result_free(stetho_grade_result *r);

#ifdef __cplusplus
}
#endif
#endif
