/* Task vectors and edits: the guarantees of `stetho diff` / `stetho edit` on
 * generated checkpoints (bf16, f32, sharded), selections, metadata, refusals, and
 * fault injection (every failing write or allocation leaves no output). */
#include "testutil.h"

#include "stetho/model.h"
#include "stetho/taskvec.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *g_dir;

static const char *model(const char *name, tu_model_spec spec) {
    const char *p = tu_path(g_dir, name);
    if (!tu_exists(p)) tu_make_model(p, &spec);
    return p;
}

static int setup(void **state) {
    (void)state;
    g_dir = tu_tmpdir("taskvec");
    model("base-bf16", (tu_model_spec){.n_layers = 4, .dtype = STETHO_DTYPE_BF16, .seed = 1});
    model("ft-bf16", (tu_model_spec){.n_layers = 4, .dtype = STETHO_DTYPE_BF16, .seed = 2,
                                     .perturb_from = tu_path(g_dir, "base-bf16"), .perturb = 0.003f});
    model("base-f32", (tu_model_spec){.n_layers = 3, .seed = 3});
    model("ft-f32", (tu_model_spec){.n_layers = 3, .seed = 4, .perturb_from = tu_path(g_dir, "base-f32"), .perturb = 0.01f});
    return 0;
}

static void open_ok(stetho_checkpoint *c, const char *path) {
    if (stetho_checkpoint_open(c, path) != STETHO_OK) fail_msg("open %s: %s", path, stetho_last_error());
}

static stetho_selection select_all(int n_layers) {
    stetho_selection s = {.n_layers = n_layers, .layers = calloc((size_t)n_layers, 1), .non_layer = true,
                          .modules = 0};
    for (int l = 0; l < n_layers; l++) s.layers[l] = true;
    assert_int_equal(stetho_module_spec_parse("all", &s.modules), STETHO_OK);
    return s;
}

/* Distance in units in the last place between two values of a 16-bit float format. */
static int ulp_distance16(uint16_t a, uint16_t b) {
    int ia = (a & 0x8000) ? -(int)(a & 0x7fff) : (int)a;
    int ib = (b & 0x8000) ? -(int)(b & 0x7fff) : (int)b;
    return abs(ia - ib);
}

static void test_diff_values_and_stats(void **state) {
    (void)state;
    stetho_checkpoint b, f, tv;
    open_ok(&b, tu_path(g_dir, "base-bf16"));
    open_ok(&f, tu_path(g_dir, "ft-bf16"));
    const char *out = tu_path(g_dir, "tv.safetensors");
    stetho_tv_report rep;
    stetho_diff_opts o = {STETHO_DTYPE_F32, false};
    assert_int_equal(stetho_taskvec_diff(&b, &f, out, &o, &rep), STETHO_OK);
    open_ok(&tv, out);
    assert_int_equal(tv.n_tensors, b.n_tensors);
    assert_non_null(stetho_st_meta(&tv.shards[0], "stetho_task_vector"));
    assert_string_equal(stetho_st_meta(&tv.shards[0], "format"), "pt");
    double total = 0;
    for (size_t i = 0; i < rep.n_tensors; i++) {
        const stetho_tv_stats *s = &rep.tensors[i];
        const stetho_tensor *tb = stetho_checkpoint_find(&b, s->name), *tf = stetho_checkpoint_find(&f, s->name),
                            *tt = stetho_checkpoint_find(&tv, s->name);
        assert_non_null(tt);
        assert_int_equal(tt->dtype, STETHO_DTYPE_F32);
        double tau_sq = 0, base_sq = 0, dot = 0, ft_sq = 0;
        const uint16_t *xb = tb->data, *xf = tf->data;
        const float *xt = tt->data;
        for (uint64_t k = 0; k < tb->n_elements; k++) {
            double vb = stetho_bf16_to_f32(xb[k]), vf = stetho_bf16_to_f32(xf[k]);
            /* bf16 differences are exact in f32 at these magnitudes */
            assert_true(xt[k] == (float)(vf - vb));
            tau_sq += (vf - vb) * (vf - vb);
            base_sq += vb * vb;
            ft_sq += vf * vf;
            dot += vb * vf;
        }
        assert_true(fabs(s->tau_sq - tau_sq) <= 1e-9 * (tau_sq + 1e-30));
        assert_true(fabs(s->base_sq - base_sq) <= 1e-9 * base_sq);
        assert_true(fabs(s->base_dot_ft - dot) <= 1e-9 * fabs(dot) + 1e-12);
        assert_true(fabs(s->ft_sq - ft_sq) <= 1e-9 * ft_sq);
        total += tau_sq;
    }
    assert_true(fabs(rep.total_tau_sq - total) <= 1e-9 * total);
    /* the JSON report parses and its energy shares sum to one */
    char *text;
    assert_int_equal(stetho_tv_report_json(&rep, b.path, f.path, &text), STETHO_OK);
    json_t *root = json_loads(text, 0, NULL);
    assert_non_null(root);
    double share = 0;
    size_t i;
    json_t *row;
    json_array_foreach(json_object_get(root, "layers"), i, row) share += json_real_value(json_object_get(row, "energy_share"));
    assert_true(fabs(share - 1.0) < 1e-9);
    assert_int_equal(json_array_size(json_object_get(root, "layers")), 5); /* 4 layers + other */
    json_decref(root);
    free(text);
    stetho_tv_report_free(&rep);
    stetho_checkpoint_close(&tv);
    stetho_checkpoint_close(&f);
    stetho_checkpoint_close(&b);
}

