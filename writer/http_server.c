/* unison-writer's HTTP front end: the core server with the write routes, started and stopped by
 * main.c (ud_writer_http_start/stop from writer/writer.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/http/http.h"
#include "core/log.h"
#include "raft/log_reserve.h"
#include "raft/node.h"
#include "writer/cluster.h"
#include "writer/config.h"
#include "writer/http_digest.h"
#include "writer/http_write.h"
#include "writer/submit.h"
#include "writer/writer.h"

/* --- the simple writes: one record, answered with its LSN ------------------------------------ */

struct simple_call {
    struct ud_http_req *r;
    size_t processed;
};

static void simple_done(void *arg, int status, const char *errmsg, const uint64_t *lsns, size_t n)
{
    struct simple_call *c = arg;
    for (size_t i = 0; status == 0 && i < n; i++)
        ud_http_req_wrote(c->r, lsns[i]);
    if (status != 0) {
        ud_writer_http_reply_submit_error(c->r, status, errmsg);
    } else if (c->processed > 0) {
        struct ud_jbuf j;
        ud_jbuf_init(&j);
        ud_jbuf_printf(&j, "{\"success\":true,\"processed\":%zu,\"lsn\":", c->processed);
        ud_jbuf_u64(&j, n > 0 ? lsns[0] : 0);
        ud_jbuf_lit(&j, "}");
        ud_http_reply_json(c->r, 200, &j);
    } else {
        ud_writer_http_reply_ok(c->r, n > 0 ? lsns[0] : 0);
    }
    free(c);
}

void ud_writer_http_submit(struct ud_writer_http *wh, struct ud_http_req *r, uint8_t *rec,
                           size_t len, size_t processed)
{
    struct simple_call *c = malloc(sizeof *c);
    if (c == NULL)
        abort();
    c->r = r;
    c->processed = processed;
    const char *key;
    size_t kl;
    uint8_t digest[UD_COMMAND_DIGEST_SIZE];
    int keyed = ud_http_key_digest(r, &key, &kl, digest);
    ud_submit_keyed(wh->w, ud_http_req_ns_name(r), (const uint8_t *)key, kl, keyed ? digest : NULL,
                    &rec, &len, 1, simple_done, c);
}

/* --- node state for /readyz, /status/leader, /metrics ---------------------------------------- */

static int node_is_leader(void *arg)
{
    return ud_writer_is_leader(arg);
}

static uint64_t node_ns_deleted(void *arg, const char *name)
{
    return ud_writer_ns_deleted(arg, name);
}

static int node_ready(void *arg, char *why, size_t size)
{
    struct ud_writer *w = arg;
    if (w->stopping) {
        snprintf(why, size, "shutting down");
        return 0;
    }
    const char *catching_up = ud_writer_catching_up(w);
    if (catching_up != NULL) {
        snprintf(why, size, "%s; raft is not running here", catching_up);
        return 0;
    }
    if (ud_raft_log_short()) {
        ud_raft_log_short_reason(why, size); /* writes are refused (raft/log_reserve.h) */
        return 0;
    }
    if (!ud_writer_is_leader(w)) {
        snprintf(why, size, "this node is not the raft leader: it cannot commit writes");
        return 0;
    }
    /* A new leader serves once every entry of earlier terms is applied here. */
    if (w->raft != NULL && !ud_raft_node_leader_ready(w->raft)) {
        snprintf(why, size, "this node leads but has not applied earlier leaders' entries yet");
        return 0;
    }
    return 1;
}

static void node_leader_json(void *arg, struct ud_jbuf *out)
{
    struct ud_writer *w = arg;
    int leader = ud_writer_is_leader(w);
    uint64_t id = leader ? w->config->node_id : 0;
    const char *addr = NULL;
    if (w->raft != NULL)
        ud_raft_node_leader(w->raft, &id, &addr);
    const char *self = w->raft != NULL                        ? ud_raft_node_address(w->raft)
                       : w->config->raft_advertise[0] != '\0' ? w->config->raft_advertise
                                                              : w->config->raft_listen;
    ud_jbuf_printf(out, ",\"state\":\"%s\",\"nodeId\":%llu,\"raftAddress\":",
                   leader    ? "leader"
                   : id != 0 ? "follower"
                             : "no leader known",
                   (unsigned long long)w->config->node_id);
    ud_jbuf_str(out, self, strlen(self));
    if (id != 0) {
        ud_jbuf_printf(out, ",\"leaderId\":%llu", (unsigned long long)id);
        if (addr != NULL) {
            ud_jbuf_lit(out, ",\"leaderAddress\":");
            ud_jbuf_str(out, addr, strlen(addr));
        }
    }
}

