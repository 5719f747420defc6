/*
 * h2o's pause of a connection's reads, kept in user space (read_pause.h).
 *
 * h2o 2.2.5 stops reading an HTTP/1 connection once a request has arrived and starts again once
 * the answer is written (lib/http1.c). libuv 1.44 forgets the descriptor's epoll registration on
 * the stop and registers it again on the start: EPOLL_CTL_ADD, which fails with EEXIST since the
 * descriptor never left the epoll set, then EPOLL_CTL_MOD. Two system calls per request, 4-5 % of
 * the leader's loop thread at concurrency 256 (docs/benchmarks.md).
 *
 * This file defines uv_read_stop and uv_read_start in the executable, so they take precedence over
 * libuv's for every caller (libh2o's included, and libuv's own), and passes every call through to
 * libuv's except a stop of one of h2o's plain sockets while it reads. That stop only swaps the
 * stream's callbacks: the allocation callback offers no buffer, so libuv reads nothing while the
 * stream is paused, and the read callback turns the pause into libuv's real stop at the first
 * event on the descriptor (more data, the peer's FIN or reset), which libuv delivers as UV_ENOBUFS
 * before reading anything. Nothing is consumed while paused, so what h2o sees is what the real
 * stop would have shown it, only later; the start that ends a pause puts h2o's callbacks back and
 * makes no system call. A stream that is closing is always really stopped.
 */
#include "core/http/read_pause.h"

#include <dlfcn.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

static int (*libuv_read_stop)(uv_stream_t *);
static int (*libuv_read_start)(uv_stream_t *, uv_alloc_cb, uv_read_cb);
/* h2o's allocation callback of plain sockets, learned from the first one it reads; loop thread. */
static _Atomic(uv_alloc_cb) h2o_alloc_cb;
static atomic_ulong npauses, nreal, nskipped;
/* Whether the libuv loaded at run time is 1.44, whose loop layout the prepare callback edits: the
 * shared library may differ from the headers built with. Set before main, read by loop threads. */
static int uv144;

__attribute__((constructor)) static void resolve(void)
{
    libuv_read_stop = (int (*)(uv_stream_t *))dlsym(RTLD_NEXT, "uv_read_stop");
    libuv_read_start =
        (int (*)(uv_stream_t *, uv_alloc_cb, uv_read_cb))dlsym(RTLD_NEXT, "uv_read_start");
    if (libuv_read_stop == NULL || libuv_read_start == NULL) {
        /* Without them every uv_read_stop and uv_read_start would go nowhere. */
        fprintf(stderr,
                "read_pause: dlsym(RTLD_NEXT) found no %s in a shared library loaded after the "
                "executable; libuv is probably linked statically into it, which this file's "
                "uv_read_stop and uv_read_start cannot wrap\n",
                libuv_read_stop == NULL ? "uv_read_stop" : "uv_read_start");
        abort();
    }
    /* uv_version() is (major << 16) | (minor << 8) | patch. */
    uv144 = (uv_version() >> 8) == ((1u << 8) | 44u);
}

static void paused_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    (void)suggested;
    buf->base = NULL;
    buf->len = 0;
}

/* An event while paused: libuv read nothing (UV_ENOBUFS); stop for real, as h2o asked. */
static void paused_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    (void)nread;
    (void)buf;
    atomic_fetch_add_explicit(&nreal, 1, memory_order_relaxed);
    libuv_read_stop(s);
}

void ud_http_read_pause_learn(const uv_stream_t *h2o_stream)
{
    if (h2o_stream->alloc_cb != NULL && h2o_stream->alloc_cb != paused_alloc)
        atomic_store_explicit(&h2o_alloc_cb, h2o_stream->alloc_cb, memory_order_relaxed);
}

void ud_http_read_pause_stats(unsigned long *pauses, unsigned long *ended, unsigned long *skipped)
{
    *pauses = atomic_load_explicit(&npauses, memory_order_relaxed);
    *ended = atomic_load_explicit(&nreal, memory_order_relaxed);
    *skipped = atomic_load_explicit(&nskipped, memory_order_relaxed);
}

/*
 * libuv 1.44 queues a watcher for epoll_ctl whenever its wanted mask (pevents) may have changed
 * and, before polling, registers every queued one: EPOLL_CTL_ADD when it holds no registration
 * (events 0), EPOLL_CTL_MOD to pevents otherwise, even when pevents equals the registered events
 * ("XXX Future optimization" in its linux-core.c). Such an entry changes nothing in the kernel
 * (level-triggered, no EPOLLONESHOT, the descriptor registered with exactly that mask), so it is
 * taken off the queue here as libuv's own QUEUE_REMOVE and QUEUE_INIT would. The queue and the
 * watcher's fields are in libuv's installed headers (uv/unix.h); they are used only when both
 * the headers built with and the library loaded at run time are 1.44 (the shared library may be
 * upgraded without a rebuild), and another version leaves the queue alone.
 */
void ud_http_read_pause_prepare_cb(uv_prepare_t *p)
{
#if UV_VERSION_MAJOR == 1 && UV_VERSION_MINOR == 44
    if (!uv144)
        return;
    void **head = (void **)p->loop->watcher_queue;
    void **q = (void **)head[0];
    while (q != head) {
        void **next = (void **)q[0];
        uv__io_t *w = (uv__io_t *)((char *)q - offsetof(uv__io_t, watcher_queue));
        if (w->pevents != 0 && w->events == w->pevents) {
            ((void **)q[1])[0] = q[0]; /* prev->next = next */
            ((void **)q[0])[1] = q[1]; /* next->prev = prev */
            q[0] = q;
            q[1] = q;
            atomic_fetch_add_explicit(&nskipped, 1, memory_order_relaxed);
        }
        q = next;
    }
#else
    (void)p;
#endif
}

int uv_read_stop(uv_stream_t *s)
{
    uv_alloc_cb h2o = atomic_load_explicit(&h2o_alloc_cb, memory_order_relaxed);
    if (h2o == NULL || s->alloc_cb != h2o || s->read_cb == NULL ||
        uv_is_closing((const uv_handle_t *)s))
        return libuv_read_stop(s);
    s->alloc_cb = paused_alloc;
    s->read_cb = paused_read;
    atomic_fetch_add_explicit(&npauses, 1, memory_order_relaxed);
    return 0;
}

int uv_read_start(uv_stream_t *s, uv_alloc_cb alloc_cb, uv_read_cb read_cb)
{
    if (s->read_cb == paused_read && alloc_cb != NULL && read_cb != NULL &&
        !uv_is_closing((const uv_handle_t *)s)) {
        s->alloc_cb = alloc_cb;
        s->read_cb = read_cb;
        return 0;
    }
    return libuv_read_start(s, alloc_cb, read_cb);
}
