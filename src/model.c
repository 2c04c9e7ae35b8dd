/* The forward pass: config.json -> stetho_model_config, weight views, hook
 * registration, and one forward function over a token sequence that follows
 * Hugging Face transformers' Gemma 3 / Gemma 2 / Llama / Qwen2 modelling code
 * computed in f32. */
#include "stetho/model.h"
#include "stetho/taskvec.h"
#include "internal.h"
#include "kernels.h"

#include <cblas.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

/* ---------------------------------------------------------------- config */

static bool json_num(json_t *o, const char *key, double *out) {
    json_t *v = json_object_get(o, key);
    if (!json_is_number(v)) return false;
    *out = json_number_value(v);
    return true;
}

static bool json_pos_int(json_t *o, const char *key, int *out) {
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v) || json_integer_value(v) <= 0 || json_integer_value(v) > 100000000) return false;
    *out = (int)json_integer_value(v);
    return true;
}

/* Parse an HF rope_scaling / rope_parameters object into r (theta set by caller
 * unless the object carries rope_theta). */
static stetho_status parse_rope(json_t *o, stetho_rope *r, const char *label) {
    if (!json_is_object(o)) return STETHO_OK;
    json_num(o, "rope_theta", &r->theta);
    json_t *ty = json_object_get(o, "rope_type");
    if (!json_is_string(ty)) ty = json_object_get(o, "type");
    const char *t = json_is_string(ty) ? json_string_value(ty) : "default";
    if (!strcmp(t, "default")) {
        r->type = STETHO_ROPE_DEFAULT;
    } else if (!strcmp(t, "linear")) {
        r->type = STETHO_ROPE_LINEAR;
        if (!json_num(o, "factor", &r->factor) || !(r->factor > 0))
            return st_err(STETHO_ERR_FORMAT, "%s: linear rope scaling needs a positive 'factor'", label);
    } else if (!strcmp(t, "llama3")) {
        r->type = STETHO_ROPE_LLAMA3;
        if (!json_num(o, "factor", &r->factor) || !json_num(o, "low_freq_factor", &r->low_freq_factor) ||
            !json_num(o, "high_freq_factor", &r->high_freq_factor) ||
            !json_num(o, "original_max_position_embeddings", &r->original_max_pos) || !(r->factor > 0) ||
            !(r->high_freq_factor > r->low_freq_factor) || !(r->low_freq_factor > 0))
            return st_err(STETHO_ERR_FORMAT,
                          "%s: llama3 rope scaling needs factor, low_freq_factor < high_freq_factor and "
                          "original_max_position_embeddings", label);
    } else {
        return st_err(STETHO_ERR_UNSUPPORTED, "%s: rope type '%s' is not supported (default, linear, llama3)", label, t);
    }
    if (!(r->theta > 0)) return st_err(STETHO_ERR_FORMAT, "%s: rope_theta must be positive", label);
    return STETHO_OK;
}

