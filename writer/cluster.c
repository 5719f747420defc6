/*
 * Writes and linearizable reads on any writer of a cluster: forwarding to the leader, 307 when
 * forwarding is off, bounded waits for a leader, read-your-writes on the forwarding node, and
 * raft barriers before linearizable reads (docs/raft.md "Clients and the cluster").
 */
#include "writer/cluster.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/http/path.h"
#include "core/http_client.h"
#include "core/log.h"
#include "proto/record_list.h"
#include "raft/fsm.h"
#include "raft/fsm_tables.h"
#include "raft/node.h"
#include "writer/http_digest.h"
#include "writer/writer.h"

#define LOG "cluster"

/* How often operations waiting for a leader look again, and how long a follower waits to apply
 * what the leader acknowledged before answering anyway. */
#define POLL_MS       20
#define APPLY_WAIT_MS 5000
/* A node that answered "not the leader" is asked again, while this node still knows it as the
 * leader, after this long, doubled per refusal up to REFUSED_MAX_MS. Another leader, once known,
 * is asked at once: a failover is not slowed. */
#define REFUSED_MIN_MS 40
#define REFUSED_MAX_MS 320
/* A forwarded request's whole transfer (a 1 MiB LOB chunk over loopback takes milliseconds). A
 * linearizable GET, passed on as it arrives, has no such bound (a large LOB to a slow client takes
 * what it takes): it ends when the leader sends nothing for this long while this node reads. */
#define FORWARD_TIMEOUT_MS 30000
/* Largest answer to a forwarded write collected from the leader (small JSON in practice). */
#define FORWARD_BODY_MAX (64u << 20)
/* How often the leader checks that the member directory has its own addresses. */
#define ANNOUNCE_MS 200

enum op_kind {
    OP_HTTP,    /* an HTTP request forwarded as it is (writes, linearizable reads) */
    OP_RECORDS, /* records of the submit seam, to the leader's internal endpoint */
    OP_READ,    /* a linearizable read served here, the leader, after a barrier */
    OP_BARRIER, /* RESP BARRIER: this node applies what the leader had committed (read index) */
};

/*
 *   LEADER_WAIT --leader known--> SENDING --answer--> APPLY_WAIT --applied here--> (answered)
 *        ^  \--this node leads: run here (OP_HTTP writes once leader-ready, OP_RECORDS) or
 *        |     BARRIER (reads)
 *        \------ not sent / not the leader ------/
 *   BARRIER --barrier applied--> APPLY_WAIT --applied here--> resumed (the read runs)
 */
enum op_state {
    ST_LEADER_WAIT,
    ST_SENDING,
    ST_APPLY_WAIT,
    ST_BARRIER,
    ST_STREAMING, /* a linearizable GET's 2xx answer, passed on from the leader as it arrives */
};

struct op {
    struct op *prev, *next;
    struct ud_cluster *c;
    enum op_kind kind;
    enum op_state state;
    uint64_t leader_deadline; /* uv_now: give up waiting for a leader */
    uint64_t apply_deadline;
    uint64_t target; /* raft index to apply here before answering */
    unsigned attempts;
    uint64_t sent_to;       /* raft id of the node the transfer went to */
    uint64_t refused_by;    /* the node that last answered "not the leader", 0: none */
    uint64_t refused_until; /* uv_now: not asked again before, while it is the known leader */
    unsigned refusals;      /* by refused_by in a row */
    struct ud_http_transfer *t;
    /* OP_HTTP / OP_READ */
    struct ud_http_req *r;
    int is_read;
    int blind;     /* UD_HTTP_ROUTE_BLIND_WRITE: need not wait until the leader is ready */
    int forwarded; /* sent here by a follower: never forwarded again (one hop) */
    int streamed;  /* a GET read: a 2xx answer is passed on as it arrives (op->stream) */
    struct ud_http_stream *stream;
    /* the leader's answer, held while this node applies it */
    long status;
    uint8_t *body;
    size_t body_len;
    size_t body_cap; /* allocated at body (on_data doubles it) */
    char ctype[96];
    char location[512];
    char retry_after[16];
    char etag[32];          /* "N": a KV read's version, a LOB's commit LSN */
    char lsn[24];           /* x-unison-lsn: a LOB read's LSN (read_lob.c) */
    char content_range[80]; /* a LOB range's 206 or 416 (read_lob.c) */
    char accept_ranges[16];
    char outcome[16];     /* unison-outcome: the leader's write in doubt */
    uint64_t head_length; /* the Content-Length the leader announced (UD_HTTP_LENGTH_UNKNOWN) */
    /* OP_RECORDS */
    char ns[UD_NS_NAME_MAX + 1];
    uint8_t key[UD_COMMAND_KEY_MAX];
    size_t key_len;
    uint8_t digest[UD_COMMAND_DIGEST_SIZE]; /* of the keyed request */
    /* Not implied by the key: records that reached this node's records endpoint from a follower
     * of an earlier version (no unison-request-digest) have a key whose digest is unknown, and
     * are forwarded again without one when this node no longer leads. */
    int has_digest;
    uint8_t *payload; /* records as u32 len | bytes, one after the other */
    size_t payload_len;
    size_t nrecords;
    ud_submit_cb cb;
    void *arg;
    uint64_t first_lsn;
    /* OP_BARRIER */
    ud_cluster_barrier_cb bcb;
};

struct deferred {
    struct deferred *next;
    void (*fn)(void *arg);
    void *arg;
};

struct ud_cluster {
    struct ud_writer *w;
    int seen_self; /* this writer has been in its own raft configuration since it started */
    struct ud_http_client *client;
    uv_timer_t poll;
    uv_check_t check;
    uv_timer_t announce;
    uv_timer_t kick; /* runs push_commit and deferred calls from the loop, outside raft */
    struct deferred *deferred, *deferred_tail;
    int handles;
    int closing;
    struct op *ops;
    /* Linearizable reads: one barrier at a time; reads that arrive meanwhile wait for the next
     * one (the barrier they wait for is appended after they arrived). */
    int barrier_inflight;
    int announce_inflight;
    char self_http[160];
    int push_inflight; /* a commit-index push (see push_commit) is in flight */
    int push_again;    /* another forwarded write was answered meanwhile */
};

static void op_free(struct op *op)
{
    struct ud_cluster *c = op->c;
    if (op->prev != NULL)
        op->prev->next = op->next;
    else
        c->ops = op->next;
    if (op->next != NULL)
        op->next->prev = op->prev;
    free(op->body);
    free(op->payload);
    free(op);
}

static struct op *op_new(struct ud_cluster *c, enum op_kind kind)
{
    struct op *op = calloc(1, sizeof *op);
    if (op == NULL)
        abort(); /* network glue aborts on OOM (STYLE.md) */
    op->c = c;
    op->kind = kind;
    op->next = c->ops;
    if (c->ops != NULL)
        c->ops->prev = op;
    c->ops = op;
    op->leader_deadline = uv_now(c->w->loop) + c->w->config->leader_wait_ms;
    return op;
}

static void poll_cb(uv_timer_t *t);
static void check_cb(uv_check_t *h);

/* Keeps the poll timer and the check handle running while operations wait. */
static void arm(struct ud_cluster *c)
{
    if (c->closing)
        return;
    int any = 0, applying = 0;
    for (struct op *op = c->ops; op != NULL; op = op->next) {
        any = 1;
        if (op->state == ST_APPLY_WAIT)
            applying = 1;
    }
    if (any && !uv_is_active((uv_handle_t *)&c->poll))
        uv_timer_start(&c->poll, poll_cb, POLL_MS, POLL_MS);
    else if (!any)
        uv_timer_stop(&c->poll);
    if (applying && !uv_is_active((uv_handle_t *)&c->check))
        uv_check_start(&c->check, check_cb);
    else if (!applying)
        uv_check_stop(&c->check);
}

