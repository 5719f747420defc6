/*
 * The writer's whole HTTP stack in-process: core/http + writer/http_*.c on a libuv loop thread,
 * driven over loopback by a small HTTP/1.1 client. The submit seam is a stub that applies each
 * record to the engine directly and calls back on a later loop iteration (as the real seam
 * does), so these tests cover the HTTP layer, not raft.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/err.h"
#include "core/http/json.h"
#include "core/registry.h"
#include "core/store.h"
#include "proto/command.h"
#include "raft/log_reserve.h"
#include "proto/record.h"
#include "raft/node.h"
#include "tests/lib/testutil.h"
#include "writer/config.h"
#include "writer/http_digest.h"
#include "writer/cluster.h"
#include "writer/submit.h"
#include "writer/writer.h"

/* --- the stub seam ---------------------------------------------------------------------------- */

struct stub_call {
    uv_timer_t timer;
    ud_submit_cb cb;
    void *arg;
    int status;
    char errmsg[UD_ERRMSG_SIZE];
    size_t n;
    uint64_t lsns[];
};

static void stub_closed(uv_handle_t *h)
{
    free(h->data);
}

static void stub_fire(uv_timer_t *t)
{
    struct stub_call *c = t->data;
    c->cb(c->arg, c->status, c->errmsg, c->n > 0 ? c->lsns : NULL, c->n);
    uv_close((uv_handle_t *)&c->timer, stub_closed);
}

static struct stub_call *stub_new(struct ud_writer *w, size_t n, ud_submit_cb cb, void *arg)
{
    struct stub_call *c = calloc(1, sizeof *c + n * sizeof(uint64_t));
    c->cb = cb;
    c->arg = arg;
    uv_timer_init(w->loop, &c->timer);
    c->timer.data = c;
    return c;
}

static int stub_busy;                   /* answers UD_EBUSY, as admission control would */
static int stub_fail;                   /* answers this code (a storage failure) */
static volatile uint64_t stub_delay_ms; /* callbacks come this late (writes "in flight") */

void ud_submit(struct ud_writer *w, const char *ns, uint8_t **records, const size_t *lens, size_t n,
               ud_submit_cb cb, void *arg)
{
    struct stub_call *c = stub_new(w, n, cb, arg);
    struct ud_ns *h = NULL;
    if (stub_busy) {
        c->status = UD_EBUSY;
    } else if (stub_fail != 0) {
        c->status = stub_fail;
        snprintf(c->errmsg, sizeof c->errmsg,
                 "namespace %s: WAL append of LSN 9: No space left on device", ns);
    } else if (ud_registry_acquire(w->registry, ns, &h) != 0) {
        c->status = UD_ENOTFOUND;
        snprintf(c->errmsg, sizeof c->errmsg, "namespace not found: %s", ns);
    } else {
        for (size_t i = 0; i < n && c->status == 0; i++) {
            c->status = ud_ns_apply(h, records[i], lens[i], &c->lsns[i], c->errmsg);
            c->n = c->status == 0 ? i + 1 : c->n;
        }
        ud_registry_release(w->registry, h);
    }
    for (size_t i = 0; i < n; i++)
        free(records[i]);
    uv_timer_start(&c->timer, stub_fire, stub_delay_ms, 0);
}

/* The digest the last keyed write was submitted with (read by the test once it is answered). */
static uint8_t stub_digest[UD_COMMAND_DIGEST_SIZE];
static int stub_has_digest;

/* The idempotency window lives in the raft FSM, which this stub does not have. */
void ud_submit_keyed(struct ud_writer *w, const char *ns, const uint8_t *key, size_t key_len,
                     const uint8_t *digest, uint8_t **records, const size_t *lens, size_t n,
                     ud_submit_cb cb, void *arg)
{
    (void)key;
    (void)key_len;
    stub_has_digest = digest != NULL;
    if (digest != NULL)
        memcpy(stub_digest, digest, sizeof stub_digest);
    ud_submit(w, ns, records, lens, n, cb, arg);
}

static int stub_version_lsn(void *arg, const uint8_t *value, size_t value_len, uint64_t lsn)
{
    (void)value, (void)value_len;
    *(uint64_t *)arg = lsn;
    return 0;
}

/* The condition judged as the FSM judges it, when the stub applies the record (at submit). */
void ud_submit_cond(struct ud_writer *w, const char *ns, const uint8_t *key, size_t key_len,
                    const uint8_t *digest, uint8_t *record, size_t len,
                    const struct ud_submit_cond *cond, ud_submit_cb cb, void *arg)
{
    struct ud_ns *h = NULL;
    struct ud_record rec;
    struct ud_entry e;
    struct ud_entry_iter it;
    uint64_t cur = 0;
    if (cond == NULL || stub_busy || stub_fail != 0 ||
        ud_record_decode(record, len, &rec, NULL) != 0 ||
        ud_registry_acquire(w->registry, ns, &h) != 0) {
        ud_submit_keyed(w, ns, key, key_len, digest, &record, &len, 1, cb, arg);
        return;
    }
    ud_entry_iter_init(&it, &rec);
    ud_entry_iter_next(&it, &e);
    ud_ns_kv_get_with(h, e.key, e.key_len, stub_version_lsn, &cur);
    ud_registry_release(w->registry, h);
    char msg[UD_ERRMSG_SIZE];
    if (ud_command_cond_check(cond->kind, cond->lsn, cur, msg) == 0) {
        ud_submit_keyed(w, ns, key, key_len, digest, &record, &len, 1, cb, arg);
        return;
    }
    free(record);
    struct stub_call *c = stub_new(w, 1, cb, arg);
    c->status = UD_EPRECONDITION;
    c->n = 1;
    c->lsns[0] = cur;
    snprintf(c->errmsg, sizeof c->errmsg, "%s", msg);
    uv_timer_start(&c->timer, stub_fire, stub_delay_ms, 0);
}

