/* Replication stream frames: header encoding and the receiver's parser (docs/format-stream.md). */
#include "proto/stream.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/crc32c.h"
#include "core/endian.h"
#include "core/err.h"
#include "core/wal.h"
#include "proto/record.h"

#define OFF_VERSION  0
#define OFF_TYPE     1
#define OFF_RESERVED 2
#define OFF_COUNT    4
#define OFF_LSN      8
#define OFF_BODY_LEN 16
#define OFF_CRC      20
/* The smallest WAL frame: 16 bytes of overhead plus one byte, padded to 8. */
#define MIN_WAL_FRAME 24

void ud_stream_header_encode(uint8_t out[UD_STREAM_HEADER_SIZE], const struct ud_stream_header *h)
{
    out[OFF_VERSION] = UD_STREAM_VERSION;
    out[OFF_TYPE] = h->type;
    out[OFF_RESERVED] = 0;
    out[OFF_RESERVED + 1] = 0;
    ud_put_le32(out + OFF_COUNT, h->count);
    ud_put_le64(out + OFF_LSN, h->lsn);
    ud_put_le32(out + OFF_BODY_LEN, h->body_len);
    ud_put_le32(out + OFF_CRC, ud_crc32c(0, out, OFF_CRC));
}

int ud_stream_header_decode(const uint8_t in[UD_STREAM_HEADER_SIZE], struct ud_stream_header *h,
                            char *errmsg)
{
    if (ud_get_le32(in + OFF_CRC) != ud_crc32c(0, in, OFF_CRC))
        return ud_errf(errmsg, UD_ECORRUPT, "stream frame header checksum mismatch");
    if (in[OFF_VERSION] != UD_STREAM_VERSION)
        return ud_errf(errmsg, UD_EVERSION, "stream frame version %u (this build reads %u)",
                       in[OFF_VERSION], UD_STREAM_VERSION);
    if (in[OFF_RESERVED] != 0 || in[OFF_RESERVED + 1] != 0)
        return ud_errf(errmsg, UD_ECORRUPT, "stream frame reserved bytes are not zero");
    h->type = in[OFF_TYPE];
    h->count = ud_get_le32(in + OFF_COUNT);
    h->lsn = ud_get_le64(in + OFF_LSN);
    h->body_len = ud_get_le32(in + OFF_BODY_LEN);
    switch (h->type) {
    case UD_STREAM_RECORDS:
        if (h->count == 0)
            return ud_errf(errmsg, UD_ECORRUPT, "records frame at LSN %llu with count 0",
                           (unsigned long long)h->lsn);
        if (h->lsn == 0)
            return ud_errf(errmsg, UD_ECORRUPT, "records frame with LSN 0");
        if (h->body_len % 8 != 0 || h->body_len > UD_STREAM_MAX_BODY ||
            h->body_len / MIN_WAL_FRAME < h->count)
            return ud_errf(errmsg, UD_ECORRUPT,
                           "records frame at LSN %llu: body length %u cannot hold %u records "
                           "(multiple of 8, at most %u)",
                           (unsigned long long)h->lsn, h->body_len, h->count, UD_STREAM_MAX_BODY);
        return 0;
    case UD_STREAM_HEARTBEAT:
        if (h->count != 0 || h->body_len != UD_STREAM_HEARTBEAT_BODY)
            return ud_errf(errmsg, UD_ECORRUPT,
                           "heartbeat frame with count %u and body length %u (want 0 and %u)",
                           h->count, h->body_len, UD_STREAM_HEARTBEAT_BODY);
        return 0;
    default:
        return ud_errf(errmsg, UD_ECORRUPT, "stream frame type %u is not 1 or 2", h->type);
    }
}

void ud_stream_heartbeat_encode(uint8_t out[UD_STREAM_HEARTBEAT_FRAME], uint64_t last_lsn,
                                uint64_t time_ns, uint64_t first_lsn)
{
    struct ud_stream_header h = {.type = UD_STREAM_HEARTBEAT,
                                 .count = 0,
                                 .lsn = last_lsn,
                                 .body_len = UD_STREAM_HEARTBEAT_BODY};
    ud_stream_header_encode(out, &h);
    ud_put_le64(out + UD_STREAM_HEADER_SIZE, time_ns);
    ud_put_le64(out + UD_STREAM_HEADER_SIZE + 8, first_lsn);
}

/* ---- parser ---- */

/*
 * buf[start, len) holds bytes fed and not yet consumed. While a verified records frame is being
 * handed out, buf[pos, frame_end) holds its remaining WAL frames and left counts them; the frame
 * is consumed (start = frame_end) once its last record has been returned.
 */
struct ud_stream_parser {
    uint8_t *buf;
    size_t cap;
    size_t start;
    size_t len;
    size_t pos;
    size_t frame_end;
    uint32_t left;
    uint64_t next_lsn;
    int failed; /* the first error: every later call returns it */
    char failmsg[UD_ERRMSG_SIZE];
};

struct ud_stream_parser *ud_stream_parser_new(uint64_t next_lsn)
{
    struct ud_stream_parser *p = calloc(1, sizeof *p);
    if (p != NULL)
        p->next_lsn = next_lsn;
    return p;
}

void ud_stream_parser_free(struct ud_stream_parser *p)
{
    if (p == NULL)
        return;
    free(p->buf);
    free(p);
}