/* --- addresses ------------------------------------------------------------------------------- */

static const char *self_http(struct ud_cluster *c)
{
    if (c->self_http[0] != '\0')
        return c->self_http;
    const struct ud_writer_config *cfg = c->w->config;
    if (cfg->http_advertise[0] != '\0') {
        snprintf(c->self_http, sizeof c->self_http, "%s", cfg->http_advertise);
        return c->self_http;
    }
    char host[128];
    int port;
    char err[UD_ERRMSG_SIZE];
    if (ud_writer_config_split_address(cfg->http_listen, host, sizeof host, &port, err) != 0)
        return "";
    /* A wildcard listener is reachable on loopback at least; other hosts need [http] advertise. */
    if (strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0)
        snprintf(host, sizeof host, "127.0.0.1");
    snprintf(c->self_http, sizeof c->self_http,
             strchr(host, ':') ? "http://[%s]:%d" : "http://%s:%d", host, c->w->http_port);
    return c->self_http;
}

/* This node's RESP address as others reach it ("" when RESP is off). */
static void self_resp(struct ud_cluster *c, char *out, size_t size)
{
    const struct ud_writer_config *cfg = c->w->config;
    char host[128], err[UD_ERRMSG_SIZE];
    int port;
    out[0] = '\0';
    if (cfg->resp_listen[0] == '\0' || c->w->resp_port <= 0 ||
        ud_writer_config_split_address(cfg->resp_listen, host, sizeof host, &port, err) != 0)
        return;
    if (strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0)
        snprintf(host, sizeof host, "127.0.0.1");
    snprintf(out, size, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, c->w->resp_port);
}

void ud_cluster_member_addresses(struct ud_writer *w, uint64_t id, char *http, size_t http_size,
                                 char *resp, size_t resp_size)
{
    http[0] = resp[0] = '\0';
    struct ud_cluster *c = w->cluster;
    if (w->raft != NULL) {
        const struct ud_directory_entry *e = ud_fsm_member(ud_raft_node_fsm(w->raft), id);
        if (e != NULL) {
            snprintf(http, http_size, "%s", e->http);
            snprintf(resp, resp_size, "%s", e->resp);
        }
    }
    const struct ud_writer_config *cfg = w->config;
    for (unsigned i = 0; i < cfg->npeers; i++) {
        if (cfg->peers[i].id != id)
            continue;
        if (http[0] == '\0')
            snprintf(http, http_size, "%s", cfg->peers[i].http);
        if (resp[0] == '\0')
            snprintf(resp, resp_size, "%s", cfg->peers[i].resp);
    }
    if (id == cfg->node_id && c != NULL) {
        if (http[0] == '\0')
            snprintf(http, http_size, "%s", self_http(c));
        if (resp[0] == '\0')
            self_resp(c, resp, resp_size);
    }
}

/* The leader as known here: 0 when none; *http "" when its HTTP address is unknown. */
static uint64_t leader_of(struct ud_cluster *c, char *http, size_t size, char *resp, size_t rsize)
{
    uint64_t id = 0;
    const char *addr = NULL;
    http[0] = resp[0] = '\0';
    if (c->w->raft == NULL)
        return 0;
    ud_raft_node_leader(c->w->raft, &id, &addr);
    if (id != 0)
        ud_cluster_member_addresses(c->w, id, http, size, resp, rsize);
    return id;
}

int ud_cluster_member_of(struct ud_writer *w, uint64_t id, struct ud_raft_member *out)
{
    struct ud_raft_member m[UD_CLUSTER_MAX_MEMBERS];
    unsigned n = w->raft != NULL ? ud_raft_node_members(w->raft, m, UD_CLUSTER_MAX_MEMBERS) : 0;
    for (unsigned i = 0; i < n && i < UD_CLUSTER_MAX_MEMBERS; i++) {
        if (m[i].id != id)
            continue;
        if (out != NULL)
            *out = m[i];
        return 1;
    }
    return n > 0 && n <= UD_CLUSTER_MAX_MEMBERS ? 0 : -1;
}

int ud_cluster_fetch_node_status(struct ud_writer *w, const char *http, uint32_t timeout_ms,
                                 size_t body_max,
                                 void (*on_done)(void *arg, const struct ud_http_result *res),
                                 void *arg, char *errmsg)
{
    char url[256];
    snprintf(url, sizeof url, "%s/status/node", http);
    struct ud_http_request req;
    memset(&req, 0, sizeof req);
    req.url = url;
    req.method = UD_HTTP_CLIENT_GET;
    req.timeout_ms = timeout_ms;
    req.connect_timeout_ms = timeout_ms;
    req.collect_max = body_max;
    req.on_done = on_done;
    req.arg = arg;
    if (w->cluster == NULL)
        return ud_errf(errmsg, UD_ECLOSED, "GET %s: the cluster part is not running", url);
    return ud_http_client_start(w->cluster->client, &req, NULL, errmsg);
}

/* Whether this writer was removed and learned of it (it led, and committed its own removal): its
 * configuration left it out after it had seen itself in it (announce_cb looks), so no leader will
 * come to it. A writer whose configuration is older than its addition (restarted from a snapshot
 * taken before it) has not seen itself yet, and waits for the leader as any follower. */
static int removed_here(struct ud_cluster *c)
{
    return c->seen_self && ud_cluster_member_of(c->w, c->w->config->node_id, NULL) == 0;
}

static uint64_t applied_here(struct ud_cluster *c)
{
    return c->w->raft != NULL ? ud_raft_node_applied_index(c->w->raft) : 0;
}

/* --- small JSON readers for the leader's answers (objects we produce ourselves) ------------- */

int ud_cluster_json_u64(const uint8_t *body, size_t len, const char *name, uint64_t *out)
{
    char pat[64];
    int pl = snprintf(pat, sizeof pat, "\"%s\"", name);
    for (size_t i = 0; i + (size_t)pl <= len; i++) {
        if (memcmp(body + i, pat, (size_t)pl) != 0)
            continue;
        size_t j = i + (size_t)pl;
        while (j < len && (body[j] == ' ' || body[j] == ':'))
            j++;
        uint64_t v = 0;
        int digits = 0;
        while (j < len && body[j] >= '0' && body[j] <= '9' && digits < 20) {
            v = v * 10 + (uint64_t)(body[j++] - '0');
            digits++;
        }
        if (digits == 0)
            return 0;
        *out = v;
        return 1;
    }
    return 0;
}

int ud_cluster_json_error(const uint8_t *body, size_t len, char *out, size_t size)
{
    static const char pat[] = "\"error\":\"";
    size_t pl = sizeof pat - 1;
    out[0] = '\0';
    for (size_t i = 0; i + pl <= len; i++) {
        if (memcmp(body + i, pat, pl) != 0)
            continue;
        size_t o = 0;
        for (size_t j = i + pl; j < len && body[j] != '"' && o + 1 < size; j++) {
            if (body[j] == '\\' && j + 1 < len) {
                j++;
                if (body[j] == 'u') { /* \uXXXX: control characters only in our messages */
                    j += 4;
                    out[o++] = '?';
                    continue;
                }
                out[o++] = body[j] == 'n' ? ' ' : body[j] == 't' ? ' ' : (char)body[j];
                continue;
            }
            out[o++] = (char)body[j];
        }
        out[o] = '\0';
        return 1;
    }
    return 0;
}

