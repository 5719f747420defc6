/*
 * Engine: one namespace's storage (WAL + memtables + LMDB store), its transactions, reads and
 * recovery. Every state change goes through one deterministic function, ud_ns_apply(), used by
 * the convenience write API below, by recovery, and later by the raft FSM and by relayers
 * (ARCHITECTURE.md sections 5-8).
 *
 * Directory layout of a namespace: {dir}/LOCK (flock, one process at a time), {dir}/wal/
 * (segments), {dir}/lmdb/ (store).
 *
 * Visibility: a write is visible to readers as soon as ud_ns_apply returns; the convenience writes
 * return (acknowledge) only after the record is durable under the sync mode.
 *
 * Threads: all functions are thread-safe. Applies are serialized by the namespace's apply lock;
 * reads take no lock that an apply or a flush holds for longer than a pointer swap.
 */
#ifndef UD_CORE_ENGINE_H
#define UD_CORE_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "core/fs.h"
#include "core/keyspace.h"
#include "core/store.h"
#include "core/wal.h"
#include "proto/record.h"

/*
 * memtable_bytes is the memory budget of all of a namespace's memtables together, the one being
 * flushed included, each counted with its key filter: the active memtable is sealed a little
 * below half of it, and writers wait (ud_ns_admit) while the memtables hold it (while one is
 * sealed) or max_sealed are sealed (docs/engine.md "Memtables").
 */
struct ud_engine_options {
    const char *dir;                 /* namespace directory (created) */
    const char *name;                /* namespace name, used in messages */
    enum ud_wal_sync_mode sync_mode; /* default ALWAYS */
    uint32_t sync_interval_ms;       /* INTERVAL mode; 0: 100 */
    uint64_t segment_size;           /* 0: UD_WAL_DEFAULT_SEGMENT_SIZE */
    size_t memtable_bytes;           /* all memtables together (engine.md); 0: 256 MiB */
    uint32_t max_sealed;             /* sealed memtables before writers wait; 0: 2 */
    /* A namespace without writes this long flushes its memtable, then gives back its share of the
     * arena pool (docs/engine.md "Memtables"); 0: 10,000 ms. */
    uint32_t idle_flush_ms;
    uint64_t txn_max_bytes;            /* cap of a KV/row transaction's entries; 0: 64 MiB */
    uint64_t map_size;                 /* initial LMDB map size; 0: 1 GiB */
    uint64_t flush_txn_bytes;          /* LMDB pages a flush transaction dirties; 0: 16 MiB */
    struct ud_wal_retention retention; /* sealed segment retention (0/0: keep all) */
    uint32_t txn_idle_timeout_ms;      /* informative for callers; the engine has no clock */
    struct ud_fs *fs;                  /* NULL: POSIX; tests plug the power-loss layer here */
    /* Stamped into a namespace created by this open (ud_ns_incarnation); 0: none. */
    uint64_t incarnation;
};

struct ud_ns;

/*
 * Opens (creating when absent) the namespace at opts->dir and recovers it: WAL recovery, LMDB
 * checkpoint, then replay of the WAL from min(checkpoint + 1, oldest open transaction's BEGIN)
 * through ud_ns_apply's logic. Starts the flush thread.
 * Returns 0, UD_ELOCKED (another process holds the namespace; errmsg names the lock file),
 * UD_ECORRUPT (names segment and offset), UD_EIO, UD_ENOSPC, UD_ENOMEM, UD_EINVAL.
 */
int ud_ns_open(const struct ud_engine_options *opts, struct ud_ns **out, char *errmsg);

/* Which namespace of its name this is: the raft index of the entry that created it, the same on
 * every writer and carried by snapshots to relayers (docs/relayer.md "Limits"). 0: unknown (a
 * namespace created before incarnations, or outside raft). */
uint64_t ud_ns_incarnation(const struct ud_ns *ns);
/* Gives a namespace without an incarnation the raft index that created it (a writer at open, for
 * a namespace whose create an earlier version applied), durably; one that has one keeps it.
 * Returns 0, UD_EIO, UD_ENOSPC. */
