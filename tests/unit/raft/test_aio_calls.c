/* raft's AIO calls as this program provides them (raft/aio_calls.c): a write goes through
 * io_setup / io_submit / io_getevents as before; io_destroy returns without waiting for the
 * kernel (24-48 ms per context on the benchmark VM, on raft's loop thread at every segment close),
 * and every context handed to it is destroyed all the same, also when more arrive at once than
 * the release thread queues; a completion already in the context's ring is taken from there,
 * once, and the kernel keeps accepting writes as the ring wraps; a log write into unwritten blocks
 * is taken rather than refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "raft/aio_calls.h"
#include "tests/lib/testutil.h"

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

/* True once the kernel no longer knows ctx. */
static int gone(aio_context_t ctx)
{
    struct io_event ev;
    struct timespec zero = {0, 0};
    return io_getevents(ctx, 0, 1, &ev, &zero) == -1 && errno == EINVAL;
}

/* Waits (up to 20 s) until every context in ctxs is gone. */
static void assert_all_gone(const aio_context_t *ctxs, size_t n)
{
    for (int i = 0; i < 2000; i++) {
        size_t left = 0;
        for (size_t k = 0; k < n; k++)
            left += !gone(ctxs[k]);
        if (left == 0)
            return;
        usleep(10000);
    }
    fail_msg("AIO contexts still exist 20 s after io_destroy");
}

static void setup_all(aio_context_t *ctxs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        ctxs[i] = 0;
        assert_int_equal(io_setup(1, &ctxs[i]), 0);
    }
}

