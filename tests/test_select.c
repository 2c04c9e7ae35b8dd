/* Layer selection: parsing, top/bottom/norm ranking with ties broken by layer
 * index, seeded random draws (distinct, reproducible, uniform), ablations,
 * SCORES.json loading and model checks, per-layer ||tau|| against an
 * independent computation, and the metadata record. */
#include "testutil.h"

#include "stetho/select.h"
#include "stetho/study.h"
#include "stetho/taskvec.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void test_parse(void **state) {
    (void)state;
    stetho_select_spec s = {0};
    const char *names[] = {"top", "bottom", "random", "norm", "all"};
    for (int i = 0; i < 5; i++) {
        assert_int_equal(stetho_select_spec_parse(names[i], &s), STETHO_OK);
        assert_int_equal((int)s.method, i);
        assert_string_equal(stetho_select_method_name(s.method), names[i]);
    }
    assert_int_equal(stetho_select_spec_parse("only:12", &s), STETHO_OK);
    assert_int_equal(s.method, STETHO_SELECT_ONLY);
    assert_int_equal(s.layer, 12);
    assert_int_equal(stetho_select_spec_parse("except:0", &s), STETHO_OK);
    assert_int_equal(s.method, STETHO_SELECT_EXCEPT);
    assert_int_equal(s.layer, 0);
    const char *bad[] = {"", "only", "only:", "only:x", "except:-1", "only:3x", "topp", "all:2", "random:1", "Top"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(stetho_select_spec_parse(bad[i], &s), STETHO_ERR_INVALID);
    assert_non_null(strstr(stetho_last_error(), "unknown layer selection"));
    assert_true(stetho_select_needs_k(STETHO_SELECT_RANDOM));
    assert_false(stetho_select_needs_k(STETHO_SELECT_ONLY));
    assert_true(stetho_select_needs_scores(STETHO_SELECT_BOTTOM));
    assert_false(stetho_select_needs_scores(STETHO_SELECT_NORM));
}

/* Run a selection and return the order as "a,b,c" (static buffer). */
static const char *pick(stetho_select_method m, int k, uint64_t seed, int layer, int n, const double *v) {
    static char buf[512];
    stetho_select_spec s = {m, k, seed, layer};
    bool chosen[64];
    int order[64], nc;
    stetho_status st = stetho_select_layers(&s, n, v, chosen, order, &nc);
    if (st) {
        snprintf(buf, sizeof buf, "error");
        return buf;
    }
    size_t o = 0;
    int count = 0;
    for (int i = 0; i < n; i++) count += chosen[i];
    assert_int_equal(count, nc);
    buf[0] = '\0';
    for (int i = 0; i < nc; i++) {
        assert_true(chosen[order[i]]);
        o += (size_t)snprintf(buf + o, sizeof buf - o, "%s%d", i ? "," : "", order[i]);
    }
    return buf;
}

static void test_rankings_and_ties(void **state) {
    (void)state;
    double v[6] = {0.1, 0.5, NAN, 0.5, 0.2, -1};
    assert_string_equal(pick(STETHO_SELECT_TOP, 2, 0, 0, 6, v), "1,3"); /* tie 0.5: layer 1 first */
    assert_string_equal(pick(STETHO_SELECT_TOP, 3, 0, 0, 6, v), "1,3,4");
    assert_string_equal(pick(STETHO_SELECT_TOP, 5, 0, 0, 6, v), "1,3,4,0,5");
    assert_string_equal(pick(STETHO_SELECT_TOP, 6, 0, 0, 6, v), "error"); /* layer 2 is unscored */
    assert_non_null(strstr(stetho_last_error(), "only 5 of the 6 layers"));
    assert_string_equal(pick(STETHO_SELECT_BOTTOM, 2, 0, 0, 6, v), "5,0");
    assert_string_equal(pick(STETHO_SELECT_BOTTOM, 4, 0, 0, 6, v), "5,0,4,1");
    double same[4] = {1, 1, 1, 1};
    assert_string_equal(pick(STETHO_SELECT_TOP, 2, 0, 0, 4, same), "0,1");
    assert_string_equal(pick(STETHO_SELECT_BOTTOM, 2, 0, 0, 4, same), "0,1");
    double norms[5] = {3, 7, 7, 1, 9};
    assert_string_equal(pick(STETHO_SELECT_NORM, 3, 0, 0, 5, norms), "4,1,2");
    assert_string_equal(pick(STETHO_SELECT_TOP, 0, 0, 0, 5, norms), "error");
    assert_string_equal(pick(STETHO_SELECT_TOP, 1, 0, 0, 5, NULL), "error");
    assert_string_equal(pick(STETHO_SELECT_ALL, 0, 0, 0, 4, NULL), "0,1,2,3");
    assert_string_equal(pick(STETHO_SELECT_ONLY, 0, 0, 2, 4, NULL), "2");
    assert_string_equal(pick(STETHO_SELECT_EXCEPT, 0, 0, 2, 4, NULL), "0,1,3");
    assert_string_equal(pick(STETHO_SELECT_ONLY, 0, 0, 4, 4, NULL), "error");
    assert_non_null(strstr(stetho_last_error(), "layers 0-3"));
    assert_string_equal(pick(STETHO_SELECT_EXCEPT, 0, 0, 0, 1, NULL), "error");
    assert_string_equal(pick(STETHO_SELECT_ALL, 0, 0, 0, 0, NULL), "error");
}

