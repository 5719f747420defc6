/* Unit tests for the LMDB store (core/store.h): spaces, cursors, snapshots, checkpoint, map growth,
 * limits, version check, backups, and the random-read cost against raw mdb_get. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <lmdb.h>

#include "core/clock.h"
#include "core/endian.h"
#include "core/err.h"
#include "core/keyspace.h"
#include "core/store.h"
#include "tests/lib/testutil.h"

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_SANITIZER 1
#endif
#endif
#ifndef UNDER_SANITIZER
#define UNDER_SANITIZER 0
#endif

/* --- helpers ---------------------------------------------------------------------------------- */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static struct ud_store *open_store(const char *dir, uint64_t map_size, uint64_t max_map_size)
{
    struct ud_store_options o = {.dir = dir, .map_size = map_size, .max_map_size = max_map_size};
    struct ud_store *s = NULL;
    char err[UD_ERRMSG_SIZE] = "";
    int rc = ud_store_open(&o, &s, err);
    if (rc != 0)
        print_error("ud_store_open(%s): %s\n", dir, err);
    assert_int_equal(rc, 0);
    assert_non_null(s);
    return s;
}

/* A write described as data: a list of puts and deletes applied in order. */
struct op {
    int space;
    const void *key;
    size_t key_len;
    const void *val; /* NULL: delete */
    size_t val_len;
};

struct ops {
    const struct op *list;
    size_t n;
};

