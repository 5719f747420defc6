/* The page cache past a growing file's end, prepared in single-page folios (core/page_ahead.h). */
#include "core/page_ahead.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/log.h"

#define READ_BYTES (256u << 10)

void ud_page_ahead_open(struct ud_page_ahead *pa, const char *path)
{
    pa->end = pa->used = pa->growth = 0;
    pa->buf = NULL;
    pa->fd = open(path, O_RDWR | O_CLOEXEC);
    if (pa->fd < 0)
        return;
    /* FMODE_RANDOM on this descriptor only: its reads allocate exactly the pages asked for, as
     * single-page folios; LMDB's own descriptor and mapping are not affected. */
    if (posix_fadvise(pa->fd, 0, 0, POSIX_FADV_RANDOM) != 0 ||
        (pa->buf = malloc(READ_BYTES)) == NULL)
        ud_page_ahead_close(pa);
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

void ud_page_ahead_keep(struct ud_page_ahead *pa, uint64_t used, uint64_t limit)
{
    if (pa->used != 0 && used > pa->used && used - pa->used > pa->growth)
        pa->growth = used - pa->used;
    pa->used = used;
    uint64_t stretch = used / 4 > 2 * pa->growth ? used / 4 : 2 * pa->growth;
    if (stretch < UD_PAGE_AHEAD_MIN)
        stretch = UD_PAGE_AHEAD_MIN;
    if (stretch > UD_PAGE_AHEAD_MAX)
        stretch = UD_PAGE_AHEAD_MAX;
    if (pa->fd < 0 || used + stretch / 2 <= pa->end)
        return;
    uint64_t target = used + stretch;
    if (target > limit)
        target = limit;
    uint64_t from = pa->end > used ? pa->end : used;
    if (target <= from)
        return;
    struct stat st;
    if (fstat(pa->fd, &st) != 0)
        return give_up(pa, "fstat");
    /* Growing the size allocates nothing; LMDB reads and copies only up to its last page. */
    if ((uint64_t)st.st_size < target && ftruncate(pa->fd, (off_t)target) != 0)
        return give_up(pa, "extend");
    for (uint64_t off = from; off < target;) {
        size_t n = target - off < READ_BYTES ? (size_t)(target - off) : READ_BYTES;
        ssize_t got = pread(pa->fd, pa->buf, n, (off_t)off);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return give_up(pa, "read");
        off += (uint64_t)got;
    }
    pa->end = target;
}
