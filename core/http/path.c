/* Percent-decoding, route patterns over the raw path, query parameters and confined paths. */
#include "core/http/path.h"

#include <stdio.h>
#include <string.h>

#include "core/err.h"
#include "core/hex.h"

int ud_http_pct_decode(const char *in, size_t len, uint8_t *out, size_t *outlen, char *errmsg)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (in[i] != '%') {
            out[o++] = (uint8_t)in[i];
            continue;
        }
        if (len - i < 3 || ud_hex_digit(in[i + 1]) < 0 || ud_hex_digit(in[i + 2]) < 0)
            return ud_errf(
                errmsg, UD_EINVAL,
                "bad percent escape at byte %zu: '%%' must be followed by two hex digits", i);
        out[o++] = (uint8_t)(ud_hex_digit(in[i + 1]) << 4 | ud_hex_digit(in[i + 2]));
        i += 2;
    }
    *outlen = o;
    return 0;
}

/* --- route patterns --------------------------------------------------------------------------- */

/* Next '/'-separated segment of s[*pos..len): sets seg/seglen and moves *pos past the '/'. */
static int next_segment(const char *s, size_t len, size_t *pos, const char **seg, size_t *seglen)
{
    if (*pos > len)
        return 0;
    const char *start = s + *pos;
    const char *slash = memchr(start, '/', len - *pos);
    size_t n = slash != NULL ? (size_t)(slash - start) : len - *pos;
    *seg = start;
    *seglen = n;
    *pos += n + 1; /* past the '/' (or one past the end) */
    return 1;
}

static int is_param(const char *seg, size_t n)
{
    return n >= 3 && seg[0] == '{' && seg[n - 1] == '}';
}

static int add_param(struct ud_http_params *p, const char *name, size_t name_len, const char *raw,
                     size_t len)
{
    if (p->n == UD_HTTP_MAX_PARAMS)
        return 0;
    p->v[p->n].name = name;
    p->v[p->n].name_len = name_len;
    p->v[p->n].raw = raw;
    p->v[p->n].len = len;
    p->n++;
    return 1;
}

int ud_http_route_match(const char *pattern, const char *path, size_t len, struct ud_http_params *p)
{
    size_t plen = strlen(pattern);
    p->n = 0;
    /* Both start with '/': compare what follows it. */
    if (plen == 0 || len == 0 || pattern[0] != '/' || path[0] != '/')
        return 0;
    size_t pp = 1, sp = 1;
    const char *pseg, *sseg;
    size_t pn, sn;
    while (next_segment(pattern, plen, &pp, &pseg, &pn)) {
        if (is_param(pseg, pn) && pseg[pn - 2] == '*') {
            /* The rest: the pattern's remaining literal segments must end the path. */
            const char *tail = pattern + (pp <= plen ? pp - 1 : plen); /* "/lit/lit" or "" */
            size_t tail_len = plen - (size_t)(tail - pattern);
            if (sp > len)
                return 0;
            size_t rest = len - sp;
            if (tail_len > 0) {
                if (rest < tail_len + 1 || memcmp(path + len - tail_len, tail, tail_len) != 0)
                    return 0;
                rest -= tail_len; /* the rest is non-empty and excludes the tail */
            }
            return add_param(p, pseg + 1, pn - 3, path + sp, rest);
        }
        if (!next_segment(path, len, &sp, &sseg, &sn))
            return 0;
        if (is_param(pseg, pn)) {
            if (sn == 0 || !add_param(p, pseg + 1, pn - 2, sseg, sn))
                return 0;
        } else if (pn != sn || memcmp(pseg, sseg, pn) != 0) {
            return 0;
        }
    }
    return sp > len; /* the whole path was consumed */
}

int ud_http_param(const struct ud_http_params *p, const char *name, const char **raw, size_t *len)
{
    size_t nl = strlen(name);
    for (size_t i = 0; i < p->n; i++) {
        if (p->v[i].name_len == nl && memcmp(p->v[i].name, name, nl) == 0) {
            *raw = p->v[i].raw;
            *len = p->v[i].len;
            return 1;
        }
    }
    return 0;
}

/* --- query strings ---------------------------------------------------------------------------- */

int ud_http_query_raw(const char *query, size_t qlen, const char *name, const char **raw,
                      size_t *len)
{
    size_t nl = strlen(name);
    size_t pos = 0;
    while (pos <= qlen && query != NULL) {
        const char *pair = query + pos;
        const char *amp = memchr(pair, '&', qlen - pos);
        size_t pl = amp != NULL ? (size_t)(amp - pair) : qlen - pos;
        const char *eq = memchr(pair, '=', pl);
        size_t kl = eq != NULL ? (size_t)(eq - pair) : pl;
        if (kl == nl && memcmp(pair, name, nl) == 0) {
            *raw = eq != NULL ? eq + 1 : pair + pl;
            *len = eq != NULL ? pl - kl - 1 : 0;
            return 1;
        }
        pos += pl + 1;
    }
    return 0;
}

