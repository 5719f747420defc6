/*
 * stream_check FROM_LSN FILE: feeds a captured body of GET wal/stream (docs/format-stream.md)
 * through the stream parser of proto/stream.h, as a relayer would, and prints one line:
 *   records=N first=F last=L heartbeats=H hb_last=X hb_first=Y pending=P
 * (pending: bytes of an incomplete frame at the end, normal when the capture was cut). Exits 1
 * with the parser's message when a frame is bad, so a test asserts the whole capture is valid.
 */
#include <stdio.h>
#include <stdlib.h>

#include "core/err.h"
#include "proto/stream.h"

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: stream_check FROM_LSN FILE\n");
        return 2;
    }
    uint64_t from = strtoull(argv[1], NULL, 10);
    FILE *f = fopen(argv[2], "rb");
    if (f == NULL) {
        perror(argv[2]);
        return 2;
    }
    struct ud_stream_parser *p = ud_stream_parser_new(from);
    if (p == NULL)
        return 2;
    uint64_t records = 0, first = 0, last = 0, heartbeats = 0, hb_last = 0, hb_first = 0;
    char buf[65536];
    size_t n;
    int status = 0;
    while (status == 0 && (n = fread(buf, 1, sizeof buf, f)) > 0) {
        if (ud_stream_parser_feed(p, buf, n) != 0) {
            fprintf(stderr, "out of memory\n");
            status = 2;
            break;
        }
        for (;;) {
            enum ud_stream_event ev;
            struct ud_stream_record rec;
            struct ud_stream_heartbeat hb;
            char err[UD_ERRMSG_SIZE] = "";
            int rc = ud_stream_parser_next(p, &ev, &rec, &hb, err);
            if (rc != 0) {
                fprintf(stderr, "stream_check: %s: %s\n", ud_strerror(rc), err);
                status = 1;
                break;
            }
            if (ev == UD_STREAM_NEED_MORE)
                break;
            if (ev == UD_STREAM_EV_RECORD) {
                if (records == 0)
                    first = rec.lsn;
                last = rec.lsn;
                records++;
            } else {
                heartbeats++;
                hb_last = hb.last_lsn;
                hb_first = hb.first_lsn;
            }
        }
    }
    fclose(f);
    printf("records=%llu first=%llu last=%llu heartbeats=%llu hb_last=%llu hb_first=%llu "
           "pending=%zu\n",
           (unsigned long long)records, (unsigned long long)first, (unsigned long long)last,
           (unsigned long long)heartbeats, (unsigned long long)hb_last,
           (unsigned long long)hb_first, ud_stream_parser_pending(p));
    ud_stream_parser_free(p);
    return status;
}
