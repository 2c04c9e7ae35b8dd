/* stetho capture MODEL (--text T | --tokens 2,17,9 | --input F.jsonl) --hooks LIST
 * -o OUT.safetensors: run prompts through the model and write the requested
 * activations. */
#include "cli.h"
#include "stetho/jsonl.h"
#include "stetho/model.h"
#include "stetho/tokenizer.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *help =
    "usage: stetho capture MODEL (--text TEXT | --tokens IDS | --input F.jsonl) --hooks LIST\n"
    "                      -o OUT.safetensors [--threads N] [--compute f32|bf16]\n"
    "\n"
    "Runs the prompt(s) through the model (f32 compute unless --compute bf16) and\n"
    "writes the requested activations, named by TransformerLens hook names, each\n"
    "F32 [tokens, dim], plus I32 `tokens` [tokens]. With --input the prompts are\n"
    "concatenated along the token axis and I64 `prompt_offsets` [prompts + 1] marks\n"
    "where each starts.\n"
    "  --text TEXT      encode TEXT with the model's tokenizer.json (BOS added)\n"
    "  --tokens IDS     comma-separated token ids, e.g. 2,17,9 (include BOS yourself)\n"
    "  --input F        JSONL, one prompt per line in a \"text\" field (BOS added)\n"
    "  --hooks LIST     comma-separated: logits, blocks.L.hook_resid_pre,\n"
    "                   blocks.L.hook_attn_out, blocks.L.hook_mlp_out,\n"
    "                   blocks.L.hook_resid_post; L may be * for every layer,\n"
    "                   e.g. 'blocks.*.hook_resid_post,logits'\n"
    "  -o, --output P   output .safetensors file\n"
    "  --threads N      worker threads (default: all cores)\n"
    "  --compute MODE   f32 (default) or bf16: activations rounded to bf16 at bf16 weights\n";

static int parse_ids(const char *s, int32_t **out, int *n) {
    size_t cap = 16, len = 0;
    int32_t *ids = malloc(cap * sizeof *ids);
    if (!ids) return cli_usage("capture", "out of memory");
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v > INT32_MAX || (*end != ',' && *end != '\0') || len >= 100000000) {
            free(ids);
            return cli_usage("capture", "--tokens must be comma-separated non-negative ids, not '%s'", s);
        }
        if (len == cap) {
            int32_t *g = realloc(ids, 2 * cap * sizeof *ids);
            if (!g) {
                free(ids);
                return cli_usage("capture", "out of memory");
            }
            ids = g;
            cap *= 2;
        }
        ids[len++] = (int32_t)v;
        p = *end == ',' ? end + 1 : end;
        if (*end == ',' && !*p) {
            free(ids);
            return cli_usage("capture", "--tokens ends with a comma: '%s'", s);
        }
    }
    if (!len) {
        free(ids);
        return cli_usage("capture", "--tokens is empty");
    }
    *out = ids;
    *n = (int)len;
    return 0;
}

/* --input: every line's "text", tokenized, captured into one file. */
static int capture_input(const char *model_path, const char *input, const char *hooks_s, const char *out) {
    stetho_tokenizer tok;
    stetho_status st = stetho_tokenizer_load(&tok, model_path);
    if (st) return cli_fail(st, "--input needs the model's tokenizer.json");
    stetho_jsonl_reader r;
    if ((st = stetho_jsonl_open(&r, input))) {
        stetho_tokenizer_free(&tok);
        return cli_fail(st, "--input must be a JSONL file (one object per line)");
    }
    int32_t **ids = NULL;
    int *lens = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    bool got;
    while (!rc && !(st = stetho_jsonl_next(&r, &got)) && got) {
        json_t *t = json_object_get(r.obj, "text");
        if (!json_is_string(t)) {
            cli_error("each line needs a string field \"text\"", "%s:%zu: missing string field 'text'", input, r.line_no);
            rc = CLI_EXIT_FAIL;
            break;
        }
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            int32_t **ni = realloc(ids, cap * sizeof *ids);
            if (ni) ids = ni;
            int *nl = realloc(lens, cap * sizeof *lens);
            if (nl) lens = nl;
            if (!ni || !nl) {
                cli_error(NULL, "out of memory");
                rc = CLI_EXIT_FAIL;
                break;
            }
        }
        size_t len = 0;
        if ((st = stetho_tokenizer_encode(&tok, json_string_value(t), json_string_length(t), true, &ids[n], &len))) break;
        if (len == 0 || len > INT32_MAX) {
            free(ids[n]);
            cli_error("give every line some text", "%s:%zu: the text encodes to %zu tokens", input, r.line_no, len);
            rc = CLI_EXIT_FAIL;
            break;
        }
        lens[n++] = (int)len;
    }
    if (!rc && st) rc = cli_fail(st, NULL);
    if (!rc && n == 0) {
        cli_error("give one JSON object with a \"text\" field per line", "%s has no prompts", input);
        rc = CLI_EXIT_FAIL;
    }
    stetho_jsonl_close(&r);
    stetho_tokenizer_free(&tok);
    stetho_model m;
    if (!rc && (st = stetho_model_load(&m, model_path)))
        rc = cli_fail(st, "MODEL must be a Hugging Face model directory (config.json + safetensors)");
    else if (!rc) {
        st = stetho_model_capture_many(&m, (const int32_t *const *)ids, lens, n, hooks_s, out);
        if (st) rc = cli_fail(st, strstr(stetho_last_error(), "hook") ? "see 'stetho capture --help' for hook names" : NULL);
        else {
            size_t total = 0;
            for (size_t i = 0; i < n; i++) total += (size_t)lens[i];
            printf("wrote %s (%zu prompts, %zu tokens)\n", out, n, total);
        }
        stetho_model_free(&m);
    }
    for (size_t i = 0; i < n; i++) free(ids[i]);
    free(ids);
    free(lens);
    return rc;
}

