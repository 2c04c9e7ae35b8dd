/* stetho diagnose MODEL --sae-dir DIR --domain D.jsonl --general G.jsonl -o SCORES.json:
 * per-feature statistics and per-layer specificity scores from one forward pass
 * per prompt, every layer's SAE fed from the hooks. */
#include "cli.h"
#include "stetho/diagnose.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *help =
    "usage: stetho diagnose MODEL --sae-dir DIR --domain D.jsonl --general G.jsonl -o SCORES.json\n"
    "                       [--metric NAME] [--max-tokens N] [--limit N] [--field NAME]\n"
    "                       [--k K] [--ratio R] [--smoothing A] [--top-features N]\n"
    "                       [--probe-folds F] [--force] [--quiet] [--threads N] [--compute f32|bf16]\n"
    "\n"
    "Runs MODEL on both prompt sets; at every layer with an SAE in DIR the hook's\n"
    "activations go straight into the SAE encoder and running statistics (nothing is\n"
    "dumped). Per feature: activation frequency and mean on each set, the smoothed log\n"
    "frequency ratio, the mass contrast and Cohen's d; per layer every specificity\n"
    "score below. Writes SCORES.json (layer scores, top features, per-feature\n"
    "statistics), SCORES.tsv and SCORES.svg (bar chart of score by layer). The BOS\n"
    "position is left out of every statistic.\n"
    "  --sae-dir DIR      one SAE per layer (Gemma Scope 1/2 or SAELens; layer_N/ folders\n"
    "                     or hook names); layers without one are listed as unscored\n"
    "  --domain FILE      JSONL prompts of the domain (e.g. MATH train problems)\n"
    "  --general FILE     JSONL prompts of general text\n"
    "  --field NAME       the prompt's field (default: \"text\", else \"problem\")\n"
    "  --metric NAME      the score used for ranking (default specific_mass):\n"
    "                       specific_mass  share of domain activation mass on features whose\n"
    "                                      smoothed frequency ratio exceeds R\n"
    "                       specific_frac  share of live features that are domain-specific\n"
    "                       topk_contrast  mean over the K features with most domain mass of\n"
    "                                      (normalised domain mass - normalised general mass)\n"
    "                       effect         mean Cohen's d of the K features with the largest d\n"
    "                       probe          balanced accuracy of a K-sparse logistic probe\n"
    "                                      (F-fold cross-validated, mean-pooled prompts)\n"
    "  --max-tokens N     truncate prompts to N tokens incl. BOS (default: the context)\n"
    "  --limit N          use the first N prompts of each set (default: all)\n"
    "  --k K              K of topk_contrast, effect and probe (default 8; at most d_sae)\n"
    "  --ratio R          frequency-ratio threshold of 'domain-specific' (default 4)\n"
    "  --smoothing A      pseudo-count of the log frequency ratio (default 0.5)\n"
    "  --top-features N   features listed per layer, by mass contrast (default 32; at\n"
    "                     most d_sae: only the defaults are capped at a narrower SAE)\n"
    "  --probe-folds F    cross-validation folds of the probe (default 5)\n"
    "  --force            replace existing outputs\n"
    "  --quiet            no progress on stderr\n"
    "  --threads N        worker threads (default: all cores)\n"
    "  --compute MODE     f32 (default) or bf16: activations rounded to bf16 at bf16 weights\n"
    "See docs/diagnose.md for the exact definitions.\n";

typedef struct {
    bool tty;
    size_t last;
} progress_state;

static void progress(void *user, int set, size_t done, size_t total) {
    progress_state *p = user;
    const char *name = set == STETHO_SET_DOMAIN ? "domain" : "general";
    if (p->tty) {
        fprintf(stderr, "\rdiagnose: %s prompts %zu/%zu", name, done, total);
        if (done == total) fputc('\n', stderr);
    } else if (done == total || done * 10 / total != p->last) {
        fprintf(stderr, "diagnose: %s prompts %zu/%zu\n", name, done, total);
    }
    p->last = done == total ? 0 : done * 10 / total;
    fflush(stderr);
}

