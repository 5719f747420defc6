/*
 * A follower's loop side: the state machine of relayer/relayer.h, the WAL stream and snapshot
 * transfers through the HTTP client, frame verification (proto/stream.h), heartbeat watch,
 * failover with backoff, and acks. Records are applied on the follower's thread (relayer/apply.c).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/http/http.h"
#include "core/http_client.h"
#include "core/log.h"
#include "proto/record.h"
#include "relayer/follower_int.h"
#include "relayer/incarnation.h"

#define LOG "follower"

#define TICK_MS         250
#define BACKOFF_BASE_MS 100

const char *ud_follower_state_name(enum ud_follower_state s)
{
    switch (s) {
    case UD_FOLLOWER_CONNECTING:
        return "connecting";
    case UD_FOLLOWER_BOOTSTRAPPING:
        return "bootstrapping";
    case UD_FOLLOWER_STREAMING:
        return "streaming";
    case UD_FOLLOWER_BACKOFF:
        return "backoff";
    case UD_FOLLOWER_STOPPED:
        return "stopped";
    }
    return "?";
}

/* The one place the state changes; illegal moves are bugs (diagram in relayer/relayer.h). */
static void set_state(struct ud_follower *f, enum ud_follower_state next)
{
    static const unsigned legal[] = {
        [UD_FOLLOWER_CONNECTING] = 1u << UD_FOLLOWER_STREAMING | 1u << UD_FOLLOWER_BOOTSTRAPPING |
                                   1u << UD_FOLLOWER_BACKOFF | 1u << UD_FOLLOWER_STOPPED,
        [UD_FOLLOWER_BOOTSTRAPPING] =
            1u << UD_FOLLOWER_STREAMING | 1u << UD_FOLLOWER_BACKOFF | 1u << UD_FOLLOWER_STOPPED,
        [UD_FOLLOWER_STREAMING] = 1u << UD_FOLLOWER_BACKOFF | 1u << UD_FOLLOWER_STOPPED,
        [UD_FOLLOWER_BACKOFF] = 1u << UD_FOLLOWER_CONNECTING | 1u << UD_FOLLOWER_STOPPED,
        [UD_FOLLOWER_STOPPED] = 0,
    };
    UD_ASSERT(legal[f->state] & (1u << next));
    ud_debug(LOG, "namespace %s: %s -> %s", f->ns, ud_follower_state_name(f->state),
             ud_follower_state_name(next));
    f->state = next;
}

static uint64_t now_ms(struct ud_follower *f)
{
    return uv_now(f->r->loop);
}

static const char *upstream(const struct ud_follower *f)
{
    return f->upstreams[f->cur];
}

const char *ud_follower_upstream(const struct ud_follower *f)
{
    return f->nupstreams > 0 ? upstream(f) : "";
}

static uint64_t applied_lsn(struct ud_follower *f)
{
    pthread_mutex_lock(&f->mu);
    uint64_t v = f->next_lsn > 0 ? f->next_lsn - 1 : 0;
    pthread_mutex_unlock(&f->mu);
    return v;
}

static void start_connect(struct ud_follower *f);

/*
 * What acks carry: the applied LSN, or, when this relayer fsyncs its WAL (sync_mode interval or
 * always), the part of it that is durable here too. Upstream retention follows acks; after a power
 * loss this relayer resumes from its durable WAL end, which must still be retained upstream. With
 * sync_mode none (the default) nothing is durable before a seal or flush: acks carry the applied
 * LSN, and a power loss can cost a bootstrap (docs/relayer.md "Operations").
 */
static uint64_t ackable_lsn(struct ud_follower *f)
{
    uint64_t applied = applied_lsn(f);
    if (f->r->config->engine.sync_mode == UD_WAL_SYNC_NONE)
        return applied;
    struct ud_ns *ns;
    /* Not open this moment (an install or a drop): never less than what was acked, which the
     * upstream takes as this relayer's position (its retention and acks=isr follow it). */
    if (ud_registry_acquire(f->r->registry, f->ns, &ns) != 0)
        return f->acked_lsn;
    uint64_t durable = ud_ns_durable_lsn(ns);
    ud_registry_release(f->r->registry, ns);
    return durable < applied ? durable : applied;
}

static void drop_transfer(struct ud_follower *f)
{
    ud_http_transfer_cancel(f->xfer);
    f->xfer = NULL;
    ud_stream_parser_free(f->parser);
    f->parser = NULL;
    f->paused = 0;
}

static void backoff_cb(uv_timer_t *t);
static void maybe_ack(struct ud_follower *f);

/* Bootstraps of a newer namespace tried from the upstream that showed it before the next one is
 * asked: a download cut half-way is tried again there, but an upstream whose snapshot and stream
 * keep disagreeing (several servers behind one address, or a proxy dropping a header) is left. */
#define STAY_ATTEMPTS 3

/* The upstream showed a newer namespace of the name: it is bootstrapped from there (go_backoff).
 * failed: it showed it by failing a bootstrap (a refused install, a bootstrap stream of another
 * namespace), which counts as the first of STAY_ATTEMPTS; a stream that made the copy go did not.
 * Showing it again while staying does not start the count over. */
static void stay_with_upstream(struct ud_follower *f, int failed)
{
    if (f->stay_upstream)
        return;
    f->stay_upstream = 1;
    f->stay_failures = failed ? 0 : -1;
}

/* Any failure: drop the connection, move to the next upstream (unless the current one showed a
 * newer namespace of the name: stay_upstream) and wait before trying again. */
static void go_backoff(struct ud_follower *f, const char *why)
{
    if (f->state == UD_FOLLOWER_STOPPED || f->state == UD_FOLLOWER_BACKOFF)
        return;
    if (f->stay_upstream && ++f->stay_failures >= STAY_ATTEMPTS)
        f->stay_upstream = 0;
    int stay = f->stay_upstream;
    drop_transfer(f);
    if (f->stream_bootstrap)
        f->bootstrap_wanted = 1; /* a half-done bootstrap starts over */
    f->stream_bootstrap = 0;
    f->streak_caught_up_ms = 0;
    snprintf(f->last_error, sizeof f->last_error, "%s", why);
    f->fails++;
    f->reconnects++;
    /* A copy that keeps failing, or keeps failing to install (a disk whose fsync keeps failing),
     * would otherwise be downloaded and installed again every 100 ms: its bootstrap's own stream
     * resets fails. */
    uint32_t n = f->fails > f->copy_failures ? f->fails : f->copy_failures;
    uint64_t delay = BACKOFF_BASE_MS;
    for (uint32_t i = 1; i < n && delay < f->r->config->backoff_max_ms; i++)
        delay *= 2;
    if (delay > f->r->config->backoff_max_ms)
        delay = f->r->config->backoff_max_ms;
    /* Jitter: up to half of the delay, so that relayers cut off together do not return in step. */
    uint32_t rnd = 0;
    if (getrandom(&rnd, sizeof rnd, GRND_NONBLOCK) != sizeof rnd)
        rnd = (uint32_t)ud_mono_ns();
    delay -= (delay / 2) * (rnd % 1000) / 1000;
    if (f->nupstreams > 1 && !stay)
        f->cur = (f->cur + 1) % f->nupstreams;
    ud_warn(LOG, "namespace %s: %s; retrying in %" PRIu64 " ms with %s", f->ns, why, delay,
            upstream(f));
    set_state(f, UD_FOLLOWER_BACKOFF);
    uv_timer_start(&f->backoff, backoff_cb, delay, 0);
}

