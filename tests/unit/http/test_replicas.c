/* Follower bookkeeping (core/http/replicas.c): acks, lag in records and ms, ISR membership,
 * retention floor, acks=isr waits and timeouts, forgetting silent followers. Time is driven by
 * the test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "core/err.h"
#include "core/http/replicas.h"

static struct ud_replicas *make(uint32_t min_isr, uint64_t lag_ms, uint64_t lag_records)
{
    struct ud_replicas_options o = {.min_isr = min_isr,
                                    .isr_max_lag_ms = lag_ms,
                                    .isr_max_lag_records = lag_records,
                                    .follower_timeout_ms = 30000};
    struct ud_replicas *r = NULL;
    assert_int_equal(ud_replicas_new(&o, &r), 0);
    return r;
}

static int ack(struct ud_replicas *r, const char *ns, const char *id, uint64_t applied,
               uint64_t last, uint64_t now)
{
    struct ud_replica_ack a = {.id = id, .address = "10.0.0.1:4000", .applied_lsn = applied};
    char err[UD_ERRMSG_SIZE] = "";
    return ud_replicas_ack(r, ns, &a, last, now, err);
}

struct seen {
    struct ud_replica_status st[8];
    char ids[8][UD_REPLICA_ID_MAX + 1];
    size_t n;
};

static void collect(void *arg, const struct ud_replica_status *st)
{
    struct seen *s = arg;
    if (s->n < 8) {
        s->st[s->n] = *st;
        strcpy(s->ids[s->n], st->id);
        s->n++;
    }
}

static void test_lag_and_isr(void **state)
{
    (void)state;
    struct ud_replicas *r = make(1, 1000, 0);
    /* LSN 10 visible at t=0, 20 at t=500, 30 at t=2000. */
    ud_replicas_observe(r, "a", 10, 0);
    ud_replicas_observe(r, "a", 20, 500);
    assert_int_equal(ack(r, "a", "f1", 10, 20, 600), 0);
    assert_int_equal(ack(r, "a", "f2", 20, 20, 600), 0);
    ud_replicas_observe(r, "a", 30, 2000);

    struct seen s = {0};
    assert_int_equal(ud_replicas_list(r, "a", 2100, collect, &s), 2);
    /* f1 misses LSNs 11..: first seen at t=500 -> 1600 ms behind, 20 records, out of the ISR
     * (lag bound 1000 ms; its last ack is 1500 ms old too). */
    assert_string_equal(s.ids[0], "f1");
    assert_int_equal(s.st[0].lag_records, 20);
    assert_int_equal(s.st[0].lag_ms, 1600);
    assert_false(s.st[0].in_isr);
    assert_string_equal(s.st[0].address, "10.0.0.1:4000");
    /* f2 misses 21..30, first seen at t=2000: 100 ms behind, but silent for 1500 ms. */
    assert_int_equal(s.st[1].lag_records, 10);
    assert_int_equal(s.st[1].lag_ms, 100);
    assert_false(s.st[1].in_isr);

    /* f2 acks everything: in the ISR, lag 0; the floor follows it alone. */
    assert_int_equal(ack(r, "a", "f2", 30, 30, 2100), 0);
    uint32_t isr, n;
    ud_replicas_count(r, "a", 2100, &isr, &n);
    assert_int_equal(isr, 1);
    assert_int_equal(n, 2);
    assert_int_equal(ud_replicas_retain_floor(r, "a", 2100), 31);
    /* f1 catches up too: the floor is the lowest ISR follower's next LSN. */
    assert_int_equal(ack(r, "a", "f1", 25, 30, 2150), 0);
    s.n = 0;
    ud_replicas_list(r, "a", 2200, collect, &s);
    assert_int_equal(s.st[0].lag_ms, 200); /* 26.. first seen at t=2000 */
    assert_true(s.st[0].in_isr);
    assert_int_equal(ud_replicas_retain_floor(r, "a", 2200), 26);
    /* Another namespace is separate; none -> floor 0. */
    assert_int_equal(ud_replicas_retain_floor(r, "b", 2200), 0);
    ud_replicas_count(r, "b", 2200, &isr, &n);
    assert_int_equal(n, 0);

    /* A record bound also applies. */
    ud_replicas_free(r);
    r = make(1, 60000, 5);
    ud_replicas_observe(r, "a", 100, 0);
    assert_int_equal(ack(r, "a", "f1", 94, 100, 1), 0);
    ud_replicas_count(r, "a", 2, &isr, &n);
    assert_int_equal(isr, 0);
    assert_int_equal(ack(r, "a", "f1", 95, 100, 3), 0);
    ud_replicas_count(r, "a", 4, &isr, &n);
    assert_int_equal(isr, 1);
    ud_replicas_free(r);
}

