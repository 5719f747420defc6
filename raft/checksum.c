/*
 * raft 0.15's checksums, faster than raft's own.
 *
 * raft_uv checksums every log entry it writes (and every one it loads) with byteCrc32, which
 * raft's src/byte.c computes one byte at a time from a 256-entry table: about 3 us per 1 KiB
 * entry, on the libuv loop thread of every writer. That was half of the loop thread's CPU under
 * redis-benchmark SET and 10-30 % of each writer's CPU in a 3-writer cluster (benchmarks.md).
 * The program links libraft statically and defines byteCrc32 and the byteSha1 functions here,
 * so raft's byte.o is never linked and raft's objects call these. The results are the same bits:
 * segments written by raft's own code load, and ours load in a build with raft's
 * (tests/unit/raft/test_checksum.c). Decision record: design-decisions.md, "raft checksums".
 *
 * The CRC folds 64 bytes at a time with carry-less multiplication (PCLMULQDQ) where the CPU has
 * it, and otherwise, and for short inputs and the last bytes, reads 8 bytes per step from eight
 * tables (slicing-by-8). The CRC is the non-reflected one (the first byte's top bit is the
 * highest coefficient), so zlib's crc32 and the SSE4.2 crc32 instruction (both reflected, and
 * another polynomial for the latter) do not compute it.
 */
#include "raft/checksum.h"

#include <pthread.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#define POLY 0x04C11DB7u

static uint32_t table[8][256];
/* x^n mod POLY for the fold distances: 16 bytes (n = 128 and 192) and 64 bytes (512, 576). */
static uint32_t k128, k192, k512, k576;
static int have_clmul;
static pthread_once_t init_once = PTHREAD_ONCE_INIT;

static uint32_t xpow_mod(unsigned n)
{
    uint32_t r = 1;
    while (n--)
        r = (r << 1) ^ ((r & 0x80000000u) ? POLY : 0);
    return r;
}

static void init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i << 24;
        for (int k = 0; k < 8; k++)
            c = (c << 1) ^ ((c & 0x80000000u) ? POLY : 0);
        table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            table[t][i] = (table[t - 1][i] << 8) ^ table[0][table[t - 1][i] >> 24];
    k128 = xpow_mod(128);
    k192 = xpow_mod(192);
    k512 = xpow_mod(512);
    k576 = xpow_mod(576);
#if defined(__x86_64__)
    __builtin_cpu_init();
    have_clmul = __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("ssse3");
#endif
}

static uint32_t load_be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint32_t crc_table(uint32_t crc, const unsigned char *p, size_t len)
{
    while (len >= 8) {
        uint32_t hi = load_be32(p) ^ crc, lo = load_be32(p + 4);
        crc = table[7][hi >> 24] ^ table[6][(hi >> 16) & 0xff] ^ table[5][(hi >> 8) & 0xff] ^
              table[4][hi & 0xff] ^ table[3][lo >> 24] ^ table[2][(lo >> 16) & 0xff] ^
              table[1][(lo >> 8) & 0xff] ^ table[0][lo & 0xff];
        p += 8;
        len -= 8;
    }
    while (len--)
        crc = (crc << 8) ^ table[0][(crc >> 24) ^ *p++];
    return crc;
}

#if defined(__x86_64__)
/*
 * 16 bytes as a polynomial of degree < 128: byte-reversed, so the first byte's top bit is bit 127.
 * A block B followed by d bytes equals B * x^(8d) + rest; with B = hi * x^64 + lo, modulo POLY
 * that is hi * (x^(64+8d) mod POLY) + lo * (x^(8d) mod POLY), two 64x32-bit carry-less products
 * that fit in 128 bits and are added (xor) to the block d bytes further on.
 */
__attribute__((target("pclmul,ssse3"))) static inline __m128i load_block(const unsigned char *p)
{
    const __m128i reverse = _mm_set_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    return _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)p), reverse);
}

__attribute__((target("pclmul,ssse3"))) static inline __m128i fold(__m128i x, __m128i k,
                                                                   __m128i next)
{
    return _mm_xor_si128(
        _mm_xor_si128(_mm_clmulepi64_si128(x, k, 0x11), _mm_clmulepi64_si128(x, k, 0x00)), next);
}

/* len >= 64. Folds into one 128-bit value congruent to the input, then the table finishes it
 * with the last len % 16 bytes. */
