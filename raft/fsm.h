/*
 * The raft state machine of a writer: applies committed raft commands (proto/command.h) to the
 * namespaces of a registry through the engine's one apply function, so every writer assigns the
 * same LSNs and writes the same WAL bytes (ARCHITECTURE.md sections 5, 6 and 9; docs/raft.md).
 *
 * Loop thread only (raft calls it from its loop), except where a function says otherwise. With the
 * apply pipeline started (ud_fsm_start_pipeline), a thread of the FSM applies committed record
 * entries in log order while raft's loop goes on; results reach the proposer from the loop.
 */
#ifndef UD_RAFT_FSM_H
#define UD_RAFT_FSM_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "core/catchup.h"
#include "core/err.h"
#include "core/registry.h"

struct raft;
struct raft_fsm;
struct ud_fsm;

/* Outcome of one record of an applied RECORDS command. */
struct ud_fsm_record_result {
    /* 0 when rejected, or skipped (already in the WAL before this apply); with status
     * UD_EPRECONDITION the LSN of the key's current version instead (0: the key is absent). */
    uint64_t lsn;
    /* 0 or the rejection: the engine's (UD_ENOTFOUND for an unknown namespace, ...), or
     * UD_EPRECONDITION when the record's condition (proto/command.h) did not hold. */
    int status;
    int32_t msg; /* index into ud_fsm_result.msgs for a rejection, else -1 */
};

/*
 * Outcome of one applied raft entry, handed to the proposer's callback on this node. Owned by the
 * FSM: borrowed for the duration of the callback that receives it (ud_fsm_on_applied's, or raft's
 * apply callback for a synchronous FSM).
 */
struct ud_fsm_result {
    uint64_t raft_index;
    uint8_t kind; /* enum ud_command_kind, 0 when the command did not decode */
    /* Whole-entry outcome: UD_ECORRUPT when the command does not decode; for NS_CREATE and
     * NS_DELETE the registry's answer (0, UD_EEXIST, UD_ENOTFOUND, UD_EINVAL, UD_EIO). */
    int status;
    char errmsg[UD_ERRMSG_SIZE];
    size_t nrecords; /* RECORDS: one result per record, in command order (group by group) */
    struct ud_fsm_record_result *records;
    char (*msgs)[UD_ERRMSG_SIZE];
    size_t nmsgs;
    /* ud_mono_ns when raft handed the entry to the FSM (committed: its log write is durable on a
     * quorum) and when applying it finished: the write path's stage timings (writer/submit.c). */
    uint64_t committed_ns, applied_ns;
};

/* The rejection message of record i ("" when none). */
const char *ud_fsm_result_msg(const struct ud_fsm_result *res, size_t i);

struct ud_fsm_stats {
    uint64_t entries;  /* raft entries applied */
    uint64_t applied;  /* records given an LSN */
    uint64_t rejected; /* records rejected by the engine (no LSN) */
    uint64_t skipped;  /* records already in the WAL (raft replay after a restart) */
    uint64_t snapshots;
    uint64_t max_hlc; /* newest HLC among applied records: a new leader stamps above it */
    uint64_t later;   /* entries a follower applied after raft's callback that committed them */
    /* Entries queued for the apply thread reading raft's own buffer (lent) or a copy (copied),
     * and lent ones copied before an InstallSnapshot reached raft (owned). */
    uint64_t lent, copied, owned;
};

/*
 * Creates the FSM over reg (borrowed; must outlive the FSM). Returns 0 or UD_ENOMEM. Stamps each
 * namespace without an incarnation whose create an earlier version applied here with the raft
 * index of its .raft-created marker (docs/raft.md).
 * Call ud_fsm_attach before raft can apply (raft_start, or raft_fixture_start).
 */
int ud_fsm_init(struct ud_registry *reg, struct ud_fsm **out, char *errmsg);
/* Frees the FSM; raft must be closed first. NULL allowed. */
void ud_fsm_close(struct ud_fsm *fsm);

