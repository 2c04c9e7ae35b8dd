/* Study configuration: YAML (libfyaml) -> stetho_study_config, with every key
 * checked against the schema so a typo is an error that names it. */
#include "stetho/study.h"
#include "stetho/diagnose.h"
#include "internal.h"

#include <errno.h>
#include <jansson.h>
#include <libfyaml.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

uint64_t stetho_hash64(const void *data, size_t len, uint64_t h) {
    const uint8_t *p = data;
    if (!h) h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

typedef struct {
    const char *label;  /* file name for messages */
    const char *base_dir;
    stetho_study_config *c;
} ctx;

static const char *scalar(struct fy_node *n, size_t *len) {
    if (!n || !fy_node_is_scalar(n)) return NULL;
    return fy_node_get_scalar(n, len);
}

static stetho_status want_mapping(ctx *x, struct fy_node *n, const char *path) {
    if (n && fy_node_is_mapping(n)) return STETHO_OK;
    return st_err(STETHO_ERR_FORMAT, "%s: '%s' must be a mapping", x->label, path);
}

static stetho_status get_string(ctx *x, struct fy_node *n, const char *path, bool is_path, char **out) {
    size_t len;
    const char *s = scalar(n, &len);
    if (!s || len == 0) return st_err(STETHO_ERR_FORMAT, "%s: '%s' must be a non-empty string", x->label, path);
    if (memchr(s, '\0', len)) return st_err(STETHO_ERR_FORMAT, "%s: '%s' holds a NUL byte", x->label, path);
    bool relative = is_path && s[0] != '/' && x->base_dir && x->base_dir[0];
    size_t n_out = len + 1 + (relative ? strlen(x->base_dir) + 1 : 0);
    char *v = st_malloc(n_out);
    if (!v) return STETHO_ERR_NOMEM;
    if (relative) snprintf(v, n_out, "%s/%.*s", x->base_dir, (int)len, s);
    else snprintf(v, n_out, "%.*s", (int)len, s);
    st_free(*out);
    *out = v;
    return STETHO_OK;
}

static stetho_status get_int(ctx *x, struct fy_node *n, const char *path, long min, long max, int *out) {
    size_t len;
    const char *s = scalar(n, &len);
    char buf[32];
    if (s && len < sizeof buf) {
        memcpy(buf, s, len);
        buf[len] = '\0';
        char *end;
        errno = 0;
        long v = strtol(buf, &end, 10);
        if (!errno && end != buf && !*end && v >= min && v <= max) {
            *out = (int)v;
            return STETHO_OK;
        }
    }
    return st_err(STETHO_ERR_FORMAT, "%s: '%s' must be an integer in [%ld, %ld]", x->label, path, min, max);
}

static stetho_status get_double(ctx *x, struct fy_node *n, const char *path, double *out) {
    size_t len;
    const char *s = scalar(n, &len);
    char buf[64];
    if (s && len < sizeof buf) {
        memcpy(buf, s, len);
        buf[len] = '\0';
        char *end;
        errno = 0;
        double v = strtod(buf, &end);
        if (!errno && end != buf && !*end && isfinite(v)) {
            *out = v;
            return STETHO_OK;
        }
    }
    return st_err(STETHO_ERR_FORMAT, "%s: '%s' must be a number", x->label, path);
}

static stetho_status get_bool(ctx *x, struct fy_node *n, const char *path, bool *out) {
    size_t len;
    const char *s = scalar(n, &len);
    static const char *yes[] = {"true", "True", "TRUE", "yes", "on"}, *no[] = {"false", "False", "FALSE", "no", "off"};
    for (size_t i = 0; s && i < 5; i++) {
        if (strlen(yes[i]) == len && !memcmp(s, yes[i], len)) return *out = true, STETHO_OK;
        if (strlen(no[i]) == len && !memcmp(s, no[i], len)) return *out = false, STETHO_OK;
    }
    return st_err(STETHO_ERR_FORMAT, "%s: '%s' must be true or false", x->label, path);
}

/* A scalar or a sequence of scalars, as integers. */
static stetho_status get_int_list(ctx *x, struct fy_node *n, const char *path, long min, long max, int **out,
                                  size_t *count) {
    size_t cap = n && fy_node_is_sequence(n) ? (size_t)fy_node_sequence_item_count(n) : 1;
    if (cap == 0) return st_err(STETHO_ERR_FORMAT, "%s: '%s' is an empty list", x->label, path);
    int *v = st_calloc(cap, sizeof *v);
    if (!v) return STETHO_ERR_NOMEM;
    stetho_status st = STETHO_OK;
    size_t k = 0;
    if (n && fy_node_is_sequence(n)) {
        void *it = NULL;
        struct fy_node *item;
        while (!st && (item = fy_node_sequence_iterate(n, &it))) st = get_int(x, item, path, min, max, &v[k++]);
    } else {
        st = get_int(x, n, path, min, max, &v[k++]);
    }
    if (st) {
        st_free(v);
        return st;
    }
    st_free(*out);
    *out = v;
    *count = k;
    return STETHO_OK;
}

/* Visit every key of a mapping; `handle` returns STETHO_ERR_NOTFOUND for a key it
 * does not know, which becomes an "unknown key" error naming the full path. */
typedef stetho_status (*key_fn)(ctx *x, const char *key, struct fy_node *value, const char *path);

static stetho_status each_key(ctx *x, struct fy_node *map, const char *prefix, key_fn handle,
                              const char *known_keys) {
    stetho_status st = want_mapping(x, map, prefix[0] ? prefix : "(top level)");
    void *it = NULL;
    struct fy_node_pair *p;
    while (!st && (p = fy_node_mapping_iterate(map, &it))) {
        size_t len;
        const char *k = scalar(fy_node_pair_key(p), &len);
        if (!k) return st_err(STETHO_ERR_FORMAT, "%s: keys under '%s' must be plain strings", x->label, prefix);
        char key[128], path[256];
        snprintf(key, sizeof key, "%.*s", (int)(len < 127 ? len : 127), k);
        snprintf(path, sizeof path, "%s%s%s", prefix, prefix[0] ? "." : "", key);
        st = handle(x, key, fy_node_pair_value(p), path);
        if (st == STETHO_ERR_NOTFOUND)
            st = st_err(STETHO_ERR_FORMAT, "%s: unknown key '%s' (known under %s: %s)", x->label, path,
                        prefix[0] ? prefix : "the top level", known_keys);
    }
    return st;
}

static stetho_status k_models(ctx *x, const char *k, struct fy_node *v, const char *path) {
    stetho_study_config *c = x->c;
    if (!strcmp(k, "base")) return get_string(x, v, path, true, &c->base_model);
    if (!strcmp(k, "finetuned")) return get_string(x, v, path, true, &c->finetuned_model);
    if (!strcmp(k, "task_vector")) return get_string(x, v, path, true, &c->task_vector);
    return STETHO_ERR_NOTFOUND;
}

static stetho_status k_prompts(ctx *x, const char *k, struct fy_node *v, const char *path) {
    if (!strcmp(k, "domain")) return get_string(x, v, path, true, &x->c->domain_prompts);
    if (!strcmp(k, "general")) return get_string(x, v, path, true, &x->c->general_prompts);
    return STETHO_ERR_NOTFOUND;
}

/* A number that must be > 0 (diagnose's ratio threshold and pseudo-count). */
static stetho_status get_positive(ctx *x, struct fy_node *n, const char *path, double *out) {
    double v;
    stetho_status st = get_double(x, n, path, &v);
    if (st) return st;
    if (!(v > 0)) return st_err(STETHO_ERR_FORMAT, "%s: '%s' must be a number > 0", x->label, path);
    *out = v;
    return STETHO_OK;
}

/* The settings of `stetho diagnose`, under the same names as its options. */
static stetho_status k_diagnose(ctx *x, const char *k, struct fy_node *v, const char *path) {
    stetho_study_config *c = x->c;
    if (!strcmp(k, "metric")) return get_string(x, v, path, false, &c->metric);
    if (!strcmp(k, "max_tokens")) return get_int(x, v, path, 0, 1 << 24, &c->diagnose_max_tokens);
    if (!strcmp(k, "top_features")) return get_int(x, v, path, 1, 1 << 20, &c->top_features);
    if (!strcmp(k, "limit")) return get_int(x, v, path, 0, 1 << 30, &c->diagnose_limit);
    if (!strcmp(k, "k")) return get_int(x, v, path, 1, 1 << 20, &c->diagnose_k);
    if (!strcmp(k, "ratio")) return get_positive(x, v, path, &c->diagnose_ratio);
    if (!strcmp(k, "smoothing")) return get_positive(x, v, path, &c->diagnose_smoothing);
    if (!strcmp(k, "probe_folds")) return get_int(x, v, path, 2, 1000, &c->diagnose_probe_folds);
    if (!strcmp(k, "field")) return get_string(x, v, path, false, &c->diagnose_field);
    return STETHO_ERR_NOTFOUND;
}

static stetho_status k_edit(ctx *x, const char *k, struct fy_node *v, const char *path) {
    stetho_study_config *c = x->c;
    if (!strcmp(k, "modules")) return get_string(x, v, path, false, &c->modules);
    if (!strcmp(k, "in_memory")) return get_bool(x, v, path, &c->in_memory);
    if (!strcmp(k, "alpha")) {
        size_t n = v && fy_node_is_sequence(v) ? (size_t)fy_node_sequence_item_count(v) : 1;
        if (n == 0) return st_err(STETHO_ERR_FORMAT, "%s: '%s' is an empty list", x->label, path);
        double *a = st_calloc(n, sizeof *a);
        if (!a) return STETHO_ERR_NOMEM;
        stetho_status st = STETHO_OK;
        size_t i = 0;
        if (v && fy_node_is_sequence(v)) {
            void *it = NULL;
            struct fy_node *item;
            while (!st && (item = fy_node_sequence_iterate(v, &it))) st = get_double(x, item, path, &a[i++]);
        } else {
            st = get_double(x, v, path, &a[i++]);
        }
        if (st) return st_free(a), st;
        st_free(c->alpha);
        c->alpha = a;
        c->n_alpha = i;
        return STETHO_OK;
    }
    return STETHO_ERR_NOTFOUND;
}

static stetho_status k_random(ctx *x, const char *k, struct fy_node *v, const char *path) {
    if (strcmp(k, "seeds")) return STETHO_ERR_NOTFOUND;
    int *seeds = NULL;
    size_t n = 0;
    stetho_status st = get_int_list(x, v, path, 0, 2147483647, &seeds, &n);
    if (st) return st;
    st_free(x->c->random_seeds);
    x->c->random_seeds = st_calloc(n, sizeof *x->c->random_seeds);
    if (!x->c->random_seeds) return st_free(seeds), STETHO_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) x->c->random_seeds[i] = (uint64_t)seeds[i];
    x->c->n_random_seeds = n;
    st_free(seeds);
    return STETHO_OK;
}