static void backoff_cb(uv_timer_t *t)
{
    struct ud_follower *f = t->data;
    if (f->state != UD_FOLLOWER_BACKOFF)
        return;
    /* Resume only from what the apply thread has really taken: wait until it is idle. */
    pthread_mutex_lock(&f->mu);
    int idle = !f->busy && f->head == NULL;
    if (idle)
        f->fail_pending = 0;
    pthread_mutex_unlock(&f->mu);
    if (!idle) {
        uv_timer_start(&f->backoff, backoff_cb, 20, 0);
        return;
    }
    set_state(f, UD_FOLLOWER_CONNECTING);
    start_connect(f);
}

/* --- the WAL stream -------------------------------------------------------------------------- */

/* Bytes of an error body worth quoting: at most 200, without the trailing newline. */
static int body_quote_len(const struct ud_http_result *res)
{
    size_t n = res->body != NULL ? res->body_len : 0;
    if (n > 200)
        n = 200;
    while (n > 0 && (res->body[n - 1] == '\n' || res->body[n - 1] == '\r'))
        n--;
    return (int)n;
}

static void build_url(struct ud_follower *f, char *url, size_t size, const char *suffix)
{
    snprintf(url, size, "%s/api/v1/%s%s", upstream(f), f->ns, suffix);
}

/* A copy bootstrapped after failures counts as healthy once it ran backoff_max_ms since its
 * install and either applied past the LSN the failed one could not or stayed caught up for
 * backoff_max_ms (an idle namespace never reaches that LSN: the failed copy's next one): the
 * failed-copy backoff starts over. */
static void note_copy_healthy(struct ud_follower *f)
{
    uint64_t now = now_ms(f), max = f->r->config->backoff_max_ms;
    int streaming = f->state == UD_FOLLOWER_STREAMING && !f->stream_bootstrap;
    uint64_t applied = applied_lsn(f);
    if (!streaming || applied < f->upstream_last_lsn)
        f->streak_caught_up_ms = 0;
    else if (f->streak_caught_up_ms == 0)
        f->streak_caught_up_ms = now > 0 ? now : 1;
    if (f->copy_failures == 0 || !streaming || now - f->installed_ms < max)
        return;
    if (applied >= f->copy_failed_lsn ||
        (f->streak_caught_up_ms != 0 && now - f->streak_caught_up_ms >= max))
        f->copy_failures = 0;
}

static void note_caught_up(struct ud_follower *f)
{
    if (applied_lsn(f) >= f->upstream_last_lsn)
        f->caught_up_ms = now_ms(f);
}

/* A decimal response header into *out: 1 when there is one, 0 (and *out 0) when it is absent or
 * not a number (a sign, junk: "-1" must not read as a huge incarnation). */
static int header_said_u64(struct ud_http_transfer *t, const char *name, uint64_t *out)
{
    char v[32];
    *out = 0;
    /* ud_http_parse_length writes *out only when the value parses. */
    return ud_http_transfer_header(t, name, v, sizeof v) && ud_http_parse_length(v, out);
}

/* A decimal response header as a number; 0 when absent or not a number. */
static uint64_t header_u64(struct ud_http_transfer *t, const char *name)
{
    uint64_t v;
    header_said_u64(t, name, &v);
    return v;
}

/* A 404's "deleted" headers: x-unison-ns-deleted: 1 and the delete's raft index
 * (x-unison-ns-deleted-at; an older writer does not send it: UD_DELETED_AT_UNKNOWN). */
static void read_deleted(struct ud_follower *f)
{
    char v[32];
    f->told_deleted = 0;
    if (!ud_http_transfer_header(f->xfer, "x-unison-ns-deleted", v, sizeof v) ||
        strcmp(v, "1") != 0)
        return;
    uint64_t at = header_u64(f->xfer, "x-unison-ns-deleted-at");
    f->told_deleted = at != 0 ? at : UD_DELETED_AT_UNKNOWN;
}

/*
 * A copy without an incarnation against an upstream that says inc: a copy taken from a writer of
 * an earlier version, whose store the upgraded writers stamped from its create marker, may be of
 * the same namespace when its newest record is newer than that create. 1: it may (f->undecided
 * holds the verdict until the stream's first record, continue_unstamped). 0: an earlier namespace,
 * or no record to tell: the copy is another namespace's.
 */
static int maybe_unstamped_copy(struct ud_follower *f, uint64_t inc)
{
    struct ud_ns *ns;
    if (ud_registry_acquire(f->r->registry, f->ns, &ns) != 0)
        return 0;
    uint64_t newest;
    uint32_t pos;
    ud_ns_last_raft_position(ns, &newest, &pos);
    ud_registry_release(f->r->registry, ns);
    if (!ud_incarnation_copy_is_of(inc, newest))
        return 0;
    f->undecided = inc;
    f->undecided_newest = newest;
    return 1;
}

/* The raft index in a streamed record's header (0 when the record is too short to hold one: not
 * continued). */
static uint64_t streamed_raft_index(const struct ud_stream_record *rec)
{
    return rec->len >= UD_RECORD_HEADER_SIZE ? ud_record_get_raft_index(rec->data) : 0;
}

/*
 * The verdict maybe_unstamped_copy left for the stream's first record: a record at the copy's
 * next LSN not older than its newest continues the same raft log's namespace, which is stamped
 * durably (as the writers' stores are) and continued: 0. A record older than that is of a new raft
 * log (a cluster rebuilt from backups): the copy is another namespace's, dropped by stream_done
 * (incarnation_changed). UD_ECLOSED ends the stream: the drop, or a failed stamp (the copy is
 * kept and the stream tried again); stream_error says why.
 */
