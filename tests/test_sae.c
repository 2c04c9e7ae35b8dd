/* SAEs: every format and architecture loaded from files this test writes, encode
 * and decode checked against a double-precision implementation written here from
 * the formulas, and malformed SAEs refused with messages naming file and array. */
#include "testutil.h"

#include "stetho/npz.h"
#include "stetho/safetensors.h"
#include "stetho/sae.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zip.h>

enum { DM = 24, DS = 96, N = 300 };

typedef struct {
    float W_enc[DM * DS], W_dec[DS * DM], b_enc[DS], b_dec[DM], threshold[DS], b_gate[DS], r_mag[DS], b_mag[DS];
} params;

static void random_params(params *p, uint64_t seed) {
    uint64_t r = seed;
    for (int i = 0; i < DM * DS; i++) p->W_enc[i] = 0.3f * tu_rand_normal(&r);
    for (int i = 0; i < DM * DS; i++) p->W_dec[i] = 0.3f * tu_rand_normal(&r);
    for (int i = 0; i < DS; i++) {
        p->b_enc[i] = 0.2f * tu_rand_normal(&r);
        p->threshold[i] = 0.5f * fabsf(tu_rand_normal(&r));
        p->b_gate[i] = 0.2f * tu_rand_normal(&r);
        p->r_mag[i] = 0.3f * tu_rand_normal(&r);
        p->b_mag[i] = 0.2f * tu_rand_normal(&r);
    }
    for (int i = 0; i < DM; i++) p->b_dec[i] = 0.1f * tu_rand_normal(&r);
}

static stetho_tensor vec(const char *name, const float *d, uint64_t n) {
    return (stetho_tensor){.name = name, .dtype = STETHO_DTYPE_F32, .ndim = 1, .shape = {n}, .n_elements = n,
                           .nbytes = n * 4, .data = d};
}
static stetho_tensor mat(const char *name, const float *d, uint64_t a, uint64_t b) {
    return (stetho_tensor){.name = name, .dtype = STETHO_DTYPE_F32, .ndim = 2, .shape = {a, b}, .n_elements = a * b,
                           .nbytes = a * b * 4, .data = d};
}

static void write_saelens(const char *dir, const params *p, const char *arch, const char *extra_cfg) {
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", dir);
    assert_int_equal(system(cmd), 0);
    stetho_tensor ts[8];
    int n = 0;
    ts[n++] = mat("W_enc", p->W_enc, DM, DS);
    ts[n++] = mat("W_dec", p->W_dec, DS, DM);
    ts[n++] = vec("b_dec", p->b_dec, DM);
    if (strcmp(arch, "gated")) ts[n++] = vec("b_enc", p->b_enc, DS);
    if (!strcmp(arch, "jumprelu")) ts[n++] = vec("threshold", p->threshold, DS);
    if (!strcmp(arch, "gated")) {
        ts[n++] = vec("b_gate", p->b_gate, DS);
        ts[n++] = vec("r_mag", p->r_mag, DS);
        ts[n++] = vec("b_mag", p->b_mag, DS);
    }
    assert_int_equal(stetho_st_write_tensors(tu_path(dir, "sae_weights.safetensors"), ts, (size_t)n, NULL, 0), STETHO_OK);
    char cfg[1024];
    snprintf(cfg, sizeof cfg,
             "{\"architecture\": \"%s\", \"d_in\": %d, \"d_sae\": %d, \"dtype\": \"float32\", "
             "\"metadata\": {\"hook_name\": \"blocks.3.hook_resid_post\", \"hook_layer\": 3}%s}",
             arch, DM, DS, extra_cfg);
    tu_write_file(tu_path(dir, "cfg.json"), cfg, strlen(cfg));
}

