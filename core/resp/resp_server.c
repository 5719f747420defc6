/* RESP TCP server: libuv plumbing around the parser and the command layer. */
#include <arpa/inet.h>
#include <netdb.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/err.h"
#include "core/linger.h"
#include "core/log.h"
#include "core/resp/resp_server.h"

#define READ_CHUNK (64u << 10) /* room offered to each read */

/* Intrusive doubly-linked list with a sentinel head: O(1) unlink when a connection closes. */
struct link {
    struct link *prev, *next;
};

static void list_init(struct link *h)
{
    h->prev = h->next = h;
}

static int linked(const struct link *l)
{
    return l->next != NULL;
}

static void list_add(struct link *h, struct link *l)
{
    if (linked(l))
        return;
    l->prev = h->prev;
    l->next = h;
    h->prev->next = l;
    h->prev = l;
}

static void list_del(struct link *l)
{
    if (!linked(l))
        return;
    l->prev->next = l->next;
    l->next->prev = l->prev;
    l->prev = l->next = NULL;
}

#define container_of(p, type, member) ((type *)((char *)(p)-offsetof(type, member)))

struct conn {
    uv_tcp_t tcp;
    struct ud_resp_server *srv;
    struct link all;   /* srv->conns */
    struct link flush; /* srv->to_flush: has replies to send */
    struct link kick;  /* srv->to_kick: buffered requests to process again */
    struct ud_resp_session session;
    struct ud_resp_parser parser;
    struct ud_resp_outq q;
    uint8_t *rbuf; /* received bytes; requests from rstart on are not executed yet */
    size_t rstart, rlen, rcap;
    struct ud_resp_buf wbuf; /* bytes given to uv_write: stable until write_cb */
    size_t woff;             /* where the in-flight write started in wbuf */
    uv_write_t wreq;
    int writing;
    int reading;
    int waiting;              /* a read waits for this connection's writes to be answered */
    int close_after_flush;    /* protocol error, QUIT, rejection or stop: close once sent */
    int closing;              /* uv_close called */
    int fd2;                  /* taken at a close after flush, for the lingering close; -1: none */
    struct ud_linger *linger; /* on the server's `lingering` list meanwhile (through `all`) */
    uint64_t last_active_ms;
};

struct ud_resp_server {
    uv_loop_t *loop;
    struct ud_resp_ctx *ctx;
    uv_tcp_t listener;
    uv_prepare_t flusher; /* sends replies before the loop sleeps: one write per iteration */
    uv_idle_t kicker;     /* resumes connections whose held requests may now run */
    uv_timer_t sweep;     /* idle connections */
    uv_timer_t stop_timer;
    struct link conns, to_flush, to_kick;
    struct link lingering; /* closed connections whose sockets linger (core/linger.h) */
    size_t nconns;         /* connections not yet freed, including closing ones */
    unsigned max_clients;
    uint64_t idle_timeout_ms; /* 0: never */
    size_t max_output;
    size_t max_pending;
    unsigned stop_timeout_ms;
    int stopping;
    int forcing; /* the stop timed out: connections are closed without lingering */
    int listener_closed;
    int handles_open; /* server handles not yet closed, once the final close began */
    void (*done)(void *arg);
    void *done_arg;
    char addr[128];
};

static uint64_t now_ms(void)
{
    return ud_mono_ns() / 1000000;
}

static void process(struct conn *c);
static void conn_close(struct conn *c);
static void conn_close_after_flush(struct conn *c);
static void handle_closed(uv_handle_t *h);
static void maybe_finish_stop(struct ud_resp_server *s);

/* --- output ----------------------------------------------------------------------------------- */

static size_t unsent(const struct conn *c)
{
    return ud_resp_outq_bytes(&c->q) + (c->writing ? c->wbuf.len - c->woff : 0);
}

static void schedule_flush(struct conn *c)
{
    if (!c->closing)
        list_add(&c->srv->to_flush, &c->flush);
}

static void kicker_cb(uv_idle_t *h);

