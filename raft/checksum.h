/*
 * The checksums libraft 0.15 uses, provided by this program (raft/checksum.c says why).
 *
 * libraft declares these in its private src/byte.h and defines them in src/byte.c; the programs
 * link libraft statically and this file whole (meson.build, raft_dep), so the linker never takes
 * raft's byte.o.
 * The names, signatures and struct layout must stay those of raft 0.15: raft's own objects call
 * them, and raft_digest keeps a struct byteSha1 on its stack.
 */
#ifndef UD_RAFT_CHECKSUM_H
#define UD_RAFT_CHECKSUM_H

#include <stddef.h>
#include <stdint.h>

/* CRC-32 over buf, continuing from init: polynomial 0x04C11DB7, most significant bit first, no
 * reflection and no final xor (raft's segment and snapshot checksums; 0 starts a new one). */
unsigned byteCrc32(const void *buf, size_t size, unsigned init);

/* The same CRC without carry-less multiplication: what CPUs without PCLMULQDQ run, and what
 * byteCrc32 runs for inputs under 64 bytes and the last bytes of longer ones. */
unsigned ud_raft_crc32_portable(const void *buf, size_t size, unsigned init);

/* SHA-1 (FIPS 180-4); raft_digest derives server ids from it. */
struct byteSha1 {
    uint32_t state[5];
    uint32_t count[2];
    uint8_t buffer[64];
    uint8_t value[20];
};

void byteSha1Init(struct byteSha1 *s);
void byteSha1Update(struct byteSha1 *s, const uint8_t *data, uint32_t len);
void byteSha1Digest(struct byteSha1 *s, uint8_t value[20]);

/* Which CRC implementation this CPU runs ("pclmul" or "slice-by-8"); node.c logs it. */
const char *ud_raft_checksum_impl(void);

#endif
