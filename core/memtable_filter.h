/* The memtable's key filter: a cheap "certainly not here" for point lookups (see memtable.c). */
#ifndef UD_CORE_MEMTABLE_FILTER_H
#define UD_CORE_MEMTABLE_FILTER_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/*
 * Why a filter. A point read searches every memtable of its view before the store, and most keys
 * of a large keyspace are only in the store: such a read paid a full index descent and list walk
 * per memtable (20 % of the writer's loop under a RESP GET load) to learn nothing. A blocked
 * Bloom filter answers that in one cache line: each (space, key) sets 3 bits of one 64-bit word.
 *
 * Sized by the memtable's budget, then fixed whatever the memtable ends up holding: a 16th of
 * the budget, rounded down to a power of two, at most 2^14 words (128 KiB, within a core's L2).
 * The filter is memory the memtable holds, so ud_memtable_bytes() counts it and the engine's
 * memtable budget includes it; a 16th keeps it a small share under the smallest budgets (1 MiB,
 * sealed at 496 KiB: a 16 KiB filter instead of 128 KiB), where a memtable holds few keys anyway
 * (~460 keys of 1 KiB values in 128 Ki bits). At the largest size it holds a memtable
 * of 1 KiB values (about 30,000 keys at the default 32 MiB seal size) at a false positive rate of
 * 0.14 %, one of 400,000 tiny entries at 32 % (measured by test_memtable over a million absent
 * keys of redis-benchmark's shape); a saturated filter only stops saving searches, it never
 * hides a key.
 *
 * Concurrency: the single writer sets a key's bits before it links the key's node and before the
 * count and the engine's visible LSN are published with release, so a reader that may see the
 * node (it loaded either with acquire) also sees its bits.
 */
#define MT_FILTER_MAX_WORDS ((size_t)1 << 14)
#define MT_FILTER_MIN_WORDS ((size_t)8) /* one cache line */

/* Words of the filter of a memtable whose budget is `budget` bytes (0: no budget, the largest). */
static inline size_t mt_filter_words(size_t budget)
{
    if (budget == 0 || budget / 16 / sizeof(uint64_t) >= MT_FILTER_MAX_WORDS)
        return MT_FILTER_MAX_WORDS;
    size_t words = MT_FILTER_MIN_WORDS;
    while (words * 2 <= budget / 16 / sizeof(uint64_t))
        words *= 2;
    return words;
}

static inline uint64_t mt_filter_hash(uint8_t space, const uint8_t *key, size_t len)
{
    const uint64_t m = 0x9E3779B97F4A7C15ull;
    uint64_t h = (0xC2B2AE3D27D4EB4Full ^ ((uint64_t)len << 8) ^ space) * m;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, key + i, sizeof w);
        h = (h ^ w) * m;
        h ^= h >> 31;
    }
    uint64_t tail = 0;
    for (size_t s = 0; i < len; i++, s += 8)
        tail |= (uint64_t)key[i] << s;
    h = (h ^ tail) * m;
    h ^= h >> 29;
    h *= 0xBF58476D1CE4E5B9ull;
    return h ^ (h >> 32);
}

/* The word (high hash bits) and the 3 bits in it (low 18 bits). */
static inline uint64_t mt_filter_bits(uint64_t h)
{
    return ((uint64_t)1 << (h & 63)) | ((uint64_t)1 << ((h >> 6) & 63)) |
           ((uint64_t)1 << ((h >> 12) & 63));
}

/* mask: the filter's word count minus one. */
static inline size_t mt_filter_word(uint64_t h, size_t mask)
{
    return (size_t)(h >> 32) & mask;
}

/* Writer only (one at a time): a plain read and store, no locked instruction. */
static inline void mt_filter_add(_Atomic uint64_t *f, size_t mask, uint8_t space,
                                 const uint8_t *key, size_t len)
{
    uint64_t h = mt_filter_hash(space, key, len);
    _Atomic uint64_t *w = &f[mt_filter_word(h, mask)];
    atomic_store_explicit(w, atomic_load_explicit(w, memory_order_relaxed) | mt_filter_bits(h),
                          memory_order_relaxed);
}

/* 0: no version of (space, key) was added; 1: one may have been. */
static inline int mt_filter_may_hold(const _Atomic uint64_t *f, size_t mask, uint8_t space,
                                     const uint8_t *key, size_t len)
{
    uint64_t h = mt_filter_hash(space, key, len);
    uint64_t bits = mt_filter_bits(h);
    uint64_t w =
        atomic_load_explicit((_Atomic uint64_t *)&f[mt_filter_word(h, mask)], memory_order_relaxed);
    return (w & bits) == bits;
}

#endif