static int apply_ops(struct ud_store_batch *b, void *arg)
{
    const struct ops *o = arg;
    for (size_t i = 0; i < o->n; i++) {
        const struct op *p = &o->list[i];
        int rc = p->val != NULL
                     ? ud_store_batch_put(b, p->space, p->key, p->key_len, p->val, p->val_len)
                     : ud_store_batch_del(b, p->space, p->key, p->key_len);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static void write_ops(struct ud_store *s, const struct op *list, size_t n)
{
    struct ops o = {list, n};
    char err[UD_ERRMSG_SIZE] = "";
    int rc = ud_store_write(s, apply_ops, &o, err);
    if (rc != 0)
        print_error("ud_store_write: %s\n", err);
    assert_int_equal(rc, 0);
}

static void put1(struct ud_store *s, int space, const void *k, size_t kl, const void *v, size_t vl)
{
    struct op o = {space, k, kl, v, vl};
    write_ops(s, &o, 1);
}

static void check_value(struct ud_store *s, int space, const void *k, size_t kl, const void *v,
                        size_t vl)
{
    struct ud_store_snap *snap;
    assert_int_equal(ud_store_snap_begin(s, &snap), 0);
    const uint8_t *got;
    size_t got_len;
    assert_int_equal(ud_store_get(snap, space, k, kl, &got, &got_len), 0);
    assert_int_equal(got_len, vl);
    if (vl > 0)
        assert_memory_equal(got, v, vl);
    ud_store_snap_end(snap);
}

static void check_absent(struct ud_store *s, int space, const void *k, size_t kl)
{
    struct ud_store_snap *snap;
    assert_int_equal(ud_store_snap_begin(s, &snap), 0);
    const uint8_t *got;
    size_t got_len;
    assert_int_equal(ud_store_get(snap, space, k, kl, &got, &got_len), UD_ENOTFOUND);
    ud_store_snap_end(snap);
}

/* Bulk data: keys are u64be(first + i), values a pattern derived from the key. The pattern is
 * cheap to regenerate so readers can check every byte. */
struct bulk {
    uint64_t first, count;
    size_t val_len;
};

static void bulk_value(uint64_t id, uint8_t *val, size_t len)
{
    uint64_t x = id * 0x9E3779B97F4A7C15ull + 1;
    for (size_t j = 0; j < len; j++) {
        if (j % 8 == 0)
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        val[j] = (uint8_t)(x >> (8 * (j % 8)));
    }
}

static int put_bulk(struct ud_store_batch *b, void *arg)
{
    const struct bulk *bk = arg;
    uint8_t *val = malloc(bk->val_len);
    if (val == NULL)
        return UD_ENOMEM;
    int rc = 0;
    for (uint64_t i = 0; i < bk->count && rc == 0; i++) {
        uint8_t key[8];
        ud_put_be64(key, bk->first + i);
        bulk_value(bk->first + i, val, bk->val_len);
        rc = ud_store_batch_put(b, UD_SPACE_KV, key, sizeof key, val, bk->val_len);
    }
    free(val);
    return rc;
}

static int write_bulk(struct ud_store *s, uint64_t first, uint64_t count, size_t val_len, char *err)
{
    struct bulk bk = {first, count, val_len};
    return ud_store_write(s, put_bulk, &bk, err);
}

/* Checks every bulk key in [first, first+count) holds its pattern. */
static void check_bulk(struct ud_store *s, uint64_t first, uint64_t count, size_t val_len)
{
    uint8_t *want = malloc(val_len);
    assert_non_null(want);
    struct ud_store_snap *snap;
    assert_int_equal(ud_store_snap_begin(s, &snap), 0);
    for (uint64_t i = 0; i < count; i++) {
        uint8_t key[8];
        ud_put_be64(key, first + i);
        const uint8_t *got;
        size_t got_len;
        assert_int_equal(ud_store_get(snap, UD_SPACE_KV, key, sizeof key, &got, &got_len), 0);
        assert_int_equal(got_len, val_len);
        bulk_value(first + i, want, val_len);
        assert_memory_equal(got, want, val_len);
    }
    ud_store_snap_end(snap);
    free(want);
}

/* --- round trips ------------------------------------------------------------------------------ */

static void test_roundtrip_each_space(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("store-roundtrip");
    struct ud_store *s = open_store(dir, 0, 0);

    uint8_t key511[UD_MAX_KEY];
    uint64_t rnd = 42;
    ud_test_fill(&rnd, key511, sizeof key511);
    key511[0] = 0x00; /* binary keys: NUL and 0xFF bytes must round-trip */
    key511[1] = 0xFF;
    const uint8_t bin_key[] = {0x00, 0x01, 0x00, 0xFF};
    const uint8_t val_a[] = "value in kv";
    const uint8_t val_b[] = "value in row";
    const uint8_t val_c[] = "manifest in lob";
    uint8_t big_val[70000]; /* several overflow pages */
    ud_test_fill(&rnd, big_val, sizeof big_val);

    uint8_t row_key[UD_MAX_KEY];
    size_t row_key_len =
        ud_row_key_encode(row_key, bin_key, sizeof bin_key, (const uint8_t *)"c1", 2);
    assert_true(row_key_len > 0);

    int spaces[] = {UD_SPACE_KV, UD_SPACE_ROW, UD_SPACE_LOB};
    const uint8_t *vals[] = {val_a, val_b, val_c};
    size_t val_lens[] = {sizeof val_a, sizeof val_b, sizeof val_c};
    struct op ops[] = {
        {UD_SPACE_KV, bin_key, sizeof bin_key, val_a, sizeof val_a},
        {UD_SPACE_ROW, bin_key, sizeof bin_key, val_b, sizeof val_b},
        {UD_SPACE_LOB, bin_key, sizeof bin_key, val_c, sizeof val_c},
        {UD_SPACE_KV, key511, sizeof key511, big_val, sizeof big_val},
        {UD_SPACE_ROW, key511, sizeof key511, val_b, sizeof val_b},
        {UD_SPACE_LOB, key511, sizeof key511, val_c, 0}, /* empty value */
        {UD_SPACE_ROW, row_key, row_key_len, val_b, 3},
    };
    write_ops(s, ops, sizeof ops / sizeof ops[0]);

    /* Same user key, three spaces, three values: spaces never alias. */
    for (int i = 0; i < 3; i++)
        check_value(s, spaces[i], bin_key, sizeof bin_key, vals[i], val_lens[i]);
    check_value(s, UD_SPACE_KV, key511, sizeof key511, big_val, sizeof big_val);
    check_value(s, UD_SPACE_ROW, key511, sizeof key511, val_b, sizeof val_b);
    check_value(s, UD_SPACE_LOB, key511, sizeof key511, val_c, 0);
    check_value(s, UD_SPACE_ROW, row_key, row_key_len, val_b, 3);
    check_absent(s, UD_SPACE_KV, row_key, row_key_len);

    /* Overwrite, then delete in one space only. */
    put1(s, UD_SPACE_KV, bin_key, sizeof bin_key, "new", 3);
    check_value(s, UD_SPACE_KV, bin_key, sizeof bin_key, "new", 3);
    struct op dels[] = {
        {UD_SPACE_KV, bin_key, sizeof bin_key, NULL, 0},
        {UD_SPACE_LOB, key511, sizeof key511, NULL, 0},
        {UD_SPACE_LOB, "never written", 13, NULL, 0}, /* absent: not an error */
    };
    write_ops(s, dels, 3);
    check_absent(s, UD_SPACE_KV, bin_key, sizeof bin_key);
    check_absent(s, UD_SPACE_LOB, key511, sizeof key511);
    check_value(s, UD_SPACE_ROW, bin_key, sizeof bin_key, val_b, sizeof val_b);
    check_value(s, UD_SPACE_LOB, bin_key, sizeof bin_key, val_c, sizeof val_c);

    struct ud_store_stats st;
    ud_store_stats(s, &st);
    assert_int_equal(st.kv_entries, 1);
    assert_int_equal(st.row_entries, 3);
    assert_int_equal(st.lob_entries, 1);
    assert_true(st.map_size >= (1ull << 30));
    assert_true(st.used_bytes >= sizeof big_val);

    /* Durable across close and reopen. */
    ud_store_close(s);
    s = open_store(dir, 0, 0);
    check_value(s, UD_SPACE_KV, key511, sizeof key511, big_val, sizeof big_val);
    check_value(s, UD_SPACE_ROW, row_key, row_key_len, val_b, 3);
    check_absent(s, UD_SPACE_KV, bin_key, sizeof bin_key);
    ud_store_close(s);
    ud_test_rmtree(dir);
    free(dir);
}

/* The incarnation is stamped into a new store only, read back at every open, and carried by a
 * copy (backups and snapshots are copies): every copy of a namespace says which one it is. */
static void test_incarnation(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("store-incarnation");
    char err[UD_ERRMSG_SIZE] = "";
    struct ud_store_options o = {.dir = dir, .incarnation = 42};
    struct ud_store *s = NULL;
    assert_int_equal(ud_store_open(&o, &s, err), 0);
    assert_int_equal(ud_store_incarnation(s), 42);
    put1(s, UD_SPACE_KV, "k", 1, "v", 1);
    char copy[4096];
    snprintf(copy, sizeof copy, "%s/copy", dir);
    assert_int_equal(mkdir(copy, 0755), 0);
    char copy_file[4200];
    snprintf(copy_file, sizeof copy_file, "%s/data.mdb", copy);
    assert_int_equal(ud_store_backup(s, copy_file, err), 0);
    ud_store_close(s);

    o.incarnation = 7; /* an existing store keeps its own */
    assert_int_equal(ud_store_open(&o, &s, err), 0);
    assert_int_equal(ud_store_incarnation(s), 42);
    ud_store_close(s);
    struct ud_store_options co = {.dir = copy};
    assert_int_equal(ud_store_open(&co, &s, err), 0);
    assert_int_equal(ud_store_incarnation(s), 42);
    ud_store_close(s);

    char plain[4096];
    snprintf(plain, sizeof plain, "%s/plain", dir);
    s = open_store(plain, 0, 0);
    assert_int_equal(ud_store_incarnation(s), 0);
    /* A store without one (an earlier version's) is stamped later, once and durably. */
    assert_int_equal(ud_store_stamp_incarnation(s, 9, err), 0);
    assert_int_equal(ud_store_incarnation(s), 9);
    assert_int_equal(ud_store_stamp_incarnation(s, 11, err), 0);
    assert_int_equal(ud_store_incarnation(s), 9);
    ud_store_close(s);
    s = open_store(plain, 0, 0);
    assert_int_equal(ud_store_incarnation(s), 9);
    ud_store_close(s);
    ud_test_rmtree(dir);
    free(dir);
}

static void test_key_limits(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("store-limits");
    struct ud_store *s = open_store(dir, 0, 0);
    uint8_t key[UD_MAX_KEY + 1];
    memset(key, 'k', sizeof key);

    struct op too_long = {UD_SPACE_KV, key, sizeof key, "v", 1};
    struct ops o = {&too_long, 1};
    char err[UD_ERRMSG_SIZE] = "";
    assert_int_equal(ud_store_write(s, apply_ops, &o, err), UD_ELIMIT);
    assert_non_null(strstr(err, "512 bytes"));
    assert_non_null(strstr(err, "511"));

    struct op empty = {UD_SPACE_ROW, key, 0, "v", 1};
    o.list = &empty;
    assert_int_equal(ud_store_write(s, apply_ops, &o, err), UD_EINVAL);
    assert_non_null(strstr(err, "empty row key"));

    struct op bad_space = {7, key, 1, "v", 1};
    o.list = &bad_space;
    assert_int_equal(ud_store_write(s, apply_ops, &o, err), UD_EINVAL);

    /* Keys LMDB cannot hold are simply absent to readers. */
    check_absent(s, UD_SPACE_KV, key, sizeof key);
    check_absent(s, UD_SPACE_KV, key, 0);
    struct ud_store_stats st;
    ud_store_stats(s, &st);
    assert_int_equal(st.kv_entries + st.row_entries, 0);
    ud_store_close(s);
    ud_test_rmtree(dir);
    free(dir);
}

/* --- prefix deletes and cursors ----------------------------------------------------------------
 */

struct prefix_del {
    int space;
    const void *prefix;
    size_t len;
};

static int del_prefix_fn(struct ud_store_batch *b, void *arg)
{
    const struct prefix_del *p = arg;
    return ud_store_batch_del_prefix(b, p->space, p->prefix, p->len);
}

static size_t count_keys(struct ud_store *s, int space)
{
    struct ud_store_snap *snap;
    struct ud_store_cursor *c;
    assert_int_equal(ud_store_snap_begin(s, &snap), 0);
    assert_int_equal(ud_store_cursor_open(snap, space, &c), 0);
    size_t n = 0;
    for (int rc = ud_store_cursor_seek(c, NULL, 0); rc == 0; rc = ud_store_cursor_next(c))
        n++;
    ud_store_cursor_close(c);
    ud_store_snap_end(snap);
    return n;
}

static void test_del_prefix_exact(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("store-delprefix");
    struct ud_store *s = open_store(dir, 0, 0);

    /* Neighbours on both sides of the prefix range must survive. */
    const char *keep[] = {"user", "user;", "usea:zzz", "user9", "usera:", "v", "\x01"};
    const char *gone[] = {"user:", "user:1", "user:2:x", "user:\xff\xff", "user:zzzzzzzz"};
    struct op ops[16];
    size_t n = 0;
    for (size_t i = 0; i < 7; i++)
        ops[n++] = (struct op){UD_SPACE_KV, keep[i], strlen(keep[i]), "k", 1};
    for (size_t i = 0; i < 5; i++)
        ops[n++] = (struct op){UD_SPACE_KV, gone[i], strlen(gone[i]), "g", 1};
    /* Same prefix in another space: untouched by a KV prefix delete. */
    ops[n++] = (struct op){UD_SPACE_LOB, "user:1", 6, "l", 1};
    write_ops(s, ops, n);

    char err[UD_ERRMSG_SIZE];
    struct prefix_del pd = {UD_SPACE_KV, "user:", 5};
    assert_int_equal(ud_store_write(s, del_prefix_fn, &pd, err), 0);
    for (size_t i = 0; i < 7; i++)
        check_value(s, UD_SPACE_KV, keep[i], strlen(keep[i]), "k", 1);
    for (size_t i = 0; i < 5; i++)
        check_absent(s, UD_SPACE_KV, gone[i], strlen(gone[i]));
    check_value(s, UD_SPACE_LOB, "user:1", 6, "l", 1);
    assert_int_equal(count_keys(s, UD_SPACE_KV), 7);

    /* A prefix with no keys is a no-op. */
    pd.prefix = "nothing";
    pd.len = 7;
    assert_int_equal(ud_store_write(s, del_prefix_fn, &pd, err), 0);
    assert_int_equal(count_keys(s, UD_SPACE_KV), 7);

    /*
     * Rows: deleting row "a" by its prefix esc("a") 00 00 removes its columns only; row "a\0"
     * (escaped "a 00 FF") and row "ab" sort elsewhere thanks to the escaping.
     */
    const uint8_t row_a[] = {'a'}, row_a0[] = {'a', 0}, row_ab[] = {'a', 'b'};
    const uint8_t *rows[] = {row_a, row_a0, row_ab};
    size_t row_lens[] = {1, 2, 2};
    uint8_t keys[9][UD_MAX_KEY];
    n = 0;
    for (int r = 0; r < 3; r++) {
        for (int col = 0; col < 3; col++) {
            char cname[2] = {(char)('x' + col), 0};
            size_t kl = ud_row_key_encode(keys[n], rows[r], row_lens[r], (const uint8_t *)cname, 1);
            ops[n] = (struct op){UD_SPACE_ROW, keys[n], kl, "c", 1};
            n++;
        }
    }
    write_ops(s, ops, n);
    uint8_t prefix[UD_MAX_KEY];
    size_t plen = ud_row_key_encode(prefix, row_a, 1, NULL, 0);
    pd = (struct prefix_del){UD_SPACE_ROW, prefix, plen};
    assert_int_equal(ud_store_write(s, del_prefix_fn, &pd, err), 0);
    for (size_t i = 0; i < 9; i++) {
        if (i < 3)
            check_absent(s, UD_SPACE_ROW, ops[i].key, ops[i].key_len);
        else
            check_value(s, UD_SPACE_ROW, ops[i].key, ops[i].key_len, "c", 1);
    }

    /* The empty prefix empties the space, and only that space. */
    pd = (struct prefix_del){UD_SPACE_KV, "", 0};
    assert_int_equal(ud_store_write(s, del_prefix_fn, &pd, err), 0);
    assert_int_equal(count_keys(s, UD_SPACE_KV), 0);
    assert_int_equal(count_keys(s, UD_SPACE_ROW), 6);
    assert_int_equal(count_keys(s, UD_SPACE_LOB), 1);
    ud_store_close(s);
    ud_test_rmtree(dir);
    free(dir);
}

static void test_cursor_order(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("store-cursor");
    struct ud_store *s = open_store(dir, 0, 0);

    /* Keys 0, 10, 20, ... 990 as u64be, written in a scrambled order. */
    struct op ops[100];
    uint8_t keys[100][8];
    for (int i = 0; i < 100; i++) {
        int id = (i * 37) % 100;
        ud_put_be64(keys[i], (uint64_t)id * 10);
        ops[i] = (struct op){UD_SPACE_KV, keys[i], 8, keys[i], 8};
    }
    write_ops(s, ops, 100);

    struct ud_store_snap *snap;
    struct ud_store_cursor *c;
    const uint8_t *k, *v;
    size_t kl, vl;
    assert_int_equal(ud_store_snap_begin(s, &snap), 0);
    assert_int_equal(ud_store_cursor_open(snap, UD_SPACE_KV, &c), 0);
    assert_int_equal(ud_store_cursor_get(c, &k, &kl, &v, &vl), UD_ENOTFOUND);

    /* Seek between keys lands on the next one; next walks in ascending order to the end. */
    uint8_t seek[8];
    ud_put_be64(seek, 495);
    assert_int_equal(ud_store_cursor_seek(c, seek, 8), 0);
    uint64_t want = 500;
    int seen = 0;
    do {
        assert_int_equal(ud_store_cursor_get(c, &k, &kl, &v, &vl), 0);
        assert_int_equal(kl, 8);
        assert_int_equal(ud_get_be64(k), want);
        assert_memory_equal(v, k, 8);
        want += 10;
        seen++;
    } while (ud_store_cursor_next(c) == 0);
    assert_int_equal(seen, 50);
    assert_int_equal(ud_store_cursor_next(c), UD_ENOTFOUND); /* stays at the end */
    assert_int_equal(ud_store_cursor_get(c, &k, &kl, &v, &vl), UD_ENOTFOUND);

    /* A seek key longer than LMDB's key limit still orders correctly. */
    uint8_t long_seek[600] = {0};
    ud_put_be64(long_seek, 495);
    assert_int_equal(ud_store_cursor_seek(c, long_seek, sizeof long_seek), 0);
    assert_int_equal(ud_store_cursor_get(c, &k, &kl, &v, &vl), 0);
    assert_int_equal(ud_get_be64(k), 500);

    /* Exact hit, empty seek = first, past the end = not found. */
    ud_put_be64(seek, 10);
    assert_int_equal(ud_store_cursor_seek(c, seek, 8), 0);
    assert_int_equal(ud_store_cursor_get(c, &k, &kl, &v, &vl), 0);
    assert_int_equal(ud_get_be64(k), 10);
    assert_int_equal(ud_store_cursor_seek(c, NULL, 0), 0);
    assert_int_equal(ud_store_cursor_get(c, &k, &kl, &v, &vl), 0);
    assert_int_equal(ud_get_be64(k), 0);
    ud_put_be64(seek, 991);
    assert_int_equal(ud_store_cursor_seek(c, seek, 8), UD_ENOTFOUND);
    ud_store_cursor_close(c);

    /* A fresh cursor (now reused from the snapshot's spare) starts at the first key on next. */
    assert_int_equal(ud_store_cursor_open(snap, UD_SPACE_KV, &c), 0);
    assert_int_equal(ud_store_cursor_next(c), 0);
    assert_int_equal(ud_store_cursor_get(c, &k, &kl, &v, &vl), 0);
    assert_int_equal(ud_get_be64(k), 0);
    /* Two cursors at once move independently. */
    struct ud_store_cursor *c2;
    assert_int_equal(ud_store_cursor_open(snap, UD_SPACE_KV, &c2), 0);
    ud_put_be64(seek, 900);
    assert_int_equal(ud_store_cursor_seek(c2, seek, 8), 0);
    assert_int_equal(ud_store_cursor_next(c), 0);
    assert_int_equal(ud_store_cursor_get(c, &k, &kl, &v, &vl), 0);
    assert_int_equal(ud_get_be64(k), 10);
    assert_int_equal(ud_store_cursor_get(c2, &k, &kl, &v, &vl), 0);
    assert_int_equal(ud_get_be64(k), 900);
    /* An empty space: nothing to seek. */
    struct ud_store_cursor *c3;
    assert_int_equal(ud_store_cursor_open(snap, UD_SPACE_LOB, &c3), 0);
    assert_int_equal(ud_store_cursor_seek(c3, NULL, 0), UD_ENOTFOUND);
    ud_store_cursor_close(c3);
    ud_store_cursor_close(c);

    /* A cursor left open past its snapshot fails cleanly and is still freed by close. */
    ud_store_snap_end(snap);
    assert_int_equal(ud_store_cursor_next(c2), UD_ECLOSED);
    assert_int_equal(ud_store_cursor_get(c2, &k, &kl, &v, &vl), UD_ENOTFOUND);
    ud_store_cursor_close(c2);

    /* Cursors over reused snapshots see later writes. */
    put1(s, UD_SPACE_KV, "\xff", 1, "last", 4);
    for (int round = 0; round < 3; round++) {
        assert_int_equal(ud_store_snap_begin(s, &snap), 0);
        assert_int_equal(ud_store_cursor_open(snap, UD_SPACE_KV, &c), 0);
        assert_int_equal(ud_store_cursor_seek(c, "\xff", 1), 0);
        assert_int_equal(ud_store_cursor_get(c, &k, &kl, &v, &vl), 0);
        assert_int_equal(vl, 4);
        assert_memory_equal(v, "last", 4);
        ud_store_cursor_close(c);
        ud_store_snap_end(snap);
    }
    ud_store_close(s);
    ud_test_rmtree(dir);
    free(dir);
}

/* --- snapshots -------------------------------------------------------------------------------- */

static void test_snapshot_isolation(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("store-snap");
    struct ud_store *s = open_store(dir, 0, 0);
    put1(s, UD_SPACE_KV, "a", 1, "old", 3);
    put1(s, UD_SPACE_KV, "b", 1, "b", 1);

    struct ud_store_snap *before;
    assert_int_equal(ud_store_snap_begin(s, &before), 0);
    struct op ops[] = {
        {UD_SPACE_KV, "a", 1, "new", 3},
        {UD_SPACE_KV, "b", 1, NULL, 0},
        {UD_SPACE_KV, "c", 1, "c", 1},
    };
    write_ops(s, ops, 3);

    const uint8_t *v;
    size_t vl;
    assert_int_equal(ud_store_get(before, UD_SPACE_KV, "a", 1, &v, &vl), 0);
    assert_int_equal(vl, 3);
    assert_memory_equal(v, "old", 3);
    assert_int_equal(ud_store_get(before, UD_SPACE_KV, "b", 1, &v, &vl), 0);
    assert_int_equal(ud_store_get(before, UD_SPACE_KV, "c", 1, &v, &vl), UD_ENOTFOUND);

    struct ud_store_snap *after;
    assert_int_equal(ud_store_snap_begin(s, &after), 0);
    assert_int_equal(ud_store_get(after, UD_SPACE_KV, "a", 1, &v, &vl), 0);
    assert_memory_equal(v, "new", 3);
    assert_int_equal(ud_store_get(after, UD_SPACE_KV, "b", 1, &v, &vl), UD_ENOTFOUND);
    assert_int_equal(ud_store_get(after, UD_SPACE_KV, "c", 1, &v, &vl), 0);
    ud_store_snap_end(after);
    ud_store_snap_end(before);

    /* Snapshots come from the reuse cache now: each must still see the latest commit. */
    for (int i = 0; i < 50; i++) {
        uint8_t val[8];
        ud_put_be64(val, (uint64_t)i);
        put1(s, UD_SPACE_KV, "n", 1, val, 8);
        check_value(s, UD_SPACE_KV, "n", 1, val, 8);
    }
    /* Many snapshots open at once (more than the reuse cache keeps), ended in any order. */
    struct ud_store_snap *many[40];
    for (int i = 0; i < 40; i++)
        assert_int_equal(ud_store_snap_begin(s, &many[i]), 0);
    for (int i = 0; i < 40; i += 2)
        ud_store_snap_end(many[i]);
    for (int i = 1; i < 40; i += 2) {
        assert_int_equal(ud_store_get(many[i], UD_SPACE_KV, "c", 1, &v, &vl), 0);
        ud_store_snap_end(many[i]);
    }
    ud_store_close(s);
    ud_test_rmtree(dir);
    free(dir);
}

/* --- checkpoint ------------------------------------------------------------------------------- */

struct cp_write {
    const struct ud_checkpoint *cp;
    int fail_with; /* non-zero: put data and checkpoint, then fail */
};

static int cp_fn(struct ud_store_batch *b, void *arg)
{
    const struct cp_write *w = arg;
    int rc = ud_store_batch_put(b, UD_SPACE_KV, "data", 4, "flushed", 7);
    if (rc == 0)
        rc = ud_store_batch_set_checkpoint(b, w->cp);
    return rc != 0 ? rc : w->fail_with;
}

static void check_checkpoint(struct ud_store *s, const struct ud_checkpoint *want)
{
    struct ud_checkpoint got;
    char err[UD_ERRMSG_SIZE] = "";
    int rc = ud_store_read_checkpoint(s, &got, err);
    if (rc != 0)
        print_error("read checkpoint: %s\n", err);
    assert_int_equal(rc, 0);
    assert_int_equal(got.flushed_lsn, want->flushed_lsn);
    assert_int_equal(got.txn_count, want->txn_count);
    if (want->txn_count == 0) {
        assert_null(got.txns);
    } else {
        for (uint32_t i = 0; i < want->txn_count; i++) {
            assert_memory_equal(got.txns[i].id, want->txns[i].id, 16);
            assert_int_equal(got.txns[i].first_lsn, want->txns[i].first_lsn);
        }
    }
    free(got.txns);
}

static void test_checkpoint_roundtrip(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("store-checkpoint");
    struct ud_store *s = open_store(dir, 0, 0);
    struct ud_checkpoint none = {0, 0, NULL};
    check_checkpoint(s, &none);

    struct ud_checkpoint_txn txns[3];
    uint64_t rnd = 7;
    for (int i = 0; i < 3; i++) {
        ud_test_fill(&rnd, txns[i].id, 16);
        txns[i].first_lsn = 1000 + (uint64_t)i * 17;
    }
    txns[2].first_lsn = UINT64_MAX - 1;
    struct ud_checkpoint cp = {123456789012345ull, 3, txns};
    struct cp_write w = {&cp, 0};
    char err[UD_ERRMSG_SIZE];
    assert_int_equal(ud_store_write(s, cp_fn, &w, err), 0);
    check_checkpoint(s, &cp);

    /* The checkpoint is written with its data or not at all. */
    struct ud_checkpoint later = {999999999999999ull, 0, NULL};
    w = (struct cp_write){&later, UD_ECONFLICT};
    assert_int_equal(ud_store_write(s, cp_fn, &w, err), UD_ECONFLICT);
    check_checkpoint(s, &cp);

    ud_store_close(s);
    s = open_store(dir, 0, 0);
    check_checkpoint(s, &cp);
    check_value(s, UD_SPACE_KV, "data", 4, "flushed", 7);

    /* The table can shrink to nothing; a large table round-trips too. */
    w = (struct cp_write){&later, 0};
    assert_int_equal(ud_store_write(s, cp_fn, &w, err), 0);
    check_checkpoint(s, &later);
    struct ud_checkpoint_txn *big = calloc(5000, sizeof *big);
    assert_non_null(big);
    for (uint32_t i = 0; i < 5000; i++) {
        ud_test_fill(&rnd, big[i].id, 16);
        big[i].first_lsn = i;
    }
    struct ud_checkpoint large = {5001, 5000, big};
    w = (struct cp_write){&large, 0};
    assert_int_equal(ud_store_write(s, cp_fn, &w, err), 0);
    ud_store_close(s);
    s = open_store(dir, 0, 0);
    check_checkpoint(s, &large);
    free(big);
    ud_store_close(s);
    ud_test_rmtree(dir);
    free(dir);
}

/* Damaged checkpoint bytes are reported, not decoded. */
static void test_checkpoint_corrupt(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("store-cpcorrupt");
    struct ud_store *s = open_store(dir, 0, 0);
    struct ud_checkpoint_txn t = {{1, 2, 3}, 5};
    struct ud_checkpoint cp = {10, 1, &t};
    struct cp_write w = {&cp, 0};
    char err[UD_ERRMSG_SIZE];
    assert_int_equal(ud_store_write(s, cp_fn, &w, err), 0);
    ud_store_close(s);

    /* Flip one byte of the flushed LSN through raw LMDB. */
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 8), 0);
    assert_int_equal(mdb_env_open(env, dir, 0, 0644), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "meta", 0, &dbi), 0);
    MDB_val k = {10, "checkpoint"}, v;
    assert_int_equal(mdb_get(txn, dbi, &k, &v), 0);
    assert_int_equal(v.mv_size, 1 + 8 + 4 + 24 + 4);
    uint8_t copy[64];
    memcpy(copy, v.mv_data, v.mv_size);
    assert_int_equal(copy[0], 1);
    assert_int_equal(ud_get_le64(copy + 1), 10);
    copy[1] ^= 0x40;
    v.mv_data = copy;
    assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);

    s = open_store(dir, 0, 0);
    struct ud_checkpoint got;
    assert_int_equal(ud_store_read_checkpoint(s, &got, err), UD_ECORRUPT);
    assert_non_null(strstr(err, "checksum"));
    ud_store_close(s);
    ud_test_rmtree(dir);
    free(dir);
}

