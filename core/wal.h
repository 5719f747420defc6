/*
 * WALFS: a per-namespace segmented write-ahead log (docs/format-wal.md).
 *
 * Segments are preallocated files `{dir}/{id:010}.seg` (ids from 1) holding a 64-byte header and
 * 8-byte aligned frames `crc32c | length | data | trailer | pad` (ARCHITECTURE.md section 8).
 * Records are opaque bytes to the WAL; each gets the next LSN of a dense sequence: the k-th record
 * of a segment has LSN `first_lsn + k` (first_lsn is stored in the segment header), so the WAL
 * never parses payloads.
 *
 * Threads: all functions are thread-safe. Appends are serialized internally; readers never block
 * appends (they read the mapping directly, zero-copy) and see a record only after it is complete.
 */
#ifndef UD_CORE_WAL_H
#define UD_CORE_WAL_H

#include <stddef.h>
#include <stdint.h>

#include "core/fs.h"

#define UD_WAL_SEGMENT_HEADER_SIZE  64
#define UD_WAL_FRAME_OVERHEAD       16 /* crc + length + trailer, before padding */
#define UD_WAL_MIN_SEGMENT_SIZE     (64u << 10)
#define UD_WAL_DEFAULT_SEGMENT_SIZE (64u << 20)

enum ud_wal_sync_mode {
    UD_WAL_SYNC_ALWAYS = 0, /* ud_wal_sync() fsyncs; concurrent callers share one fsync */
    UD_WAL_SYNC_INTERVAL,   /* a background thread fsyncs every sync_interval_ms */
    UD_WAL_SYNC_NONE,       /* fsync at rotation, close, explicit ud_wal_sync_all(), and in the
                               background once 16 MiB of the active segment are unsynced (so
                               that sealing a segment never waits for all of it) */
};

struct ud_wal_options {
    const char *dir;       /* created if missing */
    uint64_t segment_size; /* 0: UD_WAL_DEFAULT_SEGMENT_SIZE; >= UD_WAL_MIN_SEGMENT_SIZE */
    enum ud_wal_sync_mode sync_mode; /* default ALWAYS (0) */
    uint32_t sync_interval_ms;       /* INTERVAL only; 0: 100 ms */
    uint64_t start_lsn;              /* LSN of the first record of an empty log; 0: 1 */
    uint32_t index_interval;         /* sparse index: one position every N records; 0: 64 */
    struct ud_fs *fs;                /* NULL: ud_fs_posix(); borrowed for the WAL's lifetime */
};

/* Node-local physical position. Replication never uses it (ARCHITECTURE.md section 5). */
struct ud_wal_pos {
    uint32_t segment_id;
    uint64_t offset;
};

struct ud_wal;
struct ud_wal_reader;

/*
 * Opens or creates the log in opts->dir and recovers it:
 *  - every sealed segment is verified (header CRC, every frame's CRC and trailer); a bad byte is
 *    UD_ECORRUPT with errmsg naming the segment file and byte offset; the open fails;
 *  - the active (last) segment is scanned to its last valid frame; the torn tail after it is
 *    zeroed and synced, and appending continues there (LSNs continue with no gap or reuse);
 *    unless the log was durable beyond that frame (the durable floor): that is UD_ECORRUPT;
 *  - the sparse LSN -> position index is rebuilt.
 * Returns 0, UD_ECORRUPT, UD_ENOSPC, UD_EIO, UD_ENOMEM, UD_EINVAL (bad options).
 * *out is owned by the caller; release with ud_wal_close.
 */
int ud_wal_open(const struct ud_wal_options *opts, struct ud_wal **out, char *errmsg);

/* Syncs everything appended, stops the interval thread, wakes waiting readers with UD_ECLOSED and
 * frees the WAL. Readers must be closed first. NULL is allowed. */
void ud_wal_close(struct ud_wal *wal);

/*
 * Appends one record of len bytes (1 <= len <= segment_size - 64 - 24), rotating to a new segment
 * when it does not fit (the full one is sealed: header finalized and fsynced, directory fsynced).
 * Sets *lsn to the record's LSN (last + 1) and *pos (may be NULL) to its frame position.
 * Does not wait for durability (see ud_wal_sync). After a failed fsync the WAL is failed: every
 * later append and sync returns UD_EIO (a retried fsync can report success over lost data).
 * Returns 0, UD_ELIMIT (record too large), UD_ENOSPC (new segment), UD_EIO, UD_ENOMEM.
 */
int ud_wal_append(struct ud_wal *wal, const void *data, size_t len, uint64_t *lsn,
                  struct ud_wal_pos *pos);
/* 1 once the WAL is failed (a failed fsync or segment write): it refuses every append and sync
 * until it is opened again. */
int ud_wal_is_failed(struct ud_wal *wal);

