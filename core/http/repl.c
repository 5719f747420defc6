/*
 * Replication endpoints shared by writers and relayers (docs/replication.md): registration,
 * POST /api/v1/{ns}/wal/ack, GET /status/replicas, acks=isr replies, the /metrics lines, and the
 * timer that forgets silent followers, times out acks=isr waits and keeps each namespace's WAL
 * retention floor at what its in-sync followers still need.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/http/body.h"
#include "core/http/repl_int.h"
#include "core/log.h"

/* Follower timeouts and retention floors are refreshed this often; acks=isr deadlines are
 * checked every WAIT_TICK_MS while writes wait. */
#define IDLE_TICK_MS 1000
#define WAIT_TICK_MS 20

static uint64_t now_ms(struct ud_http_repl *p)
{
    return uv_now(p->s->loop);
}

/* --- timer ------------------------------------------------------------------------------------ */

struct refresh {
    struct ud_http_repl *p;
    uint64_t now;
};

/* Observes ns's visible LSN (for lag in ms) and sets its retention floor. */
static void refresh_ns(void *arg, const char *name)
{
    struct refresh *f = arg;
    struct ud_http_repl *p = f->p;
    struct ud_ns *ns;
    if (ud_registry_acquire(p->s->opts.registry, name, &ns) != 0)
        return;
    uint32_t isr, followers;
    ud_replicas_count(p->replicas, name, f->now, &isr, &followers);
    if (followers > 0) {
        uint64_t first, visible;
        ud_ns_stream_range(ns, &first, &visible);
        ud_replicas_observe(p->replicas, name, visible, f->now);
    }
    uint64_t floor = p->o.retain_for_isr ? ud_replicas_retain_floor(p->replicas, name, f->now) : 0;
    if (ud_ns_retain_floor(ns) != floor)
        ud_ns_set_retain_floor(ns, floor);
    ud_registry_release(p->s->opts.registry, ns);
}

static void timer_cb(uv_timer_t *t)
{
    struct ud_http_repl *p = t->data;
    struct refresh f = {p, now_ms(p)};
    ud_replicas_tick(p->replicas, f.now);
    if (ud_registry_list(p->s->opts.registry, refresh_ns, &f, NULL) != 0)
        ud_warn("http", "replicas: out of memory listing the namespaces: their followers' "
                        "positions and retention floors are not refreshed this round");
    ud_http_repl_arm(p);
}

void ud_http_repl_arm(struct ud_http_repl *p)
{
    /* Initialized at the first use, which comes after listen: a server that never listened has
     * no handle of ours to close. */
    if (p->stopping || !p->s->ctx_ready)
        return;
    if (!p->timer_init) {
        uv_timer_init(p->s->loop, &p->timer);
        p->timer.data = p;
        p->timer_init = 1;
    }
    if (uv_is_closing((uv_handle_t *)&p->timer))
        return;
    uint64_t in = ud_replicas_waiting(p->replicas) > 0 ? WAIT_TICK_MS : IDLE_TICK_MS;
    if (uv_is_active((uv_handle_t *)&p->timer) && uv_timer_get_due_in(&p->timer) <= in)
        return;
    uv_timer_start(&p->timer, timer_cb, in, 0);
}

uv_handle_t *ud_http_repl_timer(struct ud_http_server *s)
{
    if (s->repl == NULL || !s->repl->timer_init)
        return NULL;
    return (uv_handle_t *)&s->repl->timer;
}

/* --- acks=isr --------------------------------------------------------------------------------- */

struct deferred {
    struct ud_http_req *r;
    int status;
    char content_type[64];
    size_t len;
    uint64_t lsn;
    uint64_t wait_ms;
    uint8_t body[];
};

