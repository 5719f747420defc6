/*
 * Cluster status and administration over HTTP (docs/http-api.md "Cluster"): GET /status/node,
 * GET /status/cluster, membership changes and leadership transfer, and the internal endpoint
 * that takes records forwarded by a follower's submit seam.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/err.h"
#include "core/http_client.h"
#include "core/log.h"
#include "proto/command.h"
#include "proto/record_list.h"
#include "raft/node.h"
#include "writer/cluster.h"
#include "writer/http_digest.h"
#include "writer/http_write.h"
#include "writer/writer.h"

#define LOG "cluster"

#define STATUS_FETCH_MS 1000
#define STATUS_BODY_MAX (256u << 10)

/* --- /status/node ---------------------------------------------------------------------------- */

struct ns_json {
    struct ud_writer *w;
    struct ud_jbuf *j;
    int n;
};

static void ns_lsn(void *arg, const char *name)
{
    struct ns_json *nj = arg;
    struct ud_ns *ns;
    if (ud_registry_acquire(nj->w->registry, name, &ns) != 0)
        return;
    struct ud_ns_stats st;
    ud_ns_stats(ns, &st);
    ud_registry_release(nj->w->registry, ns);
    ud_jbuf_lit(nj->j, nj->n++ ? "," : "");
    ud_jbuf_str(nj->j, name, strlen(name));
    ud_jbuf_lit(nj->j, ":");
    ud_jbuf_u64(nj->j, st.last_lsn);
}

/* The members of this node's own status, without the braces (spliced into /status/cluster).
 * Returns 0, or UD_ENOMEM when the namespaces could not be listed (j is then incomplete). */
static int node_members_json(struct ud_writer *w, struct ud_jbuf *j)
{
    uint64_t leader = 0;
    const char *addr = NULL;
    if (w->raft != NULL)
        ud_raft_node_leader(w->raft, &leader, &addr);
    const char *catching_up = ud_writer_catching_up(w);
    ud_jbuf_printf(j,
                   "\"state\":\"%s\",\"leaderId\":%llu,\"lastIndex\":%llu,\"appliedIndex\":%llu,"
                   "\"firstIndex\":%llu,\"snapshotIndex\":%llu",
                   catching_up != NULL ? "catching-up"
                   : w->raft != NULL   ? ud_raft_node_state_name(w->raft)
                                       : "unavailable",
                   (unsigned long long)leader,
                   (unsigned long long)(w->raft ? ud_raft_node_last_index(w->raft) : 0),
                   (unsigned long long)(w->raft ? ud_raft_node_applied_index(w->raft) : 0),
                   (unsigned long long)(w->raft ? ud_raft_node_first_index(w->raft) : 0),
                   (unsigned long long)(w->raft ? ud_raft_node_snapshot_index(w->raft) : 0));
    if (catching_up != NULL) {
        ud_jbuf_lit(j, ",\"catchingUp\":");
        ud_jbuf_str(j, catching_up, strlen(catching_up));
    }
    /* Who this node's data belongs to: a leader adding it compares them with its own
     * (writer/cluster_candidate.c). */
    ud_jbuf_lit(j, ",\"clusterId\":");
    ud_jbuf_str(j, w->config->cluster_id, strlen(w->config->cluster_id));
    ud_jbuf_lit(j, ",\"configuration\":[");
    struct ud_raft_member m[UD_CLUSTER_MAX_MEMBERS];
    unsigned n = w->raft != NULL ? ud_raft_node_members(w->raft, m, UD_CLUSTER_MAX_MEMBERS) : 0;
    for (unsigned i = 0; i < n && i < UD_CLUSTER_MAX_MEMBERS; i++) {
        ud_jbuf_printf(j, "%s{\"id\":%llu,\"raftAddress\":", i ? "," : "",
                       (unsigned long long)m[i].id);
        ud_jbuf_str(j, m[i].address, strlen(m[i].address));
        ud_jbuf_printf(j, ",\"role\":\"%s\"}", ud_raft_role_name(m[i].role));
    }
    ud_jbuf_lit(j, "]");
    ud_jbuf_lit(j, ",\"namespaces\":{");
    struct ns_json nj = {w, j, 0};
    if (ud_registry_list(w->registry, ns_lsn, &nj, NULL) != 0)
        return UD_ENOMEM;
    ud_jbuf_lit(j, "}");
    return 0;
}

