/* WALFS tests: format, rotation, readers, torn-tail recovery, corruption, retention, backup,
 * group commit and the failed state. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/crc32c.h"
#include "core/endian.h"
#include "core/err.h"
#include "core/log.h"
#include "core/wal.h"
#include "core/wal_int.h"
#include "tests/lib/fs_powerloss.h"
#include "tests/lib/testutil.h"

#define SEG_SMALL    (64u << 10)
#define HDR          UD_WAL_SEGMENT_HEADER_SIZE
#define MAX_REC(seg) ((seg)-HDR - 24)

static const uint8_t trailer[8] = {0xDE, 0xAD, 0xBE, 0xEF, 0xFE, 0xED, 0xFA, 0xCE};

/* --- helpers ---------------------------------------------------------------------------------- */

static uint64_t frame_size(uint64_t len)
{
    return (16 + len + 7) & ~(uint64_t)7;
}

/* Record contents are a function of (tag, len) so any read can be checked without a copy. */
static void fill_record(uint64_t tag, uint8_t *buf, size_t len)
{
    uint64_t st = tag * 0x9E3779B97F4A7C15ull + 12345;
    ud_test_fill(&st, buf, len);
}

static struct ud_wal *open_wal(const char *dir, uint64_t seg, enum ud_wal_sync_mode mode,
                               uint64_t start_lsn)
{
    struct ud_wal_options o = {.dir = dir,
                               .segment_size = seg,
                               .sync_mode = mode,
                               .start_lsn = start_lsn,
                               .index_interval = 8};
    struct ud_wal *wal = NULL;
    char err[UD_ERRMSG_SIZE] = "";
    int rc = ud_wal_open(&o, &wal, err);
    if (rc != 0)
        fail_msg("ud_wal_open %s: %s (%s)", dir, ud_strerror(rc), err);
    return wal;
}

static int try_open(const char *dir, uint64_t seg, struct ud_wal **out, char *err)
{
    struct ud_wal_options o = {
        .dir = dir, .segment_size = seg, .sync_mode = UD_WAL_SYNC_NONE, .index_interval = 8};
    err[0] = '\0';
    return ud_wal_open(&o, out, err);
}

/* Appends a record of len bytes with contents fill_record(tag); returns its LSN. */
static uint64_t append_rec(struct ud_wal *wal, uint64_t tag, size_t len, struct ud_wal_pos *pos)
{
    uint8_t *buf = malloc(len);
    assert_non_null(buf);
    fill_record(tag, buf, len);
    uint64_t lsn = 0;
    int rc = ud_wal_append(wal, buf, len, &lsn, pos);
    free(buf);
    assert_int_equal(rc, 0);
    return lsn;
}

/* Checks that one record read back has length len and the contents of tag. */
static void check_rec(const uint8_t *data, uint32_t got_len, uint64_t tag, size_t len)
{
    assert_int_equal(got_len, len);
    uint8_t *buf = malloc(len);
    assert_non_null(buf);
    fill_record(tag, buf, len);
    assert_memory_equal(data, buf, len);
    free(buf);
}

/* Record i (1-based tag) of the standard workload has this length: covers 1 byte, 8-byte
 * boundaries and a few larger records. */
static size_t rec_len(uint64_t i)
{
    static const size_t lens[] = {1, 7, 8, 9, 15, 16, 17, 24, 100, 333, 1000, 2047, 2, 3};
    return lens[i % (sizeof lens / sizeof lens[0])];
}

/* Reads every record from `from` and checks it against tags from..to (tag == LSN - base). */
static void read_check_range(struct ud_wal *wal, uint64_t from, uint64_t to, uint64_t base,
                             unsigned flags)
{
    struct ud_wal_reader *r = NULL;
    assert_int_equal(ud_wal_reader_open(wal, from, flags, &r), 0);
    for (uint64_t lsn = from; lsn <= to; lsn++) {
        const uint8_t *data;
        uint32_t len;
        uint64_t got;
        int rc = ud_wal_reader_next(r, &data, &len, &got);
        if (rc != 0)
            fail_msg("reader from %llu: next at LSN %llu: %s", (unsigned long long)from,
                     (unsigned long long)lsn, ud_strerror(rc));
        assert_int_equal(got, lsn);
        check_rec(data, len, lsn - base, rec_len(lsn - base));
    }
    const uint8_t *data;
    uint32_t len;
    uint64_t got;
    if (to == ud_wal_last_lsn(wal))
        assert_int_equal(ud_wal_reader_next(r, &data, &len, &got), UD_EAGAIN);
    ud_wal_reader_close(r);
}

static char *path_in(const char *dir, const char *name)
{
    char *p = NULL;
    assert_true(asprintf(&p, "%s/%s", dir, name) > 0);
    return p;
}

static char *seg_path(const char *dir, uint32_t id)
{
    char name[32];
    snprintf(name, sizeof name, "%010u.seg", id);
    return path_in(dir, name);
}

static uint8_t *read_file(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        fail_msg("open %s: %s", path, strerror(errno));
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *size = (size_t)n;
    return buf;
}

static void write_file(const char *path, const uint8_t *buf, size_t size)
{
    FILE *f = fopen(path, "wb");
    if (f == NULL)
        fail_msg("create %s: %s", path, strerror(errno));
    assert_int_equal(fwrite(buf, 1, size, f), size);
    assert_int_equal(fclose(f), 0);
}

static void patch_byte(const char *path, uint64_t off, uint8_t xor_mask)
{
    size_t size;
    uint8_t *buf = read_file(path, &size);
    assert_true(off < size);
    buf[off] ^= xor_mask;
    write_file(path, buf, size);
    free(buf);
}

static bool file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static void copy_dir_segments(const char *src, const char *dst, uint32_t nsegs)
{
    mkdir(dst, 0755);
    for (uint32_t id = 1; id <= nsegs; id++) {
        char *a = seg_path(src, id), *b = seg_path(dst, id);
        size_t n;
        uint8_t *buf = read_file(a, &n);
        write_file(b, buf, n);
        free(buf);
        free(a);
        free(b);
    }
}

static uint64_t mono_ms(void)
{
    return ud_mono_ns() / 1000000u;
}

/* --- format ----------------------------------------------------------------------------------- */

/* CRC32C by its definition, one bit at a time: the reference for ud_crc32c. */
static uint32_t crc32c_bitwise(uint32_t crc, const uint8_t *p, size_t len)
{
    crc = ~crc;
    for (size_t i = 0; i < len; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++)
            crc = (crc & 1) ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
    }
    return ~crc;
}

/* Checksums on disk must not depend on how they are computed: the standard check value, and
 * every length up to past three long stretches of the interleaved path, at every alignment and
 * split, equal the bitwise definition. */
static void test_crc32c_matches_definition(void **state)
{
    (void)state;
    assert_int_equal(ud_crc32c(0, "123456789", 9), 0xE3069283u);
    /* Twice the long stretch (3 x 256), then the short ones and a tail: the long loop runs again
     * from a non-zero register. */
    enum { MAX = 2 * 3 * 256 + 3 * 64 + 64 + 8 };
    uint8_t buf[MAX + 8];
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < sizeof buf; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf[i] = (uint8_t)x;
    }
    for (size_t len = 0; len <= MAX; len++) {
        for (size_t align = 0; align < 8; align++) {
            uint32_t want = crc32c_bitwise(0, buf + align, len);
            assert_int_equal(ud_crc32c(0, buf + align, len), want);
            size_t cut = (len * (7 + align)) / 17;
            assert_int_equal(
                ud_crc32c(ud_crc32c(0, buf + align, cut), buf + align + cut, len - cut), want);
        }
    }
    /* A WAL-sized record, continued from a non-zero CRC. */
    static uint8_t big[4096 + 100];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (uint8_t)(i * 131 + 7);
    uint32_t start = crc32c_bitwise(0, (const uint8_t *)"len!", 4);
    assert_int_equal(ud_crc32c(start, big, sizeof big), crc32c_bitwise(start, big, sizeof big));
}

/* Records of many sizes, 1 byte to the largest allowed, read back identical with dense LSNs; the
 * bytes on disk follow the documented layout exactly. */
static void test_round_trip_and_format(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("wal-format");
    const uint64_t seg = 256u << 10;
    struct ud_wal *wal = open_wal(dir, seg, UD_WAL_SYNC_NONE, 0);
    assert_int_equal(ud_wal_first_lsn(wal), 1);
    assert_int_equal(ud_wal_last_lsn(wal), 0);

    size_t lens[] = {1,
                     2,
                     3,
                     4,
                     5,
                     6,
                     7,
                     8,
                     9,
                     15,
                     16,
                     17,
                     63,
                     64,
                     65,
                     1000,
                     4096,
                     4097,
                     MAX_REC(seg) - 1,
                     MAX_REC(seg),
                     1,
                     12345};
    size_t n = sizeof lens / sizeof lens[0];
    struct ud_wal_pos pos[32];
    for (size_t i = 0; i < n; i++) {
        uint64_t lsn = append_rec(wal, i + 1, lens[i], &pos[i]);
        assert_int_equal(lsn, i + 1);
        assert_int_equal(pos[i].offset % 8, 0);
    }
    assert_int_equal(pos[0].segment_id, 1);
    assert_int_equal(pos[0].offset, HDR);
    assert_int_equal(pos[1].offset, HDR + frame_size(1));

    /* Limits: empty records are invalid, one byte over the maximum is refused. */
    uint8_t *big = calloc(1, MAX_REC(seg) + 1);
    uint64_t lsn;
    assert_int_equal(ud_wal_append(wal, big, 0, &lsn, NULL), UD_EINVAL);
    assert_int_equal(ud_wal_append(wal, big, MAX_REC(seg) + 1, &lsn, NULL), UD_ELIMIT);
    free(big);
    assert_int_equal(ud_wal_last_lsn(wal), n);

    for (int pass = 0; pass < 2; pass++) {
        struct ud_wal_reader *r;
        assert_int_equal(ud_wal_reader_open(wal, 1, 0, &r), 0);
        for (size_t i = 0; i < n; i++) {
            const uint8_t *data;
            uint32_t len;
            assert_int_equal(ud_wal_reader_next(r, &data, &len, &lsn), 0);
            assert_int_equal(lsn, i + 1);
            check_rec(data, len, i + 1, lens[i]);
        }
        const uint8_t *data;
        uint32_t len;
        assert_int_equal(ud_wal_reader_next(r, &data, &len, &lsn), UD_EAGAIN);
        ud_wal_reader_close(r);
        if (pass == 0) {
            ud_wal_close(wal);
            wal = open_wal(dir, seg, UD_WAL_SYNC_NONE, 0);
            assert_int_equal(ud_wal_last_lsn(wal), n);
        }
    }
    struct ud_wal_stats st;
    ud_wal_stats(wal, &st);
    ud_wal_close(wal);

    /* Byte layout, checked independently of the implementation. */
    char *p1 = seg_path(dir, 1);
    size_t size;
    uint8_t *f = read_file(p1, &size);
    assert_int_equal(ud_get_le32(f + 0), 0x5557414C);
    assert_int_equal(ud_get_le32(f + 4), 1);
    assert_true(ud_get_le64(f + 8) > 1600000000ull * 1000000000ull); /* created, ns since epoch */
    assert_true(ud_get_le64(f + 16) >= ud_get_le64(f + 8));
    assert_int_equal(ud_get_le32(f + 40), 2); /* sealed: the maximal record did not fit */
    assert_int_equal(ud_get_le64(f + 44), 1); /* first LSN */
    assert_int_equal(ud_get_le32(f + 56), ud_crc32c(0, f, 56));
    /* Sealing brings the write offset and count in the header up to date. */
    uint64_t count_in_seg1 = 0;
    for (size_t i = 0; i < n; i++)
        if (pos[i].segment_id == 1)
            count_in_seg1++;
    assert_int_equal(ud_get_le64(f + 32), count_in_seg1);
    for (size_t i = 0; i < n; i++) {
        if (pos[i].segment_id != 1)
            continue;
        const uint8_t *fr = f + pos[i].offset;
        uint32_t len = ud_get_le32(fr + 4);
        assert_int_equal(len, lens[i]);
        assert_int_equal(ud_get_le32(fr), ud_crc32c(0, fr + 4, 4 + len));
        assert_memory_equal(fr + 8 + len, trailer, 8);
        for (uint64_t b = 16 + len; b < frame_size(len); b++)
            assert_int_equal(fr[b], 0);
    }
    free(f);
    free(p1);

    /* The active (last) segment: flags active; close leaves its header as its creation wrote it
     * (offset and count lag: recovery scans the frames), with a valid checksum. */
    assert_true(st.segments >= 2);
    assert_int_equal(size, seg);
    p1 = seg_path(dir, st.segments);
    f = read_file(p1, &size);
    assert_int_equal(size, seg);
    assert_int_equal(ud_get_le32(f + 40), 1);
    assert_int_equal(ud_get_le64(f + 24), UD_WAL_SEGMENT_HEADER_SIZE);
    assert_int_equal(ud_get_le64(f + 32), 0);
    assert_true(ud_get_le64(f + 44) <= n);
    assert_int_equal(ud_get_le32(f + 56), ud_crc32c(0, f, 56));
    free(f);
    free(p1);
    ud_test_rmtree(dir);
    free(dir);
}

/* --- rotation and readers --------------------------------------------------------------------- */

#define ROT_N 2500

static void test_rotation_and_readers(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("wal-rotation");
    struct ud_wal *wal = open_wal(dir, SEG_SMALL, UD_WAL_SYNC_NONE, 0);
    uint32_t last_seg = 1;
    uint32_t seg_starts = 0;
    static struct ud_wal_pos at[ROT_N + 1];
    for (uint64_t i = 1; i <= ROT_N; i++) {
        struct ud_wal_pos pos;
        assert_int_equal(append_rec(wal, i, rec_len(i), &pos), i);
        at[i] = pos;
        if (pos.segment_id != last_seg) {
            /* A new segment starts right after its header. */
            assert_int_equal(pos.segment_id, last_seg + 1);
            assert_int_equal(pos.offset, HDR);
            last_seg = pos.segment_id;
            seg_starts++;
        }
    }
    struct ud_wal_stats st;
    ud_wal_stats(wal, &st);
    assert_true(st.segments >= 8);
    assert_int_equal(st.segments, last_seg);
    assert_int_equal(st.active_segment, last_seg);
    assert_int_equal(st.last_lsn, ROT_N);
    /* Every record's position as the append reported it; last + 1 is the end; past it, none. */
    for (uint64_t i = 1; i <= ROT_N; i++) {
        uint32_t seg;
        uint64_t off;
        assert_int_equal(ud_wal_position_of(wal, i, &seg, &off), 0);
        assert_int_equal(seg, at[i].segment_id);
        assert_int_equal(off, at[i].offset);
    }
    uint32_t seg;
    uint64_t off;
    assert_int_equal(ud_wal_position_of(wal, ROT_N + 1, &seg, &off), 0);
    assert_int_equal(seg, st.active_segment);
    assert_int_equal(off, st.active_offset);
    assert_int_equal(ud_wal_position_of(wal, ROT_N + 2, &seg, &off), UD_ERANGE);
    assert_int_equal(ud_wal_position_of(wal, 0, &seg, &off), UD_EGONE);

    /* From every LSN: a few records (crossing each segment boundary on the way). */
    for (uint64_t from = 1; from <= ROT_N + 1; from++) {
        struct ud_wal_reader *r;
        assert_int_equal(ud_wal_reader_open(wal, from, 0, &r), 0);
        for (uint64_t lsn = from; lsn < from + 3 && lsn <= ROT_N; lsn++) {
            const uint8_t *data;
            uint32_t len;
            uint64_t got;
            assert_int_equal(ud_wal_reader_next(r, &data, &len, &got), 0);
            assert_int_equal(got, lsn);
            check_rec(data, len, lsn, rec_len(lsn));
        }
        ud_wal_reader_close(r);
    }
    /* From the start, from the middle of segments, and tail position: all the way. */
    uint64_t froms[] = {1, 2, 77, 500, 999, ROT_N};
    for (size_t i = 0; i < sizeof froms / sizeof froms[0]; i++)
        read_check_range(wal, froms[i], ROT_N, 0, 0);
    read_check_range(wal, ROT_N + 1, ROT_N, 0, 0);

    struct ud_wal_reader *r;
    assert_int_equal(ud_wal_reader_open(wal, ROT_N + 2, 0, &r), UD_ERANGE);
    assert_int_equal(ud_wal_reader_open(wal, 0, 0, &r), UD_EGONE);

    /* Explicit rotation: no-op on an empty active segment, new segment otherwise. */
    char err[UD_ERRMSG_SIZE];
    assert_int_equal(ud_wal_rotate(wal, err), 0);
    ud_wal_stats(wal, &st);
    assert_int_equal(st.segments, last_seg + 1);
    assert_int_equal(ud_wal_rotate(wal, err), 0);
    ud_wal_stats(wal, &st);
    assert_int_equal(st.segments, last_seg + 1);
    ud_wal_close(wal);

    /* After reopen, every sealed segment verified and the index rebuilt: same reads. */
    wal = open_wal(dir, SEG_SMALL, UD_WAL_SYNC_NONE, 0);
    for (size_t i = 0; i < sizeof froms / sizeof froms[0]; i++)
        read_check_range(wal, froms[i], ROT_N, 0, 0);
    assert_int_equal(append_rec(wal, ROT_N + 1, rec_len(ROT_N + 1), NULL), ROT_N + 1);
    read_check_range(wal, ROT_N - 5, ROT_N + 1, 0, 0);
    ud_wal_close(wal);
    ud_test_rmtree(dir);
    free(dir);
}