static void hex_of(const uint8_t *d, char out[2 * UD_COMMAND_DIGEST_SIZE + 1])
{
    for (size_t i = 0; i < UD_COMMAND_DIGEST_SIZE; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
}

/* Answers the digest a forwarding follower sent (UD_HTTP_DIGEST_HEADER), "none" without one. */
static void on_digest_probe(struct ud_http_req *r, void *arg)
{
    (void)arg;
    uint8_t d[UD_COMMAND_DIGEST_SIZE];
    char hex[2 * UD_COMMAND_DIGEST_SIZE + 1] = "none", why[160];
    int rc = ud_http_forwarded_digest(r, d, why, sizeof why);
    if (rc < 0) {
        ud_http_reply(r, 200, "text/plain", why, strlen(why));
        return;
    }
    if (rc > 0)
        hex_of(d, hex);
    ud_http_reply(r, 200, "text/plain", hex, strlen(hex));
}

/* A single node that leads: nothing is forwarded, and the cluster routes are not served. */
int ud_cluster_intercept(void *arg, struct ud_http_req *r)
{
    (void)arg;
    (void)r;
    return 0;
}

void ud_cluster_on_reply(void *arg, struct ud_http_req *r)
{
    (void)arg;
    (void)r;
}

int ud_cluster_add_routes(struct ud_http_server *srv, struct ud_writer *w)
{
    (void)w;
    const struct ud_http_route probe = {"digest_probe",  UD_HTTP_POST, "/test/digest", 0,
                                        on_digest_probe, NULL};
    return ud_http_server_add_route(srv, &probe);
}

void ud_submit_ns_create(struct ud_writer *w, const char *ns, ud_submit_cb cb, void *arg)
{
    struct stub_call *c = stub_new(w, 0, cb, arg);
    c->status = ud_registry_create(w->registry, ns, c->errmsg);
    uv_timer_start(&c->timer, stub_fire, 0, 0);
}

void ud_submit_ns_delete(struct ud_writer *w, const char *ns, ud_submit_cb cb, void *arg)
{
    struct stub_call *c = stub_new(w, 0, cb, arg);
    c->status = ud_registry_delete(w->registry, ns, c->errmsg);
    uv_timer_start(&c->timer, stub_fire, 0, 0);
}

/* No raft here: no stage timings. */
void ud_submit_stats(struct ud_writer *w, struct ud_submit_stats *st)
{
    (void)w;
    memset(st, 0, sizeof *st);
}

int ud_writer_is_leader(struct ud_writer *w)
{
    (void)w;
    return 1;
}

/* No raft, no tombstones: a 404 here never says "deleted". */
uint64_t ud_writer_ns_deleted(struct ud_writer *w, const char *name)
{
    (void)w;
    (void)name;
    return 0;
}

const char *ud_writer_catching_up(struct ud_writer *w)
{
    (void)w;
    return NULL;
}

/* No raft log here: never short of room. */
bool ud_raft_log_short(void)
{
    return false;
}

void ud_raft_log_short_reason(char *buf, size_t size)
{
    snprintf(buf, size, "unused");
}

/* No raft node here (w->raft is NULL): these only satisfy the linker. */
int ud_raft_node_leader_ready(struct ud_raft_node *n)
{
    (void)n;
    return 1;
}

void ud_raft_node_leader(struct ud_raft_node *n, uint64_t *id, const char **address)
{
    (void)n;
    *id = 0;
    *address = NULL;
}

const char *ud_raft_node_address(const struct ud_raft_node *n)
{
    (void)n;
    return "";
}

uint64_t ud_raft_node_last_applied(struct ud_raft_node *n)
{
    (void)n;
    return 0;
}

uint64_t ud_raft_node_term(struct ud_raft_node *n)
{
    (void)n;
    return 1;
}

unsigned ud_raft_node_inflight(const struct ud_raft_node *n)
{
    (void)n;
    return 0;
}

struct ud_fsm *ud_raft_node_fsm(struct ud_raft_node *n)
{
    (void)n;
    return NULL;
}

/* --- the server on its loop thread ------------------------------------------------------------ */

static struct {
    char *dir;
    struct ud_writer_config cfg;
    struct ud_writer w;
    uv_loop_t loop;
    uv_async_t stop_async;
    pthread_t thread;
    int port;
    int stopped;
    int joined; /* the test stopped the server itself */
} srv;

static void http_stopped(struct ud_writer *w)
{
    (void)w;
    srv.stopped = 1;
    uv_close((uv_handle_t *)&srv.stop_async, NULL);
}

static void stop_cb(uv_async_t *a)
{
    (void)a;
    ud_writer_http_stop(&srv.w, http_stopped);
}

static void *loop_main(void *arg)
{
    (void)arg;
    uv_run(&srv.loop, UV_RUN_DEFAULT);
    return NULL;
}

static int setup(void **state)
{
    (void)state;
    memset(&srv, 0, sizeof srv);
    srv.dir = ud_test_tmpdir("http-server");
    struct ud_writer_config *cfg = &srv.cfg;
    snprintf(cfg->data_dir, sizeof cfg->data_dir, "%s", srv.dir);
    snprintf(cfg->http_listen, sizeof cfg->http_listen, "127.0.0.1:0");
    snprintf(cfg->backup_root, sizeof cfg->backup_root, "%s/backups", srv.dir);
    snprintf(cfg->raft_listen, sizeof cfg->raft_listen, "127.0.0.1:4100");
    cfg->max_body = 1048576;
    cfg->node_id = 1;
    cfg->txn_idle_timeout_ms = 400;
    cfg->engine.sync_mode = UD_WAL_SYNC_NONE;
    cfg->engine.segment_size = 2u << 20; /* small: WAL backups get sealed segments */
    cfg->engine.map_size = 64u << 20;
    char root[1100], errmsg[UD_ERRMSG_SIZE] = "";
    snprintf(root, sizeof root, "%s/ns", srv.dir);
    struct ud_registry *reg;
    assert_int_equal(ud_registry_open(root, &cfg->engine, &reg, errmsg), 0);
    assert_int_equal(ud_registry_create(reg, "default", errmsg), 0);
    uv_loop_init(&srv.loop);
    srv.w.loop = &srv.loop;
    srv.w.config = cfg;
    srv.w.registry = reg;
    if (ud_writer_http_start(&srv.w, errmsg) != 0)
        print_message("start: %s\n", errmsg);
    assert_non_null(srv.w.http);
    srv.port = srv.w.http_port;
    assert_true(srv.port > 0);
    uv_async_init(&srv.loop, &srv.stop_async, stop_cb);
    pthread_create(&srv.thread, NULL, loop_main, NULL);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    if (!srv.joined) {
        uv_async_send(&srv.stop_async);
        pthread_join(srv.thread, NULL);
    }
    assert_true(srv.stopped);
    assert_null(srv.w.http); /* freed: nothing was left in flight */
    assert_int_equal(uv_loop_close(&srv.loop), 0);
    ud_registry_close(srv.w.registry);
    ud_test_rmtree(srv.dir);
    free(srv.dir);
    return 0;
}

/* --- a small HTTP/1.1 client ------------------------------------------------------------------ */

struct resp {
    int status;
    char headers[4096];
    char *body; /* NUL-terminated */
    size_t len;
};

static void resp_free(struct resp *r)
{
    free(r->body);
    memset(r, 0, sizeof *r);
}

static int connect_port(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    struct timeval tv = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

static void send_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        if (w <= 0)
            return; /* the server may answer early and close */
        c += w;
        n -= (size_t)w;
    }
}

/* One request on a fresh connection; extra is more header lines ("If-Match: 3\r\n"). */
static struct resp req(const char *method, const char *path, const char *extra, const void *body,
                       size_t len)
{
    int fd = connect_port(srv.port);
    char head[8192];
    int hl = snprintf(head, sizeof head,
                      "%s %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n%s"
                      "Content-Length: %zu\r\n\r\n",
                      method, path, extra ? extra : "", len);
    send_all(fd, head, (size_t)hl);
    if (len > 0)
        send_all(fd, body, len);
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    for (;;) {
        if (n == cap)
            buf = realloc(buf, (cap *= 2) + 1);
        ssize_t r = recv(fd, buf + n, cap - n, 0);
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    buf[n] = '\0';
    struct resp out = {0};
    char *end = strstr(buf, "\r\n\r\n");
    assert_non_null(end);
    sscanf(buf, "HTTP/1.1 %d", &out.status);
    size_t h = (size_t)(end - buf);
    memcpy(out.headers, buf, h < sizeof out.headers - 1 ? h : sizeof out.headers - 1);
    out.len = n - h - 4;
    out.body = malloc(out.len + 1);
    memcpy(out.body, end + 4, out.len);
    out.body[out.len] = '\0';
    free(buf);
    return out;
}

static struct resp reqs(const char *method, const char *path, const char *body)
{
    return req(method, path, NULL, body, body ? strlen(body) : 0);
}

/* Asserts status and that body contains want. */
#define EXPECT(resp, code, want)                                                                   \
    do {                                                                                           \
        if ((resp).status != (code) || strstr((resp).body, (want)) == NULL)                        \
            print_message("line %d: got %d %s; want %d with %s\n", __LINE__, (resp).status,        \
                          (resp).body, (code), (want));                                            \
        assert_int_equal((resp).status, (code));                                                   \
        assert_non_null(strstr((resp).body, (want)));                                              \
    } while (0)

static uint64_t json_u64(const char *body, const char *field)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", field);
    const char *p = strstr(body, pat);
    assert_non_null(p);
    return strtoull(p + strlen(pat), NULL, 10);
}

static void json_str(const char *body, const char *field, char *out, size_t size)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":\"", field);
    const char *p = strstr(body, pat);
    assert_non_null(p);
    p += strlen(pat);
    const char *q = strchr(p, '"');
    snprintf(out, size, "%.*s", (int)(q - p), p);
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* --- tests ------------------------------------------------------------------------------------ */