static int continue_unstamped(struct ud_follower *f, const struct ud_stream_record *rec)
{
    uint64_t inc = f->undecided, newest = f->undecided_newest;
    uint64_t first = streamed_raft_index(rec);
    f->undecided = 0;
    if (!ud_incarnation_copy_continues(inc, newest, first)) {
        f->incarnation_changed = inc;
        snprintf(f->stream_error, sizeof f->stream_error,
                 "%s has another namespace %s (incarnation %" PRIu64 "; its record at LSN %" PRIu64
                 " is of raft index %" PRIu64 ", older than this copy's newest %" PRIu64
                 ": another raft log)",
                 upstream(f), f->ns, inc, rec->lsn, first, newest);
        return UD_ECLOSED;
    }
    struct ud_ns *ns;
    char why[UD_ERRMSG_SIZE];
    if (ud_registry_acquire(f->r->registry, f->ns, &ns) != 0) {
        snprintf(f->stream_error, sizeof f->stream_error,
                 "namespace %s: the local copy to stamp with incarnation %" PRIu64 " is gone",
                 f->ns, inc);
        return UD_ECLOSED;
    }
    int rc = ud_ns_stamp_incarnation(ns, inc, why);
    ud_registry_release(f->r->registry, ns);
    if (rc != 0) {
        snprintf(f->stream_error, sizeof f->stream_error,
                 "namespace %s: stamp incarnation %" PRIu64 " of %s on the local copy: %s", f->ns,
                 inc, upstream(f), why);
        return UD_ECLOSED; /* not UD_EIO: stream_done names stream_error, not the abort */
    }
    ud_info(LOG,
            "namespace %s: incarnation %" PRIu64 " from %s; the local copy had none, its newest "
            "record (raft index %" PRIu64 ") is of it and the next (%" PRIu64
            ") continues it: kept and stamped",
            f->ns, inc, upstream(f), newest, first);
    f->incarnation = inc;
    return 0;
}

static int stream_headers(void *arg, long status)
{
    struct ud_follower *f = arg;
    char v[32];
    if (status == 404) {
        read_deleted(f);
        return 0; /* the error body reaches stream_done */
    }
    if (status != 200)
        return 0;
    if (ud_http_transfer_header(f->xfer, "x-unison-stream-version", v, sizeof v) &&
        strcmp(v, "1") != 0) {
        snprintf(f->stream_error, sizeof f->stream_error,
                 "upstream %s streams format version %s; this relayer reads version %d",
                 upstream(f), v, UD_STREAM_VERSION);
        return 1;
    }
    uint64_t inc;
    int said = header_said_u64(f->xfer, "x-unison-ns-incarnation", &inc);
    /* A bootstrap's stream continues the snapshot, not the local copy. */
    uint64_t *mine = f->stream_bootstrap ? &f->boot_incarnation : &f->incarnation;
    if (f->stream_bootstrap && !f->boot_incarnation_said)
        *mine = inc; /* a snapshot without one (an upstream of an earlier version) */
    switch (ud_incarnation_vs_stream(*mine, said, inc)) {
    case UD_INCARNATION_SAME:
        if (f->stream_bootstrap && inc != 0) {
            /* The install checks the snapshot's store against it: one taken without the header
             * may be of an earlier namespace than the records this stream adds to it. */
            pthread_mutex_lock(&f->mu);
            f->boot_stream_incarnation = inc;
            pthread_mutex_unlock(&f->mu);
        }
        break;
    case UD_INCARNATION_NEWER:
        if (!f->stream_bootstrap && *mine == 0 && maybe_unstamped_copy(f, inc))
            break; /* decided at the first record */
        /* The name was deleted and created again upstream while this follower was not
         * listening: the LSNs resumed from are another namespace's (stream_done). */
        f->incarnation_changed = inc;
        snprintf(f->stream_error, sizeof f->stream_error,
                 "%s has another namespace %s (incarnation %" PRIu64 ", this copy's %" PRIu64
                 "): it was deleted and created again",
                 upstream(f), f->ns, inc, *mine);
        return 1;
    case UD_INCARNATION_BEHIND:
        /* Not this copy's namespace yet, as a plain 404: keep the copy, try the next one. */
        snprintf(f->stream_error, sizeof f->stream_error,
                 "%s has an earlier namespace %s (incarnation %" PRIu64 ", this copy's %" PRIu64
                 "): it has not applied the copy's create yet",
                 upstream(f), f->ns, inc, *mine);
        return 1;
    }
    f->last_byte_ms = now_ms(f);
    if (f->state == UD_FOLLOWER_CONNECTING)
        set_state(f, UD_FOLLOWER_STREAMING);
    return 0;
}

/* Backpressure for the stream and the snapshot download: 1 while apply_queue_bytes wait for the
 * apply thread (the transfer is paused; EV_DRAINED resumes it). */
static int apply_queue_full(struct ud_follower *f)
{
    if (f->paused)
        return 1;
    pthread_mutex_lock(&f->mu);
    size_t queued = f->queued_bytes;
    pthread_mutex_unlock(&f->mu);
    if (queued >= f->r->config->apply_queue_bytes) {
        f->paused = 1;
        f->paused_ms = now_ms(f);
        f->paused_lsn = applied_lsn(f);
    }
    return f->paused;
}

/* A pause in which the apply thread still applies (admission holds it during a large flush, the
 * queue stays above the resume mark) is progress, not a stall: its clock starts over. */
static void note_pause_progress(struct ud_follower *f)
{
    if (!f->paused)
        return;
    uint64_t applied = applied_lsn(f);
    if (applied != f->paused_lsn) {
        f->paused_lsn = applied;
        f->paused_ms = now_ms(f);
    }
}

static int stream_data(void *arg, const void *data, size_t len)
{
    struct ud_follower *f = arg;
    if (apply_queue_full(f))
        return UD_HTTP_PAUSE;
    f->last_byte_ms = now_ms(f);
    f->bytes += len;
    if (ud_stream_parser_feed(f->parser, data, len) != 0) {
        snprintf(f->stream_error, sizeof f->stream_error, "out of memory buffering the stream");
        return UD_ENOMEM;
    }
    for (;;) {
        enum ud_stream_event ev;
        struct ud_stream_record rec;
        struct ud_stream_heartbeat hb;
        char errmsg[UD_ERRMSG_SIZE] = "";
        int rc = ud_stream_parser_next(f->parser, &ev, &rec, &hb, errmsg);
        if (rc != 0) {
            /* Nothing of the bad frame was handed out: drop the connection, resume by LSN. */
            snprintf(f->stream_error, sizeof f->stream_error, "stream from %s rejected: %s",
                     upstream(f), errmsg);
            return rc;
        }
        if (ev == UD_STREAM_NEED_MORE)
            break;
        if (ev == UD_STREAM_EV_HEARTBEAT) {
            f->heartbeats++;
            f->upstream_last_lsn = hb.last_lsn;
            f->upstream_first_lsn = hb.first_lsn;
            f->upstream_time_ns = hb.time_ns;
            f->fails = 0; /* the upstream is alive and talking to us */
            continue;
        }
        if (f->undecided != 0) {
            int decided = continue_unstamped(f, &rec);
            if (decided != 0)
                return decided;
        }
        f->records++;
        f->fails = 0;
        if (rec.lsn > f->upstream_last_lsn)
            f->upstream_last_lsn = rec.lsn;
        ud_follower_apply_record(f, rec.data, rec.len, rec.lsn);
    }
    return 0;
}

