/*
 * Write API, backups: POST wal/backup (sealed WAL segments into a directory) and POST
 * btree/backup (a consistent LMDB copy into a file), both confined to {backup_root}/{ns}. The
 * copies run on libuv's worker threads; the loop only validates and answers.
 *
 * Confinement has two layers: the client's path is checked as text (relative, no '.' or '..'
 * segments, no '%' escapes: core/http/path.h), and it is walked from the backup root one
 * directory at a time with openat(O_DIRECTORY | O_NOFOLLOW), the namespace's directory included,
 * and the files are created relative to the last one (exclusively, O_NOFOLLOW). A symbolic link
 * anywhere under the root is refused (400 naming it), and one planted while a backup runs cannot
 * redirect it: nothing is looked up by its full path again.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/dir.h"
#include "core/err.h"
#include "core/http/body.h"
#include "core/http/path.h"
#include "writer/config.h"
#include "writer/http_write.h"
#include "writer/writer.h"

struct backup_job {
    uv_work_t work;
    struct ud_http_req *r;
    struct ud_registry *reg;
    struct ud_ns *ns; /* acquired on the loop, released on the worker */
    int wal;
    uint64_t after;
    char rel[600];
    char ns_name[UD_NS_NAME_MAX + 1];
    char root[PATH_MAX]; /* the configured backup root (the operator's: may be a link) */
    /* results */
    int rc;
    char errmsg[UD_ERRMSG_SIZE];
    char abs[PATH_MAX + 8];
    uint64_t bytes;
    uint32_t *ids;
    size_t nids;
};

/*
 * Steps from directory *fd into its subdirectory name, creating it if absent, never through a
 * symbolic link. shown is the path below the backup root, for messages. On success *fd is the
 * subdirectory (the parent closed).
 *
 * The parent is fsynced whether or not this call created the entry: a directory another request
 * just created (its fsync not run yet), or one left by a request whose fsync failed, is not
 * known to be durable, and a 200 must not rest on it. A few directory fsyncs per backup.
 */
