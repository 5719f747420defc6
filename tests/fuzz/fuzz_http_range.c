/*
 * libFuzzer target for the byte-range headers of a LOB GET (core/http/range.c): the first 8 bytes
 * are the object's size, the rest the Range value (and the If-Range value). Checks that a range
 * answered is inside the object, that the value's surrounding spaces change nothing, and that
 * If-Range holds only for the exact tag.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/http/range.h"

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c))                                                                                  \
            abort();                                                                               \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 8)
        return 0;
    uint64_t obj = 0;
    memcpy(&obj, data, 8);
    /* Small sizes too, where most ranges fall past the end. */
    if (data[0] & 1)
        obj &= 0xffff;
    const char *v = (const char *)data + 8;
    size_t len = size - 8;
    uint64_t first = 0, last = 0;
    enum ud_http_range_answer a = ud_http_range_eval(v, len, obj, &first, &last);
    CHECK(a == UD_HTTP_RANGE_WHOLE || a == UD_HTTP_RANGE_PARTIAL ||
          a == UD_HTTP_RANGE_UNSATISFIABLE);
    if (a == UD_HTTP_RANGE_PARTIAL)
        CHECK(first <= last && last < obj);
    if (a == UD_HTTP_RANGE_UNSATISFIABLE && obj > 0)
        CHECK(len >= 7); /* "bytes=" and at least one more byte */

    /* The same value with spaces and tabs around it. */
    char *padded = malloc(len + 3);
    padded[0] = ' ';
    memcpy(padded + 1, v, len);
    padded[len + 1] = '\t';
    padded[len + 2] = ' ';
    uint64_t f2 = 0, l2 = 0;
    enum ud_http_range_answer b = ud_http_range_eval(padded, len + 3, obj, &f2, &l2);
    CHECK(a == b && (a != UD_HTTP_RANGE_PARTIAL || (first == f2 && last == l2)));
    free(padded);

    static const char etag[] = "\"12345\"";
    if (ud_http_if_range_holds(v, len, etag)) {
        size_t s = 0, e = len;
        while (s < e && (v[s] == ' ' || v[s] == '\t'))
            s++;
        while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
            e--;
        CHECK(e - s == sizeof etag - 1 && memcmp(v + s, etag, e - s) == 0);
    }
    return 0;
}
