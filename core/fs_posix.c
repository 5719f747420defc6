/* Production file layer for WAL segments: preallocated files mapped MAP_SHARED read-write, records
 * written with pwrite. */
#include "core/fs.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/dir.h"
#include "core/err.h"

/*
 * The descriptor is kept only while the file may be written (until done_writing, which recovery
 * calls for each sealed segment it opens): the mapping keeps the open file alive, msync(MS_SYNC)
 * needs no descriptor (on Linux it is vfs_fsync_range with datasync semantics, the same path as
 * fdatasync), and a log with hundreds of segments across many namespaces would otherwise hold
 * hundreds of descriptors.
 */
struct ud_fs_file {
    uint8_t *map;  /* NULL for an empty file: mmap of 0 bytes is invalid */
    uint64_t size; /* mapped bytes == file size */
    int fd;        /* -1 after done_writing */
    char path[];   /* for error messages */
};

static int open_error(int err)
{
    switch (err) {
    case ENOENT:
        return UD_ENOTFOUND;
    case EEXIST:
        return UD_EEXIST;
    case ENOSPC:
    case EDQUOT:
        return UD_ENOSPC;
    default:
        return UD_EIO;
    }
}

static int posix_open(struct ud_fs *fs, const char *path, int create, uint64_t size,
                      struct ud_fs_file **file, uint8_t **map, uint64_t *map_size, char *errmsg)
{
    (void)fs;
    int flags = O_RDWR | O_CLOEXEC | (create ? O_CREAT | O_EXCL : 0);
    int fd = open(path, flags, 0644);
    if (fd < 0) {
        int err = errno;
        return ud_errf(errmsg, open_error(err), "open %s: %s", path, strerror(err));
    }

    int rc;
    if (create) {
        /* posix_fallocate reports through its return value, not errno. Reserving every block now
         * turns a full disk into an error here instead of a SIGBUS on a later store. */
        int err = posix_fallocate(fd, 0, (off_t)size);
        if (err != 0) {
            rc = ud_errf(errmsg, open_error(err) == UD_ENOSPC ? UD_ENOSPC : UD_EIO,
                         "preallocate %s (%llu bytes): %s", path, (unsigned long long)size,
                         strerror(err));
            goto fail_created;
        }
    } else {
        struct stat st;
        if (fstat(fd, &st) != 0) {
            rc = ud_errf(errmsg, UD_EIO, "stat %s: %s", path, strerror(errno));
            goto fail_fd;
        }
        size = (uint64_t)st.st_size;
    }

    struct ud_fs_file *f = malloc(sizeof *f + strlen(path) + 1);
    if (f == NULL) {
        rc = ud_errf(errmsg, UD_ENOMEM, "open %s: out of memory", path);
        goto fail_created;
    }
    strcpy(f->path, path);
    f->size = size;
    f->map = NULL;
    f->fd = -1;
    if (size > 0) {
        void *p = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED) {
            rc = ud_errf(errmsg, errno == ENOMEM ? UD_ENOMEM : UD_EIO, "mmap %s (%llu bytes): %s",
                         path, (unsigned long long)size, strerror(errno));
            free(f);
            goto fail_created;
        }
        f->map = p;
    }
    /* Kept for the writes to come: a created segment, or the active one recovery opens. Recovery
     * gives a sealed one's back (done_writing), so only segments still written hold one, and a
     * shortage of descriptors shows here, at the open, not as a failed write later. */
    f->fd = fd;
    *file = f;
    *map = f->map;
    *map_size = f->size;
    return 0;

fail_created:
    if (create)
        unlink(path);
fail_fd:
    close(fd);
    return rc;
}

static int posix_sync(struct ud_fs *fs, struct ud_fs_file *file, uint64_t off, uint64_t len,
                      char *errmsg)
{
    (void)fs;
    if (len == 0 || file->map == NULL)
        return 0;
    if (off >= file->size)
        return 0;
    if (len > file->size - off)
        len = file->size - off;
    /* msync wants a page-aligned start. Records arrive by pwrite, so the mapping's pages are
     * mapped read-only by readers if at all (the header page aside): writeback has no writable
     * page tables to write-protect. */
    uint64_t start = off & ~(uint64_t)(sysconf(_SC_PAGESIZE) - 1);
    if (msync(file->map + start, (size_t)(off + len - start), MS_SYNC) != 0)
        return ud_errf(errmsg, UD_EIO, "sync %s [%llu, %llu): %s", file->path,
                       (unsigned long long)off, (unsigned long long)(off + len), strerror(errno));
    return 0;
}

static int posix_write(struct ud_fs *fs, struct ud_fs_file *file, uint64_t off, const void *data,
                       uint64_t len, char *errmsg)
{
    (void)fs;
    if (off > file->size || len > file->size - off)
        return ud_errf(errmsg, UD_EIO, "write %s [%llu, %llu): beyond its %llu bytes", file->path,
                       (unsigned long long)off, (unsigned long long)(off + len),
                       (unsigned long long)file->size);
    if (file->fd < 0)
        return ud_errf(errmsg, UD_EIO, "write %s: no longer open for writing", file->path);
    int err = ud_pwrite_all(file->fd, data, (size_t)len, off);
    if (err != 0)
        return ud_errf(errmsg, err == ENOSPC || err == EDQUOT ? UD_ENOSPC : UD_EIO,
                       "write %s at %llu: %s", file->path, (unsigned long long)off, strerror(err));
    return 0;
}

