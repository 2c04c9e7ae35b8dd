/* The study runner end to end on generated models: every variant's layers as
 * the selection module chooses them, summary.json's structure, and resuming:
 * a study interrupted by a failing write or allocation at points spread over
 * the whole run, then rerun, gives the same results as an uninterrupted run. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "testutil.h"

#include "stetho/bpe_train.h"
#include "stetho/eval.h"
#include "stetho/results.h"
#include "stetho/sae.h"
#include "stetho/study_run.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HID 16
#define DSAE 24

static const char *DOMAIN[] = {"12 + 7 = 19", "x^2 - 4 = 0", "3 * 5 = 15", "sqrt(16) = 4", "9 / 3 = 3"};
static const char *GENERAL[] = {"the cat sat on the mat", "rain fell over the quiet town", "she sang a song",
                                "a long road home", "birds in the morning"};
#define NP 5

static const char *g_dir;

static void write_jsonl(const char *path, const char *field, const char **texts, int n) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    for (int i = 0; i < n; i++) fprintf(f, "{\"%s\": \"%s\"}\n", field, texts[i]);
    fclose(f);
}

static void make_sae(const char *dir, int layer, uint64_t seed) {
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", dir);
    assert_int_equal(system(cmd), 0);
    stetho_sae s = {0};
    s.arch = STETHO_SAE_RELU;
    s.d_model = HID;
    s.d_sae = DSAE;
    s.layer = layer;
    snprintf(s.hook, sizeof s.hook, "blocks.%d.hook_resid_post", layer);
    s.W_enc = calloc((size_t)HID * DSAE, sizeof(float));
    s.W_dec = calloc((size_t)HID * DSAE, sizeof(float));
    s.b_enc = calloc(DSAE, sizeof(float));
    s.b_dec = calloc(HID, sizeof(float));
    for (int i = 0; i < HID * DSAE; i++) {
        s.W_enc[i] = tu_rand_normal(&seed) / 4;
        s.W_dec[i] = tu_rand_normal(&seed);
    }
    assert_int_equal(stetho_sae_save_saelens(&s, dir, false), STETHO_OK);
    free(s.W_enc), free(s.W_dec), free(s.b_enc), free(s.b_dec);
}

static int setup(void **state) {
    (void)state;
    g_dir = tu_tmpdir("study");
    const char *docs[4 * 2 * NP];
    size_t lens[4 * 2 * NP];
    for (int r = 0, k = 0; r < 4; r++)
        for (int i = 0; i < NP; i++) {
            docs[k] = DOMAIN[i], lens[k++] = strlen(DOMAIN[i]);
            docs[k] = GENERAL[i], lens[k++] = strlen(GENERAL[i]);
        }
    stetho_bpe_options bo = {.vocab_size = 300};
    stetho_bpe_model *bpe;
    if (stetho_bpe_train(docs, lens, 4 * 2 * NP, &bo, &bpe)) return 1;
    tu_model_spec spec = {.n_layers = 4, .hidden = HID, .intermediate = 32, .n_heads = 2, .n_kv_heads = 1,
                          .head_dim = 8, .vocab = 300, .seed = 5, .scale = 0.3f};
    const char *base = tu_make_model(tu_path(g_dir, "base"), &spec);
    spec.perturb_from = base;
    spec.perturb = 0.05f;
    spec.seed = 6;
    const char *ft = tu_make_model(tu_path(g_dir, "ft"), &spec);
    if (stetho_bpe_save(bpe, base) || stetho_bpe_save(bpe, ft)) return 1;
    stetho_bpe_free(bpe);
    for (int l = 0; l < 4; l++) {
        if (l == 2) continue; /* a layer without an SAE: never chosen by the stethoscope */
        char sub[32];
        snprintf(sub, sizeof sub, "saes/layer_%d", l);
        make_sae(tu_path(g_dir, sub), l, 40 + (uint64_t)l);
    }
    write_jsonl(tu_path(g_dir, "domain.jsonl"), "problem", DOMAIN, NP);
    write_jsonl(tu_path(g_dir, "general.jsonl"), "text", GENERAL, NP);
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s/math'", g_dir);
    if (system(cmd)) return 1;
    FILE *f = fopen(tu_path(g_dir, "math/test.jsonl"), "w");
    for (int s = 0; s < STETHO_EVAL_N_SUBJECTS; s++)
        for (int i = 0; i < 2; i++)
            fprintf(f, "{\"subject\": \"%s\", \"level\": \"Level 1\", \"type\": \"T\", \"problem\": \"%d + 0\", "
                       "\"solution\": \"$\\\\boxed{%d}$\"}\n",
                    STETHO_EVAL_SUBJECTS[s], i, i);
    fclose(f);
    return 0;
}

