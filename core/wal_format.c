/* WALFS on-disk format v1: segment header and record frame encoding and validation. */
#include <string.h>

#include "core/crc32c.h"
#include "core/endian.h"
#include "core/wal_int.h"

/* The seed prints the canary with a typo; these are the bytes the Go original writes. */
const uint8_t ud_wal_trailer[UD_WAL_TRAILER_SIZE] = {0xDE, 0xAD, 0xBE, 0xEF,
                                                     0xFE, 0xED, 0xFA, 0xCE};

void ud_wal_header_encode(const struct ud_wal_header *h, uint8_t *out)
{
    uint8_t buf[UD_WAL_SEGMENT_HEADER_SIZE];
    memset(buf, 0, sizeof buf);
    ud_put_le32(buf + UD_WAL_OFF_MAGIC, h->magic);
    ud_put_le32(buf + UD_WAL_OFF_VERSION, h->version);
    ud_put_le64(buf + UD_WAL_OFF_CREATED, h->created_ns);
    ud_put_le64(buf + UD_WAL_OFF_MODIFIED, h->modified_ns);
    ud_put_le64(buf + UD_WAL_OFF_WRITE_OFFSET, h->write_offset);
    ud_put_le64(buf + UD_WAL_OFF_ENTRY_COUNT, h->entry_count);
    ud_put_le32(buf + UD_WAL_OFF_FLAGS, h->flags);
    ud_put_le64(buf + UD_WAL_OFF_FIRST_LSN, h->first_lsn);
    ud_put_le32(buf + UD_WAL_OFF_CRC, ud_crc32c(0, buf, UD_WAL_HEADER_CRC_LEN));
    /* One copy of the finished header keeps the window in which the mapping holds a half-updated
     * header as small as possible (writeback may snapshot the page at any moment). */
    memcpy(out, buf, sizeof buf);
}

int ud_wal_header_decode(const uint8_t *buf, uint64_t size, struct ud_wal_header *h, char *errmsg)
{
    if (buf == NULL || size < UD_WAL_SEGMENT_HEADER_SIZE)
        return ud_errf(errmsg, UD_ECORRUPT, "file of %llu bytes is shorter than its header",
                       (unsigned long long)size);
    h->magic = ud_get_le32(buf + UD_WAL_OFF_MAGIC);
    if (h->magic != UD_WAL_MAGIC)
        return ud_errf(errmsg, UD_ECORRUPT, "bad header magic 0x%08x", h->magic);
    uint32_t want = ud_get_le32(buf + UD_WAL_OFF_CRC);
    uint32_t got = ud_crc32c(0, buf, UD_WAL_HEADER_CRC_LEN);
    if (want != got)
        return ud_errf(errmsg, UD_ECORRUPT, "bad header checksum (stored 0x%08x, computed 0x%08x)",
                       want, got);
    h->version = ud_get_le32(buf + UD_WAL_OFF_VERSION);
    if (h->version != UD_WAL_VERSION)
        return ud_errf(errmsg, UD_EVERSION, "format version %u, this build reads version %u",
                       h->version, UD_WAL_VERSION);
    h->created_ns = ud_get_le64(buf + UD_WAL_OFF_CREATED);
    h->modified_ns = ud_get_le64(buf + UD_WAL_OFF_MODIFIED);
    h->write_offset = ud_get_le64(buf + UD_WAL_OFF_WRITE_OFFSET);
    h->entry_count = ud_get_le64(buf + UD_WAL_OFF_ENTRY_COUNT);
    h->flags = ud_get_le32(buf + UD_WAL_OFF_FLAGS);
    h->first_lsn = ud_get_le64(buf + UD_WAL_OFF_FIRST_LSN);
    if (h->flags != UD_WAL_FLAG_ACTIVE && h->flags != UD_WAL_FLAG_SEALED)
        return ud_errf(errmsg, UD_ECORRUPT, "bad header flags 0x%x", h->flags);
    if (h->write_offset < UD_WAL_SEGMENT_HEADER_SIZE || h->write_offset > size ||
        h->write_offset % 8 != 0)
        return ud_errf(errmsg, UD_ECORRUPT, "bad header write offset %llu (file size %llu)",
                       (unsigned long long)h->write_offset, (unsigned long long)size);
    if (h->first_lsn == 0 || h->first_lsn > UINT64_MAX / 2)
        return ud_errf(errmsg, UD_ECORRUPT, "bad header first LSN %llu",
                       (unsigned long long)h->first_lsn);
    if (h->entry_count > (h->write_offset - UD_WAL_SEGMENT_HEADER_SIZE) / 24)
        return ud_errf(errmsg, UD_ECORRUPT, "bad header entry count %llu for write offset %llu",
                       (unsigned long long)h->entry_count, (unsigned long long)h->write_offset);
    return 0;
}

