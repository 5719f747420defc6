/* Engine fault test: a full disk fails the flush; reads keep working, writes continue until
 * max_sealed memtables wait, then are refused with UD_EBUSY, and resume when space returns.
 * Needs a small file system: a tmpfs mounted for the test (skipped without the privilege).
 * And: a damaged store or a WAL that cannot create its next segment is a storage failure of the
 * apply (UD_EIO), never one of the codes a writer of a cluster records as the request's outcome. */
#include "tests/unit/engine/helpers.h"

#include "core/keyspace.h"
#include "core/memtable.h"
#include "core/store.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

static char *g_mnt;
static int g_mounted;

static int teardown(void **state)
{
    (void)state;
    if (g_mounted)
        umount2(g_mnt, MNT_DETACH);
    if (g_mnt != NULL) {
        ud_test_rmtree(g_mnt);
        free(g_mnt);
    }
    g_mounted = 0;
    g_mnt = NULL;
    return 0;
}

/* Mounts a 24 MiB tmpfs for the test (teardown removes it), skipping the test without the
 * privilege; nsdir: the namespace directory in it. */
static void mount_small_fs(const char *name, char *nsdir, size_t cap)
{
    g_mnt = ud_test_tmpdir(name);
    if (mount("tmpfs", g_mnt, "tmpfs", 0, "size=24m") != 0) {
        print_message("# mount tmpfs: %s: skipped (needs CAP_SYS_ADMIN)\n", strerror(errno));
        skip();
    }
    g_mounted = 1;
    snprintf(nsdir, cap, "%s/ns", g_mnt);
}

/* Fills the file system with one file; returns its path (malloc'd). */
static char *fill_disk(const char *dir)
{
    char *path = NULL;
    assert_true(asprintf(&path, "%s/filler", dir) > 0);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    static char zeros[64 << 10];
    size_t chunk = sizeof zeros;
    for (;;) {
        ssize_t n = write(fd, zeros, chunk);
        if (n < 0 && errno == ENOSPC) {
            if (chunk == 1)
                break;
            chunk /= 2;
            continue;
        }
        assert_true(n > 0);
    }
    close(fd);
    return path;
}

/* Removes the filler: the flush, retried, succeeds again. */
static void space_returns(struct ud_ns *ns, const char *filler)
{
    char errmsg[UD_ERRMSG_SIZE] = "";
    assert_int_equal(unlink(filler), 0);
    int rc = UD_ENOSPC;
    for (int i = 0; i < 5 && rc != 0; i++)
        rc = ud_ns_flush(ns, errmsg);
    CHECK_RC(rc, 0, errmsg);
}

static int base_cb(void *arg, const uint8_t *key, size_t key_len, const uint8_t *value,
                   size_t value_len, uint64_t lsn)
{
    (void)lsn;
    char *out = arg;
    size_t n = strlen(out);
    snprintf(out + n, 8192 - n, "%.*s=%.*s;", (int)key_len, (const char *)key, (int)value_len,
             (const char *)value);
    return 0;
}

/* What the base keys and row r1 must look like, whichever layers hold them. */
static void check_layers(struct ud_ns *ns)
{
    char want[8192] = "", got[8192] = "", key[16], v[16];
    for (int i = 0; i < 200; i++) {
        if (i >= 50 && i < 100)
            continue;
        snprintf(key, sizeof key, "base%03d", i);
        snprintf(v, sizeof v, "%s-%d", i < 25 ? "p" : i < 50 ? "o" : "b", i);
        expect_kv(ns, key, v);
        size_t n = strlen(want);
        snprintf(want + n, sizeof want - n, "%s=%s;", key, v);
    }
    for (int i = 50; i < 100; i++) {
        snprintf(key, sizeof key, "base%03d", i);
        expect_kv(ns, key, NULL);
    }
    struct ud_scan sc = {(const uint8_t *)"base", 4, NULL, 0, 1000};
    assert_int_equal(ud_ns_kv_scan(ns, &sc, base_cb, got, NULL), 0);
    assert_string_equal(got, want);
    expect_row(ns, "r1", "e=5;");
}

