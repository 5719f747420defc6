/* Convenience writes: encode a record, wait for admission, apply it and wait until it is durable.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "core/engine_int.h"
#include "core/err.h"

static void header(struct ud_record *h, struct ud_ns *ns, enum ud_op op, enum ud_entry_type type,
                   enum ud_txn_state state)
{
    memset(h, 0, sizeof *h);
    h->version = UD_RECORD_VERSION;
    h->op = (uint8_t)op;
    h->entry_type = (uint8_t)type;
    h->txn_state = (uint8_t)state;
    /* Stamped here, outside apply, which must stay free of clocks. */
    h->hlc = ud_ns_next_hlc(ns);
}

static int submit(struct ud_ns *ns, struct ud_record_builder *b, uint64_t *lsn, char *errmsg)
{
    uint8_t *buf;
    size_t len;
    uint64_t l = 0;
    if (lsn != NULL)
        *lsn = 0;
    int rc = ud_record_builder_finish(b, &buf, &len);
    if (rc != 0)
        return ud_errf(errmsg, rc, "namespace %s: encode record: %s", ns->name, ud_strerror(rc));
    if (ud_ns_admit(ns, UD_NS_ADMIT_TIMEOUT_MS) != 0) {
        free(buf);
        return ud_errf(errmsg, UD_EBUSY,
                       "namespace %s: memtables are waiting for the flush to LMDB (at most %u, "
                       "%zu bytes in all); retry later",
                       ns->name, ns->opts.max_sealed, ns->opts.memtable_bytes);
    }
    rc = ud_ns_apply(ns, buf, len, &l, errmsg);
    free(buf);
    if (rc != 0)
        return rc;
    if (lsn != NULL)
        *lsn = l;
    return ud_ns_wait_durable(ns, l, errmsg);
}

/* --- KV --------------------------------------------------------------------------------------- */

static int kv_write(struct ud_ns *ns, enum ud_op op, const struct ud_kv *items, size_t n,
                    uint64_t *lsn, char *errmsg)
{
    if (n == 0)
        return ud_errf(errmsg, UD_EINVAL, "a kv batch needs at least one item");
    for (size_t i = 0; i < n; i++) {
        int rc = ud_ns_check_kv_key(items[i].key_len, errmsg);
        if (rc != 0)
            return rc;
    }
    struct ud_record h;
    struct ud_record_builder b;
    header(&h, ns, op, UD_ENTRY_KV, UD_TXN_NONE);
    ud_record_builder_init(&b, &h);
    for (size_t i = 0; i < n; i++)
        ud_record_add_kv(&b, items[i].key, items[i].key_len,
                         op == UD_OP_DELETE ? NULL : items[i].value,
                         op == UD_OP_DELETE ? 0 : items[i].value_len);
    return submit(ns, &b, lsn, errmsg);
}

int ud_ns_kv_put(struct ud_ns *ns, const void *key, size_t key_len, const void *value,
                 size_t value_len, uint64_t *lsn, char *errmsg)
{
    struct ud_kv kv = {key, key_len, value, value_len};
    return kv_write(ns, UD_OP_PUT, &kv, 1, lsn, errmsg);
}

int ud_ns_kv_delete(struct ud_ns *ns, const void *key, size_t key_len, uint64_t *lsn, char *errmsg)
{
    struct ud_kv kv = {key, key_len, NULL, 0};
    return kv_write(ns, UD_OP_DELETE, &kv, 1, lsn, errmsg);
}

int ud_ns_kv_batch_put(struct ud_ns *ns, const struct ud_kv *items, size_t n, uint64_t *lsn,
                       char *errmsg)
{
    return kv_write(ns, UD_OP_PUT, items, n, lsn, errmsg);
}

int ud_ns_kv_batch_delete(struct ud_ns *ns, const struct ud_kv *items, size_t n, uint64_t *lsn,
                          char *errmsg)
{
    return kv_write(ns, UD_OP_DELETE, items, n, lsn, errmsg);
}

