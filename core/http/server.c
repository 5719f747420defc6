/* h2o on the process's libuv loop: listeners, routing over the raw path, replies, stop. */
#include <arpa/inet.h>
#include <inttypes.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "core/clock.h"
#include "core/err.h"
#include "core/http/http_int.h"
#include "core/linger.h"
#include "core/http/read_pause.h"
#include "core/http_client.h"
#include "core/log.h"

/* A stop lets in-flight requests and responses still being written finish for this long; then it
 * shuts the remaining sockets down (h2o sees the error and closes them) and waits a little more. */
#define STOP_GRACE_MS 20000
#define STOP_FORCE_MS 2000
/* An idle connection is closed after this long: HTTP/1.1 from the end of the previous response
 * until the next request has arrived whole, headers and body (h2o 2.2.5's req_timeout: armed at
 * reqread_start, not restarted by reads, cleared once the body is complete; so a large body on a
 * slow link must fit in what is left of it), and HTTP/2 without a stream (idle_timeout). h2o's
 * default, 10 s, set here so that it cannot move under the HTTP client, which reuses no pooled
 * connection idle for more than UD_HTTP_CLIENT_MAX_IDLE_S (5 s, core/http_client.h): a request
 * sent on a connection the server is closing dies with nothing back ("outcome unknown" for a
 * forwarded write). The margin covers the client's loop being late; streamed answers are not
 * idle (a silent one is not cut). */
#define IDLE_TIMEOUT_MS 10000
_Static_assert(UD_HTTP_CLIENT_MAX_IDLE_S * 1000 * 2 <= IDLE_TIMEOUT_MS,
               "pooled client connections must be dropped well before the server closes them");

struct handler {
    h2o_handler_t super;
    struct ud_http_server *s;
};

struct ud_http_conn {
    uv_tcp_t tcp; /* first: the close callback gets this address */
    struct ud_http_server *s;
    struct ud_http_conn *prev, *next;
    int fd2;                  /* a second descriptor of the socket, for linger.c; -1: none */
    struct ud_linger *linger; /* lingering after h2o closed the connection */
};

static void wait_sweep(struct ud_http_server *s);
static void stop_progress(struct ud_http_server *s);

/* --- plain rules ------------------------------------------------------------------------------ */

int ud_http_status_for(int code)
{
    switch (code) {
    case UD_OK:
        return 200;
    case UD_ENOTFOUND:
        return 404;
    case UD_EINVAL:
    case UD_ECORRUPT:
    case UD_ELIMIT:
    case UD_ERANGE:
    case UD_ETRUNCATED:
    case UD_EVERSION:
        return 400;
    case UD_EEXIST:
    case UD_ETXN:
    case UD_ECONFLICT:
        return 409;
    case UD_EGONE:
        return 410;
    case UD_EKEYREUSED:
        return 422;
    case UD_EPRECONDITION:
        return 412;
    case UD_EBUSY:
    case UD_ECLOSED:
    case UD_EAGAIN:
    case UD_ETIMEDOUT:
    case UD_EINDOUBT:
        return 503;
    default:
        return 500;
    }
}

size_t ud_http_h2o_limit(size_t max_body)
{
    return max_body + (1u << 20) > UD_HTTP_H2O_MAX_BODY ? max_body + (1u << 20)
                                                        : UD_HTTP_H2O_MAX_BODY;
}

int ud_http_body_check(size_t len, size_t limit, char *errmsg)
{
    if (len <= limit)
        return 0;
    return ud_errf(errmsg, UD_ELIMIT,
                   "request body of %zu bytes exceeds the limit of %zu bytes; send larger "
                   "objects as LOB chunks in a transaction",
                   len, limit);
}

const char *ud_http_reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 204:
        return "No Content";
    case 206:
        return "Partial Content";
    case 304:
        return "Not Modified";
    case 307:
        return "Temporary Redirect";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 409:
        return "Conflict";
    case 410:
        return "Gone";
    case 412:
        return "Precondition Failed";
    case 413:
        return "Payload Too Large";
    case 416:
        return "Range Not Satisfiable";
    case 422:
        return "Unprocessable Content";
    case 500:
        return "Internal Server Error";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return "Unknown";
    }
}

/* --- server lifecycle ------------------------------------------------------------------------- */

static char *dup_or_null(const char *s)
{
    if (s == NULL || s[0] == '\0')
        return NULL;
    char *d = strdup(s);
    if (d == NULL)
        abort();
    return d;
}

static int on_req(h2o_handler_t *self, h2o_req_t *h);

int ud_http_server_new(uv_loop_t *loop, const struct ud_http_options *opts,
                       struct ud_http_server **out, char *errmsg)
{
    *out = NULL;
    if (opts->listen == NULL || opts->registry == NULL)
        return ud_errf(errmsg, UD_EINVAL, "http: a listen address and a registry are required");
    size_t max_body = opts->max_body ? opts->max_body : UD_HTTP_DEFAULT_MAX_BODY;
    if (max_body > (64u << 20))
        return ud_errf(errmsg, UD_EINVAL, "http: max_body %zu exceeds 64 MiB", max_body);
    struct ud_http_server *s = calloc(1, sizeof *s);
    if (s == NULL)
        return ud_errf(errmsg, UD_ENOMEM, "http: out of memory");
    s->loop = loop;
    s->opts = *opts;
    s->opts.max_body = max_body;
    if (s->opts.min_lsn_timeout_ms == 0)
        s->opts.min_lsn_timeout_ms = 5000;
    s->listen_addr = dup_or_null(opts->listen);
    s->tls_cert = dup_or_null(opts->tls_cert);
    s->tls_key = dup_or_null(opts->tls_key);
    s->tls_addr = dup_or_null(opts->tls_listen ? opts->tls_listen : "127.0.0.1:4443");
    s->opts.listen = s->listen_addr;
    s->opts.tls_cert = s->tls_cert;
    s->opts.tls_key = s->tls_key;
    s->opts.tls_listen = s->tls_addr;
    s->started_ns = ud_mono_ns();
    ud_http_metrics_init(&s->metrics);
    s->unmatched_metrics = ud_http_metrics_route(&s->metrics, "unmatched");