static void test_kv(void **state)
{
    (void)state;
    struct resp r = reqs("PUT", "/api/v1/default/kv/user:123", "{\"value\":\"aGVsbG8=\"}");
    EXPECT(r, 200, "\"success\":true");
    uint64_t lsn = json_u64(r.body, "lsn");
    assert_true(lsn > 0);
    resp_free(&r);
    r = reqs("GET", "/api/v1/default/kv/user:123", NULL);
    EXPECT(r, 200, "{\"value\":\"aGVsbG8=\",\"found\":true");
    assert_int_equal(json_u64(r.body, "lsn"), lsn);
    assert_non_null(strstr(r.headers, "application/json"));
    resp_free(&r);
    r = reqs("GET", "/api/v1/default/kv/nope", NULL);
    assert_int_equal(r.status, 404);
    assert_string_equal(r.body, "{\"value\":\"\",\"found\":false}\n");
    resp_free(&r);

    /* Keys come from the raw path, decoded once: these are five different keys. */
    const char *paths[] = {"/api/v1/default/kv/a/../b", "/api/v1/default/kv/%2e%2e",
                           "/api/v1/default/kv/a%2Fb", "/api/v1/default/kv/b",
                           "/api/v1/default/kv/%252e"};
    const char *vals[] = {"MQ==", "Mg==", "Mw==", "NA==", "NQ=="};
    for (int i = 0; i < 5; i++) {
        char body[64];
        snprintf(body, sizeof body, "{\"value\":\"%s\"}", vals[i]);
        r = reqs("PUT", paths[i], body);
        EXPECT(r, 200, "success");
        resp_free(&r);
    }
    for (int i = 0; i < 5; i++) {
        r = reqs("GET", paths[i], NULL);
        EXPECT(r, 200, vals[i]);
        resp_free(&r);
    }
    r = reqs("GET", "/api/v1/default/kv/..", NULL); /* the key "..", never a parent */
    EXPECT(r, 200, "Mg==");
    resp_free(&r);

    r = reqs("DELETE", "/api/v1/default/kv/user:123", NULL);
    EXPECT(r, 200, "\"success\":true,\"lsn\":");
    assert_true(json_u64(r.body, "lsn") > lsn);
    resp_free(&r);
    r = reqs("GET", "/api/v1/default/kv/user:123", NULL);
    EXPECT(r, 404, "\"found\":false");
    resp_free(&r);

    /* Key sizes: 0 and 512 bytes refused, 511 accepted. */
    r = reqs("PUT", "/api/v1/default/kv/", "{\"value\":\"\"}");
    EXPECT(r, 400, "key is empty");
    resp_free(&r);
    char path[700];
    int n = snprintf(path, sizeof path, "/api/v1/default/kv/");
    memset(path + n, 'k', 512);
    path[n + 512] = '\0';
    r = reqs("PUT", path, "{\"value\":\"\"}");
    EXPECT(r, 400, "kv key is 512 bytes; the limit is 511");
    resp_free(&r);
    r = reqs("GET", path, NULL);
    EXPECT(r, 400, "511");
    resp_free(&r);
    path[n + 511] = '\0';
    r = reqs("PUT", path, "{\"value\":\"eA==\"}");
    EXPECT(r, 200, "success");
    resp_free(&r);
    r = reqs("GET", path, NULL);
    EXPECT(r, 200, "\"eA==\"");
    resp_free(&r);
}

static void test_errors(void **state)
{
    (void)state;
    struct resp r = reqs("PUT", "/api/v1/default/kv/x", "{\"value\":");
    EXPECT(r, 400, "malformed JSON");
    resp_free(&r);
    r = reqs("PUT", "/api/v1/default/kv/x", "{\"value\":\"%%%\"}");
    EXPECT(r, 400, "{\"error\":\"invalid base64 encoding in field \\\"value\\\"\"}");
    resp_free(&r);
    r = reqs("PUT", "/api/v1/default/kv/x", "{\"value\":1}");
    EXPECT(r, 400, "must be a base64 string");
    resp_free(&r);
    r = reqs("PUT", "/api/v1/default/kv/x", NULL);
    EXPECT(r, 400, "body is empty");
    resp_free(&r);
    r = reqs("GET", "/api/v1/invalid-ns/kv/x", NULL);
    EXPECT(r, 404, "{\"error\":\"namespace not found: invalid-ns\"}");
    resp_free(&r);
    r = reqs("PUT", "/api/v1/..%2f../kv/x", "{\"value\":\"\"}");
    EXPECT(r, 404, "namespace not found");
    resp_free(&r);
    r = reqs("GET", "/api/v1/default/kv/a%zz", NULL);
    EXPECT(r, 400, "bad percent escape");
    resp_free(&r);
    r = reqs("GET", "/nothing/here", NULL);
    EXPECT(r, 404, "no route for GET /nothing/here");
    resp_free(&r);
    r = reqs("POST", "/api/v1/default/kv/x", "{}");
    EXPECT(r, 405, "not allowed");
    assert_non_null(strstr(r.headers, "GET, PUT, DELETE"));
    resp_free(&r);
    r = reqs("PATCH", "/healthz", NULL);
    EXPECT(r, 405, "not allowed");
    resp_free(&r);
    /* Admission control: 503 with Retry-After. */
    stub_busy = 1;
    r = reqs("PUT", "/api/v1/default/kv/x", "{\"value\":\"\"}");
    stub_busy = 0;
    EXPECT(r, 503, "retry later");
    assert_non_null(strstr(r.headers, "retry-after: 1"));
    resp_free(&r);
    /* A write in doubt: 503 marked unison-outcome: unknown, without Retry-After (a retry without
     * the first attempt's Idempotency-Key may apply it twice). */
    stub_fail = UD_EINDOUBT;
    r = reqs("PUT", "/api/v1/default/kv/x", "{\"value\":\"\"}");
    stub_fail = 0;
    assert_int_equal(r.status, 503);
    assert_non_null(strstr(r.headers, "unison-outcome: unknown"));
    assert_null(strstr(r.headers, "retry-after"));
    resp_free(&r);
    /* A begin in doubt cannot be read back by key: it says to begin again. */
    stub_fail = UD_EINDOUBT;
    r = reqs("POST", "/api/v1/default/tx/begin", "{\"operation\":\"put\",\"entryType\":\"kv\"}");
    stub_fail = 0;
    EXPECT(r, 503,
           "begin again (with another Idempotency-Key): a transaction this begin began "
           "is aborted once idle");
    assert_non_null(strstr(r.headers, "unison-outcome: unknown"));
    resp_free(&r);
}

static void test_body_limit(void **state)
{
    (void)state;
    /* {"value":"<base64>"} of exactly 1,048,576 bytes: accepted. */
    size_t total = 1048576, frame = strlen("{\"value\":\"\"}");
    size_t b64 = (total - frame) / 4 * 4;
    char *body = malloc(total + 2);
    size_t pad = total - frame - b64; /* spaces are valid JSON whitespace */
    int n = sprintf(body, "{%*s\"value\":\"", (int)pad, "");
    memset(body + n, 'A', b64);
    strcpy(body + n + b64, "\"}");
    assert_int_equal(strlen(body), total);
    struct resp r = req("PUT", "/api/v1/default/kv/big", NULL, body, total);
    EXPECT(r, 200, "success");
    resp_free(&r);
    /* One byte more: our JSON 413. */
    memmove(body + 1, body, total + 1);
    body[0] = ' ';
    r = req("PUT", "/api/v1/default/kv/big", NULL, body, total + 1);
    EXPECT(r, 413, "request body of 1048577 bytes exceeds the limit of 1048576 bytes");
    assert_non_null(strstr(r.headers, "application/json"));
    resp_free(&r);
    free(body);
}

static void test_if_match(void **state)
{
    (void)state;
    struct resp r = reqs("PUT", "/api/v1/default/kv/cond", "{\"value\":\"MQ==\"}");
    uint64_t l1 = json_u64(r.body, "lsn");
    resp_free(&r);
    char h[64];
    snprintf(h, sizeof h, "If-Match: \"%llu\"\r\n", (unsigned long long)l1);
    const char *v2 = "{\"value\":\"Mg==\"}";
    r = req("PUT", "/api/v1/default/kv/cond", h, v2, strlen(v2));
    EXPECT(r, 200, "success");
    uint64_t l2 = json_u64(r.body, "lsn");
    resp_free(&r);
    /* The same precondition again is stale now. */
    r = req("PUT", "/api/v1/default/kv/cond", h, v2, strlen(v2));
    EXPECT(r, 412, "precondition failed");
    assert_int_equal(json_u64(r.body, "lsn"), l2);
    resp_free(&r);
    r = reqs("GET", "/api/v1/default/kv/cond", NULL);
    EXPECT(r, 200, "Mg==");
    char etag[64];
    snprintf(etag, sizeof etag, "etag: \"%llu\"", (unsigned long long)l2);
    assert_non_null(strstr(r.headers, etag));
    resp_free(&r);
    r = req("PUT", "/api/v1/default/kv/cond", "If-Match: 0\r\n", v2, strlen(v2));
    EXPECT(r, 412, "precondition failed");
    resp_free(&r);
    r = req("PUT", "/api/v1/default/kv/fresh", "If-Match: 0\r\n", v2, strlen(v2));
    EXPECT(r, 200, "success");
    resp_free(&r);
    r = req("DELETE", "/api/v1/default/kv/missing", "If-Match: *\r\n", NULL, 0);
    EXPECT(r, 412, "does not exist");
    resp_free(&r);
    snprintf(h, sizeof h, "If-Match: %llu\r\n", (unsigned long long)l2);
    r = req("DELETE", "/api/v1/default/kv/cond", h, NULL, 0);
    EXPECT(r, 200, "success");
    resp_free(&r);
    r = req("PUT", "/api/v1/default/kv/cond", "If-Match: x\r\n", v2, strlen(v2));
    EXPECT(r, 400, "If-Match");
    resp_free(&r);
}

