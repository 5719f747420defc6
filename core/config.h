/*
 * Table-driven configuration shared by the binaries: each binary describes its keys (section,
 * name, type, where the value lives in its own struct, range, validator) and this applies TOML
 * files (core/toml.h) and "section.key=value" flags through the same rules, with errors naming
 * file, line, section and key ("n1.toml:7: [http] listen: ...", typos answered with "did you
 * mean ...?"). The sections both binaries share ([server] basics, [http], [resp], [storage]) are
 * key macros below, so the two binaries read them identically (docs/configuration.md).
 *
 * Single-threaded (validators return messages in a static buffer).
 */
#ifndef UD_CORE_CONFIG_H
#define UD_CORE_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "core/toml.h"
#include "core/wal.h"

#define UD_CONF_KIB (UINT64_C(1) << 10)
#define UD_CONF_MIB (UINT64_C(1) << 20)
#define UD_CONF_GIB (UINT64_C(1) << 30)
#define UD_CONF_TIB (UINT64_C(1) << 40)

enum ud_conf_kind {
    UD_CONF_STRING, /* char[size] */
    UD_CONF_UINT,   /* uint32_t or uint64_t (size says which), integer within [min, max] */
    UD_CONF_SIZE,   /* like UD_CONF_UINT (or size_t), also "64MiB" strings */
    UD_CONF_SYNC,   /* enum ud_wal_sync_mode from "always" | "interval" | "none" */
    UD_CONF_CUSTOM, /* decoded by the key's custom function (arrays and the like) */
};

struct ud_conf_key;

/* Checks a decoded value already stored at its field; returns NULL or what is wrong. */
typedef const char *(*ud_conf_check)(const struct ud_conf_key *k, const void *field);
/* Decodes v into cfg; returns NULL or what is wrong (and sets *line for an array item). */
typedef const char *(*ud_conf_custom)(void *cfg, const struct ud_conf_key *k,
                                      const struct ud_toml_value *v, int *line);

struct ud_conf_key {
    const char *section;
    const char *name;
    enum ud_conf_kind kind;
    size_t offset;
    size_t size;
    uint64_t min, max; /* UINT, SIZE */
    ud_conf_check check;
    ud_conf_custom custom; /* CUSTOM */
};

/* Where each key's value came from, for messages of checks across keys found after loading
 * (ud_conf_where): the last file loaded, and per key of the schema (in its table's order) its
 * line in that file, -1 when a flag set it, 0 for the default. */
#define UD_CONF_MAX_KEYS 64
struct ud_conf_origin {
    char file[1024];
    int line[UD_CONF_MAX_KEYS];
};

struct ud_conf_schema {
    const char *program; /* for messages: "unison-writer" */
    const struct ud_conf_key *keys;
    size_t nkeys;
    const char *const *sections; /* sections this binary reads, in the order messages list them */
    size_t nsections;
    const char *reserved; /* a section accepted and skipped (another binary's), or NULL */
    size_t cfg_size;      /* sizeof the configuration struct (files are applied to a copy) */
    /* Called after a key was set from a file (line: its line there) or a flag (line 0); may be
     * NULL. */
    void (*on_set)(void *cfg, const struct ud_conf_key *k, int line);
    /* Offset of the configuration's struct ud_conf_origin, kept up to date by loads and sets
     * (nkeys at most UD_CONF_MAX_KEYS). */
    size_t origin;
};

/* "file:line: [section] name", or "[section] name (set by a flag)", or "[section] name": where the
 * value of a key of cfg came from, into buf. */
const char *ud_conf_where(const struct ud_conf_schema *s, const void *cfg, const char *section,
                          const char *name, char *buf, size_t size);

/* A listener's key and address ("" when it is not used). */
struct ud_conf_listener {
    const char *section, *name;
    const char *addr;
};
/* Checks across the [http] and listener keys both binaries have: tls_cert and tls_key set
 * together, and no two of the n listeners on one fixed address (which would fail at bind with a
 * less helpful message). 0, or UD_EINVAL naming the keys (ud_conf_where). */
int ud_conf_check_http(const struct ud_conf_schema *s, const void *cfg, const char *tls_cert,
                       const char *tls_key, const struct ud_conf_listener *l, size_t n,
                       char *errmsg);

/*
 * Loads a TOML file over cfg. Unknown sections or keys and bad values are errors naming file,
 * line and key. The reserved section is skipped. On error cfg is unchanged.
 * Returns 0, UD_EINVAL (errmsg set), UD_ENOTFOUND (file missing) or UD_EIO/UD_ENOMEM.
 */
int ud_conf_load(const struct ud_conf_schema *s, void *cfg, const char *path, char *errmsg);