/* --- LOB chunks ------------------------------------------------------------------------------- */

struct chunk_op {
    uint64_t lsn;
    const void *data;
    size_t len; /* data NULL: delete */
};

static int chunk_fn(struct ud_store_batch *b, void *arg)
{
    const struct chunk_op *c = arg;
    for (; c->lsn != 0; c++) {
        int rc = c->data != NULL ? ud_store_batch_lob_chunk_put(b, c->lsn, c->data, c->len)
                                 : ud_store_batch_lob_chunk_del(b, c->lsn);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static void test_lob_chunks(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("store-lobchunk");
    struct ud_store *s = open_store(dir, 0, 0);
    size_t big_len = 1u << 20; /* a full 1 MiB chunk */
    uint8_t *big = malloc(big_len);
    assert_non_null(big);
    uint64_t rnd = 9;
    ud_test_fill(&rnd, big, big_len);
    struct chunk_op puts[] = {
        {5, "five", 4}, {256, big, big_len}, {1ull << 40, "far", 3}, {0, NULL, 0}};
    char err[UD_ERRMSG_SIZE];
    assert_int_equal(ud_store_write(s, chunk_fn, puts, err), 0);

    struct ud_store_snap *snap;
    const uint8_t *d;
    size_t len;
    assert_int_equal(ud_store_snap_begin(s, &snap), 0);
    assert_int_equal(ud_store_lob_chunk_get(snap, 5, &d, &len), 0);
    assert_int_equal(len, 4);
    assert_memory_equal(d, "five", 4);
    assert_int_equal(ud_store_lob_chunk_get(snap, 256, &d, &len), 0);
    assert_int_equal(len, big_len);
    assert_memory_equal(d, big, big_len);
    assert_int_equal(ud_store_lob_chunk_get(snap, 1ull << 40, &d, &len), 0);
    assert_int_equal(ud_store_lob_chunk_get(snap, 6, &d, &len), UD_ENOTFOUND);
    ud_store_snap_end(snap);

    struct chunk_op dels[] = {{256, NULL, 0}, {7, NULL, 0}, {0, NULL, 0}};
    assert_int_equal(ud_store_write(s, chunk_fn, dels, err), 0);
    assert_int_equal(ud_store_snap_begin(s, &snap), 0);
    assert_int_equal(ud_store_lob_chunk_get(snap, 256, &d, &len), UD_ENOTFOUND);
    assert_int_equal(ud_store_lob_chunk_get(snap, 5, &d, &len), 0);
    ud_store_snap_end(snap);
    ud_store_close(s);

    /* On disk the keys are u64 big-endian, so chunks sort by LSN. */
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_cursor *mc;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 8), 0);
    assert_int_equal(mdb_env_open(env, dir, MDB_RDONLY, 0644), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "lob_chunk", 0, &dbi), 0);
    assert_int_equal(mdb_cursor_open(txn, dbi, &mc), 0);
    MDB_val k, v;
    assert_int_equal(mdb_cursor_get(mc, &k, &v, MDB_FIRST), 0);
    assert_int_equal(k.mv_size, 8);
    assert_int_equal(ud_get_be64(k.mv_data), 5);
    assert_int_equal(mdb_cursor_get(mc, &k, &v, MDB_NEXT), 0);
    assert_int_equal(ud_get_be64(k.mv_data), 1ull << 40);
    assert_int_equal(mdb_cursor_get(mc, &k, &v, MDB_NEXT), MDB_NOTFOUND);
    mdb_cursor_close(mc);
    mdb_txn_abort(txn);
    mdb_env_close(env);
    free(big);
    ud_test_rmtree(dir);
    free(dir);
}

