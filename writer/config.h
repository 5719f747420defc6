/*
 * unison-writer configuration: defaults (the zero-config single writer), then the TOML file given
 * with --config, then command-line flags, then ud_writer_config_finish. docs/configuration.md lists
 * every key.
 *
 * Data directory layout (every part of the writer uses these names):
 *   {data_dir}/namespaces/{ns}/   one engine directory per namespace (ud_registry root)
 *   {data_dir}/raft/              raft's log, snapshots and metadata (raft_uv)
 *   {data_dir}/backups/{ns}/      default backup root (wal/backup, btree/backup)
 *   {data_dir}/cluster-id         written by raft on first start: another cluster's dir is refused
 *   {data_dir}/LOCK               held (flock) by the running process
 *   {data_dir}/default-namespace  written once the default namespace exists, so that it is created
 *                                 on the first start only (deleting it later is not undone)
 */
#ifndef UD_WRITER_CONFIG_H
#define UD_WRITER_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "core/config.h"
#include "core/engine.h"

#define UD_MAX_PEERS 7

#define UD_WRITER_NS_SUBDIR     "namespaces"
#define UD_WRITER_RAFT_SUBDIR   "raft"
#define UD_WRITER_BACKUP_SUBDIR "backups"

/* Largest body limit accepted for [http] max_body: h2o's own limit sits above it (4 MiB) so the
 * JSON 413 is always ours (ARCHITECTURE.md section 4). */
#define UD_WRITER_MAX_BODY_LIMIT (4u << 20)

/* [resp] defaults: the RESP server's own (core/resp/resp_server.h), repeated here because the
 * configuration library does not link the RESP server; writer/resp_write.c checks they agree. */
#define UD_WRITER_RESP_MAX_CLIENTS     1000
#define UD_WRITER_RESP_IDLE_TIMEOUT_MS 300000
#define UD_WRITER_RESP_MAX_OUTPUT      (1u << 20)
#define UD_WRITER_RESP_MAX_PENDING     1024

struct ud_raft_peer {
    uint64_t id;
    char address[128]; /* host:port of its raft listener (IPv4 dotted quad, as raft_uv needs) */
    char http[160];    /* "" or its HTTP base URL ("http://127.0.0.1:4001"): writes forwarded */
    char resp[128];    /* "" or host:port of its RESP listener (named by -MOVED) */
};

struct ud_writer_config {
    /* [server] */
    char data_dir[1024];          /* default ./unison-data */
    char ports_file[1024];        /* "" = none; JSON {"http":N,"resp":N,"raft":N,"https":N|null} */
    char log_level[16];           /* debug|info|warn|error, default info */
    char default_namespace[65];   /* created on first start, default "default"; "" = none */
    uint32_t shutdown_timeout_ms; /* graceful stop budget before exiting 1; 0 = none; 30000 */

    /* [http] */
    char http_listen[128]; /* host:port, default 127.0.0.1:4000; port 0 = any */
    char tls_cert[1024];   /* "" = no TLS listener */
    char tls_key[1024];
    char tls_listen[128];     /* default 127.0.0.1:4443 when a certificate is set */
    size_t max_body;          /* default 1048576 (inclusive) */
    char backup_root[1024];   /* default {data_dir}/backups: wal/btree backups are confined here */
    char http_advertise[160]; /* base URL other writers reach this one at; "" = from listen */

    /* [resp] */
    char resp_listen[128];         /* default 127.0.0.1:6380; "" disables */
    uint32_t resp_max_clients;     /* connections at most, default 1000 */
    uint32_t resp_idle_timeout_ms; /* idle connections closed after, default 300000; 0 = never */
    size_t resp_max_output;        /* unsent reply bytes before reading pauses, default 1 MiB */
    uint32_t resp_max_pending;     /* writes waiting for raft before reading pauses, 1024 */

    /* [raft] */
    uint64_t node_id;         /* default 1 */
    char raft_listen[128];    /* default 127.0.0.1:4100 */
    char raft_advertise[128]; /* default: our own entry in peers, else raft_listen after binding */
    char cluster_id[64];      /* default "unison"; a data dir of another cluster is refused */
    struct ud_raft_peer
        peers[UD_MAX_PEERS]; /* voters of the initial configuration; empty = just us */
    unsigned npeers;
    uint32_t election_timeout_ms;   /* default 1000 */
    uint32_t heartbeat_timeout_ms;  /* default 100 */
    uint32_t snapshot_threshold;    /* entries between snapshots, at most; default 8192 */
    uint32_t snapshot_trailing;     /* entries kept behind a snapshot, at most; default 8192 */
    size_t snapshot_bytes;          /* bytes of entries between snapshots, at most; 64 MiB */
    size_t snapshot_trailing_bytes; /* bytes of entries kept behind a snapshot; 64 MiB */
    int join;                       /* start without bootstrapping; wait to be added (default 0) */
    int forward;             /* followers forward writes to the leader (1), or answer 307 (0) */
    uint32_t leader_wait_ms; /* writes wait this long for a leader in an election; 5000 */
    /* A linearizable read a follower passes on is cut when its client took nothing this long;
     * 60000 */
    uint32_t forward_stall_ms;