static void on_status_node(struct ud_http_req *r, void *arg)
{
    struct ud_writer *w = arg;
    struct ud_jbuf j;
    ud_jbuf_init(&j);
    ud_jbuf_printf(&j, "{\"id\":%llu,", (unsigned long long)w->config->node_id);
    if (node_members_json(w, &j) != 0) {
        ud_jbuf_free(&j);
        ud_http_reply_error(r, 500, "out of memory listing the namespaces");
        return;
    }
    ud_jbuf_lit(&j, "}");
    ud_http_reply_json(r, 200, &j);
}

/* --- /status/cluster: every member's /status/node, fetched in parallel ----------------------- */

struct member_fetch {
    struct cluster_status *cs;
    struct ud_raft_member m;
    char http[160];
    char resp[128];
    int done;
    int reachable;
    char *body; /* the member's /status/node members (braces stripped), malloc'd */
    char error[UD_ERRMSG_SIZE];
};

struct cluster_status {
    struct ud_writer *w;
    struct ud_http_req *r;
    unsigned n, pending;
    struct member_fetch f[UD_CLUSTER_MAX_MEMBERS];
};

static void status_reply(struct cluster_status *cs)
{
    struct ud_writer *w = cs->w;
    uint64_t leader = 0;
    const char *addr = NULL;
    if (w->raft != NULL)
        ud_raft_node_leader(w->raft, &leader, &addr);
    struct ud_jbuf j;
    ud_jbuf_init(&j);
    ud_jbuf_lit(&j, "{\"clusterId\":");
    ud_jbuf_str(&j, w->config->cluster_id, strlen(w->config->cluster_id));
    ud_jbuf_printf(&j, ",\"nodeId\":%llu,\"leaderId\":%llu,\"members\":[",
                   (unsigned long long)w->config->node_id, (unsigned long long)leader);
    for (unsigned i = 0; i < cs->n; i++) {
        struct member_fetch *f = &cs->f[i];
        ud_jbuf_printf(&j, "%s{\"id\":%llu,\"raftAddress\":", i ? "," : "",
                       (unsigned long long)f->m.id);
        ud_jbuf_str(&j, f->m.address, strlen(f->m.address));
        ud_jbuf_lit(&j, ",\"httpAddress\":");
        ud_jbuf_str(&j, f->http, strlen(f->http));
        ud_jbuf_lit(&j, ",\"respAddress\":");
        ud_jbuf_str(&j, f->resp, strlen(f->resp));
        ud_jbuf_printf(&j, ",\"role\":\"%s\",\"isLeader\":%s,\"reachable\":%s",
                       ud_raft_role_name(f->m.role), f->m.id == leader ? "true" : "false",
                       f->reachable ? "true" : "false");
        if (f->reachable && f->body != NULL) {
            ud_jbuf_lit(&j, ",");
            ud_jbuf_raw(&j, f->body, strlen(f->body));
        } else {
            ud_jbuf_lit(&j, ",\"error\":");
            ud_jbuf_str(&j, f->error, strlen(f->error));
        }
        ud_jbuf_lit(&j, "}");
        free(f->body);
    }
    ud_jbuf_lit(&j, "]}");
    ud_http_reply_json(cs->r, 200, &j);
    free(cs);
}