/* --- rows ------------------------------------------------------------------------------------- */

static int check_row(const struct ud_row *r, enum ud_op op, char *errmsg)
{
    int rc = ud_ns_check_row_key(r->key, r->key_len, 0, errmsg);
    if (rc != 0)
        return rc;
    if (op != UD_OP_DELETE && r->ncols == 0)
        return ud_errf(errmsg, UD_EINVAL, "a row write names no columns");
    for (size_t i = 0; i < r->ncols; i++) {
        if (r->cols[i].name_len == 0)
            return ud_errf(errmsg, UD_EINVAL, "a column name is empty");
        if ((rc = ud_ns_check_row_key(r->key, r->key_len, r->cols[i].name_len, errmsg)) != 0)
            return rc;
    }
    return 0;
}

static void add_row(struct ud_record_builder *b, const struct ud_row *r, enum ud_op op)
{
    ud_record_add_row(b, r->key, r->key_len);
    for (size_t i = 0; i < r->ncols; i++)
        ud_record_add_column(b, r->cols[i].name, r->cols[i].name_len,
                             op == UD_OP_DELETE ? NULL : r->cols[i].value,
                             op == UD_OP_DELETE ? 0 : r->cols[i].value_len);
}

static int row_write(struct ud_ns *ns, enum ud_op op, const struct ud_row *rows, size_t n,
                     uint64_t *lsn, char *errmsg)
{
    if (n == 0)
        return ud_errf(errmsg, UD_EINVAL, "a row batch needs at least one row");
    for (size_t i = 0; i < n; i++) {
        int rc = check_row(&rows[i], op, errmsg);
        if (rc != 0)
            return rc;
    }
    struct ud_record h;
    struct ud_record_builder b;
    header(&h, ns, op, UD_ENTRY_ROW, UD_TXN_NONE);
    ud_record_builder_init(&b, &h);
    for (size_t i = 0; i < n; i++)
        add_row(&b, &rows[i], op);
    return submit(ns, &b, lsn, errmsg);
}

int ud_ns_row_put(struct ud_ns *ns, const struct ud_row *row, uint64_t *lsn, char *errmsg)
{
    return row_write(ns, UD_OP_PUT, row, 1, lsn, errmsg);
}

int ud_ns_row_batch_put(struct ud_ns *ns, const struct ud_row *rows, size_t n, uint64_t *lsn,
                        char *errmsg)
{
    return row_write(ns, UD_OP_PUT, rows, n, lsn, errmsg);
}

int ud_ns_row_delete(struct ud_ns *ns, const struct ud_row *row, uint64_t *lsn, char *errmsg)
{
    return row_write(ns, UD_OP_DELETE, row, 1, lsn, errmsg);
}

int ud_ns_row_batch_delete(struct ud_ns *ns, const struct ud_row *rows, size_t n, uint64_t *lsn,
                           char *errmsg)
{
    return row_write(ns, UD_OP_DELETE, rows, n, lsn, errmsg);
}

/* --- transactions ----------------------------------------------------------------------------- */

int ud_ns_txn_begin(struct ud_ns *ns, enum ud_op op, enum ud_entry_type type, uint8_t id[16],
                    uint64_t *lsn, char *errmsg)
{
    if (op != UD_OP_PUT && op != UD_OP_UPDATE && op != UD_OP_DELETE)
        return ud_errf(errmsg, UD_EINVAL, "transaction operation %d is not put, update or delete",
                       (int)op);
    if (type != UD_ENTRY_KV && type != UD_ENTRY_ROW && type != UD_ENTRY_LOB)
        return ud_errf(errmsg, UD_EINVAL, "transaction entry type %d is not kv, row or lob",
                       (int)type);
    /* The id is chosen here, never inside apply (which must be deterministic). */
    for (size_t got = 0; got < UD_TXN_ID_SIZE;) {
        ssize_t n = getrandom(id + got, UD_TXN_ID_SIZE - got, 0);
        if (n < 0 && errno != EINTR)
            return ud_errf(errmsg, UD_EIO, "getrandom: %s", strerror(errno));
        got += n > 0 ? (size_t)n : 0;
    }
    struct ud_record h;
    struct ud_record_builder b;
    header(&h, ns, op, type, UD_TXN_BEGIN);
    memcpy(h.txn_id, id, UD_TXN_ID_SIZE);
    ud_record_builder_init(&b, &h);
    return submit(ns, &b, lsn, errmsg);
}