static stetho_status k_controls(ctx *x, const char *k, struct fy_node *v, const char *path) {
    stetho_study_config *c = x->c;
    if (!strcmp(k, "random")) {
        bool on;
        if (v && fy_node_is_mapping(v)) return each_key(x, v, path, k_random, "seeds");
        stetho_status st = get_bool(x, v, path, &on);
        if (!st && !on) c->n_random_seeds = 0;
        return st;
    }
    if (!strcmp(k, "norm")) return get_bool(x, v, path, &c->c_norm);
    if (!strcmp(k, "bottom")) return get_bool(x, v, path, &c->c_bottom);
    if (!strcmp(k, "all_layers")) return get_bool(x, v, path, &c->c_all_layers);
    return STETHO_ERR_NOTFOUND;
}

static stetho_status k_ablation(ctx *x, const char *k, struct fy_node *v, const char *path) {
    if (!strcmp(k, "single_layer")) return get_bool(x, v, path, &x->c->ablation_single);
    if (!strcmp(k, "leave_one_out")) return get_bool(x, v, path, &x->c->ablation_leave_one_out);
    return STETHO_ERR_NOTFOUND;
}

static stetho_status k_stethoscope(ctx *x, const char *k, struct fy_node *v, const char *path) {
    if (!strcmp(k, "top_k")) return get_int_list(x, v, path, 1, 100000, &x->c->top_k, &x->c->n_top_k);
    return STETHO_ERR_NOTFOUND;
}

