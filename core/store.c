/* The LMDB store: environment, sub-databases, snapshots, writes with map growth, backups. */
#include "core/store.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <lmdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/crc32c.h"
#include "core/dir.h"
#include "core/endian.h"
#include "core/err.h"
#include "core/keyspace.h"
#include "core/log.h"
#include "core/page_ahead.h"
#include "core/writeback.h"

#define DEFAULT_MAP_SIZE (1ull << 30)

/*
 * Environment flags (docs/format-lmdb.md "Environment"):
 *  - no MDB_WRITEMAP: a write transaction modifies malloc'd copies of its pages and writes them
 *    with pwrite at commit. With MDB_WRITEMAP the commit's msync wrote back pages of a mapping
 *    that other threads of the process use, and write-protecting each one cost a TLB-shootdown
 *    IPI per page: 17 % of the writer's CPU under a SET load (docs/benchmarks.md). The copies are
 *    anonymous memory until the commit, and LMDB keeps them for reuse afterwards, so the engine's
 *    flush bounds the pages one transaction dirties (core/engine_flush.c).
 *  - MDB_NORDAHEAD: random gets of a store larger than memory do not want readahead.
 */
#define ENV_FLAGS (MDB_NOTLS | MDB_NORDAHEAD)

/*
 * ThreadSanitizer cannot see LMDB's own synchronization (liblmdb is not instrumented): a reader's
 * load of a committed page, or a write transaction reusing a buffer or page an ended snapshot had
 * read, could be reported as races. These annotations state the order LMDB guarantees: a commit
 * happens before the snapshots begun after it, and an ended snapshot before the write transactions
 * begun after it (which are the only ones that may reuse its pages). They compile to nothing
 * otherwise.
 */
#if defined(__SANITIZE_THREAD__)
#define UD_STORE_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UD_STORE_TSAN 1
#endif
#endif
#ifdef UD_STORE_TSAN
#include <sanitizer/tsan_interface.h>
/* In the ThreadSanitizer runtime, not declared by every version of its header. */
void __tsan_ignore_thread_begin(void);
void __tsan_ignore_thread_end(void);
#define LMDB_PUBLISH(s)     __tsan_release((void *)&(s)->env)
#define LMDB_OBSERVE(s)     __tsan_acquire((void *)&(s)->env)
#define LMDB_IGNORE_BEGIN() __tsan_ignore_thread_begin()
#define LMDB_IGNORE_END()   __tsan_ignore_thread_end()
#else
#define LMDB_PUBLISH(s)     ((void)(s))
#define LMDB_OBSERVE(s)     ((void)(s))
#define LMDB_IGNORE_BEGIN() ((void)0)
#define LMDB_IGNORE_END()   ((void)0)
#endif

/*
 * Reader slots in the lock file. Each open snapshot and each idle cached read transaction holds
 * one (MDB_NOTLS ties the slot to the transaction, not the thread). LMDB's default of 126 is tight
 * for a server with many request threads; 1024 slots cost 64 KiB of lock file.
 */
#define MAX_READERS 1024

/* Idle read transactions kept for reuse. Beyond this, ended snapshots are freed. */
#define SNAP_CACHE_SLOTS 16

/* Sub-databases, in the order of s->dbi[]. The enum ud_space values map to the first three. */
enum {
    DB_KV,
    DB_ROW,
    DB_LOB,
    DB_LOB_CHUNK,
    DB_META,
    DB_COUNT,
};

static const char *const db_names[DB_COUNT] = {"kv", "row", "lob", "lob_chunk", "meta"};

/* Keys in the meta database. */
#define META_FORMAT      "format"
#define META_CHECKPOINT  "checkpoint"
#define META_AHEAD       "flush_ahead"
#define META_INCARNATION "incarnation"

/* Checkpoint: u8 version | u64le flushed_lsn | u32le n | n x (id[16] u64le lsn) | u32le crc */
#define CHECKPOINT_ENCODING 1
#define CHECKPOINT_HEAD     13
#define CHECKPOINT_TXN      24
#define CHECKPOINT_MIN      (CHECKPOINT_HEAD + 4)

struct ud_store {
    MDB_env *env;
    MDB_dbi dbi[DB_COUNT];
    char *dir;
    uint64_t max_map_size; /* 0: unlimited */
    /* META_INCARNATION, read at open or stamped since (ud_store_stamp_incarnation); 0: none */
    _Atomic uint64_t incarnation;

    /*
     * mdb_env_set_mapsize() unmaps and remaps the data file, so no transaction of this process may
     * be active while it runs (LMDB leaves that to the caller). Snapshots and backups hold this
     * lock shared; growing the map holds it exclusive. It prefers writers so a steady stream of
     * readers cannot starve a growth that the flush thread is waiting on.
     */
    pthread_rwlock_t map_lock;

    /* Serializes ud_store_write: growth must happen with no write transaction open. */
    pthread_mutex_t write_mu;
    /* (write_mu) The data file's page cache past LMDB's last page, in single pages. */
    struct ud_page_ahead ahead;
    struct ud_writeback *writeback; /* NULL: commits write back their own pages */
    uint32_t page_size;

    /* Ended snapshots, ready for reuse (lock-free: whoever exchanges a slot to NULL owns it).
     * Their read transactions stay open (see ud_store_snap_begin). */
    _Atomic(struct ud_store_snap *) idle[SNAP_CACHE_SLOTS];
    /* Counts commit attempts: incremented after each one, so a snapshot taken when it read G
     * sees every commit up to the G-th. */
    _Atomic uint64_t commit_gen;

    atomic_int open_snaps;
    atomic_int backups; /* copies in progress, holding map_lock shared */

    /* A write group (ud_store_group_begin) and the copies of the environment exclude each other,
     * so a copy never holds some of a group's transactions without the others. */
    pthread_mutex_t group_mu;
    pthread_cond_t group_cv;
    int group_open; /* (group_mu) */
    int copies;     /* (group_mu) copies in progress or waiting to start */
    int copy_waits; /* (group_mu) copies waiting in copy_enter: ud_store_close waits for them */
    int closing;    /* (group_mu) ud_store_close began: waiting copies give up */
    /* Set when remapping failed and the environment has no mapping: every later call fails. */
    atomic_int broken;
};

struct ud_store_cursor {
    struct ud_store_snap *snap; /* NULL once its snapshot has ended */
    MDB_cursor *mc;             /* owned */
    int db;
    int started;    /* a seek or next has run since open */
    int positioned; /* key/val hold the current entry */
    MDB_val key, val;
    struct ud_store_cursor *prev, *next; /* the snapshot's list of open cursors */
};

struct ud_store_snap {
    struct ud_store *store;
    MDB_txn *txn; /* owned */
    int live;     /* txn is open (not reset) */
    uint64_t gen; /* commit_gen read before txn was begun or renewed (valid when live) */
    /* One closed cursor per sub-database, kept for mdb_cursor_renew (owned). */
    struct ud_store_cursor *spare[DB_COUNT];
    struct ud_store_cursor *open; /* cursors handed out and not yet closed */
};

struct ud_store_batch {
    struct ud_store *store;
    MDB_txn *txn;
    char *errmsg;
    int failed;   /* UD_E* of the first LMDB failure: the transaction must not commit */
    int map_full; /* an operation hit MDB_MAP_FULL: grow and run fn again */
};

/* --- errors ----------------------------------------------------------------------------------- */

/* Translates an LMDB return code (LMDB's own negative codes or an errno value) to UD_E*. */
static int lmdb_code(int rc)
{
    switch (rc) {
    case MDB_SUCCESS:
        return UD_OK;
    case MDB_NOTFOUND:
        return UD_ENOTFOUND;
    case MDB_MAP_FULL:
        return UD_EMAPFULL;
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_INVALID:
    case MDB_INCOMPATIBLE:
        return UD_ECORRUPT;
    case MDB_VERSION_MISMATCH:
        return UD_EVERSION;
    case MDB_BAD_VALSIZE:
    case MDB_TXN_FULL:
    case MDB_CURSOR_FULL:
    case MDB_DBS_FULL:
        return UD_ELIMIT;
    case MDB_READERS_FULL:
        return UD_EBUSY;
    case MDB_KEYEXIST:
        return UD_EEXIST;
    case ENOSPC:
    case EDQUOT:
        return UD_ENOSPC;
    case ENOMEM:
        return UD_ENOMEM;
    case EINVAL:
        return UD_EINVAL;
    default:
        return UD_EIO;
    }
}

