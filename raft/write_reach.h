/*
 * How far raft's log writes reach into their segments.
 *
 * raft/segment_alloc.c writes each new open segment out with zeros, as far as a snapshot cycle
 * is expected to fill it, so that raft's RWF_NOWAIT log writes there are not refused (docs/raft.md
 * "raft's log writes without a pool thread"). Its estimate from the snapshot threshold (2 KiB per
 * entry) fits one client's small entries; under many clients entries carry dozens of writes, a
 * snapshot cycle fills the whole 64 MiB segment, and every write past the part written out was
 * refused and redone from a pool thread. So raft/aio_calls.c's io_submit reports every write
 * here, and segment_alloc.c writes the next segment out at least as far as the recent segments
 * were written.
 */
#ifndef UD_RAFT_WRITE_REACH_H
#define UD_RAFT_WRITE_REACH_H

#include <stdint.h>

/* A log write of len bytes at offset. raft writes a segment front to back (each write starts at
 * the last partial block of the one before), so a write that starts before the previous one
 * starts the next segment. Thread-safe. */
void ud_raft_write_reach_note(uint64_t offset, uint64_t len);

/* The furthest end of a write in the segment being written (when raft prepares a segment: the
 * one just closed, raft prepares two ahead) and in the two before it: how far the segment being
 * prepared is likely to be written. 0 before the first write. */
uint64_t ud_raft_write_reach(void);

#endif
