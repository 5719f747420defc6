/*
 * The lingering close of a connection's socket (linger.h says why).
 */
#include "core/linger.h"

#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/sockios.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

/* How often the socket is looked at: reads of what the client sends, and its unsent bytes. */
#define LINGER_TICK_MS 50
/* A client that takes none of the unsent bytes (and does not close) for this long is dropped. */
#define LINGER_STALL_MS 2000
/* Once every byte has reached the client, it has this long to close its side: a client that
 * reads only when it sends (an idle RESP client) would otherwise hold a stop for the whole
 * LINGER_STALL_MS, and a reset after this point loses nothing on Linux (the client still reads
 * what it received); it may on systems that drop a reset connection's received bytes. */
#define LINGER_DRAINED_MS 500
/* However the client reads, a linger ends after this long: one that takes a few bytes now and
 * then would otherwise hold a descriptor and its connection's memory, outside every connection
 * limit, until the process stops. */
#define LINGER_MAX_MS 30000

struct ud_linger {
    uv_timer_t timer;
    int fd;
    int unsent;        /* bytes the kernel had not sent at the last look */
    uint64_t stall_ms; /* since the unsent bytes last went down */
    uint64_t age_ms;   /* since the linger started */
    enum ud_linger_end why;
    ud_linger_done_fn done;
    void *arg;
};

static void closed_cb(uv_handle_t *h)
{
    struct ud_linger *l = h->data;
    ud_linger_done_fn done = l->done;
    void *arg = l->arg;
    enum ud_linger_end why = l->why;
    free(l);
    done(arg, why);
}

static void finish(struct ud_linger *l, enum ud_linger_end why)
{
    if (l->fd >= 0) {
        close(l->fd);
        l->fd = -1;
    }
    if (!uv_is_closing((uv_handle_t *)&l->timer)) { /* the first reason stands */
        l->why = why;
        uv_close((uv_handle_t *)&l->timer, closed_cb);
    }
}

/* Reads per tick at most: a client that keeps sending at loopback speed does not hold the loop. */
#define LINGER_READS_PER_TICK 16

/* 1 when the client closed its side or the socket failed. What it sent is discarded without a
 * copy (MSG_TRUNC on a TCP socket drops up to len bytes). */
static int client_done(int fd)
{
    for (int i = 0; i < LINGER_READS_PER_TICK; i++) {
        ssize_t n = recv(fd, NULL, 1u << 20, MSG_DONTWAIT | MSG_TRUNC);
        if (n > 0)
            continue;
        if (n == 0)
            return 1;
        if (errno == EINTR)
            continue;
        return errno != EAGAIN && errno != EWOULDBLOCK;
    }
    return 0; /* more to drop: next tick */
}

static void tick_cb(uv_timer_t *t)
{
    struct ud_linger *l = t->data;
    if (client_done(l->fd)) {
        finish(l, UD_LINGER_CLOSED);
        return;
    }
    int unsent;
    if (ioctl(l->fd, SIOCOUTQ, &unsent) != 0)
        unsent = l->unsent; /* unknown: no progress, so only the stall bound can end it */
    if (unsent < l->unsent)
        l->stall_ms = 0;
    else
        l->stall_ms += LINGER_TICK_MS;
    l->unsent = unsent;
    l->age_ms += LINGER_TICK_MS;
    if (unsent == 0 && l->stall_ms >= LINGER_DRAINED_MS)
        finish(l, UD_LINGER_DRAINED);
    else if (l->stall_ms >= LINGER_STALL_MS || l->age_ms >= LINGER_MAX_MS)
        finish(l, UD_LINGER_STALLED);
}

int ud_linger_dup(const uv_handle_t *h)
{
    uv_os_fd_t fd;
    if (uv_fileno(h, &fd) != 0)
        return -1;
    int fd2 = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    static atomic_int told;
    if (fd2 < 0 && !atomic_exchange(&told, 1))
        ud_warn("linger",
                "no second descriptor for a connection (%s): such connections close without "
                "lingering, and bytes not yet sent when they close may be lost (said once)",
                strerror(errno));
    return fd2;
}

struct ud_linger *ud_linger_start(uv_loop_t *loop, int fd, ud_linger_done_fn done, void *arg)
{
    struct ud_linger *l = calloc(1, sizeof *l);
    if (l == NULL)
        abort();
    l->fd = fd;
    l->unsent = INT_MAX;
    l->done = done;
    l->arg = arg;
    uv_timer_init(loop, &l->timer);
    l->timer.data = l;
    /* FIN goes after the bytes still queued; the client's side stays open to be drained. */
    if (shutdown(fd, SHUT_WR) != 0 || client_done(fd))
        finish(l, UD_LINGER_CLOSED);
    else
        uv_timer_start(&l->timer, tick_cb, LINGER_TICK_MS, LINGER_TICK_MS);
    return l;
}

struct ud_linger *ud_linger_take(uv_loop_t *loop, int *fd2, int cut, ud_linger_done_fn done,
                                 void *arg)
{
    int fd = *fd2;
    *fd2 = -1;
    if (fd < 0)
        return NULL;
    if (cut) {
        close(fd);
        return NULL;
    }
    return ud_linger_start(loop, fd, done, arg);
}

void ud_linger_cut(struct ud_linger *l)
{
    finish(l, UD_LINGER_CUT);
}
