/* Helpers shared by the SVG charts and the report writer (private): escaping
 * text for HTML/XML and estimating how wide a label will be drawn. */
#ifndef STETHO_SVG_INTERNAL_H
#define STETHO_SVG_INTERNAL_H

#include "internal.h"

/* Append s escaped for XML/HTML text and attribute values: & < > " ' become
 * entities, control characters other than tab and newline become U+FFFD (they
 * are not allowed in XML). False when an append ran out of memory. */
bool st_xml_escape(st_buf *b, const char *s);
/* The same for at most n bytes of s (stops early at a NUL). */
bool st_xml_escape_n(st_buf *b, const char *s, size_t n);

/* Rough drawn width of s in pixels at a sans-serif font of size px: average
 * advance 0.56 em per character (UTF-8 code points, not bytes). Used to leave
 * room for labels, so erring wide is fine. */
double st_text_width(const char *s, double px);

#endif
