/* unison-writer configuration: one table of every key, applied from TOML files and flags alike. */
#include "writer/config.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/registry.h"
#include "core/toml.h"
#include "proto/command.h"

#define KIB (UINT64_C(1) << 10)
#define MIB (UINT64_C(1) << 20)
#define GIB (UINT64_C(1) << 30)
#define TIB (UINT64_C(1) << 40)

enum kind {
    K_STRING, /* char[size] */
    K_UINT,   /* uint32_t or uint64_t (size says which), integer within [min, max] */
    K_SIZE,   /* like K_UINT (or size_t), also "64MiB" strings */
    K_SYNC,   /* enum ud_wal_sync_mode from "always" | "interval" | "none" */
    K_PEERS,  /* ["id@host:port", ...] into peers/npeers */
};

struct key;

/* Checks a decoded value already stored at its field; returns NULL or what is wrong. */
typedef const char *(*validator)(const struct key *k, const void *field);

struct key {
    const char *section;
    const char *name;
    enum kind kind;
    size_t offset;
    size_t size;
    uint64_t min, max; /* K_UINT, K_SIZE */
    validator check;
};

static const char *check_log_level(const struct key *k, const void *field);
static const char *check_listen(const struct key *k, const void *field);
static const char *check_listen_or_off(const struct key *k, const void *field);
static const char *check_raft_address(const struct key *k, const void *field);
static const char *check_raft_address_or_unset(const struct key *k, const void *field);
static const char *check_cluster_id(const struct key *k, const void *field);
static const char *check_namespace(const struct key *k, const void *field);
static const char *check_not_empty(const struct key *k, const void *field);

#define FIELD(f) offsetof(struct ud_writer_config, f), sizeof(((struct ud_writer_config *)0)->f)
#define STR(s, n, f, v)                                                                            \
    {                                                                                              \
        s, n, K_STRING, FIELD(f), 0, 0, v                                                          \
    }
#define UINT(s, n, f, lo, hi)                                                                      \
    {                                                                                              \
        s, n, K_UINT, FIELD(f), lo, hi, NULL                                                       \
    }
#define SIZE(s, n, f, lo, hi)                                                                      \
    {                                                                                              \
        s, n, K_SIZE, FIELD(f), lo, hi, NULL                                                       \
    }

/* Every key of every section, in the order docs/configuration.md lists them. */
static const struct key keys[] = {
    STR("server", "data_dir", data_dir, check_not_empty),
    STR("server", "ports_file", ports_file, NULL),
    STR("server", "log_level", log_level, check_log_level),
    STR("server", "default_namespace", default_namespace, check_namespace),
    UINT("server", "shutdown_timeout_ms", shutdown_timeout_ms, 0, 3600000),

    STR("http", "listen", http_listen, check_listen),
    STR("http", "tls_listen", tls_listen, check_listen),
    STR("http", "tls_cert", tls_cert, NULL),
    STR("http", "tls_key", tls_key, NULL),
    SIZE("http", "max_body", max_body, 4 * KIB, UD_WRITER_MAX_BODY_LIMIT),
    STR("http", "backup_root", backup_root, check_not_empty),

    STR("resp", "listen", resp_listen, check_listen_or_off),

    UINT("raft", "node_id", node_id, 1, UINT64_MAX),
    STR("raft", "listen", raft_listen, check_raft_address),
    STR("raft", "advertise", raft_advertise, check_raft_address_or_unset),
    STR("raft", "cluster_id", cluster_id, check_cluster_id),
    {"raft", "peers", K_PEERS, FIELD(peers), 0, 0, NULL},
    UINT("raft", "election_timeout_ms", election_timeout_ms, 100, 60000),
    UINT("raft", "heartbeat_timeout_ms", heartbeat_timeout_ms, 10, 10000),
    UINT("raft", "snapshot_threshold", snapshot_threshold, 1, 1000000),
    UINT("raft", "snapshot_trailing", snapshot_trailing, 0, 1000000),

    /* A group-committed entry is one raft command, which has a hard cap. */
    SIZE("write", "commit_max_bytes", commit_max_bytes, 64 * KIB, UD_COMMAND_MAX_SIZE),
    UINT("write", "commit_max_inflight", commit_max_inflight, 1, 64),
    UINT("write", "admission_timeout_ms", admission_timeout_ms, 0, 60000),
    UINT("write", "txn_idle_timeout_ms", txn_idle_timeout_ms, 1000, 86400000),

    {"storage", "sync_mode", K_SYNC, FIELD(engine.sync_mode), 0, 0, NULL},
    UINT("storage", "sync_interval_ms", engine.sync_interval_ms, 1, 60000),
    SIZE("storage", "segment_size", engine.segment_size, UD_WAL_MIN_SEGMENT_SIZE, 4 * GIB),
    SIZE("storage", "memtable_bytes", engine.memtable_bytes, 1 * MIB, 64 * GIB),
    UINT("storage", "max_sealed", engine.max_sealed, 1, 64),
    SIZE("storage", "txn_max_bytes", engine.txn_max_bytes, 1 * MIB, 64 * GIB),
    SIZE("storage", "map_size", engine.map_size, 16 * MIB, 256 * TIB),
    UINT("storage", "retention_max_segments", engine.retention.max_segments, 0, 1000000000),
    UINT("storage", "retention_max_age_ms", engine.retention.max_age_ms, 0, UINT64_MAX),
};

