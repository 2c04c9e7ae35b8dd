/* stetho sae inspect DIR | stetho sae encode SAE_DIR --input ACTS -o FEATURES:
 * what an SAE directory holds, and batched encoding of captured activations. */
#include "cli.h"
#include "stetho/safetensors.h"
#include "stetho/sae.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *help =
    "usage: stetho sae inspect DIR\n"
    "       stetho sae encode SAE_DIR --input ACTS.safetensors -o FEATURES.safetensors\n"
    "                         [--tensor NAME] [--top K] [--reconstruct] [--threads N]\n"
    "\n"
    "SAE directories: Gemma Scope 2 (config.json + params.safetensors), Gemma Scope 1\n"
    "(params.npz) or SAELens (cfg.json + sae_weights.safetensors; standard, jumprelu,\n"
    "topk, gated).\n"
    "encode reads a [tokens, d_model] F32/BF16/F16 tensor (by default the one named\n"
    "after the SAE's hook, e.g. blocks.12.hook_resid_post as written by 'stetho\n"
    "capture', else the file's only 2-D tensor of width d_model) and writes:\n"
    "  feature_acts [tokens, d_sae]              dense activations (default), or with\n"
    "  top_indices I32 / top_values [tokens, K]  --top K: the K largest per token\n"
    "  reconstruction [tokens, d_model]          with --reconstruct\n";

static int sae_inspect(int argc, char **argv) {
    if (argc != 2) return cli_usage("sae", "sae inspect takes one SAE directory");
    stetho_sae s;
    stetho_status st = stetho_sae_load(&s, argv[1]);
    if (st) return cli_fail(st, "an SAE directory holds cfg.json + sae_weights.safetensors, params.safetensors or params.npz");
    printf("path:          %s\n", s.dir);
    printf("format:        %s\n", stetho_sae_format_name(s.format));
    printf("architecture:  %s", stetho_sae_arch_name(s.arch));
    if (s.arch == STETHO_SAE_TOPK) printf(" (k = %d)", s.k);
    printf("\nd_model:       %d\nd_sae:         %d\n", s.d_model, s.d_sae);
    printf("hook:          %s\n", s.hook[0] ? s.hook : "(unknown)");
    printf("layer:         %d\n", s.layer);
    printf("stored dtype:  %s\n", s.stored_dtype);
    static const char *norms[] = {"none", "constant_norm_rescale", "layer_norm", "expected_average_only_in"};
    printf("input:         apply_b_dec_to_input %s, normalize_activations %s\n", s.apply_b_dec_to_input ? "true" : "false",
           norms[s.norm]);
    stetho_sae_free(&s);
    return 0;
}

typedef struct {
    int idx;
    float val;
} scored;

static int by_value_desc(const void *a, const void *b) {
    const scored *x = a, *y = b;
    if (x->val != y->val) return x->val > y->val ? -1 : 1;
    return x->idx - y->idx;
}