/* The reference: SAELens' formulas in double precision. */
static void ref_encode(const params *p, const char *arch, bool apply_bdec, const char *norm, int k, const float *x,
                       double *f) {
    double xin[DM], c = 1;
    for (int i = 0; i < DM; i++) xin[i] = x[i];
    if (!strcmp(norm, "constant_norm_rescale")) {
        double ss = 0;
        for (int i = 0; i < DM; i++) ss += xin[i] * xin[i];
        c = sqrt((double)DM) / sqrt(ss);
        for (int i = 0; i < DM; i++) xin[i] *= c;
    } else if (!strcmp(norm, "layer_norm")) {
        double mu = 0, var = 0;
        for (int i = 0; i < DM; i++) mu += xin[i];
        mu /= DM;
        for (int i = 0; i < DM; i++) var += (xin[i] - mu) * (xin[i] - mu);
        double sd = sqrt(var / (DM - 1));
        for (int i = 0; i < DM; i++) xin[i] = (xin[i] - mu) / (sd + 1e-5);
    } else if (!strncmp(norm, "scalar:", 7)) {
        for (int i = 0; i < DM; i++) xin[i] *= atof(norm + 7);
    }
    if (apply_bdec)
        for (int i = 0; i < DM; i++) xin[i] -= p->b_dec[i];
    for (int j = 0; j < DS; j++) {
        double pre = 0, mag = 0;
        for (int i = 0; i < DM; i++) {
            pre += xin[i] * p->W_enc[i * DS + j];
            mag += xin[i] * p->W_enc[i * DS + j] * exp((double)p->r_mag[j]);
        }
        if (!strcmp(arch, "gated")) {
            double g = pre + p->b_gate[j], m = mag + p->b_mag[j];
            f[j] = (g > 0 && m > 0) ? m : 0;
            continue;
        }
        pre += p->b_enc[j];
        if (!strcmp(arch, "standard") || !strcmp(arch, "topk")) f[j] = pre;
        else f[j] = (pre > p->threshold[j] && pre > 0) ? pre : 0;
        if (!strcmp(arch, "standard")) f[j] = f[j] > 0 ? f[j] : 0;
    }
    if (!strcmp(arch, "topk")) {
        double sorted[DS];
        memcpy(sorted, f, sizeof sorted);
        for (int a = 0; a < DS; a++) /* selection sort, descending: plain and independent */
            for (int b = a + 1; b < DS; b++)
                if (sorted[b] > sorted[a]) {
                    double t = sorted[a];
                    sorted[a] = sorted[b];
                    sorted[b] = t;
                }
        double kth = sorted[k - 1];
        for (int j = 0; j < DS; j++) f[j] = (f[j] >= kth && f[j] > 0) ? f[j] : 0;
    }
}

static void check_sae(const char *dir, const params *p, const char *arch, bool apply_bdec, const char *norm, int k,
                      stetho_sae_format fmt) {
    stetho_sae s;
    if (stetho_sae_load(&s, dir) != STETHO_OK) fail_msg("load %s: %s", dir, stetho_last_error());
    assert_int_equal(s.format, fmt);
    assert_int_equal(s.d_model, DM);
    assert_int_equal(s.d_sae, DS);
    assert_string_equal(stetho_sae_arch_name(s.arch), arch);
    uint64_t r = 99;
    float *x = malloc(sizeof(float) * N * DM), *f = malloc(sizeof(float) * N * DS), *xh = malloc(sizeof(float) * N * DM);
    for (int i = 0; i < N * DM; i++) x[i] = tu_rand_normal(&r);
    assert_int_equal(stetho_sae_encode(&s, x, N, f), STETHO_OK);
    double worst = 0, ref[DS];
    int active = 0;
    for (int t = 0; t < N; t++) {
        ref_encode(p, arch, apply_bdec, norm, k, x + t * DM, ref);
        for (int j = 0; j < DS; j++) {
            double d = fabs(f[t * DS + j] - ref[j]);
            /* a value within rounding of its threshold may land either side */
            if (d > 1e-4 && !(fabs(ref[j] - (arch[0] == 'j' ? p->threshold[j] : 0)) < 1e-4)) worst = d > worst ? d : worst;
            active += f[t * DS + j] != 0;
        }
    }
    if (!strcmp(arch, "topk")) assert_true(active <= N * k);
    assert_true(active > 0);
    if (worst > 1e-4) fail_msg("%s %s: encode differs from reference by %g", dir, arch, worst);
    /* the rows are split over threads (one block each, or several per thread):
     * any team size gives the same activations up to rounding */
    float *g = malloc(sizeof(float) * N * DS);
    int threads_before = stetho_get_threads();
    for (int nt = 1; nt <= 3; nt += 2) {
        stetho_set_threads(nt);
        assert_int_equal(stetho_sae_encode(&s, x, N, g), STETHO_OK);
        for (int i = 0; i < N * DS; i++)
            if (fabs(g[i] - f[i]) > 1e-5)
                fail_msg("%s %s: %d threads give %g at %d, the default %g", dir, arch, nt, g[i], i, f[i]);
    }
    stetho_set_threads(threads_before);
    free(g);
    /* decode: x_hat = f W_dec + b_dec, undoing the input norm */
    assert_int_equal(stetho_sae_decode(&s, f, x, N, xh), STETHO_OK);
    for (int t = 0; t < N; t++) {
        /* x_hat = y / c + shift: the inverse of the input normalisation */
        double c = 1, shift = 0;
        if (!strcmp(norm, "constant_norm_rescale")) {
            double ss = 0;
            for (int i = 0; i < DM; i++) ss += (double)x[t * DM + i] * x[t * DM + i];
            c = sqrt((double)DM) / sqrt(ss);
        } else if (!strcmp(norm, "layer_norm")) {
            double mu = 0, var = 0;
            for (int i = 0; i < DM; i++) mu += x[t * DM + i];
            mu /= DM;
            for (int i = 0; i < DM; i++) var += (x[t * DM + i] - mu) * (x[t * DM + i] - mu);
            c = 1 / sqrt(var / (DM - 1)), shift = mu;
        } else if (!strncmp(norm, "scalar:", 7)) {
            c = atof(norm + 7);
        }
        for (int i = 0; i < DM; i++) {
            double y = p->b_dec[i];
            for (int j = 0; j < DS; j++) y += (double)f[t * DS + j] * p->W_dec[j * DM + i];
            double want = y / c + shift;
            if (!(fabs(xh[t * DM + i] - want) < 1e-3 * (1 + fabs(want))))
                fail_msg("%s: decode %g, reference %g", dir, xh[t * DM + i], want);
        }
    }
    free(x), free(f), free(xh);
    stetho_sae_free(&s);
}

