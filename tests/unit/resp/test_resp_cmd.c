/* RESP command tests against real engine namespaces in a temp dir: connection and server commands,
 * reads of strings and hashes, SCAN, SELECT, limits and errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/clock.h"
#include "core/resp/resp_cmd.h"
#include "core/resp/resp_int.h"
#include "tests/lib/testutil.h"

struct env {
    char *root;
    struct ud_registry *reg;
    struct ud_resp_ctx *ctx;
    struct ud_resp_session s;
    struct ud_resp_outq q;
    char reply[1 << 16];
    size_t reply_len;
};

static struct ud_engine_options defaults(void)
{
    struct ud_engine_options o;
    memset(&o, 0, sizeof o);
    o.sync_mode = UD_WAL_SYNC_NONE;
    o.segment_size = 1u << 20;
    o.map_size = 16u << 20;
    return o;
}

static int setup(void **state)
{
    struct env *e = calloc(1, sizeof *e);
    char errmsg[UD_ERRMSG_SIZE];
    struct ud_engine_options d = defaults();
    e->root = ud_test_tmpdir("resp-cmd");
    assert_int_equal(ud_registry_open(e->root, &d, &e->reg, errmsg), 0);
    assert_int_equal(ud_registry_create(e->reg, "default", errmsg), 0);
    assert_int_equal(ud_registry_create(e->reg, "other", errmsg), 0);
    assert_int_equal(ud_registry_create(e->reg, "123", errmsg), 0);
    struct ud_resp_ctx_options o = {
        .registry = e->reg,
        .default_ns = "default",
        .role = "writer",
        .port = 6380,
        .max_clients = 100,
        .idle_timeout_s = 300,
    };
    assert_int_equal(ud_resp_ctx_new(&o, &e->ctx, errmsg), 0);
    ud_resp_session_init(e->ctx, &e->s);
    ud_resp_outq_init(&e->q);
    *state = e;
    return 0;
}

static int teardown(void **state)
{
    struct env *e = *state;
    ud_resp_outq_detach(&e->q);
    ud_resp_ctx_free(e->ctx);
    ud_registry_close(e->reg);
    ud_test_rmtree(e->root);
    free(e->root);
    free(e);
    return 0;
}

/* Runs one command given as NULL-terminated C strings; returns its reply (NUL-terminated copy). */
static const char *runv(struct env *e, size_t argc, const char *const *argv, const size_t *lens)
{
    int rc = ud_resp_exec(e->ctx, &e->s, &e->q, argc, (const uint8_t *const *)argv, lens);
    assert_int_equal(rc, UD_RESP_EXEC_DONE);
    assert_true(e->q.ready.len < sizeof e->reply);
    if (e->q.ready.len > 0)
        memcpy(e->reply, e->q.ready.data, e->q.ready.len);
    e->reply_len = e->q.ready.len;
    e->reply[e->reply_len] = '\0';
    e->q.ready.len = 0;
    return e->reply;
}

static const char *run(struct env *e, ...)
{
    const char *argv[64];
    size_t lens[64];
    size_t argc = 0;
    va_list ap;
    va_start(ap, e);
    const char *a;
    while ((a = va_arg(ap, const char *)) != NULL) {
        argv[argc] = a;
        lens[argc] = strlen(a);
        argc++;
    }
    va_end(ap);
    return runv(e, argc, argv, lens);
}

static struct ud_ns *ns_of(struct env *e, const char *name)
{
    struct ud_ns *ns;
    assert_int_equal(ud_registry_acquire(e->reg, name, &ns), 0);
    ud_registry_release(e->reg, ns); /* the registry keeps it open */
    return ns;
}

static void put(struct env *e, const char *nsname, const char *k, const char *v)
{
    char errmsg[UD_ERRMSG_SIZE];
    assert_int_equal(ud_ns_kv_put(ns_of(e, nsname), k, strlen(k), v, strlen(v), NULL, errmsg), 0);
}

static void hput(struct env *e, const char *row, const char *f, const char *v)
{
    char errmsg[UD_ERRMSG_SIZE];
    struct ud_col col = {(const uint8_t *)f, strlen(f), (const uint8_t *)v, strlen(v)};
    struct ud_row r = {(const uint8_t *)row, strlen(row), &col, 1};
    assert_int_equal(ud_ns_row_put(ns_of(e, "default"), &r, NULL, errmsg), 0);
}

