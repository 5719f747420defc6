/* The HTTP client (core/http_client.h) against a real unison-writer (argv[1]) on loopback: JSON
 * POST and GET, HTTP/1.1 and h2c (one connection per transfer), a large body delivered with
 * pauses and resumes, GET to a file, error bodies, refused connections, timeouts against a silent
 * server, and cancellation. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include <cmocka.h>

#include "core/err.h"
#include "core/http_client.h"
#include "tests/lib/testutil.h"

extern char **environ;

static const char *g_writer;
static char *g_dir;
static pid_t g_pid;
static int g_port;
static char g_base[64];
static uv_loop_t g_loop;
static struct ud_http_client *g_client;

/* --- one transfer run to its end ------------------------------------------------------------- */

struct outcome {
    int done;
    int rc;
    long status;
    char errmsg[512];
    uint8_t *body;
    size_t body_len;
    uint64_t bytes;
    int version;
    int unsent;
    int headers_called;
    long headers_status;
    /* streaming */
    uint8_t *data;
    size_t data_len;
    int pauses;
    int pause_every; /* pause after every n-th on_data call (0: never) */
    int calls;
    struct ud_http_transfer *t;
    uv_timer_t resume_timer;
};

static void on_done(void *arg, const struct ud_http_result *res)
{
    struct outcome *o = arg;
    o->done = 1;
    o->rc = res->rc;
    o->status = res->status;
    o->bytes = res->bytes;
    o->version = res->http_version;
    o->unsent = res->unsent;
    snprintf(o->errmsg, sizeof o->errmsg, "%s", res->errmsg ? res->errmsg : "");
    if (res->body_len > 0) {
        o->body = malloc(res->body_len + 1);
        memcpy(o->body, res->body, res->body_len);
        o->body[res->body_len] = 0;
        o->body_len = res->body_len;
    }
}

static int on_headers(void *arg, long status)
{
    struct outcome *o = arg;
    o->headers_called++;
    o->headers_status = status;
    return 0;
}

static void resume_cb(uv_timer_t *t)
{
    struct outcome *o = t->data;
    ud_http_transfer_resume(o->t);
}

static int on_data(void *arg, const void *data, size_t len)
{
    struct outcome *o = arg;
    o->calls++;
    if (o->pause_every > 0 && o->calls % o->pause_every == 0) {
        /* Pause, and resume from a timer a little later: the same bytes come again. */
        o->pauses++;
        uv_timer_start(&o->resume_timer, resume_cb, 2, 0);
        return UD_HTTP_PAUSE;
    }
    o->data = realloc(o->data, o->data_len + len + 1);
    memcpy(o->data + o->data_len, data, len);
    o->data_len += len;
    o->data[o->data_len] = 0;
    return 0;
}

static void outcome_free(struct outcome *o)
{
    free(o->body);
    free(o->data);
}

static void run_until(int *flag, int timeout_ms)
{
    uint64_t end = uv_now(&g_loop) + (uint64_t)timeout_ms;
    while (!*flag && uv_now(&g_loop) < end) {
        uv_run(&g_loop, UV_RUN_ONCE);
        uv_update_time(&g_loop);
    }
}

static void run(struct ud_http_request *req, struct outcome *o)
{
    char errmsg[UD_ERRMSG_SIZE] = "";
    req->on_done = on_done;
    req->arg = o;
    uv_timer_init(&g_loop, &o->resume_timer);
    o->resume_timer.data = o;
    int rc = ud_http_client_start(g_client, req, &o->t, errmsg);
    if (rc != 0)
        print_message("start: %s\n", errmsg);
    assert_int_equal(rc, 0);
    run_until(&o->done, 20000);
    assert_true(o->done);
    uv_close((uv_handle_t *)&o->resume_timer, NULL);
    uv_run(&g_loop, UV_RUN_NOWAIT);
}

static void request(enum ud_http_client_method m, const char *path, const char *body,
                    enum ud_http_client_version v, struct outcome *o)
{
    char url[256];
    snprintf(url, sizeof url, "%s%s", g_base, path);
    struct ud_http_request req = {.url = url, .method = m, .version = v};
    if (body != NULL) {
        req.body = body;
        req.body_len = strlen(body);
    }
    run(&req, o);
}

/* --- the writer process ---------------------------------------------------------------------- */

static int read_port(const char *path)
{
    char buf[256] = "";
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *p = strstr(buf, "\"http\":");
    return p != NULL ? atoi(p + 7) : 0;
}

