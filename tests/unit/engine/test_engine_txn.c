/* Engine transaction tests: isolation, atomicity, update/delete semantics, errors, transactions
 * spanning a flush and a restart, and LSN continuity read back from the WAL. */
#include "tests/unit/engine/helpers.h"

#include "core/wal.h"
#include "proto/record.h"

static int count_kv_cb(void *arg, const uint8_t *key, size_t key_len, const uint8_t *value,
                       size_t value_len, uint64_t lsn)
{
    (void)key, (void)key_len, (void)value, (void)value_len, (void)lsn;
    (*(int *)arg)++;
    return 0;
}

static int count_row_cb(void *arg, const uint8_t *row, size_t row_len, const uint8_t *name,
                        size_t name_len, const uint8_t *value, size_t value_len, uint64_t lsn)
{
    (void)row, (void)row_len, (void)name, (void)name_len, (void)value, (void)value_len, (void)lsn;
    (*(int *)arg)++;
    return 0;
}

static int kv_count(struct ud_ns *ns)
{
    int n = 0;
    struct ud_scan sc = {0};
    assert_int_equal(ud_ns_kv_scan(ns, &sc, count_kv_cb, &n, NULL), 0);
    return n;
}

static int row_col_count(struct ud_ns *ns)
{
    int n = 0;
    struct ud_scan sc = {0};
    assert_int_equal(ud_ns_row_scan(ns, &sc, count_row_cb, &n, NULL), 0);
    return n;
}

static void txn_kv(struct ud_ns *ns, const uint8_t id[16], const char *k, const char *v)
{
    char errmsg[UD_ERRMSG_SIZE] = "";
    CHECK_RC(ud_ns_txn_kv(ns, id, k, strlen(k), v, v ? strlen(v) : 0, NULL, errmsg), 0, errmsg);
}

static void begin(struct ud_ns *ns, enum ud_op op, enum ud_entry_type type, uint8_t id[16])
{
    char errmsg[UD_ERRMSG_SIZE] = "";
    CHECK_RC(ud_ns_txn_begin(ns, op, type, id, NULL, errmsg), 0, errmsg);
}

static uint64_t commit(struct ud_ns *ns, const uint8_t id[16])
{
    char errmsg[UD_ERRMSG_SIZE] = "";
    uint64_t lsn = 0;
    CHECK_RC(ud_ns_txn_commit(ns, id, &lsn, errmsg), 0, errmsg);
    return lsn;
}

/* --- isolation and atomicity ------------------------------------------------------------------ */

