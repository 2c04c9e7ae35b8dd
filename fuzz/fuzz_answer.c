/* libFuzzer target: answer extraction, lm-eval normalisation and the LaTeX
 * equivalence checker. The input is split at its first NUL into a generation
 * and a gold solution; every gold answer must be equivalent to itself. */
#include "stetho/answer.h"
#include "stetho/latex.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 4096) return 0; /* the checker's cost grows with length; bound an iteration */
    char *buf = malloc(size + 2);
    memcpy(buf, data, size);
    buf[size] = buf[size + 1] = '\0';
    const char *gen = buf, *sol = buf + strlen(buf) + 1;
    char *ext = NULL, *norm = NULL, *gold = NULL;
    if (stetho_answer_extract(gen, &ext) == STETHO_OK && stetho_answer_normalize(ext, &norm) == STETHO_OK &&
        stetho_answer_gold(sol, &gold) == STETHO_OK) {
        bool ok = false;
        stetho_latex_grade(NULL, gold, ext, norm, &ok);
        if (stetho_latex_equivalent(gold, gold, &ok) == STETHO_OK && !ok) __builtin_trap();
    }
    free(ext), free(norm), free(gold), free(buf);
    return 0;
}