static int setup(void **state)
{
    (void)state;
    g_dir = ud_test_tmpdir("http-client");
    char data[1024], ports[1024];
    snprintf(data, sizeof data, "%s/data", g_dir);
    snprintf(ports, sizeof ports, "%s/ports.json", g_dir);
    char *argv[] = {
        (char *)g_writer, "--data-dir", data,  "--http",       "127.0.0.1:0", "--raft",
        "127.0.0.1:0",    "--resp",     "off", "--ports-file", ports,         "--log-level",
        "warn",           NULL};
    if (posix_spawn(&g_pid, g_writer, NULL, NULL, argv, environ) != 0)
        return -1;
    for (int i = 0; i < 300 && g_port == 0; i++) {
        usleep(50000);
        g_port = read_port(ports);
    }
    if (g_port == 0)
        return -1;
    snprintf(g_base, sizeof g_base, "http://127.0.0.1:%d", g_port);
    uv_loop_init(&g_loop);
    char errmsg[UD_ERRMSG_SIZE];
    if (ud_http_client_new(&g_loop, &g_client, errmsg) != 0)
        return -1;
    /* Ready once the default namespace takes writes. */
    for (int i = 0; i < 200; i++) {
        struct outcome o = {0};
        request(UD_HTTP_CLIENT_PUT, "/api/v1/default/kv/ready", "{\"value\":\"eA==\"}",
                UD_HTTP_CLIENT_HTTP1, &o);
        int ok = o.rc == 0 && o.status == 200;
        outcome_free(&o);
        if (ok)
            return 0;
        usleep(50000);
    }
    return -1;
}

static void client_closed(void *arg)
{
    *(int *)arg = 1;
}

static int teardown(void **state)
{
    (void)state;
    int closed = 0;
    ud_http_client_close(g_client, client_closed, &closed);
    run_until(&closed, 5000);
    uv_loop_close(&g_loop);
    if (g_pid > 0) {
        kill(g_pid, SIGTERM);
        waitpid(g_pid, NULL, 0);
    }
    ud_test_rmtree(g_dir);
    free(g_dir);
    return 0;
}

/* --- cases ----------------------------------------------------------------------------------- */

static void test_json_roundtrip(void **state)
{
    (void)state;
    for (int v = 0; v < 2; v++) {
        enum ud_http_client_version ver = v ? UD_HTTP_CLIENT_H2C : UD_HTTP_CLIENT_HTTP1;
        /* Several in a row: h2c must not reuse a connection (the Debian curl bug). */
        for (int i = 0; i < 3; i++) {
            struct outcome o = {0};
            request(UD_HTTP_CLIENT_POST, "/api/v1/default/kv/batch",
                    "{\"operation\":\"put\",\"items\":[{\"key\":\"k1\",\"value\":\"aGVsbG8=\"},"
                    "{\"key\":\"k2\",\"value\":\"d29ybGQ=\"}]}",
                    ver, &o);
            assert_int_equal(o.rc, 0);
            assert_int_equal(o.status, 200);
            assert_int_equal(o.version, v ? 2 : 1);
            assert_non_null(strstr((char *)o.body, "\"processed\":2"));
            outcome_free(&o);

            struct outcome g = {0};
            request(UD_HTTP_CLIENT_GET, "/api/v1/default/kv/k2", NULL, ver, &g);
            assert_int_equal(g.rc, 0);
            assert_int_equal(g.status, 200);
            assert_non_null(strstr((char *)g.body, "\"value\":\"d29ybGQ=\""));
            outcome_free(&g);
        }
    }
}

static void test_error_body(void **state)
{
    (void)state;
    struct outcome o = {0};
    char url[256];
    snprintf(url, sizeof url, "%s/api/v1/nosuchns/kv/x", g_base);
    struct ud_http_request req = {.url = url, .on_headers = on_headers, .on_data = on_data};
    run(&req, &o);
    /* A response is not a transport error: rc 0, the status, and the JSON error as the body. */
    assert_int_equal(o.rc, 0);
    assert_int_equal(o.status, 404);
    assert_int_equal(o.headers_called, 1);
    assert_int_equal(o.headers_status, 404);
    assert_int_equal(o.data_len, 0); /* not given to on_data */
    assert_non_null(o.body);
    assert_non_null(strstr((char *)o.body, "nosuchns"));
    outcome_free(&o);
}

static char g_etag[64], g_length[32];

