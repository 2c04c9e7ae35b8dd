/* The scalpel: bases against an independent normal-equation projection (double,
 * Gauss-Jordan here), projected task vectors checked matrix by matrix, the
 * random-subspace expectation, selection files, and refusals. */
#include "testutil.h"

#include "stetho/project.h"
#include "stetho/taskvec.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* An SAELens SAE for `layer` with random decoder rows. */
static void make_sae(const char *dir, int layer, int dm, int ds, uint64_t seed) {
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", dir);
    assert_int_equal(system(cmd), 0);
    float *we = malloc(sizeof(float) * dm * ds), *wd = malloc(sizeof(float) * dm * ds);
    float *be = calloc((size_t)ds, sizeof(float)), *bd = calloc((size_t)dm, sizeof(float));
    for (int i = 0; i < dm * ds; i++) we[i] = tu_rand_normal(&seed), wd[i] = tu_rand_normal(&seed);
    uint64_t a = (uint64_t)dm, b = (uint64_t)ds;
    stetho_tensor ts[4] = {
        {.name = "W_enc", .dtype = STETHO_DTYPE_F32, .ndim = 2, .shape = {a, b}, .nbytes = a * b * 4, .data = we},
        {.name = "W_dec", .dtype = STETHO_DTYPE_F32, .ndim = 2, .shape = {b, a}, .nbytes = a * b * 4, .data = wd},
        {.name = "b_enc", .dtype = STETHO_DTYPE_F32, .ndim = 1, .shape = {b}, .nbytes = b * 4, .data = be},
        {.name = "b_dec", .dtype = STETHO_DTYPE_F32, .ndim = 1, .shape = {a}, .nbytes = a * 4, .data = bd},
    };
    assert_int_equal(stetho_st_write_tensors(tu_path(dir, "sae_weights.safetensors"), ts, 4, NULL, 0), STETHO_OK);
    char cfg[256];
    snprintf(cfg, sizeof cfg, "{\"architecture\": \"standard\", \"d_in\": %d, \"d_sae\": %d, \"hook_name\": \"blocks.%d.hook_resid_post\"}",
             dm, ds, layer);
    tu_write_file(tu_path(dir, "cfg.json"), cfg, strlen(cfg));
    free(we), free(wd), free(be), free(bd);
}

/* P = D (D^T D)^{-1} D^T for D [dm, k] (columns = distinct decoder rows). */
static void ref_projector(const float *W_dec, int dm, const int *f, int k, double *P) {
    double *G = calloc((size_t)(k * 2 * k), sizeof *G);
    for (int a = 0; a < k; a++)
        for (int b = 0; b < k; b++) {
            double s = 0;
            for (int i = 0; i < dm; i++) s += (double)W_dec[f[a] * dm + i] * W_dec[f[b] * dm + i];
            G[a * 2 * k + b] = s;
        }
    for (int a = 0; a < k; a++) G[a * 2 * k + k + a] = 1;
    for (int c = 0; c < k; c++) { /* Gauss-Jordan; G is SPD so no pivoting needed */
        double p = G[c * 2 * k + c];
        for (int j = 0; j < 2 * k; j++) G[c * 2 * k + j] /= p;
        for (int r = 0; r < k; r++)
            if (r != c) {
                double m = G[r * 2 * k + c];
                for (int j = 0; j < 2 * k; j++) G[r * 2 * k + j] -= m * G[c * 2 * k + j];
            }
    }
    for (int i = 0; i < dm; i++)
        for (int j = 0; j < dm; j++) {
            double s = 0;
            for (int a = 0; a < k; a++)
                for (int b = 0; b < k; b++) s += W_dec[f[a] * dm + i] * G[a * 2 * k + k + b] * W_dec[f[b] * dm + j];
            P[i * dm + j] = s;
        }
    free(G);
}

