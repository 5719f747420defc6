/* Namespace registry: the namespaces under one root directory, with reference counts so a deleted
 * namespace is closed only when the last request using it lets go. */
#include "core/registry.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/dir.h"
#include "core/err.h"
#include "core/log.h"

#define NAME_RULE "names are 1 to 64 characters from A-Z, a-z, 0-9, '_' and '-'"
/* A deleted namespace's directory is renamed to this prefix at once (so the name is free again and
 * the delete survives a crash), and removed when its last user releases it. */
#define DELETED_PREFIX ".deleted-"

struct entry {
    char name[UD_NS_NAME_MAX + 1];
    struct ud_ns *ns; /* owned */
    unsigned refs;
    char dir[PATH_MAX]; /* where its files are now */
};

struct ud_registry {
    char *root;
    struct ud_engine_options defaults;
    pthread_mutex_t mu;
    struct entry **v; /* sorted by name */
    size_t n, cap;
    struct entry **doomed; /* deleted, waiting for their last release */
    size_t ndoomed, doomed_cap;
    unsigned long deletions; /* makes renamed directory names unique */
};

int ud_ns_name_valid(const char *name)
{
    if (name == NULL)
        return 0;
    size_t len = 0;
    for (; name[len] != '\0'; len++) {
        char c = name[len];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '_' || c == '-';
        if (!ok || len >= UD_NS_NAME_MAX)
            return 0;
    }
    return len > 0;
}

static int bad_name(const char *name, char *errmsg)
{
    char shown[80];
    snprintf(shown, sizeof shown, "%.64s%s", name ? name : "",
             name && strlen(name) > 64 ? "..." : "");
    return ud_errf(errmsg, UD_EINVAL, "namespace name \"%s\" is invalid: %s", shown, NAME_RULE);
}

/* Closes a namespace nobody uses any more and removes its (renamed) directory. */
static void destroy(struct entry *e)
{
    ud_ns_close(e->ns);
    int rc = ud_dir_remove_tree(e->dir);
    if (rc != 0)
        ud_warn("registry", "remove %s: %s (removed at the next start)", e->dir, ud_strerror(rc));
    free(e);
}

/* Index of name, or of where it would be inserted (*found 0). Lock held. */
static size_t find(const struct ud_registry *reg, const char *name, int *found)
{
    size_t lo = 0, hi = reg->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(reg->v[mid]->name, name);
        if (c == 0) {
            *found = 1;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = 0;
    return lo;
}

static int insert(struct ud_registry *reg, size_t at, struct entry *e)
{
    if (reg->n == reg->cap) {
        size_t cap = reg->cap ? reg->cap * 2 : 8;
        struct entry **p = realloc(reg->v, cap * sizeof *p);
        if (p == NULL)
            return UD_ENOMEM;
        reg->v = p;
        reg->cap = cap;
    }
    memmove(&reg->v[at + 1], &reg->v[at], (reg->n - at) * sizeof *reg->v);
    reg->v[at] = e;
    reg->n++;
    return 0;
}

/* Opens root/name and adds it. Lock held. */
static int open_ns(struct ud_registry *reg, const char *name, size_t at, uint64_t incarnation,
                   char *errmsg)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/%s", reg->root, name);
    struct ud_engine_options o = reg->defaults;
    o.dir = dir;
    o.name = name;
    o.incarnation = incarnation;
    struct entry *e = calloc(1, sizeof *e);
    if (e == NULL)
        return ud_errf(errmsg, UD_ENOMEM, "out of memory adding namespace %s", name);
    snprintf(e->name, sizeof e->name, "%s", name);
    snprintf(e->dir, sizeof e->dir, "%s", dir);
    int rc = ud_ns_open(&o, &e->ns, errmsg);
    if (rc == 0 && (rc = insert(reg, at, e)) != 0) {
        ud_ns_close(e->ns);
        ud_errf(errmsg, rc, "out of memory adding namespace %s", name);
    }
    if (rc != 0)
        free(e);
    return rc;
}

