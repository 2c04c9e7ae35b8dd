/* stetho grade --input GENERATIONS.jsonl: grade generations made anywhere with
 * lm-eval's minerva_math extraction and stetho's equivalence rule, line by line. */
#include "cli.h"
#include "stetho/answer.h"
#include "stetho/jsonl.h"
#include "stetho/latex.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *help =
    "usage: stetho grade --input GENERATIONS.jsonl [--output GRADED.jsonl] [--skip-bad]\n"
    "\n"
    "Each input line is a JSON object with \"generation\" (the model's text after\n"
    "\"Solution:\") and either \"solution\" (a MATH solution; the gold answer is its last\n"
    "\\boxed{}) or \"answer\" (the gold answer itself). Each output line is the input object\n"
    "plus \"extracted\" (lm-eval's get_unnormalized_answer), \"normalized\"\n"
    "(normalize_final_answer), \"gold\" (normalised gold) and \"correct\". Accuracy goes\n"
    "to stderr.\n"
    "  -i, --input PATH    generations (\"-\" = stdin)\n"
    "  -o, --output PATH   graded JSONL (default: stdout); written to PATH.tmp, then renamed\n"
    "  --skip-bad          skip malformed lines (counted and reported) instead of stopping\n";

/* Grade the reader's current object in place. Returns a status; on failure the
 * library message names the line. */
static stetho_status grade_line(stetho_jsonl_reader *r, bool *correct) {
    json_t *o = r->obj;
    const char *gen = stetho_jsonl_string(r, "generation");
    if (!gen) return STETHO_ERR_FORMAT;
    const char *solution = json_string_value(json_object_get(o, "solution"));
    const char *answer = json_string_value(json_object_get(o, "answer"));
    if (!solution && !answer) {
        stetho_jsonl_string(r, "solution"); /* sets "path:line: missing string field" */
        return STETHO_ERR_FORMAT;
    }
    char *gold_raw = NULL, *gold = NULL, *extracted = NULL, *normalized = NULL, *boxed = NULL;
    stetho_status st = STETHO_OK;
    if (solution) {
        if ((st = stetho_answer_last_boxed(solution, &boxed))) goto out;
        /* a solution without a usable box has no gold: grade wrong, gold "" */
        if (!boxed || stetho_answer_remove_boxed(boxed, &gold_raw)) {
            stetho_clear_error();
            if (!(gold_raw = strdup(""))) st = STETHO_ERR_NOMEM;
            if (st) goto out;
        }
    } else if (!(gold_raw = strdup(answer))) {
        st = STETHO_ERR_NOMEM;
        goto out;
    }
    if ((st = stetho_answer_normalize(gold_raw, &gold))) goto out;
    if ((st = stetho_answer_extract(gen, &extracted))) goto out;
    if ((st = stetho_answer_normalize(extracted, &normalized))) goto out;
    *correct = false;
    if (*gold_raw && strcmp(extracted, STETHO_ANSWER_INVALID) != 0 &&
        (st = stetho_latex_grade(gold_raw, gold, extracted, normalized, correct)))
        goto out;
    if (json_object_set_new(o, "extracted", json_string(extracted)) ||
        json_object_set_new(o, "normalized", json_string(normalized)) ||
        json_object_set_new(o, "gold", json_string(gold)) || json_object_set_new(o, "correct", json_boolean(*correct)))
        st = STETHO_ERR_NOMEM;
out:
    free(boxed);
    free(gold_raw);
    free(gold);
    free(extracted);
    free(normalized);
    return st;
}

int cmd_grade(int argc, char **argv) {
    const char *in = NULL, *out = NULL;
    bool bad = false, skip_bad = false;
    for (int i = 1; i < argc && !bad; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(help, stdout);
            return 0;
        } else if (cli_opt(argc, argv, &i, "--input", &in, &bad, "grade") ||
                   cli_opt(argc, argv, &i, "-i", &in, &bad, "grade")) {
        } else if (cli_opt(argc, argv, &i, "--output", &out, &bad, "grade") ||
                   cli_opt(argc, argv, &i, "-o", &out, &bad, "grade")) {
        } else if (!strcmp(argv[i], "--skip-bad")) {
            skip_bad = true;
        } else {
            return cli_usage("grade", "unexpected argument '%s'", argv[i]);
        }
    }
    if (bad) return CLI_EXIT_USAGE;
    if (!in) return cli_usage("grade", "missing --input GENERATIONS.jsonl");

    stetho_jsonl_reader r;
    stetho_status st = stetho_jsonl_open(&r, in);
    if (st) return cli_fail(st, NULL);
    char *tmp = NULL;
    FILE *f = stdout;
    if (out) {
        size_t n = strlen(out) + 5;
        tmp = malloc(n);
        if (!tmp) {
            stetho_jsonl_close(&r);
            cli_error(NULL, "out of memory");
            return CLI_EXIT_FAIL;
        }
        snprintf(tmp, n, "%s.tmp", out);
        if (!(f = fopen(tmp, "w"))) {
            cli_error(NULL, "%s: cannot create", tmp);
            stetho_jsonl_close(&r);
            free(tmp);
            return CLI_EXIT_FAIL;
        }
    }
    size_t total = 0, right = 0, skipped = 0;
    int rc = 0;
    for (;;) {
        bool got = false, correct = false;
        st = stetho_jsonl_next(&r, &got);
        if (!st && !got) break;
        if (!st) st = grade_line(&r, &correct);
        if (st == STETHO_ERR_FORMAT && skip_bad) {
            fprintf(stderr, "stetho: skipping: %s\n", stetho_last_error());
            skipped++;
            continue;
        }
        if (st) {
            rc = cli_fail(st, st == STETHO_ERR_FORMAT ? "each line needs \"generation\" and \"solution\" or \"answer\"; --skip-bad skips bad lines" : NULL);
            break;
        }
        char *line = json_dumps(r.obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
        if (!line || fputs(line, f) < 0 || fputc('\n', f) == EOF) {
            free(line);
            cli_error(NULL, "%s: write failed", out ? out : "stdout");
            rc = CLI_EXIT_FAIL;
            break;
        }
        free(line);
        total++;
        right += correct;
    }
    stetho_jsonl_close(&r);
    if (out) {
        bool ok = fclose(f) == 0;
        if (!rc && (!ok || rename(tmp, out) != 0)) {
            cli_error(NULL, "%s: write failed", out);
            rc = CLI_EXIT_FAIL;
        }
        if (rc) remove(tmp);
        free(tmp);
    } else if (fflush(stdout) != 0 && !rc) {
        cli_error(NULL, "stdout: write failed");
        rc = CLI_EXIT_FAIL;
    }
    if (rc) return rc;
    fprintf(stderr, "accuracy: %zu/%zu = %.1f%%", right, total, total ? 100.0 * (double)right / (double)total : 0.0);
    if (skipped) fprintf(stderr, " (%zu malformed line%s skipped)", skipped, skipped == 1 ? "" : "s");
    fputc('\n', stderr);
    return 0;
}