static void test_connection(void **state)
{
    struct env *e = *state;
    assert_string_equal(run(e, "PING", NULL), "+PONG\r\n");
    assert_string_equal(run(e, "ping", "hi", NULL), "$2\r\nhi\r\n");
    assert_string_equal(run(e, "PING", "a", "b", NULL),
                        "-ERR wrong number of arguments for 'ping' command\r\n");
    assert_string_equal(run(e, "ECHO", "x y", NULL), "$3\r\nx y\r\n");
    assert_string_equal(run(e, "echo", NULL),
                        "-ERR wrong number of arguments for 'echo' command\r\n");
    assert_string_equal(run(e, "NOPE", "a", "b", NULL),
                        "-ERR unknown command 'NOPE', with args beginning with: 'a' 'b' \r\n");
    /* Redis's text byte for byte: CR and LF become spaces, an argument ends at a NUL byte. */
    assert_string_equal(run(e, "x\r\ny", NULL),
                        "-ERR unknown command 'x  y', with args beginning with: \r\n");
    assert_string_equal(run(e, "HELLO", "3", NULL),
                        "-NOPROTO sorry, this protocol version is not supported: only RESP2 "
                        "(HELLO 2) is served, RESP3 is not\r\n");
    assert_string_equal(run(e, "HELLO", "4", NULL), "-NOPROTO unsupported protocol version\r\n");
    assert_string_equal(run(e, "HELLO", "1", NULL), "-NOPROTO unsupported protocol version\r\n");
    assert_string_equal(run(e, "HELLO", "02", NULL),
                        "-ERR Protocol version is not an integer or out of range\r\n");
    assert_string_equal(run(e, "HELLO", "-0", NULL),
                        "-ERR Protocol version is not an integer or out of range\r\n");
    assert_string_equal(run(e, "HELLO", "x", NULL),
                        "-ERR Protocol version is not an integer or out of range\r\n");
    const char *hello = run(e, "HELLO", "2", "SETNAME", "me", NULL);
    assert_non_null(strstr(hello, "*14\r\n$6\r\nserver\r\n$8\r\nunisondb\r\n"));
    assert_non_null(strstr(hello, "$5\r\nproto\r\n:2\r\n"));
    assert_string_equal(run(e, "CLIENT", "GETNAME", NULL), "$2\r\nme\r\n");
    assert_string_equal(run(e, "HELLO", "2", "AUTH", "bob", "pw", NULL),
                        "-WRONGPASS invalid username-password pair or user is disabled.\r\n");
    assert_string_equal(run(e, "AUTH", "default", "pw", NULL), "+OK\r\n");
    assert_non_null(strstr(run(e, "AUTH", "pw", NULL), "without any password configured"));
    assert_string_equal(run(e, "CLIENT", "SETINFO", "LIB-NAME", "redis-py", NULL), "+OK\r\n");
    assert_string_equal(run(e, "CLIENT", "SETNAME", "a b", NULL),
                        "-ERR Client names cannot contain spaces, newlines or special "
                        "characters.\r\n");
    assert_string_equal(run(e, "CLIENT", "KILL", NULL),
                        "-ERR CLIENT KILL is not supported (ID, SETNAME, GETNAME, SETINFO and "
                        "INFO are)\r\n");
    char id[32];
    snprintf(id, sizeof id, ":%llu\r\n", (unsigned long long)e->s.id);
    assert_string_equal(run(e, "CLIENT", "ID", NULL), id);
    assert_false(e->s.quit);
    assert_string_equal(run(e, "QUIT", NULL), "+OK\r\n");
    assert_true(e->s.quit);
}