/* A file "segment" in a new scratch directory (*dir, freed by the caller), open for writing. */
static int open_segment(const char *name, char **dir)
{
    *dir = ud_test_tmpdir(name);
    char path[512];
    snprintf(path, sizeof path, "%s/segment", *dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    return fd;
}

static void test_write_round_trip(void **state)
{
    (void)state;
    char *dir;
    int fd = open_segment("raft-aio", &dir);
    char block[4096], back[4096];
    uint64_t seed = 7;
    ud_test_fill(&seed, block, sizeof block);

    aio_context_t ctx = 0;
    assert_int_equal(io_setup(4, &ctx), 0);
    struct iocb cb;
    memset(&cb, 0, sizeof cb);
    cb.aio_fildes = (uint32_t)fd;
    cb.aio_lio_opcode = IOCB_CMD_PWRITE;
    cb.aio_buf = (uint64_t)(uintptr_t)block;
    cb.aio_nbytes = sizeof block;
    cb.aio_offset = 4096;
    cb.aio_data = 42;
    struct iocb *cbs[1] = {&cb};
    assert_int_equal(io_submit(ctx, 1, cbs), 1);
    struct io_event ev;
    assert_int_equal(io_getevents(ctx, 1, 1, &ev, NULL), 1);
    assert_int_equal(ev.data, 42);
    assert_int_equal(ev.res, sizeof block);
    assert_int_equal(pread(fd, back, sizeof back, 4096), (ssize_t)sizeof back);
    assert_memory_equal(back, block, sizeof block);

    unsigned long before = ud_raft_aio_released();
    assert_int_equal(io_destroy(ctx), 0);
    assert_all_gone(&ctx, 1);
    /* The release thread destroyed it (it counts once the kernel's call returned). */
    for (int i = 0; i < 2000 && ud_raft_aio_released() == before; i++)
        usleep(10000);
    assert_true(ud_raft_aio_released() > before);
    close(fd);
    ud_test_rmtree(dir);
    free(dir);
}

static void test_destroy_does_not_wait(void **state)
{
    (void)state;
    enum { N = 40 };
    aio_context_t ctxs[N];
    setup_all(ctxs, N);
    /* The kernel's own io_destroy takes 24-48 ms each on the VM these run on: 1-2 s for all. */
    double t0 = now_ms();
    for (int i = 0; i < N; i++)
        assert_int_equal(io_destroy(ctxs[i]), 0);
    double took = now_ms() - t0;
    printf("# %d io_destroy calls returned in %.2f ms\n", N, took);
    assert_true(took < 400.0);
    assert_all_gone(ctxs, N);
}

static void test_burst_beyond_queue(void **state)
{
    (void)state;
    enum { N = 150 };
    aio_context_t ctxs[N];
    setup_all(ctxs, N);
    for (int i = 0; i < N; i++)
        assert_int_equal(io_destroy(ctxs[i]), 0);
    assert_all_gone(ctxs, N);
}

/* After ud_raft_aio_drain() returns, every context destroyed before it is gone, with no wait. */
static void test_drain(void **state)
{
    (void)state;
    enum { N = 8 };
    aio_context_t ctxs[N];
    setup_all(ctxs, N);
    for (int i = 0; i < N; i++)
        assert_int_equal(io_destroy(ctxs[i]), 0);
    ud_raft_aio_drain();
    for (int i = 0; i < N; i++)
        assert_true(gone(ctxs[i]));
}

/*
 * A child forked after the release thread started (a test forks a raft cluster; a writer could
 * fork a helper) has no such thread: its destroys must still happen, and a drain must return.
 */
static void test_fork_child_destroys(void **state)
{
    (void)state;
    aio_context_t ctx = 0;
    assert_int_equal(io_setup(1, &ctx), 0);
    assert_int_equal(io_destroy(ctx), 0); /* starts the thread in this process */
    ud_raft_aio_drain();
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        alarm(20); /* a drain waiting for a thread that is not there ends the child */
        aio_context_t c = 0;
        if (io_setup(1, &c) != 0 || io_destroy(c) != 0)
            _exit(2);
        ud_raft_aio_drain();
        _exit(gone(c) ? 0 : 1);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

/* One write of len bytes at offset through ctx with the given opcode and flags, waited for: the
 * result of the completion (bytes or -errno), or -errno when io_submit refused it. raw: the
 * system call itself, as raft's own io_submit would make it. */
static int64_t submit_wait(aio_context_t ctx, int fd, uint16_t opcode, uint32_t rw_flags, void *buf,
                           size_t len, uint64_t offset, int raw)
{
    struct iovec iov = {buf, len};
    struct iocb cb;
    memset(&cb, 0, sizeof cb);
    cb.aio_fildes = (uint32_t)fd;
    cb.aio_lio_opcode = opcode;
    cb.aio_rw_flags = rw_flags;
    cb.aio_buf = opcode == IOCB_CMD_PWRITEV ? (uint64_t)(uintptr_t)&iov : (uint64_t)(uintptr_t)buf;
    cb.aio_nbytes = opcode == IOCB_CMD_PWRITEV ? 1 : len;
    cb.aio_offset = (int64_t)offset;
    struct iocb *cbs[1] = {&cb};
    long rc = raw ? syscall(__NR_io_submit, ctx, 1, cbs) : io_submit(ctx, 1, cbs);
    if (rc != 1)
        return -errno;
    struct io_event ev;
    assert_int_equal(io_getevents(ctx, 1, 1, &ev, NULL), 1);
    return ev.res;
}

/* raft's log writes (IOCB_CMD_PWRITEV, RWF_NOWAIT) into blocks posix_fallocate left unwritten:
 * the kernel refuses them (EAGAIN on ext4, which raft would redo from a pool thread); through
 * this program's io_submit they are taken, complete whole and read back. raft's start-up probe
 * (IOCB_CMD_PWRITE) keeps its flag and is answered as the kernel answers it. */
static void test_log_write_into_unwritten_blocks(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("raft-aio-unwritten");
    char path[512];
    snprintf(path, sizeof path, "%s/open-1", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_DIRECT | O_DSYNC | O_CLOEXEC, 0600);
    if (fd < 0 && errno == EINVAL) {
        /* No direct I/O here: raft writes through its pool then, never through these calls. */
        print_message("# skipped: this file system takes no O_DIRECT\n");
        ud_test_rmtree(dir);
        free(dir);
        return;
    }
    assert_true(fd >= 0);
    assert_int_equal(posix_fallocate(fd, 0, 1 << 20), 0);
    void *buf = NULL, *back = NULL;
    assert_int_equal(posix_memalign(&buf, 4096, 8192), 0);
    assert_int_equal(posix_memalign(&back, 4096, 8192), 0);
    uint64_t seed = 11;
    ud_test_fill(&seed, buf, 8192);
    aio_context_t ctx = 0;
    assert_int_equal(io_setup(4, &ctx), 0);

    /* As raft writes a segment: each write rewrites the last partial block (written by the
     * write before) and continues into blocks not yet written. */
    const uint64_t at[4] = {0, 65536, 131072, 196608};
    for (int i = 0; i < 4; i++)
        assert_int_equal(submit_wait(ctx, fd, IOCB_CMD_PWRITE, 0, buf, 4096, at[i], 1), 4096);
    int64_t kernel = submit_wait(ctx, fd, IOCB_CMD_PWRITEV, RWF_NOWAIT, buf, 8192, at[0], 1);
    print_message("# the kernel's answer to such a write under RWF_NOWAIT: %lld\n",
                  (long long)kernel);
    if (kernel == -EOPNOTSUPP || kernel == -EINVAL) {
        /* No asynchronous direct writes here (tmpfs): raft does not use them either. */
        print_message("# skipped: this file system takes no RWF_NOWAIT writes\n");
    } else {
        if (kernel != -EAGAIN)
            print_message("# this file system takes such writes itself: the test shows only "
                          "that they still work\n");
        ud_raft_aio_log_writes_wait(1); /* as a node on ext4 sets it */
        int64_t ours = submit_wait(ctx, fd, IOCB_CMD_PWRITEV, RWF_NOWAIT, buf, 8192, at[1], 0);
        assert_int_equal(ours, 8192);
        assert_int_equal(pread(fd, back, 8192, (off_t)at[1]), 8192);
        assert_memory_equal(back, buf, 8192);
        /* Turned off (a log on another file system than ext4): raft's flag stays. */
        ud_raft_aio_log_writes_wait(0);
        int64_t kept = submit_wait(ctx, fd, IOCB_CMD_PWRITEV, RWF_NOWAIT, buf, 8192, at[2], 0);
        ud_raft_aio_log_writes_wait(1);
        assert_int_equal(kept, kernel);
        /* raft's start-up probe is answered as the kernel answers it. */
        int64_t probe = submit_wait(ctx, fd, IOCB_CMD_PWRITE, RWF_NOWAIT, buf, 8192, at[3], 0);
        assert_int_equal(probe, kernel);
    }
    assert_int_equal(io_destroy(ctx), 0);
    ud_raft_aio_drain();
    free(buf);
    free(back);
    close(fd);
    ud_test_rmtree(dir);
    free(dir);
}

/*
 * raft_uv's pattern: writes that signal an eventfd, and once it is readable, io_getevents with
 * min_nr 1. The completions come from the ring without the system call (the counter), each
 * exactly once (the kernel, asked afterwards, has nothing left), in more rounds than the ring
 * has slots: the kernel reads the head back and keeps accepting writes.
 */
/* Submits PER_ROUND writes of round that signal efd, and waits until all have signalled. */
enum { PER_ROUND = 3 };

static void submit_round(aio_context_t ctx, int fd, int efd, int round)
{
    static char block[PER_ROUND][4096];
    struct iocb cb[PER_ROUND], *cbs[PER_ROUND];
    for (int i = 0; i < PER_ROUND; i++) {
        memset(&cb[i], 0, sizeof cb[i]);
        cb[i].aio_fildes = (uint32_t)fd;
        cb[i].aio_lio_opcode = IOCB_CMD_PWRITE;
        cb[i].aio_buf = (uint64_t)(uintptr_t)block[i];
        cb[i].aio_nbytes = sizeof block[i];
        cb[i].aio_offset = (int64_t)(i * 4096);
        cb[i].aio_data = (uint64_t)(round * PER_ROUND + i);
        cb[i].aio_flags = IOCB_FLAG_RESFD;
        cb[i].aio_resfd = (uint32_t)efd;
        cbs[i] = &cb[i];
    }
    assert_int_equal(io_submit(ctx, PER_ROUND, cbs), PER_ROUND);
    uint64_t seen = 0;
    for (int done = 0; done < PER_ROUND; done += (int)seen)
        assert_int_equal(read(efd, &seen, sizeof seen), (ssize_t)sizeof seen);
}

/* The kernel, asked without waiting, has nothing left for ctx. */
static void assert_ring_empty(aio_context_t ctx)
{
    struct io_event ev;
    struct timespec zero = {0, 0};
    assert_int_equal(syscall(__NR_io_getevents, ctx, 0, 1, &ev, &zero), 0);
}

static void test_completions_from_ring(void **state)
{
    (void)state;
    char *dir;
    int fd = open_segment("raft-aio-ring", &dir);
    int efd = eventfd(0, EFD_CLOEXEC);
    assert_true(efd >= 0);
    aio_context_t ctx = 0;
    assert_int_equal(io_setup(4, &ctx), 0);
    /* Through the ring at least twice over: its size follows the machine's CPU count, not the
     * 4 asked for (struct aio_ring's nr, the second word at the context's address). */
    unsigned nr = ((const unsigned *)(uintptr_t)ctx)[1];
    int rounds = (int)(2 * nr / PER_ROUND) + 1;
    unsigned long before = ud_raft_aio_reaped();
    for (int round = 0; round < rounds; round++) {
        submit_round(ctx, fd, efd, round);
        struct io_event ev[PER_ROUND + 1];
        assert_int_equal(io_getevents(ctx, 1, PER_ROUND + 1, ev, NULL), PER_ROUND);
        uint64_t mask = 0;
        for (int i = 0; i < PER_ROUND; i++) {
            assert_int_equal(ev[i].res, 4096);
            assert_true(ev[i].data >= (uint64_t)(round * PER_ROUND) &&
                        ev[i].data < (uint64_t)((round + 1) * PER_ROUND));
            mask |= 1u << (ev[i].data - (uint64_t)(round * PER_ROUND));
        }
        assert_int_equal(mask, (1u << PER_ROUND) - 1);
        assert_ring_empty(ctx);
    }
    assert_int_equal(ud_raft_aio_reaped() - before, (unsigned long)rounds * PER_ROUND);

    /* One at a time, as raft asks (max_nr 1): each call takes the next event. */
    submit_round(ctx, fd, efd, rounds);
    uint64_t mask = 0;
    for (int i = 0; i < PER_ROUND; i++) {
        struct io_event ev;
        assert_int_equal(io_getevents(ctx, 1, 1, &ev, NULL), 1);
        mask |= 1u << (ev.data - (uint64_t)(rounds * PER_ROUND));
    }
    assert_int_equal(mask, (1u << PER_ROUND) - 1);
    assert_ring_empty(ctx);

    /* A forked child shares the ring but must not take the parent's completions: it asks the
     * kernel, which refuses the parent's context. */
    submit_round(ctx, fd, efd, rounds + 1);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct io_event ev;
        _exit(io_getevents(ctx, 1, 1, &ev, NULL) == -1 ? 0 : 1);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    struct io_event ev[PER_ROUND];
    assert_int_equal(io_getevents(ctx, PER_ROUND, PER_ROUND, ev, NULL), PER_ROUND);

    assert_int_equal(io_destroy(ctx), 0);
    ud_raft_aio_drain();
    close(efd);
    close(fd);
    ud_test_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_write_round_trip),
        cmocka_unit_test(test_destroy_does_not_wait),
        cmocka_unit_test(test_burst_beyond_queue),
        cmocka_unit_test(test_drain),
        cmocka_unit_test(test_fork_child_destroys),
        cmocka_unit_test(test_log_write_into_unwritten_blocks),
        cmocka_unit_test(test_completions_from_ring),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