/* Compare every tensor of out against expected; returns the worst ulp distance. */
static int max_ulp(const stetho_checkpoint *out, const stetho_checkpoint *want) {
    int worst = 0;
    assert_int_equal(out->n_tensors, want->n_tensors);
    for (size_t i = 0; i < want->n_tensors; i++) {
        const stetho_tensor *w = want->tensors[i], *o = stetho_checkpoint_find(out, w->name);
        assert_non_null(o);
        assert_int_equal(o->dtype, w->dtype);
        assert_int_equal(o->nbytes, w->nbytes);
        if (w->dtype == STETHO_DTYPE_BF16 || w->dtype == STETHO_DTYPE_F16) {
            const uint16_t *a = o->data, *b = w->data;
            for (uint64_t k = 0; k < w->n_elements; k++) {
                int d = ulp_distance16(a[k], b[k]);
                if (d > worst) worst = d;
            }
        } else if (memcmp(o->data, w->data, w->nbytes) != 0) {
            const float *a = o->data, *b = w->data;
            for (uint64_t k = 0; k < w->n_elements; k++) {
                int32_t ia, ib;
                memcpy(&ia, &a[k], 4);
                memcpy(&ib, &b[k], 4);
                int d = abs(ia - ib);
                if (d > worst) worst = d;
            }
        }
    }
    return worst;
}

static bool bit_identical(const stetho_checkpoint *a, const stetho_checkpoint *b, const char *name) {
    const stetho_tensor *x = stetho_checkpoint_find(a, name), *y = stetho_checkpoint_find(b, name);
    return x && y && x->nbytes == y->nbytes && x->dtype == y->dtype && memcmp(x->data, y->data, x->nbytes) == 0;
}