static const char *CONFIG = "models: {base: base, finetuned: ft}\n"
                            "sae_dir: saes\n"
                            "prompts: {domain: domain.jsonl, general: general.jsonl}\n"
                            "diagnose: {top_features: 4, metric: effect}\n"
                            "variants:\n"
                            "  stethoscope: {top_k: 2}\n"
                            "  scalpel: {features: 2}\n"
                            "  controls: {random: {seeds: [3]}, norm: true, bottom: true, all_layers: true}\n"
                            "eval: {num_fewshot: 0, max_gen_toks: 3, batch_size: 4, data: math}\n"
                            "perplexity: {input: general.jsonl, max_tokens: 16}\n";

static void load_config(stetho_study_config *c) {
    assert_int_equal(stetho_study_config_parse(c, CONFIG, strlen(CONFIG), "study.yaml", g_dir), STETHO_OK);
}

/* summary.json without what legitimately differs between runs (paths of the
 * run directory, times, the creation date). */
static json_t *results_of(const char *run) {
    json_t *s = json_load_file(tu_path(run, "summary.json"), 0, NULL);
    assert_non_null(s);
    json_object_del(s, "created");
    json_object_del(s, "timings");
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(s, "variants"), i, v) json_object_del(v, "model");
    json_object_del(json_object_get(s, "specificity"), "scores_file");
    json_object_del(json_object_get(s, "task_vector"), "file");
    return s;
}

static json_t *variant(json_t *s, const char *name) {
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(s, "variants"), i, v) if (!strcmp(json_string_value(json_object_get(v, "name")),
                                                                        name)) return v;
    fail_msg("no variant %s", name);
    return NULL;
}

static int layer_at(json_t *v, size_t i) { return (int)json_integer_value(json_array_get(json_object_get(v, "layers"), i)); }

