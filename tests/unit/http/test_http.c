/* HTTP API rules without sockets: path decoding and routes, query strings, backup path
 * confinement, every JSON body parser, strict base64, JSON output, the body limit, status codes,
 * the write records, metrics, and byte ranges. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/http/b64_vector.h"
#include "core/http/body.h"
#include "core/http/http.h"
#include "core/http/json.h"
#include "core/http/metrics.h"
#include "core/http/path.h"
#include "core/http/range.h"
#include "proto/record.h"
#include "tests/lib/testutil.h"
#include "writer/http_write.h"

#define S(x) x, strlen(x)

/* --- percent decoding and routes -------------------------------------------------------------- */

static void expect_decode(const char *in, const char *want, size_t want_len)
{
    uint8_t out[256];
    size_t n = 0;
    char errmsg[UD_ERRMSG_SIZE] = "";
    assert_int_equal(ud_http_pct_decode(in, strlen(in), out, &n, errmsg), 0);
    assert_int_equal(n, want_len);
    assert_memory_equal(out, want, n);
}

static void expect_bad_decode(const char *in)
{
    uint8_t out[256];
    size_t n = 0;
    char errmsg[UD_ERRMSG_SIZE] = "";
    assert_int_equal(ud_http_pct_decode(in, strlen(in), out, &n, errmsg), UD_EINVAL);
    assert_non_null(strstr(errmsg, "bad percent escape"));
}

static void test_pct_decode(void **state)
{
    (void)state;
    expect_decode("user:123", S("user:123"));
    expect_decode("a%2Fb", S("a/b"));
    expect_decode("a%2fb", S("a/b"));
    expect_decode("%2e%2e", S(".."));
    expect_decode("%2E%2E%2F", S("../"));
    expect_decode("a+b", S("a+b")); /* RFC 3986: '+' is not a space in paths */
    expect_decode("%00%ff", "\x00\xff", 2);
    expect_decode("%2525", S("%25")); /* decoded exactly once */
    expect_decode("", "", 0);
    expect_bad_decode("%");
    expect_bad_decode("abc%2");
    expect_bad_decode("%G1");
    expect_bad_decode("%1G");
    expect_bad_decode("a%%20");
}

static int match(const char *pattern, const char *path, const char *name, const char *want)
{
    struct ud_http_params p;
    if (!ud_http_route_match(pattern, path, strlen(path), &p))
        return 0;
    if (name == NULL)
        return 1;
    const char *raw;
    size_t len;
    assert_true(ud_http_param(&p, name, &raw, &len));
    assert_int_equal(len, strlen(want));
    assert_memory_equal(raw, want, len);
    return 1;
}

static void test_routes(void **state)
{
    (void)state;
    const char *kv = "/api/v1/{ns}/kv/{key*}";
    assert_true(match(kv, "/api/v1/default/kv/user:1", "key", "user:1"));
    assert_true(match(kv, "/api/v1/default/kv/user:1", "ns", "default"));
    /* The raw path: ".." and its encodings stay in the key (h2o's normalized path would not). */
    assert_true(match(kv, "/api/v1/default/kv/a/../b", "key", "a/../b"));
    assert_true(match(kv, "/api/v1/default/kv/%2e%2e", "key", "%2e%2e"));
    assert_true(match(kv, "/api/v1/default/kv/a%2Fb", "key", "a%2Fb"));
    assert_true(match(kv, "/api/v1/default/kv/..", "key", ".."));
    assert_true(match(kv, "/api/v1/default/kv/", "key", "")); /* empty key: 400 later */
    assert_false(match(kv, "/api/v1/default/kv", NULL, NULL));
    assert_false(match(kv, "/api/v1//kv/a", NULL, NULL)); /* empty {ns} */
    assert_false(match(kv, "/api/v2/default/kv/a", NULL, NULL));

    const char *cols = "/api/v1/{ns}/row/{key*}/columns";
    assert_true(match(cols, "/api/v1/d/row/user:john/columns", "key", "user:john"));
    assert_true(match(cols, "/api/v1/d/row/a/b/columns", "key", "a/b"));
    assert_false(match(cols, "/api/v1/d/row//columns", NULL, NULL));
    assert_false(match(cols, "/api/v1/d/row/columns", NULL, NULL));
    assert_false(match(cols, "/api/v1/d/row/x%2Fcolumns", NULL, NULL)); /* encoded: a row key */
    assert_false(match(cols, "/api/v1/d/row/x/columnsX", NULL, NULL));

    assert_true(match("/api/v1", "/api/v1", NULL, NULL));
    assert_false(match("/api/v1", "/api/v1/", NULL, NULL));
    assert_true(match("/api/v1/{ns}", "/api/v1/x", "ns", "x"));
    assert_false(match("/api/v1/{ns}", "/api/v1/x/", NULL, NULL));
    assert_true(match("/api/v1/{ns}/tx/{txn}/kv", "/api/v1/x/tx/abc/kv", "txn", "abc"));
    assert_false(match("/api/v1/{ns}/tx/{txn}/kv", "/api/v1/x/tx/abc/row", NULL, NULL));
    assert_true(match("/healthz", "/healthz", NULL, NULL));
    assert_false(match("/healthz", "/healthzz", NULL, NULL));
    assert_false(match("/healthz", "healthz", NULL, NULL));
}

static void test_query(void **state)
{
    (void)state;
    const char *q = "key=file%3Adoc.pdf&limit=10&empty=&flag&prefix=a%2Fb&bad=%zz&min_lsn=99";
    size_t ql = strlen(q);
    uint8_t out[64];
    size_t n;
    char errmsg[UD_ERRMSG_SIZE];
    assert_int_equal(ud_http_query_get(q, ql, "key", out, sizeof out, &n, errmsg), 0);
    assert_int_equal(n, strlen("file:doc.pdf"));
    assert_memory_equal(out, "file:doc.pdf", n);
    assert_int_equal(ud_http_query_get(q, ql, "prefix", out, sizeof out, &n, errmsg), 0);
    assert_memory_equal(out, "a/b", 3);
    assert_int_equal(ud_http_query_get(q, ql, "empty", out, sizeof out, &n, errmsg), 0);
    assert_int_equal(n, 0);
    assert_int_equal(ud_http_query_get(q, ql, "flag", out, sizeof out, &n, errmsg), 0);
    assert_int_equal(n, 0);
    assert_int_equal(ud_http_query_get(q, ql, "nope", out, sizeof out, &n, errmsg), UD_ENOTFOUND);
    assert_int_equal(ud_http_query_get(q, ql, "bad", out, sizeof out, &n, errmsg), UD_EINVAL);
    assert_non_null(strstr(errmsg, "bad"));
    assert_int_equal(ud_http_query_get(q, ql, "key", out, 4, &n, errmsg), UD_ELIMIT);
    /* "ke" is not "key", and "key" is not "keys". */
    assert_int_equal(ud_http_query_get(q, ql, "ke", out, sizeof out, &n, errmsg), UD_ENOTFOUND);

    uint64_t v;
    assert_int_equal(ud_http_query_u64(q, ql, "limit", 1, 1000, &v, errmsg), 0);
    assert_int_equal(v, 10);
    assert_int_equal(ud_http_query_u64(q, ql, "min_lsn", 0, UINT64_MAX, &v, errmsg), 0);
    assert_int_equal(v, 99);
    assert_int_equal(ud_http_query_u64(q, ql, "limit", 11, 1000, &v, errmsg), UD_EINVAL);
    assert_non_null(strstr(errmsg, "from 11 to 1000"));
    assert_int_equal(ud_http_query_u64(q, ql, "key", 0, 10, &v, errmsg), UD_EINVAL);
    assert_int_equal(ud_http_query_u64(q, ql, "empty", 0, 10, &v, errmsg), UD_EINVAL);
    const char *big = "n=18446744073709551616";
    assert_int_equal(ud_http_query_u64(big, strlen(big), "n", 0, UINT64_MAX, &v, errmsg),
                     UD_EINVAL);
    const char *max = "n=18446744073709551615";
    assert_int_equal(ud_http_query_u64(max, strlen(max), "n", 0, UINT64_MAX, &v, errmsg), 0);
    assert_true(v == UINT64_MAX);
    assert_int_equal(ud_http_query_get(NULL, 0, "x", out, sizeof out, &n, errmsg), UD_ENOTFOUND);
}