static void test_kv_txn_isolation_atomicity(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("txn-kv");
    struct ud_engine_options o = test_opts(dir);
    struct ud_ns *ns = open_ns(&o);
    char errmsg[UD_ERRMSG_SIZE] = "";
    uint8_t id[16], id2[16];

    put_s(ns, "account:alice", "100");
    begin(ns, UD_OP_PUT, UD_ENTRY_KV, id);
    txn_kv(ns, id, "account:alice", "50");
    txn_kv(ns, id, "account:bob", "150");
    txn_kv(ns, id, "transfer:1", "alice->bob");
    txn_kv(ns, id, "account:bob", "175"); /* the later part wins */

    /* Invisible before commit, to gets and scans, even across a flush. */
    expect_kv(ns, "account:alice", "100");
    expect_kv(ns, "account:bob", NULL);
    assert_int_equal(kv_count(ns), 1);
    flush_ns(ns);
    expect_kv(ns, "account:bob", NULL);
    assert_int_equal(kv_count(ns), 1);

    uint64_t clsn = commit(ns, id);
    expect_kv(ns, "account:alice", "50");
    expect_kv(ns, "account:bob", "175");
    expect_kv(ns, "transfer:1", "alice->bob");
    assert_int_equal(kv_count(ns), 3);
    struct ud_buf b = {0};
    uint64_t lsn = 0;
    assert_int_equal(ud_ns_kv_get(ns, "account:bob", 11, &b, &lsn), 0);
    assert_int_equal(lsn, clsn); /* every part carries the commit's LSN */
    ud_buf_free(&b);

    /* A finished transaction is gone. */
    assert_int_equal(ud_ns_txn_commit(ns, id, NULL, errmsg), UD_ENOTFOUND);
    assert_non_null(strstr(errmsg, "transaction not found"));
    assert_int_equal(ud_ns_txn_kv(ns, id, "x", 1, "y", 1, NULL, errmsg), UD_ENOTFOUND);

    /* Abort discards every part. */
    begin(ns, UD_OP_PUT, UD_ENTRY_KV, id2);
    txn_kv(ns, id2, "account:alice", "0");
    txn_kv(ns, id2, "ghost", "boo");
    CHECK_RC(ud_ns_txn_abort(ns, id2, NULL, errmsg), 0, errmsg);
    expect_kv(ns, "account:alice", "50");
    expect_kv(ns, "ghost", NULL);
    assert_int_equal(ud_ns_txn_abort(ns, id2, NULL, errmsg), UD_ENOTFOUND);
    flush_ns(ns);
    expect_kv(ns, "ghost", NULL);
    assert_int_equal(kv_count(ns), 3);

    ud_ns_close(ns);
    ud_test_rmtree(dir);
    free(dir);
}

static void test_row_txn(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("txn-row");
    struct ud_engine_options o = test_opts(dir);
    struct ud_ns *ns = open_ns(&o);
    char errmsg[UD_ERRMSG_SIZE] = "";
    uint8_t id[16];

    put_row(ns, "user:1", "name", "Alice", "age", "30", NULL);
    begin(ns, UD_OP_PUT, UD_ENTRY_ROW, id);
    struct ud_col c1[] = {{(const uint8_t *)"age", 3, (const uint8_t *)"31", 2},
                          {(const uint8_t *)"city", 4, (const uint8_t *)"Oslo", 4}};
    struct ud_row r1 = {(const uint8_t *)"user:1", 6, c1, 2};
    struct ud_col c2[] = {{(const uint8_t *)"name", 4, (const uint8_t *)"Carol", 5}};
    struct ud_row r2 = {(const uint8_t *)"user:2", 6, c2, 1};
    CHECK_RC(ud_ns_txn_row(ns, id, &r1, NULL, errmsg), 0, errmsg);
    CHECK_RC(ud_ns_txn_row(ns, id, &r2, NULL, errmsg), 0, errmsg);
    expect_row(ns, "user:1", "age=30;name=Alice;");
    expect_row(ns, "user:2", NULL);
    assert_int_equal(row_col_count(ns), 2);
    commit(ns, id);
    expect_row(ns, "user:1", "age=31;city=Oslo;name=Alice;");
    expect_row(ns, "user:2", "name=Carol;");
    assert_int_equal(row_col_count(ns), 4);

    /* A delete transaction: columns of one row, the whole of another. */
    begin(ns, UD_OP_DELETE, UD_ENTRY_ROW, id);
    struct ud_col dc[] = {{(const uint8_t *)"age", 3, NULL, 0}};
    struct ud_row d1 = {(const uint8_t *)"user:1", 6, dc, 1};
    struct ud_row d2 = {(const uint8_t *)"user:2", 6, NULL, 0};
    CHECK_RC(ud_ns_txn_row(ns, id, &d1, NULL, errmsg), 0, errmsg);
    CHECK_RC(ud_ns_txn_row(ns, id, &d2, NULL, errmsg), 0, errmsg);
    expect_row(ns, "user:2", "name=Carol;");
    commit(ns, id);
    expect_row(ns, "user:1", "city=Oslo;name=Alice;");
    expect_row(ns, "user:2", NULL);
    flush_ns(ns);
    expect_row(ns, "user:1", "city=Oslo;name=Alice;");
    expect_row(ns, "user:2", NULL);

    /* A KV part in a row transaction is refused. */
    begin(ns, UD_OP_PUT, UD_ENTRY_ROW, id);
    assert_int_equal(ud_ns_txn_kv(ns, id, "k", 1, "v", 1, NULL, errmsg), UD_ETXN);
    assert_non_null(strstr(errmsg, "is a row transaction; this part is kv"));
    CHECK_RC(ud_ns_txn_abort(ns, id, NULL, errmsg), 0, errmsg);

    ud_ns_close(ns);
    ud_test_rmtree(dir);
    free(dir);
}

