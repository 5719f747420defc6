/* Bump allocator over big mmap'd blocks, filled from both ends (see arena.h). */
#include "core/arena.h"

#include "core/arena_int.h"
#include "core/prefault.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

/*
 * Fresh pages are faulted in ahead of the bump pointers, PREFAULT bytes at a time, with one
 * madvise(MADV_POPULATE_WRITE) call instead of one page fault per 4 KiB. Page faults are slow
 * here (a VM): filling a memtable with 1 KB values measured ~600 ns per insert faulting page by
 * page and ~440 ns with the block prefaulted. The chunk stays small so that the memory the
 * process holds stays within 2 * PREFAULT of what ud_arena_bytes() reports.
 */
#define PREFAULT ((size_t)64 << 10)

static _Atomic size_t mapped_total;
static _Atomic long fail_countdown = -1;

void ud_arena_fail_after(long after)
{
    atomic_store(&fail_countdown, after < 0 ? -1 : after);
}

size_t ud_arena_mapped_total(void)
{
    return atomic_load_explicit(&mapped_total, memory_order_relaxed);
}

/* Asked for every block: once per mebibyte is cheap, and no shared cache to race on. */
static size_t page_size(void)
{
    long ps = sysconf(_SC_PAGESIZE);
    return ps > 0 ? (size_t)ps : 4096;
}

/*
 * Shared blocks are carved from reservations of RESERVE bytes, one mmap for many blocks. Each
 * mmap takes the process's mmap lock for writing, and the writer maps a block per mebibyte it
 * fills: it slept there behind the background threads' populates, which hold the lock for reading
 * (the WAL's helper and the prefault thread; on a busy machine a reader may also be preempted
 * while holding it): 0.5-1.0 s of sleep per million 1 KiB puts, up to a fifth of put-none's wall
 * time (docs/benchmarks.md, "put-none (issue 2, 2026-11-22)"). A block is still unmapped on its
 * own (munmap of part of a mapping splits it); the untouched rest of a reservation is address
 * space, not memory, and ud_arena_mapped_total() counts blocks as they are handed out.
 */
#define RESERVE ((size_t)32 << 20)

static pthread_mutex_t reserve_lock = PTHREAD_MUTEX_INITIALIZER;
static char *reserve_next; /* under reserve_lock */
static size_t reserve_left;

/* size bytes of fresh anonymous memory, or MAP_FAILED. */
static void *map_memory(size_t size, int populate)
{
    if (size != UD_ARENA_BLOCK || populate)
        return mmap(NULL, size, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS | (populate ? MAP_POPULATE : 0), -1, 0);
    pthread_mutex_lock(&reserve_lock);
    if (reserve_left < size) {
        void *p = mmap(NULL, RESERVE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) {
            pthread_mutex_unlock(&reserve_lock);
            return MAP_FAILED;
        }
        /* With transparent huge pages set to "always", a fault in one block could bring in a
         * 2 MiB page that also covers the next, not yet handed out: resident memory beyond
         * ud_arena_mapped_total(), and a huge page split at each block's munmap. */
        (void)madvise(p, RESERVE, MADV_NOHUGEPAGE);
        reserve_next = p;
        reserve_left = RESERVE;
    }
    void *p = reserve_next;
    reserve_next += size;
    reserve_left -= size;
    pthread_mutex_unlock(&reserve_lock);
    return p;
}

/*
 * mmap rather than malloc: a 1 MiB malloc is served from the brk heap once glibc's dynamic mmap
 * threshold has grown past it, and freed heap memory below a live allocation is never returned to
 * the system, so a process cycling through memtables would keep their peak RSS for good.
 */
static struct ud_arena_block *block_map(size_t payload, int populate)
{
    long left = atomic_load_explicit(&fail_countdown, memory_order_relaxed);
    if (left == 0)
        return NULL;
    if (left > 0)
        atomic_fetch_sub_explicit(&fail_countdown, 1, memory_order_relaxed);

    size_t ps = page_size();
    if (payload > SIZE_MAX - HEADER_SIZE - ps)
        return NULL;
    size_t size = (HEADER_SIZE + payload + ps - 1) & ~(ps - 1);
    void *p = map_memory(size, populate);
    if (p == MAP_FAILED)
        return NULL;
    struct ud_arena_block *b = p;
    b->size = size;
    b->next = NULL;
    POISON((char *)p + HEADER_SIZE, size - HEADER_SIZE);
    atomic_fetch_add_explicit(&mapped_total, size, memory_order_relaxed);
    return b;
}