static void schedule_kick(struct conn *c)
{
    struct ud_resp_server *s = c->srv;
    if (c->closing || s->stopping)
        return;
    list_add(&s->to_kick, &c->kick);
    uv_idle_start(&s->kicker, kicker_cb); /* already active: no-op */
}

/* Processing must resume when buffered requests, or a paused reader, may proceed now. */
static void maybe_kick(struct conn *c)
{
    if (c->waiting && c->q.pending > 0)
        return;
    if (c->rstart < c->rlen || !c->reading)
        schedule_kick(c);
}

static void flush(struct conn *c);

static void write_cb(uv_write_t *req, int status)
{
    struct conn *c = container_of(req, struct conn, wreq);
    c->writing = 0;
    c->wbuf.len = 0;
    c->woff = 0;
    if (c->closing)
        return;
    if (status < 0) {
        ud_debug("resp", "client %llu: write: %s", (unsigned long long)c->session.id,
                 uv_strerror(status));
        conn_close(c);
        return;
    }
    c->last_active_ms = now_ms();
    if (c->wbuf.cap > 4 * UD_RESP_DEFAULT_MAX_OUTPUT)
        ud_resp_buf_free(&c->wbuf);
    flush(c);
    maybe_kick(c); /* reading may have paused on output */
}

/*
 * Sends what is ready: a direct write first (most replies fit the socket buffer), and what the
 * socket did not take through uv_write, one write in flight at a time.
 */
static void flush(struct conn *c)
{
    if (c->closing || c->writing)
        return;
    struct ud_resp_buf *r = &c->q.ready;
    if (r->len == 0) {
        if (c->close_after_flush && c->q.head == NULL)
            conn_close_after_flush(c);
        return;
    }
    uv_buf_t b = uv_buf_init((char *)r->data, (unsigned)r->len);
    int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (n == UV_EAGAIN || n == UV_ENOSYS)
        n = 0;
    if (n < 0) {
        ud_debug("resp", "client %llu: write: %s", (unsigned long long)c->session.id,
                 uv_strerror(n));
        conn_close(c);
        return;
    }
    c->last_active_ms = now_ms();
    if ((size_t)n == r->len) {
        r->len = 0;
        if (c->close_after_flush && c->q.head == NULL)
            conn_close_after_flush(c);
        else
            maybe_kick(c); /* reading may have paused on output */
        return;
    }
    /* Swap buffers: the rest stays put in wbuf while `ready` collects new replies. */
    struct ud_resp_buf t = c->wbuf;
    c->wbuf = *r;
    *r = t;
    r->len = 0;
    c->woff = (size_t)n;
    b = uv_buf_init((char *)c->wbuf.data + c->woff, (unsigned)(c->wbuf.len - c->woff));
    int rc = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, write_cb);
    if (rc != 0) {
        conn_close(c);
        return;
    }
    c->writing = 1;
}

static void flusher_cb(uv_prepare_t *h)
{
    struct ud_resp_server *s = h->data;
    while (s->to_flush.next != &s->to_flush) {
        struct link *l = s->to_flush.next;
        list_del(l);
        flush(container_of(l, struct conn, flush));
    }
}

/*
 * A deferred reply finished (a write committed): send it, and let held reads run. This runs in
 * whatever loop phase the write seam answers from, possibly after this iteration's flusher (libuv
 * runs the newest prepare handle first): the idle handle keeps the loop from sleeping before the
 * next flusher run, so a reply never waits for an unrelated wake-up.
 */
static void on_ready(struct ud_resp_outq *q, void *arg)
{
    struct conn *c = arg;
    (void)q;
    schedule_flush(c);
    maybe_kick(c);
    if (!c->closing)
        uv_idle_start(&c->srv->kicker, kicker_cb);
}

/* Runs held requests outside the callback that made them runnable: a submit callback must not
 * re-enter submit. The idle handle keeps the loop from sleeping for that iteration, so work
 * submitted here is picked up by whichever loop phase gathers it. */
