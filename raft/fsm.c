/* The writer's raft FSM: committed commands -> ud_ns_apply on every namespace, snapshot metadata.
 */
#include "raft/fsm.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <raft.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/dir.h"
#include "core/endian.h"
#include "core/log.h"
#include "proto/command.h"
#include "proto/record.h"
#include "raft/fsm_tables.h"
#include "raft/set_aside.h"
#include "raft/snapshot_policy.h"

#define LOG "raft"

/* Snapshot metadata layout (docs/raft.md "Snapshots"): version 2 adds the member directory and
 * the idempotency window after the namespaces; version 3 has the same layout, its window up to
 * 131,072 keys instead of 4,096 (a different state machine: a writer that only knows version 2
 * must refuse it rather than forget retries the others remember); version 4 adds each key's
 * request digest (a writer that only knows version 3 could not refuse a key reused for another
 * request). Versions 1 to 3 are read, their keys' digests unknown. */
#define SNAPSHOT_VERSION     4
#define SNAPSHOT_DIGESTS     4 /* first version whose keys carry their request's digest */
#define SNAPSHOT_HEADER_SIZE 16
#define SNAPSHOT_NS_FIXED    (1 + 8 + 8 + 4)

/* A result with the capacity of its arrays: the FSM's own (synchronous applies) or a queued
 * entry's. */
struct outcome {
    struct ud_fsm_result res; /* first: raft's apply callback gets &res */
    size_t cap_records;
    size_t cap_msgs;
};

/* An idempotency key of the entry being applied and what the window said about it. */
struct span {
    uint32_t first, n;
    const uint8_t *key;
    size_t key_len;
    const uint8_t *digest;           /* of the request, NULL when the command has none */
    const struct ud_idem_entry *dup; /* set at its first record when the key was seen before */
    int reused;      /* dup was remembered for a different request: the records are refused */
    int conditional; /* some record of the request carries a condition */
};

/* What one applier owns: the loop (synchronous applies) or the apply thread. */
struct applier {
    uint8_t *scratch; /* the record being stamped and applied */
    size_t cap_scratch;
    struct span *spans;
    size_t nspans, cap_spans, ki; /* ki: the span at or after the record being applied */
    /* The command's conditions (cond_at): cond is the first at or after the record being
     * applied, when have_cond. */
    struct ud_command_iter conds;
    struct ud_command_cond cond;
    int have_cond;
};

/* A committed RECORDS entry handed to the apply thread (ud_fsm_start_pipeline). */
struct pending {
    struct outcome out; /* first: raft's apply callback gets &out.res */
    struct pending *next;
    uint64_t index;
    /* The entry's bytes: raft's own buffer, or copy (owned, freed once applied) where raft might
     * free its buffer first (pending_new). NULL once applied. */
    const uint8_t *buf;
    uint8_t *copy;
    size_t len;
    ud_fsm_applied_cb cb; /* set on the loop by ud_fsm_on_applied, called at delivery */
    void *arg;
};

/* Bytes of queued entries above which raft's apply hook waits for the apply thread: a follower
 * whose thread falls behind must not buffer the leader's log without bound. The leader never gets
 * near it: its submitter bounds the entries it has in flight. */
#define PIPELINE_MAX_QUEUED (64u << 20)

/* Entries up to this size are applied on the loop when the pipeline is idle (pipeline_hook). */
#define PIPELINE_INLINE_MAX (32u << 10)

/* A follower's entries left for after raft's callback (apply_later): at most this many, and
 * PIPELINE_INLINE_MAX bytes in all. */
#define LATER_MAX 16

/* A stalled head is retried by the apply thread itself, first after RETRY_MIN_MS, the wait
 * doubling up to RETRY_MAX_MS: the cause (a full disk) goes away without anyone telling the FSM,
 * and a write refused meanwhile must not have to wait long once space returns. */
#define RETRY_MIN_MS 10u
#define RETRY_MAX_MS 250u

struct ud_fsm {
    struct raft_fsm rf; /* rf.data = this */
    struct raft *raft;  /* borrowed */
    struct ud_registry *reg;
    /* Replicated tables (raft/fsm_tables.h): changed by the applier only; the directory by
     * MEMBER commands, which run on the loop after the apply thread has drained. */
    struct ud_idem idem;
    struct ud_directory dir;
    struct outcome sync; /* result of the last synchronous apply */
    struct applier loop_applier;
    struct applier thread_applier;

    /* Counters and the last hook failure: written by the loop and the apply thread. */
    pthread_mutex_t stats_mu;
    struct ud_fsm_stats stats;
    int err; /* UD_E* code of the last failure of a raft hook, errmsg its message */
    char errmsg[UD_ERRMSG_SIZE];

    /* The apply pipeline. head..tail are queued, oldest first (the head may be being applied);
     * done..done_tail are applied and wait for delivery on the loop. */
    int pipelined;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t work; /* the thread waits for entries, a retry, or the stop */
    pthread_cond_t idle; /* the loop waits for the queue to drain or get room */
    struct pending *head, *tail;
    struct pending *done, *done_tail;
    size_t queued_bytes;
    /* The head failed with a storage error and has not applied since (stall_locked): the
     * thread retries it at retry_at_ns, sooner when asked (ud_fsm_wait_applied). */
    int stalled;
    uint64_t retry_at_ns;
    uint64_t retry_ms; /* the current backoff */
    uint64_t failures; /* failed attempts at a head, ever */
    int stop;
    uint64_t handed;   /* entries queued so far */
    uint64_t finished; /* ... and applied by the thread */
    /* The thread is reading an entry's bytes (mu released); hold keeps it from starting the
     * next one while the loop copies the queue's entries out of raft's buffers (own_entries). */
    int applying;
    int hold;
    /* raft's receive callback, which recv_guard wraps (set by start_guard, the io's start that
     * ud_fsm_attach put in place); guarded once it is: only then may queued entries borrow
     * raft's buffers (pending_new). Loop thread. */
    int (*io_start)(struct raft_io *io, unsigned msecs, raft_io_tick_cb tick, raft_io_recv_cb recv);
    raft_io_recv_cb raft_recv;
    int guarded;
    /* ud_fsm_stats' lent, copied and owned: counted on the loop, read by any thread. */
    _Atomic uint64_t lent, copied, owned;
    /* The newest entry applied on the loop (apply_now). Written and read on the loop thread
     * only (raft's hooks and ud_fsm_applied_index), so it needs no lock. */
    uint64_t sync_index;
    uv_async_t async;
    /* A follower's small entries that raft committed inside one of its callbacks, applied on
     * the loop once that callback returned (apply_later), oldest first. Loop thread only. */
    struct pending *later[LATER_MAX];
    unsigned later_n;
    size_t later_bytes;
    uv_check_t later_check;
    /* Started once later_check applied something: the loop's next poll then does not block, so
     * check handles that ran before later_check in that phase (the HTTP server's ?min_lsn= sweep)
     * look again at once instead of at the next timer or message. Stops itself. */
    uv_idle_t later_idle;
    int open_handles; /* async, later_check and later_idle until all are closed */
    void (*closed)(void *arg);
    void *closed_arg;

    /* What the last failed restore found this node behind on (loop thread): namespaces with
     * the snapshot's LSNs, and the snapshot directory's HTTP URLs of the other members. */
    struct ud_catchup_plan behind;
    /* A restore failed for another reason than being behind (the pipeline stalled on a full
     * disk, memory): raft 0.15 had already taken the snapshot's position, so it may never apply
     * past it here. Once the pipeline is no longer stalled, behind (then without targets) is
     * offered as a plan all the same: the node closes raft and starts it again, and the
     * restore runs again from the stored snapshot (restore_hook). Loop thread. */
    int restart;
    /* The leader's snapshot raft stored here does not decode (a corrupted transfer, a leader
     * of a newer format): raft's term and index of it, set aside before raft starts again
     * (ud_fsm_undecodable), and the node takes no raft message meanwhile (deaf), so that
     * nothing past that snapshot is stored and acknowledged here. deaf also when the restore
     * failed on local state (a damaged tombstone file). Loop thread. */
    uint64_t undecodable_term, undecodable_index;
    int deaf;
    /* Why the node went deaf, as the restore hook found it: its own copy, since the shared
     * error (set_error) is overwritten by a stalled apply thread's retries. Loop thread. */
    char deaf_why[UD_ERRMSG_SIZE];
    /* Where that snapshot is recorded for the next start (ud_fsm_set_data_dir; empty: nowhere,
     * as on raft_fixture), whether the record is written (no restart is asked for before: a
     * start without it would load that snapshot and fail), and whether writing it failed once
     * (logged once). Loop thread. */
    char data_dir[PATH_MAX];
    int recorded, record_failed;
    /* Namespaces of a snapshot that the peers deleted since (ud_fsm_waive). */
    struct ud_catchup_plan waived;

    /* When raft snapshots and what it keeps behind (loop thread); policy_on once configured. */
    struct ud_snapshot_policy policy;
    int policy_on;
};

const char *ud_fsm_result_msg(const struct ud_fsm_result *res, size_t i)
{
    if (i >= res->nrecords || res->records[i].msg < 0 || (size_t)res->records[i].msg >= res->nmsgs)
        return "";
    return res->msgs[res->records[i].msg];
}

/*
 * Outcomes that follow from the replicated state alone, so every writer reaches the same one: they
 * are recorded and the entry goes on. Anything else (I/O, a full disk, memory) is this node's
 * problem and must not turn into a different outcome here than on the others.
 */
static int deterministic(int rc)
{
    switch (rc) {
    case UD_ECORRUPT:
    case UD_EINVAL:
    case UD_ELIMIT:
    case UD_ENOTFOUND:
    case UD_EEXIST:
    case UD_ETXN:
    case UD_ERANGE:
    case UD_ECONFLICT:
    case UD_EPRECONDITION:
        return 1;
    default:
        return 0;
    }
}

static int grow(void **p, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap)
        return 0;
    size_t n = *cap ? *cap : 64;
    while (n < need)
        n *= 2;
    void *q = realloc(*p, n * size);
    if (q == NULL)
        return UD_ENOMEM;
    *p = q;
    *cap = n;
    return 0;
}

/* Counters of one apply, added to the FSM's under its lock once the entry is done. */
static void stats_add(struct ud_fsm *fsm, const struct ud_fsm_stats *d)
{
    pthread_mutex_lock(&fsm->stats_mu);
    fsm->stats.entries += d->entries;
    fsm->stats.applied += d->applied;
    fsm->stats.rejected += d->rejected;
    fsm->stats.skipped += d->skipped;
    fsm->stats.snapshots += d->snapshots;
    fsm->stats.later += d->later;
    if (d->max_hlc > fsm->stats.max_hlc)
        fsm->stats.max_hlc = d->max_hlc;
    pthread_mutex_unlock(&fsm->stats_mu);
}

static void set_error(struct ud_fsm *fsm, int rc, const char *msg)
{
    pthread_mutex_lock(&fsm->stats_mu);
    fsm->err = rc;
    snprintf(fsm->errmsg, sizeof fsm->errmsg, "%s", msg);
    pthread_mutex_unlock(&fsm->stats_mu);
}

static void set_rejected(struct outcome *o, struct ud_fsm_stats *d, size_t i, int status,
                         const char *msg)
{
    struct ud_fsm_result *res = &o->res;
    res->records[i].lsn = 0;
    res->records[i].status = status;
    res->records[i].msg = -1;
    if (grow((void **)&res->msgs, &o->cap_msgs, res->nmsgs + 1, sizeof *res->msgs) == 0) {
        snprintf(res->msgs[res->nmsgs], sizeof res->msgs[0], "%s", msg);
        res->records[i].msg = (int32_t)res->nmsgs++;
    }
    d->rejected++;
}

/*
 * Idempotency keys (docs/raft.md "Idempotency"). A key covers the records of one request. At its
 * first record the window is asked: a key seen before makes its records take the outcome
 * remembered for it instead of being applied again; otherwise, after its last record, the key
 * is remembered with the outcome. Every writer does the same at the same entry.
 */
static struct span *span_at(struct ud_fsm *fsm, struct applier *ap, const char *ns, uint32_t p)
{
    while (ap->ki < ap->nspans && ap->spans[ap->ki].first + ap->spans[ap->ki].n <= p)
        ap->ki++;
    if (ap->ki == ap->nspans || ap->spans[ap->ki].first > p)
        return NULL;
    struct span *sp = &ap->spans[ap->ki];
    if (p == sp->first) {
        sp->dup = ud_idem_find(&fsm->idem, ns, sp->key, sp->key_len);
        sp->reused = sp->dup != NULL && !ud_idem_same_request(sp->dup, sp->digest);
    }
    return sp;
}