/* Formats "<context>: <LMDB's description>" into errmsg and returns the translated code. */
__attribute__((format(printf, 3, 4))) static int lmdb_errf(char *errmsg, int rc, const char *fmt,
                                                           ...)
{
    int code = lmdb_code(rc);
    if (errmsg == NULL)
        return code;
    char ctx[UD_ERRMSG_SIZE];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx, sizeof ctx, fmt, ap);
    va_end(ap);
    const char *why = mdb_strerror(rc);
    if (rc == ENOSPC || rc == EDQUOT)
        why = "disk full (No space left on device)";
    return ud_errf(errmsg, code, "%s: %s", ctx, why);
}

static int space_db(int space)
{
    switch (space) {
    case UD_SPACE_KV:
        return DB_KV;
    case UD_SPACE_ROW:
        return DB_ROW;
    case UD_SPACE_LOB:
        return DB_LOB;
    default:
        return -1;
    }
}

static const char *space_name(int space)
{
    int db = space_db(space);
    return db < 0 ? "invalid" : db_names[db];
}

/* --- map size --------------------------------------------------------------------------------- */

static uint64_t current_map_size(struct ud_store *s)
{
    MDB_envinfo info;
    mdb_env_info(s->env, &info);
    return info.me_mapsize;
}

/*
 * Takes map_lock exclusively. Two hazards shape the wait:
 *  - A thread that holds a snapshot and begins another one blocks behind a waiting writer of a
 *    writer-preferring lock while the writer waits for it: a deadlock. Waiting in bounded slices,
 *    each followed by a spell of polling that does not queue, breaks it: the blocked readers get
 *    in, finish, and a later attempt succeeds.
 *  - A backup holds the lock shared for as long as the copy takes. Queueing behind it would stall
 *    every new snapshot for that long, so while a backup runs we only poll.
 */
static void lock_map_exclusive(struct ud_store *s)
{
    uint64_t waited_ms = 0, next_warn_ms = 10000;
    for (;;) {
        if (atomic_load(&s->backups) > 0) {
            if (pthread_rwlock_trywrlock(&s->map_lock) == 0)
                return;
            struct timespec pause = {0, 10 * 1000000L};
            nanosleep(&pause, NULL);
            waited_ms += 10;
        } else {
            struct timespec deadline;
            clock_gettime(CLOCK_MONOTONIC, &deadline);
            deadline.tv_sec += 1;
            int rc = pthread_rwlock_clockwrlock(&s->map_lock, CLOCK_MONOTONIC, &deadline);
            if (rc == 0)
                return;
            UD_ASSERT(rc == ETIMEDOUT);
            waited_ms += 1000;
            /* Retrying the blocking wait at once can register this writer again before the
             * readers it held back have run (seen under load), so a reader nested in a held
             * snapshot would stay blocked. Poll without queueing for a while: nothing then
             * holds readers back, the nested snapshot completes and lets its outer one end. */
            for (int i = 0; i < 200; i++) {
                if (pthread_rwlock_trywrlock(&s->map_lock) == 0)
                    return;
                struct timespec pause = {0, 1000000L};
                nanosleep(&pause, NULL);
            }
            waited_ms += 200;
        }
        if (waited_ms >= next_warn_ms) {
            ud_warn("store", "%s: map resize has waited %" PRIu64 " s for snapshots to end", s->dir,
                    waited_ms / 1000);
            next_warn_ms += 10000;
        }
    }
}

/*
 * Remaps the data file: grow doubles the map (bounded by max_map_size), otherwise it adopts the
 * size another process recorded (MDB_MAP_RESIZED). Callers hold write_mu or no write transaction
 * can be open; map_lock keeps snapshots out.
 */
static void idle_reset(struct ud_store *s, int all);

static int remap(struct ud_store *s, int grow, char *errmsg)
{
    lock_map_exclusive(s);
    /* No transaction of this process stays open across the remap, idle ones included. */
    idle_reset(s, 1);
    uint64_t before = current_map_size(s), size = 0;
    int err = 0;
    if (grow) {
        if (s->max_map_size != 0 && before >= s->max_map_size) {
            err =
                ud_errf(errmsg, UD_ENOSPC,
                        "store %s: map full at max_map_size %" PRIu64 " bytes (data does not fit)",
                        s->dir, s->max_map_size);
            goto out;
        }
        size = before > SIZE_MAX / 2 ? SIZE_MAX : before * 2;
        if (s->max_map_size != 0 && size > s->max_map_size)
            size = s->max_map_size;
        if (size == before) {
            err = ud_errf(errmsg, UD_ENOSPC, "store %s: map of %" PRIu64 " bytes cannot grow",
                          s->dir, before);
            goto out;
        }
    }
    int rc = mdb_env_set_mapsize(s->env, (size_t)size);
    if (rc != 0) {
        /* LMDB unmapped the old mapping before failing to map the new one: the env is unusable. */
        atomic_store(&s->broken, 1);
        err = lmdb_errf(errmsg, rc, "store %s: remap from %" PRIu64 " bytes to %" PRIu64, s->dir,
                        before, size);
        goto out;
    }
    uint64_t after = current_map_size(s);
    if (grow)
        ud_info("store", "%s: map grown from %" PRIu64 " to %" PRIu64 " bytes", s->dir, before,
                after);
    else
        ud_info("store", "%s: map resized by another process: %" PRIu64 " -> %" PRIu64 " bytes",
                s->dir, before, after);
out:
    pthread_rwlock_unlock(&s->map_lock);
    return err;
}

/* --- open / close ----------------------------------------------------------------------------- */

/* Inside a write transaction, before it writes (LMDB's writer lock held): the pages it may append
 * past LMDB's last committed page are cached as single pages (core/page_ahead.h). Not in
 * init_dbs's: a store it refuses is left exactly as it was, its apparent size included. */
static void cache_ahead(struct ud_store *s)
{
    MDB_envinfo info;
    mdb_env_info(s->env, &info);
    ud_page_ahead_prepare(&s->ahead, ((uint64_t)info.me_last_pgno + 1) * s->page_size,
                          info.me_mapsize);
}

/*
 * Opens the sub-databases and checks (or, for a new store, writes) the format version. Runs in
 * one write transaction so a refused store is left exactly as it was.
 */
static int init_dbs(struct ud_store *s, uint64_t incarnation, char *errmsg)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc != 0)
        return lmdb_errf(errmsg, rc, "store %s: begin setup transaction", s->dir);

    int err = 0;
    rc = mdb_dbi_open(txn, db_names[DB_META], MDB_CREATE, &s->dbi[DB_META]);
    if (rc != 0) {
        err = lmdb_errf(errmsg, rc, "store %s: open sub-database meta", s->dir);
        goto abort;
    }
    MDB_val k = {strlen(META_FORMAT), META_FORMAT}, v;
    rc = mdb_get(txn, s->dbi[DB_META], &k, &v);
    if (rc == 0) {
        if (v.mv_size != 4) {
            err = ud_errf(errmsg, UD_ECORRUPT, "store %s: format record is %zu bytes, expected 4",
                          s->dir, v.mv_size);
            goto abort;
        }
        uint32_t version = ud_get_le32(v.mv_data);
        if (version != UD_STORE_FORMAT_VERSION) {
            err = ud_errf(errmsg, UD_EVERSION,
                          "store %s has format version %" PRIu32
                          "; this build reads format version %d",
                          s->dir, version, UD_STORE_FORMAT_VERSION);
            goto abort;
        }
    } else if (rc == MDB_NOTFOUND) {
        /* A new store has nothing but the meta database we just created, and it is empty. */
        MDB_dbi main_dbi;
        MDB_stat main_st, meta_st;
        rc = mdb_dbi_open(txn, NULL, 0, &main_dbi);
        if (rc == 0)
            rc = mdb_stat(txn, main_dbi, &main_st);
        if (rc == 0)
            rc = mdb_stat(txn, s->dbi[DB_META], &meta_st);
        if (rc != 0) {
            err = lmdb_errf(errmsg, rc, "store %s: inspect new store", s->dir);
            goto abort;
        }
        if (main_st.ms_entries > 1 || meta_st.ms_entries > 0) {
            err = ud_errf(errmsg, UD_ECORRUPT,
                          "store %s: LMDB environment without a format record (not a store, or "
                          "damaged)",
                          s->dir);
            goto abort;
        }
        uint8_t buf[4];
        ud_put_le32(buf, UD_STORE_FORMAT_VERSION);
        MDB_val fv = {sizeof buf, buf};
        rc = mdb_put(txn, s->dbi[DB_META], &k, &fv, 0);
        if (rc != 0) {
            err = lmdb_errf(errmsg, rc, "store %s: write format record", s->dir);
            goto abort;
        }
        if (incarnation != 0) {
            uint8_t ib[8];
            ud_put_le64(ib, incarnation);
            MDB_val ik = {strlen(META_INCARNATION), META_INCARNATION}, iv = {sizeof ib, ib};
            if ((rc = mdb_put(txn, s->dbi[DB_META], &ik, &iv, 0)) != 0) {
                err = lmdb_errf(errmsg, rc, "store %s: write incarnation record", s->dir);
                goto abort;
            }
        }
    } else {
        err = lmdb_errf(errmsg, rc, "store %s: read format record", s->dir);
        goto abort;
    }

    MDB_val ik = {strlen(META_INCARNATION), META_INCARNATION}, iv;
    rc = mdb_get(txn, s->dbi[DB_META], &ik, &iv);
    if (rc == 0 && iv.mv_size == 8) {
        s->incarnation = ud_get_le64(iv.mv_data);
    } else if (rc != MDB_NOTFOUND) {
        err = rc != 0 ? lmdb_errf(errmsg, rc, "store %s: read incarnation record", s->dir)
                      : ud_errf(errmsg, UD_ECORRUPT,
                                "store %s: incarnation record is %zu bytes, expected 8", s->dir,
                                iv.mv_size);
        goto abort;
    }

    for (int db = 0; db < DB_META; db++) {
        rc = mdb_dbi_open(txn, db_names[db], MDB_CREATE, &s->dbi[db]);
        if (rc != 0) {
            err = lmdb_errf(errmsg, rc, "store %s: open sub-database %s", s->dir, db_names[db]);
            goto abort;
        }
    }
    rc = mdb_txn_commit(txn);
    if (rc != 0)
        return lmdb_errf(errmsg, rc, "store %s: commit setup transaction", s->dir);
    return 0;