static void test_run_and_summary(void **state) {
    (void)state;
    stetho_study_config c;
    load_config(&c);
    const char *run = tu_path(g_dir, "run");
    stetho_study_run_opts o = {0};
    assert_int_equal(stetho_study_run(&c, run, &o), STETHO_OK);
    json_t *s = results_of(run);
    assert_int_equal(json_array_size(json_object_get(s, "variants")), 8);
    assert_int_equal(json_array_size(json_object_get(s, "tasks")), 7);
    /* the stethoscope takes the two best-scoring layers, never the unscored layer 2 */
    json_t *spec = json_object_get(s, "specificity"), *e;
    assert_true(json_is_null(json_object_get(json_array_get(json_object_get(spec, "layers"), 2), "score")));
    double sc[4];
    size_t i;
    json_array_foreach(json_object_get(spec, "layers"), i, e) sc[i] = json_is_number(json_object_get(e, "score")) ? json_number_value(json_object_get(e, "score")) : -1e300;
    int best = 0, second = -1;
    for (int l = 1; l < 4; l++)
        if (sc[l] > sc[best]) best = l;
    for (int l = 0; l < 4; l++)
        if (l != best && (second < 0 || sc[l] > sc[second])) second = l;
    json_t *st = variant(s, "stethoscope_k2");
    int lo = best < second ? best : second, hi = best < second ? second : best;
    assert_int_equal(layer_at(st, 0), lo);
    assert_int_equal(layer_at(st, 1), hi);
    /* bottom: the two lowest scored layers, so the one scored layer left out is the best */
    json_t *bot = variant(s, "bottom_k2");
    for (size_t j = 0; j < 2; j++) assert_int_not_equal(layer_at(bot, j), best), assert_int_not_equal(layer_at(bot, j), 2);
    /* norm: the two layers of largest ||tau|| */
    json_t *tvl = json_object_get(json_object_get(s, "task_vector"), "layers");
    double nrm[4];
    json_array_foreach(tvl, i, e) nrm[i] = json_number_value(json_object_get(e, "norm"));
    json_t *nv = variant(s, "norm_k2");
    for (int l = 0; l < 4; l++) {
        bool chosen = layer_at(nv, 0) == l || layer_at(nv, 1) == l;
        if (!chosen) assert_true(nrm[l] <= nrm[layer_at(nv, 0)] && nrm[l] <= nrm[layer_at(nv, 1)]);
    }
    assert_int_equal(json_array_size(json_object_get(variant(s, "all_layers"), "layers")), 4);
    /* every variant has accuracy on 14 problems, perplexity, and a comparison with base */
    json_t *v;
    json_array_foreach(json_object_get(s, "variants"), i, v) {
        assert_int_equal(json_integer_value(json_object_get(json_object_get(json_object_get(v, "results"), "minerva_math"),
                                                            "n")),
                         14);
        assert_true(json_is_number(json_object_get(v, "perplexity")));
        if (i) assert_true(json_is_object(json_object_get(json_object_get(v, "vs_base"), "minerva_math")));
    }
    json_t *scal = json_object_get(s, "scalpel");
    double kept = json_number_value(json_object_get(scal, "retained"));
    assert_true(kept > 0 && kept < 1);
    assert_true(tu_exists(tu_path(run, "report.html")) && tu_exists(tu_path(run, "report.md")));
    json_decref(s);
    stetho_study_config_free(&c);
}

/* Make the first `correct` problems (in task order) of a variant right by
 * rewriting its lm-eval results and samples: the tiny random model gets nothing
 * right, and the ablation needs accuracies that differ to have anything to rank. */
static void set_correct(const char *eval_dir, int correct) {
    stetho_results res;
    assert_int_equal(stetho_results_read(eval_dir, true, &res), STETHO_OK);
    json_t *root = json_load_file(res.path, 0, NULL);
    assert_non_null(root);
    int left = correct;
    for (size_t i = 0; i < res.n_tasks; i++) {
        const stetho_results_task *t = &res.tasks[i];
        int c = left < (int)t->n ? left : (int)t->n, k = 0;
        left -= c;
        json_object_set_new(json_object_get(json_object_get(root, "results"), t->name), "exact_match,none",
                            json_real((double)c / (double)t->n));
        assert_non_null(t->samples_path);
        FILE *f = fopen(t->samples_path, "r");
        assert_non_null(f);
        char line[65536], text[1 << 17] = "";
        size_t used = 0;
        while (fgets(line, sizeof line, f)) {
            json_t *o = json_loads(line, 0, NULL);
            assert_non_null(o);
            json_object_set_new(o, "exact_match", json_integer(k++ < c));
            char *d = json_dumps(o, 0);
            used += (size_t)snprintf(text + used, sizeof text - used, "%s\n", d);
            assert_true(used < sizeof text);
            free(d);
            json_decref(o);
        }
        fclose(f);
        tu_write_file(t->samples_path, text, used);
    }
    assert_int_equal(left, 0);
    assert_int_equal(json_dump_file(root, res.path, JSON_INDENT(1)), 0);
    json_decref(root);
    stetho_results_free(&res);
}