static void test_full_disk_flush(void **state)
{
    (void)state;
    char nsdir[4096];
    mount_small_fs("engine-fault", nsdir, sizeof nsdir);
    struct ud_engine_options o = test_opts(nsdir);
    o.segment_size = 8u << 20;     /* preallocated: WAL appends never need new space */
    o.memtable_bytes = 512u << 10; /* the memtables together: two of 256 KiB */
    o.max_sealed = 2;
    o.map_size = 8u << 20;
    struct ud_ns *ns = open_ns(&o);
    char errmsg[UD_ERRMSG_SIZE] = "";
    char key[16], val[2048], small[16];

    /* A base in LMDB that the unflushable memtables below will shadow. */
    for (int i = 0; i < 200; i++) {
        snprintf(key, sizeof key, "base%03d", i);
        snprintf(small, sizeof small, "b-%d", i);
        put_s(ns, key, small);
    }
    put_row(ns, "r1", "a", "1", "b", "2", "c", "3", NULL);
    flush_ns(ns);
    struct ud_ns_stats st;
    ud_ns_stats(ns, &st);
    uint64_t base_lsn = st.flushed_lsn;
    assert_int_equal(base_lsn, 201);
    char *filler = fill_disk(g_mnt);

    /* Write until admission refuses: the flushes fail, memtables pile up to max_sealed. */
    int n = 0;
    for (; n < 2500; n++) {
        if (ud_ns_admit(ns, 3000) == UD_EBUSY)
            break;
        snprintf(key, sizeof key, "f%05d", n);
        memset(val, 'a' + n % 26, sizeof val);
        put_kv(ns, key, strlen(key), val, sizeof val, NULL);
        /* Overwrites and deletes land in different memtables, all stuck above LMDB. */
        if (n == 10) {
            for (int i = 0; i < 50; i++) {
                snprintf(key, sizeof key, "base%03d", i);
                snprintf(small, sizeof small, "o-%d", i);
                put_s(ns, key, small);
            }
            for (int i = 50; i < 100; i++) {
                snprintf(key, sizeof key, "base%03d", i);
                del_s(ns, key);
            }
            del_row(ns, "r1", NULL);
            put_row(ns, "r1", "d", "4", NULL);
        }
        if (n == 150) {
            for (int i = 0; i < 25; i++) {
                snprintf(key, sizeof key, "base%03d", i);
                snprintf(small, sizeof small, "p-%d", i);
                put_s(ns, key, small);
            }
            del_row(ns, "r1", "d", NULL);
            put_row(ns, "r1", "e", "5", NULL);
        }
    }
    assert_true(n < 2500);
    ud_ns_stats(ns, &st);
    uint64_t stalled_last = st.last_lsn;
    print_message("# %d writes before admission refused; %llu flush errors, %u sealed\n", n,
                  (unsigned long long)st.flush_errors, st.sealed_memtables);
    assert_true(st.flush_errors >= 1);
    assert_true(st.sealed_memtables >= 2);
    assert_int_equal(st.flushed_lsn, base_lsn);

    check_layers(ns);

    /* The convenience write waits (10 s), then says why. */
    assert_int_equal(ud_ns_kv_put(ns, "late", 4, "v", 1, NULL, errmsg), UD_EBUSY);
    assert_non_null(strstr(errmsg, "waiting for the flush"));
    /* An explicit flush reports the cause, and so does the namespace to whoever admission
     * holds (the writer's refusal says the flush fails, not only that it is behind). */
    assert_int_equal(ud_ns_flush(ns, errmsg), UD_ENOSPC);
    print_message("# flush error: %s\n", errmsg);
    char why[UD_ERRMSG_SIZE];
    assert_int_equal(ud_ns_flush_failure(ns, why, sizeof why), UD_ENOSPC);
    assert_non_null(strstr(why, "disk full"));
    /* Reads keep working from the memtables. */
    struct ud_buf b = {0};
    assert_int_equal(ud_ns_kv_get(ns, "f00000", 6, &b, NULL), 0);
    assert_int_equal(b.len, sizeof val);

    /* Space comes back: the retried flush succeeds and writes resume. */
    space_returns(ns, filler);
    ud_ns_stats(ns, &st);
    assert_int_equal(st.sealed_memtables, 0);
    assert_int_equal(st.flushed_lsn, stalled_last);
    assert_int_equal(ud_ns_admit(ns, 0), 0);
    assert_int_equal(ud_ns_flush_failure(ns, why, sizeof why), 0);
    put_s(ns, "late", "v");
    for (int i = 0; i < n; i++) {
        snprintf(key, sizeof key, "f%05d", i);
        assert_int_equal(ud_ns_kv_get(ns, key, strlen(key), &b, NULL), 0);
        assert_int_equal(b.len, sizeof val);
        assert_int_equal(b.data[0], 'a' + i % 26);
    }
    expect_kv(ns, "late", "v");
    check_layers(ns);
    ud_buf_free(&b);
    free(filler);
    ud_ns_close(ns);
    ns = open_ns(&o);
    expect_kv(ns, "late", "v");
    ud_ns_close(ns);
}