/* --- answering ------------------------------------------------------------------------------- */

static void records_answer(struct op *op, int status, const char *errmsg)
{
    ud_submit_cb cb = op->cb;
    op->cb = NULL;
    if (cb == NULL)
        return;
    if (status != 0) {
        cb(op->arg, status, errmsg, NULL, 0);
        return;
    }
    uint64_t lsns[UD_SUBMIT_MAX_RECORDS];
    for (size_t i = 0; i < op->nrecords && i < UD_SUBMIT_MAX_RECORDS; i++)
        lsns[i] = op->first_lsn != 0 ? op->first_lsn + i : 0;
    cb(op->arg, 0, "", lsns, op->nrecords);
}

static void pass_headers(struct op *op);

/* Sends the leader's held answer to the client (this node applied it, or waited long enough). */
static void deliver(struct op *op)
{
    if (op->kind == OP_RECORDS) {
        records_answer(op, 0, NULL);
        op_free(op);
        return;
    }
    if (op->kind == OP_READ) {
        struct ud_http_req *r = op->r;
        op->r = NULL;
        op_free(op);
        ud_http_req_resume(r); /* every entry up to the barrier is applied here */
        return;
    }
    if (op->kind == OP_BARRIER) {
        ud_cluster_barrier_cb cb = op->bcb;
        void *arg = op->arg;
        op_free(op);
        cb(arg, 0, "");
        return;
    }
    struct ud_http_req *r = op->r;
    pass_headers(op);
    const char *ctype = op->ctype[0] ? op->ctype : "application/json";
    if (ud_http_req_method(r) == UD_HTTP_HEAD)
        ud_http_reply_head(r, (int)op->status, ctype,
                           op->head_length == UD_HTTP_LENGTH_UNKNOWN ? 0 : op->head_length);
    else
        ud_http_reply(r, (int)op->status, ctype, op->body, op->body_len);
    op->r = NULL;
    op_free(op);
}

/* The leader's headers that go on to the client, on op->r. */
static void pass_headers(struct op *op)
{
    struct ud_http_req *r = op->r;
    if (op->location[0] != '\0')
        ud_http_set_header(r, "location", op->location);
    if (op->retry_after[0] != '\0')
        ud_http_set_header(r, "retry-after", op->retry_after);
    if (op->etag[0] != '\0')
        ud_http_set_header(r, "etag", op->etag);
    if (op->lsn[0] != '\0')
        ud_http_set_header(r, "x-unison-lsn", op->lsn);
    if (op->content_range[0] != '\0')
        ud_http_set_header(r, "content-range", op->content_range);
    if (op->accept_ranges[0] != '\0')
        ud_http_set_header(r, "accept-ranges", op->accept_ranges);
    if (op->outcome[0] != '\0')
        ud_http_set_header(r, UD_HTTP_OUTCOME, op->outcome);
}

/* Fails an operation: UD_ECLOSED when nothing was applied, UD_EINDOUBT when it may have been
 * (both 503). */
static void fail(struct op *op, int code, const char *msg)
{
    if (op->t != NULL) {
        ud_http_transfer_cancel(op->t);
        op->t = NULL;
    }
    if (op->state == ST_STREAMING) {
        /* Part of the leader's answer went out: the client's answer is cut, not replaced. */
        ud_http_stream_abort(op->stream);
        op->stream = NULL;
    } else if (op->kind == OP_RECORDS) {
        records_answer(op, code, msg);
    } else if (op->kind == OP_BARRIER) {
        ud_cluster_barrier_cb cb = op->bcb;
        op->bcb = NULL;
        if (cb != NULL)
            cb(op->arg, code, msg);
    } else if (op->r != NULL) {
        ud_http_reply_code(op->r, code, msg); /* Retry-After on 503 */
        op->r = NULL;
    }
    op_free(op);
}

/* The writer stops: an operation not sent yet (or a read) failed, a write sent to the leader in
 * doubt (the leader may apply it whether or not this node hears its answer). A transfer still
 * resolving or connecting has sent nothing. */
static void fail_stopping(struct op *op)
{
    if (op->state == ST_SENDING && !op->is_read && ud_http_transfer_started(op->t)) {
        char msg[UD_ERRMSG_SIZE];
        fail(op,
             ud_err_indoubt(msg, sizeof msg, "the writer is shutting down while the leader has it"),
             msg);
        return;
    }
    fail(op, UD_ECLOSED, "the writer is shutting down");
}

/* --- forwarding ------------------------------------------------------------------------------ */

static void advance(struct op *op);

static void copy_header(struct ud_http_transfer *t, const char *name, char *out, size_t size)
{
    if (!ud_http_transfer_header(t, name, out, size))
        out[0] = '\0';
}

/* The leader's headers that go on to the client (pass_headers), kept in op. */
static void take_headers(struct op *op, struct ud_http_transfer *t)
{
    copy_header(t, "content-type", op->ctype, sizeof op->ctype);
    copy_header(t, "location", op->location, sizeof op->location);
    copy_header(t, "retry-after", op->retry_after, sizeof op->retry_after);
    copy_header(t, "etag", op->etag, sizeof op->etag);
    copy_header(t, "x-unison-lsn", op->lsn, sizeof op->lsn);
    copy_header(t, "content-range", op->content_range, sizeof op->content_range);
    copy_header(t, "accept-ranges", op->accept_ranges, sizeof op->accept_ranges);
    copy_header(t, UD_HTTP_OUTCOME, op->outcome, sizeof op->outcome);
    /* A value that fills len may have been cut: not taken (20 digits hold any uint64_t). */
    char len[32];
    op->head_length = UD_HTTP_LENGTH_UNKNOWN;
    if (ud_http_transfer_header(t, "content-length", len, sizeof len) &&
        strlen(len) < sizeof len - 1 && !ud_http_parse_length(len, &op->head_length))
        op->head_length = UD_HTTP_LENGTH_UNKNOWN;
}

/* --- a linearizable GET's answer, passed on as it arrives ----------------------------------
 * A read needs no wait to be applied here (the leader ran it after its barrier), so the client's
 * answer starts with the leader's headers, and the body follows piece by piece with the leader's
 * transfer paused while the client is slower (core/http/reply_stream.c): a large LOB read
 * through a follower holds two buffers there, not the LOB. A non-2xx answer (a refusal to retry
 * elsewhere, 404, 416) is collected and answered in forward_done as before. */

static void stream_room(void *arg)
{
    struct op *op = arg;
    ud_http_transfer_resume(op->t);
}

static void stream_gone(void *arg)
{
    struct op *op = arg;
    struct ud_cluster *c = op->c;
    op->stream = NULL;
    ud_http_transfer_cancel(op->t); /* allowed inside the transfer's own callbacks */
    op->t = NULL;
    op_free(op);
    arm(c);
}

