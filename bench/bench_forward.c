/* Prompt-processing speed of the forward pass: generates a Gemma-3-shaped model
 * (Gemma 3 1B's layer shapes with fewer layers and a smaller vocabulary, bf16
 * weights, ~250M parameters) and reports tokens/s for a 512-token prompt with
 * 2 threads (override: bench_forward [THREADS] [TOKENS] [LAYERS]). */
#include "bench_util.h"
#include "stetho/model.h"
#include "stetho/safetensors.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum { HIDDEN = 1152, INTER = 6912, N_HEADS = 4, N_KV = 1, HEAD_DIM = 256, VOCAB = 32768 };

static int die(const char *what) {
    fprintf(stderr, "bench_forward: %s: %s\n", what, stetho_last_error());
    return 1;
}

typedef struct {
    char name[96];
    uint64_t rows, cols; /* cols 0: vector */
} decl;

/* Write the checkpoint tensor by tensor with the streaming writer. */
static uint64_t g_params; /* parameter count of the generated model */

static int write_model(const char *dir, int n_layers) {
    static const struct { const char *name; uint64_t r, c; } per_layer[] = {
        {"input_layernorm.weight", HIDDEN, 0},
        {"self_attn.q_proj.weight", N_HEADS * HEAD_DIM, HIDDEN},
        {"self_attn.k_proj.weight", N_KV * HEAD_DIM, HIDDEN},
        {"self_attn.v_proj.weight", N_KV * HEAD_DIM, HIDDEN},
        {"self_attn.o_proj.weight", HIDDEN, N_HEADS * HEAD_DIM},
        {"self_attn.q_norm.weight", HEAD_DIM, 0},
        {"self_attn.k_norm.weight", HEAD_DIM, 0},
        {"post_attention_layernorm.weight", HIDDEN, 0},
        {"pre_feedforward_layernorm.weight", HIDDEN, 0},
        {"post_feedforward_layernorm.weight", HIDDEN, 0},
        {"mlp.gate_proj.weight", INTER, HIDDEN},
        {"mlp.up_proj.weight", INTER, HIDDEN},
        {"mlp.down_proj.weight", HIDDEN, INTER},
    };
    size_t nper = sizeof per_layer / sizeof per_layer[0], n = 0;
    decl *d = calloc(2 + nper * (size_t)n_layers, sizeof *d);
    snprintf(d[n].name, sizeof d[n].name, "model.embed_tokens.weight");
    d[n].rows = VOCAB, d[n++].cols = HIDDEN;
    for (int l = 0; l < n_layers; l++)
        for (size_t i = 0; i < nper; i++) {
            snprintf(d[n].name, sizeof d[n].name, "model.layers.%d.%s", l, per_layer[i].name);
            d[n].rows = per_layer[i].r, d[n++].cols = per_layer[i].c;
        }
    snprintf(d[n].name, sizeof d[n].name, "model.norm.weight");
    d[n++].rows = HIDDEN;
    char path[600];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    stetho_st_writer w;
    if (stetho_st_writer_init(&w, path)) return die("writer");
    uint64_t params = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t shape[2] = {d[i].rows, d[i].cols};
        if (stetho_st_writer_declare(&w, d[i].name, STETHO_DTYPE_BF16, d[i].cols ? 2 : 1, shape)) return die("declare");
        params += d[i].rows * (d[i].cols ? d[i].cols : 1);
    }
    enum { CHUNK = 1 << 16 };
    uint16_t *buf = malloc(CHUNK * sizeof *buf);
    float *f = malloc(CHUNK * sizeof *f);
    uint64_t rng = 12345;
    for (size_t i = 0; i < n; i++) {
        uint64_t ne = d[i].rows * (d[i].cols ? d[i].cols : 1);
        for (uint64_t k = 0; k < ne; k += CHUNK) {
            size_t m = ne - k < CHUNK ? (size_t)(ne - k) : CHUNK;
            for (size_t j = 0; j < m; j++) {
                rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
                f[j] = ((float)(rng >> 40) / (float)(1 << 24) - 0.5f) * (d[i].cols ? 0.06f : 0.2f);
            }
            stetho_convert_from_f32(buf, STETHO_DTYPE_BF16, f, m);
            if (stetho_st_writer_write(&w, buf, m * sizeof *buf)) return die("write");
        }
    }
    if (stetho_st_writer_finish(&w)) return die("finish");
    stetho_st_writer_abort(&w);
    free(buf);
    free(f);
    free(d);
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *cf = fopen(path, "w");
    fprintf(cf, "{\"architectures\": [\"Gemma3ForCausalLM\"], \"model_type\": \"gemma3_text\", "
                "\"num_hidden_layers\": %d, \"hidden_size\": %d, \"intermediate_size\": %d, "
                "\"num_attention_heads\": %d, \"num_key_value_heads\": %d, \"head_dim\": %d, \"vocab_size\": %d, "
                "\"max_position_embeddings\": 32768, \"rms_norm_eps\": 1e-6, \"rope_theta\": 1000000.0, "
                "\"rope_local_base_freq\": 10000.0, \"sliding_window\": 512, \"sliding_window_pattern\": 6, "
                "\"query_pre_attn_scalar\": 256, \"torch_dtype\": \"bfloat16\"}\n",
            n_layers, HIDDEN, INTER, N_HEADS, N_KV, HEAD_DIM, VOCAB);
    fclose(cf);
    g_params = params;
    printf("model: Gemma-3-shaped, %d layers, hidden %d, intermediate %d, vocab %d, bf16, %.0fM parameters\n",
           n_layers, HIDDEN, INTER, VOCAB, params / 1e6);
    return 0;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    int T = argc > 2 ? atoi(argv[2]) : 512;
    int n_layers = argc > 3 ? atoi(argv[3]) : 8;
    if (threads < 1 || T < 1 || n_layers < 1) {
        fprintf(stderr, "usage: bench_forward [THREADS] [TOKENS] [LAYERS]\n");
        return 2;
    }
    const char *tmp = getenv("STETHO_TMP");
    char dir[512];
    snprintf(dir, sizeof dir, "%s/bench_forward.%d", tmp && *tmp ? tmp : "/tmp", (int)getpid());
    mkdir(dir, 0755);
    if (write_model(dir, n_layers)) return 1;
    stetho_set_threads(threads);
    printf("BLAS: %s\n", openblas_get_config());
    stetho_model m;
    if (stetho_model_load(&m, dir)) return die("load");
    int32_t *tok = malloc((size_t)T * sizeof *tok);
    for (int t = 0; t < T; t++) tok[t] = t == 0 ? 2 : (int32_t)((t * 7919u) % VOCAB);
    float *logits = malloc((size_t)T * VOCAB * sizeof *logits);
    double best = 1e30;
    for (int rep = 0; rep < 3; rep++) { /* the first run also faults the mapping in */
        double t0 = now();
        if (stetho_model_forward(&m, tok, T, logits, NULL)) return die("forward");
        double dt = now() - t0;
        if (dt < best) best = dt;
    }
    printf("prompt processing: %d tokens, %d threads: %.3f s, %.1f tokens/s (best of 3)\n", T, threads, best,
           T / best);
    /* Issue 3's bar: llama.cpp on a Gemma-3-1B-shaped bf16 model, 2 threads, ~290 prompt tokens/s
     * (a figure measured elsewhere, not in this run). Prompt processing costs ~2 flops per weight
     * per token: llama.cpp's prompt benchmark multiplies every token by the 26 layers' 697M weights
     * and the LM head for the last token only; this engine multiplies every token by all of this
     * model's weights, LM head included. The bar is scaled by that work. */
    /* STETHO_LLAMACPP_PP_TOK_S replaces the 290 with a figure measured beside this run (llama-bench
     * -p 512 on a Gemma 3 1B bf16 GGUF with the same thread count) */
    const char *given = getenv("STETHO_LLAMACPP_PP_TOK_S");
    double ref = given && atof(given) > 0 ? atof(given) : 290.0;
    double bar = ref * 697e6 / (double)g_params;
    printf("llama.cpp reference: %.1f prompt tokens/s (%s), scaled to this model: %.1f\n", ref,
           given ? "STETHO_LLAMACPP_PP_TOK_S, measured beside this run" : "issue 3's figure, measured elsewhere", bar);
    printf("RESULT\tforward_prompt_tok_s_%dthreads\t%.1f\ttok/s\t%.1f\t%.3f\n", threads, T / best, bar, (T / best) / bar);
    /* The same prompt in bf16 compute (activations rounded to bf16 at each
     * product, as llama.cpp computes bf16 weights): speed against the same
     * bar, and how far its logits move from f32 compute's. */
    float *logits16 = malloc((size_t)T * VOCAB * sizeof *logits16);
    stetho_set_compute(STETHO_COMPUTE_BF16);
    double best16 = 1e30;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = now();
        if (stetho_model_forward(&m, tok, T, logits16, NULL)) return die("forward (bf16 compute)");
        double dt = now() - t0;
        if (dt < best16) best16 = dt;
    }
    stetho_set_compute(STETHO_COMPUTE_F32);
    double maxdiff = 0, lo = 1e30, hi = -1e30;
    for (size_t i = 0; i < (size_t)T * VOCAB; i++) {
        double d = fabs((double)logits16[i] - logits[i]);
        if (d > maxdiff) maxdiff = d;
        if (logits[i] < lo) lo = logits[i];
        if (logits[i] > hi) hi = logits[i];
    }
    free(logits16);
    printf("prompt processing, bf16 compute (%s kernels): %.3f s, %.1f tokens/s; logits vs f32 compute: max |diff| "
           "%.4f = %.2e of the logit range %.2f\n",
           stetho_compute_native(STETHO_COMPUTE_BF16) ? "AVX512-BF16" : "no bf16", best16, T / best16, maxdiff,
           maxdiff / (hi - lo), hi - lo);
    printf("RESULT\tforward_prompt_tok_s_%dthreads_bf16_compute\t%.1f\ttok/s\t%.1f\t%.3f\n", threads, T / best16, bar,
           (T / best16) / bar);
    /* Decode: one token per step over the KV cache after a 64-token prompt, for
     * one sequence and for 8 decoded together (aggregate tokens/s). Decoding is
     * memory-bound: every step reads all weights once, shared by the batch. */
    double dec[2] = {0, 0};
    int batches[2] = {1, 8}, steps = 32, P = T < 64 ? T : 64;
    for (int bi = 0; bi < 2; bi++) {
        int B = batches[bi];
        stetho_kv_cache kv;
        if (stetho_kv_cache_init(&kv, &m, B, P + steps + 1)) return die("kv cache");
        int seqs[8];
        int32_t feed[8];
        for (int b = 0; b < B; b++) {
            seqs[b] = b;
            if (stetho_model_prefill(&m, &kv, b, tok, P, logits, NULL)) return die("prefill");
            feed[b] = tok[P + b < T ? P + b : 1];
        }
        /* best of 3 runs of `steps` steps from the same cache length: one
         * short run is at the mercy of the memory system's moods */
        double best_dt = 1e30;
        for (int rep = 0; rep < 3; rep++) {
            for (int b = 0; b < B; b++) kv.len[b] = P;
            double t0 = now();
            for (int s = 0; s < steps; s++)
                if (stetho_model_decode(&m, &kv, seqs, feed, B, logits, NULL)) return die("decode");
            double dt = now() - t0;
            if (dt < best_dt) best_dt = dt;
        }
        dec[bi] = (double)B * steps / best_dt;
        stetho_kv_cache_free(&kv);
        printf("decode: batch %d, %d steps: %.2f tokens/s (best of 3)\n", B, steps, dec[bi]);
    }
    /* Issue 3's bar: llama.cpp decodes ~18 tokens/s on the ~1.0B-parameter bf16 Gemma-3-1B shape
     * with 2 threads (measured elsewhere); a decode step reads every weight once, so the bar is
     * scaled by the parameter count. */
    double dbar = 18.0 * 1.0e9 / (double)g_params;
    printf("RESULT\tdecode_tok_s_batch1_%dthreads\t%.2f\ttok/s\t%.2f\t%.3f\n", threads, dec[0], dbar, dec[0] / dbar);
    printf("RESULT\tdecode_tok_s_batch8_%dthreads\t%.2f\ttok/s\t%.2f\t%.3f\n", threads, dec[1], dec[0],
           dec[1] / dec[0]);
    stetho_model_free(&m);
    free(tok);
    free(logits);
    char path[600];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    remove(path);
    snprintf(path, sizeof path, "%s/config.json", dir);
    remove(path);
    rmdir(dir);
    return 0;
}
