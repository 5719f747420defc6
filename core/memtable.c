/* Memtable: an ordered list of versions in an arena with a B+tree index to search it, one
 * writer and lock-free readers (see memtable.h and memtable_int.h). */
#include "core/memtable.h"

#include "core/arena.h"
#include "core/err.h"
#include "core/memtable_filter.h"
#include "core/memtable_int.h"

#include <assert.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct ud_memtable {
    _Atomic unsigned refs;
    struct node *head; /* owned (malloc): the list's sentinel, no key */
    struct mt_index index;
    struct ud_arena arena;
    _Atomic uint64_t *filter; /* owned (calloc): filter_mask + 1 words, see memtable_filter.h */
    size_t filter_mask;
    /* Written by the single writer after each insert is linked, with release stores, so a reader
     * that loads count N (or max_lsn L) with acquire also finds the first N inserts (L's). */
    _Atomic uint64_t count;
    _Atomic uint64_t min_lsn;
    _Atomic uint64_t max_lsn;
};

static_assert(sizeof(struct node) == 48, "node header size");

static inline struct target make_target(uint8_t space, const void *key, size_t len, uint64_t lsn,
                                        bool past_key)
{
    struct target t = {make_sortkey(space, key, len), key, len, lsn, past_key};
    return t;
}

/* Walks the list from `from` (a node before the target, or the head) to the last node before
 * the target and returns the node its link pointed to then: the first node not before the target
 * (NULL at the end). Reloading that link instead could return a node inserted since, which may
 * sort before the target. Safe for readers: it only follows published links. */
static struct node *walk(struct node *from, const struct target *t)
{
    struct node *x = from;
    for (;;) {
        struct node *next = load_next(x);
        if (next == NULL || load_next_sortkey(x) > t->sortkey || !before(next, t))
            return next;
        x = next;
    }
}

/* The first node not before the target (NULL at the end). */
static struct node *find(const struct ud_memtable *m, const struct target *t)
{
    struct node *hint = mt_index_hint(&m->index, t);
    return walk(hint != NULL ? hint : m->head, t);
}

size_t ud_memtable_filter_bytes(size_t budget)
{
    return mt_filter_words(budget) * sizeof(uint64_t);
}

int ud_memtable_create(struct ud_memtable **out, size_t budget)
{
    struct ud_memtable *m = malloc(sizeof *m);
    if (m == NULL)
        return UD_ENOMEM;
    size_t words = mt_filter_words(budget);
    m->head = calloc(1, sizeof(struct node));
    m->filter = calloc(words, sizeof *m->filter);
    m->filter_mask = words - 1;
    if (m->head == NULL || m->filter == NULL) {
        free(m->head);
        free(m->filter);
        free(m);
        return UD_ENOMEM;
    }
    atomic_init(&m->head->next.node, NULL);
    atomic_init(&m->head->next.sortkey, 0);
    atomic_init(&m->refs, 1);
    mt_index_init(&m->index);
    ud_arena_init(&m->arena);
    /* The filter's bytes are part of the budget: the arena maps ahead only within the rest. */
    size_t filter_bytes = words * sizeof(uint64_t);
    if (budget > filter_bytes)
        ud_arena_set_spare_limit(&m->arena, budget - filter_bytes);
    atomic_init(&m->count, 0);
    atomic_init(&m->min_lsn, 0);
    atomic_init(&m->max_lsn, 0);
    *out = m;
    return 0;
}

void ud_memtable_ref(struct ud_memtable *m)
{
    atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
}

void ud_memtable_unref(struct ud_memtable *m)
{
    if (m == NULL)
        return;
    /* Release orders this thread's reads of the memtable before the free in whichever thread
     * drops the last reference; acquire lets that thread see every other thread's accesses as
     * done. (acq_rel on the decrement rather than a separate acquire fence: ThreadSanitizer does
     * not model fences, and unref is far from any hot path.) */
    if (atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) != 1)
        return;
    ud_arena_release(&m->arena);
    free(m->filter);
    free(m->head);
    free(m);
}

