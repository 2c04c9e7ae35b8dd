/* safetensors reader/writer: round trips, and a corpus of malformed files (written
 * by this test into its scratch directory) that must each be refused with a
 * message naming the file and the fault. */
#include "testutil.h"

#include "stetho/checkpoint.h"
#include "stetho/safetensors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A file image: 8-byte little-endian header length, header text, then data. */
static void write_image(const char *path, const char *header, uint64_t declared_len, const void *data, size_t n) {
    size_t hl = strlen(header);
    uint8_t *buf = malloc(8 + hl + n + 1);
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)(declared_len >> (8 * i));
    memcpy(buf + 8, header, hl);
    if (n) memcpy(buf + 8 + hl, data, n);
    tu_write_file(path, buf, 8 + hl + n);
    free(buf);
}

typedef struct {
    const char *name;
    const char *header;     /* NULL: raw bytes below */
    size_t data_len;
    int64_t len_adjust;     /* added to the real header length */
    const char *expect;     /* substring of the error message */
} bad_case;

static const bad_case corpus[] = {
    {"past-end", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, 1000, "runs past the end"},
    {"offset-outside", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 8, 0, "outside the data section"},
    {"overlap",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
     12, 0, "overlaps"},
    {"gap",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
     12, 0, "previous tensor ends"},
    {"trailing-data", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 12, 0, "cover 4 bytes"},
    {"unknown-dtype", "{\"a\":{\"dtype\":\"Q4_K\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, 0, "unknown dtype 'Q4_K'"},
    {"shape-overflow",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],\"data_offsets\":[0,8]}}", 8, 0, "overflows"},
    {"size-mismatch", "{\"a\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, 0, "needs 6 bytes"},
    {"negative-dim", "{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8, 0, "non-negative"},
    {"float-offset", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8.0]}}", 8, 0, "data_offsets"},
    {"not-object", "[1,2,3]", 0, 0, "JSON object"},
    {"not-json", "{\"a\": nope}", 0, 0, "not valid JSON"},
    {"duplicate",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
     8, 0, "duplicate"},
    {"meta-not-string", "{\"__metadata__\":{\"k\":1},\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, 0,
     "not a string"},
    {"entry-not-object", "{\"a\":7}", 0, 0, "not an object"},
    {"missing-shape", "{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, 0, "needs string 'dtype'"},
    {"extra-key", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}}", 4, 0, "unexpected key"},
    {"too-many-dims", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", 1, 0, "dimensions"},
    {"f4-half-byte", "{\"a\":{\"dtype\":\"F4\",\"shape\":[3],\"data_offsets\":[0,2]}}", 2, 0, "whole bytes"},
    {"huge-header-len", "{}", 0, 200000000, "100 MB"},
};

static void test_malformed_corpus(void **state) {
    (void)state;
    const char *dir = tu_tmpdir("st-corpus");
    uint8_t data[64] = {0};
    for (size_t i = 0; i < sizeof corpus / sizeof corpus[0]; i++) {
        const bad_case *c = &corpus[i];
        char path[4096];
        snprintf(path, sizeof path, "%s/%s.safetensors", dir, c->name);
        write_image(path, c->header, (uint64_t)((int64_t)strlen(c->header) + c->len_adjust), data, c->data_len);
        stetho_st_file f;
        stetho_status st = stetho_st_open(&f, path);
        if (st == STETHO_OK) fail_msg("%s: accepted a malformed file", c->name);
        const char *msg = stetho_last_error();
        if (!strstr(msg, c->expect) || !strstr(msg, path))
            fail_msg("%s: message '%s' lacks '%s' or the path", c->name, msg, c->expect);
    }
}

static void test_raw_malformed(void **state) {
    (void)state;
    const char *dir = tu_tmpdir("st-raw");
    stetho_st_file f;
    /* empty, shorter than the length prefix, and header not starting with '{' */
    tu_write_file(tu_path(dir, "empty.safetensors"), "", 0);
    assert_int_equal(stetho_st_open(&f, tu_path(dir, "empty.safetensors")), STETHO_ERR_FORMAT);
    assert_non_null(strstr(stetho_last_error(), "truncated"));
    tu_write_file(tu_path(dir, "short.safetensors"), "\x02\0\0", 3);
    assert_int_equal(stetho_st_open(&f, tu_path(dir, "short.safetensors")), STETHO_ERR_FORMAT);
    write_image(tu_path(dir, "space.safetensors"), " {}", 3, NULL, 0);
    assert_int_equal(stetho_st_open(&f, tu_path(dir, "space.safetensors")), STETHO_ERR_FORMAT);
    /* invalid UTF-8 in a tensor name */
    write_image(tu_path(dir, "utf8.safetensors"), "{\"a\xff\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}",
                strlen("{\"a\xff\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}"), "x", 1);
    assert_int_equal(stetho_st_open(&f, tu_path(dir, "utf8.safetensors")), STETHO_ERR_FORMAT);
    assert_non_null(strstr(stetho_last_error(), "not valid JSON"));
    /* NUL inside the header */
    uint8_t img[8 + 4] = {4, 0, 0, 0, 0, 0, 0, 0, '{', 0, '}', ' '};
    assert_int_equal(stetho_st_open_buffer(&f, img, sizeof img, "nul"), STETHO_ERR_FORMAT);
    assert_int_equal(stetho_st_open(&f, tu_path(dir, "does-not-exist.safetensors")), STETHO_ERR_IO);
    assert_int_equal(stetho_st_open(&f, dir), STETHO_ERR_IO); /* a directory */
}

/* Every prefix of a valid file is refused cleanly (no crash, no acceptance). */
static void test_every_truncation(void **state) {
    (void)state;
    const char *dir = tu_tmpdir("st-trunc");
    float vals[3] = {1, 2, 3};
    uint16_t h[2] = {0x3f80, 0x4000};
    stetho_tensor ts[2] = {
        {.name = "x", .dtype = STETHO_DTYPE_F32, .ndim = 1, .shape = {3}, .n_elements = 3, .nbytes = 12, .data = vals},
        {.name = "y", .dtype = STETHO_DTYPE_BF16, .ndim = 2, .shape = {1, 2}, .n_elements = 2, .nbytes = 4, .data = h},
    };
    const char *path = tu_path(dir, "ok.safetensors");
    assert_int_equal(stetho_st_write_tensors(path, ts, 2, NULL, 0), STETHO_OK);
    size_t len;
    char *img = tu_read_file(path, &len);
    stetho_st_file f;
    for (size_t n = 0; n < len; n++) assert_int_not_equal(stetho_st_open_buffer(&f, img, n, "prefix"), STETHO_OK);
    assert_int_equal(stetho_st_open_buffer(&f, img, len, "whole"), STETHO_OK);
    stetho_st_close(&f);
    /* every single-byte corruption of the header: refused or accepted, never a crash */
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = (hl << 8) | (uint8_t)img[i];
    for (size_t i = 0; i < 8 + hl; i++) {
        char saved = img[i];
        for (int v = 0; v < 256; v += 37) {
            img[i] = (char)v;
            if (stetho_st_open_buffer(&f, img, len, "flip") == STETHO_OK) stetho_st_close(&f);
        }
        img[i] = saved;
    }
    free(img);
}

static void test_round_trip(void **state) {
    (void)state;
    const char *dir = tu_tmpdir("st-rt");
    float a[6] = {1.5f, -2, 3, 0, -0.0f, 1e30f};
    uint16_t b[4] = {1, 2, 3, 4};
    uint8_t c = 7;
    stetho_tensor ts[4] = {
        {.name = "layers.0.w", .dtype = STETHO_DTYPE_F32, .ndim = 2, .shape = {2, 3}, .n_elements = 6, .nbytes = 24, .data = a},
        {.name = "b", .dtype = STETHO_DTYPE_F16, .ndim = 1, .shape = {4}, .n_elements = 4, .nbytes = 8, .data = b},
        {.name = "empty", .dtype = STETHO_DTYPE_F32, .ndim = 2, .shape = {0, 5}, .n_elements = 0, .nbytes = 0, .data = a},
        {.name = "scalar", .dtype = STETHO_DTYPE_U8, .ndim = 0, .n_elements = 1, .nbytes = 1, .data = &c},
    };
    stetho_kv meta[2] = {{"format", "pt"}, {"note", "h\xc3\xa9llo \"quoted\""}};
    const char *path = tu_path(dir, "rt.safetensors");
    assert_int_equal(stetho_st_write_tensors(path, ts, 4, meta, 2), STETHO_OK);
    stetho_st_file f;
    assert_int_equal(stetho_st_open(&f, path), STETHO_OK);
    assert_int_equal(f.n_tensors, 4);
    assert_int_equal((8 + f.header_size) % 8, 0); /* data section aligned */
    const stetho_tensor *t = stetho_st_find(&f, "layers.0.w");
    assert_non_null(t);
    assert_int_equal(t->ndim, 2);
    assert_memory_equal(t->data, a, sizeof a);
    t = stetho_st_find(&f, "scalar");
    assert_int_equal(t->ndim, 0);
    assert_int_equal(*(const uint8_t *)t->data, 7);
    assert_int_equal(stetho_st_find(&f, "empty")->nbytes, 0);
    assert_null(stetho_st_find(&f, "nope"));
    assert_string_equal(stetho_st_meta(&f, "note"), "h\xc3\xa9llo \"quoted\"");
    assert_string_equal(stetho_st_meta(&f, "format"), "pt");
    stetho_st_close(&f);
    assert_int_equal(tu_count_entries(dir), 1); /* no temp file left */
}

static void test_writer_misuse_and_faults(void **state) {
    (void)state;
    const char *dir = tu_tmpdir("st-w");
    const char *path = tu_path(dir, "w.safetensors");
    stetho_st_writer w;
    uint64_t shape[1] = {4};
    float v[4] = {1, 2, 3, 4};
    assert_int_equal(stetho_st_writer_init(&w, path), STETHO_OK);
    assert_int_equal(stetho_st_writer_declare(&w, "a", STETHO_DTYPE_F32, 1, shape), STETHO_OK);
    assert_int_equal(stetho_st_writer_declare(&w, "a", STETHO_DTYPE_F32, 1, shape), STETHO_ERR_INVALID);
    assert_int_equal(stetho_st_writer_write(&w, v, 8), STETHO_OK);
    assert_int_equal(stetho_st_writer_finish(&w), STETHO_ERR_INVALID); /* incomplete */
    stetho_st_writer_abort(&w);
    assert_false(tu_exists(path));
    assert_int_equal(tu_count_entries(dir), 0);
    /* write faults at each write: clean error, nothing left */
    for (uint64_t n = 1; n <= 3; n++) {
        assert_int_equal(stetho_st_writer_init(&w, path), STETHO_OK);
        assert_int_equal(stetho_st_writer_declare(&w, "a", STETHO_DTYPE_F32, 1, shape), STETHO_OK);
        stetho_fault_write_after(n);
        stetho_status st = stetho_st_writer_write(&w, v, 16);
        if (!st) st = stetho_st_writer_finish(&w);
        stetho_fault_write_after(0);
        if (st) {
            assert_int_equal(st, STETHO_ERR_IO);
            assert_non_null(strstr(stetho_last_error(), "No space left"));
            stetho_st_writer_abort(&w);
            assert_int_equal(tu_count_entries(dir), 0);
        } else {
            remove(path);
        }
    }
}

/* Sharded checkpoints: index validation. */
static void test_checkpoint_index(void **state) {
    (void)state;
    const char *dir = tu_tmpdir("ckpt");
    tu_model_spec spec = {.n_layers = 3, .n_shards = 3, .seed = 1};
    tu_make_model(tu_path(dir, "ok"), &spec);
    stetho_checkpoint c;
    assert_int_equal(stetho_checkpoint_open(&c, tu_path(dir, "ok")), STETHO_OK);
    assert_int_equal(c.n_shards, 3);
    assert_true(c.has_index);
    assert_int_equal(stetho_checkpoint_n_layers(&c), 3);
    assert_non_null(stetho_checkpoint_find(&c, "model.layers.2.mlp.down_proj.weight"));
    stetho_checkpoint_close(&c);

    /* a missing shard */
    tu_make_model(tu_path(dir, "missing"), &spec);
    remove(tu_path(tu_path(dir, "missing"), "model-00002-of-00003.safetensors"));
    assert_int_equal(stetho_checkpoint_open(&c, tu_path(dir, "missing")), STETHO_ERR_NOTFOUND);
    assert_non_null(strstr(stetho_last_error(), "model-00002-of-00003.safetensors"));

    /* an index naming a file outside the directory */
    tu_make_model(tu_path(dir, "escape"), &spec);
    const char *esc = "{\"weight_map\": {\"model.norm.weight\": \"../ok/model-00001-of-00003.safetensors\"}}";
    tu_write_file(tu_path(tu_path(dir, "escape"), "model.safetensors.index.json"), esc, strlen(esc));
    assert_int_equal(stetho_checkpoint_open(&c, tu_path(dir, "escape")), STETHO_ERR_FORMAT);
    assert_non_null(strstr(stetho_last_error(), "plain file name"));

    /* an index that lists fewer tensors than the shards hold */
    tu_make_model(tu_path(dir, "partial"), &spec);
    const char *part = "{\"weight_map\": {\"model.norm.weight\": \"model-00003-of-00003.safetensors\"}}";
    tu_write_file(tu_path(tu_path(dir, "partial"), "model.safetensors.index.json"), part, strlen(part));
    assert_int_equal(stetho_checkpoint_open(&c, tu_path(dir, "partial")), STETHO_ERR_FORMAT);
    assert_non_null(strstr(stetho_last_error(), "not listed in the index"));

    /* an index that puts a tensor in the wrong shard */
    tu_make_model(tu_path(dir, "wrong"), &spec);
    const char *wrong = "{\"weight_map\": {\"model.norm.weight\": \"model-00001-of-00003.safetensors\"}}";
    tu_write_file(tu_path(tu_path(dir, "wrong"), "model.safetensors.index.json"), wrong, strlen(wrong));
    assert_int_not_equal(stetho_checkpoint_open(&c, tu_path(dir, "wrong")), STETHO_OK);

    /* broken index JSON, broken config.json */
    tu_make_model(tu_path(dir, "badjson"), &spec);
    tu_write_file(tu_path(tu_path(dir, "badjson"), "model.safetensors.index.json"), "{", 1);
    assert_int_equal(stetho_checkpoint_open(&c, tu_path(dir, "badjson")), STETHO_ERR_FORMAT);
    tu_model_spec one = {.seed = 2};
    tu_make_model(tu_path(dir, "badcfg"), &one);
    tu_write_file(tu_path(tu_path(dir, "badcfg"), "config.json"), "[]", 2);
    assert_int_equal(stetho_checkpoint_open(&c, tu_path(dir, "badcfg")), STETHO_ERR_FORMAT);
    assert_non_null(strstr(stetho_last_error(), "config.json"));

    /* empty directory */
    assert_int_equal(stetho_checkpoint_open(&c, tu_tmpdir("ckpt-empty")), STETHO_ERR_NOTFOUND);
}

static void test_multimodal_classification(void **state) {
    (void)state;
    static const struct { const char *name; int layer; stetho_module m; } cases[] = {
        {"language_model.model.layers.3.self_attn.q_proj.weight", 3, STETHO_MOD_ATTN_Q},
        {"model.language_model.layers.12.mlp.down_proj.weight", 12, STETHO_MOD_MLP_DOWN},
        {"model.layers.0.self_attn.k_norm.weight", 0, STETHO_MOD_NORM_K},
        {"model.layers.7.pre_feedforward_layernorm.weight", 7, STETHO_MOD_NORM_PRE_FFN},
        {"model.layers.1.self_attn.q_proj.bias", 1, STETHO_MOD_ATTN_Q},
        {"model.embed_tokens.weight", -1, STETHO_MOD_EMBED},
        {"language_model.model.norm.weight", -1, STETHO_MOD_NORM_FINAL},
        {"lm_head.weight", -1, STETHO_MOD_LM_HEAD},
        {"vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight", -1, STETHO_MOD_VISION},
        {"model.multi_modal_projector.mm_input_projection_weight", -1, STETHO_MOD_VISION},
        {"model.layers.2.rotary_emb.inv_freq", -1, STETHO_MOD_OTHER},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        stetho_tensor_role r = stetho_arch_classify(cases[i].name);
        if (r.module != cases[i].m || (cases[i].m != STETHO_MOD_OTHER && r.layer != cases[i].layer))
            fail_msg("%s: got layer %d module %s", cases[i].name, r.layer, stetho_module_name(r.module));
    }
    assert_true(stetho_arch_classify("model.layers.1.self_attn.q_proj.bias").is_bias);
}

static void test_shared_reference_models_open(void **state) {
    (void)state;
    const char *shared = tu_shared("reference/models/gemma3-multimodal-naming/config.json");
    if (!shared) {
        print_message("skipped: ../shared/reference/models not available\n");
        skip();
    }
    stetho_checkpoint c;
    assert_int_equal(stetho_checkpoint_open(&c, tu_path(shared, "reference/models/gemma3-multimodal-naming")), STETHO_OK);
    assert_true(c.config.multimodal);
    assert_int_equal(c.config.family, STETHO_FAMILY_GEMMA3);
    assert_int_equal(c.n_shards, 1); /* reference.safetensors beside it is not part of the model */
    int vision = 0;
    for (size_t i = 0; i < c.n_tensors; i++)
        vision += stetho_arch_classify(c.tensors[i]->name).module == STETHO_MOD_VISION;
    assert_true(vision > 0);
    stetho_checkpoint_close(&c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_malformed_corpus),
        cmocka_unit_test(test_raw_malformed),
        cmocka_unit_test(test_every_truncation),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_writer_misuse_and_faults),
        cmocka_unit_test(test_checkpoint_index),
        cmocka_unit_test(test_multimodal_classification),
        cmocka_unit_test(test_shared_reference_models_open),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
