/*
 * unison-relayer's HTTP front end: the core read API, /status/upstream, follower metrics, and
 * writes answered 403 naming the upstream that takes them.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/http/http.h"
#include "core/log.h"
#include "relayer/relayer.h"

#define LOG "http"

static struct ud_relayer *relayer_of(struct ud_http_req *req)
{
    return ud_http_server_app(ud_http_req_server(req));
}

static void on_write(struct ud_http_req *req, void *arg)
{
    (void)arg;
    struct ud_relayer *r = relayer_of(req);
    const char *ns = ud_http_req_ns_name(req);
    const char *up = ud_relayer_upstream_for(r, ns[0] != '\0' ? ns : NULL);
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
        {"write_refused", writes, "/api/v1/{ns}", 0, on_write, NULL},
        {"write_refused", writes, "/api/v1/{ns}/{rest*}", 0, on_write, NULL},
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
