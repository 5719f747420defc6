/* HTTP client: libcurl multi on the libuv loop (core/http_client.h). */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "core/err.h"
#include "core/http_client.h"

#define DEFAULT_COLLECT_MAX (1u << 20)
#define MAX_HEADER_BYTES    (32u << 10)

struct ud_http_client {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;     /* curl's timeout */
    uv_timer_t ops_timer; /* deferred resumes and cancels, run outside curl's callbacks */
    int in_curl;          /* > 0 while inside curl (its callbacks must not re-enter it) */
    int closing;
    int handles_open;
    size_t active;
    struct ud_http_transfer *transfers; /* every transfer added to the multi handle */
    void (*close_done)(void *arg);
    void *close_arg;
};

struct ud_http_transfer {
    struct ud_http_client *c;
    struct ud_http_transfer *prev, *next;
    CURL *easy;
    struct curl_slist *hdrs;
    char *url;
    const char *method_name;
    struct ud_http_request req; /* callbacks and limits; strings not used after start */
    char errbuf[CURL_ERROR_SIZE];
    long status;
    int headers_done;
    int cancelled;
    int paused;
    int resume_pending;
    int request_started; /* curl's pre-request callback ran: some of the request may have left */
    int resend_refused;  /* req.send_once: curl's re-send on a fresh connection was stopped */
    int aborted_by_data; /* on_data's own code */
    int abort_rc;
    int fd;          /* file_path target, -1 when none */
    char *file_path; /* copy, for messages */
    int file_errno;
    uint64_t bytes;
    uint8_t *body; /* collected body */
    size_t body_len, body_cap, body_max;
    int body_over;
    char *head; /* response header lines of the final response */
    size_t head_len;
};

/* One socket curl asked us to watch. */
struct sock_ctx {
    uv_poll_t poll;
    curl_socket_t fd;
    struct ud_http_client *c;
};

static void run_deferred(struct ud_http_client *c);
static void maybe_finish_close(struct ud_http_client *c);

/* --- the multi handle on the loop ------------------------------------------------------------- */

static void free_transfer(struct ud_http_transfer *t)
{
    if (t->fd >= 0)
        close(t->fd);
    curl_slist_free_all(t->hdrs);
    free(t->url);
    free(t->file_path);
    free(t->body);
    free(t->head);
    free(t);
}

static void unlink_transfer(struct ud_http_transfer *t)
{
    struct ud_http_client *c = t->c;
    if (t->prev != NULL)
        t->prev->next = t->next;
    else
        c->transfers = t->next;
    if (t->next != NULL)
        t->next->prev = t->prev;
    t->prev = t->next = NULL;
    curl_multi_remove_handle(c->multi, t->easy);
    curl_easy_cleanup(t->easy);
    t->easy = NULL;
}

static int translate_curl(CURLcode code)
{
    switch (code) {
    case CURLE_OPERATION_TIMEDOUT:
        return UD_ETIMEDOUT;
    case CURLE_PARTIAL_FILE:
        return UD_ETRUNCATED;
    case CURLE_OUT_OF_MEMORY:
        return UD_ENOMEM;
    default:
        return UD_EIO;
    }
}