/*
 * The upstream answered "namespace not found". That alone proves nothing: a writer that has not
 * applied the namespace's create yet (a raft follower behind, one catching up, which replaces its
 * namespaces one by one) answers it too, and so does a relayer that is (re)bootstrapping. Dropping
 * the copy then would answer 404 here until a full bootstrap, and could split the subtree below.
 * Only a 404 with x-unison-ns-deleted: 1 drops it: a writer sends it once it has applied the
 * delete (its raft tombstone of the name is newer than its create), a relayer once it dropped its
 * own copy for that reason. Then the copy must go, or a namespace created again under the name
 * (LSNs from 1) would be continued on top of it.
 */
static void upstream_lacks_ns(struct ud_follower *f)
{
    pthread_mutex_lock(&f->mu);
    int has_ns = f->has_ns;
    pthread_mutex_unlock(&f->mu);
    if (!has_ns)
        return;
    if (!f->told_deleted) {
        ud_info(LOG, "namespace %s: %s does not have it (yet); keeping the local copy", f->ns,
                upstream(f));
        return;
    }
    if (ud_incarnation_vs_deleted(f->incarnation, f->told_deleted) != UD_INCARNATION_NEWER) {
        ud_info(LOG,
                "namespace %s: %s deleted an earlier namespace of the name (at raft index %" PRIu64
                ", this copy's create %" PRIu64 "): keeping the local copy",
                f->ns, upstream(f), f->told_deleted, f->incarnation);
        return;
    }
    ud_warn(LOG,
            "namespace %s: %s deleted it: deleting the local copy (a namespace created again "
            "under this name is bootstrapped)",
            f->ns, upstream(f));
    f->upstream_deleted = f->told_deleted;
    ud_follower_apply_drop(f);
}

uint64_t ud_follower_upstream_deleted(const struct ud_follower *f)
{
    return f->upstream_deleted;
}

static void start_snapshot(struct ud_follower *f);

static void stream_done(void *arg, const struct ud_http_result *res)
{
    struct ud_follower *f = arg;
    f->xfer = NULL;
    ud_stream_parser_free(f->parser);
    f->parser = NULL;
    f->paused = 0;
    if (f->state == UD_FOLLOWER_STOPPED)
        return;
    char why[UD_ERRMSG_SIZE + 300];
    if (res->rc == 0 && res->status == 410) {
        ud_info(LOG, "namespace %s: %s no longer retains LSN %llu: bootstrapping from its snapshot",
                f->ns, upstream(f), (unsigned long long)applied_lsn(f) + 1);
        drop_transfer(f);
        f->bootstrap_wanted = 1;
        if (f->state == UD_FOLLOWER_CONNECTING) {
            set_state(f, UD_FOLLOWER_BOOTSTRAPPING);
            start_snapshot(f);
        } else {
            go_backoff(f, "the upstream's WAL moved past this bootstrap's start");
        }
        return;
    }
    if (res->rc == 0 && res->status == 404 && res->body != NULL &&
        memmem(res->body, res->body_len, "namespace not found", 19) != NULL)
        upstream_lacks_ns(f); /* before go_backoff moves on to the next upstream */
    /* This upstream has applied a newer create of the name than the copy (or the snapshot) is of:
     * the next bootstrap is from it, not from the next upstream, which may lag behind with the
     * deleted namespace (or one without an incarnation) and be bootstrapped again, in a cycle. */
    if (f->incarnation_changed) {
        stay_with_upstream(f, f->stream_bootstrap);
        if (f->stream_bootstrap) {
            /* A bootstrap whose stream is of a newer namespace than its snapshot is a copy that
             * failed: an upstream that keeps answering that way is asked less and less often. */
            f->copy_failures++;
        } else {
            /* As for a deleted namespace: the copy goes (and our downstream drops theirs), the
             * next connection bootstraps the new one. A bootstrap's stream starts over
             * (go_backoff). */
            ud_warn(LOG, "namespace %s: %s: deleting the local copy", f->ns, f->stream_error);
            f->upstream_deleted = f->incarnation_changed; /* deleted before that create */
            ud_follower_apply_drop(f);
        }
    }
    if (res->rc != 0) {
        /* Our own rejection (a bad frame) names the cause better than the client's message. */
        snprintf(why, sizeof why, "%s",
                 res->rc != UD_EIO && res->rc != UD_ETIMEDOUT && f->stream_error[0] != '\0'
                     ? f->stream_error
                     : res->errmsg);
    } else if (res->status != 200) {
        snprintf(why, sizeof why, "GET %s/api/v1/%s/wal/stream: status %ld: %.*s", upstream(f),
                 f->ns, res->status, body_quote_len(res),
                 res->body != NULL ? (const char *)res->body : "");
    } else {
        snprintf(why, sizeof why, "%s ended the stream of %s", upstream(f), f->ns);
    }
    go_backoff(f, why);
}

static void start_stream(struct ud_follower *f, uint64_t from, int for_bootstrap)
{
    char url[UD_RELAYER_URL_MAX + 200], errmsg[UD_ERRMSG_SIZE];
    char suffix[64];
    snprintf(suffix, sizeof suffix, "/wal/stream?from=%llu", (unsigned long long)from);
    build_url(f, url, sizeof url, suffix);
    f->parser = ud_stream_parser_new(from);
    if (f->parser == NULL) {
        go_backoff(f, "out of memory starting a stream");
        return;
    }
    f->stream_bootstrap = for_bootstrap;
    f->told_deleted = 0;
    f->incarnation_changed = 0;
    f->undecided = 0;
    f->stream_error[0] = '\0';
    struct ud_http_request req = {.url = url,
                                  .ca_file = f->r->config->tls_ca,
                                  .on_headers = stream_headers,
                                  .on_data = stream_data,
                                  .on_done = stream_done,
                                  .arg = f};
    f->last_byte_ms = now_ms(f);
    int rc = ud_http_client_start(f->r->client, &req, &f->xfer, errmsg);
    if (rc != 0)
        go_backoff(f, errmsg);
    else
        ud_debug(LOG, "namespace %s: streaming from %s at LSN %llu", f->ns, upstream(f),
                 (unsigned long long)from);
}