static void test_random(void **state) {
    (void)state;
    enum { N = 12, K = 3, DRAWS = 6000 };
    char first[64];
    snprintf(first, sizeof first, "%s", pick(STETHO_SELECT_RANDOM, K, 42, 0, N, NULL));
    assert_string_equal(pick(STETHO_SELECT_RANDOM, K, 42, 0, N, NULL), first); /* same seed, same layers */
    int differ = 0, hits[N] = {0};
    for (uint64_t seed = 0; seed < DRAWS; seed++) {
        stetho_select_spec s = {STETHO_SELECT_RANDOM, K, seed, 0};
        bool chosen[N];
        int order[N], nc;
        assert_int_equal(stetho_select_layers(&s, N, NULL, chosen, order, &nc), STETHO_OK);
        assert_int_equal(nc, K);
        for (int i = 0; i < K; i++) {
            assert_in_range(order[i], 0, N - 1);
            for (int j = 0; j < i; j++) assert_int_not_equal(order[i], order[j]); /* distinct */
            hits[order[i]]++;
        }
        if (strcmp(pick(STETHO_SELECT_RANDOM, K, seed, 0, N, NULL), first)) differ++;
    }
    assert_true(differ > DRAWS * 9 / 10);
    /* each layer is drawn K/N of the time: 1500 expected, binomial SD ~34 */
    for (int l = 0; l < N; l++) assert_in_range(hits[l], 1350, 1650);
    /* K = N: every layer, in some order */
    stetho_select_spec s = {STETHO_SELECT_RANDOM, N, 7, 0};
    bool chosen[N];
    int order[N], nc;
    assert_int_equal(stetho_select_layers(&s, N, NULL, chosen, order, &nc), STETHO_OK);
    for (int l = 0; l < N; l++) assert_true(chosen[l]);
    assert_string_equal(pick(STETHO_SELECT_RANDOM, N + 1, 7, 0, N, NULL), "error");
    assert_non_null(strstr(stetho_last_error(), "the model has 12 layers"));
}

static const char *write_scores(const char *dir, const char *name, const char *text) {
    const char *p = tu_path(dir, name);
    tu_write_file(p, text, strlen(text));
    return p;
}

