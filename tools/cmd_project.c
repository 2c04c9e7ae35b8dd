/* stetho project --task-vector TV --sae-dir DIR (--scores S [--features K] |
 * --features-file F) -o OUT: the scalpel baseline, with energy accounting. */
#include "cli.h"
#include "stetho/project.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *help =
    "usage: stetho project --task-vector TV --sae-dir DIR -o OUT.safetensors\n"
    "                      (--scores SCORES.json [--features K] | --features-file F.json)\n"
    "                      [--json REPORT] [--keep-other] [--threads N]\n"
    "\n"
    "The scalpel: for each chosen layer, project the task vector onto the span of\n"
    "its SAE's decoder directions for the chosen features (orthonormal basis by QR\n"
    "with pivoting; dependent directions lower the rank). Matrices writing to the\n"
    "residual stream (o_proj, down_proj) become P*dW, those reading from it (q, k, v,\n"
    "gate, up) dW*P. Norms, biases, embeddings and layers not chosen are left out\n"
    "(zero) unless --keep-other copies them unchanged. OUT is a task vector that\n"
    "'stetho edit --task-vector' applies like any other.\n"
    "  --sae-dir DIR        one SAE per layer (Gemma Scope release layout, layer_N/\n"
    "                       folders, or SAELens folders with hook names)\n"
    "  --scores FILE        the top K features of each scored layer (default K 8)\n"
    "  --features-file F    explicit choice: {\"12\": [4, 17, ...], ...}\n"
    "Prints the energy retained per layer and overall next to the expectation for a\n"
    "random subspace of the same rank (rank / d_model).\n";

int cmd_project(int argc, char **argv) {
    const char *tvp = NULL, *sae_dir = NULL, *scores = NULL, *ffile = NULL, *out = NULL, *json_path = NULL, *val = NULL;
    long k = 8;
    bool bad = false, k_given = false;
    stetho_project_opts o = {false, 1e-6};
    for (int i = 1; i < argc && !bad; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(help, stdout);
            return 0;
        } else if (cli_opt(argc, argv, &i, "--task-vector", &tvp, &bad, "project") ||
                   cli_opt(argc, argv, &i, "--sae-dir", &sae_dir, &bad, "project") ||
                   cli_opt(argc, argv, &i, "--scores", &scores, &bad, "project") ||
                   cli_opt(argc, argv, &i, "--features-file", &ffile, &bad, "project") ||
                   cli_opt(argc, argv, &i, "-o", &out, &bad, "project") ||
                   cli_opt(argc, argv, &i, "--output", &out, &bad, "project") ||
                   cli_opt(argc, argv, &i, "--json", &json_path, &bad, "project")) {
        } else if (cli_opt(argc, argv, &i, "--features", &val, &bad, "project")) {
            if (!bad && !cli_parse_int("project", "--features", val, 1, 1 << 24, &k)) return CLI_EXIT_USAGE;
            k_given = true;
        } else if (cli_opt(argc, argv, &i, "--threads", &val, &bad, "project")) {
            long t;
            if (!bad && !cli_parse_int("project", "--threads", val, 1, 1024, &t)) return CLI_EXIT_USAGE;
            if (!bad) stetho_set_threads((int)t);
        } else if (!strcmp(argv[i], "--keep-other")) {
            o.keep_other = true;
        } else {
            return cli_usage("project", "unexpected argument '%s'", argv[i]);
        }
    }
    if (bad) return CLI_EXIT_USAGE;
    if (!tvp || !sae_dir || !out) return cli_usage("project", "needs --task-vector, --sae-dir and -o");
    if (!scores == !ffile) return cli_usage("project", "give exactly one of --scores and --features-file");
    if (ffile && k_given) return cli_usage("project", "--features goes with --scores, not --features-file");

    stetho_project_layer *layers = NULL;
    size_t n_layers = 0, n_saes = 0;
    stetho_sae_entry *saes = NULL;
    stetho_checkpoint tv;
    stetho_status st = scores ? stetho_project_layers_from_scores(scores, (int)k, &layers, &n_layers)
                              : stetho_project_layers_from_file(ffile, &layers, &n_layers);
    if (st) return cli_fail(st, NULL);
    if ((st = stetho_sae_scan(sae_dir, &saes, &n_saes))) {
        stetho_project_layers_free(layers, n_layers);
        return cli_fail(st, NULL);
    }
    if ((st = stetho_checkpoint_open(&tv, tvp))) {
        stetho_sae_entries_free(saes, n_saes);
        stetho_project_layers_free(layers, n_layers);
        return cli_fail(st, "--task-vector takes a file written by 'stetho diff'");
    }
    stetho_project_report rep;
    int rc = 0;
    st = stetho_project_taskvec(&tv, saes, n_saes, layers, n_layers, &o, out, &rep);
    if (st) {
        rc = cli_fail(st, NULL);
    } else {
        printf("%-6s %5s %5s %8s %14s %12s %12s\n", "layer", "k", "rank", "d_model", "||tau_layer||^2", "retained",
               "random exp.");
        for (size_t i = 0; i < rep.n_layers; i++) {
            const stetho_project_layer_stats *l = &rep.layers[i];
            printf("%-6d %5d %5d %8d %14.6g %11.2f%% %11.2f%%\n", l->layer, l->k, l->rank, l->d_model, l->energy_before,
                   l->energy_before > 0 ? 100.0 * l->energy_after / l->energy_before : 0, 100.0 * l->rank / l->d_model);
        }
        double kept = rep.projected_before > 0 ? rep.projected_after / rep.projected_before : 0;
        double rnd = rep.projected_before > 0 ? rep.expected_random / rep.projected_before : 0;
        printf("\nprojected matrices keep %.2f%% of their energy (a random subspace of the same rank: %.2f%%);\n", 100 * kept,
               100 * rnd);
        printf("the projected task vector keeps %.2f%% of the whole task vector's energy\nwrote %s\n",
               rep.total_before > 0 ? 100.0 * rep.total_after / rep.total_before : 0, out);
        if (json_path) {
            char *text;
            if ((st = stetho_project_report_json(&rep, &text))) rc = cli_fail(st, NULL);
            else {
                FILE *f = fopen(json_path, "w");
                if (!f || fputs(text, f) < 0 || fclose(f) != 0) {
                    cli_error(NULL, "%s: cannot write the report", json_path);
                    rc = CLI_EXIT_FAIL;
                }
                free(text);
            }
        }
        stetho_project_report_free(&rep);
    }
    stetho_checkpoint_close(&tv);
    stetho_sae_entries_free(saes, n_saes);
    stetho_project_layers_free(layers, n_layers);
    return rc;
}
