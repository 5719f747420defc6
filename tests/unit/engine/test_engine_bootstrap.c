/* Bootstrap of a follower from a snapshot plus the WAL (ud_ns_bootstrap_*): a transaction open
 * across the snapshot point commits after it and reads back on the follower; the follower's WAL
 * equals the upstream's byte for byte from the bootstrap point on; misuse is refused. */
#include "helpers.h"

#include <limits.h>
#include <sys/stat.h>

#include "core/registry.h"
#include "core/wal.h"

/* Every record of the WAL in dir from `from` on, as copies. */
struct log {
    uint8_t *rec[256];
    uint32_t len[256];
    uint64_t first, n;
};

static void read_log(const char *ns_dir, uint64_t from, struct log *l)
{
    char path[PATH_MAX], errmsg[UD_ERRMSG_SIZE] = "";
    snprintf(path, sizeof path, "%s/wal", ns_dir);
    struct ud_wal_options wo = {
        .dir = path, .segment_size = 4u << 20, .sync_mode = UD_WAL_SYNC_NONE};
    struct ud_wal *wal;
    CHECK_RC(ud_wal_open(&wo, &wal, errmsg), 0, errmsg);
    struct ud_wal_reader *r;
    CHECK_RC(ud_wal_reader_open(wal, from, UD_WAL_READ_UNDURABLE, &r), 0, "reader");
    l->first = from;
    l->n = 0;
    for (;;) {
        const uint8_t *data;
        uint32_t len;
        uint64_t lsn;
        int rc = ud_wal_reader_next(r, &data, &len, &lsn);
        if (rc == UD_EAGAIN)
            break;
        CHECK_RC(rc, 0, "wal read");
        assert_int_equal(lsn, from + l->n);
        assert_true(l->n < 256);
        l->rec[l->n] = malloc(len);
        memcpy(l->rec[l->n], data, len);
        l->len[l->n] = len;
        l->n++;
    }
    ud_wal_reader_close(r);
    ud_wal_close(wal);
}

static void free_log(struct log *l)
{
    for (uint64_t i = 0; i < l->n; i++)
        free(l->rec[i]);
    l->n = 0;
}

static void txn_kv(struct ud_ns *ns, const uint8_t id[16], const char *k, const char *v)
{
    char errmsg[UD_ERRMSG_SIZE] = "";
    CHECK_RC(ud_ns_txn_kv(ns, id, k, strlen(k), v, strlen(v), NULL, errmsg), 0, errmsg);
}

