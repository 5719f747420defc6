/*
 * raft's TCP transport with TCP_NODELAY on every connection. raft 0.15's raft_uv_tcp never sets
 * it, and with several appends in flight Nagle's algorithm plus delayed ACKs stall commits by
 * ~40 ms (DEPENDENCIES.md section 3: 8 applies in flight went from ~300 to ~5,400 entries/s).
 *
 * This wraps a real raft_uv_tcp transport: init, listen, connect and close are delegated, and the
 * accept and connect callbacks set TCP_NODELAY on the stream before handing it to raft. Accepted
 * streams, on which raft receives messages, are then read through raft/recv_batch.h.
 */
#ifndef UD_RAFT_TRANSPORT_H
#define UD_RAFT_TRANSPORT_H

#include <raft.h>
#include <raft/uv.h>
#include <uv.h>

struct ud_raft_transport {
    struct raft_uv_transport outer; /* what raft_uv_init gets; raft_uv owns outer.data */
    struct raft_uv_transport inner; /* the raft_uv_tcp transport; inner.data = this */
    raft_uv_accept_cb accept_cb;
    raft_uv_transport_close_cb close_cb;
    unsigned connects;         /* connect requests whose callback has not fired yet */
    unsigned nodelay_accepted; /* streams given TCP_NODELAY, for tests and diagnostics */
    unsigned nodelay_connected;
    unsigned recv_batched; /* accepted streams read through raft/recv_batch.c */
    int inited;
};

/*
 * Initializes the wrapper and its inner raft_uv_tcp transport on loop. bind_address (may be NULL:
 * bind the advertised address raft_init gets) is the numeric "ip:port" to listen on.
 * Returns 0 or a raft error code (RAFT_NOMEM, RAFT_INVALID), with t->outer.errmsg set.
 * Pass &t->outer to raft_uv_init.
 */
int ud_raft_transport_init(struct ud_raft_transport *t, uv_loop_t *loop, const char *bind_address);

/* Frees the inner transport. Only after raft_uv_close has completed (raft's close callback). */
void ud_raft_transport_close(struct ud_raft_transport *t);

#endif