abort:
    mdb_txn_abort(txn);
    return err;
}

uint64_t ud_store_incarnation(const struct ud_store *s)
{
    return atomic_load_explicit(&s->incarnation, memory_order_relaxed);
}

__attribute__((format(printf, 3, 4))) static int batch_fail(struct ud_store_batch *b, int rc,
                                                            const char *fmt, ...);

static int put_incarnation(struct ud_store_batch *b, void *arg)
{
    uint8_t ib[8];
    ud_put_le64(ib, *(const uint64_t *)arg);
    MDB_val k = {strlen(META_INCARNATION), META_INCARNATION}, v = {sizeof ib, ib};
    int rc = mdb_put(b->txn, b->store->dbi[DB_META], &k, &v, 0);
    return rc != 0 ? batch_fail(b, rc, "write incarnation record") : 0;
}

int ud_store_stamp_incarnation(struct ud_store *s, uint64_t incarnation, char *errmsg)
{
    if (incarnation == 0 || ud_store_incarnation(s) != 0)
        return 0;
    /* A commit is durable (the environment syncs every commit), as the record a create writes. */
    int rc = ud_store_write(s, put_incarnation, &incarnation, errmsg);
    if (rc == 0)
        atomic_store_explicit(&s->incarnation, incarnation, memory_order_relaxed);
    return rc;
}

int ud_store_open(const struct ud_store_options *opts, struct ud_store **out, char *errmsg)
{
    if (opts == NULL || opts->dir == NULL)
        return ud_errf(errmsg, UD_EINVAL, "store: no directory given");
    int err = ud_dir_create(opts->dir, errmsg);
    if (err != 0)
        return ud_errwrap(errmsg, err, "open store %s", opts->dir);

    struct ud_store *s = calloc(1, sizeof *s);
    if (s == NULL || (s->dir = strdup(opts->dir)) == NULL) {
        free(s);
        return ud_errf(errmsg, UD_ENOMEM, "open store %s: out of memory", opts->dir);
    }
    s->max_map_size = opts->max_map_size;
    s->ahead.fd = -1;

    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&s->map_lock, &attr);
    pthread_rwlockattr_destroy(&attr);
    pthread_mutex_init(&s->write_mu, NULL);
    pthread_mutex_init(&s->group_mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* copy_enter's bounded wait */
    pthread_cond_init(&s->group_cv, &ca);
    pthread_condattr_destroy(&ca);

    uint64_t map_size = opts->map_size != 0 ? opts->map_size : DEFAULT_MAP_SIZE;
    if (s->max_map_size != 0 && map_size > s->max_map_size)
        map_size = s->max_map_size;

    int rc = mdb_env_create(&s->env);
    if (rc != 0) {
        err = lmdb_errf(errmsg, rc, "open store %s: create environment", s->dir);
        s->env = NULL;
        goto fail;
    }
    if ((rc = mdb_env_set_maxdbs(s->env, DB_COUNT)) != 0 ||
        (rc = mdb_env_set_maxreaders(s->env, MAX_READERS)) != 0 ||
        (rc = mdb_env_set_mapsize(s->env, (size_t)map_size)) != 0) {
        err = lmdb_errf(errmsg, rc, "open store %s: configure environment", s->dir);
        goto fail;
    }
    /* Default sync mode: a commit is durable when mdb_txn_commit returns (ud_store_write): LMDB
     * writes the dirty pages, fdatasyncs, then writes the meta page through an O_DSYNC
     * descriptor. */
    rc = mdb_env_open(s->env, s->dir, ENV_FLAGS, 0644);
    if (rc != 0) {
        err = lmdb_errf(errmsg, rc, "open store %s", s->dir);
        goto fail;
    }
    if (mdb_env_get_maxkeysize(s->env) < UD_MAX_KEY) {
        err = ud_errf(errmsg, UD_EINVAL,
                      "open store %s: liblmdb allows keys of %d bytes, the format needs %d", s->dir,
                      mdb_env_get_maxkeysize(s->env), UD_MAX_KEY);
        goto fail;
    }
    /* Free reader slots left behind by a crashed process, or they pin old pages forever. */
    int dead = 0;
    mdb_reader_check(s->env, &dead);
    if (dead > 0)
        ud_info("store", "%s: cleared %d stale reader slots", s->dir, dead);

    MDB_stat est;
    mdb_env_stat(s->env, &est);
    s->page_size = est.ms_psize;
    char data_path[PATH_MAX];
    snprintf(data_path, sizeof data_path, "%s/data.mdb", s->dir);
    ud_page_ahead_open(&s->ahead, data_path);
    int data_fd;
    if (mdb_env_get_fd(s->env, &data_fd) == 0)
        s->writeback = ud_writeback_start(data_fd);

    err = init_dbs(s, opts->incarnation, errmsg);
    if (err == UD_EMAPFULL)
        err = ud_errf(errmsg, UD_ENOSPC, "open store %s: map of %" PRIu64 " bytes is too small",
                      s->dir, map_size);
    if (err != 0)
        goto fail;

    *out = s;
    return 0;

fail:
    ud_writeback_stop(s->writeback);
    if (s->env != NULL)
        mdb_env_close(s->env);
    ud_page_ahead_close(&s->ahead);
    pthread_cond_destroy(&s->group_cv);
    pthread_mutex_destroy(&s->group_mu);
    pthread_mutex_destroy(&s->write_mu);
    pthread_rwlock_destroy(&s->map_lock);
    free(s->dir);
    free(s);
    return err;
}

static void cursor_free(struct ud_store_cursor *c)
{
    /* Read-only cursors may be closed before or after their transaction ends (lmdb.h). */
    mdb_cursor_close(c->mc);
    free(c);
}

static void snap_free(struct ud_store_snap *snap)
{
    for (int db = 0; db < DB_COUNT; db++)
        if (snap->spare[db] != NULL)
            cursor_free(snap->spare[db]);
    mdb_txn_abort(snap->txn);
    free(snap);
}

void ud_store_close(struct ud_store *s)
{
    if (s == NULL)
        return;
    /* An open snapshot would point into the mapping mdb_env_close is about to remove. */
    UD_ASSERT(atomic_load(&s->open_snaps) == 0);
    /* Copies still waiting for a write group (one that a failing flush left open) give up; the
     * condition variable is destroyed only once none waits on it. A copy already running holds
     * the environment: its caller must not close the store under it. */
    pthread_mutex_lock(&s->group_mu);
    s->closing = 1;
    pthread_cond_broadcast(&s->group_cv);
    while (s->copy_waits > 0)
        pthread_cond_wait(&s->group_cv, &s->group_mu);
    pthread_mutex_unlock(&s->group_mu);
    for (int i = 0; i < SNAP_CACHE_SLOTS; i++) {
        struct ud_store_snap *snap = atomic_exchange(&s->idle[i], NULL);
        if (snap != NULL)
            snap_free(snap);
    }
    ud_writeback_stop(s->writeback); /* before LMDB closes the descriptor it writes back */
    mdb_env_close(s->env);
    ud_page_ahead_close(&s->ahead);
    pthread_cond_destroy(&s->group_cv);
    pthread_mutex_destroy(&s->group_mu);
    pthread_mutex_destroy(&s->write_mu);
    pthread_rwlock_destroy(&s->map_lock);
    free(s->dir);
    free(s);
}

