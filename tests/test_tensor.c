/* dtype conversions: exhaustive bf16/f16 round trips and rounding edge cases. */
#include "testutil.h"

#include "stetho/tensor.h"

#include <math.h>
#include <string.h>

static uint32_t bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static float from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Every bf16 and every f16 value survives f32 and back bit for bit (NaNs stay NaN). */
static void test_round_trip_exhaustive(void **state) {
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = stetho_bf16_to_f32((uint16_t)h);
        uint16_t back = stetho_f32_to_bf16(f);
        if (isnan(f)) assert_true(isnan(stetho_bf16_to_f32(back)));
        else assert_int_equal(back, h);
        float g = stetho_f16_to_f32((uint16_t)h);
        uint16_t back16 = stetho_f32_to_f16(g);
        if (isnan(g)) assert_true(isnan(stetho_f16_to_f32(back16)));
        else assert_int_equal(back16, h);
    }
}

/* Reference rounding in double: nearest representable, ties to even. */
static double ref_round_f16(double x) {
    if (fabs(x) >= 65520.0) return copysign(INFINITY, x);
    int e;
    frexp(x, &e);
    double ulp = e - 1 < -14 ? ldexp(1.0, -24) : ldexp(1.0, e - 11);
    double q = x / ulp, r = nearbyint(q); /* default rounding mode: ties to even */
    return r * ulp;
}

static void test_f16_rounding_matches_reference(void **state) {
    (void)state;
    uint64_t rng = 42;
    for (int i = 0; i < 2000000; i++) {
        uint32_t u = (uint32_t)tu_rand_u64(&rng);
        float f = from_bits(u);
        if (isnan(f) || isinf(f)) continue;
        double want = ref_round_f16((double)f);
        float got = stetho_f16_to_f32(stetho_f32_to_f16(f));
        if (want == 0) assert_true(got == 0 && signbit(got) == signbit(f));
        else assert_true((double)got == want);
    }
}

static void test_bf16_rounding_ties_and_specials(void **state) {
    (void)state;
    /* 1 + 2^-8 is halfway between 1 and 1+2^-7: ties to even -> 1 */
    assert_int_equal(stetho_f32_to_bf16(1.0f + 0x1p-8f), 0x3f80);
    /* 1 + 3*2^-8 is halfway between 1+2^-7 (odd) and 1+2^-6: ties to even -> up */
    assert_int_equal(stetho_f32_to_bf16(1.0f + 3 * 0x1p-8f), 0x3f82);
    assert_int_equal(stetho_f32_to_bf16(1.0f + 0x1p-8f + 0x1p-20f), 0x3f81);
    assert_int_equal(stetho_f32_to_bf16(INFINITY), 0x7f80);
    assert_int_equal(stetho_f32_to_bf16(-INFINITY), 0xff80);
    assert_int_equal(stetho_f32_to_bf16(-0.0f), 0x8000);
    assert_int_equal(stetho_f32_to_bf16(from_bits(0x7f7fffff)), 0x7f80); /* FLT_MAX overflows to inf */
    uint16_t n = stetho_f32_to_bf16(from_bits(0x7f800001)); /* signalling NaN with low payload */
    assert_true(isnan(stetho_bf16_to_f32(n)));
    assert_int_equal(stetho_f32_to_f16(65504.0f), 0x7bff);
    assert_int_equal(stetho_f32_to_f16(65519.0f), 0x7bff);
    assert_int_equal(stetho_f32_to_f16(65520.0f), 0x7c00);
    assert_int_equal(stetho_f32_to_f16(0x1p-24f), 0x0001);
    assert_int_equal(stetho_f32_to_f16(0x1p-25f), 0x0000); /* tie to even (zero) */
    assert_int_equal(stetho_f32_to_f16(0x1.8p-25f), 0x0001);
    assert_true(isnan(stetho_f16_to_f32(stetho_f32_to_f16(NAN))));
    (void)bits;
}

static void test_dtype_names(void **state) {
    (void)state;
    stetho_dtype dt;
    static const char *names[] = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2", "I64", "I32",
                                  "I16", "I8", "U8", "BOOL"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        assert_true(stetho_dtype_from_name(names[i], &dt));
        assert_string_equal(stetho_dtype_name(dt), names[i]);
    }
    assert_false(stetho_dtype_from_name("bf16", &dt)); /* safetensors names are case-sensitive */
    assert_false(stetho_dtype_from_name("Q4_K", &dt));
    assert_true(stetho_dtype_from_user("bf16", &dt));
    assert_int_equal(dt, STETHO_DTYPE_BF16);
    assert_int_equal(stetho_dtype_bits(STETHO_DTYPE_F4), 4);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_exhaustive),
        cmocka_unit_test(test_f16_rounding_matches_reference),
        cmocka_unit_test(test_bf16_rounding_ties_and_specials),
        cmocka_unit_test(test_dtype_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