/* Spearman's rho as Pearson's r of average ranks; NaN when a side is constant. */
static double rank_corr(const double *x, const double *y, int n) {
    double rx[8], ry[8], mx = 0, my = 0, sxy = 0, sxx = 0, syy = 0;
    for (int i = 0; i < n; i++) {
        double lx = 1, ex = 0, ly = 1, ey = 0;
        for (int j = 0; j < n; j++) {
            if (j == i) continue;
            lx += x[j] < x[i], ex += x[j] == x[i];
            ly += y[j] < y[i], ey += y[j] == y[i];
        }
        rx[i] = lx + ex / 2, ry[i] = ly + ey / 2;
        mx += rx[i] / n, my += ry[i] / n;
    }
    for (int i = 0; i < n; i++) {
        sxy += (rx[i] - mx) * (ry[i] - my);
        sxx += (rx[i] - mx) * (rx[i] - mx);
        syy += (ry[i] - my) * (ry[i] - my);
    }
    return sxx > 0 && syy > 0 ? sxy / sqrt(sxx * syy) : NAN;
}

/* The ablation with two alphas and no all-layers control: single-layer and
 * leave-one-out variants at the first alpha only, measured against tau in all
 * layers at that alpha (built for it), never against the fine-tune; importance
 * and its rank correlation with every metric checked against accuracies set by
 * hand. Also: the diagnose settings of the YAML reach the diagnosis. */
