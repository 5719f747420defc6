/* Power-loss simulation layer: unsynced bytes live in memory until a crash keeps a random subset.
 */
#include "tests/lib/fs_powerloss.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/err.h"
#include "tests/lib/testutil.h"

struct ud_fs_file {
    struct ud_fs_file *next; /* list of open files, guarded by the layer's lock */
    struct ud_fs_file *prev;
    int fd;          /* the disk file */
    uint8_t *mem;    /* owned: the page cache, returned as the mapping */
    uint64_t size;   /* bytes of mem and of the disk file */
    char path[4096]; /* for messages */
};

struct ud_fs_powerloss {
    struct ud_fs fs; /* first member: the vtable callbacks cast back to the layer */
    pthread_mutex_t lock;
    unsigned flags;
    int dead;
    uint64_t crash_countdown; /* syncs left before an armed crash; 0: none armed */
    uint64_t crash_seed;
    struct ud_fs_file *files;
    struct ud_fs_powerloss_stats st;
};

static struct ud_fs_powerloss *layer_of(struct ud_fs *fs)
{
    return (struct ud_fs_powerloss *)fs;
}

static int pread_full(int fd, uint8_t *buf, uint64_t len, uint64_t off)
{
    while (len > 0) {
        ssize_t n = pread(fd, buf, len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n == 0) {
            /* The disk file is shorter than expected: it was changed behind our back. */
            errno = EIO;
            return -1;
        }
        buf += n;
        len -= (uint64_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

static int pwrite_full(int fd, const uint8_t *buf, uint64_t len, uint64_t off)
{
    while (len > 0) {
        ssize_t n = pwrite(fd, buf, len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        buf += n;
        len -= (uint64_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

static int pl_open(struct ud_fs *fs, const char *path, int create, uint64_t size,
                   struct ud_fs_file **file, uint8_t **map, uint64_t *map_size, char *errmsg)
{
    struct ud_fs_powerloss *pl = layer_of(fs);
    struct ud_fs_file *f = calloc(1, sizeof *f);
    if (f == NULL)
        return ud_errf(errmsg, UD_ENOMEM, "open %s: out of memory", path);
    snprintf(f->path, sizeof f->path, "%s", path);
    f->fd = -1;

    int rc = 0;
    pthread_mutex_lock(&pl->lock);
    if (pl->dead) {
        rc = ud_errf(errmsg, UD_EIO, "open %s: power lost", path);
        goto fail;
    }
    if (create) {
        f->fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (f->fd < 0) {
            int code = errno == EEXIST   ? UD_EEXIST
                       : errno == ENOENT ? UD_ENOTFOUND
                                         : ud_err_from_errno(errno);
            rc = ud_errf(errmsg, code, "create %s: %s", path, strerror(errno));
            goto fail;
        }
        if (size > 0) {
            /* Preallocation makes a full disk fail here, as the contract asks; the extent reads
             * back as zeros, matching the zeroed copy. */
            int err = posix_fallocate(f->fd, 0, (off_t)size);
            if (err != 0) {
                rc = ud_errf(errmsg, ud_err_from_errno(err), "preallocate %s: %s", path,
                             strerror(err));
                unlink(path);
                goto fail;
            }
        }
        f->size = size;
        f->mem = calloc(1, size > 0 ? size : 1);
        if (f->mem == NULL) {
            unlink(path);
            rc = ud_errf(errmsg, UD_ENOMEM, "create %s: out of memory", path);
            goto fail;
        }
        pl->st.creates++;
    } else {
        f->fd = open(path, O_RDWR | O_CLOEXEC);
        if (f->fd < 0) {
            int code = errno == ENOENT ? UD_ENOTFOUND : ud_err_from_errno(errno);
            rc = ud_errf(errmsg, code, "open %s: %s", path, strerror(errno));
            goto fail;
        }
        struct stat sb;
        if (fstat(f->fd, &sb) != 0) {
            rc = ud_errf(errmsg, UD_EIO, "stat %s: %s", path, strerror(errno));
            goto fail;
        }
        f->size = (uint64_t)sb.st_size;
        f->mem = malloc(f->size > 0 ? f->size : 1);
        if (f->mem == NULL) {
            rc = ud_errf(errmsg, UD_ENOMEM, "open %s: out of memory", path);
            goto fail;
        }
        if (pread_full(f->fd, f->mem, f->size, 0) != 0) {
            rc = ud_errf(errmsg, UD_EIO, "read %s: %s", path, strerror(errno));
            goto fail;
        }
    }
    f->next = pl->files;
    if (pl->files != NULL)
        pl->files->prev = f;
    pl->files = f;
    pl->st.opens++;
    pl->st.open_files++;
    pthread_mutex_unlock(&pl->lock);

    *file = f;
    *map = f->mem;
    *map_size = f->size;
    return 0;

fail:
    pthread_mutex_unlock(&pl->lock);
    if (f->fd >= 0)
        close(f->fd);
    free(f->mem);
    free(f);
    return rc;
}

static int crash_locked(struct ud_fs_powerloss *pl, uint64_t seed);

static int pl_sync(struct ud_fs *fs, struct ud_fs_file *f, uint64_t off, uint64_t len, char *errmsg)
{
    struct ud_fs_powerloss *pl = layer_of(fs);
    int rc = 0;
    pthread_mutex_lock(&pl->lock);
    if (!pl->dead && pl->crash_countdown > 0 && --pl->crash_countdown == 0)
        crash_locked(pl, pl->crash_seed);
    if (pl->dead) {
        pl->st.failed_syncs++;
        rc = ud_errf(errmsg, UD_EIO, "sync %s: power lost", f->path);
    } else if (off > f->size || len > f->size - off) {
        rc = ud_errf(errmsg, UD_EIO, "sync %s: range %llu+%llu beyond size %llu", f->path,
                     (unsigned long long)off, (unsigned long long)len, (unsigned long long)f->size);
    } else if (pl->flags & UD_FS_POWERLOSS_LYING) {
        pl->st.syncs++;
    } else if (pwrite_full(f->fd, f->mem + off, len, off) != 0) {
        rc = ud_errf(errmsg, UD_EIO, "sync %s: %s", f->path, strerror(errno));
    } else {
        /* Exactly [off, off+len), not whole pages: a writer that forgets to sync a byte it relies
         * on is caught even when that byte shares a page with synced ones. */
        pl->st.syncs++;
        pl->st.sync_bytes += len;
    }
    pthread_mutex_unlock(&pl->lock);
    return rc;
}

/* Into the copy only (the page cache of this model): the disk file sees it at a sync or a crash. */
static int pl_write(struct ud_fs *fs, struct ud_fs_file *f, uint64_t off, const void *data,
                    uint64_t len, char *errmsg)
{
    struct ud_fs_powerloss *pl = layer_of(fs);
    int rc = 0;
    pthread_mutex_lock(&pl->lock);
    if (off > f->size || len > f->size - off)
        rc = ud_errf(errmsg, UD_EIO, "write %s: range %llu+%llu beyond size %llu", f->path,
                     (unsigned long long)off, (unsigned long long)len, (unsigned long long)f->size);
    else
        memcpy(f->mem + off, data, len);
    pthread_mutex_unlock(&pl->lock);
    return rc;
}

/* Zeros into the copy and onto the disk file at once: readied bytes are durable zeros. */
static int pl_prepare(struct ud_fs *fs, struct ud_fs_file *f, uint64_t off, uint64_t len,
                      char *errmsg)
{
    struct ud_fs_powerloss *pl = layer_of(fs);
    int rc = 0;
    pthread_mutex_lock(&pl->lock);
    if (pl->dead) {
        rc = ud_errf(errmsg, UD_EIO, "prepare %s: power lost", f->path);
    } else if (off > f->size || len > f->size - off) {
        rc = ud_errf(errmsg, UD_EIO, "prepare %s: range %llu+%llu beyond size %llu", f->path,
                     (unsigned long long)off, (unsigned long long)len, (unsigned long long)f->size);
    } else {
        memset(f->mem + off, 0, len);
        if (!(pl->flags & UD_FS_POWERLOSS_LYING) && pwrite_full(f->fd, f->mem + off, len, off) != 0)
            rc = ud_errf(errmsg, UD_EIO, "prepare %s: %s", f->path, strerror(errno));
        else
            pl->st.prepares++;
    }
    pthread_mutex_unlock(&pl->lock);
    return rc;
}

static void pl_close(struct ud_fs *fs, struct ud_fs_file *f)
{
    struct ud_fs_powerloss *pl = layer_of(fs);
    pthread_mutex_lock(&pl->lock);
    if (f->prev != NULL)
        f->prev->next = f->next;
    else
        pl->files = f->next;
    if (f->next != NULL)
        f->next->prev = f->prev;
    pl->st.open_files--;
    pthread_mutex_unlock(&pl->lock);
    close(f->fd);
    free(f->mem);
    free(f);
}

static int pl_sync_dir(struct ud_fs *fs, const char *dir, char *errmsg)
{
    struct ud_fs_powerloss *pl = layer_of(fs);
    int rc = 0;
    pthread_mutex_lock(&pl->lock);
    if (pl->dead) {
        rc = ud_errf(errmsg, UD_EIO, "sync directory %s: power lost", dir);
    } else {
        /* Directory entries are durable at once in this model (see the header); only report a
         * directory that does not exist, as fsync of it would. */
        int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
            rc = ud_errf(errmsg, ud_err_from_errno(errno), "sync directory %s: %s", dir,
                         strerror(errno));
        else
            close(fd);
    }
    pthread_mutex_unlock(&pl->lock);
    return rc;
}

static int pl_unlink(struct ud_fs *fs, const char *path, char *errmsg)
{
    struct ud_fs_powerloss *pl = layer_of(fs);
    int rc = 0;
    pthread_mutex_lock(&pl->lock);
    if (pl->dead) {
        rc = ud_errf(errmsg, UD_EIO, "unlink %s: power lost", path);
    } else if (unlink(path) != 0) {
        int code = errno == ENOENT ? UD_ENOTFOUND : UD_EIO;
        rc = ud_errf(errmsg, code, "unlink %s: %s", path, strerror(errno));
    }
    pthread_mutex_unlock(&pl->lock);
    return rc;
}

int ud_fs_powerloss_new(unsigned flags, struct ud_fs_powerloss **out)
{
    struct ud_fs_powerloss *pl = calloc(1, sizeof *pl);
    if (pl == NULL)
        return UD_ENOMEM;
    pl->fs.open = pl_open;
    pl->fs.sync = pl_sync;
    pl->fs.write = pl_write;
    pl->fs.prepare = pl_prepare;
    pl->fs.close = pl_close;
    pl->fs.sync_dir = pl_sync_dir;
    pl->fs.unlink = pl_unlink;
    pl->flags = flags;
    pthread_mutex_init(&pl->lock, NULL);
    *out = pl;
    return 0;
}

struct ud_fs *ud_fs_powerloss_fs(struct ud_fs_powerloss *pl)
{
    return &pl->fs;
}

/* Compares one file's copy with its disk file and writes a random subset of differing sectors. */
static int crash_file(struct ud_fs_powerloss *pl, struct ud_fs_file *f, uint64_t *rng,
                      uint32_t keep_permille, uint8_t *disk, uint8_t *snap, uint64_t chunk)
{
    for (uint64_t base = 0; base < f->size; base += chunk) {
        uint64_t n = f->size - base < chunk ? f->size - base : chunk;
        if (pread_full(f->fd, disk, n, base) != 0)
            return -1;
        /* A writer may still be storing into the copy (the WAL does not know the power is off).
         * Snapshot it once so each sector is compared and written from one consistent version. */
        memcpy(snap, f->mem + base, n);
        for (uint64_t s = 0; s < n; s += UD_FS_POWERLOSS_SECTOR) {
            uint64_t slen = n - s < UD_FS_POWERLOSS_SECTOR ? n - s : UD_FS_POWERLOSS_SECTOR;
            if (memcmp(disk + s, snap + s, slen) == 0)
                continue;
            if (ud_test_rand(rng) % 1000 < keep_permille) {
                if (pwrite_full(f->fd, snap + s, slen, base + s) != 0)
                    return -1;
                pl->st.sectors_kept++;
            } else {
                pl->st.sectors_dropped++;
            }
        }
    }
    return 0;
}

/* The crash itself; the caller holds the lock. */
static int crash_locked(struct ud_fs_powerloss *pl, uint64_t seed)
{
    static const uint32_t keep_choices[] = {0, 250, 500, 750, 1000};
    const uint64_t chunk = 1u << 20;
    uint64_t rng = seed ^ 0x5DEECE66DA3B1F27ull;
    int rc = 0;

    if (pl->dead)
        return 0;
    uint8_t *disk = malloc(chunk);
    uint8_t *snap = malloc(chunk);
    uint32_t keep = keep_choices[ud_test_rand(&rng) % 5];
    pl->st.keep_permille = keep;
    pl->st.crashes++;
    for (struct ud_fs_file *f = pl->files; f != NULL; f = f->next) {
        pl->st.crash_files++;
        if (disk == NULL || snap == NULL || crash_file(pl, f, &rng, keep, disk, snap, chunk) != 0)
            rc = UD_EIO;
    }
    pl->dead = 1;
    pl->crash_countdown = 0;
    free(disk);
    free(snap);
    return rc;
}

int ud_fs_powerloss_crash(struct ud_fs_powerloss *pl, uint64_t seed)
{
    pthread_mutex_lock(&pl->lock);
    int rc = crash_locked(pl, seed);
    pthread_mutex_unlock(&pl->lock);
    return rc;
}

void ud_fs_powerloss_crash_at_sync(struct ud_fs_powerloss *pl, uint64_t nth, uint64_t seed)
{
    pthread_mutex_lock(&pl->lock);
    pl->crash_countdown = nth;
    pl->crash_seed = seed;
    pthread_mutex_unlock(&pl->lock);
}

int ud_fs_powerloss_dead(struct ud_fs_powerloss *pl)
{
    pthread_mutex_lock(&pl->lock);
    int dead = pl->dead;
    pthread_mutex_unlock(&pl->lock);
    return dead;
}

void ud_fs_powerloss_stats(struct ud_fs_powerloss *pl, struct ud_fs_powerloss_stats *st)
{
    pthread_mutex_lock(&pl->lock);
    *st = pl->st;
    pthread_mutex_unlock(&pl->lock);
}

void ud_fs_powerloss_free(struct ud_fs_powerloss *pl)
{
    if (pl == NULL)
        return;
    UD_ASSERT(pl->files == NULL);
    pthread_mutex_destroy(&pl->lock);
    free(pl);
}
