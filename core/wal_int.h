/* WALFS internals shared by core/wal*.c: the on-disk format helpers and the in-memory log. */
#ifndef UD_CORE_WAL_INT_H
#define UD_CORE_WAL_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "core/fs.h"
#include "core/wal.h"

/* ---- On-disk format, version 1 (docs/format-wal.md) ---- */

#define UD_WAL_MAGIC       0x5557414Cu
#define UD_WAL_VERSION     1u
#define UD_WAL_FLAG_ACTIVE 1u
#define UD_WAL_FLAG_SEALED 2u

/* Header field offsets. The first LSN lives in the seed's reserved bytes 44..55. */
#define UD_WAL_OFF_MAGIC        0
#define UD_WAL_OFF_VERSION      4
#define UD_WAL_OFF_CREATED      8
#define UD_WAL_OFF_MODIFIED     16
#define UD_WAL_OFF_WRITE_OFFSET 24
#define UD_WAL_OFF_ENTRY_COUNT  32
#define UD_WAL_OFF_FLAGS        40
#define UD_WAL_OFF_FIRST_LSN    44
#define UD_WAL_OFF_CRC          56
#define UD_WAL_HEADER_CRC_LEN   56

#define UD_WAL_TRAILER_SIZE 8
#define UD_WAL_SEG_NAME_LEN 14 /* "0000000001.seg" */

extern const uint8_t ud_wal_trailer[UD_WAL_TRAILER_SIZE];

struct ud_wal_header {
    uint32_t magic;
    uint32_t version;
    uint64_t created_ns;
    uint64_t modified_ns;
    uint64_t write_offset;
    uint64_t entry_count;
    uint32_t flags;
    uint64_t first_lsn;
};

/* Writes the 64-byte header (reserved and padding bytes zero, CRC computed) into out. */
void ud_wal_header_encode(const struct ud_wal_header *h, uint8_t *out);

/*
 * Parses and validates the header at the start of a file of size bytes. Returns 0, UD_ECORRUPT
 * (short file, bad magic, bad CRC, bad flags or offsets) or UD_EVERSION; errmsg says which field.
 */
int ud_wal_header_decode(const uint8_t *buf, uint64_t size, struct ud_wal_header *h, char *errmsg);

/* True when the file holds a full header whose CRC matches, whatever its fields say. */
bool ud_wal_header_intact(const uint8_t *buf, uint64_t size);

/* Bytes a frame of a len-byte record occupies: crc, length, data, trailer, padded to 8. */
static inline uint64_t ud_wal_frame_size(uint64_t len)
{
    return (UD_WAL_FRAME_OVERHEAD + len + 7) & ~(uint64_t)7;
}

/* CRC32C over the little-endian length followed by the data. */
uint32_t ud_wal_frame_crc(const void *data, uint32_t len);

/* Writes a whole frame (including zero padding) at dst. Returns the frame size. */
uint64_t ud_wal_frame_encode(uint8_t *dst, uint32_t crc, const void *data, uint32_t len);
/* The same around len bytes of data already at dst + 8 (appends in place). */
uint64_t ud_wal_frame_close(uint8_t *dst, uint32_t crc, uint32_t len);

enum ud_wal_frame_status {
    UD_WAL_FRAME_OK,
    UD_WAL_FRAME_END,         /* fewer than 16 bytes left, or zero crc and length: no frame */
    UD_WAL_FRAME_BAD_LENGTH,  /* zero length with a checksum, or runs past limit */
    UD_WAL_FRAME_BAD_TRAILER, /* trailer bytes differ */
    UD_WAL_FRAME_BAD_CRC,     /* checksum differs */
};

/* Checks the frame at off in buf, which may be read up to limit, without its CRC: the length
 * fits and the trailer is in place. Sets *len on OK. */
enum ud_wal_frame_status ud_wal_frame_check_shape(const uint8_t *buf, uint64_t limit, uint64_t off,
                                                  uint32_t *len);

/* Checks the frame at off in buf, which may be read up to limit. Sets *len on OK. */
enum ud_wal_frame_status ud_wal_frame_check(const uint8_t *buf, uint64_t limit, uint64_t off,
                                            uint32_t *len);

/* "bad record checksum" etc. for error messages. */
const char *ud_wal_frame_status_str(enum ud_wal_frame_status st);

/* ---- In-memory log ---- */

/* Appends are built in an anonymous stage and written into the file from there (core/wal_stage.c).
 * The stage holds this much of the active segment; when a frame does not fit, what it holds is
 * written out and it starts over at the write offset. */
#define UD_WAL_STAGE_BYTES (8ull << 20)
/* The appender wakes the helper to write the stage out once this much is unwritten, and the helper
 * writes out whatever is left this long after an append (core/wal.c help_main). */