static stetho_status k_scalpel(ctx *x, const char *k, struct fy_node *v, const char *path) {
    if (!strcmp(k, "features")) return get_int(x, v, path, 1, 1 << 20, &x->c->scalpel_features);
    return STETHO_ERR_NOTFOUND;
}

static stetho_status k_variants(ctx *x, const char *k, struct fy_node *v, const char *path) {
    stetho_study_config *c = x->c;
    if (!strcmp(k, "base")) return get_bool(x, v, path, &c->v_base);
    if (!strcmp(k, "finetuned")) return get_bool(x, v, path, &c->v_finetuned);
    if (!strcmp(k, "stethoscope")) return each_key(x, v, path, k_stethoscope, "top_k");
    if (!strcmp(k, "scalpel")) {
        bool on;
        if (v && fy_node_is_mapping(v)) return each_key(x, v, path, k_scalpel, "features");
        stetho_status st = get_bool(x, v, path, &on);
        if (!st && !on) c->scalpel_features = 0;
        return st;
    }
    if (!strcmp(k, "controls")) return each_key(x, v, path, k_controls, "random, norm, bottom, all_layers");
    if (!strcmp(k, "ablation")) return each_key(x, v, path, k_ablation, "single_layer, leave_one_out");
    return STETHO_ERR_NOTFOUND;
}

