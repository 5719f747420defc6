/* Engine internals shared by the core/engine_*.c files: the namespace object and its helpers. */
#ifndef UD_CORE_ENGINE_INT_H
#define UD_CORE_ENGINE_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/engine.h"
#include "core/err.h"
#include "core/memtable.h"
#include "core/store.h"
#include "core/wal.h"

#define UD_ENGINE_LOG "engine"

/* Defaults of struct ud_engine_options. */
#define UD_NS_DEFAULT_MEMTABLE_BYTES (256u << 20)
#define UD_NS_DEFAULT_IDLE_FLUSH_MS  10000
#define UD_NS_DEFAULT_MAX_SEALED     2
#define UD_NS_DEFAULT_TXN_MAX_BYTES  (64ull << 20)
#define UD_NS_ADMIT_TIMEOUT_MS       10000

/* LOB manifest (docs/format-lmdb.md "LOB manifest"). */
#define UD_LOB_MANIFEST_VERSION 1
#define UD_LOB_MANIFEST_HEADER  24
#define UD_LOB_MANIFEST_CHUNK   12
#define UD_LOB_MAX_CHUNK        (1u << 20)

/* One PREPARE record of a KV or row transaction: a copy of its entries, owned by the txn. */
struct ud_txn_part {
    uint8_t *entries; /* owned */
    size_t len;
    uint32_t count;
};

/* A LOB chunk held by an open transaction: where its bytes are, never the bytes. */
struct ud_txn_chunk {
    uint64_t lsn;
    uint64_t offset;
    uint32_t len;
};

/* An open transaction (ARCHITECTURE.md section 6). Lives only under the apply lock. */
struct ud_txn {
    uint8_t id[UD_TXN_ID_SIZE];
    uint8_t op;   /* enum ud_op of its BEGIN */
    uint8_t type; /* enum ud_entry_type of its BEGIN */
    uint64_t begin_lsn;
    uint64_t last_lsn; /* LSN of its newest record (BEGIN or PREPARE): ud_ns_txn_info */
    uint64_t bytes;    /* KV/row: entry bytes held; LOB: object size so far */
    struct ud_txn_part *parts;
    size_t nparts, cap_parts;
    uint8_t *lob_key; /* owned; NULL until the first LOB part */
    uint16_t lob_key_len;
    struct ud_txn_chunk *chunks;
    size_t nchunks, cap_chunks;
};

/* A memtable waiting for (or in) its flush. */
struct ud_sealed {
    struct ud_memtable *mem; /* one reference owned by the sealed list */
    uint64_t last_lsn;       /* the namespace's last LSN when sealed: the checkpoint it writes */
    struct ud_checkpoint_txn *txns; /* owned: transactions open at last_lsn */
    uint32_t ntxns;
};

/* How ud_ns_apply_core treats a record. */
enum ud_apply_mode {
    UD_APPLY_LIVE = 0,   /* validate, stamp the LSN, append to the WAL, apply */
    UD_APPLY_REPLAY,     /* a WAL record after the checkpoint: validate and apply, no append */
    UD_APPLY_REPLAY_TXN, /* a WAL record at or before the checkpoint: only rebuilds the parts
                            of transactions that were open at the checkpoint */
};

struct ud_ns {
    struct ud_engine_options opts; /* defaults filled in; dir and name point to the copies below */
    char *dir;                     /* owned */
    char *name;                    /* owned */
    int lock_fd;
    struct ud_wal *wal;
    struct ud_store *store;

    /* --- apply state: under apply_lock -------------------------------------------------------- */
    pthread_mutex_t apply_lock;
    uint64_t last_lsn; /* also read without the lock (atomic loads) */
    /* Newest LSN whose memtable inserts are all done: readers ignore newer versions, so the
     * writes of one record (a batch, a commit) appear together. Atomic, release/acquire. */
    uint64_t visible_lsn;
    uint64_t sealed_upto; /* last_lsn at the most recent sealing (or the checkpoint at open) */
    /* The active memtable is sealed at this size (its key filter included): ud_ns_seal_bytes(),
     * a little below half the memtable budget, so that one memtable fills while the previous one
     * is flushed and the two, with the next one's filter, stay within the budget. */
    size_t seal_bytes;
    bool prefaulting; /* holds a user of the prefault thread (prefault.h) */
    /* Reserved pool_bytes of the arena pool (arena.h). Under apply_lock once open: an idle
     * namespace returns the reservation and its next seal takes it again. */
    bool pooling;
    /* Reserved in the arena pool: half the memtable budget, which holds every block a memtable
     * of seal_bytes fills. The pool keeps whole blocks: the seal size, a filter short of half,
     * would leave each memtable's last block to be faulted in fresh. */
    size_t pool_bytes;
    /* The record being applied is in a WAL frame reserved for it (ud_ns_apply_filled): logging
     * it commits that frame rather than appending a copy. */
    bool wal_reserved;
    int failed;           /* a memtable insert failed after its WAL append: reopen to recover */
    struct ud_txn **txns; /* open transactions, unordered */
    size_t ntxns, cap_txns;
    /* Transactions open at the checkpoint being recovered (REPLAY_TXN records); open only. */
    const struct ud_checkpoint *replay_cp;
    uint64_t ops_received; /* atomic */
    uint32_t open_txns;    /* atomic copy of ntxns for stats */