#define UD_WAL_WRITE_STEP     (1ull << 20)
#define UD_WAL_WRITE_DELAY_MS 5u
/* NONE mode: the helper syncs the active segment once this much is unsynced. Small, so that it
 * syncs back to back while appends come in: the seal fsyncs on the append path whatever the helper
 * has not, which is what came in during the helper's sync under way (with 16 MiB steps it was also
 * up to a whole step more). Measured, put-none, 6 pairs: the seals' time on the put thread was
 * 0.25 s per million records against 0.33 s with 16 MiB steps (docs/benchmarks.md). */
#define UD_WAL_BG_SYNC_BYTES (1ull << 20)
/* ALWAYS mode: the helper readies the active segment's file ahead of the appends (fs->prepare:
 * written zeros instead of ext4's unwritten extents, so that a round's fsync does not also commit
 * the journal), in steps of a 16th of the segment (at most UD_WAL_PREPARE_STEP), keeping
 * UD_WAL_PREPARE_STEPS_AHEAD steps ahead of the end. A step starts a quarter step past the end
 * at least, and those within a step of the end are quarter steps (ud_wal_prepare_near_step), so
 * that the appends rarely catch up with the step under way (a write into it waits) and wait
 * little when they do: at a new segment the helper starts behind. ud_wal_prepare_step() gives
 * the step of a segment. */
#define UD_WAL_PREPARE_STEP        (4ull << 20)
#define UD_WAL_PREPARE_STEPS_AHEAD 4u

/*
 * One segment file. The WAL's list holds one reference and each reader holds one on the segment it
 * reads, so retention can unlink the file while a reader still uses the mapping; the last unref
 * unmaps. Fields marked (lock) change only under wal->lock; count is also published to lock-free
 * readers with release stores.
 */
struct ud_wal_segment {
    uint32_t id;
    char name[UD_WAL_SEG_NAME_LEN + 2];
    struct ud_fs *fs;        /* kept here so the last unref needs no WAL (it may be closed) */
    struct ud_fs_file *file; /* owned */
    uint8_t *map;            /* the whole file, read-write (records are written by fs->write) */
    uint64_t size;
    uint64_t first_lsn;     /* LSN of record 0; immutable */
    _Atomic uint64_t count; /* records whose frames are complete */
    uint64_t end;           /* (lock) next write offset */
    uint64_t synced;        /* (lock) bytes [0, synced) are durable */
    uint64_t created_ns;    /* (lock) */
    uint64_t modified_ns;   /* (lock) */
    bool sealed;            /* (lock) */
    atomic_int refs;        /* the list's reference + readers + in-flight syncs/backups */
    /* [0, written) of the file holds the segment's bytes; the rest of [0, end) is in the WAL's
     * stage only. Moves under wal->write_lock; readers load it to know whether the mapping holds
     * the frames they are about to read. */
    _Atomic uint64_t written;
    /* end as of the last published frame, for readers that do not take the append lock. */
    _Atomic uint64_t published;
    /* The appender wakes the helper when end reaches this, to write the stage out (or, end + 1
     * when the helper found nothing to write, at the next append). */
    _Atomic uint64_t wake_at;
    /* NONE mode: the appender also wakes the helper when end reaches this, to sync. */
    _Atomic uint64_t sync_wake_at;
    /* ALWAYS mode (core/wal.c prepare_ahead): the helper has readied the file (fs->prepare) up
     * to prepared, from a little past the end it found at its first step, and is readying a step
     * from preparing_from while that is not UINT64_MAX. A write out reaching past preparing_from
     * waits for the step (prepare_lock); the seal sets prepared to the size, which ends it. */
    uint64_t prepared;               /* (prepare_lock) */
    _Atomic uint64_t preparing_from; /* set under write_lock + prepare_lock, cleared under the
                                        latter */
    uint64_t *index;                 /* (lock) index[j] = offset of record j * index_interval */
    uint32_t index_len;              /* (lock) */
    uint32_t index_cap;              /* (lock) */
};

struct ud_wal {
    char *dir; /* owned */
    struct ud_fs *fs;
    uint64_t segment_size;
    uint64_t max_record;
    enum ud_wal_sync_mode mode;
    uint32_t sync_interval_ms;
    uint32_t index_interval;
    uint64_t start_lsn;