static void kicker_cb(uv_idle_t *h)
{
    struct ud_resp_server *s = h->data;
    if (s->to_kick.next == &s->to_kick) {
        uv_idle_stop(h);
        return;
    }
    while (s->to_kick.next != &s->to_kick) {
        struct link *l = s->to_kick.next;
        list_del(l);
        process(container_of(l, struct conn, kick));
    }
}

/* --- input ------------------------------------------------------------------------------------ */

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct conn *c = h->data;
    (void)suggested;
    if (c->rstart > 0) {
        memmove(c->rbuf, c->rbuf + c->rstart, c->rlen - c->rstart);
        c->rlen -= c->rstart;
        c->rstart = 0;
    }
    /* A large bulk string being read is given its whole size at once. */
    size_t want = ud_resp_parser_wants(&c->parser);
    size_t need = c->rlen + READ_CHUNK;
    if (want > need)
        need = want;
    if (c->rcap < need) {
        uint8_t *p = realloc(c->rbuf, need);
        if (p == NULL)
            abort();
        c->rbuf = p;
        c->rcap = need;
    }
    *buf = uv_buf_init((char *)c->rbuf + c->rlen, (unsigned)(c->rcap - c->rlen));
}

static void update_reading(struct conn *c);

static void read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = stream->data;
    (void)buf;
    if (nread == 0)
        return;
    if (nread < 0) {
        if (nread != UV_EOF)
            ud_debug("resp", "client %llu: read: %s", (unsigned long long)c->session.id,
                     uv_strerror((int)nread));
        conn_close(c);
        return;
    }
    c->rlen += (size_t)nread;
    c->last_active_ms = now_ms();
    process(c);
}

static void update_reading(struct conn *c)
{
    struct ud_resp_server *s = c->srv;
    int want = !c->closing && !c->close_after_flush && !c->waiting && !s->stopping &&
               unsent(c) <= s->max_output && c->q.pending < s->max_pending;
    if (want && !c->reading) {
        if (uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb) == 0)
            c->reading = 1;
    } else if (!want && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = 0;
    }
}

/*
 * Parses and executes the buffered requests in order until the buffer is empty, a request is
 * incomplete, or the connection must pause: too many unsent bytes or unanswered writes, or a read
 * that waits for this connection's writes (a pipelined GET after a SET sees the SET).
 */
static void process(struct conn *c)
{
    struct ud_resp_server *s = c->srv;
    struct ud_resp_stats *st = ud_resp_ctx_stats(s->ctx);
    if (c->closing)
        return;
    c->waiting = 0;
    /* The bytes buffered now were all sent before this point: their GETs may share one read. */
    ud_resp_batch_begin(s->ctx);
    while (!c->close_after_flush && !s->stopping && c->rstart < c->rlen) {
        if (unsent(c) > s->max_output || c->q.pending >= s->max_pending)
            break;
        size_t used;
        int rc = ud_resp_parse(&c->parser, c->rbuf + c->rstart, c->rlen - c->rstart, &used);
        if (rc == UD_RESP_NEED_MORE) {
            c->rstart += used;
            break;
        }
        if (rc == UD_RESP_PROTOCOL) {
            st->protocol_errors++;
            ud_debug("resp", "client %llu: %s", (unsigned long long)c->session.id,
                     c->parser.errmsg);
            ud_resp_add_error(ud_resp_outq_buf(&c->q), c->parser.errmsg);
            c->close_after_flush = 1;
            break;
        }
        rc = ud_resp_exec(s->ctx, &c->session, &c->q, c->parser.argc, c->parser.argv,
                          c->parser.argvlen);
        if (rc == UD_RESP_EXEC_WAIT) {
            /* Parsed again once the writes are answered; the bytes stay where they are. */
            ud_resp_parser_reset(&c->parser);
            c->waiting = 1;
            break;
        }
        c->rstart += used;
        if (c->session.quit)
            c->close_after_flush = 1;
    }
    ud_resp_batch_end(s->ctx);
    if (c->rstart == c->rlen) {
        c->rstart = c->rlen = 0;
        if (c->rcap > 4 * READ_CHUNK) { /* a large request has passed: give the memory back */
            free(c->rbuf);
            c->rbuf = NULL;
            c->rcap = 0;
        }
    }
    update_reading(c);
    schedule_flush(c);
}