static void member_done(void *arg, const struct ud_http_result *res)
{
    struct member_fetch *f = arg;
    struct cluster_status *cs = f->cs;
    f->done = 1;
    if (res->rc == 0 && res->status == 200 && res->body_len >= 2 && res->body[0] == '{') {
        /* {"id":N,<members>}\n: keep <members> */
        const char *b = (const char *)res->body;
        size_t len = res->body_len;
        while (len > 0 && (b[len - 1] == '\n' || b[len - 1] == '}'))
            len--;
        const char *comma = memchr(b, ',', len);
        if (comma != NULL) {
            size_t n = len - (size_t)(comma + 1 - b);
            /* the namespaces object lost its closing brace with the outer one */
            f->body = malloc(n + 2);
            if (f->body == NULL)
                abort();
            memcpy(f->body, comma + 1, n);
            f->body[n] = '}';
            f->body[n + 1] = '\0';
            f->reachable = 1;
        }
    } else {
        snprintf(f->error, sizeof f->error, "%s",
                 res->rc != 0 ? res->errmsg : "unexpected answer to /status/node");
    }
    if (--cs->pending == 0)
        status_reply(cs);
}

static void on_status_cluster(struct ud_http_req *r, void *arg)
{
    struct ud_writer *w = arg;
    if (w->raft == NULL) {
        const char *catching_up = ud_writer_catching_up(w);
        if (catching_up != NULL)
            ud_http_reply_error(r, 503, "raft is not running on this node: %s", catching_up);
        else
            ud_http_reply_error(r, 503, "raft is not running");
        return;
    }
    struct cluster_status *cs = calloc(1, sizeof *cs);
    if (cs == NULL)
        abort();
    cs->w = w;
    cs->r = r;
    struct ud_raft_member m[UD_CLUSTER_MAX_MEMBERS];
    unsigned n = ud_raft_node_members(w->raft, m, UD_CLUSTER_MAX_MEMBERS);
    cs->n = n < UD_CLUSTER_MAX_MEMBERS ? n : UD_CLUSTER_MAX_MEMBERS;
    cs->pending = 1; /* held until every fetch started */
    for (unsigned i = 0; i < cs->n; i++) {
        struct member_fetch *f = &cs->f[i];
        f->cs = cs;
        f->m = m[i];
        ud_cluster_member_addresses(w, m[i].id, f->http, sizeof f->http, f->resp, sizeof f->resp);
        if (m[i].id == w->config->node_id) {
            struct ud_jbuf j;
            ud_jbuf_init(&j);
            int rc = node_members_json(w, &j);
            f->body = rc == 0 && j.err == 0 ? strndup(j.p, j.len) : NULL;
            ud_jbuf_free(&j);
            f->reachable = f->body != NULL;
            if (rc != 0)
                snprintf(f->error, sizeof f->error, "out of memory listing the namespaces");
            continue;
        }
        if (f->http[0] == '\0') {
            snprintf(f->error, sizeof f->error, "no HTTP address known for this member");
            continue;
        }
        char errmsg[UD_ERRMSG_SIZE];
        cs->pending++;
        if (ud_cluster_fetch_node_status(w, f->http, STATUS_FETCH_MS, STATUS_BODY_MAX, member_done,
                                         f, errmsg) != 0) {
            cs->pending--;
            snprintf(f->error, sizeof f->error, "%s", errmsg);
        }
    }
    if (--cs->pending == 0)
        status_reply(cs);
}

/* --- membership and leadership ---------------------------------------------------------------- */

/* A string member of a small JSON object without escapes: 1 found, 0 absent, -1 malformed. */
static int json_str(const uint8_t *body, size_t len, const char *name, char *out, size_t size)
{
    char pat[64];
    int pl = snprintf(pat, sizeof pat, "\"%s\"", name);
    for (size_t i = 0; i + (size_t)pl <= len; i++) {
        if (memcmp(body + i, pat, (size_t)pl) != 0)
            continue;
        size_t k = i + (size_t)pl;
        while (k < len && (body[k] == ' ' || body[k] == ':'))
            k++;
        if (k >= len || body[k] != '"')
            return -1;
        size_t o = 0;
        for (k++; k < len && body[k] != '"'; k++) {
            if (body[k] == '\\' || o + 1 >= size)
                return -1;
            out[o++] = (char)body[k];
        }
        out[o] = '\0';
        return k < len ? 1 : -1;
    }
    return 0;
}

enum admin_step {
    STEP_CHECK,  /* a writer not yet a voter or standby: may it join? */
    STEP_MEMBER, /* the directory learns its addresses */
    STEP_ADD,
    STEP_ASSIGN,
    STEP_DONE,
};

