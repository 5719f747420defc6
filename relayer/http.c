/*
 * unison-relayer's HTTP front end: the core read API, the replication endpoints for the next hop,
 * /status/upstream, follower metrics, and writes: answered 403 naming the upstream that takes
 * them, or, with [relayer] forward_writes, forwarded to it as the same request and answered with
 * its response.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/http/http.h"
#include "core/http_client.h"
#include "core/log.h"
#include "relayer/relayer.h"

#define LOG "http"

static struct ud_relayer *relayer_of(struct ud_http_req *req)
{
    return ud_http_server_app(ud_http_req_server(req));
}

/* Largest upstream response relayed back (write answers are small JSON documents). */
#define FORWARD_MAX_RESPONSE (1u << 20)
#define FORWARD_TIMEOUT_MS   30000

/* A write being forwarded: the request waits for the upstream's answer. */
struct forward {
    struct ud_http_req *req;
    struct ud_http_transfer *t;
    char upstream[UD_RELAYER_URL_MAX];
    char content_type[128];
    char code[16];    /* the upstream's unison-code header (the write's UD_E* code), passed on */
    char outcome[16]; /* the upstream's unison-outcome header (a write in doubt), passed on */
};

static int forward_headers(void *arg, long status)
{
    struct forward *fw = arg;
    (void)status;
    if (!ud_http_transfer_header(fw->t, "content-type", fw->content_type, sizeof fw->content_type))
        fw->content_type[0] = '\0';
    if (!ud_http_transfer_header(fw->t, "unison-code", fw->code, sizeof fw->code))
        fw->code[0] = '\0';
    if (!ud_http_transfer_header(fw->t, UD_HTTP_OUTCOME, fw->outcome, sizeof fw->outcome))
        fw->outcome[0] = '\0';
    return 0;
}

static void forward_done(void *arg, const struct ud_http_result *res)
{
    struct forward *fw = arg;
    if (res->rc != 0 && res->unsent) {
        ud_http_reply_error(fw->req, 502, "forwarding the write to the upstream %s failed: %s",
                            fw->upstream, res->errmsg);
    } else if (res->rc != 0) {
        /* The upstream may have the write: sent again without a key it could apply twice. */
        char msg[UD_ERRMSG_SIZE * 2];
        int code = ud_err_indoubt(msg, sizeof msg, "forwarded to the upstream %s, no answer: %s",
                                  fw->upstream, res->errmsg);
        ud_http_reply_code(fw->req, code, msg);
    } else {
        ud_http_set_header(fw->req, "x-unison-forwarded-to", fw->upstream);
        if (fw->code[0] != '\0')
            ud_http_set_header(fw->req, "unison-code", fw->code);
        if (fw->outcome[0] != '\0')
            ud_http_set_header(fw->req, UD_HTTP_OUTCOME, fw->outcome);
        ud_http_reply(fw->req, (int)res->status,
                      fw->content_type[0] ? fw->content_type : "application/json",
                      res->body != NULL ? res->body : (const uint8_t *)"", res->body_len);
    }
    free(fw);
}

/* Request headers that change what a write means, passed on as they are. (If-None-Match and
 * If-Unmodified-Since never get here: a write carrying one is refused with a 400 before routing,
 * core/http/server.c precondition_refused.) */
static const char *const forwarded_headers[] = {"if-match", "idempotency-key"};

/* Forwards req to up: the same /api/v1 path, or (internal) the records a downstream relayer
 * forwarded for RESP writes, to up's /internal/v1/{ns}/records (relayer/resp_forward.c). */
