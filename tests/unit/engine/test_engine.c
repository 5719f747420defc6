/* Engine tests: KV and row writes and reads across the memtable, sealed memtables and LMDB, key
 * limits, scans with limits and resume cursors, the apply contract, stats and the lock file. */
#include "tests/unit/engine/helpers.h"

#include <pthread.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/arena.h"
#include "core/clock.h"
#include "core/keyspace.h"
#include "core/memtable.h"
#include "proto/record.h"

/* --- KV basics -------------------------------------------------------------------------------- */

static void test_kv_roundtrip(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("engine-kv");
    struct ud_engine_options o = test_opts(dir);
    struct ud_ns *ns = open_ns(&o);
    char errmsg[UD_ERRMSG_SIZE] = "";

    const uint8_t bin_key[] = {0x00, 0xff, 0x00, 'a', 0x7f, 0x80};
    const uint8_t bin_val[] = {0x00, 0x01, 0x00, 0xfe};
    uint64_t l1 = 0, l2 = 0, l3 = 0, got = 0;
    put_kv(ns, bin_key, sizeof bin_key, bin_val, sizeof bin_val, &l1);
    put_kv(ns, "plain", 5, "", 0, &l2); /* an empty value is a value */
    assert_int_equal(l1, 1);
    assert_int_equal(l2, 2);

    struct ud_buf b = {0};
    assert_int_equal(ud_ns_kv_get(ns, bin_key, sizeof bin_key, &b, &got), 0);
    assert_int_equal(b.len, sizeof bin_val);
    assert_memory_equal(b.data, bin_val, sizeof bin_val);
    assert_int_equal(got, l1);
    assert_int_equal(ud_ns_kv_get(ns, "plain", 5, &b, &got), 0);
    assert_int_equal(b.len, 0);
    assert_int_equal(got, l2);
    /* A prefix of a stored binary key is another key. */
    assert_int_equal(ud_ns_kv_get(ns, bin_key, 3, &b, NULL), UD_ENOTFOUND);

    CHECK_RC(ud_ns_kv_delete(ns, bin_key, sizeof bin_key, &l3, errmsg), 0, errmsg);
    assert_int_equal(l3, 3);
    assert_int_equal(ud_ns_kv_get(ns, bin_key, sizeof bin_key, &b, NULL), UD_ENOTFOUND);

    struct ud_kv items[3] = {
        {(const uint8_t *)"b1", 2, (const uint8_t *)"one", 3},
        {(const uint8_t *)"b2", 2, (const uint8_t *)"two", 3},
        {(const uint8_t *)"b1", 2, (const uint8_t *)"uno", 3}, /* the last write of a key wins */
    };
    uint64_t bl = 0;
    CHECK_RC(ud_ns_kv_batch_put(ns, items, 3, &bl, errmsg), 0, errmsg);
    assert_int_equal(bl, 4);
    expect_kv(ns, "b1", "uno");
    expect_kv(ns, "b2", "two");
    assert_int_equal(ud_ns_kv_get(ns, "b2", 2, &b, &got), 0);
    assert_int_equal(got, 4); /* every item of a batch carries the batch's LSN */

    CHECK_RC(ud_ns_kv_batch_delete(ns, items, 2, &bl, errmsg), 0, errmsg);
    assert_int_equal(bl, 5);
    expect_kv(ns, "b1", NULL);
    expect_kv(ns, "b2", NULL);
    assert_int_equal(ud_ns_kv_batch_put(ns, items, 0, NULL, errmsg), UD_EINVAL);

    /* Same answers from LMDB after a flush, and after a restart. */
    flush_ns(ns);
    assert_int_equal(ud_ns_kv_get(ns, "plain", 5, &b, &got), 0);
    assert_int_equal(got, l2);
    expect_kv(ns, "b1", NULL);
    ud_ns_close(ns);
    ns = open_ns(&o);
    assert_int_equal(ud_ns_kv_get(ns, bin_key, sizeof bin_key, &b, NULL), UD_ENOTFOUND);
    assert_int_equal(ud_ns_kv_get(ns, "plain", 5, &b, &got), 0);
    assert_int_equal(got, l2);
    put_kv(ns, "after", 5, "x", 1, &l1);
    assert_int_equal(l1, 6);

    ud_buf_free(&b);
    ud_ns_close(ns);
    ud_test_rmtree(dir);
    free(dir);
}

/* --- limits ----------------------------------------------------------------------------------- */

static void test_key_limits(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("engine-limits");
    struct ud_engine_options o = test_opts(dir);
    struct ud_ns *ns = open_ns(&o);
    char errmsg[UD_ERRMSG_SIZE] = "";
    uint8_t key[600];
    memset(key, 'k', sizeof key);
    uint64_t lsn = 0;

    /* KV: 511 fits, 512 does not. */
    CHECK_RC(ud_ns_kv_put(ns, key, 511, "v", 1, &lsn, errmsg), 0, errmsg);
    assert_int_equal(lsn, 1);
    assert_int_equal(ud_ns_kv_put(ns, key, 512, "v", 1, &lsn, errmsg), UD_ELIMIT);
    assert_string_equal(errmsg, "kv key is 512 bytes; the limit is 511");
    struct ud_buf b = {0};
    assert_int_equal(ud_ns_kv_get(ns, key, 511, &b, NULL), 0);
    assert_int_equal(ud_ns_kv_get(ns, key, 512, &b, NULL), UD_ELIMIT);

    /* The same through the apply function: a rejected record takes no LSN. */
    struct ud_record h = {.version = UD_RECORD_VERSION, .op = UD_OP_PUT, .entry_type = UD_ENTRY_KV};
    struct ud_record_builder rb;
    uint8_t *rec;
    size_t rec_len;
    ud_record_builder_init(&rb, &h);
    ud_record_add_kv(&rb, key, 600, "v", 1);
    assert_int_equal(ud_record_builder_finish(&rb, &rec, &rec_len), 0);
    assert_int_equal(ud_ns_apply(ns, rec, rec_len, &lsn, errmsg), UD_ELIMIT);
    assert_string_equal(errmsg, "kv key is 600 bytes; the limit is 511");
    free(rec);

    /* Rows: escaped row key + column <= 509. */
    struct ud_col col = {key, 9, (const uint8_t *)"v", 1};
    struct ud_row row = {key, 500, &col, 1};
    CHECK_RC(ud_ns_row_put(ns, &row, &lsn, errmsg), 0, errmsg);
    assert_int_equal(lsn, 2);
    col.name_len = 10;
    assert_int_equal(ud_ns_row_put(ns, &row, &lsn, errmsg), UD_ELIMIT);
    assert_string_equal(errmsg, "row key (500 bytes) and column (10 bytes) encode to 510 bytes; "
                                "the limit is 509 (each NUL byte in a row key counts twice)");
    /* A NUL byte in the row key is escaped into two bytes. */
    uint8_t nul_row[500];
    memset(nul_row, 'r', sizeof nul_row);
    nul_row[10] = 0;
    struct ud_row r2 = {nul_row, 500, &col, 1};
    col.name_len = 8;
    CHECK_RC(ud_ns_row_put(ns, &r2, &lsn, errmsg), 0, errmsg);
    assert_int_equal(lsn, 3);
    col.name_len = 9;
    assert_int_equal(ud_ns_row_put(ns, &r2, &lsn, errmsg), UD_ELIMIT);
    assert_non_null(strstr(errmsg, "encode to 510 bytes; the limit is 509"));
    /* A row read over the limit is refused the same way. */
    struct ud_row big = {key, 510, NULL, 0};
    assert_int_equal(ud_ns_row_get(ns, &big, row_text_cb, NULL), UD_ELIMIT);
    struct row_text t;
    struct ud_row ok = {key, 500, NULL, 0};
    t.n = 0;
    assert_int_equal(ud_ns_row_get(ns, &ok, row_text_cb, &t), 0);

    /* LOB keys: 500 fits, 501 does not. */
    uint8_t id[16];
    CHECK_RC(ud_ns_txn_begin(ns, UD_OP_PUT, UD_ENTRY_LOB, id, &lsn, errmsg), 0, errmsg);
    assert_int_equal(lsn, 4);
    assert_int_equal(ud_ns_txn_lob(ns, id, key, 501, 0, "x", 1, &lsn, errmsg), UD_ELIMIT);
    assert_string_equal(errmsg, "lob key is 501 bytes; the limit is 500");
    CHECK_RC(ud_ns_txn_lob(ns, id, key, 500, 0, "x", 1, &lsn, errmsg), 0, errmsg);
    assert_int_equal(lsn, 5);
    CHECK_RC(ud_ns_txn_commit(ns, id, &lsn, errmsg), 0, errmsg);
    assert_int_equal(lsn, 6);
    struct ud_lob_reader *lr;
    uint64_t size = 0;
    assert_int_equal(ud_ns_lob_open(ns, key, 500, &lr, &size, &lsn), 0);
    assert_int_equal(size, 1);
    assert_int_equal(lsn, 6);
    ud_lob_reader_close(lr);
    assert_int_equal(ud_ns_lob_open(ns, key, 501, &lr, &size, &lsn), UD_ELIMIT);

    /* Rejections took no LSN. */
    struct ud_ns_stats st;
    ud_ns_stats(ns, &st);
    assert_int_equal(st.last_lsn, 6);
    ud_buf_free(&b);
    ud_ns_close(ns);
    ud_test_rmtree(dir);
    free(dir);
}