static void finish_transfer(struct ud_http_transfer *t, CURLcode code)
{
    struct ud_http_client *c = t->c;
    char errmsg[UD_ERRMSG_SIZE + CURL_ERROR_SIZE];
    struct ud_http_result res;
    memset(&res, 0, sizeof res);
    long version = 0;
    curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &res.status);
    curl_easy_getinfo(t->easy, CURLINFO_HTTP_VERSION, &version);
    res.http_version = version == CURL_HTTP_VERSION_2_0 ? 2 : 1;
    res.bytes = t->bytes;
    errmsg[0] = '\0';
    if (t->aborted_by_data) {
        res.rc = t->abort_rc;
        snprintf(errmsg, sizeof errmsg, "%s %s: aborted by the receiver (%s)", t->method_name,
                 t->url, ud_strerror(t->abort_rc));
    } else if (t->file_errno != 0) {
        res.rc = ud_err_from_errno(t->file_errno);
        snprintf(errmsg, sizeof errmsg, "%s %s: write %s: %s", t->method_name, t->url, t->file_path,
                 strerror(t->file_errno));
    } else if (t->body_over) {
        res.rc = UD_ELIMIT;
        snprintf(errmsg, sizeof errmsg, "%s %s: response body over %zu bytes", t->method_name,
                 t->url, t->body_max);
    } else if (code == CURLE_WRITE_ERROR && t->abort_rc == UD_ECLOSED) {
        res.rc = UD_ECLOSED;
        snprintf(errmsg, sizeof errmsg, "%s %s: aborted after the response headers (status %ld)",
                 t->method_name, t->url, res.status);
    } else if (t->resend_refused) {
        res.rc = UD_EIO;
        snprintf(errmsg, sizeof errmsg,
                 "%s %s: the connection closed without an answer after the request was sent; "
                 "not sent again (the server may have acted on it)",
                 t->method_name, t->url);
    } else if (code != CURLE_OK) {
        res.rc = translate_curl(code);
        /* Not the error code: when a kept-alive connection dies before any answer, curl sends
         * the request again on a fresh connection, and a refused connect then reports
         * CURLE_COULDNT_CONNECT for a request the server already read. */
        res.unsent = !t->request_started;
        snprintf(errmsg, sizeof errmsg, "%s %s: %s", t->method_name, t->url,
                 t->errbuf[0] != '\0' ? t->errbuf : curl_easy_strerror(code));
    }
    res.errmsg = errmsg;
    res.body = t->body;
    res.body_len = t->body_len;
    unlink_transfer(t);
    c->active--;
    if (t->req.on_done != NULL)
        t->req.on_done(t->req.arg, &res);
    free_transfer(t);
}

/* Hands finished transfers to their owners. Runs outside curl's callbacks. */
static void check_done(struct ud_http_client *c)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(c->multi, &left)) != NULL) {
        if (m->msg != CURLMSG_DONE)
            continue;
        struct ud_http_transfer *t = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&t);
        CURLcode code = m->data.result;
        if (t->cancelled) {
            unlink_transfer(t);
            free_transfer(t);
            continue;
        }
        finish_transfer(t, code);
    }
}

static void socket_action(struct ud_http_client *c, curl_socket_t fd, int events)
{
    int running;
    c->in_curl++;
    curl_multi_socket_action(c->multi, fd, events, &running);
    c->in_curl--;
    check_done(c);
    run_deferred(c);
}

static void poll_cb(uv_poll_t *p, int status, int events)
{
    struct sock_ctx *s = p->data;
    int flags = 0;
    if (status < 0)
        flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE)
        flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
        flags |= CURL_CSELECT_OUT;
    socket_action(s->c, s->fd, flags);
}

static void sock_closed_cb(uv_handle_t *h)
{
    struct sock_ctx *s = h->data;
    struct ud_http_client *c = s->c;
    free(s);
    c->handles_open--;
    maybe_finish_close(c);
}

static int socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    (void)easy;
    struct ud_http_client *c = userp;
    struct sock_ctx *s = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (s != NULL) {
            uv_poll_stop(&s->poll);
            uv_close((uv_handle_t *)&s->poll, sock_closed_cb);
            curl_multi_assign(c->multi, fd, NULL);
        }
        return 0;
    }
    if (s == NULL) {
        s = calloc(1, sizeof *s);
        if (s == NULL)
            return -1;
        s->fd = fd;
        s->c = c;
        if (uv_poll_init_socket(c->loop, &s->poll, fd) != 0) {
            free(s);
            return -1;
        }
        s->poll.data = s;
        c->handles_open++;
        curl_multi_assign(c->multi, fd, s);
    }
    int events = 0;
    if (what & CURL_POLL_IN)
        events |= UV_READABLE;
    if (what & CURL_POLL_OUT)
        events |= UV_WRITABLE;
    uv_poll_start(&s->poll, events, poll_cb);
    return 0;
}

static void timer_cb(uv_timer_t *t)
{
    socket_action(t->data, CURL_SOCKET_TIMEOUT, 0);
}

/* curl's timer function: never calls back into curl (curl's documented rule). */
static int timer_func(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    struct ud_http_client *c = userp;
    if (timeout_ms < 0)
        uv_timer_stop(&c->timer);
    else
        uv_timer_start(&c->timer, timer_cb, (uint64_t)timeout_ms, 0);
    return 0;
}

