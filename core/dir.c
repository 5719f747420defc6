/* Directories: mkdir -p, the data directory lock and atomic file replacement, with errors that
 * name the file that failed. */
#include "core/dir.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <libgen.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/err.h"

static int sync_posix(void *ctx, const char *dir, char *errmsg)
{
    (void)ctx;
    return ud_dir_sync(dir, errmsg);
}

/* mkdir -p; with sync set, each directory it makes (and the last one) is synced into its parent. */
static int create_dirs(const char *path, ud_dir_sync_fn sync, void *ctx, char *errmsg)
{
    char buf[PATH_MAX];
    size_t len = strlen(path);
    if (len == 0 || len >= sizeof buf)
        return ud_errf(errmsg, UD_EINVAL, "directory path of %zu bytes is not usable", len);
    memcpy(buf, path, len + 1);
    /* Each prefix ending at a '/' (and the whole path) in turn; "a//b" just retries "a/". */
    for (size_t i = 1; i <= len; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        char saved = buf[i];
        buf[i] = '\0';
        int made = mkdir(buf, 0755) == 0;
        if (!made && errno != EEXIST)
            return ud_errf(errmsg, ud_err_from_errno(errno), "create directory %s: %s", buf,
                           strerror(errno));
        /* The last one is synced also when it exists: another caller may have just made it and
         * not synced it yet. */
        if (sync != NULL && (made || saved == '\0')) {
            /* The new entry is durable once its parent is synced (the parent may itself be new:
             * it was synced one step earlier, its own parent with it). */
            char parent[PATH_MAX];
            memcpy(parent, buf, i + 1);
            int rc = sync(ctx, dirname(parent), errmsg);
            if (rc != 0)
                return rc;
        }
        buf[i] = saved;
    }
    /* mkdir's EEXIST also covers a file of that name. */
    struct stat st;
    if (stat(path, &st) != 0)
        return ud_errf(errmsg, ud_err_from_errno(errno), "stat %s: %s", path, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return ud_errf(errmsg, UD_EINVAL, "%s exists and is not a directory", path);
    return 0;
}

int ud_dir_create(const char *path, char *errmsg)
{
    return create_dirs(path, NULL, NULL, errmsg);
}

int ud_dir_create_durable(const char *path, char *errmsg)
{
    return create_dirs(path, sync_posix, NULL, errmsg);
}

int ud_dir_create_synced(const char *path, ud_dir_sync_fn sync, void *ctx, char *errmsg)
{
    return create_dirs(path, sync, ctx, errmsg);
}

int ud_dir_lock(const char *dir, int *fd, char *errmsg)
{
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/LOCK", dir) >= (int)sizeof path)
        return ud_errf(errmsg, UD_EINVAL, "directory path %s is too long", dir);
    int f = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (f < 0)
        return ud_errf(errmsg, ud_err_from_errno(errno), "open %s: %s", path, strerror(errno));
    if (flock(f, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        close(f);
        if (e == EWOULDBLOCK)
            return ud_errf(errmsg, UD_ELOCKED,
                           "data directory %s is in use by another process (%s is locked)", dir,
                           path);
        return ud_errf(errmsg, ud_err_from_errno(e), "lock %s: %s", path, strerror(e));
    }
    *fd = f;
    return 0;
}

int ud_dir_sync(const char *dir, char *errmsg)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return ud_errf(errmsg, ud_err_from_errno(errno), "open directory %s: %s", dir,
                       strerror(errno));
    int rc = fsync(fd) != 0 ? ud_errf(errmsg, ud_err_from_errno(errno), "fsync directory %s: %s",
                                      dir, strerror(errno))
                            : 0;
    close(fd);
    return rc;
}

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path) != 0 && errno != ENOENT ? -1 : 0;
}

int ud_dir_remove_tree(const char *dir)
{
    struct stat st;
    if (lstat(dir, &st) != 0)
        return errno == ENOENT ? 0 : ud_err_from_errno(errno);
    return nftw(dir, remove_one, 16, FTW_DEPTH | FTW_PHYS) != 0 ? ud_err_from_errno(errno) : 0;
}

static int sync_parent(const char *path, char *errmsg)
{
    char buf[PATH_MAX];
    snprintf(buf, sizeof buf, "%s", path);
    return ud_dir_sync(dirname(buf), errmsg);
}

/* write (off < 0) or pwrite at off until len bytes are written: 0 or an errno. */
static int write_loop(int fd, const char *p, size_t len, int64_t off)
{
    while (len > 0) {
        ssize_t n = off < 0 ? write(fd, p, len) : pwrite(fd, p, len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno;
        if (n == 0)
            return EIO;
        p += n;
        if (off >= 0)
            off += n;
        len -= (size_t)n;
    }
    return 0;
}

int ud_write_all(int fd, const void *data, size_t len)
{
    return write_loop(fd, data, len, -1);
}

int ud_pwrite_all(int fd, const void *data, size_t len, uint64_t off)
{
    return write_loop(fd, data, len, (int64_t)off);
}

int ud_dir_write_file(const char *path, const void *data, size_t len, int flags, char *errmsg)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp)
        return ud_errf(errmsg, UD_EINVAL, "file path %s is too long", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return ud_errf(errmsg, ud_err_from_errno(errno), "create %s: %s", tmp, strerror(errno));
    int e = ud_write_all(fd, data, len);
    if (e == 0 && fsync(fd) != 0)
        e = errno;
    if (e != 0) {
        close(fd);
        unlink(tmp);
        return ud_errf(errmsg, ud_err_from_errno(e), "write %s: %s", tmp, strerror(e));
    }
    close(fd);
    if (rename(tmp, path) != 0) {
        e = errno;
        unlink(tmp);
        return ud_errf(errmsg, ud_err_from_errno(e), "rename %s to %s: %s", tmp, path, strerror(e));
    }
    return (flags & UD_DIR_SYNC) ? sync_parent(path, errmsg) : 0;
}