/* --- the apply contract ----------------------------------------------------------------------- */

static void test_apply_lsn_rules(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("engine-apply");
    struct ud_engine_options o = test_opts(dir);
    struct ud_ns *ns = open_ns(&o);
    char errmsg[UD_ERRMSG_SIZE] = "";
    struct ud_record h = {.version = UD_RECORD_VERSION, .op = UD_OP_PUT, .entry_type = UD_ENTRY_KV};
    struct ud_record_builder rb;
    uint8_t *rec;
    size_t len;
    uint64_t lsn = 0;

    /* A relayed record carries its LSN: it must be exactly the next one. */
    h.lsn = 2;
    ud_record_builder_init(&rb, &h);
    ud_record_add_kv(&rb, "a", 1, "1", 1);
    assert_int_equal(ud_record_builder_finish(&rb, &rec, &len), 0);
    assert_int_equal(ud_ns_apply(ns, rec, len, &lsn, errmsg), UD_ERANGE);
    assert_string_equal(errmsg, "record carries LSN 2; the next LSN is 1");
    ud_record_set_lsn(rec, 1);
    CHECK_RC(ud_ns_apply(ns, rec, len, &lsn, errmsg), 0, errmsg);
    assert_int_equal(lsn, 1);
    free(rec);

    /* An LSN of 0 gets the next one stamped into the buffer. */
    h.lsn = 0;
    ud_record_builder_init(&rb, &h);
    ud_record_add_kv(&rb, "b", 1, "2", 1);
    assert_int_equal(ud_record_builder_finish(&rb, &rec, &len), 0);
    CHECK_RC(ud_ns_apply(ns, rec, len, &lsn, errmsg), 0, errmsg);
    assert_int_equal(lsn, 2);
    assert_int_equal(ud_record_get_lsn(rec), 2);
    /* Garbage does not decode. */
    rec[1] = 99;
    assert_int_equal(ud_ns_apply(ns, rec, len, &lsn, errmsg), UD_ECORRUPT);
    assert_non_null(strstr(errmsg, "does not decode"));
    assert_int_equal(ud_ns_apply(ns, rec, 10, &lsn, errmsg), UD_ECORRUPT);
    free(rec);

    expect_kv(ns, "a", "1");
    expect_kv(ns, "b", "2");
    struct ud_ns_stats st;
    ud_ns_stats(ns, &st);
    assert_int_equal(st.last_lsn, 2);
    ud_ns_close(ns);
    ud_test_rmtree(dir);
    free(dir);
}

/* --- KV read merge against a reference map -----------------------------------------------------
 */

#define NKEYS 1500

struct model {
    uint8_t key[NKEYS][16];
    size_t klen[NKEYS];
    char *val[NKEYS];
    uint64_t lsn[NKEYS];
};

static int bytes_cmp(const uint8_t *a, size_t al, const uint8_t *b, size_t bl)
{
    size_t n = al < bl ? al : bl;
    int c = memcmp(a, b, n);
    return c != 0 ? c : (al > bl) - (al < bl);
}

static void model_init(struct model *m)
{
    memset(m, 0, sizeof *m);
    for (int i = 0; i < NKEYS; i++) {
        m->klen[i] = (size_t)snprintf((char *)m->key[i], 16, "key-%05d", i);
        /* Some binary keys: NUL and 0xFF bytes sort inside the text keys' range. */
        if (i % 7 == 0) {
            m->key[i][m->klen[i]++] = 0;
            m->key[i][m->klen[i]++] = 0xff;
        }
    }
    /* Key order is already sorted: "key-00007\0\xff" sorts after "key-00007" and before
     * "key-00008". */
    for (int i = 1; i < NKEYS; i++)
        assert_true(bytes_cmp(m->key[i - 1], m->klen[i - 1], m->key[i], m->klen[i]) < 0);
}

static void model_free(struct model *m)
{
    for (int i = 0; i < NKEYS; i++)
        free(m->val[i]);
}

static void model_put(struct ud_ns *ns, struct model *m, int i, uint64_t *rng)
{
    size_t len = 10 + ud_test_rand(rng) % 300;
    char *v = malloc(len + 1);
    for (size_t j = 0; j < len; j++)
        v[j] = (char)('a' + ud_test_rand(rng) % 26);
    v[len] = '\0';
    put_kv(ns, m->key[i], m->klen[i], v, len, &m->lsn[i]);
    free(m->val[i]);
    m->val[i] = v;
}

static void model_del(struct ud_ns *ns, struct model *m, int i)
{
    char errmsg[UD_ERRMSG_SIZE] = "";
    uint64_t lsn;
    CHECK_RC(ud_ns_kv_delete(ns, m->key[i], m->klen[i], &lsn, errmsg), 0, errmsg);
    free(m->val[i]);
    m->val[i] = NULL;
}

struct scan_out {
    int idx[NKEYS + 1];
    int n;
    const struct model *m;
    int bad;
};