static void expect_load_error(const char *dir, const char *want);

static void test_saelens_all_architectures(void **state) {
    (void)state;
    const char *dir = tu_tmpdir("sae-lens");
    params *p = malloc(sizeof *p);
    random_params(p, 1);
    static const char *archs[] = {"standard", "jumprelu", "topk", "gated"};
    for (size_t a = 0; a < 4; a++) {
        const char *d = tu_path(dir, archs[a]);
        write_saelens(d, p, archs[a], !strcmp(archs[a], "topk") ? ", \"k\": 7" : "");
        check_sae(d, p, archs[a], true, "none", 7, STETHO_SAE_FORMAT_SAELENS);
    }
    /* older SAELens: k inside activation_fn_kwargs, b_dec not subtracted, norm rescale */
    const char *d = tu_path(dir, "old-topk");
    write_saelens(d, p, "topk",
                  ", \"activation_fn_kwargs\": {\"k\": 5}, \"apply_b_dec_to_input\": false, "
                  "\"normalize_activations\": \"constant_norm_rescale\"");
    check_sae(d, p, "topk", false, "constant_norm_rescale", 5, STETHO_SAE_FORMAT_SAELENS);
    /* the other two input normalisations SAELens runs at inference */
    d = tu_path(dir, "layer-norm");
    write_saelens(d, p, "standard", ", \"normalize_activations\": \"layer_norm\"");
    check_sae(d, p, "standard", true, "layer_norm", 0, STETHO_SAE_FORMAT_SAELENS);
    d = tu_path(dir, "scalar-norm");
    write_saelens(d, p, "standard", ", \"normalize_activations\": \"expected_average_only_in\", \"norm_scaling_factor\": 0.25");
    check_sae(d, p, "standard", true, "scalar:0.25", 0, STETHO_SAE_FORMAT_SAELENS);
    d = tu_path(dir, "scalar-missing");
    write_saelens(d, p, "standard", ", \"normalize_activations\": \"expected_average_only_in\"");
    expect_load_error(d, "norm_scaling_factor");
    /* JumpReLU with log_threshold (newer SAELens) instead of threshold */
    {
        d = tu_path(dir, "log-threshold");
        write_saelens(d, p, "standard", "");
        float lt[DS];
        for (int j = 0; j < DS; j++) lt[j] = logf(p->threshold[j] > 1e-6f ? p->threshold[j] : 1e-6f);
        stetho_tensor ts[5] = {mat("W_enc", p->W_enc, DM, DS), mat("W_dec", p->W_dec, DS, DM), vec("b_dec", p->b_dec, DM),
                               vec("b_enc", p->b_enc, DS), vec("log_threshold", lt, DS)};
        assert_int_equal(stetho_st_write_tensors(tu_path(d, "sae_weights.safetensors"), ts, 5, NULL, 0), STETHO_OK);
        char cfg[512];
        snprintf(cfg, sizeof cfg, "{\"architecture\": \"jumprelu\", \"d_in\": %d, \"d_sae\": %d}", DM, DS);
        tu_write_file(tu_path(d, "cfg.json"), cfg, strlen(cfg));
        check_sae(d, p, "jumprelu", true, "none", 0, STETHO_SAE_FORMAT_SAELENS);
    }
    /* bf16 weights: loaded through f32; the stored dtype is what inspect reports */
    {
        d = tu_path(dir, "bf16");
        write_saelens(d, p, "standard", "");
        params *q = malloc(sizeof *q);
        memcpy(q, p, sizeof *q);
        uint16_t *raw[4];
        float *src[4] = {q->W_enc, q->W_dec, q->b_dec, q->b_enc};
        size_t cnt[4] = {DM * DS, DS * DM, DM, DS};
        for (int a = 0; a < 4; a++) {
            raw[a] = malloc(cnt[a] * 2);
            for (size_t i = 0; i < cnt[a]; i++) {
                raw[a][i] = stetho_f32_to_bf16(src[a][i]);
                src[a][i] = stetho_bf16_to_f32(raw[a][i]); /* the reference sees the rounded weights */
            }
        }
        stetho_tensor ts[4] = {
            {.name = "W_enc", .dtype = STETHO_DTYPE_BF16, .ndim = 2, .shape = {DM, DS}, .nbytes = DM * DS * 2, .data = raw[0]},
            {.name = "W_dec", .dtype = STETHO_DTYPE_BF16, .ndim = 2, .shape = {DS, DM}, .nbytes = DS * DM * 2, .data = raw[1]},
            {.name = "b_dec", .dtype = STETHO_DTYPE_BF16, .ndim = 1, .shape = {DM}, .nbytes = DM * 2, .data = raw[2]},
            {.name = "b_enc", .dtype = STETHO_DTYPE_BF16, .ndim = 1, .shape = {DS}, .nbytes = DS * 2, .data = raw[3]}};
        assert_int_equal(stetho_st_write_tensors(tu_path(d, "sae_weights.safetensors"), ts, 4, NULL, 0), STETHO_OK);
        check_sae(d, q, "standard", true, "none", 0, STETHO_SAE_FORMAT_SAELENS);
        stetho_sae sb;
        assert_int_equal(stetho_sae_load(&sb, d), STETHO_OK);
        assert_string_equal(sb.stored_dtype, "BF16");
        stetho_sae_free(&sb);
        for (int a = 0; a < 4; a++) free(raw[a]);
        free(q);
    }
    stetho_sae s;
    assert_int_equal(stetho_sae_load(&s, tu_path(dir, "jumprelu")), STETHO_OK);
    assert_string_equal(s.hook, "blocks.3.hook_resid_post");
    assert_int_equal(s.layer, 3);
    /* save in SAELens format and load back */
    const char *saved = tu_path(dir, "saved");
    assert_int_equal(stetho_sae_save_saelens(&s, saved, false), STETHO_OK);
    assert_int_equal(stetho_sae_save_saelens(&s, saved, false), STETHO_ERR_EXISTS);
    stetho_sae_free(&s);
    check_sae(saved, p, "jumprelu", true, "none", 0, STETHO_SAE_FORMAT_SAELENS);
    free(p);
}

