/* Table-driven configuration shared by the binaries (core/config.h). */
#include "core/config.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/registry.h"

/* Validators return a message that lives in this buffer: the config code is single-threaded. */
static char check_buf[UD_ERRMSG_SIZE];

/* --- validators ------------------------------------------------------------------------------ */

const char *ud_conf_check_not_empty(const struct ud_conf_key *k, const void *field)
{
    (void)k;
    return ((const char *)field)[0] == '\0' ? "must not be empty" : NULL;
}

const char *ud_conf_check_log_level(const struct ud_conf_key *k, const void *field)
{
    (void)k;
    const char *s = field;
    if (strcmp(s, "debug") == 0 || strcmp(s, "info") == 0 || strcmp(s, "warn") == 0 ||
        strcmp(s, "error") == 0)
        return NULL;
    return "expected one of debug, info, warn, error";
}

int ud_conf_split_address(const char *address, char *host, size_t hostsz, int *port, char *errmsg)
{
    const char *colon = strrchr(address, ':');
    if (colon == NULL)
        return ud_errf(errmsg, UD_EINVAL, "expected host:port, found \"%s\"", address);
    const char *h = address;
    size_t hlen = (size_t)(colon - address);
    int bracketed = hlen >= 2 && h[0] == '[' && h[hlen - 1] == ']';
    if (bracketed) {
        h++;
        hlen -= 2;
    }
    if (hlen == 0 || hlen >= hostsz || hlen >= INET6_ADDRSTRLEN)
        return ud_errf(errmsg, UD_EINVAL, "expected host:port, found \"%s\"", address);
    char tmp[INET6_ADDRSTRLEN];
    memcpy(tmp, h, hlen);
    tmp[hlen] = '\0';
    unsigned char buf[16];
    if (bracketed ? inet_pton(AF_INET6, tmp, buf) != 1 : inet_pton(AF_INET, tmp, buf) != 1) {
        if (!bracketed && strchr(tmp, ':') != NULL)
            return ud_errf(errmsg, UD_EINVAL, "IPv6 addresses need brackets: \"[%s]:port\"", tmp);
        return ud_errf(errmsg, UD_EINVAL,
                       "\"%s\" is not an IP address (listeners bind to addresses, not names)", tmp);
    }
    const char *p = colon + 1;
    if (*p == '\0' || strlen(p) > 5 || strspn(p, "0123456789") != strlen(p))
        return ud_errf(errmsg, UD_EINVAL, "port \"%s\" is not a number 0-65535", p);
    long v = strtol(p, NULL, 10);
    if (v > 65535)
        return ud_errf(errmsg, UD_EINVAL, "port %ld is above 65535", v);
    memcpy(host, tmp, hlen + 1);
    *port = (int)v;
    return 0;
}

const char *ud_conf_check_listen(const struct ud_conf_key *k, const void *field)
{
    (void)k;
    char host[INET6_ADDRSTRLEN];
    int port;
    if (ud_conf_split_address(field, host, sizeof host, &port, check_buf) != 0)
        return check_buf;
    return NULL;
}

const char *ud_conf_check_listen_or_off(const struct ud_conf_key *k, const void *field)
{
    return ((const char *)field)[0] == '\0' ? NULL : ud_conf_check_listen(k, field);
}

const char *ud_conf_check_namespace(const struct ud_conf_key *k, const void *field)
{
    (void)k;
    const char *s = field;
    if (s[0] == '\0' || ud_ns_name_valid(s))
        return NULL;
    return "a namespace name is 1-64 characters of A-Z a-z 0-9 _ - (or \"\" for none)";
}

/* --- applying values ------------------------------------------------------------------------- */

static const char *article(enum ud_toml_type t)
{
    return t == UD_TOML_INTEGER || t == UD_TOML_ARRAY ? "an" : "a";
}

int ud_conf_parse_size(const char *s, uint64_t *out)
{
    const char *p = s;
    uint64_t v = 0;
    int digits = 0;
    /* As a TOML integer: '_' only between two digits. */
    for (; (*p >= '0' && *p <= '9') || (*p == '_' && digits > 0 && p[1] >= '0' && p[1] <= '9');
         p++) {
        if (*p == '_')
            continue;
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
        digits++;
    }
    if (digits == 0)
        return -1;
    if (*p == ' ' && p[1] != '\0') /* "16 MiB" */
        p++;
    static const struct {
        const char *unit;
        uint64_t mult;
    } units[] = {{"", 1},
                 {"B", 1},
                 {"KiB", UD_CONF_KIB},
                 {"MiB", UD_CONF_MIB},
                 {"GiB", UD_CONF_GIB},
                 {"TiB", UD_CONF_TIB}};
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcmp(p, units[i].unit) == 0) {
            if (v > UINT64_MAX / units[i].mult)
                return -1;
            *out = v * units[i].mult;
            return 0;
        }
    }
    return -1;
}