static int enter_dir(struct backup_job *job, int *fd, const char *name, const char *shown)
{
    const char *field = job->wal ? "backupDir" : "path";
    int mkerr = mkdirat(*fd, name, 0755) == 0 ? 0 : errno;
    if (mkerr == ENOENT) {
        /* Not a missing namespace (404): the directory the walk stands in was removed under it. */
        const char *slash = strrchr(shown, '/');
        return ud_errf(job->errmsg, UD_ECONFLICT,
                       "backup: create directory %s/%s: %s%s%.*s was removed during the backup",
                       job->root, shown, job->root, slash != NULL ? "/" : "",
                       slash != NULL ? (int)(slash - shown) : 0, shown);
    }
    if (mkerr != 0 && mkerr != EEXIST)
        return ud_errf(job->errmsg, mkerr == ENAMETOOLONG ? UD_EINVAL : ud_err_from_errno(mkerr),
                       "backup: create directory %s/%s: %s", job->root, shown, strerror(mkerr));
    int sub = openat(*fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (sub < 0) {
        int err = errno;
        struct stat st;
        if (fstatat(*fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode))
            return ud_errf(job->errmsg, UD_EINVAL,
                           "invalid path: %s is a symbolic link (%s may not go through one)", shown,
                           field);
        if (err == ENOTDIR)
            return ud_errf(job->errmsg, UD_EINVAL, "invalid path: %s is not a directory", shown);
        return ud_errf(job->errmsg, UD_EIO, "backup: open directory %s/%s: %s", job->root, shown,
                       strerror(err));
    }
    if (fsync(*fd) != 0) {
        int err = errno;
        close(sub);
        return ud_errf(job->errmsg, ud_err_from_errno(err), "backup: fsync directory of %s/%s: %s",
                       job->root, shown, strerror(err));
    }
    close(*fd);
    *fd = sub;
    return 0;
}

/*
 * Opens the directory the backup goes into, walking from the backup root: {ns}, then each segment
 * of rel but the last; for wal/backup the last too (the segments' directory). *fd is that
 * directory, *leaf the file name for btree/backup, job->abs the destination's full path.
 */
static int confine(struct backup_job *job, int *fd, const char **leaf)
{
    *fd = -1;
    /* The root's own entries (the first backup creates {data_dir}/backups) are durable too. */
    int rc = ud_dir_create_durable(job->root, job->errmsg);
    if (rc != 0)
        return rc;
    char rroot[PATH_MAX];
    if (realpath(job->root, rroot) == NULL)
        return ud_errf(job->errmsg, UD_EIO, "backup: resolve %s: %s", job->root, strerror(errno));
    if (snprintf(job->abs, sizeof job->abs, "%s/%s/%s", rroot, job->ns_name, job->rel) >=
        (int)sizeof job->abs)
        return ud_errf(job->errmsg, UD_EINVAL, "invalid path: %s is too long",
                       job->wal ? "backupDir" : "path");
    *fd = open(rroot, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (*fd < 0)
        return ud_errf(job->errmsg, UD_EIO, "backup: open %s: %s", rroot, strerror(errno));
    /* shown: "{ns}/{rel}" cut after the segment being entered. */
    char shown[sizeof job->ns_name + sizeof job->rel + 1];
    snprintf(shown, sizeof shown, "%s/%s", job->ns_name, job->rel);
    char *seg = shown;
    for (;;) {
        char *slash = strchr(seg, '/');
        if (slash == NULL && !job->wal) {
            *leaf = job->rel + (seg - shown) - strlen(job->ns_name) - 1;
            /* The copy is renamed over a file, never over a directory: the client's mistake. */
            struct stat st;
            if (fstatat(*fd, *leaf, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode))
                return ud_errf(job->errmsg, UD_EINVAL,
                               "invalid path: %s is a directory (path names the backup file)",
                               shown);
            return 0;
        }
        char name[NAME_MAX + 1];
        size_t n = slash != NULL ? (size_t)(slash - seg) : strlen(seg);
        if (n > NAME_MAX)
            return ud_errf(job->errmsg, UD_EINVAL, "invalid path: a segment of %s is too long",
                           job->wal ? "backupDir" : "path");
        memcpy(name, seg, n);
        name[n] = '\0';
        if (slash != NULL)
            *slash = '\0';
        rc = enter_dir(job, fd, name, shown);
        if (rc != 0 || slash == NULL)
            return rc;
        *slash = '/';
        seg = slash + 1;
    }
}

static void work_cb(uv_work_t *w)
{
    struct backup_job *job = w->data;
    int fd;
    const char *leaf = NULL;
    job->rc = confine(job, &fd, &leaf);
    if (job->rc == 0 && job->wal) {
        uint32_t copied = 0;
        job->rc =
            ud_ns_wal_backup(job->ns, fd, job->abs, job->after, &job->ids, &copied, job->errmsg);
        job->nids = copied;
    } else if (job->rc == 0) {
        job->rc = ud_ns_store_backup_at(job->ns, fd, leaf, job->abs, &job->bytes, job->errmsg);
    }
    if (fd >= 0)
        close(fd);
    /* Released here, not on the loop: a namespace delete running on the loop waits for it. */
    ud_registry_release(job->reg, job->ns);
    job->ns = NULL;
}

static void after_cb(uv_work_t *w, int status)
{
    struct backup_job *job = w->data;
    struct ud_http_req *r = job->r;
    if (status != 0) {
        ud_http_reply_error(r, 500, "backup was cancelled: %s", uv_strerror(status));
    } else if (job->rc != 0) { /* 409 for UD_EEXIST, 400 for UD_EINVAL, ... */
        ud_http_reply_code(r, job->rc, job->errmsg);
    } else {
        struct ud_jbuf j;
        ud_jbuf_init(&j);
        if (job->wal) {
            ud_jbuf_lit(&j, "{\"backups\":[");
            for (size_t i = 0; i < job->nids; i++) {
                char path[PATH_MAX + 32];
                snprintf(path, sizeof path, "%s/%010u.seg", job->abs, job->ids[i]);
                ud_jbuf_printf(&j, "%s{\"segmentId\":%u,\"path\":", i ? "," : "", job->ids[i]);
                ud_jbuf_str(&j, path, strlen(path));
                ud_jbuf_lit(&j, "}");
            }
            ud_jbuf_lit(&j, "]}");
        } else {
            ud_jbuf_lit(&j, "{\"path\":");
            ud_jbuf_str(&j, job->abs, strlen(job->abs));
            ud_jbuf_printf(&j, ",\"bytes\":%llu}", (unsigned long long)job->bytes);
        }
        ud_http_reply_json(r, 200, &j);
    }
    free(job->ids);
    free(job);
}

static void backup(struct ud_http_req *r, struct ud_writer_http *wh, int wal)
{
    char errmsg[UD_ERRMSG_SIZE];
    size_t bl;
    const uint8_t *body = ud_http_req_body(r, &bl);
    struct ud_http_body b;
    ud_http_body_init(&b);
    const char *rel = NULL;
    uint64_t after = 0;
    int rc = wal ? ud_http_parse_wal_backup(&b, body, bl, &after, &rel, errmsg)
                 : ud_http_parse_btree_backup(&b, body, bl, &rel, errmsg);
    struct backup_job *job = calloc(1, sizeof *job);
    if (job == NULL)
        abort();
    const char *ns = ud_http_req_ns_name(r);
    char joined[PATH_MAX];
    snprintf(job->root, sizeof job->root, "%s", wh->w->config->backup_root);
    if (rc == 0 && strlen(ns) >= sizeof job->ns_name)
        rc = ud_errf(errmsg, UD_EINVAL, "invalid namespace name: too long");
    if (rc == 0)
        rc = ud_http_backup_path(job->root, rel, wal ? "backupDir" : "path", joined, sizeof joined,
                                 errmsg);
    if (rc == 0 && strlen(rel) >= sizeof job->rel)
        rc = ud_errf(errmsg, UD_EINVAL, "invalid path: too long");
    if (rc != 0) {
        ud_http_body_free(&b);
        free(job);
        ud_http_reply_error(r, 400, "%s", errmsg);
        return;
    }
    snprintf(job->rel, sizeof job->rel, "%s", rel);
    snprintf(job->ns_name, sizeof job->ns_name, "%s", ns);
    ud_http_body_free(&b);
    job->r = r;
    job->reg = wh->w->registry;
    job->wal = wal;
    job->after = after;
    if (ud_registry_acquire(job->reg, ns, &job->ns) != 0) {
        free(job);
        ud_http_reply_error(r, 404, "namespace not found: %s", ns);
        return;
    }
    job->work.data = job;
    int e = uv_queue_work(wh->w->loop, &job->work, work_cb, after_cb);
    if (e != 0) {
        ud_registry_release(job->reg, job->ns);
        free(job);
        ud_http_reply_error(r, 500, "backup: cannot start a worker: %s", uv_strerror(e));
    }
}

void ud_writer_http_on_wal_backup(struct ud_http_req *r, void *arg)
{
    backup(r, arg, 1);
}

void ud_writer_http_on_btree_backup(struct ud_http_req *r, void *arg)
{
    backup(r, arg, 0);
}
