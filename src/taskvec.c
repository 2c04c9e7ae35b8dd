/* Task vectors: streaming diff with statistics, and layer/module-selected edits
 * written as complete Hugging Face directories. */
#include "stetho/taskvec.h"
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define BLOCK_ELEMS ((size_t)1 << 20) /* elements converted per step: 4 MB of f32 */

typedef enum { OP_DIFF, OP_EDIT_TV, OP_EDIT_FT } block_op;

typedef struct {
    float *a, *b;      /* [BLOCK_ELEMS] f32 scratch */
    uint8_t *out;      /* [BLOCK_ELEMS * 4] converted output */
} scratch;

static stetho_status scratch_init(scratch *s) {
    s->a = st_malloc(BLOCK_ELEMS * sizeof(float));
    s->b = st_malloc(BLOCK_ELEMS * sizeof(float));
    s->out = st_malloc(BLOCK_ELEMS * sizeof(float));
    return (s->a && s->b && s->out) ? STETHO_OK : STETHO_ERR_NOMEM;
}

static void scratch_free(scratch *s) {
    st_free(s->a);
    st_free(s->b);
    st_free(s->out);
}

/* One block of n elements. x: base values (dtype dx), y: fine-tuned values or tau
 * (dtype dy). OP_DIFF writes tau = y - x and accumulates statistics; the edit ops
 * write x + alpha * tau, tau = y (TV) or y - x (FT). Output in dtype dout, to out. */
static void run_block(block_op op, const void *x, stetho_dtype dx, const void *y, stetho_dtype dy,
                      stetho_dtype dout, size_t n, float alpha, scratch *s, uint8_t *out, stetho_tv_stats *stats) {
    double tau_sq = 0, base_sq = 0, ft_sq = 0, dot = 0, mx = 0;
    size_t ex = stetho_dtype_bits(dx) / 8, ey = stetho_dtype_bits(dy) / 8, eo = stetho_dtype_bits(dout) / 8;
#pragma omp parallel reduction(+ : tau_sq, base_sq, ft_sq, dot) reduction(max : mx)
    {
#ifdef _OPENMP
        size_t nt = (size_t)omp_get_num_threads(), id = (size_t)omp_get_thread_num();
#else
        size_t nt = 1, id = 0;
#endif
        size_t lo = n * id / nt, hi = n * (id + 1) / nt, m = hi - lo;
        float *a = s->a + lo, *b = s->b + lo;
        /* dtypes were checked by the caller; conversion cannot fail here */
        stetho_convert_to_f32(a, (const uint8_t *)x + lo * ex, dx, m);
        stetho_convert_to_f32(b, (const uint8_t *)y + lo * ey, dy, m);
        if (op == OP_DIFF) {
            for (size_t i = 0; i < m; i++) {
                float t = b[i] - a[i];
                double da = a[i], db = b[i], dt = t;
                tau_sq += dt * dt;
                base_sq += da * da;
                ft_sq += db * db;
                dot += da * db;
                if (fabs(dt) > mx) mx = fabs(dt);
                a[i] = t;
            }
        } else if (op == OP_EDIT_TV) {
            for (size_t i = 0; i < m; i++) a[i] = a[i] + alpha * b[i];
        } else {
            for (size_t i = 0; i < m; i++) a[i] = a[i] + alpha * (b[i] - a[i]);
        }
        stetho_convert_from_f32(out + lo * eo, dout, a, m);
    }
    if (stats) {
        stats->tau_sq += tau_sq;
        stats->base_sq += base_sq;
        stats->ft_sq += ft_sq;
        stats->base_dot_ft += dot;
        if (mx > stats->tau_max_abs) stats->tau_max_abs = mx;
    }
}

/* Stream one tensor through run_block into the writer. */
static stetho_status stream_tensor(stetho_st_writer *w, block_op op, const stetho_tensor *x, const stetho_tensor *y,
                                   stetho_dtype dout, float alpha, scratch *s, stetho_tv_stats *stats) {
    size_t ex = stetho_dtype_bits(x->dtype) / 8, ey = stetho_dtype_bits(y->dtype) / 8;
    size_t eo = stetho_dtype_bits(dout) / 8;
    for (uint64_t done = 0; done < x->n_elements;) {
        size_t n = x->n_elements - done < BLOCK_ELEMS ? (size_t)(x->n_elements - done) : BLOCK_ELEMS;
        run_block(op, (const uint8_t *)x->data + done * ex, x->dtype, (const uint8_t *)y->data + done * ey,
                  y->dtype, dout, n, alpha, s, s->out, stats);
        stetho_status st = w ? stetho_st_writer_write(w, s->out, n * eo) : STETHO_OK;
        if (st) return st;
        done += n;
    }
    return STETHO_OK;
}

