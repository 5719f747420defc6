/* Record encoders (core/engine_encode.c): the records of every write, with the model limits
 * checked first, and records that apply to a namespace and read back as written. */
#include <malloc.h>

#include "core/arena.h"
#include "core/recbuf.h"
#include "core/wal.h"
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

/* One KV write of the test below and the record it must leave in the WAL. */
struct kv_case {
    enum ud_op op;
    struct ud_kv items[3];
    size_t n;
};

/*
 * The convenience KV writes encode their record straight into its WAL frame: the WAL holds
 * exactly the bytes ud_engine_encode_kv gives for the same write (with its LSN and HLC), a write
 * refused for its size takes no LSN and leaves nothing, and after a reopen, which replays the WAL
 * and checks every frame's CRC, the writes read back.
 */
static void test_kv_writes_in_wal(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("encode-in-wal");
    struct ud_engine_options o = test_opts(dir);
    struct ud_ns *ns = open_ns(&o);
    char errmsg[UD_ERRMSG_SIZE] = "";
    static uint8_t big[1000];
    memset(big, 'v', sizeof big);
    const struct kv_case cases[] = {
        {UD_OP_PUT, {{(const uint8_t *)"one", 3, big, sizeof big}}, 1},
        {UD_OP_PUT,
         {{(const uint8_t *)"a", 1, (const uint8_t *)"1", 1},
          {(const uint8_t *)"b", 1, big, 10},
          {(const uint8_t *)"a", 1, (const uint8_t *)"2", 1}},
         3},
        {UD_OP_DELETE, {{(const uint8_t *)"one", 3, big, 5}}, 1},
        {UD_OP_DELETE, {{(const uint8_t *)"b", 1, NULL, 0}, {(const uint8_t *)"x", 1, NULL, 0}}, 2},
        {UD_OP_PUT, {{(const uint8_t *)"last", 4, big, 1}}, 1},
    };
    const size_t ncases = sizeof cases / sizeof cases[0];
    /* Over the record's 4 MiB: refused before it takes an LSN. */
    uint8_t *huge = calloc(1, UD_RECORD_MAX_SIZE);
    assert_non_null(huge);
    struct ud_kv too_big[2] = {{(const uint8_t *)"h1", 2, huge, UD_RECORD_MAX_SIZE / 2},
                               {(const uint8_t *)"h2", 2, huge, UD_RECORD_MAX_SIZE / 2}};
    for (size_t i = 0; i < ncases; i++) {
        uint64_t lsn = 0;
        const struct kv_case *c = &cases[i];
        int rc = c->op == UD_OP_PUT ? ud_ns_kv_batch_put(ns, c->items, c->n, &lsn, errmsg)
                                    : ud_ns_kv_batch_delete(ns, c->items, c->n, &lsn, errmsg);
        CHECK_RC(rc, 0, errmsg);
        assert_int_equal(lsn, i + 1);
        if (i == 1) {
            assert_int_equal(ud_ns_kv_batch_put(ns, too_big, 2, &lsn, errmsg), UD_ELIMIT);
            assert_non_null(strstr(errmsg, "does not fit in one record"));
            assert_int_equal(lsn, 0);
        }
    }
    free(huge);

    struct ud_wal_reader *r = NULL;
    assert_int_equal(ud_ns_stream_open(ns, 1, &r), 0);
    for (size_t i = 0; i < ncases; i++) {
        const uint8_t *data;
        uint32_t len;
        uint64_t lsn;
        assert_int_equal(ud_wal_reader_next(r, &data, &len, &lsn), 0);
        assert_int_equal(lsn, i + 1);
        struct ud_record dec;
        CHECK_RC(ud_record_decode(data, len, &dec, errmsg), 0, errmsg);
        assert_true(dec.hlc != 0);
        uint8_t *want;
        size_t want_len;
        CHECK_RC(ud_engine_encode_kv(cases[i].op, cases[i].items, cases[i].n, dec.hlc, &want,
                                     &want_len, errmsg),
                 0, errmsg);
        ud_record_set_lsn(want, lsn);
        assert_int_equal(len, want_len);
        assert_memory_equal(data, want, want_len);
        free(want);
    }
    const uint8_t *data;
    uint32_t len;
    uint64_t lsn;
    assert_int_equal(ud_wal_reader_next(r, &data, &len, &lsn), UD_EAGAIN);
    ud_wal_reader_close(r);

    ud_ns_close(ns);
    ns = open_ns(&o);
    expect_kv(ns, "a", "2");
    expect_kv(ns, "one", NULL);
    expect_kv(ns, "b", NULL);
    expect_kv(ns, "h1", NULL);
    expect_kv(ns, "last", "v");
    ud_ns_close(ns);
    ud_test_rmtree(dir);
    free(dir);
}

/*
 * A KV write rejected after its WAL frame was reserved leaves no frame and takes no LSN: a
 * memtable insert that fails (no memory for a new arena block) stops the namespace after its
 * record took LSN 2; the next write is refused inside apply, with its frame reserved, and must
 * be cancelled. After a reopen the WAL holds LSNs 1 and 2 only, and the next write gets 3.
 */
