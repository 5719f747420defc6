/* Flushes written in several LMDB transactions (docs/engine.md "Flush"): a flush that stops after
 * any of its transactions, as a crash there leaves the store (ahead of its checkpoint), reads back
 * exactly the same state before and after reopening, for every kind of record; and the anonymous
 * memory of a flush into a large tree stays bounded. */
#include "tests/unit/engine/helpers.h"

#include "core/arena.h"
#include "core/crc32c.h"
#include "core/endian.h"
#include "core/keyspace.h"
#include "core/store.h"
#include "proto/record.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <unistd.h>

/* --- the visible state as text ---------------------------------------------------------------- */

struct dump {
    char *s;
    size_t n, cap;
};

__attribute__((format(printf, 2, 3))) static void dump_add(struct dump *d, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (d->n + (size_t)len + 1 > d->cap) {
        d->cap = (d->n + (size_t)len + 1) * 2;
        d->s = realloc(d->s, d->cap);
        assert_non_null(d->s);
    }
    va_start(ap, fmt);
    vsnprintf(d->s + d->n, d->cap - d->n, fmt, ap);
    va_end(ap);
    d->n += (size_t)len;
}

static int dump_kv(void *arg, const uint8_t *key, size_t key_len, const uint8_t *value,
                   size_t value_len, uint64_t lsn)
{
    dump_add(arg, "kv %.*s=%.*s@%llu\n", (int)key_len, (const char *)key, (int)value_len,
             (const char *)value, (unsigned long long)lsn);
    return 0;
}

static int dump_col(void *arg, const uint8_t *row, size_t row_len, const uint8_t *name,
                    size_t name_len, const uint8_t *value, size_t value_len, uint64_t lsn)
{
    dump_add(arg, "row %.*s.%.*s=%.*s@%llu\n", (int)row_len, (const char *)row, (int)name_len,
             (const char *)name, (int)value_len, (const char *)value, (unsigned long long)lsn);
    return 0;
}

#define NLOBS 6

/* Every KV pair and row column (paged scans, so merges across pages count too), and each LOB's
 * size, commit LSN and checksum, with the LSN of every version: replay must rebuild the very same
 * versions, not only the same values. */
static char *dump_state(struct ud_ns *ns)
{
    struct dump d = {0};
    struct ud_buf next = {0};
    do {
        struct ud_scan sc = {NULL, 0, next.data, next.len, 7};
        assert_int_equal(ud_ns_kv_scan(ns, &sc, dump_kv, &d, &next), 0);
    } while (next.len > 0);
    do {
        struct ud_scan sc = {NULL, 0, next.data, next.len, 3};
        assert_int_equal(ud_ns_row_scan(ns, &sc, dump_col, &d, &next), 0);
    } while (next.len > 0);
    ud_buf_free(&next);
    for (int i = 0; i < NLOBS; i++) {
        char key[16];
        snprintf(key, sizeof key, "lob%d", i);
        struct ud_lob_reader *r = NULL;
        uint64_t size = 0, lsn = 0;
        int rc = ud_ns_lob_open(ns, key, strlen(key), &r, &size, &lsn);
        if (rc == UD_ENOTFOUND) {
            dump_add(&d, "lob %s absent\n", key);
            continue;
        }
        assert_int_equal(rc, 0);
        uint32_t crc = 0;
        uint64_t got = 0;
        for (;;) {
            const uint8_t *data;
            size_t len;
            assert_int_equal(ud_lob_reader_next(r, &data, &len), 0);
            if (len == 0)
                break;
            crc = ud_crc32c(crc, data, len);
            got += len;
        }
        ud_lob_reader_close(r);
        assert_int_equal(got, size);
        dump_add(&d, "lob %s size %llu crc %08x@%llu\n", key, (unsigned long long)size, crc,
                 (unsigned long long)lsn);
    }
    return d.s;
}

static void expect_state(struct ud_ns *ns, const char *want, const char *when)
{
    char *got = dump_state(ns);
    if (strcmp(got, want) != 0)
        print_message("state %s differs:\n--- want\n%s--- got\n%s", when, want, got);
    assert_string_equal(got, want);
    free(got);
}