    uint64_t hlc;          /* atomic: last HLC stamped by the convenience writes */
    uint64_t retain_floor; /* atomic: followers' retention floor (ud_ns_set_retain_floor), 0 none */
    /* Raft position (raft_index, raft_pos) of the newest record in the WAL: the FSM skips records
     * at or before it when raft replays its log. Under apply_lock. */
    uint64_t raft_index;
    uint32_t raft_pos;

    /* --- read view and flush state: under view_lock ------------------------------------------- */
    pthread_mutex_t view_lock;
    pthread_cond_t flush_cv; /* wakes the flush thread */
    pthread_cond_t done_cv;  /* a flush finished or failed: admission and ud_ns_flush waiters */
    struct ud_memtable *active;
    struct ud_sealed *sealed; /* oldest first */
    size_t nsealed, cap_sealed;
    uint64_t flushed_lsn;
    uint64_t flush_errors;
    uint64_t flush_failures_gen; /* counts failed attempts, to detect a failure while waiting */
    int flush_err;
    char flush_errmsg[UD_ERRMSG_SIZE];
    bool flush_failing; /* the latest flush attempt failed (flush_errmsg says why) */
    uint64_t ops_flushed;
    int64_t last_flush_unix_ms; /* wall clock of the last completed flush; 0: none since open */
    uint64_t flush_txns;   /* LMDB transactions of flushes since open (__atomic: stats read it) */
    uint64_t flush_cpu_ns; /* the flush thread's CPU time after its last flush (__atomic) */
    /* (flush thread) A flush committed some of its transactions but not yet the last: the store
     * is ahead of its checkpoint and the store's write group stays open until that flush ends. */
    int store_ahead;
    /* The store may hold versions of records up to this LSN past its checkpoint (its flush_ahead
     * marker, from a flush stopped halfway before a restart): the write group stays open until a
     * flush's checkpoint reaches it. (flush thread; set at open) */
    uint64_t ahead_upto;
    int stop;
    int flush_started;
    pthread_t flush_thread;
};

/* --- engine.c --------------------------------------------------------------------------------- */
/* Writes a printable, bounded rendering of key (binary bytes as \xNN) into out. */
const char *ud_ns_fmt_key(char *out, size_t size, const void *key, size_t len);
/* 32 lowercase hex characters + NUL. */
const char *ud_ns_fmt_txn_id(char out[33], const uint8_t id[UD_TXN_ID_SIZE]);
/* Monotonic HLC stamp for a record built by the convenience writes: max(last + 1, wall ns). */
uint64_t ud_ns_next_hlc(struct ud_ns *ns);
void ud_ns_observe_hlc(struct ud_ns *ns, uint64_t hlc);

/* --- engine_encode.c -------------------------------------------------------------------------- */
/* The checks of ud_engine_encode_kv (same errors); *len is the size of the record it encodes. */
int ud_engine_size_kv(enum ud_op op, const struct ud_kv *items, size_t n, size_t *len,
                      char *errmsg);
/* ud_engine_encode_kv into the len bytes at dst, len from ud_engine_size_kv (which must have
 * accepted the items): the same bytes. */
void ud_engine_encode_kv_in(enum ud_op op, const struct ud_kv *items, size_t n, uint64_t hlc,
                            uint8_t *dst, size_t len);

/* --- engine_apply.c --------------------------------------------------------------------------- */
/* The apply function; the caller holds apply_lock. stamp is the record's writable buffer in LIVE
 * mode (the LSN is written there) and NULL when replaying. */
