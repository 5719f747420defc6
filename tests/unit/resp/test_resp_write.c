/* The writer's RESP write commands (writer/resp_write.c) over a stand-in write seam: the records
 * they build are applied to a real namespace by the test, which plays raft's part, so replies,
 * counts, ordering and errors are checked without a cluster (end-to-end tests cover raft). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/resp/resp_server.h"
#include "proto/record.h"
#include "tests/lib/testutil.h"
#include "writer/submit.h"
#include "writer/cluster.h"
#include "writer/writer.h"

/* --- the stand-in seam ------------------------------------------------------------------------ */

struct fake_req {
    char ns[UD_NS_NAME_MAX + 1];
    uint8_t *recs[4];
    size_t lens[4];
    size_t n;
    ud_submit_cb cb;
    void *arg;
};

static struct fake_req reqs[64];
static size_t nreqs;
static int leader = 1;

void ud_submit(struct ud_writer *w, const char *ns, uint8_t **records, const size_t *lens, size_t n,
               ud_submit_cb cb, void *arg)
{
    (void)w;
    assert_true(nreqs < 64);
    assert_true(n >= 1 && n <= 4);
    struct fake_req *r = &reqs[nreqs++];
    snprintf(r->ns, sizeof r->ns, "%s", ns);
    for (size_t i = 0; i < n; i++) {
        r->recs[i] = records[i];
        r->lens[i] = lens[i];
    }
    r->n = n;
    r->cb = cb;
    r->arg = arg;
}

/* BARRIER's read index: the test answers it by hand. */
static ud_cluster_barrier_cb barrier_cb;
static void *barrier_arg;

void ud_cluster_barrier(struct ud_writer *w, ud_cluster_barrier_cb cb, void *arg)
{
    (void)w;
    assert_null(barrier_cb);
    barrier_cb = cb;
    barrier_arg = arg;
}

static void barrier_answer(int status, const char *errmsg)
{
    ud_cluster_barrier_cb cb = barrier_cb;
    barrier_cb = NULL;
    assert_non_null(cb);
    cb(barrier_arg, status, errmsg);
}

int ud_writer_is_leader(struct ud_writer *w)
{
    (void)w;
    return leader;
}

struct env {
    char *root;
    uv_loop_t loop;
    struct ud_writer_config cfg;
    struct ud_writer w;
    struct ud_resp_ctx *ctx;
    struct ud_resp_session s;
    struct ud_resp_outq q;
    char reply[4096];
};

/* Plays raft: applies each queued request's records in order and answers it. */
static void commit_all(struct env *e)
{
    for (size_t i = 0; i < nreqs; i++) {
        struct fake_req *r = &reqs[i];
        struct ud_ns *ns = NULL;
        uint64_t lsns[4] = {0};
        char errmsg[UD_ERRMSG_SIZE] = "";
        int rc = ud_registry_acquire(e->w.registry, r->ns, &ns);
        if (rc != 0) {
            ns = NULL;
            snprintf(errmsg, sizeof errmsg, "namespace not found: %s", r->ns);
        }
        for (size_t k = 0; k < r->n && rc == 0; k++)
            rc = ud_ns_apply(ns, r->recs[k], r->lens[k], &lsns[k], errmsg);
        if (ns != NULL)
            ud_registry_release(e->w.registry, ns);
        for (size_t k = 0; k < r->n; k++)
            free(r->recs[k]);
        r->cb(r->arg, rc, errmsg, lsns, r->n);
    }
    nreqs = 0;
}

/* Answers every queued request with a failure, as the seam does for refusals. */
static void fail_all(int status, const char *msg)
{
    for (size_t i = 0; i < nreqs; i++) {
        for (size_t k = 0; k < reqs[i].n; k++)
            free(reqs[i].recs[k]);
        reqs[i].cb(reqs[i].arg, status, msg, NULL, 0);
    }
    nreqs = 0;
}

