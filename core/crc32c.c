/* CRC32C: hardware (SSE4.2 crc32 instruction, three streams at once) with a slicing-by-8 table
 * fallback. */
#include "core/crc32c.h"

#include <pthread.h>
#include <string.h>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

#define POLY 0x82F63B78u /* reflected Castagnoli polynomial */

static uint32_t table[8][256];
static int have_hw;
static pthread_once_t init_once = PTHREAD_ONCE_INIT;

/*
 * The crc32 instruction takes 3 cycles and the next one needs its result, but the CPU can start
 * one every cycle: one stream of a 1 KiB record runs at a third of the instruction's throughput.
 * So the hardware path checksums three adjacent stretches of LONG (then SHORT) bytes at once and
 * joins their results: the CRC of a||b is the CRC of a moved over |b| zero bytes, xor the CRC of
 * b from zero (the register is linear over GF(2)). Moving over a fixed number of zero bytes is a
 * linear map of the 32-bit register, kept as four byte-indexed tables per length (shift_long,
 * shift_short). With 1 KiB WAL records the checksum was ~7% of put-none's append thread
 * (docs/benchmarks.md, "put-none (issue 2, 2026-11-22)").
 */
#define LONG  256
#define SHORT 64
static uint32_t shift_long[4][256];
static uint32_t shift_short[4][256];

/* The register after n zero bytes, from crc (reflected, no inversion), one bit at a time: only
 * used to fill the shift tables. */
static uint32_t zeros_slow(uint32_t crc, size_t n)
{
    for (size_t i = 0; i < 8 * n; i++)
        crc = (crc & 1) ? (crc >> 1) ^ POLY : crc >> 1;
    return crc;
}

static void fill_shift(uint32_t t[4][256], size_t n)
{
    uint32_t bit[32];
    for (int b = 0; b < 32; b++)
        bit[b] = zeros_slow(1u << b, n);
    for (int k = 0; k < 4; k++)
        for (uint32_t v = 0; v < 256; v++) {
            uint32_t r = 0;
            for (int b = 0; b < 8; b++)
                if (v & (1u << b))
                    r ^= bit[8 * k + b];
            t[k][v] = r;
        }
}

static inline uint32_t shift(const uint32_t t[4][256], uint32_t crc)
{
    return t[0][crc & 0xff] ^ t[1][(crc >> 8) & 0xff] ^ t[2][(crc >> 16) & 0xff] ^ t[3][crc >> 24];
}

static void init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ POLY : c >> 1;
        table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            table[t][i] = (table[t - 1][i] >> 8) ^ table[0][table[t - 1][i] & 0xff];
    fill_shift(shift_long, LONG);
    fill_shift(shift_short, SHORT);
#if defined(__x86_64__)
    __builtin_cpu_init();
    have_hw = __builtin_cpu_supports("sse4.2");
#endif
}

static uint32_t crc_sw(uint32_t crc, const unsigned char *p, size_t len)
{
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        w ^= crc;
        crc = table[7][w & 0xff] ^ table[6][(w >> 8) & 0xff] ^ table[5][(w >> 16) & 0xff] ^
              table[4][(w >> 24) & 0xff] ^ table[3][(w >> 32) & 0xff] ^ table[2][(w >> 40) & 0xff] ^
              table[1][(w >> 48) & 0xff] ^ table[0][w >> 56];
        p += 8;
        len -= 8;
    }
    while (len--)
        crc = (crc >> 8) ^ table[0][(crc ^ *p++) & 0xff];
    return crc;
}

#if defined(__x86_64__)
/* Three streams of n bytes each from p (n a multiple of 8); returns the register after all 3n. */
__attribute__((target("sse4.2"))) static inline uint64_t crc_hw3(uint64_t c, const unsigned char *p,
                                                                 size_t n, const uint32_t t[4][256])
{
    uint64_t c1 = 0, c2 = 0;
    for (size_t i = 0; i < n; i += 8) {
        uint64_t w0, w1, w2;
        memcpy(&w0, p + i, 8);
        memcpy(&w1, p + n + i, 8);
        memcpy(&w2, p + 2 * n + i, 8);
        c = _mm_crc32_u64(c, w0);
        c1 = _mm_crc32_u64(c1, w1);
        c2 = _mm_crc32_u64(c2, w2);
    }
    c = shift(t, (uint32_t)c) ^ (uint32_t)c1;
    return shift(t, (uint32_t)c) ^ (uint32_t)c2;
}

__attribute__((target("sse4.2"))) static uint32_t crc_hw(uint32_t crc, const unsigned char *p,
                                                         size_t len)
{
    uint64_t c = crc;
    for (; len >= 3 * LONG; p += 3 * LONG, len -= 3 * LONG)
        c = crc_hw3(c, p, LONG, shift_long);
    for (; len >= 3 * SHORT; p += 3 * SHORT, len -= 3 * SHORT)
        c = crc_hw3(c, p, SHORT, shift_short);
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c = _mm_crc32_u64(c, w);
        p += 8;
        len -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (len--)
        c32 = _mm_crc32_u8(c32, *p++);
    return c32;
}
#endif

uint32_t ud_crc32c(uint32_t crc, const void *data, size_t len)
{
    pthread_once(&init_once, init);
    crc = ~crc;
#if defined(__x86_64__)
    if (have_hw)
        return ~crc_hw(crc, data, len);
#endif
    return ~crc_sw(crc, data, len);
}