static stetho_status parse_text_config(stetho_model_config *c, json_t *tc, const char *label) {
    static const char *required[] = {"num_hidden_layers", "hidden_size", "intermediate_size",
                                     "num_attention_heads", "vocab_size"};
    int *dst[] = {&c->n_layers, &c->hidden, &c->intermediate, &c->n_heads, &c->vocab};
    for (size_t i = 0; i < ST_ARRAY_LEN(required); i++)
        if (!json_pos_int(tc, required[i], dst[i]))
            return st_err(STETHO_ERR_FORMAT, "%s: missing or invalid '%s'", label, required[i]);
    if (!json_pos_int(tc, "num_key_value_heads", &c->n_kv_heads)) c->n_kv_heads = c->n_heads;
    if (!json_pos_int(tc, "head_dim", &c->head_dim)) c->head_dim = c->hidden / c->n_heads;
    if (c->head_dim <= 0 || c->head_dim % 2)
        return st_err(STETHO_ERR_FORMAT, "%s: head_dim %d must be positive and even", label, c->head_dim);
    if (c->n_heads % c->n_kv_heads)
        return st_err(STETHO_ERR_FORMAT, "%s: num_attention_heads %d is not a multiple of num_key_value_heads %d",
                      label, c->n_heads, c->n_kv_heads);
    /* absent: the default of the family's transformers config class, so that a
     * context limit always applies (and bounds what a forward allocates) */
    if (!json_pos_int(tc, "max_position_embeddings", &c->max_position))
        c->max_position = c->family == STETHO_FAMILY_GEMMA3   ? 131072
                          : c->family == STETHO_FAMILY_GEMMA2 ? 8192
                          : c->family == STETHO_FAMILY_QWEN2  ? 32768
                                                              : 2048;
    c->rms_eps = 1e-6;
    json_num(tc, "rms_norm_eps", &c->rms_eps);

    bool gemma = c->family == STETHO_FAMILY_GEMMA3 || c->family == STETHO_FAMILY_GEMMA2;
    c->norm_plus_one = c->sandwich_norms = c->scale_embeddings = gemma;
    c->qk_norm = c->family == STETHO_FAMILY_GEMMA3;

    /* activation: Gemma's hidden_activation (HF forces the tanh approximation
     * when only the legacy hidden_act is given), else hidden_act */
    json_t *act = json_object_get(tc, gemma ? "hidden_activation" : "hidden_act");
    const char *an = json_is_string(act) ? json_string_value(act) : gemma ? "gelu_pytorch_tanh" : "silu";
    if (!strcmp(an, "gelu_pytorch_tanh") || !strcmp(an, "gelu_new") || !strcmp(an, "gelu_fast"))
        c->act = STETHO_ACT_GELU_TANH;
    else if (!strcmp(an, "gelu")) c->act = STETHO_ACT_GELU;
    else if (!strcmp(an, "silu") || !strcmp(an, "swish")) c->act = STETHO_ACT_SILU;
    else return st_err(STETHO_ERR_UNSUPPORTED, "%s: activation '%s' is not supported", label, an);

    /* attention scale: Gemma's query_pre_attn_scalar (HF default 256) */
    double qpas = 256;
    if (gemma) json_num(tc, "query_pre_attn_scalar", &qpas);
    else qpas = c->head_dim;
    if (!(qpas > 0)) return st_err(STETHO_ERR_FORMAT, "%s: query_pre_attn_scalar must be positive", label);
    c->attn_scale = 1.0 / sqrt(qpas);
    c->attn_softcap = c->final_softcap = 0;
    if (gemma) {
        json_num(tc, "attn_logit_softcapping", &c->attn_softcap);
        json_num(tc, "final_logit_softcapping", &c->final_softcap);
        if (c->attn_softcap < 0 || c->final_softcap < 0)
            return st_err(STETHO_ERR_FORMAT, "%s: negative logit soft-capping", label);
    }

    /* sliding-window layers: layer_types when given, else each family's rule */
    c->layer_sliding = st_calloc((size_t)c->n_layers, sizeof *c->layer_sliding);
    if (!c->layer_sliding) return STETHO_ERR_NOMEM;
    json_t *sw = json_object_get(tc, "sliding_window");
    c->sliding_window = json_is_integer(sw) && json_integer_value(sw) > 0 && json_integer_value(sw) < 1000000000
                            ? (int)json_integer_value(sw) : 0;
    if (gemma && !sw) c->sliding_window = 4096; /* HF default */
    json_t *lt = json_object_get(tc, "layer_types");
    if (json_is_array(lt)) {
        if ((int)json_array_size(lt) != c->n_layers)
            return st_err(STETHO_ERR_FORMAT, "%s: layer_types has %zu entries for %d layers", label,
                          json_array_size(lt), c->n_layers);
        for (int l = 0; l < c->n_layers; l++) {
            const char *s = json_string_value(json_array_get(lt, (size_t)l));
            if (!s || (strcmp(s, "sliding_attention") && strcmp(s, "full_attention")))
                return st_err(STETHO_ERR_UNSUPPORTED, "%s: layer_types[%d] is not sliding_attention/full_attention",
                              label, l);
            c->layer_sliding[l] = !strcmp(s, "sliding_attention");
        }
    } else if (c->family == STETHO_FAMILY_GEMMA3) {
        int pattern = 6;
        json_pos_int(tc, "sliding_window_pattern", &pattern);
        for (int l = 0; l < c->n_layers; l++) c->layer_sliding[l] = (l + 1) % pattern != 0;
    } else if (c->family == STETHO_FAMILY_GEMMA2) {
        for (int l = 0; l < c->n_layers; l++) c->layer_sliding[l] = l % 2 == 0;
    } else if (c->family == STETHO_FAMILY_QWEN2) {
        json_t *use = json_object_get(tc, "use_sliding_window");
        int mwl = 0;
        json_pos_int(tc, "max_window_layers", &mwl);
        for (int l = 0; l < c->n_layers; l++) c->layer_sliding[l] = json_is_true(use) && l >= mwl;
    } else { /* Llama: none; Mistral: every layer when sliding_window is set */
        for (int l = 0; l < c->n_layers; l++) c->layer_sliding[l] = c->sliding_window > 0;
    }
    bool any_sliding = false;
    for (int l = 0; l < c->n_layers; l++) any_sliding |= c->layer_sliding[l];
    if (any_sliding && c->sliding_window <= 0)
        return st_err(STETHO_ERR_FORMAT, "%s: sliding-window layers but no positive 'sliding_window'", label);

    /* RoPE: Gemma 3 uses rope_local_base_freq (no scaling) on sliding layers and
     * rope_theta + rope_scaling on global ones; the others one setting for all */
    stetho_rope g = {.theta = c->family == STETHO_FAMILY_GEMMA3 ? 1e6 : 10000.0, .type = STETHO_ROPE_DEFAULT};
    json_num(tc, "rope_theta", &g.theta);
    stetho_rope loc = g;
    stetho_status st;
    json_t *rp = json_object_get(tc, "rope_parameters");
    if (json_is_object(rp)) { /* transformers >= 4.57 */
        json_t *full = json_object_get(rp, "full_attention"), *slide = json_object_get(rp, "sliding_attention");
        if (json_is_object(full) || json_is_object(slide)) {
            if ((st = parse_rope(full, &g, label))) return st;
            loc = g;
            loc.type = STETHO_ROPE_DEFAULT;
            if (c->family == STETHO_FAMILY_GEMMA3) json_num(tc, "rope_local_base_freq", &loc.theta);
            if (json_is_object(slide)) {
                loc.type = STETHO_ROPE_DEFAULT;
                if ((st = parse_rope(slide, &loc, label))) return st;
            } else if (c->family != STETHO_FAMILY_GEMMA3) {
                loc = g;
            }
        } else {
            if ((st = parse_rope(rp, &g, label))) return st;
            loc = g;
            if (c->family == STETHO_FAMILY_GEMMA3) {
                loc.type = STETHO_ROPE_DEFAULT;
                loc.theta = 10000.0;
                json_num(tc, "rope_local_base_freq", &loc.theta);
            }
        }
    } else {
        if ((st = parse_rope(json_object_get(tc, "rope_scaling"), &g, label))) return st;
        loc = g;
        if (c->family == STETHO_FAMILY_GEMMA3) {
            loc.type = STETHO_ROPE_DEFAULT;
            loc.theta = 10000.0;
            json_num(tc, "rope_local_base_freq", &loc.theta);
        }
    }
    if (!(g.theta > 0) || !(loc.theta > 0)) return st_err(STETHO_ERR_FORMAT, "%s: rope_theta must be positive", label);
    c->rope_global = g;
    c->rope_local = loc;
    return STETHO_OK;
}

stetho_status stetho_model_config_parse(stetho_model_config *c, const char *json, size_t len, const char *label) {
    memset(c, 0, sizeof *c);
    stetho_config base;
    stetho_status st = stetho_config_parse(&base, json, len, label);
    if (st) return st;
    if (base.family == STETHO_FAMILY_UNKNOWN)
        return st_err(STETHO_ERR_UNSUPPORTED,
                      "%s: model_type '%s' is not supported by the inference engine (gemma3, gemma3_text, gemma2, "
                      "llama, mistral, qwen2)", label, base.model_type[0] ? base.model_type : "(none)");
    c->family = base.family;
    json_t *root = json_loadb(json, len, 0, NULL);
    if (!root) return st_err(STETHO_ERR_FORMAT, "%s: invalid JSON", label);
    json_t *tc = json_object_get(root, "text_config");
    if (!json_is_object(tc)) tc = root;
    st = parse_text_config(c, tc, label);
    json_decref(root);
    if (st) stetho_model_config_free(c);
    return st;
}