int ud_ns_stamp_incarnation(struct ud_ns *ns, uint64_t incarnation, char *errmsg);
/* Newest LSN known fsynced in the namespace's WAL (every record up to it survives a power loss). */
uint64_t ud_ns_durable_lsn(struct ud_ns *ns);

/* Stops the flush thread (finishing a flush in progress), syncs the WAL, closes everything and
 * releases the lock. The memtable is not flushed: reopening replays the WAL. NULL allowed. */
void ud_ns_close(struct ud_ns *ns);

const char *ud_ns_name(const struct ud_ns *ns);

/* --- the apply function --------------------------------------------------------------------- */

/*
 * Applies one encoded record (proto/record.h). Validates it against the current state; if it is
 * accepted, stamps the next LSN into record[8..16) (a record that already carries an LSN must carry
 * exactly the next one: relayers append verbatim), appends it to the WAL, and applies it:
 * standalone writes to the memtable, BEGIN/PREPARE to the open-transaction table, COMMIT
 * materializes the transaction atomically, ABORT discards it. No clock, no randomness, no blocking
 * beyond the WAL append; it does not wait for durability. A rejected record takes no LSN and
 * changes nothing:
 *   UD_ECORRUPT   the record does not decode (errmsg from the decoder);
 *   UD_EINVAL     an empty column name (it would alias the whole-row key);
 *   UD_ELIMIT     a key over its model limit (errmsg states the limit), a KV/row transaction over
 *                 txn_max_bytes;
 *   UD_ENOTFOUND  unknown transaction id; UPDATE of an absent key or row;
 *   UD_ETXN       entry type or op differing from the transaction's BEGIN; BEGIN of an id in use;
 *                 a second key in a LOB transaction; a LOB chunk whose lob_offset is not the end;
 *   UD_ERANGE     a record LSN that is not the next LSN;
 *   UD_EIO/UD_ENOSPC/UD_ENOMEM  storage failures (nothing applied): every failure of this
 *                 node's store, WAL or memory, whatever its own code (a damaged stored value
 *                 read by an UPDATE's check is UD_EIO, the cause in errmsg), so that no caller
 *                 takes it for one of the rejections above (docs/raft.md).
 * On success *lsn (may be NULL) is the record's LSN.
 */
int ud_ns_apply(struct ud_ns *ns, uint8_t *record, size_t len, uint64_t *lsn, char *errmsg);
/* 1 when the namespace refuses every apply until it is opened again: a memtable insert failed
 * after its WAL append, or the WAL is failed (a failed fsync). Other storage failures (a full disk)
 * pass; this one never does. Call from the applying thread. */
int ud_ns_failed(struct ud_ns *ns);

/* Waits until lsn is durable under the namespace's sync mode (group commit in ALWAYS mode).
 * Returns 0 or UD_EIO. */
int ud_ns_wait_durable(struct ud_ns *ns, uint64_t lsn, char *errmsg);

/* Fsyncs every record appended so far, whatever the sync mode: the raft FSM calls it before a raft
 * snapshot lets raft truncate its log (the WAL must then hold those records). Returns 0 or UD_EIO
 * (the WAL is failed). */
int ud_ns_sync(struct ud_ns *ns, char *errmsg);

/* Admission control: waits while the flush is behind (max_sealed memtables sealed, or the
 * memtables holding memtable_bytes while one is sealed), up to timeout_ms. Returns 0 or UD_EBUSY
 * (still behind). Never called by ud_ns_apply itself. */
int ud_ns_admit(struct ud_ns *ns, uint64_t timeout_ms);
/* The latest flush's error (UD_ENOSPC, UD_EIO, ...) and why, when it failed and none succeeded
 * since; 0 otherwise: writes held by admission wait for a flush that fails (a full disk), not a
 * slow one. */
int ud_ns_flush_failure(struct ud_ns *ns, char *why, size_t size);

/* --- writes: encode + admit + apply + wait durable. *lsn (may be NULL) is the committed LSN. ----
 */

struct ud_kv {
    const uint8_t *key;
    size_t key_len;
    const uint8_t *value; /* ignored by deletes */
    size_t value_len;
};

struct ud_col {
    const uint8_t *name;
    size_t name_len;
    const uint8_t *value; /* ignored by column deletes */
    size_t value_len;
};

