/* stetho compare RESULTS_A RESULTS_B: are B's accuracies significantly different from
 * A's, per subject and overall? The statistics live in the library
 * (stetho_results_compare); this file parses arguments and prints. */
#include "cli.h"
#include "stetho/results.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *help =
    "usage: stetho compare RESULTS_A RESULTS_B [--json] [--alpha A] [--no-samples]\n"
    "\n"
    "Compares two evaluation runs (B against A). RESULTS_X is an lm-eval-shaped\n"
    "results_*.json file or a directory holding one (the newest; lm-eval's\n"
    "DIR/<model>/ layout is searched too). Per subject and overall it prints both\n"
    "accuracies with Wilson intervals, the difference B - A with a Newcombe (hybrid\n"
    "score) interval, the two-proportion z-test (pooled and unpooled, two-sided p),\n"
    "McNemar's exact test on the paired per-problem verdicts when both runs have\n"
    "samples_<task>_*.jsonl files for the same problems, and Holm-Bonferroni adjusted\n"
    "p-values across subjects. A subject is marked + (B significantly better) or -\n"
    "(B significantly worse) when its adjusted p is below alpha; the p used is\n"
    "McNemar's when paired, else the unpooled z-test's.\n"
    "  --json          print the comparison as JSON instead of a table\n"
    "  --alpha A       significance level (default 0.05); intervals are at 1 - A\n"
    "  --no-samples    ignore samples files (unpaired tests only)\n"
    "See docs/statistics.md for the formulas.\n";

static void fmt_p(char *buf, size_t n, double p) {
    if (isnan(p)) snprintf(buf, n, "-");
    else if (p < 1e-4) snprintf(buf, n, "%.1e", p);
    else snprintf(buf, n, "%.4f", p);
}

static void print_table(const stetho_comparison *c) {
    double conf = 100 * (1 - c->alpha);
    size_t w = 4;
    size_t n_subj = 0;
    bool any_paired = false;
    for (size_t i = 0; i < c->n_rows; i++) {
        size_t l = strlen(c->rows[i].task);
        if (l > w) w = l;
        if (!c->rows[i].overall) n_subj++;
        if (c->rows[i].paired) any_paired = true;
    }
    printf("A: %s\nB: %s\n", c->path_a, c->path_b);
    printf("accuracy [Wilson %g%%]; diff = B - A [Newcombe %g%%]; z > 0 when B is better\n", conf, conf);
    printf("p: McNemar exact when paired (b = only A right, c = only B right), else unpooled z;"
           " Holm over %zu subject%s; alpha %g\n\n",
           n_subj, n_subj == 1 ? "" : "s", c->alpha);
    printf("%-*s  %-25s  %-25s  %-26s  %7s %9s  %7s %9s  %-13s %9s  %9s\n", (int)w, "task", "A", "B", "diff",
           "z_pool", "p_pool", "z_unp", "p_unp", any_paired ? "McNemar b/c" : "McNemar", "p_exact", "p_holm");
    for (size_t i = 0; i < c->n_rows; i++) {
        const stetho_cmp_row *r = &c->rows[i];
        if (r->overall && i > 0) printf("\n");
        char a[64], b[64], d[64], pp[16], pu[16], pm[16], ph[16], bc[32];
        snprintf(a, sizeof a, "%.4f [%.4f, %.4f]", r->acc_a, r->ci_a.lo, r->ci_a.hi);
        snprintf(b, sizeof b, "%.4f [%.4f, %.4f]", r->acc_b, r->ci_b.lo, r->ci_b.hi);
        snprintf(d, sizeof d, "%+.4f [%+.4f, %+.4f]", r->diff, r->ci_diff.lo, r->ci_diff.hi);
        fmt_p(pp, sizeof pp, r->z.p_pooled);
        fmt_p(pu, sizeof pu, r->z.p_unpooled);
        fmt_p(pm, sizeof pm, r->paired ? r->mcnemar.p_exact : NAN);
        fmt_p(ph, sizeof ph, r->p_holm);
        if (r->paired) snprintf(bc, sizeof bc, "%llu/%llu", (unsigned long long)r->mcnemar.b, (unsigned long long)r->mcnemar.c);
        else snprintf(bc, sizeof bc, "unpaired");
        printf("%-*s  %-25s  %-25s  %-26s  %7.2f %9s  %7.2f %9s  %-13s %9s  %9s %s\n", (int)w, r->task, a, b, d,
               r->z.z_pooled, pp, r->z.z_unpooled, pu, bc, pm, r->overall ? "(single)" : ph,
               r->mark > 0 ? "+" : r->mark < 0 ? "-" : "");
    }
    for (size_t i = 0; i < c->n_rows; i++)
        if (c->rows[i].overall)
            printf("\nthe %s row pools all compared subjects (one test, not Holm-adjusted: p %.4g)\n",
                   c->rows[i].task, c->rows[i].p);
    if (c->n_only_a || c->n_only_b) {
        printf("\nnot compared:");
        for (size_t i = 0; i < c->n_only_a; i++) printf(" %s (only in A)", c->only_a[i]);
        for (size_t i = 0; i < c->n_only_b; i++) printf(" %s (only in B)", c->only_b[i]);
        printf("\n");
    }
}