/* --- the write transaction -------------------------------------------------------------------- */

static int put_then_fail(struct ud_store_batch *b, void *arg)
{
    (void)arg;
    int rc = ud_store_batch_put(b, UD_SPACE_KV, "x", 1, "1", 1);
    if (rc == 0)
        rc = ud_store_batch_put(b, UD_SPACE_ROW, "y", 1, "2", 1);
    if (rc == 0)
        rc = ud_store_batch_del(b, UD_SPACE_KV, "keep", 4);
    /* Reads inside the transaction see its own writes. */
    const uint8_t *v;
    size_t vl;
    if (rc == 0)
        rc = ud_store_batch_get(b, UD_SPACE_KV, "x", 1, &v, &vl);
    if (rc == 0 && (vl != 1 || v[0] != '1'))
        rc = UD_EIO;
    if (rc == 0 && ud_store_batch_get(b, UD_SPACE_KV, "keep", 4, &v, &vl) != UD_ENOTFOUND)
        rc = UD_EIO;
    return rc != 0 ? rc : UD_ETXN;
}

static void test_fn_error_aborts(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("store-abort");
    struct ud_store *s = open_store(dir, 0, 0);
    put1(s, UD_SPACE_KV, "keep", 4, "k", 1);
    char err[UD_ERRMSG_SIZE] = "";
    assert_int_equal(ud_store_write(s, put_then_fail, NULL, err), UD_ETXN);
    assert_true(strlen(err) > 0);
    check_absent(s, UD_SPACE_KV, "x", 1);
    check_absent(s, UD_SPACE_ROW, "y", 1);
    check_value(s, UD_SPACE_KV, "keep", 4, "k", 1);
    ud_store_close(s);
    ud_test_rmtree(dir);
    free(dir);
}

/* --- map growth ------------------------------------------------------------------------------- */

#define TINY_MAP (64u << 10)

static void test_map_growth(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("store-grow");
    struct ud_store *s = open_store(dir, TINY_MAP, 0);
    struct ud_store_stats st;
    ud_store_stats(s, &st);
    assert_int_equal(st.map_size, TINY_MAP);

    /* 50 MB in ten writes of 5 MB each; each write outgrows the map at least once early on. */
    const size_t val_len = 4000;
    const uint64_t per_write = 1250;
    char err[UD_ERRMSG_SIZE];
    for (uint64_t w = 0; w < 10; w++) {
        int rc = write_bulk(s, w * per_write, per_write, val_len, err);
        if (rc != 0)
            print_error("write %" PRIu64 ": %s\n", w, err);
        assert_int_equal(rc, 0);
    }
    check_bulk(s, 0, 10 * per_write, val_len);
    ud_store_stats(s, &st);
    assert_true(st.map_size >= 50000000ull);
    assert_true(st.used_bytes >= 50000000ull);
    assert_true(st.used_bytes <= st.map_size);
    assert_int_equal(st.kv_entries, 10 * per_write);
    print_message("# map grew from %u to %" PRIu64 " bytes for %" PRIu64 " used bytes\n", TINY_MAP,
                  st.map_size, st.used_bytes);

    /* Reopened with the tiny size again: existing data is readable and writes keep working. */
    ud_store_close(s);
    s = open_store(dir, TINY_MAP, 0);
    check_bulk(s, 0, 10 * per_write, val_len);
    assert_int_equal(write_bulk(s, 100000, 100, val_len, err), 0);
    check_bulk(s, 100000, 100, val_len);
    ud_store_close(s);
    ud_test_rmtree(dir);
    free(dir);
}

struct holder {
    struct ud_store *s;
    atomic_int ready;
    uint64_t released_ns;
    int saw_old;
    int saw_new;
};

static void *hold_snapshot(void *arg)
{
    struct holder *h = arg;
    struct ud_store_snap *snap;
    if (ud_store_snap_begin(h->s, &snap) != 0)
        return NULL;
    atomic_store(&h->ready, 1);
    /* The writer outgrows the map meanwhile and must wait: the mapping stays put under us. */
    sleep_ms(300);
    const uint8_t *v;
    size_t vl;
    h->saw_old = ud_store_get(snap, UD_SPACE_KV, "before", 6, &v, &vl) == 0 && vl == 6 &&
                 memcmp(v, "before", 6) == 0;
    uint8_t key[8];
    ud_put_be64(key, 0);
    h->saw_new = ud_store_get(snap, UD_SPACE_KV, key, 8, &v, &vl) == 0;
    h->released_ns = now_ns();
    ud_store_snap_end(snap);
    return NULL;
}