static int on_headers_copy(void *arg, long status)
{
    struct outcome *o = arg;
    if (!ud_http_transfer_header(o->t, "etag", g_etag, sizeof g_etag))
        g_etag[0] = '\0';
    if (!ud_http_transfer_header(o->t, "content-length", g_length, sizeof g_length))
        g_length[0] = '\0';
    return on_headers(arg, status);
}

/* HEAD: the status and the headers GET would give (Content-Length the size of GET's body), and
 * no body read, over HTTP/1.1 and h2c. */
static void test_head(void **state)
{
    (void)state;
    for (int v = 0; v < 2; v++) {
        enum ud_http_client_version ver = v ? UD_HTTP_CLIENT_H2C : UD_HTTP_CLIENT_HTTP1;
        struct outcome g = {0};
        request(UD_HTTP_CLIENT_GET, "/api/v1/default/kv/ready", NULL, ver, &g);
        assert_int_equal(g.status, 200);
        char url[256];
        snprintf(url, sizeof url, "%s/api/v1/default/kv/ready", g_base);
        struct ud_http_request req = {.url = url,
                                      .method = UD_HTTP_CLIENT_HEAD,
                                      .version = ver,
                                      .on_headers = on_headers_copy};
        struct outcome o = {0};
        run(&req, &o);
        assert_int_equal(o.rc, 0);
        assert_int_equal(o.status, 200);
        assert_int_equal(o.headers_called, 1);
        assert_int_equal(o.bytes, 0);
        assert_int_equal(o.body_len, 0);
        assert_int_equal(strtoull(g_length, NULL, 10), g.body_len);
        assert_true(g_etag[0] == '"');
        outcome_free(&o);
        outcome_free(&g);
        /* An error answer to HEAD: its status, no body. */
        snprintf(url, sizeof url, "%s/api/v1/nosuchns/kv/x", g_base);
        struct outcome e = {0};
        run(&req, &e);
        assert_int_equal(e.rc, 0);
        assert_int_equal(e.status, 404);
        assert_int_equal(e.body_len, 0);
        assert_true(strtoull(g_length, NULL, 10) > 0);
        outcome_free(&e);
    }
}

/* A large body (a scan of 1000 values of 1 KiB) streamed with a pause every 3rd callback equals
 * the same body fetched in one piece, and the same body written to a file. */
static void test_stream_pause_resume_file(void **state)
{
    (void)state;
    char value[1400], body[300000];
    memset(value, 'v', 1364); /* base64 of 1023 bytes */
    value[1364] = 0;
    for (int batch = 0; batch < 10; batch++) {
        size_t n = (size_t)snprintf(body, sizeof body, "{\"operation\":\"put\",\"items\":[");
        for (int i = 0; i < 100; i++)
            n += (size_t)snprintf(body + n, sizeof body - n,
                                  "%s{\"key\":\"big:%04d\",\"value\":\"%s\"}", i ? "," : "",
                                  batch * 100 + i, value);
        snprintf(body + n, sizeof body - n, "]}");
        struct outcome o = {0};
        request(UD_HTTP_CLIENT_POST, "/api/v1/default/kv/batch", body, UD_HTTP_CLIENT_HTTP1, &o);
        assert_int_equal(o.status, 200);
        outcome_free(&o);
    }
    char url[256];
    snprintf(url, sizeof url, "%s/api/v1/default/kv?prefix=big:&limit=1000", g_base);
    struct outcome whole = {0};
    struct ud_http_request req = {.url = url, .collect_max = 4u << 20};
    run(&req, &whole);
    assert_int_equal(whole.rc, 0);
    assert_int_equal(whole.status, 200);
    assert_true(whole.body_len > 1000 * 1364);

    for (int v = 0; v < 2; v++) {
        struct outcome s = {0};
        s.pause_every = 3;
        struct ud_http_request sr = {.url = url,
                                     .on_data = on_data,
                                     .on_headers = on_headers,
                                     .version = v ? UD_HTTP_CLIENT_H2C : UD_HTTP_CLIENT_HTTP1};
        run(&sr, &s);
        assert_int_equal(s.rc, 0);
        assert_int_equal(s.headers_status, 200);
        assert_true(s.pauses > 3);
        assert_int_equal(s.data_len, whole.body_len);
        assert_memory_equal(s.data, whole.body, whole.body_len);
        assert_int_equal(s.bytes, whole.body_len);
        outcome_free(&s);
    }

    char path[1024];
    snprintf(path, sizeof path, "%s/scan.json", g_dir);
    struct outcome f = {0};
    struct ud_http_request fr = {.url = url, .file_path = path};
    run(&fr, &f);
    assert_int_equal(f.rc, 0);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal((size_t)st.st_size, whole.body_len);
    outcome_free(&f);

    /* Over collect_max: UD_ELIMIT naming the limit. */
    struct outcome small = {0};
    struct ud_http_request lr = {.url = url, .collect_max = 1000};
    run(&lr, &small);
    assert_int_equal(small.rc, UD_ELIMIT);
    assert_non_null(strstr(small.errmsg, "over 1000 bytes"));
    outcome_free(&small);
    outcome_free(&whole);
}