/* --- update and delete semantics, errors ------------------------------------------------------ */

static void test_update_delete_errors(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("txn-update");
    struct ud_engine_options o = test_opts(dir);
    struct ud_ns *ns = open_ns(&o);
    char errmsg[UD_ERRMSG_SIZE] = "";
    uint8_t id[16];
    uint64_t lsn = 0;

    put_s(ns, "present", "1");
    put_s(ns, "doomed", "2");
    put_row(ns, "row:1", "c", "v", NULL);

    /* UPDATE of an absent key is refused at the append, which takes no LSN. */
    begin(ns, UD_OP_UPDATE, UD_ENTRY_KV, id);
    struct ud_ns_stats st;
    ud_ns_stats(ns, &st);
    assert_int_equal(ud_ns_txn_kv(ns, id, "absent", 6, "x", 1, &lsn, errmsg), UD_ENOTFOUND);
    assert_string_equal(errmsg, "update: kv key \"absent\" does not exist");
    struct ud_ns_stats st2;
    ud_ns_stats(ns, &st2);
    assert_int_equal(st2.last_lsn, st.last_lsn);

    /* Checked again at commit: a key deleted after its append fails the commit. */
    txn_kv(ns, id, "present", "10");
    txn_kv(ns, id, "doomed", "20");
    del_s(ns, "doomed");
    assert_int_equal(ud_ns_txn_commit(ns, id, &lsn, errmsg), UD_ENOTFOUND);
    assert_string_equal(errmsg, "update: kv key \"doomed\" does not exist");
    expect_kv(ns, "present", "1"); /* nothing of the failed commit is visible */
    CHECK_RC(ud_ns_txn_abort(ns, id, NULL, errmsg), 0, errmsg);

    begin(ns, UD_OP_UPDATE, UD_ENTRY_KV, id);
    txn_kv(ns, id, "present", "11");
    commit(ns, id);
    expect_kv(ns, "present", "11");

    /* Row UPDATE: the row must exist. */
    begin(ns, UD_OP_UPDATE, UD_ENTRY_ROW, id);
    struct ud_col c = {(const uint8_t *)"c", 1, (const uint8_t *)"w", 1};
    struct ud_row absent = {(const uint8_t *)"row:2", 5, &c, 1};
    struct ud_row present = {(const uint8_t *)"row:1", 5, &c, 1};
    assert_int_equal(ud_ns_txn_row(ns, id, &absent, NULL, errmsg), UD_ENOTFOUND);
    assert_string_equal(errmsg, "update: row \"row:2\" does not exist");
    CHECK_RC(ud_ns_txn_row(ns, id, &present, NULL, errmsg), 0, errmsg);
    commit(ns, id);
    expect_row(ns, "row:1", "c=w;");

    /* KV delete transaction. */
    begin(ns, UD_OP_DELETE, UD_ENTRY_KV, id);
    txn_kv(ns, id, "present", NULL);
    expect_kv(ns, "present", "11");
    commit(ns, id);
    expect_kv(ns, "present", NULL);

    /* Unknown ids; BEGIN of an id in use (through the apply function). */
    uint8_t unknown[16] = {1, 2, 3};
    assert_int_equal(ud_ns_txn_commit(ns, unknown, NULL, errmsg), UD_ENOTFOUND);
    assert_string_equal(errmsg,
                        "transaction not found: 01020300000000000000000000000000 (unknown or "
                        "finished)");
    begin(ns, UD_OP_PUT, UD_ENTRY_KV, id);
    struct ud_record h = {.version = UD_RECORD_VERSION,
                          .op = UD_OP_PUT,
                          .entry_type = UD_ENTRY_KV,
                          .txn_state = UD_TXN_BEGIN};
    memcpy(h.txn_id, id, 16);
    struct ud_record_builder rb;
    uint8_t *rec;
    size_t len;
    ud_record_builder_init(&rb, &h);
    assert_int_equal(ud_record_builder_finish(&rb, &rec, &len), 0);
    assert_int_equal(ud_ns_apply(ns, rec, len, &lsn, errmsg), UD_ETXN);
    assert_non_null(strstr(errmsg, "is already open"));
    free(rec);

    /* A PREPARE whose op differs from the BEGIN. */
    ud_ns_stats(ns, &st);
    h.txn_state = UD_TXN_PREPARE;
    h.op = UD_OP_DELETE;
    h.txn_begin_lsn = st.last_lsn;
    ud_record_builder_init(&rb, &h);
    ud_record_add_kv(&rb, "k", 1, NULL, 0);
    assert_int_equal(ud_record_builder_finish(&rb, &rec, &len), 0);
    assert_int_equal(ud_ns_apply(ns, rec, len, &lsn, errmsg), UD_ETXN);
    assert_non_null(strstr(errmsg, "was begun with operation put; this part says delete"));
    free(rec);
    /* ... or that names another BEGIN LSN. */
    h.op = UD_OP_PUT;
    h.txn_begin_lsn = 1;
    ud_record_builder_init(&rb, &h);
    ud_record_add_kv(&rb, "k", 1, "v", 1);
    assert_int_equal(ud_record_builder_finish(&rb, &rec, &len), 0);
    assert_int_equal(ud_ns_apply(ns, rec, len, &lsn, errmsg), UD_ETXN);
    free(rec);
    CHECK_RC(ud_ns_txn_abort(ns, id, NULL, errmsg), 0, errmsg);

    /* The size cap of KV/row transactions. */
    ud_ns_close(ns);
    o.txn_max_bytes = 1000;
    ns = open_ns(&o);
    begin(ns, UD_OP_PUT, UD_ENTRY_KV, id);
    char big[600];
    memset(big, 'b', sizeof big);
    CHECK_RC(ud_ns_txn_kv(ns, id, "a", 1, big, sizeof big, NULL, errmsg), 0, errmsg);
    assert_int_equal(ud_ns_txn_kv(ns, id, "b", 1, big, sizeof big, NULL, errmsg), UD_ELIMIT);
    assert_non_null(strstr(errmsg, "exceeds the limit of 1000"));
    commit(ns, id);
    struct ud_buf b = {0};
    assert_int_equal(ud_ns_kv_get(ns, "a", 1, &b, NULL), 0);
    assert_int_equal(b.len, sizeof big);
    assert_int_equal(ud_ns_kv_get(ns, "b", 1, &b, NULL), UD_ENOTFOUND);
    ud_buf_free(&b);

    ud_ns_close(ns);
    ud_test_rmtree(dir);
    free(dir);
}