static void test_batches_and_scans(void **state)
{
    (void)state;
    struct resp r = reqs("POST", "/api/v1/default/kv/batch",
                         "{\"operation\":\"put\",\"items\":[{\"key\":\"user:1\",\"value\":"
                         "\"dXNlcjE=\"},{\"key\":\"user:2\",\"value\":\"dXNlcjI=\"}]}");
    EXPECT(r, 200, "{\"success\":true,\"processed\":2,\"lsn\":");
    resp_free(&r);
    r = reqs("GET", "/api/v1/default/kv/user:2", NULL);
    EXPECT(r, 200, "dXNlcjI=");
    resp_free(&r);
    r = reqs("POST", "/api/v1/default/kv/batch",
             "{\"operation\":\"delete\",\"keys\":[\"user:1\",\"user:2\"]}");
    EXPECT(r, 200, "\"processed\":2");
    resp_free(&r);
    r = reqs("GET", "/api/v1/default/kv/user:1", NULL);
    EXPECT(r, 404, "false");
    resp_free(&r);
    /* PUT kv/batch is a key named "batch", not a batch. */
    r = reqs("PUT", "/api/v1/default/kv/batch", "{\"value\":\"Yg==\"}");
    EXPECT(r, 200, "success");
    resp_free(&r);
    r = reqs("GET", "/api/v1/default/kv/batch", NULL);
    EXPECT(r, 200, "Yg==");
    resp_free(&r);

    /* 25 keys under a prefix, read 10 at a time following "next". */
    char items[8192] = "{\"operation\":\"put\",\"items\":[";
    for (int i = 0; i < 25; i++)
        sprintf(items + strlen(items), "%s{\"key\":\"scan:%02d\",\"value\":\"eA==\"}", i ? "," : "",
                i);
    strcat(items, "]}");
    r = reqs("POST", "/api/v1/default/kv/batch", items);
    EXPECT(r, 200, "\"processed\":25");
    resp_free(&r);
    char path[256] = "/api/v1/default/kv?prefix=scan:&limit=10";
    int pages = 0, seen = 0;
    for (;;) {
        r = reqs("GET", path, NULL);
        EXPECT(r, 200, "\"items\":[");
        for (const char *p = r.body; (p = strstr(p, "\"key\":")) != NULL; p++)
            seen++;
        pages++;
        if (strstr(r.body, "\"next\":null") != NULL) {
            resp_free(&r);
            break;
        }
        char next[128];
        json_str(r.body, "next", next, sizeof next);
        snprintf(path, sizeof path, "/api/v1/default/kv?prefix=scan:&limit=10&start=%s", next);
        resp_free(&r);
        assert_true(pages < 5);
    }
    assert_int_equal(seen, 25);
    assert_int_equal(pages, 3);
    /* scan:00 in base64 is c2NhbjowMA== */
    r = reqs("GET", "/api/v1/default/kv?prefix=scan:&limit=1", NULL);
    EXPECT(r, 200, "{\"items\":[{\"key\":\"c2NhbjowMA==\",\"value\":\"eA==\"");
    resp_free(&r);
    r = reqs("GET", "/api/v1/default/kv?limit=1001", NULL);
    EXPECT(r, 400, "from 1 to 1000");
    resp_free(&r);
    r = reqs("GET", "/api/v1/default/kv?start=@@", NULL);
    EXPECT(r, 400, "invalid base64");
    resp_free(&r);
}

static void test_rows(void **state)
{
    (void)state;
    struct resp r = reqs("PUT", "/api/v1/default/row/user:john",
                         "{\"columns\":{\"name\":\"Sm9obiBEb2U=\",\"email\":"
                         "\"am9obkBleGFtcGxlLmNvbQ==\",\"age\":\"MzA=\"}}");
    EXPECT(r, 200, "\"success\":true,\"lsn\":");
    resp_free(&r);
    r = reqs("GET", "/api/v1/default/row/user:john", NULL);
    EXPECT(r, 200, "\"rowKey\":\"user:john\"");
    assert_non_null(strstr(r.body, "\"name\":\"Sm9obiBEb2U=\""));
    assert_non_null(strstr(r.body, "\"age\":\"MzA=\""));
    assert_non_null(strstr(r.body, "\"found\":true"));
    resp_free(&r);
    r = reqs("GET", "/api/v1/default/row/user:john?columns=name,email", NULL);
    EXPECT(r, 200, "\"email\":\"am9obkBleGFtcGxlLmNvbQ==\"");
    assert_null(strstr(r.body, "\"age\""));
    resp_free(&r);
    r = reqs("DELETE", "/api/v1/default/row/user:john/columns?columns=age,city", NULL);
    EXPECT(r, 200, "success");
    resp_free(&r);
    r = reqs("GET", "/api/v1/default/row/user:john", NULL);
    EXPECT(r, 200, "\"name\"");
    assert_null(strstr(r.body, "\"age\""));
    resp_free(&r);
    r = reqs("DELETE", "/api/v1/default/row/user:john/columns", NULL);
    EXPECT(r, 400, "query parameter columns is required");
    resp_free(&r);
    r = reqs("DELETE", "/api/v1/default/row/user:john", NULL);
    EXPECT(r, 200, "success");
    resp_free(&r);
    r = reqs("GET", "/api/v1/default/row/user:john", NULL);
    EXPECT(r, 404, "\"found\":false");
    resp_free(&r);
    r = reqs("POST", "/api/v1/default/row/batch",
             "{\"operation\":\"put\",\"rows\":[{\"rowKey\":\"user:1\",\"columns\":{\"name\":"
             "\"QWxpY2U=\",\"email\":\"YWxpY2VAZXhhbXBsZS5jb20=\"}},{\"rowKey\":\"user:2\","
             "\"columns\":{\"name\":\"Qm9i\"}}]}");
    EXPECT(r, 200, "\"processed\":2");
    resp_free(&r);
    r = reqs("GET", "/api/v1/default/row?prefix=user:&limit=1", NULL);
    EXPECT(r, 200,
           "{\"items\":[{\"key\":\"dXNlcjox\",\"columns\":{\"email\":"
           "\"YWxpY2VAZXhhbXBsZS5jb20=\",\"name\":\"QWxpY2U=\"}}],\"next\":\"dXNlcjoy\"}");
    resp_free(&r);
    r = reqs("GET", "/api/v1/default/row?prefix=user:&start=dXNlcjoy", NULL);
    EXPECT(r, 200,
           "{\"items\":[{\"key\":\"dXNlcjoy\",\"columns\":{\"name\":\"Qm9i\"}}],"
           "\"next\":null}");
    resp_free(&r);
    r = reqs("PUT", "/api/v1/default/row/r", "{\"columns\":{}}");
    EXPECT(r, 400, "names no columns");
    resp_free(&r);
}

