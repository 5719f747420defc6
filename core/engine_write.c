/* Convenience writes: encode a record, wait for admission, apply it and wait until it is durable.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "core/engine_int.h"
#include "core/err.h"

static int admit(struct ud_ns *ns, char *errmsg)
{
    if (ud_ns_admit(ns, UD_NS_ADMIT_TIMEOUT_MS) == 0)
        return 0;
    return ud_errf(errmsg, UD_EBUSY,
                   "namespace %s: memtables are waiting for the flush to LMDB (at most %u, "
                   "%zu bytes in all); retry later",
                   ns->name, ns->opts.max_sealed, ns->opts.memtable_bytes);
}

/* The end every write shares: rc of its apply, then *lsn set and the wait until l is durable. */
static int settle(struct ud_ns *ns, int rc, uint64_t l, uint64_t *lsn, char *errmsg)
{
    if (rc != 0)
        return rc;
    if (lsn != NULL)
        *lsn = l;
    return ud_ns_wait_durable(ns, l, errmsg);
}

/* Admits, applies and waits until durable a record encoded by core/engine_encode.c; rc is the
 * encoder's result, returned as it is when the encoding failed (errmsg already says why). Frees
 * rec. */
static int submit(struct ud_ns *ns, int rc, uint8_t *rec, size_t len, uint64_t *lsn, char *errmsg)
{
    uint64_t l = 0;
    if (lsn != NULL)
        *lsn = 0;
    if (rc == 0 && (rc = admit(ns, errmsg)) == 0)
        rc = ud_ns_apply(ns, rec, len, &l, errmsg);
    free(rec); /* NULL when the encoding failed */
    return settle(ns, rc, l, lsn, errmsg);
}

/* --- KV --------------------------------------------------------------------------------------- */

struct kv_write {
    enum ud_op op;
    const struct ud_kv *items;
    size_t n;
    uint64_t hlc;
    size_t len;
};

static void fill_kv(void *arg, uint8_t *dst)
{
    const struct kv_write *w = arg;
    ud_engine_encode_kv_in(w->op, w->items, w->n, w->hlc, dst, w->len);
}

/*
 * The record is encoded straight into its WAL frame (ud_ns_apply_filled): each value is copied
 * into the frame and from there into the memtable, with no encoded copy in between. The HLC is
 * stamped here, outside apply, which must stay free of clocks.
 */
static int kv_write(struct ud_ns *ns, enum ud_op op, const struct ud_kv *items, size_t n,
                    uint64_t *lsn, char *errmsg)
{
    struct kv_write w = {.op = op, .items = items, .n = n, .hlc = ud_ns_next_hlc(ns)};
    uint64_t l = 0;
    if (lsn != NULL)
        *lsn = 0;
    int rc = ud_engine_size_kv(op, items, n, &w.len, errmsg);
    if (rc == 0 && (rc = admit(ns, errmsg)) == 0)
        rc = ud_ns_apply_filled(ns, w.len, fill_kv, &w, &l, errmsg);
    return settle(ns, rc, l, lsn, errmsg);
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

static int row_write(struct ud_ns *ns, enum ud_op op, const struct ud_row *rows, size_t n,
                     uint64_t *lsn, char *errmsg)
{
    uint8_t *rec = NULL;
    size_t len = 0;
    int rc = ud_engine_encode_rows(op, rows, n, ud_ns_next_hlc(ns), &rec, &len, errmsg);
    return submit(ns, rc, rec, len, lsn, errmsg);
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
    /* The id is chosen here, never inside apply (which must be deterministic). */
    for (size_t got = 0; got < UD_TXN_ID_SIZE;) {
        ssize_t n = getrandom(id + got, UD_TXN_ID_SIZE - got, 0);
        if (n < 0 && errno != EINTR)
            return ud_errf(errmsg, UD_EIO, "getrandom: %s", strerror(errno));
        got += n > 0 ? (size_t)n : 0;
    }
    uint8_t *rec = NULL;
    size_t len = 0;
    int rc = ud_engine_encode_txn_begin(op, type, id, ud_ns_next_hlc(ns), &rec, &len, errmsg);
    return submit(ns, rc, rec, len, lsn, errmsg);
}

/* What a part, commit or abort record must repeat from the transaction's BEGIN. */
static int txn_info(struct ud_ns *ns, const uint8_t id[16], struct ud_txn_info *ti, char *errmsg)
{
    char hex[33];
    if (ud_ns_txn_info(ns, id, ti) != 0)
        return ud_errf(errmsg, UD_ENOTFOUND, "transaction not found: %s (unknown or finished)",
                       ud_ns_fmt_txn_id(hex, id));
    return 0;
}

int ud_ns_txn_kv(struct ud_ns *ns, const uint8_t id[16], const void *key, size_t key_len,
                 const void *value, size_t value_len, uint64_t *lsn, char *errmsg)
{
    struct ud_txn_info ti;
    int rc = txn_info(ns, id, &ti, errmsg);
    if (rc != 0)
        return rc;
    struct ud_kv kv = {key, key_len, value, value_len};
    uint8_t *rec = NULL;
    size_t len = 0;
    rc = ud_engine_encode_txn_kv(id, &ti, &kv, ud_ns_next_hlc(ns), &rec, &len, errmsg);
    return submit(ns, rc, rec, len, lsn, errmsg);
}

int ud_ns_txn_row(struct ud_ns *ns, const uint8_t id[16], const struct ud_row *row, uint64_t *lsn,
                  char *errmsg)
{
    struct ud_txn_info ti;
    int rc = txn_info(ns, id, &ti, errmsg);
    if (rc != 0)
        return rc;
    uint8_t *rec = NULL;
    size_t len = 0;
    rc = ud_engine_encode_txn_row(id, &ti, row, ud_ns_next_hlc(ns), &rec, &len, errmsg);
    return submit(ns, rc, rec, len, lsn, errmsg);
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
    struct ud_txn_info ti;
    int rc = txn_info(ns, id, &ti, errmsg);
    if (rc != 0)
        return rc;
    /* Encoded first: it checks the key and the chunk size before a retry could be recognized. */
    uint8_t *rec = NULL;
    size_t rec_len = 0;
    rc = ud_engine_encode_txn_lob(id, &ti, key, key_len, offset, chunk, len, ud_ns_next_hlc(ns),
                                  &rec, &rec_len, errmsg);
    if (rc != 0)
        return rc;
    if ((rc = lob_position(ns, id, key, key_len, offset, len, errmsg)) != 0) {
        free(rec);
        return rc == 1 ? 0 : rc;
    }
    return submit(ns, 0, rec, rec_len, lsn, errmsg);
}

static int txn_finish(struct ud_ns *ns, const uint8_t id[16], enum ud_txn_state state,
                      uint64_t *lsn, char *errmsg)
{
    struct ud_txn_info ti;
    int rc = txn_info(ns, id, &ti, errmsg);
    if (rc != 0)
        return rc;
    uint8_t *rec = NULL;
    size_t len = 0;
    rc = ud_engine_encode_txn_end(id, &ti, state, ud_ns_next_hlc(ns), &rec, &len, errmsg);
    return submit(ns, rc, rec, len, lsn, errmsg);
}

int ud_ns_txn_commit(struct ud_ns *ns, const uint8_t id[16], uint64_t *lsn, char *errmsg)
{
    return txn_finish(ns, id, UD_TXN_COMMIT, lsn, errmsg);
}

int ud_ns_txn_abort(struct ud_ns *ns, const uint8_t id[16], uint64_t *lsn, char *errmsg)
{
    return txn_finish(ns, id, UD_TXN_ABORT, lsn, errmsg);
}