int ud_registry_open(const char *root, const struct ud_engine_options *defaults,
                     struct ud_registry **out, char *errmsg)
{
    return ud_registry_open_damaged(root, defaults, NULL, NULL, out, errmsg);
}

int ud_registry_open_damaged(const char *root, const struct ud_engine_options *defaults,
                             int (*damaged)(void *arg, const char *name, const char *why),
                             void *arg, struct ud_registry **out, char *errmsg)
{
    if (root == NULL || root[0] == '\0')
        return ud_errf(errmsg, UD_EINVAL, "the registry needs a root directory");
    if (mkdir(root, 0755) != 0 && errno != EEXIST)
        return ud_errf(errmsg, ud_err_from_errno(errno), "mkdir %s: %s", root, strerror(errno));
    struct ud_registry *reg = calloc(1, sizeof *reg);
    if (reg == NULL || (reg->root = strdup(root)) == NULL) {
        free(reg);
        return ud_errf(errmsg, UD_ENOMEM, "out of memory opening registry %s", root);
    }
    if (defaults != NULL)
        reg->defaults = *defaults;
    pthread_mutex_init(&reg->mu, NULL);
    DIR *d = opendir(root);
    if (d == NULL) {
        int rc = ud_errf(errmsg, ud_err_from_errno(errno), "opendir %s: %s", root, strerror(errno));
        ud_registry_close(reg);
        return rc;
    }
    struct dirent *de;
    int rc = 0;
    while (rc == 0 && (de = readdir(d)) != NULL) {
        char path[PATH_MAX];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", root, de->d_name);
        if (strncmp(de->d_name, DELETED_PREFIX, strlen(DELETED_PREFIX)) == 0) {
            /* A delete whose removal a crash interrupted: finish it. */
            ud_dir_remove_tree(path);
            continue;
        }
        if (de->d_name[0] == '.')
            continue;
        if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
            continue;
        if (!ud_ns_name_valid(de->d_name)) {
            if (strstr(de->d_name, UD_REGISTRY_SET_ASIDE) != NULL)
                ud_warn("registry",
                        "skipping %s: a namespace whose WAL was damaged, set aside for "
                        "inspection (remove it when done)",
                        path);
            else
                ud_warn("registry", "skipping %s: not a namespace name (%s)", path, NAME_RULE);
            continue;
        }
        int found;
        size_t at = find(reg, de->d_name, &found);
        if ((rc = open_ns(reg, de->d_name, at, 0, errmsg)) != 0) {
            if (rc == UD_ECORRUPT && damaged != NULL && damaged(arg, de->d_name, errmsg) == 0) {
                rc = 0; /* set aside by the caller: the registry goes on without it */
                continue;
            }
            /* The engine's messages name the namespace already; a second prefix would push
             * the end (segment and offset of a damaged WAL) out of the message. */
            char named[UD_NS_NAME_MAX + 16];
            snprintf(named, sizeof named, "namespace %s:", de->d_name);
            if (strncmp(errmsg, named, strlen(named)) != 0)
                ud_errwrap(errmsg, rc, "namespace %s", de->d_name);
        }
    }
    closedir(d);
    if (rc != 0) {
        ud_registry_close(reg);
        return rc;
    }
    *out = reg;
    return 0;
}

const char *ud_registry_root(const struct ud_registry *reg)
{
    return reg->root;
}

void ud_registry_close(struct ud_registry *reg)
{
    if (reg == NULL)
        return;
    for (size_t i = 0; i < reg->n; i++) {
        ud_ns_close(reg->v[i]->ns);
        free(reg->v[i]);
    }
    free(reg->v);
    /* Users of deleted namespaces must have released them before the registry closes. */
    for (size_t i = 0; i < reg->ndoomed; i++)
        destroy(reg->doomed[i]);
    free(reg->doomed);
    pthread_mutex_destroy(&reg->mu);
    free(reg->root);
    free(reg);
}

int ud_registry_acquire(struct ud_registry *reg, const char *name, struct ud_ns **ns)
{
    if (!ud_ns_name_valid(name))
        return UD_EINVAL;
    pthread_mutex_lock(&reg->mu);
    int found;
    size_t i = find(reg, name, &found);
    int rc = UD_ENOTFOUND;
    if (found) {
        reg->v[i]->refs++;
        *ns = reg->v[i]->ns;
        rc = 0;
    }
    pthread_mutex_unlock(&reg->mu);
    return rc;
}