static int on_headers(void *arg, long status)
{
    struct op *op = arg;
    free(op->body); /* what an earlier attempt collected (on_data) */
    op->body = NULL;
    op->body_len = 0;
    op->body_cap = 0;
    if (!op->streamed || status < 200 || status >= 300)
        return 0;
    take_headers(op, op->t);
    /* Without a length the client could not tell a cut from the end: h2o ends a body of unknown
     * length at connection close except for a chunked 200 on HTTP/1.1, and a cut then looks
     * complete (a 206, an HTTP/1.0 client). Our leader always sends one; a proxy or another
     * version might not. Such an answer is collected (on_data) and answered whole. */
    if (op->head_length == UD_HTTP_LENGTH_UNKNOWN)
        return 0;
    pass_headers(op);
    struct ud_http_req *r = op->r;
    op->r = NULL;
    op->state = ST_STREAMING;
    /* The same default as a collected answer's (deliver): what the client sees does not depend
     * on which way the answer came. */
    op->stream = ud_http_stream_start(r, (int)status, op->ctype[0] ? op->ctype : "application/json",
                                      op->head_length, stream_room, stream_gone, op);
    /* The client went away already: the transfer ends (forward_done frees op). */
    return op->stream == NULL;
}

static int on_data(void *arg, const void *data, size_t len)
{
    struct op *op = arg;
    if (op->state != ST_STREAMING) {
        /* on_headers declined to stream: collected, as a forwarded request's answer is. */
        if (op->body_len + len > FORWARD_BODY_MAX)
            return UD_ELIMIT;
        if (op->body_len + len > op->body_cap) { /* doubled: each byte is copied O(1) times */
            size_t cap = op->body_cap < 16384 ? 16384 : op->body_cap * 2;
            while (cap < op->body_len + len)
                cap *= 2;
            uint8_t *p = realloc(op->body, cap);
            if (p == NULL)
                abort(); /* network glue aborts on OOM (STYLE.md) */
            op->body = p;
            op->body_cap = cap;
        }
        memcpy(op->body + op->body_len, data, len);
        op->body_len += len;
        return 0;
    }
    if (op->stream == NULL)
        return UD_ECLOSED;
    /* Nothing of op is used after the write: the client going away inside it frees op. */
    return ud_http_stream_write(op->stream, data, len) == 0 ? 0 : UD_HTTP_PAUSE;
}

/* A UD_E* code for an HTTP status, the inverse of ud_http_status_for where it is unambiguous. */
static int status_code(long status)
{
    switch (status) {
    case 400:
        return UD_EINVAL;
    case 404:
        return UD_ENOTFOUND;
    case 409:
        return UD_ECONFLICT;
    case 413:
        return UD_ELIMIT;
    case 503:
        return UD_EBUSY;
    default:
        return UD_EIO;
    }
}

static void forward_done(void *arg, const struct ud_http_result *res)
{
    struct op *op = arg;
    struct ud_cluster *c = op->c;
    struct ud_http_transfer *t = op->t;
    op->t = NULL;
    uint64_t now = uv_now(c->w->loop);
    if (op->state == ST_STREAMING) {
        /* Part of the answer is out: never retried. A body the leader did not finish (curl's
         * partial file, a reset) cuts the client's answer rather than end it looking whole. */
        if (res->rc == 0) {
            ud_http_stream_end(op->stream);
        } else if (op->stream != NULL) {
            ud_warn(LOG, "linearizable read passed on from the leader cut after %llu bytes: %s",
                    (unsigned long long)res->bytes, res->errmsg);
            ud_http_stream_abort(op->stream);
        }
        op->stream = NULL;
        op_free(op);
        arm(c);
        return;
    }
    if (res->rc == UD_ELIMIT && op->kind == OP_HTTP && op->is_read) {
        /* An answer without a Content-Length is collected, up to FORWARD_BODY_MAX: asking again
         * gives the same answer, so say what is wrong at once. */
        ud_http_reply_error(op->r, 502,
                            "the leader's answer to this linearizable read came without a "
                            "Content-Length and is over the %u MiB a follower collects: read it "
                            "from the leader directly, or in byte ranges (Range)",
                            FORWARD_BODY_MAX >> 20);
        op->r = NULL;
        op_free(op);
        arm(c);
        return;
    }
    if (res->rc != 0) {
        /* Not sent, or a read: safe to try again (with the leader known then) until the wait
         * for a leader runs out. A write that may have reached the leader is not retried: it
         * could apply twice; its client hears that its outcome is unknown. */
        if ((res->unsent || op->is_read) && now < op->leader_deadline) {
            op->state = ST_LEADER_WAIT;
            arm(c);
            return;
        }
        char msg[UD_ERRMSG_SIZE * 2];
        if (res->unsent || op->is_read) {
            snprintf(msg, sizeof msg, "no raft leader could be reached within %u ms (last: %s)",
                     c->w->config->leader_wait_ms, res->errmsg);
            ud_warn(LOG, "%s", msg);
            fail(op, UD_ECLOSED, msg);
        } else {
            int code = ud_err_indoubt(msg, sizeof msg, "forwarded to the leader, no answer: %s",
                                      res->errmsg);
            ud_warn(LOG, "%s", msg);
            fail(op, code, msg);
        }
        return;
    }
    char v[64];
    if (res->status == 503 && ud_http_transfer_header(t, UD_CLUSTER_NOT_LEADER, v, sizeof v)) {
        /* It did not lead (any more): nothing was applied; wait for the next leader, which
         * this node may not know yet (asking the same node every poll only repeats the
         * refusal). */
        if (now < op->leader_deadline) {
            op->refusals = op->refused_by == op->sent_to ? op->refusals + 1 : 1;
            op->refused_by = op->sent_to;
            uint64_t wait = (uint64_t)REFUSED_MIN_MS << (op->refusals < 8 ? op->refusals - 1 : 7);
            op->refused_until = now + (wait < REFUSED_MAX_MS ? wait : REFUSED_MAX_MS);
            op->state = ST_LEADER_WAIT;
            arm(c);
            return;
        }
        fail(op, UD_ECLOSED, "no raft leader accepted the request in time; retry later");
        return;
    }
    if (op->kind == OP_BARRIER) {
        uint64_t idx = 0;
        char msg[UD_ERRMSG_SIZE];
        if (res->status != 200 ||
            !ud_cluster_json_u64(res->body, res->body_len, "appliedIndex", &idx)) {
            if (!ud_cluster_json_error(res->body, res->body_len, msg, sizeof msg))
                snprintf(msg, sizeof msg, "the leader answered %ld", res->status);
            fail(op, UD_ECLOSED, msg);
            arm(c);
            return;
        }
        op->target = idx;
        op->apply_deadline = now + APPLY_WAIT_MS;
        op->state = ST_APPLY_WAIT;
        arm(c);
        return;
    }
    op->status = res->status;
    uint64_t idx = 0;
    if (ud_http_transfer_header(t, UD_CLUSTER_APPLIED, v, sizeof v))
        idx = strtoull(v, NULL, 10);
    if (op->kind == OP_RECORDS) {
        if (res->status != 200) {
            char code_s[16], msg[UD_ERRMSG_SIZE];
            /* Without the leader's code (a refusal by its HTTP layer), the status says it. */
            int code = ud_http_transfer_header(t, UD_CLUSTER_CODE, code_s, sizeof code_s)
                           ? atoi(code_s)
                           : status_code(res->status);
            if (!ud_cluster_json_error(res->body, res->body_len, msg, sizeof msg))
                snprintf(msg, sizeof msg, "the leader answered %ld", res->status);
            records_answer(op, code != 0 ? code : UD_EIO, msg);
            op_free(op);
            arm(c);
            return;
        }
        if (!ud_cluster_json_u64(res->body, res->body_len, "lsn", &op->first_lsn))
            op->first_lsn = 0;
    } else {
        /* An HTTP request's answer is passed through; held until this node applied it. */
        if (res->body_len > 0) {
            op->body = malloc(res->body_len);
            if (op->body == NULL)
                abort();
            memcpy(op->body, res->body, res->body_len);
            op->body_len = res->body_len;
        }
        take_headers(op, t);
    }
    /* Read-your-writes: the client hears of the write once it is applied here as well. */
    if (res->status >= 200 && res->status < 300 && idx > applied_here(c) && !op->is_read) {
        op->target = idx;
        op->apply_deadline = now + APPLY_WAIT_MS;
        op->state = ST_APPLY_WAIT;
        arm(c);
        return;
    }
    deliver(op);
    arm(c);
}