static void test_ablation_importance(void **state) {
    (void)state;
    static const char *yaml = "models: {base: base, finetuned: ft}\n"
                              "sae_dir: saes\n"
                              "prompts: {domain: domain.jsonl, general: general.jsonl}\n"
                              "diagnose: {top_features: 4, k: 3, ratio: 2, smoothing: 0.25, probe_folds: 2}\n"
                              "edit: {alpha: [0.5, 1]}\n"
                              "variants:\n"
                              "  stethoscope: {top_k: 1}\n"
                              "  scalpel: false\n"
                              "  controls: {random: false, norm: false, bottom: false, all_layers: false}\n"
                              "  ablation: {single_layer: true, leave_one_out: true}\n"
                              "eval: {num_fewshot: 0, max_gen_toks: 3, batch_size: 4, data: math}\n";
    stetho_study_config c;
    assert_int_equal(stetho_study_config_parse(&c, yaml, strlen(yaml), "ablation.yaml", g_dir), STETHO_OK);
    const char *run = tu_path(g_dir, "ablation");
    stetho_study_run_opts o = {0};
    assert_int_equal(stetho_study_run(&c, run, &o), STETHO_OK);

    json_t *sc = json_load_file(tu_path(run, "diagnose/scores.json"), 0, NULL), *set = json_object_get(sc, "settings");
    assert_int_equal(json_integer_value(json_object_get(set, "k")), 3);
    assert_true(json_number_value(json_object_get(set, "ratio")) == 2.0);
    assert_true(json_number_value(json_object_get(set, "log_ratio_smoothing")) == 0.25);
    assert_int_equal(json_integer_value(json_object_get(set, "probe_folds")), 2);
    json_decref(sc);

    /* correct answers of 14 per variant; the distractors (fine-tune, the other
     * alpha) are far from the reference so that using them shows */
    static const struct {
        const char *name;
        int correct;
    } acc[] = {{"base", 2},           {"finetuned_a0.5", 13},       {"stethoscope_k1_a0.5", 1}, {"all_layers_a0.5", 10},
               {"single_l0_a0.5", 6}, {"single_l1_a0.5", 3},        {"single_l2_a0.5", 2},      {"single_l3_a0.5", 4},
               {"leave_one_out_l0_a0.5", 4}, {"leave_one_out_l1_a0.5", 9}, {"leave_one_out_l2_a0.5", 8},
               {"leave_one_out_l3_a0.5", 7}, {"finetuned_a1", 0},   {"stethoscope_k1_a1", 14}};
    json_t *s = results_of(run);
    assert_int_equal(json_array_size(json_object_get(s, "variants")), sizeof acc / sizeof acc[0]);
    for (size_t i = 0; i < sizeof acc / sizeof acc[0]; i++) {
        (void)variant(s, acc[i].name); /* all there, and (the count) nothing else: no single_l0_a1 */
        char sub[128];
        snprintf(sub, sizeof sub, "variants/%s/eval", acc[i].name);
        set_correct(tu_path(run, sub), acc[i].correct);
    }
    assert_int_equal(json_array_size(json_object_get(variant(s, "all_layers_a0.5"), "layers")), 4);
    json_decref(s);

    /* rerun: every step is up to date, the summary is made from the doctored evaluations */
    assert_int_equal(stetho_study_run(&c, run, &o), STETHO_OK);
    s = results_of(run);
    json_t *abl = json_object_get(s, "ablation");
    assert_true(json_is_object(abl));
    assert_true(json_number_value(json_object_get(abl, "alpha")) == 0.5);
    double want[4] = {(4 + 6) / 28.0, (1 + 1) / 28.0, (0 + 2) / 28.0, (2 + 3) / 28.0}, imp[4];
    json_t *rows = json_object_get(abl, "layers"), *e;
    assert_int_equal(json_array_size(rows), 4);
    size_t i;
    json_array_foreach(rows, i, e) {
        imp[i] = json_number_value(json_object_get(e, "importance"));
        if (fabs(imp[i] - want[i]) > 1e-12) fail_msg("layer %zu: importance %.17g, want %.17g", i, imp[i], want[i]);
        assert_true(fabs(json_number_value(json_object_get(e, "single")) - (double)acc[4 + i].correct / 14) < 1e-12);
        assert_true(fabs(json_number_value(json_object_get(e, "leave_one_out")) - (double)acc[8 + i].correct / 14) < 1e-12);
    }
    /* one rank correlation per metric over the scored layers 0, 1, 3 (layer 2 has no SAE) */
    json_t *spec = json_object_get(s, "specificity"), *metrics = json_object_get(spec, "metrics");
    json_t *corr = json_object_get(abl, "correlations");
    assert_int_equal(json_array_size(metrics), 5);
    assert_int_equal(json_array_size(corr), 5);
    int n_defined = 0;
    json_array_foreach(corr, i, e) {
        const char *metric = json_string_value(json_object_get(e, "metric"));
        assert_string_equal(metric, json_string_value(json_array_get(metrics, i)));
        double x[4], y[4];
        int n = 0;
        size_t j;
        json_t *row;
        json_array_foreach(json_object_get(spec, "layers"), j, row) {
            json_t *v = json_object_get(json_object_get(row, "scores"), metric);
            if (json_is_number(v)) x[n] = json_number_value(v), y[n++] = imp[j];
        }
        assert_int_equal(n, 3);
        assert_int_equal(json_integer_value(json_object_get(e, "n")), 3);
        double rho = rank_corr(x, y, n);
        json_t *got = json_object_get(e, "rho");
        if (isnan(rho)) {
            assert_true(json_is_null(got));
            continue;
        }
        n_defined++;
        if (!json_is_number(got) || fabs(json_number_value(got) - rho) > 1e-12)
            fail_msg("%s: rho %s, want %.17g", metric, json_dumps(e, 0), rho);
        double p = json_number_value(json_object_get(e, "p"));
        assert_true(p > 0 && p <= 1 && json_is_true(json_object_get(e, "exact")));
    }
    assert_true(n_defined > 0);
    json_decref(s);
    stetho_study_config_free(&c);
}

/* Interrupt the study with a failing write (or allocation) at points spread
 * over the run, rerun, and compare with the uninterrupted run. */