static void deferred_cb(void *arg, int status, uint32_t acked, uint32_t needed)
{
    struct deferred *d = arg;
    struct ud_http_req *r = d->r;
    struct ud_http_repl *p = r->server->repl;
    r->acks_isr = 0; /* the reply below is final */
    if (status == 0) {
        p->isr_waits_ok++;
        ud_http_reply(r, d->status, d->content_type, d->body, d->len);
        free(d);
        return;
    }
    struct ud_jbuf j;
    ud_jbuf_init(&j);
    char msg[512];
    if (status == UD_ETIMEDOUT) {
        p->isr_waits_timeout++;
        snprintf(msg, sizeof msg,
                 "acks=isr: %u of the %u required followers applied LSN %llu of namespace %s "
                 "within %llu ms; the write is committed on this node but not confirmed on enough "
                 "followers",
                 acked, needed, (unsigned long long)d->lsn, r->ns_name,
                 (unsigned long long)d->wait_ms);
    } else {
        snprintf(msg, sizeof msg,
                 "acks=isr: %s before %u followers applied LSN %llu; the write is committed on "
                 "this node",
                 p->stopping ? "the server is shutting down" : "the namespace was deleted", needed,
                 (unsigned long long)d->lsn);
    }
    ud_jbuf_lit(&j, "{\"error\":");
    ud_jbuf_str(&j, msg, strlen(msg));
    ud_jbuf_printf(&j, ",\"lsn\":%llu,\"acknowledged\":%u,\"required\":%u}",
                   (unsigned long long)d->lsn, acked, needed);
    ud_http_set_header(r, "retry-after", "1");
    ud_http_reply_json(r, 503, &j);
    free(d);
}

int ud_http_repl_defer_reply(struct ud_http_req *r, int status, const char *content_type,
                             const void *body, size_t len)
{
    struct ud_http_repl *p = r->server->repl;
    if (p == NULL)
        return 0;
    struct deferred *d = malloc(sizeof *d + len);
    if (d == NULL)
        abort();
    d->r = r;
    d->status = status;
    snprintf(d->content_type, sizeof d->content_type, "%s", content_type);
    d->len = len;
    if (len > 0)
        memcpy(d->body, body, len);
    d->lsn = r->wrote_lsn;
    d->wait_ms = p->o.ack_timeout_ms;
    if (p->stopping) {
        /* Nothing will be acknowledged any more: answer now, as a timeout would. */
        r->acks_isr = 0;
        deferred_cb(d, UD_ECLOSED, 0, ud_replicas_options(p->replicas)->min_isr);
        return 1;
    }
    uint64_t now = now_ms(p);
    if (ud_replicas_wait(p->replicas, r->ns_name, d->lsn, now + d->wait_ms, now, deferred_cb, d)) {
        p->isr_waits_ok++;
        free(d);
        return 0;
    }
    ud_http_repl_arm(p);
    return 1;
}

/* --- POST /api/v1/{ns}/wal/ack ---------------------------------------------------------------- */

static void on_wal_ack(struct ud_http_req *r, void *arg)
{
    struct ud_http_repl *p = arg;
    char errmsg[UD_ERRMSG_SIZE];
    size_t blen;
    const uint8_t *body = ud_http_req_body(r, &blen);
    struct ud_http_body b;
    ud_http_body_init(&b);
    struct ud_replica_ack ack = {0};
    int rc = ud_http_parse_wal_ack(&b, body, blen, &ack.id, &ack.applied_lsn, &ack.subtree_min_lsn,
                                   &ack.address, errmsg);
    if (rc != 0) {
        ud_http_body_free(&b);
        ud_http_reply_error(r, 400, "%s", errmsg);
        return;
    }
    uint64_t first, visible;
    ud_ns_stream_range(ud_http_req_ns(r), &first, &visible);
    uint64_t now = now_ms(p);
    rc = ud_replicas_ack(p->replicas, r->ns_name, &ack, visible, now, errmsg);
    ud_http_body_free(&b);
    if (rc != 0) {
        if (rc == UD_ELIMIT)
            ud_http_set_header(r, "retry-after", "1");
        ud_http_reply_error(r, rc == UD_ELIMIT ? 503 : 400, "%s", errmsg);
        return;
    }
    p->acks_total++;
    uint32_t isr, followers;
    ud_replicas_count(p->replicas, r->ns_name, now, &isr, &followers);
    struct ud_jbuf j;
    ud_jbuf_init(&j);
    ud_jbuf_printf(&j, "{\"success\":true,\"lastLsn\":%llu,\"firstLsn\":%llu,\"isr\":%u}",
                   (unsigned long long)visible, (unsigned long long)first, isr);
    ud_http_reply_json(r, 200, &j);
    ud_http_repl_arm(p);
}

