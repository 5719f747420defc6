/*
 * Key spaces and the order-preserving row key encoding shared by the memtable and LMDB
 * (docs/format-lmdb.md). Each data model has its own space so a user key never aliases another
 * model's key.
 *
 * Row columns are stored one key per column: `esc(row) 00 00 column`, where esc() doubles every
 * 0x00 byte of the row key as `00 FF`. The encoding sorts first by row key bytes, then by column,
 * so row scans are in row-key order and a row is one contiguous key range. The key `esc(row) 00 00`
 * with an empty column is the row itself (used for whole-row tombstones in the memtable).
 */
#ifndef UD_CORE_KEYSPACE_H
#define UD_CORE_KEYSPACE_H

#include <stddef.h>
#include <stdint.h>

enum ud_space {
    UD_SPACE_KV = 1,  /* key -> u64le lsn | value */
    UD_SPACE_ROW = 2, /* esc(row) 00 00 column -> u64le lsn | value */
    UD_SPACE_LOB = 3, /* key -> LOB manifest */
};

/* Model limits, from LMDB's 511-byte key maximum. */
#define UD_MAX_KEY    511
#define UD_MAX_KV_KEY 511
#define UD_MAX_ROW_KEY_ENCODED                                                                     \
    509 /* escaped row key + column; = row + column without NUL bytes                              \
         */
#define UD_MAX_LOB_KEY 500

/* Length of esc(row) 00 00 for a row key. */
size_t ud_row_prefix_len(const uint8_t *row, size_t row_len);

/*
 * Writes esc(row) 00 00 column into out (UD_MAX_KEY bytes available) and returns its length, or 0
 * when the encoded key would exceed UD_MAX_KEY (the caller reports UD_ELIMIT).
 */
size_t ud_row_key_encode(uint8_t *out, const uint8_t *row, size_t row_len, const uint8_t *column,
                         size_t column_len);

/*
 * Splits an encoded row key. Writes the unescaped row key into row_out (UD_MAX_KEY bytes) and sets
 * *row_len, *column and *column_len (column is a view into key). Returns 0, or UD_ECORRUPT when key
 * is not a valid encoding.
 */
int ud_row_key_decode(const uint8_t *key, size_t key_len, uint8_t *row_out, size_t *row_len,
                      const uint8_t **column, size_t *column_len);

#endif
