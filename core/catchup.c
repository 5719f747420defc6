/*
 * Out-of-band catch-up (core/catchup.h): a thread runs the plan with blocking steps on a libuv
 * loop of its own. Blocking is fine there: the steps are strictly sequential (snapshot, then
 * stream, then the next namespace), and the writer's loop is not waiting for any of them.
 */
#include "core/catchup.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/dir.h"
#include "core/err.h"
#include "core/http_client.h"
#include "core/log.h"
#include "core/wal.h"
#include "proto/stream.h"

#define LOG "catchup"

/* Backoff between attempts (doubling), and how long a stream may bring no record while the peer
 * is still behind the target before the next peer is tried. */
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000
#define STALL_MS       10000
/* Wait per admission attempt: the flush must keep up with what the stream brings. */
#define ADMIT_WAIT_MS 200

/* --- plans -------------------------------------------------------------------------------------
 */

int ud_catchup_plan_target(struct ud_catchup_plan *p, const char *ns, uint64_t lsn)
{
    for (size_t i = 0; i < p->ntargets; i++) {
        if (strcmp(p->targets[i].ns, ns) == 0) {
            if (lsn == 0 || (p->targets[i].lsn != 0 && lsn > p->targets[i].lsn))
                p->targets[i].lsn = lsn;
            return 0;
        }
    }
    struct ud_catchup_target *t = realloc(p->targets, (p->ntargets + 1) * sizeof *t);
    if (t == NULL)
        return UD_ENOMEM;
    p->targets = t;
    snprintf(t[p->ntargets].ns, sizeof t[p->ntargets].ns, "%s", ns);
    t[p->ntargets].gone = 0;
    t[p->ntargets].replace = 0;
    t[p->ntargets++].lsn = lsn;
    return 0;
}

int ud_catchup_plan_replace(struct ud_catchup_plan *p, const char *ns, uint64_t lsn)
{
    if (ud_catchup_plan_target(p, ns, lsn) != 0)
        return UD_ENOMEM;
    for (size_t i = 0; i < p->ntargets; i++)
        if (strcmp(p->targets[i].ns, ns) == 0)
            p->targets[i].replace = 1;
    return 0;
}

int ud_catchup_plan_peer(struct ud_catchup_plan *p, const char *url)
{
    if (url == NULL || url[0] == '\0')
        return 0;
    for (size_t i = 0; i < p->npeers; i++)
        if (strcmp(p->peers[i], url) == 0)
            return 0;
    char(*u)[UD_CATCHUP_URL_MAX] = realloc(p->peers, (p->npeers + 1) * sizeof *u);
    if (u == NULL)
        return UD_ENOMEM;
    p->peers = u;
    snprintf(u[p->npeers++], UD_CATCHUP_URL_MAX, "%s", url);
    return 0;
}

void ud_catchup_plan_free(struct ud_catchup_plan *p)
{
    free(p->targets);
    free(p->peers);
    memset(p, 0, sizeof *p);
}

/* --- the catch-up ------------------------------------------------------------------------------
 */

struct ud_catchup {
    struct ud_catchup_options o;
    struct ud_engine_options engine;
    char ns_root[PATH_MAX];
    struct ud_catchup_plan plan;
    pthread_t thread;
    /* The worker's loop and client. A cancel is seen at the next piece of a transfer (streams
     * bring a heartbeat every second) or between attempts. */
    uv_loop_t wloop;
    struct ud_http_client *http;
    uv_async_t done_async; /* on o.loop */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int cancelled;
    /* A plan without targets: answered from the caller's loop, after plan.wait_ms (0 too) on
     * `wait` (waiting: not fired yet), without the thread, its loop and client. open_handles:
     * of done_async and wait, not closed yet. */
    int nothing;
    uv_timer_t wait;
    int waiting;
    int open_handles;
    char progress[256];
    int rc;
    char errmsg[UD_ERRMSG_SIZE];
};

/* One attempt at one namespace from one peer. */
struct attempt {
    struct ud_catchup *c;
    const struct ud_catchup_target *target;
    const char *peer;
    struct ud_ns *ns;           /* the open namespace, once there is one */
    struct ud_ns_bootstrap *bs; /* a bootstrap in progress (before ns is replaced by it) */
    uint64_t next;              /* LSN the next streamed record must carry */
    uint64_t goal;              /* stop once next > goal */
    /* The transfer in progress. */
    struct ud_http_transfer *xfer;
    struct ud_stream_parser *parser;
    int xfer_done;
    long status;
    int reached;
    uint64_t last_progress_ms;
    int rc;
    char errmsg[UD_ERRMSG_SIZE];
    uint8_t *scratch;
    size_t scratch_cap;
    /* The junction: the stream starts at our last LSN, whose record must be the peer's bytes
     * too, or this copy is not the peer's namespace (deleted and created again meanwhile). */
    uint64_t junction_lsn; /* 0: none */
    uint8_t *junction;
    uint32_t junction_len;
    int diverged;
    int local; /* the failure is this node's own storage: another peer would not help */
};