static int setup(void **state)
{
    struct env *e = calloc(1, sizeof *e);
    char errmsg[UD_ERRMSG_SIZE];
    struct ud_engine_options d;
    memset(&d, 0, sizeof d);
    d.sync_mode = UD_WAL_SYNC_NONE;
    d.segment_size = 1u << 20;
    d.map_size = 64u << 20;
    e->root = ud_test_tmpdir("resp-write");
    uv_loop_init(&e->loop);
    snprintf(e->cfg.resp_listen, sizeof e->cfg.resp_listen, "127.0.0.1:0");
    snprintf(e->cfg.default_namespace, sizeof e->cfg.default_namespace, "default");
    e->cfg.node_id = 1;
    e->w.loop = &e->loop;
    e->w.config = &e->cfg;
    assert_int_equal(ud_registry_open(e->root, &d, &e->w.registry, errmsg), 0);
    assert_int_equal(ud_registry_create(e->w.registry, "default", errmsg), 0);
    assert_int_equal(ud_writer_resp_start(&e->w, errmsg), 0);
    assert_non_null(e->w.resp);
    assert_true(e->w.resp_port > 0);
    e->ctx = ud_resp_server_ctx(e->w.resp);
    ud_resp_session_init(e->ctx, &e->s);
    ud_resp_outq_init(&e->q);
    nreqs = 0;
    leader = 1;
    *state = e;
    return 0;
}

static int stopped;

static void on_stopped(struct ud_writer *w)
{
    assert_null(w->resp);
    stopped = 1;
}

static int teardown(void **state)
{
    struct env *e = *state;
    fail_all(UD_ECLOSED, "closing");
    ud_resp_outq_detach(&e->q);
    stopped = 0;
    ud_writer_resp_stop(&e->w, on_stopped);
    while (!stopped)
        uv_run(&e->loop, UV_RUN_ONCE);
    assert_int_equal(uv_loop_close(&e->loop), 0);
    ud_registry_close(e->w.registry);
    ud_test_rmtree(e->root);
    free(e->root);
    free(e);
    return 0;
}

/* Runs one command; returns UD_RESP_EXEC_DONE or _WAIT. */
static int execv_(struct env *e, size_t argc, const char *const *argv, const size_t *lens)
{
    return ud_resp_exec(e->ctx, &e->s, &e->q, argc, (const uint8_t *const *)argv, lens);
}

static int exec_(struct env *e, ...)
{
    const char *argv[32];
    size_t lens[32];
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
    return execv_(e, argc, argv, lens);
}

/* Takes the replies ready so far. */
static const char *ready(struct env *e)
{
    assert_true(e->q.ready.len < sizeof e->reply);
    if (e->q.ready.len > 0)
        memcpy(e->reply, e->q.ready.data, e->q.ready.len);
    e->reply[e->q.ready.len] = '\0';
    e->q.ready.len = 0;
    return e->reply;
}

#define RUN(e, ...) assert_int_equal(exec_(e, __VA_ARGS__, NULL), UD_RESP_EXEC_DONE)

static void test_set_get(void **state)
{
    struct env *e = *state;
    RUN(e, "SET", "a", "1");
    assert_int_equal(nreqs, 1);
    assert_string_equal(ready(e), ""); /* answered only after the commit */
    /* A pipelined GET waits for the SET; a PING does not, but its reply stays in order. */
    assert_int_equal(exec_(e, "GET", "a", NULL), UD_RESP_EXEC_WAIT);
    RUN(e, "PING");
    assert_string_equal(ready(e), "");
    struct ud_record rec;
    assert_int_equal(ud_record_decode(reqs[0].recs[0], reqs[0].lens[0], &rec, NULL), 0);
    assert_int_equal(rec.op, UD_OP_PUT);
    assert_int_equal(rec.entry_type, UD_ENTRY_KV);
    assert_int_equal(rec.entry_count, 1);
    commit_all(e);
    assert_string_equal(ready(e), "+OK\r\n+PONG\r\n");
    RUN(e, "GET", "a");
    assert_string_equal(ready(e), "$1\r\n1\r\n");

    /* Blind writes pipeline without waiting for each other. */
    RUN(e, "SET", "a", "2");
    RUN(e, "set", "b", "3");
    assert_int_equal(nreqs, 2);
    commit_all(e);
    RUN(e, "MGET", "a", "b");
    assert_string_equal(ready(e), "+OK\r\n+OK\r\n*2\r\n$1\r\n2\r\n$1\r\n3\r\n");
}

