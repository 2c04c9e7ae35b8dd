/* The tiny world's problem templates: five per subject, each a family of problems
 * with small operands whose answer a small model can reach in a few written steps.
 * The level (1..5) widens the operand ranges or adds a step. Each template writes
 * the problem, a short worked solution, the answer in LaTeX, and the fact key: the
 * template name and the operands that decide the answer, never the wording, so the
 * train/test split (by key) keeps rewordings of a fact on one side. */
#include "toydata_internal.h"

#include <stdlib.h>
#include <string.h>

#define P(...) st_buf_printf(&o->prob, __VA_ARGS__)
#define S(...) st_buf_printf(&o->sol, __VA_ARGS__)
#define A(...) st_buf_printf(&o->ans, __VA_ARGS__)
#define K(...) st_buf_printf(&o->key, __VA_ARGS__)

static long gcd(long a, long b) {
    a = labs(a);
    b = labs(b);
    while (b) {
        long t = a % b;
        a = b;
        b = t;
    }
    return a;
}

/* n/d in lowest terms as MATH writes it: "3", "-\frac{2}{5}". */
static void frac(st_buf *b, long n, long d) {
    if (d < 0) {
        n = -n;
        d = -d;
    }
    long g = gcd(n, d);
    if (g > 1) {
        n /= g;
        d /= g;
    }
    if (d == 1) st_buf_printf(b, "%ld", n);
    else st_buf_printf(b, "%s\\frac{%ld}{%ld}", n < 0 ? "-" : "", labs(n), d);
}

/* "+ 5" / "- 5" for a term after the first. */
static const char *sg(long v) { return v < 0 ? "-" : "+"; }

static const char *pick(toy_rng *r, const char *const *w, size_t n) { return w[toy_next(r) % n]; }
#define PICK(r, arr) pick(r, arr, ST_ARRAY_LEN(arr))

/* ---- Prealgebra ------------------------------------------------------------------ */

static void pre_order_ops(toy_rng *r, int L, toy_out *o) {
    long a = toy_int(r, 2, 3 + 3 * L), b = toy_int(r, 2, 2 + 2 * L), c = toy_int(r, 2, 2 + 2 * L);
    int form = (int)toy_int(r, 0, L >= 3 ? 2 : 1);
    K("pre_ops:%d:%ld:%ld:%ld", form, a, b, c);
    if (form == 0) {
        P("What is $%ld + %ld \\times %ld$?", a, b, c);
        S("Multiplication comes before addition: $%ld \\times %ld = %ld$. Then $%ld + %ld = %ld$.", b, c, b * c, a,
          b * c, a + b * c);
        A("%ld", a + b * c);
    } else if (form == 1) {
        P("Compute $%ld \\times %ld - %ld$.", a, b, c);
        S("First multiply: $%ld \\times %ld = %ld$. Then subtract: $%ld - %ld = %ld$.", a, b, a * b, a * b, c,
          a * b - c);
        A("%ld", a * b - c);
    } else {
        P("What is $(%ld + %ld) \\times %ld$?", a, b, c);
        S("The parentheses come first: $%ld + %ld = %ld$. Then $%ld \\times %ld = %ld$.", a, b, a + b, a + b, c,
          (a + b) * c);
        A("%ld", (a + b) * c);
    }
}

static void pre_percent(toy_rng *r, int L, toy_out *o) {
    static const long pcts[] = {10, 20, 25, 50, 5, 40, 75, 30, 60, 15};
    long p = pcts[toy_next(r) % (size_t)(L <= 2 ? 4 : 10)];
    long unit = 100 / gcd(p, 100);
    long n = unit * toy_int(r, 1, 2 + 2 * L);
    K("pre_pct:%ld:%ld", p, n);
    if (toy_next(r) & 1) P("What is $%ld\\%%$ of $%ld$?", p, n);
    else P("Find $%ld\\%%$ of $%ld$.", p, n);
    S("$%ld\\%%$ of $%ld$ is $\\frac{%ld}{100} \\times %ld = \\frac{%ld}{100} = %ld$.", p, n, p, n, p * n, p * n / 100);
    A("%ld", p * n / 100);
}

static void pre_frac_add(toy_rng *r, int L, toy_out *o) {
    long b = toy_int(r, 2, 3 + L), d = toy_int(r, 2, 3 + L);
    long a = toy_int(r, 1, b - 1), c = toy_int(r, 1, d - 1);
    bool sub = L >= 3 && (toy_next(r) & 1) && a * d > c * b;
    K("pre_frac:%c:%ld:%ld:%ld:%ld", sub ? '-' : '+', a, b, c, d);
    long l = b / gcd(b, d) * d, x = a * (l / b), y = c * (l / d), num = sub ? x - y : x + y;
    P("Compute $\\frac{%ld}{%ld} %c \\frac{%ld}{%ld}$. Express your answer in simplest form.", a, b, sub ? '-' : '+',
      c, d);
    S("The common denominator is $%ld$: $\\frac{%ld}{%ld} %c \\frac{%ld}{%ld} = \\frac{%ld}{%ld}$, which simplifies "
      "to $",
      l, x, l, sub ? '-' : '+', y, l, num, l);
    frac(&o->sol, num, l);
    S("$.");
    frac(&o->ans, num, l);
}