static void node_metrics(void *arg, struct ud_jbuf *out)
{
    struct ud_writer *w = arg;
    if (w->raft == NULL)
        return;
    uint64_t id = 0;
    const char *addr = NULL;
    ud_raft_node_leader(w->raft, &id, &addr);
    ud_jbuf_printf(out,
                   "# HELP unison_raft_leader_id Node id of the raft leader known here (0: none).\n"
                   "# TYPE unison_raft_leader_id gauge\nunison_raft_leader_id %llu\n"
                   "# HELP unison_raft_last_applied Raft index last applied on this node.\n"
                   "# TYPE unison_raft_last_applied gauge\nunison_raft_last_applied %llu\n"
                   "# HELP unison_raft_inflight_proposals Raft entries proposed here, not yet "
                   "applied.\n# TYPE unison_raft_inflight_proposals gauge\n"
                   "unison_raft_inflight_proposals %u\n",
                   (unsigned long long)id, (unsigned long long)ud_raft_node_last_applied(w->raft),
                   ud_raft_node_inflight(w->raft));
    struct ud_submit_stats st;
    ud_submit_stats(w, &st);
    ud_jbuf_printf(
        out,
        "# HELP unison_write_requests_staged_total Writes answered after their raft entry "
        "was proposed and applied here.\n"
        "# TYPE unison_write_requests_staged_total counter\n"
        "unison_write_requests_staged_total %llu\n"
        "# HELP unison_write_entries_staged_total Raft entries those writes went in.\n"
        "# TYPE unison_write_entries_staged_total counter\n"
        "unison_write_entries_staged_total %llu\n"
        "# HELP unison_write_stage_seconds_total Time those writes spent in each stage "
        "of the write path, summed over writes (docs/raft.md \"Write latency by "
        "stage\").\n"
        "# TYPE unison_write_stage_seconds_total counter\n",
        (unsigned long long)st.requests, (unsigned long long)st.entries);
    const struct {
        const char *name;
        uint64_t ns;
    } stages[] = {{"queue", st.queue_ns},
                  {"commit", st.commit_ns},
                  {"apply", st.apply_ns},
                  {"deliver", st.deliver_ns}};
    for (size_t i = 0; i < sizeof stages / sizeof stages[0]; i++)
        ud_jbuf_printf(out, "unison_write_stage_seconds_total{stage=\"%s\"} %.6f\n", stages[i].name,
                       (double)stages[i].ns / 1e9);
    ud_jbuf_printf(out,
                   "# HELP unison_write_admission_holds_total Times writes began to wait for the "
                   "flush to the B+tree (admission control).\n"
                   "# TYPE unison_write_admission_holds_total counter\n"
                   "unison_write_admission_holds_total %llu\n"
                   "# HELP unison_write_admission_held_seconds_total Wall time during which "
                   "writes waited for the flush.\n"
                   "# TYPE unison_write_admission_held_seconds_total counter\n"
                   "unison_write_admission_held_seconds_total %.6f\n",
                   (unsigned long long)st.admission_holds, (double)st.admission_held_ns / 1e9);
}

/* --- start and stop -------------------------------------------------------------------------- */