static void test_server_commands(void **state)
{
    struct env *e = *state;
    /* redis-benchmark asks for these two. */
    assert_string_equal(run(e, "CONFIG", "GET", "save", NULL), "*2\r\n$4\r\nsave\r\n$0\r\n\r\n");
    assert_string_equal(run(e, "CONFIG", "GET", "appendonly", NULL),
                        "*2\r\n$10\r\nappendonly\r\n$3\r\nyes\r\n");
    assert_string_equal(run(e, "config", "get", "MAX*", "databases", NULL),
                        "*8\r\n$9\r\ndatabases\r\n$1\r\n3\r\n$10\r\nmaxclients\r\n$3\r\n100\r\n"
                        "$9\r\nmaxmemory\r\n$1\r\n0\r\n$16\r\nmaxmemory-policy\r\n$10\r\n"
                        "noeviction\r\n");
    assert_string_equal(run(e, "CONFIG", "GET", "nothing", NULL), "*0\r\n");
    /* A name without a glob is answered as given, as Redis does. */
    assert_string_equal(run(e, "CONFIG", "GET", "SAVE", "save", NULL),
                        "*2\r\n$4\r\nSAVE\r\n$0\r\n\r\n");
    assert_string_equal(run(e, "CONFIG", "GET", "SA*", NULL), "*2\r\n$4\r\nsave\r\n$0\r\n\r\n");
    /* ... and looked up exactly: a backslash escapes nothing there, as in Redis. */
    assert_string_equal(run(e, "CONFIG", "GET", "sa\\ve", NULL), "*0\r\n");
    assert_string_equal(run(e, "CONFIG", "GET", "sa\\v*", NULL), "*2\r\n$4\r\nsave\r\n$0\r\n\r\n");
    assert_non_null(strstr(run(e, "CONFIG", "GET", "*", NULL), "proto-max-bulk-len"));
    assert_string_equal(run(e, "CONFIG", "SET", "save", "", NULL),
                        "-ERR CONFIG SET is not supported: only CONFIG GET is; settings come "
                        "from the configuration file\r\n");

    const char *count = run(e, "COMMAND", "COUNT", NULL);
    assert_int_equal(count[0], ':');
    long n = strtol(count + 1, NULL, 10);
    assert_true(n >= 20);
    const char *info = run(e, "COMMAND", "INFO", "get", "nope", NULL);
    assert_string_equal(info, "*2\r\n*10\r\n$3\r\nget\r\n:2\r\n*1\r\n+readonly\r\n:1\r\n:1\r\n"
                              ":1\r\n*2\r\n+@read\r\n+@string\r\n*0\r\n*0\r\n*0\r\n$-1\r\n");
    const char *docs = run(e, "COMMAND", "DOCS", "GET", NULL);
    assert_string_equal(docs, "*2\r\n$3\r\nget\r\n*6\r\n$7\r\nsummary\r\n$34\r\nReturns the "
                              "string value of a key.\r\n$5\r\nsince\r\n$5\r\n1.0.0\r\n"
                              "$5\r\ngroup\r\n$6\r\nstring\r\n");
    char want[32];
    snprintf(want, sizeof want, "*%ld\r\n", n);
    assert_memory_equal(run(e, "COMMAND", NULL), want, strlen(want));
    assert_memory_equal(run(e, "COMMAND", "DOCS", NULL), "*", 1);
    assert_non_null(strstr(run(e, "COMMAND", "GETKEYS", "get", "a", NULL), "-ERR unknown "
                                                                           "subcommand"));
    /* A known subcommand with the wrong number of arguments: Redis's error naming "command|sub". */
    assert_string_equal(run(e, "COMMAND", "COUNT", "x", NULL),
                        "-ERR wrong number of arguments for 'command|count' command\r\n");
    assert_string_equal(run(e, "COMMAND", "LIST", "x", NULL), "-ERR syntax error\r\n");
    /* FILTERBY is refused by name only when Redis would apply it: FILTERBY, a filter type and its
     * argument; every other form is Redis's syntax error. */
    const char *filterby = "-ERR COMMAND LIST FILTERBY is not supported: COMMAND LIST lists every "
                           "command\r\n";
    assert_string_equal(run(e, "COMMAND", "LIST", "FILTERBY", "pattern", "get*", NULL), filterby);
    assert_string_equal(run(e, "command", "list", "filterby", "ACLCAT", "read", NULL), filterby);
    assert_string_equal(run(e, "COMMAND", "LIST", "FILTERBY", "MODULE", "m", NULL), filterby);
    assert_string_equal(run(e, "COMMAND", "LIST", "FILTERBY", NULL), "-ERR syntax error\r\n");
    assert_string_equal(run(e, "COMMAND", "LIST", "FILTERBY", "PATTERN", NULL),
                        "-ERR syntax error\r\n");
    assert_string_equal(run(e, "COMMAND", "LIST", "FILTERBY", "PATTERN", "x", "y", NULL),
                        "-ERR syntax error\r\n");
    assert_string_equal(run(e, "COMMAND", "LIST", "FILTERBY", "BOGUS", "x", NULL),
                        "-ERR syntax error\r\n");
    assert_string_equal(run(e, "COMMAND", "LIST", "x", "FILTERBY", "PATTERN", NULL),
                        "-ERR syntax error\r\n");
    assert_string_equal(run(e, "client", "id", "x", NULL),
                        "-ERR wrong number of arguments for 'client|id' command\r\n");
    assert_string_equal(run(e, "CLIENT", "SETNAME", NULL),
                        "-ERR wrong number of arguments for 'client|setname' command\r\n");
    assert_string_equal(run(e, "CLIENT", "SETINFO", "lib-name", NULL),
                        "-ERR wrong number of arguments for 'client|setinfo' command\r\n");

    put(e, "default", "k", "v");
    const char *all = run(e, "INFO", NULL);
    assert_non_null(strstr(all, "# Server\r\nredis_version:7.0.0\r\n"));
    assert_non_null(strstr(all, "tcp_port:6380\r\n"));
    assert_non_null(strstr(all, "# Clients\r\n"));
    assert_non_null(strstr(all, "# Namespaces\r\nselected:default\r\n"));
    /* Index 0 is the default namespace (where connections start), then name order. */
    assert_non_null(strstr(all, "ns_default:index=0,lsn=1,"));
    assert_non_null(strstr(all, "ns_123:index=1,lsn=0,"));
    assert_non_null(strstr(all, "ns_other:index=2,lsn=0,"));
    assert_true(strstr(all, "ns_default:") < strstr(all, "ns_123:"));
    assert_non_null(strstr(all, "namespaces:3\r\n"));
    const char *ks = run(e, "INFO", "keyspace", NULL);
    assert_memory_equal(ks, "$", 1);
    assert_non_null(strstr(ks, "\r\n# Namespaces\r\n"));
    assert_null(strstr(ks, "# Server"));
    assert_string_equal(run(e, "INFO", "nosuchsection", NULL), "$0\r\n\r\n");

    const char *t = run(e, "TIME", NULL);
    assert_memory_equal(t, "*2\r\n$10\r\n", 9);
}