/* --- snapshots -------------------------------------------------------------------------------- */

static struct ud_store_snap *idle_pop(struct ud_store *s)
{
    for (int i = 0; i < SNAP_CACHE_SLOTS; i++) {
        if (atomic_load_explicit(&s->idle[i], memory_order_relaxed) == NULL)
            continue;
        struct ud_store_snap *snap = atomic_exchange(&s->idle[i], NULL);
        if (snap != NULL)
            return snap;
    }
    return NULL;
}

static int idle_push(struct ud_store *s, struct ud_store_snap *snap)
{
    for (int i = 0; i < SNAP_CACHE_SLOTS; i++) {
        struct ud_store_snap *expected = NULL;
        if (atomic_load_explicit(&s->idle[i], memory_order_relaxed) == NULL &&
            atomic_compare_exchange_strong(&s->idle[i], &expected, snap))
            return 1;
    }
    return 0;
}

/*
 * Why an ended snapshot keeps its read transaction open: a get that finds an idle snapshot whose
 * transaction began after the newest commit reuses it as is, skipping mdb_txn_reset,
 * mdb_txn_renew and, on the first lookup of a renewed transaction, LMDB's search of its main
 * database for the sub-database's root (DB_STALE): 13 % of a 1 KiB random get (bench_lmdb). Such a
 * transaction reads exactly what a new one would, so nothing a reader sees changes. A stale one
 * (a commit came after it) is renewed before use. Holding old transactions open would keep LMDB
 * from reusing the pages later commits free, so the writer resets every stale idle one before
 * each write transaction (idle_reset); one at the newest commit holds back nothing a write
 * could reuse (LMDB reuses pages freed by commits older than the oldest reader, and without
 * readers older than its own predecessor: the same set).
 */
static int snap_current(struct ud_store *s, struct ud_store_snap *snap)
{
    return snap->live && snap->gen == atomic_load_explicit(&s->commit_gen, memory_order_acquire);
}

static void snap_reset(struct ud_store_snap *snap)
{
    if (snap->live)
        mdb_txn_reset(snap->txn);
    snap->live = 0;
}

/* Resets the idle snapshots a commit made stale, or all of them (a remap). Caller holds write_mu
 * or map_lock exclusively. A snapshot popped concurrently by a reader is the reader's to renew. */
static void idle_reset(struct ud_store *s, int all)
{
    for (int i = 0; i < SNAP_CACHE_SLOTS; i++) {
        if (atomic_load_explicit(&s->idle[i], memory_order_relaxed) == NULL)
            continue;
        struct ud_store_snap *snap = atomic_exchange(&s->idle[i], NULL);
        if (snap == NULL)
            continue;
        if (all || !snap_current(s, snap))
            snap_reset(snap);
        if (!idle_push(s, snap))
            snap_free(snap);
    }
}

/*
 * The read path's fixed cost: a shared lock and one atomic exchange, plus mdb_txn_renew only when
 * a commit happened since the snapshot's transaction began (see above). Renewing keeps the reader
 * slot and the allocation of mdb_txn_begin.
 */
int ud_store_snap_begin(struct ud_store *s, struct ud_store_snap **out)
{
    for (int attempt = 0;; attempt++) {
        if (atomic_load_explicit(&s->broken, memory_order_relaxed))
            return UD_EIO;
        pthread_rwlock_rdlock(&s->map_lock);
        struct ud_store_snap *snap = idle_pop(s);
        int rc;
        if (snap != NULL) {
            if (snap_current(s, snap))
                goto ok;
            snap_reset(snap);
            /* Read before renewing: a commit after this load makes the snapshot stale, never
             * wrongly current. */
            snap->gen = atomic_load_explicit(&s->commit_gen, memory_order_acquire);
            rc = mdb_txn_renew(snap->txn);
            if (rc == 0) {
                snap->live = 1;
                goto ok;
            }
            /* Drop it and try a fresh transaction, which reports any lasting failure. */
            snap_free(snap);
        }
        snap = calloc(1, sizeof *snap);
        if (snap == NULL) {
            pthread_rwlock_unlock(&s->map_lock);
            return UD_ENOMEM;
        }
        snap->store = s;
        snap->gen = atomic_load_explicit(&s->commit_gen, memory_order_acquire);
        rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &snap->txn);
        if (rc == 0) {
            snap->live = 1;
            goto ok;
        }
        free(snap);
        pthread_rwlock_unlock(&s->map_lock);
        if (rc == MDB_MAP_RESIZED && attempt < 3) {
            char msg[UD_ERRMSG_SIZE];
            if (remap(s, 0, msg) == 0)
                continue;
            ud_error("store", "%s", msg);
            return UD_EIO;
        }
        ud_error("store", "%s: begin read snapshot: %s", s->dir, mdb_strerror(rc));
        return rc == MDB_READERS_FULL ? UD_EBUSY : UD_EIO;
    ok:
        LMDB_OBSERVE(s);
        atomic_fetch_add_explicit(&s->open_snaps, 1, memory_order_relaxed);
        *out = snap;
        return 0;
    }
}

void ud_store_snap_end(struct ud_store_snap *snap)
{
    if (snap == NULL)
        return;
    struct ud_store *s = snap->store;
    /* Cursors still open become orphans: they fail from now on and are freed by their close. */
    for (struct ud_store_cursor *c = snap->open; c != NULL; c = c->next) {
        c->snap = NULL;
        c->positioned = 0;
    }
    snap->open = NULL;
    LMDB_PUBLISH(s);
    /* A stale transaction is reset now rather than held until the next write drains it. */
    if (!snap_current(s, snap))
        snap_reset(snap);
    if (!idle_push(s, snap))
        snap_free(snap);
    atomic_fetch_sub_explicit(&s->open_snaps, 1, memory_order_relaxed);
    pthread_rwlock_unlock(&s->map_lock);
}

int ud_store_get(struct ud_store_snap *snap, int space, const void *key, size_t key_len,
                 const uint8_t **val, size_t *val_len)
{
    int db = space_db(space);
    if (db < 0)
        return UD_EINVAL;
    /* LMDB cannot hold such keys, and would answer MDB_BAD_VALSIZE rather than "absent". */
    if (key_len == 0 || key_len > UD_MAX_KEY)
        return UD_ENOTFOUND;
    MDB_val k = {key_len, (void *)key}, v;
    int rc = mdb_get(snap->txn, snap->store->dbi[db], &k, &v);
    if (rc != 0)
        return rc == MDB_NOTFOUND ? UD_ENOTFOUND : lmdb_code(rc);
    *val = v.mv_data;
    *val_len = v.mv_size;
    return 0;
}

int ud_store_lob_chunk_get(struct ud_store_snap *snap, uint64_t chunk_lsn, const uint8_t **data,
                           size_t *len)
{
    uint8_t kb[8];
    ud_put_be64(kb, chunk_lsn);
    MDB_val k = {sizeof kb, kb}, v;
    int rc = mdb_get(snap->txn, snap->store->dbi[DB_LOB_CHUNK], &k, &v);
    if (rc != 0)
        return rc == MDB_NOTFOUND ? UD_ENOTFOUND : lmdb_code(rc);
    *data = v.mv_data;
    *len = v.mv_size;
    return 0;
}

/* --- cursors ---------------------------------------------------------------------------------- */

int ud_store_cursor_open(struct ud_store_snap *snap, int space, struct ud_store_cursor **out)
{
    int db = space_db(space);
    if (db < 0)
        return UD_EINVAL;
    struct ud_store_cursor *c = snap->spare[db];
    if (c != NULL) {
        snap->spare[db] = NULL;
        int rc = mdb_cursor_renew(snap->txn, c->mc);
        if (rc != 0) {
            cursor_free(c);
            return lmdb_code(rc);
        }
    } else {
        c = calloc(1, sizeof *c);
        if (c == NULL)
            return UD_ENOMEM;
        int rc = mdb_cursor_open(snap->txn, snap->store->dbi[db], &c->mc);
        if (rc != 0) {
            free(c);
            return lmdb_code(rc);
        }
    }
    c->snap = snap;
    c->db = db;
    c->started = 0;
    c->positioned = 0;
    c->prev = NULL;
    c->next = snap->open;
    if (snap->open != NULL)
        snap->open->prev = c;
    snap->open = c;
    *out = c;
    return 0;
}