/* --- writes of every kind --------------------------------------------------------------------- */

static void write_lob(struct ud_ns *ns, const char *key, uint64_t seed, size_t size)
{
    char errmsg[UD_ERRMSG_SIZE] = "";
    uint8_t id[16], buf[700];
    CHECK_RC(ud_ns_txn_begin(ns, UD_OP_PUT, UD_ENTRY_LOB, id, NULL, errmsg), 0, errmsg);
    for (size_t off = 0; off < size; off += sizeof buf) {
        size_t len = size - off < sizeof buf ? size - off : sizeof buf;
        uint64_t s = seed * 7919 + off;
        ud_test_fill(&s, buf, len);
        CHECK_RC(ud_ns_txn_lob(ns, id, key, strlen(key), off, buf, len, NULL, errmsg), 0, errmsg);
    }
    CHECK_RC(ud_ns_txn_commit(ns, id, NULL, errmsg), 0, errmsg);
}

static void delete_lob(struct ud_ns *ns, const char *key)
{
    char errmsg[UD_ERRMSG_SIZE] = "";
    uint8_t id[16];
    CHECK_RC(ud_ns_txn_begin(ns, UD_OP_DELETE, UD_ENTRY_LOB, id, NULL, errmsg), 0, errmsg);
    CHECK_RC(ud_ns_txn_lob(ns, id, key, strlen(key), 0, NULL, 0, NULL, errmsg), 0, errmsg);
    CHECK_RC(ud_ns_txn_commit(ns, id, NULL, errmsg), 0, errmsg);
}

/* A committed KV transaction putting (or, with value NULL, deleting) keys <prefix><first>..
 * <prefix><first+n-1>, numbers of `digits` digits. */
static void kv_txn(struct ud_ns *ns, const char *prefix, int digits, int first, int n,
                   const char *value)
{
    char errmsg[UD_ERRMSG_SIZE] = "", key[32];
    uint8_t id[16];
    CHECK_RC(ud_ns_txn_begin(ns, value ? UD_OP_PUT : UD_OP_DELETE, UD_ENTRY_KV, id, NULL, errmsg),
             0, errmsg);
    for (int i = first; i < first + n; i++) {
        snprintf(key, sizeof key, "%s%0*d", prefix, digits, i);
        CHECK_RC(
            ud_ns_txn_kv(ns, id, key, strlen(key), value, value ? strlen(value) : 0, NULL, errmsg),
            0, errmsg);
    }
    CHECK_RC(ud_ns_txn_commit(ns, id, NULL, errmsg), 0, errmsg);
}

/* UPDATE transactions of a KV key, a row and a LOB of the base, each deleted afterwards. */
static void update_then_delete(struct ud_ns *ns)
{
    char errmsg[UD_ERRMSG_SIZE] = "";
    uint8_t id[16], chunk[10] = "updated!!!";
    CHECK_RC(ud_ns_txn_begin(ns, UD_OP_UPDATE, UD_ENTRY_KV, id, NULL, errmsg), 0, errmsg);
    CHECK_RC(ud_ns_txn_kv(ns, id, "k100", 4, "upd", 3, NULL, errmsg), 0, errmsg);
    CHECK_RC(ud_ns_txn_commit(ns, id, NULL, errmsg), 0, errmsg);
    CHECK_RC(ud_ns_txn_begin(ns, UD_OP_UPDATE, UD_ENTRY_ROW, id, NULL, errmsg), 0, errmsg);
    struct ud_col col = {(const uint8_t *)"a", 1, (const uint8_t *)"upd", 3};
    struct ud_row row = {(const uint8_t *)"r05", 3, &col, 1};
    CHECK_RC(ud_ns_txn_row(ns, id, &row, NULL, errmsg), 0, errmsg);
    CHECK_RC(ud_ns_txn_commit(ns, id, NULL, errmsg), 0, errmsg);
    CHECK_RC(ud_ns_txn_begin(ns, UD_OP_UPDATE, UD_ENTRY_LOB, id, NULL, errmsg), 0, errmsg);
    CHECK_RC(ud_ns_txn_lob(ns, id, "lob2", 4, 0, chunk, sizeof chunk, NULL, errmsg), 0, errmsg);
    CHECK_RC(ud_ns_txn_commit(ns, id, NULL, errmsg), 0, errmsg);
    del_s(ns, "k100");
    del_row(ns, "r05", NULL);
    delete_lob(ns, "lob2");
}

