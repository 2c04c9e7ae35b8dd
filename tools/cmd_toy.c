/* stetho toy build -o DIR [--seed S] [--quick]: the tiny world from scratch. */
#include "cli.h"
#include "stetho/toy.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static const char *help =
    "usage: stetho toy build -o DIR [--seed S] [--quick] [--general DIR] [--threads N]\n"
    "                        [--base-tokens N] [--ft-tokens N] [--base-math-frac F]\n"
    "                        [--base-drill-frac F] [--base-bare-templates F]\n"
    "                        [--base-bare-share F]\n"
    "                        [--base-lr LR] [--ft-lr LR] [--ft-math-frac F]\n"
    "                        [--base-from DIR] [--probe N] [--probe-every TOKENS]\n"
    "                        [--no-saes] [--f32] [--quiet]\n"
    "       stetho toy saes DIR [--quick] [--seed S] [--threads N] [--quiet]\n"
    "\n"
    "Builds the tiny world (docs/tiny-world.md): seven synthetic math subjects and\n"
    "general text, a BPE tokenizer, a Gemma-3-architecture base model pretrained on\n"
    "both, a short fine-tune on math (general replay, embeddings frozen), saved as\n"
    "HF directories DIR/base and DIR/ft, loss logs in DIR/logs, world.json; then\n"
    "the study's prompt sets (DIR/data/prompts) and one TopK SAE per layer on the\n"
    "base model's residual stream (DIR/saes/layer_L, SAELens format).\n"
    "`toy saes` redoes only that last step on a built world.\n"
    "Deterministic for a seed and thread count.\n"
    "  -o DIR            output directory (created)\n"
    "  --seed S          world seed (default 1)\n"
    "  --quick           tiny sizes: about a minute (tests)\n"
    "  --general DIR     general text (general_text.jsonl, general_prompts.jsonl);\n"
    "                    default ../shared/data/general if present, else generated;\n"
    "                    'generated' forces the built-in generator\n"
    "  --base-tokens N   base pretraining tokens (default 10M; quick 150K)\n"
    "  --ft-tokens N     fine-tuning tokens (default 2M; quick 30K)\n"
    "  --base-math-frac F  share of math in the base stream (default 0.75)\n"
    "  --base-drill-frac F  share of the base's math that is arithmetic drills\n"
    "                    (default 0.25)\n"
    "  --base-bare-templates F  share of each subject's templates whose problems the\n"
    "                    base mostly sees as answer keys, answer only (default 0.6)\n"
    "  --base-bare-share F  share of those templates' problems shown that way\n"
    "                    (default 0.75; 0 = every problem with its worked solution)\n"
    "  --ft-math-frac F  share of math in the fine-tune stream (default 0.75)\n"
    "  --base-lr LR, --ft-lr LR  peak learning rates (defaults 2e-3, 5e-4;\n"
    "                    each decays to a tenth by a cosine)\n"
    "  --base-from DIR   skip pretraining: start from this earlier build's base/\n"
    "                    (same seed, tokenizer and architecture) and redo the fine-tune\n"
    "  --probe N         accuracy probes: 0-shot greedy on the first N test problems\n"
    "                    of each subject at the end of each phase (default 20; quick 3;\n"
    "                    0 = none), logged to DIR/logs/<phase>_probe.tsv and world.json\n"
    "  --probe-every T   also probe every T training tokens\n"
    "  --no-saes         stop after the fine-tune\n"
    "  --f32             save f32 weights (default bf16)\n"
    "  --threads N       worker threads (default: all cores)\n";

static double t0;

static void on_progress(void *user, const char *phase, const char *line) {
    (void)user;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    fprintf(stderr, "[%6.0fs] %-5s %s\n", (double)ts.tv_sec + ts.tv_nsec * 1e-9 - t0, phase, line);
}

