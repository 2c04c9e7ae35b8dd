/* Model families, config.json parsing and the tensor-name -> (layer, module) table. */
#include "stetho/arch.h"
#include "internal.h"

#include <ctype.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    const char *name, *shortname;
    unsigned group;
} module_info[STETHO_MOD_COUNT] = {
    [STETHO_MOD_ATTN_Q] = {"q_proj", "q", STETHO_GROUP_ATTN},
    [STETHO_MOD_ATTN_K] = {"k_proj", "k", STETHO_GROUP_ATTN},
    [STETHO_MOD_ATTN_V] = {"v_proj", "v", STETHO_GROUP_ATTN},
    [STETHO_MOD_ATTN_O] = {"o_proj", "o", STETHO_GROUP_ATTN},
    [STETHO_MOD_MLP_GATE] = {"gate_proj", "gate", STETHO_GROUP_MLP},
    [STETHO_MOD_MLP_UP] = {"up_proj", "up", STETHO_GROUP_MLP},
    [STETHO_MOD_MLP_DOWN] = {"down_proj", "down", STETHO_GROUP_MLP},
    [STETHO_MOD_NORM_INPUT] = {"input_layernorm", "ln_in", STETHO_GROUP_NORM},
    [STETHO_MOD_NORM_POST_ATTN] = {"post_attention_layernorm", "ln_pattn", STETHO_GROUP_NORM},
    [STETHO_MOD_NORM_PRE_FFN] = {"pre_feedforward_layernorm", "ln_preff", STETHO_GROUP_NORM},
    [STETHO_MOD_NORM_POST_FFN] = {"post_feedforward_layernorm", "ln_postff", STETHO_GROUP_NORM},
    [STETHO_MOD_NORM_Q] = {"q_norm", "q_norm", STETHO_GROUP_NORM},
    [STETHO_MOD_NORM_K] = {"k_norm", "k_norm", STETHO_GROUP_NORM},
    [STETHO_MOD_EMBED] = {"embed_tokens", "embed", STETHO_GROUP_EMBED},
    [STETHO_MOD_LM_HEAD] = {"lm_head", "lm_head", STETHO_GROUP_EMBED},
    [STETHO_MOD_NORM_FINAL] = {"norm", "final_norm", STETHO_GROUP_NORM},
    [STETHO_MOD_VISION] = {"vision", "vision", STETHO_GROUP_VISION},
    [STETHO_MOD_OTHER] = {"other", "other", STETHO_GROUP_OTHER},
};

const char *stetho_module_name(stetho_module m) {
    return (unsigned)m < STETHO_MOD_COUNT ? module_info[m].name : "?";
}
const char *stetho_module_short(stetho_module m) {
    return (unsigned)m < STETHO_MOD_COUNT ? module_info[m].shortname : "?";
}
unsigned stetho_module_group(stetho_module m) {
    return (unsigned)m < STETHO_MOD_COUNT ? module_info[m].group : 0;
}

const char *stetho_group_name(unsigned g) {
    switch (g) {
    case STETHO_GROUP_ATTN: return "attn";
    case STETHO_GROUP_MLP: return "mlp";
    case STETHO_GROUP_NORM: return "norm";
    case STETHO_GROUP_EMBED: return "embed";
    case STETHO_GROUP_OTHER: return "other";
    case STETHO_GROUP_VISION: return "vision";
    default: return "?";
    }
}

static bool starts_with(const char *s, const char *prefix, const char **rest) {
    size_t n = strlen(prefix);
    if (strncmp(s, prefix, n) != 0) return false;
    *rest = s + n;
    return true;
}

