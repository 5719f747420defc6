/* libFuzzer target for WAL recovery: arbitrary bytes become a segment file, which the WAL must
 * either refuse with a corruption code or recover into records that are all valid frames, after
 * which appending works and reads back. */
#include <fcntl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/crc32c.h"
#include "core/endian.h"
#include "core/err.h"
#include "core/fs.h"
#include "core/log.h"
#include "core/wal.h"
#include "tests/lib/testutil.h"

#define SEG_SIZE UD_WAL_MIN_SEGMENT_SIZE

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_wal_recovery: check failed: %s (line %d)\n", #cond, __LINE__);   \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static const uint8_t trailer[8] = {0xDE, 0xAD, 0xBE, 0xEF, 0xFE, 0xED, 0xFA, 0xCE};

/*
 * A file layer that keeps segment contents in memory: real files exist only so the WAL's
 * directory listing finds them, and syncs cost nothing. Per-input cost stays in the
 * microseconds instead of the milliseconds of real fsyncs.
 */
struct ud_fs_file {
    uint8_t *buf;
    uint64_t size;
};

static int mem_open(struct ud_fs *fs, const char *path, int create, uint64_t size,
                    struct ud_fs_file **file, uint8_t **map, uint64_t *map_size, char *errmsg)
{
    (void)fs;
    struct ud_fs_file *f = calloc(1, sizeof *f);
    CHECK(f != NULL);
    if (create) {
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
        if (fd < 0) {
            free(f);
            return ud_errf(errmsg, UD_EEXIST, "create %s", path);
        }
        close(fd);
        f->buf = calloc(1, size);
        f->size = size;
    } else {
        int fd = open(path, O_RDONLY);
        if (fd < 0) {
            free(f);
            return ud_errf(errmsg, UD_ENOTFOUND, "open %s", path);
        }
        struct stat st;
        CHECK(fstat(fd, &st) == 0);
        f->size = (uint64_t)st.st_size;
        f->buf = f->size ? malloc(f->size) : NULL;
        CHECK(f->size == 0 || read(fd, f->buf, f->size) == (ssize_t)f->size);
        close(fd);
    }
    CHECK(f->size == 0 || f->buf != NULL);
    *file = f;
    *map = f->buf;
    *map_size = f->size;
    return 0;
}

static int mem_sync(struct ud_fs *fs, struct ud_fs_file *file, uint64_t off, uint64_t len,
                    char *errmsg)
{
    (void)fs;
    (void)errmsg;
    CHECK(off + len <= file->size);
    return 0;
}

static int mem_write(struct ud_fs *fs, struct ud_fs_file *file, uint64_t off, const void *data,
                     uint64_t len, char *errmsg)
{
    (void)fs;
    (void)errmsg;
    CHECK(off + len <= file->size);
    memcpy(file->buf + off, data, len);
    return 0;
}

static void mem_close(struct ud_fs *fs, struct ud_fs_file *file)
{
    (void)fs;
    free(file->buf);
    free(file);
}

static int mem_sync_dir(struct ud_fs *fs, const char *dir, char *errmsg)
{
    (void)fs;
    (void)dir;
    (void)errmsg;
    return 0;
}

static int mem_unlink(struct ud_fs *fs, const char *path, char *errmsg)
{
    (void)fs;
    return unlink(path) == 0 ? 0 : ud_errf(errmsg, UD_ENOTFOUND, "unlink %s", path);
}

static struct ud_fs mem_fs = {.open = mem_open,
                              .sync = mem_sync,
                              .write = mem_write,
                              .close = mem_close,
                              .sync_dir = mem_sync_dir,
                              .unlink = mem_unlink};

static char *dir;
static char seg1[4096], seg2[4096];
static uint8_t image[SEG_SIZE];