static void write_npz(const char *path, const char **names, const float **data, const uint64_t (*shapes)[2], int n,
                      const char *descr) {
    int err;
    zip_t *z = zip_open(path, ZIP_CREATE | ZIP_TRUNCATE, &err);
    assert_non_null(z);
    for (int i = 0; i < n; i++) {
        char hdr[128];
        int hl;
        if (shapes[i][1])
            hl = snprintf(hdr, sizeof hdr, "{'descr': '%s', 'fortran_order': False, 'shape': (%llu, %llu), }", descr,
                          (unsigned long long)shapes[i][0], (unsigned long long)shapes[i][1]);
        else
            hl = snprintf(hdr, sizeof hdr, "{'descr': '%s', 'fortran_order': False, 'shape': (%llu,), }", descr,
                          (unsigned long long)shapes[i][0]);
        size_t count = shapes[i][0] * (shapes[i][1] ? shapes[i][1] : 1);
        size_t total = 10 + (size_t)hl + 1 + count * 4;
        uint8_t *buf = malloc(total);
        memcpy(buf, "\x93NUMPY\x01\x00", 8);
        buf[8] = (uint8_t)((hl + 1) & 0xff);
        buf[9] = (uint8_t)((hl + 1) >> 8);
        memcpy(buf + 10, hdr, (size_t)hl);
        buf[10 + hl] = '\n';
        memcpy(buf + 11 + hl, data[i], count * 4);
        zip_source_t *src = zip_source_buffer(z, buf, total, 1);
        char entry[64];
        snprintf(entry, sizeof entry, "%s.npy", names[i]);
        assert_true(zip_file_add(z, entry, src, ZIP_FL_OVERWRITE) >= 0);
    }
    assert_int_equal(zip_close(z), 0);
}

