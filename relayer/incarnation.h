#ifndef UD_RELAYER_INCARNATION_H
#define UD_RELAYER_INCARNATION_H

#include <stdint.h>

/*
 * Whether a relayer's copy of a namespace is the one its upstream has. Incarnations are the raft
 * index of the namespace's create (the same on every writer), so they only grow: an upstream with
 * a smaller one, or a delete older than the copy, has not applied the copy's create yet (a writer
 * behind, or a relayer fed by one). Pure functions, so the rule is tested on its own.
 */
enum ud_incarnation_verdict {
    UD_INCARNATION_SAME,   /* the same namespace, or the upstream does not say: continue it */
    UD_INCARNATION_NEWER,  /* the copy's namespace was deleted upstream: drop the copy */
    UD_INCARNATION_BEHIND, /* the upstream has not seen the copy's create yet: keep the copy and
                              treat the upstream as lacking the namespace (move on, wait) */
};

/* A "deleted" 404 that does not say when (x-unison-ns-deleted-at absent: an older writer). */
#define UD_DELETED_AT_UNKNOWN UINT64_MAX

/*
 * The copy's incarnation (0: taken before incarnations) against the one the upstream's stream or
 * snapshot carries (x-unison-ns-incarnation, said: the header was there). Servers send it always,
 * 0 included, since a writer stamps at open every namespace whose create it applied: an explicit
 * 0 (created before raft or incarnations, or a stamp this server could not make: docs/raft.md)
 * is taken as an earlier namespace than any stamped copy (BEHIND). Without the header (a writer or
 * relayer of an earlier version) nothing is known: the same. A copy of 0 against a nonzero one is
 * NEWER here; the follower first asks ud_incarnation_copy_is_of whether the copy's own records are
 * of that namespace.
 */
enum ud_incarnation_verdict ud_incarnation_vs_stream(uint64_t copy, int said, uint64_t upstream);

/*
 * Whether a copy without an incarnation (taken from a writer of an earlier version, stamped since
 * from its create marker) may be of the namespace created at raft index created: records carry the
 * raft index of the entry that wrote them, and the create is an entry of its own, so every record
 * of that namespace has a greater one. newest_raft_index is the copy's newest record's (0: none
 * retained, or written before raft): not greater, an earlier namespace or unknown, and dropped.
 * Greater is not enough: a cluster rebuilt from backups starts a new raft log, whose create
 * indexes are small, so any copy from the old cluster passes; ud_incarnation_copy_continues
 * decides at the first record streamed.
 */
int ud_incarnation_copy_is_of(uint64_t created, uint64_t newest_raft_index);

/*
 * The verdict on such a copy at the first record the upstream streams (the one at the copy's next
 * LSN), of raft index first_raft_index: in one raft log, one namespace's records have raft indexes
 * that grow with their LSNs, so the copy is continued (and stamped created) only when that record
 * is not older than the copy's newest. A rebuilt cluster's record at that LSN comes from its new,
 * shorter log and has a smaller index: the copy is another namespace's and dropped.
 */
int ud_incarnation_copy_continues(uint64_t created, uint64_t newest_raft_index,
                                  uint64_t first_raft_index);

/* The copy's incarnation against a "deleted" 404's delete raft index (x-unison-ns-deleted-at,
 * or UD_DELETED_AT_UNKNOWN): a delete newer than the copy's create deleted the copy's namespace. */
enum ud_incarnation_verdict ud_incarnation_vs_deleted(uint64_t copy, uint64_t deleted_at);

#endif