static void test_set_errors(void **state)
{
    struct env *e = *state;
    RUN(e, "SET", "a", "1", "EX", "10");
    assert_string_equal(ready(e), "-ERR SET option 'EX' is not supported (keys do not expire and "
                                  "SET takes no options)\r\n");
    RUN(e, "SET", "a", "1", "nx");
    assert_string_equal(ready(e), "-ERR SET option 'NX' is not supported (keys do not expire and "
                                  "SET takes no options)\r\n");
    RUN(e, "SET", "a", "1", "KEEPTTL");
    assert_non_null(strstr(ready(e), "'KEEPTTL' is not supported"));
    RUN(e, "SET", "a", "1", "bogus");
    assert_string_equal(ready(e), "-ERR syntax error\r\n");
    RUN(e, "SET", "a");
    assert_string_equal(ready(e), "-ERR wrong number of arguments for 'set' command\r\n");
    RUN(e, "SET", "", "1");
    assert_string_equal(ready(e), "-ERR empty keys are not supported\r\n");
    char key[513];
    memset(key, 'k', 512);
    key[512] = '\0';
    RUN(e, "SET", key, "1");
    assert_string_equal(ready(e), "-ERR key is 512 bytes; the limit is 511\r\n");
    key[511] = '\0';
    RUN(e, "SET", key, "1");
    assert_int_equal(nreqs, 1);
    commit_all(e);
    assert_string_equal(ready(e), "+OK\r\n");
    /* A value that cannot fit one record. */
    size_t big = 4u << 20;
    char *v = malloc(big);
    memset(v, 'v', big);
    const char *argv[] = {"SET", "big", v};
    size_t lens[] = {3, 3, big};
    assert_int_equal(execv_(e, 3, argv, lens), UD_RESP_EXEC_DONE);
    assert_string_equal(ready(e), "-ERR write too large: one write is at most 4194304 bytes of "
                                  "keys, values and headers\r\n");
    free(v);
    assert_int_equal(nreqs, 0);
}

static void test_submit_failures(void **state)
{
    struct env *e = *state;
    RUN(e, "SET", "a", "1");
    fail_all(UD_EBUSY, "namespace default: 2 memtables are waiting for the flush");
    assert_string_equal(ready(e), "-TRYAGAIN write not admitted, retry later: namespace default: 2 "
                                  "memtables are waiting for the flush\r\n");
    leader = 0;
    RUN(e, "SET", "a", "1");
    fail_all(UD_ECLOSED, "this writer is not the leader; the leader is node 2 at 10.0.0.2:4100");
    assert_string_equal(ready(e), "-READONLY this writer is not the leader; the leader is node 2 "
                                  "at 10.0.0.2:4100\r\n");
    /* Forwarding off: the cluster part names the leader's RESP address, Redis Cluster style. */
    RUN(e, "SET", "a", "1");
    fail_all(UD_ECLOSED, "MOVED 0 10.0.0.2:6380");
    assert_string_equal(ready(e), "-MOVED 0 10.0.0.2:6380\r\n");
    leader = 1;
    e->w.stopping = 1;
    RUN(e, "SET", "a", "1");
    fail_all(UD_ECLOSED, "the writer is shutting down");
    assert_string_equal(ready(e), "-ERR unavailable: the writer is shutting down\r\n");
    e->w.stopping = 0;
    /* Proposed, then leadership was lost: the write may be applied; one fixed prefix says so. */
    RUN(e, "SET", "a", "1");
    fail_all(
        UD_EINDOUBT,
        "outcome unknown: the write may have been committed (raft: server has lost leadership)");
    assert_string_equal(ready(e), "-ERR outcome unknown: the write may have been committed (raft: "
                                  "server has lost leadership)\r\n");
    RUN(e, "SET", "a", "1");
    fail_all(UD_ELIMIT, "a write of 70000000 bytes exceeds the limit of 67108864 bytes per write");
    assert_string_equal(ready(e), "-ERR size limit exceeded: a write of 70000000 bytes exceeds the "
                                  "limit of 67108864 bytes per write\r\n");
    /* A namespace deleted under the session. */
    snprintf(e->s.ns, sizeof e->s.ns, "gone");
    RUN(e, "SET", "a", "1");
    commit_all(e);
    assert_string_equal(ready(e), "-ERR unknown namespace 'gone' (it was deleted; SELECT another "
                                  "one)\r\n");
}