static bool same_shape(const stetho_tensor *a, const stetho_tensor *b) {
    if (a->ndim != b->ndim) return false;
    for (int d = 0; d < a->ndim; d++)
        if (a->shape[d] != b->shape[d]) return false;
    return true;
}

static void shape_str(const stetho_tensor *t, char *buf, size_t n) {
    size_t o = (size_t)snprintf(buf, n, "[");
    for (int d = 0; d < t->ndim && o < n; d++)
        o += (size_t)snprintf(buf + o, n - o, "%s%llu", d ? ", " : "", (unsigned long long)t->shape[d]);
    if (o < n) snprintf(buf + o, n - o, "]");
}

static stetho_status check_pair(const stetho_tensor *a, const char *pa, const stetho_tensor *b, const char *pb,
                                bool need_same_dtype) {
    if (!same_shape(a, b)) {
        char sa[160], sb[160];
        shape_str(a, sa, sizeof sa);
        shape_str(b, sb, sizeof sb);
        return st_err(STETHO_ERR_MISMATCH, "tensor '%s' has shape %s in %s but %s in %s", a->name, sa, pa, sb, pb);
    }
    if (need_same_dtype && a->dtype != b->dtype)
        return st_err(STETHO_ERR_MISMATCH, "tensor '%s' is %s in %s but %s in %s", a->name,
                      stetho_dtype_name(a->dtype), pa, stetho_dtype_name(b->dtype), pb);
    return STETHO_OK;
}

static stetho_status add_skip(stetho_tv_report *rep, const char *name, const char *reason) {
    stetho_tv_skip *p = st_realloc(rep->skipped, (rep->n_skipped + 1) * sizeof *p);
    if (!p) return STETHO_ERR_NOMEM;
    rep->skipped = p;
    p[rep->n_skipped].name = st_strdup(name);
    p[rep->n_skipped].reason = st_strdup(reason);
    rep->n_skipped++;
    return (p[rep->n_skipped - 1].name && p[rep->n_skipped - 1].reason) ? STETHO_OK : STETHO_ERR_NOMEM;
}

void stetho_tv_report_free(stetho_tv_report *rep) {
    for (size_t i = 0; i < rep->n_skipped; i++) {
        st_free(rep->skipped[i].name);
        st_free(rep->skipped[i].reason);
    }
    st_free(rep->skipped);
    st_free(rep->tensors);
    memset(rep, 0, sizeof *rep);
}

