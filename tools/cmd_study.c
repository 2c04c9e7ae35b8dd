/* stetho study CONFIG.yaml -o RUN_DIR: the whole study from one config. */
#include "cli.h"
#include "stetho/study_run.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

static const char *help =
    "usage: stetho study CONFIG.yaml -o RUN_DIR [--force] [--rerun] [--threads N] [--compute f32|bf16] [--quiet]\n"
    "\n"
    "Runs the study a mergekit-style YAML describes (see docs/study.md): the task\n"
    "vector, diagnose (per-layer specificity from the SAEs), the scalpel's\n"
    "projection, every variant (stethoscope top-K, random/norm/bottom/all-layer\n"
    "controls, ablations) as an HF checkpoint, evaluation of each, comparison with\n"
    "base, RUN_DIR/summary.json and the report (report.html, report.md).\n"
    "A rerun skips steps whose inputs and settings are unchanged.\n"
    "  -o, --output DIR   the run directory (created)\n"
    "  --force            use a RUN_DIR made with another config (changed steps rerun)\n"
    "  --rerun            rerun every step, even those up to date\n"
    "  --threads N        worker threads (default: the config's, else all cores)\n"
    "  --compute MODE     f32 (default) or bf16: activations rounded to bf16 at bf16 weights\n"
    "  --quiet            no progress lines\n";

static double t0;

static void on_progress(void *user, const char *step, const char *msg) {
    (void)user;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    double t = (double)ts.tv_sec + ts.tv_nsec * 1e-9;
    fprintf(stderr, "[%7.1fs] %-10s %s\n", t - t0, step, msg);
}

int cmd_study(int argc, char **argv) {
    const char *config = NULL, *out = NULL, *val = NULL;
    bool bad = false, quiet = false, compute_given = false;
    stetho_study_run_opts o = {0};
    long threads = 0;
    for (int i = 1; i < argc && !bad; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(help, stdout);
            return 0;
        } else if (!strcmp(argv[i], "--force")) {
            o.force = true;
        } else if (!strcmp(argv[i], "--rerun")) {
            o.force_steps = true;
        } else if (!strcmp(argv[i], "--quiet")) {
            quiet = true;
        } else if (cli_opt(argc, argv, &i, "-o", &out, &bad, "study") ||
                   cli_opt(argc, argv, &i, "--output", &out, &bad, "study")) {
        } else if (cli_compute_opt(argc, argv, &i, &bad, "study")) {
            compute_given = true;
        } else if (cli_opt(argc, argv, &i, "--threads", &val, &bad, "study")) {
            if (!bad && !cli_parse_int("study", "--threads", val, 1, 1024, &threads)) return CLI_EXIT_USAGE;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            return cli_usage("study", "unknown option '%s'", argv[i]);
        } else if (!config) {
            config = argv[i];
        } else {
            return cli_usage("study", "unexpected argument '%s'", argv[i]);
        }
    }
    if (bad) return CLI_EXIT_USAGE;
    if (!config) return cli_usage("study", "need CONFIG.yaml");
    if (!out) return cli_usage("study", "need -o RUN_DIR");
    stetho_study_config c;
    stetho_status st = stetho_study_config_load(&c, config);
    if (st) return cli_fail(st, "see docs/study.md for the config's keys");
    if (compute_given) { /* the command line over the config, as for --threads */
        c.has_compute = true;
        c.compute = stetho_get_compute();
    }
    if (threads) stetho_set_threads((int)threads);
    else if (c.threads) stetho_set_threads(c.threads);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    t0 = (double)ts.tv_sec + ts.tv_nsec * 1e-9;
    if (!quiet) o.progress = on_progress;
    st = stetho_study_run(&c, out, &o);
    stetho_study_config_free(&c);
    if (st)
        return cli_fail(st, strstr(stetho_last_error(), "different config")
                                ? "pass --force to reuse it (changed steps rerun), or choose another -o"
                                : NULL);
    printf("wrote %s/summary.json, %s/report.html, %s/report.md\n", out, out, out);
    return 0;
}
