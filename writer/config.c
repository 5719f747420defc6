/* unison-writer configuration: one table of every key, applied from TOML files and flags alike. */
#include "writer/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/registry.h"
#include "core/config.h"
#include "core/toml.h"
#include "proto/command.h"

typedef struct ud_writer_config W;

/* The writer's own keys, in the shapes of core/config.h. */
#define KIB                   UD_CONF_KIB
#define MIB                   UD_CONF_MIB
#define STR(s, n, f, v)       UD_CONF_STR(W, s, n, f, v)
#define UINT(s, n, f, lo, hi) UD_CONF_UINT_KEY(W, s, n, f, lo, hi)
#define SIZE(s, n, f, lo, hi) UD_CONF_SIZE_KEY(W, s, n, f, lo, hi)

static const char *check_raft_address(const struct ud_conf_key *k, const void *field);
static const char *check_raft_address_or_unset(const struct ud_conf_key *k, const void *field);
static const char *check_cluster_id(const struct ud_conf_key *k, const void *field);
static const char *apply_peers(void *cfg, const struct ud_conf_key *k,
                               const struct ud_toml_value *v, int *line);
static const char *apply_bool(void *cfg, const struct ud_conf_key *k, const struct ud_toml_value *v,
                              int *line);
static const char *check_http_url_or_unset(const struct ud_conf_key *k, const void *field);
#define BOOL(s, n, f)                                                                              \
    {                                                                                              \
        s, n, UD_CONF_CUSTOM, UD_CONF_FIELD(W, f), 0, 1, NULL, apply_bool                          \
    }

/* Every key of every section, in the order docs/configuration.md lists them. The sections the
 * relayer shares ([server] basics, [http], [resp], [storage]) come from core/config.h. */
static const struct ud_conf_key keys[] = {
    UD_CONF_SERVER_KEYS(W),
    STR("server", "default_namespace", default_namespace, ud_conf_check_namespace),

    UD_CONF_HTTP_KEYS(W, UD_WRITER_MAX_BODY_LIMIT),
    STR("http", "backup_root", backup_root, ud_conf_check_not_empty),
    STR("http", "advertise", http_advertise, check_http_url_or_unset),

    UD_CONF_RESP_KEYS(W),
    UINT("resp", "max_clients", resp_max_clients, 1, 1000000),
    UINT("resp", "idle_timeout_ms", resp_idle_timeout_ms, 0, 86400000),
    SIZE("resp", "max_output", resp_max_output, 4 * KIB, 1 * UD_CONF_GIB),
    UINT("resp", "max_pending", resp_max_pending, 1, 1000000),

    UINT("raft", "node_id", node_id, 1, INT64_MAX), /* JSON readers take ids up to 2^63 - 1 */
    STR("raft", "listen", raft_listen, check_raft_address),
    STR("raft", "advertise", raft_advertise, check_raft_address_or_unset),
    STR("raft", "cluster_id", cluster_id, check_cluster_id),
    {"raft", "peers", UD_CONF_CUSTOM, UD_CONF_FIELD(W, peers), 0, 0, NULL, apply_peers},
    UINT("raft", "election_timeout_ms", election_timeout_ms, 100, 60000),
    UINT("raft", "heartbeat_timeout_ms", heartbeat_timeout_ms, 10, 10000),
    UINT("raft", "snapshot_threshold", snapshot_threshold, 1, 1000000),
    UINT("raft", "snapshot_trailing", snapshot_trailing, 0, 1000000),
    SIZE("raft", "snapshot_bytes", snapshot_bytes, 1 * UD_CONF_MIB, 4 * UD_CONF_GIB),
    SIZE("raft", "snapshot_trailing_bytes", snapshot_trailing_bytes, 1 * UD_CONF_MIB,
         4 * UD_CONF_GIB),
    BOOL("raft", "join", join),
    BOOL("raft", "forward", forward),
    UINT("raft", "leader_wait_ms", leader_wait_ms, 0, 60000),
    UINT("raft", "forward_stall_ms", forward_stall_ms, 1000, 3600000),

    /* A group-committed entry is one raft command, which has a hard cap. */
    SIZE("write", "commit_max_bytes", commit_max_bytes, 64 * KIB, UD_COMMAND_MAX_SIZE),
    UINT("write", "commit_max_inflight", commit_max_inflight, 1, 64),
    UINT("write", "admission_timeout_ms", admission_timeout_ms, 0, 60000),
    UINT("write", "txn_idle_timeout_ms", txn_idle_timeout_ms, 1000, 86400000),

    UD_CONF_REPLICATION_KEYS(W),

    UD_CONF_STORAGE_KEYS(W),
};

