/* Test helpers: scratch space, shared data lookup and generated checkpoints. */
#include "testutil.h"

#include "stetho/checkpoint.h"
#include "stetho/safetensors.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Strings handed to tests live until exit: kept here and freed by atexit, so
 * LeakSanitizer reports only real leaks. */
static char **g_owned;
static size_t g_n_owned, g_cap_owned;

static void free_owned(void) {
    for (size_t i = 0; i < g_n_owned; i++) free(g_owned[i]);
    free(g_owned);
    g_owned = NULL;
    g_n_owned = g_cap_owned = 0;
}

static char *owned(size_t n) {
    if (g_n_owned == g_cap_owned) {
        if (!g_owned) atexit(free_owned);
        g_cap_owned = g_cap_owned ? g_cap_owned * 2 : 64;
        g_owned = realloc(g_owned, g_cap_owned * sizeof *g_owned);
    }
    return g_owned[g_n_owned++] = malloc(n);
}

static void mkdir_p(const char *path) {
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            mkdir(buf, 0755);
            *p = '/';
        }
    }
    mkdir(buf, 0755);
}

static void rm_rf(const char *path) {
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    if (system(cmd) != 0) fprintf(stderr, "testutil: could not remove %s\n", path);
}

const char *tu_tmpdir(const char *tag) {
    const char *base = getenv("STETHO_TMP");
    if (!base || !*base) base = "/tmp/stetho-test";
    char *p = owned(4096);
    snprintf(p, 4096, "%s/%s-%ld", base, tag, (long)getpid());
    rm_rf(p);
    mkdir_p(p);
    return p;
}

const char *tu_shared(const char *rel) {
    const char *base = getenv("STETHO_SHARED");
    if (!base || !*base) base = "../shared";
    char *p = owned(4096);
    snprintf(p, 4096, "%s/%s", base, rel);
    if (access(p, R_OK) != 0) return NULL;
    snprintf(p, 4096, "%s", base);
    return p;
}

const char *tu_path(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = owned(n);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

void tu_write_file(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    if (len) assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

char *tu_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
        fclose(f);
        free(buf);
        return NULL;
    }
    fclose(f);
    buf[n] = '\0';
    if (len) *len = (size_t)n;
    return buf;
}

bool tu_exists(const char *path) { return access(path, F_OK) == 0; }

