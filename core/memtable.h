/*
 * Memtable: an in-memory ordered map of recent writes (a linked list in an arena, searched
 * through a B+tree index), one per namespace generation. Entries are ordered by (space, key
 * bytes, lsn descending), and a key may hold several versions: a lookup returns the newest. No
 * version is ever removed or modified, which lets readers run without locks while one writer
 * inserts.
 *
 * Threads: exactly one inserting thread at a time (the engine's apply lock); any number of
 * concurrent readers (get, iterators) with no lock. Memory is freed only when the last reference
 * is dropped.
 */
#ifndef UD_CORE_MEMTABLE_H
#define UD_CORE_MEMTABLE_H

#include <stddef.h>
#include <stdint.h>

enum ud_mem_kind {
    UD_MEM_VALUE = 0,         /* value is the stored bytes (KV value, row column value) */
    UD_MEM_TOMBSTONE = 1,     /* key deleted; value empty */
    UD_MEM_ROW_TOMBSTONE = 2, /* row space, key = row prefix: every column older than lsn deleted */
    UD_MEM_LOB = 3,           /* LOB space: value is the LOB manifest */
};

struct ud_mem_entry {
    uint8_t space; /* enum ud_space */
    uint8_t kind;  /* enum ud_mem_kind */
    uint64_t lsn;
    const uint8_t *key; /* views into the memtable: valid while a reference is held */
    uint32_t key_len;
    const uint8_t *value;
    uint32_t value_len;
};

struct ud_memtable;

/*
 * Creates an empty memtable with one reference. budget: the size at which the owner seals it, or
 * 0 for none. It sizes the key filter (memtable_filter.h) and lets the memtable fault its next
 * arena block in ahead on the prefault thread while its bytes stay within the budget (see
 * ud_arena_set_spare_limit()); without a budget the filter is the largest and nothing is mapped
 * ahead. Returns 0 or UD_ENOMEM.
 */
int ud_memtable_create(struct ud_memtable **out, size_t budget);
/* Bytes of the key filter of a memtable created with `budget`: what an empty one holds. */
size_t ud_memtable_filter_bytes(size_t budget);
void ud_memtable_ref(struct ud_memtable *m);
/* Drops a reference; the last one frees all memory (atomic, any thread). */
void ud_memtable_unref(struct ud_memtable *m);

/*
 * Inserts a version (copies key and value into the arena). Single writer. A reader that starts
 * after this returns sees the version. Returns 0 or UD_ENOMEM (the memtable is unchanged).
 */
int ud_memtable_put(struct ud_memtable *m, uint8_t space, const void *key, size_t key_len,
                    uint64_t lsn, uint8_t kind, const void *value, size_t value_len);

/* Newest version of (space, key): 0 and *e filled, or UD_ENOTFOUND. */
int ud_memtable_get(struct ud_memtable *m, uint8_t space, const void *key, size_t key_len,
                    struct ud_mem_entry *e);

/* Bytes of memory the memtable holds: its arena (keys, values, nodes; see ud_arena_bytes()) and
 * its key filter. What the engine's budget counts. */
size_t ud_memtable_bytes(const struct ud_memtable *m);
uint64_t ud_memtable_count(const struct ud_memtable *m);   /* versions inserted */
uint64_t ud_memtable_min_lsn(const struct ud_memtable *m); /* 0 when empty */
uint64_t ud_memtable_max_lsn(const struct ud_memtable *m); /* 0 when empty */

/* Iterator over every version in order (space, key, lsn desc). Holds no reference itself: the
 * caller keeps the memtable referenced while iterating. */
struct ud_memtable_iter {
    struct ud_memtable *m;
    void *node;
};
void ud_memtable_iter_init(struct ud_memtable_iter *it, struct ud_memtable *m);
/* Positions at the first version >= (space, key, newest); key_len 0 = start of the space. */
void ud_memtable_iter_seek(struct ud_memtable_iter *it, uint8_t space, const void *key,
                           size_t key_len);
void ud_memtable_iter_first(struct ud_memtable_iter *it);
int ud_memtable_iter_valid(const struct ud_memtable_iter *it);
void ud_memtable_iter_next(struct ud_memtable_iter *it);
/* Skips the remaining (older) versions of the current key. */
void ud_memtable_iter_next_key(struct ud_memtable_iter *it);
void ud_memtable_iter_entry(const struct ud_memtable_iter *it, struct ud_mem_entry *e);

#endif
