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

/*
 * Keys that share a long prefix ("user:000123", "key:000000012345") would tie on sortkeys taken
 * from the key's start, and every tie costs a load of the list node. So each index node takes its
 * sortkeys after the prefix that every entry it may ever hold shares (its range's: see
 * split_prefix()), stored once in the node. A node's prefix is fixed when the node is created and
 * its range only ever narrows, so the prefix stays shared and the sortkeys never change encoding.
 */
#define PREFIX_MAX 22

struct inode {
    _Atomic uint32_t count;
    uint8_t level; /* 0: leaf (slots point to list nodes); written before the node is published */
    /* Every entry this node may hold starts with prefix[0, plen) of its full key (the space byte,
     * then the key bytes); keys[] are windows of the full keys at plen (see window()). Written
     * before the node is published. */
    uint8_t plen;
    uint8_t prefix[PREFIX_MAX];
    _Atomic uint64_t keys[FANOUT];        /* window of nodes[i] at plen */
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

/* Bytes [off, off + 8) of key, big-endian, zero padded past its end. */
static inline uint64_t key_window(const uint8_t *key, size_t len, size_t off)
{
    if (off + 8 <= len)
        return load_be64(key + off);
    uint64_t w = 0;
    for (size_t i = off; i < len; i++)
        w |= (uint64_t)key[i] << (56 - 8 * (i - off));
    return w;
}

/*
 * The sortkey at offset plen of a full key (space byte, then key bytes): 8 bytes from there,
 * zero padded. At 0 it is the list's own sortkey (space, 7 key bytes). Between keys that share
 * their first plen bytes these order exactly as the keys where they differ, as sortkeys do.
 */
static inline uint64_t window(uint64_t sortkey, const uint8_t *key, size_t len, unsigned plen)
{
    return plen == 0 ? sortkey : key_window(key, len, plen - 1);
}

static inline uint64_t node_window(const struct node *n, unsigned plen)
{
    return window(n->sortkey, node_key(n), n->key_len, plen);
}

/* Where the target lies against the prefix of node x: -1 before every entry x may hold, 1 after
 * every one, 0 sharing the prefix (then its window decides). */
static inline int prefix_order(const struct inode *x, const struct target *t)
{
    unsigned plen = x->plen;
    if (plen == 0)
        return 0;
    uint8_t space = (uint8_t)(t->sortkey >> 56);
    if (space != x->prefix[0])
        return space < x->prefix[0] ? -1 : 1;
    size_t rest = plen - 1, n = t->len < rest ? t->len : rest;
    int c = n > 0 ? memcmp(t->key, x->prefix + 1, n) : 0; /* a seek to a space's start: no key */
    if (c != 0)
        return c < 0 ? -1 : 1;
    return t->len < rest ? -1 : 0;
}

/* Whether slot i's entry sorts before the target: by the window in the slot when it decides,
 * else on the entry itself. */
static inline bool slot_before(const struct inode *x, int i, uint64_t tw, const struct target *t)
{
    uint64_t k = atomic_load_explicit(&((struct inode *)x)->keys[i], memory_order_relaxed);
    if (k != tw)
        return k < tw;
    const struct node *n = slot_node(x, i);
    return n != NULL && before(n, t);
}

/* The last of the first hi slots before the target (window tw at x's plen), -1 when none. */
static inline int search(const struct inode *x, int hi, uint64_t tw, const struct target *t)
{
    int lo = 0;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (slot_before(x, mid, tw, t))
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo - 1;
}

/* The last slot before the target, -1 when none (binary search: the
 * slots are sorted; a torn read can only make the answer less exact, which callers check). */
static int last_before(const struct inode *x, memory_order mo, const struct target *t)
{
    /* The binary search's loads depend on each other: ask for all its lines at once, so their
     * cache misses overlap instead of following one another. */
    for (size_t off = 0; off < offsetof(struct inode, nodes); off += LINE)
        __builtin_prefetch((const char *)x + off);
    int count = (int)load_count(x, mo);
    if (x->plen == 0)
        return search(x, count, t->sortkey, t);
    int order = prefix_order(x, t);
    if (order != 0)
        return order < 0 ? -1 : count - 1;
    return search(x, count, key_window(t->key, t->len, x->plen - 1u), t);
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
        /* The search below waits on the node's keys; the slot it picks is followed next (a leaf's
         * entry, an inner node's child) and an insert shifts the slots after it. Ask for those
         * lines now too, so their misses overlap the keys' instead of following them. */
        uintptr_t follow = level == 0 ? (uintptr_t)n->nodes : (uintptr_t)n->kids;
        uintptr_t end = follow + FANOUT * sizeof(void *);
        /* From the line the array starts in: it need not start on a line boundary. */
        for (uintptr_t line = follow & ~(uintptr_t)(LINE - 1); line < end; line += LINE)
            __builtin_prefetch((const void *)line);
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
    n->level = (uint8_t)level;
    n->plen = 0;
    atomic_init(&n->count, 0);
    return n;
}

struct slot {
    uint64_t key; /* the window of node at the plen of the index node holding the slot */
    struct node *node;
    struct inode *kid; /* inner levels only */
};

/* The slot for node (and kid) in index node x. */
static struct slot slot_for(const struct inode *x, struct node *node, struct inode *kid)
{
    struct slot s = {node_window(node, x->plen), node, kid};
    return s;
}

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

/* Byte i of n's full key (the space byte, then the key bytes); i <= key_len. */
static inline uint8_t full_key_byte(const struct node *n, size_t i)
{
    return i == 0 ? (uint8_t)(n->sortkey >> 56) : node_key(n)[i - 1];
}

/*
 * Gives `right`, a node a split creates to hold the entries from `first` on, its prefix: what
 * first shares with `high`, the first entry past its range (NULL: none, the range is unbounded
 * and only the splitting node's own prefix is known to hold). Every entry right may ever hold
 * lies between the two, so it shares that prefix too. Only when the prefix is PREFIX_GAIN bytes
 * longer than n's: the entries moved over must then be re-encoded, a load of each list node.
 * may_share: whether n's windows of the first and last entry moving over already tie on their first
 * PREFIX_GAIN bytes (otherwise a longer prefix is impossible and nothing is loaded).
 */
#define PREFIX_GAIN 4
static void split_prefix(struct inode *right, const struct inode *n, const struct node *first,
                         const struct node *high, bool may_share)
{
    right->plen = n->plen;
    memcpy(right->prefix, n->prefix, n->plen);
    if (high == NULL || !may_share)
        return;
    size_t max = (size_t)first->key_len + 1;
    if ((size_t)high->key_len + 1 < max)
        max = (size_t)high->key_len + 1;
    if (max > PREFIX_MAX)
        max = PREFIX_MAX;
    size_t common = 0;
    while (common < max && full_key_byte(first, common) == full_key_byte(high, common))
        common++;
    if (common < (size_t)n->plen + PREFIX_GAIN)
        return;
    for (size_t i = 0; i < common; i++)
        right->prefix[i] = full_key_byte(first, i);
    right->plen = (uint8_t)common;
}

/* The first entry past the range of the node on path level `level` (NULL: none, the range is
 * unbounded): the entry after the slot its parent descended through, or past the parent's own
 * range. Asked when the node splits, before this insert changes any of its ancestors. */
static struct node *path_high(const struct mt_index *x, const struct mt_path *p, int level)
{
    for (int up = level + 1; up < x->height; up++) {
        int kid = p->slot[up] > 0 ? p->slot[up] : 0;
        if (kid + 1 < (int)load_count(p->node[up], memory_order_relaxed))
            return slot_node(p->node[up], kid + 1);
    }
    return NULL;
}

/* Inserts the slot for node (and kid) at position pos of x, which has room. Entries shift right
 * from the end, so a reader sees each slot holding its old entry, its left neighbour's, or the
 * new one. */
static void insert_at(struct inode *x, int pos, struct node *node, struct inode *kid)
{
    int count = (int)load_count(x, memory_order_relaxed);
    assert(count < FANOUT && pos <= count);
    for (int i = count; i > pos; i--) {
        struct slot moved = slot_load(x, i - 1);
        slot_store(x, i, &moved);
    }
    struct slot s = slot_for(x, node, kid);
    slot_store(x, pos, &s);
    atomic_store_explicit(&x->count, (uint32_t)count + 1, memory_order_release);
}

/* Inserts node (and kid) at position pos of the node on path level `level`, splitting it (and
 * its parents) when full. */
static void insert_level(struct mt_index *x, const struct mt_path *p, int level, int pos,
                         struct node *node, struct inode *kid, struct spare *spare)
{
    struct inode *n = p->node[level];
    if (load_count(n, memory_order_relaxed) < FANOUT) {
        insert_at(n, pos, node, kid);
        return;
    }
    /* Split. An append at the end (ascending keys: counters, time series) moves nothing and
     * leaves the node full rather than leaving every node half empty for good. */
    int keep = pos == FANOUT ? FANOUT : FANOUT / 2;
    struct inode *right = spare_take(spare, level);
    struct node *first = pos == keep ? node : slot_node(n, keep);
    bool may_share = true;
    if (keep < FANOUT) {
        uint64_t w_first = pos == keep ? node_window(node, n->plen)
                                       : atomic_load_explicit(&n->keys[keep], memory_order_relaxed);
        uint64_t w_last = atomic_load_explicit(&n->keys[FANOUT - 1], memory_order_relaxed);
        may_share = ((w_first ^ w_last) >> (64 - 8 * PREFIX_GAIN)) == 0;
    }
    split_prefix(right, n, first, path_high(x, p, level), may_share);
    for (int i = keep; i < FANOUT; i++) {
        struct slot moved = slot_load(n, i);
        if (right->plen != n->plen)
            moved.key = node_window(moved.node, right->plen);
        slot_store(right, i - keep, &moved);
    }
    atomic_store_explicit(&right->count, (uint32_t)(FANOUT - keep), memory_order_relaxed);
    if (pos >= keep)
        insert_at(right, pos - keep, node, kid);