void stetho_model_config_free(stetho_model_config *c) {
    st_free(c->layer_sliding);
    c->layer_sliding = NULL;
}

/* ---------------------------------------------------------------- loading */

typedef struct {
    stetho_model *m;
    const char *prefix; /* "model.", "language_model.model.", "model.language_model." */
    size_t vec_used, vec_cap;
} loader;

static stetho_status find_tensor(loader *ld, const char *name, int layer, bool optional, const stetho_tensor **out) {
    char full[256];
    if (layer >= 0) snprintf(full, sizeof full, "%slayers.%d.%s", ld->prefix, layer, name);
    else snprintf(full, sizeof full, "%s%s", ld->prefix, name);
    const stetho_tensor *t = stetho_checkpoint_find(&ld->m->ckpt, full);
    *out = t;
    if (!t) {
        if (optional) return STETHO_OK;
        return st_err(STETHO_ERR_NOTFOUND, "%s: tensor '%s' is missing", ld->m->ckpt.path, full);
    }
    if (t->dtype != STETHO_DTYPE_F32 && t->dtype != STETHO_DTYPE_BF16 && t->dtype != STETHO_DTYPE_F16)
        return st_err(STETHO_ERR_UNSUPPORTED, "%s: tensor '%s' has dtype %s (need F32, BF16 or F16)",
                      ld->m->ckpt.path, full, stetho_dtype_name(t->dtype));
    return STETHO_OK;
}

static stetho_status check_shape(const stetho_model *m, const stetho_tensor *t, uint64_t a, uint64_t b) {
    bool ok = b ? (t->ndim == 2 && t->shape[0] == a && t->shape[1] == b) : (t->ndim == 1 && t->shape[0] == a);
    if (ok) return STETHO_OK;
    char got[64] = "";
    for (int i = 0; i < t->ndim && i < 4; i++)
        snprintf(got + strlen(got), sizeof got - strlen(got), "%s%llu", i ? ", " : "", (unsigned long long)t->shape[i]);
    if (b)
        return st_err(STETHO_ERR_FORMAT, "%s: tensor '%s' has shape [%s], expected [%llu, %llu]", m->ckpt.path,
                      t->name, got, (unsigned long long)a, (unsigned long long)b);
    return st_err(STETHO_ERR_FORMAT, "%s: tensor '%s' has shape [%s], expected [%llu]", m->ckpt.path, t->name, got,
                  (unsigned long long)a);
}

static stetho_status matrix(loader *ld, const char *name, int layer, uint64_t rows, uint64_t cols,
                            const stetho_tensor **out) {
    stetho_status st = find_tensor(ld, name, layer, false, out);
    return st ? st : check_shape(ld->m, *out, rows, cols);
}

/* A vector (norm weight or bias) as f32 in the model's vector storage;
 * plus_one folds Gemma's (1 + w). NULL in *out when optional and absent. */
static stetho_status vector(loader *ld, const char *name, int layer, uint64_t n, bool optional, bool plus_one,
                            const float **out) {
    const stetho_tensor *t;
    *out = NULL;
    stetho_status st = find_tensor(ld, name, layer, optional, &t);
    if (st || !t) return st;
    if ((st = check_shape(ld->m, t, n, 0))) return st;
    if (ld->vec_used + n > ld->vec_cap) return st_err(STETHO_ERR_FORMAT, "%s: too many vectors", ld->m->ckpt.path);
    float *v = ld->m->vectors + ld->vec_used;
    ld->vec_used += n;
    if ((st = stetho_convert_to_f32(v, t->data, t->dtype, n))) return st;
    if (plus_one)
        for (uint64_t i = 0; i < n; i++) v[i] = 1.0f + v[i]; /* HF: 1.0 + weight.float(), in f32 */
    *out = v;
    return STETHO_OK;
}

