/*
 * GET /api/v1/{ns}/snapshot: a consistent LMDB copy of the namespace, streamed while it is made
 * (docs/replication.md "Snapshots").
 *
 * A worker thread runs the copy (ud_ns_snapshot_copy, LMDB's compacting copy in one read
 * transaction) into a pipe; the loop reads the pipe one buffer at a time and sends it, and reads
 * the next buffer only at h2o's proceed, so the copy blocks on the full pipe while the client is
 * slow: memory per download is one buffer plus the pipe, whatever the size of the store.
 *
 * The checkpoint header: the copy's read transaction starts inside LMDB, so the checkpoint is read
 * just before the copy starts and again when its first bytes arrive (the transaction has begun by
 * then). Checkpoints only move forward, so when both reads agree the copy holds exactly that
 * checkpoint; when a flush committed in between, the copy is abandoned and started again (at most
 * MAX_ATTEMPTS times, then 503). The copy's own meta sub-database holds the same checkpoint and
 * the open-transaction table: that is what a follower installs.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/err.h"
#include "core/http/repl_int.h"
#include "core/log.h"

#define BUF_SIZE     (256u << 10)
#define MAX_ATTEMPTS 5
/* Copies running at once (abandoned ones until they notice): each holds a thread and a read
 * transaction. */
#define MAX_COPIES 8
/* Open transactions listed in a header; more are only in the copy's meta sub-database. */
#define MAX_TXN_HEADER 64

/* One copy attempt, on a thread of its own: a copy into a slow client's pipe can block for as
 * long as the download takes, which must not hold one of libuv's few pool threads (raft and the
 * file system use them). Outlives its snapshot when abandoned. */
struct copy_job {
    uv_thread_t thread;
    uv_async_t done;               /* the thread's last act: wakes the loop (copy_done) */
    struct ud_http_snapshot *snap; /* NULL once abandoned */
    struct ud_http_server *s;
    struct ud_ns *ns; /* referenced until the copy returned */
    int wfd;          /* the pipe's write end, closed by the worker when the copy returns */
    int rc;
    char errmsg[UD_ERRMSG_SIZE];
};

struct ud_http_snapshot {
    h2o_generator_t super; /* first: h2o passes this address back */
    struct ud_http_repl *p;
    struct ud_http_req *r; /* until the response starts */
    h2o_req_t *h;          /* after */
    char ns_name[UD_NS_NAME_MAX + 1];
    uv_pipe_t *pipe;      /* read end of the current attempt (NULL once closing) */
    int pipes;            /* pipe handles not yet closed (an abandoned attempt's may be closing) */
    struct copy_job *job; /* the current attempt */
    size_t metrics;
    uint64_t start_ns;
    struct ud_checkpoint cp;
    uint64_t incarnation; /* of the namespace the current attempt copies (ud_ns_incarnation) */
    int attempts;
    int started;   /* headers sent */
    int inflight;  /* a send awaits proceed */
    int eof;       /* the pipe ended */
    int work_done; /* the current attempt's copy returned (job_rc) */
    int job_rc;
    char job_err[UD_ERRMSG_SIZE];
    int cut;      /* end with an error (stop, delete, failure) */
    int finished; /* the response ended or h2o stopped it */
    uint8_t *buf;
    size_t buf_len;
    struct ud_http_snapshot *prev, *next;
};

static void start_attempt(struct ud_http_snapshot *sn);
static void pump(struct ud_http_snapshot *sn);

/* --- the worker ------------------------------------------------------------------------------- */

static void copy_thread(void *arg)
{
    struct copy_job *job = arg;
    job->rc = ud_ns_snapshot_copy(job->ns, job->wfd, job->errmsg);
    close(job->wfd); /* the reader sees the end */
    job->wfd = -1;
    uv_async_send(&job->done);
}

static void maybe_free(struct ud_http_snapshot *sn);

static void job_closed(uv_handle_t *h)
{
    struct copy_job *job = h->data;
    struct ud_http_server *s = job->s;
    free(job);
    ud_http_server_unref(s); /* the job's own count */
}

static void copy_done(uv_async_t *a)
{
    struct copy_job *job = a->data;
    uv_thread_join(&job->thread); /* it ends right after waking us; its results are ours now */
    ud_registry_release(job->s->opts.registry, job->ns);
    job->s->repl->snapshot_jobs--;
    struct ud_http_snapshot *sn = job->snap;
    if (sn != NULL) {
        sn->work_done = 1;
        sn->job_rc = job->rc;
        snprintf(sn->job_err, sizeof sn->job_err, "%s", job->errmsg);
        sn->job = NULL;
    }
    uv_close((uv_handle_t *)&job->done, job_closed);
    if (sn != NULL)
        pump(sn);
}