/*
 * Loads only the section `section` of the file over cfg and ignores every other one (the
 * relayer's [relayer] section in a file that also configures the rest through ud_conf_load).
 */
int ud_conf_load_section(const struct ud_conf_schema *s, void *cfg, const char *path,
                         const char *section, char *errmsg);

/*
 * Sets one key from text, as a command-line flag does: name is "section.key"; value is taken as
 * the key's type (integers in decimal, sizes also with a unit). CUSTOM keys get the text as a
 * string value. Returns 0 or UD_EINVAL ("http.listen: ...").
 */
int ud_conf_set(const struct ud_conf_schema *s, void *cfg, const char *name, const char *value,
                char *errmsg);

/*
 * Splits "host:port" ("127.0.0.1:4000", "[::1]:4000") into host (without brackets, at most hostsz
 * bytes with the NUL) and port (0..65535). host is an IPv4 or IPv6 literal: listeners bind to
 * addresses, not names. Returns 0 or UD_EINVAL with errmsg saying why.
 */
int ud_conf_split_address(const char *address, char *host, size_t hostsz, int *port, char *errmsg);

/* Shared validators. */
const char *ud_conf_check_not_empty(const struct ud_conf_key *k, const void *field);
const char *ud_conf_check_log_level(const struct ud_conf_key *k, const void *field);
const char *ud_conf_check_listen(const struct ud_conf_key *k, const void *field);
const char *ud_conf_check_listen_or_off(const struct ud_conf_key *k, const void *field);
const char *ud_conf_check_namespace(const struct ud_conf_key *k, const void *field);

/* "64MiB", "1 GiB", "512KiB", "4096" or "4096B" -> bytes. 0 or -1. */
int ud_conf_parse_size(const char *s, uint64_t *out);

/* --- key table helpers ----------------------------------------------------------------------- */

#define UD_CONF_FIELD(T, f) offsetof(T, f), sizeof(((T *)0)->f)
#define UD_CONF_STR(T, s, n, f, v)                                                                 \
    {                                                                                              \
        s, n, UD_CONF_STRING, UD_CONF_FIELD(T, f), 0, 0, v, NULL                                   \
    }
#define UD_CONF_UINT_KEY(T, s, n, f, lo, hi)                                                       \
    {                                                                                              \
        s, n, UD_CONF_UINT, UD_CONF_FIELD(T, f), lo, hi, NULL, NULL                                \
    }
#define UD_CONF_SIZE_KEY(T, s, n, f, lo, hi)                                                       \
    {                                                                                              \
        s, n, UD_CONF_SIZE, UD_CONF_FIELD(T, f), lo, hi, NULL, NULL                                \
    }

/* [server] keys both binaries have: fields data_dir, ports_file, log_level,
 * shutdown_timeout_ms. */
#define UD_CONF_SERVER_KEYS(T)                                                                     \
    UD_CONF_STR(T, "server", "data_dir", data_dir, ud_conf_check_not_empty),                       \
        UD_CONF_STR(T, "server", "ports_file", ports_file, NULL),                                  \
        UD_CONF_STR(T, "server", "log_level", log_level, ud_conf_check_log_level),                 \
        UD_CONF_UINT_KEY(T, "server", "shutdown_timeout_ms", shutdown_timeout_ms, 0, 3600000)

/* [http] keys both binaries have: fields http_listen, tls_listen, tls_cert, tls_key, max_body. */
#define UD_CONF_HTTP_KEYS(T, max_body_limit)                                                       \
    UD_CONF_STR(T, "http", "listen", http_listen, ud_conf_check_listen),                           \
        UD_CONF_STR(T, "http", "tls_listen", tls_listen, ud_conf_check_listen),                    \
        UD_CONF_STR(T, "http", "tls_cert", tls_cert, NULL),                                        \
        UD_CONF_STR(T, "http", "tls_key", tls_key, NULL),                                          \
        UD_CONF_SIZE_KEY(T, "http", "max_body", max_body, 4 * UD_CONF_KIB, max_body_limit)

/* [resp] listen: field resp_listen ("" disables). */
#define UD_CONF_RESP_KEYS(T)                                                                       \
    UD_CONF_STR(T, "resp", "listen", resp_listen, ud_conf_check_listen_or_off)

/* [replication] (docs/configuration.md, docs/replication.md): both binaries serve followers.
 * Fields min_isr, isr_max_lag_ms, isr_max_lag_records, follower_timeout_ms, ack_timeout_ms,
 * stream_batch_bytes, heartbeat_ms, retain_for_isr; UD_CONF_REPLICATION_DEFAULTS sets them. */