static stetho_status k_eval(ctx *x, const char *k, struct fy_node *v, const char *path) {
    stetho_study_config *c = x->c;
    if (!strcmp(k, "tasks")) return get_string(x, v, path, false, &c->tasks);
    if (!strcmp(k, "limit")) return get_int(x, v, path, 0, 1 << 24, &c->limit);
    if (!strcmp(k, "num_fewshot")) return get_int(x, v, path, 0, 64, &c->num_fewshot);
    if (!strcmp(k, "max_gen_toks")) return get_int(x, v, path, 1, 1 << 16, &c->max_gen_toks);
    if (!strcmp(k, "batch_size")) return get_int(x, v, path, 1, 4096, &c->batch_size);
    if (!strcmp(k, "chat")) return get_bool(x, v, path, &c->chat);
    if (!strcmp(k, "data")) return get_string(x, v, path, true, &c->data_dir);
    return STETHO_ERR_NOTFOUND;
}

static stetho_status k_perplexity(ctx *x, const char *k, struct fy_node *v, const char *path) {
    if (!strcmp(k, "input")) return get_string(x, v, path, true, &x->c->perplexity_input);
    if (!strcmp(k, "max_tokens")) return get_int(x, v, path, 1, 1 << 24, &x->c->perplexity_max_tokens);
    return STETHO_ERR_NOTFOUND;
}

