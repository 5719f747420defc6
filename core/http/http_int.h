/* Internals shared by the core/http server files: the server and request objects (with h2o). */
#ifndef UD_CORE_HTTP_HTTP_INT_H
#define UD_CORE_HTTP_HTTP_INT_H

#include <h2o.h>
#include <h2o/http1.h> /* after h2o.h, which it does not include */

#include "core/http/http.h"
#include "core/http/metrics.h"
#include "core/http/path.h"

#define UD_HTTP_LOG        "http"
#define UD_HTTP_MAX_ROUTES 64

struct ud_http_route_entry {
    struct ud_http_route r;
    size_t metrics; /* index in ud_http_metrics */
};

struct ud_http_lob_stream; /* read_lob.c */
struct ud_http_conn;       /* server.c */
struct ud_http_repl;       /* repl.c: replication endpoints, NULL until registered */

/* Lives in the h2o request's pool: tells the request object that h2o disposed the request. */
struct ud_http_req_token {
    struct ud_http_req *r; /* NULL once the request object detached (answered or freed) */
};

/* ud_http_tls_check that keeps the context (owned by the caller, SSL_CTX_free) in *out. */
int ud_http_tls_ctx_new(const char *cert, const char *key, SSL_CTX **out, int *bad_part,
                        char *errmsg);

struct ud_http_server {
    uv_loop_t *loop;
    struct ud_http_options opts; /* strings point to the owned copies below */
    char *listen_addr, *tls_addr, *tls_cert, *tls_key;

    h2o_globalconf_t config;
    h2o_context_t ctx;
    int ctx_ready;
    h2o_accept_ctx_t accept_plain;
    h2o_accept_ctx_t accept_tls;
    SSL_CTX *ssl; /* owned; NULL without TLS */
    uv_tcp_t listener;
    uv_tcp_t tls_listener;
    int listening;     /* the plain listener is initialized (needs a close) */
    int tls_listening; /* same for TLS */
    int port, tls_port;

    struct ud_http_route_entry routes[UD_HTTP_MAX_ROUTES];
    size_t nroutes;
    size_t unmatched_metrics;
    struct ud_http_metrics metrics;
    uint64_t started_ns;
    void *app;

    size_t live;  /* request objects and LOB streams */
    size_t conns; /* accepted connections not yet closed */
    struct ud_http_conn *conn_list;

    /* ?min_lsn= waiters: re-checked after every loop iteration (every apply on this node happens
     * inside one), and at the earliest deadline. */
    struct ud_http_req *waiters;
    uv_check_t wait_check;
    uv_prepare_t read_pause; /* drops no-op epoll re-registrations (read_pause.c) */
    uv_timer_t wait_timer;
    int wait_active;

    struct ud_http_lob_stream *streams;
    struct ud_http_repl *repl;
    /* Namespaces with a delete on the way (ud_http_server_ns_closing); counted per name. */
    struct {
        char name[UD_NS_NAME_MAX + 1];
        unsigned count;
    } closing_ns[8];

    int stopping;
    void (*done)(void *arg);
    void *done_arg;
    uv_timer_t stop_timer;
    uv_timer_t idle_timer; /* while stopping: shuts idle HTTP/1.1 connections (server.c) */
    int forcing;           /* the grace period ended: sockets were shut down */
    int closing;           /* handle closes not yet called back */
    int finished;
};

struct ud_http_req {
    struct ud_http_server *server;
    h2o_req_t *h; /* NULL once the client went away */
    struct ud_http_req_token *token;
    const struct ud_http_route_entry *route; /* NULL when no route matched */
    size_t metrics;
    uint64_t start_ns;
    unsigned method;
    int in_handler; /* replies during the handler are freed after it returns */
    int replied;
    int taken;  /* a LOB stream took over the h2o request (it answers and counts it) */
    int status; /* of the reply, for the metrics */
    int marked; /* carries the node's mark_header */
    struct ud_http_params params;
    const char *path; /* raw, without the query; h2o memory */
    size_t path_len;
    const char *query;
    size_t query_len;
    const uint8_t *body;
    size_t body_len;
    char ns_name[UD_NS_NAME_MAX + 1];
    struct ud_ns *ns; /* acquired during the handler's synchronous part */
    uint8_t *key;     /* into keybuf */
    size_t key_len;
    /* ?acks=isr (routes with UD_HTTP_ROUTE_ACKS): a success reply waits until min_isr followers
     * applied wrote_lsn (repl.c) */
    int acks_isr;
    uint64_t wrote_lsn;
    /* ?min_lsn= */
    uint64_t min_lsn;
    uint64_t deadline_ms; /* uv_now time */
    uint64_t wait_ms;     /* the wait asked for */
    struct ud_http_req *wait_prev, *wait_next;
    int waiting;
    uint8_t keybuf[]; /* path_len bytes */
};