static void store_uint(void *field, size_t size, uint64_t v)
{
    if (size == sizeof(uint32_t)) {
        uint32_t x = (uint32_t)v;
        memcpy(field, &x, sizeof x);
    } else {
        memcpy(field, &v, sizeof v);
    }
}

/*
 * Decodes v into k's field of cfg. Returns NULL, or what is wrong; *line is set to the line of
 * the offending item when it is not v's own line (an array item).
 */
static const char *apply(const struct ud_conf_schema *s, void *cfg, const struct ud_conf_key *k,
                         const struct ud_toml_value *v, int *line)
{
    static char msg[UD_ERRMSG_SIZE];
    void *field = (char *)cfg + k->offset;
    *line = v->line;
    const char *err = NULL;
    switch (k->kind) {
    case UD_CONF_STRING:
        if (v->type != UD_TOML_STRING) {
            snprintf(msg, sizeof msg, "expected a string, found %s %s", article(v->type),
                     ud_toml_type_name(v->type));
            return msg;
        }
        if (v->str_len >= k->size) {
            snprintf(msg, sizeof msg, "longer than %zu bytes", k->size - 1);
            return msg;
        }
        {
            /* Validate on a copy so that a refused value leaves the field as it was. */
            char old[1024];
            memcpy(old, field, k->size);
            memcpy(field, v->str, v->str_len + 1);
            err = k->check != NULL ? k->check(k, field) : NULL;
            if (err != NULL) {
                memcpy(field, old, k->size);
                snprintf(msg, sizeof msg, "\"%s\": %s", v->str, err);
                return msg;
            }
        }
        break;

    case UD_CONF_UINT:
    case UD_CONF_SIZE: {
        uint64_t x;
        if (v->type == UD_TOML_INTEGER) {
            if (v->integer < 0) {
                snprintf(msg, sizeof msg, "%" PRId64 " is negative", v->integer);
                return msg;
            }
            x = (uint64_t)v->integer;
        } else if (k->kind == UD_CONF_SIZE && v->type == UD_TOML_STRING) {
            if (ud_conf_parse_size(v->str, &x) != 0) {
                snprintf(msg, sizeof msg,
                         "\"%s\": expected a size such as 65536, \"64KiB\", \"16MiB\" or \"1GiB\"",
                         v->str);
                return msg;
            }
        } else {
            snprintf(msg, sizeof msg, "expected %s, found %s %s",
                     k->kind == UD_CONF_SIZE ? "a size (integer bytes or \"64MiB\")" : "an integer",
                     article(v->type), ud_toml_type_name(v->type));
            return msg;
        }
        if (x < k->min || x > k->max) {
            snprintf(msg, sizeof msg, "%" PRIu64 " is out of range %" PRIu64 "..%" PRIu64, x,
                     k->min, k->max);
            return msg;
        }
        store_uint(field, k->size, x);
        break;
    }

    case UD_CONF_SYNC: {
        static const char *const names[] = {[UD_WAL_SYNC_ALWAYS] = "always",
                                            [UD_WAL_SYNC_INTERVAL] = "interval",
                                            [UD_WAL_SYNC_NONE] = "none"};
        int found = 0;
        if (v->type == UD_TOML_STRING) {
            for (int i = 0; i < 3 && !found; i++) {
                if (strcmp(v->str, names[i]) == 0) {
                    enum ud_wal_sync_mode m = (enum ud_wal_sync_mode)i;
                    memcpy(field, &m, sizeof m);
                    found = 1;
                }
            }
        }
        if (!found)
            return "expected \"always\", \"interval\" or \"none\"";
        break;
    }

    case UD_CONF_CUSTOM:
        err = k->custom(cfg, k, v, line);
        if (err != NULL)
            return err;
        break;
    }
    struct ud_conf_origin *o = (struct ud_conf_origin *)((char *)cfg + s->origin);
    o->line[k - s->keys] = v->line > 0 ? v->line : -1;
    if (s->on_set != NULL)
        s->on_set(cfg, k, v->line);
    return NULL;
}

