/* Record encoders (core/engine_encode.c): the records of every write, with the model limits
 * checked first, and records that apply to a namespace and read back as written. */
#include "proto/record.h"
#include "tests/unit/engine/helpers.h"

/* Encoding and the model limits, without a namespace. */
static void test_encoders(void **state)
{
    (void)state;
    char errmsg[UD_ERRMSG_SIZE];
    uint8_t *rec;
    size_t len;
    struct ud_record dec;
    struct ud_kv kv = {(const uint8_t *)"k", 1, (const uint8_t *)"v", 1};
    assert_int_equal(ud_engine_encode_kv(UD_OP_PUT, &kv, 1, 0, &rec, &len, errmsg), 0);
    assert_int_equal(ud_record_decode(rec, len, &dec, errmsg), 0);
    assert_int_equal(dec.op, UD_OP_PUT);
    assert_int_equal(dec.entry_type, UD_ENTRY_KV);
    assert_int_equal(dec.txn_state, UD_TXN_NONE);
    assert_int_equal(dec.lsn, 0);
    assert_int_equal(dec.entry_count, 1);
    free(rec);
    /* Deletes carry no values (the decoder rejects a value on a DELETE entry). */
    assert_int_equal(ud_engine_encode_kv(UD_OP_DELETE, &kv, 1, 0, &rec, &len, errmsg), 0);
    assert_int_equal(ud_record_decode(rec, len, &dec, errmsg), 0);
    free(rec);
    uint8_t longkey[600];
    memset(longkey, 'k', sizeof longkey);
    struct ud_kv lk = {longkey, 512, NULL, 0};
    assert_int_equal(ud_engine_encode_kv(UD_OP_PUT, &lk, 1, 0, &rec, &len, errmsg), UD_ELIMIT);
    assert_non_null(strstr(errmsg, "511"));
    lk.key_len = 511;
    assert_int_equal(ud_engine_encode_kv(UD_OP_PUT, &lk, 1, 0, &rec, &len, errmsg), 0);
    free(rec);
    lk.key_len = 0;
    assert_int_equal(ud_engine_encode_kv(UD_OP_PUT, &lk, 1, 0, &rec, &len, errmsg), UD_EINVAL);

    struct ud_col cols[2] = {{(const uint8_t *)"a", 1, (const uint8_t *)"1", 1},
                             {(const uint8_t *)"b", 1, (const uint8_t *)"2", 1}};
    struct ud_row row = {(const uint8_t *)"r", 1, cols, 2};
    assert_int_equal(ud_engine_encode_rows(UD_OP_PUT, &row, 1, 0, &rec, &len, errmsg), 0);
    assert_int_equal(ud_record_decode(rec, len, &dec, errmsg), 0);
    free(rec);
    assert_int_equal(ud_engine_encode_rows(UD_OP_DELETE, &row, 1, 0, &rec, &len, errmsg), 0);
    assert_int_equal(ud_record_decode(rec, len, &dec, errmsg), 0);
    free(rec);
    struct ud_row whole = {(const uint8_t *)"r", 1, NULL, 0};
    assert_int_equal(ud_engine_encode_rows(UD_OP_DELETE, &whole, 1, 0, &rec, &len, errmsg), 0);
    free(rec);
    assert_int_equal(ud_engine_encode_rows(UD_OP_PUT, &whole, 1, 0, &rec, &len, errmsg), UD_EINVAL);
    struct ud_row longrow = {longkey, 509, cols, 1};
    assert_int_equal(ud_engine_encode_rows(UD_OP_PUT, &longrow, 1, 0, &rec, &len, errmsg),
                     UD_ELIMIT);

    uint8_t id[16] = {1};
    assert_int_equal(ud_engine_encode_txn_begin(UD_OP_PUT, UD_ENTRY_LOB, id, 0, &rec, &len, errmsg),
                     0);
    assert_int_equal(ud_record_decode(rec, len, &dec, errmsg), 0);
    assert_int_equal(dec.txn_state, UD_TXN_BEGIN);
    assert_memory_equal(dec.txn_id, id, 16);
    free(rec);
    struct ud_txn_info info = {.op = UD_OP_PUT, .entry_type = UD_ENTRY_LOB, .begin_lsn = 7};
    assert_int_equal(ud_engine_encode_txn_lob(id, &info, (const uint8_t *)"f", 1, 0,
                                              (const uint8_t *)"abc", 3, 0, &rec, &len, errmsg),
                     0);
    assert_int_equal(ud_record_decode(rec, len, &dec, errmsg), 0);
    assert_int_equal(dec.txn_state, UD_TXN_PREPARE);
    assert_int_equal(dec.txn_begin_lsn, 7);
    free(rec);
    assert_int_equal(ud_engine_encode_txn_lob(id, &info, (const uint8_t *)"f", 1, 0, NULL, 0, 0,
                                              &rec, &len, errmsg),
                     UD_EINVAL);
    assert_int_equal(ud_engine_encode_txn_end(id, &info, UD_TXN_COMMIT, 0, &rec, &len, errmsg), 0);
    assert_int_equal(ud_record_decode(rec, len, &dec, errmsg), 0);
    assert_int_equal(dec.txn_state, UD_TXN_COMMIT);
    assert_int_equal(dec.entry_type, UD_ENTRY_LOB);
    free(rec);
    struct ud_txn_info kinfo = {.op = UD_OP_DELETE, .entry_type = UD_ENTRY_KV, .begin_lsn = 3};
    assert_int_equal(ud_engine_encode_txn_kv(id, &kinfo, &kv, 0, &rec, &len, errmsg), 0);
    assert_int_equal(ud_record_decode(rec, len, &dec, errmsg), 0);
    assert_int_equal(dec.op, UD_OP_DELETE);
    free(rec);
}