static void test_transactions(void **state)
{
    (void)state;
    struct resp r =
        reqs("POST", "/api/v1/default/tx/begin", "{\"operation\":\"put\",\"entryType\":\"kv\"}");
    EXPECT(r, 200, "\"success\":true");
    char id[64], path[256];
    json_str(r.body, "txnId", id, sizeof id);
    assert_int_equal(strlen(id), 32);
    resp_free(&r);
    snprintf(path, sizeof path, "/api/v1/default/tx/%s/kv", id);
    r = reqs("POST", path, "{\"key\":\"account:alice\",\"value\":\"MTAwMA==\"}");
    EXPECT(r, 200, "\"success\":true,\"lsn\":");
    resp_free(&r);
    r = reqs("POST", path, "{\"key\":\"account:bob\",\"value\":\"MjAwMA==\"}");
    EXPECT(r, 200, "success");
    resp_free(&r);
    r = reqs("GET", "/api/v1/default/kv/account:alice", NULL);
    EXPECT(r, 404, "false"); /* invisible until the commit */
    resp_free(&r);
    snprintf(path, sizeof path, "/api/v1/default/tx/%s/row", id);
    r = reqs("POST", path, "{\"rowKey\":\"r\",\"columns\":{\"a\":\"YQ==\"}}");
    EXPECT(r, 400, "is a kv transaction");
    resp_free(&r);
    snprintf(path, sizeof path, "/api/v1/default/tx/%s/commit", id);
    r = reqs("POST", path, NULL);
    EXPECT(r, 200, "\"success\":true,\"lsn\":");
    resp_free(&r);
    r = reqs("GET", "/api/v1/default/kv/account:bob", NULL);
    EXPECT(r, 200, "MjAwMA==");
    resp_free(&r);
    r = reqs("POST", path, NULL); /* finished */
    EXPECT(r, 404, "transaction not found");
    resp_free(&r);
    r = reqs("POST", "/api/v1/default/tx/0123456789abcdef0123456789abcdef/kv",
             "{\"key\":\"a\",\"value\":\"\"}");
    EXPECT(r, 404, "transaction not found: 0123456789abcdef0123456789abcdef");
    resp_free(&r);
    r = reqs("POST", "/api/v1/default/tx/2a3b4c/abort", NULL);
    EXPECT(r, 404, "transaction not found");
    resp_free(&r);
    r = reqs("POST", "/api/v1/default/tx/begin", "{\"operation\":\"put\",\"entryType\":\"doc\"}");
    EXPECT(r, 400, "entryType");
    resp_free(&r);

    /* Abort discards; update of a missing row fails at commit with 404. */
    r = reqs("POST", "/api/v1/default/tx/begin",
             "{\"operation\":\"update\",\"entryType\":\"row\"}");
    json_str(r.body, "txnId", id, sizeof id);
    resp_free(&r);
    snprintf(path, sizeof path, "/api/v1/default/tx/%s/row", id);
    r = reqs("POST", path, "{\"rowKey\":\"ghost\",\"columns\":{\"a\":\"YQ==\"}}");
    EXPECT(r, 404, "does not exist");
    resp_free(&r);
    snprintf(path, sizeof path, "/api/v1/default/tx/%s/abort", id);
    r = reqs("POST", path, NULL);
    EXPECT(r, 200, "success");
    resp_free(&r);
}

static void test_lob(void **state)
{
    (void)state;
    struct resp r =
        reqs("POST", "/api/v1/default/tx/begin", "{\"operation\":\"put\",\"entryType\":\"lob\"}");
    char id[64], path[256];
    json_str(r.body, "txnId", id, sizeof id);
    resp_free(&r);
    size_t chunk = 1048576, total = 3 * chunk - 1000;
    uint8_t *data = malloc(total);
    uint64_t seed = 7;
    ud_test_fill(&seed, data, total);
    for (size_t off = 0; off < total; off += chunk) {
        size_t n = total - off < chunk ? total - off : chunk;
        snprintf(path, sizeof path, "/api/v1/default/tx/%s/lob?key=file:doc.pdf&offset=%zu", id,
                 off);
        r = req("POST", path, "Content-Type: application/octet-stream\r\n", data + off, n);
        EXPECT(r, 200, "\"success\":true");
        assert_int_equal(json_u64(r.body, "size"), off + n);
        resp_free(&r);
        if (off == chunk) { /* a retried chunk: accepted, nothing new */
            r = req("POST", path, NULL, data + off, n);
            EXPECT(r, 200, "\"success\":true");
            assert_int_equal(json_u64(r.body, "size"), off + n);
            resp_free(&r);
        }
    }
    snprintf(path, sizeof path, "/api/v1/default/tx/%s/lob?key=file:doc.pdf&offset=5", id);
    r = req("POST", path, NULL, data, 10);
    EXPECT(r, 409, "\"expectedOffset\":");
    assert_int_equal(json_u64(r.body, "expectedOffset"), total);
    resp_free(&r);
    snprintf(path, sizeof path, "/api/v1/default/tx/%s/lob?key=other", id);
    r = req("POST", path, NULL, data, 10);
    EXPECT(r, 409, "exactly one key");
    resp_free(&r);
    snprintf(path, sizeof path, "/api/v1/default/tx/%s/lob", id);
    r = req("POST", path, NULL, data, 10);
    EXPECT(r, 400, "query parameter key is required");
    resp_free(&r);
    snprintf(path, sizeof path, "/api/v1/default/tx/%s/commit", id);
    r = reqs("POST", path, NULL);
    EXPECT(r, 200, "success");
    resp_free(&r);
    r = reqs("GET", "/api/v1/default/lob?key=file:doc.pdf", NULL);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.len, total);
    assert_memory_equal(r.body, data, total);
    assert_non_null(strstr(r.headers, "application/octet-stream"));
    resp_free(&r);
    /* Byte ranges: inside a chunk, across a chunk boundary, to the end, a suffix, clamped. */
    const size_t parts[][2] = {{0, 0},
                               {10, 20},
                               {chunk - 3, chunk + 2},
                               {chunk - 1, 2 * chunk},
                               {5, total - 1},
                               {total - 1, total - 1}};
    char hdr[128], want[128];
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        size_t first = parts[i][0], last = parts[i][1];
        snprintf(hdr, sizeof hdr, "Range: bytes=%zu-%zu\r\n", first, i == 4 ? total + 99 : last);
        r = req("GET", "/api/v1/default/lob?key=file:doc.pdf", hdr, NULL, 0);
        snprintf(want, sizeof want, "content-range: bytes %zu-%zu/%zu", first, last, total);
        if (r.status != 206 || strstr(r.headers, want) == NULL)
            print_message("%s: %d\n%s\n", hdr, r.status, r.headers);
        assert_int_equal(r.status, 206);
        assert_non_null(strstr(r.headers, want));
        assert_int_equal(r.len, last - first + 1);
        assert_memory_equal(r.body, data + first, r.len);
        resp_free(&r);
    }
    r = req("GET", "/api/v1/default/lob?key=file:doc.pdf", "Range: bytes=-1000\r\n", NULL, 0);
    assert_int_equal(r.status, 206);
    assert_int_equal(r.len, 1000);
    assert_memory_equal(r.body, data + total - 1000, 1000);
    resp_free(&r);
    snprintf(hdr, sizeof hdr, "Range: bytes=%zu-\r\n", total);
    r = req("GET", "/api/v1/default/lob?key=file:doc.pdf", hdr, NULL, 0);
    EXPECT(r, 416, "is not satisfiable");
    snprintf(want, sizeof want, "content-range: bytes */%zu", total);
    assert_non_null(strstr(r.headers, want));
    resp_free(&r);
    /* Given on two lines, or with an If-Range that is not the ETag: the whole object. */
    r = req("GET", "/api/v1/default/lob?key=file:doc.pdf",
            "Range: bytes=0-9\r\nRange: bytes=20-29\r\n", NULL, 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.len, total);
    resp_free(&r);
    r = req("GET", "/api/v1/default/lob?key=file:doc.pdf",
            "Range: bytes=0-9\r\nIf-Range: \"1\"\r\n", NULL, 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.len, total);
    assert_memory_equal(r.body, data, total);
    resp_free(&r);
    r = reqs("GET", "/api/v1/default/lob?key=absent", NULL);
    EXPECT(r, 404, "lob not found: absent");
    resp_free(&r);
    r = reqs("GET", "/api/v1/default/lob", NULL);
    EXPECT(r, 400, "query parameter key is required");
    resp_free(&r);
    free(data);
}