/* Sections the writer reads, and the one it accepts for the relayer binary without reading. */
static const char *const sections[] = {"server", "http", "resp", "raft", "write", "storage"};
#define RESERVED_SECTION "relayer"

/* --- defaults -------------------------------------------------------------------------------- */

void ud_writer_config_defaults(struct ud_writer_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    snprintf(cfg->data_dir, sizeof cfg->data_dir, "./unison-data");
    snprintf(cfg->log_level, sizeof cfg->log_level, "info");
    snprintf(cfg->default_namespace, sizeof cfg->default_namespace, "default");
    cfg->shutdown_timeout_ms = 30000;

    snprintf(cfg->http_listen, sizeof cfg->http_listen, "127.0.0.1:4000");
    snprintf(cfg->tls_listen, sizeof cfg->tls_listen, "127.0.0.1:4443");
    cfg->max_body = 1048576;
    snprintf(cfg->backup_root, sizeof cfg->backup_root, "./unison-data/" UD_WRITER_BACKUP_SUBDIR);

    snprintf(cfg->resp_listen, sizeof cfg->resp_listen, "127.0.0.1:6380");

    cfg->node_id = 1;
    snprintf(cfg->raft_listen, sizeof cfg->raft_listen, "127.0.0.1:4100");
    snprintf(cfg->cluster_id, sizeof cfg->cluster_id, "unison");
    cfg->election_timeout_ms = 1000;
    cfg->heartbeat_timeout_ms = 100;
    cfg->snapshot_threshold = 128;
    cfg->snapshot_trailing = 64;

    cfg->commit_max_bytes = 1u << 20;
    cfg->commit_max_inflight = 4;
    cfg->admission_timeout_ms = 2000;
    cfg->txn_idle_timeout_ms = 60000;

    cfg->engine.sync_mode = UD_WAL_SYNC_NONE;
    cfg->engine.sync_interval_ms = 100;
    cfg->engine.segment_size = UD_WAL_DEFAULT_SEGMENT_SIZE;
    cfg->engine.memtable_bytes = 64u << 20;
    cfg->engine.max_sealed = 2;
    cfg->engine.txn_max_bytes = 64u << 20;
    cfg->engine.map_size = 1u << 30;
    cfg->engine.txn_idle_timeout_ms = cfg->txn_idle_timeout_ms;
}

/* --- validators ------------------------------------------------------------------------------ */

static const char *check_not_empty(const struct key *k, const void *field)
{
    (void)k;
    return ((const char *)field)[0] == '\0' ? "must not be empty" : NULL;
}

static const char *check_log_level(const struct key *k, const void *field)
{
    (void)k;
    const char *s = field;
    if (strcmp(s, "debug") == 0 || strcmp(s, "info") == 0 || strcmp(s, "warn") == 0 ||
        strcmp(s, "error") == 0)
        return NULL;
    return "expected one of debug, info, warn, error";
}