/* A commit whose pages only partly fit on the disk: LMDB turns the short pwrite into EIO; the
 * store names it as the full disk it is (UD_ENOSPC, which the HTTP layer reports as such). */
static void test_short_write_on_full_disk(void **state)
{
    (void)state;
    char nsdir[4096];
    mount_small_fs("engine-fault-short", nsdir, sizeof nsdir);
    struct ud_engine_options o = test_opts(nsdir);
    o.segment_size = 8u << 20; /* preallocated: WAL appends never need new space */
    o.map_size = 8u << 20;
    struct ud_ns *ns = open_ns(&o);
    char errmsg[UD_ERRMSG_SIZE] = "";
    char key[16], val[2048];
    for (int i = 0; i < 200; i++) {
        snprintf(key, sizeof key, "k%05d", i);
        memset(val, 'a' + i % 26, sizeof val);
        put_kv(ns, key, strlen(key), val, sizeof val, NULL);
    }
    /* 400 KiB of values to write, 48 KiB of room. */
    char *filler = fill_disk(g_mnt);
    struct stat st;
    assert_int_equal(stat(filler, &st), 0);
    assert_int_equal(truncate(filler, st.st_size - (48 << 10)), 0);
    int rc = ud_ns_flush(ns, errmsg);
    print_message("# flush into 48 KiB of room: %s\n", errmsg);
    assert_int_equal(rc, UD_ENOSPC);
    space_returns(ns, filler);
    free(filler);
    ud_ns_close(ns);
}

/*
 * The memtable budget is what the memtables hold, key filters included: under the smallest
 * budget the configuration allows (1 MiB), with every flush failing, writes go on until
 * admission refuses them, and by then the values written (none flushed) plus the three
 * memtables' filters (two sealed, the fresh active one) fit in the budget, and the engine's
 * count of memtable bytes covers both and stays within it. With 128 KiB filters left out of the
 * count, the memtables held 1.34 MiB (values of two half-budget arenas and three filters).
 */
static void test_memtables_within_budget_with_filters(void **state)
{
    (void)state;
    char nsdir[4096];
    mount_small_fs("engine-fault-budget", nsdir, sizeof nsdir);
    struct ud_engine_options o = test_opts(nsdir);
    o.segment_size = 8u << 20; /* preallocated: WAL appends never need new space */
    o.memtable_bytes = 1u << 20;
    o.max_sealed = 3; /* a third seal is allowed: admission must refuse by bytes */
    o.map_size = 8u << 20;
    struct ud_ns *ns = open_ns(&o);
    char key[16], val[2048];
    char *filler = fill_disk(g_mnt);

    int n = 0;
    for (; n < 2000; n++) {
        if (ud_ns_admit(ns, 300) == UD_EBUSY)
            break;
        snprintf(key, sizeof key, "k%05d", n);
        memset(val, 'a' + n % 26, sizeof val);
        put_kv(ns, key, strlen(key), val, sizeof val, NULL);
    }
    struct ud_ns_stats st;
    ud_ns_stats(ns, &st);
    /* Each memtable was created for a seal size above a quarter of the budget. */
    size_t filter = ud_memtable_filter_bytes(o.memtable_bytes / 4);
    size_t values = (size_t)n * sizeof val, filters = (1 + (size_t)st.sealed_memtables) * filter;
    size_t record = sizeof val + 512; /* one write admitted just before the limit */
    print_message("# %d writes before admission refused: %u sealed, %llu bytes counted, "
                  "%zu of values, %zu of filters (budget %zu)\n",
                  n, st.sealed_memtables, (unsigned long long)st.memtable_bytes, values, filters,
                  o.memtable_bytes);
    assert_true(n < 2000);
    assert_int_equal(st.sealed_memtables, 2);
    assert_int_equal(st.flushed_lsn, 0);
    assert_true(values + filters <= o.memtable_bytes + record);
    assert_true(st.memtable_bytes >= values + filters);
    assert_true(st.memtable_bytes <= o.memtable_bytes + record);
    /* Not a budget spent on filters: the memtables still hold most of it in values. */
    assert_true(values >= o.memtable_bytes * 3 / 4);

    space_returns(ns, filler);
    struct ud_buf b = {0};
    for (int i = 0; i < n; i += 7) {
        snprintf(key, sizeof key, "k%05d", i);
        assert_int_equal(ud_ns_kv_get(ns, key, strlen(key), &b, NULL), 0);
        assert_int_equal(b.len, sizeof val);
        assert_int_equal(b.data[0], 'a' + i % 26);
    }
    ud_buf_free(&b);
    free(filler);
    ud_ns_close(ns);
}