int ud_conf_check_http(const struct ud_conf_schema *s, const void *cfg, const char *tls_cert,
                       const char *tls_key, const struct ud_conf_listener *l, size_t n,
                       char *errmsg)
{
    char a[1200], b[1200];
    if ((tls_cert[0] == '\0') != (tls_key[0] == '\0'))
        return ud_errf(
            errmsg, UD_EINVAL, "%s is set without %s: set both",
            ud_conf_where(s, cfg, "http", tls_cert[0] ? "tls_cert" : "tls_key", a, sizeof a),
            tls_cert[0] ? "tls_key" : "tls_cert");
    for (size_t i = 0; i < n; i++) {
        for (size_t j = i + 1; j < n; j++) {
            const char *x = l[i].addr;
            size_t lx = strlen(x);
            if (lx == 0 || strcmp(x, l[j].addr) != 0 || (lx >= 2 && strcmp(x + lx - 2, ":0") == 0))
                continue;
            return ud_errf(errmsg, UD_EINVAL, "%s and %s are both %s",
                           ud_conf_where(s, cfg, l[i].section, l[i].name, a, sizeof a),
                           ud_conf_where(s, cfg, l[j].section, l[j].name, b, sizeof b), x);
        }
    }
    return 0;
}

const char *ud_conf_where(const struct ud_conf_schema *s, const void *cfg, const char *section,
                          const char *name, char *buf, size_t size)
{
    const struct ud_conf_origin *o = (const struct ud_conf_origin *)((const char *)cfg + s->origin);
    int line = 0;
    for (size_t i = 0; i < s->nkeys; i++)
        if (strcmp(s->keys[i].section, section) == 0 && strcmp(s->keys[i].name, name) == 0)
            line = o->line[i];
    if (line > 0)
        snprintf(buf, size, "%s:%d: [%s] %s", o->file, line, section, name);
    else
        snprintf(buf, size, "[%s] %s%s", section, name, line < 0 ? " (set by a flag)" : "");
    return buf;
}

/* Edit distance, to suggest the key a typo meant. Bounded: key names are short. */
static size_t distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 40 || lb > 40)
        return 99;
    size_t row[41];
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            if (row[j] + 1 < best)
                best = row[j] + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

static const struct ud_conf_key *find_key(const struct ud_conf_schema *s, const char *section,
                                          const char *name)
{
    for (size_t i = 0; i < s->nkeys; i++)
        if (strcmp(s->keys[i].section, section) == 0 && strcmp(s->keys[i].name, name) == 0)
            return &s->keys[i];
    return NULL;
}

static int is_reserved(const struct ud_conf_schema *s, const char *name)
{
    return s->reserved != NULL && strcmp(name, s->reserved) == 0;
}

static int known_section(const struct ud_conf_schema *s, const char *name)
{
    for (size_t i = 0; i < s->nsections; i++)
        if (strcmp(s->sections[i], name) == 0)
            return 1;
    return is_reserved(s, name);
}

static int unknown_key(const struct ud_conf_schema *s, char *errmsg, const char *where,
                       const char *section, const char *name)
{
    const struct ud_conf_key *best = NULL;
    size_t best_d = 3; /* suggest only close matches */
    for (size_t i = 0; i < s->nkeys; i++) {
        if (strcmp(s->keys[i].section, section) != 0)
            continue;
        size_t d = distance(name, s->keys[i].name);
        if (d < best_d) {
            best_d = d;
            best = &s->keys[i];
        }
    }
    if (best != NULL)
        return ud_errf(errmsg, UD_EINVAL, "%s[%s] unknown key %s (did you mean %s?)", where,
                       section, name, best->name);
    return ud_errf(errmsg, UD_EINVAL, "%s[%s] unknown key %s", where, section, name);
}

static void section_list(const struct ud_conf_schema *s, char *out, size_t size)
{
    size_t n = 0;
    out[0] = '\0';
    for (size_t i = 0; i < s->nsections && n < size; i++)
        n += (size_t)snprintf(out + n, size - n, "%s%s", i ? ", " : "", s->sections[i]);
    if (s->reserved != NULL && n < size)
        snprintf(out + n, size - n, ", %s", s->reserved);
}

