/*
 * A leader's raft snapshot that does not decode here (docs/raft.md "Snapshots"): raft 0.15 stored
 * it before the FSM's restore hook refused it, so raft's next start would load it and fail the
 * same way. The node records it in {data_dir}/raft-snapshot-undecodable ("term index") before it
 * closes raft, and the next start moves that snapshot's files out of raft's directory into
 * {data_dir}/raft-set-aside/ (the newest such copy is kept for inspection): raft then starts from
 * what it held before, and the leader sends its log or its snapshot again. The record makes the
 * step survive a crash between the two.
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
