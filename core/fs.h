/*
 * File I/O seam for WAL segments. Production uses ud_fs_posix() (mmap'd preallocated files);
 * the power-loss tests plug in a layer that keeps unsynced bytes in memory and, at a simulated
 * crash, persists only a random subset of their 512-byte sectors (tests/lib/fs_powerloss.c).
 *
 * Writes never go through this table: the WAL stores into the mapping returned by open(). Only
 * sync() makes bytes durable; a layer is free to lose anything written since the last sync.
 * Directory listing and mkdir are plain POSIX calls in the WAL (a crash layer keeps files).
 */
#ifndef UD_CORE_FS_H
#define UD_CORE_FS_H

#include <stdint.h>

struct ud_fs_file;

struct ud_fs {
    /*
     * Opens path. With create != 0 the file must not exist; it is created with exactly size bytes,
     * preallocated (so a full disk fails here, UD_ENOSPC, not on a later store) and zero-filled.
     * Without create, size is ignored and the file's own size is used. On success *map points to
     * a read-write mapping of the whole file (*map_size bytes) valid until close().
     * Returns 0, UD_ENOTFOUND, UD_EEXIST, UD_ENOSPC or UD_EIO (errmsg names path and cause).
     */
    int (*open)(struct ud_fs *fs, const char *path, int create, uint64_t size,
                struct ud_fs_file **file, uint8_t **map, uint64_t *map_size, char *errmsg);
    /* Makes bytes [off, off+len) of the mapping durable (fdatasync semantics). 0 or UD_EIO. */
    int (*sync)(struct ud_fs *fs, struct ud_fs_file *file, uint64_t off, uint64_t len,
                char *errmsg);
    /* Stores len bytes at off (within the file's size), visible through the mapping when it
     * returns; not durable before a sync. 0, UD_ENOSPC or UD_EIO. */
    int (*write)(struct ud_fs *fs, struct ud_fs_file *file, uint64_t off, const void *data,
                 uint64_t len, char *errmsg);
    /*
     * Readies [off, off+len) of the file, which holds no data there yet (zeros), for cheap writes
     * and syncs later: the bytes stay zero and become durable zeros. On ext4 preallocated blocks
     * are unwritten extents, and the first sync after data lands in one must also commit the
     * journal to mark it written; writing zeros and syncing pays that once, here, off the append
     * path. Called by the WAL's helper thread only for bytes no write() has touched, and never
     * concurrently with a write() overlapping the range. May be NULL (nothing to ready).
     * Its sync must leave the report of a failed writeback of other bytes of the file to the
     * sync() that follows (Linux reports one per open file: sync through a file of its own).
     * 0 or an error naming path and range: UD_EIO (a write or sync failed; the caller fails the
     * log), others (UD_ENOSPC where zeros went into holes, ...) only end the readying.
     */
    int (*prepare)(struct ud_fs *fs, struct ud_fs_file *file, uint64_t off, uint64_t len,
                   char *errmsg);
    /* No more write() calls will come (a sealed segment): what writing needed may go. May be
     * NULL. */
    void (*done_writing)(struct ud_fs *fs, struct ud_fs_file *file);
    /* Unmaps and closes; never syncs. */
    void (*close)(struct ud_fs *fs, struct ud_fs_file *file);
    /* Makes creations and removals of entries in dir durable (fsync of the directory). */
    int (*sync_dir)(struct ud_fs *fs, const char *dir, char *errmsg);
    /* Removes path; 0, UD_ENOTFOUND or UD_EIO. */
    int (*unlink)(struct ud_fs *fs, const char *path, char *errmsg);
};

/* The production implementation (a static object: never freed). */
struct ud_fs *ud_fs_posix(void);

#endif
