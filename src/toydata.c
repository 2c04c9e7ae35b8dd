/* The tiny world's data step: math problems generated from the templates in
 * toydata_subjects.c, split into train and test by a hash of each problem's fact
 * key, written as MATH-style JSONL; general text loaded (or generated); a mixed
 * training stream; and the whole step of `stetho toy build` including the
 * tokenizer (bpe_train.c). Deterministic for a seed. */
#include "toydata_internal.h"
#include "stetho/bpe_train.h"
#include "stetho/jsonl.h"
#include "stetho/tokenizer.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *const subj_names[STETHO_TOY_N_SUBJECTS] = {
    "algebra", "counting_and_probability", "geometry", "intermediate_algebra", "number_theory", "prealgebra",
    "precalculus"};
static const char *const subj_types[STETHO_TOY_N_SUBJECTS] = {
    "Algebra", "Counting & Probability", "Geometry", "Intermediate Algebra", "Number Theory", "Prealgebra",
    "Precalculus"};

const char *stetho_toy_subject_name(int s) { return s >= 0 && s < STETHO_TOY_N_SUBJECTS ? subj_names[s] : NULL; }
const char *stetho_toy_subject_type(int s) { return s >= 0 && s < STETHO_TOY_N_SUBJECTS ? subj_types[s] : NULL; }

static uint64_t hash_str(const char *s, uint64_t seed) {
    uint64_t h = 1469598103934665603ULL ^ seed;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    toy_rng r = {h};
    return toy_next(&r);
}

/* ---- sets ---------------------------------------------------------------------------- */

static void problem_free(stetho_toy_problem *p) {
    st_free(p->problem);
    st_free(p->solution);
    st_free(p->answer);
    st_free(p->key);
}

void stetho_toy_set_free(stetho_toy_set *set) {
    if (!set) return;
    for (size_t i = 0; i < set->n; i++) problem_free(&set->items[i]);
    st_free(set->items);
    memset(set, 0, sizeof *set);
}

static stetho_status set_push(stetho_toy_set *set, stetho_toy_problem *p) {
    if (set->n == set->cap) {
        size_t nc = set->cap ? set->cap * 2 : 256, bytes;
        if (!st_mul_size(nc, sizeof *set->items, &bytes)) return st_err(STETHO_ERR_NOMEM, "toy: too many problems");
        stetho_toy_problem *ni = st_realloc(set->items, bytes);
        if (!ni) return STETHO_ERR_NOMEM;
        set->items = ni;
        set->cap = nc;
    }
    set->items[set->n++] = *p;
    return STETHO_OK;
}

/* A set of 64-bit hashes (problem texts already taken in a split). */
typedef struct {
    uint64_t *slot;
    size_t cap, n;
} hash_set;

/* Insert h; false if present. *nomem set on allocation failure. */
static bool hs_insert(hash_set *s, uint64_t h, bool *nomem) {
    if (h == 0) h = 1;
    if ((s->n + 1) * 2 > s->cap) {
        size_t nc = s->cap ? s->cap * 2 : 1024;
        uint64_t *ns = st_calloc(nc, sizeof *ns);
        if (!ns) {
            *nomem = true;
            return false;
        }
        for (size_t i = 0; i < s->cap; i++) {
            if (!s->slot[i]) continue;
            size_t j = s->slot[i] & (nc - 1);
            while (ns[j]) j = (j + 1) & (nc - 1);
            ns[j] = s->slot[i];
        }
        st_free(s->slot);
        s->slot = ns;
        s->cap = nc;
    }
    size_t j = h & (s->cap - 1);
    while (s->slot[j]) {
        if (s->slot[j] == h) return false;
        j = (j + 1) & (s->cap - 1);
    }
    s->slot[j] = h;
    s->n++;
    return true;
}

/* Share of fact keys (in percent) that go to test. Enough that the test quota
 * fills long before train's, small enough that train keeps most facts. */
#define TEST_PERCENT 12