static int add_routes(struct ud_http_server *srv, struct ud_writer_http *wh)
{
    /* Every route that writes records takes ?acks=isr (docs/replication.md) and an
     * Idempotency-Key (through the submit seam), and every route that commits through raft is a
     * write: a follower forwards it to the leader. Namespace create and delete take no key. */
    const unsigned ns = UD_HTTP_ROUTE_NS | UD_HTTP_ROUTE_ACKS | UD_HTTP_ROUTE_WRITE |
                        UD_HTTP_ROUTE_IDEMPOTENCY_KEY,
                   key = UD_HTTP_ROUTE_KEY, wr = UD_HTTP_ROUTE_WRITE, local = UD_HTTP_ROUTE_NS,
                   if_match = UD_HTTP_ROUTE_IF_MATCH;
    const struct ud_http_route routes[] = {
        {"ns_create", UD_HTTP_PUT, "/api/v1/{ns}", wr, ud_writer_http_on_ns_create, wh},
        {"ns_delete", UD_HTTP_DELETE, "/api/v1/{ns}", wr, ud_writer_http_on_ns_delete, wh},
        {"kv_batch", UD_HTTP_POST, "/api/v1/{ns}/kv/batch", ns, ud_writer_http_on_kv_batch, wh},
        {"kv_put", UD_HTTP_PUT, "/api/v1/{ns}/kv/{key*}", ns | key | if_match,
         ud_writer_http_on_kv_put, wh},
        {"kv_delete", UD_HTTP_DELETE, "/api/v1/{ns}/kv/{key*}", ns | key | if_match,
         ud_writer_http_on_kv_delete, wh},
        {"row_batch", UD_HTTP_POST, "/api/v1/{ns}/row/batch", ns, ud_writer_http_on_row_batch, wh},
        {"row_delete_columns", UD_HTTP_DELETE, "/api/v1/{ns}/row/{key*}/columns", ns | key,
         ud_writer_http_on_row_delete_columns, wh},
        {"row_put", UD_HTTP_PUT, "/api/v1/{ns}/row/{key*}", ns | key, ud_writer_http_on_row_put,
         wh},
        {"row_delete", UD_HTTP_DELETE, "/api/v1/{ns}/row/{key*}", ns | key,
         ud_writer_http_on_row_delete, wh},
        {"tx_begin", UD_HTTP_POST, "/api/v1/{ns}/tx/begin", ns, ud_writer_http_on_txn_begin, wh},
        {"tx_kv", UD_HTTP_POST, "/api/v1/{ns}/tx/{txn}/kv", ns, ud_writer_http_on_txn_kv, wh},
        {"tx_row", UD_HTTP_POST, "/api/v1/{ns}/tx/{txn}/row", ns, ud_writer_http_on_txn_row, wh},
        {"tx_lob", UD_HTTP_POST, "/api/v1/{ns}/tx/{txn}/lob", ns, ud_writer_http_on_txn_lob, wh},
        {"tx_commit", UD_HTTP_POST, "/api/v1/{ns}/tx/{txn}/commit", ns,
         ud_writer_http_on_txn_commit, wh},
        {"tx_abort", UD_HTTP_POST, "/api/v1/{ns}/tx/{txn}/abort", ns, ud_writer_http_on_txn_abort,
         wh},
        /* Backups copy this node's own files: never forwarded. */
        {"wal_backup", UD_HTTP_POST, "/api/v1/{ns}/wal/backup", local, ud_writer_http_on_wal_backup,
         wh},
        {"btree_backup", UD_HTTP_POST, "/api/v1/{ns}/btree/backup", local,
         ud_writer_http_on_btree_backup, wh},
    };
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        int rc = ud_http_server_add_route(srv, &routes[i]);
        if (rc != 0)
            return rc;
    }
    int rc = ud_cluster_add_routes(srv, wh->w);
    if (rc == 0)
        rc = ud_http_register_reads(srv);
    if (rc != 0)
        return rc;
    const struct ud_writer_config *cfg = wh->w->config;
    struct ud_http_repl_options ro = {
        .min_isr = cfg->min_isr,
        .isr_max_lag_ms = cfg->isr_max_lag_ms,
        .isr_max_lag_records = cfg->isr_max_lag_records,
        .follower_timeout_ms = cfg->follower_timeout_ms,
        .ack_timeout_ms = cfg->ack_timeout_ms,
        .stream_batch_bytes = cfg->stream_batch_bytes,
        .heartbeat_ms = cfg->heartbeat_ms,
        .retain_for_isr = cfg->retain_for_isr != 0,
    };
    return ud_http_register_replication(srv, &ro);
}

