/*
 * Namespace registry: opens every namespace under a root directory and creates/deletes them.
 * Each namespace is fully isolated (own WAL, memtables, LMDB, lock file).
 */
#ifndef UD_CORE_REGISTRY_H
#define UD_CORE_REGISTRY_H

#include <stddef.h>

#include "core/engine.h"

/* Namespace names: [A-Za-z0-9_-]{1,64} (they are directory names). */
#define UD_NS_NAME_MAX 64
int ud_ns_name_valid(const char *name);

struct ud_registry;

/* Opens root (created) and every namespace directory in it with defaults (dir and name are set
 * per namespace). Returns 0 or the first namespace's open error (errmsg names it). */
int ud_registry_open(const char *root, const struct ud_engine_options *defaults,
                     struct ud_registry **out, char *errmsg);
/* What a namespace directory set aside by a damaged callback has after its name: the registry
 * skips such directories ("{ns}.corrupt-{time}"), saying what they are. */
#define UD_REGISTRY_SET_ASIDE ".corrupt-"

/* Like ud_registry_open, but a namespace whose open fails with UD_ECORRUPT (a damaged WAL:
 * why names segment and offset) is handed to damaged(arg, name, why) first: when it returns 0
 * (it moved the directory out of the way) the registry opens without that namespace; otherwise
 * the open fails as ud_registry_open's does. */
int ud_registry_open_damaged(const char *root, const struct ud_engine_options *defaults,
                             int (*damaged)(void *arg, const char *name, const char *why),
                             void *arg, struct ud_registry **out, char *errmsg);
void ud_registry_close(struct ud_registry *reg);

/* For damaged callbacks, after why (the open's error): renames {root}/{name} to
 * {root}/{name}.corrupt-{UTC time} (a number after it when that is taken), fsyncs root, and logs
 * "why; namespace name moved aside to PATH (kept for inspection); then". 0, or -1 when it could
 * not (logged with the cause; the namespace stays where it was). */
int ud_registry_set_aside(const char *root, const char *name, const char *why, const char *then);

/* The root directory (owned by the registry). */
const char *ud_registry_root(const struct ud_registry *reg);

/* Returns a referenced namespace (release with ud_registry_release): 0, UD_ENOTFOUND, UD_EINVAL. */
int ud_registry_acquire(struct ud_registry *reg, const char *name, struct ud_ns **ns);
void ud_registry_release(struct ud_registry *reg, struct ud_ns *ns);

/* Creates and opens a namespace. 0, UD_EEXIST (registered already), UD_EINVAL (bad name, message
 * says the rule), or a failure to open it: UD_ENOSPC, UD_ENOMEM, else UD_EIO (the message says
 * what failed). */
int ud_registry_create(struct ud_registry *reg, const char *name, char *errmsg);
/* The same, stamping the new namespace with incarnation (ud_ns_incarnation): the raft index of
 * the create, so that every writer's copy, and every copy made from one, says which namespace of
 * that name it is. */
int ud_registry_create_incarnation(struct ud_registry *reg, const char *name, uint64_t incarnation,
                                   char *errmsg);

/* Deletes a namespace without waiting: the name is free at once (a new namespace of that name
 * may be created), requests holding it keep working on its renamed files, and the last release
 * closes it and removes the directory. A directory found gone already counts as deleted. 0,
 * UD_ENOTFOUND (not registered), or UD_EIO, UD_ENOSPC, UD_ENOMEM: the namespace is still
 * registered, as it was. */
int ud_registry_delete(struct ud_registry *reg, const char *name, char *errmsg);

/*
 * Puts a finished download (ud_ns_bootstrap_*, core/engine.h) in place of namespace name: the
 * registered copy, if any, is deleted as by ud_registry_delete (readers holding it finish on its
 * renamed files); a directory left at the namespace's place by an earlier install that moved its
 * files there but could not open them is removed; then the bootstrap is finished (fsynced,
 * renamed into place) and the namespace opened. Returns 0 with *out referenced (release it), or
 * an error naming the step; bs is consumed either way. A copy that opens as damaged keeps the
 * open's UD_ECORRUPT (unlike ud_registry_create): the download is bad, not this node's storage.
 */
struct ud_ns_bootstrap;
int ud_registry_install(struct ud_registry *reg, const char *name, struct ud_ns_bootstrap *bs,
                        struct ud_ns **out, char *errmsg);

/* Names in sorted order: fn is called for each, without the registry's lock (fn may use the
 * registry). Returns 0, or UD_ENOMEM: no memory for the copy of the names, and fn was called for
 * none (a caller says what it could not do instead of acting on an empty list). *count (may be
 * NULL) is the number of namespaces either way; fn NULL only counts, which cannot fail. */
int ud_registry_list(struct ud_registry *reg, void (*fn)(void *arg, const char *name), void *arg,
                     size_t *count);

/* Test hook: the next n calls of ud_registry_list fail as out of memory does. */
void ud_registry_fail_lists(unsigned n);

/* Flushes every namespace to its store (ud_ns_flush), as a clean stop does so that the next
 * start replays little. A failure is logged with the namespace and its cause and counted in
 * *failed (may be NULL); it loses nothing (the WAL still holds every record). Returns the number
 * of namespaces. */
size_t ud_registry_flush_all(struct ud_registry *reg, size_t *failed);

#endif