/* The store's contents before the memtable under test: flushed entirely. */
static void write_base(struct ud_ns *ns)
{
    char key[32], val[32];
    for (int i = 0; i < 120; i++) {
        snprintf(key, sizeof key, "k%03d", i);
        snprintf(val, sizeof val, "base-%d", i);
        put_s(ns, key, val);
    }
    for (int i = 0; i < 10; i++) {
        snprintf(key, sizeof key, "r%02d", i);
        put_row(ns, key, "a", "a0", "b", "b0", "c", "c0", NULL);
    }
    for (int i = 0; i < 4; i++) {
        snprintf(key, sizeof key, "lob%d", i);
        write_lob(ns, key, (uint64_t)i + 1, 1500 + 300 * (size_t)i);
    }
    kv_txn(ns, "t", 1, 0, 5, "txn-base");
    flush_ns(ns);
}

/* The memtable whose flush is interrupted: overwrites, deletes, new keys, row column puts and
 * deletes, whole-row deletes (one followed by a new column), LOB overwrite, delete and creation,
 * committed transactions, a batch, and a transaction still open at the flush (its BEGIN goes into
 * the checkpoint's table). Returns the open transaction's id in open_id. */
static void write_changes(struct ud_ns *ns, uint8_t open_id[16])
{
    char key[32], val[32], errmsg[UD_ERRMSG_SIZE] = "";
    for (int i = 0; i < 40; i++) {
        snprintf(key, sizeof key, "k%03d", i);
        snprintf(val, sizeof val, "new-%d", i);
        put_s(ns, key, val);
    }
    for (int i = 40; i < 60; i++) {
        snprintf(key, sizeof key, "k%03d", i);
        del_s(ns, key);
    }
    for (int i = 0; i < 40; i++) {
        snprintf(key, sizeof key, "n%03d", i);
        snprintf(val, sizeof val, "fresh-%d", i);
        put_s(ns, key, val);
    }
    put_s(ns, "k000", "twice"); /* a second version in the same memtable */
    put_row(ns, "r00", "a", "a1", NULL);
    del_row(ns, "r01", "b", NULL);
    del_row(ns, "r02", NULL);
    del_row(ns, "r03", NULL);
    put_row(ns, "r03", "d", "d1", NULL);
    put_row(ns, "r04", "e", "e1", NULL);
    for (int i = 10; i < 15; i++) {
        snprintf(key, sizeof key, "r%02d", i);
        put_row(ns, key, "x", "x1", "y", "y1", NULL);
    }
    write_lob(ns, "lob0", 100, 2100);
    delete_lob(ns, "lob1");
    write_lob(ns, "lob4", 104, 900);
    kv_txn(ns, "k", 3, 60, 5, NULL);
    /* Updates whose targets a later record deletes: replayed over a store that a partial flush
     * already brought past the delete, they must be accepted as they were once. */
    update_then_delete(ns);
    kv_txn(ns, "t", 1, 3, 4, "txn-new");
    struct ud_kv batch[3] = {{(const uint8_t *)"b1", 2, (const uint8_t *)"v1", 2},
                             {(const uint8_t *)"b2", 2, (const uint8_t *)"v2", 2},
                             {(const uint8_t *)"k070", 4, (const uint8_t *)"v3", 2}};
    CHECK_RC(ud_ns_kv_batch_put(ns, batch, 3, NULL, errmsg), 0, errmsg);
    CHECK_RC(ud_ns_txn_begin(ns, UD_OP_PUT, UD_ENTRY_KV, open_id, NULL, errmsg), 0, errmsg);
    CHECK_RC(ud_ns_txn_kv(ns, open_id, "open1", 5, "o1", 2, NULL, errmsg), 0, errmsg);
    CHECK_RC(ud_ns_txn_kv(ns, open_id, "k005", 4, "o2", 2, NULL, errmsg), 0, errmsg);
}