static void test_bootstrap_open_txn(void **state)
{
    (void)state;
    char *root = ud_test_tmpdir("bootstrap");
    char up_dir[PATH_MAX], work[PATH_MAX], final[PATH_MAX], snap[PATH_MAX];
    snprintf(up_dir, sizeof up_dir, "%s/up", root);
    snprintf(work, sizeof work, "%s/.work", root);
    snprintf(final, sizeof final, "%s/follower", root);
    snprintf(snap, sizeof snap, "%s/snapshot.mdb", root);
    char errmsg[UD_ERRMSG_SIZE] = "";

    /* Upstream: a, an open transaction T with one part, a flush (checkpoint with T open), b, the
     * snapshot, then T's second part and commit, an aborted transaction, and c. */
    struct ud_engine_options uo = test_opts(up_dir);
    struct ud_ns *up = open_ns(&uo);
    put_s(up, "a", "1");
    uint8_t t[16], t2[16];
    uint64_t t_begin;
    CHECK_RC(ud_ns_txn_begin(up, UD_OP_PUT, UD_ENTRY_KV, t, &t_begin, errmsg), 0, errmsg);
    txn_kv(up, t, "t1", "one");
    put_s(up, "x", "gone-later");
    flush_ns(up);
    put_s(up, "b", "2");
    CHECK_RC(ud_ns_store_backup(up, snap, errmsg), 0, errmsg);
    txn_kv(up, t, "t2", "two");
    del_s(up, "x");
    CHECK_RC(ud_ns_txn_commit(up, t, NULL, errmsg), 0, errmsg);
    CHECK_RC(ud_ns_txn_begin(up, UD_OP_PUT, UD_ENTRY_KV, t2, NULL, errmsg), 0, errmsg);
    txn_kv(up, t2, "never", "seen");
    CHECK_RC(ud_ns_txn_abort(up, t2, NULL, errmsg), 0, errmsg);
    put_s(up, "c", "3");
    struct ud_ns_stats st;
    ud_ns_stats(up, &st);
    uint64_t up_last = st.last_lsn;
    ud_ns_close(up);

    /* Follower: the snapshot, then the upstream's WAL from the bootstrap point. */
    struct ud_engine_options fo = test_opts(final);
    struct ud_ns_bootstrap *b;
    CHECK_RC(ud_ns_bootstrap_begin(work, snap, &fo, &b, errmsg), 0, errmsg);
    uint64_t ckpt = ud_ns_bootstrap_checkpoint(b);
    assert_int_equal(ckpt, 4); /* a, BEGIN, PREPARE, x */
    assert_int_equal(ud_ns_bootstrap_from(b), t_begin);
    assert_int_equal(t_begin, 2);

    struct log l;
    read_log(up_dir, ud_ns_bootstrap_from(b), &l);
    assert_int_equal(l.first + l.n - 1, up_last);

    /* Wrong LSNs are refused and change nothing. */
    CHECK_RC(ud_ns_bootstrap_append(b, l.rec[1], l.len[1], l.first + 1, errmsg), UD_ERANGE, errmsg);
    assert_non_null(strstr(errmsg, "expected LSN 2"));
    CHECK_RC(ud_ns_bootstrap_append(b, l.rec[0], l.len[0], l.first + 1, errmsg), UD_ERANGE, errmsg);

    uint64_t i = 0;
    for (; l.first + i <= ckpt; i++) {
        assert_false(ud_ns_bootstrap_complete(b));
        CHECK_RC(ud_ns_bootstrap_append(b, l.rec[i], l.len[i], l.first + i, errmsg), 0, errmsg);
    }
    assert_true(ud_ns_bootstrap_complete(b));
    /* Past the snapshot point records go through the apply function, not the bootstrap. */
    CHECK_RC(ud_ns_bootstrap_append(b, l.rec[i], l.len[i], l.first + i, errmsg), UD_ERANGE, errmsg);
    CHECK_RC(ud_ns_bootstrap_finish(b, final, errmsg), 0, errmsg);

    struct ud_ns *f = open_ns(&fo);
    /* T is open again after recovery: its parts are invisible until the commit arrives. */
    struct ud_txn_info info;
    assert_int_equal(ud_ns_txn_info(f, t, &info), 0);
    assert_int_equal(info.begin_lsn, t_begin);
    expect_kv(f, "a", "1");
    expect_kv(f, "x", "gone-later");
    expect_kv(f, "t1", NULL);
    expect_kv(f, "b", NULL);
    for (; i < l.n; i++) {
        uint64_t lsn = 0;
        CHECK_RC(ud_ns_apply(f, l.rec[i], l.len[i], &lsn, errmsg), 0, errmsg);
        assert_int_equal(lsn, l.first + i);
    }
    expect_kv(f, "a", "1");
    expect_kv(f, "b", "2");
    expect_kv(f, "c", "3");
    expect_kv(f, "t1", "one");
    expect_kv(f, "t2", "two");
    expect_kv(f, "x", NULL);
    expect_kv(f, "never", NULL);
    ud_ns_stats(f, &st);
    assert_int_equal(st.last_lsn, up_last);
    ud_ns_close(f);

    /* Byte for byte: the follower's WAL equals the upstream's at every LSN it holds. */
    struct log fl;
    read_log(final, t_begin, &fl);
    assert_int_equal(fl.n, l.n);
    for (uint64_t k = 0; k < l.n; k++) {
        assert_int_equal(fl.len[k], l.len[k]);
        assert_memory_equal(fl.rec[k], l.rec[k], l.len[k]);
    }
    /* And a reopen (recovery from its own checkpoint and WAL) gives the same state. */
    f = open_ns(&fo);
    expect_kv(f, "t2", "two");
    expect_kv(f, "never", NULL);
    assert_int_equal(ud_ns_txn_info(f, t, &info), UD_ENOTFOUND);
    ud_ns_close(f);
    free_log(&fl);
    free_log(&l);
    ud_test_rmtree(root);
    free(root);
}