/*
 * Appends in place, for a caller that would otherwise build the record in a buffer only to have
 * it copied: ud_wal_reserve makes room for one record of len bytes exactly as ud_wal_append
 * would (same limits, rotation and errors) and sets *data to where its bytes go, inside the frame
 * in the segment mapping. The caller writes all len bytes there, then either ud_wal_commit
 * checksums and appends the record (the LSN and position as ud_wal_append gives them), or
 * ud_wal_cancel erases it and leaves the log as it was. On success the append lock stays held
 * until one of the two: other appends, syncs starting a round, the helper and readers opening or
 * moving to a segment wait meanwhile, so keep it short and call no other WAL function in between.
 * On failure nothing is held and there is nothing to commit or cancel.
 */
int ud_wal_reserve(struct ud_wal *wal, size_t len, uint8_t **data);
void ud_wal_commit(struct ud_wal *wal, uint64_t *lsn, struct ud_wal_pos *pos);
void ud_wal_cancel(struct ud_wal *wal);

/*
 * Group commit: returns once every record with LSN <= lsn is durable. In ALWAYS mode the first
 * caller fsyncs up to the newest appended record while later callers wait for that fsync or the
 * next one; in INTERVAL/NONE mode it returns 0 at once (durability comes later).
 * Returns 0 or UD_EIO (the WAL is then failed).
 */
int ud_wal_sync(struct ud_wal *wal, uint64_t lsn, char *errmsg);

/* Fsyncs every appended record now, whatever the mode (flush checkpoints, raft snapshots), and
 * raises the durable floor to them: from then on, recovery refuses a damaged record at or below
 * it instead of cutting the log there as a torn tail (docs/format-wal.md "Durable floor").
 * 0, UD_ENOSPC (the floor's file could not be created on a full disk) or UD_EIO (the sync or
 * the floor's write failed). */
int ud_wal_sync_all(struct ud_wal *wal, char *errmsg);

/* The durable floor: the newest LSN ud_wal_sync_all made durable, here or before a restart. */
uint64_t ud_wal_floor(struct ud_wal *wal);

/* Seals the active segment and starts a new one (no-op when the active segment is empty). */
int ud_wal_rotate(struct ud_wal *wal, char *errmsg);

/* Where the record of lsn starts on this node: its segment id and frame offset there (for lsn =
 * last + 1, where the next append goes). 0, UD_EGONE (before the oldest retained record) or
 * UD_ERANGE (past last + 1). */
int ud_wal_position_of(struct ud_wal *wal, uint64_t lsn, uint32_t *segment_id, uint64_t *offset);
uint64_t ud_wal_first_lsn(struct ud_wal *wal);   /* oldest retained record; next when empty */
uint64_t ud_wal_last_lsn(struct ud_wal *wal);    /* newest appended; first - 1 when empty */
uint64_t ud_wal_durable_lsn(struct ud_wal *wal); /* newest known fsynced */

struct ud_wal_stats {
    uint64_t first_lsn;
    uint64_t last_lsn;
    uint64_t durable_lsn;
    uint32_t segments;       /* files on disk, active included */
    uint32_t active_segment; /* id of the active segment */
    uint64_t active_offset;  /* next write offset in it */
    uint64_t bytes_appended; /* since open */
    uint64_t syncs;          /* fsyncs of segment data since open */
    /* Group-commit rounds (ud_wal_sync, ud_wal_sync_all, background and interval syncs) that
     * fsynced since open, their fsync time in all and the longest one: set against the
     * acknowledgement latency, they tell the disk's part from the rounds' gathering and the
     * committers' wait for a CPU. */
    uint64_t sync_rounds;
    uint64_t sync_ns;
    uint64_t sync_max_ns;
};
void ud_wal_stats(struct ud_wal *wal, struct ud_wal_stats *st);

/*
 * Listener called when records become visible to default readers (from the appending or syncing
 * thread, WAL lock not held) with the new visible LSN, so an event loop can be woken
 * (uv_async_send): after every append in INTERVAL/NONE mode, after each sync or seal in ALWAYS
 * mode. At most one; fn NULL removes it. When this returns, no call of the previous listener is
 * running or will start: its arg may be freed.
 */
void ud_wal_set_listener(struct ud_wal *wal, void (*fn)(void *arg, uint64_t lsn), void *arg);

/* Reader visibility: by default a reader sees records up to ud_wal_durable_lsn() in ALWAYS mode
 * (never ships a record the node could still lose) and up to last_lsn otherwise. */
#define UD_WAL_READ_UNDURABLE 1u /* see every appended record (local LOB reads) */
/* ud_wal_reader_next_run checks each frame's length and trailer but not its CRC: for streams,
 * whose receivers verify every CRC themselves (docs/format-stream.md), so that N subscribers do
 * not checksum the same bytes N times on the sender. The frames were verified when the log was
 * opened or written by this process. */
#define UD_WAL_READ_TRUSTED 2u

/*
 * Opens a reader positioned at from_lsn (first_lsn <= from_lsn <= last_lsn + 1; last + 1 tails).
 * Returns 0, UD_EGONE (from_lsn older than the retained log), UD_ERANGE (beyond last + 1),
 * UD_ENOMEM. The reader pins the segment it reads; retention unlinks files but keeps pinned
 * mappings alive.
 */
int ud_wal_reader_open(struct ud_wal *wal, uint64_t from_lsn, unsigned flags,
                       struct ud_wal_reader **out);