static void free_state(struct ud_writer_http *wh)
{
    ud_writer_http_kv_free(wh);
    ud_writer_http_txns_free(wh);
    free(wh);
}

static void failed_start_stopped(void *arg)
{
    struct ud_writer_http *wh = arg;
    ud_http_server_free(wh->srv);
    free_state(wh);
}

int ud_writer_http_start(struct ud_writer *w, char *errmsg)
{
    struct ud_writer_http *wh = calloc(1, sizeof *wh);
    if (wh == NULL)
        return ud_errf(errmsg, UD_ENOMEM, "http: out of memory");
    wh->w = w;
    const struct ud_writer_config *cfg = w->config;
    struct ud_http_options o;
    memset(&o, 0, sizeof o);
    o.listen = cfg->http_listen;
    o.tls_cert = cfg->tls_cert;
    o.tls_key = cfg->tls_key;
    o.tls_listen = cfg->tls_listen[0] != '\0' ? cfg->tls_listen : NULL;
    o.max_body = cfg->max_body;
    o.wal_segment_size = cfg->engine.segment_size;
    o.registry = w->registry;
    o.node.is_leader = node_is_leader;
    o.node.ready = node_ready;
    o.node.leader_json = node_leader_json;
    o.node.metrics = node_metrics;
    o.node.intercept = ud_cluster_intercept;
    o.node.on_reply = ud_cluster_on_reply;
    o.node.mark_header = UD_CLUSTER_FORWARDED;
    o.node.ns_deleted = node_ns_deleted;
    o.node.arg = w;
    struct ud_http_server *srv;
    int rc = ud_http_server_new(w->loop, &o, &srv, errmsg);
    if (rc != 0) {
        free(wh);
        return rc;
    }
    wh->srv = srv;
    ud_http_server_set_app(srv, wh);
    if ((rc = add_routes(srv, wh)) != 0) {
        ud_http_server_free(srv);
        free(wh);
        return ud_errf(errmsg, rc, "http: too many routes");
    }
    if ((rc = ud_http_server_listen(srv, &w->http_port, &w->https_port, errmsg)) != 0) {
        /* Handles may be open: they close on the loop, and the memory goes with them. */
        ud_http_server_stop(srv, failed_start_stopped, wh);
        return rc;
    }
    ud_writer_http_txn_start(wh);
    w->http = srv;
    return 0;
}

void ud_writer_http_stop_progress(struct ud_writer_http *wh)
{
    if (!wh->stopping || !wh->server_stopped || wh->idle_timer_on || wh->background > 0)
        return;
    struct ud_writer *w = wh->w;
    void (*done)(struct ud_writer *) = wh->done;
    wh->done = NULL;
    size_t requests, conns;
    ud_http_server_load(wh->srv, &requests, &conns);
    /* After a forced stop, late callbacks may still reach the server: leave it to the exit. */
    if (requests == 0 && conns == 0) {
        ud_http_server_free(wh->srv);
        free_state(wh);
        w->http = NULL;
    }
    if (done != NULL)
        done(w);
}

static void on_server_stopped(void *arg)
{
    struct ud_writer_http *wh = arg;
    wh->server_stopped = 1;
    ud_writer_http_stop_progress(wh);
}

static void timer_closed_cb(uv_handle_t *h)
{
    struct ud_writer_http *wh = h->data;
    wh->idle_timer_on = 0;
    ud_writer_http_stop_progress(wh);
}

void ud_writer_http_stop(struct ud_writer *w, void (*done)(struct ud_writer *w))
{
    if (w->http == NULL) {
        if (done != NULL)
            done(w);
        return;
    }
    struct ud_writer_http *wh = ud_http_server_app(w->http);
    if (wh->stopping)
        return;
    wh->stopping = 1;
    wh->done = done;
    if (wh->idle_timer_on)
        uv_close((uv_handle_t *)&wh->idle_timer, timer_closed_cb);
    ud_http_server_stop(wh->srv, on_server_stopped, wh);
}