int ud_writer_config_split_address(const char *address, char *host, size_t hostsz, int *port,
                                   char *errmsg)
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

/* Validators return a message that lives in this buffer: the config code is single-threaded. */
static char check_buf[UD_ERRMSG_SIZE];

static const char *check_listen(const struct key *k, const void *field)
{
    (void)k;
    char host[INET6_ADDRSTRLEN];
    int port;
    if (ud_writer_config_split_address(field, host, sizeof host, &port, check_buf) != 0)
        return check_buf;
    return NULL;
}

static const char *check_listen_or_off(const struct key *k, const void *field)
{
    return ((const char *)field)[0] == '\0' ? NULL : check_listen(k, field);
}

/* raft_uv's TCP transport takes an IPv4 dotted quad and a port (raft/uv.h). */
static int raft_address_ok(const char *address, int allow_port0)
{
    char host[INET6_ADDRSTRLEN];
    int port;
    if (ud_writer_config_split_address(address, host, sizeof host, &port, check_buf) != 0)
        return 0;
    if (strchr(host, ':') != NULL) {
        snprintf(check_buf, sizeof check_buf, "raft needs an IPv4 address, found \"%s\"", host);
        return 0;
    }
    if (port == 0 && !allow_port0) {
        snprintf(check_buf, sizeof check_buf, "port 0 cannot be reached: give the real port");
        return 0;
    }
    return 1;
}

static const char *check_raft_address(const struct key *k, const void *field)
{
    (void)k;
    return raft_address_ok(field, 1) ? NULL : check_buf;
}

static const char *check_raft_address_or_unset(const struct key *k, const void *field)
{
    (void)k;
    if (((const char *)field)[0] == '\0')
        return NULL;
    return raft_address_ok(field, 0) ? NULL : check_buf;
}