/* A snapshot without open transactions: nothing to append, the WAL starts after the checkpoint;
 * finishing early is refused with the missing range, and a bad snapshot is named. */
static void test_bootstrap_edges(void **state)
{
    (void)state;
    char *root = ud_test_tmpdir("bootstrap-edges");
    char up_dir[PATH_MAX], work[PATH_MAX], final[PATH_MAX], snap[PATH_MAX];
    snprintf(up_dir, sizeof up_dir, "%s/up", root);
    snprintf(work, sizeof work, "%s/.work", root);
    snprintf(final, sizeof final, "%s/follower", root);
    snprintf(snap, sizeof snap, "%s/snapshot.mdb", root);
    char errmsg[UD_ERRMSG_SIZE] = "";
    struct ud_engine_options uo = test_opts(up_dir);
    struct ud_ns *up = open_ns(&uo);
    put_s(up, "a", "1");
    put_s(up, "b", "2");
    flush_ns(up);
    CHECK_RC(ud_ns_store_backup(up, snap, errmsg), 0, errmsg);
    ud_ns_close(up);

    struct ud_engine_options fo = test_opts(final);
    struct ud_ns_bootstrap *b;
    CHECK_RC(ud_ns_bootstrap_begin(work, snap, &fo, &b, errmsg), 0, errmsg);
    assert_int_equal(ud_ns_bootstrap_checkpoint(b), 2);
    assert_int_equal(ud_ns_bootstrap_from(b), 3);
    assert_true(ud_ns_bootstrap_complete(b));
    CHECK_RC(ud_ns_bootstrap_finish(b, final, errmsg), 0, errmsg);
    struct ud_ns *f = open_ns(&fo);
    expect_kv(f, "b", "2");
    uint64_t lsn;
    put_kv(f, "c", 1, "3", 1, &lsn);
    assert_int_equal(lsn, 3);
    ud_ns_close(f);

    /* Incomplete: a snapshot whose open transaction's records were never appended. */
    up = open_ns(&uo);
    uint8_t t[16];
    CHECK_RC(ud_ns_txn_begin(up, UD_OP_PUT, UD_ENTRY_KV, t, NULL, errmsg), 0, errmsg);
    flush_ns(up);
    CHECK_RC(ud_ns_store_backup(up, snap, errmsg), 0, errmsg);
    ud_ns_close(up);
    CHECK_RC(ud_ns_bootstrap_begin(work, snap, &fo, &b, errmsg), 0, errmsg);
    assert_int_equal(ud_ns_bootstrap_from(b), 3);
    char final2[PATH_MAX];
    snprintf(final2, sizeof final2, "%s/follower2", root);
    CHECK_RC(ud_ns_bootstrap_finish(b, final2, errmsg), UD_ETXN, errmsg);
    assert_non_null(strstr(errmsg, "3..3"));
    struct stat sb;
    assert_int_not_equal(stat(work, &sb), 0); /* the work directory is gone */
    assert_int_not_equal(stat(final2, &sb), 0);

    /* Not an LMDB file. */
    FILE *fp = fopen(snap, "w");
    fputs("this is not a store", fp);
    fclose(fp);
    int rc = ud_ns_bootstrap_begin(work, snap, &fo, &b, errmsg);
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(errmsg, "snapshot"));
    assert_int_not_equal(stat(work, &sb), 0);
    ud_test_rmtree(root);
    free(root);
}

/* A snapshot of an upstream holding key=value, at path. */
static void upstream_snapshot(const char *dir, const char *path, const char *key, const char *value)
{
    char errmsg[UD_ERRMSG_SIZE] = "";
    struct ud_engine_options uo = test_opts(dir);
    struct ud_ns *up = open_ns(&uo);
    put_s(up, key, value);
    flush_ns(up);
    CHECK_RC(ud_ns_store_backup(up, path, errmsg), 0, errmsg);
    ud_ns_close(up);
}

/* Overwrites the start of the store in a namespace directory, where LMDB keeps its meta pages. */
static void damage_store(const char *ns_dir)
{
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/lmdb/data.mdb", ns_dir);
    FILE *f = fopen(path, "r+");
    assert_non_null(f);
    for (int k = 0; k < (16 << 10); k++)
        fputc(0x5a, f);
    fclose(f);
}

