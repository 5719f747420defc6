/* Engine LOB tests: a 50 MB object streamed in and out with bounded memory, before and after the
 * flush and a restart; retries and gaps; overwrite, delete and update semantics; seeks to a byte
 * (byte ranges). */
#include "tests/unit/engine/helpers.h"

#include "proto/record.h"

#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#define MiB (1u << 20)

struct mem_watch {
    long base;
    _Atomic long peak;
    _Atomic int stop;
    pthread_t sampler;
};

static void watch(struct mem_watch *w)
{
    long now = ud_test_rss_anon_kib();
    long peak = atomic_load(&w->peak);
    while (now > peak && !atomic_compare_exchange_weak(&w->peak, &peak, now))
        ;
}

/* Samples every millisecond, so the flush thread's peak is seen too. */
static void *sample_main(void *arg)
{
    struct mem_watch *w = arg;
    while (!atomic_load(&w->stop)) {
        watch(w);
        usleep(1000);
    }
    return NULL;
}

/* Chunk i of object `seed`: deterministic bytes, so the object is never kept whole. */
static void chunk_bytes(uint64_t seed, uint32_t i, uint8_t *buf, size_t len)
{
    uint64_t s = seed * 1000003u + i + 1;
    ud_test_fill(&s, buf, len);
}

static void write_lob(struct ud_ns *ns, const char *key, uint64_t seed, uint64_t size,
                      uint32_t chunk, struct mem_watch *w, int with_retries)
{
    char errmsg[UD_ERRMSG_SIZE] = "";
    uint8_t id[16];
    uint8_t *buf = malloc(chunk);
    uint64_t lsn = 0;
    CHECK_RC(ud_ns_txn_begin(ns, UD_OP_PUT, UD_ENTRY_LOB, id, NULL, errmsg), 0, errmsg);
    uint32_t n = (uint32_t)((size + chunk - 1) / chunk);
    for (uint32_t i = 0; i < n; i++) {
        uint64_t off = (uint64_t)i * chunk;
        size_t len = size - off < chunk ? (size_t)(size - off) : chunk;
        chunk_bytes(seed, i, buf, len);
        CHECK_RC(ud_ns_txn_lob(ns, id, key, strlen(key), off, buf, len, &lsn, errmsg), 0, errmsg);
        assert_true(lsn > 0);
        if (with_retries && i == 10) {
            /* A client retry of the chunk just sent, and of an older one: accepted, no record. */
            CHECK_RC(ud_ns_txn_lob(ns, id, key, strlen(key), off, buf, len, &lsn, errmsg), 0,
                     errmsg);
            assert_int_equal(lsn, 0);
            chunk_bytes(seed, 3, buf, chunk);
            CHECK_RC(
                ud_ns_txn_lob(ns, id, key, strlen(key), 3ull * chunk, buf, chunk, &lsn, errmsg), 0,
                errmsg);
            assert_int_equal(lsn, 0);
            /* A gap and a partial overlap state the expected offset. */
            char want[128];
            snprintf(want, sizeof want, "the expected offset is %llu",
                     (unsigned long long)(off + len));
            assert_int_equal(ud_ns_txn_lob(ns, id, key, strlen(key), off + len + chunk, buf, chunk,
                                           &lsn, errmsg),
                             UD_ERANGE);
            assert_non_null(strstr(errmsg, want));
            assert_int_equal(
                ud_ns_txn_lob(ns, id, key, strlen(key), off + len - 100, buf, chunk, &lsn, errmsg),
                UD_ERANGE);
            assert_non_null(strstr(errmsg, want));
            /* A second key in the same LOB transaction. */
            assert_int_equal(ud_ns_txn_lob(ns, id, "other", 5, off + len, buf, 1, &lsn, errmsg),
                             UD_ETXN);
            assert_non_null(strstr(errmsg, "holds exactly one key"));
        }
        if (w != NULL)
            watch(w);
    }
    CHECK_RC(ud_ns_txn_commit(ns, id, &lsn, errmsg), 0, errmsg);
    free(buf);
}