static void test_select(void **state)
{
    struct env *e = *state;
    put(e, "other", "k", "in-other");
    put(e, "default", "k", "in-default");
    assert_string_equal(run(e, "GET", "k", NULL), "$10\r\nin-default\r\n");
    assert_string_equal(run(e, "SELECT", "other", NULL), "+OK\r\n");
    assert_string_equal(run(e, "GET", "k", NULL), "$8\r\nin-other\r\n");
    /* Index 0 is the namespace a connection starts on (clients never send SELECT 0), then the
     * others in name order: default, 123, other. */
    assert_string_equal(run(e, "SELECT", "1", NULL), "+OK\r\n");
    assert_string_equal(e->s.ns, "123");
    assert_string_equal(run(e, "SELECT", "2", NULL), "+OK\r\n");
    assert_string_equal(e->s.ns, "other");
    assert_string_equal(run(e, "SELECT", "0", NULL), "+OK\r\n");
    assert_string_equal(e->s.ns, "default");
    assert_string_equal(run(e, "SELECT", "1", NULL), "+OK\r\n");
    /* A name made of digits is a name first. */
    assert_string_equal(run(e, "SELECT", "123", NULL), "+OK\r\n");
    assert_string_equal(e->s.ns, "123");
    assert_string_equal(run(e, "SELECT", "3", NULL),
                        "-ERR namespace index 3 is out of range: there are 3 namespaces (0 is "
                        "'default', then the others in name order)\r\n");
    assert_string_equal(run(e, "SELECT", "-1", NULL),
                        "-ERR namespace index -1 is out of range: there are 3 namespaces (0 is "
                        "'default', then the others in name order)\r\n");
    assert_string_equal(run(e, "SELECT", "nope", NULL), "-ERR unknown namespace 'nope'\r\n");
    assert_string_equal(run(e, "SELECT", "../x", NULL), "-ERR unknown namespace '../x'\r\n");
    assert_string_equal(e->s.ns, "123");

    /* A selected namespace that is deleted: reads say so. */
    char errmsg[UD_ERRMSG_SIZE];
    assert_string_equal(run(e, "SELECT", "other", NULL), "+OK\r\n");
    assert_int_equal(ud_registry_delete(e->reg, "other", errmsg), 0);
    assert_string_equal(run(e, "GET", "k", NULL),
                        "-ERR unknown namespace 'other' (it was deleted; SELECT another one)\r\n");

    /* Without the default namespace, indexes are plain name order. */
    assert_int_equal(ud_registry_create(e->reg, "abc", errmsg), 0);
    assert_int_equal(ud_registry_delete(e->reg, "default", errmsg), 0);
    assert_string_equal(run(e, "SELECT", "0", NULL), "+OK\r\n");
    assert_string_equal(e->s.ns, "123");
    assert_string_equal(run(e, "SELECT", "1", NULL), "+OK\r\n");
    assert_string_equal(e->s.ns, "abc");
    assert_string_equal(run(e, "SELECT", "2", NULL),
                        "-ERR namespace index 2 is out of range: there are 2 namespaces (indexes "
                        "count from 0 in name order)\r\n");
}

/* GETs inside a batch: the replies of a long pipeline, in order, once the batch ends; other
 * commands between them (SELECT among them) complete the GETs before them and see their own
 * namespace; values of every size and place. */
static void test_batched_gets(void **state)
{
    struct env *e = *state;
    char big[10000];
    memset(big, 'b', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    put(e, "default", "big", big);
    put(e, "default", "flushed", "from-lmdb");
    char errmsg[UD_ERRMSG_SIZE];
    assert_int_equal(ud_ns_flush(ns_of(e, "default"), errmsg), 0);
    put(e, "other", "k", "in-other");
    char expect[1 << 15];
    size_t n = 0;
    for (int i = 0; i < 3 * UD_RESP_BATCH_COPIES; i++) {
        char k[16], v[64];
        snprintf(k, sizeof k, "k%d", i);
        snprintf(v, sizeof v, "value-%d-%0*d", i, i, 0);
        put(e, "default", k, v);
    }

    ud_resp_batch_begin(e->ctx);
    struct {
        const char *argv[2];
        const char *reply;
    } steps[] = {
        {{"GET", "flushed"}, "$9\r\nfrom-lmdb\r\n"},
        {{"GET", "missing"}, "$-1\r\n"},
        {{"GET", ""}, "-ERR empty keys are not supported\r\n"},
        {{"PING", NULL}, "+PONG\r\n"},
        {{"GET", "k0"}, "$9\r\nvalue-0-0\r\n"},
        {{"SELECT", "other"}, "+OK\r\n"},
        {{"GET", "k"}, "$8\r\nin-other\r\n"},
        {{"GET", "k1"}, "$-1\r\n"},
        {{"SELECT", "default"}, "+OK\r\n"},
    };
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        size_t argc = steps[i].argv[1] != NULL ? 2 : 1;
        size_t lens[2] = {strlen(steps[i].argv[0]), argc > 1 ? strlen(steps[i].argv[1]) : 0};
        assert_int_equal(
            ud_resp_exec(e->ctx, &e->s, &e->q, argc, (const uint8_t *const *)steps[i].argv, lens),
            UD_RESP_EXEC_DONE);
        n += (size_t)snprintf(expect + n, sizeof expect - n, "%s", steps[i].reply);
    }
    /* More GETs than copies wait at once, with a value too large to wait among them. */
    for (int i = 0; i < 3 * UD_RESP_BATCH_COPIES; i++) {
        char k[16], v[64];
        snprintf(k, sizeof k, "k%d", i);
        snprintf(v, sizeof v, "value-%d-%0*d", i, i, 0);
        const char *argv[] = {"GET", i == UD_RESP_BATCH_COPIES + 3 ? "big" : k};
        size_t lens[] = {3, strlen(argv[1])};
        assert_int_equal(ud_resp_exec(e->ctx, &e->s, &e->q, 2, (const uint8_t *const *)argv, lens),
                         UD_RESP_EXEC_DONE);
        if (i == UD_RESP_BATCH_COPIES + 3)
            n +=
                (size_t)snprintf(expect + n, sizeof expect - n, "$%zu\r\n%s\r\n", strlen(big), big);
        else
            n += (size_t)snprintf(expect + n, sizeof expect - n, "$%zu\r\n%s\r\n", strlen(v), v);
    }
    ud_resp_batch_end(e->ctx);
    assert_true(n < sizeof expect);
    assert_int_equal(e->q.ready.len, n);
    assert_memory_equal(e->q.ready.data, expect, n);
    e->q.ready.len = 0;

    /* After the end, a GET reads on its own again: a write since is seen. */
    put(e, "default", "k0", "new");
    assert_string_equal(run(e, "GET", "k0", NULL), "$3\r\nnew\r\n");
    /* A batch left open when the context is freed is closed without touching the replies, whose
     * queue teardown frees first (AddressSanitizer builds check it). */
    ud_resp_batch_begin(e->ctx);
    const char *argv[] = {"GET", "k1"};
    size_t lens[] = {3, 2};
    assert_int_equal(ud_resp_exec(e->ctx, &e->s, &e->q, 2, (const uint8_t *const *)argv, lens),
                     UD_RESP_EXEC_DONE);
}