    h2o_config_init(&s->config);
    s->config.server_name = h2o_iovec_init(H2O_STRLIT("unisondb"));
    /* Bodies up to h2o's limit reach the router, which answers its own JSON 413 above max_body
     * on HTTP/1.1 and HTTP/2 alike (h2o would refuse HTTP/2 streams without a status). The limit
     * stays at least 1 MiB above max_body, and bounds what one request can make h2o buffer. */
    s->config.max_request_entity_size = ud_http_h2o_limit(max_body);
    /* Without a deadline, an HTTP/2 client that ignores GOAWAY keeps a stopping server open. */
    s->config.http2.graceful_shutdown_timeout = STOP_GRACE_MS / 2;
    s->config.http1.req_timeout = IDLE_TIMEOUT_MS;
    s->config.http2.idle_timeout = IDLE_TIMEOUT_MS;
    h2o_hostconf_t *host =
        h2o_config_register_host(&s->config, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *pathconf = h2o_config_register_path(host, "/", 0);
    struct handler *hd = (struct handler *)h2o_create_handler(pathconf, sizeof *hd);
    hd->super.on_req = on_req;
    hd->s = s;

    if (s->tls_cert != NULL) {
        int bad_part, rc = ud_http_tls_ctx_new(s->tls_cert, s->tls_key ? s->tls_key : s->tls_cert,
                                               &s->ssl, &bad_part, errmsg);
        if (rc != 0) {
            ud_http_server_free(s);
            return rc;
        }
        /* h2 first, then http/1.1, so both kinds of clients negotiate explicitly. */
        h2o_ssl_register_alpn_protocols(s->ssl, h2o_alpn_protocols);
    }
    *out = s;
    return 0;
}

int ud_http_server_add_route(struct ud_http_server *s, const struct ud_http_route *r)
{
    if (s->nroutes == UD_HTTP_MAX_ROUTES)
        return UD_ELIMIT;
    struct ud_http_route_entry *e = &s->routes[s->nroutes++];
    e->r = *r;
    e->metrics = ud_http_metrics_route(&s->metrics, r->name);
    return 0;
}

uv_loop_t *ud_http_server_loop(struct ud_http_server *s)
{
    return s->loop;
}

void ud_http_server_set_app(struct ud_http_server *s, void *app)
{
    s->app = app;
}

void *ud_http_server_app(struct ud_http_server *s)
{
    return s->app;
}

struct ud_registry *ud_http_server_registry(struct ud_http_server *s)
{
    return s->opts.registry;
}

void ud_http_server_load(struct ud_http_server *s, size_t *requests, size_t *connections)
{
    *requests = s->live;
    *connections = s->conns;
}

/* --- listening -------------------------------------------------------------------------------- */

/* Parses "host:port" / "[v6]:port" into a socket address (names resolved once, at start). */
static int parse_addr(const char *addr, struct sockaddr_storage *ss, char *errmsg)
{
    char host[256];
    const char *colon = strrchr(addr, ':');
    if (colon == NULL)
        return ud_errf(errmsg, UD_EINVAL, "http: listen address %s is not host:port", addr);
    size_t hl = (size_t)(colon - addr);
    const char *h = addr;
    if (hl >= 2 && addr[0] == '[' && addr[hl - 1] == ']') {
        h = addr + 1;
        hl -= 2;
    }
    if (hl == 0 || hl >= sizeof host)
        return ud_errf(errmsg, UD_EINVAL, "http: listen address %s has a bad host", addr);
    memcpy(host, h, hl);
    host[hl] = '\0';
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (colon[1] == '\0' || *end != '\0' || port < 0 || port > 65535)
        return ud_errf(errmsg, UD_EINVAL, "http: listen address %s has a bad port", addr);
    memset(ss, 0, sizeof *ss);
    if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)ss) == 0 ||
        uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)ss) == 0)
        return 0;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    int rc = getaddrinfo(host, NULL, &hints, &res);
    if (rc != 0 || res == NULL)
        return ud_errf(errmsg, UD_EINVAL, "http: listen address %s: %s", addr,
                       rc != 0 ? gai_strerror(rc) : "no address");
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    if (ss->ss_family == AF_INET)
        ((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
    else
        ((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
    freeaddrinfo(res);
    return 0;
}

static void conn_free(struct ud_http_conn *c)
{
    struct ud_http_server *s = c->s;
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        s->conn_list = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    free(c);
    s->conns--;
    stop_progress(s);
}

static void linger_done(void *arg, enum ud_linger_end why)
{
    (void)why;
    struct ud_http_conn *c = arg;
    c->linger = NULL;
    conn_free(c);
}

/* h2o closed the connection: it still counts (a stop waits for it) while its socket lingers. */
static void conn_close_cb(uv_handle_t *h)
{
    struct ud_http_conn *c = (struct ud_http_conn *)h;
    /* After a forced stop's sweep (which cut the lingers then open) nothing starts lingering. */
    c->linger = ud_linger_take(c->s->loop, &c->fd2, c->s->forcing, linger_done, c);
    if (c->linger == NULL)
        conn_free(c);
}

static void accept_cb(uv_stream_t *listener, int status)
{
    struct ud_http_server *s = listener->data;
    if (status != 0) {
        ud_warn(UD_HTTP_LOG, "accept: %s", uv_strerror(status));
        return;
    }
    struct ud_http_conn *c = calloc(1, sizeof *c);
    if (c == NULL)
        abort();
    c->s = s;
    c->fd2 = -1;
    c->next = s->conn_list;
    if (s->conn_list != NULL)
        s->conn_list->prev = c;
    s->conn_list = c;
    uv_tcp_init(s->loop, &c->tcp);
    if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0) {
        s->conns++;
        uv_close((uv_handle_t *)&c->tcp, conn_close_cb);
        return;
    }
    /* Small JSON answers must not wait for Nagle's timer. */
    uv_tcp_nodelay(&c->tcp, 1);
    c->fd2 = ud_linger_dup((uv_handle_t *)&c->tcp);
    s->conns++;
    h2o_socket_t *sock = h2o_uv_socket_create((uv_stream_t *)&c->tcp, conn_close_cb);
    int plain = listener != (uv_stream_t *)&s->tls_listener;
    h2o_accept(plain ? &s->accept_plain : &s->accept_tls, sock);
    /* h2o reads the plain connection now: its reads are paused without epoll_ctl from here on
     * (read_pause.c). */
    if (plain)
        ud_http_read_pause_learn((uv_stream_t *)&c->tcp);
}

static int listen_on(struct ud_http_server *s, uv_tcp_t *t, int *flag, const char *addr, int *port,
                     char *errmsg)
{
    struct sockaddr_storage ss;
    int rc = parse_addr(addr, &ss, errmsg);
    if (rc != 0)
        return rc;
    uv_tcp_init(s->loop, t);
    t->data = s;
    *flag = 1;
    int e = uv_tcp_bind(t, (const struct sockaddr *)&ss, 0);
    if (e == 0)
        e = uv_listen((uv_stream_t *)t, 1024, accept_cb);
    if (e != 0)
        return ud_errf(errmsg, UD_EIO, "http: listen on %s: %s", addr, uv_strerror(e));
    struct sockaddr_storage bound;
    int len = sizeof bound;
    uv_tcp_getsockname(t, (struct sockaddr *)&bound, &len);
    *port = ntohs(bound.ss_family == AF_INET ? ((struct sockaddr_in *)&bound)->sin_port
                                             : ((struct sockaddr_in6 *)&bound)->sin6_port);
    return 0;
}

int ud_http_server_listen(struct ud_http_server *s, int *port, int *tls_port, char *errmsg)
{
    if (!s->ctx_ready) {
        h2o_context_init(&s->ctx, s->loop, &s->config);
        s->ctx_ready = 1;
        s->accept_plain.ctx = &s->ctx;
        s->accept_plain.hosts = s->config.hosts;
        s->accept_tls = s->accept_plain;
        s->accept_tls.ssl_ctx = s->ssl;
        uv_check_init(s->loop, &s->wait_check);
        uv_timer_init(s->loop, &s->wait_timer);
        uv_timer_init(s->loop, &s->stop_timer);
        uv_timer_init(s->loop, &s->idle_timer);
        s->wait_check.data = s->wait_timer.data = s->stop_timer.data = s->idle_timer.data = s;
        uv_prepare_init(s->loop, &s->read_pause);
        uv_prepare_start(&s->read_pause, ud_http_read_pause_prepare_cb);
        uv_unref((uv_handle_t *)&s->read_pause); /* it never keeps the loop running */
    }
    int rc = listen_on(s, &s->listener, &s->listening, s->listen_addr, &s->port, errmsg);
    if (rc == 0 && s->ssl != NULL)
        rc = listen_on(s, &s->tls_listener, &s->tls_listening, s->tls_addr, &s->tls_port, errmsg);
    if (rc != 0)
        return rc;
    if (port != NULL)
        *port = s->port;
    if (tls_port != NULL)
        *tls_port = s->ssl != NULL ? s->tls_port : 0;
    ud_info(UD_HTTP_LOG, "listening on %s (port %d, HTTP/1.1 and h2c)%s", s->listen_addr, s->port,
            s->ssl != NULL ? "" : "; no TLS certificate configured");
    if (s->ssl != NULL)
        ud_info(UD_HTTP_LOG, "listening on %s (port %d, TLS with ALPN h2 and http/1.1)",
                s->tls_addr, s->tls_port);
    return 0;
}

/* --- stop ------------------------------------------------------------------------------------- */

static void handle_closed_cb(uv_handle_t *h)
{
    struct ud_http_server *s = h->data;
    if (--s->closing == 0 && s->finished) {
        void (*done)(void *) = s->done;
        s->done = NULL;
        if (done != NULL)
            done(s->done_arg);
    }
}

static void close_handle(struct ud_http_server *s, uv_handle_t *h)
{
    if (h->loop == NULL || uv_is_closing(h))
        return;
    h->data = s;
    s->closing++;
    uv_close(h, handle_closed_cb);
}

static void finish_stop(struct ud_http_server *s)
{
    if (s->finished)
        return;
    s->finished = 1;
    if (s->live > 0 || s->conns > 0)
        ud_warn(UD_HTTP_LOG,
                "stopped with %zu requests and %zu connections still open after %d ms; they end "
                "with the process",
                s->live, s->conns, STOP_GRACE_MS + STOP_FORCE_MS);
    else if (s->forcing)
        ud_info(UD_HTTP_LOG, "stopped: the connections left after the grace period were shut down");
    else
        ud_info(UD_HTTP_LOG, "stopped: every request answered, every connection closed");
    /* Every close is asynchronous: done runs from the last close callback, never from here. */
    if (s->ctx_ready) {
        close_handle(s, (uv_handle_t *)&s->wait_check);
        close_handle(s, (uv_handle_t *)&s->read_pause);
        close_handle(s, (uv_handle_t *)&s->wait_timer);
        close_handle(s, (uv_handle_t *)&s->stop_timer);
        close_handle(s, (uv_handle_t *)&s->idle_timer);
        uv_handle_t *t = ud_http_repl_timer(s);
        if (t != NULL)
            close_handle(s, t);
    }
}

static void stop_progress(struct ud_http_server *s)
{
    if (s->stopping && !s->finished && s->live == 0 && s->conns == 0)
        finish_stop(s);
}

/*
 * h2o 2.2.5 does nothing at shutdown for HTTP/1.1 connections waiting between requests (HTTP/2
 * ones get GOAWAY): an idle keep-alive connection would hold the stop until h2o's 10 s request
 * timeout, so every client with a connection pool made each SIGTERM take 10 s. A connection whose
 * current request has not begun (h2o stamps request_begin_at when the first byte of a request is
 * handled, and starts a fresh request after each response) and that holds no unread input is shut
 * down; h2o sees the end and closes it through its own path. Requests parsed before the stop may
 * still finish with keep-alive, so this runs again while the stop waits.
 */
static int shut_if_idle(h2o_req_t *req, void *arg)
{
    (void)arg;
    if (req->timestamps.request_begin_at.tv_sec != 0 || req->conn->callbacks->get_socket == NULL)
        return 0;
    h2o_socket_t *sock = req->conn->callbacks->get_socket(req->conn);
    if (sock == NULL || (sock->input != NULL && sock->input->size != 0))
        return 0;
    int fd = h2o_socket_get_fd(sock);
    if (fd >= 0)
        shutdown(fd, SHUT_RDWR);
    return 0;
}

#define STOP_IDLE_SWEEP_MS 100

static void idle_timer_cb(uv_timer_t *t)
{
    struct ud_http_server *s = t->data;
    if (s->finished)
        return;
    H2O_HTTP1_CALLBACKS.foreach_request(&s->ctx, shut_if_idle, NULL);
    uv_timer_start(&s->idle_timer, idle_timer_cb, STOP_IDLE_SWEEP_MS, 0);
}

static void stop_timer_cb(uv_timer_t *t)
{
    struct ud_http_server *s = t->data;
    if (s->forcing) {
        finish_stop(s);
        return;
    }
    /* A shut-down socket fails h2o's next read or write, and h2o then closes the connection
     * through its own path: closing the handle under h2o would not be safe. */
    s->forcing = 1;
    ud_warn(UD_HTTP_LOG,
            "stop: %zu requests and %zu connections still open after %d ms; shutting the "
            "connections down",
            s->live, s->conns, STOP_GRACE_MS);
    for (struct ud_http_conn *c = s->conn_list; c != NULL; c = c->next) {
        uv_os_fd_t fd;
        if (c->linger != NULL)
            ud_linger_cut(c->linger); /* done comes later: the list stays as it is */
        else if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0)
            shutdown(fd, SHUT_RDWR);
    }
    uv_timer_start(&s->stop_timer, stop_timer_cb, STOP_FORCE_MS, 0);
}

void ud_http_server_stop(struct ud_http_server *s, void (*done)(void *arg), void *arg)
{
    UD_ASSERT(!s->stopping);
    s->stopping = 1;
    s->done = done;
    s->done_arg = arg;
    if (!s->ctx_ready) {
        /* Never listened: nothing to wait for, but done must still come later. */
        s->finished = 1;
        uv_timer_init(s->loop, &s->stop_timer);
        close_handle(s, (uv_handle_t *)&s->stop_timer);
        return;
    }
    if (s->listening)
        close_handle(s, (uv_handle_t *)&s->listener);
    if (s->tls_listening)
        close_handle(s, (uv_handle_t *)&s->tls_listener);
    /* The stop timer is what makes done come from a later iteration even when nothing is open. */
    s->stop_timer.data = s;
    uv_timer_start(&s->stop_timer, stop_timer_cb, STOP_GRACE_MS, 0);
    h2o_context_request_shutdown(&s->ctx);
    idle_timer_cb(&s->idle_timer);
    ud_http_repl_stop(s); /* streams end, snapshots are cut, acks=isr waits are answered */
    wait_sweep(s);        /* answers every waiter: the server is stopping */
    stop_progress(s);
}

void ud_http_server_free(struct ud_http_server *s)
{
    if (s == NULL)
        return;
    if (s->ctx_ready && s->conns == 0) {
        /* The HTTP/2 shutdown re-sends GOAWAY from a timer that stays linked for a while after
         * the last connection closed; h2o asserts on linked timers at dispose. */
        if (h2o_timeout_is_linked(&s->ctx.http2._graceful_shutdown_timeout))
            h2o_timeout_unlink(&s->ctx.http2._graceful_shutdown_timeout);
        h2o_context_dispose(&s->ctx);
    }
    ud_http_repl_free(s);
    h2o_config_dispose(&s->config);
    if (s->ssl != NULL)
        SSL_CTX_free(s->ssl);
    free(s->listen_addr);
    free(s->tls_addr);
    free(s->tls_cert);
    free(s->tls_key);
    free(s);
}

void ud_http_server_unref(struct ud_http_server *s)
{
    UD_ASSERT(s->live > 0);
    s->live--;
    stop_progress(s);
}

void ud_http_server_ns_closing(struct ud_http_server *s, const char *ns)
{
    if (s == NULL)
        return;
    ud_http_streams_close_ns(s, ns);
    ud_http_repl_close_ns(s, ns);
    size_t n = sizeof s->closing_ns / sizeof s->closing_ns[0], free_slot = n;
    for (size_t i = 0; i < n; i++) {
        if (s->closing_ns[i].count > 0 && strcmp(s->closing_ns[i].name, ns) == 0) {
            s->closing_ns[i].count++;
            return;
        }
        if (s->closing_ns[i].count == 0 && free_slot == n)
            free_slot = i;
    }
    /* More concurrent deletes than slots: their streams were cut above; a download starting in
     * the window before the apply would be the only thing left unguarded. */
    if (free_slot < n) {
        snprintf(s->closing_ns[free_slot].name, sizeof s->closing_ns[free_slot].name, "%s", ns);
        s->closing_ns[free_slot].count = 1;
    }
}

void ud_http_server_ns_closed(struct ud_http_server *s, const char *ns)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < sizeof s->closing_ns / sizeof s->closing_ns[0]; i++)
        if (s->closing_ns[i].count > 0 && strcmp(s->closing_ns[i].name, ns) == 0)
            s->closing_ns[i].count--;
}

