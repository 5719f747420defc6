/* The apply function: validates a record against the namespace, gives it the next LSN, logs it and
 * applies it to the memtable or the open-transaction table (docs/engine.md "Apply"). */
#include <stdlib.h>
#include <string.h>

#include "core/endian.h"
#include "core/engine_int.h"
#include "core/err.h"
#include "core/keyspace.h"
#include "core/log.h"

/* --- limits ----------------------------------------------------------------------------------- */

int ud_ns_check_kv_key(size_t key_len, char *errmsg)
{
    if (key_len == 0)
        return ud_errf(errmsg, UD_EINVAL, "kv key is empty");
    if (key_len > UD_MAX_KV_KEY)
        return ud_errf(errmsg, UD_ELIMIT, "kv key is %zu bytes; the limit is %d", key_len,
                       UD_MAX_KV_KEY);
    return 0;
}

int ud_ns_check_lob_key(size_t key_len, char *errmsg)
{
    if (key_len == 0)
        return ud_errf(errmsg, UD_EINVAL, "lob key is empty");
    if (key_len > UD_MAX_LOB_KEY)
        return ud_errf(errmsg, UD_ELIMIT, "lob key is %zu bytes; the limit is %d", key_len,
                       UD_MAX_LOB_KEY);
    return 0;
}

int ud_ns_check_row_key(const uint8_t *row, size_t row_len, size_t column_len, char *errmsg)
{
    if (row_len == 0)
        return ud_errf(errmsg, UD_EINVAL, "row key is empty");
    /* The escaped row key plus the column; the 2-byte separator is outside the 509. */
    size_t encoded = ud_row_prefix_len(row, row_len) - 2 + column_len;
    if (encoded > UD_MAX_ROW_KEY_ENCODED)
        return ud_errf(errmsg, UD_ELIMIT,
                       "row key (%zu bytes) and column (%zu bytes) encode to %zu bytes; the limit "
                       "is %d (each NUL byte in a row key counts twice)",
                       row_len, column_len, encoded, UD_MAX_ROW_KEY_ENCODED);
    return 0;
}

/* --- memtable items: what one record or commit inserts ---------------------------------------- */

struct item {
    uint8_t space;
    uint8_t kind;
    uint32_t key_len;
    uint32_t value_len;
    const uint8_t *key;
    const uint8_t *value;
    uint64_t seq; /* position in the record: the last write of a key in one record wins */
};

/* Bump memory for encoded row keys and manifests: pointers stay valid while items are built. */
struct block {
    struct block *next;
    size_t used, cap;
    uint8_t data[];
};

struct items {
    struct item *v;
    size_t n, cap;
    struct block *blocks;
    struct item inl[16];
};

static void items_init(struct items *it)
{
    it->v = it->inl;
    it->n = 0;
    it->cap = sizeof it->inl / sizeof it->inl[0];
    it->blocks = NULL;
}

static void items_free(struct items *it)
{
    if (it->v != it->inl)
        free(it->v);
    while (it->blocks != NULL) {
        struct block *b = it->blocks;
        it->blocks = b->next;
        free(b);
    }
    items_init(it);
}

static uint8_t *items_alloc(struct items *it, size_t len)
{
    struct block *b = it->blocks;
    if (b == NULL || b->cap - b->used < len) {
        size_t cap = len > (64u << 10) ? len : (64u << 10);
        b = malloc(sizeof *b + cap);
        if (b == NULL)
            return NULL;
        b->used = 0;
        b->cap = cap;
        b->next = it->blocks;
        it->blocks = b;
    }
    uint8_t *p = b->data + b->used;
    b->used += len;
    return p;
}

static int items_add(struct items *it, uint8_t space, uint8_t kind, const uint8_t *key,
                     size_t key_len, const uint8_t *value, size_t value_len)
{
    if (it->n == it->cap) {
        size_t cap = it->cap * 2;
        struct item *v = malloc(cap * sizeof *v);
        if (v == NULL)
            return UD_ENOMEM;
        memcpy(v, it->v, it->n * sizeof *v);
        if (it->v != it->inl)
            free(it->v);
        it->v = v;
        it->cap = cap;
    }
    it->v[it->n] = (struct item){.space = space,
                                 .kind = kind,
                                 .key_len = (uint32_t)key_len,
                                 .value_len = (uint32_t)value_len,
                                 .key = key,
                                 .value = value,
                                 .seq = it->n};
    it->n++;
    return 0;
}