/* Resumes and cancels asked for inside curl's callbacks (or resumes asked for anywhere: a
 * resume delivers buffered bytes synchronously, which the caller must not see re-entrantly). */
static void run_deferred(struct ud_http_client *c)
{
    if (c->in_curl > 0)
        return;
    struct ud_http_transfer *t = c->transfers;
    while (t != NULL) {
        struct ud_http_transfer *next = t->next;
        if (t->cancelled) {
            unlink_transfer(t);
            free_transfer(t);
        }
        t = next;
    }
}

static void ops_timer_cb(uv_timer_t *timer)
{
    struct ud_http_client *c = timer->data;
    for (struct ud_http_transfer *t = c->transfers; t != NULL; t = t->next) {
        if (t->cancelled || !t->resume_pending)
            continue;
        t->resume_pending = 0;
        t->paused = 0;
        c->in_curl++;
        curl_easy_pause(t->easy, CURLPAUSE_CONT);
        c->in_curl--;
    }
    /* curl_easy_pause may have delivered data or ended transfers: let the multi handle move. */
    socket_action(c, CURL_SOCKET_TIMEOUT, 0);
}

/* --- per-transfer curl callbacks ----------------------------------------------------------------
 */

/* Runs once a connection is ready, just before curl sends the request on it, and again before
 * each re-send on a fresh connection (curl's own, when a kept-alive connection dies before any
 * answer): a request sent at most once stops there. */
static int prereq_cb(void *userp, char *primary_ip, char *local_ip, int primary_port,
                     int local_port)
{
    (void)primary_ip;
    (void)local_ip;
    (void)primary_port;
    (void)local_port;
    struct ud_http_transfer *t = userp;
    if (t->request_started && t->req.send_once) {
        t->resend_refused = 1;
        return CURL_PREREQFUNC_ABORT;
    }
    t->request_started = 1;
    return CURL_PREREQFUNC_OK;
}

static size_t header_cb(char *data, size_t size, size_t n, void *userp)
{
    struct ud_http_transfer *t = userp;
    size_t len = size * n;
    if (t->cancelled)
        return 0;
    if (len >= 5 && memcmp(data, "HTTP/", 5) == 0) {
        t->head_len = 0; /* a new response (after 100 Continue or a redirect) */
        t->headers_done = 0;
    }
    if (len <= 2 && (len == 0 || data[0] == '\r' || data[0] == '\n')) {
        long status = 0;
        curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
        if (status >= 200 && !t->headers_done) {
            t->headers_done = 1;
            t->status = status;
            if (t->req.on_headers != NULL && t->req.on_headers(t->req.arg, status) != 0) {
                t->abort_rc = UD_ECLOSED;
                return 0;
            }
            if (t->cancelled)
                return 0;
        }
        return len;
    }
    if (t->head_len + len + 1 > MAX_HEADER_BYTES)
        return len; /* keep the first headers; ours are few */
    char *p = realloc(t->head, t->head_len + len + 1);
    if (p == NULL)
        return 0;
    t->head = p;
    memcpy(t->head + t->head_len, data, len);
    t->head_len += len;
    t->head[t->head_len] = '\0';
    return len;
}

static int collect(struct ud_http_transfer *t, const void *data, size_t len, size_t max)
{
    if (t->body_len + len > max) {
        len = max - t->body_len;
        t->body_over = 1;
    }
    if (t->body_len + len > t->body_cap) {
        size_t cap = t->body_cap ? t->body_cap : 4096;
        while (cap < t->body_len + len)
            cap *= 2;
        uint8_t *p = realloc(t->body, cap);
        if (p == NULL)
            return -1;
        t->body = p;
        t->body_cap = cap;
    }
    memcpy(t->body + t->body_len, data, len);
    t->body_len += len;
    return 0;
}

