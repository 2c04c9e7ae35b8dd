/* Inline SVG charts for reports (see include/stetho/svg.h): "nice" axis ticks,
 * bar charts with error bars, highlight bands and level marks, and x/y charts.
 * Output is plain SVG 1.1 markup with presentation attributes only, so it renders
 * the same inline in HTML, in a standalone .svg file and in a screenshot. */
#include "stetho/svg.h"
#include "svg_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FONT 12.0       /* tick and legend text, px */
#define SMALL 10.5      /* value labels */
#define INK "#222"
#define MUTED "#666"
#define GRID "#e3e3e3"
#define BAND "#fdf0c2"

static const char *palette[] = {"#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
                                "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"};

const char *stetho_svg_palette(size_t i) { return palette[i % ST_ARRAY_LEN(palette)]; }

/* ---- text -------------------------------------------------------------------- */

bool st_xml_escape_n(st_buf *b, const char *s, size_t n) {
    size_t start = 0, i = 0;
    for (; i < n && s[i]; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *rep = NULL;
        switch (c) {
        case '&': rep = "&amp;"; break;
        case '<': rep = "&lt;"; break;
        case '>': rep = "&gt;"; break;
        case '"': rep = "&quot;"; break;
        case '\'': rep = "&#39;"; break;
        default:
            if ((c < 0x20 && c != '\t' && c != '\n') || c == 0x7f) rep = "\xef\xbf\xbd";
        }
        if (!rep) continue;
        if (!st_buf_append(b, s + start, i - start) || !st_buf_append(b, rep, strlen(rep))) return false;
        start = i + 1;
    }
    return st_buf_append(b, s + start, i - start);
}

bool st_xml_escape(st_buf *b, const char *s) { return st_xml_escape_n(b, s ? s : "", (size_t)-1); }

double st_text_width(const char *s, double px) {
    size_t n = 0;
    for (; s && *s; s++)
        if (((unsigned char)*s & 0xc0) != 0x80) n++;
    return (double)n * 0.56 * px;
}

/* ---- axes -------------------------------------------------------------------- */

typedef struct {
    double lo, hi, step;
    int decimals; /* of the tick labels, in the displayed unit */
    bool percent;
} axis;

/* Ticks at 1, 2 or 5 times a power of ten, about `target` of them, covering
 * [lo, hi]; a degenerate range is widened so the axis is never empty. */
