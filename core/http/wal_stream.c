/*
 * GET /api/v1/{ns}/wal/stream?from={lsn}: a long-lived response of replication frames
 * (docs/format-stream.md, docs/replication.md).
 *
 * Push, not poll: each namespace with subscribers has a hub holding the engine's stream listener,
 * which wakes the loop through one uv_async when records become visible; the hub's async callback
 * gives every idle subscriber its next batch. A subscriber has at most one h2o_send in flight: the
 * 24-byte frame header from its own small buffer and the WAL run straight from the segment mapping
 * (ud_wal_reader_next_run: nothing is copied per connection by us; HTTP/1.1 writes both with
 * writev, HTTP/2 copies them into its DATA frames). The next batch is read only when h2o calls
 * proceed, so a slow reader holds one batch (at most stream_batch_bytes, or one larger record) and
 * the TCP buffers: backpressure, never unbounded memory. The hub's timer sends a heartbeat to
 * every subscriber idle for heartbeat_ms.
 *
 * Lifetimes: a subscriber pins the segment it sends from (its WAL reader) and the hub holds a
 * namespace reference, so the mapping outlives retention and a delete. A subscriber ends when
 * h2o stops it (client gone), after its send in flight when the server stops (a clean end) or
 * the namespace is deleted (an error end), or on a WAL error. The hub closes with its last
 * subscriber; it counts in the server's live requests until its handles are closed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/err.h"
#include "core/http/repl_int.h"
#include "core/log.h"
#include "proto/stream.h"

enum ending {
    RUNNING = 0,
    END_CLEAN, /* final chunk: the server is stopping */
    END_ERROR, /* cut: the namespace is going away or the WAL failed */
};

struct ud_http_stream_hub {
    uv_async_t async; /* woken by the engine's stream listener (any thread) */
    uv_timer_t timer; /* heartbeats */
    struct ud_http_repl *p;
    struct ud_ns *ns; /* referenced until the hub closes */
    char ns_name[UD_NS_NAME_MAX + 1];
    struct ud_http_wal_stream *subs;
    size_t nsubs;
    int dead;    /* the namespace is being deleted: no new subscribers here */
    int handles; /* open handles; the hub is freed when the last one closed */
    struct ud_http_stream_hub *prev, *next;
};

struct ud_http_wal_stream {
    h2o_generator_t super; /* first: h2o passes this address back */
    struct ud_http_stream_hub *hub;
    h2o_req_t *h;
    struct ud_wal_reader *rd; /* NULL while `next` is beyond what the WAL holds */
    uint64_t next;            /* LSN of the next record to send */
    int inflight;             /* an h2o_send awaits its proceed */
    int need_heartbeat;       /* right after the headers */
    enum ending ending;
    uint64_t last_send_ms;
    size_t metrics;
    uint64_t start_ns;
    /* The frame header (and heartbeat body) of the send in flight: h2o reads it until proceed. */
    uint8_t frame[UD_STREAM_HEARTBEAT_FRAME];
    struct ud_http_wal_stream *prev, *next_sub;
};

static void try_send(struct ud_http_wal_stream *st);

/* --- hubs ------------------------------------------------------------------------------------- */

/* The engine's listener: any thread. uv_async_send coalesces wake-ups. */
static void hub_notify(void *arg, uint64_t lsn)
{
    (void)lsn;
    struct ud_http_stream_hub *hub = arg;
    uv_async_send(&hub->async);
}

static void hub_handle_closed(uv_handle_t *h)
{
    struct ud_http_stream_hub *hub = h->data;
    if (--hub->handles > 0)
        return;
    struct ud_http_server *s = hub->p->s;
    free(hub);
    ud_http_server_unref(s);
}

static void hub_close(struct ud_http_stream_hub *hub)
{
    struct ud_http_repl *p = hub->p;
    if (hub->prev != NULL)
        hub->prev->next = hub->next;
    else
        p->hubs = hub->next;
    if (hub->next != NULL)
        hub->next->prev = hub->prev;
    /* Returns once no listener call is running: the async handle may then close. */
    ud_ns_set_stream_listener(hub->ns, NULL, NULL);
    ud_registry_release(p->s->opts.registry, hub->ns);
    hub->ns = NULL;
    uv_close((uv_handle_t *)&hub->async, hub_handle_closed);
    uv_close((uv_handle_t *)&hub->timer, hub_handle_closed);
}