/* --- the interrupted flush -------------------------------------------------------------------- */

static struct ud_engine_options chunked_opts(const char *dir)
{
    struct ud_engine_options o = test_opts(dir);
    o.flush_txn_bytes = 16u << 10; /* a few entries per transaction */
    o.map_size = 64u << 10;        /* grown by transactions in the middle of flushes */
    return o;
}

/* How many KV values the LMDB environment in dir holds with an LSN past its checkpoint, read with
 * the store's own API (a namespace's store after the namespace is closed, or a copy). */
static int store_ahead(const char *dir, uint64_t *checkpoint)
{
    struct ud_store_options so = {.dir = dir};
    struct ud_store *s = NULL;
    char errmsg[UD_ERRMSG_SIZE] = "";
    CHECK_RC(ud_store_open(&so, &s, errmsg), 0, errmsg);
    struct ud_checkpoint cp;
    CHECK_RC(ud_store_read_checkpoint(s, &cp, errmsg), 0, errmsg);
    *checkpoint = cp.flushed_lsn;
    free(cp.txns);
    struct ud_store_snap *snap;
    assert_int_equal(ud_store_snap_begin(s, &snap), 0);
    struct ud_store_cursor *c;
    assert_int_equal(ud_store_cursor_open(snap, UD_SPACE_KV, &c), 0);
    int ahead = 0;
    for (int rc = ud_store_cursor_seek(c, NULL, 0); rc == 0; rc = ud_store_cursor_next(c)) {
        const uint8_t *k, *v;
        size_t kl, vl;
        assert_int_equal(ud_store_cursor_get(c, &k, &kl, &v, &vl), 0);
        assert_true(vl >= 8);
        if (ud_get_le64(v) > cp.flushed_lsn)
            ahead++;
    }
    ud_store_cursor_close(c);
    ud_store_snap_end(snap);
    ud_store_close(s);
    return ahead;
}

/* Runs the scenario with the flush stopped after `stop_after` transactions (negative: not stopped)
 * and returns how many transactions the changes' flush took (or had committed). */
static uint64_t interrupted_flush(long stop_after)
{
    char *dir = ud_test_tmpdir("engine-flush-cut");
    struct ud_engine_options o = chunked_opts(dir);
    struct ud_ns *ns = open_ns(&o);
    write_base(ns);
    struct ud_ns_stats st;
    ud_ns_stats(ns, &st);
    uint64_t base_lsn = st.flushed_lsn, base_txns = st.flush_txns;
    uint8_t open_id[16];
    write_changes(ns, open_id);
    char *want = dump_state(ns);

    char errmsg[UD_ERRMSG_SIZE] = "";
    ud_flush_fail_after(stop_after);
    int rc = ud_ns_flush(ns, errmsg);
    ud_ns_stats(ns, &st);
    uint64_t txns = st.flush_txns - base_txns;
    if (stop_after < 0) {
        CHECK_RC(rc, 0, errmsg);
        assert_true(txns > 10); /* the budget split it */
    } else {
        CHECK_RC(rc, UD_EIO, errmsg);
        assert_int_equal(txns, (uint64_t)stop_after);
        assert_int_equal(st.flushed_lsn, base_lsn);
        /* The sealed memtable stays in the read view over the partly written store. */
        expect_state(ns, want, "after the interrupted flush");
    }
    ud_ns_close(ns);
    ud_flush_fail_after(-1);

    if (stop_after > 0) {
        /* What a crash there leaves: data past the checkpoint (KV keys come first in the
         * memtable, so the first transactions hold some). */
        uint64_t cp = 0;
        char path[4096];
        snprintf(path, sizeof path, "%s/lmdb", dir);
        int ahead = store_ahead(path, &cp);
        assert_int_equal(cp, base_lsn);
        assert_true(ahead > 0);
    }

    /* Replay from the old checkpoint over the store writes the same versions again. */
    ns = open_ns(&o);
    expect_state(ns, want, "after reopening");
    CHECK_RC(ud_ns_txn_commit(ns, open_id, NULL, errmsg), 0, errmsg);
    free(want);
    want = dump_state(ns);
    assert_non_null(strstr(want, "kv open1=o1@"));
    assert_non_null(strstr(want, "kv k005=o2@"));
    flush_ns(ns);
    ud_ns_stats(ns, &st);
    assert_int_equal(st.flushed_lsn, st.last_lsn);
    expect_state(ns, want, "after the complete flush");
    ud_ns_close(ns);
    ns = open_ns(&o);
    expect_state(ns, want, "after reopening the flushed store");
    ud_ns_close(ns);
    free(want);
    ud_test_rmtree(dir);
    free(dir);
    return txns;
}

