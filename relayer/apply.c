/*
 * A follower's apply thread: records verified on the loop are appended to the bootstrap WAL or
 * applied with ud_ns_apply here, because admission (ud_ns_admit waits while the flush is behind)
 * and WAL appends may block, and the loop must keep serving reads and heartbeats meanwhile. A
 * snapshot download is written to its file here for the same reason. The
 * loop pauses the stream while apply_queue_bytes are queued (backpressure up to the upstream).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/log.h"
#include "relayer/follower_int.h"

#define LOG "apply"

/* Wait per admission attempt; the thread checks for a stop between attempts. */
#define ADMIT_WAIT_MS 200
/* sync_mode always under a stream that never lets the queue drain: still fsync this often, so
 * durability, acks and what our own downstream sees do not wait for a segment seal. */
#define SYNC_EVERY_BYTES (4u << 20)
#define SYNC_EVERY_NS    (100 * 1000000ull)

/* mu held. */
static void signal_loop(struct ud_follower *f, unsigned ev)
{
    f->events |= ev;
    uv_async_send(&f->wake);
}

/* mu held. */
static void drop_queue(struct ud_follower *f)
{
    while (f->head != NULL) {
        struct apply_item *it = f->head;
        f->head = it->next;
        free(it);
    }
    f->tail = NULL;
    f->queued_bytes = 0;
}

static void fail_with(struct ud_follower *f, const char *msg, unsigned extra_events)
{
    pthread_mutex_lock(&f->mu);
    snprintf(f->fail_msg, sizeof f->fail_msg, "%s", msg);
    /* Drop what is queued: it follows a record that could not be applied. Until the loop has
     * taken note (and dropped its connection), arriving records are dropped too. */
    f->fail_pending = 1;
    /* Without an open copy (a replacement that failed halfway) the next connection must
     * bootstrap. */
    if (f->nsp == NULL)
        f->has_ns = 0;
    drop_queue(f);
    signal_loop(f, EV_FAILED | extra_events);
    pthread_mutex_unlock(&f->mu);
}

static void fail(struct ud_follower *f, const char *msg)
{
    fail_with(f, msg, 0);
}

static struct ud_engine_options engine_opts(struct ud_follower *f, const char *dir)
{
    struct ud_engine_options o = f->r->config->engine;
    o.dir = dir;
    o.name = f->ns;
    return o;
}

/*
 * The namespace is about to be replaced: the loop first ends what holds it across loop
 * iterations (LOB downloads, the streams of our own downstream relayers, which reconnect and
 * continue from the new copy), as the writer does before a namespace delete. Returns 0, or 1 when
 * the follower is stopping.
 */
static int wait_streams_ended(struct ud_follower *f)
{
    pthread_mutex_lock(&f->mu);
    f->replace_ok = 0;
    signal_loop(f, EV_REPLACING);
    while (!f->replace_ok && !f->stop)
        pthread_cond_wait(&f->cv, &f->mu);
    int stop = f->stop;
    pthread_mutex_unlock(&f->mu);
    return stop;
}

/*
 * Every record up to the checkpoint is in: replace the namespace (if any) with the new one, but
 * only if the snapshot's store is the namespace the stream's records are of. A snapshot without
 * an incarnation header takes its stream's; if the name was deleted and created again during the
 * download, that stream is of the new namespace, and its records would be added to the old one.
 * Then the bootstrap is abandoned: UD_ECONFLICT, and no other failure returns it.
 */
static int install(struct ud_follower *f, char *errmsg)
{
    pthread_mutex_lock(&f->mu);
    uint64_t stream_inc = f->boot_stream_incarnation;
    pthread_mutex_unlock(&f->mu);
    uint64_t store_inc = ud_ns_bootstrap_incarnation(f->bs);
    if (stream_inc != 0 && stream_inc != store_inc) {
        int rc = ud_errf(errmsg, UD_ECONFLICT,
                         "namespace %s: the snapshot is of incarnation %llu, its stream of "
                         "%llu (deleted and created again during the download): not installed",
                         f->ns, (unsigned long long)store_inc, (unsigned long long)stream_inc);
        ud_ns_bootstrap_abort(f->bs);
        f->bs = NULL;
        return rc;
    }
    if (wait_streams_ended(f))
        return ud_errf(errmsg, UD_ECLOSED, "namespace %s: stopping during its bootstrap", f->ns);
    struct ud_registry *reg = f->r->registry;
    if (f->nsp != NULL) {
        ud_registry_release(reg, f->nsp);
        f->nsp = NULL;
    }
    struct ud_ns_bootstrap *bs = f->bs;
    f->bs = NULL;
    int rc = ud_registry_install(reg, f->ns, bs, &f->nsp, errmsg);
    if (rc != 0)
        return rc;
    pthread_mutex_lock(&f->mu);
    f->installed_incarnation = ud_ns_incarnation(f->nsp);
    pthread_mutex_unlock(&f->mu);
    ud_info(LOG, "namespace %s: bootstrap installed (snapshot at LSN %llu)", f->ns,
            (unsigned long long)f->boot_ckpt);
    return 0;
}