static void test_gemma_scope(void **state) {
    (void)state;
    params *p = malloc(sizeof *p);
    random_params(p, 2);
    /* Gemma Scope 2: params.safetensors with lower-case names, hooked at model.layers.L.output */
    const char *d2 = tu_path(tu_tmpdir("sae-gs2"), "resid_post_all/layer_7_width_16k_l0_small");
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", d2);
    assert_int_equal(system(cmd), 0);
    stetho_tensor ts[5] = {mat("w_enc", p->W_enc, DM, DS), mat("w_dec", p->W_dec, DS, DM), vec("b_enc", p->b_enc, DS),
                           vec("b_dec", p->b_dec, DM), vec("threshold", p->threshold, DS)};
    assert_int_equal(stetho_st_write_tensors(tu_path(d2, "params.safetensors"), ts, 5, NULL, 0), STETHO_OK);
    const char *cfg = "{\"hf_hook_point_in\": \"model.layers.7.output\", \"width\": 16384}";
    tu_write_file(tu_path(d2, "config.json"), cfg, strlen(cfg));
    check_sae(d2, p, "jumprelu", false, "none", 0, STETHO_SAE_FORMAT_GEMMA_SCOPE_2);
    stetho_sae s;
    assert_int_equal(stetho_sae_load(&s, d2), STETHO_OK);
    assert_string_equal(s.hook, "blocks.7.hook_resid_post");
    stetho_sae_free(&s);

    /* Gemma Scope 1: params.npz, layer from the path */
    const char *d1 = tu_path(tu_tmpdir("sae-gs1"), "layer_12");
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", d1);
    assert_int_equal(system(cmd), 0);
    const char *names[5] = {"W_enc", "W_dec", "b_enc", "b_dec", "threshold"};
    const float *data[5] = {p->W_enc, p->W_dec, p->b_enc, p->b_dec, p->threshold};
    const uint64_t shapes[5][2] = {{DM, DS}, {DS, DM}, {DS, 0}, {DM, 0}, {DS, 0}};
    write_npz(tu_path(d1, "params.npz"), names, data, shapes, 5, "<f4");
    check_sae(d1, p, "jumprelu", false, "none", 0, STETHO_SAE_FORMAT_GEMMA_SCOPE_1);
    assert_int_equal(stetho_sae_load(&s, d1), STETHO_OK);
    assert_int_equal(s.layer, 12);
    assert_string_equal(s.stored_dtype, "F32");
    stetho_sae_free(&s);
    free(p);
}

static void expect_load_error(const char *dir, const char *want) {
    stetho_sae s;
    if (stetho_sae_load(&s, dir) == STETHO_OK) fail_msg("%s: a malformed SAE loaded", dir);
    if (!strstr(stetho_last_error(), want)) fail_msg("%s: message '%s' lacks '%s'", dir, stetho_last_error(), want);
}

