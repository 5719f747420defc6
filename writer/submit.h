/*
 * The one write seam (ARCHITECTURE.md section 6): HTTP, RESP, and later forwarding and acks=isr
 * submit encoded records here. Records gathered in one loop iteration go into one raft entry
 * (group commit, at most commit_max_bytes; a request's records are never split across entries),
 * at most commit_max_inflight raft_apply calls run at once, and each request is answered when its
 * entry has been applied by the FSM on this node, with the LSN of each record.
 *
 * Loop thread only.
 */
#ifndef UD_WRITER_SUBMIT_H
#define UD_WRITER_SUBMIT_H

#include <stddef.h>
#include <stdint.h>

struct ud_writer;

/* Largest number of records in one request. */
#define UD_SUBMIT_MAX_RECORDS 1024

/*
 * Called once per request on the loop thread.
 * status: 0 (every record applied; lsns[i] is record i's LSN), or the first record's rejection
 * by ud_ns_apply (UD_ENOTFOUND, UD_ETXN, UD_ELIMIT, ... with errmsg from the engine; earlier
 * records of the same request may have been applied: callers send one record per request unless a
 * partial outcome is acceptable), UD_EBUSY (admission control: the flush is behind; answer 503 +
 * Retry-After), UD_ENOTFOUND for an unknown namespace, UD_ECLOSED (shutting down / not leader:
 * nothing was proposed, answer 503), UD_EINDOUBT (proposed, then leadership was lost, the writer
 * stopped, or a forwarded write's answer was lost: it may have been committed; errmsg begins with
 * ud_strerror(UD_EINDOUBT)), UD_EIO. errmsg and lsns are borrowed for the call only.
 */
typedef void (*ud_submit_cb)(void *arg, int status, const char *errmsg, const uint64_t *lsns,
                             size_t n);

/*
 * Submits n (1..UD_SUBMIT_MAX_RECORDS) records encoded with proto/record.h (LSN 0; this layer
 * stamps hlc) for namespace ns. Ownership of records[i] (malloc'd) passes to the seam on every
 * return. cb is always called exactly once, later, never from inside ud_submit.
 */
void ud_submit(struct ud_writer *w, const char *ns, uint8_t **records, const size_t *lens, size_t n,
               ud_submit_cb cb, void *arg);

/*
 * ud_submit with an idempotency key (1..UD_COMMAND_KEY_MAX bytes; docs/raft.md "Idempotency")
 * and the digest of the request that carried it (UD_COMMAND_DIGEST_SIZE bytes, writer/
 * http_digest.h; NULL when unknown): when the FSM's window already holds the key for namespace
 * ns, the records are not applied again and cb gets the outcome of the first write with that key
 * (its LSNs, or its rejection), or UD_EKEYREUSED when the first write's digest differs. key and
 * digest are copied; key NULL or key_len 0 is a plain ud_submit. A key longer than the limit is
 * answered UD_EINVAL.
 */
void ud_submit_keyed(struct ud_writer *w, const char *ns, const uint8_t *key, size_t key_len,
                     const uint8_t *digest, uint8_t **records, const size_t *lens, size_t n,
                     ud_submit_cb cb, void *arg);

/* The precondition of a one-record write (docs/format-command.md "Conditions"). */
struct ud_submit_cond {
    uint8_t kind; /* UD_COMMAND_COND_LSN (lsn 0: the key must be absent) or _EXISTS (lsn 0) */
    uint64_t lsn;
};

/*
 * ud_submit_keyed of one record (a one-key KV write) with a condition on its key's current
 * version (NULL: none), which the FSM judges when it applies the record, on every writer at the
 * same point of the log: nothing can come between the check and the write. When it fails, nothing
 * is written, the key (if any) is remembered as rejected (a retry gets the 412 again), and cb gets
 * UD_EPRECONDITION with errmsg
 * ("precondition failed: If-Match 7 but the key is at LSN 9") and lsns[0] the key's current LSN
 * (0: absent). A follower never forwards it as records (it would lose its condition): queued
 * there, it is answered UD_ECLOSED.
 */
void ud_submit_cond(struct ud_writer *w, const char *ns, const uint8_t *key, size_t key_len,
                    const uint8_t *digest, uint8_t *record, size_t len,
                    const struct ud_submit_cond *cond, ud_submit_cb cb, void *arg);

/* Namespace creation and deletion are raft commands too (applied on every writer). Same callback
 * contract (n = 0): UD_EEXIST, UD_ENOTFOUND, UD_EINVAL (bad name, errmsg states the rule). */
/*
 * Where answered writes spent their time, summed over requests (each stage's sum divided by
 * requests is its mean per request; docs/raft.md "Write latency by stage"). Only requests whose
 * entry this node proposed and applied count.
 */
struct ud_submit_stats {
    uint64_t requests;
    uint64_t entries;    /* raft entries they went in */
    uint64_t queue_ns;   /* queued -> raft_apply (group commit, in-flight limit, admission) */
    uint64_t commit_ns;  /* raft_apply -> committed (raft's log write and fsync, quorum) */
    uint64_t apply_ns;   /* committed -> applied (apply thread: queue, WAL append, memtable) */
    uint64_t deliver_ns; /* applied -> answered on the loop thread */
    /* Admission control (the flush to the B+tree behind): how often writes began to be held, and
     * the wall time during which some were (not summed over requests). */
    uint64_t admission_holds;
    uint64_t admission_held_ns;
};

/* Copies the counters; all zero when the write path is closed. */
void ud_submit_stats(struct ud_writer *w, struct ud_submit_stats *st);

void ud_submit_ns_create(struct ud_writer *w, const char *ns, ud_submit_cb cb, void *arg);
void ud_submit_ns_delete(struct ud_writer *w, const char *ns, ud_submit_cb cb, void *arg);

#endif
