/*
 * raft_uv's open log segments written out with zeros when raft allocates them (see
 * segment_alloc.h and docs/raft.md "raft's log writes without a pool thread").
 */
#include "raft/segment_alloc.h"

#include "core/log.h"
#include "raft/log_reserve.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ZERO_CHUNK (1u << 20)

static atomic_size_t zero_bytes = (size_t)64 << 20;
static atomic_ulong zero_filled;

typedef int (*fallocate_fn)(int, off_t, off_t);

static fallocate_fn real_fallocate(void)
{
    static _Atomic(fallocate_fn) fn;
    fallocate_fn f = atomic_load(&fn);
    if (f == NULL) {
        f = (fallocate_fn)dlsym(RTLD_NEXT, "posix_fallocate");
        atomic_store(&fn, f);
    }
    return f;
}

/* True when fd is a file named open-N in a directory named raft: raft_uv's open segments. */
static int is_raft_open_segment(int fd, char *path, size_t cap)
{
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, cap - 1);
    if (n <= 0 || (size_t)n >= cap - 1)
        return 0;
    path[n] = '\0';
    const char *base = strrchr(path, '/');
    if (base == NULL || strncmp(base + 1, "open-", 5) != 0)
        return 0;
    if (base - path < 5 || strncmp(base - 5, "/raft", 5) != 0)
        return 0;
    return 1;
}

/*
 * Writes zeros over [0, len) through a second descriptor opened with O_DIRECT (no page cache is
 * left behind: cached pages make raft's direct writes fall back as well), then fdatasync: the
 * extents are then written, not unwritten.
 */
static int zero_file(const char *path, off_t len)
{
    int fd = open(path, O_WRONLY | O_DIRECT | O_CLOEXEC);
    if (fd < 0)
        return errno;
    void *buf = NULL;
    int err = posix_memalign(&buf, 4096, ZERO_CHUNK);
    if (err != 0) {
        close(fd);
        return err;
    }
    memset(buf, 0, ZERO_CHUNK);
    for (off_t off = 0; off < len && err == 0;) {
        size_t n = (size_t)(len - off) < ZERO_CHUNK ? (size_t)(len - off) : ZERO_CHUNK;
        n = (n + 4095) & ~(size_t)4095;
        ssize_t w = pwrite(fd, buf, n, off);
        if (w < 0) {
            if (errno != EINTR)
                err = errno;
        } else if (w == 0) {
            err = EIO; /* no progress: a full or failing disk must not spin this loop */
        } else {
            off += w;
        }
    }
    if (err == 0 && fdatasync(fd) != 0)
        err = errno;
    free(buf);
    close(fd);
    return err;
}

/*
 * The process's posix_fallocate (the symbol libraft imports; <fcntl.h> renames the C name to
 * posix_fallocate64 with 64-bit offsets, hence the assembler name): raft_uv calls it from a
 * libuv pool thread for every new open segment; every other caller gets the C library's.
 */
struct allocation {
    fallocate_fn f;
    int fd;
    off_t offset, len;
};

static int allocate_again(void *arg)
{
    struct allocation *a = arg;
    return a->f(a->fd, a->offset, a->len);
}

int ud_posix_fallocate(int fd, off_t offset, off_t len) __asm__("posix_fallocate");
int ud_posix_fallocate(int fd, off_t offset, off_t len)
{
    fallocate_fn f = real_fallocate();
    if (f == NULL)
        return ENOSYS;
    int err = f(fd, offset, len);
    /* A quota is a full disk for this process. */
    bool full = err == ENOSPC || err == EDQUOT;
    if (err != 0 && !full)
        return err;
    char path[PATH_MAX];
    if (!is_raft_open_segment(fd, path, sizeof path))
        return err;
    /* raft 0.15 does not survive a failed segment allocation (raft/log_reserve.h). */
    if (full) {
        struct allocation a = {f, fd, offset, len};
        err = ud_raft_reserve_on_full(path, allocate_again, &a);
        if (err != 0)
            return err;
    }
    size_t bytes = atomic_load(&zero_bytes);
    if (bytes == 0 || offset != 0)
        return 0;
    /* A failure here leaves the allocation as raft asked for it, like the part past the zeros:
     * its writes then convert the blocks as they go on ext4, or are refused and redone from
     * raft's pool thread elsewhere (raft/aio_calls.h). */
    off_t n = (off_t)bytes < len ? (off_t)bytes : len;
    int zerr = zero_file(path, n);
    if (zerr == 0) {
        atomic_fetch_add(&zero_filled, 1);
    } else {
        ud_warn("raft",
                "segment %s: writing out its first %lld bytes failed (%s); its log writes "
                "there take the slower path (raft/aio_calls.h)",
                path, (long long)n, strerror(zerr));
    }
    return 0;
}

void ud_raft_segment_zero_fill(size_t bytes)
{
    atomic_store(&zero_bytes, bytes);
}

unsigned long ud_raft_segments_zero_filled(void)
{
    return atomic_load(&zero_filled);
}