/* A reader positioned at the tail moves on when rotation happens under it. */
static void test_tail_reader_across_rotation(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("wal-tailrot");
    struct ud_wal *wal = open_wal(dir, SEG_SMALL, UD_WAL_SYNC_NONE, 0);
    struct ud_wal_reader *r;
    assert_int_equal(ud_wal_reader_open(wal, 1, 0, &r), 0);
    uint64_t next = 1;
    for (uint64_t i = 1; i <= 400; i++) {
        append_rec(wal, i, 1000, NULL);
        const uint8_t *data;
        uint32_t len;
        uint64_t lsn;
        assert_int_equal(ud_wal_reader_next(r, &data, &len, &lsn), 0);
        assert_int_equal(lsn, next);
        check_rec(data, len, next, 1000);
        next++;
        assert_int_equal(ud_wal_reader_next(r, &data, &len, &lsn), UD_EAGAIN);
    }
    ud_wal_reader_close(r);
    ud_wal_close(wal);
    ud_test_rmtree(dir);
    free(dir);
}

/* --- tail waits ------------------------------------------------------------------------------- */

struct delayed_append {
    struct ud_wal *wal;
    unsigned delay_ms;
    bool sync;
    uint64_t lsn;
};

static void *delayed_append_main(void *arg)
{
    struct delayed_append *d = arg;
    struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)d->delay_ms * 1000000};
    nanosleep(&ts, NULL);
    uint8_t buf[100];
    fill_record(d->lsn, buf, sizeof buf);
    uint64_t lsn;
    assert_int_equal(ud_wal_append(d->wal, buf, sizeof buf, &lsn, NULL), 0);
    assert_int_equal(lsn, d->lsn);
    if (d->sync) {
        nanosleep(&ts, NULL);
        char err[UD_ERRMSG_SIZE];
        assert_int_equal(ud_wal_sync(d->wal, lsn, err), 0);
    }
    return NULL;
}

static void test_tail_wait_woken_by_append(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("wal-wait");
    struct ud_wal *wal = open_wal(dir, SEG_SMALL, UD_WAL_SYNC_NONE, 0);
    struct ud_wal_reader *r;
    assert_int_equal(ud_wal_reader_open(wal, 1, 0, &r), 0);
    assert_int_equal(ud_wal_reader_wait(r, 20), UD_ETIMEDOUT);

    for (uint64_t round = 1; round <= 3; round++) {
        struct delayed_append d = {.wal = wal, .delay_ms = 30, .lsn = round};
        pthread_t t;
        pthread_create(&t, NULL, delayed_append_main, &d);
        uint64_t t0 = mono_ms();
        assert_int_equal(ud_wal_reader_wait(r, 20000), 0);
        assert_true(mono_ms() - t0 < 10000);
        const uint8_t *data;
        uint32_t len;
        uint64_t lsn;
        assert_int_equal(ud_wal_reader_next(r, &data, &len, &lsn), 0);
        assert_int_equal(lsn, round);
        check_rec(data, len, round, 100);
        pthread_join(t, NULL);
    }
    ud_wal_reader_close(r);
    ud_wal_close(wal);
    ud_test_rmtree(dir);
    free(dir);
}

/* In ALWAYS mode a default reader sees only durable records, and is woken by the sync. */
static void test_always_mode_visibility(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("wal-visibility");
    struct ud_wal *wal = open_wal(dir, SEG_SMALL, UD_WAL_SYNC_ALWAYS, 0);
    struct ud_wal_reader *r, *ru;
    assert_int_equal(ud_wal_reader_open(wal, 1, 0, &r), 0);
    assert_int_equal(ud_wal_reader_open(wal, 1, UD_WAL_READ_UNDURABLE, &ru), 0);

    struct delayed_append d = {.wal = wal, .delay_ms = 30, .sync = true, .lsn = 1};
    pthread_t t;
    pthread_create(&t, NULL, delayed_append_main, &d);
    /* The undurable reader wakes on the append, the default one only once synced. */
    assert_int_equal(ud_wal_reader_wait(ru, 20000), 0);
    assert_int_equal(ud_wal_reader_wait(r, 20000), 0);
    assert_true(ud_wal_durable_lsn(wal) >= 1);
    const uint8_t *data;
    uint32_t len;
    uint64_t lsn;
    assert_int_equal(ud_wal_reader_next(r, &data, &len, &lsn), 0);
    assert_int_equal(lsn, 1);
    assert_int_equal(ud_wal_reader_next(ru, &data, &len, &lsn), 0);
    assert_int_equal(lsn, 1);
    pthread_join(t, NULL);

    /* Appended, not yet synced: invisible by default, visible with UD_WAL_READ_UNDURABLE. */
    append_rec(wal, 2, 10, NULL);
    assert_int_equal(ud_wal_reader_next(r, &data, &len, &lsn), UD_EAGAIN);
    assert_int_equal(ud_wal_reader_next(ru, &data, &len, &lsn), 0);
    assert_int_equal(lsn, 2);
    char err[UD_ERRMSG_SIZE];
    assert_int_equal(ud_wal_sync(wal, 2, err), 0);
    assert_int_equal(ud_wal_reader_next(r, &data, &len, &lsn), 0);
    assert_int_equal(lsn, 2);
    ud_wal_reader_close(r);
    ud_wal_reader_close(ru);
    ud_wal_close(wal);
    ud_test_rmtree(dir);
    free(dir);
}

struct closer {
    struct ud_wal_reader *r;
    int rc;
};

static void *wait_main(void *arg)
{
    struct closer *c = arg;
    c->rc = ud_wal_reader_wait(c->r, 30000);
    return NULL;
}

/* Closing the WAL wakes a waiting reader with UD_ECLOSED. */
static void test_close_wakes_waiter(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("wal-closewake");
    struct ud_wal *wal = open_wal(dir, SEG_SMALL, UD_WAL_SYNC_NONE, 0);
    struct ud_wal_reader *r;
    assert_int_equal(ud_wal_reader_open(wal, 1, 0, &r), 0);
    struct closer c = {.r = r, .rc = -1};
    pthread_t t;
    pthread_create(&t, NULL, wait_main, &c);
    struct timespec ts = {.tv_sec = 0, .tv_nsec = 30 * 1000000};
    nanosleep(&ts, NULL);
    uint64_t t0 = mono_ms();
    ud_wal_close(wal);
    pthread_join(t, NULL);
    assert_int_equal(c.rc, UD_ECLOSED);
    assert_true(mono_ms() - t0 < 10000);
    ud_wal_reader_close(r);
    ud_test_rmtree(dir);
    free(dir);
}

/* Readers tailing while another thread appends across many rotations see every record, in
 * order, complete (run under ThreadSanitizer this also checks the lock-free publication). */
#define TAIL_N 6000

struct tailer {
    struct ud_wal *wal;
    unsigned flags;
    uint64_t seen;
    int bad;
};

static void *tailer_main(void *arg)
{
    struct tailer *t = arg;
    struct ud_wal_reader *r;
    if (ud_wal_reader_open(t->wal, 1, t->flags, &r) != 0) {
        t->bad++;
        return NULL;
    }
    uint8_t buf[2048];
    while (t->seen < TAIL_N) {
        const uint8_t *data;
        uint32_t len;
        uint64_t lsn;
        int rc = ud_wal_reader_next(r, &data, &len, &lsn);
        if (rc == UD_EAGAIN) {
            if (ud_wal_reader_wait(r, 10000) != 0) {
                t->bad++;
                break;
            }
            continue;
        }
        if (rc != 0 || lsn != t->seen + 1 || len != rec_len(lsn)) {
            t->bad++;
            break;
        }
        fill_record(lsn, buf, len);
        if (memcmp(buf, data, len) != 0)
            t->bad++;
        t->seen++;
    }
    ud_wal_reader_close(r);
    return NULL;
}

static void test_concurrent_tailers(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("wal-tailers");
    struct ud_wal *wal = open_wal(dir, SEG_SMALL, UD_WAL_SYNC_ALWAYS, 0);
    struct tailer t[2] = {{.wal = wal, .flags = 0}, {.wal = wal, .flags = UD_WAL_READ_UNDURABLE}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&th[i], NULL, tailer_main, &t[i]);
    char err[UD_ERRMSG_SIZE];
    for (uint64_t i = 1; i <= TAIL_N; i++) {
        assert_int_equal(append_rec(wal, i, rec_len(i), NULL), i);
        if (i % 16 == 0 || i == TAIL_N)
            assert_int_equal(ud_wal_sync(wal, i, err), 0);
    }
    for (int i = 0; i < 2; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(t[i].bad, 0);
        assert_int_equal(t[i].seen, TAIL_N);
    }
    ud_wal_close(wal);
    ud_test_rmtree(dir);
    free(dir);
}

/* --- recovery --------------------------------------------------------------------------------- */

/* Builds a log of sealed segments 1..2 and an active segment 3 with about 30 records; returns the
 * frame offsets of segment 3's records and the LSN of its first one. */
static uint32_t build_three_segments(const char *dir, uint64_t *offs, uint64_t *lens,
                                     uint32_t *n_active, uint64_t *first_active)
{
    struct ud_wal *wal = open_wal(dir, SEG_SMALL, UD_WAL_SYNC_NONE, 0);
    uint64_t i = 1;
    struct ud_wal_pos pos;
    for (;; i++) {
        append_rec(wal, i, rec_len(i), &pos);
        if (pos.segment_id == 3)
            break;
    }
    *first_active = i;
    uint32_t n = 0;
    offs[n] = pos.offset;
    lens[n++] = rec_len(i);
    for (i++; n < 30; i++) {
        append_rec(wal, i, rec_len(i), &pos);
        assert_int_equal(pos.segment_id, 3);
        offs[n] = pos.offset;
        lens[n++] = rec_len(i);
    }
    ud_wal_close(wal);
    *n_active = n;
    return 3;
}

/* Reads record lsn alone and checks its contents (tag lsn, len bytes). */
static void check_one(struct ud_wal *wal, uint64_t lsn, size_t len)
{
    struct ud_wal_reader *r;
    assert_int_equal(ud_wal_reader_open(wal, lsn, 0, &r), 0);
    const uint8_t *data;
    uint32_t got_len;
    uint64_t got;
    assert_int_equal(ud_wal_reader_next(r, &data, &got_len, &got), 0);
    assert_int_equal(got, lsn);
    check_rec(data, got_len, lsn, len);
    assert_int_equal(ud_wal_reader_next(r, &data, &got_len, &got), UD_EAGAIN);
    ud_wal_reader_close(r);
}

/* Simulated crashes: the active segment is cut at many offsets (mid-header, mid-length, mid-data,
 * mid-trailer, in the padding) and everything after the cut is zeroed or garbled, or only the byte
 * at the cut is flipped (later frames intact). After reopen exactly the records wholly before the
 * damage are present, the next append takes the next LSN, the whole log reads back, and a second
 * reopen agrees: in particular a new record of the damaged one's size, written over it, must not
 * bring back the intact old frames behind it. */
static void test_torn_tail_recovery(void **state)
{
    (void)state;
    char *root = ud_test_tmpdir("wal-torn");
    char *src = path_in(root, "src");
    uint64_t offs[64], lens[64], first_active;
    uint32_t n_active;
    build_three_segments(src, offs, lens, &n_active, &first_active);

    /* Cut points relative to each frame: start, in crc, in length, data start, mid data, trailer
     * start, mid trailer, last trailer byte, padding, end. */
    uint64_t cuts[1024];
    size_t ncuts = 0;
    uint64_t header_cuts[] = {0, 1, 4, 30, 44, 56, 60, 63};
    for (size_t i = 0; i < sizeof header_cuts / sizeof header_cuts[0]; i++)
        cuts[ncuts++] = header_cuts[i];
    for (uint32_t k = 0; k < n_active; k++) {
        uint64_t o = offs[k], l = lens[k];
        uint64_t rel[] = {0,     2,         5,         8,      8 + l / 2,
                          8 + l, 8 + l + 3, 8 + l + 7, 16 + l, frame_size(l) - 1};
        for (size_t j = 0; j < sizeof rel / sizeof rel[0]; j++)
            if (rel[j] < frame_size(l) && (j == 0 || rel[j] != rel[j - 1]))
                cuts[ncuts++] = o + rel[j];
    }
    uint64_t end = offs[n_active - 1] + frame_size(lens[n_active - 1]);
    cuts[ncuts++] = end;
    cuts[ncuts++] = end + 100;

    char *act_src = seg_path(src, 3);
    size_t seg_size;
    uint8_t *orig = read_file(act_src, &seg_size);
    uint8_t *img = malloc(seg_size);
    uint64_t rnd = 42;
    char *dst = path_in(root, "dst");
    char *act_dst = seg_path(dst, 3);
    size_t runs = 0;
    for (size_t c = 0; c < ncuts; c++) {
        for (int mode = 0; mode < 3; mode++) { /* 0 zero tail, 1 garble tail, 2 flip one byte */
            uint64_t cut = cuts[c];
            if (mode == 2 && (cut < HDR || cut >= end))
                continue;
            ud_test_rmtree(dst);
            copy_dir_segments(src, dst, 2);
            memcpy(img, orig, seg_size);
            if (mode == 0)
                memset(img + cut, 0, seg_size - cut);
            else if (mode == 1)
                ud_test_fill(&rnd, img + cut, seg_size - cut);
            else
                img[cut] ^= 0x20;
            write_file(act_dst, img, seg_size);

            /* Survivors: frames wholly before the damage (a frame is whole once its trailer is;
             * padding is not covered by the checksum). */
            uint64_t expect_last = first_active - 1;
            size_t next_len = 0;
            if (cut >= HDR) {
                for (uint32_t k = 0; k < n_active; k++) {
                    if (offs[k] + 16 + lens[k] <= cut)
                        expect_last = first_active + k;
                    else if (mode == 2 && cut >= offs[k] && cut < offs[k] + 16 + lens[k])
                        next_len = lens[k];
                }
                if (mode == 2 && next_len == 0)
                    expect_last = first_active + n_active - 1; /* a padding byte: harmless */
            }
            uint64_t next = expect_last + 1;
            if (next_len == 0)
                next_len = rec_len(next);

            struct ud_wal *wal;
            char err[UD_ERRMSG_SIZE];
            int rc = try_open(dst, SEG_SMALL, &wal, err);
            if (rc != 0)
                fail_msg("cut %llu mode %d: open: %s", (unsigned long long)cut, mode, err);
            if (ud_wal_last_lsn(wal) != expect_last)
                fail_msg("cut %llu mode %d: last LSN %llu, expected %llu", (unsigned long long)cut,
                         mode, (unsigned long long)ud_wal_last_lsn(wal),
                         (unsigned long long)expect_last);
            assert_int_equal(ud_wal_first_lsn(wal), 1);
            assert_int_equal(append_rec(wal, next, next_len, NULL), next);
            read_check_range(wal, 1, next - 1, 0, 0);
            check_one(wal, next, next_len);
            ud_wal_close(wal);

            /* The damaged tail was zeroed durably: a second recovery finds the same log. */
            wal = open_wal(dst, SEG_SMALL, UD_WAL_SYNC_NONE, 0);
            if (ud_wal_last_lsn(wal) != next)
                fail_msg("cut %llu mode %d: after reopen last LSN %llu, expected %llu",
                         (unsigned long long)cut, mode, (unsigned long long)ud_wal_last_lsn(wal),
                         (unsigned long long)next);
            read_check_range(wal, first_active > 3 ? first_active - 3 : 1, next - 1, 0, 0);
            check_one(wal, next, next_len);
            ud_wal_close(wal);
            runs++;
        }
    }
    assert_true(runs > 500);
    free(orig);
    free(img);
    free(act_src);
    free(act_dst);
    free(src);
    free(dst);
    ud_test_rmtree(root);
    free(root);
}