/* --- transactions across a flush and a restart -------------------------------------------------
 */

static void test_txn_across_flush_and_restart(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("txn-restart");
    struct ud_engine_options o = test_opts(dir);
    o.retention.max_segments = 1; /* retention must keep what the open transaction needs */
    o.segment_size = 64u << 10;
    struct ud_ns *ns = open_ns(&o);
    char errmsg[UD_ERRMSG_SIZE] = "";
    uint8_t id[16], rid[16];

    begin(ns, UD_OP_PUT, UD_ENTRY_KV, id);
    begin(ns, UD_OP_PUT, UD_ENTRY_ROW, rid);
    char k[32], v[200];
    memset(v, 'v', sizeof v);
    v[sizeof v - 1] = '\0';
    for (int i = 0; i < 100; i++) {
        snprintf(k, sizeof k, "txn-key-%03d", i);
        txn_kv(ns, id, k, v);
    }
    struct ud_col c = {(const uint8_t *)"col", 3, (const uint8_t *)"before", 6};
    struct ud_row r = {(const uint8_t *)"txn-row", 7, &c, 1};
    CHECK_RC(ud_ns_txn_row(ns, rid, &r, NULL, errmsg), 0, errmsg);
    /* Unrelated writes fill several WAL segments, then a checkpoint passes the prepares. */
    for (int i = 0; i < 600; i++) {
        snprintf(k, sizeof k, "other-%03d", i);
        put_s(ns, k, v);
    }
    flush_ns(ns);
    struct ud_ns_stats st;
    ud_ns_stats(ns, &st);
    assert_true(st.wal_first_lsn <= 1); /* the BEGIN at LSN 1 is still retained */
    ud_ns_close(ns);

    ns = open_ns(&o);
    ud_ns_stats(ns, &st);
    assert_int_equal(st.open_txns, 2);
    expect_kv(ns, "txn-key-000", NULL);
    for (int i = 100; i < 120; i++) {
        snprintf(k, sizeof k, "txn-key-%03d", i);
        txn_kv(ns, id, k, v);
    }
    c.value = (const uint8_t *)"after";
    c.value_len = 5;
    struct ud_col c2 = {(const uint8_t *)"col2", 4, (const uint8_t *)"x", 1};
    struct ud_row r2 = {(const uint8_t *)"txn-row", 7, &c2, 1};
    CHECK_RC(ud_ns_txn_row(ns, rid, &r2, NULL, errmsg), 0, errmsg);
    uint64_t clsn = commit(ns, id);
    commit(ns, rid);
    for (int i = 0; i < 120; i++) {
        snprintf(k, sizeof k, "txn-key-%03d", i);
        expect_kv(ns, k, v);
    }
    expect_row(ns, "txn-row", "col=before;col2=x;");
    struct ud_buf b = {0};
    uint64_t lsn = 0;
    assert_int_equal(ud_ns_kv_get(ns, "txn-key-005", 11, &b, &lsn), 0);
    assert_int_equal(lsn, clsn);
    ud_buf_free(&b);

    /* After commit and a flush, retention may drop the old segments; data stays. */
    flush_ns(ns);
    ud_ns_close(ns);
    ns = open_ns(&o);
    ud_ns_stats(ns, &st);
    assert_int_equal(st.open_txns, 0);
    assert_true(st.wal_first_lsn > 1);
    for (int i = 0; i < 120; i++) {
        snprintf(k, sizeof k, "txn-key-%03d", i);
        expect_kv(ns, k, v);
    }
    expect_row(ns, "txn-row", "col=before;col2=x;");
    ud_ns_close(ns);
    ud_test_rmtree(dir);
    free(dir);
}