static int scan_cb(void *arg, const uint8_t *key, size_t key_len, const uint8_t *value,
                   size_t value_len, uint64_t lsn)
{
    struct scan_out *s = arg;
    /* Find the key in the model by binary search. */
    int lo = 0, hi = NKEYS;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        int c = bytes_cmp(s->m->key[mid], s->m->klen[mid], key, key_len);
        if (c == 0) {
            lo = mid;
            break;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    const char *want = lo < NKEYS ? s->m->val[lo] : NULL;
    if (lo >= NKEYS || bytes_cmp(s->m->key[lo], s->m->klen[lo], key, key_len) != 0 ||
        want == NULL || strlen(want) != value_len || memcmp(want, value, value_len) != 0 ||
        lsn != s->m->lsn[lo]) {
        s->bad++;
        return 0;
    }
    s->idx[s->n++] = lo;
    return 0;
}

/* Scans [from, ...) with prefix in pages of limit, checking order and content against the model:
 * exactly the present model keys in range, in order. */
static void check_scan(struct ud_ns *ns, const struct model *m, const char *prefix,
                       const uint8_t *start, size_t start_len, uint32_t limit)
{
    uint32_t page = limit ? limit : 1000; /* 0 asks for the default */
    struct scan_out *out = calloc(1, sizeof *out);
    out->m = m;
    struct ud_buf next = {0};
    struct ud_scan sc = {(const uint8_t *)prefix, strlen(prefix), start, start_len, limit};
    uint8_t cursor[64];
    for (;;) {
        int before = out->n;
        assert_int_equal(ud_ns_kv_scan(ns, &sc, scan_cb, out, &next), 0);
        assert_true(out->n - before <= (int)page);
        if (next.len == 0)
            break;
        assert_int_equal(out->n - before, (int)page); /* a full page before a resume cursor */
        assert_true(next.len <= sizeof cursor);
        memcpy(cursor, next.data, next.len);
        sc.start = cursor;
        sc.start_len = next.len;
    }
    assert_int_equal(out->bad, 0);
    int k = 0;
    for (int i = 0; i < NKEYS; i++) {
        if (m->val[i] == NULL || m->klen[i] < strlen(prefix) ||
            memcmp(m->key[i], prefix, strlen(prefix)) != 0)
            continue;
        if (start_len > 0 && bytes_cmp(m->key[i], m->klen[i], start, start_len) < 0)
            continue;
        if (k >= out->n || out->idx[k] != i)
            print_message("scan mismatch at result %d: expected model key %d, got %d\n", k, i,
                          k < out->n ? out->idx[k] : -1);
        assert_true(k < out->n);
        assert_int_equal(out->idx[k], i);
        k++;
    }
    assert_int_equal(k, out->n);
    ud_buf_free(&next);
    free(out);
}

static void check_model(struct ud_ns *ns, const struct model *m)
{
    struct ud_buf b = {0};
    for (int i = 0; i < NKEYS; i++) {
        uint64_t lsn = 0;
        int rc = ud_ns_kv_get(ns, m->key[i], m->klen[i], &b, &lsn);
        if (m->val[i] == NULL) {
            if (rc != UD_ENOTFOUND)
                print_message("key %d should be absent (rc %d)\n", i, rc);
            assert_int_equal(rc, UD_ENOTFOUND);
            continue;
        }
        if (rc != 0)
            print_message("key %d should be present (rc %d)\n", i, rc);
        assert_int_equal(rc, 0);
        assert_int_equal(b.len, strlen(m->val[i]));
        assert_memory_equal(b.data, m->val[i], b.len);
        assert_int_equal(lsn, m->lsn[i]);
    }
    ud_buf_free(&b);
    check_scan(ns, m, "", NULL, 0, 37);
    check_scan(ns, m, "", NULL, 0, 0); /* default limit 1000: two pages */
    check_scan(ns, m, "key-001", NULL, 0, 9);
    check_scan(ns, m, "key-01", (const uint8_t *)"key-0150", 8, 50);
    check_scan(ns, m, "", (const uint8_t *)"key-00700\0", 10, 100); /* start between keys */
    check_scan(ns, m, "nope", NULL, 0, 10);
}

static void test_kv_merge_layers(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("engine-merge");
    struct ud_engine_options o = test_opts(dir);
    o.memtable_bytes = 48u << 10; /* seal often: reads cross many sealed memtables */
    o.max_sealed = 64;
    struct ud_ns *ns = open_ns(&o);
    struct model *m = malloc(sizeof *m);
    model_init(m);
    uint64_t rng = 42;

    for (int i = 0; i < NKEYS; i++)
        model_put(ns, m, i, &rng);
    check_model(ns, m);
    flush_ns(ns);
    check_model(ns, m);

    /* Overwrite a third and delete a fifth without flushing: memtables shadow LMDB. */
    for (int i = 0; i < NKEYS; i++) {
        uint64_t r = ud_test_rand(&rng) % 15;
        if (r < 5)
            model_put(ns, m, i, &rng);
        else if (r < 8)
            model_del(ns, m, i);
    }
    check_model(ns, m);

    /* A batch: one record, one LSN for all its keys. */
    struct ud_kv items[40];
    char vals[40][16];
    uint64_t blsn = 0;
    for (int j = 0; j < 40; j++) {
        int i = 300 + j * 3;
        snprintf(vals[j], sizeof vals[j], "batch-%d", j);
        items[j] = (struct ud_kv){m->key[i], m->klen[i], (const uint8_t *)vals[j], strlen(vals[j])};
    }
    char errmsg[UD_ERRMSG_SIZE] = "";
    CHECK_RC(ud_ns_kv_batch_put(ns, items, 40, &blsn, errmsg), 0, errmsg);
    for (int j = 0; j < 40; j++) {
        int i = 300 + j * 3;
        free(m->val[i]);
        m->val[i] = strdup(vals[j]);
        m->lsn[i] = blsn;
    }
    CHECK_RC(ud_ns_kv_batch_delete(ns, items, 10, &blsn, errmsg), 0, errmsg);
    for (int j = 0; j < 10; j++) {
        free(m->val[300 + j * 3]);
        m->val[300 + j * 3] = NULL;
    }
    check_model(ns, m);
    flush_ns(ns);
    check_model(ns, m);

    /* Restart: LMDB plus a replayed memtable. */
    for (int i = 0; i < NKEYS; i += 11)
        model_put(ns, m, i, &rng);
    for (int i = 5; i < NKEYS; i += 13)
        model_del(ns, m, i);
    ud_ns_close(ns);
    ns = open_ns(&o);
    check_model(ns, m);
    flush_ns(ns);
    ud_ns_close(ns);
    ns = open_ns(&o);
    check_model(ns, m);

    ud_ns_close(ns);
    model_free(m);
    free(m);
    ud_test_rmtree(dir);
    free(dir);
}

/* One reader, many point reads: values from the memtables and from LMDB stay valid until the
 * close, what it reads is fixed at the open, and a closed reader opens again on later writes. */
static void test_kv_reader(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("engine-reader");
    struct ud_engine_options o = test_opts(dir);
    struct ud_ns *ns = open_ns(&o);
    put_s(ns, "flushed", "in-lmdb");
    put_s(ns, "gone", "deleted-in-memtable");
    flush_ns(ns);
    put_s(ns, "fresh", "in-memtable");
    del_s(ns, "gone");

    struct ud_kv_reader *r;
    assert_int_equal(ud_kv_reader_new(&r), 0);
    assert_null(ud_kv_reader_ns(r));
    assert_int_equal(ud_kv_reader_open(r, ns), 0);
    assert_ptr_equal(ud_kv_reader_ns(r), ns);
    const uint8_t *v1, *v2, *v;
    size_t l1, l2, l;
    uint64_t lsn = 0;
    assert_int_equal(ud_kv_reader_get(r, "flushed", 7, &v1, &l1, &lsn), 0);
    assert_true(lsn > 0);
    assert_int_equal(ud_kv_reader_get(r, "fresh", 5, &v2, &l2, NULL), 0);
    assert_int_equal(ud_kv_reader_get(r, "gone", 4, &v, &l, NULL), UD_ENOTFOUND);
    assert_int_equal(ud_kv_reader_get(r, "never", 5, &v, &l, NULL), UD_ENOTFOUND);
    assert_int_equal(ud_kv_reader_get(r, "", 0, &v, &l, NULL), UD_EINVAL);
    /* Written after the open: not seen, and the values handed out so far stay as they were. */
    put_s(ns, "fresh", "overwritten");
    put_s(ns, "later", "x");
    assert_int_equal(ud_kv_reader_get(r, "later", 5, &v, &l, NULL), UD_ENOTFOUND);
    assert_int_equal(ud_kv_reader_get(r, "fresh", 5, &v, &l, NULL), 0);
    assert_memory_equal(v, "in-memtable", 11);
    assert_int_equal(l1, 7);
    assert_memory_equal(v1, "in-lmdb", 7);
    assert_int_equal(l2, 11);
    assert_memory_equal(v2, "in-memtable", 11);
    ud_kv_reader_close(r);
    assert_null(ud_kv_reader_ns(r));
    ud_kv_reader_close(r); /* closing a closed reader does nothing */

    assert_int_equal(ud_kv_reader_open(r, ns), 0);
    assert_int_equal(ud_kv_reader_get(r, "later", 5, &v, &l, NULL), 0);
    assert_int_equal(ud_kv_reader_get(r, "fresh", 5, &v, &l, NULL), 0);
    assert_int_equal(l, 11);
    assert_memory_equal(v, "overwritten", 11);
    ud_kv_reader_close(r);

    /* Fixed at the open even for keys only LMDB answers: writes flushed after the open, before
     * the first read the memtables do not answer, are not seen either (a flush in that gap once
     * showed a later write while an earlier one stayed hidden). */
    put_s(ns, "a", "old");
    assert_int_equal(ud_kv_reader_open(r, ns), 0);
    put_s(ns, "a", "new");
    put_s(ns, "after-open", "x");
    flush_ns(ns);
    assert_int_equal(ud_kv_reader_get(r, "after-open", 10, &v, &l, NULL), UD_ENOTFOUND);
    assert_int_equal(ud_kv_reader_get(r, "a", 1, &v, &l, NULL), 0);
    assert_int_equal(l, 3);
    assert_memory_equal(v, "old", 3);
    /* Freed while open: it is closed first. */
    ud_kv_reader_free(r);
    ud_kv_reader_free(NULL);
    ud_ns_close(ns);
    ud_test_rmtree(dir);
    free(dir);
}

/* --- rows ------------------------------------------------------------------------------------- */

static void test_row_merge(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("engine-rows");
    struct ud_engine_options o = test_opts(dir);
    struct ud_ns *ns = open_ns(&o);

    /* Partial updates merge. */
    put_row(ns, "user:1", "name", "Alice", "email", "a@x", NULL);
    put_row(ns, "user:1", "age", "30", NULL);
    expect_row(ns, "user:1", "age=30;email=a@x;name=Alice;");
    flush_ns(ns);
    put_row(ns, "user:1", "age", "31", "city", "Oslo", NULL);
    expect_row(ns, "user:1", "age=31;city=Oslo;email=a@x;name=Alice;");

    /* Selected columns, in name order, absent ones skipped. */
    struct row_text t;
    const char *names[] = {"name", "zzz", "age"};
    assert_int_equal(read_row(ns, "user:1", names, 3, &t), 0);
    assert_string_equal(t.s, "age=31;name=Alice;");
    const char *none[] = {"zzz"};
    assert_int_equal(read_row(ns, "user:1", none, 1, &t), UD_ENOTFOUND);

    /* Column delete, across layers. */
    del_row(ns, "user:1", "email", NULL);
    expect_row(ns, "user:1", "age=31;city=Oslo;name=Alice;");
    const char *em[] = {"email"};
    assert_int_equal(read_row(ns, "user:1", em, 1, &t), UD_ENOTFOUND);
    flush_ns(ns);
    expect_row(ns, "user:1", "age=31;city=Oslo;name=Alice;");

    /* Whole-row delete then a re-put of one column: only the new column is visible. */
    del_row(ns, "user:1", NULL);
    expect_row(ns, "user:1", NULL);
    assert_int_equal(read_row(ns, "user:1", names, 3, &t), UD_ENOTFOUND);
    put_row(ns, "user:1", "name", "Bob", NULL);
    expect_row(ns, "user:1", "name=Bob;");
    assert_int_equal(read_row(ns, "user:1", names, 3, &t), 0);
    assert_string_equal(t.s, "name=Bob;");
    flush_ns(ns);
    expect_row(ns, "user:1", "name=Bob;");

    /* The same with the tombstone in a memtable over LMDB columns, then after a restart. */
    put_row(ns, "user:2", "a", "1", "b", "2", NULL);
    flush_ns(ns);
    del_row(ns, "user:2", NULL);
    put_row(ns, "user:2", "c", "3", NULL);
    expect_row(ns, "user:2", "c=3;");
    ud_ns_close(ns);
    ns = open_ns(&o);
    expect_row(ns, "user:2", "c=3;");
    expect_row(ns, "user:1", "name=Bob;");
    flush_ns(ns);
    expect_row(ns, "user:2", "c=3;");

    /* Rows with NUL bytes and prefixes of each other stay apart. */
    struct ud_col c = {(const uint8_t *)"x", 1, (const uint8_t *)"nul", 3};
    struct ud_row r = {(const uint8_t *)"user\0"
                                        "2",
                       6, &c, 1};
    char errmsg[UD_ERRMSG_SIZE] = "";
    CHECK_RC(ud_ns_row_put(ns, &r, NULL, errmsg), 0, errmsg);
    put_row(ns, "user", "y", "short", NULL);
    expect_row(ns, "user", "y=short;");
    expect_row(ns, "user:2", "c=3;");
    t.n = 0;
    struct ud_row rr = {(const uint8_t *)"user\0"
                                         "2",
                        6, NULL, 0};
    assert_int_equal(ud_ns_row_get(ns, &rr, row_text_cb, &t), 0);
    assert_string_equal(t.s, "x=nul;");
    del_row(ns, "user", NULL); /* must not touch "user\0002" */
    t.n = 0;
    assert_int_equal(ud_ns_row_get(ns, &rr, row_text_cb, &t), 0);
    assert_string_equal(t.s, "x=nul;");
    flush_ns(ns);
    t.n = 0;
    assert_int_equal(ud_ns_row_get(ns, &rr, row_text_cb, &t), 0);
    assert_string_equal(t.s, "x=nul;");
    expect_row(ns, "user", NULL);

    /* Writes that name no column or an empty one are refused. */
    struct ud_row nocol = {(const uint8_t *)"r", 1, NULL, 0};
    assert_int_equal(ud_ns_row_put(ns, &nocol, NULL, errmsg), UD_EINVAL);
    struct ud_col empty = {(const uint8_t *)"", 0, (const uint8_t *)"v", 1};
    struct ud_row ec = {(const uint8_t *)"r", 1, &empty, 1};
    assert_int_equal(ud_ns_row_put(ns, &ec, NULL, errmsg), UD_EINVAL);

    ud_ns_close(ns);
    ud_test_rmtree(dir);
    free(dir);
}

/* Random row operations against a model, read back by gets and paged scans. */
#define NROWS 80
#define NCOLS 6

struct row_model {
    char *v[NROWS][NCOLS];
};

static void row_name(char *out, int r)
{
    snprintf(out, 16, "row%03d", r);
}

static void row_model_text(const struct row_model *m, int r, char *out, size_t size)
{
    size_t n = 0;
    out[0] = '\0';
    for (int c = 0; c < NCOLS; c++)
        if (m->v[r][c] != NULL)
            n += (size_t)snprintf(out + n, size - n, "c%d=%s;", c, m->v[r][c]);
}

struct scan_text {
    char s[65536];
    size_t n;
};

static int row_scan_cb(void *arg, const uint8_t *row, size_t row_len, const uint8_t *name,
                       size_t name_len, const uint8_t *value, size_t value_len, uint64_t lsn)
{
    (void)lsn;
    struct scan_text *t = arg;
    t->n += (size_t)snprintf(t->s + t->n, sizeof t->s - t->n, "%.*s|%.*s=%.*s;", (int)row_len,
                             (const char *)row, (int)name_len, (const char *)name, (int)value_len,
                             (const char *)value);
    return 0;
}

static int count_rows(const char *s)
{
    /* Rows in a rendering "rowNNN|c=v;..." */
    int n = 0;
    char last[16] = "";
    for (const char *p = s; (p = strstr(p, "row")) != NULL; p += 6) {
        if (strncmp(p, last, 6) != 0) {
            n++;
            memcpy(last, p, 6);
        }
    }
    return n;
}

static void check_rows(struct ud_ns *ns, const struct row_model *m, const char *prefix,
                       uint32_t limit)
{
    char want_row[512];
    struct scan_text *want = calloc(1, sizeof *want);
    struct scan_text *got = calloc(1, sizeof *got);
    for (int r = 0; r < NROWS; r++) {
        char name[16];
        row_name(name, r);
        row_model_text(m, r, want_row, sizeof want_row);
        if (prefix[0] == '\0')
            expect_row(ns, name, want_row[0] ? want_row : NULL);
        if (want_row[0] == '\0' || strncmp(name, prefix, strlen(prefix)) != 0)
            continue;
        for (int c = 0; c < NCOLS; c++)
            if (m->v[r][c] != NULL)
                want->n += (size_t)snprintf(want->s + want->n, sizeof want->s - want->n,
                                            "%s|c%d=%s;", name, c, m->v[r][c]);
    }
    struct ud_scan sc = {(const uint8_t *)prefix, strlen(prefix), NULL, 0, limit};
    struct ud_buf next = {0};
    char cursor[64];
    for (;;) {
        size_t before = got->n;
        assert_int_equal(ud_ns_row_scan(ns, &sc, row_scan_cb, got, &next), 0);
        int rows = count_rows(got->s + before);
        assert_true(rows <= (int)limit);
        if (next.len == 0)
            break;
        assert_int_equal(rows, (int)limit);
        memcpy(cursor, next.data, next.len);
        sc.start = (const uint8_t *)cursor;
        sc.start_len = next.len;
    }
    if (strcmp(want->s, got->s) != 0)
        print_message("row scan (prefix \"%s\", limit %u)\nwant %s\ngot  %s\n", prefix, limit,
                      want->s, got->s);
    assert_string_equal(want->s, got->s);
    ud_buf_free(&next);
    free(want);
    free(got);
}

static void test_row_model(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("engine-rowmodel");
    struct ud_engine_options o = test_opts(dir);
    o.memtable_bytes = 16u << 10;
    o.max_sealed = 64;
    struct ud_ns *ns = open_ns(&o);
    struct row_model *m = calloc(1, sizeof *m);
    uint64_t rng = 7;
    char errmsg[UD_ERRMSG_SIZE] = "";

    for (int round = 0; round < 6; round++) {
        for (int op = 0; op < 400; op++) {
            int r = (int)(ud_test_rand(&rng) % NROWS);
            char name[16];
            row_name(name, r);
            uint64_t kind = ud_test_rand(&rng) % 10;
            struct ud_col cols[NCOLS];
            char cn[NCOLS][4], cv[NCOLS][24];
            size_t n = 0;
            for (int c = 0; c < NCOLS; c++) {
                if (ud_test_rand(&rng) % 3 != 0)
                    continue;
                snprintf(cn[n], sizeof cn[n], "c%d", c);
                snprintf(cv[n], sizeof cv[n], "v%d.%d.%d", round, op, c);
                cols[n] = (struct ud_col){(const uint8_t *)cn[n], strlen(cn[n]),
                                          (const uint8_t *)cv[n], strlen(cv[n])};
                n++;
            }
            struct ud_row row = {(const uint8_t *)name, strlen(name), cols, n};
            if (kind < 6 && n > 0) {
                CHECK_RC(ud_ns_row_put(ns, &row, NULL, errmsg), 0, errmsg);
                for (size_t i = 0; i < n; i++) {
                    int c = cn[i][1] - '0';
                    free(m->v[r][c]);
                    m->v[r][c] = strdup(cv[i]);
                }
            } else if (kind < 8 && n > 0) {
                CHECK_RC(ud_ns_row_delete(ns, &row, NULL, errmsg), 0, errmsg);
                for (size_t i = 0; i < n; i++) {
                    int c = cn[i][1] - '0';
                    free(m->v[r][c]);
                    m->v[r][c] = NULL;
                }
            } else if (kind >= 8) {
                row.ncols = 0;
                CHECK_RC(ud_ns_row_delete(ns, &row, NULL, errmsg), 0, errmsg);
                for (int c = 0; c < NCOLS; c++) {
                    free(m->v[r][c]);
                    m->v[r][c] = NULL;
                }
            }
        }
        check_rows(ns, m, "", 7);
        check_rows(ns, m, "row01", 3);
        check_rows(ns, m, "row0", 1000);
        if (round % 2 == 1)
            flush_ns(ns);
        if (round == 3) {
            ud_ns_close(ns);
            ns = open_ns(&o);
            check_rows(ns, m, "", 11);
        }
    }
    ud_ns_close(ns);
    for (int r = 0; r < NROWS; r++)
        for (int c = 0; c < NCOLS; c++)
            free(m->v[r][c]);
    free(m);
    ud_test_rmtree(dir);
    free(dir);
}

/* --- stats and the lock file ------------------------------------------------------------------ */

static void test_stats(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("engine-stats");
    struct ud_engine_options o = test_opts(dir);
    struct ud_ns *ns = open_ns(&o);
    assert_string_equal(ud_ns_name(ns), "test");
    struct ud_ns_stats st;
    ud_ns_stats(ns, &st);
    assert_int_equal(st.last_lsn, 0);
    assert_int_equal(st.flushed_lsn, 0);
    assert_int_equal(st.wal_first_lsn, 1);
    assert_int_equal(st.wal_segments, 1);
    assert_int_equal(st.segment_id, 1);

    for (int i = 0; i < 10; i++) {
        char k[16];
        snprintf(k, sizeof k, "k%d", i);
        put_s(ns, k, "value");
    }
    uint8_t id[16];
    char errmsg[UD_ERRMSG_SIZE] = "";
    CHECK_RC(ud_ns_txn_begin(ns, UD_OP_PUT, UD_ENTRY_KV, id, NULL, errmsg), 0, errmsg);
    ud_ns_stats(ns, &st);
    assert_int_equal(st.last_lsn, 11);
    assert_int_equal(st.ops_received, 11);
    assert_int_equal(st.open_txns, 1);
    assert_true(st.memtable_bytes > 0);
    assert_true(st.offset > 64);
    assert_int_equal(st.flushed_lsn, 0);
    assert_int_equal(st.flush_errors, 0);

    flush_ns(ns);
    ud_ns_stats(ns, &st);
    assert_int_equal(st.flushed_lsn, 11);
    assert_int_equal(st.ops_flushed, 11);
    assert_int_equal(st.durable_lsn, 11); /* a flush syncs the WAL first */
    assert_int_equal(st.sealed_memtables, 0);
    CHECK_RC(ud_ns_txn_abort(ns, id, NULL, errmsg), 0, errmsg);
    ud_ns_stats(ns, &st);
    assert_int_equal(st.open_txns, 0);
    assert_int_equal(st.last_lsn, 12);
    ud_ns_close(ns);
    ud_test_rmtree(dir);
    free(dir);
}

static void test_lock_file(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("engine-lock");
    struct ud_engine_options o = test_opts(dir);
    struct ud_ns *ns = open_ns(&o);
    struct ud_ns *second = NULL;
    char errmsg[UD_ERRMSG_SIZE] = "";
    assert_int_equal(ud_ns_open(&o, &second, errmsg), UD_ELOCKED);
    assert_null(second);
    char want[64];
    snprintf(want, sizeof want, "/LOCK is locked by process %ld", (long)getpid());
    if (strstr(errmsg, want) == NULL)
        print_message("message: %s\n", errmsg);
    assert_non_null(strstr(errmsg, want));
    /* The first handle is unaffected; after close the namespace opens again. */
    put_s(ns, "k", "v");
    ud_ns_close(ns);
    ns = open_ns(&o);
    expect_kv(ns, "k", "v");
    ud_ns_close(ns);
    ud_test_rmtree(dir);
    free(dir);
}

/* --- readers during writes and flushes -------------------------------------------------------- */

#define CKEYS   200
#define CROUNDS 40

struct conc {
    struct ud_ns *ns;
    _Atomic int written[CKEYS]; /* newest round acknowledged per key; -1 before the first */
    _Atomic int done;
    _Atomic long reads;
    _Atomic int errors;
};

static void *conc_reader(void *arg)
{
    struct conc *c = arg;
    uint64_t rng = (uint64_t)pthread_self();
    struct ud_buf b = {0};
    while (!atomic_load(&c->done)) {
        int k = (int)(ud_test_rand(&rng) % CKEYS);
        char key[16];
        snprintf(key, sizeof key, "c%04d", k);
        int floor = atomic_load(&c->written[k]);
        int rc = ud_ns_kv_get(c->ns, key, strlen(key), &b, NULL);
        /* Once acknowledged, a write stays visible through sealing and flushing, and a reader
         * never sees an older round than one acknowledged before its read began. */
        char vb[16] = "";
        if (rc == 0)
            memcpy(vb, b.data, b.len < 15 ? b.len : 15);
        int v = rc == 0 ? atoi(vb) : -1;
        if ((floor >= 0 && rc != 0) || v < floor)
            atomic_fetch_add(&c->errors, 1);
        atomic_fetch_add(&c->reads, 1);
    }
    ud_buf_free(&b);
    return NULL;
}

static int conc_scan_cb(void *arg, const uint8_t *key, size_t key_len, const uint8_t *value,
                        size_t value_len, uint64_t lsn)
{
    (void)lsn;
    int *state = arg; /* [0] previous key index, [1] errors, [2..] floors */
    char buf[16] = "";
    memcpy(buf, key + 1, key_len - 1 < 15 ? key_len - 1 : 15);
    int k = atoi(buf);
    char vb[16] = "";
    memcpy(vb, value, value_len < 15 ? value_len : 15);
    if (k <= state[0] || atoi(vb) < state[2 + k])
        state[1]++;
    state[0] = k;
    return 0;
}

static void *conc_scanner(void *arg)
{
    struct conc *c = arg;
    int *state = malloc((2 + CKEYS) * sizeof *state);
    while (!atomic_load(&c->done)) {
        state[0] = -1;
        state[1] = 0;
        for (int k = 0; k < CKEYS; k++)
            state[2 + k] = atomic_load(&c->written[k]);
        struct ud_scan sc = {(const uint8_t *)"c", 1, NULL, 0, CKEYS + 1};
        if (ud_ns_kv_scan(c->ns, &sc, conc_scan_cb, state, NULL) != 0 || state[1] != 0)
            atomic_fetch_add(&c->errors, 1);
        atomic_fetch_add(&c->reads, 1);
    }
    free(state);
    return NULL;
}

/* Two readers and a scanner run while the keys are rewritten CROUNDS times through many seals and
 * flushes (and map growths when map_size is small). Returns the LMDB map's size at the end. */
static uint64_t run_concurrent_readers(const char *name, uint64_t map_size)
{
    char *dir = ud_test_tmpdir(name);
    struct ud_engine_options o = test_opts(dir);
    o.memtable_bytes = 32u << 10; /* many seals and flushes while readers run */
    if (map_size != 0)
        o.map_size = map_size;
    struct conc *c = calloc(1, sizeof *c);
    c->ns = open_ns(&o);
    for (int k = 0; k < CKEYS; k++)
        atomic_store(&c->written[k], -1);
    pthread_t t[3];
    assert_int_equal(pthread_create(&t[0], NULL, conc_reader, c), 0);
    assert_int_equal(pthread_create(&t[1], NULL, conc_reader, c), 0);
    assert_int_equal(pthread_create(&t[2], NULL, conc_scanner, c), 0);
    char key[16], val[160];
    for (int r = 0; r < CROUNDS; r++) {
        for (int k = 0; k < CKEYS; k++) {
            snprintf(key, sizeof key, "c%04d", k);
            int n = snprintf(val, sizeof val, "%d", r);
            memset(val + n, ' ', sizeof val - (size_t)n); /* atoi stops at the padding */
            put_kv(c->ns, key, strlen(key), val, sizeof val, NULL);
            atomic_store(&c->written[k], r);
        }
    }
    atomic_store(&c->done, 1);
    for (int i = 0; i < 3; i++)
        pthread_join(t[i], NULL);
    struct ud_ns_stats st;
    ud_ns_stats(c->ns, &st);
    print_message("# %ld reads during %d writes, %llu flushed, %llu flush errors\n",
                  atomic_load(&c->reads), CKEYS * CROUNDS, (unsigned long long)st.flushed_lsn,
                  (unsigned long long)st.flush_errors);
    assert_int_equal(atomic_load(&c->errors), 0);
    assert_true(st.flushed_lsn > 0);
    ud_ns_close(c->ns);
    free(c);
    char path[4096];
    snprintf(path, sizeof path, "%s/lmdb/data.mdb", dir);
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    ud_test_rmtree(dir);
    free(dir);
    return (uint64_t)sb.st_size; /* the pages in use: at most the map size */
}

static void test_concurrent_readers(void **state)
{
    (void)state;
    run_concurrent_readers("engine-conc", 0);
}

/* The same while the store's map grows from 64 KiB: readers reuse idle LMDB read transactions
 * between flushes, and every growth must reset them without a reader missing a value. */
static void test_concurrent_readers_map_growth(void **state)
{
    (void)state;
    uint64_t used = run_concurrent_readers("engine-conc-grow", 64u << 10);
    print_message("# data file grew to %" PRIu64 " KiB\n", used >> 10);
    assert_true(used > (64u << 10)); /* so the map did too */
}

/* --- a record's writes become visible together ------------------------------------------------ */

struct atomic_check {
    struct ud_ns *ns;
    _Atomic int done;
    _Atomic long torn;
    _Atomic long reads;
};

static int pair_cb(void *arg, const uint8_t *key, size_t key_len, const uint8_t *value,
                   size_t value_len, uint64_t lsn)
{
    (void)key, (void)key_len, (void)lsn;
    char(*vals)[16] = arg;
    int i = vals[2][0]++;
    if (i < 2)
        memcpy(vals[i], value, value_len < 15 ? value_len : 15);
    return 0;
}

static int pair_row_cb(void *arg, const uint8_t *name, size_t name_len, const uint8_t *value,
                       size_t value_len, uint64_t lsn)
{
    return pair_cb(arg, name, name_len, value, value_len, lsn);
}

static void *atomic_reader(void *arg)
{
    struct atomic_check *a = arg;
    while (!atomic_load(&a->done)) {
        /* One scan and one row read each see one view: both keys (columns) or neither. */
        char vals[3][16];
        memset(vals, 0, sizeof vals);
        struct ud_scan sc = {(const uint8_t *)"pair", 4, NULL, 0, 10};
        if (ud_ns_kv_scan(a->ns, &sc, pair_cb, vals, NULL) != 0 || vals[2][0] != 2 ||
            strcmp(vals[0], vals[1]) != 0)
            atomic_fetch_add(&a->torn, 1);
        memset(vals, 0, sizeof vals);
        struct ud_row r = {(const uint8_t *)"pairrow", 7, NULL, 0};
        if (ud_ns_row_get(a->ns, &r, pair_row_cb, vals) != 0 || vals[2][0] != 2 ||
            strcmp(vals[0], vals[1]) != 0)
            atomic_fetch_add(&a->torn, 1);
        atomic_fetch_add(&a->reads, 1);
    }
    return NULL;
}

static void test_atomic_visibility(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("engine-atomic");
    struct ud_engine_options o = test_opts(dir);
    o.memtable_bytes = 64u << 10;
    struct atomic_check *a = calloc(1, sizeof *a);
    a->ns = open_ns(&o);
    char errmsg[UD_ERRMSG_SIZE] = "";
    char v[16];
    struct ud_kv kv[2] = {{(const uint8_t *)"pair-a", 6, (const uint8_t *)v, 0},
                          {(const uint8_t *)"pair-b", 6, (const uint8_t *)v, 0}};
    struct ud_col cols[2] = {{(const uint8_t *)"a", 1, (const uint8_t *)v, 0},
                             {(const uint8_t *)"b", 1, (const uint8_t *)v, 0}};
    struct ud_row row = {(const uint8_t *)"pairrow", 7, cols, 2};
    snprintf(v, sizeof v, "0");
    kv[0].value_len = kv[1].value_len = cols[0].value_len = cols[1].value_len = 1;
    CHECK_RC(ud_ns_kv_batch_put(a->ns, kv, 2, NULL, errmsg), 0, errmsg);
    CHECK_RC(ud_ns_row_put(a->ns, &row, NULL, errmsg), 0, errmsg);
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&t[i], NULL, atomic_reader, a), 0);
    uint8_t id[16];
    for (int i = 1; i < 6000; i++) {
        size_t n = (size_t)snprintf(v, sizeof v, "%d", i);
        kv[0].value_len = kv[1].value_len = cols[0].value_len = cols[1].value_len = n;
        if (i % 3 == 0) {
            /* A transaction's parts, too, appear together at its commit. */
            CHECK_RC(ud_ns_txn_begin(a->ns, UD_OP_PUT, UD_ENTRY_KV, id, NULL, errmsg), 0, errmsg);
            CHECK_RC(ud_ns_txn_kv(a->ns, id, "pair-a", 6, v, n, NULL, errmsg), 0, errmsg);
            CHECK_RC(ud_ns_txn_kv(a->ns, id, "pair-b", 6, v, n, NULL, errmsg), 0, errmsg);
            CHECK_RC(ud_ns_txn_commit(a->ns, id, NULL, errmsg), 0, errmsg);
        } else {
            CHECK_RC(ud_ns_kv_batch_put(a->ns, kv, 2, NULL, errmsg), 0, errmsg);
        }
        CHECK_RC(ud_ns_row_put(a->ns, &row, NULL, errmsg), 0, errmsg);
    }
    atomic_store(&a->done, 1);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    print_message("# %ld paired reads, %ld torn\n", atomic_load(&a->reads), atomic_load(&a->torn));
    assert_int_equal(atomic_load(&a->torn), 0);
    ud_ns_close(a->ns);
    free(a);
    ud_test_rmtree(dir);
    free(dir);
}

