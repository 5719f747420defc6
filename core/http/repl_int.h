/* Internals shared by the replication endpoints: repl.c (acks, status, timer, acks=isr),
 * wal_stream.c (WAL streams) and snapshot.c (LMDB snapshots). Loop thread only. */
#ifndef UD_CORE_HTTP_REPL_INT_H
#define UD_CORE_HTTP_REPL_INT_H

#include "core/http/http_int.h"
#include "core/http/replicas.h"

#define UD_REPL_DEFAULT_BATCH     (1u << 20)
#define UD_REPL_DEFAULT_HEARTBEAT 1000u

struct ud_http_stream_hub; /* wal_stream.c */
struct ud_http_snapshot;   /* snapshot.c */

struct ud_http_repl {
    struct ud_http_server *s;
    struct ud_http_repl_options o; /* defaults filled in */
    struct ud_replicas *replicas;  /* owned */
    uv_timer_t timer;              /* follower timeouts, acks=isr deadlines, retention floors */
    int timer_init;
    struct ud_http_stream_hub *hubs; /* one per namespace with subscribers */
    struct ud_http_snapshot *snaps;  /* downloads in progress */
    int snapshot_jobs;               /* copy threads running (abandoned ones included) */
    int stopping;

    /* /metrics */
    size_t subscribers;
    uint64_t streams_total;
    uint64_t stream_bytes;
    uint64_t stream_record_frames;
    uint64_t stream_heartbeats;
    uint64_t snapshots_total;
    uint64_t snapshot_bytes;
    uint64_t acks_total;
    uint64_t isr_waits_ok;
    uint64_t isr_waits_timeout;
};

/* Handlers. */
void ud_http_on_wal_stream(struct ud_http_req *r, void *arg);
void ud_http_on_snapshot(struct ud_http_req *r, void *arg);

/* wal_stream.c: ends every stream (stop: cleanly; ns closing: with an error) of ns, or of every
 * namespace when ns is NULL. */
void ud_http_wal_streams_end(struct ud_http_repl *p, const char *ns, int clean);
/* snapshot.c: cuts the downloads of ns (every one when NULL). */
void ud_http_snapshots_cut(struct ud_http_repl *p, const char *ns);

/* repl.c: re-arms the timer for the tracker's next deadline. */
void ud_http_repl_arm(struct ud_http_repl *p);

#endif