static void pre_mean(toy_rng *r, int L, toy_out *o) {
    int n = (int)toy_int(r, 2, 3 + L / 2);
    long v[8], sum = 0;
    for (int i = 0; i < n - 1; i++) sum += v[i] = toy_int(r, 1, 5 + 5 * L);
    long last = toy_int(r, 1, 5 + 5 * L);
    while ((sum + last) % n) last++;
    v[n - 1] = last;
    sum += last;
    st_buf list;
    st_buf_init(&list);
    for (int i = 0; i < n; i++) st_buf_printf(&list, "%s%ld", i ? ", " : "", v[i]);
    K("pre_mean:%s", list.data ? list.data : "");
    P("What is the mean of $%s$?", list.data ? list.data : "");
    S("The sum is $");
    for (int i = 0; i < n; i++) S("%s%ld", i ? " + " : "", v[i]);
    S(" = %ld$ and there are $%d$ numbers, so the mean is $\\frac{%ld}{%d} = %ld$.", sum, n, sum, n, sum / n);
    A("%ld", sum / n);
    st_buf_free(&list);
}

static void pre_word(toy_rng *r, int L, toy_out *o) {
    static const char *const names[] = {"Sam", "Ana", "Leo", "Mia", "Tom", "Zoe", "Raj", "Ivy"};
    /* container, its plural, what it holds */
    static const char *const things[][3] = {{"box", "boxes", "pencils"}, {"bag", "bags", "apples"},
                                            {"jar", "jars", "marbles"},  {"pack", "packs", "cards"},
                                            {"crate", "crates", "books"}, {"tray", "trays", "cookies"}};
    long a = toy_int(r, 2, 3 + 2 * L), b = toy_int(r, 2, 2 + L), c = toy_int(r, 1, 4 + 2 * L);
    size_t t = toy_next(r) % ST_ARRAY_LEN(things);
    const char *name = PICK(r, names);
    K("pre_word:%ld:%ld:%ld", a, b, c);
    P("Each %s holds $%ld$ %s. %s has $%ld$ full %s and $%ld$ more %s. How many %s does %s have?", things[t][0], a,
      things[t][2], name, b, things[t][1], c, things[t][2], things[t][2], name);
    S("The full %s hold $%ld \\times %ld = %ld$ %s. Adding the other $%ld$ gives $%ld + %ld = %ld$.", things[t][1],
      b, a, a * b, things[t][2], c, a * b, c, a * b + c);
    A("%ld", a * b + c);
}

/* ---- Algebra --------------------------------------------------------------------- */

static void alg_linear(toy_rng *r, int L, toy_out *o) {
    long x = toy_int(r, -2 * L, 2 * L + 3), a = toy_int(r, 2, 2 + L), b = toy_int(r, -4 * L, 4 * L);
    if (b == 0) b = L + 1;
    long c = a * x + b;
    K("alg_lin:%ld:%ld:%ld", a, b, c);
    if (toy_next(r) & 1) P("Solve for $x$: $%ldx %s %ld = %ld$.", a, sg(b), labs(b), c);
    else P("If $%ldx %s %ld = %ld$, what is the value of $x$?", a, sg(b), labs(b), c);
    S("%s $%ld$ %s both sides: $%ldx = %ld$. Dividing by $%ld$ gives $x = %ld$.", b > 0 ? "Subtract" : "Add",
      labs(b), b > 0 ? "from" : "to", a, c - b, a, x);
    A("%ld", x);
}

static void alg_eval(toy_rng *r, int L, toy_out *o) {
    long b = toy_int(r, -2 - L, 2 + L), c = toy_int(r, -3 - 2 * L, 3 + 2 * L), k = toy_int(r, -1 - L / 2, 2 + L / 2);
    long v = k * k + b * k + c;
    K("alg_eval:%ld:%ld:%ld", b, c, k);
    P("If $f(x) = x^2 %s %ldx %s %ld$, what is $f(%ld)$?", sg(b), labs(b), sg(c), labs(c), k);
    S("Substitute $x = %ld$: $f(%ld) = (%ld)^2 + (%ld)(%ld) + (%ld) = %ld + (%ld) + (%ld) = %ld$.", k, k, k, b, k, c,
      k * k, b * k, c, v);
    A("%ld", v);
}

static void alg_system(toy_rng *r, int L, toy_out *o) {
    long x = toy_int(r, -L, 3 + 2 * L), y = toy_int(r, -L, 3 + 2 * L);
    bool want_x = toy_next(r) & 1;
    K("alg_sys:%c:%ld:%ld", want_x ? 'x' : 'y', x, y);
    P("If $x + y = %ld$ and $x - y = %ld$, what is the value of $%c$?", x + y, x - y, want_x ? 'x' : 'y');
    if (want_x)
        S("Adding the two equations gives $2x = %ld + (%ld) = %ld$, so $x = %ld$.", x + y, x - y, 2 * x, x);
    else
        S("Subtracting the second equation from the first gives $2y = %ld - (%ld) = %ld$, so $y = %ld$.", x + y,
          x - y, 2 * y, y);
    A("%ld", want_x ? x : y);
}

static void alg_slope(toy_rng *r, int L, toy_out *o) {
    long x1 = toy_int(r, -2 - L, 2 + L), y1 = toy_int(r, -2 - L, 2 + L);
    long x2 = toy_int(r, -2 - L, 3 + L), y2 = toy_int(r, -2 - L, 3 + L);
    if (x2 == x1) x2 = x1 + 1 + L % 3;
    K("alg_slope:%ld:%ld:%ld:%ld", x1, y1, x2, y2);
    P("What is the slope of the line through $(%ld, %ld)$ and $(%ld, %ld)$?", x1, y1, x2, y2);
    S("The slope is $\\frac{%ld - (%ld)}{%ld - (%ld)} = \\frac{%ld}{%ld} = ", y2, y1, x2, x1, y2 - y1, x2 - x1);
    frac(&o->sol, y2 - y1, x2 - x1);
    S("$.");
    frac(&o->ans, y2 - y1, x2 - x1);
}

