/* Equivalence of two normalised final answers (see stetho/answer.h). lm-eval decides
 * with sympy's LaTeX parser and scores 0 whenever parsing fails; stetho instead
 * accepts equal strings and otherwise evaluates both answers as LaTeX: numbers,
 * fractions, radicals, powers, pi, percent, units, intervals, tuples, sets, unordered
 * lists and matrices. Expressions with variables are compared by evaluating them at
 * fixed pseudo-random points. The evaluator is conservative: anything it cannot read
 * is equivalent only to an identical string, so near misses grade wrong. */
#ifndef STETHO_LATEX_H
#define STETHO_LATEX_H

#include "stetho/common.h"
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Relative tolerance for non-integer values; two integer values must be equal. */
#define STETHO_LATEX_RTOL 1e-8

/* *equal = whether the normalised answers a and b denote the same answer.
 * Fails only on allocation failure (STETHO_ERR_NOMEM) or NULL input. */
stetho_status stetho_latex_equivalent(const char *a, const char *b, bool *equal);

/* The grading rule: the normalised answers are equivalent, or else the raw ones
 * (before normalize_final_answer) are. The second chance recovers what
 * normalisation destroys, such as the list "1, 3" that becomes the number "13".
 * Raw strings may be NULL (normalised comparison only). */
stetho_status stetho_latex_grade(const char *gold_raw, const char *gold_norm, const char *cand_raw,
                                 const char *cand_norm, bool *correct);

#ifdef __cplusplus
}
#endif
#endif
