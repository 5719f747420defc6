/* RESP server tests over loopback TCP: pipelines, replies in order when writes complete out of
 * order, frames split into single bytes, protocol errors, client and idle limits, a slow reader
 * that must not hold up others or make the server buffer without bound, and a graceful stop. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/err.h"
#include "core/resp/resp_server.h"
#include "tests/lib/testutil.h"

struct env {
    char *root;
    struct ud_registry *reg;
    uv_loop_t loop;
    uv_async_t stop_async;
    pthread_t thread;
    struct ud_resp_server *srv;
    int port;
    int stopped;
    uv_prepare_t late; /* started before the server: runs after its flusher in each iteration */
    struct ud_resp_slot *late_slot;
};

/* --- a write command that answers after a delay, as raft would -------------------------------- */

struct slow {
    uv_timer_t timer;
    struct ud_resp_slot *slot;
    struct env *e;
    char ns[UD_NS_NAME_MAX + 1];
    char key[64], value[64];
    size_t key_len, value_len;
};

static void slow_closed(uv_handle_t *h)
{
    free(h->data);
}

static void slow_fire(uv_timer_t *t)
{
    struct slow *s = t->data;
    struct ud_ns *ns;
    char errmsg[UD_ERRMSG_SIZE];
    /* The loop thread cannot fail a cmocka test: a broken write aborts. */
    if (ud_registry_acquire(s->e->reg, s->ns, &ns) != 0)
        abort();
    if (ud_ns_kv_put(ns, s->key, s->key_len, s->value, s->value_len, NULL, errmsg) != 0)
        abort();
    ud_registry_release(s->e->reg, ns);
    ud_resp_add_simple(ud_resp_slot_buf(s->slot), "OK");
    ud_resp_slot_finish(s->slot);
    uv_close((uv_handle_t *)&s->timer, slow_closed);
}

/* SLOWSET key value delay_ms */
static void cmd_slowset(struct ud_resp_call *c)
{
    struct env *e = c->app;
    struct slow *s = calloc(1, sizeof *s);
    s->e = e;
    snprintf(s->ns, sizeof s->ns, "%s", c->session->ns);
    if (c->argvlen[1] > sizeof s->key || c->argvlen[2] > sizeof s->value)
        abort();
    memcpy(s->key, c->argv[1], c->argvlen[1]);
    s->key_len = c->argvlen[1];
    memcpy(s->value, c->argv[2], c->argvlen[2]);
    s->value_len = c->argvlen[2];
    long long delay = 0;
    char d[24];
    snprintf(d, sizeof d, "%.*s", (int)c->argvlen[3], (const char *)c->argv[3]);
    delay = atoll(d);
    s->slot = ud_resp_defer(c);
    uv_timer_init(&e->loop, &s->timer);
    s->timer.data = s;
    uv_timer_start(&s->timer, slow_fire, (uint64_t)delay, 0);
}

/* LATESET: answered from a prepare handle that runs after the server's flusher, as a write seam
 * that answers in that phase would. */
static void cmd_lateset(struct ud_resp_call *c)
{
    struct env *e = c->app;
    e->late_slot = ud_resp_defer(c);
}

static void late_cb(uv_prepare_t *h)
{
    struct env *e = h->data;
    if (e->late_slot == NULL)
        return;
    ud_resp_add_simple(ud_resp_slot_buf(e->late_slot), "OK");
    ud_resp_slot_finish(e->late_slot);
    e->late_slot = NULL;
}

static const struct ud_resp_command test_commands[] = {
    {"lateset", 1, UD_RESP_CMD_WRITE, 0, 0, 0, cmd_lateset, "Answered late.", "string"},
    {"slowset", 4, UD_RESP_CMD_WRITE, 1, 1, 1, cmd_slowset, "Sets a key after a delay.", "string"},
};

/* --- server on a loop thread ------------------------------------------------------------------ */

static void on_stopped(void *arg)
{
    struct env *e = arg;
    e->stopped = 1;
    uv_close((uv_handle_t *)&e->stop_async, NULL);
    uv_close((uv_handle_t *)&e->late, NULL);
}

static void stop_async_cb(uv_async_t *a)
{
    struct env *e = a->data;
    ud_resp_server_stop(e->srv, on_stopped, e);
}

static void *loop_main(void *arg)
{
    struct env *e = arg;
    uv_run(&e->loop, UV_RUN_DEFAULT);
    return NULL;
}

