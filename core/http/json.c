/* JSON text buffer with UTF-8-correct escaping, and strict base64. */
#include "core/http/json.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/http/b64_vector.h"

void ud_jbuf_init(struct ud_jbuf *j)
{
    memset(j, 0, sizeof *j);
}

void ud_jbuf_free(struct ud_jbuf *j)
{
    free(j->p);
    memset(j, 0, sizeof *j);
}

/* Makes room for n more bytes plus a NUL. 0 or -1 (err set). */
static int reserve(struct ud_jbuf *j, size_t n)
{
    if (j->err != 0)
        return -1;
    if (j->len + n + 1 <= j->cap)
        return 0;
    size_t cap = j->cap ? j->cap : 256;
    while (cap < j->len + n + 1) {
        if (cap > SIZE_MAX / 2) {
            j->err = UD_ENOMEM;
            return -1;
        }
        cap *= 2;
    }
    char *p = realloc(j->p, cap);
    if (p == NULL) {
        j->err = UD_ENOMEM;
        return -1;
    }
    j->p = p;
    j->cap = cap;
    return 0;
}

void ud_jbuf_raw(struct ud_jbuf *j, const char *s, size_t n)
{
    if (reserve(j, n) != 0)
        return;
    memcpy(j->p + j->len, s, n);
    j->len += n;
    j->p[j->len] = '\0';
}

void ud_jbuf_lit(struct ud_jbuf *j, const char *s)
{
    ud_jbuf_raw(j, s, strlen(s));
}

void ud_jbuf_printf(struct ud_jbuf *j, const char *fmt, ...)
{
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) {
        j->err = UD_EINVAL;
        return;
    }
    if ((size_t)n < sizeof small) {
        ud_jbuf_raw(j, small, (size_t)n);
        return;
    }
    if (reserve(j, (size_t)n) != 0)
        return;
    va_start(ap, fmt);
    vsnprintf(j->p + j->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    j->len += (size_t)n;
}

