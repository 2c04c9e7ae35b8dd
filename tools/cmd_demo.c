/* stetho demo [-o RUN_DIR]: the whole study on the tiny world. Finds the world
 * (the one shipped in world/, else RUN_DIR/world, built when absent), writes
 * RUN_DIR/study.yaml for it (so the same run can be repeated or varied with
 * `stetho study`), runs the study (task vector, diagnose with the world's
 * SAEs, the scalpel, stethoscope top-K and its controls, evaluation,
 * perplexity, comparison, report) and prints a terminal summary of
 * RUN_DIR/summary.json. */
#include "cli.h"
#include "stetho/study_run.h"
#include "stetho/toy.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static const char *help =
    "usage: stetho demo [-o RUN_DIR] [--world DIR] [--quick] [--limit N] [--top-k K]\n"
    "                   [--ablation] [--threads N] [--compute f32|bf16] [--rerun]\n"
    "\n"
    "The study on the tiny world (docs/tiny-world.md): the task vector of its\n"
    "math fine-tune, per-layer specificity from its SAEs, the scalpel (tau projected\n"
    "on the top SAE features), the stethoscope (raw tau in the top-K layers) and\n"
    "its controls (random K layers with three seeds, the K layers of largest\n"
    "||tau||, the K least specific layers, all layers), each evaluated on the\n"
    "world's held-out problems (0-shot, greedy) with general-text perplexity, and\n"
    "compared with base. Writes RUN_DIR/study.yaml, the study's outputs,\n"
    "RUN_DIR/summary.json, report.html and report.md; prints a summary.\n"
    "A rerun resumes (finished steps are skipped).\n"
    "  -o RUN_DIR   default demo-run\n"
    "  --world DIR  the world to use (default: world/ shipped with the project,\n"
    "               else RUN_DIR/world, built when absent)\n"
    "  --quick      build and use the one-minute world (tests)\n"
    "  --limit N    problems per subject (default 100; the world has 300)\n"
    "  --top-k K    layers the stethoscope and its controls edit (default 3)\n"
    "  --ablation   also tau in each single layer and in all but each layer, and\n"
    "               the rank correlation of specificity with measured importance\n"
    "  --compute M  f32 (default) or bf16: activations rounded to bf16 at bf16\n"
    "               weights (faster prompts; numbers differ from f32's)\n"
    "  --rerun      redo every step\n";

static double t0;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void on_build(void *user, const char *phase, const char *line) {
    (void)user;
    fprintf(stderr, "[%6.0fs] %-10s %s\n", now_s() - t0, phase, line);
}

static void on_study(void *user, const char *step, const char *msg) {
    (void)user;
    fprintf(stderr, "[%6.0fs] %-10s %s\n", now_s() - t0, step, msg);
}

static bool exists(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0;
}

/* dir/name when it exists, else dir/fallback. */
static void pick(char *out, size_t n, const char *dir, const char *name, const char *fallback) {
    snprintf(out, n, "%s/%s", dir, name);
    if (!exists(out)) snprintf(out, n, "%s/%s", dir, fallback);
}