static void test_columns_split(void **state)
{
    (void)state;
    struct ud_col cols[4];
    size_t n;
    char errmsg[UD_ERRMSG_SIZE];
    const char *l = "name,email";
    assert_int_equal(ud_http_columns_split((const uint8_t *)l, strlen(l), cols, 4, &n, errmsg), 0);
    assert_int_equal(n, 2);
    assert_int_equal(cols[1].name_len, 5);
    assert_memory_equal(cols[1].name, "email", 5);
    const char *bad[] = {"a,,b", "a,", ",a", ""};
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(
            ud_http_columns_split((const uint8_t *)bad[i], strlen(bad[i]), cols, 4, &n, errmsg),
            UD_EINVAL);
    const char *many = "a,b,c,d,e";
    assert_int_equal(
        ud_http_columns_split((const uint8_t *)many, strlen(many), cols, 4, &n, errmsg), UD_ELIMIT);
}

/* --- backup paths ----------------------------------------------------------------------------- */

static void test_backup_paths(void **state)
{
    (void)state;
    char out[256], errmsg[UD_ERRMSG_SIZE];
    assert_int_equal(ud_http_backup_path("/data/backups/default", "wal/daily", "backupDir", out,
                                         sizeof out, errmsg),
                     0);
    assert_string_equal(out, "/data/backups/default/wal/daily");
    assert_int_equal(
        ud_http_backup_path("/r", "snapshots/backup-20250108.db", "path", out, sizeof out, errmsg),
        0);
    assert_int_equal(ud_http_backup_path("/r", "a/...b/c.d", "path", out, sizeof out, errmsg), 0);
    const char *bad[] = {
        "/etc/passwd", "..",   "../x", "a/../../x", "a/..",     "./a",   "a/./b",
        "a//b",        "a/",   "",     "%2e%2e",    "%2e%2e/x", "a%2Fb", "..%2f..",
        "a\\..\\b",    "a\nb", "a b",  "a\tb",      "\xc3\xa9", "~/x",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        errmsg[0] = '\0';
        int rc = ud_http_backup_path("/r", bad[i], "backupDir", out, sizeof out, errmsg);
        if (rc != UD_EINVAL)
            print_message("accepted %s\n", bad[i]);
        assert_int_equal(rc, UD_EINVAL);
        assert_non_null(strstr(errmsg, "invalid path"));
        assert_non_null(strstr(errmsg, "backupDir"));
    }
    char longp[600];
    memset(longp, 'a', sizeof longp - 1);
    longp[sizeof longp - 1] = '\0';
    assert_int_equal(ud_http_backup_path("/r", longp, "path", out, sizeof out, errmsg), UD_EINVAL);
    /* The JSON escape of ".." decodes before the check sees it. */
    struct ud_http_body b;
    ud_http_body_init(&b);
    const char *body = "{\"path\":\"\\u002e\\u002e/x\"}";
    const char *p;
    assert_int_equal(ud_http_parse_btree_backup(&b, body, strlen(body), &p, errmsg), 0);
    assert_int_equal(ud_http_backup_path("/r", p, "path", out, sizeof out, errmsg), UD_EINVAL);
    const char *nul = "{\"path\":\"a\\u0000b\"}";
    assert_int_equal(ud_http_parse_btree_backup(&b, nul, strlen(nul), &p, errmsg), UD_EINVAL);
    ud_http_body_free(&b);
}

/* --- base64 and JSON output ------------------------------------------------------------------- */

static void test_base64(void **state)
{
    (void)state;
    char enc[64];
    uint8_t dec[64];
    size_t n;
    assert_int_equal(ud_b64_encode("hello world", 11, enc), 16);
    assert_memory_equal(enc, "aGVsbG8gd29ybGQ=", 16);
    assert_int_equal(ud_b64_decode(S("eyJuYW1lIjoiSm9obiIsImFnZSI6MzB9"), dec, &n), 0);
    assert_int_equal(n, strlen("{\"name\":\"John\",\"age\":30}"));
    assert_memory_equal(dec, "{\"name\":\"John\",\"age\":30}", n);
    assert_int_equal(ud_b64_decode("", 0, dec, &n), 0);
    assert_int_equal(n, 0);
    const char *bad[] = {"a",        "ab",    "abc",   "abcde", "ab=c",    "a===",    "====",
                         "YQ==YQ==", "YR==",  "YWI=x", "YW J",  "YWJ\n",   "YW-_",    "YQ=",
                         "Y\x80==",  "YWI\0", "=YWI",  "YWJj=", "YWJjZA=", "YWJjZ==="};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t len = i == 15 ? 4 : strlen(bad[i]);
        if (ud_b64_decode(bad[i], len, dec, &n) != UD_EINVAL)
            print_message("accepted \"%s\"\n", bad[i]);
        assert_int_equal(ud_b64_decode(bad[i], len, dec, &n), UD_EINVAL);
    }
    /* Round trip of every length 0..300 with deterministic bytes. */
    uint64_t seed = 42;
    uint8_t raw[300];
    char text[400];
    uint8_t back[400];
    for (size_t len = 0; len <= sizeof raw; len++) {
        ud_test_fill(&seed, raw, len);
        size_t el = ud_b64_encode(raw, len, text);
        assert_int_equal(el, ud_b64_encoded_len(len));
        assert_true(ud_b64_decoded_max(el) >= len);
        assert_int_equal(ud_b64_decode(text, el, back, &n), 0);
        assert_int_equal(n, len);
        assert_memory_equal(back, raw, len);
    }
}

/* The vector blocks (core/http/b64_vector.c) against the alphabet, character by character:
 * every byte value at every position of a 32-character block, inside a 100-character text. */
static int alphabet_value(uint8_t c)
{
    const char *a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const char *p = c ? strchr(a, c) : NULL;
    return p ? (int)(p - a) : -1;
}