static void test_bad_saes(void **state) {
    (void)state;
    const char *dir = tu_tmpdir("sae-bad");
    params *p = malloc(sizeof *p);
    random_params(p, 3);
    write_saelens(tu_path(dir, "arch"), p, "matryoshka_hyper", "");
    expect_load_error(tu_path(dir, "arch"), "unknown SAE architecture 'matryoshka_hyper'");
    write_saelens(tu_path(dir, "nok"), p, "topk", "");
    expect_load_error(tu_path(dir, "nok"), "\"k\"");
    write_saelens(tu_path(dir, "thr"), p, "standard", "");
    const char *cfgj = "{\"architecture\": \"jumprelu\", \"d_in\": 24, \"d_sae\": 96}";
    tu_write_file(tu_path(tu_path(dir, "thr"), "cfg.json"), cfgj, strlen(cfgj));
    expect_load_error(tu_path(dir, "thr"), "threshold");
    write_saelens(tu_path(dir, "dims"), p, "standard", "");
    const char *cfgd = "{\"architecture\": \"standard\", \"d_in\": 2560, \"d_sae\": 96}";
    tu_write_file(tu_path(tu_path(dir, "dims"), "cfg.json"), cfgd, strlen(cfgd));
    expect_load_error(tu_path(dir, "dims"), "d_in 2560");
    /* NaN in a weight: named */
    p->W_dec[17] = NAN;
    write_saelens(tu_path(dir, "nan"), p, "standard", "");
    expect_load_error(tu_path(dir, "nan"), "'W_dec' holds a non-finite value");
    p->W_dec[17] = 0;
    /* misshapen decoder */
    const char *ms = tu_path(dir, "shape");
    write_saelens(ms, p, "standard", "");
    stetho_tensor ts[4] = {mat("W_enc", p->W_enc, DM, DS), mat("W_dec", p->W_dec, DM, DS), vec("b_dec", p->b_dec, DM),
                           vec("b_enc", p->b_enc, DS)};
    assert_int_equal(stetho_st_write_tensors(tu_path(ms, "sae_weights.safetensors"), ts, 4, NULL, 0), STETHO_OK);
    expect_load_error(ms, "'W_dec' has shape [24, 96], expected [96, 24]");
    /* missing parameter */
    const char *mp = tu_path(dir, "missing");
    write_saelens(mp, p, "standard", "");
    assert_int_equal(stetho_st_write_tensors(tu_path(mp, "sae_weights.safetensors"), ts, 1, NULL, 0), STETHO_OK);
    expect_load_error(mp, "missing parameter 'W_dec'");
    /* npz: not a zip; non-float array; truncated array */
    const char *nz = tu_path(dir, "notzip");
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", nz);
    assert_int_equal(system(cmd), 0);
    tu_write_file(tu_path(nz, "params.npz"), "hello, not a zip", 16);
    expect_load_error(nz, "not a readable .npz");
    const char *ni = tu_path(dir, "intarr");
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", ni);
    assert_int_equal(system(cmd), 0);
    const char *names[1] = {"W_enc"};
    const float *data[1] = {p->W_enc};
    const uint64_t shapes[1][2] = {{DM, DS}};
    write_npz(tu_path(ni, "params.npz"), names, data, shapes, 1, "<i4");
    expect_load_error(ni, "'<i4' is not a little-endian float");
    /* an entry whose zip headers declare far more bytes than its compressed
     * data could expand to: refused before anything of that size is allocated */
    const char *nb = tu_path(dir, "npzbomb");
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", nb);
    assert_int_equal(system(cmd), 0);
    write_npz(tu_path(nb, "params.npz"), names, data, shapes, 1, "<f4");
    {
        FILE *f = fopen(tu_path(nb, "params.npz"), "r+b");
        assert_non_null(f);
        static uint8_t zb[1 << 16];
        size_t zn = fread(zb, 1, sizeof zb, f);
        assert_true(zn > 0 && zn < sizeof zb);
        int patched = 0;
        for (size_t i = 0; i + 30 < zn; i++) {
            size_t at = 0;
            if (!memcmp(zb + i, "PK\x03\x04", 4)) at = i + 22; /* local header: uncompressed size */
            else if (!memcmp(zb + i, "PK\x01\x02", 4)) at = i + 24; /* central directory */
            if (!at) continue;
            zb[at] = 0, zb[at + 1] = 0, zb[at + 2] = 0, zb[at + 3] = 0xf0; /* 4 GB */
            patched++;
        }
        assert_int_equal(patched, 2);
        rewind(f);
        assert_int_equal(fwrite(zb, 1, zn, f), zn);
        fclose(f);
    }
    expect_load_error(nb, "not a real array");
    /* NaN in an npz array names the file and the array */
    const char *nn = tu_path(dir, "npznan");
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", nn);
    assert_int_equal(system(cmd), 0);
    {
        const char *gnames[5] = {"W_enc", "W_dec", "b_enc", "b_dec", "threshold"};
        float *wenc = malloc(sizeof(float) * DM * DS);
        memcpy(wenc, p->W_enc, sizeof(float) * DM * DS);
        wenc[3] = NAN;
        const float *gdata[5] = {wenc, p->W_dec, p->b_enc, p->b_dec, p->threshold};
        const uint64_t gshapes[5][2] = {{DM, DS}, {DS, DM}, {DS, 0}, {DM, 0}, {DS, 0}};
        write_npz(tu_path(nn, "params.npz"), gnames, gdata, gshapes, 5, "<f4");
        free(wenc);
    }
    expect_load_error(nn, "W_enc");
    expect_load_error(tu_path(dir, "nonexistent"), "not a directory");
    expect_load_error(dir, "no SAE found");
    free(p);
}

