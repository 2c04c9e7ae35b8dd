/* Benchmark: `stetho diagnose` (issue 5: "its cost is dominated by the forward
 * pass") on the shipped tiny world, against the baseline of a plain forward
 * pass over the same texts measured in the same run (`stetho perplexity` on a
 * file holding exactly the prompts diagnose reads: the domain set's problems
 * and the general set's texts, same truncation). Diagnose runs the forward
 * pass with hooks, encodes every layer's activations with its SAE and keeps
 * running statistics; perplexity runs the forward pass and the LM head. A
 * ratio near 1 means the statistics cost little beside the model. Skips when
 * run outside the repository root (no world/).
 *
 * usage: bench_diagnose STETHO_BINARY WORK_DIR [JSON_OUT] [LIMIT] */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "bench_util.h"


static double timed(const char *cmd) {
    double t0 = now();
    int rc = system(cmd);
    return rc == 0 ? now() - t0 : -1;
}

/* Append the first `limit` prompts of in (field `field`, else "text", else
 * "problem", as diagnose picks it) to out as {"text": ...}; returns how many. */
static long copy_texts(const char *in, long limit, FILE *out) {
    FILE *f = fopen(in, "r");
    if (!f) return -1;
    char *line = NULL;
    size_t cap = 0;
    long n = 0;
    while (n < limit && getline(&line, &cap, f) > 0) {
        json_t *o = json_loads(line, 0, NULL);
        json_t *t = json_object_get(o, "text");
        if (!json_is_string(t)) t = json_object_get(o, "problem");
        if (json_is_string(t)) {
            json_t *w = json_pack("{s:O}", "text", t);
            char *s = json_dumps(w, JSON_COMPACT);
            fprintf(out, "%s\n", s);
            free(s);
            json_decref(w);
            n++;
        }
        json_decref(o);
    }
    free(line);
    fclose(f);
    return n;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: bench_diagnose STETHO WORK_DIR [JSON_OUT] [LIMIT]\n");
        return 2;
    }
    struct stat sb;
    if (stat("world/base/config.json", &sb) || stat("world/saes", &sb) || stat("world/data/prompts/domain.jsonl", &sb)) {
        printf("bench_diagnose: no world/ here (run from the repository root): skipped\n");
        return 0;
    }
    const char *stetho = argv[1], *work = argv[2];
    long limit = argc > 4 ? strtol(argv[4], NULL, 10) : 280;
    if (limit < 1) limit = 280;
    char cmd[8192], texts[4096];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", work, work);
    if (system(cmd)) return 1;
    snprintf(texts, sizeof texts, "%s/texts.jsonl", work);
    FILE *f = fopen(texts, "w");
    if (!f) return 1;
    long nd = copy_texts("world/data/prompts/domain.jsonl", limit, f);
    long ng = copy_texts("world/data/prompts/general.jsonl", limit, f);
    fclose(f);
    if (nd <= 0 || ng <= 0) {
        fprintf(stderr, "bench_diagnose: cannot read the world's prompt sets\n");
        return 1;
    }
    double best_fwd = 1e30, best_diag = 1e30;
    for (int round = 0; round < 2; round++) { /* interleaved, best of 2 each */
        snprintf(cmd, sizeof cmd, "'%s' perplexity world/base --input '%s' --max-tokens 256 > '%s/ppl.log' 2>&1",
                 stetho, texts, work);
        double t = timed(cmd);
        if (t < 0) {
            fprintf(stderr, "bench_diagnose: perplexity failed (see %s/ppl.log)\n", work);
            return 1;
        }
        best_fwd = t < best_fwd ? t : best_fwd;
        snprintf(cmd, sizeof cmd,
                 "'%s' diagnose world/base --sae-dir world/saes --domain world/data/prompts/domain.jsonl "
                 "--general world/data/prompts/general.jsonl --limit %ld --max-tokens 256 -o '%s/scores.json' "
                 "--force --quiet > '%s/diagnose.log' 2>&1",
                 stetho, limit, work, work);
        t = timed(cmd);
        if (t < 0) {
            fprintf(stderr, "bench_diagnose: diagnose failed (see %s/diagnose.log)\n", work);
            return 1;
        }
        best_diag = t < best_diag ? t : best_diag;
    }
    printf("tiny world: %ld domain + %ld general prompts, <= 256 tokens, all 8 layers' SAEs\n", nd, ng);
    printf("forward pass alone (perplexity): %6.2f s\ndiagnose:                        %6.2f s (%.2fx)\n", best_fwd,
           best_diag, best_diag / best_fwd);
    printf("RESULT\tdiagnose_s_tiny_world\t%.2f\ts\t%.2f\t%.3f\n", best_diag, best_fwd, best_diag / best_fwd);
    if (argc > 3) {
        FILE *j = fopen(argv[3], "w");
        if (j) {
            fprintf(j, "[{\"name\": \"diagnose\", \"prompts\": %ld, \"seconds\": %.3f, \"forward_seconds\": %.3f}]\n",
                    nd + ng, best_diag, best_fwd);
            fclose(j);
        }
    }
    return 0;
}