static stetho_status load_weights(stetho_model *m) {
    stetho_model_config *c = &m->cfg;
    loader ld = {.m = m};
    static const char *prefixes[] = {"model.", "language_model.model.", "model.language_model."};
    for (size_t i = 0; i < ST_ARRAY_LEN(prefixes) && !ld.prefix; i++) {
        char name[96];
        snprintf(name, sizeof name, "%sembed_tokens.weight", prefixes[i]);
        if (stetho_checkpoint_find(&m->ckpt, name)) ld.prefix = prefixes[i];
    }
    if (!ld.prefix)
        return st_err(STETHO_ERR_NOTFOUND, "%s: no embed_tokens.weight under model., language_model.model. or "
                      "model.language_model.", m->ckpt.path);
    uint64_t H = (uint64_t)c->hidden, FF = (uint64_t)c->intermediate, hd = (uint64_t)c->head_dim;
    uint64_t Q = (uint64_t)c->n_heads * hd, KV = (uint64_t)c->n_kv_heads * hd;
    stetho_status st;
    if ((st = matrix(&ld, "embed_tokens.weight", -1, (uint64_t)c->vocab, H, &m->embed))) return st;
    /* untied lm_head when the checkpoint has one (whatever the config says) */
    static const char *heads[] = {"lm_head.weight", "language_model.lm_head.weight", "model.lm_head.weight"};
    m->lm_head = NULL;
    for (size_t i = 0; i < ST_ARRAY_LEN(heads) && !m->lm_head; i++)
        m->lm_head = stetho_checkpoint_find(&m->ckpt, heads[i]);
    if (m->lm_head) {
        if (m->lm_head->dtype != STETHO_DTYPE_F32 && m->lm_head->dtype != STETHO_DTYPE_BF16 &&
            m->lm_head->dtype != STETHO_DTYPE_F16)
            return st_err(STETHO_ERR_UNSUPPORTED, "%s: lm_head has dtype %s", m->ckpt.path,
                          stetho_dtype_name(m->lm_head->dtype));
        if ((st = check_shape(m, m->lm_head, (uint64_t)c->vocab, H))) return st;
    } else {
        m->lm_head = m->embed;
    }
    /* every vector: 4 norms of H + 2 of hd + biases (Q + 2 KV + H) per layer, final norm */
    uint64_t per_layer = 5 * H + 2 * hd + Q + 2 * KV, total;
    if (!st_mul_u64(per_layer, (uint64_t)c->n_layers, &total) || !st_add_u64(total, H, &total) || total > (1ull << 34))
        return st_err(STETHO_ERR_NOMEM, "%s: model too large", m->ckpt.path);
    m->vectors = st_malloc((size_t)total * sizeof(float));
    m->layers = st_calloc((size_t)c->n_layers, sizeof *m->layers);
    if (!m->vectors || !m->layers) return STETHO_ERR_NOMEM;
    ld.vec_cap = (size_t)total;
    bool p1 = c->norm_plus_one;
    for (int l = 0; l < c->n_layers; l++) {
        stetho_layer_weights *w = &m->layers[l];
        if ((st = matrix(&ld, "self_attn.q_proj.weight", l, Q, H, &w->wq)) ||
            (st = matrix(&ld, "self_attn.k_proj.weight", l, KV, H, &w->wk)) ||
            (st = matrix(&ld, "self_attn.v_proj.weight", l, KV, H, &w->wv)) ||
            (st = matrix(&ld, "self_attn.o_proj.weight", l, H, Q, &w->wo)) ||
            (st = matrix(&ld, "mlp.gate_proj.weight", l, FF, H, &w->w_gate)) ||
            (st = matrix(&ld, "mlp.up_proj.weight", l, FF, H, &w->w_up)) ||
            (st = matrix(&ld, "mlp.down_proj.weight", l, H, FF, &w->w_down)) ||
            (st = vector(&ld, "self_attn.q_proj.bias", l, Q, true, false, &w->bq)) ||
            (st = vector(&ld, "self_attn.k_proj.bias", l, KV, true, false, &w->bk)) ||
            (st = vector(&ld, "self_attn.v_proj.bias", l, KV, true, false, &w->bv)) ||
            (st = vector(&ld, "self_attn.o_proj.bias", l, H, true, false, &w->bo)) ||
            (st = vector(&ld, "input_layernorm.weight", l, H, false, p1, &w->ln_in)) ||
            (st = vector(&ld, "post_attention_layernorm.weight", l, H, false, p1, &w->ln_post_attn)) ||
            (st = vector(&ld, "pre_feedforward_layernorm.weight", l, H, !c->sandwich_norms, p1, &w->ln_pre_ffn)) ||
            (st = vector(&ld, "post_feedforward_layernorm.weight", l, H, !c->sandwich_norms, p1, &w->ln_post_ffn)) ||
            (st = vector(&ld, "self_attn.q_norm.weight", l, hd, !c->qk_norm, p1, &w->q_norm)) ||
            (st = vector(&ld, "self_attn.k_norm.weight", l, hd, !c->qk_norm, p1, &w->k_norm)))
            return st;
        if (!c->qk_norm) w->q_norm = w->k_norm = NULL;
        if (!c->sandwich_norms) w->ln_pre_ffn = w->ln_post_ffn = NULL;
        if (c->family == STETHO_FAMILY_QWEN2 && !(w->bq && w->bk && w->bv))
            return st_err(STETHO_ERR_NOTFOUND, "%s: layer %d lacks the q/k/v biases Qwen2 needs", m->ckpt.path, l);
    }
    return vector(&ld, "norm.weight", -1, H, false, p1, &m->final_norm);
}

typedef struct {
    const stetho_checkpoint *delta;
    bool is_ft;
    const stetho_selection *sel;
    const stetho_edit_opts *opts;
} model_edit;

static stetho_status model_load(stetho_model *m, const char *path, const model_edit *e) {
    memset(m, 0, sizeof *m);
    stetho_status st = stetho_checkpoint_open(&m->ckpt, path);
    if (st) {
        memset(m, 0, sizeof *m);
        return st;
    }
    /* before the weights are bound: the norm vectors are copied from the edited values */
    if (e && (st = stetho_taskvec_edit_in_memory(&m->ckpt, e->delta, e->is_ft, e->sel, e->opts))) goto fail;
    if (!m->ckpt.config_json) {
        st = st_err(STETHO_ERR_NOTFOUND, "%s: no config.json (the engine needs the model's configuration)", path);
        goto fail;
    }
    char label[512];
    snprintf(label, sizeof label, "%s/config.json", m->ckpt.dir ? m->ckpt.dir : path);
    if ((st = stetho_model_config_parse(&m->cfg, m->ckpt.config_json, m->ckpt.config_json_len, label))) goto fail;
    if ((st = load_weights(m))) goto fail;
    return STETHO_OK;
fail:
    stetho_model_free(m);
    return st;
}

stetho_status stetho_model_load(stetho_model *m, const char *path) { return model_load(m, path, NULL); }

stetho_status stetho_model_load_edit(stetho_model *m, const char *path, const stetho_checkpoint *delta, bool is_finetuned,
                                     const stetho_selection *sel, const stetho_edit_opts *opts) {
    model_edit e = {delta, is_finetuned, sel, opts};
    return model_load(m, path, &e);
}

void stetho_model_free(stetho_model *m) {
    if (m->ckpt.path || m->ckpt.n_shards) stetho_checkpoint_close(&m->ckpt);
    stetho_model_config_free(&m->cfg);
    st_free(m->layers);
    st_free(m->vectors);
    memset(m, 0, sizeof *m);
}

/* ---------------------------------------------------------------- hooks */

static const char *hook_names[STETHO_HOOK_KIND_COUNT] = {"hook_resid_pre", "hook_attn_out", "hook_mlp_out",
                                                          "hook_resid_post"};

const char *stetho_hook_kind_name(stetho_hook_kind k) {
    return (unsigned)k < STETHO_HOOK_KIND_COUNT ? hook_names[k] : "?";
}

void stetho_hooks_init(stetho_hooks *h) { memset(h, 0, sizeof *h); }

void stetho_hooks_free(stetho_hooks *h) {
    st_free(h->regs);
    memset(h, 0, sizeof *h);
}

stetho_status stetho_hook_parse(const char *name, int *layer, stetho_hook_kind *kind) {
    const char *p = name;
    if (strncmp(p, "blocks.", 7) != 0) goto bad;
    p += 7;
    if (*p == '*') {
        *layer = -1;
        p++;
    } else {
        if (*p < '0' || *p > '9') goto bad;
        long l = 0;
        while (*p >= '0' && *p <= '9') {
            l = l * 10 + (*p++ - '0');
            if (l > 1000000) goto bad;
        }
        *layer = (int)l;
    }
    if (*p++ != '.') goto bad;
    for (int k = 0; k < STETHO_HOOK_KIND_COUNT; k++)
        if (!strcmp(p, hook_names[k])) {
            *kind = (stetho_hook_kind)k;
            return STETHO_OK;
        }
bad:
    return st_err(STETHO_ERR_INVALID,
                  "unknown hook '%s' (expected blocks.L.hook_resid_pre, hook_attn_out, hook_mlp_out or "
                  "hook_resid_post; L may be *)", name);
}