static void alg_compose(toy_rng *r, int L, toy_out *o) {
    long a = toy_int(r, 2, 2 + L / 2), b = toy_int(r, -3 - L, 3 + L), c = toy_int(r, 2, 2 + L / 2),
         d = toy_int(r, -3 - L, 3 + L), k = toy_int(r, -2, 2 + L / 2);
    long g = c * k + d, f = a * g + b;
    K("alg_comp:%ld:%ld:%ld:%ld:%ld", a, b, c, d, k);
    P("Let $f(x) = %ldx %s %ld$ and $g(x) = %ldx %s %ld$. What is $f(g(%ld))$?", a, sg(b), labs(b), c, sg(d), labs(d),
      k);
    S("First $g(%ld) = %ld(%ld) %s %ld = %ld$. Then $f(%ld) = %ld(%ld) %s %ld = %ld$.", k, c, k, sg(d), labs(d), g, g,
      a, g, sg(b), labs(b), f);
    A("%ld", f);
}

/* ---- Number Theory ------------------------------------------------------------------ */

static void nt_remainder(toy_rng *r, int L, toy_out *o) {
    long m = toy_int(r, 2, 3 + 2 * L), n = toy_int(r, m + 1, 10 + 15 * L * L);
    K("nt_rem:%ld:%ld", n, m);
    P("What is the remainder when $%ld$ is divided by $%ld$?", n, m);
    S("Since $%ld = %ld \\times %ld + %ld$, the remainder is $%ld$.", n, m, n / m, n % m, n % m);
    A("%ld", n % m);
}

static void nt_gcd(toy_rng *r, int L, toy_out *o) {
    long g = toy_int(r, 2, 2 + 3 * L), p = toy_int(r, 1, 4 + 2 * L), q = toy_int(r, 1, 4 + 2 * L);
    while (gcd(p, q) != 1 || p == q) q++;
    long a = g * p, b = g * q;
    if (a < b) {
        long t = a;
        a = b;
        b = t;
    }
    K("nt_gcd:%ld:%ld", a, b);
    P("What is the greatest common divisor of $%ld$ and $%ld$?", a, b);
    S("By the Euclidean algorithm:");
    long x = a, y = b;
    while (y) {
        S(" $%ld = %ld \\times %ld + %ld$.", x, y, x / y, x % y);
        long t = x % y;
        x = y;
        y = t;
    }
    S(" The last nonzero remainder is $%ld$.", x);
    A("%ld", x);
}

static void nt_lcm(toy_rng *r, int L, toy_out *o) {
    long a = toy_int(r, 2, 4 + 5 * L), b = toy_int(r, 2, 4 + 5 * L);
    if (a == b) b++;
    long g = gcd(a, b);
    K("nt_lcm:%ld:%ld", a < b ? a : b, a < b ? b : a);
    P("What is the least common multiple of $%ld$ and $%ld$?", a, b);
    S("The greatest common divisor of $%ld$ and $%ld$ is $%ld$, so the least common multiple is "
      "$\\frac{%ld \\times %ld}{%ld} = %ld$.",
      a, b, g, a, b, g, a * b / g);
    A("%ld", a * b / g);
}

static void nt_divisors(toy_rng *r, int L, toy_out *o) {
    long n = toy_int(r, 2, 8 + 20 * L);
    K("nt_div:%ld", n);
    P("How many positive divisors does $%ld$ have?", n);
    S("The positive divisors of $%ld$ are", n);
    int cnt = 0;
    for (long d = 1; d <= n; d++)
        if (n % d == 0) S("%s $%ld$", cnt++ ? "," : "", d);
    S(", so there are $%d$ of them.", cnt);
    A("%d", cnt);
}

static void nt_units(toy_rng *r, int L, toy_out *o) {
    long a = toy_int(r, 2, 9 + 10 * (L >= 4)), k = toy_int(r, 2, 3 + L);
    K("nt_units:%ld:%ld", a % 10, k);
    P("What is the units digit of $%ld^{%ld}$?", a, k);
    S("Only units digits matter. The units digits of the powers of $%ld$ are", a);
    long u = 1;
    for (long i = 1; i <= k; i++) {
        u = u * (a % 10) % 10;
        S("%s $%ld$", i > 1 ? "," : "", u);
    }
    S(", so the units digit of $%ld^{%ld}$ is $%ld$.", a, k, u);
    A("%ld", u);
}

/* ---- Counting & Probability --------------------------------------------------------- */

static long choose(long n, long k) {
    long c = 1;
    for (long i = 1; i <= k; i++) c = c * (n - k + i) / i;
    return c;
}

static void cp_choose(toy_rng *r, int L, toy_out *o) {
    long n = toy_int(r, 3, 6 + 2 * L), k = toy_int(r, 1, L >= 3 ? 4 : 2);
    if (k >= n) k = n - 1;
    K("cp_choose:%ld:%ld", n, k);
    if (toy_next(r) & 1) P("In how many ways can a committee of $%ld$ be chosen from $%ld$ people?", k, n);
    else P("Compute $\\binom{%ld}{%ld}$.", n, k);
    S("$\\binom{%ld}{%ld} = \\frac{", n, k);
    for (long i = 0; i < k; i++) S("%s%ld", i ? " \\times " : "", n - i);
    S("}{");
    for (long i = k; i >= 1; i--) S("%s%ld", i < k ? " \\times " : "", i);
    S("} = %ld$.", choose(n, k));
    A("%ld", choose(n, k));
}

