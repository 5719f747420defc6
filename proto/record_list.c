#include "proto/record_list.h"

#include <stdlib.h>
#include <string.h>

#include "core/endian.h"

uint8_t *ud_record_list_pack(uint8_t **records, const size_t *lens, size_t n, size_t *len)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += 4 + lens[i];
    uint8_t *list = malloc(total ? total : 1);
    if (list == NULL)
        abort();
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        ud_put_le32(list + off, (uint32_t)lens[i]);
        memcpy(list + off + 4, records[i], lens[i]);
        off += 4 + lens[i];
        free(records[i]);
    }
    *len = total;
    return list;
}

int ud_record_list_unpack(const uint8_t *list, size_t len, uint8_t **records, size_t *lens,
                          size_t max, size_t *n, size_t *bad_index, size_t *bad_offset)
{
    size_t off = 0, count = 0;
    while (off < len) {
        size_t l = len - off >= 4 ? ud_get_le32(list + off) : SIZE_MAX;
        if (count == max || l == SIZE_MAX || l > len - off - 4) {
            for (size_t i = 0; i < count; i++)
                free(records[i]);
            *bad_index = count;
            *bad_offset = off;
            return -1;
        }
        records[count] = malloc(l ? l : 1);
        if (records[count] == NULL)
            abort();
        memcpy(records[count], list + off + 4, l);
        lens[count++] = l;
        off += 4 + l;
    }
    *n = count;
    return 0;
}