/*
 * Returns the next record: *data points into the segment mapping (zero-copy), valid until the next
 * call on this reader or its close. Returns 0, UD_EAGAIN (caught up: no visible record yet),
 * UD_ECORRUPT (frame CRC/trailer mismatch; errmsg-free, the WAL logs segment and offset),
 * UD_EGONE (the segment it needed was removed by retention before the reader reached it), UD_EIO
 * (appended records could not be written into the segment file: the WAL is failed).
 */
int ud_wal_reader_next(struct ud_wal_reader *r, const uint8_t **data, uint32_t *len, uint64_t *lsn);

/*
 * Stream batches: returns a run of consecutive whole frames of ONE segment exactly as stored
 * (`crc | length | data | trailer | pad` each, docs/format-wal.md), starting at the reader's
 * position: *data points into the segment mapping (zero-copy; the reader pins the segment), valid
 * until the next call on this reader or its close; *len is its byte length (a multiple of 8),
 * *first_lsn the LSN of its first frame and *count the number of frames. The run holds at least
 * one frame and stops before max_bytes would be exceeded, at the end of the segment's complete
 * frames and at the visibility horizon (as ud_wal_reader_next). Every frame's length, trailer and
 * CRC is checked (not the CRC for readers opened with UD_WAL_READ_TRUSTED). The reader moves past
 * the run.
 * Returns 0, UD_EAGAIN (caught up), UD_ECORRUPT (the frame at the reader's position is bad; the WAL
 * logs segment and offset; a bad frame after good ones ends the run and is reported next call),
 * UD_EGONE (the segment it needed was removed by retention), UD_EIO (as ud_wal_reader_next).
 */
int ud_wal_reader_next_run(struct ud_wal_reader *r, uint64_t max_bytes, const uint8_t **data,
                           uint64_t *len, uint64_t *first_lsn, uint32_t *count);

/* LSN of the next record the reader returns. */
uint64_t ud_wal_reader_lsn(const struct ud_wal_reader *r);

/* Newest LSN a default reader (flags 0) may return: durable LSN in ALWAYS mode, else last LSN. */
uint64_t ud_wal_visible_lsn(struct ud_wal *wal);

/* Blocks until a record past the reader's position is visible (0), timeout_ms passes
 * (UD_ETIMEDOUT) or the WAL closes (UD_ECLOSED). Woken by appends/syncs, never polls. */
int ud_wal_reader_wait(struct ud_wal_reader *r, uint64_t timeout_ms);

void ud_wal_reader_close(struct ud_wal_reader *r);

/*
 * Verifies one WAL frame as stored (docs/format-wal.md "Record frame") at buf[off], where buf may
 * be read up to limit: CRC, length, trailer and zero padding. On success *data_len is the record's
 * length and *frame_size the bytes the frame occupies. Returns 0 or UD_ECORRUPT with errmsg
 * saying what is wrong ("bad record checksum", ...). Stream receivers check received frames with
 * it, so a frame is judged by exactly the rules the WAL itself applies.
 */
int ud_wal_frame_verify(const uint8_t *buf, uint64_t limit, uint64_t off, uint32_t *data_len,
                        uint64_t *frame_size, char *errmsg);

/* Retention of sealed segments. A sealed segment is removed when all of its records are below
 * keep_lsn (callers pass min(flushed checkpoint + 1, oldest open transaction's first LSN, ...))
 * AND it is beyond max_segments (counting sealed segments newest first) or older than max_age_ms
 * (by its last-modified time). 0 disables a limit; with both 0 nothing is removed. */
struct ud_wal_retention {
    uint32_t max_segments;
    uint64_t max_age_ms;
};

/* Applies the retention policy: unlinks oldest segments first, then fsyncs the directory.
 * *removed (may be NULL) gets the number removed. Returns 0 or UD_EIO. */
int ud_wal_retain(struct ud_wal *wal, const struct ud_wal_retention *policy, uint64_t keep_lsn,
                  uint32_t *removed, char *errmsg);

/* Copies every sealed segment into dest_dir (created; must be empty or absent), each file and the
 * directory fsynced. *copied (may be NULL) gets the number of files. Returns 0, UD_EEXIST (dest not
 * empty), UD_ENOSPC, UD_EIO. Sealed segments are immutable, so appends continue meanwhile. */
int ud_wal_backup(struct ud_wal *wal, const char *dest_dir, uint32_t *copied, char *errmsg);
/* The same into the directory open as dirfd (files created in it exclusively, never through a
 * symbolic link; dest names it in messages), only the sealed segments with ids above after; *ids
 * (may be NULL; malloc'd, the caller frees) gets their ids in order. The directory is locked
 * (flock) for the whole copy: UD_EEXIST when another backup holds it. On failure the files this
 * call created (and still in place) are removed again, so the directory is left empty for a retry.
 */
int ud_wal_backup_at(struct ud_wal *wal, int dirfd, const char *dest, uint64_t after,
                     uint32_t **ids, uint32_t *copied, char *errmsg);

#endif