/* Streams the object out and compares every byte with what was written. */
static void read_lob(struct ud_ns *ns, const char *key, uint64_t seed, uint64_t size,
                     uint32_t chunk, struct mem_watch *w)
{
    struct ud_lob_reader *r = NULL;
    uint64_t got_size = 0, lsn = 0;
    assert_int_equal(ud_ns_lob_open(ns, key, strlen(key), &r, &got_size, &lsn), 0);
    assert_int_equal(got_size, size);
    assert_true(lsn > 0);
    uint8_t *want = malloc(chunk);
    uint64_t pos = 0;
    for (uint32_t i = 0;; i++) {
        const uint8_t *data;
        size_t len;
        assert_int_equal(ud_lob_reader_next(r, &data, &len), 0);
        if (len == 0)
            break;
        size_t expect = size - pos < chunk ? (size_t)(size - pos) : chunk;
        assert_int_equal(len, expect);
        chunk_bytes(seed, i, want, len);
        if (memcmp(data, want, len) != 0)
            print_message("chunk %u differs\n", i);
        assert_memory_equal(data, want, len);
        pos += len;
        if (w != NULL)
            watch(w);
    }
    assert_int_equal(pos, size);
    free(want);
    ud_lob_reader_close(r);
}

static void check_memory(const char *what, struct mem_watch *w)
{
    long peak = atomic_load(&w->peak);
    long grew = peak - w->base;
    print_message("# %s: RssAnon start %ld KiB, peak %ld KiB (+%ld KiB)\n", what, w->base, peak,
                  grew);
#ifndef SANITIZED
    /* Nothing like the object's 50 MB: at most one chunk buffer plus LMDB's dirty pages of one
     * bounded chunk transaction. (The sanitizer's quarantine keeps freed memory, so there the
     * figure is only printed.) */
    assert_true(grew < 32 * 1024);
#endif
}

static void test_lob_50mb(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("lob-50mb");
    struct ud_engine_options o = test_opts(dir);
    o.map_size = 128u << 20;
    const uint64_t size = 50ull * MiB + 12345; /* the last chunk is partial */
    struct ud_ns *ns = open_ns(&o);
    struct mem_watch w = {.base = ud_test_rss_anon_kib()};
    atomic_store(&w.peak, w.base);
    assert_int_equal(pthread_create(&w.sampler, NULL, sample_main, &w), 0);

    write_lob(ns, "video:1", 1, size, MiB, &w, 1);
    check_memory("write", &w);
    read_lob(ns, "video:1", 1, size, MiB, &w); /* chunks from the WAL */
    check_memory("read from WAL", &w);

    flush_ns(ns);
    watch(&w);
    check_memory("flush", &w);
    read_lob(ns, "video:1", 1, size, MiB, &w); /* chunks from LMDB */
    check_memory("read from LMDB", &w);

    ud_ns_close(ns);
    ns = open_ns(&o);
    read_lob(ns, "video:1", 1, size, MiB, &w);
    check_memory("read after restart", &w);
    atomic_store(&w.stop, 1);
    pthread_join(w.sampler, NULL);
    ud_ns_close(ns);
    ud_test_rmtree(dir);
    free(dir);
}