static void test_strings(void **state)
{
    struct env *e = *state;
    put(e, "default", "a", "1");
    put(e, "default", "b", "");
    hput(e, "h", "f", "v");
    assert_string_equal(run(e, "GET", "a", NULL), "$1\r\n1\r\n");
    assert_string_equal(run(e, "GET", "b", NULL), "$0\r\n\r\n");
    assert_string_equal(run(e, "GET", "missing", NULL), "$-1\r\n");
    assert_string_equal(run(e, "GET", "h", NULL), "$-1\r\n"); /* a hash is not a string */
    assert_string_equal(run(e, "GET", "a", "b", NULL),
                        "-ERR wrong number of arguments for 'get' command\r\n");
    assert_string_equal(run(e, "MGET", "a", "missing", "b", NULL),
                        "*3\r\n$1\r\n1\r\n$-1\r\n$0\r\n\r\n");
    assert_string_equal(run(e, "EXISTS", "a", "missing", "h", "a", NULL), ":3\r\n");
    assert_string_equal(run(e, "TYPE", "a", NULL), "+string\r\n");
    assert_string_equal(run(e, "STRLEN", "a", NULL), ":1\r\n");
    assert_string_equal(run(e, "STRLEN", "b", NULL), ":0\r\n");
    assert_string_equal(run(e, "STRLEN", "missing", NULL), ":0\r\n");
    assert_string_equal(run(e, "TYPE", "h", NULL), "+hash\r\n");
    assert_string_equal(run(e, "TYPE", "missing", NULL), "+none\r\n");

    /* Key limits: empty keys and keys over 511 bytes are errors that say so. */
    assert_string_equal(run(e, "GET", "", NULL), "-ERR empty keys are not supported\r\n");
    char key[600];
    memset(key, 'k', sizeof key);
    key[512] = '\0';
    assert_string_equal(run(e, "GET", key, NULL), "-ERR key is 512 bytes; the limit is 511\r\n");
    assert_string_equal(run(e, "MGET", "a", key, NULL),
                        "-ERR key is 512 bytes; the limit is 511\r\n");
    key[511] = '\0';
    assert_string_equal(run(e, "GET", key, NULL), "$-1\r\n");

    /* Binary keys and values. */
    char errmsg[UD_ERRMSG_SIZE];
    assert_int_equal(ud_ns_kv_put(ns_of(e, "default"), "b\0k", 3, "v\0\r\n", 4, NULL, errmsg), 0);
    const char *argv[] = {"GET", "b\0k"};
    size_t lens[] = {3, 3};
    runv(e, 2, argv, lens);
    assert_int_equal(e->reply_len, 10);
    assert_memory_equal(e->reply, "$4\r\nv\0\r\n\r\n", 10);
}

static void test_hashes(void **state)
{
    struct env *e = *state;
    hput(e, "user:1", "name", "ada");
    hput(e, "user:1", "age", "36");
    hput(e, "user:1", "city", "");
    assert_string_equal(run(e, "HGET", "user:1", "name", NULL), "$3\r\nada\r\n");
    assert_string_equal(run(e, "HGET", "user:1", "nope", NULL), "$-1\r\n");
    assert_string_equal(run(e, "HGET", "nobody", "name", NULL), "$-1\r\n");
    assert_string_equal(run(e, "HMGET", "user:1", "city", "nope", "age", "age", NULL),
                        "*4\r\n$0\r\n\r\n$-1\r\n$2\r\n36\r\n$2\r\n36\r\n");
    assert_string_equal(run(e, "HGETALL", "user:1", NULL),
                        "*6\r\n$3\r\nage\r\n$2\r\n36\r\n$4\r\ncity\r\n$0\r\n\r\n"
                        "$4\r\nname\r\n$3\r\nada\r\n");
    assert_string_equal(run(e, "HGETALL", "nobody", NULL), "*0\r\n");
    assert_string_equal(run(e, "HKEYS", "user:1", NULL),
                        "*3\r\n$3\r\nage\r\n$4\r\ncity\r\n$4\r\nname\r\n");
    assert_string_equal(run(e, "HVALS", "user:1", NULL),
                        "*3\r\n$2\r\n36\r\n$0\r\n\r\n$3\r\nada\r\n");
    assert_string_equal(run(e, "HLEN", "user:1", NULL), ":3\r\n");
    assert_string_equal(run(e, "HLEN", "nobody", NULL), ":0\r\n");
    assert_string_equal(run(e, "HEXISTS", "user:1", "age", NULL), ":1\r\n");
    assert_string_equal(run(e, "HEXISTS", "user:1", "x", NULL), ":0\r\n");
    assert_string_equal(run(e, "EXISTS", "user:1", NULL), ":1\r\n");
    assert_string_equal(run(e, "GET", "user:1", NULL), "$-1\r\n");

    /* Row key + field limit: 509 bytes, NUL bytes in the key counting twice. */
    char key[600];
    memset(key, 'r', sizeof key);
    key[500] = '\0';
    char field[20];
    memset(field, 'f', sizeof field);
    field[10] = '\0';
    assert_string_equal(run(e, "HGET", key, field, NULL),
                        "-ERR hash key (500 bytes) and field (10 bytes) encode to 510 bytes; the "
                        "limit is 509 (NUL bytes in the key count twice)\r\n");
    field[9] = '\0';
    assert_string_equal(run(e, "HGET", key, field, NULL), "$-1\r\n");
    assert_string_equal(run(e, "HGET", "user:1", "", NULL),
                        "-ERR empty field names are not supported\r\n");
    key[510] = '\0';
    memset(key + 500, 'r', 10);
    assert_string_equal(run(e, "HGETALL", key, NULL),
                        "-ERR hash key encodes to 510 bytes; the limit is 509 (NUL bytes count "
                        "twice)\r\n");
    const char *argv[] = {"HGETALL", "a\0b"};
    size_t lens[] = {7, 3};
    assert_string_equal(runv(e, 2, argv, lens), "*0\r\n");
}

