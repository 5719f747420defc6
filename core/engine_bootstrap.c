/* Bootstrap of a follower's namespace from an upstream's snapshot plus the WAL records that
 * recovery needs before the snapshot point (docs/engine.md "Bootstrap"). */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/dir.h"
#include "core/engine.h"
#include "core/err.h"
#include "core/log.h"
#include "core/store.h"
#include "core/wal.h"
#include "proto/record.h"

struct ud_ns_bootstrap {
    char dir[PATH_MAX];
    int lock_fd;
    struct ud_wal *wal;
    uint64_t from;
    uint64_t checkpoint;
    uint64_t next;        /* LSN the next appended record must carry */
    uint64_t incarnation; /* the snapshot's store's (ud_store_incarnation) */
};

static void parent_of(const char *path, char *out, size_t size)
{
    snprintf(out, size, "%s", path);
    char *slash = strrchr(out, '/');
    if (slash == NULL)
        snprintf(out, size, ".");
    else if (slash == out)
        out[1] = '\0';
    else
        *slash = '\0';
}

static void bootstrap_free(struct ud_ns_bootstrap *b)
{
    if (b->wal != NULL)
        ud_wal_close(b->wal);
    b->wal = NULL;
    if (b->lock_fd >= 0)
        close(b->lock_fd);
    b->lock_fd = -1;
    free(b);
}

void ud_ns_bootstrap_abort(struct ud_ns_bootstrap *b)
{
    if (b == NULL)
        return;
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", b->dir);
    bootstrap_free(b);
    ud_dir_remove_tree(dir);
}

int ud_ns_bootstrap_begin(const char *dir, const char *snapshot_path,
                          const struct ud_engine_options *opts, struct ud_ns_bootstrap **out,
                          char *errmsg)
{
    return ud_ns_bootstrap_begin_at(dir, snapshot_path, opts, 0, out, errmsg);
}

