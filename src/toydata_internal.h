/* Private interface between the tiny world's problem templates (toydata_subjects.c)
 * and the code that splits, writes and mixes them (toydata.c). Not installed. */
#ifndef STETHO_TOYDATA_INTERNAL_H
#define STETHO_TOYDATA_INTERNAL_H

#include "internal.h"
#include "stetho/toydata.h"

typedef struct {
    uint64_t s;
} toy_rng;

/* splitmix64: tiny, fast, and the same on every platform. */
static inline uint64_t toy_next(toy_rng *r) {
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
/* Uniform integer in [lo, hi] (hi >= lo; the modulo bias is irrelevant here). */
static inline long toy_int(toy_rng *r, long lo, long hi) {
    return lo + (long)(toy_next(r) % (uint64_t)(hi - lo + 1));
}

typedef struct {
    st_buf prob, sol, ans, key;
} toy_out;

/* Number of templates of a subject. */
int toy_n_templates(int subject);
/* A template's short name ("linear", "gcd"), unique within its subject; NULL
 * when out of range. */
const char *toy_template_name(int subject, int template_id);
/* Fill o (empty buffers) with one problem of the template at the given level.
 * The solution holds the worked steps only; the caller appends the boxed answer
 * and the Final Answer sentence. */
void toy_generate(int subject, int template_id, toy_rng *r, int level, toy_out *o);

/* Copy a file byte for byte through a temporary name renamed into place. */
stetho_status toy_copy_file(const char *from, const char *to);

#endif