/* What a part, commit or abort record must repeat from the transaction's BEGIN. */
struct txn_info {
    uint8_t op;
    uint8_t type;
    uint64_t begin_lsn;
};

static int txn_info(struct ud_ns *ns, const uint8_t id[16], struct txn_info *ti, char *errmsg)
{
    pthread_mutex_lock(&ns->apply_lock);
    struct ud_txn *t = ud_ns_txn_find(ns, id);
    if (t != NULL)
        *ti = (struct txn_info){t->op, t->type, t->begin_lsn};
    pthread_mutex_unlock(&ns->apply_lock);
    char hex[33];
    if (t == NULL)
        return ud_errf(errmsg, UD_ENOTFOUND, "transaction not found: %s (unknown or finished)",
                       ud_ns_fmt_txn_id(hex, id));
    return 0;
}

static void txn_header(struct ud_record *h, struct ud_ns *ns, const uint8_t id[16],
                       const struct txn_info *ti, enum ud_entry_type type, enum ud_txn_state state)
{
    header(h, ns, (enum ud_op)ti->op, type, state);
    memcpy(h->txn_id, id, UD_TXN_ID_SIZE);
    h->txn_begin_lsn = ti->begin_lsn;
}

int ud_ns_txn_kv(struct ud_ns *ns, const uint8_t id[16], const void *key, size_t key_len,
                 const void *value, size_t value_len, uint64_t *lsn, char *errmsg)
{
    struct txn_info ti = {0};
    int rc = txn_info(ns, id, &ti, errmsg);
    if (rc != 0 || (rc = ud_ns_check_kv_key(key_len, errmsg)) != 0)
        return rc;
    struct ud_record h;
    struct ud_record_builder b;
    txn_header(&h, ns, id, &ti, UD_ENTRY_KV, UD_TXN_PREPARE);
    ud_record_builder_init(&b, &h);
    ud_record_add_kv(&b, key, key_len, ti.op == UD_OP_DELETE ? NULL : value,
                     ti.op == UD_OP_DELETE ? 0 : value_len);
    return submit(ns, &b, lsn, errmsg);
}

int ud_ns_txn_row(struct ud_ns *ns, const uint8_t id[16], const struct ud_row *row, uint64_t *lsn,
                  char *errmsg)
{
    struct txn_info ti = {0};
    int rc = txn_info(ns, id, &ti, errmsg);
    if (rc != 0 || (rc = check_row(row, (enum ud_op)ti.op, errmsg)) != 0)
        return rc;
    struct ud_record h;
    struct ud_record_builder b;
    txn_header(&h, ns, id, &ti, UD_ENTRY_ROW, UD_TXN_PREPARE);
    ud_record_builder_init(&b, &h);
    add_row(&b, row, (enum ud_op)ti.op);
    return submit(ns, &b, lsn, errmsg);
}

/* Classifies a LOB append against what the transaction holds: 0 append, 1 retry of a chunk
 * already held in full, or an error. */
