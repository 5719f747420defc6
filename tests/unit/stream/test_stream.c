/* Unit tests for the replication stream frames (proto/stream.h): encoding, the parser fed in any
 * chunking, and every rejection rule, checking that a bad frame never yields any of its records. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/crc32c.h"
#include "core/endian.h"
#include "core/err.h"
#include "proto/record.h"
#include "proto/stream.h"

/* --- building frames by the spec (docs/format-stream.md, docs/format-wal.md) ---------------- */

struct bytes {
    uint8_t *p;
    size_t len;
};

static void put(struct bytes *b, const void *data, size_t n)
{
    b->p = realloc(b->p, b->len + n);
    assert_non_null(b->p);
    memcpy(b->p + b->len, data, n);
    b->len += n;
}

/* A record-like payload of len bytes (>= 16) whose LSN field holds lsn. */
static void payload(uint8_t *buf, size_t len, uint64_t lsn)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = (uint8_t)(i * 7 + lsn);
    ud_put_le64(buf + UD_RECORD_LSN_OFFSET, lsn);
}

/* Appends one WAL frame as stored: crc32c(len | data) | len | data | trailer | zero pad. */
static void wal_frame(struct bytes *b, const uint8_t *data, uint32_t n)
{
    static const uint8_t trailer[8] = {0xDE, 0xAD, 0xBE, 0xEF, 0xFE, 0xED, 0xFA, 0xCE};
    uint8_t hdr[8];
    ud_put_le32(hdr + 4, n);
    ud_put_le32(hdr, ud_crc32c(ud_crc32c(0, hdr + 4, 4), data, n));
    put(b, hdr, 8);
    put(b, data, n);
    put(b, trailer, 8);
    static const uint8_t zero[8];
    size_t pad = (8 - (16 + n) % 8) % 8;
    put(b, zero, pad);
}

/* Appends a records frame holding count records of sizes 16 + (lsn % 50) from first_lsn on. */
static void records_frame(struct bytes *b, uint64_t first_lsn, uint32_t count)
{
    struct bytes body = {0};
    for (uint32_t i = 0; i < count; i++) {
        uint8_t data[128];
        uint32_t n = 16 + (uint32_t)((first_lsn + i) % 50);
        payload(data, n, first_lsn + i);
        wal_frame(&body, data, n);
    }
    uint8_t h[UD_STREAM_HEADER_SIZE];
    struct ud_stream_header sh = {.type = UD_STREAM_RECORDS,
                                  .count = count,
                                  .lsn = first_lsn,
                                  .body_len = (uint32_t)body.len};
    ud_stream_header_encode(h, &sh);
    put(b, h, sizeof h);
    put(b, body.p, body.len);
    free(body.p);
}

static void heartbeat_frame(struct bytes *b, uint64_t last, uint64_t t, uint64_t first)
{
    uint8_t f[UD_STREAM_HEARTBEAT_FRAME];
    ud_stream_heartbeat_encode(f, last, t, first);
    put(b, f, sizeof f);
}

/* Feeds bytes in chunks of `chunk` (0: all at once) and drains events after each feed. Records
 * must come with the expected LSN and payload. Returns the first error (or 0); counts events. */
struct outcome {
    int rc;
    uint64_t records;
    uint64_t heartbeats;
    uint64_t last_lsn_seen;
    struct ud_stream_heartbeat hb;
    char errmsg[UD_ERRMSG_SIZE];
};

static struct outcome run(const struct bytes *b, uint64_t next_lsn, size_t chunk)
{
    struct outcome o = {0};
    struct ud_stream_parser *p = ud_stream_parser_new(next_lsn);
    assert_non_null(p);
    size_t off = 0;
    while (off < b->len && o.rc == 0) {
        size_t n = chunk == 0 ? b->len - off : chunk;
        if (n > b->len - off)
            n = b->len - off;
        assert_int_equal(ud_stream_parser_feed(p, b->p + off, n), 0);
        off += n;
        for (;;) {
            enum ud_stream_event ev;
            struct ud_stream_record rec;
            struct ud_stream_heartbeat hb;
            o.rc = ud_stream_parser_next(p, &ev, &rec, &hb, o.errmsg);
            if (o.rc != 0 || ev == UD_STREAM_NEED_MORE)
                break;
            if (ev == UD_STREAM_EV_HEARTBEAT) {
                o.heartbeats++;
                o.hb = hb;
                continue;
            }
            assert_int_equal(rec.lsn, next_lsn + o.records);
            uint8_t want[128];
            assert_int_equal(rec.len, 16 + rec.lsn % 50);
            payload(want, rec.len, rec.lsn);
            assert_memory_equal(rec.data, want, rec.len);
            o.records++;
            o.last_lsn_seen = rec.lsn;
        }
    }
    if (o.rc == 0)
        assert_int_equal(ud_stream_parser_next_lsn(p), next_lsn + o.records);
    ud_stream_parser_free(p);
    return o;
}

