/* Inline SVG charts for self-contained reports: bar charts (single, grouped, with
 * error bars, vertical or horizontal, with highlighted categories and level marks
 * such as an expected value) and x/y charts (scatter with point labels, lines).
 *
 * Each call returns one <svg> element (no XML prolog) meant to be pasted into an
 * HTML page: sized by a viewBox so CSS can scale it, fonts inherited from the
 * page, a <title> for screen readers, and a <title> on every bar or point so a
 * browser shows the exact value on hover (no JavaScript). Every string taken from
 * the caller is XML-escaped. Pure functions: no I/O. */
#ifndef STETHO_SVG_H
#define STETHO_SVG_H

#include "stetho/common.h"
#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Colour i of the categorical palette (Tableau 10; cycles). */
const char *stetho_svg_palette(size_t i);

typedef enum {
    STETHO_SVG_BAR = 0, /* a bar from 0 to the value */
    STETHO_SVG_LEVEL,   /* a dashed line across the group at the value (e.g. k/d) */
} stetho_svg_style;

typedef struct {
    const char *name;      /* legend entry; NULL or "" = not in the legend */
    const char *color;     /* CSS colour; NULL = palette colour of the series index */
    const char *const *colors; /* [n_groups] per-bar colours overriding color, or NULL */
    stetho_svg_style style;
    const double *value;   /* [n_groups]; NaN (or inf) = nothing drawn ("n/a") */
    const double *lo, *hi; /* [n_groups] error-bar ends, or NULL; NaN = no bar */
} stetho_svg_bar_series;

typedef struct {
    const char *title;           /* accessible title (not drawn) */
    const char *value_label;     /* axis title of the value axis */
    const char *category_label;  /* axis title of the category axis (NULL = none) */
    size_t n_groups;
    const char *const *groups;   /* [n_groups] category labels */
    size_t n_series;
    const stetho_svg_bar_series *series;
    const bool *highlight;       /* [n_groups] or NULL: a shaded band behind these groups */
    const char *highlight_label; /* legend entry for the band */
    double v_min, v_max;         /* value-axis range; NaN = from the data, 0 included */
    bool percent;                /* values are fractions; ticks and labels as % */
    bool horizontal;             /* categories down the left, bars to the right */
    bool value_labels;           /* print each bar's value next to it */
    int width;                   /* px; 0 = 760 */
} stetho_svg_bar_chart;

/* The chart as a new string (free with free()). STETHO_ERR_INVALID when there is
 * no group or series, or a label or value array is missing. */
stetho_status stetho_svg_bars(const stetho_svg_bar_chart *c, char **out);

typedef struct {
    const char *name;          /* legend entry; NULL or "" = none */
    const char *color;         /* NULL = palette colour of the series index */
    size_t n;
    const double *x, *y;       /* [n]; points with a NaN coordinate are skipped */
    const char *const *labels; /* [n] text drawn beside each point, or NULL */
    bool line;                 /* join the points in order (gaps at NaN) */
    bool points;               /* draw markers */
} stetho_svg_xy_series;

typedef struct {
    const char *title;         /* accessible title (not drawn) */
    const char *x_label, *y_label;
    size_t n_series;
    const stetho_svg_xy_series *series;
    double x_min, x_max, y_min, y_max; /* NaN = from the data */
    bool x_percent, y_percent;
    const char *note;          /* one line drawn above the plot, left-aligned, or NULL */
    int width, height;         /* px; 0 = 560 x 360 */
} stetho_svg_xy_chart;

stetho_status stetho_svg_xy(const stetho_svg_xy_chart *c, char **out);

#ifdef __cplusplus
}
#endif
#endif