stetho_status stetho_taskvec_diff(const stetho_checkpoint *base, const stetho_checkpoint *ft, const char *out_path,
                                  const stetho_diff_opts *opts, stetho_tv_report *rep) {
    memset(rep, 0, sizeof *rep);
    stetho_diff_opts o = opts ? *opts : (stetho_diff_opts){STETHO_DTYPE_F32, false};
    if (!stetho_dtype_is_float(o.out_dtype))
        return st_err(STETHO_ERR_INVALID, "task vector dtype must be F32, BF16 or F16");
    stetho_status st = STETHO_OK;
    const stetho_tensor **pairs = st_calloc(base->n_tensors ? base->n_tensors : 1, sizeof *pairs);
    rep->tensors = st_calloc(base->n_tensors ? base->n_tensors : 1, sizeof *rep->tensors);
    if (!pairs || !rep->tensors) {
        st_free(pairs);
        stetho_tv_report_free(rep);
        return STETHO_ERR_NOMEM;
    }
    stetho_st_writer w;
    bool have_writer = false;
    scratch s = {0};
    rep->n_layers = stetho_checkpoint_n_layers(base);

    /* match every tensor before writing anything */
    for (size_t i = 0; i < base->n_tensors && !st; i++) {
        const stetho_tensor *t = base->tensors[i];
        const stetho_tensor *u = stetho_checkpoint_find(ft, t->name);
        if (!u) {
            if (o.allow_missing) st = add_skip(rep, t->name, "absent from the fine-tuned checkpoint");
            else st = st_err(STETHO_ERR_MISMATCH, "tensor '%s' is in %s but not in %s (use --allow-missing to skip it)",
                             t->name, base->path, ft->path);
            continue;
        }
        if ((st = check_pair(t, base->path, u, ft->path, true))) break;
        if (!stetho_dtype_is_float(t->dtype)) {
            st = add_skip(rep, t->name, "not a floating-point tensor");
            continue;
        }
        stetho_tensor_role r = stetho_arch_classify(t->name);
        stetho_tv_stats *x = &rep->tensors[rep->n_tensors];
        x->name = t->name;
        x->layer = r.layer;
        x->module = r.module;
        x->n_elements = t->n_elements;
        pairs[rep->n_tensors++] = u;
    }
    for (size_t i = 0; i < ft->n_tensors && !st; i++) {
        if (stetho_checkpoint_find(base, ft->tensors[i]->name)) continue;
        if (o.allow_missing) st = add_skip(rep, ft->tensors[i]->name, "absent from the base checkpoint");
        else st = st_err(STETHO_ERR_MISMATCH, "tensor '%s' is in %s but not in %s (use --allow-missing to skip it)",
                         ft->tensors[i]->name, ft->path, base->path);
    }
    if (st) goto done;
    if ((st = scratch_init(&s))) goto done;
    if (out_path) {
        if ((st = stetho_st_writer_init(&w, out_path))) goto done;
        have_writer = true;
        json_t *m = json_pack("{s:s, s:s, s:s, s:s}", "tool", "stetho " STETHO_VERSION, "base", base->path,
                              "finetuned", ft->path, "dtype", stetho_dtype_name(o.out_dtype));
        char *ms = m ? json_dumps(m, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
        json_decref(m);
        if (!ms) {
            st = st_err(STETHO_ERR_INVALID, "cannot record input paths in metadata (not valid UTF-8?)");
            goto done;
        }
        st = stetho_st_writer_set_meta(&w, "format", "pt");
        if (!st) st = stetho_st_writer_set_meta(&w, "stetho_task_vector", ms);
        free(ms);
        for (size_t i = 0; i < rep->n_tensors && !st; i++) {
            const stetho_tensor *u = pairs[i];
            st = stetho_st_writer_declare(&w, u->name, o.out_dtype, u->ndim, u->shape);
        }
        if (st) goto done;
    }
    for (size_t i = 0; i < rep->n_tensors; i++) {
        const stetho_tensor *t = stetho_checkpoint_find(base, rep->tensors[i].name), *u = pairs[i];
        const stetho_st_file *fb = stetho_checkpoint_shard(base, t), *ff = stetho_checkpoint_shard(ft, u);
        stetho_st_prefetch(fb, t);
        stetho_st_prefetch(ff, u);
        st = stream_tensor(have_writer ? &w : NULL, OP_DIFF, t, u, o.out_dtype, 0, &s, &rep->tensors[i]);
        stetho_st_release(fb, t);
        stetho_st_release(ff, u);
        if (st) goto done;
        rep->total_tau_sq += rep->tensors[i].tau_sq;
        rep->total_base_sq += rep->tensors[i].base_sq;
    }
    if (have_writer) {
        st = stetho_st_writer_finish(&w);
        have_writer = false;
    }
done:
    if (have_writer) stetho_st_writer_abort(&w);
    scratch_free(&s);
    st_free(pairs);
    if (st) stetho_tv_report_free(rep);
    return st;
}

stetho_status stetho_tv_report_by_layer(const stetho_tv_report *rep, stetho_tv_layer_row **rows_out) {
    stetho_tv_layer_row *rows = st_calloc((size_t)rep->n_layers + 1, sizeof *rows);
    if (!rows) return STETHO_ERR_NOMEM;
    for (size_t i = 0; i < rep->n_tensors; i++) {
        const stetho_tv_stats *x = &rep->tensors[i];
        int row = x->layer >= 0 && x->layer < rep->n_layers ? x->layer : rep->n_layers;
        stetho_tv_layer_row *r = &rows[row];
        r->tau_sq[x->module] += x->tau_sq;
        r->base_sq[x->module] += x->base_sq;
        r->ft_sq[x->module] += x->ft_sq;
        r->dot[x->module] += x->base_dot_ft;
        r->present[x->module] = true;
        r->layer_tau_sq += x->tau_sq;
        r->layer_base_sq += x->base_sq;
        r->layer_ft_sq += x->ft_sq;
        r->layer_dot += x->base_dot_ft;
    }
    *rows_out = rows;
    return STETHO_OK;
}

static double safe_ratio(double a, double b) { return b > 0 ? a / b : 0; }
static double cosine(double dot, double a_sq, double b_sq) {
    return (a_sq > 0 && b_sq > 0) ? dot / sqrt(a_sq * b_sq) : 0;
}

/* JSON has no NaN or infinity: non-finite values (from inf/NaN weights) become null. */
static json_t *num(double x) { return isfinite(x) ? json_real(x) : json_null(); }

static json_t *stats_json(double tau_sq, double base_sq, double ft_sq, double dot, double total_tau_sq) {
    json_t *o = json_object();
    json_object_set_new(o, "tau_norm", num(sqrt(tau_sq)));
    json_object_set_new(o, "base_norm", num(sqrt(base_sq)));
    json_object_set_new(o, "relative_change", num(safe_ratio(sqrt(tau_sq), sqrt(base_sq))));
    json_object_set_new(o, "energy_share", num(safe_ratio(tau_sq, total_tau_sq)));
    json_object_set_new(o, "cosine_base_ft", num(cosine(dot, base_sq, ft_sq)));
    return o;
}

stetho_status stetho_tv_report_json(const stetho_tv_report *rep, const char *base_path, const char *ft_path,
                                    char **out) {
    stetho_tv_layer_row *rows;
    stetho_status st = stetho_tv_report_by_layer(rep, &rows);
    if (st) return st;
    json_t *root = json_object();
    json_object_set_new(root, "base", json_string(base_path));
    json_object_set_new(root, "finetuned", json_string(ft_path));
    json_object_set_new(root, "n_layers", json_integer(rep->n_layers));
    json_t *total = json_object();
    json_object_set_new(total, "tau_norm", num(sqrt(rep->total_tau_sq)));
    json_object_set_new(total, "base_norm", num(sqrt(rep->total_base_sq)));
    json_object_set_new(total, "relative_change", num(safe_ratio(sqrt(rep->total_tau_sq), sqrt(rep->total_base_sq))));
    json_object_set_new(root, "total", total);
    json_t *layers = json_array();
    for (int l = 0; l <= rep->n_layers; l++) {
        const stetho_tv_layer_row *r = &rows[l];
        json_t *o = stats_json(r->layer_tau_sq, r->layer_base_sq, r->layer_ft_sq, r->layer_dot, rep->total_tau_sq);
        json_object_set_new(o, "layer", l < rep->n_layers ? json_integer(l) : json_null());
        json_t *mods = json_object();
        for (int m = 0; m < STETHO_MOD_COUNT; m++)
            if (r->present[m])
                json_object_set_new(mods, stetho_module_name((stetho_module)m),
                                    stats_json(r->tau_sq[m], r->base_sq[m], r->ft_sq[m], r->dot[m], rep->total_tau_sq));
        json_object_set_new(o, "modules", mods);
        json_array_append_new(layers, o);
    }
    json_object_set_new(root, "layers", layers);
    json_t *tensors = json_array();
    for (size_t i = 0; i < rep->n_tensors; i++) {
        const stetho_tv_stats *x = &rep->tensors[i];
        json_t *o = stats_json(x->tau_sq, x->base_sq, x->ft_sq, x->base_dot_ft, rep->total_tau_sq);
        json_object_set_new(o, "name", json_string(x->name));
        json_object_set_new(o, "layer", x->layer >= 0 ? json_integer(x->layer) : json_null());
        json_object_set_new(o, "module", json_string(stetho_module_name(x->module)));
        json_object_set_new(o, "n_elements", json_integer((json_int_t)x->n_elements));
        json_object_set_new(o, "tau_max_abs", num(x->tau_max_abs));
        json_array_append_new(tensors, o);
    }
    json_object_set_new(root, "tensors", tensors);
    json_t *skipped = json_array();
    for (size_t i = 0; i < rep->n_skipped; i++)
        json_array_append_new(skipped, json_pack("{s:s, s:s}", "name", rep->skipped[i].name, "reason",
                                                 rep->skipped[i].reason));
    json_object_set_new(root, "skipped", skipped);
    *out = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(root);
    st_free(rows);
    return *out ? STETHO_OK : st_err(STETHO_ERR_NOMEM, "cannot serialise the report");
}

/* ------------------------------------------------------------------ edits */

bool stetho_selection_has(const stetho_selection *sel, stetho_tensor_role role) {
    if (role.module == STETHO_MOD_VISION) return false;
    if (!(sel->modules & (1u << role.module))) return false;
    if (role.layer < 0) return sel->non_layer;
    return role.layer < sel->n_layers && sel->layers[role.layer];
}

/* Copy a small auxiliary file (config, tokenizer) byte for byte. */
static stetho_status copy_file(const char *src, const char *dst) {
    int in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0) return st_err(STETHO_ERR_IO, "%s: cannot open: %s", src, strerror(errno));
    int out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (out < 0) {
        close(in);
        return st_err(STETHO_ERR_IO, "%s: cannot create: %s", dst, strerror(errno));
    }
    stetho_status st = STETHO_OK;
    char buf[1 << 16];
    for (;;) {
        ssize_t k = read(in, buf, sizeof buf);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) {
            st = st_err(STETHO_ERR_IO, "%s: read failed: %s", src, strerror(errno));
            break;
        }
        if (k == 0) break;
        for (ssize_t off = 0; off < k;) {
            ssize_t m = st_fault_write_fires() ? (errno = ENOSPC, -1) : write(out, buf + off, st_fault_write_len((size_t)(k - off)));
            if (m < 0 && errno == EINTR) continue;
            if (m <= 0) {
                st = st_err(STETHO_ERR_IO, "%s: write failed: %s", dst, m < 0 ? strerror(errno) : "no progress");
                break;
            }
            off += m;
        }
        if (st) break;
    }
    close(in);
    if (close(out) != 0 && !st) st = st_err(STETHO_ERR_IO, "%s: close failed: %s", dst, strerror(errno));
    return st;
}