static stetho_status gen_subject(int subj, const stetho_toy_math_options *opt, stetho_toy_set *train,
                                 stetho_toy_set *test) {
    toy_rng r = {opt->seed * 0x9E3779B97F4A7C15ULL + (uint64_t)subj * 0x632BE59BD9B4E019ULL + 1};
    hash_set seen[2] = {{0}, {0}};
    size_t got[2] = {0, 0}, want[2] = {opt->train_per_subject, opt->test_per_subject};
    int nt = toy_n_templates(subj);
    /* no template may fill more than three times its share of the test set, so a
     * subject's test accuracy is not one template's */
    size_t per_template[8] = {0}, tcap = 3 * ((want[1] + (size_t)nt - 1) / (size_t)nt);
    size_t attempts = 0, max_attempts = 50 * (want[0] + want[1]) + 1000;
    stetho_status st = STETHO_OK;
    while ((got[0] < want[0] || got[1] < want[1]) && attempts++ < max_attempts) {
        int t = (int)(toy_next(&r) % (uint64_t)nt), level = (int)toy_int(&r, 1, 5);
        toy_out o;
        st_buf_init(&o.prob);
        st_buf_init(&o.sol);
        st_buf_init(&o.ans);
        st_buf_init(&o.key);
        toy_generate(subj, t, &r, level, &o);
        /* the worked solution ends the way Minerva's few-shot examples do */
        st_buf_printf(&o.sol, " Therefore the answer is $\\boxed{%s}$.\nFinal Answer: The final answer is $%s$. I hope it is correct.",
                      o.ans.data ? o.ans.data : "", o.ans.data ? o.ans.data : "");
        bool nomem = o.prob.failed || o.sol.failed || o.ans.failed || o.key.failed || !o.prob.data || !o.key.data;
        int split = 0;
        bool keep = false;
        if (!nomem) {
            split = hash_str(o.key.data, opt->seed) % 100 < TEST_PERCENT;
            keep = got[split] < want[split] && (!split || per_template[t] < tcap) && hs_insert(&seen[split], hash_str(o.prob.data, 0), &nomem);
        }
        if (nomem) {
            st = st_err(STETHO_ERR_NOMEM, "toy: out of memory generating problems");
        } else if (keep) {
            stetho_toy_problem p = {.problem = o.prob.data, .solution = o.sol.data, .answer = o.ans.data,
                                    .key = o.key.data, .level = level, .subject = subj, .template_id = t};
            if (!(st = set_push(split ? test : train, &p))) {
                got[split]++;
                if (split) per_template[t]++;
                continue; /* buffers now owned by the set */
            }
        }
        st_buf_free(&o.prob);
        st_buf_free(&o.sol);
        st_buf_free(&o.ans);
        st_buf_free(&o.key);
        if (st) break;
    }
    st_free(seen[0].slot);
    st_free(seen[1].slot);
    if (!st && got[1] < want[1])
        st = st_err(STETHO_ERR_UNSUPPORTED, "toy: %s has only %zu distinct test problems (%zu asked for)",
                    subj_names[subj], got[1], want[1]);
    return st;
}

stetho_status stetho_toy_math_generate(const stetho_toy_math_options *opt, stetho_toy_set *train,
                                       stetho_toy_set *test) {
    if (!opt || !train || !test) return st_err(STETHO_ERR_INVALID, "toy: NULL argument");
    memset(train, 0, sizeof *train);
    memset(test, 0, sizeof *test);
    for (int s = 0; s < STETHO_TOY_N_SUBJECTS; s++) {
        stetho_status st = gen_subject(s, opt, train, test);
        if (st) {
            stetho_toy_set_free(train);
            stetho_toy_set_free(test);
            return st;
        }
    }
    return STETHO_OK;
}

/* ---- files ------------------------------------------------------------------------------ */

typedef struct {
    FILE *fp;
    st_buf tmp;
    const char *path;
} out_file;

