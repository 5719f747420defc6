/* WALFS: open and close, appends with rotation, group commit, retention and backup. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <sched.h>
#include <sys/syscall.h>
#include <sys/mman.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/dir.h"
#include "core/log.h"
#include "core/wal_int.h"

/* Frames are u32-length; keep the largest one far from overflowing any u32 arithmetic. */
#define MAX_RECORD_U32   (UINT32_MAX - 64u)
#define MAX_SEGMENT_SIZE (1ull << 40)

/* ---- Helpers shared with the reader and recovery ---- */

int ud_wal_push_segment(struct ud_wal *wal, struct ud_wal_segment *s)
{
    if (wal->nsegs == wal->segs_cap) {
        uint32_t cap = wal->segs_cap ? wal->segs_cap * 2 : 16;
        struct ud_wal_segment **p = realloc(wal->segs, cap * sizeof *p);
        if (p == NULL)
            return UD_ENOMEM;
        wal->segs = p;
        wal->segs_cap = cap;
    }
    wal->segs[wal->nsegs++] = s;
    return 0;
}

static void wake_every_committer(struct ud_wal *wal);

/* Committers sleeping for a round are woken too: the waiter woken to start the next round returns
 * the failure instead, so without this the others would sleep on with no round to end. */
void ud_wal_set_failed(struct ud_wal *wal, const char *msg)
{
    pthread_mutex_lock(&wal->fail_lock);
    if (!atomic_load(&wal->failed)) {
        snprintf(wal->fail_msg, sizeof wal->fail_msg, "%s", msg);
        atomic_store(&wal->failed, 1);
        ud_error("wal", "%s: %s; the log is failed: every later append and sync returns an error",
                 wal->dir, msg);
    }
    pthread_mutex_unlock(&wal->fail_lock);
    wake_every_committer(wal);
}

int ud_wal_is_failed(struct ud_wal *wal)
{
    return atomic_load(&wal->failed) != 0;
}

int ud_wal_fail_error(struct ud_wal *wal, char *errmsg)
{
    pthread_mutex_lock(&wal->fail_lock);
    ud_errf(errmsg, UD_EIO, "wal %s failed earlier: %s", wal->dir, wal->fail_msg);
    pthread_mutex_unlock(&wal->fail_lock);
    return UD_EIO;
}

void ud_wal_wake_readers(struct ud_wal *wal)
{
    /* Pairs with the fence in ud_wal_reader_wait: either the waiter sees the new LSN before it
     * sleeps, or we see it registered and broadcast under its mutex. Skipping the mutex when
     * nobody waits keeps the append path free of a second lock. */
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&wal->waiters, memory_order_relaxed) > 0) {
        pthread_mutex_lock(&wal->wait_lock);
        pthread_cond_broadcast(&wal->wait_cond);
        pthread_mutex_unlock(&wal->wait_lock);
    }
}

void ud_wal_advance_durable(struct ud_wal *wal, uint64_t lsn)
{
    uint64_t cur = atomic_load_explicit(&wal->durable_lsn, memory_order_relaxed);
    while (cur < lsn &&
           !atomic_compare_exchange_weak_explicit(&wal->durable_lsn, &cur, lsn,
                                                  memory_order_release, memory_order_relaxed))
        ;
}

/* ---- Open and close ---- */

/* The WAL's directory syncs go through its ud_fs (a test's storage layer sees them). */
static int sync_dir_fs(void *ctx, const char *dir, char *errmsg)
{
    struct ud_fs *fs = ctx;
    return fs->sync_dir(fs, dir, errmsg);
}

/* mkdir -p; each new directory's entry is made durable in its parent. */
static int make_dirs(struct ud_fs *fs, const char *dir, char *errmsg)
{
    return ud_dir_create_synced(dir, sync_dir_fs, fs, errmsg);
}

static void wal_free(struct ud_wal *wal)
{
    for (uint32_t i = 0; i < wal->nsegs; i++)
        ud_wal_segment_unref(wal->segs[i]);
    free(wal->segs);
    pthread_mutex_destroy(&wal->lock);
    pthread_mutex_destroy(&wal->fail_lock);
    pthread_mutex_destroy(&wal->wait_lock);
    pthread_cond_destroy(&wal->wait_cond);
    pthread_mutex_destroy(&wal->tick_lock);
    pthread_cond_destroy(&wal->tick_cond);
    pthread_mutex_destroy(&wal->retain_lock);
    pthread_mutex_destroy(&wal->help_lock);
    pthread_cond_destroy(&wal->help_cond);
    pthread_mutex_destroy(&wal->write_lock);
    pthread_mutex_destroy(&wal->prepare_lock);
    pthread_mutex_destroy(&wal->floor_lock);
    ud_wal_stage_free(wal);
    free(wal->dir);
    free(wal);
}

static void init_monotonic_cond(pthread_cond_t *c)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(c, &attr);
    pthread_condattr_destroy(&attr);
}

static int sync_upto(struct ud_wal *wal, uint64_t lsn, char *errmsg);

/* ---- Helper ---- */

/*
 * ALWAYS mode: readies the active segment's file ahead of the appends, a step at a time, until it
 * is UD_WAL_PREPARE_STEPS_AHEAD steps ahead of the end (or at the segment's size). Preallocated
 * blocks are unwritten extents on ext4: the first fsync after data lands in one also commits the
 * journal to mark it written, on every group-commit round. Zeros written and synced here pay for
 * that once per step, off the rounds (docs/benchmarks.md, "WAL segments readied ahead").
 *
 * Only bytes past everything written into the file are readied, and a write out that reaches a
 * step under way waits for it (core/wal_stage.c), so zeros never land on records. A failed sync
 * (through an open file of its own, which leaves the segment's file its own report of the same
 * failure) fails the log: the disk failed a write of this file.
 * Other failures (a full disk where zeros went into holes) only stop the readying of this segment:
 * its blocks were reserved when it was created.
 */
static void prepare_ahead(struct ud_wal *wal, struct ud_wal_segment *s)
{
    uint64_t step = ud_wal_prepare_step(s->size);
    for (;;) {
        if (atomic_load(&wal->failed))
            return;
        pthread_mutex_lock(&wal->write_lock);
        pthread_mutex_lock(&wal->prepare_lock);
        /* Under write_lock: whatever is written into the file lies below the published end. */
        uint64_t end = atomic_load_explicit(&s->published, memory_order_acquire);
        uint64_t want = end + UD_WAL_PREPARE_STEPS_AHEAD * step;
        uint64_t from = s->prepared;
        uint64_t start = (end + step / 4 + 4095) & ~(uint64_t)4095;
        if (from < start)
            from = start;
        /* Within a step of the end (a new segment, or the helper fell behind) the steps are
         * quarter steps: appends that reach the step under way wait for it, so the nearest ones
         * are the shortest. */
        uint64_t len = from < end + step ? ud_wal_prepare_near_step(step) : step;
        uint64_t to = from + len < s->size ? from + len : s->size;
        if (s->prepared >= want || from >= to) {
            pthread_mutex_unlock(&wal->prepare_lock);
            pthread_mutex_unlock(&wal->write_lock);
            return;
        }
        UD_ASSERT(from >= atomic_load_explicit(&s->written, memory_order_relaxed));
        atomic_store(&s->preparing_from, from);
        pthread_mutex_unlock(&wal->write_lock);

        char msg[UD_ERRMSG_SIZE];
        int rc = wal->fs->prepare(wal->fs, s->file, from, to - from, msg);
        s->prepared = rc == 0 ? to : s->size;
        atomic_store(&s->preparing_from, UINT64_MAX);
        pthread_mutex_unlock(&wal->prepare_lock);
        if (rc != 0) {
            ud_errwrap(msg, rc, "ready segment %s [%llu, %llu)", s->name, (unsigned long long)from,
                       (unsigned long long)to);
            if (rc == UD_EIO) {
                ud_wal_set_failed(wal, msg);
            } else {
                ud_warn("wal", "%s: %s; its fsyncs stay as costly as before", wal->dir, msg);
            }
            return;
        }
    }
}