static stetho_status k_top(ctx *x, const char *k, struct fy_node *v, const char *path) {
    if (!strcmp(k, "models")) return each_key(x, v, path, k_models, "base, finetuned, task_vector");
    if (!strcmp(k, "sae_dir")) return get_string(x, v, path, true, &x->c->sae_dir);
    if (!strcmp(k, "prompts")) return each_key(x, v, path, k_prompts, "domain, general");
    if (!strcmp(k, "diagnose"))
        return each_key(x, v, path, k_diagnose,
                        "metric, max_tokens, top_features, limit, k, ratio, smoothing, probe_folds, field");
    if (!strcmp(k, "edit")) return each_key(x, v, path, k_edit, "modules, alpha, in_memory");
    if (!strcmp(k, "variants"))
        return each_key(x, v, path, k_variants, "base, finetuned, stethoscope, scalpel, controls, ablation");
    if (!strcmp(k, "eval"))
        return each_key(x, v, path, k_eval, "tasks, limit, num_fewshot, max_gen_toks, batch_size, chat, data");
    if (!strcmp(k, "perplexity")) return each_key(x, v, path, k_perplexity, "input, max_tokens");
    if (!strcmp(k, "threads")) return get_int(x, v, path, 1, 1024, &x->c->threads);
    if (!strcmp(k, "compute")) {
        char *mode = NULL;
        stetho_status st = get_string(x, v, path, false, &mode);
        if (!st && stetho_compute_parse(mode, &x->c->compute))
            st = st_err(STETHO_ERR_FORMAT, "%s: '%s' must be f32 or bf16, not '%s'", x->label, path, mode);
        if (!st) x->c->has_compute = true;
        st_free(mode);
        return st;
    }
    /* anchors-only sections such as ".defaults": holders of YAML anchors, never
     * read themselves (docs/study.md says so, since a typo there goes unnoticed) */
    if (k[0] == '.' || k[0] == '_') return STETHO_OK;
    return STETHO_ERR_NOTFOUND;
}

void stetho_study_config_free(stetho_study_config *c) {
    char **strs[] = {&c->path, &c->base_model, &c->finetuned_model, &c->task_vector, &c->sae_dir,
                     &c->domain_prompts, &c->general_prompts, &c->metric, &c->diagnose_field, &c->modules,
                     &c->tasks, &c->data_dir, &c->perplexity_input};
    for (size_t i = 0; i < ST_ARRAY_LEN(strs); i++) st_free(*strs[i]);
    st_free(c->alpha);
    st_free(c->top_k);
    st_free(c->random_seeds);
    memset(c, 0, sizeof *c);
}

static stetho_status set_defaults(stetho_study_config *c) {
    memset(c, 0, sizeof *c);
    c->v_base = c->v_finetuned = true;
    c->c_norm = c->c_bottom = c->c_all_layers = true;
    c->top_features = 0; /* diagnose's default: 32, capped at a narrower SAE */
    c->scalpel_features = 8;
    c->num_fewshot = 4;
    c->max_gen_toks = 256;
    c->batch_size = 8;
    c->perplexity_max_tokens = 512;
    c->alpha = st_malloc(sizeof *c->alpha);
    c->top_k = st_malloc(sizeof *c->top_k);
    c->random_seeds = st_malloc(3 * sizeof *c->random_seeds);
    c->modules = st_strdup("all");
    c->tasks = st_strdup("minerva_math");
    if (!c->alpha || !c->top_k || !c->random_seeds || !c->modules || !c->tasks) return STETHO_ERR_NOMEM;
    c->alpha[0] = 1.0, c->n_alpha = 1;
    c->top_k[0] = 4, c->n_top_k = 1;
    for (int i = 0; i < 3; i++) c->random_seeds[i] = (uint64_t)i + 1;
    c->n_random_seeds = 3;
    return STETHO_OK;
}

static void collect_diag(struct fy_diag *diag, void *user, const char *buf, size_t len) {
    (void)diag;
    st_buf *b = user;
    if (b->len < 512) st_buf_append(b, buf, len);
}