static void hub_async_cb(uv_async_t *a)
{
    struct ud_http_stream_hub *hub = a->data;
    if (hub->ns == NULL)
        return;
    uint64_t first, visible;
    ud_ns_stream_range(hub->ns, &first, &visible);
    ud_replicas_observe(hub->p->replicas, hub->ns_name, visible, uv_now(hub->p->s->loop));
    /* try_send may end the subscriber it is given (and close the hub after the last one: the
     * hub's memory stays until its close callbacks). */
    struct ud_http_wal_stream *st = hub->subs;
    while (st != NULL) {
        struct ud_http_wal_stream *next = st->next_sub;
        if (!st->inflight)
            try_send(st);
        st = next;
    }
}

static void hub_end(struct ud_http_stream_hub *hub, enum ending how);

/* 1 while the registry still maps the hub's name to the hub's namespace. A delete applied without
 * ud_http_server_ns_closing (another writer's raft FSM applying it here) is noticed this way. */
static int hub_ns_current(struct ud_http_stream_hub *hub)
{
    struct ud_registry *reg = hub->p->s->opts.registry;
    struct ud_ns *ns;
    if (ud_registry_acquire(reg, hub->ns_name, &ns) != 0)
        return 0;
    int same = ns == hub->ns;
    ud_registry_release(reg, ns);
    return same;
}

static void hub_timer_cb(uv_timer_t *t)
{
    struct ud_http_stream_hub *hub = t->data;
    if (!hub->dead && !hub_ns_current(hub)) {
        ud_info(UD_HTTP_LOG, "namespace %s was deleted: its WAL streams end", hub->ns_name);
        hub_end(hub, END_ERROR);
        return;
    }
    uint64_t now = uv_now(hub->p->s->loop);
    struct ud_http_wal_stream *st = hub->subs;
    while (st != NULL) {
        struct ud_http_wal_stream *next = st->next_sub;
        if (!st->inflight && now - st->last_send_ms >= hub->p->o.heartbeat_ms)
            try_send(st);
        st = next;
    }
}

/* The hub of namespace ns (acquired by the caller for the handler): found or created. */
static struct ud_http_stream_hub *hub_get(struct ud_http_repl *p, const char *name)
{
    for (struct ud_http_stream_hub *h = p->hubs; h != NULL; h = h->next)
        if (!h->dead && strcmp(h->ns_name, name) == 0)
            return h;
    struct ud_http_stream_hub *hub = calloc(1, sizeof *hub);
    if (hub == NULL)
        abort();
    if (ud_registry_acquire(p->s->opts.registry, name, &hub->ns) != 0) {
        free(hub);
        return NULL;
    }
    hub->p = p;
    snprintf(hub->ns_name, sizeof hub->ns_name, "%s", name);
    uv_async_init(p->s->loop, &hub->async, hub_async_cb);
    uv_timer_init(p->s->loop, &hub->timer);
    hub->async.data = hub->timer.data = hub;
    hub->handles = 2;
    /* A quarter of the heartbeat period: an idle subscriber hears within 1.25 periods. */
    uint64_t tick = p->o.heartbeat_ms / 4 ? p->o.heartbeat_ms / 4 : 1;
    uv_timer_start(&hub->timer, hub_timer_cb, tick, tick);
    hub->next = p->hubs;
    if (p->hubs != NULL)
        p->hubs->prev = hub;
    p->hubs = hub;
    p->s->live++; /* until the handles are closed: a stop waits for them */
    ud_ns_set_stream_listener(hub->ns, hub_notify, hub);
    return hub;
}

/* --- subscribers ------------------------------------------------------------------------------ */

static void detach(struct ud_http_wal_stream *st, int status)
{
    struct ud_http_stream_hub *hub = st->hub;
    struct ud_http_repl *p = hub->p;
    if (st->prev != NULL)
        st->prev->next_sub = st->next_sub;
    else
        hub->subs = st->next_sub;
    if (st->next_sub != NULL)
        st->next_sub->prev = st->prev;
    hub->nsubs--;
    p->subscribers--;
    ud_wal_reader_close(st->rd);
    ud_http_metrics_observe(&p->s->metrics, st->metrics, status, ud_mono_ns() - st->start_ns);
    free(st);
    ud_http_server_unref(p->s);
    if (hub->nsubs == 0)
        hub_close(hub);
}

static void end_stream(struct ud_http_wal_stream *st)
{
    int clean = st->ending == END_CLEAN;
    h2o_send(st->h, NULL, 0, clean ? H2O_SEND_STATE_FINAL : H2O_SEND_STATE_ERROR);
    detach(st, clean ? 200 : 500);
}