static stetho_status of_open(out_file *f, const char *path) {
    f->path = path;
    st_buf_init(&f->tmp);
    if (!st_buf_printf(&f->tmp, "%s.tmp.%ld", path, (long)getpid())) return STETHO_ERR_NOMEM;
    if (!(f->fp = fopen(f->tmp.data, "wb"))) {
        stetho_status st = st_err(STETHO_ERR_IO, "%s: cannot create: %s", f->tmp.data, strerror(errno));
        st_buf_free(&f->tmp);
        return st;
    }
    return STETHO_OK;
}

static bool of_write(out_file *f, const void *p, size_t n) {
    return !st_fault_write_fires() && fwrite(p, 1, n, f->fp) == n;
}

/* Close and rename into place when ok, else remove the temporary file. */
static stetho_status of_close(out_file *f, bool ok) {
    if (fclose(f->fp) != 0) ok = false;
    stetho_status st = STETHO_OK;
    if (!ok || rename(f->tmp.data, f->path) != 0) {
        st = st_err(STETHO_ERR_IO, "%s: write failed: %s", f->path, ok ? strerror(errno) : "write error or disk full");
        remove(f->tmp.data);
    }
    st_buf_free(&f->tmp);
    return st;
}

stetho_status stetho_toy_math_write(const stetho_toy_set *set, const char *split, const char *path) {
    if (!set || !split || !path) return st_err(STETHO_ERR_INVALID, "toy: NULL argument");
    out_file f;
    stetho_status st = of_open(&f, path);
    if (st) return st;
    bool ok = true;
    size_t idx[STETHO_TOY_N_SUBJECTS] = {0};
    for (size_t i = 0; ok && i < set->n; i++) {
        const stetho_toy_problem *p = &set->items[i];
        char id[128], level[16];
        snprintf(id, sizeof id, "%s/%s/%zu", split, subj_names[p->subject], idx[p->subject]++);
        snprintf(level, sizeof level, "Level %d", p->level);
        const char *tname = toy_template_name(p->subject, p->template_id);
        json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:s}", "unique_id", id, "subject", subj_names[p->subject],
                              "level", level, "type", subj_types[p->subject], "template", tname ? tname : "",
                              "problem", p->problem, "solution", p->solution);
        char *line = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
        json_decref(o);
        if (!line) {
            of_close(&f, false);
            return st_err(STETHO_ERR_NOMEM, "%s: out of memory", path);
        }
        ok = of_write(&f, line, strlen(line)) && of_write(&f, "\n", 1);
        free(line);
    }
    return of_close(&f, ok);
}

stetho_status stetho_toy_render(const char *problem, const char *solution, char **out) {
    st_buf b;
    st_buf_init(&b);
    if (!st_buf_printf(&b, "Problem:\n%s\n\nSolution: %s", problem, solution)) {
        st_buf_free(&b);
        return st_err(STETHO_ERR_NOMEM, "toy: out of memory");
    }
    *out = b.data;
    return STETHO_OK;
}

/* ---- documents ---------------------------------------------------------------------------- */

void stetho_toy_docs_free(stetho_toy_docs *d) {
    if (!d) return;
    for (size_t i = 0; i < d->n; i++) st_free(d->text[i]);
    st_free(d->text);
    st_free(d->len);
    st_free(d->is_math);
    memset(d, 0, sizeof *d);
}

/* Take ownership of text (even on failure). */
static stetho_status docs_push(stetho_toy_docs *d, char *text, size_t len, bool is_math) {
    if (d->n == d->cap) {
        size_t nc = d->cap ? d->cap * 2 : 256, b1, b2;
        if (!st_mul_size(nc, sizeof *d->text, &b1) || !st_mul_size(nc, sizeof *d->len, &b2)) {
            st_free(text);
            return st_err(STETHO_ERR_NOMEM, "toy: too many documents");
        }
        char **nt = st_realloc(d->text, b1);
        if (nt) d->text = nt;
        size_t *nl = nt ? st_realloc(d->len, b2) : NULL;
        if (nl) d->len = nl;
        uint8_t *nm = nl ? st_realloc(d->is_math, nc) : NULL;
        if (!nm) {
            st_free(text);
            return STETHO_ERR_NOMEM;
        }
        d->is_math = nm;
        d->cap = nc;
    }
    d->text[d->n] = text;
    d->len[d->n] = len;
    d->is_math[d->n] = is_math;
    d->n++;
    return STETHO_OK;
}

