/* The study runner: one config -> task vector, layer diagnosis, the scalpel's
 * projection, every variant (stethoscope top-K, controls, ablations) built as
 * an HF checkpoint, each evaluated and compared with base, summary.json and
 * the report. Each step records a key (a hash of its settings and of its
 * inputs' identities) under RUN_DIR/steps/; a rerun skips a step whose key is
 * unchanged and whose outputs exist, so an interrupted study resumes. */
#include "stetho/study_run.h"

#include "stetho/checkpoint.h"
#include "stetho/diagnose.h"
#include "stetho/eval.h"
#include "stetho/perplexity.h"
#include "stetho/project.h"
#include "stetho/report.h"
#include "stetho/results.h"
#include "stetho/sae.h"
#include "stetho/select.h"
#include "stetho/stats.h"
#include "stetho/taskvec.h"
#include "internal.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

/* ------------------------------------------------------------ run state */

typedef struct {
    char name[64];
    char label[96];
    const char *kind;        /* base, finetuned, stethoscope, scalpel, random, norm, bottom, all, single, leave_one_out */
    const char *method;      /* selection method for layer edits, NULL otherwise */
    int k;
    uint64_t seed;
    int only;                /* layer for single / leave_one_out, else -1 */
    double alpha;
    bool *layers;            /* [n_layers] layers receiving tau; NULL = not a layer edit */
    bool projected;          /* tau is the scalpel's projection */
    char *model_dir;         /* what gets evaluated (for an in-memory edit: its base) */
    bool in_memory;          /* edit applied in memory at evaluation (edit.in_memory) */
    uint64_t edit_key;       /* the edit's identity: the key its checkpoint would be built under */
    char *edit_json;         /* variants/<name>/edit.json: the in-memory edit's record */
    char *eval_dir;
    double perplexity;       /* NaN when not measured */
    char *meta;              /* the selection record (stetho_select_record) */
} variant;

typedef struct {
    const stetho_study_config *c;
    const stetho_study_run_opts *o;
    const char *run;
    int n_layers, d_model;
    char family[32];
    char *tv_path;           /* the task vector edits apply */
    char *diff_json;         /* taskvec/diff.json */
    char *scores_path;       /* diagnose/scores.json */
    stetho_scores sc;        /* its ranking (the config's metric) */
    bool have_scores;
    char *projection_json;   /* scalpel/projection.json */
    char *scalpel_tv;
    double *scores;          /* [n_layers] specificity (NaN = unscored) */
    double *tau_norm;        /* [n_layers] ||tau_l|| */
    double *theta_norm;      /* [n_layers] ||theta_base,l|| */
    double tau_total_sq;
    variant *v;
    size_t n_v, cap_v;
    double t_start;
    json_t *timings;         /* {"steps": {step: seconds}}: every step's last real run */
    bool ran;                /* the current step did work (set by step_done) */
} runner;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void progress(runner *r, const char *step, const char *fmt, ...) ST_PRINTF(3, 4);
static void progress(runner *r, const char *step, const char *fmt, ...) {
    if (!r->o || !r->o->progress) return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    r->o->progress(r->o->user, step, msg);
}

static char *path2(const char *a, const char *b) { return st_path_join(a, b); }

static char *path3(const char *a, const char *b, const char *c) {
    char *ab = st_path_join(a, b);
    char *abc = ab ? st_path_join(ab, c) : NULL;
    st_free(ab);
    return abc;
}

static stetho_status mkdir_p(const char *path) {
    char *p = st_malloc(strlen(path) + 1);
    if (!p) return STETHO_ERR_NOMEM;
    strcpy(p, path);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/') continue;
        *s = '\0';
        if (mkdir(p, 0755) && errno != EEXIST) {
            stetho_status st = st_err(STETHO_ERR_IO, "cannot create %s: %s", p, strerror(errno));
            st_free(p);
            return st;
        }
        *s = '/';
    }
    stetho_status st = STETHO_OK;
    if (mkdir(p, 0755) && errno != EEXIST) st = st_err(STETHO_ERR_IO, "cannot create %s: %s", p, strerror(errno));
    st_free(p);
    return st;
}

static bool exists(const char *path) {
    struct stat sb;
    return path && stat(path, &sb) == 0;
}

/* ------------------------------------------------------------ step keys */

/* Identity of an input: path, size and modification time of the file, or of
 * every file under the directory (recursively, sorted by name). */
static uint64_t ident(uint64_t h, const char *path) {
    struct stat sb;
    h = stetho_hash64(path, strlen(path) + 1, h);
    if (stat(path, &sb)) return stetho_hash64("missing", 7, h);
    if (!S_ISDIR(sb.st_mode)) {
        int64_t v[3] = {(int64_t)sb.st_size, (int64_t)sb.st_mtim.tv_sec, (int64_t)sb.st_mtim.tv_nsec};
        return stetho_hash64(v, sizeof v, h);
    }
    struct dirent **names = NULL;
    int n = scandir(path, &names, NULL, alphasort);
    for (int i = 0; i < n; i++) {
        if (names[i]->d_name[0] != '.') {
            char *sub = st_path_join(path, names[i]->d_name);
            if (sub) h = ident(h, sub);
            st_free(sub);
        }
        free(names[i]);
    }
    free(names);
    return h;
}

static uint64_t key_str(uint64_t h, const char *s) { return stetho_hash64(s ? s : "(null)", s ? strlen(s) + 1 : 6, h); }

/* The compute mode enters a step key only when it is not f32, so runs made
 * before the mode existed keep their keys. */
static uint64_t key_compute(uint64_t h, const stetho_study_config *c) {
    stetho_compute m = stetho_study_compute(c);
    return m == STETHO_COMPUTE_F32 ? h : key_str(h, stetho_compute_name(m));
}

static char *step_file(runner *r, const char *step) {
    char name[128];
    snprintf(name, sizeof name, "%s.key", step);
    return path3(r->run, "steps", name);
}

/* True when the step ran with this key and its outputs are all there. */
static bool step_fresh(runner *r, const char *step, uint64_t key, const char *const *outputs, size_t n_out) {
    if (r->o && r->o->force_steps) return false;
    char *f = step_file(r, step);
    char *text = NULL;
    size_t len = 0;
    bool fresh = f && stetho_read_file(f, 64, &text, &len) == STETHO_OK;
    if (fresh) {
        char want[32];
        snprintf(want, sizeof want, "%016llx\n", (unsigned long long)key);
        fresh = len == strlen(want) && !memcmp(text, want, len);
    }
    for (size_t i = 0; fresh && i < n_out; i++) fresh = exists(outputs[i]);
    stetho_clear_error();
    free(text);
    st_free(f);
    return fresh;
}

static stetho_status write_text(const char *path, const char *text) {
    return stetho_write_file(path, text, strlen(text));
}

static stetho_status step_done(runner *r, const char *step, uint64_t key) {
    r->ran = true;
    char *f = step_file(r, step);
    if (!f) return STETHO_ERR_NOMEM;
    char text[32];
    snprintf(text, sizeof text, "%016llx\n", (unsigned long long)key);
    stetho_status st = write_text(f, text);
    st_free(f);
    return st;
}

static stetho_status write_json(const char *path, json_t *doc) {
    char *text = json_dumps(doc, JSON_INDENT(1) | JSON_SORT_KEYS | JSON_ENSURE_ASCII);
    if (!text) return st_err(STETHO_ERR_NOMEM, "out of memory serialising %s", path);
    size_t n = strlen(text);
    char *t2 = realloc(text, n + 2);
    if (!t2) {
        free(text);
        return st_err(STETHO_ERR_NOMEM, "out of memory");
    }
    t2[n] = '\n';
    t2[n + 1] = '\0';
    stetho_status st = write_text(path, t2);
    free(t2);
    return st;
}

/* ------------------------------------------------------------ inputs */

static stetho_status read_json_file(const char *path, json_t **out) {
    stetho_status st = STETHO_OK;
    *out = st_json_load_object(path, (size_t)1 << 30, &st);
    return *out ? STETHO_OK : st;
}

