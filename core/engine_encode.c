/* Record encoders: the one place that turns writes into records (docs/format-record.md), used by
 * the engine's own convenience writes and by the writer, which commits them through raft. */
#include <stdlib.h>
#include <string.h>

#include "core/engine_int.h"
#include "core/err.h"
#include "core/recbuf.h"

void ud_engine_record_header(struct ud_record *h, enum ud_op op, enum ud_entry_type type,
                             enum ud_txn_state state, uint64_t hlc)
{
    memset(h, 0, sizeof *h);
    h->version = UD_RECORD_VERSION;
    h->op = (uint8_t)op;
    h->entry_type = (uint8_t)type;
    h->txn_state = (uint8_t)state;
    h->hlc = hlc;
}

/* A PREPARE, COMMIT or ABORT record repeats its transaction's id, operation and BEGIN LSN. */
static void txn_header(struct ud_record *h, const uint8_t id[16], const struct ud_txn_info *info,
                       enum ud_entry_type type, enum ud_txn_state state, uint64_t hlc)
{
    ud_engine_record_header(h, (enum ud_op)info->op, type, state, hlc);
    memcpy(h->txn_id, id, UD_TXN_ID_SIZE);
    h->txn_begin_lsn = info->begin_lsn;
}

static int finish_error(int rc, char *errmsg)
{
    if (rc == UD_ELIMIT)
        return ud_errf(errmsg, rc, "the write does not fit in one record of %u bytes",
                       UD_RECORD_MAX_SIZE);
    if (rc != 0)
        return ud_errf(errmsg, rc, "encoding the record: %s", ud_strerror(rc));
    return 0;
}

static int finish(struct ud_record_builder *b, uint8_t **rec, size_t *len, char *errmsg)
{
    return finish_error(ud_record_builder_finish(b, rec, len), errmsg);
}

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

/* Deletes carry names only: their values are not stored. */
static void add_row(struct ud_record_builder *b, const struct ud_row *r, enum ud_op op)
{
    int del = op == UD_OP_DELETE;
    ud_record_add_row(b, r->key, r->key_len);
    for (size_t i = 0; i < r->ncols; i++)
        ud_record_add_column(b, r->cols[i].name, r->cols[i].name_len, del ? NULL : r->cols[i].value,
                             del ? 0 : r->cols[i].value_len);
}

int ud_engine_size_kv(enum ud_op op, const struct ud_kv *items, size_t n, size_t *len, char *errmsg)
{
    if (n == 0)
        return ud_errf(errmsg, UD_EINVAL, "the write names no keys");
    size_t total = UD_RECORD_HEADER_SIZE;
    for (size_t i = 0; i < n; i++) {
        int rc = ud_ns_check_kv_key(items[i].key_len, errmsg);
        if (rc != 0)
            return n > 1 ? ud_errwrap(errmsg, rc, "item %zu", i) : rc;
        size_t value_len = op == UD_OP_DELETE ? 0 : items[i].value_len;
        /* Compared before adding, so that the sum cannot overflow. */
        if (value_len > UD_RECORD_MAX_SIZE - total)
            return finish_error(UD_ELIMIT, errmsg);
        total += ud_record_kv_size(items[i].key_len, value_len);
        if (total > UD_RECORD_MAX_SIZE)
            return finish_error(UD_ELIMIT, errmsg);
    }
    *len = total;
    return 0;
}

/* Adds the items of a KV write to a builder started with its header. */
static void add_kvs(struct ud_record_builder *b, enum ud_op op, const struct ud_kv *items, size_t n)
{
    int del = op == UD_OP_DELETE;
    for (size_t i = 0; i < n; i++)
        ud_record_add_kv(b, items[i].key, items[i].key_len, del ? NULL : items[i].value,
                         del ? 0 : items[i].value_len);
}

int ud_engine_encode_kv(enum ud_op op, const struct ud_kv *items, size_t n, uint64_t hlc,
                        uint8_t **rec, size_t *len, char *errmsg)
{
    *rec = NULL;
    *len = 0;
    size_t size;
    int rc = ud_engine_size_kv(op, items, n, &size, errmsg);
    if (rc != 0)
        return rc;
    /* The size is exact and checked: one allocation, no growing builder; a spare buffer of the
     * thread's when the caller frees records with ud_recbuf_free (the writer's submit seam). */
    if ((*rec = ud_recbuf_alloc(size)) == NULL)
        return ud_errf(errmsg, UD_ENOMEM, "out of memory for a record of %zu bytes", size);
    ud_engine_encode_kv_in(op, items, n, hlc, *rec, size);
    *len = size;
    return 0;
}

void ud_engine_encode_kv_in(enum ud_op op, const struct ud_kv *items, size_t n, uint64_t hlc,
                            uint8_t *dst, size_t len)
{
    struct ud_record h;
    struct ud_record_builder b;
    ud_engine_record_header(&h, op, UD_ENTRY_KV, UD_TXN_NONE, hlc);
    ud_record_builder_init_in(&b, &h, dst, len);
    add_kvs(&b, op, items, n);
    uint8_t *rec;
    size_t got;
    /* ud_engine_size_kv checked everything the builder could refuse. */
    int rc = ud_record_builder_finish(&b, &rec, &got);
    UD_ASSERT(rc == 0 && got == len);
}

