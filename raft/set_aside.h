/*
 * A leader's raft snapshot that does not decode here (docs/raft.md "A leader's snapshot that does
 * not decode"): raft 0.15 stored it before the FSM's restore hook refused it, so raft's next start
 * would load it and fail the same way. The restore hook records it at once in
 * {data_dir}/raft-snapshot-undecodable ("term index"; raft is not closed for it before the record
 * is written), and the next start moves that snapshot's files out of raft's directory into
 * {data_dir}/raft-set-aside/ (the newest such copy is kept for inspection). raft does not then
 * find what it held before: storing the leader's snapshot closed its open segment and deleted
 * every closed one, and only its two newest snapshots are kept, so it starts from this node's
 * last own snapshot without log entries, or from nothing (no configuration until the leader sends
 * one); term and vote (metadata1/2) are untouched. The leader sends its log or its snapshot
 * again. The record makes the step survive a crash anywhere between the failed restore and the
 * start.
 */
#ifndef UD_RAFT_SET_ASIDE_H
#define UD_RAFT_SET_ASIDE_H

#include <stdint.h>

/* Records the snapshot (raft's term and index of it) to set aside at the next start; written
 * and fsynced with the directory. 0 or the errno's UD_E* code with errmsg naming the file. */
int ud_raft_record_undecodable(const char *data_dir, uint64_t term, uint64_t index, char *errmsg);

/* Before raft_uv_init: when a snapshot is recorded, moves its files out of raft_dir (both
 * directories fsynced), then removes the record. *index gets the snapshot's index, 0 when none
 * was recorded. A recorded snapshot that is no longer there (set aside before a crash) only
 * removes the record. Returns 0, UD_ECORRUPT (the record does not hold a term and an index) or
 * the errno's UD_E* code, errmsg naming the file. */
int ud_raft_set_aside_undecodable(const char *data_dir, const char *raft_dir, uint64_t *index,
                                  char *errmsg);

#endif
