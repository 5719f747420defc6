/* Memtable tests: order, versions, seeks, memory accounting, out-of-memory, concurrent readers. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "core/arena.h"
#include "core/err.h"
#include "core/memtable.h"
#include "core/memtable_filter.h"
#include "core/prefault.h"
#include "tests/lib/testutil.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define SANITIZED 1
#endif
#endif

/* --- helpers ---------------------------------------------------------------------------------- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static struct ud_memtable *new_memtable(void)
{
    struct ud_memtable *m = NULL;
    assert_int_equal(ud_memtable_create(&m, 0), 0);
    assert_non_null(m);
    return m;
}

static struct ud_memtable *new_memtable_budget(size_t budget)
{
    struct ud_memtable *m = NULL;
    assert_int_equal(ud_memtable_create(&m, budget), 0);
    assert_non_null(m);
    return m;
}

static void put_ok(struct ud_memtable *m, uint8_t space, const char *key, uint64_t lsn,
                   uint8_t kind, const char *value)
{
    assert_int_equal(ud_memtable_put(m, space, key, strlen(key), lsn, kind, value, strlen(value)),
                     0);
}

static void assert_entry(const struct ud_mem_entry *e, uint8_t space, const char *key, uint64_t lsn,
                         uint8_t kind, const char *value)
{
    assert_int_equal(e->space, space);
    assert_int_equal(e->key_len, strlen(key));
    assert_memory_equal(e->key, key, e->key_len);
    assert_int_equal(e->lsn, lsn);
    assert_int_equal(e->kind, kind);
    assert_int_equal(e->value_len, strlen(value));
    if (e->value_len > 0)
        assert_memory_equal(e->value, value, e->value_len);
}

/* Reads a "Name:   1234 kB" line of /proc/self/status, in bytes; 0 when absent. */
static size_t proc_status_bytes(const char *name)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (f == NULL)
        return 0;
    char line[256];
    size_t kb = 0;
    size_t nlen = strlen(name);
    while (fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, name, nlen) == 0 && line[nlen] == ':') {
            kb = strtoull(line + nlen + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kb * 1024;
}

/* --- reference model -------------------------------------------------------------------------- */

struct ref {
    uint8_t space;
    uint8_t kind;
    uint64_t lsn;
    uint8_t key[40];
    uint32_t key_len;
    uint8_t value[16];
    uint32_t value_len;
};

static int ref_key_cmp(const struct ref *a, uint8_t space, const uint8_t *key, size_t len)
{
    if (a->space != space)
        return a->space < space ? -1 : 1;
    size_t common = a->key_len < len ? a->key_len : len;
    int c = common ? memcmp(a->key, key, common) : 0;
    if (c != 0)
        return c;
    return (a->key_len > len) - (a->key_len < len);
}

static int ref_cmp(const void *pa, const void *pb)
{
    const struct ref *a = pa, *b = pb;
    int c = ref_key_cmp(a, b->space, b->key, b->key_len);
    if (c != 0)
        return c;
    return a->lsn > b->lsn ? -1 : a->lsn < b->lsn ? 1 : 0;
}

/* Bytes that make ordering interesting: NUL, 0xFF and neighbours of each other. */
static uint8_t rand_byte(uint64_t *rng)
{
    static const uint8_t pool[] = {0x00, 0x01, 0x02, 'a', 'b', 0x7F, 0x80, 0xFE, 0xFF};
    uint64_t r = ud_test_rand(rng);
    if (r % 4 == 0)
        return (uint8_t)(r >> 8);
    return pool[(r >> 8) % sizeof pool];
}

/* Random keys, a third of them prefixes or extensions of earlier keys, over five spaces. */
static void make_refs(struct ref *refs, size_t n, uint64_t seed)
{
    static const uint8_t spaces[] = {0, 1, 2, 3, 255};
    uint64_t rng = seed;
    for (size_t i = 0; i < n; i++) {
        struct ref *r = &refs[i];
        memset(r, 0, sizeof *r);
        uint64_t mode = ud_test_rand(&rng) % 6;
        if (i > 0 && mode < 2) {
            /* A prefix of an earlier key (possibly empty), in the same space. */
            const struct ref *o = &refs[ud_test_rand(&rng) % i];
            r->space = o->space;
            r->key_len = o->key_len ? (uint32_t)(ud_test_rand(&rng) % o->key_len) : 0;
            memcpy(r->key, o->key, r->key_len);
        } else if (i > 0 && mode == 2) {
            /* An extension of an earlier key. */
            const struct ref *o = &refs[ud_test_rand(&rng) % i];
            r->space = o->space;
            memcpy(r->key, o->key, o->key_len);
            r->key_len = o->key_len;
            uint32_t extra = 1 + (uint32_t)(ud_test_rand(&rng) % 3);
            while (extra-- > 0 && r->key_len < sizeof r->key)
                r->key[r->key_len++] = rand_byte(&rng);
        } else if (i > 0 && mode == 3) {
            /* Another version of an earlier key. */
            const struct ref *o = &refs[ud_test_rand(&rng) % i];
            r->space = o->space;
            memcpy(r->key, o->key, o->key_len);
            r->key_len = o->key_len;
        } else {
            r->space = spaces[ud_test_rand(&rng) % sizeof spaces];
            r->key_len = (uint32_t)(ud_test_rand(&rng) % (sizeof r->key + 1));
            for (uint32_t k = 0; k < r->key_len; k++)
                r->key[k] = rand_byte(&rng);
        }
        r->kind = (uint8_t)(ud_test_rand(&rng) % 4);
        r->value_len = r->kind == UD_MEM_VALUE || r->kind == UD_MEM_LOB
                           ? (uint32_t)(ud_test_rand(&rng) % (sizeof r->value + 1))
                           : 0;
        ud_test_fill(&rng, r->value, r->value_len);
    }
    /* Unique LSNs in random order, so insertion order is unrelated to version order. */
    for (size_t i = 0; i < n; i++)
        refs[i].lsn = 1000 + i;
    for (size_t i = n - 1; i > 0; i--) {
        size_t j = ud_test_rand(&rng) % (i + 1);
        uint64_t t = refs[i].lsn;
        refs[i].lsn = refs[j].lsn;
        refs[j].lsn = t;
    }
}

static void assert_matches_ref(const struct ud_mem_entry *e, const struct ref *r)
{
    assert_int_equal(e->space, r->space);
    assert_int_equal(e->key_len, r->key_len);
    if (r->key_len > 0)
        assert_memory_equal(e->key, r->key, r->key_len);
    assert_int_equal(e->lsn, r->lsn);
    assert_int_equal(e->kind, r->kind);
    assert_int_equal(e->value_len, r->value_len);
    if (r->value_len > 0)
        assert_memory_equal(e->value, r->value, r->value_len);
}

/* Index of the first reference entry >= (space, key, newest), or n. */
static size_t ref_lower_bound(const struct ref *sorted, size_t n, uint8_t space, const uint8_t *key,
                              size_t len)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (ref_key_cmp(&sorted[mid], space, key, len) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* --- tests ------------------------------------------------------------------------------------ */

static void test_empty(void **state)
{
    (void)state;
    struct ud_memtable *m = new_memtable();
    struct ud_mem_entry e;
    assert_int_equal(ud_memtable_get(m, 1, "a", 1, &e), UD_ENOTFOUND);
    assert_int_equal(ud_memtable_get(m, 1, "", 0, &e), UD_ENOTFOUND);
    assert_int_equal(ud_memtable_count(m), 0);
    assert_int_equal(ud_memtable_min_lsn(m), 0);
    assert_int_equal(ud_memtable_max_lsn(m), 0);
    /* An empty memtable holds its key filter already. */
    assert_int_equal(ud_memtable_bytes(m), ud_memtable_filter_bytes(0));
    assert_int_equal(ud_memtable_filter_bytes(0), MT_FILTER_MAX_WORDS * sizeof(uint64_t));
    /* A small budget gets a filter of a 16th of it (a power of two), not the largest one. */
    struct ud_memtable *small = new_memtable_budget(496u << 10);
    assert_int_equal(ud_memtable_bytes(small), 16u << 10);
    ud_memtable_unref(small);

    struct ud_memtable_iter it;
    ud_memtable_iter_init(&it, m);
    ud_memtable_iter_first(&it);
    assert_false(ud_memtable_iter_valid(&it));
    ud_memtable_iter_seek(&it, 1, "a", 1);
    assert_false(ud_memtable_iter_valid(&it));
    ud_memtable_iter_seek(&it, 0, NULL, 0);
    assert_false(ud_memtable_iter_valid(&it));
    ud_memtable_unref(m);
}

/*
 * Point lookups skip a memtable through its key filter: every key put is still found once the
 * filter is saturated (300,000 keys, ~18 per filter word), and keys never put (neighbours, other
 * spaces, prefixes and extensions of keys put) are not.
 */
static void test_get_through_key_filter(void **state)
{
    (void)state;
    struct ud_memtable *m = new_memtable();
    enum { N = 300000 };
    static const char alpha[] = "abcdefghijklmnopq";
    char key[32];
    for (uint32_t i = 0; i < N; i++) {
        int kl = snprintf(key, sizeof key, "key:%012u", 2 * i);
        assert_int_equal(ud_memtable_put(m, 1, key, (size_t)kl, 1 + i, UD_MEM_VALUE, &i, sizeof i),
                         0);
    }
    put_ok(m, 2, "", 1 + N, UD_MEM_VALUE, "e");
    for (size_t len = 1; len <= 17; len++) /* every tail length of the hash */
        put_ok(m, 3, &alpha[17 - len], 2 + N + len, UD_MEM_TOMBSTONE, "");

    struct ud_mem_entry e;
    for (uint32_t i = 0; i < N; i++) {
        int kl = snprintf(key, sizeof key, "key:%012u", 2 * i);
        assert_int_equal(ud_memtable_get(m, 1, key, (size_t)kl, &e), 0);
        assert_int_equal(e.lsn, 1 + i);
        assert_int_equal(e.value_len, sizeof i);
        assert_memory_equal(e.value, &i, sizeof i);
        assert_int_equal(ud_memtable_get(m, 2, key, (size_t)kl, &e), UD_ENOTFOUND);
        kl = snprintf(key, sizeof key, "key:%012u", 2 * i + 1);
        assert_int_equal(ud_memtable_get(m, 1, key, (size_t)kl, &e), UD_ENOTFOUND);
    }
    assert_int_equal(ud_memtable_get(m, 2, "", 0, &e), 0);
    assert_int_equal(ud_memtable_get(m, 1, "", 0, &e), UD_ENOTFOUND);
    for (size_t len = 1; len <= 17; len++) {
        const char *k = &alpha[17 - len];
        assert_int_equal(ud_memtable_get(m, 3, k, len, &e), 0);
        assert_int_equal(e.kind, UD_MEM_TOMBSTONE);
        assert_int_equal(e.lsn, 2 + N + len);
        /* Its prefix and its extension: neither is a suffix of the alphabet, so neither was put. */
        assert_int_equal(ud_memtable_get(m, 3, k, len - 1, &e), UD_ENOTFOUND);
        memcpy(key, k, len);
        key[len] = 'Z';
        assert_int_equal(ud_memtable_get(m, 3, key, len + 1, &e), UD_ENOTFOUND);
    }
    ud_memtable_unref(m);
}

/*
 * The filter lets reads skip: over a million keys never added, the share it cannot rule out is
 * what memtable_filter.h states, 0.14 % after 30,000 keys (a memtable of 1 KiB values) and 32 %
 * after 400,000 tiny ones. A filter that answered "may hold" for everything (the reads
 * above would still pass) fails here.
 */
static void test_key_filter_false_positives(void **state)
{
    (void)state;
    static const uint32_t added[] = {30000, 400000};
    static const double max_rate[] = {0.002, 0.35};
    char key[32];
    for (size_t t = 0; t < 2; t++) {
        _Atomic uint64_t *f = calloc(MT_FILTER_MAX_WORDS, sizeof *f);
        assert_non_null(f);
        for (uint32_t i = 0; i < added[t]; i++) {
            int kl = snprintf(key, sizeof key, "key:%012u", 2 * i);
            mt_filter_add(f, MT_FILTER_MAX_WORDS - 1, 1, (const uint8_t *)key, (size_t)kl);
        }
        for (uint32_t i = 0; i < added[t]; i++) {
            int kl = snprintf(key, sizeof key, "key:%012u", 2 * i);
            assert_true(mt_filter_may_hold(f, MT_FILTER_MAX_WORDS - 1, 1, (const uint8_t *)key,
                                           (size_t)kl));
        }
        uint32_t maybe = 0;
        for (uint32_t i = 0; i < 1000000; i++) {
            int kl = snprintf(key, sizeof key, "key:%012u", 2 * i + 1);
            maybe += (uint32_t)mt_filter_may_hold(f, MT_FILTER_MAX_WORDS - 1, 1,
                                                  (const uint8_t *)key, (size_t)kl);
        }
        double rate = maybe / 1e6;
        print_message("# key filter after %u keys: %.4f %% of absent keys not ruled out\n",
                      added[t], 100 * rate);
        assert_true(rate < max_rate[t]);
        free(f);
    }
}

/* The whole ordering contract against qsort over the same entries. */
/*
 * Inserts refs[0..N) in array order and checks the memtable against the sorted reference: full
 * iteration, next_key with get for each key, seeks and gets of probes near existing keys. Sorts
 * refs. LSNs must be 1000..1000 + N - 1 in any order.
 */
static void check_against_reference(struct ref *refs, size_t N)
{
    struct ud_memtable *m = new_memtable();
    for (size_t i = 0; i < N; i++) {
        const struct ref *r = &refs[i];
        assert_int_equal(ud_memtable_put(m, r->space, r->key, r->key_len, r->lsn, r->kind, r->value,
                                         r->value_len),
                         0);
    }
    assert_int_equal(ud_memtable_count(m), N);
    assert_int_equal(ud_memtable_min_lsn(m), 1000);
    assert_int_equal(ud_memtable_max_lsn(m), 1000 + N - 1);

    qsort(refs, N, sizeof *refs, ref_cmp);

    /* Full iteration: every version, in reference order. */
    struct ud_memtable_iter it;
    struct ud_mem_entry e;
    ud_memtable_iter_init(&it, m);
    size_t i = 0;
    for (ud_memtable_iter_first(&it); ud_memtable_iter_valid(&it); ud_memtable_iter_next(&it)) {
        assert_true(i < N);
        ud_memtable_iter_entry(&it, &e);
        assert_matches_ref(&e, &refs[i]);
        i++;
    }
    assert_int_equal(i, N);

    /* next_key visits each distinct key once, at its newest version; get agrees. */
    size_t distinct = 0;
    i = 0;
    for (ud_memtable_iter_first(&it); ud_memtable_iter_valid(&it); ud_memtable_iter_next_key(&it)) {
        ud_memtable_iter_entry(&it, &e);
        assert_true(i < N);
        assert_matches_ref(&e, &refs[i]);
        struct ud_mem_entry g;
        assert_int_equal(ud_memtable_get(m, e.space, e.key, e.key_len, &g), 0);
        assert_matches_ref(&g, &refs[i]);
        distinct++;
        size_t j = i + 1;
        while (j < N && ref_key_cmp(&refs[j], refs[i].space, refs[i].key, refs[i].key_len) == 0)
            j++;
        i = j;
    }
    assert_int_equal(i, N);
    assert_true(distinct < N); /* the generator made repeated keys */

    /* Seeks to probe keys that may or may not exist: first version >= (space, key). */
    uint64_t rng = 77;
    for (int p = 0; p < 3000; p++) {
        uint8_t key[42];
        uint8_t space;
        size_t len;
        if (p % 2 == 0) {
            /* An existing key with a byte changed, cut or appended. */
            const struct ref *r = &refs[ud_test_rand(&rng) % N];
            space = r->space;
            len = r->key_len;
            memcpy(key, r->key, len);
            uint64_t how = ud_test_rand(&rng) % 3;
            if (how == 0 && len > 0)
                key[ud_test_rand(&rng) % len] ^= (uint8_t)(1 + ud_test_rand(&rng) % 255);
            else if (how == 1 && len > 0)
                len--;
            else
                key[len++] = rand_byte(&rng);
        } else {
            space = (uint8_t)(ud_test_rand(&rng) % 5);
            len = ud_test_rand(&rng) % 4;
            for (size_t k = 0; k < len; k++)
                key[k] = rand_byte(&rng);
        }
        size_t want = ref_lower_bound(refs, N, space, key, len);
        ud_memtable_iter_seek(&it, space, key, len);
        if (want == N) {
            assert_false(ud_memtable_iter_valid(&it));
            continue;
        }
        assert_true(ud_memtable_iter_valid(&it));
        ud_memtable_iter_entry(&it, &e);
        assert_matches_ref(&e, &refs[want]);

        int found = ud_memtable_get(m, space, key, len, &e);
        if (ref_key_cmp(&refs[want], space, key, len) == 0) {
            assert_int_equal(found, 0);
            assert_matches_ref(&e, &refs[want]);
        } else {
            assert_int_equal(found, UD_ENOTFOUND);
        }
    }

    /* key_len 0 is the start of a space (whatever comes first at or after it). */
    for (int space = 0; space < 256; space++) {
        size_t want = ref_lower_bound(refs, N, (uint8_t)space, NULL, 0);
        ud_memtable_iter_seek(&it, (uint8_t)space, NULL, 0);
        assert_int_equal(ud_memtable_iter_valid(&it), want < N);
        if (want < N) {
            ud_memtable_iter_entry(&it, &e);
            assert_matches_ref(&e, &refs[want]);
        }
    }

    ud_memtable_unref(m);
}

static void test_order_matches_sorted_reference(void **state)
{
    (void)state;
    enum { N = 6000 };
    struct ref *refs = calloc(N, sizeof *refs);
    assert_non_null(refs);
    make_refs(refs, N, 0x5eed1234);
    check_against_reference(refs, N);
    free(refs);
}

/* Key sequences that shape the search index differently (memtable_index.c): appends at its
 * right edge, inserts at its left edge, keys whose sortkeys are all equal, and many versions of
 * a few keys spread over many index nodes. */
enum key_shape { SHAPE_ASCENDING, SHAPE_DESCENDING, SHAPE_SHARED_PREFIX, SHAPE_FEW_KEYS };

static void make_shaped_refs(struct ref *refs, size_t n, enum key_shape shape, uint64_t seed)
{
    uint64_t rng = seed;
    for (size_t i = 0; i < n; i++) {
        struct ref *r = &refs[i];
        memset(r, 0, sizeof *r);
        r->space = 1;
        r->lsn = 1000 + i;
        uint64_t id;
        switch (shape) {
        case SHAPE_ASCENDING: /* a counter, each key written once or twice in a row */
            id = i - i / 3;
            break;
        case SHAPE_DESCENDING:
            id = (n - i) / 2; /* each key twice in a row */
            break;
        case SHAPE_SHARED_PREFIX: /* random ids behind a prefix longer than the sortkey */
            id = ud_test_rand(&rng) % (n / 2);
            break;
        default:
            id = ud_test_rand(&rng) % 7;
            break;
        }
        int len =
            snprintf((char *)r->key, sizeof r->key, "%s%012llu",
                     shape == SHAPE_SHARED_PREFIX ? "user:profile:" : "", (unsigned long long)id);
        r->key_len = (uint32_t)len;
        /* Overwrites, tombstones and row tombstones among the values. */
        r->kind = (uint8_t)(ud_test_rand(&rng) % 5 == 0 ? ud_test_rand(&rng) % 3 : UD_MEM_VALUE);
        r->value_len = r->kind == UD_MEM_VALUE ? (uint32_t)(ud_test_rand(&rng) % 17) : 0;
        ud_test_fill(&rng, r->value, r->value_len);
    }
    if (shape == SHAPE_SHARED_PREFIX || shape == SHAPE_FEW_KEYS) {
        /* LSNs in random order: versions of a key arrive older and newer than the ones held. */
        for (size_t i = n - 1; i > 0; i--) {
            size_t j = ud_test_rand(&rng) % (i + 1);
            uint64_t t = refs[i].lsn;
            refs[i].lsn = refs[j].lsn;
            refs[j].lsn = t;
        }
    }
}

static void test_index_shapes_match_sorted_reference(void **state)
{
    (void)state;
    /* Enough entries for an index of three levels or more (nodes of 32). */
    enum { N = 40000 };
    struct ref *refs = calloc(N, sizeof *refs);
    assert_non_null(refs);
    for (int shape = SHAPE_ASCENDING; shape <= SHAPE_FEW_KEYS; shape++) {
        make_shaped_refs(refs, N, (enum key_shape)shape, 0xab5eed + (uint64_t)shape);
        check_against_reference(refs, N);
    }
    make_refs(refs, N, 0x5eed5678);
    check_against_reference(refs, N);
    free(refs);
}

static void test_versions_newest_first_and_kinds(void **state)
{
    (void)state;
    struct ud_memtable *m = new_memtable();
    /* Inserted out of LSN order on purpose. */
    put_ok(m, 1, "user:1", 5, UD_MEM_VALUE, "v5");
    put_ok(m, 1, "user:1", 9, UD_MEM_TOMBSTONE, "");
    put_ok(m, 1, "user:1", 7, UD_MEM_VALUE, "v7");
    put_ok(m, 2, "user:1", 3, UD_MEM_VALUE, "row-space"); /* same bytes, other space */
    assert_int_equal(ud_memtable_put(m, 2, "row\0\0", 5, 8, UD_MEM_ROW_TOMBSTONE, NULL, 0), 0);
    put_ok(m, 3, "blob", 6, UD_MEM_LOB, "manifest");

    struct ud_mem_entry e;
    assert_int_equal(ud_memtable_get(m, 1, "user:1", 6, &e), 0);
    assert_entry(&e, 1, "user:1", 9, UD_MEM_TOMBSTONE, "");
    assert_int_equal(ud_memtable_get(m, 2, "user:1", 6, &e), 0);
    assert_entry(&e, 2, "user:1", 3, UD_MEM_VALUE, "row-space");
    assert_int_equal(ud_memtable_get(m, 3, "blob", 4, &e), 0);
    assert_entry(&e, 3, "blob", 6, UD_MEM_LOB, "manifest");
    assert_int_equal(ud_memtable_get(m, 1, "user:", 5, &e), UD_ENOTFOUND);
    assert_int_equal(ud_memtable_get(m, 1, "user:10", 7, &e), UD_ENOTFOUND);
    assert_int_equal(ud_memtable_get(m, 3, "user:1", 6, &e), UD_ENOTFOUND);

    /* A key with embedded NULs (strlen would cut it) keeps its kind and full bytes. */
    assert_int_equal(ud_memtable_get(m, 2, "row\0\0", 5, &e), 0);
    assert_int_equal(e.kind, UD_MEM_ROW_TOMBSTONE);
    assert_int_equal(e.lsn, 8);
    assert_int_equal(e.key_len, 5);
    assert_memory_equal(e.key, "row\0\0", 5);
    assert_int_equal(ud_memtable_get(m, 2, "row", 3, &e), UD_ENOTFOUND);

    struct ud_memtable_iter it;
    ud_memtable_iter_init(&it, m);
    ud_memtable_iter_seek(&it, 1, "user:1", 6);
    ud_memtable_iter_entry(&it, &e);
    assert_entry(&e, 1, "user:1", 9, UD_MEM_TOMBSTONE, "");
    ud_memtable_iter_next(&it);
    ud_memtable_iter_entry(&it, &e);
    assert_entry(&e, 1, "user:1", 7, UD_MEM_VALUE, "v7");
    ud_memtable_iter_next(&it);
    ud_memtable_iter_entry(&it, &e);
    assert_entry(&e, 1, "user:1", 5, UD_MEM_VALUE, "v5");
    ud_memtable_iter_next(&it);
    ud_memtable_iter_entry(&it, &e); /* next space: row key sorts before "user:1" */
    assert_int_equal(e.space, 2);
    assert_int_equal(e.lsn, 8);

    assert_int_equal(ud_memtable_count(m), 6);
    assert_int_equal(ud_memtable_min_lsn(m), 3);
    assert_int_equal(ud_memtable_max_lsn(m), 9);
    ud_memtable_unref(m);
}

static void test_seek_and_next_key(void **state)
{
    (void)state;
    struct ud_memtable *m = new_memtable();
    put_ok(m, 1, "b", 1, UD_MEM_VALUE, "b1");
    put_ok(m, 1, "ba", 2, UD_MEM_VALUE, "ba2");
    /* Many versions, so next_key has to jump rather than walk. */
    for (uint64_t lsn = 10; lsn < 40; lsn++)
        put_ok(m, 1, "bb", lsn, UD_MEM_VALUE, "bb");
    put_ok(m, 1, "c", 3, UD_MEM_VALUE, "c3");
    put_ok(m, 1, "c", 4, UD_MEM_VALUE, "c4");
    put_ok(m, 3, "a", 5, UD_MEM_VALUE, "a5");

    struct ud_memtable_iter it;
    struct ud_mem_entry e;
    ud_memtable_iter_init(&it, m);

    ud_memtable_iter_seek(&it, 1, "a", 1); /* before everything in space 1 */
    ud_memtable_iter_entry(&it, &e);
    assert_entry(&e, 1, "b", 1, UD_MEM_VALUE, "b1");
    ud_memtable_iter_seek(&it, 1, "b\0", 2); /* between "b" and "ba" */
    ud_memtable_iter_entry(&it, &e);
    assert_entry(&e, 1, "ba", 2, UD_MEM_VALUE, "ba2");
    ud_memtable_iter_seek(&it, 1, "bb", 2); /* lands on the newest version */
    ud_memtable_iter_entry(&it, &e);
    assert_entry(&e, 1, "bb", 39, UD_MEM_VALUE, "bb");
    ud_memtable_iter_seek(&it, 1, "bba", 3);
    ud_memtable_iter_entry(&it, &e);
    assert_entry(&e, 1, "c", 4, UD_MEM_VALUE, "c4");
    ud_memtable_iter_seek(&it, 1, "d", 1); /* past space 1: continues into space 3 */
    ud_memtable_iter_entry(&it, &e);
    assert_entry(&e, 3, "a", 5, UD_MEM_VALUE, "a5");
    ud_memtable_iter_seek(&it, 2, NULL, 0); /* empty space 2 starts where space 3 does */
    ud_memtable_iter_entry(&it, &e);
    assert_entry(&e, 3, "a", 5, UD_MEM_VALUE, "a5");
    ud_memtable_iter_seek(&it, 3, "b", 1);
    assert_false(ud_memtable_iter_valid(&it));
    ud_memtable_iter_seek(&it, 1, NULL, 0);
    ud_memtable_iter_entry(&it, &e);
    assert_entry(&e, 1, "b", 1, UD_MEM_VALUE, "b1");

    /* next_key from the start and from the middle of a run of versions. */
    const char *keys[] = {"b", "ba", "bb", "c", "a"};
    const uint64_t lsns[] = {1, 2, 39, 4, 5};
    int k = 0;
    for (ud_memtable_iter_first(&it); ud_memtable_iter_valid(&it);
         ud_memtable_iter_next_key(&it), k++) {
        assert_true(k < 5);
        ud_memtable_iter_entry(&it, &e);
        assert_int_equal(e.key_len, strlen(keys[k]));
        assert_memory_equal(e.key, keys[k], e.key_len);
        assert_int_equal(e.lsn, lsns[k]);
    }
    assert_int_equal(k, 5);
    ud_memtable_iter_seek(&it, 1, "bb", 2);
    for (int step = 0; step < 20; step++)
        ud_memtable_iter_next(&it);
    ud_memtable_iter_entry(&it, &e);
    assert_int_equal(e.lsn, 19);
    ud_memtable_iter_next_key(&it);
    ud_memtable_iter_entry(&it, &e);
    assert_entry(&e, 1, "c", 4, UD_MEM_VALUE, "c4");
    ud_memtable_iter_next(&it);
    ud_memtable_iter_next_key(&it); /* from the oldest version of "c" */
    ud_memtable_iter_entry(&it, &e);
    assert_entry(&e, 3, "a", 5, UD_MEM_VALUE, "a5");
    ud_memtable_iter_next_key(&it); /* off the end */
    assert_false(ud_memtable_iter_valid(&it));
    ud_memtable_unref(m);
}

static void test_lsn_range_and_count(void **state)
{
    (void)state;
    struct ud_memtable *m = new_memtable();
    put_ok(m, 1, "x", 50, UD_MEM_VALUE, "");
    assert_int_equal(ud_memtable_min_lsn(m), 50);
    assert_int_equal(ud_memtable_max_lsn(m), 50);
    put_ok(m, 1, "y", 70, UD_MEM_TOMBSTONE, "");
    put_ok(m, 1, "x", 40, UD_MEM_VALUE, "old");
    put_ok(m, 1, "z", 60, UD_MEM_VALUE, "");
    assert_int_equal(ud_memtable_min_lsn(m), 40);
    assert_int_equal(ud_memtable_max_lsn(m), 70);
    assert_int_equal(ud_memtable_count(m), 4);
    ud_memtable_unref(m);
}

/* Bytes track memory actually held; the last unref gives every block back. */
static void test_bytes_and_large_values(void **state)
{
    (void)state;
    size_t mapped0 = ud_arena_mapped_total();
    struct ud_memtable *m = new_memtable();
    size_t filter = ud_memtable_filter_bytes(0); /* counted, but not arena memory */
    uint8_t value[1024];
    memset(value, 0xAB, sizeof value);
    char key[32];
    size_t payload = 0;
    for (int i = 0; i < 5000; i++) {
        int len = snprintf(key, sizeof key, "key-%08d", i);
        size_t before = ud_memtable_bytes(m);
        assert_int_equal(ud_memtable_put(m, 1, key, (size_t)len, (uint64_t)i + 1, UD_MEM_VALUE,
                                         value, sizeof value),
                         0);
        assert_true(ud_memtable_bytes(m) >= before + (size_t)len + sizeof value);
        payload += (size_t)len + sizeof value;
    }
    size_t bytes = ud_memtable_bytes(m) - filter;
    /* Per-entry overhead (node header, two links with their sortkeys on average, alignment,
     * block tails) stays a few percent: 6.5% for these 12-byte keys and 1 KiB values. */
    assert_true(bytes >= payload);
    assert_true(bytes < payload + payload / 14);
    assert_true(ud_arena_mapped_total() - mapped0 >= bytes);
    assert_true(ud_arena_mapped_total() - mapped0 <= bytes + UD_ARENA_BLOCK);

    /* A 1 MiB value gets a block of its own: counted once, and later small puts still fill the
     * current shared block instead of starting a new one. */
    size_t big_len = 1 << 20;
    uint8_t *big = malloc(big_len);
    assert_non_null(big);
    memset(big, 0x5A, big_len);
    size_t before = ud_memtable_bytes(m);
    size_t mapped_before = ud_arena_mapped_total();
    assert_int_equal(ud_memtable_put(m, 3, "lob", 3, 9000, UD_MEM_LOB, big, big_len), 0);
    size_t grown = ud_memtable_bytes(m) - before;
    assert_true(grown >= big_len);
    assert_true(grown <= big_len + 8192);
    assert_int_equal(ud_arena_mapped_total() - mapped_before, grown);
    put_ok(m, 1, "after-big", 9001, UD_MEM_VALUE, "small");
    assert_int_equal(ud_arena_mapped_total() - mapped_before, grown);

    struct ud_mem_entry e;
    assert_int_equal(ud_memtable_get(m, 3, "lob", 3, &e), 0);
    assert_int_equal(e.value_len, big_len);
    assert_memory_equal(e.value, big, big_len);
    assert_int_equal(ud_memtable_get(m, 1, "key-00004999", 12, &e), 0);
    assert_memory_equal(e.value, value, sizeof value);
    free(big);

    ud_memtable_unref(m);
    assert_int_equal(ud_arena_mapped_total(), mapped0);
}

/* A shared block the arena is done with counts in full, the gap it could not fill included. */
static void test_arena_bytes_count_lost_gap(void **state)
{
    (void)state;
    size_t mapped0 = ud_arena_mapped_total();
    struct ud_arena a;
    ud_arena_init(&a);
    void *back;
    const size_t front = 64, back_len = 1000, need = front + back_len;
    assert_non_null(ud_arena_alloc(&a, front, back_len, &back));
    size_t header = ud_arena_bytes(&a) - need;
    struct ud_arena_block *first = a.blocks;
    while (a.blocks == first)
        assert_non_null(ud_arena_alloc(&a, front, back_len, &back));
    /* The first block is done with: all of it, plus the second block's header and allocation. */
    assert_int_equal(ud_arena_bytes(&a), UD_ARENA_BLOCK + header + need);
    assert_int_equal(ud_arena_mapped_total() - mapped0, 2 * UD_ARENA_BLOCK);
    ud_arena_release(&a);
    assert_int_equal(ud_arena_mapped_total(), mapped0);
}

/* Pages of [p, p + len) resident now (mincore). */
static size_t resident_pages(void *p, size_t len)
{
    size_t ps = (size_t)sysconf(_SC_PAGESIZE), n = (len + ps - 1) / ps, count = 0;
    unsigned char *vec = malloc(n);
    assert_non_null(vec);
    assert_int_equal(mincore(p, len, vec), 0);
    for (size_t i = 0; i < n; i++)
        count += vec[i] & 1;
    free(vec);
    return count;
}

/* Blocks are carved from shared mappings (one mmap for many blocks), yet each released block
 * goes back to the system on its own while its neighbours stay intact. */
static void test_arena_block_unmapped_alone(void **state)
{
    (void)state;
    size_t mapped0 = ud_arena_mapped_total();
    struct ud_arena a, b;
    ud_arena_init(&a);
    ud_arena_init(&b);
    void *va, *vb;
    assert_non_null(ud_arena_alloc(&a, 64, 1000, &va));
    assert_non_null(ud_arena_alloc(&b, 64, 1000, &vb));
    memset(va, 'a', 1000);
    memset(vb, 'b', 1000);
    struct ud_arena_block *blk_a = a.blocks;
    assert_int_equal(ud_arena_mapped_total() - mapped0, 2 * UD_ARENA_BLOCK);
    ud_arena_release(&a);
    assert_int_equal(ud_arena_mapped_total() - mapped0, UD_ARENA_BLOCK);
    /* Unmapped: mincore refuses the range. */
    unsigned char vec[1];
    size_t ps = (size_t)sysconf(_SC_PAGESIZE);
    assert_int_equal(mincore((char *)blk_a + UD_ARENA_BLOCK - ps, ps, vec), -1);
    assert_int_equal(errno, ENOMEM);
    for (size_t i = 0; i < 1000; i++)
        assert_int_equal(((unsigned char *)vb)[i], 'b');
    ud_arena_release(&b);
    assert_int_equal(ud_arena_mapped_total(), mapped0);
}

/* With the prefault thread running, the arena's next block is resident before the writer takes
 * it, and the writer then does not fault it in itself. */
static void test_arena_spare_prefaulted_ahead(void **state)
{
    (void)state;
    size_t mapped0 = ud_arena_mapped_total();
    assert_int_equal(ud_prefault_start(), 0);
    struct ud_arena a;
    ud_arena_init(&a);
    ud_arena_set_spare_limit(&a, 8 * UD_ARENA_BLOCK);
    void *back;
    char *first = ud_arena_alloc(&a, 64, 1000, &back);
    assert_non_null(first);
    assert_non_null(a.spare);
    struct ud_arena_block *spare = a.spare;
    size_t ps = (size_t)sysconf(_SC_PAGESIZE);
    char *payload = (char *)spare + ps;
    for (int i = 0; i < 5000 && atomic_load(&a.spare_ready) != payload; i++)
        usleep(1000);
    if (resident_pages(payload, UD_ARENA_BLOCK - ps) == 0)
        skip(); /* a kernel without MADV_POPULATE_WRITE */
    assert_ptr_equal(atomic_load(&a.spare_ready), payload);
    assert_int_equal(resident_pages(payload, UD_ARENA_BLOCK - ps), (UD_ARENA_BLOCK - ps) / ps);

    /* Fill the first block: the next allocation takes the spare, counted ready in full. */
    while (a.blocks != spare)
        assert_non_null(ud_arena_alloc(&a, 64, 1000, &back));
    assert_true(a.ready_front == (char *)spare + UD_ARENA_BLOCK);
    assert_true(a.ready_back == (char *)spare);
    assert_non_null(a.spare); /* and the one after is on its way */
    memset(back, 0x77, 1000);

    ud_arena_release(&a);
    assert_int_equal(ud_arena_mapped_total(), mapped0);
    ud_prefault_stop();
}

/* No block is mapped ahead beyond the budget, and releasing (or stopping the thread) while a
 * prefault is queued or running leaves nothing behind. */
static void test_arena_spare_budget_and_release(void **state)
{
    (void)state;
    size_t mapped0 = ud_arena_mapped_total();
    assert_int_equal(ud_prefault_start(), 0);
    size_t limit = 4 * UD_ARENA_BLOCK;
    struct ud_memtable *m = new_memtable_budget(limit);
    struct ud_memtable *plain = new_memtable(); /* the same puts, no block mapped ahead */
    size_t held = 0, held_plain = 0;
    uint8_t value[1024];
    char key[32];
    for (int i = 0; ud_memtable_bytes(m) < limit; i++) {
        memset(value, i & 0xff, sizeof value);
        int len = snprintf(key, sizeof key, "key-%08d", i);
        size_t before = ud_arena_mapped_total();
        assert_int_equal(ud_memtable_put(m, 1, key, (size_t)len, (uint64_t)i + 1, UD_MEM_VALUE,
                                         value, sizeof value),
                         0);
        held += ud_arena_mapped_total() - before;
        before = ud_arena_mapped_total();
        assert_int_equal(ud_memtable_put(plain, 1, key, (size_t)len, (uint64_t)i + 1, UD_MEM_VALUE,
                                         value, sizeof value),
                         0);
        held_plain += ud_arena_mapped_total() - before;
        /* At most one block ahead, and only while the memtable holds no more than its budget. */
        assert_true(held == held_plain || held == held_plain + UD_ARENA_BLOCK);
        if (held > held_plain)
            assert_true(held <= limit);
    }
    ud_memtable_unref(plain);
    struct ud_mem_entry e;
    for (int i = 0; i < 3000; i += 7) {
        int len = snprintf(key, sizeof key, "key-%08d", i);
        assert_int_equal(ud_memtable_get(m, 1, key, (size_t)len, &e), 0);
        memset(value, i & 0xff, sizeof value);
        assert_memory_equal(e.value, value, sizeof value);
    }
    ud_memtable_unref(m);
    assert_int_equal(ud_arena_mapped_total(), mapped0);

    /* Freed right after the spare was queued, many times over, on and after a stop. */
    for (int round = 0; round < 200; round++) {
        struct ud_memtable *t = new_memtable_budget(64 * UD_ARENA_BLOCK);
        put_ok(t, 1, "k", 1, UD_MEM_VALUE, "v");
        if (round == 100)
            ud_prefault_stop();
        ud_memtable_unref(t);
        assert_int_equal(ud_arena_mapped_total(), mapped0);
    }
}

/* Fills m with 1 KiB values under keys "<prefix>%06d" (every third number, from `first`) until
 * it holds `bytes`; returns the count. The value's bytes are a function of the key. */
static int fill_pattern(struct ud_memtable *m, const char *prefix, int first, size_t bytes)
{
    uint8_t value[1024];
    char key[32];
    int n = 0;
    while (ud_memtable_bytes(m) < bytes) {
        int len = snprintf(key, sizeof key, "%s%06d", prefix, first + 3 * n);
        memset(value, (first + 3 * n) & 0xff, sizeof value);
        assert_int_equal(ud_memtable_put(m, 1, key, (size_t)len, (uint64_t)n + 1, UD_MEM_VALUE,
                                         value, sizeof value),
                         0);
        n++;
    }
    return n;
}

/*
 * A released memtable's blocks serve the next memtable (nothing new is mapped), and none of the
 * old entries shows through: the new memtable lists, finds and seeks exactly its own entries,
 * though its list and index nodes now lie where the old ones were.
 */
static void test_arena_pool_reuses_blocks_without_stale_entries(void **state)
{
    (void)state;
    size_t mapped0 = ud_arena_mapped_total();
    const size_t reserve = 8 * UD_ARENA_BLOCK;
    ud_arena_pool_reserve(reserve);

    struct ud_memtable *old = new_memtable();
    /* Keys interleave with the new memtable's ("k%06d" numbers 0, 3, 6... against 1, 4, 7...). */
    int n_old = fill_pattern(old, "k", 0, 6 * UD_ARENA_BLOCK);
    size_t held = ud_arena_mapped_total() - mapped0;
    assert_true(held >= 6 * UD_ARENA_BLOCK && held <= reserve);
    ud_memtable_unref(old);
    assert_int_equal(ud_arena_pool_bytes(), held); /* kept, not unmapped */
    assert_int_equal(ud_arena_mapped_total() - mapped0, held);

    struct ud_memtable *m = new_memtable();
    int n = fill_pattern(m, "k", 1, 5 * UD_ARENA_BLOCK);
    assert_int_equal(ud_arena_mapped_total() - mapped0, held); /* every block a reused one */
    assert_true(ud_arena_pool_bytes() <= held - 5 * UD_ARENA_BLOCK);

    /* Exactly the new entries, in order, with their values. */
    struct ud_memtable_iter it;
    ud_memtable_iter_init(&it, m);
    int seen = 0;
    char key[32];
    for (ud_memtable_iter_first(&it); ud_memtable_iter_valid(&it); ud_memtable_iter_next(&it)) {
        struct ud_mem_entry e;
        ud_memtable_iter_entry(&it, &e);
        int len = snprintf(key, sizeof key, "k%06d", 1 + 3 * seen);
        assert_int_equal(e.key_len, len);
        assert_memory_equal(e.key, key, (size_t)len);
        assert_int_equal(e.value_len, 1024);
        assert_int_equal(e.value[0], (1 + 3 * seen) & 0xff);
        assert_int_equal(e.value[1023], (1 + 3 * seen) & 0xff);
        seen++;
    }
    assert_int_equal(seen, n);
    struct ud_mem_entry e;
    for (int i = 0; i < n_old; i += 5) {
        int len = snprintf(key, sizeof key, "k%06d", 3 * i);
        assert_int_equal(ud_memtable_get(m, 1, key, (size_t)len, &e), UD_ENOTFOUND);
        /* A seek to an old key lands on the next new one. */
        ud_memtable_iter_seek(&it, 1, key, (size_t)len);
        if (i < n) {
            assert_true(ud_memtable_iter_valid(&it));
            ud_memtable_iter_entry(&it, &e);
            len = snprintf(key, sizeof key, "k%06d", 3 * i + 1);
            assert_memory_equal(e.key, key, (size_t)len);
        }
    }
    for (int i = 0; i < n; i += 7) {
        int len = snprintf(key, sizeof key, "k%06d", 1 + 3 * i);
        assert_int_equal(ud_memtable_get(m, 1, key, (size_t)len, &e), 0);
        assert_int_equal(e.value[512], (1 + 3 * i) & 0xff);
    }
    ud_memtable_unref(m);
    ud_arena_pool_unreserve(reserve);
    assert_int_equal(ud_arena_pool_bytes(), 0);
    assert_int_equal(ud_arena_mapped_total(), mapped0);
}

/* The pool keeps no more than was reserved, and no block but shared ones; lowering the limit
 * unmaps what is over it. */
static void test_arena_pool_bounded(void **state)
{
    (void)state;
    size_t mapped0 = ud_arena_mapped_total();
    ud_arena_pool_reserve(2 * UD_ARENA_BLOCK + UD_ARENA_BLOCK / 2);

    struct ud_memtable *m = new_memtable();
    fill_pattern(m, "a", 0, 6 * UD_ARENA_BLOCK);
    uint8_t *big = calloc(1, UD_ARENA_BLOCK); /* a dedicated block of more than 1 MiB */
    assert_non_null(big);
    assert_int_equal(ud_memtable_put(m, 3, "lob", 3, 99999, UD_MEM_LOB, big, UD_ARENA_BLOCK), 0);
    free(big);
    ud_memtable_unref(m);
    assert_int_equal(ud_arena_pool_bytes(), 2 * UD_ARENA_BLOCK);
    assert_int_equal(ud_arena_mapped_total() - mapped0, 2 * UD_ARENA_BLOCK);

    /* A second owner's reservation adds up; dropping both empties the pool. */
    ud_arena_pool_reserve(UD_ARENA_BLOCK);
    ud_arena_pool_unreserve(2 * UD_ARENA_BLOCK);
    assert_int_equal(ud_arena_pool_bytes(), UD_ARENA_BLOCK);
    assert_int_equal(ud_arena_mapped_total() - mapped0, UD_ARENA_BLOCK);
    ud_arena_pool_unreserve(UD_ARENA_BLOCK + UD_ARENA_BLOCK / 2);
    assert_int_equal(ud_arena_pool_bytes(), 0);
    assert_int_equal(ud_arena_mapped_total(), mapped0);

    /* Nothing reserved: a released memtable gives everything back. */
    m = new_memtable();
    fill_pattern(m, "b", 0, 2 * UD_ARENA_BLOCK);
    ud_memtable_unref(m);
    assert_int_equal(ud_arena_mapped_total(), mapped0);
}

/* A pooled block needs no prefault: with the pool holding blocks, no spare is mapped ahead, and
 * the writer never populates (the blocks are resident: every page is in). */
static void test_arena_pool_blocks_resident_no_spare(void **state)
{
    (void)state;
    size_t mapped0 = ud_arena_mapped_total();
    assert_int_equal(ud_prefault_start(), 0);
    ud_arena_pool_reserve(4 * UD_ARENA_BLOCK);
    struct ud_memtable *m = new_memtable_budget(16 * UD_ARENA_BLOCK);
    fill_pattern(m, "a", 0, 3 * UD_ARENA_BLOCK + UD_ARENA_BLOCK / 2);
    ud_memtable_unref(m); /* the current block's untouched middle is faulted in for the pool */
    size_t pooled = ud_arena_pool_bytes();
    assert_true(pooled >= 4 * UD_ARENA_BLOCK - UD_ARENA_BLOCK); /* its blocks, maybe the spare */

    struct ud_arena a;
    ud_arena_init(&a);
    ud_arena_set_spare_limit(&a, 16 * UD_ARENA_BLOCK);
    void *back;
    assert_non_null(ud_arena_alloc(&a, 64, 1000, &back));
    assert_null(a.spare); /* the pool still holds blocks: nothing mapped ahead */
    assert_true(a.ready_front == (char *)a.blocks + UD_ARENA_BLOCK);
    assert_true(a.ready_back == (char *)a.blocks);
    if (ud_populate_supported())
        assert_int_equal(resident_pages(a.blocks, UD_ARENA_BLOCK),
                         UD_ARENA_BLOCK / (size_t)sysconf(_SC_PAGESIZE));
    ud_arena_release(&a);
    ud_arena_pool_unreserve(4 * UD_ARENA_BLOCK);
    assert_int_equal(ud_arena_mapped_total(), mapped0);
    ud_prefault_stop();
}

static void assert_unchanged(struct ud_memtable *m, size_t bytes, uint64_t count, uint64_t min,
                             uint64_t max)
{
    assert_int_equal(ud_memtable_bytes(m), bytes);
    assert_int_equal(ud_memtable_count(m), count);
    assert_int_equal(ud_memtable_min_lsn(m), min);
    assert_int_equal(ud_memtable_max_lsn(m), max);
}

static void test_enomem_leaves_memtable_unchanged(void **state)
{
    (void)state;
    size_t mapped0 = ud_arena_mapped_total();
    struct ud_memtable *m = new_memtable();
    uint8_t value[1000];
    memset(value, 1, sizeof value);
    struct ud_mem_entry e;

    /* The very first put needs a block. */
    ud_arena_fail_after(0);
    assert_int_equal(ud_memtable_put(m, 1, "k", 1, 1, UD_MEM_VALUE, value, sizeof value),
                     UD_ENOMEM);
    assert_unchanged(m, ud_memtable_filter_bytes(0), 0, 0, 0);
    assert_int_equal(ud_memtable_get(m, 1, "k", 1, &e), UD_ENOTFOUND);
    ud_arena_fail_after(-1);

    /* Fill one block, then refuse the next one. */
    char key[32];
    uint64_t lsn = 100;
    ud_arena_fail_after(1);
    int rc = 0;
    int stored = 0;
    while (rc == 0) {
        int len = snprintf(key, sizeof key, "k%06d", stored);
        rc = ud_memtable_put(m, 1, key, (size_t)len, lsn, UD_MEM_VALUE, value, sizeof value);
        if (rc == 0) {
            stored++;
            lsn++;
        }
    }
    assert_int_equal(rc, UD_ENOMEM);
    assert_true(stored > 900); /* about 1 MiB of 1 KB entries went in first */
    size_t bytes = ud_memtable_bytes(m);
    assert_unchanged(m, bytes, (uint64_t)stored, 100, lsn - 1);
    assert_int_equal(ud_memtable_get(m, 1, key, strlen(key), &e), UD_ENOTFOUND);

    /* A newer version of an existing key that needs a block of its own is refused without
     * hiding the old version. */
    uint8_t big[UD_ARENA_LARGE + 1];
    memset(big, 2, sizeof big);
    size_t b2 = ud_memtable_bytes(m);
    uint64_t c2 = ud_memtable_count(m);
    uint64_t max2 = ud_memtable_max_lsn(m);
    assert_int_equal(ud_memtable_put(m, 1, "k000001", 7, lsn + 10, UD_MEM_VALUE, big, sizeof big),
                     UD_ENOMEM);
    assert_unchanged(m, b2, c2, 100, max2);
    assert_int_equal(ud_memtable_get(m, 1, "k000001", 7, &e), 0);
    assert_int_equal(e.lsn, 101);
    assert_int_equal(e.value_len, sizeof value);

    /* Everything stored before the failures is intact and in order. */
    struct ud_memtable_iter it;
    ud_memtable_iter_init(&it, m);
    int seen = 0;
    for (ud_memtable_iter_first(&it); ud_memtable_iter_valid(&it); ud_memtable_iter_next(&it)) {
        ud_memtable_iter_entry(&it, &e);
        int len = snprintf(key, sizeof key, "k%06d", seen);
        assert_int_equal(e.key_len, len);
        assert_memory_equal(e.key, key, (size_t)len);
        assert_int_equal(e.lsn, 100 + (uint64_t)seen);
        assert_int_equal(e.value_len, sizeof value);
        assert_memory_equal(e.value, value, sizeof value);
        seen++;
    }
    assert_int_equal(seen, stored);
    assert_int_equal((uint64_t)seen, c2);

    /* Once memory is back, puts work again. */
    ud_arena_fail_after(-1);
    assert_int_equal(ud_memtable_put(m, 1, "k000001", 7, lsn + 10, UD_MEM_VALUE, big, sizeof big),
                     0);
    assert_int_equal(ud_memtable_get(m, 1, "k000001", 7, &e), 0);
    assert_int_equal(e.lsn, lsn + 10);
    assert_int_equal(e.value_len, sizeof big);
    ud_memtable_unref(m);
    assert_int_equal(ud_arena_mapped_total(), mapped0);
}

/* --- concurrency ------------------------------------------------------------------------------ */

enum { CONC_INSERTS = 200000, CONC_KEYS = 60000 };

struct conc {
    struct ud_memtable *m;
    uint32_t key_of[CONC_INSERTS]; /* insert i writes key key_of[i] at lsn i + 1 */
    _Atomic uint64_t published;    /* inserts that have returned */
    _Atomic int done;
    _Atomic uint64_t failures;
    _Atomic uint64_t gets, scans, scans_during_inserts;
    char first_failure[256];
    pthread_mutex_t failure_lock;
};

static size_t conc_key(uint32_t id, uint8_t *out)
{
    /* Big-endian id then a NUL and a tail whose length depends on the id: binary bytes and keys
     * that share long prefixes. */
    out[0] = (uint8_t)(id >> 24);
    out[1] = (uint8_t)(id >> 16);
    out[2] = (uint8_t)(id >> 8);
    out[3] = (uint8_t)id;
    size_t len = 4 + id % 5;
    for (size_t i = 4; i < len; i++)
        out[i] = (uint8_t)(i == 4 ? 0 : id * 31 + i);
    return len;
}

static uint32_t conc_key_id(const uint8_t *key)
{
    return (uint32_t)key[0] << 24 | (uint32_t)key[1] << 16 | (uint32_t)key[2] << 8 | key[3];
}

/* The value written at (key id, lsn): a reader can tell a torn or misplaced value. */
static size_t conc_value(uint32_t id, uint64_t lsn, uint8_t *out)
{
    uint64_t rng = ((uint64_t)id << 32) ^ lsn ^ 0xC0FFEE;
    size_t len = 8 + ud_test_rand(&rng) % 120;
    ud_test_fill(&rng, out, len);
    return len;
}

static void conc_fail(struct conc *c, const char *what, uint64_t detail)
{
    if (atomic_fetch_add(&c->failures, 1) == 0) {
        pthread_mutex_lock(&c->failure_lock);
        snprintf(c->first_failure, sizeof c->first_failure, "%s (%llu)", what,
                 (unsigned long long)detail);
        pthread_mutex_unlock(&c->failure_lock);
    }
}

static int conc_check_entry(struct conc *c, const struct ud_mem_entry *e)
{
    uint8_t key[16], value[128];
    if (e->key_len < 4) {
        conc_fail(c, "short key", e->key_len);
        return -1;
    }
    uint32_t id = conc_key_id(e->key);
    size_t klen = conc_key(id, key);
    size_t vlen = conc_value(id, e->lsn, value);
    if (e->space != 1 || e->kind != UD_MEM_VALUE || e->key_len != klen ||
        memcmp(e->key, key, klen) != 0) {
        conc_fail(c, "key bytes", e->lsn);
        return -1;
    }
    if (e->lsn == 0 || e->lsn > CONC_INSERTS || c->key_of[e->lsn - 1] != id) {
        conc_fail(c, "lsn not written for this key", e->lsn);
        return -1;
    }
    if (e->value_len != vlen || memcmp(e->value, value, vlen) != 0) {
        conc_fail(c, "value does not match key and lsn", e->lsn);
        return -1;
    }
    return 0;
}

static int entry_cmp(const struct ud_mem_entry *a, const struct ud_mem_entry *b)
{
    if (a->space != b->space)
        return a->space < b->space ? -1 : 1;
    size_t common = a->key_len < b->key_len ? a->key_len : b->key_len;
    int c = memcmp(a->key, b->key, common);
    if (c != 0)
        return c;
    if (a->key_len != b->key_len)
        return a->key_len < b->key_len ? -1 : 1;
    return a->lsn > b->lsn ? -1 : a->lsn < b->lsn ? 1 : 0;
}

static void *conc_reader(void *arg)
{
    struct conc *c = arg;
    uint64_t rng = (uint64_t)(uintptr_t)&rng;
    uint64_t *last_lsn = calloc(CONC_KEYS, sizeof *last_lsn);
    struct ud_memtable_iter it;
    ud_memtable_iter_init(&it, c->m);
    uint8_t key[16];
    while (atomic_load_explicit(&c->published, memory_order_acquire) == 0)
        sched_yield();
    for (;;) {
        int finished = atomic_load(&c->done);
        /* Point reads: every returned insert is visible, and versions never go backwards. */
        for (int g = 0; g < 2000; g++) {
            uint64_t pub = atomic_load_explicit(&c->published, memory_order_acquire);
            if (pub == 0)
                break;
            uint64_t i = ud_test_rand(&rng) % pub;
            uint32_t id = c->key_of[i];
            size_t klen = conc_key(id, key);
            struct ud_mem_entry e;
            if (ud_memtable_get(c->m, 1, key, klen, &e) != 0) {
                conc_fail(c, "published key not found", i + 1);
                continue;
            }
            if (conc_check_entry(c, &e) != 0)
                continue;
            if (e.lsn < i + 1 || e.lsn < last_lsn[id])
                conc_fail(c, "get returned an older version than already seen", e.lsn);
            last_lsn[id] = e.lsn;
            atomic_fetch_add_explicit(&c->gets, 1, memory_order_relaxed);
        }

        /* A scan: strictly ordered, every entry consistent, nothing published before it missing. */
        uint64_t pub = atomic_load_explicit(&c->published, memory_order_acquire);
        uint64_t seen = 0;
        struct ud_mem_entry prev, e;
        int have_prev = 0;
        for (ud_memtable_iter_first(&it); ud_memtable_iter_valid(&it); ud_memtable_iter_next(&it)) {
            ud_memtable_iter_entry(&it, &e);
            if (conc_check_entry(c, &e) != 0)
                break;
            if (have_prev && entry_cmp(&prev, &e) >= 0) {
                conc_fail(c, "scan out of order", e.lsn);
                break;
            }
            prev = e;
            have_prev = 1;
            seen++;
        }
        if (seen < pub)
            conc_fail(c, "scan missed published versions", pub - seen);

        /* A seek plus next_key: distinct keys, increasing. */
        uint32_t start = (uint32_t)(ud_test_rand(&rng) % CONC_KEYS);
        size_t klen = conc_key(start, key);
        have_prev = 0;
        int steps = 0;
        for (ud_memtable_iter_seek(&it, 1, key, klen); ud_memtable_iter_valid(&it) && steps < 500;
             ud_memtable_iter_next_key(&it), steps++) {
            ud_memtable_iter_entry(&it, &e);
            if (conc_check_entry(c, &e) != 0)
                break;
            if (have_prev && (entry_cmp(&prev, &e) >= 0 ||
                              (prev.key_len == e.key_len && !memcmp(prev.key, e.key, e.key_len)))) {
                conc_fail(c, "next_key did not advance to a greater key", e.lsn);
                break;
            }
            prev = e;
            have_prev = 1;
        }
        atomic_fetch_add_explicit(&c->scans, 1, memory_order_relaxed);
        if (finished)
            break;
        if (!atomic_load(&c->done))
            atomic_fetch_add_explicit(&c->scans_during_inserts, 1, memory_order_relaxed);
    }
    free(last_lsn);
    return NULL;
}

/* Two readers check gets, scans and next_key while one writer inserts keys in random order
 * (ascending: in key order, a few versions of each in a row, so that every insert lands at the
 * right edge of the search index and splits it there). */
static void run_concurrent_readers(int ascending)
{
    struct conc *c = calloc(1, sizeof *c);
    assert_non_null(c);
    pthread_mutex_init(&c->failure_lock, NULL);
    c->m = new_memtable();
    uint64_t rng = 4242;
    for (uint32_t i = 0; i < CONC_INSERTS; i++)
        c->key_of[i] = ascending ? (uint32_t)((uint64_t)i * CONC_KEYS / CONC_INSERTS)
                                 : (uint32_t)(ud_test_rand(&rng) % CONC_KEYS);

    pthread_t readers[2];
    for (int r = 0; r < 2; r++)
        assert_int_equal(pthread_create(&readers[r], NULL, conc_reader, c), 0);

    double t0 = now_s();
    uint8_t key[16], value[128];
    for (uint32_t i = 0; i < CONC_INSERTS; i++) {
        uint32_t id = c->key_of[i];
        size_t klen = conc_key(id, key);
        size_t vlen = conc_value(id, i + 1, value);
        assert_int_equal(ud_memtable_put(c->m, 1, key, klen, i + 1, UD_MEM_VALUE, value, vlen), 0);
        atomic_store_explicit(&c->published, i + 1, memory_order_release);
        /* Half way, let a reader finish a scan while inserts are still to come: on a loaded
         * machine the writer could otherwise be done before any reader was scheduled. */
        for (int w = 0;
             i == CONC_INSERTS / 2 && w < 10000 && atomic_load(&c->scans_during_inserts) == 0; w++)
            usleep(1000);
    }
    double t1 = now_s();
    atomic_store(&c->done, 1);
    for (int r = 0; r < 2; r++)
        pthread_join(readers[r], NULL);

    printf(
        "# concurrent (%s keys): %d inserts in %.3f s with 2 readers; reader gets %llu, scans %llu "
        "(%llu while inserts ran)\n",
        ascending ? "ascending" : "random", CONC_INSERTS, t1 - t0,
        (unsigned long long)atomic_load(&c->gets), (unsigned long long)atomic_load(&c->scans),
        (unsigned long long)atomic_load(&c->scans_during_inserts));
    fflush(stdout);
    if (atomic_load(&c->failures) != 0)
        fail_msg("%llu reader failures, first: %s", (unsigned long long)atomic_load(&c->failures),
                 c->first_failure);
    /* The readers really overlapped the writer, and each did a last pass over the full table. */
    assert_true(atomic_load(&c->scans_during_inserts) >= 1);
    assert_true(atomic_load(&c->scans) >= 2);
    assert_int_equal(ud_memtable_count(c->m), CONC_INSERTS);
    ud_memtable_unref(c->m);
    pthread_mutex_destroy(&c->failure_lock);
    free(c);
}

static void test_concurrent_readers_during_inserts(void **state)
{
    (void)state;
    run_concurrent_readers(0);
}

static void test_concurrent_readers_during_ascending_inserts(void **state)
{
    (void)state;
    run_concurrent_readers(1);
}

struct ref_arg {
    struct ud_memtable *m;
    int found;
};

static void *ref_holder(void *arg)
{
    struct ref_arg *a = arg;
    struct ud_mem_entry e;
    /* Reads through its own reference after the creator may have dropped its one. */
    for (int i = 0; i < 1000; i++)
        if (ud_memtable_get(a->m, 1, "held", 4, &e) == 0 && e.value_len == 5 &&
            memcmp(e.value, "value", 5) == 0)
            a->found++;
    ud_memtable_unref(a->m);
    return NULL;
}

static void test_ref_unref_across_threads(void **state)
{
    (void)state;
    size_t mapped0 = ud_arena_mapped_total();
    for (int round = 0; round < 20; round++) {
        struct ud_memtable *m = new_memtable();
        put_ok(m, 1, "held", 1, UD_MEM_VALUE, "value");
        struct ref_arg args[3];
        pthread_t t[3];
        for (int i = 0; i < 3; i++) {
            args[i].m = m;
            args[i].found = 0;
            ud_memtable_ref(m);
            assert_int_equal(pthread_create(&t[i], NULL, ref_holder, &args[i]), 0);
        }
        ud_memtable_unref(m); /* the creator lets go first; the threads free it */
        for (int i = 0; i < 3; i++) {
            pthread_join(t[i], NULL);
            assert_int_equal(args[i].found, 1000);
        }
        assert_int_equal(ud_arena_mapped_total(), mapped0);
    }
}

/* --- throughput ------------------------------------------------------------------------------- */

/* Fills a memtable to the engine's 64 MiB budget (16 MiB under sanitizers) with values of value_len
 * bytes under 16-byte random keys, and reports insert and lookup rates and what the process paid in
 * RSS. */
static void measure(size_t value_len, int sequential)
{
#ifdef SANITIZED
    const size_t budget = (size_t)16 << 20; /* the figures mean little there; keep it short */
#else
    const size_t budget = (size_t)64 << 20;
#endif
    size_t max_n = budget / (value_len + 16) + 1;
    uint8_t(*keys)[16] = malloc(max_n * sizeof *keys);
    uint8_t *value = malloc(value_len);
    assert_non_null(keys);
    assert_non_null(value);
    uint64_t rng = 99 + value_len;
    for (size_t i = 0; i < max_n; i++) {
        if (sequential) {
            memset(keys[i], 0, 8);
            for (int b = 0; b < 8; b++)
                keys[i][8 + b] = (uint8_t)(i >> (56 - 8 * b));
        } else {
            ud_test_fill(&rng, keys[i], 16);
        }
    }
    ud_test_fill(&rng, value, value_len);

    size_t rss0 = proc_status_bytes("RssAnon");
    struct ud_memtable *m = new_memtable();
    size_t n = 0;
    double t0 = now_s();
    while (ud_memtable_bytes(m) < budget && n < max_n) {
        assert_int_equal(ud_memtable_put(m, 1, keys[n], 16, n + 1, UD_MEM_VALUE, value, value_len),
                         0);
        n++;
    }
    double t1 = now_s();
    size_t rss1 = proc_status_bytes("RssAnon");
    size_t bytes = ud_memtable_bytes(m);

#ifdef SANITIZED
    size_t gets = 50000;
#else
    size_t gets = 500000;
#endif
    uint64_t sum = 0;
    double t2 = now_s();
    for (size_t g = 0; g < gets; g++) {
        struct ud_mem_entry e;
        size_t i = ud_test_rand(&rng) % n;
        int rc = ud_memtable_get(m, 1, keys[i], 16, &e);
        if (rc != 0 || e.lsn != i + 1)
            fail_msg("get %zu: rc %d", i, rc);
        sum += e.value_len;
    }
    double t3 = now_s();
    assert_int_equal(sum, gets * value_len);

    struct ud_memtable_iter it;
    ud_memtable_iter_init(&it, m);
    size_t scanned = 0;
    double t4 = now_s();
    for (ud_memtable_iter_first(&it); ud_memtable_iter_valid(&it); ud_memtable_iter_next(&it))
        scanned++;
    double t5 = now_s();
    assert_int_equal(scanned, n);

    printf("# %s keys, %zu B values: %zu inserts %.0f/s (%.0f ns each); %zu random gets "
           "%.0f/s (%.0f ns); scan %.0f entries/s\n",
           sequential ? "sequential" : "random", value_len, n, (double)n / (t1 - t0),
           (t1 - t0) * 1e9 / (double)n, gets, (double)gets / (t3 - t2),
           (t3 - t2) * 1e9 / (double)gets, (double)scanned / (t5 - t4));
    printf("#   memtable bytes %.2f MiB (payload %.2f MiB), RssAnon grew %.2f MiB\n",
           (double)bytes / 1048576.0, (double)n * (16 + value_len) / 1048576.0,
           (double)(rss1 - rss0) / 1048576.0);
    fflush(stdout);

    /* Not timing: the memory the budget counts is the memory the process holds. Sanitizers add
     * shadow memory of their own, so the check runs in plain builds only. */
    assert_true(bytes >= budget);
    assert_true(bytes < budget + UD_ARENA_BLOCK);
#ifndef SANITIZED
    assert_true(rss1 - rss0 <= bytes + ((size_t)2 << 20));
#endif
    ud_memtable_unref(m);
#ifndef SANITIZED
    size_t rss2 = proc_status_bytes("RssAnon");
    assert_true(rss2 < rss0 + ((size_t)2 << 20));
#endif
    free(keys);
    free(value);
}

static void test_throughput(void **state)
{
    (void)state;
    measure(1024, 0);
    measure(1024, 1);
    measure(100, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_get_through_key_filter),
        cmocka_unit_test(test_key_filter_false_positives),
        cmocka_unit_test(test_order_matches_sorted_reference),
        cmocka_unit_test(test_index_shapes_match_sorted_reference),
        cmocka_unit_test(test_versions_newest_first_and_kinds),
        cmocka_unit_test(test_seek_and_next_key),
        cmocka_unit_test(test_lsn_range_and_count),
        cmocka_unit_test(test_bytes_and_large_values),
        cmocka_unit_test(test_arena_bytes_count_lost_gap),
        cmocka_unit_test(test_enomem_leaves_memtable_unchanged),
        cmocka_unit_test(test_arena_block_unmapped_alone),
        cmocka_unit_test(test_arena_spare_prefaulted_ahead),
        cmocka_unit_test(test_arena_spare_budget_and_release),
        cmocka_unit_test(test_arena_pool_reuses_blocks_without_stale_entries),
        cmocka_unit_test(test_arena_pool_bounded),
        cmocka_unit_test(test_arena_pool_blocks_resident_no_spare),
        cmocka_unit_test(test_concurrent_readers_during_inserts),
        cmocka_unit_test(test_concurrent_readers_during_ascending_inserts),
        cmocka_unit_test(test_ref_unref_across_threads),
        cmocka_unit_test(test_throughput),
    };
    return cmocka_run_group_tests_name("memtable", tests, NULL, NULL);
}