/* Runs one pass of the helper's work on the active segment. Returns whether bytes of it were left
 * unwritten (appended meanwhile): the helper then comes back within UD_WAL_WRITE_DELAY_MS. */
static bool help_once(struct ud_wal *wal)
{
    if (atomic_load(&wal->failed))
        return false;
    pthread_mutex_lock(&wal->lock);
    struct ud_wal_segment *s = wal->segs[wal->nsegs - 1];
    uint64_t end = s->end, synced = s->synced;
    bool sealed = s->sealed;
    ud_wal_segment_ref(s);
    pthread_mutex_unlock(&wal->lock);
    bool pending = false;
    if (!sealed) {
        /* NONE mode promises no durability before sealing, but sealing fsyncs the whole segment
         * on the append path (~40 ms for 64 MiB here). Syncing in the background as the segment
         * fills leaves only the last part for the seal; it only makes records durable sooner.
         * The sync writes the stage out first; otherwise it is written out here, so that the
         * appender does not find the stage full and the file trails the appends briefly. */
        bool sync = wal->mode == UD_WAL_SYNC_NONE && end - synced >= UD_WAL_BG_SYNC_BYTES;
        uint64_t next = synced + UD_WAL_BG_SYNC_BYTES;
        if (sync) {
            char msg[UD_ERRMSG_SIZE];
            /* A failure fails the log (sync_upto), which the next append reports. */
            if (sync_upto(wal, atomic_load(&wal->last_lsn), msg) == 0)
                next = end + UD_WAL_BG_SYNC_BYTES;
        } else {
            (void)ud_wal_write_out(wal, s, end, NULL); /* a failure fails the log */
        }
        if (wal->mode == UD_WAL_SYNC_ALWAYS && wal->fs->prepare != NULL)
            prepare_ahead(wal, s);
        if (wal->mode == UD_WAL_SYNC_NONE)
            atomic_store_explicit(&s->sync_wake_at, next, memory_order_relaxed);
        /* Under the lock, so that an append either is seen here or sees the mark: with nothing
         * left, the next append wakes the helper; otherwise a write step does, or the delay. */
        pthread_mutex_lock(&wal->lock);
        uint64_t written = atomic_load_explicit(&s->written, memory_order_acquire);
        pending = !s->sealed && s->end > written;
        atomic_store_explicit(&s->wake_at, pending ? written + UD_WAL_WRITE_STEP : s->end + 1,
                              memory_order_relaxed);
        pthread_mutex_unlock(&wal->lock);
    }
    ud_wal_segment_unref(s);
    return pending;
}

/*
 * The helper sleeps until an append wakes it: the first one after it found nothing to write, or
 * one that leaves UD_WAL_WRITE_STEP unwritten (or, NONE mode, UD_WAL_BG_SYNC_BYTES unsynced). Woken
 * by the first, it lets records gather for UD_WAL_WRITE_DELAY_MS before it writes, so that a slow
 * trickle of appends is not written one pwrite per record; while bytes are left unwritten it comes
 * back after that delay, so that the file never trails the appends by more than that for long (a
 * killed process loses only those, and whoever reads the segment files sees the records).
 */
static void *help_main(void *arg)
{
    struct ud_wal *wal = arg;
    pthread_setname_np(pthread_self(), "ud-wal-help");
    bool pending = false;
    pthread_mutex_lock(&wal->help_lock);
    for (;;) {
        if (pending) {
            uint64_t deadline = ud_mono_ns() + UD_WAL_WRITE_DELAY_MS * 1000000u;
            struct timespec ts = {.tv_sec = (time_t)(deadline / 1000000000u),
                                  .tv_nsec = (long)(deadline % 1000000000u)};
            while (!wal->help_stop && !wal->help_wanted && ud_mono_ns() < deadline)
                pthread_cond_timedwait(&wal->help_cond, &wal->help_lock, &ts);
        } else {
            while (!wal->help_stop && !wal->help_wanted)
                pthread_cond_wait(&wal->help_cond, &wal->help_lock);
            if (!wal->help_stop) {
                /* The first append after an idle spell: let more gather. */
                wal->help_wanted = false;
                pending = true;
                continue;
            }
        }
        if (wal->help_stop)
            break;
        wal->help_wanted = false;
        pthread_mutex_unlock(&wal->help_lock);
        pending = help_once(wal);
        pthread_mutex_lock(&wal->help_lock);
    }
    pthread_mutex_unlock(&wal->help_lock);
    return NULL;
}

static void help_wake(struct ud_wal *wal)
{
    pthread_mutex_lock(&wal->help_lock);
    wal->help_wanted = true;
    pthread_cond_signal(&wal->help_cond);
    pthread_mutex_unlock(&wal->help_lock);
}

static void *tick_main(void *arg)
{
    struct ud_wal *wal = arg;
    pthread_setname_np(pthread_self(), "ud-wal-sync");
    bool reported = false;
    pthread_mutex_lock(&wal->tick_lock);
    while (!wal->tick_stop) {
        uint64_t deadline = ud_mono_ns() + (uint64_t)wal->sync_interval_ms * 1000000u;
        struct timespec ts = {.tv_sec = (time_t)(deadline / 1000000000u),
                              .tv_nsec = (long)(deadline % 1000000000u)};
        while (!wal->tick_stop && ud_mono_ns() < deadline)
            pthread_cond_timedwait(&wal->tick_cond, &wal->tick_lock, &ts);
        if (wal->tick_stop)
            break;
        pthread_mutex_unlock(&wal->tick_lock);
        uint64_t last = atomic_load(&wal->last_lsn);
        if (last > atomic_load(&wal->durable_lsn)) {
            char msg[UD_ERRMSG_SIZE];
            if (sync_upto(wal, last, msg) != 0 && !reported) {
                ud_error("wal", "%s: interval sync: %s", wal->dir, msg);
                reported = true;
            }
        }
        pthread_mutex_lock(&wal->tick_lock);
    }
    pthread_mutex_unlock(&wal->tick_lock);
    return NULL;
}

static void help_stop(struct ud_wal *wal)
{
    if (!wal->help_running)
        return;
    pthread_mutex_lock(&wal->help_lock);
    wal->help_stop = true;
    pthread_cond_signal(&wal->help_cond);
    pthread_mutex_unlock(&wal->help_lock);
    pthread_join(wal->help_thread, NULL);
    wal->help_running = false;
}

