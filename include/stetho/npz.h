/* .npz archives (NumPy): a zip of .npy arrays, read with libzip. Float arrays
 * (<f4, <f2, <f8, bfloat16 as '<V2' is not supported) are returned as f32. */
#ifndef STETHO_NPZ_H
#define STETHO_NPZ_H

#include "stetho/common.h"
#include "stetho/tensor.h"
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

#define STETHO_NPY_MAX_DIMS 8

typedef struct {
    char *name;                 /* array name (file name without .npy) */
    int ndim;
    uint64_t shape[STETHO_NPY_MAX_DIMS];
    uint64_t n_elements;
    float *data;                /* converted to f32, C order */
    stetho_dtype stored;        /* the file's dtype: F16, F32 or F64 */
} stetho_npy_array;

typedef struct {
    char *path;
    size_t n_arrays;
    stetho_npy_array *arrays;
} stetho_npz;

/* Read every array of the archive. Non-float arrays, Fortran order, big-endian
 * data and malformed headers are errors naming the file and array. */
stetho_status stetho_npz_load(stetho_npz *z, const char *path);
void stetho_npz_free(stetho_npz *z);
const stetho_npy_array *stetho_npz_find(const stetho_npz *z, const char *name);
/* Parse one .npy image held in memory (used by load, tests and fuzzing). */
stetho_status stetho_npy_parse(const void *buf, size_t len, const char *label, stetho_npy_array *out);
void stetho_npy_array_free(stetho_npy_array *a);

#ifdef __cplusplus
}
#endif
#endif
