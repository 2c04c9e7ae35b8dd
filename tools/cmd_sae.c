/* stetho sae inspect | encode | train | eval: what an SAE directory holds,
 * batched encoding of captured activations, training SAEs on activations
 * streamed from a model, and SAELens' evaluation metrics. */
#include "cli.h"
#include "stetho/jsonl.h"
#include "stetho/model.h"
#include "stetho/safetensors.h"
#include "stetho/sae.h"
#include "stetho/sae_eval.h"
#include "stetho/sae_train.h"
#include "stetho/texts.h"
#include "stetho/tokenizer.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char *help =
    "usage: stetho sae inspect DIR\n"
    "       stetho sae encode SAE_DIR --input ACTS.safetensors -o FEATURES.safetensors\n"
    "                         [--tensor NAME] [--top K] [--reconstruct] [--threads N]\n"
    "       stetho sae train MODEL --hook blocks.L.hook_resid_post --input TEXT.jsonl --width W -o DIR\n"
    "                        [--arch topk|relu|jumprelu] [--k K] [--l1 C] [--tokens N] [--seed S]\n"
    "                        [--layers LIST] [--max-tokens-per-prompt N] [more: sae train --help]\n"
    "       stetho sae eval MODEL SAE_DIR --input PROMPTS.jsonl [--max-tokens N] [--json]\n"
    "                       [more: sae eval --help]\n"
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
    /* blocks of tokens: with --top only a block's dense activations exist at a time */
    size_t n = (size_t)t->shape[0], dm = (size_t)s.d_model, ds = (size_t)s.d_sae, K = (size_t)top;
    unsigned bits = stetho_dtype_bits(t->dtype);
    size_t blk = n < 1024 || bits % 8 ? (n ? n : 1) : 1024; /* sub-byte dtypes: one block */
    float *x = malloc(blk * dm * sizeof *x + 1), *blk_acts = top ? malloc(blk * ds * sizeof *blk_acts + 1) : NULL;
    float *acts = top ? NULL : malloc(n * ds * sizeof *acts + 1);
    float *xh = recon ? malloc(n * dm * sizeof *xh + 1) : NULL;
    int32_t *ti = top ? malloc(n * K * sizeof *ti + 1) : NULL;
    float *tv = top ? malloc(n * K * sizeof *tv + 1) : NULL;
    if (!x || (top ? !blk_acts || !ti || !tv : !acts) || (recon && !xh)) {
        cli_error("encode fewer tokens at a time", "out of memory for %zu tokens x %zu features", n, ds);
        rc = CLI_EXIT_FAIL;
    }
    size_t elt = bits / 8;
    for (size_t r0 = 0; !rc && r0 < n; r0 += blk) {
        size_t m = n - r0 < blk ? n - r0 : blk;
        float *a = top ? blk_acts : acts + r0 * ds;
        stetho_convert_to_f32(x, (const uint8_t *)t->data + r0 * dm * elt, t->dtype, m * dm);
        if ((st = stetho_sae_encode(&s, x, m, a))) rc = cli_fail(st, NULL);
        else if (recon && (st = stetho_sae_decode(&s, a, x, m, xh + r0 * dm))) rc = cli_fail(st, NULL);
        else if (top && (st = stetho_sae_top_k(a, m, s.d_sae, (int)top, ti + r0 * K, tv + r0 * K))) rc = cli_fail(st, NULL);
    }
    if (!rc) {
        stetho_tensor outs[3];
        size_t no = 0;
        if (top) {
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
    }
    free(ti);
    free(tv);
    free(x);
    free(blk_acts);
    free(acts);
    free(xh);
done:
    stetho_st_close(&f);
    stetho_sae_free(&s);
    return rc;
}

/* ---------------------------------------------------------------- train / eval */

