/*
 * A follower's state, shared by its loop side (relayer/follower.c: connections, frames, the state
 * machine) and its apply thread (relayer/apply.c: bootstrap, ud_ns_apply). Fields marked (mu)
 * are guarded by mu; (loop) ones are touched by the loop thread only; (worker) by the apply
 * thread only.
 */
#ifndef UD_RELAYER_FOLLOWER_INT_H
#define UD_RELAYER_FOLLOWER_INT_H

#include <pthread.h>
#include <stdint.h>
#include <uv.h>

#include "core/engine.h"
#include "core/err.h"
#include "relayer/relayer.h"

enum apply_kind {
    APPLY_RECORD = 0,    /* a verified record to append/apply */
    APPLY_BOOTSTRAP = 1, /* install the snapshot downloaded to data (a path) */
    APPLY_DROP = 2,      /* the upstream no longer has the namespace: delete the local copy */
    /* A snapshot download, written here rather than on the loop (a large snapshot would stall
     * every stream and request of the process while its bytes reach the disk): */
    APPLY_SNAPSHOT_OPEN = 3,  /* create (truncate) the file at data (a path) */
    APPLY_SNAPSHOT_DATA = 4,  /* append the bytes to it (counted in queued_bytes) */
    APPLY_SNAPSHOT_ABORT = 5, /* the download failed: close and delete the file */
};

struct apply_item {
    struct apply_item *next;
    enum apply_kind kind;
    uint64_t lsn;
    uint32_t len;
    uint8_t data[]; /* record bytes (mutable: ud_ns_apply stamps the LSN), or a path */
};

/* What the apply thread reports back to the loop (mu). */
enum worker_event {
    EV_NONE = 0,
    EV_BOOTSTRAP_BEGUN = 1,     /* the snapshot is in place: stream from boot_from */
    EV_BOOTSTRAP_INSTALLED = 2, /* every record up to the checkpoint is in: namespace open */
    EV_FAILED = 4,              /* an apply or bootstrap error (fail_msg) */
    EV_DRAINED = 8,             /* the queue fell below the resume mark or emptied */
    EV_REPLACING = 16,          /* about to replace the namespace: end its streams (replace_ok) */
    EV_DROPPED = 32,            /* the local copy was deleted (APPLY_DROP) */
    EV_NS_FAILED = 64,          /* with EV_FAILED: the copy refuses applies until reopened */
    /* with EV_FAILED: a bootstrap failed to become the copy (its begin, its WAL or its install:
     * a failing disk), counted with failed copies since its own stream's heartbeats reset fails */
    EV_COPY_FAILED = 128,
    /* with EV_FAILED: the bootstrap's store is another namespace of the name than its stream's
     * records (boot_stream_incarnation): not installed, bootstrapped again from that upstream */
    EV_BOOT_OTHER_NS = 256,
};

struct ud_follower {
    struct ud_relayer *r;
    char ns[UD_NS_NAME_MAX + 1];
    char upstreams[UD_RELAYER_MAX_UPSTREAMS][UD_RELAYER_URL_MAX];
    unsigned nupstreams;
    unsigned cur; /* (loop) index of the upstream in use */

    enum ud_follower_state state;  /* (loop) only set_state changes it */
    struct ud_http_transfer *xfer; /* (loop) the stream or snapshot download */
    struct ud_http_transfer *ack_xfer;
    /* (loop) the current 404 carried x-unison-ns-deleted: 1: the delete's raft index
     * (x-unison-ns-deleted-at, or UD_DELETED_AT_UNKNOWN); 0: it did not */
    uint64_t told_deleted;
    /* (loop) which namespace of the name the local copy is (ud_ns_incarnation): at start, then
     * the installed copy's after each bootstrap; 0: unknown. A bootstrap, even one that keeps
     * the copy and fails, does not change it: the drop and keep decisions compare against it */
    uint64_t incarnation;
    /* (loop) the current bootstrap's snapshot's incarnation (x-unison-ns-incarnation; 0: none
     * said, or 0 said): its stream must be of the same namespace */
    uint64_t boot_incarnation;
    int boot_incarnation_said; /* (loop) the snapshot had the header (0 included) */
    /* (loop) go_backoff stays with the current upstream: it showed a newer namespace of the name
     * (a stream of another incarnation, or a refused install), which is bootstrapped from it.
     * Kept until a bootstrap installs, or until STAY_ATTEMPTS bootstraps from it failed
     * (stay_failures): then the next upstream is tried, as after any failure */
    int stay_upstream;
    int stay_failures; /* (loop) bootstraps failed since stay_upstream was set (-1: none tried) */
    /* (loop) the current stream is of a newer namespace of the name: its incarnation; 0: not */
    uint64_t incarnation_changed;
    /* (loop) the local copy has no incarnation and its newest record (raft index undecided_newest)
     * is newer than the current stream's incarnation undecided: kept or dropped at the stream's
     * first record (continue_unstamped), nothing appended until then; 0: no such verdict waits */
    uint64_t undecided;
    uint64_t undecided_newest;
    /* (loop) the local copy was deleted because the upstream said the namespace was deleted (or
     * re-created): the delete's raft index as told (at most the new create's; or
     * UD_DELETED_AT_UNKNOWN); 0: not. Cleared by the next bootstrap (passed on to downstream
     * relayers in this relayer's 404s, and /status/upstream) */
    uint64_t upstream_deleted;
    struct ud_stream_parser *parser; /* (loop) */
    int paused;                      /* (loop) the stream is paused for backpressure */
    /* (loop) uv_now when it was paused, or when the apply thread last made progress since (the
     * applied LSN moved past paused_lsn): /readyz's stall is time without progress */
    uint64_t paused_ms;
    uint64_t paused_lsn;  /* (loop) the applied LSN at paused_ms */
    int bootstrap_wanted; /* (loop) connect by bootstrapping */
    int stream_bootstrap; /* (loop) the current stream feeds a bootstrap */
    uint32_t fails;       /* (loop) consecutive failures, for the backoff */
    /* (loop) consecutive bootstraps whose copy failed again (EV_NS_FAILED) or that failed to
     * install (EV_COPY_FAILED), for the backoff:
     * records and heartbeats reset fails, not this; it goes back to 0 once a copy has stayed
     * healthy for backoff_max_ms and applied past failed_lsn or been caught up all that time
     * (note_copy_healthy) */
    uint32_t copy_failures;
    uint64_t copy_failed_lsn; /* (loop) the LSN the last failed copy did not apply */
    /* (loop) uv_now since when this stream has been caught up without a break (applied >= the
     * upstream's last LSN, streaming, not bootstrapping); 0: it is not */
    uint64_t streak_caught_up_ms;
    uint64_t installed_ms; /* (loop) uv_now of the last bootstrap installed */
    uint64_t last_byte_ms; /* (loop) uv_now of the last byte received */
    uint64_t last_ack_ms;  /* (loop) when the last ack was sent */
    uint64_t acked_lsn;    /* (loop) applied LSN carried by the last ack sent */
    uv_timer_t ack_timer;  /* (loop) a prompt ack held back by ack_min_interval_ms */
    uint64_t caught_up_ms; /* (loop) last time applied >= the upstream's last LSN */
    uv_timer_t tick;       /* (loop) heartbeat watch and acks, every 250 ms */
    uv_timer_t backoff;
    uv_async_t wake; /* apply thread -> loop */
    int handles_open;
    char snapshot_path[1200];

