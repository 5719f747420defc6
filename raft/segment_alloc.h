/*
 * raft_uv (0.15) allocates each open log segment with posix_fallocate, which on ext4 leaves
 * unwritten extents. Each log write rewrites the segment's last partial block and continues into
 * the unwritten part, and ext4 refuses such a direct write under RWF_NOWAIT (EAGAIN): raft then
 * learns of the refusal at the loop's next poll and resubmits the write from a libuv pool thread,
 * which wakes the loop when it completes. With the segment's blocks written out (zeros) when
 * raft allocates it, the same writes are accepted asynchronously and complete through raft's
 * eventfd, without the pool thread.
 *
 * This file defines posix_fallocate for the process: the C library's, followed for raft's open
 * segments (files open-N in a directory named raft) by zeros written with O_DIRECT and an
 * fdatasync, on the pool thread raft allocates on. Any other caller is unaffected.
 */
#ifndef UD_RAFT_SEGMENT_ALLOC_H
#define UD_RAFT_SEGMENT_ALLOC_H

#include <stddef.h>

/* How much of each new segment is written out at least (64 MiB until set; 0: none, raft's
 * segments are allocated as raft asks). More when raft's recent segments were written further
 * (raft/write_reach.h: many clients fill whole segments), rounded up to 1 MiB, at most the
 * segment. Writes past the part written out take raft's slower path. */
void ud_raft_segment_zero_fill(size_t bytes);
/* Segments written out with zeros so far in this process. */
unsigned long ud_raft_segments_zero_filled(void);

#endif