/* --- bootstrap ------------------------------------------------------------------------------- */

static void snapshot_done(void *arg, const struct ud_http_result *res)
{
    struct ud_follower *f = arg;
    f->xfer = NULL;
    if (f->state == UD_FOLLOWER_STOPPED)
        return;
    char why[UD_ERRMSG_SIZE + 300];
    if (res->rc != 0) {
        snprintf(why, sizeof why, "snapshot download: %s",
                 f->stream_error[0] != '\0' ? f->stream_error : res->errmsg);
        ud_follower_apply_snapshot_abort(f);
        go_backoff(f, why);
        return;
    }
    if (res->status == 404 && res->body != NULL &&
        memmem(res->body, res->body_len, "namespace not found", 19) != NULL)
        upstream_lacks_ns(f); /* a copy kept while bootstrapping goes, as on the stream */
    if (res->status != 200) {
        snprintf(why, sizeof why, "GET %s/api/v1/%s/snapshot: status %ld: %.*s", upstream(f), f->ns,
                 res->status, body_quote_len(res),
                 res->body != NULL ? (const char *)res->body : "");
        ud_follower_apply_snapshot_abort(f);
        go_backoff(f, why);
        return;
    }
    ud_info(LOG, "namespace %s: snapshot of %" PRIu64 " bytes from %s; installing", f->ns,
            res->bytes, upstream(f));
    /* The apply thread, once it has written the last piece, installs it and reports
     * EV_BOOTSTRAP_BEGUN with the LSN to stream from. */
    ud_follower_apply_bootstrap(f, f->snapshot_path);
}

/* The snapshot's incarnation is the one of the copy being bootstrapped: its stream must be of
 * the same namespace (stream_headers). A snapshot of a namespace older than what this relayer
 * had is refused as an upstream behind (the next upstream is tried): after a drop, one created
 * before the delete is the deleted one; while the copy is kept (a 410, a failed copy), one
 * created before the copy's is an earlier namespace of the name, which would replace it. */
static int snapshot_headers(void *arg, long status)
{
    struct ud_follower *f = arg;
    if (status == 404)
        read_deleted(f); /* snapshot_done */
    if (status != 200)
        return 0;
    uint64_t inc;
    int said = header_said_u64(f->xfer, "x-unison-ns-incarnation", &inc);
    uint64_t deleted = f->upstream_deleted;
    if (said && deleted != 0 && deleted != UD_DELETED_AT_UNKNOWN &&
        ud_incarnation_vs_deleted(inc, deleted) == UD_INCARNATION_NEWER) {
        snprintf(f->stream_error, sizeof f->stream_error,
                 "%s still has namespace %s of incarnation %" PRIu64
                 ", deleted at raft index %" PRIu64,
                 upstream(f), f->ns, inc, deleted);
        return 1;
    }
    pthread_mutex_lock(&f->mu);
    int has_ns = f->has_ns;
    pthread_mutex_unlock(&f->mu);
    if (has_ns && ud_incarnation_vs_stream(f->incarnation, said, inc) == UD_INCARNATION_BEHIND) {
        snprintf(f->stream_error, sizeof f->stream_error,
                 "%s has an earlier namespace %s (snapshot incarnation %" PRIu64
                 ", this copy's %" PRIu64 "): it has not applied the copy's create yet",
                 upstream(f), f->ns, inc, f->incarnation);
        return 1;
    }
    f->boot_incarnation = inc;
    f->boot_incarnation_said = said;
    return 0;
}

/* A piece of the snapshot: queued for the apply thread, which writes it to the file. The
 * download pauses while apply_queue_bytes are queued and resumes on EV_DRAINED, as the stream. */
static int snapshot_data(void *arg, const void *data, size_t len)
{
    struct ud_follower *f = arg;
    if (apply_queue_full(f))
        return UD_HTTP_PAUSE;
    f->last_byte_ms = now_ms(f);
    ud_follower_apply_snapshot_data(f, data, len);
    return 0;
}

static void start_snapshot(struct ud_follower *f)
{
    char url[UD_RELAYER_URL_MAX + 200], errmsg[UD_ERRMSG_SIZE];
    build_url(f, url, sizeof url, "/snapshot");
    snprintf(f->snapshot_path, sizeof f->snapshot_path, "%s/.snapshot-%s", f->r->ns_root, f->ns);
    f->bootstraps++;
    f->told_deleted = 0;
    f->boot_incarnation = 0;
    f->boot_incarnation_said = 0;
    pthread_mutex_lock(&f->mu);
    f->boot_stream_incarnation = 0;
    pthread_mutex_unlock(&f->mu);
    f->stream_error[0] = '\0';
    uint32_t idle_s = (f->r->config->heartbeat_timeout_ms + 999) / 1000;
    ud_follower_apply_snapshot_open(f, f->snapshot_path);
    struct ud_http_request req = {.url = url,
                                  .on_headers = snapshot_headers,
                                  .on_data = snapshot_data,
                                  .ca_file = f->r->config->tls_ca,
                                  .low_speed_time_s = idle_s,
                                  .low_speed_bytes = 1,
                                  .on_done = snapshot_done,
                                  .arg = f};
    int rc = ud_http_client_start(f->r->client, &req, &f->xfer, errmsg);
    if (rc != 0) {
        ud_follower_apply_snapshot_abort(f);
        go_backoff(f, errmsg);
    }
}

static void start_connect(struct ud_follower *f)
{
    UD_ASSERT(f->state == UD_FOLLOWER_CONNECTING);
    pthread_mutex_lock(&f->mu);
    int has_ns = f->has_ns;
    uint64_t next = f->next_lsn;
    pthread_mutex_unlock(&f->mu);
    if (!has_ns || f->bootstrap_wanted) {
        set_state(f, UD_FOLLOWER_BOOTSTRAPPING);
        start_snapshot(f);
        return;
    }
    start_stream(f, next, 0);
}

/* --- events from the apply thread ------------------------------------------------------------ */

