/* Namespace lifecycle: open (lock file, store, WAL, recovery), close, stats and backups. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/arena.h"
#include "core/clock.h"
#include "core/dir.h"
#include "core/engine_int.h"
#include "core/err.h"
#include "core/log.h"
#include "core/prefault.h"

/* --- small helpers shared by the engine files ------------------------------------------------- */

uint64_t ud_ns_last_lsn(const struct ud_ns *ns)
{
    return __atomic_load_n(&ns->last_lsn, __ATOMIC_ACQUIRE);
}

const char *ud_ns_fmt_key(char *out, size_t size, const void *key, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    const uint8_t *k = key;
    size_t n = 0;
    if (size < 8) {
        if (size > 0)
            out[0] = '\0';
        return out;
    }
    out[n++] = '"';
    for (size_t i = 0; i < len; i++) {
        int printable = k[i] >= 0x20 && k[i] < 0x7f && k[i] != '"' && k[i] != '\\';
        size_t need = printable ? 1 : 4;
        if (n + need + 5 > size) {
            memcpy(out + n, "\"...", 4);
            out[n + 4] = '\0';
            return out;
        }
        if (printable) {
            out[n++] = (char)k[i];
        } else {
            out[n++] = '\\';
            out[n++] = 'x';
            out[n++] = hex[k[i] >> 4];
            out[n++] = hex[k[i] & 15];
        }
    }
    out[n++] = '"';
    out[n] = '\0';
    return out;
}

const char *ud_ns_fmt_txn_id(char out[33], const uint8_t id[UD_TXN_ID_SIZE])
{
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < UD_TXN_ID_SIZE; i++) {
        out[2 * i] = hex[id[i] >> 4];
        out[2 * i + 1] = hex[id[i] & 15];
    }
    out[32] = '\0';
    return out;
}

uint64_t ud_ns_next_hlc(struct ud_ns *ns)
{
    uint64_t now = ud_now_ns();
    uint64_t old = __atomic_load_n(&ns->hlc, __ATOMIC_RELAXED);
    uint64_t v;
    do {
        v = old + 1 > now ? old + 1 : now;
    } while (
        !__atomic_compare_exchange_n(&ns->hlc, &old, v, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
    return v;
}

void ud_ns_observe_hlc(struct ud_ns *ns, uint64_t hlc)
{
    uint64_t old = __atomic_load_n(&ns->hlc, __ATOMIC_RELAXED);
    while (old < hlc &&
           !__atomic_compare_exchange_n(&ns->hlc, &old, hlc, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        ;
}

const char *ud_ns_name(const struct ud_ns *ns)
{
    return ns->name;
}

/* --- directories and the lock file ------------------------------------------------------------ */

/*
 * One process per namespace: flock on {dir}/LOCK, which the kernel drops when the process dies,
 * so a crashed holder never leaves a stale lock. The pid inside is only for the error message.
 */
static int lock_dir(struct ud_ns *ns, char *errmsg)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/LOCK", ns->dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return ud_errf(errmsg, ud_err_from_errno(errno), "open %s: %s", path, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int err = errno;
        char pid[32] = "";
        ssize_t n = pread(fd, pid, sizeof pid - 1, 0);
        pid[n > 0 ? n : 0] = '\0';
        pid[strcspn(pid, "\n")] = '\0';
        close(fd);
        if (err == EWOULDBLOCK)
            return ud_errf(errmsg, UD_ELOCKED, "namespace %s: %s is locked by process %s", ns->name,
                           path, pid[0] ? pid : "(unknown)");
        return ud_errf(errmsg, UD_EIO, "flock %s: %s", path, strerror(err));
    }
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)n, 0) != n) {
        int err = errno;
        close(fd);
        return ud_errf(errmsg, ud_err_from_errno(err), "write %s: %s", path, strerror(err));
    }
    ns->lock_fd = fd;
    return 0;
}

/* --- open and close --------------------------------------------------------------------------- */

static void ns_destroy(struct ud_ns *ns)
{
    if (ns == NULL)
        return;
    ud_ns_flush_stop(ns);
    if (ns->wal != NULL)
        ud_wal_close(ns->wal); /* syncs what was appended */
    for (size_t i = 0; i < ns->nsealed; i++) {
        ud_memtable_unref(ns->sealed[i].mem);
        free(ns->sealed[i].txns);
    }
    free(ns->sealed);
    if (ns->active != NULL)
        ud_memtable_unref(ns->active);
    ud_ns_txns_free_all(ns);
    if (ns->store != NULL)
        ud_store_close(ns->store);
    if (ns->lock_fd >= 0)
        close(ns->lock_fd);
    if (ns->prefaulting)
        ud_prefault_stop();
    if (ns->pooling)
        ud_arena_pool_unreserve(ns->pool_bytes); /* after the memtables' blocks went there */
    pthread_cond_destroy(&ns->flush_cv);
    pthread_cond_destroy(&ns->done_cv);
    pthread_mutex_destroy(&ns->view_lock);
    pthread_mutex_destroy(&ns->apply_lock);
    free(ns->dir);
    free(ns->name);
    free(ns);
}