static void dup_result(struct outcome *o, struct ud_fsm_stats *d, const struct span *sp, size_t i,
                       uint32_t p)
{
    const struct ud_idem_entry *e = sp->dup;
    if (sp->reused) {
        /* Not the first request's answer: that one was about other data. Nothing is written and
         * the window keeps the key's first request. */
        char msg[UD_ERRMSG_SIZE];
        snprintf(msg, sizeof msg, "Idempotency-Key %.*s was used for a different request",
                 (int)sp->key_len, (const char *)sp->key);
        set_rejected(o, d, i, UD_EKEYREUSED, msg);
        return;
    }
    if (e->status == UD_EINDOUBT) {
        char msg[UD_ERRMSG_SIZE];
        ud_err_indoubt(
            msg, sizeof msg,
            "the first write with this Idempotency-Key is not known on this writer: it was "
            "refused, or its record is no longer in the WAL (retention, a namespace deleted "
            "since, a read error); read the key, a retry is answered so again");
        set_rejected(o, d, i, e->status, msg);
        return;
    }
    if (e->status != 0) {
        char msg[UD_ERRMSG_SIZE];
        snprintf(msg, sizeof msg, "the first write with this Idempotency-Key was rejected: %s",
                 ud_strerror(e->status));
        set_rejected(o, d, i, e->status, msg);
        return;
    }
    uint32_t k = p - sp->first;
    if (e->nrecords > 0 && k >= e->nrecords)
        k = e->nrecords - 1;
    o->res.records[i].lsn = e->first_lsn != 0 ? e->first_lsn + k : 0;
    o->res.records[i].status = 0;
    o->res.records[i].msg = -1;
}

/*
 * The span's key, its records done. A first record that replay skipped (it is in the WAL already)
 * has no LSN in the result: it is looked up in the WAL, so the window holds the same LSN as on the
 * writers that applied it then.
 *
 * A request whose condition failed is remembered like any rejection: every writer must hold the
 * same keys, or a retry would be a duplicate on some and judged (and maybe applied) on others. A
 * replay cannot always tell a rejected request from an applied one: a miss where the retained WAL
 * covers the position was rejected, for a reason the replay cannot know (a conditional request is
 * remembered as a failed condition, its likeliest cause); a miss before the retained WAL is
 * unknown (retention may have removed the record). The others are remembered as in doubt, so
 * that a retry is answered "outcome unknown", never applied and never told it succeeded.
 */
static void remember(struct ud_fsm *fsm, struct ud_ns *ns, uint64_t index, struct outcome *o,
                     const char *name, const struct span *sp, uint32_t p)
{
    int32_t status = 0;
    for (uint32_t k = sp->first; k <= p && status == 0; k++)
        status = o->res.records[k].status;
    /* A failed condition's result holds the key's LSN, not one of this request. */
    uint64_t lsn = status == 0 ? o->res.records[sp->first].lsn : 0;
    if (lsn == 0 && status == 0) {
        int rc = ud_ns_lsn_of_raft_position(ns, index, sp->first, &lsn);
        if (rc != 0) { /* rejected when first applied, or gone from the WAL */
            lsn = 0;
            status = sp->conditional && rc == UD_ENOTFOUND ? UD_EPRECONDITION : UD_EINDOUBT;
        }
    }
    ud_idem_insert(&fsm->idem, name, sp->key, sp->key_len, sp->digest, lsn, sp->n, status);
}

static void span_end(struct ud_fsm *fsm, struct ud_ns *ns, uint64_t index, struct outcome *o,
                     const char *name, struct span *sp, uint32_t p)
{
    if (sp == NULL || p != sp->first + sp->n - 1)
        return;
    if (sp->dup == NULL)
        remember(fsm, ns, index, o, name, sp, p);
}

/* The condition of the record at position p, or NULL (conditions are in ascending position). */
static const struct ud_command_cond *cond_at(struct applier *ap, uint32_t p)
{
    while (ap->have_cond && ap->cond.pos < p)
        ap->have_cond = ud_command_next_cond(&ap->conds, &ap->cond);
    return ap->have_cond && ap->cond.pos == p ? &ap->cond : NULL;
}

static int version_lsn(void *arg, const uint8_t *value, size_t value_len, uint64_t lsn)
{
    (void)value;
    (void)value_len;
    *(uint64_t *)arg = lsn;
    return 0;
}

/* The LSN of the key that record rec writes (0: absent): 0, UD_EINVAL (not a write of one KV
 * key), or the read's failure (UD_ELIMIT for a key over the limit; the rest is this node's). */
static int key_version(struct ud_ns *ns, const uint8_t *rec, size_t len, uint64_t *cur, char *msg)
{
    struct ud_record r;
    struct ud_entry e;
    struct ud_entry_iter it;
    *cur = 0;
    if (ud_record_decode(rec, len, &r, NULL) != 0 || r.entry_type != UD_ENTRY_KV ||
        r.txn_state != UD_TXN_NONE || r.entry_count != 1)
        return ud_errf(msg, UD_EINVAL, "a condition applies to a write of one KV key only");
    ud_entry_iter_init(&it, &r);
    ud_entry_iter_next(&it, &e);
    int rc = ud_ns_kv_get_with(ns, e.key, e.key_len, version_lsn, cur);
    if (rc == UD_ENOTFOUND) {
        *cur = 0;
        return 0;
    }
    if (rc != 0) /* a key over the limit is the record's fault; the rest is this node's */
        return ud_errf(msg, rc == UD_ELIMIT ? rc : ud_err_local(rc),
                       "reading the key's version for its condition: %s", ud_strerror(rc));
    return 0;
}

/*
 * Judges condition c of record rec (docs/format-command.md "Conditions") against the namespace
 * as this applier leaves it: the apply thread is the namespace's only writer, so the key's
 * version read here is the one at this raft position on every writer, and nothing can come
 * between the check and the write. 0 when it holds; UD_EPRECONDITION with *cur the key's LSN
 * (0: absent) and msg when it does not; another deterministic rejection (a record that is not a
 * one-key KV write, a key over the limit) with msg; or a storage failure (UD_EIO, UD_ENOMEM).
 */
static int judge(struct ud_ns *ns, const struct ud_command_cond *c, const uint8_t *rec, size_t len,
                 uint64_t *cur, char *msg)
{
    int rc = key_version(ns, rec, len, cur, msg);
    return rc != 0 ? rc : ud_command_cond_check(c->kind, c->lsn, *cur, msg);
}

/* Collects the command's keys for span_at, and starts on its conditions (cond_at). */
static int load_spans(struct applier *ap, const struct ud_command *cmd)
{
    ud_command_conds_iter_init(&ap->conds, cmd);
    ap->have_cond = ud_command_next_cond(&ap->conds, &ap->cond);
    ap->nspans = ap->ki = 0;
    if (grow((void **)&ap->spans, &ap->cap_spans, cmd->nkeys, sizeof *ap->spans) != 0)
        return UD_ENOMEM;
    struct ud_command_iter it;
    struct ud_command_key k;
    ud_command_keys_iter_init(&it, cmd);
    while (ud_command_next_key(&it, &k))
        ap->spans[ap->nspans++] = (struct span){.first = k.first_pos,
                                                .n = k.nrecords,
                                                .key = k.key,
                                                .key_len = k.key_len,
                                                .digest = k.digest,
                                                .dup = NULL};
    /* Which requests carry a condition (both lists ascend). */
    struct ud_command_iter ci;
    struct ud_command_cond c;
    size_t si = 0;
    ud_command_conds_iter_init(&ci, cmd);
    while (si < ap->nspans && ud_command_next_cond(&ci, &c)) {
        while (si < ap->nspans && ap->spans[si].first + ap->spans[si].n <= c.pos)
            si++;
        if (si < ap->nspans && ap->spans[si].first <= c.pos)
            ap->spans[si].conditional = 1;
    }
    return 0;
}

static int deleted_index(struct ud_fsm *fsm, const char *name, uint64_t *index, char *errmsg);

/* Applies the records of one group; *pos and *ri advance over all of them. */
static int apply_group(struct ud_fsm *fsm, struct applier *ap, struct outcome *o,
                       struct ud_fsm_stats *d, uint64_t index, const struct ud_command_group *g,
                       uint32_t *pos, size_t *ri)
{
    struct ud_fsm_result *res = &o->res;
    struct ud_command_iter it;
    const uint8_t *rec;
    size_t len;
    struct ud_ns *ns = NULL;
    int rc = ud_registry_acquire(fsm->reg, g->ns, &ns);
    if (rc != 0) {
        /* A later entry deleted the namespace (its tombstone is newer than this entry): this is
         * a replay of an entry from when it may have existed, and whether its records applied
         * then is not known here. Otherwise the namespace is not there, as on every writer. */
        char msg[UD_ERRMSG_SIZE], why[UD_ERRMSG_SIZE];
        uint64_t deleted = 0;
        int mrc = deleted_index(fsm, g->ns, &deleted, why);
        if (mrc != 0) /* whether it existed at this entry is unknown: the safe side */
            ud_warn(LOG, "namespace %s: %s; its keyed writes here are remembered as in doubt",
                    g->ns, why);
        int replayed = mrc != 0 || deleted > index;
        int status = replayed ? UD_EINDOUBT : UD_ENOTFOUND;
        if (replayed)
            ud_err_indoubt(msg, sizeof msg,
                           "namespace %s was deleted at raft index %llu, after this write "
                           "(or its tombstone cannot be read): whether it applied is not known on "
                           "this writer",
                           g->ns, (unsigned long long)deleted);
        else
            snprintf(msg, sizeof msg, "namespace not found: %s", g->ns);
        for (uint32_t i = 0; i < g->nrecords; i++, (*pos)++, (*ri)++) {
            set_rejected(o, d, *ri, status, msg);
            /* Remembered (refused, or in doubt when replayed): a writer that applied it while
             * the namespace existed remembers the key, and one replaying it after a delete must
             * hold it too, or a retry after a re-create would apply here only. */
            struct span *sp = span_at(fsm, ap, g->ns, *pos);
            span_end(fsm, NULL, index, o, g->ns, sp, *pos);
        }
        return 0;
    }
    uint64_t last_index;
    uint32_t last_pos;
    ud_ns_last_raft_position(ns, &last_index, &last_pos);
    if (last_index == 0) {
        /* Records, but none from raft: the WAL lost every record raft wrote (only the store's
         * checkpoint is left). Which entries it holds is unknown; applying them again would give
         * them new LSNs here only. A catch-up refuses such a copy too. */
        uint64_t last_lsn = ud_ns_last_lsn(ns);
        if (last_lsn > 0) {
            ud_registry_release(fsm->reg, ns);
            /* The way out is an operator's (docs/raft.md "Namespaces without a raft
             * position"): nothing here can tell a lost copy from one to keep. */
            return ud_errf(res->errmsg, UD_EIO,
                           "raft entry %llu: namespace %s has LSNs up to %llu but none from "
                           "raft: not applied; created after raft's last snapshot: stop the "
                           "writer, remove its directory; else restart it with peers to fetch it",
                           (unsigned long long)index, g->ns, (unsigned long long)last_lsn);
        }
    }
    ud_command_group_iter_init(&it, g);
    rc = 0;
    while (ud_command_next_record(&it, &rec, &len)) {
        uint32_t p = (*pos)++;
        size_t i = (*ri)++;
        struct span *sp = span_at(fsm, ap, g->ns, p);
        if (sp != NULL && sp->dup != NULL) {
            dup_result(o, d, sp, i, p);
            if (res->records[i].status == UD_EPRECONDITION) {
                /* The first answer again, with the key's LSN as it is now (a 412 names it; the
                 * retry may carry no condition at all: the digest does not cover If-Match). */
                uint64_t cur;
                char msg[UD_ERRMSG_SIZE];
                if (key_version(ns, rec, len, &cur, msg) == 0)
                    res->records[i].lsn = cur;
            }
            span_end(fsm, ns, index, o, g->ns, sp, p);
            continue;
        }
        /* Already in the WAL: raft replays its log after a restart (or retries this entry after
         * a storage failure) and the namespace recovered it from its own log. */
        if (index < last_index || (index == last_index && p <= last_pos)) {
            d->skipped++;
            span_end(fsm, ns, index, o, g->ns, sp, p);
            continue;
        }
        /* Replays skip a record before its condition is looked at (above): its outcome was
         * decided when it was first applied, against the state at its position, and the key may
         * have moved on since. A record after the namespace's last raft position is judged
         * against a namespace that holds exactly the records up to that position, as on its
         * first attempt: a failed condition writes nothing, so it leaves no trace to skip by,
         * and is judged again to the same outcome. */
        const struct ud_command_cond *c = cond_at(ap, p);
        if (c != NULL) {
            uint64_t cur;
            char msg[UD_ERRMSG_SIZE] = "";
            int crc = judge(ns, c, rec, len, &cur, msg);
            if (crc != 0 && deterministic(crc)) {
                set_rejected(o, d, i, crc, msg);
                if (crc == UD_EPRECONDITION)
                    res->records[i].lsn = cur;
                span_end(fsm, ns, index, o, g->ns, sp, p);
                continue;
            }
            if (crc != 0) {
                rc = ud_errf(res->errmsg, crc, "raft entry %llu: namespace %s: record %u: %s",
                             (unsigned long long)index, g->ns, p, msg);
                break;
            }
        }
        if (grow((void **)&ap->scratch, &ap->cap_scratch, len, 1) != 0) {
            rc = ud_errf(res->errmsg, UD_ENOMEM, "raft entry %llu: out of memory",
                         (unsigned long long)index);
            break;
        }
        /* A copy, stamped: the entry's bytes stay as raft has them (it sends them to
         * followers), and a retried record starts from them again. */
        memcpy(ap->scratch, rec, len);
        ud_record_set_raft_position(ap->scratch, index, p);
        uint64_t lsn = 0;
        char msg[UD_ERRMSG_SIZE] = "";
        int arc = ud_ns_apply(ns, ap->scratch, len, &lsn, msg);
        if (arc == 0) {
            res->records[i].lsn = lsn;
            res->records[i].status = 0;
            res->records[i].msg = -1;
            last_index = index;
            last_pos = p;
            d->applied++;
            uint64_t hlc = ud_record_get_hlc(ap->scratch);
            if (hlc > d->max_hlc)
                d->max_hlc = hlc;
        } else if (deterministic(arc)) {
            set_rejected(o, d, i, arc, msg);
        } else {
            rc = ud_errf(res->errmsg, arc, "raft entry %llu: namespace %s: record %u: %s",
                         (unsigned long long)index, g->ns, p, msg);
            break;
        }
        span_end(fsm, ns, index, o, g->ns, sp, p);
    }
    ud_registry_release(fsm->reg, ns);
    return rc;
}

