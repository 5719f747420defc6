/* Directories and the small files the binaries keep in them: creating a path with its missing
 * parents, locking a data directory, replacing a file atomically. */
#ifndef UD_CORE_DIR_H
#define UD_CORE_DIR_H

#include <stddef.h>
#include <stdint.h>

/*
 * Creates directory path and any missing parents (mode 0755, like mkdir -p); existing ones are
 * fine. Does not fsync: callers that need the new entries durable sync the parents themselves.
 * Returns 0, UD_EINVAL (empty path or longer than PATH_MAX) or the errno's UD_E* code with errmsg
 * naming the directory that could not be made ("create directory /a/b: Permission denied").
 */
int ud_dir_create(const char *path, char *errmsg);
/* The same, and each directory it creates is durable before it returns (its parent fsynced),
 * as is the last one also when it existed (another caller may have just made it and not synced
 * it yet): so that one's parent must be readable; other existing parents are not touched. */
int ud_dir_create_durable(const char *path, char *errmsg);
/* The same with the directory fsync done by sync (e.g. through a struct ud_fs, so that a test's
 * storage layer sees it); sync returns 0 or a UD_E* code with errmsg set. */
typedef int (*ud_dir_sync_fn)(void *ctx, const char *dir, char *errmsg);
int ud_dir_create_synced(const char *path, ud_dir_sync_fn sync, void *ctx, char *errmsg);

/*
 * Locks directory dir for this process: flock on {dir}/LOCK (created if missing), which the
 * kernel drops when the process dies, so a crash never leaves a stale lock. On success *fd is the
 * lock's descriptor (the caller closes it to unlock). Returns 0, UD_ELOCKED ("data directory X is
 * in use by another process (X/LOCK is locked)") or the errno's code naming the file.
 */
int ud_dir_lock(const char *dir, int *fd, char *errmsg);

/* fsyncs directory dir, so that entries created, renamed or removed in it are durable. Returns 0
 * or the errno's UD_E* code with errmsg naming the directory ("fsync directory /a: ..."). */
int ud_dir_sync(const char *dir, char *errmsg);

/* Removes dir and everything under it, without following symbolic links; a missing dir is
 * fine. Returns 0 or the errno's UD_E* code of the first entry that could not be removed. */
int ud_dir_remove_tree(const char *dir);

/* ud_dir_write_file flags. */
#define UD_DIR_SYNC 1 /* also fsync the directory, so the new entry survives a power loss */

/*
 * Replaces file path with len bytes of data atomically: written to "{path}.tmp.{pid}", fsynced,
 * renamed over path, so a reader sees the old file, no file, or the whole new one. With
 * UD_DIR_SYNC the containing directory is fsynced too. Returns 0 or the errno's UD_E* code with
 * errmsg naming the file and the step that failed; the temporary file is removed on failure.
 */
int ud_dir_write_file(const char *path, const void *data, size_t len, int flags, char *errmsg);

/* Writes all len bytes of data to fd, retrying short writes and EINTR. Returns 0 or an errno
 * (EIO when a write makes no progress). */
int ud_write_all(int fd, const void *data, size_t len);
/* The same at file offset off (pwrite: the descriptor's position is left as it is). */
int ud_pwrite_all(int fd, const void *data, size_t len, uint64_t off);

#endif