/* A flipped byte inside a sealed segment fails the open with a message naming file and offset. */
static void test_sealed_corruption_detected(void **state)
{
    (void)state;
    char *root = ud_test_tmpdir("wal-sealed");
    char *src = path_in(root, "src");
    struct ud_wal *wal = open_wal(src, SEG_SMALL, UD_WAL_SYNC_NONE, 0);
    struct ud_wal_pos pos[400];
    uint64_t n = 0;
    for (uint64_t i = 1; i <= 400; i++) {
        append_rec(wal, i, 700, &pos[i - 1]);
        n = i;
        if (pos[i - 1].segment_id == 4)
            break;
    }
    ud_wal_close(wal);
    /* Pick a record in the middle of sealed segment 2. */
    uint64_t k = 0;
    for (uint64_t i = 0; i < n; i++)
        if (pos[i].segment_id == 2)
            k = i;
    k -= 3;
    assert_int_equal(pos[k].segment_id, 2);
    uint64_t off = pos[k].offset;

    struct {
        uint64_t delta; /* byte within the frame */
        const char *what;
    } flips[] = {
        {100, "checksum"}, /* data */
        {0, "checksum"},   /* stored crc */
        {8 + 700 + 2, "trailer"},
        {5, ""}, /* length: detected as some bad record at this offset */
    };
    char *dst = path_in(root, "dst");
    for (size_t f = 0; f < sizeof flips / sizeof flips[0]; f++) {
        ud_test_rmtree(dst);
        copy_dir_segments(src, dst, 4);
        char *p = seg_path(dst, 2);
        patch_byte(p, off + flips[f].delta, 0x40);
        struct ud_wal *w = NULL;
        char err[UD_ERRMSG_SIZE];
        assert_int_equal(try_open(dst, SEG_SMALL, &w, err), UD_ECORRUPT);
        assert_null(w);
        char want[64];
        snprintf(want, sizeof want, "at offset %llu", (unsigned long long)off);
        if (strstr(err, "0000000002.seg") == NULL || strstr(err, want) == NULL ||
            strstr(err, flips[f].what) == NULL)
            fail_msg("flip %zu: message \"%s\" lacks segment, \"%s\" or \"%s\"", f, err, want,
                     flips[f].what);
        free(p);
    }

    /* A bad header on a sealed segment is corruption too. */
    ud_test_rmtree(dst);
    copy_dir_segments(src, dst, 4);
    char *p = seg_path(dst, 1);
    patch_byte(p, 20, 0x01);
    struct ud_wal *w = NULL;
    char err[UD_ERRMSG_SIZE];
    assert_int_equal(try_open(dst, SEG_SMALL, &w, err), UD_ECORRUPT);
    assert_non_null(strstr(err, "0000000001.seg"));
    assert_non_null(strstr(err, "header"));
    free(p);

    /* A missing middle segment. */
    ud_test_rmtree(dst);
    copy_dir_segments(src, dst, 4);
    p = seg_path(dst, 2);
    unlink(p);
    assert_int_equal(try_open(dst, SEG_SMALL, &w, err), UD_ECORRUPT);
    assert_non_null(strstr(err, "0000000002.seg"));
    assert_non_null(strstr(err, "missing"));
    free(p);

    /* First-LSN discontinuity: rewrite segment 3's first LSN with a valid header CRC. */
    ud_test_rmtree(dst);
    copy_dir_segments(src, dst, 4);
    p = seg_path(dst, 3);
    size_t size;
    uint8_t *buf = read_file(p, &size);
    ud_put_le64(buf + 44, ud_get_le64(buf + 44) + 1);
    ud_put_le32(buf + 56, ud_crc32c(0, buf, 56));
    write_file(p, buf, size);
    free(buf);
    assert_int_equal(try_open(dst, SEG_SMALL, &w, err), UD_ECORRUPT);
    assert_non_null(strstr(err, "0000000003.seg"));
    assert_non_null(strstr(err, "first LSN"));
    free(p);

    /* A future format version is refused as such. */
    ud_test_rmtree(dst);
    copy_dir_segments(src, dst, 4);
    p = seg_path(dst, 1);
    buf = read_file(p, &size);
    ud_put_le32(buf + 4, 2);
    ud_put_le32(buf + 56, ud_crc32c(0, buf, 56));
    write_file(p, buf, size);
    free(buf);
    assert_int_equal(try_open(dst, SEG_SMALL, &w, err), UD_EVERSION);
    assert_non_null(strstr(err, "0000000001.seg"));
    free(p);

    /* The untouched copy still opens. */
    ud_test_rmtree(dst);
    copy_dir_segments(src, dst, 4);
    w = open_wal(dst, SEG_SMALL, UD_WAL_SYNC_NONE, 0);
    assert_int_equal(ud_wal_last_lsn(w), n);
    ud_wal_close(w);
    free(src);
    free(dst);
    ud_test_rmtree(root);
    free(root);
}

/* A flipped byte in the active segment above the durable floor (none here) truncates the log there
 * (it is the torn-write case). */
static void test_active_corruption_truncates(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("wal-activeflip");
    struct ud_wal *wal = open_wal(dir, SEG_SMALL, UD_WAL_SYNC_NONE, 0);
    struct ud_wal_pos pos[20];
    for (uint64_t i = 1; i <= 20; i++)
        append_rec(wal, i, rec_len(i), &pos[i - 1]);
    ud_wal_close(wal);
    char *p = seg_path(dir, 1);
    patch_byte(p, pos[12].offset + 9, 0xFF); /* data of LSN 13 */
    wal = open_wal(dir, SEG_SMALL, UD_WAL_SYNC_NONE, 0);
    assert_int_equal(ud_wal_last_lsn(wal), 12);
    assert_int_equal(append_rec(wal, 13, rec_len(13), NULL), 13);
    read_check_range(wal, 1, 13, 0, 0);
    ud_wal_close(wal);
    free(p);
    ud_test_rmtree(dir);
    free(dir);
}

/* Below the durable floor (ud_wal_sync_all), a bad record in the active segment is damage, not a
 * torn write: the open fails naming segment, offset and floor, and changes no byte. Above it, the
 * log is cut there as before. A torn write of the floor file leaves its other slot. */
static void test_active_corruption_below_floor(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("wal-floor");
    char err[UD_ERRMSG_SIZE];
    struct ud_wal *wal = open_wal(dir, SEG_SMALL, UD_WAL_SYNC_NONE, 0);
    struct ud_wal_pos pos[40];
    assert_int_equal(ud_wal_floor(wal), 0);
    for (uint64_t i = 1; i <= 20; i++)
        append_rec(wal, i, rec_len(i), &pos[i - 1]);
    assert_int_equal(ud_wal_sync_all(wal, err), 0);
    assert_int_equal(ud_wal_floor(wal), 20);
    for (uint64_t i = 21; i <= 30; i++)
        append_rec(wal, i, rec_len(i), &pos[i - 1]);
    ud_wal_close(wal); /* syncs 21..30 without raising the floor */

    char *p = seg_path(dir, 1);
    size_t size_before, size_after;
    patch_byte(p, pos[12].offset + 9, 0xFF); /* data of LSN 13 */
    uint8_t *before = read_file(p, &size_before);
    assert_int_equal(try_open(dir, SEG_SMALL, &wal, err), UD_ECORRUPT);
    char want[256];
    snprintf(want, sizeof want,
             "segment 0000000001.seg: bad record checksum at offset %llu (LSN 13, durable floor "
             "20, durable-floor): damaged, not torn",
             (unsigned long long)pos[12].offset);
    if (strstr(err, want) == NULL)
        fail_msg("error \"%s\" lacks \"%s\"", err, want);
    uint8_t *after = read_file(p, &size_after);
    assert_int_equal(size_before, size_after);
    assert_memory_equal(before, after, size_before); /* nothing zeroed */
    free(before);
    free(after);

    /* Repaired below the floor and damaged above it: cut there, as a torn tail. */
    patch_byte(p, pos[12].offset + 9, 0xFF);
    patch_byte(p, pos[24].offset + 9, 0xFF); /* LSN 25 */
    wal = open_wal(dir, SEG_SMALL, UD_WAL_SYNC_NONE, 0);
    assert_int_equal(ud_wal_floor(wal), 20);
    assert_int_equal(ud_wal_last_lsn(wal), 24);
    read_check_range(wal, 1, 24, 0, 0);
    for (uint64_t i = 25; i <= 30; i++)
        append_rec(wal, i, rec_len(i), &pos[i - 1]);
    assert_int_equal(ud_wal_sync_all(wal, err), 0); /* second slot: floor 30 */
    ud_wal_close(wal);

    /* A torn write of the newest slot: the other one's floor (20) holds; LSN 25 is above it. */
    char *fp = path_in(dir, "durable-floor");
    patch_byte(fp, 512 + 20, 0x01); /* seq 1 went to slot 0, seq 2 to slot 1 */
    patch_byte(p, pos[24].offset + 9, 0xFF);
    wal = open_wal(dir, SEG_SMALL, UD_WAL_SYNC_NONE, 0);
    assert_int_equal(ud_wal_floor(wal), 20);
    assert_int_equal(ud_wal_last_lsn(wal), 24);
    ud_wal_close(wal);

    /* Both slots damaged: refused, naming the file. */
    patch_byte(fp, 0 + 20, 0x01);
    assert_int_equal(try_open(dir, SEG_SMALL, &wal, err), UD_ECORRUPT);
    if (strstr(err, "durable-floor: both slots are damaged") == NULL)
        fail_msg("error \"%s\"", err);
    patch_byte(fp, 0 + 20, 0x01); /* slot 0 back: floor 20 */

    /* The next raise goes to the damaged slot 1, never over slot 0's floor. */
    wal = open_wal(dir, SEG_SMALL, UD_WAL_SYNC_NONE, 0);
    assert_int_equal(ud_wal_last_lsn(wal), 24); /* cut at 25 above */
    append_rec(wal, 25, rec_len(25), NULL);
    assert_int_equal(ud_wal_sync_all(wal, err), 0);
    ud_wal_close(wal);
    patch_byte(fp, 0 + 20, 0x01); /* slot 0 (floor 20) damaged now: slot 1 holds 25 */
    wal = open_wal(dir, SEG_SMALL, UD_WAL_SYNC_NONE, 0);
    assert_int_equal(ud_wal_floor(wal), 25);
    ud_wal_close(wal);

    /* A file whose creation did not finish (0 bytes): no floor, created again. */
    write_file(fp, (const uint8_t *)"", 0);
    wal = open_wal(dir, SEG_SMALL, UD_WAL_SYNC_NONE, 0);
    assert_int_equal(ud_wal_floor(wal), 0);
    assert_int_equal(ud_wal_sync_all(wal, err), 0);
    assert_int_equal(ud_wal_floor(wal), 25);
    ud_wal_close(wal);
    wal = open_wal(dir, SEG_SMALL, UD_WAL_SYNC_NONE, 0);
    assert_int_equal(ud_wal_floor(wal), 25);
    ud_wal_close(wal);

    /* Segments gone from under a floor: refused, saying which file to remove if on purpose. */
    assert_int_equal(unlink(p), 0);
    assert_int_equal(try_open(dir, SEG_SMALL, &wal, err), UD_ECORRUPT);
    if (strstr(err, "the log ends at LSN 0, but it was durable up to LSN 25") == NULL ||
        strstr(err, "remove that file") == NULL)
        fail_msg("error \"%s\"", err);
    free(fp);
    free(p);
    ud_test_rmtree(dir);
    free(dir);
}

/* A crash while creating a segment leaves a newest file with an unreadable header and no records:
 * it is discarded. The same header damage on a segment that holds records is corruption. */
static void test_half_created_segment(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("wal-halfcreated");
    struct ud_wal *wal = open_wal(dir, SEG_SMALL, UD_WAL_SYNC_NONE, 0);
    for (uint64_t i = 1; i <= 10; i++)
        append_rec(wal, i, rec_len(i), NULL);
    char err[UD_ERRMSG_SIZE];
    assert_int_equal(ud_wal_rotate(wal, err), 0); /* segment 1 sealed, 2 active and empty */
    ud_wal_close(wal);

    /* Segment 2 all zero (file created, header never reached the disk). */
    char *p2 = seg_path(dir, 2);
    uint8_t *zero = calloc(1, SEG_SMALL);
    write_file(p2, zero, SEG_SMALL);
    wal = open_wal(dir, SEG_SMALL, UD_WAL_SYNC_NONE, 0);
    assert_int_equal(ud_wal_last_lsn(wal), 10);
    assert_int_equal(append_rec(wal, 11, rec_len(11), NULL), 11);
    read_check_range(wal, 1, 11, 0, 0);
    ud_wal_close(wal);

    /* Newest file of length zero (preallocation lost). */
    char *p3 = seg_path(dir, 3);
    assert_int_equal(ud_wal_rotate(wal = open_wal(dir, SEG_SMALL, UD_WAL_SYNC_NONE, 0), err), 0);
    ud_wal_close(wal);
    write_file(p3, zero, 0);
    wal = open_wal(dir, SEG_SMALL, UD_WAL_SYNC_NONE, 0);
    assert_int_equal(ud_wal_last_lsn(wal), 11);
    assert_int_equal(append_rec(wal, 12, rec_len(12), NULL), 12);
    struct ud_wal_stats st;
    ud_wal_stats(wal, &st);
    assert_int_equal(st.active_segment, 3);
    ud_wal_close(wal);

    /* Header damage on the active segment that holds records: corruption, never a silent loss. */
    patch_byte(p3, 20, 0x01);
    struct ud_wal *w = NULL;
    assert_int_equal(try_open(dir, SEG_SMALL, &w, err), UD_ECORRUPT);
    assert_non_null(strstr(err, "0000000003.seg"));
    free(zero);
    free(p2);
    free(p3);
    ud_test_rmtree(dir);
    free(dir);
}

/* LSNs continue across many close/reopen cycles, with rotations and a custom start LSN. */
static void test_lsn_continuity(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("wal-continuity");
    const uint64_t base = 1000;
    struct ud_wal *wal = open_wal(dir, SEG_SMALL, UD_WAL_SYNC_NONE, base);
    assert_int_equal(ud_wal_first_lsn(wal), base);
    assert_int_equal(ud_wal_last_lsn(wal), base - 1);
    uint64_t next = base;
    char err[UD_ERRMSG_SIZE];
    for (int cycle = 0; cycle < 25; cycle++) {
        for (int j = 0; j < cycle % 7; j++) {
            assert_int_equal(append_rec(wal, next - base, rec_len(next - base), NULL), next);
            next++;
        }
        if (cycle % 5 == 2)
            assert_int_equal(ud_wal_rotate(wal, err), 0);
        ud_wal_close(wal);
        /* start_lsn only applies to an empty directory. */
        wal = open_wal(dir, SEG_SMALL, UD_WAL_SYNC_NONE, cycle % 2 ? 1 : 77777);
        assert_int_equal(ud_wal_first_lsn(wal), base);
        assert_int_equal(ud_wal_last_lsn(wal), next - 1);
    }
    read_check_range(wal, base, next - 1, base, 0);
    ud_wal_close(wal);
    ud_test_rmtree(dir);
    free(dir);
}

/* Appends in place (ud_wal_reserve) leave exactly the bytes ud_wal_append does, and a cancelled
 * reservation leaves no trace: not in the files (a second log written with ud_wal_append only is
 * identical past the headers' timestamps), nor in the LSNs, nor in the sparse index (every LSN
 * reads back from a fresh reader, after a reopen that verifies every sealed segment). Cancelled
 * reservations are longer than the record that follows them, or as long when that would rotate
 * the log: some of them do rotate it, as the record would. */