/* Starts the transfer of op to the leader at base URL http. */
static void send_to(struct op *op, const char *http)
{
    struct ud_cluster *c = op->c;
    char url_buf[512];
    char *url = url_buf, *url_owned = NULL;
    const char *hdrs[10];
    char h_ctype[160], h_key[200], h_fwd[64], h_digest[80];
    char *h_ifmatch = NULL, *h_idem = NULL, *h_range = NULL, *h_ifrange = NULL;
    size_t nh = 0;
    snprintf(h_fwd, sizeof h_fwd, "%s: %llu", UD_CLUSTER_FORWARDED,
             (unsigned long long)c->w->config->node_id);
    hdrs[nh++] = h_fwd;
    hdrs[nh++] = "Expect:"; /* no 100-continue round trip for bodies over 1 KiB */
    struct ud_http_request req;
    memset(&req, 0, sizeof req);
    if (op->kind == OP_BARRIER) {
        snprintf(url, sizeof url_buf, "%s/internal/v1/barrier?consistency=linearizable", http);
        req.method = UD_HTTP_CLIENT_GET;
    } else if (op->kind == OP_RECORDS) {
        snprintf(url, sizeof url_buf, "%s/internal/v1/%s/records", http, op->ns);
        req.method = UD_HTTP_CLIENT_POST;
        req.content_type = "application/octet-stream";
        req.body = op->payload;
        req.body_len = op->payload_len;
        if (op->key_len > 0) {
            snprintf(h_key, sizeof h_key, "idempotency-key: %.*s", (int)op->key_len,
                     (const char *)op->key);
            hdrs[nh++] = h_key;
        }
        req.send_once = op->key_len == 0;
        if (op->has_digest) {
            int at = snprintf(h_digest, sizeof h_digest, "%s: ", UD_HTTP_DIGEST_HEADER);
            for (size_t i = 0; i < UD_COMMAND_DIGEST_SIZE; i++)
                at += snprintf(h_digest + at, sizeof h_digest - (size_t)at, "%02x", op->digest[i]);
            hdrs[nh++] = h_digest;
        }
    } else {
        size_t pl, ql, l;
        const char *path = ud_http_req_path(op->r, &pl);
        const char *query = ud_http_req_query(op->r, &ql);
        /* The whole path and query, however long (a cut one could name another key). */
        if (asprintf(&url_owned, "%s%.*s%s%.*s", http, (int)pl, path, ql ? "?" : "", (int)ql,
                     query) < 0)
            abort();
        url = url_owned;
        unsigned m = ud_http_req_method(op->r);
        /* HEAD goes on as HEAD: the leader's headers without its body (a LOB's size without the
         * LOB). */
        req.method = m == UD_HTTP_PUT      ? UD_HTTP_CLIENT_PUT
                     : m == UD_HTTP_POST   ? UD_HTTP_CLIENT_POST
                     : m == UD_HTTP_DELETE ? UD_HTTP_CLIENT_DELETE
                     : m == UD_HTTP_HEAD   ? UD_HTTP_CLIENT_HEAD
                                           : UD_HTTP_CLIENT_GET;
        const uint8_t *body = ud_http_req_body(op->r, &l);
        req.body = body;
        req.body_len = l;
        const char *v;
        if ((v = ud_http_req_header(op->r, "content-type", &l)) != NULL && l < 100) {
            snprintf(h_ctype, sizeof h_ctype, "content-type: %.*s", (int)l, v);
            req.content_type = NULL;
            hdrs[nh++] = h_ctype;
        }
        /* Whole, however long: the leader answers a value it cannot take (a list of ETags, a
         * key over 128 bytes) with the 400 it gives directly; dropping it made the write
         * unconditional, or applied a retry twice. */
        if ((h_ifmatch = ud_http_req_header_line(op->r, "if-match")) != NULL)
            hdrs[nh++] = h_ifmatch;
        if ((h_idem = ud_http_req_header_line(op->r, "idempotency-key")) != NULL)
            hdrs[nh++] = h_idem;
        /* A write without a key is sent once: the leader cannot tell a re-send from a new write
         * (a keyed one it answers with the first attempt's outcome). A key on a route that takes
         * none never gets here: the server refused it (400) before the handler ran. */
        req.send_once = !op->is_read && h_idem == NULL;
        /* A LOB byte range and its If-Range, whole, so that the leader answers the range (206,
         * 416) as it would directly. Given on two lines, the leader would ignore the Range and
         * send the whole object: the same answer as sending no Range at all. Only a GET takes a
         * range: writes skip the two header scans. */
        if (m == UD_HTTP_GET && ud_http_req_header_lines(op->r, "range") == 1 &&
            ud_http_req_header_lines(op->r, "if-range") <= 1) {
            h_range = ud_http_req_header_line(op->r, "range");
            hdrs[nh++] = h_range;
            if ((h_ifrange = ud_http_req_header_line(op->r, "if-range")) != NULL)
                hdrs[nh++] = h_ifrange;
        }
        if (body == NULL && (req.method == UD_HTTP_CLIENT_PUT || req.method == UD_HTTP_CLIENT_POST))
            req.body = ""; /* a PUT without a body (namespace create) still sends one, empty */
    }
    hdrs[nh] = NULL;
    req.url = url;
    req.headers = hdrs;
    op->streamed = op->kind == OP_HTTP && op->is_read && req.method == UD_HTTP_CLIENT_GET;
    if (op->streamed) {
        /* Bounded by the leader's silence, not the whole transfer (a paused transfer is not
         * checked: curl skips its speed check while paused). */
        req.low_speed_time_s = FORWARD_TIMEOUT_MS / 1000;
        req.low_speed_bytes = 1;
        req.on_data = on_data;
    } else {
        req.timeout_ms = FORWARD_TIMEOUT_MS;
    }
    req.connect_timeout_ms = 1000;
    req.collect_max = FORWARD_BODY_MAX;
    req.on_headers = on_headers;
    req.on_done = forward_done;
    req.arg = op;
    char errmsg[UD_ERRMSG_SIZE];
    op->attempts++;
    op->state = ST_SENDING;
    int rc = ud_http_client_start(c->client, &req, &op->t, errmsg); /* copies url and hdrs */
    free(url_owned);
    free(h_ifmatch);
    free(h_idem);
    free(h_range);
    free(h_ifrange);
    if (rc != 0) {
        ud_warn(LOG, "forward to %s: %s", http, errmsg);
        op->t = NULL;
        fail(op, rc == UD_EINVAL ? UD_ECLOSED : rc, errmsg);
    }
}

/* --- linearizable reads on the leader -------------------------------------------------------- */

static void start_barrier(struct ud_cluster *c);