int ud_memtable_put(struct ud_memtable *m, uint8_t space, const void *key, size_t key_len,
                    uint64_t lsn, uint8_t kind, const void *value, size_t value_len)
{
    if (key_len > UINT32_MAX || value_len > UINT32_MAX)
        return UD_EINVAL;

    /* A repeated (space, key, lsn), which the engine never sends, lands in front of the earlier
     * one: get then returns the later put. */
    struct target t = make_target(space, key, key_len, lsn, false);
    struct mt_path path;
    /* The index holds every node and the writer's reads of it are consistent: its answer is
     * the exact place, and the node after it (not loaded) is not before the target. */
    struct node *prev = mt_index_locate(&m->index, &t, &path);
    if (prev == NULL)
        prev = m->head;
    /* prev's link is read and written below, after the allocation and the copy of the value:
     * its cache miss (a random node of the list) overlaps them. */
    __builtin_prefetch(&prev->next, 1);

    /* The node, and any index nodes the insert splits off, are one allocation: a refused
     * allocation then leaves everything as it was. */
    size_t node_size = (sizeof(struct node) + key_len + 7) & ~(size_t)7;
    size_t spare = mt_index_spare_bytes(&m->index, &path);
    void *vbytes = NULL;
    struct node *n = ud_arena_alloc(&m->arena, node_size + spare, value_len, &vbytes);
    if (n == NULL)
        return UD_ENOMEM; /* nothing linked, nothing counted: the memtable is unchanged */

    n->sortkey = t.sortkey;
    n->lsn = lsn;
    n->value_offset = (uint32_t)((uint8_t *)vbytes - (uint8_t *)n);
    n->key_len = (uint32_t)key_len;
    n->value_len = (uint32_t)value_len;
    n->kind = kind;
    if (key_len > 0)
        memcpy((uint8_t *)(n + 1), key, key_len);
    if (value_len > 0)
        memcpy(vbytes, value, value_len);

    mt_filter_add(m->filter, m->filter_mask, space, key, key_len);
    /* Only this thread writes links, so a relaxed read of prev's link is current. Release
     * publishes n's fields, key and value together with the link. */
    atomic_init(&n->next.node, atomic_load_explicit(&prev->next.node, memory_order_relaxed));
    atomic_init(&n->next.sortkey, atomic_load_explicit(&prev->next.sortkey, memory_order_relaxed));
    atomic_store_explicit(&prev->next.sortkey, t.sortkey, memory_order_relaxed);
    atomic_store_explicit(&prev->next.node, n, memory_order_release);
    mt_index_insert(&m->index, &path, n, spare > 0 ? (uint8_t *)n + node_size : NULL);

    uint64_t count = atomic_load_explicit(&m->count, memory_order_relaxed);
    uint64_t min = atomic_load_explicit(&m->min_lsn, memory_order_relaxed);
    uint64_t max = atomic_load_explicit(&m->max_lsn, memory_order_relaxed);
    if (count == 0 || lsn < min)
        atomic_store_explicit(&m->min_lsn, lsn, memory_order_release);
    if (count == 0 || lsn > max)
        atomic_store_explicit(&m->max_lsn, lsn, memory_order_release);
    atomic_store_explicit(&m->count, count + 1, memory_order_release);
    return 0;
}

static void fill_entry(const struct node *n, struct ud_mem_entry *e)
{
    e->space = (uint8_t)(n->sortkey >> 56);
    e->kind = n->kind;
    e->lsn = n->lsn;
    e->key = node_key(n);
    e->key_len = n->key_len;
    e->value = (const uint8_t *)n + n->value_offset;
    e->value_len = n->value_len;
}

int ud_memtable_get(struct ud_memtable *m, uint8_t space, const void *key, size_t key_len,
                    struct ud_mem_entry *e)
{
    if (!mt_filter_may_hold(m->filter, m->filter_mask, space, key, key_len))
        return UD_ENOTFOUND;
    /* Versions sort newest first, so the first node at or after (key, newest) is the answer. */
    struct target t = make_target(space, key, key_len, UINT64_MAX, false);
    struct node *n = find(m, &t);
    if (n == NULL || compare_key(n, t.sortkey, t.key, t.len) != 0)
        return UD_ENOTFOUND;
    fill_entry(n, e);
    return 0;
}

size_t ud_memtable_bytes(const struct ud_memtable *m)
{
    return ud_arena_bytes(&m->arena) + (m->filter_mask + 1) * sizeof(uint64_t);
}

uint64_t ud_memtable_count(const struct ud_memtable *m)
{
    return atomic_load_explicit(&((struct ud_memtable *)m)->count, memory_order_acquire);
}

uint64_t ud_memtable_min_lsn(const struct ud_memtable *m)
{
    return atomic_load_explicit(&((struct ud_memtable *)m)->min_lsn, memory_order_acquire);
}

uint64_t ud_memtable_max_lsn(const struct ud_memtable *m)
{
    return atomic_load_explicit(&((struct ud_memtable *)m)->max_lsn, memory_order_acquire);
}

void ud_memtable_iter_init(struct ud_memtable_iter *it, struct ud_memtable *m)
{
    it->m = m;
    it->node = NULL;
}

void ud_memtable_iter_seek(struct ud_memtable_iter *it, uint8_t space, const void *key,
                           size_t key_len)
{
    struct target t = make_target(space, key, key_len, UINT64_MAX, false);
    it->node = find(it->m, &t);
}

void ud_memtable_iter_first(struct ud_memtable_iter *it)
{
    it->node = load_next(it->m->head);
}

int ud_memtable_iter_valid(const struct ud_memtable_iter *it)
{
    return it->node != NULL;
}

void ud_memtable_iter_next(struct ud_memtable_iter *it)
{
    it->node = load_next(it->node);
}

/* Versions of one key are usually few: walk a couple of links before paying for a search. */
#define NEXT_KEY_WALK 4

void ud_memtable_iter_next_key(struct ud_memtable_iter *it)
{
    const struct node *cur = it->node;
    const uint8_t *key = node_key(cur);
    struct node *n = load_next(cur);
    for (int i = 0; i < NEXT_KEY_WALK; i++) {
        if (n == NULL || compare_key(n, cur->sortkey, key, cur->key_len) != 0) {
            it->node = n;
            return;
        }
        n = load_next(n);
    }
    struct target t = {cur->sortkey, key, cur->key_len, 0, true};
    it->node = find(it->m, &t);
}

void ud_memtable_iter_entry(const struct ud_memtable_iter *it, struct ud_mem_entry *e)
{
    fill_entry(it->node, e);
}