void ud_arena_block_unmap(struct ud_arena_block *b)
{
    size_t size = b->size;
    /* Clear the shadow: the kernel may hand these addresses to the next mapping. */
    UNPOISON(b, size);
    munmap(b, size);
    atomic_fetch_sub_explicit(&mapped_total, size, memory_order_relaxed);
}

/*
 * Makes the current block resident up to its bump pointers (rounded out to whole chunks) before
 * they are written. Failure is harmless: the pages then fault in one by one when written.
 */
/* Whether the prefault thread finished faulting in the spare block blk: when done it publishes
 * the start of the range spare_map asked for, just past the block's header page. */
static bool spare_resident(struct ud_arena *a, const struct ud_arena_block *blk)
{
    return atomic_load_explicit(&a->spare_ready, memory_order_acquire) == (char *)blk + page_size();
}

static void prefault(struct ud_arena *a)
{
    if (!ud_populate_supported())
        return;
    char *lo = (char *)a->blocks;
    size_t size = a->blocks->size;
    /* Offsets from the block start, so that no pointer is formed outside the block. */
    size_t front = (size_t)(a->front - lo), ready_front = (size_t)(a->ready_front - lo);
    size_t back = (size_t)(a->back - lo), ready_back = (size_t)(a->ready_back - lo);
    if (front > ready_front) {
        size_t chunks = (front - ready_front + PREFAULT - 1) / PREFAULT;
        size_t to = ready_front + chunks * PREFAULT;
        to = to < size ? to : size;
        ud_populate(lo + ready_front, to - ready_front);
        a->ready_front = lo + to;
    }
    if (back < ready_back) {
        size_t chunks = (ready_back - back + PREFAULT - 1) / PREFAULT;
        size_t from = ready_back > chunks * PREFAULT ? ready_back - chunks * PREFAULT : 0;
        ud_populate(lo + from, ready_back - from);
        a->ready_back = lo + from;
    }
}

void ud_arena_init(struct ud_arena *a)
{
    a->front = NULL;
    a->back = NULL;
    a->ready_front = NULL;
    a->ready_back = NULL;
    a->blocks = NULL;
    atomic_init(&a->bytes, 0);
    a->spare = NULL;
    atomic_init(&a->spare_ready, NULL);
    a->spare_limit = 0;
}

void ud_arena_set_spare_limit(struct ud_arena *a, size_t limit)
{
    a->spare_limit = limit;
}

/*
 * Maps the next shared block now, while the current one has room, and queues it for the prefault
 * thread: by the time the writer reaches it its pages are usually resident, and the kernel's work
 * (faults, zeroing, memcg charge: about half of a put's time with 1 KiB values) ran on another
 * CPU. Only within the owner's budget, so that a memtable about to be sealed holds no idle
 * mebibyte, and only for fresh memory: while the pool holds a block (resident already) the next
 * block comes from there, and without the thread nobody would fault the spare in. A failure is
 * harmless: the next block is then mapped when needed, as without a spare.
 */
static void spare_map(struct ud_arena *a, size_t bytes)
{
    if (a->spare != NULL || a->spare_limit < 2 * UD_ARENA_BLOCK ||
        bytes > a->spare_limit - 2 * UD_ARENA_BLOCK || ud_arena_pool_nonempty() ||
        !ud_prefault_running())
        return;
    struct ud_arena_block *blk = block_map(UD_ARENA_BLOCK - HEADER_SIZE, 0);
    if (blk == NULL)
        return;
    /* The header's page is resident already (block_map wrote it). */
    size_t ps = page_size();
    if (ud_prefault_request(a, (char *)blk + ps, blk->size - ps, &a->spare_ready) != 0) {
        ud_arena_block_unmap(blk); /* the thread stopped or is swamped: map it when needed */
        return;
    }
    a->spare = blk;
}

/* The next shared block: the spare, a pooled block, or a fresh one; *resident tells whether all
 * of its pages are in already. NULL when the system refuses memory. */