/* Sections the writer reads, and the one it accepts for the relayer binary without reading. */
static const char *const sections[] = {"server", "http",        "resp",   "raft",
                                       "write",  "replication", "storage"};

_Static_assert(sizeof keys / sizeof keys[0] <= UD_CONF_MAX_KEYS,
               "raise UD_CONF_MAX_KEYS: struct ud_conf_origin has a slot per key");

static void on_set(void *cfg, const struct ud_conf_key *k, int line)
{
    W *w = cfg;
    (void)line;
    if (strcmp(k->name, "backup_root") == 0)
        w->backup_root_set = 1;
}

static const struct ud_conf_schema schema = {
    .program = "unison-writer",
    .keys = keys,
    .nkeys = sizeof keys / sizeof keys[0],
    .sections = sections,
    .nsections = sizeof sections / sizeof sections[0],
    .reserved = "relayer",
    .cfg_size = sizeof(W),
    .on_set = on_set,
    .origin = offsetof(W, origin),
};

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
    cfg->resp_max_clients = UD_WRITER_RESP_MAX_CLIENTS;
    cfg->resp_idle_timeout_ms = UD_WRITER_RESP_IDLE_TIMEOUT_MS;
    cfg->resp_max_output = UD_WRITER_RESP_MAX_OUTPUT;
    cfg->resp_max_pending = UD_WRITER_RESP_MAX_PENDING;

    cfg->node_id = 1;
    snprintf(cfg->raft_listen, sizeof cfg->raft_listen, "127.0.0.1:4100");
    snprintf(cfg->cluster_id, sizeof cfg->cluster_id, "unison");
    cfg->election_timeout_ms = 1000;
    cfg->heartbeat_timeout_ms = 100;
    cfg->snapshot_threshold = 8192;
    cfg->snapshot_trailing = 8192;
    cfg->snapshot_bytes = 64 * UD_CONF_MIB;
    cfg->snapshot_trailing_bytes = 64 * UD_CONF_MIB;
    cfg->forward = 1;
    cfg->leader_wait_ms = 5000;
    cfg->forward_stall_ms = 60000;

    cfg->commit_max_bytes = 1u << 20;
    cfg->commit_max_inflight = 4;
    cfg->admission_timeout_ms = 2000;
    cfg->txn_idle_timeout_ms = 60000;

    UD_CONF_REPLICATION_DEFAULTS(cfg);

    UD_CONF_STORAGE_DEFAULTS(cfg);
    cfg->engine.txn_idle_timeout_ms = cfg->txn_idle_timeout_ms;
}

/* --- validators ------------------------------------------------------------------------------ */

int ud_writer_config_split_address(const char *address, char *host, size_t hostsz, int *port,
                                   char *errmsg)
{
    return ud_conf_split_address(address, host, hostsz, port, errmsg);
}

/* Validators return a message that lives in this buffer: the config code is single-threaded. */
static char check_buf[UD_ERRMSG_SIZE];

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

static const char *check_raft_address(const struct ud_conf_key *k, const void *field)
{
    (void)k;
    return raft_address_ok(field, 1) ? NULL : check_buf;
}

static const char *check_raft_address_or_unset(const struct ud_conf_key *k, const void *field)
{
    (void)k;
    if (((const char *)field)[0] == '\0')
        return NULL;
    return raft_address_ok(field, 0) ? NULL : check_buf;
}

/* An HTTP base URL: http:// or https://, then host:port, no path. */
static int http_url_ok(const char *url)
{
    const char *rest = strncmp(url, "http://", 7) == 0    ? url + 7
                       : strncmp(url, "https://", 8) == 0 ? url + 8
                                                          : NULL;
    char host[INET6_ADDRSTRLEN + 64];
    int port;
    if (rest == NULL) {
        snprintf(check_buf, sizeof check_buf, "expected a URL such as http://127.0.0.1:4000");
        return 0;
    }
    if (strchr(rest, '/') != NULL ||
        ud_writer_config_split_address(rest, host, sizeof host, &port, check_buf) != 0 ||
        port == 0) {
        snprintf(check_buf, sizeof check_buf,
                 "expected a URL such as http://127.0.0.1:4000 (host and a port above 0, no path)");
        return 0;
    }
    return 1;
}

