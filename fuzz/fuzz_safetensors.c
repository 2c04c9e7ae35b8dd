/* libFuzzer target: the safetensors header and layout validator, on arbitrary
 * file images; accepted files must give in-bounds tensor views. */
#include "stetho/safetensors.h"

#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    stetho_st_file f;
    if (stetho_st_open_buffer(&f, data, size, "fuzz") != STETHO_OK) return 0;
    volatile uint8_t sink = 0;
    for (size_t i = 0; i < f.n_tensors; i++) {
        const stetho_tensor *t = &f.tensors[i];
        if (t->nbytes) sink ^= ((const uint8_t *)t->data)[0] ^ ((const uint8_t *)t->data)[t->nbytes - 1];
        if (stetho_st_find(&f, t->name) == NULL) __builtin_trap();
    }
    (void)sink;
    stetho_st_close(&f);
    return 0;
}