stetho_status stetho_study_config_parse(stetho_study_config *c, const char *yaml, size_t len, const char *label,
                                        const char *base_dir) {
    stetho_status st = set_defaults(c);
    if (st) return stetho_study_config_free(c), st;
    /* YAML is Unicode; checking first also keeps invalid bytes away from
     * libfyaml 0.7.12, which loops forever on some (found by fuzz_study) */
    size_t bad = st_utf8_check(yaml, len);
    if (bad != len) {
        stetho_study_config_free(c);
        return st_err(STETHO_ERR_FORMAT, "%s: not valid UTF-8 at byte %zu", label, bad);
    }
    st_buf msgs;
    st_buf_init(&msgs);
    struct fy_diag_cfg dcfg = {.output_fn = collect_diag, .user = &msgs, .level = FYET_ERROR, .show_position = true};
    struct fy_diag *diag = fy_diag_create(&dcfg);
    struct fy_parse_cfg pcfg = {.flags = FYPCF_QUIET | FYPCF_RESOLVE_DOCUMENT, .diag = diag};
    struct fy_document *doc = diag ? fy_document_build_from_string(&pcfg, yaml, len) : NULL;
    if (!doc) {
        char *m = msgs.data, *nl = m ? strchr(m, '\n') : NULL;
        if (nl) *nl = '\0';
        if (m && m[0] == '<' && strstr(m, ">:")) m = strstr(m, ">:") + 2; /* libfyaml's name for the buffer */
        st = st_err(STETHO_ERR_FORMAT, "%s: not valid YAML%s%s", label, m ? ": " : "", m ? m : "");
    } else {
        ctx x = {label, base_dir, c};
        struct fy_node *root = fy_document_root(doc);
        st = root ? each_key(&x, root, "", k_top,
                             "models, sae_dir, prompts, diagnose, edit, variants, eval, perplexity, threads, compute")
                  : st_err(STETHO_ERR_FORMAT, "%s: empty document", label);
    }
    if (!st && !c->base_model) st = st_err(STETHO_ERR_FORMAT, "%s: 'models.base' is required", label);
    if (!st && !c->finetuned_model == !c->task_vector)
        st = st_err(STETHO_ERR_FORMAT, "%s: give exactly one of 'models.finetuned' and 'models.task_vector'", label);
    if (!st && !c->sae_dir) st = st_err(STETHO_ERR_FORMAT, "%s: 'sae_dir' is required", label);
    if (!st && (!c->domain_prompts || !c->general_prompts))
        st = st_err(STETHO_ERR_FORMAT, "%s: 'prompts.domain' and 'prompts.general' are required", label);
    if (!st && !(c->path = st_strdup(label))) st = STETHO_ERR_NOMEM;
    if (doc) fy_document_destroy(doc);
    if (diag) fy_diag_destroy(diag);
    st_buf_free(&msgs);
    if (st) stetho_study_config_free(c);
    return st;
}