static void test_lob_restart_before_flush(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("lob-restart");
    struct ud_engine_options o = test_opts(dir);
    struct ud_ns *ns = open_ns(&o);
    char errmsg[UD_ERRMSG_SIZE] = "";
    const uint32_t chunk = 300000;
    const uint64_t size = 7ull * chunk + 5;

    /* Committed, not flushed: after a restart the manifest is replayed and read from the WAL. */
    write_lob(ns, "doc", 2, size, chunk, NULL, 0);
    ud_ns_close(ns);
    ns = open_ns(&o);
    read_lob(ns, "doc", 2, size, chunk, NULL);

    /* A transaction open across a flush and a restart, committed afterwards. */
    uint8_t id[16];
    uint8_t *buf = malloc(chunk);
    CHECK_RC(ud_ns_txn_begin(ns, UD_OP_PUT, UD_ENTRY_LOB, id, NULL, errmsg), 0, errmsg);
    for (uint32_t i = 0; i < 3; i++) {
        chunk_bytes(3, i, buf, chunk);
        CHECK_RC(ud_ns_txn_lob(ns, id, "doc2", 4, (uint64_t)i * chunk, buf, chunk, NULL, errmsg), 0,
                 errmsg);
    }
    flush_ns(ns);
    ud_ns_close(ns);
    ns = open_ns(&o);
    struct ud_lob_reader *r;
    assert_int_equal(ud_ns_lob_open(ns, "doc2", 4, &r, NULL, NULL), UD_ENOTFOUND);
    /* The retry check survives the restart: the rebuilt transaction knows its chunks. */
    chunk_bytes(3, 2, buf, chunk);
    uint64_t lsn = 1;
    CHECK_RC(ud_ns_txn_lob(ns, id, "doc2", 4, 2ull * chunk, buf, chunk, &lsn, errmsg), 0, errmsg);
    assert_int_equal(lsn, 0);
    for (uint32_t i = 3; i < 5; i++) {
        chunk_bytes(3, i, buf, chunk);
        CHECK_RC(ud_ns_txn_lob(ns, id, "doc2", 4, (uint64_t)i * chunk, buf, chunk, NULL, errmsg), 0,
                 errmsg);
    }
    CHECK_RC(ud_ns_txn_commit(ns, id, NULL, errmsg), 0, errmsg);
    read_lob(ns, "doc2", 3, 5ull * chunk, chunk, NULL);
    flush_ns(ns);
    read_lob(ns, "doc2", 3, 5ull * chunk, chunk, NULL);
    read_lob(ns, "doc", 2, size, chunk, NULL);
    free(buf);
    ud_ns_close(ns);
    ud_test_rmtree(dir);
    free(dir);
}