struct ud_row {
    const uint8_t *key;
    size_t key_len;
    const struct ud_col *cols;
    size_t ncols;
};

int ud_ns_kv_put(struct ud_ns *ns, const void *key, size_t key_len, const void *value,
                 size_t value_len, uint64_t *lsn, char *errmsg);
int ud_ns_kv_delete(struct ud_ns *ns, const void *key, size_t key_len, uint64_t *lsn, char *errmsg);
/* Atomic: one record, all or nothing. */
int ud_ns_kv_batch_put(struct ud_ns *ns, const struct ud_kv *items, size_t n, uint64_t *lsn,
                       char *errmsg);
int ud_ns_kv_batch_delete(struct ud_ns *ns, const struct ud_kv *items, size_t n, uint64_t *lsn,
                          char *errmsg);
/* Merges the given columns into the row (creating it). */
int ud_ns_row_put(struct ud_ns *ns, const struct ud_row *row, uint64_t *lsn, char *errmsg);
int ud_ns_row_batch_put(struct ud_ns *ns, const struct ud_row *rows, size_t n, uint64_t *lsn,
                        char *errmsg);
/* Deletes the named columns, or the whole row when row->ncols == 0. */
int ud_ns_row_delete(struct ud_ns *ns, const struct ud_row *row, uint64_t *lsn, char *errmsg);
int ud_ns_row_batch_delete(struct ud_ns *ns, const struct ud_row *rows, size_t n, uint64_t *lsn,
                           char *errmsg);

/* --- transactions (ARCHITECTURE.md section 6) ---------------------------------------------------
 */

/* Begins a transaction of one entry type and operation (PUT, UPDATE or DELETE) with a fresh random
 * 16-byte id written to id. */
int ud_ns_txn_begin(struct ud_ns *ns, enum ud_op op, enum ud_entry_type type, uint8_t id[16],
                    uint64_t *lsn, char *errmsg);
/* Appends a KV part (DELETE transactions: value ignored). */
int ud_ns_txn_kv(struct ud_ns *ns, const uint8_t id[16], const void *key, size_t key_len,
                 const void *value, size_t value_len, uint64_t *lsn, char *errmsg);
/* Appends a row part (DELETE transactions: the named columns, or the whole row when none). */
int ud_ns_txn_row(struct ud_ns *ns, const uint8_t id[16], const struct ud_row *row, uint64_t *lsn,
                  char *errmsg);
/*
 * Appends a LOB chunk at byte offset `offset` (1 <= len <= 1 MiB; 0 allowed in DELETE
 * transactions). A chunk that is already held in full (a client retry: offset + len <= size so far)
 * is accepted again without a new record
 * (*lsn = 0); offset past the end or not on a chunk boundary -> UD_ERANGE stating the expected
 * offset.
 */
int ud_ns_txn_lob(struct ud_ns *ns, const uint8_t id[16], const void *key, size_t key_len,
                  uint64_t offset, const void *chunk, size_t len, uint64_t *lsn, char *errmsg);
int ud_ns_txn_commit(struct ud_ns *ns, const uint8_t id[16], uint64_t *lsn, char *errmsg);
int ud_ns_txn_abort(struct ud_ns *ns, const uint8_t id[16], uint64_t *lsn, char *errmsg);

/* --- reads ---------------------------------------------------------------------------------- */

/* A growable caller-owned buffer; free data with free(). */
struct ud_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
};
void ud_buf_free(struct ud_buf *b);

/* Copies the value of key into val and sets *lsn (may be NULL) to the LSN that wrote it.
 * Returns 0, UD_ENOTFOUND, UD_ELIMIT (key too long), UD_EIO, UD_ENOMEM. */
int ud_ns_kv_get(struct ud_ns *ns, const void *key, size_t key_len, struct ud_buf *val,
                 uint64_t *lsn);
/*
 * Hands the value of key, where it lies (memtable or LMDB page), to fn with the LSN that wrote it,
 * so a reply can be built from it without an intermediate copy. value is valid only during the
 * call, which runs inside a read snapshot: fn must be short and must not write to the namespace.
 * Returns fn's result, UD_ENOTFOUND (fn not called), UD_ELIMIT, UD_EIO, UD_ECORRUPT, UD_ENOMEM.
 */