/* The upstream answered that the namespace does not exist (deleted there): the local copy goes
 * too, so that a namespace created again under that name (its LSNs start at 1 again) is
 * bootstrapped rather than continued on top of the old copy. */
static void drop_local(struct ud_follower *f)
{
    char errmsg[UD_ERRMSG_SIZE] = "";
    ud_ns_bootstrap_abort(f->bs);
    f->bs = NULL;
    if (wait_streams_ended(f))
        return;
    if (f->nsp != NULL) {
        ud_registry_release(f->r->registry, f->nsp);
        f->nsp = NULL;
    }
    int rc = ud_registry_delete(f->r->registry, f->ns, errmsg);
    if (rc != 0 && rc != UD_ENOTFOUND)
        ud_error(LOG, "namespace %s: delete the local copy: %s", f->ns, errmsg);
    else
        ud_info(LOG, "namespace %s: local copy deleted", f->ns);
    pthread_mutex_lock(&f->mu);
    f->has_ns = 0;
    f->next_lsn = 0;
    signal_loop(f, EV_DROPPED);
    pthread_mutex_unlock(&f->mu);
}

/* --- the snapshot download's file --------------------------------------------------------- */

static void snapshot_close(struct ud_follower *f)
{
    if (f->snap_fd >= 0)
        close(f->snap_fd);
    f->snap_fd = -1;
}

static void snapshot_open(struct ud_follower *f, const char *path)
{
    snapshot_close(f);
    snprintf(f->snap_path, sizeof f->snap_path, "%s", path);
    f->snap_fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (f->snap_fd < 0) {
        char msg[UD_ERRMSG_SIZE];
        snprintf(msg, sizeof msg, "snapshot download: create %s: %s", path, strerror(errno));
        fail(f, msg);
    }
}

/* Appends a piece of the snapshot; a failure ends the download (the loop drops the transfer on
 * EV_FAILED and starts over after the backoff). */
static void snapshot_write(struct ud_follower *f, const uint8_t *p, size_t len)
{
    if (f->snap_fd < 0)
        return; /* its open failed, and the follower with it */
    while (len > 0) {
        ssize_t n = write(f->snap_fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            char msg[UD_ERRMSG_SIZE];
            snprintf(msg, sizeof msg, "snapshot download: write %s: %s", f->snap_path,
                     n < 0 ? strerror(errno) : "no progress");
            snapshot_close(f);
            unlink(f->snap_path);
            fail(f, msg);
            return;
        }
        p += n;
        len -= (size_t)n;
    }
}

static void snapshot_abort(struct ud_follower *f)
{
    snapshot_close(f);
    if (f->snap_path[0] != '\0')
        unlink(f->snap_path);
}

static void bootstrap_begin(struct ud_follower *f, const char *path)
{
    /* Everything downloaded was written before this item: the file is complete. The engine
     * fsyncs it in its new place before the namespace is installed (ud_ns_bootstrap_finish). */
    snapshot_close(f);
    char work[PATH_MAX], errmsg[UD_ERRMSG_SIZE] = "";
    snprintf(work, sizeof work, "%s/.bootstrap-%s", f->r->ns_root, f->ns);
    ud_ns_bootstrap_abort(f->bs);
    f->bs = NULL;
    struct ud_engine_options o = engine_opts(f, work);
    int rc = ud_ns_bootstrap_begin(work, path, &o, &f->bs, errmsg);
    if (rc != 0) {
        fail_with(f, errmsg, EV_COPY_FAILED);
        return;
    }
    uint64_t from = ud_ns_bootstrap_from(f->bs), ckpt = ud_ns_bootstrap_checkpoint(f->bs);
    unsigned ev = EV_BOOTSTRAP_BEGUN;
    pthread_mutex_lock(&f->mu);
    f->boot_from = from;
    f->boot_ckpt = ckpt;
    pthread_mutex_unlock(&f->mu);
    if (ud_ns_bootstrap_complete(f->bs)) {
        /* No record before the snapshot point is needed: install now. */
        if ((rc = install(f, errmsg)) != 0) {
            fail_with(f, errmsg, rc == UD_ECONFLICT ? EV_BOOT_OTHER_NS : EV_COPY_FAILED);
            return;
        }
        ev |= EV_BOOTSTRAP_INSTALLED;
    }
    pthread_mutex_lock(&f->mu);
    f->next_lsn = from;
    if (ev & EV_BOOTSTRAP_INSTALLED)
        f->has_ns = 1;
    signal_loop(f, ev);
    pthread_mutex_unlock(&f->mu);
}