bool ud_wal_header_intact(const uint8_t *buf, uint64_t size)
{
    return buf != NULL && size >= UD_WAL_SEGMENT_HEADER_SIZE &&
           ud_get_le32(buf + UD_WAL_OFF_CRC) == ud_crc32c(0, buf, UD_WAL_HEADER_CRC_LEN);
}

uint32_t ud_wal_frame_crc(const void *data, uint32_t len)
{
    uint8_t lenbuf[4];
    ud_put_le32(lenbuf, len);
    return ud_crc32c(ud_crc32c(0, lenbuf, sizeof lenbuf), data, len);
}

uint64_t ud_wal_frame_encode(uint8_t *dst, uint32_t crc, const void *data, uint32_t len)
{
    memcpy(dst + 8, data, len);
    return ud_wal_frame_close(dst, crc, len);
}

uint64_t ud_wal_frame_close(uint8_t *dst, uint32_t crc, uint32_t len)
{
    uint64_t size = ud_wal_frame_size(len);
    ud_put_le32(dst, crc);
    ud_put_le32(dst + 4, len);
    memcpy(dst + 8 + len, ud_wal_trailer, UD_WAL_TRAILER_SIZE);
    uint64_t pad = size - (UD_WAL_FRAME_OVERHEAD + len);
    if (pad > 0)
        memset(dst + UD_WAL_FRAME_OVERHEAD + len, 0, pad);
    return size;
}

enum ud_wal_frame_status ud_wal_frame_check_shape(const uint8_t *buf, uint64_t limit, uint64_t off,
                                                  uint32_t *len)
{
    if (off > limit || limit - off < UD_WAL_FRAME_OVERHEAD)
        return UD_WAL_FRAME_END;
    uint32_t crc = ud_get_le32(buf + off);
    uint32_t n = ud_get_le32(buf + off + 4);
    if (n == 0)
        return crc == 0 ? UD_WAL_FRAME_END : UD_WAL_FRAME_BAD_LENGTH;
    if (ud_wal_frame_size(n) > limit - off)
        return UD_WAL_FRAME_BAD_LENGTH;
    if (memcmp(buf + off + 8 + n, ud_wal_trailer, UD_WAL_TRAILER_SIZE) != 0)
        return UD_WAL_FRAME_BAD_TRAILER;
    *len = n;
    return UD_WAL_FRAME_OK;
}

enum ud_wal_frame_status ud_wal_frame_check(const uint8_t *buf, uint64_t limit, uint64_t off,
                                            uint32_t *len)
{
    uint32_t n;
    enum ud_wal_frame_status st = ud_wal_frame_check_shape(buf, limit, off, &n);
    if (st != UD_WAL_FRAME_OK)
        return st;
    if (ud_crc32c(ud_crc32c(0, buf + off + 4, 4), buf + off + 8, n) != ud_get_le32(buf + off))
        return UD_WAL_FRAME_BAD_CRC;
    *len = n;
    return UD_WAL_FRAME_OK;
}

int ud_wal_frame_verify(const uint8_t *buf, uint64_t limit, uint64_t off, uint32_t *data_len,
                        uint64_t *frame_size, char *errmsg)
{
    uint32_t n = 0;
    enum ud_wal_frame_status st = ud_wal_frame_check(buf, limit, off, &n);
    if (st == UD_WAL_FRAME_END)
        return ud_errf(errmsg, UD_ECORRUPT, "no record frame at offset %llu",
                       (unsigned long long)off);
    if (st != UD_WAL_FRAME_OK)
        return ud_errf(errmsg, UD_ECORRUPT, "%s at offset %llu", ud_wal_frame_status_str(st),
                       (unsigned long long)off);
    uint64_t size = ud_wal_frame_size(n);
    for (uint64_t i = off + UD_WAL_FRAME_OVERHEAD + n; i < off + size; i++)
        if (buf[i] != 0)
            return ud_errf(errmsg, UD_ECORRUPT, "nonzero record padding at offset %llu",
                           (unsigned long long)i);
    *data_len = n;
    *frame_size = size;
    return 0;
}

const char *ud_wal_frame_status_str(enum ud_wal_frame_status st)
{
    switch (st) {
    case UD_WAL_FRAME_OK:
        return "valid record";
    case UD_WAL_FRAME_END:
        return "end of records";
    case UD_WAL_FRAME_BAD_LENGTH:
        return "bad record length";
    case UD_WAL_FRAME_BAD_TRAILER:
        return "bad record trailer";
    case UD_WAL_FRAME_BAD_CRC:
        return "bad record checksum";
    }
    return "bad record";
}