static struct ud_arena_block *next_block(struct ud_arena *a, bool *resident)
{
    struct ud_arena_block *blk = a->spare;
    if (blk != NULL) {
        a->spare = NULL;
        *resident = spare_resident(a, blk);
        return blk;
    }
    *resident = true;
    if ((blk = ud_arena_pool_take()) != NULL)
        return blk;
    *resident = false;
    return block_map(UD_ARENA_BLOCK - HEADER_SIZE, 0);
}

void *ud_arena_alloc(struct ud_arena *a, size_t front_size, size_t back_size, void **back)
{
    if (front_size > SIZE_MAX / 4 || back_size > SIZE_MAX / 4)
        return NULL;
    size_t rounded = (front_size + 7) & ~(size_t)7;
    size_t need = rounded + back_size;
    size_t bytes = atomic_load_explicit(&a->bytes, memory_order_relaxed);
    char *f, *b;

    if (a->blocks != NULL && (size_t)(a->back - a->front) >= need) {
        /* Fast path: both ends of the current block move inwards. */
        f = a->front;
        a->front += rounded;
        a->back -= back_size;
        b = a->back;
        bytes += need;
        if (a->front > a->ready_front || a->back < a->ready_back)
            prefault(a);
    } else if (need > UD_ARENA_LARGE) {
        /* A dedicated block, linked behind the current one so that the current one stays.
         * Prefaulted in full: the caller is about to write all of it. */
        struct ud_arena_block *blk = block_map(need, 1);
        if (blk == NULL)
            return NULL;
        if (a->blocks != NULL) {
            blk->next = a->blocks->next;
            a->blocks->next = blk;
        } else {
            /* Becomes the current block, full: the next small allocation maps a shared one. */
            a->blocks = blk;
            a->front = a->back = a->ready_front = a->ready_back = (char *)blk + blk->size;
        }
        f = (char *)blk + HEADER_SIZE;
        b = f + rounded;
        bytes += blk->size;
    } else {
        /* The gap left in the current block is lost until release, so it counts from now on. */
        size_t gap = a->blocks != NULL ? (size_t)(a->back - a->front) : 0;
        bool resident;
        struct ud_arena_block *blk = next_block(a, &resident);
        if (blk == NULL)
            return NULL;
        blk->next = a->blocks;
        a->blocks = blk;
        f = (char *)blk + HEADER_SIZE;
        a->front = f + rounded;
        a->back = (char *)blk + blk->size - back_size;
        b = a->back;
        bytes += gap + HEADER_SIZE + need;
        if (resident) {
            /* Populated by the prefault thread, or a pooled block: no fault left to take. */
            a->ready_front = (char *)blk + blk->size;
            a->ready_back = (char *)blk;
        } else {
            a->ready_front = (char *)blk + page_size(); /* writing the header faulted this page */
            a->ready_back = (char *)blk + blk->size;
            prefault(a);
        }
        spare_map(a, bytes);
    }
    UNPOISON(f, front_size);
    UNPOISON(b, back_size);
    atomic_store_explicit(&a->bytes, bytes, memory_order_relaxed);
    if (back != NULL)
        *back = b;
    return f;
}

size_t ud_arena_bytes(const struct ud_arena *a)
{
    /* C11 declares atomic_load on a non-const object; the load itself does not write. */
    return atomic_load_explicit(&((struct ud_arena *)a)->bytes, memory_order_relaxed);
}

void ud_arena_release(struct ud_arena *a)
{
    if (a->spare_limit > 0) {
        /* The prefault thread may be inside the spare, or inside the block taken from it last. */
        ud_prefault_cancel(a);
    }
    /* The pool hands its blocks out as resident: the current block's middle is faulted in here
     * (on the releasing thread, usually the flush thread, not the writer), and a spare the
     * prefault thread did not finish is not kept. */
    if (a->spare != NULL) {
        if (spare_resident(a, a->spare)) {
            a->spare->next = a->blocks;
            a->blocks = a->spare;
        } else {
            ud_arena_block_unmap(a->spare);
        }
    }
    if (a->ready_front < a->ready_back && ud_arena_pool_room() >= UD_ARENA_BLOCK &&
        ud_populate_supported())
        ud_populate(a->ready_front, (size_t)(a->ready_back - a->ready_front));
    /* Kept for the next arenas within the pool's limit; the rest is unmapped. */
    ud_arena_pool_put(a->blocks);
    size_t limit = a->spare_limit;
    ud_arena_init(a);
    a->spare_limit = limit;
}