static void test_base64_every_byte_in_blocks(void **state)
{
    (void)state;
    uint64_t seed = 9;
    uint8_t raw[75], back[80];
    char text[100];
    size_t n;
    ud_test_fill(&seed, raw, sizeof raw);
    assert_int_equal(ud_b64_encode(raw, sizeof raw, text), sizeof text);
    for (size_t pos = 0; pos < 96; pos++) {
        for (int c = 0; c < 256; c++) {
            char t[100];
            memcpy(t, text, sizeof t);
            t[pos] = (char)c;
            int v = alphabet_value((uint8_t)c);
            int rc = ud_b64_decode(t, sizeof t, back, &n);
            if (v < 0) {
                assert_int_equal(rc, UD_EINVAL);
                continue;
            }
            assert_int_equal(rc, 0);
            assert_int_equal(n, sizeof raw);
            /* The 6 bits at pos are v; every other bit is the original's. */
            uint8_t want[75];
            memcpy(want, raw, sizeof want);
            size_t bit = pos * 6;
            for (int b = 0; b < 6; b++, bit++) {
                uint8_t mask = (uint8_t)(0x80 >> (bit % 8));
                if (v & (0x20 >> b))
                    want[bit / 8] |= mask;
                else
                    want[bit / 8] &= (uint8_t)~mask;
            }
            assert_memory_equal(back, want, sizeof want);
        }
    }
    /* Long values (a 1 MiB body's is 1.4 MB of text) round trip through many blocks. */
    size_t big = 100000;
    uint8_t *data = malloc(big), *out = malloc(big + 3);
    char *enc = malloc(ud_b64_encoded_len(big));
    assert_true(data != NULL && out != NULL && enc != NULL);
    for (size_t len = big - 5; len <= big; len++) {
        ud_test_fill(&seed, data, len);
        size_t el = ud_b64_encode(data, len, enc);
        assert_int_equal(ud_b64_decode(enc, el, out, &n), 0);
        assert_int_equal(n, len);
        assert_memory_equal(out, data, len);
        enc[el / 2] = '-';
        assert_int_equal(ud_b64_decode(enc, el, out, &n), UD_EINVAL);
    }
    free(data);
    free(out);
    free(enc);
}

/*
 * The vector path itself (ud_b64_decode_blocks), not only ud_b64_decode's results, which the
 * scalar loop alone would also get right: on random texts it must decode every whole block and
 * agree with the scalar decoder byte for byte, and with one byte outside the alphabet at any
 * position it must stop exactly at the start of the block holding it, having decoded the blocks
 * before it correctly.
 */
static void test_base64_vector_path(void **state)
{
    (void)state;
#if defined(__x86_64__)
    if (!__builtin_cpu_supports("avx2"))
        skip();
#else
    skip();
#endif
    uint64_t seed = 77;
    uint8_t raw[1500], scalar[1500], vec[1500];
    char text[2004];
    size_t n;
    for (int round = 0; round < 2000; round++) {
        size_t len = (size_t)(ud_test_rand(&seed) % sizeof raw);
        ud_test_fill(&seed, raw, len);
        size_t el = ud_b64_encode(raw, len, text);
        assert_int_equal(ud_b64_decode(text, el, scalar, &n), 0);
        assert_int_equal(n, len);
        /* As ud_b64_decode calls it: everything but the last group. */
        size_t full = el >= 4 ? el - 4 : 0;
        size_t done = ud_b64_decode_blocks((const uint8_t *)text, full, vec);
        assert_int_equal(done, full / 32 * 32);
        assert_memory_equal(vec, scalar, done / 4 * 3);
    }
    /* Every byte outside the alphabet at every position of a text of whole blocks. */
    ud_test_fill(&seed, raw, 192);
    assert_int_equal(ud_b64_encode(raw, 192, text), 256);
    for (size_t pos = 0; pos < 256; pos++) {
        for (int c = 0; c < 256; c++) {
            if (alphabet_value((uint8_t)c) >= 0)
                continue;
            char t[256];
            memcpy(t, text, sizeof t);
            t[pos] = (char)c;
            memset(vec, 0, 192);
            size_t done = ud_b64_decode_blocks((const uint8_t *)t, sizeof t, vec);
            assert_int_equal(done, pos / 32 * 32);
            assert_memory_equal(vec, raw, done / 4 * 3);
        }
    }
}

static void test_json_out(void **state)
{
    (void)state;
    struct ud_jbuf j;
    ud_jbuf_init(&j);
    ud_jbuf_str(&j, S("a\"b\\c\n\x01\x7f caf\xc3\xa9 \xff\xfe \xe2\x82"));
    assert_string_equal(j.p, "\"a\\\"b\\\\c\\n\\u0001\\u007f caf\xc3\xa9 \xef\xbf\xbd\xef\xbf\xbd "
                             "\xef\xbf\xbd\xef\xbf\xbd\"");
    ud_jbuf_free(&j);
    ud_jbuf_init(&j);
    ud_jbuf_u64(&j, 0);
    ud_jbuf_raw(&j, ",", 1);
    ud_jbuf_u64(&j, UINT64_MAX);
    ud_jbuf_raw(&j, ",", 1);
    ud_jbuf_b64(&j, "hi", 2);
    assert_string_equal(j.p, "0,18446744073709551615,\"aGk=\"");
    ud_jbuf_free(&j);
    assert_true(ud_utf8_valid(S("plain")));
    assert_false(ud_utf8_valid(S("\xc0\xaf")));         /* overlong '/' */
    assert_false(ud_utf8_valid(S("\xed\xa0\x80")));     /* surrogate */
    assert_false(ud_utf8_valid(S("\xf4\x90\x80\x80"))); /* > U+10FFFF */
    assert_true(ud_utf8_valid(S("\xf0\x9f\x98\x80")));
}

/* --- the body limit and status codes ---------------------------------------------------------- */

static void test_body_limit(void **state)
{
    (void)state;
    char errmsg[UD_ERRMSG_SIZE];
    assert_int_equal(ud_http_body_check(0, UD_HTTP_DEFAULT_MAX_BODY, errmsg), 0);
    assert_int_equal(ud_http_body_check(1048576, UD_HTTP_DEFAULT_MAX_BODY, errmsg), 0);
    assert_int_equal(ud_http_body_check(1048577, UD_HTTP_DEFAULT_MAX_BODY, errmsg), UD_ELIMIT);
    assert_non_null(strstr(errmsg, "1048577"));
    assert_non_null(strstr(errmsg, "1048576"));
    assert_true(UD_HTTP_H2O_MAX_BODY > UD_HTTP_DEFAULT_MAX_BODY);
    /* h2o's limit stays above ours, so the 413 over the limit is our JSON one. */
    assert_int_equal(ud_http_h2o_limit(1048576), 4u << 20);
    assert_int_equal(ud_http_h2o_limit(4u << 20), 5u << 20);
    assert_int_equal(ud_http_h2o_limit(4096), 4u << 20);

    /* A leader's Content-Length is taken only whole (a streamed answer relies on it). */
    uint64_t n = 7;
    assert_int_equal(ud_http_parse_length("0", &n), 1);
    assert_int_equal(n, 0);
    assert_int_equal(ud_http_parse_length("50331648", &n), 1);
    assert_int_equal(n, 50331648);
    assert_int_equal(ud_http_parse_length("18446744073709551614", &n), 1);
    assert_true(n == UINT64_MAX - 1);
    n = 7;
    assert_int_equal(ud_http_parse_length("", &n), 0);
    assert_int_equal(ud_http_parse_length("12abc", &n), 0);
    assert_int_equal(ud_http_parse_length("12 34", &n), 0);
    assert_int_equal(ud_http_parse_length("-1", &n), 0);
    assert_int_equal(ud_http_parse_length("+1", &n), 0);
    assert_int_equal(ud_http_parse_length(" 1", &n), 0);
    assert_int_equal(ud_http_parse_length("18446744073709551615", &n), 0); /* "unknown" */
    assert_int_equal(ud_http_parse_length("18446744073709551616", &n), 0); /* overflow */
    assert_int_equal(ud_http_parse_length("99999999999999999999999", &n), 0);
    assert_int_equal(n, 7);

    assert_int_equal(ud_http_status_for(UD_ENOTFOUND), 404);
    assert_int_equal(ud_http_status_for(UD_EINVAL), 400);
    assert_int_equal(ud_http_status_for(UD_ELIMIT), 400);
    assert_int_equal(ud_http_status_for(UD_ETXN), 409);
    assert_int_equal(ud_http_status_for(UD_ECONFLICT), 409);
    assert_int_equal(ud_http_status_for(UD_EBUSY), 503);
    assert_int_equal(ud_http_status_for(UD_ECLOSED), 503);
    assert_int_equal(ud_http_status_for(UD_EINDOUBT), 503);
    assert_int_equal(ud_http_status_for(UD_ENOSPC), 500);
    assert_int_equal(ud_http_status_for(UD_EIO), 500);
    assert_int_equal(ud_http_status_for(UD_EGONE), 410);
}

