/* stetho generate MODEL --prompt TEXT [--chat] [...]: continue a prompt,
 * streaming the text to stdout as it is produced. */
#include "cli.h"
#include "stetho/generate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *help =
    "usage: stetho generate MODEL --prompt TEXT [--chat] [--max-tokens N] [--temperature T]\n"
    "                       [--top-p P] [--seed S] [--stop STR]... [--threads N] [--compute f32|bf16] [--quiet]\n"
    "\n"
    "Continues TEXT with the model (f32 compute, KV cache) and streams the new text\n"
    "to stdout. Greedy by default (temperature 0); a summary goes to stderr.\n"
    "  --prompt TEXT      the prompt (BOS added as the tokenizer's post-processor says)\n"
    "  --chat             wrap TEXT in the model's chat template as one user turn\n"
    "                     (Gemma: <bos><start_of_turn>user\\nTEXT<end_of_turn>\\n\n"
    "                     <start_of_turn>model\\n) and stop at end-of-turn\n"
    "  --max-tokens N     new tokens at most (default 256)\n"
    "  --temperature T    0 = greedy (default); > 0 samples\n"
    "  --top-p P          nucleus sampling mass (default 1 = off)\n"
    "  --seed S           sampling seed (default 0)\n"
    "  --stop STR         end the output before STR (repeatable); EOS and\n"
    "                     end-of-turn tokens always stop\n"
    "  --threads N        worker threads (default: all cores)\n"
    "  --compute MODE     f32 (default) or bf16: activations rounded to bf16 at bf16 weights\n"
    "  --quiet            no summary on stderr\n";

static void on_piece(void *user, size_t seq, const char *piece, size_t len) {
    (void)user;
    (void)seq;
    fwrite(piece, 1, len, stdout);
    fflush(stdout);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

int cmd_generate(int argc, char **argv) {
    const char *model_path = NULL, *prompt = NULL, *val = NULL;
    bool bad = false, chat = false, quiet = false;
    stetho_gen_opts o;
    stetho_gen_opts_default(&o);
    o.batch_size = 1;
    const char **stops = calloc((size_t)argc, sizeof *stops);
    if (!stops) return cli_usage("generate", "out of memory");
    size_t n_stop = 0;
    int rc = 0;
    for (int i = 1; i < argc && !bad; i++) {
        long l;
        double d;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(help, stdout);
            free(stops);
            return 0;
        } else if (!strcmp(argv[i], "--chat")) {
            chat = true;
        } else if (!strcmp(argv[i], "--quiet")) {
            quiet = true;
        } else if (cli_opt(argc, argv, &i, "--prompt", &prompt, &bad, "generate")) {
        } else if (cli_opt(argc, argv, &i, "--stop", &val, &bad, "generate")) {
            if (!bad) stops[n_stop++] = val;
        } else if (cli_opt(argc, argv, &i, "--max-tokens", &val, &bad, "generate")) {
            if (!bad && !(bad = !cli_parse_int("generate", "--max-tokens", val, 1, 1 << 24, &l))) o.max_new_tokens = (int)l;
        } else if (cli_opt(argc, argv, &i, "--temperature", &val, &bad, "generate")) {
            if (!bad && !(bad = !cli_parse_double("generate", "--temperature", val, &d))) {
                if (!(d >= 0 && d <= 100)) bad = cli_usage("generate", "--temperature must be in [0, 100]");
                o.temperature = (float)d;
            }
        } else if (cli_opt(argc, argv, &i, "--top-p", &val, &bad, "generate")) {
            if (!bad && !(bad = !cli_parse_double("generate", "--top-p", val, &d))) {
                if (!(d > 0 && d <= 1)) bad = cli_usage("generate", "--top-p must be in (0, 1]");
                o.top_p = (float)d;
            }
        } else if (cli_opt(argc, argv, &i, "--seed", &val, &bad, "generate")) {
            if (!bad && !(bad = !cli_parse_int("generate", "--seed", val, 0, INT64_MAX, &l))) o.seed = (uint64_t)l;
        } else if (cli_compute_opt(argc, argv, &i, &bad, "generate")) {
        } else if (cli_opt(argc, argv, &i, "--threads", &val, &bad, "generate")) {
            if (!bad && !(bad = !cli_parse_int("generate", "--threads", val, 1, 1024, &l))) stetho_set_threads((int)l);
        } else if (argv[i][0] == '-' && argv[i][1]) {
            rc = cli_usage("generate", "unknown option '%s'", argv[i]);
            bad = true;
        } else if (!model_path) {
            model_path = argv[i];
        } else {
            rc = cli_usage("generate", "unexpected argument '%s'", argv[i]);
            bad = true;
        }
    }
    if (!bad && !model_path) bad = cli_usage("generate", "need MODEL");
    if (!bad && !prompt) bad = cli_usage("generate", "need --prompt TEXT");
    if (bad) {
        free(stops);
        return CLI_EXIT_USAGE;
    }
    (void)rc;
    o.stop = stops;
    o.n_stop = n_stop;

    stetho_model m;
    stetho_tokenizer tok;
    stetho_status st = stetho_model_load(&m, model_path);
    if (st) {
        free(stops);
        return cli_fail(st, "MODEL must be a Hugging Face model directory (config.json + safetensors)");
    }
    if ((st = stetho_tokenizer_load(&tok, model_path))) {
        stetho_model_free(&m);
        free(stops);
        return cli_fail(st, "generation needs the model directory's tokenizer.json");
    }
    char *text = NULL;
    int32_t *ids = NULL;
    size_t n = 0;
    if (chat) st = stetho_chat_render(&m, &tok, prompt, &text);
    /* a rendered chat already carries its BOS: add no special tokens */
    if (!st) st = stetho_tokenizer_encode(&tok, chat ? text : prompt, strlen(chat ? text : prompt), !chat, &ids, &n);
    if (!st && (n == 0 || n > (size_t)INT32_MAX)) {
        cli_error("give a non-empty --prompt", "the prompt encodes to %zu tokens", n);
        rc = CLI_EXIT_FAIL;
    } else if (st) {
        rc = cli_fail(st, NULL);
    } else {
        int len = (int)n;
        stetho_gen_result r;
        double t0 = now_s();
        st = stetho_generate(&m, &tok, (const int32_t *const *)&ids, &len, 1, &o, &r, on_piece, NULL, NULL);
        double dt = now_s() - t0;
        if (st) {
            rc = cli_fail(st, NULL);
        } else {
            putchar('\n');
            fflush(stdout);
            static const char *why[] = {"length", "stop string", "end of sequence"};
            if (!quiet)
                fprintf(stderr, "[%d prompt tokens, %d new tokens in %.2f s (%.1f tok/s), finished: %s]\n", len,
                        r.n_tokens, dt, dt > 0 ? r.n_tokens / dt : 0.0, why[r.finish]);
            stetho_gen_result_free(&r);
        }
    }
    free(ids);
    free(text);
    stetho_tokenizer_free(&tok);
    stetho_model_free(&m);
    free(stops);
    return rc;
}
