/* The record list of POST /internal/v1/{ns}/records (proto/record_list.c): round trips, and every
 * malformed list refused with the record and byte it stops at, leaving nothing allocated. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "core/endian.h"
#include "proto/record_list.h"

static uint8_t *dup_bytes(const char *s)
{
    uint8_t *p = malloc(strlen(s) + 1);
    assert_non_null(p);
    memcpy(p, s, strlen(s));
    return p;
}

static void test_round_trip(void **state)
{
    (void)state;
    const char *in[] = {"first record", "", "third, a little longer than the others"};
    uint8_t *recs[3];
    size_t lens[3];
    for (int i = 0; i < 3; i++) {
        recs[i] = dup_bytes(in[i]);
        lens[i] = strlen(in[i]);
    }
    size_t len;
    uint8_t *list = ud_record_list_pack(recs, lens, 3, &len); /* frees recs[] */
    assert_int_equal(len, 3 * 4 + strlen(in[0]) + strlen(in[1]) + strlen(in[2]));
    assert_int_equal(ud_get_le32(list), strlen(in[0]));

    uint8_t *out[4];
    size_t out_lens[4], n = 99, bad_i, bad_off;
    assert_int_equal(ud_record_list_unpack(list, len, out, out_lens, 4, &n, &bad_i, &bad_off), 0);
    assert_int_equal(n, 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(out_lens[i], strlen(in[i]));
        assert_memory_equal(out[i], in[i], out_lens[i]);
        free(out[i]);
    }
    /* An empty list is zero records. */
    assert_int_equal(ud_record_list_unpack(list, 0, out, out_lens, 4, &n, &bad_i, &bad_off), 0);
    assert_int_equal(n, 0);
    free(list);
}

static void test_malformed(void **state)
{
    (void)state;
    uint8_t list[64];
    uint8_t *out[2];
    size_t lens[2], n, bad_i, bad_off;
    /* Record 1 claims more bytes than follow. */
    ud_put_le32(list, 3);
    memcpy(list + 4, "abc", 3);
    ud_put_le32(list + 7, 10);
    memcpy(list + 11, "short", 5);
    assert_int_equal(ud_record_list_unpack(list, 16, out, lens, 2, &n, &bad_i, &bad_off), -1);
    assert_int_equal(bad_i, 1);
    assert_int_equal(bad_off, 7);
    /* A length cut short after a whole record. */
    assert_int_equal(ud_record_list_unpack(list, 9, out, lens, 2, &n, &bad_i, &bad_off), -1);
    assert_int_equal(bad_i, 1);
    assert_int_equal(bad_off, 7);
    /* More records than the caller takes. */
    ud_put_le32(list + 7, 1);
    ud_put_le32(list + 12, 0);
    assert_int_equal(ud_record_list_unpack(list, 12, out, lens, 2, &n, &bad_i, &bad_off), 0);
    assert_int_equal(n, 2);
    free(out[0]);
    free(out[1]);
    assert_int_equal(ud_record_list_unpack(list, 16, out, lens, 2, &n, &bad_i, &bad_off), -1);
    assert_int_equal(bad_i, 2);
    assert_int_equal(bad_off, 12);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_malformed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
