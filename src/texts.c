/* JSONL texts tokenized one line at a time (stetho/texts.h). */
#include "stetho/texts.h"

#include "internal.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

stetho_status stetho_texts_open(stetho_texts *ts, const char *path, const stetho_tokenizer *tok, const char *field,
                                int max_tokens) {
    memset(ts, 0, sizeof *ts);
    ts->tok = tok;
    ts->field = field;
    ts->max_tokens = max_tokens;
    ts->index = -1;
    return stetho_jsonl_open(&ts->r, path);
}

stetho_status stetho_texts_next(stetho_texts *ts, bool *got) {
    stetho_status st = stetho_jsonl_next(&ts->r, got);
    if (st || !*got) return st;
    const char *text = stetho_jsonl_string(&ts->r, ts->field);
    if (!text) return STETHO_ERR_FORMAT;
    size_t len = json_string_length(json_object_get(ts->r.obj, ts->field)), n = 0;
    free(ts->ids);
    ts->ids = NULL;
    if ((st = stetho_tokenizer_encode(ts->tok, text, len, true, &ts->ids, &n))) return st;
    ts->n = n > (size_t)ts->max_tokens ? ts->max_tokens : (int)n;
    ts->index++;
    return STETHO_OK;
}

void stetho_texts_close(stetho_texts *ts) {
    stetho_jsonl_close(&ts->r);
    free(ts->ids);
    ts->ids = NULL;
}

int stetho_texts_mask_special(const stetho_tokenizer *tok, const int32_t *ids, int n, uint8_t *keep) {
    int kept = 0;
    for (int t = 0; t < n; t++) {
        keep[t] = ids[t] != tok->bos_id && ids[t] != tok->eos_id && ids[t] != tok->pad_id;
        kept += keep[t];
    }
    return kept;
}
