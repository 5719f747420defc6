/*
 * A lingering close of the server's connections.
 *
 * When a socket is closed while its receive queue holds bytes nobody read, the kernel answers
 * with RST instead of FIN and throws away whatever it had not sent yet. HTTP/2 clients keep
 * sending (WINDOW_UPDATE as they consume a body), so a connection h2o closes right after the
 * last frame of an answer, as it does once a GOAWAY'd connection has no stream left, cut the
 * tail of that answer: at a stop, an h2c client reading a 20 MiB LOB through a follower lost its
 * last 2 MB to "Connection reset by peer" (e2e-cluster_stream_read). h2o 2.2.5 closes its
 * descriptor directly, so the server keeps a second descriptor of each socket (dup at accept);
 * once h2o has closed its own, this module half-closes the socket (FIN after the queued bytes),
 * reads and discards what the client still sends, and closes it when the client closes its side,
 * or when the client stopped taking bytes for LINGER_STALL_MS.
 */
#ifndef UD_HTTP_LINGER_H
#define UD_HTTP_LINGER_H

#include <uv.h>

struct ud_http_linger;

/*
 * Lingers on fd (the connection's second descriptor; owned from here on) and calls done(arg)
 * once it is closed, on the loop, never from inside this call. Returns the linger, which
 * ud_http_linger_cut may end early.
 */
struct ud_http_linger *ud_http_linger_start(uv_loop_t *loop, int fd, void (*done)(void *arg),
                                            void *arg);

/* Ends a linger now (the server's forced stop): the descriptor is closed, done follows. */
void ud_http_linger_cut(struct ud_http_linger *l);

#endif