/* Every layer words a write in doubt alike: "outcome unknown: ... (<cause>)"; a long cause is
 * cut to the buffer. */
static void test_indoubt_message(void **state)
{
    (void)state;
    char msg[UD_ERRMSG_SIZE];
    assert_int_equal(ud_err_indoubt(msg, sizeof msg, "raft: %s", "leadership lost"), UD_EINDOUBT);
    assert_string_equal(msg, "outcome unknown: the write may have been committed (raft: "
                             "leadership lost)");
    char small[24];
    ud_err_indoubt(small, sizeof small, "%s", "cut");
    assert_int_equal(strlen(small), sizeof small - 1);
}

/* --- JSON bodies ------------------------------------------------------------------------------ */

/* Parses body with the parser for kind and returns rc; errmsg must contain want when rc != 0. */
static int parse(const char *kind, const char *body, const char *want)
{
    struct ud_http_body b;
    ud_http_body_init(&b);
    char errmsg[UD_ERRMSG_SIZE] = "";
    size_t len = strlen(body);
    int rc;
    if (strcmp(kind, "kv_put") == 0) {
        const uint8_t *v;
        size_t vl;
        rc = ud_http_parse_kv_put(&b, body, len, &v, &vl, errmsg);
    } else if (strcmp(kind, "kv_batch") == 0) {
        struct ud_http_kv_batch kb;
        rc = ud_http_parse_kv_batch(&b, body, len, &kb, errmsg);
    } else if (strcmp(kind, "row_put") == 0) {
        struct ud_col *c;
        size_t n;
        rc = ud_http_parse_row_put(&b, body, len, &c, &n, errmsg);
    } else if (strcmp(kind, "row_batch") == 0) {
        struct ud_http_row_batch rb;
        rc = ud_http_parse_row_batch(&b, body, len, &rb, errmsg);
    } else if (strcmp(kind, "begin") == 0) {
        enum ud_op op;
        enum ud_entry_type t;
        rc = ud_http_parse_txn_begin(body, len, &op, &t, errmsg);
    } else if (strcmp(kind, "txn_kv") == 0) {
        struct ud_kv kv;
        rc = ud_http_parse_txn_kv(&b, body, len, UD_OP_PUT, &kv, errmsg);
    } else if (strcmp(kind, "txn_kv_del") == 0) {
        struct ud_kv kv;
        rc = ud_http_parse_txn_kv(&b, body, len, UD_OP_DELETE, &kv, errmsg);
    } else if (strcmp(kind, "txn_row") == 0) {
        struct ud_row r;
        rc = ud_http_parse_txn_row(&b, body, len, UD_OP_PUT, &r, errmsg);
    } else if (strcmp(kind, "txn_row_del") == 0) {
        struct ud_row r;
        rc = ud_http_parse_txn_row(&b, body, len, UD_OP_DELETE, &r, errmsg);
    } else if (strcmp(kind, "wal_backup") == 0) {
        uint64_t after;
        const char *dir;
        rc = ud_http_parse_wal_backup(&b, body, len, &after, &dir, errmsg);
    } else {
        const char *p;
        rc = ud_http_parse_btree_backup(&b, body, len, &p, errmsg);
    }
    ud_http_body_free(&b);
    if (rc != 0) {
        assert_int_equal(rc, UD_EINVAL);
        if (want != NULL && strstr(errmsg, want) == NULL)
            print_message("%s %s: got \"%s\", want \"%s\"\n", kind, body, errmsg, want);
        if (want != NULL)
            assert_non_null(strstr(errmsg, want));
    }
    return rc;
}

static void test_malformed_everywhere(void **state)
{
    (void)state;
    const char *kinds[] = {"kv_put",      "kv_batch",   "row_put",     "row_batch",
                           "begin",       "txn_kv",     "txn_kv_del",  "txn_row",
                           "txn_row_del", "wal_backup", "btree_backup"};
    const char *broken[] = {"",      "{",          "{\"value\":}", "[1,2]",   "\"x\"", "null",
                            "{} {}", "{\"a\":1,}", "\xff\xfe",     "{'a':1}", "42"};
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++)
        for (size_t i = 0; i < sizeof broken / sizeof broken[0]; i++)
            assert_int_equal(parse(kinds[k], broken[i], "malformed JSON"), UD_EINVAL);
    /* Duplicate fields are refused, not silently resolved. */
    assert_int_equal(parse("kv_put", "{\"value\":\"YQ==\",\"value\":\"Yg==\"}", "malformed JSON"),
                     UD_EINVAL);
}

