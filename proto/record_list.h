/*
 * The body of `POST /internal/v1/{ns}/records`: encoded log records one after the other, each as
 * `u32 length` (little-endian) then its bytes (docs/format-record.md, "Record lists"). Followers
 * and forwarding relayers pack the records a RESP write was turned into; the leader unpacks them
 * into its submit seam.
 */
#ifndef UD_PROTO_RECORD_LIST_H
#define UD_PROTO_RECORD_LIST_H

#include <stddef.h>
#include <stdint.h>

/* Packs records[0..n) into one malloc'd list and frees each records[i] (the submit seam hands
 * over records it owns). Returns the list, its size in *len; aborts when out of memory (network
 * glue, STYLE.md). */
uint8_t *ud_record_list_pack(uint8_t **records, const size_t *lens, size_t n, size_t *len);

/* Splits a list into at most max malloc'd copies of its records (the submit seam takes ownership
 * of them). Returns 0 with *n set, or -1 when the list is malformed or holds more than max
 * records: *bad_index and *bad_offset then name the record and its byte offset, and nothing is
 * left allocated. Aborts when out of memory. */
int ud_record_list_unpack(const uint8_t *list, size_t len, uint8_t **records, size_t *lens,
                          size_t max, size_t *n, size_t *bad_index, size_t *bad_offset);

#endif