static int cancelled(struct ud_catchup *c)
{
    pthread_mutex_lock(&c->mu);
    int v = c->cancelled;
    pthread_mutex_unlock(&c->mu);
    return v;
}

static void set_progress(struct attempt *a)
{
    pthread_mutex_lock(&a->c->mu);
    snprintf(a->c->progress, sizeof a->c->progress,
             "namespace %s from %s: at LSN %" PRIu64 " of %" PRIu64, a->target->ns, a->peer,
             a->next - 1, a->goal);
    pthread_mutex_unlock(&a->c->mu);
}

void ud_catchup_progress(struct ud_catchup *c, char *out, size_t size)
{
    pthread_mutex_lock(&c->mu);
    snprintf(out, size, "%s", c->progress);
    pthread_mutex_unlock(&c->mu);
}

/* The first failure of an attempt is the one reported. */
static int attempt_fail(struct attempt *a, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int attempt_fail(struct attempt *a, int rc, const char *fmt, ...)
{
    if (a->rc != 0)
        return a->rc;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(a->errmsg, sizeof a->errmsg, fmt, ap);
    va_end(ap);
    a->rc = rc;
    return rc;
}

/* Marks a failed local write (WAL, store, snapshot file) that another peer would not fix: the
 * catch-up ends with it instead of trying the peers forever. */
static int local_fail(struct attempt *a, int rc)
{
    if (rc == UD_EIO || rc == UD_ENOSPC || rc == UD_ENOMEM)
        a->local = 1;
    return rc;
}

/* Runs the worker's loop until the transfer is over (done, failed or cancelled). */
static void run_transfer(struct attempt *a)
{
    while (!a->xfer_done)
        uv_run(&a->c->wloop, UV_RUN_ONCE);
    a->xfer = NULL;
}

/* --- replacing the namespace with a bootstrapped copy -------------------------------------- */

static int install(struct attempt *a)
{
    struct ud_catchup *c = a->c;
    char why[UD_ERRMSG_SIZE];
    if (a->ns != NULL) {
        ud_registry_release(c->o.registry, a->ns);
        a->ns = NULL;
    }
    /* What the caller keeps about the name goes first, durably: a crash (or a failure) between
     * the install and the hook's second call then leaves nothing that names the replaced
     * namespace beside the installed store (the next raft start would stamp an unstamped store
     * with it, for good). No marker is safe: the restore falls back to the newest record. */
    int rc = 0;
    if (c->o.installed != NULL && (rc = c->o.installed(c->o.arg, a->target->ns, 0, why)) != 0)
        return local_fail(a, attempt_fail(a, rc,
                                          "namespace %s: before installing the snapshot "
                                          "from %s: %s",
                                          a->target->ns, a->peer, why));
    struct ud_ns_bootstrap *bs = a->bs;
    a->bs = NULL;
    rc = ud_registry_install(c->o.registry, a->target->ns, bs, &a->ns, why);
    if (rc != 0)
        return local_fail(a, attempt_fail(a, rc, "%s", why));
    uint64_t inc = ud_ns_incarnation(a->ns);
    if (c->o.installed != NULL && inc != 0 &&
        (rc = c->o.installed(c->o.arg, a->target->ns, inc, why)) != 0)
        return local_fail(a, attempt_fail(a, rc, "namespace %s: snapshot from %s installed: %s",
                                          a->target->ns, a->peer, why));
    ud_info(LOG, "namespace %s: snapshot from %s installed", a->target->ns, a->peer);
    return 0;
}

/* --- the snapshot ----------------------------------------------------------------------------
 */

struct snapshot_call {
    struct attempt *a;
    char lsn_header[32];
    const char *path;
    int fd;
    uint64_t bytes;
};

/* A piece of the snapshot, written to its file here rather than by the client, so that a cancel
 * ends a long download at its next piece. */
static int snapshot_data(void *arg, const void *data, size_t len)
{
    struct snapshot_call *s = arg;
    struct attempt *a = s->a;
    if (cancelled(a->c))
        return attempt_fail(a, UD_ECLOSED, "cancelled");
    int e = ud_write_all(s->fd, data, len);
    if (e != 0)
        return local_fail(a, attempt_fail(a, ud_err_from_errno(e),
                                          "snapshot download: write %s: %s", s->path, strerror(e)));
    s->bytes += len;
    pthread_mutex_lock(&a->c->mu);
    snprintf(a->c->progress, sizeof a->c->progress,
             "namespace %s: downloading the snapshot of %s: %" PRIu64 " bytes", a->target->ns,
             a->peer, s->bytes);
    pthread_mutex_unlock(&a->c->mu);
    return 0;
}

static int snapshot_headers(void *arg, long status)
{
    struct snapshot_call *s = arg;
    s->a->status = status;
    if (status == 200 && !ud_http_transfer_header(s->a->xfer, "x-unison-snapshot-lsn",
                                                  s->lsn_header, sizeof s->lsn_header))
        s->lsn_header[0] = '\0';
    return 0;
}

static void snapshot_done(void *arg, const struct ud_http_result *res)
{
    struct snapshot_call *s = arg;
    struct attempt *a = s->a;
    a->xfer_done = 1;
    if (res->rc != 0)
        attempt_fail(a, res->rc, "%s", res->errmsg);
    else if (res->status != 200)
        attempt_fail(a, res->status == 404 ? UD_ENOTFOUND : UD_EIO,
                     "GET %s/api/v1/%s/snapshot: status %ld: %.*s", a->peer, a->target->ns,
                     res->status, (int)(res->body_len > 200 ? 200 : res->body_len),
                     res->body != NULL ? (const char *)res->body : "");
}

/* Downloads the peer's snapshot and begins a bootstrap from it (installed at once when no record
 * before its checkpoint is needed). */
static int fetch_snapshot(struct attempt *a)
{
    struct ud_catchup *c = a->c;
    char url[UD_CATCHUP_URL_MAX + 128], path[PATH_MAX], work[PATH_MAX], errmsg[UD_ERRMSG_SIZE];
    snprintf(url, sizeof url, "%s/api/v1/%s/snapshot", a->peer, a->target->ns);
    snprintf(path, sizeof path, "%s/.catchup-snapshot-%s", c->ns_root, a->target->ns);
    snprintf(work, sizeof work, "%s/.catchup-%s", c->ns_root, a->target->ns);
    struct snapshot_call s = {.a = a, .path = path};
    s.fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (s.fd < 0)
        return local_fail(a,
                          attempt_fail(a, ud_err_from_errno(errno),
                                       "snapshot download: create %s: %s", path, strerror(errno)));
    struct ud_http_request req = {
        .url = url,
        .low_speed_time_s = 10,
        .low_speed_bytes = 1,
        .on_headers = snapshot_headers,
        .on_data = snapshot_data,
        .on_done = snapshot_done,
        .arg = &s,
    };
    a->xfer_done = 0;
    int rc = ud_http_client_start(c->http, &req, &a->xfer, errmsg);
    if (rc == 0)
        run_transfer(a);
    else
        attempt_fail(a, rc, "%s", errmsg);
    /* Not fsynced here: the bootstrap syncs the copy in its final place. */
    close(s.fd);
    if (a->rc != 0) {
        unlink(path);
        return a->rc;
    }
    ud_info(LOG, "namespace %s: snapshot from %s at LSN %s downloaded; installing", a->target->ns,
            a->peer, s.lsn_header[0] ? s.lsn_header : "?");
    struct ud_engine_options eo = c->engine;
    eo.dir = work;
    eo.name = a->target->ns;
    /* The record at the checkpoint too: its raft position is what tells raft, when it starts
     * again, which entries this namespace already holds. */
    rc = ud_ns_bootstrap_begin_at(work, path, &eo, 1, &a->bs, errmsg);
    unlink(path); /* renamed into the work directory on success */
    if (rc != 0)
        return attempt_fail(a, rc, "namespace %s: bootstrap from %s's snapshot: %s", a->target->ns,
                            a->peer, errmsg);
    a->next = ud_ns_bootstrap_from(a->bs);
    if (ud_ns_bootstrap_complete(a->bs))
        return install(a);
    return 0;
}

/* --- the WAL stream --------------------------------------------------------------------------- */

static int apply_record(struct attempt *a, const struct ud_stream_record *r)
{
    char errmsg[UD_ERRMSG_SIZE];
    int rc;
    if (a->bs != NULL) {
        if ((rc = ud_ns_bootstrap_append(a->bs, r->data, r->len, r->lsn, errmsg)) != 0)
            return local_fail(a, attempt_fail(a, rc, "namespace %s: bootstrap LSN %" PRIu64 ": %s",
                                              a->target->ns, r->lsn, errmsg));
        a->next = r->lsn + 1;
        return ud_ns_bootstrap_complete(a->bs) ? install(a) : 0;
    }
    if (a->ns == NULL)
        return attempt_fail(a, UD_EINVAL, "namespace %s: a record arrived with nothing open",
                            a->target->ns);
    while (ud_ns_admit(a->ns, ADMIT_WAIT_MS) != 0)
        if (cancelled(a->c))
            return attempt_fail(a, UD_ECLOSED, "cancelled");
    if (a->scratch_cap < r->len) {
        uint8_t *s = realloc(a->scratch, r->len);
        if (s == NULL)
            return attempt_fail(a, UD_ENOMEM, "out of memory applying a streamed record");
        a->scratch = s;
        a->scratch_cap = r->len;
    }
    /* ud_ns_apply may stamp the buffer; the parser's view is read-only. */
    memcpy(a->scratch, r->data, r->len);
    uint64_t lsn = 0;
    if ((rc = ud_ns_apply(a->ns, a->scratch, r->len, &lsn, errmsg)) != 0)
        return local_fail(a, attempt_fail(a, rc, "namespace %s: apply LSN %" PRIu64 " from %s: %s",
                                          a->target->ns, r->lsn, a->peer, errmsg));
    a->next = lsn + 1;
    return 0;
}

static int stream_headers(void *arg, long status)
{
    struct attempt *a = arg;
    a->status = status;
    if (status != 200)
        return 0;
    a->last_progress_ms = ud_mono_ns() / 1000000;
    char v[32];
    if (ud_http_transfer_header(a->xfer, "x-unison-last-lsn", v, sizeof v)) {
        uint64_t last = strtoull(v, NULL, 10);
        if (a->target->lsn == 0 || last > a->goal)
            a->goal = last;
    }
    /* Nothing to fetch: the peer holds no more than we do (once the junction record, if any,
     * has shown that it is the same namespace). */
    if (a->bs == NULL && a->next > a->goal && a->junction_lsn == 0) {
        a->reached = 1;
        return 1;
    }
    return 0;
}

static int stream_data(void *arg, const void *data, size_t len)
{
    struct attempt *a = arg;
    if (cancelled(a->c))
        return attempt_fail(a, UD_ECLOSED, "cancelled");
    if (ud_stream_parser_feed(a->parser, data, len) != 0)
        return attempt_fail(a, UD_ENOMEM, "out of memory reading the WAL stream");
    for (;;) {
        enum ud_stream_event ev;
        struct ud_stream_record rec;
        struct ud_stream_heartbeat hb;
        char errmsg[UD_ERRMSG_SIZE];
        int rc = ud_stream_parser_next(a->parser, &ev, &rec, &hb, errmsg);
        if (rc != 0)
            return attempt_fail(a, rc, "WAL stream of %s from %s: %s", a->target->ns, a->peer,
                                errmsg);
        if (ev == UD_STREAM_NEED_MORE)
            break;
        uint64_t now = ud_mono_ns() / 1000000;
        if (ev == UD_STREAM_EV_HEARTBEAT) {
            if (now - a->last_progress_ms > STALL_MS)
                return attempt_fail(a, UD_ETIMEDOUT,
                                    "%s holds namespace %s up to LSN %" PRIu64
                                    " and brought nothing for %d ms; the target is LSN %" PRIu64,
                                    a->peer, a->target->ns, hb.last_lsn, STALL_MS, a->goal);
            continue;
        }
        if (a->junction_lsn != 0 && rec.lsn == a->junction_lsn) {
            if (rec.len != a->junction_len || memcmp(rec.data, a->junction, rec.len) != 0) {
                a->diverged = 1;
                return attempt_fail(a, UD_ECORRUPT,
                                    "namespace %s: LSN %" PRIu64 " here differs from %s's",
                                    a->target->ns, rec.lsn, a->peer);
            }
            a->junction_lsn = 0; /* the same namespace: go on after it */
        } else if ((rc = apply_record(a, &rec)) != 0) {
            return rc;
        }
        a->last_progress_ms = now;
        if (a->bs == NULL && a->next > a->goal) {
            a->reached = 1;
            return UD_ECLOSED; /* ends the transfer: the goal is reached */
        }
    }
    set_progress(a);
    return 0;
}

static void stream_done(void *arg, const struct ud_http_result *res)
{
    struct attempt *a = arg;
    a->xfer_done = 1;
    if (a->reached || a->rc != 0)
        return;
    if (res->rc != 0)
        attempt_fail(a, res->rc, "%s", res->errmsg);
    else if (res->status == 410 || res->status == 404)
        attempt_fail(a, res->status == 410 ? UD_ERANGE : UD_ENOTFOUND,
                     "GET %s/api/v1/%s/wal/stream?from=%" PRIu64 ": status %ld", a->peer,
                     a->target->ns, a->next, res->status);
    else if (res->status != 200)
        attempt_fail(a, UD_EIO, "GET %s/api/v1/%s/wal/stream?from=%" PRIu64 ": status %ld: %.*s",
                     a->peer, a->target->ns, a->next, res->status,
                     (int)(res->body_len > 200 ? 200 : res->body_len),
                     res->body != NULL ? (const char *)res->body : "");
    else
        attempt_fail(a, UD_ETRUNCATED, "the WAL stream of %s from %s ended at LSN %" PRIu64,
                     a->target->ns, a->peer, a->next - 1);
}

/* Streams from a->next until a->goal is reached (0), or fails (UD_ERANGE: the peer no longer
 * retains a->next). */
static int stream(struct attempt *a)
{
    char url[UD_CATCHUP_URL_MAX + 128], errmsg[UD_ERRMSG_SIZE];
    uint64_t from = a->junction_lsn != 0 ? a->junction_lsn : a->next;
    snprintf(url, sizeof url, "%s/api/v1/%s/wal/stream?from=%" PRIu64, a->peer, a->target->ns,
             from);
    a->parser = ud_stream_parser_new(from);
    if (a->parser == NULL)
        return attempt_fail(a, UD_ENOMEM, "out of memory starting a WAL stream");
    struct ud_http_request req = {
        .url = url,
        .low_speed_time_s = 5, /* heartbeats come every second */
        .low_speed_bytes = 1,
        .on_headers = stream_headers,
        .on_data = stream_data,
        .on_done = stream_done,
        .arg = a,
    };
    a->xfer_done = 0;
    a->reached = 0;
    int rc = ud_http_client_start(a->c->http, &req, &a->xfer, errmsg);
    if (rc == 0)
        run_transfer(a);
    else
        attempt_fail(a, rc, "%s", errmsg);
    ud_stream_parser_free(a->parser);
    a->parser = NULL;
    return a->rc;
}

/* --- one namespace ---------------------------------------------------------------------------- */

static uint64_t last_lsn(struct ud_ns *ns)
{
    struct ud_ns_stats st;
    ud_ns_stats(ns, &st);
    return st.last_lsn;
}

/* Keeps a copy of our newest record, to compare with the peer's at the same LSN. 0, or the
 * attempt fails naming what could not be read (the stream must not go on unchecked). */
static int read_junction(struct attempt *a)
{
    uint64_t last = a->next - 1;
    struct ud_wal_reader *r;
    if (last == 0)
        return 0;
    int rc = ud_ns_stream_open(a->ns, last, &r);
    if (rc != 0)
        return local_fail(a,
                          attempt_fail(a, rc, "namespace %s: reading its own LSN %" PRIu64 ": %s",
                                       a->target->ns, last, ud_strerror(rc)));
    const uint8_t *data;
    uint32_t len;
    uint64_t lsn = 0;
    rc = ud_wal_reader_next(r, &data, &len, &lsn);
    if (rc == 0 && lsn == last && (a->junction = malloc(len ? len : 1)) != NULL) {
        memcpy(a->junction, data, len);
        a->junction_len = len;
        a->junction_lsn = last;
    } else {
        rc = rc != 0 ? rc : lsn != last ? UD_EIO : UD_ENOMEM;
        local_fail(a, attempt_fail(a, rc, "namespace %s: reading its own LSN %" PRIu64 ": %s",
                                   a->target->ns, last,
                                   lsn != last && rc == UD_EIO ? "another LSN came back"
                                                               : ud_strerror(rc)));
    }
    ud_wal_reader_close(r);
    return a->rc;
}

static const char *target_text(const struct ud_catchup_target *t, char *buf, size_t size)
{
    if (t->lsn == 0)
        return "the peer's last LSN";
    snprintf(buf, size, "LSN %" PRIu64, t->lsn);
    return buf;
}

/* The local copy of the namespace gives way to the peer's snapshot and the records after it. */
static int replace_from_snapshot(struct attempt *a)
{
    a->rc = 0;
    a->errmsg[0] = '\0';
    a->diverged = 0;
    a->junction_lsn = 0;
    return fetch_snapshot(a) != 0 ? a->rc : stream(a);
}

struct status_call {
    struct attempt *a;
    uint64_t applied;
    int runs_raft;
    char why[UD_ERRMSG_SIZE]; /* no applied index: what the answer was */
};

static void status_done(void *arg, const struct ud_http_result *res)
{
    struct status_call *s = arg;
    s->a->xfer_done = 1;
    if (res->rc != 0) {
        snprintf(s->why, sizeof s->why, "%s", res->errmsg ? res->errmsg : "no answer");
        return;
    }
    if (res->status != 200 || res->body == NULL) {
        snprintf(s->why, sizeof s->why, "its /status/node answered %ld", res->status);
        return;
    }
    /* {"id":..,"state":"follower","appliedIndex":N,"namespaces":{..}} (docs/http-api.md): parsed,
     * since a namespace may be named "state" or "appliedIndex" too. */
    json_t *root = json_loadb((const char *)res->body, res->body_len, 0, NULL);
    if (root == NULL) {
        snprintf(s->why, sizeof s->why, "its /status/node answered %zu bytes that are not JSON",
                 res->body_len);
        return;
    }
    const char *state = json_string_value(json_object_get(root, "state"));
    json_t *applied = json_object_get(root, "appliedIndex");
    s->runs_raft =
        state != NULL && (strcmp(state, "leader") == 0 || strcmp(state, "follower") == 0);
    if (!s->runs_raft)
        snprintf(s->why, sizeof s->why,
                 "its /status/node says raft state %s, not leader or follower",
                 state != NULL ? state : "(none)");
    if (json_is_integer(applied) && json_integer_value(applied) >= 0)
        s->applied = (uint64_t)json_integer_value(applied);
    json_decref(root);
}

/* --- what a peer has applied ------------------------------------------------------------------ */

/* The raft index the peer has applied, from its /status/node, into *applied; -1 with why
 * (UD_ERRMSG_SIZE) saying what happened when the peer does not answer or does not run raft. */
static int peer_applied(struct attempt *a, uint64_t *applied, char *why)
{
    char url[UD_CATCHUP_URL_MAX + 32], errmsg[UD_ERRMSG_SIZE];
    snprintf(url, sizeof url, "%s/status/node", a->peer);
    struct status_call s = {.a = a};
    struct ud_http_request req = {
        .url = url,
        .timeout_ms = 5000,
        .collect_max = 64u << 10,
        .on_done = status_done,
        .arg = &s,
    };
    a->xfer_done = 0;
    *applied = 0;
    if (ud_http_client_start(a->c->http, &req, &a->xfer, errmsg) != 0) {
        snprintf(why, UD_ERRMSG_SIZE, "%s", errmsg);
        return -1;
    }
    run_transfer(a);
    if (!s.runs_raft) {
        snprintf(why, UD_ERRMSG_SIZE, "%s", s.why);
        return -1;
    }
    *applied = s.applied;
    return 0;
}

static int catch_up_from(struct attempt *a)
{
    struct ud_catchup *c = a->c;
    char tt[32];
    a->goal = a->target->lsn;
    if (ud_registry_acquire(c->o.registry, a->target->ns, &a->ns) == 0) {
        a->next = last_lsn(a->ns) + 1;
        if (a->target->replace) {
            /* A peer that has not applied the snapshot's index may hold the same old copy:
             * its snapshot is not the namespace the raft snapshot lists. */
            uint64_t applied, need = c->plan.snapshot_index;
            char why[UD_ERRMSG_SIZE];
            if (need > 0 && peer_applied(a, &applied, why) != 0)
                return attempt_fail(a, UD_EIO,
                                    "namespace %s: %s did not report its applied raft index (%s):"
                                    " its copy may not be the namespace the snapshot lists",
                                    a->target->ns, a->peer, why);
            if (need > 0 && applied < need)
                return attempt_fail(a, UD_ERANGE,
                                    "namespace %s: %s has applied raft up to index %" PRIu64
                                    ", before the raft snapshot's %" PRIu64
                                    ": its copy may not be the namespace the snapshot lists",
                                    a->target->ns, a->peer, applied, need);
            ud_warn(LOG,
                    "namespace %s: this copy (LSN %" PRIu64 ") is not the namespace raft's "
                    "snapshot lists (deleted and created again while this node was away); "
                    "replacing it with %s's snapshot",
                    a->target->ns, a->next - 1, a->peer);
            return replace_from_snapshot(a);
        }
        if (a->target->lsn != 0 && a->next > a->target->lsn)
            return 0;
        ud_info(LOG, "namespace %s: at LSN %" PRIu64 ", target %s; streaming from %s",
                a->target->ns, a->next - 1, target_text(a->target, tt, sizeof tt), a->peer);
        if (read_junction(a) != 0) {
            /* Our newest record is no longer in our own WAL (retention removed its segment
             * once it was flushed, and the next segment is still empty): there is nothing to
             * compare with the peer's record, and every peer would get the same answer. */
            if (a->rc != UD_EGONE)
                return a->rc;
            ud_warn(LOG,
                    "%s: this copy cannot be checked against %s's; replacing it with %s's "
                    "snapshot",
                    a->errmsg, a->peer, a->peer);
            return replace_from_snapshot(a);
        }
        int rc = stream(a);
        if (a->diverged) {
            ud_warn(LOG,
                    "%s: not the peer's namespace (deleted and created again?); replacing it "
                    "with %s's snapshot",
                    a->errmsg, a->peer);
            return replace_from_snapshot(a);
        }
        if (rc != UD_ERANGE)
            return a->rc;
        a->junction_lsn = 0;
        ud_info(LOG,
                "namespace %s: %s no longer retains LSN %" PRIu64
                "; bootstrapping from its snapshot",
                a->target->ns, a->peer, a->next);
        a->rc = 0;
    } else {
        ud_info(LOG, "namespace %s: not here; bootstrapping from %s (target %s)", a->target->ns,
                a->peer, target_text(a->target, tt, sizeof tt));
    }
    if (fetch_snapshot(a) != 0)
        return a->rc;
    /* The records before the snapshot's checkpoint that recovery needs, then the rest. */
    if (a->bs != NULL || a->next <= a->goal || a->target->lsn == 0)
        return stream(a);
    return 0;
}

static int catch_up_one(struct ud_catchup *c, const struct ud_catchup_target *t, const char *peer,
                        int *local, char *errmsg)
{
    struct attempt a = {.c = c, .target = t, .peer = peer};
    int rc = catch_up_from(&a);
    ud_ns_bootstrap_abort(a.bs);
    if (rc == 0 && a.ns != NULL) {
        /* raft may have dropped its log behind these records: the WAL is their only copy. */
        char why[UD_ERRMSG_SIZE];
        uint64_t raft_index;
        uint32_t raft_pos;
        ud_ns_last_raft_position(a.ns, &raft_index, &raft_pos);
        if (last_lsn(a.ns) > 0 && raft_index == 0)
            /* Raft would apply its log again on top of these records. */
            attempt_fail(&a, UD_ECORRUPT,
                         "namespace %s from %s: its newest record (LSN %" PRIu64
                         ") carries no raft position",
                         t->ns, peer, last_lsn(a.ns));
        else if ((rc = ud_ns_sync(a.ns, why)) != 0)
            local_fail(&a, attempt_fail(&a, rc, "namespace %s: %s", t->ns, why));
        else
            ud_info(LOG, "namespace %s: caught up from %s to LSN %" PRIu64, t->ns, peer,
                    last_lsn(a.ns));
    }
    if (a.ns != NULL)
        ud_registry_release(c->o.registry, a.ns);
    free(a.scratch);
    free(a.junction);
    if (a.rc != 0)
        snprintf(errmsg, UD_ERRMSG_SIZE, "%s", a.errmsg);
    *local = a.local;
    return a.rc;
}

/* Local failures end the catch-up; a peer's end (refused, gone, behind, broken) means the next
 * peer is tried. */
static int local_failure(int rc)
{
    return rc == UD_ENOSPC || rc == UD_ENOMEM;
}

static void sleep_ms(struct ud_catchup *c, unsigned ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&c->mu);
    while (!c->cancelled && pthread_cond_timedwait(&c->cv, &c->mu, &ts) == 0)
        ;
    pthread_mutex_unlock(&c->mu);
}