static void test_flush_interrupted_anywhere(void **state)
{
    (void)state;
    uint64_t total = interrupted_flush(-1);
    print_message("# the changes' flush takes %llu transactions\n", (unsigned long long)total);
    /* Stopped before its first transaction, after each one but the last. */
    for (long cut = 0; cut < (long)total; cut++)
        interrupted_flush(cut);
}

/* --- copies of the store (snapshots, backups) ------------------------------------------------- */

struct copy_job {
    struct ud_ns *ns;
    int fd; /* the pipe's write end, closed by the job */
    int rc;
    pthread_t thread;
};

static void *copy_main(void *arg)
{
    struct copy_job *j = arg;
    char errmsg[UD_ERRMSG_SIZE] = "";
    j->rc = ud_ns_snapshot_copy(j->ns, j->fd, errmsg);
    if (j->rc != 0)
        print_message("copy: %s\n", errmsg);
    close(j->fd);
    return NULL;
}

/* Starts a snapshot copy into a pipe; returns the read end. */
static int copy_start(struct copy_job *j, struct ud_ns *ns)
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    j->ns = ns;
    j->fd = p[1];
    assert_int_equal(pthread_create(&j->thread, NULL, copy_main, j), 0);
    return p[0];
}

/* Whether the copy wrote anything within ms milliseconds. */
static int copy_started(int rfd, int ms)
{
    struct pollfd pfd = {.fd = rfd, .events = POLLIN};
    return poll(&pfd, 1, ms) == 1;
}

/* Reads the copy to its end into dir/data.mdb and waits for the job. */
static void copy_finish(struct copy_job *j, int rfd, const char *dir)
{
    assert_int_equal(mkdir(dir, 0755), 0);
    char path[4096];
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    int out = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(out >= 0);
    char buf[65536];
    ssize_t n;
    while ((n = read(rfd, buf, sizeof buf)) > 0)
        assert_int_equal(write(out, buf, (size_t)n), n);
    assert_int_equal(n, 0);
    close(out);
    close(rfd);
    pthread_join(j->thread, NULL);
    assert_int_equal(j->rc, 0);
}

/* A copy never holds part of a flush: one whose read transaction has begun lets a flush run in
 * several transactions, and one asked for while a flush is stopped halfway waits for its last. */
