/* Benchmark: tiny-world training throughput (forward + backward + AdamW step)
 * in tokens/s on the model size, against the PyTorch prototype's figure
 * quoted in issue 7 (~11.5K tokens/s on 2 cores for a 1.2M-parameter model).
 *
 * usage: bench_train STETHO_BINARY WORK_DIR [JSON_OUT] */
#include "bench_util.h"
#include "stetho/train.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double run(const stetho_train_config *cfg, int B, int T, int steps, size_t *n_params) {
    stetho_train_model m;
    if (stetho_train_model_init(&m, cfg, 1)) {
        fprintf(stderr, "bench_train: %s\n", stetho_last_error());
        exit(1);
    }
    *n_params = m.n_params;
    stetho_train_opt o;
    stetho_train_opt_default(&o);
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)B * (size_t)(T + 1));
    uint64_t s = 7;
    for (int i = 0; i < B * (T + 1); i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        tok[i] = (int32_t)((s >> 33) % (uint64_t)cfg->vocab);
    }
    int32_t *in = malloc(sizeof(int32_t) * (size_t)B * (size_t)T), *tg = malloc(sizeof(int32_t) * (size_t)B * (size_t)T);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) in[b * T + t] = tok[b * (T + 1) + t], tg[b * T + t] = tok[b * (T + 1) + t + 1];
    float loss;
    double t0 = 0;
    for (int i = 0; i < steps + 1; i++) {
        if (i == 1) t0 = now(); /* the first step warms caches and thread pools */
        if (stetho_train_forward(&m, in, tg, NULL, B, T, &loss) || stetho_train_backward(&m) ||
            stetho_train_step(&m, &o, NULL)) {
            fprintf(stderr, "bench_train: %s\n", stetho_last_error());
            exit(1);
        }
    }
    double tps = (double)B * T * steps / (now() - t0);
    free(tok), free(in), free(tg);
    stetho_train_model_free(&m);
    return tps;
}

int main(int argc, char **argv) {
    const char *json = argc > 3 ? argv[3] : NULL;
    const double prototype = 11500; /* issue 7: PyTorch, 2 cores, 1.2M params */
    stetho_train_config proto;
    stetho_train_config_default(&proto);
    proto.n_layers = 6, proto.intermediate = 384, proto.vocab = 260;
    stetho_train_config world;
    stetho_train_config_default(&world);
    size_t np1, np2;
    double a = run(&proto, 8, 128, 8, &np1), b = run(&world, 8, 128, 8, &np2);
    printf("%-44s %12s %10s\n", "model", "tokens/s", "params");
    printf("%-44s %12.0f %10zu\n", "prototype size (6 layers, MLP 384, vocab 260)", a, np1);
    printf("%-44s %12.0f %10zu\n", "tiny-world default (8 layers, MLP 512)", b, np2);
    printf("RESULT\ttrain_tokens_per_s_prototype_size\t%.0f\ttok/s\t%.0f\t%.3f\n", a, prototype, a / prototype);
    printf("RESULT\ttrain_tokens_per_s_tiny_world\t%.0f\ttok/s\t%.0f\t%.3f\n", b, prototype, b / prototype);
    if (json) {
        FILE *f = fopen(json, "w");
        if (f) {
            fprintf(f, "[{\"name\": \"train_prototype_size\", \"tokens_per_s\": %.0f, \"params\": %zu},\n"
                       " {\"name\": \"train_tiny_world\", \"tokens_per_s\": %.0f, \"params\": %zu}]\n", a, np1, b, np2);
            fclose(f);
        }
    }
    return 0;
}
