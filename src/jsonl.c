/* JSONL reader: bounded line reads, one validated JSON object per line. */
#include "stetho/jsonl.h"
#include "internal.h"

#include <errno.h>
#include <jansson.h>
#include <string.h>

#define JSONL_DEFAULT_MAX_LINE ((size_t)64 << 20)

stetho_status stetho_jsonl_open(stetho_jsonl_reader *r, const char *path) {
    memset(r, 0, sizeof *r);
    r->max_line = JSONL_DEFAULT_MAX_LINE;
    if (!(r->path = st_strdup(path))) return STETHO_ERR_NOMEM;
    if (!strcmp(path, "-")) {
        r->fp = stdin;
    } else {
        r->fp = fopen(path, "rb");
        r->owns_fp = true;
        if (!r->fp) {
            stetho_status st = st_err(errno == ENOENT ? STETHO_ERR_NOTFOUND : STETHO_ERR_IO,
                                      "%s: cannot open: %s", path, strerror(errno));
            st_free(r->path);
            memset(r, 0, sizeof *r);
            return st;
        }
    }
    return STETHO_OK;
}

stetho_status stetho_jsonl_open_stream(stetho_jsonl_reader *r, FILE *fp, const char *label) {
    memset(r, 0, sizeof *r);
    r->max_line = JSONL_DEFAULT_MAX_LINE;
    if (!(r->path = st_strdup(label))) return STETHO_ERR_NOMEM;
    r->fp = fp;
    return STETHO_OK;
}

/* Read one line into r->line; false at EOF with nothing read. */
static stetho_status read_line(stetho_jsonl_reader *r, bool *got) {
    r->line_len = 0;
    *got = false;
    if (!r->line) { /* an empty first line still needs room for its terminator */
        if (!(r->line = st_malloc(4096))) return STETHO_ERR_NOMEM;
        r->line_cap = 4096;
    }
    int c;
    while ((c = getc(r->fp)) != EOF) {
        *got = true;
        if (c == '\n') break;
        if (r->line_len + 2 > r->line_cap) {
            if (r->line_len >= r->max_line) {
                while ((c = getc(r->fp)) != EOF && c != '\n') {}
                r->line_no++;
                return st_err(STETHO_ERR_FORMAT, "%s:%zu: line longer than %zu bytes", r->path, r->line_no,
                              r->max_line);
            }
            size_t cap = r->line_cap ? r->line_cap * 2 : 4096;
            char *p = st_realloc(r->line, cap);
            if (!p) return STETHO_ERR_NOMEM;
            r->line = p;
            r->line_cap = cap;
        }
        r->line[r->line_len++] = (char)c;
    }
    if (ferror(r->fp)) return st_err(STETHO_ERR_IO, "%s: read error", r->path);
    if (*got) {
        r->line_no++;
        if (r->line_len && r->line[r->line_len - 1] == '\r') r->line_len--;
        r->line[r->line_len] = '\0';
    }
    return STETHO_OK;
}

stetho_status stetho_jsonl_next(stetho_jsonl_reader *r, bool *got) {
    json_decref(r->obj);
    r->obj = NULL;
    for (;;) {
        stetho_status st = read_line(r, got);
        if (st || !*got) return st;
        size_t i = 0;
        while (i < r->line_len && (r->line[i] == ' ' || r->line[i] == '\t')) i++;
        if (i == r->line_len) continue; /* blank line */
        json_error_t jerr;
        json_t *o = json_loadb(r->line, r->line_len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
        if (!o) return st_err(STETHO_ERR_FORMAT, "%s:%zu: invalid JSON (%s)", r->path, r->line_no, jerr.text);
        if (!json_is_object(o)) {
            json_decref(o);
            return st_err(STETHO_ERR_FORMAT, "%s:%zu: expected a JSON object", r->path, r->line_no);
        }
        r->obj = o;
        return STETHO_OK;
    }
}

const char *stetho_jsonl_string(stetho_jsonl_reader *r, const char *field) {
    json_t *v = r->obj ? json_object_get(r->obj, field) : NULL;
    if (!json_is_string(v)) {
        st_err(STETHO_ERR_FORMAT, "%s:%zu: missing string field '%s'", r->path, r->line_no, field);
        return NULL;
    }
    return json_string_value(v);
}

void stetho_jsonl_close(stetho_jsonl_reader *r) {
    json_decref(r->obj);
    if (r->owns_fp && r->fp) fclose(r->fp);
    st_free(r->line);
    st_free(r->path);
    memset(r, 0, sizeof *r);
}
