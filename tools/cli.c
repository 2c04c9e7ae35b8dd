/* CLI helpers: error reporting in one format and option-value parsing. */
#include "cli.h"
#include "stetho/model.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void cli_error(const char *hint, const char *fmt, ...) {
    va_list ap;
    fputs("stetho: error: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    if (hint) fprintf(stderr, "  hint: %s\n", hint);
}

int cli_fail(stetho_status st, const char *hint) {
    const char *msg = stetho_last_error();
    cli_error(hint, "%s", msg && *msg ? msg : stetho_status_name(st));
    return st == STETHO_ERR_INVALID ? CLI_EXIT_USAGE : CLI_EXIT_FAIL;
}

int cli_usage(const char *verb, const char *fmt, ...) {
    va_list ap;
    fputs("stetho: error: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n  hint: see 'stetho %s --help'\n", verb);
    return CLI_EXIT_USAGE;
}

bool cli_parse_double(const char *verb, const char *opt, const char *s, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v)) {
        cli_usage(verb, "%s expects a number, got '%s'", opt, s);
        return false;
    }
    *out = v;
    return true;
}

bool cli_parse_int(const char *verb, const char *opt, const char *s, long min, long max, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max) {
        cli_usage(verb, "%s expects an integer in [%ld, %ld], got '%s'", opt, min, max, s);
        return false;
    }
    *out = v;
    return true;
}

bool cli_parse_size(const char *verb, const char *opt, const char *s, uint64_t *out) {
    static const struct { const char *suffix; double mul; } units[] = {
        {"", 1},      {"K", 1e3},   {"KB", 1e3}, {"M", 1e6},  {"MB", 1e6},
        {"G", 1e9},   {"GB", 1e9},  {"B", 1e9},  {"T", 1e12}, {"TB", 1e12},
    };
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (!errno && end != s && v > 0) {
        for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
            double bytes = v * units[i].mul;
            if (strcasecmp(end, units[i].suffix) == 0 && bytes >= 1 && bytes < 1.8e19) {
                *out = (uint64_t)bytes;
                return true;
            }
        }
    }
    cli_usage(verb, "%s expects a size like 5B, 500M or 2GB, got '%s'", opt, s);
    return false;
}

bool cli_opt(int argc, char **argv, int *i, const char *opt, const char **val, bool *bad, const char *verb) {
    if (strcmp(argv[*i], opt) != 0) return false;
    if (*i + 1 >= argc) {
        cli_usage(verb, "%s needs a value", opt);
        *bad = true;
        return true;
    }
    *val = argv[++*i];
    return true;
}

bool cli_compute_opt(int argc, char **argv, int *i, bool *bad, const char *verb) {
    const char *val = NULL;
    if (!cli_opt(argc, argv, i, "--compute", &val, bad, verb)) return false;
    stetho_compute c;
    if (*bad) return true;
    if (stetho_compute_parse(val, &c)) {
        cli_usage(verb, "--compute must be f32 or bf16, not '%s'", val);
        *bad = true;
        return true;
    }
    stetho_set_compute(c);
    return true;
}