int ud_http_server_ns_is_closing(struct ud_http_server *s, const char *ns)
{
    for (size_t i = 0; i < sizeof s->closing_ns / sizeof s->closing_ns[0]; i++)
        if (s->closing_ns[i].count > 0 && strcmp(s->closing_ns[i].name, ns) == 0)
            return 1;
    return 0;
}

/* --- request objects -------------------------------------------------------------------------- */

static void on_req_dispose(void *p)
{
    struct ud_http_req_token *t = p;
    if (t->r != NULL) {
        t->r->h = NULL;
        t->r->token = NULL;
    }
}

static void untoken(struct ud_http_req *r)
{
    if (r->token != NULL) {
        r->token->r = NULL;
        r->token = NULL;
    }
}

void ud_http_req_finish(struct ud_http_req *r)
{
    struct ud_http_server *s = r->server;
    untoken(r);
    if (!r->taken)
        ud_http_metrics_observe(&s->metrics, r->metrics, r->h != NULL ? r->status : 499,
                                ud_mono_ns() - r->start_ns);
    if (r->ns != NULL)
        ud_registry_release(s->opts.registry, r->ns);
    free(r);
    ud_http_server_unref(s);
}

h2o_req_t *ud_http_req_take(struct ud_http_req *r)
{
    UD_ASSERT(!r->replied && r->h != NULL);
    h2o_req_t *h = r->h;
    untoken(r);
    r->h = NULL;
    r->taken = 1;
    r->replied = 1;
    r->server->live++; /* the stream's own count; finishing r drops r's */
    if (!r->in_handler)
        ud_http_req_finish(r);
    return h;
}