static void test_copy_and_flush_transactions(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("engine-flush-copy");
    struct ud_engine_options o = chunked_opts(dir);
    /* No growth: it would wait for the copy, which waits for this thread to read the pipe. */
    o.map_size = 64u << 20;
    struct ud_ns *ns = open_ns(&o);
    /* A store of ~1 MiB: much more than the pipe holds. */
    char key[32], val[512];
    memset(val, 'p', sizeof val);
    for (int i = 0; i < 2000; i++) {
        snprintf(key, sizeof key, "pad%05d", i);
        put_kv(ns, key, strlen(key), val, sizeof val, NULL);
    }
    write_base(ns);
    uint8_t open_id[16];
    write_changes(ns, open_id);
    struct ud_ns_stats st;
    ud_ns_stats(ns, &st);
    uint64_t base_lsn = st.flushed_lsn, txns0 = st.flush_txns;
    char copy_dir[4096];
    uint64_t cp = 0;

    /* The copy blocks on the full pipe, holding its read transaction. */
    struct copy_job j;
    int rfd = copy_start(&j, ns);
    assert_true(copy_started(rfd, 10000));
    flush_ns(ns);
    ud_ns_stats(ns, &st);
    /* Its read transaction has begun: the flush is not held to one transaction for as long as
     * the copy lasts, and the copy holds none of it. */
    print_message("# flush during a copy: %llu transactions\n",
                  (unsigned long long)(st.flush_txns - txns0));
    assert_true(st.flush_txns - txns0 > 1);
    snprintf(copy_dir, sizeof copy_dir, "%s/copy1", dir);
    copy_finish(&j, rfd, copy_dir);
    assert_int_equal(store_ahead(copy_dir, &cp), 0);
    assert_int_equal(cp, base_lsn);

    /* Stopped after two transactions, the store is ahead of its checkpoint: a copy waits. */
    for (int i = 0; i < 100; i++) {
        snprintf(key, sizeof key, "more%03d", i);
        put_s(ns, key, "m");
    }
    ud_ns_stats(ns, &st);
    txns0 = st.flush_txns;
    char errmsg[UD_ERRMSG_SIZE] = "";
    ud_flush_fail_after(2);
    CHECK_RC(ud_ns_flush(ns, errmsg), UD_EIO, errmsg);
    rfd = copy_start(&j, ns);
    assert_false(copy_started(rfd, 300));
    ud_flush_fail_after(-1);
    int rc = UD_EIO;
    for (int i = 0; i < 5 && rc != 0; i++)
        rc = ud_ns_flush(ns, errmsg);
    CHECK_RC(rc, 0, errmsg);
    ud_ns_stats(ns, &st);
    assert_true(st.flush_txns - txns0 > 10);
    snprintf(copy_dir, sizeof copy_dir, "%s/copy2", dir);
    copy_finish(&j, rfd, copy_dir);
    assert_int_equal(store_ahead(copy_dir, &cp), 0);
    assert_int_equal(cp, st.flushed_lsn);
    ud_ns_close(ns);
    ud_test_rmtree(dir);
    free(dir);
}

/* --- memory of a flush into a large tree ------------------------------------------------------ */

/* Anonymous memory outside the memtables' arenas (their pool of released blocks included). */
static long beyond_arenas_kib(void)
{
    return ud_test_rss_anon_kib() - (long)(ud_arena_mapped_total() >> 10);
}

struct mem_watch {
    _Atomic long peak; /* of beyond_arenas_kib() */
    _Atomic int stop;
};

static void *sample_main(void *arg)
{
    struct mem_watch *w = arg;
    while (!atomic_load(&w->stop)) {
        long now = beyond_arenas_kib();
        if (now > atomic_load(&w->peak))
            atomic_store(&w->peak, now);
        usleep(1000);
    }
    return NULL;
}

/* Random keys over a tree of BIG_KEYS: each one lands in its own leaf page, so one transaction for
 * the whole memtable would dirty (and LMDB keep) a page per key, ~80 MiB here. */
#define BIG_KEYS    300000
#define BIG_UPDATES 90000

static void put_random(struct ud_ns *ns, uint64_t *rng, int n, int keyspace)
{
    char key[32], val[100];
    for (int i = 0; i < n; i++) {
        uint64_t r = 0;
        ud_test_fill(rng, &r, sizeof r);
        snprintf(key, sizeof key, "key:%09d", (int)(r % (uint64_t)keyspace));
        ud_test_fill(rng, val, sizeof val);
        put_kv(ns, key, strlen(key), val, sizeof val, NULL);
    }
}

