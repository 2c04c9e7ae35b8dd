/* Diagnosis outputs: SCORES.json (layer scores, top features and every
 * feature's statistics, in the shape `stetho project --scores` and
 * `stetho edit --scores` read), a TSV of the layer scores, and a
 * self-contained SVG bar chart of score by layer. Written by hand rather than
 * through a JSON tree: a 34-layer model with 16k-feature SAEs has over half a
 * million features, and per-feature arrays as text are far lighter than as
 * tree nodes. */
#include "stetho/diagnose.h"
#include "internal.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *set_key[2] = {"domain", "general"};

/* A JSON string literal (escaped by jansson); false when s is not UTF-8. */
static bool put_str(st_buf *b, const char *s) {
    json_t *j = json_string(s ? s : "");
    char *t = j ? json_dumps(j, JSON_ENCODE_ANY) : NULL;
    json_decref(j);
    if (!t) return false;
    st_buf_append(b, t, strlen(t));
    free(t);
    return true;
}

/* %.*g or null: JSON has no NaN or infinity */
static void put_num(st_buf *b, double v, int digits) {
    if (!isfinite(v)) st_buf_append(b, "null", 4);
    else if (v == 0) st_buf_append(b, "0", 1);
    else st_buf_printf(b, "%.*g", digits, v);
}

/* rank of each scored layer by score, 1 = best (ties: lower layer first); 0 = unranked */
static void layer_ranks(const stetho_diagnose_result *r, int *rank) {
    for (int l = 0; l < r->n_layers; l++) {
        const stetho_diag_layer *L = &r->layers[l];
        rank[l] = 0;
        if (!L->scored || !isfinite(L->score)) continue;
        int k = 1;
        for (int m = 0; m < r->n_layers; m++) {
            const stetho_diag_layer *M = &r->layers[m];
            if (m != l && M->scored && isfinite(M->score) && (M->score > L->score || (M->score == L->score && m < l))) k++;
        }
        rank[l] = k;
    }
}

static void put_feature_array(st_buf *b, const char *key, const stetho_diag_layer *L, int which, bool last) {
    st_buf_printf(b, "        \"%s\": [", key);
    for (int j = 0; j < L->d_sae; j++) {
        const stetho_diag_feature *f = &L->features[j];
        double v = which == 0 ? f->freq[0] : which == 1 ? f->freq[1] : which == 2 ? f->mean[0] : which == 3 ? f->mean[1]
                 : which == 4 ? f->log_ratio : which == 5 ? f->contrast : f->effect;
        if (j) st_buf_append(b, ",", 1);
        put_num(b, v, 6);
    }
    st_buf_printf(b, "]%s\n", last ? "" : ",");
}

