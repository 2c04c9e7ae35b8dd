/* stetho project --task-vector TV --sae-dir DIR (--scores S [--features K] |
 * --features-file F) -o OUT: the scalpel baseline, with energy accounting. */
#include "cli.h"
#include "stetho/project.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *help =
    "usage: stetho project --task-vector TV --sae-dir DIR -o OUT.safetensors\n"
    "                      (--scores SCORES.json [--features K] | --features-file F.json)\n"
    "                      [--json REPORT] [--keep-other] [--force] [--threads N]\n"
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
    "  --json REPORT        also write the energy report as JSON (fields: docs/cli.md)\n"
    "  --force              replace an existing OUT or REPORT (an input never is)\n"
    "Prints the energy retained per layer and overall next to the expectation for a\n"
    "random subspace of the same rank (rank / d_model).\n";

static bool same_file(const char *a, const char *b) {
    struct stat sa, sb;
    return a && b && stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* -o and --json naming one file, also when neither exists yet: compare the
 * resolved directories and the final names. */
static bool same_target(const char *a, const char *b) {
    if (same_file(a, b)) return true;
    const char *na = strrchr(a, '/'), *nb = strrchr(b, '/');
    na = na ? na + 1 : a, nb = nb ? nb + 1 : b;
    if (strcmp(na, nb)) return false;
    char da[4096], db[4096], ra[PATH_MAX], rb[PATH_MAX];
    snprintf(da, sizeof da, "%.*s", na > a ? (int)(na - a) : 1, na > a ? a : ".");
    snprintf(db, sizeof db, "%.*s", nb > b ? (int)(nb - b) : 1, nb > b ? b : ".");
    return realpath(da, ra) && realpath(db, rb) && !strcmp(ra, rb);
}

/* Also OUT is one of a checkpoint directory's shards (same_file covers a
 * single-file task vector). */
static bool is_shard_of(const stetho_checkpoint *tv, const char *path) {
    char shard[8192];
    for (size_t i = 0; tv->dir && i < tv->n_shards; i++) {
        snprintf(shard, sizeof shard, "%s/%s", tv->dir, tv->shard_names[i]);
        if (same_file(path, shard)) return true;
    }
    return false;
}

/* The report through a temporary name (stetho_write_file), ending in a newline. */
static stetho_status write_report(const char *path, const char *text) {
    size_t n = strlen(text);
    char *body = malloc(n + 1);
    if (!body) return STETHO_ERR_NOMEM;
    memcpy(body, text, n);
    body[n] = '\n';
    stetho_status st = stetho_write_file(path, body, n + 1);
    free(body);
    return st;
}

int cmd_project(int argc, char **argv) {
    const char *tvp = NULL, *sae_dir = NULL, *scores = NULL, *ffile = NULL, *out = NULL, *json_path = NULL, *val = NULL;
    long k = 8;
    bool bad = false, k_given = false;
    stetho_project_opts o = {false, 1e-6, false};
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
        } else if (!strcmp(argv[i], "--force")) {
            o.force = true;
        } else {
            return cli_usage("project", "unexpected argument '%s'", argv[i]);
        }
    }
    if (bad) return CLI_EXIT_USAGE;
    if (!tvp || !sae_dir || !out) return cli_usage("project", "needs --task-vector, --sae-dir and -o");
    if (!scores == !ffile) return cli_usage("project", "give exactly one of --scores and --features-file");
    if (ffile && k_given) return cli_usage("project", "--features goes with --scores, not --features-file");
    if (json_path && same_target(out, json_path)) return cli_usage("project", "-o and --json name the same file");

    /* outputs checked before any work: an input is never replaced, even with
     * --force (the task vector is the one thing the projection cannot redo) */
    const char *outs[2] = {out, json_path}, *ins[3] = {tvp, scores, ffile};
    static const char *in_opt[3] = {"--task-vector", "--scores", "--features-file"};
    for (int i = 0; i < 2; i++)
        for (int j = 0; outs[i] && j < 3; j++)
            if (same_file(outs[i], ins[j]))
                return cli_usage("project", "%s %s is also the %s input; choose another output", i ? "--json" : "-o",
                                 outs[i], in_opt[j]);
    for (int i = 0; i < 2 && !o.force; i++)
        if (outs[i] && access(outs[i], F_OK) == 0) {
            cli_error("add --force to replace it, or choose another output", "%s already exists", outs[i]);
            return CLI_EXIT_FAIL;
        }

    stetho_project_layer *layers = NULL;
    size_t n_layers = 0, n_saes = 0;
    stetho_sae_entry *saes = NULL;
    stetho_checkpoint tv;
    stetho_status st = stetho_checkpoint_open(&tv, tvp);
    if (st) return cli_fail(st, "--task-vector takes a file written by 'stetho diff'");
    if (is_shard_of(&tv, out)) {
        stetho_checkpoint_close(&tv);
        return cli_usage("project", "-o %s is a file of the --task-vector input; choose another output", out);
    }
    st = scores ? stetho_project_layers_from_scores(scores, (int)k, &tv, &layers, &n_layers)
                : stetho_project_layers_from_file(ffile, &layers, &n_layers);
    if (st) {
        stetho_checkpoint_close(&tv);
        return cli_fail(st, st == STETHO_ERR_MISMATCH ? "--scores must come from 'stetho diagnose' on the base model of this task vector"
                                                      : NULL);
    }
    if ((st = stetho_sae_scan(sae_dir, &saes, &n_saes))) {
        stetho_project_layers_free(layers, n_layers);
        stetho_checkpoint_close(&tv);
        return cli_fail(st, NULL);
    }
    /* with --json the projection goes to a temporary name first, renamed into
     * place only once the report is written too: a failed command leaves neither */
    char staged[4200];
    if (json_path) snprintf(staged, sizeof staged, "%s.staged.%ld", out, (long)getpid());
    stetho_project_report rep;
    int rc = 0;
    st = stetho_project_taskvec(&tv, saes, n_saes, layers, n_layers, &o, json_path ? staged : out, &rep);
    bool have_rep = st == STETHO_OK; /* the library frees the report of a failed projection itself */
    if (st) {
        rc = cli_fail(st, st == STETHO_ERR_EXISTS ? "add --force to replace it" : NULL);
    } else {
        if (json_path) {
            char *text = NULL;
            if ((st = stetho_project_report_json(&rep, &text)) || (st = write_report(json_path, text))) rc = cli_fail(st, NULL);
            free(text);
            if (!rc && rename(staged, out) != 0) {
                cli_error(NULL, "%s: cannot rename into place: %s", out, strerror(errno));
                remove(json_path);
                rc = CLI_EXIT_FAIL;
            }
            if (rc) remove(staged);
        }
    }
    if (!st && !rc) {
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
        printf("the projected task vector keeps %.2f%% of the whole task vector's energy\nwrote %s%s%s\n",
               rep.total_before > 0 ? 100.0 * rep.total_after / rep.total_before : 0, out, json_path ? " and " : "",
               json_path ? json_path : "");
    }
    if (have_rep) stetho_project_report_free(&rep);
    stetho_checkpoint_close(&tv);
    stetho_sae_entries_free(saes, n_saes);
    stetho_project_layers_free(layers, n_layers);
    return rc;
}
