/* RESP parser tests: every command shape split at every byte, pipelines, limits, malformed input,
 * inline commands. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/resp/resp.h"

/* A parsed command, copied out of the parser's views. */
struct cmd {
    size_t argc;
    char *argv[16];
    size_t len[16];
};

struct result {
    struct cmd cmds[1100];
    size_t n;
    int protocol; /* a protocol error was reported */
    char errmsg[128];
};

static void result_free(struct result *r)
{
    for (size_t i = 0; i < r->n; i++)
        for (size_t k = 0; k < r->cmds[i].argc; k++)
            free(r->cmds[i].argv[k]);
    r->n = 0;
}

/*
 * Feeds stream to a parser in the pieces given by cuts (offsets, ascending), like a connection:
 * the received bytes live in a buffer that is reallocated (so it moves) on every arrival, and
 * consumed bytes are dropped from its front.
 */
static void feed(struct ud_resp_parser *p, const uint8_t *stream, size_t len, const size_t *cuts,
                 size_t ncuts, struct result *out)
{
    uint8_t *buf = NULL;
    size_t have = 0;
    size_t at = 0;
    memset(out, 0, sizeof *out);
    for (size_t piece = 0; piece <= ncuts && !out->protocol; piece++) {
        size_t end = piece < ncuts ? cuts[piece] : len;
        size_t n = end - at;
        uint8_t *nb = malloc(have + n + 1); /* a new address every time */
        assert_non_null(nb);
        if (have)
            memcpy(nb, buf, have);
        memcpy(nb + have, stream + at, n);
        free(buf);
        buf = nb;
        have += n;
        at = end;
        for (;;) {
            size_t used = 0;
            int rc = ud_resp_parse(p, buf, have, &used);
            assert_true(used <= have);
            if (rc == UD_RESP_PROTOCOL) {
                out->protocol = 1;
                snprintf(out->errmsg, sizeof out->errmsg, "%s", p->errmsg);
                break;
            }
            if (rc == UD_RESP_COMMAND) {
                assert_true(out->n < sizeof out->cmds / sizeof out->cmds[0]);
                struct cmd *c = &out->cmds[out->n++];
                c->argc = p->argc;
                assert_true(p->argc <= 16);
                for (size_t k = 0; k < p->argc; k++) {
                    c->argv[k] = malloc(p->argvlen[k] + 1);
                    memcpy(c->argv[k], p->argv[k], p->argvlen[k]);
                    c->argv[k][p->argvlen[k]] = '\0';
                    c->len[k] = p->argvlen[k];
                }
            }
            memmove(buf, buf + used, have - used);
            have -= used;
            if (rc == UD_RESP_NEED_MORE)
                break;
        }
    }
    free(buf);
}

static void feed_whole(struct ud_resp_parser *p, const void *s, size_t len, struct result *out)
{
    feed(p, s, len, NULL, 0, out);
}

static void assert_cmd(const struct cmd *c, size_t argc, ...)
{
    va_list ap;
    assert_int_equal(c->argc, argc);
    va_start(ap, argc);
    for (size_t k = 0; k < argc; k++) {
        const char *want = va_arg(ap, const char *);
        size_t wlen = va_arg(ap, size_t);
        assert_int_equal(c->len[k], wlen);
        assert_memory_equal(c->argv[k], want, wlen);
    }
    va_end(ap);
}

#define A(s) s, sizeof(s) - 1

/* The shapes a client sends; their concatenation is cut at every byte. */
static const char stream_all[] =
    "*1\r\n$4\r\nPING\r\n"                                /* multibulk */
    "*3\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$4\r\nv\0\r\n\r\n" /* binary key and value with CRLF */
    "*2\r\n$3\r\nGET\r\n$0\r\n\r\n"                       /* an empty bulk string */
    "*0\r\n"                                              /* empty commands are skipped */
    "*-1\r\n"
    "GET a\r\n"                              /* inline */
    "\r\n"                                   /* blank line: skipped */
    "  set \"x y\" 'it''s' \"\\x41\\n\"\r\n" /* quotes, escapes (the '' is invalid: see */
    ;                                        /* stream_ok) */