static void test_kv_bodies(void **state)
{
    (void)state;
    struct ud_http_body b;
    ud_http_body_init(&b);
    char errmsg[UD_ERRMSG_SIZE];
    const uint8_t *v;
    size_t vl;
    const char *ok = "{\"value\":\"aGVsbG8gd29ybGQ=\",\"ignored\":[1]}";
    assert_int_equal(ud_http_parse_kv_put(&b, ok, strlen(ok), &v, &vl, errmsg), 0);
    assert_int_equal(vl, 11);
    assert_memory_equal(v, "hello world", 11);
    const char *empty = "{\"value\":\"\"}";
    assert_int_equal(ud_http_parse_kv_put(&b, empty, strlen(empty), &v, &vl, errmsg), 0);
    assert_int_equal(vl, 0);
    ud_http_body_free(&b);

    assert_int_equal(parse("kv_put", "{}", "field \"value\" is required"), UD_EINVAL);
    assert_int_equal(parse("kv_put", "{\"value\":5}", "\"value\" must be a base64 string"),
                     UD_EINVAL);
    assert_int_equal(parse("kv_put", "{\"value\":null}", "must be a base64 string"), UD_EINVAL);
    assert_int_equal(parse("kv_put", "{\"value\":\"not base64!\"}",
                           "invalid base64 encoding in field \"value\""),
                     UD_EINVAL);

    ud_http_body_init(&b);
    struct ud_http_kv_batch kb;
    const char *batch = "{\"operation\":\"put\",\"items\":[{\"key\":\"user:1\",\"value\":"
                        "\"dXNlcjE=\"},{\"key\":\"k\\u0000\\u00e9\",\"value\":\"\"}]}";
    assert_int_equal(ud_http_parse_kv_batch(&b, batch, strlen(batch), &kb, errmsg), 0);
    assert_int_equal(kb.op, UD_OP_PUT);
    assert_int_equal(kb.n, 2);
    assert_int_equal(kb.items[0].key_len, 6);
    assert_memory_equal(kb.items[0].value, "user1", 5);
    assert_int_equal(kb.items[1].key_len, 4); /* "k", NUL, U+00E9 in UTF-8 */
    assert_memory_equal(kb.items[1].key, "k\0\xc3\xa9", 4);
    const char *del = "{\"operation\":\"delete\",\"keys\":[\"key1\",\"key2\"]}";
    assert_int_equal(ud_http_parse_kv_batch(&b, del, strlen(del), &kb, errmsg), 0);
    assert_int_equal(kb.op, UD_OP_DELETE);
    assert_int_equal(kb.n, 2);
    assert_memory_equal(kb.items[1].key, "key2", 4);
    ud_http_body_free(&b);

    assert_int_equal(parse("kv_batch", "{\"items\":[]}", "\"operation\" is required"), UD_EINVAL);
    assert_int_equal(parse("kv_batch", "{\"operation\":\"upsert\",\"items\":[]}",
                           "must be \"put\" or \"delete\""),
                     UD_EINVAL);
    assert_int_equal(
        parse("kv_batch", "{\"operation\":\"put\",\"items\":[]}", "\"items\" is empty"), UD_EINVAL);
    assert_int_equal(parse("kv_batch", "{\"operation\":\"put\",\"items\":{}}", "must be an array"),
                     UD_EINVAL);
    assert_int_equal(parse("kv_batch", "{\"operation\":\"put\",\"items\":[1]}",
                           "\"items[0]\" must be an object"),
                     UD_EINVAL);
    assert_int_equal(parse("kv_batch",
                           "{\"operation\":\"put\",\"items\":[{\"key\":\"a\",\"value\":\"YQ==\"},"
                           "{\"key\":\"b\",\"value\":\"Y\"}]}",
                           "invalid base64 encoding in field \"items[1].value\""),
                     UD_EINVAL);
    assert_int_equal(parse("kv_batch",
                           "{\"operation\":\"put\",\"items\":[{\"key\":\"\",\"value\":\"\"}]}",
                           "\"items[0].key\" is empty"),
                     UD_EINVAL);
    assert_int_equal(parse("kv_batch", "{\"operation\":\"put\",\"items\":[{\"value\":\"\"}]}",
                           "\"items[0].key\" is required"),
                     UD_EINVAL);
    assert_int_equal(parse("kv_batch", "{\"operation\":\"delete\",\"keys\":[\"a\",7]}",
                           "\"keys[1]\" must be a string"),
                     UD_EINVAL);
    assert_int_equal(
        parse("kv_batch", "{\"operation\":\"delete\",\"items\":[]}", "\"keys\" is required"),
        UD_EINVAL);
    /* 1025 keys: over the batch limit. */
    char *big = malloc(16 * 1100);
    strcpy(big, "{\"operation\":\"delete\",\"keys\":[");
    for (int i = 0; i < 1025; i++)
        sprintf(big + strlen(big), "%s\"k%d\"", i ? "," : "", i);
    strcat(big, "]}");
    assert_int_equal(parse("kv_batch", big, "the limit is 1024"), UD_EINVAL);
    free(big);
}

static void test_row_bodies(void **state)
{
    (void)state;
    struct ud_http_body b;
    ud_http_body_init(&b);
    char errmsg[UD_ERRMSG_SIZE];
    struct ud_col *c;
    size_t n;
    const char *ok = "{\"columns\":{\"name\":\"Sm9obiBEb2U=\",\"age\":\"MzA=\"}}";
    assert_int_equal(ud_http_parse_row_put(&b, ok, strlen(ok), &c, &n, errmsg), 0);
    assert_int_equal(n, 2);
    for (size_t i = 0; i < n; i++) {
        if (c[i].name_len == 4) {
            assert_memory_equal(c[i].name, "name", 4);
            assert_memory_equal(c[i].value, "John Doe", 8);
        } else {
            assert_memory_equal(c[i].name, "age", 3);
            assert_memory_equal(c[i].value, "30", 2);
        }
    }
    struct ud_http_row_batch rb;
    const char *batch =
        "{\"operation\":\"put\",\"rows\":[{\"rowKey\":\"user:1\",\"columns\":"
        "{\"name\":\"QWxpY2U=\"}},{\"rowKey\":\"user:2\",\"columns\":{\"x\":\"\"}}]}";
    assert_int_equal(ud_http_parse_row_batch(&b, batch, strlen(batch), &rb, errmsg), 0);
    assert_int_equal(rb.n, 2);
    assert_memory_equal(rb.rows[1].key, "user:2", 6);
    assert_int_equal(rb.rows[0].ncols, 1);
    assert_memory_equal(rb.rows[0].cols[0].value, "Alice", 5);
    const char *del = "{\"operation\":\"delete\",\"rows\":[{\"rowKey\":\"a\"},{\"rowKey\":\"b\","
                      "\"columns\":[\"x\",\"y\"]},{\"rowKey\":\"c\",\"columns\":{\"z\":1}}]}";
    assert_int_equal(ud_http_parse_row_batch(&b, del, strlen(del), &rb, errmsg), 0);
    assert_int_equal(rb.op, UD_OP_DELETE);
    assert_int_equal(rb.rows[0].ncols, 0);
    assert_int_equal(rb.rows[1].ncols, 2);
    assert_memory_equal(rb.rows[1].cols[1].name, "y", 1);
    assert_int_equal(rb.rows[2].ncols, 1);
    ud_http_body_free(&b);

    assert_int_equal(parse("row_put", "{}", "\"columns\" is required"), UD_EINVAL);
    assert_int_equal(parse("row_put", "{\"columns\":{}}", "names no columns"), UD_EINVAL);
    assert_int_equal(parse("row_put", "{\"columns\":[\"a\"]}", "must be an object"), UD_EINVAL);
    assert_int_equal(parse("row_put", "{\"columns\":{\"\":\"YQ==\"}}", "empty column name"),
                     UD_EINVAL);
    assert_int_equal(parse("row_put", "{\"columns\":{\"a\":\"@@@@\"}}",
                           "invalid base64 encoding in field \"columns.a\""),
                     UD_EINVAL);
    assert_int_equal(parse("row_put", "{\"columns\":{\"a\":true}}", "must be a base64 string"),
                     UD_EINVAL);
    assert_int_equal(parse("row_batch", "{\"operation\":\"put\",\"rows\":[{\"columns\":{}}]}",
                           "\"rows[0].rowKey\" is required"),
                     UD_EINVAL);
    assert_int_equal(parse("row_batch", "{\"operation\":\"put\",\"rows\":[{\"rowKey\":\"a\"}]}",
                           "\"rows[0].columns\" is required"),
                     UD_EINVAL);
    assert_int_equal(parse("row_batch",
                           "{\"operation\":\"delete\",\"rows\":[{\"rowKey\":\"a\",\"columns\":5}]}",
                           "must be an array of column names"),
                     UD_EINVAL);
    assert_int_equal(parse("row_batch", "{\"operation\":\"put\",\"rows\":[\"a\"]}",
                           "\"rows[0]\" must be an object"),
                     UD_EINVAL);
}

