/*
 * Completions of a kernel AIO context read from its ring in user memory, without a system call.
 *
 * The kernel maps each AIO context's completion ring into the process: the context id io_setup
 * returns is the ring's address. The kernel appends events at the ring's tail and reads the head
 * back from that memory whenever it needs to (io_getevents, and io_submit when it runs short of
 * free slots), so a reader in user space may take events and advance the head itself, as long
 * as one thread at a time reaps a given context. raft_uv 0.15 reaps its open segment's context
 * from the loop (after its eventfd said a write completed) and, for a write it resubmits from a
 * libuv pool thread, from that thread: never both at once, since it keeps one write in flight
 * (max_concurrent_writes 1), a resubmitted write does not signal the eventfd, and the hand-over
 * between the two threads goes through uv_queue_work, which orders each thread's head store
 * before the other's load. Raising raft's concurrent writes or changing its pool path means
 * checking this again. In a forked child every reap goes to the kernel (the rings are shared).
 */
#ifndef UD_RAFT_AIO_RING_H
#define UD_RAFT_AIO_RING_H

#include <linux/aio_abi.h>

/* Takes up to max_nr events, at least min_nr, from ctx's ring into events and advances the
 * ring's head past them. Returns how many it took, or 0 when min_nr is below 1 (a poll: the
 * kernel also tells a context that is gone, whose ring is unmapped) or above max_nr (the
 * kernel's EINVAL), in a forked child, when the ring holds fewer
 * than min_nr, or when it does not look like a ring this code knows (magic number, header size,
 * an incompatible feature bit): the caller then asks the kernel. ctx must be a live context
 * (its ring is read): the caller must not have destroyed it, and must be its only reaper. */
long ud_raft_aio_ring_reap(aio_context_t ctx, long min_nr, long max_nr, struct io_event *events);

#endif