static void remove_dir(void)
{
    ud_test_rmtree(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    ud_log_set_level(UD_LOG_ERROR);
    dir = ud_test_tmpdir("fuzz-wal");
    snprintf(seg1, sizeof seg1, "%s/0000000001.seg", dir);
    snprintf(seg2, sizeof seg2, "%s/0000000002.seg", dir);
    atexit(remove_dir);
    return 0;
}

/* What the input asked for, and what recovery must then produce. */
struct expect {
    uint64_t first_lsn;   /* 0: unknown (raw header) */
    int structured;       /* frames built by us: the survivors are known exactly */
    int sealed;           /* header says sealed */
    uint64_t survivors;   /* structured active: records recovery must keep */
    int corrupt_expected; /* structured sealed with a damaged frame */
};

static size_t take(const uint8_t **data, size_t *size, uint8_t *out, size_t n)
{
    size_t k = n < *size ? n : *size;
    memcpy(out, *data, k);
    memset(out + k, 0, n - k);
    *data += k;
    *size -= k;
    return k;
}

static void put_header(uint64_t first_lsn, int sealed, uint64_t write_offset, uint64_t count)
{
    ud_put_le32(image + 0, 0x5557414C);
    ud_put_le32(image + 4, 1);
    ud_put_le64(image + 8, 1);
    ud_put_le64(image + 16, 2);
    ud_put_le64(image + 24, write_offset);
    ud_put_le64(image + 32, count);
    ud_put_le32(image + 40, sealed ? 2 : 1);
    ud_put_le64(image + 44, first_lsn);
    ud_put_le32(image + 56, ud_crc32c(0, image, 56));
}

/*
 * Structured input: records (a length byte, then that many data bytes) are encoded as valid
 * frames, then damaged: zeroed from a cut offset and one byte flipped, both taken from the input.
 * The survivors are then exactly the frames before the first one whose checked bytes changed.
 */
static void build_structured(const uint8_t *data, size_t size, uint8_t mode, struct expect *e)
{
    static uint64_t offs[4096], lens[4096];
    uint8_t ctl[6];
    take(&data, &size, ctl, sizeof ctl);
    uint64_t cut = UD_WAL_SEGMENT_HEADER_SIZE + (ud_get_le16(ctl) % (SEG_SIZE - 64));
    uint64_t flip = UD_WAL_SEGMENT_HEADER_SIZE + (ud_get_le16(ctl + 2) % (SEG_SIZE - 64));
    uint8_t mask = ctl[4];
    unsigned nrec = ctl[5];
    uint64_t off = UD_WAL_SEGMENT_HEADER_SIZE, n = 0;
    for (unsigned i = 0; i < nrec && size > 0; i++) {
        uint8_t lb;
        take(&data, &size, &lb, 1);
        uint32_t len = (uint32_t)lb + 1 + (i % 3 == 0 ? 300 : 0);
        uint64_t fsize = (16u + len + 7) & ~7u;
        if (off + fsize > SEG_SIZE)
            break;
        uint8_t *fr = image + off;
        take(&data, &size, fr + 8, len);
        ud_put_le32(fr + 4, len);
        ud_put_le32(fr, ud_crc32c(0, fr + 4, 4 + (size_t)len));
        memcpy(fr + 8 + len, trailer, 8);
        offs[n] = off;
        lens[n++] = len;
        off += fsize;
    }
    e->sealed = (mode & 2) != 0;
    e->structured = 1;
    put_header(e->first_lsn, e->sealed, e->sealed ? off : UD_WAL_SEGMENT_HEADER_SIZE,
               e->sealed ? n : 0);

    static uint8_t orig[SEG_SIZE];
    memcpy(orig, image, sizeof orig);
    if (mode & 16)
        memset(image + cut, 0, SEG_SIZE - cut);
    if (mode & 32)
        image[flip] ^= mask ? mask : 1;
    e->survivors = n;
    for (uint64_t k = 0; k < n; k++) {
        if (memcmp(image + offs[k], orig + offs[k], 16 + lens[k]) != 0) {
            e->survivors = k;
            break;
        }
    }
    e->corrupt_expected = e->sealed && e->survivors < n;
}

/*
 * Input layout: byte 0 picks the mode.
 *   bit 0 set:   the rest is the file from offset 0, header included (raw);
 *   bit 0 clear: we write a valid header, first LSN 1 + (byte 0 >> 6), sealed when bit 1 is set;
 *     bit 3 set:   structured records, damaged per bits 4 (zero from a cut) and 5 (flip a byte);
 *     bit 3 clear: byte 1 is the sealed entry count and the rest is the frame area at offset 64.
 */
static void build_image(const uint8_t *data, size_t size, struct expect *e)
{
    memset(image, 0, sizeof image);
    memset(e, 0, sizeof *e);
    if (size == 0)
        return;
    uint8_t mode = data[0];
    data++;
    size--;
    if (mode & 1) {
        memcpy(image, data, size < SEG_SIZE ? size : SEG_SIZE);
        return;
    }
    e->first_lsn = 1 + (mode >> 6);
    if (mode & 8) {
        build_structured(data, size, mode, e);
        return;
    }
    uint64_t count = size > 0 ? data[0] : 0;
    size_t body = size > 1 ? size - 1 : 0;
    if (body > SEG_SIZE - UD_WAL_SEGMENT_HEADER_SIZE)
        body = SEG_SIZE - UD_WAL_SEGMENT_HEADER_SIZE;
    if (body > 0)
        memcpy(image + UD_WAL_SEGMENT_HEADER_SIZE, data + 1, body);
    e->sealed = (mode & 2) != 0;
    put_header(e->first_lsn, e->sealed,
               UD_WAL_SEGMENT_HEADER_SIZE + (e->sealed ? body & ~(size_t)7 : 0),
               e->sealed ? count : 0);
}

static void write_image(void)
{
    int fd = open(seg1, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    CHECK(fd >= 0);
    CHECK(write(fd, image, sizeof image) == (ssize_t)sizeof image);
    close(fd);
}

/* The frame around a record returned by the reader must be valid on its own terms. */
static void check_frame(const uint8_t *rec, uint32_t len)
{
    const uint8_t *frame = rec - 8;
    CHECK(len > 0);
    CHECK(ud_get_le32(frame + 4) == len);
    CHECK(ud_get_le32(frame) == ud_crc32c(0, frame + 4, 4 + (size_t)len));
    CHECK(memcmp(rec + len, trailer, 8) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct expect e;
    build_image(data, size, &e);
    unlink(seg2);
    write_image();

    struct ud_wal_options o = {.dir = dir,
                               .segment_size = SEG_SIZE,
                               .sync_mode = UD_WAL_SYNC_NONE,
                               .index_interval = 4,
                               .fs = &mem_fs};
    struct ud_wal *wal = NULL;
    char err[UD_ERRMSG_SIZE] = "";
    int rc = ud_wal_open(&o, &wal, err);
    if (rc != 0) {
        CHECK(rc == UD_ECORRUPT || rc == UD_EVERSION || rc == UD_EIO);
        CHECK(wal == NULL);
        CHECK(strstr(err, "0000000001.seg") != NULL);
        /* Damage to a structured active segment is a torn tail, never an open failure. */
        CHECK(!e.structured || e.corrupt_expected);
        return 0;
    }
    CHECK(!e.corrupt_expected);
    uint64_t first = ud_wal_first_lsn(wal), last = ud_wal_last_lsn(wal);
    /* A header we wrote is valid, so its first LSN must be kept (raw inputs: unknown). */
    if (e.first_lsn != 0)
        CHECK(first == e.first_lsn);
    if (e.structured)
        CHECK(last + 1 - first == e.survivors);
    CHECK(last + 1 >= first);

    struct ud_wal_reader *r = NULL;
    CHECK(ud_wal_reader_open(wal, first, 0, &r) == 0);
    const uint8_t *rec;
    uint32_t len;
    uint64_t lsn, n = 0;
    while ((rc = ud_wal_reader_next(r, &rec, &len, &lsn)) == 0) {
        CHECK(lsn == first + n);
        check_frame(rec, len);
        n++;
    }
    CHECK(rc == UD_EAGAIN);
    CHECK(n == last - first + 1);

    /* Recovery leaves the log appendable; the new record is the next LSN and reads back. */
    uint8_t buf[97];
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (uint8_t)(i * 31 + size);
    uint64_t new_lsn = 0;
    CHECK(ud_wal_append(wal, buf, sizeof buf, &new_lsn, NULL) == 0);
    CHECK(new_lsn == last + 1);
    CHECK(ud_wal_reader_next(r, &rec, &len, &lsn) == 0);
    CHECK(lsn == new_lsn && len == sizeof buf && memcmp(rec, buf, len) == 0);
    check_frame(rec, len);
    ud_wal_reader_close(r);

    /* A reader positioned from the sparse index finds the same record. */
    CHECK(ud_wal_reader_open(wal, new_lsn, 0, &r) == 0);
    CHECK(ud_wal_reader_next(r, &rec, &len, &lsn) == 0);
    CHECK(lsn == new_lsn && len == sizeof buf && memcmp(rec, buf, len) == 0);
    ud_wal_reader_close(r);
    ud_wal_close(wal);
    return 0;
}