/* Every regular file of the base directory except the weights and their index. */
static stetho_status copy_aux_files(const char *src_dir, const char *dst_dir) {
    DIR *d = opendir(src_dir);
    if (!d) return st_err(STETHO_ERR_IO, "%s: cannot list: %s", src_dir, strerror(errno));
    stetho_status st = STETHO_OK;
    struct dirent *e;
    while (!st && (e = readdir(d))) {
        if (e->d_name[0] == '.' || st_ends_with(e->d_name, ".safetensors") ||
            !strcmp(e->d_name, "model.safetensors.index.json"))
            continue;
        char *src = st_path_join(src_dir, e->d_name), *dst = st_path_join(dst_dir, e->d_name);
        struct stat sb;
        if (!src || !dst) st = STETHO_ERR_NOMEM;
        else if (stat(src, &sb) == 0 && S_ISREG(sb.st_mode)) st = copy_file(src, dst);
        st_free(src);
        st_free(dst);
    }
    closedir(d);
    return st;
}

typedef struct {
    const stetho_tensor *base;
    const stetho_tensor *delta; /* NULL: copied unchanged */
    int shard;
} edit_item;

static json_t *edit_record(const stetho_checkpoint *base, const stetho_checkpoint *delta, bool is_ft,
                           const stetho_selection *sel, const stetho_edit_opts *o, size_t n_edited) {
    json_t *r = json_object();
    json_object_set_new(r, "tool", json_string("stetho " STETHO_VERSION));
    json_object_set_new(r, "base", json_string(base->path));
    json_object_set_new(r, is_ft ? "finetuned" : "task_vector", json_string(delta->path));
    json_object_set_new(r, "alpha", json_real(o->alpha));
    json_t *layers = json_array();
    bool all = true;
    for (int l = 0; l < sel->n_layers; l++) {
        if (sel->layers[l]) json_array_append_new(layers, json_integer(l));
        else all = false;
    }
    json_object_set_new(r, "layers", layers);
    json_object_set_new(r, "all_layers", json_boolean(all));
    json_object_set_new(r, "non_layer_tensors", json_boolean(sel->non_layer));
    json_t *mods = json_array();
    for (int m = 0; m < STETHO_MOD_COUNT; m++)
        if (sel->modules & (1u << m)) json_array_append_new(mods, json_string(stetho_module_name((stetho_module)m)));
    json_object_set_new(r, "modules", mods);
    json_object_set_new(r, "tensors_edited", json_integer((json_int_t)n_edited));
    if (o->extra_meta) {
        json_t *extra = json_loads(o->extra_meta, 0, NULL);
        if (json_is_object(extra)) json_object_update(r, extra);
        json_decref(extra);
    }
    return r;
}

