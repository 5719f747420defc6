/* raft's checksums as this program provides them (raft/checksum.c): the CRC equals a bit-at-a-time
 * reference for every length, alignment and starting value, SHA-1 meets the FIPS vectors, and
 * raft_uv writes segments whose checksums are the reference's and loads segments checksummed
 * by the reference (as raft's own byte-wise code wrote them before this program replaced it). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <raft.h>
#include <raft/uv.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "raft/checksum.h"
#include "tests/lib/testutil.h"

/* The definition, one bit at a time: polynomial 0x04C11DB7, first byte's top bit first, the
 * running value as given, no final xor. raft's byte.c computes the same with a byte table. */
static uint32_t reference_crc(const unsigned char *p, size_t len, uint32_t crc)
{
    for (size_t i = 0; i < len; i++) {
        crc ^= (uint32_t)p[i] << 24;
        for (int b = 0; b < 8; b++)
            crc = (crc & 0x80000000u) ? (crc << 1) ^ 0x04C11DB7u : crc << 1;
    }
    return crc;
}

static void test_crc_matches_reference(void **state)
{
    (void)state;
    enum { MAX = 4096 + 64 };
    unsigned char *buf = malloc(MAX + 16);
    assert_non_null(buf);
    uint64_t seed = 42;
    ud_test_fill(&seed, buf, MAX + 16);
    const uint32_t inits[] = {0, 0xFFFFFFFFu, 0x80000000u, 0x12345678u};
    for (size_t len = 0; len <= MAX; len += (len < 300 ? 1 : 61)) {
        for (size_t off = 0; off < 16; off += (len < 300 ? 1 : 5)) {
            for (size_t i = 0; i < sizeof inits / sizeof inits[0]; i++) {
                uint32_t want = reference_crc(buf + off, len, inits[i]);
                assert_int_equal(byteCrc32(buf + off, len, inits[i]), want);
                assert_int_equal(ud_raft_crc32_portable(buf + off, len, inits[i]), want);
            }
        }
    }
    /* Random starting values, and a 1 MiB buffer, the sizes raft meets in a batch. */
    for (int i = 0; i < 200; i++) {
        uint32_t init = (uint32_t)ud_test_rand(&seed);
        size_t len = ud_test_rand(&seed) % MAX, off = ud_test_rand(&seed) % 16;
        assert_int_equal(byteCrc32(buf + off, len, init), reference_crc(buf + off, len, init));
    }
    size_t big = 1u << 20;
    unsigned char *large = malloc(big);
    assert_non_null(large);
    ud_test_fill(&seed, large, big);
    assert_int_equal(byteCrc32(large, big, 7), reference_crc(large, big, 7));
    free(large);
    free(buf);
}

static void test_crc_chains_and_known_values(void **state)
{
    (void)state;
    /* CRC-32/MPEG-2 (this CRC started at all ones) of "123456789", from the CRC catalogues. */
    assert_int_equal(byteCrc32("123456789", 9, 0xFFFFFFFFu), 0x0376E6E7u);
    /* Single bytes give raft's table: entry 1 is the polynomial, entry 128 0x690CE0EE. */
    unsigned char one = 1, top = 0x80;
    assert_int_equal(byteCrc32(&one, 1, 0), 0x04C11DB7u);
    assert_int_equal(byteCrc32(&top, 1, 0), 0x690CE0EEu);
    /* raft checksums a batch's entries one after another, each continuing the last. */
    unsigned char buf[3000];
    uint64_t seed = 7;
    ud_test_fill(&seed, buf, sizeof buf);
    for (size_t cut = 0; cut <= sizeof buf; cut += 97)
        assert_int_equal(byteCrc32(buf + cut, sizeof buf - cut, byteCrc32(buf, cut, 0)),
                         byteCrc32(buf, sizeof buf, 0));
}

static void hex(const uint8_t value[20], char out[41])
{
    for (int i = 0; i < 20; i++)
        snprintf(out + 2 * i, 3, "%02x", value[i]);
}

static void sha1_of(const void *data, size_t len, size_t chunk, char out[41])
{
    struct byteSha1 s;
    uint8_t value[20];
    byteSha1Init(&s);
    for (size_t off = 0; off < len; off += chunk)
        byteSha1Update(&s, (const uint8_t *)data + off,
                       (uint32_t)(len - off < chunk ? len - off : chunk));
    byteSha1Digest(&s, value);
    hex(value, out);
}