static void send_frame(struct ud_http_wal_stream *st, h2o_iovec_t *iov, size_t n, size_t bytes)
{
    struct ud_http_repl *p = st->hub->p;
    st->inflight = 1;
    st->last_send_ms = uv_now(p->s->loop);
    p->stream_bytes += bytes;
    h2o_send(st->h, iov, n, H2O_SEND_STATE_IN_PROGRESS);
}

static void send_heartbeat(struct ud_http_wal_stream *st)
{
    uint64_t first, visible;
    ud_ns_stream_range(st->hub->ns, &first, &visible);
    ud_stream_heartbeat_encode(st->frame, visible, ud_now_ns(), first);
    st->need_heartbeat = 0;
    st->hub->p->stream_heartbeats++;
    h2o_iovec_t iov = h2o_iovec_init(st->frame, UD_STREAM_HEARTBEAT_FRAME);
    send_frame(st, &iov, 1, UD_STREAM_HEARTBEAT_FRAME);
}

/* Opens the reader once the WAL holds `next`: 0 (open, or not yet), or an error code. */
static int ensure_reader(struct ud_http_wal_stream *st)
{
    if (st->rd != NULL)
        return 0;
    uint64_t first, visible;
    ud_ns_stream_range(st->hub->ns, &first, &visible);
    if (st->next > visible + 1)
        return 0; /* heartbeats until this node catches up (docs/format-stream.md) */
    int rc = ud_ns_stream_open(st->hub->ns, st->next, &st->rd);
    if (rc == UD_ERANGE)
        return 0; /* visible ran ahead of last only in appearance: try at the next wake-up */
    return rc;
}

/* Sends what is due: the first heartbeat, the next batch, or a heartbeat when idle; ends the
 * stream when asked to. Never called with a send in flight. */
static void try_send(struct ud_http_wal_stream *st)
{
    if (st->inflight)
        return;
    if (st->ending != RUNNING) {
        end_stream(st);
        return;
    }
    if (st->need_heartbeat) {
        send_heartbeat(st);
        return;
    }
    struct ud_http_repl *p = st->hub->p;
    int rc = ensure_reader(st);
    if (rc == 0 && st->rd != NULL) {
        const uint8_t *data;
        uint64_t len, first;
        uint32_t count;
        rc = ud_wal_reader_next_run(st->rd, p->o.stream_batch_bytes, &data, &len, &first, &count);
        if (rc == 0) {
            UD_ASSERT(first == st->next && len <= UD_STREAM_MAX_BODY);
            struct ud_stream_header hd = {
                .type = UD_STREAM_RECORDS, .count = count, .lsn = first, .body_len = (uint32_t)len};
            ud_stream_header_encode(st->frame, &hd);
            st->next = first + count;
            p->stream_record_frames++;
            h2o_iovec_t iov[2] = {h2o_iovec_init(st->frame, UD_STREAM_HEADER_SIZE),
                                  h2o_iovec_init(data, len)};
            send_frame(st, iov, 2, UD_STREAM_HEADER_SIZE + len);
            return;
        }
        if (rc == UD_EAGAIN)
            rc = 0;
    }
    if (rc != 0) {
        /* The client reconnects from its last LSN and then gets the 410 or the error itself. */
        ud_warn(UD_HTTP_LOG, "namespace %s: WAL stream cut at LSN %llu: %s", st->hub->ns_name,
                (unsigned long long)st->next, ud_strerror(rc));
        st->ending = END_ERROR;
        end_stream(st);
        return;
    }
    if (uv_now(p->s->loop) - st->last_send_ms >= p->o.heartbeat_ms)
        send_heartbeat(st);
}

static void on_proceed(h2o_generator_t *g, h2o_req_t *h)
{
    (void)h;
    struct ud_http_wal_stream *st = (struct ud_http_wal_stream *)g;
    st->inflight = 0;
    try_send(st);
}

static void on_stop(h2o_generator_t *g, h2o_req_t *h)
{
    (void)h;
    detach((struct ud_http_wal_stream *)g, 499);
}

/* Ends every subscriber of hub (the hub closes with the last one). */
static void hub_end(struct ud_http_stream_hub *hub, enum ending how)
{
    hub->dead = 1;
    struct ud_http_wal_stream *st = hub->subs;
    while (st != NULL) {
        struct ud_http_wal_stream *next = st->next_sub;
        if (st->ending == RUNNING)
            st->ending = how;
        /* A send in flight still reads the mapping: the end comes at its proceed. */
        if (!st->inflight)
            end_stream(st);
        st = next;
    }
}