static void test_txn_and_backup_bodies(void **state)
{
    (void)state;
    char errmsg[UD_ERRMSG_SIZE];
    enum ud_op op;
    enum ud_entry_type t;
    const char *b1 = "{\"operation\":\"update\",\"entryType\":\"lob\"}";
    assert_int_equal(ud_http_parse_txn_begin(b1, strlen(b1), &op, &t, errmsg), 0);
    assert_int_equal(op, UD_OP_UPDATE);
    assert_int_equal(t, UD_ENTRY_LOB);
    assert_int_equal(parse("begin", "{\"operation\":\"put\"}", "\"entryType\" is required"),
                     UD_EINVAL);
    assert_int_equal(parse("begin", "{\"operation\":\"put\",\"entryType\":\"blob\"}",
                           "must be \"kv\", \"row\" or \"lob\""),
                     UD_EINVAL);
    assert_int_equal(parse("begin", "{\"operation\":\"merge\",\"entryType\":\"kv\"}",
                           "\"put\", \"update\" or \"delete\""),
                     UD_EINVAL);

    assert_int_equal(parse("txn_kv", "{\"key\":\"a\",\"value\":\"YQ==\"}", NULL), 0);
    assert_int_equal(parse("txn_kv", "{\"key\":\"a\"}", "\"value\" is required"), UD_EINVAL);
    assert_int_equal(parse("txn_kv_del", "{\"key\":\"a\"}", NULL), 0);
    assert_int_equal(parse("txn_kv", "{\"value\":\"YQ==\"}", "\"key\" is required"), UD_EINVAL);
    assert_int_equal(parse("txn_kv", "{\"key\":1,\"value\":\"YQ==\"}", "must be a string"),
                     UD_EINVAL);
    assert_int_equal(parse("txn_kv", "{\"key\":\"a\",\"value\":\"YQ=\"}",
                           "invalid base64 encoding in field \"value\""),
                     UD_EINVAL);
    assert_int_equal(parse("txn_row", "{\"rowKey\":\"r\",\"columns\":{\"a\":\"YQ==\"}}", NULL), 0);
    assert_int_equal(parse("txn_row", "{\"rowKey\":\"r\"}", "\"columns\" is required"), UD_EINVAL);
    assert_int_equal(parse("txn_row_del", "{\"rowKey\":\"r\"}", NULL), 0);
    assert_int_equal(parse("txn_row_del", "{\"rowKey\":\"r\",\"columns\":[\"a\"]}", NULL), 0);

    struct ud_http_body b;
    ud_http_body_init(&b);
    uint64_t after;
    const char *dir;
    const char *w = "{\"afterSegmentId\":42,\"backupDir\":\"wal/customer-a\"}";
    assert_int_equal(ud_http_parse_wal_backup(&b, w, strlen(w), &after, &dir, errmsg), 0);
    assert_int_equal(after, 42);
    assert_string_equal(dir, "wal/customer-a");
    const char *w0 = "{\"backupDir\":\"x\"}";
    assert_int_equal(ud_http_parse_wal_backup(&b, w0, strlen(w0), &after, &dir, errmsg), 0);
    assert_int_equal(after, 0);
    ud_http_body_free(&b);
    assert_int_equal(parse("wal_backup", "{\"afterSegmentId\":-1,\"backupDir\":\"x\"}",
                           "\"afterSegmentId\" must be an integer"),
                     UD_EINVAL);
    assert_int_equal(parse("wal_backup", "{\"afterSegmentId\":1.5,\"backupDir\":\"x\"}",
                           "\"afterSegmentId\" must be an integer"),
                     UD_EINVAL);
    assert_int_equal(parse("wal_backup", "{\"afterSegmentId\":\"1\",\"backupDir\":\"x\"}",
                           "\"afterSegmentId\" must be an integer"),
                     UD_EINVAL);
    assert_int_equal(parse("wal_backup", "{}", "\"backupDir\" is required"), UD_EINVAL);
    assert_int_equal(parse("btree_backup", "{\"path\":[]}", "\"path\" must be a string"),
                     UD_EINVAL);
}