/* Reads every key with SCAN and the given options; checks order and returns the count. */
/* A SCAN reply's cursor, copied into cursor; returns where its array of keys starts. */
static const char *reply_cursor(const char *r, char cursor[32])
{
    /* *2\r\n$<n>\r\n<cursor>\r\n*<k>\r\n($<n>\r\n<key>\r\n)* */
    assert_memory_equal(r, "*2\r\n$", 5);
    const char *p = r + 5;
    long cl = strtol(p, (char **)&p, 10);
    assert_true(cl < 32);
    p += 2;
    memcpy(cursor, p, (size_t)cl);
    cursor[cl] = '\0';
    return p + cl + 2;
}

static size_t scan_all(struct env *e, const char *match, const char *count, const char *type,
                       char keys[][16], size_t max, size_t *calls)
{
    char cursor[32] = "0";
    size_t n = 0;
    *calls = 0;
    do {
        const char *argv[8] = {"SCAN", cursor};
        size_t argc = 2;
        if (match) {
            argv[argc++] = "MATCH";
            argv[argc++] = match;
        }
        if (count) {
            argv[argc++] = "COUNT";
            argv[argc++] = count;
        }
        if (type) {
            argv[argc++] = "TYPE";
            argv[argc++] = type;
        }
        size_t lens[8];
        for (size_t i = 0; i < argc; i++)
            lens[i] = strlen(argv[i]);
        const char *r = runv(e, argc, argv, lens);
        (*calls)++;
        const char *p = reply_cursor(r, cursor);
        assert_int_equal(*p, '*');
        long k = strtol(p + 1, (char **)&p, 10);
        p += 2;
        for (long i = 0; i < k; i++) {
            assert_int_equal(*p, '$');
            long kl = strtol(p + 1, (char **)&p, 10);
            p += 2;
            assert_true(n < max);
            assert_true(kl < 16);
            memcpy(keys[n], p, (size_t)kl);
            keys[n][kl] = '\0';
            if (n > 0)
                assert_true(strcmp(keys[n - 1], keys[n]) < 0); /* ordered, no repeats */
            n++;
            p += kl + 2;
        }
        assert_true(*calls < 100);
    } while (strcmp(cursor, "0") != 0);
    return n;
}