/* --- lifetime --------------------------------------------------------------------------------- */

static void unlink_snap(struct ud_http_snapshot *sn)
{
    struct ud_http_repl *p = sn->p;
    if (sn->prev != NULL)
        sn->prev->next = sn->next;
    else
        p->snaps = sn->next;
    if (sn->next != NULL)
        sn->next->prev = sn->prev;
    sn->prev = sn->next = NULL;
}

/* Freed once the response is over, the pipe closed and no attempt refers to it. */
static void maybe_free(struct ud_http_snapshot *sn)
{
    if (!sn->finished || sn->pipes > 0 || sn->job != NULL)
        return;
    struct ud_http_server *s = sn->p->s;
    int started = sn->started;
    free(sn->cp.txns);
    free(sn->buf);
    free(sn);
    ud_http_server_unref(s);
    if (started)
        ud_http_server_unref(s); /* the count ud_http_req_take gave the response */
}

static void pipe_closed_cb(uv_handle_t *h)
{
    struct ud_http_snapshot *sn = h->data;
    free(h);
    sn->pipes--;
    maybe_free(sn);
}

static void close_pipe(struct ud_http_snapshot *sn)
{
    if (sn->pipe != NULL) {
        uv_close((uv_handle_t *)sn->pipe, pipe_closed_cb);
        sn->pipe = NULL;
    }
}

/* Lets the current attempt's copy run into a closed pipe (EPIPE) and forgets it. */
static void abandon_job(struct ud_http_snapshot *sn)
{
    if (sn->job != NULL) {
        sn->job->snap = NULL;
        sn->job = NULL;
    }
    close_pipe(sn);
}

/* The response is over (sent, cut or stopped by h2o): releases what remains. */
static void finish(struct ud_http_snapshot *sn, int status)
{
    sn->finished = 1;
    unlink_snap(sn);
    abandon_job(sn);
    ud_http_metrics_observe(&sn->p->s->metrics, sn->metrics, status, ud_mono_ns() - sn->start_ns);
    maybe_free(sn);
}

/* Answers before the response started (the request still belongs to the router). */
static void fail_before_start(struct ud_http_snapshot *sn, int code, const char *msg)
{
    struct ud_http_req *r = sn->r;
    sn->r = NULL;
    if (code == UD_EBUSY || code == UD_ECLOSED)
        ud_http_set_header(r, "retry-after", "1");
    ud_http_reply_error(r, ud_http_status_for(code), "%s", msg);
    sn->finished = 1;
    unlink_snap(sn);
    abandon_job(sn);
    maybe_free(sn);
}

/* --- reading the pipe ------------------------------------------------------------------------- */

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    (void)suggested;
    struct ud_http_snapshot *sn = h->data;
    b->base = (char *)sn->buf;
    b->len = BUF_SIZE;
}

/* The namespace's checkpoint. */
static int checkpoint_of(struct ud_http_snapshot *sn, struct ud_checkpoint *cp, char *errmsg)
{
    struct ud_ns *ns;
    if (ud_registry_acquire(sn->p->s->opts.registry, sn->ns_name, &ns) != 0)
        return ud_errf(errmsg, UD_ENOTFOUND, "namespace not found: %s", sn->ns_name);
    int rc = ud_ns_checkpoint(ns, cp, errmsg);
    ud_registry_release(sn->p->s->opts.registry, ns);
    return rc;
}