static int run_plan(struct ud_catchup *c, char *errmsg)
{
    if (c->plan.npeers == 0)
        return ud_errf(errmsg, UD_ENOTFOUND,
                       "no peer's HTTP address is known (member directory or [raft] peers "
                       "with http=)");
    for (size_t i = 0; i < c->plan.ntargets; i++) {
        const struct ud_catchup_target *t = &c->plan.targets[i];
        unsigned backoff = BACKOFF_MIN_MS;
        for (size_t attempt = 0;; attempt++) {
            if (cancelled(c))
                return ud_errf(errmsg, UD_ECLOSED, "catch-up cancelled");
            const char *peer = c->plan.peers[attempt % c->plan.npeers];
            int local = 0;
            int rc = catch_up_one(c, t, peer, &local, errmsg);
            if (rc == 0)
                break;
            /* A damaged WAL's target (snapshot index 0) is never given up: only a snapshot says
             * the namespace existed, so only a peer past it can say it was deleted since. */
            if (rc == UD_ENOTFOUND && c->plan.snapshot_index > 0) {
                /* Deleted there since the snapshot, or not created there yet (the peer is
                 * behind): only a peer that runs raft and has applied the snapshot's index can
                 * say it is gone (it existed at the snapshot, so a later entry deleted it). */
                struct attempt probe = {.c = c, .target = t, .peer = peer};
                uint64_t applied;
                char why[UD_ERRMSG_SIZE];
                if (peer_applied(&probe, &applied, why) == 0) {
                    if (applied >= c->plan.snapshot_index) {
                        ud_warn(LOG,
                                "namespace %s: %s has applied raft index %" PRIu64
                                " or later and no longer has it (deleted since): not fetched",
                                t->ns, peer, c->plan.snapshot_index);
                        c->plan.targets[i].gone = 1;
                        break;
                    }
                    snprintf(why, sizeof why,
                             "it has applied raft index %" PRIu64
                             ", before the snapshot's %" PRIu64,
                             applied, c->plan.snapshot_index);
                }
                ud_warn(LOG, "namespace %s: %s does not have it and cannot say it was deleted: %s",
                        t->ns, peer, why);
            }
            if (rc == UD_ECLOSED && cancelled(c))
                return rc;
            if (local || local_failure(rc))
                return rc;
            const char *next = c->plan.peers[(attempt + 1) % c->plan.npeers];
            ud_warn(LOG, "namespace %s from %s: %s; trying %s in %u ms", t->ns, peer, errmsg, next,
                    backoff);
            sleep_ms(c, backoff);
            backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
        }
    }
    return 0;
}