static void test_growth_waits_for_snapshot(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("store-growsnap");
    struct ud_store *s = open_store(dir, TINY_MAP, 0);
    put1(s, UD_SPACE_KV, "before", 6, "before", 6);

    struct holder h = {.s = s};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, hold_snapshot, &h), 0);
    for (int i = 0; i < 5000 && !atomic_load(&h.ready); i++)
        sleep_ms(1);
    assert_true(atomic_load(&h.ready));

    char err[UD_ERRMSG_SIZE];
    int rc = write_bulk(s, 0, 500, 4000, err); /* 2 MB: needs several doublings */
    uint64_t written_ns = now_ns();
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(rc, 0);
    assert_true(h.saw_old);
    assert_false(h.saw_new);
    /* The growth could only happen after the snapshot ended. */
    assert_true(written_ns >= h.released_ns);
    check_bulk(s, 0, 500, 4000);
    check_value(s, UD_SPACE_KV, "before", 6, "before", 6);
    ud_store_close(s);
    ud_test_rmtree(dir);
    free(dir);
}

struct nested {
    struct ud_store *s;
    atomic_int ready;
    atomic_int done;
    int ok;
};

static void *nested_reader(void *arg)
{
    struct nested *n = arg;
    struct ud_store_snap *a, *b;
    if (ud_store_snap_begin(n->s, &a) != 0)
        return NULL;
    atomic_store(&n->ready, 1);
    sleep_ms(200); /* let the writer start waiting for the exclusive lock */
    /* A second snapshot on the same thread while a resize waits for the first one. */
    if (ud_store_snap_begin(n->s, &b) == 0) {
        const uint8_t *v;
        size_t vl;
        n->ok = ud_store_get(b, UD_SPACE_KV, "before", 6, &v, &vl) == 0;
        ud_store_snap_end(b);
    }
    ud_store_snap_end(a);
    atomic_store(&n->done, 1);
    return NULL;
}

struct writer_arg {
    struct ud_store *s;
    int rc;
    atomic_int done;
};

static void *grow_writer(void *arg)
{
    struct writer_arg *w = arg;
    char err[UD_ERRMSG_SIZE];
    w->rc = write_bulk(w->s, 0, 300, 4000, err);
    atomic_store(&w->done, 1);
    return NULL;
}

/* Taking a second snapshot on a thread that already holds one must not deadlock against a map
 * resize waiting for the first (the resize waits in bounded slices). */
static void test_nested_snapshot_during_growth(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("store-nested");
    struct ud_store *s = open_store(dir, TINY_MAP, 0);
    put1(s, UD_SPACE_KV, "before", 6, "before", 6);

    struct nested n = {.s = s};
    struct writer_arg w = {.s = s};
    pthread_t tr, tw;
    assert_int_equal(pthread_create(&tr, NULL, nested_reader, &n), 0);
    for (int i = 0; i < 5000 && !atomic_load(&n.ready); i++)
        sleep_ms(1);
    assert_int_equal(pthread_create(&tw, NULL, grow_writer, &w), 0);
    for (int i = 0; i < 1000 && !(atomic_load(&n.done) && atomic_load(&w.done)); i++)
        sleep_ms(10);
    assert_true(atomic_load(&n.done));
    assert_true(atomic_load(&w.done));
    pthread_join(tr, NULL);
    pthread_join(tw, NULL);
    assert_true(n.ok);
    assert_int_equal(w.rc, 0);
    check_bulk(s, 0, 300, 4000);
    ud_store_close(s);
    ud_test_rmtree(dir);
    free(dir);
}

struct churn {
    struct ud_store *s;
    atomic_uint_fast64_t committed; /* bulk keys [0, committed) are durable */
    atomic_int stop;
    atomic_uint_fast64_t reads;
    int bad;
};

static void *churn_reader(void *arg)
{
    struct churn *c = arg;
    uint64_t rnd = (uint64_t)(uintptr_t)&rnd;
    uint8_t want[4000];
    while (!atomic_load(&c->stop)) {
        uint64_t n = atomic_load(&c->committed);
        struct ud_store_snap *snap;
        if (ud_store_snap_begin(c->s, &snap) != 0) {
            c->bad++;
            break;
        }
        if (n > 0) {
            uint64_t id = ud_test_rand(&rnd) % n;
            uint8_t key[8];
            ud_put_be64(key, id);
            const uint8_t *v;
            size_t vl;
            bulk_value(id, want, sizeof want);
            if (ud_store_get(snap, UD_SPACE_KV, key, 8, &v, &vl) != 0 || vl != sizeof want ||
                memcmp(v, want, vl) != 0)
                c->bad++;
            /* A cursor from the snapshot's spare, walking a few keys in order. */
            struct ud_store_cursor *cur;
            if (ud_store_cursor_open(snap, UD_SPACE_KV, &cur) == 0) {
                const uint8_t *k;
                size_t kl;
                uint64_t prev = 0;
                int rc = ud_store_cursor_seek(cur, key, 8);
                for (int i = 0; rc == 0 && i < 4; i++, rc = ud_store_cursor_next(cur)) {
                    if (ud_store_cursor_get(cur, &k, &kl, &v, &vl) != 0 || kl != 8 ||
                        (i > 0 && ud_get_be64(k) <= prev))
                        c->bad++;
                    prev = ud_get_be64(k);
                }
                ud_store_cursor_close(cur);
            } else {
                c->bad++;
            }
        }
        ud_store_snap_end(snap);
        atomic_fetch_add(&c->reads, 1);
    }
    return NULL;
}

/* Readers on other threads keep reading while the writer grows the map many times. */
static void test_readers_during_growth(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("store-churn");
    struct ud_store *s = open_store(dir, TINY_MAP, 0);
    struct churn c[2] = {{.s = s}, {.s = s}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&t[i], NULL, churn_reader, &c[i]), 0);
    char err[UD_ERRMSG_SIZE];
    struct ud_store_stats st;
    for (uint64_t w = 0; w < 12; w++) {
        int rc = write_bulk(s, w * 250, 250, 4000, err);
        if (rc != 0)
            print_error("write %" PRIu64 ": %s\n", w, err);
        assert_int_equal(rc, 0);
        /* Each reader reads the new data after every growth, however busy the machine;
         * reads during a growth still depend on scheduling. */
        for (int i = 0; i < 2; i++) {
            uint64_t before = atomic_load(&c[i].reads);
            atomic_store(&c[i].committed, (w + 1) * 250);
            for (int ms = 0; ms < 30000 && atomic_load(&c[i].reads) < before + 2; ms++)
                usleep(1000);
            assert_true(atomic_load(&c[i].reads) >= before + 2);
        }
    }
    ud_store_stats(s, &st);
    for (int i = 0; i < 2; i++) {
        atomic_store(&c[i].stop, 1);
        pthread_join(t[i], NULL);
        assert_int_equal(c[i].bad, 0);
    }
    print_message(
        "# %" PRIu64 " + %" PRIu64 " snapshots read while the map grew to %" PRIu64 " bytes\n",
        (uint64_t)atomic_load(&c[0].reads), (uint64_t)atomic_load(&c[1].reads), st.map_size);
    assert_true(st.map_size >= 12 * 250 * 4000);
    check_bulk(s, 0, 12 * 250, 4000);
    ud_store_close(s);
    ud_test_rmtree(dir);
    free(dir);
}

/*
 * Map growth while ended snapshots wait in the idle cache with their read transactions open, the
 * newest one still current: the growth must neither wait for them (they hold no lock) nor leave
 * them reading through the old mapping. Reads on the same thread before, between and after
 * growths (one that succeeds, then one stopped at max_map_size, which commits nothing, so an
 * idle snapshot would still count as current) see exactly the committed data.
 */
static void test_growth_with_idle_snapshots(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("store-grow-idle");
    struct ud_store *s = open_store(dir, TINY_MAP, 64 * TINY_MAP);
    char err[UD_ERRMSG_SIZE] = "";
    assert_int_equal(write_bulk(s, 0, 5, 4000, err), 0);
    check_bulk(s, 0, 5, 4000); /* leaves idle snapshots at the newest commit */
    check_bulk(s, 0, 5, 4000); /* reuses them */
    struct ud_store_stats st;
    ud_store_stats(s, &st);
    assert_int_equal(st.map_size, TINY_MAP);
    /* 1.2 MB: several doublings, each with the idle snapshots in the cache. */
    int rc = write_bulk(s, 5, 300, 4000, err);
    if (rc != 0)
        print_error("grow: %s\n", err);
    assert_int_equal(rc, 0);
    ud_store_stats(s, &st);
    assert_true(st.map_size >= 300 * 4000);
    check_bulk(s, 0, 305, 4000);
    check_bulk(s, 0, 305, 4000);
    /* A growth that cannot happen: the cap is reached, nothing is committed. */
    rc = write_bulk(s, 305, 2000, 4000, err);
    assert_int_equal(rc, UD_ENOSPC);
    check_bulk(s, 0, 305, 4000);
    uint8_t key[8];
    ud_put_be64(key, 305);
    check_absent(s, UD_SPACE_KV, key, 8);
    /* And the store goes on: a write that fits commits and reads back. */
    assert_int_equal(write_bulk(s, 305, 10, 4000, err), 0);
    check_bulk(s, 0, 315, 4000);
    ud_store_close(s);
    ud_test_rmtree(dir);
    free(dir);
}