stetho_status stetho_toy_docs_add(stetho_toy_docs *d, const char *text, size_t len, bool is_math) {
    size_t n1;
    if (!st_add_size(len, 1, &n1)) return st_err(STETHO_ERR_NOMEM, "toy: document too large");
    char *c = st_malloc(n1);
    if (!c) return STETHO_ERR_NOMEM;
    memcpy(c, text, len);
    c[len] = 0;
    return docs_push(d, c, len, is_math);
}

stetho_status stetho_toy_docs_load_jsonl(stetho_toy_docs *d, const char *path, const char *field, bool is_math) {
    stetho_jsonl_reader r;
    stetho_status st = stetho_jsonl_open(&r, path);
    if (st) return st;
    bool got;
    while (!(st = stetho_jsonl_next(&r, &got)) && got) {
        json_t *v = json_object_get(r.obj, field);
        if (!json_is_string(v)) {
            st = st_err(STETHO_ERR_FORMAT, "%s:%zu: missing string field '%s'", path, r.line_no, field);
            break;
        }
        if ((st = stetho_toy_docs_add(d, json_string_value(v), json_string_length(v), is_math))) break;
    }
    stetho_jsonl_close(&r);
    return st;
}

stetho_status stetho_toy_docs_add_math(stetho_toy_docs *d, const stetho_toy_set *set) {
    for (size_t i = 0; i < set->n; i++) {
        char *t = NULL;
        stetho_status st = stetho_toy_render(set->items[i].problem, set->items[i].solution, &t);
        if (st) return st;
        if ((st = docs_push(d, t, strlen(t), true))) return st;
    }
    return STETHO_OK;
}

/* A pool walked in shuffled order, reshuffled each time it is used up. */
typedef struct {
    const stetho_toy_docs *d;
    size_t *perm, pos;
    toy_rng r;
} pool;

static void pool_shuffle(pool *p) {
    for (size_t i = p->d->n; i > 1; i--) {
        size_t j = toy_next(&p->r) % i, t = p->perm[i - 1];
        p->perm[i - 1] = p->perm[j];
        p->perm[j] = t;
    }
    p->pos = 0;
}

static size_t pool_next(pool *p) {
    if (p->pos == p->d->n) pool_shuffle(p);
    return p->perm[p->pos++];
}

stetho_status stetho_toy_mix(const stetho_toy_docs *general, const stetho_toy_docs *math, double math_frac,
                             size_t total_bytes, uint64_t seed, stetho_toy_docs *out) {
    if (!general || !math || !out || !(math_frac >= 0 && math_frac <= 1))
        return st_err(STETHO_ERR_INVALID, "toy: mix needs two document sets and a math fraction in [0, 1]");
    if ((math_frac > 0 && math->n == 0) || (math_frac < 1 && general->n == 0))
        return st_err(STETHO_ERR_INVALID, "toy: mix asks for documents from an empty set");
    pool pg = {general, NULL, 0, {seed ^ 0x1234567ULL}}, pm = {math, NULL, 0, {seed ^ 0x89ABCDEFULL}};
    stetho_status st = STETHO_OK;
    size_t b1, b2;
    if (!st_mul_size(general->n + 1, sizeof(size_t), &b1) || !st_mul_size(math->n + 1, sizeof(size_t), &b2))
        return st_err(STETHO_ERR_NOMEM, "toy: too many documents");
    pg.perm = st_malloc(b1);
    pm.perm = st_malloc(b2);
    if (!pg.perm || !pm.perm) {
        st = STETHO_ERR_NOMEM;
        goto done;
    }
    for (size_t i = 0; i < general->n; i++) pg.perm[i] = i;
    for (size_t i = 0; i < math->n; i++) pm.perm[i] = i;
    pool_shuffle(&pg);
    pool_shuffle(&pm);
    double bytes_math = 0, bytes_all = 0;
    while (bytes_all < (double)total_bytes) {
        /* take from whichever pool is behind its share */
        bool take_math = math_frac >= 1 || (math_frac > 0 && bytes_math < math_frac * (bytes_all + 1));
        pool *p = take_math ? &pm : &pg;
        size_t i = pool_next(p);
        if ((st = stetho_toy_docs_add(out, p->d->text[i], p->d->len[i], take_math))) goto done;
        bytes_all += (double)p->d->len[i] + 1;
        if (take_math) bytes_math += (double)p->d->len[i] + 1;
    }
done:
    st_free(pg.perm);
    st_free(pm.perm);
    return st;
}