static void test_interrupted_runs_resume(void **state) {
    (void)state;
    stetho_study_config c;
    load_config(&c);
    const char *ref = tu_path(g_dir, "run");
    if (!tu_exists(tu_path(ref, "summary.json"))) {
        stetho_study_run_opts o0 = {0};
        assert_int_equal(stetho_study_run(&c, ref, &o0), STETHO_OK);
    }
    json_t *want = results_of(ref);
    for (int kind = 0; kind < 2; kind++) {
        uint64_t (*fault)(uint64_t) = kind ? stetho_fault_alloc_after : stetho_fault_write_after;
        char name[32];
        snprintf(name, sizeof name, "count-%d", kind);
        const char *count_run = tu_path(g_dir, name);
        stetho_study_run_opts o = {0};
        fault(0);
        assert_int_equal(stetho_study_run(&c, count_run, &o), STETHO_OK);
        uint64_t total = fault(0);
        assert_true(total > 10);
        const int points = kind ? 4 : 6; /* each point is two study runs: keep the sanitizer build well inside its timeout */
        for (int p = 0; p < points; p++) {
            uint64_t n = 1 + (total - 1) * (uint64_t)p / (uint64_t)(points - 1);
            snprintf(name, sizeof name, "cut-%d-%d", kind, p);
            const char *run = tu_path(g_dir, name);
            fault(n);
            stetho_status st = stetho_study_run(&c, run, &o);
            fault(0);
            if (st == STETHO_OK) continue; /* the failing call's error was absorbed as a cache miss */
            stetho_clear_error();
            assert_int_equal(stetho_study_run(&c, run, &o), STETHO_OK);
            json_t *got = results_of(run);
            if (!json_equal(got, want)) {
                char *a = json_dumps(got, JSON_SORT_KEYS), *b = json_dumps(want, JSON_SORT_KEYS);
                fail_msg("fault %s at %llu of %llu: resumed summary differs\n%s\n%s", kind ? "alloc" : "write",
                         (unsigned long long)n, (unsigned long long)total, a, b);
            }
            json_decref(got);
        }
    }
    json_decref(want);
    stetho_study_config_free(&c);
}

/* edit.in_memory: every variant evaluated on the edit applied in memory gives
 * what its written checkpoint gave (perplexity to the last bit: the same
 * weights), no checkpoint is written, and each edit is recorded. */
static void test_in_memory(void **state) {
    (void)state;
    stetho_study_config c, cm;
    load_config(&c);
    const char *ref = tu_path(g_dir, "run");
    if (!tu_exists(tu_path(ref, "summary.json"))) {
        stetho_study_run_opts o0 = {0};
        assert_int_equal(stetho_study_run(&c, ref, &o0), STETHO_OK);
    }
    char text[4096];
    snprintf(text, sizeof text, "%sedit: {in_memory: true}\n", CONFIG);
    assert_int_equal(stetho_study_config_parse(&cm, text, strlen(text), "study.yaml", g_dir), STETHO_OK);
    assert_true(cm.in_memory);
    const char *run = tu_path(g_dir, "run-mem");
    stetho_study_run_opts o = {0};
    assert_int_equal(stetho_study_run(&cm, run, &o), STETHO_OK);
    assert_int_equal(stetho_study_run(&cm, run, &o), STETHO_OK); /* resumes: nothing left to do */
    json_t *want = results_of(ref), *got = results_of(run), *v;
    json_t *wv = json_object_get(want, "variants"), *gv = json_object_get(got, "variants");
    assert_int_equal(json_array_size(gv), json_array_size(wv));
    size_t i, in_memory = 0;
    json_array_foreach(gv, i, v) {
        const char *name = json_string_value(json_object_get(v, "name"));
        if (json_is_true(json_object_get(v, "in_memory"))) {
            in_memory++;
            char sub[160];
            snprintf(sub, sizeof sub, "variants/%s/model", name);
            assert_false(tu_exists(tu_path(run, sub)));
            assert_true(tu_exists(json_string_value(json_object_get(v, "edit"))));
            json_object_del(v, "in_memory");
            json_object_del(v, "edit");
        }
        json_t *w = json_array_get(wv, i);
        if (!json_equal(v, w)) {
            char *a = json_dumps(v, JSON_SORT_KEYS), *b = json_dumps(w, JSON_SORT_KEYS);
            fail_msg("variant %s differs in memory:\n%s\n%s", name, a, b);
        }
    }
    assert_int_equal(in_memory, 6); /* all but base and the fine-tuned checkpoint */
    json_decref(want);
    json_decref(got);
    stetho_study_config_free(&cm);
    stetho_study_config_free(&c);
}