int ud_wal_open(const struct ud_wal_options *opts, struct ud_wal **out, char *errmsg)
{
    if (opts == NULL || out == NULL || opts->dir == NULL || opts->dir[0] == '\0')
        return ud_errf(errmsg, UD_EINVAL, "wal options: dir is required");
    uint64_t segment_size = opts->segment_size ? opts->segment_size : UD_WAL_DEFAULT_SEGMENT_SIZE;
    if (segment_size < UD_WAL_MIN_SEGMENT_SIZE || segment_size > MAX_SEGMENT_SIZE ||
        segment_size % 8 != 0)
        return ud_errf(errmsg, UD_EINVAL,
                       "wal options: segment_size %llu must be a multiple of 8 in [%u, %llu]",
                       (unsigned long long)segment_size, UD_WAL_MIN_SEGMENT_SIZE,
                       (unsigned long long)MAX_SEGMENT_SIZE);
    if (opts->sync_mode != UD_WAL_SYNC_ALWAYS && opts->sync_mode != UD_WAL_SYNC_INTERVAL &&
        opts->sync_mode != UD_WAL_SYNC_NONE)
        return ud_errf(errmsg, UD_EINVAL, "wal options: unknown sync mode %d",
                       (int)opts->sync_mode);
    if (opts->start_lsn > UINT64_MAX / 2)
        return ud_errf(errmsg, UD_EINVAL, "wal options: start_lsn %llu out of range",
                       (unsigned long long)opts->start_lsn);

    struct ud_wal *wal = calloc(1, sizeof *wal);
    if (wal == NULL)
        return ud_errf(errmsg, UD_ENOMEM, "open wal %s: out of memory", opts->dir);
    wal->dir = strdup(opts->dir);
    if (wal->dir == NULL) {
        free(wal);
        return ud_errf(errmsg, UD_ENOMEM, "open wal %s: out of memory", opts->dir);
    }
    wal->fs = opts->fs ? opts->fs : ud_fs_posix();
    wal->segment_size = segment_size;
    wal->max_record = segment_size - UD_WAL_SEGMENT_HEADER_SIZE - 24;
    if (wal->max_record > MAX_RECORD_U32)
        wal->max_record = MAX_RECORD_U32;
    wal->mode = opts->sync_mode;
    wal->sync_interval_ms = opts->sync_interval_ms ? opts->sync_interval_ms : 100;
    wal->index_interval = opts->index_interval ? opts->index_interval : 64;
    wal->start_lsn = opts->start_lsn ? opts->start_lsn : 1;
    /* The append lock guards a few dozen instructions and is taken by every committer: spinning
     * briefly before sleeping avoids a context switch per contended acquisition, which is what
     * bounded group commit with many writers on two cores. */
    pthread_mutexattr_t adaptive;
    pthread_mutexattr_init(&adaptive);
    pthread_mutexattr_settype(&adaptive, PTHREAD_MUTEX_ADAPTIVE_NP);
    pthread_mutex_init(&wal->lock, &adaptive);
    pthread_mutex_init(&wal->fail_lock, NULL);
    pthread_mutexattr_destroy(&adaptive);
    pthread_mutex_init(&wal->wait_lock, NULL);
    init_monotonic_cond(&wal->wait_cond);
    pthread_mutex_init(&wal->tick_lock, NULL);
    init_monotonic_cond(&wal->tick_cond);
    pthread_mutex_init(&wal->retain_lock, NULL);
    pthread_mutex_init(&wal->help_lock, NULL);
    init_monotonic_cond(&wal->help_cond);
    pthread_mutex_init(&wal->write_lock, NULL);
    pthread_mutex_init(&wal->prepare_lock, NULL);
    pthread_mutex_init(&wal->floor_lock, NULL);

    int rc = ud_wal_stage_init(wal, errmsg);
    if (rc == 0)
        rc = make_dirs(wal->fs, wal->dir, errmsg);
    if (rc == 0)
        rc = ud_wal_floor_open(wal, errmsg);
    if (rc == 0)
        rc = ud_wal_recover(wal, errmsg);
    if (rc == 0) {
        int err = pthread_create(&wal->help_thread, NULL, help_main, wal);
        if (err != 0)
            rc = ud_errf(errmsg, UD_ENOMEM, "start helper thread: %s", strerror(err));
        else
            wal->help_running = true;
    }
    if (rc == 0 && wal->mode == UD_WAL_SYNC_INTERVAL) {
        int err = pthread_create(&wal->tick_thread, NULL, tick_main, wal);
        if (err != 0)
            rc = ud_errf(errmsg, UD_ENOMEM, "start sync thread: %s", strerror(err));
        else
            wal->tick_running = true;
    }
    if (rc != 0) {
        ud_errwrap(errmsg, rc, "open wal %s", opts->dir);
        help_stop(wal);
        wal_free(wal);
        return rc;
    }
    *out = wal;
    return 0;
}

void ud_wal_close(struct ud_wal *wal)
{
    if (wal == NULL)
        return;
    help_stop(wal);
    if (wal->tick_running) {
        pthread_mutex_lock(&wal->tick_lock);
        wal->tick_stop = true;
        pthread_cond_signal(&wal->tick_cond);
        pthread_mutex_unlock(&wal->tick_lock);
        pthread_join(wal->tick_thread, NULL);
        wal->tick_running = false;
    }
    if (!atomic_load(&wal->failed)) {
        /* The active segment's header is left as it is: its write offset and count lag, and
         * recovery scans the frames anyway; rewriting it in place would risk a torn header in
         * front of durable frames (docs/format-wal.md "Segment header"). Only what is not
         * synced yet is synced: nothing at all when every append was. */
        char msg[UD_ERRMSG_SIZE];
        pthread_mutex_lock(&wal->lock);
        struct ud_wal_segment *s = wal->segs[wal->nsegs - 1];
        uint64_t last = atomic_load(&wal->last_lsn);
        int rc = ud_wal_sync_range(wal, s, s->synced, s->end, msg);
        if (rc == 0) {
            s->synced = s->end;
            ud_wal_advance_durable(wal, last);
        }
        pthread_mutex_unlock(&wal->lock);
        if (rc != 0)
            ud_error("wal", "%s: close: %s", wal->dir, msg);
    }
    atomic_store(&wal->closed, true);
    atomic_thread_fence(memory_order_seq_cst);
    pthread_mutex_lock(&wal->wait_lock);
    pthread_cond_broadcast(&wal->wait_cond);
    pthread_mutex_unlock(&wal->wait_lock);
    /* A reader woken above still has to leave ud_wal_reader_wait, which touches wait_lock: free
     * only once none is inside (they decrement waiters under the lock). */
    for (;;) {
        pthread_mutex_lock(&wal->wait_lock);
        int waiting = atomic_load(&wal->waiters);
        pthread_mutex_unlock(&wal->wait_lock);
        if (waiting == 0)
            break;
        sched_yield();
    }
    wal_free(wal);
}

/* ---- Appends ---- */

static void wake_every_committer(struct ud_wal *wal);

