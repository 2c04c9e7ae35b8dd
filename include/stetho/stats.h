/* Statistics for comparing evaluation runs: confidence intervals for accuracies and
 * their differences, two-proportion z-tests, McNemar's exact test on paired verdicts,
 * Holm-Bonferroni adjustment, and Spearman rank correlation with a permutation
 * p-value. All functions are pure (no I/O) and deterministic. */
#ifndef STETHO_STATS_H
#define STETHO_STATS_H

#include "stetho/common.h"
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The two-sided 95% normal quantile, z_{0.975}. */
#define STETHO_Z95 1.959963984540054

typedef struct {
    double lo, hi;
} stetho_interval;

/* Standard normal CDF Phi(x), computed as erfc(-x/sqrt 2)/2 (accurate in both tails). */
double stetho_stats_normal_cdf(double x);
/* Two-sided p-value of a standard normal statistic: P(|Z| >= |z|) = erfc(|z|/sqrt 2). */
double stetho_stats_normal_p2(double z);
/* Inverse of Phi for p in (0, 1); NaN outside. Relative error below 1e-14. */
double stetho_stats_normal_quantile(double p);

/* Wilson score interval for k successes in n trials at normal quantile z (e.g.
 * STETHO_Z95). STETHO_ERR_INVALID when n == 0, k > n or z <= 0. */
stetho_status stetho_stats_wilson(uint64_t k, uint64_t n, double z, stetho_interval *out);

/* Newcombe's hybrid score interval (method 10 of Newcombe 1998) for the difference
 * p1 - p2 of two independent proportions k1/n1 and k2/n2, built from the two Wilson
 * intervals. Same errors as stetho_stats_wilson. */
stetho_status stetho_stats_newcombe(uint64_t k1, uint64_t n1, uint64_t k2, uint64_t n2, double z,
                                    stetho_interval *out);

/* Two-proportion z-test of p1 = k1/n1 against p2 = k2/n2; z > 0 when p1 > p2.
 * Pooled: SE from the common proportion (k1+k2)/(n1+n2) (the textbook test of
 * H0: p1 = p2). Unpooled: SE = sqrt(p1 q1/n1 + p2 q2/n2) (Wald). When an SE is 0
 * (both proportions 0 or both 1) the z is 0 and p is 1; when only the unpooled SE
 * is 0 with different proportions (0 vs 1) z is +-inf and p is 0. */
typedef struct {
    double p1, p2, diff;   /* diff = p1 - p2 */
    double se_pooled, z_pooled, p_pooled;
    double se_unpooled, z_unpooled, p_unpooled;
} stetho_ztest;
stetho_status stetho_stats_ztest(uint64_t k1, uint64_t n1, uint64_t k2, uint64_t n2, stetho_ztest *out);

/* McNemar's test on paired binary outcomes. b = pairs where only the first is
 * correct, c = pairs where only the second is. The exact test is the two-sided
 * binomial test of b ~ Bin(b + c, 1/2): p = min(1, 2 P(X <= min(b, c))); mid-p
 * subtracts half the point probability once per tail; the chi-square variant is the
 * continuity-corrected (|b - c| - 1)^2 / (b + c) on 1 degree of freedom. With
 * b + c == 0 every p is 1. Stable for b + c up to 2^31. */
typedef struct {
    uint64_t b, c;
    double p_exact, p_midp;
    double chi2, p_chi2;
} stetho_mcnemar;
stetho_status stetho_stats_mcnemar(uint64_t b, uint64_t c, stetho_mcnemar *out);

/* Holm-Bonferroni step-down adjusted p-values: sort ascending, adj_(i) =
 * max_{j<=i} min(1, (m - j) p_(j)) with j 0-based. NaN entries are not counted in m
 * and stay NaN. p and adj may alias. STETHO_ERR_INVALID for a p outside [0, 1]. */
stetho_status stetho_stats_holm(const double *p, size_t m, double *adj);

/* Standard error of a mean accuracy as lm-evaluation-harness reports
 * exact_match_stderr: the sample standard deviation (ddof 1) over sqrt(n), which for
 * 0/1 data is sqrt(p (1 - p) / (n - 1)). NaN when n < 2. */
double stetho_stats_mean_stderr(uint64_t k, uint64_t n);

/* Spearman rank correlation of x and y (n pairs; ties get average ranks) and a
 * two-sided permutation p-value P(|rho_perm| >= |rho|). For n <= 8 all n!
 * permutations are enumerated (exact; n_perm and seed unused). Otherwise n_perm
 * random permutations from a splitmix64 stream seeded with seed are drawn and
 * p = (count + 1) / (n_perm + 1), so the same inputs and seed give the same p.
 * STETHO_ERR_INVALID for n < 3, a NaN, constant x or y (rho undefined), or n > 8
 * with n_perm == 0. */
typedef struct {
    double rho;
    double p;
    bool exact;          /* p from the full enumeration */
    uint64_t n_perm;     /* permutations evaluated */
} stetho_spearman;
stetho_status stetho_stats_spearman(const double *x, const double *y, size_t n, uint64_t n_perm, uint64_t seed,
                                    stetho_spearman *out);

/* Average ranks (1-based; ties share the mean of their positions) of x[0..n). */
stetho_status stetho_stats_rank(const double *x, size_t n, double *ranks);

#ifdef __cplusplus
}
#endif
#endif