/* --- LSN continuity --------------------------------------------------------------------------- */

static void test_lsn_continuity(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("txn-lsn");
    struct ud_engine_options o = test_opts(dir);
    char errmsg[UD_ERRMSG_SIZE] = "";
    uint64_t expect = 0, lsn = 0;
    uint8_t id[16];

    for (int round = 0; round < 3; round++) {
        struct ud_ns *ns = open_ns(&o);
        put_s(ns, "a", "1");
        expect++;
        begin(ns, UD_OP_PUT, UD_ENTRY_KV, id);
        expect++;
        txn_kv(ns, id, "t", "x");
        expect++;
        /* Rejected records take no LSN. */
        assert_int_equal(
            ud_ns_txn_row(ns, id,
                          &(struct ud_row){(const uint8_t *)"r", 1,
                                           &(struct ud_col){(const uint8_t *)"c", 1, NULL, 0}, 1},
                          NULL, errmsg),
            UD_ETXN);
        CHECK_RC(ud_ns_txn_abort(ns, id, &lsn, errmsg), 0, errmsg);
        expect++;
        assert_int_equal(lsn, expect);
        /* The LSN after an abort is the next one, never a reused one. */
        put_kv(ns, "b", 1, "2", 1, &lsn);
        expect++;
        assert_int_equal(lsn, expect);
        if (round == 1)
            flush_ns(ns);
        begin(ns, UD_OP_PUT, UD_ENTRY_KV, id); /* left open across the restart, then aborted */
        expect++;
        ud_ns_close(ns);
        ns = open_ns(&o);
        CHECK_RC(ud_ns_txn_abort(ns, id, &lsn, errmsg), 0, errmsg);
        expect++;
        assert_int_equal(lsn, expect);
        ud_ns_close(ns);
    }

    /* Read the log itself: LSNs 1..expect, dense, each record stamped with its own LSN. */
    char wal_dir[4096];
    snprintf(wal_dir, sizeof wal_dir, "%s/wal", dir);
    struct ud_wal_options wo = {.dir = wal_dir};
    struct ud_wal *wal;
    CHECK_RC(ud_wal_open(&wo, &wal, errmsg), 0, errmsg);
    assert_int_equal(ud_wal_first_lsn(wal), 1);
    assert_int_equal(ud_wal_last_lsn(wal), expect);
    struct ud_wal_reader *r;
    assert_int_equal(ud_wal_reader_open(wal, 1, UD_WAL_READ_UNDURABLE, &r), 0);
    uint64_t want = 1;
    const uint8_t *data;
    uint32_t len;
    while (ud_wal_reader_next(r, &data, &len, &lsn) == 0) {
        assert_int_equal(lsn, want);
        struct ud_record rec;
        assert_int_equal(ud_record_decode(data, len, &rec, NULL), 0);
        assert_int_equal(rec.lsn, want);
        assert_true(rec.hlc > 0);
        want++;
    }
    assert_int_equal(want, expect + 1);
    ud_wal_reader_close(r);
    ud_wal_close(wal);
    ud_test_rmtree(dir);
    free(dir);
}

