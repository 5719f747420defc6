/* Byte ranges: the Range grammar of RFC 9110 section 14.1.1 for one range, and If-Range. */
#include "core/http/range.h"

#include <string.h>
#include <strings.h>

/* A decimal position as given: its value saturated at UINT64_MAX, and its digits without leading
 * zeros, so that two numbers past 2^64 - 1 still compare exactly. */
struct pos {
    uint64_t v;
    const char *digits;
    size_t nd;
};

/* One range-spec: `first-last`, `first-` (no last) or `-suffix`. */
struct spec {
    int suffix;
    int has_last;
    struct pos a, b; /* first and last, or the suffix length in a */
};

static int is_ows(char c)
{
    return c == ' ' || c == '\t';
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* 1*DIGIT at *p (< end): advances *p past it; 0 when there is no digit. */
static int parse_pos(const char **p, const char *end, struct pos *out)
{
    const char *s = *p;
    if (s == end || !is_digit(*s))
        return 0;
    while (s < end - 1 && *s == '0' && is_digit(s[1]))
        s++;
    out->digits = s;
    out->v = 0;
    for (; s < end && is_digit(*s); s++) {
        unsigned d = (unsigned)(*s - '0');
        out->v = out->v > (UINT64_MAX - d) / 10 ? UINT64_MAX : out->v * 10 + d;
    }
    out->nd = (size_t)(s - out->digits);
    *p = s;
    return 1;
}

/* <0, 0, >0 as a < b, by their exact decimal values. */
static int pos_cmp(const struct pos *a, const struct pos *b)
{
    if (a->nd != b->nd)
        return a->nd < b->nd ? -1 : 1;
    return memcmp(a->digits, b->digits, a->nd);
}

/* A range-spec at *p: 1 and *p past it, or 0 when the bytes there are not one. */
static int parse_spec(const char **p, const char *end, struct spec *sp)
{
    const char *s = *p;
    memset(sp, 0, sizeof *sp);
    if (s < end && *s == '-') {
        s++;
        sp->suffix = 1;
        if (!parse_pos(&s, end, &sp->a))
            return 0;
    } else {
        if (!parse_pos(&s, end, &sp->a) || s == end || *s != '-')
            return 0;
        s++;
        sp->has_last = parse_pos(&s, end, &sp->b);
    }
    *p = s;
    return 1;
}

static void trim(const char **v, size_t *len)
{
    const char *s = *v, *e = *v + *len;
    while (s < e && is_ows(*s))
        s++;
    while (e > s && is_ows(e[-1]))
        e--;
    *v = s;
    *len = (size_t)(e - s);
}

enum ud_http_range_answer ud_http_range_eval(const char *value, size_t len, uint64_t size,
                                             uint64_t *first, uint64_t *last)
{
    trim(&value, &len);
    const char *p = value, *end = value + len;
    /* The unit: "bytes" in any case (range units are case-insensitive, section 14.1), then '='
     * with nothing in between. */
    if (len < 6 || strncasecmp(p, "bytes=", 6) != 0)
        return UD_HTTP_RANGE_WHOLE;
    p += 6;
    /* range-set = 1#range-spec: elements separated by OWS "," OWS; empty elements are skipped
     * (RFC 9110 section 5.6.1.2 asks recipients to accept them), so spaces may come before a
     * comma right after '=', but never before a range-spec there ("bytes= 0-5"). */
    struct spec sp, one = {0};
    int n = 0;
    for (;;) {
        if (p < end && *p != ',' && !is_ows(*p)) {
            if (!parse_spec(&p, end, &sp))
                return UD_HTTP_RANGE_WHOLE;
            if (++n > 1)
                return UD_HTTP_RANGE_WHOLE; /* several ranges: no multipart/byteranges */
            one = sp;
        }
        while (p < end && is_ows(*p))
            p++;
        if (p == end)
            break;
        if (*p != ',')
            return UD_HTTP_RANGE_WHOLE;
        p++;
        while (p < end && is_ows(*p))
            p++;
    }
    if (n == 0)
        return UD_HTTP_RANGE_WHOLE;
    if (!one.suffix && one.has_last && pos_cmp(&one.b, &one.a) < 0)
        return UD_HTTP_RANGE_WHOLE; /* last < first: an invalid range-spec, ignored */
    if (one.suffix) {
        if (one.a.v == 0)
            return UD_HTTP_RANGE_UNSATISFIABLE;
        /* RFC 9110 section 14.1.1: on an empty representation a non-zero suffix is the one
         * satisfiable form, yet a 206 cannot name zero bytes: the whole (empty) object. */
        if (size == 0)
            return UD_HTTP_RANGE_WHOLE;
        *first = one.a.v >= size ? 0 : size - one.a.v;
        *last = size - 1;
        return UD_HTTP_RANGE_PARTIAL;
    }
    /* A saturated first position is past 2^64 - 1 and so past any size. */
    if (one.a.v >= size)
        return UD_HTTP_RANGE_UNSATISFIABLE;
    *first = one.a.v;
    *last = one.has_last && one.b.v < size - 1 ? one.b.v : size - 1;
    return UD_HTTP_RANGE_PARTIAL;
}

int ud_http_if_range_holds(const char *value, size_t len, const char *etag)
{
    trim(&value, &len);
    size_t el = strlen(etag);
    /* A strong tag is compared byte for byte; W/"..." and dates never equal a quoted tag. */
    return el >= 2 && etag[0] == '"' && len == el && memcmp(value, etag, el) == 0;
}