static void test_idle_abort(void **state)
{
    (void)state;
    struct resp r =
        reqs("POST", "/api/v1/default/tx/begin", "{\"operation\":\"put\",\"entryType\":\"kv\"}");
    char id[64], path[256];
    json_str(r.body, "txnId", id, sizeof id);
    resp_free(&r);
    snprintf(path, sizeof path, "/api/v1/default/tx/%s/kv", id);
    /* Activity keeps it open past the timeout... */
    for (int i = 0; i < 3; i++) {
        usleep(200 * 1000);
        r = reqs("POST", path, "{\"key\":\"idle\",\"value\":\"eA==\"}");
        EXPECT(r, 200, "success");
        resp_free(&r);
    }
    /* ...and idleness ends it (timeout 400 ms, swept every 100 ms). */
    uint64_t t0 = now_ms();
    for (;;) {
        usleep(100 * 1000);
        r = reqs("GET", "/api/v1/default/stats", NULL);
        uint64_t open = json_u64(r.body, "openTransactions");
        resp_free(&r);
        if (open == 0)
            break;
        assert_true(now_ms() - t0 < 3000);
    }
    r = reqs("POST", path, "{\"key\":\"idle\",\"value\":\"eA==\"}");
    EXPECT(r, 404, "transaction not found");
    resp_free(&r);
}

struct waiter_arg {
    char path[256];
    struct resp r;
    uint64_t ms;
};

static void *waiter(void *p)
{
    struct waiter_arg *a = p;
    uint64_t t0 = now_ms();
    a->r = reqs("GET", a->path, NULL);
    a->ms = now_ms() - t0;
    return NULL;
}

static void test_min_lsn(void **state)
{
    (void)state;
    struct resp r = reqs("PUT", "/api/v1/default/kv/w", "{\"value\":\"MQ==\"}");
    uint64_t lsn = json_u64(r.body, "lsn");
    resp_free(&r);
    char path[256];
    snprintf(path, sizeof path, "/api/v1/default/kv/w?min_lsn=%llu", (unsigned long long)lsn);
    r = reqs("GET", path, NULL);
    EXPECT(r, 200, "MQ==");
    resp_free(&r);
    /* Not reached within the wait: 503. */
    snprintf(path, sizeof path, "/api/v1/default/kv/w?min_lsn=%llu&timeout_ms=200",
             (unsigned long long)lsn + 1000);
    uint64_t t0 = now_ms();
    r = reqs("GET", path, NULL);
    EXPECT(r, 503, "was not reached");
    assert_true(now_ms() - t0 >= 190);
    resp_free(&r);
    r = reqs("GET", "/api/v1/default/kv/w?min_lsn=abc", NULL);
    EXPECT(r, 400, "min_lsn");
    resp_free(&r);
    /* Woken by the apply: the read waits for the next write and sees it. */
    struct waiter_arg a;
    snprintf(a.path, sizeof a.path, "/api/v1/default/kv/w?min_lsn=%llu&timeout_ms=5000",
             (unsigned long long)lsn + 1);
    pthread_t t;
    pthread_create(&t, NULL, waiter, &a);
    usleep(100 * 1000);
    r = reqs("PUT", "/api/v1/default/kv/w", "{\"value\":\"Mg==\"}");
    EXPECT(r, 200, "success");
    resp_free(&r);
    pthread_join(t, NULL);
    EXPECT(a.r, 200, "Mg==");
    assert_true(a.ms < 2000);
    resp_free(&a.r);
}

static void test_namespaces(void **state)
{
    (void)state;
    struct resp r = reqs("PUT", "/api/v1/users", NULL);
    EXPECT(r, 200, "\"created\":true");
    resp_free(&r);
    r = reqs("PUT", "/api/v1/users", NULL);
    EXPECT(r, 409, "already exists");
    resp_free(&r);
    r = reqs("GET", "/api/v1", NULL);
    EXPECT(r, 200, "{\"namespaces\":[\"default\",\"users\"]}");
    resp_free(&r);
    r = reqs("PUT", "/api/v1/users/kv/k", "{\"value\":\"eA==\"}");
    EXPECT(r, 200, "\"lsn\":1}");
    resp_free(&r);
    r = reqs("PUT", "/api/v1/bad.name", NULL);
    EXPECT(r, 400, "invalid namespace name");
    resp_free(&r);
    r = reqs("DELETE", "/api/v1/users", NULL);
    EXPECT(r, 200, "\"deleted\":true");
    resp_free(&r);
    r = reqs("GET", "/api/v1/users/kv/k", NULL);
    EXPECT(r, 404, "namespace not found: users");
    resp_free(&r);
    r = reqs("DELETE", "/api/v1/users", NULL);
    EXPECT(r, 404, "namespace not found");
    resp_free(&r);
}

static void test_backups(void **state)
{
    (void)state;
    /* Enough writes for three sealed 2 MiB segments. */
    size_t vlen = 1000000;
    char *body = calloc(1, vlen + 32);
    strcpy(body, "{\"value\":\"");
    memset(body + strlen(body), 'Q', vlen);
    strcat(body, "\"}");
    for (int i = 0; i < 10; i++) {
        char path[64];
        snprintf(path, sizeof path, "/api/v1/default/kv/fill%d", i);
        struct resp r = reqs("PUT", path, body);
        EXPECT(r, 200, "success");
        resp_free(&r);
    }
    free(body);
    struct resp r = reqs("POST", "/api/v1/default/wal/backup",
                         "{\"afterSegmentId\":0,\"backupDir\":\"wal/a\"}");
    EXPECT(r, 200, "{\"backups\":[{\"segmentId\":1,\"path\":\"");
    assert_non_null(strstr(r.body, "/backups/default/wal/a/0000000001.seg"));
    assert_non_null(strstr(r.body, "\"segmentId\":2"));
    resp_free(&r);
    r = reqs("POST", "/api/v1/default/wal/backup",
             "{\"afterSegmentId\":2,\"backupDir\":\"wal/b\"}");
    EXPECT(r, 200, "{\"backups\":[{\"segmentId\":3,");
    assert_null(strstr(r.body, "\"segmentId\":2,"));
    resp_free(&r);
    r = reqs("POST", "/api/v1/default/wal/backup", "{\"backupDir\":\"wal/a\"}");
    EXPECT(r, 409, "is not empty (holds 0000000001.seg)");
    resp_free(&r);
    r = reqs("POST", "/api/v1/default/btree/backup", "{\"path\":\"snapshots/users-1.snapshot\"}");
    EXPECT(r, 200, "/backups/default/snapshots/users-1.snapshot\",\"bytes\":");
    assert_true(json_u64(r.body, "bytes") > 0);
    resp_free(&r);
    const char *bad[] = {"{\"path\":\"/etc/x\"}",    "{\"path\":\"../x\"}",
                         "{\"path\":\"a/../../x\"}", "{\"path\":\"%2e%2e/x\"}",
                         "{\"path\":\"..%2fx\"}",    "{\"path\":\"\\u002e\\u002e/x\"}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        r = reqs("POST", "/api/v1/default/btree/backup", bad[i]);
        EXPECT(r, 400, "invalid path");
        resp_free(&r);
    }
    r = reqs("POST", "/api/v1/default/wal/backup", "{\"backupDir\":\"/tmp\"}");
    EXPECT(r, 400, "invalid path: backupDir must be relative");
    resp_free(&r);
    /* A symbolic link under the root does not lead out of it. */
    char link[1200];
    snprintf(link, sizeof link, "%s/backups/default/escape", srv.dir);
    assert_int_equal(symlink("/tmp", link), 0);
    r = reqs("POST", "/api/v1/default/btree/backup", "{\"path\":\"escape/x.db\"}");
    EXPECT(r, 400, "symbolic link");
    resp_free(&r);
    r = reqs("POST", "/api/v1/nope/btree/backup", "{\"path\":\"x\"}");
    EXPECT(r, 404, "namespace not found");
    resp_free(&r);
}