static const char *train_help =
    "usage: stetho sae train MODEL --hook blocks.L.hook_resid_post --input TEXT.jsonl --width W -o DIR [options]\n"
    "\n"
    "Trains an SAE on activations streamed from the model (never all stored): each\n"
    "line's text (the \"text\" field) is tokenized with MODEL's tokenizer.json (BOS added),\n"
    "run through the model, and the hooked activations of every token except\n"
    "BOS/EOS/pad go into a shuffle buffer from which Adam steps are taken. Writes SAELens\n"
    "format (cfg.json + sae_weights.safetensors). See docs/sae.md.\n"
    "  --hook NAME            blocks.L.hook_resid_post (or hook_resid_pre, hook_attn_out,\n"
    "                         hook_mlp_out); with --layers, L is replaced by each layer\n"
    "  --layers LIST          train one SAE per layer in one pass over the data, e.g. 0,3,5\n"
    "                         or 2-6 or all; writes DIR/layer_L/ for each\n"
    "  --width W              features (d_sae)\n"
    "  --arch A               topk (default), relu (SAELens 'standard'), jumprelu\n"
    "  --k K                  topk: active features per token (default 32)\n"
    "  --l1 C                 relu: L1 coefficient, jumprelu: L0 coefficient, on inputs\n"
    "                         scaled to mean norm sqrt(d_model) (default 0.1 / 0.2 * sqrt(d_model))\n"
    "  --tokens N             training tokens per SAE, e.g. 2M (default: one pass over the\n"
    "                         input); the input is read again as often as needed\n"
    "  --seed S               initialisation and shuffling (default 42)\n"
    "  --max-tokens-per-prompt N  truncate each text (default 1024, at most the model's context)\n"
    "  --batch B              tokens per Adam step (default 4096)\n"
    "  --lr LR                learning rate (default 2e-4 / sqrt(W / 16384))\n"
    "  --buffer-tokens N      shuffle buffer (default 8 batches)\n"
    "  --b-dec-init M         mean (default), geometric-median or zero\n"
    "  --heldout-every N      every Nth text is held out, never trained on, for the final\n"
    "                         explained variance (default 10; 0 = none)\n"
    "  --heldout-tokens N     at most this many held-out tokens (default 8192)\n"
    "  --field NAME           JSONL field holding the text (default text)\n"
    "  --json PATH            also write the report (settings, progress, held-out metrics)\n"
    "  --force                overwrite an SAE already in DIR\n"
    "  --quiet                no progress line on stderr\n"
    "  --threads N            worker threads (default: all cores)\n"
    "  --compute MODE         f32 (default) or bf16: activations rounded to bf16 at bf16 weights\n";

static const char *eval_help =
    "usage: stetho sae eval MODEL SAE_DIR --input PROMPTS.jsonl [options]\n"
    "\n"
    "Runs the prompts (the \"text\" field, BOS added) through the model and reports\n"
    "SAELens' metrics for the SAE in SAE_DIR, or for every SAE under it (e.g. the\n"
    "layer_L/ folders of 'sae train --layers'): l0, l1, mse, explained_variance, cossim,\n"
    "dead/dense features (dense: firing on > 10%% of tokens), and the language-model loss\n"
    "with the reconstruction spliced in at the SAE's hook: ce_loss_score =\n"
    "(CE_zero_ablation - CE_spliced) / (CE_zero_ablation - CE_clean), kl_div_score =\n"
    "(KL_ablation - KL_spliced) / KL_ablation. BOS/EOS/pad positions are not scored and\n"
    "keep their activations. See docs/sae.md.\n"
    "  --max-tokens N             stop after N tokens in all (default: every prompt)\n"
    "  --max-tokens-per-prompt N  truncate each prompt (default 128, SAELens' context)\n"
    "  --hook NAME                the hook to read and splice (default: the SAE's own)\n"
    "  --no-downstream            reconstruction metrics only (one forward pass per prompt)\n"
    "  --field NAME               JSONL field holding the text (default text)\n"
    "  --json                     print JSON instead of a table\n"
    "  --threads N                worker threads (default: all cores)\n"
    "  --compute MODE             f32 (default) or bf16: activations rounded to bf16 at bf16 weights\n";

/* "3", "0,2,5", "2-6", "all" -> sorted distinct layers < n_layers. */
static int parse_layers(const char *s, int n_layers, int **out, int *n) {
    bool *want = calloc((size_t)n_layers, sizeof *want);
    if (!want) return cli_usage("sae", "out of memory");
    if (!strcmp(s, "all")) {
        for (int l = 0; l < n_layers; l++) want[l] = true;
    } else {
        const char *p = s;
        while (*p) {
            char *end;
            errno = 0;
            long a = strtol(p, &end, 10), b = a;
            if (end == p || errno) goto bad;
            if (*end == '-') {
                p = end + 1;
                b = strtol(p, &end, 10);
                if (end == p || errno) goto bad;
            }
            if (a < 0 || b < a) goto bad;
            if (b >= n_layers) {
                free(want);
                return cli_usage("sae", "--layers: layer %ld is outside the model's layers 0-%d", b, n_layers - 1);
            }
            for (long l = a; l <= b; l++) want[l] = true;
            if (*end == ',') end++;
            else if (*end) goto bad;
            p = end;
        }
    }
    *n = 0;
    *out = malloc((size_t)n_layers * sizeof **out);
    if (!*out) goto bad;
    for (int l = 0; l < n_layers; l++)
        if (want[l]) (*out)[(*n)++] = l;
    free(want);
    if (!*n) {
        free(*out);
        return cli_usage("sae", "--layers '%s' names no layer", s);
    }
    return 0;
bad:
    free(want);
    return cli_usage("sae", "--layers expects e.g. 3, 0,2,5, 2-6 or all, got '%s'", s);
}

