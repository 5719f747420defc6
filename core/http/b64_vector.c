/*
 * Base64 decoding with AVX2: 32 characters to 24 bytes per step, about ten times the scalar
 * table loop. A 1 KiB value in a JSON PUT is 1,368 characters, and decoding it was the largest
 * item of the leader's own code at concurrency 256 (3 % of its loop thread; benchmarks.md).
 *
 * Each character's two nibbles index two 16-entry tables: the high nibble picks a class of
 * characters (0x20-0x2F, the digits, A-O and a-o, P-Z and p-z, everything else), the low nibble
 * the classes in which that low nibble is not in the alphabet; a character is valid when the two
 * share no bit. Its 6-bit value is the character plus an offset chosen by its class ('/' shares
 * its class with '+', so it is moved one class down first). Four values per 32-bit lane are then
 * merged into 24 bits with two multiply-adds and gathered into 24 contiguous bytes.
 */
#include "core/http/b64_vector.h"

#if defined(__x86_64__)
#include <immintrin.h>

__attribute__((target("avx2"))) static size_t decode_avx2(const uint8_t *in, size_t len,
                                                          uint8_t *out)
{
    const __m256i invalid_for_lo =
        _mm256_setr_epi8(0x15, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x13, 0x1A,
                         0x1B, 0x1B, 0x1B, 0x1A, 0x15, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11,
                         0x11, 0x11, 0x13, 0x1A, 0x1B, 0x1B, 0x1B, 0x1A);
    const __m256i class_of_hi =
        _mm256_setr_epi8(0x10, 0x10, 0x01, 0x02, 0x04, 0x08, 0x04, 0x08, 0x10, 0x10, 0x10, 0x10,
                         0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x01, 0x02, 0x04, 0x08, 0x04, 0x08,
                         0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10);
    /* By class: '/' (0x2F -> 63), '+' (0x2B -> 62), digits (-> 52..), A-Z (-> 0..), a-z (26..). */
    const __m256i offset =
        _mm256_setr_epi8(0, 16, 19, 4, -65, -65, -71, -71, 0, 0, 0, 0, 0, 0, 0, 0, 0, 16, 19, 4,
                         -65, -65, -71, -71, 0, 0, 0, 0, 0, 0, 0, 0);
    const __m256i nibble = _mm256_set1_epi8(0x0F);
    const __m256i slash = _mm256_set1_epi8('/');
    /* Byte pairs: a << 6 | b; then pairs of pairs: ab << 12 | cd. */
    const __m256i merge_pairs = _mm256_set1_epi32(0x01400140);
    const __m256i merge_quads = _mm256_set1_epi32(0x00011000);
    /* The three bytes of each 32-bit lane, most significant first, in each 128-bit half. */
    const __m256i order = _mm256_setr_epi8(2, 1, 0, 6, 5, 4, 10, 9, 8, 14, 13, 12, -1, -1, -1, -1,
                                           2, 1, 0, 6, 5, 4, 10, 9, 8, 14, 13, 12, -1, -1, -1, -1);
    const __m256i gather = _mm256_setr_epi32(0, 1, 2, 4, 5, 6, 7, 7);
    size_t i = 0;
    for (; i + 32 <= len; i += 32) {
        __m256i c = _mm256_loadu_si256((const __m256i *)(in + i));
        __m256i hi = _mm256_and_si256(_mm256_srli_epi32(c, 4), nibble);
        __m256i lo = _mm256_and_si256(c, nibble);
        if (!_mm256_testz_si256(_mm256_shuffle_epi8(invalid_for_lo, lo),
                                _mm256_shuffle_epi8(class_of_hi, hi)))
            break;
        __m256i cls = _mm256_add_epi8(hi, _mm256_cmpeq_epi8(c, slash));
        __m256i v = _mm256_add_epi8(c, _mm256_shuffle_epi8(offset, cls));
        v = _mm256_madd_epi16(_mm256_maddubs_epi16(v, merge_pairs), merge_quads);
        v = _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(v, order), gather);
        uint8_t *o = out + i / 4 * 3;
        _mm_storeu_si128((__m128i *)o, _mm256_castsi256_si128(v));
        _mm_storel_epi64((__m128i *)(o + 16), _mm256_extracti128_si256(v, 1));
    }
    return i;
}
#endif

size_t ud_b64_decode_blocks(const uint8_t *in, size_t len, uint8_t *out)
{
#if defined(__x86_64__)
    if (__builtin_cpu_supports("avx2"))
        return decode_avx2(in, len, out);
#endif
    (void)in;
    (void)len;
    (void)out;
    return 0;
}
