/* Test-only file layer (struct ud_fs) that simulates a power loss by losing unsynced sectors. */
#ifndef UD_TESTS_FS_POWERLOSS_H
#define UD_TESTS_FS_POWERLOSS_H

#include <stdint.h>

#include "core/fs.h"

/*
 * Model. Every opened file is a real file (the "disk") plus a heap copy of it (the "page cache")
 * that open() returns as the mapping, so the WAL's stores land in memory only. sync(off, len)
 * copies exactly that byte range of the copy to the disk file with pwrite; nothing else ever
 * reaches the disk before a crash. The disk file is not fdatasync'ed: the machine running the test
 * does not lose power, only the simulated one does.
 *
 * ud_fs_powerloss_crash() is the power cut: under the lock that sync() also takes, it compares
 * every open file's memory with its disk file in 512-byte sectors and writes a random subset of the
 * differing sectors (a sector is atomic: all old bytes or all new ones, as on real drives), then
 * marks the layer dead. A dead layer writes nothing more: open, sync, sync_dir and unlink return
 * UD_EIO, close frees the copy without writing it. prepare() zeros its range in the copy and on the
 * disk file at once (readied bytes are durable zeros). Bytes the writer stores into the copy while
 * the crash runs land in one sector version or the other, like a page under writeback.
 *
 * Simplifications (stated because they bound what the tests prove):
 *  - directory operations (creating a file, its size, unlink, mkdir by the WAL) go straight to
 *    POSIX and are durable at once; sync_dir only checks that the directory exists. The tests
 *    therefore do not prove that the WAL fsyncs its directory;
 *  - files are never reordered or partially extended: create() preallocates the full size.
 *
 * "Lying" mode (UD_FS_POWERLOSS_LYING): sync() and sync_dir() return 0 and write nothing, as if the
 * fsync call had been removed. The crash then keeps only what its random subset happens to write.
 * Used by the control experiment that shows the power-loss test detects a missing fsync.
 *
 * Threads: every function is thread-safe. Mappings are plain heap memory: the caller may store
 * into them from any thread without holding any lock.
 */

#define UD_FS_POWERLOSS_SECTOR 512
#define UD_FS_POWERLOSS_LYING  1u

struct ud_fs_powerloss;

struct ud_fs_powerloss_stats {
    uint64_t opens;           /* successful open() calls, creations included */
    uint64_t creates;         /* of which created files */
    uint64_t syncs;           /* sync() calls that returned 0 (lying ones included) */
    uint64_t sync_bytes;      /* bytes copied to disk by sync() (0 in lying mode) */
    uint64_t failed_syncs;    /* sync() calls refused because the layer is dead */
    uint64_t prepares;        /* prepare() calls that zeroed their range */
    uint64_t crashes;         /* 0 or 1 */
    uint64_t crash_files;     /* files open at the crash */
    uint64_t sectors_kept;    /* differing sectors written to disk at the crash */
    uint64_t sectors_dropped; /* differing sectors lost at the crash */
    uint32_t keep_permille;   /* probability of keeping a differing sector used by the crash */
    uint32_t open_files;      /* files currently open */
};

/* Creates a live layer. flags: 0 or UD_FS_POWERLOSS_LYING. Returns 0 or UD_ENOMEM.
 * *out is owned by the caller; free it with ud_fs_powerloss_free. */
int ud_fs_powerloss_new(unsigned flags, struct ud_fs_powerloss **out);

/* The struct ud_fs to plug into ud_wal_options.fs / ud_engine_options.fs. Borrowed: valid until
 * ud_fs_powerloss_free. */
struct ud_fs *ud_fs_powerloss_fs(struct ud_fs_powerloss *pl);

/*
 * Simulates the power cut (see above). seed drives the random choices: the probability of keeping
 * a differing sector is drawn from {0, 1/4, 1/2, 3/4, 1} (so some crashes lose every unsynced
 * sector, some keep them all, which hits different recovery paths), then each sector is kept or
 * dropped independently. Calling it on a dead layer does nothing.
 * Returns 0, or UD_EIO if reading or writing a disk file failed (the layer is dead either way).
 */
int ud_fs_powerloss_crash(struct ud_fs_powerloss *pl, uint64_t seed);

/*
 * Arms a crash inside the nth sync() call from now (1: the next one), before that call writes
 * anything: the power fails while the writer waits for its fsync, with the whole group-commit
 * range still unsynced. That call returns UD_EIO, like every call after it. Uses seed as
 * ud_fs_powerloss_crash does. nth == 0 disarms.
 */
void ud_fs_powerloss_crash_at_sync(struct ud_fs_powerloss *pl, uint64_t nth, uint64_t seed);

/* 1 after a crash. */
int ud_fs_powerloss_dead(struct ud_fs_powerloss *pl);

void ud_fs_powerloss_stats(struct ud_fs_powerloss *pl, struct ud_fs_powerloss_stats *st);

/* Frees the layer. Every file must have been closed (asserted): the owner of the mappings (the
 * WAL) must be closed first. NULL is allowed. */
void ud_fs_powerloss_free(struct ud_fs_powerloss *pl);

#endif
