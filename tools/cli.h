/* Shared helpers for the stetho command-line tool: error reporting and small
 * argument parsers. Each subcommand lives in cmd_<verb>.c and exposes
 * `int cmd_<verb>(int argc, char **argv)` (argv[0] is the verb). */
#ifndef STETHO_CLI_H
#define STETHO_CLI_H

#include "stetho/common.h"
#include <stdbool.h>
#include <stdint.h>

/* Exit codes: 0 ok, 1 failure, 2 usage. */
#define CLI_EXIT_FAIL 1
#define CLI_EXIT_USAGE 2

/* Print "stetho: error: <msg>" and, if hint is non-NULL, "  hint: <hint>". */
void cli_error(const char *hint, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Report a failed library call: message from stetho_last_error(), then the hint.
 * Returns CLI_EXIT_FAIL (or CLI_EXIT_USAGE for STETHO_ERR_INVALID). */
int cli_fail(stetho_status st, const char *hint);
/* Usage error: prints the message and "see 'stetho <verb> --help'"; returns 2. */
int cli_usage(const char *verb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Parsers for option values; print a usage error and return false when bad. */
bool cli_parse_double(const char *verb, const char *opt, const char *s, double *out);
bool cli_parse_int(const char *verb, const char *opt, const char *s, long min, long max, long *out);
/* Sizes like "5B", "500M", "2GB", "1.5G", "1048576" (bytes; K/M/G/T/B-for-billion
 * follow mergekit: "5B" = 5e9 bytes). */
bool cli_parse_size(const char *verb, const char *opt, const char *s, uint64_t *out);

/* True if argv[i] equals opt and a value follows; advances *i to the value.
 * Prints a usage error and sets *bad when the value is missing. */
bool cli_opt(int argc, char **argv, int *i, const char *opt, const char **val, bool *bad, const char *verb);

/* --compute f32|bf16 (stetho_set_compute): true if argv[i] is the option (then
 * *i advances past its value); prints a usage error and sets *bad when the
 * value is missing or not a mode. */
bool cli_compute_opt(int argc, char **argv, int *i, bool *bad, const char *verb);
#endif
