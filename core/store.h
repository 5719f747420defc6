/*
 * Store: the namespace's LMDB environment (docs/format-lmdb.md). Sub-databases: `kv`, `row`,
 * `lob` (manifests), `lob_chunk` (chunk bytes by the LSN of the chunk record) and `meta`
 * (format version, checkpoint). This is the only file that includes <lmdb.h>.
 *
 * Readers take snapshots (MVCC, lock-free in LMDB). One writer at a time: the flush thread.
 * Snapshots must be short-lived (one request): growing the map waits until none is open.
 */
#ifndef UD_CORE_STORE_H
#define UD_CORE_STORE_H

#include <stddef.h>
#include <stdint.h>

#define UD_STORE_FORMAT_VERSION 1

struct ud_store_options {
    const char *dir;       /* created if missing */
    uint64_t map_size;     /* initial map size; 0: 1 GiB. Grown (doubled) when full. */
    uint64_t max_map_size; /* 0: no limit */
    /* Stamped into a new store's meta (docs/format-lmdb.md "meta"): which namespace of its name
     * this is, the same on every node that holds it; 0: none. An existing store keeps its own. */
    uint64_t incarnation;
};

/* The checkpoint: written in the same LMDB transaction as the data it describes. */
struct ud_checkpoint_txn {
    uint8_t id[16];
    uint64_t first_lsn; /* LSN of its BEGIN record */
};

struct ud_checkpoint {
    uint64_t flushed_lsn; /* every record <= flushed_lsn is reflected in the store */
    uint32_t txn_count;   /* transactions open at flushed_lsn */
    struct ud_checkpoint_txn *txns;
    /* Read only (ud_store_read_checkpoint): a flush stopped halfway left versions of records up
     * to this LSN in the store, past flushed_lsn; 0 when the store holds nothing past it. */
    uint64_t ahead_lsn;
};

struct ud_store;
struct ud_store_snap;
struct ud_store_cursor;
struct ud_store_batch;

/* Opens or creates the environment (MDB_NOTLS | MDB_NORDAHEAD, docs/format-lmdb.md). Refuses a
 * store whose format version is not UD_STORE_FORMAT_VERSION (UD_EVERSION). Returns 0, UD_EIO,
 * UD_ENOSPC, UD_ECORRUPT, UD_EVERSION. */
int ud_store_open(const struct ud_store_options *opts, struct ud_store **out, char *errmsg);
void ud_store_close(struct ud_store *s);
/* The store's incarnation (ud_store_options.incarnation when it was created; 0: none). Copies
 * (ud_store_copy, snapshots) carry it with the meta database. */
uint64_t ud_store_incarnation(const struct ud_store *s);
/* Gives a store without an incarnation (0) this one, durably; one that has one keeps it.
 * Returns 0, UD_EIO, UD_ENOSPC. */
int ud_store_stamp_incarnation(struct ud_store *s, uint64_t incarnation, char *errmsg);

/* Reads the last committed checkpoint. A new store has flushed_lsn 0 and no transactions.
 * cp->txns is malloc'd (caller frees; NULL when txn_count is 0). Returns 0, UD_ECORRUPT, UD_ENOMEM.
 */
int ud_store_read_checkpoint(struct ud_store *s, struct ud_checkpoint *cp, char *errmsg);

/* --- reading ---------------------------------------------------------------------------------- */

/*
 * Begins a read snapshot: it sees every write that ud_store_write returned before the call.
 * Returns 0, UD_ENOMEM, UD_EBUSY (all reader slots taken) or UD_EIO.
 * Begin and end it on the same thread (it holds a read lock against map growth), never call
 * ud_store_write while holding one, and close its cursors before ending it (later cursor calls
 * return UD_ECLOSED). Release with ud_store_snap_end.
 */
int ud_store_snap_begin(struct ud_store *s, struct ud_store_snap **out);
void ud_store_snap_end(struct ud_store_snap *snap);

/* Looks up key in space (enum ud_space). *val is a view valid until ud_store_snap_end.
 * Returns 0, UD_ENOTFOUND, UD_EIO. */
int ud_store_get(struct ud_store_snap *snap, int space, const void *key, size_t key_len,
                 const uint8_t **val, size_t *val_len);

/* Chunk bytes of a flushed LOB, by the LSN of its chunk record. Same contract as ud_store_get. */
int ud_store_lob_chunk_get(struct ud_store_snap *snap, uint64_t chunk_lsn, const uint8_t **data,
                           size_t *len);

/* Ordered cursor over one space. Views are valid until the next move or snap end. */
int ud_store_cursor_open(struct ud_store_snap *snap, int space, struct ud_store_cursor **out);
/* Positions at the first key >= key (key_len 0: first key). 0 or UD_ENOTFOUND (no such key). */
int ud_store_cursor_seek(struct ud_store_cursor *c, const void *key, size_t key_len);
/* Moves to the next key. 0 or UD_ENOTFOUND at the end. */
int ud_store_cursor_next(struct ud_store_cursor *c);
/* Current key and value. 0 or UD_ENOTFOUND when not positioned. */
int ud_store_cursor_get(struct ud_store_cursor *c, const uint8_t **key, size_t *key_len,
                        const uint8_t **val, size_t *val_len);
void ud_store_cursor_close(struct ud_store_cursor *c);

/* --- writing (one writer) --------------------------------------------------------------------- */