static void test_status_and_metrics(void **state)
{
    (void)state;
    struct resp r = reqs("GET", "/healthz", NULL);
    EXPECT(r, 200, "ok");
    resp_free(&r);
    r = reqs("GET", "/readyz", NULL);
    EXPECT(r, 200, "\"ready\":true");
    resp_free(&r);
    r = reqs("GET", "/status/leader", NULL);
    EXPECT(r, 200, "\"isLeader\":true,\"state\":\"leader\",\"nodeId\":1");
    resp_free(&r);
    r = reqs("GET", "/api/v1/default/offset", NULL);
    EXPECT(r, 200, "{\"namespace\":\"default\",\"segmentId\":");
    assert_non_null(strstr(r.body, "\"offset\":"));
    resp_free(&r);
    r = reqs("GET", "/api/v1/default/stats", NULL);
    EXPECT(r, 200, "\"opsReceived\":");
    assert_non_null(strstr(r.body, "\"lastFlushTime\":"));
    assert_non_null(strstr(r.body, "\"flushedLsn\":"));
    resp_free(&r);
    r = reqs("GET", "/api/v1/default/checkpoint", NULL);
    EXPECT(r, 200, "\"recordProcessed\":");
    assert_non_null(strstr(r.body, "\"lsn\":"));
    assert_non_null(strstr(r.body, "\"flushedLsn\":"));
    resp_free(&r);
    r = reqs("GET", "/metrics", NULL);
    EXPECT(r, 200, "unison_http_requests_total{route=\"healthz\",code=\"200\"} 1\n");
    assert_non_null(
        strstr(r.body, "unison_http_request_duration_seconds_bucket{route=\"healthz\""));
    assert_non_null(strstr(r.body, "unison_flush_lag_records{namespace=\"default\"}"));
    assert_non_null(strstr(r.body, "unison_wal_bytes{namespace=\"default\"}"));
    assert_non_null(strstr(r.body, "unison_raft_leader 1\n"));
    assert_non_null(strstr(r.headers, "text/plain"));
    resp_free(&r);
}

struct bg_req {
    const char *method;
    char path[256];
    char extra[128];
    const char *body;
    struct resp r;
    pthread_t t;
};

static void *bg_main(void *p)
{
    struct bg_req *b = p;
    b->r = req(b->method, b->path, b->extra[0] ? b->extra : NULL, b->body,
               b->body ? strlen(b->body) : 0);
    return NULL;
}

/* Starts a request on its own thread; bg_wait joins it. */
static void bg_start(struct bg_req *b, const char *method, const char *path, const char *extra,
                     const char *body)
{
    memset(b, 0, sizeof *b);
    b->method = method;
    snprintf(b->path, sizeof b->path, "%s", path);
    snprintf(b->extra, sizeof b->extra, "%s", extra ? extra : "");
    b->body = body;
    pthread_create(&b->t, NULL, bg_main, b);
}

static void bg_wait(struct bg_req *b)
{
    pthread_join(b->t, NULL);
}

static void test_serialization(void **state)
{
    (void)state;
    /* Appends to one transaction: one at a time, the second gets 409. */
    struct resp r =
        reqs("POST", "/api/v1/default/tx/begin", "{\"operation\":\"put\",\"entryType\":\"kv\"}");
    char id[64], path[256];
    json_str(r.body, "txnId", id, sizeof id);
    resp_free(&r);
    snprintf(path, sizeof path, "/api/v1/default/tx/%s/kv", id);
    stub_delay_ms = 400;
    struct bg_req first;
    bg_start(&first, "POST", path, NULL, "{\"key\":\"a\",\"value\":\"YQ==\"}");
    usleep(150 * 1000);
    r = reqs("POST", path, "{\"key\":\"b\",\"value\":\"Yg==\"}");
    EXPECT(r, 409, "another request on it is in progress");
    resp_free(&r);
    snprintf(path, sizeof path, "/api/v1/default/tx/%s/commit", id);
    r = reqs("POST", path, NULL);
    EXPECT(r, 409, "in progress");
    resp_free(&r);
    bg_wait(&first);
    EXPECT(first.r, 200, "success");
    resp_free(&first.r);

    /* A conditional write is judged after the write in flight on its key (the seam applies in
     * submission order): it sees that write's result. */
    stub_delay_ms = 0;
    r = reqs("PUT", "/api/v1/default/kv/c", "{\"value\":\"MQ==\"}");
    uint64_t l1 = json_u64(r.body, "lsn");
    resp_free(&r);
    stub_delay_ms = 400;
    struct bg_req other;
    bg_start(&other, "PUT", "/api/v1/default/kv/c", NULL, "{\"value\":\"Mg==\"}");
    usleep(150 * 1000);
    char h[64];
    snprintf(h, sizeof h, "If-Match: %llu\r\n", (unsigned long long)l1);
    const char *v3 = "{\"value\":\"Mw==\"}";
    r = req("PUT", "/api/v1/default/kv/c", h, v3, strlen(v3));
    /* l1 was current when it arrived, but the write in flight lands first. */
    EXPECT(r, 412, "precondition failed");
    bg_wait(&other);
    EXPECT(other.r, 200, "success");
    assert_int_equal(json_u64(r.body, "lsn"), json_u64(other.r.body, "lsn"));
    resp_free(&r);
    resp_free(&other.r);
    stub_delay_ms = 0;
}

static struct resp probe(const char *header)
{
    return req("POST", "/test/digest", header, NULL, 0);
}

/* The digest header a follower sends with records it forwards (writer/cluster.c writes it as 32
 * lowercase hex digits) is read back as the request's digest; an absent one is no digest, and
 * anything else is malformed, naming what is wrong. And a
 * keyed PUT behind writes in flight on its key is submitted with the digest of the request it
 * came with. */
static void test_request_digests(void **state)
{
    (void)state;
    const char *v = "{\"value\":\"ZGc=\"}";
    struct resp r = req("PUT", "/api/v1/default/kv/dg", "Idempotency-Key: dg-1\r\n", v, strlen(v));
    EXPECT(r, 200, "success");
    resp_free(&r);
    assert_true(stub_has_digest);
    uint8_t want[UD_COMMAND_DIGEST_SIZE];
    memcpy(want, stub_digest, sizeof want);
    char hex[2 * UD_COMMAND_DIGEST_SIZE + 1], h[160];
    hex_of(want, hex);
    /* Valid, in lowercase (as sent); uppercase is not how it is sent. */
    snprintf(h, sizeof h, "%s: %s\r\n", UD_HTTP_DIGEST_HEADER, hex);
    r = probe(h);
    EXPECT(r, 200, hex);
    resp_free(&r);
    /* Uppercase hex is refused: a digest whose first digit is made 'A' (whatever the body's
     * digest holds, so the case always runs). */
    char upper[sizeof hex];
    memcpy(upper, hex, sizeof hex);
    upper[0] = 'A';
    snprintf(h, sizeof h, "%s: %s\r\n", UD_HTTP_DIGEST_HEADER, upper);
    r = probe(h);
    EXPECT(r, 200, "must be 32 lowercase hex digits: byte 0 is not one (0x41)");
    resp_free(&r);
    /* Wrong length (one digit short, one over), not hex: malformed; absent: none. */
    snprintf(h, sizeof h, "%s: %.31s\r\n", UD_HTTP_DIGEST_HEADER, hex);
    r = probe(h);
    EXPECT(r, 200, "must be 32 lowercase hex digits, not 31 bytes");
    resp_free(&r);
    snprintf(h, sizeof h, "%s: %s0\r\n", UD_HTTP_DIGEST_HEADER, hex);
    r = probe(h);
    EXPECT(r, 200, "must be 32 lowercase hex digits, not 33 bytes");
    resp_free(&r);
    snprintf(h, sizeof h, "%s: g%.31s\r\n", UD_HTTP_DIGEST_HEADER, hex + 1);
    r = probe(h);
    EXPECT(r, 200, "byte 0 is not one (0x67)");
    resp_free(&r);
    r = probe(NULL);
    EXPECT(r, 200, "none");
    resp_free(&r);

    /* The same PUT behind a write in flight and a conditional one on its key. */
    stub_delay_ms = 400;
    struct bg_req first, cond, keyed;
    bg_start(&first, "PUT", "/api/v1/default/kv/dg", NULL, "{\"value\":\"MQ==\"}");
    usleep(100 * 1000);
    bg_start(&cond, "PUT", "/api/v1/default/kv/dg", "If-Match: *\r\n", "{\"value\":\"Mg==\"}");
    usleep(100 * 1000);
    stub_has_digest = 0;
    bg_start(&keyed, "PUT", "/api/v1/default/kv/dg", "Idempotency-Key: dg-1\r\n", v);
    bg_wait(&first);
    bg_wait(&cond);
    bg_wait(&keyed);
    stub_delay_ms = 0;
    EXPECT(first.r, 200, "success");
    EXPECT(cond.r, 200, "success");
    EXPECT(keyed.r, 200, "success");
    assert_true(keyed.r.status == 200 && stub_has_digest);
    assert_memory_equal(stub_digest, want, sizeof want);
    resp_free(&first.r);
    resp_free(&cond.r);
    resp_free(&keyed.r);
}