static void test_edit_guarantees(void **state) {
    (void)state;
    stetho_checkpoint b, f, tv, out;
    open_ok(&b, tu_path(g_dir, "base-bf16"));
    open_ok(&f, tu_path(g_dir, "ft-bf16"));
    open_ok(&tv, tu_path(g_dir, "tv.safetensors"));
    stetho_selection all = select_all(4);
    stetho_edit_opts o = {.alpha = 0};

    /* alpha = 0 reproduces the base bit for bit */
    const char *p0 = tu_path(g_dir, "edit-a0");
    assert_int_equal(stetho_taskvec_edit(&b, &tv, false, &all, &o, p0), STETHO_OK);
    open_ok(&out, p0);
    for (size_t i = 0; i < b.n_tensors; i++) assert_true(bit_identical(&out, &b, b.tensors[i]->name));
    assert_true(tu_exists(tu_path(p0, "config.json")));
    assert_true(tu_exists(tu_path(p0, "tokenizer_config.json")));
    stetho_checkpoint_close(&out);

    /* alpha = 1 on everything reproduces FT within one ulp, from FT and from TV */
    o.alpha = 1;
    const char *p1 = tu_path(g_dir, "edit-a1-ft");
    assert_int_equal(stetho_taskvec_edit(&b, &f, true, &all, &o, p1), STETHO_OK);
    open_ok(&out, p1);
    int ulp_ft = max_ulp(&out, &f);
    stetho_checkpoint_close(&out);
    const char *p2 = tu_path(g_dir, "edit-a1-tv");
    assert_int_equal(stetho_taskvec_edit(&b, &tv, false, &all, &o, p2), STETHO_OK);
    open_ok(&out, p2);
    int ulp_tv = max_ulp(&out, &f);
    print_message("alpha=1 max ulp vs FT: %d (from FT), %d (from TV)\n", ulp_ft, ulp_tv);
    assert_true(ulp_ft <= 1 && ulp_tv <= 1);
    /* the edit is recorded, and "format": "pt" stays for transformers */
    const char *rec = stetho_st_meta(&out.shards[0], "stetho_edit");
    assert_non_null(rec);
    assert_string_equal(stetho_st_meta(&out.shards[0], "format"), "pt");
    json_t *r = json_loads(rec, 0, NULL);
    assert_non_null(r);
    assert_true(json_is_true(json_object_get(r, "all_layers")));
    assert_true(fabs(json_real_value(json_object_get(r, "alpha")) - 1.0) < 1e-12);
    json_decref(r);
    stetho_checkpoint_close(&out);

    /* layers 1,3 and attn only: everything else bit-identical to the base */
    stetho_selection sel = select_all(4);
    assert_int_equal(stetho_layer_spec_parse("1,3", 4, sel.layers), STETHO_OK);
    sel.non_layer = false;
    assert_int_equal(stetho_module_spec_parse("attn", &sel.modules), STETHO_OK);
    o.alpha = 0.5;
    const char *p3 = tu_path(g_dir, "edit-sel");
    assert_int_equal(stetho_taskvec_edit(&b, &tv, false, &sel, &o, p3), STETHO_OK);
    open_ok(&out, p3);
    int changed = 0;
    for (size_t i = 0; i < b.n_tensors; i++) {
        const char *name = b.tensors[i]->name;
        stetho_tensor_role role = stetho_arch_classify(name);
        bool selected = (role.layer == 1 || role.layer == 3) && stetho_module_group(role.module) == STETHO_GROUP_ATTN;
        if (!selected) assert_true(bit_identical(&out, &b, name));
        else {
            /* check the values: round_bf16(base + 0.5 * tau) */
            const stetho_tensor *x = stetho_checkpoint_find(&b, name), *t = stetho_checkpoint_find(&tv, name),
                                *y = stetho_checkpoint_find(&out, name);
            const uint16_t *xb = x->data, *yb = y->data;
            const float *tt = t->data;
            for (uint64_t k = 0; k < x->n_elements; k++)
                assert_int_equal(yb[k], stetho_f32_to_bf16(stetho_bf16_to_f32(xb[k]) + 0.5f * tt[k]));
            changed += !bit_identical(&out, &b, name);
        }
    }
    assert_int_equal(changed, 8); /* q, k, v, o in two layers */
    stetho_checkpoint_close(&out);
    free(sel.layers);
    free(all.layers);
    stetho_checkpoint_close(&tv);
    stetho_checkpoint_close(&f);
    stetho_checkpoint_close(&b);
}

/* An in-memory edit holds exactly the bytes the written edit holds; what it
 * leaves alone stays mapped; a failure leaves the checkpoint as it was; and a
 * model loaded with the edit binds the edited values (norms included). */