/* ---- a generated general corpus ------------------------------------------------------------ */

stetho_status stetho_toy_general_generate(size_t n_docs, uint64_t seed, stetho_toy_docs *out) {
    static const char *const subj[] = {"The old miller", "A young painter", "The river", "Her grandmother",
                                       "The village choir", "A travelling merchant", "The north wind", "His sister",
                                       "The school teacher", "A grey heron", "The night train", "Our neighbour"};
    static const char *const verb[] = {"walked past", "painted", "remembered", "followed", "sang about", "crossed",
                                       "watched", "described", "visited", "left behind", "carried", "found"};
    static const char *const obj[] = {"the stone bridge", "a quiet harbour", "the autumn fields", "an empty chapel",
                                      "the market square", "a narrow valley", "the lighthouse", "the forest road",
                                      "a small wooden boat", "the castle gardens", "the frozen lake", "a hidden path"};
    static const char *const tail[] = {"before the first snow", "at dawn", "in the evening light", "without a word",
                                       "after the long rain", "during the festival", "as the bells rang",
                                       "while the town slept", "under a pale sky", "with great care"};
    toy_rng r = {seed ^ 0x5EEDULL};
    for (size_t d = 0; d < n_docs; d++) {
        st_buf b;
        st_buf_init(&b);
        int ns = (int)toy_int(&r, 3, 8);
        for (int s = 0; s < ns; s++) {
            /* picked one by one: argument evaluation order is unspecified */
            const char *a = subj[toy_next(&r) % ST_ARRAY_LEN(subj)], *v = verb[toy_next(&r) % ST_ARRAY_LEN(verb)];
            const char *o = obj[toy_next(&r) % ST_ARRAY_LEN(obj)], *t = tail[toy_next(&r) % ST_ARRAY_LEN(tail)];
            st_buf_printf(&b, "%s%s %s %s %s.", s ? " " : "", a, v, o, t);
        }
        if (b.failed || !b.data) {
            st_buf_free(&b);
            return st_err(STETHO_ERR_NOMEM, "toy: out of memory");
        }
        stetho_status st = docs_push(out, b.data, b.len, false);
        if (st) return st;
    }
    return STETHO_OK;
}

/* An operand: mostly one digit, sometimes two, so the small facts every
 * solution leans on come up most often. */
static long drill_operand(toy_rng *r, bool negative_ok) {
    long u = toy_int(r, 0, 9), v = u < 6 ? toy_int(r, 0, 9) : u < 9 ? toy_int(r, 10, 30) : toy_int(r, 10, 99);
    return negative_ok && toy_int(r, 0, 3) == 0 ? -v : v;
}

/* "7" or "(-7)" as the solutions write an operand after the first. */
static void drill_term(st_buf *b, long v, bool paren) {
    if (paren && v < 0) st_buf_printf(b, "(%ld)", v);
    else st_buf_printf(b, "%ld", v);
}

