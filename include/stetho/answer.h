/* Minerva Math answer handling, reproducing lm-evaluation-harness's minerva_math
 * utilities byte for byte: get_unnormalized_answer, last_boxed_only_string,
 * remove_boxed and normalize_final_answer. Strings are UTF-8; the functions work on
 * code points as Python does. Invalid UTF-8 is first replaced by U+FFFD (as Python's
 * errors="replace" decoding would), so malformed input never crashes or misparses.
 * Equivalence of two normalised answers lives in stetho/latex.h. */
#ifndef STETHO_ANSWER_H
#define STETHO_ANSWER_H

#include "stetho/common.h"
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The literal lm-eval returns when a generation has no final-answer sentence. */
#define STETHO_ANSWER_INVALID "[invalidanswer]"

/* get_unnormalized_answer: the text between the first "Final Answer: The final
 * answer is" and ". I hope it is correct." (both '.' are wildcards, as in lm-eval),
 * stripped of Unicode whitespace; "[invalidanswer]" when absent. *out is a new
 * string (free with free()). */
stetho_status stetho_answer_extract(const char *generation, char **out);

/* last_boxed_only_string: the last "\boxed{...}" (brace-balanced), or the "\boxed "
 * space form, or "\fbox{...}" when there is no \boxed. *out = NULL (and STETHO_OK)
 * when Python returns None. */
stetho_status stetho_answer_last_boxed(const char *s, char **out);

/* remove_boxed: strips "\boxed " or "\boxed{" ... "}". STETHO_ERR_INVALID when s is
 * NULL (Python's TypeError), STETHO_ERR_FORMAT when s does not have that shape
 * (Python's AssertionError). */
stetho_status stetho_answer_remove_boxed(const char *s, char **out);

/* normalize_final_answer (Lewkowycz et al. 2022, appendix D, as lm-eval has it). */
stetho_status stetho_answer_normalize(const char *answer, char **out);

/* Gold answer of a MATH solution: normalize(remove_boxed(last_boxed(solution))).
 * STETHO_ERR_NOTFOUND when the solution has no usable box. */
stetho_status stetho_answer_gold(const char *solution, char **out);

#ifdef __cplusplus
}
#endif
#endif