static bool sae_in_dir(const char *dir, const char *name) {
    char p[4096];
    struct stat sb;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return stat(p, &sb) == 0;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void fmt_count(char *buf, size_t n, uint64_t v) {
    if (v >= 10000000) snprintf(buf, n, "%.1fM", v / 1e6);
    else if (v >= 10000) snprintf(buf, n, "%.1fK", v / 1e3);
    else snprintf(buf, n, "%llu", (unsigned long long)v);
}

typedef struct {
    const int *layers;
    const char *input;
    bool tty;
    double last_print;
    uint64_t next_mark;
    int pass;
    stetho_sae_trainer *const *tr;
} train_view;

static void train_progress(train_view *v, int n, uint64_t budget) {
    stetho_sae_train_progress p;
    stetho_sae_trainer_progress(v->tr[0], &p);
    char a[32], b[32];
    fmt_count(a, sizeof a, p.tokens_seen);
    fmt_count(b, sizeof b, budget);
    fprintf(stderr, "%ssae train: %s/%s tokens, step %llu/%llu", v->tty ? "\r" : "", a, b,
            (unsigned long long)p.steps, (unsigned long long)p.total_steps);
    for (int i = 0; i < n && i < 4; i++) {
        stetho_sae_trainer_progress(v->tr[i], &p);
        fprintf(stderr, " | loss %.4g L0 %.1f EV %.3f dead %d", p.loss, p.l0, p.explained_variance,
                p.dead_features);
        if (n > 1) fprintf(stderr, " (L%d)", v->layers[i]);
    }
    if (n > 4) fprintf(stderr, " | ... (%d layers)", n);
    fprintf(stderr, v->tty ? "\033[K" : "\n");
    fflush(stderr);
}

/* A line at most every half second on a terminal, else at every tenth of the budget. */
static void on_train_progress(void *user, stetho_sae_trainer *const *tr, int n, uint64_t budget, int pass) {
    train_view *v = user;
    v->tr = tr;
    if (pass != v->pass) {
        v->pass = pass;
        if (v->tty) fputc('\n', stderr);
        fprintf(stderr, "sae train: pass %d over %s\n", pass + 1, v->input);
    }
    if (!v->next_mark) v->next_mark = budget / 10;
    stetho_sae_train_progress p;
    stetho_sae_trainer_progress(tr[0], &p);
    bool show = v->tty ? now_s() - v->last_print > 0.5 : v->next_mark && p.tokens_seen >= v->next_mark;
    if (!show) return;
    train_progress(v, n, budget);
    v->last_print = now_s();
    while (v->next_mark && p.tokens_seen >= v->next_mark) v->next_mark += budget / 10;
}

static json_t *jnum(double v) { return isfinite(v) ? json_real(v) : json_null(); }

static json_t *metrics_json(const stetho_sae_metrics *m, bool downstream) {
    json_t *o = json_object();
    json_object_set_new(o, "n_tokens", json_integer((json_int_t)m->n_tokens));
    json_object_set_new(o, "l0", jnum(m->l0));
    json_object_set_new(o, "l1", jnum(m->l1));
    json_object_set_new(o, "mse", jnum(m->mse));
    json_object_set_new(o, "explained_variance", jnum(m->explained_variance));
    json_object_set_new(o, "cossim", jnum(m->cossim));
    json_object_set_new(o, "dead_features", json_integer(m->dead_features));
    json_object_set_new(o, "dense_features", json_integer(m->dense_features));
    if (downstream) {
        json_object_set_new(o, "ce_loss_score", jnum(m->ce_loss_score));
        json_object_set_new(o, "ce_loss_without_sae", jnum(m->ce_loss_without_sae));
        json_object_set_new(o, "ce_loss_with_sae", jnum(m->ce_loss_with_sae));
        json_object_set_new(o, "ce_loss_with_ablation", jnum(m->ce_loss_with_ablation));
        json_object_set_new(o, "kl_div_score", jnum(m->kl_div_score));
        json_object_set_new(o, "kl_div_with_sae", jnum(m->kl_div_with_sae));
        json_object_set_new(o, "kl_div_with_ablation", jnum(m->kl_div_with_ablation));
    }
    return o;
}

typedef struct {
    const char *model, *hook, *input, *out, *layers, *field, *json;
    long width, k, max_tok, batch, seed, heldout_every;
    double l1, lr;
    uint64_t tokens, buffer, heldout_tokens;
    stetho_sae_arch arch;
    stetho_sae_bdec_init bdec;
    bool force, quiet, k_given;
} train_args;

static int parse_train(int argc, char **argv, train_args *a) {
    *a = (train_args){.field = "text", .k = 32, .max_tok = 1024, .batch = 4096, .seed = 42, .heldout_every = 10,
                      .heldout_tokens = 8192, .arch = STETHO_SAE_TOPK};
    const char *v = NULL;
    bool bad = false;
    for (int i = 1; i < argc && !bad; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(train_help, stdout);
            return -1;
        } else if (cli_opt(argc, argv, &i, "--hook", &a->hook, &bad, "sae") ||
                   cli_opt(argc, argv, &i, "--input", &a->input, &bad, "sae") ||
                   cli_opt(argc, argv, &i, "-o", &a->out, &bad, "sae") ||
                   cli_opt(argc, argv, &i, "--output", &a->out, &bad, "sae") ||
                   cli_opt(argc, argv, &i, "--layers", &a->layers, &bad, "sae") ||
                   cli_opt(argc, argv, &i, "--field", &a->field, &bad, "sae") ||
                   cli_opt(argc, argv, &i, "--json", &a->json, &bad, "sae")) {
        } else if (cli_opt(argc, argv, &i, "--width", &v, &bad, "sae")) {
            if (!bad && !cli_parse_int("sae", "--width", v, 1, 1 << 24, &a->width)) return CLI_EXIT_USAGE;
        } else if (cli_opt(argc, argv, &i, "--k", &v, &bad, "sae")) {
            if (!bad && !cli_parse_int("sae", "--k", v, 1, 1 << 24, &a->k)) return CLI_EXIT_USAGE;
            a->k_given = true;
        } else if (cli_opt(argc, argv, &i, "--max-tokens-per-prompt", &v, &bad, "sae")) {
            if (!bad && !cli_parse_int("sae", "--max-tokens-per-prompt", v, 1, 1 << 24, &a->max_tok))
                return CLI_EXIT_USAGE;
        } else if (cli_opt(argc, argv, &i, "--batch", &v, &bad, "sae")) {
            if (!bad && !cli_parse_int("sae", "--batch", v, 1, 1 << 20, &a->batch)) return CLI_EXIT_USAGE;
        } else if (cli_opt(argc, argv, &i, "--seed", &v, &bad, "sae")) {
            if (!bad && !cli_parse_int("sae", "--seed", v, 0, 0x7fffffffL, &a->seed)) return CLI_EXIT_USAGE;
        } else if (cli_opt(argc, argv, &i, "--heldout-every", &v, &bad, "sae")) {
            if (!bad && !cli_parse_int("sae", "--heldout-every", v, 0, 1 << 30, &a->heldout_every))
                return CLI_EXIT_USAGE;
        } else if (cli_opt(argc, argv, &i, "--l1", &v, &bad, "sae")) {
            if (!bad && (!cli_parse_double("sae", "--l1", v, &a->l1) || !(a->l1 > 0)))
                return bad ? CLI_EXIT_USAGE : cli_usage("sae", "--l1 must be positive");
        } else if (cli_opt(argc, argv, &i, "--lr", &v, &bad, "sae")) {
            if (!bad && (!cli_parse_double("sae", "--lr", v, &a->lr) || !(a->lr > 0)))
                return bad ? CLI_EXIT_USAGE : cli_usage("sae", "--lr must be positive");
        } else if (cli_opt(argc, argv, &i, "--tokens", &v, &bad, "sae")) {
            if (!bad && !cli_parse_size("sae", "--tokens", v, &a->tokens)) return CLI_EXIT_USAGE;
        } else if (cli_opt(argc, argv, &i, "--buffer-tokens", &v, &bad, "sae")) {
            if (!bad && !cli_parse_size("sae", "--buffer-tokens", v, &a->buffer)) return CLI_EXIT_USAGE;
        } else if (cli_opt(argc, argv, &i, "--heldout-tokens", &v, &bad, "sae")) {
            if (!bad && !cli_parse_size("sae", "--heldout-tokens", v, &a->heldout_tokens)) return CLI_EXIT_USAGE;
        } else if (cli_opt(argc, argv, &i, "--arch", &v, &bad, "sae")) {
            if (!bad && (!stetho_sae_arch_from_name(v, &a->arch) || a->arch == STETHO_SAE_GATED))
                return cli_usage("sae", "--arch must be topk, relu or jumprelu, not '%s'", v);
        } else if (cli_opt(argc, argv, &i, "--b-dec-init", &v, &bad, "sae")) {
            if (bad) break;
            if (!strcmp(v, "mean")) a->bdec = STETHO_SAE_BDEC_MEAN;
            else if (!strcmp(v, "geometric-median")) a->bdec = STETHO_SAE_BDEC_GEOMETRIC_MEDIAN;
            else if (!strcmp(v, "zero")) a->bdec = STETHO_SAE_BDEC_ZERO;
            else return cli_usage("sae", "--b-dec-init must be mean, geometric-median or zero, not '%s'", v);
        } else if (cli_compute_opt(argc, argv, &i, &bad, "sae")) {
        } else if (cli_opt(argc, argv, &i, "--threads", &v, &bad, "sae")) {
            long t;
            if (!bad && !cli_parse_int("sae", "--threads", v, 1, 1024, &t)) return CLI_EXIT_USAGE;
            if (!bad) stetho_set_threads((int)t);
        } else if (!strcmp(argv[i], "--force")) {
            a->force = true;
        } else if (!strcmp(argv[i], "--quiet")) {
            a->quiet = true;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            return cli_usage("sae", "unknown option '%s' (see 'stetho sae train --help')", argv[i]);
        } else if (!a->model) {
            a->model = argv[i];
        } else {
            return cli_usage("sae", "unexpected argument '%s'", argv[i]);
        }
    }
    if (bad) return CLI_EXIT_USAGE;
    if (!a->model || !a->input || !a->out || !a->width)
        return cli_usage("sae", "sae train needs MODEL, --input TEXT.jsonl, --width W and -o DIR");
    if (!a->hook && !a->layers) return cli_usage("sae", "sae train needs --hook blocks.L.hook_X (or --layers LIST)");
    if (strlen(a->out) > 4000) return cli_usage("sae", "-o: the path is too long");
    if (a->arch == STETHO_SAE_TOPK && a->k > a->width) {
        if (a->k_given) return cli_usage("sae", "--k %ld exceeds --width %ld", a->k, a->width);
        a->k = a->width;
    }
    return 0;
}

