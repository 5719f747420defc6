/* CRC32C (Castagnoli), the checksum of WAL segment headers and records (ARCHITECTURE.md section 8).
 */
#ifndef UD_CORE_CRC32C_H
#define UD_CORE_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/*
 * Extends crc with len bytes of data. Start with crc = 0; crc32c(crc32c(0, a), b) == crc32c(0, ab).
 * Uses the SSE4.2 instruction when the CPU has it, a table otherwise (same results).
 */
uint32_t ud_crc32c(uint32_t crc, const void *data, size_t len);

#endif