void ud_http_wal_streams_end(struct ud_http_repl *p, const char *ns, int clean)
{
    struct ud_http_stream_hub *hub = p->hubs;
    while (hub != NULL) {
        struct ud_http_stream_hub *next_hub = hub->next;
        if (ns == NULL || strcmp(hub->ns_name, ns) == 0)
            hub_end(hub, clean ? END_CLEAN : END_ERROR);
        hub = next_hub;
    }
}

/* --- the handler ------------------------------------------------------------------------------ */

static void reply_gone(struct ud_http_req *r, uint64_t from, uint64_t first)
{
    char msg[400];
    snprintf(msg, sizeof msg,
             "LSN %llu is older than the retained WAL of namespace %s (oldest retained LSN %llu): "
             "bootstrap from GET /api/v1/%s/snapshot",
             (unsigned long long)from, r->ns_name, (unsigned long long)first, r->ns_name);
    struct ud_jbuf j;
    ud_jbuf_init(&j);
    ud_jbuf_lit(&j, "{\"error\":");
    ud_jbuf_str(&j, msg, strlen(msg));
    ud_jbuf_printf(&j, ",\"firstLsn\":%llu}", (unsigned long long)first);
    ud_http_reply_json(r, 410, &j);
}

void ud_http_on_wal_stream(struct ud_http_req *r, void *arg)
{
    struct ud_http_repl *p = arg;
    struct ud_http_server *s = p->s;
    char errmsg[UD_ERRMSG_SIZE];
    size_t qlen;
    const char *q = ud_http_req_query(r, &qlen);
    uint64_t from;
    int rc = ud_http_query_u64(q, qlen, "from", 1, UINT64_MAX - 1, &from, errmsg);
    if (rc == UD_ENOTFOUND) {
        ud_http_reply_error(r, 400,
                            "query parameter from is required: the LSN of the first record to "
                            "send (1 or more)");
        return;
    }
    if (rc != 0) {
        ud_http_reply_error(r, 400, "%s", errmsg);
        return;
    }
    if (p->stopping || ud_http_server_ns_is_closing(s, r->ns_name)) {
        ud_http_set_header(r, "retry-after", "1");
        ud_http_reply_error(r, 503, "namespace %s is being deleted or the server is stopping",
                            r->ns_name);
        return;
    }
    struct ud_ns *ns = ud_http_req_ns(r);
    uint64_t first, visible;
    ud_ns_stream_range(ns, &first, &visible);
    if (from < first) {
        reply_gone(r, from, first);
        return;
    }
    struct ud_wal_reader *rd = NULL;
    if (from <= visible + 1) {
        rc = ud_ns_stream_open(ns, from, &rd);
        if (rc == UD_EGONE) {
            ud_ns_stream_range(ns, &first, &visible);
            reply_gone(r, from, first);
            return;
        }
        if (rc == UD_ERANGE)
            rd = NULL; /* not appended yet after all: opened once it is */
        else if (rc != 0) {
            ud_http_reply_code(r, rc, "open a WAL reader");
            return;
        }
    }
    struct ud_http_stream_hub *hub = hub_get(p, r->ns_name);
    if (hub == NULL) {
        ud_wal_reader_close(rd);
        ud_http_reply_ns_not_found(r);
        return;
    }
    struct ud_http_wal_stream *st = calloc(1, sizeof *st);
    if (st == NULL)
        abort();
    st->super.proceed = on_proceed;
    st->super.stop = on_stop;
    st->hub = hub;
    st->rd = rd;
    st->next = from;
    st->need_heartbeat = 1;
    st->metrics = r->metrics;
    st->start_ns = r->start_ns;
    st->next_sub = hub->subs;
    if (hub->subs != NULL)
        hub->subs->prev = st;
    hub->subs = st;
    hub->nsubs++;
    p->subscribers++;
    p->streams_total++;

    char v[24];
    ud_http_set_header(r, "x-unison-stream-version", "1");
    snprintf(v, sizeof v, "%llu", (unsigned long long)first);
    ud_http_set_header(r, "x-unison-first-lsn", v);
    snprintf(v, sizeof v, "%llu", (unsigned long long)visible);
    ud_http_set_header(r, "x-unison-last-lsn", v);
    ud_http_set_incarnation(r);
    /* Proxies must not buffer a stream that never ends. */
    ud_http_set_header(r, "cache-control", "no-store");
    ud_http_set_header(r, "x-accel-buffering", "no");
    h2o_req_t *h = ud_http_req_take(r);
    st->h = h;
    h->res.status = 200;
    h->res.reason = "OK";
    h2o_add_header(&h->pool, &h->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   H2O_STRLIT(UD_STREAM_CONTENT_TYPE));
    h2o_start_response(h, &st->super);
    try_send(st);
}