/*
 * A catch-up replaced this node's store of namespace name (under the registry root ns_root) with
 * a peer's of incarnation incarnation: the .raft-created marker is made to agree with it, durably
 * (written with incarnation, or removed when it is 0), so that the next ud_fsm_init does not stamp
 * the store with the create index of another namespace of the name that this node applied. No FSM
 * needs to exist (raft is stopped during a catch-up). Returns 0, or UD_EIO / UD_ENOSPC with errmsg.
 */
int ud_fsm_created_marker_agree(const char *ns_root, const char *name, uint64_t incarnation,
                                char *errmsg);

/* The raft_fsm (version 3) to give raft_init or raft_fixture_grow; lives as long as fsm. */
struct raft_fsm *ud_fsm_raft(struct ud_fsm *fsm);
/* Tells the FSM which raft instance drives it, after raft_init: the raft index of an entry being
 * applied is raft_last_applied(r) + 1 (raft 0.15 advances last_applied after fsm->apply returns),
 * and snapshots fsync the WALs as raft async work from now on. It also wraps r's io start, so
 * that raft's incoming messages pass the FSM first: the apply thread's queue reads raft's own
 * entry buffers, and copies them before raft handles an InstallSnapshot (which drops its log). */
void ud_fsm_attach(struct ud_fsm *fsm, struct raft *r);

/*
 * After ud_fsm_attach: raft snapshots after max_entries entries or max_bytes bytes of applied
 * entries, whichever comes first (max_bytes 0: entries only), and keeps behind each snapshot the
 * newest entries that fit in trailing_bytes, at most max_trailing (trailing_bytes 0: max_trailing
 * entries). raft/snapshot_policy.h says why. 0 or UD_ENOMEM.
 */
int ud_fsm_set_snapshot_policy(struct ud_fsm *fsm, uint32_t max_entries, uint64_t max_bytes,
                               uint32_t max_trailing, uint64_t trailing_bytes, char *errmsg);

/*
 * Applies one command at raft index `index` (what raft's apply hook does). For each record of a
 * RECORDS command, in order, at position pos (0-based over the whole entry): records at or before
 * the namespace's last raft position are skipped (already in its WAL); the others get
 * (index, pos) stamped into a copy and go through ud_ns_apply, a record with a condition only when
 * the condition holds against the namespace at that point (else it is rejected with
 * UD_EPRECONDITION, consumes no LSN, and its idempotency key is remembered as rejected). Rejections
 * are deterministic and only recorded in the result. NS_CREATE/NS_DELETE go through the registry.
 * *res (borrowed until the next apply) describes the outcome.
 * Returns 0, or a storage failure (UD_EIO, UD_ENOSPC, UD_ENOMEM, UD_EMAPFULL) that makes applying
 * this entry impossible on this node: raft must not move past it (it retries the entry later; the
 * records already applied are skipped then), because skipping it would diverge from the others.
 */
int ud_fsm_apply(struct ud_fsm *fsm, uint64_t index, const uint8_t *buf, size_t len,
                 const struct ud_fsm_result **res);

/*
 * Snapshot metadata (docs/raft.md): every namespace's last LSN and raft position, with the raft
 * index. No I/O. *buf is malloc'd (transferred). Returns 0 or UD_ENOMEM. Loop thread.
 */
int ud_fsm_snapshot(struct ud_fsm *fsm, uint64_t index, uint8_t **buf, size_t *len, char *errmsg);

/*
 * Fsyncs the WAL of every namespace named in snapshot metadata (those deleted since are skipped),
 * so raft may truncate its log behind the snapshot. Thread-safe: raft runs it as async work.
 * Returns 0, UD_EIO (a WAL failed: no snapshot may be stored) or UD_ECORRUPT (bad metadata).
 */
int ud_fsm_snapshot_sync(struct ud_fsm *fsm, const uint8_t *buf, size_t len, char *errmsg);