int cmd_capture(int argc, char **argv) {
    const char *model_path = NULL, *tokens_s = NULL, *text = NULL, *hooks_s = NULL, *out = NULL, *val = NULL;
    const char *input = NULL;
    bool bad = false;
    for (int i = 1; i < argc && !bad; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(help, stdout);
            return 0;
        } else if (cli_opt(argc, argv, &i, "-o", &out, &bad, "capture") ||
                   cli_opt(argc, argv, &i, "--output", &out, &bad, "capture") ||
                   cli_opt(argc, argv, &i, "--tokens", &tokens_s, &bad, "capture") ||
                   cli_opt(argc, argv, &i, "--text", &text, &bad, "capture") ||
                   cli_opt(argc, argv, &i, "--input", &input, &bad, "capture") ||
                   cli_opt(argc, argv, &i, "--hooks", &hooks_s, &bad, "capture")) {
        } else if (cli_compute_opt(argc, argv, &i, &bad, "capture")) {
        } else if (cli_opt(argc, argv, &i, "--threads", &val, &bad, "capture")) {
            long t;
            if (!bad && !cli_parse_int("capture", "--threads", val, 1, 1024, &t)) return CLI_EXIT_USAGE;
            if (!bad) stetho_set_threads((int)t);
        } else if (argv[i][0] == '-' && argv[i][1]) {
            return cli_usage("capture", "unknown option '%s'", argv[i]);
        } else if (!model_path) {
            model_path = argv[i];
        } else {
            return cli_usage("capture", "unexpected argument '%s'", argv[i]);
        }
    }
    if (bad) return CLI_EXIT_USAGE;
    if (!model_path) return cli_usage("capture", "need MODEL");
    if ((tokens_s != NULL) + (text != NULL) + (input != NULL) != 1)
        return cli_usage("capture", "need exactly one of --text TEXT, --tokens IDS and --input F.jsonl");
    if (!hooks_s) return cli_usage("capture", "need --hooks LIST");
    if (!out) return cli_usage("capture", "need -o OUT.safetensors");
    if (input) return capture_input(model_path, input, hooks_s, out);
    int32_t *ids = NULL;
    int n = 0;
    int rc = 0;
    if (tokens_s) {
        if ((rc = parse_ids(tokens_s, &ids, &n))) return rc;
    } else {
        stetho_tokenizer tok;
        size_t len = 0;
        stetho_status ts = stetho_tokenizer_load(&tok, model_path);
        if (ts) return cli_fail(ts, "--text needs the model's tokenizer.json; use --tokens otherwise");
        ts = stetho_tokenizer_encode(&tok, text, strlen(text), true, &ids, &len);
        stetho_tokenizer_free(&tok);
        if (ts) return cli_fail(ts, NULL);
        if (len == 0 || len > 100000000) {
            free(ids);
            cli_error(NULL, "--text encodes to %zu tokens", len);
            return CLI_EXIT_FAIL;
        }
        n = (int)len;
    }
    stetho_model m;
    stetho_status st = stetho_model_load(&m, model_path);
    if (st) {
        free(ids);
        return cli_fail(st, "MODEL must be a Hugging Face model directory (config.json + safetensors)");
    }
    st = stetho_model_capture(&m, ids, n, hooks_s, out);
    if (st) rc = cli_fail(st, strstr(stetho_last_error(), "hook") ? "see 'stetho capture --help' for hook names" : NULL);
    else printf("wrote %s (%d tokens)\n", out, n);
    stetho_model_free(&m);
    free(ids);
    return rc;
}
