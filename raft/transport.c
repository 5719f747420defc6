/* raft_uv_tcp wrapped so that every raft connection runs with TCP_NODELAY and raft's incoming
 * messages are read with one read(2) per wake-up (see transport.h). */
#include "raft/transport.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/log.h"
#include "raft/recv_batch.h"

/* A connect request of raft_uv, forwarded to the inner transport. */
struct connect_req {
    struct raft_uv_connect inner; /* inner.data = this */
    struct raft_uv_connect *outer;
    struct ud_raft_transport *t;
};

static void copy_errmsg(struct ud_raft_transport *t)
{
    snprintf(t->outer.errmsg, sizeof t->outer.errmsg, "%s", t->inner.errmsg);
}

/*
 * Loopback and LAN links carry small AppendEntries messages and their results back to back;
 * with Nagle's algorithm on, a message waits for the ACK of the previous one, which the peer
 * delays by up to 40 ms (DEPENDENCIES.md section 3, "TCP_NODELAY").
 */
static int set_nodelay(uv_stream_t *stream)
{
    if (stream == NULL || stream->type != UV_TCP)
        return 0;
    int rc = uv_tcp_nodelay((uv_tcp_t *)stream, 1);
    if (rc != 0)
        ud_warn("raft", "TCP_NODELAY on a raft connection: %s", uv_strerror(rc));
    return rc == 0;
}

static int transport_init(struct raft_uv_transport *outer, raft_id id, const char *address)
{
    struct ud_raft_transport *t = outer->impl;
    int rv = t->inner.init(&t->inner, id, address);
    if (rv != 0)
        copy_errmsg(t);
    return rv;
}

static void accept_cb(struct raft_uv_transport *inner, raft_id id, const char *address,
                      uv_stream_t *stream)
{
    struct ud_raft_transport *t = inner->data;
    t->nodelay_accepted += (unsigned)set_nodelay(stream);
    t->accept_cb(&t->outer, id, address, stream);
    /* raft_uv started reading the stream inside its callback (a follower's AppendEntries, the
     * leader's results arrive on accepted streams). */
    t->recv_batched += (unsigned)ud_raft_recv_batch_attach(stream);
}

static int transport_listen(struct raft_uv_transport *outer, raft_uv_accept_cb cb)
{
    struct ud_raft_transport *t = outer->impl;
    t->accept_cb = cb;
    int rv = t->inner.listen(&t->inner, accept_cb);
    if (rv != 0)
        copy_errmsg(t);
    return rv;
}

static void connect_cb(struct raft_uv_connect *inner, uv_stream_t *stream, int status)
{
    struct connect_req *c = inner->data;
    struct raft_uv_connect *outer = c->outer;
    struct ud_raft_transport *t = c->t;
    t->connects--;
    free(c);
    if (status == 0)
        t->nodelay_connected += (unsigned)set_nodelay(stream);
    outer->cb(outer, stream, status);
}

static int transport_connect(struct raft_uv_transport *outer, struct raft_uv_connect *req,
                             raft_id id, const char *address, raft_uv_connect_cb cb)
{
    struct ud_raft_transport *t = outer->impl;
    struct connect_req *c = calloc(1, sizeof *c);
    if (c == NULL) {
        snprintf(outer->errmsg, sizeof outer->errmsg, "out of memory");
        return RAFT_NOMEM;
    }
    c->inner.data = c;
    c->outer = req;
    c->t = t;
    req->cb = cb;
    int rv = t->inner.connect(&t->inner, &c->inner, id, address, connect_cb);
    if (rv != 0) {
        copy_errmsg(t);
        free(c);
        return rv;
    }
    t->connects++;
    return 0;
}

static void inner_close_cb(struct raft_uv_transport *inner)
{
    struct ud_raft_transport *t = inner->data;
    /* The inner transport fired every pending connect callback (RAFT_CANCELED) before this. */
    UD_ASSERT(t->connects == 0);
    raft_uv_transport_close_cb cb = t->close_cb;
    t->close_cb = NULL;
    if (cb != NULL)
        cb(&t->outer);
}

static void transport_close(struct raft_uv_transport *outer, raft_uv_transport_close_cb cb)
{
    struct ud_raft_transport *t = outer->impl;
    t->close_cb = cb;
    t->inner.close(&t->inner, inner_close_cb);
}

int ud_raft_transport_init(struct ud_raft_transport *t, uv_loop_t *loop, const char *bind_address)
{
    memset(t, 0, sizeof *t);
    int rv = raft_uv_tcp_init(&t->inner, loop);
    if (rv != 0) {
        copy_errmsg(t);
        return rv;
    }
    t->inner.data = t;
    t->inited = 1;
    if (bind_address != NULL && (rv = raft_uv_tcp_set_bind_address(&t->inner, bind_address)) != 0) {
        snprintf(t->outer.errmsg, sizeof t->outer.errmsg, "bind address %s: %s", bind_address,
                 raft_strerror(rv));
        raft_uv_tcp_close(&t->inner);
        t->inited = 0;
        return rv;
    }
    t->outer.impl = t;
    t->outer.init = transport_init;
    t->outer.listen = transport_listen;
    t->outer.connect = transport_connect;
    t->outer.close = transport_close;
    return 0;
}

void ud_raft_transport_close(struct ud_raft_transport *t)
{
    if (!t->inited)
        return;
    raft_uv_tcp_close(&t->inner);
    t->inited = 0;
}
