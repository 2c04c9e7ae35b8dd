/* stetho perplexity MODEL --input TEXT.jsonl: general-text perplexity. */
#include "cli.h"
#include "stetho/perplexity.h"

#include <stdio.h>
#include <string.h>

static const char *help =
    "usage: stetho perplexity MODEL --input TEXT.jsonl [--max-tokens N] [--limit N] [--json] [--threads N]\n"
    "                         [--compute f32|bf16]\n"
    "\n"
    "Token-level perplexity of the \"text\" of every line (BOS added, every later\n"
    "token predicted; exp of the token-weighted mean NLL). Documents longer than\n"
    "--max-tokens are scored in windows with a stride of half a window.\n"
    "  --max-tokens N   window length (default: the model's context)\n"
    "  --limit N        first N documents only\n"
    "  --json           print {\"perplexity\", \"nll\", \"tokens\", \"documents\"}\n"
    "  --compute MODE   f32 (default) or bf16: activations rounded to bf16 at bf16 weights\n";

int cmd_perplexity(int argc, char **argv) {
    const char *model_path = NULL, *input = NULL, *val = NULL;
    bool bad = false, json = false;
    long max_tokens = 0, limit = 0, l;
    for (int i = 1; i < argc && !bad; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(help, stdout);
            return 0;
        } else if (!strcmp(argv[i], "--json")) {
            json = true;
        } else if (cli_opt(argc, argv, &i, "--input", &input, &bad, "perplexity")) {
        } else if (cli_opt(argc, argv, &i, "--max-tokens", &val, &bad, "perplexity")) {
            if (!bad && !cli_parse_int("perplexity", "--max-tokens", val, 2, 1 << 24, &max_tokens)) return CLI_EXIT_USAGE;
        } else if (cli_opt(argc, argv, &i, "--limit", &val, &bad, "perplexity")) {
            if (!bad && !cli_parse_int("perplexity", "--limit", val, 1, 1L << 40, &limit)) return CLI_EXIT_USAGE;
        } else if (cli_compute_opt(argc, argv, &i, &bad, "perplexity")) {
        } else if (cli_opt(argc, argv, &i, "--threads", &val, &bad, "perplexity")) {
            if (!bad && !cli_parse_int("perplexity", "--threads", val, 1, 1024, &l)) return CLI_EXIT_USAGE;
            if (!bad) stetho_set_threads((int)l);
        } else if (argv[i][0] == '-' && argv[i][1]) {
            return cli_usage("perplexity", "unknown option '%s'", argv[i]);
        } else if (!model_path) {
            model_path = argv[i];
        } else {
            return cli_usage("perplexity", "unexpected argument '%s'", argv[i]);
        }
    }
    if (bad) return CLI_EXIT_USAGE;
    if (!model_path) return cli_usage("perplexity", "need MODEL");
    if (!input) return cli_usage("perplexity", "need --input TEXT.jsonl");
    stetho_model m;
    stetho_tokenizer tok;
    stetho_status st = stetho_model_load(&m, model_path);
    if (st) return cli_fail(st, "MODEL must be a Hugging Face model directory (config.json + safetensors)");
    if ((st = stetho_tokenizer_load(&tok, model_path))) {
        stetho_model_free(&m);
        return cli_fail(st, "perplexity needs the model directory's tokenizer.json");
    }
    stetho_perplexity_result r;
    st = stetho_perplexity_run(&m, &tok, input, (int)max_tokens, limit, &r);
    int rc = 0;
    if (st) rc = cli_fail(st, "--input must be JSONL with a \"text\" field per line");
    else if (json)
        printf("{\"perplexity\": %.6f, \"nll\": %.6f, \"tokens\": %llu, \"documents\": %llu}\n", r.perplexity, r.nll,
               (unsigned long long)r.tokens, (unsigned long long)r.documents);
    else
        printf("perplexity %.4f (mean NLL %.4f nats over %llu tokens of %llu documents)\n", r.perplexity, r.nll,
               (unsigned long long)r.tokens, (unsigned long long)r.documents);
    stetho_tokenizer_free(&tok);
    stetho_model_free(&m);
    return rc;
}
