/* The options that choose an edit, shared by `stetho edit` and `stetho eval`. */
#include "cli_edit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cli_edit_args_init(cli_edit_args *a) {
    memset(a, 0, sizeof *a);
    a->modules = "all";
    a->alpha = 1.0;
    a->spec = (stetho_select_spec){STETHO_SELECT_TOP, 0, 1, 0};
}

bool cli_edit_opt(int argc, char **argv, int *i, cli_edit_args *a, bool *bad, const char *verb) {
    const char *val = NULL;
    long n;
    if (cli_opt(argc, argv, i, "--task-vector", &a->tv, bad, verb) ||
        cli_opt(argc, argv, i, "--finetuned", &a->ftp, bad, verb) ||
        cli_opt(argc, argv, i, "--layers", &a->layers, bad, verb) ||
        cli_opt(argc, argv, i, "--modules", &a->modules, bad, verb) ||
        cli_opt(argc, argv, i, "--scores", &a->scores_path, bad, verb) ||
        cli_opt(argc, argv, i, "--select", &a->select_s, bad, verb) ||
        cli_opt(argc, argv, i, "--metric", &a->metric, bad, verb)) {
    } else if (cli_opt(argc, argv, i, "--top-k", &val, bad, verb)) {
        if (!*bad && !(*bad = !cli_parse_int(verb, "--top-k", val, 1, 1000000, &n))) a->spec.k = (int)n;
        a->k_given = true;
    } else if (cli_opt(argc, argv, i, "--seed", &val, bad, verb)) {
        if (!*bad && !(*bad = !cli_parse_int(verb, "--seed", val, 0, (1L << 62), &n))) a->spec.seed = (uint64_t)n;
        a->seed_given = true;
    } else if (cli_opt(argc, argv, i, "--alpha", &val, bad, verb)) {
        if (!*bad) *bad = !cli_parse_double(verb, "--alpha", val, &a->alpha);
    } else if (!strcmp(argv[*i], "--allow-missing")) {
        a->allow_missing = true;
    } else {
        return false;
    }
    a->any = true;
    return true;
}

/* Usage checks of the layer-selection options; fills spec->method. 0 if fine. */
static int check_selection_args(const char *verb, const char *layers, const char *scores, const char *select_s,
                                const char *metric, bool k_given, bool seed_given, stetho_select_spec *spec) {
    if (layers) return cli_usage(verb, "--layers and --scores/--select/--top-k both choose layers; give one of them");
    if (select_s) {
        if (stetho_select_spec_parse(select_s, spec)) return cli_fail(STETHO_ERR_INVALID, NULL);
    } else if (!scores) {
        return cli_usage(verb, "--top-k/--seed/--metric need --scores (the stethoscope) or --select METHOD");
    }
    const char *name = stetho_select_method_name(spec->method);
    if (stetho_select_needs_k(spec->method) && !k_given) return cli_usage(verb, "--select %s needs --top-k K", name);
    if (!stetho_select_needs_k(spec->method) && k_given) return cli_usage(verb, "--top-k does not apply to --select %s", select_s);
    if (stetho_select_needs_scores(spec->method) && !scores)
        return cli_usage(verb, "--select %s ranks layers by a diagnose score: give --scores SCORES.json", name);
    if (seed_given && spec->method != STETHO_SELECT_RANDOM) return cli_usage(verb, "--seed goes with --select random");
    if (metric && !scores) return cli_usage(verb, "--metric picks a score from --scores SCORES.json");
    return 0;
}

/* Pick the layers of a --scores/--select edit into sel and its metadata record
 * into *meta (JSON text, free()). Returns an exit code. */