typedef int (*ud_kv_value_fn)(void *arg, const uint8_t *value, size_t value_len, uint64_t lsn);
int ud_ns_kv_get_with(struct ud_ns *ns, const void *key, size_t key_len, ud_kv_value_fn fn,
                      void *arg);
/* Whether key holds a visible value: 1 yes, 0 no, or -UD_E* (nothing is copied). */
int ud_ns_kv_exists(struct ud_ns *ns, const uint8_t *key, size_t key_len);

/*
 * A run of KV point reads against one read view: the namespace's memtables taken once, and one
 * LMDB snapshot begun right after them. A server answering a pipelined batch
 * of GETs pays the view's locks and reference counts once per batch instead of once per key, and
 * every value stays where it lies until the reader is closed, so the copies into the replies can
 * wait until their cache lines have been fetched (core/resp/resp_batch.c).
 *
 * What the reads see is fixed when the reader is opened: writes applied later are not visible
 * until it is closed and opened again. Keep a reader open only for reads that a client sent
 * before it was opened, and only briefly: its snapshot holds the store's map lock shared (a map
 * resize waits for it) and one LMDB reader slot. One thread uses a reader at a time; it must not
 * begin another snapshot of the same store while the reader holds one (ud_ns_kv_get and the other
 * reads do): close the reader first.
 */
struct ud_kv_reader;
/* Allocates a closed reader. Returns 0 or UD_ENOMEM. */
int ud_kv_reader_new(struct ud_kv_reader **out);
/* Closes the reader if it is open, then frees it. NULL is ignored. */
void ud_kv_reader_free(struct ud_kv_reader *r);
/* Opens the reader on ns (borrowed: the caller keeps ns acquired until the close). The reader
 * must be closed. Returns 0, UD_ENOMEM or the error beginning the LMDB snapshot (the reader stays
 * closed). */
int ud_kv_reader_open(struct ud_kv_reader *r, struct ud_ns *ns);
/* The namespace the reader is open on, or NULL when it is closed. */
struct ud_ns *ud_kv_reader_ns(const struct ud_kv_reader *r);
/*
 * The visible value of key as of the open: *value (borrowed: valid until ud_kv_reader_close) and
 * its length, and *lsn (may be NULL), the LSN that wrote it. Returns 0, UD_ENOTFOUND, UD_ELIMIT or
 * UD_EINVAL (key too long or empty), UD_EIO, UD_ECORRUPT. A failure leaves the reader open.
 */
int ud_kv_reader_get(struct ud_kv_reader *r, const void *key, size_t key_len, const uint8_t **value,
                     size_t *value_len, uint64_t *lsn);
/* Ends the snapshot and releases the view; every value handed out becomes invalid. A closed
 * reader is left as it is. */
void ud_kv_reader_close(struct ud_kv_reader *r);

/* Called for each visible column, in column-name order. Views valid during the call only.
 * A non-zero return stops the read and is returned. */
typedef int (*ud_column_cb)(void *arg, const uint8_t *name, size_t name_len, const uint8_t *value,
                            size_t value_len, uint64_t lsn);

/* Reads a row: all columns (ncols == 0) or only the named ones (row->cols names; values ignored).
 * Returns 0, UD_ENOTFOUND (no visible column), UD_ELIMIT, UD_EIO, UD_ENOMEM. */
int ud_ns_row_get(struct ud_ns *ns, const struct ud_row *row, ud_column_cb cb, void *arg);

/* Ordered scans. Keys from max(start, prefix) on, only keys starting with prefix, at most limit
 * items (KV pairs, or rows). On return next holds the first key not returned (pass it as start to
 * resume), or is empty (len 0) when the range is exhausted. */
struct ud_scan {
    const uint8_t *prefix;
    size_t prefix_len;
    const uint8_t *start; /* inclusive */
    size_t start_len;
    uint32_t limit; /* 0: 1000 */
};

typedef int (*ud_kv_cb)(void *arg, const uint8_t *key, size_t key_len, const uint8_t *value,
                        size_t value_len, uint64_t lsn);