static void client_closed_cb(void *arg)
{
    (void)arg;
}

static void *thread_main(void *arg)
{
    struct ud_catchup *c = arg;
    char errmsg[UD_ERRMSG_SIZE] = "";
    int rc = run_plan(c, errmsg);
    ud_http_client_close(c->http, client_closed_cb, NULL);
    uv_run(&c->wloop, UV_RUN_DEFAULT);
    pthread_mutex_lock(&c->mu);
    c->rc = rc;
    snprintf(c->errmsg, sizeof c->errmsg, "%s", errmsg);
    pthread_mutex_unlock(&c->mu);
    uv_async_send(&c->done_async);
    return NULL;
}

static void done_closed_cb(uv_handle_t *h)
{
    struct ud_catchup *c = h->data;
    if (--c->open_handles > 0)
        return;
    if (!c->nothing)
        uv_loop_close(&c->wloop);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    ud_catchup_plan_free(&c->plan);
    free(c);
}

static void done_async_cb(uv_async_t *h)
{
    struct ud_catchup *c = h->data;
    if (!c->nothing)
        pthread_join(c->thread, NULL);
    if (c->nothing) {
        if (c->waiting) { /* cancelled during the wait */
            c->rc = UD_ECLOSED;
            snprintf(c->errmsg, sizeof c->errmsg, "catch-up cancelled");
        }
        uv_close((uv_handle_t *)&c->wait, done_closed_cb);
    }
    c->o.done(c->o.arg, c->rc, c->errmsg, &c->plan);
    uv_close((uv_handle_t *)&c->done_async, done_closed_cb);
}