int ud_ns_bootstrap_begin_at(const char *dir, const char *snapshot_path,
                             const struct ud_engine_options *opts, int keep_checkpoint_record,
                             struct ud_ns_bootstrap **out, char *errmsg)
{
    if (dir == NULL || dir[0] == '\0' || snapshot_path == NULL || opts == NULL)
        return ud_errf(errmsg, UD_EINVAL, "bootstrap needs a directory, a snapshot and options");
    struct ud_ns_bootstrap *b = calloc(1, sizeof *b);
    if (b == NULL)
        return ud_errf(errmsg, UD_ENOMEM, "bootstrap %s: out of memory", dir);
    b->lock_fd = -1;
    if (snprintf(b->dir, sizeof b->dir, "%s", dir) >= (int)sizeof b->dir) {
        free(b);
        return ud_errf(errmsg, UD_EINVAL, "bootstrap: directory path too long: %s", dir);
    }
    char path[PATH_MAX + 32];
    int rc = ud_dir_remove_tree(dir);
    if (rc != 0) {
        free(b);
        return ud_errf(errmsg, rc, "bootstrap: remove old %s: %s", dir, ud_strerror(rc));
    }
    if (mkdir(dir, 0755) != 0) {
        int e = errno;
        free(b);
        return ud_errf(errmsg, ud_err_from_errno(e), "bootstrap: mkdir %s: %s", dir, strerror(e));
    }
    /* The same lock file as an open namespace: nobody opens it while it is being built. */
    snprintf(path, sizeof path, "%s/LOCK", dir);
    b->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (b->lock_fd < 0 || flock(b->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        rc = ud_errf(errmsg, b->lock_fd < 0 ? UD_EIO : UD_ELOCKED, "bootstrap: lock %s: %s", path,
                     strerror(errno));
        goto fail;
    }
    snprintf(path, sizeof path, "%s/lmdb", dir);
    if (mkdir(path, 0755) != 0) {
        rc = ud_errf(errmsg, ud_err_from_errno(errno), "bootstrap: mkdir %s: %s", path,
                     strerror(errno));
        goto fail;
    }
    snprintf(path, sizeof path, "%s/lmdb/data.mdb", dir);
    if (rename(snapshot_path, path) != 0) {
        rc = ud_errf(errmsg, ud_err_from_errno(errno), "bootstrap: move snapshot %s to %s: %s",
                     snapshot_path, path, strerror(errno));
        goto fail;
    }

    /* The snapshot's own checkpoint says where the WAL must start. */
    snprintf(path, sizeof path, "%s/lmdb", dir);
    struct ud_store_options so = {.dir = path, .map_size = opts->map_size};
    struct ud_store *store;
    if ((rc = ud_store_open(&so, &store, errmsg)) != 0) {
        ud_errwrap(errmsg, rc, "bootstrap: snapshot %s", snapshot_path);
        goto fail;
    }
    struct ud_checkpoint cp = {0};
    rc = ud_store_read_checkpoint(store, &cp, errmsg);
    b->incarnation = ud_store_incarnation(store);
    ud_store_close(store);
    if (rc != 0) {
        ud_errwrap(errmsg, rc, "bootstrap: snapshot %s: checkpoint", snapshot_path);
        goto fail;
    }
    b->checkpoint = cp.flushed_lsn;
    b->from = cp.flushed_lsn + 1;
    if (keep_checkpoint_record && cp.flushed_lsn > 0)
        b->from = cp.flushed_lsn;
    for (uint32_t i = 0; i < cp.txn_count; i++)
        if (cp.txns[i].first_lsn < b->from)
            b->from = cp.txns[i].first_lsn;
    free(cp.txns);
    if (b->from == 0) {
        rc = ud_errf(errmsg, UD_ECORRUPT,
                     "bootstrap: snapshot %s names an open transaction starting at LSN 0",
                     snapshot_path);
        goto fail;
    }
    b->next = b->from;

    snprintf(path, sizeof path, "%s/wal", dir);
    struct ud_wal_options wo = {.dir = path,
                                .segment_size = opts->segment_size,
                                .sync_mode = UD_WAL_SYNC_NONE, /* synced once, at finish */
                                .start_lsn = b->from,
                                .fs = opts->fs};
    if ((rc = ud_wal_open(&wo, &b->wal, errmsg)) != 0) {
        ud_errwrap(errmsg, rc, "bootstrap: create WAL in %s", path);
        goto fail;
    }
    ud_info("engine",
            "bootstrap %s: snapshot at LSN %llu, WAL from LSN %llu (%u open transactions)", dir,
            (unsigned long long)b->checkpoint, (unsigned long long)b->from, cp.txn_count);
    *out = b;
    return 0;
fail:
    ud_ns_bootstrap_abort(b);
    return rc;
}

uint64_t ud_ns_bootstrap_from(const struct ud_ns_bootstrap *b)
{
    return b->from;
}

uint64_t ud_ns_bootstrap_checkpoint(const struct ud_ns_bootstrap *b)
{
    return b->checkpoint;
}

uint64_t ud_ns_bootstrap_incarnation(const struct ud_ns_bootstrap *b)
{
    return b->incarnation;
}

int ud_ns_bootstrap_complete(const struct ud_ns_bootstrap *b)
{
    return b->next > b->checkpoint;
}

int ud_ns_bootstrap_append(struct ud_ns_bootstrap *b, const uint8_t *record, size_t len,
                           uint64_t lsn, char *errmsg)
{
    if (lsn != b->next || lsn > b->checkpoint)
        return ud_errf(errmsg, UD_ERANGE,
                       "bootstrap %s: record at LSN %llu, expected LSN %llu (WAL %llu..%llu)",
                       b->dir, (unsigned long long)lsn, (unsigned long long)b->next,
                       (unsigned long long)b->from, (unsigned long long)b->checkpoint);
    struct ud_record rec;
    char why[UD_ERRMSG_SIZE] = "";
    if (ud_record_decode(record, len, &rec, why) != 0)
        return ud_errf(errmsg, UD_ECORRUPT, "bootstrap %s: record at LSN %llu: %s", b->dir,
                       (unsigned long long)lsn, why);
    if (rec.lsn != lsn)
        return ud_errf(errmsg, UD_ECORRUPT,
                       "bootstrap %s: record at LSN %llu carries LSN %llu in its header", b->dir,
                       (unsigned long long)lsn, (unsigned long long)rec.lsn);
    uint64_t got;
    int rc = ud_wal_append(b->wal, record, len, &got, NULL);
    if (rc != 0)
        return ud_errf(errmsg, rc, "bootstrap %s: append LSN %llu: %s", b->dir,
                       (unsigned long long)lsn, ud_strerror(rc));
    UD_ASSERT(got == lsn);
    b->next = lsn + 1;
    return 0;
}

int ud_ns_bootstrap_finish(struct ud_ns_bootstrap *b, const char *final_dir, char *errmsg)
{
    int rc;
    if (!ud_ns_bootstrap_complete(b)) {
        rc = ud_errf(errmsg, UD_ETXN,
                     "bootstrap %s: WAL records %llu..%llu are still missing before the "
                     "snapshot point",
                     b->dir, (unsigned long long)b->next, (unsigned long long)b->checkpoint);
        ud_ns_bootstrap_abort(b);
        return rc;
    }
    if ((rc = ud_wal_sync_all(b->wal, errmsg)) != 0) {
        ud_errwrap(errmsg, rc, "bootstrap %s: sync WAL", b->dir);
        ud_ns_bootstrap_abort(b);
        return rc;
    }
    ud_wal_close(b->wal);
    b->wal = NULL;
    /* The snapshot file came over the network: make it durable before the rename publishes it. */
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/lmdb/data.mdb", b->dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) != 0) {
        rc = ud_errf(errmsg, UD_EIO, "bootstrap: fsync %s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        ud_ns_bootstrap_abort(b);
        return rc;
    }
    close(fd);
    /* The snapshot is published as durable below: its directory entries must be on disk. */
    const char *dirs[2] = {path, b->dir};
    snprintf(path, sizeof path, "%s/lmdb", b->dir);
    for (int i = 0; i < 2; i++) {
        if ((rc = ud_dir_sync(dirs[i], errmsg)) != 0) {
            ud_errwrap(errmsg, rc, "bootstrap");
            ud_ns_bootstrap_abort(b);
            return rc;
        }
    }
    struct stat st;
    if (lstat(final_dir, &st) == 0) {
        rc = ud_errf(errmsg, UD_EEXIST, "bootstrap: %s already exists", final_dir);
        ud_ns_bootstrap_abort(b);
        return rc;
    }
    if (rename(b->dir, final_dir) != 0) {
        rc = ud_errf(errmsg, UD_EIO, "bootstrap: rename %s to %s: %s", b->dir, final_dir,
                     strerror(errno));
        ud_ns_bootstrap_abort(b);
        return rc;
    }
    char parent[PATH_MAX];
    parent_of(final_dir, parent, sizeof parent);
    rc = ud_dir_sync(parent, errmsg);
    parent_of(b->dir, path, sizeof path);
    if (rc == 0 && strcmp(path, parent) != 0)
        rc = ud_dir_sync(path, errmsg);
    bootstrap_free(b);
    return rc != 0 ? ud_errwrap(errmsg, rc, "bootstrap") : 0;
}