static void test_max_map_size(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("store-maxmap");
    struct ud_store *s = open_store(dir, TINY_MAP, 4 * TINY_MAP);
    put1(s, UD_SPACE_KV, "small", 5, "ok", 2);

    char err[UD_ERRMSG_SIZE] = "";
    int rc = write_bulk(s, 0, 250, 4000, err); /* 1 MB into a map capped at 256 KiB */
    assert_int_equal(rc, UD_ENOSPC);
    assert_non_null(strstr(err, "max_map_size"));
    assert_non_null(strstr(err, "262144"));
    print_message("# %s\n", err);

    /* Nothing of the failed write landed; the store keeps working within its cap. */
    uint8_t key[8];
    ud_put_be64(key, 0);
    check_absent(s, UD_SPACE_KV, key, 8);
    check_value(s, UD_SPACE_KV, "small", 5, "ok", 2);
    assert_int_equal(write_bulk(s, 0, 10, 4000, err), 0);
    check_bulk(s, 0, 10, 4000);
    struct ud_store_stats st;
    ud_store_stats(s, &st);
    assert_true(st.map_size <= 4 * TINY_MAP);
    ud_store_close(s);

    /* An initial size above the cap is clamped to it. */
    s = open_store(dir, 1ull << 30, 4 * TINY_MAP);
    ud_store_stats(s, &st);
    assert_int_equal(st.map_size, 4 * TINY_MAP);
    ud_store_close(s);
    ud_test_rmtree(dir);
    free(dir);
}

/* --- format version --------------------------------------------------------------------------- */

static void raw_put_meta(const char *dir, const char *db, const char *key, const void *val,
                         size_t len)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 8), 0);
    assert_int_equal(mdb_env_open(env, dir, 0, 0644), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, db, MDB_CREATE, &dbi), 0);
    MDB_val k = {strlen(key), (void *)key}, v = {len, (void *)val};
    assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
}

static void test_version_mismatch(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("store-version");
    struct ud_store *s = open_store(dir, 0, 0);
    put1(s, UD_SPACE_KV, "k", 1, "v", 1);
    ud_store_close(s);

    uint8_t v2[4];
    ud_put_le32(v2, 2);
    raw_put_meta(dir, "meta", "format", v2, 4);
    struct ud_store_options o = {.dir = dir};
    char err[UD_ERRMSG_SIZE] = "";
    s = NULL;
    assert_int_equal(ud_store_open(&o, &s, err), UD_EVERSION);
    assert_null(s);
    assert_non_null(strstr(err, "format version 2"));
    assert_non_null(strstr(err, "format version 1"));
    print_message("# %s\n", err);

    /* Restoring version 1 makes it open again, data intact: the refusal changed nothing. */
    uint8_t v1[4];
    ud_put_le32(v1, 1);
    raw_put_meta(dir, "meta", "format", v1, 4);
    s = open_store(dir, 0, 0);
    check_value(s, UD_SPACE_KV, "k", 1, "v", 1);
    ud_store_close(s);
    ud_test_rmtree(dir);
    free(dir);

    /* An LMDB environment that is not a store is refused as well. */
    dir = ud_test_tmpdir("store-foreign");
    raw_put_meta(dir, "other", "hello", "world", 5);
    o.dir = dir;
    assert_int_equal(ud_store_open(&o, &s, err), UD_ECORRUPT);
    assert_non_null(strstr(err, "format record"));
    ud_test_rmtree(dir);
    free(dir);
}

/* --- backup ----------------------------------------------------------------------------------- */

static off_t file_size(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return st.st_size;
}

static void test_backup(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("store-backup");
    char *bdir = ud_test_tmpdir("store-backup-out");
    struct ud_store *s = open_store(dir, 0, 0);
    char err[UD_ERRMSG_SIZE] = "";

    /* 8 MB written then deleted leaves free pages that a compacted copy drops. */
    assert_int_equal(write_bulk(s, 1000000, 2000, 4000, err), 0);
    struct prefix_del pd = {UD_SPACE_KV, "", 0};
    assert_int_equal(ud_store_write(s, del_prefix_fn, &pd, err), 0);
    assert_int_equal(write_bulk(s, 0, 100, 1000, err), 0);
    uint8_t rk[UD_MAX_KEY];
    size_t rkl = ud_row_key_encode(rk, (const uint8_t *)"row", 3, (const uint8_t *)"col", 3);
    put1(s, UD_SPACE_ROW, rk, rkl, "cell", 4);
    struct chunk_op chunk[] = {{77, "chunk", 5}, {0, NULL, 0}};
    assert_int_equal(ud_store_write(s, chunk_fn, chunk, err), 0);
    struct ud_checkpoint_txn t = {{0xAB}, 90};
    struct ud_checkpoint cp = {100, 1, &t};
    struct cp_write w = {&cp, 0};
    assert_int_equal(ud_store_write(s, cp_fn, &w, err), 0);

    char path[4096], data[4096], restored[4096];
    snprintf(path, sizeof path, "%s/backup.mdb", bdir);
    int rc = ud_store_backup(s, path, err);
    if (rc != 0)
        print_error("backup: %s\n", err);
    assert_int_equal(rc, 0);
    snprintf(data, sizeof data, "%s/data.mdb", dir);
    print_message("# backup %lld bytes, live data file %lld bytes\n", (long long)file_size(path),
                  (long long)file_size(data));
    assert_true(file_size(path) < file_size(data) / 2);
    /* Writes after the backup are not in it. */
    put1(s, UD_SPACE_KV, "after", 5, "x", 1);
    ud_store_close(s);

    /* 1. Raw LMDB: a single file (MDB_NOSUBDIR), read-only without a lock file. */
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 8), 0);
    assert_int_equal(mdb_env_open(env, path, MDB_NOSUBDIR | MDB_RDONLY | MDB_NOLOCK, 0644), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "row", 0, &dbi), 0);
    MDB_val k = {rkl, rk}, v;
    assert_int_equal(mdb_get(txn, dbi, &k, &v), 0);
    assert_int_equal(v.mv_size, 4);
    assert_memory_equal(v.mv_data, "cell", 4);
    mdb_txn_abort(txn);
    mdb_env_close(env);

    /* 2. The store API: the file placed as data.mdb of a store directory. */
    snprintf(restored, sizeof restored, "%s/restored", bdir);
    assert_int_equal(mkdir(restored, 0755), 0);
    snprintf(data, sizeof data, "%s/data.mdb", restored);
    assert_int_equal(rename(path, data), 0);
    s = open_store(restored, 0, 0);
    check_bulk(s, 0, 100, 1000);
    check_value(s, UD_SPACE_ROW, rk, rkl, "cell", 4);
    check_absent(s, UD_SPACE_KV, "after", 5);
    check_checkpoint(s, &cp);
    struct ud_store_snap *snap;
    const uint8_t *d;
    size_t dl;
    assert_int_equal(ud_store_snap_begin(s, &snap), 0);
    assert_int_equal(ud_store_lob_chunk_get(snap, 77, &d, &dl), 0);
    assert_int_equal(dl, 5);
    ud_store_snap_end(snap);
    struct ud_store_stats st;
    ud_store_stats(s, &st);
    assert_int_equal(st.kv_entries, 101); /* the bulk keys and cp_fn's "data" */
    ud_store_close(s);

    /* A backup into a directory that does not exist fails with a message naming it. */
    s = open_store(dir, 0, 0);
    snprintf(path, sizeof path, "%s/missing/backup.mdb", bdir);
    assert_int_equal(ud_store_backup(s, path, err), UD_EIO);
    assert_non_null(strstr(err, "missing"));
    ud_store_close(s);
    ud_test_rmtree(dir);
    ud_test_rmtree(bdir);
    free(dir);
    free(bdir);
}

/*
 * Temporary files a killed process left under this pid (it comes back as PID 1 in a container,
 * and the numbers restart at 0) do not fail a backup: it takes the next free name, and leaves
 * them alone.
 */
static void test_backup_tmp_leftovers(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("store-backup-left");
    char *bdir = ud_test_tmpdir("store-backup-left-out");
    struct ud_store *s = open_store(dir, 0, 0);
    put1(s, UD_SPACE_KV, "k", 1, "v", 1);
    int dirfd = open(bdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    assert_true(dirfd >= 0);
    /* Below the store's 100 tries, and above the names earlier backups of this process took, so
     * the first names the backup tries are taken. */
    enum { LEFT = 90 };
    for (int i = 0; i < LEFT; i++) {
        char name[64];
        snprintf(name, sizeof name, "b.mdb~tmp.%ld.%d", (long)getpid(), i);
        int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        assert_true(fd >= 0);
        close(fd);
    }
    char err[UD_ERRMSG_SIZE] = "";
    uint64_t bytes = 0;
    int rc = ud_store_backup_at(s, dirfd, "b.mdb", "b.mdb", &bytes, err);
    if (rc != 0)
        print_error("backup: %s\n", err);
    assert_int_equal(rc, 0);
    assert_true(bytes > 0);
    char path[4096];
    snprintf(path, sizeof path, "%s/b.mdb", bdir);
    assert_int_equal(file_size(path), (off_t)bytes);
    /* The leftovers are not this backup's: all still there. */
    for (int i = 0; i < LEFT; i++) {
        char name[64];
        snprintf(name, sizeof name, "b.mdb~tmp.%ld.%d", (long)getpid(), i);
        assert_int_equal(faccessat(dirfd, name, F_OK, 0), 0);
    }
    close(dirfd);
    ud_store_close(s);
    ud_test_rmtree(dir);
    ud_test_rmtree(bdir);
    free(dir);
    free(bdir);
}

/* A backup of a nearly full map first makes room, so writes are not stuck behind the copy. */
static void test_backup_makes_headroom(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("store-backup-room");
    struct ud_store *s = open_store(dir, TINY_MAP, 0);
    char err[UD_ERRMSG_SIZE];
    assert_int_equal(write_bulk(s, 0, 8, 4000, err), 0); /* ~10 of the 16 pages */
    struct ud_store_stats st;
    ud_store_stats(s, &st);
    assert_int_equal(st.map_size, TINY_MAP);

    char path[4096];
    snprintf(path, sizeof path, "%s/copy.mdb", dir);
    assert_int_equal(ud_store_backup(s, path, err), 0);
    ud_store_stats(s, &st);
    assert_int_equal(st.map_size, 2 * TINY_MAP);
    ud_store_close(s);

    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_stat ms;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 8), 0);
    assert_int_equal(mdb_env_open(env, path, MDB_NOSUBDIR | MDB_RDONLY | MDB_NOLOCK, 0644), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "kv", 0, &dbi), 0);
    assert_int_equal(mdb_stat(txn, dbi, &ms), 0);
    assert_int_equal(ms.ms_entries, 8);
    mdb_txn_abort(txn);
    mdb_env_close(env);
    ud_test_rmtree(dir);
    free(dir);
}