struct ud_http_server *ud_http_req_server(struct ud_http_req *r)
{
    return r->server;
}

unsigned ud_http_req_method(const struct ud_http_req *r)
{
    return r->method;
}

const char *ud_http_req_ns_name(const struct ud_http_req *r)
{
    return r->ns_name;
}

struct ud_ns *ud_http_req_ns(const struct ud_http_req *r)
{
    return r->ns;
}

const uint8_t *ud_http_req_key(const struct ud_http_req *r, size_t *len)
{
    *len = r->key_len;
    return r->key;
}

int ud_http_req_param(const struct ud_http_req *r, const char *name, const char **raw, size_t *len)
{
    return ud_http_param(&r->params, name, raw, len);
}

const uint8_t *ud_http_req_body(const struct ud_http_req *r, size_t *len)
{
    *len = r->body_len;
    return r->body;
}

const char *ud_http_req_query(const struct ud_http_req *r, size_t *len)
{
    *len = r->query_len;
    return r->query;
}

const char *ud_http_req_header(const struct ud_http_req *r, const char *name, size_t *len)
{
    if (r->h == NULL)
        return NULL;
    ssize_t i = h2o_find_header_by_str(&r->h->headers, name, strlen(name), -1);
    if (i < 0)
        return NULL;
    *len = r->h->headers.entries[i].value.len;
    return r->h->headers.entries[i].value.base;
}