static void cp_officers(toy_rng *r, int L, toy_out *o) {
    long n = toy_int(r, 4, 5 + 2 * L);
    int k = L >= 3 && (toy_next(r) & 1) ? 3 : 2;
    K("cp_off:%ld:%d", n, k);
    long v = n * (n - 1) * (k == 3 ? n - 2 : 1);
    if (k == 2)
        P("A club has $%ld$ members. In how many ways can it choose a president and a vice-president if no member "
          "holds both offices?",
          n);
    else
        P("A club has $%ld$ members. In how many ways can it choose a president, a secretary and a treasurer if no "
          "member holds more than one office?",
          n);
    if (k == 2) S("There are $%ld$ choices for president and then $%ld$ for vice-president: $%ld \\times %ld = %ld$.", n, n - 1, n, n - 1, v);
    else S("There are $%ld$, then $%ld$, then $%ld$ choices: $%ld \\times %ld \\times %ld = %ld$.", n, n - 1, n - 2, n, n - 1, n - 2, v);
    A("%ld", v);
}

static void cp_marbles(toy_rng *r, int L, toy_out *o) {
    long red = toy_int(r, 1, 4 + 3 * L), blue = toy_int(r, 1, 4 + 3 * L), green = L >= 3 ? toy_int(r, 1, 2 + L) : 0;
    long tot = red + blue + green;
    int c = (int)toy_int(r, 0, green ? 2 : 1);
    static const char *const col[] = {"red", "blue", "green"};
    long want = c == 0 ? red : c == 1 ? blue : green;
    K("cp_marb:%d:%ld:%ld:%ld", c, red, blue, green);
    if (green) P("A bag holds $%ld$ red, $%ld$ blue and $%ld$ green marbles. One marble is drawn at random. What is the probability that it is %s?", red, blue, green, col[c]);
    else P("A bag holds $%ld$ red and $%ld$ blue marbles. One marble is drawn at random. What is the probability that it is %s?", red, blue, col[c]);
    S("There are $%ld$ marbles, $%ld$ of them %s, so the probability is $\\frac{%ld}{%ld}", tot, want, col[c], want, tot);
    if (gcd(want, tot) > 1) {
        S(" = ");
        frac(&o->sol, want, tot);
    }
    S("$.");
    frac(&o->ans, want, tot);
}

static void cp_die(toy_rng *r, int L, toy_out *o) {
    static const long sides[] = {4, 6, 8, 10, 12, 20};
    if (L >= 4 && (toy_next(r) & 1)) { /* two six-sided dice */
        long s = toy_int(r, 2, 12), ways = s <= 7 ? s - 1 : 13 - s;
        K("cp_2dice:%ld", s);
        P("Two fair six-sided dice are rolled. What is the probability that the sum is $%ld$?", s);
        S("Of the $36$ equally likely outcomes, $%ld$ give a sum of $%ld$, so the probability is $\\frac{%ld}{36}", ways, s, ways);
        if (gcd(ways, 36) > 1) {
            S(" = ");
            frac(&o->sol, ways, 36);
        }
        S("$.");
        frac(&o->ans, ways, 36);
        return;
    }
    long n = sides[toy_next(r) % (size_t)(L <= 2 ? 2 : 6)], k = toy_int(r, 1, n - 1);
    K("cp_die:%ld:%ld", n, k);
    P("A fair $%ld$-sided die with faces $1$ to $%ld$ is rolled. What is the probability of rolling a number greater than $%ld$?", n, n, k);
    S("The numbers greater than $%ld$ are $%ld$ through $%ld$, which is $%ld$ of the $%ld$ faces, so the probability is $\\frac{%ld}{%ld}", k, k + 1, n, n - k, n, n - k, n);
    if (gcd(n - k, n) > 1) {
        S(" = ");
        frac(&o->sol, n - k, n);
    }
    S("$.");
    frac(&o->ans, n - k, n);
}

static void cp_factorial(toy_rng *r, int L, toy_out *o) {
    long k = toy_int(r, 2, 5 + 2 * L), d = toy_int(r, 1, L >= 3 ? 3 : 2), n = k + d, v = 1;
    K("cp_fact:%ld:%ld", n, k);
    P("Compute $\\frac{%ld!}{%ld!}$.", n, k);
    S("Everything up to $%ld$ cancels, leaving $", k);
    for (long i = n; i > k; i--) {
        S("%s%ld", i < n ? " \\times " : "", i);
        v *= i;
    }
    S(" = %ld$.", v);
    A("%ld", v);
}

static void cp_multiples(toy_rng *r, int L, toy_out *o) {
    long k = toy_int(r, 2, 4 + L), n = toy_int(r, 10, 20 + 20 * L);
    K("cp_mult:%ld:%ld", k, n);
    P("How many of the integers from $1$ to $%ld$ are multiples of $%ld$?", n, k);
    S("The multiples are $%ld, %ld, \\ldots, %ld$, that is $%ld \\times 1$ through $%ld \\times %ld$, since $%ld = %ld \\times %ld + %ld$. "
      "So there are $%ld$.",
      k, 2 * k, n / k * k, k, k, n / k, n, k, n / k, n % k, n / k);
    A("%ld", n / k);
}

static void cp_meals(toy_rng *r, int L, toy_out *o) {
    long a = toy_int(r, 2, 3 + 2 * L), b = toy_int(r, 2, 4 + 2 * L), c = toy_int(r, 2, 3 + 2 * L);
    K("cp_meal:%ld:%ld:%ld", a, b, c);
    P("A restaurant offers $%ld$ appetizers, $%ld$ main courses and $%ld$ desserts. How many different meals of one "
      "appetizer, one main course and one dessert are possible?",
      a, b, c);
    S("Each choice is independent, so there are $%ld \\times %ld \\times %ld = %ld$ meals.", a, b, c, a * b * c);
    A("%ld", a * b * c);
}

/* ---- Geometry ------------------------------------------------------------------------ */