static void forward(struct ud_relayer *r, struct ud_http_req *req, const char *up, int internal)
{
    const char *ns_raw = "", *rest = NULL, *q;
    size_t ns_len = 0, rest_len = 0, qlen;
    ud_http_req_param(req, "ns", &ns_raw, &ns_len);
    int has_rest = ud_http_req_param(req, "rest", &rest, &rest_len);
    q = ud_http_req_query(req, &qlen);
    char url[UD_RELAYER_URL_MAX + 4096];
    int n = internal
                ? snprintf(url, sizeof url, "%s/internal/v1/%.*s/records", up, (int)ns_len, ns_raw)
                : snprintf(url, sizeof url, "%s/api/v1/%.*s%s%.*s%s%.*s", up, (int)ns_len, ns_raw,
                           has_rest ? "/" : "", (int)rest_len, has_rest ? rest : "",
                           qlen ? "?" : "", (int)qlen, q);
    if (n < 0 || (size_t)n >= sizeof url) {
        ud_http_reply_error(req, 414, "request path too long to forward");
        return;
    }
    unsigned m = ud_http_req_method(req);
    enum ud_http_client_method method = m == UD_HTTP_PUT      ? UD_HTTP_CLIENT_PUT
                                        : m == UD_HTTP_DELETE ? UD_HTTP_CLIENT_DELETE
                                                              : UD_HTTP_CLIENT_POST;
    /* Each with its whole value: one dropped for its length made a conditional write
     * unconditional, or let a retry apply twice; the upstream answers a value it cannot take. */
    enum { NPASSED = sizeof forwarded_headers / sizeof forwarded_headers[0] };
    char *lines[NPASSED];
    const char *headers[NPASSED + 1];
    size_t nh = 0;
    int keyed = 0;
    for (size_t i = 0; i < NPASSED; i++) {
        if ((lines[nh] = ud_http_req_header_line(req, forwarded_headers[i])) != NULL) {
            headers[nh] = lines[nh];
            nh++;
            keyed |= strcmp(forwarded_headers[i], "idempotency-key") == 0;
        }
    }
    headers[nh] = NULL;
    struct forward *fw = calloc(1, sizeof *fw);
    if (fw == NULL)
        abort(); /* network glue */
    fw->req = req;
    snprintf(fw->upstream, sizeof fw->upstream, "%s", up);
    size_t body_len = 0;
    const uint8_t *body = ud_http_req_body(req, &body_len);
    size_t ct_len = 0;
    const char *ct = ud_http_req_header(req, "content-type", &ct_len);
    char ct_buf[128] = "";
    if (ct != NULL && ct_len < sizeof ct_buf)
        snprintf(ct_buf, sizeof ct_buf, "%.*s", (int)ct_len, ct);
    /* Without a key the upstream cannot tell a re-send from a new write: at most once. A key
     * counts only on a route that passes it on (any other refused it before this). */
    int send_once = !keyed || !(ud_http_req_route_flags(req) & UD_HTTP_ROUTE_IDEMPOTENCY_KEY);
    struct ud_http_request hr = {.url = url,
                                 .method = method,
                                 .body = body,
                                 .body_len = body_len,
                                 .content_type = ct_buf[0] ? ct_buf : NULL,
                                 .headers = headers,
                                 .timeout_ms = FORWARD_TIMEOUT_MS,
                                 .collect_max = FORWARD_MAX_RESPONSE,
                                 .ca_file = r->config->tls_ca,
                                 .send_once = send_once,
                                 .on_headers = forward_headers,
                                 .on_done = forward_done,
                                 .arg = fw};
    char errmsg[UD_ERRMSG_SIZE];
    int rc = ud_http_client_start(r->client, &hr, &fw->t, errmsg); /* copies the headers */
    for (size_t i = 0; i < nh; i++)
        free(lines[i]);
    if (rc != 0) {
        ud_http_reply_error(req, 502, "forwarding the write to %s: %s", up, errmsg);
        free(fw);
    }
}