/* Model shape from the base checkpoint's config. */
static stetho_status load_shape(runner *r) {
    stetho_checkpoint ck;
    stetho_status st = stetho_checkpoint_open(&ck, r->c->base_model);
    if (st) return st_err_context(st, "base model");
    if (!ck.has_config || ck.config.n_layers <= 0 || ck.config.hidden <= 0)
        st = st_err(STETHO_ERR_FORMAT, "%s: no config.json with num_hidden_layers and hidden_size", r->c->base_model);
    else {
        r->n_layers = ck.config.n_layers;
        r->d_model = ck.config.hidden;
        snprintf(r->family, sizeof r->family, "%s", stetho_family_name(ck.config.family));
    }
    stetho_checkpoint_close(&ck);
    if (st) return st;
    size_t L = (size_t)r->n_layers;
    r->scores = st_malloc(L * sizeof *r->scores);
    r->tau_norm = st_calloc(L, sizeof *r->tau_norm);
    r->theta_norm = st_calloc(L, sizeof *r->theta_norm);
    if (!r->scores || !r->tau_norm || !r->theta_norm) return STETHO_ERR_NOMEM;
    for (size_t l = 0; l < L; l++) r->scores[l] = NAN;
    return STETHO_OK;
}

/* Per-layer ||tau|| and ||theta_base|| of a task vector given as a file, in the
 * shape of stetho diff's report ("layers": [{layer, tau_norm, base_norm, ...}]). */
static stetho_status tv_norms_json(runner *r, const char *tv_path, const char *out_path) {
    stetho_checkpoint tv, base;
    stetho_status st = stetho_checkpoint_open(&tv, tv_path);
    if (st) return st;
    if ((st = stetho_checkpoint_open(&base, r->c->base_model))) {
        stetho_checkpoint_close(&tv);
        return st;
    }
    size_t L = (size_t)r->n_layers;
    double *t2 = st_calloc(L + 1, sizeof *t2), *b2 = st_calloc(L + 1, sizeof *b2);
    float *buf = st_malloc(sizeof(float) << 16);
    if (!t2 || !b2 || !buf) st = STETHO_ERR_NOMEM;
    for (size_t i = 0; !st && i < tv.n_tensors; i++) {
        const stetho_tensor *t = tv.tensors[i];
        stetho_tensor_role role = stetho_arch_classify(t->name);
        size_t slot = role.layer >= 0 && role.layer < r->n_layers ? (size_t)role.layer : L;
        const stetho_tensor *bt = stetho_checkpoint_find(&base, t->name);
        for (int which = 0; which < 2 && !st; which++) {
            const stetho_tensor *x = which ? bt : t;
            if (!x || !stetho_dtype_is_float(x->dtype)) continue;
            size_t esz = stetho_dtype_bits(x->dtype) / 8;
            double acc = 0;
            for (uint64_t off = 0; off < x->n_elements && !st; off += 1u << 16) {
                size_t n = x->n_elements - off < (1u << 16) ? (size_t)(x->n_elements - off) : (size_t)1 << 16;
                st = stetho_convert_to_f32(buf, (const uint8_t *)x->data + off * esz, x->dtype, n);
                for (size_t j = 0; j < n; j++) acc += (double)buf[j] * buf[j];
            }
            (which ? b2 : t2)[slot] += acc;
        }
    }
    double total = 0;
    for (size_t l = 0; t2 && l <= L; l++) total += t2[l];
    json_t *root = NULL;
    if (!st) {
        root = json_object();
        json_t *layers = json_array();
        for (size_t l = 0; l <= L; l++) {
            json_t *o = json_object();
            json_object_set_new(o, "layer", l < L ? json_integer((json_int_t)l) : json_null());
            json_object_set_new(o, "tau_norm", json_real(sqrt(t2[l])));
            json_object_set_new(o, "base_norm", json_real(sqrt(b2[l])));
            json_object_set_new(o, "relative_change", json_real(b2[l] > 0 ? sqrt(t2[l] / b2[l]) : 0));
            json_object_set_new(o, "energy_share", json_real(total > 0 ? t2[l] / total : 0));
            json_array_append_new(layers, o);
        }
        json_object_set_new(root, "task_vector", json_string(tv_path));
        json_object_set_new(root, "base", json_string(r->c->base_model));
        json_object_set_new(root, "n_layers", json_integer(r->n_layers));
        json_object_set_new(root, "layers", layers);
        json_object_set_new(root, "total", json_pack("{s:f}", "tau_norm", sqrt(total)));
        st = write_json(out_path, root);
    }
    json_decref(root);
    st_free(t2);
    st_free(b2);
    st_free(buf);
    stetho_checkpoint_close(&tv);
    stetho_checkpoint_close(&base);
    return st;
}

/* Task vector: ft - base (or the one given), and its per-layer norms. */
static stetho_status step_taskvec(runner *r) {
    const stetho_study_config *c = r->c;
    char *dir = path2(r->run, "taskvec");
    stetho_status st = dir ? mkdir_p(dir) : STETHO_ERR_NOMEM;
    r->diff_json = path2(dir ? dir : "", "diff.json");
    r->tv_path = c->task_vector ? st_strdup(c->task_vector) : path2(dir ? dir : "", "tv.safetensors");
    if (!st && (!r->diff_json || !r->tv_path)) st = STETHO_ERR_NOMEM;
    if (!st) {
        uint64_t key = ident(ident(key_str(0, "taskvec v1"), c->base_model),
                             c->task_vector ? c->task_vector : c->finetuned_model);
        const char *outs[] = {r->tv_path, r->diff_json};
        if (step_fresh(r, "taskvec", key, outs, 2)) {
            progress(r, "taskvec", "up to date");
        } else if (c->task_vector) {
            progress(r, "taskvec", "norms of %s", c->task_vector);
            if (!(st = tv_norms_json(r, c->task_vector, r->diff_json))) st = step_done(r, "taskvec", key);
        } else {
            progress(r, "taskvec", "tau = %s - %s", c->finetuned_model, c->base_model);
            stetho_checkpoint base, ft;
            stetho_tv_report rep;
            memset(&rep, 0, sizeof rep);
            if (!(st = stetho_checkpoint_open(&base, c->base_model))) {
                if (!(st = stetho_checkpoint_open(&ft, c->finetuned_model))) {
                    stetho_diff_opts o = {.out_dtype = STETHO_DTYPE_F32};
                    char *json = NULL;
                    if (!(st = stetho_taskvec_diff(&base, &ft, r->tv_path, &o, &rep)) &&
                        !(st = stetho_tv_report_json(&rep, c->base_model, c->finetuned_model, &json)))
                        st = write_text(r->diff_json, json);
                    free(json);
                    stetho_tv_report_free(&rep);
                    stetho_checkpoint_close(&ft);
                }
                stetho_checkpoint_close(&base);
            }
            if (!st) st = step_done(r, "taskvec", key);
        }
    }
    st_free(dir);
    if (st) return st;
    /* per-layer norms for the norm-ranked control and the summary */
    json_t *root;
    if ((st = read_json_file(r->diff_json, &root))) return st;
    json_t *layers = json_object_get(root, "layers"), *e;
    size_t i;
    json_array_foreach(layers, i, e) {
        json_t *l = json_object_get(e, "layer");
        double tn = json_number_value(json_object_get(e, "tau_norm"));
        if (json_is_integer(l) && json_integer_value(l) >= 0 && json_integer_value(l) < r->n_layers) {
            r->tau_norm[json_integer_value(l)] = tn;
            r->theta_norm[json_integer_value(l)] = json_number_value(json_object_get(e, "base_norm"));
        }
        r->tau_total_sq += tn * tn;
    }
    json_decref(root);
    return STETHO_OK;
}