static int choose_layers(const stetho_checkpoint *base, const stetho_checkpoint *delta, bool is_ft, const char *scores_path,
                         const char *metric, const stetho_select_spec *spec, stetho_selection *sel, const char **meta) {
    stetho_scores sc;
    bool have_scores = false;
    int n = sel->n_layers, rc = 0, n_chosen = 0;
    stetho_status st = STETHO_OK;
    if (n <= 0) {
        cli_error(NULL, "%s: no decoder layers found, so there are none to select", base->path);
        return CLI_EXIT_FAIL;
    }
    double *norms = NULL;
    int *order = calloc((size_t)n, sizeof *order);
    if (!order) {
        cli_error(NULL, "out of memory");
        return CLI_EXIT_FAIL;
    }
    if (scores_path) {
        if ((st = stetho_scores_load(&sc, scores_path, metric))) {
            rc = cli_fail(st, "--scores takes the SCORES.json written by 'stetho diagnose'");
            goto done;
        }
        have_scores = true;
        if ((st = stetho_scores_check_model(&sc, base))) {
            rc = cli_fail(st, "diagnose the model you are editing");
            goto done;
        }
    }
    const double *values = have_scores ? sc.score : NULL;
    if (spec->method == STETHO_SELECT_NORM) {
        if (!(norms = calloc((size_t)n, sizeof *norms))) {
            cli_error(NULL, "out of memory");
            rc = CLI_EXIT_FAIL;
            goto done;
        }
        if ((st = stetho_select_layer_norms(base, delta, is_ft, sel->modules, n, norms))) {
            rc = cli_fail(st, NULL);
            goto done;
        }
        values = norms;
    }
    if ((st = stetho_select_layers(spec, n, values, sel->layers, order, &n_chosen))) {
        rc = cli_fail(st, NULL);
        goto done;
    }
    char *rec = NULL;
    if ((st = stetho_select_record(spec, n, sel->layers, order, n_chosen, values, have_scores ? &sc : NULL, &rec))) {
        rc = cli_fail(st, NULL);
        goto done;
    }
    *meta = rec;
    sel->non_layer = false;
    printf("selected %d layer%s (%s", n_chosen, n_chosen == 1 ? "" : "s", stetho_select_method_name(spec->method));
    if (stetho_select_needs_k(spec->method)) printf(" %d", spec->k);
    if (spec->method == STETHO_SELECT_RANDOM) printf(", seed %llu", (unsigned long long)spec->seed);
    if (spec->method == STETHO_SELECT_ONLY || spec->method == STETHO_SELECT_EXCEPT) printf(":%d", spec->layer);
    if (stetho_select_needs_scores(spec->method)) printf(" by %s", sc.metric);
    if (spec->method == STETHO_SELECT_NORM) printf(" by ||tau||");
    printf("):");
    for (int i = 0; i < n_chosen; i++) printf(" %d", order[i]);
    putchar('\n');
done:
    if (have_scores) stetho_scores_free(&sc);
    free(norms);
    free(order);
    return rc;
}

static bool selecting(const cli_edit_args *a) {
    return a->scores_path || a->select_s || a->k_given || a->seed_given || a->metric;
}

int cli_edit_check(cli_edit_args *a, const char *verb) {
    if (!a->tv == !a->ftp) return cli_usage(verb, "give exactly one of --task-vector TV and --finetuned FT");
    if (!selecting(a)) return 0;
    return check_selection_args(verb, a->layers, a->scores_path, a->select_s, a->metric, a->k_given, a->seed_given,
                                &a->spec);
}

int cli_edit_open(const cli_edit_args *a, const char *base_path, stetho_checkpoint *base, stetho_checkpoint *delta,
                  stetho_selection *sel, const char **meta) {
    *sel = (stetho_selection){0};
    *meta = NULL;
    stetho_status st = stetho_module_spec_parse(a->modules, &sel->modules);
    if (st) return cli_fail(st, NULL);
    if ((st = stetho_checkpoint_open(base, base_path)))
        return cli_fail(st, "BASE must be a Hugging Face model directory or a .safetensors file");
    if ((st = stetho_checkpoint_open(delta, a->tv ? a->tv : a->ftp))) {
        stetho_checkpoint_close(base);
        return cli_fail(st, a->tv ? "TV must be a .safetensors task vector (see 'stetho diff')"
                                  : "FT must be a Hugging Face model directory or a .safetensors file");
    }
    int rc = 0;
    sel->n_layers = stetho_checkpoint_n_layers(base);
    sel->layers = calloc(sel->n_layers ? (size_t)sel->n_layers : 1, sizeof *sel->layers);
    if (!sel->layers) {
        cli_error(NULL, "out of memory");
        rc = CLI_EXIT_FAIL;
    } else if (selecting(a)) {
        rc = choose_layers(base, delta, a->ftp != NULL, a->scores_path, a->metric, &a->spec, sel, meta);
    } else if (a->layers) {
        st = sel->n_layers ? stetho_layer_spec_parse(a->layers, sel->n_layers, sel->layers) : STETHO_ERR_INVALID;
        if (!sel->n_layers) cli_error(NULL, "%s: no decoder layers found, so --layers cannot select any", base_path);
        else if (st) cli_fail(st, "layers are numbered from 0; see 'stetho edit --help'");
        if (st) rc = CLI_EXIT_USAGE;
    } else {
        for (int l = 0; l < sel->n_layers; l++) sel->layers[l] = true;
        sel->non_layer = true;
    }
    if (rc) {
        free(sel->layers);
        free((char *)*meta);
        *sel = (stetho_selection){0};
        *meta = NULL;
        stetho_checkpoint_close(delta);
        stetho_checkpoint_close(base);
    }
    return rc;
}