static void test_scan(void **state)
{
    struct env *e = *state;
    char keys[64][16];
    size_t calls;
    for (int i = 0; i < 25; i++) {
        char k[8];
        snprintf(k, sizeof k, "a%02d", i);
        put(e, "default", k, "v");
    }
    put(e, "default", "b1", "v");
    hput(e, "a05", "f", "v"); /* both a string and a hash: listed once */
    hput(e, "a30", "f", "v");
    hput(e, "a30", "g", "v"); /* two columns: one row */
    hput(e, "c", "f", "v");

    size_t n = scan_all(e, "a*", "10", NULL, keys, 64, &calls);
    assert_int_equal(n, 26);
    assert_string_equal(keys[0], "a00");
    assert_string_equal(keys[5], "a05");
    assert_string_equal(keys[25], "a30");
    assert_int_equal(calls, 3);

    n = scan_all(e, NULL, NULL, NULL, keys, 64, &calls);
    assert_int_equal(n, 28);
    assert_string_equal(keys[26], "b1");
    assert_string_equal(keys[27], "c");
    assert_int_equal(calls, 3); /* COUNT 10 by default */

    n = scan_all(e, "*", "1000", "hash", keys, 64, &calls);
    assert_int_equal(n, 3);
    assert_string_equal(keys[0], "a05");
    assert_string_equal(keys[1], "a30");
    assert_string_equal(keys[2], "c");
    assert_int_equal(calls, 1);
    n = scan_all(e, "a*", "7", "string", keys, 64, &calls);
    assert_int_equal(n, 25);
    n = scan_all(e, NULL, NULL, "list", keys, 64, &calls);
    assert_int_equal(n, 0);

    /* A literal pattern matches one key; escapes make glob characters literal. */
    n = scan_all(e, "a05", NULL, NULL, keys, 64, &calls);
    assert_int_equal(n, 1);
    assert_string_equal(keys[0], "a05");
    n = scan_all(e, "a0", NULL, NULL, keys, 64, &calls);
    assert_int_equal(n, 0);
    put(e, "default", "q*x", "v");
    n = scan_all(e, "q\\**", NULL, NULL, keys, 64, &calls);
    assert_int_equal(n, 1);
    assert_string_equal(keys[0], "q*x");

    /* Patterns other than prefixes are refused by name. */
    assert_string_equal(run(e, "SCAN", "0", "MATCH", "a?b", NULL),
                        "-ERR SCAN MATCH supports prefix patterns ('prefix*') and literal keys "
                        "only; 'a?b' is neither\r\n");
    assert_non_null(strstr(run(e, "SCAN", "0", "MATCH", "*a", NULL), "is neither"));
    assert_non_null(strstr(run(e, "SCAN", "0", "MATCH", "[ab]*", NULL), "is neither"));
    assert_string_equal(run(e, "SCAN", "0", "COUNT", "0", NULL), "-ERR syntax error\r\n");
    assert_string_equal(run(e, "SCAN", "0", "COUNT", "x", NULL),
                        "-ERR value is not an integer or out of range\r\n");
    assert_string_equal(run(e, "SCAN", "0", "COUNT", NULL), "-ERR syntax error\r\n");
    assert_string_equal(run(e, "SCAN", "0", "BOGUS", "1", NULL), "-ERR syntax error\r\n");
    assert_string_equal(run(e, "SCAN", "x", NULL), "-ERR invalid cursor\r\n");
    /* As in Redis: a type name that is none matches nothing; the cursor is read by strtoul (the
     * empty string, "+0" and "-0" are 0), COUNT as a strict integer (no leading zeros). */
    assert_string_equal(run(e, "SCAN", "0", "TYPE", "blob", NULL), "*2\r\n$1\r\n0\r\n*0\r\n");
    assert_string_equal(run(e, "SCAN", "0", "TYPE", "list", NULL), "*2\r\n$1\r\n0\r\n*0\r\n");
    assert_memory_equal(run(e, "SCAN", "+0", "COUNT", "1000", NULL), "*2\r\n$1\r\n0\r\n", 11);
    assert_memory_equal(run(e, "SCAN", "", "COUNT", "1000", NULL), "*2\r\n$1\r\n0\r\n", 11);
    assert_memory_equal(run(e, "SCAN", "-0", "COUNT", "1000", NULL), "*2\r\n$1\r\n0\r\n", 11);
    assert_string_equal(run(e, "SCAN", " 0", NULL), "-ERR invalid cursor\r\n");
    assert_string_equal(run(e, "SCAN", "0 ", NULL), "-ERR invalid cursor\r\n");
    /* strtoul reads any number of leading zeros and stops at a NUL byte. */
    assert_memory_equal(
        run(e, "SCAN", "0000000000000000000000000000000000000000", "COUNT", "1000", NULL),
        "*2\r\n$1\r\n0\r\n", 11);
    assert_memory_equal(
        run(e, "SCAN", "-0000000000000000000000000000000000000000", "COUNT", "1000", NULL),
        "*2\r\n$1\r\n0\r\n", 11);
    {
        const char *argv[] = {"SCAN", "0\0x", "COUNT", "1000"};
        const size_t lens[] = {4, 3, 5, 4};
        assert_memory_equal(runv(e, 4, argv, lens), "*2\r\n$1\r\n0\r\n", 11);
        const char *argv2[] = {"SCAN", "x\0"};
        const size_t lens2[] = {4, 2};
        assert_string_equal(runv(e, 2, argv2, lens2), "-ERR invalid cursor\r\n");
    }
    assert_string_equal(run(e, "SCAN", "+", NULL), "-ERR invalid cursor\r\n");
    assert_string_equal(run(e, "SCAN", "10000000000000000000000000000000000000000", NULL),
                        "-ERR invalid cursor\r\n");
    assert_string_equal(run(e, "SCAN", "-18446744073709551616", NULL), "-ERR invalid cursor\r\n");
    assert_string_equal(run(e, "SCAN", "00000000000000000000000000000000000000999999", NULL),
                        "-ERR SCAN cursor 999999 is unknown or expired (the server keeps the 4096 "
                        "most recently started iterations); start again from 0\r\n");
    assert_string_equal(run(e, "SCAN", "0", "COUNT", "010", NULL),
                        "-ERR value is not an integer or out of range\r\n");
    assert_string_equal(run(e, "SCAN", "999999", NULL),
                        "-ERR SCAN cursor 999999 is unknown or expired (the server keeps the 4096 "
                        "most recently started iterations); start again from 0\r\n");

    /* A cursor belongs to its namespace. */
    const char *r = run(e, "SCAN", "0", "COUNT", "2", NULL);
    char cursor[32];
    assert_memory_equal(r, "*2\r\n$", 5);
    long cl = strtol(r + 5, NULL, 10);
    const char *p = strchr(r + 5, '\n') + 1;
    memcpy(cursor, p, (size_t)cl);
    cursor[cl] = '\0';
    assert_string_equal(run(e, "SELECT", "other", NULL), "+OK\r\n");
    char want[160];
    snprintf(want, sizeof want,
             "-ERR SCAN cursor %s belongs to namespace 'default', not 'other'\r\n", cursor);
    assert_string_equal(run(e, "SCAN", cursor, NULL), want);
    assert_string_equal(run(e, "SCAN", "0", NULL), "*2\r\n$1\r\n0\r\n*0\r\n");
}

/* One SCAN step: its reply's cursor into cursor, its first key into first ("" when none). */
static void scan_step(struct env *e, const char *from, char cursor[32], char first[16])
{
    const char *p = reply_cursor(run(e, "SCAN", from, "COUNT", "1", NULL), cursor);
    first[0] = '\0';
    if (strncmp(p, "*1\r\n$", 5) == 0) {
        long kl = strtol(p + 5, (char **)&p, 10);
        memcpy(first, p + 2, (size_t)kl);
        first[kl] = '\0';
    }
}