static size_t write_cb(char *data, size_t size, size_t n, void *userp)
{
    struct ud_http_transfer *t = userp;
    size_t len = size * n;
    if (t->cancelled)
        return 0;
    if (t->status < 200 || t->status >= 300) {
        /* An error body: kept (bounded) for on_done. */
        if (t->body_len < UD_HTTP_CLIENT_ERROR_BODY) {
            size_t room = UD_HTTP_CLIENT_ERROR_BODY - t->body_len;
            if (collect(t, data, len < room ? len : room, UD_HTTP_CLIENT_ERROR_BODY) != 0)
                return 0;
        }
        t->body_over = 0;
        t->bytes += len;
        return len;
    }
    if (t->req.on_data != NULL) {
        if (t->paused)
            return CURL_WRITEFUNC_PAUSE;
        int rc = t->req.on_data(t->req.arg, data, len);
        if (t->cancelled)
            return 0;
        if (rc == UD_HTTP_PAUSE) {
            t->paused = 1;
            return CURL_WRITEFUNC_PAUSE;
        }
        if (rc != 0) {
            t->aborted_by_data = 1;
            t->abort_rc = rc;
            return 0;
        }
        t->bytes += len;
        return len;
    }
    if (t->fd >= 0) {
        const char *p = data;
        size_t left = len;
        while (left > 0) {
            ssize_t w = write(t->fd, p, left);
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0) {
                t->file_errno = errno;
                return 0;
            }
            p += w;
            left -= (size_t)w;
        }
        t->bytes += len;
        return len;
    }
    if (collect(t, data, len, t->body_max) != 0 || t->body_over)
        return 0;
    t->bytes += len;
    return len;
}

/* --- public API --------------------------------------------------------------------------------
 */

int ud_http_client_new(uv_loop_t *loop, struct ud_http_client **out, char *errmsg)
{
    static int global_done;
    if (!global_done) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
            return ud_errf(errmsg, UD_EIO, "http client: curl_global_init failed");
        global_done = 1;
    }
    /* Built against 7.80 or later, but the library loaded at run time shares the soname with
     * older ones, which would ignore CURLOPT_PREREQFUNCTION: every failed request would then
     * read as never sent, and a forwarded write could be sent twice. */
    const curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
    if (v->version_num < 0x075000)
        return ud_errf(errmsg, UD_EINVAL,
                       "http client: libcurl %s is loaded; 7.80 or later is needed "
                       "(CURLOPT_PREREQFUNCTION)",
                       v->version);
    struct ud_http_client *c = calloc(1, sizeof *c);
    if (c == NULL)
        return ud_errf(errmsg, UD_ENOMEM, "http client: out of memory");
    c->loop = loop;
    c->multi = curl_multi_init();
    if (c->multi == NULL) {
        free(c);
        return ud_errf(errmsg, UD_EIO, "http client: curl_multi_init failed");
    }
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, timer_func);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
    uv_timer_init(loop, &c->timer);
    uv_timer_init(loop, &c->ops_timer);
    c->timer.data = c->ops_timer.data = c;
    c->handles_open = 2;
    *out = c;
    return 0;
}

static void client_handle_closed_cb(uv_handle_t *h)
{
    struct ud_http_client *c = h->data;
    c->handles_open--;
    maybe_finish_close(c);
}

static void maybe_finish_close(struct ud_http_client *c)
{
    if (!c->closing || c->handles_open > 0)
        return;
    void (*done)(void *) = c->close_done;
    void *arg = c->close_arg;
    curl_multi_cleanup(c->multi);
    free(c);
    if (done != NULL)
        done(arg);
}

void ud_http_client_close(struct ud_http_client *c, void (*done)(void *arg), void *arg)
{
    if (c == NULL || c->closing)
        return;
    c->closing = 1;
    c->close_done = done;
    c->close_arg = arg;
    while (c->transfers != NULL) {
        struct ud_http_transfer *t = c->transfers;
        unlink_transfer(t); /* curl removes its sockets (CURL_POLL_REMOVE closes the polls) */
        free_transfer(t);
    }
    c->active = 0;
    uv_close((uv_handle_t *)&c->timer, client_handle_closed_cb);
    uv_close((uv_handle_t *)&c->ops_timer, client_handle_closed_cb);
}

static const char *method_name(enum ud_http_client_method m)
{
    switch (m) {
    case UD_HTTP_CLIENT_GET:
        return "GET";
    case UD_HTTP_CLIENT_POST:
        return "POST";
    case UD_HTTP_CLIENT_PUT:
        return "PUT";
    case UD_HTTP_CLIENT_DELETE:
        return "DELETE";
    case UD_HTTP_CLIENT_HEAD:
        return "HEAD";
    }
    return "GET";
}