static void test_scores_load(void **state) {
    (void)state;
    const char *dir = tu_tmpdir("select-scores");
    const char *good = write_scores(dir, "s.json",
        "{\"metric\": \"specific_mass\", \"model\": \"m\", \"n_layers\": 4, \"d_model\": 16, \"layers\": ["
        "{\"layer\": 0, \"scored\": true, \"score\": 0.25, \"scores\": {\"specific_mass\": 0.25, \"probe\": 0.9}},"
        "{\"layer\": 1, \"scored\": false, \"score\": null, \"top_features\": []},"
        "{\"layer\": 3, \"scored\": true, \"score\": 0.5, \"scores\": {\"specific_mass\": 0.5, \"probe\": 0.6}}]}");
    stetho_scores s;
    assert_int_equal(stetho_scores_load(&s, good, NULL), STETHO_OK);
    assert_int_equal(s.n_layers, 4);
    assert_int_equal(s.d_model, 16);
    assert_string_equal(s.metric, "specific_mass");
    assert_true(s.score[0] == 0.25 && isnan(s.score[1]) && isnan(s.score[2]) && s.score[3] == 0.5);
    size_t len;
    char *bytes = tu_read_file(good, &len);
    assert_true(s.hash == stetho_hash64(bytes, len, 0));
    free(bytes);
    assert_string_equal(pick(STETHO_SELECT_TOP, 1, 0, 0, 4, s.score), "3");
    stetho_scores_free(&s);
    assert_int_equal(stetho_scores_load(&s, good, "probe"), STETHO_OK);
    assert_string_equal(s.metric, "probe");
    assert_string_equal(pick(STETHO_SELECT_TOP, 1, 0, 0, 4, s.score), "0");
    stetho_scores_free(&s);
    assert_int_equal(stetho_scores_load(&s, good, "effect"), STETHO_ERR_NOTFOUND);
    assert_non_null(strstr(stetho_last_error(), "no score for metric 'effect'"));

    /* a model of another shape is refused */
    tu_model_spec spec = {.n_layers = 3, .hidden = 16};
    const char *model = tu_make_model(tu_path(dir, "m3"), &spec);
    stetho_checkpoint c;
    assert_int_equal(stetho_checkpoint_open(&c, model), STETHO_OK);
    assert_int_equal(stetho_scores_load(&s, good, NULL), STETHO_OK);
    assert_int_equal(stetho_scores_check_model(&s, &c), STETHO_ERR_MISMATCH);
    assert_non_null(strstr(stetho_last_error(), "another model"));
    stetho_checkpoint_close(&c);
    spec.n_layers = 4;
    spec.hidden = 8;
    model = tu_make_model(tu_path(dir, "m4"), &spec);
    assert_int_equal(stetho_checkpoint_open(&c, model), STETHO_OK);
    assert_int_equal(stetho_scores_check_model(&s, &c), STETHO_ERR_MISMATCH);
    assert_non_null(strstr(stetho_last_error(), "hidden size 16"));
    stetho_checkpoint_close(&c);
    stetho_scores_free(&s);

    struct { const char *text, *msg; } bad[] = {
        {"[1]", "not a JSON object"},
        {"{\"layers\": []}", "SCORES.json"},
        {"{\"metric\": \"x\", \"layers\": []}", "n_layers"},
        {"{\"metric\": \"x\", \"n_layers\": 2, \"layers\": [{\"layer\": 2, \"score\": 1}]}", "0-1"},
        {"{\"metric\": \"x\", \"n_layers\": 2, \"layers\": [{\"layer\": 0, \"score\": 1}, {\"layer\": 0, \"score\": 2}]}", "twice"},
        {"{\"metric\": \"x\", \"n_layers\": 2, \"layers\": [{\"layer\": 0, \"score\": null}]}", "no layer has"},
        {"{\"metric\": \"x\", \"n_layers\": 2, \"layers\": [{\"layer\": 0, \"score\": \"high\"}]}", "not a number"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char name[32];
        snprintf(name, sizeof name, "bad%zu.json", i);
        assert_int_not_equal(stetho_scores_load(&s, write_scores(dir, name, bad[i].text), NULL), STETHO_OK);
        if (!strstr(stetho_last_error(), bad[i].msg)) fail_msg("case %zu: %s", i, stetho_last_error());
    }
}

/* ||ft - base|| per layer over the modules in mask, straight from the f32 tensors. */
static void ref_norms(const stetho_checkpoint *base, const stetho_checkpoint *ft, uint32_t mask, int n, double *out) {
    for (int l = 0; l < n; l++) out[l] = 0;
    for (size_t i = 0; i < ft->n_tensors; i++) {
        const stetho_tensor *t = ft->tensors[i], *b = stetho_checkpoint_find(base, t->name);
        stetho_tensor_role r = stetho_arch_classify(t->name);
        if (r.layer < 0 || !(mask & (1u << r.module))) continue;
        const float *x = t->data, *y = b->data;
        for (uint64_t k = 0; k < t->n_elements; k++) out[r.layer] += ((double)x[k] - y[k]) * ((double)x[k] - y[k]);
    }
    for (int l = 0; l < n; l++) out[l] = sqrt(out[l]);
}

static void test_layer_norms(void **state) {
    (void)state;
    const char *dir = tu_tmpdir("select-norms");
    tu_model_spec b = {.n_layers = 4, .seed = 3};
    const char *base_p = tu_make_model(tu_path(dir, "base"), &b);
    tu_model_spec f = {.n_layers = 4, .seed = 4, .perturb_from = base_p, .perturb = 0.01f};
    const char *ft_p = tu_make_model(tu_path(dir, "ft"), &f);
    stetho_checkpoint base, ft, tv;
    assert_int_equal(stetho_checkpoint_open(&base, base_p), STETHO_OK);
    assert_int_equal(stetho_checkpoint_open(&ft, ft_p), STETHO_OK);
    const char *tv_p = tu_path(dir, "tv.safetensors");
    stetho_tv_report rep;
    assert_int_equal(stetho_taskvec_diff(&base, &ft, tv_p, NULL, &rep), STETHO_OK);
    stetho_tv_report_free(&rep);
    assert_int_equal(stetho_checkpoint_open(&tv, tv_p), STETHO_OK);
    uint32_t masks[2] = {0, 0};
    assert_int_equal(stetho_module_spec_parse("all", &masks[0]), STETHO_OK);
    assert_int_equal(stetho_module_spec_parse("attn", &masks[1]), STETHO_OK);
    for (int mi = 0; mi < 2; mi++) {
        double ref[4], from_ft[4], from_tv[4];
        ref_norms(&base, &ft, masks[mi], 4, ref);
        assert_int_equal(stetho_select_layer_norms(&base, &ft, true, masks[mi], 4, from_ft), STETHO_OK);
        assert_int_equal(stetho_select_layer_norms(&base, &tv, false, masks[mi], 4, from_tv), STETHO_OK);
        for (int l = 0; l < 4; l++) {
            assert_true(ref[l] > 0);
            assert_true(fabs(from_ft[l] - ref[l]) <= 1e-9 * ref[l]);
            assert_true(fabs(from_tv[l] - ref[l]) <= 1e-6 * ref[l]); /* tau rounded to f32 once */
        }
        if (mi == 1) {
            double all[4];
            assert_int_equal(stetho_select_layer_norms(&base, &ft, true, masks[0], 4, all), STETHO_OK);
            for (int l = 0; l < 4; l++) assert_true(from_ft[l] < all[l]);
        }
    }
    stetho_checkpoint_close(&tv);
    stetho_checkpoint_close(&ft);
    stetho_checkpoint_close(&base);
}

static void test_record(void **state) {
    (void)state;
    const char *dir = tu_tmpdir("select-record");
    const char *p = write_scores(dir, "s.json",
                                 "{\"metric\": \"effect\", \"n_layers\": 3, \"layers\": [{\"layer\": 1, \"score\": 2}]}");
    stetho_scores sc;
    assert_int_equal(stetho_scores_load(&sc, p, NULL), STETHO_OK);
    stetho_select_spec spec = {STETHO_SELECT_RANDOM, 2, 18446744073709551615ull, 0};
    bool chosen[3];
    int order[3], n;
    assert_int_equal(stetho_select_layers(&spec, 3, NULL, chosen, order, &n), STETHO_OK);
    char *text;
    assert_int_equal(stetho_select_record(&spec, 3, chosen, order, n, sc.score, &sc, &text), STETHO_OK);
    json_t *root = json_loads(text, 0, NULL), *s = json_object_get(root, "selection");
    assert_non_null(s);
    assert_string_equal(json_string_value(json_object_get(s, "method")), "random");
    assert_int_equal(json_integer_value(json_object_get(s, "k")), 2);
    assert_string_equal(json_string_value(json_object_get(s, "seed")), "18446744073709551615");
    json_t *layers = json_object_get(s, "layers"), *ord = json_object_get(s, "order");
    assert_int_equal(json_array_size(layers), 2);
    assert_int_equal(json_integer_value(json_array_get(ord, 0)), order[0]);
    assert_true(json_integer_value(json_array_get(layers, 0)) < json_integer_value(json_array_get(layers, 1)));
    json_t *vals = json_object_get(s, "values");
    assert_true(json_is_null(json_array_get(vals, 0)) && json_number_value(json_array_get(vals, 1)) == 2);
    char hex[17];
    snprintf(hex, sizeof hex, "%016llx", (unsigned long long)sc.hash);
    json_t *scj = json_object_get(s, "scores");
    assert_string_equal(json_string_value(json_object_get(scj, "fnv1a64")), hex);
    assert_string_equal(json_string_value(json_object_get(scj, "metric")), "effect");
    json_decref(root);
    free(text);
    /* ablations record their layer, and no k */
    stetho_select_spec only = {STETHO_SELECT_ONLY, 0, 0, 2};
    assert_int_equal(stetho_select_layers(&only, 3, NULL, chosen, order, &n), STETHO_OK);
    assert_int_equal(stetho_select_record(&only, 3, chosen, order, n, NULL, NULL, &text), STETHO_OK);
    assert_non_null(strstr(text, "\"method\":\"only\",\"layer\":2,\"layers\":[2]"));
    assert_null(strstr(text, "\"k\""));
    free(text);
    stetho_scores_free(&sc);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),        cmocka_unit_test(test_rankings_and_ties), cmocka_unit_test(test_random),
        cmocka_unit_test(test_scores_load), cmocka_unit_test(test_layer_norms),       cmocka_unit_test(test_record),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