/* First bytes of an attempt: the copy's transaction has begun. 1 when the response started. */
static int start_response(struct ud_http_snapshot *sn)
{
    char errmsg[UD_ERRMSG_SIZE];
    struct ud_checkpoint after = {0};
    int rc = checkpoint_of(sn, &after, errmsg);
    if (rc != 0) {
        fail_before_start(sn, rc, errmsg);
        return 0;
    }
    uint64_t lsn = after.flushed_lsn;
    free(after.txns);
    if (lsn != sn->cp.flushed_lsn) {
        /* A flush committed while the copy started: its checkpoint is one of the two. */
        abandon_job(sn);
        if (sn->attempts >= MAX_ATTEMPTS) {
            fail_before_start(sn, UD_EBUSY,
                              "the store checkpointed during each of 5 snapshot attempts; retry");
            return 0;
        }
        start_attempt(sn);
        return 0;
    }
    struct ud_http_req *r = sn->r;
    if (ud_http_req_gone(r)) {
        sn->r = NULL;
        ud_http_reply_error(r, 499, "client went away"); /* only frees */
        sn->finished = 1;
        unlink_snap(sn);
        abandon_job(sn);
        return 0;
    }
    char v[64];
    snprintf(v, sizeof v, "%llu", (unsigned long long)sn->cp.flushed_lsn);
    ud_http_set_header(r, "x-unison-snapshot-lsn", v);
    snprintf(v, sizeof v, "%u", sn->cp.txn_count);
    ud_http_set_header(r, "x-unison-snapshot-open-txns", v);
    if (sn->cp.txn_count > 0 && sn->cp.txn_count <= MAX_TXN_HEADER) {
        /* id:first_lsn pairs, comma separated (ids in lowercase hex). */
        size_t cap = (size_t)sn->cp.txn_count * 56 + 1, n = 0;
        char *list = malloc(cap);
        if (list == NULL)
            abort();
        list[0] = '\0';
        for (uint32_t i = 0; i < sn->cp.txn_count; i++) {
            n += (size_t)snprintf(list + n, cap - n, "%s", i > 0 ? "," : "");
            for (int k = 0; k < 16; k++)
                n += (size_t)snprintf(list + n, cap - n, "%02x", sn->cp.txns[i].id[k]);
            n += (size_t)snprintf(list + n, cap - n, ":%llu",
                                  (unsigned long long)sn->cp.txns[i].first_lsn);
        }
        ud_http_set_header(r, "x-unison-snapshot-txns", list);
        free(list);
    }
    /* The copied namespace's, not the name's now: it may have been replaced since the attempt
     * began (the request has no namespace reference of its own here, so ud_http_set_incarnation
     * would see none). */
    ud_http_set_incarnation_value(r, sn->incarnation);
    ud_http_set_header(r, "x-unison-snapshot-format", "lmdb");
    ud_http_set_header(r, "cache-control", "no-store");
    sn->r = NULL;
    h2o_req_t *h = ud_http_req_take(r);
    sn->h = h;
    h->res.status = 200;
    h->res.reason = "OK";
    h2o_add_header(&h->pool, &h->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   H2O_STRLIT("application/octet-stream"));
    h2o_start_response(h, &sn->super);
    sn->started = 1;
    sn->p->snapshots_total++;
    return 1;
}

static void read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *b)
{
    (void)b;
    struct ud_http_snapshot *sn = stream->data;
    if (nread == 0)
        return;
    uv_read_stop(stream);
    if (nread < 0) {
        if (nread != UV_EOF)
            ud_warn(UD_HTTP_LOG, "namespace %s: snapshot pipe: %s", sn->ns_name,
                    uv_strerror((int)nread));
        sn->eof = 1;
        close_pipe(sn);
        pump(sn);
        return;
    }
    if (!sn->started && !start_response(sn))
        return;
    sn->buf_len = (size_t)nread;
    sn->inflight = 1;
    sn->p->snapshot_bytes += (uint64_t)nread;
    h2o_iovec_t iov = h2o_iovec_init(sn->buf, sn->buf_len);
    h2o_send(sn->h, &iov, 1, H2O_SEND_STATE_IN_PROGRESS);
}

/* Decides what comes next: more bytes, the end, or an error. Never with a send in flight. */
static void pump(struct ud_http_snapshot *sn)
{
    if (sn->inflight || sn->finished)
        return;
    if (!sn->started) {
        /* Before the first byte: only a failed copy or a cut is decided here. */
        if (sn->cut) {
            fail_before_start(sn, UD_ECLOSED,
                              "the namespace is being deleted or the server is "
                              "stopping");
        } else if (sn->work_done && sn->job_rc != 0) {
            fail_before_start(sn, sn->job_rc, sn->job_err);
        } else if (sn->eof && sn->work_done) {
            fail_before_start(sn, UD_EIO, "the snapshot copy produced no bytes");
        }
        return;
    }
    if (sn->cut || (sn->work_done && sn->job_rc != 0)) {
        if (sn->work_done && sn->job_rc != 0)
            ud_error(UD_HTTP_LOG, "namespace %s: snapshot cut: %s", sn->ns_name, sn->job_err);
        h2o_send(sn->h, NULL, 0, H2O_SEND_STATE_ERROR);
        finish(sn, 500);
        return;
    }
    if (sn->eof) {
        if (sn->work_done) {
            h2o_send(sn->h, NULL, 0, H2O_SEND_STATE_FINAL);
            finish(sn, 200);
        }
        return; /* the copy's result comes with copy_done */
    }
    if (sn->pipe != NULL)
        uv_read_start((uv_stream_t *)sn->pipe, alloc_cb, read_cb);
}

