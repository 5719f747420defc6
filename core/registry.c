/* Namespace registry: the namespaces under one root directory, with reference counts so a delete
 * waits for the requests still using a namespace. */
#include "core/registry.h"

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/err.h"
#include "core/log.h"

#define NAME_RULE "names are 1 to 64 characters from A-Z, a-z, 0-9, '_' and '-'"

struct entry {
    char name[UD_NS_NAME_MAX + 1];
    struct ud_ns *ns; /* owned */
    unsigned refs;
    int deleting; /* hidden from acquire and list; removed once refs drops to 0 */
};

struct ud_registry {
    char *root;
    struct ud_engine_options defaults;
    pthread_mutex_t mu;
    pthread_cond_t released;
    struct entry **v; /* sorted by name */
    size_t n, cap;
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
static int open_ns(struct ud_registry *reg, const char *name, size_t at, char *errmsg)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/%s", reg->root, name);
    struct ud_engine_options o = reg->defaults;
    o.dir = dir;
    o.name = name;
    struct entry *e = calloc(1, sizeof *e);
    if (e == NULL)
        return ud_errf(errmsg, UD_ENOMEM, "out of memory adding namespace %s", name);
    snprintf(e->name, sizeof e->name, "%s", name);
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
    pthread_cond_init(&reg->released, NULL);
    DIR *d = opendir(root);
    if (d == NULL) {
        int rc = ud_errf(errmsg, ud_err_from_errno(errno), "opendir %s: %s", root, strerror(errno));
        ud_registry_close(reg);
        return rc;
    }
    struct dirent *de;
    int rc = 0;
    while (rc == 0 && (de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        char path[PATH_MAX];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", root, de->d_name);
        if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
            continue;
        if (!ud_ns_name_valid(de->d_name)) {
            ud_warn("registry", "skipping %s: not a namespace name (%s)", path, NAME_RULE);
            continue;
        }
        int found;
        size_t at = find(reg, de->d_name, &found);
        if ((rc = open_ns(reg, de->d_name, at, errmsg)) != 0)
            ud_errwrap(errmsg, rc, "namespace %s", de->d_name);
    }
    closedir(d);
    if (rc != 0) {
        ud_registry_close(reg);
        return rc;
    }
    *out = reg;
    return 0;
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
    pthread_cond_destroy(&reg->released);
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
    if (found && !reg->v[i]->deleting) {
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
    pthread_mutex_lock(&reg->mu);
    for (size_t i = 0; i < reg->n; i++) {
        if (reg->v[i]->ns == ns) {
            UD_ASSERT(reg->v[i]->refs > 0);
            reg->v[i]->refs--;
            break;
        }
    }
    pthread_cond_broadcast(&reg->released);
    pthread_mutex_unlock(&reg->mu);
}

int ud_registry_create(struct ud_registry *reg, const char *name, char *errmsg)
{
    if (!ud_ns_name_valid(name))
        return bad_name(name, errmsg);
    /* Held while opening: creating a namespace is rare and a new one opens in milliseconds. */
    pthread_mutex_lock(&reg->mu);
    int found;
    size_t at = find(reg, name, &found);
    int rc = found ? ud_errf(errmsg, UD_EEXIST, "namespace %s already exists", name)
                   : open_ns(reg, name, at, errmsg);
    pthread_mutex_unlock(&reg->mu);
    if (rc == 0)
        ud_info("registry", "namespace %s created", name);
    return rc;
}

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path) != 0 && errno != ENOENT ? -1 : 0;
}

int ud_registry_delete(struct ud_registry *reg, const char *name, char *errmsg)
{
    if (!ud_ns_name_valid(name))
        return ud_errf(errmsg, UD_ENOTFOUND, "namespace not found: %s", name ? name : "");
    pthread_mutex_lock(&reg->mu);
    int found;
    size_t i = find(reg, name, &found);
    if (!found || reg->v[i]->deleting) {
        pthread_mutex_unlock(&reg->mu);
        return ud_errf(errmsg, UD_ENOTFOUND, "namespace not found: %s", name);
    }
    struct entry *e = reg->v[i];
    e->deleting = 1;
    while (e->refs > 0)
        pthread_cond_wait(&reg->released, &reg->mu);
    i = find(reg, name, &found);
    UD_ASSERT(found && reg->v[i] == e);
    memmove(&reg->v[i], &reg->v[i + 1], (reg->n - i - 1) * sizeof *reg->v);
    reg->n--;
    pthread_mutex_unlock(&reg->mu);

    ud_ns_close(e->ns);
    free(e);
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/%s", reg->root, name);
    if (nftw(dir, remove_one, 16, FTW_DEPTH | FTW_PHYS) != 0)
        return ud_errf(errmsg, ud_err_from_errno(errno), "remove %s: %s", dir, strerror(errno));
    ud_info("registry", "namespace %s deleted", name);
    return 0;
}

size_t ud_registry_list(struct ud_registry *reg, void (*fn)(void *arg, const char *name), void *arg)
{
    pthread_mutex_lock(&reg->mu);
    size_t n = 0;
    char(*names)[UD_NS_NAME_MAX + 1] = malloc((reg->n ? reg->n : 1) * sizeof *names);
    for (size_t i = 0; i < reg->n; i++) {
        if (reg->v[i]->deleting)
            continue;
        if (names != NULL)
            memcpy(names[n], reg->v[i]->name, sizeof names[n]);
        n++;
    }
    pthread_mutex_unlock(&reg->mu);
    /* Called without the lock, so fn may use the registry. */
    for (size_t i = 0; fn != NULL && names != NULL && i < n; i++)
        fn(arg, names[i]);
    free(names);
    return n;
}