#define UD_CONF_REPLICATION_KEYS(T)                                                                \
    UD_CONF_UINT_KEY(T, "replication", "min_isr", min_isr, 1, 64),                                 \
        UD_CONF_UINT_KEY(T, "replication", "isr_max_lag_ms", isr_max_lag_ms, 1, 3600000),          \
        UD_CONF_UINT_KEY(T, "replication", "isr_max_lag_records", isr_max_lag_records, 0,          \
                         UINT64_MAX),                                                              \
        UD_CONF_UINT_KEY(T, "replication", "follower_timeout_ms", follower_timeout_ms, 1000,       \
                         86400000),                                                                \
        UD_CONF_UINT_KEY(T, "replication", "ack_timeout_ms", ack_timeout_ms, 1, 600000),           \
        UD_CONF_SIZE_KEY(T, "replication", "stream_batch_bytes", stream_batch_bytes,               \
                         64 * UD_CONF_KIB, 8 * UD_CONF_MIB),                                       \
        UD_CONF_UINT_KEY(T, "replication", "heartbeat_ms", heartbeat_ms, 50, 60000),               \
        UD_CONF_UINT_KEY(T, "replication", "retain_for_isr", retain_for_isr, 0, 1)
#define UD_CONF_REPLICATION_DEFAULTS(cfg)                                                          \
    do {                                                                                           \
        (cfg)->min_isr = 1;                                                                        \
        (cfg)->isr_max_lag_ms = 5000;                                                              \
        (cfg)->isr_max_lag_records = 0;                                                            \
        (cfg)->follower_timeout_ms = 30000;                                                        \
        (cfg)->ack_timeout_ms = 5000;                                                              \
        (cfg)->stream_batch_bytes = 1u << 20;                                                      \
        (cfg)->heartbeat_ms = 1000;                                                                \
        (cfg)->retain_for_isr = 1;                                                                 \
    } while (0)

/* The [storage] defaults of both binaries. Sync `none`: a writer's raft log is durable before an
 * entry is applied, and a relayer streams again whatever a crash lost, so neither WAL needs an
 * fsync per record (docs/configuration.md). */
#define UD_CONF_STORAGE_DEFAULTS(cfg)                                                              \
    do {                                                                                           \
        (cfg)->engine.sync_mode = UD_WAL_SYNC_NONE;                                                \
        (cfg)->engine.sync_interval_ms = 100;                                                      \
        (cfg)->engine.segment_size = UD_WAL_DEFAULT_SEGMENT_SIZE;                                  \
        (cfg)->engine.memtable_bytes = 256u << 20;                                                 \
        (cfg)->engine.max_sealed = 2;                                                              \
        (cfg)->engine.idle_flush_ms = 10000;                                                       \
        (cfg)->engine.txn_max_bytes = 64u << 20;                                                   \
        (cfg)->engine.map_size = 1u << 30;                                                         \
    } while (0)

/* [storage]: a struct ud_engine_options field named engine. */
#define UD_CONF_STORAGE_KEYS(T)                                                                    \
    {"storage", "sync_mode", UD_CONF_SYNC, UD_CONF_FIELD(T, engine.sync_mode), 0, 0, NULL, NULL},  \
        UD_CONF_UINT_KEY(T, "storage", "sync_interval_ms", engine.sync_interval_ms, 1, 60000),     \
        UD_CONF_SIZE_KEY(T, "storage", "segment_size", engine.segment_size,                        \
                         UD_WAL_MIN_SEGMENT_SIZE, 4 * UD_CONF_GIB),                                \
        UD_CONF_SIZE_KEY(T, "storage", "memtable_bytes", engine.memtable_bytes, 1 * UD_CONF_MIB,   \
                         64 * UD_CONF_GIB),                                                        \
        UD_CONF_UINT_KEY(T, "storage", "max_sealed", engine.max_sealed, 1, 64),                    \
        UD_CONF_UINT_KEY(T, "storage", "idle_flush_ms", engine.idle_flush_ms, 100, 86400000),      \
        UD_CONF_SIZE_KEY(T, "storage", "txn_max_bytes", engine.txn_max_bytes, 1 * UD_CONF_MIB,     \
                         64 * UD_CONF_GIB),                                                        \
        UD_CONF_SIZE_KEY(T, "storage", "map_size", engine.map_size, 16 * UD_CONF_MIB,              \
                         256 * UD_CONF_TIB),                                                       \
        UD_CONF_UINT_KEY(T, "storage", "retention_max_segments", engine.retention.max_segments, 0, \
                         1000000000),                                                              \
        UD_CONF_UINT_KEY(T, "storage", "retention_max_age_ms", engine.retention.max_age_ms, 0,     \
                         UINT64_MAX)

#endif
