/*
 * libraft's AIO and io_uring system calls, with io_destroy off the caller's thread (see
 * aio_calls.h and docs/raft.md "Segment close without the io_destroy wait").
 */
#include "raft/aio_calls.h"

#include "raft/aio_ring.h"

#include <pthread.h>
#include <stdint.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

/* Contexts waiting for the release thread. raft closes one segment per snapshot; a burst larger
 * than this is destroyed by its callers, as raft itself would. */
#define QUEUE_CAP 64

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static pthread_cond_t idle = PTHREAD_COND_INITIALIZER; /* queue empty and no destroy running */
static aio_context_t queue[QUEUE_CAP];
static unsigned head, count;
static bool busy;        /* the thread is inside a destroy */
static int thread_state; /* 0: not started, 1: running, -1: could not start */
static atomic_ulong released;
static atomic_ulong reaped;
static atomic_int log_writes_wait = 0;

static void *release_main(void *arg)
{
    (void)arg;
    for (;;) {
        pthread_mutex_lock(&mu);
        while (count == 0)
            pthread_cond_wait(&wake, &mu);
        aio_context_t ctx = queue[head];
        head = (head + 1) % QUEUE_CAP;
        count--;
        busy = true;
        pthread_mutex_unlock(&mu);
        syscall(__NR_io_destroy, ctx);
        atomic_fetch_add(&released, 1);
        pthread_mutex_lock(&mu);
        busy = false;
        if (count == 0)
            pthread_cond_broadcast(&idle);
        pthread_mutex_unlock(&mu);
    }
    return NULL;
}

/*
 * fork() copies neither the thread nor the parent's AIO contexts (the child's context table
 * starts empty), but it copies this state: a child would queue to a thread that does not exist,
 * or find mu held by it. The child starts over; the parent's queued ids mean nothing there.
 */
static void fork_prepare(void)
{
    pthread_mutex_lock(&mu);
}

static void fork_parent(void)
{
    pthread_mutex_unlock(&mu);
}

static void fork_child(void)
{
    pthread_mutex_init(&mu, NULL);
    pthread_cond_init(&wake, NULL);
    pthread_cond_init(&idle, NULL);
    head = count = 0;
    busy = false;
    thread_state = 0;
}

/* Under mu. The thread blocks every signal, so signals keep going to the threads that expect
 * them; detached, it lasts as long as the process. */
static void start_thread(void)
{
    pthread_t t;
    pthread_attr_t attr;
    sigset_t all, old;
    thread_state = -1;
    if (pthread_attr_init(&attr) != 0)
        return;
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    static bool atfork_registered;
    if (!atfork_registered) {
        if (pthread_atfork(fork_prepare, fork_parent, fork_child) != 0) {
            pthread_attr_destroy(&attr);
            return;
        }
        atfork_registered = true;
    }
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    if (pthread_create(&t, &attr, release_main, NULL) == 0)
        thread_state = 1;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
}

int io_destroy(aio_context_t ctx_id)
{
    pthread_mutex_lock(&mu);
    if (thread_state == 0)
        start_thread();
    if (thread_state == 1 && count < QUEUE_CAP) {
        queue[(head + count) % QUEUE_CAP] = ctx_id;
        count++;
        pthread_cond_signal(&wake);
        pthread_mutex_unlock(&mu);
        return 0;
    }
    pthread_mutex_unlock(&mu);
    return (int)syscall(__NR_io_destroy, ctx_id);
}

void ud_raft_aio_drain(void)
{
    pthread_mutex_lock(&mu);
    while (count > 0 || busy)
        pthread_cond_wait(&idle, &mu);
    pthread_mutex_unlock(&mu);
}

unsigned long ud_raft_aio_released(void)
{
    return atomic_load(&released);
}

unsigned long ud_raft_aio_reaped(void)
{
    return atomic_load(&reaped);
}

/* The rest as raft's syscall.c has them, io_getevents reading the ring first. */

int io_setup(unsigned nr_events, aio_context_t *ctx_idp)
{
    return (int)syscall(__NR_io_setup, nr_events, ctx_idp);
}

/*
 * raft_uv submits each log write (one IOCB_CMD_PWRITEV) with RWF_NOWAIT and, when ext4 refuses it
 * (EAGAIN: the write spans written blocks and blocks posix_fallocate left unwritten, which takes
 * the exclusive inode lock), redoes it from a libuv pool thread, two more thread hand-offs per
 * write. The part of
 * each open segment that raft/segment_alloc.c writes out with zeros is never refused; every log
 * write goes without RWF_NOWAIT here (unless ud_raft_aio_log_writes_wait(0): a log not on ext4),
 * and only those past the zeros need it: the kernel takes them
 * asynchronously as well, and converts the blocks when they complete (one journal commit per
 * write, inside the write's own O_DSYNC wait). io_submit then splits the extent and starts a
 * journal handle on the loop thread, which can wait for a commit under way; under the loads that
 * reach past the zeros (many clients, large entries) that cost less than the zeros it saves
 * (docs/raft.md "raft's log writes without a pool thread"; measured on ext4). raft's start-up probe
 * (one IOCB_CMD_PWRITE) keeps its flag: it decides whether asynchronous writes work here at all.
 */
int io_submit(aio_context_t ctx_id, long nr, struct iocb **iocbpp)
{
    if (atomic_load_explicit(&log_writes_wait, memory_order_relaxed))
        for (long i = 0; i < nr; i++)
            if (iocbpp[i]->aio_lio_opcode == IOCB_CMD_PWRITEV)
                iocbpp[i]->aio_rw_flags &= ~(uint32_t)RWF_NOWAIT;
    return (int)syscall(__NR_io_submit, ctx_id, nr, iocbpp);
}

void ud_raft_aio_log_writes_wait(int allowed)
{
    atomic_store(&log_writes_wait, allowed != 0);
}

/* raft_uv calls this on the loop thread after the segment's eventfd said a write completed, to
 * take the completion (min_nr 1, no timeout): the event is in the ring already (the kernel fills
 * the ring before it signals the eventfd), so it is taken from there without the system call,
 * which was one of the 10-14 per write on every writer at concurrency 1, on the path from a
 * log write's completion to the follower's result and to the leader's commit (docs/raft.md
 * "Log write completions from the ring"). The kernel waits only when the ring holds fewer. */
int io_getevents(aio_context_t ctx_id, long min_nr, long nr, struct io_event *events,
                 struct timespec *timeout)
{
    long n = ud_raft_aio_ring_reap(ctx_id, min_nr, nr, events);
    if (n > 0) {
        atomic_fetch_add_explicit(&reaped, (unsigned long)n, memory_order_relaxed);
        return (int)n;
    }
    return (int)syscall(__NR_io_getevents, ctx_id, min_nr, nr, events, timeout);
}

int io_uring_register(int fd, unsigned int opcode, const void *arg, unsigned int nr_args)
{
    return (int)syscall(__NR_io_uring_register, fd, opcode, arg, nr_args);
}

int io_uring_setup(unsigned int entries, struct io_uring_params *p)
{
    return (int)syscall(__NR_io_uring_setup, entries, p);
}

int io_uring_enter(int fd, unsigned int to_submit, unsigned int min_complete, unsigned int flags,
                   sigset_t *sig)
{
    return (int)syscall(__NR_io_uring_enter, fd, to_submit, min_complete, flags, sig, _NSIG / 8);
}