static void on_proceed(h2o_generator_t *g, h2o_req_t *h)
{
    (void)h;
    struct ud_http_snapshot *sn = (struct ud_http_snapshot *)g;
    sn->inflight = 0;
    pump(sn);
}

static void on_stop(h2o_generator_t *g, h2o_req_t *h)
{
    (void)h;
    finish((struct ud_http_snapshot *)g, 499);
}

/* --- attempts --------------------------------------------------------------------------------- */

static void start_attempt(struct ud_http_snapshot *sn)
{
    struct ud_http_server *s = sn->p->s;
    char errmsg[UD_ERRMSG_SIZE];
    sn->attempts++;
    sn->eof = 0;
    sn->work_done = 0;
    free(sn->cp.txns);
    memset(&sn->cp, 0, sizeof sn->cp);
    int rc = checkpoint_of(sn, &sn->cp, errmsg);
    if (rc != 0) {
        fail_before_start(sn, rc, errmsg);
        return;
    }
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) {
        fail_before_start(sn, UD_EIO, "snapshot: pipe failed");
        return;
    }
    struct copy_job *job = calloc(1, sizeof *job);
    if (job == NULL)
        abort();
    if (ud_registry_acquire(s->opts.registry, sn->ns_name, &job->ns) != 0) {
        close(fds[0]);
        close(fds[1]);
        free(job);
        fail_before_start(sn, UD_ENOTFOUND, "namespace not found");
        return;
    }
    sn->incarnation = ud_ns_incarnation(job->ns);
    job->snap = sn;
    job->s = s;
    job->wfd = fds[1];
    uv_async_init(s->loop, &job->done, copy_done);
    job->done.data = job;
    if (uv_thread_create(&job->thread, copy_thread, job) != 0) {
        close(fds[0]);
        close(fds[1]);
        ud_registry_release(s->opts.registry, job->ns);
        job->s = s;
        s->live++; /* dropped by job_closed */
        uv_close((uv_handle_t *)&job->done, job_closed);
        fail_before_start(sn, UD_EIO, "snapshot: cannot start a copy thread");
        return;
    }
    sn->p->snapshot_jobs++;
    sn->job = job;
    /* A fresh pipe handle per attempt: an abandoned attempt's handle may still be closing. */
    sn->pipe = malloc(sizeof *sn->pipe);
    if (sn->pipe == NULL)
        abort();
    uv_pipe_init(s->loop, sn->pipe, 0);
    sn->pipe->data = sn;
    uv_pipe_open(sn->pipe, fds[0]);
    sn->pipes++;
    s->live++; /* the job's own count: a stop waits for the copy to return */
    uv_read_start((uv_stream_t *)sn->pipe, alloc_cb, read_cb);
}

void ud_http_snapshots_cut(struct ud_http_repl *p, const char *ns)
{
    struct ud_http_snapshot *sn = p->snaps;
    while (sn != NULL) {
        struct ud_http_snapshot *next = sn->next;
        if (ns == NULL || strcmp(sn->ns_name, ns) == 0) {
            sn->cut = 1;
            abandon_job(sn); /* the copy ends on EPIPE and releases the namespace */
            pump(sn);
        }
        sn = next;
    }
}

void ud_http_on_snapshot(struct ud_http_req *r, void *arg)
{
    struct ud_http_repl *p = arg;
    if (p->stopping || ud_http_server_ns_is_closing(p->s, r->ns_name)) {
        ud_http_set_header(r, "retry-after", "1");
        ud_http_reply_error(r, 503, "namespace %s is being deleted or the server is stopping",
                            r->ns_name);
        return;
    }
    if (p->snapshot_jobs >= MAX_COPIES) {
        ud_http_set_header(r, "retry-after", "1");
        ud_http_reply_error(r, 503, "%d snapshot copies are running on this node; retry later",
                            MAX_COPIES);
        return;
    }
    struct ud_http_snapshot *sn = calloc(1, sizeof *sn);
    if (sn == NULL)
        abort();
    sn->buf = malloc(BUF_SIZE);
    if (sn->buf == NULL)
        abort();
    sn->super.proceed = on_proceed;
    sn->super.stop = on_stop;
    sn->p = p;
    sn->r = r;
    sn->metrics = r->metrics;
    sn->start_ns = r->start_ns;
    snprintf(sn->ns_name, sizeof sn->ns_name, "%s", r->ns_name);
    sn->next = p->snaps;
    if (p->snaps != NULL)
        p->snaps->prev = sn;
    p->snaps = sn;
    p->s->live++; /* the snapshot's own count, dropped when it is freed */
    start_attempt(sn);
}
