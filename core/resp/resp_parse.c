/* Incremental RESP2 request parser: multibulk arrays and inline commands, split at any byte. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/hex.h"
#include "core/resp/resp.h"

void ud_resp_parser_init(struct ud_resp_parser *p)
{
    memset(p, 0, sizeof *p);
    p->max_bulk = UD_RESP_MAX_BULK;
    p->max_args = UD_RESP_MAX_ARGS;
    p->max_inline = UD_RESP_MAX_INLINE;
    p->max_request = UD_RESP_MAX_REQUEST;
    p->bulk_len = -1;
}

void ud_resp_parser_free(struct ud_resp_parser *p)
{
    free(p->off);
    free(p->argv);
    free(p->argvlen);
    free(p->line);
    p->off = NULL;
    p->argv = NULL;
    p->argvlen = NULL;
    p->line = NULL;
    p->cap = 0;
    p->line_cap = 0;
    ud_resp_parser_reset(p);
}

void ud_resp_parser_reset(struct ud_resp_parser *p)
{
    p->in_multibulk = 0;
    p->pos = 0;
    p->nargs = 0;
    p->bulk_len = -1;
    p->need = 0;
    p->argc = 0;
}

size_t ud_resp_parser_wants(const struct ud_resp_parser *p)
{
    return p->need;
}

static void *xrealloc(void *ptr, size_t n)
{
    void *q = realloc(ptr, n);
    if (q == NULL && n != 0)
        abort(); /* network glue: out of memory is fatal, as in h2o */
    return q;
}

static void ensure_args(struct ud_resp_parser *p, size_t n)
{
    if (n <= p->cap)
        return;
    size_t cap = p->cap ? p->cap : 8;
    while (cap < n)
        cap *= 2;
    p->off = xrealloc(p->off, cap * sizeof *p->off);
    p->argv = xrealloc(p->argv, cap * sizeof *p->argv);
    p->argvlen = xrealloc(p->argvlen, cap * sizeof *p->argvlen);
    p->cap = cap;
}

static int fail(struct ud_resp_parser *p, const char *what)
{
    snprintf(p->errmsg, sizeof p->errmsg, "ERR Protocol error: %s", what);
    ud_resp_parser_reset(p);
    return UD_RESP_PROTOCOL;
}

/*
 * Decimal integer as Redis's string2ll reads it: optional '-', no '+', no spaces, no leading
 * zeros, no "-0", within long long. Returns 1 and *out, or 0.
 */
static int parse_ll(const uint8_t *s, size_t n, long long *out)
{
    size_t i = 0;
    int neg = 0;
    if (n == 0 || n > 20)
        return 0;
    if (n == 1 && s[0] == '0') {
        *out = 0;
        return 1;
    }
    if (s[0] == '-') {
        neg = 1;
        i = 1;
    }
    if (i >= n || s[i] < '1' || s[i] > '9')
        return 0;
    unsigned long long v = 0;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (~0ull - d) / 10)
            return 0;
        v = v * 10 + d;
    }
    if (neg) {
        if (v > (unsigned long long)INT64_MAX + 1)
            return 0;
        *out = v == (unsigned long long)INT64_MAX + 1 ? INT64_MIN : -(long long)v;
    } else {
        if (v > (unsigned long long)INT64_MAX)
            return 0;
        *out = (long long)v;
    }
    return 1;
}

/*
 * Finds the "\r\n" ending the header line that starts at c[from] (its first byte is the type
 * byte). Returns 1 with *cr at the '\r', 0 when more bytes are needed, -1 when the line is longer
 * than the inline limit without ending (Redis's "too big ... count string").
 */
static int find_line(const struct ud_resp_parser *p, const uint8_t *c, size_t n, size_t from,
                     size_t *cr)
{
    size_t avail = n - from;
    size_t window = avail < p->max_inline ? avail : p->max_inline;
    const uint8_t *r = memchr(c + from, '\r', window);
    if (r == NULL)
        return avail > p->max_inline ? -1 : 0;
    *cr = (size_t)(r - c);
    if (*cr + 1 >= n)
        return 0; /* the '\n' has not arrived */
    return 1;
}