static stetho_status add_reg(stetho_hooks *h, stetho_hook_reg reg) {
    if ((!reg.fn && !reg.edit) || (unsigned)reg.kind >= STETHO_HOOK_KIND_COUNT || reg.layer < -1)
        return st_err(STETHO_ERR_INVALID, "bad hook registration");
    if (h->n == h->cap) {
        size_t cap = h->cap ? 2 * h->cap : 8;
        stetho_hook_reg *r = st_realloc(h->regs, cap * sizeof *r);
        if (!r) return STETHO_ERR_NOMEM;
        h->regs = r;
        h->cap = cap;
    }
    h->regs[h->n++] = reg;
    return STETHO_OK;
}

stetho_status stetho_hooks_add_at(stetho_hooks *h, int layer, stetho_hook_kind kind, stetho_hook_fn fn, void *user) {
    return add_reg(h, (stetho_hook_reg){layer, kind, fn, NULL, user});
}

stetho_status stetho_hooks_add(stetho_hooks *h, const char *name, stetho_hook_fn fn, void *user) {
    int layer = 0;
    stetho_hook_kind kind = STETHO_HOOK_RESID_PRE;
    stetho_status st = stetho_hook_parse(name, &layer, &kind);
    return st ? st : add_reg(h, (stetho_hook_reg){layer, kind, fn, NULL, user});
}

stetho_status stetho_hooks_add_edit(stetho_hooks *h, const char *name, stetho_hook_edit_fn fn, void *user) {
    int layer = 0;
    stetho_hook_kind kind = STETHO_HOOK_RESID_PRE;
    stetho_status st = stetho_hook_parse(name, &layer, &kind);
    return st ? st : add_reg(h, (stetho_hook_reg){layer, kind, NULL, fn, user});
}

static stetho_status run_hooks(const stetho_hooks *h, int layer, stetho_hook_kind kind, float *data, int T, int D) {
    if (!h) return STETHO_OK;
    for (size_t i = 0; i < h->n; i++) {
        const stetho_hook_reg *r = &h->regs[i];
        if (r->kind != kind || (r->layer != -1 && r->layer != layer)) continue;
        /* the forward pins BLAS to one thread (its matmuls split the work
         * themselves); a consumer (an SAE encoder) gets every thread back */
        openblas_set_num_threads(stetho_get_threads());
        stetho_status st = r->edit ? r->edit(r->user, layer, kind, data, T, D) : r->fn(r->user, layer, kind, data, T, D);
        openblas_set_num_threads(1);
        if (st) return st;
    }
    return STETHO_OK;
}

/* ---------------------------------------------------------------- forward */

/* Activation buffers for one forward call over T tokens. */
typedef struct {
    float *x;       // [T, D] residual stream
    float *xn;      // [T, D] normed input of a block
    float *q;       // [T, nh*hd]
    float *k;       // [T, nkv*hd]
    float *v;       // [T, nkv*hd]
    float *att;     // [T, nh*hd] attention output before o_proj
    float *out;     // [T, D] block output (attn_out / mlp_out)
    float *gate;    // [T, intermediate]
    float *up;      // [T, intermediate]
    float *wbuf;    // [matmul scratch] weight rows converted to f32
    stetho_compute compute; // the mode at allocation: wbuf is sized for it
    float *scores;  // [QBLOCK, T] attention scores
    float *cos_g, *sin_g; // [T, hd/2] RoPE tables, global layers
    float *cos_l, *sin_l; // [T, hd/2] RoPE tables, sliding layers
    /* decoding with a KV cache (all NULL for a plain forward) */
    stetho_kv_cache *kv;
    int kv_seq;           // prefill: the sequence being filled
    const int *kv_seqs;   // decode: [T] sequence of each row
    const int *pos;       // decode: [T] position of each row
    const float **kc, **vc; // decode: [T] cache rows of each query's sequence
    int *n_keys;          // decode: [T]
    float *dscores;       // decode: [T, nh, max cache slots]
} run_state;

/* Slot of position p in layer l's cache (a ring on sliding layers). */
static size_t kv_slot(const stetho_kv_cache *c, int l, int seq, int p) {
    return ((size_t)seq * (size_t)c->cap[l] + (size_t)(p % c->cap[l])) * (size_t)c->kv_dim;
}

/* A prompt's keys/values at positions 0..T-1; a ring keeps the last cap. */
static void kv_store_prompt(stetho_kv_cache *c, int l, int seq, const float *k, const float *v, int T) {
    int first = T > c->cap[l] ? T - c->cap[l] : 0;
    size_t row = (size_t)c->kv_dim * sizeof(float);
    for (int p = first; p < T; p++) {
        memcpy(c->k[l] + kv_slot(c, l, seq, p), k + (size_t)p * c->kv_dim, row);
        memcpy(c->v[l] + kv_slot(c, l, seq, p), v + (size_t)p * c->kv_dim, row);
    }
}

static void kv_store_rows(stetho_kv_cache *c, int l, const int *seqs, const int *pos, const float *k, const float *v,
                          int T) {
    size_t row = (size_t)c->kv_dim * sizeof(float);
    for (int t = 0; t < T; t++) {
        memcpy(c->k[l] + kv_slot(c, l, seqs[t], pos[t]), k + (size_t)t * c->kv_dim, row);
        memcpy(c->v[l] + kv_slot(c, l, seqs[t], pos[t]), v + (size_t)t * c->kv_dim, row);
    }
}

/* Each decoding query attends over everything its sequence has cached: the
 * whole prefix, or the window's ring (exactly the keys p-w+1..p) on sliding
 * layers. */
