/* Benchmark: evaluation throughput (issue 6). Minerva-format problems of the
 * shipped tiny world (world/base, world/data/math), 0-shot greedy, up to 200
 * new tokens, decoded one at a time (batch 1) and batched (batch 16); reports
 * problems/minute for each, batch 1 being the baseline of the ratio. Skips with
 * a message when run outside the repository root (no world/).
 *
 * usage: bench_eval STETHO_BINARY WORK_DIR [JSON_OUT] */
#include "stetho/eval.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "bench_util.h"


/* Problems per minute at a batch size; each run starts from an empty directory
 * (an evaluation resumes from what it finds). */
static double run(stetho_model *m, const stetho_tokenizer *tok, const char *work, int batch, long limit) {
    char dir[2048], cmd[4200];
    snprintf(dir, sizeof dir, "%s/batch%d", work, batch);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd)) return -1;
    mkdir(work, 0755);
    mkdir(dir, 0755);
    stetho_eval_opts o;
    stetho_eval_opts_default(&o);
    o.tasks = "minerva_math_prealgebra,minerva_math_num_theory";
    o.num_fewshot = 0;
    o.limit = limit;
    o.max_gen_toks = 200;
    o.batch_size = batch;
    o.data_dir = "world/data/math";
    o.model_args = "pretrained=world/base";
    stetho_eval_result r;
    double t0 = now();
    if (stetho_eval_run(m, tok, &o, dir, &r)) return -1;
    double dt = now() - t0;
    size_t n = 0;
    for (size_t i = 0; i < r.n_tasks; i++) n += (size_t)r.tasks[i].n;
    stetho_eval_result_free(&r);
    return 60.0 * (double)n / dt;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: bench_eval STETHO WORK_DIR [JSON_OUT]\n");
        return 2;
    }
    struct stat sb;
    if (stat("world/base/config.json", &sb)) {
        printf("bench_eval: no world/ here (run from the repository root): skipped\n");
        return 0;
    }
    stetho_model m;
    stetho_tokenizer tok;
    if (stetho_model_load(&m, "world/base") || stetho_tokenizer_load(&tok, "world/base")) {
        fprintf(stderr, "bench_eval: %s\n", stetho_last_error());
        return 1;
    }
    const long limit = 16; /* per subject: 32 problems per run */
    double b1 = run(&m, &tok, argv[2], 1, limit), b16 = run(&m, &tok, argv[2], 16, limit);
    stetho_tokenizer_free(&tok);
    stetho_model_free(&m);
    if (b1 <= 0 || b16 <= 0) {
        fprintf(stderr, "bench_eval: %s\n", stetho_last_error());
        return 1;
    }
    printf("tiny world (2.07M params), 0-shot, <= 200 new tokens, %ld problems x 2 subjects\n", limit);
    printf("batch  1: %8.1f problems/minute\nbatch 16: %8.1f problems/minute (%.2fx)\n", b1, b16, b16 / b1);
    /* higher is better here: the ratio is batch 16 over batch 1 */
    printf("RESULT\teval_problems_per_min_batch1\t%.1f\tprob/min\t%.1f\t%.3f\n", b1, b1, 1.0);
    printf("RESULT\teval_problems_per_min_batch16\t%.1f\tprob/min\t%.1f\t%.3f\n", b16, b1, b16 / b1);
    if (argc > 3) {
        FILE *f = fopen(argv[3], "w");
        if (f) {
            fprintf(f, "[{\"name\": \"eval_batch1\", \"problems_per_min\": %.2f}, {\"name\": \"eval_batch16\", "
                       "\"problems_per_min\": %.2f, \"speedup\": %.3f}]\n", b1, b16, b16 / b1);
            fclose(f);
        }
    }
    return 0;
}
