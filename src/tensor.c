/* dtype table and f32 <-> bf16/f16 conversion with round-to-nearest-even. */
#include "stetho/tensor.h"
#include "internal.h"

#include <string.h>
#include <strings.h>

static const struct {
    const char *name;
    unsigned bits;
} dtype_info[STETHO_DTYPE_COUNT] = {
    [STETHO_DTYPE_F64] = {"F64", 64},         [STETHO_DTYPE_F32] = {"F32", 32},
    [STETHO_DTYPE_F16] = {"F16", 16},         [STETHO_DTYPE_BF16] = {"BF16", 16},
    [STETHO_DTYPE_F8_E4M3] = {"F8_E4M3", 8},  [STETHO_DTYPE_F8_E5M2] = {"F8_E5M2", 8},
    [STETHO_DTYPE_F8_E8M0] = {"F8_E8M0", 8},  [STETHO_DTYPE_F6_E2M3] = {"F6_E2M3", 6},
    [STETHO_DTYPE_F6_E3M2] = {"F6_E3M2", 6},  [STETHO_DTYPE_F4] = {"F4", 4},
    [STETHO_DTYPE_I64] = {"I64", 64},         [STETHO_DTYPE_I32] = {"I32", 32},
    [STETHO_DTYPE_I16] = {"I16", 16},         [STETHO_DTYPE_I8] = {"I8", 8},
    [STETHO_DTYPE_U64] = {"U64", 64},         [STETHO_DTYPE_U32] = {"U32", 32},
    [STETHO_DTYPE_U16] = {"U16", 16},         [STETHO_DTYPE_U8] = {"U8", 8},
    [STETHO_DTYPE_BOOL] = {"BOOL", 8},
};

const char *stetho_dtype_name(stetho_dtype dt) {
    return (unsigned)dt < STETHO_DTYPE_COUNT ? dtype_info[dt].name : "?";
}

unsigned stetho_dtype_bits(stetho_dtype dt) {
    return (unsigned)dt < STETHO_DTYPE_COUNT ? dtype_info[dt].bits : 0;
}

bool stetho_dtype_from_name(const char *name, stetho_dtype *out) {
    for (int i = 0; i < STETHO_DTYPE_COUNT; i++) {
        if (strcmp(name, dtype_info[i].name) == 0) {
            *out = (stetho_dtype)i;
            return true;
        }
    }
    return false;
}

bool stetho_dtype_from_user(const char *name, stetho_dtype *out) {
    static const struct { const char *n; stetho_dtype dt; } names[] = {
        {"f32", STETHO_DTYPE_F32},     {"float32", STETHO_DTYPE_F32},
        {"bf16", STETHO_DTYPE_BF16},   {"bfloat16", STETHO_DTYPE_BF16},
        {"f16", STETHO_DTYPE_F16},     {"float16", STETHO_DTYPE_F16},
    };
    for (size_t i = 0; i < ST_ARRAY_LEN(names); i++) {
        if (strcasecmp(name, names[i].n) == 0) {
            *out = names[i].dt;
            return true;
        }
    }
    return false;
}

bool stetho_dtype_is_float(stetho_dtype dt) {
    return dt == STETHO_DTYPE_F32 || dt == STETHO_DTYPE_F16 || dt == STETHO_DTYPE_BF16;
}

static inline uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static inline float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float stetho_bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

uint16_t stetho_f32_to_bf16(float f) {
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x0040u); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u); /* round to nearest even; overflow carries into inf */
    return (uint16_t)(u >> 16);
}

float stetho_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    if (exp == 0x1f) return bits_f32(sign | 0x7f800000u | (man << 13)); /* inf / NaN */
    if (exp == 0) {
        /* zero or subnormal: man * 2^-24, exact in f32 */
        float v = (float)man * 0x1p-24f;
        return sign ? -v : v;
    }
    return bits_f32(sign | ((exp + 112u) << 23) | (man << 13));
}

uint16_t stetho_f32_to_f16(float f) {
    uint32_t u = f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu)); /* NaN */
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* rounds to >= 65520: inf */
    if (a < 0x38800000u) {
        /* result is subnormal or zero: value = a * 2^24 ulps of 2^-24 */
        if (a < 0x33000000u) return sign; /* < 2^-25: rounds to zero */
        uint32_t e = a >> 23;
        uint32_t m = (a & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126u - e; /* 14..24 */
        uint32_t r = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1u);
        uint32_t half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (r & 1u))) r++;
        return (uint16_t)(sign | r);
    }
    /* normal: rebias exponent, round 13 dropped mantissa bits to nearest even */
    uint32_t v = a - 0x38000000u; /* exponent 127 -> 15 */
    v += 0xfffu + ((v >> 13) & 1u);
    return (uint16_t)(sign | (v >> 13));
}

stetho_status stetho_convert_to_f32(float *dst, const void *src, stetho_dtype dt, size_t n) {
    switch (dt) {
    case STETHO_DTYPE_F32:
        memcpy(dst, src, n * 4);
        return STETHO_OK;
    case STETHO_DTYPE_BF16: {
        const uint16_t *s = src;
        for (size_t i = 0; i < n; i++) {
            uint32_t u = (uint32_t)s[i] << 16;
            memcpy(&dst[i], &u, 4);
        }
        return STETHO_OK;
    }
    case STETHO_DTYPE_F16: {
        const uint16_t *s = src;
        for (size_t i = 0; i < n; i++) dst[i] = stetho_f16_to_f32(s[i]);
        return STETHO_OK;
    }
    case STETHO_DTYPE_F64: {
        const double *s = src;
        for (size_t i = 0; i < n; i++) dst[i] = (float)s[i];
        return STETHO_OK;
    }
    default:
        return st_err(STETHO_ERR_UNSUPPORTED, "cannot convert %s to F32", stetho_dtype_name(dt));
    }
}

stetho_status stetho_convert_from_f32(void *dst, stetho_dtype dt, const float *src, size_t n) {
    switch (dt) {
    case STETHO_DTYPE_F32:
        memcpy(dst, src, n * 4);
        return STETHO_OK;
    case STETHO_DTYPE_BF16: {
        uint16_t *d = dst;
        for (size_t i = 0; i < n; i++) d[i] = stetho_f32_to_bf16(src[i]);
        return STETHO_OK;
    }
    case STETHO_DTYPE_F16: {
        uint16_t *d = dst;
        for (size_t i = 0; i < n; i++) d[i] = stetho_f32_to_f16(src[i]);
        return STETHO_OK;
    }
    default:
        return st_err(STETHO_ERR_UNSUPPORTED, "cannot convert F32 to %s", stetho_dtype_name(dt));
    }
}
