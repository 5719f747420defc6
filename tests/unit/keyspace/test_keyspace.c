/* Unit tests for the row key encoding (core/keyspace.h): round trip, order, prefix ranges, limit
 * and rejection of malformed keys. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/err.h"
#include "core/keyspace.h"

/* A local xorshift64 keeps this test on ud_base alone (tests/lib pulls in the WAL layer). */
static uint64_t next_rand(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Random bytes from a small alphabet rich in the bytes the escaping cares about, so that random
 * keys share prefixes and contain NUL and 0xFF often. */
static size_t rand_bytes(uint64_t *s, uint8_t *out, size_t max_len)
{
    static const uint8_t alphabet[] = {0x00, 0x00, 0x01, 0xFE, 0xFF, 'a', 'b'};
    size_t len = (size_t)(next_rand(s) % (max_len + 1));
    for (size_t i = 0; i < len; i++)
        out[i] = alphabet[next_rand(s) % sizeof alphabet];
    return len;
}

/* Byte-string order: memcmp on the common part, then the shorter one first. */
static int cmp_bytes(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int c = n > 0 ? memcmp(a, b, n) : 0;
    if (c != 0)
        return c < 0 ? -1 : 1;
    return alen < blen ? -1 : alen > blen ? 1 : 0;
}

static void assert_round_trip(const uint8_t *row, size_t row_len, const uint8_t *col,
                              size_t col_len)
{
    uint8_t key[UD_MAX_KEY];
    size_t key_len = ud_row_key_encode(key, row, row_len, col, col_len);
    assert_int_not_equal(key_len, 0);
    assert_int_equal(key_len, ud_row_prefix_len(row, row_len) + col_len);

    uint8_t row_out[UD_MAX_KEY];
    size_t row_out_len = 9999;
    const uint8_t *col_out = NULL;
    size_t col_out_len = 9999;
    assert_int_equal(ud_row_key_decode(key, key_len, row_out, &row_out_len, &col_out, &col_out_len),
                     0);
    assert_int_equal(row_out_len, row_len);
    if (row_len > 0)
        assert_memory_equal(row_out, row, row_len);
    assert_int_equal(col_out_len, col_len);
    assert_ptr_equal(col_out, key + key_len - col_len);
    if (col_len > 0)
        assert_memory_equal(col_out, col, col_len);
}

static void test_round_trip_fixed(void **state)
{
    (void)state;
    assert_round_trip((const uint8_t *)"user1", 5, (const uint8_t *)"name", 4);
    /* NUL bytes anywhere in the row key, including first and last, and runs of them. */
    assert_round_trip((const uint8_t *)"\0", 1, (const uint8_t *)"c", 1);
    assert_round_trip((const uint8_t *)"a\0b", 3, (const uint8_t *)"c", 1);
    assert_round_trip((const uint8_t *)"\0\0\0", 3, (const uint8_t *)"\0", 1);
    assert_round_trip((const uint8_t *)"x\0", 2, (const uint8_t *)"\0\0", 2);
    assert_round_trip((const uint8_t *)"\xff\0\xff", 3, (const uint8_t *)"\xff", 1);
    /* Empty column: the key of the row itself (whole-row tombstones). */
    assert_round_trip((const uint8_t *)"row", 3, NULL, 0);
    /* The column part is verbatim: 00 00 and 00 FF inside it are not escapes. */
    assert_round_trip((const uint8_t *)"r", 1, (const uint8_t *)"\0\0\0\xff", 4);
}

static void test_exact_bytes(void **state)
{
    (void)state;
    uint8_t key[UD_MAX_KEY];
    size_t n = ud_row_key_encode(key, (const uint8_t *)"a\0b", 3, (const uint8_t *)"c", 1);
    const uint8_t want[] = {'a', 0x00, 0xFF, 'b', 0x00, 0x00, 'c'};
    assert_int_equal(n, sizeof want);
    assert_memory_equal(key, want, sizeof want);
    assert_int_equal(ud_row_prefix_len((const uint8_t *)"a\0b", 3), 6);
    assert_int_equal(ud_row_prefix_len(NULL, 0), 2);
}

static void test_round_trip_random(void **state)
{
    (void)state;
    uint64_t s = 0x5EED0001;
    uint8_t row[256], col[256];
    for (int i = 0; i < 20000; i++) {
        size_t row_len = rand_bytes(&s, row, 120);
        size_t col_len = rand_bytes(&s, col, 120);
        assert_round_trip(row, row_len, col, col_len);
    }
}

struct pair {
    uint8_t row[40];
    size_t row_len;
    uint8_t col[40];
    size_t col_len;
    uint8_t key[UD_MAX_KEY];
    size_t key_len;
};

static void test_order_matches_row_then_column(void **state)
{
    (void)state;
    /* For every pair of random (row, column) keys, comparing the encodings bytewise gives the
     * same answer as comparing row bytes first and column bytes second. That is what makes row
     * scans come out in row-key order and columns of one row adjacent. */
    enum { N = 600 };
    struct pair *p = calloc(N, sizeof *p);
    assert_non_null(p);
    uint64_t s = 0x5EED0002;
    for (int i = 0; i < N; i++) {
        p[i].row_len = rand_bytes(&s, p[i].row, 6);
        p[i].col_len = rand_bytes(&s, p[i].col, 4);
        /* Some pairs share their row with an earlier pair, to compare columns of one row. */
        if (i > 0 && next_rand(&s) % 4 == 0) {
            size_t j = (size_t)(next_rand(&s) % (uint64_t)i);
            memcpy(p[i].row, p[j].row, p[j].row_len);
            p[i].row_len = p[j].row_len;
        }
        p[i].key_len = ud_row_key_encode(p[i].key, p[i].row, p[i].row_len, p[i].col, p[i].col_len);
        assert_int_not_equal(p[i].key_len, 0);
    }
    for (int i = 0; i < N; i++) {
        for (int j = 0; j < N; j++) {
            int want = cmp_bytes(p[i].row, p[i].row_len, p[j].row, p[j].row_len);
            if (want == 0)
                want = cmp_bytes(p[i].col, p[i].col_len, p[j].col, p[j].col_len);
            int got = cmp_bytes(p[i].key, p[i].key_len, p[j].key, p[j].key_len);
            if (got != want)
                fail_msg("pairs %d and %d: encoded order %d, (row, column) order %d", i, j, got,
                         want);
        }
    }
    free(p);
}

static int has_prefix(const uint8_t *key, size_t key_len, const uint8_t *prefix, size_t prefix_len)
{
    return key_len >= prefix_len && memcmp(key, prefix, prefix_len) == 0;
}

static void test_row_prefix_is_exact_range(void **state)
{
    (void)state;
    /* The encoding of (row, "") is a prefix of every column key of that row and of no key of any
     * other row, even when one row key is a prefix of the other ("a" and "a\0"). */
    uint64_t s = 0x5EED0003;
    uint8_t r1[16], r2[16], col[8];
    uint8_t prefix[UD_MAX_KEY], key[UD_MAX_KEY];
    for (int i = 0; i < 20000; i++) {
        size_t l1 = rand_bytes(&s, r1, 5);
        size_t l2 = rand_bytes(&s, r2, 5);
        if (next_rand(&s) % 2 == 0 && l1 < 15) {
            /* r2 = r1 + one more byte: the hard case for prefixes. */
            memcpy(r2, r1, l1);
            r2[l1] = (uint8_t)(next_rand(&s) % 2 == 0 ? 0x00 : 0xFF);
            l2 = l1 + 1;
        }
        size_t cl = rand_bytes(&s, col, 6);
        size_t pl = ud_row_key_encode(prefix, r1, l1, NULL, 0);
        assert_int_equal(pl, ud_row_prefix_len(r1, l1));
        size_t kl = ud_row_key_encode(key, r2, l2, col, cl);
        int same_row = l1 == l2 && (l1 == 0 || memcmp(r1, r2, l1) == 0);
        assert_int_equal(has_prefix(key, kl, prefix, pl), same_row);
    }
}

static void test_limit(void **state)
{
    (void)state;
    uint8_t row[UD_MAX_KEY + 1];
    uint8_t col[UD_MAX_KEY + 1];
    uint8_t key[UD_MAX_KEY];
    memset(row, 'r', sizeof row);
    memset(col, 'c', sizeof col);

    /* Without NUL bytes: row + column + 2 <= 511. */
    assert_int_equal(ud_row_key_encode(key, row, 509, NULL, 0), UD_MAX_KEY);
    assert_int_equal(ud_row_key_encode(key, row, 510, NULL, 0), 0);
    assert_int_equal(ud_row_key_encode(key, row, 300, col, 209), UD_MAX_KEY);
    assert_int_equal(ud_row_key_encode(key, row, 300, col, 210), 0);
    assert_int_equal(ud_row_key_encode(key, row, 1, col, 508), UD_MAX_KEY);
    assert_int_equal(ud_row_key_encode(key, row, 1, col, 509), 0);
    /* Each NUL in the row key costs two bytes. */
    memset(row, 0, 255);
    assert_int_equal(ud_row_key_encode(key, row, 254, col, 1), UD_MAX_KEY);
    assert_int_equal(ud_row_key_encode(key, row, 254, col, 2), 0);
    assert_int_equal(ud_row_key_encode(key, row, 255, NULL, 0), 0);
    assert_round_trip(row, 254, col, 1);

    /* At the limit the key still decodes. */
    memset(row, 'r', sizeof row);
    assert_round_trip(row, 509, NULL, 0);
}

static void assert_decode_rejects(const void *key, size_t key_len)
{
    /* Exactly sized copy so that ASan catches a read past the end. */
    uint8_t *copy = malloc(key_len > 0 ? key_len : 1);
    assert_non_null(copy);
    if (key_len > 0)
        memcpy(copy, key, key_len);
    uint8_t row[UD_MAX_KEY];
    size_t row_len, col_len;
    const uint8_t *col;
    assert_int_equal(ud_row_key_decode(copy, key_len, row, &row_len, &col, &col_len), UD_ECORRUPT);
    free(copy);
}

static void test_decode_rejects(void **state)
{
    (void)state;
    assert_decode_rejects("", 0);
    assert_decode_rejects("abc", 3);   /* no 00 00 separator */
    assert_decode_rejects("abc\0", 4); /* a lone trailing NUL */
    assert_decode_rejects("a\0\x01"
                          "c",
                          4);             /* NUL followed by neither 00 nor FF */
    assert_decode_rejects("a\0\xff", 3);  /* an escaped NUL, then no separator */
    assert_decode_rejects("\0\xff\0", 3); /* separator cut in half */

    /* A key longer than any encoding must be refused, not decoded into a 511-byte buffer. */
    uint8_t big[2048];
    memset(big, 'x', sizeof big);
    big[sizeof big - 2] = 0;
    big[sizeof big - 1] = 0;
    assert_decode_rejects(big, sizeof big);
    assert_decode_rejects(big + sizeof big - (UD_MAX_KEY + 1), UD_MAX_KEY + 1);
    /* ... and the longest valid one is accepted. */
    uint8_t row[UD_MAX_KEY];
    size_t row_len, col_len;
    const uint8_t *col;
    assert_int_equal(
        ud_row_key_decode(big + sizeof big - UD_MAX_KEY, UD_MAX_KEY, row, &row_len, &col, &col_len),
        0);
    assert_int_equal(row_len, UD_MAX_KEY - 2);
    assert_int_equal(col_len, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_fixed),
        cmocka_unit_test(test_exact_bytes),
        cmocka_unit_test(test_round_trip_random),
        cmocka_unit_test(test_order_matches_row_then_column),
        cmocka_unit_test(test_row_prefix_is_exact_range),
        cmocka_unit_test(test_limit),
        cmocka_unit_test(test_decode_rejects),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