static void test_bad_acks(void **state)
{
    (void)state;
    struct ud_replicas *r = make(1, 1000, 0);
    char err[UD_ERRMSG_SIZE];
    struct ud_replica_ack a = {.id = "f1", .applied_lsn = 11};
    assert_int_equal(ud_replicas_ack(r, "a", &a, 10, 0, err), UD_EINVAL);
    assert_non_null(strstr(err, "beyond"));
    a.applied_lsn = 5;
    a.id = "";
    assert_int_equal(ud_replicas_ack(r, "a", &a, 10, 0, err), UD_EINVAL);
    assert_non_null(strstr(err, "\"id\""));
    a.id = "has space";
    assert_int_equal(ud_replicas_ack(r, "a", &a, 10, 0, err), UD_EINVAL);
    a.id = "ok";
    a.address = "bad address";
    assert_int_equal(ud_replicas_ack(r, "a", &a, 10, 0, err), UD_EINVAL);
    assert_non_null(strstr(err, "\"address\""));
    assert_int_equal(ud_replicas_followers(r), 0);
    /* subtree_min_lsn: reported when below the applied LSN, else the applied LSN. */
    a.address = NULL;
    a.subtree_min_lsn = 3;
    assert_int_equal(ud_replicas_ack(r, "a", &a, 10, 0, err), 0);
    struct seen s = {0};
    ud_replicas_list(r, NULL, 0, collect, &s);
    assert_int_equal(s.st[0].subtree_min_lsn, 3);
    assert_string_equal(s.st[0].address, "");
    ud_replicas_free(r);
}

struct waited {
    int calls;
    int status;
    uint32_t acked, needed;
};

static void on_wait(void *arg, int status, uint32_t acked, uint32_t needed)
{
    struct waited *w = arg;
    w->calls++;
    w->status = status;
    w->acked = acked;
    w->needed = needed;
}