int ud_ns_kv_scan(struct ud_ns *ns, const struct ud_scan *scan, ud_kv_cb cb, void *arg,
                  struct ud_buf *next);

/* Row scan: cb is called once per visible column, rows in key order, columns in name order. */
typedef int (*ud_row_column_cb)(void *arg, const uint8_t *row, size_t row_len, const uint8_t *name,
                                size_t name_len, const uint8_t *value, size_t value_len,
                                uint64_t lsn);
int ud_ns_row_scan(struct ud_ns *ns, const struct ud_scan *scan, ud_row_column_cb cb, void *arg,
                   struct ud_buf *next);

/* LOB read as a stream of chunks; the whole object is never in memory. */
struct ud_lob_reader;
/* Returns 0 (and *size, *lsn of the commit), UD_ENOTFOUND, UD_ELIMIT, UD_EIO, UD_ENOMEM. */
int ud_ns_lob_open(struct ud_ns *ns, const void *key, size_t key_len, struct ud_lob_reader **out,
                   uint64_t *size, uint64_t *lsn);
/* Next chunk: 0 with *len > 0, or 0 with *len == 0 at the end. *data valid until the next call.
 * UD_ECONFLICT when the object was overwritten and its old chunks dropped during the read. */
int ud_lob_reader_next(struct ud_lob_reader *r, const uint8_t **data, size_t *len);
/* Positions r at byte offset of the object without reading anything (the manifest lists each
 * chunk's length): the next ud_lob_reader_next returns the chunk that holds offset, whole, and
 * *skip is offset's place in it (the bytes of that chunk to leave out). A view from an earlier
 * ud_lob_reader_next ends here. Returns 0, or UD_ERANGE (r unchanged) when offset >= the size. */
int ud_lob_reader_seek(struct ud_lob_reader *r, uint64_t offset, size_t *skip);
void ud_lob_reader_close(struct ud_lob_reader *r);

/* --- state queried by the serving layers ------------------------------------------------------ */

/* LSN of the namespace's newest record, 0 when none: one atomic load (ud_ns_stats takes locks and
 * gathers every counter). */
uint64_t ud_ns_last_lsn(const struct ud_ns *ns);
/* Raft position (raft_index, raft_pos from the record header) of the newest record in this
 * namespace's WAL, 0/0 when none or not under raft. The raft FSM skips records at or before it
 * when raft replays its log after a restart (ARCHITECTURE.md section 6). */
void ud_ns_last_raft_position(struct ud_ns *ns, uint64_t *index, uint32_t *pos);
/* Raft position of the record at lsn in this namespace's WAL: 0, or a reader error (UD_EGONE:
 * retention removed it; UD_ERANGE or UD_EAGAIN: past the newest record). */
int ud_ns_raft_position_at(struct ud_ns *ns, uint64_t lsn, uint64_t *index, uint32_t *pos);
/* The LSN of the record that raft position (index, pos) put in this namespace's WAL (a binary
 * search over the retained WAL: raft positions grow with LSNs). The raft FSM uses it for the
 * idempotency window when replay skips a write already in the WAL. Returns 0 and *lsn,
 * UD_ENOTFOUND (the retained WAL covers the position and holds no such record: it was rejected),
 * UD_EGONE (the position is older than the oldest retained record, or nothing is retained:
 * retention may have removed it), or a read error. */
int ud_ns_lsn_of_raft_position(struct ud_ns *ns, uint64_t index, uint32_t pos, uint64_t *lsn);

struct ud_txn_info {
    uint8_t op;         /* enum ud_op of its BEGIN */
    uint8_t entry_type; /* enum ud_entry_type */
    uint64_t begin_lsn;
    uint64_t last_lsn;    /* LSN of its newest record (BEGIN or PREPARE) */
    uint64_t bytes;       /* KV/row: bytes of held parts; LOB: bytes of chunks so far */
    uint32_t parts;       /* PREPARE records held */
    uint16_t lob_key_len; /* LOB: the one key, once the first chunk arrived */
    uint8_t lob_key[UD_MAX_LOB_KEY];
};

/* Describes an open transaction: 0 and *info filled, or UD_ENOTFOUND. */
int ud_ns_txn_info(struct ud_ns *ns, const uint8_t id[16], struct ud_txn_info *info);