stetho_tensor_role stetho_arch_classify(const char *name) {
    stetho_tensor_role r = {-1, STETHO_MOD_OTHER, false};
    static const char *vision_prefixes[] = {
        "vision_tower.", "multi_modal_projector.", "model.vision_tower.",
        "model.multi_modal_projector.", "vision_model.", "model.vision_model.",
    };
    const char *rest;
    for (size_t i = 0; i < ST_ARRAY_LEN(vision_prefixes); i++)
        if (starts_with(name, vision_prefixes[i], &rest)) {
            r.module = STETHO_MOD_VISION;
            return r;
        }
    static const char *prefixes[] = {"model.language_model.", "language_model.model.", "language_model.", "model."};
    const char *s = name;
    for (size_t i = 0; i < ST_ARRAY_LEN(prefixes); i++)
        if (starts_with(name, prefixes[i], &rest)) {
            s = rest;
            break;
        }
    const char *dot = strrchr(s, '.');
    if (!dot) return r;
    r.is_bias = strcmp(dot, ".bias") == 0;
    if (!r.is_bias && strcmp(dot, ".weight") != 0) return r;
    size_t stem_len = (size_t)(dot - s);

    if (starts_with(s, "layers.", &rest) && isdigit((unsigned char)*rest)) {
        char *end;
        long layer = strtol(rest, &end, 10);
        if (*end != '.' || layer > 1000000) return r;
        const char *mod = end + 1;
        size_t mod_len = (size_t)(dot - mod);
        static const struct { const char *suffix; stetho_module m; } layer_mods[] = {
            {"self_attn.q_proj", STETHO_MOD_ATTN_Q},        {"self_attn.k_proj", STETHO_MOD_ATTN_K},
            {"self_attn.v_proj", STETHO_MOD_ATTN_V},        {"self_attn.o_proj", STETHO_MOD_ATTN_O},
            {"self_attn.q_norm", STETHO_MOD_NORM_Q},        {"self_attn.k_norm", STETHO_MOD_NORM_K},
            {"mlp.gate_proj", STETHO_MOD_MLP_GATE},         {"mlp.up_proj", STETHO_MOD_MLP_UP},
            {"mlp.down_proj", STETHO_MOD_MLP_DOWN},         {"input_layernorm", STETHO_MOD_NORM_INPUT},
            {"post_attention_layernorm", STETHO_MOD_NORM_POST_ATTN},
            {"pre_feedforward_layernorm", STETHO_MOD_NORM_PRE_FFN},
            {"post_feedforward_layernorm", STETHO_MOD_NORM_POST_FFN},
        };
        r.layer = (int)layer;
        for (size_t i = 0; i < ST_ARRAY_LEN(layer_mods); i++)
            if (strlen(layer_mods[i].suffix) == mod_len && strncmp(mod, layer_mods[i].suffix, mod_len) == 0) {
                r.module = layer_mods[i].m;
                return r;
            }
        return r; /* a layer tensor we do not know: OTHER, but in its layer */
    }
    static const struct { const char *stem; stetho_module m; } top_mods[] = {
        {"embed_tokens", STETHO_MOD_EMBED}, {"norm", STETHO_MOD_NORM_FINAL}, {"lm_head", STETHO_MOD_LM_HEAD},
    };
    for (size_t i = 0; i < ST_ARRAY_LEN(top_mods); i++)
        if (strlen(top_mods[i].stem) == stem_len && strncmp(s, top_mods[i].stem, stem_len) == 0) {
            r.module = top_mods[i].m;
            return r;
        }
    return r;
}

stetho_status stetho_module_spec_parse(const char *spec, uint32_t *mask) {
    *mask = 0;
    if (!spec || !*spec) return st_err(STETHO_ERR_INVALID, "empty module selection");
    const char *p = spec;
    while (*p) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char item[64];
        if (len == 0 || len >= sizeof item)
            return st_err(STETHO_ERR_INVALID, "bad module selection '%s'", spec);
        memcpy(item, p, len);
        item[len] = '\0';
        unsigned group = 0;
        if (!strcmp(item, "all")) group = STETHO_GROUP_ALL;
        else if (!strcmp(item, "attn")) group = STETHO_GROUP_ATTN;
        else if (!strcmp(item, "mlp")) group = STETHO_GROUP_MLP;
        else if (!strcmp(item, "norm")) group = STETHO_GROUP_NORM;
        else if (!strcmp(item, "embed")) group = STETHO_GROUP_EMBED;
        bool found = group != 0;
        for (int m = 0; m < STETHO_MOD_COUNT; m++) {
            if (group ? (module_info[m].group & group) != 0
                      : (!strcmp(item, module_info[m].name) || !strcmp(item, module_info[m].shortname))) {
                if (m == STETHO_MOD_VISION) continue;
                *mask |= 1u << m;
                found = true;
            }
        }
        if (!found)
            return st_err(STETHO_ERR_INVALID,
                          "unknown module '%s' in '%s' (use attn, mlp, norm, embed, all, or a module such as q_proj, down_proj)",
                          item, spec);
        p += len;
        if (*p == ',') p++;
    }
    return STETHO_OK;
}

const char *stetho_family_name(stetho_family f) {
    switch (f) {
    case STETHO_FAMILY_GEMMA3: return "gemma3";
    case STETHO_FAMILY_GEMMA2: return "gemma2";
    case STETHO_FAMILY_LLAMA: return "llama";
    case STETHO_FAMILY_QWEN2: return "qwen2";
    default: return "unknown";
    }
}

static int get_int(json_t *o, const char *key, int dflt) {
    json_t *v = json_object_get(o, key);
    if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);
        if (i >= 0 && i <= 1000000000) return (int)i;
    }
    return dflt;
}

static double get_num(json_t *o, const char *key, double dflt) {
    json_t *v = json_object_get(o, key);
    return json_is_number(v) ? json_number_value(v) : dflt;
}

static void get_str(json_t *o, const char *key, char *out, size_t n) {
    json_t *v = json_object_get(o, key);
    if (json_is_string(v)) snprintf(out, n, "%s", json_string_value(v));
}