stetho_status stetho_toy_drills_generate(size_t bytes, uint64_t seed, stetho_toy_docs *out) {
    toy_rng r = {seed ^ 0xD1117ULL};
    size_t have = 0;
    while (have < bytes) {
        st_buf b;
        st_buf_init(&b);
        int n = (int)toy_int(&r, 12, 24);
        for (int i = 0; i < n; i++) {
            long a = drill_operand(&r, true), c = drill_operand(&r, true);
            if (i) st_buf_printf(&b, "\n");
            st_buf_printf(&b, "$");
            switch (toy_int(&r, 0, 6)) {
            case 0: /* a + b */
                drill_term(&b, a, false), st_buf_printf(&b, " + "), drill_term(&b, c, true);
                st_buf_printf(&b, " = %ld", a + c);
                break;
            case 1: /* a - b */
                drill_term(&b, a, false), st_buf_printf(&b, " - "), drill_term(&b, c, true);
                st_buf_printf(&b, " = %ld", a - c);
                break;
            case 2: /* a \times b, small factors */
                a = toy_int(&r, 0, 12), c = drill_operand(&r, false);
                st_buf_printf(&b, "%ld \\times %ld = %ld", a, c, a * c);
                break;
            case 3: /* a(b) or (a)(b) */
                a = toy_int(&r, -12, 12), c = toy_int(&r, -12, 12);
                if (a < 0) st_buf_printf(&b, "(%ld)(", a);
                else st_buf_printf(&b, "%ld(", a);
                st_buf_printf(&b, "%ld) = %ld", c, a * c);
                break;
            case 4: /* three terms, as a substituted polynomial reads */
            {
                long e = drill_operand(&r, true);
                drill_term(&b, a, false), st_buf_printf(&b, " + "), drill_term(&b, c, true);
                st_buf_printf(&b, " + "), drill_term(&b, e, true);
                st_buf_printf(&b, " = %ld", a + c + e);
                break;
            }
            case 5: /* exact division */
            {
                long d = toy_int(&r, 1, 12), q = toy_int(&r, 0, 20);
                st_buf_printf(&b, "\\frac{%ld}{%ld} = %ld", d * q, d, q);
                break;
            }
            default: /* square */
                a = toy_int(&r, -15, 15);
                st_buf_printf(&b, "(%ld)^2 = %ld", a, a * a);
                break;
            }
            st_buf_printf(&b, "$");
        }
        if (b.failed || !b.data) {
            st_buf_free(&b);
            return st_err(STETHO_ERR_NOMEM, "toy: out of memory");
        }
        have += b.len;
        stetho_status st = docs_push(out, b.data, b.len, true);
        if (st) return st;
    }
    return STETHO_OK;
}

/* ---- the data step of `stetho toy build` --------------------------------------------------- */

static stetho_status make_dir(const char *path) {
    if (mkdir(path, 0777) != 0 && errno != EEXIST)
        return st_err(STETHO_ERR_IO, "%s: cannot create directory: %s", path, strerror(errno));
    struct stat sb;
    if (stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode)) return st_err(STETHO_ERR_IO, "%s: not a directory", path);
    return STETHO_OK;
}

static bool file_exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* Copy a file byte for byte through a temporary name. */
stetho_status toy_copy_file(const char *from, const char *to) {
    FILE *in = fopen(from, "rb");
    if (!in) return st_err(STETHO_ERR_IO, "%s: cannot open: %s", from, strerror(errno));
    out_file f;
    stetho_status st = of_open(&f, to);
    if (st) {
        fclose(in);
        return st;
    }
    char buf[65536];
    size_t n;
    bool ok = true;
    while (ok && (n = fread(buf, 1, sizeof buf, in)) > 0) ok = of_write(&f, buf, n);
    if (ferror(in)) ok = false;
    fclose(in);
    return of_close(&f, ok);
}