static void test_storage_failure(void **state)
{
    (void)state;
    stub_fail = UD_ENOSPC;
    struct resp r = reqs("PUT", "/api/v1/default/kv/x", "{\"value\":\"eA==\"}");
    stub_fail = 0;
    EXPECT(r, 500, "No space left on device");
    resp_free(&r);
    stub_fail = UD_EIO;
    r = reqs("POST", "/api/v1/default/row/batch",
             "{\"operation\":\"put\",\"rows\":[{\"rowKey\":\"r\",\"columns\":{\"a\":\"\"}}]}");
    stub_fail = 0;
    EXPECT(r, 500, "failed to write");
    resp_free(&r);
    /* Reads go on. */
    r = reqs("GET", "/api/v1/default/kv/x", NULL);
    EXPECT(r, 404, "false");
    resp_free(&r);
}

/*
 * Link-time wraps (meson.build): which thread holds a store snapshot, and how many long values
 * were base64-encoded inside one. A snapshot holds off a growth of the store's map, so a GET
 * must not encode a long value in it.
 */
int __real_ud_store_snap_begin(struct ud_store *s, struct ud_store_snap **out);
void __real_ud_store_snap_end(struct ud_store_snap *snap);
void __real_ud_jbuf_b64(struct ud_jbuf *j, const void *data, size_t n);
static _Thread_local int snaps_open;
static _Atomic int long_encodes_in_snapshot;
static _Atomic int snaps_begun; /* store snapshots begun, on any thread */

int __wrap_ud_store_snap_begin(struct ud_store *s, struct ud_store_snap **out)
{
    int rc = __real_ud_store_snap_begin(s, out);
    snaps_open += rc == 0;
    snaps_begun += rc == 0;
    return rc;
}

void __wrap_ud_store_snap_end(struct ud_store_snap *snap)
{
    snaps_open -= snap != NULL;
    __real_ud_store_snap_end(snap);
}

void __wrap_ud_jbuf_b64(struct ud_jbuf *j, const void *data, size_t n)
{
    if (snaps_open > 0 && n > (64u << 10))
        long_encodes_in_snapshot++;
    __real_ud_jbuf_b64(j, data, n);
}

/* A long value read from LMDB (flushed) comes back whole, encoded outside the store snapshot. */
static void test_long_value_encoded_after_the_read(void **state)
{
    (void)state;
    size_t len = 600000;
    uint8_t *raw = malloc(len);
    char *body = malloc(ud_b64_encoded_len(len) + 32);
    assert_true(raw != NULL && body != NULL);
    uint64_t seed = 5;
    ud_test_fill(&seed, raw, len);
    int n = sprintf(body, "{\"value\":\"");
    n += (int)ud_b64_encode(raw, len, body + n);
    strcpy(body + n, "\"}");
    struct resp r = reqs("PUT", "/api/v1/default/kv/long", body);
    EXPECT(r, 200, "success");
    resp_free(&r);
    char errmsg[UD_ERRMSG_SIZE] = "";
    struct ud_ns *ns;
    assert_int_equal(ud_registry_acquire(srv.w.registry, "default", &ns), 0);
    /* Flushed, so the GET below reads LMDB through a store snapshot (the wraps count it). */
    assert_int_equal(ud_ns_flush(ns, errmsg), 0);
    ud_registry_release(srv.w.registry, ns);
    long_encodes_in_snapshot = 0;
    snaps_begun = 0;
    r = reqs("GET", "/api/v1/default/kv/long", NULL);
    EXPECT(r, 200, "\"found\":true");
    char *v = strstr(r.body, "{\"value\":\"");
    assert_non_null(v);
    v += strlen("{\"value\":\"");
    uint8_t *back = malloc(len + 3);
    size_t got;
    assert_int_equal(ud_b64_decode(v, ud_b64_encoded_len(len), back, &got), 0);
    assert_int_equal(got, len);
    assert_memory_equal(back, raw, len);
    assert_int_equal(long_encodes_in_snapshot, 0);
    assert_true(snaps_begun > 0);
    resp_free(&r);
    free(back);
    free(body);
    free(raw);
}

static void test_stop_finishes_in_flight(void **state)
{
    (void)state;
    /* A write in flight when the stop begins is still answered; the stop then completes (the
     * teardown checks it freed everything). */
    stub_delay_ms = 500;
    struct bg_req w;
    bg_start(&w, "PUT", "/api/v1/default/kv/late", NULL, "{\"value\":\"eA==\"}");
    usleep(150 * 1000);
    uv_async_send(&srv.stop_async);
    usleep(100 * 1000);
    /* New connections are refused once the listener closed. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)srv.port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_not_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    close(fd);
    bg_wait(&w);
    EXPECT(w.r, 200, "success");
    resp_free(&w.r);
    stub_delay_ms = 0;
    pthread_join(srv.thread, NULL);
    srv.joined = 1;
    assert_true(srv.stopped);
}

static void test_ns_delete_cuts_lob_streams(void **state)
{
    (void)state;
    struct resp r = reqs("PUT", "/api/v1/doomed", NULL);
    EXPECT(r, 200, "created");
    resp_free(&r);
    r = reqs("POST", "/api/v1/doomed/tx/begin", "{\"operation\":\"put\",\"entryType\":\"lob\"}");
    char id[64], path[256];
    json_str(r.body, "txnId", id, sizeof id);
    resp_free(&r);
    size_t chunk = 1048576;
    char *data = calloc(1, chunk);
    for (int i = 0; i < 8; i++) {
        snprintf(path, sizeof path, "/api/v1/doomed/tx/%s/lob?key=big", id);
        r = req("POST", path, NULL, data, chunk);
        EXPECT(r, 200, "success");
        resp_free(&r);
    }
    free(data);
    snprintf(path, sizeof path, "/api/v1/doomed/tx/%s/commit", id);
    r = reqs("POST", path, NULL);
    resp_free(&r);
    /* A download that stalls: the client reads a little and stops. */
    int fd = connect_port(srv.port);
    int small = 4096;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    const char *get = "GET /api/v1/doomed/lob?key=big HTTP/1.1\r\nHost: x\r\n\r\n";
    send_all(fd, get, strlen(get));
    char buf[1024];
    assert_true(recv(fd, buf, sizeof buf, 0) > 0);
    usleep(100 * 1000);
    /* The delete must not wait for that reader. */
    uint64_t t0 = now_ms();
    r = reqs("DELETE", "/api/v1/doomed", NULL);
    EXPECT(r, 200, "deleted");
    assert_true(now_ms() - t0 < 3000);
    resp_free(&r);
    close(fd);
    r = reqs("GET", "/api/v1/doomed/lob?key=big", NULL);
    EXPECT(r, 404, "namespace not found");
    resp_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_kv, setup, teardown),
        cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_body_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_if_match, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batches_and_scans, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rows, setup, teardown),
        cmocka_unit_test_setup_teardown(test_transactions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lob, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idle_abort, setup, teardown),
        cmocka_unit_test_setup_teardown(test_min_lsn, setup, teardown),
        cmocka_unit_test_setup_teardown(test_namespaces, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backups, setup, teardown),
        cmocka_unit_test_setup_teardown(test_status_and_metrics, setup, teardown),
        cmocka_unit_test_setup_teardown(test_serialization, setup, teardown),
        cmocka_unit_test_setup_teardown(test_request_digests, setup, teardown),
        cmocka_unit_test_setup_teardown(test_storage_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_long_value_encoded_after_the_read, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ns_delete_cuts_lob_streams, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_finishes_in_flight, setup, teardown),
    };
    return cmocka_run_group_tests_name("http-server", tests, NULL, NULL);
}