int cmd_diagnose(int argc, char **argv) {
    const char *model = NULL, *sae_dir = NULL, *dom = NULL, *gen = NULL, *out = NULL, *val = NULL;
    stetho_diagnose_opts o;
    stetho_diagnose_opts_default(&o);
    bool bad = false, force = false, quiet = false;
    long v;
    for (int i = 1; i < argc && !bad; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(help, stdout);
            return 0;
        } else if (cli_opt(argc, argv, &i, "--sae-dir", &sae_dir, &bad, "diagnose") ||
                   cli_opt(argc, argv, &i, "--domain", &dom, &bad, "diagnose") ||
                   cli_opt(argc, argv, &i, "--general", &gen, &bad, "diagnose") ||
                   cli_opt(argc, argv, &i, "--field", &o.field, &bad, "diagnose") ||
                   cli_opt(argc, argv, &i, "-o", &out, &bad, "diagnose") ||
                   cli_opt(argc, argv, &i, "--output", &out, &bad, "diagnose")) {
        } else if (cli_opt(argc, argv, &i, "--metric", &val, &bad, "diagnose")) {
            if (!bad && !stetho_metric_from_name(val, &o.metric))
                return cli_usage("diagnose", "unknown --metric '%s' (specific_mass, specific_frac, topk_contrast, effect, probe)", val);
        } else if (cli_opt(argc, argv, &i, "--max-tokens", &val, &bad, "diagnose")) {
            if (!bad && !cli_parse_int("diagnose", "--max-tokens", val, 2, 1 << 24, &v)) return CLI_EXIT_USAGE;
            o.max_tokens = (int)v;
        } else if (cli_opt(argc, argv, &i, "--limit", &val, &bad, "diagnose")) {
            if (!bad && !cli_parse_int("diagnose", "--limit", val, 1, 1L << 40, &v)) return CLI_EXIT_USAGE;
            o.limit = (size_t)v;
        } else if (cli_opt(argc, argv, &i, "--k", &val, &bad, "diagnose")) {
            if (!bad && !cli_parse_int("diagnose", "--k", val, 1, 1 << 20, &v)) return CLI_EXIT_USAGE;
            o.k = (int)v;
        } else if (cli_opt(argc, argv, &i, "--top-features", &val, &bad, "diagnose")) {
            if (!bad && !cli_parse_int("diagnose", "--top-features", val, 1, 1 << 24, &v)) return CLI_EXIT_USAGE;
            o.top_features = (int)v;
        } else if (cli_opt(argc, argv, &i, "--probe-folds", &val, &bad, "diagnose")) {
            if (!bad && !cli_parse_int("diagnose", "--probe-folds", val, 2, 1000, &v)) return CLI_EXIT_USAGE;
            o.probe_folds = (int)v;
        } else if (cli_opt(argc, argv, &i, "--ratio", &val, &bad, "diagnose")) {
            if (!bad && (!cli_parse_double("diagnose", "--ratio", val, &o.ratio))) return CLI_EXIT_USAGE;
            if (!bad && !(o.ratio > 0)) return cli_usage("diagnose", "--ratio must be > 0");
        } else if (cli_opt(argc, argv, &i, "--smoothing", &val, &bad, "diagnose")) {
            if (!bad && (!cli_parse_double("diagnose", "--smoothing", val, &o.smoothing))) return CLI_EXIT_USAGE;
            if (!bad && !(o.smoothing > 0)) return cli_usage("diagnose", "--smoothing must be > 0");
        } else if (cli_compute_opt(argc, argv, &i, &bad, "diagnose")) {
        } else if (cli_opt(argc, argv, &i, "--threads", &val, &bad, "diagnose")) {
            if (!bad && !cli_parse_int("diagnose", "--threads", val, 1, 1024, &v)) return CLI_EXIT_USAGE;
            if (!bad) stetho_set_threads((int)v);
        } else if (!strcmp(argv[i], "--force")) {
            force = true;
        } else if (!strcmp(argv[i], "--quiet")) {
            quiet = true;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            return cli_usage("diagnose", "unknown option '%s'", argv[i]);
        } else if (!model) {
            model = argv[i];
        } else {
            return cli_usage("diagnose", "unexpected argument '%s'", argv[i]);
        }
    }
    if (bad) return CLI_EXIT_USAGE;
    if (!model) return cli_usage("diagnose", "missing MODEL");
    if (!sae_dir || !dom || !gen) return cli_usage("diagnose", "needs --sae-dir, --domain and --general");
    if (!out) return cli_usage("diagnose", "missing -o SCORES.json");

    /* refuse existing outputs before the (long) run, not after it */
    char *tsv = NULL, *svg = NULL;
    stetho_status st = stetho_diagnose_paths(out, &tsv, &svg);
    if (st) return cli_fail(st, NULL);
    const char *outs[3] = {out, tsv, svg};
    for (int i = 0; i < 3 && !force; i++)
        if (access(outs[i], F_OK) == 0) {
            cli_error("add --force to replace it, or choose another -o", "%s already exists", outs[i]);
            free(tsv), free(svg);
            return CLI_EXIT_FAIL;
        }
    progress_state ps = {isatty(2) != 0, 0};
    if (!quiet) {
        o.progress = progress;
        o.progress_user = &ps;
    }
    stetho_diagnose_result r;
    st = stetho_diagnose_run(model, sae_dir, dom, gen, &o, &r);
    if (st) {
        free(tsv), free(svg);
        bool width = st == STETHO_ERR_INVALID && strstr(stetho_last_error(), "(d_sae)");
        return cli_fail(st, width ? "lower --k / --top-features to at most the SAE's d_sae ('stetho sae inspect DIR' shows it)" : NULL);
    }
    int rc = 0;
    printf("%zu domain prompts (%llu tokens), %zu general prompts (%llu tokens)%s\n", r.n_prompts[0],
           (unsigned long long)r.n_tokens[0], r.n_prompts[1], (unsigned long long)r.n_tokens[1],
           r.bos_excluded ? ", BOS excluded" : "");
    printf("%-6s %12s %13s %13s %13s %10s %8s %5s  %s\n", "layer", "score", "specific_mass", "specific_frac",
           "topk_contrast", "effect", "probe", "rank", "top features");
    int n_unscored = 0;
    for (int l = 0; l < r.n_layers; l++) {
        const stetho_diag_layer *L = &r.layers[l];
        if (!L->scored) {
            n_unscored++;
            continue;
        }
        int rank = 1;
        for (int m = 0; m < r.n_layers; m++)
            if (m != l && r.layers[m].scored && isfinite(r.layers[m].score) &&
                (r.layers[m].score > L->score || (r.layers[m].score == L->score && m < l)))
                rank++;
        printf("%-6d %12.6g %13.4f %13.4f %13.4g %10.4g %8.4f %5d  ", l, L->score, L->scores[0], L->scores[1], L->scores[2],
               L->scores[3], L->scores[4], isfinite(L->score) ? rank : 0);
        for (int i = 0; i < L->n_top && i < 5; i++) printf("%s%d", i ? "," : "", L->top[i]);
        putchar('\n');
    }
    if (n_unscored) {
        printf("unscored layers (no SAE):");
        for (int l = 0; l < r.n_layers; l++)
            if (!r.layers[l].scored) printf(" %d", l);
        putchar('\n');
    }
    if ((st = stetho_diagnose_write(&r, out, force))) rc = cli_fail(st, st == STETHO_ERR_EXISTS ? "add --force to replace it" : NULL);
    else printf("metric %s; wrote %s, %s, %s\n", stetho_metric_name(o.metric), out, tsv, svg);
    stetho_diagnose_result_free(&r);
    free(tsv), free(svg);
    return rc;
}