/* Write generated documents as JSONL {id, text, source}. */
static stetho_status write_docs(const stetho_toy_docs *d, const char *prefix, const char *path) {
    out_file f;
    stetho_status st = of_open(&f, path);
    if (st) return st;
    bool ok = true;
    for (size_t i = 0; ok && i < d->n; i++) {
        char id[64];
        snprintf(id, sizeof id, "%s-%zu", prefix, i);
        json_t *o = json_pack("{s:s,s:s%,s:s}", "id", id, "text", d->text[i], d->len[i], "source", "stetho-generated");
        char *line = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
        json_decref(o);
        if (!line) {
            of_close(&f, false);
            return st_err(STETHO_ERR_NOMEM, "%s: out of memory", path);
        }
        ok = of_write(&f, line, strlen(line)) && of_write(&f, "\n", 1);
        free(line);
    }
    return of_close(&f, ok);
}

static stetho_status count_tokens(const stetho_tokenizer *tok, const stetho_toy_docs *d, size_t *tokens) {
    *tokens = 0;
    for (size_t i = 0; i < d->n; i++) {
        int32_t *ids;
        size_t n;
        stetho_status st = stetho_tokenizer_encode(tok, d->text[i], d->len[i], false, &ids, &n);
        if (st) return st;
        free(ids);
        *tokens += n;
    }
    return STETHO_OK;
}

#define TOY_VOCAB 768