/*
 * Runs fn inside one LMDB write transaction and commits it (durably: LMDB syncs at commit).
 * Every page the transaction dirties is a malloc'd copy until the commit (LMDB keeps the buffers
 * for later transactions), so callers bound what one transaction writes.
 * If the map is full, the transaction is aborted, the map doubled (waiting for open snapshots to
 * end) and fn run again from the start, so fn must only depend on its inputs. A non-zero return
 * from fn aborts and is returned. Returns 0, fn's code, UD_ENOSPC (disk or max_map_size), UD_EIO.
 */
typedef int (*ud_store_write_fn)(struct ud_store_batch *b, void *arg);
int ud_store_write(struct ud_store *s, ud_store_write_fn fn, void *arg, char *errmsg);

int ud_store_batch_put(struct ud_store_batch *b, int space, const void *key, size_t key_len,
                       const void *val, size_t val_len);
/* Deleting an absent key is not an error. */
int ud_store_batch_del(struct ud_store_batch *b, int space, const void *key, size_t key_len);
/* Deletes every key of space starting with prefix. */
int ud_store_batch_del_prefix(struct ud_store_batch *b, int space, const void *prefix,
                              size_t prefix_len);
/* Reads inside the write transaction (sees its own writes). View valid until the next write. */
int ud_store_batch_get(struct ud_store_batch *b, int space, const void *key, size_t key_len,
                       const uint8_t **val, size_t *val_len);
int ud_store_batch_lob_chunk_put(struct ud_store_batch *b, uint64_t chunk_lsn, const void *data,
                                 size_t len);
int ud_store_batch_lob_chunk_del(struct ud_store_batch *b, uint64_t chunk_lsn);
/* Also drops the flush_ahead marker once flushed_lsn reaches it. */
int ud_store_batch_set_checkpoint(struct ud_store_batch *b, const struct ud_checkpoint *cp);
/* Records that the store may from this transaction on hold versions of records up to lsn, past
 * its checkpoint (a flush's first transaction of several); keeps a larger recorded LSN. */
int ud_store_batch_set_ahead(struct ud_store_batch *b, uint64_t lsn);

/*
 * A write group: several ud_store_write transactions that copies of the environment
 * (ud_store_backup, ud_store_copy_fd) see all or none of, as the engine's flush writes one
 * memtable in several transactions with the checkpoint in the last (readers of the store alone see
 * the group's intermediate commits; the engine's readers also see the memtable being flushed).
 * Returns 1 when the group is open: a copy starting meanwhile waits for ud_store_group_end. Returns
 * 0 when a copy is in progress: the caller then writes everything in one transaction, and must not
 * call ud_store_group_end. One group at a time (the writer's).
 */
int ud_store_group_begin(struct ud_store *s);
void ud_store_group_end(struct ud_store *s);

/* How long a copy (ud_store_backup, ud_store_copy_fd) waits for an open write group before it
 * fails with UD_EBUSY: a flush that failed halfway keeps its group open until a retry succeeds. */
#define UD_STORE_COPY_WAIT_MS 30000
/* Process-wide; for tests. */
void ud_store_set_copy_wait_ms(uint64_t ms);

/* Consistent copy of the environment into the file path (compacted). 0, UD_ENOSPC, UD_EIO, and
 * UD_EBUSY or UD_ECLOSED before it starts: a write group stayed open UD_STORE_COPY_WAIT_MS, or the
 * store is closing (ud_store_close wakes copies waiting for a group; never close it under a
 * running copy). */
int ud_store_backup(struct ud_store *s, const char *path, char *errmsg);
/* The longest backup file name: the copy is written under the name plus a temporary suffix
 * ("~tmp.{pid}.{n}", at most 36 bytes), which must fit in one directory entry (255 bytes). */
#define UD_STORE_BACKUP_NAME_MAX 219
/* The same into file name of directory dirfd (looked up from dirfd only, never through a symbolic
 * link; errmsg names it as shown), with *bytes (may be NULL) the size of the copy renamed there.
 * UD_EINVAL when name is longer than UD_STORE_BACKUP_NAME_MAX. */
int ud_store_backup_at(struct ud_store *s, int dirfd, const char *name, const char *shown,
                       uint64_t *bytes, char *errmsg);

/*
 * Writes a consistent copy of the environment (one LMDB data file, the meta sub-database with its
 * checkpoint included) to fd, sequentially, so fd may be a pipe or a socket; nothing is synced.
 * compact: MDB_CP_COMPACT (free pages omitted). Blocks for the whole copy: run it on a worker
 * thread. fd stays open (the caller's). Returns 0, UD_EIO (a write failed: errmsg has the error,
 * EPIPE when the reading end went away), UD_ENOSPC, UD_EBUSY, UD_ECLOSED (as ud_store_backup).
 */
int ud_store_copy_fd(struct ud_store *s, int fd, int compact, char *errmsg);

struct ud_store_stats {
    uint64_t map_size;
    uint64_t used_bytes; /* pages in use * page size */
    uint64_t kv_entries;
    uint64_t row_entries; /* columns */
    uint64_t lob_entries;
    uint32_t copies_waiting;   /* copies waiting for a write group to end */
    uint64_t writeback_rounds; /* writebacks started beside commits (core/writeback.h) */
};
void ud_store_stats(struct ud_store *s, struct ud_store_stats *st);

#endif