/* Closes ns and checks that the close gave every arena block back (mapped0: before the open). */
static void close_released(struct ud_ns *ns, size_t mapped0, char *dir)
{
    ud_ns_close(ns);
    assert_int_equal(ud_arena_pool_bytes(), 0);
    assert_int_equal(ud_arena_mapped_total(), mapped0);
    ud_test_rmtree(dir);
    free(dir);
}

/*
 * A flushed memtable's arena blocks serve the next memtables (the pool holds some while the
 * namespace is open), the arena memory stays within what the memtables may hold, every read
 * returns the newest value, and the close gives all of the memory back.
 */
static void test_memtable_blocks_pooled_across_flushes(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("engine-arena-pool");
    struct ud_engine_options o = test_opts(dir);
    o.memtable_bytes = 4u << 20; /* sealed at 2 MiB: a flush every ~1,900 puts */
    size_t mapped0 = ud_arena_mapped_total();
    struct ud_ns *ns = open_ns(&o);
    enum { KEYS = 2000, PUTS = 24000 };
    char key[16], value[1024], want[1024];
    size_t max_mapped = 0, max_pooled = 0;
    for (int i = 0; i < PUTS; i++) {
        int k = i % KEYS;
        snprintf(key, sizeof key, "k%05d", k);
        memset(value, 'a' + i / KEYS, sizeof value - 1);
        value[sizeof value - 1] = '\0';
        put_s(ns, key, value);
        size_t mapped = ud_arena_mapped_total() - mapped0, pooled = ud_arena_pool_bytes();
        max_mapped = mapped > max_mapped ? mapped : max_mapped;
        max_pooled = pooled > max_pooled ? pooled : max_pooled;
        if (i % 997 == 0) {
            /* A key written one round earlier: in a memtable built on reused blocks or in LMDB. */
            int j = i - KEYS + 1 >= 0 ? i - KEYS + 1 : 0;
            snprintf(key, sizeof key, "k%05d", j % KEYS);
            memset(want, 'a' + j / KEYS, sizeof want - 1);
            want[sizeof want - 1] = '\0';
            expect_kv(ns, key, want);
        }
    }
    printf("# arena: max %zu KiB mapped, max %zu KiB pooled\n", max_mapped >> 10, max_pooled >> 10);
    fflush(stdout);
    assert_true(max_pooled >= UD_ARENA_BLOCK);
    assert_true(max_pooled <= o.memtable_bytes / 2);
    /* Sealed memtables up to the budget, the active one up to half of it, a block each. */
    assert_true(max_mapped <= o.memtable_bytes + o.memtable_bytes / 2 + 4 * UD_ARENA_BLOCK);
    for (int k = 0; k < KEYS; k += 13) {
        snprintf(key, sizeof key, "k%05d", k);
        memset(want, 'a' + (PUTS - KEYS + k) / KEYS, sizeof want - 1);
        want[sizeof want - 1] = '\0';
        expect_kv(ns, key, want);
    }
    close_released(ns, mapped0, dir);
}