static void test_refusals(void **state) {
    (void)state;
    stetho_study_config c;
    load_config(&c);
    const char *run = tu_path(g_dir, "refuse");
    stetho_study_run_opts o = {0};
    assert_int_equal(stetho_study_run(&c, run, &o), STETHO_OK);
    stetho_study_config_free(&c);
    /* the same directory with another config: refused, then accepted with force */
    static const char *other = "models: {base: base, finetuned: ft}\nsae_dir: saes\n"
                               "prompts: {domain: domain.jsonl, general: general.jsonl}\n"
                               "diagnose: {top_features: 4}\nvariants: {stethoscope: {top_k: 1}, scalpel: false,\n"
                               "  controls: {random: {seeds: [3]}, norm: false, bottom: false, all_layers: false}}\n"
                               "eval: {num_fewshot: 0, max_gen_toks: 3, batch_size: 4, data: math, limit: 1}\n";
    assert_int_equal(stetho_study_config_parse(&c, other, strlen(other), "other.yaml", g_dir), STETHO_OK);
    assert_int_equal(stetho_study_run(&c, run, &o), STETHO_ERR_MISMATCH);
    assert_non_null(strstr(stetho_last_error(), "different config"));
    o.force = true;
    assert_int_equal(stetho_study_run(&c, run, &o), STETHO_OK);
    json_t *s = results_of(run);
    assert_int_equal(json_array_size(json_object_get(s, "variants")), 4); /* base, finetuned, stethoscope, random */
    json_decref(s);
    stetho_study_config_free(&c);
    /* K beyond the model's layers: refused before anything is written */
    static const char *big_k = "models: {base: base, finetuned: ft}\nsae_dir: saes\n"
                               "prompts: {domain: domain.jsonl, general: general.jsonl}\n"
                               "variants: {stethoscope: {top_k: 9}}\neval: {data: math}\n";
    assert_int_equal(stetho_study_config_parse(&c, big_k, strlen(big_k), "k.yaml", g_dir), STETHO_OK);
    assert_int_not_equal(stetho_study_run(&c, tu_path(g_dir, "bigk"), &o), STETHO_OK);
    assert_non_null(strstr(stetho_last_error(), "top_k 9 exceeds the model's 4 layers"));
    assert_false(tu_exists(tu_path(g_dir, "bigk")));
    stetho_study_config_free(&c);
    /* diagnose.k beyond the SAEs' features: diagnose's error, naming d_sae */
    static const char *wide_k = "models: {base: base, finetuned: ft}\nsae_dir: saes\n"
                                "prompts: {domain: domain.jsonl, general: general.jsonl}\n"
                                "diagnose: {k: 25, top_features: 4}\nvariants: {scalpel: false}\neval: {data: math}\n";
    assert_int_equal(stetho_study_config_parse(&c, wide_k, strlen(wide_k), "wk.yaml", g_dir), STETHO_OK);
    assert_int_equal(stetho_study_run(&c, tu_path(g_dir, "widek"), &o), STETHO_ERR_INVALID);
    assert_non_null(strstr(stetho_last_error(), "K = 25 is larger than the 24 features (d_sae) of the layer 0 SAE"));
    stetho_study_config_free(&c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_run_and_summary),
        cmocka_unit_test(test_interrupted_runs_resume),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_in_memory),
        cmocka_unit_test(test_ablation_importance),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