/* An iteration keeps its cursor however many steps others take; a step repeated after a lost
 * answer resumes where it did; only UD_RESP_MAX_CURSORS newer iterations expire it. */
static void test_scan_cursor_slots(void **state)
{
    struct env *e = *state;
    put(e, "default", "k1", "v");
    put(e, "default", "k2", "v");
    put(e, "default", "k3", "v");
    put(e, "default", "k4", "v"); /* so that no step below ends the iteration */
    char slow[32], fast[32], again[32], key[16], key2[16];
    scan_step(e, "0", slow, key);
    assert_string_equal(key, "k1");
    /* 5000 steps of other iterations (each started anew or continued) in between. */
    char c[32] = "0";
    for (int i = 0; i < 5000; i++) {
        scan_step(e, c, fast, key2);
        snprintf(c, sizeof c, "%s", fast);
    }
    char next[32];
    scan_step(e, slow, next, key);
    assert_string_equal(key, "k2");
    /* The step from slow repeated (its answer lost): the same key, and a cursor that goes on. */
    scan_step(e, slow, again, key);
    assert_string_equal(key, "k2");
    scan_step(e, again, next, key);
    assert_string_equal(key, "k3");
    /* The cursor replaced by the repeat is gone; the one before it still resumes. */
    char gone[32];
    snprintf(gone, sizeof gone, "%s", next);
    scan_step(e, again, next, key);
    assert_string_equal(key, "k3");
    char want[200];
    snprintf(want, sizeof want,
             "-ERR SCAN cursor %s is unknown or expired (the server keeps the 4096 most recently "
             "started iterations); start again from 0\r\n",
             gone);
    assert_string_equal(run(e, "SCAN", gone, NULL), want);
    /* 4096 iterations started since: expired. */
    for (int i = 0; i < UD_RESP_MAX_CURSORS; i++)
        scan_step(e, "0", fast, key2);
    snprintf(want, sizeof want,
             "-ERR SCAN cursor %s is unknown or expired (the server keeps the 4096 most recently "
             "started iterations); start again from 0\r\n",
             next);
    assert_string_equal(run(e, "SCAN", next, NULL), want);
}

/* Reads wait for the connection's unanswered writes; other commands do not. */
static void test_read_waits_for_writes(void **state)
{
    struct env *e = *state;
    struct ud_resp_slot *slot = ud_resp_outq_defer(&e->q);
    const char *get[] = {"GET", "a"};
    size_t lens[] = {3, 1};
    assert_int_equal(ud_resp_exec(e->ctx, &e->s, &e->q, 2, (const uint8_t *const *)get, lens),
                     UD_RESP_EXEC_WAIT);
    const char *ping[] = {"PING"};
    size_t plen[] = {4};
    assert_int_equal(ud_resp_exec(e->ctx, &e->s, &e->q, 1, (const uint8_t *const *)ping, plen),
                     UD_RESP_EXEC_DONE);
    assert_int_equal(e->q.ready.len, 0); /* PONG waits behind the slot */
    ud_resp_add_simple(ud_resp_slot_buf(slot), "OK");
    ud_resp_slot_finish(slot);
    assert_string_equal(run(e, "GET", "a", NULL), "+OK\r\n+PONG\r\n$-1\r\n");
    assert_int_equal(ud_resp_ctx_stats(e->ctx)->waited_commands, 1);
}

static void test_glob(void **state)
{
    (void)state;
    assert_true(ud_resp_glob("*", "abc"));
    assert_true(ud_resp_glob("*", ""));
    assert_true(ud_resp_glob("a*", "abc"));
    assert_true(ud_resp_glob("*c", "abc"));
    assert_true(ud_resp_glob("a?c", "abc"));
    assert_true(ud_resp_glob("a[bx]c", "abc"));
    assert_false(ud_resp_glob("a[^b]c", "abc"));
    assert_true(ud_resp_glob("a[^x]c", "abc"));
    assert_true(ud_resp_glob("a[a-c]c", "abc"));
    assert_true(ud_resp_glob("a\\*", "a*"));
    assert_false(ud_resp_glob("a\\*", "ab"));
    assert_true(ud_resp_glob("", ""));
    assert_false(ud_resp_glob("", "a"));
    assert_false(ud_resp_glob("abc", "ab"));
    assert_false(ud_resp_glob("ab", "abc"));
    assert_false(ud_resp_glob("a?", "a"));
    assert_true(ud_resp_glob("*a*b*c*", "xaybzc"));
    assert_false(ud_resp_glob("*a*b*c*d", "xaybzc"));
    assert_true(ud_resp_glob("max*", "maxclients"));
    assert_true(ud_resp_glob("*memory*", "maxmemory-policy"));
    /* Many stars cannot make a match exponential. */
    char pat[130], str[64];
    size_t n = 0;
    while (n < 120) {
        pat[n++] = '*';
        pat[n++] = 'a';
    }
    pat[n++] = 'b';
    pat[n] = '\0';
    memset(str, 'a', 60);
    str[60] = '\0';
    uint64_t t0 = ud_mono_ns();
    assert_false(ud_resp_glob(pat, str));
    assert_true(ud_mono_ns() - t0 < 100000000ull);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_connection, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_commands, setup, teardown),
        cmocka_unit_test_setup_teardown(test_select, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batched_gets, setup, teardown),
        cmocka_unit_test_setup_teardown(test_strings, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hashes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scan, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scan_cursor_slots, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_waits_for_writes, setup, teardown),
        cmocka_unit_test(test_glob),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
