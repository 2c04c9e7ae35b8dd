/* stetho edit BASE (--task-vector TV | --finetuned FT) [--layers SPEC | --scores S --top-k K |
 * --select METHOD ...] [--modules SPEC] [--alpha A] -o OUT_DIR: base + alpha * tau on a
 * selection, as an HF directory, with the selection recorded in its metadata. */
#include "cli_edit.h"

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

int cmd_edit(int argc, char **argv) {
    const char *base_path = NULL, *out = NULL, *val = NULL;
    cli_edit_args a;
    cli_edit_args_init(&a);
    stetho_edit_opts o = {1.0, 5000000000ull, false, false, NULL};
    bool bad = false;
    for (int i = 1; i < argc && !bad; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(help, stdout);
            return 0;
        } else if (cli_edit_opt(argc, argv, &i, &a, &bad, "edit") || cli_opt(argc, argv, &i, "-o", &out, &bad, "edit") ||
                   cli_opt(argc, argv, &i, "--output", &out, &bad, "edit")) {
        } else if (cli_opt(argc, argv, &i, "--out-shard-size", &val, &bad, "edit")) {
            if (!bad && !cli_parse_size("edit", "--out-shard-size", val, &o.shard_size)) return CLI_EXIT_USAGE;
        } else if (cli_opt(argc, argv, &i, "--threads", &val, &bad, "edit")) {
            long t;
            if (!bad && !cli_parse_int("edit", "--threads", val, 1, 1024, &t)) return CLI_EXIT_USAGE;
            if (!bad) stetho_set_threads((int)t);
        } else if (!strcmp(argv[i], "--force")) {
            o.force = true;
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
    if (!a.tv == !a.ftp) return cli_usage("edit", "give exactly one of --task-vector TV and --finetuned FT");
    if (!out) return cli_usage("edit", "missing -o OUT_DIR");
    int rc = cli_edit_check(&a, "edit");
    if (rc) return rc;
    o.alpha = a.alpha;
    o.allow_missing = a.allow_missing;
    stetho_checkpoint base, delta;
    stetho_selection sel;
    if ((rc = cli_edit_open(&a, base_path, &base, &delta, &sel, &o.extra_meta))) return rc;
    stetho_status st = stetho_taskvec_edit(&base, &delta, a.ftp != NULL, &sel, &o, out);
    if (st) rc = cli_fail(st, st == STETHO_ERR_EXISTS ? "choose another -o or add --force" : NULL);
    else printf("wrote %s\n", out);
    free(sel.layers);
    free((char *)o.extra_meta);
    stetho_checkpoint_close(&delta);
    stetho_checkpoint_close(&base);
    return rc;
}