int ud_http_query_get(const char *query, size_t qlen, const char *name, uint8_t *out, size_t cap,
                      size_t *outlen, char *errmsg)
{
    const char *raw;
    size_t len;
    if (!ud_http_query_raw(query, qlen, name, &raw, &len))
        return UD_ENOTFOUND;
    /* Decoding never lengthens, so a raw value within cap always fits; a longer one may. */
    uint8_t tmp[1024];
    uint8_t *dst = len <= cap ? out : (len <= sizeof tmp ? tmp : NULL);
    if (dst == NULL)
        return ud_errf(errmsg, UD_ELIMIT, "query parameter %s is longer than %zu bytes", name, cap);
    char derr[UD_ERRMSG_SIZE];
    if (ud_http_pct_decode(raw, len, dst, outlen, derr) != 0)
        return ud_errf(errmsg, UD_EINVAL, "query parameter %s: %s", name, derr);
    if (*outlen > cap)
        return ud_errf(errmsg, UD_ELIMIT, "query parameter %s is longer than %zu bytes", name, cap);
    if (dst != out)
        memcpy(out, dst, *outlen);
    return 0;
}

int ud_http_query_u64(const char *query, size_t qlen, const char *name, uint64_t min, uint64_t max,
                      uint64_t *v, char *errmsg)
{
    const char *raw;
    size_t len;
    if (!ud_http_query_raw(query, qlen, name, &raw, &len))
        return UD_ENOTFOUND;
    uint64_t x = 0;
    int ok = len > 0 && len <= 20;
    for (size_t i = 0; ok && i < len; i++) {
        if (raw[i] < '0' || raw[i] > '9' || x > (UINT64_MAX - (uint64_t)(raw[i] - '0')) / 10)
            ok = 0;
        else
            x = x * 10 + (uint64_t)(raw[i] - '0');
    }
    if (!ok || x < min || x > max)
        return ud_errf(errmsg, UD_EINVAL, "query parameter %s must be an integer from %llu to %llu",
                       name, (unsigned long long)min, (unsigned long long)max);
    *v = x;
    return 0;
}

int ud_http_columns_split(const uint8_t *list, size_t len, struct ud_col *cols, size_t cap,
                          size_t *n, char *errmsg)
{
    *n = 0;
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && list[i] != ',')
            continue;
        if (i == start)
            return ud_errf(errmsg, UD_EINVAL, "columns: empty column name in the list");
        if (*n == cap)
            return ud_errf(errmsg, UD_ELIMIT, "columns: more than %zu names", cap);
        cols[(*n)++] = (struct ud_col){list + start, i - start, NULL, 0};
        start = i + 1;
    }
    return 0;
}

/* --- backup paths ----------------------------------------------------------------------------- */

static int backup_char_ok(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           strchr("._+=@,:-", c) != NULL;
}

int ud_http_backup_path(const char *root, const char *rel, const char *field, char *out,
                        size_t size, char *errmsg)
{
    size_t len = strlen(rel);
    if (len == 0)
        return ud_errf(errmsg, UD_EINVAL, "invalid path: %s is empty", field);
    if (len > 512)
        return ud_errf(errmsg, UD_EINVAL, "invalid path: %s is longer than 512 bytes", field);
    if (rel[0] == '/')
        return ud_errf(errmsg, UD_EINVAL,
                       "invalid path: %s must be relative to the backup root, not absolute", field);
    size_t seg = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && rel[i] != '/') {
            if (!backup_char_ok(rel[i]))
                return ud_errf(errmsg, UD_EINVAL,
                               "invalid path: %s may only hold letters, digits and ._+=@,:- in "
                               "its '/'-separated segments (byte %zu is not allowed)",
                               field, i);
            continue;
        }
        size_t n = i - seg;
        if (n == 0)
            return ud_errf(errmsg, UD_EINVAL, "invalid path: %s has an empty segment", field);
        if ((n == 1 && rel[seg] == '.') || (n == 2 && rel[seg] == '.' && rel[seg + 1] == '.'))
            return ud_errf(errmsg, UD_EINVAL,
                           "invalid path: %s may not contain '.' or '..' segments", field);
        seg = i + 1;
    }
    int w = snprintf(out, size, "%s/%s", root, rel);
    if (w < 0 || (size_t)w >= size)
        return ud_errf(errmsg, UD_EINVAL, "invalid path: %s is too long", field);
    return 0;
}

/* --- transaction ids -------------------------------------------------------------------------- */

int ud_http_txn_id_parse(const char *hex, size_t len, uint8_t id[16])
{
    if (len != 32)
        return UD_EINVAL;
    for (size_t i = 0; i < 16; i++) {
        int hi = ud_hex_digit(hex[2 * i]), lo = ud_hex_digit(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return UD_EINVAL;
        id[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

void ud_http_txn_id_format(const uint8_t id[16], char out[33])
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < 16; i++) {
        out[2 * i] = digits[id[i] >> 4];
        out[2 * i + 1] = digits[id[i] & 15];
    }
    out[32] = '\0';
}