/* ud_registry_install replaces a registered namespace, and also installs over a directory an
 * earlier install left at the namespace's place (renamed there, then failed to open): before, the
 * place stayed taken and every later install failed with "already exists". */
static void test_registry_install(void **state)
{
    (void)state;
    char *root = ud_test_tmpdir("registry-install");
    char reg_root[PATH_MAX], work[PATH_MAX], snap[PATH_MAX], up[PATH_MAX], place[PATH_MAX];
    snprintf(reg_root, sizeof reg_root, "%s/namespaces", root);
    snprintf(work, sizeof work, "%s/.work", root);
    snprintf(snap, sizeof snap, "%s/snapshot.mdb", root);
    snprintf(up, sizeof up, "%s/up", root);
    snprintf(place, sizeof place, "%s/n", reg_root);
    char errmsg[UD_ERRMSG_SIZE] = "";
    struct ud_engine_options defaults = test_opts(reg_root);
    struct ud_registry *reg;
    CHECK_RC(ud_registry_open(reg_root, &defaults, &reg, errmsg), 0, errmsg);
    CHECK_RC(ud_registry_create(reg, "n", errmsg), 0, errmsg);
    struct ud_ns *ns;
    CHECK_RC(ud_registry_acquire(reg, "n", &ns), 0, errmsg);
    put_s(ns, "old", "0");
    ud_registry_release(reg, ns);

    /* Replacing the registered copy. */
    upstream_snapshot(up, snap, "a", "1");
    struct ud_engine_options wo = test_opts(work);
    struct ud_ns_bootstrap *b;
    CHECK_RC(ud_ns_bootstrap_begin(work, snap, &wo, &b, errmsg), 0, errmsg);
    CHECK_RC(ud_registry_install(reg, "n", b, &ns, errmsg), 0, errmsg);
    expect_kv(ns, "a", "1");
    struct ud_buf v = {0};
    assert_int_equal(ud_ns_kv_get(ns, "old", 3, &v, NULL), UD_ENOTFOUND);
    ud_buf_free(&v);
    ud_registry_release(reg, ns);

    /* A leftover at the place of an unregistered namespace. */
    CHECK_RC(ud_registry_delete(reg, "n", errmsg), 0, errmsg);
    char junk[PATH_MAX + 16];
    snprintf(junk, sizeof junk, "%s/lmdb", place);
    assert_int_equal(mkdir(place, 0755), 0);
    assert_int_equal(mkdir(junk, 0755), 0);
    upstream_snapshot(up, snap, "b", "2");
    CHECK_RC(ud_ns_bootstrap_begin(work, snap, &wo, &b, errmsg), 0, errmsg);
    CHECK_RC(ud_registry_install(reg, "n", b, &ns, errmsg), 0, errmsg);
    expect_kv(ns, "b", "2");
    ud_registry_release(reg, ns);

    /* A downloaded copy that opens as damaged is UD_ECORRUPT, not UD_EIO: the catch-up tries the
     * next peer for a bad download, and ends only for a fault of this node's storage. */
    upstream_snapshot(up, snap, "c", "3");
    CHECK_RC(ud_ns_bootstrap_begin(work, snap, &wo, &b, errmsg), 0, errmsg);
    damage_store(work);
    int rc = ud_registry_install(reg, "n", b, &ns, errmsg);
    print_message("# install of a damaged copy: %s: %s\n", ud_strerror(rc), errmsg);
    assert_int_equal(rc, UD_ECORRUPT);
    assert_null(ns);
    ud_registry_close(reg);
    ud_test_rmtree(root);
    free(root);
}

/* Reads a whole LOB into a malloc'd buffer. */
static uint8_t *read_lob(struct ud_ns *ns, const char *key, uint64_t *size)
{
    struct ud_lob_reader *r = NULL;
    uint64_t lsn;
    assert_int_equal(ud_ns_lob_open(ns, key, strlen(key), &r, size, &lsn), 0);
    uint8_t *out = malloc(*size + 1);
    uint64_t n = 0;
    for (;;) {
        const uint8_t *data;
        size_t len;
        assert_int_equal(ud_lob_reader_next(r, &data, &len), 0);
        if (len == 0)
            break;
        assert_true(n + len <= *size);
        memcpy(out + n, data, len);
        n += len;
    }
    assert_int_equal(n, *size);
    ud_lob_reader_close(r);
    return out;
}