static void geo_rect(toy_rng *r, int L, toy_out *o) {
    long l = toy_int(r, 2, 5 + 5 * L), w = toy_int(r, 1, 3 + 4 * L);
    bool area = toy_next(r) & 1;
    K("geo_rect:%c:%ld:%ld", area ? 'A' : 'P', l, w);
    P("A rectangle is $%ld$ units long and $%ld$ units wide. What is its %s?", l, w, area ? "area, in square units" : "perimeter, in units");
    if (area) S("The area is length times width: $%ld \\times %ld = %ld$.", l, w, l * w);
    else S("The perimeter is $2(%ld + %ld) = 2 \\times %ld = %ld$.", l, w, l + w, 2 * (l + w));
    A("%ld", area ? l * w : 2 * (l + w));
}

static void geo_triangle_area(toy_rng *r, int L, toy_out *o) {
    long b = toy_int(r, 2, 4 + 5 * L), h = toy_int(r, 2, 4 + 4 * L);
    if ((b * h) % 2) h++;
    K("geo_tri:%ld:%ld", b, h);
    P("A triangle has base $%ld$ and height $%ld$. What is its area?", b, h);
    S("The area is $\\frac{1}{2} \\times %ld \\times %ld = \\frac{%ld}{2} = %ld$.", b, h, b * h, b * h / 2);
    A("%ld", b * h / 2);
}

static void geo_pythag(toy_rng *r, int L, toy_out *o) {
    static const long tri[][3] = {{3, 4, 5}, {5, 12, 13}, {8, 15, 17}, {7, 24, 25}, {6, 8, 10}, {9, 12, 15}};
    size_t t = toy_next(r) % (size_t)(L <= 2 ? 2 : 6);
    long k = toy_int(r, 1, L >= 4 ? 4 : 2);
    long a = tri[t][0] * k, b = tri[t][1] * k, c = tri[t][2] * k;
    bool hyp = L <= 2 || (toy_next(r) & 1);
    K("geo_pyth:%c:%ld:%ld:%ld", hyp ? 'c' : 'b', a, b, c);
    if (hyp) {
        P("A right triangle has legs of length $%ld$ and $%ld$. What is the length of its hypotenuse?", a, b);
        S("By the Pythagorean theorem the hypotenuse is $\\sqrt{%ld^2 + %ld^2} = \\sqrt{%ld + %ld} = \\sqrt{%ld} = %ld$.", a, b, a * a, b * b, c * c, c);
        A("%ld", c);
    } else {
        P("A right triangle has hypotenuse $%ld$ and one leg $%ld$. What is the length of the other leg?", c, a);
        S("By the Pythagorean theorem the other leg is $\\sqrt{%ld^2 - %ld^2} = \\sqrt{%ld - %ld} = \\sqrt{%ld} = %ld$.", c, a, c * c, a * a, b * b, b);
        A("%ld", b);
    }
}

static void geo_angles(toy_rng *r, int L, toy_out *o) {
    int form = (int)toy_int(r, 0, L >= 3 ? 2 : 0);
    if (form == 0) {
        long a = toy_int(r, 20, 100), b = toy_int(r, 20, 150 - a);
        K("geo_ang3:%ld:%ld", a < b ? a : b, a < b ? b : a);
        P("Two angles of a triangle measure $%ld^\\circ$ and $%ld^\\circ$. How many degrees are in the third angle?", a, b);
        S("The angles of a triangle add to $180^\\circ$, so the third angle is $180 - %ld - %ld = %ld$ degrees.", a, b, 180 - a - b);
        A("%ld", 180 - a - b);
    } else if (form == 1) {
        long n = toy_int(r, 5, 6 + 2 * L);
        K("geo_angsum:%ld", n);
        P("What is the sum, in degrees, of the interior angles of a polygon with $%ld$ sides?", n);
        S("The sum is $180(n - 2) = 180 \\times %ld = %ld$ degrees.", n - 2, 180 * (n - 2));
        A("%ld", 180 * (n - 2));
    } else {
        static const long ns[] = {3, 4, 5, 6, 8, 9, 10, 12, 15, 18, 20};
        long n = ns[toy_next(r) % ST_ARRAY_LEN(ns)];
        K("geo_angreg:%ld", n);
        P("How many degrees are in each interior angle of a regular polygon with $%ld$ sides?", n);
        S("Each exterior angle is $\\frac{360}{%ld} = %ld$ degrees, so each interior angle is $180 - %ld = %ld$ degrees.", n, 360 / n, 360 / n, 180 - 360 / n);
        A("%ld", 180 - 360 / n);
    }
}

static void geo_circle(toy_rng *r, int L, toy_out *o) {
    long rad = toy_int(r, 1, 3 + 2 * L);
    bool area = toy_next(r) & 1, diam = L >= 3 && (toy_next(r) & 1);
    K("geo_circ:%c:%ld", area ? 'A' : 'C', rad);
    if (diam) P("A circle has diameter $%ld$. What is its %s? Express your answer in terms of $\\pi$.", 2 * rad, area ? "area" : "circumference");
    else P("A circle has radius $%ld$. What is its %s? Express your answer in terms of $\\pi$.", rad, area ? "area" : "circumference");
    if (diam) S("The radius is half the diameter, $%ld$. ", rad);
    long v = area ? rad * rad : 2 * rad;
    if (area) S("The area is $\\pi r^2 = \\pi \\times %ld^2 = ", rad);
    else S("The circumference is $2\\pi r = 2\\pi \\times %ld = ", rad);
    if (v == 1) {
        S("\\pi$.");
        A("\\pi");
    } else {
        S("%ld\\pi$.", v);
        A("%ld\\pi", v);
    }
}

/* ---- Intermediate Algebra -------------------------------------------------------------- */

