/* stetho diff BASE FINETUNED -o TV.safetensors: the task vector and a per-layer x
 * per-module table of how much each part changed. */
#include "cli.h"
#include "stetho/taskvec.h"

#include <math.h>
#include <stdio.h>
#include <unistd.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

static const char *help =
    "usage: stetho diff BASE FINETUNED -o TV.safetensors [--dtype f32|bf16|f16] [--json REPORT]\n"
    "                   [--allow-missing] [--threads N]\n"
    "\n"
    "Writes the task vector tau = theta_ft - theta_base (computed in f32 from the exact\n"
    "inputs; tensor names unchanged) and prints a per-layer x per-module table:\n"
    "relative change ||tau||/||theta_base|| per module, the layer's ||tau||, its share of\n"
    "the total energy ||tau||^2, and the cosine between base and fine-tuned weights.\n"
    "  -o, --output PATH   task vector file (omit with --stats-only)\n"
    "  --stats-only        compute the statistics without writing a task vector\n"
    "  --dtype D           f32 (default), bf16 or f16 (rounded to nearest even)\n"
    "  --json REPORT       also write the full report (per tensor, per layer x module)\n"
    "  --allow-missing     skip tensors present in only one checkpoint (listed in the\n"
    "                      report) instead of refusing; the task vector then lacks them\n"
    "  --threads N         worker threads (default: all cores)\n"
    "BASE and FINETUNED must hold the same tensors with the same shapes and dtypes.\n";

static const stetho_module table_cols[] = {
    STETHO_MOD_ATTN_Q, STETHO_MOD_ATTN_K, STETHO_MOD_ATTN_V, STETHO_MOD_ATTN_O,
    STETHO_MOD_MLP_GATE, STETHO_MOD_MLP_UP, STETHO_MOD_MLP_DOWN,
};

static void print_table(const stetho_tv_report *rep) {
    stetho_tv_layer_row *rows;
    if (stetho_tv_report_by_layer(rep, &rows)) return;
    printf("relative change ||tau||/||theta_base|| per module; energy share = ||tau_layer||^2 / ||tau||^2\n\n");
    printf("%-6s", "layer");
    for (size_t c = 0; c < sizeof table_cols / sizeof table_cols[0]; c++) printf(" %8s", stetho_module_short(table_cols[c]));
    printf(" %8s %11s %11s %8s %8s %9s\n", "norms", "||tau||", "||base||", "rel", "share", "cos(b,ft)");
    for (int l = 0; l <= rep->n_layers; l++) {
        const stetho_tv_layer_row *r = &rows[l];
        if (l == rep->n_layers && r->layer_base_sq == 0 && r->layer_tau_sq == 0) break;
        if (l < rep->n_layers) printf("%-6d", l);
        else printf("%-6s", "other");
        for (size_t c = 0; c < sizeof table_cols / sizeof table_cols[0]; c++) {
            stetho_module m = table_cols[c];
            if (r->present[m] && r->base_sq[m] > 0) printf(" %8.4f", sqrt(r->tau_sq[m] / r->base_sq[m]));
            else printf(" %8s", "-");
        }
        double nt = 0, nb = 0;
        bool any = false;
        for (int m = 0; m < STETHO_MOD_COUNT; m++)
            if (r->present[m] && stetho_module_group((stetho_module)m) == STETHO_GROUP_NORM) {
                nt += r->tau_sq[m];
                nb += r->base_sq[m];
                any = true;
            }
        if (any && nb > 0) printf(" %8.4f", sqrt(nt / nb));
        else printf(" %8s", "-");
        double cos = (r->layer_base_sq > 0 && r->layer_ft_sq > 0) ? r->layer_dot / sqrt(r->layer_base_sq * r->layer_ft_sq) : 0;
        printf(" %11.4g %11.4g %8.4f %7.2f%% %9.6f\n", sqrt(r->layer_tau_sq), sqrt(r->layer_base_sq),
               r->layer_base_sq > 0 ? sqrt(r->layer_tau_sq / r->layer_base_sq) : 0,
               rep->total_tau_sq > 0 ? 100.0 * r->layer_tau_sq / rep->total_tau_sq : 0, cos);
    }
    printf("\ntotal: ||tau|| = %.6g, ||theta_base|| = %.6g, relative change %.6f, %zu tensors",
           sqrt(rep->total_tau_sq), sqrt(rep->total_base_sq),
           rep->total_base_sq > 0 ? sqrt(rep->total_tau_sq / rep->total_base_sq) : 0, rep->n_tensors);
    if (rows[rep->n_layers].layer_base_sq > 0) printf(" (row 'other': embeddings, final norm, vision)");
    printf("\n");
    for (size_t i = 0; i < rep->n_skipped; i++) printf("skipped: %s (%s)\n", rep->skipped[i].name, rep->skipped[i].reason);
    free(rows);
}

