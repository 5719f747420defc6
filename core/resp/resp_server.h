/*
 * RESP TCP server on a libuv loop: accepts connections, feeds their bytes to the parser and the
 * command layer (core/resp/resp_cmd.h) and writes the replies back in order. Loop thread only.
 *
 * Bounds: at most max_clients connections (others get "-ERR max number of clients reached" and are
 * closed, as in Redis); a connection stops being read while its unsent replies exceed max_output
 * bytes or max_pending replies wait for raft, so a slow client costs bounded memory and never
 * delays others; idle connections are closed after idle_timeout_ms.
 */
#ifndef UD_CORE_RESP_RESP_SERVER_H
#define UD_CORE_RESP_RESP_SERVER_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core/resp/resp_cmd.h"

#define UD_RESP_DEFAULT_MAX_CLIENTS  1000
#define UD_RESP_DEFAULT_IDLE_TIMEOUT 300000     /* ms; Redis's default is never */
#define UD_RESP_DEFAULT_MAX_OUTPUT   (1u << 20) /* bytes */
#define UD_RESP_DEFAULT_MAX_PENDING  1024
#define UD_RESP_DEFAULT_STOP_TIMEOUT 5000 /* ms */

struct ud_resp_server_options {
    uv_loop_t *loop;
    const char *listen; /* "host:port" or "[v6]:port"; port 0 binds any free port */
    struct ud_resp_ctx_options commands;
    unsigned max_clients;     /* 0: UD_RESP_DEFAULT_MAX_CLIENTS */
    int64_t idle_timeout_ms;  /* 0: UD_RESP_DEFAULT_IDLE_TIMEOUT; -1: never; checked each second */
    size_t max_output;        /* 0: UD_RESP_DEFAULT_MAX_OUTPUT */
    size_t max_pending;       /* 0: UD_RESP_DEFAULT_MAX_PENDING */
    unsigned stop_timeout_ms; /* 0: UD_RESP_DEFAULT_STOP_TIMEOUT */
};

struct ud_resp_server;

/*
 * Binds and listens. Returns 0 with *out and *port (the bound port), or UD_EINVAL (bad address),
 * UD_EIO (bind/listen failed: errmsg names the address and the libuv error), UD_ENOMEM.
 */
int ud_resp_server_start(const struct ud_resp_server_options *o, struct ud_resp_server **out,
                         int *port, char *errmsg);

/*
 * Stops: closes the listener, stops reading requests (unparsed pipelined input is dropped),
 * waits for the replies of commands already executing (writes waiting for raft) and their
 * sending, closes every connection, then frees the server and calls done(arg) from the loop.
 * Connections still unfinished after stop_timeout_ms are closed anyway; their late replies are
 * dropped. The server must not be used after this call.
 */
void ud_resp_server_stop(struct ud_resp_server *s, void (*done)(void *arg), void *arg);

/* The command context (stats, for INFO and metrics). */
struct ud_resp_ctx *ud_resp_server_ctx(struct ud_resp_server *s);

#endif
