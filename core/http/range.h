/*
 * Byte ranges of a GET (RFC 9110 section 14) as plain functions (no h2o): what a Range header
 * asks of a representation of a known size, and whether an If-Range lets it. One range is
 * served; a request for several (multipart/byteranges) is answered with the whole representation,
 * which the RFC allows (section 14.2: a server may ignore Range).
 */
#ifndef UD_CORE_HTTP_RANGE_H
#define UD_CORE_HTTP_RANGE_H

#include <stddef.h>
#include <stdint.h>

/* What to answer a GET with a Range header. */
enum ud_http_range_answer {
    UD_HTTP_RANGE_WHOLE = 0,     /* 200 with everything: the Range is ignored */
    UD_HTTP_RANGE_PARTIAL,       /* 206 with bytes *first..*last (inclusive) */
    UD_HTTP_RANGE_UNSATISFIABLE, /* 416 with Content-Range: bytes * / size */
};

/*
 * Evaluates the Range value (len bytes, not NUL-terminated; surrounding spaces and tabs are
 * ignored) against a representation of size bytes. Honoured: one range-spec of the unit "bytes"
 * (any case), `bytes=A-B`, `bytes=A-` or `bytes=-N`, with decimal numbers of any length (leading
 * zeros allowed; a number past 2^64 - 1 compares as what it is: a first position past the end,
 * a last position or suffix past the end clamped) and empty list elements around it
 * (`bytes=,0-5`, spaces or tabs allowed around the commas only).
 *  - PARTIAL: `A-B` with A < size (B past the end is clamped to size - 1), `A-` with A < size,
 *    `-N` with 0 < N (the last N bytes, or all of them when N >= size);
 *  - UNSATISFIABLE: A >= size (every `A-B` and `A-` of an empty representation), `-0`;
 *  - WHOLE: `-N` on an empty representation (satisfiable, RFC 9110 section 14.1.1, but a 206
 *    cannot name zero bytes), and anything else: several ranges, another unit, `A-B` with
 *    B < A, or a value that is not the grammar above (`bytes = 0-5`, `bytes=0 - 5`,
 *    `bytes=+1-`, `bytes=`, "").
 * *first and *last are set only for PARTIAL.
 */
enum ud_http_range_answer ud_http_range_eval(const char *value, size_t len, uint64_t size,
                                             uint64_t *first, uint64_t *last);

/*
 * 1 when the If-Range value (len bytes; surrounding spaces and tabs ignored) is exactly etag, a
 * strong entity tag in quotes ("\"42\""): the Range is then honoured (RFC 9110 section 13.1.5,
 * strong comparison). 0 for anything else: another tag, a weak tag (W/"42"), a date (the
 * representation has no Last-Modified to compare it with), an empty value. etag is
 * NUL-terminated.
 */
int ud_http_if_range_holds(const char *value, size_t len, const char *etag);

#endif