/* Detaches r from h2o and frees it, counting it in the metrics with status (499 when gone). */
void ud_http_req_finish(struct ud_http_req *r);
/* A stream takes over r's h2o request: r is freed without an answer or metrics of its own (the
 * stream counts itself in live and in the metrics). Returns the h2o request. */
h2o_req_t *ud_http_req_take(struct ud_http_req *r);
void ud_http_server_unref(struct ud_http_server *s); /* live-- and stop progress */
const char *ud_http_reason(int status);

/* Handlers of the read API (read_*.c, status.c). */
void ud_http_on_kv_get(struct ud_http_req *r, void *arg);
void ud_http_on_kv_scan(struct ud_http_req *r, void *arg);
void ud_http_on_row_get(struct ud_http_req *r, void *arg);
void ud_http_on_row_scan(struct ud_http_req *r, void *arg);
void ud_http_on_lob_get(struct ud_http_req *r, void *arg);
void ud_http_on_offset(struct ud_http_req *r, void *arg);
void ud_http_on_stats(struct ud_http_req *r, void *arg);
void ud_http_on_checkpoint(struct ud_http_req *r, void *arg);
void ud_http_on_namespaces(struct ud_http_req *r, void *arg);
void ud_http_on_healthz(struct ud_http_req *r, void *arg);
void ud_http_on_readyz(struct ud_http_req *r, void *arg);
void ud_http_on_leader(struct ud_http_req *r, void *arg);
void ud_http_on_metrics(struct ud_http_req *r, void *arg);

/* Scan query parameters: prefix (percent-encoded bytes), start (base64 cursor), limit (1..1000,
 * default 100). prefix and start hold cap bytes. 0, or 1 when r was answered (400). */
int ud_http_scan_params(struct ud_http_req *r, struct ud_scan *scan, uint8_t *prefix,
                        uint8_t *start, size_t cap);

/* LOB streams (read_lob.c). */
void ud_http_streams_close_ns(struct ud_http_server *s, const char *ns);

/* Replication (repl.c, wal_stream.c, snapshot.c); every function accepts s->repl == NULL. */
/* The stop began: streams end (cleanly, after the send in flight), snapshots are cut, acks=isr
 * waits are answered 503. */
void ud_http_repl_stop(struct ud_http_server *s);
/* The repl timer, for the stop to close (NULL when none). */
uv_handle_t *ud_http_repl_timer(struct ud_http_server *s);
void ud_http_repl_free(struct ud_http_server *s);
void ud_http_repl_close_ns(struct ud_http_server *s, const char *ns);
void ud_http_repl_metrics(struct ud_http_server *s, struct ud_jbuf *j);
/* A success reply of an acks=isr request: 1 when parked (the reply is sent later), 0 to send. */
int ud_http_repl_defer_reply(struct ud_http_req *r, int status, const char *content_type,
                             const void *body, size_t len);
/* Adds x-unison-ns-incarnation (ud_ns_incarnation of the request's namespace, 0 included) when
 * the request has a namespace: a follower that resumes by LSN compares it with its copy's, so a
 * namespace deleted and created again under the name is never continued on top of the old copy
 * (docs/replication.md). */
void ud_http_set_incarnation(struct ud_http_req *r);
/* The same header with a given incarnation (0 too: created before incarnations). */
void ud_http_set_incarnation_value(struct ud_http_req *r, uint64_t inc);

#endif