stetho_status stetho_diagnose_json(const stetho_diagnose_result *r, char **out) {
    *out = NULL;
    int *rank = st_malloc((size_t)(r->n_layers > 0 ? r->n_layers : 1) * sizeof *rank);
    if (!rank) return STETHO_ERR_NOMEM;
    layer_ranks(r, rank);
    const stetho_diagnose_opts *o = &r->opts;
    st_buf b;
    st_buf_init(&b);
    bool ok = true;
    st_buf_printf(&b, "{\n  \"format\": \"stetho-scores/1\",\n  \"tool\": \"stetho %s\",\n  \"model\": ", STETHO_VERSION);
    ok &= put_str(&b, r->model_path);
    st_buf_printf(&b, ",\n  \"model_type\": ");
    ok &= put_str(&b, r->model_type);
    st_buf_printf(&b, ",\n  \"n_layers\": %d,\n  \"d_model\": %d,\n  \"sae_dir\": ", r->n_layers, r->d_model);
    ok &= put_str(&b, r->sae_dir);
    for (int s = 0; s < 2; s++) {
        st_buf_printf(&b, ",\n  \"%s\": {\"path\": ", set_key[s]);
        ok &= put_str(&b, s ? r->general_path : r->domain_path);
        st_buf_printf(&b, ", \"prompts\": %zu, \"tokens\": %llu, \"empty_prompts\": %zu, \"truncated_prompts\": %zu}",
                      r->n_prompts[s], (unsigned long long)r->n_tokens[s], r->n_empty[s], r->n_truncated[s]);
    }
    st_buf_printf(&b, ",\n  \"field\": ");
    ok &= put_str(&b, r->field);
    st_buf_printf(&b, ",\n  \"bos_excluded\": %s,\n  \"metric\": \"%s\",\n  \"metric_description\": ",
                  r->bos_excluded ? "true" : "false", stetho_metric_name(o->metric));
    ok &= put_str(&b, stetho_metric_description(o->metric));
    st_buf_printf(&b, ",\n  \"metrics\": {");
    for (int m = 0; m < STETHO_METRIC_COUNT; m++) {
        st_buf_printf(&b, "%s\n    \"%s\": ", m ? "," : "", stetho_metric_name((stetho_metric)m));
        ok &= put_str(&b, stetho_metric_description((stetho_metric)m));
    }
    st_buf_printf(&b, "\n  },\n  \"settings\": {\"ratio\": ");
    put_num(&b, o->ratio, 9);
    st_buf_printf(&b, ", \"log_ratio_smoothing\": ");
    put_num(&b, o->smoothing, 9);
    st_buf_printf(&b, ", \"k\": %d, \"probe_folds\": %d, \"probe_l2\": ", o->k, o->probe_folds);
    put_num(&b, o->probe_l2, 9);
    st_buf_printf(&b, ", \"top_features\": %d, \"max_tokens\": %d, \"limit\": %zu},\n  \"unscored_layers\": [",
                  o->top_features, o->max_tokens, o->limit);
    bool first = true;
    for (int l = 0; l < r->n_layers; l++)
        if (!r->layers[l].scored) {
            st_buf_printf(&b, "%s%d", first ? "" : ", ", l);
            first = false;
        }
    st_buf_printf(&b, "],\n  \"ranking\": [");
    for (int k = 1, n = 0; k <= r->n_layers; k++)
        for (int l = 0; l < r->n_layers; l++)
            if (rank[l] == k) st_buf_printf(&b, "%s%d", n++ ? ", " : "", l);
    st_buf_printf(&b, "],\n  \"layers\": [\n");
    for (int l = 0; l < r->n_layers; l++) {
        const stetho_diag_layer *L = &r->layers[l];
        st_buf_printf(&b, "    {\"layer\": %d, \"scored\": %s", l, L->scored ? "true" : "false");
        if (!L->scored) {
            st_buf_printf(&b, ", \"score\": null, \"top_features\": []}%s\n", l + 1 < r->n_layers ? "," : "");
            continue;
        }
        st_buf_printf(&b, ", \"sae\": ");
        ok &= put_str(&b, L->sae_path);
        st_buf_printf(&b, ", \"hook\": ");
        ok &= put_str(&b, L->hook);
        st_buf_printf(&b, ", \"d_sae\": %d,\n      \"score\": ", L->d_sae);
        put_num(&b, L->score, 9);
        st_buf_printf(&b, ", \"rank\": ");
        if (rank[l]) st_buf_printf(&b, "%d", rank[l]);
        else st_buf_append(&b, "null", 4);
        st_buf_printf(&b, ", \"scores\": {");
        for (int m = 0; m < STETHO_METRIC_COUNT; m++) {
            st_buf_printf(&b, "%s\"%s\": ", m ? ", " : "", stetho_metric_name((stetho_metric)m));
            put_num(&b, L->scores[m], 9);
        }
        st_buf_printf(&b, "},\n      \"tokens\": {\"domain\": %llu, \"general\": %llu}, \"prompts\": {\"domain\": %zu, "
                          "\"general\": %zu}, \"live_features\": %d, \"specific_features\": %d,\n      \"top_features\": [",
                      (unsigned long long)L->n_tokens[0], (unsigned long long)L->n_tokens[1], L->n_prompts[0],
                      L->n_prompts[1], L->n_live, L->n_specific);
        for (int i = 0; i < L->n_top; i++) {
            const stetho_diag_feature *f = &L->features[L->top[i]];
            st_buf_printf(&b, "%s\n        {\"index\": %d, \"contrast\": ", i ? "," : "", L->top[i]);
            put_num(&b, f->contrast, 7);
            st_buf_printf(&b, ", \"log_ratio\": ");
            put_num(&b, f->log_ratio, 7);
            st_buf_printf(&b, ", \"freq_domain\": ");
            put_num(&b, f->freq[0], 7);
            st_buf_printf(&b, ", \"freq_general\": ");
            put_num(&b, f->freq[1], 7);
            st_buf_printf(&b, ", \"mean_domain\": ");
            put_num(&b, f->mean[0], 7);
            st_buf_printf(&b, ", \"mean_general\": ");
            put_num(&b, f->mean[1], 7);
            st_buf_printf(&b, ", \"effect\": ");
            put_num(&b, f->effect, 7);
            st_buf_append(&b, "}", 1);
        }
        st_buf_printf(&b, "\n      ],\n      \"features\": {\n");
        static const char *keys[7] = {"freq_domain", "freq_general", "mean_domain", "mean_general",
                                      "log_ratio",   "contrast",     "effect"};
        for (int k = 0; k < 7; k++) put_feature_array(&b, keys[k], L, k, k == 6);
        st_buf_printf(&b, "      }}%s\n", l + 1 < r->n_layers ? "," : "");
    }
    st_buf_printf(&b, "  ]\n}\n");
    st_free(rank);
    if (b.failed || !ok) {
        bool oom = b.failed;
        st_buf_free(&b);
        return oom ? st_err(STETHO_ERR_NOMEM, "out of memory writing the scores")
                        : st_err(STETHO_ERR_INVALID, "cannot write the scores: a path is not valid UTF-8");
    }
    *out = b.data;
    return STETHO_OK;
}