/* Every read waiting for this barrier may now run once this node applied the barrier. */
static void barrier_done(void *arg, int status, const char *errmsg)
{
    struct ud_cluster *c = arg;
    c->barrier_inflight = 0;
    if (c->closing)
        return;
    /* raft applied the barrier: everything before it is handed to the FSM; the read waits until
     * the FSM's apply thread has applied it too. */
    uint64_t target = c->w->raft != NULL ? ud_raft_node_last_applied(c->w->raft) : 0;
    uint64_t now = uv_now(c->w->loop);
    struct op *op = c->ops, *next;
    for (; op != NULL; op = next) {
        next = op->next;
        if ((op->kind != OP_READ && op->kind != OP_BARRIER) || op->state != ST_BARRIER ||
            op->target != 1)
            continue;
        if (status != 0) {
            /* A deposed leader never answers a linearizable read. */
            char msg[UD_ERRMSG_SIZE * 2];
            snprintf(msg, sizeof msg,
                     "linearizable read: this node could not confirm its leadership (%s); retry",
                     errmsg);
            fail(op, UD_ECLOSED, msg);
            continue;
        }
        op->target = target;
        op->apply_deadline = now + APPLY_WAIT_MS;
        op->state = ST_APPLY_WAIT;
    }
    start_barrier(c); /* for the reads that arrived meanwhile */
    arm(c);
}

/* Reads in ST_BARRIER with target 0 arrived after the barrier in flight was appended: they get
 * the next one (target 1 marks "waiting for the barrier in flight"). */
static void start_barrier(struct ud_cluster *c)
{
    if (c->barrier_inflight || c->w->raft == NULL)
        return;
    int waiting = 0;
    for (struct op *op = c->ops; op != NULL; op = op->next)
        if ((op->kind == OP_READ || op->kind == OP_BARRIER) && op->state == ST_BARRIER &&
            op->target == 0)
            waiting = 1;
    if (!waiting)
        return;
    char errmsg[UD_ERRMSG_SIZE];
    int rc = ud_raft_node_barrier(c->w->raft, barrier_done, c, errmsg);
    struct op *op = c->ops, *next;
    for (; op != NULL; op = next) {
        next = op->next;
        if ((op->kind != OP_READ && op->kind != OP_BARRIER) || op->state != ST_BARRIER ||
            op->target != 0)
            continue;
        if (rc != 0) {
            /* Not the leader any more: a follower forwards the read instead. */
            if (op->kind == OP_READ)
                op->kind = OP_HTTP;
            op->state = ST_LEADER_WAIT;
            continue;
        }
        op->target = 1;
    }
    if (rc == 0)
        c->barrier_inflight = 1;
}

/* --- the state machine ----------------------------------------------------------------------- */

/* Moves an operation waiting for a leader on: runs it here, forwards it, redirects it, or gives
 * up once the wait for a leader is over. */
static void advance(struct op *op)
{
    struct ud_cluster *c = op->c;
    struct ud_writer *w = c->w;
    if (w->stopping) {
        fail(op, UD_ECLOSED, "the writer is shutting down");
        return;
    }
    if (op->r != NULL && ud_http_req_gone(op->r)) {
        ud_http_reply_error(op->r, 499, "client went away"); /* only frees */
        op->r = NULL;
        op_free(op);
        return;
    }
    uint64_t now = uv_now(w->loop);
    if (ud_writer_is_leader(w)) {
        if (op->kind == OP_HTTP && !op->is_read && !op->blind &&
            !ud_raft_node_leader_ready(w->raft)) {
            /* Leads, but earlier leaders' entries are not all applied here: a write's
             * preconditions checked here (a transaction's state, a LOB chunk's position) would
             * be checked against state missing acknowledged writes (If-Match is judged by the
             * FSM). It waits, as for an election. */
            if (now < op->leader_deadline)
                return; /* the poll looks again */
            char msg[UD_ERRMSG_SIZE];
            snprintf(msg, sizeof msg,
                     "this writer leads but had not applied earlier leaders' entries within %u "
                     "ms; retry later",
                     w->config->leader_wait_ms);
            fail(op, UD_ECLOSED, msg);
            return;
        }
        if (op->kind == OP_RECORDS) {
            /* Leader now: the seam proposes them here. */
            uint8_t *recs[UD_SUBMIT_MAX_RECORDS];
            size_t lens[UD_SUBMIT_MAX_RECORDS], n = 0, bad_i, bad_off;
            if (ud_record_list_unpack(op->payload, op->payload_len, recs, lens,
                                      UD_SUBMIT_MAX_RECORDS, &n, &bad_i, &bad_off) != 0) {
                char msg[UD_ERRMSG_SIZE];
                snprintf(msg, sizeof msg, "forwarded records: record %zu at byte %zu is malformed",
                         bad_i, bad_off);
                records_answer(op, UD_EINVAL, msg);
                op_free(op);
                return;
            }
            ud_submit_cb cb = op->cb;
            op->cb = NULL;
            ud_submit_keyed(w, op->ns, op->key, op->key_len, op->has_digest ? op->digest : NULL,
                            recs, lens, n, cb, op->arg);
            op_free(op);
            return;
        }
        if (op->is_read) {
            if (op->kind != OP_BARRIER)
                op->kind = OP_READ;
            op->state = ST_BARRIER;
            op->target = 0;
            start_barrier(c);
            return;
        }
        struct ud_http_req *r = op->r;
        op->r = NULL;
        op_free(op);
        ud_http_req_resume(r);
        return;
    }
    if (op->forwarded) {
        /* Led when the follower sent it, not any more: the follower waits for the next leader
         * (one hop only). */
        ud_http_set_header(op->r, UD_CLUSTER_NOT_LEADER, "1");
        fail(op, UD_ECLOSED, "this writer is not the raft leader (any more)");
        return;
    }
    char http[160], resp[128];
    uint64_t id = leader_of(c, http, sizeof http, resp, sizeof resp);
    if (id == 0 && removed_here(c)) {
        char msg[UD_ERRMSG_SIZE];
        snprintf(msg, sizeof msg,
                 "writer %llu is not in the cluster's raft configuration any more (it was "
                 "removed): add it again (POST /admin/cluster/members on the leader) or stop it",
                 (unsigned long long)w->config->node_id);
        fail(op, UD_ECLOSED, msg);
        return;
    }
    if (id == 0 || http[0] == '\0') {
        if (now < op->leader_deadline)
            return; /* the poll looks again */
        char msg[UD_ERRMSG_SIZE * 2];
        if (id == 0)
            snprintf(msg, sizeof msg, "no raft leader was elected within %u ms; retry later",
                     w->config->leader_wait_ms);
        else
            snprintf(msg, sizeof msg,
                     "the raft leader (node %llu) has no known HTTP address: give it in its "
                     "[raft] peers entry (,http=host:port)",
                     (unsigned long long)id);
        fail(op, UD_ECLOSED, msg);
        return;
    }
    if (id == op->refused_by && now < op->refused_until)
        return; /* it refused lately, and no other leader is known: the poll looks again */
    if (!w->config->forward && op->kind != OP_BARRIER) {
        if (op->kind == OP_RECORDS) {
            char msg[UD_ERRMSG_SIZE];
            if (resp[0] != '\0')
                snprintf(msg, sizeof msg, "MOVED 0 %s", resp);
            else
                snprintf(msg, sizeof msg,
                         "this writer is not the leader; the leader is node %llu "
                         "at %s",
                         (unsigned long long)id, http);
            records_answer(op, UD_ECLOSED, msg);
            op_free(op);
            return;
        }
        size_t pl, ql;
        const char *path = ud_http_req_path(op->r, &pl);
        const char *query = ud_http_req_query(op->r, &ql);
        char location[2048];
        snprintf(location, sizeof location, "%s%.*s%s%.*s", http, (int)pl, path, ql ? "?" : "",
                 (int)ql, query);
        ud_http_set_header(op->r, "location", location);
        struct ud_jbuf j;
        ud_jbuf_init(&j);
        ud_jbuf_printf(&j,
                       "{\"error\":\"this writer is not the leader: send %s to the leader, node "
                       "%llu\",\"leaderId\":%llu,\"leader\":",
                       op->is_read ? "linearizable reads" : "writes", (unsigned long long)id,
                       (unsigned long long)id);
        ud_jbuf_str(&j, http, strlen(http));
        ud_jbuf_lit(&j, "}");
        ud_http_reply_json(op->r, 307, &j);
        op->r = NULL;
        op_free(op);
        return;
    }
    op->sent_to = id;
    send_to(op, http);
}

