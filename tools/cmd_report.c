/* stetho report RUN_DIR [-o OUT_DIR]: the HTML page and Markdown summary of a study
 * run, from its summary.json. Rendering lives in the library (stetho_report_write),
 * which `stetho study` and `stetho demo` call directly. */
#include "cli.h"
#include "stetho/report.h"

#include <stdio.h>
#include <string.h>

static const char *help =
    "usage: stetho report RUN_DIR [-o OUT_DIR]\n"
    "\n"
    "Reads RUN_DIR/summary.json (written by 'stetho study' and 'stetho demo'), checks\n"
    "every field, and writes OUT_DIR/report.html and OUT_DIR/report.md (OUT_DIR\n"
    "defaults to RUN_DIR and is created if absent). report.html is self-contained:\n"
    "inline CSS and SVG charts, no scripts, nothing fetched from the network; open it\n"
    "in any browser. report.md has the same tables. Existing reports are replaced.\n"
    "\n"
    "Contents: the run (models, tasks, variants and their layers); accuracy per subject\n"
    "and variant with Wilson 95% intervals and the study's significance marks against\n"
    "base; differences with Newcombe intervals, z-test, McNemar and Holm p-values;\n"
    "general-text perplexity (forgetting); task-vector norm, specificity and scalpel\n"
    "retained energy per layer; ablation importance against specificity; notes.\n"
    "  -o, --output DIR   write the reports here instead of RUN_DIR\n"
    "See docs/report.md for the summary.json schema.\n";

int cmd_report(int argc, char **argv) {
    const char *run_dir = NULL, *out_dir = NULL;
    bool bad = false;
    for (int i = 1; i < argc; i++) {
        const char *val = NULL;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(help, stdout);
            return 0;
        } else if (cli_opt(argc, argv, &i, "-o", &val, &bad, "report") ||
                   cli_opt(argc, argv, &i, "--output", &val, &bad, "report")) {
            if (bad) return CLI_EXIT_USAGE;
            out_dir = val;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            return cli_usage("report", "unknown option '%s'", argv[i]);
        } else if (!run_dir) {
            run_dir = argv[i];
        } else {
            return cli_usage("report", "expected one run directory, got a second: '%s'", argv[i]);
        }
    }
    if (!run_dir) return cli_usage("report", "expected a run directory (RUN_DIR)");
    stetho_status st = stetho_report_write(run_dir, out_dir);
    if (st)
        return cli_fail(st, st == STETHO_ERR_FORMAT || st == STETHO_ERR_NOTFOUND
                                ? "RUN_DIR is a directory written by 'stetho study' or 'stetho demo'; "
                                  "docs/report.md describes summary.json"
                                : NULL);
    const char *dir = out_dir ? out_dir : run_dir;
    printf("wrote %s/report.html\nwrote %s/report.md\n", dir, dir);
    if (fflush(stdout) != 0) {
        cli_error(NULL, "cannot write to standard output");
        return CLI_EXIT_FAIL;
    }
    return 0;
}