static int parse_multibulk(struct ud_resp_parser *p, const uint8_t *c, size_t n, size_t *used)
{
    size_t cr;
    int rc;
    long long ll;

    if (p->nargs <= 0 && p->pos == 0) {
        if ((rc = find_line(p, c, n, 0, &cr)) <= 0) {
            p->need = 0;
            return rc < 0 ? fail(p, "too big mbulk count string") : UD_RESP_NEED_MORE;
        }
        if (!parse_ll(c + 1, cr - 1, &ll) || ll > (long long)p->max_args || c[cr + 1] != '\n')
            return fail(p, "invalid multibulk length");
        p->pos = cr + 2;
        p->nargs = ll;
        p->argc = 0;
        p->bulk_len = -1;
        if (ll <= 0) {
            *used = p->pos;
            return UD_RESP_COMMAND; /* an empty command: the caller skips it */
        }
    }
    while ((long long)p->argc < p->nargs) {
        if (p->bulk_len < 0) {
            if (p->pos >= n) {
                p->need = p->pos + 1;
                return UD_RESP_NEED_MORE;
            }
            if (c[p->pos] != '$') {
                char what[64];
                uint8_t b = c[p->pos];
                if (b >= 0x20 && b < 0x7f)
                    snprintf(what, sizeof what, "expected '$', got '%c'", b);
                else
                    snprintf(what, sizeof what, "expected '$', got '\\x%02x'", b);
                return fail(p, what);
            }
            if ((rc = find_line(p, c, n, p->pos, &cr)) <= 0) {
                p->need = 0;
                return rc < 0 ? fail(p, "too big bulk count string") : UD_RESP_NEED_MORE;
            }
            /* Past Redis's own limit (512 MiB), Redis's words; below it, a length Redis takes
             * is refused saying why. */
            if (!parse_ll(c + p->pos + 1, cr - p->pos - 1, &ll) || ll < 0 ||
                ll > UD_RESP_REDIS_MAX_BULK || c[cr + 1] != '\n')
                return fail(p, "invalid bulk length");
            if (ll > (long long)p->max_bulk) {
                char what[96];
                snprintf(what, sizeof what,
                         "invalid bulk length: %lld bytes, one argument is at most %zu", ll,
                         p->max_bulk);
                return fail(p, what);
            }
            if (cr + 2 + (size_t)ll + 2 > p->max_request) {
                char what[64];
                snprintf(what, sizeof what, "request is larger than %zu bytes", p->max_request);
                return fail(p, what);
            }
            p->pos = cr + 2;
            p->bulk_len = ll;
        }
        size_t blen = (size_t)p->bulk_len;
        if (n - p->pos < blen + 2) {
            p->need = p->pos + blen + 2;
            return UD_RESP_NEED_MORE;
        }
        if (c[p->pos + blen] != '\r' || c[p->pos + blen + 1] != '\n')
            return fail(p, "expected CRLF after bulk string");
        ensure_args(p, p->argc + 1);
        p->off[p->argc] = p->pos;
        p->argvlen[p->argc] = blen;
        p->argc++;
        p->pos += blen + 2;
        p->bulk_len = -1;
    }
    for (size_t i = 0; i < p->argc; i++)
        p->argv[i] = c + p->off[i];
    *used = p->pos;
    return UD_RESP_COMMAND;
}

static int is_space(uint8_t b)
{
    return b == ' ' || b == '\t' || b == '\n' || b == '\r' || b == '\v' || b == '\f';
}

/*
 * Splits an inline line into arguments with Redis's quoting rules (sdssplitargs). The unquoted
 * arguments are written to p->line, which never needs more bytes than the line itself. A NUL byte
 * separates arguments outside quotes and is kept inside them. Returns 0 or -1 (unbalanced).
 */