int tu_count_entries(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

uint64_t tu_rand_u64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

float tu_rand_normal(uint64_t *s) {
    double u1 = ((tu_rand_u64(s) >> 11) + 0.5) * 0x1p-53;
    double u2 = ((tu_rand_u64(s) >> 11) + 0.5) * 0x1p-53;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

typedef struct {
    char name[160];
    int ndim;
    uint64_t shape[2];
    bool is_norm;
} tdecl;

static int add_decl(tdecl *d, int n, const char *prefix, const char *name, uint64_t a, uint64_t b, bool norm) {
    snprintf(d[n].name, sizeof d[n].name, "%s%s", prefix, name);
    d[n].ndim = b ? 2 : 1;
    d[n].shape[0] = a;
    d[n].shape[1] = b;
    d[n].is_norm = norm;
    return n + 1;
}

const char *tu_make_model(const char *dir, const tu_model_spec *in) {
    tu_model_spec s = *in;
    if (!s.model_type) s.model_type = "gemma3_text";
    if (!s.n_layers) s.n_layers = 2;
    if (!s.hidden) s.hidden = 16;
    if (!s.intermediate) s.intermediate = 32;
    if (!s.n_heads) s.n_heads = 2;
    if (!s.n_kv_heads) s.n_kv_heads = 1;
    if (!s.head_dim) s.head_dim = 8;
    if (!s.vocab) s.vocab = 32;
    if (!s.scale) s.scale = 0.02f;
    if (!s.max_position) s.max_position = 512;
    if (s.n_shards < 1) s.n_shards = 1;
    bool gemma = !strncmp(s.model_type, "gemma", 5);
    bool multimodal = !strcmp(s.model_type, "gemma3");
    bool qwen = !strcmp(s.model_type, "qwen2");
    const char *prefix = multimodal ? "language_model.model." : "model.";
    mkdir_p(dir);

    int cap = 16 * s.n_layers + 8, n = 0;
    tdecl *d = calloc((size_t)cap, sizeof *d);
    uint64_t H = (uint64_t)s.hidden, I = (uint64_t)s.intermediate;
    uint64_t Q = (uint64_t)(s.n_heads * s.head_dim), KV = (uint64_t)(s.n_kv_heads * s.head_dim);
    n = add_decl(d, n, prefix, "embed_tokens.weight", (uint64_t)s.vocab, H, false);
    for (int l = 0; l < s.n_layers; l++) {
        char p[96];
        snprintf(p, sizeof p, "%slayers.%d.", prefix, l);
        n = add_decl(d, n, p, "input_layernorm.weight", H, 0, true);
        n = add_decl(d, n, p, "self_attn.q_proj.weight", Q, H, false);
        n = add_decl(d, n, p, "self_attn.k_proj.weight", KV, H, false);
        n = add_decl(d, n, p, "self_attn.v_proj.weight", KV, H, false);
        if (qwen) {
            n = add_decl(d, n, p, "self_attn.q_proj.bias", Q, 0, false);
            n = add_decl(d, n, p, "self_attn.k_proj.bias", KV, 0, false);
            n = add_decl(d, n, p, "self_attn.v_proj.bias", KV, 0, false);
        }
        n = add_decl(d, n, p, "self_attn.o_proj.weight", H, Q, false);
        if (!strcmp(s.model_type, "gemma3_text") || multimodal) {
            n = add_decl(d, n, p, "self_attn.q_norm.weight", (uint64_t)s.head_dim, 0, true);
            n = add_decl(d, n, p, "self_attn.k_norm.weight", (uint64_t)s.head_dim, 0, true);
        }
        n = add_decl(d, n, p, "post_attention_layernorm.weight", H, 0, true);
        if (gemma) {
            n = add_decl(d, n, p, "pre_feedforward_layernorm.weight", H, 0, true);
            n = add_decl(d, n, p, "post_feedforward_layernorm.weight", H, 0, true);
        }
        n = add_decl(d, n, p, "mlp.gate_proj.weight", I, H, false);
        n = add_decl(d, n, p, "mlp.up_proj.weight", I, H, false);
        n = add_decl(d, n, p, "mlp.down_proj.weight", H, I, false);
    }
    n = add_decl(d, n, prefix, "norm.weight", H, 0, true);
    if (!gemma) n = add_decl(d, n, "", "lm_head.weight", (uint64_t)s.vocab, H, false);
    if (multimodal) n = add_decl(d, n, "", "vision_tower.vision_model.post_layernorm.weight", 8, 0, true);

    stetho_checkpoint from;
    bool have_from = false;
    if (s.perturb_from) {
        assert_int_equal(stetho_checkpoint_open(&from, s.perturb_from), STETHO_OK);
        have_from = true;
    }
    uint64_t rng = s.seed * 7919 + 17;
    size_t esz = stetho_dtype_bits(s.dtype) / 8;
    int per_shard = (n + s.n_shards - 1) / s.n_shards;
    FILE *idx = NULL;
    if (s.n_shards > 1) {
        idx = fopen(tu_path(dir, "model.safetensors.index.json"), "w");
        fprintf(idx, "{\"metadata\": {\"total_size\": 0}, \"weight_map\": {");
    }
    for (int sh = 0; sh < s.n_shards; sh++) {
        char fname[64];
        if (s.n_shards == 1) snprintf(fname, sizeof fname, "model.safetensors");
        else snprintf(fname, sizeof fname, "model-%05d-of-%05d.safetensors", sh + 1, s.n_shards);
        int lo = sh * per_shard, hi = lo + per_shard < n ? lo + per_shard : n;
        stetho_tensor *ts = calloc((size_t)(hi > lo ? hi - lo : 1), sizeof *ts);
        for (int i = lo; i < hi; i++) {
            stetho_tensor *t = &ts[i - lo];
            t->name = d[i].name;
            t->dtype = s.dtype;
            t->ndim = d[i].ndim;
            t->shape[0] = d[i].shape[0];
            t->shape[1] = d[i].shape[1];
            uint64_t ne = d[i].shape[0] * (d[i].ndim == 2 ? d[i].shape[1] : 1);
            t->n_elements = ne;
            t->nbytes = ne * esz;
            float *f = malloc(ne * sizeof *f);
            const stetho_tensor *src = have_from ? stetho_checkpoint_find(&from, d[i].name) : NULL;
            if (src) assert_int_equal(stetho_convert_to_f32(f, src->data, src->dtype, ne), STETHO_OK);
            for (uint64_t k = 0; k < ne; k++) {
                float noise = tu_rand_normal(&rng);
                if (src) f[k] += s.perturb * noise;
                else f[k] = d[i].is_norm ? (gemma ? 0.1f * noise : 1.0f + 0.1f * noise) : s.scale * noise;
            }
            void *buf = malloc(ne * esz + 1);
            assert_int_equal(stetho_convert_from_f32(buf, s.dtype, f, ne), STETHO_OK);
            free(f);
            t->data = buf;
            if (idx) fprintf(idx, "%s\"%s\": \"%s\"", i ? ", " : "", d[i].name, fname);
        }
        stetho_kv meta = {"format", "pt"};
        assert_int_equal(stetho_st_write_tensors(tu_path(dir, fname), ts, (size_t)(hi - lo), &meta, 1), STETHO_OK);
        for (int i = lo; i < hi; i++) free((void *)ts[i - lo].data);
        free(ts);
    }
    if (idx) {
        fprintf(idx, "}}\n");
        fclose(idx);
    }
    if (have_from) stetho_checkpoint_close(&from);

    FILE *cf = fopen(tu_path(dir, "config.json"), "w");
    const char *dts = s.dtype == STETHO_DTYPE_BF16 ? "bfloat16" : s.dtype == STETHO_DTYPE_F16 ? "float16" : "float32";
    const char *arch = multimodal ? "Gemma3ForConditionalGeneration"
                       : !strcmp(s.model_type, "gemma3_text") ? "Gemma3ForCausalLM"
                       : !strcmp(s.model_type, "gemma2") ? "Gemma2ForCausalLM"
                       : qwen ? "Qwen2ForCausalLM" : "LlamaForCausalLM";
    char text[1024];
    snprintf(text, sizeof text,
             "\"model_type\": \"%s\", \"num_hidden_layers\": %d, \"hidden_size\": %d, \"intermediate_size\": %d, "
             "\"num_attention_heads\": %d, \"num_key_value_heads\": %d, \"head_dim\": %d, \"vocab_size\": %d, "
             "\"max_position_embeddings\": %d, \"rms_norm_eps\": 1e-6, \"rope_theta\": 10000.0, "
             "\"tie_word_embeddings\": %s",
             multimodal ? "gemma3_text" : s.model_type, s.n_layers, s.hidden, s.intermediate, s.n_heads,
             s.n_kv_heads, s.head_dim, s.vocab, s.max_position, gemma ? "true" : "false");
    if (multimodal)
        fprintf(cf, "{\"architectures\": [\"%s\"], \"model_type\": \"gemma3\", \"torch_dtype\": \"%s\", \"text_config\": {%s}}\n",
                arch, dts, text);
    else
        fprintf(cf, "{\"architectures\": [\"%s\"], \"torch_dtype\": \"%s\", %s}\n", arch, dts, text);
    fclose(cf);
    tu_write_file(tu_path(dir, "tokenizer_config.json"), "{\"bos_token\": \"<bos>\"}\n", 22);
    free(d);
    return dir;
}
