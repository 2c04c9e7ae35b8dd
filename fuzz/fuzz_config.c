/* libFuzzer target: config.json parsing for checkpoints and for the inference
 * engine, and the layer/module selection parsers. */
#include "stetho/arch.h"
#include "stetho/model.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    stetho_config c;
    stetho_config_parse(&c, (const char *)data, size, "fuzz");
    stetho_model_config mc;
    if (stetho_model_config_parse(&mc, (const char *)data, size, "fuzz") == STETHO_OK) stetho_model_config_free(&mc);
    char *s = malloc(size + 1);
    memcpy(s, data, size);
    s[size] = '\0';
    bool sel[64];
    stetho_layer_spec_parse(s, 64, sel);
    uint32_t mask;
    stetho_module_spec_parse(s, &mask);
    stetho_arch_classify(s);
    free(s);
    return 0;
}
