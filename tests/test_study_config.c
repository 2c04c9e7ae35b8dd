/* Study YAML: defaults, anchors and merge keys, relative paths, and errors that
 * name the offending key. */
#include "testutil.h"

#include "stetho/study.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *minimal =
    "models: {base: base_dir, finetuned: /abs/ft}\n"
    "sae_dir: saes\n"
    "prompts: {domain: d.jsonl, general: g.jsonl}\n";

static void test_defaults_and_paths(void **state) {
    (void)state;
    stetho_study_config c;
    assert_int_equal(stetho_study_config_parse(&c, minimal, strlen(minimal), "study.yaml", "/runs/x"), STETHO_OK);
    assert_string_equal(c.base_model, "/runs/x/base_dir");
    assert_string_equal(c.finetuned_model, "/abs/ft");
    assert_string_equal(c.sae_dir, "/runs/x/saes");
    assert_true(c.v_base && c.v_finetuned && c.c_norm && c.c_bottom && c.c_all_layers);
    assert_int_equal(c.n_top_k, 1);
    assert_int_equal(c.top_k[0], 4);
    assert_int_equal(c.n_random_seeds, 3);
    assert_int_equal(c.scalpel_features, 8);
    assert_string_equal(c.tasks, "minerva_math");
    assert_int_equal(c.num_fewshot, 4);
    assert_int_equal(c.max_gen_toks, 256);
    /* diagnose's own defaults: top features 32 (capped at a narrower SAE), K etc. */
    assert_int_equal(c.top_features, 0);
    assert_int_equal(stetho_study_top_features(&c), 32);
    assert_true(c.diagnose_k == 0 && c.diagnose_ratio == 0 && c.diagnose_smoothing == 0 && c.diagnose_probe_folds == 0);
    assert_null(c.diagnose_field);
    char *json;
    assert_int_equal(stetho_study_config_json(&c, &json), STETHO_OK);
    assert_non_null(strstr(json, "\"scalpel_features\": 8"));
    assert_non_null(strstr(json, "\"top_features\": 32"));
    /* unset, the later diagnose keys stay out of the canonical form (older runs' config.json is unchanged) */
    assert_null(strstr(json, "diagnose_k"));
    assert_null(strstr(json, "diagnose_field"));
    uint64_t h1 = stetho_hash64(json, strlen(json), 0);
    free(json);
    stetho_study_config_free(&c);
    /* a changed setting changes the canonical form's hash */
    char other[512];
    snprintf(other, sizeof other, "%seval: {limit: 7}\n", minimal);
    assert_int_equal(stetho_study_config_parse(&c, other, strlen(other), "study.yaml", "/runs/x"), STETHO_OK);
    assert_int_equal(stetho_study_config_json(&c, &json), STETHO_OK);
    assert_true(stetho_hash64(json, strlen(json), 0) != h1);
    free(json);
    stetho_study_config_free(&c);
    /* so do the diagnose settings */
    snprintf(other, sizeof other, "%sdiagnose: {k: 3}\n", minimal);
    assert_int_equal(stetho_study_config_parse(&c, other, strlen(other), "study.yaml", "/runs/x"), STETHO_OK);
    assert_int_equal(stetho_study_config_json(&c, &json), STETHO_OK);
    assert_non_null(strstr(json, "\"diagnose_k\": 3"));
    assert_true(stetho_hash64(json, strlen(json), 0) != h1);
    free(json);
    stetho_study_config_free(&c);
}

