/*
 * raft_uv (0.15) allocates each open log segment with posix_fallocate, which on ext4 leaves
 * unwritten extents. Each log write rewrites the segment's last partial block and continues into
 * the unwritten part: ext4 refuses such a direct write under raft's RWF_NOWAIT (which
 * raft/aio_calls.c therefore drops), and without it the write converts the blocks as it
 * completes, a journal commit inside each write's O_DSYNC wait. For the small entries of few
 * clients that commit is a large part of the write, so the first part of each segment, as much
 * as a snapshot cycle of small entries fills, is written out with zeros when raft allocates it;
 * large entries (many clients) run past it, where the commit is small against the write and
 * zeros would double the log's bytes on the device.
 *
 * This file defines posix_fallocate for the process: the C library's, followed for raft's open
 * segments (files open-N in a directory named raft) by zeros written with O_DIRECT and an
 * fdatasync, on the pool thread raft allocates on. Any other caller is unaffected.
 */
#ifndef UD_RAFT_SEGMENT_ALLOC_H
#define UD_RAFT_SEGMENT_ALLOC_H

#include <stddef.h>

/* How much of each new segment is written out (64 MiB until set; 0: none, raft's segments are
 * allocated as raft asks), at most the segment. */
void ud_raft_segment_zero_fill(size_t bytes);
/* Segments written out with zeros so far in this process. */
unsigned long ud_raft_segments_zero_filled(void);

#endif