size_t ud_json_u64(char *out, uint64_t v)
{
    char buf[20];
    size_t i = sizeof buf;
    do {
        buf[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    memcpy(out, buf + i, sizeof buf - i);
    return sizeof buf - i;
}

void ud_jbuf_u64(struct ud_jbuf *j, uint64_t v)
{
    char buf[20];
    ud_jbuf_raw(j, buf, ud_json_u64(buf, v));
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 when it is not valid. */
static size_t utf8_seq(const uint8_t *s, size_t n)
{
    uint8_t c = s[0];
    if (c < 0x80)
        return 1;
    size_t len;
    uint32_t cp;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
        cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
        (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return len;
}

int ud_utf8_valid(const void *s, size_t n)
{
    const uint8_t *p = s;
    for (size_t i = 0; i < n;) {
        size_t l = utf8_seq(p + i, n - i);
        if (l == 0)
            return 0;
        i += l;
    }
    return 1;
}

void ud_jbuf_str(struct ud_jbuf *j, const void *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const uint8_t *p = s;
    /* Worst case: every byte becomes a 6-byte escape (U+FFFD is 3 bytes, \u00XX 6). */
    if (n > (SIZE_MAX - 2) / 6) {
        j->err = UD_ENOMEM;
        return;
    }
    if (reserve(j, n * 6 + 2) != 0)
        return;
    char *o = j->p + j->len;
    *o++ = '"';
    for (size_t i = 0; i < n;) {
        uint8_t c = p[i];
        if (c >= 0x80) {
            size_t l = utf8_seq(p + i, n - i);
            if (l == 0) {
                memcpy(o, "\xEF\xBF\xBD", 3);
                o += 3;
                i++;
            } else {
                memcpy(o, p + i, l);
                o += l;
                i += l;
            }
            continue;
        }
        i++;
        switch (c) {
        case '"':
            *o++ = '\\';
            *o++ = '"';
            break;
        case '\\':
            *o++ = '\\';
            *o++ = '\\';
            break;
        case '\n':
            *o++ = '\\';
            *o++ = 'n';
            break;
        case '\r':
            *o++ = '\\';
            *o++ = 'r';
            break;
        case '\t':
            *o++ = '\\';
            *o++ = 't';
            break;
        default:
            if (c < 0x20 || c == 0x7F) {
                memcpy(o, "\\u00", 4);
                o[4] = hex[c >> 4];
                o[5] = hex[c & 15];
                o += 6;
            } else {
                *o++ = (char)c;
            }
        }
    }
    *o++ = '"';
    j->len = (size_t)(o - j->p);
    j->p[j->len] = '\0';
}

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t ud_b64_encoded_len(size_t n)
{
    return (n + 2) / 3 * 4;
}

size_t ud_b64_encode(const void *data, size_t n, char *out)
{
    const uint8_t *p = data;
    char *o = out;
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        *o++ = b64_alphabet[v >> 18];
        *o++ = b64_alphabet[(v >> 12) & 63];
        *o++ = b64_alphabet[(v >> 6) & 63];
        *o++ = b64_alphabet[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)p[i] << 16;
        *o++ = b64_alphabet[v >> 18];
        *o++ = b64_alphabet[(v >> 12) & 63];
        *o++ = '=';
        *o++ = '=';
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
        *o++ = b64_alphabet[v >> 18];
        *o++ = b64_alphabet[(v >> 12) & 63];
        *o++ = b64_alphabet[(v >> 6) & 63];
        *o++ = '=';
    }
    return (size_t)(o - out);
}

void ud_jbuf_b64(struct ud_jbuf *j, const void *data, size_t n)
{
    size_t el = ud_b64_encoded_len(n);
    if (reserve(j, el + 2) != 0)
        return;
    j->p[j->len++] = '"';
    j->len += ud_b64_encode(data, n, j->p + j->len);
    j->p[j->len++] = '"';
    j->p[j->len] = '\0';
}

size_t ud_b64_decoded_max(size_t len)
{
    return len / 4 * 3 + 3;
}

// clang-format off
/* 0..63 for the alphabet, 255 for every other byte (including '='). */
static const uint8_t b64_table[256] = {
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,  62, 255, 255, 255,  63,
     52,  53,  54,  55,  56,  57,  58,  59,  60,  61, 255, 255, 255, 255, 255, 255,
    255,   0,   1,   2,   3,   4,   5,   6,   7,   8,   9,  10,  11,  12,  13,  14,
     15,  16,  17,  18,  19,  20,  21,  22,  23,  24,  25, 255, 255, 255, 255, 255,
    255,  26,  27,  28,  29,  30,  31,  32,  33,  34,  35,  36,  37,  38,  39,  40,
     41,  42,  43,  44,  45,  46,  47,  48,  49,  50,  51, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
};
// clang-format on

int ud_b64_decode(const char *in, size_t len, uint8_t *out, size_t *outlen)
{
    const uint8_t *p = (const uint8_t *)in;
    *outlen = 0;
    if (len % 4 != 0)
        return UD_EINVAL;
    if (len == 0)
        return 0;
    /* Every group but the last has four alphabet characters: most of them in vector blocks,
     * the rest (and a block holding anything else, whose error the loop reports) one by one. */
    size_t full = len - 4, i = ud_b64_decode_blocks(p, full, out);
    size_t o = i / 4 * 3;
    for (; i < full; i += 4) {
        uint32_t a = b64_table[p[i]], b = b64_table[p[i + 1]], c = b64_table[p[i + 2]],
                 d = b64_table[p[i + 3]];
        if ((a | b | c | d) & 0xC0) /* 255 marks a byte outside the alphabet */
            return UD_EINVAL;
        uint32_t w = a << 18 | b << 12 | c << 6 | d;
        out[o] = (uint8_t)(w >> 16);
        out[o + 1] = (uint8_t)(w >> 8);
        out[o + 2] = (uint8_t)w;
        o += 3;
    }
    /* The last group: "xx==", "xxx=" or "xxxx"; unused bits must be zero (canonical). */
    const uint8_t *q = p + full;
    uint32_t a = b64_table[q[0]], b = b64_table[q[1]];
    if ((a | b) & 0xC0)
        return UD_EINVAL;
    if (q[2] == '=') {
        if (q[3] != '=' || (b & 0x0F) != 0)
            return UD_EINVAL;
        out[o++] = (uint8_t)(a << 2 | b >> 4);
    } else {
        uint32_t c = b64_table[q[2]];
        if (c & 0xC0)
            return UD_EINVAL;
        if (q[3] == '=') {
            if ((c & 0x03) != 0)
                return UD_EINVAL;
            uint32_t w = a << 18 | b << 12 | c << 6;
            out[o++] = (uint8_t)(w >> 16);
            out[o++] = (uint8_t)(w >> 8);
        } else {
            uint32_t d = b64_table[q[3]];
            if (d & 0xC0)
                return UD_EINVAL;
            uint32_t w = a << 18 | b << 12 | c << 6 | d;
            out[o++] = (uint8_t)(w >> 16);
            out[o++] = (uint8_t)(w >> 8);
            out[o++] = (uint8_t)w;
        }
    }
    *outlen = o;
    return 0;
}