static void test_lob_position_and_if_match(void **state)
{
    (void)state;
    char errmsg[UD_ERRMSG_SIZE];
    uint64_t at, expected;
    struct ud_txn_info info = {.op = UD_OP_PUT, .entry_type = UD_ENTRY_LOB};
    const uint8_t *k = (const uint8_t *)"file";
    /* Empty transaction: no offset or offset 0 appends at 0. */
    assert_int_equal(ud_writer_http_lob_position(&info, k, 4, UINT64_MAX, 10, 0, NULL, 0, 0, &at,
                                                 &expected, errmsg),
                     0);
    assert_int_equal(at, 0);
    info.bytes = 2048;
    info.lob_key_len = 4;
    memcpy(info.lob_key, "file", 4);
    assert_int_equal(ud_writer_http_lob_position(&info, k, 4, UINT64_MAX, 10, 0, NULL, 0, 0, &at,
                                                 &expected, errmsg),
                     0);
    assert_int_equal(at, 2048);
    assert_int_equal(
        ud_writer_http_lob_position(&info, k, 4, 2048, 10, 0, NULL, 0, 0, &at, &expected, errmsg),
        0);
    /* A retry of the last chunk and of the first: already held. With the whole history known, a
     * retry must repeat a chunk exactly; without it, any held range is taken as one. */
    struct ud_writer_http_chunk hist[2] = {{0, 1024, 0}, {1024, 1024, 0}};
    assert_int_equal(
        ud_writer_http_lob_position(&info, k, 4, 1024, 1024, 0, hist, 2, 1, &at, &expected, errmsg),
        1);
    assert_int_equal(
        ud_writer_http_lob_position(&info, k, 4, 0, 1024, 0, hist, 2, 1, &at, &expected, errmsg),
        1);
    assert_int_equal(
        ud_writer_http_lob_position(&info, k, 4, 5, 10, 0, hist, 2, 1, &at, &expected, errmsg),
        UD_ECONFLICT);
    assert_int_equal(
        ud_writer_http_lob_position(&info, k, 4, 5, 10, 0, NULL, 0, 0, &at, &expected, errmsg), 1);
    /* Past the end, or overlapping it. */
    assert_int_equal(
        ud_writer_http_lob_position(&info, k, 4, 4096, 10, 0, hist, 2, 1, &at, &expected, errmsg),
        UD_ECONFLICT);
    assert_non_null(strstr(errmsg, "expected offset is 2048"));
    assert_int_equal(expected, 2048);
    /* A retry of a listed chunk with other bytes: refused, not taken as the retry. */
    assert_int_equal(
        ud_writer_http_lob_position(&info, k, 4, 1024, 1024, 7, hist, 2, 1, &at, &expected, errmsg),
        UD_ECONFLICT);
    assert_non_null(strstr(errmsg, "differs from the chunk appended there"));
    assert_int_equal(expected, UINT64_MAX);
    assert_int_equal(
        ud_writer_http_lob_position(&info, k, 4, 2000, 100, 0, NULL, 0, 0, &at, &expected, errmsg),
        UD_ECONFLICT);
    /* Another key. */
    assert_int_equal(ud_writer_http_lob_position(&info, (const uint8_t *)"other", 5, 2048, 1, 0,
                                                 NULL, 0, 0, &at, &expected, errmsg),
                     UD_ECONFLICT);
    assert_non_null(strstr(errmsg, "exactly one key"));
    assert_int_equal(expected, UINT64_MAX);

    uint64_t lsn;
    int any;
    assert_int_equal(ud_writer_http_if_match_parse(S("12"), &lsn, &any), 0);
    assert_int_equal(lsn, 12);
    assert_int_equal(any, 0);
    assert_int_equal(ud_writer_http_if_match_parse(S(" \"7\" "), &lsn, &any), 0);
    assert_int_equal(lsn, 7);
    assert_int_equal(ud_writer_http_if_match_parse(S("*"), &lsn, &any), 0);
    assert_int_equal(any, 1);
    assert_int_equal(ud_writer_http_if_match_parse(S("0"), &lsn, &any), 0);
    assert_int_equal(lsn, 0);
    const char *bad[] = {"", "\"\"", "abc", "-1", "1.5", "W/\"1\"", "99999999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(ud_writer_http_if_match_parse(S(bad[i]), &lsn, &any), UD_EINVAL);
}

static void test_metrics(void **state)
{
    (void)state;
    struct ud_http_metrics *m = malloc(sizeof *m);
    ud_http_metrics_init(m);
    size_t put = ud_http_metrics_route(m, "kv_put");
    assert_int_equal(ud_http_metrics_route(m, "kv_put"), put);
    ud_http_metrics_observe(m, put, 200, 50000);       /* 50 us */
    ud_http_metrics_observe(m, put, 200, 3000000);     /* 3 ms */
    ud_http_metrics_observe(m, put, 404, 20000000000); /* 20 s: +Inf */
    struct ud_jbuf j;
    ud_jbuf_init(&j);
    ud_http_metrics_render(m, &j);
    assert_non_null(strstr(j.p, "unison_http_requests_total{route=\"kv_put\",code=\"200\"} 2\n"));
    assert_non_null(strstr(j.p, "unison_http_requests_total{route=\"kv_put\",code=\"404\"} 1\n"));
    assert_non_null(strstr(
        j.p, "unison_http_request_duration_seconds_bucket{route=\"kv_put\",le=\"0.0001\"} 1\n"));
    assert_non_null(strstr(
        j.p, "unison_http_request_duration_seconds_bucket{route=\"kv_put\",le=\"0.005\"} 2\n"));
    assert_non_null(
        strstr(j.p, "unison_http_request_duration_seconds_bucket{route=\"kv_put\",le=\"10\"} 2\n"));
    assert_non_null(strstr(
        j.p, "unison_http_request_duration_seconds_bucket{route=\"kv_put\",le=\"+Inf\"} 3\n"));
    assert_non_null(
        strstr(j.p, "unison_http_request_duration_seconds_count{route=\"kv_put\"} 3\n"));
    ud_jbuf_free(&j);
    free(m);
}

/* --- byte ranges ------------------------------------------------------------------------------ */

static void expect_part(const char *v, uint64_t size, uint64_t first, uint64_t last)
{
    uint64_t f = 7777, l = 7777;
    enum ud_http_range_answer a = ud_http_range_eval(v, strlen(v), size, &f, &l);
    if (a != UD_HTTP_RANGE_PARTIAL || f != first || l != last)
        print_message("Range %s of %llu bytes: answer %d, %llu-%llu\n", v, (unsigned long long)size,
                      (int)a, (unsigned long long)f, (unsigned long long)l);
    assert_int_equal(a, UD_HTTP_RANGE_PARTIAL);
    assert_true(f == first && l == last);
}

static void expect_answer(const char *v, uint64_t size, enum ud_http_range_answer want)
{
    uint64_t f = 7777, l = 7777;
    enum ud_http_range_answer a = ud_http_range_eval(v, strlen(v), size, &f, &l);
    if (a != want)
        print_message("Range \"%s\" of %llu bytes: answer %d, not %d\n", v,
                      (unsigned long long)size, (int)a, (int)want);
    assert_int_equal(a, want);
    assert_true(f == 7777 && l == 7777); /* untouched unless partial */
}

#define WHOLE  UD_HTTP_RANGE_WHOLE
#define UNSAT  UD_HTTP_RANGE_UNSATISFIABLE
#define BIG_20 "99999999999999999999" /* > 2^64 - 1 = 18446744073709551615 */

static void test_range_forms(void **state)
{
    (void)state;
    /* The three forms, inside and at the edges of a 100-byte object. */
    expect_part("bytes=0-0", 100, 0, 0);
    expect_part("bytes=0-99", 100, 0, 99);
    expect_part("bytes=10-19", 100, 10, 19);
    expect_part("bytes=99-99", 100, 99, 99);
    expect_part("bytes=5-5", 100, 5, 5);
    expect_part("bytes=10-", 100, 10, 99);
    expect_part("bytes=0-", 100, 0, 99);
    expect_part("bytes=99-", 100, 99, 99);
    expect_part("bytes=-1", 100, 99, 99);
    expect_part("bytes=-30", 100, 70, 99);
    expect_part("bytes=-100", 100, 0, 99);
    /* The end past the object is clamped; a suffix longer than the object is all of it. */
    expect_part("bytes=50-100", 100, 50, 99);
    expect_part("bytes=50-1000000", 100, 50, 99);
    expect_part("bytes=-101", 100, 0, 99);
    expect_part("bytes=-5000", 1, 0, 0);
    expect_part("bytes=0-0", 1, 0, 0);
    /* The unit in any case; leading zeros; surrounding spaces and tabs of the field value. */
    expect_part("BYTES=1-2", 100, 1, 2);
    expect_part("Bytes=1-2", 100, 1, 2);
    expect_part("bytes=007-0009", 100, 7, 9);
    expect_part("bytes=000-000", 100, 0, 0);
    expect_part("bytes=-0005", 100, 95, 99);
    expect_part("  bytes=1-2 \t", 100, 1, 2);
    /* Empty list elements around the one range, with spaces around the commas. */
    expect_part("bytes=,1-2", 100, 1, 2);
    expect_part("bytes=1-2,", 100, 1, 2);
    expect_part("bytes= , 1-2 ,, ", 100, 1, 2);
    expect_part("bytes=,\t-3", 100, 97, 99);
    /* Huge values: exact past 2^64 - 1 (last and suffix clamp; a first past the end is 416). */
    expect_part("bytes=0-18446744073709551615", 100, 0, 99);
    expect_part("bytes=0-" BIG_20 BIG_20, 100, 0, 99);
    expect_part("bytes=-" BIG_20, 100, 0, 99);
    expect_part("bytes="
                "000000000000000000000000000000005-" BIG_20,
                100, 5, 99);
    expect_part("bytes=18446744073709551614-", UINT64_MAX, UINT64_MAX - 1, UINT64_MAX - 1);
    expect_part("bytes=-1", UINT64_MAX, UINT64_MAX - 1, UINT64_MAX - 1);
    expect_part("bytes=0-", UINT64_MAX, 0, UINT64_MAX - 1);
}

static void test_range_unsatisfiable(void **state)
{
    (void)state;
    expect_answer("bytes=100-", 100, UNSAT);
    expect_answer("bytes=100-200", 100, UNSAT);
    expect_answer("bytes=1000-", 100, UNSAT);
    expect_answer("bytes=-0", 100, UNSAT);
    expect_answer("bytes=-000", 100, UNSAT);
    expect_answer("bytes=18446744073709551615-", 100, UNSAT);
    expect_answer("bytes=18446744073709551616-", 100, UNSAT); /* 2^64 */
    expect_answer("bytes=" BIG_20 "-", 100, UNSAT);
    expect_answer("bytes=" BIG_20 "-" BIG_20, UINT64_MAX, UNSAT);
    expect_answer("bytes=18446744073709551615-", UINT64_MAX, UNSAT);
    /* An empty object has no first byte; a non-zero suffix of it is satisfiable (RFC 9110
     * section 14.1.1) but has no byte to name in a 206: the whole, empty object. */
    expect_answer("bytes=0-", 0, UNSAT);
    expect_answer("bytes=0-0", 0, UNSAT);
    expect_answer("bytes=-0", 0, UNSAT);
    expect_answer("bytes=-5", 0, WHOLE);
}

static void test_range_ignored(void **state)
{
    (void)state;
    /* Several ranges: no multipart/byteranges, the whole object. */
    expect_answer("bytes=0-1,5-6", 100, WHOLE);
    expect_answer("bytes=0-1, 5-6", 100, WHOLE);
    expect_answer("bytes=0-1,0-1", 100, WHOLE);
    expect_answer("bytes=-1,-2", 100, WHOLE);
    expect_answer("bytes=0-1,200-", 100, WHOLE);
    /* Other units and no unit. */
    expect_answer("items=0-1", 100, WHOLE);
    expect_answer("byte=0-1", 100, WHOLE);
    expect_answer("bytesx=0-1", 100, WHOLE);
    expect_answer("0-1", 100, WHOLE);
    expect_answer("=0-1", 100, WHOLE);
    expect_answer("bytes", 100, WHOLE);
    expect_answer("bytes 0-1/100", 100, WHOLE); /* a Content-Range, not a Range */
    /* last < first: an invalid range-spec (exactly, past 2^64 too), on an empty object as well. */
    expect_answer("bytes=5-3", 100, WHOLE);
    expect_answer("bytes=1-0", 100, WHOLE);
    expect_answer("bytes=500-300", 100, WHOLE);
    expect_answer("bytes=5-3", 0, WHOLE);
    expect_answer("bytes=" BIG_20 "-5", 100, WHOLE);
    expect_answer("bytes=" BIG_20 "1-" BIG_20, UINT64_MAX, WHOLE);
    expect_answer("bytes=99999999999999999999-99999999999999999998", UINT64_MAX, WHOLE);
    /* Not the grammar. */
    expect_answer("", 100, WHOLE);
    expect_answer("   ", 100, WHOLE);
    expect_answer("bytes=", 100, WHOLE);
    expect_answer("bytes=,", 100, WHOLE);
    expect_answer("bytes= ,, ", 100, WHOLE);
    expect_answer("bytes=-", 100, WHOLE);
    expect_answer("bytes=--5", 100, WHOLE);
    expect_answer("bytes=-5-", 100, WHOLE);
    expect_answer("bytes=-5-6", 100, WHOLE);
    expect_answer("bytes=5", 100, WHOLE);
    expect_answer("bytes=5--6", 100, WHOLE);
    expect_answer("bytes=+5-", 100, WHOLE);
    expect_answer("bytes=-+5", 100, WHOLE);
    expect_answer("bytes=0x10-", 100, WHOLE);
    expect_answer("bytes=1-2x", 100, WHOLE);
    expect_answer("bytes=1.5-2", 100, WHOLE);
    expect_answer("bytes=1-2;", 100, WHOLE);
    expect_answer("bytes = 0-5", 100, WHOLE);
    expect_answer("bytes =0-5", 100, WHOLE);
    expect_answer("bytes= 0-5", 100, WHOLE);
    expect_answer("bytes=0 -5", 100, WHOLE);
    expect_answer("bytes=0- 5", 100, WHOLE);
    expect_answer("bytes=0 - 5", 100, WHOLE);
    expect_answer("bytes=1-2 3", 100, WHOLE);
    expect_answer("bytes=1-2 ,x", 100, WHOLE);
    /* A NUL inside the value ends nothing: the bytes after it count. */
    assert_int_equal(ud_http_range_eval("bytes=1-2\0-3", 12, 100, NULL, NULL), WHOLE);
}

static void test_if_range(void **state)
{
    (void)state;
    const char *etag = "\"42\"";
    assert_true(ud_http_if_range_holds(S("\"42\""), etag));
    assert_true(ud_http_if_range_holds(S(" \"42\"\t"), etag));
    assert_false(ud_http_if_range_holds(S("\"43\""), etag));
    assert_false(ud_http_if_range_holds(S("\"420\""), etag));
    assert_false(ud_http_if_range_holds(S("\"4\""), etag));
    assert_false(ud_http_if_range_holds(S("42"), etag));
    assert_false(ud_http_if_range_holds(S("W/\"42\""), etag));
    assert_false(ud_http_if_range_holds(S("w/\"42\""), etag));
    assert_false(ud_http_if_range_holds(S("\"42\", \"43\""), etag));
    assert_false(ud_http_if_range_holds(S("*"), etag));
    assert_false(ud_http_if_range_holds(S(""), etag));
    assert_false(ud_http_if_range_holds(S("Sun, 22 Nov 2026 16:00:00 GMT"), etag));
    /* Only a strong tag is ever compared. */
    assert_false(ud_http_if_range_holds(S("42"), "42"));
    assert_false(ud_http_if_range_holds(S("W/\"42\""), "W/\"42\""));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pct_decode),
        cmocka_unit_test(test_routes),
        cmocka_unit_test(test_query),
        cmocka_unit_test(test_columns_split),
        cmocka_unit_test(test_backup_paths),
        cmocka_unit_test(test_base64),
        cmocka_unit_test(test_base64_every_byte_in_blocks),
        cmocka_unit_test(test_base64_vector_path),
        cmocka_unit_test(test_json_out),
        cmocka_unit_test(test_body_limit),
        cmocka_unit_test(test_indoubt_message),
        cmocka_unit_test(test_malformed_everywhere),
        cmocka_unit_test(test_kv_bodies),
        cmocka_unit_test(test_row_bodies),
        cmocka_unit_test(test_txn_and_backup_bodies),
        cmocka_unit_test(test_lob_position_and_if_match),
        cmocka_unit_test(test_metrics),
        cmocka_unit_test(test_range_forms),
        cmocka_unit_test(test_range_unsatisfiable),
        cmocka_unit_test(test_range_ignored),
        cmocka_unit_test(test_if_range),
    };
    return cmocka_run_group_tests_name("http", tests, NULL, NULL);
}
