/*
 * Write API, backups: POST wal/backup (sealed WAL segments into a directory) and POST
 * btree/backup (a consistent LMDB copy into a file), both confined to {backup_root}/{ns}. The
 * copies run on libuv's worker threads; the loop only validates and answers.
 *
 * Confinement has two layers: the client's path is checked as text (relative, no '.' or '..'
 * segments, no '%' escapes: core/http/path.h), and the directory it lands in is resolved with
 * realpath() after creation and must still be inside the root (a symlink planted under the root
 * cannot lead out of it).
 */
#include <dirent.h>
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
    char root[PATH_MAX];
    /* results */
    int rc;
    char errmsg[UD_ERRMSG_SIZE];
    char abs[PATH_MAX + 8];
    uint64_t bytes;
    uint32_t *ids;
    size_t nids;
};

/* Creates the directories of rel under root one segment at a time, refusing any segment that
 * exists as a symbolic link (so nothing is created through one), then resolves the parent and
 * checks that it is inside the resolved root: 0 with job->abs = the resolved destination. */
static int confine(struct backup_job *job)
{
    char *errmsg = job->errmsg;
    const char *field = job->wal ? "backupDir" : "path";
    int rc = ud_dir_create(job->root, errmsg);
    if (rc != 0)
        return rc;
    char rroot[PATH_MAX], parent[PATH_MAX], rparent[PATH_MAX];
    if (realpath(job->root, rroot) == NULL)
        return ud_errf(errmsg, UD_EIO, "backup: resolve %s: %s", job->root, strerror(errno));
    snprintf(parent, sizeof parent, "%s", job->root);
    const char *seg = job->rel;
    struct stat st;
    for (;;) {
        const char *slash = strchr(seg, '/');
        size_t plen = strlen(parent);
        size_t n = slash != NULL ? (size_t)(slash - seg) : strlen(seg);
        if (plen + 1 + n >= sizeof parent)
            return ud_errf(errmsg, UD_EINVAL, "invalid path: %s is too long", field);
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/%.*s", parent, (int)n, seg);
        if (lstat(path, &st) == 0 && S_ISLNK(st.st_mode))
            return ud_errf(errmsg, UD_EINVAL, "invalid path: %s goes through a symbolic link",
                           field);
        if (slash == NULL)
            break; /* the leaf: created by the backup itself */
        if (mkdir(path, 0755) != 0 && errno != EEXIST)
            return ud_errf(errmsg, ud_err_from_errno(errno), "backup: create directory %s: %s",
                           path, strerror(errno));
        memcpy(parent, path, strlen(path) + 1);
        seg = slash + 1;
    }
    if (realpath(parent, rparent) == NULL)
        return ud_errf(errmsg, UD_EIO, "backup: resolve %s: %s", parent, strerror(errno));
    size_t rl = strlen(rroot);
    if (strncmp(rparent, rroot, rl) != 0 || (rparent[rl] != '\0' && rparent[rl] != '/'))
        return ud_errf(errmsg, UD_EINVAL, "invalid path: %s leads outside the backup root", field);
    const char *leaf = strrchr(job->rel, '/');
    leaf = leaf != NULL ? leaf + 1 : job->rel;
    snprintf(job->abs, sizeof job->abs, "%s/%s", rparent, leaf);
    return 0;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* Drops copied segments with ids <= after (the engine copies every sealed one) and lists the
 * rest. */
static int keep_after(struct backup_job *job)
{
    DIR *d = opendir(job->abs);
    if (d == NULL)
        return ud_errf(job->errmsg, UD_EIO, "backup: list %s: %s", job->abs, strerror(errno));
    size_t cap = 0;
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d)) != NULL && rc == 0) {
        unsigned id;
        char tail[8];
        if (strlen(e->d_name) != 14 || sscanf(e->d_name, "%10u%7s", &id, tail) != 2 ||
            strcmp(tail, ".seg") != 0)
            continue;
        if (id <= job->after) {
            if (unlinkat(dirfd(d), e->d_name, 0) != 0)
                rc = ud_errf(job->errmsg, UD_EIO, "backup: remove %s/%s: %s", job->abs, e->d_name,
                             strerror(errno));
            continue;
        }
        if (job->nids == cap) {
            cap = cap ? cap * 2 : 16;
            uint32_t *p = realloc(job->ids, cap * sizeof *p);
            if (p == NULL)
                abort();
            job->ids = p;
        }
        job->ids[job->nids++] = id;
    }
    if (rc == 0 && fsync(dirfd(d)) != 0)
        rc = ud_errf(job->errmsg, ud_err_from_errno(errno), "backup: fsync %s: %s", job->abs,
                     strerror(errno));
    closedir(d);
    if (job->nids > 1)
        qsort(job->ids, job->nids, sizeof *job->ids, cmp_u32);
    return rc;
}

static void work_cb(uv_work_t *w)
{
    struct backup_job *job = w->data;
    job->rc = confine(job);
    if (job->rc == 0 && job->wal) {
        uint32_t copied = 0;
        job->rc = ud_ns_wal_backup(job->ns, job->abs, &copied, job->errmsg);
        if (job->rc == 0)
            job->rc = keep_after(job);
    } else if (job->rc == 0) {
        job->rc = ud_ns_store_backup(job->ns, job->abs, job->errmsg);
        struct stat st;
        if (job->rc == 0 && stat(job->abs, &st) == 0)
            job->bytes = (uint64_t)st.st_size;
    }
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
    } else if (job->rc == UD_EEXIST) {
        ud_http_reply_error(r, 409, "%s (the backup directory must be empty or absent)",
                            job->errmsg);
    } else if (job->rc == UD_EINVAL) {
        ud_http_reply_error(r, 400, "%s", job->errmsg);
    } else if (job->rc != 0) {
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
    if (rc == 0 && snprintf(job->root, sizeof job->root, "%s/%s", wh->w->config->backup_root, ns) >=
                       (int)sizeof job->root)
        rc = ud_errf(errmsg, UD_EINVAL, "invalid path: the backup root is too long");
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
