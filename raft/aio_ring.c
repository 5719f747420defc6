/* Reaping a kernel AIO context's completions from its user-space ring (see aio_ring.h). */
#include "raft/aio_ring.h"

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

/* The ring's header as fs/aio.c lays it out (struct aio_ring), followed by its events. A stable
 * user-visible layout: the kernel clamps a head written by user space and refills free slots for
 * user-space reapers (refill_reqs_available, user_refill_reqs_available), fio reaps from it
 * (userspace_reap), and any change that would break such readers gets an incompatible feature
 * bit. */
struct ring_header {
    unsigned id;
    unsigned nr;   /* events the ring holds */
    unsigned head; /* next event to reap: written by the reaper */
    unsigned tail; /* next event the kernel fills */
    unsigned magic;
    unsigned compat_features;
    unsigned incompat_features;
    unsigned header_length;
};

#define RING_MAGIC 0xa10a10a1u

/*
 * A forked child shares its parent's rings (they are MAP_SHARED): reaping one there would take
 * the parent's completions and leave the parent's loop waiting for them in the kernel. In a
 * child every reap goes to the kernel, which refuses the parent's contexts.
 */
static int forked;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void in_child(void)
{
    forked = 1;
}

static void register_atfork(void)
{
    if (pthread_atfork(NULL, NULL, in_child) != 0)
        forked = 1; /* cannot tell a child from the parent: always ask the kernel */
}

long ud_raft_aio_ring_reap(aio_context_t ctx, long min_nr, long max_nr, struct io_event *events)
{
    pthread_once(&atfork_once, register_atfork);
    struct ring_header *ring = (struct ring_header *)(uintptr_t)ctx;
    if (forked || min_nr < 1 || min_nr > max_nr || ring == NULL || ring->magic != RING_MAGIC ||
        ring->incompat_features != 0 || ring->header_length != sizeof *ring || ring->nr == 0)
        return 0;
    struct io_event *slots = (struct io_event *)(uintptr_t)(ctx + ring->header_length);
    unsigned nr = ring->nr;
    unsigned head = __atomic_load_n(&ring->head, __ATOMIC_RELAXED);
    /* Acquire: the kernel writes an event before it publishes the tail past it. */
    unsigned tail = __atomic_load_n(&ring->tail, __ATOMIC_ACQUIRE);
    if (head >= nr || tail >= nr)
        return 0;
    long avail = (long)((tail + nr - head) % nr);
    if (avail < min_nr)
        return 0;
    long n = avail < max_nr ? avail : max_nr;
    for (long i = 0; i < n; i++) {
        events[i] = slots[head];
        head = (head + 1) % nr;
    }
    /* Release: the events are copied out before the kernel may reuse their slots. */
    __atomic_store_n(&ring->head, head, __ATOMIC_RELEASE);
    return n;
}
