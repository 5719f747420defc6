/* The memtable's search index: a B+tree over the ordered list's nodes (see memtable_int.h). */
#include "core/memtable_int.h"

#include <assert.h>
#include <stddef.h>

/*
 * Why a B+tree beside the list. Searching the list through skiplist levels costs a cache miss
 * per node stepped to, about 1.44 ln(n) of them (~20 at a million entries): half of a put's
 * CPU. Here a search binary-searches nodes of FANOUT sorted sortkeys, so it touches a few cache
 * lines of each of ~log16(n) index nodes, the upper ones shared by every search and cached.
 *
 * The list stays the source of truth: every version is linked into it first, iterators walk
 * it, and a search ends with a walk along it. The index only says where to start that walk: a
 * node before the target. That is what lets readers run without locks or retries while the
 * single writer shifts entries inside index nodes and splits them: a reader may see a slot
 * half written (a sortkey beside a neighbour's pointer) or a node mid-split, but every pointer
 * in a slot is a node that was published, so the reader checks the node it picked against the
 * target on the node itself and, if it is not before the target, tries the slot to its left.
 * The worst a torn read costs is a longer walk; never a wrong answer.
 *
 * Invariants the readers rely on:
 * - entries only move right (a split copies the upper half to a new right sibling), so the
 *   first entry of every node but those on the leftmost spine never changes; a search that
 *   reached such a node by a separator before its target always finds an entry before it;
 * - a split links the new sibling into the parent before the left node's count shrinks, so
 *   every entry stays reachable throughout;
 * - pointers (to list nodes and to index nodes) are stored with release and loaded with acquire,
 *   so what they point to is fully written when a reader follows them.
 */
#define FANOUT 32

struct inode {
    _Atomic uint32_t count;
    uint32_t level; /* 0: leaf (slots point to list nodes); written before the node is published */
    _Atomic uint64_t keys[FANOUT];        /* sortkey of nodes[i] */
    _Atomic(struct node *) nodes[FANOUT]; /* leaf: the entry; inner: the child's first entry */
    _Atomic(struct inode *) kids[];       /* inner nodes only */
};

/* Index nodes start on a cache line: a binary search then touches the fewest lines. */
#define LINE 64

static size_t inode_size(int level)
{
    size_t s = sizeof(struct inode) + (level > 0 ? FANOUT * sizeof(_Atomic(struct inode *)) : 0);
    return (s + LINE - 1) & ~(size_t)(LINE - 1);
}

static inline uint32_t load_count(const struct inode *x, memory_order mo)
{
    uint32_t c = atomic_load_explicit(&((struct inode *)x)->count, mo);
    return c <= FANOUT ? c : FANOUT;
}

static inline struct node *slot_node(const struct inode *x, int i)
{
    return atomic_load_explicit(&((struct inode *)x)->nodes[i], memory_order_acquire);
}

static inline struct inode *slot_kid(const struct inode *x, int i)
{
    return atomic_load_explicit(&((struct inode *)x)->kids[i], memory_order_acquire);
}

/* Whether slot i's entry sorts before the target: by the sortkey in the slot when it decides,
 * else on the entry itself. */
static inline bool slot_before(const struct inode *x, int i, const struct target *t)
{
    uint64_t k = atomic_load_explicit(&((struct inode *)x)->keys[i], memory_order_relaxed);
    if (k != t->sortkey)
        return k < t->sortkey;
    const struct node *n = slot_node(x, i);
    return n != NULL && before(n, t);
}

/* The last slot before the target, -1 when none (binary search: the
 * slots are sorted; a torn read can only make the answer less exact, which callers check). */
static int last_before(const struct inode *x, memory_order mo, const struct target *t)
{
    /* The binary search's loads depend on each other: ask for all its lines at once, so their
     * cache misses overlap instead of following one another. */
    for (size_t off = 0; off < offsetof(struct inode, nodes); off += LINE)
        __builtin_prefetch((const char *)x + off);
    int lo = 0, hi = (int)load_count(x, mo);
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (slot_before(x, mid, t))
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo - 1;
}

void mt_index_init(struct mt_index *x)
{
    atomic_init(&x->root, NULL);
    x->height = 0;
}

struct node *mt_index_hint(const struct mt_index *x, const struct target *t)
{
    /* A retry is needed only when a torn read sent the search into a node right of the target;
     * after a few the list's head is a correct, if slow, start. */
    for (int attempt = 0; attempt < 4; attempt++) {
        struct inode *n = atomic_load_explicit(&((struct mt_index *)x)->root, memory_order_acquire);
        if (n == NULL)
            return NULL;
        bool leftmost = true;
        while (n->level > 0) {
            int i = last_before(n, memory_order_acquire, t);
            if (i > 0)
                leftmost = false;
            n = slot_kid(n, i > 0 ? i : 0);
            if (n == NULL)
                break;
        }
        if (n == NULL)
            continue;
        for (int i = last_before(n, memory_order_acquire, t); i >= 0; i--) {
            struct node *e = slot_node(n, i);
            if (e != NULL && before(e, t))
                return e;
        }
        /* Nothing before the target in the leftmost leaf: the head is the place. */
        if (leftmost)
            return NULL;
    }
    return NULL;
}