/* Calls fn for every open transaction (for idle-timeout aborts and a new leader's cleanup).
 * fn must not call back into the namespace. Returns the count. */
size_t ud_ns_txn_list(struct ud_ns *ns,
                      void (*fn)(void *arg, const uint8_t id[16], const struct ud_txn_info *info),
                      void *arg);

/* --- record encoders (core/engine_encode.c) ---------------------------------------------------
 * The records the writes above apply, for callers that commit them another way (the writer
 * proposes them to raft, whose FSM applies them with ud_ns_apply). Each checks the model limits
 * first, with the messages apply would give, so an invalid write is refused before a raft round
 * trip. The header's LSN is 0 (apply assigns it) and its hlc is hlc (0: the caller stamps it).
 * Each returns 0 with *rec (malloc'd; the caller frees it) and *len, or UD_EINVAL / UD_ELIMIT
 * (errmsg says what is wrong, naming the item of a batch) or UD_ENOMEM.
 */

/* Fills a record header: version, op, entry type, transaction state and hlc; the rest zero. */
void ud_engine_record_header(struct ud_record *h, enum ud_op op, enum ud_entry_type type,
                             enum ud_txn_state state, uint64_t hlc);
/* A standalone KV write of n >= 1 items (DELETE: values ignored). */
int ud_engine_encode_kv(enum ud_op op, const struct ud_kv *items, size_t n, uint64_t hlc,
                        uint8_t **rec, size_t *len, char *errmsg);
/* A standalone row write of n >= 1 rows: PUT merges the columns; DELETE deletes the named
 * columns, or the whole row when none are named. */
int ud_engine_encode_rows(enum ud_op op, const struct ud_row *rows, size_t n, uint64_t hlc,
                          uint8_t **rec, size_t *len, char *errmsg);
/* BEGIN of a transaction with the given 16-byte id (chosen by the caller, at random). */
int ud_engine_encode_txn_begin(enum ud_op op, enum ud_entry_type type, const uint8_t id[16],
                               uint64_t hlc, uint8_t **rec, size_t *len, char *errmsg);
/* PREPARE parts; the transaction's op and BEGIN LSN come from info (ud_ns_txn_info). */
int ud_engine_encode_txn_kv(const uint8_t id[16], const struct ud_txn_info *info,
                            const struct ud_kv *kv, uint64_t hlc, uint8_t **rec, size_t *len,
                            char *errmsg);
int ud_engine_encode_txn_row(const uint8_t id[16], const struct ud_txn_info *info,
                             const struct ud_row *row, uint64_t hlc, uint8_t **rec, size_t *len,
                             char *errmsg);
/* A LOB chunk of 1 byte to 1 MiB at offset (DELETE transactions: no chunk, offset 0). Whether the
 * offset continues the object is the caller's check (it knows the chunks held). */
int ud_engine_encode_txn_lob(const uint8_t id[16], const struct ud_txn_info *info,
                             const uint8_t *key, size_t key_len, uint64_t offset,
                             const uint8_t *chunk, size_t chunk_len, uint64_t hlc, uint8_t **rec,
                             size_t *len, char *errmsg);
/* COMMIT or ABORT (state). */
int ud_engine_encode_txn_end(const uint8_t id[16], const struct ud_txn_info *info,
                             enum ud_txn_state state, uint64_t hlc, uint8_t **rec, size_t *len,
                             char *errmsg);

/* --- bootstrap of a follower from an upstream's snapshot (docs/engine.md "Bootstrap") -------- */

struct ud_ns_bootstrap;

/*
 * Starts installing a namespace from a snapshot (an LMDB copy of an upstream's store, whose meta
 * holds the checkpoint LSN and the transactions open at it). dir is a work directory (removed and
 * created afresh, flock'ed while the bootstrap runs); snapshot_path is renamed into it, so it must
 * be on the same file system. The store's checkpoint gives:
 *   checkpoint  every record <= it is reflected in the snapshot;
 *   from        min(checkpoint + 1, first LSN of every transaction open at the checkpoint): the
 *               oldest record recovery replays (docs/engine.md "Recovery").
 * A WAL starting at `from` is created. Records from..checkpoint must then be appended with
 * ud_ns_bootstrap_append (the upstream's WAL stream from `from`), so that recovery can rebuild
 * the transactions open across the snapshot point. opts gives segment size, sync mode and fs.
 * Returns 0, UD_EINVAL, UD_ECORRUPT/UD_EVERSION (the snapshot is not a usable store), UD_ELOCKED,
 * UD_EIO, UD_ENOSPC, UD_ENOMEM; errmsg names the file. On failure the work dir is removed.
 */
