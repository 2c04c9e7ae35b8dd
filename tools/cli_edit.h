/* The options that choose an edit (which task vector, which layers and modules,
 * alpha), shared by `stetho edit`, which writes the edited checkpoint, and
 * `stetho eval`, which evaluates it applied in memory. */
#ifndef STETHO_CLI_EDIT_H
#define STETHO_CLI_EDIT_H

#include "cli.h"
#include "stetho/select.h"
#include "stetho/taskvec.h"

typedef struct {
    const char *tv, *ftp;              /* --task-vector / --finetuned */
    const char *layers, *modules;      /* --layers SPEC, --modules SPEC (default "all") */
    const char *scores_path, *select_s, *metric;
    stetho_select_spec spec;           /* --select / --top-k / --seed */
    bool k_given, seed_given, allow_missing;
    double alpha;                      /* --alpha (default 1) */
    bool any;                          /* one of these options was given */
} cli_edit_args;

void cli_edit_args_init(cli_edit_args *a);
/* Takes argv[*i] (and its value) if it is one of the edit options. */
bool cli_edit_opt(int argc, char **argv, int *i, cli_edit_args *a, bool *bad, const char *verb);
/* Usage checks once every option is read: 0, or the exit code after reporting. */
int cli_edit_check(cli_edit_args *a, const char *verb);
/* Open BASE and the delta and fill sel (sel->layers allocated) and *meta (the
 * selection record, JSON text, or NULL). 0 on success: the caller frees
 * sel->layers and *meta and closes both checkpoints; otherwise the exit code,
 * with nothing left open. */
int cli_edit_open(const cli_edit_args *a, const char *base_path, stetho_checkpoint *base, stetho_checkpoint *delta,
                  stetho_selection *sel, const char **meta);

#endif
