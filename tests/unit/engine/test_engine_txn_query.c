/* Open-transaction queries: ud_ns_txn_info and ud_ns_txn_list across begin, parts, LOB chunks,
 * commit, abort and a restart. */
#include "tests/unit/engine/helpers.h"

struct seen {
    uint8_t ids[8][16];
    struct ud_txn_info info[8];
    size_t n;
};

static void collect(void *arg, const uint8_t id[16], const struct ud_txn_info *info)
{
    struct seen *s = arg;
    assert_true(s->n < 8);
    memcpy(s->ids[s->n], id, 16);
    s->info[s->n++] = *info;
}

static const struct ud_txn_info *find(const struct seen *s, const uint8_t id[16])
{
    for (size_t i = 0; i < s->n; i++)
        if (memcmp(s->ids[i], id, 16) == 0)
            return &s->info[i];
    return NULL;
}

static void test_info_follows_the_transaction(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("txnq");
    struct ud_engine_options o = test_opts(dir);
    struct ud_ns *ns = open_ns(&o);
    char errmsg[UD_ERRMSG_SIZE] = "";
    uint8_t kv[16], lob[16], unknown[16] = {1, 2, 3};
    uint64_t begin = 0, lsn = 0;
    struct ud_txn_info info;

    assert_int_equal(ud_ns_txn_info(ns, unknown, &info), UD_ENOTFOUND);
    struct seen s = {0};
    assert_int_equal(ud_ns_txn_list(ns, collect, &s), 0);

    CHECK_RC(ud_ns_txn_begin(ns, UD_OP_PUT, UD_ENTRY_KV, kv, &begin, errmsg), 0, errmsg);
    CHECK_RC(ud_ns_txn_info(ns, kv, &info), 0, "");
    assert_int_equal(info.op, UD_OP_PUT);
    assert_int_equal(info.entry_type, UD_ENTRY_KV);
    assert_int_equal(info.begin_lsn, begin);
    assert_int_equal(info.last_lsn, begin);
    assert_int_equal(info.parts, 0);
    assert_int_equal(info.bytes, 0);

    CHECK_RC(ud_ns_txn_kv(ns, kv, "a", 1, "1", 1, &lsn, errmsg), 0, errmsg);
    CHECK_RC(ud_ns_txn_kv(ns, kv, "b", 1, "22", 2, &lsn, errmsg), 0, errmsg);
    CHECK_RC(ud_ns_txn_info(ns, kv, &info), 0, "");
    assert_int_equal(info.parts, 2);
    assert_int_equal(info.last_lsn, lsn);
    assert_true(info.bytes > 0);

    /* A standalone write in between does not move the transaction's last LSN. */
    put_s(ns, "other", "x");
    CHECK_RC(ud_ns_txn_info(ns, kv, &info), 0, "");
    assert_int_equal(info.last_lsn, lsn);

    uint64_t lob_begin = 0;
    CHECK_RC(ud_ns_txn_begin(ns, UD_OP_PUT, UD_ENTRY_LOB, lob, &lob_begin, errmsg), 0, errmsg);
    CHECK_RC(ud_ns_txn_info(ns, lob, &info), 0, "");
    assert_int_equal(info.lob_key_len, 0);
    CHECK_RC(ud_ns_txn_lob(ns, lob, "file", 4, 0, "hello", 5, &lsn, errmsg), 0, errmsg);
    CHECK_RC(ud_ns_txn_lob(ns, lob, "file", 4, 5, "world!", 6, &lsn, errmsg), 0, errmsg);
    CHECK_RC(ud_ns_txn_info(ns, lob, &info), 0, "");
    assert_int_equal(info.entry_type, UD_ENTRY_LOB);
    assert_int_equal(info.bytes, 11);
    assert_int_equal(info.parts, 2);
    assert_int_equal(info.last_lsn, lsn);
    assert_int_equal(info.lob_key_len, 4);
    assert_memory_equal(info.lob_key, "file", 4);

    memset(&s, 0, sizeof s);
    assert_int_equal(ud_ns_txn_list(ns, collect, &s), 2);
    assert_non_null(find(&s, kv));
    assert_non_null(find(&s, lob));
    assert_int_equal(find(&s, lob)->bytes, 11);
    assert_int_equal(find(&s, kv)->begin_lsn, begin);

    /* Both survive a restart (replayed from the WAL) with the same description. */
    ud_ns_close(ns);
    ns = open_ns(&o);
    CHECK_RC(ud_ns_txn_info(ns, lob, &info), 0, "");
    assert_int_equal(info.bytes, 11);
    assert_int_equal(info.last_lsn, lsn);
    assert_int_equal(info.begin_lsn, lob_begin);
    CHECK_RC(ud_ns_txn_info(ns, kv, &info), 0, "");
    assert_int_equal(info.parts, 2);

    CHECK_RC(ud_ns_txn_commit(ns, kv, NULL, errmsg), 0, errmsg);
    assert_int_equal(ud_ns_txn_info(ns, kv, &info), UD_ENOTFOUND);
    CHECK_RC(ud_ns_txn_abort(ns, lob, NULL, errmsg), 0, errmsg);
    assert_int_equal(ud_ns_txn_info(ns, lob, &info), UD_ENOTFOUND);
    memset(&s, 0, sizeof s);
    assert_int_equal(ud_ns_txn_list(ns, collect, &s), 0);
    expect_kv(ns, "b", "22");

    ud_ns_close(ns);
    ud_test_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_info_follows_the_transaction),
    };
    return cmocka_run_group_tests_name("engine-txn-query", tests, NULL, NULL);
}