static void ia_vieta(toy_rng *r, int L, toy_out *o) {
    long r1 = toy_int(r, -2 - L, 3 + L), r2 = toy_int(r, -2 - L, 3 + L), s = r1 + r2, p = r1 * r2;
    int form = (int)toy_int(r, 0, L >= 3 ? 2 : 1);
    K("ia_quad:%d:%ld:%ld", form, r1 < r2 ? r1 : r2, r1 < r2 ? r2 : r1);
    st_buf q;
    st_buf_init(&q);
    st_buf_printf(&q, "x^2");
    if (s) st_buf_printf(&q, " %s %s", s > 0 ? "-" : "+", labs(s) == 1 ? "x" : "");
    if (s && labs(s) != 1) st_buf_printf(&q, "%ldx", labs(s));
    if (p) st_buf_printf(&q, " %s %ld", sg(p), labs(p));
    const char *eq = q.data ? q.data : "";
    if (form == 0) {
        P("What is the sum of the roots of $%s = 0$?", eq);
        S("For $x^2 + bx + c = 0$ the roots add to $-b$, so the sum is $%ld$.", s);
        A("%ld", s);
    } else if (form == 1) {
        P("What is the product of the roots of $%s = 0$?", eq);
        S("For $x^2 + bx + c = 0$ the roots multiply to $c$, so the product is $%ld$.", p);
        A("%ld", p);
    } else {
        long big = r1 > r2 ? r1 : r2, small = r1 > r2 ? r2 : r1;
        P("What is the largest solution of $%s = 0$?", eq);
        S("The equation factors as $(x %s %ld)(x %s %ld) = 0$, so $x = %ld$ or $x = %ld$. The largest is $%ld$.", sg(-small), labs(small), sg(-big), labs(big), small, big, big);
        A("%ld", big);
    }
    st_buf_free(&q);
}

static void ia_remainder(toy_rng *r, int L, toy_out *o) {
    long a = toy_int(r, -3, 3), b = toy_int(r, -2 - L, 2 + L), c = toy_int(r, -3 - L, 3 + L), k = toy_int(r, -2, 2 + (L >= 4));
    long v = k * k * k + a * k * k + b * k + c;
    K("ia_rem:%ld:%ld:%ld:%ld", a, b, c, k);
    P("What is the remainder when $x^3 %s %ldx^2 %s %ldx %s %ld$ is divided by $x %s %ld$?", sg(a), labs(a), sg(b), labs(b), sg(c), labs(c), sg(-k), labs(k));
    S("By the remainder theorem the remainder is $p(%ld) = (%ld)^3 + (%ld)(%ld)^2 + (%ld)(%ld) + (%ld) = %ld + (%ld) + (%ld) + (%ld) = %ld$.", k, k, a, k, b, k, c, k * k * k, a * k * k, b * k, c, v);
    A("%ld", v);
}

static void ia_abs(toy_rng *r, int L, toy_out *o) {
    long a = toy_int(r, -3 - L, 3 + L), b = toy_int(r, 1, 2 + 2 * L);
    bool sum = toy_next(r) & 1;
    K("ia_abs:%c:%ld:%ld", sum ? 's' : 'm', a, b);
    P("What is the %s of all solutions of $|x %s %ld| = %ld$?", sum ? "sum" : "largest", sg(-a), labs(a), b);
    S("Either $x %s %ld = %ld$ or $x %s %ld = -%ld$, so $x = %ld$ or $x = %ld$. ", sg(-a), labs(a), b, sg(-a), labs(a), b, a + b, a - b);
    if (sum) S("Their sum is $%ld$.", 2 * a);
    else S("The largest is $%ld$.", a + b);
    A("%ld", sum ? 2 * a : a + b);
}

static void ia_sequence(toy_rng *r, int L, toy_out *o) {
    if (L >= 3 && (toy_next(r) & 1)) {
        long a = toy_int(r, 1, 3), q = toy_int(r, 2, 3), n = toy_int(r, 3, 4 + L / 2), v = a;
        K("ia_geo:%ld:%ld:%ld", a, q, n);
        P("A geometric sequence has first term $%ld$ and common ratio $%ld$. What is its term number $%ld$?", a, q, n);
        S("The terms are $%ld$", a);
        for (long i = 2; i <= n; i++) S(", $%ld$", v *= q);
        S(", so term $%ld$ is $%ld$.", n, v);
        A("%ld", v);
        return;
    }
    long a = toy_int(r, -5, 10), d = toy_int(r, -3, 3 + L), n = toy_int(r, 4, 6 + 3 * L);
    if (d == 0) d = 2;
    long v = a + (n - 1) * d;
    K("ia_arith:%ld:%ld:%ld", a, d, n);
    P("The first term of an arithmetic sequence is $%ld$ and the common difference is $%ld$. What is term number $%ld$?", a, d, n);
    S("Term $n$ is $a + (n - 1)d = %ld + %ld \\times (%ld) = %ld + (%ld) = %ld$.", a, n - 1, d, a, (n - 1) * d, v);
    A("%ld", v);
}

static void ia_log(toy_rng *r, int L, toy_out *o) {
    long b = toy_int(r, 2, 3 + L), k = toy_int(r, L >= 4 ? -2 : 1, 2 + L / 2), n = 1;
    if (k == 0) k = 1;
    for (long i = 0; i < labs(k); i++) n *= b;
    K("ia_log:%ld:%ld", b, k);
    if (k > 0) {
        P("Evaluate $\\log_{%ld} %ld$.", b, n);
        S("Since $%ld^{%ld} = %ld$, $\\log_{%ld} %ld = %ld$.", b, k, n, b, n, k);
    } else {
        P("Evaluate $\\log_{%ld} \\frac{1}{%ld}$.", b, n);
        S("Since $%ld^{%ld} = \\frac{1}{%ld}$, $\\log_{%ld} \\frac{1}{%ld} = %ld$.", b, k, n, b, n, k);
    }
    A("%ld", k);
}

