/* Statistics: every function against values computed independently (published
 * tables, closed forms evaluated in long double here, or 30-digit mpmath values
 * noted next to the constant). */
#include "testutil.h"

#include "stetho/stats.h"

#include <math.h>
#include <string.h>

#define assert_close(got, want, tol)                                                                      \
    do {                                                                                                  \
        double g_ = (got), w_ = (want);                                                                   \
        if (!(fabs(g_ - w_) <= (tol))) fail_msg("%s = %.17g, want %.17g (tol %g)", #got, g_, w_, (double)(tol)); \
    } while (0)

static void test_normal(void **state) {
    (void)state;
    assert_close(stetho_stats_normal_quantile(0.975), 1.959963984540054, 1e-14);
    assert_close(stetho_stats_normal_quantile(0.5), 0.0, 1e-15);
    /* mpmath: sqrt(2) * erfinv(2e-10 - 1) */
    assert_close(stetho_stats_normal_quantile(1e-10), -6.361340902404056, 1e-12);
    assert_true(isnan(stetho_stats_normal_quantile(0)));
    assert_true(isnan(stetho_stats_normal_quantile(1.5)));
    for (double p = 0.001; p < 1; p += 0.0137) assert_close(stetho_stats_normal_cdf(stetho_stats_normal_quantile(p)), p, 1e-14);
    assert_close(stetho_stats_normal_p2(1.959963984540054), 0.05, 1e-15);
    assert_close(stetho_stats_normal_p2(-1.959963984540054), 0.05, 1e-15);
    /* the far tail keeps relative precision (erfc, not 1 - erf): 2 Phi(-10) = 1.523970604832e-23 */
    assert_close(stetho_stats_normal_p2(10) / 1.5239706048320e-23, 1.0, 1e-11);
}

/* Wilson bounds are the roots of (p - x)^2 = z^2 x (1 - x) / n: check that directly. */
static void test_wilson(void **state) {
    (void)state;
    const uint64_t cases[][2] = {{160, 540}, {213, 540}, {0, 10}, {10, 10}, {1, 1}, {3, 7}, {99999, 100000}};
    for (size_t i = 0; i < (sizeof cases / sizeof cases[0]); i++) {
        stetho_interval w;
        assert_int_equal(stetho_stats_wilson(cases[i][0], cases[i][1], STETHO_Z95, &w), STETHO_OK);
        long double p = (long double)cases[i][0] / cases[i][1], n = cases[i][1], z = STETHO_Z95;
        long double x[2] = {w.lo, w.hi};
        for (int s = 0; s < 2; s++) {
            if ((s == 0 && cases[i][0] == 0) || (s == 1 && cases[i][0] == cases[i][1])) continue;
            long double f = (p - x[s]) * (p - x[s]) - z * z * x[s] * (1 - x[s]) / n;
            assert_true(fabsl(f) < 1e-13L);
        }
        assert_true(w.lo <= (double)p && (double)p <= w.hi);
    }
    stetho_interval w;
    assert_int_equal(stetho_stats_wilson(0, 10, STETHO_Z95, &w), STETHO_OK);
    assert_true(w.lo == 0);
    assert_close(w.hi, STETHO_Z95 * STETHO_Z95 / (10 + STETHO_Z95 * STETHO_Z95), 1e-15); /* k = 0: z^2/(n+z^2) */
    assert_int_equal(stetho_stats_wilson(1, 0, STETHO_Z95, &w), STETHO_ERR_INVALID);
    assert_int_equal(stetho_stats_wilson(11, 10, STETHO_Z95, &w), STETHO_ERR_INVALID);
    assert_int_equal(stetho_stats_wilson(1, 10, 0, &w), STETHO_ERR_INVALID);
}

/* Newcombe (1998), Statistics in Medicine 17:873, Table II, method 10, examples (a)-(h). */
static void test_newcombe_paper(void **state) {
    (void)state;
    static const struct { uint64_t k1, n1, k2, n2; double lo, hi; } t[] = {
        {56, 70, 48, 80, 0.0524, 0.3339},  {9, 10, 3, 10, 0.1705, 0.8090},   {6, 7, 2, 7, 0.0582, 0.8062},
        {5, 56, 0, 29, -0.0381, 0.1926},   {0, 10, 0, 20, -0.1611, 0.2775},  {0, 10, 0, 10, -0.2775, 0.2775},
        {10, 10, 0, 20, 0.6791, 1.0000},   {10, 10, 0, 10, 0.6075, 1.0000},
    };
    for (size_t i = 0; i < (sizeof t / sizeof t[0]); i++) {
        stetho_interval ci;
        assert_int_equal(stetho_stats_newcombe(t[i].k1, t[i].n1, t[i].k2, t[i].n2, STETHO_Z95, &ci), STETHO_OK);
        assert_close(ci.lo, t[i].lo, 0.00005);
        assert_close(ci.hi, t[i].hi, 0.00005);
    }
    /* Swapping the groups mirrors the interval. */
    stetho_interval a, b;
    assert_int_equal(stetho_stats_newcombe(56, 70, 48, 80, STETHO_Z95, &a), STETHO_OK);
    assert_int_equal(stetho_stats_newcombe(48, 80, 56, 70, STETHO_Z95, &b), STETHO_OK);
    assert_close(a.lo, -b.hi, 1e-15);
    assert_close(a.hi, -b.lo, 1e-15);
}

/* The paper's Number Theory figure: 160/540 -> 213/540, unpooled z = 3.41, p ~ 0.0007. */
static void test_ztest_number_theory(void **state) {
    (void)state;
    stetho_ztest t;
    assert_int_equal(stetho_stats_ztest(213, 540, 160, 540, &t), STETHO_OK);
    assert_close(t.diff, 53.0 / 540, 1e-15);
    assert_close(t.z_unpooled, 3.41, 0.005);
    assert_close(t.p_unpooled, 0.0007, 0.00005 + 0.0000003);
    /* 30-digit mpmath values of the same formulas */
    assert_close(t.z_unpooled, 3.4099581045948053, 1e-12);
    assert_close(t.p_unpooled, 0.00064972859417258, 1e-15);
    assert_close(t.z_pooled, 3.3917483667295667, 1e-12);
    assert_close(t.p_pooled, 0.00069448188744070, 1e-15);
    /* reversed direction gives the negated z, same p */
    stetho_ztest r;
    assert_int_equal(stetho_stats_ztest(160, 540, 213, 540, &r), STETHO_OK);
    assert_close(r.z_unpooled, -t.z_unpooled, 1e-12);
    assert_close(r.p_pooled, t.p_pooled, 1e-18);
    /* degenerate: both all-correct -> z 0, p 1; 0/10 vs 10/10 -> unpooled SE 0, p 0 */
    assert_int_equal(stetho_stats_ztest(10, 10, 20, 20, &t), STETHO_OK);
    assert_true(t.z_pooled == 0 && t.p_pooled == 1 && t.p_unpooled == 1);
    assert_int_equal(stetho_stats_ztest(0, 10, 10, 10, &t), STETHO_OK);
    assert_true(isinf(t.z_unpooled) && t.z_unpooled < 0 && t.p_unpooled == 0);
    assert_true(t.p_pooled > 0 && t.p_pooled < 1e-4);
    assert_int_equal(stetho_stats_ztest(1, 0, 1, 1, &t), STETHO_ERR_INVALID);
}

/* Direct binomial tail in long double: sum of C(n,i)/2^n by exp(lgammal), term by term. */
static long double binom_lower_tail(uint64_t m, uint64_t n) {
    long double s = 0;
    for (uint64_t i = 0; i <= m; i++)
        s += expl(lgammal(n + 1.0L) - lgammal(i + 1.0L) - lgammal(n - i + 1.0L) - n * logl(2.0L));
    return s;
}

static void test_mcnemar(void **state) {
    (void)state;
    stetho_mcnemar r;
    /* by hand: b=1, c=9: P(X<=1) = 11/1024, p = 22/1024; mid-p = 2(11 - 10/2)/1024 = 12/1024 */
    assert_int_equal(stetho_stats_mcnemar(1, 9, &r), STETHO_OK);
    assert_close(r.p_exact, 22.0 / 1024, 1e-16);
    assert_close(r.p_midp, 12.0 / 1024, 1e-16);
    assert_close(r.chi2, 49.0 / 10, 1e-15);
    assert_close(r.p_chi2, erfc(sqrt(4.9 / 2)), 1e-16);
    assert_int_equal(stetho_stats_mcnemar(9, 1, &r), STETHO_OK);
    assert_close(r.p_exact, 22.0 / 1024, 1e-16);
    /* no discordant pairs, and ties */
    assert_int_equal(stetho_stats_mcnemar(0, 0, &r), STETHO_OK);
    assert_true(r.p_exact == 1 && r.p_midp == 1 && r.p_chi2 == 1);
    assert_int_equal(stetho_stats_mcnemar(5, 5, &r), STETHO_OK);
    assert_true(r.p_exact == 1);
    assert_close(r.p_midp, 1, 1e-15);
    /* 0 vs 12: p = 2/4096 */
    assert_int_equal(stetho_stats_mcnemar(0, 12, &r), STETHO_OK);
    assert_close(r.p_exact, 2.0 / 4096, 1e-18);
    /* larger n against the direct long-double sum, and 30-digit mpmath values */
    const uint64_t cases[][2] = {{480, 530}, {17, 40}, {300, 200}, {2000, 2150}};
    for (size_t i = 0; i < (sizeof cases / sizeof cases[0]); i++) {
        uint64_t b = cases[i][0], c = cases[i][1], m = b < c ? b : c;
        assert_int_equal(stetho_stats_mcnemar(b, c, &r), STETHO_OK);
        long double want = 2 * binom_lower_tail(m, b + c);
        if (want > 1) want = 1;
        assert_close(r.p_exact / (double)want, 1.0, 1e-10);
    }
    assert_int_equal(stetho_stats_mcnemar(480, 530, &r), STETHO_OK);
    assert_close(r.p_exact, 0.12307327589621744, 1e-12);
    assert_close(r.p_midp, 0.11578723810308260, 1e-12);
    assert_int_equal(stetho_stats_mcnemar(40000, 40500, &r), STETHO_OK);
    assert_close(r.p_exact, 0.078620368805107996, 1e-10);
    assert_close(r.p_midp, 0.078025152937615549, 1e-10);
    /* extreme: tiny p keeps relative precision: 0 vs 1000 -> 2^-999 */
    assert_int_equal(stetho_stats_mcnemar(0, 1000, &r), STETHO_OK);
    assert_close(r.p_exact / ldexp(1.0, -999), 1.0, 1e-9);
}

static void test_holm(void **state) {
    (void)state;
    double p[] = {0.01, 0.04, 0.03, 0.005}, adj[4];
    assert_int_equal(stetho_stats_holm(p, 4, adj), STETHO_OK);
    /* sorted 0.005*4 = .02, 0.01*3 = .03, 0.03*2 = .06, 0.04*1 = .04 -> monotone .06 */
    assert_close(adj[0], 0.03, 1e-15);
    assert_close(adj[1], 0.06, 1e-15);
    assert_close(adj[2], 0.06, 1e-15);
    assert_close(adj[3], 0.02, 1e-15);
    double q[] = {0.5, NAN, 0.4};
    assert_int_equal(stetho_stats_holm(q, 3, q), STETHO_OK); /* in place; NaN not counted */
    assert_close(q[0], 0.8, 1e-15);
    assert_true(isnan(q[1]));
    assert_close(q[2], 0.8, 1e-15);
    double big[] = {0.6, 0.7};
    assert_int_equal(stetho_stats_holm(big, 2, adj), STETHO_OK);
    assert_true(adj[0] == 1 && adj[1] == 1);
    double bad[] = {1.5};
    assert_int_equal(stetho_stats_holm(bad, 1, adj), STETHO_ERR_INVALID);
    assert_int_equal(stetho_stats_holm(p, 0, adj), STETHO_OK);
}

/* lm-eval's stderr is numpy's sample std (ddof 1) over sqrt(n): compute it that way. */
static void test_mean_stderr(void **state) {
    (void)state;
    const uint64_t cases[][2] = {{160, 540}, {1, 2}, {0, 5}, {7, 13}};
    for (size_t i = 0; i < (sizeof cases / sizeof cases[0]); i++) {
        uint64_t k = cases[i][0], n = cases[i][1];
        long double mean = (long double)k / n, ss = 0;
        for (uint64_t j = 0; j < n; j++) {
            long double v = j < k ? 1 : 0;
            ss += (v - mean) * (v - mean);
        }
        long double want = sqrtl(ss / (n - 1)) / sqrtl((long double)n);
        assert_close(stetho_stats_mean_stderr(k, n), (double)want, 1e-15);
    }
    assert_true(isnan(stetho_stats_mean_stderr(1, 1)));
}

static long double pearson(const double *a, const double *b, size_t n) {
    long double ma = 0, mb = 0, sab = 0, saa = 0, sbb = 0;
    for (size_t i = 0; i < n; i++) ma += a[i], mb += b[i];
    ma /= n;
    mb /= n;
    for (size_t i = 0; i < n; i++) {
        sab += (a[i] - ma) * (b[i] - mb);
        saa += (a[i] - ma) * (a[i] - ma);
        sbb += (b[i] - mb) * (b[i] - mb);
    }
    return sab / sqrtl(saa * sbb);
}

static void test_spearman(void **state) {
    (void)state;
    stetho_spearman s;
    /* 1 - 6 sum d^2 / (n (n^2 - 1)) = 1 - 24/120 = 0.8; of the 120 permutations, 16
     * have |rho| >= 0.8 (enumerated separately in Python) */
    double x[] = {1, 2, 3, 4, 5}, y[] = {2, 1, 4, 3, 5};
    assert_int_equal(stetho_stats_spearman(x, y, 5, 0, 0, &s), STETHO_OK);
    assert_close(s.rho, 0.8, 1e-15);
    assert_true(s.exact && s.n_perm == 120);
    assert_close(s.p, 16.0 / 120, 1e-15);
    /* perfect monotone (non-linear) relation, n = 4: rho = 1, p = 2/24 */
    double x4[] = {0.1, 0.5, 2, 9}, y4[] = {1, 8, 27, 1000};
    assert_int_equal(stetho_stats_spearman(x4, y4, 4, 0, 0, &s), STETHO_OK);
    assert_close(s.rho, 1, 1e-15);
    assert_close(s.p, 2.0 / 24, 1e-15);
    /* ties: average ranks, then Pearson on the ranks */
    double xt[] = {1, 2, 2, 3, 7, 7, 7}, yt[] = {3, 1, 2, 2, 9, 5, 5}, r[7];
    assert_int_equal(stetho_stats_rank(xt, 7, r), STETHO_OK);
    const double want_r[] = {1, 2.5, 2.5, 4, 6, 6, 6};
    for (int i = 0; i < 7; i++) assert_close(r[i], want_r[i], 0);
    double ry[7];
    assert_int_equal(stetho_stats_rank(yt, 7, ry), STETHO_OK);
    assert_int_equal(stetho_stats_spearman(xt, yt, 7, 0, 0, &s), STETHO_OK);
    assert_close(s.rho, (double)pearson(r, ry, 7), 1e-14);
    /* n = 9: Monte Carlo vs a full enumeration of 9! done here independently */
    double x9[] = {3, 1, 4, 1.5, 5, 9, 2, 6, 5.5}, y9[] = {2, 7, 1, 8, 2.8, 1.8, 2.9, 8.5, 4};
    assert_int_equal(stetho_stats_spearman(x9, y9, 9, 20000, 7, &s), STETHO_OK);
    assert_false(s.exact);
    double rx9[9], ry9[9], perm[9];
    stetho_stats_rank(x9, 9, rx9);
    stetho_stats_rank(y9, 9, ry9);
    long double obs = fabsl(pearson(rx9, ry9, 9));
    assert_close(s.rho, (double)pearson(rx9, ry9, 9), 1e-14);
    int idx[9];
    for (int i = 0; i < 9; i++) idx[i] = i;
    uint64_t count = 0, total = 0;
    for (;;) { /* lexicographic next_permutation */
        for (int i = 0; i < 9; i++) perm[i] = ry9[idx[i]];
        count += fabsl(pearson(rx9, perm, 9)) >= obs - 1e-12L;
        total++;
        int i = 7;
        while (i >= 0 && idx[i] > idx[i + 1]) i--;
        if (i < 0) break;
        int j = 8;
        while (idx[j] < idx[i]) j--;
        int t = idx[i]; idx[i] = idx[j]; idx[j] = t;
        for (int a = i + 1, b = 8; a < b; a++, b--) t = idx[a], idx[a] = idx[b], idx[b] = t;
    }
    assert_int_equal(total, 362880);
    double exact_p = (double)count / (double)total;
    /* 20000 draws: standard error below 0.0036; allow 5 of them */
    assert_close(s.p, exact_p, 0.018);
    /* same seed, same p; the result does not depend on anything else */
    stetho_spearman s2;
    assert_int_equal(stetho_stats_spearman(x9, y9, 9, 20000, 7, &s2), STETHO_OK);
    assert_true(s2.p == s.p);
    /* strong correlation with n = 30: no permutation reaches it, p = 1/(n_perm + 1) */
    double x30[30], y30[30];
    for (int i = 0; i < 30; i++) x30[i] = i, y30[i] = i * i;
    assert_int_equal(stetho_stats_spearman(x30, y30, 30, 999, 1, &s), STETHO_OK);
    assert_close(s.p, 1.0 / 1000, 1e-15);
    /* errors */
    double c3[] = {1, 1, 1};
    assert_int_equal(stetho_stats_spearman(c3, x, 3, 0, 0, &s), STETHO_ERR_INVALID);
    assert_int_equal(stetho_stats_spearman(x, y, 2, 0, 0, &s), STETHO_ERR_INVALID);
    assert_int_equal(stetho_stats_spearman(x9, y9, 9, 0, 0, &s), STETHO_ERR_INVALID);
    double xn[] = {1, NAN, 3};
    assert_int_equal(stetho_stats_spearman(xn, x, 3, 0, 0, &s), STETHO_ERR_INVALID);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_normal),       cmocka_unit_test(test_wilson),
        cmocka_unit_test(test_newcombe_paper), cmocka_unit_test(test_ztest_number_theory),
        cmocka_unit_test(test_mcnemar),      cmocka_unit_test(test_holm),
        cmocka_unit_test(test_mean_stderr),  cmocka_unit_test(test_spearman),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