/* Seals the active segment (unless already sealed) and starts the next one. (lock) */
static int rotate_locked(struct ud_wal *wal, char *errmsg)
{
    struct ud_wal_segment *s = wal->segs[wal->nsegs - 1];
    uint64_t count = atomic_load_explicit(&s->count, memory_order_relaxed);
    if (!s->sealed) {
        int rc = ud_wal_segment_seal(wal, s, errmsg);
        if (rc != 0) {
            ud_wal_set_failed(wal, errmsg);
            return UD_EIO;
        }
        if (count > 0) {
            ud_wal_advance_durable(wal, s->first_lsn + count - 1);
            ud_wal_wake_readers(wal);
            wake_every_committer(wal);
        }
    }
    /* Grow the list first so that a created segment is never left out of it. */
    if (wal->nsegs == wal->segs_cap) {
        uint32_t cap = wal->segs_cap * 2;
        struct ud_wal_segment **p = realloc(wal->segs, cap * sizeof *p);
        if (p == NULL)
            return ud_errf(errmsg, UD_ENOMEM, "rotate: out of memory");
        wal->segs = p;
        wal->segs_cap = cap;
    }
    struct ud_wal_segment *next;
    int rc = ud_wal_segment_create(wal, s->id + 1, s->first_lsn + count, &next, errmsg);
    if (rc != 0) {
        /* A failed fsync of the new file or of the directory leaves the disk in an unknown
         * state: fail the log. ENOSPC and friends leave it usable; the next append retries. */
        if (rc == UD_EIO)
            ud_wal_set_failed(wal, errmsg);
        return rc;
    }
    UD_ASSERT(ud_wal_push_segment(wal, next) == 0);
    ud_wal_stage_restart(wal, next);
    return 0;
}

/*
 * Makes room for the frame of a len-byte record at the end of the active segment, rotating first
 * when it does not fit, and notes the reservation. On success the append lock stays held (until
 * publish or ud_wal_cancel) and the record's bytes go to the stage at the returned segment's
 * end + 8.
 */
static int reserve_locked(struct ud_wal *wal, size_t len, struct ud_wal_segment **out)
{
    uint64_t fsize = ud_wal_frame_size(len);
    pthread_mutex_lock(&wal->lock);
    if (atomic_load_explicit(&wal->failed, memory_order_relaxed)) {
        pthread_mutex_unlock(&wal->lock);
        return UD_EIO;
    }
    struct ud_wal_segment *s = wal->segs[wal->nsegs - 1];
    bool sealed_now = false;
    if (s->sealed || s->end + fsize > s->size) {
        char msg[UD_ERRMSG_SIZE];
        sealed_now = !s->sealed;
        int rc = rotate_locked(wal, msg);
        if (rc != 0) {
            pthread_mutex_unlock(&wal->lock);
            ud_error("wal", "%s: append: %s", wal->dir, msg);
            return rc;
        }
        s = wal->segs[wal->nsegs - 1];
        UD_ASSERT(s->end + fsize <= s->size);
    }
    int rc = ud_wal_stage_reserve(wal, s, fsize);
    if (rc != 0) {
        pthread_mutex_unlock(&wal->lock);
        return rc;
    }
    uint64_t k = atomic_load_explicit(&s->count, memory_order_relaxed);
    uint32_t indexed = s->index_len;
    if (ud_wal_segment_index_add(wal, s, k, s->end) != 0) {
        pthread_mutex_unlock(&wal->lock);
        return UD_ENOMEM;
    }
    wal->reserved_len = (uint32_t)len;
    wal->reserved_sealed = sealed_now;
    wal->reserved_indexed = s->index_len != indexed;
    *out = s;
    return 0;
}

/* In ALWAYS mode default readers see durable records only: the listener hears of appends when a
 * sync (or the seal of the previous segment, made by the append) makes them durable. */
static void notify_listener(struct ud_wal *wal, void (*fn)(void *, uint64_t), void *arg,
                            uint64_t lsn)
{
    if (fn == NULL)
        return;
    fn(arg, wal->mode != UD_WAL_SYNC_ALWAYS ? lsn : atomic_load(&wal->durable_lsn));
    atomic_fetch_sub(&wal->listener_calls, 1);
}

/* Completes the reserved frame around its record (already in place), publishes it and releases
 * the append lock. */
static void publish_unlock(struct ud_wal *wal, uint32_t crc, uint64_t *lsn, struct ud_wal_pos *pos)
{
    struct ud_wal_segment *s = wal->segs[wal->nsegs - 1];
    uint64_t off = s->end;
    uint64_t fsize = ud_wal_frame_close(ud_wal_stage_at(wal, off), crc, wal->reserved_len);
    uint64_t k = atomic_load_explicit(&s->count, memory_order_relaxed);
    s->end = off + fsize;
    uint64_t l = s->first_lsn + k;
    /* Publication order: frame bytes, then the published end and the segment's count, then the
     * log's last LSN. A reader that acquires last_lsn >= l therefore finds the whole frame in
     * the stage, and writes it out if the file does not hold it yet. */
    atomic_store_explicit(&s->published, s->end, memory_order_release);
    atomic_store_explicit(&s->count, k + 1, memory_order_release);
    atomic_store_explicit(&wal->last_lsn, l, memory_order_release);
    wal->bytes_appended += fsize;
    void (*fn)(void *, uint64_t) = wal->listener;
    void *arg = wal->listener_arg;
    if (fn != NULL && (wal->mode != UD_WAL_SYNC_ALWAYS || wal->reserved_sealed))
        atomic_fetch_add(&wal->listener_calls, 1);
    else
        fn = NULL;
    uint32_t seg_id = s->id;
    /* A write step past what the file holds, or (NONE mode) past the unsynced threshold: wake the
     * helper once (it sets the next mark). */
    bool help = false;
    if (s->end >= atomic_load_explicit(&s->wake_at, memory_order_relaxed)) {
        atomic_store_explicit(&s->wake_at, UINT64_MAX, memory_order_relaxed);
        help = true;
    }
    if (s->end >= atomic_load_explicit(&s->sync_wake_at, memory_order_relaxed)) {
        atomic_store_explicit(&s->sync_wake_at, UINT64_MAX, memory_order_relaxed);
        help = true;
    }
    pthread_mutex_unlock(&wal->lock);
    if (help)
        help_wake(wal);

    ud_wal_wake_readers(wal);
    notify_listener(wal, fn, arg, l);
    if (lsn != NULL)
        *lsn = l;
    if (pos != NULL) {
        pos->segment_id = seg_id;
        pos->offset = off;
    }
}

static int check_length(struct ud_wal *wal, size_t len)
{
    if (len == 0)
        return UD_EINVAL;
    return len > wal->max_record ? UD_ELIMIT : 0;
}

int ud_wal_append(struct ud_wal *wal, const void *data, size_t len, uint64_t *lsn,
                  struct ud_wal_pos *pos)
{
    if (data == NULL)
        return UD_EINVAL;
    int rc = check_length(wal, len);
    if (rc != 0)
        return rc;
    /* The checksum is the only per-byte work besides the copy: do it before taking the lock. */
    uint32_t crc = ud_wal_frame_crc(data, (uint32_t)len);
    struct ud_wal_segment *s;
    if ((rc = reserve_locked(wal, len, &s)) != 0)
        return rc;
    memcpy(ud_wal_stage_at(wal, s->end + 8), data, len);
    publish_unlock(wal, crc, lsn, pos);
    return 0;
}

