/* The lingering close (core/linger.c) on loopback TCP: a socket closed with the client's bytes
 * unread still delivers everything it had queued, then ends with FIN, not a reset; the linger
 * ends, each time for its own reason, when the client closes, when the client has everything
 * and stays idle, when the client takes nothing, and when cut. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "core/linger.h"

/* A connected loopback pair: *server is accepted, *client connected; the client's receive
 * buffer is small so that the server's bytes queue on its side. */
static void tcp_pair(int *server, int *client)
{
    int l = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(l >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(l, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(l, 1), 0);
    socklen_t al = sizeof a;
    assert_int_equal(getsockname(l, (struct sockaddr *)&a, &al), 0);
    *client = socket(AF_INET, SOCK_STREAM, 0);
    int rcv = 16384;
    assert_int_equal(setsockopt(*client, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv), 0);
    assert_int_equal(connect(*client, (struct sockaddr *)&a, sizeof a), 0);
    *server = accept(l, NULL, NULL);
    assert_true(*server >= 0);
    close(l);
}

/* Writes without blocking until the socket takes no more (or cap): the bytes written. */
static size_t fill(int fd, size_t cap)
{
    static char buf[65536];
    memset(buf, 'x', sizeof buf);
    size_t total = 0;
    while (total < cap) {
        size_t want = cap - total < sizeof buf ? cap - total : sizeof buf;
        ssize_t n = send(fd, buf, want, MSG_DONTWAIT);
        if (n <= 0)
            break;
        total += (size_t)n;
    }
    return total;
}

struct run {
    uv_loop_t loop;
    uv_timer_t guard;
    int done;
    enum ud_linger_end why;
};

static void on_done(void *arg, enum ud_linger_end why)
{
    struct run *r = arg;
    r->done++;
    r->why = why;
}

static void guard_cb(uv_timer_t *t)
{
    (void)t; /* the linger has not ended: the loop stops and the test fails on r->done */
    uv_stop(t->loop);
}

static void run_init(struct run *r)
{
    memset(r, 0, sizeof *r);
    assert_int_equal(uv_loop_init(&r->loop), 0);
    uv_timer_init(&r->loop, &r->guard);
    uv_timer_start(&r->guard, guard_cb, 20000, 0);
    uv_unref((uv_handle_t *)&r->guard);
}

/* Runs until the linger has ended (its handle closed) or the guard fired. */
static void run_until_done(struct run *r)
{
    uv_ref((uv_handle_t *)&r->guard);
    while (r->done == 0 && uv_run(&r->loop, UV_RUN_ONCE) != 0) {
    }
    uv_close((uv_handle_t *)&r->guard, NULL);
    uv_run(&r->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&r->loop), 0);
}

/* Lingers on server until it ends by itself: why it ended. */
static enum ud_linger_end linger_alone(int server)
{
    struct run r;
    run_init(&r);
    ud_linger_start(&r.loop, server, on_done, &r);
    run_until_done(&r);
    assert_int_equal(r.done, 1);
    return r.why;
}

/* The client's side: reads until EOF or an error, slowly at first. */
struct reader {
    int fd;
    size_t got;
    int err; /* errno of the read that ended it, 0 at EOF */
};

static void *read_all(void *arg)
{
    struct reader *rd = arg;
    char buf[16384];
    for (;;) {
        ssize_t n = recv(rd->fd, buf, sizeof buf, 0);
        if (n > 0) {
            rd->got += (size_t)n;
            if (rd->got < (1u << 20))
                usleep(1000);
            continue;
        }
        rd->err = n == 0 ? 0 : errno;
        close(rd->fd); /* the client's side closes once it has everything */
        return NULL;
    }
}

/* The server closes while the client's request bytes are unread and megabytes of its answer are
 * still queued: the client receives every byte, then EOF. A plain close would reset the
 * connection and drop what was queued. */
static void test_delivers_everything(void **state)
{
    (void)state;
    int server, client;
    tcp_pair(&server, &client);
    char request[65536];
    memset(request, 'r', sizeof request);
    assert_int_equal(send(client, request, sizeof request, 0), (ssize_t)sizeof request);
    size_t sent = fill(server, 8u << 20);
    assert_true(sent > (1u << 20)); /* most of it waits on the server's side */
    struct run r;
    run_init(&r);
    ud_linger_start(&r.loop, server, on_done, &r);
    struct reader rd = {.fd = client};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, read_all, &rd), 0);
    run_until_done(&r);
    pthread_join(t, NULL);
    print_message("# %zu of %zu bytes, then %s\n", rd.got, sent,
                  rd.err == 0 ? "EOF" : strerror(rd.err));
    assert_int_equal(rd.err, 0);
    assert_int_equal(rd.got, sent);
    assert_int_equal(r.done, 1);
    assert_int_equal(r.why, UD_LINGER_CLOSED); /* the reader closed once it had everything */
}

/* The client closes its side once it has read everything: the linger ends. */
static void test_ends_when_client_closes(void **state)
{
    (void)state;
    int server, client;
    tcp_pair(&server, &client);
    assert_int_equal(send(server, "bye", 3, 0), 3);
    struct run r;
    run_init(&r);
    ud_linger_start(&r.loop, server, on_done, &r);
    char buf[8];
    assert_int_equal(recv(client, buf, sizeof buf, 0), 3);
    assert_int_equal(recv(client, buf, sizeof buf, 0), 0); /* FIN */
    close(client);
    run_until_done(&r);
    assert_int_equal(r.done, 1);
    assert_int_equal(r.why, UD_LINGER_CLOSED);
}

/* A client that has everything but neither reads nor closes does not hold the linger. */
static void test_ends_when_client_idles(void **state)
{
    (void)state;
    int server, client;
    tcp_pair(&server, &client);
    assert_int_equal(send(server, "+OK\r\n", 5, 0), 5);
    assert_int_equal(linger_alone(server), UD_LINGER_DRAINED);
    char buf[8];
    assert_int_equal(recv(client, buf, sizeof buf, 0), 5);
    close(client);
}

/* A client that takes none of what is queued for it does not hold the linger either. */
static void test_ends_when_client_stalls(void **state)
{
    (void)state;
    int server, client;
    tcp_pair(&server, &client);
    assert_true(fill(server, 8u << 20) > 0);
    assert_int_equal(linger_alone(server), UD_LINGER_STALLED);
    close(client);
}

/* A cut ends the linger at once (done still comes from the loop, not from the call), even with
 * bytes queued that the client never reads. */
static void test_cut(void **state)
{
    (void)state;
    int server, client;
    tcp_pair(&server, &client);
    assert_true(fill(server, 8u << 20) > 0);
    struct run r;
    run_init(&r);
    struct ud_linger *l = ud_linger_start(&r.loop, server, on_done, &r);
    ud_linger_cut(l);
    assert_int_equal(r.done, 0);
    run_until_done(&r);
    assert_int_equal(r.done, 1);
    assert_int_equal(r.why, UD_LINGER_CUT);
    close(client);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_delivers_everything),
        cmocka_unit_test(test_ends_when_client_closes),
        cmocka_unit_test(test_ends_when_client_idles),
        cmocka_unit_test(test_ends_when_client_stalls),
        cmocka_unit_test(test_cut),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
