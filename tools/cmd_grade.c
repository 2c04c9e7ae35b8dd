/* stetho grade --input GENERATIONS.jsonl: grade generations made anywhere with
 * lm-eval's minerva_math extraction and stetho's equivalence rule, line by line. */
#include "cli.h"
#include "stetho/grade.h"
#include "stetho/jsonl.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *help =
    "usage: stetho grade --input GENERATIONS.jsonl [--output GRADED.jsonl] [--skip-bad]\n"
    "\n"
    "Each input line is a JSON object with \"generation\" (the model's text after\n"
    "\"Solution:\") and either \"solution\" (a MATH solution; the gold answer is its last\n"
    "\\boxed{}) or \"answer\" (the gold answer itself; it wins when both are given).\n"
    "Each output line is the input object plus \"extracted\" (lm-eval's\n"
    "get_unnormalized_answer), \"normalized\" (normalize_final_answer), \"gold\"\n"
    "(normalised gold) and \"correct\", decided exactly as `stetho eval` decides it\n"
    "(docs/grading.md). Accuracy goes to stderr.\n"
    "  -i, --input PATH    generations (\"-\" = stdin)\n"
    "  -o, --output PATH   graded JSONL (default: stdout); written to PATH.tmp, then renamed\n"
    "  --skip-bad          skip malformed lines (counted and reported) instead of stopping\n";

/* Grade the reader's current object in place, with the rule `stetho eval` uses
 * (stetho/grade.h). Returns a status; on failure the library message names the
 * line. */
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
    stetho_grade_result g;
    stetho_status st = stetho_grade_generation(gen, solution, answer, &g);
    if (st) return st;
    *correct = g.correct;
    if (json_object_set_new(o, "extracted", json_string(g.extracted)) ||
        json_object_set_new(o, "normalized", json_string(g.normalized)) ||
        json_object_set_new(o, "gold", json_string(g.gold)) ||
        json_object_set_new(o, "correct", json_boolean(g.correct)))
        st = STETHO_ERR_NOMEM;
    stetho_grade_result_free(&g);
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
    /* --output: the graded lines are collected and written in one go through
     * a temporary name, so a failure leaves no partial file */
    char *buf = NULL;
    size_t buf_len = 0;
    FILE *f = out ? open_memstream(&buf, &buf_len) : stdout;
    if (!f) {
        stetho_jsonl_close(&r);
        cli_error(NULL, "out of memory");
        return CLI_EXIT_FAIL;
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
        if (!rc && !ok) {
            cli_error(NULL, "out of memory");
            rc = CLI_EXIT_FAIL;
        }
        if (!rc && (st = stetho_write_file(out, buf, buf_len))) rc = cli_fail(st, NULL);
        free(buf);
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