static void wake_cb(uv_async_t *a)
{
    struct ud_follower *f = a->data;
    pthread_mutex_lock(&f->mu);
    unsigned ev = f->events;
    f->events = 0;
    uint64_t from = f->boot_from;
    size_t queued = f->queued_bytes;
    char fail_msg[UD_ERRMSG_SIZE];
    snprintf(fail_msg, sizeof fail_msg, "%s", f->fail_msg);
    pthread_mutex_unlock(&f->mu);
    if (f->state == UD_FOLLOWER_STOPPED)
        return;
    if (ev & EV_REPLACING) {
        /* Ends LOB downloads and our downstream's streams of the old copy (apply.c waits). */
        ud_http_server_ns_closing(f->r->http, f->ns);
        f->replaced = 1;
        pthread_mutex_lock(&f->mu);
        f->replace_ok = 1;
        pthread_cond_broadcast(&f->cv);
        pthread_mutex_unlock(&f->mu);
    }
    if ((ev & (EV_BOOTSTRAP_INSTALLED | EV_FAILED | EV_DROPPED)) && f->replaced) {
        if (f->r->http != NULL)
            ud_http_server_ns_closed(f->r->http, f->ns);
        f->replaced = 0;
    }
    if (ev & EV_NS_FAILED)
        f->bootstrap_wanted = 1; /* the failed copy is replaced, not resumed */
    /* A refused install counts as a failed copy: the backoff grows while an upstream's snapshot
     * and stream keep disagreeing, instead of a full download every 100 ms. */
    if (ev & (EV_NS_FAILED | EV_COPY_FAILED | EV_BOOT_OTHER_NS)) {
        f->copy_failures++;
        f->copy_failed_lsn = applied_lsn(f) + 1;
    }
    if (ev & EV_BOOT_OTHER_NS)
        stay_with_upstream(f, 1); /* its stream is of the newer namespace: bootstrap that from it */
    if (ev & EV_FAILED) {
        /* Already in backoff (records queued before the stream dropped failed to apply): say
         * so, since go_backoff keeps the earlier reason. */
        if (f->state == UD_FOLLOWER_BACKOFF) {
            ud_error(LOG, "namespace %s: %s", f->ns, fail_msg);
            snprintf(f->last_error, sizeof f->last_error, "%s", fail_msg);
        }
        go_backoff(f, fail_msg);
        return;
    }
    if ((ev & EV_BOOTSTRAP_BEGUN) && f->state == UD_FOLLOWER_BOOTSTRAPPING && f->xfer == NULL) {
        f->bootstrap_wanted = 0;
        start_stream(f, from, !(ev & EV_BOOTSTRAP_INSTALLED));
        if (f->state != UD_FOLLOWER_BOOTSTRAPPING)
            return;
    }
    if (ev & EV_BOOTSTRAP_INSTALLED) {
        f->upstream_deleted = 0;
        f->stay_upstream = 0; /* the newer namespace is here */
        f->installed_ms = now_ms(f);
        /* What the installed copy says, not the snapshot's header (which an upstream of an
         * older version, or one whose copy has none, leaves out): the store's meta holds it. */
        pthread_mutex_lock(&f->mu);
        f->incarnation = f->installed_incarnation;
        pthread_mutex_unlock(&f->mu);
    }
    if ((ev & EV_BOOTSTRAP_INSTALLED) && f->state == UD_FOLLOWER_BOOTSTRAPPING) {
        f->stream_bootstrap = 0;
        set_state(f, UD_FOLLOWER_STREAMING);
    }
    if ((ev & EV_DRAINED) && f->paused && queued <= f->r->config->apply_queue_bytes / 4) {
        f->paused = 0;
        f->last_byte_ms = now_ms(f);
        ud_http_transfer_resume(f->xfer);
    }
    note_caught_up(f);
    note_copy_healthy(f);
    if (ev & EV_DRAINED)
        maybe_ack(f);
}

/* --- heartbeat watch and acks ---------------------------------------------------------------- */

static void ack_done(void *arg, const struct ud_http_result *res)
{
    struct ud_follower *f = arg;
    f->ack_xfer = NULL;
    if (res->rc != 0 || res->status != 200)
        ud_debug(LOG, "namespace %s: ack to %s: %s (status %ld)", f->ns, upstream(f),
                 res->rc ? res->errmsg : "refused", res->status);
    else if (f->state != UD_FOLLOWER_STOPPED)
        maybe_ack(f); /* what was applied while this ack was on its way */
}

/* applied: ackable_lsn(f), which the caller has just read. */
static void send_ack(struct ud_follower *f, uint64_t applied)
{
    char url[UD_RELAYER_URL_MAX + 200], body[512], errmsg[UD_ERRMSG_SIZE];
    build_url(f, url, sizeof url, "/wal/ack");
    /* The lowest applied LSN of this relayer's subtree, from the acks of its own followers
     * (so a writer's /status/replicas sees the whole tree). */
    uint64_t subtree = ud_http_subtree_min_lsn(f->r->http, f->ns, applied);
    /* Where this relayer serves, for the upstream's /status/replicas: the listen address with
     * the bound port. */
    const char *listen = f->r->config->http_listen;
    const char *colon = strrchr(listen, ':');
    int hostlen = colon != NULL ? (int)(colon - listen) : (int)strlen(listen);
    snprintf(body, sizeof body,
             "{\"id\":\"%s\",\"applied_lsn\":%llu,\"subtree_min_lsn\":%llu,"
             "\"address\":\"http://%.*s:%d\"}",
             f->r->config->id, (unsigned long long)applied, (unsigned long long)subtree, hostlen,
             listen, f->r->http_port);
    struct ud_http_request req = {.url = url,
                                  .method = UD_HTTP_CLIENT_POST,
                                  .body = body,
                                  .body_len = strlen(body),
                                  .timeout_ms = 2000,
                                  .ca_file = f->r->config->tls_ca,
                                  .on_done = ack_done,
                                  .arg = f};
    if (ud_http_client_start(f->r->client, &req, &f->ack_xfer, errmsg) == 0) {
        f->acks_sent++;
        f->acked_lsn = applied;
        f->last_ack_ms = now_ms(f);
    }
}

static void ack_timer_cb(uv_timer_t *t)
{
    maybe_ack(t->data);
}

/*
 * Acks are prompt: a writer's `?acks=isr` waits for them (docs/replication.md). Whenever the
 * applied LSN moved past the last ack and no ack is on its way, one goes out, but no sooner than
 * ack_min_interval_ms after the previous one (the timer sends it then), so a busy stream costs the
 * upstream a bounded number of ack requests. Without progress an ack still goes out every
 * ack_interval_ms, to stay in the upstream's follower table.
 */