void ud_registry_release(struct ud_registry *reg, struct ud_ns *ns)
{
    if (ns == NULL)
        return;
    struct entry *last = NULL;
    pthread_mutex_lock(&reg->mu);
    int done = 0;
    for (size_t i = 0; i < reg->n && !done; i++) {
        if (reg->v[i]->ns == ns) {
            UD_ASSERT(reg->v[i]->refs > 0);
            reg->v[i]->refs--;
            done = 1;
        }
    }
    for (size_t i = 0; i < reg->ndoomed && !done; i++) {
        struct entry *e = reg->doomed[i];
        if (e->ns == ns) {
            UD_ASSERT(e->refs > 0);
            if (--e->refs == 0) {
                last = e;
                reg->doomed[i] = reg->doomed[--reg->ndoomed];
            }
            done = 1;
        }
    }
    UD_ASSERT(done);
    pthread_mutex_unlock(&reg->mu);
    if (last != NULL)
        destroy(last);
}

/*
 * Opens and registers a new namespace. With storage_is_eio, a failure of the open is UD_EIO: the
 * name is valid and free, so whatever fails now is this node's storage (files left at its place,
 * damaged; a directory that cannot be made), never the outcome of the create, which a writer of a
 * cluster would record (UD_EEXIST, UD_ECORRUPT, ...) while the others create the namespace. A full
 * disk and memory keep their codes; the message keeps the cause. Without it the open's own code
 * is returned (an installed copy that is damaged is UD_ECORRUPT).
 */
static int create_registered(struct ud_registry *reg, const char *name, uint64_t incarnation,
                             int storage_is_eio, char *errmsg)
{
    if (!ud_ns_name_valid(name))
        return bad_name(name, errmsg);
    /* Held while opening: creating a namespace is rare and a new one opens in milliseconds. */
    pthread_mutex_lock(&reg->mu);
    int found;
    size_t at = find(reg, name, &found);
    int rc = found ? ud_errf(errmsg, UD_EEXIST, "namespace %s already exists", name)
                   : open_ns(reg, name, at, incarnation, errmsg);
    if (storage_is_eio && rc != 0 && !found)
        rc = ud_err_local(rc);
    pthread_mutex_unlock(&reg->mu);
    if (rc == 0)
        ud_info("registry", "namespace %s created", name);
    return rc;
}

int ud_registry_create(struct ud_registry *reg, const char *name, char *errmsg)
{
    return create_registered(reg, name, 0, 1, errmsg);
}

int ud_registry_create_incarnation(struct ud_registry *reg, const char *name, uint64_t incarnation,
                                   char *errmsg)
{
    return create_registered(reg, name, incarnation, 1, errmsg);
}

int ud_registry_install(struct ud_registry *reg, const char *name, struct ud_ns_bootstrap *bs,
                        struct ud_ns **out, char *errmsg)
{
    char why[UD_ERRMSG_SIZE], final[PATH_MAX];
    *out = NULL;
    int rc = ud_registry_delete(reg, name, why);
    if (rc != 0 && rc != UD_ENOTFOUND) {
        ud_ns_bootstrap_abort(bs);
        return ud_errf(errmsg, rc, "replace namespace %s: %s", name, why);
    }
    /* Not registered now, so whatever is at its place is a leftover: an earlier install renamed
     * its files there and then failed to sync the parent or to open them. Without removing it
     * every later install would find the place taken. */
    snprintf(final, sizeof final, "%s/%s", reg->root, name);
    if ((rc = ud_dir_remove_tree(final)) != 0) {
        ud_ns_bootstrap_abort(bs);
        return ud_errf(errmsg, rc, "replace namespace %s: remove the leftover %s: %s", name, final,
                       ud_strerror(rc));
    }
    if ((rc = ud_ns_bootstrap_finish(bs, final, errmsg)) != 0)
        return ud_errwrap(errmsg, rc, "namespace %s", name);
    /* The open's own code: UD_ECORRUPT says the downloaded copy is damaged, which the catch-up
     * answers by trying the next peer; UD_EIO would end it as a fault of this node. */
    if ((rc = create_registered(reg, name, 0, 0, errmsg)) != 0)
        return ud_errwrap(errmsg, rc, "open bootstrapped namespace %s", name);
    if ((rc = ud_registry_acquire(reg, name, out)) != 0)
        return ud_errf(errmsg, rc, "namespace %s vanished after its bootstrap", name);
    return 0;
}