static void test_edit_in_memory(void **state) {
    (void)state;
    stetho_checkpoint b, f, tv, out, mem;
    open_ok(&b, tu_path(g_dir, "base-bf16"));
    open_ok(&f, tu_path(g_dir, "ft-bf16"));
    open_ok(&tv, tu_path(g_dir, "tv.safetensors"));
    stetho_selection sel = select_all(4);
    assert_int_equal(stetho_layer_spec_parse("1,3", 4, sel.layers), STETHO_OK);
    sel.non_layer = false;
    stetho_edit_opts o = {.alpha = 0.5};
    const char *ref = tu_path(g_dir, "edit-mem-ref");
    assert_int_equal(stetho_taskvec_edit(&b, &tv, false, &sel, &o, ref), STETHO_OK);
    open_ok(&out, ref);
    open_ok(&mem, tu_path(g_dir, "base-bf16"));
    const void **before = calloc(mem.n_tensors, sizeof *before);
    for (size_t i = 0; i < mem.n_tensors; i++) before[i] = mem.tensors[i]->data;
    /* every allocation failing in turn: an error, and nothing moved */
    int failures = 0;
    for (uint64_t n = 1;; n++) {
        stetho_fault_alloc_after(n);
        stetho_status st = stetho_taskvec_edit_in_memory(&mem, &tv, false, &sel, &o);
        stetho_fault_alloc_after(0);
        if (st == STETHO_OK) break;
        failures++;
        assert_int_equal(st, STETHO_ERR_NOMEM);
        for (size_t i = 0; i < mem.n_tensors; i++) assert_ptr_equal(mem.tensors[i]->data, before[i]);
        assert_true(n < 1000);
    }
    assert_true(failures >= 3);
    size_t edited = 0;
    for (size_t i = 0; i < mem.n_tensors; i++) {
        const stetho_tensor *t = mem.tensors[i];
        assert_true(bit_identical(&mem, &out, t->name));
        stetho_tensor_role role = stetho_arch_classify(t->name);
        bool selected = role.layer == 1 || role.layer == 3;
        if (selected) assert_ptr_not_equal(t->data, before[i]), edited++;
        else assert_ptr_equal(t->data, before[i]);
        /* page advice on private memory would zero it: it must be refused */
        stetho_st_release(stetho_checkpoint_shard(&mem, t), t);
        assert_true(bit_identical(&mem, &out, t->name));
    }
    assert_int_equal(edited, mem.n_owned);
    assert_true(edited > 8);
    free(before);
    stetho_checkpoint_close(&mem);
    stetho_checkpoint_close(&out);

    /* from the fine-tuned checkpoint, every layer and the embeddings */
    stetho_selection all = select_all(4);
    o.alpha = 1;
    const char *ref_ft = tu_path(g_dir, "edit-mem-ref-ft");
    assert_int_equal(stetho_taskvec_edit(&b, &f, true, &all, &o, ref_ft), STETHO_OK);
    open_ok(&out, ref_ft);
    open_ok(&mem, tu_path(g_dir, "base-bf16"));
    assert_int_equal(stetho_taskvec_edit_in_memory(&mem, &f, true, &all, &o), STETHO_OK);
    for (size_t i = 0; i < mem.n_tensors; i++) assert_true(bit_identical(&mem, &out, mem.tensors[i]->name));
    stetho_checkpoint_close(&mem);
    stetho_checkpoint_close(&out);

    /* the model binds the edited tensors: matrices and the norm vectors copied from them */
    stetho_model m_mem, m_ref;
    o.alpha = 0.5;
    if (stetho_model_load_edit(&m_mem, tu_path(g_dir, "base-bf16"), &tv, false, &sel, &o) != STETHO_OK)
        fail_msg("load_edit: %s", stetho_last_error());
    assert_int_equal(stetho_model_load(&m_ref, ref), STETHO_OK);
    for (int l = 0; l < 4; l++) {
        const stetho_layer_weights *x = &m_mem.layers[l], *y = &m_ref.layers[l];
        assert_memory_equal(x->wq->data, y->wq->data, x->wq->nbytes);
        assert_memory_equal(x->w_down->data, y->w_down->data, x->w_down->nbytes);
        assert_memory_equal(x->ln_in, y->ln_in, (size_t)m_ref.cfg.hidden * sizeof(float));
    }
    /* a task vector for another model is refused, and the load fails cleanly */
    stetho_model_free(&m_mem);
    assert_int_equal(stetho_model_load_edit(&m_mem, tu_path(g_dir, "base-f32"), &tv, false, &sel, &o), STETHO_ERR_MISMATCH);
    stetho_model_free(&m_ref);
    free(all.layers);
    free(sel.layers);
    stetho_checkpoint_close(&tv);
    stetho_checkpoint_close(&f);
    stetho_checkpoint_close(&b);
}

