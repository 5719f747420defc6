/* RESP reply tests: encoders byte for byte, and the queue that keeps deferred replies in order. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "core/resp/resp.h"

static void assert_buf(const struct ud_resp_buf *b, const char *want, size_t len)
{
    assert_int_equal(b->len, len);
    assert_memory_equal(b->data, want, len);
}

#define S(s) s, sizeof(s) - 1

static void test_encoders(void **state)
{
    (void)state;
    struct ud_resp_buf b = {0};
    ud_resp_add_simple(&b, "OK");
    assert_buf(&b, S("+OK\r\n"));
    b.len = 0;
    ud_resp_add_simple(&b, "a\r\nb");
    assert_buf(&b, S("+a  b\r\n"));
    b.len = 0;
    ud_resp_add_error(&b, "ERR bad\nthing");
    assert_buf(&b, S("-ERR bad thing\r\n"));
    b.len = 0;
    ud_resp_add_errorf(&b, "ERR key is %d bytes", 600);
    assert_buf(&b, S("-ERR key is 600 bytes\r\n"));
    b.len = 0;
    ud_resp_add_int(&b, 0);
    ud_resp_add_int(&b, -42);
    ud_resp_add_int(&b, LLONG_MAX);
    ud_resp_add_int(&b, LLONG_MIN);
    assert_buf(&b, S(":0\r\n:-42\r\n:9223372036854775807\r\n:-9223372036854775808\r\n"));
    b.len = 0;
    ud_resp_add_bulk(&b, "a\0\r\n", 4);
    ud_resp_add_bulk(&b, "", 0);
    ud_resp_add_bulk_str(&b, "hi");
    ud_resp_add_bulk_ull(&b, 18446744073709551615ull);
    assert_buf(&b, S("$4\r\na\0\r\n\r\n$0\r\n\r\n$2\r\nhi\r\n$20\r\n18446744073709551615\r\n"));
    b.len = 0;
    ud_resp_add_null(&b);
    ud_resp_add_null_array(&b);
    ud_resp_add_array(&b, 2);
    ud_resp_add_array(&b, 0);
    assert_buf(&b, S("$-1\r\n*-1\r\n*2\r\n*0\r\n"));
    b.len = 0;
    /* A large bulk grows the buffer in one step. */
    char *big = malloc(1u << 20);
    memset(big, 'x', 1u << 20);
    ud_resp_add_bulk(&b, big, 1u << 20);
    assert_int_equal(b.len, (1u << 20) + 12);
    assert_memory_equal(b.data, "$1048576\r\nx", 11);
    assert_memory_equal(b.data + b.len - 3, "x\r\n", 3);
    free(big);
    ud_resp_buf_free(&b);
}

static void test_printable(void **state)
{
    (void)state;
    char out[32];
    assert_string_equal(ud_resp_printable(out, sizeof out, (const uint8_t *)"abc", 3, 100), "abc");
    assert_string_equal(ud_resp_printable(out, sizeof out, (const uint8_t *)"a\r\n'\xff", 5, 100),
                        "a\\x0d\\x0a\\x27\\xff");
    assert_string_equal(ud_resp_printable(out, sizeof out, (const uint8_t *)"abcdef", 6, 3),
                        "abc...");
    /* Cut by the output size, always terminated. */
    char small[8];
    assert_string_equal(
        ud_resp_printable(small, sizeof small, (const uint8_t *)"abcdefghij", 10, 100), "abcd...");
}

static int ready_calls;

static void count_ready(struct ud_resp_outq *q, void *arg)
{
    (void)q;
    (void)arg;
    ready_calls++;
}

static void test_outq_order(void **state)
{
    (void)state;
    struct ud_resp_outq q;
    ud_resp_outq_init(&q);
    q.on_ready = count_ready;
    ready_calls = 0;

    /* Immediate replies go straight to `ready`. */
    ud_resp_add_simple(ud_resp_outq_buf(&q), "A");
    assert_buf(&q.ready, S("+A\r\n"));
    assert_int_equal(ud_resp_outq_bytes(&q), 4);

    /* A deferred reply holds back everything after it. */
    struct ud_resp_slot *s1 = ud_resp_outq_defer(&q);
    ud_resp_add_simple(ud_resp_outq_buf(&q), "B");
    ud_resp_add_simple(ud_resp_outq_buf(&q), "C");
    struct ud_resp_slot *s2 = ud_resp_outq_defer(&q);
    ud_resp_add_simple(ud_resp_outq_buf(&q), "D");
    assert_int_equal(q.pending, 2);
    assert_buf(&q.ready, S("+A\r\n"));
    assert_int_equal(ud_resp_outq_bytes(&q), 16);

    /* The second finishes first: nothing moves. */
    ud_resp_add_int(ud_resp_slot_buf(s2), 2);
    ud_resp_slot_finish(s2);
    assert_int_equal(ready_calls, 1);
    assert_buf(&q.ready, S("+A\r\n"));
    assert_int_equal(ud_resp_outq_bytes(&q), 20);

    /* The first finishes: all of it is ready, in request order. */
    ud_resp_add_int(ud_resp_slot_buf(s1), 1);
    ud_resp_slot_finish(s1);
    assert_int_equal(q.pending, 0);
    assert_null(q.head);
    assert_buf(&q.ready, S("+A\r\n:1\r\n+B\r\n+C\r\n:2\r\n+D\r\n"));
    assert_int_equal(ud_resp_outq_bytes(&q), q.ready.len);

    /* After the socket took `ready`, new replies go there directly again. */
    q.ready.len = 0;
    ud_resp_add_simple(ud_resp_outq_buf(&q), "E");
    assert_buf(&q.ready, S("+E\r\n"));
    ud_resp_outq_detach(&q);
}

