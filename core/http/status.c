/* Health, readiness, leader status and Prometheus metrics; the read API's route table. */
#include <stdio.h>
#include <string.h>

#include "core/clock.h"
#include "core/http/http_int.h"
#include "core/http/read_pause.h"

void ud_http_on_healthz(struct ud_http_req *r, void *arg)
{
    (void)arg;
    static const char ok[] = "{\"status\":\"ok\"}\n";
    ud_http_reply(r, 200, "application/json", ok, sizeof ok - 1);
}

void ud_http_on_readyz(struct ud_http_req *r, void *arg)
{
    (void)arg;
    struct ud_http_server *s = ud_http_req_server(r);
    char why[160] = "";
    int ready = !s->stopping;
    if (!ready)
        snprintf(why, sizeof why, "shutting down");
    else if (s->opts.node.ready != NULL)
        ready = s->opts.node.ready(s->opts.node.arg, why, sizeof why);
    struct ud_jbuf j;
    ud_jbuf_init(&j);
    ud_jbuf_printf(&j, "{\"ready\":%s", ready ? "true" : "false");
    if (!ready) {
        ud_jbuf_lit(&j, ",\"reason\":");
        ud_jbuf_str(&j, why, strlen(why));
    }
    ud_jbuf_lit(&j, "}");
    if (!ready)
        ud_http_set_header(r, "retry-after", "1");
    ud_http_reply_json(r, ready ? 200 : 503, &j);
}

void ud_http_on_leader(struct ud_http_req *r, void *arg)
{
    (void)arg;
    struct ud_http_server *s = ud_http_req_server(r);
    const struct ud_http_node *n = &s->opts.node;
    int leader = n->is_leader != NULL ? n->is_leader(n->arg) : 0;
    struct ud_jbuf j;
    ud_jbuf_init(&j);
    ud_jbuf_printf(&j, "{\"isLeader\":%s", leader ? "true" : "false");
    if (n->leader_json != NULL)
        n->leader_json(n->arg, &j);
    ud_jbuf_lit(&j, "}");
    ud_http_reply_json(r, 200, &j);
}

struct ns_metrics {
    struct ud_http_server *s;
    struct ud_jbuf *j;
    int pass;
};

static void ns_line(void *arg, const char *name)
{
    struct ns_metrics *m = arg;
    struct ud_ns *ns;
    if (ud_registry_acquire(m->s->opts.registry, name, &ns) != 0)
        return;
    struct ud_ns_stats st;
    ud_ns_stats(ns, &st);
    ud_registry_release(m->s->opts.registry, ns);
    uint64_t seg =
        m->s->opts.wal_segment_size ? m->s->opts.wal_segment_size : UD_WAL_DEFAULT_SEGMENT_SIZE;
    switch (m->pass) {
    case 0:
        ud_jbuf_printf(m->j, "unison_lsn{namespace=\"%s\"} %llu\n", name,
                       (unsigned long long)st.last_lsn);
        break;
    case 1:
        ud_jbuf_printf(m->j, "unison_flushed_lsn{namespace=\"%s\"} %llu\n", name,
                       (unsigned long long)st.flushed_lsn);
        break;
    case 2:
        ud_jbuf_printf(m->j, "unison_flush_lag_records{namespace=\"%s\"} %llu\n", name,
                       (unsigned long long)(st.last_lsn - st.flushed_lsn));
        break;
    case 3:
        ud_jbuf_printf(m->j, "unison_wal_bytes{namespace=\"%s\"} %llu\n", name,
                       (unsigned long long)((st.wal_segments > 0 ? st.wal_segments - 1 : 0) * seg +
                                            st.offset));
        break;
    case 4:
        ud_jbuf_printf(m->j, "unison_wal_segments{namespace=\"%s\"} %u\n", name, st.wal_segments);
        break;
    case 5:
        ud_jbuf_printf(m->j, "unison_memtable_bytes{namespace=\"%s\"} %llu\n", name,
                       (unsigned long long)st.memtable_bytes);
        break;
    case 6:
        ud_jbuf_printf(m->j, "unison_open_transactions{namespace=\"%s\"} %u\n", name, st.open_txns);
        break;
    default:
        ud_jbuf_printf(m->j, "unison_flush_errors_total{namespace=\"%s\"} %llu\n", name,
                       (unsigned long long)st.flush_errors);
        break;
    }
}