static struct env *start(int max_clients, int64_t idle_ms, size_t max_output)
{
    struct env *e = calloc(1, sizeof *e);
    char errmsg[UD_ERRMSG_SIZE];
    struct ud_engine_options d;
    memset(&d, 0, sizeof d);
    d.sync_mode = UD_WAL_SYNC_NONE;
    d.segment_size = 1u << 20;
    d.map_size = 64u << 20;
    e->root = ud_test_tmpdir("resp-server");
    assert_int_equal(ud_registry_open(e->root, &d, &e->reg, errmsg), 0);
    assert_int_equal(ud_registry_create(e->reg, "default", errmsg), 0);
    uv_loop_init(&e->loop);
    uv_async_init(&e->loop, &e->stop_async, stop_async_cb);
    e->stop_async.data = e;
    uv_prepare_init(&e->loop, &e->late);
    e->late.data = e;
    uv_prepare_start(&e->late, late_cb);
    struct ud_resp_server_options o;
    memset(&o, 0, sizeof o);
    o.loop = &e->loop;
    o.listen = "127.0.0.1:0";
    o.commands.registry = e->reg;
    o.commands.default_ns = "default";
    o.commands.commands = test_commands;
    o.commands.ncommands = 2;
    o.commands.app = e;
    o.max_clients = (unsigned)max_clients;
    o.idle_timeout_ms = idle_ms;
    o.max_output = max_output;
    o.stop_timeout_ms = 3000;
    assert_int_equal(ud_resp_server_start(&o, &e->srv, &e->port, errmsg), 0);
    assert_true(e->port > 0);
    assert_int_equal(pthread_create(&e->thread, NULL, loop_main, e), 0);
    return e;
}

static void stop(struct env *e)
{
    uv_async_send(&e->stop_async);
    pthread_join(e->thread, NULL);
    assert_true(e->stopped);
    assert_int_equal(uv_loop_close(&e->loop), 0);
    ud_registry_close(e->reg);
    ud_test_rmtree(e->root);
    free(e->root);
    free(e);
}

/* --- a blocking client ------------------------------------------------------------------------ */

static int dial(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static void send_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        assert_true(w > 0);
        c += w;
        n -= (size_t)w;
    }
}