static stetho_status write_index(const char *dir, const edit_item *items, size_t n, char **shard_names) {
    json_t *root = json_object(), *wm = json_object();
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        json_object_set_new(wm, items[i].base->name, json_string(shard_names[items[i].shard]));
        total += items[i].base->nbytes;
    }
    json_object_set_new(root, "metadata", json_pack("{s:I}", "total_size", (json_int_t)total));
    json_object_set_new(root, "weight_map", wm);
    char *text = json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(root);
    if (!text) return st_err(STETHO_ERR_NOMEM, "cannot serialise the shard index");
    char *path = st_path_join(dir, "model.safetensors.index.json");
    stetho_status st = path ? STETHO_OK : STETHO_ERR_NOMEM;
    if (!st) {
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        size_t len = strlen(text);
        if (fd < 0) st = st_err(STETHO_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
        else {
            for (size_t off = 0; off < len && !st;) {
                ssize_t k = st_fault_write_fires() ? (errno = ENOSPC, -1) : write(fd, text + off, st_fault_write_len(len - off));
                if (k < 0 && errno == EINTR) continue;
                if (k <= 0) st = st_err(STETHO_ERR_IO, "%s: write failed: %s", path, k < 0 ? strerror(errno) : "no progress");
                else off += (size_t)k;
            }
            if (close(fd) != 0 && !st) st = st_err(STETHO_ERR_IO, "%s: close failed: %s", path, strerror(errno));
        }
    }
    st_free(path);
    free(text);
    return st;
}

