/* Running a study (issue 5): `stetho study CONFIG.yaml -o RUN_DIR` and the
 * tiny world's `stetho demo` call this. Steps, in order: task vector (and its
 * per-layer norms), diagnose (per-layer specificity from the SAEs), the
 * scalpel's projection, every variant built as an HF checkpoint under
 * RUN_DIR/variants/<name>/model, each evaluated (lm-eval-style results and
 * samples under variants/<name>/eval) and, when asked, its general-text
 * perplexity; then RUN_DIR/summary.json (every variant against base: Wilson
 * intervals, Newcombe differences, McNemar / z-tests with Holm; ablation
 * importance vs specificity) and the report (report.html, report.md).
 *
 * Resumable: each step writes RUN_DIR/steps/<step>.key, a hash of its settings
 * and of its inputs' identities (path, size, mtime); a rerun skips a step whose
 * key is unchanged and whose outputs exist. A RUN_DIR holding another config is
 * refused unless force is set. */
#ifndef STETHO_STUDY_RUN_H
#define STETHO_STUDY_RUN_H

#include "stetho/study.h"

#ifdef __cplusplus
extern "C" {
#endif

/* step: "taskvec", "diagnose", "edit", "eval", ...; msg: one line. */
typedef void (*stetho_study_progress_fn)(void *user, const char *step, const char *msg);

typedef struct {
    bool force;                  /* accept a RUN_DIR made with another config (changed steps rerun) */
    bool force_steps;            /* rerun every step even when up to date */
    const char *title;           /* summary/report title (default: the config file's name) */
    stetho_study_progress_fn progress;
    void *user;
} stetho_study_run_opts;

stetho_status stetho_study_run(const stetho_study_config *c, const char *run_dir, const stetho_study_run_opts *o);

#ifdef __cplusplus
}
#endif
#endif