int ud_ns_apply_core(struct ud_ns *ns, enum ud_apply_mode mode, const uint8_t *record, size_t len,
                     uint8_t *stamp, uint64_t *lsn, char *errmsg);
/*
 * ud_ns_apply for a record written straight into its WAL frame, not copied there: fill(arg, dst)
 * writes the record's len bytes at dst, the frame ud_wal_reserve made room for; the record is
 * validated and applied there, and its frame appended (or erased when the record is rejected).
 * The WAL's append lock is held from the fill until then. Takes apply_lock.
 */
int ud_ns_apply_filled(struct ud_ns *ns, size_t len, void (*fill)(void *arg, uint8_t *dst),
                       void *arg, uint64_t *lsn, char *errmsg);
/* Model limit checks shared with the convenience writes (errmsg states the limit). */
int ud_ns_check_kv_key(size_t key_len, char *errmsg);
int ud_ns_check_lob_key(size_t key_len, char *errmsg);
int ud_ns_check_row_key(const uint8_t *row, size_t row_len, size_t column_len, char *errmsg);
struct ud_txn *ud_ns_txn_find(struct ud_ns *ns, const uint8_t id[UD_TXN_ID_SIZE]);
void ud_ns_txn_free(struct ud_txn *t);
void ud_ns_txns_free_all(struct ud_ns *ns);

/* --- engine_read.c ---------------------------------------------------------------------------- */
/* A reader's view: the active memtable then the sealed ones, newest first, each referenced. */
struct ud_view {
    struct ud_memtable **mems;
    size_t n;
    uint64_t lsn; /* memtable versions above it are not visible yet */
    struct ud_memtable *inl[8];
};
int ud_view_acquire(struct ud_ns *ns, struct ud_view *v);
void ud_view_release(struct ud_view *v);
/* Existence checks used by UPDATE transactions (apply path). 1 exists, 0 absent, or -UD_E*.
 * ud_ns_kv_exists is public (engine.h). */
int ud_ns_row_exists(struct ud_ns *ns, const uint8_t *row, size_t row_len);
int ud_ns_lob_exists(struct ud_ns *ns, const uint8_t *key, size_t key_len);
/* Copies the visible LOB manifest of key into out: 0, UD_ENOTFOUND, UD_EIO, UD_ENOMEM. */
int ud_ns_lob_manifest_get(struct ud_ns *ns, const uint8_t *key, size_t key_len,
                           struct ud_buf *out);

/* --- engine_lob.c ----------------------------------------------------------------------------- */
struct ud_lob_manifest {
    uint64_t size;
    uint64_t commit_lsn;
    uint32_t count;
    const uint8_t *chunks; /* count * 12 bytes: u64le lsn | u32le len */
};
/* Validates and views a manifest. 0 or UD_ECORRUPT. */
int ud_lob_manifest_parse(const uint8_t *buf, size_t len, struct ud_lob_manifest *m);
void ud_lob_manifest_chunk(const struct ud_lob_manifest *m, uint32_t i, uint64_t *lsn,
                           uint32_t *len);
/* Reads the chunk bytes of chunk record lsn from the WAL (a view valid while *reader is open;
 * the caller closes it). 0, UD_EGONE (retained away), UD_ECORRUPT, UD_EIO, UD_ENOMEM. */
int ud_lob_chunk_from_wal(struct ud_ns *ns, uint64_t lsn, uint32_t len,
                          struct ud_wal_reader **reader, const uint8_t **data, char *errmsg);

/* --- engine_flush.c --------------------------------------------------------------------------- */
/* The size at which a namespace with this memtable budget seals its active memtable. */
size_t ud_ns_seal_bytes(size_t budget);
/* Seals the active memtable (apply_lock held). 0 or UD_ENOMEM (the active one stays). */
int ud_ns_seal_locked(struct ud_ns *ns);
int ud_ns_flush_start(struct ud_ns *ns, char *errmsg);
void ud_ns_flush_stop(struct ud_ns *ns);
/* Waits (bounded) while max_sealed memtables wait for the flush; used by replay. */
void ud_ns_throttle(struct ud_ns *ns);

/* --- engine_raft.c ---------------------------------------------------------------------------- */
/* Loads raft_index/raft_pos from the newest record of the WAL (open, after replay). */
int ud_ns_raft_position_load(struct ud_ns *ns, char *errmsg);

/* --- engine_recover.c ------------------------------------------------------------------------- */
int ud_ns_replay(struct ud_ns *ns, const struct ud_checkpoint *cp, char *errmsg);

#endif