int ud_http_client_start(struct ud_http_client *c, const struct ud_http_request *req,
                         struct ud_http_transfer **out, char *errmsg)
{
    if (req->url == NULL || req->url[0] == '\0')
        return ud_errf(errmsg, UD_EINVAL, "http client: request without a URL");
    if (strncmp(req->url, "http://", 7) != 0 && strncmp(req->url, "https://", 8) != 0)
        return ud_errf(errmsg, UD_EINVAL, "http client: %s: only http:// and https:// URLs work",
                       req->url);
    if (c->closing)
        return ud_errf(errmsg, UD_ECLOSED, "http client: closing");
    struct ud_http_transfer *t = calloc(1, sizeof *t);
    if (t == NULL)
        return ud_errf(errmsg, UD_ENOMEM, "http client: out of memory");
    t->c = c;
    t->fd = -1;
    t->req = *req;
    t->req.url = NULL;
    t->req.body = NULL;
    t->req.headers = NULL;
    t->req.content_type = NULL;
    t->method_name = method_name(req->method);
    t->body_max = req->collect_max ? req->collect_max : DEFAULT_COLLECT_MAX;
    t->url = strdup(req->url);
    t->easy = curl_easy_init();
    if (t->url == NULL || t->easy == NULL)
        goto nomem;
    if (req->on_data == NULL && req->file_path != NULL) {
        t->fd = open(req->file_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (t->fd < 0) {
            int e = errno;
            curl_easy_cleanup(t->easy);
            t->easy = NULL;
            free_transfer(t);
            return ud_errf(errmsg, ud_err_from_errno(e), "GET %s: create %s: %s", req->url,
                           req->file_path, strerror(e));
        }
    }
    t->req.file_path = NULL;
    t->req.ca_file = NULL;
    if (t->fd >= 0 && (t->file_path = strdup(req->file_path)) == NULL)
        goto nomem;
    CURL *e = t->easy;
    curl_easy_setopt(e, CURLOPT_URL, t->url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, t);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->errbuf);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, t);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, t);
    curl_easy_setopt(e, CURLOPT_PREREQFUNCTION, prereq_cb);
    curl_easy_setopt(e, CURLOPT_PREREQDATA, t);
    /* Peers and upstreams are reached at the addresses configured, never through a proxy named
     * by http_proxy/https_proxy in the environment: a proxy's own 502 or 504 for a write the
     * server had read would pass for an ordinary answer. */
    curl_easy_setopt(e, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
                     (long)(req->connect_timeout_ms ? req->connect_timeout_ms
                                                    : UD_HTTP_CLIENT_CONNECT_TIMEOUT_MS));
    if (req->timeout_ms > 0)
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)req->timeout_ms);
    if (req->low_speed_time_s > 0) {
        curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, (long)req->low_speed_time_s);
        curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT,
                         (long)(req->low_speed_bytes ? req->low_speed_bytes : 1));
    }
    /* A kept-alive connection idle for 5 s is not used again: our servers close idle ones after
     * 10 s (IDLE_TIMEOUT_MS in core/http/server.c: h2o's HTTP/1.1 request timeout and HTTP/2
     * idle timeout, set there explicitly), and a request sent on one the
     * server is closing dies with nothing back, which for a send_once write is "outcome
     * unknown" (curl's default, 118 s, reuses them well past that). */
    curl_easy_setopt(e, CURLOPT_MAXAGE_CONN, UD_HTTP_CLIENT_MAX_IDLE_S);
    /* Loopback streams carry small frames: do not let Nagle hold them. */
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    if (req->version == UD_HTTP_CLIENT_H2C) {
        curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE);
        /* The Debian 7.88.1 h2c reuse bug: one connection per transfer. */
        curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, 1L);
        curl_easy_setopt(e, CURLOPT_FORBID_REUSE, 1L);
        curl_easy_setopt(e, CURLOPT_PIPEWAIT, 0L);
    } else if (strncmp(req->url, "https://", 8) == 0) {
        curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
        /* Verification stays on (ARCHITECTURE.md section 14); only the trusted CAs change. */
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
        if (req->ca_file != NULL && req->ca_file[0] != '\0')
            curl_easy_setopt(e, CURLOPT_CAINFO, req->ca_file); /* copied by curl */
    } else {
        curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    }
    switch (req->method) {
    case UD_HTTP_CLIENT_GET:
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
        break;
    case UD_HTTP_CLIENT_POST:
        curl_easy_setopt(e, CURLOPT_POST, 1L);
        break;
    case UD_HTTP_CLIENT_PUT:
    case UD_HTTP_CLIENT_DELETE:
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, t->method_name);
        break;
    case UD_HTTP_CLIENT_HEAD:
        /* A real HEAD: curl then reads no body, whatever Content-Length announces. */
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
        break;
    }
    if (req->body != NULL || req->method == UD_HTTP_CLIENT_POST ||
        req->method == UD_HTTP_CLIENT_PUT) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
        curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, req->body != NULL ? req->body : "");
        char ct[160];
        snprintf(ct, sizeof ct, "Content-Type: %s",
                 req->content_type != NULL ? req->content_type : "application/json");
        struct curl_slist *l = curl_slist_append(t->hdrs, ct);
        if (l == NULL)
            goto nomem;
        t->hdrs = l;
    }
    /* No "Expect: 100-continue" round trip for our small bodies. */
    struct curl_slist *l = curl_slist_append(t->hdrs, "Expect:");
    if (l == NULL)
        goto nomem;
    t->hdrs = l;
    for (const char *const *h = req->headers; h != NULL && *h != NULL; h++) {
        l = curl_slist_append(t->hdrs, *h);
        if (l == NULL)
            goto nomem;
        t->hdrs = l;
    }
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->hdrs);
    if (curl_multi_add_handle(c->multi, e) != CURLM_OK)
        goto nomem;
    t->next = c->transfers;
    if (c->transfers != NULL)
        c->transfers->prev = t;
    c->transfers = t;
    c->active++;
    if (out != NULL)
        *out = t;
    return 0;