    /* counters (loop) */
    uint64_t upstream_last_lsn;
    uint64_t upstream_first_lsn;
    uint64_t upstream_time_ns;
    uint64_t reconnects;
    uint64_t bytes;
    uint64_t records;
    uint64_t heartbeats;
    uint64_t bootstraps;
    uint64_t acks_sent;
    char last_error[UD_ERRMSG_SIZE];   /* (loop) why the last connection failed; kept after */
    char stream_error[UD_ERRMSG_SIZE]; /* (loop) why this relayer rejected the current stream */

    /* apply thread */
    pthread_t thread;
    int thread_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct apply_item *head, *tail; /* (mu) */
    size_t queued_bytes;            /* (mu) */
    int busy;                       /* (mu) an item is being processed outside mu */
    int stop;                       /* (mu) */
    int fail_pending;               /* (mu) records are discarded until the loop acknowledges */
    unsigned events;                /* (mu) enum worker_event bits for the loop */
    char fail_msg[UD_ERRMSG_SIZE];  /* (mu) */
    uint64_t boot_from, boot_ckpt;  /* (mu) */
    uint64_t installed_incarnation; /* (mu) ud_ns_incarnation of the last bootstrap installed */
    /* (mu) the nonzero incarnation the current bootstrap's stream said; 0: none. The install
     * refuses a store of another one (apply.c) */
    uint64_t boot_stream_incarnation;
    uint64_t next_lsn;          /* (mu) LSN after the last record appended or applied */
    int has_ns;                 /* (mu) the namespace exists locally */
    int replace_ok;             /* (mu) the loop ended the namespace's streams */
    int replaced;               /* (loop) ud_http_server_ns_closing was called */
    struct ud_ns *nsp;          /* (worker) acquired reference */
    struct ud_ns_bootstrap *bs; /* (worker) */
    size_t unsynced_bytes;      /* (worker) applied since the last sync_mode=always fsync */
    uint64_t synced_ns;         /* (worker) ud_mono_ns of that fsync */
    int snap_fd;                /* (worker) the snapshot being downloaded, or -1 */
    char snap_path[1200];       /* (worker) its path */

    void (*stopped)(struct ud_follower *f); /* (loop) called once STOPPED and closed */
};

/* relayer/apply.c */
int ud_follower_apply_start(struct ud_follower *f, char *errmsg);
/* Queues a copy of a verified record (loop). */
void ud_follower_apply_record(struct ud_follower *f, const uint8_t *data, uint32_t len,
                              uint64_t lsn);
/* A snapshot download through the apply thread (loop): open creates the file at path, data
 * queues a copy of len bytes to append (a write failure fails the follower, EV_FAILED), abort
 * closes and deletes it. */
void ud_follower_apply_snapshot_open(struct ud_follower *f, const char *path);
void ud_follower_apply_snapshot_data(struct ud_follower *f, const void *data, size_t len);
void ud_follower_apply_snapshot_abort(struct ud_follower *f);
/* Queues the installation of the downloaded snapshot at path (loop): the file opened by
 * ud_follower_apply_snapshot_open is closed first. */
void ud_follower_apply_bootstrap(struct ud_follower *f, const char *path);
/* Queues the deletion of the local copy (loop). */
void ud_follower_apply_drop(struct ud_follower *f);
/* Stops and joins the thread; queued items are dropped (they will be streamed again). */
void ud_follower_apply_stop(struct ud_follower *f);

#endif