/* A port that refuses connections, and one that accepts and never answers. */
static int listen_silent(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
    bind(fd, (struct sockaddr *)&a, sizeof a);
    listen(fd, 16);
    socklen_t len = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &len);
    *port = ntohs(a.sin_port);
    return fd;
}

static void test_transport_errors(void **state)
{
    (void)state;
    int port;
    int fd = listen_silent(&port);
    close(fd); /* now refused */
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/x", port);
    struct outcome o = {0};
    struct ud_http_request req = {.url = url};
    run(&req, &o);
    assert_int_equal(o.rc, UD_EIO);
    assert_int_equal(o.status, 0);
    assert_non_null(strstr(o.errmsg, url));
    assert_non_null(strstr(o.errmsg, "onnect")); /* "Failed to connect ... Connection refused" */
    outcome_free(&o);

    /* Silent: the kernel completes the handshake, nobody answers. */
    fd = listen_silent(&port);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/stream", port);
    struct outcome t = {0};
    struct ud_http_request tr = {.url = url, .low_speed_time_s = 1, .on_data = on_data};
    uint64_t t0 = uv_now(&g_loop);
    run(&tr, &t);
    uint64_t took = uv_now(&g_loop) - t0;
    assert_int_equal(t.rc, UD_ETIMEDOUT);
    assert_non_null(strstr(t.errmsg, url));
    assert_true(took >= 900 && took < 5000);
    outcome_free(&t);

    struct outcome w = {0};
    struct ud_http_request wr = {.url = url, .timeout_ms = 300};
    t0 = uv_now(&g_loop);
    run(&wr, &w);
    assert_int_equal(w.rc, UD_ETIMEDOUT);
    assert_true(uv_now(&g_loop) - t0 < 3000);
    outcome_free(&w);

    /* Cancelled: no callback, nothing left running. */
    struct outcome c = {0};
    struct ud_http_request cr = {.url = url, .on_done = on_done, .arg = &c};
    struct ud_http_transfer *tx;
    char errmsg[UD_ERRMSG_SIZE];
    assert_int_equal(ud_http_client_start(g_client, &cr, &tx, errmsg), 0);
    for (int i = 0; i < 10; i++)
        uv_run(&g_loop, UV_RUN_NOWAIT);
    assert_int_equal(ud_http_client_active(g_client), 1);
    ud_http_transfer_cancel(tx);
    assert_int_equal(ud_http_client_active(g_client), 0);
    int never = 0;
    run_until(&never, 300);
    assert_false(c.done);
    close(fd);

    /* Bad URLs are refused at start, naming the URL. */
    struct ud_http_request br = {.url = "ftp://127.0.0.1/x"};
    assert_int_equal(ud_http_client_start(g_client, &br, NULL, errmsg), UD_EINVAL);
    assert_non_null(strstr(errmsg, "ftp://127.0.0.1/x"));
}

/* A server that answers the first request on its connection, reads the second one whole, then
 * stops listening and closes the connection without a byte of answer: the request reached it,
 * but curl, seeing a kept-alive connection die before any answer, sends it again on a fresh
 * connection, which is refused. */
struct dying_server {
    int listen_fd;
    int port;
    int requests; /* requests read in full */
};

/* Reads one request with a Content-Length body; 1 when read whole. */
static int read_request(int fd)
{
    char buf[8192];
    size_t have = 0;
    for (;;) {
        buf[have] = '\0';
        char *end = strstr(buf, "\r\n\r\n");
        if (end != NULL) {
            char *cl = strstr(buf, "Content-Length:");
            size_t body = cl != NULL && cl < end ? strtoul(cl + 15, NULL, 10) : 0;
            size_t want = (size_t)(end + 4 - buf) + body;
            while (have < want) {
                ssize_t n = read(fd, buf + have, sizeof buf - 1 - have);
                if (n <= 0)
                    return 0;
                have += (size_t)n;
            }
            return 1;
        }
        if (have + 1 >= sizeof buf)
            return 0;
        ssize_t n = read(fd, buf + have, sizeof buf - 1 - have);
        if (n <= 0)
            return 0;
        have += (size_t)n;
    }
}