/*
 * Restore check: 0 when this node's namespaces are at or beyond the snapshot's LSNs (raft then
 * replays the log after it and the FSM skips what the WALs hold); the namespaces here that the
 * snapshot does not list and that predate it are then deleted (a delete this node missed; a
 * failure to delete is returned with its code). UD_ERANGE when a namespace is missing or behind
 * (catching up from a peer out of band is needed; errmsg names the first; every one is kept as a
 * catch-up target with the snapshot directory's peers, see ud_fsm_take_behind), UD_ECORRUPT when
 * buf does not decode.
 */
int ud_fsm_restore(struct ud_fsm *fsm, const uint8_t *buf, size_t len, char *errmsg);

/* For a name not registered here: the delete's raft index when the last raft entry about it that
 * this node applied deleted it (its delete tombstone is newer than its create marker, see the
 * markers in fsm.c); 0 when it never existed here, was only created since, or a marker cannot be
 * read. A node that has not applied a later create yet still names the earlier delete of the
 * name: a relayer compares that index with its copy's incarnation (relayer/incarnation.h). */
uint64_t ud_fsm_ns_deleted(struct ud_fsm *fsm, const char *name);

/* After a restore failed with UD_ERANGE: moves the catch-up plan (targets and the snapshot
 * directory's HTTP URLs of the other members) into *out and returns 1; 0 when there is none.
 * After a restore of the leader's snapshot failed otherwise (a stalled pipeline, bytes that do not
 * decode: ud_fsm_undecodable, a local file that does not read as it should), the plan has no
 * targets: raft must only be closed and started again
 * (raft 0.15 may never retry that restore).
 * Loop thread. */
int ud_fsm_take_behind(struct ud_fsm *fsm, struct ud_catchup_plan *out);
/* The namespaces of `gone` (a catch-up found them deleted on the peers after the snapshot at
 * gone->snapshot_index) are not needed when that same snapshot is restored: the log after it
 * deletes them. Copied; NULL clears. Call before raft_start. */
void ud_fsm_waive(struct ud_fsm *fsm, const struct ud_catchup_plan *gone);
/* 1 while a plan waits to be taken: namespaces behind, or a restart that a failed restore asked
 * for, due once the apply pipeline has drained and, for a snapshot that does not decode, once its
 * record is written (a write that failed is tried again here). Loop thread. */
int ud_fsm_behind_pending(struct ud_fsm *fsm);
/* Where the FSM records a leader's snapshot that does not decode here (raft/set_aside.h), in
 * the restore hook at once: the node's data directory. Without it (raft_fixture) nothing is
 * written. 0 or UD_EINVAL (path too long). Before raft_start. */
int ud_fsm_set_data_dir(struct ud_fsm *fsm, const char *data_dir, char *errmsg);
/* 1 when the leader's snapshot that raft stored here does not decode (a corrupted transfer, a
 * leader of a newer format), with raft's term and index of it: its restart plan has no targets,
 * and the stored copy must be set aside before raft starts again, or that start would fail on
 * it the same way. From then on the FSM drops every raft message this node receives, so nothing
 * past that snapshot is stored or acknowledged here. Loop thread. */
int ud_fsm_undecodable(const struct ud_fsm *fsm, uint64_t *term, uint64_t *index);
/* Why this node takes no raft message (the restore hook's message: the leader's snapshot does
 * not decode, or a local file it is checked against does not read), or NULL when it takes them.
 * Loop thread. */
const char *ud_fsm_deaf(const struct ud_fsm *fsm);
/* Adds the HTTP URLs of the members in the FSM's directory, except self's, to plan. 0 or
 * UD_ENOMEM. Loop thread. */
int ud_fsm_directory_peers(struct ud_fsm *fsm, uint64_t self, struct ud_catchup_plan *plan);

/* Thread-safe. */
void ud_fsm_stats(struct ud_fsm *fsm, struct ud_fsm_stats *st);

/* A writer's HTTP and RESP addresses from the replicated member directory (MEMBER commands), or
 * NULL when it never announced them. Borrowed until the next applied entry. Loop thread. */
struct ud_directory_entry;
const struct ud_directory_entry *ud_fsm_member(struct ud_fsm *fsm, uint64_t id);