int ud_http_req_header_lines(const struct ud_http_req *r, const char *name)
{
    if (r->h == NULL)
        return 0;
    int n = 0;
    for (ssize_t i = -1; (i = h2o_find_header_by_str(&r->h->headers, name, strlen(name), i)) >= 0;)
        n++;
    return n;
}

char *ud_http_req_header_line(const struct ud_http_req *r, const char *name)
{
    size_t len;
    const char *v = ud_http_req_header(r, name, &len);
    if (v == NULL)
        return NULL;
    size_t nl = strlen(name);
    char *line = malloc(nl + 2 + len + 1);
    if (line == NULL)
        abort(); /* network glue: as the HTTP server's own allocations */
    memcpy(line, name, nl);
    memcpy(line + nl, ": ", 2);
    memcpy(line + nl + 2, v, len);
    line[nl + 2 + len] = '\0';
    return line;
}

int ud_http_req_marked(const struct ud_http_req *r)
{
    return r->marked;
}

int ud_http_req_gone(const struct ud_http_req *r)
{
    return r->h == NULL;
}

void ud_http_req_wrote(struct ud_http_req *r, uint64_t lsn)
{
    if (lsn > r->wrote_lsn)
        r->wrote_lsn = lsn;
}

unsigned ud_http_req_route_flags(const struct ud_http_req *r)
{
    return r->route != NULL ? r->route->r.flags : 0;
}

const char *ud_http_req_route_name(const struct ud_http_req *r)
{
    return r->route != NULL ? r->route->r.name : "";
}

const char *ud_http_req_path(const struct ud_http_req *r, size_t *len)
{
    *len = r->path_len;
    return r->path;
}

/* --- replies ---------------------------------------------------------------------------------- */

void ud_http_set_header(struct ud_http_req *r, const char *name, const char *value)
{
    if (r->h == NULL)
        return;
    size_t nl = strlen(name), vl = strlen(value);
    h2o_iovec_t n = h2o_strdup(&r->h->pool, name, nl);
    h2o_iovec_t v = h2o_strdup(&r->h->pool, value, vl);
    h2o_add_header_by_str(&r->h->pool, &r->h->res.headers, n.base, n.len, 1, NULL, v.base, v.len);
}

void ud_http_reply_ns_not_found(struct ud_http_req *r)
{
    const struct ud_http_node *node = &r->server->opts.node;
    uint64_t deleted = node->ns_deleted != NULL ? node->ns_deleted(node->arg, r->ns_name) : 0;
    if (deleted != 0)
        ud_http_set_header(r, "x-unison-ns-deleted", "1");
    if (deleted != 0 && deleted != UINT64_MAX) {
        char at[24];
        snprintf(at, sizeof at, "%" PRIu64, deleted);
        ud_http_set_header(r, "x-unison-ns-deleted-at", at);
    }
    ud_http_reply_error(r, 404, "namespace not found: %s", r->ns_name);
}

static void done_replying(struct ud_http_req *r)
{
    r->replied = 1;
    if (!r->in_handler)
        ud_http_req_finish(r);
}

/* Answers with body (len bytes), announcing content_length: len, except for HEAD, where no body
 * is sent (h2o_send_inline leaves it out) and the length is what GET would have sent. */
static void reply_inline(struct ud_http_req *r, int status, const char *content_type,
                         const void *body, size_t len, uint64_t content_length)
{
    UD_ASSERT(!r->replied);
    /* acks=isr: a successful write is answered once followers applied it (repl.c). */
    if (r->acks_isr && r->wrote_lsn != 0 && status >= 200 && status < 300 && r->h != NULL &&
        ud_http_repl_defer_reply(r, status, content_type, body, len))
        return;
    r->status = status;
    h2o_req_t *h = r->h;
    struct ud_http_node *node = &r->server->opts.node;
    if (h != NULL && node->on_reply != NULL)
        node->on_reply(node->arg, r);
    if (h != NULL) {
        untoken(r); /* the send may dispose the request: forget it first */
        h->res.status = status;
        h->res.reason = ud_http_reason(status);
        h->res.content_length = content_length;
        h2o_add_header(&h->pool, &h->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, content_type,
                       strlen(content_type));
        h2o_send_inline(h, body, len);
    }
    done_replying(r);
}

void ud_http_reply(struct ud_http_req *r, int status, const char *content_type, const void *body,
                   size_t len)
{
    reply_inline(r, status, content_type, body, len, len);
}

void ud_http_reply_head(struct ud_http_req *r, int status, const char *content_type,
                        uint64_t length)
{
    UD_ASSERT(r->method == UD_HTTP_HEAD);
    reply_inline(r, status, content_type, "", 0, length);
}

