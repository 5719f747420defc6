/*
 * Room for raft's log on a full disk (docs/raft.md "A full disk under raft's log").
 *
 * raft 0.15 cannot survive a failed allocation of a log segment: the prepare failure marks its I/O
 * as errored for good, and the appends it fails roll the leader's in-memory log back through a
 * path that dereferences NULL (refsDecr, from appendLeaderCb; fixed upstream after 0.15). So the
 * allocation must not fail. The writer keeps {data_dir}/raft-reserve allocated with one segment's
 * bytes; when raft's allocation of a segment finds the disk full, the reserve's blocks are given
 * back and the allocation tried again, and from then on the log is short of room: the writer
 * refuses new writes (UD_ENOSPC, naming the disk) until the reserve is whole again, which the
 * node tries once a second while enough is free. Without a reserve left, the allocation waits
 * for room on raft's pool thread (a follower's log grows with its leader's entries, which it
 * cannot refuse), until space returns or raft closes.
 *
 * Process-wide state: one writer, one raft node per process (the segment allocation hook in
 * raft/segment_alloc.c is process-wide too).
 */
#ifndef UD_RAFT_LOG_RESERVE_H
#define UD_RAFT_LOG_RESERVE_H

#include <stdbool.h>
#include <stddef.h>

/* Opens (creating) path and allocates bytes in it. A disk without that much room is not an error:
 * the log is then short of room (writes refused) until ud_raft_reserve_restore succeeds.
 * 0, or UD_EIO naming the path for other failures. */
int ud_raft_reserve_open(const char *path, size_t bytes, char *errmsg);
/* Closes the reserve file (its blocks stay allocated for the next start). */
void ud_raft_reserve_close(void);

/* Raft's segment allocation hook: called with the allocation's ENOSPC (or EDQUOT), retries
 * alloc(arg) (which returns 0 or an errno) after giving the reserve back, then waits for room
 * unless raft is closing. Returns 0 or the last errno. Any thread. */
int ud_raft_reserve_on_full(const char *segment, int (*alloc)(void *arg), void *arg);

/* True while the log is short of room: new writes are refused. Any thread. */
bool ud_raft_log_short(void);
/* Writes why into buf (the reserve's path and what it needs). */
void ud_raft_log_short_reason(char *buf, size_t size);

/* Tries to make the reserve whole again when the disk has room for it and a margin; ends the
 * shortage on success. Called by the node's timer while ud_raft_log_short(). */
void ud_raft_reserve_restore(void);

/* True while a segment allocation waits for room: a leader's appends may be queued behind it,
 * and raft 0.15 crashes canceling them in raft_close, so a stop waits (raft/node.c). */
bool ud_raft_reserve_waiting(void);

/* Raft is about to close: an allocation waiting for room gives up (raft discards it). Called on
 * the loop thread right before raft_close, so that raft sees itself closing by the time the
 * allocation's failure reaches it. */
void ud_raft_reserve_closing(void);

#endif