static void test_f32_and_sharding(void **state) {
    (void)state;
    stetho_checkpoint b, f, out;
    open_ok(&b, tu_path(g_dir, "base-f32"));
    open_ok(&f, tu_path(g_dir, "ft-f32"));
    stetho_selection all = select_all(3);
    stetho_edit_opts o = {.alpha = 1, .shard_size = 6000};
    const char *p = tu_path(g_dir, "edit-sharded");
    assert_int_equal(stetho_taskvec_edit(&b, &f, true, &all, &o, p), STETHO_OK);
    assert_true(tu_exists(tu_path(p, "model.safetensors.index.json")));
    open_ok(&out, p);
    assert_true(out.n_shards > 2);
    for (size_t s = 0; s < out.n_shards; s++) {
        uint64_t bytes = 0;
        for (size_t k = 0; k < out.shards[s].n_tensors; k++) bytes += out.shards[s].tensors[k].nbytes;
        assert_true(bytes <= 6000 || out.shards[s].n_tensors == 1);
    }
    int ulp = max_ulp(&out, &f);
    print_message("f32 alpha=1 max ulp vs FT: %d\n", ulp);
    assert_true(ulp <= 1);
    stetho_checkpoint_close(&out);
    free(all.layers);
    stetho_checkpoint_close(&f);
    stetho_checkpoint_close(&b);
}

static void test_refusals(void **state) {
    (void)state;
    stetho_checkpoint b, f, other;
    open_ok(&b, tu_path(g_dir, "base-bf16"));
    open_ok(&f, tu_path(g_dir, "ft-bf16"));
    open_ok(&other, tu_path(g_dir, "base-f32"));
    stetho_tv_report rep;
    stetho_diff_opts o = {0};
    /* different architectures: the first differing tensor is named */
    assert_int_equal(stetho_taskvec_diff(&b, &other, tu_path(g_dir, "x.safetensors"), &o, &rep), STETHO_ERR_MISMATCH);
    assert_non_null(strstr(stetho_last_error(), "model."));
    assert_false(tu_exists(tu_path(g_dir, "x.safetensors")));
    /* a dtype difference is refused */
    model("ft-f16", (tu_model_spec){.n_layers = 4, .dtype = STETHO_DTYPE_F16, .seed = 9});
    stetho_checkpoint h;
    open_ok(&h, tu_path(g_dir, "ft-f16"));
    assert_int_equal(stetho_taskvec_diff(&b, &h, NULL, &o, &rep), STETHO_ERR_MISMATCH);
    assert_non_null(strstr(stetho_last_error(), "BF16"));
    stetho_checkpoint_close(&h);
    /* a missing tensor: refused, or skipped and listed with allow_missing */
    const char *dir = tu_path(g_dir, "ft-missing");
    model("ft-missing", (tu_model_spec){.n_layers = 3, .dtype = STETHO_DTYPE_BF16, .seed = 5});
    stetho_checkpoint m;
    open_ok(&m, dir);
    assert_int_equal(stetho_taskvec_diff(&b, &m, NULL, &o, &rep), STETHO_ERR_MISMATCH);
    assert_non_null(strstr(stetho_last_error(), "model.layers.3."));
    o.allow_missing = true;
    assert_int_equal(stetho_taskvec_diff(&b, &m, NULL, &o, &rep), STETHO_OK);
    assert_true(rep.n_skipped > 0);
    assert_non_null(strstr(rep.skipped[0].name, "layers.3"));
    stetho_tv_report_free(&rep);
    stetho_checkpoint_close(&m);

    /* edit: existing output refused, then replaced with force */
    stetho_selection all = select_all(4);
    stetho_edit_opts eo = {.alpha = 1};
    const char *p = tu_path(g_dir, "edit-exists");
    assert_int_equal(stetho_taskvec_edit(&b, &f, true, &all, &eo, p), STETHO_OK);
    assert_int_equal(stetho_taskvec_edit(&b, &f, true, &all, &eo, p), STETHO_ERR_EXISTS);
    eo.force = true;
    eo.alpha = 0;
    char trailing[4096];
    snprintf(trailing, sizeof trailing, "%s/", p);
    assert_int_equal(stetho_taskvec_edit(&b, &f, true, &all, &eo, trailing), STETHO_OK);
    stetho_checkpoint out;
    open_ok(&out, p);
    assert_true(bit_identical(&out, &b, "model.layers.0.mlp.up_proj.weight"));
    stetho_checkpoint_close(&out);
    /* never onto an input */
    assert_int_equal(stetho_taskvec_edit(&b, &f, true, &all, &eo, tu_path(g_dir, "base-bf16")), STETHO_ERR_INVALID);
    /* a task vector for another model */
    eo.alpha = 1;
    assert_int_equal(stetho_taskvec_edit(&b, &other, false, &all, &eo, tu_path(g_dir, "edit-other")), STETHO_ERR_MISMATCH);
    assert_false(tu_exists(tu_path(g_dir, "edit-other")));
    free(all.layers);
    stetho_checkpoint_close(&other);
    stetho_checkpoint_close(&f);
    stetho_checkpoint_close(&b);
}