static void test_compute(void **state) {
    (void)state;
    stetho_study_config c;
    char text[512], *json;
    assert_int_equal(stetho_study_config_parse(&c, minimal, strlen(minimal), "study.yaml", "/r"), STETHO_OK);
    assert_false(c.has_compute);
    assert_int_equal(stetho_study_compute(&c), STETHO_COMPUTE_F32);
    assert_int_equal(stetho_study_config_json(&c, &json), STETHO_OK);
    assert_null(strstr(json, "compute"));
    uint64_t h_unset = stetho_hash64(json, strlen(json), 0);
    free(json);
    stetho_study_config_free(&c);
    snprintf(text, sizeof text, "%scompute: f32\n", minimal);
    assert_int_equal(stetho_study_config_parse(&c, text, strlen(text), "study.yaml", "/r"), STETHO_OK);
    assert_true(c.has_compute);
    assert_int_equal(stetho_study_config_json(&c, &json), STETHO_OK);
    assert_true(stetho_hash64(json, strlen(json), 0) == h_unset);
    free(json);
    stetho_study_config_free(&c);
    snprintf(text, sizeof text, "%scompute: bf16\n", minimal);
    assert_int_equal(stetho_study_config_parse(&c, text, strlen(text), "study.yaml", "/r"), STETHO_OK);
    assert_int_equal(stetho_study_compute(&c), STETHO_COMPUTE_BF16);
    assert_int_equal(stetho_study_config_json(&c, &json), STETHO_OK);
    assert_non_null(strstr(json, "\"compute\": \"bf16\""));
    free(json);
    stetho_study_config_free(&c);
    /* unset, the process's mode is the study's */
    assert_int_equal(stetho_study_config_parse(&c, minimal, strlen(minimal), "study.yaml", "/r"), STETHO_OK);
    stetho_set_compute(STETHO_COMPUTE_BF16);
    assert_int_equal(stetho_study_compute(&c), STETHO_COMPUTE_BF16);
    stetho_set_compute(STETHO_COMPUTE_F32);
    stetho_study_config_free(&c);
    snprintf(text, sizeof text, "%scompute: fp8\n", minimal);
    assert_int_equal(stetho_study_config_parse(&c, text, strlen(text), "bad.yaml", "/r"), STETHO_ERR_FORMAT);
    assert_non_null(strstr(stetho_last_error(), "'compute' must be f32 or bf16, not 'fp8'"));
}

static void test_full_file_with_anchors(void **state) {
    (void)state;
    const char *yaml =
        ".small: &small\n"
        "  limit: 20\n"
        "  batch_size: 4\n"
        "  chat: yes\n"
        "models:\n"
        "  base: /m/base\n"
        "  task_vector: /m/tv.safetensors\n"
        "sae_dir: /saes\n"
        "prompts: {domain: /d.jsonl, general: /g.jsonl}\n"
        "_notes: {anything: [1, 2], goes: here}\n" /* '.' or '_' keys: anchor holders, ignored */
        "diagnose: {metric: topk_mass_diff, max_tokens: 128, top_features: 16,\n"
        "           k: 3, ratio: 2.5, smoothing: 0.25, probe_folds: 4, field: body}\n"
        "edit: {modules: \"attn,mlp\", alpha: [0.5, 1.0]}\n"
        "variants:\n"
        "  finetuned: false\n"
        "  stethoscope: {top_k: [2, 4, 8]}\n"
        "  scalpel: false\n"
        "  controls:\n"
        "    random: {seeds: [7, 8]}\n"
        "    bottom: false\n"
        "  ablation: {single_layer: true, leave_one_out: true}\n"
        "eval:\n"
        "  <<: *small\n"
        "  limit: 50\n"
        "  tasks: minerva_math_num_theory\n"
        "perplexity: {input: /p.jsonl, max_tokens: 256}\n"
        "threads: 2\n";
    stetho_study_config c;
    stetho_status st = stetho_study_config_parse(&c, yaml, strlen(yaml), "full.yaml", "/here");
    if (st) fail_msg("%s", stetho_last_error());
    assert_string_equal(c.task_vector, "/m/tv.safetensors");
    assert_null(c.finetuned_model);
    assert_string_equal(c.metric, "topk_mass_diff");
    assert_int_equal(c.top_features, 16);
    assert_int_equal(stetho_study_top_features(&c), 16);
    assert_int_equal(c.diagnose_k, 3);
    assert_true(c.diagnose_ratio == 2.5 && c.diagnose_smoothing == 0.25);
    assert_int_equal(c.diagnose_probe_folds, 4);
    assert_string_equal(c.diagnose_field, "body"); /* a field name, not a path: not resolved */
    char *json;
    assert_int_equal(stetho_study_config_json(&c, &json), STETHO_OK);
    assert_non_null(strstr(json, "\"diagnose_ratio\": 2.5"));
    assert_non_null(strstr(json, "\"diagnose_field\": \"body\""));
    free(json);
    assert_string_equal(c.modules, "attn,mlp");
    assert_int_equal(c.n_alpha, 2);
    assert_true(c.alpha[0] == 0.5);
    assert_false(c.v_finetuned);
    assert_int_equal(c.n_top_k, 3);
    assert_int_equal(c.top_k[2], 8);
    assert_int_equal(c.scalpel_features, 0);
    assert_int_equal(c.n_random_seeds, 2);
    assert_int_equal(c.random_seeds[1], 8);
    assert_false(c.c_bottom);
    assert_true(c.c_norm);
    assert_true(c.ablation_single && c.ablation_leave_one_out);
    assert_int_equal(c.limit, 50);     /* the mapping's own key wins over the merged one */
    assert_int_equal(c.batch_size, 4); /* merged from the anchor */
    assert_true(c.chat);
    assert_string_equal(c.tasks, "minerva_math_num_theory");
    assert_int_equal(c.perplexity_max_tokens, 256);
    assert_int_equal(c.threads, 2);
    stetho_study_config_free(&c);
}