static void maybe_ack(struct ud_follower *f)
{
    if (f->state != UD_FOLLOWER_STREAMING || f->ack_xfer != NULL)
        return;
    /* A copy still undecided (f->undecided) may be of another raft log: acking its LSNs would let
     * the upstream count it in sync for LSNs it holds other records at (`acks=isr`, min_lsn). It
     * acks once the first record decided it, and is out of the upstream's table until then. */
    if (f->undecided != 0)
        return;
    uint64_t now = now_ms(f);
    uint64_t since = now - f->last_ack_ms;
    uint64_t ackable = ackable_lsn(f);
    if (ackable > f->acked_lsn) {
        uint64_t min = f->r->config->ack_min_interval_ms;
        if (since >= min)
            send_ack(f, ackable);
        else if (!uv_is_active((uv_handle_t *)&f->ack_timer))
            uv_timer_start(&f->ack_timer, ack_timer_cb, min - since, 0);
    } else if (since >= f->r->config->ack_interval_ms) {
        send_ack(f, ackable);
    }
}

static void tick_cb(uv_timer_t *t)
{
    struct ud_follower *f = t->data;
    uint64_t now = now_ms(f);
    int streaming = f->parser != NULL && f->xfer != NULL;
    if (streaming && !f->paused && now - f->last_byte_ms > f->r->config->heartbeat_timeout_ms) {
        char why[UD_ERRMSG_SIZE];
        snprintf(why, sizeof why, "no data from %s for %" PRIu64 " ms (heartbeats missing)",
                 upstream(f), now - f->last_byte_ms);
        go_backoff(f, why);
        return;
    }
    note_caught_up(f);
    note_copy_healthy(f);
    note_pause_progress(f);
    maybe_ack(f);
}

/* --- lifecycle ------------------------------------------------------------------------------- */

int ud_relayer_follow(struct ud_relayer *r, const char *ns, char *const *upstreams, size_t n,
                      char *errmsg)
{
    if (ud_relayer_follower(r, ns) != NULL)
        return ud_errf(errmsg, UD_EEXIST, "namespace %s is already followed", ns);
    if (n == 0)
        return ud_errf(errmsg, UD_EINVAL, "namespace %s: no upstream", ns);
    if (r->nfollowers == r->cap_followers) {
        size_t cap = r->cap_followers ? r->cap_followers * 2 : 8;
        struct ud_follower **p = realloc(r->followers, cap * sizeof *p);
        if (p == NULL)
            return ud_errf(errmsg, UD_ENOMEM, "out of memory following %s", ns);
        r->followers = p;
        r->cap_followers = cap;
    }
    struct ud_follower *f = calloc(1, sizeof *f);
    if (f == NULL)
        return ud_errf(errmsg, UD_ENOMEM, "out of memory following %s", ns);
    f->r = r;
    snprintf(f->ns, sizeof f->ns, "%s", ns);
    for (size_t i = 0; i < n && i < UD_RELAYER_MAX_UPSTREAMS; i++)
        snprintf(f->upstreams[i], sizeof f->upstreams[i], "%s", upstreams[i]);
    f->nupstreams = (unsigned)(n < UD_RELAYER_MAX_UPSTREAMS ? n : UD_RELAYER_MAX_UPSTREAMS);
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->cv, NULL);
    /* Resume from our own last LSN, or bootstrap when the namespace is not here yet. */
    struct ud_ns *ns_ref = NULL;
    if (ud_registry_acquire(r->registry, ns, &ns_ref) == 0) {
        struct ud_ns_stats st;
        ud_ns_stats(ns_ref, &st);
        f->nsp = ns_ref;
        f->has_ns = 1;
        f->incarnation = ud_ns_incarnation(ns_ref);
        f->next_lsn = st.last_lsn + 1;
    }
    int rc = ud_follower_apply_start(f, errmsg);
    if (rc != 0) {
        if (ns_ref != NULL)
            ud_registry_release(r->registry, ns_ref);
        pthread_mutex_destroy(&f->mu);
        pthread_cond_destroy(&f->cv);
        free(f);
        return rc;
    }
    uv_timer_init(r->loop, &f->tick);
    uv_timer_init(r->loop, &f->backoff);
    uv_timer_init(r->loop, &f->ack_timer);
    uv_async_init(r->loop, &f->wake, wake_cb);
    f->tick.data = f->backoff.data = f->ack_timer.data = f->wake.data = f;
    f->handles_open = 4;
    r->followers[r->nfollowers++] = f;
    f->caught_up_ms = now_ms(f);
    ud_info(LOG, "namespace %s: following %s%s (%s)", ns, upstreams[0], n > 1 ? " and others" : "",
            f->has_ns ? "resuming" : "bootstrapping");
    uv_timer_start(&f->tick, tick_cb, TICK_MS, TICK_MS);
    f->state = UD_FOLLOWER_CONNECTING;
    start_connect(f);
    return 0;
}

struct ud_follower *ud_relayer_follower(struct ud_relayer *r, const char *ns)
{
    for (size_t i = 0; i < r->nfollowers; i++)
        if (strcmp(r->followers[i]->ns, ns) == 0)
            return r->followers[i];
    return NULL;
}

const char *ud_relayer_upstream_for(struct ud_relayer *r, const char *ns)
{
    struct ud_follower *f = ns != NULL ? ud_relayer_follower(r, ns) : NULL;
    if (f != NULL)
        return upstream(f);
    return r->config->nupstreams > 0 ? r->config->upstreams[0] : "";
}

static void (*g_all_stopped)(struct ud_relayer *r);
static size_t g_stopping;

static void follower_handle_closed(uv_handle_t *h)
{
    struct ud_follower *f = h->data;
    if (--f->handles_open > 0)
        return;
    struct ud_relayer *r = f->r;
    if (--g_stopping == 0 && g_all_stopped != NULL) {
        void (*done)(struct ud_relayer *) = g_all_stopped;
        g_all_stopped = NULL;
        done(r);
    }
}

void ud_relayer_followers_stop(struct ud_relayer *r, void (*done)(struct ud_relayer *r))
{
    g_all_stopped = done;
    g_stopping = 1; /* counted from 1: no early completion */
    for (size_t i = 0; i < r->nfollowers; i++) {
        struct ud_follower *f = r->followers[i];
        if (f->state == UD_FOLLOWER_STOPPED)
            continue;
        drop_transfer(f);
        ud_http_transfer_cancel(f->ack_xfer);
        f->ack_xfer = NULL;
        set_state(f, UD_FOLLOWER_STOPPED);
        /* Join first: the thread signals the async handle, which must outlive it. */
        ud_follower_apply_stop(f);
        g_stopping++;
        uv_close((uv_handle_t *)&f->tick, follower_handle_closed);
        uv_close((uv_handle_t *)&f->backoff, follower_handle_closed);
        uv_close((uv_handle_t *)&f->ack_timer, follower_handle_closed);
        uv_close((uv_handle_t *)&f->wake, follower_handle_closed);
    }
    if (--g_stopping == 0 && g_all_stopped != NULL) {
        g_all_stopped = NULL;
        done(r);
    }
}