/* --- GET /status/replicas --------------------------------------------------------------------- */

struct status_ctx {
    struct ud_http_repl *p;
    struct ud_jbuf *j;
    uint64_t now;
    int first_ns;
    int first_f;
};

static void follower_json(void *arg, const struct ud_replica_status *st)
{
    struct status_ctx *c = arg;
    struct ud_jbuf *j = c->j;
    ud_jbuf_lit(j, c->first_f ? "{\"id\":" : ",{\"id\":");
    c->first_f = 0;
    ud_jbuf_str(j, st->id, strlen(st->id));
    ud_jbuf_lit(j, ",\"address\":");
    ud_jbuf_str(j, st->address, strlen(st->address));
    ud_jbuf_printf(j,
                   ",\"appliedLsn\":%llu,\"lagRecords\":%llu,\"lagMs\":%llu,\"inIsr\":%s,"
                   "\"subtreeMinLsn\":%llu,\"lastAckMsAgo\":%llu}",
                   (unsigned long long)st->applied_lsn, (unsigned long long)st->lag_records,
                   (unsigned long long)st->lag_ms, st->in_isr ? "true" : "false",
                   (unsigned long long)st->subtree_min_lsn,
                   (unsigned long long)st->last_ack_age_ms);
}

static void ns_status(void *arg, const char *name)
{
    struct status_ctx *c = arg;
    struct ud_ns *ns;
    if (ud_registry_acquire(c->p->s->opts.registry, name, &ns) != 0)
        return;
    uint64_t first, visible;
    ud_ns_stream_range(ns, &first, &visible);
    uint64_t floor = ud_ns_retain_floor(ns);
    ud_registry_release(c->p->s->opts.registry, ns);
    ud_replicas_observe(c->p->replicas, name, visible, c->now);
    uint32_t isr, followers;
    ud_replicas_count(c->p->replicas, name, c->now, &isr, &followers);
    struct ud_jbuf *j = c->j;
    ud_jbuf_lit(j, c->first_ns ? "{\"namespace\":" : ",{\"namespace\":");
    c->first_ns = 0;
    ud_jbuf_str(j, name, strlen(name));
    ud_jbuf_printf(j,
                   ",\"lastLsn\":%llu,\"firstLsn\":%llu,\"retainFloorLsn\":%llu,\"isrCount\":%u,"
                   "\"followers\":[",
                   (unsigned long long)visible, (unsigned long long)first,
                   (unsigned long long)floor, isr);
    c->first_f = 1;
    ud_replicas_list(c->p->replicas, name, c->now, follower_json, c);
    ud_jbuf_lit(j, "]}");
}

static void on_status_replicas(struct ud_http_req *r, void *arg)
{
    struct ud_http_repl *p = arg;
    const struct ud_replicas_options *o = ud_replicas_options(p->replicas);
    struct ud_jbuf j;
    ud_jbuf_init(&j);
    ud_jbuf_printf(&j,
                   "{\"minIsr\":%u,\"isrMaxLagMs\":%llu,\"isrMaxLagRecords\":%llu,"
                   "\"followerTimeoutMs\":%llu,\"ackTimeoutMs\":%llu,\"namespaces\":[",
                   o->min_isr, (unsigned long long)o->isr_max_lag_ms,
                   (unsigned long long)o->isr_max_lag_records,
                   (unsigned long long)o->follower_timeout_ms,
                   (unsigned long long)p->o.ack_timeout_ms);
    struct status_ctx c = {p, &j, now_ms(p), 1, 1};
    if (ud_registry_list(p->s->opts.registry, ns_status, &c, NULL) != 0) {
        ud_jbuf_free(&j);
        ud_http_reply_error(r, 500, "out of memory listing the namespaces");
        return;
    }
    ud_jbuf_lit(&j, "]}");
    ud_http_reply_json(r, 200, &j);
}