static void test_flush_memory_bounded(void **state)
{
    (void)state;
    long rss0 = ud_test_rss_anon_kib();
    char *dir = ud_test_tmpdir("engine-flush-mem");
    struct ud_engine_options o = test_opts(dir);
    o.memtable_bytes = 64u << 20; /* one flush of all the updates below */
    o.map_size = 256u << 20;
    struct ud_ns *ns = open_ns(&o);
    uint64_t rng = 42;
    char key[32], val[100];
    memset(val, 'v', sizeof val);
    for (int i = 0; i < BIG_KEYS; i++) {
        snprintf(key, sizeof key, "key:%09d", i);
        put_kv(ns, key, strlen(key), val, sizeof val, NULL);
    }
    flush_ns(ns);
    put_random(ns, &rng, BIG_UPDATES, BIG_KEYS);
    struct ud_ns_stats st;
    ud_ns_stats(ns, &st);
    uint64_t txns0 = st.flush_txns;
    assert_int_equal(st.sealed_memtables, 0);

    struct mem_watch w = {.peak = beyond_arenas_kib()};
    long before = w.peak;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, sample_main, &w), 0);
    flush_ns(ns);
    atomic_store(&w.stop, 1);
    pthread_join(t, NULL);
    ud_ns_stats(ns, &st);
    /* LMDB keeps the page buffers of its largest transaction so far (the load's flushes
     * included): what the process holds beyond the arenas, from its start. */
    long beyond = atomic_load(&w.peak) - rss0;
    print_message("# flush of %d random updates over %d keys: %llu transactions; RssAnon beyond "
                  "the arenas: %ld KiB at the start, %ld KiB before the flush, %ld KiB more than "
                  "at the start at its peak\n",
                  BIG_UPDATES, BIG_KEYS, (unsigned long long)(st.flush_txns - txns0), rss0, before,
                  beyond);
    assert_true(st.flush_txns - txns0 > 1);
#ifndef SANITIZED
    /* One transaction's pages (16 MiB estimated); a single transaction per flush holds ~43 MiB
     * here. (The sanitizer's quarantine keeps freed memory, so there it is only printed.) */
    assert_true(beyond < 20 * 1024);
#endif
    ud_ns_close(ns);
    ud_test_rmtree(dir);
    free(dir);
}

/* Writes the base and the changes, stops their flush after fail_after transactions, closes and
 * reopens the namespace (replay: the records stay in the active memtable). abort_open: the open
 * transaction is aborted first. keep_failing: every flush transaction after the reopen fails too,
 * until ud_flush_fail_after(-1). */
static struct ud_ns *reopen_after_split_flush(const struct ud_engine_options *o, long fail_after,
                                              int abort_open, int keep_failing)
{
    struct ud_ns *ns = open_ns(o);
    write_base(ns);
    uint8_t open_id[16];
    write_changes(ns, open_id);
    if (abort_open)
        CHECK_RC(ud_ns_txn_abort(ns, open_id, NULL, NULL), 0, "abort");
    char errmsg[UD_ERRMSG_SIZE] = "";
    ud_flush_fail_after(fail_after);
    CHECK_RC(ud_ns_flush(ns, errmsg), UD_EIO, errmsg);
    ud_ns_close(ns);
    ud_flush_fail_after(keep_failing ? 0 : -1);
    return open_ns(o);
}

/* After a crash between two flush transactions and a restart, the store is still ahead of its
 * checkpoint until the next complete flush: a copy taken then (a snapshot for a follower) must wait
 * for that flush (the flush_ahead marker reopens the write group), never hold data past its
 * checkpoint. */
static void test_copy_after_restart_of_split_flush(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("engine-flush-copy-restart");
    struct ud_engine_options o = chunked_opts(dir);
    o.map_size = 64u << 20;
    /* While the flush after the reopen keeps failing, the store stays ahead: a copy waits, then
     * gives up. Only the flush_ahead marker tells the reopened namespace so. */
    struct ud_ns *ns = reopen_after_split_flush(&o, 2, 0, 1);
    char errmsg[UD_ERRMSG_SIZE] = "";
    ud_store_set_copy_wait_ms(200);
    int devnull = open("/dev/null", O_WRONLY);
    assert_true(devnull >= 0);
    assert_int_equal(ud_ns_snapshot_copy(ns, devnull, errmsg), UD_EBUSY);
    close(devnull);
    ud_store_set_copy_wait_ms(30000);
    ud_flush_fail_after(-1);
    CHECK_RC(ud_ns_flush(ns, errmsg), 0, errmsg);
    struct copy_job j;
    int rfd = copy_start(&j, ns);
    char copy_dir[4096];
    snprintf(copy_dir, sizeof copy_dir, "%s/copy-after-restart", dir);
    copy_finish(&j, rfd, copy_dir);
    uint64_t cp = 0;
    int ahead = store_ahead(copy_dir, &cp);
    print_message("# copy after restart: checkpoint %llu, %d KV values past it\n",
                  (unsigned long long)cp, ahead);
    assert_int_equal(ahead, 0);
    ud_ns_close(ns);
    ud_test_rmtree(dir);
    free(dir);
}