static const char stream_ok[] = "*1\r\n$4\r\nPING\r\n"
                                "*3\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$4\r\nv\0\r\n\r\n"
                                "*2\r\n$3\r\nGET\r\n$0\r\n\r\n"
                                "*0\r\n"
                                "*-1\r\n"
                                "GET a\r\n"
                                "\r\n"
                                "  set \"x y\" 'it\\'s' \"\\x41\\n\" \"\"\n"
                                "*2\r\n$4\r\nECHO\r\n$10\r\n0123456789\r\n";

static void check_ok_stream(const struct result *r)
{
    assert_false(r->protocol);
    assert_int_equal(r->n, 6);
    assert_cmd(&r->cmds[0], 1, A("PING"));
    assert_cmd(&r->cmds[1], 3, A("SET"), A("k\r\n"), A("v\0\r\n"));
    assert_cmd(&r->cmds[2], 2, A("GET"), A(""));
    assert_cmd(&r->cmds[3], 2, A("GET"), A("a"));
    assert_cmd(&r->cmds[4], 5, A("set"), A("x y"), A("it's"), A("A\n"), A(""));
    assert_cmd(&r->cmds[5], 2, A("ECHO"), A("0123456789"));
}

static void test_split_everywhere(void **state)
{
    (void)state;
    struct ud_resp_parser p;
    struct result *r = calloc(1, sizeof *r);
    size_t len = sizeof stream_ok - 1;
    ud_resp_parser_init(&p);

    feed_whole(&p, stream_ok, len, r);
    check_ok_stream(r);
    result_free(r);

    /* One cut at every position. */
    for (size_t cut = 0; cut <= len; cut++) {
        feed(&p, (const uint8_t *)stream_ok, len, &cut, 1, r);
        check_ok_stream(r);
        result_free(r);
    }
    /* Two cuts at every pair of positions. */
    for (size_t a = 1; a < len; a += 3) {
        for (size_t b = a; b < len; b++) {
            size_t cuts[2] = {a, b};
            feed(&p, (const uint8_t *)stream_ok, len, cuts, 2, r);
            check_ok_stream(r);
            result_free(r);
        }
    }
    /* One byte at a time. */
    size_t *cuts = malloc(len * sizeof *cuts);
    for (size_t i = 0; i < len; i++)
        cuts[i] = i;
    feed(&p, (const uint8_t *)stream_ok, len, cuts, len, r);
    check_ok_stream(r);
    result_free(r);
    free(cuts);

    /* The malformed single quotes are found whatever the cut. */
    size_t alen = sizeof stream_all - 1;
    for (size_t cut = 0; cut <= alen; cut++) {
        feed(&p, (const uint8_t *)stream_all, alen, &cut, 1, r);
        assert_true(r->protocol);
        assert_string_equal(r->errmsg, "ERR Protocol error: unbalanced quotes in request");
        assert_int_equal(r->n, 4);
        result_free(r);
        ud_resp_parser_reset(&p);
    }
    ud_resp_parser_free(&p);
    free(r);
}

static void test_pipeline_1000(void **state)
{
    (void)state;
    struct ud_resp_parser p;
    struct result *r = calloc(1, sizeof *r);
    char *s = malloc(1000 * 64);
    size_t len = 0;
    for (int i = 0; i < 1000; i++) {
        char key[16];
        int kl = snprintf(key, sizeof key, "key:%d", i);
        if (i % 2)
            len += (size_t)sprintf(s + len, "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$1\r\nv\r\n", kl, key);
        else
            len += (size_t)sprintf(s + len, "GET %s\r\n", key);
    }
    ud_resp_parser_init(&p);
    feed_whole(&p, s, len, r);
    assert_false(r->protocol);
    assert_int_equal(r->n, 1000);
    for (int i = 0; i < 1000; i++) {
        char key[16];
        snprintf(key, sizeof key, "key:%d", i);
        assert_string_equal(r->cmds[i].argv[0], i % 2 ? "SET" : "GET");
        assert_string_equal(r->cmds[i].argv[1], key);
    }
    result_free(r);
    /* The same pipeline arriving in 1460-byte segments. */
    size_t cuts[200];
    size_t nc = 0;
    for (size_t at = 1460; at < len && nc < 200; at += 1460)
        cuts[nc++] = at;
    feed(&p, (const uint8_t *)s, len, cuts, nc, r);
    assert_int_equal(r->n, 1000);
    assert_string_equal(r->cmds[999].argv[1], "key:999");
    result_free(r);
    ud_resp_parser_free(&p);
    free(s);
    free(r);
}

