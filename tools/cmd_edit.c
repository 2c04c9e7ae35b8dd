/* stetho edit BASE (--task-vector TV | --finetuned FT) [--layers SPEC | --scores S --top-k K |
 * --select METHOD ...] [--modules SPEC] [--alpha A] -o OUT_DIR: base + alpha * tau on a
 * selection, as an HF directory, with the selection recorded in its metadata. */
#include "cli.h"
#include "stetho/select.h"
#include "stetho/taskvec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *help =
    "usage: stetho edit BASE (--task-vector TV | --finetuned FT) -o OUT_DIR\n"
    "                   [--layers SPEC | --scores SCORES.json --top-k K | --select METHOD ...]\n"
    "                   [--modules SPEC] [--alpha A]\n"
    "                   [--out-shard-size 5B] [--force] [--allow-missing] [--threads N]\n"
    "\n"
    "Writes theta_base + alpha * tau restricted to the selected decoder layers and\n"
    "module kinds, as a complete Hugging Face model directory: config and tokenizer\n"
    "files copied, safetensors in the base's dtype (round to nearest even when\n"
    "narrowing), the edit recorded in each shard's __metadata__ (\"stetho_edit\").\n"
    "Tensors outside the selection are bit-identical to the base.\n"
    "  --task-vector TV     tau from a file written by 'stetho diff'\n"
    "  --finetuned FT       tau = FT - BASE, computed on the fly\n"
    "  --layers SPEC        decoder layers, e.g. 3,5,10-12: N one layer; A-B A through B\n"
    "                       inclusive; A- A through the last; -B 0 through B; A:B half-open\n"
    "                       (A through B-1, like a Python slice). Default: every layer and\n"
    "                       also the tensors outside the layers (embeddings, final norm);\n"
    "                       with --layers those stay unchanged.\n"
    "  --scores FILE        a SCORES.json from 'stetho diagnose'; with --top-k K alone:\n"
    "                       the stethoscope, tau in the K highest-scoring layers\n"
    "  --top-k K            how many layers --scores / --select top|bottom|random|norm take\n"
    "  --select METHOD      top (default with --scores), bottom (K lowest-scoring),\n"
    "                       random (K distinct layers, --seed S, default 1), norm (K layers\n"
    "                       with the largest ||tau|| over --modules), all (every layer),\n"
    "                       only:L (layer L alone), except:L (every layer but L).\n"
    "                       Ties go to the lower layer. Tensors outside the layers stay\n"
    "                       unchanged. The choice (method, K, seed, layers, scores file\n"
    "                       hash) is recorded in the output's metadata under \"selection\".\n"
    "  --metric NAME        rank by another score recorded in --scores (see diagnose)\n"
    "  --modules SPEC       attn, mlp, norm, embed, all (default), or single modules\n"
    "                       (q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj,\n"
    "                       input_layernorm, ...), comma-separated. Vision-tower tensors are\n"
    "                       never edited.\n"
    "  --alpha A            scale of tau (default 1; 0 reproduces the base bit for bit)\n"
    "  --out-shard-size S   largest output shard, e.g. 5B (default, = 5e9 bytes), 500M\n"
    "  --force              replace OUT_DIR if it exists (only once the new one is complete)\n"
    "  --allow-missing      selected tensors absent from the task vector stay unchanged,\n"
    "                       and task-vector tensors unknown to BASE are ignored\n"
    "  --threads N          worker threads (default: all cores)\n";