static void test_append_in_place(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("wal-in-place");
    char *ref_dir = ud_test_tmpdir("wal-in-place-ref");
    struct ud_wal *wal = open_wal(dir, SEG_SMALL, UD_WAL_SYNC_NONE, 1);
    struct ud_wal *ref = open_wal(ref_dir, SEG_SMALL, UD_WAL_SYNC_NONE, 1);
    const uint64_t n = 1000;
    uint32_t cancelled = 0;
    for (uint64_t tag = 0; tag < n; tag++) {
        size_t len = rec_len(tag);
        uint8_t *data;
        if (tag % 3 == 0) {
            /* Longer than the record when that does not rotate: its tail must be erased. */
            struct ud_wal_stats now;
            ud_wal_stats(wal, &now);
            size_t clen = now.active_offset + frame_size(len + 100) <= SEG_SMALL ? len + 100 : len;
            assert_int_equal(ud_wal_reserve(wal, clen, &data), 0);
            memset(data, 0xAB, clen);
            ud_wal_cancel(wal);
            cancelled++;
        }
        uint64_t lsn = 0;
        struct ud_wal_pos pos, ref_pos;
        if (tag % 2 == 0) {
            assert_int_equal(ud_wal_reserve(wal, len, &data), 0);
            fill_record(tag, data, len);
            ud_wal_commit(wal, &lsn, &pos);
        } else {
            uint8_t *buf = malloc(len);
            assert_non_null(buf);
            fill_record(tag, buf, len);
            assert_int_equal(ud_wal_append(wal, buf, len, &lsn, &pos), 0);
            free(buf);
        }
        assert_int_equal(lsn, tag + 1);
        uint8_t *buf = malloc(len);
        assert_non_null(buf);
        fill_record(tag, buf, len);
        assert_int_equal(ud_wal_append(ref, buf, len, &lsn, &ref_pos), 0);
        free(buf);
        assert_int_equal(pos.segment_id, ref_pos.segment_id);
        assert_int_equal(pos.offset, ref_pos.offset);
    }
    struct ud_wal_stats st, ref_st;
    ud_wal_stats(wal, &st);
    ud_wal_stats(ref, &ref_st);
    assert_true(st.segments > 3);
    assert_int_equal(st.segments, ref_st.segments);
    assert_int_equal(st.bytes_appended, ref_st.bytes_appended);
    assert_true(cancelled > 300);
    /* A record too long for a segment is refused before anything is held. */
    uint8_t *data;
    assert_int_equal(ud_wal_reserve(wal, MAX_REC(SEG_SMALL) + 1, &data), UD_ELIMIT);
    assert_int_equal(ud_wal_reserve(wal, 0, &data), UD_EINVAL);
    ud_wal_close(wal);
    ud_wal_close(ref);

    for (uint32_t id = 1; id <= st.segments; id++) {
        char *a = seg_path(dir, id), *b = seg_path(ref_dir, id);
        size_t na, nb;
        uint8_t *fa = read_file(a, &na), *fb = read_file(b, &nb);
        assert_int_equal(na, nb);
        struct ud_wal_header ha, hb;
        char err[UD_ERRMSG_SIZE];
        assert_int_equal(ud_wal_header_decode(fa, na, &ha, err), 0);
        assert_int_equal(ud_wal_header_decode(fb, nb, &hb, err), 0);
        assert_int_equal(ha.flags, hb.flags);
        assert_int_equal(ha.write_offset, hb.write_offset);
        assert_int_equal(ha.entry_count, hb.entry_count);
        assert_int_equal(ha.first_lsn, hb.first_lsn);
        assert_memory_equal(fa + HDR, fb + HDR, na - HDR);
        free(fa);
        free(fb);
        free(a);
        free(b);
    }

    wal = open_wal(dir, SEG_SMALL, UD_WAL_SYNC_NONE, 1);
    assert_int_equal(ud_wal_last_lsn(wal), n);
    for (uint64_t from = 1; from <= n; from += 37)
        read_check_range(wal, from, n, 1, 0);
    ud_wal_close(wal);
    ud_test_rmtree(dir);
    ud_test_rmtree(ref_dir);
    free(dir);
    free(ref_dir);
}

/* --- retention and backup --------------------------------------------------------------------- */

static uint32_t fill_segments(struct ud_wal *wal, uint32_t nseg, uint64_t *next)
{
    struct ud_wal_stats st;
    for (;;) {
        ud_wal_stats(wal, &st);
        if (st.segments >= nseg)
            return st.segments;
        append_rec(wal, *next, rec_len(*next), NULL);
        (*next)++;
    }
}

static void test_retention(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("wal-retention");
    struct ud_wal *wal = open_wal(dir, SEG_SMALL, UD_WAL_SYNC_NONE, 0);
    uint64_t next = 1;
    fill_segments(wal, 10, &next);
    uint64_t last = next - 1;

    /* A reader in segment 1 and a reader in segment 4 pin their segments. */
    struct ud_wal_reader *r1, *r4;
    assert_int_equal(ud_wal_reader_open(wal, 1, 0, &r1), 0);
    const uint8_t *data;
    uint32_t len;
    uint64_t lsn;
    assert_int_equal(ud_wal_reader_next(r1, &data, &len, &lsn), 0);

    char err[UD_ERRMSG_SIZE];
    uint32_t removed = 99;
    struct ud_wal_retention none = {0, 0};
    assert_int_equal(ud_wal_retain(wal, &none, UINT64_MAX, &removed, err), 0);
    assert_int_equal(removed, 0);

    /* keep_lsn protects segments holding records >= keep_lsn even beyond max_segments. */
    struct ud_wal_retention by_count = {.max_segments = 3};
    assert_int_equal(ud_wal_retain(wal, &by_count, 1, &removed, err), 0);
    assert_int_equal(removed, 0);
    uint64_t keep = 0;
    {
        /* LSN of the first record of segment 3: everything below is in segments 1 and 2. */
        struct ud_wal_reader *probe;
        assert_int_equal(ud_wal_reader_open(wal, 1, 0, &probe), 0);
        ud_wal_reader_close(probe);
    }
    /* Find segment boundaries by reading positions through a fresh log scan. */
    char *p3 = seg_path(dir, 3);
    size_t size;
    uint8_t *f3 = read_file(p3, &size);
    keep = ud_get_le64(f3 + 44); /* first LSN of segment 3 */
    free(f3);
    free(p3);
    assert_int_equal(ud_wal_retain(wal, &by_count, keep, &removed, err), 0);
    assert_int_equal(removed, 2);
    assert_int_equal(ud_wal_first_lsn(wal), keep);
    char *p1 = seg_path(dir, 1), *p2 = seg_path(dir, 2);
    assert_false(file_exists(p1));
    assert_false(file_exists(p2));
    struct ud_wal_reader *r;
    assert_int_equal(ud_wal_reader_open(wal, 1, 0, &r), UD_EGONE);
    assert_int_equal(ud_wal_reader_open(wal, keep - 1, 0, &r), UD_EGONE);
    assert_int_equal(ud_wal_reader_open(wal, keep, 0, &r4), 0);

    /* Now by count with no keep constraint: 9 sealed - 3 kept. */
    assert_int_equal(ud_wal_retain(wal, &by_count, UINT64_MAX, &removed, err), 0);
    assert_int_equal(removed, 9 - 2 - 3);
    struct ud_wal_stats st;
    ud_wal_stats(wal, &st);
    assert_int_equal(st.segments, 4);

    /* The reader on removed segment 1 still reads it to its end, then learns the rest is gone. */
    uint64_t expect = 2;
    int rc;
    while ((rc = ud_wal_reader_next(r1, &data, &len, &lsn)) == 0) {
        assert_int_equal(lsn, expect);
        check_rec(data, len, expect, rec_len(expect));
        expect++;
    }
    assert_int_equal(rc, UD_EGONE);
    assert_true(expect > 2 && expect <= keep);
    ud_wal_reader_close(r1);
    /* Reader r4 (segment 3, removed) reads segment 3 then gets EGONE for segment 4. */
    while ((rc = ud_wal_reader_next(r4, &data, &len, &lsn)) == 0)
        check_rec(data, len, lsn, rec_len(lsn));
    assert_int_equal(rc, UD_EGONE);
    ud_wal_reader_close(r4);

    /* By age: nothing is old enough for an hour's limit; all sealed ones for 1 ms but the
     * newest, which holds the newest durable record while the active segment's are unsynced. */
    struct ud_wal_retention hour = {.max_age_ms = 3600 * 1000};
    assert_int_equal(ud_wal_retain(wal, &hour, UINT64_MAX, &removed, err), 0);
    assert_int_equal(removed, 0);
    struct timespec ts = {.tv_sec = 0, .tv_nsec = 20 * 1000000};
    nanosleep(&ts, NULL);
    struct ud_wal_retention ms = {.max_age_ms = 1};
    assert_int_equal(ud_wal_retain(wal, &ms, UINT64_MAX, &removed, err), 0);
    assert_int_equal(removed, 2);
    assert_int_equal(ud_wal_sync_all(wal, err), 0);
    assert_int_equal(ud_wal_retain(wal, &ms, UINT64_MAX, &removed, err), 0);
    assert_int_equal(removed, 1);
    ud_wal_stats(wal, &st);
    assert_int_equal(st.segments, 1);
    uint64_t first = ud_wal_first_lsn(wal);
    read_check_range(wal, first, last, 0, 0);
    ud_wal_close(wal);

    /* Reopen: the retained run opens and LSNs continue. */
    wal = open_wal(dir, SEG_SMALL, UD_WAL_SYNC_NONE, 0);
    assert_int_equal(ud_wal_first_lsn(wal), first);
    assert_int_equal(ud_wal_last_lsn(wal), last);
    assert_int_equal(append_rec(wal, last + 1, rec_len(last + 1), NULL), last + 1);
    ud_wal_close(wal);
    free(p1);
    free(p2);
    ud_test_rmtree(dir);
    free(dir);
}

/* Retention keeps the segment holding the newest record, flushed and sealed as it may be, when
 * only an empty segment follows it: the record stays readable, also after a reopen. */
static void test_retention_keeps_the_newest_record(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("wal-retain-newest");
    struct ud_wal *wal = open_wal(dir, SEG_SMALL, UD_WAL_SYNC_NONE, 0);
    uint64_t next = 1;
    fill_segments(wal, 3, &next);
    uint64_t last = next - 1;
    char err[UD_ERRMSG_SIZE];
    assert_int_equal(ud_wal_rotate(wal, err), 0); /* segment 3 sealed, 4 active and empty */
    struct timespec ts = {.tv_sec = 0, .tv_nsec = 20 * 1000000};
    nanosleep(&ts, NULL);
    /* Every record flushed (keep_lsn past the last), every sealed segment old enough. */
    struct ud_wal_retention ms = {.max_age_ms = 1};
    uint32_t removed = 0;
    assert_int_equal(ud_wal_retain(wal, &ms, last + 1, &removed, err), 0);
    assert_int_equal(removed, 2);
    for (int reopen = 0; reopen < 2; reopen++) {
        assert_int_equal(ud_wal_last_lsn(wal), last);
        struct ud_wal_reader *r;
        assert_int_equal(ud_wal_reader_open(wal, last, 0, &r), 0);
        const uint8_t *data;
        uint32_t len;
        uint64_t lsn;
        assert_int_equal(ud_wal_reader_next(r, &data, &len, &lsn), 0);
        assert_int_equal(lsn, last);
        check_rec(data, len, last, rec_len(last));
        ud_wal_reader_close(r);
        ud_wal_close(wal);
        if (reopen == 0)
            wal = open_wal(dir, SEG_SMALL, UD_WAL_SYNC_NONE, 0);
    }
    ud_test_rmtree(dir);
    free(dir);
}

/*
 * Retention keeps the segment of the newest DURABLE record. In mode none the records after a seal
 * are in memory only: a power cut may lose every one of them, and had the sealed segment before
 * them gone (all flushed, old enough), the reopened WAL would hold no record at all. The newest
 * record is what a namespace reads its raft position from (docs/engine.md "Retention"): without
 * it raft would apply its log again at new LSNs. Each seed loses a different part of the unsynced
 * record.
 */
static void test_retention_keeps_the_newest_durable_record(void **state)
{
    (void)state;
    for (uint64_t seed = 1; seed <= 5; seed++) {
        char *dir = ud_test_tmpdir("wal-retain-durable");
        struct ud_fs_powerloss *pl;
        assert_int_equal(ud_fs_powerloss_new(0, &pl), 0);
        struct ud_wal_options o = {.dir = dir,
                                   .segment_size = SEG_SMALL,
                                   .sync_mode = UD_WAL_SYNC_NONE,
                                   .index_interval = 8,
                                   .fs = ud_fs_powerloss_fs(pl)};
        struct ud_wal *wal = NULL;
        char err[UD_ERRMSG_SIZE] = "";
        assert_int_equal(ud_wal_open(&o, &wal, err), 0);
        uint64_t next = 1;
        /* The last append rotated: segment 1 sealed (and synced), one record in segment 2. */
        fill_segments(wal, 2, &next);
        uint64_t sealed_last = next - 2;
        assert_int_equal(ud_wal_durable_lsn(wal), sealed_last);
        struct timespec ts = {.tv_sec = 0, .tv_nsec = 5 * 1000000};
        nanosleep(&ts, NULL);
        /* Every record flushed (keep_lsn past the last), segment 1 old enough. */
        struct ud_wal_retention ms = {.max_age_ms = 1};
        uint32_t removed = 9;
        assert_int_equal(ud_wal_retain(wal, &ms, next, &removed, err), 0);
        assert_int_equal(removed, 0);
        assert_int_equal(ud_fs_powerloss_crash(pl, seed), 0);
        ud_wal_close(wal);
        ud_fs_powerloss_free(pl);

        wal = open_wal(dir, SEG_SMALL, UD_WAL_SYNC_NONE, 0);
        assert_true(ud_wal_last_lsn(wal) >= sealed_last);
        read_check_range(wal, sealed_last, sealed_last, 0, 0);
        ud_wal_close(wal);
        ud_test_rmtree(dir);
        free(dir);
    }
}

/*
 * ud_wal_sync_all (every flush checkpoint, every raft snapshot) and ud_wal_close leave the active
 * segment's header as it is on disk: rewritten in place, a power cut tearing its sector would leave
 * a newest segment whose header checksum fails in front of valid frames, which recovery refuses.
 * Recovery scans the active segment's frames and does not need its offset or count
 * (docs/format-wal.md).
 */
static void test_sync_all_leaves_the_active_header(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("wal-sync-all-header");
    struct ud_wal *wal = open_wal(dir, SEG_SMALL, UD_WAL_SYNC_NONE, 0);
    char *p1 = seg_path(dir, 1);
    size_t size;
    uint8_t *created = read_file(p1, &size);
    for (uint64_t i = 1; i <= 10; i++)
        append_rec(wal, i, rec_len(i), NULL);
    char err[UD_ERRMSG_SIZE];
    assert_int_equal(ud_wal_sync_all(wal, err), 0);
    uint8_t *synced = read_file(p1, &size);
    assert_memory_equal(synced, created, UD_WAL_SEGMENT_HEADER_SIZE);
    free(synced);
    /* Nor does a clean close: recovery scans the frames, whatever count the header holds. */
    ud_wal_close(wal);
    synced = read_file(p1, &size);
    assert_memory_equal(synced, created, UD_WAL_SEGMENT_HEADER_SIZE);
    free(synced);
    wal = open_wal(dir, SEG_SMALL, UD_WAL_SYNC_NONE, 0);
    read_check_range(wal, 1, 10, 0, 0);
    ud_wal_close(wal);
    free(created);
    free(p1);
    ud_test_rmtree(dir);
    free(dir);
}

/* A path that exists as a file is refused with its name, for the log's directory and for a
 * backup's destination (mkdir's EEXIST alone would let both go on). */
static void test_dir_is_a_file(void **state)
{
    (void)state;
    char *root = ud_test_tmpdir("wal-dir-file");
    char *file = path_in(root, "plain");
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fclose(f);
    char err[UD_ERRMSG_SIZE];
    struct ud_wal *wal = NULL;
    assert_int_equal(try_open(file, SEG_SMALL, &wal, err), UD_EINVAL);
    assert_null(wal);
    assert_non_null(strstr(err, "is not a directory"));
    assert_non_null(strstr(err, file));

    char *dir = path_in(root, "wal");
    wal = open_wal(dir, SEG_SMALL, UD_WAL_SYNC_NONE, 0);
    uint64_t next = 1;
    fill_segments(wal, 2, &next);
    uint32_t copied = 7;
    assert_int_equal(ud_wal_backup(wal, file, &copied, err), UD_EINVAL);
    assert_int_equal(copied, 0);
    assert_non_null(strstr(err, "is not a directory"));
    ud_wal_close(wal);
    free(dir);
    free(file);
    ud_test_rmtree(root);
    free(root);
}