int ud_registry_delete(struct ud_registry *reg, const char *name, char *errmsg)
{
    if (!ud_ns_name_valid(name))
        return ud_errf(errmsg, UD_ENOTFOUND, "namespace not found: %s", name ? name : "");
    pthread_mutex_lock(&reg->mu);
    int found;
    size_t i = find(reg, name, &found);
    if (!found) {
        pthread_mutex_unlock(&reg->mu);
        return ud_errf(errmsg, UD_ENOTFOUND, "namespace not found: %s", name);
    }
    struct entry *e = reg->v[i];
    if (reg->ndoomed == reg->doomed_cap) {
        size_t cap = reg->doomed_cap ? reg->doomed_cap * 2 : 4;
        struct entry **p = realloc(reg->doomed, cap * sizeof *p);
        if (p == NULL) {
            pthread_mutex_unlock(&reg->mu);
            return ud_errf(errmsg, UD_ENOMEM, "out of memory deleting namespace %s", name);
        }
        reg->doomed = p;
        reg->doomed_cap = cap;
    }
    /* Rename first: the name is free for a new namespace at once, and after a crash the
     * renamed directory is removed at the next open instead of coming back. */
    char doomed_dir[PATH_MAX];
    snprintf(doomed_dir, sizeof doomed_dir, "%s/" DELETED_PREFIX "%s-%ld-%lu", reg->root, name,
             (long)getpid(), ++reg->deletions);
    if (rename(e->dir, doomed_dir) != 0) {
        int err = errno;
        /* Its directory is gone already (removed by hand, a lost disk): the delete has nothing
         * left to do but let go of the name. Refused, the name would stay registered for good,
         * and every retry of the delete fail the same way. */
        if (err != ENOENT) {
            pthread_mutex_unlock(&reg->mu);
            return ud_errf(errmsg, ud_err_from_errno(err), "delete namespace %s: rename %s: %s",
                           name, e->dir, strerror(err));
        }
        ud_warn("registry", "delete namespace %s: its directory %s is gone already", name, e->dir);
    }
    char why[UD_ERRMSG_SIZE];
    if (ud_dir_sync(reg->root, why) != 0)
        ud_warn("registry", "delete namespace %s: %s (a crash now may bring it back)", name, why);
    snprintf(e->dir, sizeof e->dir, "%s", doomed_dir);
    memmove(&reg->v[i], &reg->v[i + 1], (reg->n - i - 1) * sizeof *reg->v);
    reg->n--;
    int unused = e->refs == 0;
    if (!unused)
        reg->doomed[reg->ndoomed++] = e;
    pthread_mutex_unlock(&reg->mu);
    /* Requests still using it keep working on the renamed files; the last release removes it. */
    if (unused)
        destroy(e);
    ud_info("registry", "namespace %s deleted", name);
    return 0;
}

static _Atomic unsigned lists_to_fail;

void ud_registry_fail_lists(unsigned n)
{
    atomic_store(&lists_to_fail, n);
}

/* Whether the test hook fails this listing. */
static int list_fails(void)
{
    unsigned n = atomic_load(&lists_to_fail);
    while (n > 0 && !atomic_compare_exchange_weak(&lists_to_fail, &n, n - 1))
        ;
    return n > 0;
}