int ud_stream_parser_feed(struct ud_stream_parser *p, const void *data, size_t n)
{
    if (n == 0)
        return 0;
    /* Reclaim consumed bytes, but not while a frame is being handed out: pos and frame_end
     * point into it. */
    if (p->start > 0 && p->left == 0) {
        memmove(p->buf, p->buf + p->start, p->len - p->start);
        p->len -= p->start;
        p->start = 0;
    }
    if (p->len + n > p->cap) {
        size_t cap = p->cap ? p->cap : 64u << 10;
        while (cap < p->len + n)
            cap *= 2;
        uint8_t *nb = realloc(p->buf, cap);
        if (nb == NULL)
            return UD_ENOMEM;
        p->buf = nb;
        p->cap = cap;
    }
    memcpy(p->buf + p->len, data, n);
    p->len += n;
    return 0;
}

/* Makes the parser unusable with code and the message in p->failmsg, copied to errmsg. */
static int fail(struct ud_stream_parser *p, int code, char *errmsg)
{
    p->failed = code;
    if (errmsg != NULL)
        snprintf(errmsg, UD_ERRMSG_SIZE, "%s", p->failmsg);
    return code;
}

/* Verifies the whole records frame whose body is buf[body, body + h->body_len). */
static int verify_records(struct ud_stream_parser *p, const struct ud_stream_header *h, size_t body,
                          char *errmsg)
{
    if (h->lsn != p->next_lsn)
        return ud_errf(errmsg, UD_ERANGE,
                       "records frame starts at LSN %llu but LSN %llu is next (%s)",
                       (unsigned long long)h->lsn, (unsigned long long)p->next_lsn,
                       h->lsn > p->next_lsn ? "a gap" : "a duplicate");
    const uint8_t *b = p->buf + body;
    uint64_t off = 0;
    for (uint32_t i = 0; i < h->count; i++) {
        uint64_t lsn = h->lsn + i;
        if (off >= h->body_len)
            return ud_errf(errmsg, UD_ECORRUPT,
                           "records frame at LSN %llu: count %u but the body ends after %u "
                           "records",
                           (unsigned long long)h->lsn, h->count, i);
        uint32_t n;
        uint64_t size;
        char why[UD_ERRMSG_SIZE];
        if (ud_wal_frame_verify(b, h->body_len, off, &n, &size, why) != 0)
            return ud_errf(errmsg, UD_ECORRUPT, "record LSN %llu: %s of the frame body",
                           (unsigned long long)lsn, why);
        if (n < UD_RECORD_LSN_OFFSET + 8)
            return ud_errf(errmsg, UD_ECORRUPT, "record LSN %llu: %u bytes is too short",
                           (unsigned long long)lsn, n);
        uint64_t field = ud_get_le64(b + off + 8 + UD_RECORD_LSN_OFFSET);
        if (field != lsn)
            return ud_errf(errmsg, UD_ECORRUPT, "record at LSN %llu carries LSN %llu in its header",
                           (unsigned long long)lsn, (unsigned long long)field);
        off += size;
    }
    if (off != h->body_len)
        return ud_errf(
            errmsg, UD_ECORRUPT, "records frame at LSN %llu: %llu bytes after its %u records",
            (unsigned long long)h->lsn, (unsigned long long)(h->body_len - off), h->count);
    return 0;
}

int ud_stream_parser_next(struct ud_stream_parser *p, enum ud_stream_event *ev,
                          struct ud_stream_record *rec, struct ud_stream_heartbeat *hb,
                          char *errmsg)
{
    *ev = UD_STREAM_NEED_MORE;
    if (p->failed != 0) {
        if (errmsg != NULL)
            snprintf(errmsg, UD_ERRMSG_SIZE, "%s", p->failmsg);
        return p->failed;
    }
    if (p->left == 0) {
        if (p->len - p->start < UD_STREAM_HEADER_SIZE)
            return 0;
        struct ud_stream_header h;
        char why[UD_ERRMSG_SIZE];
        int rc = ud_stream_header_decode(p->buf + p->start, &h, why);
        if (rc != 0) {
            ud_errf(p->failmsg, rc, "after LSN %llu: %s", (unsigned long long)p->next_lsn - 1, why);
            return fail(p, rc, errmsg);
        }
        size_t body = p->start + UD_STREAM_HEADER_SIZE;
        if (p->len - body < h.body_len)
            return 0;
        if (h.type == UD_STREAM_HEARTBEAT) {
            hb->last_lsn = h.lsn;
            hb->time_ns = ud_get_le64(p->buf + body);
            hb->first_lsn = ud_get_le64(p->buf + body + 8);
            p->start = body + h.body_len;
            *ev = UD_STREAM_EV_HEARTBEAT;
            return 0;
        }
        rc = verify_records(p, &h, body, p->failmsg);
        if (rc != 0)
            return fail(p, rc, errmsg);
        p->pos = body;
        p->frame_end = body + h.body_len;
        p->left = h.count;
    }
    /* Hand out the next record of the verified frame. */
    uint32_t n = ud_get_le32(p->buf + p->pos + 4);
    rec->data = p->buf + p->pos + 8;
    rec->len = n;
    rec->lsn = p->next_lsn++;
    p->pos += (UD_WAL_FRAME_OVERHEAD + (size_t)n + 7) & ~(size_t)7;
    if (--p->left == 0)
        p->start = p->frame_end;
    *ev = UD_STREAM_EV_RECORD;
    return 0;
}

uint64_t ud_stream_parser_next_lsn(const struct ud_stream_parser *p)
{
    return p->next_lsn;
}

size_t ud_stream_parser_pending(const struct ud_stream_parser *p)
{
    return p->len - p->start;
}