static int ns_alloc(const struct ud_engine_options *opts, struct ud_ns **out)
{
    struct ud_ns *ns = calloc(1, sizeof *ns);
    if (ns == NULL)
        return UD_ENOMEM;
    ns->lock_fd = -1;
    ns->opts = *opts;
    if (ns->opts.memtable_bytes == 0)
        ns->opts.memtable_bytes = UD_NS_DEFAULT_MEMTABLE_BYTES;
    if (ns->opts.max_sealed == 0)
        ns->opts.max_sealed = UD_NS_DEFAULT_MAX_SEALED;
    if (ns->opts.idle_flush_ms == 0)
        ns->opts.idle_flush_ms = UD_NS_DEFAULT_IDLE_FLUSH_MS;
    ns->seal_bytes = ud_ns_seal_bytes(ns->opts.memtable_bytes);
    ns->pool_bytes = ns->opts.memtable_bytes / 2;
    if (ns->opts.txn_max_bytes == 0)
        ns->opts.txn_max_bytes = UD_NS_DEFAULT_TXN_MAX_BYTES;
    ns->dir = strdup(opts->dir);
    const char *base = strrchr(opts->dir, '/');
    ns->name = strdup(opts->name != NULL ? opts->name : base != NULL ? base + 1 : opts->dir);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&ns->apply_lock, NULL);
    pthread_mutex_init(&ns->view_lock, NULL);
    pthread_cond_init(&ns->flush_cv, &ca);
    pthread_cond_init(&ns->done_cv, &ca);
    pthread_condattr_destroy(&ca);
    ns->opts.dir = ns->dir;
    ns->opts.name = ns->name;
    *out = ns;
    if (ns->dir == NULL || ns->name == NULL) {
        ns_destroy(ns);
        return UD_ENOMEM;
    }
    return 0;
}

int ud_ns_open(const struct ud_engine_options *opts, struct ud_ns **out, char *errmsg)
{
    if (opts == NULL || opts->dir == NULL || opts->dir[0] == '\0')
        return ud_errf(errmsg, UD_EINVAL, "namespace options need a directory");
    struct ud_ns *ns;
    if (ns_alloc(opts, &ns) != 0)
        return ud_errf(errmsg, UD_ENOMEM, "out of memory opening namespace %s", opts->dir);
    struct ud_checkpoint cp = {0};
    char path[PATH_MAX];
    int rc = ud_dir_create(ns->dir, errmsg);
    if (rc != 0 || (rc = lock_dir(ns, errmsg)) != 0)
        goto fail;

    snprintf(path, sizeof path, "%s/lmdb", ns->dir);
    struct ud_store_options so = {
        .dir = path, .map_size = opts->map_size, .incarnation = opts->incarnation};
    if ((rc = ud_store_open(&so, &ns->store, errmsg)) != 0) {
        ud_errwrap(errmsg, rc, "namespace %s: open store", ns->name);
        goto fail;
    }
    if ((rc = ud_store_read_checkpoint(ns->store, &cp, errmsg)) != 0) {
        ud_errwrap(errmsg, rc, "namespace %s: read checkpoint", ns->name);
        goto fail;
    }

    snprintf(path, sizeof path, "%s/wal", ns->dir);
    struct ud_wal_options wo = {.dir = path,
                                .segment_size = opts->segment_size,
                                .sync_mode = opts->sync_mode,
                                .sync_interval_ms = opts->sync_interval_ms,
                                /* A brand-new log continues the store's sequence. */
                                .start_lsn = cp.flushed_lsn + 1,
                                .fs = opts->fs};
    if ((rc = ud_wal_open(&wo, &ns->wal, errmsg)) != 0) {
        ud_errwrap(errmsg, rc, "namespace %s: open WAL", ns->name);
        goto fail;
    }
    if ((rc = ud_memtable_create(&ns->active, ns->seal_bytes)) != 0) {
        ud_errf(errmsg, rc, "namespace %s: create memtable: %s", ns->name, ud_strerror(rc));
        goto fail;
    }
    /* Without the thread the writer faults its arena blocks in itself: slower, not wrong. */
    ns->prefaulting = ud_prefault_start() == 0;
    /* A flushed memtable's blocks are kept for the next one, which fills seal_bytes: it then
     * takes resident memory instead of faulting fresh pages in. */
    ud_arena_pool_reserve(ns->pool_bytes);
    ns->pooling = true;
    ns->flushed_lsn = cp.flushed_lsn;
    ns->sealed_upto = cp.flushed_lsn;
    if (cp.ahead_lsn != 0) {
        /* A flush stopped halfway before this open: copies of the store wait until a flush's
         * checkpoint covers what the store holds (no copy can be running yet: the group opens). */
        ns->ahead_upto = cp.ahead_lsn;
        ns->store_ahead = ud_store_group_begin(ns->store);
        ud_info(UD_ENGINE_LOG,
                "namespace %s: the store holds versions up to LSN %llu past its checkpoint %llu "
                "(a flush was interrupted); copies wait for the next flush",
                ns->name, (unsigned long long)cp.ahead_lsn, (unsigned long long)cp.flushed_lsn);
    }
    if ((rc = ud_ns_flush_start(ns, errmsg)) != 0 || (rc = ud_ns_replay(ns, &cp, errmsg)) != 0 ||
        (rc = ud_ns_raft_position_load(ns, errmsg)) != 0)
        goto fail;
    if (cp.ahead_lsn != 0) {
        /* Close that window now rather than when the memtable fills: the flush thread runs the
         * sealed memtable's flush and retries it while it fails. A seal that fails leaves the
         * window open until the memtable fills and seals. */
        pthread_mutex_lock(&ns->apply_lock);
        int sr = ns->last_lsn > ns->sealed_upto ? ud_ns_seal_locked(ns) : 0;
        pthread_mutex_unlock(&ns->apply_lock);
        if (sr != 0)
            ud_warn(UD_ENGINE_LOG,
                    "namespace %s: cannot seal the memtable after recovery (%s); copies of the "
                    "store wait until it fills and its flush completes",
                    ns->name, ud_strerror(sr));
    }
    free(cp.txns);
    *out = ns;
    return 0;
fail:
    free(cp.txns);
    ns_destroy(ns);
    return rc;
}