static void on_write(struct ud_http_req *req, void *arg)
{
    int internal = arg != NULL;
    struct ud_relayer *r = relayer_of(req);
    const char *ns = ud_http_req_ns_name(req);
    const char *up = ud_relayer_upstream_for(r, ns[0] != '\0' ? ns : NULL);
    if (r->config->forward_writes && up[0] != '\0' && r->client != NULL) {
        forward(r, req, up, internal);
        return;
    }
    struct ud_jbuf j;
    ud_jbuf_init(&j);
    char msg[UD_RELAYER_URL_MAX + 160];
    snprintf(msg, sizeof msg, "this node is a read-only relayer; send writes to its upstream %s",
             up);
    ud_jbuf_lit(&j, "{\"error\":");
    ud_jbuf_str(&j, msg, strlen(msg));
    ud_jbuf_lit(&j, ",\"upstream\":");
    ud_jbuf_str(&j, up, strlen(up));
    ud_jbuf_lit(&j, "}");
    ud_http_reply_json(req, 403, &j);
}

static void on_status_upstream(struct ud_http_req *req, void *arg)
{
    (void)arg;
    struct ud_relayer *r = relayer_of(req);
    struct ud_jbuf j;
    ud_jbuf_init(&j);
    ud_jbuf_lit(&j, "{\"id\":");
    ud_jbuf_str(&j, r->config->id, strlen(r->config->id));
    ud_jbuf_lit(&j, ",\"discovery_error\":");
    if (r->discover_error[0] != '\0')
        ud_jbuf_str(&j, r->discover_error, strlen(r->discover_error));
    else
        ud_jbuf_lit(&j, "null");
    ud_jbuf_lit(&j, ",\"namespaces\":[");
    for (size_t i = 0; i < r->nfollowers; i++) {
        if (i > 0)
            ud_jbuf_lit(&j, ",");
        ud_follower_status_json(r->followers[i], &j);
    }
    ud_jbuf_lit(&j, "]}");
    ud_http_reply_json(req, 200, &j);
}

static int node_is_leader(void *arg)
{
    (void)arg;
    return 0;
}

/* A namespace is known deleted here only when its follower dropped the copy for that reason; a
 * relayer recreated empty, or bootstrapping, says nothing, and its downstream keeps its copy. */
static uint64_t node_ns_deleted(void *arg, const char *name)
{
    struct ud_follower *f = ud_relayer_follower(arg, name);
    return f != NULL ? ud_follower_upstream_deleted(f) : 0;
}

static int node_ready(void *arg, char *why, size_t size)
{
    struct ud_relayer *r = arg;
    if (r->stopping) {
        snprintf(why, size, "shutting down");
        return 0;
    }
    return ud_relayer_followers_ready(r, why, size);
}

static void node_leader_json(void *arg, struct ud_jbuf *out)
{
    struct ud_relayer *r = arg;
    const char *up = ud_relayer_upstream_for(r, NULL);
    ud_jbuf_lit(out, ",\"state\":\"relayer\",\"upstream\":");
    ud_jbuf_str(out, up, strlen(up));
}

static void node_metrics(void *arg, struct ud_jbuf *out)
{
    ud_relayer_followers_metrics(arg, out);
}

