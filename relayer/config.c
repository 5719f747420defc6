/* unison-relayer configuration: the shared section keys (core/config.h) plus [relayer]. */
#include "relayer/config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/err.h"

typedef struct ud_relayer_config R;

static const char *apply_upstreams(void *cfg, const struct ud_conf_key *k,
                                   const struct ud_toml_value *v, int *line);
static const char *apply_namespaces(void *cfg, const struct ud_conf_key *k,
                                    const struct ud_toml_value *v, int *line);
static const char *check_id(const struct ud_conf_key *k, const void *field);

static const struct ud_conf_key keys[] = {
    UD_CONF_SERVER_KEYS(R),
    UD_CONF_HTTP_KEYS(R, UD_RELAYER_MAX_BODY),
    UD_CONF_RESP_KEYS(R),
    UD_CONF_REPLICATION_KEYS(R),
    UD_CONF_STORAGE_KEYS(R),

    UD_CONF_STR(R, "relayer", "id", id, check_id),
    UD_CONF_STR(R, "relayer", "tls_ca", tls_ca, NULL),
    {"relayer", "upstreams", UD_CONF_CUSTOM, UD_CONF_FIELD(R, upstreams), 0, 0, NULL,
     apply_upstreams},
    {"relayer", "namespaces", UD_CONF_CUSTOM, UD_CONF_FIELD(R, namespaces), 0, 0, NULL,
     apply_namespaces},
    UD_CONF_UINT_KEY(R, "relayer", "forward_writes", forward_writes, 0, 1),
    UD_CONF_UINT_KEY(R, "relayer", "heartbeat_timeout_ms", heartbeat_timeout_ms, 1500, 600000),
    UD_CONF_UINT_KEY(R, "relayer", "ack_interval_ms", ack_interval_ms, 50, 60000),
    UD_CONF_UINT_KEY(R, "relayer", "ack_min_interval_ms", ack_min_interval_ms, 0, 60000),
    UD_CONF_UINT_KEY(R, "relayer", "discover_interval_ms", discover_interval_ms, 100, 3600000),
    UD_CONF_UINT_KEY(R, "relayer", "backoff_max_ms", backoff_max_ms, 100, 600000),
    UD_CONF_SIZE_KEY(R, "relayer", "apply_queue_bytes", apply_queue_bytes, 64 * UD_CONF_KIB,
                     1 * UD_CONF_GIB),
};

static const char *const sections[] = {"server",      "http",    "resp",
                                       "replication", "storage", "relayer"};

static const struct ud_conf_schema schema = {
    .program = "unison-relayer",
    .keys = keys,
    .nkeys = sizeof keys / sizeof keys[0],
    .sections = sections,
    .nsections = sizeof sections / sizeof sections[0],
    .reserved = NULL,
    .cfg_size = sizeof(R),
    .origin = offsetof(R, origin),
};

_Static_assert(sizeof keys / sizeof keys[0] <= UD_CONF_MAX_KEYS,
               "raise UD_CONF_MAX_KEYS: struct ud_conf_origin has a slot per key");

void ud_relayer_config_defaults(struct ud_relayer_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    snprintf(cfg->data_dir, sizeof cfg->data_dir, "./unison-relayer-data");
    snprintf(cfg->log_level, sizeof cfg->log_level, "info");
    cfg->shutdown_timeout_ms = 30000;
    snprintf(cfg->http_listen, sizeof cfg->http_listen, "127.0.0.1:4010");
    snprintf(cfg->tls_listen, sizeof cfg->tls_listen, "127.0.0.1:4453");
    cfg->max_body = 1048576;
    snprintf(cfg->resp_listen, sizeof cfg->resp_listen, "127.0.0.1:6390");
    UD_CONF_REPLICATION_DEFAULTS(cfg);
    /* A relayer's data is a cache of its upstream's log: after a crash it streams again what it
     * lost, so its WAL needs no fsync per record. */
    UD_CONF_STORAGE_DEFAULTS(cfg);
    cfg->heartbeat_timeout_ms = 3000;
    cfg->ack_interval_ms = 1000;
    cfg->ack_min_interval_ms = 5;
    cfg->discover_interval_ms = 5000;
    cfg->backoff_max_ms = 5000;
    cfg->apply_queue_bytes = 8u << 20;
}

/* --- [relayer] values --------------------------------------------------------------------------
 */

static char msg[UD_ERRMSG_SIZE];

