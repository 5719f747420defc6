/*
 * When the writer's raft takes a snapshot, and how much log it keeps behind one (docs/raft.md
 * "Snapshots"). raft 0.15 counts entries only (threshold, trailing), but the writer's entries
 * range from one small record to a 1 MiB group commit or LOB chunk: a count that bounds memory for
 * large entries snapshots hundreds of times a second under a trickle of small ones (each snapshot
 * fsyncs every namespace's WAL and closes raft's open log segment), and keeps only milliseconds of
 * log for a lagging follower. So both are bounded by bytes as well: a snapshot is due after
 * max_bytes of entries (or max_entries entries, whichever comes first), and the log kept behind it
 * is the newest entries that fit in trailing_bytes (at most max_trailing).
 *
 * Loop thread only; no raft calls here (raft/fsm.c applies the answers to raft).
 */
#ifndef UD_RAFT_SNAPSHOT_POLICY_H
#define UD_RAFT_SNAPSHOT_POLICY_H

#include <stddef.h>
#include <stdint.h>

struct ud_snapshot_policy {
    uint32_t max_entries;    /* raft's threshold between snapshots */
    uint64_t max_bytes;      /* 0: entries only */
    uint32_t max_trailing;   /* entries kept behind a snapshot, at most */
    uint64_t trailing_bytes; /* 0: max_trailing entries whatever their size */
    uint64_t bytes;          /* applied since the last snapshot */
    uint32_t *sizes;         /* the newest max_trailing entry sizes, a ring */
    uint32_t count, next;
};

/* 0, or UD_ENOMEM (the ring of max_trailing sizes). */
int ud_snapshot_policy_init(struct ud_snapshot_policy *p, uint32_t max_entries, uint64_t max_bytes,
                            uint32_t max_trailing, uint64_t trailing_bytes);
void ud_snapshot_policy_free(struct ud_snapshot_policy *p);

/* An entry of len bytes was applied. Returns 1 when the bytes since the last snapshot reached
 * max_bytes: a snapshot is due now. */
int ud_snapshot_policy_applied(struct ud_snapshot_policy *p, size_t len);

/* A snapshot is being taken: returns how many entries raft should keep behind it, and starts
 * counting bytes again. */
uint32_t ud_snapshot_policy_taken(struct ud_snapshot_policy *p);

#endif
