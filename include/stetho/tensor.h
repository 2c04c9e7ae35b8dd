/* Data types, tensor views and conversion between the stored float formats and f32.
 *
 * A tensor view describes bytes that live elsewhere (usually an mmapped
 * safetensors file); it never owns them. */
#ifndef STETHO_TENSOR_H
#define STETHO_TENSOR_H

#include "stetho/common.h"
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    STETHO_DTYPE_F32, /* first, so a zeroed struct means F32 */
    STETHO_DTYPE_F64,
    STETHO_DTYPE_F16,
    STETHO_DTYPE_BF16,
    STETHO_DTYPE_F8_E4M3,
    STETHO_DTYPE_F8_E5M2,
    STETHO_DTYPE_F8_E8M0,
    STETHO_DTYPE_F6_E2M3,
    STETHO_DTYPE_F6_E3M2,
    STETHO_DTYPE_F4,
    STETHO_DTYPE_I64,
    STETHO_DTYPE_I32,
    STETHO_DTYPE_I16,
    STETHO_DTYPE_I8,
    STETHO_DTYPE_U64,
    STETHO_DTYPE_U32,
    STETHO_DTYPE_U16,
    STETHO_DTYPE_U8,
    STETHO_DTYPE_BOOL,
    STETHO_DTYPE_COUNT
} stetho_dtype;

#define STETHO_MAX_DIMS 8

typedef struct {
    const char *name;            /* tensor name (owned by the container) */
    stetho_dtype dtype;
    int ndim;
    uint64_t shape[STETHO_MAX_DIMS];
    uint64_t n_elements;
    uint64_t nbytes;
    const void *data;            /* nbytes bytes, not owned */
    uint64_t offset;             /* byte offset of data within its file's data section */
    int shard;                   /* index of the file holding it (checkpoints) */
} stetho_tensor;

/* "BF16", "F32", ... as safetensors spells them. */
const char *stetho_dtype_name(stetho_dtype dt);
/* Parse a safetensors dtype name; false if unknown. */
bool stetho_dtype_from_name(const char *name, stetho_dtype *out);
/* Parse a user-facing name: "f32", "bf16", "f16" (case-insensitive). */
bool stetho_dtype_from_user(const char *name, stetho_dtype *out);
/* Size of one element in bits (4 for F4, 6 for F6, else 8 * bytes). */
unsigned stetho_dtype_bits(stetho_dtype dt);
/* True for F32, F16 and BF16, the dtypes stetho computes with. */
bool stetho_dtype_is_float(stetho_dtype dt);

/* Scalar conversions. f32 -> bf16/f16 round to nearest even; NaN stays NaN
 * (quiet), infinities and signed zeros are kept, overflow gives infinity. */
float stetho_bf16_to_f32(uint16_t h);
uint16_t stetho_f32_to_bf16(float f);
float stetho_f16_to_f32(uint16_t h);
uint16_t stetho_f32_to_f16(float f);

/* Convert n elements of a float dtype (F32, F16, BF16, F64) to f32. */
stetho_status stetho_convert_to_f32(float *dst, const void *src, stetho_dtype dt, size_t n);
/* Convert n f32 values into F32, F16 or BF16. */
stetho_status stetho_convert_from_f32(void *dst, stetho_dtype dt, const float *src, size_t n);

#ifdef __cplusplus
}
#endif
#endif