/* Puts `puts` values of 1 KiB, all 'a' + round, over `keys` keys; tracks the pool's peak. */
static void put_round(struct ud_ns *ns, int round, int keys, int puts, size_t *max_pooled)
{
    char key[16], value[1024];
    for (int i = 0; i < puts; i++) {
        snprintf(key, sizeof key, "k%05d", i % keys);
        memset(value, 'a' + round, sizeof value - 1);
        value[sizeof value - 1] = '\0';
        put_s(ns, key, value);
        size_t pooled = ud_arena_pool_bytes();
        *max_pooled = pooled > *max_pooled ? pooled : *max_pooled;
    }
}

/* Every 97th of `keys` keys reads back put_round's value of `round`. */
static void expect_round(struct ud_ns *ns, int round, int keys)
{
    char key[16], want[1024];
    memset(want, 'a' + round, sizeof want - 1);
    want[sizeof want - 1] = '\0';
    for (int k = 0; k < keys; k += 97) {
        snprintf(key, sizeof key, "k%05d", k);
        expect_kv(ns, key, want);
    }
}

/*
 * A namespace that stops taking writes flushes its memtable and gives its arena memory back
 * (nothing is left to replay after a crash, and a burst does not leave half the budget held), and
 * takes the pool again when writes come back.
 */
