/* Out-of-band catch-up (core/catchup.c): a plan without targets is answered at once, without the
 * worker thread, its loop and HTTP client; a plan with targets runs on its thread as before. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <uv.h>

#include "core/catchup.h"
#include "core/err.h"

/* Threads the catch-up started (linked with -Wl,--wrap=pthread_create). */
static atomic_int threads;

int __real_pthread_create(pthread_t *t, const pthread_attr_t *a, void *(*fn)(void *), void *arg);
int __wrap_pthread_create(pthread_t *t, const pthread_attr_t *a, void *(*fn)(void *), void *arg);
int __wrap_pthread_create(pthread_t *t, const pthread_attr_t *a, void *(*fn)(void *), void *arg)
{
    atomic_fetch_add(&threads, 1);
    return __real_pthread_create(t, a, fn, arg);
}

struct done {
    int calls;
    int rc;
    char errmsg[UD_ERRMSG_SIZE];
};

static void on_done(void *arg, int rc, const char *errmsg, const struct ud_catchup_plan *plan)
{
    (void)plan;
    struct done *d = arg;
    d->calls++;
    d->rc = rc;
    snprintf(d->errmsg, sizeof d->errmsg, "%s", errmsg);
}

static int start(uv_loop_t *loop, struct ud_catchup_plan *plan, struct done *d,
                 struct ud_catchup **c)
{
    static struct ud_engine_options engine;
    struct ud_catchup_options o = {
        .loop = loop,
        .registry = NULL, /* no target here reaches a namespace */
        .ns_root = "/nonexistent",
        .engine = &engine,
        .done = on_done,
        .arg = d,
    };
    char errmsg[UD_ERRMSG_SIZE] = "";
    return ud_catchup_start(&o, plan, c, errmsg);
}

static void run_until_done(uv_loop_t *loop, struct done *d)
{
    for (int i = 0; i < 5000 && d->calls == 0; i++)
        uv_run(loop, UV_RUN_ONCE);
    uv_run(loop, UV_RUN_NOWAIT); /* the catch-up's handle closes after done */
}

/* Nothing to fetch (a restart after a failed restore): done with 0 from the caller's loop, no
 * thread started, no peer needed; a cancel changes nothing. */
static void test_no_targets(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    atomic_store(&threads, 0);
    struct ud_catchup_plan plan = {.snapshot_index = 42};
    struct done d = {0};
    struct ud_catchup *c;
    assert_int_equal(start(&loop, &plan, &d, &c), 0);
    assert_int_equal(plan.snapshot_index, 0); /* moved into the catch-up */
    assert_int_equal(d.calls, 0);             /* never from inside the start */
    uv_run(&loop, UV_RUN_NOWAIT);             /* answered at once */
    assert_int_equal(d.calls, 1);
    assert_int_equal(d.rc, 0);
    assert_int_equal(atomic_load(&threads), 0);
    uv_run(&loop, UV_RUN_NOWAIT);

    struct done d2 = {0};
    assert_int_equal(start(&loop, &plan, &d2, &c), 0);
    ud_catchup_cancel(c);
    run_until_done(&loop, &d2);
    assert_int_equal(d2.calls, 1);
    assert_int_equal(d2.rc, 0);
    assert_int_equal(atomic_load(&threads), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* A plan that waits first (raft restarts after a leader's snapshot did not decode here): done
 * after the wait, still without a thread; a cancel during the wait ends it with UD_ECLOSED. */
static void test_no_targets_after_a_wait(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    atomic_store(&threads, 0);
    struct ud_catchup_plan plan = {.wait_ms = 60};
    struct done d = {0};
    struct ud_catchup *c;
    uint64_t t0 = uv_now(&loop);
    assert_int_equal(start(&loop, &plan, &d, &c), 0);
    char progress[256];
    ud_catchup_progress(c, progress, sizeof progress);
    assert_non_null(strstr(progress, "raft starts again in 60 ms"));
    uv_run(&loop, UV_RUN_NOWAIT);
    assert_int_equal(d.calls, 0);
    run_until_done(&loop, &d);
    uv_update_time(&loop);
    assert_int_equal(d.calls, 1);
    assert_int_equal(d.rc, 0);
    assert_true(uv_now(&loop) - t0 >= 60);

    struct done d2 = {0};
    plan.wait_ms = 60000;
    assert_int_equal(start(&loop, &plan, &d2, &c), 0);
    uv_run(&loop, UV_RUN_NOWAIT);
    ud_catchup_cancel(c);
    run_until_done(&loop, &d2);
    assert_int_equal(d2.calls, 1);
    assert_int_equal(d2.rc, UD_ECLOSED);
    assert_int_equal(atomic_load(&threads), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* A target needs a peer: without one, its thread ends the round with UD_ENOTFOUND, as before. */
static void test_target_without_peer(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    atomic_store(&threads, 0);
    struct ud_catchup_plan plan = {.snapshot_index = 42};
    assert_int_equal(ud_catchup_plan_target(&plan, "alpha", 10), 0);
    struct done d = {0};
    struct ud_catchup *c;
    assert_int_equal(start(&loop, &plan, &d, &c), 0);
    assert_int_equal(plan.ntargets, 0);
    run_until_done(&loop, &d);
    assert_int_equal(d.calls, 1);
    assert_int_equal(d.rc, UD_ENOTFOUND);
    assert_non_null(strstr(d.errmsg, "no peer"));
    assert_int_equal(atomic_load(&threads), 1);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_targets),
        cmocka_unit_test(test_no_targets_after_a_wait),
        cmocka_unit_test(test_target_without_peer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