void ud_http_reply_json(struct ud_http_req *r, int status, struct ud_jbuf *j)
{
    if (j->err != 0) {
        ud_jbuf_free(j);
        ud_http_reply_error(r, 500, "out of memory building the response");
        return;
    }
    ud_jbuf_raw(j, "\n", 1);
    ud_http_reply(r, status, "application/json", j->p, j->len);
    ud_jbuf_free(j);
}

void ud_http_reply_error(struct ud_http_req *r, int status, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    struct ud_jbuf j;
    ud_jbuf_init(&j);
    ud_jbuf_lit(&j, "{\"error\":");
    ud_jbuf_str(&j, msg, strlen(msg));
    ud_jbuf_lit(&j, "}");
    if (j.err != 0) {
        ud_jbuf_free(&j);
        static const char oom[] = "{\"error\":\"out of memory\"}\n";
        ud_http_reply(r, 500, "application/json", oom, sizeof oom - 1);
        return;
    }
    ud_http_reply_json(r, status, &j);
}

void ud_http_reply_code(struct ud_http_req *r, int code, const char *errmsg)
{
    int status = ud_http_status_for(code);
    /* A write in doubt gets no Retry-After: sent again without the Idempotency-Key of its first
     * attempt it may apply twice (docs/http-api.md "Outcome unknown"). */
    if (code == UD_EINDOUBT)
        ud_http_set_header(r, UD_HTTP_OUTCOME, "unknown");
    else if (status == 503)
        ud_http_set_header(r, "retry-after", "1");
    const char *msg = errmsg != NULL && errmsg[0] != '\0' ? errmsg : ud_strerror(code);
    /* A full disk is named as such whatever layer reported it (docs/http-api.md). */
    if (code == UD_ENOSPC && strstr(msg, "space") == NULL && strstr(msg, "disk full") == NULL)
        ud_http_reply_error(r, status, "disk full: %s", msg);
    else
        ud_http_reply_error(r, status, "%s", msg);
}

/* --- dispatch --------------------------------------------------------------------------------- */

static unsigned method_of(h2o_iovec_t m)
{
    if (h2o_memis(m.base, m.len, H2O_STRLIT("GET")))
        return UD_HTTP_GET;
    if (h2o_memis(m.base, m.len, H2O_STRLIT("PUT")))
        return UD_HTTP_PUT;
    if (h2o_memis(m.base, m.len, H2O_STRLIT("POST")))
        return UD_HTTP_POST;
    if (h2o_memis(m.base, m.len, H2O_STRLIT("DELETE")))
        return UD_HTTP_DELETE;
    if (h2o_memis(m.base, m.len, H2O_STRLIT("HEAD")))
        return UD_HTTP_HEAD;
    return UD_HTTP_OTHER;
}

static void allow_header(struct ud_http_req *r, unsigned methods)
{
    static const struct {
        unsigned bit;
        const char *name;
    } names[] = {{UD_HTTP_GET, "GET"},
                 {UD_HTTP_PUT, "PUT"},
                 {UD_HTTP_POST, "POST"},
                 {UD_HTTP_DELETE, "DELETE"},
                 {UD_HTTP_HEAD, "HEAD"}};
    char v[64] = "";
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (methods & names[i].bit) {
            if (v[0] != '\0')
                strcat(v, ", ");
            strcat(v, names[i].name);
        }
    }
    ud_http_set_header(r, "allow", v);
}

static uint64_t applied_lsn(struct ud_ns *ns)
{
    struct ud_ns_stats st;
    ud_ns_stats(ns, &st);
    return st.last_lsn;
}

/* Runs the route's handler with its namespace acquired (r->ns set by the caller if needed). */
static void run_handler(struct ud_http_req *r)
{
    struct ud_http_server *s = r->server;
    r->in_handler = 1;
    r->route->r.fn(r, r->route->r.arg);
    r->in_handler = 0;
    if (r->ns != NULL) {
        ud_registry_release(s->opts.registry, r->ns);
        r->ns = NULL;
    }
    /* Body and path views are h2o's and only promised during the synchronous part. */
    r->body = NULL;
    r->body_len = 0;
    if (r->replied)
        ud_http_req_finish(r);
}

static void wait_unlink(struct ud_http_req *r)
{
    struct ud_http_server *s = r->server;
    if (r->wait_prev != NULL)
        r->wait_prev->wait_next = r->wait_next;
    else
        s->waiters = r->wait_next;
    if (r->wait_next != NULL)
        r->wait_next->wait_prev = r->wait_prev;
    r->wait_prev = r->wait_next = NULL;
    r->waiting = 0;
}

static void wait_timer_cb(uv_timer_t *t)
{
    wait_sweep(t->data);
}

static void wait_check_cb(uv_check_t *c)
{
    wait_sweep(c->data);
}

/* Answers or runs every waiter whose LSN was applied, whose deadline passed or whose client left;
 * then arms the timer for the earliest remaining deadline. */
static void wait_sweep(struct ud_http_server *s)
{
    uint64_t now = uv_now(s->loop);
    uint64_t earliest = UINT64_MAX;
    struct ud_http_req *r = s->waiters;
    while (r != NULL) {
        struct ud_http_req *next = r->wait_next;
        if (r->h == NULL) {
            wait_unlink(r);
            ud_http_req_finish(r);
            r = next;
            continue;
        }
        if (s->stopping) {
            wait_unlink(r);
            ud_http_reply_error(r, 503, "the server is shutting down");
            r = next;
            continue;
        }
        struct ud_ns *ns = NULL;
        int rc = ud_registry_acquire(s->opts.registry, r->ns_name, &ns);
        if (rc != 0) {
            wait_unlink(r);
            ud_http_reply_ns_not_found(r);
        } else {
            uint64_t applied = applied_lsn(ns);
            if (applied >= r->min_lsn) {
                wait_unlink(r);
                r->ns = ns;
                run_handler(r);
                ns = NULL;
            } else if (now >= r->deadline_ms) {
                wait_unlink(r);
                ud_http_set_header(r, "retry-after", "1");
                ud_http_reply_error(r, 503,
                                    "namespace %s has applied LSN %llu; min_lsn %llu was not "
                                    "reached within %llu ms",
                                    r->ns_name, (unsigned long long)applied,
                                    (unsigned long long)r->min_lsn, (unsigned long long)r->wait_ms);
            } else if (r->deadline_ms < earliest) {
                earliest = r->deadline_ms;
            }
            if (ns != NULL)
                ud_registry_release(s->opts.registry, ns);
        }
        r = next;
    }
    if (s->waiters == NULL) {
        if (s->wait_active) {
            uv_check_stop(&s->wait_check);
            uv_timer_stop(&s->wait_timer);
            s->wait_active = 0;
        }
        return;
    }
    if (!s->wait_active) {
        uv_check_start(&s->wait_check, wait_check_cb);
        s->wait_active = 1;
    }
    uv_timer_start(&s->wait_timer, wait_timer_cb, earliest > now ? earliest - now : 0, 0);
}

