/* libFuzzer target for the replication stream parser: arbitrary bytes, fed in chunks whose sizes
 * come from the input, either yield records and heartbeats or stop with a documented code and a
 * message. Every record handed out is one the parser verified: its LSN is the next one and its
 * own LSN field agrees. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/endian.h"
#include "core/err.h"
#include "proto/record.h"
#include "proto/stream.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_stream: check failed: %s (line %d)\n", #cond, __LINE__);         \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    /* The first byte picks the chunk size, the second the first LSN expected. */
    size_t chunk = (size_t)data[0] + 1;
    uint64_t next = (uint64_t)data[1] + 1;
    data += 2;
    size -= 2;
    struct ud_stream_parser *p = ud_stream_parser_new(next);
    CHECK(p != NULL);
    size_t off = 0;
    int rc = 0;
    while (off < size && rc == 0) {
        size_t n = size - off < chunk ? size - off : chunk;
        CHECK(ud_stream_parser_feed(p, data + off, n) == 0);
        off += n;
        for (;;) {
            enum ud_stream_event ev;
            struct ud_stream_record rec;
            struct ud_stream_heartbeat hb;
            char errmsg[UD_ERRMSG_SIZE] = "";
            rc = ud_stream_parser_next(p, &ev, &rec, &hb, errmsg);
            if (rc != 0) {
                CHECK(rc == UD_ECORRUPT || rc == UD_ERANGE || rc == UD_EVERSION);
                CHECK(errmsg[0] != '\0');
                break;
            }
            if (ev == UD_STREAM_NEED_MORE)
                break;
            if (ev == UD_STREAM_EV_RECORD) {
                CHECK(rec.lsn == next);
                CHECK(rec.len >= UD_RECORD_LSN_OFFSET + 8);
                CHECK(ud_get_le64(rec.data + UD_RECORD_LSN_OFFSET) == rec.lsn);
                next++;
            }
        }
    }
    ud_stream_parser_free(p);
    return 0;
}