/* The raft index up to which every entry is applied on this node (its records are in the WALs
 * and memtables), given raft's last applied index: entries handed to the apply thread and not
 * yet applied hold it back. A follower's entries left for after raft's callback (docs/raft.md
 * "A follower answers before it applies") are applied first. Loop thread. */
uint64_t ud_fsm_applied_index(struct ud_fsm *fsm, uint64_t raft_applied);

/*
 * Loop thread: whether the apply pipeline is stalled at an entry that failed with a storage
 * error (a full disk, say), on the apply thread or applied inline on the loop. Everything
 * committed after it waits, since nothing may be applied out of order, and the apply thread
 * retries it on its own until it applies. Never waits: returns 0 when nothing is stalled (and
 * without a pipeline), else the last failure: the UD_E* code with errmsg saying what fails
 * ("raft entry 19: namespace default: ...: no space left on device").
 */
int ud_fsm_check_stalled(struct ud_fsm *fsm, char *errmsg);

/* The last failure of a raft hook or of the apply thread (apply, snapshot or restore): its UD_E*
 * code (0 when none) and *errmsg (borrowed, "" when none). */
int ud_fsm_error(struct ud_fsm *fsm, const char **errmsg);

/* --- the apply pipeline ------------------------------------------------------------------------
 *
 * Without it every committed entry is applied inside raft's apply hook, on the loop, and raft's
 * apply callback gets the finished result. With it, raft's hook queues a copy of each RECORDS
 * entry and a thread of the FSM applies the queue in order, while the loop goes on writing raft's
 * log; the proposer is answered from the loop once its entry is applied (docs/raft.md "The apply
 * pipeline"). Namespace commands, snapshots and restores wait for the queue to drain, and fail
 * at once while it is stalled.
 */

/*
 * Starts the apply thread and its wake-up handle on loop (after ud_fsm_attach, before raft can
 * apply). Returns 0, UD_EIO (libuv) or UD_ENOMEM (no thread).
 */
int ud_fsm_start_pipeline(struct ud_fsm *fsm, uv_loop_t *loop, char *errmsg);

/*
 * Stops the pipeline before raft is closed: waits until the thread has applied every queued entry,
 * answers them (ud_fsm_on_applied callbacks), and answers entries a storage failure kept from
 * applying with UD_EINDOUBT and a message saying that they are committed and applied at the next
 * start (raft replays them), the failure last. Later
 * entries are applied synchronously again. closed(arg) is called from the loop once the wake-up
 * handle is closed; ud_fsm_close must wait for it.
 */
void ud_fsm_stop_pipeline(struct ud_fsm *fsm, void (*closed)(void *arg), void *arg);

/*
 * Called once per entry with status 0 and its result once it is applied on this node, or with
 * UD_EINDOUBT (res NULL, errmsg says why: the storage failure) when the pipeline stops before it
 * could be applied. res and errmsg are borrowed for the call.
 */
typedef void (*ud_fsm_applied_cb)(void *arg, int status, const struct ud_fsm_result *res,
                                  const char *errmsg);

/*
 * For raft's apply callback: res is the result raft passed it (what the apply hook returned).
 * cb is called at once when the entry is already applied (synchronous FSM, namespace commands),
 * otherwise later from the loop, never before this returns.
 */
void ud_fsm_on_applied(struct ud_fsm *fsm, const struct ud_fsm_result *res, ud_fsm_applied_cb cb,
                       void *arg);

/*
 * Waits (blocking the caller) until every queued entry is applied; a stalled entry is tried once
 * more at once, and the wait is for that attempt. Returns 0 (also without a pipeline) or the
 * storage failure that stops the queue (errmsg set). For raft's start, not the serving loop.
 */
int ud_fsm_wait_applied(struct ud_fsm *fsm, char *errmsg);

/* Entries queued to the apply thread so far, and how many of them it has applied. Thread-safe. */
uint64_t ud_fsm_handed(struct ud_fsm *fsm);
uint64_t ud_fsm_finished(struct ud_fsm *fsm);

#endif
