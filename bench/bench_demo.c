/* Benchmark: the wall time of `stetho demo` (issue 7) on the shipped tiny
 * world with a reduced --limit, against the baseline of one `stetho eval` of
 * the base model with the settings the demo evaluates every variant with
 * (0-shot, greedy, <= 200 new tokens, batch 16, the same problems), measured in
 * the same run. The ratio says what the whole study costs in single
 * evaluations: ten variants are evaluated, so about 10 plus the cost of
 * diagnose, the scalpel, the edits, perplexity and the report. Skips with a
 * message when run outside the repository root (no world/).
 *
 * usage: bench_demo STETHO_BINARY WORK_DIR [JSON_OUT] [LIMIT] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "bench_util.h"


/* Seconds `cmd` took, or -1 when it failed (its output is in log). */
static double timed(const char *cmd) {
    double t0 = now();
    int rc = system(cmd);
    return rc == 0 ? now() - t0 : -1;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: bench_demo STETHO WORK_DIR [JSON_OUT] [LIMIT]\n");
        return 2;
    }
    struct stat sb;
    if (stat("world/base/config.json", &sb) || stat("world/saes", &sb)) {
        printf("bench_demo: no world/ here (run from the repository root): skipped\n");
        return 0;
    }
    const char *stetho = argv[1], *work = argv[2];
    long limit = argc > 4 ? strtol(argv[4], NULL, 10) : 10;
    if (limit < 1) limit = 10;
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", work, work);
    if (system(cmd)) return 1;

    snprintf(cmd, sizeof cmd,
             "'%s' eval world/base --tasks minerva_math --num-fewshot 0 --limit %ld --max-gen-toks 200 "
             "--batch-size 16 --data world/data/math --output-path '%s/eval' > '%s/eval.log' 2>&1",
             stetho, limit, work, work);
    double t_eval = timed(cmd);
    snprintf(cmd, sizeof cmd, "'%s' demo -o '%s/demo' --limit %ld > '%s/demo.log' 2>&1", stetho, work, limit, work);
    double t_demo = timed(cmd);
    if (t_eval <= 0 || t_demo <= 0) {
        fprintf(stderr, "bench_demo: %s failed (see %s/%s.log)\n", t_eval <= 0 ? "eval" : "demo", work,
                t_eval <= 0 ? "eval" : "demo");
        return 1;
    }
    printf("tiny world, %ld problems per subject (7 subjects), 0-shot, <= 200 new tokens, batch 16\n", limit);
    printf("one evaluation of the base: %8.1f s\nstetho demo (whole study):  %8.1f s (%.1f evaluations' worth)\n",
           t_eval, t_demo, t_demo / t_eval);
    /* lower is better: the ratio is the demo's time over one evaluation's */
    printf("RESULT\tdemo_wall_s_limit%ld\t%.1f\ts\t%.1f\t%.2f\n", limit, t_demo, t_eval, t_demo / t_eval);
    if (argc > 3) {
        FILE *f = fopen(argv[3], "w");
        if (f) {
            fprintf(f, "[{\"name\": \"demo\", \"limit\": %ld, \"seconds\": %.2f, \"eval_seconds\": %.2f, \"ratio\": %.3f}]\n",
                    limit, t_demo, t_eval, t_demo / t_eval);
            fclose(f);
        }
    }
    return 0;
}