int ud_engine_encode_rows(enum ud_op op, const struct ud_row *rows, size_t n, uint64_t hlc,
                          uint8_t **rec, size_t *len, char *errmsg)
{
    if (n == 0)
        return ud_errf(errmsg, UD_EINVAL, "the write names no rows");
    for (size_t i = 0; i < n; i++) {
        int rc = check_row(&rows[i], op, errmsg);
        if (rc != 0)
            return n > 1 ? ud_errwrap(errmsg, rc, "row %zu", i) : rc;
    }
    struct ud_record h;
    struct ud_record_builder b;
    ud_engine_record_header(&h, op, UD_ENTRY_ROW, UD_TXN_NONE, hlc);
    ud_record_builder_init(&b, &h);
    for (size_t i = 0; i < n; i++)
        add_row(&b, &rows[i], op);
    return finish(&b, rec, len, errmsg);
}

int ud_engine_encode_txn_begin(enum ud_op op, enum ud_entry_type type, const uint8_t id[16],
                               uint64_t hlc, uint8_t **rec, size_t *len, char *errmsg)
{
    if (op != UD_OP_PUT && op != UD_OP_UPDATE && op != UD_OP_DELETE)
        return ud_errf(errmsg, UD_EINVAL, "transaction operation %d is not put, update or delete",
                       (int)op);
    if (type != UD_ENTRY_KV && type != UD_ENTRY_ROW && type != UD_ENTRY_LOB)
        return ud_errf(errmsg, UD_EINVAL, "transaction entry type %d is not kv, row or lob",
                       (int)type);
    struct ud_record h;
    struct ud_record_builder b;
    ud_engine_record_header(&h, op, type, UD_TXN_BEGIN, hlc);
    memcpy(h.txn_id, id, UD_TXN_ID_SIZE);
    ud_record_builder_init(&b, &h);
    return finish(&b, rec, len, errmsg);
}

int ud_engine_encode_txn_kv(const uint8_t id[16], const struct ud_txn_info *info,
                            const struct ud_kv *kv, uint64_t hlc, uint8_t **rec, size_t *len,
                            char *errmsg)
{
    int rc = ud_ns_check_kv_key(kv->key_len, errmsg);
    if (rc != 0)
        return rc;
    int del = info->op == UD_OP_DELETE;
    struct ud_record h;
    struct ud_record_builder b;
    txn_header(&h, id, info, UD_ENTRY_KV, UD_TXN_PREPARE, hlc);
    ud_record_builder_init(&b, &h);
    ud_record_add_kv(&b, kv->key, kv->key_len, del ? NULL : kv->value, del ? 0 : kv->value_len);
    return finish(&b, rec, len, errmsg);
}

int ud_engine_encode_txn_row(const uint8_t id[16], const struct ud_txn_info *info,
                             const struct ud_row *row, uint64_t hlc, uint8_t **rec, size_t *len,
                             char *errmsg)
{
    int rc = check_row(row, (enum ud_op)info->op, errmsg);
    if (rc != 0)
        return rc;
    struct ud_record h;
    struct ud_record_builder b;
    txn_header(&h, id, info, UD_ENTRY_ROW, UD_TXN_PREPARE, hlc);
    ud_record_builder_init(&b, &h);
    add_row(&b, row, (enum ud_op)info->op);
    return finish(&b, rec, len, errmsg);
}

int ud_engine_encode_txn_lob(const uint8_t id[16], const struct ud_txn_info *info,
                             const uint8_t *key, size_t key_len, uint64_t offset,
                             const uint8_t *chunk, size_t chunk_len, uint64_t hlc, uint8_t **rec,
                             size_t *len, char *errmsg)
{
    int rc = ud_ns_check_lob_key(key_len, errmsg);
    if (rc != 0)
        return rc;
    /* A delete transaction's part only names the key. */
    int del = info->op == UD_OP_DELETE;
    if ((chunk_len == 0 && !del) || chunk_len > UD_LOB_MAX_CHUNK)
        return ud_errf(errmsg, chunk_len == 0 ? UD_EINVAL : UD_ELIMIT,
                       "lob chunk is %zu bytes; a chunk holds 1..%u bytes", chunk_len,
                       UD_LOB_MAX_CHUNK);
    struct ud_record h;
    struct ud_record_builder b;
    txn_header(&h, id, info, UD_ENTRY_LOB, UD_TXN_PREPARE, hlc);
    h.lob_offset = del ? 0 : offset;
    ud_record_builder_init(&b, &h);
    ud_record_add_kv(&b, key, key_len, del ? NULL : chunk, del ? 0 : chunk_len);
    return finish(&b, rec, len, errmsg);
}

int ud_engine_encode_txn_end(const uint8_t id[16], const struct ud_txn_info *info,
                             enum ud_txn_state state, uint64_t hlc, uint8_t **rec, size_t *len,
                             char *errmsg)
{
    if (state != UD_TXN_COMMIT && state != UD_TXN_ABORT)
        return ud_errf(errmsg, UD_EINVAL, "a transaction ends with COMMIT or ABORT, not state %d",
                       (int)state);
    struct ud_record h;
    struct ud_record_builder b;
    txn_header(&h, id, info, (enum ud_entry_type)info->entry_type, state, hlc);
    ud_record_builder_init(&b, &h);
    return finish(&b, rec, len, errmsg);
}