/* --- tests ---------------------------------------------------------------------------------- */

static void test_round_trip_any_chunking(void **state)
{
    (void)state;
    struct bytes b = {0};
    heartbeat_frame(&b, 0, 123456789, 1);
    records_frame(&b, 1, 1);
    records_frame(&b, 2, 40);
    heartbeat_frame(&b, 41, 987654321, 1);
    records_frame(&b, 42, 7);
    size_t chunks[] = {0, 1, 3, 7, 24, 25, 100, 4096};
    for (size_t i = 0; i < sizeof chunks / sizeof chunks[0]; i++) {
        struct outcome o = run(&b, 1, chunks[i]);
        assert_int_equal(o.rc, 0);
        assert_int_equal(o.records, 48);
        assert_int_equal(o.heartbeats, 2);
        assert_int_equal(o.hb.last_lsn, 41);
        assert_int_equal(o.hb.time_ns, 987654321);
        assert_int_equal(o.hb.first_lsn, 1);
    }
    free(b.p);
}

static void test_truncated_frame_yields_nothing(void **state)
{
    (void)state;
    struct bytes b = {0};
    records_frame(&b, 5, 3);
    struct ud_stream_parser *p = ud_stream_parser_new(5);
    assert_int_equal(ud_stream_parser_feed(p, b.p, b.len - 1), 0);
    enum ud_stream_event ev;
    struct ud_stream_record rec;
    struct ud_stream_heartbeat hb;
    assert_int_equal(ud_stream_parser_next(p, &ev, &rec, &hb, NULL), 0);
    assert_int_equal(ev, UD_STREAM_NEED_MORE);
    assert_int_equal(ud_stream_parser_pending(p), b.len - 1);
    assert_int_equal(ud_stream_parser_feed(p, b.p + b.len - 1, 1), 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(ud_stream_parser_next(p, &ev, &rec, &hb, NULL), 0);
        assert_int_equal(ev, UD_STREAM_EV_RECORD);
        assert_int_equal(rec.lsn, 5 + i);
    }
    assert_int_equal(ud_stream_parser_next(p, &ev, &rec, &hb, NULL), 0);
    assert_int_equal(ev, UD_STREAM_NEED_MORE);
    assert_int_equal(ud_stream_parser_pending(p), 0);
    ud_stream_parser_free(p);
    free(b.p);
}

/* Flipping any single byte of a records frame is detected before any of its records is handed
 * out: the records of earlier frames come, none of the damaged one. */
static void test_every_flipped_byte_is_caught(void **state)
{
    (void)state;
    struct bytes good = {0};
    records_frame(&good, 1, 2);
    size_t first_len = good.len;
    records_frame(&good, 3, 4);
    for (size_t i = first_len; i < good.len; i++) {
        struct bytes b = {malloc(good.len), good.len};
        memcpy(b.p, good.p, good.len);
        b.p[i] ^= 0x20;
        struct outcome o = run(&b, 1, 0);
        /* A flip in the length field can make the frame look longer than the bytes: then the
         * parser waits for more, which is also a refusal to apply. */
        if (o.rc == 0)
            assert_true(o.records == 2);
        else
            assert_true(o.rc == UD_ECORRUPT || o.rc == UD_ERANGE || o.rc == UD_EVERSION);
        assert_int_equal(o.records, 2);
        free(b.p);
    }
    free(good.p);
}

static void test_gap_and_duplicate(void **state)
{
    (void)state;
    struct bytes b = {0};
    records_frame(&b, 10, 2);
    struct outcome o = run(&b, 9, 0);
    assert_int_equal(o.rc, UD_ERANGE);
    assert_non_null(strstr(o.errmsg, "LSN 10 but LSN 9 is next (a gap)"));
    o = run(&b, 11, 0);
    assert_int_equal(o.rc, UD_ERANGE);
    assert_non_null(strstr(o.errmsg, "a duplicate"));
    free(b.p);
}

/* Re-encodes the header of the frame at b->p with changed fields (CRC recomputed). */
static void rewrite_header(struct bytes *b, uint8_t version, uint8_t type, uint32_t count,
                           uint64_t lsn, uint32_t body_len)
{
    struct ud_stream_header h = {.type = type, .count = count, .lsn = lsn, .body_len = body_len};
    ud_stream_header_encode(b->p, &h);
    b->p[0] = version;
    ud_put_le32(b->p + 20, ud_crc32c(0, b->p, 20));
}

