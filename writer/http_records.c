/* LOB chunk positions and If-Match values for the HTTP write API (its records are encoded by the
 * engine, core/engine_encode.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/keyspace.h"
#include "proto/record.h"
#include "writer/http_write.h"

int ud_writer_http_lob_position(const struct ud_txn_info *info, const uint8_t *key, size_t key_len,
                                uint64_t offset, size_t len, uint32_t crc,
                                const struct ud_writer_http_chunk *chunks, size_t nchunks,
                                int complete, uint64_t *at, uint64_t *expected, char *errmsg)
{
    *expected = UINT64_MAX;
    if (info->lob_key_len > 0 &&
        (info->lob_key_len != key_len || memcmp(info->lob_key, key, key_len) != 0))
        return ud_errf(errmsg, UD_ECONFLICT,
                       "this transaction holds lob key %.*s: a lob transaction holds exactly one "
                       "key",
                       (int)info->lob_key_len, (const char *)info->lob_key);
    if (info->op == UD_OP_DELETE) {
        *at = 0;
        return 0;
    }
    if (offset == UINT64_MAX || offset == info->bytes) {
        *at = info->bytes;
        return 0;
    }
    /* A retried chunk: its bytes are all held already (a client that lost our answer). */
    if (offset < info->bytes && len <= info->bytes - offset && len > 0) {
        if (!complete)
            return 1;
        for (size_t i = 0; i < nchunks; i++) {
            if (chunks[i].offset != offset || chunks[i].len != len)
                continue;
            if (chunks[i].crc == crc)
                return 1;
            /* Answered 200, the client would hold an object that is not the one it sent. */
            return ud_errf(errmsg, UD_ECONFLICT,
                           "lob chunk at offset %llu (%zu bytes) differs from the chunk appended "
                           "there: a retried chunk must repeat the same bytes",
                           (unsigned long long)offset, len);
        }
    }
    *expected = info->bytes;
    return ud_errf(errmsg, UD_ECONFLICT,
                   "lob chunk at offset %llu (%zu bytes) does not continue the object: the "
                   "expected offset is %llu",
                   (unsigned long long)offset, len, (unsigned long long)info->bytes);
}

int ud_writer_http_if_match_parse(const char *v, size_t len, uint64_t *lsn, int *any)
{
    *any = 0;
    *lsn = 0;
    while (len > 0 && (v[0] == ' ' || v[0] == '\t'))
        v++, len--;
    while (len > 0 && (v[len - 1] == ' ' || v[len - 1] == '\t'))
        len--;
    if (len == 1 && v[0] == '*') {
        *any = 1;
        return 0;
    }
    if (len >= 2 && v[0] == '"' && v[len - 1] == '"')
        v++, len -= 2;
    if (len == 0 || len > 20)
        return UD_EINVAL;
    uint64_t x = 0;
    for (size_t i = 0; i < len; i++) {
        if (v[i] < '0' || v[i] > '9')
            return UD_EINVAL;
        uint64_t d = (uint64_t)(v[i] - '0');
        if (x > (UINT64_MAX - d) / 10)
            return UD_EINVAL;
        x = x * 10 + d;
    }
    *lsn = x;
    return 0;
}