static void test_backup(void **state)
{
    (void)state;
    char *root = ud_test_tmpdir("wal-backup");
    char *dir = path_in(root, "wal");
    char *dest = path_in(root, "backup/nested");
    struct ud_wal *wal = open_wal(dir, SEG_SMALL, UD_WAL_SYNC_NONE, 0);
    uint64_t next = 1;
    uint32_t nseg = fill_segments(wal, 5, &next);
    uint32_t copied = 0;
    char err[UD_ERRMSG_SIZE];
    assert_int_equal(ud_wal_backup(wal, dest, &copied, err), 0);
    assert_int_equal(copied, nseg - 1);
    /* Appends continue; the copies are byte-identical to the sealed files. */
    append_rec(wal, next, rec_len(next), NULL);
    for (uint32_t id = 1; id <= nseg; id++) {
        char *a = seg_path(dir, id), *b = seg_path(dest, id);
        if (id == nseg) {
            assert_false(file_exists(b));
        } else {
            size_t na, nb;
            uint8_t *fa = read_file(a, &na), *fb = read_file(b, &nb);
            assert_int_equal(na, nb);
            assert_memory_equal(fa, fb, na);
            free(fa);
            free(fb);
        }
        free(a);
        free(b);
    }
    /* A non-empty destination is refused. */
    assert_int_equal(ud_wal_backup(wal, dest, &copied, err), UD_EEXIST);
    assert_non_null(strstr(err, dest));

    /* The backup is a log of its own: it opens and holds the sealed records. */
    uint64_t sealed_last;
    {
        char *p = seg_path(dest, nseg - 1);
        size_t size;
        uint8_t *f = read_file(p, &size);
        sealed_last = ud_get_le64(f + 44) + ud_get_le64(f + 32) - 1;
        free(f);
        free(p);
    }
    struct ud_wal *b = open_wal(dest, SEG_SMALL, UD_WAL_SYNC_NONE, 0);
    assert_int_equal(ud_wal_last_lsn(b), sealed_last);
    read_check_range(b, 1, sealed_last, 0, 0);
    ud_wal_close(b);
    ud_wal_close(wal);
    free(dir);
    free(dest);
    ud_test_rmtree(root);
    free(root);
}

/* Seals segments until the WAL holds nseg, opened with segment size seg: a WAL reopened with
 * another size keeps its existing files' sizes, so segments of several sizes follow each other. */
static void fill_with_size(const char *dir, uint64_t seg, uint32_t nseg, uint64_t *next)
{
    struct ud_wal *wal = open_wal(dir, seg, UD_WAL_SYNC_NONE, 0);
    fill_segments(wal, nseg, next);
    ud_wal_close(wal);
}

static int dir_entries(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return n;
}

/*
 * A backup that fails partway removes the files it copied, so a retry into the same directory
 * works; and segments at or below afterSegmentId are never copied, so a backup of the last ones
 * needs room for those only. The file size limit (RLIMIT_FSIZE, SIGXFSZ ignored) stands in for
 * a full disk: segments 1-3 are 64 KiB, 4-6 256 KiB, 7-8 64 KiB, and files may not pass 128 KiB.
 */
static void test_backup_partial(void **state)
{
    (void)state;
    char *root = ud_test_tmpdir("wal-backup-partial");
    char *dir = path_in(root, "wal");
    char *dest = path_in(root, "backup");
    uint64_t next = 1;
    fill_with_size(dir, SEG_SMALL, 3, &next);
    fill_with_size(dir, 4 * SEG_SMALL, 6, &next);
    struct ud_wal *wal = open_wal(dir, SEG_SMALL, UD_WAL_SYNC_NONE, 0);
    fill_segments(wal, 9, &next);
    assert_int_equal(mkdir(dest, 0755), 0);
    int fd = open(dest, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    assert_true(fd >= 0);

    struct rlimit was, low;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &was), 0);
    low = was;
    low.rlim_cur = 2 * SEG_SMALL;
    void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &low), 0);
    char err[UD_ERRMSG_SIZE];
    uint32_t copied = 99, *ids = NULL;
    int rc_all = ud_wal_backup_at(wal, fd, dest, 0, &ids, &copied, err);
    int left = dir_entries(dest);
    uint32_t *tail = NULL, ntail = 0;
    int rc_tail = ud_wal_backup_at(wal, fd, dest, 6, &tail, &ntail, err);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &was), 0);
    signal(SIGXFSZ, old_handler);

    /* Segment 4 did not fit: 1-3 were copied, then removed again. */
    assert_int_equal(rc_all, UD_EIO);
    assert_null(ids);
    assert_int_equal(copied, 0);
    assert_int_equal(left, 0);
    /* Segments 7 and 8 fit, and nothing else was written. */
    assert_int_equal(rc_tail, 0);
    assert_int_equal(ntail, 2);
    assert_int_equal(tail[0], 7);
    assert_int_equal(tail[1], 8);
    assert_int_equal(dir_entries(dest), 2);
    free(tail);

    /* Without the limit, everything into a fresh directory. */
    char *dest2 = path_in(root, "backup2");
    assert_int_equal(ud_wal_backup(wal, dest2, &copied, err), 0);
    assert_int_equal(copied, 8);
    close(fd);
    ud_wal_close(wal);
    free(dest2);
    free(dir);
    free(dest);
    ud_test_rmtree(root);
    free(root);
}

struct backup_arg {
    struct ud_wal *wal;
    int fd;
    const char *dest;
    int rc;
    char err[UD_ERRMSG_SIZE];
};

static void *backup_main(void *p)
{
    struct backup_arg *a = p;
    uint32_t copied = 0, *ids = NULL;
    a->rc = ud_wal_backup_at(a->wal, a->fd, a->dest, 0, &ids, &copied, a->err);
    free(ids);
    return NULL;
}

/*
 * Two backups into one directory: the one that finds it taken is refused (UD_EEXIST, 409 over
 * HTTP) naming it, whatever their timing, and writes nothing. The first one holds the lock here
 * through its own open of the directory, as a backup running on another thread does.
 */