/* ---- Precalculus --------------------------------------------------------------------- */

static void pc_det(toy_rng *r, int L, toy_out *o) {
    long m = 2 + L;
    long a = toy_int(r, -m, m), b = toy_int(r, -m, m), c = toy_int(r, -m, m), d = toy_int(r, -m, m);
    K("pc_det:%ld:%ld:%ld:%ld", a, b, c, d);
    P("Compute $\\begin{vmatrix} %ld & %ld \\\\ %ld & %ld \\end{vmatrix}$.", a, b, c, d);
    S("The determinant is $(%ld)(%ld) - (%ld)(%ld) = %ld - (%ld) = %ld$.", a, d, b, c, a * d, b * c, a * d - b * c);
    A("%ld", a * d - b * c);
}

static void pc_dot(toy_rng *r, int L, toy_out *o) {
    int n = L <= 2 ? 2 : 3;
    long u[3], v[3], s = 0, m = 2 + L;
    for (int i = 0; i < n; i++) {
        u[i] = toy_int(r, -m, m);
        v[i] = toy_int(r, -m, m);
        s += u[i] * v[i];
    }
    K("pc_dot:%d:%ld:%ld:%ld:%ld:%ld:%ld", n, u[0], u[1], n == 3 ? u[2] : 0, v[0], v[1], n == 3 ? v[2] : 0);
    P("Compute $\\begin{pmatrix} %ld \\\\ %ld", u[0], u[1]);
    if (n == 3) P(" \\\\ %ld", u[2]);
    P(" \\end{pmatrix} \\cdot \\begin{pmatrix} %ld \\\\ %ld", v[0], v[1]);
    if (n == 3) P(" \\\\ %ld", v[2]);
    P(" \\end{pmatrix}$.");
    S("The dot product is $");
    for (int i = 0; i < n; i++) S("%s(%ld)(%ld)", i ? " + " : "", u[i], v[i]);
    S(" = ");
    for (int i = 0; i < n; i++) S("%s%ld", i ? " + " : "", u[i] * v[i]);
    S(" = %ld$.", s);
    A("%ld", s);
}

static void pc_norm(toy_rng *r, int L, toy_out *o) {
    static const long t3[][4] = {{1, 2, 2, 3}, {2, 3, 6, 7}, {1, 4, 8, 9}, {2, 6, 9, 11}, {4, 4, 7, 9}};
    static const long t2[][3] = {{3, 4, 5}, {5, 12, 13}, {6, 8, 10}, {8, 15, 17}};
    if (L >= 3 && (toy_next(r) & 1)) {
        size_t t = toy_next(r) % ST_ARRAY_LEN(t3);
        long s0 = toy_next(r) & 1 ? -1 : 1, s1 = toy_next(r) & 1 ? -1 : 1, k = toy_int(r, 1, 2);
        long x = s0 * k * t3[t][0], y = s1 * k * t3[t][1], z = k * t3[t][2], n = k * t3[t][3];
        K("pc_norm3:%ld:%ld:%ld", x, y, z);
        P("Find the length of the vector $\\begin{pmatrix} %ld \\\\ %ld \\\\ %ld \\end{pmatrix}$.", x, y, z);
        S("The length is $\\sqrt{(%ld)^2 + (%ld)^2 + (%ld)^2} = \\sqrt{%ld} = %ld$.", x, y, z, n * n, n);
        A("%ld", n);
        return;
    }
    size_t t = toy_next(r) % ST_ARRAY_LEN(t2);
    long s0 = toy_next(r) & 1 ? -1 : 1, s1 = toy_next(r) & 1 ? -1 : 1, k = toy_int(r, 1, 1 + L / 2);
    long x = s0 * k * t2[t][0], y = s1 * k * t2[t][1], n = k * t2[t][2];
    if (toy_next(r) & 1) {
        long tmp = x;
        x = y;
        y = tmp;
    }
    K("pc_norm2:%ld:%ld", x, y);
    P("Find the length of the vector $\\begin{pmatrix} %ld \\\\ %ld \\end{pmatrix}$.", x, y);
    S("The length is $\\sqrt{(%ld)^2 + (%ld)^2} = \\sqrt{%ld + %ld} = \\sqrt{%ld} = %ld$.", x, y, x * x, y * y, n * n, n);
    A("%ld", n);
}

/* k pi / n in lowest terms as MATH writes it: "\frac{2\pi}{3}", "\pi", "3\pi". */
static void pi_frac(st_buf *b, long k, long n) {
    long g = gcd(k, n);
    k /= g;
    n /= g;
    if (k == 0) st_buf_printf(b, "0");
    else if (n == 1) st_buf_printf(b, k == 1 ? "\\pi" : "%ld\\pi", k);
    else if (k == 1) st_buf_printf(b, "\\frac{\\pi}{%ld}", n);
    else st_buf_printf(b, "\\frac{%ld\\pi}{%ld}", k, n);
}

static void pc_radians(toy_rng *r, int L, toy_out *o) {
    long deg = 15 * toy_int(r, 1, L <= 2 ? 12 : 24);
    K("pc_rad:%ld", deg);
    P("Convert $%ld^\\circ$ to radians.", deg);
    S("Multiply by $\\frac{\\pi}{180}$: $%ld \\times \\frac{\\pi}{180} = ", deg);
    pi_frac(&o->sol, deg, 180);
    S("$.");
    pi_frac(&o->ans, deg, 180);
}