int ud_registry_list(struct ud_registry *reg, void (*fn)(void *arg, const char *name), void *arg,
                     size_t *count)
{
    pthread_mutex_lock(&reg->mu);
    size_t n = reg->n;
    char(*names)[UD_NS_NAME_MAX + 1] = NULL;
    if (fn != NULL && !list_fails())
        names = malloc((n ? n : 1) * sizeof *names);
    for (size_t i = 0; names != NULL && i < n; i++)
        memcpy(names[i], reg->v[i]->name, sizeof names[i]);
    pthread_mutex_unlock(&reg->mu);
    if (count != NULL)
        *count = n;
    if (fn == NULL)
        return 0;
    if (names == NULL)
        return UD_ENOMEM;
    /* Called without the lock, so fn may use the registry. */
    for (size_t i = 0; i < n; i++)
        fn(arg, names[i]);
    free(names);
    return 0;
}

struct flush_all {
    struct ud_registry *reg;
    size_t failed;
};

static void flush_one(void *arg, const char *name)
{
    struct flush_all *fa = arg;
    struct ud_ns *ns;
    char errmsg[UD_ERRMSG_SIZE] = "";
    if (ud_registry_acquire(fa->reg, name, &ns) != 0)
        return; /* deleted meanwhile */
    int rc = ud_ns_flush(ns, errmsg);
    ud_registry_release(fa->reg, ns);
    if (rc != 0) {
        ud_error("registry", "flush namespace %s: %s", name, errmsg);
        fa->failed++;
    }
}

size_t ud_registry_flush_all(struct ud_registry *reg, size_t *failed)
{
    struct flush_all fa = {reg, 0};
    size_t n = 0;
    if (ud_registry_list(reg, flush_one, &fa, &n) != 0) {
        ud_error("registry",
                 "flush of every namespace: out of memory listing them: none of %zu "
                 "flushed (their WALs hold every record)",
                 n);
        fa.failed = n;
    }
    if (failed != NULL)
        *failed = fa.failed;
    return n;
}

/* The move of ud_registry_set_aside; to receives the new path. */
static int move_aside(const char *root, const char *name, char *to, size_t to_size, char *errmsg)
{
    char from[PATH_MAX], stamp[32];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
    int n = snprintf(from, sizeof from, "%s/%s", root, name);
    if (n < 0 || (size_t)n >= sizeof from)
        return ud_errf(errmsg, UD_EIO, "path too long");
    /* Another copy set aside in the same second (a restart loop) gets a number after it:
     * rename would refuse to replace that directory, and the start would fail for it. */
    for (unsigned k = 1;; k++) {
        int m = k == 1
                    ? snprintf(to, to_size, "%s/%s" UD_REGISTRY_SET_ASIDE "%s", root, name, stamp)
                    : snprintf(to, to_size, "%s/%s" UD_REGISTRY_SET_ASIDE "%s-%u", root, name,
                               stamp, k);
        if (m < 0 || (size_t)m >= to_size)
            return ud_errf(errmsg, UD_EIO, "path too long");
        struct stat st;
        if (lstat(to, &st) != 0 && errno == ENOENT)
            break;
        if (k == 1000)
            return ud_errf(errmsg, UD_EIO, "%s and 999 more names are taken", to);
    }
    if (rename(from, to) != 0)
        return ud_errf(errmsg, UD_EIO, "move %s to %s: %s", from, to, strerror(errno));
    int rc = ud_dir_sync(root, errmsg);
    if (rc != 0) {
        /* Put it back: not known to be durable, the move could undo itself at a power cut. */
        if (rename(to, from) != 0)
            ud_error("registry", "namespace %s stays at %s: moving it back failed: %s", name, to,
                     strerror(errno));
        return ud_errwrap(errmsg, UD_EIO, "move %s to %s", from, to);
    }
    return 0;
}

int ud_registry_set_aside(const char *root, const char *name, const char *why, const char *then)
{
    char to[PATH_MAX + 64], err[UD_ERRMSG_SIZE];
    if (move_aside(root, name, to, sizeof to, err) != 0) {
        ud_error("registry", "%s; namespace %s could not be set aside: %s", why, name, err);
        return -1;
    }
    ud_error("registry", "%s; namespace %s moved aside to %s (kept for inspection); %s", why, name,
             to, then);
    return 0;
}