static void expect_error(struct ud_resp_parser *p, const void *s, size_t len, const char *msg)
{
    struct result *r = calloc(1, sizeof *r);
    feed_whole(p, s, len, r);
    assert_true(r->protocol);
    assert_string_equal(r->errmsg, msg);
    result_free(r);
    ud_resp_parser_reset(p);
    /* Cut anywhere, the same error. */
    for (size_t cut = 0; cut <= len; cut++) {
        feed(p, s, len, &cut, 1, r);
        assert_true(r->protocol);
        assert_string_equal(r->errmsg, msg);
        result_free(r);
        ud_resp_parser_reset(p);
    }
    free(r);
}

#define E(s) s, sizeof(s) - 1

static void test_malformed(void **state)
{
    (void)state;
    struct ud_resp_parser p;
    ud_resp_parser_init(&p);
    expect_error(&p, E("*2\r\nfoo\r\n"), "ERR Protocol error: expected '$', got 'f'");
    expect_error(&p, E("*1\r\n\x01"), "ERR Protocol error: expected '$', got '\\x01'");
    expect_error(&p, E("*x\r\n"), "ERR Protocol error: invalid multibulk length");
    expect_error(&p, E("*+1\r\n"), "ERR Protocol error: invalid multibulk length");
    expect_error(&p, E("*01\r\n"), "ERR Protocol error: invalid multibulk length");
    expect_error(&p, E("*1 \r\n"), "ERR Protocol error: invalid multibulk length");
    expect_error(&p, E("*\r\n"), "ERR Protocol error: invalid multibulk length");
    expect_error(&p, E("*1\rX"), "ERR Protocol error: invalid multibulk length");
    expect_error(&p, E("*99999999999999999999\r\n"),
                 "ERR Protocol error: invalid multibulk length");
    expect_error(&p, E("*1\r\n$x\r\n"), "ERR Protocol error: invalid bulk length");
    expect_error(&p, E("*1\r\n$-1\r\n"), "ERR Protocol error: invalid bulk length");
    expect_error(&p, E("*1\r\n$\r\n"), "ERR Protocol error: invalid bulk length");
    expect_error(&p, E("*1\r\n$3\r\nfooXY"), "ERR Protocol error: expected CRLF after bulk string");
    expect_error(&p, E("*1\r\n$3\r\nfoo\rX"),
                 "ERR Protocol error: expected CRLF after bulk string");
    expect_error(&p, E("set \"a\"b\r\n"), "ERR Protocol error: unbalanced quotes in request");
    expect_error(&p, E("set 'a\r\n"), "ERR Protocol error: unbalanced quotes in request");
    expect_error(&p, E("set \"a\\\"\r\n"), "ERR Protocol error: unbalanced quotes in request");
    /* After a good command, the bad one still reports and the good one was parsed. */
    struct result *r = calloc(1, sizeof *r);
    feed_whole(&p, E("PING\r\n*1\r\n!"), r);
    assert_int_equal(r->n, 1);
    assert_true(r->protocol);
    assert_string_equal(r->errmsg, "ERR Protocol error: expected '$', got '!'");
    result_free(r);
    free(r);
    ud_resp_parser_free(&p);
}