static bool same_file(const char *a, const char *b) {
    struct stat sa, sb;
    return a && b && stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* Which tensors of base an edit changes (items[i].delta set), checked against
 * the delta before anything is written or allocated. */
static stetho_status plan_edit(const stetho_checkpoint *base, const stetho_checkpoint *delta, bool is_ft,
                               const stetho_selection *sel, const stetho_edit_opts *opts, edit_item *items,
                               size_t *n_edited) {
    const stetho_edit_opts o = *opts;
    stetho_status st = STETHO_OK;
    size_t n = base->n_tensors;
    *n_edited = 0;
    for (size_t i = 0; i < n && !st; i++) {
        const stetho_tensor *t = base->tensors[i];
        items[i].base = t;
        if (o.alpha == 0 || !stetho_dtype_is_float(t->dtype) || !stetho_selection_has(sel, stetho_arch_classify(t->name)))
            continue;
        const stetho_tensor *u = stetho_checkpoint_find(delta, t->name);
        if (!u) {
            if (!o.allow_missing)
                st = st_err(STETHO_ERR_MISMATCH, "tensor '%s' is selected but absent from %s (use --allow-missing to leave it unchanged)",
                            t->name, delta->path);
            continue;
        }
        if ((st = check_pair(t, base->path, u, delta->path, is_ft))) break;
        if (!stetho_dtype_is_float(u->dtype)) {
            st = st_err(STETHO_ERR_UNSUPPORTED, "tensor '%s' in %s is %s, not a float type", u->name, delta->path,
                        stetho_dtype_name(u->dtype));
            break;
        }
        items[i].delta = u;
        (*n_edited)++;
    }
    for (size_t i = 0; i < delta->n_tensors && !st && !o.allow_missing; i++)
        if (!stetho_checkpoint_find(base, delta->tensors[i]->name))
            st = st_err(STETHO_ERR_MISMATCH, "tensor '%s' of %s does not exist in %s: is it for another model?",
                        delta->tensors[i]->name, delta->path, base->path);
    return st;
}

static stetho_status edit_into(const stetho_checkpoint *base, const stetho_checkpoint *delta, bool is_ft,
                               const stetho_selection *sel, const stetho_edit_opts *opts, const char *out_dir);

stetho_status stetho_taskvec_edit(const stetho_checkpoint *base, const stetho_checkpoint *delta, bool is_ft,
                                  const stetho_selection *sel, const stetho_edit_opts *opts, const char *out_dir) {
    /* "out/" and "out" are the same directory; the temp name must be its sibling */
    char *dir = st_strdup(out_dir);
    if (!dir) return STETHO_ERR_NOMEM;
    size_t len = strlen(dir);
    while (len > 1 && dir[len - 1] == '/') dir[--len] = '\0';
    stetho_status st = len ? edit_into(base, delta, is_ft, sel, opts, dir)
                           : st_err(STETHO_ERR_INVALID, "empty output directory name");
    st_free(dir);
    return st;
}

static stetho_status edit_into(const stetho_checkpoint *base, const stetho_checkpoint *delta, bool is_ft,
                               const stetho_selection *sel, const stetho_edit_opts *opts, const char *out_dir) {
    stetho_edit_opts o = opts ? *opts : (stetho_edit_opts){1.0, 0, false, false, NULL};
    if (!o.shard_size) o.shard_size = 5000000000ull;
    if (!isfinite(o.alpha)) return st_err(STETHO_ERR_INVALID, "alpha must be a finite number");
    struct stat sb;
    bool exists = lstat(out_dir, &sb) == 0;
    if (same_file(out_dir, base->dir ? base->dir : base->path) || same_file(out_dir, delta->dir ? delta->dir : delta->path))
        return st_err(STETHO_ERR_INVALID, "%s: the output would overwrite an input", out_dir);
    if (exists && !o.force)
        return st_err(STETHO_ERR_EXISTS, "%s: already exists (use --force to replace it)", out_dir);
    if (exists && !S_ISDIR(sb.st_mode))
        return st_err(STETHO_ERR_EXISTS, "%s: exists and is not a directory", out_dir);

    stetho_status st = STETHO_OK;
    size_t n = base->n_tensors, n_edited = 0, n_shards = 0;
    edit_item *items = st_calloc(n ? n : 1, sizeof *items);
    char **shard_names = NULL, *tmp_dir = NULL, *old_dir = NULL;
    bool made_tmp = false;
    scratch s = {0};
    if (!items) return STETHO_ERR_NOMEM;

    if ((st = plan_edit(base, delta, is_ft, sel, &o, items, &n_edited))) goto done;

    /* shards: greedy in base order, never splitting a tensor */
    uint64_t cur = 0;
    for (size_t i = 0; i < n; i++) {
        if (n_shards == 0 || (cur > 0 && cur + items[i].base->nbytes > o.shard_size)) {
            n_shards++;
            cur = 0;
        }
        items[i].shard = (int)n_shards - 1;
        cur += items[i].base->nbytes;
    }
    if (n_shards == 0) n_shards = 1;
    shard_names = st_calloc(n_shards, sizeof *shard_names);
    if (!shard_names) { st = STETHO_ERR_NOMEM; goto done; }
    for (size_t k = 0; k < n_shards; k++) {
        char name[64];
        if (n_shards == 1) snprintf(name, sizeof name, "model.safetensors");
        else snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", k + 1, n_shards);
        if (!(shard_names[k] = st_strdup(name))) { st = STETHO_ERR_NOMEM; goto done; }
    }

    size_t tl = strlen(out_dir) + 32;
    tmp_dir = st_malloc(tl);
    old_dir = st_malloc(tl);
    if (!tmp_dir || !old_dir) { st = STETHO_ERR_NOMEM; goto done; }
    snprintf(tmp_dir, tl, "%s.tmp.%ld", out_dir, (long)getpid());
    snprintf(old_dir, tl, "%s.old.%ld", out_dir, (long)getpid());
    if (mkdir(tmp_dir, 0755) != 0) {
        st = st_err(STETHO_ERR_IO, "%s: cannot create: %s", tmp_dir, strerror(errno));
        goto done;
    }
    made_tmp = true;
    if (base->dir && (st = copy_aux_files(base->dir, tmp_dir))) goto done;
    if ((st = scratch_init(&s))) goto done;

    json_t *rec = edit_record(base, delta, is_ft, sel, &o, n_edited);
    char *rec_text = json_dumps(rec, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(rec);
    if (!rec_text) {
        st = st_err(STETHO_ERR_INVALID, "cannot record the edit in metadata (paths not valid UTF-8?)");
        goto done;
    }
    for (size_t k = 0, i = 0; k < n_shards && !st; k++) {
        char *path = st_path_join(tmp_dir, shard_names[k]);
        stetho_st_writer w;
        if (!path || (st = stetho_st_writer_init(&w, path))) {
            st_free(path);
            st = st ? st : STETHO_ERR_NOMEM;
            break;
        }
        st_free(path);
        /* keep the base's own metadata (e.g. "format": "pt"), then record the edit */
        const stetho_st_file *f0 = &base->shards[0];
        for (size_t m = 0; m < f0->n_meta && !st; m++) st = stetho_st_writer_set_meta(&w, f0->meta[m].key, f0->meta[m].value);
        if (!st && !stetho_st_meta(f0, "format")) st = stetho_st_writer_set_meta(&w, "format", "pt");
        if (!st) st = stetho_st_writer_set_meta(&w, "stetho_edit", rec_text);
        size_t first = i;
        for (; i < n && items[i].shard == (int)k && !st; i++)
            st = stetho_st_writer_declare(&w, items[i].base->name, items[i].base->dtype, items[i].base->ndim,
                                          items[i].base->shape);
        for (size_t j = first; j < i && !st; j++) {
            const stetho_tensor *t = items[j].base, *u = items[j].delta;
            const stetho_st_file *fb = stetho_checkpoint_shard(base, t);
            if (!u) {
                st = t->nbytes ? stetho_st_writer_write(&w, t->data, (size_t)t->nbytes) : STETHO_OK;
            } else {
                const stetho_st_file *fd = stetho_checkpoint_shard(delta, u);
                st = stream_tensor(&w, is_ft ? OP_EDIT_FT : OP_EDIT_TV, t, u, t->dtype, (float)o.alpha, &s, NULL);
                stetho_st_release(fd, u);
            }
            stetho_st_release(fb, t);
        }
        if (!st) st = stetho_st_writer_finish(&w);
        else stetho_st_writer_abort(&w);
    }
    free(rec_text);
    if (!st && n_shards > 1) st = write_index(tmp_dir, items, n, shard_names);
    if (st) goto done;

    /* swap into place: the old directory (with --force) only goes once the new one is complete */
    if (exists && rename(out_dir, old_dir) != 0) {
        st = st_err(STETHO_ERR_IO, "%s: cannot move the existing directory aside: %s", out_dir, strerror(errno));
        goto done;
    }
    if (rename(tmp_dir, out_dir) != 0) {
        st = st_err(STETHO_ERR_IO, "%s: cannot rename into place: %s", out_dir, strerror(errno));
        if (exists) rename(old_dir, out_dir);
        goto done;
    }
    made_tmp = false;
    if (exists) st_remove_tree(old_dir);
done:
    if (made_tmp) st_remove_tree(tmp_dir);
    scratch_free(&s);
    if (shard_names)
        for (size_t k = 0; k < n_shards; k++) st_free(shard_names[k]);
    st_free(shard_names);
    st_free(tmp_dir);
    st_free(old_dir);
    st_free(items);
    return st;
}

/* The same plan and arithmetic as stetho_taskvec_edit, into private buffers
 * that replace the edited tensors' data pointers: the bytes equal what the
 * written checkpoint would hold. Every buffer is filled before any pointer
 * moves, so a failure leaves base as it was. */
stetho_status stetho_taskvec_edit_in_memory(stetho_checkpoint *base, const stetho_checkpoint *delta, bool is_ft,
                                            const stetho_selection *sel, const stetho_edit_opts *opts) {
    stetho_edit_opts o = opts ? *opts : (stetho_edit_opts){1.0, 0, false, false, NULL};
    if (!isfinite(o.alpha)) return st_err(STETHO_ERR_INVALID, "alpha must be a finite number");
    size_t n = base->n_tensors, n_edited = 0;
    edit_item *items = st_calloc(n ? n : 1, sizeof *items);
    uint8_t **bufs = st_calloc(n ? n : 1, sizeof *bufs);
    scratch s = {0};
    stetho_status st = items && bufs ? plan_edit(base, delta, is_ft, sel, &o, items, &n_edited) : STETHO_ERR_NOMEM;
    void **owned = st ? NULL : st_realloc(base->owned, (base->n_owned + n_edited + 1) * sizeof *owned);
    if (!st && !owned) st = STETHO_ERR_NOMEM;
    if (owned) base->owned = owned;
    if (!st && n_edited) st = scratch_init(&s);
    for (size_t i = 0; i < n && !st; i++) {
        const stetho_tensor *t = items[i].base, *u = items[i].delta;
        if (!u) continue;
        if (t->nbytes > SIZE_MAX || !(bufs[i] = st_malloc(t->nbytes ? (size_t)t->nbytes : 1))) {
            st = st_err(STETHO_ERR_NOMEM, "out of memory for the edited tensor '%s' (%llu bytes)", t->name,
                        (unsigned long long)t->nbytes);
            break;
        }
        size_t ex = stetho_dtype_bits(t->dtype) / 8, ey = stetho_dtype_bits(u->dtype) / 8;
        for (uint64_t done = 0; done < t->n_elements;) {
            size_t m = t->n_elements - done < BLOCK_ELEMS ? (size_t)(t->n_elements - done) : BLOCK_ELEMS;
            run_block(is_ft ? OP_EDIT_FT : OP_EDIT_TV, (const uint8_t *)t->data + done * ex, t->dtype,
                      (const uint8_t *)u->data + done * ey, u->dtype, t->dtype, m, (float)o.alpha, &s,
                      bufs[i] + done * ex, NULL);
            done += m;
        }
        stetho_st_release(stetho_checkpoint_shard(delta, u), u);
    }
    for (size_t i = 0; i < n && !st; i++) {
        if (!bufs[i]) continue;
        /* the tensor's record lives in its shard's (writable) table */
        stetho_st_file *f = &base->shards[items[i].base->shard];
        stetho_tensor *t = &f->tensors[items[i].base - f->tensors];
        stetho_st_release(f, t);
        t->data = bufs[i];
        base->owned[base->n_owned++] = bufs[i];
        bufs[i] = NULL;
    }
    for (size_t i = 0; bufs && i < n; i++) st_free(bufs[i]);
    scratch_free(&s);
    st_free(bufs);
    st_free(items);
    return st;
}
