/* The page cache past a growing file's end, prepared in single-page folios (core/page_ahead.h). */
#include "core/page_ahead.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/log.h"

/* readahead(2) steps: the smallest readahead window a device has by default. */
#define STEP_BYTES (128u << 10)

static int open_fd(const char *path)
{
    int fd = open(path, O_RDWR | O_CLOEXEC);
    /* FMODE_RANDOM on this descriptor only: its reads allocate exactly the pages asked for, as
     * single-page folios; LMDB's own descriptor and mapping are not affected. */
    int e;
    if (fd >= 0 && (e = posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM)) != 0) {
        close(fd);
        errno = e; /* posix_fadvise returns its error instead of setting errno */
        fd = -1;
    }
    return fd;
}

static void give_up(struct ud_page_ahead *pa, const char *what);

void ud_page_ahead_open(struct ud_page_ahead *pa, const char *path)
{
    pa->end = pa->used = pa->growth = 0;
    pa->fd = open_fd(path);
    if (pa->fd < 0)
        give_up(pa, "open");
}

void ud_page_ahead_close(struct ud_page_ahead *pa)
{
    if (pa->fd >= 0)
        close(pa->fd);
    pa->fd = -1;
}

static void give_up(struct ud_page_ahead *pa, const char *what)
{
    ud_warn("store", "page cache ahead of the data file: %s: %s; continuing without", what,
            strerror(errno));
    ud_page_ahead_close(pa);
}

/* Brings [from, to) of fd into the page cache. readahead(2) allocates single-page folios (the
 * forced readahead path allocates the mapping's smallest folios) and, the stretch being a hole,
 * zeroes them without I/O; unlike pread it copies nothing out to a buffer. The kernel caps one
 * call at the larger of the device's readahead window and its largest request, so the stretch
 * goes in steps no larger than the smallest default window (128 KiB). A page left out costs the
 * write a large folio, not correctness. 0 or -1 (errno set). */
static int read_stretch(int fd, uint64_t from, uint64_t to)
{
    for (uint64_t off = from; off < to; off += STEP_BYTES) {
        size_t n = to - off < STEP_BYTES ? (size_t)(to - off) : STEP_BYTES;
        if (readahead(fd, (off64_t)off, n) != 0)
            return -1;
    }
    return 0;
}

void ud_page_ahead_prepare(struct ud_page_ahead *pa, uint64_t used, uint64_t limit)
{
    if (pa->used != 0 && used > pa->used && used - pa->used > pa->growth)
        pa->growth = used - pa->used;
    pa->used = used;
    uint64_t stretch = 2 * pa->growth;
    if (stretch < UD_PAGE_AHEAD_MIN)
        stretch = UD_PAGE_AHEAD_MIN;
    if (stretch > UD_PAGE_AHEAD_MAX)
        stretch = UD_PAGE_AHEAD_MAX;
    if (pa->fd < 0 || used + stretch / 2 <= pa->end)
        return;
    uint64_t target = used + stretch;
    if (target > limit)
        target = limit;
    uint64_t start = pa->end > used ? pa->end : used;
    if (target <= start)
        return;
    struct stat st;
    const char *failed = NULL;
    /* Growing the size allocates nothing; LMDB reads and copies only up to its last page. */
    if (fstat(pa->fd, &st) != 0)
        failed = "fstat";
    else if ((uint64_t)st.st_size < target && ftruncate(pa->fd, (off_t)target) != 0)
        failed = "extend";
    else if (read_stretch(pa->fd, start, target) != 0)
        failed = "read";
    if (failed != NULL)
        give_up(pa, failed);
    else
        pa->end = target;
}
