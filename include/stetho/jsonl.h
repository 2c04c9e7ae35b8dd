/* JSONL datasets: one JSON object per line, read one line at a time with
 * errors that name file:line. Blank lines are skipped. Lines are limited in
 * length (default 64 MB) so a file without newlines cannot exhaust memory. */
#ifndef STETHO_JSONL_H
#define STETHO_JSONL_H

#include "stetho/common.h"
#include <stdbool.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct json_t json_t; /* jansson */

typedef struct {
    char *path;
    FILE *fp;
    bool owns_fp;
    size_t line_no;       /* 1-based number of the line last read */
    size_t max_line;
    char *line;           /* the raw text of the line last read (no newline) */
    size_t line_len, line_cap;
    json_t *obj;          /* parsed object of the line last read (owned) */
} stetho_jsonl_reader;

/* Open a file ("-" = stdin). */
stetho_status stetho_jsonl_open(stetho_jsonl_reader *r, const char *path);
/* Read from an open stream (not closed by stetho_jsonl_close); label names it
 * in errors. */
stetho_status stetho_jsonl_open_stream(stetho_jsonl_reader *r, FILE *fp, const char *label);
/* Read the next object. Returns STETHO_OK with *got = true and r->obj set, or
 * STETHO_OK with *got = false at end of file, or STETHO_ERR_FORMAT naming
 * path:line (the reader stays usable: call next again to skip the bad line). */
stetho_status stetho_jsonl_next(stetho_jsonl_reader *r, bool *got);
void stetho_jsonl_close(stetho_jsonl_reader *r);

/* A required string field of the current object, valid until the next call of
 * next; NULL with an error set ("path:line: missing string field 'text'") if
 * absent or not a string. Strings may hold NUL (\u0000): take the full length
 * from json_string_length(json_object_get(r->obj, field)) when that matters. */
const char *stetho_jsonl_string(stetho_jsonl_reader *r, const char *field);

#ifdef __cplusplus
}
#endif
#endif