int ud_wal_reserve(struct ud_wal *wal, size_t len, uint8_t **data)
{
    int rc = check_length(wal, len);
    if (rc != 0)
        return rc;
    struct ud_wal_segment *s;
    if ((rc = reserve_locked(wal, len, &s)) != 0)
        return rc;
    *data = ud_wal_stage_at(wal, s->end + 8);
    return 0;
}

void ud_wal_commit(struct ud_wal *wal, uint64_t *lsn, struct ud_wal_pos *pos)
{
    struct ud_wal_segment *s = wal->segs[wal->nsegs - 1];
    /* Under the lock, unlike ud_wal_append's: the bytes were just written, so they are in the
     * cache. Meanwhile the helper, a group-commit round starting and readers changing segment
     * wait; the engine's appends are serialized by its own lock anyway. With this path sync
     * always with 64 writers went from 38-55k to 51-60k records/s, 3 pairs (docs/benchmarks.md,
     * "KV writes encoded into their WAL frame"). */
    publish_unlock(wal, ud_wal_frame_crc(ud_wal_stage_at(wal, s->end + 8), wal->reserved_len), lsn,
                   pos);
}

void ud_wal_cancel(struct ud_wal *wal)
{
    struct ud_wal_segment *s = wal->segs[wal->nsegs - 1];
    /* The bytes stay in the stage, beyond the end: only frames below the end are ever written
     * into the file, whose tail stays zero. */
    if (wal->reserved_indexed)
        s->index_len--;
    void (*fn)(void *, uint64_t) = NULL;
    void *arg = wal->listener_arg;
    if (wal->reserved_sealed && wal->mode == UD_WAL_SYNC_ALWAYS && wal->listener != NULL) {
        fn = wal->listener;
        atomic_fetch_add(&wal->listener_calls, 1);
    }
    pthread_mutex_unlock(&wal->lock);
    notify_listener(wal, fn, arg, 0);
}

int ud_wal_rotate(struct ud_wal *wal, char *errmsg)
{
    pthread_mutex_lock(&wal->lock);
    if (atomic_load(&wal->failed)) {
        pthread_mutex_unlock(&wal->lock);
        return ud_wal_fail_error(wal, errmsg);
    }
    struct ud_wal_segment *s = wal->segs[wal->nsegs - 1];
    int rc = 0;
    if (s->sealed || atomic_load(&s->count) > 0)
        rc = rotate_locked(wal, errmsg);
    /* Sealing made the segment durable: in ALWAYS mode that is when readers see its records. */
    void (*fn)(void *, uint64_t) = wal->mode == UD_WAL_SYNC_ALWAYS ? wal->listener : NULL;
    void *arg = wal->listener_arg;
    if (fn != NULL)
        atomic_fetch_add(&wal->listener_calls, 1);
    pthread_mutex_unlock(&wal->lock);
    if (fn != NULL) {
        fn(arg, atomic_load(&wal->durable_lsn));
        atomic_fetch_sub(&wal->listener_calls, 1);
    }
    return rc;
}

/* ---- Durability ---- */

/*
 * Lets appends that are about to happen join the coming fsync. Without this, committers split
 * into two cohorts that alternate: the threads released by one fsync append while a waiter left
 * over from the previous round has already started the next fsync, so each fsync covers about
 * half of the writers (measured: 8 records per fsync with 16 writers, 31 with 64). The syncer
 * yields while new records keep arriving, for at most half the last fsync's duration; a lone
 * writer sees no new record after one yield and pays about a microsecond.
 */
static void gather_appends(struct ud_wal *wal)
{
    uint64_t budget = atomic_load_explicit(&wal->last_sync_ns, memory_order_relaxed) / 2;
    if (budget > 1000000u)
        budget = 1000000u;
    uint64_t start = ud_mono_ns();
    uint64_t seen = atomic_load_explicit(&wal->last_lsn, memory_order_relaxed);
    for (;;) {
        sched_yield();
        uint64_t now = atomic_load_explicit(&wal->last_lsn, memory_order_relaxed);
        if (now == seen || ud_mono_ns() - start >= budget)
            return;
        seen = now;
    }
}

/*
 * Waiting for a group-commit round. A condition variable made every waiter re-take its mutex on
 * wake-up: with 64 committers the broadcast turned into a convoy of lock hand-offs and context
 * switches (perf: ~20% of the committers' CPU in the mutex after pthread_cond_wait). A futex on
 * the round count lets each waiter wake and check durable_lsn on its own.
 *
 * Waking every waiter at the end of each round was still one wake-up too many for most of
 * them: committers append while the running round's fsync is under way, after its target was
 * taken, so that round cannot cover them; woken at its end, they found themselves not durable
 * and slept again until the next one. Each waiter therefore sleeps with the futex bit of the
 * round that covers it (FUTEX_WAIT_BITSET): the running one when its target covers the
 * waiter's LSN (or is not known yet), else the next one. A round's end wakes its own waiters
 * and one waiter of the next round, which starts that round.
 *
 * A round's end is not the only way a committer becomes durable: sealing a segment fsyncs it
 * (rotate_locked), which covers waiters of the running round and of the next one. The seal wakes
 * every sleeper (wake_every_committer; once per segment), so that no durable committer sleeps
 * until a round it no longer needs, and the waiter woken to start the next round is never one
 * that returns without starting it: any sleeper left after a seal was not durable when it last
 * looked, and only a round can change that. The futex word is sync_wake, bumped at both events,
 * not the round count: a seal must not renumber the running round.
 */
static uint32_t round_bit(uint32_t round)
{
    return 1u << (round & 31);
}

static void futex_wake(struct ud_wal *wal, int n, uint32_t bits)
{
    syscall(SYS_futex, &wal->sync_wake, FUTEX_WAKE_BITSET_PRIVATE, n, NULL, NULL, bits);
}

static bool sync_sleepers(struct ud_wal *wal)
{
    return atomic_load(&wal->sync_waiters[0]) > 0 || atomic_load(&wal->sync_waiters[1]) > 0;
}

/* Sleeps until sync_wake moves from `wake` (read before the caller looked at durable_lsn). */
static void sync_wait(struct ud_wal *wal, uint32_t wake, uint32_t round)
{
    atomic_int *count = &wal->sync_waiters[round & 1];
    atomic_fetch_add(count, 1);
    /* seq_cst with the bump of sync_wake and the store of syncing (sync_done, and the seal's
     * wake_every_committer): either the waiter sees the event (and does not sleep), or the
     * waker sees the waiter (and wakes it, or one waiter of the next round). */
    if (atomic_load(&wal->sync_wake) == wake && atomic_load(&wal->syncing))
        syscall(SYS_futex, &wal->sync_wake, FUTEX_WAIT_BITSET_PRIVATE, wake, NULL, NULL,
                round_bit(round));
    atomic_fetch_sub(count, 1);
}