static int cursor_move(struct ud_store_cursor *c, MDB_val *key, MDB_cursor_op op)
{
    if (c->snap == NULL)
        return UD_ECLOSED;
    c->started = 1;
    MDB_val k = {0, NULL}, v;
    if (key != NULL)
        k = *key;
    int rc = mdb_cursor_get(c->mc, &k, &v, op);
    if (rc != 0) {
        c->positioned = 0;
        return rc == MDB_NOTFOUND ? UD_ENOTFOUND : lmdb_code(rc);
    }
    c->key = k;
    c->val = v;
    c->positioned = 1;
    return 0;
}

int ud_store_cursor_seek(struct ud_store_cursor *c, const void *key, size_t key_len)
{
    if (key_len == 0)
        return cursor_move(c, NULL, MDB_FIRST);
    MDB_val k = {key_len, (void *)key};
    return cursor_move(c, &k, MDB_SET_RANGE);
}

int ud_store_cursor_next(struct ud_store_cursor *c)
{
    if (c->snap == NULL)
        return UD_ECLOSED;
    /* Past the end (or a failed seek) stays there; a fresh cursor starts at the first key. */
    if (c->started && !c->positioned)
        return UD_ENOTFOUND;
    return cursor_move(c, NULL, c->started ? MDB_NEXT : MDB_FIRST);
}

int ud_store_cursor_get(struct ud_store_cursor *c, const uint8_t **key, size_t *key_len,
                        const uint8_t **val, size_t *val_len)
{
    if (c->snap == NULL || !c->positioned)
        return UD_ENOTFOUND;
    *key = c->key.mv_data;
    *key_len = c->key.mv_size;
    *val = c->val.mv_data;
    *val_len = c->val.mv_size;
    return 0;
}

void ud_store_cursor_close(struct ud_store_cursor *c)
{
    if (c == NULL)
        return;
    struct ud_store_snap *snap = c->snap;
    if (snap == NULL) {
        cursor_free(c);
        return;
    }
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        snap->open = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    if (snap->spare[c->db] == NULL) {
        c->snap = NULL;
        snap->spare[c->db] = c;
    } else {
        cursor_free(c);
    }
}

/* --- writing ---------------------------------------------------------------------------------- */

/*
 * Records an LMDB failure of a batch operation. MDB_MAP_FULL is not an error for the caller of
 * ud_store_write: the batch reports UD_EMAPFULL to fn, which should return it, and the write is
 * run again in a bigger map. Any other failure leaves the transaction unusable, so it is kept and
 * returned by ud_store_write even if fn ignores it.
 */
__attribute__((format(printf, 3, 4))) static int batch_fail(struct ud_store_batch *b, int rc,
                                                            const char *fmt, ...)
{
    if (rc == MDB_MAP_FULL) {
        b->map_full = 1;
        return UD_EMAPFULL;
    }
    char ctx[UD_ERRMSG_SIZE];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx, sizeof ctx, fmt, ap);
    va_end(ap);
    int code = lmdb_errf(b->errmsg, rc, "store %s: %s", b->store->dir, ctx);
    if (b->failed == 0)
        b->failed = code;
    return code;
}

/* A batch whose transaction already failed answers every later operation with that failure. */
static int batch_dead(const struct ud_store_batch *b)
{
    if (b->map_full)
        return UD_EMAPFULL;
    return b->failed;
}

static int check_put_key(struct ud_store_batch *b, int space, size_t key_len)
{
    if (key_len == 0)
        return ud_errf(b->errmsg, UD_EINVAL, "store %s: empty %s key", b->store->dir,
                       space_name(space));
    if (key_len > UD_MAX_KEY)
        return ud_errf(b->errmsg, UD_ELIMIT,
                       "store %s: %s key of %zu bytes exceeds LMDB's %d-byte key limit",
                       b->store->dir, space_name(space), key_len, UD_MAX_KEY);
    return 0;
}

int ud_store_batch_put(struct ud_store_batch *b, int space, const void *key, size_t key_len,
                       const void *val, size_t val_len)
{
    int db = space_db(space);
    if (db < 0)
        return ud_errf(b->errmsg, UD_EINVAL, "store %s: put into unknown space %d", b->store->dir,
                       space);
    int err = batch_dead(b);
    if (err == 0)
        err = check_put_key(b, space, key_len);
    if (err != 0)
        return err;
    MDB_val k = {key_len, (void *)key}, v = {val_len, (void *)val};
    int rc = mdb_put(b->txn, b->store->dbi[db], &k, &v, 0);
    if (rc != 0)
        return batch_fail(b, rc, "put %zu-byte value into %s", val_len, db_names[db]);
    return 0;
}

int ud_store_batch_del(struct ud_store_batch *b, int space, const void *key, size_t key_len)
{
    int db = space_db(space);
    if (db < 0)
        return ud_errf(b->errmsg, UD_EINVAL, "store %s: delete from unknown space %d",
                       b->store->dir, space);
    int err = batch_dead(b);
    if (err != 0)
        return err;
    if (key_len == 0 || key_len > UD_MAX_KEY)
        return 0; /* cannot exist */
    MDB_val k = {key_len, (void *)key};
    int rc = mdb_del(b->txn, b->store->dbi[db], &k, NULL);
    if (rc != 0 && rc != MDB_NOTFOUND)
        return batch_fail(b, rc, "delete from %s", db_names[db]);
    return 0;
}

int ud_store_batch_del_prefix(struct ud_store_batch *b, int space, const void *prefix,
                              size_t prefix_len)
{
    int db = space_db(space);
    if (db < 0)
        return ud_errf(b->errmsg, UD_EINVAL, "store %s: delete from unknown space %d",
                       b->store->dir, space);
    int err = batch_dead(b);
    if (err != 0)
        return err;
    MDB_dbi dbi = b->store->dbi[db];
    if (prefix_len == 0) {
        int rc = mdb_drop(b->txn, dbi, 0);
        return rc == 0 ? 0 : batch_fail(b, rc, "empty %s", db_names[db]);
    }
    if (prefix_len > UD_MAX_KEY)
        return 0;

    MDB_cursor *mc;
    int rc = mdb_cursor_open(b->txn, dbi, &mc);
    if (rc != 0)
        return batch_fail(b, rc, "open cursor on %s", db_names[db]);
    /*
     * Re-seek to the prefix after each delete instead of relying on where LMDB leaves the cursor
     * after mdb_cursor_del (lmdb.h does not specify it): keys below the prefix are untouched, so
     * the first key >= prefix is always the next candidate.
     */
    for (;;) {
        MDB_val k = {prefix_len, (void *)prefix}, v;
        rc = mdb_cursor_get(mc, &k, &v, MDB_SET_RANGE);
        if (rc == MDB_NOTFOUND) {
            rc = 0;
            break;
        }
        if (rc != 0)
            break;
        if (k.mv_size < prefix_len || memcmp(k.mv_data, prefix, prefix_len) != 0)
            break;
        rc = mdb_cursor_del(mc, 0);
        if (rc != 0)
            break;
    }
    mdb_cursor_close(mc);
    if (rc != 0)
        return batch_fail(b, rc, "delete prefix of %zu bytes from %s", prefix_len, db_names[db]);
    return 0;
}

int ud_store_batch_get(struct ud_store_batch *b, int space, const void *key, size_t key_len,
                       const uint8_t **val, size_t *val_len)
{
    int db = space_db(space);
    if (db < 0)
        return UD_EINVAL;
    int err = batch_dead(b);
    if (err != 0)
        return err;
    if (key_len == 0 || key_len > UD_MAX_KEY)
        return UD_ENOTFOUND;
    MDB_val k = {key_len, (void *)key}, v;
    int rc = mdb_get(b->txn, b->store->dbi[db], &k, &v);
    if (rc != 0)
        return rc == MDB_NOTFOUND ? UD_ENOTFOUND : batch_fail(b, rc, "read %s", db_names[db]);
    *val = v.mv_data;
    *val_len = v.mv_size;
    return 0;
}

int ud_store_batch_lob_chunk_put(struct ud_store_batch *b, uint64_t chunk_lsn, const void *data,
                                 size_t len)
{
    int err = batch_dead(b);
    if (err != 0)
        return err;
    uint8_t kb[8];
    ud_put_be64(kb, chunk_lsn);
    MDB_val k = {sizeof kb, kb}, v = {len, (void *)data};
    int rc = mdb_put(b->txn, b->store->dbi[DB_LOB_CHUNK], &k, &v, 0);
    if (rc != 0)
        return batch_fail(b, rc, "put LOB chunk %" PRIu64 " (%zu bytes)", chunk_lsn, len);
    return 0;
}