struct admin_op {
    struct ud_writer *w;
    struct ud_http_req *r;
    enum admin_step step;
    enum admin_step after_check; /* where STEP_CHECK goes on */
    uint64_t id;
    char raft[128];
    char http[160];
    char resp[128];
    enum ud_raft_role role;
    const char *what;
};

/* A membership or leadership operation answering request r; freed when it answers. */
static struct admin_op *admin_op_new(struct ud_writer *w, struct ud_http_req *r, uint64_t id,
                                     const char *what)
{
    struct admin_op *a = calloc(1, sizeof *a);
    if (a == NULL)
        abort(); /* network glue: out of memory is fatal, as in h2o */
    a->w = w;
    a->r = r;
    a->id = id;
    a->what = what;
    return a;
}

static void admin_fail(struct admin_op *a, int status, const char *errmsg)
{
    ud_http_reply_code(a->r, status == UD_EBUSY ? UD_ECONFLICT : status, errmsg);
    free(a);
}

static void add_next(struct admin_op *a);

static void add_step_done(void *arg, int status, const char *errmsg)
{
    struct admin_op *a = arg;
    if (status != 0) {
        char msg[UD_ERRMSG_SIZE * 2];
        if (a->step == STEP_ASSIGN && status == UD_ETIMEDOUT)
            snprintf(msg, sizeof msg,
                     "add writer %llu: it could not be reached at %s to catch up (%s); it stays "
                     "in the configuration as a spare: start it with [raft] join = true and "
                     "repeat the request, or remove it",
                     (unsigned long long)a->id, a->raft, errmsg);
        else
            snprintf(msg, sizeof msg, "add writer %llu: %s", (unsigned long long)a->id, errmsg);
        admin_fail(a, status, msg);
        return;
    }
    a->step++;
    add_next(a);
}

static void check_done(void *arg, int status, const char *why)
{
    struct admin_op *a = arg;
    if (status != 0) {
        char msg[UD_ERRMSG_SIZE * 2];
        snprintf(msg, sizeof msg, "add writer %llu: %s", (unsigned long long)a->id, why);
        admin_fail(a, status, msg);
        return;
    }
    a->step = a->after_check;
    add_next(a);
}

static void add_next_deferred(void *arg)
{
    add_next(arg);
}

/* Inside raft's apply callback: the next step (raft_add) waits for the loop. */
static void member_applied(void *arg, int status, const struct ud_fsm_result *res,
                           const char *errmsg)
{
    struct admin_op *a = arg;
    (void)res;
    if (status != 0) {
        add_step_done(a, status, errmsg);
        return;
    }
    a->step++;
    ud_cluster_defer(a->w, add_next_deferred, a);
}

