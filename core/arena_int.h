/* Arena internals shared by the allocator (arena.c) and the pool of released blocks
 * (arena_pool.c). */
#ifndef UD_CORE_ARENA_INT_H
#define UD_CORE_ARENA_INT_H

#include "core/arena.h"

#include <stdbool.h>
#include <stddef.h>

/*
 * AddressSanitizer does not know about memory we map ourselves: poison each block when it is
 * mapped (or pooled) and unpoison every allocation, so that an overrun of a key or value inside
 * the arena, or a read of a pooled block, is reported like a heap overflow or a use after free.
 */
#if defined(__SANITIZE_ADDRESS__)
#define UD_ARENA_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UD_ARENA_ASAN 1
#endif
#endif
#ifdef UD_ARENA_ASAN
#include <sanitizer/asan_interface.h>
#define POISON(p, n)   ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define POISON(p, n)   ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

struct ud_arena_block {
    struct ud_arena_block *next;
    size_t size; /* mapped length, header included */
};

/* The header keeps the payload 16-byte aligned, more than any node needs. */
#define HEADER_SIZE ((sizeof(struct ud_arena_block) + 15) & ~(size_t)15)

/* Unmaps a block and takes it off ud_arena_mapped_total(). */
void ud_arena_block_unmap(struct ud_arena_block *b);

/* A shared block from the pool (resident, its payload poisoned), or NULL when the pool is
 * empty. */
struct ud_arena_block *ud_arena_pool_take(void);
/* Whether the pool holds a block now, and how many more bytes it would keep: hints, another
 * thread may change either first. */
bool ud_arena_pool_nonempty(void);
size_t ud_arena_pool_room(void);
/* Keeps the blocks of a released arena (a list linked by next) within the pool's limit and
 * unmaps the rest. */
void ud_arena_pool_put(struct ud_arena_block *list);

#endif
