/*
 * The kernel AIO and io_uring calls libraft 0.15 makes, provided by this program.
 *
 * raft_uv writes its log with kernel AIO, one context per open segment, and destroys a segment's
 * context on the loop thread when it closes the segment (every snapshot closes one). io_destroy
 * waits for the kernel to release the context, an RCU grace period: 24-48 ms on the benchmark VM
 * for a context with nothing in flight, during which the loop reads no request, sends no
 * AppendEntries and answers no write (docs/raft.md "Segment close without the io_destroy wait").
 * Here io_destroy hands the context to a thread of its own that destroys it, and returns;
 * io_getevents takes completions from the context's ring in user memory (raft/aio_ring.h); and
 * io_submit lets log writes past a segment's written-out part go asynchronously (below).
 *
 * libraft defines these in its private src/syscall.c (object syscall.o: these seven and nothing
 * else); the programs link libraft statically and this file whole (meson.build, raft_dep), so
 * the linker never takes raft's syscall.o, as with raft/checksum.c and byte.o. The names and
 * signatures must stay raft 0.15's.
 */
#ifndef UD_RAFT_AIO_CALLS_H
#define UD_RAFT_AIO_CALLS_H

#include <linux/aio_abi.h>
#include <signal.h>
#include <time.h>

struct io_uring_params;

int io_setup(unsigned nr_events, aio_context_t *ctx_idp);
/* Returns 0 at once: the context is destroyed by the release thread. raft ignores the result.
 * raft closes a segment's writer with nothing in flight on it, except when raft itself closes:
 * then writes still in the kernel are reported cancelled, and the kernel's io_destroy waits for
 * them to land. Whoever reopens the log in this process calls ud_raft_aio_drain() first, so no
 * such write lands after the reopen. Destroyed here, synchronously, only when the thread cannot
 * start or its queue is full. */
int io_destroy(aio_context_t ctx_id);
/* raft's log writes (IOCB_CMD_PWRITEV) are submitted without RWF_NOWAIT (unless
 * ud_raft_aio_log_writes_wait(0)), so that a write into blocks not yet written is taken
 * asynchronously rather than refused and redone from a pool thread (aio_calls.c); everything else
 * as given. */
int io_submit(aio_context_t ctx_id, long nr, struct iocb **iocbpp);
/* Whether raft's log writes may wait in io_submit (1: RWF_NOWAIT dropped; 0, the default: raft's
 * own RWF_NOWAIT and pool thread). What that wait is was measured on ext4 only; the node turns it
 * on when its log is on ext4 (raft/node.c). Process-wide, like
 * ud_raft_segment_zero_fill: the last node started decides (a writer runs one node). */
void ud_raft_aio_log_writes_wait(int allowed);
/* Takes the events from the context's ring in user memory when it holds min_nr or more
 * (raft/aio_ring.h), and asks the kernel otherwise. A context must be reaped by one thread at a
 * time, as raft_uv does. */
int io_getevents(aio_context_t ctx_id, long min_nr, long nr, struct io_event *events,
                 struct timespec *timeout);
int io_uring_register(int fd, unsigned int opcode, const void *arg, unsigned int nr_args);
int io_uring_setup(unsigned int entries, struct io_uring_params *p);
int io_uring_enter(int fd, unsigned int to_submit, unsigned int min_complete, unsigned int flags,
                   sigset_t *sig);

/* Returns once every context handed to io_destroy so far is destroyed (and so every write that
 * was in flight on it has landed). Blocks for up to tens of ms per queued context. */
void ud_raft_aio_drain(void);

/* Events io_getevents took from a ring without the system call so far in this process. */
unsigned long ud_raft_aio_reaped(void);

/* Contexts the release thread has destroyed so far in this process. */
unsigned long ud_raft_aio_released(void);

#endif