static void test_idle_namespace_gives_memory_back(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("engine-idle");
    struct ud_engine_options o = test_opts(dir);
    o.memtable_bytes = 8u << 20; /* sealed at ~4 MiB: a flush every ~3,800 puts */
    o.idle_flush_ms = 100;
    size_t mapped0 = ud_arena_mapped_total();
    struct ud_ns *ns = open_ns(&o);
    enum { KEYS = 2000, PUTS = 10000 };
    size_t max_pooled = 0;
    put_round(ns, 0, KEYS, PUTS, &max_pooled);
    assert_true(max_pooled >= UD_ARENA_BLOCK); /* the flushed memtables' blocks were kept */
    struct ud_ns_stats st;
    ud_ns_stats(ns, &st);
    assert_true(st.flushed_lsn < st.last_lsn);
    assert_true(st.memtable_bytes > 2 * UD_ARENA_BLOCK);

    /* Idle: within a few periods everything is flushed and the pool is empty. */
    uint64_t deadline = ud_mono_ns() + 5000000000ull;
    for (;;) {
        ud_ns_stats(ns, &st);
        if (st.flushed_lsn == st.last_lsn && ud_arena_pool_bytes() == 0)
            break;
        assert_true(ud_mono_ns() < deadline);
        usleep(20000);
    }
    /* Once released, an idle namespace does no more work: no seal, no LMDB commit. */
    uint64_t txns = st.flush_txns, flushed = st.flushed_lsn;
    usleep(5 * 100000); /* five idle periods */
    ud_ns_stats(ns, &st);
    assert_int_equal(st.flush_txns, txns);
    assert_int_equal(st.flushed_lsn, flushed);
    assert_int_equal(ud_arena_pool_bytes(), 0);
    /* One empty memtable: its key filter, and at most a block mapped ahead for it. */
    assert_true(st.memtable_bytes <= ud_memtable_filter_bytes(o.memtable_bytes / 2));
    assert_true(ud_arena_mapped_total() - mapped0 <= UD_ARENA_BLOCK);
    expect_round(ns, 0, KEYS);

    /* A trickle after the release: flushed once idle again, and its blocks unmapped, not taken
     * back into the pool for writes that are not coming. */
    put_s(ns, "trickle", "t");
    uint64_t until = ud_mono_ns() + 5000000000ull;
    for (;;) {
        assert_int_equal(ud_arena_pool_bytes(), 0);
        ud_ns_stats(ns, &st);
        if (st.flushed_lsn == st.last_lsn)
            break;
        assert_true(ud_mono_ns() < until);
        usleep(5000);
    }
    usleep(30000); /* the flushed memtable's blocks are released after its flush */
    assert_int_equal(ud_arena_pool_bytes(), 0);
    expect_kv(ns, "trickle", "t");

    /* Writes come back: flushed memtables' blocks are pooled again. */
    max_pooled = 0;
    put_round(ns, 1, KEYS, PUTS, &max_pooled);
    assert_true(max_pooled >= UD_ARENA_BLOCK);
    assert_true(max_pooled <= o.memtable_bytes / 2);
    expect_round(ns, 1, KEYS);
    close_released(ns, mapped0, dir);
}