/* The scalpel: tau projected on each scored layer's top SAE features. */
static stetho_status step_scalpel(runner *r) {
    const stetho_study_config *c = r->c;
    if (!c->scalpel_features || !r->scores_path) return STETHO_OK;
    char *dir = path2(r->run, "scalpel");
    stetho_status st = dir ? mkdir_p(dir) : STETHO_ERR_NOMEM;
    r->scalpel_tv = path2(dir ? dir : "", "tv.safetensors");
    r->projection_json = path2(dir ? dir : "", "projection.json");
    st_free(dir);
    if (!st && (!r->scalpel_tv || !r->projection_json)) st = STETHO_ERR_NOMEM;
    if (st) return st;
    char kbuf[32];
    snprintf(kbuf, sizeof kbuf, "scalpel v1 k=%d", c->scalpel_features);
    uint64_t key = ident(ident(ident(key_str(0, kbuf), r->tv_path), r->scores_path), c->sae_dir);
    const char *outs[] = {r->scalpel_tv, r->projection_json};
    if (step_fresh(r, "scalpel", key, outs, 2)) {
        progress(r, "scalpel", "up to date");
        return STETHO_OK;
    }
    progress(r, "scalpel", "projecting tau on the top %d features of each scored layer", c->scalpel_features);
    stetho_project_layer *layers = NULL;
    size_t n_layers = 0, n_saes = 0;
    stetho_sae_entry *saes = NULL;
    stetho_checkpoint tv;
    bool tv_open = false;
    stetho_project_report rep;
    memset(&rep, 0, sizeof rep);
    char *json = NULL;
    if (!(st = stetho_checkpoint_open(&tv, r->tv_path))) tv_open = true;
    if (!st && !(st = stetho_project_layers_from_scores(r->scores_path, c->scalpel_features, &tv, &layers, &n_layers)) &&
        !(st = stetho_sae_scan(c->sae_dir, &saes, &n_saes))) {
        /* force: a stale projection of an earlier run is this step's to replace */
        stetho_project_opts po = {.keep_other = false, .rank_tol = 1e-6, .force = true};
        if (!(st = stetho_project_taskvec(&tv, saes, n_saes, layers, n_layers, &po, r->scalpel_tv, &rep)) &&
            !(st = stetho_project_report_json(&rep, &json)))
            st = write_text(r->projection_json, json);
    }
    free(json);
    stetho_project_report_free(&rep);
    if (tv_open) stetho_checkpoint_close(&tv);
    stetho_sae_entries_free(saes, n_saes);
    stetho_project_layers_free(layers, n_layers);
    return st ? st : step_done(r, "scalpel", key);
}

/* ------------------------------------------------------------ variants */

static variant *add_variant(runner *r, const char *name, const char *kind, const char *label) {
    if (r->n_v == r->cap_v) {
        size_t cap = r->cap_v ? 2 * r->cap_v : 16;
        variant *v = st_realloc(r->v, cap * sizeof *v);
        if (!v) return NULL;
        r->v = v;
        r->cap_v = cap;
    }
    variant *v = &r->v[r->n_v++];
    memset(v, 0, sizeof *v);
    snprintf(v->name, sizeof v->name, "%s", name);
    snprintf(v->label, sizeof v->label, "%s", label);
    v->kind = kind;
    v->only = -1;
    v->alpha = 1.0;
    v->perplexity = NAN;
    return v;
}

/* The selection record plus the study variant it belongs to. */
static stetho_status tag_meta(variant *v) {
    json_t *o = json_loads(v->meta, 0, NULL);
    if (!o) return st_err(STETHO_ERR_NOMEM, "out of memory");
    json_object_set_new(o, "study_variant", json_pack("{s:s, s:s, s:s}", "name", v->name, "kind", v->kind, "label", v->label));
    char *text = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (!text) return st_err(STETHO_ERR_NOMEM, "out of memory");
    free(v->meta);
    v->meta = text;
    return STETHO_OK;
}

/* Settings that need the model's shape, checked before any work. */
static stetho_status check_config(runner *r) {
    const stetho_study_config *c = r->c;
    for (size_t i = 0; i < c->n_top_k; i++)
        if (c->top_k[i] > r->n_layers)
            return st_err(STETHO_ERR_INVALID, "%s: top_k %d exceeds the model's %d layers", c->path, c->top_k[i],
                          r->n_layers);
    if (c->scalpel_features > stetho_study_top_features(c))
        return st_err(STETHO_ERR_INVALID,
                      "%s: scalpel.features %d exceeds diagnose.top_features %d (the features the scores list per layer)",
                      c->path, c->scalpel_features, stetho_study_top_features(c));
    if (c->scalpel_features > r->d_model)
        return st_err(STETHO_ERR_INVALID, "%s: scalpel.features %d exceeds d_model %d", c->path, c->scalpel_features,
                      r->d_model);
    return STETHO_OK;
}

/* The variants the config asks for, with their layers chosen. */
static stetho_status plan_variants(runner *r) {
    const stetho_study_config *c = r->c;
    int L = r->n_layers;
    char name[64], label[96];
    bool have_scores = r->have_scores;
    if (c->v_base && !add_variant(r, "base", "base", "base")) return STETHO_ERR_NOMEM;
    for (size_t ai = 0; ai < c->n_alpha; ai++) {
        double a = c->alpha[ai];
        char sfx[32] = "";
        if (c->n_alpha > 1 || a != 1.0) snprintf(sfx, sizeof sfx, "_a%g", a);
        if (c->v_finetuned) {
            snprintf(name, sizeof name, "finetuned%s", sfx);
            snprintf(label, sizeof label, "fine-tuned (full tau%s)", sfx);
            variant *v = add_variant(r, name, "finetuned", label);
            if (!v) return STETHO_ERR_NOMEM;
            v->alpha = a;
        }
        for (size_t ki = 0; ki < c->n_top_k; ki++) {
            int k = c->top_k[ki];
            if (k > L) return st_err(STETHO_ERR_INVALID, "%s: top_k %d exceeds the model's %d layers", c->path, k, L);
            struct {
                bool on;
                const char *kind, *method, *tag;
            } plan[] = {{have_scores, "stethoscope", "top", "stethoscope top-%d"},
                        {c->c_norm, "norm", "norm", "norm-ranked top-%d"},
                        {c->c_bottom && have_scores, "bottom", "bottom", "least specific %d"}};
            for (size_t p = 0; p < ST_ARRAY_LEN(plan); p++) {
                if (!plan[p].on) continue;
                snprintf(name, sizeof name, "%s_k%d%s", plan[p].kind, k, sfx);
                snprintf(label, sizeof label, plan[p].tag, k);
                variant *v = add_variant(r, name, plan[p].kind, label);
                if (!v) return STETHO_ERR_NOMEM;
                v->method = plan[p].method;
                v->k = k;
                v->alpha = a;
            }
            for (size_t si = 0; si < c->n_random_seeds; si++) {
                snprintf(name, sizeof name, "random_k%d_s%llu%s", k, (unsigned long long)c->random_seeds[si], sfx);
                snprintf(label, sizeof label, "random %d (seed %llu)", k, (unsigned long long)c->random_seeds[si]);
                variant *v = add_variant(r, name, "random", label);
                if (!v) return STETHO_ERR_NOMEM;
                v->method = "random";
                v->k = k;
                v->seed = c->random_seeds[si];
                v->alpha = a;
            }
        }
        /* the ablation runs at the first alpha only (an ablation per alpha would
         * multiply its 2L evaluations); leave-one-out is measured against tau in
         * all layers at that alpha, so that reference is built even when the
         * control is off */
        bool ablate = ai == 0 && (c->ablation_single || c->ablation_leave_one_out);
        if (c->c_all_layers || (ablate && c->ablation_leave_one_out)) {
            snprintf(name, sizeof name, "all_layers%s", sfx);
            variant *v = add_variant(r, name, "all", "all layers (no embeddings)");
            if (!v) return STETHO_ERR_NOMEM;
            v->method = "all";
            v->k = L;
            v->alpha = a;
        }
        if (r->scalpel_tv) {
            snprintf(name, sizeof name, "scalpel%s", sfx);
            snprintf(label, sizeof label, "scalpel (top-%d features)", c->scalpel_features);
            variant *v = add_variant(r, name, "scalpel", label);
            if (!v) return STETHO_ERR_NOMEM;
            v->projected = true;
            v->method = "all";
            v->k = L;
            v->alpha = a;
        }
        for (int l = 0; l < L && ablate; l++) {
            for (int loo = 0; loo < 2; loo++) {
                if (loo ? !c->ablation_leave_one_out : !c->ablation_single) continue;
                snprintf(name, sizeof name, "%s_l%d%s", loo ? "leave_one_out" : "single", l, sfx);
                snprintf(label, sizeof label, loo ? "all but layer %d" : "layer %d only", l);
                variant *v = add_variant(r, name, loo ? "leave_one_out" : "single", label);
                if (!v) return STETHO_ERR_NOMEM;
                v->method = loo ? "except" : "only";
                v->only = l;
                v->k = loo ? L - 1 : 1;
                v->alpha = a;
            }
        }
    }
    /* layers of every layer edit, chosen as `stetho edit --select` would */
    for (size_t i = 0; i < r->n_v; i++) {
        variant *v = &r->v[i];
        if (!v->method) continue;
        stetho_select_spec spec = {0};
        char method[32];
        if (v->only >= 0) snprintf(method, sizeof method, "%s:%d", v->method, v->only);
        else snprintf(method, sizeof method, "%s", v->method);
        stetho_status st = stetho_select_spec_parse(method, &spec);
        if (st) return st;
        spec.k = v->k;
        spec.seed = v->seed;
        spec.layer = v->only;
        const double *values = spec.method == STETHO_SELECT_NORM ? r->tau_norm
                               : stetho_select_needs_scores(spec.method) ? r->scores : NULL;
        int n_chosen = 0;
        int *order = st_malloc((size_t)L * sizeof *order);
        if (!order || !(v->layers = st_calloc((size_t)L, sizeof *v->layers))) {
            st_free(order);
            return STETHO_ERR_NOMEM;
        }
        if (!(st = stetho_select_layers(&spec, L, values, v->layers, order, &n_chosen)))
            st = stetho_select_record(&spec, L, v->layers, order, n_chosen, values,
                                      stetho_select_needs_scores(spec.method) && r->have_scores ? &r->sc : NULL,
                                      &v->meta);
        st_free(order);
        if (!st) st = tag_meta(v);
        if (st) return st_err_context(st, "variant %s", v->name);
    }
    return STETHO_OK;
}