/* After a seal advanced durable_lsn (under the append lock), or the log failed: every sleeper
 * looks again. */
static void wake_every_committer(struct ud_wal *wal)
{
    atomic_fetch_add(&wal->sync_wake, 1);
    if (sync_sleepers(wal))
        futex_wake(wal, INT_MAX, FUTEX_BITSET_MATCH_ANY);
}

/* Ends round `round` (the syncer's): wakes the waiters it covered and one waiter of the next
 * round, which starts it; on a failure, every waiter (they all return the error). */
static void sync_done(struct ud_wal *wal, uint32_t round, bool failed)
{
    atomic_fetch_add(&wal->sync_seq, 1);
    atomic_fetch_add(&wal->sync_wake, 1);
    atomic_store(&wal->syncing, false);
    if (failed) {
        if (sync_sleepers(wal))
            futex_wake(wal, INT_MAX, FUTEX_BITSET_MATCH_ANY);
        return;
    }
    if (atomic_load(&wal->sync_waiters[round & 1]) > 0)
        futex_wake(wal, INT_MAX, round_bit(round));
    if (atomic_load(&wal->sync_waiters[(round + 1) & 1]) > 0)
        futex_wake(wal, 1, round_bit(round + 1));
}

/* A round's fsync took ns: noted for the next round's gathering and for ud_wal_stats. Rounds run
 * one at a time (syncing), so the maximum needs no compare-and-swap. */
static void note_round(struct ud_wal *wal, uint64_t ns)
{
    atomic_store_explicit(&wal->last_sync_ns, ns, memory_order_relaxed);
    atomic_fetch_add_explicit(&wal->sync_rounds, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&wal->sync_ns, ns, memory_order_relaxed);
    if (ns > atomic_load_explicit(&wal->sync_max_ns, memory_order_relaxed))
        atomic_store_explicit(&wal->sync_max_ns, ns, memory_order_relaxed);
}

/*
 * Group commit. One caller at a time becomes the syncer: it notes the newest appended LSN and the
 * unsynced byte range under the append lock, releases the lock so appends go on, fsyncs, then
 * publishes the new durable LSN and wakes the waiters that LSN covers (sync_wait). Waiters whose
 * LSN is not covered (appended during that fsync) sleep on until the next round, which one of
 * them starts. Only the active segment can hold unsynced bytes: rotation fsyncs a segment when it
 * seals it.
 */
static int sync_upto(struct ud_wal *wal, uint64_t lsn, char *errmsg)
{
    uint64_t last = atomic_load_explicit(&wal->last_lsn, memory_order_acquire);
    if (lsn > last)
        lsn = last;
    for (;;) {
        if (atomic_load(&wal->failed))
            return ud_wal_fail_error(wal, errmsg);
        /* The wake-up count first: if a round ends or a seal happens after this, it has moved
         * and the wait below returns at once; and both publish durable_lsn before they bump
         * it, so the check below sees the new LSN. The round count is bumped before it. */
        uint32_t wake = atomic_load(&wal->sync_wake);
        uint32_t seq = atomic_load(&wal->sync_seq);
        if (atomic_load_explicit(&wal->durable_lsn, memory_order_acquire) >= lsn)
            return 0;
        bool idle = false;
        if (atomic_compare_exchange_strong(&wal->syncing, &idle, true))
            break;
        /* The running round's target, once its syncer has taken it: a round that will not
         * cover us is not worth waking for. */
        uint32_t round = seq;
        if (atomic_load_explicit(&wal->sync_round_tag, memory_order_acquire) == seq + 1 &&
            lsn > atomic_load_explicit(&wal->sync_target, memory_order_relaxed))
            round = seq + 1;
        sync_wait(wal, wake, round);
    }
    /* Rounds end (sync_done) with the count incremented before syncing is cleared, so the count
     * read now is this round's, and stays so until this round ends. */
    uint32_t round = atomic_load(&wal->sync_seq);

    gather_appends(wal);
    pthread_mutex_lock(&wal->lock);
    uint64_t target = atomic_load(&wal->last_lsn);
    atomic_store_explicit(&wal->sync_target, target, memory_order_relaxed);
    atomic_store_explicit(&wal->sync_round_tag, round + 1, memory_order_release);
    struct ud_wal_segment *s = wal->segs[wal->nsegs - 1];
    /* The active segment's header stays as created: rewritten in place, a power cut could tear
     * it in front of durable frames. Recovery scans the frames; the seal writes the header. */
    uint64_t from = s->synced, to = s->end;
    ud_wal_segment_ref(s);
    void (*fn)(void *, uint64_t) = wal->mode == UD_WAL_SYNC_ALWAYS ? wal->listener : NULL;
    void *arg = wal->listener_arg;
    if (fn != NULL)
        atomic_fetch_add(&wal->listener_calls, 1);
    pthread_mutex_unlock(&wal->lock);

    char msg[UD_ERRMSG_SIZE];
    int rc = 0;
    if (to > from) {
        uint64_t t0 = ud_mono_ns();
        rc = ud_wal_sync_range(wal, s, from, to, msg);
        if (rc == 0) /* a round that fsynced (ud_wal_stats): at most the syncs */
            note_round(wal, ud_mono_ns() - t0);
    }
    if (rc == 0) {
        pthread_mutex_lock(&wal->lock);
        if (s->synced < to)
            s->synced = to;
        pthread_mutex_unlock(&wal->lock);
    } else {
        ud_errwrap(msg, rc, "sync segment %s", s->name);
        ud_wal_set_failed(wal, msg);
    }
    ud_wal_segment_unref(s);

    if (rc == 0)
        ud_wal_advance_durable(wal, target);
    sync_done(wal, round, rc != 0);

    if (rc == 0 && wal->mode == UD_WAL_SYNC_ALWAYS) {
        ud_wal_wake_readers(wal);
        if (fn != NULL)
            fn(arg, atomic_load(&wal->durable_lsn));
    }
    if (fn != NULL)
        atomic_fetch_sub(&wal->listener_calls, 1);
    if (rc != 0)
        return ud_wal_fail_error(wal, errmsg);
    /* The caller's LSN was appended before target was read, so target covers it. */
    UD_ASSERT(target >= lsn);
    return 0;
}

int ud_wal_sync(struct ud_wal *wal, uint64_t lsn, char *errmsg)
{
    if (atomic_load(&wal->failed))
        return ud_wal_fail_error(wal, errmsg);
    if (wal->mode != UD_WAL_SYNC_ALWAYS)
        return 0;
    return sync_upto(wal, lsn, errmsg);
}

/* The callers sync everything because something else is about to let go of its copy of these
 * records (raft's log, the store's checkpoint): recovery must then never cut them as a torn tail,
 * so the floor goes up with the sync. */
int ud_wal_sync_all(struct ud_wal *wal, char *errmsg)
{
    int rc = sync_upto(wal, atomic_load(&wal->last_lsn), errmsg);
    if (rc == 0)
        rc = ud_wal_floor_raise(wal, atomic_load(&wal->durable_lsn), errmsg);
    return rc;
}

/* ---- Introspection ---- */

