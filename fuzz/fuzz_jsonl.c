/* libFuzzer target: the JSONL dataset reader (line limits, bad lines skipped). */
#include "stetho/jsonl.h"

#include <stdint.h>
#include <stdio.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    FILE *fp = fmemopen((void *)data, size, "rb");
    if (!fp) return 0;
    stetho_jsonl_reader r;
    if (stetho_jsonl_open_stream(&r, fp, "fuzz") == STETHO_OK) {
        r.max_line = 1 << 16;
        for (int i = 0; i < 10000; i++) {
            bool got = false;
            stetho_status st = stetho_jsonl_next(&r, &got);
            if (st == STETHO_OK && !got) break;
            if (st == STETHO_OK) stetho_jsonl_string(&r, "text");
        }
        stetho_jsonl_close(&r);
    }
    fclose(fp);
    return 0;
}