/* Largest |written - P applied to the input| over a matrix, P on the residual side. */
static double proj_error(const stetho_tensor *t, const stetho_tensor *p, const double *P, int DM, bool rd) {
    float *x = malloc(sizeof(float) * t->n_elements);
    assert_int_equal(stetho_convert_to_f32(x, t->data, t->dtype, t->n_elements), STETHO_OK);
    const float *y = p->data;
    uint64_t rows = t->shape[0], cols = t->shape[1];
    double worst = 0;
    for (uint64_t a = 0; a < rows; a++)
        for (uint64_t c = 0; c < cols; c++) {
            double want = 0;
            if (rd) for (int m = 0; m < DM; m++) want += x[a * cols + (uint64_t)m] * P[m * DM + (int)c];
            else for (int m = 0; m < DM; m++) want += P[(int)a * DM + m] * x[(uint64_t)m * cols + c];
            double d = fabs(y[a * cols + c] - want);
            worst = d > worst ? d : worst;
        }
    free(x);
    return worst;
}

static void test_basis_matches_normal_equations(void **state) {
    (void)state;
    const char *dir = tu_path(tu_tmpdir("proj-basis"), "sae");
    make_sae(dir, 0, 32, 64, 5);
    stetho_sae s;
    assert_int_equal(stetho_sae_load(&s, dir), STETHO_OK);
    int feats[5] = {3, 7, 7, 10, 41}; /* a repeated direction: rank 4 */
    double *Q;
    int rank;
    assert_int_equal(stetho_project_basis(&s, feats, 5, 0, &Q, &rank), STETHO_OK);
    assert_int_equal(rank, 4);
    int distinct[4] = {3, 7, 10, 41};
    double P[32 * 32];
    ref_projector(s.W_dec, 32, distinct, 4, P);
    double worst = 0;
    for (int i = 0; i < 32; i++)
        for (int j = 0; j < 32; j++) {
            double qq = 0, qtq = 0;
            for (int a = 0; a < rank; a++) qq += Q[i * rank + a] * Q[j * rank + a];
            if (i < rank && j < rank)
                for (int r = 0; r < 32; r++) qtq += Q[r * rank + i] * Q[r * rank + j];
            if (i < rank && j < rank) assert_true(fabs(qtq - (i == j)) < 1e-10);
            if (fabs(qq - P[i * 32 + j]) > worst) worst = fabs(qq - P[i * 32 + j]);
        }
    print_message("QQ^T vs normal-equation projector: max diff %.2g\n", worst);
    assert_true(worst < 1e-9);
    free(Q);
    int bad[1] = {64};
    assert_int_equal(stetho_project_basis(&s, bad, 1, 0, &Q, &rank), STETHO_ERR_INVALID);
    assert_non_null(strstr(stetho_last_error(), "feature index 64"));
    stetho_sae_free(&s);
}

