/*
 * Streamed replies whose body arrives from elsewhere, piece by piece (a follower passing on its
 * leader's answer to a linearizable read: writer/cluster.c). At most one h2o_send is in flight
 * (h2o's rule: its memory stays valid until proceed); what arrives meanwhile is gathered in a
 * second buffer of UD_HTTP_STREAM_BUFFER bytes, and once that is full the source is told to wait
 * (ud_http_stream_write's UD_EAGAIN) until h2o has written the previous piece to a slow client.
 * So a stream holds at most two buffers whatever the size of the body.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "core/clock.h"
#include "core/err.h"
#include "core/http/http_int.h"

enum ending {
    END_NONE,
    END_CLEAN, /* the body is complete: the last piece goes out with H2O_SEND_STATE_FINAL */
    END_ERROR, /* the source broke: the client's answer is cut (H2O_SEND_STATE_ERROR) */
};

/* In the h2o request's pool: h2o may write from it until the request is disposed. */
struct piece {
    uint8_t *buf;
    size_t cap;
};

struct ud_http_stream {
    h2o_generator_t super; /* first: h2o passes this address back */
    struct ud_http_server *s;
    h2o_req_t *h;
    struct piece *piece[2];
    int fill;        /* index of the piece being gathered; the other one may be in flight */
    size_t fill_len; /* bytes gathered in it */
    int inflight;    /* an h2o_send awaits its proceed */
    int want_room;   /* a write was refused: the source waits for on_room */
    int in_send;     /* inside h2o_send: a stop then only marks gone */
    int gone;
    /* When the send in flight began: the client had taken everything before it (on_proceed),
     * or those bytes had just arrived. A send in flight for long is a client not reading. */
    uint64_t send_ns;
    enum ending ending; /* asked for while a send was in flight: done at its proceed */
    int status;
    size_t metrics;
    uint64_t start_ns;
    /* The source; NULL once it ended the stream (it hears nothing more). */
    void (*on_room)(void *arg);
    void (*on_gone)(void *arg);
    void *arg;
};

static void piece_dispose(void *p)
{
    struct piece *pc = p;
    free(pc->buf);
    pc->buf = NULL;
}

static void finish(struct ud_http_stream *st, int status)
{
    struct ud_http_server *s = st->s;
    ud_http_metrics_observe(&s->metrics, st->metrics, status, ud_mono_ns() - st->start_ns);
    free(st);
    ud_http_server_unref(s);
}

/* h2o_send, noting a stop that would arrive inside it. 1 when the client went away meanwhile
 * (st is freed then). */
static int send_guarded(struct ud_http_stream *st, h2o_iovec_t *iov, size_t n,
                        h2o_send_state_t state)
{
    st->in_send = 1;
    h2o_send(st->h, iov, n, state);
    st->in_send = 0;
    if (st->gone) {
        void (*gone)(void *) = st->on_gone;
        void *arg = st->arg;
        finish(st, 499);
        if (gone != NULL)
            gone(arg);
        return 1;
    }
    return 0;
}

/* Sends the gathered piece (the end with it when final). 1 when st is gone (freed). */
static int send_gathered(struct ud_http_stream *st, int final)
{
    struct piece *pc = st->piece[st->fill];
    h2o_iovec_t iov = h2o_iovec_init(pc->buf, st->fill_len);
    size_t n = st->fill_len > 0 ? 1 : 0;
    st->fill ^= 1;
    st->fill_len = 0;
    if (final) {
        h2o_send(st->h, &iov, n, H2O_SEND_STATE_FINAL);
        finish(st, st->status);
        return 1;
    }
    st->inflight = 1;
    st->send_ns = ud_mono_ns();
    return send_guarded(st, &iov, n, H2O_SEND_STATE_IN_PROGRESS);
}

static void send_error(struct ud_http_stream *st)
{
    h2o_send(st->h, NULL, 0, H2O_SEND_STATE_ERROR);
    finish(st, 502);
}

static void on_proceed(h2o_generator_t *g, h2o_req_t *h)
{
    (void)h;
    struct ud_http_stream *st = (struct ud_http_stream *)g;
    st->inflight = 0;
    if (st->ending == END_ERROR) {
        send_error(st);
        return;
    }
    if (st->fill_len > 0 || st->ending == END_CLEAN) {
        if (send_gathered(st, st->ending == END_CLEAN))
            return;
    }
    if (st->want_room && st->on_room != NULL) {
        st->want_room = 0;
        st->on_room(st->arg);
    }
}

static void on_stop(h2o_generator_t *g, h2o_req_t *h)
{
    (void)h;
    struct ud_http_stream *st = (struct ud_http_stream *)g;
    if (st->in_send) {
        st->gone = 1; /* send() finishes it once h2o_send returns */
        return;
    }
    void (*gone)(void *) = st->on_gone;
    void *arg = st->arg;
    finish(st, 499);
    if (gone != NULL)
        gone(arg);
}