/* --- read cost ------------------------------------------------------------------------------- */

/* Keys spread over the key space in a scrambled order: an odd multiplier is a bijection. */
static void bench_key(uint64_t i, uint8_t key[8])
{
    ud_put_be64(key, i * 0x9E3779B97F4A7C15ull);
}

static int put_bench(struct ud_store_batch *b, void *arg)
{
    const struct bulk *bk = arg;
    uint8_t val[1024];
    for (uint64_t i = bk->first; i < bk->first + bk->count; i++) {
        uint8_t key[8];
        bench_key(i, key);
        memset(val, (int)(i & 0xFF), sizeof val);
        ud_put_le64(val, i);
        int rc = ud_store_batch_put(b, UD_SPACE_KV, key, 8, val, sizeof val);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static double rate(uint64_t n, uint64_t ns)
{
    return (double)n * 1e9 / (double)(ns ? ns : 1);
}

/*
 * Random point reads over N keys with 1 KiB values, three ways: the engine's pattern (one
 * snapshot per get), many gets in one snapshot, and raw mdb_get in one read transaction. Numbers
 * are printed, not asserted (the machine is shared); correctness of every read is asserted.
 */
/* Ended snapshots are reused without renewing their read transaction while no commit came in
 * between; each commit must still be seen by the next snapshot on the same thread. */
static void test_reused_snapshot_sees_each_commit(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("store-reuse");
    struct ud_store *s = open_store(dir, 0, 0);
    const char *k = "counter";
    check_absent(s, UD_SPACE_KV, k, strlen(k));
    check_absent(s, UD_SPACE_KV, k, strlen(k)); /* a reused snapshot, no commit since */
    for (int i = 0; i < 200; i++) {
        char v[16];
        int n = snprintf(v, sizeof v, "%d", i);
        put1(s, UD_SPACE_KV, k, strlen(k), v, (size_t)n);
        check_value(s, UD_SPACE_KV, k, strlen(k), v, (size_t)n);
        check_value(s, UD_SPACE_KV, k, strlen(k), v, (size_t)n);
    }
    struct op del = {UD_SPACE_KV, k, strlen(k), NULL, 0};
    write_ops(s, &del, 1);
    check_absent(s, UD_SPACE_KV, k, strlen(k));
    ud_store_close(s);
    ud_test_rmtree(dir);
    free(dir);
}

/* Disk allocated to the data file: the pages up to the data's end (the store gives back the
 * blocks it reserved past it after each write). */
static uint64_t data_file_bytes(const char *dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return (uint64_t)st.st_blocks * 512;
}

/* An idle snapshot kept open from before a commit must not keep LMDB from reusing the pages later
 * commits free: rewriting the same keys many times stays within a few copies of the data. */
static void test_idle_snapshots_free_pages(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("store-idle-pages");
    struct ud_store *s = open_store(dir, 0, 0);
    char err[UD_ERRMSG_SIZE];
    const uint64_t keys = 500;
    assert_int_equal(write_bulk(s, 0, keys, 3000, err), 0);
    uint64_t first = data_file_bytes(dir);
    /* Leaves an idle snapshot at the newest commit, which the rewrites make stale. */
    check_bulk(s, 0, 1, 3000);
    for (int round = 0; round < 30; round++)
        assert_int_equal(write_bulk(s, 0, keys, 3000, err), 0);
    uint64_t last = data_file_bytes(dir);
    print_message("# data file: %" PRIu64 " KiB after the first write, %" PRIu64
                  " KiB after 30 rewrites\n",
                  first >> 10, last >> 10);
    assert_true(last < 4 * first);
    check_bulk(s, 0, keys, 3000);
    ud_store_close(s);
    ud_test_rmtree(dir);
    free(dir);
}

/* --- the data file's page cache ahead of LMDB's end ------------------------------------------ */

/* Whether the page of the file mapped at addr is part of a large folio (a compound page), read
 * from /proc/self/pagemap and /proc/kpageflags: -1 when frame numbers are hidden (not root). */
static int in_large_folio(const volatile uint8_t *addr)
{
    (void)*addr; /* mapped and resident */
    static int pagemap = -2, kflags = -2;
    if (pagemap == -2) {
        pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
        kflags = open("/proc/kpageflags", O_RDONLY | O_CLOEXEC);
    }
    uint64_t entry = 0, flags = 0;
    if (pagemap < 0 || kflags < 0 ||
        pread(pagemap, &entry, sizeof entry, (off_t)((uintptr_t)addr / 4096 * 8)) != 8)
        return -1;
    uint64_t pfn = entry & ((1ull << 55) - 1);
    if (!(entry >> 63) || pfn == 0 || pread(kflags, &flags, sizeof flags, (off_t)(pfn * 8)) != 8)
        return -1;
    return (flags & ((1ull << 15) | (1ull << 16))) != 0; /* KPF_COMPOUND_HEAD | _TAIL */
}

/*
 * Writes of random single pages into large folios cost the flush a quarter of its CPU
 * (core/page_ahead.h). The store extends its data file past LMDB's end without allocating disk,
 * caches that stretch, and every page LMDB then writes is a single-page folio; the file never
 * grows past the map.
 */
static void test_data_file_cached_ahead(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("store-ahead");
    struct ud_store *s = open_store(dir, 0, 0);
    char err[UD_ERRMSG_SIZE];
    /* 8 MB in runs of fresh contiguous pages: each commit writes them with writev. */
    for (uint64_t w = 0; w < 8; w++)
        assert_int_equal(write_bulk(s, w * 250, 250, 4000, err), 0);
    check_bulk(s, 0, 2000, 4000);
    struct ud_store_stats st;
    ud_store_stats(s, &st);

    char path[4096];
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    uint64_t allocated = (uint64_t)sb.st_blocks * 512, size = (uint64_t)sb.st_size;
    print_message("# data file: %" PRIu64 " bytes long, %" PRIu64 " allocated, map %" PRIu64 "\n",
                  size, allocated, st.map_size);
    assert_true(allocated >= 8000000ull);
    assert_true(size >= allocated + (1u << 20));             /* extended ahead... */
    assert_true(allocated < 2 * st.used_bytes + (1u << 20)); /* ...without allocating disk */
    assert_true(size <= st.map_size);

    int fd = open(path, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    uint8_t *map = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
    assert_true(map != MAP_FAILED);
    /* The stretch past the data is cached (the last MiB is past it): it was read before the last
     * write began. */
    size_t tail = 1u << 20, pages = tail / 4096, resident = 0;
    unsigned char *vec = malloc(pages);
    assert_non_null(vec);
    assert_int_equal(mincore(map + size - tail, tail, vec), 0);
    for (size_t i = 0; i < pages; i++)
        resident += vec[i] & 1;
    free(vec);
    print_message("# %zu of the last %zu pages cached\n", resident, pages);
    assert_true(resident >= pages * 9 / 10);
    /* Past LMDB's two meta pages, written as the file is created, written pages are not in
     * large folios (all were without the cache ahead). Needs the frame numbers, which only root may
     * read. */
    size_t large = 0, checked = 0;
    for (uint64_t off = 8192; off < allocated && off < size; off += 4096) {
        int r = in_large_folio(map + off);
        if (r < 0)
            break;
        checked++;
        large += (size_t)r;
    }
    print_message("# %zu of %zu data pages in large folios%s\n", large, checked,
                  checked == 0 ? " (frame numbers hidden: not checked)" : "");
    assert_true(large <= checked / 10);
    munmap(map, size);
    close(fd);

    /* A small map bounds the extension. */
    ud_store_close(s);
    ud_test_rmtree(dir);
    s = open_store(dir, TINY_MAP, 0);
    assert_int_equal(write_bulk(s, 0, 4, 4000, err), 0);
    ud_store_stats(s, &st);
    assert_int_equal(stat(path, &sb), 0);
    assert_true((uint64_t)sb.st_size <= st.map_size);
    check_bulk(s, 0, 4, 4000);
    ud_store_close(s);
    ud_test_rmtree(dir);
    free(dir);
}

/*
 * The pages a commit writes are written back by the store's writeback thread while the commit
 * runs (core/writeback.h), not all by the commit's own fdatasync; every commit is readable after
 * a reopen (in this process, through the page cache: that does not show durability).
 */
static void test_commit_writeback_beside(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("store-writeback");
    struct ud_store *s = open_store(dir, 0, 0);
    char err[UD_ERRMSG_SIZE];
    struct ud_store_stats st = {0};
    uint64_t w = 0;
    /* A commit of 1 MB writes for milliseconds; a thread starved by a busy machine may miss a
     * few. */
    for (; w < 50 && st.writeback_rounds == 0; w++) {
        assert_int_equal(write_bulk(s, w * 250, 250, 4000, err), 0);
        ud_store_stats(s, &st);
    }
    print_message("# %" PRIu64 " writeback rounds after %" PRIu64 " commits\n", st.writeback_rounds,
                  w);
    assert_true(st.writeback_rounds > 0);
    /* Idle: no commit runs, the thread starts nothing (after the round it may have been in). */
    sleep_ms(10);
    ud_store_stats(s, &st);
    uint64_t idle = st.writeback_rounds;
    sleep_ms(30);
    ud_store_stats(s, &st);
    assert_int_equal(st.writeback_rounds, idle);
    ud_store_close(s);
    s = open_store(dir, 0, 0);
    check_bulk(s, 0, w * 250, 4000);
    ud_store_close(s);
    ud_test_rmtree(dir);
    free(dir);
}

static void test_random_get_cost(void **state)
{
    (void)state;
    /* UD_STORE_BENCH_KEYS overrides the key count for a manual run (e.g. 1000000). */
    const char *env_keys = getenv("UD_STORE_BENCH_KEYS");
    const uint64_t n = env_keys != NULL && atoll(env_keys) >= 20000
                           ? (uint64_t)atoll(env_keys) / 20000 * 20000
                           : (UNDER_SANITIZER ? 20000 : 200000);
    const uint64_t lookups = UNDER_SANITIZER ? 50000 : 500000;
    char *dir = ud_test_tmpdir("store-bench");
    struct ud_store *s = open_store(dir, 0, 0);
    char err[UD_ERRMSG_SIZE];
    for (uint64_t first = 0; first < n; first += 20000) {
        struct bulk bk = {first, 20000, 1024};
        assert_int_equal(ud_store_write(s, put_bench, &bk, err), 0);
    }

    uint64_t best_snap = UINT64_MAX, best_one = UINT64_MAX, best_raw = UINT64_MAX;
    uint64_t best_raw_txn = UINT64_MAX;
    for (int round = 0; round < 2; round++) {
        uint64_t rnd = 1234 + (uint64_t)round, sum = 0;
        uint64_t t0 = now_ns();
        for (uint64_t j = 0; j < lookups; j++) {
            uint64_t i = ud_test_rand(&rnd) % n;
            uint8_t key[8];
            bench_key(i, key);
            struct ud_store_snap *snap;
            const uint8_t *v = NULL;
            size_t vl;
            if (ud_store_snap_begin(s, &snap) != 0 ||
                ud_store_get(snap, UD_SPACE_KV, key, 8, &v, &vl) != 0 || vl != 1024 ||
                ud_get_le64(v) != i)
                fail_msg("lookup %" PRIu64 " failed", i);
            sum += v[1000];
            ud_store_snap_end(snap);
        }
        uint64_t t = now_ns() - t0;
        best_snap = t < best_snap ? t : best_snap;

        rnd = 1234 + (uint64_t)round;
        struct ud_store_snap *snap;
        assert_int_equal(ud_store_snap_begin(s, &snap), 0);
        t0 = now_ns();
        for (uint64_t j = 0; j < lookups; j++) {
            uint64_t i = ud_test_rand(&rnd) % n;
            uint8_t key[8];
            bench_key(i, key);
            const uint8_t *v = NULL;
            size_t vl;
            if (ud_store_get(snap, UD_SPACE_KV, key, 8, &v, &vl) != 0 || ud_get_le64(v) != i)
                fail_msg("lookup %" PRIu64 " failed", i);
            sum += v[1000];
        }
        t = now_ns() - t0;
        ud_store_snap_end(snap);
        best_one = t < best_one ? t : best_one;
        assert_true(sum > 0);
    }
    ud_store_close(s);

    /* The same files through raw LMDB (the store is closed: one environment per process). */
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 8), 0);
    assert_int_equal(mdb_env_open(env, dir, MDB_RDONLY | MDB_NOTLS, 0644), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "kv", 0, &dbi), 0);
    for (int round = 0; round < 2; round++) {
        uint64_t rnd = 1234 + (uint64_t)round, sum = 0;
        uint64_t t0 = now_ns();
        for (uint64_t j = 0; j < lookups; j++) {
            uint64_t i = ud_test_rand(&rnd) % n;
            uint8_t key[8];
            bench_key(i, key);
            MDB_val k = {8, key}, v = {0, NULL};
            int rc = mdb_get(txn, dbi, &k, &v);
            if (rc != 0 || ud_get_le64(v.mv_data) != i)
                fail_msg("raw lookup %" PRIu64 " failed: %s", i, mdb_strerror(rc));
            sum += ((uint8_t *)v.mv_data)[1000];
        }
        uint64_t t = now_ns() - t0;
        best_raw = t < best_raw ? t : best_raw;
        assert_true(sum > 0);
    }
    /* Committing (not aborting) keeps the dbi handle valid for later transactions. */
    assert_int_equal(mdb_txn_commit(txn), 0);
    /* Raw with a fresh read transaction per get: what a snapshot would cost without reuse. */
    uint64_t rnd = 99;
    uint64_t t0 = now_ns();
    for (uint64_t j = 0; j < lookups / 2; j++) {
        uint64_t i = ud_test_rand(&rnd) % n;
        uint8_t key[8];
        bench_key(i, key);
        MDB_val k = {8, key}, v = {0, NULL};
        if (mdb_txn_begin(env, NULL, MDB_RDONLY, &txn) != 0 || mdb_get(txn, dbi, &k, &v) != 0)
            fail_msg("raw lookup %" PRIu64 " failed", i);
        mdb_txn_abort(txn);
    }
    best_raw_txn = (now_ns() - t0) * 2;
    mdb_env_close(env);

    double r_snap = rate(lookups, best_snap), r_one = rate(lookups, best_one);
    double r_raw = rate(lookups, best_raw), r_raw_txn = rate(lookups, best_raw_txn);
    print_message("# random gets over %" PRIu64 " keys x 1 KiB%s, %" PRIu64 " lookups:\n", n,
                  UNDER_SANITIZER ? " (sanitizer build: figures not meaningful)" : "", lookups);
    print_message("#   ud_store_get, snapshot per get : %9.0f/s  %.2f of raw mdb_get\n", r_snap,
                  r_snap / r_raw);
    print_message("#   ud_store_get, one snapshot     : %9.0f/s  %.2f of raw mdb_get\n", r_one,
                  r_one / r_raw);
    print_message("#   raw mdb_get, one txn           : %9.0f/s\n", r_raw);
    print_message("#   raw mdb_get, begin/abort per get: %8.0f/s\n", r_raw_txn);
    ud_test_rmtree(dir);
    free(dir);
}