static const char *check_cluster_id(const struct key *k, const void *field)
{
    (void)k;
    const char *s = field;
    size_t n = strlen(s);
    if (n == 0 || n > 63 ||
        strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") != n)
        return "expected 1-63 characters of A-Z a-z 0-9 _ . -";
    return NULL;
}

static const char *check_namespace(const struct key *k, const void *field)
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

/* "64MiB", "1 GiB", "512KiB", "4096" or "4096B". */
static int parse_size(const char *s, uint64_t *out)
{
    const char *p = s;
    uint64_t v = 0;
    int digits = 0;
    for (; (*p >= '0' && *p <= '9') || (*p == '_' && digits > 0); p++) {
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
    while (*p == ' ')
        p++;
    static const struct {
        const char *unit;
        uint64_t mult;
    } units[] = {{"", 1}, {"B", 1}, {"KiB", KIB}, {"MiB", MIB}, {"GiB", GIB}, {"TiB", TIB}};
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

/* "id@a.b.c.d:port" */
static const char *parse_peer(const char *s, struct ud_raft_peer *peer)
{
    const char *at = strchr(s, '@');
    if (at == NULL || at == s || (size_t)(at - s) > 20 ||
        strspn(s, "0123456789") != (size_t)(at - s))
        return "expected \"id@host:port\" with a decimal id";
    uint64_t id = strtoull(s, NULL, 10);
    if (id == 0 || (s[0] == '0'))
        return "a peer id is a decimal number from 1, without leading zeros";
    if (strlen(at + 1) >= sizeof peer->address)
        return "peer address too long";
    if (!raft_address_ok(at + 1, 0))
        return check_buf;
    peer->id = id;
    snprintf(peer->address, sizeof peer->address, "%s", at + 1);
    return NULL;
}

static const char *apply_peers(struct ud_writer_config *cfg, const struct ud_toml_value *v,
                               int *line)
{
    static char msg[UD_ERRMSG_SIZE];
    if (v->type != UD_TOML_ARRAY || (v->nitems > 0 && v->item_type != UD_TOML_STRING))
        return "expected an array of \"id@host:port\"";
    if (v->nitems > UD_MAX_PEERS) {
        snprintf(msg, sizeof msg, "at most %d peers (raft voters), found %zu", UD_MAX_PEERS,
                 v->nitems);
        return msg;
    }
    struct ud_raft_peer peers[UD_MAX_PEERS];
    for (size_t i = 0; i < v->nitems; i++) {
        *line = v->items[i].line;
        const char *err = parse_peer(v->items[i].str, &peers[i]);
        if (err != NULL) {
            snprintf(msg, sizeof msg, "\"%s\": %s", v->items[i].str, err);
            return msg;
        }
        for (size_t j = 0; j < i; j++) {
            if (peers[j].id == peers[i].id) {
                snprintf(msg, sizeof msg, "peer id %" PRIu64 " appears twice", peers[i].id);
                return msg;
            }
            if (strcmp(peers[j].address, peers[i].address) == 0) {
                snprintf(msg, sizeof msg, "address %s appears twice", peers[i].address);
                return msg;
            }
        }
    }
    memcpy(cfg->peers, peers, v->nitems * sizeof peers[0]);
    cfg->npeers = (unsigned)v->nitems;
    return NULL;
}

/*
 * Decodes v into k's field of cfg. Returns NULL, or what is wrong; *line is set to the line of
 * the offending item when it is not v's own line (an array item).
 */
static const char *apply(struct ud_writer_config *cfg, const struct key *k,
                         const struct ud_toml_value *v, int *line)
{
    static char msg[UD_ERRMSG_SIZE];
    void *field = (char *)cfg + k->offset;
    *line = v->line;
    switch (k->kind) {
    case K_STRING:
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
            const char *err = k->check != NULL ? k->check(k, field) : NULL;
            if (err != NULL) {
                memcpy(field, old, k->size);
                snprintf(msg, sizeof msg, "\"%s\": %s", v->str, err);
                return msg;
            }
        }
        if (strcmp(k->name, "backup_root") == 0)
            cfg->backup_root_set = 1;
        return NULL;

    case K_UINT:
    case K_SIZE: {
        uint64_t x;
        if (v->type == UD_TOML_INTEGER) {
            if (v->integer < 0) {
                snprintf(msg, sizeof msg, "%" PRId64 " is negative", v->integer);
                return msg;
            }
            x = (uint64_t)v->integer;
        } else if (k->kind == K_SIZE && v->type == UD_TOML_STRING) {
            if (parse_size(v->str, &x) != 0) {
                snprintf(msg, sizeof msg,
                         "\"%s\": expected a size such as 65536, \"64KiB\", \"16MiB\" or \"1GiB\"",
                         v->str);
                return msg;
            }
        } else {
            snprintf(msg, sizeof msg, "expected %s, found %s %s",
                     k->kind == K_SIZE ? "a size (integer bytes or \"64MiB\")" : "an integer",
                     article(v->type), ud_toml_type_name(v->type));
            return msg;
        }
        if (x < k->min || x > k->max) {
            snprintf(msg, sizeof msg, "%" PRIu64 " is out of range %" PRIu64 "..%" PRIu64, x,
                     k->min, k->max);
            return msg;
        }
        store_uint(field, k->size, x);
        return NULL;
    }

    case K_SYNC: {
        static const char *const names[] = {[UD_WAL_SYNC_ALWAYS] = "always",
                                            [UD_WAL_SYNC_INTERVAL] = "interval",
                                            [UD_WAL_SYNC_NONE] = "none"};
        if (v->type == UD_TOML_STRING) {
            for (int i = 0; i < 3; i++) {
                if (strcmp(v->str, names[i]) == 0) {
                    cfg->engine.sync_mode = (enum ud_wal_sync_mode)i;
                    return NULL;
                }
            }
        }
        return "expected \"always\", \"interval\" or \"none\"";
    }

    case K_PEERS:
        return apply_peers(cfg, v, line);
    }
    return "unhandled key";
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

static const struct key *find_key(const char *section, const char *name)
{
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if (strcmp(keys[i].section, section) == 0 && strcmp(keys[i].name, name) == 0)
            return &keys[i];
    return NULL;
}

static int known_section(const char *name)
{
    for (size_t i = 0; i < sizeof sections / sizeof sections[0]; i++)
        if (strcmp(sections[i], name) == 0)
            return 1;
    return strcmp(name, RESERVED_SECTION) == 0;
}

static int unknown_key(char *errmsg, const char *where, const char *section, const char *name)
{
    const struct key *best = NULL;
    size_t best_d = 3; /* suggest only close matches */
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        if (strcmp(keys[i].section, section) != 0)
            continue;
        size_t d = distance(name, keys[i].name);
        if (d < best_d) {
            best_d = d;
            best = &keys[i];
        }
    }
    if (best != NULL)
        return ud_errf(errmsg, UD_EINVAL, "%s[%s] unknown key %s (did you mean %s?)", where,
                       section, name, best->name);
    return ud_errf(errmsg, UD_EINVAL, "%s[%s] unknown key %s", where, section, name);
}

int ud_writer_config_load(struct ud_writer_config *cfg, const char *path, char *errmsg)
{
    struct ud_toml_doc *doc = NULL;
    int rc = ud_toml_parse_file(path, &doc, errmsg);
    if (rc != 0)
        return rc;

    /* Work on a copy: a file with an error changes nothing. */
    struct ud_writer_config *next = malloc(sizeof *next);
    if (next == NULL) {
        ud_toml_free(doc);
        return ud_errf(errmsg, UD_ENOMEM, "%s: out of memory", path);
    }
    *next = *cfg;

    for (size_t i = 0; i < doc->nsections && rc == 0; i++) {
        if (!known_section(doc->sections[i].name))
            rc = ud_errf(errmsg, UD_EINVAL,
                         "%s:%d: unknown section [%s] (sections: server, http, resp, raft, write, "
                         "storage, relayer)",
                         doc->file, doc->sections[i].line, doc->sections[i].name);
    }
    for (size_t i = 0; i < doc->nentries && rc == 0; i++) {
        const struct ud_toml_entry *e = &doc->entries[i];
        char where[1100];
        snprintf(where, sizeof where, "%s:%d: ", doc->file, e->line);
        if (e->section[0] == '\0') {
            const char *home = NULL;
            for (size_t j = 0; j < sizeof keys / sizeof keys[0] && home == NULL; j++)
                if (strcmp(keys[j].name, e->key) == 0)
                    home = keys[j].section;
            if (home != NULL)
                rc = ud_errf(errmsg, UD_EINVAL,
                             "%skey %s is outside any section (it belongs in [%s])", where, e->key,
                             home);
            else
                rc = ud_errf(errmsg, UD_EINVAL, "%skey %s is outside any section", where, e->key);
            break;
        }
        if (strcmp(e->section, RESERVED_SECTION) == 0)
            continue; /* read by unison-relayer, which checks its own keys */
        const struct key *k = find_key(e->section, e->key);
        if (k == NULL) {
            rc = unknown_key(errmsg, where, e->section, e->key);
            break;
        }
        int line;
        const char *err = apply(next, k, &e->value, &line);
        if (err != NULL)
            rc = ud_errf(errmsg, UD_EINVAL, "%s:%d: [%s] %s: %s", doc->file, line, k->section,
                         k->name, err);
    }
    if (rc == 0)
        *cfg = *next;
    free(next);
    ud_toml_free(doc);
    return rc;
}

int ud_writer_config_set(struct ud_writer_config *cfg, const char *name, const char *value,
                         char *errmsg)
{
    const char *dot = strchr(name, '.');
    char section[32];
    if (dot == NULL || (size_t)(dot - name) >= sizeof section)
        return ud_errf(errmsg, UD_EINVAL, "%s: expected section.key", name);
    memcpy(section, name, (size_t)(dot - name));
    section[dot - name] = '\0';
    const struct key *k = find_key(section, dot + 1);
    if (k == NULL) {
        if (!known_section(section) || strcmp(section, RESERVED_SECTION) == 0)
            return ud_errf(errmsg, UD_EINVAL, "%s: unknown section [%s]", name, section);
        return unknown_key(errmsg, "", section, dot + 1);
    }
    if (k->kind == K_PEERS)
        return ud_errf(errmsg, UD_EINVAL, "%s: set peers in the configuration file", name);

    struct ud_toml_value v;
    memset(&v, 0, sizeof v);
    v.line = 0;
    int numeric = k->kind == K_UINT || k->kind == K_SIZE;
    if (numeric && value[0] != '\0' && strspn(value, "0123456789_") == strlen(value)) {
        uint64_t x;
        if (parse_size(value, &x) != 0 || x > INT64_MAX)
            return ud_errf(errmsg, UD_EINVAL, "%s: %s is out of range", name, value);
        v.type = UD_TOML_INTEGER;
        v.integer = (int64_t)x;
    } else {
        v.type = UD_TOML_STRING;
        v.str = (char *)value;
        v.str_len = strlen(value);
    }
    int line;
    const char *err = apply(cfg, k, &v, &line);
    if (err != NULL)
        return ud_errf(errmsg, UD_EINVAL, "%s: %s", name, err);
    return 0;
}

int ud_writer_config_finish(struct ud_writer_config *cfg, char *errmsg)
{
    if (!cfg->backup_root_set) {
        int n = snprintf(cfg->backup_root, sizeof cfg->backup_root, "%s/%s", cfg->data_dir,
                         UD_WRITER_BACKUP_SUBDIR);
        if (n < 0 || (size_t)n >= sizeof cfg->backup_root)
            return ud_errf(errmsg, UD_EINVAL, "[server] data_dir: too long");
    }
    if (cfg->heartbeat_timeout_ms >= cfg->election_timeout_ms)
        return ud_errf(errmsg, UD_EINVAL,
                       "[raft] heartbeat_timeout_ms (%u) must be below election_timeout_ms (%u)",
                       cfg->heartbeat_timeout_ms, cfg->election_timeout_ms);
    if (cfg->snapshot_trailing > cfg->snapshot_threshold)
        return ud_errf(errmsg, UD_EINVAL,
                       "[raft] snapshot_trailing (%u) must not exceed snapshot_threshold (%u)",
                       cfg->snapshot_trailing, cfg->snapshot_threshold);
    if (cfg->npeers > 0) {
        const struct ud_raft_peer *self = NULL;
        for (unsigned i = 0; i < cfg->npeers; i++)
            if (cfg->peers[i].id == cfg->node_id)
                self = &cfg->peers[i];
        if (self == NULL)
            return ud_errf(errmsg, UD_EINVAL, "[raft] peers: node_id %" PRIu64 " is not among them",
                           cfg->node_id);
        if (cfg->raft_advertise[0] == '\0')
            snprintf(cfg->raft_advertise, sizeof cfg->raft_advertise, "%s", self->address);
        else if (strcmp(cfg->raft_advertise, self->address) != 0)
            return ud_errf(errmsg, UD_EINVAL,
                           "[raft] advertise %s differs from this node's entry in peers (%s)",
                           cfg->raft_advertise, self->address);
    }
    if ((cfg->tls_cert[0] == '\0') != (cfg->tls_key[0] == '\0'))
        return ud_errf(errmsg, UD_EINVAL, "[http] tls_cert and tls_key go together: set both");

    /* Two listeners on one fixed address would fail at bind with a less helpful message. */
    struct {
        const char *name;
        const char *addr;
    } listeners[] = {{"[http] listen", cfg->http_listen},
                     {"[http] tls_listen", cfg->tls_cert[0] ? cfg->tls_listen : ""},
                     {"[resp] listen", cfg->resp_listen},
                     {"[raft] listen", cfg->raft_listen}};
    for (size_t i = 0; i < 4; i++) {
        for (size_t j = i + 1; j < 4; j++) {
            const char *a = listeners[i].addr, *b = listeners[j].addr;
            size_t la = strlen(a);
            if (la == 0 || strcmp(a, b) != 0 || (la >= 2 && strcmp(a + la - 2, ":0") == 0))
                continue;
            return ud_errf(errmsg, UD_EINVAL, "%s and %s are both %s", listeners[i].name,
                           listeners[j].name, a);
        }
    }
    cfg->engine.txn_idle_timeout_ms = cfg->txn_idle_timeout_ms;
    return 0;
}