/* The tensors a variant's edit touches: its layers, or every layer and the
 * non-layer tensors for an edit of the whole model, in the config's modules.
 * *every is the all-layers array when one was needed (free it). */
static stetho_status variant_selection(runner *r, const variant *v, stetho_selection *sel, bool **every) {
    *sel = (stetho_selection){.n_layers = r->n_layers, .non_layer = !v->layers, .modules = 0};
    *every = NULL;
    if (v->layers) sel->layers = v->layers;
    else {
        if (!(*every = st_malloc((size_t)r->n_layers * sizeof **every))) return STETHO_ERR_NOMEM;
        for (int l = 0; l < r->n_layers; l++) (*every)[l] = true;
        sel->layers = *every;
    }
    return stetho_module_spec_parse(r->c->modules ? r->c->modules : "all", &sel->modules);
}

static const char *variant_delta(const runner *r, const variant *v) { return v->projected ? r->scalpel_tv : r->tv_path; }

/* the scalpel's projection holds only the projected matrices */
static stetho_edit_opts variant_edit_opts(const variant *v) {
    return (stetho_edit_opts){.alpha = v->alpha, .shard_size = 5000000000ull, .force = true,
                              .allow_missing = v->projected, .extra_meta = v->meta};
}

/* What an in-memory edit applies, written beside its evaluation (and named in
 * the lm-eval model_args) so the run says what was evaluated. */
static stetho_status write_edit_record(runner *r, variant *v) {
    json_t *o = json_pack("{s:b, s:s, s:s, s:f, s:s}", "in_memory", 1, "base", r->c->base_model, "task_vector",
                          variant_delta(r, v), "alpha", v->alpha, "modules", r->c->modules ? r->c->modules : "all");
    if (!o) return st_err(STETHO_ERR_INVALID, "cannot record the edit (paths not valid UTF-8?)");
    json_t *layers = json_array();
    for (int l = 0; l < r->n_layers; l++)
        if (!v->layers || v->layers[l]) json_array_append_new(layers, json_integer(l));
    json_object_set_new(o, "layers", layers);
    json_object_set_new(o, "non_layer_tensors", json_boolean(!v->layers));
    json_t *sel = v->meta ? json_loads(v->meta, 0, NULL) : NULL;
    if (sel) json_object_set_new(o, "selection", sel);
    char *vdir = path3(r->run, "variants", v->name);
    stetho_status st = vdir ? mkdir_p(vdir) : STETHO_ERR_NOMEM;
    if (!st && !(v->edit_json = path2(vdir, "edit.json"))) st = STETHO_ERR_NOMEM;
    if (!st) st = write_json(v->edit_json, o);
    json_decref(o);
    st_free(vdir);
    return st;
}

static stetho_status build_variant(runner *r, variant *v) {
    const stetho_study_config *c = r->c;
    bool all_modules = !c->modules || !strcmp(c->modules, "all");
    if (!strcmp(v->kind, "base")) {
        v->model_dir = st_strdup(c->base_model);
        return v->model_dir ? STETHO_OK : STETHO_ERR_NOMEM;
    }
    if (!strcmp(v->kind, "finetuned") && c->finetuned_model && v->alpha == 1.0 && all_modules) {
        v->model_dir = st_strdup(c->finetuned_model);
        return v->model_dir ? STETHO_OK : STETHO_ERR_NOMEM;
    }
    const char *delta = variant_delta(r, v);
    char settings[256];
    snprintf(settings, sizeof settings, "edit v1 alpha=%.17g modules=%s", v->alpha, c->modules ? c->modules : "all");
    uint64_t key = ident(ident(key_str(0, settings), c->base_model), delta);
    if (v->layers) key = stetho_hash64(v->layers, (size_t)r->n_layers * sizeof *v->layers, key);
    if (c->in_memory) { /* nothing to build: eval_variant applies it */
        v->in_memory = true;
        v->edit_key = key;
        v->model_dir = st_strdup(c->base_model);
        return v->model_dir ? write_edit_record(r, v) : STETHO_ERR_NOMEM;
    }
    char *vdir = path3(r->run, "variants", v->name);
    v->model_dir = vdir ? path2(vdir, "model") : NULL;
    st_free(vdir);
    if (!v->model_dir) return STETHO_ERR_NOMEM;
    char step[96];
    snprintf(step, sizeof step, "edit_%s", v->name);
    const char *outs[] = {v->model_dir};
    if (step_fresh(r, step, key, outs, 1)) return STETHO_OK;
    progress(r, "edit", "%s: %s", v->name, v->label);
    stetho_selection sel;
    bool *every;
    stetho_status st = variant_selection(r, v, &sel, &every);
    stetho_checkpoint base, tv;
    if (!st && !(st = stetho_checkpoint_open(&base, c->base_model))) {
        if (!(st = stetho_checkpoint_open(&tv, delta))) {
            stetho_edit_opts eo = variant_edit_opts(v);
            char *parent = path3(r->run, "variants", v->name);
            if (!parent) st = STETHO_ERR_NOMEM;
            else if (!(st = mkdir_p(parent))) st = stetho_taskvec_edit(&base, &tv, false, &sel, &eo, v->model_dir);
            st_free(parent);
            stetho_checkpoint_close(&tv);
        }
        stetho_checkpoint_close(&base);
    }
    st_free(every);
    if (st) return st_err_context(st, "variant %s", v->name);
    return step_done(r, step, key);
}

/* The model a variant is evaluated on: its checkpoint, or base with the edit
 * applied in memory. */
static stetho_status load_variant_model(runner *r, const variant *v, stetho_model *m) {
    if (!v->in_memory) return stetho_model_load(m, v->model_dir);
    stetho_selection sel;
    bool *every;
    stetho_checkpoint tv;
    stetho_status st = variant_selection(r, v, &sel, &every);
    if (!st && !(st = stetho_checkpoint_open(&tv, variant_delta(r, v)))) {
        stetho_edit_opts eo = variant_edit_opts(v);
        st = stetho_model_load_edit(m, v->model_dir, &tv, false, &sel, &eo);
        stetho_checkpoint_close(&tv); /* the edited tensors are the model's own copies */
    }
    st_free(every);
    return st;
}

/* ------------------------------------------------------------ summary */

static json_t *num_or_null(double x) { return isfinite(x) ? json_real(x) : json_null(); }

static json_t *interval_json(stetho_interval ci) {
    return json_pack("[o, o]", num_or_null(ci.lo), num_or_null(ci.hi));
}

static json_t *acc_json(uint64_t k, uint64_t n) {
    stetho_interval ci = {NAN, NAN};
    if (n) (void)stetho_stats_wilson(k, n, STETHO_Z95, &ci);
    return json_pack("{s:I, s:I, s:o, s:o}", "correct", (json_int_t)k, "n", (json_int_t)n, "acc",
                     num_or_null(n ? (double)k / (double)n : NAN), "ci", interval_json(ci));
}

static const char *group_name(const stetho_results *res) { return res->group ? res->group : "minerva_math"; }

/* Accuracy per task plus the pooled group. */
static json_t *results_json(const stetho_results *res) {
    json_t *o = json_object();
    uint64_t k = 0, n = 0;
    for (size_t i = 0; i < res->n_tasks; i++) {
        const stetho_results_task *t = &res->tasks[i];
        json_object_set_new(o, t->name, acc_json(t->n_correct, t->n));
        k += t->n_correct;
        n += t->n;
    }
    json_object_set_new(o, group_name(res), acc_json(k, n));
    return o;
}

