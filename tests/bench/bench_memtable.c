/*
 * Memtable benchmark: CPU time of the inserting (and then looking up) thread per operation, for
 * keys that share a long prefix (redis-benchmark's "key:000000012345"), random binary keys and
 * ascending keys. Thread CPU time rather than wall time, so that figures taken on a busy machine
 * still compare. Prints `metric=NAME value=X unit=U` lines like bench_engine.
 *
 *   bench_memtable [--keys prefixed|random|ascending] [--puts N] [--value-size B] [--rounds R]
 */
#include "core/memtable.h"

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t next_rand(uint64_t *s)
{
    /* xorshift64*: cheap and good enough to spread keys. */
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

enum pattern { PREFIXED, RANDOM, ASCENDING };

/* Key i of the pattern into buf (16 bytes); returns its length. */
static size_t make_key(enum pattern p, uint64_t i, uint64_t r, uint8_t *buf)
{
    switch (p) {
    case PREFIXED: /* redis-benchmark -r: "key:" and 12 digits of a random number */
        return (size_t)snprintf((char *)buf, 17, "key:%012" PRIu64, r % 100000000);
    case RANDOM:
        for (int b = 0; b < 16; b++)
            buf[b] = (uint8_t)(r >> (8 * (b % 8))) ^ (uint8_t)(i * 131 + b);
        return 16;
    case ASCENDING:
    default:
        return (size_t)snprintf((char *)buf, 17, "key:%012" PRIu64, i);
    }
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    enum pattern pattern = PREFIXED;
    const char *name = "prefixed";
    size_t puts = 300000, value_size = 100, rounds = 5;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--keys") == 0) {
            name = argv[i + 1];
            pattern = strcmp(name, "random") == 0      ? RANDOM
                      : strcmp(name, "ascending") == 0 ? ASCENDING
                                                       : PREFIXED;
        } else if (strcmp(argv[i], "--puts") == 0) {
            puts = strtoull(argv[i + 1], NULL, 10);
        } else if (strcmp(argv[i], "--value-size") == 0) {
            value_size = strtoull(argv[i + 1], NULL, 10);
        } else if (strcmp(argv[i], "--rounds") == 0) {
            rounds = strtoull(argv[i + 1], NULL, 10);
        } else {
            fprintf(stderr, "unknown option %s\n", argv[i]);
            return 2;
        }
    }
    uint8_t(*keys)[16] = malloc(puts * sizeof *keys);
    uint8_t *lens = malloc(puts);
    uint8_t *value = calloc(1, value_size + 1);
    uint64_t *put_ns = calloc(rounds, sizeof *put_ns), *get_ns = calloc(rounds, sizeof *get_ns);
    if (keys == NULL || lens == NULL || value == NULL || put_ns == NULL || get_ns == NULL)
        return 1;
    uint64_t rng = 88172645463325252ull;
    for (size_t i = 0; i < puts; i++)
        lens[i] = (uint8_t)make_key(pattern, i, next_rand(&rng), keys[i]);

    size_t gets = puts;
    for (size_t r = 0; r < rounds; r++) {
        struct ud_memtable *m;
        if (ud_memtable_create(&m, 0) != 0)
            return 1;
        uint64_t t0 = thread_cpu_ns();
        for (size_t i = 0; i < puts; i++)
            if (ud_memtable_put(m, 1, keys[i], lens[i], i + 1, UD_MEM_VALUE, value, value_size) !=
                0)
                return 1;
        uint64_t t1 = thread_cpu_ns();
        uint64_t found = 0;
        for (size_t g = 0; g < gets; g++) {
            size_t i = (size_t)(next_rand(&rng) % puts);
            struct ud_mem_entry e;
            found += ud_memtable_get(m, 1, keys[i], lens[i], &e) == 0;
        }
        uint64_t t2 = thread_cpu_ns();
        if (found != gets) {
            fprintf(stderr, "lost keys: %" PRIu64 " of %zu found\n", found, gets);
            return 1;
        }
        put_ns[r] = t1 - t0;
        get_ns[r] = t2 - t1;
        ud_memtable_unref(m);
    }
    qsort(put_ns, rounds, sizeof *put_ns, cmp_u64);
    qsort(get_ns, rounds, sizeof *get_ns, cmp_u64);
    printf("# %s keys, %zu puts of %zu B values, %zu gets, median of %zu rounds\n", name, puts,
           value_size, gets, rounds);
    printf("metric=memtable_%s_put_cpu_ns value=%.1f unit=ns\n", name,
           (double)put_ns[rounds / 2] / (double)puts);
    printf("metric=memtable_%s_get_cpu_ns value=%.1f unit=ns\n", name,
           (double)get_ns[rounds / 2] / (double)gets);
    free(keys);
    free(lens);
    free(value);
    free(put_ns);
    free(get_ns);
    return 0;
}
