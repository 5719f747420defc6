/*
 * unison-writer configuration: defaults (the zero-config single writer), then the TOML file given
 * with --config, then command-line flags. docs/configuration.md lists every key.
 */
#ifndef UD_WRITER_CONFIG_H
#define UD_WRITER_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "core/engine.h"

#define UD_MAX_PEERS 7

struct ud_raft_peer {
    uint64_t id;
    char address[128]; /* host:port of its raft listener */
};

struct ud_writer_config {
    char data_dir[1024];   /* default ./unison-data */
    char ports_file[1024]; /* "" = none; JSON {"http":N,"resp":N,"raft":N} written after binding */
    char log_level[16];    /* debug|info|warn|error, default info */

    /* [http] */
    char http_listen[128]; /* host:port, default 127.0.0.1:4000; port 0 = any */
    char tls_cert[1024];   /* "" = no TLS listener */
    char tls_key[1024];
    char tls_listen[128];   /* default 127.0.0.1:4443 when a certificate is set */
    size_t max_body;        /* default 1048576 (inclusive) */
    char backup_root[1024]; /* default {data_dir}/backups: wal/btree backups are confined here */

    /* [resp] */
    char resp_listen[128]; /* default 127.0.0.1:6380; "" disables */

    /* [raft] */
    uint64_t node_id;         /* default 1 */
    char raft_listen[128];    /* default 127.0.0.1:4100 */
    char raft_advertise[128]; /* default = raft_listen after binding */
    char cluster_id[64];      /* default "unison"; a data dir of another cluster is refused */
    struct ud_raft_peer
        peers[UD_MAX_PEERS]; /* voters of the initial configuration; empty = just us */
    unsigned npeers;
    uint32_t election_timeout_ms;  /* default 1000 */
    uint32_t heartbeat_timeout_ms; /* default 100 */
    uint32_t snapshot_threshold;   /* default 128 */
    uint32_t snapshot_trailing;    /* default 64 */

    /* [write] */
    uint32_t commit_max_bytes;     /* group commit: max bytes of one raft entry, default 1 MiB */
    uint32_t commit_max_inflight;  /* raft_apply calls in flight, default 4 */
    uint32_t admission_timeout_ms; /* wait for the flush before 503, default 2000 */
    uint32_t txn_idle_timeout_ms;  /* idle transactions aborted after, default 60000 */

    /* [storage]: engine options for every namespace (dir and name are set per namespace) */
    struct ud_engine_options engine;
    char default_namespace[65]; /* created on first start, default "default" */
};

/* Fills cfg with the zero-config defaults. */
void ud_writer_config_defaults(struct ud_writer_config *cfg);

/*
 * Loads a TOML file over the current values. Unknown sections or keys and bad values are errors
 * naming file, line and key ("n1.toml:7: [raft] peers: expected an array of \"id@host:port\"").
 * Returns 0, UD_EINVAL (errmsg set) or UD_ENOTFOUND (file missing).
 */
int ud_writer_config_load(struct ud_writer_config *cfg, const char *path, char *errmsg);

#endif