static int apply_records(struct ud_fsm *fsm, struct applier *ap, struct outcome *o,
                         struct ud_fsm_stats *d, uint64_t index, const struct ud_command *cmd,
                         int retry)
{
    struct ud_fsm_result *res = &o->res;
    if (grow((void **)&res->records, &o->cap_records, cmd->nrecords, sizeof *res->records) != 0)
        return ud_errf(res->errmsg, UD_ENOMEM, "raft entry %llu: out of memory for %u results",
                       (unsigned long long)index, cmd->nrecords);
    /* A retried entry keeps the outcomes of the records its first attempt applied. */
    if (!retry || res->nrecords != cmd->nrecords) {
        for (uint32_t i = 0; i < cmd->nrecords; i++)
            res->records[i] = (struct ud_fsm_record_result){.lsn = 0, .status = 0, .msg = -1};
        res->nrecords = cmd->nrecords;
    }
    if (load_spans(ap, cmd) != 0)
        return ud_errf(res->errmsg, UD_ENOMEM, "raft entry %llu: out of memory for %u keys",
                       (unsigned long long)index, cmd->nkeys);
    struct ud_command_iter it;
    struct ud_command_group g;
    uint32_t pos = 0;
    size_t ri = 0;
    int rc = 0;
    ud_command_iter_init(&it, cmd);
    while (rc == 0 && ud_command_next_group(&it, &g))
        rc = apply_group(fsm, ap, o, d, index, &g, &pos, &ri);
    return rc;
}

static void record_delete(struct ud_fsm *fsm, const char *name, uint64_t index);
static void record_create(struct ud_fsm *fsm, const char *name, uint64_t index);

/* ud_fsm_apply into outcome o, by applier ap (the loop's or the apply thread's). */
static int apply_entry(struct ud_fsm *fsm, struct applier *ap, struct outcome *o, uint64_t index,
                       const uint8_t *buf, size_t len)
{
    struct ud_fsm_result *res = &o->res;
    struct ud_fsm_stats d = {0};
    int retry = res->raft_index == index;
    if (!retry) {
        res->raft_index = index;
        res->nrecords = 0;
        res->nmsgs = 0;
    }
    res->kind = 0;
    res->status = 0;
    res->errmsg[0] = '\0';

    struct ud_command cmd;
    char err[UD_ERRMSG_SIZE] = "";
    int rc = ud_command_decode(buf, len, &cmd, err);
    if (rc == UD_EVERSION) {
        /* A newer writer's command: it may apply elsewhere, so it is no rejection (which would
         * diverge from the writers that apply it) but this writer's failure. The pipeline stalls
         * on it and retries until this writer is replaced by one that knows the format. */
        return ud_errf(res->errmsg, UD_EVERSION, "raft entry %llu: %s", (unsigned long long)index,
                       err);
    }
    if (rc != 0) {
        /* Every writer decodes the same bytes the same way: a rejection, not a failure. */
        res->status = ud_errf(res->errmsg, UD_ECORRUPT, "raft entry %llu does not decode: %s",
                              (unsigned long long)index, err);
        ud_error(LOG, "%s", res->errmsg);
        d.entries++;
        stats_add(fsm, &d);
        return 0;
    }
    res->kind = cmd.kind;
    switch (cmd.kind) {
    case UD_COMMAND_RECORDS:
        rc = apply_records(fsm, ap, o, &d, index, &cmd, retry);
        break;
    case UD_COMMAND_MEMBER:
        ud_directory_set(&fsm->dir, cmd.member_id, cmd.member_http, cmd.member_resp);
        ud_info(LOG, "raft entry %llu: writer %llu at %s%s%s", (unsigned long long)index,
                (unsigned long long)cmd.member_id, cmd.member_http[0] ? cmd.member_http : "-",
                cmd.member_resp[0] ? ", RESP " : "", cmd.member_resp);
        break;
    case UD_COMMAND_NS_CREATE:
        /* Replaying a create after a restart meets the namespace already there: UD_EEXIST, and
         * the result goes to no one. */
        rc = ud_registry_create_incarnation(fsm->reg, cmd.ns, index, res->errmsg);
        if (rc == 0)
            record_create(fsm, cmd.ns, index);
        if (deterministic(rc)) {
            res->status = rc;
            rc = 0;
        }
        break;
    default: /* UD_COMMAND_NS_DELETE */
        rc = ud_registry_delete(fsm->reg, cmd.ns, res->errmsg);
        /* The registry lets go of the namespace only once its directory is renamed (or found
         * gone); a failure before (memory, a rename that a full or failing disk refuses) leaves
         * it registered here alone. That is this node's problem, not the entry's outcome: the
         * entry fails as any storage failure does, and is tried again (docs/raft.md "The FSM").
         * Files left behind after the rename change nothing. Every failure but UD_ENOTFOUND
         * leaves the namespace registered (core/registry.h). */
        if (rc != 0 && rc != UD_ENOTFOUND) {
            char why[UD_ERRMSG_SIZE];
            snprintf(why, sizeof why, "%s", res->errmsg);
            rc = ud_errf(res->errmsg, ud_err_local(rc), "raft entry %llu: %s",
                         (unsigned long long)index, why);
            break;
        }
        record_delete(fsm, cmd.ns, index);
        res->status = rc; /* 0, or UD_ENOTFOUND everywhere */
        rc = 0;
        break;
    }
    if (rc == 0)
        d.entries++;
    stats_add(fsm, &d);
    return rc;
}

int ud_fsm_apply(struct ud_fsm *fsm, uint64_t index, const uint8_t *buf, size_t len,
                 const struct ud_fsm_result **out)
{
    *out = &fsm->sync.res;
    return apply_entry(fsm, &fsm->loop_applier, &fsm->sync, index, buf, len);
}

/* --- snapshots ---------------------------------------------------------------------------------
 */

struct ns_list {
    char (*names)[UD_NS_NAME_MAX + 1];
    size_t n, cap;
    int err;
};

static void collect_name(void *arg, const char *name)
{
    struct ns_list *l = arg;
    if (l->err != 0)
        return;
    if (grow((void **)&l->names, &l->cap, l->n + 1, sizeof *l->names) != 0) {
        l->err = UD_ENOMEM;
        return;
    }
    snprintf(l->names[l->n++], sizeof l->names[0], "%s", name);
}

/* Every registered name into *l; UD_ENOMEM (l empty) when some is missing. A snapshot that
 * lists too few namespaces would make its restores delete the others (drop_unlisted). */
static int list_names(struct ud_fsm *fsm, struct ns_list *l)
{
    size_t n = 0;
    if (ud_registry_list(fsm->reg, collect_name, l, &n) == 0 && l->err == 0 && l->n == n)
        return 0;
    free(l->names);
    *l = (struct ns_list){0};
    return UD_ENOMEM;
}

int ud_fsm_snapshot(struct ud_fsm *fsm, uint64_t index, uint8_t **out, size_t *out_len,
                    char *errmsg)
{
    struct ns_list l = {0};
    if (list_names(fsm, &l) != 0)
        return ud_errf(errmsg, UD_ENOMEM, "snapshot: out of memory listing namespaces");
    size_t cap = SNAPSHOT_HEADER_SIZE + l.n * (SNAPSHOT_NS_FIXED + UD_NS_NAME_MAX) +
                 ud_tables_encoded_size(&fsm->idem, &fsm->dir);
    uint8_t *buf = malloc(cap);
    if (buf == NULL) {
        free(l.names);
        return ud_errf(errmsg, UD_ENOMEM, "snapshot: out of memory");
    }
    size_t len = SNAPSHOT_HEADER_SIZE;
    uint32_t count = 0;
    for (size_t i = 0; i < l.n; i++) {
        struct ud_ns *ns;
        if (ud_registry_acquire(fsm->reg, l.names[i], &ns) != 0)
            continue; /* deleted meanwhile (not by the FSM: it runs on this thread) */
        uint64_t last_lsn = ud_ns_last_lsn(ns), ri;
        uint32_t rp;
        ud_ns_last_raft_position(ns, &ri, &rp);
        ud_registry_release(fsm->reg, ns);
        size_t n = strlen(l.names[i]);
        buf[len] = (uint8_t)n;
        memcpy(buf + len + 1, l.names[i], n);
        len += 1 + n;
        ud_put_le64(buf + len, last_lsn);
        ud_put_le64(buf + len + 8, ri);
        ud_put_le32(buf + len + 16, rp);
        len += 20;
        count++;
    }
    free(l.names);
    ud_tables_encode(&fsm->idem, &fsm->dir, buf, &len);
    buf[0] = SNAPSHOT_VERSION;
    buf[1] = buf[2] = buf[3] = 0;
    ud_put_le32(buf + 4, count);
    ud_put_le64(buf + 8, index);
    *out = buf;
    *out_len = len;
    struct ud_fsm_stats d = {.snapshots = 1};
    stats_add(fsm, &d);
    return 0;
}

int ud_fsm_snapshot_sync(struct ud_fsm *fsm, const uint8_t *buf, size_t len, char *errmsg)
{
    if (len < SNAPSHOT_HEADER_SIZE)
        return ud_errf(errmsg, UD_ECORRUPT, "snapshot metadata of %zu bytes", len);
    uint32_t count = ud_get_le32(buf + 4);
    size_t off = SNAPSHOT_HEADER_SIZE;
    for (uint32_t i = 0; i < count; i++) {
        if (len - off < 1 || len - off - 1 < (size_t)buf[off] + 20)
            return ud_errf(errmsg, UD_ECORRUPT, "snapshot metadata: namespace %u is malformed", i);
        char name[UD_NS_NAME_MAX + 1];
        size_t n = buf[off];
        memcpy(name, buf + off + 1, n);
        name[n] = '\0';
        off += 1 + n + 20;
        struct ud_ns *ns;
        if (ud_registry_acquire(fsm->reg, name, &ns) != 0)
            continue; /* deleted since: its records went with it */
        int rc = ud_ns_sync(ns, errmsg);
        ud_registry_release(fsm->reg, ns);
        if (rc != 0)
            return ud_errwrap(errmsg, rc, "snapshot at raft index %llu",
                              (unsigned long long)ud_get_le64(buf + 8));
    }
    return 0;
}

/*
 * A raft snapshot may list a namespace that a later entry deleted: restarting, the namespace is
 * gone (or is a newer namespace of the same name) while the snapshot still asks for its LSN. So a
 * delete leaves {root}/.raft-deleted-{name} with its raft index (the registry skips dot names), and
 * the restore check does without a namespace deleted after the snapshot: replaying the log after
 * it deletes the namespace again.
 *
 * These files are never removed. One is needed for as long as a raft snapshot older than its
 * delete can still be restored here, and that is not only the newest local snapshot at the next
 * start: a node whose raft log is re-fetched after damage (docs/raft.md) keeps its namespaces and
 * installs whatever snapshot the leader has, which may predate the delete. Nothing local bounds
 * that, so dropping a file is not clearly safe. The cost is one file of a few bytes per deleted
 * name (a later delete of the name overwrites it; an earlier one never does).
 *
 * The other way round, a snapshot does not list a namespace created after it, nor one deleted
 * before it. A create leaves {root}/.raft-created-{name} with its raft index, so that the restore
 * tells the two apart (drop_unlisted), also for a namespace without records. Those are never
 * removed either (one per name ever created), for the same reason, but by a catch-up that installs
 * a peer's store without an incarnation (ud_fsm_created_marker_agree): a marker left by another
 * namespace of the name would stamp that store with the wrong create at the next start.
 */
static void marker_path_in(const char *root, const char *what, const char *name, char *out,
                           size_t size)
{
    snprintf(out, size, "%s/.raft-%s-%s", root, what, name);
}

static void marker_path(struct ud_fsm *fsm, const char *what, const char *name, char *out,
                        size_t size)
{
    marker_path_in(ud_registry_root(fsm->reg), what, name, out, size);
}

/* Writes the marker `what` of namespace name under root with raft index index, durably; errmsg on
 * failure. */
static int record_index_in(const char *root, const char *what, const char *name, uint64_t index,
                           char *errmsg)
{
    char path[PATH_MAX], text[32];
    marker_path_in(root, what, name, path, sizeof path);
    int len = snprintf(text, sizeof text, "%llu\n", (unsigned long long)index);
    return ud_dir_write_file(path, text, (size_t)len, UD_DIR_SYNC, errmsg);
}

int ud_fsm_created_marker_agree(const char *ns_root, const char *name, uint64_t incarnation,
                                char *errmsg)
{
    if (incarnation != 0)
        return record_index_in(ns_root, "created", name, incarnation, errmsg);
    char path[PATH_MAX];
    marker_path_in(ns_root, "created", name, path, sizeof path);
    if (unlink(path) != 0) {
        if (errno == ENOENT)
            return 0;
        return ud_errf(errmsg, ud_err_from_errno(errno), "remove %s: %s", path, strerror(errno));
    }
    /* The removal is durable before the store it agrees with is used. */
    return ud_dir_sync(ns_root, errmsg);
}