/* Sets up ?min_lsn=: 1 when r was parked (or answered), 0 to run now. */
static int maybe_wait(struct ud_http_req *r)
{
    struct ud_http_server *s = r->server;
    char errmsg[UD_ERRMSG_SIZE];
    uint64_t min_lsn;
    int rc = ud_http_query_u64(r->query, r->query_len, "min_lsn", 0, UINT64_MAX, &min_lsn, errmsg);
    if (rc == UD_ENOTFOUND)
        return 0;
    if (rc != 0) {
        ud_http_reply_error(r, 400, "%s", errmsg);
        return 1;
    }
    /* timeout_ms is checked whether or not the read has to wait, so that a bad value is a 400
     * every time, not only once the node lags. */
    uint64_t timeout = s->opts.min_lsn_timeout_ms, t;
    rc = ud_http_query_u64(r->query, r->query_len, "timeout_ms", 0, s->opts.min_lsn_timeout_ms, &t,
                           errmsg);
    if (rc == 0) {
        timeout = t;
    } else if (rc != UD_ENOTFOUND) {
        ud_http_reply_error(r, 400, "%s", errmsg);
        return 1;
    }
    if (applied_lsn(r->ns) >= min_lsn)
        return 0;
    /* The namespace is not held while waiting: a delete must not wait for readers. The body and
     * path views stay valid: the request is still in h2o's hands. */
    ud_registry_release(s->opts.registry, r->ns);
    r->ns = NULL;
    r->min_lsn = min_lsn;
    r->deadline_ms = uv_now(s->loop) + timeout;
    r->wait_ms = timeout;
    r->waiting = 1;
    r->wait_next = s->waiters;
    r->wait_prev = NULL;
    if (s->waiters != NULL)
        s->waiters->wait_prev = r;
    s->waiters = r;
    wait_sweep(s);
    return 1;
}

/* Finds the route: 0 with *out, or the HTTP status to answer (404 no path, 405 other methods). */
static int route_find(struct ud_http_server *s, struct ud_http_req *r,
                      const struct ud_http_route_entry **out, unsigned *allowed)
{
    *allowed = 0;
    for (size_t i = 0; i < s->nroutes; i++) {
        const struct ud_http_route_entry *e = &s->routes[i];
        struct ud_http_params p;
        if (!ud_http_route_match(e->r.pattern, r->path, r->path_len, &p))
            continue;
        unsigned methods = e->r.methods;
        if ((methods & UD_HTTP_GET) && !(e->r.flags & UD_HTTP_ROUTE_NO_HEAD))
            methods |= UD_HTTP_HEAD;
        if ((methods & r->method) == 0) {
            *allowed |= methods;
            continue;
        }
        r->params = p;
        *out = e;
        return 0;
    }
    return *allowed != 0 ? 405 : 404;
}

/* Whether a header is given on more than one line. */
static int repeated(const h2o_headers_t *hs, const char *name)
{
    ssize_t i = h2o_find_header_by_str(hs, name, strlen(name), -1);
    return i >= 0 && h2o_find_header_by_str(hs, name, strlen(name), i) >= 0;
}

/* A precondition on a write that the route does not evaluate, an Idempotency-Key on a write
 * route that ignores it, or a write's If-Match or Idempotency-Key given twice (only one line
 * would be read: the other value would be ignored, where the client counts on it): 0, or
 * answered 400 (see UD_HTTP_ROUTE_IF_MATCH and UD_HTTP_ROUTE_IDEMPOTENCY_KEY). */
static int precondition_refused(struct ud_http_req *r)
{
    if (!(r->method & (UD_HTTP_PUT | UD_HTTP_POST | UD_HTTP_DELETE)))
        return 0;
    const h2o_headers_t *hs = &r->h->headers;
    static const struct {
        const char *lower, *name;
    } single[] = {{"if-match", "If-Match"}, {"idempotency-key", "Idempotency-Key"}};
    for (size_t i = 0; i < sizeof single / sizeof single[0]; i++) {
        if (repeated(hs, single[i].lower)) {
            ud_http_reply_error(r, 400, "%s is given more than once: send one %s line",
                                single[i].name, single[i].name);
            return 1;
        }
    }
    const char *name = NULL;
    if (!(r->route->r.flags & UD_HTTP_ROUTE_IF_MATCH) &&
        h2o_find_header(hs, H2O_TOKEN_IF_MATCH, -1) >= 0)
        name = "If-Match";
    else if (h2o_find_header(hs, H2O_TOKEN_IF_NONE_MATCH, -1) >= 0)
        name = "If-None-Match";
    else if (h2o_find_header(hs, H2O_TOKEN_IF_UNMODIFIED_SINCE, -1) >= 0)
        name = "If-Unmodified-Since";
    if (name == NULL && !(r->route->r.flags & UD_HTTP_ROUTE_IDEMPOTENCY_KEY) &&
        h2o_find_header_by_str(hs, "idempotency-key", 15, -1) >= 0) {
        ud_http_reply_error(r, 400,
                            "Idempotency-Key is not supported on %.*s %.*s: this route does not "
                            "take one; send it without the header",
                            (int)r->h->method.len, r->h->method.base,
                            (int)(r->path_len > 300 ? 300 : r->path_len), r->path);
        return 1;
    }
    if (name == NULL)
        return 0;
    ud_http_reply_error(r, 400,
                        "%s is not supported on %.*s %.*s: conditional writes are PUT and DELETE "
                        "kv/{key} with If-Match (an LSN, 0 for a key that must not exist, or *)",
                        name, (int)r->h->method.len, r->h->method.base,
                        (int)(r->path_len > 300 ? 300 : r->path_len), r->path);
    return 1;
}

