/* The study report: RUN_DIR/summary.json (written by `stetho study` and
 * `stetho demo`; schema in docs/report.md) rendered as a self-contained HTML page
 * (inline CSS and SVG charts: no network, no JavaScript) and a Markdown summary
 * with the same tables.
 *
 * The summary is validated in full before anything is written: a missing key, a
 * value of the wrong type or out of range, an unknown variant in a comparison or
 * a layer outside the model is an error naming the key path
 * ("summary.json: variants[2].results.minerva_math_algebra.ci: ..."). Strings
 * from the file are escaped for HTML and Markdown, so a variant named
 * "<script>" shows as text. Both files are written to temporary names and renamed
 * into place; a failure leaves neither behind. */
#ifndef STETHO_REPORT_H
#define STETHO_REPORT_H

#include "stetho/common.h"
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Largest summary.json read (bytes). */
#define STETHO_REPORT_MAX_SUMMARY ((size_t)64 << 20)

/* Render summary JSON text (len bytes; label names it in errors) into a new HTML
 * page and a new Markdown document (free both with free()). Either output
 * pointer may be NULL when that form is not wanted. STETHO_ERR_FORMAT for an
 * invalid summary, STETHO_ERR_NOMEM when memory runs out. */
stetho_status stetho_report_render(const char *json, size_t len, const char *label, char **html, char **md);

/* Read RUN_DIR/summary.json and write OUT_DIR/report.html and OUT_DIR/report.md
 * (out_dir NULL = run_dir; it is created when absent, its parent must exist).
 * Existing reports are replaced: they are derived from summary.json. */
stetho_status stetho_report_write(const char *run_dir, const char *out_dir);

#ifdef __cplusplus
}
#endif
#endif