/* What an encoder builds is what the namespace applies: values read back equal, LSNs dense, the
 * hlc given is the one stored, a transaction commits atomically. */
static void test_encoded_records_apply(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("encode");
    struct ud_engine_options o = test_opts(dir);
    struct ud_ns *ns = open_ns(&o);
    char errmsg[UD_ERRMSG_SIZE] = "";
    uint8_t *rec;
    size_t len;
    uint64_t lsn = 0;

    struct ud_kv kvs[2] = {{(const uint8_t *)"a", 1, (const uint8_t *)"1", 1},
                           {(const uint8_t *)"b", 1, (const uint8_t *)"2", 1}};
    CHECK_RC(ud_engine_encode_kv(UD_OP_PUT, kvs, 2, 12345, &rec, &len, errmsg), 0, errmsg);
    struct ud_record dec;
    assert_int_equal(ud_record_decode(rec, len, &dec, errmsg), 0);
    assert_int_equal(dec.hlc, 12345);
    CHECK_RC(ud_ns_apply(ns, rec, len, &lsn, errmsg), 0, errmsg);
    free(rec);
    assert_int_equal(lsn, 1);
    expect_kv(ns, "a", "1");
    expect_kv(ns, "b", "2");

    CHECK_RC(ud_engine_encode_kv(UD_OP_DELETE, kvs, 1, 0, &rec, &len, errmsg), 0, errmsg);
    CHECK_RC(ud_ns_apply(ns, rec, len, &lsn, errmsg), 0, errmsg);
    free(rec);
    assert_int_equal(lsn, 2);
    expect_kv(ns, "a", NULL);

    /* A KV transaction: invisible until its COMMIT record. */
    uint8_t id[16] = {9, 8, 7};
    CHECK_RC(ud_engine_encode_txn_begin(UD_OP_PUT, UD_ENTRY_KV, id, 0, &rec, &len, errmsg), 0,
             errmsg);
    CHECK_RC(ud_ns_apply(ns, rec, len, &lsn, errmsg), 0, errmsg);
    free(rec);
    struct ud_txn_info info;
    assert_int_equal(ud_ns_txn_info(ns, id, &info), 0);
    assert_int_equal(info.begin_lsn, 3);
    struct ud_kv part = {(const uint8_t *)"t", 1, (const uint8_t *)"in-txn", 6};
    CHECK_RC(ud_engine_encode_txn_kv(id, &info, &part, 0, &rec, &len, errmsg), 0, errmsg);
    CHECK_RC(ud_ns_apply(ns, rec, len, &lsn, errmsg), 0, errmsg);
    free(rec);
    expect_kv(ns, "t", NULL);
    CHECK_RC(ud_engine_encode_txn_end(id, &info, UD_TXN_COMMIT, 0, &rec, &len, errmsg), 0, errmsg);
    CHECK_RC(ud_ns_apply(ns, rec, len, &lsn, errmsg), 0, errmsg);
    free(rec);
    assert_int_equal(lsn, 5);
    expect_kv(ns, "t", "in-txn");
    /* Only COMMIT and ABORT end a transaction. */
    assert_int_equal(ud_engine_encode_txn_end(id, &info, UD_TXN_PREPARE, 0, &rec, &len, errmsg),
                     UD_EINVAL);

    ud_ns_close(ns);
    ud_test_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encoders),
        cmocka_unit_test(test_encoded_records_apply),
    };
    return cmocka_run_group_tests_name("engine-encode", tests, NULL, NULL);
}