static void apply_record(struct ud_follower *f, struct apply_item *it)
{
    char errmsg[UD_ERRMSG_SIZE] = "";
    int rc;
    if (f->bs != NULL) {
        rc = ud_ns_bootstrap_append(f->bs, it->data, it->len, it->lsn, errmsg);
        if (rc != 0) {
            fail_with(f, errmsg, EV_COPY_FAILED);
            return;
        }
        unsigned ev = 0;
        if (ud_ns_bootstrap_complete(f->bs)) {
            if ((rc = install(f, errmsg)) != 0) {
                fail_with(f, errmsg, rc == UD_ECONFLICT ? EV_BOOT_OTHER_NS : EV_COPY_FAILED);
                return;
            }
            ev = EV_BOOTSTRAP_INSTALLED;
        }
        pthread_mutex_lock(&f->mu);
        f->next_lsn = it->lsn + 1;
        if (ev != 0) {
            f->has_ns = 1;
            signal_loop(f, ev);
        }
        pthread_mutex_unlock(&f->mu);
        return;
    }
    if (f->nsp == NULL) {
        fail(f, "a record arrived for a namespace that is neither open nor being bootstrapped");
        return;
    }
    /* Admission: the flush must keep up; wait (bounded per attempt) rather than grow memory. */
    for (;;) {
        if (ud_ns_admit(f->nsp, ADMIT_WAIT_MS) == 0)
            break;
        pthread_mutex_lock(&f->mu);
        int stop = f->stop;
        pthread_mutex_unlock(&f->mu);
        if (stop)
            return;
    }
    uint64_t lsn = 0;
    rc = ud_ns_apply(f->nsp, it->data, it->len, &lsn, errmsg);
    if (rc != 0) {
        char msg[UD_ERRMSG_SIZE];
        /* A failed namespace (memtable insert failed after the WAL append, or a failed WAL
         * fsync) refuses every later apply: resuming would fail the same way forever. The copy
         * is bootstrapped again instead; the install closes the failed one. */
        int failed = ud_ns_failed(f->nsp);
        snprintf(msg, sizeof msg, "apply LSN %llu: %s%s", (unsigned long long)it->lsn, errmsg,
                 failed ? "; bootstrapping the copy again" : "");
        fail_with(f, msg, failed ? EV_NS_FAILED : 0);
        return;
    }
    pthread_mutex_lock(&f->mu);
    f->next_lsn = lsn + 1;
    int drained = f->head == NULL;
    pthread_mutex_unlock(&f->mu);
    /* sync_mode always: nothing else fsyncs a relayer's WAL (its applies do not wait), so the
     * records would become durable, and visible to its own downstream, only at a seal or flush.
     * One group commit per drained batch, and every SYNC_EVERY_BYTES / SYNC_EVERY_NS while the
     * queue never drains. */
    if (f->r->config->engine.sync_mode != UD_WAL_SYNC_ALWAYS)
        return;
    f->unsynced_bytes += it->len;
    uint64_t now = ud_mono_ns();
    if (!drained && f->unsynced_bytes < SYNC_EVERY_BYTES && now - f->synced_ns < SYNC_EVERY_NS)
        return;
    f->unsynced_bytes = 0;
    f->synced_ns = now;
    if ((rc = ud_ns_wait_durable(f->nsp, lsn, errmsg)) != 0) {
        char msg[UD_ERRMSG_SIZE];
        snprintf(msg, sizeof msg, "sync LSN %llu: %s", (unsigned long long)lsn, errmsg);
        fail_with(f, msg, ud_ns_failed(f->nsp) ? EV_NS_FAILED : 0);
    }
}

