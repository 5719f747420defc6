/*
 * Replication stream frames (docs/format-stream.md): what GET /api/v1/{ns}/wal/stream sends.
 *
 *   off size field
 *   0   1    version   UD_STREAM_VERSION
 *   1   1    type      enum ud_stream_type
 *   2   2    reserved  0
 *   4   4    count     RECORDS: WAL frames in the body (>= 1); HEARTBEAT: 0
 *   8   8    lsn       RECORDS: LSN of the first WAL frame; HEARTBEAT: sender's last LSN
 *   16  4    body_len  bytes after the header
 *   20  4    crc       CRC32C of bytes 0..19
 *
 * A RECORDS body is `count` WAL frames exactly as stored in a segment (docs/format-wal.md); a
 * HEARTBEAT body is u64 time_ns | u64 first_lsn.
 *
 * Senders build headers with ud_stream_header_encode and send WAL bytes from their mapping.
 * Receivers feed whatever bytes arrive into a ud_stream_parser, which hands back whole, verified
 * frames (every header CRC, every WAL frame's CRC, trailer and padding, the count and the LSN
 * continuity checked before a single record is handed out).
 */
#ifndef UD_PROTO_STREAM_H
#define UD_PROTO_STREAM_H

#include <stddef.h>
#include <stdint.h>

#define UD_STREAM_VERSION        1
#define UD_STREAM_HEADER_SIZE    24
#define UD_STREAM_HEARTBEAT_BODY 16
/* Largest body: room for a record of UD_RECORD_MAX_SIZE with its frame, and for batches. */
#define UD_STREAM_MAX_BODY     (8u << 20)
#define UD_STREAM_CONTENT_TYPE "application/x-unison-wal-stream"

enum ud_stream_type {
    UD_STREAM_RECORDS = 1,
    UD_STREAM_HEARTBEAT = 2,
};

struct ud_stream_header {
    uint8_t type;
    uint32_t count;
    uint64_t lsn;
    uint32_t body_len;
};

/* Writes the 24-byte header (CRC included). */
void ud_stream_header_encode(uint8_t out[UD_STREAM_HEADER_SIZE], const struct ud_stream_header *h);

/* Decodes and checks a header: version, type, reserved bytes, CRC, and a body length that the
 * type allows. Returns 0 or UD_ECORRUPT / UD_EVERSION with errmsg naming the field. */
int ud_stream_header_decode(const uint8_t in[UD_STREAM_HEADER_SIZE], struct ud_stream_header *h,
                            char *errmsg);

/* Writes a whole heartbeat frame (header + body). */
#define UD_STREAM_HEARTBEAT_FRAME (UD_STREAM_HEADER_SIZE + UD_STREAM_HEARTBEAT_BODY)
void ud_stream_heartbeat_encode(uint8_t out[UD_STREAM_HEARTBEAT_FRAME], uint64_t last_lsn,
                                uint64_t time_ns, uint64_t first_lsn);

/* One record handed out by the parser: data is the encoded log record (a view into the parser's
 * buffer, valid until the next ud_stream_parser_feed/next/free), lsn its position. */
struct ud_stream_record {
    const uint8_t *data;
    uint32_t len;
    uint64_t lsn;
};

struct ud_stream_heartbeat {
    uint64_t last_lsn;
    uint64_t time_ns;
    uint64_t first_lsn;
};

struct ud_stream_parser;

/* A parser expecting the first record at next_lsn. Returns NULL when out of memory. */
struct ud_stream_parser *ud_stream_parser_new(uint64_t next_lsn);
void ud_stream_parser_free(struct ud_stream_parser *p);

/* Appends received bytes (copied). Returns 0 or UD_ENOMEM. */
int ud_stream_parser_feed(struct ud_stream_parser *p, const void *data, size_t len);

enum ud_stream_event {
    UD_STREAM_NEED_MORE = 0, /* no whole frame buffered: feed more bytes */
    UD_STREAM_EV_RECORD = 1, /* *rec is the next record (its LSN is the parser's next LSN) */
    UD_STREAM_EV_HEARTBEAT = 2,
};

/*
 * Takes the next event into *ev. A records frame is verified whole before its first record is
 * handed out, so a corrupt or truncated frame never yields any of its records. Returns 0, or
 * UD_ECORRUPT (bad header or WAL frame, count mismatch, a record whose LSN field disagrees with its
 * position), UD_ERANGE (the frame does not start at the expected LSN: a gap or a duplicate),
 * UD_EVERSION, with errmsg naming what is wrong and at which LSN. After an error the parser is
 * unusable: drop the connection and start again with a new parser.
 */
int ud_stream_parser_next(struct ud_stream_parser *p, enum ud_stream_event *ev,
                          struct ud_stream_record *rec, struct ud_stream_heartbeat *hb,
                          char *errmsg);

/* LSN the next record must carry. */
uint64_t ud_stream_parser_next_lsn(const struct ud_stream_parser *p);

/* Bytes fed but not yet consumed (a truncated stream ends with this > 0). */
size_t ud_stream_parser_pending(const struct ud_stream_parser *p);

#endif