/* --- connections ------------------------------------------------------------------------------ */

/* What a closed connection no longer needs, given back before its socket lingers. */
static void conn_free_buffers(struct conn *c)
{
    ud_resp_parser_free(&c->parser);
    ud_resp_buf_free(&c->wbuf);
    free(c->rbuf);
    c->rbuf = NULL;
}

static void conn_free(struct conn *c)
{
    struct ud_resp_server *s = c->srv;
    conn_free_buffers(c);
    free(c);
    s->nconns--;
    maybe_finish_stop(s);
}

static void linger_done(void *arg, enum ud_linger_end why)
{
    (void)why;
    struct conn *c = arg;
    list_del(&c->all);
    conn_free(c);
}

/* Still counted (a stop waits for it) while its socket lingers. */
static void conn_close_cb(uv_handle_t *h)
{
    struct conn *c = h->data;
    conn_free_buffers(c);
    /* After a forced stop's sweep (which cut the lingers then open) nothing starts lingering. */
    c->linger = ud_linger_take(c->srv->loop, &c->fd2, c->srv->forcing, linger_done, c);
    if (c->linger == NULL) {
        conn_free(c);
        return;
    }
    list_add(&c->srv->lingering, &c->all);
}

static void conn_close(struct conn *c)
{
    if (c->closing)
        return;
    struct ud_resp_server *s = c->srv;
    c->closing = 1;
    list_del(&c->all);
    list_del(&c->flush);
    list_del(&c->kick);
    ud_resp_ctx_stats(s->ctx)->connected_clients--;
    /* Replies still waiting for raft become orphans that their completion frees. */
    ud_resp_outq_detach(&c->q);
    uv_close((uv_handle_t *)&c->tcp, conn_close_cb);
}

/* The replies are sent; the client may still be sending (a pipeline after QUIT or a bad frame,
 * requests the stop does not run), and closing with those bytes unread would reset the
 * connection and throw away the replies the kernel has not delivered yet: the socket lingers. */
static void conn_close_after_flush(struct conn *c)
{
    if (!c->closing)
        c->fd2 = ud_linger_dup((uv_handle_t *)&c->tcp);
    conn_close(c);
}

static void on_connection(uv_stream_t *listener, int status)
{
    struct ud_resp_server *s = listener->data;
    struct ud_resp_stats *st = ud_resp_ctx_stats(s->ctx);
    if (status < 0) {
        ud_warn("resp", "accept on %s: %s", s->addr, uv_strerror(status));
        return;
    }
    struct conn *c = calloc(1, sizeof *c);
    if (c == NULL)
        abort();
    c->srv = s;
    c->fd2 = -1;
    uv_tcp_init(s->loop, &c->tcp);
    c->tcp.data = c;
    s->nconns++;
    if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0) {
        c->closing = 1;
        uv_close((uv_handle_t *)&c->tcp, conn_close_cb);
        return;
    }
    ud_resp_parser_init(&c->parser);
    ud_resp_outq_init(&c->q);
    c->q.on_ready = on_ready;
    c->q.arg = c;
    ud_resp_session_init(s->ctx, &c->session);
    c->last_active_ms = now_ms();
    list_add(&s->conns, &c->all);
    st->connected_clients++;
    st->total_connections++;
    /* Replies are small and a pipeline's are sent in one write: no reason to wait for Nagle. */
    uv_tcp_nodelay(&c->tcp, 1);
    uv_tcp_keepalive(&c->tcp, 1, 300);
    if (st->connected_clients > s->max_clients) {
        st->rejected_connections++;
        ud_resp_add_error(ud_resp_outq_buf(&c->q), "ERR max number of clients reached");
        c->close_after_flush = 1;
        schedule_flush(c);
        return;
    }
    update_reading(c);
}