int ud_ns_bootstrap_begin(const char *dir, const char *snapshot_path,
                          const struct ud_engine_options *opts, struct ud_ns_bootstrap **out,
                          char *errmsg);

/*
 * Like ud_ns_bootstrap_begin; with keep_checkpoint_record, `from` is at most the checkpoint itself
 * (when it is >= 1), so the new WAL also holds the record at the checkpoint. A raft writer needs
 * that record: the raft position of a namespace is read from its newest WAL record
 * (ud_ns_last_raft_position), and without one raft would apply again entries the snapshot
 * already reflects.
 */
int ud_ns_bootstrap_begin_at(const char *dir, const char *snapshot_path,
                             const struct ud_engine_options *opts, int keep_checkpoint_record,
                             struct ud_ns_bootstrap **out, char *errmsg);

uint64_t ud_ns_bootstrap_from(const struct ud_ns_bootstrap *b);
uint64_t ud_ns_bootstrap_checkpoint(const struct ud_ns_bootstrap *b);
/* The snapshot's incarnation (its store's meta, ud_ns_incarnation once installed; 0: none). */
uint64_t ud_ns_bootstrap_incarnation(const struct ud_ns_bootstrap *b);
/* 1 once every record up to the checkpoint is appended. */
int ud_ns_bootstrap_complete(const struct ud_ns_bootstrap *b);

/*
 * Appends one record verbatim (record data as in the upstream's WAL, LSN field set). lsn must be
 * the next one (from, from + 1, ...) and at most the checkpoint, and equal to the record's LSN
 * field. Returns 0, UD_ERANGE (wrong LSN: errmsg states the expected one), UD_ECORRUPT (the
 * record does not decode or its LSN field differs), UD_EIO, UD_ENOSPC, UD_ELIMIT.
 */
int ud_ns_bootstrap_append(struct ud_ns_bootstrap *b, const uint8_t *record, size_t len,
                           uint64_t lsn, char *errmsg);

/*
 * Completes the bootstrap: requires every record up to the checkpoint, syncs the WAL, and
 * renames the work directory to final_dir (which must not exist), fsyncing both parents. The
 * namespace is then opened normally (ud_ns_open, or ud_registry_create for a registry root),
 * whose recovery replays from..checkpoint into the open-transaction table. b is freed in every
 * case. Returns 0, UD_ETXN (records missing: errmsg states the range), UD_EEXIST, UD_EIO.
 */
int ud_ns_bootstrap_finish(struct ud_ns_bootstrap *b, const char *final_dir, char *errmsg);

/* Abandons a bootstrap: closes and removes the work directory. NULL allowed. */
void ud_ns_bootstrap_abort(struct ud_ns_bootstrap *b);

/* --- maintenance and stats ------------------------------------------------------------------- */

/* Seals the active memtable and waits until every sealed memtable is flushed to LMDB; then applies
 * WAL retention. Returns 0 or the flush error. */
int ud_ns_flush(struct ud_ns *ns, char *errmsg);