/* Usage checks of the layer-selection options; fills spec->method. 0 if fine. */
static int check_selection_args(const char *layers, const char *scores, const char *select_s, const char *metric,
                                bool k_given, bool seed_given, stetho_select_spec *spec) {
    if (layers) return cli_usage("edit", "--layers and --scores/--select/--top-k both choose layers; give one of them");
    if (select_s) {
        if (stetho_select_spec_parse(select_s, spec)) return cli_fail(STETHO_ERR_INVALID, NULL);
    } else if (!scores) {
        return cli_usage("edit", "--top-k/--seed/--metric need --scores (the stethoscope) or --select METHOD");
    }
    const char *name = stetho_select_method_name(spec->method);
    if (stetho_select_needs_k(spec->method) && !k_given) return cli_usage("edit", "--select %s needs --top-k K", name);
    if (!stetho_select_needs_k(spec->method) && k_given) return cli_usage("edit", "--top-k does not apply to --select %s", select_s);
    if (stetho_select_needs_scores(spec->method) && !scores)
        return cli_usage("edit", "--select %s ranks layers by a diagnose score: give --scores SCORES.json", name);
    if (seed_given && spec->method != STETHO_SELECT_RANDOM) return cli_usage("edit", "--seed goes with --select random");
    if (metric && !scores) return cli_usage("edit", "--metric picks a score from --scores SCORES.json");
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

int cmd_edit(int argc, char **argv) {
    const char *base_path = NULL, *tv = NULL, *ftp = NULL, *out = NULL, *layers = NULL, *modules = "all", *val = NULL;
    const char *scores_path = NULL, *select_s = NULL, *metric = NULL;
    stetho_edit_opts o = {1.0, 5000000000ull, false, false, NULL};
    stetho_select_spec spec = {STETHO_SELECT_TOP, 0, 1, 0};
    bool bad = false, k_given = false, seed_given = false;
    for (int i = 1; i < argc && !bad; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(help, stdout);
            return 0;
        } else if (cli_opt(argc, argv, &i, "--task-vector", &tv, &bad, "edit") ||
                   cli_opt(argc, argv, &i, "--finetuned", &ftp, &bad, "edit") ||
                   cli_opt(argc, argv, &i, "-o", &out, &bad, "edit") ||
                   cli_opt(argc, argv, &i, "--output", &out, &bad, "edit") ||
                   cli_opt(argc, argv, &i, "--layers", &layers, &bad, "edit") ||
                   cli_opt(argc, argv, &i, "--modules", &modules, &bad, "edit") ||
                   cli_opt(argc, argv, &i, "--scores", &scores_path, &bad, "edit") ||
                   cli_opt(argc, argv, &i, "--select", &select_s, &bad, "edit") ||
                   cli_opt(argc, argv, &i, "--metric", &metric, &bad, "edit")) {
        } else if (cli_opt(argc, argv, &i, "--top-k", &val, &bad, "edit")) {
            long k;
            if (!bad && !cli_parse_int("edit", "--top-k", val, 1, 1000000, &k)) return CLI_EXIT_USAGE;
            spec.k = (int)k;
            k_given = true;
        } else if (cli_opt(argc, argv, &i, "--seed", &val, &bad, "edit")) {
            long sd;
            if (!bad && !cli_parse_int("edit", "--seed", val, 0, (1L << 62), &sd)) return CLI_EXIT_USAGE;
            spec.seed = (uint64_t)sd;
            seed_given = true;
        } else if (cli_opt(argc, argv, &i, "--alpha", &val, &bad, "edit")) {
            if (!bad && !cli_parse_double("edit", "--alpha", val, &o.alpha)) return CLI_EXIT_USAGE;
        } else if (cli_opt(argc, argv, &i, "--out-shard-size", &val, &bad, "edit")) {
            if (!bad && !cli_parse_size("edit", "--out-shard-size", val, &o.shard_size)) return CLI_EXIT_USAGE;
        } else if (cli_opt(argc, argv, &i, "--threads", &val, &bad, "edit")) {
            long t;
            if (!bad && !cli_parse_int("edit", "--threads", val, 1, 1024, &t)) return CLI_EXIT_USAGE;
            if (!bad) stetho_set_threads((int)t);
        } else if (!strcmp(argv[i], "--force")) {
            o.force = true;
        } else if (!strcmp(argv[i], "--allow-missing")) {
            o.allow_missing = true;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            return cli_usage("edit", "unknown option '%s'", argv[i]);
        } else if (!base_path) {
            base_path = argv[i];
        } else {
            return cli_usage("edit", "unexpected argument '%s'", argv[i]);
        }
    }
    if (bad) return CLI_EXIT_USAGE;
    if (!base_path) return cli_usage("edit", "missing BASE");
    if (!tv == !ftp) return cli_usage("edit", "give exactly one of --task-vector TV and --finetuned FT");
    if (!out) return cli_usage("edit", "missing -o OUT_DIR");
    bool selecting = scores_path || select_s || k_given || seed_given || metric;
    if (selecting) {
        int urc = check_selection_args(layers, scores_path, select_s, metric, k_given, seed_given, &spec);
        if (urc) return urc;
    }

    stetho_selection sel = {0};
    stetho_status st = stetho_module_spec_parse(modules, &sel.modules);
    if (st) return cli_fail(st, NULL);
    stetho_checkpoint base, delta;
    if ((st = stetho_checkpoint_open(&base, base_path)))
        return cli_fail(st, "BASE must be a Hugging Face model directory or a .safetensors file");
    if ((st = stetho_checkpoint_open(&delta, tv ? tv : ftp))) {
        stetho_checkpoint_close(&base);
        return cli_fail(st, tv ? "TV must be a .safetensors task vector (see 'stetho diff')"
                               : "FT must be a Hugging Face model directory or a .safetensors file");
    }
    int rc = 0;
    sel.n_layers = stetho_checkpoint_n_layers(&base);
    sel.layers = calloc(sel.n_layers ? (size_t)sel.n_layers : 1, sizeof *sel.layers);
    if (selecting) {
        rc = choose_layers(&base, &delta, ftp != NULL, scores_path, metric, &spec, &sel, &o.extra_meta);
    } else if (layers) {
        st = sel.n_layers ? stetho_layer_spec_parse(layers, sel.n_layers, sel.layers) : STETHO_ERR_INVALID;
        if (!sel.n_layers) cli_error(NULL, "%s: no decoder layers found, so --layers cannot select any", base_path);
        else if (st) rc = cli_fail(st, "layers are numbered from 0; see 'stetho edit --help'");
        if (st) rc = CLI_EXIT_USAGE;
    } else {
        for (int l = 0; l < sel.n_layers; l++) sel.layers[l] = true;
        sel.non_layer = true;
    }
    if (!rc) {
        st = stetho_taskvec_edit(&base, &delta, ftp != NULL, &sel, &o, out);
        if (st) rc = cli_fail(st, st == STETHO_ERR_EXISTS ? "choose another -o or add --force" : NULL);
        else printf("wrote %s\n", out);
    }
    free(sel.layers);
    free((char *)o.extra_meta);
    stetho_checkpoint_close(&delta);
    stetho_checkpoint_close(&base);
    return rc;
}
