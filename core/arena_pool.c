/*
 * The pool of released arena blocks (see arena.h): a flushed memtable's shared blocks, kept
 * resident for the next memtables instead of unmapped. Faulting fresh anonymous memory in costs
 * the kernel a fault, a zeroed page and a memcg charge per 4 KiB (12 % of the writer's CPU under a
 * SET load, in madvise(MADV_POPULATE_WRITE)); a pooled block costs a mutex.
 *
 * The pool holds at most its limit, the sum of what the owners reserved (the engine reserves one
 * memtable's sealing size per namespace: what its next memtable will fill). The process's arena
 * memory then never exceeds what it held before without a pool: a block leaves the pool only for
 * an arena, and a block is mapped fresh only while the pool is empty, that is, while every mapped
 * block belongs to a live arena.
 */
#include "core/arena_int.h"

#include <pthread.h>
#include <stdatomic.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct ud_arena_block *blocks; /* under lock, linked by next */
static size_t bytes, limit;           /* under lock */
static _Atomic size_t pooled, room;   /* bytes and limit - bytes, for readers without the lock */

/* Under lock: the figures readers without the lock see. */
static void publish(void)
{
    atomic_store_explicit(&pooled, bytes, memory_order_relaxed);
    atomic_store_explicit(&room, bytes < limit ? limit - bytes : 0, memory_order_relaxed);
}

/* Unmaps a list of blocks: outside the lock, munmap takes the process's mmap lock. */
static void unmap_list(struct ud_arena_block *list)
{
    while (list != NULL) {
        struct ud_arena_block *next = list->next;
        ud_arena_block_unmap(list);
        list = next;
    }
}

/* Under lock: unlinks blocks until the pool fits its limit; returns them. */
static struct ud_arena_block *trim(void)
{
    struct ud_arena_block *excess = NULL;
    while (bytes > limit) {
        struct ud_arena_block *b = blocks;
        blocks = b->next;
        bytes -= b->size;
        b->next = excess;
        excess = b;
    }
    publish();
    return excess;
}

void ud_arena_pool_reserve(size_t n)
{
    pthread_mutex_lock(&lock);
    limit += n;
    publish();
    pthread_mutex_unlock(&lock);
}

void ud_arena_pool_unreserve(size_t n)
{
    pthread_mutex_lock(&lock);
    limit -= n < limit ? n : limit;
    struct ud_arena_block *excess = trim();
    pthread_mutex_unlock(&lock);
    unmap_list(excess);
}

size_t ud_arena_pool_bytes(void)
{
    return atomic_load_explicit(&pooled, memory_order_relaxed);
}

size_t ud_arena_pool_room(void)
{
    return atomic_load_explicit(&room, memory_order_relaxed);
}

bool ud_arena_pool_nonempty(void)
{
    return ud_arena_pool_bytes() > 0;
}

struct ud_arena_block *ud_arena_pool_take(void)
{
    if (!ud_arena_pool_nonempty())
        return NULL;
    pthread_mutex_lock(&lock);
    struct ud_arena_block *b = blocks;
    if (b != NULL) {
        blocks = b->next;
        bytes -= b->size;
        publish();
        b->next = NULL;
    }
    pthread_mutex_unlock(&lock);
    return b;
}

void ud_arena_pool_put(struct ud_arena_block *list)
{
    struct ud_arena_block *rejected = NULL;
    pthread_mutex_lock(&lock);
    while (list != NULL) {
        struct ud_arena_block *b = list;
        list = b->next;
        /* Only shared blocks: an arena takes nothing else from the pool. */
        if (b->size == UD_ARENA_BLOCK && bytes + b->size <= limit) {
            /* The next arena writes every byte it hands out before publishing it; until then
             * the old contents are unreachable, and ASan reports any read of them. */
            POISON((char *)b + HEADER_SIZE, b->size - HEADER_SIZE);
            b->next = blocks;
            blocks = b;
            bytes += b->size;
        } else {
            b->next = rejected;
            rejected = b;
        }
    }
    publish();
    pthread_mutex_unlock(&lock);
    unmap_list(rejected);
}