int ud_wal_position_of(struct ud_wal *wal, uint64_t lsn, uint32_t *segment_id, uint64_t *offset)
{
    pthread_mutex_lock(&wal->lock);
    uint64_t first = atomic_load(&wal->first_lsn);
    uint64_t last = atomic_load(&wal->last_lsn);
    int rc = lsn < first ? UD_EGONE : lsn > last + 1 ? UD_ERANGE : 0;
    if (rc == 0) {
        struct ud_wal_segment *s = wal->segs[ud_wal_find_segment(wal, lsn)];
        *segment_id = s->id;
        *offset = ud_wal_segment_locate(wal, s, lsn - s->first_lsn);
    }
    pthread_mutex_unlock(&wal->lock);
    return rc;
}

uint64_t ud_wal_first_lsn(struct ud_wal *wal)
{
    return atomic_load(&wal->first_lsn);
}

uint64_t ud_wal_last_lsn(struct ud_wal *wal)
{
    return atomic_load(&wal->last_lsn);
}

uint64_t ud_wal_durable_lsn(struct ud_wal *wal)
{
    return atomic_load(&wal->durable_lsn);
}

void ud_wal_stats(struct ud_wal *wal, struct ud_wal_stats *st)
{
    pthread_mutex_lock(&wal->lock);
    struct ud_wal_segment *s = wal->segs[wal->nsegs - 1];
    st->first_lsn = atomic_load(&wal->first_lsn);
    st->last_lsn = atomic_load(&wal->last_lsn);
    st->durable_lsn = atomic_load(&wal->durable_lsn);
    st->segments = wal->nsegs;
    st->active_segment = s->id;
    st->active_offset = s->end;
    st->bytes_appended = wal->bytes_appended;
    st->syncs = atomic_load(&wal->syncs);
    st->sync_rounds = atomic_load(&wal->sync_rounds);
    st->sync_ns = atomic_load(&wal->sync_ns);
    st->sync_max_ns = atomic_load(&wal->sync_max_ns);
    pthread_mutex_unlock(&wal->lock);
}

void ud_wal_set_listener(struct ud_wal *wal, void (*fn)(void *arg, uint64_t lsn), void *arg)
{
    pthread_mutex_lock(&wal->lock);
    wal->listener = fn;
    wal->listener_arg = fn ? arg : NULL;
    pthread_mutex_unlock(&wal->lock);
    /* A call that read the old listener under the lock may still be running: wait for it, so the
     * caller may free the old argument. Calls are short (a uv_async_send), so yielding is enough.
     * The counter may also count calls of the new listener: waiting for those is harmless. */
    while (atomic_load(&wal->listener_calls) > 0)
        sched_yield();
}

/* ---- Retention ---- */

int ud_wal_retain(struct ud_wal *wal, const struct ud_wal_retention *policy, uint64_t keep_lsn,
                  uint32_t *removed, char *errmsg)
{
    uint32_t n = 0;
    int rc = 0;
    if (removed != NULL)
        *removed = 0;
    if (policy == NULL || (policy->max_segments == 0 && policy->max_age_ms == 0))
        return 0;

    pthread_mutex_lock(&wal->retain_lock);
    uint64_t now = ud_now_ns();
    for (;;) {
        pthread_mutex_lock(&wal->lock);
        /* The newest segment is never a candidate, even when sealed after a failed rotation. */
        if (wal->nsegs <= 1) {
            pthread_mutex_unlock(&wal->lock);
            break;
        }
        struct ud_wal_segment *s = wal->segs[0];
        uint32_t sealed = wal->nsegs - 1;
        uint64_t end_lsn = s->first_lsn + atomic_load(&s->count);
        bool below = end_lsn <= keep_lsn;
        bool over = policy->max_segments != 0 && sealed > policy->max_segments;
        bool old = policy->max_age_ms != 0 && now > s->modified_ns &&
                   (now - s->modified_ns) / 1000000u > policy->max_age_ms;
        /* Nor is the segment holding the newest DURABLE record: the records after it may be
         * lost (unsynced in mode none or interval, or only in the stage), or there are none (a
         * restart after a seal whose next segment could not be created). That record is what a
         * reopened namespace reads its raft position from (without it raft would apply its log
         * again, at new LSNs) and what a catch-up compares with a peer's. */
        bool newest = end_lsn > atomic_load(&wal->durable_lsn);
        if (!s->sealed || !below || newest || !(over || old)) {
            pthread_mutex_unlock(&wal->lock);
            break;
        }
        char path[4096];
        rc = ud_wal_segment_path(wal, s->name, path, sizeof path);
        pthread_mutex_unlock(&wal->lock);
        if (rc != 0) {
            rc = ud_errf(errmsg, UD_EIO, "retention: segment %s: path too long", s->name);
            break;
        }

        /* Unlink and directory fsync one file at a time, oldest first: whatever a crash keeps,
         * the files left on disk stay a contiguous run, never a log with a hole. */
        rc = wal->fs->unlink(wal->fs, path, errmsg);
        if (rc == UD_ENOTFOUND)
            rc = 0;
        if (rc == 0)
            rc = wal->fs->sync_dir(wal->fs, wal->dir, errmsg);
        if (rc != 0) {
            rc = ud_errwrap(errmsg, UD_EIO, "retention: remove segment %s", s->name);
            break;
        }
        pthread_mutex_lock(&wal->lock);
        UD_ASSERT(wal->segs[0] == s);
        memmove(wal->segs, wal->segs + 1, (wal->nsegs - 1) * sizeof *wal->segs);
        wal->nsegs--;
        atomic_store(&wal->first_lsn, wal->segs[0]->first_lsn);
        pthread_mutex_unlock(&wal->lock);
        ud_debug("wal", "%s: removed segment %s (LSN < %llu)", wal->dir, s->name,
                 (unsigned long long)end_lsn);
        /* Readers still reading it keep the mapping alive through their own reference. */
        ud_wal_segment_unref(s);
        n++;
    }
    pthread_mutex_unlock(&wal->retain_lock);
    if (removed != NULL)
        *removed = n;
    return rc;
}

/* ---- Backup ---- */

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != 0)
            return false;
    return true;
}

/* Byte-identical copy into file name of directory dirfd (created there, exclusively and never
 * through a symbolic link); all-zero blocks become holes (the preallocated tail reads back as
 * zeros). dest names the directory in messages. */
static int copy_segment(const struct ud_wal_segment *s, int dirfd, const char *dest,
                        struct stat *made, char *errmsg)
{
    int fd = openat(dirfd, s->name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0) /* EEXIST: another backup into the same directory got there first */
        return ud_errf(errmsg,
                       errno == ENOSPC   ? UD_ENOSPC
                       : errno == EEXIST ? UD_EEXIST
                                         : UD_EIO,
                       "create %s/%s: %s%s", dest, s->name, strerror(errno),
                       errno == EEXIST ? " (another backup is writing into this directory)" : "");
    const size_t block = 1u << 20;
    int err = 0;
    const char *what = "write";
    for (uint64_t off = 0; off < s->size && err == 0; off += block) {
        size_t n = s->size - off < block ? (size_t)(s->size - off) : block;
        if (!all_zero(s->map + off, n))
            err = ud_pwrite_all(fd, s->map + off, n, off);
    }
    if (err == 0 && ftruncate(fd, (off_t)s->size) != 0) {
        err = errno;
        what = "truncate";
    }
    if (err == 0 && fsync(fd) != 0) {
        err = errno;
        what = "fsync";
    }
    if (err == 0 && fstat(fd, made) != 0) {
        err = errno;
        what = "stat";
    }
    close(fd);
    if (err != 0) {
        unlinkat(dirfd, s->name, 0);
        return ud_errf(errmsg, err == ENOSPC || err == EDQUOT ? UD_ENOSPC : UD_EIO, "%s %s/%s: %s",
                       what, dest, s->name, strerror(err));
    }
    return 0;
}