/* A double-quoted YAML scalar (paths may hold ':' or '#'). */
static void yaml_str(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') fputc('\\', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

static int write_config(const char *path, const char *world, long limit, long top_k, bool ablation, bool quick) {
    char base[2 * PATH_MAX], ft[2 * PATH_MAX], saes[2 * PATH_MAX], dom[2 * PATH_MAX], gen[2 * PATH_MAX],
        math[2 * PATH_MAX], held[2 * PATH_MAX];
    snprintf(base, sizeof base, "%s/base", world);
    snprintf(ft, sizeof ft, "%s/ft", world);
    snprintf(saes, sizeof saes, "%s/saes", world);
    snprintf(math, sizeof math, "%s/data/math", world);
    snprintf(held, sizeof held, "%s/data/general/heldout_text.jsonl", world);
    /* the shipped world carries small prompt sets; a built one has its training data */
    pick(dom, sizeof dom, world, "data/prompts/domain.jsonl", "data/math/train.jsonl");
    pick(gen, sizeof gen, world, "data/prompts/general.jsonl", "data/general/general_prompts.jsonl");
    char *text = NULL;
    size_t text_len = 0;
    FILE *f = open_memstream(&text, &text_len);
    if (!f) {
        cli_error(NULL, "out of memory");
        return CLI_EXIT_FAIL;
    }
    fprintf(f, "# The tiny world's study, written by `stetho demo` (rerun it with `stetho study`).\n");
    fprintf(f, "models:\n  base: ");
    yaml_str(f, base);
    fprintf(f, "\n  finetuned: ");
    yaml_str(f, ft);
    fprintf(f, "\nsae_dir: ");
    yaml_str(f, saes);
    fprintf(f, "\nprompts:\n  domain: ");
    yaml_str(f, dom);
    fprintf(f, "\n  general: ");
    yaml_str(f, gen);
    fprintf(f, "\ndiagnose: {limit: %d, max_tokens: 256}\n", quick ? 50 : 280);
    fprintf(f, "variants:\n  stethoscope: {top_k: %ld}\n  scalpel: {features: 8}\n", top_k);
    fprintf(f, "  controls: {random: {seeds: [1, 2, 3]}, norm: true, bottom: true, all_layers: true}\n");
    fprintf(f, "  ablation: {single_layer: %s, leave_one_out: %s}\n", ablation ? "true" : "false",
            ablation ? "true" : "false");
    fprintf(f, "eval:\n  tasks: minerva_math\n  limit: %ld\n  num_fewshot: 0   # the world was trained on this format\n",
            limit);
    fprintf(f, "  max_gen_toks: 200\n  batch_size: 16\n  data: ");
    yaml_str(f, math);
    fprintf(f, "\nperplexity:\n  input: ");
    yaml_str(f, held);
    fprintf(f, "\n  max_tokens: 256\n");
    stetho_status st = fclose(f) ? STETHO_ERR_NOMEM : stetho_write_file(path, text, text_len);
    free(text);
    return st ? cli_fail(st, NULL) : 0;
}

static double num(json_t *o, const char *k) {
    json_t *v = json_object_get(o, k);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

/* The terminal summary: what the report shows, in a few tables. */
static void print_summary(const char *run) {
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/summary.json", run);
    json_t *s = json_load_file(path, 0, NULL);
    if (!s) return;
    const char *group = json_string_value(json_object_get(s, "group"));
    if (!group) group = "minerva_math";
    json_t *tv = json_object_get(s, "task_vector"), *spec = json_object_get(s, "specificity");
    json_t *scal = json_object_get(s, "scalpel"), *e;
    size_t i;
    printf("\nTiny world study (%s)\n\nlayer  ||tau||  ||tau||/||theta||  tau energy  specificity (%s)\n", run,
           json_string_value(json_object_get(spec, "metric")) ? json_string_value(json_object_get(spec, "metric")) : "");
    json_array_foreach(json_object_get(tv, "layers"), i, e) {
        double sc = NAN;
        json_t *row;
        size_t j;
        json_array_foreach(json_object_get(spec, "layers"), j, row) if (json_integer_value(json_object_get(row, "layer")) ==
                                                                         json_integer_value(json_object_get(e, "layer")))
            sc = num(row, "score");
        printf("%5lld  %7.3f  %17.4f  %9.1f%%  %11.4f\n", (long long)json_integer_value(json_object_get(e, "layer")),
               num(e, "norm"), num(e, "rel_norm"), 100 * num(e, "energy_share"), sc);
    }
    if (json_is_object(scal))
        printf("\nscalpel: the top %lld SAE features of each layer keep %.1f%% of tau's energy in the projected "
               "matrices (a random subspace of that rank: %.1f%%)\n",
               (long long)json_integer_value(json_object_get(scal, "features")), 100 * num(scal, "retained"),
               100 * num(scal, "expected_random"));
    printf("\n%-28s %-16s %16s %14s %9s %9s %11s\n", "variant", "layers", "accuracy", "vs base", "p", "p (Holm)",
           "perplexity");
    json_array_foreach(json_object_get(s, "variants"), i, e) {
        json_t *res = json_object_get(json_object_get(e, "results"), group);
        json_t *vb = json_object_get(json_object_get(e, "vs_base"), group);
        char layers[64] = "-";
        json_t *ls = json_object_get(e, "layers"), *l;
        size_t j, off = 0;
        if (json_is_array(ls)) {
            layers[0] = '\0';
            json_array_foreach(ls, j, l) off += (size_t)snprintf(layers + off, off < sizeof layers ? sizeof layers - off : 0,
                                                                  "%s%lld", j ? "," : "", (long long)json_integer_value(l));
        }
        char acc[32], diff[32] = "", p[16] = "", ph[16] = "";
        snprintf(acc, sizeof acc, "%5.1f%% %4lld/%-4lld", 100 * num(res, "acc"),
                 (long long)json_integer_value(json_object_get(res, "correct")),
                 (long long)json_integer_value(json_object_get(res, "n")));
        if (json_is_object(vb)) {
            const char *dir = json_string_value(json_object_get(vb, "direction"));
            snprintf(diff, sizeof diff, "%+6.1f pts %s", 100 * num(vb, "diff"),
                     dir && !strcmp(dir, "up") ? "^" : dir && !strcmp(dir, "down") ? "v" : " ");
            snprintf(p, sizeof p, "%.3g", num(vb, "p"));
            snprintf(ph, sizeof ph, "%.3g", num(vb, "p_holm"));
        }
        printf("%-28s %-16s %16s %14s %9s %9s %11.3f\n", json_string_value(json_object_get(e, "label")), layers, acc, diff,
               p, ph, num(e, "perplexity"));
    }
    json_t *abl = json_object_get(s, "ablation");
    if (json_is_object(abl)) {
        printf("\nspecificity vs measured layer importance (Spearman):");
        json_array_foreach(json_object_get(abl, "correlations"), i, e)
            printf(" %s rho %.2f (p %.2g);", json_string_value(json_object_get(e, "metric")), num(e, "rho"), num(e, "p"));
        printf("\n");
    }
    printf("\np: McNemar's exact test on paired verdicts (overall row); ^/v: significant after Holm across subjects.\n"
           "Everything above is as measured on this run; docs/tiny-world.md discusses it against the paper.\n");
    json_decref(s);
}

int cmd_demo(int argc, char **argv) {
    const char *run = "demo-run", *val = NULL, *world_opt = NULL;
    bool bad = false, quick = false, ablation = false, rerun = false;
    long limit = 100, top_k = 3, l;
    for (int i = 1; i < argc && !bad; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(help, stdout);
            return 0;
        } else if (!strcmp(argv[i], "--quick")) quick = true;
        else if (!strcmp(argv[i], "--ablation")) ablation = true;
        else if (!strcmp(argv[i], "--rerun")) rerun = true;
        else if (cli_opt(argc, argv, &i, "-o", &run, &bad, "demo") ||
                 cli_opt(argc, argv, &i, "--world", &world_opt, &bad, "demo")) {
        } else if (cli_opt(argc, argv, &i, "--limit", &val, &bad, "demo")) {
            if (!bad && !cli_parse_int("demo", "--limit", val, 1, 100000, &limit)) return CLI_EXIT_USAGE;
        } else if (cli_opt(argc, argv, &i, "--top-k", &val, &bad, "demo")) {
            if (!bad && !cli_parse_int("demo", "--top-k", val, 1, 1024, &top_k)) return CLI_EXIT_USAGE;
        } else if (cli_compute_opt(argc, argv, &i, &bad, "demo")) {
        } else if (cli_opt(argc, argv, &i, "--threads", &val, &bad, "demo")) {
            if (!bad && !cli_parse_int("demo", "--threads", val, 1, 1024, &l)) return CLI_EXIT_USAGE;
            if (!bad) stetho_set_threads((int)l);
        } else return cli_usage("demo", "unexpected argument '%s'", argv[i]);
    }
    if (bad) return CLI_EXIT_USAGE;
    if (strlen(run) > 3000 || (world_opt && strlen(world_opt) > 3000)) return cli_usage("demo", "path too long");
    t0 = now_s();
    char world[PATH_MAX], path[PATH_MAX + 64];
    if (world_opt) snprintf(world, sizeof world, "%s", world_opt);
    else if (!quick && exists("world/world.json")) snprintf(world, sizeof world, "world");
    else snprintf(world, sizeof world, "%s/world", run);
    if (mkdir(run, 0755) && errno != EEXIST) {
        cli_error(NULL, "%s: cannot create: %s", run, strerror(errno));
        return CLI_EXIT_FAIL;
    }
    snprintf(path, sizeof path, "%s/world.json", world);
    stetho_status st = STETHO_OK;
    if (!exists(path)) {
        fprintf(stderr, "building the tiny world in %s (%s)\n", world,
                quick ? "quick" : "full size: about 30 minutes on 2 cores");
        stetho_toy_opts o;
        stetho_toy_opts_default(&o, quick);
        o.general_dir = exists("../shared/data/general") ? "../shared/data/general" : NULL;
        o.progress = on_build;
        if ((st = stetho_toy_build(world, &o))) return cli_fail(st, NULL);
    } else {
        fprintf(stderr, "using the tiny world in %s\n", world);
    }
    snprintf(path, sizeof path, "%s/saes", world);
    if (!exists(path)) {
        cli_error("train them with 'stetho toy saes WORLD' (or rebuild the world with 'stetho toy build')",
                  "%s: the world has no SAEs", world);
        return CLI_EXIT_FAIL;
    }
    char abs_world[PATH_MAX];
    if (!realpath(world, abs_world)) {
        cli_error(NULL, "%s: %s", world, strerror(errno));
        return CLI_EXIT_FAIL;
    }
    snprintf(path, sizeof path, "%s/study.yaml", run);
    int rc = write_config(path, abs_world, quick ? (limit < 20 ? limit : 20) : limit, top_k, ablation, quick);
    if (rc) return rc;
    stetho_study_config c;
    if ((st = stetho_study_config_load(&c, path))) return cli_fail(st, NULL);
    stetho_study_run_opts o = {.force = true, .force_steps = rerun, .title = "tiny world", .progress = on_study};
    fprintf(stderr, "[%6.0fs] %-10s %s\n", now_s() - t0, "study", path);
    st = stetho_study_run(&c, run, &o);
    stetho_study_config_free(&c);
    if (st) return cli_fail(st, NULL);
    print_summary(run);
    printf("wrote %s/summary.json, %s/report.html, %s/report.md (%.0f s)\n", run, run, run, now_s() - t0);
    return 0;
}