struct ud_ns_stats {
    uint64_t last_lsn;
    uint64_t durable_lsn;
    uint64_t flushed_lsn;
    uint64_t ops_received; /* records applied since open */
    uint64_t ops_flushed;  /* records covered by flushes since open */
    /* Wall-clock time (ms since the Unix epoch) the last flush since open completed; 0: none. */
    int64_t last_flush_unix_ms;
    uint64_t memtable_bytes; /* every memtable's ud_memtable_bytes(): arenas and key filters */
    uint32_t sealed_memtables;
    uint32_t open_txns;
    uint32_t segment_id; /* node-local WAL position */
    uint64_t offset;
    uint64_t wal_first_lsn;
    uint32_t wal_segments;
    uint64_t flush_errors;
    uint64_t flush_txns; /* LMDB transactions written by flushes since open (a flush: 1 or more) */
    uint64_t wal_syncs;  /* fsyncs of WAL segment data since open (group commits, seals, ...) */
    uint64_t wal_sync_rounds; /* group-commit rounds since open, their fsync time, the longest */
    uint64_t wal_sync_ns;
    uint64_t wal_sync_max_ns;
    uint64_t flush_cpu_ns; /* CPU time of the flush thread since open, as of its last flush */
};
void ud_ns_stats(struct ud_ns *ns, struct ud_ns_stats *st);
/* Where the record of lsn starts in this node's WAL (ud_wal_position_of): 0, UD_EGONE, UD_ERANGE.
 */
int ud_ns_wal_position(struct ud_ns *ns, uint64_t lsn, uint32_t *segment_id, uint64_t *offset);

/*
 * Test hook for flushes interrupted halfway (every namespace of the process): after `after` more
 * flush transactions commit, every later one fails with UD_EIO before it begins, leaving the store
 * ahead of its checkpoint as a crash there would, until the hook is called again with a negative
 * value (the default: never fail).
 */
void ud_flush_fail_after(long after);

/* --- replication: what the stream and snapshot endpoints read (docs/replication.md) ----------- */

/*
 * Opens a WAL reader for a replication stream at from_lsn: it sees records once they are visible to
 * followers (durable in ALWAYS mode). Its runs are not CRC-checked here (UD_WAL_READ_TRUSTED):
 * every receiver checks every CRC. Returns as ud_wal_reader_open: 0, UD_EGONE (older than the
 * retained WAL), UD_ERANGE (beyond last + 1), UD_ENOMEM. Close it (ud_wal_reader_close) before
 * releasing the namespace reference it was opened under.
 */
int ud_ns_stream_open(struct ud_ns *ns, uint64_t from_lsn, struct ud_wal_reader **out);

/* Oldest retained LSN and newest LSN a stream may send (see ud_ns_stream_open). */
void ud_ns_stream_range(struct ud_ns *ns, uint64_t *first_lsn, uint64_t *visible_lsn);

/* Sets the one listener told (from a writing or syncing thread) when records become visible to
 * streams, NULL removes it; after the call the previous listener is not running any more
 * (ud_wal_set_listener). Owned by the HTTP server's stream hub of this namespace. */
void ud_ns_set_stream_listener(struct ud_ns *ns, void (*fn)(void *arg, uint64_t lsn), void *arg);

/* Followers' retention floor: WAL retention keeps every record >= lsn as well (0: no floor). Set by
 * the replication tracker from the in-sync followers' applied LSNs (docs/replication.md). */
void ud_ns_set_retain_floor(struct ud_ns *ns, uint64_t lsn);
uint64_t ud_ns_retain_floor(struct ud_ns *ns);

/* The committed checkpoint of the store (cp->txns malloc'd, the caller frees). 0, UD_ECORRUPT,
 * UD_ENOMEM. */
int ud_ns_checkpoint(struct ud_ns *ns, struct ud_checkpoint *cp, char *errmsg);

/* Writes a consistent LMDB copy (ud_store_copy_fd, compacted) to fd: blocks, run it on a worker
 * thread. The namespace reference must be held until it returns. 0, UD_EIO, UD_ENOSPC. */
int ud_ns_snapshot_copy(struct ud_ns *ns, int fd, char *errmsg);

/* Backups: the sealed WAL segments with ids above after into the directory open as dirfd (named
 * dir in messages; *ids their ids); a consistent LMDB copy into file path, or into file name of
 * directory dirfd with *bytes its size (ud_wal_backup_at, ud_store_backup, ud_store_backup_at). */
int ud_ns_wal_backup(struct ud_ns *ns, int dirfd, const char *dir, uint64_t after, uint32_t **ids,
                     uint32_t *copied, char *errmsg);
int ud_ns_store_backup(struct ud_ns *ns, const char *path, char *errmsg);
int ud_ns_store_backup_at(struct ud_ns *ns, int dirfd, const char *name, const char *shown,
                          uint64_t *bytes, char *errmsg);

#endif