static int check_empty_dir(int dirfd, const char *dir, char *errmsg)
{
    int fd = dup(dirfd);
    DIR *d = fd < 0 ? NULL : fdopendir(fd);
    if (d == NULL) {
        if (fd >= 0)
            close(fd);
        return ud_errf(errmsg, UD_EIO, "open %s: %s", dir, strerror(errno));
    }
    rewinddir(d); /* the duplicate shares the caller's position in the directory */
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
            rc = ud_errf(errmsg, UD_EEXIST, "backup directory %s is not empty (holds %s)", dir,
                         e->d_name);
            break;
        }
    }
    closedir(d);
    return rc;
}

static int wal_backup_locked(struct ud_wal *wal, int dirfd, const char *dest, uint64_t after,
                             uint32_t **ids, uint32_t *copied, char *errmsg);

int ud_wal_backup_at(struct ud_wal *wal, int dirfd, const char *dest, uint64_t after,
                     uint32_t **ids, uint32_t *copied, char *errmsg)
{
    if (copied != NULL)
        *copied = 0;
    if (ids != NULL)
        *ids = NULL;
    /*
     * The directory is this backup's for its whole run: a second backup into it is refused (409)
     * whenever they overlap, not only when their file names happen to collide, and it cannot add
     * files of its own to ours or remove ours. The lock goes with dirfd's close, or below.
     */
    bool locked = flock(dirfd, LOCK_EX | LOCK_NB) == 0;
    if (!locked) {
        int err = errno;
        if (err == EWOULDBLOCK)
            return ud_errf(errmsg, UD_EEXIST,
                           "backup %s: lock %s: another backup into it is under way", wal->dir,
                           dest);
        /* A file system without flock on a read-only directory descriptor (NFS emulates flock
         * with POSIX locks, which want one open for writing): the exclusive creates and the
         * clean-up's (dev, ino) check still keep two backups from taking each other's files. */
        ud_warn("wal", "backup %s: lock %s: %s; copying without the lock", wal->dir, dest,
                strerror(err));
    }
    int rc = wal_backup_locked(wal, dirfd, dest, after, ids, copied, errmsg);
    if (locked)
        flock(dirfd, LOCK_UN);
    return rc;
}

static int wal_backup_locked(struct ud_wal *wal, int dirfd, const char *dest, uint64_t after,
                             uint32_t **ids, uint32_t *copied, char *errmsg)
{
    int rc = check_empty_dir(dirfd, dest, errmsg);
    if (rc != 0)
        return ud_errwrap(errmsg, rc, "backup %s", wal->dir);

    /* Pin the sealed segments after `after` so retention cannot unmap them during the copy; the
     * earlier ones are never copied (a backup of the last few needs room for those only). */
    pthread_mutex_lock(&wal->lock);
    uint32_t n = 0;
    struct ud_wal_segment **list = malloc((wal->nsegs ? wal->nsegs : 1) * sizeof *list);
    if (list != NULL) {
        for (uint32_t i = 0; i < wal->nsegs; i++) {
            if (wal->segs[i]->sealed && wal->segs[i]->id > after) {
                ud_wal_segment_ref(wal->segs[i]);
                list[n++] = wal->segs[i];
            }
        }
    }
    pthread_mutex_unlock(&wal->lock);
    if (list == NULL)
        return ud_errf(errmsg, UD_ENOMEM, "backup %s: out of memory", wal->dir);

    /* Allocated before copying: an out-of-memory after the copy would throw a whole backup away. */
    uint32_t *out = ids != NULL ? malloc((n ? n : 1) * sizeof *out) : NULL;
    struct stat *made = malloc((n ? n : 1) * sizeof *made);
    if ((ids != NULL && out == NULL) || made == NULL) {
        free(out);
        free(made);
        for (uint32_t i = 0; i < n; i++)
            ud_wal_segment_unref(list[i]);
        free(list);
        return ud_errf(errmsg, UD_ENOMEM, "backup %s: out of memory", wal->dir);
    }

    uint32_t done = 0;
    for (; done < n; done++)
        if ((rc = copy_segment(list[done], dirfd, dest, &made[done], errmsg)) != 0)
            break;
    if (rc == 0 && fsync(dirfd) != 0)
        rc = ud_errf(errmsg, errno == ENOSPC ? UD_ENOSPC : UD_EIO, "fsync directory %s: %s", dest,
                     strerror(errno));
    if (rc != 0) {
        free(out);
        out = NULL;
        /* Leave the directory as it was found (empty), so that a retry into it can succeed: the
         * files this call created go, the one that failed is already gone. A name that no longer
         * holds the file we created (something renamed over it: a btree/backup naming it) is
         * left alone. */
        for (uint32_t i = 0; i < done; i++) {
            struct stat now;
            if (fstatat(dirfd, list[i]->name, &now, AT_SYMLINK_NOFOLLOW) == 0 &&
                now.st_dev == made[i].st_dev && now.st_ino == made[i].st_ino)
                unlinkat(dirfd, list[i]->name, 0);
        }
        if (done > 0)
            fsync(dirfd);
    }
    for (uint32_t i = 0; i < n; i++) {
        if (out != NULL)
            out[i] = list[i]->id;
        ud_wal_segment_unref(list[i]);
    }
    free(list);
    free(made);
    if (rc != 0)
        return ud_errwrap(errmsg,
                          rc == UD_ENOSPC || rc == UD_EEXIST || rc == UD_ENOMEM ? rc : UD_EIO,
                          "backup %s to %s", wal->dir, dest);
    if (ids != NULL)
        *ids = out;
    if (copied != NULL)
        *copied = done;
    return 0;
}

int ud_wal_backup(struct ud_wal *wal, const char *dest_dir, uint32_t *copied, char *errmsg)
{
    if (copied != NULL)
        *copied = 0;
    if (dest_dir == NULL || dest_dir[0] == '\0')
        return ud_errf(errmsg, UD_EINVAL, "backup: destination directory is required");
    int rc = make_dirs(wal->fs, dest_dir, errmsg);
    if (rc != 0)
        return ud_errwrap(errmsg, rc, "backup %s", wal->dir);
    int dirfd = open(dest_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0)
        return ud_errf(errmsg, UD_EIO, "backup %s: open %s: %s", wal->dir, dest_dir,
                       strerror(errno));
    rc = ud_wal_backup_at(wal, dirfd, dest_dir, 0, NULL, copied, errmsg);
    close(dirfd);
    return rc;
}