/* A LOB transaction open across the snapshot point: its first chunk is only in the WAL records
 * the bootstrap appends (before the checkpoint), its second and the commit come after; the object
 * reads back whole on the follower, also after the follower's own flush and a reopen. */
static void test_bootstrap_lob_across(void **state)
{
    (void)state;
    char *root = ud_test_tmpdir("bootstrap-lob");
    char up_dir[PATH_MAX], work[PATH_MAX], final[PATH_MAX], snap[PATH_MAX];
    snprintf(up_dir, sizeof up_dir, "%s/up", root);
    snprintf(work, sizeof work, "%s/.work", root);
    snprintf(final, sizeof final, "%s/follower", root);
    snprintf(snap, sizeof snap, "%s/snapshot.mdb", root);
    char errmsg[UD_ERRMSG_SIZE] = "";
    enum { CHUNK = 300000 };
    uint8_t *blob = malloc(2 * CHUNK);
    uint64_t seed = 42;
    ud_test_fill(&seed, blob, 2 * CHUNK);

    struct ud_engine_options uo = test_opts(up_dir);
    struct ud_ns *up = open_ns(&uo);
    put_s(up, "before", "1");
    uint8_t t[16];
    CHECK_RC(ud_ns_txn_begin(up, UD_OP_PUT, UD_ENTRY_LOB, t, NULL, errmsg), 0, errmsg);
    CHECK_RC(ud_ns_txn_lob(up, t, "obj", 3, 0, blob, CHUNK, NULL, errmsg), 0, errmsg);
    flush_ns(up);
    CHECK_RC(ud_ns_store_backup(up, snap, errmsg), 0, errmsg);
    CHECK_RC(ud_ns_txn_lob(up, t, "obj", 3, CHUNK, blob + CHUNK, CHUNK, NULL, errmsg), 0, errmsg);
    CHECK_RC(ud_ns_txn_commit(up, t, NULL, errmsg), 0, errmsg);
    ud_ns_close(up);

    struct ud_engine_options fo = test_opts(final);
    struct ud_ns_bootstrap *b;
    CHECK_RC(ud_ns_bootstrap_begin(work, snap, &fo, &b, errmsg), 0, errmsg);
    assert_int_equal(ud_ns_bootstrap_from(b), 2); /* the LOB transaction's BEGIN */
    struct log l;
    read_log(up_dir, 2, &l);
    uint64_t i = 0;
    for (; l.first + i <= ud_ns_bootstrap_checkpoint(b); i++)
        CHECK_RC(ud_ns_bootstrap_append(b, l.rec[i], l.len[i], l.first + i, errmsg), 0, errmsg);
    CHECK_RC(ud_ns_bootstrap_finish(b, final, errmsg), 0, errmsg);
    struct ud_ns *f = open_ns(&fo);
    for (; i < l.n; i++)
        CHECK_RC(ud_ns_apply(f, l.rec[i], l.len[i], NULL, errmsg), 0, errmsg);
    uint64_t size;
    uint8_t *got = read_lob(f, "obj", &size);
    assert_int_equal(size, 2 * CHUNK);
    assert_memory_equal(got, blob, 2 * CHUNK);
    free(got);
    flush_ns(f); /* the chunks move from the WAL into the follower's store */
    ud_ns_close(f);
    f = open_ns(&fo);
    got = read_lob(f, "obj", &size);
    assert_memory_equal(got, blob, 2 * CHUNK);
    free(got);
    expect_kv(f, "before", "1");
    ud_ns_close(f);
    free_log(&l);
    free(blob);
    ud_test_rmtree(root);
    free(root);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bootstrap_open_txn),
        cmocka_unit_test(test_bootstrap_edges),
        cmocka_unit_test(test_bootstrap_lob_across),
        cmocka_unit_test(test_registry_install),
    };
    return cmocka_run_group_tests_name("engine_bootstrap", tests, NULL, NULL);
}