static bool is_dir(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

int cmd_toy(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        fputs(help, argc < 2 ? stderr : stdout);
        return argc < 2 ? CLI_EXIT_USAGE : 0;
    }
    bool saes_only = !strcmp(argv[1], "saes");
    if (strcmp(argv[1], "build") && !saes_only)
        return cli_usage("toy", "unknown subcommand '%s' (try 'build' or 'saes')", argv[1]);
    const char *out = NULL, *val = NULL, *general = NULL;
    bool bad = false, quick = false, quiet = false, f32 = false, no_saes = false;
    const char *base_from = NULL;
    long seed = 1, threads = 0, base_tokens = 0, ft_tokens = 0, probe_n = -1, probe_every = 0;
    double base_frac = -1, drill_frac = -1, ft_frac = -1, base_lr = -1, ft_lr = -1, bare_t = -1, bare_s = -1;
    for (int i = 2; i < argc && !bad; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(help, stdout);
            return 0;
        } else if (!strcmp(argv[i], "--quick")) quick = true;
        else if (!strcmp(argv[i], "--quiet")) quiet = true;
        else if (!strcmp(argv[i], "--f32")) f32 = true;
        else if (!strcmp(argv[i], "--no-saes")) no_saes = true;
        else if (saes_only && !out && argv[i][0] != '-') out = argv[i];
        else if (cli_opt(argc, argv, &i, "-o", &out, &bad, "toy") || cli_opt(argc, argv, &i, "--output", &out, &bad, "toy") ||
                 cli_opt(argc, argv, &i, "--general", &general, &bad, "toy") ||
                 cli_opt(argc, argv, &i, "--base-from", &base_from, &bad, "toy")) {
        } else if (cli_opt(argc, argv, &i, "--seed", &val, &bad, "toy")) {
            if (!bad && !cli_parse_int("toy", "--seed", val, 0, INT32_MAX, &seed)) return CLI_EXIT_USAGE;
        } else if (cli_opt(argc, argv, &i, "--threads", &val, &bad, "toy")) {
            if (!bad && !cli_parse_int("toy", "--threads", val, 1, 1024, &threads)) return CLI_EXIT_USAGE;
        } else if (cli_opt(argc, argv, &i, "--base-tokens", &val, &bad, "toy")) {
            if (!bad && !cli_parse_int("toy", "--base-tokens", val, 1000, 10000000000L, &base_tokens)) return CLI_EXIT_USAGE;
        } else if (cli_opt(argc, argv, &i, "--ft-tokens", &val, &bad, "toy")) {
            if (!bad && !cli_parse_int("toy", "--ft-tokens", val, 1000, 10000000000L, &ft_tokens)) return CLI_EXIT_USAGE;
        } else if (cli_opt(argc, argv, &i, "--probe", &val, &bad, "toy")) {
            if (!bad && !cli_parse_int("toy", "--probe", val, 0, 100000, &probe_n)) return CLI_EXIT_USAGE;
        } else if (cli_opt(argc, argv, &i, "--probe-every", &val, &bad, "toy")) {
            if (!bad && !cli_parse_int("toy", "--probe-every", val, 1000, 10000000000L, &probe_every)) return CLI_EXIT_USAGE;
        } else if (cli_opt(argc, argv, &i, "--base-math-frac", &val, &bad, "toy")) {
            if (!bad && !cli_parse_double("toy", "--base-math-frac", val, &base_frac)) return CLI_EXIT_USAGE;
            if (!bad && !(base_frac >= 0 && base_frac <= 1)) return cli_usage("toy", "--base-math-frac must be in [0, 1]");
        } else if (cli_opt(argc, argv, &i, "--base-drill-frac", &val, &bad, "toy")) {
            if (!bad && !cli_parse_double("toy", "--base-drill-frac", val, &drill_frac)) return CLI_EXIT_USAGE;
            if (!bad && !(drill_frac >= 0 && drill_frac < 1))
                return cli_usage("toy", "--base-drill-frac must be in [0, 1)");
        } else if (cli_opt(argc, argv, &i, "--base-bare-templates", &val, &bad, "toy")) {
            if (!bad && !cli_parse_double("toy", "--base-bare-templates", val, &bare_t)) return CLI_EXIT_USAGE;
            if (!bad && !(bare_t >= 0 && bare_t <= 1))
                return cli_usage("toy", "--base-bare-templates must be in [0, 1]");
        } else if (cli_opt(argc, argv, &i, "--base-bare-share", &val, &bad, "toy")) {
            if (!bad && !cli_parse_double("toy", "--base-bare-share", val, &bare_s)) return CLI_EXIT_USAGE;
            if (!bad && !(bare_s >= 0 && bare_s <= 1)) return cli_usage("toy", "--base-bare-share must be in [0, 1]");
        } else if (cli_opt(argc, argv, &i, "--ft-math-frac", &val, &bad, "toy")) {
            if (!bad && !cli_parse_double("toy", "--ft-math-frac", val, &ft_frac)) return CLI_EXIT_USAGE;
            if (!bad && !(ft_frac >= 0 && ft_frac <= 1)) return cli_usage("toy", "--ft-math-frac must be in [0, 1]");
        } else if (cli_opt(argc, argv, &i, "--base-lr", &val, &bad, "toy")) {
            if (!bad && !cli_parse_double("toy", "--base-lr", val, &base_lr)) return CLI_EXIT_USAGE;
            if (!bad && !(base_lr > 0 && base_lr < 1)) return cli_usage("toy", "--base-lr must be in (0, 1)");
        } else if (cli_opt(argc, argv, &i, "--ft-lr", &val, &bad, "toy")) {
            if (!bad && !cli_parse_double("toy", "--ft-lr", val, &ft_lr)) return CLI_EXIT_USAGE;
            if (!bad && !(ft_lr > 0 && ft_lr < 1)) return cli_usage("toy", "--ft-lr must be in (0, 1)");
        } else return cli_usage("toy", "unexpected argument '%s'", argv[i]);
    }
    if (bad) return CLI_EXIT_USAGE;
    if (!out) return cli_usage("toy", saes_only ? "need the world's DIR" : "need -o DIR");
    stetho_toy_opts o;
    stetho_toy_opts_default(&o, quick);
    o.seed = (uint64_t)seed;
    if (base_tokens) o.base.tokens = base_tokens;
    if (ft_tokens) o.ft.tokens = ft_tokens;
    if (base_frac >= 0) o.base.math_frac = base_frac;
    if (drill_frac >= 0) o.base.drill_frac = drill_frac;
    if (ft_frac >= 0) o.ft.math_frac = ft_frac;
    if (bare_t >= 0) o.base.bare_templates = bare_t;
    if (bare_s >= 0) o.base.bare_share = bare_s;
    if (base_lr > 0) o.base.lr = base_lr, o.base.min_lr = base_lr / 10;
    if (ft_lr > 0) o.ft.lr = ft_lr, o.ft.min_lr = ft_lr / 10;
    if (probe_n >= 0) o.probe_limit = (int)probe_n;
    o.probe_every = probe_every;
    if (base_from && !is_dir(base_from)) return cli_usage("toy", "--base-from %s is not a directory", base_from);
    o.base_from = base_from;
    if (f32) o.save_dtype = STETHO_DTYPE_F32;
    if (general && !strcmp(general, "generated"))
        o.general_dir = NULL;
    else
        o.general_dir = general ? general : is_dir("../shared/data/general") ? "../shared/data/general" : NULL;
    if (o.general_dir && general && !is_dir(general)) return cli_usage("toy", "--general %s is not a directory", general);
    if (threads) stetho_set_threads((int)threads);
    if (!quiet) o.progress = on_progress;
    if (no_saes) o.sae_width = 0;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    t0 = (double)ts.tv_sec + ts.tv_nsec * 1e-9;
    if (saes_only) {
        if (!is_dir(out)) return cli_usage("toy", "%s is not a directory (build a world with `stetho toy build`)", out);
        stetho_status st = stetho_toy_saes(out, &o);
        if (st) return cli_fail(st, "DIR must be a world built by `stetho toy build` (base/, data/)");
        printf("trained the SAEs of %s (saes/, data/prompts/)\n", out);
        return 0;
    }
    stetho_status st = stetho_toy_build(out, &o);
    if (st) return cli_fail(st, NULL);
    printf("built the tiny world in %s (base/, ft/, data/, tokenizer/, logs/, %sworld.json)\n", out,
           o.sae_width > 0 ? "saes/, " : "");
    return 0;
}