__attribute__((target("pclmul,ssse3"))) static uint32_t
crc_clmul(uint32_t crc, const unsigned char *p, size_t len)
{
    const __m128i k64 = _mm_set_epi64x((long long)k576, (long long)k512);
    const __m128i k16 = _mm_set_epi64x((long long)k192, (long long)k128);
    /* The running CRC enters as the first four bytes xored with it. */
    __m128i x0 = _mm_xor_si128(load_block(p), _mm_set_epi32((int)crc, 0, 0, 0));
    __m128i x1 = load_block(p + 16), x2 = load_block(p + 32), x3 = load_block(p + 48);
    p += 64;
    len -= 64;
    while (len >= 64) {
        x0 = fold(x0, k64, load_block(p));
        x1 = fold(x1, k64, load_block(p + 16));
        x2 = fold(x2, k64, load_block(p + 32));
        x3 = fold(x3, k64, load_block(p + 48));
        p += 64;
        len -= 64;
    }
    __m128i x = fold(fold(fold(x0, k16, x1), k16, x2), k16, x3);
    while (len >= 16) {
        x = fold(x, k16, load_block(p));
        p += 16;
        len -= 16;
    }
    unsigned char rest[32];
    const __m128i reverse = _mm_set_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    _mm_storeu_si128((__m128i *)rest, _mm_shuffle_epi8(x, reverse));
    memcpy(rest + 16, p, len);
    return crc_table(0, rest, 16 + len);
}
#endif

unsigned byteCrc32(const void *buf, size_t size, unsigned init_crc)
{
    pthread_once(&init_once, init);
#if defined(__x86_64__)
    if (have_clmul && size >= 64)
        return crc_clmul((uint32_t)init_crc, buf, size);
#endif
    return crc_table((uint32_t)init_crc, buf, size);
}

unsigned ud_raft_crc32_portable(const void *buf, size_t size, unsigned init_crc)
{
    pthread_once(&init_once, init);
    return crc_table((uint32_t)init_crc, buf, size);
}

const char *ud_raft_checksum_impl(void)
{
    pthread_once(&init_once, init);
    return have_clmul ? "pclmul" : "slice-by-8";
}

/* SHA-1, FIPS 180-4 section 6.1. count holds the message length in bytes (low, high word). */

static uint32_t rol(uint32_t v, int n)
{
    return (v << n) | (v >> (32 - n));
}

static void sha1_block(uint32_t h[5], const uint8_t block[64])
{
    uint32_t w[80];
    for (int t = 0; t < 16; t++)
        w[t] = load_be32(block + 4 * t);
    for (int t = 16; t < 80; t++)
        w[t] = rol(w[t - 3] ^ w[t - 8] ^ w[t - 14] ^ w[t - 16], 1);
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (int t = 0; t < 80; t++) {
        uint32_t f, k;
        if (t < 20) {
            f = (b & c) | (~b & d);
            k = 0x5A827999u;
        } else if (t < 40) {
            f = b ^ c ^ d;
            k = 0x6ED9EBA1u;
        } else if (t < 60) {
            f = (b & c) | (b & d) | (c & d);
            k = 0x8F1BBCDCu;
        } else {
            f = b ^ c ^ d;
            k = 0xCA62C1D6u;
        }
        uint32_t temp = rol(a, 5) + f + e + k + w[t];
        e = d;
        d = c;
        c = rol(b, 30);
        b = a;
        a = temp;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
}

void byteSha1Init(struct byteSha1 *s)
{
    static const uint32_t h0[5] = {0x67452301u, 0xEFCDAB89u, 0x98BADCFEu, 0x10325476u, 0xC3D2E1F0u};
    memcpy(s->state, h0, sizeof h0);
    s->count[0] = s->count[1] = 0;
}

void byteSha1Update(struct byteSha1 *s, const uint8_t *data, uint32_t len)
{
    size_t used = s->count[0] % 64;
    uint32_t low = s->count[0] + len;
    if (low < s->count[0])
        s->count[1]++;
    s->count[0] = low;
    while (len > 0) {
        size_t n = 64 - used < len ? 64 - used : len;
        memcpy(s->buffer + used, data, n);
        used += n;
        data += n;
        len -= (uint32_t)n;
        if (used == 64) {
            sha1_block(s->state, s->buffer);
            used = 0;
        }
    }
}

void byteSha1Digest(struct byteSha1 *s, uint8_t value[20])
{
    uint64_t bits = (((uint64_t)s->count[1] << 32) | s->count[0]) << 3;
    size_t used = s->count[0] % 64;
    s->buffer[used++] = 0x80;
    if (used > 56) {
        memset(s->buffer + used, 0, 64 - used);
        sha1_block(s->state, s->buffer);
        used = 0;
    }
    memset(s->buffer + used, 0, 56 - used);
    for (int i = 0; i < 8; i++)
        s->buffer[56 + i] = (uint8_t)(bits >> (56 - 8 * i));
    sha1_block(s->state, s->buffer);
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 4; j++)
            s->value[4 * i + j] = (uint8_t)(s->state[i] >> (24 - 8 * j));
    memcpy(value, s->value, 20);
}