static void test_outq_many(void **state)
{
    (void)state;
    struct ud_resp_outq q;
    struct ud_resp_slot *slots[1000];
    ud_resp_outq_init(&q);
    for (int i = 0; i < 1000; i++) {
        slots[i] = ud_resp_outq_defer(&q);
        if (i % 3 == 0)
            ud_resp_add_simple(ud_resp_outq_buf(&q), "x");
    }
    /* Finish in a scrambled order; the bytes come out in request order. */
    for (int k = 0; k < 1000; k++) {
        int i = (k * 7919) % 1000;
        ud_resp_add_int(ud_resp_slot_buf(slots[i]), i);
        ud_resp_slot_finish(slots[i]);
    }
    struct ud_resp_buf want = {0};
    for (int i = 0; i < 1000; i++) {
        ud_resp_add_int(&want, i);
        if (i % 3 == 0)
            ud_resp_add_simple(&want, "x");
    }
    assert_buf(&q.ready, (const char *)want.data, want.len);
    assert_int_equal(ud_resp_outq_bytes(&q), want.len);
    ud_resp_buf_free(&want);
    ud_resp_outq_detach(&q);
}

/*
 * A connection keeps UD_RESP_MAX_SPARE_SLOTS spares (after a round of more replies than that),
 * each with a buffer of at most UD_RESP_MAX_SPARE_BUF_BYTES: a long reply's buffer is not kept.
 * The spares are taken back by deferring (each reuses a spare and its buffer) and given back
 * empty.
 */
static void assert_spares_capped(struct ud_resp_outq *q)
{
    assert_int_equal(q->nspare, UD_RESP_MAX_SPARE_SLOTS);
    struct ud_resp_slot *slots[UD_RESP_MAX_SPARE_SLOTS];
    for (int i = 0; i < UD_RESP_MAX_SPARE_SLOTS; i++) {
        slots[i] = ud_resp_outq_defer(q);
        assert_int_equal(ud_resp_slot_buf(slots[i])->len, 0);
        assert_true(ud_resp_slot_buf(slots[i])->cap <= UD_RESP_MAX_SPARE_BUF_BYTES);
    }
    assert_int_equal(q->nspare, 0);
    for (int i = 0; i < UD_RESP_MAX_SPARE_SLOTS; i++)
        ud_resp_slot_finish(slots[i]);
    assert_int_equal(q->nspare, UD_RESP_MAX_SPARE_SLOTS);
    assert_int_equal(q->ready.len, 0);
}

/* Slots are reused once sent: rounds of deferred replies, with a long one among them, come out
 * whole and in order, with no earlier round's bytes left in a reused slot. */
static void test_outq_reuse(void **state)
{
    (void)state;
    struct ud_resp_outq q;
    ud_resp_outq_init(&q);
    static char big[10000];
    memset(big, 'v', sizeof big);
    for (int round = 0; round < 4; round++) {
        struct ud_resp_slot *slots[100];
        struct ud_resp_buf want = {0};
        for (int i = 0; i < 100; i++)
            slots[i] = ud_resp_outq_defer(&q);
        /* Finished from the last to the first: every reply waits for the one before it. */
        for (int i = 99; i >= 0; i--) {
            if (i == 50 + round)
                ud_resp_add_bulk(ud_resp_slot_buf(slots[i]), big, sizeof big);
            else
                ud_resp_add_int(ud_resp_slot_buf(slots[i]), round * 1000 + i);
            ud_resp_slot_finish(slots[i]);
        }
        for (int i = 0; i < 100; i++) {
            if (i == 50 + round)
                ud_resp_add_bulk(&want, big, sizeof big);
            else
                ud_resp_add_int(&want, round * 1000 + i);
        }
        assert_int_equal(q.pending, 0);
        assert_buf(&q.ready, (const char *)want.data, want.len);
        assert_int_equal(ud_resp_outq_bytes(&q), want.len);
        ud_resp_buf_free(&want);
        q.ready.len = 0; /* the socket took it */
        assert_spares_capped(&q);
    }
    ud_resp_outq_detach(&q);
    assert_int_equal(q.nspare, 0);
    assert_null(q.spare);
}

static void test_outq_detach(void **state)
{
    (void)state;
    struct ud_resp_outq q;
    ud_resp_outq_init(&q);
    q.on_ready = count_ready;
    ready_calls = 0;
    struct ud_resp_slot *s1 = ud_resp_outq_defer(&q);
    ud_resp_add_simple(ud_resp_outq_buf(&q), "B");
    struct ud_resp_slot *s2 = ud_resp_outq_defer(&q);
    ud_resp_add_int(ud_resp_slot_buf(s2), 1);
    ud_resp_slot_finish(s2);
    /* The connection goes away with s1 still waiting for raft: its finish only frees it. */
    ud_resp_outq_detach(&q);
    ready_calls = 0;
    ud_resp_add_int(ud_resp_slot_buf(s1), 1);
    ud_resp_slot_finish(s1);
    assert_int_equal(ready_calls, 0);
    assert_int_equal(q.ready.len, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encoders),    cmocka_unit_test(test_printable),
        cmocka_unit_test(test_outq_order),  cmocka_unit_test(test_outq_many),
        cmocka_unit_test(test_outq_detach), cmocka_unit_test(test_outq_reuse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