static int write_text_file(const char *path, const char *text) {
    size_t n = strlen(text);
    char *body = malloc(n + 2);
    if (!body) {
        cli_error(NULL, "out of memory");
        return CLI_EXIT_FAIL;
    }
    memcpy(body, text, n);
    body[n] = '\n';
    stetho_status st = stetho_write_file(path, body, n + 1);
    free(body);
    return st ? cli_fail(st, NULL) : 0;
}

int cmd_diff(int argc, char **argv) {
    const char *paths[2] = {NULL, NULL}, *out = NULL, *json_path = NULL, *val = NULL;
    stetho_diff_opts o = {STETHO_DTYPE_F32, false};
    bool bad = false, stats_only = false;
    int n_paths = 0;
    for (int i = 1; i < argc && !bad; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(help, stdout);
            return 0;
        } else if (cli_opt(argc, argv, &i, "-o", &out, &bad, "diff") || cli_opt(argc, argv, &i, "--output", &out, &bad, "diff")) {
        } else if (cli_opt(argc, argv, &i, "--json", &json_path, &bad, "diff")) {
        } else if (cli_opt(argc, argv, &i, "--dtype", &val, &bad, "diff")) {
            if (!bad && (!stetho_dtype_from_user(val, &o.out_dtype)))
                return cli_usage("diff", "--dtype must be f32, bf16 or f16, not '%s'", val);
        } else if (cli_opt(argc, argv, &i, "--threads", &val, &bad, "diff")) {
            long t;
            if (!bad && !cli_parse_int("diff", "--threads", val, 1, 1024, &t)) return CLI_EXIT_USAGE;
            if (!bad) stetho_set_threads((int)t);
        } else if (!strcmp(argv[i], "--allow-missing")) {
            o.allow_missing = true;
        } else if (!strcmp(argv[i], "--stats-only")) {
            stats_only = true;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            return cli_usage("diff", "unknown option '%s'", argv[i]);
        } else if (n_paths < 2) {
            paths[n_paths++] = argv[i];
        } else {
            return cli_usage("diff", "unexpected argument '%s'", argv[i]);
        }
    }
    if (bad) return CLI_EXIT_USAGE;
    if (n_paths != 2) return cli_usage("diff", "need BASE and FINETUNED");
    if (!out && !stats_only) return cli_usage("diff", "missing -o TV.safetensors (or --stats-only)");
    if (out && stats_only) return cli_usage("diff", "-o and --stats-only exclude each other");

    stetho_checkpoint base, ft;
    stetho_status st = stetho_checkpoint_open(&base, paths[0]);
    if (st) return cli_fail(st, "BASE must be a Hugging Face model directory or a .safetensors file");
    if ((st = stetho_checkpoint_open(&ft, paths[1]))) {
        stetho_checkpoint_close(&base);
        return cli_fail(st, "FINETUNED must be a Hugging Face model directory or a .safetensors file");
    }
    stetho_tv_report rep;
    int rc = 0;
    /* with --json the task vector goes to a temporary name first, renamed
     * into place only once the report is written too: a failed command
     * leaves neither */
    char *staged = NULL;
    if (out && json_path) {
        size_t n = strlen(out) + 32;
        if (!(staged = malloc(n))) {
            stetho_checkpoint_close(&ft);
            stetho_checkpoint_close(&base);
            cli_error(NULL, "out of memory");
            return CLI_EXIT_FAIL;
        }
        snprintf(staged, n, "%s.staged.%ld", out, (long)getpid());
    }
    st = stetho_taskvec_diff(&base, &ft, staged ? staged : out, &o, &rep);
    if (st) {
        rc = cli_fail(st, st == STETHO_ERR_MISMATCH ? "BASE and FINETUNED must be the same architecture; --allow-missing skips tensors only one has"
                                                   : NULL);
    } else {
        if (json_path) {
            char *text;
            if ((st = stetho_tv_report_json(&rep, base.path, ft.path, &text))) rc = cli_fail(st, NULL);
            else {
                rc = write_text_file(json_path, text);
                free(text);
            }
        }
        if (staged && !rc && rename(staged, out) != 0) {
            cli_error(NULL, "%s: cannot rename into place: %s", out, strerror(errno));
            remove(json_path);
            rc = CLI_EXIT_FAIL;
        }
        if (!rc) {
            print_table(&rep);
            if (out) printf("wrote %s (%s)\n", out, stetho_dtype_name(o.out_dtype));
        }
        stetho_tv_report_free(&rep);
    }
    if (staged) {
        remove(staged); /* gone already unless something failed */
        free(staged);
    }
    stetho_checkpoint_close(&ft);
    stetho_checkpoint_close(&base);
    return rc;
}
