/* stetho tokenize / stetho detokenize: text <-> token ids with a model's
 * tokenizer.json, for one string on the command line or a JSONL file of them. */
#include "cli.h"
#include "stetho/jsonl.h"
#include "stetho/tokenizer.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *help_tokenize =
    "usage: stetho tokenize PATH (--text TEXT | --input F.jsonl) [--no-special]\n"
    "\n"
    "PATH is a model directory (with tokenizer.json) or a tokenizer.json file.\n"
    "  --text TEXT     print the ids of TEXT as a JSON array\n"
    "  --input F       JSONL, one object per line with a \"text\" field ('-' = stdin);\n"
    "                  writes each object with \"ids\" added, one per line, to stdout\n"
    "  --no-special    add_special_tokens=false: no BOS or other template tokens\n";

static const char *help_detokenize =
    "usage: stetho detokenize PATH (--ids 1,2,3 | --input F.jsonl) [--skip-special]\n"
    "\n"
    "PATH is a model directory (with tokenizer.json) or a tokenizer.json file.\n"
    "  --ids LIST      comma-separated ids; prints the decoded text\n"
    "  --input F       JSONL, one object per line with an \"ids\" array ('-' = stdin);\n"
    "                  writes each object with \"text\" added, one per line, to stdout\n"
    "  --skip-special  drop special tokens (BOS, EOS, ...) from the text\n";

typedef struct {
    const char *path, *text, *ids, *input;
    bool flag; /* --no-special / --skip-special */
} opts;

/* Returns -1 when parsing succeeded, else the exit code. */
static int parse_args(int argc, char **argv, const char *verb, const char *help, const char *value_opt,
                      const char *flag_opt, opts *o) {
    bool bad = false;
    memset(o, 0, sizeof *o);
    const char **value = !strcmp(value_opt, "--text") ? &o->text : &o->ids;
    for (int i = 1; i < argc && !bad; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(help, stdout);
            return 0;
        } else if (cli_opt(argc, argv, &i, value_opt, value, &bad, verb)) {
        } else if (cli_opt(argc, argv, &i, "--input", &o->input, &bad, verb)) {
        } else if (!strcmp(argv[i], flag_opt)) {
            o->flag = true;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            return cli_usage(verb, "unknown option '%s'", argv[i]);
        } else if (!o->path) {
            o->path = argv[i];
        } else {
            return cli_usage(verb, "unexpected argument '%s'", argv[i]);
        }
    }
    if (bad) return CLI_EXIT_USAGE;
    if (!o->path) return cli_usage(verb, "missing PATH (a model directory or tokenizer.json)");
    if (!*value == !o->input) return cli_usage(verb, "give exactly one of %s and --input", value_opt);
    return -1;
}

static int load(stetho_tokenizer *tok, const char *path) {
    stetho_status st = stetho_tokenizer_load(tok, path);
    if (st) return cli_fail(st, "PATH must be a model directory holding tokenizer.json, or a tokenizer.json file");
    return 0;
}

static json_t *ids_to_json(const int32_t *ids, size_t n) {
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++)
        if (json_array_append_new(a, json_integer(ids[i]))) {
            json_decref(a);
            return NULL;
        }
    return a;
}

/* Print one object as a line; false on a write error. */
static bool print_line(json_t *o) {
    char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!s) return false;
    bool ok = fputs(s, stdout) >= 0 && fputc('\n', stdout) != EOF;
    free(s);
    return ok;
}

int cmd_tokenize(int argc, char **argv) {
    opts o;
    int rc = parse_args(argc, argv, "tokenize", help_tokenize, "--text", "--no-special", &o);
    if (rc >= 0) return rc;
    stetho_tokenizer tok;
    if ((rc = load(&tok, o.path))) return rc;
    int32_t *ids;
    size_t n;
    stetho_status st;
    if (o.text) {
        if ((st = stetho_tokenizer_encode(&tok, o.text, strlen(o.text), !o.flag, &ids, &n))) {
            rc = cli_fail(st, "--text must be UTF-8");
        } else {
            json_t *a = ids_to_json(ids, n);
            if (!a || !print_line(a)) rc = cli_fail(STETHO_ERR_IO, "could not write the ids");
            json_decref(a);
            free(ids);
        }
        stetho_tokenizer_free(&tok);
        return rc;
    }
    stetho_jsonl_reader r;
    if ((st = stetho_jsonl_open(&r, o.input))) {
        stetho_tokenizer_free(&tok);
        return cli_fail(st, "--input must be a JSONL file (one object per line)");
    }
    bool got;
    while (!rc && !(st = stetho_jsonl_next(&r, &got)) && got) {
        json_t *text = json_object_get(r.obj, "text");
        if (!json_is_string(text)) {
            cli_error("each line needs a string field \"text\"", "%s:%zu: missing string field 'text'", o.input,
                      r.line_no);
            rc = CLI_EXIT_FAIL;
            break;
        }
        if ((st = stetho_tokenizer_encode(&tok, json_string_value(text), json_string_length(text), !o.flag, &ids, &n))) {
            cli_error(NULL, "%s:%zu: %s", o.input, r.line_no, stetho_last_error());
            rc = CLI_EXIT_FAIL;
            break;
        }
        json_t *a = ids_to_json(ids, n);
        free(ids);
        if (!a || json_object_set_new(r.obj, "ids", a) || !print_line(r.obj)) rc = cli_fail(STETHO_ERR_IO, "could not write the output");
    }
    if (!rc && st) rc = cli_fail(st, "each line must be a JSON object with a \"text\" field");
    stetho_jsonl_close(&r);
    stetho_tokenizer_free(&tok);
    return rc;
}