static void add_next(struct admin_op *a)
{
    struct ud_writer *w = a->w;
    char errmsg[UD_ERRMSG_SIZE] = "";
    int rc = 0;
    if (w->raft == NULL || w->stopping) {
        admin_fail(a, UD_ECLOSED, "the writer is shutting down");
        return;
    }
    switch (a->step) {
    case STEP_CHECK: {
        char http[160], resp[8];
        snprintf(http, sizeof http, "%s", a->http);
        if (http[0] == '\0')
            ud_cluster_member_addresses(w, a->id, http, sizeof http, resp, sizeof resp);
        if (http[0] == '\0') { /* nowhere to ask: added unchecked, as before it starts */
            a->step = a->after_check;
            add_next(a);
            return;
        }
        ud_cluster_check_candidate(w, a->id, http, check_done, a);
        return;
    }
    case STEP_MEMBER: {
        if (a->http[0] == '\0' && a->resp[0] == '\0') {
            a->step++;
            add_next(a);
            return;
        }
        size_t size = ud_command_member_size(a->http, a->resp), len;
        uint8_t *buf = ud_raft_buf_alloc(size);
        if (buf == NULL)
            abort();
        rc = ud_command_encode_member(a->id, a->http, a->resp, buf, size, &len);
        if (rc == 0)
            rc = ud_raft_node_propose(w->raft, buf, len, member_applied, a, errmsg);
        if (rc != 0)
            ud_raft_buf_free(buf);
        break;
    }
    case STEP_ADD: {
        /* A member already (a spare changing role, its addresses just recorded): no add. */
        struct ud_raft_member m;
        if (ud_cluster_member_of(w, a->id, &m) == 1) {
            a->step++;
            add_next(a);
            return;
        }
        rc = ud_raft_node_add(w->raft, a->id, a->raft, add_step_done, a, errmsg);
        break;
    }
    case STEP_ASSIGN:
        if (a->role == UD_RAFT_SPARE) {
            a->step++;
            add_next(a);
            return;
        }
        rc = ud_raft_node_assign(w->raft, a->id, a->role, add_step_done, a, errmsg);
        break;
    case STEP_DONE: {
        ud_info(LOG, "writer %llu at %s added as a %s", (unsigned long long)a->id, a->raft,
                ud_raft_role_name(a->role));
        struct ud_jbuf j;
        ud_jbuf_init(&j);
        ud_jbuf_printf(&j, "{\"success\":true,\"id\":%llu,\"role\":\"%s\"}",
                       (unsigned long long)a->id, ud_raft_role_name(a->role));
        ud_http_reply_json(a->r, 200, &j);
        free(a);
        return;
    }
    }
    if (rc != 0) {
        char msg[UD_ERRMSG_SIZE * 2];
        snprintf(msg, sizeof msg, "add writer %llu: %s", (unsigned long long)a->id, errmsg);
        admin_fail(a, rc, msg);
    }
}