static int sae_train(int argc, char **argv) {
    train_args a;
    int rc = parse_train(argc, argv, &a);
    if (rc) return rc < 0 ? 0 : rc;
    int hook_layer = -1;
    stetho_hook_kind kind = STETHO_HOOK_RESID_POST;
    if (a.hook && stetho_hook_parse(a.hook, &hook_layer, &kind))
        return cli_usage("sae", "%s", stetho_last_error());
    if (!a.layers && hook_layer < 0) return cli_usage("sae", "--hook %s names every layer: use --layers LIST", a.hook);

    /* what this run creates, so that a failure can take it away again */
    bool made_out = false, *fresh_dir = NULL;
    int saved = 0;
    stetho_tokenizer tok;
    stetho_status st = stetho_tokenizer_load(&tok, a.model);
    if (st) return cli_fail(st, "sae train tokenizes the texts with MODEL's tokenizer.json");
    stetho_model m;
    if ((st = stetho_model_load(&m, a.model))) {
        stetho_tokenizer_free(&tok);
        return cli_fail(st, "MODEL must be a Hugging Face model directory (config.json + safetensors)");
    }
    int *layers = NULL, n_layers = 1;
    char (*dirs)[4096] = NULL;
    json_t *report = NULL;
    stetho_sae_run_result res = {0};
    if (a.layers) {
        if ((rc = parse_layers(a.layers, m.cfg.n_layers, &layers, &n_layers))) goto done;
    } else {
        if (hook_layer >= m.cfg.n_layers) {
            rc = cli_usage("sae", "--hook %s: the model has layers 0-%d", a.hook, m.cfg.n_layers - 1);
            goto done;
        }
        layers = malloc(sizeof *layers);
        layers[0] = hook_layer;
    }
    dirs = calloc((size_t)n_layers, sizeof *dirs);
    if (!dirs) {
        cli_error(NULL, "out of memory");
        rc = CLI_EXIT_FAIL;
        goto done;
    }
    /* refuse before any work when an SAE is already where we would write */
    if (a.layers && mkdir(a.out, 0755) == 0) made_out = true;
    else if (a.layers && errno != EEXIST) {
        cli_error(NULL, "%s: cannot create: %s", a.out, strerror(errno));
        rc = CLI_EXIT_FAIL;
        goto done;
    }
    if (!(fresh_dir = calloc((size_t)n_layers + 1, sizeof *fresh_dir))) {
        cli_error(NULL, "out of memory");
        rc = CLI_EXIT_FAIL;
        goto done;
    }
    for (int i = 0; i < n_layers; i++) {
        if (a.layers) snprintf(dirs[i], sizeof dirs[i], "%s/layer_%d", a.out, layers[i]);
        else snprintf(dirs[i], sizeof dirs[i], "%s", a.out);
        struct stat sb;
        fresh_dir[i] = stat(dirs[i], &sb) != 0;
        if (!a.force && (sae_in_dir(dirs[i], "cfg.json") || sae_in_dir(dirs[i], "sae_weights.safetensors"))) {
            cli_error("use --force to overwrite, or another -o", "%s already holds an SAE", dirs[i]);
            rc = CLI_EXIT_FAIL;
            goto done;
        }
    }
    stetho_sae_run_opts ro;
    stetho_sae_run_opts_default(&ro);
    ro.layers = layers;
    ro.n_layers = n_layers;
    ro.kind = kind;
    ro.sae.d_sae = (int)a.width;
    ro.sae.arch = a.arch;
    ro.sae.k = (int)a.k;
    ro.sae.l1 = a.l1;
    ro.sae.lr = a.lr;
    ro.sae.batch = (int)a.batch;
    ro.sae.buffer_tokens = (size_t)a.buffer;
    ro.sae.seed = (uint64_t)a.seed; /* the same seed per layer: one layer's SAE does not depend on --layers */
    ro.sae.b_dec_init = a.bdec;
    ro.tokens = a.tokens;
    ro.field = a.field;
    ro.max_tokens_per_prompt = (int)a.max_tok;
    ro.heldout_every = a.heldout_every;
    ro.heldout_tokens = a.heldout_tokens;
    train_view view = {layers, a.input, isatty(2) && !a.quiet, now_s(), 0, 0, NULL};
    if (!a.quiet) {
        ro.progress = on_train_progress;
        ro.user = &view;
    }
    if ((st = stetho_sae_train_texts(&m, &tok, a.input, &ro, &res))) {
        if (view.tty) fputc('\n', stderr);
        rc = cli_fail(st, strstr(stetho_last_error(), "no training tokens") ? "every text is empty or held out"
                          : strstr(stetho_last_error(), ": text ") ? "check that the texts fit the model" : NULL);
        goto done;
    }
    uint64_t budget = res.budget;
    long held_prompts = res.heldout_texts;

    /* finish, save, report */
    report = json_object();
    json_object_set_new(report, "model", json_string(a.model));
    json_object_set_new(report, "input", json_string(a.input));
    json_object_set_new(report, "architecture", json_string(stetho_sae_arch_name(a.arch)));
    json_object_set_new(report, "d_sae", json_integer(a.width));
    json_object_set_new(report, "tokens", json_integer((json_int_t)budget));
    json_object_set_new(report, "seed", json_integer(a.seed));
    json_object_set_new(report, "heldout_prompts", json_integer(held_prompts));
    json_t *jl = json_array();
    json_object_set_new(report, "saes", jl);
    if (!a.quiet) { /* the trainers are gone: the last line from the reports */
        char c1[32], c2[32];
        fmt_count(c1, sizeof c1, res.reports[0].final.tokens_seen);
        fmt_count(c2, sizeof c2, budget);
        fprintf(stderr, "%ssae train: %s/%s tokens, step %llu/%llu", view.tty ? "\r" : "", c1, c2,
                (unsigned long long)res.reports[0].final.steps, (unsigned long long)res.reports[0].final.total_steps);
        for (int i = 0; i < res.n && i < 4; i++) {
            const stetho_sae_train_progress *p = &res.reports[i].final;
            fprintf(stderr, " | loss %.4g L0 %.1f EV %.3f dead %d", p->loss, p->l0, p->explained_variance,
                    p->dead_features);
            if (res.n > 1) fprintf(stderr, " (L%d)", layers[i]);
        }
        if (res.n > 4) fprintf(stderr, " | ... (%d layers)", res.n);
        fprintf(stderr, "%s\n", view.tty ? "\033[K" : "");
    }
    for (int i = 0; i < n_layers; i++) {
        const stetho_sae *s = &res.saes[i];
        const stetho_sae_train_report *rep = &res.reports[i];
        if ((st = stetho_sae_save_saelens(s, dirs[i], a.force))) goto fail;
        saved = i + 1;
        printf("%s: %s", s->hook, stetho_sae_arch_name(s->arch));
        if (s->arch == STETHO_SAE_TOPK) printf(" (k = %d)", s->k);
        printf(", d_model %d, d_sae %d, %llu tokens in %llu steps -> %s\n", s->d_model, s->d_sae,
               (unsigned long long)rep->final.tokens_trained, (unsigned long long)rep->final.steps, dirs[i]);
        if (rep->heldout.n_tokens)
            printf("  held-out (%llu tokens of %ld texts): explained_variance %.4f  mse %.5g  l0 %.2f  cossim %.4f  "
                   "dead %d/%d\n",
                   (unsigned long long)rep->heldout.n_tokens, held_prompts, rep->heldout.explained_variance,
                   rep->heldout.mse, rep->heldout.l0, rep->heldout.cossim, rep->heldout.dead_features, s->d_sae);
        else
            printf("  no held-out texts (--heldout-every %ld, %ld texts read)\n", a.heldout_every, res.texts_read);
        json_t *o = json_object();
        json_object_set_new(o, "layer", json_integer(s->layer));
        json_object_set_new(o, "hook", json_string(s->hook));
        json_object_set_new(o, "path", json_string(dirs[i]));
        json_object_set_new(o, "steps", json_integer((json_int_t)rep->final.steps));
        json_object_set_new(o, "tokens_trained", json_integer((json_int_t)rep->final.tokens_trained));
        json_object_set_new(o, "norm_scale", jnum(rep->norm_scale));
        json_object_set_new(o, "final_train_loss", jnum(rep->final.loss));
        json_object_set_new(o, "final_train_explained_variance", jnum(rep->final.explained_variance));
        json_object_set_new(o, "final_train_l0", jnum(rep->final.l0));
        json_object_set_new(o, "heldout", metrics_json(&rep->heldout, false));
        json_array_append_new(jl, o);
    }
    if (a.json) {
        char *text = json_dumps(report, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        size_t n = text ? strlen(text) : 0;
        char *body = text ? realloc(text, n + 2) : NULL;
        if (!body) {
            free(text);
            cli_error(NULL, "out of memory for the report");
            rc = CLI_EXIT_FAIL;
        } else {
            body[n] = '\n';
            if ((st = stetho_write_file(a.json, body, n + 1))) rc = cli_fail(st, NULL);
            free(body);
        }
    }
    goto done;
fail:
    rc = cli_fail(st, NULL);
done:
    if (rc && dirs && fresh_dir) { /* a failed run leaves nothing it wrote */
        for (int i = 0; i < n_layers; i++) {
            char f[sizeof dirs[i] + 32];
            if (i < saved && !a.force) {
                snprintf(f, sizeof f, "%s/cfg.json", dirs[i]);
                remove(f);
                snprintf(f, sizeof f, "%s/sae_weights.safetensors", dirs[i]);
                remove(f);
            }
            if (fresh_dir[i]) rmdir(dirs[i]); /* only if empty */
        }
        if (made_out) rmdir(a.out);
    }
    free(fresh_dir);
    json_decref(report);
    stetho_sae_run_result_free(&res);
    free(dirs), free(layers);
    stetho_model_free(&m);
    stetho_tokenizer_free(&tok);
    return rc;
}

static void print_metric(const char *name, double v) {
    if (isfinite(v)) printf("  %-22s %.6g\n", name, v);
    else printf("  %-22s -\n", name);
}

static int sae_eval(int argc, char **argv) {
    const char *model_path = NULL, *sae_dir = NULL, *input = NULL, *hook = NULL, *field = "text", *v = NULL;
    uint64_t max_tokens = 0;
    long per_prompt = 128;
    bool json = false, downstream = true, bad = false;
    for (int i = 1; i < argc && !bad; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(eval_help, stdout);
            return 0;
        } else if (cli_opt(argc, argv, &i, "--input", &input, &bad, "sae") ||
                   cli_opt(argc, argv, &i, "--hook", &hook, &bad, "sae") ||
                   cli_opt(argc, argv, &i, "--field", &field, &bad, "sae")) {
        } else if (cli_opt(argc, argv, &i, "--max-tokens", &v, &bad, "sae")) {
            if (!bad && !cli_parse_size("sae", "--max-tokens", v, &max_tokens)) return CLI_EXIT_USAGE;
        } else if (cli_opt(argc, argv, &i, "--max-tokens-per-prompt", &v, &bad, "sae")) {
            if (!bad && !cli_parse_int("sae", "--max-tokens-per-prompt", v, 1, 1 << 24, &per_prompt))
                return CLI_EXIT_USAGE;
        } else if (cli_compute_opt(argc, argv, &i, &bad, "sae")) {
        } else if (cli_opt(argc, argv, &i, "--threads", &v, &bad, "sae")) {
            long t;
            if (!bad && !cli_parse_int("sae", "--threads", v, 1, 1024, &t)) return CLI_EXIT_USAGE;
            if (!bad) stetho_set_threads((int)t);
        } else if (!strcmp(argv[i], "--json")) {
            json = true;
        } else if (!strcmp(argv[i], "--no-downstream")) {
            downstream = false;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            return cli_usage("sae", "unknown option '%s' (see 'stetho sae eval --help')", argv[i]);
        } else if (!model_path) {
            model_path = argv[i];
        } else if (!sae_dir) {
            sae_dir = argv[i];
        } else {
            return cli_usage("sae", "unexpected argument '%s'", argv[i]);
        }
    }
    if (bad) return CLI_EXIT_USAGE;
    if (!model_path || !sae_dir || !input)
        return cli_usage("sae", "sae eval needs MODEL, SAE_DIR and --input PROMPTS.jsonl");

    /* one SAE, or every SAE under the directory */
    stetho_sae *saes = NULL;
    size_t n = 0;
    stetho_status st;
    int rc = 0;
    if (sae_in_dir(sae_dir, "sae_weights.safetensors") || sae_in_dir(sae_dir, "params.safetensors") ||
        sae_in_dir(sae_dir, "params.npz")) {
        saes = calloc(1, sizeof *saes);
        if ((st = stetho_sae_load(&saes[0], sae_dir))) {
            free(saes);
            return cli_fail(st, NULL);
        }
        n = 1;
    } else {
        stetho_sae_entry *e;
        size_t ne;
        if ((st = stetho_sae_scan(sae_dir, &e, &ne))) return cli_fail(st, "SAE_DIR holds an SAE or one SAE per layer");
        saes = calloc(ne, sizeof *saes);
        for (size_t i = 0; i < ne && !st; i++)
            if (!(st = stetho_sae_load(&saes[i], e[i].path))) n++;
        stetho_sae_entries_free(e, ne);
        if (st) {
            rc = cli_fail(st, NULL);
            goto free_saes;
        }
    }
    if (hook) {
        if (n > 1) {
            rc = cli_usage("sae", "--hook applies to one SAE; %s holds %zu", sae_dir, n);
            goto free_saes;
        }
        snprintf(saes[0].hook, sizeof saes[0].hook, "%s", hook);
    }
    stetho_tokenizer tok;
    if ((st = stetho_tokenizer_load(&tok, model_path))) {
        rc = cli_fail(st, "sae eval tokenizes the prompts with MODEL's tokenizer.json");
        goto free_saes;
    }
    stetho_model m;
    if ((st = stetho_model_load(&m, model_path))) {
        rc = cli_fail(st, "MODEL must be a Hugging Face model directory (config.json + safetensors)");
        stetho_tokenizer_free(&tok);
        goto free_saes;
    }
    const stetho_sae **ptrs = calloc(n, sizeof *ptrs);
    for (size_t i = 0; i < n; i++) ptrs[i] = &saes[i];
    int32_t ignore[3];
    size_t n_ignore = 0;
    int32_t specials[3] = {tok.bos_id, tok.eos_id, tok.pad_id};
    for (int i = 0; i < 3; i++)
        if (specials[i] >= 0) ignore[n_ignore++] = specials[i];
    stetho_sae_evaluator *ev = NULL;
    stetho_texts ts;
    bool ts_open = false;
    int max_tok = (int)per_prompt;
    if (m.cfg.max_position > 0 && max_tok > m.cfg.max_position) max_tok = m.cfg.max_position;
    uint64_t used = 0;
    long prompts = 0;
    if ((st = stetho_sae_evaluator_init(&ev, &m, ptrs, n, ignore, n_ignore, downstream))) {
        const char *e = stetho_last_error();
        rc = cli_fail(st, strstr(e, "d_model") ? "the SAE was trained on another model: use one for MODEL's residual stream"
                          : strstr(e, "outside the model's layers") ? "choose a layer the model has with --hook"
                                                                   : NULL);
        goto out;
    }
    if ((st = stetho_texts_open(&ts, input, &tok, field, max_tok))) {
        rc = cli_fail(st, NULL);
        goto out;
    }
    ts_open = true;
    bool got;
    while ((!max_tokens || used < max_tokens) && !(st = stetho_texts_next(&ts, &got)) && got) {
        int T = ts.n;
        if (max_tokens && used + (uint64_t)T > max_tokens) T = (int)(max_tokens - used);
        if (T < 1) continue;
        if ((st = stetho_sae_evaluator_prompt(ev, ts.ids, T))) break;
        used += (uint64_t)T;
        prompts++;
    }
    if (st) {
        rc = cli_fail(st, NULL);
        goto out;
    }
    if (!prompts) {
        cli_error(NULL, "%s: no prompts", input);
        rc = CLI_EXIT_FAIL;
        goto out;
    }
    json_t *root = json_object(), *arr = json_array();
    json_object_set_new(root, "model", json_string(model_path));
    json_object_set_new(root, "input", json_string(input));
    json_object_set_new(root, "prompts", json_integer(prompts));
    json_object_set_new(root, "tokens", json_integer((json_int_t)used));
    json_object_set_new(root, "saes", arr);
    for (size_t i = 0; i < n; i++) {
        stetho_sae_metrics mt;
        stetho_sae_evaluator_result(ev, i, &mt);
        if (json) {
            json_t *o = json_object();
            json_object_set_new(o, "path", json_string(saes[i].dir));
            json_object_set_new(o, "hook", json_string(saes[i].hook));
            json_object_set_new(o, "architecture", json_string(stetho_sae_arch_name(saes[i].arch)));
            json_object_set_new(o, "d_sae", json_integer(saes[i].d_sae));
            json_object_set_new(o, "metrics", metrics_json(&mt, downstream));
            json_array_append_new(arr, o);
            continue;
        }
        printf("%s%s (%s, %s, d_sae %d): %llu tokens scored from %ld prompts\n", i ? "\n" : "", saes[i].hook,
               saes[i].dir, stetho_sae_arch_name(saes[i].arch), saes[i].d_sae, (unsigned long long)mt.n_tokens,
               prompts);
        print_metric("l0", mt.l0);
        print_metric("l1", mt.l1);
        print_metric("mse", mt.mse);
        print_metric("explained_variance", mt.explained_variance);
        print_metric("cossim", mt.cossim);
        printf("  %-22s %d / %d\n  %-22s %d\n", "dead_features", mt.dead_features, mt.d_sae, "dense_features",
               mt.dense_features);
        if (downstream) {
            print_metric("ce_loss_score", mt.ce_loss_score);
            print_metric("ce_loss_without_sae", mt.ce_loss_without_sae);
            print_metric("ce_loss_with_sae", mt.ce_loss_with_sae);
            print_metric("ce_loss_with_ablation", mt.ce_loss_with_ablation);
            print_metric("kl_div_score", mt.kl_div_score);
            print_metric("kl_div_with_sae", mt.kl_div_with_sae);
            print_metric("kl_div_with_ablation", mt.kl_div_with_ablation);
        }
    }
    if (json) {
        char *text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        if (text) puts(text);
        free(text);
    }
    json_decref(root);
out:
    if (ts_open) stetho_texts_close(&ts);
    stetho_sae_evaluator_free(ev);
    free(ptrs);
    stetho_model_free(&m);
    stetho_tokenizer_free(&tok);
free_saes:
    for (size_t i = 0; i < n; i++) stetho_sae_free(&saes[i]);
    free(saes);
    return rc;
}

int cmd_sae(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        fputs(help, argc < 2 ? stderr : stdout);
        return argc < 2 ? CLI_EXIT_USAGE : 0;
    }
    if (!strcmp(argv[1], "inspect")) return sae_inspect(argc - 1, argv + 1);
    if (!strcmp(argv[1], "encode")) return sae_encode(argc - 1, argv + 1);
    if (!strcmp(argv[1], "train")) return sae_train(argc - 1, argv + 1);
    if (!strcmp(argv[1], "eval")) return sae_eval(argc - 1, argv + 1);
    return cli_usage("sae", "unknown sae command '%s' (inspect, encode, train, eval)", argv[1]);
}
