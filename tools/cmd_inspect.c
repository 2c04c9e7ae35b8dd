/* stetho inspect PATH [--json]: architecture, parameter count, dtypes and every
 * tensor of a checkpoint directory or a single .safetensors file. */
#include "cli.h"
#include "stetho/checkpoint.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

static const char *help =
    "usage: stetho inspect PATH [--json]\n"
    "\n"
    "PATH is a Hugging Face model directory (config.json + model.safetensors or shards\n"
    "with model.safetensors.index.json) or one .safetensors file.\n"
    "Prints the architecture and key config values, the parameter count, dtypes,\n"
    "metadata, and every tensor (name, dtype, shape, shard, layer and module).\n"
    "  --json   the same as one JSON object on stdout\n";

static void fmt_shape(const stetho_tensor *t, char *buf, size_t n) {
    size_t o = 0;
    o += (size_t)snprintf(buf + o, n - o, "[");
    for (int d = 0; d < t->ndim && o < n; d++)
        o += (size_t)snprintf(buf + o, n - o, "%s%llu", d ? ", " : "", (unsigned long long)t->shape[d]);
    if (o < n) snprintf(buf + o, n - o, "]");
}

static void fmt_count(uint64_t n, char *buf, size_t len) {
    if (n >= 1000000000ull) snprintf(buf, len, "%.2f B", n / 1e9);
    else if (n >= 1000000ull) snprintf(buf, len, "%.2f M", n / 1e6);
    else if (n >= 1000ull) snprintf(buf, len, "%.2f K", n / 1e3);
    else snprintf(buf, len, "%llu", (unsigned long long)n);
}

typedef struct {
    uint64_t params, lm_params, vision_params, bytes;
    uint64_t dt_tensors[STETHO_DTYPE_COUNT], dt_bytes[STETHO_DTYPE_COUNT];
} totals;

static void count(const stetho_checkpoint *c, totals *t) {
    memset(t, 0, sizeof *t);
    for (size_t i = 0; i < c->n_tensors; i++) {
        const stetho_tensor *x = c->tensors[i];
        t->params += x->n_elements;
        t->bytes += x->nbytes;
        if (stetho_arch_classify(x->name).module == STETHO_MOD_VISION) t->vision_params += x->n_elements;
        else t->lm_params += x->n_elements;
        t->dt_tensors[x->dtype]++;
        t->dt_bytes[x->dtype] += x->nbytes;
    }
}

static json_t *config_json(const stetho_config *cf) {
    return json_pack("{s:s, s:s, s:s, s:s, s:b, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:f, s:b}",
                     "family", stetho_family_name(cf->family), "model_type", cf->model_type,
                     "architecture", cf->architecture, "torch_dtype", cf->torch_dtype,
                     "multimodal", cf->multimodal, "num_hidden_layers", cf->n_layers,
                     "hidden_size", cf->hidden, "intermediate_size", cf->intermediate,
                     "num_attention_heads", cf->n_heads, "num_key_value_heads", cf->n_kv_heads,
                     "head_dim", cf->head_dim, "vocab_size", cf->vocab,
                     "max_position_embeddings", cf->max_position, "sliding_window", cf->sliding_window,
                     "rope_theta", cf->rope_theta, "rms_norm_eps", cf->rms_eps,
                     "tie_word_embeddings", cf->tie_embeddings);
}

static int print_json(const stetho_checkpoint *c) {
    totals t;
    count(c, &t);
    json_t *root = json_object();
    json_object_set_new(root, "path", json_string(c->path));
    json_object_set_new(root, "format", json_string(c->dir ? "hf-directory" : "safetensors"));
    json_t *shards = json_array();
    for (size_t i = 0; i < c->n_shards; i++) json_array_append_new(shards, json_string(c->shard_names[i]));
    json_object_set_new(root, "shards", shards);
    json_object_set_new(root, "sharded_index", json_boolean(c->has_index));
    json_object_set_new(root, "config", c->has_config ? config_json(&c->config) : json_null());
    json_object_set_new(root, "n_layers", json_integer(stetho_checkpoint_n_layers(c)));
    json_object_set_new(root, "n_tensors", json_integer((json_int_t)c->n_tensors));
    json_object_set_new(root, "n_parameters", json_integer((json_int_t)t.params));
    json_object_set_new(root, "n_parameters_language_model", json_integer((json_int_t)t.lm_params));
    json_object_set_new(root, "n_parameters_vision", json_integer((json_int_t)t.vision_params));
    json_object_set_new(root, "total_bytes", json_integer((json_int_t)t.bytes));
    json_t *dts = json_object();
    for (int d = 0; d < STETHO_DTYPE_COUNT; d++)
        if (t.dt_tensors[d])
            json_object_set_new(dts, stetho_dtype_name((stetho_dtype)d),
                                json_pack("{s:I, s:I}", "tensors", (json_int_t)t.dt_tensors[d], "bytes",
                                          (json_int_t)t.dt_bytes[d]));
    json_object_set_new(root, "dtypes", dts);
    json_t *meta = json_object();
    for (size_t s = 0; s < c->n_shards; s++)
        for (size_t k = 0; k < c->shards[s].n_meta; k++)
            json_object_set_new(meta, c->shards[s].meta[k].key, json_string(c->shards[s].meta[k].value));
    json_object_set_new(root, "metadata", meta);
    json_t *arr = json_array();
    for (size_t i = 0; i < c->n_tensors; i++) {
        const stetho_tensor *x = c->tensors[i];
        stetho_tensor_role r = stetho_arch_classify(x->name);
        json_t *shape = json_array();
        for (int d = 0; d < x->ndim; d++) json_array_append_new(shape, json_integer((json_int_t)x->shape[d]));
        json_t *o = json_pack("{s:s, s:s, s:o, s:s, s:I, s:I, s:i, s:s}", "name", x->name, "dtype",
                              stetho_dtype_name(x->dtype), "shape", shape, "shard", c->shard_names[x->shard],
                              "offset", (json_int_t)x->offset, "nbytes", (json_int_t)x->nbytes, "layer", r.layer,
                              "module", stetho_module_name(r.module));
        json_array_append_new(arr, o);
    }
    json_object_set_new(root, "tensors", arr);
    int rc = json_dumpf(root, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER) == 0 ? 0 : CLI_EXIT_FAIL;
    putchar('\n');
    json_decref(root);
    return rc;
}