nomem:
    if (t->easy != NULL)
        curl_easy_cleanup(t->easy);
    t->easy = NULL;
    free_transfer(t);
    return ud_errf(errmsg, UD_ENOMEM, "http client: out of memory starting %s", req->url);
}

void ud_http_transfer_cancel(struct ud_http_transfer *t)
{
    if (t == NULL || t->cancelled)
        return;
    struct ud_http_client *c = t->c;
    t->cancelled = 1;
    c->active--;
    if (c->in_curl == 0) {
        unlink_transfer(t);
        free_transfer(t);
    }
    /* Else run_deferred frees it once curl has returned. */
}

void ud_http_transfer_pause(struct ud_http_transfer *t)
{
    if (t == NULL || t->cancelled || t->paused)
        return;
    t->paused = 1;
    t->resume_pending = 0;
    /* Inside curl the next write callback returns CURL_WRITEFUNC_PAUSE by itself; outside, tell
     * curl now so that it stops reading the socket. */
    if (t->c->in_curl == 0)
        curl_easy_pause(t->easy, CURLPAUSE_RECV);
}

void ud_http_transfer_resume(struct ud_http_transfer *t)
{
    if (t == NULL || t->cancelled || !t->paused)
        return;
    t->resume_pending = 1;
    uv_timer_start(&t->c->ops_timer, ops_timer_cb, 0, 0);
}

int ud_http_transfer_header(const struct ud_http_transfer *t, const char *name, char *out,
                            size_t size)
{
    size_t nl = strlen(name);
    const char *p = t->head;
    if (p == NULL || size == 0)
        return 0;
    while (*p != '\0') {
        const char *eol = strchr(p, '\n');
        size_t len = eol != NULL ? (size_t)(eol - p) : strlen(p);
        if (len > nl && p[nl] == ':' && strncasecmp(p, name, nl) == 0) {
            const char *v = p + nl + 1;
            const char *end = p + len;
            while (v < end && (*v == ' ' || *v == '\t'))
                v++;
            while (end > v && (end[-1] == '\r' || end[-1] == ' ' || end[-1] == '\t'))
                end--;
            size_t vl = (size_t)(end - v);
            if (vl >= size)
                vl = size - 1;
            memcpy(out, v, vl);
            out[vl] = '\0';
            return 1;
        }
        if (eol == NULL)
            break;
        p = eol + 1;
    }
    return 0;
}

int ud_http_transfer_started(const struct ud_http_transfer *t)
{
    return t != NULL && t->request_started;
}

size_t ud_http_client_active(const struct ud_http_client *c)
{
    return c->active;
}
