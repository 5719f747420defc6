/* Bump allocator over big mmap'd blocks: the memtable's only source of memory, freed all at once.
 */
#ifndef UD_CORE_ARENA_H
#define UD_CORE_ARENA_H

#include <stdatomic.h>
#include <stddef.h>

/* Size of a shared block. Allocations above UD_ARENA_LARGE get a block of their own, so that the
 * unused gap of a shared block (lost when the next allocation does not fit) stays below
 * UD_ARENA_LARGE / UD_ARENA_BLOCK = 1/16 of the memory in the worst case. */
#define UD_ARENA_BLOCK ((size_t)1 << 20)
#define UD_ARENA_LARGE (UD_ARENA_BLOCK / 16)

struct ud_arena_block;

/*
 * Each block is filled from both ends: small aligned "front" allocations (list and index nodes)
 * from the start, unaligned "back" allocations (values) from the end. Searches then walk nodes
 * packed densely in a few pages per block instead of nodes spread one per value across every page,
 * which is what makes lookups in a memtable of large values cache and TLB friendly.
 *
 * One writer thread allocates; any thread may read ud_arena_bytes(). Blocks are never returned
 * before ud_arena_release(), so pointers handed out stay valid until then.
 */
struct ud_arena {
    char *front;                   /* next free byte of the current shared block */
    char *back;                    /* end of the free gap of the current shared block */
    char *ready_front;             /* the current block is prefaulted below this... */
    char *ready_back;              /* ...and from this on */
    struct ud_arena_block *blocks; /* owned: every block, newest first */
    _Atomic size_t bytes;          /* see ud_arena_bytes() */
    /* The next shared block, mapped ahead and faulted in by the prefault thread (prefault.h)
     * while the current one fills; not yet in blocks. */
    struct ud_arena_block *spare;
    void *_Atomic spare_ready; /* the block the prefault thread last finished populating */
    size_t spare_limit;        /* see ud_arena_set_spare_limit() */
};

/* Initializes an empty arena (no memory is mapped until the first allocation). */
void ud_arena_init(struct ud_arena *a);

/*
 * Lets the arena map its next shared block ahead and have it faulted in on the prefault thread
 * while ud_arena_bytes() plus two blocks (the current one and the spare) stays within limit (the
 * owner's budget). 0, the default, never maps ahead.
 */
void ud_arena_set_spare_limit(struct ud_arena *a, size_t limit);

/*
 * Allocates front_size bytes aligned to 8 (returned) and back_size bytes with no alignment (in
 * *back, which may be NULL when back_size is 0), from the same block, the back one at a higher
 * address and less than max(UD_ARENA_BLOCK, front_size + 8) bytes after the front one. Both stay
 * owned by the arena until ud_arena_release(). Returns NULL when the system refuses memory: then
 * nothing was allocated and the arena, its byte count included, is exactly as it was.
 */
void *ud_arena_alloc(struct ud_arena *a, size_t front_size, size_t back_size, void **back);

/* Memory the arena holds, counted the way the process pays for it: blocks that are done with
 * (their lost gap included) and dedicated blocks in full, and the used ends of the current block
 * (its untouched middle is not resident). Safe to call from any thread. */
size_t ud_arena_bytes(const struct ud_arena *a);

/* Waits for a prefault of the spare in progress, then gives every block to the pool or unmaps it
 * (see ud_arena_pool_reserve()); the arena is empty again afterwards. */
void ud_arena_release(struct ud_arena *a);

/*
 * The pool of released blocks. ud_arena_release() keeps an arena's shared blocks, resident, for
 * the next arenas instead of unmapping them, so that a new memtable does not fault fresh memory in
 * (a page fault and a zeroed page per 4 KiB). The pool holds at most the sum of the bytes reserved:
 * an owner reserves what its next arena will fill (the engine: a memtable's sealing size per
 * namespace) while it may create arenas, and unreserves as much when done; the blocks beyond the
 * lowered limit are unmapped then. With nothing reserved (the default) every block is unmapped.
 * A pooled block is handed out as it was left: every byte an arena hands out is written by its
 * caller before use, so old contents are never read (under ASan, pooled payloads are poisoned).
 */
void ud_arena_pool_reserve(size_t bytes);
void ud_arena_pool_unreserve(size_t bytes);
/* Bytes the pool holds now (mapped, and counted in ud_arena_mapped_total()). */
size_t ud_arena_pool_bytes(void);

/* Bytes mapped by every arena in the process, the pool included: lets tests check that release
 * returns everything. */
size_t ud_arena_mapped_total(void);

/*
 * Test hook for out-of-memory paths: after `after` more successful block mappings, every mapping
 * fails until the hook is called again with a negative value (the default: never fail).
 */
void ud_arena_fail_after(long after);

#endif