    /* [write] */
    uint32_t commit_max_bytes;     /* group commit: max bytes of one raft entry, default 1 MiB */
    uint32_t commit_max_inflight;  /* raft_apply calls in flight, default 4 */
    uint32_t admission_timeout_ms; /* wait for the flush before 503, default 2000 */
    uint32_t txn_idle_timeout_ms;  /* idle transactions aborted after, default 60000 */

    /* [replication]: followers of this node (docs/replication.md) */
    uint32_t min_isr;             /* acks=isr waits for this many followers, default 1 */
    uint32_t isr_max_lag_ms;      /* ISR: lag and last-ack age at most this, default 5000 */
    uint64_t isr_max_lag_records; /* ISR: lag in records at most this, 0 = no bound (default) */
    uint32_t follower_timeout_ms; /* forget a follower silent this long, default 30000 */
    uint32_t ack_timeout_ms;      /* acks=isr wait before 503, default 5000 */
    uint32_t stream_batch_bytes;  /* WAL bytes per stream frame, default 1 MiB */
    uint32_t heartbeat_ms;        /* stream heartbeat when idle, default 1000 */
    uint32_t retain_for_isr;      /* 1: WAL retention keeps what ISR followers lack (default) */

    /* [storage]: engine options for every namespace (dir and name are set per namespace). The
     * writer's default sync mode is NONE: raft's log is the durable copy of every record. */
    struct ud_engine_options engine;

    /* Set when backup_root was given explicitly; otherwise finish derives it from data_dir. */
    int backup_root_set;

    /* Where each key's value came from, for errors found after loading (ud_writer_config_where). */
    struct ud_conf_origin origin;
};

/* Fills cfg with the zero-config defaults. */
void ud_writer_config_defaults(struct ud_writer_config *cfg);

/*
 * Loads a TOML file over the current values. Unknown sections or keys and bad values are errors
 * naming file, line and key ("n1.toml:7: [raft] peers: expected an array of \"id@host:port\"").
 * The [relayer] section is reserved for unison-relayer and skipped. On error cfg is unchanged.
 * Returns 0, UD_EINVAL (errmsg set), UD_ENOTFOUND (file missing) or UD_EIO/UD_ENOMEM.
 */
int ud_writer_config_load(struct ud_writer_config *cfg, const char *path, char *errmsg);

/*
 * Sets one key from text, as a command-line flag does: name is "section.key" (for example
 * "http.listen"); value is taken as the key's type (integers in decimal, sizes also with a unit).
 * Array keys (raft.peers) cannot be set this way. Returns 0 or UD_EINVAL ("http.listen: ...").
 */
int ud_writer_config_set(struct ud_writer_config *cfg, const char *name, const char *value,
                         char *errmsg);

/*
 * Checks what single keys cannot (heartbeat below election timeout, node_id among the peers,
 * a TLS key with the certificate, distinct listen addresses) and derives the defaults that depend
 * on other keys (backup_root, raft_advertise from peers, the engine's idle timeout).
 * Returns 0 or UD_EINVAL.
 */
int ud_writer_config_finish(struct ud_writer_config *cfg, char *errmsg);

/*
 * Names where the value of key section.name came from, for messages about it: "w.toml:7: [http]
 * tls_key" when a file set it, "[http] tls_key (set by a flag)", or "[http] tls_key" for the
 * default. Writes at most size bytes (NUL included) to buf and returns buf.
 */
const char *ud_writer_config_where(const struct ud_writer_config *cfg, const char *section,
                                   const char *name, char *buf, size_t size);

/*
 * Splits "host:port" ("127.0.0.1:4000", "[::1]:4000") into host (without brackets, at most hostsz
 * bytes with the NUL) and port (0..65535). host is an IPv4 or IPv6 literal: listeners bind to
 * addresses, not names. Returns 0 or UD_EINVAL with errmsg saying why.
 */
int ud_writer_config_split_address(const char *address, char *host, size_t hostsz, int *port,
                                   char *errmsg);

#endif