static void pc_trig(toy_rng *r, int L, toy_out *o) {
    /* values at multiples of 30 and 45 degrees, as (sign, kind): 0 -> 0, 1 -> 1/2,
     * 2 -> sqrt2/2, 3 -> sqrt3/2, 4 -> 1 */
    static const char *const val[] = {"0", "\\frac{1}{2}", "\\frac{\\sqrt{2}}{2}", "\\frac{\\sqrt{3}}{2}", "1"};
    long deg = toy_next(r) & 1 ? 30 * toy_int(r, 0, L <= 2 ? 3 : 11) : 45 * toy_int(r, 0, L <= 2 ? 2 : 7);
    bool is_sin = toy_next(r) & 1;
    long ref = deg % 180;
    if (ref > 90) ref = 180 - ref;
    int kind = ref == 0 ? 0 : ref == 30 ? (is_sin ? 1 : 3) : ref == 45 ? 2 : ref == 60 ? (is_sin ? 3 : 1) : 4;
    if (ref == 0 && !is_sin) kind = 4;
    if (ref == 90 && !is_sin) kind = 0;
    bool neg = is_sin ? (deg > 180 && deg < 360) : (deg > 90 && deg < 270);
    K("pc_trig:%c:%ld", is_sin ? 's' : 'c', deg);
    P("Compute $\\%s %ld^\\circ$.", is_sin ? "sin" : "cos", deg);
    if (deg <= 90)
        S("This is a standard value: $\\%s %ld^\\circ = %s$.", is_sin ? "sin" : "cos", deg, val[kind]);
    else
        S("The reference angle is $%ld^\\circ$ and $\\%s$ is %s there, so $\\%s %ld^\\circ = %s%s$.", ref,
          is_sin ? "sin" : "cos", neg ? "negative" : "not negative", is_sin ? "sin" : "cos", deg,
          neg && kind ? "-" : "", val[kind]);
    A("%s%s", neg && kind ? "-" : "", val[kind]);
}

static void pc_complex(toy_rng *r, int L, toy_out *o) {
    long m = 1 + L;
    long a = toy_int(r, -m, m), b = toy_int(r, 1, m), c = toy_int(r, -m, m), d = toy_int(r, 1, m);
    if (toy_next(r) & 1) b = -b;
    long re = a * c - b * d, im = a * d + b * c;
    K("pc_cx:%ld:%ld:%ld:%ld", a, b, c, d);
    P("Simplify $(%ld %s %ldi)(%ld + %ldi)$.", a, sg(b), labs(b), c, d);
    S("Expanding, $(%ld)(%ld) + (%ld)(%ldi) + (%ldi)(%ld) + (%ldi)(%ldi) = %ld + %ldi + %ldi + (%ld)i^2$. Since $i^2 = -1$ "
      "this is $%ld %s %ldi$.",
      a, c, a, d, b, c, b, d, a * c, a * d, b * c, b * d, re, sg(im), labs(im));
    if (im == 0) A("%ld", re);
    else A("%ld%s%ldi", re, im < 0 ? "-" : "+", labs(im));
}

/* ---- table ------------------------------------------------------------------------- */

typedef void (*toy_fn)(toy_rng *, int, toy_out *);

static const toy_fn templates[STETHO_TOY_N_SUBJECTS][8] = {
    [STETHO_TOY_ALGEBRA] = {alg_linear, alg_eval, alg_system, alg_slope, alg_compose},
    [STETHO_TOY_COUNTING] = {cp_choose, cp_officers, cp_marbles, cp_die, cp_factorial, cp_multiples, cp_meals},
    [STETHO_TOY_GEOMETRY] = {geo_rect, geo_triangle_area, geo_pythag, geo_angles, geo_circle},
    [STETHO_TOY_INTERMEDIATE] = {ia_vieta, ia_remainder, ia_abs, ia_sequence, ia_log},
    [STETHO_TOY_NUMBER_THEORY] = {nt_remainder, nt_gcd, nt_lcm, nt_divisors, nt_units},
    [STETHO_TOY_PREALGEBRA] = {pre_order_ops, pre_percent, pre_frac_add, pre_mean, pre_word},
    [STETHO_TOY_PRECALCULUS] = {pc_det, pc_dot, pc_norm, pc_radians, pc_trig, pc_complex},
};

/* The templates' names as the data files record them ("template" field). */
static const char *const template_names[STETHO_TOY_N_SUBJECTS][8] = {
    [STETHO_TOY_ALGEBRA] = {"linear", "eval", "system", "slope", "compose"},
    [STETHO_TOY_COUNTING] = {"choose", "officers", "marbles", "die", "factorial", "multiples", "meals"},
    [STETHO_TOY_GEOMETRY] = {"rect", "triangle_area", "pythag", "angles", "circle"},
    [STETHO_TOY_INTERMEDIATE] = {"vieta", "remainder", "abs", "sequence", "log"},
    [STETHO_TOY_NUMBER_THEORY] = {"remainder", "gcd", "lcm", "divisors", "units"},
    [STETHO_TOY_PREALGEBRA] = {"order_ops", "percent", "frac_add", "mean", "word"},
    [STETHO_TOY_PRECALCULUS] = {"det", "dot", "norm", "radians", "trig", "complex"},
};

const char *toy_template_name(int subject, int template_id) {
    if (template_id < 0 || template_id >= toy_n_templates(subject)) return NULL;
    return template_names[subject][template_id];
}

int toy_n_templates(int subject) {
    if (subject < 0 || subject >= STETHO_TOY_N_SUBJECTS) return 0;
    int n = 0;
    while (n < 8 && templates[subject][n]) n++;
    return n;
}

void toy_generate(int subject, int template_id, toy_rng *r, int level, toy_out *o) {
    templates[subject][template_id](r, level, o);
}