static void test_lob_overwrite_delete_update(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("lob-overwrite");
    struct ud_engine_options o = test_opts(dir);
    o.segment_size = 1u << 20;
    o.retention.max_segments = 1;
    struct ud_ns *ns = open_ns(&o);
    char errmsg[UD_ERRMSG_SIZE] = "";
    const uint32_t chunk = 256u << 10;
    uint8_t id[16];

    /* UPDATE of an absent object is refused at its first chunk. */
    CHECK_RC(ud_ns_txn_begin(ns, UD_OP_UPDATE, UD_ENTRY_LOB, id, NULL, errmsg), 0, errmsg);
    assert_int_equal(ud_ns_txn_lob(ns, id, "obj", 3, 0, "x", 1, NULL, errmsg), UD_ENOTFOUND);
    assert_string_equal(errmsg, "update: lob \"obj\" does not exist");
    CHECK_RC(ud_ns_txn_abort(ns, id, NULL, errmsg), 0, errmsg);
    /* Commit with no chunk has no key. */
    CHECK_RC(ud_ns_txn_begin(ns, UD_OP_PUT, UD_ENTRY_LOB, id, NULL, errmsg), 0, errmsg);
    assert_int_equal(ud_ns_txn_commit(ns, id, NULL, errmsg), UD_ETXN);
    CHECK_RC(ud_ns_txn_abort(ns, id, NULL, errmsg), 0, errmsg);

    write_lob(ns, "obj", 4, 12ull * chunk, chunk, NULL, 0);
    flush_ns(ns); /* chunks in LMDB, their WAL segments retained away */

    /* A reader of the old version, then an overwrite that is flushed: the old chunks are
     * dropped, and the reader reports the conflict instead of mixing versions. */
    struct ud_lob_reader *r;
    assert_int_equal(ud_ns_lob_open(ns, "obj", 3, &r, NULL, NULL), 0);
    const uint8_t *data;
    size_t len;
    assert_int_equal(ud_lob_reader_next(r, &data, &len), 0);
    assert_int_equal(len, chunk);
    write_lob(ns, "obj", 5, 3ull * chunk + 7, chunk, NULL, 0);
    read_lob(ns, "obj", 5, 3ull * chunk + 7, chunk, NULL);
    flush_ns(ns);
    assert_int_equal(ud_lob_reader_next(r, &data, &len), UD_ECONFLICT);
    ud_lob_reader_close(r);
    read_lob(ns, "obj", 5, 3ull * chunk + 7, chunk, NULL);

    /* UPDATE of a present object. */
    CHECK_RC(ud_ns_txn_begin(ns, UD_OP_UPDATE, UD_ENTRY_LOB, id, NULL, errmsg), 0, errmsg);
    uint8_t small[100];
    chunk_bytes(6, 0, small, sizeof small);
    CHECK_RC(ud_ns_txn_lob(ns, id, "obj", 3, 0, small, sizeof small, NULL, errmsg), 0, errmsg);
    CHECK_RC(ud_ns_txn_commit(ns, id, NULL, errmsg), 0, errmsg);
    read_lob(ns, "obj", 6, sizeof small, chunk, NULL);

    /* Delete: a DELETE transaction naming the key. */
    CHECK_RC(ud_ns_txn_begin(ns, UD_OP_DELETE, UD_ENTRY_LOB, id, NULL, errmsg), 0, errmsg);
    CHECK_RC(ud_ns_txn_lob(ns, id, "obj", 3, 0, NULL, 0, NULL, errmsg), 0, errmsg);
    read_lob(ns, "obj", 6, sizeof small, chunk, NULL); /* invisible until commit */
    CHECK_RC(ud_ns_txn_commit(ns, id, NULL, errmsg), 0, errmsg);
    assert_int_equal(ud_ns_lob_open(ns, "obj", 3, &r, NULL, NULL), UD_ENOTFOUND);
    flush_ns(ns);
    assert_int_equal(ud_ns_lob_open(ns, "obj", 3, &r, NULL, NULL), UD_ENOTFOUND);
    ud_ns_close(ns);
    ns = open_ns(&o);
    assert_int_equal(ud_ns_lob_open(ns, "obj", 3, &r, NULL, NULL), UD_ENOTFOUND);
    ud_ns_close(ns);
    ud_test_rmtree(dir);
    free(dir);
}

/* A LOB written as one standalone record (what a relayer may apply): a manifest of one chunk. */
static void test_lob_standalone_record(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("lob-standalone");
    struct ud_engine_options o = test_opts(dir);
    struct ud_ns *ns = open_ns(&o);
    char errmsg[UD_ERRMSG_SIZE] = "";
    uint8_t body[5000];
    chunk_bytes(9, 0, body, sizeof body);
    struct ud_record h = {
        .version = UD_RECORD_VERSION, .op = UD_OP_PUT, .entry_type = UD_ENTRY_LOB};
    struct ud_record_builder rb;
    uint8_t *rec;
    size_t len;
    uint64_t lsn = 0;
    ud_record_builder_init(&rb, &h);
    ud_record_add_kv(&rb, "one", 3, body, sizeof body);
    assert_int_equal(ud_record_builder_finish(&rb, &rec, &len), 0);
    CHECK_RC(ud_ns_apply(ns, rec, len, &lsn, errmsg), 0, errmsg);
    free(rec);
    assert_int_equal(lsn, 1);
    read_lob(ns, "one", 9, sizeof body, sizeof body, NULL);
    flush_ns(ns);
    read_lob(ns, "one", 9, sizeof body, sizeof body, NULL);
    /* A standalone delete. */
    h.op = UD_OP_DELETE;
    ud_record_builder_init(&rb, &h);
    ud_record_add_kv(&rb, "one", 3, NULL, 0);
    assert_int_equal(ud_record_builder_finish(&rb, &rec, &len), 0);
    CHECK_RC(ud_ns_apply(ns, rec, len, &lsn, errmsg), 0, errmsg);
    free(rec);
    struct ud_lob_reader *r;
    assert_int_equal(ud_ns_lob_open(ns, "one", 3, &r, NULL, NULL), UD_ENOTFOUND);
    ud_ns_close(ns);
    ud_test_rmtree(dir);
    free(dir);
}