int ud_store_batch_lob_chunk_del(struct ud_store_batch *b, uint64_t chunk_lsn)
{
    int err = batch_dead(b);
    if (err != 0)
        return err;
    uint8_t kb[8];
    ud_put_be64(kb, chunk_lsn);
    MDB_val k = {sizeof kb, kb};
    int rc = mdb_del(b->txn, b->store->dbi[DB_LOB_CHUNK], &k, NULL);
    if (rc != 0 && rc != MDB_NOTFOUND)
        return batch_fail(b, rc, "delete LOB chunk %" PRIu64, chunk_lsn);
    return 0;
}

/* --- checkpoint ------------------------------------------------------------------------------- */

/* The flush_ahead marker (docs/format-lmdb.md "meta"): 0 when absent. */
static int decode_ahead(const struct ud_store *s, const MDB_val *v, uint64_t *lsn, char *errmsg)
{
    if (v->mv_size != 8)
        return ud_errf(errmsg, UD_ECORRUPT, "store %s: flush_ahead of %zu bytes (want 8)", s->dir,
                       v->mv_size);
    *lsn = ud_get_le64(v->mv_data);
    return 0;
}

static int read_ahead(struct ud_store_batch *b, uint64_t *lsn)
{
    *lsn = 0;
    MDB_val k = {strlen(META_AHEAD), META_AHEAD}, v;
    int rc = mdb_get(b->txn, b->store->dbi[DB_META], &k, &v);
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc != 0)
        return batch_fail(b, rc, "read flush_ahead");
    int err = decode_ahead(b->store, &v, lsn, b->errmsg);
    if (err != 0 && b->failed == 0)
        b->failed = err;
    return err;
}

int ud_store_batch_set_checkpoint(struct ud_store_batch *b, const struct ud_checkpoint *cp)
{
    int err = batch_dead(b);
    if (err != 0)
        return err;
    if (cp->txn_count > 0 && cp->txns == NULL)
        return ud_errf(b->errmsg, UD_EINVAL,
                       "store %s: checkpoint has %" PRIu32 " txns but no "
                       "table",
                       b->store->dir, cp->txn_count);
    size_t len = CHECKPOINT_MIN + (size_t)cp->txn_count * CHECKPOINT_TXN;
    MDB_val k = {strlen(META_CHECKPOINT), META_CHECKPOINT}, v = {len, NULL};
    /* MDB_RESERVE: encode straight into the page, however large the transaction table is. */
    int rc = mdb_put(b->txn, b->store->dbi[DB_META], &k, &v, MDB_RESERVE);
    if (rc != 0)
        return batch_fail(b, rc, "write checkpoint");
    uint8_t *p = v.mv_data;
    p[0] = CHECKPOINT_ENCODING;
    ud_put_le64(p + 1, cp->flushed_lsn);
    ud_put_le32(p + 9, cp->txn_count);
    uint8_t *q = p + CHECKPOINT_HEAD;
    for (uint32_t i = 0; i < cp->txn_count; i++, q += CHECKPOINT_TXN) {
        memcpy(q, cp->txns[i].id, 16);
        ud_put_le64(q + 16, cp->txns[i].first_lsn);
    }
    ud_put_le32(q, ud_crc32c(0, p, (size_t)(q - p)));
    uint64_t ahead;
    if ((err = read_ahead(b, &ahead)) != 0)
        return err;
    if (ahead != 0 && ahead <= cp->flushed_lsn) {
        MDB_val ak = {strlen(META_AHEAD), META_AHEAD};
        if ((rc = mdb_del(b->txn, b->store->dbi[DB_META], &ak, NULL)) != 0)
            return batch_fail(b, rc, "drop flush_ahead");
    }
    return 0;
}

int ud_store_batch_set_ahead(struct ud_store_batch *b, uint64_t lsn)
{
    uint64_t ahead;
    int err = batch_dead(b);
    if (err != 0 || (err = read_ahead(b, &ahead)) != 0 || ahead >= lsn)
        return err;
    uint8_t buf[8];
    ud_put_le64(buf, lsn);
    MDB_val k = {strlen(META_AHEAD), META_AHEAD}, v = {sizeof buf, buf};
    int rc = mdb_put(b->txn, b->store->dbi[DB_META], &k, &v, 0);
    return rc != 0 ? batch_fail(b, rc, "write flush_ahead") : 0;
}

static int decode_checkpoint(const struct ud_store *s, const uint8_t *p, size_t len,
                             struct ud_checkpoint *cp, char *errmsg)
{
    if (len < CHECKPOINT_MIN)
        return ud_errf(errmsg, UD_ECORRUPT,
                       "store %s: checkpoint of %zu bytes is shorter than the %d-byte minimum",
                       s->dir, len, CHECKPOINT_MIN);
    if (p[0] != CHECKPOINT_ENCODING)
        return ud_errf(errmsg, UD_ECORRUPT,
                       "store %s: checkpoint encoding %u is unknown (this build reads %d)", s->dir,
                       p[0], CHECKPOINT_ENCODING);
    uint32_t count = ud_get_le32(p + 9);
    if ((uint64_t)len != (uint64_t)CHECKPOINT_MIN + (uint64_t)count * CHECKPOINT_TXN)
        return ud_errf(errmsg, UD_ECORRUPT,
                       "store %s: checkpoint of %zu bytes cannot hold its %" PRIu32 " transactions",
                       s->dir, len, count);
    uint32_t want = ud_get_le32(p + len - 4);
    uint32_t got = ud_crc32c(0, p, len - 4);
    if (want != got)
        return ud_errf(errmsg, UD_ECORRUPT,
                       "store %s: checkpoint checksum mismatch (stored %08" PRIx32
                       ", computed %08" PRIx32 ")",
                       s->dir, want, got);
    struct ud_checkpoint_txn *txns = NULL;
    if (count > 0) {
        txns = malloc((size_t)count * sizeof *txns);
        if (txns == NULL)
            return ud_errf(errmsg, UD_ENOMEM, "store %s: checkpoint table of %" PRIu32 " txns",
                           s->dir, count);
        const uint8_t *q = p + CHECKPOINT_HEAD;
        for (uint32_t i = 0; i < count; i++, q += CHECKPOINT_TXN) {
            memcpy(txns[i].id, q, 16);
            txns[i].first_lsn = ud_get_le64(q + 16);
        }
    }
    cp->flushed_lsn = ud_get_le64(p + 1);
    cp->txn_count = count;
    cp->txns = txns;
    return 0;
}

int ud_store_read_checkpoint(struct ud_store *s, struct ud_checkpoint *cp, char *errmsg)
{
    cp->flushed_lsn = 0;
    cp->txn_count = 0;
    cp->txns = NULL;
    struct ud_store_snap *snap;
    int err = ud_store_snap_begin(s, &snap);
    if (err != 0)
        return ud_errf(errmsg, err, "store %s: read checkpoint: cannot begin snapshot", s->dir);
    MDB_val k = {strlen(META_CHECKPOINT), META_CHECKPOINT}, v;
    int rc = mdb_get(snap->txn, s->dbi[DB_META], &k, &v);
    if (rc == 0)
        err = decode_checkpoint(s, v.mv_data, v.mv_size, cp, errmsg);
    else if (rc != MDB_NOTFOUND)
        err = lmdb_errf(errmsg, rc, "store %s: read checkpoint", s->dir);
    MDB_val ak = {strlen(META_AHEAD), META_AHEAD};
    uint64_t ahead = 0;
    if (err == 0 && (rc = mdb_get(snap->txn, s->dbi[DB_META], &ak, &v)) == 0)
        err = decode_ahead(s, &v, &ahead, errmsg);
    else if (err == 0 && rc != MDB_NOTFOUND)
        err = lmdb_errf(errmsg, rc, "store %s: read flush_ahead", s->dir);
    /* A marker at or below the checkpoint is stale (written by a build that did not drop it). */
    cp->ahead_lsn = ahead > cp->flushed_lsn ? ahead : 0;
    ud_store_snap_end(snap);
    return err;
}

/* --- the write transaction -------------------------------------------------------------------- */

/* Free space below which a failed commit is taken for a full disk (more than a short write
 * leaves). */
#define DISK_FULL_BYTES (1u << 20)

/* LMDB 0.9.24 reports a short pwrite at commit as EIO, and on a full disk that is how a write
 * that only partly fits ends: named ENOSPC when the file system has (almost) no room left for this
 * process, so the caller sees a full disk rather than a device error. */