/* Writes the marker `what` of namespace name with raft index index; errmsg on failure. */
static int record_index(struct ud_fsm *fsm, const char *what, const char *name, uint64_t index,
                        char *errmsg)
{
    return record_index_in(ud_registry_root(fsm->reg), what, name, index, errmsg);
}

static int read_index(struct ud_fsm *fsm, const char *what, const char *name, uint64_t *index,
                      char *errmsg);

/* Leaves the tombstone of name at index, unless it holds a later delete already: a restore
 * (drop_unlisted, with the snapshot's index) or a replayed delete must not lower it. */
static void record_delete(struct ud_fsm *fsm, const char *name, uint64_t index)
{
    char errmsg[UD_ERRMSG_SIZE];
    uint64_t had;
    if (read_index(fsm, "deleted", name, &had, errmsg) == 0 && had >= index)
        return;
    if (record_index(fsm, "deleted", name, index, errmsg) != 0)
        ud_warn(LOG,
                "namespace %s deleted at raft index %llu: %s (a restart before the next raft "
                "snapshot may then need a catch-up from a peer)",
                name, (unsigned long long)index, errmsg);
}

static void record_create(struct ud_fsm *fsm, const char *name, uint64_t index)
{
    char errmsg[UD_ERRMSG_SIZE];
    if (record_index(fsm, "created", name, index, errmsg) != 0)
        ud_warn(LOG,
                "namespace %s created at raft index %llu: %s (while it has no records, a restart "
                "before the next raft snapshot deletes it and raft's log creates it again)",
                name, (unsigned long long)index, errmsg);
}

/*
 * The raft index in the marker `what` of namespace name, into *index (0: no marker). Returns 0,
 * or UD_EIO / UD_ECORRUPT with errmsg when the file exists but cannot be read or does not hold an
 * index: taking a tombstone like that for "never deleted" would send the restore to fetch from
 * the peers a namespace they no longer have, and hide the failing disk.
 */
static int read_index(struct ud_fsm *fsm, const char *what, const char *name, uint64_t *index,
                      char *errmsg)
{
    char path[PATH_MAX], text[32];
    *index = 0;
    marker_path(fsm, what, name, path, sizeof path);
    FILE *f = fopen(path, "re");
    if (f == NULL) {
        if (errno == ENOENT)
            return 0;
        return ud_errf(errmsg, ud_err_from_errno(errno), "open %s: %s", path, strerror(errno));
    }
    int rc = 0;
    if (fgets(text, sizeof text, f) == NULL) {
        rc = ferror(f) ? ud_errf(errmsg, UD_EIO, "read %s: %s", path, strerror(errno))
                       : ud_errf(errmsg, UD_ECORRUPT, "%s is empty", path);
    } else {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(text, &end, 10);
        if (errno != 0 || end == text || *end != '\n' || v == 0)
            rc = ud_errf(errmsg, UD_ECORRUPT, "%s does not hold a raft index", path);
        else
            *index = v;
    }
    fclose(f);
    return rc;
}

/* The raft index that last deleted namespace name here (read_index). */
static int deleted_index(struct ud_fsm *fsm, const char *name, uint64_t *index, char *errmsg)
{
    return read_index(fsm, "deleted", name, index, errmsg);
}

uint64_t ud_fsm_ns_deleted(struct ud_fsm *fsm, const char *name)
{
    char errmsg[UD_ERRMSG_SIZE];
    uint64_t deleted, created;
    if (deleted_index(fsm, name, &deleted, errmsg) != 0 || deleted == 0)
        return 0;
    /* A later create (applied here) makes the tombstone an earlier name's; an unreadable create
     * marker proves nothing either way. */
    if (read_index(fsm, "created", name, &created, errmsg) != 0)
        return 0;
    return deleted > created ? deleted : 0;
}

static int is_waived(const struct ud_fsm *fsm, const char *name, uint64_t index)
{
    if (fsm->waived.snapshot_index != index)
        return 0;
    for (size_t i = 0; i < fsm->waived.ntargets; i++)
        if (strcmp(fsm->waived.targets[i].ns, name) == 0)
            return 1;
    return 0;
}

void ud_fsm_waive(struct ud_fsm *fsm, const struct ud_catchup_plan *gone)
{
    ud_catchup_plan_free(&fsm->waived);
    if (gone == NULL)
        return;
    fsm->waived.snapshot_index = gone->snapshot_index;
    for (size_t i = 0; i < gone->ntargets && gone->snapshot_index > 0; i++)
        ud_catchup_plan_target(&fsm->waived, gone->targets[i].ns, gone->targets[i].lsn);
}

/* Whether the local namespace (holding LSN lsn or past it) is another namespace of that name than
 * the one a snapshot at raft index `index` lists at lsn, its newest record from raft position
 * (snap_ri, snap_rp). Raft positions grow with LSNs within one namespace, and every record of a
 * copy deleted since comes from entries before the delete, the listed namespace's from entries
 * after its create. *ri gets the local position compared (0: none). */
static int other_namespace(struct ud_ns *ns, const char *name, uint64_t lsn, uint64_t snap_ri,
                           uint32_t snap_rp, uint64_t index, uint64_t *ri)
{
    uint64_t li;
    uint32_t lp, rp;
    ud_ns_last_raft_position(ns, &li, &lp);
    if (li == 0) {
        /* Records (the caller checked), but none from raft: the WAL lost every record raft
         * wrote. Nothing tells which namespace or entries they are: fetched again. */
        *ri = 0;
        return 1;
    }
    if (lsn == 0) {
        /* Listed empty (created, nothing written yet at the snapshot): records here from
         * entries at or before the snapshot belong to a copy deleted before that create. */
        *ri = li;
        return li != 0 && li <= index;
    }
    if (snap_ri == 0)
        return 0; /* the snapshot names no position: nothing to compare */
    int rc = ud_ns_raft_position_at(ns, lsn, ri, &rp);
    if (rc == 0)
        return *ri != 0 && (*ri != snap_ri || rp != snap_rp);
    if (rc != UD_EGONE)
        ud_warn(LOG,
                "raft snapshot at index %llu lists namespace %s at LSN %llu: reading this "
                "node's record at that LSN: %s; comparing its newest record's raft position",
                (unsigned long long)index, name, (unsigned long long)lsn, ud_strerror(rc));
    /* Retention removed the record: the newest one here is at or past it, so a copy of the
     * listed namespace has a position at or past the listed one. */
    *ri = li;
    return li != 0 && (li < snap_ri || (li == snap_ri && lp < snap_rp));
}

/* Whether the snapshot's namespace table (well formed) lists name. */
static int snapshot_lists(const uint8_t *buf, const char *name)
{
    uint32_t count = ud_get_le32(buf + 4);
    size_t off = SNAPSHOT_HEADER_SIZE, n = strlen(name);
    for (uint32_t i = 0; i < count; i++) {
        if (buf[off] == n && memcmp(buf + off + 1, name, n) == 0)
            return 1;
        off += 1 + buf[off] + 20;
    }
    return 0;
}

/*
 * After the check of a snapshot at raft index `index` passed: deletes each namespace here that
 * the snapshot does not list and that this node created at or before that index. An entry at or
 * before the snapshot deleted it, which this node never applied (it was away, and no log holds
 * that entry any more), and no entry after the snapshot will: kept, it would live on here alone,
 * take writes the others reject, and make a later create of its name UD_EEXIST here only.
 *
 * A namespace created after the snapshot is not listed either, and is kept: restarting from the
 * node's own snapshot, or installing a leader's older than what this node applied (its raft log
 * re-fetched after damage), raft's log after the snapshot creates it. Its create index is its
 * .raft-created marker; without one (a namespace from before the markers, or installed by a
 * catch-up), the raft index of its newest record, at most the create's. A namespace with neither
 * is deleted: if it was created after the snapshot, raft's log creates it again, empty as it was.
 * A marker that cannot be read counts as none (that choice is safe either way).
 *
 * Each delete leaves a tombstone with the snapshot's index (the entry that deleted it is at or
 * before it), as the entry's apply would have.
 */
static int drop_unlisted(struct ud_fsm *fsm, const uint8_t *buf, uint64_t index, char *errmsg)
{
    struct ns_list l = {0};
    if (list_names(fsm, &l) != 0)
        return ud_errf(errmsg, UD_ENOMEM,
                       "out of memory listing the namespaces to restore a raft snapshot");
    int rc = 0;
    for (size_t i = 0; i < l.n && rc == 0; i++) {
        const char *name = l.names[i];
        if (snapshot_lists(buf, name))
            continue;
        char why[UD_ERRMSG_SIZE] = "";
        uint64_t created, ri;
        uint32_t rp;
        if (read_index(fsm, "created", name, &created, why) != 0) {
            ud_warn(LOG, "namespace %s: %s; its newest record tells when it was created", name,
                    why);
            created = 0;
        }
        struct ud_ns *ns;
        if (ud_registry_acquire(fsm->reg, name, &ns) != 0)
            continue;
        ud_ns_last_raft_position(ns, &ri, &rp);
        ud_registry_release(fsm->reg, ns);
        if (created > index || ri > index)
            continue;
        rc = ud_registry_delete(fsm->reg, name, why);
        if (rc == UD_ENOTFOUND) /* gone meanwhile: what the snapshot says */
            rc = 0;
        if (rc != 0) {
            rc = ud_errf(errmsg, ud_err_local(rc),
                         "raft snapshot at index %llu does not list namespace %s: %s",
                         (unsigned long long)index, name, why);
            break;
        }
        record_delete(fsm, name, index);
        ud_warn(LOG,
                "raft snapshot at index %llu does not list namespace %s (created here by raft "
                "entry %llu, newest record from entry %llu; 0: unknown): an entry before the "
                "snapshot that this node did not apply deleted it; deleted here too",
                (unsigned long long)index, name, (unsigned long long)created,
                (unsigned long long)ri);
    }
    free(l.names);
    return rc;
}

/* Walks the snapshot's namespace table: validates it all (check == 0), or compares each entry
 * with local state (check == 1; the table is known to be well formed) and, when nothing is
 * behind, deletes the namespaces it does not list that predate it (drop_unlisted). */