/* --- metrics, stop, free ---------------------------------------------------------------------- */

void ud_http_repl_metrics(struct ud_http_server *s, struct ud_jbuf *j)
{
    struct ud_http_repl *p = s->repl;
    if (p == NULL)
        return;
    ud_jbuf_printf(
        j,
        "# HELP unison_replication_followers Followers that acknowledged within the follower "
        "timeout (all namespaces).\n# TYPE unison_replication_followers gauge\n"
        "unison_replication_followers %zu\n"
        "# HELP unison_replication_acks_total Follower acknowledgements received.\n"
        "# TYPE unison_replication_acks_total counter\nunison_replication_acks_total %llu\n"
        "# HELP unison_replication_isr_waits_total Writes with acks=isr, by outcome.\n"
        "# TYPE unison_replication_isr_waits_total counter\n"
        "unison_replication_isr_waits_total{result=\"ok\"} %llu\n"
        "unison_replication_isr_waits_total{result=\"timeout\"} %llu\n"
        "# HELP unison_stream_subscribers WAL stream responses open.\n"
        "# TYPE unison_stream_subscribers gauge\nunison_stream_subscribers %zu\n"
        "# HELP unison_streams_total WAL stream responses started.\n"
        "# TYPE unison_streams_total counter\nunison_streams_total %llu\n"
        "# HELP unison_stream_bytes_total Bytes of stream frames sent (headers and bodies).\n"
        "# TYPE unison_stream_bytes_total counter\nunison_stream_bytes_total %llu\n"
        "# HELP unison_stream_frames_total Stream frames sent, by type.\n"
        "# TYPE unison_stream_frames_total counter\n"
        "unison_stream_frames_total{type=\"records\"} %llu\n"
        "unison_stream_frames_total{type=\"heartbeat\"} %llu\n"
        "# HELP unison_snapshots_total Snapshot downloads started.\n"
        "# TYPE unison_snapshots_total counter\nunison_snapshots_total %llu\n"
        "# HELP unison_snapshot_bytes_total Snapshot bytes sent.\n"
        "# TYPE unison_snapshot_bytes_total counter\nunison_snapshot_bytes_total %llu\n",
        ud_replicas_followers(p->replicas), (unsigned long long)p->acks_total,
        (unsigned long long)p->isr_waits_ok, (unsigned long long)p->isr_waits_timeout,
        p->subscribers, (unsigned long long)p->streams_total, (unsigned long long)p->stream_bytes,
        (unsigned long long)p->stream_record_frames, (unsigned long long)p->stream_heartbeats,
        (unsigned long long)p->snapshots_total, (unsigned long long)p->snapshot_bytes);
}

void ud_http_repl_stop(struct ud_http_server *s)
{
    struct ud_http_repl *p = s->repl;
    if (p == NULL || p->stopping)
        return;
    p->stopping = 1;
    if (p->timer_init)
        uv_timer_stop(&p->timer);
    ud_http_wal_streams_end(p, NULL, 1);
    ud_http_snapshots_cut(p, NULL);
    /* Every acks=isr wait is answered now (503): nothing will be acknowledged any more. */
    struct ud_replicas *old = p->replicas;
    struct ud_replicas_options o = *ud_replicas_options(old);
    if (ud_replicas_new(&o, &p->replicas) != 0)
        abort();
    ud_replicas_free(old);
}

void ud_http_repl_close_ns(struct ud_http_server *s, const char *ns)
{
    struct ud_http_repl *p = s->repl;
    if (p == NULL)
        return;
    ud_http_wal_streams_end(p, ns, 0);
    ud_http_snapshots_cut(p, ns);
    ud_replicas_forget_ns(p->replicas, ns);
}