/* --- recovery refuses a WAL that lacks what replay needs -------------------------------------- */

static void test_missing_wal_refused(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("txn-missing");
    struct ud_engine_options o = test_opts(dir);
    struct ud_ns *ns = open_ns(&o);
    char errmsg[UD_ERRMSG_SIZE] = "";
    uint8_t id[16];
    put_s(ns, "a", "1");
    begin(ns, UD_OP_PUT, UD_ENTRY_KV, id); /* LSN 2, open at the checkpoint */
    txn_kv(ns, id, "b", "2");
    put_s(ns, "c", "3");
    flush_ns(ns);
    ud_ns_close(ns);

    /* Losing the WAL loses the open transaction's parts: the open says which LSNs are gone. */
    char wal[4096];
    snprintf(wal, sizeof wal, "%s/wal", dir);
    ud_test_rmtree(wal);
    ns = NULL;
    assert_int_equal(ud_ns_open(&o, &ns, errmsg), UD_ECORRUPT);
    assert_null(ns);
    assert_non_null(strstr(errmsg, "LSNs 2..4 are missing"));
    ud_test_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kv_txn_isolation_atomicity),
        cmocka_unit_test(test_row_txn),
        cmocka_unit_test(test_update_delete_errors),
        cmocka_unit_test(test_txn_across_flush_and_restart),
        cmocka_unit_test(test_lsn_continuity),
        cmocka_unit_test(test_missing_wal_refused),
    };
    return cmocka_run_group_tests_name("engine-txn", tests, NULL, NULL);
}