static int restore_walk(struct ud_fsm *fsm, const uint8_t *buf, size_t len, int check, char *errmsg)
{
    uint32_t count = ud_get_le32(buf + 4);
    uint64_t index = ud_get_le64(buf + 8);
    size_t off = SNAPSHOT_HEADER_SIZE;
    for (uint32_t i = 0; i < count; i++) {
        if (len - off < 1 || len - off - 1 < (size_t)buf[off] + 20 ||
            !ud_command_name_valid((const char *)buf + off + 1, buf[off]))
            return ud_errf(errmsg, UD_ECORRUPT,
                           "raft snapshot metadata: namespace %u at byte %zu is malformed", i, off);
        char name[UD_NS_NAME_MAX + 1];
        size_t n = buf[off];
        memcpy(name, buf + off + 1, n);
        name[n] = '\0';
        off += 1 + n;
        uint64_t lsn = ud_get_le64(buf + off);
        uint64_t snap_ri = ud_get_le64(buf + off + 8);
        uint32_t snap_rp = ud_get_le32(buf + off + 16);
        off += 20;
        if (!check)
            continue;
        struct ud_ns *ns;
        uint64_t have = 0, ri = 0;
        int found = ud_registry_acquire(fsm->reg, name, &ns) == 0;
        int other = 0; /* a namespace of that name, but not the one the snapshot lists */
        if (found) {
            have = ud_ns_last_lsn(ns);
            /* Holding the LSN is not enough: a namespace deleted and created again while this
             * node was away starts at LSN 1 again, and the snapshot may list the new one at an
             * LSN the old copy here has passed. The record at that LSN tells them apart: the
             * snapshot carries the raft position of its newest record. */
            if (have > 0 && have >= lsn)
                other = other_namespace(ns, name, lsn, snap_ri, snap_rp, index, &ri);
            ud_registry_release(fsm->reg, ns);
        }
        if (found && have >= lsn && !other)
            continue;
        uint64_t deleted_at;
        int rc = deleted_index(fsm, name, &deleted_at, errmsg);
        if (rc != 0)
            return ud_errwrap(errmsg, rc, "raft snapshot at index %llu lists namespace %s",
                              (unsigned long long)index, name);
        if (deleted_at > index) {
            ud_info(LOG,
                    "raft snapshot at index %llu lists namespace %s at LSN %llu, deleted here by "
                    "raft entry %llu after it: not needed",
                    (unsigned long long)index, name, (unsigned long long)lsn,
                    (unsigned long long)deleted_at);
            continue;
        }
        if (is_waived(fsm, name, index)) {
            ud_warn(LOG,
                    "raft snapshot at index %llu lists namespace %s at LSN %llu, which the "
                    "peers deleted since: not needed here (a later entry deletes it)",
                    (unsigned long long)index, name, (unsigned long long)lsn);
            continue;
        }
        char why[UD_ERRMSG_SIZE] = "";
        if (other && ri == 0) {
            snprintf(why, sizeof why,
                     "raft snapshot at index %llu lists namespace %s at LSN %llu; this node's "
                     "copy holds LSN %llu but no record with a raft position (its WAL lost them): "
                     "out-of-band catch-up from a peer is needed",
                     (unsigned long long)index, name, (unsigned long long)lsn,
                     (unsigned long long)have);
            ud_warn(LOG, "%s", why);
        } else if (other) {
            snprintf(why, sizeof why,
                     "raft snapshot at index %llu lists namespace %s at LSN %llu from raft entry "
                     "%llu, but this node's copy has a record from entry %llu: another "
                     "namespace of that name (deleted and created again while this node was "
                     "away): out-of-band catch-up from a peer is needed",
                     (unsigned long long)index, name, (unsigned long long)lsn,
                     (unsigned long long)snap_ri, (unsigned long long)ri);
            ud_warn(LOG, "%s", why); /* the error below names only the first namespace */
        }
        /* Every namespace behind is a target of the catch-up; the message names the first. */
        if (fsm->behind.ntargets == 0) {
            if (other)
                ud_errf(errmsg, UD_ERANGE, "%s", why);
            else if (!found)
                ud_errf(errmsg, UD_ERANGE,
                        "raft snapshot at index %llu needs namespace %s at LSN %llu, which "
                        "this node does not have: out-of-band catch-up from a peer is needed",
                        (unsigned long long)index, name, (unsigned long long)lsn);
            else
                ud_errf(errmsg, UD_ERANGE,
                        "raft snapshot at index %llu needs namespace %s at LSN %llu but this "
                        "node holds LSN %llu: out-of-band catch-up from a peer is needed",
                        (unsigned long long)index, name, (unsigned long long)lsn,
                        (unsigned long long)have);
        }
        fsm->behind.snapshot_index = index;
        if ((other ? ud_catchup_plan_replace(&fsm->behind, name, lsn)
                   : ud_catchup_plan_target(&fsm->behind, name, lsn)) != 0)
            return ud_errf(errmsg, UD_ENOMEM, "out of memory restoring a raft snapshot");
    }
    if (check && fsm->behind.ntargets > 0) {
        /* Peers to catch up from: the snapshot's member directory (the FSM's own tables stay
         * as they are; the restore that succeeds after the catch-up loads them). */
        if (buf[0] >= 2) {
            struct ud_directory scratch_dir;
            char why[UD_ERRMSG_SIZE] = "";
            int rc = ud_tables_decode(NULL, &scratch_dir, buf, len, &off,
                                      buf[0] >= SNAPSHOT_DIGESTS, why);
            uint64_t self = fsm->raft != NULL ? fsm->raft->id : 0;
            for (unsigned i = 0; rc == 0 && i < scratch_dir.n; i++)
                if (scratch_dir.e[i].id != self)
                    rc = ud_catchup_plan_peer(&fsm->behind, scratch_dir.e[i].http);
            if (rc != 0) /* the catch-up still has the [raft] peers of the configuration */
                ud_warn(LOG, "raft snapshot metadata: its member directory gives no peers: %s",
                        rc == UD_ENOMEM ? "out of memory" : why);
        }
        return UD_ERANGE;
    }
    if (check) {
        int rc = drop_unlisted(fsm, buf, index, errmsg);
        if (rc != 0)
            return rc;
    }
    /* Version 2: the replicated tables; validated on the first walk, loaded on the second. */
    if (buf[0] >= 2) {
        int digests = buf[0] >= SNAPSHOT_DIGESTS;
        int rc = check ? ud_tables_decode(&fsm->idem, &fsm->dir, buf, len, &off, digests, errmsg)
                       : ud_tables_decode(NULL, NULL, buf, len, &off, digests, errmsg);
        if (rc != 0)
            return ud_errwrap(errmsg, rc, "raft snapshot metadata");
    } else if (check) {
        ud_idem_clear(&fsm->idem);
    }
    if (off != len)
        return ud_errf(errmsg, UD_ECORRUPT, "raft snapshot metadata: %zu trailing bytes",
                       len - off);
    return 0;
}

/* Whether the metadata decodes (header, namespace table, tables), without looking at local
 * state: 0 or UD_ECORRUPT. */
static int restore_decodes(struct ud_fsm *fsm, const uint8_t *buf, size_t len, char *errmsg)
{
    if (len >= SNAPSHOT_HEADER_SIZE && buf[0] > SNAPSHOT_VERSION)
        return ud_errf(errmsg, UD_ECORRUPT,
                       "raft snapshot metadata of format version %u: this writer reads versions "
                       "1 to %u (a newer writer wrote it: upgrade this one)",
                       buf[0], SNAPSHOT_VERSION);
    if (len < SNAPSHOT_HEADER_SIZE || buf[0] < 1 || buf[1] || buf[2] || buf[3])
        return ud_errf(errmsg, UD_ECORRUPT, "raft snapshot metadata of %zu bytes: bad header", len);
    return restore_walk(fsm, buf, len, 0, errmsg);
}

/* The check against local state, of metadata that decodes. */
static int restore_check(struct ud_fsm *fsm, const uint8_t *buf, size_t len, char *errmsg)
{
    ud_catchup_plan_free(&fsm->behind);
    return restore_walk(fsm, buf, len, 1, errmsg);
}

int ud_fsm_restore(struct ud_fsm *fsm, const uint8_t *buf, size_t len, char *errmsg)
{
    int rc = restore_decodes(fsm, buf, len, errmsg);
    return rc != 0 ? rc : restore_check(fsm, buf, len, errmsg);
}

int ud_fsm_take_behind(struct ud_fsm *fsm, struct ud_catchup_plan *out)
{
    if (fsm->behind.ntargets == 0 && !fsm->restart)
        return 0;
    *out = fsm->behind;
    memset(&fsm->behind, 0, sizeof fsm->behind);
    fsm->restart = 0;
    return 1;
}

/* Writes the record of the leader's snapshot that does not decode here, unless written already:
 * 1 once it is (or there is no data directory to write it in), 0 while writing it fails. */
static int record_undecodable(struct ud_fsm *fsm)
{
    if (fsm->recorded || fsm->data_dir[0] == '\0')
        return 1;
    char errmsg[UD_ERRMSG_SIZE];
    if (ud_raft_record_undecodable(fsm->data_dir, fsm->undecodable_term, fsm->undecodable_index,
                                   errmsg) != 0) {
        if (!fsm->record_failed)
            ud_error(LOG,
                     "%s: raft stays open (taking no message) until the record of the snapshot "
                     "at index %llu is written, tried again every few milliseconds; a start "
                     "without it would load that snapshot and fail",
                     errmsg, (unsigned long long)fsm->undecodable_index);
        fsm->record_failed = 1;
        return 0;
    }
    if (fsm->record_failed)
        ud_info(LOG, "record of the raft snapshot at index %llu that does not decode here written",
                (unsigned long long)fsm->undecodable_index);
    fsm->recorded = 1;
    return 1;
}

/* The restart a failed restore asked for is due once the pipeline has drained: a restore then
 * finds the namespaces where the queued entries left them. For a snapshot that does not decode,
 * not before its record is written (tried again here, as the node's watch timer asks). */
static int restart_due(struct ud_fsm *fsm)
{
    if (!fsm->restart)
        return 0;
    if (fsm->undecodable_index != 0 && !record_undecodable(fsm))
        return 0;
    if (!fsm->pipelined)
        return 1;
    pthread_mutex_lock(&fsm->mu);
    int due = !fsm->stalled && fsm->head == NULL;
    pthread_mutex_unlock(&fsm->mu);
    return due;
}

int ud_fsm_behind_pending(struct ud_fsm *fsm)
{
    return fsm->behind.ntargets > 0 || restart_due(fsm);
}

int ud_fsm_set_data_dir(struct ud_fsm *fsm, const char *data_dir, char *errmsg)
{
    if (snprintf(fsm->data_dir, sizeof fsm->data_dir, "%s", data_dir) >=
        (int)sizeof fsm->data_dir) {
        fsm->data_dir[0] = '\0';
        return ud_errf(errmsg, UD_EINVAL, "data directory %s: path too long", data_dir);
    }
    return 0;
}

const char *ud_fsm_deaf(const struct ud_fsm *fsm)
{
    return fsm->deaf ? fsm->deaf_why : NULL;
}

int ud_fsm_undecodable(const struct ud_fsm *fsm, uint64_t *term, uint64_t *index)
{
    *term = fsm->undecodable_term;
    *index = fsm->undecodable_index;
    return fsm->undecodable_index != 0;
}

int ud_fsm_directory_peers(struct ud_fsm *fsm, uint64_t self, struct ud_catchup_plan *plan)
{
    for (unsigned i = 0; i < fsm->dir.n; i++)
        if (fsm->dir.e[i].id != self && ud_catchup_plan_peer(plan, fsm->dir.e[i].http) != 0)
            return UD_ENOMEM;
    return 0;
}

const struct ud_directory_entry *ud_fsm_member(struct ud_fsm *fsm, uint64_t id)
{
    return ud_directory_get(&fsm->dir, id);
}

static void apply_deferred(struct ud_fsm *fsm);

uint64_t ud_fsm_applied_index(struct ud_fsm *fsm, uint64_t raft_applied)
{
    if (!fsm->pipelined)
        return raft_applied;
    apply_deferred(fsm);
    pthread_mutex_lock(&fsm->mu);
    uint64_t idx = fsm->head != NULL ? fsm->head->index - 1 : raft_applied;
    /* raft advances its last applied index only after the proposer's callback, which runs right
     * after a synchronous apply: an answer given from that callback names the entry it applied. */
    if (fsm->head == NULL && fsm->sync_index > idx)
        idx = fsm->sync_index;
    pthread_mutex_unlock(&fsm->mu);
    return idx;
}

/* --- the apply pipeline --------------------------------------------------------------------- */

/*
 * With the pipeline started, raft's apply hook puts each committed RECORDS entry into a queue and
 * returns at once; a thread applies the queue in order (the same apply_entry as a synchronous
 * apply: WAL append and memtable insert through ud_ns_apply), and the loop delivers each applied
 * entry's result to whoever proposed it. raft's loop thread then goes on with the next log write
 * (its O_DIRECT write and checksums) while the previous entries are applied, instead of one after
 * the other. Measured with redis-benchmark SET (1 KiB values, 800 requests outstanding): the loop
 * thread's CPU per SET went from 9.4 to 5.6 us (docs/benchmarks.md "Writer").
 *
 * What keeps it equivalent to applying inside the hook:
 * - Order: one thread, one FIFO. Namespace commands (rare) are applied on the loop after the queue
 *   has drained, or queued behind a stalled head (pipeline_hook), so LSNs and namespace lifetimes
 *   are what synchronous applies give.
 * - Acknowledgement: a proposer is answered only at delivery, after the entry is applied.
 * - Snapshots and restores wait for the queue to drain first (a snapshot describes the state at
 *   raft's last applied index, and raft truncates its log behind it).
 * - Entry lifetime: the queue reads raft's buffers where raft cannot free them before the entry
 *   is applied, and copies otherwise (pending_new says when raft frees them; recv_guard copies
 *   the queue before a follower's raft drops its log for an InstallSnapshot).
 * - Storage failures: the entry that fails stays queued as the head, and the pipeline is stalled
 *   (stall_locked), whether the thread or the loop (a small entry applied inline) tried it. The
 *   thread retries it on its own, backing off (RETRY_MIN_MS..RETRY_MAX_MS), until it applies;
 *   entries committed meanwhile queue behind it, so nothing is applied out of order. Nothing on
 *   the loop waits for a retry: the writer refuses new writes with the cause while stalled
 *   (ud_fsm_check_stalled), and raft's loop goes on with heartbeats, reads and health checks.
 */

/* Loop or apply thread, mu held: p, the head, failed with rc. The one place a stall begins or
 * goes on. */
static void stall_locked(struct ud_fsm *fsm, struct pending *p, int rc)
{
    set_error(fsm, rc, p->out.res.errmsg);
    if (!fsm->stalled) {
        fsm->stalled = 1;
        fsm->retry_ms = RETRY_MIN_MS;
        ud_error(LOG, "apply stopped: %s; retrying every %u ms at most until it applies",
                 p->out.res.errmsg, RETRY_MAX_MS);
    } else if (fsm->retry_ms < RETRY_MAX_MS) {
        fsm->retry_ms *= 2;
        if (fsm->retry_ms > RETRY_MAX_MS)
            fsm->retry_ms = RETRY_MAX_MS;
    }
    fsm->failures++;
    fsm->retry_at_ns = ud_mono_ns() + fsm->retry_ms * 1000000u;
    pthread_cond_broadcast(&fsm->idle);
}

/* Apply thread, mu held: waits for a head that is due (not stalled, or its retry time came), or
 * the stop. */
static void wait_for_work_locked(struct ud_fsm *fsm)
{
    for (;;) {
        if (fsm->stop || (fsm->head != NULL && !fsm->stalled && !fsm->hold))
            return;
        if (fsm->head == NULL || fsm->hold) {
            pthread_cond_wait(&fsm->work, &fsm->mu);
            continue;
        }
        if (ud_mono_ns() >= fsm->retry_at_ns)
            return;
        struct timespec ts = {.tv_sec = (time_t)(fsm->retry_at_ns / 1000000000u),
                              .tv_nsec = (long)(fsm->retry_at_ns % 1000000000u)};
        pthread_cond_timedwait(&fsm->work, &fsm->mu, &ts);
    }
}

