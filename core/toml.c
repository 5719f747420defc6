/* Strict reader for the TOML subset of our configuration files (see core/toml.h for the subset). */
#include "core/toml.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/err.h"
#include "core/hex.h"

/* Bounds that keep duplicate checks (linear scans) and memory small whatever the input. */
#define MAX_ENTRIES  4096
#define MAX_SECTIONS 512

struct parser {
    const char *p;
    size_t len;
    size_t pos;
    int line;
    const char *section; /* current section name, owned by doc */
    struct ud_toml_doc *doc;
    size_t entries_cap;
    size_t sections_cap;
    char *errmsg;
};

/* A growable string for decoded values. */
struct sbuf {
    char *data;
    size_t len;
    size_t cap;
};

static int fail(struct parser *ps, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(struct parser *ps, int line, const char *fmt, ...)
{
    char what[UD_ERRMSG_SIZE];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return ud_errf(ps->errmsg, UD_EINVAL, "%s:%d: %s", ps->doc->file, line, what);
}

static int oom(struct parser *ps)
{
    return ud_errf(ps->errmsg, UD_ENOMEM, "%s: out of memory", ps->doc->file);
}

static int grow(void **ptr, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    size_t n = *cap ? *cap * 2 : 8;
    while (n < need)
        n *= 2;
    void *q = realloc(*ptr, n * elem);
    if (q == NULL)
        return UD_ENOMEM;
    *ptr = q;
    *cap = n;
    return 0;
}

static int sbuf_put(struct sbuf *b, const char *s, size_t n)
{
    if (grow((void **)&b->data, &b->cap, b->len + n + 1, 1) != 0)
        return UD_ENOMEM;
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

/* --- characters ------------------------------------------------------------------------------ */

static int at_end(const struct parser *ps)
{
    return ps->pos >= ps->len;
}

static int peek(const struct parser *ps)
{
    return at_end(ps) ? -1 : (unsigned char)ps->p[ps->pos];
}

static int peek_at(const struct parser *ps, size_t ahead)
{
    return ps->pos + ahead >= ps->len ? -1 : (unsigned char)ps->p[ps->pos + ahead];
}

static int is_bare(int c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
}

static int is_control(int c)
{
    return (c < 0x20 && c != '\t') || c == 0x7f;
}

/* Describes a character for a message: printable ASCII quoted, anything else as a byte value. */
static const char *describe(int c, char buf[16])
{
    if (c < 0)
        snprintf(buf, 16, "end of file");
    else if (c == '\n')
        snprintf(buf, 16, "end of line");
    else if (c >= 0x21 && c < 0x7f)
        snprintf(buf, 16, "'%c'", c);
    else
        snprintf(buf, 16, "byte 0x%02x", (unsigned)c);
    return buf;
}

/*
 * TOML files are UTF-8. Checking the whole text first keeps the string scanners simple (they copy
 * bytes >= 0x80 as they are) and reports the line of a bad byte. Overlong forms, surrogates and
 * code points above U+10FFFF are refused, as TOML requires.
 */
static int check_utf8(struct parser *ps)
{
    int line = 1;
    const unsigned char *s = (const unsigned char *)ps->p;
    for (size_t i = 0; i < ps->len;) {
        unsigned c = s[i];
        if (c == '\n')
            line++;
        if (c == 0)
            return fail(ps, line, "NUL byte in file");
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t n;
        unsigned cp;
        if (c >= 0xc2 && c <= 0xdf) {
            n = 2;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 3;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 4;
            cp = c & 0x07;
        } else {
            return fail(ps, line, "invalid UTF-8 (byte 0x%02x)", c);
        }
        if (i + n > ps->len)
            return fail(ps, line, "invalid UTF-8 (truncated sequence)");
        for (size_t k = 1; k < n; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return fail(ps, line, "invalid UTF-8 (byte 0x%02x)", s[i + k]);
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10ffff ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return fail(ps, line, "invalid UTF-8 (overlong form or invalid code point)");
        i += n;
    }
    return 0;
}

static void skip_spaces(struct parser *ps)
{
    while (peek(ps) == ' ' || peek(ps) == '\t')
        ps->pos++;
}

/* At '#': consumes the comment up to (not including) the end of line. */
static int skip_comment(struct parser *ps)
{
    while (!at_end(ps) && peek(ps) != '\n') {
        int c = peek(ps);
        if (c == '\r' && peek_at(ps, 1) == '\n')
            break;
        if (is_control(c))
            return fail(ps, ps->line, "control character (0x%02x) in comment", (unsigned)c);
        ps->pos++;
    }
    return 0;
}

/* Consumes "\n" or "\r\n"; returns 1 if one was there. A lone '\r' is left for the caller. */
static int eat_newline(struct parser *ps)
{
    if (peek(ps) == '\n') {
        ps->pos++;
        ps->line++;
        return 1;
    }
    if (peek(ps) == '\r' && peek_at(ps, 1) == '\n') {
        ps->pos += 2;
        ps->line++;
        return 1;
    }
    return 0;
}

/* After a header or a value: optional spaces and comment, then end of line or end of file. */
static int finish_line(struct parser *ps, const char *after)
{
    skip_spaces(ps);
    if (peek(ps) == '#') {
        int rc = skip_comment(ps);
        if (rc != 0)
            return rc;
    }
    if (at_end(ps) || eat_newline(ps))
        return 0;
    char d[16];
    return fail(ps, ps->line, "unexpected %s after %s", describe(peek(ps), d), after);
}

/* Spaces, comments and newlines, as allowed between array items. */
static int skip_blank(struct parser *ps)
{
    for (;;) {
        skip_spaces(ps);
        if (peek(ps) == '#') {
            int rc = skip_comment(ps);
            if (rc != 0)
                return rc;
        }
        if (!eat_newline(ps))
            return 0;
    }
}

/* --- names ----------------------------------------------------------------------------------- */

/* Reads a bare name into a new string; what says "key" or "section name" in messages. */
static int read_name(struct parser *ps, const char *what, char **out)
{
    size_t start = ps->pos;
    while (is_bare(peek(ps)))
        ps->pos++;
    if (ps->pos == start) {
        int c = peek(ps);
        if (c == '"' || c == '\'')
            return fail(ps, ps->line, "quoted %ss are not supported: use letters, digits, _ and -",
                        what);
        char d[16];
        return fail(ps, ps->line, "expected a %s, found %s", what, describe(c, d));
    }
    *out = strndup(ps->p + start, ps->pos - start);
    return *out == NULL ? oom(ps) : 0;
}

/* --- values ---------------------------------------------------------------------------------- */

static void value_free(struct ud_toml_value *v)
{
    free(v->str);
    for (size_t i = 0; i < v->nitems; i++)
        value_free(&v->items[i]);
    free(v->items);
    memset(v, 0, sizeof *v);
}

static size_t utf8_encode(uint32_t cp, char out[4])
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* At the backslash of an escape inside a basic string. */
static int read_escape(struct parser *ps, struct sbuf *b)
{
    ps->pos++;
    int c = peek(ps);
    /* Pairs of (escape letter, byte it stands for). */
    static const char simple_escapes[] = "b\bt\tn\nf\fr\r\"\"\\\\";
    const char *simple = NULL;
    for (size_t i = 0; c > 0 && i + 1 < sizeof simple_escapes; i += 2)
        if (simple_escapes[i] == c)
            simple = &simple_escapes[i + 1];
    if (simple == NULL && c != 'u' && c != 'U') {
        char d[16];
        if (c >= 0x21 && c < 0x7f)
            return fail(ps, ps->line, "invalid escape \\%c in string", c);
        return fail(ps, ps->line, "backslash followed by %s in string", describe(c, d));
    }
    ps->pos++;
    if (simple != NULL)
        return sbuf_put(b, simple, 1) == 0 ? 0 : oom(ps);

    int digits = c == 'u' ? 4 : 8;
    uint32_t cp = 0;
    for (int i = 0; i < digits; i++) {
        int h = ud_hex_digit(peek(ps));
        if (h < 0)
            return fail(ps, ps->line, "\\%c escape needs %d hexadecimal digits", c, digits);
        cp = (cp << 4) | (uint32_t)h;
        ps->pos++;
    }
    if (cp == 0)
        return fail(ps, ps->line, "\\%c escape of NUL is not allowed", c);
    if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return fail(ps, ps->line, "\\%c escape of U+%X: not a Unicode scalar value", c, cp);
    char enc[4];
    size_t n = utf8_encode(cp, enc);
    return sbuf_put(b, enc, n) == 0 ? 0 : oom(ps);
}

/* At the opening quote of a basic ("...") or literal ('...') string. */
static int read_string(struct parser *ps, struct ud_toml_value *v)
{
    int quote = peek(ps);
    if (peek_at(ps, 1) == quote && peek_at(ps, 2) == quote)
        return fail(ps, ps->line, "multi-line strings are not supported");
    ps->pos++;
    struct sbuf b = {0};
    if (sbuf_put(&b, "", 0) != 0)
        return oom(ps);
    int rc = 0;
    for (;;) {
        int c = peek(ps);
        if (c < 0 || c == '\n' || (c == '\r' && peek_at(ps, 1) == '\n')) {
            rc = fail(ps, v->line, "unterminated string");
            break;
        }
        if (c == quote) {
            ps->pos++;
            break;
        }
        if (c == '\\' && quote == '"') {
            if ((rc = read_escape(ps, &b)) != 0)
                break;
            continue;
        }
        if (is_control(c)) {
            rc = fail(ps, ps->line, "control character (0x%02x) in string: use an escape",
                      (unsigned)c);
            break;
        }
        /* Copy a run of plain bytes at once. */
        size_t start = ps->pos;
        while (!at_end(ps) && peek(ps) != quote && peek(ps) != '\\' && !is_control(peek(ps)))
            ps->pos++;
        if (ps->pos == start)
            ps->pos++; /* a backslash inside a literal string */
        if (sbuf_put(&b, ps->p + start, ps->pos - start) != 0) {
            rc = oom(ps);
            break;
        }
    }
    if (rc != 0) {
        free(b.data);
        return rc;
    }
    v->type = UD_TOML_STRING;
    v->str = b.data;
    v->str_len = b.len;
    return 0;
}

/* At a digit or sign: a decimal integer, or a clear refusal of the other TOML number forms. */
static int read_number(struct parser *ps, struct ud_toml_value *v)
{
    size_t start = ps->pos;
    /* The token: everything a TOML number, float or date could be made of. */
    while (!at_end(ps) &&
           (is_bare(peek(ps)) || peek(ps) == '+' || peek(ps) == '.' || peek(ps) == ':'))
        ps->pos++;
    const char *t = ps->p + start;
    size_t n = ps->pos - start;

    size_t i = 0;
    int negative = 0;
    if (t[0] == '+' || t[0] == '-') {
        negative = t[0] == '-';
        i = 1;
    }
    const char *rest = t + i;
    size_t rn = n - i;
    if (rn >= 3 && (memcmp(rest, "inf", 3) == 0 || memcmp(rest, "nan", 3) == 0))
        return fail(ps, v->line, "floats are not supported (use an integer)");
    if (rn >= 2 && rest[0] == '0' && (rest[1] == 'x' || rest[1] == 'o' || rest[1] == 'b'))
        return fail(ps, v->line,
                    "hexadecimal, octal and binary integers are not supported (use decimal)");
    for (size_t k = i; k < n; k++) {
        if (t[k] == ':' || ((t[k] == '-' || t[k] == 'T') && k > i))
            return fail(ps, v->line, "dates and times are not supported");
    }
    for (size_t k = i; k < n; k++) {
        if (t[k] == '.' || t[k] == 'e' || t[k] == 'E')
            return fail(ps, v->line, "floats are not supported (use an integer)");
    }

    uint64_t mag = 0;
    const uint64_t limit = negative ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    int ndigits = 0;
    for (size_t k = i; k < n; k++) {
        char c = t[k];
        if (c == '_') {
            /* Only between two digits. */
            if (k == i || k + 1 >= n || !(t[k - 1] >= '0' && t[k - 1] <= '9') ||
                !(t[k + 1] >= '0' && t[k + 1] <= '9'))
                return fail(ps, v->line, "'_' in an integer must be between two digits");
            continue;
        }
        if (c < '0' || c > '9')
            return fail(ps, v->line, "invalid integer '%.*s'", (int)(n > 40 ? 40 : n), t);
        if (ndigits == 1 && mag == 0)
            return fail(ps, v->line, "leading zeros are not allowed in integers");
        unsigned d = (unsigned)(c - '0');
        if (mag > (limit - d) / 10)
            return fail(ps, v->line, "integer out of range (64-bit signed)");
        mag = mag * 10 + d;
        ndigits++;
    }
    if (ndigits == 0)
        return fail(ps, v->line, "invalid integer '%.*s'", (int)(n > 40 ? 40 : n), t);
    v->type = UD_TOML_INTEGER;
    if (negative)
        v->integer = mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag;
    else
        v->integer = (int64_t)mag;
    return 0;
}

static int read_value(struct parser *ps, struct ud_toml_value *v, int in_array);

/* At '[' of an array value. */
static int read_array(struct parser *ps, struct ud_toml_value *v)
{
    int open_line = ps->line;
    ps->pos++;
    v->type = UD_TOML_ARRAY;
    v->item_type = UD_TOML_STRING;
    size_t cap = 0;
    int rc;
    for (;;) {
        if ((rc = skip_blank(ps)) != 0)
            return rc;
        if (at_end(ps))
            return fail(ps, open_line, "unterminated array");
        if (peek(ps) == ']') {
            ps->pos++;
            return 0;
        }
        if (grow((void **)&v->items, &cap, v->nitems + 1, sizeof *v->items) != 0)
            return oom(ps);
        struct ud_toml_value *item = &v->items[v->nitems];
        memset(item, 0, sizeof *item);
        item->line = ps->line;
        if ((rc = read_value(ps, item, 1)) != 0) {
            value_free(item);
            return rc;
        }
        v->nitems++;
        if (item->type != UD_TOML_STRING && item->type != UD_TOML_INTEGER)
            return fail(ps, item->line, "arrays may hold only strings or integers");
        if (v->nitems == 1)
            v->item_type = item->type;
        else if (item->type != v->item_type)
            return fail(ps, item->line, "array mixes %ss and %ss", ud_toml_type_name(v->item_type),
                        ud_toml_type_name(item->type));
        if ((rc = skip_blank(ps)) != 0)
            return rc;
        if (peek(ps) == ',') {
            ps->pos++;
            continue;
        }
        if (peek(ps) == ']')
            continue;
        if (at_end(ps))
            return fail(ps, open_line, "unterminated array");
        char d[16];
        return fail(ps, ps->line, "expected ',' or ']' in array, found %s", describe(peek(ps), d));
    }
}

static int read_value(struct parser *ps, struct ud_toml_value *v, int in_array)
{
    v->line = ps->line;
    int c = peek(ps);
    char d[16];
    if (c == '"' || c == '\'')
        return read_string(ps, v);
    if ((c >= '0' && c <= '9') || c == '+' || c == '-')
        return read_number(ps, v);
    if (c == '[') {
        if (in_array)
            return fail(ps, ps->line, "nested arrays are not supported");
        return read_array(ps, v);
    }
    if (c == '{')
        return fail(ps, ps->line, "inline tables are not supported");
    if (is_bare(c)) {
        size_t start = ps->pos;
        while (is_bare(peek(ps)))
            ps->pos++;
        size_t n = ps->pos - start;
        const char *w = ps->p + start;
        if (n == 4 && memcmp(w, "true", 4) == 0) {
            v->type = UD_TOML_BOOLEAN;
            v->boolean = 1;
            return 0;
        }
        if (n == 5 && memcmp(w, "false", 5) == 0) {
            v->type = UD_TOML_BOOLEAN;
            v->boolean = 0;
            return 0;
        }
        if ((n == 3 && (memcmp(w, "inf", 3) == 0 || memcmp(w, "nan", 3) == 0)))
            return fail(ps, v->line, "floats are not supported (use an integer)");
        return fail(ps, v->line, "invalid value '%.*s': strings need quotes",
                    (int)(n > 40 ? 40 : n), w);
    }
    return fail(ps, ps->line, "expected a value, found %s", describe(c, d));
}

/* --- lines ----------------------------------------------------------------------------------- */

static int read_header(struct parser *ps)
{
    int line = ps->line;
    ps->pos++;
    if (peek(ps) == '[')
        return fail(ps, line, "arrays of tables ([[...]]) are not supported");
    skip_spaces(ps);
    char *name = NULL;
    int rc = read_name(ps, "section name", &name);
    if (rc != 0)
        return rc;
    skip_spaces(ps);
    if (peek(ps) != ']') {
        char d[16];
        rc = peek(ps) == '.' ? fail(ps, line, "dotted section names are not supported")
                             : fail(ps, line, "expected ']' after section name, found %s",
                                    describe(peek(ps), d));
        free(name);
        return rc;
    }
    ps->pos++;
    struct ud_toml_doc *doc = ps->doc;
    for (size_t i = 0; i < doc->nsections; i++) {
        if (strcmp(doc->sections[i].name, name) == 0) {
            rc = fail(ps, line, "duplicate section [%s] (first at line %d)", name,
                      doc->sections[i].line);
            free(name);
            return rc;
        }
    }
    if (doc->nsections >= MAX_SECTIONS) {
        free(name);
        return fail(ps, line, "too many sections (at most %d)", MAX_SECTIONS);
    }
    if (grow((void **)&doc->sections, &ps->sections_cap, doc->nsections + 1,
             sizeof *doc->sections) != 0) {
        free(name);
        return oom(ps);
    }
    doc->sections[doc->nsections].name = name;
    doc->sections[doc->nsections].line = line;
    doc->nsections++;
    ps->section = name;
    return finish_line(ps, "section header");
}

static int read_keyval(struct parser *ps)
{
    int line = ps->line;
    char *key = NULL;
    int rc = read_name(ps, "key", &key);
    if (rc != 0)
        return rc;
    skip_spaces(ps);
    if (peek(ps) != '=') {
        char d[16];
        rc = peek(ps) == '.' ? fail(ps, line, "dotted keys are not supported")
                             : fail(ps, line, "expected '=' after key %s, found %s", key,
                                    describe(peek(ps), d));
        free(key);
        return rc;
    }
    ps->pos++;
    skip_spaces(ps);

    struct ud_toml_doc *doc = ps->doc;
    for (size_t i = 0; i < doc->nentries; i++) {
        const struct ud_toml_entry *e = &doc->entries[i];
        if (e->section == ps->section && strcmp(e->key, key) == 0) {
            if (ps->section[0] == '\0')
                rc = fail(ps, line, "duplicate key %s (first at line %d)", key, e->line);
            else
                rc = fail(ps, line, "duplicate key %s in [%s] (first at line %d)", key, ps->section,
                          e->line);
            free(key);
            return rc;
        }
    }
    if (doc->nentries >= MAX_ENTRIES) {
        free(key);
        return fail(ps, line, "too many keys (at most %d)", MAX_ENTRIES);
    }
    if (grow((void **)&doc->entries, &ps->entries_cap, doc->nentries + 1, sizeof *doc->entries) !=
        0) {
        free(key);
        return oom(ps);
    }
    struct ud_toml_entry *e = &doc->entries[doc->nentries];
    memset(e, 0, sizeof *e);
    e->section = ps->section;
    e->key = key;
    e->line = line;
    if (at_end(ps) || peek(ps) == '\n' || peek(ps) == '\r' || peek(ps) == '#')
        rc = fail(ps, line, "missing value for key %s", key);
    else
        rc = read_value(ps, &e->value, 0);
    if (rc != 0) {
        value_free(&e->value);
        free(key);
        return rc;
    }
    doc->nentries++;
    return finish_line(ps, "value");
}

/* --- public ---------------------------------------------------------------------------------- */

int ud_toml_parse(const char *text, size_t len, const char *file, struct ud_toml_doc **out,
                  char *errmsg)
{
    *out = NULL;
    struct ud_toml_doc *doc = calloc(1, sizeof *doc);
    if (doc == NULL)
        return ud_errf(errmsg, UD_ENOMEM, "%s: out of memory", file);
    doc->file = strdup(file);
    if (doc->file == NULL) {
        free(doc);
        return ud_errf(errmsg, UD_ENOMEM, "%s: out of memory", file);
    }
    struct parser ps = {
        .p = text, .len = len, .line = 1, .section = "", .doc = doc, .errmsg = errmsg};
    int rc = 0;
    if (len > UD_TOML_MAX_FILE)
        rc = ud_errf(errmsg, UD_EINVAL, "%s: larger than %u bytes", file, UD_TOML_MAX_FILE);
    if (rc == 0)
        rc = check_utf8(&ps);
    /* A byte-order mark is allowed at the very start (some editors write one). */
    if (rc == 0 && len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0)
        ps.pos = 3;
    while (rc == 0) {
        skip_spaces(&ps);
        if (at_end(&ps))
            break;
        int c = peek(&ps);
        if (c == '#') {
            rc = finish_line(&ps, "comment");
        } else if (eat_newline(&ps)) {
            continue;
        } else if (c == '[') {
            rc = read_header(&ps);
        } else if (is_bare(c) || c == '"' || c == '\'') {
            rc = read_keyval(&ps);
        } else {
            char d[16];
            rc = fail(&ps, ps.line, "expected a key or a [section], found %s", describe(c, d));
        }
    }
    if (rc != 0) {
        ud_toml_free(doc);
        return rc;
    }
    *out = doc;
    return 0;
}

int ud_toml_parse_file(const char *path, struct ud_toml_doc **out, char *errmsg)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int code = errno == ENOENT ? UD_ENOTFOUND : UD_EIO;
        return ud_errf(errmsg, code, "%s: %s", path, strerror(errno));
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return ud_errf(errmsg, UD_EIO, "%s: not a regular file", path);
    }
    if (st.st_size > (off_t)UD_TOML_MAX_FILE) {
        close(fd);
        return ud_errf(errmsg, UD_EIO, "%s: larger than %u bytes", path, UD_TOML_MAX_FILE);
    }
    size_t size = (size_t)st.st_size;
    char *text = malloc(size + 1);
    if (text == NULL) {
        close(fd);
        return ud_errf(errmsg, UD_ENOMEM, "%s: out of memory", path);
    }
    size_t got = 0;
    while (got < size) {
        ssize_t r = read(fd, text + got, size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            int e = r < 0 ? errno : EIO;
            free(text);
            close(fd);
            return ud_errf(errmsg, UD_EIO, "%s: read: %s", path, strerror(e));
        }
        got += (size_t)r;
    }
    close(fd);
    int rc = ud_toml_parse(text, size, path, out, errmsg);
    free(text);
    return rc;
}

void ud_toml_free(struct ud_toml_doc *doc)
{
    if (doc == NULL)
        return;
    for (size_t i = 0; i < doc->nentries; i++) {
        free(doc->entries[i].key);
        value_free(&doc->entries[i].value);
    }
    free(doc->entries);
    for (size_t i = 0; i < doc->nsections; i++)
        free(doc->sections[i].name);
    free(doc->sections);
    free(doc->file);
    free(doc);
}

const struct ud_toml_entry *ud_toml_find(const struct ud_toml_doc *doc, const char *section,
                                         const char *key)
{
    for (size_t i = 0; i < doc->nentries; i++) {
        const struct ud_toml_entry *e = &doc->entries[i];
        if (strcmp(e->section, section) == 0 && strcmp(e->key, key) == 0)
            return e;
    }
    return NULL;
}

const char *ud_toml_type_name(enum ud_toml_type type)
{
    switch (type) {
    case UD_TOML_STRING:
        return "string";
    case UD_TOML_INTEGER:
        return "integer";
    case UD_TOML_BOOLEAN:
        return "boolean";
    case UD_TOML_ARRAY:
        return "array";
    }
    return "value";
}