static void kv_attend_rows(run_state *s, const stetho_model_config *c, int l, int T) {
    stetho_kv_cache *kv = s->kv;
    int maxk = 0;
    for (int t = 0; t < T; t++) {
        int n = s->pos[t] + 1 < kv->cap[l] ? s->pos[t] + 1 : kv->cap[l];
        s->kc[t] = kv->k[l] + (size_t)s->kv_seqs[t] * (size_t)kv->cap[l] * (size_t)kv->kv_dim;
        s->vc[t] = kv->v[l] + (size_t)s->kv_seqs[t] * (size_t)kv->cap[l] * (size_t)kv->kv_dim;
        s->n_keys[t] = n;
        if (n > maxk) maxk = n;
    }
    st_attention_cached(s->att, s->q, T, s->kc, s->vc, s->n_keys, c->n_heads, c->n_kv_heads, c->head_dim,
                        c->attn_scale, c->attn_softcap, maxk, s->dscores);
}

static void run_state_free(run_state *s) {
    float **all[] = {&s->x, &s->xn, &s->q, &s->k, &s->v, &s->att, &s->out, &s->gate, &s->up, &s->wbuf,
                     &s->scores, &s->cos_g, &s->sin_g, &s->cos_l, &s->sin_l};
    for (size_t i = 0; i < ST_ARRAY_LEN(all); i++) {
        st_free(*all[i]);
        *all[i] = NULL;
    }
    st_free(s->kc);
    st_free(s->vc);
    st_free(s->n_keys);
    st_free(s->dscores);
    s->kc = s->vc = NULL;
    s->n_keys = NULL;
    s->dscores = NULL;
}

static stetho_status run_state_alloc(run_state *s, const stetho_model_config *c, size_t T) {
    memset(s, 0, sizeof *s);
    bool ok = true;
    size_t D = (size_t)c->hidden, hd = (size_t)c->head_dim, Q = (size_t)c->n_heads * hd;
    size_t KV = (size_t)c->n_kv_heads * hd, FF = (size_t)c->intermediate;
    size_t kmax = D > Q ? D : Q;
    if (FF > kmax) kmax = FF;
    s->x = st_alloc_floats(T, D, &ok);
    s->xn = st_alloc_floats(T, D, &ok);
    s->q = st_alloc_floats(T, Q, &ok);
    s->k = st_alloc_floats(T, KV, &ok);
    s->v = st_alloc_floats(T, KV, &ok);
    s->att = st_alloc_floats(T, Q, &ok);
    s->out = st_alloc_floats(T, D, &ok);
    s->gate = st_alloc_floats(T, FF, &ok);
    s->up = st_alloc_floats(T, FF, &ok);
    s->compute = stetho_get_compute();
    s->wbuf = st_alloc_floats(st_matmul_scratch_elems((int)kmax, (int)T, s->compute), 1, &ok);
    s->scores = st_alloc_floats(st_attention_scratch_elems((int)T), 1, &ok);
    s->cos_g = st_alloc_floats(T, hd / 2, &ok);
    s->sin_g = st_alloc_floats(T, hd / 2, &ok);
    s->cos_l = st_alloc_floats(T, hd / 2, &ok);
    s->sin_l = st_alloc_floats(T, hd / 2, &ok);
    if (!ok) {
        run_state_free(s);
        return st_err(STETHO_ERR_NOMEM, "out of memory for activations of %zu tokens", T);
    }
    return STETHO_OK;
}

static void add_inplace(float *x, const float *y, size_t n) {
    #pragma omp parallel for schedule(static)
    for (long i = 0; i < (long)n; i++) x[i] += y[i];
}

/* One decoder layer on s->x (in place), calling the layer's hooks. */
static stetho_status layer_forward(const stetho_model *m, int l, run_state *s, int T, const stetho_hooks *hooks) {
    const stetho_model_config *c = &m->cfg;
    const stetho_layer_weights *w = &m->layers[l];
    int D = c->hidden, hd = c->head_dim, nh = c->n_heads, nkv = c->n_kv_heads, Q = nh * hd, KV = nkv * hd;
    int FF = c->intermediate;
    size_t TD = (size_t)T * (size_t)D;
    stetho_status st;
    if ((st = run_hooks(hooks, l, STETHO_HOOK_RESID_PRE, s->x, T, D))) return st;

    /* attention block */
    st_rmsnorm(s->xn, s->x, w->ln_in, T, D, c->rms_eps);
    if ((st = st_matmul_wt(s->q, Q, s->xn, T, D, w->wq, w->bq, s->wbuf, s->compute)) ||
        (st = st_matmul_wt(s->k, KV, s->xn, T, D, w->wk, w->bk, s->wbuf, s->compute)) ||
        (st = st_matmul_wt(s->v, KV, s->xn, T, D, w->wv, w->bv, s->wbuf, s->compute)))
        return st;
    if (w->q_norm) { /* Gemma 3 QK-norm: per head, before RoPE */
        st_rmsnorm(s->q, s->q, w->q_norm, T * nh, hd, c->rms_eps);
        st_rmsnorm(s->k, s->k, w->k_norm, T * nkv, hd, c->rms_eps);
    }
    bool sliding = c->layer_sliding[l];
    const float *cs = sliding ? s->cos_l : s->cos_g, *sn = sliding ? s->sin_l : s->sin_g;
    st_rope(s->q, T, nh, hd, cs, sn);
    st_rope(s->k, T, nkv, hd, cs, sn);
    if (s->kv && s->kv_seqs) {
        kv_store_rows(s->kv, l, s->kv_seqs, s->pos, s->k, s->v, T);
        kv_attend_rows(s, c, l, T);
    } else {
        st_attention(s->att, s->q, s->k, s->v, T, nh, nkv, hd, c->attn_scale, c->attn_softcap,
                     sliding ? c->sliding_window : 0, s->scores);
        if (s->kv) kv_store_prompt(s->kv, l, s->kv_seq, s->k, s->v, T);
    }
    if ((st = st_matmul_wt(s->out, D, s->att, T, Q, w->wo, w->bo, s->wbuf, s->compute))) return st;
    if (c->sandwich_norms) st_rmsnorm(s->out, s->out, w->ln_post_attn, T, D, c->rms_eps);
    if ((st = run_hooks(hooks, l, STETHO_HOOK_ATTN_OUT, s->out, T, D))) return st;
    add_inplace(s->x, s->out, TD);

    /* MLP block */
    st_rmsnorm(s->xn, s->x, c->sandwich_norms ? w->ln_pre_ffn : w->ln_post_attn, T, D, c->rms_eps);
    if ((st = st_matmul_wt(s->gate, FF, s->xn, T, D, w->w_gate, NULL, s->wbuf, s->compute)) ||
        (st = st_matmul_wt(s->up, FF, s->xn, T, D, w->w_up, NULL, s->wbuf, s->compute)))
        return st;
    st_gated_act(s->gate, s->up, (size_t)T * (size_t)FF, c->act);
    if ((st = st_matmul_wt(s->out, D, s->gate, T, FF, w->w_down, NULL, s->wbuf, s->compute))) return st;
    if (c->sandwich_norms) st_rmsnorm(s->out, s->out, w->ln_post_ffn, T, D, c->rms_eps);
    if ((st = run_hooks(hooks, l, STETHO_HOOK_MLP_OUT, s->out, T, D))) return st;
    add_inplace(s->x, s->out, TD);
    return run_hooks(hooks, l, STETHO_HOOK_RESID_POST, s->x, T, D);
}

