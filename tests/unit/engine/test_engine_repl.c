/* Engine, replication side: stream readers and listener, the followers' retention floor, and
 * snapshot copies (core/engine_repl.c). */
#include "tests/unit/engine/helpers.h"

#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <unistd.h>

static void fill(struct ud_ns *ns, int from, int n)
{
    char k[32], v[200];
    memset(v, 'v', sizeof v);
    for (int i = from; i < from + n; i++) {
        snprintf(k, sizeof k, "key%06d", i);
        put_kv(ns, k, strlen(k), v, sizeof v, NULL);
    }
}

static uint64_t first_lsn(struct ud_ns *ns)
{
    struct ud_ns_stats st;
    ud_ns_stats(ns, &st);
    return st.wal_first_lsn;
}

/* Retention runs on the flush thread after each flush: a second flush (of one more record)
 * returns only after the first one's retention pass is over. */
static void flush_and_retain(struct ud_ns *ns, int *next)
{
    fill(ns, (*next)++, 1);
    flush_ns(ns);
    fill(ns, (*next)++, 1);
    flush_ns(ns);
}

static void test_retain_floor(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("engine-floor");
    struct ud_engine_options o = test_opts(dir);
    o.segment_size = 64u << 10;
    o.retention.max_segments = 1;
    struct ud_ns *ns = open_ns(&o);
    assert_int_equal(ud_ns_retain_floor(ns), 0);

    /* An in-sync follower at LSN 0: nothing may go, however many segments are flushed. */
    ud_ns_set_retain_floor(ns, 1);
    fill(ns, 0, 2000);
    int next = 2000;
    flush_and_retain(ns, &next);
    struct ud_ns_stats st;
    ud_ns_stats(ns, &st);
    assert_true(st.wal_segments >= 5);
    assert_int_equal(first_lsn(ns), 1);

    /* It applied up to 1499: the segments wholly below 1500 may go, not the one holding it. */
    ud_ns_set_retain_floor(ns, 1500);
    flush_and_retain(ns, &next);
    uint64_t f = first_lsn(ns);
    assert_true(f > 1 && f <= 1500);
    struct ud_wal_reader *r = NULL;
    assert_int_equal(ud_ns_stream_open(ns, 1500, &r), 0);
    ud_wal_reader_close(r);

    /* No follower in the ISR: retention is the store's alone. */
    ud_ns_set_retain_floor(ns, 0);
    flush_and_retain(ns, &next);
    assert_true(first_lsn(ns) > 1500);
    assert_int_equal(ud_ns_stream_open(ns, 1500, &r), UD_EGONE);
    ud_ns_close(ns);
    ud_test_rmtree(dir);
    free(dir);
}

struct heard {
    atomic_int calls;
    _Atomic uint64_t last;
};

static void on_visible(void *arg, uint64_t lsn)
{
    struct heard *h = arg;
    atomic_fetch_add(&h->calls, 1);
    atomic_store(&h->last, lsn);
}

static void test_stream_reader_and_listener(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("engine-stream");
    struct ud_engine_options o = test_opts(dir);
    struct ud_ns *ns = open_ns(&o);
    struct heard h = {0};
    ud_ns_set_stream_listener(ns, on_visible, &h);
    uint64_t lsn = 0;
    put_kv(ns, "a", 1, "1", 1, &lsn);
    put_kv(ns, "b", 1, "2", 1, &lsn);
    assert_int_equal(atomic_load(&h.calls), 2);
    assert_int_equal(atomic_load(&h.last), lsn);
    uint64_t first, visible;
    ud_ns_stream_range(ns, &first, &visible);
    assert_int_equal(first, 1);
    assert_int_equal(visible, 2);
    /* Beyond last + 1 is the caller's business (the stream waits); at last + 1 a reader tails. */
    struct ud_wal_reader *r = NULL;
    assert_int_equal(ud_ns_stream_open(ns, 4, &r), UD_ERANGE);
    assert_int_equal(ud_ns_stream_open(ns, 1, &r), 0);
    const uint8_t *p;
    uint64_t len, f;
    uint32_t count;
    assert_int_equal(ud_wal_reader_next_run(r, 1u << 20, &p, &len, &f, &count), 0);
    assert_int_equal(f, 1);
    assert_int_equal(count, 2);
    assert_int_equal(ud_wal_reader_next_run(r, 1u << 20, &p, &len, &f, &count), UD_EAGAIN);
    ud_wal_reader_close(r);
    ud_ns_set_stream_listener(ns, NULL, NULL);
    put_kv(ns, "c", 1, "3", 1, NULL);
    assert_int_equal(atomic_load(&h.calls), 2);
    ud_ns_close(ns);
    ud_test_rmtree(dir);
    free(dir);
}

static void test_snapshot_copy(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("engine-snapcopy");
    struct ud_engine_options o = test_opts(dir);
    struct ud_ns *ns = open_ns(&o);
    fill(ns, 0, 100);
    flush_ns(ns);
    put_s(ns, "unflushed", "x");
    char path[4096], errmsg[UD_ERRMSG_SIZE] = "";
    snprintf(path, sizeof path, "%s/copy", dir);
    assert_int_equal(mkdir(path, 0755), 0);
    snprintf(path, sizeof path, "%s/copy/data.mdb", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    CHECK_RC(ud_ns_snapshot_copy(ns, fd, errmsg), 0, errmsg);
    close(fd);
    struct ud_checkpoint cp = {0};
    CHECK_RC(ud_ns_checkpoint(ns, &cp, errmsg), 0, errmsg);
    assert_int_equal(cp.flushed_lsn, 100);
    free(cp.txns);
    ud_ns_close(ns);

    /* The copy is a namespace store: opened with an empty WAL after its checkpoint, it holds the
     * flushed data (the unflushed record is the WAL's, which the copy does not carry). */
    char copy_dir[4096];
    snprintf(copy_dir, sizeof copy_dir, "%s/copy", dir);
    struct ud_store_options so = {.dir = copy_dir};
    struct ud_store *s = NULL;
    CHECK_RC(ud_store_open(&so, &s, errmsg), 0, errmsg);
    struct ud_checkpoint cp2 = {0};
    CHECK_RC(ud_store_read_checkpoint(s, &cp2, errmsg), 0, errmsg);
    assert_int_equal(cp2.flushed_lsn, 100);
    assert_int_equal(cp2.txn_count, 0);
    free(cp2.txns);
    ud_store_close(s);

    /* A closed reading end: the copy fails with an error, it does not hang or kill the process. */
    ns = open_ns(&o);
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    close(fds[0]);
    signal(SIGPIPE, SIG_IGN);
    assert_int_equal(ud_ns_snapshot_copy(ns, fds[1], errmsg), UD_EIO);
    close(fds[1]);
    ud_ns_close(ns);
    ud_test_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_retain_floor),
        cmocka_unit_test(test_stream_reader_and_listener),
        cmocka_unit_test(test_snapshot_copy),
    };
    return cmocka_run_group_tests_name("engine-repl", tests, NULL, NULL);
}