static void poll_cb(uv_timer_t *t)
{
    struct ud_cluster *c = t->data;
    uint64_t now = uv_now(c->w->loop);
    struct op *op = c->ops, *next;
    for (; op != NULL; op = next) {
        next = op->next;
        if (op->state == ST_LEADER_WAIT) {
            advance(op);
        } else if (c->w->stopping && op->state != ST_APPLY_WAIT && op->state != ST_STREAMING) {
            /* (An answer under way finishes: the HTTP server's stop waits for it.) */
            fail_stopping(op);
        } else if (op->state == ST_STREAMING && op->stream != NULL &&
                   ud_http_stream_stalled(op->stream, c->w->config->forward_stall_ms)) {
            /* A client that stopped reading would otherwise hold the leader's transfer, and
             * there a LOB reader, for as long as it keeps its socket open (curl skips its speed
             * check while the transfer is paused). The wait is that of one piece for room in the
             * client's socket, which the kernel reports once the client has taken a good part of
             * what the socket holds: docs/configuration.md says what that means for slow
             * clients. */
            ud_warn(LOG,
                    "linearizable read passed on from the leader cut: its client took nothing "
                    "for %u ms ([raft] forward_stall_ms)",
                    c->w->config->forward_stall_ms);
            if (op->t != NULL)
                ud_http_transfer_cancel(op->t); /* lets the leader's side go */
            op->t = NULL;
            ud_http_stream_cut(op->stream);
            op->stream = NULL;
            op_free(op);
        } else if (op->state == ST_APPLY_WAIT && now >= op->apply_deadline) {
            if (op->kind == OP_READ || op->kind == OP_BARRIER) {
                /* A read now could miss writes acknowledged before it arrived. */
                char msg[UD_ERRMSG_SIZE];
                snprintf(msg, sizeof msg,
                         "linearizable read: raft index %llu was not applied here within %d ms "
                         "(this node is behind); retry",
                         (unsigned long long)op->target, APPLY_WAIT_MS);
                ud_warn(LOG, "%s", msg);
                fail(op, UD_ECLOSED, msg);
                continue;
            }
            /* Acknowledged by the leader: the write happened; this node is only slow. */
            ud_warn(LOG, "raft index %llu not applied here within %d ms; answering anyway",
                    (unsigned long long)op->target, APPLY_WAIT_MS);
            deliver(op);
        }
    }
    start_barrier(c);
    arm(c);
}

/* Every loop iteration while operations wait to be applied here: applies complete on the loop
 * (or wake it from the apply thread), so this answers them without a timer's delay. */
static void check_cb(uv_check_t *h)
{
    struct ud_cluster *c = h->data;
    uint64_t applied = applied_here(c);
    struct op *op = c->ops, *next;
    int changed = 0;
    for (; op != NULL; op = next) {
        next = op->next;
        if (op->state == ST_APPLY_WAIT && applied >= op->target) {
            deliver(op);
            changed = 1;
        }
    }
    if (changed)
        arm(c);
}

/* --- entry points ---------------------------------------------------------------------------- */

/* 0: a linearizable read; 1: local (the default); -1: answered 400. */
static int read_consistency(struct ud_http_req *r)
{
    size_t ql;
    const char *q = ud_http_req_query(r, &ql);
    uint8_t v[32];
    size_t vl;
    char errmsg[UD_ERRMSG_SIZE];
    if (ql == 0 || ud_http_query_get(q, ql, "consistency", v, sizeof v, &vl, errmsg) != 0)
        return 1;
    if (vl == 5 && memcmp(v, "local", 5) == 0)
        return 1;
    if (vl == 12 && memcmp(v, "linearizable", 12) == 0)
        return 0;
    ud_http_reply_error(r, 400, "consistency must be local (the default) or linearizable, not %.*s",
                        (int)vl, (const char *)v);
    return -1;
}

int ud_cluster_intercept(void *arg, struct ud_http_req *r)
{
    struct ud_writer *w = arg;
    struct ud_cluster *c = w->cluster;
    unsigned flags = ud_http_req_route_flags(r);
    int write = (flags & UD_HTTP_ROUTE_WRITE) != 0;
    int blind = (flags & UD_HTTP_ROUTE_BLIND_WRITE) != 0;
    int is_read = 0;
    if (!write) {
        unsigned m = ud_http_req_method(r);
        if (m != UD_HTTP_GET && m != UD_HTTP_HEAD)
            return 0;
        int rc = read_consistency(r);
        if (rc < 0)
            return 1;
        if (rc > 0)
            return 0;
        is_read = 1;
    }
    if (c == NULL || c->closing)
        return 0;
    int forwarded = ud_http_req_marked(r); /* UD_CLUSTER_FORWARDED */
    int leader = ud_writer_is_leader(w);
    /* A new leader runs writes once it has applied earlier leaders' entries (advance); blind
     * writes (admin, forwarded records) read nothing those entries change and run at once. */
    if (leader && !is_read && (blind || ud_raft_node_leader_ready(w->raft)))
        return 0;
    if (!leader && forwarded) {
        /* One hop only: the follower that sent it waits for the next leader. */
        ud_http_set_header(r, UD_CLUSTER_NOT_LEADER, "1");
        ud_http_set_header(r, "retry-after", "1");
        ud_http_reply_error(r, 503, "this writer is not the raft leader (any more)");
        return 1;
    }
    struct op *op = op_new(c, is_read && leader ? OP_READ : OP_HTTP);
    op->r = r;
    op->is_read = is_read;
    op->blind = blind;
    op->forwarded = forwarded;
    op->state = ST_LEADER_WAIT;
    advance(op);
    arm(c);
    return 1;
}

/*
 * A follower learns that an entry is committed only from the leader's next AppendEntries, which
 * raft 0.15 sends with the next entry or heartbeat: a follower waiting to apply a forwarded write
 * waited a heartbeat (100 ms) when nothing else was written (measured: 7 forwarded writes/s, p50
 * 160 ms, with one client). So when the leader answers a forwarded write it appends a barrier,
 * whose AppendEntries carries the new commit index at once. One at a time: the writes answered
 * while one is in flight share the next.
 */
static void push_now(struct ud_cluster *c);

static void push_done(void *arg, int status, const char *errmsg)
{
    struct ud_cluster *c = arg;
    (void)status;
    (void)errmsg;
    c->push_inflight = 0;
    if (c->push_again && !c->closing)
        push_now(c);
}

static void push_now(struct ud_cluster *c)
{
    char errmsg[UD_ERRMSG_SIZE];
    c->push_again = 0;
    if (c->w->raft != NULL && !c->w->stopping && ud_writer_is_leader(c->w) &&
        ud_raft_node_barrier(c->w->raft, push_done, c, errmsg) == 0)
        c->push_inflight = 1;
}

