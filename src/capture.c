/* Activation capture to a file: the forward pass's hooks stream each requested
 * [tokens, hidden] block straight into a safetensors writer, so a capture never
 * holds more than one block (plus the logits, when asked for) in memory. */
#include "stetho/model.h"
#include "stetho/safetensors.h"
#include "internal.h"

#include <stdio.h>
#include <string.h>

typedef struct {
    stetho_st_writer *w;
} capture_sink;

static stetho_status write_block(void *user, int layer, stetho_hook_kind kind, const float *data, int T, int D) {
    (void)layer;
    (void)kind;
    capture_sink *s = user;
    return stetho_st_writer_write(s->w, data, (size_t)T * (size_t)D * sizeof(float));
}

/* Parse the list into want[layer * KIND_COUNT + kind] and *logits. */
static stetho_status parse_list(const char *list, int n_layers, bool *want, bool *logits) {
    *logits = false;
    const char *p = list;
    if (!p || !*p) return st_err(STETHO_ERR_INVALID, "empty hook list");
    while (*p) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char item[128];
        if (len == 0 || len >= sizeof item) return st_err(STETHO_ERR_INVALID, "bad hook list '%s'", list);
        memcpy(item, p, len);
        item[len] = '\0';
        if (!strcmp(item, "logits")) {
            *logits = true;
        } else {
            int layer;
            stetho_hook_kind kind;
            stetho_status st = stetho_hook_parse(item, &layer, &kind);
            if (st) return st;
            if (layer >= n_layers)
                return st_err(STETHO_ERR_INVALID, "hook '%s': the model has %d layers (0-%d)", item, n_layers,
                              n_layers - 1);
            for (int l = 0; l < n_layers; l++)
                if (layer < 0 || l == layer) want[l * STETHO_HOOK_KIND_COUNT + kind] = true;
        }
        p += len;
        if (*p == ',') p++;
    }
    return STETHO_OK;
}

stetho_status stetho_model_capture(stetho_model *m, const int32_t *tokens, int n_tokens, const char *hook_list,
                                   const char *out_path) {
    const stetho_model_config *c = &m->cfg;
    if (n_tokens <= 0) return st_err(STETHO_ERR_INVALID, "capture: no tokens");
    int L = c->n_layers, K = STETHO_HOOK_KIND_COUNT;
    bool *want = st_calloc((size_t)L * (size_t)K, sizeof *want);
    if (!want) return STETHO_ERR_NOMEM;
    bool want_logits;
    float *logits = NULL;
    stetho_st_writer w;
    bool writer_open = false;
    stetho_hooks hooks;
    stetho_hooks_init(&hooks);
    capture_sink sink = {&w};
    stetho_status st = parse_list(hook_list, L, want, &want_logits);
    if (st) goto done;
    if ((st = stetho_st_writer_init(&w, out_path))) goto done;
    writer_open = true;
    uint64_t shape[2] = {(uint64_t)n_tokens, (uint64_t)c->hidden};
    if ((st = stetho_st_writer_declare(&w, "tokens", STETHO_DTYPE_I32, 1, shape))) goto done;
    /* declared in the order the forward pass produces them */
    for (int l = 0; l < L; l++)
        for (int k = 0; k < K; k++) {
            if (!want[l * K + k]) continue;
            char name[64];
            snprintf(name, sizeof name, "blocks.%d.%s", l, stetho_hook_kind_name((stetho_hook_kind)k));
            if ((st = stetho_st_writer_declare(&w, name, STETHO_DTYPE_F32, 2, shape)) ||
                (st = stetho_hooks_add_at(&hooks, l, (stetho_hook_kind)k, write_block, &sink)))
                goto done;
        }
    if (want_logits) {
        uint64_t ls[2] = {(uint64_t)n_tokens, (uint64_t)c->vocab};
        size_t n;
        if (!st_mul_size((size_t)n_tokens, (size_t)c->vocab, &n) || !st_mul_size(n, sizeof(float), &n)) {
            st = st_err(STETHO_ERR_NOMEM, "capture: logits too large");
            goto done;
        }
        if (!(logits = st_malloc(n))) {
            st = STETHO_ERR_NOMEM;
            goto done;
        }
        if ((st = stetho_st_writer_declare(&w, "logits", STETHO_DTYPE_F32, 2, ls))) goto done;
    }
    if ((st = stetho_st_writer_set_meta(&w, "format", "stetho-capture")) ||
        (st = stetho_st_writer_set_meta(&w, "hooks", hook_list)) ||
        (st = stetho_st_writer_write(&w, tokens, (size_t)n_tokens * sizeof(int32_t))))
        goto done;
    if ((st = stetho_model_forward(m, tokens, n_tokens, logits, &hooks))) goto done;
    if (want_logits &&
        (st = stetho_st_writer_write(&w, logits, (size_t)n_tokens * (size_t)c->vocab * sizeof(float))))
        goto done;
    st = stetho_st_writer_finish(&w);
done:
    if (writer_open) stetho_st_writer_abort(&w); /* also frees after finish */
    stetho_hooks_free(&hooks);
    st_free(logits);
    st_free(want);
    return st;
}
