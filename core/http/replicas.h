/*
 * Follower bookkeeping of a serving node (docs/replication.md): the followers that acknowledge
 * what they applied (POST /api/v1/{ns}/wal/ack), their lag, the in-sync replica (ISR) set, the
 * followers' retention floor, and writes waiting for `acks=isr`.
 *
 * Plain logic with no sockets and no clock of its own: every call takes the caller's monotonic
 * time in milliseconds, so the unit tests drive time. One thread (the loop thread).
 *
 * Lag in milliseconds is measured against this node's own observations: ud_replicas_observe
 * records when each visible LSN was first seen (a bounded ring per namespace), and a follower's
 * lag is the age of the oldest observation above its applied LSN (0 when it applied everything
 * seen). Its resolution is that of the observations (every stream wake-up and every ack).
 */
#ifndef UD_CORE_HTTP_REPLICAS_H
#define UD_CORE_HTTP_REPLICAS_H

#include <stddef.h>
#include <stdint.h>

#define UD_REPLICA_ID_MAX      128
#define UD_REPLICA_ADDRESS_MAX 256
#define UD_REPLICAS_MAX        1024 /* followers per node, all namespaces together */

struct ud_replicas_options {
    uint32_t min_isr;             /* acks=isr: followers that must have applied a write; 0 = 1 */
    uint64_t isr_max_lag_ms;      /* ISR: lag and age of the last ack at most this; 0 = 5000 */
    uint64_t isr_max_lag_records; /* ISR: lag in records at most this; 0 = no record bound */
    uint64_t follower_timeout_ms; /* a follower silent this long is forgotten; 0 = 30000 */
};

struct ud_replica_ack {
    const char *id;      /* 1..UD_REPLICA_ID_MAX bytes, printable ASCII */
    const char *address; /* may be NULL or ""; at most UD_REPLICA_ADDRESS_MAX bytes */
    uint64_t applied_lsn;
    uint64_t
        subtree_min_lsn; /* lowest applied LSN of the follower's own subtree (itself if none) */
};

struct ud_replica_status {
    const char *ns;
    const char *id;
    const char *address;
    uint64_t applied_lsn;
    uint64_t subtree_min_lsn;
    uint64_t lag_records;
    uint64_t lag_ms;
    uint64_t last_ack_age_ms;
    int in_isr;
};

struct ud_replicas;

/* Allocates a tracker (defaults filled in). Returns 0 or UD_ENOMEM. Free with ud_replicas_free. */
int ud_replicas_new(const struct ud_replicas_options *opts, struct ud_replicas **out);

/* Calls every waiting write back with UD_ECLOSED, then frees. NULL allowed. */
void ud_replicas_free(struct ud_replicas *r);

/* The options in effect (defaults filled in). */
const struct ud_replicas_options *ud_replicas_options(const struct ud_replicas *r);

/* Records that ns's newest LSN visible to streams is lsn at now_ms. Cheap when unchanged. */
void ud_replicas_observe(struct ud_replicas *r, const char *ns, uint64_t lsn, uint64_t now_ms);

/*
 * Records an acknowledgement of follower ack->id for namespace ns (last_lsn: ns's visible LSN now,
 * observed as by ud_replicas_observe), then calls back the waiting writes it satisfies.
 * Returns 0, UD_EINVAL (bad id or address, or an applied LSN beyond last_lsn: errmsg says which),
 * UD_ELIMIT (UD_REPLICAS_MAX followers tracked already).
 */
int ud_replicas_ack(struct ud_replicas *r, const char *ns, const struct ud_replica_ack *ack,
                    uint64_t last_lsn, uint64_t now_ms, char *errmsg);

/* Calls fn for each follower of ns (every namespace when ns is NULL), in the order of first ack.
 * The status strings are borrowed for the call. Returns the count. */
size_t ud_replicas_list(struct ud_replicas *r, const char *ns, uint64_t now_ms,
                        void (*fn)(void *arg, const struct ud_replica_status *st), void *arg);

/* Followers of ns now in the ISR, and all followers of ns. */
void ud_replicas_count(struct ud_replicas *r, const char *ns, uint64_t now_ms, uint32_t *isr,
                       uint32_t *followers);

/* The retention floor for ns: the lowest applied LSN + 1 of its ISR followers, 0 when it has
 * none (a follower outside the ISR never holds the WAL back: it bootstraps from a snapshot). */
uint64_t ud_replicas_retain_floor(struct ud_replicas *r, const char *ns, uint64_t now_ms);

/* Called back once: status 0 (acked >= needed followers applied the LSN), UD_ETIMEDOUT (the
 * deadline passed first) or UD_ECLOSED (tracker freed or namespace forgotten). */
typedef void (*ud_replicas_wait_cb)(void *arg, int status, uint32_t acked, uint32_t needed);

/*
 * A write of ns at lsn waits until min_isr followers have applied it, or deadline_ms. Returns 1
 * when that is already true (cb is not called), else 0: cb is called later from
 * ud_replicas_ack, ud_replicas_tick, ud_replicas_forget_ns or ud_replicas_free. Aborts on OOM
 * (network glue).
 */
int ud_replicas_wait(struct ud_replicas *r, const char *ns, uint64_t lsn, uint64_t deadline_ms,
                     uint64_t now_ms, ud_replicas_wait_cb cb, void *arg);

/* Forgets followers silent for follower_timeout_ms and times out waits past their deadline.
 * Returns the next time something expires (UINT64_MAX: nothing pending). */
uint64_t ud_replicas_tick(struct ud_replicas *r, uint64_t now_ms);

/* ns was deleted: its followers are forgotten, its waits called back with UD_ECLOSED. */
void ud_replicas_forget_ns(struct ud_replicas *r, const char *ns);

/* Totals for /metrics. */
size_t ud_replicas_followers(const struct ud_replicas *r);
size_t ud_replicas_waiting(const struct ud_replicas *r);

#endif