    /* Link the right node into the parent (or a new root) before the left one shrinks. */
    if (level + 1 == x->height) {
        struct inode *root = spare_take(spare, level + 1); /* unbounded: no prefix */
        struct slot left = slot_for(root, slot_node(n, 0), n);
        struct slot up = slot_for(root, slot_node(right, 0), right);
        slot_store(root, 0, &left);
        slot_store(root, 1, &up);
        atomic_store_explicit(&root->count, 2, memory_order_relaxed);
        atomic_store_explicit(&x->root, root, memory_order_release);
        x->height++;
    } else {
        int parent_slot = p->slot[level + 1];
        insert_level(x, p, level + 1, (parent_slot > 0 ? parent_slot : 0) + 1, slot_node(right, 0),
                     right, spare);
    }
    atomic_store_explicit(&n->count, (uint32_t)keep, memory_order_release);
    if (pos < keep)
        insert_at(n, pos, node, kid);
}

void mt_index_insert(struct mt_index *x, const struct mt_path *p, struct node *n, void *spare_mem)
{
    struct spare spare = {NULL};
    if (spare_mem != NULL) {
        uintptr_t a = ((uintptr_t)spare_mem + LINE - 1) & ~(uintptr_t)(LINE - 1);
        spare.next = (char *)a;
    }
    if (x->height == 0) {
        struct inode *leaf = spare_take(&spare, 0);
        struct slot s = slot_for(leaf, n, NULL);
        slot_store(leaf, 0, &s);
        atomic_store_explicit(&leaf->count, 1, memory_order_relaxed);
        atomic_store_explicit(&x->root, leaf, memory_order_release);
        x->height = 1;
        return;
    }
    insert_level(x, p, 0, p->slot[0] + 1, n, NULL, &spare);
}