static void test_project_taskvec(void **state) {
    (void)state;
    const char *dir = tu_tmpdir("proj-tv");
    const int DM = 64;
    /* intermediate 20000: the MLP matrices span several of the projection's streamed blocks */
    tu_model_spec bs = {.n_layers = 3, .hidden = DM, .intermediate = 20000, .n_heads = 4, .n_kv_heads = 2, .head_dim = 16,
                        .seed = 11};
    tu_make_model(tu_path(dir, "base"), &bs);
    tu_model_spec fs = bs;
    fs.seed = 12, fs.perturb_from = tu_path(dir, "base"), fs.perturb = 0.01f;
    tu_make_model(tu_path(dir, "ft"), &fs);
    stetho_checkpoint b, f, tv;
    assert_int_equal(stetho_checkpoint_open(&b, tu_path(dir, "base")), STETHO_OK);
    assert_int_equal(stetho_checkpoint_open(&f, tu_path(dir, "ft")), STETHO_OK);
    stetho_tv_report dr;
    const char *tvp = tu_path(dir, "tv.safetensors");
    assert_int_equal(stetho_taskvec_diff(&b, &f, tvp, NULL, &dr), STETHO_OK);
    stetho_tv_report_free(&dr);
    assert_int_equal(stetho_checkpoint_open(&tv, tvp), STETHO_OK);
    const char *saes = tu_path(dir, "saes");
    make_sae(tu_path(saes, "resid_post_all/layer_0_width_16k"), 0, DM, 256, 21);
    make_sae(tu_path(saes, "resid_post_all/layer_2_width_16k"), 2, DM, 256, 22);
    stetho_sae_entry *ents;
    size_t ne;
    assert_int_equal(stetho_sae_scan(saes, &ents, &ne), STETHO_OK);
    assert_int_equal(ne, 2);
    assert_int_equal(ents[0].layer, 0);
    assert_int_equal(ents[1].layer, 2);

    int f2[8] = {1, 5, 9, 30, 31, 100, 200, 255};
    stetho_project_layer sel[1] = {{2, 8, f2}};
    const char *out = tu_path(dir, "proj.safetensors");
    stetho_project_report rep;
    assert_int_equal(stetho_project_taskvec(&tv, ents, ne, sel, 1, NULL, out, &rep), STETHO_OK);
    assert_int_equal(rep.layers[0].rank, 8);
    stetho_checkpoint pj;
    assert_int_equal(stetho_checkpoint_open(&pj, out), STETHO_OK);
    stetho_sae s;
    assert_int_equal(stetho_sae_load(&s, ents[1].path), STETHO_OK);
    double *P = malloc(sizeof(double) * DM * DM);
    ref_projector(s.W_dec, DM, f2, 8, P);
    int projected = 0;
    for (size_t i = 0; i < tv.n_tensors; i++) {
        const stetho_tensor *t = tv.tensors[i], *p = stetho_checkpoint_find(&pj, t->name);
        assert_non_null(p);
        stetho_tensor_role r = stetho_arch_classify(t->name);
        const float *x = t->data, *y = p->data;
        bool rd = r.module == STETHO_MOD_ATTN_Q || r.module == STETHO_MOD_ATTN_K || r.module == STETHO_MOD_ATTN_V ||
                  r.module == STETHO_MOD_MLP_GATE || r.module == STETHO_MOD_MLP_UP;
        bool wr = r.module == STETHO_MOD_ATTN_O || r.module == STETHO_MOD_MLP_DOWN;
        if (r.layer != 2 || !(rd || wr)) {
            for (uint64_t k = 0; k < t->n_elements; k++) assert_true(y[k] == 0.0f);
            continue;
        }
        projected++;
        /* the reported energies are those of the input and of what was written */
        double e_in = 0, e_out = 0;
        for (uint64_t k = 0; k < t->n_elements; k++) e_in += (double)x[k] * x[k], e_out += (double)y[k] * y[k];
        const stetho_project_tensor_stats *ts = NULL;
        for (size_t k = 0; k < rep.n_tensors; k++)
            if (!strcmp(rep.tensors[k].name, t->name)) ts = &rep.tensors[k];
        assert_non_null(ts);
        assert_true(ts->projected);
        if (fabs(ts->energy_before - e_in) > 1e-6 * e_in || fabs(ts->energy_after - e_out) > 1e-5 * e_out)
            fail_msg("%s: reported energy %g -> %g, written %g -> %g", t->name, ts->energy_before, ts->energy_after, e_in,
                     e_out);
        double err = proj_error(t, p, P, DM, rd);
        if (err > 1e-6) fail_msg("%s: projection off by %g", t->name, err);
    }
    assert_int_equal(projected, 7);
    /* a random update keeps about rank/d_model = 8/64 of its energy */
    double kept = rep.projected_after / rep.projected_before, expect = rep.expected_random / rep.projected_before;
    print_message("retained %.4f of the projected matrices' energy; random-subspace expectation %.4f\n", kept, expect);
    assert_true(fabs(expect - 0.125) < 1e-12);
    assert_true(fabs(kept - 0.125) < 0.03);
    char *js;
    assert_int_equal(stetho_project_report_json(&rep, &js), STETHO_OK);
    assert_non_null(strstr(js, "random_subspace_expectation"));
    free(js);
    stetho_project_report_free(&rep);
    stetho_sae_free(&s);

    /* keep_other copies everything else; a layer without an SAE is refused */
    stetho_project_opts keep = {.keep_other = true};
    assert_int_equal(stetho_project_taskvec(&tv, ents, ne, sel, 1, &keep, NULL, &rep), STETHO_OK);
    assert_true(rep.total_after > rep.projected_after);
    stetho_project_report_free(&rep);
    stetho_project_layer missing[1] = {{1, 8, f2}};
    assert_int_equal(stetho_project_taskvec(&tv, ents, ne, missing, 1, NULL, NULL, &rep), STETHO_ERR_NOTFOUND);
    assert_non_null(strstr(stetho_last_error(), "no SAE for layer 1"));
    /* an SAE of another width than the model */
    make_sae(tu_path(dir, "narrow/layer_1"), 1, 32, 64, 3);
    stetho_sae_entry wrong = {1, (char *)tu_path(dir, "narrow/layer_1")};
    stetho_project_layer l1[1] = {{1, 2, f2}};
    stetho_project_opts force = {.force = true};
    assert_int_equal(stetho_project_taskvec(&tv, &wrong, 1, l1, 1, &force, out, &rep), STETHO_ERR_MISMATCH);
    assert_non_null(strstr(stetho_last_error(), "d_model 32"));

    /* outputs: an existing one only with force, the task vector itself never */
    FILE *fp = fopen(out, "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    long size_before = ftell(fp);
    fclose(fp);
    assert_int_equal(stetho_project_taskvec(&tv, ents, ne, sel, 1, NULL, out, &rep), STETHO_ERR_EXISTS);
    assert_non_null(strstr(stetho_last_error(), "proj.safetensors: already exists"));
    assert_int_equal(stetho_project_taskvec(&tv, ents, ne, sel, 1, &force, out, &rep), STETHO_OK);
    stetho_project_report_free(&rep);
    fp = fopen(out, "rb");
    fseek(fp, 0, SEEK_END);
    assert_int_equal(ftell(fp), size_before);
    fclose(fp);
    assert_int_equal(stetho_project_taskvec(&tv, ents, ne, sel, 1, &force, tvp, &rep), STETHO_ERR_INVALID);
    assert_non_null(strstr(stetho_last_error(), "would overwrite the task vector"));
    assert_int_equal(link(tvp, tu_path(dir, "tv-link.safetensors")), 0);
    assert_int_equal(stetho_project_taskvec(&tv, ents, ne, sel, 1, &force, tu_path(dir, "tv-link.safetensors"), &rep),
                     STETHO_ERR_INVALID);
    /* a checkpoint directory: its shards are inputs too */
    stetho_checkpoint bdir;
    assert_int_equal(stetho_checkpoint_open(&bdir, tu_path(dir, "base")), STETHO_OK);
    char shard[4200];
    snprintf(shard, sizeof shard, "%s/%s", tu_path(dir, "base"), bdir.shard_names[0]);
    assert_int_equal(stetho_project_taskvec(&bdir, ents, ne, sel, 1, &force, shard, &rep), STETHO_ERR_INVALID);
    stetho_checkpoint_close(&bdir);
    /* a bf16 task vector is widened block by block: the same projection of its values */
    tu_model_spec hs = bs;
    hs.dtype = STETHO_DTYPE_BF16, hs.seed = 13;
    tu_make_model(tu_path(dir, "b16"), &hs);
    stetho_checkpoint h, hp;
    assert_int_equal(stetho_checkpoint_open(&h, tu_path(dir, "b16")), STETHO_OK);
    assert_int_equal(stetho_project_taskvec(&h, ents, ne, sel, 1, &force, tu_path(dir, "p16.safetensors"), &rep),
                     STETHO_OK);
    stetho_project_report_free(&rep);
    assert_int_equal(stetho_checkpoint_open(&hp, tu_path(dir, "p16.safetensors")), STETHO_OK);
    const char *mats[2] = {"model.layers.2.self_attn.q_proj.weight", "model.layers.2.mlp.down_proj.weight"};
    for (int m = 0; m < 2; m++) {
        const stetho_tensor *t = stetho_checkpoint_find(&h, mats[m]), *p = stetho_checkpoint_find(&hp, mats[m]);
        assert_non_null(t);
        assert_non_null(p);
        assert_int_equal(t->dtype, STETHO_DTYPE_BF16);
        double err = proj_error(t, p, P, DM, m == 0);
        if (err > 1e-5) fail_msg("bf16 %s: projection off by %g", mats[m], err);
    }
    stetho_checkpoint_close(&hp);
    stetho_checkpoint_close(&h);
    free(P);

    /* scores of another model are refused against the task vector: layer count,
     * then width (read off the matrices: the task vector file has no config) */
    static const char *fmt = "{\"metric\": \"specific_mass\", \"n_layers\": %d, \"d_model\": %d, \"layers\": ["
                             "{\"layer\": 0, \"score\": 0.5, \"top_features\": [{\"index\": 4}, {\"index\": 9}]}]}";
    char text[512];
    stetho_project_layer *L;
    size_t nl;
    snprintf(text, sizeof text, fmt, 3, DM);
    tu_write_file(tu_path(dir, "ok.json"), text, strlen(text));
    assert_int_equal(stetho_project_layers_from_scores(tu_path(dir, "ok.json"), 2, &tv, &L, &nl), STETHO_OK);
    assert_int_equal(nl, 1);
    stetho_project_layers_free(L, nl);
    snprintf(text, sizeof text, fmt, 4, DM);
    tu_write_file(tu_path(dir, "layers.json"), text, strlen(text));
    assert_int_equal(stetho_project_layers_from_scores(tu_path(dir, "layers.json"), 2, &tv, &L, &nl), STETHO_ERR_MISMATCH);
    assert_non_null(strstr(stetho_last_error(), "a model with 4 layers"));
    assert_non_null(strstr(stetho_last_error(), "tv.safetensors has 3: scores for another model?"));
    assert_null(L);
    snprintf(text, sizeof text, fmt, 3, 2 * DM);
    tu_write_file(tu_path(dir, "width.json"), text, strlen(text));
    assert_int_equal(stetho_project_layers_from_scores(tu_path(dir, "width.json"), 2, &tv, &L, &nl), STETHO_ERR_MISMATCH);
    assert_non_null(strstr(stetho_last_error(), "hidden size 128, but"));
    assert_non_null(strstr(stetho_last_error(), "tv.safetensors has 64"));
    /* unchecked without a task vector */
    assert_int_equal(stetho_project_layers_from_scores(tu_path(dir, "width.json"), 2, NULL, &L, &nl), STETHO_OK);
    stetho_project_layers_free(L, nl);
    stetho_sae_entries_free(ents, ne);
    stetho_checkpoint_close(&pj);
    stetho_checkpoint_close(&tv);
    stetho_checkpoint_close(&f);
    stetho_checkpoint_close(&b);
}

static void test_selection_files(void **state) {
    (void)state;
    const char *dir = tu_tmpdir("proj-files");
    const char *scores = "{\"metric\": \"freq_ratio_mass\", \"layers\": ["
                         "{\"layer\": 0, \"score\": 0.5, \"top_features\": [{\"index\": 4}, {\"index\": 9}, {\"index\": 1}]},"
                         "{\"layer\": 1, \"score\": null, \"top_features\": []},"
                         "{\"layer\": 2, \"score\": 0.1, \"top_features\": [{\"index\": 7}, {\"index\": 8}]}]}";
    tu_write_file(tu_path(dir, "s.json"), scores, strlen(scores));
    stetho_project_layer *L;
    size_t n;
    assert_int_equal(stetho_project_layers_from_scores(tu_path(dir, "s.json"), 2, NULL, &L, &n), STETHO_OK);
    assert_int_equal(n, 2);
    assert_int_equal(L[0].layer, 0);
    assert_int_equal(L[0].n_features, 2);
    assert_int_equal(L[0].features[1], 9);
    assert_int_equal(L[1].layer, 2);
    stetho_project_layers_free(L, n);
    assert_int_equal(stetho_project_layers_from_scores(tu_path(dir, "s.json"), 3, NULL, &L, &n), STETHO_ERR_INVALID);
    const char *ff = "{\"3\": [1, 2, 3], \"10\": [5]}";
    tu_write_file(tu_path(dir, "f.json"), ff, strlen(ff));
    assert_int_equal(stetho_project_layers_from_file(tu_path(dir, "f.json"), &L, &n), STETHO_OK);
    assert_int_equal(n, 2);
    assert_int_equal(L[1].layer, 10);
    stetho_project_layers_free(L, n);
    static const char *bad[] = {"{\"x\": [1]}", "{\"1\": [-4]}", "{\"1\": []}", "[1,2]", "{\"1\": [1.5]}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tu_write_file(tu_path(dir, "bad.json"), bad[i], strlen(bad[i]));
        if (stetho_project_layers_from_file(tu_path(dir, "bad.json"), &L, &n) == STETHO_OK) fail_msg("accepted %s", bad[i]);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_basis_matches_normal_equations),
        cmocka_unit_test(test_project_taskvec),
        cmocka_unit_test(test_selection_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