stetho_status stetho_study_config_load(stetho_study_config *c, const char *path) {
    char *text;
    size_t len;
    FILE *f = fopen(path, "rb");
    if (!f) return st_err(errno == ENOENT ? STETHO_ERR_NOTFOUND : STETHO_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    if (n < 0 || n > (16 << 20)) {
        fclose(f);
        return st_err(STETHO_ERR_FORMAT, "%s: not a study file (empty or over 16 MB)", path);
    }
    text = st_malloc((size_t)n + 1);
    if (!text) return fclose(f), STETHO_ERR_NOMEM;
    len = fread(text, 1, (size_t)n, f);
    fclose(f);
    text[len] = '\0';
    char *dir = st_strdup(path);
    if (!dir) return st_free(text), STETHO_ERR_NOMEM;
    char *slash = strrchr(dir, '/');
    if (slash) *slash = '\0';
    else strcpy(dir, ".");
    stetho_status st = stetho_study_config_parse(c, text, len, path, dir);
    st_free(dir);
    st_free(text);
    return st;
}

stetho_compute stetho_study_compute(const stetho_study_config *c) {
    return c->has_compute ? c->compute : stetho_get_compute();
}

int stetho_study_top_features(const stetho_study_config *c) {
    return c->top_features > 0 ? c->top_features : STETHO_DIAG_DEFAULT_TOP_FEATURES;
}

stetho_status stetho_study_config_json(const stetho_study_config *c, char **out) {
    json_t *o = json_object();
#define STR(k, v) json_object_set_new(o, k, (v) ? json_string(v) : json_null())
    STR("base_model", c->base_model);
    STR("finetuned_model", c->finetuned_model);
    STR("task_vector", c->task_vector);
    STR("sae_dir", c->sae_dir);
    STR("domain_prompts", c->domain_prompts);
    STR("general_prompts", c->general_prompts);
    STR("metric", c->metric);
    STR("modules", c->modules);
    STR("tasks", c->tasks);
    STR("data_dir", c->data_dir);
    STR("perplexity_input", c->perplexity_input);
#undef STR
    json_t *a = json_array(), *k = json_array(), *s = json_array();
    for (size_t i = 0; i < c->n_alpha; i++) json_array_append_new(a, json_real(c->alpha[i]));
    for (size_t i = 0; i < c->n_top_k; i++) json_array_append_new(k, json_integer(c->top_k[i]));
    for (size_t i = 0; i < c->n_random_seeds; i++) json_array_append_new(s, json_integer((json_int_t)c->random_seeds[i]));
    json_object_set_new(o, "alpha", a);
    json_object_set_new(o, "top_k", k);
    json_object_set_new(o, "random_seeds", s);
    json_object_set_new(o, "diagnose_max_tokens", json_integer(c->diagnose_max_tokens));
    json_object_set_new(o, "top_features", json_integer(stetho_study_top_features(c)));
    json_object_set_new(o, "diagnose_limit", json_integer(c->diagnose_limit));
    /* diagnose settings added later appear only when set, so that the config.json
     * of a run made before them stays identical and the run is not refused */
    if (c->diagnose_k) json_object_set_new(o, "diagnose_k", json_integer(c->diagnose_k));
    if (c->diagnose_ratio > 0) json_object_set_new(o, "diagnose_ratio", json_real(c->diagnose_ratio));
    if (c->diagnose_smoothing > 0) json_object_set_new(o, "diagnose_smoothing", json_real(c->diagnose_smoothing));
    if (c->diagnose_probe_folds) json_object_set_new(o, "diagnose_probe_folds", json_integer(c->diagnose_probe_folds));
    if (c->diagnose_field) json_object_set_new(o, "diagnose_field", json_string(c->diagnose_field));
    json_object_set_new(o, "scalpel_features", json_integer(c->scalpel_features));
    json_object_set_new(o, "variants", json_pack("{s:b, s:b, s:b, s:b, s:b, s:b, s:b}", "base", c->v_base, "finetuned",
                                                 c->v_finetuned, "norm", c->c_norm, "bottom", c->c_bottom, "all_layers",
                                                 c->c_all_layers, "single_layer", c->ablation_single, "leave_one_out",
                                                 c->ablation_leave_one_out));
    json_object_set_new(o, "eval", json_pack("{s:i, s:i, s:i, s:i, s:b}", "limit", c->limit, "num_fewshot",
                                             c->num_fewshot, "max_gen_toks", c->max_gen_toks, "batch_size",
                                             c->batch_size, "chat", c->chat));
    json_object_set_new(o, "perplexity_max_tokens", json_integer(c->perplexity_max_tokens));
    json_object_set_new(o, "threads", json_integer(c->threads));
    /* these only when set, so that a run made before the settings keeps its config */
    if (c->in_memory) json_object_set_new(o, "in_memory", json_true());
    if (stetho_study_compute(c) != STETHO_COMPUTE_F32)
        json_object_set_new(o, "compute", json_string(stetho_compute_name(stetho_study_compute(c))));
    *out = json_dumps(o, JSON_SORT_KEYS | JSON_INDENT(2));
    json_decref(o);
    return *out ? STETHO_OK : st_err(STETHO_ERR_INVALID, "cannot serialise the study configuration (paths not UTF-8?)");
}