/* Decodes {ns} and {key} and acquires the namespace: 0, or answered. */
static int prepare(struct ud_http_req *r)
{
    struct ud_http_server *s = r->server;
    unsigned flags = r->route->r.flags;
    char errmsg[UD_ERRMSG_SIZE];
    const char *raw;
    size_t len;
    if (ud_http_param(&r->params, "ns", &raw, &len)) {
        size_t n = 0;
        uint8_t name[UD_NS_NAME_MAX + 1];
        if (len > 3 * UD_NS_NAME_MAX || ud_http_pct_decode(raw, len, r->keybuf, &n, errmsg) != 0 ||
            n > UD_NS_NAME_MAX) {
            /* Not a name any namespace can have. */
            snprintf(r->ns_name, sizeof r->ns_name, "%.*s", (int)(len > 64 ? 64 : len), raw);
            ud_http_reply_error(r, (flags & UD_HTTP_ROUTE_NS) ? 404 : 400, "%snamespace name: %.*s",
                                (flags & UD_HTTP_ROUTE_NS) ? "namespace not found: invalid "
                                                           : "invalid ",
                                (int)(len > 200 ? 200 : len), raw);
            return 1;
        }
        memcpy(name, r->keybuf, n);
        name[n] = '\0';
        if (memchr(name, '\0', n) != NULL) {
            ud_http_reply_error(r, (flags & UD_HTTP_ROUTE_NS) ? 404 : 400,
                                "invalid namespace name: it contains a NUL byte");
            return 1;
        }
        memcpy(r->ns_name, name, n + 1);
        if (flags & UD_HTTP_ROUTE_NS) {
            int rc = ud_registry_acquire(s->opts.registry, r->ns_name, &r->ns);
            if (rc != 0) {
                r->ns = NULL;
                ud_http_reply_ns_not_found(r);
                return 1;
            }
        }
    }
    if ((flags & UD_HTTP_ROUTE_KEY) && ud_http_param(&r->params, "key", &raw, &len)) {
        if (ud_http_pct_decode(raw, len, r->keybuf, &r->key_len, errmsg) != 0) {
            ud_http_reply_error(r, 400, "key in the path: %s", errmsg);
            return 1;
        }
        if (r->key_len == 0) {
            ud_http_reply_error(r, 400, "the key is empty: keys are 1 or more bytes");
            return 1;
        }
        r->key = r->keybuf;
    }
    return 0;
}

static int on_req(h2o_handler_t *self, h2o_req_t *h)
{
    struct ud_http_server *s = ((struct handler *)self)->s;
    uint64_t t0 = ud_mono_ns();
    h2o_iovec_t path = h->input.path;
    size_t qat = h->input.query_at;
    size_t plen = qat != SIZE_MAX && qat < path.len ? qat : path.len;

    struct ud_http_req *r = calloc(1, sizeof *r + plen + 1);
    if (r == NULL)
        abort();
    r->server = s;
    r->h = h;
    r->start_ns = t0;
    r->metrics = s->unmatched_metrics;
    r->method = method_of(h->input.method);
    r->path = path.base;
    r->path_len = plen;
    if (plen < path.len) {
        r->query = path.base + plen + 1;
        r->query_len = path.len - plen - 1;
    }
    r->body = (const uint8_t *)h->entity.base;
    r->body_len = h->entity.base != NULL ? h->entity.len : 0;
    r->token = h2o_mem_alloc_shared(&h->pool, sizeof *r->token, on_req_dispose);
    r->token->r = r;
    const char *mark = s->opts.node.mark_header;
    r->marked = mark != NULL && h2o_find_header_by_str(&h->headers, mark, strlen(mark), -1) >= 0;
    s->live++;

    if (s->stopping) {
        h->http1_is_persistent = 0;
        ud_http_set_header(r, "retry-after", "1");
        ud_http_reply_error(r, 503, "the server is shutting down");
        return 0;
    }
    unsigned allowed;
    int status = route_find(s, r, &r->route, &allowed);
    if (status != 0) {
        if (status == 405) {
            allow_header(r, allowed);
            ud_http_reply_error(r, 405, "method %.*s is not allowed on %.*s",
                                (int)h->input.method.len, h->input.method.base,
                                (int)(plen > 300 ? 300 : plen), path.base);
        } else {
            ud_http_reply_error(r, 404, "no route for %.*s %.*s", (int)h->input.method.len,
                                h->input.method.base, (int)(plen > 300 ? 300 : plen), path.base);
        }
        return 0;
    }
    r->metrics = r->route->metrics;
    char errmsg[UD_ERRMSG_SIZE];
    if (ud_http_body_check(r->body_len, s->opts.max_body, errmsg) != 0) {
        ud_http_reply_error(r, 413, "%s", errmsg);
        return 0;
    }
    if (precondition_refused(r))
        return 0;
    struct ud_http_node *node = &s->opts.node;
    if (node->intercept != NULL && node->intercept(node->arg, r))
        return 0;
    ud_http_req_resume(r);
    return 0;
}

void ud_http_req_resume(struct ud_http_req *r)
{
    struct ud_http_server *s = r->server;
    char errmsg[UD_ERRMSG_SIZE];
    if (r->h == NULL) {
        ud_http_req_finish(r);
        return;
    }
    if (prepare(r) != 0)
        return;
    if ((r->route->r.flags & UD_HTTP_ROUTE_ACKS) && r->query_len > 0) {
        uint8_t acks[16];
        size_t al = 0;
        int rc =
            ud_http_query_get(r->query, r->query_len, "acks", acks, sizeof acks - 1, &al, errmsg);
        if (rc == 0) {
            acks[al] = '\0';
            if (strcmp((char *)acks, "isr") == 0 && s->repl != NULL) {
                r->acks_isr = 1;
            } else if (strcmp((char *)acks, "leader") != 0) {
                ud_http_reply_error(r, 400,
                                    "query parameter acks must be \"isr\" (wait for in-sync "
                                    "followers) or \"leader\"%s",
                                    s->repl == NULL ? "; this node serves no followers" : "");
                return;
            }
        } else if (rc != UD_ENOTFOUND) {
            ud_http_reply_error(r, 400, "query parameter acks must be \"isr\" or \"leader\"");
            return;
        }
    }
    if ((r->route->r.flags & UD_HTTP_ROUTE_MIN_LSN) && r->ns != NULL && maybe_wait(r))
        return;
    run_handler(r);
}