static int commit_errno(const struct ud_store *s, int rc)
{
    struct statvfs v;
    if (rc != EIO || statvfs(s->dir, &v) != 0)
        return rc;
    uint64_t blocks = geteuid() == 0 ? v.f_bfree : v.f_bavail;
    return blocks * v.f_frsize < DISK_FULL_BYTES ? ENOSPC : rc;
}

int ud_store_write(struct ud_store *s, ud_store_write_fn fn, void *arg, char *errmsg)
{
    if (errmsg != NULL)
        errmsg[0] = '\0';
    if (atomic_load(&s->broken))
        return ud_errf(errmsg, UD_EIO, "store %s: unusable after a failed remap", s->dir);

    pthread_mutex_lock(&s->write_mu);
    int err = 0;
    for (int resized = 0;;) {
        /* Idle read transactions older than the last commit would keep its freed pages from
         * reuse in this one. */
        idle_reset(s, 0);
        MDB_txn *txn;
        LMDB_OBSERVE(s);
        int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
        if (rc == MDB_MAP_RESIZED && resized++ < 3) {
            err = remap(s, 0, errmsg);
            if (err != 0)
                break;
            continue;
        }
        if (rc != 0) {
            err = lmdb_errf(errmsg, rc, "store %s: begin write transaction", s->dir);
            break;
        }
        cache_ahead(s);

        struct ud_store_batch b = {.store = s, .txn = txn, .errmsg = errmsg};
        int fn_err = fn(&b, arg);
        if (b.map_full) {
            /* fn's result is moot: its transaction is dead. Run it again in a bigger map. */
            mdb_txn_abort(txn);
            if (errmsg != NULL)
                errmsg[0] = '\0';
            err = remap(s, 1, errmsg);
            if (err != 0)
                break;
            continue;
        }
        if (fn_err != 0 || b.failed != 0) {
            mdb_txn_abort(txn);
            err = fn_err != 0 ? fn_err : b.failed;
            if (errmsg != NULL && errmsg[0] == '\0')
                ud_errf(errmsg, err, "store %s: write aborted: %s", s->dir, ud_strerror(err));
            break;
        }
        /* Before the commit: LMDB publishes the new meta page inside it, and a snapshot begun
         * from then on reads these pages. The commit's own stores (free list, main database, meta)
         * are LMDB's business. */
        LMDB_PUBLISH(s);
        LMDB_IGNORE_BEGIN();
        ud_writeback_begin(s->writeback);
        rc = mdb_txn_commit(txn); /* frees txn, also on failure */
        ud_writeback_end(s->writeback);
        LMDB_IGNORE_END();
        /* After the commit (even a failed one, which may have written its meta page): snapshots
         * begun before it are stale from now on. Before the caller's next step, which for the
         * flush is dropping the memtable this commit made redundant (see ud_store_snap_begin). */
        atomic_fetch_add_explicit(&s->commit_gen, 1, memory_order_release);
        if (rc == MDB_MAP_FULL) {
            err = remap(s, 1, errmsg);
            if (err != 0)
                break;
            continue;
        }
        if (rc != 0)
            err = lmdb_errf(errmsg, commit_errno(s, rc), "store %s: commit", s->dir);
        break;
    }
    pthread_mutex_unlock(&s->write_mu);
    return err;
}

/* --- write groups ---------------------------------------------------------------------------- */

int ud_store_group_begin(struct ud_store *s)
{
    pthread_mutex_lock(&s->group_mu);
    int open = s->copies == 0;
    if (open)
        s->group_open = 1;
    pthread_mutex_unlock(&s->group_mu);
    return open;
}

void ud_store_group_end(struct ud_store *s)
{
    pthread_mutex_lock(&s->group_mu);
    s->group_open = 0;
    pthread_cond_broadcast(&s->group_cv);
    pthread_mutex_unlock(&s->group_mu);
}

/* How long a copy waits for a write group to end (ud_store_set_copy_wait_ms). */
static _Atomic uint64_t copy_wait_ms = UD_STORE_COPY_WAIT_MS;

void ud_store_set_copy_wait_ms(uint64_t ms)
{
    atomic_store(&copy_wait_ms, ms);
}

/*
 * A copy starts between groups: a group's transactions follow each other closely (one flush), so
 * the wait is usually short, and groups begun meanwhile write single transactions instead. But a
 * flush that failed halfway keeps its group open until a retry completes it, which a full disk or
 * a failing device can put off indefinitely: the copy then gives up (UD_EBUSY, try again later),
 * as it does when the store closes (UD_ECLOSED).
 */
static int copy_enter(struct ud_store *s, char *errmsg)
{
    uint64_t wait_ms = atomic_load(&copy_wait_ms);
    struct timespec until = ud_mono_deadline(wait_ms);
    pthread_mutex_lock(&s->group_mu);
    s->copies++;
    s->copy_waits++;
    int timed_out = 0;
    while (s->group_open && !s->closing && !timed_out)
        timed_out = pthread_cond_timedwait(&s->group_cv, &s->group_mu, &until) == ETIMEDOUT;
    int err = 0;
    if (s->closing)
        err = ud_errf(errmsg, UD_ECLOSED, "store %s: closing", s->dir);
    else if (s->group_open)
        err = ud_errf(errmsg, UD_EBUSY,
                      "store %s: a write group has been open for %" PRIu64
                      " ms (a flush halfway, failing?): the store is ahead of its checkpoint; "
                      "retry later",
                      s->dir, wait_ms);
    if (err != 0)
        s->copies--;
    s->copy_waits--;
    if (s->closing)
        pthread_cond_broadcast(&s->group_cv); /* ud_store_close waits for the last one */
    pthread_mutex_unlock(&s->group_mu);
    return err;
}

static void copy_leave(struct ud_store *s)
{
    pthread_mutex_lock(&s->group_mu);
    s->copies--;
    pthread_mutex_unlock(&s->group_mu);
}

/* --- backup and stats ------------------------------------------------------------------------- */

/* LMDB's copy, on its own thread, into a relay pipe. */
struct copy_job {
    MDB_env *env;
    int fd; /* the relay's write end, closed by the job */
    unsigned flags;
    int rc;
};

static void *copy_job_main(void *arg)
{
    struct copy_job *j = arg;
    /* A relay that stops reading closes its end: the copy's next write then fails with EPIPE
     * instead of raising SIGPIPE (thread-directed, so blocking it here is enough). */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    j->rc = mdb_env_copyfd2(j->env, j->fd, j->flags);
    close(j->fd);
    return NULL;
}

/*
 * Copies the environment to fd (the caller is in copy_enter and holds map_lock shared). A write
 * group only has to wait for the copy's read transaction to begin, since LMDB's copy is a
 * snapshot; holding it off for the whole copy (hours for a slow download) would make every flush
 * meanwhile one unbounded transaction, whose page copies LMDB keeps. LMDB begins that transaction
 * before it writes anything, so the copy runs into a pipe and the group is released at its first
 * bytes. Returns 0, an LMDB code or an errno.
 */
static int copy_env(struct ud_store *s, int fd, unsigned flags)
{
    enum { RELAY_BYTES = 64 << 10 };
    int p[2];
    struct copy_job j = {.env = s->env, .flags = flags};
    pthread_t th;
    char *buf = malloc(RELAY_BYTES);
    if (buf == NULL || pipe2(p, O_CLOEXEC) != 0) {
        free(buf);
        int rc = mdb_env_copyfd2(s->env, fd, flags); /* excluding groups throughout */
        copy_leave(s);
        return rc;
    }
    j.fd = p[1];
    int err = pthread_create(&th, NULL, copy_job_main, &j);
    if (err != 0) {
        close(p[0]);
        close(p[1]);
        free(buf);
        copy_leave(s);
        return err;
    }
    int in_group = 1;
    for (;;) {
        ssize_t n = read(p[0], buf, RELAY_BYTES);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            err = n < 0 ? errno : 0;
            break;
        }
        if (in_group) {
            copy_leave(s); /* the copy's read transaction has begun */
            in_group = 0;
        }
        if ((err = ud_write_all(fd, buf, (size_t)n)) != 0)
            break;
    }
    close(p[0]); /* a relay stopped by a failed write: the copy's next write fails */
    pthread_join(th, NULL);
    free(buf);
    if (in_group)
        copy_leave(s);
    return err != 0 ? err : j.rc;
}

/*
 * The map cannot grow while a backup copies (see lock_map_exclusive), so a writer that fills it
 * waits for the copy to end. Doubling first when the map is over half used makes that unlikely.
 */
