/*
 * A lingering close of the servers' connections (HTTP and RESP).
 *
 * When a socket is closed while its receive queue holds bytes nobody read, the kernel answers
 * with RST instead of FIN and throws away whatever it had not sent yet. HTTP/2 clients keep
 * sending (WINDOW_UPDATE as they consume a body), so a connection h2o closes right after the
 * last frame of an answer, as it does once a GOAWAY'd connection has no stream left, cut the
 * tail of that answer: at a stop, an h2c client reading a 20 MiB LOB through a follower lost its
 * last 2 MB to "Connection reset by peer" (e2e-cluster_stream_read). A RESP client that pipelines
 * lost the replies the server had sent before it closed the connection at a stop, QUIT or a
 * protocol error (e2e-resp). h2o 2.2.5 closes its descriptor directly, so the HTTP server keeps a
 * second descriptor of each socket (dup at accept), and the RESP server takes one before it
 * closes; once the first is closed, this module half-closes the socket (FIN after the queued
 * bytes), reads and discards what the client still sends, and closes it when the client closes its
 * side, when the client stopped taking bytes for LINGER_STALL_MS, or LINGER_DRAINED_MS after it
 * has taken them all.
 */
#ifndef UD_CORE_LINGER_H
#define UD_CORE_LINGER_H

#include <uv.h>

struct ud_linger;

/* Why a linger ended. */
enum ud_linger_end {
    UD_LINGER_CLOSED,  /* the client closed its side, or the socket failed */
    UD_LINGER_DRAINED, /* the client had every byte for LINGER_DRAINED_MS */
    UD_LINGER_STALLED, /* the client took none of the queued bytes for LINGER_STALL_MS, or the
                        * linger reached LINGER_MAX_MS (30 s) however it read */
    UD_LINGER_CUT,     /* ud_linger_cut */
};

typedef void (*ud_linger_done_fn)(void *arg, enum ud_linger_end why);

/*
 * A second descriptor of the socket of handle h (close-on-exec), to linger on once h is closed;
 * -1 when none could be taken (the connection then closes without lingering).
 */
int ud_linger_dup(const uv_handle_t *h);

/*
 * Lingers on fd (the connection's second descriptor; owned from here on) and calls done(arg, why)
 * once it is closed, on the loop, never from inside this call. Returns the linger, which
 * ud_linger_cut may end early.
 */
struct ud_linger *ud_linger_start(uv_loop_t *loop, int fd, ud_linger_done_fn done, void *arg);

/*
 * A closed connection's second descriptor *fd2 (-1: none): lingers on it (ud_linger_start) and
 * returns the linger, or, when there is none or cut is set (a forced stop), closes it and returns
 * NULL: nothing lingers, and the caller frees the connection now. *fd2 is -1 afterwards.
 */
struct ud_linger *ud_linger_take(uv_loop_t *loop, int *fd2, int cut, ud_linger_done_fn done,
                                 void *arg);

/* Ends a linger now (the server's forced stop): the descriptor is closed, done follows. */
void ud_linger_cut(struct ud_linger *l);

#endif