    /* Append state, segment list, indexes, listener. Never held across a group-commit fsync. */
    pthread_mutex_t lock;
    struct ud_wal_segment **segs; /* (lock) oldest first; the last one is the active segment */
    uint32_t nsegs;               /* (lock) */
    uint32_t segs_cap;            /* (lock) */
    void (*listener)(void *arg, uint64_t lsn); /* (lock) */
    void *listener_arg;                        /* (lock) */
    /* Listener calls under way (taken under lock, dropped after the call): ud_wal_set_listener
     * waits for them so that an old listener's argument may be freed once it returns. */
    atomic_int listener_calls;
    uint64_t bytes_appended; /* (lock) */
    /* The append in place under way (ud_wal_reserve until ud_wal_commit or ud_wal_cancel, the
     * lock held throughout): the record's length, whether reserving sealed the previous segment
     * (the listener hears of it), and whether it added a sparse index position (undone by a
     * cancel, which leaves the record's number to the next append). */
    uint32_t reserved_len; /* (lock) */
    bool reserved_sealed;  /* (lock) */
    bool reserved_indexed; /* (lock) */

    _Atomic uint64_t first_lsn;   /* oldest retained record */
    _Atomic uint64_t last_lsn;    /* newest complete record, published after its frame */
    _Atomic uint64_t durable_lsn; /* newest record known fsynced */
    _Atomic uint64_t syncs;
    _Atomic uint64_t last_sync_ns; /* duration of the last group-commit fsync */
    _Atomic uint64_t sync_rounds;  /* group-commit rounds that fsynced (ud_wal_stats) */
    _Atomic uint64_t sync_ns;      /* their fsync time in all */
    _Atomic uint64_t sync_max_ns;  /* the longest one */
    atomic_int failed;

    pthread_mutex_t fail_lock;
    char fail_msg[UD_ERRMSG_SIZE]; /* (fail_lock) why the WAL failed */

    /* Group commit (core/wal.c, sync_upto): one syncer at a time (syncing) runs a round;
     * sync_seq counts the rounds completed. The others sleep on the futex sync_wake, bumped
     * whenever durable_lsn may have moved (a round's end, a segment's seal), each with the bit
     * of the round that covers it, so that a round's end wakes only the committers it made
     * durable. sync_target is the LSN the running round covers, valid while sync_round_tag is
     * sync_seq + 1. sync_waiters counts the sleepers by the parity of their round. */
    atomic_bool syncing;
    _Atomic uint32_t sync_seq;
    _Atomic uint32_t sync_wake;
    _Atomic uint32_t sync_round_tag;
    _Atomic uint64_t sync_target;
    atomic_int sync_waiters[2];

    /* Tail readers sleep on wait_cond; writers broadcast only when waiters > 0. */
    pthread_mutex_t wait_lock;
    pthread_cond_t wait_cond;
    atomic_int waiters;
    atomic_bool closed;

    /* INTERVAL mode background syncer. */
    pthread_mutex_t tick_lock;
    pthread_cond_t tick_cond;
    bool tick_stop; /* (tick_lock) */
    bool tick_running;
    pthread_t tick_thread;

    pthread_mutex_t retain_lock; /* serializes retention passes */

    /* Helper thread (core/wal.c "Helper"): writes the stage out behind the appender and, in NONE
     * mode, syncs the segment in the background, so that neither the writes nor the fsync of a
     * whole segment at sealing land on the append path. */
    pthread_mutex_t help_lock;
    pthread_cond_t help_cond;
    bool help_stop;   /* (help_lock) */
    bool help_wanted; /* (help_lock) */
    bool help_running;
    pthread_t help_thread;

    /* The stage (core/wal_stage.c): anonymous memory the active segment's appends are built in,
     * stage[i] being byte stage_base + i of the active segment. Written out (fs->write) under
     * write_lock, which is taken after lock when both are held. stage_base and the mapping change
     * only with both held. */
    pthread_mutex_t write_lock;
    /* Held by the helper while it readies a step of the active segment (fs->prepare), taken after
     * write_lock when both are held and never held while taking lock or write_lock. */
    pthread_mutex_t prepare_lock;
    uint8_t *stage;
    uint64_t stage_size;
    uint64_t stage_base;

    /* The durable floor (core/wal_floor.c): raised by ud_wal_sync_all, read by recovery. */
    pthread_mutex_t floor_lock;
    uint64_t floor_seq; /* (floor_lock) sequence number of the newest slot */
    uint64_t floor_lsn; /* (floor_lock) 0: none */
    int floor_slot;     /* (floor_lock) slot holding floor_lsn; -1: neither */
};

/* The durable floor (core/wal_floor.c, docs/format-wal.md "Durable floor"). */
#define UD_WAL_FLOOR_NAME "durable-floor"
/* Reads the floor from {dir}/durable-floor into wal->floor_lsn, creating the file when missing.
 * UD_ECORRUPT when both slots are damaged or the size is wrong. No descriptor stays open. */
int ud_wal_floor_open(struct ud_wal *wal, char *errmsg);
/* Makes lsn the floor, durably, when it is above the present one. 0 or the fs error. */
int ud_wal_floor_raise(struct ud_wal *wal, uint64_t lsn, char *errmsg);