static void test_npy_parser_edges(void **state) {
    (void)state;
    stetho_npy_array a;
    uint8_t bad[16] = "\x93NUMPY\x01\x00\xff\xff";
    assert_int_not_equal(stetho_npy_parse(bad, sizeof bad, "bad", &a), STETHO_OK);
    const char *h = "\x93NUMPY\x01\x00\x3c\x00{'descr': '<f4', 'fortran_order': True, 'shape': (1,), }      \n";
    assert_int_equal(stetho_npy_parse(h, 70, "fortran", &a), STETHO_ERR_UNSUPPORTED);
    char img[128];
    int hl = snprintf(img + 10, sizeof img - 10, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }");
    memcpy(img, "\x93NUMPY\x01\x00", 8);
    img[8] = (char)hl;
    img[9] = 0;
    assert_int_equal(stetho_npy_parse(img, 10 + (size_t)hl + 8, "short", &a), STETHO_ERR_FORMAT); /* needs 24 bytes */
    assert_non_null(strstr(stetho_last_error(), "needs 24 bytes"));
}

/* Top-K per row against a full sort of (value desc, index asc), with ties and
 * k at both ends. */
typedef struct {
    float v;
    int32_t i;
} tk_ref;
static int tk_cmp(const void *a, const void *b) {
    const tk_ref *x = a, *y = b;
    if (x->v != y->v) return x->v > y->v ? -1 : 1;
    return x->i - y->i;
}
static void test_top_k(void **state) {
    (void)state;
    enum { N = 37, D = 300 };
    static float acts[N * D];
    uint64_t r = 7;
    for (int i = 0; i < N * D; i++) acts[i] = (float)(int)(8 * tu_rand_normal(&r)) / 4; /* many ties */
    int ks[] = {1, 2, 5, 64, D};
    for (size_t q = 0; q < sizeof ks / sizeof ks[0]; q++) {
        int k = ks[q];
        int32_t *idx = malloc(sizeof(int32_t) * N * (size_t)k);
        float *val = malloc(sizeof(float) * N * (size_t)k);
        assert_int_equal(stetho_sae_top_k(acts, N, D, k, idx, val), STETHO_OK);
        for (int row = 0; row < N; row++) {
            tk_ref ref[D];
            for (int j = 0; j < D; j++) ref[j] = (tk_ref){acts[row * D + j], j};
            qsort(ref, D, sizeof *ref, tk_cmp);
            for (int j = 0; j < k; j++) {
                assert_int_equal(idx[row * k + j], ref[j].i);
                assert_true(val[row * k + j] == ref[j].v);
            }
        }
        free(idx);
        free(val);
    }
    int32_t i1;
    float v1;
    assert_int_equal(stetho_sae_top_k(acts, 1, D, D + 1, &i1, &v1), STETHO_ERR_INVALID);
    assert_int_equal(stetho_sae_top_k(acts, 1, D, 0, &i1, &v1), STETHO_ERR_INVALID);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_saelens_all_architectures),
        cmocka_unit_test(test_gemma_scope),
        cmocka_unit_test(test_bad_saes),
        cmocka_unit_test(test_npy_parser_edges),
        cmocka_unit_test(test_top_k),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