static json_t *comparison_json(const stetho_comparison *cmp, const char *group) {
    json_t *o = json_object();
    for (size_t i = 0; i < cmp->n_rows; i++) {
        const stetho_cmp_row *row = &cmp->rows[i];
        json_t *x = json_object();
        json_object_set_new(x, "diff", num_or_null(row->diff));
        json_object_set_new(x, "ci", interval_json(row->ci_diff));
        json_object_set_new(x, "z", num_or_null(row->z.z_unpooled));
        json_object_set_new(x, "p", num_or_null(row->p));
        json_object_set_new(x, "p_holm", num_or_null(row->p_holm));
        json_object_set_new(x, "p_ztest", num_or_null(row->z.p_unpooled));
        json_object_set_new(x, "mcnemar_p", row->paired ? num_or_null(row->mcnemar.p_exact) : json_null());
        json_object_set_new(x, "test", json_string(row->test == STETHO_CMP_TEST_MCNEMAR ? "mcnemar" : "ztest"));
        json_object_set_new(x, "significant", json_boolean(row->mark != 0));
        json_object_set_new(x, "direction", json_string(row->mark > 0 ? "up" : row->mark < 0 ? "down" : "none"));
        json_object_set_new(o, row->overall ? group : row->task, x);
    }
    return o;
}

static json_t *variant_json(runner *r, const variant *v) {
    json_t *o = json_object();
    json_object_set_new(o, "name", json_string(v->name));
    json_object_set_new(o, "kind", json_string(v->kind));
    json_object_set_new(o, "label", json_string(v->label));
    json_object_set_new(o, "alpha", json_real(v->alpha));
    json_object_set_new(o, "model", v->in_memory ? json_null() : json_string(v->model_dir));
    if (v->in_memory) {
        json_object_set_new(o, "in_memory", json_true());
        json_object_set_new(o, "edit", json_string(v->edit_json));
    }
    if (v->layers) {
        json_t *layers = json_array();
        for (int l = 0; l < r->n_layers; l++)
            if (v->layers[l]) json_array_append_new(layers, json_integer(l));
        json_object_set_new(o, "layers", layers);
        json_t *sel = json_pack("{s:s, s:i}", "method", v->method, "k", v->k);
        if (!strcmp(v->method, "random")) json_object_set_new(sel, "seed", json_integer((json_int_t)v->seed));
        if (v->only >= 0) json_object_set_new(sel, "layer", json_integer(v->only));
        json_object_set_new(o, "selection", sel);
    } else {
        json_object_set_new(o, "layers", json_null());
        json_object_set_new(o, "selection", json_null());
    }
    json_object_set_new(o, "perplexity", num_or_null(v->perplexity));
    return o;
}

/* Per-layer specificity from diagnose's SCORES.json: the default metric's
 * "score" into r->scores, every metric's value into *per_metric (for the
 * score-vs-importance correlations). */
static stetho_status read_scores(runner *r, json_t **spec_out) {
    json_t *root;
    stetho_status st = read_json_file(r->scores_path, &root);
    if (st) return st;
    json_t *layers = json_object_get(root, "layers"), *e;
    if (!json_is_array(layers)) {
        json_decref(root);
        return st_err(STETHO_ERR_FORMAT, "%s: no \"layers\" array", r->scores_path);
    }
    json_t *spec = json_object(), *out_layers = json_array(), *metrics = json_array();
    const char *metric = json_string_value(json_object_get(root, "metric"));
    json_object_set_new(spec, "metric", json_string(metric ? metric : "score"));
    size_t i;
    json_array_foreach(layers, i, e) {
        json_t *l = json_object_get(e, "layer"), *s = json_object_get(e, "score");
        if (!json_is_integer(l) || json_integer_value(l) < 0 || json_integer_value(l) >= r->n_layers) {
            json_decref(spec);
            json_decref(out_layers);
            json_decref(metrics);
            json_decref(root);
            return st_err(STETHO_ERR_MISMATCH, "%s: layer %d of \"layers\" is not a layer of the %d-layer base model",
                          r->scores_path, (int)json_integer_value(l), r->n_layers);
        }
        int layer = (int)json_integer_value(l);
        if (json_is_number(s)) r->scores[layer] = json_number_value(s);
        json_t *row = json_pack("{s:i, s:o}", "layer", layer, "score", json_is_number(s) ? json_real(json_number_value(s)) : json_null());
        json_t *all = json_object_get(e, "scores");
        if (json_is_object(all)) {
            json_object_set(row, "scores", all);
            const char *k;
            json_t *val;
            json_object_foreach(all, k, val) {
                bool seen = false;
                size_t j;
                json_t *m;
                json_array_foreach(metrics, j, m) seen = seen || !strcmp(json_string_value(m), k);
                if (!seen) json_array_append_new(metrics, json_string(k));
            }
        }
        json_array_append_new(out_layers, row);
    }
    if (!json_array_size(metrics)) json_array_append_new(metrics, json_string(metric ? metric : "score"));
    json_object_set_new(spec, "metrics", metrics);
    json_object_set_new(spec, "layers", out_layers);
    json_object_set_new(spec, "scores_file", json_string(r->scores_path));
    json_decref(root);
    *spec_out = spec;
    return STETHO_OK;
}

/* Accuracy of a variant on the group, NaN if unknown. */
static double group_acc(json_t *vj, const char *group) {
    json_t *a = json_object_get(json_object_get(json_object_get(vj, "results"), group), "acc");
    return json_is_number(a) ? json_number_value(a) : NAN;
}

/* Measured importance of each layer from the ablations, and the Spearman
 * correlation of every specificity metric with it. Every term is taken at the
 * ablation's alpha (the first one): the leave-one-out variants against the
 * all-layers variant of that alpha, never the fine-tune, whose tau also
 * reaches the embeddings and the final norm. */
static json_t *ablation_json(runner *r, json_t *variants, json_t *spec, const char *group) {
    int L = r->n_layers;
    double alpha = r->c->alpha[0], base = NAN, all = NAN;
    double *single = st_malloc((size_t)L * sizeof *single), *loo = st_malloc((size_t)L * sizeof *loo);
    double *imp = st_malloc((size_t)L * sizeof *imp);
    if (!single || !loo || !imp) {
        st_free(single);
        st_free(loo);
        st_free(imp);
        return NULL;
    }
    for (int l = 0; l < L; l++) single[l] = loo[l] = NAN;
    size_t i;
    json_t *v;
    bool any = false;
    json_array_foreach(variants, i, v) {
        const char *kind = json_string_value(json_object_get(v, "kind"));
        json_t *sel = json_object_get(v, "selection");
        int layer = json_is_object(sel) && json_is_integer(json_object_get(sel, "layer"))
                        ? (int)json_integer_value(json_object_get(sel, "layer")) : -1;
        double acc = group_acc(v, group);
        if (!strcmp(kind, "base")) {
            base = acc;
            continue;
        }
        if (json_number_value(json_object_get(v, "alpha")) != alpha) continue;
        if (!strcmp(kind, "all")) all = acc;
        else if (!strcmp(kind, "single") && layer >= 0 && layer < L) single[layer] = acc, any = true;
        else if (!strcmp(kind, "leave_one_out") && layer >= 0 && layer < L) loo[layer] = acc, any = true;
    }
    json_t *out = NULL;
    if (any) {
        out = json_object();
        json_t *rows = json_array();
        for (int l = 0; l < L; l++) {
            /* what tau in layer l adds on its own, and what the rest loses without it */
            double a = isfinite(single[l]) && isfinite(base) ? single[l] - base : NAN;
            double b = isfinite(loo[l]) && isfinite(all) ? all - loo[l] : NAN;
            imp[l] = isfinite(a) && isfinite(b) ? (a + b) / 2 : isfinite(a) ? a : b;
            json_array_append_new(rows, json_pack("{s:i, s:o, s:o, s:o}", "layer", l, "single", num_or_null(single[l]),
                                                  "leave_one_out", num_or_null(loo[l]), "importance", num_or_null(imp[l])));
        }
        json_object_set_new(out, "alpha", json_real(alpha));
        json_object_set_new(out, "layers", rows);
        json_object_set_new(out, "importance_definition",
                            json_string("mean of (acc(alpha tau in layer L only) - acc(base)) and (acc(alpha tau in all "
                                        "layers) - acc(alpha tau in all but L)), on the group; whichever is measured"));
        json_t *corr = json_array(), *m;
        json_array_foreach(json_object_get(spec, "metrics"), i, m) {
            const char *metric = json_string_value(m);
            double *x = st_malloc((size_t)L * sizeof *x), *y = st_malloc((size_t)L * sizeof *y);
            size_t n = 0;
            json_t *row;
            size_t j;
            json_array_foreach(json_object_get(spec, "layers"), j, row) {
                int l = (int)json_integer_value(json_object_get(row, "layer"));
                json_t *sv = json_object_get(json_object_get(row, "scores"), metric);
                if (!sv) sv = json_object_get(row, "score");
                if (x && y && json_is_number(sv) && l >= 0 && l < L && isfinite(imp[l])) {
                    x[n] = json_number_value(sv);
                    y[n++] = imp[l];
                }
            }
            stetho_spearman sp;
            if (x && y && n >= 3 && stetho_stats_spearman(x, y, n, 10000, 1, &sp) == STETHO_OK)
                json_array_append_new(corr, json_pack("{s:s, s:f, s:f, s:I, s:b}", "metric", metric, "rho", sp.rho, "p",
                                                      sp.p, "n", (json_int_t)n, "exact", sp.exact));
            else
                json_array_append_new(corr, json_pack("{s:s, s:n, s:n, s:I}", "metric", metric, "rho", "p", "n", (json_int_t)n));
            stetho_clear_error();
            st_free(x);
            st_free(y);
        }
        json_object_set_new(out, "correlations", corr);
    }
    st_free(single);
    st_free(loo);
    st_free(imp);
    return out;
}