static void test_backup_busy_dir(void **state)
{
    (void)state;
    char *root = ud_test_tmpdir("wal-backup-busy");
    char *dir = path_in(root, "wal");
    char *dest = path_in(root, "backup");
    struct ud_wal *wal = open_wal(dir, SEG_SMALL, UD_WAL_SYNC_NONE, 0);
    uint64_t next = 1;
    uint32_t nseg = fill_segments(wal, 3, &next);
    assert_int_equal(mkdir(dest, 0755), 0);
    int first = open(dest, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    assert_true(first >= 0);
    assert_int_equal(flock(first, LOCK_EX | LOCK_NB), 0);

    struct backup_arg a = {.wal = wal, .dest = dest};
    a.fd = open(dest, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    assert_true(a.fd >= 0);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, backup_main, &a), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(a.rc, UD_EEXIST);
    assert_non_null(strstr(a.err, dest));
    assert_int_equal(dir_entries(dest), 0);

    /* Once the first one is done, the directory takes a backup. */
    assert_int_equal(flock(first, LOCK_UN), 0);
    assert_int_equal(pthread_create(&t, NULL, backup_main, &a), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(a.rc, 0);
    assert_int_equal(dir_entries(dest), (int)nseg - 1);
    close(a.fd);
    close(first);
    ud_wal_close(wal);
    free(dir);
    free(dest);
    ud_test_rmtree(root);
    free(root);
}

/* --- group commit and failures ---------------------------------------------------------------- */

#define GC_THREADS    8
#define GC_PER_THREAD 150

/* A committer: `records` records of `len` (<= 1000) bytes, each appended and synced. */
struct gc_arg {
    struct ud_wal *wal;
    int id;
    int records;
    size_t len;
    int failures;
};

static void *gc_main(void *p)
{
    struct gc_arg *a = p;
    uint8_t buf[1000];
    char err[UD_ERRMSG_SIZE];
    for (int i = 0; i < a->records; i++) {
        fill_record((uint64_t)a->id * 100000 + (uint64_t)i, buf, a->len);
        uint64_t lsn;
        if (ud_wal_append(a->wal, buf, a->len, &lsn, NULL) != 0 ||
            ud_wal_sync(a->wal, lsn, err) != 0 || ud_wal_durable_lsn(a->wal) < lsn)
            a->failures++;
    }
    return NULL;
}

/* Reads the whole log: exactly `per` records of `len` bytes from each of `threads` committers
 * (gc_main), each committer's in its own order, and nothing else. */
static void check_thread_records(struct ud_wal *wal, int threads, int per, size_t len)
{
    struct ud_wal_reader *r;
    assert_int_equal(ud_wal_reader_open(wal, 1, 0, &r), 0);
    int seen[64] = {0};
    assert_true(threads <= 64 && len <= 1000);
    const uint8_t *data;
    uint32_t got;
    uint64_t lsn;
    uint8_t buf[1000];
    while (ud_wal_reader_next(r, &data, &got, &lsn) == 0) {
        bool matched = false;
        for (int i = 0; i < threads && !matched; i++) {
            if (seen[i] >= per)
                continue;
            fill_record((uint64_t)i * 100000 + (uint64_t)seen[i], buf, len);
            if (got == len && memcmp(data, buf, len) == 0) {
                seen[i]++;
                matched = true;
            }
        }
        assert_true(matched);
    }
    for (int i = 0; i < threads; i++)
        assert_int_equal(seen[i], per);
    ud_wal_reader_close(r);
}

static void test_group_commit(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("wal-gc");
    struct ud_wal *wal = open_wal(dir, 1u << 20, UD_WAL_SYNC_ALWAYS, 0);
    pthread_t t[GC_THREADS];
    struct gc_arg args[GC_THREADS];
    for (int i = 0; i < GC_THREADS; i++) {
        args[i] = (struct gc_arg){.wal = wal, .id = i, .records = GC_PER_THREAD, .len = 256};
        pthread_create(&t[i], NULL, gc_main, &args[i]);
    }
    for (int i = 0; i < GC_THREADS; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(args[i].failures, 0);
    }
    struct ud_wal_stats st;
    ud_wal_stats(wal, &st);
    assert_int_equal(st.last_lsn, GC_THREADS * GC_PER_THREAD);
    assert_int_equal(st.durable_lsn, st.last_lsn);
    /* Concurrent syncs share fsyncs (never more than one per record, plus rotations). */
    assert_true(st.syncs <= (uint64_t)GC_THREADS * GC_PER_THREAD + 2 * st.segments + 2);
    print_message("# group commit: %d records, %llu fsyncs\n", GC_THREADS * GC_PER_THREAD,
                  (unsigned long long)st.syncs);
    /* The rounds are among those fsyncs (the others: segment creations and seals), each timed;
     * one more record synced once the log is quiet (below) is exactly one more round. */
    assert_true(st.sync_rounds >= 1 && st.sync_rounds <= st.syncs && st.sync_max_ns > 0);
    /* Every record is readable, each thread's records in its own order. */
    check_thread_records(wal, GC_THREADS, GC_PER_THREAD, 256);
    uint64_t lsn;
    uint8_t buf[256];
    {
        char err[UD_ERRMSG_SIZE];
        fill_record(999999, buf, sizeof buf);
        assert_int_equal(ud_wal_append(wal, buf, sizeof buf, &lsn, NULL), 0);
        assert_int_equal(ud_wal_sync(wal, lsn, err), 0);
        struct ud_wal_stats after;
        ud_wal_stats(wal, &after);
        assert_int_equal(after.sync_rounds, st.sync_rounds + 1);
        assert_true(after.sync_ns > st.sync_ns);
        assert_true(after.syncs > st.syncs);
    }
    ud_wal_close(wal);
    ud_test_rmtree(dir);
    free(dir);
}

/* A file layer over the real one that can fail syncs or segment creation on demand. */
struct faulty_fs {
    struct ud_fs fs;
    atomic_int fail_sync;
    atomic_int fail_write;
    atomic_int nospace;
    atomic_int syncs;
};

static struct faulty_fs faulty;

static int faulty_open(struct ud_fs *fs, const char *path, int create, uint64_t size,
                       struct ud_fs_file **file, uint8_t **map, uint64_t *map_size, char *errmsg)
{
    (void)fs;
    if (create && atomic_load(&faulty.nospace))
        return ud_errf(errmsg, UD_ENOSPC, "preallocate %s: No space left on device", path);
    return ud_fs_posix()->open(ud_fs_posix(), path, create, size, file, map, map_size, errmsg);
}

static int faulty_sync(struct ud_fs *fs, struct ud_fs_file *file, uint64_t off, uint64_t len,
                       char *errmsg)
{
    (void)fs;
    atomic_fetch_add(&faulty.syncs, 1);
    if (atomic_load(&faulty.fail_sync))
        return ud_errf(errmsg, UD_EIO, "sync: Input/output error (injected)");
    return ud_fs_posix()->sync(ud_fs_posix(), file, off, len, errmsg);
}

static int faulty_write(struct ud_fs *fs, struct ud_fs_file *file, uint64_t off, const void *data,
                        uint64_t len, char *errmsg)
{
    (void)fs;
    if (atomic_load(&faulty.fail_write))
        return ud_errf(errmsg, UD_EIO, "write: Input/output error (injected)");
    return ud_fs_posix()->write(ud_fs_posix(), file, off, data, len, errmsg);
}

static void faulty_done_writing(struct ud_fs *fs, struct ud_fs_file *file)
{
    (void)fs;
    ud_fs_posix()->done_writing(ud_fs_posix(), file);
}

static void faulty_close(struct ud_fs *fs, struct ud_fs_file *file)
{
    (void)fs;
    ud_fs_posix()->close(ud_fs_posix(), file);
}

static int faulty_sync_dir(struct ud_fs *fs, const char *dir, char *errmsg)
{
    (void)fs;
    if (atomic_load(&faulty.fail_sync))
        return ud_errf(errmsg, UD_EIO, "fsync directory %s: injected", dir);
    return ud_fs_posix()->sync_dir(ud_fs_posix(), dir, errmsg);
}

static int faulty_unlink(struct ud_fs *fs, const char *path, char *errmsg)
{
    (void)fs;
    return ud_fs_posix()->unlink(ud_fs_posix(), path, errmsg);
}

static struct ud_wal *open_faulty(const char *dir, enum ud_wal_sync_mode mode)
{
    faulty.fs = (struct ud_fs){.open = faulty_open,
                               .sync = faulty_sync,
                               .write = faulty_write,
                               .done_writing = faulty_done_writing,
                               .close = faulty_close,
                               .sync_dir = faulty_sync_dir,
                               .unlink = faulty_unlink};
    atomic_store(&faulty.fail_sync, 0);
    atomic_store(&faulty.fail_write, 0);
    atomic_store(&faulty.nospace, 0);
    struct ud_wal_options o = {
        .dir = dir, .segment_size = SEG_SMALL, .sync_mode = mode, .fs = &faulty.fs};
    struct ud_wal *wal = NULL;
    char err[UD_ERRMSG_SIZE];
    assert_int_equal(ud_wal_open(&o, &wal, err), 0);
    return wal;
}

/* A failed fsync fails the log for good: the fsync is never retried, appends and syncs refuse. */
static void test_failed_sync_is_sticky(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("wal-failed");
    struct ud_wal *wal = open_faulty(dir, UD_WAL_SYNC_ALWAYS);
    char err[UD_ERRMSG_SIZE];
    uint64_t lsn = append_rec(wal, 1, 100, NULL);
    assert_int_equal(ud_wal_sync(wal, lsn, err), 0);
    lsn = append_rec(wal, 2, 100, NULL);
    atomic_store(&faulty.fail_sync, 1);
    assert_int_equal(ud_wal_sync(wal, lsn, err), UD_EIO);
    assert_non_null(strstr(err, "injected"));
    assert_int_equal(ud_wal_durable_lsn(wal), 1);
    atomic_store(&faulty.fail_sync, 0);
    int syncs_before = atomic_load(&faulty.syncs);
    assert_int_equal(ud_wal_sync(wal, lsn, err), UD_EIO);
    assert_int_equal(ud_wal_sync_all(wal, err), UD_EIO);
    uint8_t b = 1;
    assert_int_equal(ud_wal_append(wal, &b, 1, &lsn, NULL), UD_EIO);
    assert_int_equal(ud_wal_rotate(wal, err), UD_EIO);
    assert_int_equal(atomic_load(&faulty.syncs), syncs_before);
    /* A default reader never sees the record whose fsync failed. */
    struct ud_wal_reader *r;
    assert_int_equal(ud_wal_reader_open(wal, 1, 0, &r), 0);
    const uint8_t *data;
    uint32_t len;
    assert_int_equal(ud_wal_reader_next(r, &data, &len, &lsn), 0);
    assert_int_equal(ud_wal_reader_next(r, &data, &len, &lsn), UD_EAGAIN);
    ud_wal_reader_close(r);
    ud_wal_close(wal);
    assert_int_equal(atomic_load(&faulty.syncs), syncs_before); /* close does not sync either */
    ud_test_rmtree(dir);
    free(dir);
}

/* Appends are built in memory and written into the segment file later: a failed write fails the
 * log as a failed fsync does, and a reader that needed the record says so instead of reading
 * zeros from the file. */
static void test_failed_write_is_sticky(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("wal-failedwrite");
    struct ud_wal *wal = open_faulty(dir, UD_WAL_SYNC_NONE);
    char err[UD_ERRMSG_SIZE];
    uint64_t lsn = append_rec(wal, 1, 100, NULL);
    assert_int_equal(ud_wal_sync_all(wal, err), 0);
    append_rec(wal, 2, 100, NULL);
    atomic_store(&faulty.fail_write, 1);
    struct ud_wal_reader *r;
    assert_int_equal(ud_wal_reader_open(wal, 1, 0, &r), 0);
    const uint8_t *data;
    uint32_t len;
    assert_int_equal(ud_wal_reader_next(r, &data, &len, &lsn), 0); /* in the file already */
    check_rec(data, len, 1, 100);
    assert_int_equal(ud_wal_reader_next(r, &data, &len, &lsn), UD_EIO);
    ud_wal_reader_close(r);
    atomic_store(&faulty.fail_write, 0);
    uint8_t b = 1;
    assert_int_equal(ud_wal_append(wal, &b, 1, &lsn, NULL), UD_EIO);
    assert_int_equal(ud_wal_sync_all(wal, err), UD_EIO);
    assert_non_null(strstr(err, "injected"));
    /* The log stays failed, but once the disk takes writes again the record published before
     * the failure reads back: the stage still holds it. */
    assert_int_equal(ud_wal_reader_open(wal, 1, 0, &r), 0);
    assert_int_equal(ud_wal_reader_next(r, &data, &len, &lsn), 0);
    check_rec(data, len, 1, 100);
    assert_int_equal(ud_wal_reader_next(r, &data, &len, &lsn), 0);
    assert_int_equal(lsn, 2);
    check_rec(data, len, 2, 100);
    ud_wal_reader_close(r);
    assert_int_equal(ud_wal_append(wal, &b, 1, &lsn, NULL), UD_EIO);
    ud_wal_close(wal);
    ud_test_rmtree(dir);
    free(dir);
}

/* Descriptors of this process open on files under dir. */
static int fds_under(const char *dir)
{
    int n = 0;
    for (int fd = 0; fd < 4096; fd++) {
        char link[64], target[4096];
        snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
        ssize_t len = readlink(link, target, sizeof target - 1);
        if (len <= 0)
            continue;
        target[len] = '\0';
        if (strncmp(target, dir, strlen(dir)) == 0)
            n++;
    }
    return n;
}

/* A reopened log holds a descriptor for its active segment only (sealed ones are never written
 * again), taken at the open: a shortage of descriptors shows as a failed open, not as a failed
 * write that fails the log later. */
static void test_reopen_keeps_active_descriptor_only(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("wal-fds");
    struct ud_wal *wal = open_wal(dir, SEG_SMALL, UD_WAL_SYNC_NONE, 0);
    uint64_t n = 0;
    struct ud_wal_stats st;
    do {
        append_rec(wal, ++n, 1000, NULL);
        ud_wal_stats(wal, &st);
    } while (st.segments < 4);
    ud_wal_close(wal);
    assert_int_equal(fds_under(dir), 0);

    wal = open_wal(dir, SEG_SMALL, UD_WAL_SYNC_NONE, 0);
    assert_int_equal(fds_under(dir), 1);
    uint64_t lsn = append_rec(wal, ++n, 1000, NULL);
    assert_int_equal(lsn, n);
    char err[UD_ERRMSG_SIZE];
    int rc = ud_wal_sync_all(wal, err);
    if (rc != 0)
        fail_msg("sync: %s", err);
    ud_wal_close(wal);
    wal = open_wal(dir, SEG_SMALL, UD_WAL_SYNC_NONE, 0);
    struct ud_wal_reader *r;
    assert_int_equal(ud_wal_reader_open(wal, n, 0, &r), 0);
    const uint8_t *data;
    uint32_t len;
    assert_int_equal(ud_wal_reader_next(r, &data, &len, &lsn), 0);
    assert_int_equal(lsn, n);
    check_rec(data, len, n, 1000);
    ud_wal_reader_close(r);
    ud_wal_close(wal);
    ud_test_rmtree(dir);
    free(dir);
}

/* A failed seal (fsync at rotation) also fails the log. */
static void test_failed_rotation_sync(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("wal-failedrot");
    struct ud_wal *wal = open_faulty(dir, UD_WAL_SYNC_NONE);
    append_rec(wal, 1, 100, NULL);
    atomic_store(&faulty.fail_sync, 1);
    char err[UD_ERRMSG_SIZE];
    assert_int_equal(ud_wal_rotate(wal, err), UD_EIO);
    atomic_store(&faulty.fail_sync, 0);
    uint64_t lsn;
    uint8_t b = 1;
    assert_int_equal(ud_wal_append(wal, &b, 1, &lsn, NULL), UD_EIO);
    assert_int_equal(ud_wal_sync_all(wal, err), UD_EIO);
    ud_wal_close(wal);
    ud_test_rmtree(dir);
    free(dir);
}

/* A full disk at segment creation is reported and leaves the log usable once space returns. */
static void test_enospc_at_rotation(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("wal-enospc");
    struct ud_wal *wal = open_faulty(dir, UD_WAL_SYNC_NONE);
    uint64_t next = 1;
    struct ud_wal_pos pos = {.segment_id = 1, .offset = HDR};
    for (;; next++) {
        uint8_t buf[1000];
        fill_record(next, buf, 1000);
        uint64_t lsn;
        /* Arm the failure just before the segment fills. */
        if (pos.offset + 2 * frame_size(1000) > SEG_SMALL)
            atomic_store(&faulty.nospace, 1);
        int rc = ud_wal_append(wal, buf, 1000, &lsn, &pos);
        if (rc == UD_ENOSPC)
            break;
        assert_int_equal(rc, 0);
        assert_int_equal(lsn, next);
    }
    assert_int_equal(ud_wal_last_lsn(wal), next - 1);
    atomic_store(&faulty.nospace, 0);
    assert_int_equal(append_rec(wal, next, 1000, &pos), next);
    assert_int_equal(pos.segment_id, 2);
    ud_wal_close(wal);
    wal = open_wal(dir, SEG_SMALL, UD_WAL_SYNC_NONE, 0);
    assert_int_equal(ud_wal_last_lsn(wal), next);
    ud_wal_close(wal);
    ud_test_rmtree(dir);
    free(dir);
}

/* --- the append stage ------------------------------------------------------------------------ */

#define STAGE_SEG    (32u << 20)
#define STAGE_BIG_AT 5000u
#define STAGE_RECS   24000u

static size_t stage_len(uint64_t i)
{
    return i == STAGE_BIG_AT ? (9u << 20) : 500 + (size_t)(i * 37 % 1500);
}

static void stage_read_check(struct ud_wal_reader *r, uint64_t *next, uint64_t last)
{
    for (; *next <= last; (*next)++) {
        const uint8_t *data;
        uint32_t len;
        uint64_t lsn;
        int rc = ud_wal_reader_next(r, &data, &len, &lsn);
        if (rc != 0)
            fail_msg("next at LSN %llu: %s", (unsigned long long)*next, ud_strerror(rc));
        assert_int_equal(lsn, *next);
        check_rec(data, len, lsn, stage_len(lsn));
    }
}

/* Appends go through an 8 MiB stage in memory: 40 MiB of records (one larger than the stage)
 * wrap it several times and cross a segment; a tail reader, readers opened at records the file
 * may not hold yet, and a reopen all read back every record exactly. */
static void test_stage_wraps_and_large_records(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("wal-stage");
    struct ud_wal *wal = open_wal(dir, STAGE_SEG, UD_WAL_SYNC_NONE, 0);
    struct ud_wal_reader *tail;
    assert_int_equal(ud_wal_reader_open(wal, 1, 0, &tail), 0);
    uint64_t tail_next = 1;
    uint8_t *buf = malloc(9u << 20);
    assert_non_null(buf);
    uint32_t segments_seen = 1;
    for (uint64_t i = 1; i <= STAGE_RECS; i++) {
        size_t len = stage_len(i);
        fill_record(i, buf, len);
        uint64_t lsn;
        struct ud_wal_pos pos;
        assert_int_equal(ud_wal_append(wal, buf, len, &lsn, &pos), 0);
        assert_int_equal(lsn, i);
        if (pos.segment_id > segments_seen)
            segments_seen = pos.segment_id;
        if (i % 997 == 0)
            stage_read_check(tail, &tail_next, i);
        if (i % 3001 == 0) {
            /* Just appended, so most likely still in the stage only. */
            struct ud_wal_reader *r;
            uint64_t next = i - 2;
            assert_int_equal(ud_wal_reader_open(wal, next, UD_WAL_READ_UNDURABLE, &r), 0);
            stage_read_check(r, &next, i);
            ud_wal_reader_close(r);
        }
    }
    free(buf);
    assert_true(segments_seen >= 2);
    stage_read_check(tail, &tail_next, STAGE_RECS);
    ud_wal_reader_close(tail);
    ud_wal_close(wal);

    wal = open_wal(dir, STAGE_SEG, UD_WAL_SYNC_NONE, 0);
    assert_int_equal(ud_wal_last_lsn(wal), STAGE_RECS);
    struct ud_wal_reader *r;
    uint64_t next = 1;
    assert_int_equal(ud_wal_reader_open(wal, 1, 0, &r), 0);
    stage_read_check(r, &next, STAGE_RECS);
    ud_wal_reader_close(r);
    ud_wal_close(wal);
    ud_test_rmtree(dir);
    free(dir);
}

/* Records wait in the stage only briefly: a few milliseconds after the appends stop, the segment
 * file (read with pread, as a copy or another process would) holds every one of them, though
 * far less than a write step was appended and nothing was synced. */
static void test_idle_appends_reach_the_file(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("wal-idle");
    struct ud_wal *wal = open_wal(dir, STAGE_SEG, UD_WAL_SYNC_NONE, 0);
    uint64_t end = HDR;
    for (uint64_t i = 1; i <= 100; i++) {
        append_rec(wal, i, rec_len(i), NULL);
        end += frame_size(rec_len(i));
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/0000000001.seg", dir);
    uint8_t *file = malloc(end);
    assert_non_null(file);
    bool all = false;
    for (int tries = 0; tries < 200 && !all; tries++) {
        usleep(10000);
        int fd = open(path, O_RDONLY);
        assert_true(fd >= 0);
        assert_int_equal(pread(fd, file, end, 0), (ssize_t)end);
        close(fd);
        uint32_t len;
        all =
            ud_wal_frame_check(file, end, end - frame_size(rec_len(100)), &len) == UD_WAL_FRAME_OK;
    }
    assert_true(all);
    uint64_t off = HDR;
    for (uint64_t i = 1; i <= 100; i++) {
        uint32_t len;
        assert_int_equal(ud_wal_frame_check(file, end, off, &len), UD_WAL_FRAME_OK);
        check_rec(file + off + 8, len, i, rec_len(i));
        off += frame_size(len);
    }
    free(file);
    ud_wal_close(wal);
    ud_test_rmtree(dir);
    free(dir);
}

/* --- a seal during a group-commit round ------------------------------------------------------- */

/* A file layer whose fsyncs block, while the gate is closed, on threads that opted in: it holds a
 * group-commit round open while the test seals the segment from another thread. */
struct gated_fs {
    struct ud_fs fs;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    int closed;
    int held; /* fsyncs blocked at the gate */
};

static struct gated_fs gated = {.mu = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};
static _Thread_local int gated_thread;

static int gated_sync(struct ud_fs *fs, struct ud_fs_file *file, uint64_t off, uint64_t len,
                      char *errmsg)
{
    (void)fs;
    if (gated_thread) {
        pthread_mutex_lock(&gated.mu);
        gated.held++;
        pthread_cond_broadcast(&gated.cond);
        while (gated.closed)
            pthread_cond_wait(&gated.cond, &gated.mu);
        gated.held--;
        pthread_mutex_unlock(&gated.mu);
    }
    return ud_fs_posix()->sync(ud_fs_posix(), file, off, len, errmsg);
}

static void gate_set(int closed)
{
    pthread_mutex_lock(&gated.mu);
    gated.closed = closed;
    pthread_cond_broadcast(&gated.cond);
    pthread_mutex_unlock(&gated.mu);
}

#define SEAL_SLEEPERS 4

struct committer {
    struct ud_wal *wal;
    int gated;
    uint64_t lsn;
    int rc;
    atomic_uint_fast64_t returned_ns; /* 0 until ud_wal_sync returned */
};

static void *committer_main(void *p)
{
    struct committer *c = p;
    char err[UD_ERRMSG_SIZE];
    gated_thread = c->gated;
    c->lsn = append_rec(c->wal, 7, 100, NULL);
    c->rc = ud_wal_sync(c->wal, c->lsn, err);
    if (c->rc == 0 && ud_wal_durable_lsn(c->wal) < c->lsn)
        c->rc = -1;
    atomic_store(&c->returned_ns, ud_mono_ns());
    return NULL;
}

static int sleepers_registered(struct ud_wal *wal)
{
    return atomic_load(&wal->sync_waiters[0]) + atomic_load(&wal->sync_waiters[1]);
}

/* One trial: a round held at its fsync, SEAL_SLEEPERS committers asleep for the next round, then
 * a seal makes them durable. Asserts that none returned before the seal and that every one
 * returned after it, durable, while the round is still held. */
static void seal_trial(const char *dir)
{
    gated.fs = (struct ud_fs){.open = faulty_open,
                              .sync = gated_sync,
                              .write = faulty_write,
                              .done_writing = faulty_done_writing,
                              .close = faulty_close,
                              .sync_dir = faulty_sync_dir,
                              .unlink = faulty_unlink};
    atomic_store(&faulty.nospace, 0);
    atomic_store(&faulty.fail_sync, 0);
    struct ud_wal_options o = {
        .dir = dir, .segment_size = SEG_SMALL, .sync_mode = UD_WAL_SYNC_ALWAYS, .fs = &gated.fs};
    struct ud_wal *wal = NULL;
    char err[UD_ERRMSG_SIZE];
    assert_int_equal(ud_wal_open(&o, &wal, err), 0);
    gate_set(1);
    struct committer syncer = {.wal = wal, .gated = 1};
    pthread_t ts;
    assert_int_equal(pthread_create(&ts, NULL, committer_main, &syncer), 0);
    pthread_mutex_lock(&gated.mu);
    while (gated.held == 0)
        pthread_cond_wait(&gated.cond, &gated.mu);
    pthread_mutex_unlock(&gated.mu);
    /* The round's target is taken: these commit after it, so they wait for the next round. */
    struct committer c[SEAL_SLEEPERS];
    pthread_t t[SEAL_SLEEPERS];
    for (int i = 0; i < SEAL_SLEEPERS; i++) {
        c[i] = (struct committer){.wal = wal};
        atomic_store(&c[i].returned_ns, 0);
        assert_int_equal(pthread_create(&t[i], NULL, committer_main, &c[i]), 0);
    }
    uint64_t deadline = ud_mono_ns() + 2000000000u;
    while (sleepers_registered(wal) < SEAL_SLEEPERS && ud_mono_ns() < deadline)
        usleep(100);
    assert_int_equal(sleepers_registered(wal), SEAL_SLEEPERS);
    usleep(1000); /* in the futex by now (if not, they find their records durable: same end) */
    /* Asleep: nothing but the seal below or the held round can make their records durable. */
    for (int i = 0; i < SEAL_SLEEPERS; i++)
        assert_int_equal(atomic_load(&c[i].returned_ns), 0);
    uint64_t sealed = ud_mono_ns();
    assert_int_equal(ud_wal_rotate(wal, err), 0);
    assert_true(ud_wal_durable_lsn(wal) >= syncer.lsn + SEAL_SLEEPERS);
    /* Returned, and the round still held: woken by the seal, not by the round's end. The futex
     * wait has no timeout, so without the seal's wake-up they would sleep until the gate opens;
     * the deadline only keeps a lost wake-up from hanging the test, it bounds no latency. */
    uint64_t latest = 0;
    deadline = ud_mono_ns() + 10000000000u;
    for (int i = 0; i < SEAL_SLEEPERS; i++) {
        uint64_t r;
        while ((r = atomic_load(&c[i].returned_ns)) == 0 && ud_mono_ns() < deadline)
            usleep(50);
        assert_int_not_equal(r, 0);
        assert_true(r >= sealed);
        latest = latest > r ? latest : r;
    }
    pthread_mutex_lock(&gated.mu);
    assert_int_equal(gated.held, 1);
    pthread_mutex_unlock(&gated.mu);
    print_message("# seal -> next round's committers returned: %.3f ms\n", (latest - sealed) / 1e6);
    gate_set(0);
    pthread_join(ts, NULL);
    assert_int_equal(syncer.rc, 0);
    for (int i = 0; i < SEAL_SLEEPERS; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(c[i].rc, 0);
    }
    ud_wal_close(wal);
}

/*
 * Committers waiting for the next group-commit round that a seal made durable return once the
 * seal wakes them, not when a timed wait expires (it was 10 ms) or when a round they no longer
 * need ends. Five trials for more chances at a race. How soon they return is a latency, measured
 * by the benchmarks, not asserted here: a loaded machine can delay any wake-up.
 */
static void test_group_commit_seal_wakes_waiters(void **state)
{
    (void)state;
    for (int trial = 0; trial < 5; trial++) {
        char *dir = ud_test_tmpdir("wal-gcseal");
        seal_trial(dir);
        ud_test_rmtree(dir);
        free(dir);
    }
}

/* Group commit across many seals (64 KiB segments): every committer returns, durable. A lost
 * wake-up shows as a committer that never returns (no timed wait rescues it). */
#define SEALS_THREADS 8
#define SEALS_PER     400

static void test_group_commit_across_seals(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("wal-gcseals");
    struct ud_wal *wal = open_wal(dir, SEG_SMALL, UD_WAL_SYNC_ALWAYS, 0);
    pthread_t t[SEALS_THREADS];
    struct gc_arg args[SEALS_THREADS];
    for (int i = 0; i < SEALS_THREADS; i++) {
        args[i] = (struct gc_arg){.wal = wal, .id = i, .records = SEALS_PER, .len = 1000};
        assert_int_equal(pthread_create(&t[i], NULL, gc_main, &args[i]), 0);
    }
    struct timespec limit;
    clock_gettime(CLOCK_REALTIME, &limit);
    limit.tv_sec += 120;
    for (int i = 0; i < SEALS_THREADS; i++) {
        assert_int_equal(pthread_timedjoin_np(t[i], NULL, &limit), 0);
        assert_int_equal(args[i].failures, 0);
    }
    struct ud_wal_stats st;
    ud_wal_stats(wal, &st);
    assert_int_equal(st.last_lsn, SEALS_THREADS * SEALS_PER);
    assert_int_equal(st.durable_lsn, st.last_lsn);
    assert_true(st.segments > 20);
    ud_wal_close(wal);
    ud_test_rmtree(dir);
    free(dir);
}

/* --- readying the active segment ahead of the appends (sync always) -------------------------- */

/* A file layer over the real one that records the helper's prepare() calls, can hold each one
 * for a while (so that appends catch up with the step under way) and can fail them. */
struct ready_fs {
    struct ud_fs fs;
    atomic_int attempts; /* every call, failed ones included */
    atomic_int calls;    /* the calls that readied their range */
    atomic_uint_fast64_t bytes;
    atomic_uint_fast64_t lowest;  /* lowest offset readied */
    atomic_uint_fast64_t highest; /* highest end of a readied range */
    atomic_int hold_us;           /* before the step is written */
    atomic_int fail;              /* 0, or the code every call returns */
};

static struct ready_fs ready;

static int ready_prepare(struct ud_fs *fs, struct ud_fs_file *file, uint64_t off, uint64_t len,
                         char *errmsg)
{
    (void)fs;
    atomic_fetch_add(&ready.attempts, 1);
    int hold = atomic_load(&ready.hold_us);
    if (hold > 0)
        usleep((useconds_t)hold);
    int code = atomic_load(&ready.fail);
    if (code != 0)
        return ud_errf(errmsg, code, "prepare [%llu, %llu): injected", (unsigned long long)off,
                       (unsigned long long)(off + len));
    atomic_fetch_add(&ready.calls, 1);
    atomic_fetch_add(&ready.bytes, len);
    uint64_t low = atomic_load(&ready.lowest);
    while (off < low && !atomic_compare_exchange_weak(&ready.lowest, &low, off))
        ;
    uint64_t high = atomic_load(&ready.highest);
    while (off + len > high && !atomic_compare_exchange_weak(&ready.highest, &high, off + len))
        ;
    return ud_fs_posix()->prepare(ud_fs_posix(), file, off, len, errmsg);
}

static struct ud_wal *open_ready(const char *dir, uint64_t seg, enum ud_wal_sync_mode mode)
{
    ready.fs = *ud_fs_posix();
    ready.fs.prepare = ready_prepare;
    atomic_store(&ready.attempts, 0);
    atomic_store(&ready.calls, 0);
    atomic_store(&ready.bytes, 0);
    atomic_store(&ready.lowest, UINT64_MAX);
    atomic_store(&ready.highest, 0);
    atomic_store(&ready.hold_us, 0);
    atomic_store(&ready.fail, 0);
    struct ud_wal_options o = {.dir = dir, .segment_size = seg, .sync_mode = mode, .fs = &ready.fs};
    struct ud_wal *wal = NULL;
    char err[UD_ERRMSG_SIZE];
    assert_int_equal(ud_wal_open(&o, &wal, err), 0);
    return wal;
}

/* Waits up to 5 s for the helper to have readied the file up to `off`. */
static bool wait_readied(uint64_t off)
{
    uint64_t deadline = ud_mono_ns() + 5000000000u;
    while (atomic_load(&ready.highest) < off && ud_mono_ns() < deadline)
        usleep(1000);
    return atomic_load(&ready.highest) >= off;
}

/*
 * Sync always: once records come in, the helper readies the active segment's file ahead of them
 * (written zeros instead of unwritten extents, so the rounds' fsyncs commit no journal), never
 * below the records, and keeps up as the appends move on. The other modes do not.
 */
static void test_always_readies_ahead(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("wal-ready");
    const uint64_t seg = 1u << 20;
    const uint64_t step = ud_wal_prepare_step(seg);
    struct ud_wal *wal = open_ready(dir, seg, UD_WAL_SYNC_ALWAYS);
    char err[UD_ERRMSG_SIZE];
    uint64_t lsn = append_rec(wal, 1, 1000, NULL);
    assert_int_equal(ud_wal_sync(wal, lsn, err), 0);
    uint64_t first_end = HDR + frame_size(1000);
    assert_true(wait_readied(first_end + UD_WAL_PREPARE_STEPS_AHEAD * step));
    /* Past the first record's frame, on a page of its own. */
    assert_true(atomic_load(&ready.lowest) >= first_end);
    assert_int_equal(atomic_load(&ready.lowest) % 4096, 0);
    /* Appends moving on: the readying follows them to the end of the segment. */
    for (uint64_t i = 2; i <= 900; i++) {
        lsn = append_rec(wal, i, 1000, NULL);
        assert_int_equal(ud_wal_sync(wal, lsn, err), 0);
    }
    struct ud_wal_stats st;
    ud_wal_stats(wal, &st);
    assert_int_equal(st.segments, 1);
    assert_true(wait_readied(seg));
    ud_wal_close(wal);
    /* The records are all there after a reopen: no zeros landed on them. */
    wal = open_wal(dir, seg, UD_WAL_SYNC_NONE, 0);
    assert_int_equal(ud_wal_last_lsn(wal), 900);
    struct ud_wal_reader *r;
    assert_int_equal(ud_wal_reader_open(wal, 1, 0, &r), 0);
    for (uint64_t i = 1; i <= 900; i++) {
        const uint8_t *data;
        uint32_t len;
        uint64_t got;
        assert_int_equal(ud_wal_reader_next(r, &data, &len, &got), 0);
        check_rec(data, len, i, 1000);
    }
    ud_wal_reader_close(r);
    ud_wal_close(wal);
    ud_test_rmtree(dir);

    /* Mode none: nothing is readied. */
    wal = open_ready(dir, seg, UD_WAL_SYNC_NONE);
    for (uint64_t i = 1; i <= 100; i++)
        append_rec(wal, i, 1000, NULL);
    assert_int_equal(ud_wal_sync_all(wal, err), 0);
    usleep(20000); /* the helper's delay is 5 ms */
    assert_int_equal(atomic_load(&ready.calls), 0);
    ud_wal_close(wal);
    ud_test_rmtree(dir);
    free(dir);
}

#define READY_THREADS 8
#define READY_PER     400

/*
 * Committers keep catching up with the step being readied (each held 2 ms) across many
 * rotations: a write out that reaches into the step waits for it, and the seal ends it, so every
 * record survives a reopen intact. Without that wait the step's zeros land on records written
 * meanwhile and the reopen finds a torn log.
 */
static void test_readying_never_zeroes_records(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("wal-ready-race");
    const uint64_t seg = 256u << 10;
    struct ud_wal *wal = open_ready(dir, seg, UD_WAL_SYNC_ALWAYS);
    atomic_store(&ready.hold_us, 2000);
    pthread_t t[READY_THREADS];
    struct gc_arg args[READY_THREADS];
    for (int i = 0; i < READY_THREADS; i++) {
        args[i] = (struct gc_arg){.wal = wal, .id = i, .records = READY_PER, .len = 1000};
        assert_int_equal(pthread_create(&t[i], NULL, gc_main, &args[i]), 0);
    }
    for (int i = 0; i < READY_THREADS; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(args[i].failures, 0);
    }
    struct ud_wal_stats st;
    ud_wal_stats(wal, &st);
    assert_true(st.segments > 8);
    assert_true(atomic_load(&ready.calls) > 0);
    print_message("# %u segments, %d steps readied\n", st.segments, atomic_load(&ready.calls));
    ud_wal_close(wal);

    wal = open_wal(dir, seg, UD_WAL_SYNC_NONE, 0);
    assert_int_equal(ud_wal_last_lsn(wal), READY_THREADS * READY_PER);
    check_thread_records(wal, READY_THREADS, READY_PER, 1000);
    ud_wal_close(wal);
    ud_test_rmtree(dir);
    free(dir);
}

/*
 * The seal ends the readying of its segment: it waits for a step under way (held here 3 ms
 * before its zeros are written) before the segment's descriptor goes, and no step follows it.
 * Records of 30 KiB leave room for more steps past a sealed segment's last frame; without that
 * wait a held step writes through the closed descriptor and fails the log.
 */
static void test_seal_ends_readying(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("wal-ready-seal");
    const uint64_t seg = 256u << 10;
    struct ud_wal *wal = open_ready(dir, seg, UD_WAL_SYNC_ALWAYS);
    atomic_store(&ready.hold_us, 3000);
    static uint8_t rec[30u << 10];
    char err[UD_ERRMSG_SIZE];
    uint64_t lsn = 0;
    for (int i = 0; i < 400; i++) {
        memset(rec, i + 1, sizeof rec);
        assert_int_equal(ud_wal_append(wal, rec, sizeof rec, &lsn, NULL), 0);
        int rc = ud_wal_sync(wal, lsn, err);
        if (rc != 0)
            fail_msg("record %d: %s", i + 1, err);
        usleep(300); /* a segment takes a few ms: steps get under way in most of them */
    }
    struct ud_wal_stats st;
    ud_wal_stats(wal, &st);
    assert_true(st.segments > 40);
    assert_true(atomic_load(&ready.calls) > 0);
    ud_wal_close(wal);
    wal = open_wal(dir, seg, UD_WAL_SYNC_NONE, 0);
    assert_int_equal(ud_wal_last_lsn(wal), 400);
    ud_wal_close(wal);
    ud_test_rmtree(dir);
    free(dir);
}

/* A full disk while readying only stops the readying (the blocks were reserved at creation); a
 * failed sync fails the log, naming the segment: it may have taken the report of a writeback
 * error of the records. */
static void test_readying_failures(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("wal-ready-fail");
    const uint64_t seg = 1u << 20;
    struct ud_wal *wal = open_ready(dir, seg, UD_WAL_SYNC_ALWAYS);
    atomic_store(&ready.fail, UD_ENOSPC);
    char err[UD_ERRMSG_SIZE];
    uint64_t lsn = append_rec(wal, 1, 1000, NULL);
    assert_int_equal(ud_wal_sync(wal, lsn, err), 0);
    usleep(50000);
    for (uint64_t i = 2; i <= 300; i++) {
        lsn = append_rec(wal, i, 1000, NULL);
        assert_int_equal(ud_wal_sync(wal, lsn, err), 0);
    }
    /* One attempt, for the one segment: not retried at every pass of the helper. */
    assert_int_equal(atomic_load(&ready.attempts), 1);
    assert_int_equal(atomic_load(&ready.calls), 0);
    ud_wal_close(wal);
    ud_test_rmtree(dir);

    wal = open_ready(dir, seg, UD_WAL_SYNC_ALWAYS);
    atomic_store(&ready.fail, UD_EIO);
    uint8_t rec[1000] = {1};
    uint64_t deadline = ud_mono_ns() + 5000000000u;
    int rc;
    do {
        rc = ud_wal_append(wal, rec, sizeof rec, &lsn, NULL);
        if (rc == 0)
            rc = ud_wal_sync(wal, lsn, err);
        usleep(1000);
    } while (rc == 0 && ud_mono_ns() < deadline);
    assert_int_equal(rc, UD_EIO);
    assert_int_equal(ud_wal_sync_all(wal, err), UD_EIO);
    assert_non_null(strstr(err, "ready segment 0000000001.seg"));
    assert_non_null(strstr(err, "injected"));
    ud_wal_close(wal);
    ud_test_rmtree(dir);
    free(dir);
}

/*
 * No descriptor left for a step's own sync: the readying ends (nothing was written wrong), the
 * log keeps acknowledging. As UD_EIO this failed the log and every later append.
 */
static void test_readying_without_descriptors(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("wal-ready-nofd");
    const uint64_t seg = 1u << 20;
    struct ud_wal *wal = open_ready(dir, seg, UD_WAL_SYNC_ALWAYS);
    struct rlimit was;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &was), 0);
    int lowest = dup(0); /* the lowest free descriptor: a limit there fails every open */
    assert_true(lowest >= 0);
    close(lowest);
    struct rlimit low = {.rlim_cur = (rlim_t)lowest, .rlim_max = was.rlim_max};
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
    char err[UD_ERRMSG_SIZE];
    int rc = 0;
    for (uint64_t i = 1; i <= 300 && rc == 0; i++) {
        uint64_t lsn = append_rec(wal, i, 1000, NULL);
        rc = ud_wal_sync(wal, lsn, err);
        if (i == 1)
            usleep(50000); /* the helper's first step runs, and cannot open the file */
    }
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &was), 0);
    if (rc != 0)
        fail_msg("a sync failed: %s", err);
    /* One step tried, which could not sync, and the readying of the segment ended there. */
    assert_int_equal(atomic_load(&ready.attempts), 1);
    assert_int_equal(ud_wal_last_lsn(wal), 300);
    ud_wal_close(wal);
    ud_test_rmtree(dir);
    free(dir);
}