static void ensure_headroom(struct ud_store *s)
{
    pthread_mutex_lock(&s->write_mu); /* no write transaction may be open while remapping */
    MDB_envinfo info;
    MDB_stat st;
    mdb_env_info(s->env, &info);
    mdb_env_stat(s->env, &st);
    uint64_t high_water = ((uint64_t)info.me_last_pgno + 1) * st.ms_psize;
    if (high_water > info.me_mapsize / 2 &&
        (s->max_map_size == 0 || info.me_mapsize < s->max_map_size)) {
        char msg[UD_ERRMSG_SIZE];
        if (remap(s, 1, msg) != 0)
            ud_warn("store", "%s: before backup: %s", s->dir, msg);
    }
    pthread_mutex_unlock(&s->write_mu);
}

/* Numbers the temporary files of the backups this process runs. */
static _Atomic unsigned backup_seq;
/* Temporary names tried before a backup gives up (each taken one is a leftover or a copy). */
#define BACKUP_TMP_TRIES 100

/*
 * mdb_env_copy2() would treat path as a directory (our environment is not MDB_NOSUBDIR), so the
 * copy is written to a file descriptor we open: the result is one file, renamed into place once
 * it is complete and synced, so a reader never sees a partial backup under name.
 *
 * The temporary file is this call's own ("{name}~tmp.{pid}.{n}", created exclusively and never
 * through a symbolic link): two backups into one path each write a whole copy of their own and the
 * later rename wins, where a shared "{name}.tmp" let the second one truncate the first one's file
 * under it. '~' is not allowed in a client's backup path, so no request names another's file.
 * Everything happens relative to dirfd, so nothing on the way to it is looked up again.
 */
int ud_store_backup_at(struct ud_store *s, int dirfd, const char *name, const char *shown,
                       uint64_t *bytes, char *errmsg)
{
    char tmp[NAME_MAX + 1];
    int fd = -1;
    size_t name_len = strlen(name);
    if (name_len > UD_STORE_BACKUP_NAME_MAX)
        return ud_errf(errmsg, UD_EINVAL,
                       "invalid path: the backup file name is %zu bytes long, longer than %d",
                       name_len, UD_STORE_BACKUP_NAME_MAX);
    /* A name taken is another copy's or one a killed process left (its pid may come back, as
     * PID 1 in a container does, and the numbers restart at 0): take the next number. */
    for (int tries = 0; fd < 0 && tries < BACKUP_TMP_TRIES; tries++) {
        int n = snprintf(tmp, sizeof tmp, "%s~tmp.%ld.%u", name, (long)getpid(),
                         atomic_fetch_add(&backup_seq, 1));
        UD_ASSERT(n > 0 && (size_t)n < sizeof tmp);
        fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (fd < 0 && errno != EEXIST)
            break;
    }
    if (fd < 0)
        return ud_errf(errmsg, ud_err_from_errno(errno) == UD_ENOSPC ? UD_ENOSPC : UD_EIO,
                       "store %s: backup: create %s~tmp: %s", s->dir, shown, strerror(errno));

    ensure_headroom(s);
    int err = copy_enter(s, errmsg);
    if (err != 0) {
        close(fd);
        unlinkat(dirfd, tmp, 0);
        return err;
    }
    /* The copy runs in its own read transaction: the map must not move under it. */
    atomic_fetch_add(&s->backups, 1);
    pthread_rwlock_rdlock(&s->map_lock);
    int rc = copy_env(s, fd, MDB_CP_COMPACT);
    pthread_rwlock_unlock(&s->map_lock);
    atomic_fetch_sub(&s->backups, 1);
    struct stat st;
    if (rc != 0) {
        err = lmdb_errf(errmsg, rc, "store %s: backup to %s", s->dir, shown);
        if (err != UD_ENOSPC)
            err = UD_EIO;
    } else if (fsync(fd) != 0) {
        err = ud_errf(errmsg, errno == ENOSPC ? UD_ENOSPC : UD_EIO,
                      "store %s: backup: fsync %s~tmp: %s", s->dir, shown, strerror(errno));
    } else if (fstat(fd, &st) != 0) {
        err = ud_errf(errmsg, UD_EIO, "store %s: backup: stat %s~tmp: %s", s->dir, shown,
                      strerror(errno));
    }
    if (close(fd) != 0 && err == 0)
        err = ud_errf(errmsg, errno == ENOSPC ? UD_ENOSPC : UD_EIO,
                      "store %s: backup: close %s~tmp: %s", s->dir, shown, strerror(errno));
    if (err == 0 && renameat(dirfd, tmp, dirfd, name) != 0) {
        int e = errno; /* EISDIR: path names a directory (made after the caller's check) */
        err = ud_errf(errmsg, e == EISDIR ? UD_EINVAL : UD_EIO,
                      "%sstore %s: backup: rename %s to %s: %s",
                      e == EISDIR ? "invalid path: " : "", s->dir, tmp, shown, strerror(e));
    }
    if (err != 0) {
        unlinkat(dirfd, tmp, 0);
        return err;
    }
    if (fsync(dirfd) != 0)
        return ud_errf(errmsg, UD_EIO,
                       "store %s: backup: fsync directory of %s (the copy has replaced it, its "
                       "entry may not be durable): %s",
                       s->dir, shown, strerror(errno));
    if (bytes != NULL)
        *bytes = (uint64_t)st.st_size;
    return 0;
}

int ud_store_backup(struct ud_store *s, const char *path, char *errmsg)
{
    char dir[PATH_MAX];
    if (snprintf(dir, sizeof dir, "%s", path) >= (int)sizeof dir)
        return ud_errf(errmsg, UD_EINVAL, "backup path too long: %s", path);
    char *slash = strrchr(dir, '/');
    const char *name = path;
    if (slash == NULL) {
        snprintf(dir, sizeof dir, ".");
    } else {
        name = path + (slash - dir) + 1;
        if (slash == dir)
            slash++;
        *slash = '\0';
    }
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0)
        return ud_errf(errmsg, UD_EIO, "store %s: backup: open directory %s: %s", s->dir, dir,
                       strerror(errno));
    int rc = ud_store_backup_at(s, dirfd, name, path, NULL, errmsg);
    close(dirfd);
    return rc;
}

int ud_store_copy_fd(struct ud_store *s, int fd, int compact, char *errmsg)
{
    ensure_headroom(s);
    int err = copy_enter(s, errmsg);
    if (err != 0)
        return err;
    atomic_fetch_add(&s->backups, 1);
    pthread_rwlock_rdlock(&s->map_lock);
    int rc = copy_env(s, fd, compact ? MDB_CP_COMPACT : 0);
    pthread_rwlock_unlock(&s->map_lock);
    atomic_fetch_sub(&s->backups, 1);
    if (rc == 0)
        return 0;
    err = lmdb_errf(errmsg, rc, "store %s: copy", s->dir);
    return err == UD_ENOSPC ? UD_ENOSPC : UD_EIO;
}

static uint64_t tree_pages(const MDB_stat *st)
{
    return (uint64_t)st->ms_branch_pages + st->ms_leaf_pages + st->ms_overflow_pages;
}

void ud_store_stats(struct ud_store *s, struct ud_store_stats *st)
{
    memset(st, 0, sizeof *st);
    pthread_mutex_lock(&s->group_mu);
    st->copies_waiting = (uint32_t)s->copy_waits;
    pthread_mutex_unlock(&s->group_mu);
    struct ud_store_snap *snap;
    if (ud_store_snap_begin(s, &snap) != 0)
        return;
    st->map_size = current_map_size(s);

    /* In use = the two meta pages + every tree, including LMDB's own free-list (dbi 0) and main
     * database (which names the sub-databases); pages on the free list are not counted. */
    MDB_stat ms;
    uint64_t pages = 2;
    unsigned psize = 0;
    MDB_dbi main_dbi;
    if (mdb_stat(snap->txn, 0, &ms) == 0) {
        pages += tree_pages(&ms);
        psize = ms.ms_psize;
    }
    if (mdb_dbi_open(snap->txn, NULL, 0, &main_dbi) == 0 && mdb_stat(snap->txn, main_dbi, &ms) == 0)
        pages += tree_pages(&ms);
    for (int db = 0; db < DB_COUNT; db++) {
        if (mdb_stat(snap->txn, s->dbi[db], &ms) != 0)
            continue;
        pages += tree_pages(&ms);
        if (db == DB_KV)
            st->kv_entries = ms.ms_entries;
        else if (db == DB_ROW)
            st->row_entries = ms.ms_entries;
        else if (db == DB_LOB)
            st->lob_entries = ms.ms_entries;
    }
    st->used_bytes = pages * psize;
    st->writeback_rounds = ud_writeback_rounds(s->writeback);
    ud_store_snap_end(snap);
}