static void test_header_rules(void **state)
{
    (void)state;
    struct bytes b = {0};
    records_frame(&b, 1, 3);
    uint32_t body = (uint32_t)(b.len - UD_STREAM_HEADER_SIZE);
    struct {
        uint8_t version, type;
        uint32_t count;
        uint64_t lsn;
        uint32_t body_len;
        int rc;
        const char *msg;
    } cases[] = {
        {2, UD_STREAM_RECORDS, 3, 1, body, UD_EVERSION, "version 2"},
        {1, 3, 3, 1, body, UD_ECORRUPT, "type 3"},
        {1, UD_STREAM_RECORDS, 0, 1, body, UD_ECORRUPT, "count 0"},
        {1, UD_STREAM_RECORDS, 3, 0, body, UD_ECORRUPT, "LSN 0"},
        {1, UD_STREAM_RECORDS, 3, 1, body - 4, UD_ECORRUPT, "cannot hold"},
        {1, UD_STREAM_RECORDS, 3, 1, UD_STREAM_MAX_BODY + 8, UD_ECORRUPT, "cannot hold"},
        {1, UD_STREAM_RECORDS, 4, 1, body, UD_ECORRUPT, "count 4 but the body ends after 3"},
        {1, UD_STREAM_RECORDS, 2, 1, body, UD_ECORRUPT, "bytes after its 2 records"},
        {1, UD_STREAM_HEARTBEAT, 0, 1, body, UD_ECORRUPT, "heartbeat frame"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct bytes c = {malloc(b.len), b.len};
        memcpy(c.p, b.p, b.len);
        rewrite_header(&c, cases[i].version, cases[i].type, cases[i].count, cases[i].lsn,
                       cases[i].body_len);
        struct outcome o = run(&c, 1, 0);
        assert_int_equal(o.rc, cases[i].rc);
        assert_int_equal(o.records, 0);
        if (strstr(o.errmsg, cases[i].msg) == NULL)
            fail_msg("case %zu: \"%s\" lacks \"%s\"", i, o.errmsg, cases[i].msg);
        free(c.p);
    }
    free(b.p);
}

static void test_record_lsn_field_must_match(void **state)
{
    (void)state;
    struct bytes body = {0};
    uint8_t data[40];
    payload(data, sizeof data, 7);
    wal_frame(&body, data, sizeof data);
    payload(data, sizeof data, 9); /* should carry 8 */
    wal_frame(&body, data, sizeof data);
    struct bytes b = {0};
    uint8_t h[UD_STREAM_HEADER_SIZE];
    struct ud_stream_header sh = {
        .type = UD_STREAM_RECORDS, .count = 2, .lsn = 7, .body_len = (uint32_t)body.len};
    ud_stream_header_encode(h, &sh);
    put(&b, h, sizeof h);
    put(&b, body.p, body.len);
    struct ud_stream_parser *p = ud_stream_parser_new(7);
    assert_int_equal(ud_stream_parser_feed(p, b.p, b.len), 0);
    enum ud_stream_event ev;
    struct ud_stream_record rec;
    struct ud_stream_heartbeat hb;
    char errmsg[UD_ERRMSG_SIZE];
    assert_int_equal(ud_stream_parser_next(p, &ev, &rec, &hb, errmsg), UD_ECORRUPT);
    assert_non_null(strstr(errmsg, "record at LSN 8 carries LSN 9"));
    /* The parser stays failed. */
    errmsg[0] = 0;
    assert_int_equal(ud_stream_parser_next(p, &ev, &rec, &hb, errmsg), UD_ECORRUPT);
    assert_non_null(strstr(errmsg, "record at LSN 8 carries LSN 9"));
    ud_stream_parser_free(p);
    free(body.p);
    free(b.p);
}

static void test_nonzero_padding_rejected(void **state)
{
    (void)state;
    struct bytes b = {0};
    records_frame(&b, 1, 1); /* record of 17 bytes: 33 -> 40, 7 bytes of padding */
    b.p[b.len - 1] = 1;
    struct outcome o = run(&b, 1, 0);
    assert_int_equal(o.rc, UD_ECORRUPT);
    assert_non_null(strstr(o.errmsg, "nonzero record padding"));
    free(b.p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_any_chunking),
        cmocka_unit_test(test_truncated_frame_yields_nothing),
        cmocka_unit_test(test_every_flipped_byte_is_caught),
        cmocka_unit_test(test_gap_and_duplicate),
        cmocka_unit_test(test_header_rules),
        cmocka_unit_test(test_record_lsn_field_must_match),
        cmocka_unit_test(test_nonzero_padding_rejected),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