/* ------------------------------------------------------------ diagnose */

static void on_diagnose(void *user, int set, size_t done, size_t total) {
    runner *r = user;
    if (done == total || done % 100 == 0)
        progress(r, "diagnose", "%s prompts %zu/%zu", set == STETHO_SET_DOMAIN ? "domain" : "general", done, total);
}

/* Per-layer specificity of the base model's SAE features (domain vs general),
 * then the ranking the stethoscope and the bottom-K control use. */
static stetho_status step_diagnose(runner *r) {
    const stetho_study_config *c = r->c;
    char *dir = path2(r->run, "diagnose");
    stetho_status st = dir ? mkdir_p(dir) : STETHO_ERR_NOMEM;
    r->scores_path = dir ? path2(dir, "scores.json") : NULL;
    st_free(dir);
    if (!st && !r->scores_path) st = STETHO_ERR_NOMEM;
    if (st) return st;
    stetho_diagnose_opts o;
    stetho_diagnose_opts_default(&o);
    if (c->metric && !stetho_metric_from_name(c->metric, &o.metric))
        return st_err(STETHO_ERR_INVALID,
                      "%s: diagnose.metric '%s' is not one of specific_mass, specific_frac, topk_contrast, effect, probe",
                      c->path, c->metric);
    o.max_tokens = c->diagnose_max_tokens;
    o.top_features = c->top_features;
    o.limit = (size_t)c->diagnose_limit;
    o.k = c->diagnose_k;
    if (c->diagnose_ratio > 0) o.ratio = c->diagnose_ratio;
    if (c->diagnose_smoothing > 0) o.smoothing = c->diagnose_smoothing;
    if (c->diagnose_probe_folds) o.probe_folds = c->diagnose_probe_folds;
    o.field = c->diagnose_field;
    char settings[160];
    snprintf(settings, sizeof settings, "diagnose v1 metric=%d max_tokens=%d top=%d limit=%d", (int)o.metric,
             o.max_tokens, stetho_study_top_features(c), c->diagnose_limit);
    uint64_t key = key_str(0, settings);
    /* settings added later enter the key only when set, so a run made before
     * them keeps its diagnosis */
    if (c->diagnose_k || c->diagnose_ratio > 0 || c->diagnose_smoothing > 0 || c->diagnose_probe_folds) {
        snprintf(settings, sizeof settings, "k=%d ratio=%.17g smoothing=%.17g folds=%d", o.k, o.ratio, o.smoothing,
                 o.probe_folds);
        key = key_str(key, settings);
    }
    if (c->diagnose_field) key = key_str(key_str(key, "field"), c->diagnose_field);
    key = key_compute(key, c);
    key = ident(ident(ident(ident(key, c->base_model), c->sae_dir), c->domain_prompts), c->general_prompts);
    const char *outs[] = {r->scores_path};
    if (step_fresh(r, "diagnose", key, outs, 1)) {
        progress(r, "diagnose", "up to date");
    } else {
        progress(r, "diagnose", "SAE features of %s on domain vs general prompts", c->base_model);
        o.progress = on_diagnose;
        o.progress_user = r;
        stetho_diagnose_result res;
        memset(&res, 0, sizeof res);
        if (!(st = stetho_diagnose_run(c->base_model, c->sae_dir, c->domain_prompts, c->general_prompts, &o, &res)))
            st = stetho_diagnose_write(&res, r->scores_path, true);
        if (!st)
            progress(r, "diagnose", "%d of %d layers scored (%s)", res.n_scored, res.n_layers,
                     stetho_metric_name(o.metric));
        stetho_diagnose_result_free(&res);
        if (!st) st = step_done(r, "diagnose", key);
        if (st) return st_err_context(st, "diagnose");
    }
    if ((st = stetho_scores_load(&r->sc, r->scores_path, NULL))) return st;
    r->have_scores = true;
    if (r->sc.n_layers != r->n_layers)
        return st_err(STETHO_ERR_MISMATCH, "%s: scores for %d layers, the base model has %d", r->scores_path,
                      r->sc.n_layers, r->n_layers);
    for (int l = 0; l < r->n_layers; l++) r->scores[l] = r->sc.score[l];
    return STETHO_OK;
}

/* ------------------------------------------------------------ evaluation */

/* Remove the plain files of dir (an evaluation of another model must not be
 * resumed from). */
static stetho_status clear_files(const char *dir) {
    struct dirent **names = NULL;
    int n = scandir(dir, &names, NULL, alphasort);
    stetho_status st = STETHO_OK;
    for (int i = 0; i < n; i++) {
        const char *nm = names[i]->d_name;
        if (strcmp(nm, ".") && strcmp(nm, "..") && !st) {
            char *p = st_path_join(dir, nm);
            struct stat sb;
            if (!p) st = STETHO_ERR_NOMEM;
            else if (!stat(p, &sb) && S_ISREG(sb.st_mode) && remove(p))
                st = st_err(STETHO_ERR_IO, "cannot remove %s: %s", p, strerror(errno));
            st_free(p);
        }
        free(names[i]);
    }
    free(names);
    return st;
}

typedef struct {
    runner *r;
    const variant *v;
} eval_ctx;

static void on_eval(void *user, const char *task, size_t done, size_t total, size_t correct, double elapsed_s) {
    eval_ctx *e = user;
    if (done == total)
        progress(e->r, "eval", "%s %s: %zu/%zu correct (%.0f s)", e->v->name, task, correct, total, elapsed_s);
}

static stetho_status read_perplexity(variant *v, const char *path) {
    json_t *root;
    stetho_status st = read_json_file(path, &root);
    if (st) return st;
    json_t *p = json_object_get(root, "perplexity");
    v->perplexity = json_is_number(p) ? json_number_value(p) : NAN;
    json_decref(root);
    return STETHO_OK;
}

/* Evaluate one variant (lm-eval results + samples under variants/<name>/eval)
 * and, when asked, its general-text perplexity. */