/* SQLite-style: fail the Nth write / allocation for every N until the operation
 * succeeds; each failure must leave no output directory and no temp files. */
static void test_fault_injection(void **state) {
    (void)state;
    stetho_checkpoint b, f;
    open_ok(&b, tu_path(g_dir, "base-bf16"));
    open_ok(&f, tu_path(g_dir, "ft-bf16"));
    stetho_selection all = select_all(4);
    stetho_edit_opts eo = {.alpha = 1, .shard_size = 20000};
    const char *scratch = tu_tmpdir("taskvec-faults");
    const char *p = tu_path(scratch, "out");
    int failures = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (uint64_t n = 1;; n++) {
            if (pass == 0) stetho_fault_write_after(n);
            else stetho_fault_alloc_after(n);
            stetho_status st = stetho_taskvec_edit(&b, &f, true, &all, &eo, p);
            stetho_fault_write_after(0);
            stetho_fault_alloc_after(0);
            if (st == STETHO_OK) break;
            failures++;
            assert_true(st == STETHO_ERR_IO || st == STETHO_ERR_NOMEM);
            if (tu_count_entries(scratch) != 0) fail_msg("pass %d fault %llu left files behind", pass, (unsigned long long)n);
            assert_true(n < 10000);
        }
        char cmd[4200];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", p);
        assert_int_equal(system(cmd), 0);
        /* the same for diff */
        const char *tv = tu_path(scratch, "tv.safetensors");
        for (uint64_t n = 1;; n++) {
            stetho_tv_report rep;
            if (pass == 0) stetho_fault_write_after(n);
            else stetho_fault_alloc_after(n);
            stetho_status st = stetho_taskvec_diff(&b, &f, tv, NULL, &rep);
            stetho_fault_write_after(0);
            stetho_fault_alloc_after(0);
            if (st == STETHO_OK) {
                stetho_tv_report_free(&rep);
                break;
            }
            failures++;
            if (tu_count_entries(scratch) != 0) fail_msg("diff pass %d fault %llu left files behind", pass, (unsigned long long)n);
        }
        remove(tv);
    }
    print_message("%d injected faults, each ended cleanly\n", failures);
    assert_true(failures > 10);
    free(all.layers);
    stetho_checkpoint_close(&f);
    stetho_checkpoint_close(&b);
}

/* Short writes are not errors: every write loop must carry on with the rest,
 * and the output must come out byte for byte the same. */