static int lob_position(struct ud_ns *ns, const uint8_t id[16], const void *key, size_t key_len,
                        uint64_t offset, size_t len, char *errmsg)
{
    char hex[33], k[96];
    int rc = 0;
    pthread_mutex_lock(&ns->apply_lock);
    struct ud_txn *t = ud_ns_txn_find(ns, id);
    if (t == NULL) {
        rc = ud_errf(errmsg, UD_ENOTFOUND, "transaction not found: %s (unknown or finished)",
                     ud_ns_fmt_txn_id(hex, id));
    } else if (t->type != UD_ENTRY_LOB || t->op == UD_OP_DELETE || offset == t->bytes) {
        rc = 0; /* apply decides */
    } else if (t->lob_key != NULL &&
               (t->lob_key_len != key_len || memcmp(t->lob_key, key, key_len) != 0)) {
        rc = ud_errf(errmsg, UD_ETXN,
                     "transaction %s holds lob key %s; a lob transaction holds exactly one key",
                     ud_ns_fmt_txn_id(hex, id),
                     ud_ns_fmt_key(k, sizeof k, t->lob_key, t->lob_key_len));
    } else {
        /* A client retry is recognized by a chunk boundary and bytes already held. */
        size_t lo = 0, hi = t->nchunks;
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (t->chunks[mid].offset < offset)
                lo = mid + 1;
            else
                hi = mid;
        }
        int boundary = lo < t->nchunks && t->chunks[lo].offset == offset;
        if (boundary && offset + len <= t->bytes)
            rc = 1;
        else
            rc = ud_errf(errmsg, UD_ERANGE,
                         "lob chunk at offset %llu (%zu bytes) does not continue the object: the "
                         "expected offset is %llu",
                         (unsigned long long)offset, len, (unsigned long long)t->bytes);
    }
    pthread_mutex_unlock(&ns->apply_lock);
    return rc;
}

int ud_ns_txn_lob(struct ud_ns *ns, const uint8_t id[16], const void *key, size_t key_len,
                  uint64_t offset, const void *chunk, size_t len, uint64_t *lsn, char *errmsg)
{
    if (lsn != NULL)
        *lsn = 0;
    struct txn_info ti = {0};
    int rc = txn_info(ns, id, &ti, errmsg);
    if (rc != 0 || (rc = ud_ns_check_lob_key(key_len, errmsg)) != 0)
        return rc;
    /* A delete transaction's part only names the key. */
    if ((len == 0 && ti.op != UD_OP_DELETE) || len > UD_LOB_MAX_CHUNK)
        return ud_errf(errmsg, len == 0 ? UD_EINVAL : UD_ELIMIT,
                       "lob chunk is %zu bytes; a chunk holds 1..%u bytes", len, UD_LOB_MAX_CHUNK);
    if ((rc = lob_position(ns, id, key, key_len, offset, len, errmsg)) != 0)
        return rc == 1 ? 0 : rc;
    struct ud_record h;
    struct ud_record_builder b;
    txn_header(&h, ns, id, &ti, UD_ENTRY_LOB, UD_TXN_PREPARE);
    h.lob_offset = offset;
    ud_record_builder_init(&b, &h);
    ud_record_add_kv(&b, key, key_len, ti.op == UD_OP_DELETE ? NULL : chunk,
                     ti.op == UD_OP_DELETE ? 0 : len);
    return submit(ns, &b, lsn, errmsg);
}

static int txn_finish(struct ud_ns *ns, const uint8_t id[16], enum ud_txn_state state,
                      uint64_t *lsn, char *errmsg)
{
    struct txn_info ti = {0};
    int rc = txn_info(ns, id, &ti, errmsg);
    if (rc != 0)
        return rc;
    struct ud_record h;
    struct ud_record_builder b;
    txn_header(&h, ns, id, &ti, (enum ud_entry_type)ti.type, state);
    ud_record_builder_init(&b, &h);
    return submit(ns, &b, lsn, errmsg);
}

int ud_ns_txn_commit(struct ud_ns *ns, const uint8_t id[16], uint64_t *lsn, char *errmsg)
{
    return txn_finish(ns, id, UD_TXN_COMMIT, lsn, errmsg);
}

int ud_ns_txn_abort(struct ud_ns *ns, const uint8_t id[16], uint64_t *lsn, char *errmsg)
{
    return txn_finish(ns, id, UD_TXN_ABORT, lsn, errmsg);
}