static void print_text(const stetho_checkpoint *c) {
    totals t;
    count(c, &t);
    char buf[64];
    printf("path:         %s\n", c->path);
    if (c->dir)
        printf("format:       Hugging Face directory, %zu shard%s%s\n", c->n_shards, c->n_shards == 1 ? "" : "s",
               c->has_index ? " (model.safetensors.index.json)" : "");
    else
        printf("format:       safetensors file\n");
    if (c->has_config) {
        const stetho_config *cf = &c->config;
        printf("architecture: %s (model_type %s%s%s, family %s)\n", cf->architecture[0] ? cf->architecture : "?",
               cf->outer_model_type, cf->multimodal ? ", text model " : "", cf->multimodal ? cf->model_type : "",
               stetho_family_name(cf->family));
        printf("config:       layers %d, hidden %d, intermediate %d, heads %d (kv %d), head_dim %d, vocab %d\n",
               cf->n_layers, cf->hidden, cf->intermediate, cf->n_heads, cf->n_kv_heads, cf->head_dim, cf->vocab);
        printf("              max_position %d, sliding_window %d, rope_theta %g, rms_eps %g, tied embeddings %s, dtype %s\n",
               cf->max_position, cf->sliding_window, cf->rope_theta, cf->rms_eps, cf->tie_embeddings ? "yes" : "no",
               cf->torch_dtype[0] ? cf->torch_dtype : "?");
    } else {
        printf("architecture: (no config.json) %d decoder layers found in tensor names\n", stetho_checkpoint_n_layers(c));
    }
    fmt_count(t.params, buf, sizeof buf);
    printf("parameters:   %s (%llu", buf, (unsigned long long)t.params);
    if (t.vision_params) printf("; language model %llu, vision %llu", (unsigned long long)t.lm_params,
                                (unsigned long long)t.vision_params);
    printf(")\n");
    printf("dtypes:      ");
    for (int d = 0; d < STETHO_DTYPE_COUNT; d++)
        if (t.dt_tensors[d])
            printf(" %s %llu tensors (%.2f MB)", stetho_dtype_name((stetho_dtype)d),
                   (unsigned long long)t.dt_tensors[d], t.dt_bytes[d] / 1e6);
    printf("\n");
    for (size_t s = 0; s < c->n_shards; s++)
        for (size_t k = 0; k < c->shards[s].n_meta; k++) {
            const stetho_kv *kv = &c->shards[s].meta[k];
            const char *first = stetho_st_meta(&c->shards[0], kv->key);
            if (s > 0 && first && !strcmp(first, kv->value)) continue; /* same in every shard */
            if (c->n_shards > 1) printf("metadata:     %s = %s  (%s)\n", kv->key, kv->value, c->shard_names[s]);
            else printf("metadata:     %s = %s\n", kv->key, kv->value);
        }
    printf("tensors:      %zu\n\n", c->n_tensors);
    size_t w = 4;
    for (size_t i = 0; i < c->n_tensors; i++)
        if (strlen(c->tensors[i]->name) > w) w = strlen(c->tensors[i]->name);
    printf("%-*s  %-7s  %-22s  %-6s  %-26s  %s\n", (int)w, "name", "dtype", "shape", "layer", "module", "shard");
    for (size_t i = 0; i < c->n_tensors; i++) {
        const stetho_tensor *x = c->tensors[i];
        stetho_tensor_role r = stetho_arch_classify(x->name);
        char shape[160], layer[16];
        fmt_shape(x, shape, sizeof shape);
        if (r.layer >= 0) snprintf(layer, sizeof layer, "%d", r.layer);
        else snprintf(layer, sizeof layer, "-");
        printf("%-*s  %-7s  %-22s  %-6s  %-26s  %s\n", (int)w, x->name, stetho_dtype_name(x->dtype), shape, layer,
               stetho_module_name(r.module), c->shard_names[x->shard]);
    }
}

int cmd_inspect(int argc, char **argv) {
    const char *path = NULL;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(help, stdout);
            return 0;
        } else if (!strcmp(argv[i], "--json")) {
            json = true;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            return cli_usage("inspect", "unknown option '%s'", argv[i]);
        } else if (!path) {
            path = argv[i];
        } else {
            return cli_usage("inspect", "unexpected argument '%s'", argv[i]);
        }
    }
    if (!path) return cli_usage("inspect", "missing PATH");
    stetho_checkpoint c;
    stetho_status st = stetho_checkpoint_open(&c, path);
    if (st) return cli_fail(st, "PATH must be a Hugging Face model directory or a .safetensors file");
    int rc = 0;
    if (json) rc = print_json(&c);
    else print_text(&c);
    stetho_checkpoint_close(&c);
    return rc;
}