static const char *check_http_url_or_unset(const struct ud_conf_key *k, const void *field)
{
    (void)k;
    if (((const char *)field)[0] == '\0')
        return NULL;
    return http_url_ok(field) ? NULL : check_buf;
}

static const char *check_cluster_id(const struct ud_conf_key *k, const void *field)
{
    (void)k;
    const char *s = field;
    size_t n = strlen(s);
    if (n == 0 || n > 63 ||
        strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") != n)
        return "expected 1-63 characters of A-Z a-z 0-9 _ . -";
    return NULL;
}

/* --- applying values ------------------------------------------------------------------------- */

/* true / false (TOML booleans, or the words from a --set flag). */
static const char *apply_bool(void *c, const struct ud_conf_key *k, const struct ud_toml_value *v,
                              int *line)
{
    *line = v->line;
    int b;
    /* A flag's value is always a string (line 0); a file's must be a TOML boolean. */
    if (v->type == UD_TOML_BOOLEAN)
        b = v->boolean;
    else if (v->type == UD_TOML_STRING && v->line == 0 && strcmp(v->str, "true") == 0)
        b = 1;
    else if (v->type == UD_TOML_STRING && v->line == 0 && strcmp(v->str, "false") == 0)
        b = 0;
    else
        return "expected true or false (a boolean, not a string)";
    memcpy((char *)c + k->offset, &b, sizeof b);
    return NULL;
}

/* The options after a peer's raft address: ",http=URL-or-host:port" and ",resp=host:port". */
static const char *parse_peer_options(const char *opt, struct ud_raft_peer *peer)
{
    while (*opt == ',') {
        opt++;
        size_t len = strcspn(opt, ",");
        char val[160];
        const char *eq = memchr(opt, '=', len);
        size_t vlen = eq != NULL ? len - (size_t)(eq + 1 - opt) : 0;
        if (eq == NULL || vlen == 0 || vlen >= sizeof val)
            return "peer options are \",http=host:port\" and \",resp=host:port\"";
        memcpy(val, eq + 1, vlen);
        val[vlen] = '\0';
        size_t nlen = (size_t)(eq - opt);
        if (nlen == 4 && memcmp(opt, "http", 4) == 0) {
            /* host:port means plain HTTP; a URL may name https. */
            char url[sizeof peer->http + 8];
            snprintf(url, sizeof url, "%s%s", strstr(val, "://") != NULL ? "" : "http://", val);
            if (strlen(url) >= sizeof peer->http || !http_url_ok(url))
                return check_buf;
            snprintf(peer->http, sizeof peer->http, "%s", url);
        } else if (nlen == 4 && memcmp(opt, "resp", 4) == 0) {
            char host[INET6_ADDRSTRLEN];
            int port;
            if (ud_writer_config_split_address(val, host, sizeof host, &port, check_buf) != 0)
                return check_buf;
            snprintf(peer->resp, sizeof peer->resp, "%s", val);
        } else {
            return "peer options are \",http=host:port\" and \",resp=host:port\"";
        }
        opt += len;
    }
    return NULL;
}

/* "id@a.b.c.d:port[,http=host:port][,resp=host:port]" */
static const char *parse_peer(const char *s, struct ud_raft_peer *peer)
{
    memset(peer, 0, sizeof *peer);
    const char *at = strchr(s, '@');
    if (at == NULL || at == s || (size_t)(at - s) > 20 ||
        strspn(s, "0123456789") != (size_t)(at - s))
        return "expected \"id@host:port\" with a decimal id";
    errno = 0;
    uint64_t id = strtoull(s, NULL, 10);
    if (id == 0 || (s[0] == '0') || id > INT64_MAX || errno == ERANGE)
        return "a peer id is a decimal number from 1 to 9223372036854775807, without leading "
               "zeros";
    size_t alen = strcspn(at + 1, ",");
    if (alen >= sizeof peer->address)
        return "peer address too long";
    memcpy(peer->address, at + 1, alen);
    peer->address[alen] = '\0';
    if (!raft_address_ok(peer->address, 0))
        return check_buf;
    peer->id = id;
    return parse_peer_options(at + 1 + alen, peer);
}

static const char *apply_peers(void *c, const struct ud_conf_key *k, const struct ud_toml_value *v,
                               int *line)
{
    (void)k;
    struct ud_writer_config *cfg = c;
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

int ud_writer_config_load(struct ud_writer_config *cfg, const char *path, char *errmsg)
{
    return ud_conf_load(&schema, cfg, path, errmsg);
}

int ud_writer_config_set(struct ud_writer_config *cfg, const char *name, const char *value,
                         char *errmsg)
{
    if (strcmp(name, "raft.peers") == 0)
        return ud_errf(errmsg, UD_EINVAL, "%s: set peers in the configuration file", name);
    return ud_conf_set(&schema, cfg, name, value, errmsg);
}

const char *ud_writer_config_where(const struct ud_writer_config *cfg, const char *section,
                                   const char *name, char *buf, size_t size)
{
    return ud_conf_where(&schema, cfg, section, name, buf, size);
}

int ud_writer_config_finish(struct ud_writer_config *cfg, char *errmsg)
{
    char a[1200], b[1200];
#define WHERE(buf, section, name) ud_writer_config_where(cfg, section, name, buf, sizeof buf)
    if (!cfg->backup_root_set) {
        int n = snprintf(cfg->backup_root, sizeof cfg->backup_root, "%s/%s", cfg->data_dir,
                         UD_WRITER_BACKUP_SUBDIR);
        if (n < 0 || (size_t)n >= sizeof cfg->backup_root)
            return ud_errf(errmsg, UD_EINVAL,
                           "%s: too long: the backup root under it, %s/%s, must fit in %zu bytes",
                           WHERE(a, "server", "data_dir"), cfg->data_dir, UD_WRITER_BACKUP_SUBDIR,
                           sizeof cfg->backup_root - 1);
    }
    if (cfg->heartbeat_timeout_ms >= cfg->election_timeout_ms)
        return ud_errf(errmsg, UD_EINVAL, "%s (%u) must be below %s (%u)",
                       WHERE(a, "raft", "heartbeat_timeout_ms"), cfg->heartbeat_timeout_ms,
                       WHERE(b, "raft", "election_timeout_ms"), cfg->election_timeout_ms);
    if (cfg->snapshot_trailing > cfg->snapshot_threshold)
        return ud_errf(errmsg, UD_EINVAL, "%s (%u) must not exceed %s (%u)",
                       WHERE(a, "raft", "snapshot_trailing"), cfg->snapshot_trailing,
                       WHERE(b, "raft", "snapshot_threshold"), cfg->snapshot_threshold);
    if (cfg->npeers > 0) {
        const struct ud_raft_peer *self = NULL;
        for (unsigned i = 0; i < cfg->npeers; i++)
            if (cfg->peers[i].id == cfg->node_id)
                self = &cfg->peers[i];
        if (self == NULL)
            return ud_errf(errmsg, UD_EINVAL, "%s: node_id %" PRIu64 " is not among them",
                           WHERE(a, "raft", "peers"), cfg->node_id);
        if (cfg->raft_advertise[0] == '\0')
            snprintf(cfg->raft_advertise, sizeof cfg->raft_advertise, "%s", self->address);
        else if (strcmp(cfg->raft_advertise, self->address) != 0)
            return ud_errf(errmsg, UD_EINVAL, "%s %s differs from this node's entry in peers (%s)",
                           WHERE(a, "raft", "advertise"), cfg->raft_advertise, self->address);
    }
    const struct ud_conf_listener listeners[] = {
        {"http", "listen", cfg->http_listen},
        {"http", "tls_listen", cfg->tls_cert[0] ? cfg->tls_listen : ""},
        {"resp", "listen", cfg->resp_listen},
        {"raft", "listen", cfg->raft_listen}};
    int rc = ud_conf_check_http(&schema, cfg, cfg->tls_cert, cfg->tls_key, listeners,
                                sizeof listeners / sizeof listeners[0], errmsg);
    if (rc != 0)
        return rc;
#undef WHERE
    cfg->engine.txn_idle_timeout_ms = cfg->txn_idle_timeout_ms;
    return 0;
}