/* Segment objects (core/wal_segment.c). */
void ud_wal_segment_name(uint32_t id, char *out);
int ud_wal_segment_path(const struct ud_wal *wal, const char *name, char *out, size_t outlen);
struct ud_wal_segment *ud_wal_segment_alloc(struct ud_wal *wal, uint32_t id);
void ud_wal_segment_ref(struct ud_wal_segment *s);
void ud_wal_segment_unref(struct ud_wal_segment *s);
/* Sets the end of a segment whose bytes up to off are all in the file and durable. */
void ud_wal_segment_set_end(struct ud_wal_segment *s, uint64_t off);
/* Creates, preallocates and maps a new active segment; header synced, directory synced. */
int ud_wal_segment_create(struct ud_wal *wal, uint32_t id, uint64_t first_lsn,
                          struct ud_wal_segment **out, char *errmsg);
/* Writes the header from the in-memory state (flags, end, count, timestamps). (lock) */
void ud_wal_segment_write_header(struct ud_wal_segment *s);
/* Bytes the helper readies at a time in a segment of size bytes (UD_WAL_PREPARE_STEP). */
uint64_t ud_wal_prepare_step(uint64_t size);
/* The length of a step that starts within a step of the end: a quarter step, whole pages. */
uint64_t ud_wal_prepare_near_step(uint64_t step);
/* Finalizes the header as sealed and fsyncs the whole segment. (lock) */
int ud_wal_segment_seal(struct ud_wal *wal, struct ud_wal_segment *s, char *errmsg);
/* Records the position of record number `record` when it starts an index interval. (lock) */
int ud_wal_segment_index_add(struct ud_wal *wal, struct ud_wal_segment *s, uint64_t record,
                             uint64_t off);
/* Position of record k (< count) of s, by the sparse index plus a short scan. (lock) */
uint64_t ud_wal_segment_locate(struct ud_wal *wal, struct ud_wal_segment *s, uint64_t k);
/* Index in wal->segs of the segment holding lsn (first_lsn <= lsn <= last_lsn + 1). (lock) */
uint32_t ud_wal_find_segment(struct ud_wal *wal, uint64_t lsn);

/* The stage (core/wal_stage.c). */
int ud_wal_stage_init(struct ud_wal *wal, char *errmsg);
void ud_wal_stage_free(struct ud_wal *wal);
/* Where byte off of the active segment is built. (lock) */
static inline uint8_t *ud_wal_stage_at(struct ud_wal *wal, uint64_t off)
{
    return wal->stage + (off - wal->stage_base);
}
/* Makes room in the stage for fsize bytes at the active segment's end, writing out what it holds
 * when they do not fit. 0, UD_ENOMEM, or the write's error (the log is then failed). (lock) */
int ud_wal_stage_reserve(struct ud_wal *wal, struct ud_wal_segment *s, uint64_t fsize);
/* Starts the stage over at a new active segment's end. (lock) */
void ud_wal_stage_restart(struct ud_wal *wal, struct ud_wal_segment *s);
/* Writes the stage's bytes of s up to offset `to` (at most its end) into the file, unless they
 * are there already. A failure fails the log. 0 or UD_EIO with errmsg (may be NULL) naming the
 * failed write, or the earlier failure of the log. */
int ud_wal_write_out(struct ud_wal *wal, struct ud_wal_segment *s, uint64_t to, char *errmsg);
/* Makes bytes [from, to) of s durable: the stage written out up to `to` (even when the range is
 * empty), then the range synced and counted in the log's syncs. 0, or the write's or the sync's
 * error with errmsg; errmsg may be NULL only when the range is empty. */
int ud_wal_sync_range(struct ud_wal *wal, struct ud_wal_segment *s, uint64_t from, uint64_t to,
                      char *errmsg);
/* For readers that do not hold the append lock: writes out every published frame of s unless
 * the file holds them, also after the log failed (its published frames stay readable). 0 or
 * UD_EIO. */
int ud_wal_write_published(struct ud_wal *wal, struct ud_wal_segment *s);

/* Recovery (core/wal_recover.c): loads the segments of wal->dir into wal->segs. */
int ud_wal_recover(struct ud_wal *wal, char *errmsg);

/* Shared by the append path, syncs and readers (core/wal.c). */
void ud_wal_set_failed(struct ud_wal *wal, const char *msg);
/* Fills errmsg (may be NULL) with the log's failure. Returns UD_EIO. */
int ud_wal_fail_error(struct ud_wal *wal, char *errmsg);
void ud_wal_wake_readers(struct ud_wal *wal);
void ud_wal_advance_durable(struct ud_wal *wal, uint64_t lsn);
int ud_wal_push_segment(struct ud_wal *wal, struct ud_wal_segment *s);

#endif