/*
 * A namespace whose memtable insert failed after the WAL append has a record it logged but did not
 * apply; the reopen recovers it from the WAL. Going idle must not checkpoint past that record (the
 * reopen would skip it), and an explicit flush refuses.
 */
static void test_failed_namespace_not_checkpointed_when_idle(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("engine-idle-failed");
    struct ud_engine_options o = test_opts(dir);
    o.idle_flush_ms = 100;
    struct ud_ns *ns = open_ns(&o);
    char errmsg[UD_ERRMSG_SIZE] = "";
    uint64_t lsn = 0;
    CHECK_RC(ud_ns_kv_put(ns, "a", 1, "1", 1, &lsn, errmsg), 0, errmsg);
    /* Larger than an arena block: the insert needs a block of its own, which the hook refuses. */
    size_t big_len = 2u << 20;
    uint8_t *big = malloc(big_len);
    assert_non_null(big);
    memset(big, 'b', big_len);
    ud_arena_fail_after(0);
    int rc = ud_ns_kv_put(ns, "b", 1, big, big_len, &lsn, errmsg);
    ud_arena_fail_after(-1);
    assert_int_not_equal(rc, 0);
    usleep(10 * 100000); /* ten idle periods */
    struct ud_ns_stats st;
    ud_ns_stats(ns, &st);
    assert_int_equal(st.last_lsn, 2);
    assert_int_equal(st.flushed_lsn, 0);
    assert_int_equal(ud_ns_flush(ns, errmsg), UD_EIO);
    assert_non_null(strstr(errmsg, "failed earlier"));
    assert_true(ud_ns_failed(ns));
    ud_ns_close(ns);

    ns = open_ns(&o);
    assert_false(ud_ns_failed(ns));
    expect_kv(ns, "a", "1");
    struct ud_buf v = {0};
    assert_int_equal(ud_ns_kv_get(ns, "b", 1, &v, NULL), 0);
    assert_int_equal(v.len, big_len);
    assert_memory_equal(v.data, big, big_len);
    ud_buf_free(&v);
    free(big);
    ud_ns_close(ns);
    ud_test_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kv_roundtrip),
        cmocka_unit_test(test_key_limits),
        cmocka_unit_test(test_apply_lsn_rules),
        cmocka_unit_test(test_kv_merge_layers),
        cmocka_unit_test(test_kv_reader),
        cmocka_unit_test(test_row_merge),
        cmocka_unit_test(test_row_model),
        cmocka_unit_test(test_concurrent_readers),
        cmocka_unit_test(test_concurrent_readers_map_growth),
        cmocka_unit_test(test_atomic_visibility),
        cmocka_unit_test(test_stats),
        cmocka_unit_test(test_lock_file),
        cmocka_unit_test(test_memtable_blocks_pooled_across_flushes),
        cmocka_unit_test(test_idle_namespace_gives_memory_back),
        cmocka_unit_test(test_failed_namespace_not_checkpointed_when_idle),
    };
    return cmocka_run_group_tests_name("engine", tests, NULL, NULL);
}