static stetho_status eval_variant(runner *r, variant *v) {
    const stetho_study_config *c = r->c;
    char *vdir = path3(r->run, "variants", v->name);
    char *ppl_path = vdir ? path2(vdir, "perplexity.json") : NULL;
    v->eval_dir = vdir ? path2(vdir, "eval") : NULL;
    char *keyfile = v->eval_dir ? path2(v->eval_dir, ".stetho_key") : NULL;
    stetho_status st = keyfile && ppl_path ? mkdir_p(v->eval_dir) : STETHO_ERR_NOMEM;
    char settings[512];
    snprintf(settings, sizeof settings, "eval v1 tasks=%s limit=%d shots=%d max_gen=%d batch=%d chat=%d ppl=%s:%d",
             c->tasks ? c->tasks : "minerva_math", c->limit, c->num_fewshot, c->max_gen_toks, c->batch_size,
             (int)c->chat, c->perplexity_input ? c->perplexity_input : "-", c->perplexity_max_tokens);
    uint64_t key = ident(key_str(0, settings), v->model_dir);
    if (v->in_memory) key = stetho_hash64(&v->edit_key, sizeof v->edit_key, key);
    key = key_compute(key, c);
    if (c->data_dir) key = ident(key, c->data_dir);
    if (c->perplexity_input) key = ident(key, c->perplexity_input);
    char step[96];
    snprintf(step, sizeof step, "eval_%s", v->name);
    const char *outs[] = {v->eval_dir, ppl_path};
    if (!st && step_fresh(r, step, key, outs, c->perplexity_input ? 2 : 1)) {
        if (c->perplexity_input) st = read_perplexity(v, ppl_path);
        goto done;
    }
    if (st) goto done;
    /* a partial evaluation is resumed only if it was of this very model and settings */
    char want[32], *have = NULL;
    size_t have_len = 0;
    snprintf(want, sizeof want, "%016llx\n", (unsigned long long)key);
    bool same = stetho_read_file(keyfile, 64, &have, &have_len) == STETHO_OK && have_len == strlen(want) &&
                !memcmp(have, want, have_len);
    stetho_clear_error();
    free(have);
    if (!same && ((st = clear_files(v->eval_dir)) || (st = write_text(keyfile, want)))) goto done;
    progress(r, "eval", "%s: %s", v->name, v->label);
    stetho_model m;
    stetho_tokenizer tok;
    if ((st = load_variant_model(r, v, &m))) goto done;
    if ((st = stetho_tokenizer_load(&tok, v->model_dir))) {
        stetho_model_free(&m);
        goto done;
    }
    stetho_eval_opts eo;
    stetho_eval_opts_default(&eo);
    eo.tasks = c->tasks ? c->tasks : "minerva_math";
    eo.num_fewshot = c->num_fewshot;
    eo.limit = c->limit > 0 ? c->limit : -1;
    eo.max_gen_toks = c->max_gen_toks;
    eo.batch_size = c->batch_size;
    eo.chat = c->chat;
    eo.data_dir = c->data_dir;
    eo.log_samples = true;
    char margs[4200];
    if (v->in_memory) snprintf(margs, sizeof margs, "pretrained=%s,stetho_edit=%s", v->model_dir, v->edit_json);
    else snprintf(margs, sizeof margs, "pretrained=%s", v->model_dir);
    eo.model_args = margs;
    eval_ctx ec = {r, v};
    eo.progress = on_eval;
    eo.user = &ec;
    stetho_eval_result er;
    if (!(st = stetho_eval_run(&m, &tok, &eo, v->eval_dir, &er))) stetho_eval_result_free(&er);
    if (!st && c->perplexity_input) {
        stetho_perplexity_result pr;
        if (!(st = stetho_perplexity_run(&m, &tok, c->perplexity_input, c->perplexity_max_tokens, 0, &pr))) {
            v->perplexity = pr.perplexity;
            json_t *o = json_pack("{s:o, s:f, s:I, s:I, s:s, s:i}", "perplexity", num_or_null(pr.perplexity), "nll",
                                  pr.nll, "tokens", (json_int_t)pr.tokens, "documents", (json_int_t)pr.documents,
                                  "input", c->perplexity_input, "max_tokens", c->perplexity_max_tokens);
            st = o ? write_json(ppl_path, o) : st_err(STETHO_ERR_NOMEM, "out of memory");
            json_decref(o);
            if (!st) progress(r, "perplexity", "%s: %.3f on %s", v->name, pr.perplexity, c->perplexity_input);
        }
    }
    stetho_tokenizer_free(&tok);
    stetho_model_free(&m);
    if (!st) st = step_done(r, step, key);
done:
    st_free(vdir);
    st_free(ppl_path);
    st_free(keyfile);
    return st ? st_err_context(st, "variant %s", v->name) : STETHO_OK;
}

/* ------------------------------------------------------------ summary */

static json_t *task_vector_json(runner *r) {
    json_t *root;
    if (read_json_file(r->diff_json, &root)) return NULL;
    json_t *out = json_object(), *rows = json_array(), *e;
    size_t i;
    json_array_foreach(json_object_get(root, "layers"), i, e) {
        json_t *l = json_object_get(e, "layer");
        if (!json_is_integer(l)) continue; /* embeddings and final norm */
        json_array_append_new(rows, json_pack("{s:O, s:O, s:O, s:O}", "layer", l, "norm", json_object_get(e, "tau_norm"),
                                              "rel_norm", json_object_get(e, "relative_change"), "energy_share",
                                              json_object_get(e, "energy_share")));
    }
    json_object_set_new(out, "total_norm", num_or_null(sqrt(r->tau_total_sq)));
    json_object_set_new(out, "layers", rows);
    json_object_set_new(out, "file", json_string(r->tv_path));
    json_decref(root);
    return out;
}

static json_t *scalpel_json(runner *r) {
    json_t *root;
    if (!r->projection_json || read_json_file(r->projection_json, &root)) {
        stetho_clear_error();
        return json_null();
    }
    json_t *out = json_object(), *rows = json_array(), *e;
    json_object_set_new(out, "features", json_integer(r->c->scalpel_features));
    json_object_set_new(out, "d_model", json_integer(r->d_model));
    json_object_set_new(out, "retained", json_copy(json_object_get(root, "energy_retained_projected")));
    json_object_set_new(out, "expected_random", json_copy(json_object_get(root, "random_subspace_expectation")));
    json_object_set_new(out, "retained_total", json_copy(json_object_get(root, "energy_retained_total")));
    size_t i;
    json_array_foreach(json_object_get(root, "layers"), i, e) {
        json_array_append_new(rows, json_pack("{s:O, s:O, s:O, s:O}", "layer", json_object_get(e, "layer"), "rank",
                                              json_object_get(e, "rank"), "retained",
                                              json_object_get(e, "energy_retained"), "expected",
                                              json_object_get(e, "random_expectation")));
    }
    json_object_set_new(out, "layers", rows);
    json_decref(root);
    return out;
}

/* Which other variants a variant is compared with besides base: the
 * stethoscope against the controls of the same K and alpha, and against the
 * full fine-tune. */
static bool compare_with(const variant *a, const variant *b) {
    if (strcmp(a->kind, "stethoscope") || a == b || a->alpha != b->alpha) return false;
    if (!strcmp(b->kind, "finetuned") || !strcmp(b->kind, "all") || !strcmp(b->kind, "scalpel")) return true;
    return (!strcmp(b->kind, "random") || !strcmp(b->kind, "norm") || !strcmp(b->kind, "bottom")) && b->k == a->k;
}