/* Never written: reading it maps the kernel's zero page, so it costs no memory. */
static uint8_t zeros[1u << 20];

/*
 * Makes [off, off+len) durable through an open file of its own. Linux reports a failed writeback
 * once per open file: a sync through the segment's own file here could take the report of a
 * failed write of the records' pages, and the round that syncs them next would find nothing,
 * acknowledge them and only then learn of the failure from us. A file opened for this sync sees
 * only what failed from now on, and the segment's file still sees it too.
 */
static int sync_own_file(struct ud_fs_file *file, uint64_t off, uint64_t len, char *errmsg)
{
    int fd = open(file->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        /* A shortage of descriptors or memory (or the file gone) says nothing about the disk:
         * not UD_EIO, which fails the log; it only ends the readying. Any other failure (EIO,
         * EACCES, EROFS) does say something wrong about the disk. */
        int err = errno;
        int rc = err == ENOENT                                     ? UD_ENOTFOUND
                 : err == EMFILE || err == ENFILE || err == ENOMEM ? UD_ENOMEM
                                                                   : UD_EIO;
        return ud_errf(errmsg, rc, "open %s for its sync: %s", file->path, strerror(err));
    }
    /* A mapping only for msync's range: never touched, so it faults nothing in. */
    uint64_t start = off & ~(uint64_t)(sysconf(_SC_PAGESIZE) - 1);
    size_t n = (size_t)(off + len - start);
    int rc = 0;
    void *m = mmap(NULL, n, PROT_READ, MAP_SHARED, fd, (off_t)start);
    if (m == MAP_FAILED) {
        rc = ud_errf(errmsg, errno == ENOMEM ? UD_ENOMEM : UD_EIO, "mmap %s [%llu, %llu): %s",
                     file->path, (unsigned long long)start, (unsigned long long)(off + len),
                     strerror(errno));
    } else {
        if (msync(m, n, MS_SYNC) != 0)
            rc = ud_errf(errmsg, UD_EIO, "sync %s [%llu, %llu): %s", file->path,
                         (unsigned long long)off, (unsigned long long)(off + len), strerror(errno));
        munmap(m, n);
    }
    close(fd);
    return rc;
}

static int posix_prepare(struct ud_fs *fs, struct ud_fs_file *file, uint64_t off, uint64_t len,
                         char *errmsg)
{
    /* Through the page cache, not O_DIRECT: records are later written into these pages in pieces
     * smaller than a page, and a page that is not cached would then be read from the disk first.
     * The sync writes the zeros back, which is what turns the extents into written ones. */
    if (off > file->size || len > file->size - off)
        return ud_errf(errmsg, UD_EIO, "prepare %s [%llu, %llu): beyond its %llu bytes", file->path,
                       (unsigned long long)off, (unsigned long long)(off + len),
                       (unsigned long long)file->size);
    for (uint64_t done = 0; done < len;) {
        uint64_t n = len - done < sizeof zeros ? len - done : sizeof zeros;
        int rc = posix_write(fs, file, off + done, zeros, n, errmsg);
        if (rc != 0)
            return rc;
        done += n;
    }
    return len == 0 ? 0 : sync_own_file(file, off, len, errmsg);
}

static void posix_done_writing(struct ud_fs *fs, struct ud_fs_file *file)
{
    (void)fs;
    if (file->fd >= 0)
        close(file->fd);
    file->fd = -1;
}

static void posix_close(struct ud_fs *fs, struct ud_fs_file *file)
{
    (void)fs;
    if (file == NULL)
        return;
    if (file->fd >= 0)
        close(file->fd);
    if (file->map != NULL)
        munmap(file->map, (size_t)file->size);
    free(file);
}

static int posix_sync_dir(struct ud_fs *fs, const char *dir, char *errmsg)
{
    (void)fs;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return ud_errf(errmsg, errno == ENOENT ? UD_ENOTFOUND : UD_EIO, "open directory %s: %s",
                       dir, strerror(errno));
    int rc = 0;
    if (fsync(fd) != 0)
        rc = ud_errf(errmsg, UD_EIO, "fsync directory %s: %s", dir, strerror(errno));
    close(fd);
    return rc;
}

static int posix_unlink(struct ud_fs *fs, const char *path, char *errmsg)
{
    (void)fs;
    if (unlink(path) != 0)
        return ud_errf(errmsg, errno == ENOENT ? UD_ENOTFOUND : UD_EIO, "unlink %s: %s", path,
                       strerror(errno));
    return 0;
}

static struct ud_fs posix_fs = {
    .open = posix_open,
    .sync = posix_sync,
    .write = posix_write,
    .prepare = posix_prepare,
    .done_writing = posix_done_writing,
    .close = posix_close,
    .sync_dir = posix_sync_dir,
    .unlink = posix_unlink,
};

struct ud_fs *ud_fs_posix(void)
{
    return &posix_fs;
}