struct node *mt_index_locate(const struct mt_index *x, const struct target *t, struct mt_path *p)
{
    /* Only the writer changes the index, so its reads are consistent. */
    struct inode *n = atomic_load_explicit(&((struct mt_index *)x)->root, memory_order_relaxed);
    if (n == NULL)
        return NULL;
    for (int level = x->height - 1;; level--) {
        int i = last_before(n, memory_order_relaxed, t);
        p->node[level] = n;
        p->slot[level] = i;
        if (level == 0)
            return i >= 0 ? slot_node(n, i) : NULL;
        n = slot_kid(n, i > 0 ? i : 0);
    }
}

size_t mt_index_spare_bytes(const struct mt_index *x, const struct mt_path *p)
{
    if (x->height == 0)
        return inode_size(0) + LINE; /* the first leaf */
    size_t bytes = 0;
    int level = 0;
    /* Each full node on the path splits, and a full root also needs a new root above it. */
    while (level < x->height && load_count(p->node[level], memory_order_relaxed) == FANOUT) {
        bytes += inode_size(level);
        level++;
    }
    if (level == x->height)
        bytes += inode_size(level);
    return bytes > 0 ? bytes + LINE : 0;
}

/* Index nodes carved from the spare memory of one insert, in the order they are needed. */
struct spare {
    char *next;
};

static struct inode *spare_take(struct spare *s, int level)
{
    struct inode *n = (struct inode *)s->next;
    s->next += inode_size(level);
    n->level = (uint32_t)level;
    atomic_init(&n->count, 0);
    return n;
}

struct slot {
    uint64_t key;
    struct node *node;
    struct inode *kid; /* inner levels only */
};

static void slot_store(struct inode *x, int i, const struct slot *s)
{
    atomic_store_explicit(&x->keys[i], s->key, memory_order_relaxed);
    atomic_store_explicit(&x->nodes[i], s->node, memory_order_release);
    if (x->level > 0)
        atomic_store_explicit(&x->kids[i], s->kid, memory_order_release);
}

static struct slot slot_load(const struct inode *x, int i)
{
    struct slot s = {atomic_load_explicit(&((struct inode *)x)->keys[i], memory_order_relaxed),
                     slot_node(x, i), x->level > 0 ? slot_kid(x, i) : NULL};
    return s;
}

/* Inserts s at position pos of a node that has room. Entries shift right from the end, so a
 * reader sees each slot holding its old entry, its left neighbour's, or the new one. */
static void insert_at(struct inode *x, int pos, const struct slot *s)
{
    int count = (int)load_count(x, memory_order_relaxed);
    assert(count < FANOUT && pos <= count);
    for (int i = count; i > pos; i--) {
        struct slot moved = slot_load(x, i - 1);
        slot_store(x, i, &moved);
    }
    slot_store(x, pos, s);
    atomic_store_explicit(&x->count, (uint32_t)count + 1, memory_order_release);
}

/* Inserts s at position pos of the node on path level `level`, splitting it (and its parents)
 * when full. */
static void insert_level(struct mt_index *x, const struct mt_path *p, int level, int pos,
                         const struct slot *s, struct spare *spare)
{
    struct inode *n = p->node[level];
    if (load_count(n, memory_order_relaxed) < FANOUT) {
        insert_at(n, pos, s);
        return;
    }
    /* Split. An append at the end (ascending keys: counters, time series) moves nothing and
     * leaves the node full rather than leaving every node half empty for good. */
    int keep = pos == FANOUT ? FANOUT : FANOUT / 2;
    struct inode *right = spare_take(spare, level);
    for (int i = keep; i < FANOUT; i++) {
        struct slot moved = slot_load(n, i);
        slot_store(right, i - keep, &moved);
    }
    atomic_store_explicit(&right->count, (uint32_t)(FANOUT - keep), memory_order_relaxed);
    if (pos >= keep)
        insert_at(right, pos - keep, s);

    /* Link the right node into the parent (or a new root) before the left one shrinks. */
    struct slot up = slot_load(right, 0);
    up.kid = right;
    if (level + 1 == x->height) {
        struct inode *root = spare_take(spare, level + 1);
        struct slot left = slot_load(n, 0);
        left.kid = n;
        slot_store(root, 0, &left);
        slot_store(root, 1, &up);
        atomic_store_explicit(&root->count, 2, memory_order_relaxed);
        atomic_store_explicit(&x->root, root, memory_order_release);
        x->height++;
    } else {
        int parent_slot = p->slot[level + 1];
        insert_level(x, p, level + 1, (parent_slot > 0 ? parent_slot : 0) + 1, &up, spare);
    }
    atomic_store_explicit(&n->count, (uint32_t)keep, memory_order_release);
    if (pos < keep)
        insert_at(n, pos, s);
}

void mt_index_insert(struct mt_index *x, const struct mt_path *p, struct node *n, void *spare_mem)
{
    struct spare spare = {NULL};
    if (spare_mem != NULL) {
        uintptr_t a = ((uintptr_t)spare_mem + LINE - 1) & ~(uintptr_t)(LINE - 1);
        spare.next = (char *)a;
    }
    struct slot s = {n->sortkey, n, NULL};
    if (x->height == 0) {
        struct inode *leaf = spare_take(&spare, 0);
        slot_store(leaf, 0, &s);
        atomic_store_explicit(&leaf->count, 1, memory_order_relaxed);
        atomic_store_explicit(&x->root, leaf, memory_order_release);
        x->height = 1;
        return;
    }
    insert_level(x, p, 0, p->slot[0] + 1, &s, &spare);
}