/* "1,2,3" -> ids; a usage error on anything else. */
static int parse_id_list(const char *s, int32_t **ids, size_t *n) {
    size_t cap = 16;
    *n = 0;
    *ids = malloc(cap * sizeof **ids);
    if (!*ids) return cli_fail(STETHO_ERR_NOMEM, NULL);
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v > INT32_MAX || (*end && *end != ',')) {
            free(*ids);
            *ids = NULL;
            return cli_usage("detokenize", "--ids must be comma-separated non-negative integers, not '%s'", s);
        }
        if (*n == cap) {
            int32_t *q = realloc(*ids, (cap *= 2) * sizeof *q);
            if (!q) {
                free(*ids);
                *ids = NULL;
                return cli_fail(STETHO_ERR_NOMEM, NULL);
            }
            *ids = q;
        }
        (*ids)[(*n)++] = (int32_t)v;
        p = *end ? end + 1 : end;
        if (*end && !*p) { /* trailing comma */
            free(*ids);
            *ids = NULL;
            return cli_usage("detokenize", "--ids has a trailing comma: '%s'", s);
        }
    }
    return 0;
}

int cmd_detokenize(int argc, char **argv) {
    opts o;
    int rc = parse_args(argc, argv, "detokenize", help_detokenize, "--ids", "--skip-special", &o);
    if (rc >= 0) return rc;
    int32_t *ids = NULL;
    size_t n = 0;
    if (o.ids && (rc = parse_id_list(o.ids, &ids, &n))) return rc;
    stetho_tokenizer tok;
    if ((rc = load(&tok, o.path))) {
        free(ids);
        return rc;
    }
    stetho_status st;
    char *text;
    size_t len;
    if (o.ids) {
        if ((st = stetho_tokenizer_decode(&tok, ids, n, o.flag, &text, &len))) rc = cli_fail(st, "ids must be below the vocabulary size");
        else {
            if (fwrite(text, 1, len, stdout) != len || fputc('\n', stdout) == EOF) rc = cli_fail(STETHO_ERR_IO, NULL);
            free(text);
        }
        free(ids);
        stetho_tokenizer_free(&tok);
        return rc;
    }
    stetho_jsonl_reader r;
    if ((st = stetho_jsonl_open(&r, o.input))) {
        stetho_tokenizer_free(&tok);
        return cli_fail(st, "--input must be a JSONL file (one object per line)");
    }
    bool got;
    while (!rc && !(st = stetho_jsonl_next(&r, &got)) && got) {
        json_t *a = json_object_get(r.obj, "ids");
        size_t m = json_array_size(a);
        bool ok = json_is_array(a);
        int32_t *v = malloc((m ? m : 1) * sizeof *v);
        for (size_t i = 0; ok && v && i < m; i++) {
            json_t *x = json_array_get(a, i);
            ok = json_is_integer(x) && json_integer_value(x) >= 0 && json_integer_value(x) <= INT32_MAX;
            if (ok) v[i] = (int32_t)json_integer_value(x);
        }
        if (!v) rc = cli_fail(STETHO_ERR_NOMEM, NULL);
        else if (!ok) {
            cli_error("each line needs an \"ids\" array of non-negative integers", "%s:%zu: bad or missing 'ids'",
                      o.input, r.line_no);
            rc = CLI_EXIT_FAIL;
        } else if ((st = stetho_tokenizer_decode(&tok, v, m, o.flag, &text, &len))) {
            cli_error(NULL, "%s:%zu: %s", o.input, r.line_no, stetho_last_error());
            rc = CLI_EXIT_FAIL;
        } else {
            json_t *js = json_stringn(text, len);
            free(text);
            if (!js || json_object_set_new(r.obj, "text", js) || !print_line(r.obj)) rc = cli_fail(STETHO_ERR_IO, NULL);
        }
        free(v);
    }
    if (!rc && st) rc = cli_fail(st, "each line must be a JSON object with an \"ids\" field");
    stetho_jsonl_close(&r);
    stetho_tokenizer_free(&tok);
    return rc;
}