/* A copy of the store behind a write group that a failing flush keeps open. */
struct waiting_copy {
    struct ud_store *s;
    int fd;
    int rc;
    char err[UD_ERRMSG_SIZE];
};

static void *waiting_copy_main(void *arg)
{
    struct waiting_copy *c = arg;
    c->rc = ud_store_copy_fd(c->s, c->fd, 1, c->err);
    return NULL;
}

/* A flush that failed halfway and keeps failing leaves its write group open: copies (snapshots,
 * backups) give up after a bounded wait with UD_EBUSY instead of waiting forever, and closing the
 * store wakes a copy still waiting (UD_ECLOSED) rather than destroying what it waits on. */
static void test_copy_behind_open_group(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("store-copy-group");
    struct ud_store *s = open_store(dir, 0, 0);
    char err[UD_ERRMSG_SIZE] = "";
    put1(s, UD_SPACE_KV, "k", 1, "v", 1);
    assert_int_equal(ud_store_group_begin(s), 1); /* never ended: the flush keeps failing */

    char path[4096];
    snprintf(path, sizeof path, "%s/backup.mdb", dir);
    ud_store_set_copy_wait_ms(200);
    uint64_t t0 = ud_mono_ns();
    int fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    int rc = ud_store_copy_fd(s, fd, 1, err);
    print_message("# copy behind an open group: %s (%.0f ms)\n", err,
                  (double)(ud_mono_ns() - t0) / 1e6);
    assert_int_equal(rc, UD_EBUSY);
    assert_int_equal(ud_store_backup(s, path, err), UD_EBUSY);
    assert_int_equal(access(path, F_OK), -1); /* nothing left behind */
    uint64_t waited_ms = (ud_mono_ns() - t0) / 1000000u;
    assert_true(waited_ms >= 400 && waited_ms < 5000);

    /* A waiting copy, then the store closes under it. */
    ud_store_set_copy_wait_ms(60000);
    struct waiting_copy c = {.s = s, .fd = fd};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, waiting_copy_main, &c), 0);
    struct ud_store_stats st = {0};
    for (uint64_t until = ud_mono_ns() + 10000000000ull;
         st.copies_waiting == 0 && ud_mono_ns() < until; usleep(1000))
        ud_store_stats(s, &st);
    assert_int_equal(st.copies_waiting, 1); /* in copy_enter: closing must wake it */
    t0 = ud_mono_ns();
    ud_store_close(s);
    assert_int_equal(pthread_join(th, NULL), 0);
    print_message("# copy waiting at close: %s (%.0f ms)\n", c.err,
                  (double)(ud_mono_ns() - t0) / 1e6);
    assert_int_equal(c.rc, UD_ECLOSED);
    ud_store_set_copy_wait_ms(UD_STORE_COPY_WAIT_MS);
    close(fd);
    ud_test_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_each_space),
        cmocka_unit_test(test_key_limits),
        cmocka_unit_test(test_incarnation),
        cmocka_unit_test(test_del_prefix_exact),
        cmocka_unit_test(test_cursor_order),
        cmocka_unit_test(test_snapshot_isolation),
        cmocka_unit_test(test_checkpoint_roundtrip),
        cmocka_unit_test(test_checkpoint_corrupt),
        cmocka_unit_test(test_lob_chunks),
        cmocka_unit_test(test_fn_error_aborts),
        cmocka_unit_test(test_map_growth),
        cmocka_unit_test(test_growth_waits_for_snapshot),
        cmocka_unit_test(test_nested_snapshot_during_growth),
        cmocka_unit_test(test_readers_during_growth),
        cmocka_unit_test(test_reused_snapshot_sees_each_commit),
        cmocka_unit_test(test_idle_snapshots_free_pages),
        cmocka_unit_test(test_growth_with_idle_snapshots),
        cmocka_unit_test(test_max_map_size),
        cmocka_unit_test(test_version_mismatch),
        cmocka_unit_test(test_backup),
        cmocka_unit_test(test_backup_makes_headroom),
        cmocka_unit_test(test_backup_tmp_leftovers),
        cmocka_unit_test(test_copy_behind_open_group),
        cmocka_unit_test(test_data_file_cached_ahead),
        cmocka_unit_test(test_commit_writeback_beside),
        cmocka_unit_test(test_random_get_cost),
    };
    return cmocka_run_group_tests_name("store", tests, NULL, NULL);
}