static int split_inline(struct ud_resp_parser *p, const uint8_t *s, size_t n)
{
    if (p->line_cap < n + 1) {
        p->line = xrealloc(p->line, n + 1);
        p->line_cap = n + 1;
    }
    uint8_t *out = p->line;
    size_t o = 0;
    size_t i = 0;
    p->argc = 0;
    for (;;) {
        while (i < n && (is_space(s[i]) || s[i] == 0))
            i++;
        if (i >= n)
            return 0;
        size_t start = o;
        int dq = 0, sq = 0, done = 0;
        while (!done) {
            if (dq) {
                if (i >= n)
                    return -1;
                if (s[i] == '\\' && i + 3 < n && s[i + 1] == 'x' && ud_hex_digit(s[i + 2]) >= 0 &&
                    ud_hex_digit(s[i + 3]) >= 0) {
                    out[o++] = (uint8_t)(ud_hex_digit(s[i + 2]) * 16 + ud_hex_digit(s[i + 3]));
                    i += 3;
                } else if (s[i] == '\\' && i + 1 < n) {
                    i++;
                    switch (s[i]) {
                    case 'n':
                        out[o++] = '\n';
                        break;
                    case 'r':
                        out[o++] = '\r';
                        break;
                    case 't':
                        out[o++] = '\t';
                        break;
                    case 'b':
                        out[o++] = '\b';
                        break;
                    case 'a':
                        out[o++] = '\a';
                        break;
                    default:
                        out[o++] = s[i];
                        break;
                    }
                } else if (s[i] == '"') {
                    /* A closing quote must be followed by a space or the end of the line. */
                    if (i + 1 < n && !is_space(s[i + 1]))
                        return -1;
                    done = 1;
                } else {
                    out[o++] = s[i];
                }
            } else if (sq) {
                if (i >= n)
                    return -1;
                if (s[i] == '\\' && i + 1 < n && s[i + 1] == '\'') {
                    i++;
                    out[o++] = '\'';
                } else if (s[i] == '\'') {
                    if (i + 1 < n && !is_space(s[i + 1]))
                        return -1;
                    done = 1;
                } else {
                    out[o++] = s[i];
                }
            } else {
                if (i >= n || is_space(s[i]) || s[i] == 0)
                    done = 1;
                else if (s[i] == '"')
                    dq = 1;
                else if (s[i] == '\'')
                    sq = 1;
                else
                    out[o++] = s[i];
            }
            if (i < n)
                i++;
        }
        ensure_args(p, p->argc + 1);
        p->off[p->argc] = start;
        p->argvlen[p->argc] = o - start;
        p->argc++;
    }
}

static int parse_inline(struct ud_resp_parser *p, const uint8_t *c, size_t n, size_t *used)
{
    size_t window = n < p->max_inline ? n : p->max_inline;
    const uint8_t *nl = memchr(c, '\n', window);
    if (nl == NULL) {
        if (n >= p->max_inline)
            return fail(p, "too big inline request");
        p->need = 0;
        return UD_RESP_NEED_MORE;
    }
    size_t line = (size_t)(nl - c);
    *used = line + 1;
    if (line > 0 && c[line - 1] == '\r')
        line--;
    if (split_inline(p, c, line) != 0)
        return fail(p, "unbalanced quotes in request");
    if (p->argc > p->max_args)
        return fail(p, "invalid multibulk length");
    for (size_t i = 0; i < p->argc; i++)
        p->argv[i] = p->line + p->off[i];
    return UD_RESP_COMMAND;
}

int ud_resp_parse(struct ud_resp_parser *p, const uint8_t *buf, size_t len, size_t *consumed)
{
    size_t skip = 0;
    *consumed = 0;
    for (;;) {
        const uint8_t *c = buf + skip;
        size_t n = len - skip;
        size_t used = 0;
        int rc;
        if (!p->in_multibulk) {
            if (n == 0) {
                p->need = 0;
                *consumed = skip;
                return UD_RESP_NEED_MORE;
            }
            if (c[0] != '*') {
                rc = parse_inline(p, c, n, &used);
                if (rc == UD_RESP_COMMAND && p->argc == 0) {
                    skip += used;
                    continue;
                }
                *consumed = rc == UD_RESP_PROTOCOL ? 0 : rc == UD_RESP_COMMAND ? skip + used : skip;
                return rc;
            }
            p->in_multibulk = 1;
            p->pos = 0;
            p->nargs = 0;
            p->bulk_len = -1;
            p->argc = 0;
        }
        rc = parse_multibulk(p, c, n, &used);
        if (rc == UD_RESP_NEED_MORE) {
            *consumed = skip;
            return rc;
        }
        if (rc == UD_RESP_PROTOCOL)
            return rc;
        size_t argc = p->argc;
        ud_resp_parser_reset(p);
        p->argc = argc;
        if (argc == 0) {
            skip += used;
            continue;
        }
        *consumed = skip + used;
        return UD_RESP_COMMAND;
    }
}