void ud_http_on_metrics(struct ud_http_req *r, void *arg)
{
    (void)arg;
    static const char *const help[] = {
        "# HELP unison_lsn Last LSN applied in the namespace.\n# TYPE unison_lsn gauge\n",
        "# HELP unison_flushed_lsn Last LSN flushed to LMDB.\n# TYPE unison_flushed_lsn gauge\n",
        "# HELP unison_flush_lag_records Records applied but not yet flushed to LMDB (last LSN - "
        "flushed LSN).\n# TYPE unison_flush_lag_records gauge\n",
        "# HELP unison_wal_bytes WAL bytes on disk: full segments at the segment size plus the "
        "active segment's write offset.\n# TYPE unison_wal_bytes gauge\n",
        "# HELP unison_wal_segments WAL segment files on disk.\n# TYPE unison_wal_segments gauge\n",
        "# HELP unison_memtable_bytes Bytes held in memtables.\n# TYPE unison_memtable_bytes "
        "gauge\n",
        "# HELP unison_open_transactions Open transactions.\n# TYPE unison_open_transactions "
        "gauge\n",
        "# HELP unison_flush_errors_total Failed flush attempts.\n# TYPE "
        "unison_flush_errors_total counter\n",
    };
    struct ud_http_server *s = ud_http_req_server(r);
    struct ud_jbuf j;
    ud_jbuf_init(&j);
    /* Counted before rendering so that this scrape appears in its own output. */
    ud_http_metrics_render(&s->metrics, &j);
    for (int pass = 0; pass < (int)(sizeof help / sizeof help[0]); pass++) {
        ud_jbuf_lit(&j, help[pass]);
        struct ns_metrics m = {s, &j, pass};
        if (ud_registry_list(s->opts.registry, ns_line, &m, NULL) != 0) {
            ud_jbuf_free(&j);
            ud_http_reply_error(r, 500, "out of memory listing the namespaces");
            return;
        }
    }
    const struct ud_http_node *n = &s->opts.node;
    if (n->is_leader != NULL)
        ud_jbuf_printf(&j,
                       "# HELP unison_raft_leader 1 when this node is the raft leader.\n"
                       "# TYPE unison_raft_leader gauge\nunison_raft_leader %d\n",
                       n->is_leader(n->arg) ? 1 : 0);
    size_t live, conns;
    ud_http_server_load(s, &live, &conns);
    ud_jbuf_printf(&j,
                   "# HELP unison_http_in_flight Requests being served, LOB streams included.\n"
                   "# TYPE unison_http_in_flight gauge\nunison_http_in_flight %zu\n"
                   "# HELP unison_http_connections Open HTTP connections.\n"
                   "# TYPE unison_http_connections gauge\nunison_http_connections %zu\n"
                   "# HELP unison_uptime_seconds Seconds since the HTTP server started.\n"
                   "# TYPE unison_uptime_seconds gauge\nunison_uptime_seconds %.3f\n",
                   live, conns, (double)(ud_mono_ns() - s->started_ns) / 1e9);
    unsigned long pauses, ended, skipped;
    ud_http_read_pause_stats(&pauses, &ended, &skipped);
    ud_jbuf_printf(&j,
                   "# HELP unison_http_read_pauses_total HTTP/1 read pauses kept without "
                   "epoll_ctl.\n# TYPE unison_http_read_pauses_total counter\n"
                   "unison_http_read_pauses_total %lu\n"
                   "# HELP unison_http_read_pauses_ended_total Of those, pauses ended by data, a "
                   "FIN or a reset arriving.\n# TYPE unison_http_read_pauses_ended_total "
                   "counter\nunison_http_read_pauses_ended_total %lu\n"
                   "# HELP unison_epoll_rearms_skipped_total epoll re-registrations to the mask "
                   "already registered, not made.\n# TYPE unison_epoll_rearms_skipped_total "
                   "counter\nunison_epoll_rearms_skipped_total %lu\n",
                   pauses, ended, skipped);
    ud_http_repl_metrics(s, &j);
    if (n->metrics != NULL)
        n->metrics(n->arg, &j);
    if (j.err != 0) {
        ud_jbuf_free(&j);
        ud_http_reply_error(r, 500, "out of memory rendering metrics");
        return;
    }
    ud_http_reply(r, 200, "text/plain; version=0.0.4", j.p, j.len);
    ud_jbuf_free(&j);
}

int ud_http_register_reads(struct ud_http_server *s)
{
    const unsigned ns = UD_HTTP_ROUTE_NS, wait = UD_HTTP_ROUTE_MIN_LSN, key = UD_HTTP_ROUTE_KEY;
    const struct ud_http_route routes[] = {
        {"healthz", UD_HTTP_GET, "/healthz", 0, ud_http_on_healthz, NULL},
        {"readyz", UD_HTTP_GET, "/readyz", 0, ud_http_on_readyz, NULL},
        {"status_leader", UD_HTTP_GET, "/status/leader", 0, ud_http_on_leader, NULL},
        {"metrics", UD_HTTP_GET, "/metrics", 0, ud_http_on_metrics, NULL},
        {"namespaces", UD_HTTP_GET, "/api/v1", 0, ud_http_on_namespaces, NULL},
        {"kv_scan", UD_HTTP_GET, "/api/v1/{ns}/kv", ns | wait, ud_http_on_kv_scan, NULL},
        {"kv_get", UD_HTTP_GET, "/api/v1/{ns}/kv/{key*}", ns | wait | key, ud_http_on_kv_get, NULL},
        {"row_scan", UD_HTTP_GET, "/api/v1/{ns}/row", ns | wait, ud_http_on_row_scan, NULL},
        {"row_get", UD_HTTP_GET, "/api/v1/{ns}/row/{key*}", ns | wait | key, ud_http_on_row_get,
         NULL},
        {"lob_get", UD_HTTP_GET, "/api/v1/{ns}/lob", ns | wait, ud_http_on_lob_get, NULL},
        {"offset", UD_HTTP_GET, "/api/v1/{ns}/offset", ns | wait, ud_http_on_offset, NULL},
        {"stats", UD_HTTP_GET, "/api/v1/{ns}/stats", ns | wait, ud_http_on_stats, NULL},
        {"checkpoint", UD_HTTP_GET, "/api/v1/{ns}/checkpoint", ns | wait, ud_http_on_checkpoint,
         NULL},
    };
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        int rc = ud_http_server_add_route(s, &routes[i]);
        if (rc != 0)
            return rc;
    }
    return 0;
}
