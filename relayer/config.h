/*
 * unison-relayer configuration: defaults, then the TOML file given with --config, then flags,
 * then ud_relayer_config_finish. The [server], [http], [resp] and [storage] sections are read
 * with the same key table entries as the writer's (core/config.h); [relayer] is the relayer's
 * own. docs/configuration.md lists every key.
 *
 * Data directory layout:
 *   {data_dir}/namespaces/{ns}/          one engine directory per namespace (ud_registry root)
 *   {data_dir}/namespaces/.bootstrap-{ns} a bootstrap in progress (removed when one starts)
 *   {data_dir}/namespaces/.snapshot-{ns}  a snapshot being downloaded
 *   {data_dir}/LOCK                      held (flock) by the running process
 */
#ifndef UD_RELAYER_CONFIG_H
#define UD_RELAYER_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "core/config.h"
#include "core/engine.h"
#include "core/registry.h"

#define UD_RELAYER_NS_SUBDIR     "namespaces"
#define UD_RELAYER_MAX_UPSTREAMS 8
#define UD_RELAYER_MAX_NS        64
#define UD_RELAYER_URL_MAX       256
#define UD_RELAYER_MAX_BODY      (4u << 20)

/* A namespace and the upstreams it follows. */
struct ud_relayer_ns {
    char name[UD_NS_NAME_MAX + 1];
    char upstreams[UD_RELAYER_MAX_UPSTREAMS][UD_RELAYER_URL_MAX]; /* none: the default list */
    unsigned nupstreams;
};

struct ud_relayer_config {
    /* [server] */
    char data_dir[1024];   /* default ./unison-relayer-data */
    char ports_file[1024]; /* "" = none; JSON {"http":N,"resp":N|null,"https":N|null} */
    char log_level[16];
    uint32_t shutdown_timeout_ms; /* default 30000 */

    /* [http] */
    char http_listen[128]; /* default 127.0.0.1:4010 */
    char tls_listen[128];
    char tls_cert[1024];
    char tls_key[1024];
    size_t max_body;

    /* [resp] */
    char resp_listen[128]; /* default 127.0.0.1:6390; "" disables */

    /* [replication]: this relayer's own followers (the next hop), as on the writer. */
    uint32_t min_isr;
    uint32_t isr_max_lag_ms;
    uint64_t isr_max_lag_records;
    uint32_t follower_timeout_ms;
    uint32_t ack_timeout_ms;
    uint32_t stream_batch_bytes;
    uint32_t heartbeat_ms;
    uint32_t retain_for_isr;

    /* [storage]: the relayer has no raft log; its WAL is a cache of the upstream's. */
    struct ud_engine_options engine;

    /* [relayer] */
    char id[64];       /* reported in acks; default "relayer-{hostid}-{http port}" once bound */
    char tls_ca[1024]; /* https upstreams: CA certificates to trust; "" = system store */
    char upstreams[UD_RELAYER_MAX_UPSTREAMS][UD_RELAYER_URL_MAX]; /* default upstream list */
    unsigned nupstreams;
    /* Namespaces to follow; none = every namespace of the default upstreams (discovered). */
    struct ud_relayer_ns namespaces[UD_RELAYER_MAX_NS];
    unsigned nnamespaces;
    uint32_t heartbeat_timeout_ms; /* no byte for this long: upstream dead, default 3000 */
    uint32_t ack_interval_ms;      /* default 1000 */
    uint32_t ack_min_interval_ms;  /* default 5 */
    uint32_t discover_interval_ms; /* default 5000 */
    uint32_t backoff_max_ms;       /* default 5000 */
    size_t apply_queue_bytes;      /* verified records waiting for apply before pausing, 8 MiB */
    uint32_t forward_writes;       /* 1: HTTP writes are forwarded to the upstream; 0: 403 */

    /* Where each key's value came from, for errors found after loading (ud_relayer_config_where).
     */
    struct ud_conf_origin origin;
};

void ud_relayer_config_defaults(struct ud_relayer_config *cfg);

/* Loads a TOML file over cfg (all sections; [raft] and [write] are the writer's and refused).
 * Returns 0, UD_EINVAL (errmsg "file:line: [section] key: what"), UD_ENOTFOUND, UD_EIO. */
int ud_relayer_config_load(struct ud_relayer_config *cfg, const char *path, char *errmsg);

/*
 * Sets "section.key" from text (flags). relayer.upstreams takes "URL[,URL...]"; relayer.namespaces
 * takes "ns[,ns...]" where each ns may carry its own upstreams: "ns=URL|URL". Returns 0 or
 * UD_EINVAL naming the key.
 */
int ud_relayer_config_set(struct ud_relayer_config *cfg, const char *name, const char *value,
                          char *errmsg);

/* Checks what single keys cannot (an upstream for every namespace, TLS key with certificate,
 * distinct listeners). Returns 0 or UD_EINVAL. */
int ud_relayer_config_finish(struct ud_relayer_config *cfg, char *errmsg);
/* "file:line: [section] name", or "[section] name (set by a flag)": where a key's value came
 * from, into buf (for messages of checks after loading). */
const char *ud_relayer_config_where(const struct ud_relayer_config *cfg, const char *section,
                                    const char *name, char *buf, size_t size);

#endif