static void tsv_num(st_buf *b, double v) {
    if (!isfinite(v)) st_buf_printf(b, "\tNA");
    else st_buf_printf(b, "\t%.6g", v);
}

stetho_status stetho_diagnose_tsv(const stetho_diagnose_result *r, char **out) {
    *out = NULL;
    int *rank = st_malloc((size_t)(r->n_layers > 0 ? r->n_layers : 1) * sizeof *rank);
    if (!rank) return STETHO_ERR_NOMEM;
    layer_ranks(r, rank);
    st_buf b;
    st_buf_init(&b);
    st_buf_printf(&b, "layer\tscored\trank\tscore");
    for (int m = 0; m < STETHO_METRIC_COUNT; m++) st_buf_printf(&b, "\t%s", stetho_metric_name((stetho_metric)m));
    st_buf_printf(&b, "\td_sae\tlive_features\tspecific_features\ttokens_domain\ttokens_general\ttop_features\n");
    for (int l = 0; l < r->n_layers; l++) {
        const stetho_diag_layer *L = &r->layers[l];
        st_buf_printf(&b, "%d\t%s", l, L->scored ? "yes" : "no");
        if (rank[l]) st_buf_printf(&b, "\t%d", rank[l]);
        else st_buf_printf(&b, "\tNA");
        tsv_num(&b, L->scored ? L->score : NAN);
        for (int m = 0; m < STETHO_METRIC_COUNT; m++) tsv_num(&b, L->scored ? L->scores[m] : NAN);
        if (!L->scored) {
            st_buf_printf(&b, "\tNA\tNA\tNA\tNA\tNA\t\n");
            continue;
        }
        st_buf_printf(&b, "\t%d\t%d\t%d\t%llu\t%llu\t", L->d_sae, L->n_live, L->n_specific, (unsigned long long)L->n_tokens[0],
                      (unsigned long long)L->n_tokens[1]);
        for (int i = 0; i < L->n_top && i < 8; i++) st_buf_printf(&b, "%s%d", i ? "," : "", L->top[i]);
        st_buf_append(&b, "\n", 1);
    }
    st_free(rank);
    if (b.failed) {
        st_buf_free(&b);
        return st_err(STETHO_ERR_NOMEM, "out of memory writing the TSV");
    }
    *out = b.data;
    return STETHO_OK;
}

/* XML-escaped text (paths may hold & < >). */
static void svg_text(st_buf *b, const char *s) {
    for (; s && *s; s++) {
        switch (*s) {
        case '&': st_buf_append(b, "&amp;", 5); break;
        case '<': st_buf_append(b, "&lt;", 4); break;
        case '>': st_buf_append(b, "&gt;", 4); break;
        case '"': st_buf_append(b, "&quot;", 6); break;
        default: st_buf_append(b, s, 1);
        }
    }
}