void ud_relayer_followers_free(struct ud_relayer *r)
{
    for (size_t i = 0; i < r->nfollowers; i++) {
        struct ud_follower *f = r->followers[i];
        pthread_mutex_destroy(&f->mu);
        pthread_cond_destroy(&f->cv);
        free(f);
    }
    free(r->followers);
    r->followers = NULL;
    r->nfollowers = r->cap_followers = 0;
}

/* --- status ---------------------------------------------------------------------------------- */

void ud_follower_status_json(struct ud_follower *f, struct ud_jbuf *out)
{
    uint64_t applied = applied_lsn(f);
    uint64_t lag = f->upstream_last_lsn > applied ? f->upstream_last_lsn - applied : 0;
    uint64_t lag_ms = lag > 0 ? now_ms(f) - f->caught_up_ms : 0;
    ud_jbuf_lit(out, "{\"namespace\":");
    ud_jbuf_str(out, f->ns, strlen(f->ns));
    ud_jbuf_printf(out, ",\"state\":\"%s\",\"upstream\":", ud_follower_state_name(f->state));
    ud_jbuf_str(out, upstream(f), strlen(upstream(f)));
    ud_jbuf_lit(out, ",\"upstreams\":[");
    for (unsigned i = 0; i < f->nupstreams; i++) {
        if (i > 0)
            ud_jbuf_lit(out, ",");
        ud_jbuf_str(out, f->upstreams[i], strlen(f->upstreams[i]));
    }
    ud_jbuf_printf(
        out,
        "],\"applied_lsn\":%" PRIu64 ",\"upstream_last_lsn\":%" PRIu64
        ",\"upstream_first_lsn\":%" PRIu64 ",\"lag_records\":%" PRIu64 ",\"lag_ms\":%" PRIu64
        ",\"reconnects\":%" PRIu64 ",\"bytes\":%" PRIu64 ",\"records\":%" PRIu64
        ",\"heartbeats\":%" PRIu64 ",\"bootstraps\":%" PRIu64 ",\"acks\":%" PRIu64
        ",\"copy_failures\":%" PRIu32 ",\"paused\":%s,\"upstream_deleted\":%s,\"last_error\":",
        applied, f->upstream_last_lsn, f->upstream_first_lsn, lag, lag_ms, f->reconnects, f->bytes,
        f->records, f->heartbeats, f->bootstraps, f->acks_sent, f->copy_failures,
        f->paused ? "true" : "false", f->upstream_deleted ? "true" : "false");
    if (f->last_error[0] != '\0')
        ud_jbuf_str(out, f->last_error, strlen(f->last_error));
    else
        ud_jbuf_lit(out, "null");
    ud_jbuf_lit(out, "}");
}

void ud_relayer_followers_metrics(struct ud_relayer *r, struct ud_jbuf *out)
{
    static const struct {
        const char *name, *type, *help;
    } m[] = {
        {"unison_relayer_applied_lsn", "gauge", "Last LSN applied here."},
        {"unison_relayer_upstream_last_lsn", "gauge", "Upstream's last LSN (heartbeats)."},
        {"unison_relayer_lag_records", "gauge", "Records behind the upstream."},
        {"unison_relayer_lag_ms", "gauge", "Milliseconds since this namespace was caught up."},
        {"unison_relayer_reconnects_total", "counter", "Stream connections lost or refused."},
        {"unison_relayer_stream_bytes_total", "counter", "Stream bytes received."},
        {"unison_relayer_records_total", "counter", "Records received and verified."},
        {"unison_relayer_bootstraps_total", "counter", "Snapshot bootstraps started."},
        {"unison_relayer_state", "gauge",
         "Follower state: 0 connecting, 1 bootstrapping, 2 streaming, 3 backoff, 4 stopped."},
    };
    for (size_t k = 0; k < sizeof m / sizeof m[0]; k++) {
        ud_jbuf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", m[k].name, m[k].help, m[k].name,
                       m[k].type);
        for (size_t i = 0; i < r->nfollowers; i++) {
            struct ud_follower *f = r->followers[i];
            uint64_t applied = applied_lsn(f);
            uint64_t lag = f->upstream_last_lsn > applied ? f->upstream_last_lsn - applied : 0;
            uint64_t v[] = {applied,
                            f->upstream_last_lsn,
                            lag,
                            lag > 0 ? now_ms(f) - f->caught_up_ms : 0,
                            f->reconnects,
                            f->bytes,
                            f->records,
                            f->bootstraps,
                            (uint64_t)f->state};
            ud_jbuf_printf(out, "%s{namespace=\"%s\"} %" PRIu64 "\n", m[k].name, f->ns, v[k]);
        }
    }
}

int ud_relayer_followers_ready(struct ud_relayer *r, char *why, size_t size)
{
    if (r->nfollowers == 0) {
        snprintf(why, size, "no namespace followed yet%s%s", r->discover_error[0] ? ": " : "",
                 r->discover_error);
        return 0;
    }
    for (size_t i = 0; i < r->nfollowers; i++) {
        struct ud_follower *f = r->followers[i];
        /* Deleted upstream (and so here): nothing is there to follow, which keeps no reader
         * from being served; a name created again is bootstrapped when the follower hears of
         * it. Otherwise deleting any namespace would take every relayer below out of service. */
        if (f->upstream_deleted != 0)
            continue;
        if (f->state != UD_FOLLOWER_STREAMING) {
            snprintf(why, size, "namespace %s is %s%s%s", f->ns, ud_follower_state_name(f->state),
                     f->last_error[0] ? ": " : "", f->last_error);
            return 0;
        }
        /* Streaming, but applying nothing: the apply thread waits for the flush (a full or
         * failing disk stalls it for good), the stream stays paused, and the copy grows stale
         * without any error. Not ready once a heartbeat timeout passes with the stream paused
         * and no applied progress (note_pause_progress). */
        note_pause_progress(f);
        uint64_t paused_for = f->paused ? now_ms(f) - f->paused_ms : 0;
        if (paused_for >= f->r->config->heartbeat_timeout_ms) {
            snprintf(why, size,
                     "namespace %s is stalled: its stream is paused and the apply thread has "
                     "applied nothing for %" PRIu64
                     " ms (the flush is behind: a slow, full or failing disk?)",
                     f->ns, paused_for);
            return 0;
        }
    }
    return 1;
}