static void test_short_writes(void **state) {
    (void)state;
    stetho_checkpoint b, f;
    open_ok(&b, tu_path(g_dir, "base-bf16"));
    open_ok(&f, tu_path(g_dir, "ft-bf16"));
    stetho_selection all = select_all(4);
    stetho_edit_opts eo = {.alpha = 1, .shard_size = 20000};
    const char *scratch = tu_tmpdir("taskvec-short");
    const char *ref = tu_path(scratch, "ref"), *tv_ref = tu_path(scratch, "ref.safetensors");
    stetho_tv_report rep;
    stetho_fault_short_write_after(0);
    assert_int_equal(stetho_taskvec_edit(&b, &f, true, &all, &eo, ref), STETHO_OK);
    uint64_t n_edit = stetho_fault_short_write_after(0);
    assert_int_equal(stetho_taskvec_diff(&b, &f, tv_ref, NULL, &rep), STETHO_OK);
    stetho_tv_report_free(&rep);
    uint64_t n_diff = stetho_fault_short_write_after(0);
    print_message("write(2) calls: edit %llu, diff %llu\n", (unsigned long long)n_edit, (unsigned long long)n_diff);
    assert_true(n_edit > 2 && n_diff >= 1);
    char cmd[8400];
    for (uint64_t n = 1; n <= n_edit; n++) {
        const char *p = tu_path(scratch, "out");
        stetho_fault_short_write_after(n);
        assert_int_equal(stetho_taskvec_edit(&b, &f, true, &all, &eo, p), STETHO_OK);
        stetho_fault_short_write_after(0);
        snprintf(cmd, sizeof cmd, "diff -r '%s' '%s' >/dev/null && rm -rf '%s'", ref, p, p);
        if (system(cmd) != 0) fail_msg("edit: a short write at write %llu changed the output", (unsigned long long)n);
    }
    for (uint64_t n = 1; n <= n_diff; n++) {
        const char *tv = tu_path(scratch, "tv.safetensors");
        stetho_fault_short_write_after(n);
        assert_int_equal(stetho_taskvec_diff(&b, &f, tv, NULL, &rep), STETHO_OK);
        stetho_fault_short_write_after(0);
        stetho_tv_report_free(&rep);
        snprintf(cmd, sizeof cmd, "cmp -s '%s' '%s' && rm -f '%s'", tv_ref, tv, tv);
        if (system(cmd) != 0) fail_msg("diff: a short write at write %llu changed the output", (unsigned long long)n);
    }
    print_message("short writes: %llu points in edit, %llu in diff, outputs identical\n", (unsigned long long)n_edit,
                  (unsigned long long)n_diff);
    free(all.layers);
    stetho_checkpoint_close(&f);
    stetho_checkpoint_close(&b);
}

static void test_specs(void **state) {
    (void)state;
    bool sel[12];
    assert_int_equal(stetho_layer_spec_parse("3,5,10-11", 12, sel), STETHO_OK);
    bool want[12] = {0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 1, 1};
    assert_memory_equal(sel, want, sizeof want);
    assert_int_equal(stetho_layer_spec_parse("4:7", 12, sel), STETHO_OK);
    assert_true(sel[4] && sel[6] && !sel[7] && !sel[3]);
    assert_int_equal(stetho_layer_spec_parse("9-", 12, sel), STETHO_OK);
    assert_true(sel[9] && sel[11] && !sel[8]);
    assert_int_equal(stetho_layer_spec_parse("-2", 12, sel), STETHO_OK);
    assert_true(sel[0] && sel[2] && !sel[3]);
    assert_int_equal(stetho_layer_spec_parse("8:", 12, sel), STETHO_OK);
    assert_true(sel[8] && sel[11] && !sel[7]);
    static const char *bad[] = {"", "12", "a", "3,,4", "3,", "5-2", "1-2-3", "4:4", "-", "0x3", "1 2"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (stetho_layer_spec_parse(bad[i], 12, sel) == STETHO_OK) fail_msg("accepted layer spec '%s'", bad[i]);
    uint32_t m;
    assert_int_equal(stetho_module_spec_parse("attn,down_proj", &m), STETHO_OK);
    assert_true(m & (1u << STETHO_MOD_ATTN_Q));
    assert_true(m & (1u << STETHO_MOD_MLP_DOWN));
    assert_false(m & (1u << STETHO_MOD_MLP_UP));
    assert_int_equal(stetho_module_spec_parse("mlp,bogus", &m), STETHO_ERR_INVALID);
    assert_non_null(strstr(stetho_last_error(), "bogus"));
    assert_int_equal(stetho_module_spec_parse("all", &m), STETHO_OK);
    assert_false(m & (1u << STETHO_MOD_VISION));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_specs),
        cmocka_unit_test(test_diff_values_and_stats),
        cmocka_unit_test(test_edit_guarantees),
        cmocka_unit_test(test_edit_in_memory),
        cmocka_unit_test(test_f32_and_sharding),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_fault_injection),
        cmocka_unit_test(test_short_writes),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
