/* Scoring one Minerva Math generation (see stetho/grade.h): lm-eval's gold and
 * answer extraction, then stetho's equivalence rule, behind the guards that keep
 * empty answers from matching each other. */
#include "stetho/grade.h"

#include "stetho/answer.h"
#include "stetho/latex.h"
#include "internal.h"

#include <stdlib.h>
#include <string.h>

void stetho_grade_result_free(stetho_grade_result *r) {
    if (!r) return;
    free(r->gold);
    free(r->extracted);
    free(r->normalized);
    memset(r, 0, sizeof *r);
}

/* The raw gold answer: the explicit one, else the solution's last box, else ""
 * (lm-eval's process_docs would crash there; grading it wrong is the useful
 * reading of a data set with a broken solution). */
static stetho_status gold_raw_of(const char *solution, const char *answer, char **out) {
    *out = NULL;
    if (answer) return (*out = st_strdup(answer)) ? STETHO_OK : STETHO_ERR_NOMEM;
    char *boxed = NULL;
    stetho_status st = stetho_answer_last_boxed(solution, &boxed);
    if (!st && boxed) st = stetho_answer_remove_boxed(boxed, out);
    free(boxed);
    if (st == STETHO_ERR_FORMAT) { /* "\fbox{5}", "\boxed\n{5}": no usable box */
        stetho_clear_error();
        st = STETHO_OK;
    }
    if (!st && !*out && !(*out = st_strdup(""))) st = STETHO_ERR_NOMEM;
    return st;
}

static bool has_non_space(const char *s) {
    for (; *s; s++)
        if (!strchr(" \t\n\r\f\v", *s)) return true;
    return false;
}

stetho_status stetho_grade_generation(const char *generation, const char *solution, const char *answer,
                                      stetho_grade_result *out) {
    memset(out, 0, sizeof *out);
    if (!generation || (!solution && !answer))
        return st_err(STETHO_ERR_INVALID, "grade: need a generation and a solution or an answer");
    char *gold_raw = NULL;
    stetho_status st = gold_raw_of(solution, answer, &gold_raw);
    if (!st) st = stetho_answer_normalize(gold_raw, &out->gold);
    if (!st) st = stetho_answer_extract(generation, &out->extracted);
    if (!st) st = stetho_answer_normalize(out->extracted, &out->normalized);
    if (!st) {
        out->has_gold = has_non_space(gold_raw);
        bool answered = strcmp(out->extracted, STETHO_ANSWER_INVALID) != 0;
        if (!out->has_gold || !answered) out->correct = false;
        else if (*out->gold)
            st = stetho_latex_grade(gold_raw, out->gold, out->extracted, out->normalized, &out->correct);
        else /* normalisation left nothing of the gold ("\frac{6}{7}="): only the raw answers can agree */
            st = stetho_latex_equivalent(gold_raw, out->extracted, &out->correct);
    }
    free(gold_raw);
    if (st) stetho_grade_result_free(out);
    return st;
}