struct ud_http_stream *ud_http_stream_start(struct ud_http_req *r, int status,
                                            const char *content_type, uint64_t length,
                                            void (*on_room)(void *arg), void (*on_gone)(void *arg),
                                            void *arg)
{
    if (r->h == NULL) {
        ud_http_reply_error(r, 499, "client went away"); /* only frees */
        return NULL;
    }
    struct ud_http_node *node = &r->server->opts.node;
    if (node->on_reply != NULL)
        node->on_reply(node->arg, r);
    struct ud_http_stream *st = calloc(1, sizeof *st);
    if (st == NULL)
        abort(); /* network glue aborts on OOM (STYLE.md) */
    st->super.proceed = on_proceed;
    st->super.stop = on_stop;
    st->s = r->server;
    st->status = status;
    st->metrics = r->metrics;
    st->start_ns = r->start_ns;
    st->on_room = on_room;
    st->on_gone = on_gone;
    st->arg = arg;
    h2o_req_t *h = ud_http_req_take(r);
    st->h = h;
    for (int i = 0; i < 2; i++) {
        st->piece[i] = h2o_mem_alloc_shared(&h->pool, sizeof *st->piece[i], piece_dispose);
        st->piece[i]->buf = NULL;
        st->piece[i]->cap = 0;
    }
    h->res.status = status;
    h->res.reason = ud_http_reason(status);
    h->res.content_length = length == UD_HTTP_LENGTH_UNKNOWN ? SIZE_MAX : (size_t)length;
    h2o_add_header(&h->pool, &h->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, content_type,
                   strlen(content_type));
    h2o_start_response(h, &st->super);
    return st;
}

int ud_http_stream_write(struct ud_http_stream *st, const void *data, size_t len)
{
    /* Nothing to pass on. Sent, zero bytes with nothing in flight would be an empty h2o_send,
     * which h2o's HTTP/1.1 writer takes as the end of the response (it completes the request
     * while this stream still holds it). The source (curl) never writes 0 bytes today; this keeps
     * the contract independent of that. */
    if (len == 0)
        return 0;
    if (st->inflight && st->fill_len > 0 && st->fill_len + len > UD_HTTP_STREAM_BUFFER) {
        st->want_room = 1;
        return UD_EAGAIN;
    }
    struct piece *pc = st->piece[st->fill];
    if (st->fill_len + len > pc->cap) {
        size_t cap = st->fill_len + len;
        if (cap < UD_HTTP_STREAM_BUFFER)
            cap = UD_HTTP_STREAM_BUFFER;
        uint8_t *p = realloc(pc->buf, cap);
        if (p == NULL)
            abort();
        pc->buf = p;
        pc->cap = cap;
    }
    memcpy(pc->buf + st->fill_len, data, len);
    st->fill_len += len;
    if (!st->inflight)
        send_gathered(st, 0); /* a stop inside it calls on_gone: the caller learns it there */
    return 0;
}

/* The source is done (END_CLEAN) or broke (END_ERROR): no more callbacks; the ending goes out
 * now, or after the piece in flight (on_proceed). */
static void end_with(struct ud_http_stream *st, enum ending ending)
{
    if (st == NULL)
        return;
    st->on_room = st->on_gone = NULL;
    if (st->inflight)
        st->ending = ending;
    else if (ending == END_CLEAN)
        send_gathered(st, 1);
    else
        send_error(st);
}

void ud_http_stream_end(struct ud_http_stream *st)
{
    end_with(st, END_CLEAN);
}

void ud_http_stream_abort(struct ud_http_stream *st)
{
    end_with(st, END_ERROR);
}

int ud_http_stream_stalled(const struct ud_http_stream *st, uint64_t bound_ms)
{
    return st->inflight && ud_mono_ns() - st->send_ns > bound_ms * 1000000u;
}

void ud_http_stream_cut(struct ud_http_stream *st)
{
    if (st == NULL)
        return;
    if (!st->inflight) {
        ud_http_stream_abort(st);
        return;
    }
    st->on_room = st->on_gone = NULL;
    st->ending = END_ERROR;
    /* h2o 2.2.5 sets no timeout on a response being written and has no call that ends one
     * whose send is in flight. A shut-down socket fails that write; h2o then closes the
     * connection through its own path and calls on_stop, which frees st (the server's stop
     * does the same with connections left at its end). On HTTP/2 this ends the connection's
     * other streams as well. */
    h2o_conn_t *conn = st->h->conn;
    h2o_socket_t *sock =
        conn->callbacks->get_socket != NULL ? conn->callbacks->get_socket(conn) : NULL;
    int fd = sock != NULL ? h2o_socket_get_fd(sock) : -1;
    if (fd >= 0)
        shutdown(fd, SHUT_RDWR);
}

int ud_http_parse_length(const char *s, uint64_t *out)
{
    /* strtoull alone would take leading spaces, a sign ("-1" wraps to a huge length) and stop
     * silently at junk. */
    if (*s < '0' || *s > '9')
        return 0;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end != '\0' || errno == ERANGE || v >= UD_HTTP_LENGTH_UNKNOWN)
        return 0;
    *out = v;
    return 1;
}