static axis make_axis(double lo, double hi, int target, bool percent) {
    axis a = {.percent = percent};
    if (!isfinite(lo) || !isfinite(hi)) lo = 0, hi = 1;
    if (hi < lo) {
        double t = lo;
        lo = hi, hi = t;
    }
    if (hi - lo < 1e-12) {
        double w = fabs(hi) > 0 ? fabs(hi) * 0.5 : (percent ? 0.1 : 1.0);
        if (lo >= 0 && lo - w < 0) lo = 0, hi = hi + w;
        else lo -= w, hi += w;
    }
    double raw = (hi - lo) / target, mag = pow(10, floor(log10(raw))), f = raw / mag;
    a.step = (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * mag;
    a.lo = floor(lo / a.step + 1e-9) * a.step;
    a.hi = ceil(hi / a.step - 1e-9) * a.step;
    if (a.hi <= a.lo) a.hi = a.lo + a.step;
    double shown = percent ? a.step * 100 : a.step;
    a.decimals = shown >= 1 ? 0 : (int)ceil(-log10(shown) - 1e-9);
    if (a.decimals > 6) a.decimals = 6;
    return a;
}

static int axis_ticks(const axis *a) { return (int)floor((a->hi - a->lo) / a->step + 0.5); }

static void fmt_value(char *buf, size_t n, double v, int decimals, bool percent) {
    if (!isfinite(v)) snprintf(buf, n, "n/a");
    else if (percent) snprintf(buf, n, "%.*f%%", decimals, v * 100);
    else if (fabs(v) >= 1e6 || (v != 0 && fabs(v) < 1e-4)) snprintf(buf, n, "%.3g", v);
    else snprintf(buf, n, "%.*f", decimals, v);
}

static void tick_label(const axis *a, double v, char *buf, size_t n) {
    if (fabs(v) < a->step * 1e-6) v = 0;
    fmt_value(buf, n, v, a->decimals, a->percent);
}

/* Decimals for value labels: two significant digits beyond the axis step. */
static int label_decimals(const axis *a) { return a->decimals + (a->percent ? 1 : 2); }

/* ---- shared drawing -------------------------------------------------------------- */

static void text(st_buf *b, double x, double y, const char *anchor, double size, const char *fill, const char *s) {
    st_buf_printf(b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"%.1f\" fill=\"%s\"%s%s%s>", x, y, size, fill,
                  anchor ? " text-anchor=\"" : "", anchor ? anchor : "", anchor ? "\"" : "");
    st_xml_escape(b, s);
    st_buf_append(b, "</text>", 7);
}

static void svg_open(st_buf *b, double w, double h, const char *title) {
    st_buf_printf(b,
                  "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" viewBox=\"0 0 %.0f %.0f\" width=\"%.0f\" "
                  "height=\"%.0f\" role=\"img\" font-family=\"system-ui, -apple-system, 'Segoe UI', Roboto, "
                  "'Helvetica Neue', Arial, sans-serif\"><title>",
                  w, h, w, h);
    st_xml_escape(b, title ? title : "chart");
    st_buf_append(b, "</title>\n", 9);
}

typedef struct {
    const char *name, *color;
    int kind; /* 0 box, 1 dashed line, 2 band, 3 dot */
} legend_item;

/* Legend items laid left to right, wrapping at width; returns the height used. */
static double legend(st_buf *b, const legend_item *it, size_t n, double x0, double y0, double width, bool draw) {
    double x = x0, y = y0, row = FONT + 8;
    size_t drawn = 0;
    for (size_t i = 0; i < n; i++) {
        if (!it[i].name || !*it[i].name) continue;
        double w = 18 + st_text_width(it[i].name, FONT) + 18;
        if (x > x0 && x + w > x0 + width) x = x0, y += row;
        if (draw) {
            switch (it[i].kind) {
            case 1:
                st_buf_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"2\" "
                                 "stroke-dasharray=\"4 2\"/>",
                              x, y + 6, x + 13, y + 6, it[i].color);
                break;
            case 2:
                st_buf_printf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"13\" height=\"12\" fill=\"%s\" stroke=\"#e0c97a\"/>",
                              x, y, it[i].color);
                break;
            case 3: st_buf_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4.5\" fill=\"%s\"/>", x + 6, y + 6, it[i].color); break;
            default: st_buf_printf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"13\" height=\"12\" fill=\"%s\"/>", x, y, it[i].color);
            }
            text(b, x + 18, y + 10.5, NULL, FONT, INK, it[i].name);
            st_buf_append(b, "\n", 1);
        }
        x += w;
        drawn++;
    }
    return drawn ? y - y0 + row + 4 : 0;
}

static bool finite_or_nan(const double *v, size_t i) { return v && isfinite(v[i]); }

/* ---- bar charts ------------------------------------------------------------------ */