static void sweep_cb(uv_timer_t *t)
{
    struct ud_resp_server *s = t->data;
    uint64_t now = now_ms();
    struct link *l = s->conns.next;
    while (l != &s->conns) {
        struct conn *c = container_of(l, struct conn, all);
        l = l->next;
        if (c->q.pending == 0 && now - c->last_active_ms > s->idle_timeout_ms) {
            ud_debug("resp", "client %llu: idle for more than %llu ms, closing",
                     (unsigned long long)c->session.id, (unsigned long long)s->idle_timeout_ms);
            conn_close(c);
        }
    }
}

/* --- lifecycle -------------------------------------------------------------------------------- */

/* "host:port", "[v6]:port"; host names are resolved (start-up only, so blocking is fine). */
static int parse_listen(const char *listen, struct sockaddr_storage *ss, char *errmsg)
{
    char host[128];
    const char *colon = strrchr(listen, ':');
    if (colon == NULL || colon == listen || colon[1] == '\0')
        return ud_errf(errmsg, UD_EINVAL, "resp listen address '%s': expected host:port", listen);
    size_t hl = (size_t)(colon - listen);
    const char *h = listen;
    if (h[0] == '[' && hl >= 2 && h[hl - 1] == ']') {
        h++;
        hl -= 2;
    }
    if (hl >= sizeof host)
        return ud_errf(errmsg, UD_EINVAL, "resp listen address '%s': host too long", listen);
    memcpy(host, h, hl);
    host[hl] = '\0';
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end != '\0' || port < 0 || port > 65535)
        return ud_errf(errmsg, UD_EINVAL, "resp listen address '%s': bad port", listen);
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int rc = getaddrinfo(host, colon + 1, &hints, &res);
    if (rc != 0 || res == NULL)
        return ud_errf(errmsg, UD_EINVAL, "resp listen address '%s': %s", listen, gai_strerror(rc));
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    return 0;
}

int ud_resp_server_start(const struct ud_resp_server_options *o, struct ud_resp_server **out,
                         int *port, char *errmsg)
{
    struct sockaddr_storage ss;
    int rc = parse_listen(o->listen, &ss, errmsg);
    if (rc != 0)
        return rc;
    struct ud_resp_server *s = calloc(1, sizeof *s);
    if (s == NULL)
        return ud_errf(errmsg, UD_ENOMEM, "resp: out of memory");
    s->loop = o->loop;
    snprintf(s->addr, sizeof s->addr, "%s", o->listen);
    s->max_clients = o->max_clients ? o->max_clients : UD_RESP_DEFAULT_MAX_CLIENTS;
    int64_t idle = o->idle_timeout_ms ? o->idle_timeout_ms : UD_RESP_DEFAULT_IDLE_TIMEOUT;
    s->idle_timeout_ms = idle > 0 ? (uint64_t)idle : 0;
    s->max_output = o->max_output ? o->max_output : UD_RESP_DEFAULT_MAX_OUTPUT;
    s->max_pending = o->max_pending ? o->max_pending : UD_RESP_DEFAULT_MAX_PENDING;
    s->stop_timeout_ms = o->stop_timeout_ms ? o->stop_timeout_ms : UD_RESP_DEFAULT_STOP_TIMEOUT;
    list_init(&s->conns);
    list_init(&s->to_flush);
    list_init(&s->to_kick);
    list_init(&s->lingering);

    struct ud_resp_ctx_options co = o->commands;
    co.max_clients = s->max_clients;
    /* CONFIG GET timeout and INFO speak Redis's seconds (rounded up: never 0 = "never"). */
    co.idle_timeout_s = idle > 0 ? (unsigned)((idle + 999) / 1000) : 0;
    if ((rc = ud_resp_ctx_new(&co, &s->ctx, errmsg)) != 0) {
        free(s);
        return rc;
    }

    uv_tcp_init(s->loop, &s->listener);
    s->listener.data = s;
    int uv = uv_tcp_bind(&s->listener, (const struct sockaddr *)&ss, 0);
    if (uv == 0)
        uv = uv_listen((uv_stream_t *)&s->listener, 511, on_connection);
    if (uv != 0) {
        rc = ud_errf(errmsg, UD_EIO, "resp: listen on %s: %s", o->listen, uv_strerror(uv));
        /* Only the listener exists: the server is freed once the loop has released it. */
        s->handles_open = 1;
        uv_close((uv_handle_t *)&s->listener, handle_closed);
        return rc;
    }
    struct sockaddr_storage bound;
    int blen = sizeof bound;
    uv_tcp_getsockname(&s->listener, (struct sockaddr *)&bound, &blen);
    int p = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                              : ((struct sockaddr_in *)&bound)->sin_port);
    ud_resp_ctx_set_port(s->ctx, p);

    uv_prepare_init(s->loop, &s->flusher);
    s->flusher.data = s;
    uv_prepare_start(&s->flusher, flusher_cb);
    uv_idle_init(s->loop, &s->kicker);
    s->kicker.data = s;
    uv_timer_init(s->loop, &s->sweep);
    s->sweep.data = s;
    if (s->idle_timeout_ms > 0)
        uv_timer_start(&s->sweep, sweep_cb, s->idle_timeout_ms < 1000 ? s->idle_timeout_ms : 1000,
                       s->idle_timeout_ms < 1000 ? s->idle_timeout_ms : 1000);
    uv_unref((uv_handle_t *)&s->sweep);
    uv_timer_init(s->loop, &s->stop_timer);
    s->stop_timer.data = s;
    *out = s;
    *port = p;
    return 0;
}