/* Check ids and hook layers; *last = the last layer that has to run. */
static stetho_status check_inputs(const stetho_model *m, const int32_t *tokens, int n_tokens, bool need_all,
                                  const stetho_hooks *hooks, int *last) {
    const stetho_model_config *c = &m->cfg;
    for (int t = 0; t < n_tokens; t++)
        if (tokens[t] < 0 || tokens[t] >= c->vocab)
            return st_err(STETHO_ERR_INVALID, "forward: token id %d at position %d is outside the vocabulary (0-%d)",
                          (int)tokens[t], t, c->vocab - 1);
    for (size_t i = 0; hooks && i < hooks->n; i++)
        if (hooks->regs[i].layer >= c->n_layers)
            return st_err(STETHO_ERR_INVALID, "hook on layer %d but the model has %d layers (0-%d)",
                          hooks->regs[i].layer, c->n_layers, c->n_layers - 1);
    *last = c->n_layers - 1;
    if (!need_all) { /* without logits, stop after the last layer a consumer wants */
        *last = -1;
        for (size_t i = 0; hooks && i < hooks->n; i++) {
            int l = hooks->regs[i].layer < 0 ? c->n_layers - 1 : hooks->regs[i].layer;
            if (l > *last) *last = l;
        }
    }
    return STETHO_OK;
}

static stetho_status forward_rows_pinned(stetho_model *m, run_state *s, const int32_t *tokens, int T, int last,
                                         float *logits, int logits_from, const stetho_hooks *hooks);

/* OpenBLAS runs single-threaded inside the forward: kernels.c splits each
 * product over the OpenMP team itself (one thread pool, see there). */
static stetho_status forward_rows(stetho_model *m, run_state *s, const int32_t *tokens, int T, int last,
                                  float *logits, int logits_from, const stetho_hooks *hooks) {
    openblas_set_num_threads(1);
    stetho_status st = forward_rows_pinned(m, s, tokens, T, last, logits, logits_from, hooks);
    openblas_set_num_threads(stetho_get_threads());
    return st;
}

/* The forward pass over T rows already set up in s (RoPE tables, KV context):
 * embeddings, layers 0..last, and logits [T - logits_from, vocab] of rows
 * logits_from..T-1 when logits is not NULL. */
static stetho_status forward_rows_pinned(stetho_model *m, run_state *s, const int32_t *tokens, int T, int last,
                                         float *logits, int logits_from, const stetho_hooks *hooks) {
    const stetho_model_config *c = &m->cfg;
    int D = c->hidden;

    /* embeddings (Gemma: * sqrt(hidden), exact in f32 compute) */
    size_t esz = stetho_dtype_bits(m->embed->dtype) / 8;
    double escale = c->scale_embeddings ? sqrt((double)D) : 1.0;
    #pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++) {
        float *row = s->x + (size_t)t * D;
        (void)stetho_convert_to_f32(row, (const uint8_t *)m->embed->data + (size_t)tokens[t] * D * esz,
                                    m->embed->dtype, (size_t)D);
        if (c->scale_embeddings)
            for (int i = 0; i < D; i++) row[i] = (float)(row[i] * escale);
    }

    stetho_status st = STETHO_OK;
    for (int l = 0; l <= last && !st; l++) st = layer_forward(m, l, s, T, hooks);

    if (!st && logits) {
        int R = T - logits_from;
        const float *xr = s->x + (size_t)logits_from * D;
        st_rmsnorm(s->xn, xr, m->final_norm, R, D, c->rms_eps);
        st = st_matmul_wt(logits, c->vocab, s->xn, R, D, m->lm_head, NULL, s->wbuf, s->compute);
        if (!st && c->final_softcap > 0) {
            double cap = c->final_softcap;
            size_t n = (size_t)R * (size_t)c->vocab;
            #pragma omp parallel for schedule(static)
            for (long i = 0; i < (long)n; i++) logits[i] = (float)(tanh(logits[i] / cap) * cap);
        }
    }
    return st;
}

static stetho_status check_length(const stetho_model_config *c, int n_tokens) {
    if (n_tokens <= 0) return st_err(STETHO_ERR_INVALID, "forward: no tokens");
    if (c->max_position > 0 && n_tokens > c->max_position)
        return st_err(STETHO_ERR_INVALID, "forward: %d tokens exceed the model's context of %d (max_position_embeddings)",
                      n_tokens, c->max_position);
    return STETHO_OK;
}

stetho_status stetho_model_forward(stetho_model *m, const int32_t *tokens, int n_tokens, float *logits,
                                   const stetho_hooks *hooks) {
    const stetho_model_config *c = &m->cfg;
    int last;
    stetho_status st = check_length(c, n_tokens);
    if (st || (st = check_inputs(m, tokens, n_tokens, logits != NULL, hooks, &last))) return st;
    if (last < 0) return STETHO_OK;
    run_state s;
    if ((st = run_state_alloc(&s, c, (size_t)n_tokens))) return st;
    st_rope_tables(s.cos_g, s.sin_g, NULL, n_tokens, c->head_dim, &c->rope_global);
    st_rope_tables(s.cos_l, s.sin_l, NULL, n_tokens, c->head_dim, &c->rope_local);
    st = forward_rows(m, &s, tokens, n_tokens, last, logits, 0, hooks);
    run_state_free(&s);
    return st;
}

/* ------------------------------------------------------------ decoding */