static void on_member_add(struct ud_http_req *r, void *arg)
{
    struct ud_writer *w = arg;
    size_t len;
    const uint8_t *body = ud_http_req_body(r, &len);
    struct admin_op *a = admin_op_new(w, r, 0, NULL);
    char role[16] = "voter";
    if (body == NULL || !ud_cluster_json_u64(body, len, "id", &a->id) || a->id == 0 ||
        json_str(body, len, "raftAddress", a->raft, sizeof a->raft) != 1 ||
        json_str(body, len, "httpAddress", a->http, sizeof a->http) < 0 ||
        json_str(body, len, "respAddress", a->resp, sizeof a->resp) < 0 ||
        json_str(body, len, "role", role, sizeof role) < 0) {
        free(a);
        ud_http_reply_error(r, 400,
                            "expected {\"id\": N (>= 1), \"raftAddress\": \"ip:port\", "
                            "\"httpAddress\": \"http://host:port\", \"respAddress\": "
                            "\"host:port\", \"role\": \"voter|standby|spare\"} (httpAddress, "
                            "respAddress and role optional)");
        return;
    }
    /* raft's transport dials IPv4 addresses only: a name or an IPv6 address would be taken
     * into the configuration and never reached. */
    char host[64], why[UD_ERRMSG_SIZE] = "";
    int port = 0;
    int bad = ud_conf_split_address(a->raft, host, sizeof host, &port, why) != 0;
    if (!bad && strchr(host, ':') != NULL)
        bad = snprintf(why, sizeof why, "raft takes IPv4 addresses only") > 0;
    if (!bad && port == 0)
        bad = snprintf(why, sizeof why, "port 0 cannot be dialed") > 0;
    if (bad) {
        ud_http_reply_error(r, 400, "raftAddress \"%s\": %s", a->raft, why);
        free(a);
        return;
    }
    if (a->http[0] != '\0' && strncmp(a->http, "http://", 7) != 0 &&
        strncmp(a->http, "https://", 8) != 0) {
        char url[sizeof a->http];
        snprintf(url, sizeof url, "http://%.150s", a->http);
        snprintf(a->http, sizeof a->http, "%s", url);
    }
    if (strcmp(role, "voter") == 0)
        a->role = UD_RAFT_VOTER;
    else if (strcmp(role, "standby") == 0)
        a->role = UD_RAFT_STANDBY;
    else if (strcmp(role, "spare") == 0)
        a->role = UD_RAFT_SPARE;
    else {
        free(a);
        ud_http_reply_error(r, 400, "role must be voter, standby or spare, not %s", role);
        return;
    }
    /* An id already in the configuration only changes role (a retried add finishes). */
    struct ud_raft_member m[UD_CLUSTER_MAX_MEMBERS];
    unsigned n = w->raft != NULL ? ud_raft_node_members(w->raft, m, UD_CLUSTER_MAX_MEMBERS) : 0;
    a->step = STEP_MEMBER;
    enum ud_raft_role was = UD_RAFT_SPARE; /* absent counts as a spare: it holds nothing yet */
    for (unsigned i = 0; i < n && i < UD_CLUSTER_MAX_MEMBERS; i++) {
        char msg[UD_ERRMSG_SIZE];
        if (m[i].id != a->id && strcmp(m[i].address, a->raft) == 0) {
            snprintf(msg, sizeof msg, "raft address %s is writer %llu's, not writer %llu's",
                     a->raft, (unsigned long long)m[i].id, (unsigned long long)a->id);
            admin_fail(a, UD_ECONFLICT, msg);
            return;
        }
        if (m[i].id != a->id)
            continue;
        if (strcmp(m[i].address, a->raft) != 0) {
            snprintf(msg, sizeof msg, "writer %llu is already a member at %s, not %s",
                     (unsigned long long)a->id, m[i].address, a->raft);
            admin_fail(a, UD_ECONFLICT, msg);
            return;
        }
        /* raft 0.15 takes a leader's demotion and does nothing with it (it stays voter and
         * leader): refused, rather than answered 200 for a change that did not happen. */
        uint64_t leader = 0;
        const char *leader_addr = NULL;
        ud_raft_node_leader(w->raft, &leader, &leader_addr);
        if (a->id == leader && a->role != UD_RAFT_VOTER) {
            snprintf(msg, sizeof msg,
                     "writer %llu leads: transfer leadership first (POST "
                     "/admin/cluster/transfer), then change its role on the new leader",
                     (unsigned long long)a->id);
            admin_fail(a, UD_ECONFLICT, msg);
            return;
        }
        was = m[i].role;
        a->step = m[i].role == a->role ? STEP_DONE : STEP_ASSIGN;
    }
    if (a->step == STEP_ASSIGN || a->step == STEP_DONE) {
        /* The directory still learns new addresses. */
        enum admin_step next = a->step;
        a->step = STEP_MEMBER;
        if (a->http[0] == '\0' && a->resp[0] == '\0')
            a->step = next;
    }
    /* A writer about to receive the log (new, or a spare becoming voter or standby) is asked
     * first whether it may join (writer/cluster_candidate.c). */
    if (was == UD_RAFT_SPARE && a->step != STEP_DONE) {
        a->after_check = a->step;
        a->step = STEP_CHECK;
    }
    add_next(a);
}

static void remove_done(void *arg, int status, const char *errmsg)
{
    struct admin_op *a = arg;
    if (status != 0) {
        char msg[UD_ERRMSG_SIZE * 2];
        snprintf(msg, sizeof msg, "%s writer %llu: %s", a->what, (unsigned long long)a->id, errmsg);
        admin_fail(a, status, msg);
        return;
    }
    struct ud_jbuf j;
    ud_jbuf_init(&j);
    uint64_t leader = 0;
    const char *addr = NULL;
    if (a->w->raft != NULL)
        ud_raft_node_leader(a->w->raft, &leader, &addr);
    /* A transfer without an id went to the voter raft picked: the new leader. */
    ud_jbuf_printf(&j, "{\"success\":true,\"id\":%llu,\"leaderId\":%llu}",
                   (unsigned long long)(a->id != 0 ? a->id : leader), (unsigned long long)leader);
    ud_info(LOG, "%s writer %llu: done", a->what, (unsigned long long)a->id);
    ud_http_reply_json(a->r, 200, &j);
    free(a);
}