static void kick_cb(uv_timer_t *t)
{
    struct ud_cluster *c = t->data;
    struct deferred *d = c->deferred;
    c->deferred = c->deferred_tail = NULL;
    while (d != NULL) {
        struct deferred *next = d->next;
        d->fn(d->arg);
        free(d);
        d = next;
    }
    if (c->push_again && !c->push_inflight && !c->closing)
        push_now(c);
}

void ud_cluster_defer(struct ud_writer *w, void (*fn)(void *arg), void *arg)
{
    struct ud_cluster *c = w->cluster;
    struct deferred *d = malloc(sizeof *d);
    if (d == NULL)
        abort();
    d->fn = fn;
    d->arg = arg;
    d->next = NULL;
    if (c->deferred_tail != NULL)
        c->deferred_tail->next = d;
    else
        c->deferred = d;
    c->deferred_tail = d;
    uv_timer_start(&c->kick, kick_cb, 0, 0);
}

/* Called while answering, which may be inside raft's apply callback (a write failing because
 * leadership was lost): raft is entered again only from the loop (kick_cb). */
static void push_commit(struct ud_cluster *c)
{
    c->push_again = 1;
    if (!c->push_inflight && !uv_is_active((uv_handle_t *)&c->kick))
        uv_timer_start(&c->kick, kick_cb, 0, 0);
}

void ud_cluster_on_reply(void *arg, struct ud_http_req *r)
{
    struct ud_writer *w = arg;
    if (w->raft == NULL || !ud_http_req_marked(r)) /* UD_CLUSTER_FORWARDED */
        return;
    char v[32];
    uint64_t applied = ud_raft_node_applied_index(w->raft);
    snprintf(v, sizeof v, "%llu", (unsigned long long)applied);
    ud_http_set_header(r, UD_CLUSTER_APPLIED, v);
    if (w->cluster != NULL && !w->cluster->closing && ud_writer_is_leader(w))
        push_commit(w->cluster);
}

void ud_cluster_forward_records(struct ud_writer *w, const char *ns, const uint8_t *key,
                                size_t key_len, const uint8_t *digest, uint8_t **records,
                                const size_t *lens, size_t n, ud_submit_cb cb, void *arg)
{
    struct ud_cluster *c = w->cluster;
    struct op *op = op_new(c, OP_RECORDS);
    snprintf(op->ns, sizeof op->ns, "%s", ns);
    if (key != NULL && key_len > 0 && key_len <= sizeof op->key) {
        memcpy(op->key, key, key_len);
        op->key_len = key_len;
        if (digest != NULL) {
            memcpy(op->digest, digest, sizeof op->digest);
            op->has_digest = 1;
        }
    }
    op->payload = ud_record_list_pack(records, lens, n, &op->payload_len);
    op->nrecords = n;
    op->cb = cb;
    op->arg = arg;
    op->state = ST_LEADER_WAIT;
    /* Never answered inside the submit seam's call: the poll moves it on. */
    arm(c);
}

void ud_cluster_barrier(struct ud_writer *w, ud_cluster_barrier_cb cb, void *arg)
{
    struct ud_cluster *c = w->cluster;
    struct op *op = op_new(c, OP_BARRIER);
    op->is_read = 1;
    op->bcb = cb;
    op->arg = arg;
    op->state = ST_LEADER_WAIT;
    arm(c); /* the poll moves it on: never answered inside this call */
}

/* --- the member directory: the leader announces its own addresses ---------------------------- */

static void announce_done(void *arg, int status, const struct ud_fsm_result *res,
                          const char *errmsg)
{
    struct ud_cluster *c = arg;
    (void)res;
    c->announce_inflight = 0;
    if (status != 0)
        ud_debug(LOG, "announcing this writer's addresses: %s", errmsg);
}

static void announce_cb(uv_timer_t *t)
{
    struct ud_cluster *c = t->data;
    struct ud_writer *w = c->w;
    if (!c->seen_self && ud_cluster_member_of(w, w->config->node_id, NULL) == 1)
        c->seen_self = 1;
    if (c->announce_inflight || w->stopping || w->raft == NULL ||
        !ud_raft_node_leader_ready(w->raft))
        return;
    char http[160], resp[128];
    snprintf(http, sizeof http, "%s", self_http(c));
    self_resp(c, resp, sizeof resp);
    const struct ud_directory_entry *e =
        ud_fsm_member(ud_raft_node_fsm(w->raft), w->config->node_id);
    if (e != NULL && strcmp(e->http, http) == 0 && strcmp(e->resp, resp) == 0)
        return;
    size_t size = ud_command_member_size(http, resp), len;
    uint8_t *buf = ud_raft_buf_alloc(size);
    if (buf == NULL)
        return;
    char errmsg[UD_ERRMSG_SIZE];
    if (ud_command_encode_member(w->config->node_id, http, resp, buf, size, &len) != 0 ||
        ud_raft_node_propose(w->raft, buf, len, announce_done, c, errmsg) != 0) {
        ud_raft_buf_free(buf);
        return;
    }
    c->announce_inflight = 1;
}

/* --- lifecycle ------------------------------------------------------------------------------- */

int ud_writer_cluster_init(struct ud_writer *w, char *errmsg)
{
    struct ud_cluster *c = calloc(1, sizeof *c);
    if (c == NULL)
        return ud_errf(errmsg, UD_ENOMEM, "cluster: out of memory");
    c->w = w;
    int rc = ud_http_client_new(w->loop, &c->client, errmsg);
    if (rc != 0) {
        free(c);
        return ud_errwrap(errmsg, rc, "cluster: HTTP client");
    }
    uv_timer_init(w->loop, &c->poll);
    uv_check_init(w->loop, &c->check);
    uv_timer_init(w->loop, &c->announce);
    uv_timer_init(w->loop, &c->kick);
    c->poll.data = c->check.data = c->announce.data = c->kick.data = c;
    c->handles = 4;
    uv_timer_start(&c->announce, announce_cb, ANNOUNCE_MS, ANNOUNCE_MS);
    uv_unref((uv_handle_t *)&c->announce);
    w->cluster = c;
    return 0;
}

static void handle_closed_cb(uv_handle_t *h)
{
    struct ud_cluster *c = h->data;
    if (--c->handles == 0)
        free(c);
}

void ud_writer_cluster_close(struct ud_writer *w)
{
    struct ud_cluster *c = w->cluster;
    if (c == NULL)
        return;
    c->closing = 1;
    while (c->ops != NULL) {
        struct op *op = c->ops;
        if (op->state == ST_APPLY_WAIT && !op->is_read)
            deliver(op); /* the leader committed it: its answer, not applied here yet */
        else
            fail_stopping(op);
    }
    /* Deferred calls still run: they answer their requests (raft is closed by now). */
    while (c->deferred != NULL) {
        struct deferred *d = c->deferred;
        c->deferred = d->next;
        d->fn(d->arg);
        free(d);
    }
    c->deferred_tail = NULL;
    w->cluster = NULL;
    ud_http_client_close(c->client, NULL, NULL);
    uv_close((uv_handle_t *)&c->poll, handle_closed_cb);
    uv_close((uv_handle_t *)&c->check, handle_closed_cb);
    uv_close((uv_handle_t *)&c->announce, handle_closed_cb);
    uv_close((uv_handle_t *)&c->kick, handle_closed_cb);
}