stetho_status stetho_kv_cache_init(stetho_kv_cache *c, const stetho_model *m, int n_seqs, int max_len) {
    const stetho_model_config *mc = &m->cfg;
    memset(c, 0, sizeof *c);
    if (n_seqs <= 0 || max_len <= 0) return st_err(STETHO_ERR_INVALID, "KV cache: %d sequences of %d positions", n_seqs, max_len);
    if (mc->max_position > 0 && max_len > mc->max_position)
        return st_err(STETHO_ERR_INVALID, "KV cache: %d positions exceed the model's context of %d (max_position_embeddings)",
                      max_len, mc->max_position);
    c->n_seqs = n_seqs;
    c->max_len = max_len;
    c->n_layers = mc->n_layers;
    c->kv_dim = mc->n_kv_heads * mc->head_dim;
    c->cap = st_calloc((size_t)mc->n_layers, sizeof *c->cap);
    c->k = st_calloc((size_t)mc->n_layers, sizeof *c->k);
    c->v = st_calloc((size_t)mc->n_layers, sizeof *c->v);
    c->len = st_calloc((size_t)n_seqs, sizeof *c->len);
    bool ok = c->cap && c->k && c->v && c->len;
    for (int l = 0; ok && l < mc->n_layers; l++) {
        int cap = max_len;
        if (mc->layer_sliding[l] && mc->sliding_window > 0 && mc->sliding_window < cap) cap = mc->sliding_window;
        c->cap[l] = cap;
        size_t n;
        ok = st_mul_size((size_t)n_seqs * (size_t)cap, (size_t)c->kv_dim, &n) && st_mul_size(n, sizeof(float), &n);
        if (ok) {
            c->k[l] = st_malloc(n);
            c->v[l] = st_malloc(n);
            ok = c->k[l] && c->v[l];
        }
    }
    if (!ok) {
        stetho_kv_cache_free(c);
        return st_err(STETHO_ERR_NOMEM, "out of memory for a KV cache of %d sequences x %d positions", n_seqs, max_len);
    }
    return STETHO_OK;
}

void stetho_kv_cache_free(stetho_kv_cache *c) {
    for (int l = 0; c->k && c->v && l < c->n_layers; l++) {
        st_free(c->k[l]);
        st_free(c->v[l]);
    }
    st_free(c->k);
    st_free(c->v);
    st_free(c->cap);
    st_free(c->len);
    memset(c, 0, sizeof *c);
}

stetho_status stetho_model_prefill(stetho_model *m, stetho_kv_cache *c, int seq, const int32_t *tokens, int n_tokens,
                                   float *logits_last, const stetho_hooks *hooks) {
    const stetho_model_config *mc = &m->cfg;
    if (seq < 0 || seq >= c->n_seqs) return st_err(STETHO_ERR_INVALID, "prefill: sequence %d of %d", seq, c->n_seqs);
    if (n_tokens > c->max_len)
        return st_err(STETHO_ERR_INVALID, "prefill: %d tokens exceed the KV cache's %d positions", n_tokens, c->max_len);
    int last;
    stetho_status st = check_length(mc, n_tokens);
    if (st || (st = check_inputs(m, tokens, n_tokens, true, hooks, &last))) return st;
    run_state s;
    if ((st = run_state_alloc(&s, mc, (size_t)n_tokens))) return st;
    st_rope_tables(s.cos_g, s.sin_g, NULL, n_tokens, mc->head_dim, &mc->rope_global);
    st_rope_tables(s.cos_l, s.sin_l, NULL, n_tokens, mc->head_dim, &mc->rope_local);
    s.kv = c;
    s.kv_seq = seq;
    c->len[seq] = 0;
    st = forward_rows(m, &s, tokens, n_tokens, last, logits_last, n_tokens - 1, hooks);
    if (!st) c->len[seq] = n_tokens;
    run_state_free(&s);
    return st;
}

stetho_status stetho_model_decode(stetho_model *m, stetho_kv_cache *c, const int *seqs, const int32_t *tokens, int n,
                                  float *logits, const stetho_hooks *hooks) {
    const stetho_model_config *mc = &m->cfg;
    if (n <= 0) return st_err(STETHO_ERR_INVALID, "decode: no sequences");
    for (int i = 0; i < n; i++) {
        if (seqs[i] < 0 || seqs[i] >= c->n_seqs)
            return st_err(STETHO_ERR_INVALID, "decode: sequence %d of %d", seqs[i], c->n_seqs);
        if (c->len[seqs[i]] <= 0) return st_err(STETHO_ERR_INVALID, "decode: sequence %d has no prompt", seqs[i]);
        if (c->len[seqs[i]] >= c->max_len)
            return st_err(STETHO_ERR_INVALID, "decode: sequence %d is full (%d positions)", seqs[i], c->max_len);
        for (int j = 0; j < i; j++)
            if (seqs[j] == seqs[i]) return st_err(STETHO_ERR_INVALID, "decode: sequence %d given twice", seqs[i]);
    }
    int last;
    stetho_status st = check_inputs(m, tokens, n, true, hooks, &last);
    if (st) return st;
    run_state s;
    if ((st = run_state_alloc(&s, mc, (size_t)n))) return st;
    int *pos = st_malloc((size_t)n * sizeof *pos);
    s.kc = st_malloc((size_t)n * sizeof *s.kc);
    s.vc = st_malloc((size_t)n * sizeof *s.vc);
    s.n_keys = st_malloc((size_t)n * sizeof *s.n_keys);
    size_t nsc = 0;
    bool ok = st_mul_size((size_t)n * (size_t)mc->n_heads, (size_t)c->max_len, &nsc);
    s.dscores = ok ? st_alloc_floats(nsc, 1, &ok) : NULL;
    if (!pos || !s.kc || !s.vc || !s.n_keys || !s.dscores) {
        st_free(pos);
        run_state_free(&s);
        return st_err(STETHO_ERR_NOMEM, "out of memory for decoding %d sequences", n);
    }
    for (int i = 0; i < n; i++) pos[i] = c->len[seqs[i]];
    st_rope_tables(s.cos_g, s.sin_g, pos, n, mc->head_dim, &mc->rope_global);
    st_rope_tables(s.cos_l, s.sin_l, pos, n, mc->head_dim, &mc->rope_local);
    s.kv = c;
    s.kv_seqs = seqs;
    s.pos = pos;
    st = forward_rows(m, &s, tokens, n, last, logits, 0, hooks);
    if (!st)
        for (int i = 0; i < n; i++) c->len[seqs[i]]++;
    st_free(pos);
    run_state_free(&s);
    return st;
}