static const char *check_id(const struct ud_conf_key *k, const void *field)
{
    (void)k;
    const char *s = field;
    size_t n = strlen(s);
    if (n > 0 &&
        strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-") != n)
        return "expected characters of A-Z a-z 0-9 _ . : -";
    return NULL;
}

/* Checks one URL and copies it without a trailing slash. */
static const char *parse_url(const char *s, size_t len, char out[UD_RELAYER_URL_MAX])
{
    while (len > 0 && s[len - 1] == '/')
        len--;
    if (len == 0)
        return "an empty upstream URL";
    if (len >= UD_RELAYER_URL_MAX) {
        snprintf(msg, sizeof msg, "upstream URL longer than %d bytes", UD_RELAYER_URL_MAX - 1);
        return msg;
    }
    int http = len > 7 && strncmp(s, "http://", 7) == 0;
    int https = len > 8 && strncmp(s, "https://", 8) == 0;
    if (!http && !https) {
        snprintf(msg, sizeof msg, "upstream \"%.*s\" is not an http:// or https:// URL",
                 (int)(len > 100 ? 100 : len), s);
        return msg;
    }
    for (size_t i = 0; i < len; i++) {
        if ((unsigned char)s[i] <= ' ' || s[i] == ',' || s[i] == '|' || s[i] == '?') {
            snprintf(msg, sizeof msg, "upstream \"%.*s\" has a space, ',', '|' or '?' in it",
                     (int)(len > 100 ? 100 : len), s);
            return msg;
        }
    }
    /* The API's paths are appended to it: a path in it would be a prefix no server has. */
    const char *host = s + (http ? 7 : 8);
    const char *slash = memchr(host, '/', len - (size_t)(host - s));
    if (slash != NULL) {
        snprintf(msg, sizeof msg, "upstream \"%.*s\" has a path: give scheme, host and port only",
                 (int)(len > 100 ? 100 : len), s);
        return msg;
    }
    memcpy(out, s, len);
    out[len] = '\0';
    return NULL;
}

/* A list of URLs separated by sep ("a,b" or "a|b"). */
static const char *parse_url_list(const char *s, char sep,
                                  char out[UD_RELAYER_MAX_UPSTREAMS][UD_RELAYER_URL_MAX],
                                  unsigned *n)
{
    *n = 0;
    while (*s != '\0') {
        const char *end = strchr(s, sep);
        size_t len = end != NULL ? (size_t)(end - s) : strlen(s);
        if (*n >= UD_RELAYER_MAX_UPSTREAMS) {
            snprintf(msg, sizeof msg, "at most %d upstreams", UD_RELAYER_MAX_UPSTREAMS);
            return msg;
        }
        const char *err = parse_url(s, len, out[*n]);
        if (err != NULL)
            return err;
        (*n)++;
        if (end == NULL)
            break;
        s = end + 1;
    }
    if (*n == 0)
        return "expected at least one upstream URL";
    return NULL;
}

static const char *apply_upstreams(void *c, const struct ud_conf_key *k,
                                   const struct ud_toml_value *v, int *line)
{
    (void)k;
    R *cfg = c;
    char urls[UD_RELAYER_MAX_UPSTREAMS][UD_RELAYER_URL_MAX];
    unsigned n = 0;
    if (v->type == UD_TOML_STRING) {
        const char *err = parse_url_list(v->str, ',', urls, &n);
        if (err != NULL)
            return err;
    } else if (v->type == UD_TOML_ARRAY && (v->nitems == 0 || v->item_type == UD_TOML_STRING)) {
        if (v->nitems > UD_RELAYER_MAX_UPSTREAMS) {
            snprintf(msg, sizeof msg, "at most %d upstreams, found %zu", UD_RELAYER_MAX_UPSTREAMS,
                     v->nitems);
            return msg;
        }
        for (size_t i = 0; i < v->nitems; i++) {
            *line = v->items[i].line;
            const char *err = parse_url(v->items[i].str, v->items[i].str_len, urls[n]);
            if (err != NULL)
                return err;
            n++;
        }
    } else {
        return "expected an array of URLs or a string \"URL[,URL...]\"";
    }
    memcpy(cfg->upstreams, urls, sizeof urls);
    cfg->nupstreams = n;
    return NULL;
}

/* "ns" or "ns=URL|URL". */
static const char *parse_ns(const char *s, struct ud_relayer_ns *ns)
{
    memset(ns, 0, sizeof *ns);
    const char *eq = strchr(s, '=');
    size_t nl = eq != NULL ? (size_t)(eq - s) : strlen(s);
    if (nl == 0 || nl > UD_NS_NAME_MAX) {
        snprintf(msg, sizeof msg, "\"%s\": a namespace name is 1-64 characters", s);
        return msg;
    }
    memcpy(ns->name, s, nl);
    ns->name[nl] = '\0';
    if (!ud_ns_name_valid(ns->name)) {
        snprintf(msg, sizeof msg, "\"%s\": a namespace name is characters of A-Z a-z 0-9 _ -",
                 ns->name);
        return msg;
    }
    if (eq != NULL)
        return parse_url_list(eq + 1, '|', ns->upstreams, &ns->nupstreams);
    return NULL;
}

static const char *add_ns(R *cfg, struct ud_relayer_ns *list, unsigned *n, const char *s)
{
    (void)cfg;
    if (*n >= UD_RELAYER_MAX_NS) {
        snprintf(msg, sizeof msg, "at most %d namespaces", UD_RELAYER_MAX_NS);
        return msg;
    }
    const char *err = parse_ns(s, &list[*n]);
    if (err != NULL)
        return err;
    for (unsigned i = 0; i < *n; i++) {
        if (strcmp(list[i].name, list[*n].name) == 0) {
            snprintf(msg, sizeof msg, "namespace %s is listed twice", list[i].name);
            return msg;
        }
    }
    (*n)++;
    return NULL;
}

static const char *apply_namespaces(void *c, const struct ud_conf_key *k,
                                    const struct ud_toml_value *v, int *line)
{
    (void)k;
    R *cfg = c;
    static struct ud_relayer_ns list[UD_RELAYER_MAX_NS];
    unsigned n = 0;
    if (v->type == UD_TOML_STRING) {
        char buf[4096];
        if (v->str_len >= sizeof buf)
            return "namespace list too long";
        memcpy(buf, v->str, v->str_len + 1);
        char *save = NULL;
        for (char *tok = strtok_r(buf, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
            const char *err = add_ns(cfg, list, &n, tok);
            if (err != NULL)
                return err;
        }
    } else if (v->type == UD_TOML_ARRAY && (v->nitems == 0 || v->item_type == UD_TOML_STRING)) {
        for (size_t i = 0; i < v->nitems; i++) {
            *line = v->items[i].line;
            const char *err = add_ns(cfg, list, &n, v->items[i].str);
            if (err != NULL)
                return err;
        }
    } else {
        return "expected an array of \"ns\" or \"ns=URL|URL\" strings";
    }
    memcpy(cfg->namespaces, list, sizeof list);
    cfg->nnamespaces = n;
    return NULL;
}

/* --- public ------------------------------------------------------------------------------------
 */

int ud_relayer_config_load(struct ud_relayer_config *cfg, const char *path, char *errmsg)
{
    return ud_conf_load(&schema, cfg, path, errmsg);
}

int ud_relayer_config_set(struct ud_relayer_config *cfg, const char *name, const char *value,
                          char *errmsg)
{
    return ud_conf_set(&schema, cfg, name, value, errmsg);
}

int ud_relayer_config_finish(struct ud_relayer_config *cfg, char *errmsg)
{
    if (cfg->nupstreams == 0) {
        for (unsigned i = 0; i < cfg->nnamespaces; i++)
            if (cfg->namespaces[i].nupstreams == 0)
                return ud_errf(errmsg, UD_EINVAL,
                               "namespace %s has no upstream: give --upstream URL or [relayer] "
                               "upstreams, or \"%s=URL\"",
                               cfg->namespaces[i].name, cfg->namespaces[i].name);
        if (cfg->nnamespaces == 0)
            return ud_errf(errmsg, UD_EINVAL,
                           "no upstream: give --upstream URL[,URL...] or [relayer] upstreams");
    }
    const struct ud_conf_listener listeners[] = {
        {"http", "listen", cfg->http_listen},
        {"http", "tls_listen", cfg->tls_cert[0] ? cfg->tls_listen : ""},
        {"resp", "listen", cfg->resp_listen}};
    return ud_conf_check_http(&schema, cfg, cfg->tls_cert, cfg->tls_key, listeners,
                              sizeof listeners / sizeof listeners[0], errmsg);
}

const char *ud_relayer_config_where(const struct ud_relayer_config *cfg, const char *section,
                                    const char *name, char *buf, size_t size)
{
    return ud_conf_where(&schema, cfg, section, name, buf, size);
}