static void expect_error(const char *yaml, const char *want) {
    stetho_study_config c;
    char text[1024];
    snprintf(text, sizeof text, "%s%s", minimal, yaml);
    if (stetho_study_config_parse(&c, text, strlen(text), "bad.yaml", "/x") == STETHO_OK) {
        stetho_study_config_free(&c);
        fail_msg("accepted: %s", yaml);
    }
    if (!strstr(stetho_last_error(), want)) fail_msg("message '%s' lacks '%s'", stetho_last_error(), want);
    assert_non_null(strstr(stetho_last_error(), "bad.yaml"));
}

static void test_errors(void **state) {
    (void)state;
    expect_error("eval: {limt: 5}\n", "unknown key 'eval.limt'");
    expect_error("variants: {controls: {randm: true}}\n", "unknown key 'variants.controls.randm'");
    expect_error("wandb: {}\n", "unknown key 'wandb'");
    expect_error("eval: {limit: lots}\n", "'eval.limit' must be an integer");
    expect_error("eval: {batch_size: 0}\n", "'eval.batch_size' must be an integer in [1, 4096]");
    expect_error("eval: {chat: maybe}\n", "'eval.chat' must be true or false");
    expect_error("edit: {alpha: []}\n", "'edit.alpha' is an empty list");
    expect_error("edit: {alpha: [1, x]}\n", "'edit.alpha' must be a number");
    expect_error("eval: [1, 2]\n", "'eval' must be a mapping");
    expect_error("diagnose: {kk: 4}\n", "unknown key 'diagnose.kk' (known under diagnose: metric, max_tokens, "
                                        "top_features, limit, k, ratio, smoothing, probe_folds, field)");
    expect_error("diagnose: {k: 0}\n", "'diagnose.k' must be an integer in [1, 1048576]");
    expect_error("diagnose: {ratio: 0}\n", "'diagnose.ratio' must be a number > 0");
    expect_error("diagnose: {smoothing: -1}\n", "'diagnose.smoothing' must be a number > 0");
    expect_error("diagnose: {probe_folds: 1}\n", "'diagnose.probe_folds' must be an integer in [2, 1000]");
    expect_error("diagnose: {field: \"\"}\n", "'diagnose.field' must be a non-empty string");
    expect_error("threads: [a]\n", "'threads' must be an integer");
    expect_error("prompts: {domain: x}\n", "duplicate key"); /* 'prompts' is already in the base text */
    expect_error("eval: {limit: 5\n", "not valid YAML");
    expect_error("%\xff\xff\na: 1\n", "not valid UTF-8 at byte"); /* hung libfyaml 0.7.12 */
    expect_error("a: \xc0\xaf\n", "not valid UTF-8");           /* overlong '/' */
    expect_error("a: \xed\xa0\x80\n", "not valid UTF-8");       /* a surrogate */
    stetho_study_config c;
    const char *two = "models: {base: a, finetuned: b, task_vector: c}\nsae_dir: s\nprompts: {domain: d, general: g}\n";
    assert_int_equal(stetho_study_config_parse(&c, two, strlen(two), "two.yaml", "/x"), STETHO_ERR_FORMAT);
    assert_non_null(strstr(stetho_last_error(), "exactly one of"));
    const char *none = "sae_dir: s\n";
    assert_int_equal(stetho_study_config_parse(&c, none, strlen(none), "none.yaml", "/x"), STETHO_ERR_FORMAT);
    assert_non_null(strstr(stetho_last_error(), "'models.base' is required"));
    assert_int_equal(stetho_study_config_parse(&c, "", 0, "empty.yaml", "/x"), STETHO_ERR_FORMAT);
    assert_int_equal(stetho_study_config_load(&c, "/nonexistent/study.yaml"), STETHO_ERR_NOTFOUND);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_and_paths),
        cmocka_unit_test(test_full_file_with_anchors),
        cmocka_unit_test(test_compute),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