/* Seeks to the first, inner and last bytes of chunks: the next chunk read is the one holding the
 * byte, *skip its place there, the chunks after it follow; past the end is UD_ERANGE. */
static void check_seeks(struct ud_ns *ns, const char *key, uint64_t seed, uint64_t size,
                        uint32_t chunk)
{
    const uint64_t offsets[] = {
        0, 1, chunk - 1, chunk, chunk + 1, 3 * chunk, 3ull * chunk + 17, size - 5, size - 1};
    uint8_t *want = malloc(chunk);
    for (size_t k = 0; k < sizeof offsets / sizeof offsets[0]; k++) {
        struct ud_lob_reader *r = NULL;
        assert_int_equal(ud_ns_lob_open(ns, key, strlen(key), &r, NULL, NULL), 0);
        size_t skip = 12345;
        assert_int_equal(ud_lob_reader_seek(r, offsets[k], &skip), 0);
        uint32_t i = (uint32_t)(offsets[k] / chunk);
        assert_int_equal(skip, offsets[k] % chunk);
        for (;; i++) {
            const uint8_t *data;
            size_t len;
            assert_int_equal(ud_lob_reader_next(r, &data, &len), 0);
            if (len == 0)
                break;
            size_t expect =
                size - (uint64_t)i * chunk < chunk ? (size_t)(size - (uint64_t)i * chunk) : chunk;
            assert_int_equal(len, expect);
            chunk_bytes(seed, i, want, len);
            assert_memory_equal(data, want, len);
        }
        assert_int_equal(i, (size + chunk - 1) / chunk);
        /* A seek back after reading to the end. */
        assert_int_equal(ud_lob_reader_seek(r, 0, &skip), 0);
        assert_int_equal(skip, 0);
        const uint8_t *data;
        size_t len;
        assert_int_equal(ud_lob_reader_next(r, &data, &len), 0);
        chunk_bytes(seed, 0, want, len);
        assert_memory_equal(data, want, len);
        skip = 999;
        assert_int_equal(ud_lob_reader_seek(r, size, &skip), UD_ERANGE);
        assert_int_equal(ud_lob_reader_seek(r, UINT64_MAX, &skip), UD_ERANGE);
        assert_int_equal(skip, 999);
        ud_lob_reader_close(r);
    }
    free(want);
}

static void test_lob_seek(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("lob-seek");
    struct ud_engine_options o = test_opts(dir);
    struct ud_ns *ns = open_ns(&o);
    const uint32_t chunk = 300000;
    const uint64_t size = 7ull * chunk + 5;
    write_lob(ns, "doc", 4, size, chunk, NULL, 0);
    check_seeks(ns, "doc", 4, size, chunk); /* chunks from the WAL */
    flush_ns(ns);
    check_seeks(ns, "doc", 4, size, chunk); /* from LMDB */
    ud_ns_close(ns);
    ud_test_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lob_50mb),
        cmocka_unit_test(test_lob_restart_before_flush),
        cmocka_unit_test(test_lob_overwrite_delete_update),
        cmocka_unit_test(test_lob_standalone_record),
        cmocka_unit_test(test_lob_seek),
    };
    return cmocka_run_group_tests_name("engine-lob", tests, NULL, NULL);
}
