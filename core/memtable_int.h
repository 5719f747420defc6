/* Memtable internals shared by the ordered list (memtable.c) and its search index
 * (memtable_index.c): the entry node, the search target and the order between them. */
#ifndef UD_CORE_MEMTABLE_INT_H
#define UD_CORE_MEMTABLE_INT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/*
 * A list link: the next node and the sortkey of that node. A search decides that the next node
 * lies past its target from the link alone, without loading that node (one cache miss less).
 * The writer stores the sortkey before it publishes the pointer, and a link only ever changes to
 * a node inserted before the old one, whose sortkey is not greater: a reader that loads the
 * pointer and then the sortkey gets a sortkey <= the pointed node's. Hence "link sortkey >
 * target's sortkey" proves the node is past the target; anything else is decided on the node.
 */
struct link {
    _Atomic(struct node *) node;
    _Atomic uint64_t sortkey;
};

/*
 * One version of one key: a node of the ordered list, laid out as header | key, and its value
 * a back allocation of the same arena block (see arena.h). Everything but next is written once
 * before the node is published and never changes.
 */
struct node {
    /* space in the top byte, then the first 7 key bytes big-endian, zero padded: most
     * comparisons end here, without touching the key bytes or calling memcmp. */
    uint64_t sortkey;
    uint64_t lsn;
    /* The value lies after the node in the same block, so an offset is enough. */
    uint32_t value_offset;
    uint32_t value_len;
    uint32_t key_len;
    uint8_t kind;
    struct link next;
};

static inline const uint8_t *node_key(const struct node *n)
{
    return (const uint8_t *)(n + 1);
}

static inline struct node *load_next(const struct node *n)
{
    /* Acquire pairs with the writer's release store: the node's fields are visible before it is. */
    return atomic_load_explicit(&((struct node *)n)->next.node, memory_order_acquire);
}

/* The sortkey stored with n's link: at most the sortkey of the node a load_next before it
 * returned (see struct link). */
static inline uint64_t load_next_sortkey(const struct node *n)
{
    return atomic_load_explicit(&((struct node *)n)->next.sortkey, memory_order_relaxed);
}

static inline uint64_t make_sortkey(uint8_t space, const uint8_t *key, size_t len)
{
    uint64_t sk = (uint64_t)space << 56;
    size_t n = len < 7 ? len : 7;
    for (size_t i = 0; i < n; i++)
        sk |= (uint64_t)key[i] << (48 - 8 * i);
    return sk;
}

static inline uint64_t load_be64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof v);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    return v;
#else
    return __builtin_bswap64(v);
#endif
}

/*
 * Orders by space, then key bytes (a prefix sorts before its extensions). Zero padding keeps the
 * sortkey order exact: where two sortkeys differ, the first differing byte is a real byte of both
 * keys, or a real non-zero byte against the padding of a shorter key.
 */
static inline int compare_key(const struct node *n, uint64_t sortkey, const uint8_t *key,
                              size_t len)
{
    if (n->sortkey != sortkey)
        return n->sortkey < sortkey ? -1 : 1;
    /* Equal sortkeys: the first min(7, common) bytes are equal. Keys often share long prefixes
     * ("user:000123"), so compare the rest eight bytes at a time inline rather than through a
     * memcmp call; the last load overlaps bytes already known equal instead of looping. */
    size_t nlen = n->key_len;
    size_t common = nlen < len ? nlen : len;
    if (common > 7) {
        const uint8_t *nkey = node_key(n);
        size_t i = 7;
        for (; i + 8 <= common; i += 8) {
            uint64_t a = load_be64(nkey + i), b = load_be64(key + i);
            if (a != b)
                return a < b ? -1 : 1;
        }
        if (i < common) {
            uint64_t a = load_be64(nkey + common - 8), b = load_be64(key + common - 8);
            if (a != b)
                return a < b ? -1 : 1;
        }
    }
    return (nlen > len) - (nlen < len);
}

/* A search target: (space, key, lsn), with the sortkey computed once per search. */
struct target {
    uint64_t sortkey;
    const uint8_t *key;
    size_t len;
    uint64_t lsn;
    /* "Just after every version of (space, key)": how next_key jumps over a run of versions. */
    bool past_key;
};

/* Whether n sorts before the target (versions of a key: newest first). */
static inline bool before(const struct node *n, const struct target *t)
{
    int c = compare_key(n, t->sortkey, t->key, t->len);
    if (c != 0)
        return c < 0;
    return t->past_key || n->lsn > t->lsn;
}

/* --- the search index (memtable_index.c) ------------------------------------------------------ */

struct inode;

/* Levels of the index: with at least 16 entries per node below the root, 12 levels cover far
 * more entries than any memtable budget allows. */
#define MT_INDEX_MAX_LEVELS 12

struct mt_index {
    _Atomic(struct inode *) root; /* NULL while the memtable is empty */
    int height;                   /* writer only: levels below and including the root */
};

/* Where a writer's search ended on each level: the index node and the slot of the last entry
 * before the target (-1: none). Level 0 is the leaf. */
struct mt_path {
    struct inode *node[MT_INDEX_MAX_LEVELS];
    int slot[MT_INDEX_MAX_LEVELS];
};

void mt_index_init(struct mt_index *x);

/*
 * Reader (any thread, no lock): a node sorting before the target, close before it, or NULL when
 * the search should start at the list's head. Never a node at or after the target.
 */
struct node *mt_index_hint(const struct mt_index *x, const struct target *t);

/* Writer: the last node before the target (NULL: none, the list's head), and the path an
 * insert at that place takes. */
struct node *mt_index_locate(const struct mt_index *x, const struct target *t, struct mt_path *p);

/* Writer: bytes of index nodes an insert along p allocates (splits, a new root), alignment
 * included; 0 for most inserts. */
size_t mt_index_spare_bytes(const struct mt_index *x, const struct mt_path *p);

/* Writer: adds n, already linked into the list right after the node mt_index_locate returned,
 * to the index. spare: mt_index_spare_bytes(x, p) bytes (NULL when that is 0), which the index
 * keeps. */
void mt_index_insert(struct mt_index *x, const struct mt_path *p, struct node *n, void *spare);

#endif