/* Reads exactly n bytes within timeout_ms; returns how many arrived (less on EOF or timeout). */
static size_t recv_n(int fd, char *out, size_t n, int timeout_ms)
{
    size_t got = 0;
    uint64_t deadline = ud_mono_ns() / 1000000 + (uint64_t)timeout_ms;
    while (got < n) {
        uint64_t now = ud_mono_ns() / 1000000;
        if (now >= deadline)
            break;
        struct pollfd pfd = {fd, POLLIN, 0};
        if (poll(&pfd, 1, (int)(deadline - now)) <= 0)
            break;
        ssize_t r = recv(fd, out + got, n - got, 0);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    return got;
}

/* 1 when the server closed the connection within timeout_ms (after any bytes still queued). */
static int closed_within(int fd, int timeout_ms)
{
    char b[256];
    uint64_t deadline = ud_mono_ns() / 1000000 + (uint64_t)timeout_ms;
    for (;;) {
        uint64_t now = ud_mono_ns() / 1000000;
        if (now >= deadline)
            return 0;
        struct pollfd pfd = {fd, POLLIN, 0};
        if (poll(&pfd, 1, (int)(deadline - now)) <= 0)
            return 0;
        ssize_t r = recv(fd, b, sizeof b, 0);
        if (r == 0 || (r < 0 && errno == ECONNRESET))
            return 1;
    }
}

static void expect(int fd, const char *want)
{
    size_t n = strlen(want);
    char *got = calloc(1, n + 1);
    assert_int_equal(recv_n(fd, got, n, 5000), n);
    assert_string_equal(got, want);
    free(got);
}

/* --- tests ------------------------------------------------------------------------------------ */

static void test_pipeline(void **state)
{
    (void)state;
    struct env *e = start(0, 0, 0);
    int fd = dial(e->port);
    send_all(fd, "PING\r\n", 6);
    expect(fd, "+PONG\r\n");
    /* 1000 commands in one send; 1000 replies in order. */
    size_t cap = 1000 * 40, len = 0;
    char *req = malloc(cap);
    char *want = malloc(cap);
    size_t wlen = 0;
    for (int i = 0; i < 1000; i++) {
        char v[16];
        int vl = snprintf(v, sizeof v, "%d", i);
        len += (size_t)snprintf(req + len, cap - len, "*2\r\n$4\r\nECHO\r\n$%d\r\n%s\r\n", vl, v);
        wlen += (size_t)snprintf(want + wlen, cap - wlen, "$%d\r\n%s\r\n", vl, v);
    }
    send_all(fd, req, len);
    char *got = malloc(wlen);
    assert_int_equal(recv_n(fd, got, wlen, 5000), wlen);
    assert_memory_equal(got, want, wlen);
    free(req);
    free(want);
    free(got);
    close(fd);
    stop(e);
}

static void test_order_with_slow_writes(void **state)
{
    (void)state;
    struct env *e = start(0, 0, 0);
    int fd = dial(e->port);
    /* The first write answers last; the GET waits for both writes and sees them. */
    const char *req = "SLOWSET a 1 60\r\n"
                      "SLOWSET b 2 1\r\n"
                      "PING\r\n"
                      "MGET a b\r\n"
                      "SLOWSET a 3 5\r\n"
                      "GET a\r\n";
    send_all(fd, req, strlen(req));
    expect(fd, "+OK\r\n+OK\r\n+PONG\r\n*2\r\n$1\r\n1\r\n$1\r\n2\r\n+OK\r\n$1\r\n3\r\n");
    /* Another client is not held up by this one's pending writes. */
    int fd2 = dial(e->port);
    send_all(fd, "SLOWSET c 1 300\r\nGET c\r\n", 24);
    uint64_t t0 = ud_mono_ns();
    send_all(fd2, "GET a\r\n", 7);
    expect(fd2, "$1\r\n3\r\n");
    assert_true(ud_mono_ns() - t0 < 250000000ull);
    expect(fd, "+OK\r\n$1\r\n1\r\n");
    close(fd2);
    close(fd);
    stop(e);
}

/* A reply finished in a loop phase after the server's flusher is still sent at once (no timer
 * runs here to wake the loop: the idle timeout is off). */
static void test_late_completion(void **state)
{
    (void)state;
    struct env *e = start(0, -1, 0);
    int fd = dial(e->port);
    for (int i = 0; i < 3; i++) {
        uint64_t t0 = ud_mono_ns();
        send_all(fd, "LATESET\r\n", 9);
        expect(fd, "+OK\r\n");
        assert_true(ud_mono_ns() - t0 < 500000000ull);
    }
    close(fd);
    stop(e);
}

static void test_split_bytes(void **state)
{
    (void)state;
    struct env *e = start(0, 0, 0);
    int fd = dial(e->port);
    const char req[] = "*4\r\n$7\r\nSLOWSET\r\n$1\r\nk\r\n$5\r\nv\r\n\0x\r\n$1\r\n0\r\n"
                       "GET k\r\n*1\r\n$4\r\nPING\r\n";
    size_t n = sizeof req - 1;
    for (size_t i = 0; i < n; i++) {
        send_all(fd, req + i, 1);
        usleep(200);
    }
    char got[64];
    const char want[] = "+OK\r\n$5\r\nv\r\n\0x\r\n+PONG\r\n";
    assert_int_equal(recv_n(fd, got, sizeof want - 1, 5000), sizeof want - 1);
    assert_memory_equal(got, want, sizeof want - 1);
    close(fd);
    stop(e);
}

static void test_protocol_error_closes(void **state)
{
    (void)state;
    struct env *e = start(0, 0, 0);
    int fd = dial(e->port);
    /* The good command before the bad frame is answered, then the error, then the close. */
    send_all(fd, "PING\r\n*1\r\n$x\r\nPING\r\n", 20);
    expect(fd, "+PONG\r\n-ERR Protocol error: invalid bulk length\r\n");
    assert_true(closed_within(fd, 3000));
    close(fd);
    /* Garbage and a truncated frame from another client; the server keeps serving. */
    fd = dial(e->port);
    send_all(fd, "*2\r\n$3\r\nGET\r\n$5\r\nab", 20);
    close(fd);
    fd = dial(e->port);
    send_all(fd, "*3\r\n:1\r\n", 8);
    expect(fd, "-ERR Protocol error: expected '$', got ':'\r\n");
    assert_true(closed_within(fd, 3000));
    close(fd);
    fd = dial(e->port);
    send_all(fd, "QUIT\r\nPING\r\n", 12);
    expect(fd, "+OK\r\n");
    assert_true(closed_within(fd, 3000));
    close(fd);
    fd = dial(e->port);
    send_all(fd, "PING\r\n", 6);
    expect(fd, "+PONG\r\n");
    close(fd);
    stop(e);
}

static void test_max_clients(void **state)
{
    (void)state;
    struct env *e = start(2, 0, 0);
    int a = dial(e->port), b = dial(e->port);
    send_all(a, "PING\r\n", 6);
    expect(a, "+PONG\r\n");
    send_all(b, "PING\r\n", 6);
    expect(b, "+PONG\r\n");
    int c = dial(e->port);
    expect(c, "-ERR max number of clients reached\r\n");
    assert_true(closed_within(c, 3000));
    close(c);
    close(a);
    /* A slot frees once the server has seen the close. */
    int ok = 0;
    for (int i = 0; i < 50 && !ok; i++) {
        usleep(20000);
        c = dial(e->port);
        send_all(c, "PING\r\n", 6);
        char got[64] = "";
        size_t n = recv_n(c, got, 7, 2000);
        ok = n == 7 && memcmp(got, "+PONG\r\n", 7) == 0;
        close(c);
    }
    assert_true(ok);
    close(b);
    stop(e);
}

static void test_idle_timeout(void **state)
{
    (void)state;
    /* Below a second: the sweep runs as often as the timeout. */
    struct env *e = start(0, 400, 0);
    int fd = dial(e->port);
    send_all(fd, "PING\r\n", 6);
    expect(fd, "+PONG\r\n");
    uint64_t t0 = ud_mono_ns();
    assert_true(closed_within(fd, 5000));
    assert_true(ud_mono_ns() - t0 >= 350000000ull);
    assert_true(ud_mono_ns() - t0 < 2000000000ull);
    close(fd);
    stop(e);
}

static long rss_kb(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, rss = 0;
    if (f == NULL)
        return 0;
    if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
        rss = 0;
    fclose(f);
    return rss * (sysconf(_SC_PAGESIZE) / 1024);
}

/* A client that sends but does not read costs bounded memory and delays nobody. */
static void test_slow_reader(void **state)
{
    (void)state;
    struct env *e = start(0, 0, 256u << 10);
    char errmsg[UD_ERRMSG_SIZE];
    struct ud_ns *ns;
    size_t vlen = 100u << 10;
    char *v = malloc(vlen);
    memset(v, 'v', vlen);
    assert_int_equal(ud_registry_acquire(e->reg, "default", &ns), 0);
    assert_int_equal(ud_ns_kv_put(ns, "big", 3, v, vlen, NULL, errmsg), 0);
    ud_registry_release(e->reg, ns);

    int slow = dial(e->port);
    long before = rss_kb();
    /* 1000 GETs: 100 MB of replies that the client does not read. */
    const char *get = "GET big\r\n";
    char *req = malloc(1000 * 9);
    for (int i = 0; i < 1000; i++)
        memcpy(req + i * 9, get, 9);
    send_all(slow, req, 1000 * 9);
    usleep(300000);
    int other = dial(e->port);
    uint64_t t0 = ud_mono_ns();
    send_all(other, "PING\r\n", 6);
    expect(other, "+PONG\r\n");
    assert_true(ud_mono_ns() - t0 < 500000000ull);
    long grown = rss_kb() - before;
    assert_true(grown < 32 * 1024); /* far below the 100 MB the replies add up to */

    /* Then it reads: every reply arrives, whole and in order. */
    size_t one = 9 + vlen + 2; /* "$102400\r\n" + value + CRLF */
    char *buf = malloc(one);
    for (int i = 0; i < 1000; i++) {
        size_t got = recv_n(slow, buf, one, 5000);
        if (got != one)
            fprintf(stderr, "reply %d: %zu bytes\n", i, got);
        assert_int_equal(got, one);
        assert_memory_equal(buf, "$102400\r\nvv", 11);
        assert_memory_equal(buf + one - 3, "v\r\n", 3);
    }
    free(buf);
    free(req);
    free(v);
    close(other);
    close(slow);
    stop(e);
}

/* Stopping answers the writes already under way, then closes. */
static void test_stop_finishes_pending(void **state)
{
    (void)state;
    struct env *e = start(0, 0, 0);
    int fd = dial(e->port);
    send_all(fd, "SLOWSET a 1 200\r\n", 17);
    usleep(50000);
    uv_async_send(&e->stop_async);
    expect(fd, "+OK\r\n");
    assert_true(closed_within(fd, 3000));
    pthread_join(e->thread, NULL);
    assert_true(e->stopped);
    /* stop() would signal again: finish by hand. */
    assert_int_equal(uv_loop_close(&e->loop), 0);
    ud_registry_close(e->reg);
    ud_test_rmtree(e->root);
    free(e->root);
    free(e);
    close(fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pipeline),
        cmocka_unit_test(test_order_with_slow_writes),
        cmocka_unit_test(test_late_completion),
        cmocka_unit_test(test_split_bytes),
        cmocka_unit_test(test_protocol_error_closes),
        cmocka_unit_test(test_max_clients),
        cmocka_unit_test(test_idle_timeout),
        cmocka_unit_test(test_slow_reader),
        cmocka_unit_test(test_stop_finishes_pending),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