struct ud_resp_ctx *ud_resp_server_ctx(struct ud_resp_server *s)
{
    return s->ctx;
}

static void handle_closed(uv_handle_t *h)
{
    struct ud_resp_server *s = h->data;
    if (--s->handles_open > 0)
        return;
    void (*done)(void *) = s->done;
    void *arg = s->done_arg;
    ud_resp_ctx_free(s->ctx);
    free(s);
    if (done != NULL)
        done(arg);
}

static void maybe_finish_stop(struct ud_resp_server *s)
{
    if (!s->stopping || !s->listener_closed || s->nconns > 0 || s->handles_open > 0)
        return;
    s->handles_open = 4;
    uv_close((uv_handle_t *)&s->flusher, handle_closed);
    uv_close((uv_handle_t *)&s->kicker, handle_closed);
    uv_close((uv_handle_t *)&s->sweep, handle_closed);
    uv_close((uv_handle_t *)&s->stop_timer, handle_closed);
}

static void stop_timeout_cb(uv_timer_t *t)
{
    struct ud_resp_server *s = t->data;
    ud_warn("resp", "stop: closing %zu connections that did not finish in %u ms", s->nconns,
            s->stop_timeout_ms);
    s->forcing = 1;
    while (s->conns.next != &s->conns)
        conn_close(container_of(s->conns.next, struct conn, all));
    for (struct link *l = s->lingering.next; l != &s->lingering; l = l->next)
        ud_linger_cut(container_of(l, struct conn, all)->linger); /* done comes later */
}

static void listener_closed(uv_handle_t *h)
{
    struct ud_resp_server *s = h->data;
    s->listener_closed = 1;
    maybe_finish_stop(s);
}

void ud_resp_server_stop(struct ud_resp_server *s, void (*done)(void *arg), void *arg)
{
    s->stopping = 1;
    s->done = done;
    s->done_arg = arg;
    uv_close((uv_handle_t *)&s->listener, listener_closed);
    for (struct link *l = s->conns.next; l != &s->conns; l = l->next) {
        struct conn *c = container_of(l, struct conn, all);
        c->close_after_flush = 1;
        c->rstart = c->rlen = 0; /* requests not started are not answered */
        update_reading(c);
        schedule_flush(c);
    }
    uv_timer_start(&s->stop_timer, stop_timeout_cb, s->stop_timeout_ms, 0);
}