struct subtree_min {
    uint64_t min;
};

static void subtree_min_cb(void *arg, const struct ud_replica_status *st)
{
    struct subtree_min *m = arg;
    uint64_t v = st->subtree_min_lsn < st->applied_lsn ? st->subtree_min_lsn : st->applied_lsn;
    if (v < m->min)
        m->min = v;
}

uint64_t ud_http_subtree_min_lsn(struct ud_http_server *s, const char *ns, uint64_t own)
{
    struct subtree_min m = {own};
    if (s == NULL || s->repl == NULL)
        return own;
    ud_replicas_list(s->repl->replicas, ns, now_ms(s->repl), subtree_min_cb, &m);
    return m.min;
}

void ud_http_repl_free(struct ud_http_server *s)
{
    struct ud_http_repl *p = s->repl;
    if (p == NULL)
        return;
    ud_replicas_free(p->replicas);
    free(p);
    s->repl = NULL;
}

/* --- registration ----------------------------------------------------------------------------- */

void ud_http_set_incarnation(struct ud_http_req *r)
{
    struct ud_ns *ns = ud_http_req_ns(r);
    if (ns != NULL)
        ud_http_set_incarnation_value(r, ud_ns_incarnation(ns));
}

/* 0 too: a follower tells "created before incarnations" (an earlier namespace than any stamped
 * copy) from a server of an earlier version, which sends no header (relayer/incarnation.h). */
void ud_http_set_incarnation_value(struct ud_http_req *r, uint64_t inc)
{
    char v[24];
    snprintf(v, sizeof v, "%llu", (unsigned long long)inc);
    ud_http_set_header(r, "x-unison-ns-incarnation", v);
}

int ud_http_register_replication(struct ud_http_server *s, const struct ud_http_repl_options *o)
{
    if (s->repl != NULL)
        return UD_EINVAL;
    struct ud_http_repl *p = calloc(1, sizeof *p);
    if (p == NULL)
        return UD_ENOMEM;
    p->s = s;
    p->o = *o;
    if (p->o.ack_timeout_ms == 0)
        p->o.ack_timeout_ms = 5000;
    if (p->o.stream_batch_bytes == 0)
        p->o.stream_batch_bytes = UD_REPL_DEFAULT_BATCH;
    if (p->o.heartbeat_ms == 0)
        p->o.heartbeat_ms = UD_REPL_DEFAULT_HEARTBEAT;
    struct ud_replicas_options ro = {
        .min_isr = o->min_isr,
        .isr_max_lag_ms = o->isr_max_lag_ms,
        .isr_max_lag_records = o->isr_max_lag_records,
        .follower_timeout_ms = o->follower_timeout_ms,
    };
    if (ud_replicas_new(&ro, &p->replicas) != 0) {
        free(p);
        return UD_ENOMEM;
    }
    const unsigned ns = UD_HTTP_ROUTE_NS;
    const struct ud_http_route routes[] = {
        {"wal_stream", UD_HTTP_GET, "/api/v1/{ns}/wal/stream", ns | UD_HTTP_ROUTE_NO_HEAD,
         ud_http_on_wal_stream, p},
        {"snapshot", UD_HTTP_GET, "/api/v1/{ns}/snapshot", ns | UD_HTTP_ROUTE_NO_HEAD,
         ud_http_on_snapshot, p},
        {"wal_ack", UD_HTTP_POST, "/api/v1/{ns}/wal/ack", ns, on_wal_ack, p},
        {"status_replicas", UD_HTTP_GET, "/status/replicas", 0, on_status_replicas, p},
    };
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        int rc = ud_http_server_add_route(s, &routes[i]);
        if (rc != 0) {
            ud_replicas_free(p->replicas);
            free(p);
            return rc;
        }
    }
    s->repl = p;
    return 0;
}