static void test_limits(void **state)
{
    (void)state;
    struct ud_resp_parser p;
    char big[128];
    ud_resp_parser_init(&p);
    assert_int_equal(p.max_bulk, 4u << 20);
    assert_int_equal(p.max_args, 1u << 20);
    assert_int_equal(p.max_inline, 64u << 10);

    /* Redis's own limits: bulk length, element count. */
    snprintf(big, sizeof big, "*1\r\n$%u\r\n", (4u << 20) + 1);
    expect_error(&p, big, strlen(big),
                 "ERR Protocol error: invalid bulk length: 4194305 bytes, one argument is at most "
                 "4194304");
    snprintf(big, sizeof big, "*%u\r\n", (1u << 20) + 1);
    expect_error(&p, big, strlen(big), "ERR Protocol error: invalid multibulk length");

    /* A bulk of exactly the limit is accepted (lowered limits keep the test small). */
    p.max_bulk = 10;
    struct result *r = calloc(1, sizeof *r);
    feed_whole(&p, E("*1\r\n$10\r\n0123456789\r\n"), r);
    assert_false(r->protocol);
    assert_int_equal(r->n, 1);
    result_free(r);
    expect_error(&p, E("*1\r\n$11\r\n01234567890\r\n"),
                 "ERR Protocol error: invalid bulk length: 11 bytes, one argument is at most 10");

    /* Inline lines and header lines without an end. */
    size_t n = (64u << 10) + 10;
    char *line = malloc(n);
    memset(line, 'a', n);
    feed_whole(&p, line, n, r);
    assert_true(r->protocol);
    assert_string_equal(r->errmsg, "ERR Protocol error: too big inline request");
    ud_resp_parser_reset(&p);
    line[0] = '*';
    feed_whole(&p, line, n, r);
    assert_string_equal(r->errmsg, "ERR Protocol error: too big mbulk count string");
    ud_resp_parser_reset(&p);
    memcpy(line, "*1\r\n$", 5);
    feed_whole(&p, line, n, r);
    assert_string_equal(r->errmsg, "ERR Protocol error: too big bulk count string");
    ud_resp_parser_reset(&p);
    /* Just under the inline limit, still waiting for its end. */
    memset(line, 'a', n);
    feed_whole(&p, line, (64u << 10) - 1, r);
    assert_false(r->protocol);
    assert_int_equal(r->n, 0);
    ud_resp_parser_reset(&p);
    free(line);

    /* The whole request is bounded too. */
    p.max_bulk = 100;
    p.max_request = 64;
    feed_whole(&p, E("*2\r\n$30\r\n012345678901234567890123456789\r\n$30\r\n"), r);
    assert_true(r->protocol);
    assert_string_equal(r->errmsg, "ERR Protocol error: request is larger than 64 bytes");
    ud_resp_parser_free(&p);
    free(r);
}

static void test_wants(void **state)
{
    (void)state;
    struct ud_resp_parser p;
    size_t used;
    ud_resp_parser_init(&p);
    const char *s = "*2\r\n$3\r\nSET\r\n$1000\r\nabc";
    assert_int_equal(ud_resp_parse(&p, (const uint8_t *)s, strlen(s), &used), UD_RESP_NEED_MORE);
    assert_int_equal(used, 0);
    /* The bulk starts at offset 20 and needs 1000 + CRLF. */
    assert_int_equal(ud_resp_parser_wants(&p), 20 + 1002);
    ud_resp_parser_reset(&p);
    /* Skipped empty commands are consumed even when the next one is incomplete. */
    s = "*0\r\n\r\n*1\r\n$4\r\nPI";
    assert_int_equal(ud_resp_parse(&p, (const uint8_t *)s, strlen(s), &used), UD_RESP_NEED_MORE);
    assert_int_equal(used, 6);
    ud_resp_parser_free(&p);
}

static void test_inline(void **state)
{
    (void)state;
    struct ud_resp_parser p;
    struct result *r = calloc(1, sizeof *r);
    ud_resp_parser_init(&p);
    feed_whole(&p, E("\t SET  a\t b  \n"), r);
    assert_int_equal(r->n, 1);
    assert_cmd(&r->cmds[0], 3, A("SET"), A("a"), A("b"));
    result_free(r);
    feed_whole(&p, E("echo \"\\t\\r\\b\\a\\\\\\\"\\q\\xzz\\x4a\" '\\n'\r\n"), r);
    assert_int_equal(r->n, 1);
    assert_cmd(&r->cmds[0], 3, A("echo"), A("\t\r\b\a\\\"qxzzJ"), A("\\n"));
    result_free(r);
    /* NUL separates arguments outside quotes and is kept inside them. */
    feed_whole(&p, "a\0b \"c\0d\"\n", 10, r);
    assert_int_equal(r->n, 1);
    assert_cmd(&r->cmds[0], 3, A("a"), A("b"), "c\0d", (size_t)3);
    result_free(r);
    /* A line of spaces is an empty command: skipped. */
    feed_whole(&p, E("   \r\nPING\r\n"), r);
    assert_int_equal(r->n, 1);
    assert_cmd(&r->cmds[0], 1, A("PING"));
    result_free(r);
    ud_resp_parser_free(&p);
    free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_everywhere),
        cmocka_unit_test(test_pipeline_1000),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_wants),
        cmocka_unit_test(test_inline),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