/* --- storage failures are not outcomes ------------------------------------------------------- */

static int put_short_value(struct ud_store_batch *b, void *arg)
{
    const char *key = arg;
    return ud_store_batch_put(b, UD_SPACE_KV, key, strlen(key), "abcd", 4);
}

/*
 * A stored value shorter than its LSN prefix (a damaged store on this node only): an UPDATE of
 * that key cannot be checked here, which is this node's failure (UD_EIO), not the request's
 * (UD_ECORRUPT would be recorded as the outcome by this writer alone, and its LSNs would differ
 * from the others' from then on). Nothing is logged; the record takes no LSN.
 */
static void test_damaged_store_fails_update_check(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("engine-fault-damaged");
    struct ud_engine_options o = test_opts(dir);
    struct ud_ns *ns = open_ns(&o);
    put_s(ns, "k", "value");
    flush_ns(ns);
    ud_ns_close(ns);

    char path[4096], errmsg[UD_ERRMSG_SIZE] = "";
    snprintf(path, sizeof path, "%s/lmdb", dir);
    struct ud_store_options so = {.dir = path, .map_size = o.map_size};
    struct ud_store *store;
    CHECK_RC(ud_store_open(&so, &store, errmsg), 0, errmsg);
    CHECK_RC(ud_store_write(store, put_short_value, "k", errmsg), 0, errmsg);
    ud_store_close(store);

    ns = open_ns(&o);
    struct ud_ns_stats before, after;
    uint8_t id[16];
    CHECK_RC(ud_ns_txn_begin(ns, UD_OP_UPDATE, UD_ENTRY_KV, id, NULL, errmsg), 0, errmsg);
    ud_ns_stats(ns, &before);
    int rc = ud_ns_txn_kv(ns, id, "k", 1, "new", 3, NULL, errmsg);
    print_message("# update of the damaged key: %s: %s\n", ud_strerror(rc), errmsg);
    assert_int_equal(rc, UD_EIO);
    assert_non_null(strstr(errmsg, ud_strerror(UD_ECORRUPT))); /* the cause stays in the message */
    ud_ns_stats(ns, &after);
    assert_int_equal(after.last_lsn, before.last_lsn);
    ud_ns_close(ns);
    ud_test_rmtree(dir);
    free(dir);
}

/*
 * The WAL cannot create its next segment because a file of that name is left over (UD_EEXIST
 * from the exclusive create): a storage failure (UD_EIO), which a retry passes once the file is
 * gone, not a verdict on the record.
 */
static void test_segment_create_failure_is_io(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("engine-fault-segment");
    struct ud_engine_options o = test_opts(dir);
    o.segment_size = 64u << 10;
    struct ud_ns *ns = open_ns(&o);
    char leftover[4096], errmsg[UD_ERRMSG_SIZE] = "";
    snprintf(leftover, sizeof leftover, "%s/wal/0000000002.seg", dir);
    int fd = open(leftover, O_WRONLY | O_CREAT | O_EXCL, 0644);
    assert_true(fd >= 0);
    close(fd);

    char key[16], val[1024];
    memset(val, 'v', sizeof val);
    int rc = 0, n = 0;
    uint64_t lsn = 0;
    struct ud_ns_stats st;
    for (; n < 200 && rc == 0; n++) {
        ud_ns_stats(ns, &st);
        snprintf(key, sizeof key, "k%03d", n);
        rc = ud_ns_kv_put(ns, key, strlen(key), val, sizeof val, &lsn, errmsg);
    }
    print_message("# put %d at the rotation: %s: %s\n", n, ud_strerror(rc), errmsg);
    assert_int_equal(rc, UD_EIO);
    struct ud_ns_stats failed;
    ud_ns_stats(ns, &failed);
    assert_int_equal(failed.last_lsn, st.last_lsn);

    assert_int_equal(unlink(leftover), 0);
    CHECK_RC(ud_ns_kv_put(ns, key, strlen(key), val, sizeof val, &lsn, errmsg), 0, errmsg);
    assert_int_equal(lsn, st.last_lsn + 1);
    ud_ns_close(ns);
    ud_test_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_full_disk_flush, teardown),
        cmocka_unit_test_teardown(test_short_write_on_full_disk, teardown),
        cmocka_unit_test_teardown(test_memtables_within_budget_with_filters, teardown),
        cmocka_unit_test(test_damaged_store_fails_update_check),
        cmocka_unit_test(test_segment_create_failure_is_io),
    };
    return cmocka_run_group_tests_name("engine-fault", tests, NULL, NULL);
}