int cmd_compare(int argc, char **argv) {
    const char *paths[2] = {NULL, NULL};
    int n_paths = 0;
    bool json = false, samples = true, bad = false;
    double alpha = 0.05;
    for (int i = 1; i < argc; i++) {
        const char *val = NULL;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(help, stdout);
            return 0;
        } else if (!strcmp(argv[i], "--json")) {
            json = true;
        } else if (!strcmp(argv[i], "--no-samples")) {
            samples = false;
        } else if (cli_opt(argc, argv, &i, "--alpha", &val, &bad, "compare")) {
            if (bad || !cli_parse_double("compare", "--alpha", val, &alpha)) return CLI_EXIT_USAGE;
            if (!(alpha > 0 && alpha < 1)) return cli_usage("compare", "--alpha must be in (0, 1), got %s", val);
        } else if (argv[i][0] == '-' && argv[i][1]) {
            return cli_usage("compare", "unknown option '%s'", argv[i]);
        } else if (n_paths < 2) {
            paths[n_paths++] = argv[i];
        } else {
            return cli_usage("compare", "expected two results files, got a third: '%s'", argv[i]);
        }
    }
    if (n_paths != 2) return cli_usage("compare", "expected two results files (RESULTS_A RESULTS_B)");
    stetho_results r[2];
    memset(r, 0, sizeof r);
    for (int k = 0; k < 2; k++) {
        stetho_status st = stetho_results_read(paths[k], samples, &r[k]);
        if (st) {
            if (k) stetho_results_free(&r[0]);
            return cli_fail(st, "RESULTS is a results_*.json written by 'stetho eval' or lm_eval, or its directory");
        }
    }
    stetho_comparison c;
    stetho_status st = stetho_results_compare(&r[0], &r[1], alpha, &c);
    stetho_results_free(&r[0]);
    stetho_results_free(&r[1]);
    if (st)
        return cli_fail(st, st == STETHO_ERR_MISMATCH
                                ? "compare runs of the same tasks; paired tests need samples of the same problems "
                                  "(same --limit), or pass --no-samples"
                                : NULL);
    if (json) {
        char *text = NULL;
        st = stetho_comparison_json(&c, &text);
        if (st) {
            stetho_comparison_free(&c);
            return cli_fail(st, NULL);
        }
        puts(text);
        free(text);
    } else {
        print_table(&c);
    }
    stetho_comparison_free(&c);
    if (fflush(stdout) != 0) {
        cli_error(NULL, "cannot write to standard output");
        return CLI_EXIT_FAIL;
    }
    return 0;
}