static void test_mset(void **state)
{
    struct env *e = *state;
    RUN(e, "MSET", "a", "1", "b", "2", "a", "3");
    assert_int_equal(nreqs, 1);
    assert_int_equal(reqs[0].n, 1);
    struct ud_record rec;
    assert_int_equal(ud_record_decode(reqs[0].recs[0], reqs[0].lens[0], &rec, NULL), 0);
    assert_int_equal(rec.entry_count, 2); /* the repeated key is written once, last value */
    commit_all(e);
    RUN(e, "MGET", "a", "b");
    assert_string_equal(ready(e), "+OK\r\n*2\r\n$1\r\n3\r\n$1\r\n2\r\n");
    RUN(e, "MSET", "a", "1", "b");
    assert_string_equal(ready(e), "-ERR wrong number of arguments for 'mset' command\r\n");
    RUN(e, "MSET", "a", "1", "", "2");
    assert_string_equal(ready(e), "-ERR empty keys are not supported\r\n");
    assert_int_equal(nreqs, 0);
}

static void test_del(void **state)
{
    struct env *e = *state;
    RUN(e, "MSET", "a", "1", "b", "2", "c", "3");
    /* HSET reads before writing (to count new fields): it waits for the MSET. */
    assert_int_equal(exec_(e, "HSET", "h", "f", "v", NULL), UD_RESP_EXEC_WAIT);
    commit_all(e);
    assert_string_equal(ready(e), "+OK\r\n");
    RUN(e, "HSET", "h", "f", "v");
    commit_all(e);
    assert_string_equal(ready(e), ":1\r\n");
    RUN(e, "HSET", "a", "f", "v"); /* "a" is now both a string and a hash */
    commit_all(e);
    assert_string_equal(ready(e), ":1\r\n");

    /* Every key named is deleted as a string and as a row, whatever this node found: it may not
     * have applied every acknowledged write yet (a follower forwarding to the leader). */
    RUN(e, "DEL", "b", "missing", "b");
    assert_int_equal(nreqs, 1);
    assert_int_equal(reqs[0].n, 2);
    commit_all(e);
    assert_string_equal(ready(e), ":1\r\n");
    /* Both models under one key: two records, one request, counted once. */
    RUN(e, "UNLINK", "a", "h");
    assert_int_equal(nreqs, 1);
    assert_int_equal(reqs[0].n, 2);
    commit_all(e);
    assert_string_equal(ready(e), ":2\r\n");
    RUN(e, "EXISTS", "a", "b", "c", "h");
    assert_string_equal(ready(e), ":1\r\n");
    RUN(e, "HGETALL", "a");
    assert_string_equal(ready(e), "*0\r\n");
    /* Nothing found here: written all the same, and counted 0. */
    RUN(e, "DEL", "a", "zzz");
    assert_int_equal(nreqs, 1);
    assert_int_equal(reqs[0].n, 2);
    commit_all(e);
    assert_string_equal(ready(e), ":0\r\n");
    /* A key no row can have (over the row key limit) is deleted as a string only. */
    char key[UD_MAX_KV_KEY + 1];
    memset(key, 'k', UD_MAX_KV_KEY);
    key[UD_MAX_KV_KEY] = '\0';
    RUN(e, "DEL", key);
    assert_int_equal(nreqs, 1);
    assert_int_equal(reqs[0].n, 1);
    commit_all(e);
    assert_string_equal(ready(e), ":0\r\n");
    RUN(e, "DEL", "");
    assert_string_equal(ready(e), "-ERR empty keys are not supported\r\n");
}