static void test_waits(void **state)
{
    (void)state;
    struct ud_replicas *r = make(2, 1000, 0);
    struct waited w1 = {0}, w2 = {0}, w3 = {0};
    assert_int_equal(ud_replicas_wait(r, "a", 5, 1000, 0, on_wait, &w1), 0);
    assert_int_equal(ud_replicas_wait(r, "a", 7, 1000, 0, on_wait, &w2), 0);
    assert_int_equal(ud_replicas_wait(r, "a", 9, 500, 0, on_wait, &w3), 0);
    assert_int_equal(ud_replicas_waiting(r), 3);
    /* One follower at 6: not enough for min_isr 2. */
    assert_int_equal(ack(r, "a", "f1", 6, 10, 10), 0);
    assert_int_equal(w1.calls, 0);
    /* A follower of another namespace does not count. */
    assert_int_equal(ack(r, "b", "f2", 10, 10, 10), 0);
    assert_int_equal(w1.calls, 0);
    /* A second one at 5: the wait for 5 is satisfied, not the one for 7. */
    assert_int_equal(ack(r, "a", "f2", 5, 10, 20), 0);
    assert_int_equal(w1.calls, 1);
    assert_int_equal(w1.status, 0);
    assert_int_equal(w1.acked, 2);
    assert_int_equal(w2.calls, 0);
    /* The wait for 9 times out at 500 naming how many acknowledged. */
    assert_int_equal(ud_replicas_tick(r, 499), 500);
    assert_int_equal(w3.calls, 0);
    ud_replicas_tick(r, 500);
    assert_int_equal(w3.calls, 1);
    assert_int_equal(w3.status, UD_ETIMEDOUT);
    assert_int_equal(w3.acked, 0);
    assert_int_equal(w3.needed, 2);
    /* Already satisfied: answered at once, no callback. */
    struct waited w4 = {0};
    assert_int_equal(ud_replicas_wait(r, "a", 5, 2000, 600, on_wait, &w4), 1);
    assert_int_equal(w4.calls, 0);
    /* The namespace is deleted: the wait for 7 ends with UD_ECLOSED, its followers go. */
    ud_replicas_forget_ns(r, "a");
    assert_int_equal(w2.calls, 1);
    assert_int_equal(w2.status, UD_ECLOSED);
    assert_int_equal(ud_replicas_list(r, "a", 700, NULL, NULL), 0);
    assert_int_equal(ud_replicas_list(r, "b", 700, NULL, NULL), 1);
    /* Freeing answers what is left. */
    struct waited w5 = {0};
    assert_int_equal(ud_replicas_wait(r, "b", 50, 5000, 700, on_wait, &w5), 0);
    ud_replicas_free(r);
    assert_int_equal(w5.calls, 1);
    assert_int_equal(w5.status, UD_ECLOSED);
}

static void test_forget_silent(void **state)
{
    (void)state;
    struct ud_replicas *r = make(1, 1000, 0);
    assert_int_equal(ack(r, "a", "f1", 1, 1, 0), 0);
    assert_int_equal(ack(r, "a", "f2", 1, 1, 20000), 0);
    assert_int_equal(ud_replicas_tick(r, 29999), 30000);
    assert_int_equal(ud_replicas_followers(r), 2);
    ud_replicas_tick(r, 30000);
    assert_int_equal(ud_replicas_followers(r), 1);
    struct seen s = {0};
    ud_replicas_list(r, "a", 30000, collect, &s);
    assert_string_equal(s.ids[0], "f2");
    /* A re-ack brings a follower back; an ack with a lower LSN is believed (restarted from a
     * snapshot, lost an unsynced tail). */
    assert_int_equal(ack(r, "a", "f1", 1, 5, 30001), 0);
    assert_int_equal(ack(r, "a", "f2", 0, 5, 30001), 0);
    s.n = 0;
    ud_replicas_list(r, "a", 30001, collect, &s);
    assert_int_equal(s.n, 2);
    assert_int_equal(s.st[0].applied_lsn, 0);
    ud_replicas_free(r);
}

static void test_observation_spacing(void **state)
{
    (void)state;
    struct ud_replicas *r = make(1, 100000, 0);
    /* Observations 1 ms apart share entries (10 ms): the lag is never under-reported by more
     * than the spacing, and a lag older than the ring reads as at least the ring's age. */
    for (uint64_t t = 0; t < 20000; t++)
        ud_replicas_observe(r, "a", t + 1, t);
    assert_int_equal(ack(r, "a", "f", 19000, 20000, 20000), 0);
    struct seen s = {0};
    ud_replicas_list(r, "a", 20000, collect, &s);
    assert_true(s.st[0].lag_ms >= 1000 && s.st[0].lag_ms <= 1010);
    assert_int_equal(ack(r, "a", "f", 1, 20000, 20000), 0);
    s.n = 0;
    ud_replicas_list(r, "a", 20000, collect, &s);
    assert_true(s.st[0].lag_ms >= 10000);
    ud_replicas_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lag_and_isr),
        cmocka_unit_test(test_bad_acks),
        cmocka_unit_test(test_waits),
        cmocka_unit_test(test_forget_silent),
        cmocka_unit_test(test_observation_spacing),
    };
    return cmocka_run_group_tests_name("replicas", tests, NULL, NULL);
}