static void *apply_main(void *arg)
{
    struct ud_follower *f = arg;
    size_t resume_mark = f->r->config->apply_queue_bytes / 4;
    pthread_mutex_lock(&f->mu);
    for (;;) {
        while (!f->stop && f->head == NULL)
            pthread_cond_wait(&f->cv, &f->mu);
        if (f->stop)
            break;
        struct apply_item *it = f->head;
        f->head = it->next;
        if (f->head == NULL)
            f->tail = NULL;
        size_t before = f->queued_bytes;
        f->queued_bytes -= it->len;
        if (before > resume_mark && f->queued_bytes <= resume_mark)
            signal_loop(f, EV_DRAINED);
        f->busy = 1;
        pthread_mutex_unlock(&f->mu);
        if (it->kind == APPLY_BOOTSTRAP)
            bootstrap_begin(f, (const char *)it->data);
        else if (it->kind == APPLY_DROP)
            drop_local(f);
        else if (it->kind == APPLY_SNAPSHOT_OPEN)
            snapshot_open(f, (const char *)it->data);
        else if (it->kind == APPLY_SNAPSHOT_DATA)
            snapshot_write(f, it->data, it->len);
        else if (it->kind == APPLY_SNAPSHOT_ABORT)
            snapshot_abort(f);
        else
            apply_record(f, it);
        free(it);
        pthread_mutex_lock(&f->mu);
        f->busy = 0;
        if (f->head == NULL)
            signal_loop(f, EV_DRAINED);
    }
    pthread_mutex_unlock(&f->mu);
    return NULL;
}

int ud_follower_apply_start(struct ud_follower *f, char *errmsg)
{
    f->snap_fd = -1;
    int rc = pthread_create(&f->thread, NULL, apply_main, f);
    if (rc != 0)
        return ud_errf(errmsg, UD_ENOMEM, "namespace %s: start apply thread: %s", f->ns,
                       strerror(rc));
    f->thread_started = 1;
    return 0;
}

static void enqueue(struct ud_follower *f, struct apply_item *it)
{
    pthread_mutex_lock(&f->mu);
    if (f->fail_pending || f->stop) {
        pthread_mutex_unlock(&f->mu);
        free(it);
        return;
    }
    it->next = NULL;
    if (f->tail != NULL)
        f->tail->next = it;
    else
        f->head = it;
    f->tail = it;
    f->queued_bytes += it->len;
    pthread_cond_signal(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

void ud_follower_apply_record(struct ud_follower *f, const uint8_t *data, uint32_t len,
                              uint64_t lsn)
{
    struct apply_item *it = malloc(sizeof *it + len);
    if (it == NULL)
        abort(); /* network glue: bounded by apply_queue_bytes */
    it->kind = APPLY_RECORD;
    it->lsn = lsn;
    it->len = len;
    memcpy(it->data, data, len);
    enqueue(f, it);
}

static void enqueue_path(struct ud_follower *f, enum apply_kind kind, const char *path)
{
    size_t len = strlen(path) + 1;
    struct apply_item *it = malloc(sizeof *it + len);
    if (it == NULL)
        abort();
    it->kind = kind;
    it->lsn = 0;
    it->len = 0; /* not counted against the queue */
    memcpy(it->data, path, len);
    enqueue(f, it);
}

void ud_follower_apply_snapshot_open(struct ud_follower *f, const char *path)
{
    enqueue_path(f, APPLY_SNAPSHOT_OPEN, path);
}

void ud_follower_apply_snapshot_data(struct ud_follower *f, const void *data, size_t len)
{
    struct apply_item *it = malloc(sizeof *it + len);
    if (it == NULL)
        abort(); /* network glue: bounded by apply_queue_bytes */
    it->kind = APPLY_SNAPSHOT_DATA;
    it->lsn = 0;
    it->len = (uint32_t)len;
    memcpy(it->data, data, len);
    enqueue(f, it);
}

/* Queues an item that carries nothing but its kind. */
static void enqueue_bare(struct ud_follower *f, enum apply_kind kind)
{
    struct apply_item *it = malloc(sizeof *it);
    if (it == NULL)
        abort();
    it->kind = kind;
    it->lsn = 0;
    it->len = 0;
    enqueue(f, it);
}

void ud_follower_apply_snapshot_abort(struct ud_follower *f)
{
    enqueue_bare(f, APPLY_SNAPSHOT_ABORT);
}

void ud_follower_apply_bootstrap(struct ud_follower *f, const char *path)
{
    enqueue_path(f, APPLY_BOOTSTRAP, path);
}

void ud_follower_apply_drop(struct ud_follower *f)
{
    enqueue_bare(f, APPLY_DROP);
}

void ud_follower_apply_stop(struct ud_follower *f)
{
    if (!f->thread_started)
        return;
    pthread_mutex_lock(&f->mu);
    f->stop = 1;
    drop_queue(f);
    pthread_cond_signal(&f->cv);
    pthread_mutex_unlock(&f->mu);
    pthread_join(f->thread, NULL);
    f->thread_started = 0;
    snapshot_close(f); /* a download cut short: the next bootstrap truncates the file */
    ud_ns_bootstrap_abort(f->bs);
    f->bs = NULL;
    if (f->nsp != NULL)
        ud_registry_release(f->r->registry, f->nsp);
    f->nsp = NULL;
}