stetho_status stetho_toy_write_data(const char *out_dir, uint64_t seed, bool quick, const char *general_dir,
                                    stetho_toy_data_report *rep) {
    if (!out_dir) return st_err(STETHO_ERR_INVALID, "toy: NULL output directory");
    stetho_toy_data_report R;
    memset(&R, 0, sizeof R);
    stetho_toy_set train = {0}, test = {0};
    stetho_toy_docs general = {0}, prompts = {0}, mtrain = {0}, mtest = {0}, corpus = {0};
    stetho_bpe_model *bpe = NULL;
    stetho_tokenizer tok = {0};
    bool tok_loaded = false;
    enum { TP_DATA, TP_MATH, TP_GENERAL, TP_TOK, TP_TRAIN, TP_TEST, TP_TEXT, TP_PROMPTS, TP_SRC_TEXT, TP_SRC_PROMPTS, TP_N };
    char *path[TP_N] = {0};
    stetho_status st = STETHO_OK;

    path[TP_DATA] = st_path_join(out_dir, "data");
    path[TP_MATH] = st_path_join(out_dir, "data/math");
    path[TP_GENERAL] = st_path_join(out_dir, "data/general");
    path[TP_TOK] = st_path_join(out_dir, "tokenizer");
    path[TP_TRAIN] = st_path_join(out_dir, "data/math/train.jsonl");
    path[TP_TEST] = st_path_join(out_dir, "data/math/test.jsonl");
    path[TP_TEXT] = st_path_join(out_dir, "data/general/general_text.jsonl");
    path[TP_PROMPTS] = st_path_join(out_dir, "data/general/general_prompts.jsonl");
    if (general_dir) {
        path[TP_SRC_TEXT] = st_path_join(general_dir, "general_text.jsonl");
        path[TP_SRC_PROMPTS] = st_path_join(general_dir, "general_prompts.jsonl");
    }
    for (int i = 0; i < TP_N; i++)
        if (!path[i] && (i < TP_SRC_TEXT || general_dir)) {
            st = st_err(STETHO_ERR_NOMEM, "toy: out of memory");
            goto done;
        }
    if ((st = make_dir(out_dir)) || (st = make_dir(path[TP_DATA])) || (st = make_dir(path[TP_MATH])) ||
        (st = make_dir(path[TP_GENERAL])) || (st = make_dir(path[TP_TOK])))
        goto done;

    stetho_toy_math_options mo = {.train_per_subject = quick ? 1000 : 6000, .test_per_subject = 300, .seed = seed};
    if ((st = stetho_toy_math_generate(&mo, &train, &test))) goto done;
    if ((st = stetho_toy_math_write(&train, "train", path[TP_TRAIN])) ||
        (st = stetho_toy_math_write(&test, "test", path[TP_TEST])))
        goto done;
    for (size_t i = 0; i < train.n; i++) R.train[train.items[i].subject]++;
    for (size_t i = 0; i < test.n; i++) R.test[test.items[i].subject]++;

    if (general_dir && file_exists(path[TP_SRC_TEXT]) && file_exists(path[TP_SRC_PROMPTS])) {
        if ((st = toy_copy_file(path[TP_SRC_TEXT], path[TP_TEXT])) || (st = toy_copy_file(path[TP_SRC_PROMPTS], path[TP_PROMPTS])))
            goto done;
    } else {
        R.general_generated = true;
        if ((st = stetho_toy_general_generate(500, seed, &general)) || (st = write_docs(&general, "gen-text", path[TP_TEXT])))
            goto done;
        stetho_toy_docs_free(&general);
        if ((st = stetho_toy_general_generate(2000, seed + 1, &prompts)) ||
            (st = write_docs(&prompts, "gen-prompt", path[TP_PROMPTS])))
            goto done;
        stetho_toy_docs_free(&prompts);
    }
    /* read back what was written, so the tokens reported are those of the files */
    if ((st = stetho_toy_docs_load_jsonl(&general, path[TP_TEXT], "text", false)) ||
        (st = stetho_toy_docs_load_jsonl(&prompts, path[TP_PROMPTS], "text", false)))
        goto done;
    for (size_t i = 0; i < prompts.n; i++)
        if ((st = stetho_toy_docs_add(&general, prompts.text[i], prompts.len[i], false))) goto done;
    R.prompt_docs = prompts.n;
    R.general_docs = general.n - prompts.n;
    for (size_t i = 0; i < R.general_docs; i++) R.general_bytes += general.len[i];
    if ((st = stetho_toy_docs_add_math(&mtrain, &train)) || (st = stetho_toy_docs_add_math(&mtest, &test))) goto done;
    for (size_t i = 0; i < mtrain.n; i++) R.math_train_bytes += mtrain.len[i];

    /* the tokenizer sees text in about the proportions the base model will (issue 7:
     * 25-30% math), so general words get merges too */
    size_t corpus_bytes = quick ? (size_t)2 << 20 : (size_t)6 << 20;
    if ((st = stetho_toy_mix(&general, &mtrain, 0.3, corpus_bytes, seed, &corpus))) goto done;
    stetho_bpe_options bo = {.vocab_size = TOY_VOCAB, .min_frequency = 2, .max_bytes = 0};
    if ((st = stetho_bpe_train((const char *const *)corpus.text, corpus.len, corpus.n, &bo, &bpe)) ||
        (st = stetho_bpe_save(bpe, path[TP_TOK])))
        goto done;
    R.vocab_size = stetho_bpe_vocab_size(bpe);
    R.n_merges = stetho_bpe_n_merges(bpe);
    if ((st = stetho_tokenizer_load(&tok, path[TP_TOK]))) goto done;
    tok_loaded = true;
    size_t ctoks, cbytes = 0;
    if ((st = count_tokens(&tok, &corpus, &ctoks))) goto done;
    for (size_t i = 0; i < corpus.n; i++) cbytes += corpus.len[i];
    R.bytes_per_token = ctoks ? (double)cbytes / (double)ctoks : 0;
    stetho_toy_docs gtext = general;
    gtext.n = R.general_docs; /* a view: general_text only */
    if ((st = count_tokens(&tok, &mtrain, &R.math_train_tokens)) || (st = count_tokens(&tok, &mtest, &R.math_test_tokens)) ||
        (st = count_tokens(&tok, &gtext, &R.general_tokens)))
        goto done;
    if (rep) *rep = R;

done:
    if (tok_loaded) stetho_tokenizer_free(&tok);
    stetho_bpe_free(bpe);
    stetho_toy_set_free(&train);
    stetho_toy_set_free(&test);
    stetho_toy_docs_free(&general);
    stetho_toy_docs_free(&prompts);
    stetho_toy_docs_free(&mtrain);
    stetho_toy_docs_free(&mtest);
    stetho_toy_docs_free(&corpus);
    for (int i = 0; i < TP_N; i++) st_free(path[i]);
    return st;
}