static void wait_cb(uv_timer_t *t)
{
    struct ud_catchup *c = t->data;
    c->waiting = 0;
    uv_async_send(&c->done_async);
}

int ud_catchup_start(const struct ud_catchup_options *o, struct ud_catchup_plan *plan,
                     struct ud_catchup **out, char *errmsg)
{
    struct ud_catchup *c = calloc(1, sizeof *c);
    if (c == NULL)
        return ud_errf(errmsg, UD_ENOMEM, "out of memory starting a catch-up");
    c->o = *o;
    c->engine = *o->engine;
    snprintf(c->ns_root, sizeof c->ns_root, "%s", o->ns_root);
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    if (plan->ntargets == 0) {
        /* Nothing to fetch (a failed restore only needs raft started again): no peer is needed,
         * and done comes from the caller's loop as after a round that ran. */
        c->nothing = 1;
        uv_async_init(o->loop, &c->done_async, done_async_cb);
        c->done_async.data = c;
        c->plan = *plan;
        memset(plan, 0, sizeof *plan);
        uv_timer_init(o->loop, &c->wait);
        c->wait.data = c;
        c->open_handles = 2;
        c->waiting = 1;
        if (c->plan.wait_ms > 0)
            snprintf(c->progress, sizeof c->progress,
                     "nothing to fetch; raft starts again in %u ms", c->plan.wait_ms);
        uv_timer_start(&c->wait, wait_cb, c->plan.wait_ms, 0);
        *out = c;
        return 0;
    }
    int rc;
    if (uv_loop_init(&c->wloop) != 0) {
        rc = ud_errf(errmsg, UD_EIO, "catch-up: cannot create its event loop");
        goto fail;
    }
    /* Created here, on the caller's thread: curl's global initialization is not thread-safe. */
    if ((rc = ud_http_client_new(&c->wloop, &c->http, errmsg)) != 0)
        goto fail_loop;
    uv_async_init(o->loop, &c->done_async, done_async_cb);
    c->done_async.data = c;
    c->open_handles = 1;
    c->plan = *plan;
    memset(plan, 0, sizeof *plan);
    if ((rc = pthread_create(&c->thread, NULL, thread_main, c)) != 0) {
        *plan = c->plan;
        memset(&c->plan, 0, sizeof c->plan);
        rc = ud_errf(errmsg, UD_ENOMEM, "catch-up: start thread: %s", strerror(rc));
        /* Nothing ran on the worker loop yet: close its handles synchronously. */
        ud_http_client_close(c->http, NULL, NULL);
        uv_run(&c->wloop, UV_RUN_DEFAULT);
        uv_close((uv_handle_t *)&c->done_async, done_closed_cb);
        return rc;
    }
    *out = c;
    return 0;
fail_loop:
    uv_loop_close(&c->wloop);
fail:
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    free(c);
    return rc;
}

void ud_catchup_cancel(struct ud_catchup *c)
{
    pthread_mutex_lock(&c->mu);
    c->cancelled = 1;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    if (c->nothing && c->waiting)
        uv_async_send(&c->done_async); /* the wait ends: done with UD_ECLOSED */
}