static stetho_status write_summary(runner *r, double total_s) {
    const stetho_study_config *c = r->c;
    size_t nv = r->n_v;
    stetho_results *res = st_calloc(nv ? nv : 1, sizeof *res);
    if (!res) return STETHO_ERR_NOMEM;
    stetho_status st = STETHO_OK;
    size_t n_read = 0;
    for (; n_read < nv && !st; n_read++) {
        st = stetho_results_read(r->v[n_read].eval_dir, true, &res[n_read]);
        if (st) st = st_err_context(st, "variant %s", r->v[n_read].name);
    }
    if (st) n_read--;
    json_t *root = json_object(), *spec = NULL;
    if (!st && (st = read_scores(r, &spec))) spec = NULL;
    const char *group = nv && !st ? group_name(&res[0]) : "minerva_math";
    const variant *base = NULL;
    const stetho_results *base_res = NULL;
    for (size_t i = 0; i < nv; i++)
        if (!strcmp(r->v[i].kind, "base")) base = &r->v[i], base_res = &res[i];
    json_t *variants = json_array();
    for (size_t i = 0; i < nv && !st; i++) {
        variant *v = &r->v[i];
        json_t *vj = variant_json(r, v);
        json_object_set_new(vj, "results", results_json(&res[i]));
        json_t *vsb = json_null();
        if (base && base != v) {
            stetho_comparison cmp;
            if ((st = stetho_results_compare(base_res, &res[i], 0.05, &cmp))) break;
            vsb = comparison_json(&cmp, group);
            stetho_comparison_free(&cmp);
        }
        json_object_set_new(vj, "vs_base", vsb);
        json_t *vs = json_object();
        for (size_t j = 0; j < nv && !st; j++) {
            if (!compare_with(v, &r->v[j])) continue;
            stetho_comparison cmp;
            if ((st = stetho_results_compare(&res[j], &res[i], 0.05, &cmp))) break;
            json_object_set_new(vs, r->v[j].name, comparison_json(&cmp, group));
            stetho_comparison_free(&cmp);
        }
        if (json_object_size(vs)) json_object_set_new(vj, "vs", vs);
        else json_decref(vs);
        json_array_append_new(variants, vj);
    }
    if (!st) {
        const char *slash = strrchr(c->path ? c->path : "study", '/');
        const char *title = r->o && r->o->title ? r->o->title : slash ? slash + 1 : c->path ? c->path : "study";
        char created[32];
        time_t now = time(NULL);
        struct tm tmv;
        strftime(created, sizeof created, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&now, &tmv));
        json_object_set_new(root, "stetho_version", json_string(STETHO_VERSION));
        json_object_set_new(root, "title", json_string(title));
        json_object_set_new(root, "created", json_string(created));
        json_object_set_new(root, "model",
                            json_pack("{s:s, s:o, s:s, s:i, s:i}", "base", c->base_model, "finetuned",
                                      c->finetuned_model ? json_string(c->finetuned_model) : json_null(), "family",
                                      r->family, "n_layers", r->n_layers, "d_model", r->d_model));
        json_t *tvj = task_vector_json(r);
        json_object_set_new(root, "task_vector", tvj ? tvj : json_null());
        json_object_set_new(root, "specificity", json_incref(spec));
        json_object_set_new(root, "scalpel", scalpel_json(r));
        json_t *tasks = json_array();
        for (int t = 0; t < STETHO_EVAL_N_SUBJECTS && nv; t++)
            if (stetho_results_task_get(&res[0], STETHO_EVAL_TASKS[t]))
                json_array_append_new(tasks, json_string(STETHO_EVAL_TASKS[t]));
        for (size_t t = 0; nv && t < res[0].n_tasks; t++) { /* tasks outside the seven subjects */
            bool known = false;
            for (int u = 0; u < STETHO_EVAL_N_SUBJECTS; u++) known |= !strcmp(res[0].tasks[t].name, STETHO_EVAL_TASKS[u]);
            if (!known) json_array_append_new(tasks, json_string(res[0].tasks[t].name));
        }
        json_object_set_new(root, "tasks", tasks);
        json_object_set_new(root, "group", json_string(group));
        json_object_set_new(root, "variants", variants);
        variants = NULL;
        json_t *abl = ablation_json(r, json_object_get(root, "variants"), spec, group);
        json_object_set_new(root, "ablation", abl ? abl : json_null());
        /* total: every step's last real run (a resumed study's earlier work included) */
        double sum = 0;
        const char *sk;
        json_t *sv;
        json_object_foreach(json_object_get(r->timings, "steps"), sk, sv) sum += json_number_value(sv);
        json_t *tj = json_pack("{s:f, s:f, s:O}", "total_s", sum, "this_run_s", total_s, "steps",
                               json_object_get(r->timings, "steps"));
        json_object_set_new(root, "timings", tj ? tj : json_null());
        json_t *notes = json_array();
        if (!base)
            json_array_append_new(notes, json_string("no base variant: nothing is compared against base"));
        if (c->limit > 0) {
            char line[160];
            snprintf(line, sizeof line, "evaluation limited to the first %d problems of each subject (lm-eval order)",
                     c->limit);
            json_array_append_new(notes, json_string(line));
        }
        json_object_set_new(root, "notes", notes);
        char *path = path2(r->run, "summary.json");
        st = path ? write_json(path, root) : STETHO_ERR_NOMEM;
        st_free(path);
    }
    json_decref(variants);
    json_decref(spec);
    json_decref(root);
    for (size_t i = 0; i < n_read; i++) stetho_results_free(&res[i]);
    st_free(res);
    return st;
}

/* ------------------------------------------------------------ the run */

/* The run directory records its config; another config's directory is refused
 * unless forced. */
static stetho_status claim_run_dir(runner *r) {
    char *json = NULL, *have = NULL;
    size_t have_len = 0;
    stetho_status st = mkdir_p(r->run);
    char *steps = path2(r->run, "steps");
    if (!st) st = steps ? mkdir_p(steps) : STETHO_ERR_NOMEM;
    st_free(steps);
    if (!st) st = stetho_study_config_json(r->c, &json);
    char *path = path2(r->run, "config.json");
    if (!st && !path) st = STETHO_ERR_NOMEM;
    if (!st && stetho_read_file(path, (size_t)16 << 20, &have, &have_len) == STETHO_OK) {
        bool same = have_len == strlen(json) && !memcmp(have, json, have_len);
        if (!same && !(r->o && r->o->force))
            st = st_err(STETHO_ERR_MISMATCH, "%s holds a run of a different config (%s differs)", r->run, path);
    }
    if (!st) st = write_text(path, json);
    free(have);
    free(json);
    st_free(path);
    return st;
}

/* A step's time is recorded when it did work; a skipped step keeps the time
 * of the run that made its outputs (steps/timings.json), so a resumed study
 * still reports what the whole study cost. */
static void step_time(runner *r, const char *step, double t0) {
    if (r->ran) json_object_set_new(json_object_get(r->timings, "steps"), step, json_real(now_s() - t0));
    r->ran = false;
}

static stetho_status load_timings(runner *r) {
    char *path = path3(r->run, "steps", "timings.json");
    if (!path) return STETHO_ERR_NOMEM;
    json_t *old = NULL;
    if (exists(path) && !read_json_file(path, &old) && json_is_object(json_object_get(old, "steps")))
        json_object_set(r->timings, "steps", json_object_get(old, "steps"));
    stetho_clear_error();
    json_decref(old);
    st_free(path);
    return STETHO_OK;
}

static stetho_status save_timings(runner *r) {
    char *path = path3(r->run, "steps", "timings.json");
    stetho_status st = path ? write_json(path, r->timings) : STETHO_ERR_NOMEM;
    st_free(path);
    return st;
}

stetho_status stetho_study_run(const stetho_study_config *c, const char *run_dir, const stetho_study_run_opts *o) {
    if (!c || !run_dir || !*run_dir) return st_err(STETHO_ERR_INVALID, "study: no config or run directory");
    runner r;
    memset(&r, 0, sizeof r);
    r.c = c;
    r.o = o;
    r.run = run_dir;
    r.t_start = now_s();
    r.timings = json_pack("{s:{}}", "steps");
    stetho_status st = r.timings ? STETHO_OK : st_err(STETHO_ERR_NOMEM, "out of memory");
    stetho_compute before = stetho_get_compute(); /* the config's mode for this run only */
    stetho_set_compute(stetho_study_compute(c));
    double t;
    if (!st) st = load_shape(&r);
    if (!st) st = check_config(&r);
    if (!st) st = claim_run_dir(&r);
    if (!st) st = load_timings(&r);
    if (!st) {
        t = now_s();
        st = step_taskvec(&r);
        step_time(&r, "taskvec", t);
    }
    if (!st) {
        t = now_s();
        st = step_diagnose(&r);
        step_time(&r, "diagnose", t);
    }
    if (!st) {
        t = now_s();
        st = step_scalpel(&r);
        step_time(&r, "scalpel", t);
    }
    if (!st) st = plan_variants(&r);
    if (!st) progress(&r, "plan", "%zu variants", r.n_v);
    for (size_t i = 0; i < r.n_v && !st; i++) {
        char name[96];
        t = now_s();
        st = build_variant(&r, &r.v[i]);
        snprintf(name, sizeof name, "edit_%s", r.v[i].name);
        step_time(&r, name, t);
        t = now_s();
        if (!st) st = eval_variant(&r, &r.v[i]);
        snprintf(name, sizeof name, "eval_%s", r.v[i].name);
        step_time(&r, name, t);
        if (!st) st = save_timings(&r);
    }
    if (!st) st = save_timings(&r);
    if (!st) {
        st = write_summary(&r, now_s() - r.t_start);
        if (!st) st = stetho_report_write(run_dir, run_dir);
    }
    if (!st) progress(&r, "done", "%zu variants in %.0f s", r.n_v, now_s() - r.t_start);
    for (size_t i = 0; i < r.n_v; i++) {
        st_free(r.v[i].layers);
        st_free(r.v[i].model_dir);
        st_free(r.v[i].edit_json);
        st_free(r.v[i].eval_dir);
        free(r.v[i].meta);
    }
    st_free(r.v);
    if (r.have_scores) stetho_scores_free(&r.sc);
    st_free(r.tv_path);
    st_free(r.diff_json);
    st_free(r.scores_path);
    st_free(r.projection_json);
    st_free(r.scalpel_tv);
    st_free(r.scores);
    st_free(r.tau_norm);
    st_free(r.theta_norm);
    json_decref(r.timings);
    stetho_set_compute(before);
    return st;
}