/* A follower bootstrapped from such a copy applies the records after its checkpoint with
 * ud_ns_apply (LIVE: UPDATE targets are checked): it must accept every one the writer accepted. */
static void test_follower_over_copy_after_restart(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("engine-flush-follower");
    struct ud_engine_options o = chunked_opts(dir);
    o.map_size = 64u << 20;
    struct ud_ns *ns = reopen_after_split_flush(&o, 30, 1, 0);
    char errmsg[UD_ERRMSG_SIZE] = "";
    /* The follower's directory: the copy as its store, a new WAL after the checkpoint. */
    char fdir[4096], ldir[4200];
    snprintf(fdir, sizeof fdir, "%s/follower", dir);
    assert_int_equal(mkdir(fdir, 0755), 0);
    snprintf(ldir, sizeof ldir, "%s/lmdb", fdir);
    struct copy_job j;
    int rfd = copy_start(&j, ns);
    copy_finish(&j, rfd, ldir);
    uint64_t cp = 0;
    print_message("# follower copy: %d KV values past its checkpoint\n", store_ahead(ldir, &cp));
    struct ud_engine_options fo = chunked_opts(fdir);
    fo.map_size = 64u << 20;
    struct ud_ns *f = open_ns(&fo);
    /* Records past the copy's checkpoint for the follower to apply: an UPDATE of a key the base
     * holds, then its delete. */
    uint8_t id[16];
    CHECK_RC(ud_ns_txn_begin(ns, UD_OP_UPDATE, UD_ENTRY_KV, id, NULL, errmsg), 0, errmsg);
    CHECK_RC(ud_ns_txn_kv(ns, id, "k101", 4, "late", 4, NULL, errmsg), 0, errmsg);
    CHECK_RC(ud_ns_txn_commit(ns, id, NULL, errmsg), 0, errmsg);
    del_s(ns, "k101");
    put_s(ns, "late", "v");
    struct ud_wal_reader *r;
    assert_int_equal(ud_ns_stream_open(ns, cp + 1, &r), 0);
    struct ud_ns_stats st;
    ud_ns_stats(ns, &st);
    assert_true(st.last_lsn > cp);
    int rejected = 0;
    for (uint64_t want = cp + 1; want <= st.last_lsn; want++) {
        const uint8_t *data;
        uint32_t len;
        uint64_t lsn;
        assert_int_equal(ud_wal_reader_next(r, &data, &len, &lsn), 0);
        assert_int_equal(lsn, want);
        uint8_t *copy = malloc(len);
        memcpy(copy, data, len);
        uint64_t got = 0;
        int rc = ud_ns_apply(f, copy, len, &got, errmsg);
        free(copy);
        if (rc != 0) {
            print_message("# follower rejects LSN %llu: %s\n", (unsigned long long)lsn, errmsg);
            rejected = 1;
            break;
        }
    }
    ud_wal_reader_close(r);
    ud_ns_close(f);
    ud_ns_close(ns);
    assert_int_equal(rejected, 0);
    ud_test_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        /* First: freed memory of the other test would blur its baseline. */
        cmocka_unit_test(test_flush_memory_bounded),
        cmocka_unit_test(test_flush_interrupted_anywhere),
        cmocka_unit_test(test_copy_and_flush_transactions),
        cmocka_unit_test(test_copy_after_restart_of_split_flush),
        cmocka_unit_test(test_follower_over_copy_after_restart),
    };
    return cmocka_run_group_tests_name("engine-flush", tests, NULL, NULL);
}