static int add_routes(struct ud_http_server *srv)
{
    const unsigned writes = UD_HTTP_PUT | UD_HTTP_POST | UD_HTTP_DELETE;
    /* If-Match and Idempotency-Key go upstream with a forwarded write, and the writer there
     * evaluates them (and refuses a key on a route that takes none before applying anything, so
     * a keyed write may be re-sent). Namespace create and delete take no key: refused here. */
    const unsigned pass_if_match = UD_HTTP_ROUTE_IF_MATCH,
                   pass_key = UD_HTTP_ROUTE_IF_MATCH | UD_HTTP_ROUTE_IDEMPOTENCY_KEY;
    int rc = ud_http_register_reads(srv);
    if (rc != 0)
        return rc;
    /* The stream endpoints for the next hop (and its acks, which are POSTs: before the
     * catch-all below). Defaults: docs/replication.md. */
    const struct ud_relayer_config *cfg = ((struct ud_relayer *)ud_http_server_app(srv))->config;
    struct ud_http_repl_options repl = {
        .min_isr = cfg->min_isr,
        .isr_max_lag_ms = cfg->isr_max_lag_ms,
        .isr_max_lag_records = cfg->isr_max_lag_records,
        .follower_timeout_ms = cfg->follower_timeout_ms,
        .ack_timeout_ms = cfg->ack_timeout_ms,
        .stream_batch_bytes = cfg->stream_batch_bytes,
        .heartbeat_ms = cfg->heartbeat_ms,
        .retain_for_isr = cfg->retain_for_isr != 0,
    };
    if ((rc = ud_http_register_replication(srv, &repl)) != 0)
        return rc;
    const struct ud_http_route routes[] = {
        {"status_upstream", UD_HTTP_GET, "/status/upstream", 0, on_status_upstream, NULL},
        /* Every write route of the writer, and any other method on the API, is refused with the
         * address that takes it. Reads were matched above. */
        {"write_refused", writes, "/api/v1/{ns}", pass_if_match, on_write, NULL},
        {"write_refused", writes, "/api/v1/{ns}/{rest*}", pass_key, on_write, NULL},
        /* Records of RESP writes forwarded by a relayer below: passed up with forward_writes
         * (any non-NULL arg marks the internal path), else refused like any write. */
        {"internal_records", UD_HTTP_POST, "/internal/v1/{ns}/records",
         UD_HTTP_ROUTE_IDEMPOTENCY_KEY, on_write, "internal"},
    };
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
        if ((rc = ud_http_server_add_route(srv, &routes[i])) != 0)
            return rc;
    return 0;
}

static void failed_start_stopped(void *arg)
{
    ud_http_server_free(arg);
}

int ud_relayer_http_start(struct ud_relayer *r, char *errmsg)
{
    const struct ud_relayer_config *cfg = r->config;
    struct ud_http_options o;
    memset(&o, 0, sizeof o);
    o.listen = cfg->http_listen;
    o.tls_cert = cfg->tls_cert;
    o.tls_key = cfg->tls_key;
    o.tls_listen = cfg->tls_listen[0] != '\0' ? cfg->tls_listen : NULL;
    o.max_body = cfg->max_body;
    o.wal_segment_size = cfg->engine.segment_size;
    o.registry = r->registry;
    o.node.is_leader = node_is_leader;
    o.node.ready = node_ready;
    o.node.leader_json = node_leader_json;
    o.node.metrics = node_metrics;
    o.node.ns_deleted = node_ns_deleted;
    o.node.arg = r;
    struct ud_http_server *srv;
    int rc = ud_http_server_new(r->loop, &o, &srv, errmsg);
    if (rc != 0)
        return rc;
    ud_http_server_set_app(srv, r);
    if ((rc = add_routes(srv)) != 0) {
        ud_http_server_free(srv);
        return ud_errf(errmsg, rc, "http: too many routes");
    }
    if ((rc = ud_http_server_listen(srv, &r->http_port, &r->https_port, errmsg)) != 0) {
        ud_http_server_stop(srv, failed_start_stopped, srv);
        return rc;
    }
    r->http = srv;
    return 0;
}

struct http_stop {
    struct ud_relayer *r;
    void (*done)(struct ud_relayer *r);
};

static void http_stopped(void *arg)
{
    struct http_stop *st = arg;
    struct ud_relayer *r = st->r;
    void (*done)(struct ud_relayer *) = st->done;
    free(st);
    size_t requests, conns;
    ud_http_server_load(r->http, &requests, &conns);
    /* After a forced stop, late callbacks may still reach the server: leave it to the exit. */
    if (requests == 0 && conns == 0)
        ud_http_server_free(r->http);
    r->http = NULL;
    if (done != NULL)
        done(r);
}

void ud_relayer_http_stop(struct ud_relayer *r, void (*done)(struct ud_relayer *r))
{
    if (r->http == NULL) {
        if (done != NULL)
            done(r);
        return;
    }
    struct http_stop *st = malloc(sizeof *st);
    if (st == NULL)
        abort();
    st->r = r;
    st->done = done;
    ud_http_server_stop(r->http, http_stopped, st);
}
