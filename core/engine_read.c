/* Reads: point lookups and ordered scans merging the memtables with the LMDB store, honouring
 * tombstones and whole-row tombstones (docs/engine.md "Reads"). */
#include <stdlib.h>
#include <string.h>

#include "core/endian.h"
#include "core/engine_int.h"
#include "core/err.h"
#include "core/keyspace.h"

#define SCAN_DEFAULT_LIMIT 1000

void ud_buf_free(struct ud_buf *b)
{
    if (b == NULL)
        return;
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

static int buf_set(struct ud_buf *b, const void *data, size_t len)
{
    if (b->cap < len || b->data == NULL) {
        size_t cap = len > 16 ? len : 16;
        uint8_t *p = realloc(b->data, cap);
        if (p == NULL)
            return UD_ENOMEM;
        b->data = p;
        b->cap = cap;
    }
    if (len > 0)
        memcpy(b->data, data, len);
    b->len = len;
    return 0;
}

/* --- the view --------------------------------------------------------------------------------- */

/*
 * Takes references to the active and sealed memtables under a mutex held for a few pointer
 * copies. A reader must take its view before its LMDB snapshot: a flush that commits in between
 * is then seen twice (memtable and store agree), never missed.
 */
int ud_view_acquire(struct ud_ns *ns, struct ud_view *v)
{
    pthread_mutex_lock(&ns->view_lock);
    size_t n = 1 + ns->nsealed;
    v->mems = v->inl;
    if (n > sizeof v->inl / sizeof v->inl[0]) {
        v->mems = malloc(n * sizeof *v->mems);
        if (v->mems == NULL) {
            pthread_mutex_unlock(&ns->view_lock);
            v->n = 0;
            return UD_ENOMEM;
        }
    }
    v->mems[0] = ns->active;
    for (size_t i = 0; i < ns->nsealed; i++)
        v->mems[1 + i] = ns->sealed[ns->nsealed - 1 - i].mem;
    v->n = n;
    for (size_t i = 0; i < n; i++)
        ud_memtable_ref(v->mems[i]);
    /* Loaded under the lock that sealing takes, so every version at or below it is in one of
     * these memtables or already in LMDB. */
    v->lsn = __atomic_load_n(&ns->visible_lsn, __ATOMIC_ACQUIRE);
    pthread_mutex_unlock(&ns->view_lock);
    return 0;
}

void ud_view_release(struct ud_view *v)
{
    for (size_t i = 0; i < v->n; i++)
        ud_memtable_unref(v->mems[i]);
    if (v->mems != v->inl)
        free(v->mems);
    v->n = 0;
    v->mems = v->inl;
}

/* Newest visible version of (space, key) in one memtable: 1 found, 0 not. */
static int mem_get(struct ud_memtable *m, uint64_t visible, uint8_t space, const void *key,
                   size_t key_len, struct ud_mem_entry *e)
{
    /* The common case: the newest version is visible. */
    if (ud_memtable_get(m, space, key, key_len, e) != 0)
        return 0;
    if (e->lsn <= visible)
        return 1;
    /* A record being applied right now: its older version, if any, is what readers see. */
    struct ud_memtable_iter it;
    ud_memtable_iter_init(&it, m);
    for (ud_memtable_iter_seek(&it, space, key, key_len); ud_memtable_iter_valid(&it);
         ud_memtable_iter_next(&it)) {
        ud_memtable_iter_entry(&it, e);
        if (e->space != space || e->key_len != key_len || memcmp(e->key, key, key_len) != 0)
            return 0;
        if (e->lsn <= visible)
            return 1;
    }
    return 0;
}

/* Newest visible memtable version of (space, key) across the view: 1 found, 0 not in any. */
static int view_get(const struct ud_view *v, uint8_t space, const void *key, size_t key_len,
                    struct ud_mem_entry *e)
{
    for (size_t i = 0; i < v->n; i++)
        if (mem_get(v->mems[i], v->lsn, space, key, key_len, e))
            return 1;
    return 0;
}

/* --- KV --------------------------------------------------------------------------------------- */

struct ud_kv_reader {
    struct ud_ns *ns; /* NULL: closed */
    struct ud_view view;
    struct ud_store_snap *snap; /* begun right after the view (NULL until the first store read
                                 * for a single get, ud_ns_kv_get_with) */
};

int ud_kv_reader_new(struct ud_kv_reader **out)
{
    struct ud_kv_reader *r = calloc(1, sizeof *r);
    if (r == NULL)
        return UD_ENOMEM;
    *out = r;
    return 0;
}

void ud_kv_reader_free(struct ud_kv_reader *r)
{
    if (r == NULL)
        return;
    ud_kv_reader_close(r);
    free(r);
}

/* Opens r on ns; the LMDB snapshot now (snap_now) or at the first get the memtables do not
 * answer. Later is right only for a single get: with one key there is no other key whose
 * version a flush between the two could make inconsistent. */
static int reader_open(struct ud_kv_reader *r, struct ud_ns *ns, bool snap_now)
{
    UD_ASSERT(r->ns == NULL);
    int rc = ud_view_acquire(ns, &r->view);
    if (rc != 0)
        return rc;
    r->snap = NULL;
    if (!snap_now) {
        r->ns = ns;
        return 0;
    }
    /* The snapshot too, right after the view: begun at the first read the memtables did not
     * answer, a flush committed meanwhile would show writes newer than the view in LMDB while the
     * view's memtables still answer older versions of other keys. A flush that commits between
     * these two lines is seen twice (memtable and store agree), never half. */
    rc = ud_store_snap_begin(ns->store, &r->snap);
    if (rc != 0) {
        r->snap = NULL;
        ud_view_release(&r->view);
        return rc;
    }
    r->ns = ns;
    return 0;
}

int ud_kv_reader_open(struct ud_kv_reader *r, struct ud_ns *ns)
{
    return reader_open(r, ns, true);
}

struct ud_ns *ud_kv_reader_ns(const struct ud_kv_reader *r)
{
    return r->ns;
}

int ud_kv_reader_get(struct ud_kv_reader *r, const void *key, size_t key_len, const uint8_t **value,
                     size_t *value_len, uint64_t *lsn)
{
    int rc = ud_ns_check_kv_key(key_len, NULL);
    if (rc != 0)
        return rc;
    struct ud_mem_entry e;
    if (view_get(&r->view, UD_SPACE_KV, key, key_len, &e)) {
        if (e.kind != UD_MEM_VALUE)
            return UD_ENOTFOUND;
        *value = e.value;
        *value_len = e.value_len;
        if (lsn != NULL)
            *lsn = e.lsn;
        return 0;
    }
    /* Begun after the view was taken: a flush that commits in between is seen twice (memtable
     * and store agree), never missed. */
    if (r->snap == NULL && (rc = ud_store_snap_begin(r->ns->store, &r->snap)) != 0) {
        r->snap = NULL;
        return rc;
    }
    const uint8_t *sv;
    size_t sl;
    if ((rc = ud_store_get(r->snap, UD_SPACE_KV, key, key_len, &sv, &sl)) != 0)
        return rc;
    if (sl < 8)
        return UD_ECORRUPT;
    *value = sv + 8;
    *value_len = sl - 8;
    if (lsn != NULL)
        *lsn = ud_get_le64(sv);
    return 0;
}

void ud_kv_reader_close(struct ud_kv_reader *r)
{
    if (r->ns == NULL)
        return;
    ud_store_snap_end(r->snap);
    r->snap = NULL;
    ud_view_release(&r->view);
    r->ns = NULL;
}

int ud_ns_kv_get_with(struct ud_ns *ns, const void *key, size_t key_len, ud_kv_value_fn fn,
                      void *arg)
{
    int rc = ud_ns_check_kv_key(key_len, NULL);
    if (rc != 0)
        return rc;
    struct ud_kv_reader r = {0};
    if ((rc = reader_open(&r, ns, false)) != 0)
        return rc;
    const uint8_t *value;
    size_t len;
    uint64_t lsn;
    if ((rc = ud_kv_reader_get(&r, key, key_len, &value, &len, &lsn)) == 0)
        rc = fn(arg, value, len, lsn);
    ud_kv_reader_close(&r);
    return rc;
}

struct copy_out {
    struct ud_buf *val;
    uint64_t *lsn;
};

static int copy_value(void *arg, const uint8_t *value, size_t value_len, uint64_t lsn)
{
    struct copy_out *o = arg;
    int rc = buf_set(o->val, value, value_len);
    if (rc == 0 && o->lsn != NULL)
        *o->lsn = lsn;
    return rc;
}

int ud_ns_kv_get(struct ud_ns *ns, const void *key, size_t key_len, struct ud_buf *val,
                 uint64_t *lsn)
{
    struct copy_out o = {val, lsn};
    return ud_ns_kv_get_with(ns, key, key_len, copy_value, &o);
}

static int found(void *arg, const uint8_t *value, size_t value_len, uint64_t lsn)
{
    (void)arg, (void)value, (void)value_len, (void)lsn;
    return 0;
}

int ud_ns_kv_exists(struct ud_ns *ns, const uint8_t *key, size_t key_len)
{
    int rc = ud_ns_kv_get_with(ns, key, key_len, found, NULL);
    return rc == 0 ? 1 : rc == UD_ENOTFOUND ? 0 : -rc;
}

/* --- the k-way merge -------------------------------------------------------------------------- */

/* One source of the merge: a memtable of the view or the store cursor (last, oldest). */
struct source {
    struct ud_memtable_iter it;
    struct ud_store_cursor *cur;
    int valid;
    int advance; /* supplied or shadowed the previous key: move on before the next call */
    const uint8_t *key;
    size_t key_len;
};

struct merge {
    uint8_t space;
    uint64_t visible; /* the view's LSN */
    struct source *src;
    size_t n;
    struct ud_store_snap *snap;
    struct source inl[9];
};

/* What the merge yields for a key: its newest version. Views valid until the next merge_next. */
struct version {
    const uint8_t *key;
    size_t key_len;
    uint8_t kind; /* enum ud_mem_kind; store values are VALUE (or LOB) */
    int from_store;
    uint64_t lsn;
    const uint8_t *value;
    size_t value_len;
};

static void source_load(struct merge *m, struct source *s)
{
    if (s->cur != NULL) {
        const uint8_t *v;
        size_t vl;
        s->valid = ud_store_cursor_get(s->cur, &s->key, &s->key_len, &v, &vl) == 0;
        return;
    }
    /* Versions newer than the view are skipped: the iterator then rests on the newest visible
     * version of its key (versions of a key are in LSN order, newest first). */
    for (;;) {
        s->valid = ud_memtable_iter_valid(&s->it);
        if (!s->valid)
            return;
        struct ud_mem_entry e;
        ud_memtable_iter_entry(&s->it, &e);
        s->valid = e.space == m->space;
        s->key = e.key;
        s->key_len = e.key_len;
        if (!s->valid || e.lsn <= m->visible)
            return;
        ud_memtable_iter_next(&s->it);
    }
}

static int merge_open(struct merge *m, struct ud_ns *ns, const struct ud_view *v, uint8_t space)
{
    memset(m, 0, sizeof *m);
    m->space = space;
    m->visible = v->lsn;
    m->n = v->n + 1;
    m->src = m->inl;
    if (m->n > sizeof m->inl / sizeof m->inl[0] &&
        (m->src = calloc(m->n, sizeof *m->src)) == NULL) {
        m->n = 0;
        return UD_ENOMEM;
    }
    for (size_t i = 0; i < v->n; i++)
        ud_memtable_iter_init(&m->src[i].it, v->mems[i]);
    int rc = ud_store_snap_begin(ns->store, &m->snap);
    if (rc != 0)
        return rc;
    return ud_store_cursor_open(m->snap, space, &m->src[v->n].cur);
}

static void merge_close(struct merge *m)
{
    if (m->n > 0 && m->src[m->n - 1].cur != NULL)
        ud_store_cursor_close(m->src[m->n - 1].cur);
    if (m->snap != NULL)
        ud_store_snap_end(m->snap);
    if (m->src != m->inl)
        free(m->src);
    m->src = NULL;
}

static void merge_seek(struct merge *m, const uint8_t *key, size_t key_len)
{
    for (size_t i = 0; i < m->n; i++) {
        struct source *s = &m->src[i];
        s->advance = 0;
        if (s->cur != NULL) {
            s->valid = ud_store_cursor_seek(s->cur, key, key_len) == 0;
            if (s->valid)
                source_load(m, s);
        } else {
            ud_memtable_iter_seek(&s->it, m->space, key, key_len);
            source_load(m, s);
        }
    }
}

static int key_cmp(const uint8_t *a, size_t al, const uint8_t *b, size_t bl)
{
    size_t n = al < bl ? al : bl;
    int c = n > 0 ? memcmp(a, b, n) : 0;
    return c != 0 ? c : (al > bl) - (al < bl);
}

/* Yields the next key's newest version: 1, or 0 at the end. */
static int merge_next(struct merge *m, struct version *out)
{
    for (size_t i = 0; i < m->n; i++) {
        struct source *s = &m->src[i];
        if (!s->advance)
            continue;
        s->advance = 0;
        if (s->cur != NULL)
            s->valid = ud_store_cursor_next(s->cur) == 0;
        else
            ud_memtable_iter_next_key(&s->it);
        if (s->cur == NULL || s->valid)
            source_load(m, s);
    }
    struct source *best = NULL;
    for (size_t i = 0; i < m->n; i++) {
        struct source *s = &m->src[i];
        /* Sources are in newest-first order, so on equal keys the earlier one wins. */
        if (s->valid && (best == NULL || key_cmp(s->key, s->key_len, best->key, best->key_len) < 0))
            best = s;
    }
    if (best == NULL)
        return 0;
    for (size_t i = 0; i < m->n; i++) {
        struct source *s = &m->src[i];
        if (s->valid && key_cmp(s->key, s->key_len, best->key, best->key_len) == 0)
            s->advance = 1;
    }
    out->key = best->key;
    out->key_len = best->key_len;
    if (best->cur != NULL) {
        const uint8_t *k, *v;
        size_t kl, vl;
        ud_store_cursor_get(best->cur, &k, &kl, &v, &vl);
        out->from_store = 1;
        if (m->space == UD_SPACE_LOB) {
            out->kind = UD_MEM_LOB;
            out->lsn = vl >= UD_LOB_MANIFEST_HEADER ? ud_get_le64(v + 12) : 0;
            out->value = v;
            out->value_len = vl;
        } else {
            out->kind = UD_MEM_VALUE;
            out->lsn = vl >= 8 ? ud_get_le64(v) : 0;
            out->value = vl >= 8 ? v + 8 : v;
            out->value_len = vl >= 8 ? vl - 8 : 0;
        }
    } else {
        struct ud_mem_entry e;
        ud_memtable_iter_entry(&best->it, &e);
        out->from_store = 0;
        out->kind = e.kind;
        out->lsn = e.lsn;
        out->value = e.value;
        out->value_len = e.value_len;
    }
    return 1;
}

static int has_prefix(const uint8_t *key, size_t key_len, const uint8_t *prefix, size_t plen)
{
    return key_len >= plen && (plen == 0 || memcmp(key, prefix, plen) == 0);
}

int ud_ns_kv_scan(struct ud_ns *ns, const struct ud_scan *scan, ud_kv_cb cb, void *arg,
                  struct ud_buf *next)
{
    uint32_t limit = scan->limit ? scan->limit : SCAN_DEFAULT_LIMIT;
    const uint8_t *seek = scan->prefix;
    size_t seek_len = scan->prefix_len;
    if (key_cmp(scan->start, scan->start_len, seek, seek_len) > 0) {
        seek = scan->start;
        seek_len = scan->start_len;
    }
    if (next != NULL)
        next->len = 0;
    struct ud_view v;
    int rc = ud_view_acquire(ns, &v);
    if (rc != 0)
        return rc;
    struct merge m;
    if ((rc = merge_open(&m, ns, &v, UD_SPACE_KV)) != 0)
        goto out;
    merge_seek(&m, seek, seek_len);
    struct version x;
    uint32_t n = 0;
    while (merge_next(&m, &x)) {
        if (!has_prefix(x.key, x.key_len, scan->prefix, scan->prefix_len))
            break;
        if (x.kind != UD_MEM_VALUE)
            continue;
        if (n == limit) {
            if (next != NULL)
                rc = buf_set(next, x.key, x.key_len);
            break;
        }
        n++;
        if ((rc = cb(arg, x.key, x.key_len, x.value, x.value_len, x.lsn)) != 0)
            break;
    }
out:
    merge_close(&m);
    ud_view_release(&v);
    return rc;
}

/* --- rows ------------------------------------------------------------------------------------- */

/*
 * Walks the encoded keys of rows from a position, applying the row rules: T is the newest
 * whole-row tombstone in the memtables (it sorts first in its row); a memtable column is visible
 * when it is the newest version, a value, and newer than T; a store column only when T == 0.
 */
struct row_walk {
    uint8_t row[UD_MAX_KEY];
    size_t row_len;
    int have_row;
    uint64_t tomb; /* T of the current row */
};

/* Classifies version x: returns 1 when it is a visible column (name set), 0 otherwise;
 * *new_row is set when x starts a row other than the current one. */
static int row_step(struct row_walk *w, const struct version *x, const uint8_t **name,
                    size_t *name_len, int *new_row)
{
    uint8_t row[UD_MAX_KEY];
    size_t row_len;
    const uint8_t *col;
    size_t col_len;
    *new_row = 0;
    if (ud_row_key_decode(x->key, x->key_len, row, &row_len, &col, &col_len) != 0)
        return 0;
    if (!w->have_row || row_len != w->row_len || memcmp(row, w->row, row_len) != 0) {
        memcpy(w->row, row, row_len);
        w->row_len = row_len;
        w->have_row = 1;
        w->tomb = 0;
        *new_row = 1;
    }
    if (col_len == 0) {
        if (!x->from_store && x->kind == UD_MEM_ROW_TOMBSTONE)
            w->tomb = x->lsn;
        return 0;
    }
    if (x->from_store ? w->tomb != 0 : (x->kind != UD_MEM_VALUE || x->lsn <= w->tomb))
        return 0;
    *name = col;
    *name_len = col_len;
    return 1;
}

struct row_get_ctx {
    ud_column_cb cb;
    void *arg;
    int found;
};

/* All visible columns of one row. cb may be NULL (existence check). */
static int row_read_all(struct ud_ns *ns, const uint8_t *row, size_t row_len, ud_column_cb cb,
                        void *arg, int *found)
{
    uint8_t prefix[UD_MAX_KEY];
    size_t plen = ud_row_key_encode(prefix, row, row_len, NULL, 0);
    struct ud_view v;
    int rc = ud_view_acquire(ns, &v);
    if (rc != 0)
        return rc;
    struct merge m;
    if ((rc = merge_open(&m, ns, &v, UD_SPACE_ROW)) != 0)
        goto out;
    merge_seek(&m, prefix, plen);
    struct row_walk w = {.have_row = 0};
    struct version x;
    *found = 0;
    while (merge_next(&m, &x)) {
        if (!has_prefix(x.key, x.key_len, prefix, plen))
            break;
        const uint8_t *name;
        size_t name_len;
        int new_row;
        if (!row_step(&w, &x, &name, &name_len, &new_row))
            continue;
        *found = 1;
        if (cb == NULL)
            break;
        if ((rc = cb(arg, name, name_len, x.value, x.value_len, x.lsn)) != 0)
            break;
    }
out:
    merge_close(&m);
    ud_view_release(&v);
    return rc;
}

struct named_col {
    const uint8_t *name;
    size_t len;
};

static int named_cmp(const void *pa, const void *pb)
{
    const struct named_col *a = pa, *b = pb;
    return key_cmp(a->name, a->len, b->name, b->len);
}

/* Only the named columns: point lookups, in column-name order. */
static int row_read_named(struct ud_ns *ns, const struct ud_row *r, ud_column_cb cb, void *arg,
                          int *found)
{
    struct named_col *cols = malloc(r->ncols * sizeof *cols);
    if (cols == NULL)
        return UD_ENOMEM;
    for (size_t i = 0; i < r->ncols; i++)
        cols[i] = (struct named_col){r->cols[i].name, r->cols[i].name_len};
    qsort(cols, r->ncols, sizeof *cols, named_cmp);
    struct ud_view v;
    int rc = ud_view_acquire(ns, &v);
    if (rc != 0) {
        free(cols);
        return rc;
    }
    struct ud_store_snap *snap = NULL;
    uint8_t key[UD_MAX_KEY];
    size_t plen = ud_row_key_encode(key, r->key, r->key_len, NULL, 0);
    struct ud_mem_entry e;
    uint64_t tomb = 0;
    if (view_get(&v, UD_SPACE_ROW, key, plen, &e) && e.kind == UD_MEM_ROW_TOMBSTONE)
        tomb = e.lsn;
    *found = 0;
    for (size_t i = 0; i < r->ncols && rc == 0; i++) {
        if (cols[i].len == 0 || (i > 0 && named_cmp(&cols[i - 1], &cols[i]) == 0))
            continue;
        if (ud_ns_check_row_key(r->key, r->key_len, cols[i].len, NULL) != 0)
            continue;
        size_t kl = ud_row_key_encode(key, r->key, r->key_len, cols[i].name, cols[i].len);
        if (view_get(&v, UD_SPACE_ROW, key, kl, &e)) {
            if (e.kind != UD_MEM_VALUE || e.lsn <= tomb)
                continue;
            *found = 1;
            rc = cb(arg, cols[i].name, cols[i].len, e.value, e.value_len, e.lsn);
            continue;
        }
        if (tomb != 0)
            continue;
        if (snap == NULL && (rc = ud_store_snap_begin(ns->store, &snap)) != 0)
            break;
        const uint8_t *sv;
        size_t sl;
        int g = ud_store_get(snap, UD_SPACE_ROW, key, kl, &sv, &sl);
        if (g == UD_ENOTFOUND)
            continue;
        if (g == 0 && sl < 8)
            g = UD_ECORRUPT;
        if (g != 0) {
            rc = g;
            break;
        }
        *found = 1;
        rc = cb(arg, cols[i].name, cols[i].len, sv + 8, sl - 8, ud_get_le64(sv));
    }
    if (snap != NULL)
        ud_store_snap_end(snap);
    ud_view_release(&v);
    free(cols);
    return rc;
}

int ud_ns_row_get(struct ud_ns *ns, const struct ud_row *row, ud_column_cb cb, void *arg)
{
    int rc = ud_ns_check_row_key(row->key, row->key_len, 0, NULL);
    if (rc != 0)
        return rc;
    int found = 0;
    if (row->ncols == 0)
        rc = row_read_all(ns, row->key, row->key_len, cb, arg, &found);
    else
        rc = row_read_named(ns, row, cb, arg, &found);
    if (rc == 0 && !found)
        rc = UD_ENOTFOUND;
    return rc;
}

int ud_ns_row_exists(struct ud_ns *ns, const uint8_t *row, size_t row_len)
{
    int found = 0;
    int rc = row_read_all(ns, row, row_len, NULL, NULL, &found);
    return rc != 0 ? -rc : found;
}

int ud_ns_row_scan(struct ud_ns *ns, const struct ud_scan *scan, ud_row_column_cb cb, void *arg,
                   struct ud_buf *next)
{
    uint32_t limit = scan->limit ? scan->limit : SCAN_DEFAULT_LIMIT;
    if (next != NULL)
        next->len = 0;
    /* esc() preserves order and prefixes, so the scan runs on encoded keys. */
    uint8_t *prefix = malloc(2 * scan->prefix_len + 1);
    uint8_t *start = malloc(2 * scan->start_len + 1);
    int rc = UD_ENOMEM;
    if (prefix == NULL || start == NULL) {
        free(prefix);
        free(start);
        return rc;
    }
    size_t plen = 0, slen = 0;
    for (size_t i = 0; i < scan->prefix_len; i++) {
        prefix[plen++] = scan->prefix[i];
        if (scan->prefix[i] == 0)
            prefix[plen++] = 0xFF;
    }
    for (size_t i = 0; i < scan->start_len; i++) {
        start[slen++] = scan->start[i];
        if (scan->start[i] == 0)
            start[slen++] = 0xFF;
    }
    const uint8_t *seek = key_cmp(start, slen, prefix, plen) > 0 ? start : prefix;
    size_t seek_len = seek == start ? slen : plen;
    struct ud_view v;
    if ((rc = ud_view_acquire(ns, &v)) != 0)
        goto free_keys;
    struct merge m;
    if ((rc = merge_open(&m, ns, &v, UD_SPACE_ROW)) != 0)
        goto out;
    merge_seek(&m, seek, seek_len);
    struct row_walk *w = calloc(1, sizeof *w);
    if (w == NULL) {
        rc = UD_ENOMEM;
        goto out;
    }
    struct version x;
    uint32_t rows = 0;
    int row_counted = 0;
    while (merge_next(&m, &x)) {
        if (!has_prefix(x.key, x.key_len, prefix, plen))
            break;
        const uint8_t *name;
        size_t name_len;
        int new_row;
        int visible = row_step(w, &x, &name, &name_len, &new_row);
        if (new_row)
            row_counted = 0;
        if (!visible)
            continue;
        if (!row_counted) {
            if (rows == limit) {
                if (next != NULL)
                    rc = buf_set(next, w->row, w->row_len);
                break;
            }
            rows++;
            row_counted = 1;
        }
        if ((rc = cb(arg, w->row, w->row_len, name, name_len, x.value, x.value_len, x.lsn)) != 0)
            break;
    }
    free(w);
out:
    merge_close(&m);
    ud_view_release(&v);
free_keys:
    free(prefix);
    free(start);
    return rc;
}

/* --- LOB manifests ---------------------------------------------------------------------------- */

/* Copies the visible manifest of key into out: 0, UD_ENOTFOUND or an error. */
int ud_ns_lob_manifest_get(struct ud_ns *ns, const uint8_t *key, size_t key_len, struct ud_buf *out)
{
    struct ud_view v;
    int rc = ud_view_acquire(ns, &v);
    if (rc != 0)
        return rc;
    struct ud_mem_entry e;
    if (view_get(&v, UD_SPACE_LOB, key, key_len, &e)) {
        rc = e.kind == UD_MEM_LOB ? buf_set(out, e.value, e.value_len) : UD_ENOTFOUND;
        ud_view_release(&v);
        return rc;
    }
    struct ud_store_snap *snap;
    if ((rc = ud_store_snap_begin(ns->store, &snap)) == 0) {
        const uint8_t *sv;
        size_t sl;
        if ((rc = ud_store_get(snap, UD_SPACE_LOB, key, key_len, &sv, &sl)) == 0)
            rc = buf_set(out, sv, sl);
        ud_store_snap_end(snap);
    }
    ud_view_release(&v);
    return rc;
}

int ud_ns_lob_exists(struct ud_ns *ns, const uint8_t *key, size_t key_len)
{
    struct ud_buf b = {0};
    int rc = ud_ns_lob_manifest_get(ns, key, key_len, &b);
    ud_buf_free(&b);
    return rc == 0 ? 1 : rc == UD_ENOTFOUND ? 0 : -rc;
}