static void on_member_remove(struct ud_http_req *r, void *arg)
{
    struct ud_writer *w = arg;
    const char *raw;
    size_t len;
    char idbuf[24];
    uint64_t id = 0;
    if (ud_http_req_param(r, "id", &raw, &len) && len > 0 && len < sizeof idbuf &&
        strspn(raw, "0123456789") >= len) {
        memcpy(idbuf, raw, len);
        idbuf[len] = '\0';
        id = strtoull(idbuf, NULL, 10);
    }
    if (id == 0) {
        ud_http_reply_error(r, 400, "the writer id in the path must be a number from 1");
        return;
    }
    struct ud_raft_member m;
    if (w->raft != NULL && ud_cluster_member_of(w, id, &m) != 1) {
        ud_http_reply_error(r, 404, "remove writer %llu: it is not a member of the cluster",
                            (unsigned long long)id);
        return;
    }
    struct admin_op *a = admin_op_new(w, r, id, "remove");
    char errmsg[UD_ERRMSG_SIZE];
    int rc = w->raft != NULL ? ud_raft_node_remove(w->raft, id, remove_done, a, errmsg)
                             : ud_errf(errmsg, UD_ECLOSED, "raft is not running");
    if (rc != 0) {
        char msg[UD_ERRMSG_SIZE * 2];
        snprintf(msg, sizeof msg, "remove writer %llu: %s", (unsigned long long)id, errmsg);
        admin_fail(a, rc == UD_EINVAL ? UD_ENOTFOUND : rc, msg);
    }
}

static void on_transfer(struct ud_http_req *r, void *arg)
{
    struct ud_writer *w = arg;
    size_t len;
    const uint8_t *body = ud_http_req_body(r, &len);
    uint64_t id = 0;
    if (body != NULL && len > 0 && !ud_cluster_json_u64(body, len, "id", &id)) {
        ud_http_reply_error(r, 400, "expected {\"id\": N} (or no body: raft picks a voter)");
        return;
    }
    /* raft 0.15 answers all three "server ID is not valid". */
    struct ud_raft_member m;
    uint64_t leader = 0;
    const char *leader_addr = NULL;
    if (w->raft != NULL)
        ud_raft_node_leader(w->raft, &leader, &leader_addr);
    if (id != 0 && w->raft != NULL && ud_cluster_member_of(w, id, &m) != 1) {
        ud_http_reply_error(r, 404,
                            "transfer leadership to writer %llu: it is not a member of "
                            "the cluster",
                            (unsigned long long)id);
        return;
    }
    if (id != 0 && w->raft != NULL && m.role != UD_RAFT_VOTER) {
        ud_http_reply_error(r, 400,
                            "transfer leadership to writer %llu: it is a %s; only a voter can "
                            "lead",
                            (unsigned long long)id, ud_raft_role_name(m.role));
        return;
    }
    if (id != 0 && id == leader) {
        ud_http_reply_error(r, 400, "transfer leadership to writer %llu: it leads already",
                            (unsigned long long)id);
        return;
    }
    struct admin_op *a = admin_op_new(w, r, id, "transfer leadership to");
    char errmsg[UD_ERRMSG_SIZE];
    int rc = w->raft != NULL ? ud_raft_node_transfer(w->raft, id, remove_done, a, errmsg)
                             : ud_errf(errmsg, UD_ECLOSED, "raft is not running");
    if (rc != 0) {
        char msg[UD_ERRMSG_SIZE * 2];
        snprintf(msg, sizeof msg, "transfer leadership to writer %llu: %s", (unsigned long long)id,
                 errmsg);
        admin_fail(a, rc, msg);
    }
}

/* --- POST /internal/v1/{ns}/records: a follower's submit seam, forwarded ---------------------- */

struct records_call {
    struct ud_http_req *r;
};