/* A step of 1, 2 or 5 times a power of ten giving about n intervals over span. */
static double nice_step(double span, int n) {
    double raw = span / n, p = pow(10, floor(log10(raw))), f = raw / p;
    return (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * p;
}

static const char *base_name(const char *p) {
    const char *s = p ? strrchr(p, '/') : NULL;
    if (s && s[1] == '\0') { /* "dir/" */
        while (s > p && s[-1] != '/') s--;
        return s;
    }
    return s ? s + 1 : (p ? p : "");
}

stetho_status stetho_diagnose_svg(const stetho_diagnose_result *r, char **out) {
    *out = NULL;
    int L = r->n_layers > 0 ? r->n_layers : 1;
    int *rank = st_malloc((size_t)L * sizeof *rank);
    if (!rank) return STETHO_ERR_NOMEM;
    layer_ranks(r, rank);
    double lo = 0, hi = 0;
    for (int l = 0; l < r->n_layers; l++) {
        double v = r->layers[l].score;
        if (!r->layers[l].scored || !isfinite(v)) continue;
        if (v < lo) lo = v;
        if (v > hi) hi = v;
    }
    if (hi - lo <= 0) hi = lo + 1;
    double step = nice_step(hi - lo, 5);
    lo = floor(lo / step + 1e-9) * step;
    hi = ceil(hi / step - 1e-9) * step;
    if (hi - lo < step) hi = lo + step;
    const int left = 72, right = 24, top = 64, bottom = 64, plot_h = 260;
    int col = L > 48 ? 18 : 34, plot_w = col * L, W = left + plot_w + right, H = top + plot_h + bottom;
    if (W < 560) {
        col = (560 - left - right) / L;
        plot_w = col * L;
        W = left + plot_w + right;
    }
#define YPIX(v) (top + plot_h * (hi - (v)) / (hi - lo))
    st_buf b;
    st_buf_init(&b);
    const char *metric = stetho_metric_name(r->opts.metric);
    st_buf_printf(&b,
                  "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
                  "font-family=\"DejaVu Sans, Arial, sans-serif\" font-size=\"12\">\n"
                  "<rect width=\"100%%\" height=\"100%%\" fill=\"#ffffff\"/>\n",
                  W, H, W, H);
    st_buf_printf(&b, "<text x=\"%d\" y=\"22\" font-size=\"15\" font-weight=\"bold\">Layer specificity (%s)</text>\n", left,
                  metric);
    st_buf_printf(&b, "<text x=\"%d\" y=\"40\" font-size=\"11\" fill=\"#555555\">", left);
    svg_text(&b, base_name(r->model_path));
    st_buf_printf(&b, ": %zu domain vs %zu general prompts; %d of %d layers scored; darker = top 3</text>\n",
                  r->n_prompts[0], r->n_prompts[1], r->n_scored, r->n_layers);
    /* grid and y axis */
    for (double v = lo; v <= hi + step * 1e-6; v += step) {
        double y = YPIX(v);
        double shown = fabs(v) < step * 1e-6 ? 0 : v;
        st_buf_printf(&b, "<line x1=\"%d\" x2=\"%d\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#e3e3e3\"/>\n", left, left + plot_w, y, y);
        st_buf_printf(&b, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\" fill=\"#333333\">%.4g</text>\n", left - 6, y + 4,
                      shown);
    }
    double y0 = YPIX(0.0);
    st_buf_printf(&b, "<text transform=\"translate(16,%d) rotate(-90)\" text-anchor=\"middle\" fill=\"#333333\">%s</text>\n",
                  top + plot_h / 2, metric);
    for (int l = 0; l < r->n_layers; l++) {
        const stetho_diag_layer *Ly = &r->layers[l];
        double x = left + (double)col * l, cx = x + col / 2.0;
        if (!Ly->scored || !isfinite(Ly->score)) {
            st_buf_printf(&b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"9\" fill=\"#999999\">%s</text>\n",
                          cx, y0 - 4, Ly->scored ? "NaN" : "n/a");
        } else {
            double y = YPIX(Ly->score), yt = y < y0 ? y : y0, h = fabs(y0 - y);
            const char *fill = rank[l] >= 1 && rank[l] <= 3 ? "#1f5fa8" : "#8fb3dc";
            st_buf_printf(&b,
                          "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\"><title>layer %d: %s = %.6g "
                          "(rank %d)</title></rect>\n",
                          x + col * 0.15, yt, col * 0.7, h < 0.5 ? 0.5 : h, fill, l, metric, Ly->score, rank[l]);
            if (col >= 30)
                st_buf_printf(&b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"9\" fill=\"#333333\">%.3g</text>\n",
                              cx, Ly->score >= 0 ? yt - 3 : yt + h + 10, Ly->score);
        }
        if (col >= 24 || l % 2 == 0)
            st_buf_printf(&b, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\" fill=\"#333333\">%d</text>\n", cx,
                          top + plot_h + 16, l);
    }
    st_buf_printf(&b, "<line x1=\"%d\" x2=\"%d\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#333333\"/>\n", left, left + plot_w, y0, y0);
    st_buf_printf(&b, "<line x1=\"%d\" x2=\"%d\" y1=\"%d\" y2=\"%d\" stroke=\"#333333\"/>\n", left, left, top, top + plot_h);
    st_buf_printf(&b, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\" fill=\"#333333\">layer</text>\n</svg>\n",
                  left + plot_w / 2, top + plot_h + 40);
#undef YPIX
    st_free(rank);
    if (b.failed) {
        st_buf_free(&b);
        return st_err(STETHO_ERR_NOMEM, "out of memory drawing the chart");
    }
    *out = b.data;
    return STETHO_OK;
}

stetho_status stetho_diagnose_paths(const char *json_path, char **tsv, char **svg) {
    *tsv = *svg = NULL;
    size_t n = strlen(json_path), stem = st_ends_with(json_path, ".json") ? n - 5 : n;
    *tsv = st_malloc(stem + 5);
    *svg = st_malloc(stem + 5);
    if (!*tsv || !*svg) {
        st_free(*tsv), st_free(*svg);
        *tsv = *svg = NULL;
        return STETHO_ERR_NOMEM;
    }
    snprintf(*tsv, stem + 5, "%.*s.tsv", (int)stem, json_path);
    snprintf(*svg, stem + 5, "%.*s.svg", (int)stem, json_path);
    return STETHO_OK;
}

/* Write text to "<path>.tmp.<pid>" (renamed by the caller). */
static stetho_status write_tmp(const char *tmp, const char *text) {
    FILE *f = fopen(tmp, "wx");
    if (!f) return st_err(STETHO_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    size_t len = strlen(text);
    bool ok = !st_fault_write_fires() && fwrite(text, 1, len, f) == len;
    int e = errno;
    ok = (fclose(f) == 0) && ok;
    if (!ok) {
        remove(tmp);
        return st_err(STETHO_ERR_IO, "%s: write failed: %s", tmp, strerror(e ? e : ENOSPC));
    }
    return STETHO_OK;
}

stetho_status stetho_diagnose_write(const stetho_diagnose_result *r, const char *json_path, bool overwrite) {
    char *paths[3] = {st_strdup(json_path), NULL, NULL}, *tmp[3] = {NULL, NULL, NULL}, *text[3] = {NULL, NULL, NULL};
    stetho_status st = paths[0] ? stetho_diagnose_paths(json_path, &paths[1], &paths[2]) : STETHO_ERR_NOMEM;
    for (int i = 0; i < 3 && !st && !overwrite; i++) {
        struct stat sb;
        if (lstat(paths[i], &sb) == 0)
            st = st_err(STETHO_ERR_EXISTS, "%s: already exists (use --force to replace it)", paths[i]);
    }
    if (!st) st = stetho_diagnose_json(r, &text[0]);
    if (!st) st = stetho_diagnose_tsv(r, &text[1]);
    if (!st) st = stetho_diagnose_svg(r, &text[2]);
    for (int i = 0; i < 3 && !st; i++) {
        size_t n = strlen(paths[i]) + 32;
        if (!(tmp[i] = st_malloc(n))) {
            st = STETHO_ERR_NOMEM;
            break;
        }
        snprintf(tmp[i], n, "%s.tmp.%ld", paths[i], (long)getpid());
        if ((st = write_tmp(tmp[i], text[i]))) {
            st_free(tmp[i]);
            tmp[i] = NULL;
        }
    }
    /* all three complete: only now replace anything */
    for (int i = 0; i < 3 && !st; i++)
        if (rename(tmp[i], paths[i]) != 0) st = st_err(STETHO_ERR_IO, "%s: cannot rename into place: %s", paths[i], strerror(errno));
        else {
            st_free(tmp[i]);
            tmp[i] = NULL;
        }
    for (int i = 0; i < 3; i++) {
        if (tmp[i]) remove(tmp[i]);
        st_free(tmp[i]);
        st_free(paths[i]);
        free(text[i]);
    }
    return st;
}