/* --- listener, interval mode, options --------------------------------------------------------- */

struct listen_state {
    atomic_uint_fast64_t last;
    atomic_int calls;
};

static void on_lsn(void *arg, uint64_t lsn)
{
    struct listen_state *s = arg;
    atomic_store(&s->last, lsn);
    atomic_fetch_add(&s->calls, 1);
}

static void test_listener(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("wal-listener");
    struct ud_wal *wal = open_wal(dir, SEG_SMALL, UD_WAL_SYNC_NONE, 0);
    struct listen_state ls = {0};
    ud_wal_set_listener(wal, on_lsn, &ls);
    for (uint64_t i = 1; i <= 5; i++) {
        append_rec(wal, i, 10, NULL);
        assert_int_equal(atomic_load(&ls.last), i);
    }
    assert_int_equal(atomic_load(&ls.calls), 5);
    ud_wal_set_listener(wal, NULL, NULL);
    append_rec(wal, 6, 10, NULL);
    assert_int_equal(atomic_load(&ls.calls), 5);
    ud_wal_close(wal);

    /* ALWAYS mode: the listener reports what default readers can now see (durable). */
    wal = open_wal(dir, SEG_SMALL, UD_WAL_SYNC_ALWAYS, 0);
    struct listen_state la = {0};
    ud_wal_set_listener(wal, on_lsn, &la);
    uint64_t lsn = append_rec(wal, 7, 10, NULL);
    char err[UD_ERRMSG_SIZE];
    assert_int_equal(ud_wal_sync(wal, lsn, err), 0);
    assert_int_equal(atomic_load(&la.last), 7);
    ud_wal_close(wal);
    ud_test_rmtree(dir);
    free(dir);
}