static void records_done(void *arg, int status, const char *errmsg, const uint64_t *lsns, size_t n)
{
    struct records_call *c = arg;
    if (status != 0) {
        char code[16];
        snprintf(code, sizeof code, "%d", status);
        ud_http_set_header(c->r, UD_CLUSTER_CODE, code);
        ud_writer_http_reply_submit_error(c->r, status, errmsg);
    } else {
        struct ud_jbuf j;
        ud_jbuf_init(&j);
        ud_jbuf_lit(&j, "{\"success\":true,\"lsn\":");
        ud_jbuf_u64(&j, n > 0 ? lsns[0] : 0);
        ud_jbuf_printf(&j, ",\"count\":%zu}", n);
        ud_http_reply_json(c->r, 200, &j);
    }
    free(c);
}

static void on_internal_records(struct ud_http_req *r, void *arg)
{
    struct ud_writer *w = arg;
    /* A digest header that does not read is refused: taking it for "none" would let the
     * records through without the check a reused key gets. */
    uint8_t digest[UD_COMMAND_DIGEST_SIZE];
    char why[160];
    int dg = ud_http_forwarded_digest(r, digest, why, sizeof why);
    if (dg < 0) {
        ud_http_reply_error(r, 400, "%s", why);
        return;
    }
    size_t len = 0, n = 0, bad_i, bad_off;
    const uint8_t *body = ud_http_req_body(r, &len);
    uint8_t *recs[UD_SUBMIT_MAX_RECORDS];
    size_t lens[UD_SUBMIT_MAX_RECORDS];
    if (body == NULL)
        len = 0;
    if (ud_record_list_unpack(body, len, recs, lens, UD_SUBMIT_MAX_RECORDS, &n, &bad_i, &bad_off) !=
        0) {
        ud_http_reply_error(r, 400, "records body: record %zu at byte %zu is malformed", bad_i,
                            bad_off);
        return;
    }
    size_t kl = 0;
    const char *key = ud_http_req_header(r, "idempotency-key", &kl);
    struct records_call *c = malloc(sizeof *c);
    if (c == NULL)
        abort();
    c->r = r;
    int has_digest = key != NULL && dg > 0;
    ud_submit_keyed(w, ud_http_req_ns_name(r), (const uint8_t *)key, key != NULL ? kl : 0,
                    has_digest ? digest : NULL, recs, lens, n, records_done, c);
}

/* GET /internal/v1/barrier?consistency=linearizable: reached after the raft barrier (the
 * linearizable read path of writer/cluster.c), it answers the index applied here. */
static void on_internal_barrier(struct ud_http_req *r, void *arg)
{
    struct ud_writer *w = arg;
    struct ud_jbuf j;
    ud_jbuf_init(&j);
    ud_jbuf_printf(&j, "{\"appliedIndex\":%llu}",
                   (unsigned long long)(w->raft ? ud_raft_node_applied_index(w->raft) : 0));
    ud_http_reply_json(r, 200, &j);
}

int ud_cluster_add_routes(struct ud_http_server *srv, struct ud_writer *w)
{
    /* None of these reads state before writing: a new leader not yet ready runs them at once
     * (the way out of a leader whose apply is stuck is a transfer away from it). */
    const unsigned wr = UD_HTTP_ROUTE_WRITE | UD_HTTP_ROUTE_BLIND_WRITE;
    const struct ud_http_route routes[] = {
        {"status_node", UD_HTTP_GET, "/status/node", 0, on_status_node, w},
        {"status_cluster", UD_HTTP_GET, "/status/cluster", 0, on_status_cluster, w},
        {"member_add", UD_HTTP_POST, "/admin/cluster/members", wr, on_member_add, w},
        {"member_remove", UD_HTTP_DELETE, "/admin/cluster/members/{id}", wr, on_member_remove, w},
        {"leader_transfer", UD_HTTP_POST, "/admin/cluster/transfer", wr, on_transfer, w},
        {"internal_records", UD_HTTP_POST, "/internal/v1/{ns}/records",
         UD_HTTP_ROUTE_NS | wr | UD_HTTP_ROUTE_IDEMPOTENCY_KEY, on_internal_records, w},
        {"internal_barrier", UD_HTTP_GET, "/internal/v1/barrier", 0, on_internal_barrier, w},
    };
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        int rc = ud_http_server_add_route(srv, &routes[i]);
        if (rc != 0)
            return rc;
    }
    return 0;
}