static int sae_encode(int argc, char **argv) {
    const char *dir = NULL, *in = NULL, *out = NULL, *tensor = NULL, *val = NULL;
    long top = 0;
    bool recon = false, bad = false;
    for (int i = 1; i < argc && !bad; i++) {
        if (cli_opt(argc, argv, &i, "--input", &in, &bad, "sae") || cli_opt(argc, argv, &i, "-o", &out, &bad, "sae") ||
            cli_opt(argc, argv, &i, "--output", &out, &bad, "sae") || cli_opt(argc, argv, &i, "--tensor", &tensor, &bad, "sae")) {
        } else if (cli_opt(argc, argv, &i, "--top", &val, &bad, "sae")) {
            if (!bad && !cli_parse_int("sae", "--top", val, 1, 1 << 24, &top)) return CLI_EXIT_USAGE;
        } else if (cli_opt(argc, argv, &i, "--threads", &val, &bad, "sae")) {
            long t;
            if (!bad && !cli_parse_int("sae", "--threads", val, 1, 1024, &t)) return CLI_EXIT_USAGE;
            if (!bad) stetho_set_threads((int)t);
        } else if (!strcmp(argv[i], "--reconstruct")) {
            recon = true;
        } else if (argv[i][0] == '-') {
            return cli_usage("sae", "unknown option '%s'", argv[i]);
        } else if (!dir) {
            dir = argv[i];
        } else {
            return cli_usage("sae", "unexpected argument '%s'", argv[i]);
        }
    }
    if (bad) return CLI_EXIT_USAGE;
    if (!dir || !in || !out) return cli_usage("sae", "sae encode needs SAE_DIR, --input ACTS.safetensors and -o OUT");
    stetho_sae s;
    stetho_status st = stetho_sae_load(&s, dir);
    if (st) return cli_fail(st, NULL);
    stetho_st_file f;
    if ((st = stetho_st_open(&f, in))) {
        stetho_sae_free(&s);
        return cli_fail(st, "--input must be a safetensors file of activations (see 'stetho capture')");
    }
    int rc = 0;
    const stetho_tensor *t = NULL;
    if (tensor) t = stetho_st_find(&f, tensor);
    else if (s.hook[0]) t = stetho_st_find(&f, s.hook);
    if (!t && !tensor)
        for (size_t i = 0; i < f.n_tensors; i++) {
            const stetho_tensor *c = &f.tensors[i];
            if (c->ndim == 2 && c->shape[1] == (uint64_t)s.d_model && stetho_dtype_is_float(c->dtype)) {
                if (t) {
                    rc = cli_usage("sae", "%s holds several [tokens, %d] tensors ('%s', '%s'): choose one with --tensor",
                                   in, s.d_model, t->name, c->name);
                    goto done;
                }
                t = c;
            }
        }
    if (!t) {
        cli_error("use --tensor NAME", "%s: no tensor %s%s of width d_model = %d", in, tensor ? "named " : "",
                  tensor ? tensor : "", s.d_model);
        rc = CLI_EXIT_FAIL;
        goto done;
    }
    if (t->ndim != 2 || t->shape[1] != (uint64_t)s.d_model || !stetho_dtype_is_float(t->dtype)) {
        cli_error(NULL, "%s: tensor '%s' must be float [tokens, %d] to match the SAE's d_model", in, t->name, s.d_model);
        rc = CLI_EXIT_FAIL;
        goto done;
    }
    if (top > s.d_sae) {
        rc = cli_usage("sae", "--top %ld exceeds d_sae = %d", top, s.d_sae);
        goto done;
    }
    size_t n = (size_t)t->shape[0], dm = (size_t)s.d_model, ds = (size_t)s.d_sae;
    float *x = malloc(n * dm * sizeof *x + 1), *acts = malloc(n * ds * sizeof *acts + 1);
    float *xh = recon ? malloc(n * dm * sizeof *xh + 1) : NULL;
    if (!x || !acts || (recon && !xh)) {
        cli_error("encode fewer tokens at a time", "out of memory for %zu tokens x %zu features", n, ds);
        rc = CLI_EXIT_FAIL;
    }
    if (!rc) stetho_convert_to_f32(x, t->data, t->dtype, n * dm);
    if (!rc && (st = stetho_sae_encode(&s, x, n, acts))) rc = cli_fail(st, NULL);
    if (!rc && recon && (st = stetho_sae_decode(&s, acts, x, n, xh))) rc = cli_fail(st, NULL);
    if (!rc) {
        stetho_tensor outs[3];
        size_t no = 0;
        int32_t *ti = NULL;
        float *tv = NULL;
        if (top) {
            ti = malloc(n * (size_t)top * sizeof *ti + 1);
            tv = malloc(n * (size_t)top * sizeof *tv + 1);
            scored *row = malloc(ds * sizeof *row);
            for (size_t r = 0; r < n; r++) {
                for (size_t j = 0; j < ds; j++) row[j] = (scored){(int)j, acts[r * ds + j]};
                qsort(row, ds, sizeof *row, by_value_desc);
                for (long k = 0; k < top; k++) {
                    ti[r * (size_t)top + (size_t)k] = row[k].idx;
                    tv[r * (size_t)top + (size_t)k] = row[k].val;
                }
            }
            free(row);
            outs[no++] = (stetho_tensor){.name = "top_indices", .dtype = STETHO_DTYPE_I32, .ndim = 2,
                                         .shape = {n, (uint64_t)top}, .nbytes = n * (uint64_t)top * 4, .data = ti};
            outs[no++] = (stetho_tensor){.name = "top_values", .dtype = STETHO_DTYPE_F32, .ndim = 2,
                                         .shape = {n, (uint64_t)top}, .nbytes = n * (uint64_t)top * 4, .data = tv};
        } else {
            outs[no++] = (stetho_tensor){.name = "feature_acts", .dtype = STETHO_DTYPE_F32, .ndim = 2, .shape = {n, ds},
                                         .nbytes = n * ds * 4, .data = acts};
        }
        if (recon)
            outs[no++] = (stetho_tensor){.name = "reconstruction", .dtype = STETHO_DTYPE_F32, .ndim = 2,
                                         .shape = {n, dm}, .nbytes = n * dm * 4, .data = xh};
        stetho_kv meta[2] = {{"format", "pt"}, {"stetho_sae", s.dir}};
        if ((st = stetho_st_write_tensors(out, outs, no, meta, 2))) rc = cli_fail(st, NULL);
        else printf("encoded %zu tokens from '%s' with %s (%s, d_sae %d) -> %s\n", n, t->name, dir,
                    stetho_sae_arch_name(s.arch), s.d_sae, out);
        free(ti);
        free(tv);
    }
    free(x);
    free(acts);
    free(xh);
done:
    stetho_st_close(&f);
    stetho_sae_free(&s);
    return rc;
}

int cmd_sae(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        fputs(help, argc < 2 ? stderr : stdout);
        return argc < 2 ? CLI_EXIT_USAGE : 0;
    }
    if (!strcmp(argv[1], "inspect")) return sae_inspect(argc - 1, argv + 1);
    if (!strcmp(argv[1], "encode")) return sae_encode(argc - 1, argv + 1);
    return cli_usage("sae", "unknown sae command '%s' (inspect, encode)", argv[1]);
}