/* The tests' write: a PUT of one small value to key k of the server on port, sent into url
 * (which must outlive the request). */
static struct ud_http_request put_k(char *url, size_t url_size, int port, int send_once)
{
    snprintf(url, url_size, "http://127.0.0.1:%d/api/v1/default/kv/k", port);
    static const char body[] = "{\"value\":\"eA==\"}";
    return (struct ud_http_request){.url = url,
                                    .method = UD_HTTP_CLIENT_PUT,
                                    .body = body,
                                    .body_len = sizeof body - 1,
                                    .send_once = send_once};
}

static void *dying_server_run(void *arg)
{
    struct dying_server *d = arg;
    int fd = accept(d->listen_fd, NULL, NULL);
    if (fd < 0)
        return NULL;
    struct timeval tv = {.tv_sec = 5};
    /* A client that does not reuse the connection must not leave the join waiting for ever. */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: "
                             "application/json\r\n\r\n{}";
    if (read_request(fd)) {
        d->requests++;
        if (write(fd, ok, sizeof ok - 1) != (ssize_t)(sizeof ok - 1)) {
            close(fd);
            return NULL;
        }
    }
    if (read_request(fd))
        d->requests++;
    close(d->listen_fd); /* the retry's connect is refused */
    close(fd);
    return NULL;
}

static void test_resent_request_not_unsent(void **state)
{
    (void)state;
    struct dying_server d = {0};
    d.listen_fd = listen_silent(&d.port);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, dying_server_run, &d), 0);
    char url[128];
    struct ud_http_request req = put_k(url, sizeof url, d.port, 0);
    struct outcome first = {0};
    run(&req, &first);
    assert_int_equal(first.rc, 0);
    assert_int_equal(first.status, 200);
    outcome_free(&first);
    struct outcome second = {0};
    run(&req, &second); /* the same connection, kept alive */
    pthread_join(th, NULL);
    assert_int_equal(d.requests, 2);
    assert_int_not_equal(second.rc, 0);
    /* It reached the server: sending it again could apply it twice. */
    assert_int_equal(second.unsent, 0);
    outcome_free(&second);

    /* A refused first connect: surely never sent. */
    int fd = listen_silent(&d.port);
    close(fd);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/api/v1/default/kv/k", d.port);
    struct outcome refused = {0};
    run(&req, &refused);
    assert_int_equal(refused.rc, UD_EIO);
    assert_int_equal(refused.unsent, 1);
    outcome_free(&refused);
}

/* A server in front of which a load balancer lost one connection: it answers the first request
 * on its connection, reads the second one whole and closes that connection without a byte of
 * answer, but keeps listening, and answers whatever arrives on a new connection within 2 s. */
struct listening_server {
    int listen_fd;
    int port;
    int requests; /* requests read in full */
};

static void answer_ok(int fd)
{
    static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: "
                             "application/json\r\n\r\n{}";
    if (write(fd, ok, sizeof ok - 1) != (ssize_t)(sizeof ok - 1))
        fprintf(stderr, "listening server: short write\n");
}

static void *listening_server_run(void *arg)
{
    struct listening_server *d = arg;
    struct timeval tv = {.tv_sec = 2};
    /* No accept or read waits for ever: a client that does not come back ends the thread. */
    setsockopt(d->listen_fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    int fd = accept(d->listen_fd, NULL, NULL);
    if (fd < 0)
        return NULL;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (read_request(fd)) {
        d->requests++;
        answer_ok(fd);
    }
    if (read_request(fd))
        d->requests++;
    close(fd);
    int again = accept(d->listen_fd, NULL, NULL); /* curl's re-send, if it sends one */
    if (again >= 0) {
        setsockopt(again, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        if (read_request(again)) {
            d->requests++;
            answer_ok(again);
        }
        close(again);
    }
    close(d->listen_fd);
    return NULL;
}

/* The second request on a kept-alive connection, whose connection closes without an answer:
 * curl sends it again on a fresh connection, unless it is sent at most once (a write without an
 * idempotency key), which ends as sent, without an answer. */
static void lost_connection(int send_once, struct outcome *o, int *requests)
{
    struct listening_server d = {0};
    d.listen_fd = listen_silent(&d.port);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, listening_server_run, &d), 0);
    char url[128];
    struct ud_http_request req = put_k(url, sizeof url, d.port, send_once);
    struct outcome first = {0};
    run(&req, &first);
    assert_int_equal(first.rc, 0);
    assert_int_equal(first.status, 200);
    outcome_free(&first);
    run(&req, o); /* the same connection, kept alive */
    pthread_join(th, NULL);
    *requests = d.requests;
}

