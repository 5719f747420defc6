/* Order-preserving row key encoding (see keyspace.h). */
#include "core/keyspace.h"

#include <string.h>

#include "core/err.h"

size_t ud_row_prefix_len(const uint8_t *row, size_t row_len)
{
    size_t n = row_len + 2;
    for (size_t i = 0; i < row_len; i++)
        n += row[i] == 0;
    return n;
}

size_t ud_row_key_encode(uint8_t *out, const uint8_t *row, size_t row_len, const uint8_t *column,
                         size_t column_len)
{
    if (ud_row_prefix_len(row, row_len) + column_len > UD_MAX_KEY)
        return 0;
    size_t n = 0;
    for (size_t i = 0; i < row_len; i++) {
        out[n++] = row[i];
        if (row[i] == 0)
            out[n++] = 0xFF;
    }
    out[n++] = 0;
    out[n++] = 0;
    if (column_len > 0)
        memcpy(out + n, column, column_len);
    return n + column_len;
}

int ud_row_key_decode(const uint8_t *key, size_t key_len, uint8_t *row_out, size_t *row_len,
                      const uint8_t **column, size_t *column_len)
{
    /* No valid encoding is longer than UD_MAX_KEY, and row_out holds only that much: a longer
     * (corrupt) key must be refused before it is unescaped into row_out. */
    if (key_len > UD_MAX_KEY)
        return UD_ECORRUPT;
    size_t r = 0;
    for (size_t i = 0; i < key_len; i++) {
        if (key[i] != 0) {
            row_out[r++] = key[i];
            continue;
        }
        if (i + 1 >= key_len)
            return UD_ECORRUPT;
        if (key[i + 1] == 0xFF) {
            row_out[r++] = 0;
            i++;
            continue;
        }
        if (key[i + 1] != 0)
            return UD_ECORRUPT;
        *row_len = r;
        *column = key + i + 2;
        *column_len = key_len - i - 2;
        return 0;
    }
    return UD_ECORRUPT;
}
