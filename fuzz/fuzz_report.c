/* libFuzzer target: summary.json validation and report rendering (HTML and
 * Markdown, every chart). A valid summary must render; anything else must be a
 * format error, never a crash or a leak. */
#include "stetho/report.h"

#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 65536) return 0;
    char *html = NULL, *md = NULL;
    if (stetho_report_render((const char *)data, size, "fuzz.json", &html, &md) == STETHO_OK) {
        free(html);
        free(md);
    }
    return 0;
}