static void test_send_once(void **state)
{
    (void)state;
    struct outcome resent = {0};
    int requests = 0;
    lost_connection(0, &resent, &requests);
    assert_int_equal(requests, 3); /* curl's re-send reached the server */
    assert_int_equal(resent.rc, 0);
    assert_int_equal(resent.status, 200);
    outcome_free(&resent);

    struct outcome once = {0};
    lost_connection(1, &once, &requests);
    assert_int_equal(requests, 2);
    assert_int_equal(once.rc, UD_EIO);
    assert_int_equal(once.unsent, 0);
    assert_non_null(strstr(once.errmsg, "not sent again"));
    outcome_free(&once);
}

/* A server that answers one request on its first connection, then the next one wherever it
 * comes: on that connection (reused) or on a new one. */
struct reuse_server {
    int listen_fd;
    int port;
    int reused; /* the second request came on the first connection */
    int fresh;  /* it came on a new connection */
};

static void *reuse_server_run(void *arg)
{
    struct reuse_server *d = arg;
    int fd = accept(d->listen_fd, NULL, NULL);
    if (fd < 0)
        return NULL;
    if (read_request(fd))
        answer_ok(fd);
    struct pollfd p[2] = {{.fd = d->listen_fd, .events = POLLIN}, {.fd = fd, .events = POLLIN}};
    /* The client closing the first connection (EOF) is not an answer: wait on for the request. */
    while (!d->reused && !d->fresh && poll(p, fd >= 0 ? 2 : 1, 20000) > 0) {
        if (fd >= 0 && (p[1].revents & (POLLIN | POLLHUP))) {
            if (read_request(fd)) {
                d->reused = 1;
                answer_ok(fd);
            } else {
                close(fd);
                fd = -1;
            }
        } else if (p[0].revents & POLLIN) {
            int again = accept(d->listen_fd, NULL, NULL);
            if (again >= 0) {
                if (read_request(again)) {
                    d->fresh = 1;
                    answer_ok(again);
                }
                close(again);
            }
        }
    }
    if (fd >= 0)
        close(fd);
    close(d->listen_fd);
    return NULL;
}

static void set_flag(uv_timer_t *t)
{
    *(int *)t->data = 1;
}

/* A connection idle longer than UD_HTTP_CLIENT_MAX_IDLE_S is not reused: h2o closes idle ones
 * after 10 s, and a write sent on one it is closing would be answered "outcome unknown". */
static void test_idle_connection_not_reused(void **state)
{
    (void)state;
    struct reuse_server d = {0};
    d.listen_fd = listen_silent(&d.port);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, reuse_server_run, &d), 0);
    char url[128];
    struct ud_http_request req = put_k(url, sizeof url, d.port, 1);
    struct outcome first = {0};
    run(&req, &first);
    assert_int_equal(first.status, 200);
    outcome_free(&first);

    int idle_over = 0;
    uv_timer_t idle;
    uv_timer_init(&g_loop, &idle);
    idle.data = &idle_over;
    uv_timer_start(&idle, set_flag, (uint64_t)UD_HTTP_CLIENT_MAX_IDLE_S * 1000 + 1000, 0);
    run_until(&idle_over, 20000);
    uv_close((uv_handle_t *)&idle, NULL);

    struct outcome second = {0};
    run(&req, &second);
    pthread_join(th, NULL);
    if (second.rc != 0)
        print_message("second: %s\n", second.errmsg);
    assert_int_equal(second.rc, 0);
    assert_int_equal(second.status, 200);
    assert_int_equal(d.reused, 0);
    assert_int_equal(d.fresh, 1);
    outcome_free(&second);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s path/to/unison-writer\n", argv[0]);
        return 2;
    }
    g_writer = argv[1];
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_roundtrip),
        cmocka_unit_test(test_error_body),
        cmocka_unit_test(test_head),
        cmocka_unit_test(test_stream_pause_resume_file),
        cmocka_unit_test(test_transport_errors),
        cmocka_unit_test(test_resent_request_not_unsent),
        cmocka_unit_test(test_send_once),
        cmocka_unit_test(test_idle_connection_not_reused),
    };
    return cmocka_run_group_tests_name("http_client", tests, setup, teardown);
}
