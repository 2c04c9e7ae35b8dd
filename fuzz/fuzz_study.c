/* libFuzzer target: study YAML parsing and validation (libfyaml + schema). */
#include "stetho/study.h"

#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 65536) return 0;
    stetho_study_config c;
    if (stetho_study_config_parse(&c, (const char *)data, size, "fuzz.yaml", "/base") == STETHO_OK) {
        char *json;
        if (stetho_study_config_json(&c, &json) == STETHO_OK) free(json);
        stetho_study_config_free(&c);
    }
    return 0;
}