stetho_status stetho_config_parse(stetho_config *c, const char *text, size_t len, const char *label) {
    memset(c, 0, sizeof *c);
    json_error_t jerr;
    json_t *root = json_loadb(text, len, 0, &jerr);
    if (!root)
        return st_err(STETHO_ERR_FORMAT, "%s: invalid JSON (%s, line %d)", label, jerr.text, jerr.line);
    if (!json_is_object(root)) {
        json_decref(root);
        return st_err(STETHO_ERR_FORMAT, "%s: not a JSON object", label);
    }
    get_str(root, "model_type", c->outer_model_type, sizeof c->outer_model_type);
    json_t *arch = json_object_get(root, "architectures");
    if (json_is_array(arch) && json_is_string(json_array_get(arch, 0)))
        snprintf(c->architecture, sizeof c->architecture, "%s", json_string_value(json_array_get(arch, 0)));
    get_str(root, "torch_dtype", c->torch_dtype, sizeof c->torch_dtype);
    if (!c->torch_dtype[0]) get_str(root, "dtype", c->torch_dtype, sizeof c->torch_dtype);
    json_t *text_cfg = json_object_get(root, "text_config");
    json_t *tc = root;
    if (json_is_object(text_cfg)) {
        c->multimodal = true;
        tc = text_cfg;
        if (!c->torch_dtype[0]) get_str(tc, "torch_dtype", c->torch_dtype, sizeof c->torch_dtype);
    }
    get_str(tc, "model_type", c->model_type, sizeof c->model_type);
    if (!c->model_type[0]) snprintf(c->model_type, sizeof c->model_type, "%s", c->outer_model_type);
    const char *mt = c->model_type;
    if (!strcmp(mt, "gemma3_text") || !strcmp(mt, "gemma3")) c->family = STETHO_FAMILY_GEMMA3;
    else if (!strcmp(mt, "gemma2")) c->family = STETHO_FAMILY_GEMMA2;
    else if (!strcmp(mt, "llama") || !strcmp(mt, "mistral")) c->family = STETHO_FAMILY_LLAMA;
    else if (!strcmp(mt, "qwen2")) c->family = STETHO_FAMILY_QWEN2;
    else c->family = STETHO_FAMILY_UNKNOWN;

    c->n_layers = get_int(tc, "num_hidden_layers", 0);
    c->hidden = get_int(tc, "hidden_size", 0);
    c->intermediate = get_int(tc, "intermediate_size", 0);
    c->n_heads = get_int(tc, "num_attention_heads", 0);
    c->n_kv_heads = get_int(tc, "num_key_value_heads", c->n_heads);
    c->head_dim = get_int(tc, "head_dim", c->n_heads ? c->hidden / c->n_heads : 0);
    c->vocab = get_int(tc, "vocab_size", 0);
    c->max_position = get_int(tc, "max_position_embeddings", 0);
    c->sliding_window = get_int(tc, "sliding_window", 0);
    c->rms_eps = get_num(tc, "rms_norm_eps", 1e-6);
    c->rope_theta = get_num(tc, "rope_theta", 10000.0);
    json_t *rp = json_object_get(tc, "rope_parameters");
    if (json_is_object(rp)) {
        /* transformers >= 4.57: per-layer-type or flat rope parameters */
        json_t *full = json_object_get(rp, "full_attention");
        c->rope_theta = get_num(json_is_object(full) ? full : rp, "rope_theta", c->rope_theta);
    }
    json_t *tie = json_object_get(tc, "tie_word_embeddings");
    if (!tie) tie = json_object_get(root, "tie_word_embeddings");
    /* transformers' default is tied; Gemma configs rely on it */
    c->tie_embeddings = tie ? json_is_true(tie) : true;
    json_decref(root);
    return STETHO_OK;
}

stetho_status stetho_layer_spec_parse(const char *spec, int n_layers, bool *sel) {
    for (int i = 0; i < n_layers; i++) sel[i] = false;
    if (!spec || !*spec) return st_err(STETHO_ERR_INVALID, "empty layer selection");
    const char *p = spec;
    while (*p) {
        long a = 0, b = n_layers - 1;
        bool half_open = false;
        char *end;
        const char *item = p;
        if (*p == '-') {
            p++;
            if (!isdigit((unsigned char)*p)) goto bad;
            b = strtol(p, &end, 10);
            p = end;
        } else {
            if (!isdigit((unsigned char)*p)) goto bad;
            a = strtol(p, &end, 10);
            p = end;
            if (*p == '-' || *p == ':') {
                half_open = *p == ':';
                p++;
                if (isdigit((unsigned char)*p)) {
                    b = strtol(p, &end, 10);
                    p = end;
                    if (half_open) b -= 1;
                } else if (half_open) {
                    b = n_layers - 1;
                }
            } else {
                b = a;
            }
        }
        if (*p != ',' && *p != '\0') goto bad;
        if (a > b)
            return st_err(STETHO_ERR_INVALID, "layer range '%.*s' in '%s' is empty", (int)(p - item), item, spec);
        if (b >= n_layers)
            return st_err(STETHO_ERR_INVALID, "layer %ld in '%s' is out of range: the model has %d layers (0-%d)",
                          b, spec, n_layers, n_layers - 1);
        for (long i = a; i <= b; i++) sel[i] = true;
        if (*p == ',') {
            p++;
            if (!*p) goto bad;
        }
    }
    return STETHO_OK;
bad:
    return st_err(STETHO_ERR_INVALID, "bad layer selection '%s' (expected e.g. 3,5,10-12 or 4:8)", spec);
}