static void test_hset_hdel(void **state)
{
    struct env *e = *state;
    RUN(e, "HSET", "h", "f1", "v1", "f2", "v2", "f1", "v3");
    commit_all(e);
    assert_string_equal(ready(e), ":2\r\n");
    RUN(e, "HGETALL", "h");
    assert_string_equal(ready(e), "*4\r\n$2\r\nf1\r\n$2\r\nv3\r\n$2\r\nf2\r\n$2\r\nv2\r\n");
    RUN(e, "HSET", "h", "f1", "x", "f3", "y");
    commit_all(e);
    assert_string_equal(ready(e), ":1\r\n");
    RUN(e, "HMSET", "h", "f4", "z");
    commit_all(e);
    assert_string_equal(ready(e), "+OK\r\n");
    RUN(e, "HDEL", "h", "f1", "nope", "f1");
    struct ud_record rec;
    assert_int_equal(ud_record_decode(reqs[0].recs[0], reqs[0].lens[0], &rec, NULL), 0);
    assert_int_equal(rec.op, UD_OP_DELETE);
    assert_int_equal(rec.entry_type, UD_ENTRY_ROW);
    commit_all(e);
    assert_string_equal(ready(e), ":1\r\n");
    RUN(e, "HDEL", "h", "nope");
    assert_int_equal(nreqs, 1); /* written though not found here: this node may be behind */
    commit_all(e);
    assert_string_equal(ready(e), ":0\r\n");
    RUN(e, "HKEYS", "h");
    assert_string_equal(ready(e), "*3\r\n$2\r\nf2\r\n$2\r\nf3\r\n$2\r\nf4\r\n");

    RUN(e, "HSET", "h", "f");
    assert_string_equal(ready(e), "-ERR wrong number of arguments for 'hset' command\r\n");
    RUN(e, "HSET", "h", "f", "v", "g");
    assert_string_equal(ready(e), "-ERR wrong number of arguments for 'hset' command\r\n");
    RUN(e, "HSET", "h", "", "v");
    assert_string_equal(ready(e), "-ERR empty field names are not supported\r\n");
    char key[520];
    memset(key, 'r', 505);
    key[505] = '\0';
    RUN(e, "HSET", key, "field", "v");
    assert_string_equal(ready(e), "-ERR hash key (505 bytes) and field (5 bytes) encode to 510 "
                                  "bytes; the limit is 509 (NUL bytes in the key count twice)\r\n");
    RUN(e, "HSET", key, "fiel", "v");
    commit_all(e);
    assert_string_equal(ready(e), ":1\r\n");
    /* A NUL byte in the key counts twice. */
    key[0] = '\0';
    const char *argv[] = {"HSET", key, "fiel", "v"};
    size_t lens[] = {4, 505, 4, 1};
    assert_int_equal(execv_(e, 4, argv, lens), UD_RESP_EXEC_DONE);
    assert_non_null(strstr(ready(e), "encode to 510 bytes"));
    assert_int_equal(nreqs, 0);
}

static void test_info_and_docs(void **state)
{
    struct env *e = *state;
    RUN(e, "INFO", "raft");
    assert_non_null(strstr(ready(e), "# Raft\r\nraft_node_id:1\r\nraft_leader:1\r\n"));
    RUN(e, "INFO");
    const char *all = ready(e);
    assert_non_null(strstr(all, "# Server"));
    assert_non_null(strstr(all, "# Raft"));
    RUN(e, "COMMAND", "INFO", "set", "del");
    assert_non_null(strstr(ready(e), "$3\r\nset\r\n:-3\r\n*1\r\n+write\r\n"));
}

/* BARRIER answers once the read index is applied here; a read pipelined after it waits for it
 * (so it sees what the barrier guarantees); a failed barrier names the cause. */
static void test_barrier(void **state)
{
    struct env *e = *state;
    RUN(e, "SET", "k", "v1");
    commit_all(e);
    assert_string_equal(ready(e), "+OK\r\n");
    RUN(e, "BARRIER");
    assert_string_equal(ready(e), "");
    assert_int_equal(exec_(e, "GET", "k", NULL), UD_RESP_EXEC_WAIT);
    barrier_answer(0, "");
    assert_string_equal(ready(e), "+OK\r\n");
    RUN(e, "GET", "k");
    assert_string_equal(ready(e), "$2\r\nv1\r\n");
    RUN(e, "BARRIER");
    barrier_answer(UD_ECLOSED, "no raft leader was elected within 5000 ms; retry later");
    assert_string_equal(
        ready(e), "-ERR unavailable: no raft leader was elected within 5000 ms; retry later\r\n");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_set_get, setup, teardown),
        cmocka_unit_test_setup_teardown(test_set_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_submit_failures, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mset, setup, teardown),
        cmocka_unit_test_setup_teardown(test_del, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hset_hdel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_info_and_docs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_barrier, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
