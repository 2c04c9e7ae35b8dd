/* stetho edit BASE (--task-vector TV | --finetuned FT) [--layers SPEC] [--modules SPEC]
 * [--alpha A] -o OUT_DIR: base + alpha * tau on a selection, as an HF directory. */
#include "cli.h"
#include "stetho/taskvec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *help =
    "usage: stetho edit BASE (--task-vector TV | --finetuned FT) -o OUT_DIR\n"
    "                   [--layers SPEC] [--modules SPEC] [--alpha A]\n"
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
    const char *base_path = NULL, *tv = NULL, *ftp = NULL, *out = NULL, *layers = NULL, *modules = "all", *val = NULL;
    stetho_edit_opts o = {1.0, 5000000000ull, false, false, NULL};
    bool bad = false;
    for (int i = 1; i < argc && !bad; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(help, stdout);
            return 0;
        } else if (cli_opt(argc, argv, &i, "--task-vector", &tv, &bad, "edit") ||
                   cli_opt(argc, argv, &i, "--finetuned", &ftp, &bad, "edit") ||
                   cli_opt(argc, argv, &i, "-o", &out, &bad, "edit") ||
                   cli_opt(argc, argv, &i, "--output", &out, &bad, "edit") ||
                   cli_opt(argc, argv, &i, "--layers", &layers, &bad, "edit") ||
                   cli_opt(argc, argv, &i, "--modules", &modules, &bad, "edit")) {
        } else if (cli_opt(argc, argv, &i, "--alpha", &val, &bad, "edit")) {
            if (!bad && !cli_parse_double("edit", "--alpha", val, &o.alpha)) return CLI_EXIT_USAGE;
        } else if (cli_opt(argc, argv, &i, "--out-shard-size", &val, &bad, "edit")) {
            if (!bad && !cli_parse_size("edit", "--out-shard-size", val, &o.shard_size)) return CLI_EXIT_USAGE;
        } else if (cli_opt(argc, argv, &i, "--threads", &val, &bad, "edit")) {
            long t;
            if (!bad && !cli_parse_int("edit", "--threads", val, 1, 1024, &t)) return CLI_EXIT_USAGE;
            if (!bad) stetho_set_threads((int)t);
        } else if (!strcmp(argv[i], "--force")) {
            o.force = true;
        } else if (!strcmp(argv[i], "--allow-missing")) {
            o.allow_missing = true;
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
    if (!tv == !ftp) return cli_usage("edit", "give exactly one of --task-vector TV and --finetuned FT");
    if (!out) return cli_usage("edit", "missing -o OUT_DIR");

    stetho_selection sel = {0};
    stetho_status st = stetho_module_spec_parse(modules, &sel.modules);
    if (st) return cli_fail(st, NULL);
    stetho_checkpoint base, delta;
    if ((st = stetho_checkpoint_open(&base, base_path)))
        return cli_fail(st, "BASE must be a Hugging Face model directory or a .safetensors file");
    if ((st = stetho_checkpoint_open(&delta, tv ? tv : ftp))) {
        stetho_checkpoint_close(&base);
        return cli_fail(st, tv ? "TV must be a .safetensors task vector (see 'stetho diff')"
                               : "FT must be a Hugging Face model directory or a .safetensors file");
    }
    int rc = 0;
    sel.n_layers = stetho_checkpoint_n_layers(&base);
    sel.layers = calloc(sel.n_layers ? (size_t)sel.n_layers : 1, sizeof *sel.layers);
    if (layers) {
        st = sel.n_layers ? stetho_layer_spec_parse(layers, sel.n_layers, sel.layers) : STETHO_ERR_INVALID;
        if (!sel.n_layers) cli_error(NULL, "%s: no decoder layers found, so --layers cannot select any", base_path);
        else if (st) rc = cli_fail(st, "layers are numbered from 0; see 'stetho edit --help'");
        if (st) rc = CLI_EXIT_USAGE;
    } else {
        for (int l = 0; l < sel.n_layers; l++) sel.layers[l] = true;
        sel.non_layer = true;
    }
    if (!rc) {
        st = stetho_taskvec_edit(&base, &delta, ftp != NULL, &sel, &o, out);
        if (st) rc = cli_fail(st, st == STETHO_ERR_EXISTS ? "choose another -o or add --force" : NULL);
        else printf("wrote %s\n", out);
    }
    free(sel.layers);
    stetho_checkpoint_close(&delta);
    stetho_checkpoint_close(&base);
    return rc;
}
