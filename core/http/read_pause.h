/*
 * h2o's pause of a connection's reads around each HTTP/1 request, without the two epoll_ctl calls
 * libuv makes for it (design-decisions.md, "h2o's read pause without epoll_ctl").
 */
#ifndef UD_HTTP_READ_PAUSE_H
#define UD_HTTP_READ_PAUSE_H

#include <uv.h>

/*
 * Called once h2o has started reading a plain (not TLS) connection it accepted: from then on
 * uv_read_stop on streams read the way that one is (h2o's own sockets) only pauses them, and the
 * uv_read_start that follows resumes them without a system call.
 */
void ud_http_read_pause_learn(const uv_stream_t *h2o_stream);

/*
 * A prepare callback for the server's loop (it runs right before libuv polls): drops from libuv's
 * queue of epoll registrations to make those that would not change anything. After a pause ends,
 * libuv's drain of the answer's write re-queues the connection for an EPOLL_CTL_MOD to the mask
 * it already has.
 */
void ud_http_read_pause_prepare_cb(uv_prepare_t *p);

/* Pauses that uv_read_stop took (*pauses), those of them that turned into real stops because an
 * event came while paused (*ended), and the no-op registrations the prepare callback dropped
 * (*skipped). Each pointer must be valid. */
void ud_http_read_pause_stats(unsigned long *pauses, unsigned long *ended, unsigned long *skipped);

#endif