/* only: NULL applies every section but the reserved one; else only that section. */
static int load(const struct ud_conf_schema *s, void *cfg, const char *path, const char *only,
                char *errmsg)
{
    struct ud_toml_doc *doc = NULL;
    int rc = ud_toml_parse_file(path, &doc, errmsg);
    if (rc != 0)
        return rc;

    /* Work on a copy: a file with an error changes nothing. */
    void *next = malloc(s->cfg_size);
    if (next == NULL) {
        ud_toml_free(doc);
        return ud_errf(errmsg, UD_ENOMEM, "%s: out of memory", path);
    }
    memcpy(next, cfg, s->cfg_size);
    /* Lines of an earlier file would point into the wrong file: only this one is named. */
    struct ud_conf_origin *o = (struct ud_conf_origin *)((char *)next + s->origin);
    for (size_t i = 0; i < s->nkeys; i++)
        if (o->line[i] > 0)
            o->line[i] = 0;
    snprintf(o->file, sizeof o->file, "%s", path);

    char list[256];
    section_list(s, list, sizeof list);
    for (size_t i = 0; i < doc->nsections && rc == 0; i++) {
        if (!known_section(s, doc->sections[i].name))
            rc = ud_errf(errmsg, UD_EINVAL, "%s:%d: unknown section [%s] (sections: %s)", doc->file,
                         doc->sections[i].line, doc->sections[i].name, list);
    }
    for (size_t i = 0; i < doc->nentries && rc == 0; i++) {
        const struct ud_toml_entry *e = &doc->entries[i];
        char where[1100];
        snprintf(where, sizeof where, "%s:%d: ", doc->file, e->line);
        if (e->section[0] == '\0') {
            const char *home = NULL;
            for (size_t j = 0; j < s->nkeys && home == NULL; j++)
                if (strcmp(s->keys[j].name, e->key) == 0)
                    home = s->keys[j].section;
            if (home != NULL)
                rc = ud_errf(errmsg, UD_EINVAL,
                             "%skey %s is outside any section (it belongs in [%s])", where, e->key,
                             home);
            else
                rc = ud_errf(errmsg, UD_EINVAL, "%skey %s is outside any section", where, e->key);
            break;
        }
        if (only != NULL ? strcmp(e->section, only) != 0 : is_reserved(s, e->section))
            continue; /* read by the other binary, or by the other pass */
        const struct ud_conf_key *k = find_key(s, e->section, e->key);
        if (k == NULL) {
            rc = unknown_key(s, errmsg, where, e->section, e->key);
            break;
        }
        int line;
        const char *err = apply(s, next, k, &e->value, &line);
        if (err != NULL)
            rc = ud_errf(errmsg, UD_EINVAL, "%s:%d: [%s] %s: %s", doc->file, line, k->section,
                         k->name, err);
    }
    if (rc == 0)
        memcpy(cfg, next, s->cfg_size);
    free(next);
    ud_toml_free(doc);
    return rc;
}

int ud_conf_load(const struct ud_conf_schema *s, void *cfg, const char *path, char *errmsg)
{
    return load(s, cfg, path, NULL, errmsg);
}

int ud_conf_load_section(const struct ud_conf_schema *s, void *cfg, const char *path,
                         const char *section, char *errmsg)
{
    return load(s, cfg, path, section, errmsg);
}

int ud_conf_set(const struct ud_conf_schema *s, void *cfg, const char *name, const char *value,
                char *errmsg)
{
    const char *dot = strchr(name, '.');
    char section[32];
    if (dot == NULL || (size_t)(dot - name) >= sizeof section)
        return ud_errf(errmsg, UD_EINVAL, "%s: expected section.key", name);
    memcpy(section, name, (size_t)(dot - name));
    section[dot - name] = '\0';
    const struct ud_conf_key *k = find_key(s, section, dot + 1);
    if (k == NULL) {
        if (!known_section(s, section) || is_reserved(s, section))
            return ud_errf(errmsg, UD_EINVAL, "%s: unknown section [%s]", name, section);
        {
            char where[80];
            snprintf(where, sizeof where, "%.60s: ", name);
            return unknown_key(s, errmsg, where, section, dot + 1);
        }
    }
    struct ud_toml_value v;
    memset(&v, 0, sizeof v);
    v.line = 0;
    /* For a numeric key, a value written as a TOML integer is one (negative too), so that it
     * meets the checks and messages a file's value meets; anything else is a string (a size such
     * as "64MiB"). Every other key takes the text as it is ("--set raft.cluster_id=2024"). */
    const char *digits = value + (value[0] == '-');
    size_t nd = strlen(digits);
    int numeric = k->kind == UD_CONF_UINT || k->kind == UD_CONF_SIZE;
    if (numeric && digits[0] >= '0' && digits[0] <= '9' && strspn(digits, "0123456789_") == nd) {
        if (digits[nd - 1] == '_' || strstr(digits, "__") != NULL)
            return ud_errf(errmsg, UD_EINVAL,
                           "%s: %s: '_' in an integer must be between two digits", name, value);
        uint64_t x;
        if (ud_conf_parse_size(digits, &x) != 0 || x > (uint64_t)INT64_MAX + (value[0] == '-'))
            return ud_errf(errmsg, UD_EINVAL, "%s: %s does not fit in a 64-bit integer", name,
                           value);
        v.type = UD_TOML_INTEGER;
        v.integer = value[0] == '-' ? (int64_t)(0 - x) : (int64_t)x;
    } else {
        v.type = UD_TOML_STRING;
        v.str = (char *)value;
        v.str_len = strlen(value);
    }
    int line;
    const char *err = apply(s, cfg, k, &v, &line);
    if (err != NULL)
        return ud_errf(errmsg, UD_EINVAL, "%s: %s", name, err);
    return 0;
}