/* Checks that run bytes are `count` stored frames of the standard workload from first_lsn. */
static void check_run(const uint8_t *p, uint64_t len, uint64_t first_lsn, uint32_t count)
{
    uint64_t off = 0;
    for (uint32_t k = 0; k < count; k++) {
        uint64_t tag = first_lsn + k;
        size_t n = rec_len(tag);
        assert_true(off + frame_size(n) <= len);
        assert_int_equal(ud_get_le32(p + off + 4), n);
        uint8_t lenbuf[4];
        ud_put_le32(lenbuf, (uint32_t)n);
        assert_int_equal(ud_get_le32(p + off), ud_crc32c(ud_crc32c(0, lenbuf, 4), p + off + 8, n));
        check_rec(p + off + 8, (uint32_t)n, tag, n);
        assert_memory_equal(p + off + 8 + n, trailer, 8);
        for (uint64_t i = off + 16 + n; i < off + frame_size(n); i++)
            assert_int_equal(p[i], 0);
        off += frame_size(n);
    }
    assert_int_equal(off, len);
}

static void test_run_reader(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("wal-run");
    struct ud_wal *wal = open_wal(dir, SEG_SMALL, UD_WAL_SYNC_NONE, 0);
    const uint64_t total = 1000; /* about 290 KiB: five segments */
    for (uint64_t i = 1; i <= total; i++)
        append_rec(wal, i, rec_len(i), NULL);
    struct ud_wal_stats st;
    ud_wal_stats(wal, &st);
    assert_true(st.segments >= 3);

    /* Every bound: runs are whole frames, continuous by LSN, within max_bytes unless a single
     * frame is larger, and never span segments (a run that is not contiguous in memory with the
     * previous one starts a new segment, so with an unbounded size there is one run per segment).
     */
    const uint64_t bounds[] = {1, 24, 512, 4096, UINT64_MAX};
    for (size_t b = 0; b < sizeof bounds / sizeof bounds[0]; b++) {
        struct ud_wal_reader *r = NULL;
        assert_int_equal(ud_wal_reader_open(wal, 1, 0, &r), 0);
        uint64_t next = 1, runs = 0, segments = 0;
        const uint8_t *prev_end = NULL;
        for (;;) {
            const uint8_t *p;
            uint64_t len, first;
            uint32_t count;
            int rc = ud_wal_reader_next_run(r, bounds[b], &p, &len, &first, &count);
            if (rc == UD_EAGAIN)
                break;
            assert_int_equal(rc, 0);
            assert_int_equal(first, next);
            assert_true(count >= 1);
            assert_int_equal(len % 8, 0);
            if (count > 1)
                assert_true(len <= bounds[b]);
            check_run(p, len, first, count);
            if (p != prev_end)
                segments++;
            prev_end = p + len;
            next += count;
            runs++;
            assert_int_equal(ud_wal_reader_lsn(r), next);
        }
        assert_int_equal(next, total + 1);
        assert_int_equal(segments, st.segments);
        if (bounds[b] == UINT64_MAX)
            assert_int_equal(runs, st.segments);
        if (bounds[b] == 1)
            assert_int_equal(runs, total);
        ud_wal_reader_close(r);
    }

    /* The bytes are those of the segment file on disk. */
    struct ud_wal_reader *r = NULL;
    assert_int_equal(ud_wal_reader_open(wal, 1, 0, &r), 0);
    const uint8_t *p;
    uint64_t len, first;
    uint32_t count;
    assert_int_equal(ud_wal_reader_next_run(r, UINT64_MAX, &p, &len, &first, &count), 0);
    char *path = seg_path(dir, 1);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    uint8_t *disk = malloc(len);
    assert_non_null(disk);
    assert_int_equal(fseek(f, HDR, SEEK_SET), 0);
    assert_int_equal(fread(disk, 1, len, f), len);
    assert_memory_equal(disk, p, len);
    fclose(f);
    free(disk);
    free(path);

    /* Retention removes the segments after the one the reader pins: the run already handed out
     * stays readable, the next call is UD_EGONE. */
    struct ud_wal_retention keep1 = {.max_segments = 0, .max_age_ms = 1};
    char err[UD_ERRMSG_SIZE];
    uint32_t removed = 0;
    struct timespec ts = {0, 5000000};
    nanosleep(&ts, NULL);
    assert_int_equal(ud_wal_retain(wal, &keep1, total + 1, &removed, err), 0);
    assert_true(removed >= 2);
    check_run(p, len, first, count);
    assert_int_equal(ud_wal_reader_next_run(r, UINT64_MAX, &p, &len, &first, &count), UD_EGONE);
    ud_wal_reader_close(r);
    assert_int_equal(ud_wal_reader_open(wal, 1, 0, &r), UD_EGONE);

    /* Tail: nothing visible, then one append is one run. */
    assert_int_equal(ud_wal_reader_open(wal, total + 1, 0, &r), 0);
    assert_int_equal(ud_wal_reader_next_run(r, UINT64_MAX, &p, &len, &first, &count), UD_EAGAIN);
    append_rec(wal, total + 1, rec_len(total + 1), NULL);
    assert_int_equal(ud_wal_reader_next_run(r, UINT64_MAX, &p, &len, &first, &count), 0);
    assert_int_equal(first, total + 1);
    assert_int_equal(count, 1);
    check_run(p, len, first, count);
    ud_wal_reader_close(r);
    ud_wal_close(wal);
    ud_test_rmtree(dir);
    free(dir);
}

static void test_run_reader_always_and_corrupt(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("wal-run-always");
    struct ud_wal *wal = open_wal(dir, SEG_SMALL, UD_WAL_SYNC_ALWAYS, 0);
    for (uint64_t i = 1; i <= 5; i++)
        append_rec(wal, i, rec_len(i), NULL);
    /* ALWAYS mode: a record is streamed only once durable. */
    struct ud_wal_reader *r = NULL;
    assert_int_equal(ud_wal_reader_open(wal, 1, 0, &r), 0);
    const uint8_t *p;
    uint64_t len, first;
    uint32_t count;
    assert_int_equal(ud_wal_reader_next_run(r, UINT64_MAX, &p, &len, &first, &count), UD_EAGAIN);
    assert_int_equal(ud_wal_visible_lsn(wal), 0);
    char err[UD_ERRMSG_SIZE];
    assert_int_equal(ud_wal_sync(wal, 3, err), 0);
    assert_int_equal(ud_wal_visible_lsn(wal), 5);
    assert_int_equal(ud_wal_reader_next_run(r, UINT64_MAX, &p, &len, &first, &count), 0);
    assert_int_equal(first, 1);
    assert_int_equal(count, 5);
    check_run(p, len, 1, 5);
    ud_wal_reader_close(r);

    /* A damaged frame (record 3's data) ends the run before it and is then reported. */
    uint64_t off3 = HDR + frame_size(rec_len(1)) + frame_size(rec_len(2));
    char *path = seg_path(dir, 1);
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    uint8_t b;
    assert_int_equal(pread(fd, &b, 1, (off_t)(off3 + 8)), 1);
    b ^= 0x55;
    assert_int_equal(pwrite(fd, &b, 1, (off_t)(off3 + 8)), 1);
    close(fd);
    free(path);
    assert_int_equal(ud_wal_reader_open(wal, 1, 0, &r), 0);
    assert_int_equal(ud_wal_reader_next_run(r, UINT64_MAX, &p, &len, &first, &count), 0);
    assert_int_equal(count, 2);
    check_run(p, len, 1, 2);
    assert_int_equal(ud_wal_reader_next_run(r, UINT64_MAX, &p, &len, &first, &count), UD_ECORRUPT);
    ud_wal_reader_close(r);

    /* A trusted (stream) reader leaves CRCs to the receiver: the damaged data goes out as
     * stored, and the receiver's check is what catches it. A broken trailer still stops it. */
    assert_int_equal(ud_wal_reader_open(wal, 1, UD_WAL_READ_TRUSTED, &r), 0);
    assert_int_equal(ud_wal_reader_next_run(r, UINT64_MAX, &p, &len, &first, &count), 0);
    assert_int_equal(count, 5);
    uint32_t n;
    uint64_t size;
    assert_int_equal(ud_wal_frame_verify(p, len, off3 - HDR, &n, &size, err), UD_ECORRUPT);
    assert_non_null(strstr(err, "bad record checksum"));
    ud_wal_reader_close(r);
    uint64_t off4 = off3 + frame_size(rec_len(3));
    path = seg_path(dir, 1);
    fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, &b, 1, (off_t)(off4 + 8 + rec_len(4))), 1);
    b ^= 0x55;
    assert_int_equal(pwrite(fd, &b, 1, (off_t)(off4 + 8 + rec_len(4))), 1);
    close(fd);
    free(path);
    assert_int_equal(ud_wal_reader_open(wal, 1, UD_WAL_READ_TRUSTED, &r), 0);
    assert_int_equal(ud_wal_reader_next_run(r, UINT64_MAX, &p, &len, &first, &count), 0);
    assert_int_equal(count, 3);
    assert_int_equal(ud_wal_reader_next_run(r, UINT64_MAX, &p, &len, &first, &count), UD_ECORRUPT);
    ud_wal_reader_close(r);
    ud_wal_close(wal);
    ud_test_rmtree(dir);
    free(dir);
}

/* A listener being removed while appends run: once ud_wal_set_listener returns, the old
 * argument is never touched again (the test poisons it). */
struct churn {
    struct ud_wal *wal;
    atomic_bool stop;
};

static void *churn_appender(void *arg)
{
    struct churn *c = arg;
    uint8_t rec[16] = {1};
    while (!atomic_load(&c->stop)) {
        uint64_t lsn;
        if (ud_wal_append(c->wal, rec, sizeof rec, &lsn, NULL) != 0)
            break;
    }
    return NULL;
}

struct poisonable {
    atomic_int alive;
    atomic_int bad;
};

static void on_poisonable(void *arg, uint64_t lsn)
{
    (void)lsn;
    struct poisonable *p = arg;
    if (atomic_load(&p->alive) != 1)
        atomic_store(&p->bad, 1);
}

static void test_listener_removal_waits(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("wal-listener-churn");
    struct ud_wal *wal = open_wal(dir, 4u << 20, UD_WAL_SYNC_NONE, 0);
    struct churn c = {.wal = wal};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, churn_appender, &c), 0);
    int bad = 0;
    for (int i = 0; i < 2000; i++) {
        struct poisonable *p = calloc(1, sizeof *p);
        assert_non_null(p);
        atomic_store(&p->alive, 1);
        ud_wal_set_listener(wal, on_poisonable, p);
        ud_wal_set_listener(wal, NULL, NULL);
        atomic_store(&p->alive, 0); /* a late call would see this */
        bad |= atomic_load(&p->bad);
        struct timespec ts = {0, 2000};
        nanosleep(&ts, NULL);
        bad |= atomic_load(&p->bad);
        free(p);
    }
    atomic_store(&c.stop, true);
    pthread_join(t, NULL);
    assert_int_equal(bad, 0);
    ud_wal_close(wal);
    ud_test_rmtree(dir);
    free(dir);
}

static void test_interval_mode(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("wal-interval");
    struct ud_wal_options o = {.dir = dir,
                               .segment_size = SEG_SMALL,
                               .sync_mode = UD_WAL_SYNC_INTERVAL,
                               .sync_interval_ms = 10};
    struct ud_wal *wal;
    char err[UD_ERRMSG_SIZE];
    assert_int_equal(ud_wal_open(&o, &wal, err), 0);
    uint64_t lsn = append_rec(wal, 1, 100, NULL);
    assert_int_equal(ud_wal_sync(wal, lsn, err), 0); /* returns at once */
    uint64_t t0 = mono_ms();
    while (ud_wal_durable_lsn(wal) < lsn && mono_ms() - t0 < 10000) {
        struct timespec ts = {.tv_sec = 0, .tv_nsec = 2 * 1000000};
        nanosleep(&ts, NULL);
    }
    assert_int_equal(ud_wal_durable_lsn(wal), lsn);
    ud_wal_close(wal);

    /* NONE: nothing is synced until asked. */
    o.sync_mode = UD_WAL_SYNC_NONE;
    assert_int_equal(ud_wal_open(&o, &wal, err), 0);
    lsn = append_rec(wal, 2, 100, NULL);
    assert_int_equal(ud_wal_sync(wal, lsn, err), 0);
    assert_int_equal(ud_wal_durable_lsn(wal), lsn - 1);
    assert_int_equal(ud_wal_sync_all(wal, err), 0);
    assert_int_equal(ud_wal_durable_lsn(wal), lsn);
    ud_wal_close(wal);
    ud_test_rmtree(dir);
    free(dir);
}

static void test_bad_options(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("wal-options");
    struct ud_wal *wal = NULL;
    char err[UD_ERRMSG_SIZE];
    struct ud_wal_options o = {.dir = dir, .segment_size = 1000};
    assert_int_equal(ud_wal_open(&o, &wal, err), UD_EINVAL);
    assert_non_null(strstr(err, "segment_size"));
    o.segment_size = SEG_SMALL + 3;
    assert_int_equal(ud_wal_open(&o, &wal, err), UD_EINVAL);
    o.segment_size = 0;
    o.sync_mode = (enum ud_wal_sync_mode)42;
    assert_int_equal(ud_wal_open(&o, &wal, err), UD_EINVAL);
    struct ud_wal_options nodir = {0};
    assert_int_equal(ud_wal_open(&nodir, &wal, err), UD_EINVAL);
    assert_null(wal);
    /* Default segment size: the first file is preallocated to 64 MiB. */
    o.sync_mode = UD_WAL_SYNC_NONE;
    assert_int_equal(ud_wal_open(&o, &wal, err), 0);
    char *p = seg_path(dir, 1);
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_size, UD_WAL_DEFAULT_SEGMENT_SIZE);
    ud_wal_close(wal);
    free(p);
    ud_wal_close(NULL);
    ud_test_rmtree(dir);
    free(dir);
}

int main(void)
{
    ud_log_set_level(UD_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc32c_matches_definition),
        cmocka_unit_test(test_round_trip_and_format),
        cmocka_unit_test(test_rotation_and_readers),
        cmocka_unit_test(test_tail_reader_across_rotation),
        cmocka_unit_test(test_tail_wait_woken_by_append),
        cmocka_unit_test(test_always_mode_visibility),
        cmocka_unit_test(test_close_wakes_waiter),
        cmocka_unit_test(test_concurrent_tailers),
        cmocka_unit_test(test_torn_tail_recovery),
        cmocka_unit_test(test_sealed_corruption_detected),
        cmocka_unit_test(test_active_corruption_truncates),
        cmocka_unit_test(test_active_corruption_below_floor),
        cmocka_unit_test(test_half_created_segment),
        cmocka_unit_test(test_lsn_continuity),
        cmocka_unit_test(test_append_in_place),
        cmocka_unit_test(test_retention),
        cmocka_unit_test(test_retention_keeps_the_newest_record),
        cmocka_unit_test(test_retention_keeps_the_newest_durable_record),
        cmocka_unit_test(test_sync_all_leaves_the_active_header),
        cmocka_unit_test(test_dir_is_a_file),
        cmocka_unit_test(test_backup),
        cmocka_unit_test(test_backup_partial),
        cmocka_unit_test(test_backup_busy_dir),
        cmocka_unit_test(test_group_commit),
        cmocka_unit_test(test_failed_sync_is_sticky),
        cmocka_unit_test(test_failed_write_is_sticky),
        cmocka_unit_test(test_reopen_keeps_active_descriptor_only),
        cmocka_unit_test(test_failed_rotation_sync),
        cmocka_unit_test(test_stage_wraps_and_large_records),
        cmocka_unit_test(test_idle_appends_reach_the_file),
        cmocka_unit_test(test_enospc_at_rotation),
        cmocka_unit_test(test_group_commit_seal_wakes_waiters),
        cmocka_unit_test(test_group_commit_across_seals),
        cmocka_unit_test(test_always_readies_ahead),
        cmocka_unit_test(test_readying_never_zeroes_records),
        cmocka_unit_test(test_seal_ends_readying),
        cmocka_unit_test(test_readying_failures),
        cmocka_unit_test(test_readying_without_descriptors),
        cmocka_unit_test(test_listener),
        cmocka_unit_test(test_listener_removal_waits),
        cmocka_unit_test(test_run_reader),
        cmocka_unit_test(test_run_reader_always_and_corrupt),
        cmocka_unit_test(test_interval_mode),
        cmocka_unit_test(test_bad_options),
    };
    return cmocka_run_group_tests_name("wal", tests, NULL, NULL);
}