stetho_status stetho_svg_bars(const stetho_svg_bar_chart *c, char **out) {
    *out = NULL;
    if (!c || c->n_groups == 0 || c->n_series == 0 || !c->groups || !c->series)
        return st_err(STETHO_ERR_INVALID, "bar chart: no groups or no series");
    size_t n_bars = 0; /* series drawn as bars take a slot in each group */
    for (size_t s = 0; s < c->n_series; s++) {
        if (!c->series[s].value) return st_err(STETHO_ERR_INVALID, "bar chart: series %zu has no values", s);
        if (c->series[s].style == STETHO_SVG_BAR) n_bars++;
    }
    for (size_t g = 0; g < c->n_groups; g++)
        if (!c->groups[g]) return st_err(STETHO_ERR_INVALID, "bar chart: group %zu has no label", g);

    /* value range: data, error bars and 0 */
    double lo = 0, hi = 0;
    for (size_t s = 0; s < c->n_series; s++) {
        const stetho_svg_bar_series *se = &c->series[s];
        for (size_t g = 0; g < c->n_groups; g++) {
            const double *arrs[3] = {se->value, se->lo, se->hi};
            for (int k = 0; k < 3; k++)
                if (finite_or_nan(arrs[k], g)) lo = fmin(lo, arrs[k][g]), hi = fmax(hi, arrs[k][g]);
        }
    }
    /* room above the tallest bar for its label */
    if (c->value_labels && !c->horizontal && hi > 0) hi += 0.07 * (hi - lo);
    if (isfinite(c->v_min)) lo = c->v_min;
    if (isfinite(c->v_max)) hi = c->v_max;
    double W = c->width > 0 ? c->width : 760;

    size_t n_leg = c->n_series + 1;
    legend_item *items = st_calloc(n_leg, sizeof *items);
    if (!items) return STETHO_ERR_NOMEM;
    n_leg = 0;
    if (c->highlight && c->highlight_label) items[n_leg++] = (legend_item){c->highlight_label, BAND, 2};
    bool named = false;
    for (size_t s = 0; s < c->n_series; s++) {
        const stetho_svg_bar_series *se = &c->series[s];
        items[n_leg++] = (legend_item){se->name, se->color ? se->color : stetho_svg_palette(s),
                                       se->style == STETHO_SVG_LEVEL ? 1 : 0};
        if (se->name && *se->name) named = true;
    }
    if (!named && !(c->highlight && c->highlight_label)) n_leg = 0;

    st_buf b;
    st_buf_init(&b);
    double max_label = 0;
    for (size_t g = 0; g < c->n_groups; g++) max_label = fmax(max_label, st_text_width(c->groups[g], FONT));
    double leg_h = legend(NULL, items, n_leg, 0, 0, W - 20, false);
    axis ax = make_axis(lo, hi, c->horizontal ? 6 : 5, c->percent);
    int dec = label_decimals(&ax);

    if (c->horizontal) {
        /* categories down the left; value axis along the bottom */
        double label_w = fmin(fmax(max_label, 30), W * 0.4);
        double ml = label_w + 14, mr = c->value_labels ? 62 : 20, mt = 8 + leg_h;
        double slot = 13, row = fmax(22, (double)(n_bars ? n_bars : 1) * slot + 8);
        double PW = W - ml - mr, PH = row * (double)c->n_groups;
        double H = mt + PH + 24 + (c->value_label ? 20 : 0);
        svg_open(&b, W, H, c->title);
        legend(&b, items, n_leg, 10, 6, W - 20, true);
#define HX(v) (ml + ((v) - ax.lo) / (ax.hi - ax.lo) * PW)
        for (size_t g = 0; g < c->n_groups; g++)
            if (c->highlight && c->highlight[g])
                st_buf_printf(&b, "<rect x=\"0\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\"/>\n",
                              mt + row * (double)g, W, row, BAND);
        for (int t = 0, nt = axis_ticks(&ax); t <= nt; t++) {
            double v = ax.lo + t * ax.step, x = HX(v);
            char lab[48];
            tick_label(&ax, v, lab, sizeof lab);
            st_buf_printf(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\"/>", x, mt, x, mt + PH,
                          fabs(v) < ax.step * 1e-6 ? "#999" : GRID);
            text(&b, x, mt + PH + 15, "middle", FONT, MUTED, lab);
            st_buf_append(&b, "\n", 1);
        }
        if (c->value_label) text(&b, ml + PW / 2, H - 6, "middle", FONT, INK, c->value_label);
        for (size_t g = 0; g < c->n_groups; g++) {
            double y0 = mt + row * (double)g, cy = y0 + row / 2;
            /* a label too long for the margin is cut, the full text stays in a tooltip */
            st_buf_printf(&b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"%.1f\" fill=\"%s\" text-anchor=\"end\"><title>",
                          ml - 8, cy + 4, FONT, INK);
            st_xml_escape(&b, c->groups[g]);
            st_buf_append(&b, "</title>", 8);
            size_t keep = strlen(c->groups[g]);
            if (st_text_width(c->groups[g], FONT) > label_w) {
                keep = 0;
                for (size_t cp = 0; c->groups[g][keep] && cp < (size_t)(label_w / (0.56 * FONT)) - 1; cp++) {
                    keep++;
                    while ((c->groups[g][keep] & 0xc0) == 0x80) keep++;
                }
                st_xml_escape_n(&b, c->groups[g], keep);
                st_buf_append(&b, "\xe2\x80\xa6", 3);
            } else {
                st_xml_escape(&b, c->groups[g]);
            }
            st_buf_append(&b, "</text>\n", 8);
            double by = y0 + (row - (double)n_bars * slot) / 2;
            size_t k = 0;
            for (size_t s = 0; s < c->n_series; s++) {
                const stetho_svg_bar_series *se = &c->series[s];
                const char *col = se->colors && se->colors[g] ? se->colors[g]
                                  : se->color                 ? se->color
                                                              : stetho_svg_palette(s);
                double v = se->value[g];
                char lab[48];
                fmt_value(lab, sizeof lab, v, dec, c->percent);
                if (se->style == STETHO_SVG_LEVEL) {
                    if (isfinite(v))
                        st_buf_printf(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                                          "stroke-width=\"2\" stroke-dasharray=\"4 2\"/>\n",
                                      HX(v), y0 + 3, HX(v), y0 + row - 3, col);
                    continue;
                }
                double yb = by + slot * (double)k++;
                if (!isfinite(v)) {
                    text(&b, HX(0) + 4, yb + slot - 3, NULL, SMALL, MUTED, "n/a");
                    continue;
                }
                double x0 = HX(fmin(0, v)), x1 = HX(fmax(0, v));
                st_buf_printf(&b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\"><title>", x0,
                              yb + 1, fmax(x1 - x0, 0.5), slot - 2, col);
                if (se->name) st_xml_escape(&b, se->name), st_buf_append(&b, ": ", 2);
                st_xml_escape(&b, lab);
                double end = v;
                if (finite_or_nan(se->lo, g) && finite_or_nan(se->hi, g)) {
                    char l1[48], l2[48];
                    fmt_value(l1, sizeof l1, se->lo[g], dec, c->percent);
                    fmt_value(l2, sizeof l2, se->hi[g], dec, c->percent);
                    st_buf_printf(&b, " [%s, %s]", l1, l2);
                }
                st_buf_append(&b, "</title></rect>", 15);
                if (finite_or_nan(se->lo, g) && finite_or_nan(se->hi, g)) {
                    double cyb = yb + slot / 2, a = HX(se->lo[g]), z = HX(se->hi[g]);
                    st_buf_printf(&b, "<path d=\"M%.1f %.1fH%.1fM%.1f %.1fV%.1fM%.1f %.1fV%.1f\" stroke=\"%s\" "
                                      "stroke-width=\"1.2\" fill=\"none\"/>",
                                  a, cyb, z, a, cyb - 3.5, cyb + 3.5, z, cyb - 3.5, cyb + 3.5, INK);
                    end = fmax(v, se->hi[g]);
                }
                if (c->value_labels) text(&b, HX(fmax(end, 0)) + 5, yb + slot - 3, NULL, SMALL, INK, lab);
                st_buf_append(&b, "\n", 1);
            }
        }
        st_buf_printf(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#999\"/>\n", ml, mt, ml, mt + PH);
#undef HX
    } else {
        /* vertical: categories along the bottom, labels slanted when they do not fit */
        double ml = 62, mr = 14, mt = 10 + leg_h, PH = 240;
        double PW = W - ml - mr, gw = PW / (double)c->n_groups;
        bool slant = max_label > gw - 6;
        double label_h = slant ? fmin(max_label, 160) * 0.64 + 18 : 20;
        double H = mt + PH + label_h + (c->category_label ? 22 : 4);
        svg_open(&b, W, H, c->title);
        legend(&b, items, n_leg, 10, 6, W - 20, true);
#define VY(v) (mt + PH - ((v) - ax.lo) / (ax.hi - ax.lo) * PH)
        for (size_t g = 0; g < c->n_groups; g++)
            if (c->highlight && c->highlight[g])
                st_buf_printf(&b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\"/>\n",
                              ml + gw * (double)g, mt, gw, PH, BAND);
        for (int t = 0, nt = axis_ticks(&ax); t <= nt; t++) {
            double v = ax.lo + t * ax.step, y = VY(v);
            char lab[48];
            tick_label(&ax, v, lab, sizeof lab);
            st_buf_printf(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\"/>", ml, y, ml + PW, y,
                          fabs(v) < ax.step * 1e-6 ? "#999" : GRID);
            text(&b, ml - 6, y + 4, "end", FONT, MUTED, lab);
            st_buf_append(&b, "\n", 1);
        }
        if (c->value_label) {
            st_buf_printf(&b, "<text transform=\"translate(14 %.1f) rotate(-90)\" font-size=\"%.1f\" fill=\"%s\" "
                              "text-anchor=\"middle\">",
                          mt + PH / 2, FONT, INK);
            st_xml_escape(&b, c->value_label);
            st_buf_append(&b, "</text>\n", 8);
        }
        if (c->category_label) text(&b, ml + PW / 2, H - 6, "middle", FONT, INK, c->category_label);
        double inner = fmin(gw * (n_bars > 1 ? 0.84 : 0.6), 64.0 * (double)(n_bars ? n_bars : 1));
        double bw = inner / (double)(n_bars ? n_bars : 1);
        bool labels = c->value_labels && bw >= 26;
        for (size_t g = 0; g < c->n_groups; g++) {
            double gx = ml + gw * (double)g, bx = gx + (gw - inner) / 2;
            double cx = gx + gw / 2;
            if (slant) {
                st_buf_printf(&b, "<text transform=\"translate(%.1f %.1f) rotate(-40)\" font-size=\"%.1f\" fill=\"%s\" "
                                  "text-anchor=\"end\">",
                              cx + 4, mt + PH + 14, FONT, INK);
                st_xml_escape(&b, c->groups[g]);
                st_buf_append(&b, "</text>\n", 8);
            } else {
                text(&b, cx, mt + PH + 15, "middle", FONT, INK, c->groups[g]);
            }
            size_t k = 0;
            for (size_t s = 0; s < c->n_series; s++) {
                const stetho_svg_bar_series *se = &c->series[s];
                const char *col = se->colors && se->colors[g] ? se->colors[g]
                                  : se->color                 ? se->color
                                                              : stetho_svg_palette(s);
                double v = se->value[g];
                char lab[48];
                fmt_value(lab, sizeof lab, v, dec, c->percent);
                if (se->style == STETHO_SVG_LEVEL) {
                    if (isfinite(v)) {
                        st_buf_printf(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                                          "stroke-width=\"2\" stroke-dasharray=\"4 2\"><title>",
                                      bx - 2, VY(v), bx + inner + 2, VY(v), col);
                        if (se->name) st_xml_escape(&b, se->name), st_buf_append(&b, ": ", 2);
                        st_xml_escape(&b, lab);
                        st_buf_append(&b, "</title></line>\n", 16);
                    }
                    continue;
                }
                double x = bx + bw * (double)k++;
                if (!isfinite(v)) {
                    text(&b, x + bw / 2, VY(fmax(0, ax.lo)) - 4, "middle", SMALL, MUTED, "n/a");
                    continue;
                }
                double y0 = VY(fmax(0, v)), y1 = VY(fmin(0, v)), pad = bw > 6 ? 1 : 0;
                st_buf_printf(&b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\"><title>",
                              x + pad / 2, y0, bw - pad, fmax(y1 - y0, 0.5), col);
                st_xml_escape(&b, c->groups[g]);
                if (se->name) st_buf_append(&b, ", ", 2), st_xml_escape(&b, se->name);
                st_buf_append(&b, ": ", 2);
                st_xml_escape(&b, lab);
                double top = fmax(v, 0);
                if (finite_or_nan(se->lo, g) && finite_or_nan(se->hi, g)) {
                    char l1[48], l2[48];
                    fmt_value(l1, sizeof l1, se->lo[g], dec, c->percent);
                    fmt_value(l2, sizeof l2, se->hi[g], dec, c->percent);
                    st_buf_printf(&b, " [%s, %s]", l1, l2);
                }
                st_buf_append(&b, "</title></rect>", 15);
                if (finite_or_nan(se->lo, g) && finite_or_nan(se->hi, g)) {
                    double ex = x + bw / 2, a = VY(se->lo[g]), z = VY(se->hi[g]), cap = fmin(3.5, bw / 3);
                    st_buf_printf(&b, "<path d=\"M%.1f %.1fV%.1fM%.1f %.1fH%.1fM%.1f %.1fH%.1f\" stroke=\"%s\" "
                                      "stroke-width=\"1.2\" fill=\"none\"/>",
                                  ex, a, z, ex - cap, a, ex + cap, ex - cap, z, ex + cap, INK);
                    top = fmax(top, se->hi[g]);
                }
                if (labels) text(&b, x + bw / 2, VY(top) - 4, "middle", SMALL, INK, lab);
                st_buf_append(&b, "\n", 1);
            }
        }
        st_buf_printf(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#999\"/>\n", ml, mt, ml, mt + PH);
#undef VY
    }
    st_buf_append(&b, "</svg>\n", 7);
    st_free(items);
    if (b.failed) {
        st_buf_free(&b);
        return st_err(STETHO_ERR_NOMEM, "bar chart: out of memory");
    }
    *out = b.data;
    return STETHO_OK;
}

/* ---- x/y charts ------------------------------------------------------------------ */

stetho_status stetho_svg_xy(const stetho_svg_xy_chart *c, char **out) {
    *out = NULL;
    if (!c || c->n_series == 0 || !c->series) return st_err(STETHO_ERR_INVALID, "x/y chart: no series");
    double xlo = INFINITY, xhi = -INFINITY, ylo = INFINITY, yhi = -INFINITY;
    for (size_t s = 0; s < c->n_series; s++) {
        const stetho_svg_xy_series *se = &c->series[s];
        if (se->n && (!se->x || !se->y)) return st_err(STETHO_ERR_INVALID, "x/y chart: series %zu has no data", s);
        for (size_t i = 0; i < se->n; i++)
            if (isfinite(se->x[i]) && isfinite(se->y[i])) {
                xlo = fmin(xlo, se->x[i]), xhi = fmax(xhi, se->x[i]);
                ylo = fmin(ylo, se->y[i]), yhi = fmax(yhi, se->y[i]);
            }
    }
    if (isfinite(c->x_min)) xlo = c->x_min;
    if (isfinite(c->x_max)) xhi = c->x_max;
    if (isfinite(c->y_min)) ylo = c->y_min;
    if (isfinite(c->y_max)) yhi = c->y_max;
    if (!(xlo <= xhi)) xlo = 0, xhi = 1;
    if (!(ylo <= yhi)) ylo = 0, yhi = 1;
    axis ax = make_axis(xlo, xhi, 6, c->x_percent), ay = make_axis(ylo, yhi, 5, c->y_percent);
    double W = c->width > 0 ? c->width : 560, H0 = c->height > 0 ? c->height : 360;

    legend_item *items = st_calloc(c->n_series, sizeof *items);
    if (!items) return STETHO_ERR_NOMEM;
    for (size_t s = 0; s < c->n_series; s++) {
        const stetho_svg_xy_series *se = &c->series[s];
        items[s] = (legend_item){se->name, se->color ? se->color : stetho_svg_palette(s), se->points ? 3 : 1};
    }
    st_buf b;
    st_buf_init(&b);
    double leg_h = legend(NULL, items, c->n_series, 0, 0, W - 20, false);
    double ml = 64, mr = 18, mt = 10 + leg_h + (c->note ? 20 : 0), mb = 30 + (c->x_label ? 20 : 0);
    double H = H0 + leg_h, PW = W - ml - mr, PH = H - mt - mb;
    svg_open(&b, W, H, c->title);
    legend(&b, items, c->n_series, 10, 6, W - 20, true);
#define PX(v) (ml + ((v) - ax.lo) / (ax.hi - ax.lo) * PW)
#define PY(v) (mt + PH - ((v) - ay.lo) / (ay.hi - ay.lo) * PH)
    for (int t = 0, nt = axis_ticks(&ay); t <= nt; t++) {
        double v = ay.lo + t * ay.step, y = PY(v);
        char lab[48];
        tick_label(&ay, v, lab, sizeof lab);
        st_buf_printf(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\"/>", ml, y, ml + PW, y,
                      fabs(v) < ay.step * 1e-6 ? "#999" : GRID);
        text(&b, ml - 6, y + 4, "end", FONT, MUTED, lab);
        st_buf_append(&b, "\n", 1);
    }
    for (int t = 0, nt = axis_ticks(&ax); t <= nt; t++) {
        double v = ax.lo + t * ax.step, x = PX(v);
        char lab[48];
        tick_label(&ax, v, lab, sizeof lab);
        st_buf_printf(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\"/>", x, mt, x, mt + PH,
                      fabs(v) < ax.step * 1e-6 ? "#999" : GRID);
        text(&b, x, mt + PH + 15, "middle", FONT, MUTED, lab);
        st_buf_append(&b, "\n", 1);
    }
    st_buf_printf(&b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"#999\"/>\n", ml,
                  mt, PW, PH);
    if (c->x_label) text(&b, ml + PW / 2, H - 6, "middle", FONT, INK, c->x_label);
    if (c->y_label) {
        st_buf_printf(&b, "<text transform=\"translate(14 %.1f) rotate(-90)\" font-size=\"%.1f\" fill=\"%s\" "
                          "text-anchor=\"middle\">",
                      mt + PH / 2, FONT, INK);
        st_xml_escape(&b, c->y_label);
        st_buf_append(&b, "</text>\n", 8);
    }
    if (c->note) text(&b, ml, mt - 8, NULL, FONT, INK, c->note), st_buf_append(&b, "\n", 1);
    for (size_t s = 0; s < c->n_series; s++) {
        const stetho_svg_xy_series *se = &c->series[s];
        const char *col = se->color ? se->color : stetho_svg_palette(s);
        if (se->line) {
            bool pen = false;
            st_buf_printf(&b, "<path fill=\"none\" stroke=\"%s\" stroke-width=\"1.8\" d=\"", col);
            for (size_t i = 0; i < se->n; i++) {
                if (!isfinite(se->x[i]) || !isfinite(se->y[i])) {
                    pen = false;
                    continue;
                }
                st_buf_printf(&b, "%s%.1f %.1f", pen ? "L" : "M", PX(se->x[i]), PY(se->y[i]));
                pen = true;
            }
            st_buf_append(&b, "\"/>\n", 4);
        }
        for (size_t i = 0; i < se->n; i++) {
            if (!isfinite(se->x[i]) || !isfinite(se->y[i])) continue;
            double x = PX(se->x[i]), y = PY(se->y[i]);
            char lx[48], ly[48];
            fmt_value(lx, sizeof lx, se->x[i], label_decimals(&ax), c->x_percent);
            fmt_value(ly, sizeof ly, se->y[i], label_decimals(&ay), c->y_percent);
            if (se->points) {
                st_buf_printf(&b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4.5\" fill=\"%s\" fill-opacity=\"0.85\" "
                                  "stroke=\"#fff\"><title>",
                              x, y, col);
                if (se->labels && se->labels[i]) st_xml_escape(&b, se->labels[i]), st_buf_append(&b, ": ", 2);
                st_buf_printf(&b, "(%s, %s)</title></circle>", lx, ly);
            }
            if (se->labels && se->labels[i]) {
                /* labels sit right of the point unless that runs off the plot */
                bool left = x + 7 + st_text_width(se->labels[i], SMALL) > ml + PW;
                text(&b, left ? x - 7 : x + 7, y - 5, left ? "end" : NULL, SMALL, MUTED, se->labels[i]);
            }
            st_buf_append(&b, "\n", 1);
        }
    }
#undef PX
#undef PY
    st_buf_append(&b, "</svg>\n", 7);
    st_free(items);
    if (b.failed) {
        st_buf_free(&b);
        return st_err(STETHO_ERR_NOMEM, "x/y chart: out of memory");
    }
    *out = b.data;
    return STETHO_OK;
}
