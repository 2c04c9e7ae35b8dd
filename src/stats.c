/* Statistics for comparing evaluation runs: Wilson and Newcombe intervals, z-tests,
 * McNemar, Holm, Spearman with permutations. Formulas and their sources are in
 * docs/statistics.md; the tests check them against independent computations. */
#include "stetho/stats.h"
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

double stetho_stats_normal_cdf(double x) { return 0.5 * erfc(-x / M_SQRT2); }

double stetho_stats_normal_p2(double z) {
    if (isnan(z)) return NAN;
    return erfc(fabs(z) / M_SQRT2);
}

/* Acklam's rational approximation (relative error 1.15e-9), then one Halley step
 * against erfc, which brings it to full double precision. */
double stetho_stats_normal_quantile(double p) {
    static const double a[] = {-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02,
                               1.383577518672690e+02,  -3.066479806614716e+01, 2.506628277459239e+00};
    static const double b[] = {-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
                               6.680131188771972e+01,  -1.328068155288572e+01};
    static const double c[] = {-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
                               -2.549732539343734e+00, 4.374664141464968e+00,  2.938163982698783e+00};
    static const double d[] = {7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
                               3.754408661907416e+00};
    if (!(p > 0 && p < 1)) return NAN;
    const double plow = 0.02425;
    double x;
    if (p < plow) {
        double q = sqrt(-2 * log(p));
        x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
            ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
    } else if (p <= 1 - plow) {
        double q = p - 0.5, r = q * q;
        x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
            (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
    } else {
        double q = sqrt(-2 * log(1 - p));
        x = -(((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
            ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
    }
    for (int it = 0; it < 2; it++) {
        double e = stetho_stats_normal_cdf(x) - p;
        double u = e * sqrt(2 * M_PI) * exp(x * x / 2);
        x = x - u / (1 + x * u / 2);
    }
    return x;
}

stetho_status stetho_stats_wilson(uint64_t k, uint64_t n, double z, stetho_interval *out) {
    if (n == 0) return st_err(STETHO_ERR_INVALID, "Wilson interval: no trials (n = 0)");
    if (k > n) return st_err(STETHO_ERR_INVALID, "Wilson interval: %llu successes in %llu trials",
                             (unsigned long long)k, (unsigned long long)n);
    if (!(z > 0) || !isfinite(z)) return st_err(STETHO_ERR_INVALID, "Wilson interval: quantile z must be positive");
    double nn = (double)n, p = (double)k / nn, z2 = z * z;
    double denom = 1 + z2 / nn;
    double center = (p + z2 / (2 * nn)) / denom;
    double half = z / denom * sqrt(p * (1 - p) / nn + z2 / (4 * nn * nn));
    out->lo = center - half;
    out->hi = center + half;
    /* The bounds are exactly 0 and 1 at the extremes; rounding must not push them out. */
    if (k == 0 || out->lo < 0) out->lo = 0;
    if (k == n || out->hi > 1) out->hi = 1;
    return STETHO_OK;
}

stetho_status stetho_stats_newcombe(uint64_t k1, uint64_t n1, uint64_t k2, uint64_t n2, double z,
                                    stetho_interval *out) {
    stetho_interval w1 = {0, 0}, w2 = {0, 0};
    stetho_status st = stetho_stats_wilson(k1, n1, z, &w1);
    if (!st) st = stetho_stats_wilson(k2, n2, z, &w2);
    if (st) return st;
    double p1 = (double)k1 / (double)n1, p2 = (double)k2 / (double)n2, d = p1 - p2;
    out->lo = d - sqrt((p1 - w1.lo) * (p1 - w1.lo) + (w2.hi - p2) * (w2.hi - p2));
    out->hi = d + sqrt((w1.hi - p1) * (w1.hi - p1) + (p2 - w2.lo) * (p2 - w2.lo));
    return STETHO_OK;
}

/* z and two-sided p for a difference over a standard error, with the 0/0 and x/0
 * cases spelled out (see stats.h). */
static void z_and_p(double diff, double se, double *z, double *p) {
    if (se > 0) {
        *z = diff / se;
        *p = stetho_stats_normal_p2(*z);
    } else if (diff == 0) {
        *z = 0;
        *p = 1;
    } else {
        *z = diff > 0 ? INFINITY : -INFINITY;
        *p = 0;
    }
}

stetho_status stetho_stats_ztest(uint64_t k1, uint64_t n1, uint64_t k2, uint64_t n2, stetho_ztest *out) {
    if (n1 == 0 || n2 == 0) return st_err(STETHO_ERR_INVALID, "z-test: a sample is empty (n = 0)");
    if (k1 > n1 || k2 > n2) return st_err(STETHO_ERR_INVALID, "z-test: more successes than trials");
    double a = (double)n1, b = (double)n2;
    out->p1 = (double)k1 / a;
    out->p2 = (double)k2 / b;
    out->diff = out->p1 - out->p2;
    double pp = ((double)k1 + (double)k2) / (a + b);
    out->se_pooled = sqrt(pp * (1 - pp) * (1 / a + 1 / b));
    out->se_unpooled = sqrt(out->p1 * (1 - out->p1) / a + out->p2 * (1 - out->p2) / b);
    z_and_p(out->diff, out->se_pooled, &out->z_pooled, &out->p_pooled);
    z_and_p(out->diff, out->se_unpooled, &out->z_unpooled, &out->p_unpooled);
    return STETHO_OK;
}

stetho_status stetho_stats_mcnemar(uint64_t b, uint64_t c, stetho_mcnemar *out) {
    memset(out, 0, sizeof *out);
    out->b = b;
    out->c = c;
    uint64_t n;
    if (!st_add_u64(b, c, &n) || n > ((uint64_t)1 << 31))
        return st_err(STETHO_ERR_INVALID, "McNemar: too many discordant pairs (%llu + %llu)", (unsigned long long)b,
                      (unsigned long long)c);
    if (n == 0) {
        out->p_exact = out->p_midp = out->p_chi2 = 1;
        return STETHO_OK;
    }
    uint64_t m = b < c ? b : c;
    double nn = (double)n, mm = (double)m;
    /* Lower tail P(X <= m) of Bin(n, 1/2): the point probability at m from log-gamma,
     * then the terms below it by the ratio pmf(i-1)/pmf(i) = i/(n-i+1) < 1, summed
     * from the largest term down so nothing underflows or cancels. */
    double pm = exp(lgamma(nn + 1) - lgamma(mm + 1) - lgamma(nn - mm + 1) - nn * M_LN2);
    double term = 1, sum = 1;
    for (uint64_t i = m; i >= 1; i--) {
        term *= (double)i / (double)(n - i + 1);
        sum += term;
        if (term < 1e-18 * sum) break;
    }
    double tail = pm * sum;
    out->p_exact = fmin(1.0, 2 * tail);
    out->p_midp = fmin(1.0, 2 * (tail - 0.5 * pm));
    double diff = fabs((double)b - (double)c) - 1;
    if (diff < 0) diff = 0;
    out->chi2 = diff * diff / nn;
    out->p_chi2 = erfc(sqrt(out->chi2 / 2));
    return STETHO_OK;
}

typedef struct {
    double v;
    size_t i;
} val_idx;

static int cmp_val_idx(const void *pa, const void *pb) {
    const val_idx *a = pa, *b = pb;
    if (a->v < b->v) return -1;
    if (a->v > b->v) return 1;
    return a->i < b->i ? -1 : a->i > b->i; /* stable: equal values keep input order */
}

stetho_status stetho_stats_holm(const double *p, size_t m, double *adj) {
    size_t bytes;
    if (!st_mul_size(m ? m : 1, sizeof(val_idx), &bytes)) return st_err(STETHO_ERR_NOMEM, "Holm: too many p-values");
    for (size_t i = 0; i < m; i++)
        if (!isnan(p[i]) && !(p[i] >= 0 && p[i] <= 1))
            return st_err(STETHO_ERR_INVALID, "Holm: p-value %zu is %g, outside [0, 1]", i, p[i]);
    val_idx *s = st_malloc(bytes);
    if (!s) return STETHO_ERR_NOMEM;
    size_t k = 0;
    for (size_t i = 0; i < m; i++)
        if (!isnan(p[i])) s[k++] = (val_idx){p[i], i};
    qsort(s, k, sizeof *s, cmp_val_idx);
    for (size_t i = 0; i < m; i++)
        if (isnan(p[i])) adj[i] = NAN;
    double run = 0;
    for (size_t j = 0; j < k; j++) {
        double a = fmin(1.0, (double)(k - j) * s[j].v);
        if (a > run) run = a;
        adj[s[j].i] = run;
    }
    st_free(s);
    return STETHO_OK;
}

double stetho_stats_mean_stderr(uint64_t k, uint64_t n) {
    if (n < 2 || k > n) return NAN;
    double p = (double)k / (double)n;
    return sqrt(p * (1 - p) / ((double)n - 1));
}

stetho_status stetho_stats_rank(const double *x, size_t n, double *ranks) {
    size_t bytes;
    if (!st_mul_size(n ? n : 1, sizeof(val_idx), &bytes)) return st_err(STETHO_ERR_NOMEM, "rank: too many values");
    val_idx *s = st_malloc(bytes);
    if (!s) return STETHO_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        if (isnan(x[i])) {
            st_free(s);
            return st_err(STETHO_ERR_INVALID, "rank: value %zu is NaN", i);
        }
        s[i] = (val_idx){x[i], i};
    }
    qsort(s, n, sizeof *s, cmp_val_idx);
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j + 1 < n && s[j + 1].v == s[i].v) j++;
        double r = ((double)i + (double)j) / 2 + 1; /* mean of 1-based positions i+1..j+1 */
        for (size_t t = i; t <= j; t++) ranks[s[t].i] = r;
        i = j + 1;
    }
    st_free(s);
    return STETHO_OK;
}

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Uniform integer in [0, bound) without modulo bias (rejection). */
static uint64_t rand_below(uint64_t *s, uint64_t bound) {
    uint64_t lim = UINT64_MAX - UINT64_MAX % bound;
    uint64_t r;
    do r = splitmix64(s);
    while (r >= lim);
    return r % bound;
}

/* Centred ranks: the correlation of two rank vectors is then sum(a b) / sqrt(sum a^2 sum b^2),
 * and only sum(a b) changes under a permutation. */
static double dot(const double *a, const double *b, const size_t *perm, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += a[i] * b[perm[i]];
    return s;
}

stetho_status stetho_stats_spearman(const double *x, const double *y, size_t n, uint64_t n_perm, uint64_t seed,
                                    stetho_spearman *out) {
    memset(out, 0, sizeof *out);
    if (n < 3) return st_err(STETHO_ERR_INVALID, "Spearman: need at least 3 pairs, got %zu", n);
    if (n > 8 && n_perm == 0) return st_err(STETHO_ERR_INVALID, "Spearman: n_perm must be positive for n > 8");
    size_t bytes;
    if (!st_mul_size(n, 2 * sizeof(double) + sizeof(size_t), &bytes))
        return st_err(STETHO_ERR_NOMEM, "Spearman: too many pairs");
    char *mem = st_malloc(bytes);
    if (!mem) return STETHO_ERR_NOMEM;
    double *rx = (double *)mem, *ry = rx + n; /* [n] each */
    size_t *perm = (size_t *)(ry + n);         /* [n] */
    stetho_status st = stetho_stats_rank(x, n, rx);
    if (!st) st = stetho_stats_rank(y, n, ry);
    if (st) {
        st_free(mem);
        return st_err_context(st, "Spearman");
    }
    double mean = ((double)n + 1) / 2, sxx = 0, syy = 0;
    for (size_t i = 0; i < n; i++) {
        rx[i] -= mean;
        ry[i] -= mean;
        sxx += rx[i] * rx[i];
        syy += ry[i] * ry[i];
        perm[i] = i;
    }
    if (sxx == 0 || syy == 0) {
        st_free(mem);
        return st_err(STETHO_ERR_INVALID, "Spearman: %s is constant, the correlation is undefined",
                      sxx == 0 ? "x" : "y");
    }
    double norm = sqrt(sxx * syy);
    double obs = dot(rx, ry, perm, n);
    out->rho = obs / norm;
    /* Permuted statistics equal to the observed one in exact arithmetic must count;
     * rounding in the sums is far below this tolerance. */
    double thresh = fabs(obs) - 1e-9 * norm;
    uint64_t count = 0;
    if (n <= 8) {
        /* Heap's algorithm visits all n! permutations. */
        size_t cidx[8] = {0};
        uint64_t total = 1;
        count = fabs(dot(rx, ry, perm, n)) >= thresh;
        for (size_t i = 1; i < n;) {
            if (cidx[i] < i) {
                size_t j = (i % 2 == 0) ? 0 : cidx[i];
                size_t t = perm[j];
                perm[j] = perm[i];
                perm[i] = t;
                count += fabs(dot(rx, ry, perm, n)) >= thresh;
                total++;
                cidx[i]++;
                i = 1;
            } else {
                cidx[i] = 0;
                i++;
            }
        }
        out->exact = true;
        out->n_perm = total;
        out->p = (double)count / (double)total;
    } else {
        uint64_t rng = seed;
        for (uint64_t k = 0; k < n_perm; k++) {
            for (size_t i = n - 1; i > 0; i--) { /* Fisher-Yates, continuing from the last permutation */
                size_t j = (size_t)rand_below(&rng, (uint64_t)i + 1);
                size_t t = perm[i];
                perm[i] = perm[j];
                perm[j] = t;
            }
            count += fabs(dot(rx, ry, perm, n)) >= thresh;
        }
        out->n_perm = n_perm;
        out->p = ((double)count + 1) / ((double)n_perm + 1);
    }
    st_free(mem);
    return STETHO_OK;
}