static void test_kv_write_refused_in_frame(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("engine-encode-refused");
    struct ud_engine_options o = test_opts(dir);
    struct ud_ns *ns = open_ns(&o);
    char errmsg[UD_ERRMSG_SIZE] = "";
    uint64_t lsn = 0;
    CHECK_RC(ud_ns_kv_put(ns, "a", 1, "1", 1, &lsn, errmsg), 0, errmsg);
    assert_int_equal(lsn, 1);
    /* Larger than an arena block: the insert needs a block of its own, which the hook refuses. */
    size_t big_len = 2u << 20;
    uint8_t *big = calloc(1, big_len);
    assert_non_null(big);
    ud_arena_fail_after(0);
    int rc = ud_ns_kv_put(ns, "b", 1, big, big_len, &lsn, errmsg);
    ud_arena_fail_after(-1);
    free(big);
    assert_int_not_equal(rc, 0);
    assert_int_equal(ud_ns_kv_put(ns, "c", 1, "3", 1, &lsn, errmsg), UD_EIO);
    assert_non_null(strstr(errmsg, "failed earlier"));
    assert_int_equal(lsn, 0);
    ud_ns_close(ns);

    ns = open_ns(&o);
    CHECK_RC(ud_ns_kv_put(ns, "d", 1, "4", 1, &lsn, errmsg), 0, errmsg);
    assert_int_equal(lsn, 3);
    expect_kv(ns, "a", "1");
    expect_kv(ns, "c", NULL);
    expect_kv(ns, "d", "4");
    struct ud_wal_reader *r = NULL;
    assert_int_equal(ud_ns_stream_open(ns, 1, &r), 0);
    for (uint64_t want = 1; want <= 3; want++) {
        const uint8_t *data;
        uint32_t len;
        uint64_t got;
        assert_int_equal(ud_wal_reader_next(r, &data, &len, &got), 0);
        assert_int_equal(got, want);
    }
    const uint8_t *data;
    uint32_t len;
    uint64_t got;
    assert_int_equal(ud_wal_reader_next(r, &data, &len, &got), UD_EAGAIN);
    ud_wal_reader_close(r);
    ud_ns_close(ns);
    ud_test_rmtree(dir);
    free(dir);
}

/* A KV record's buffer freed with ud_recbuf_free is the next one of that size class: the
 * writer's loop no longer frees and allocates one per request. A buffer smaller than its class
 * (plain malloc of a record's exact length) is never handed out again, and trim frees them all. */
static void test_record_buffers_reused(void **state)
{
    (void)state;
    char errmsg[UD_ERRMSG_SIZE];
    static uint8_t value[1024];
    memset(value, 'v', sizeof value);
    struct ud_kv kv = {(const uint8_t *)"key:000000000001", 16, value, sizeof value};
    uint8_t *rec, *again;
    size_t len, len2;
    assert_int_equal(ud_engine_encode_kv(UD_OP_PUT, &kv, 1, 0, &rec, &len, errmsg), 0);
    assert_true(len > 1032 && len <= 1280); /* above glibc's thread cache: why it is kept */
    assert_true(malloc_usable_size(rec) >= 1280);
    ud_recbuf_free(rec, len);
    kv.key_len = 10;
    assert_int_equal(ud_engine_encode_kv(UD_OP_PUT, &kv, 1, 0, &again, &len2, errmsg), 0);
    assert_ptr_equal(again, rec);
    struct ud_record dec;
    assert_int_equal(ud_record_decode(again, len2, &dec, errmsg), 0);
    ud_recbuf_free(again, len2);

    /* An exact-size buffer of the same class is freed, not kept: a later, longer record of the
     * class must not get it. */
    uint8_t *small = malloc(1030);
    assert_non_null(small);
    uint8_t *kept = ud_recbuf_alloc(1100); /* the spare above */
    assert_ptr_equal(kept, rec);
    ud_recbuf_free(small, 1030);
    uint8_t *big = ud_recbuf_alloc(1270);
    assert_true(malloc_usable_size(big) >= 1270);
    memset(big, 0, 1270);
    free(big); /* plain free() releases them too */
    ud_recbuf_free(kept, 1100);
    /* Lengths past the classes are plain allocations. */
    uint8_t *huge = ud_recbuf_alloc(1u << 16);
    assert_non_null(huge);
    ud_recbuf_free(huge, 1u << 16);
    ud_recbuf_trim();
    uint8_t *fresh = ud_recbuf_alloc(1100);
    assert_non_null(fresh);
    free(fresh);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encoders),
        cmocka_unit_test(test_encoded_records_apply),
        cmocka_unit_test(test_kv_writes_in_wal),
        cmocka_unit_test(test_kv_write_refused_in_frame),
        cmocka_unit_test(test_record_buffers_reused),
    };
    return cmocka_run_group_tests_name("engine-encode", tests, NULL, NULL);
}
