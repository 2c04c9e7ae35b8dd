/* libFuzzer target: the .npy header parser and payload conversion. */
#include "stetho/npz.h"

#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    stetho_npy_array a;
    if (stetho_npy_parse(data, size, "fuzz", &a) == STETHO_OK) stetho_npy_array_free(&a);
    return 0;
}
