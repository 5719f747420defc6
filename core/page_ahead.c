/* The page cache past a growing file's end, prepared in single-page folios (core/page_ahead.h). */
#include "core/page_ahead.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/log.h"

/* Reads in steps this large: one buffer, reused. */
#define READ_BYTES (256u << 10)

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
    pa->buf = NULL;
    pa->fd = open_fd(path);
    if (pa->fd < 0)
        give_up(pa, "open");
    else if ((pa->buf = malloc(READ_BYTES)) == NULL)
        give_up(pa, "read buffer");
}

void ud_page_ahead_close(struct ud_page_ahead *pa)
{
    if (pa->fd >= 0)
        close(pa->fd);
    pa->fd = -1;
    free(pa->buf);
    pa->buf = NULL;
}

static void give_up(struct ud_page_ahead *pa, const char *what)
{
    ud_warn("store", "page cache ahead of the data file: %s: %s; continuing without", what,
            strerror(errno));
    ud_page_ahead_close(pa);
}

/* Reads [from, to) of fd into the page cache through buf. 0 or -1 (errno set). */
static int read_stretch(int fd, uint8_t *buf, uint64_t from, uint64_t to)
{
    for (uint64_t off = from; off < to;) {
        size_t n = to - off < READ_BYTES ? (size_t)(to - off) : READ_BYTES;
        ssize_t got = pread(fd, buf, n, (off_t)off);
        if (got < 0 && errno == EINTR)
            continue;
        if (got == 0)
            errno = EIO; /* the file ends before to: no errno of pread's own */
        if (got <= 0)
            return -1;
        off += (uint64_t)got;
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
    else if (read_stretch(pa->fd, pa->buf, start, target) != 0)
        failed = "read";
    if (failed != NULL)
        give_up(pa, failed);
    else
        pa->end = target;
}