static void thread_apply_loop(struct ud_fsm *fsm)
{
    pthread_mutex_lock(&fsm->mu);
    for (;;) {
        wait_for_work_locked(fsm);
        if (fsm->stop)
            break;
        struct pending *p = fsm->head;
        fsm->applying = 1;
        pthread_mutex_unlock(&fsm->mu);
        int rc = apply_entry(fsm, &fsm->thread_applier, &p->out, p->index, p->buf, p->len);
        p->out.res.applied_ns = ud_mono_ns();
        pthread_mutex_lock(&fsm->mu);
        fsm->applying = 0;
        if (fsm->hold)
            pthread_cond_broadcast(&fsm->idle);
        if (rc != 0) {
            stall_locked(fsm, p, rc);
            continue;
        }
        if (fsm->stalled) {
            fsm->stalled = 0;
            ud_info(LOG, "applying resumed at raft entry %llu", (unsigned long long)p->index);
        }
        fsm->head = p->next;
        if (fsm->head == NULL)
            fsm->tail = NULL;
        fsm->queued_bytes -= p->len;
        fsm->finished++;
        free(p->copy);
        p->copy = NULL;
        p->buf = NULL;
        p->next = NULL;
        if (fsm->done_tail != NULL)
            fsm->done_tail->next = p;
        else
            fsm->done = p;
        fsm->done_tail = p;
        pthread_cond_broadcast(&fsm->idle);
        pthread_mutex_unlock(&fsm->mu);
        uv_async_send(&fsm->async);
        pthread_mutex_lock(&fsm->mu);
    }
    pthread_mutex_unlock(&fsm->mu);
}

static void *apply_thread(void *arg)
{
    thread_apply_loop(arg);
    return NULL;
}

static void pending_free(struct pending *p)
{
    free(p->copy);
    free(p->out.res.records);
    free(p->out.res.msgs);
    free(p);
}

/* Loop thread: answers the applied entries, oldest first. A callback may stop the writer (and
 * with it this pipeline), so the list is detached first. */
static void deliver(struct ud_fsm *fsm)
{
    pthread_mutex_lock(&fsm->mu);
    struct pending *p = fsm->done;
    fsm->done = fsm->done_tail = NULL;
    pthread_mutex_unlock(&fsm->mu);
    while (p != NULL) {
        struct pending *next = p->next;
        ud_fsm_applied_cb cb = p->cb;
        p->cb = NULL;
        if (cb != NULL)
            cb(p->arg, 0, &p->out.res, NULL);
        pending_free(p);
        p = next;
    }
}

static void async_cb(uv_async_t *h)
{
    deliver(h->data);
}

/* mu held: the stall's failure into errmsg. */
static int stall_error_locked(struct ud_fsm *fsm, char *errmsg)
{
    pthread_mutex_lock(&fsm->stats_mu);
    int rc = ud_errf(errmsg, fsm->err != 0 ? fsm->err : UD_EIO, "%s", fsm->errmsg);
    pthread_mutex_unlock(&fsm->stats_mu);
    return rc;
}

/*
 * Waits until the thread has applied every queued entry; returns 0, or at once the failure
 * (errmsg set) while the queue is stalled. With retry != 0 a stalled head is tried once more
 * first, now, and the wait is for that attempt (blocking: only where the caller must know,
 * ud_fsm_wait_applied).
 */
static int wait_drained(struct ud_fsm *fsm, int retry, char *errmsg)
{
    int rc = 0;
    apply_deferred(fsm);
    pthread_mutex_lock(&fsm->mu);
    if (fsm->stalled && retry && fsm->head != NULL) {
        uint64_t failures = fsm->failures;
        fsm->retry_at_ns = 0;
        pthread_cond_signal(&fsm->work);
        while (fsm->stalled && fsm->failures == failures)
            pthread_cond_wait(&fsm->idle, &fsm->mu);
    }
    while (fsm->head != NULL && !fsm->stalled)
        pthread_cond_wait(&fsm->idle, &fsm->mu);
    if (fsm->head != NULL)
        rc = stall_error_locked(fsm, errmsg);
    pthread_mutex_unlock(&fsm->mu);
    return rc;
}

int ud_fsm_check_stalled(struct ud_fsm *fsm, char *errmsg)
{
    if (!fsm->pipelined)
        return 0;
    pthread_mutex_lock(&fsm->mu);
    int rc = fsm->stalled ? stall_error_locked(fsm, errmsg) : 0;
    pthread_mutex_unlock(&fsm->mu);
    return rc;
}

int ud_fsm_wait_applied(struct ud_fsm *fsm, char *errmsg)
{
    if (!fsm->pipelined)
        return 0;
    return wait_drained(fsm, 1, errmsg);
}

static int raft_code(int rc)
{
    return rc == UD_ENOSPC ? RAFT_NOSPACE : rc == UD_ENOMEM ? RAFT_NOMEM : RAFT_IOERR;
}

/* Applies entry index on the calling thread; *result (borrowed by raft's apply callback, which
 * runs right after the hook returns: raft 0.15 applyCommand) is the FSM's result object, so
 * nothing is allocated per entry. On a failure, ud_fsm_result.errmsg says why. */
static int apply_now(struct ud_fsm *fsm, uint64_t index, const struct raft_buffer *buf,
                     void **result)
{
    const struct ud_fsm_result *res;
    uint64_t committed = ud_mono_ns();
    int rc = ud_fsm_apply(fsm, index, buf->base, buf->len, &res);
    fsm->sync.res.committed_ns = committed;
    fsm->sync.res.applied_ns = ud_mono_ns();
    if (rc == 0)
        fsm->sync_index = index;
    *result = (void *)res;
    return rc;
}

/* A synchronous apply for raft: a failure goes back to raft, which stops applying there. */
static int apply_sync(struct ud_fsm *fsm, uint64_t index, const struct raft_buffer *buf,
                      void **result)
{
    int rc = apply_now(fsm, index, buf, result);
    if (rc == 0)
        return 0;
    const struct ud_fsm_result *res = *result;
    set_error(fsm, rc, res->errmsg);
    ud_error(LOG, "apply stopped: %s", res->errmsg);
    return raft_code(rc);
}