void ud_ns_close(struct ud_ns *ns)
{
    ns_destroy(ns);
}

/* --- durability, stats, backups --------------------------------------------------------------- */

int ud_ns_wait_durable(struct ud_ns *ns, uint64_t lsn, char *errmsg)
{
    int rc = ud_wal_sync(ns->wal, lsn, errmsg);
    return rc != 0 ? ud_errwrap(errmsg, UD_EIO, "namespace %s: sync WAL to LSN %llu", ns->name,
                                (unsigned long long)lsn)
                   : 0;
}

int ud_ns_sync(struct ud_ns *ns, char *errmsg)
{
    int rc = ud_wal_sync_all(ns->wal, errmsg);
    return rc != 0 ? ud_errwrap(errmsg, rc, "namespace %s: sync WAL", ns->name) : 0;
}

int ud_ns_wal_position(struct ud_ns *ns, uint64_t lsn, uint32_t *segment_id, uint64_t *offset)
{
    return ud_wal_position_of(ns->wal, lsn, segment_id, offset);
}

void ud_ns_stats(struct ud_ns *ns, struct ud_ns_stats *st)
{
    memset(st, 0, sizeof *st);
    struct ud_wal_stats ws;
    ud_wal_stats(ns->wal, &ws);
    st->last_lsn = ud_ns_last_lsn(ns);
    st->durable_lsn = ws.durable_lsn;
    st->segment_id = ws.active_segment;
    st->offset = ws.active_offset;
    st->wal_first_lsn = ws.first_lsn;
    st->wal_segments = ws.segments;
    st->wal_syncs = ws.syncs;
    st->wal_sync_rounds = ws.sync_rounds;
    st->wal_sync_ns = ws.sync_ns;
    st->wal_sync_max_ns = ws.sync_max_ns;
    st->ops_received = __atomic_load_n(&ns->ops_received, __ATOMIC_RELAXED);
    st->open_txns = __atomic_load_n(&ns->open_txns, __ATOMIC_RELAXED);
    pthread_mutex_lock(&ns->view_lock);
    st->flushed_lsn = ns->flushed_lsn;
    st->ops_flushed = ns->ops_flushed;
    st->last_flush_unix_ms = ns->last_flush_unix_ms;
    st->sealed_memtables = (uint32_t)ns->nsealed;
    st->flush_errors = ns->flush_errors;
    st->flush_txns = __atomic_load_n(&ns->flush_txns, __ATOMIC_RELAXED);
    st->flush_cpu_ns = __atomic_load_n(&ns->flush_cpu_ns, __ATOMIC_RELAXED);
    st->memtable_bytes = ud_memtable_bytes(ns->active);
    for (size_t i = 0; i < ns->nsealed; i++)
        st->memtable_bytes += ud_memtable_bytes(ns->sealed[i].mem);
    pthread_mutex_unlock(&ns->view_lock);
}

int ud_ns_wal_backup(struct ud_ns *ns, int dirfd, const char *dir, uint64_t after, uint32_t **ids,
                     uint32_t *copied, char *errmsg)
{
    int rc = ud_wal_backup_at(ns->wal, dirfd, dir, after, ids, copied, errmsg);
    return rc != 0 ? ud_errwrap(errmsg, rc, "namespace %s: WAL backup", ns->name) : 0;
}

int ud_ns_store_backup(struct ud_ns *ns, const char *path, char *errmsg)
{
    int rc = ud_store_backup(ns->store, path, errmsg);
    return rc != 0 ? ud_errwrap(errmsg, rc, "namespace %s: store backup", ns->name) : 0;
}

int ud_ns_store_backup_at(struct ud_ns *ns, int dirfd, const char *name, const char *shown,
                          uint64_t *bytes, char *errmsg)
{
    int rc = ud_store_backup_at(ns->store, dirfd, name, shown, bytes, errmsg);
    return rc != 0 ? ud_errwrap(errmsg, rc, "namespace %s: store backup", ns->name) : 0;
}