static void test_sha1_vectors(void **state)
{
    (void)state;
    /* raft_digest keeps the context on its stack with raft's own layout. */
    assert_int_equal(sizeof(struct byteSha1), 112);
    char out[41];
    sha1_of("", 0, 1, out);
    assert_string_equal(out, "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    sha1_of("abc", 3, 1, out);
    assert_string_equal(out, "a9993e364706816aba3e25717850c26c9cd0d89d");
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    for (size_t chunk = 1; chunk <= 64; chunk += 7) {
        sha1_of(two, strlen(two), chunk, out);
        assert_string_equal(out, "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
    }
    size_t million = 1000000;
    char *a = malloc(million);
    assert_non_null(a);
    memset(a, 'a', million);
    sha1_of(a, million, 4093, out);
    assert_string_equal(out, "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
    free(a);
    /* raft_digest: a text and a 64-bit number, as raft hashes them for server ids. */
    assert_int_not_equal(raft_digest("127.0.0.1:9001", 0), raft_digest("127.0.0.1:9002", 0));
}

/* One raft_uv on dir: init, load, optionally append entries, close. */
struct uv_run {
    uv_loop_t loop;
    struct raft_uv_transport transport;
    struct raft_io io;
    int appended, closed, status;
};

static void append_cb(struct raft_io_append *req, int status)
{
    struct uv_run *r = req->data;
    r->status = status;
    r->appended = 1;
}

static void close_cb(struct raft_io *io)
{
    struct uv_run *r = io->data;
    r->closed = 1;
}

static void free_loaded(struct raft_entry *entries, size_t n, struct raft_snapshot *snap)
{
    void *batch = NULL;
    for (size_t i = 0; i < n; i++) {
        if (entries[i].batch != batch) {
            batch = entries[i].batch;
            raft_free(batch);
        }
    }
    raft_free(entries);
    assert_null(snap);
}

/* Opens dir, loads it (returns load's code; the entries in *out, *n) and appends what is given. */
static int uv_session(const char *dir, const struct raft_entry *append, unsigned n_append,
                      struct raft_entry **out, size_t *n_out)
{
    struct uv_run r;
    memset(&r, 0, sizeof r);
    assert_int_equal(uv_loop_init(&r.loop), 0);
    assert_int_equal(raft_uv_tcp_init(&r.transport, &r.loop), 0);
    assert_int_equal(raft_uv_init(&r.io, &r.loop, dir, &r.transport), 0);
    raft_uv_set_auto_recovery(&r.io, false);
    r.io.data = &r;
    assert_int_equal(r.io.init(&r.io, 1, "127.0.0.1:9001"), 0);
    raft_term term;
    raft_id voted;
    struct raft_snapshot *snap = NULL;
    raft_index start;
    struct raft_entry *entries = NULL;
    size_t n = 0;
    int rv = r.io.load(&r.io, &term, &voted, &snap, &start, &entries, &n);
    if (rv == 0 && n_append > 0) {
        struct raft_io_append req;
        req.data = &r;
        assert_int_equal(r.io.append(&r.io, &req, append, n_append, append_cb), 0);
        while (!r.appended)
            uv_run(&r.loop, UV_RUN_ONCE);
        assert_int_equal(r.status, 0);
    }
    r.io.close(&r.io, close_cb);
    while (!r.closed)
        uv_run(&r.loop, UV_RUN_ONCE);
    raft_uv_close(&r.io);
    raft_uv_tcp_close(&r.transport);
    uv_run(&r.loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&r.loop), 0);
    if (out != NULL) {
        *out = entries;
        *n_out = n;
    } else if (rv == 0) {
        free_loaded(entries, n, snap);
    }
    return rv;
}

static unsigned char *read_file(const char *path, size_t *len)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    unsigned char *buf = malloc((size_t)st.st_size);
    FILE *f = fopen(path, "rb");
    assert_non_null(buf);
    assert_non_null(f);
    assert_int_equal(fread(buf, 1, (size_t)st.st_size, f), (size_t)st.st_size);
    fclose(f);
    *len = (size_t)st.st_size;
    return buf;
}

static void write_file(const char *path, const unsigned char *buf, size_t len)
{
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    assert_int_equal(fwrite(buf, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

/* The one segment raft_uv left in dir (closed at its close: "<first>-<last>" in 16 digits). */
static void segment_path(const char *dir, char *path, size_t size)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int found = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' || strncmp(e->d_name, "metadata", 8) == 0)
            continue;
        snprintf(path, size, "%s/%s", dir, e->d_name);
        found++;
    }
    closedir(d);
    assert_int_equal(found, 1);
}

static uint32_t le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const unsigned char *p)
{
    return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

/* The first batch of a segment: format version (8 bytes), header checksum, data checksum, header
 * (entry count, then term, type and length of each entry), data. Offsets into seg. */
struct batch {
    size_t crc_at, header_at, header_len, data_at, data_len;
};

static struct batch first_batch(const unsigned char *seg, size_t len)
{
    struct batch b;
    b.crc_at = 8;
    b.header_at = 16;
    uint64_t n = le64(seg + b.header_at);
    b.header_len = 8 + 16 * n;
    b.data_at = b.header_at + b.header_len;
    b.data_len = 0;
    for (uint64_t i = 0; i < n; i++)
        b.data_len += le32(seg + b.header_at + 8 + 16 * i + 12);
    assert_true(b.data_at + b.data_len <= len);
    return b;
}

static void test_segments_match_the_reference(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("raft-checksum");
    enum { N = 5 };
    const size_t lens[N] = {8, 1024, 1040, 64, 4096};
    struct raft_entry entries[N];
    uint64_t seed = 99;
    for (int i = 0; i < N; i++) {
        entries[i].term = 1;
        entries[i].type = RAFT_COMMAND;
        entries[i].buf.len = lens[i];
        entries[i].buf.base = raft_malloc(lens[i]);
        assert_non_null(entries[i].buf.base);
        ud_test_fill(&seed, entries[i].buf.base, lens[i]);
        entries[i].batch = NULL;
    }
    assert_int_equal(uv_session(dir, entries, N, NULL, NULL), 0);

    /* What raft wrote carries the reference's checksums. */
    char path[4096];
    segment_path(dir, path, sizeof path);
    size_t seg_len;
    unsigned char *seg = read_file(path, &seg_len);
    struct batch b = first_batch(seg, seg_len);
    assert_int_equal(b.data_len, 8 + 1024 + 1040 + 64 + 4096);
    assert_int_equal(le32(seg + b.crc_at), reference_crc(seg + b.header_at, b.header_len, 0));
    assert_int_equal(le32(seg + b.crc_at + 4), reference_crc(seg + b.data_at, b.data_len, 0));

    /* A segment changed and checksummed by the reference loads with the change. */
    size_t third = b.data_at + 8 + 1024 + 100;
    seg[third] ^= 0x5a;
    uint32_t crc = reference_crc(seg + b.data_at, b.data_len, 0);
    for (int i = 0; i < 4; i++)
        seg[b.crc_at + 4 + i] = (unsigned char)(crc >> (8 * i));
    write_file(path, seg, seg_len);
    struct raft_entry *loaded;
    size_t n;
    assert_int_equal(uv_session(dir, NULL, 0, &loaded, &n), 0);
    assert_int_equal(n, N);
    for (int i = 0; i < N; i++) {
        assert_int_equal(loaded[i].buf.len, lens[i]);
        unsigned char *want = entries[i].buf.base;
        if (i == 2)
            want[100] ^= 0x5a;
        assert_memory_equal(loaded[i].buf.base, want, lens[i]);
    }
    free_loaded(loaded, n, NULL);

    /* A change the checksum does not cover is refused or dropped, never loaded. */
    seg[third] ^= 0x01;
    write_file(path, seg, seg_len);
    int rv = uv_session(dir, NULL, 0, &loaded, &n);
    if (rv == 0) {
        assert_true(n < 3);
        free_loaded(loaded, n, NULL);
    } else {
        assert_int_equal(rv, RAFT_CORRUPT);
    }

    free(seg);
    for (int i = 0; i < N; i++)
        raft_free(entries[i].buf.base);
    ud_test_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc_matches_reference),
        cmocka_unit_test(test_crc_chains_and_known_values),
        cmocka_unit_test(test_sha1_vectors),
        cmocka_unit_test(test_segments_match_the_reference),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