static int item_key_cmp(const struct item *a, const struct item *b)
{
    if (a->space != b->space)
        return a->space < b->space ? -1 : 1;
    size_t n = a->key_len < b->key_len ? a->key_len : b->key_len;
    int c = n > 0 ? memcmp(a->key, b->key, n) : 0;
    if (c != 0)
        return c;
    return (a->key_len > b->key_len) - (a->key_len < b->key_len);
}

/* Key order, and within a key the latest write first. */
static int item_cmp(const void *pa, const void *pb)
{
    const struct item *a = pa, *b = pb;
    int c = item_key_cmp(a, b);
    if (c != 0)
        return c;
    return (a->seq < b->seq) - (a->seq > b->seq);
}

/*
 * Inserts the newest write of each key with one LSN. Versions with equal (key, lsn) in a memtable
 * would have no defined order, so a key written twice in one record or commit is inserted once.
 */
static int items_insert(struct ud_ns *ns, struct items *it, uint64_t lsn)
{
    if (it->n > 1)
        qsort(it->v, it->n, sizeof *it->v, item_cmp);
    for (size_t i = 0; i < it->n; i++) {
        const struct item *x = &it->v[i];
        if (i > 0 && item_key_cmp(&it->v[i - 1], x) == 0)
            continue;
        int rc = ud_memtable_put(ns->active, x->space, x->key, x->key_len, lsn, x->kind, x->value,
                                 x->value_len);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* --- entries of KV and row records ------------------------------------------------------------ */

static struct ud_record entries_view(const uint8_t *entries, size_t len, uint32_t count)
{
    struct ud_record r;
    memset(&r, 0, sizeof r);
    r.entry_count = count;
    r.entries = entries;
    r.entries_len = len;
    return r;
}

/* Checks the model limits of every entry of a KV, row or LOB record. */
static int validate_entries(const struct ud_record *rec, uint8_t type, char *errmsg)
{
    struct ud_entry_iter it;
    struct ud_entry e;
    ud_entry_iter_init(&it, rec);
    while (ud_entry_iter_next(&it, &e)) {
        int rc;
        if (type == UD_ENTRY_KV) {
            if ((rc = ud_ns_check_kv_key(e.key_len, errmsg)) != 0)
                return rc;
        } else if (type == UD_ENTRY_LOB) {
            if ((rc = ud_ns_check_lob_key(e.key_len, errmsg)) != 0)
                return rc;
        } else {
            if ((rc = ud_ns_check_row_key(e.key, e.key_len, 0, errmsg)) != 0)
                return rc;
            struct ud_column_iter ci;
            struct ud_column c;
            ud_column_iter_init(&ci, &e);
            while (ud_column_iter_next(&ci, &c)) {
                char k[96];
                /* The empty column name is the row's own key (whole-row tombstones). */
                if (c.name_len == 0)
                    return ud_errf(errmsg, UD_EINVAL, "row %s: a column name is empty",
                                   ud_ns_fmt_key(k, sizeof k, e.key, e.key_len));
                if ((rc = ud_ns_check_row_key(e.key, e.key_len, c.name_len, errmsg)) != 0)
                    return rc;
            }
        }
    }
    return 0;
}

/*
 * UPDATE: every key or row named by the entries must exist. Checked only for new records: replay
 * accepts what was accepted once, and could not check again in any case. Records before the
 * checkpoint were checked against a state that is gone, and after it the store may be ahead of
 * its checkpoint (a flush stopped between two of its transactions), so an update of a key that a
 * later record deleted would find it absent.
 */
static int check_exist(struct ud_ns *ns, const struct ud_record *rec, uint8_t type, char *errmsg)
{
    struct ud_entry_iter it;
    struct ud_entry e;
    ud_entry_iter_init(&it, rec);
    while (ud_entry_iter_next(&it, &e)) {
        int r;
        if (type == UD_ENTRY_KV)
            r = ud_ns_kv_exists(ns, e.key, e.key_len);
        else if (type == UD_ENTRY_ROW)
            r = ud_ns_row_exists(ns, e.key, e.key_len);
        else
            r = ud_ns_lob_exists(ns, e.key, e.key_len);
        char k[96];
        ud_ns_fmt_key(k, sizeof k, e.key, e.key_len);
        if (r < 0)
            return ud_errf(errmsg, ud_err_local(-r), "update: looking up %s %s: %s",
                           ud_entry_type_name(type), k, ud_strerror(-r));
        if (r == 0)
            return ud_errf(errmsg, UD_ENOTFOUND, "update: %s %s does not exist",
                           type == UD_ENTRY_KV ? "kv key" : ud_entry_type_name(type), k);
    }
    return 0;
}

/* Turns validated KV or row entries into memtable items. */
static int collect_entries(struct items *out, const struct ud_record *rec, uint8_t type, uint8_t op)
{
    struct ud_entry_iter it;
    struct ud_entry e;
    ud_entry_iter_init(&it, rec);
    while (ud_entry_iter_next(&it, &e)) {
        if (type == UD_ENTRY_KV) {
            uint8_t kind = op == UD_OP_DELETE ? UD_MEM_TOMBSTONE : UD_MEM_VALUE;
            const uint8_t *v = op == UD_OP_DELETE ? NULL : e.value;
            size_t vl = op == UD_OP_DELETE ? 0 : e.value_len;
            if (items_add(out, UD_SPACE_KV, kind, e.key, e.key_len, v, vl) != 0)
                return UD_ENOMEM;
            continue;
        }
        size_t plen = ud_row_prefix_len(e.key, e.key_len);
        if (op == UD_OP_DELETE && e.column_count == 0) {
            uint8_t *k = items_alloc(out, plen);
            if (k == NULL)
                return UD_ENOMEM;
            ud_row_key_encode(k, e.key, e.key_len, NULL, 0);
            if (items_add(out, UD_SPACE_ROW, UD_MEM_ROW_TOMBSTONE, k, plen, NULL, 0) != 0)
                return UD_ENOMEM;
            continue;
        }
        struct ud_column_iter ci;
        struct ud_column c;
        ud_column_iter_init(&ci, &e);
        while (ud_column_iter_next(&ci, &c)) {
            uint8_t *k = items_alloc(out, plen + c.name_len);
            if (k == NULL)
                return UD_ENOMEM;
            size_t kl = ud_row_key_encode(k, e.key, e.key_len, c.name, c.name_len);
            UD_ASSERT(kl == plen + c.name_len);
            int rc = op == UD_OP_DELETE
                         ? items_add(out, UD_SPACE_ROW, UD_MEM_TOMBSTONE, k, kl, NULL, 0)
                         : items_add(out, UD_SPACE_ROW, UD_MEM_VALUE, k, kl, c.value, c.value_len);
            if (rc != 0)
                return UD_ENOMEM;
        }
    }
    return 0;
}

/* Builds a LOB manifest in items memory. chunks == NULL: one chunk (one_lsn, one_len). */
static uint8_t *build_manifest(struct items *it, uint64_t commit_lsn, uint64_t size,
                               const struct ud_txn_chunk *chunks, size_t n, uint64_t one_lsn,
                               uint32_t one_len, size_t *len)
{
    *len = UD_LOB_MANIFEST_HEADER + n * UD_LOB_MANIFEST_CHUNK;
    uint8_t *m = items_alloc(it, *len);
    if (m == NULL)
        return NULL;
    ud_put_le32(m, UD_LOB_MANIFEST_VERSION);
    ud_put_le64(m + 4, size);
    ud_put_le64(m + 12, commit_lsn);
    ud_put_le32(m + 20, (uint32_t)n);
    for (size_t i = 0; i < n; i++) {
        uint8_t *c = m + UD_LOB_MANIFEST_HEADER + i * UD_LOB_MANIFEST_CHUNK;
        ud_put_le64(c, chunks != NULL ? chunks[i].lsn : one_lsn);
        ud_put_le32(c + 8, chunks != NULL ? chunks[i].len : one_len);
    }
    return m;
}

/* --- the transaction table -------------------------------------------------------------------- */

struct ud_txn *ud_ns_txn_find(struct ud_ns *ns, const uint8_t id[UD_TXN_ID_SIZE])
{
    for (size_t i = 0; i < ns->ntxns; i++)
        if (memcmp(ns->txns[i]->id, id, UD_TXN_ID_SIZE) == 0)
            return ns->txns[i];
    return NULL;
}

void ud_ns_txn_free(struct ud_txn *t)
{
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->nparts; i++)
        free(t->parts[i].entries);
    free(t->parts);
    free(t->lob_key);
    free(t->chunks);
    free(t);
}

static void txn_remove(struct ud_ns *ns, struct ud_txn *t)
{
    for (size_t i = 0; i < ns->ntxns; i++) {
        if (ns->txns[i] == t) {
            ns->txns[i] = ns->txns[--ns->ntxns];
            break;
        }
    }
    __atomic_store_n(&ns->open_txns, (uint32_t)ns->ntxns, __ATOMIC_RELAXED);
    ud_ns_txn_free(t);
}

void ud_ns_txns_free_all(struct ud_ns *ns)
{
    for (size_t i = 0; i < ns->ntxns; i++)
        ud_ns_txn_free(ns->txns[i]);
    free(ns->txns);
    ns->txns = NULL;
    ns->ntxns = ns->cap_txns = 0;
}

static int grow(void **arr, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    size_t n = *cap ? *cap * 2 : 8;
    while (n < need)
        n *= 2;
    void *p = realloc(*arr, n * elem);
    if (p == NULL)
        return UD_ENOMEM;
    *arr = p;
    *cap = n;
    return 0;
}

static int in_replay_checkpoint(const struct ud_ns *ns, const uint8_t id[UD_TXN_ID_SIZE])
{
    const struct ud_checkpoint *cp = ns->replay_cp;
    for (uint32_t i = 0; cp != NULL && i < cp->txn_count; i++)
        if (memcmp(cp->txns[i].id, id, UD_TXN_ID_SIZE) == 0)
            return 1;
    return 0;
}

/* --- logging the record ----------------------------------------------------------------------- */

/*
 * The point of no return: in LIVE mode the record gets its LSN and goes to the WAL; replayed
 * records already are in the WAL. Everything that can be rejected must be checked before.
 */
static int log_record(struct ud_ns *ns, enum ud_apply_mode mode, const uint8_t *record, size_t len,
                      uint8_t *stamp, char *errmsg)
{
    uint64_t next = ns->last_lsn + 1;
    if (mode == UD_APPLY_LIVE) {
        uint64_t carried = ud_record_get_lsn(record);
        if (stamp != NULL)
            ud_record_set_lsn(stamp, next);
        uint64_t got = 0;
        int rc = 0;
        if (ns->wal_reserved) {
            ud_wal_commit(ns->wal, &got, NULL);
            ns->wal_reserved = false;
        } else {
            rc = ud_wal_append(ns->wal, record, len, &got, NULL);
        }
        if (rc != 0) {
            if (stamp != NULL)
                ud_record_set_lsn(stamp, carried);
            /* The segment size is configuration: every writer refuses the same record. */
            if (rc == UD_ELIMIT)
                return ud_errf(errmsg, rc, "record of %zu bytes does not fit in a WAL segment",
                               len);
            return ud_errf(errmsg, ud_err_local(rc), "namespace %s: WAL append of LSN %llu: %s",
                           ns->name, (unsigned long long)next, ud_strerror(rc));
        }
        /* The WAL and the engine count the same dense sequence. */
        UD_ASSERT(got == next);
    }
    __atomic_store_n(&ns->last_lsn, next, __ATOMIC_RELEASE);
    return 0;
}

static int after_log_failure(struct ud_ns *ns, int rc, uint64_t lsn, char *errmsg)
{
    ns->failed = 1;
    ud_error(UD_ENGINE_LOG,
             "namespace %s: memtable insert of LSN %llu failed (%s); applies are "
             "refused until the namespace is reopened",
             ns->name, (unsigned long long)lsn, ud_strerror(rc));
    /* Logged: whatever the insert said, the record is not rejected. */
    return ud_errf(errmsg, ud_err_local(rc),
                   "namespace %s: LSN %llu was logged but not applied (%s); reopen "
                   "the namespace to recover it from the WAL",
                   ns->name, (unsigned long long)lsn, ud_strerror(rc));
}

/* --- per transaction state -------------------------------------------------------------------- */

static int apply_none(struct ud_ns *ns, enum ud_apply_mode mode, const struct ud_record *rec,
                      const uint8_t *record, size_t len, uint8_t *stamp, char *errmsg)
{
    if (mode == UD_APPLY_REPLAY_TXN)
        return log_record(ns, mode, record, len, stamp, errmsg);
    int rc = validate_entries(rec, rec->entry_type, errmsg);
    if (rc != 0)
        return rc;
    uint64_t lsn = ns->last_lsn + 1;
    struct items it;
    items_init(&it);
    if (rec->entry_type == UD_ENTRY_LOB) {
        /* A standalone LOB write: the whole object is this record's one entry. */
        struct ud_entry_iter ei;
        struct ud_entry e;
        ud_entry_iter_init(&ei, rec);
        ud_entry_iter_next(&ei, &e);
        if (rec->op == UD_OP_DELETE) {
            rc = items_add(&it, UD_SPACE_LOB, UD_MEM_TOMBSTONE, e.key, e.key_len, NULL, 0);
        } else {
            size_t ml;
            uint8_t *m = build_manifest(&it, lsn, e.value_len, NULL, e.value_len > 0 ? 1 : 0, lsn,
                                        e.value_len, &ml);
            rc = m == NULL ? UD_ENOMEM
                           : items_add(&it, UD_SPACE_LOB, UD_MEM_LOB, e.key, e.key_len, m, ml);
        }
    } else {
        rc = collect_entries(&it, rec, rec->entry_type, rec->op);
    }
    if (rc != 0) {
        items_free(&it);
        return ud_errf(errmsg, rc, "namespace %s: building the write: %s", ns->name,
                       ud_strerror(rc));
    }
    rc = log_record(ns, mode, record, len, stamp, errmsg);
    if (rc == 0 && (rc = items_insert(ns, &it, lsn)) != 0)
        rc = after_log_failure(ns, rc, lsn, errmsg);
    items_free(&it);
    return rc;
}

static int apply_begin(struct ud_ns *ns, enum ud_apply_mode mode, const struct ud_record *rec,
                       const uint8_t *record, size_t len, uint8_t *stamp, char *errmsg)
{
    if (mode == UD_APPLY_REPLAY_TXN && !in_replay_checkpoint(ns, rec->txn_id))
        return log_record(ns, mode, record, len, stamp, errmsg);
    char hex[33];
    struct ud_txn *old = ud_ns_txn_find(ns, rec->txn_id);
    if (old != NULL)
        return ud_errf(errmsg, UD_ETXN, "transaction %s is already open (began at LSN %llu)",
                       ud_ns_fmt_txn_id(hex, rec->txn_id), (unsigned long long)old->begin_lsn);
    struct ud_txn *t = calloc(1, sizeof *t);
    if (t == NULL || grow((void **)&ns->txns, &ns->cap_txns, ns->ntxns + 1, sizeof *ns->txns)) {
        free(t);
        return ud_errf(errmsg, UD_ENOMEM, "namespace %s: out of memory for a transaction",
                       ns->name);
    }
    memcpy(t->id, rec->txn_id, UD_TXN_ID_SIZE);
    t->op = rec->op;
    t->type = rec->entry_type;
    t->begin_lsn = ns->last_lsn + 1;
    t->last_lsn = t->begin_lsn;
    int rc = log_record(ns, mode, record, len, stamp, errmsg);
    if (rc != 0) {
        free(t);
        return rc;
    }
    ns->txns[ns->ntxns++] = t;
    __atomic_store_n(&ns->open_txns, (uint32_t)ns->ntxns, __ATOMIC_RELAXED);
    return 0;
}

/* Finds the transaction a PREPARE/COMMIT/ABORT names and checks that the record matches it. */
static int match_txn(struct ud_ns *ns, const struct ud_record *rec, struct ud_txn **out,
                     char *errmsg)
{
    char hex[33];
    ud_ns_fmt_txn_id(hex, rec->txn_id);
    struct ud_txn *t = ud_ns_txn_find(ns, rec->txn_id);
    if (t == NULL)
        return ud_errf(errmsg, UD_ENOTFOUND, "transaction not found: %s (unknown or finished)",
                       hex);
    if (rec->txn_begin_lsn != t->begin_lsn)
        return ud_errf(errmsg, UD_ETXN, "transaction %s began at LSN %llu; the record says %llu",
                       hex, (unsigned long long)t->begin_lsn,
                       (unsigned long long)rec->txn_begin_lsn);
    if (rec->txn_state == UD_TXN_PREPARE) {
        if (rec->entry_type != t->type)
            return ud_errf(errmsg, UD_ETXN, "transaction %s is a %s transaction; this part is %s",
                           hex, ud_entry_type_name(t->type), ud_entry_type_name(rec->entry_type));
        if (rec->op != t->op)
            return ud_errf(errmsg, UD_ETXN,
                           "transaction %s was begun with operation %s; this part says %s", hex,
                           ud_op_name(t->op), ud_op_name(rec->op));
    }
    *out = t;
    return 0;
}

static int prepare_lob(struct ud_ns *ns, enum ud_apply_mode mode, struct ud_txn *t,
                       const struct ud_record *rec, const uint8_t *record, size_t len,
                       uint8_t *stamp, char *errmsg)
{
    char hex[33], k[96];
    struct ud_entry_iter ei;
    struct ud_entry e;
    ud_entry_iter_init(&ei, rec);
    ud_entry_iter_next(&ei, &e);
    int rc = ud_ns_check_lob_key(e.key_len, errmsg);
    if (rc != 0)
        return rc;
    if (t->lob_key != NULL &&
        (t->lob_key_len != e.key_len || memcmp(t->lob_key, e.key, e.key_len) != 0))
        return ud_errf(errmsg, UD_ETXN,
                       "transaction %s holds lob key %s; a lob transaction holds exactly one key",
                       ud_ns_fmt_txn_id(hex, t->id),
                       ud_ns_fmt_key(k, sizeof k, t->lob_key, t->lob_key_len));
    if (t->op != UD_OP_DELETE && rec->lob_offset != t->bytes)
        return ud_errf(errmsg, UD_ETXN, "lob chunk at offset %llu; the expected offset is %llu",
                       (unsigned long long)rec->lob_offset, (unsigned long long)t->bytes);
    if (t->op == UD_OP_UPDATE && t->lob_key == NULL && mode == UD_APPLY_LIVE &&
        (rc = check_exist(ns, rec, UD_ENTRY_LOB, errmsg)) != 0)
        return rc;
    uint8_t *key = NULL;
    if (t->lob_key == NULL && (key = malloc(e.key_len)) == NULL)
        return ud_errf(errmsg, UD_ENOMEM, "out of memory for a lob key");
    if (grow((void **)&t->chunks, &t->cap_chunks, t->nchunks + 1, sizeof *t->chunks) != 0) {
        free(key);
        return ud_errf(errmsg, UD_ENOMEM, "out of memory for a lob chunk reference");
    }
    uint64_t lsn = ns->last_lsn + 1;
    if ((rc = log_record(ns, mode, record, len, stamp, errmsg)) != 0) {
        free(key);
        return rc;
    }
    t->last_lsn = lsn;
    if (key != NULL) {
        memcpy(key, e.key, e.key_len);
        t->lob_key = key;
        t->lob_key_len = e.key_len;
    }
    /* Only where the bytes are: the chunk itself stays in the WAL (and later the store). */
    if (t->op != UD_OP_DELETE && e.value_len > 0) {
        t->chunks[t->nchunks++] =
            (struct ud_txn_chunk){.lsn = lsn, .offset = t->bytes, .len = e.value_len};
        t->bytes += e.value_len;
    }
    return 0;
}

static int apply_prepare(struct ud_ns *ns, enum ud_apply_mode mode, const struct ud_record *rec,
                         const uint8_t *record, size_t len, uint8_t *stamp, char *errmsg)
{
    struct ud_txn *t = NULL;
    if (mode == UD_APPLY_REPLAY_TXN && ud_ns_txn_find(ns, rec->txn_id) == NULL)
        return log_record(ns, mode, record, len, stamp, errmsg);
    int rc = match_txn(ns, rec, &t, errmsg);
    if (rc != 0)
        return rc;
    if (t->type == UD_ENTRY_LOB)
        return prepare_lob(ns, mode, t, rec, record, len, stamp, errmsg);
    if ((rc = validate_entries(rec, t->type, errmsg)) != 0)
        return rc;
    /* Existence at prepare time is a courtesy to the client (fail early); the check that counts
     * is at commit. Replayed records are not checked again (check_exist). */
    if (t->op == UD_OP_UPDATE && mode == UD_APPLY_LIVE &&
        (rc = check_exist(ns, rec, t->type, errmsg)) != 0)
        return rc;
    char hex[33];
    /* The cap is configuration, not log content: replay must accept what was once accepted. */
    if (mode == UD_APPLY_LIVE && t->bytes + rec->entries_len > ns->opts.txn_max_bytes)
        return ud_errf(errmsg, UD_ELIMIT,
                       "transaction %s holds %llu bytes; this part of %zu bytes exceeds the "
                       "limit of %llu",
                       ud_ns_fmt_txn_id(hex, t->id), (unsigned long long)t->bytes, rec->entries_len,
                       (unsigned long long)ns->opts.txn_max_bytes);
    uint8_t *copy = malloc(rec->entries_len);
    if (copy == NULL ||
        grow((void **)&t->parts, &t->cap_parts, t->nparts + 1, sizeof *t->parts) != 0) {
        free(copy);
        return ud_errf(errmsg, UD_ENOMEM, "out of memory for a transaction part");
    }
    memcpy(copy, rec->entries, rec->entries_len);
    uint64_t lsn = ns->last_lsn + 1;
    if ((rc = log_record(ns, mode, record, len, stamp, errmsg)) != 0) {
        free(copy);
        return rc;
    }
    t->last_lsn = lsn;
    t->parts[t->nparts++] =
        (struct ud_txn_part){.entries = copy, .len = rec->entries_len, .count = rec->entry_count};
    t->bytes += rec->entries_len;
    return 0;
}

static int apply_commit(struct ud_ns *ns, enum ud_apply_mode mode, const struct ud_record *rec,
                        const uint8_t *record, size_t len, uint8_t *stamp, char *errmsg)
{
    /* A transaction open at the checkpoint cannot have finished before it. */
    if (mode == UD_APPLY_REPLAY_TXN)
        return log_record(ns, mode, record, len, stamp, errmsg);
    struct ud_txn *t = NULL;
    int rc = match_txn(ns, rec, &t, errmsg);
    if (rc != 0)
        return rc;
    uint64_t lsn = ns->last_lsn + 1;
    char hex[33];
    struct items it;
    items_init(&it);
    if (t->type == UD_ENTRY_LOB) {
        if (t->lob_key == NULL) {
            rc = ud_errf(errmsg, UD_ETXN, "lob transaction %s has no key: append a chunk first",
                         ud_ns_fmt_txn_id(hex, t->id));
            goto out;
        }
        if (t->op == UD_OP_UPDATE && mode == UD_APPLY_LIVE) {
            int r = ud_ns_lob_exists(ns, t->lob_key, t->lob_key_len);
            if (r <= 0) {
                char k[96];
                ud_ns_fmt_key(k, sizeof k, t->lob_key, t->lob_key_len);
                rc = r < 0 ? ud_errf(errmsg, ud_err_local(-r), "update: looking up lob %s: %s", k,
                                     ud_strerror(-r))
                           : ud_errf(errmsg, UD_ENOTFOUND, "update: lob %s does not exist", k);
                goto out;
            }
        }
        if (t->op == UD_OP_DELETE) {
            rc =
                items_add(&it, UD_SPACE_LOB, UD_MEM_TOMBSTONE, t->lob_key, t->lob_key_len, NULL, 0);
        } else {
            size_t ml;
            uint8_t *m = build_manifest(&it, lsn, t->bytes, t->chunks, t->nchunks, 0, 0, &ml);
            rc = m == NULL
                     ? UD_ENOMEM
                     : items_add(&it, UD_SPACE_LOB, UD_MEM_LOB, t->lob_key, t->lob_key_len, m, ml);
        }
    } else {
        for (size_t i = 0; i < t->nparts && rc == 0; i++) {
            struct ud_record part =
                entries_view(t->parts[i].entries, t->parts[i].len, t->parts[i].count);
            if (t->op == UD_OP_UPDATE && mode == UD_APPLY_LIVE &&
                (rc = check_exist(ns, &part, t->type, errmsg)) != 0)
                goto out;
            rc = collect_entries(&it, &part, t->type, t->op);
        }
    }
    if (rc != 0) {
        rc = ud_errf(errmsg, rc, "commit of transaction %s: %s", ud_ns_fmt_txn_id(hex, t->id),
                     ud_strerror(rc));
        goto out;
    }
    if ((rc = log_record(ns, mode, record, len, stamp, errmsg)) != 0)
        goto out;
    /* Every part becomes visible with the commit's LSN, in one pass under the apply lock. */
    if ((rc = items_insert(ns, &it, lsn)) != 0)
        rc = after_log_failure(ns, rc, lsn, errmsg);
    items_free(&it);
    txn_remove(ns, t);
    return rc;
out:
    items_free(&it);
    return rc;
}

static int apply_abort(struct ud_ns *ns, enum ud_apply_mode mode, const struct ud_record *rec,
                       const uint8_t *record, size_t len, uint8_t *stamp, char *errmsg)
{
    if (mode == UD_APPLY_REPLAY_TXN)
        return log_record(ns, mode, record, len, stamp, errmsg);
    struct ud_txn *t = NULL;
    int rc = match_txn(ns, rec, &t, errmsg);
    if (rc != 0)
        return rc;
    if ((rc = log_record(ns, mode, record, len, stamp, errmsg)) != 0)
        return rc;
    txn_remove(ns, t);
    return 0;
}

int ud_ns_apply_core(struct ud_ns *ns, enum ud_apply_mode mode, const uint8_t *record, size_t len,
                     uint8_t *stamp, uint64_t *lsn, char *errmsg)
{
    struct ud_record rec;
    char derr[UD_ERRMSG_SIZE] = "";
    int rc = ud_record_decode(record, len, &rec, derr);
    if (rc != 0)
        return ud_errf(errmsg, UD_ECORRUPT, "record does not decode: %s", derr);
    if (ns->failed)
        return ud_errf(errmsg, UD_EIO, "namespace %s failed earlier; reopen it to recover",
                       ns->name);
    uint64_t next = ns->last_lsn + 1;
    if (rec.lsn != 0 && rec.lsn != next)
        return ud_errf(errmsg, UD_ERANGE, "record carries LSN %llu; the next LSN is %llu",
                       (unsigned long long)rec.lsn, (unsigned long long)next);
    switch (rec.txn_state) {
    case UD_TXN_NONE:
        rc = apply_none(ns, mode, &rec, record, len, stamp, errmsg);
        break;
    case UD_TXN_BEGIN:
        rc = apply_begin(ns, mode, &rec, record, len, stamp, errmsg);
        break;
    case UD_TXN_PREPARE:
        rc = apply_prepare(ns, mode, &rec, record, len, stamp, errmsg);
        break;
    case UD_TXN_COMMIT:
        rc = apply_commit(ns, mode, &rec, record, len, stamp, errmsg);
        break;
    default:
        rc = apply_abort(ns, mode, &rec, record, len, stamp, errmsg);
        break;
    }
    if (rc != 0) {
        /* failed: the record took its LSN (it is in the WAL) but the namespace stops here. */
        if (lsn != NULL)
            *lsn = ns->failed ? next : 0;
        return rc;
    }
    /* Published after every insert of the record: readers see all of it or none. */
    __atomic_store_n(&ns->visible_lsn, next, __ATOMIC_RELEASE);
    if (rec.raft_index != 0) {
        ns->raft_index = rec.raft_index;
        ns->raft_pos = rec.raft_pos;
    }
    if (rec.hlc != 0)
        ud_ns_observe_hlc(ns, rec.hlc);
    if (mode == UD_APPLY_LIVE)
        __atomic_add_fetch(&ns->ops_received, 1, __ATOMIC_RELAXED);
    if (lsn != NULL)
        *lsn = next;
    if (ud_memtable_bytes(ns->active) >= ns->seal_bytes && ud_memtable_count(ns->active) > 0)
        ud_ns_seal_locked(ns);
    return 0;
}

int ud_ns_failed(struct ud_ns *ns)
{
    return ns->failed || ud_wal_is_failed(ns->wal);
}

int ud_ns_apply(struct ud_ns *ns, uint8_t *record, size_t len, uint64_t *lsn, char *errmsg)
{
    pthread_mutex_lock(&ns->apply_lock);
    int rc = ud_ns_apply_core(ns, UD_APPLY_LIVE, record, len, record, lsn, errmsg);
    pthread_mutex_unlock(&ns->apply_lock);
    return rc;
}

int ud_ns_apply_filled(struct ud_ns *ns, size_t len, void (*fill)(void *arg, uint8_t *dst),
                       void *arg, uint64_t *lsn, char *errmsg)
{
    pthread_mutex_lock(&ns->apply_lock);
    uint8_t *frame = NULL;
    if (ud_wal_reserve(ns->wal, len, &frame) != 0) {
        pthread_mutex_unlock(&ns->apply_lock);
        /* No room (the WAL failed, a segment could not be created, a record too large for
         * one): the record in a buffer of its own, so that the rejection is ud_ns_apply's, with
         * the same precedence of errors and the same messages. */
        uint8_t *record = malloc(len);
        if (record == NULL)
            return ud_errf(errmsg, UD_ENOMEM, "namespace %s: out of memory for a record", ns->name);
        fill(arg, record);
        int rc = ud_ns_apply(ns, record, len, lsn, errmsg);
        free(record);
        return rc;
    }
    fill(arg, frame);
    ns->wal_reserved = true;
    int rc = ud_ns_apply_core(ns, UD_APPLY_LIVE, frame, len, frame, lsn, errmsg);
    if (ns->wal_reserved) {
        /* Rejected before it was logged. */
        ud_wal_cancel(ns->wal);
        ns->wal_reserved = false;
    }
    pthread_mutex_unlock(&ns->apply_lock);
    return rc;
}