/* Adds n to one of the loop's counters (only the loop writes them: no locked add needed). */
static void count(_Atomic uint64_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

/*
 * A queue entry for raft's entry index, or NULL (out of memory). It reads raft's own buffer
 * (borrow) when raft 0.15 cannot free that buffer before the entry is applied, and a copy
 * otherwise. raft frees an entry's buffer when the entry leaves its in-memory log (and no log
 * write or send still references it), which for an applied entry happens:
 * - after a snapshot, up to its index minus the trailing entries: the snapshot hook waits until
 *   the queue has drained first, and snapshots nothing while it is stalled;
 * - when a follower receives an InstallSnapshot it does not already have: raft drops its whole
 *   log while handling the message (replicationInstallSnapshot's logRestore), before the restore
 *   hook runs. recv_guard copies every borrowed entry of the queue before raft sees that message;
 * - when the leader's own log write of the entry fails after a quorum of followers committed it
 *   (appendLeaderCb truncates from the failed write's first entry): an entry past what this node
 *   has stored (raft's last_stored) is copied. Once stored, raft removes it only as above;
 * - at raft_close, after ud_fsm_stop_pipeline has stopped the thread.
 * An entry is lent only once this node stored it, so on a follower too (a node that led until
 * just now may apply entries committed while it led that it has not stored yet: those are
 * copied). The test index <= last_stored relies on raft's log writes completing in the order they
 * were started, as raft_uv 0.15 and raft's fixture do: raft counts stored entries up from
 * last_stored rather than recording an index, so an io completing a later write first could
 * count an earlier, still pending write's entries as stored. Without recv_guard in place (an io
 * started before ud_fsm_attach) every entry is copied.
 */
static struct pending *pending_new(struct ud_fsm *fsm, uint64_t index,
                                   const struct raft_buffer *buf, int may_borrow)
{
    struct pending *p = calloc(1, sizeof *p);
    if (p == NULL)
        return NULL;
    p->len = buf->len;
    p->index = index;
    if (may_borrow && fsm->guarded && fsm->raft != NULL && index <= fsm->raft->last_stored) {
        p->buf = buf->base;
        count(&fsm->lent, 1);
        return p;
    }
    if ((p->copy = malloc(buf->len)) == NULL) {
        free(p);
        return NULL;
    }
    memcpy(p->copy, buf->base, buf->len);
    p->buf = p->copy;
    count(&fsm->copied, 1);
    return p;
}

/*
 * Loop thread, before raft handles an InstallSnapshot (recv_guard): every queued entry that reads
 * raft's buffer gets a copy, since raft may drop its log while handling the message. The thread
 * finishes the entry it is applying and waits meanwhile. Returns 0, or UD_ENOMEM when a copy could
 * not be made: raft must not see the message then (the entries copied so far keep their copies).
 */
static int own_entries(struct ud_fsm *fsm)
{
    pthread_mutex_lock(&fsm->mu);
    fsm->hold = 1;
    while (fsm->applying)
        pthread_cond_wait(&fsm->idle, &fsm->mu);
    size_t copied = 0;
    int rc = 0;
    for (struct pending *p = fsm->head; p != NULL; p = p->next) {
        if (p->copy != NULL)
            continue;
        if ((p->copy = malloc(p->len)) == NULL) {
            ud_error(LOG,
                     "out of memory copying raft entry %llu (%zu bytes) before a snapshot "
                     "install; the install message is dropped (the leader sends it again after "
                     "its install-snapshot timeout)",
                     (unsigned long long)p->index, p->len);
            rc = UD_ENOMEM;
            break;
        }
        memcpy(p->copy, p->buf, p->len);
        p->buf = p->copy;
        copied++;
    }
    fsm->hold = 0;
    pthread_cond_signal(&fsm->work);
    pthread_mutex_unlock(&fsm->mu);
    count(&fsm->owned, copied);
    if (copied > 0)
        ud_info(LOG, "snapshot install from the leader: %zu queued entries copied first", copied);
    return rc;
}

/* mu held: p joins the tail of the queue, and the thread hears of it. */
static void enqueue_locked(struct ud_fsm *fsm, struct pending *p)
{
    if (fsm->tail != NULL)
        fsm->tail->next = p;
    else
        fsm->head = p;
    fsm->tail = p;
    fsm->queued_bytes += p->len;
    fsm->handed++;
    pthread_cond_signal(&fsm->work);
}

/*
 * A small entry while the pipeline is idle, applied on the loop. When that fails, the entry
 * becomes the stalled head of the queue, exactly as if the thread had failed it: its outcome so
 * far (the records an attempt applied keep their LSNs) moves into the queue entry, the thread
 * retries it, and its proposer is answered once it applies.
 */
/* Loop thread: p, whose apply on the loop just failed with rc, becomes the stalled head of the
 * queue, taking the outcome apply_now left in fsm->sync (the thread retries it). */
static void queue_stalled(struct ud_fsm *fsm, struct pending *p, int rc)
{
    p->out = fsm->sync;
    memset(&fsm->sync, 0, sizeof fsm->sync);
    pthread_mutex_lock(&fsm->mu);
    enqueue_locked(fsm, p);
    stall_locked(fsm, p, rc);
    pthread_mutex_unlock(&fsm->mu);
}

static int apply_inline(struct ud_fsm *fsm, uint64_t index, const struct raft_buffer *buf,
                        void **result)
{
    int rc = apply_now(fsm, index, buf, result);
    if (rc == 0)
        return 0;
    struct pending *p = pending_new(fsm, index, buf, 1);
    if (p == NULL) {
        set_error(fsm, UD_ENOMEM, "out of memory queueing a raft entry");
        return RAFT_NOMEM; /* raft retries the entry later */
    }
    queue_stalled(fsm, p, rc);
    *result = &p->out.res;
    return 0;
}

/*
 * Loop thread: applies the entries apply_later left, oldest first, as apply_inline would have
 * applied them in raft's hook. One that fails becomes the stalled head of the queue, and the
 * rest queue behind it, so nothing is applied out of order.
 */
static void apply_deferred(struct ud_fsm *fsm)
{
    unsigned n = fsm->later_n;
    if (n == 0)
        return;
    fsm->later_n = 0;
    fsm->later_bytes = 0;
    uv_check_stop(&fsm->later_check);
    /* Only this thread adds to the queue: once it is seen empty it stays so until an entry here
     * fails and becomes its stalled head. One look, then, and one lock for what must queue. */
    pthread_mutex_lock(&fsm->mu);
    int queued = fsm->head != NULL;
    pthread_mutex_unlock(&fsm->mu);
    uint64_t applied = 0;
    unsigned i = 0;
    for (; i < n && !queued; i++) {
        struct pending *p = fsm->later[i];
        fsm->later[i] = NULL;
        void *res;
        struct raft_buffer b = {.base = (void *)p->buf, .len = p->len};
        int rc = apply_now(fsm, p->index, &b, &res);
        if (rc == 0) {
            pending_free(p);
            applied++;
        } else {
            queue_stalled(fsm, p, rc);
            queued = 1;
        }
    }
    if (i < n) {
        pthread_mutex_lock(&fsm->mu);
        for (; i < n; i++) {
            enqueue_locked(fsm, fsm->later[i]);
            fsm->later[i] = NULL;
        }
        pthread_mutex_unlock(&fsm->mu);
    }
    if (applied > 0) {
        struct ud_fsm_stats d = {.later = applied};
        stats_add(fsm, &d);
    }
}

static void later_idle_cb(uv_idle_t *h)
{
    uv_idle_stop(h);
}

static void later_cb(uv_check_t *h)
{
    struct ud_fsm *fsm = h->data;
    apply_deferred(fsm);
    uv_idle_start(&fsm->later_idle, later_idle_cb);
}

/*
 * A follower answers before it applies. raft 0.15 applies what the leader's last message
 * committed inside the callback of the log write that just completed (appendFollowerCb), before
 * it sends the leader that write's result: the apply of the previous entry (WAL append, memtable
 * insert) sat between this follower's disk and the leader's commit of every write at
 * concurrency 1. So a small RECORDS entry, while the pipeline is idle, is copied and left for
 * the loop's check phase, after raft's callback (and its send) returned; anything that must see
 * it applied applies it first (apply_deferred): the next entry that is not left, namespace
 * commands, snapshots and restores (wait_drained), the applied index, the pipeline's stop. Only
 * on a follower: a leader's proposer is answered from raft's apply callback, right after this
 * hook, and raft passes a follower's callback no result (getRequest finds no request there).
 * Returns 1 when the entry was left, 0 when the caller applies it as before.
 */
static int apply_later(struct ud_fsm *fsm, uint64_t index, const struct raft_buffer *buf,
                       void **result)
{
    if (raft_state(fsm->raft) != RAFT_FOLLOWER || fsm->later_n == LATER_MAX ||
        fsm->later_bytes + buf->len > PIPELINE_INLINE_MAX)
        return 0;
    pthread_mutex_lock(&fsm->mu);
    int idle = fsm->head == NULL && fsm->done == NULL;
    pthread_mutex_unlock(&fsm->mu);
    if (!idle)
        return 0;
    /* A copy: left entries are few and small, and applied on the loop. */
    struct pending *p = pending_new(fsm, index, buf, 0);
    if (p == NULL)
        return 0; /* applied now instead */
    fsm->later[fsm->later_n++] = p;
    fsm->later_bytes += buf->len;
    if (!uv_is_active((uv_handle_t *)&fsm->later_check))
        uv_check_start(&fsm->later_check, later_cb);
    *result = &fsm->sync.res;
    return 1;
}

/* raft's apply hook with the pipeline running. */
static int pipeline_hook(struct ud_fsm *fsm, uint64_t index, const struct raft_buffer *buf,
                         void **result)
{
    char errmsg[UD_ERRMSG_SIZE] = "";
    const uint8_t *b = buf->base;
    int records = buf->len >= UD_COMMAND_HEADER_SIZE && b[1] == UD_COMMAND_RECORDS;
    if (records && apply_later(fsm, index, buf, result))
        return 0;
    apply_deferred(fsm);
    /* Any other command waits for the whole queue and is applied here. A namespace command that
     * fails (a rename the disk refuses) becomes the stalled head of the queue as a RECORDS entry
     * does, and one meeting a stalled queue queues behind its head: the thread applies them in
     * order, and raft goes on (a follower's raft 0.15 turns unavailable when an apply fails while
     * it handles a message without entries). A member command (or one that does not decode,
     * rejected) meeting a stalled queue fails at once (raft stops applying there, and the leader
     * tries again at its next commit). */
    if (!records) {
        int ns_command = buf->len >= UD_COMMAND_HEADER_SIZE &&
                         (b[1] == UD_COMMAND_NS_CREATE || b[1] == UD_COMMAND_NS_DELETE);
        int rc = wait_drained(fsm, 0, errmsg);
        if (rc == 0)
            return ns_command ? apply_inline(fsm, index, buf, result)
                              : apply_sync(fsm, index, buf, result);
        if (!ns_command) {
            ud_error(LOG, "raft entry %llu waits: %s", (unsigned long long)index, errmsg);
            return raft_code(rc);
        }
    }
    /* A small entry while the thread is idle and every applied entry has been answered (one
     * client writing, or a light load): applied here, as without the pipeline. Handing it over
     * would cost two thread wake-ups (the thread's and the loop's) for microseconds of work, on
     * the path of every write at concurrency 1; answers keep their order. */
    pthread_mutex_lock(&fsm->mu);
    int idle = fsm->head == NULL && fsm->done == NULL;
    int stalled = fsm->stalled;
    size_t queued = fsm->queued_bytes;
    pthread_mutex_unlock(&fsm->mu);
    if (buf->len <= PIPELINE_INLINE_MAX && idle)
        return apply_inline(fsm, index, buf, result);
    /* Behind a stalled head the queue holds what raft commits meanwhile (on a leader, at most
     * the submitter's entries in flight), up to its bound: then raft stops applying here. */
    if (stalled && queued > PIPELINE_MAX_QUEUED) {
        pthread_mutex_lock(&fsm->mu);
        int rc = stall_error_locked(fsm, errmsg);
        pthread_mutex_unlock(&fsm->mu);
        return raft_code(rc);
    }
    struct pending *p = pending_new(fsm, index, buf, 1);
    if (p == NULL) {
        set_error(fsm, UD_ENOMEM, "out of memory queueing a raft entry");
        return RAFT_NOMEM; /* raft retries the entry later */
    }
    p->out.res.committed_ns = ud_mono_ns();
    pthread_mutex_lock(&fsm->mu);
    while (fsm->queued_bytes > PIPELINE_MAX_QUEUED && !fsm->stalled)
        pthread_cond_wait(&fsm->idle, &fsm->mu);
    enqueue_locked(fsm, p);
    pthread_mutex_unlock(&fsm->mu);
    *result = &p->out.res;
    return 0;
}

int ud_fsm_start_pipeline(struct ud_fsm *fsm, uv_loop_t *loop, char *errmsg)
{
    UD_ASSERT(!fsm->pipelined);
    int rc = uv_async_init(loop, &fsm->async, async_cb);
    if (rc != 0)
        return ud_errf(errmsg, UD_EIO, "apply pipeline: %s", uv_strerror(rc));
    fsm->async.data = fsm;
    /* raft's own handles keep the loop running while entries can arrive. */
    uv_unref((uv_handle_t *)&fsm->async);
    uv_check_init(loop, &fsm->later_check);
    fsm->later_check.data = fsm;
    uv_unref((uv_handle_t *)&fsm->later_check);
    uv_idle_init(loop, &fsm->later_idle);
    fsm->later_idle.data = fsm;
    uv_unref((uv_handle_t *)&fsm->later_idle);
    fsm->stop = 0;
    rc = pthread_create(&fsm->thread, NULL, apply_thread, fsm);
    if (rc != 0) {
        uv_close((uv_handle_t *)&fsm->async, NULL);
        uv_close((uv_handle_t *)&fsm->later_check, NULL);
        uv_close((uv_handle_t *)&fsm->later_idle, NULL);
        return ud_errf(errmsg, UD_ENOMEM, "apply pipeline: thread: %s", strerror(rc));
    }
    fsm->pipelined = 1;
    return 0;
}

static void async_closed_cb(uv_handle_t *h)
{
    struct ud_fsm *fsm = h->data;
    if (--fsm->open_handles > 0)
        return;
    void (*closed)(void *) = fsm->closed;
    fsm->closed = NULL;
    if (closed != NULL)
        closed(fsm->closed_arg);
}

void ud_fsm_stop_pipeline(struct ud_fsm *fsm, void (*closed)(void *arg), void *arg)
{
    UD_ASSERT(fsm->pipelined);
    char errmsg[UD_ERRMSG_SIZE] = "";
    (void)wait_drained(fsm, 0, errmsg); /* its message is the cause told below */
    pthread_mutex_lock(&fsm->mu);
    fsm->stop = 1;
    pthread_cond_signal(&fsm->work);
    pthread_mutex_unlock(&fsm->mu);
    /* A stalled thread may be retrying the head right now: the queue is taken apart only once
     * it has finished that attempt and left. */
    pthread_join(fsm->thread, NULL);
    pthread_mutex_lock(&fsm->mu);
    struct pending *left = fsm->head;
    fsm->head = fsm->tail = NULL;
    fsm->queued_bytes = 0;
    pthread_mutex_unlock(&fsm->mu);
    fsm->pipelined = 0; /* from now on raft's hook applies synchronously */
    deliver(fsm);
    /* Entries a storage failure kept from applying are committed: raft replays them at the
     * next start (no snapshot covers them), and the other writers may have applied them. Their
     * proposers learn that the outcome is not known, with the cause: taken for a failed write,
     * a retry without an Idempotency-Key would apply it twice. The cause goes last, where a
     * long one is cut. */
    char told[UD_ERRMSG_SIZE];
    if (left != NULL) {
        ud_warn(LOG, "stopping with raft entries %llu and later not applied here: %s",
                (unsigned long long)left->index, errmsg);
        ud_errf(told, 0,
                "committed, not applied when the writer stopped (applied at its next start; "
                "retry only with an Idempotency-Key): %s",
                errmsg);
    }
    while (left != NULL) {
        struct pending *next = left->next;
        ud_fsm_applied_cb cb = left->cb;
        left->cb = NULL;
        if (cb != NULL)
            cb(left->arg, UD_EINDOUBT, NULL, told);
        pending_free(left);
        left = next;
    }
    fsm->closed = closed;
    fsm->closed_arg = arg;
    fsm->open_handles = 3;
    uv_close((uv_handle_t *)&fsm->async, async_closed_cb);
    uv_close((uv_handle_t *)&fsm->later_check, async_closed_cb);
    uv_close((uv_handle_t *)&fsm->later_idle, async_closed_cb);
}

void ud_fsm_on_applied(struct ud_fsm *fsm, const struct ud_fsm_result *res, ud_fsm_applied_cb cb,
                       void *arg)
{
    if (res == &fsm->sync.res) {
        cb(arg, 0, res, NULL);
        return;
    }
    /* A queued entry: res is the first member of its struct pending, which lives until it is
     * delivered, on this thread, after this call. */
    struct pending *p = (struct pending *)(void *)res;
    p->cb = cb;
    p->arg = arg;
}

uint64_t ud_fsm_handed(struct ud_fsm *fsm)
{
    pthread_mutex_lock(&fsm->mu);
    uint64_t n = fsm->handed;
    pthread_mutex_unlock(&fsm->mu);
    return n;
}

uint64_t ud_fsm_finished(struct ud_fsm *fsm)
{
    pthread_mutex_lock(&fsm->mu);
    uint64_t n = fsm->finished;
    pthread_mutex_unlock(&fsm->mu);
    return n;
}

/* --- raft hooks ------------------------------------------------------------------------------- */

static int apply_hook(struct raft_fsm *rf, const struct raft_buffer *buf, void **result)
{
    struct ud_fsm *fsm = rf->data;
    UD_ASSERT(fsm->raft != NULL);
    uint64_t index = raft_last_applied(fsm->raft) + 1;
    /* Byte budget reached: a threshold of one entry makes raft snapshot after this apply. */
    if (fsm->policy_on && ud_snapshot_policy_applied(&fsm->policy, buf->len))
        raft_set_snapshot_threshold(fsm->raft, 1);
    if (fsm->pipelined)
        return pipeline_hook(fsm, index, buf, result);
    return apply_sync(fsm, index, buf, result);
}

/* Loop thread: the metadata, as of the index raft records for this snapshot (takeSnapshot uses
 * last_applied). Cheap: no I/O, once the apply thread has caught up with raft. */
static int snapshot_hook(struct raft_fsm *rf, struct raft_buffer *bufs[], unsigned *n_bufs)
{
    struct ud_fsm *fsm = rf->data;
    uint8_t *meta;
    size_t len;
    char errmsg[UD_ERRMSG_SIZE] = "";
    int rc = fsm->pipelined ? wait_drained(fsm, 0, errmsg) : 0;
    if (rc == 0)
        rc = ud_fsm_snapshot(fsm, raft_last_applied(fsm->raft), &meta, &len, errmsg);
    if (rc != 0) {
        set_error(fsm, rc, errmsg);
        ud_error(LOG, "snapshot: %s; raft keeps its log and retries later", errmsg);
        return RAFT_BUSY; /* raft 0.15 treats BUSY as "try again next time" */
    }
    struct raft_buffer *b = raft_malloc(sizeof *b);
    void *base = raft_malloc(len);
    if (b == NULL || base == NULL) {
        raft_free(b);
        raft_free(base);
        free(meta);
        return RAFT_NOMEM;
    }
    memcpy(base, meta, len);
    free(meta);
    b->base = base;
    b->len = len;
    *bufs = b;
    *n_bufs = 1;
    /* raft reads trailing when it stores this snapshot and trims its log, both after this hook. */
    if (fsm->policy_on) {
        raft_set_snapshot_trailing(fsm->raft, ud_snapshot_policy_taken(&fsm->policy));
        raft_set_snapshot_threshold(fsm->raft, fsm->policy.max_entries);
    }
    return 0;
}

/*
 * Worker thread (raft's async work), before raft stores the snapshot and truncates its log behind
 * it: from then on the WALs are the only copy of those records, and the writer's WALs run without
 * per-record fsync. One fsync per namespace would stall the loop, so it happens here; a failure
 * means no snapshot this time (raft keeps its log).
 */
static int snapshot_async_hook(struct raft_fsm *rf, struct raft_buffer *bufs[], unsigned *n_bufs)
{
    struct ud_fsm *fsm = rf->data;
    char errmsg[UD_ERRMSG_SIZE] = "";
    UD_ASSERT(*n_bufs == 1);
    int rc = ud_fsm_snapshot_sync(fsm, (*bufs)[0].base, (*bufs)[0].len, errmsg);
    if (rc != 0) {
        ud_error(LOG, "%s; raft keeps its log", errmsg);
        return RAFT_IOERR;
    }
    return 0;
}

static int restore_hook(struct raft_fsm *rf, struct raft_buffer *buf)
{
    struct ud_fsm *fsm = rf->data;
    char errmsg[UD_ERRMSG_SIZE] = "";
    /* Bytes that do not decode are told apart first, also while the pipeline is stalled. */
    int rc = restore_decodes(fsm, buf->base, buf->len, errmsg);
    int undecodable = rc != 0;
    if (rc == 0 && fsm->pipelined)
        rc = wait_drained(fsm, 0, errmsg);
    if (rc == 0)
        rc = restore_check(fsm, buf->base, buf->len, errmsg);
    if (rc != 0) {
        set_error(fsm, rc, errmsg);
        /* At raft_start raft is unavailable until the start is over; otherwise this is an
         * InstallSnapshot from the leader, whose position raft took already (logRestore). */
        struct raft *r = fsm->raft;
        int running = r != NULL && raft_state(r) != RAFT_UNAVAILABLE;
        if (running)
            ud_error(LOG, "restore of the leader's raft snapshot at index %llu (term %llu): %s",
                     (unsigned long long)r->log.snapshot.last_index,
                     (unsigned long long)r->log.snapshot.last_term, errmsg);
        else if (buf->len >= SNAPSHOT_HEADER_SIZE && !undecodable)
            ud_error(LOG, "restore of raft snapshot at index %llu: %s",
                     (unsigned long long)ud_get_le64((const uint8_t *)buf->base + 8), errmsg);
        else
            ud_error(LOG, "restore: %s", errmsg);
        /* raft 0.15 put the snapshot's position into its log before calling this hook (an
         * InstallSnapshot: replicationInstallSnapshot's logRestore), takes a copy sent again as
         * held, and the entries before it are gone from its log: a restart, which loads the
         * stored snapshot, restores it. Being behind has its catch-up plan already
         * (restore_walk). Bytes that do not decode would fail that start the same way: the
         * stored copy is recorded here at once (a crash before the restart then still sets it
         * aside at the next start) and set aside at the start, which then begins from this
         * node's last own snapshot without log entries, or from nothing (raft deleted every
         * closed segment when it stored the leader's snapshot), and the leader sends its log or
         * its snapshot again. Meanwhile this node takes no raft message (recv_guard), so
         * nothing past the snapshot is stored and acknowledged here; every entry raft dropped
         * up to it the leader had committed without this node. A check that fails on local
         * state (UD_ECORRUPT from a damaged tombstone file) would leave raft at the snapshot's
         * position without the FSM, acknowledging entries past it: the node goes deaf too and
         * the restart fails naming the file. rc may also be the stalled entry's storage error,
         * from wait_drained, which is never UD_ECORRUPT (deterministic() makes that code an
         * outcome, never a stall). At raft_start nothing is marked: the failure fails the
         * start. */
        if (running && (undecodable || rc == UD_ECORRUPT)) {
            fsm->restart = 1;
            fsm->deaf = 1;
            snprintf(fsm->deaf_why, sizeof fsm->deaf_why, "%s", errmsg);
            ud_catchup_plan_free(&fsm->behind); /* nothing to fetch before that start */
            fsm->behind.snapshot_index = r->log.snapshot.last_index;
            if (undecodable) {
                fsm->undecodable_term = r->log.snapshot.last_term;
                fsm->undecodable_index = r->log.snapshot.last_index;
                ud_error(LOG,
                         "the leader's raft snapshot at index %llu does not decode here: this "
                         "node takes no more raft messages, closes raft, sets the stored copy "
                         "aside and starts raft again without it",
                         (unsigned long long)r->log.snapshot.last_index);
                record_undecodable(fsm);
            } else {
                ud_error(LOG,
                         "the leader's raft snapshot at index %llu cannot be checked against "
                         "this node's state: this node takes no more raft messages and closes "
                         "raft (its start fails the same way until the file named is mended)",
                         (unsigned long long)r->log.snapshot.last_index);
            }
        } else if (running && fsm->behind.ntargets == 0) {
            fsm->restart = 1;
            fsm->behind.snapshot_index = r->log.snapshot.last_index;
            ud_warn(LOG, "raft may not retry a failed restore: raft closes and starts again once "
                         "the apply pipeline has drained");
        }
        /* On failure raft 0.15 frees the snapshot (and this buffer) itself. */
        return rc == UD_ECORRUPT ? RAFT_CORRUPT : RAFT_IOERR;
    }
    fsm->restart = 0;
    ud_info(LOG, "raft snapshot restored: local state is at or beyond it, nothing to load");
    raft_free(buf->base);
    return 0;
}

/*
 * A writer of an earlier version created namespaces without an incarnation, and left their
 * .raft-created markers all the same. At open, each namespace without one whose create marker is
 * newer than its tombstone (so the marker is of the namespace here, not of an earlier one of the
 * name) gets the marker's index, durably: every writer then says the same incarnation for it.
 * A failure leaves it at 0, as before, and is warned about; every FSM init (each raft start)
 * tries again. A 0 left is taken by relayers as an earlier namespace than any stamped copy
 * (relayer/incarnation.h; docs/raft.md lists what it can mean).
 */
static void stamp_unstamped(struct ud_fsm *fsm)
{
    struct ns_list l = {0};
    if (list_names(fsm, &l) != 0) {
        ud_warn(LOG, "out of memory listing the namespaces to stamp their incarnations");
        return;
    }
    for (size_t i = 0; i < l.n; i++) {
        const char *name = l.names[i];
        char why[UD_ERRMSG_SIZE] = "";
        uint64_t created, deleted;
        if (read_index(fsm, "created", name, &created, why) != 0 ||
            deleted_index(fsm, name, &deleted, why) != 0) {
            ud_warn(LOG, "namespace %s: %s; its incarnation stays unknown", name, why);
            continue;
        }
        struct ud_ns *ns;
        if (created == 0 || created <= deleted || ud_registry_acquire(fsm->reg, name, &ns) != 0)
            continue;
        if (ud_ns_incarnation(ns) == 0) {
            if (ud_ns_stamp_incarnation(ns, created, why) != 0)
                ud_warn(LOG, "namespace %s: stamp incarnation %llu: %s", name,
                        (unsigned long long)created, why);
            else
                ud_info(LOG, "namespace %s: incarnation %llu, from its create marker", name,
                        (unsigned long long)created);
        }
        ud_registry_release(fsm->reg, ns);
    }
    free(l.names);
}

/* --- lifecycle -------------------------------------------------------------------------------- */

int ud_fsm_init(struct ud_registry *reg, struct ud_fsm **out, char *errmsg)
{
    struct ud_fsm *fsm = calloc(1, sizeof *fsm);
    if (fsm == NULL)
        return ud_errf(errmsg, UD_ENOMEM, "out of memory creating the raft FSM");
    fsm->reg = reg;
    if (ud_idem_init(&fsm->idem) != 0) {
        free(fsm);
        return ud_errf(errmsg, UD_ENOMEM, "out of memory creating the raft FSM");
    }
    pthread_mutex_init(&fsm->stats_mu, NULL);
    pthread_mutex_init(&fsm->mu, NULL);
    /* The thread's retry time is on the monotonic clock (ud_mono_ns). */
    pthread_condattr_t monotonic;
    pthread_condattr_init(&monotonic);
    pthread_condattr_setclock(&monotonic, CLOCK_MONOTONIC);
    pthread_cond_init(&fsm->work, &monotonic);
    pthread_condattr_destroy(&monotonic);
    pthread_cond_init(&fsm->idle, NULL);
    /* Version 3 for snapshot_async (set by ud_fsm_attach); snapshot_finalize stays NULL, so raft
     * frees the snapshot buffers. */
    fsm->rf.version = 3;
    fsm->rf.data = fsm;
    fsm->rf.apply = apply_hook;
    fsm->rf.snapshot = snapshot_hook;
    fsm->rf.restore = restore_hook;
    fsm->rf.snapshot_finalize = NULL;
    fsm->rf.snapshot_async = NULL;
    stamp_unstamped(fsm);
    *out = fsm;
    return 0;
}

void ud_fsm_close(struct ud_fsm *fsm)
{
    if (fsm == NULL)
        return;
    /* ud_fsm_stop_pipeline must have run: the thread and the async handle are gone. */
    UD_ASSERT(!fsm->pipelined);
    UD_ASSERT(fsm->head == NULL && fsm->done == NULL && fsm->later_n == 0);
    free(fsm->sync.res.records);
    free(fsm->sync.res.msgs);
    free(fsm->loop_applier.scratch);
    free(fsm->thread_applier.scratch);
    free(fsm->loop_applier.spans);
    free(fsm->thread_applier.spans);
    ud_idem_free(&fsm->idem);
    ud_catchup_plan_free(&fsm->behind);
    ud_catchup_plan_free(&fsm->waived);
    ud_snapshot_policy_free(&fsm->policy);
    pthread_cond_destroy(&fsm->idle);
    pthread_cond_destroy(&fsm->work);
    pthread_mutex_destroy(&fsm->mu);
    pthread_mutex_destroy(&fsm->stats_mu);
    free(fsm);
}

struct raft_fsm *ud_fsm_raft(struct ud_fsm *fsm)
{
    return &fsm->rf;
}

int ud_fsm_set_snapshot_policy(struct ud_fsm *fsm, uint32_t max_entries, uint64_t max_bytes,
                               uint32_t max_trailing, uint64_t trailing_bytes, char *errmsg)
{
    UD_ASSERT(fsm->raft != NULL && max_entries > 0);
    ud_snapshot_policy_free(&fsm->policy);
    fsm->policy_on = 0;
    if (ud_snapshot_policy_init(&fsm->policy, max_entries, max_bytes, max_trailing,
                                trailing_bytes) != 0)
        return ud_errf(errmsg, UD_ENOMEM, "raft snapshot policy: out of memory");
    fsm->policy_on = 1;
    raft_set_snapshot_threshold(fsm->raft, max_entries);
    raft_set_snapshot_trailing(fsm->raft, max_trailing);
    return 0;
}

/* Loop thread: raft's receive callback, behind a check for the one message that makes raft drop
 * log entries the queue may still read (pending_new). */
static void recv_guard(struct raft_io *io, struct raft_message *m)
{
    struct raft *r = io->data;
    struct ud_fsm *fsm = r->fsm->data;
    if (fsm->deaf) {
        /* The stored snapshot does not decode (restore_hook): until the node closes raft,
         * every message is as if lost on the way. Freed as raft frees what it drops. */
        if (m->type == RAFT_IO_APPEND_ENTRIES && m->append_entries.entries != NULL) {
            void *batch = NULL;
            for (unsigned i = 0; i < m->append_entries.n_entries; i++)
                if (m->append_entries.entries[i].batch != batch) {
                    batch = m->append_entries.entries[i].batch;
                    raft_free(batch);
                }
            raft_free(m->append_entries.entries);
        } else if (m->type == RAFT_IO_INSTALL_SNAPSHOT) {
            raft_configuration_close(&m->install_snapshot.conf);
            raft_free(m->install_snapshot.data.base);
        }
        return;
    }
    if (m->type == RAFT_IO_INSTALL_SNAPSHOT && fsm->pipelined && own_entries(fsm) != 0) {
        /* As if lost on the way: the message's parts are ours to free until raft takes them. */
        raft_configuration_close(&m->install_snapshot.conf);
        raft_free(m->install_snapshot.data.base);
        return;
    }
    fsm->raft_recv(io, m);
}

/* The io's start, as raft_start calls it: raft's receive callback goes through recv_guard. */
static int start_guard(struct raft_io *io, unsigned msecs, raft_io_tick_cb tick,
                       raft_io_recv_cb recv)
{
    struct raft *r = io->data; /* raft_init sets it */
    struct ud_fsm *fsm = r->fsm->data;
    fsm->raft_recv = recv;
    int rv = fsm->io_start(io, msecs, tick, recv_guard);
    fsm->guarded = rv == 0;
    return rv;
}

void ud_fsm_attach(struct ud_fsm *fsm, struct raft *r)
{
    fsm->raft = r;
    /* Before raft_start: raft's messages then reach it through recv_guard. */
    if (r->io->start != start_guard) {
        fsm->io_start = r->io->start;
        r->io->start = start_guard;
    }
    /*
     * raft 0.15's raft_init refuses an FSM with snapshot_async unless io->version >= 2, and
     * neither raft_uv nor the fixture report 2 although both implement async_work (uv_queue_work
     * in raft_uv). raft reads the hook when it takes a snapshot, so it is set after raft_init.
     */
    fsm->rf.snapshot_async = snapshot_async_hook;
}

void ud_fsm_stats(struct ud_fsm *fsm, struct ud_fsm_stats *st)
{
    pthread_mutex_lock(&fsm->stats_mu);
    *st = fsm->stats;
    pthread_mutex_unlock(&fsm->stats_mu);
    st->lent = atomic_load_explicit(&fsm->lent, memory_order_relaxed);
    st->copied = atomic_load_explicit(&fsm->copied, memory_order_relaxed);
    st->owned = atomic_load_explicit(&fsm->owned, memory_order_relaxed);
}

int ud_fsm_error(struct ud_fsm *fsm, const char **errmsg)
{
    /* The message lives in the FSM; only the loop reads it, after the failure was reported. */
    pthread_mutex_lock(&fsm->stats_mu);
    int rc = fsm->err;
    pthread_mutex_unlock(&fsm->stats_mu);
    *errmsg = rc != 0 ? fsm->errmsg : "";
    return rc;
}
