/* Log records for the HTTP write API, with the model limits checked before a raft round trip. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/keyspace.h"
#include "proto/record.h"
#include "writer/http_write.h"

static int check_kv_key(size_t len, char *errmsg)
{
    if (len == 0)
        return ud_errf(errmsg, UD_EINVAL, "key is empty: keys are 1 or more bytes");
    if (len > UD_MAX_KV_KEY)
        return ud_errf(errmsg, UD_ELIMIT, "key of %zu bytes exceeds the limit of %d bytes", len,
                       UD_MAX_KV_KEY);
    return 0;
}

static int check_row(const struct ud_row *r, enum ud_op op, char *errmsg)
{
    if (r->key_len == 0)
        return ud_errf(errmsg, UD_EINVAL, "row key is empty: keys are 1 or more bytes");
    size_t prefix = ud_row_prefix_len(r->key, r->key_len) - 2;
    if (prefix >= UD_MAX_ROW_KEY_ENCODED)
        return ud_errf(errmsg, UD_ELIMIT,
                       "row key of %zu bytes is too long: a row key plus a column name may take %d "
                       "bytes (NUL bytes in the row key count twice)",
                       r->key_len, UD_MAX_ROW_KEY_ENCODED);
    if (op != UD_OP_DELETE && r->ncols == 0)
        return ud_errf(errmsg, UD_EINVAL, "a row write names no columns");
    for (size_t i = 0; i < r->ncols; i++) {
        if (r->cols[i].name_len == 0)
            return ud_errf(errmsg, UD_EINVAL, "a column name is empty");
        if (prefix + r->cols[i].name_len > UD_MAX_ROW_KEY_ENCODED)
            return ud_errf(errmsg, UD_ELIMIT,
                           "row key (%zu bytes) and column name (%zu bytes) exceed the limit of %d "
                           "bytes (NUL bytes in the row key count twice)",
                           r->key_len, r->cols[i].name_len, UD_MAX_ROW_KEY_ENCODED);
    }
    return 0;
}

static void header(struct ud_record *h, enum ud_op op, enum ud_entry_type type,
                   enum ud_txn_state state)
{
    memset(h, 0, sizeof *h);
    h->version = UD_RECORD_VERSION;
    h->op = (uint8_t)op;
    h->entry_type = (uint8_t)type;
    h->txn_state = (uint8_t)state;
}

static void txn_header(struct ud_record *h, const uint8_t id[16], const struct ud_txn_info *info,
                       enum ud_entry_type type, enum ud_txn_state state)
{
    header(h, (enum ud_op)info->op, type, state);
    memcpy(h->txn_id, id, UD_TXN_ID_SIZE);
    h->txn_begin_lsn = info->begin_lsn;
}

static int finish(struct ud_record_builder *b, uint8_t **rec, size_t *len, char *errmsg)
{
    int rc = ud_record_builder_finish(b, rec, len);
    if (rc == UD_ELIMIT)
        return ud_errf(errmsg, rc, "the write does not fit in one record of %u bytes",
                       UD_RECORD_MAX_SIZE);
    if (rc != 0)
        return ud_errf(errmsg, rc, "encoding the record: %s", ud_strerror(rc));
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

int ud_writer_http_kv_record(enum ud_op op, const struct ud_kv *items, size_t n, uint8_t **rec,
                             size_t *len, char *errmsg)
{
    if (n == 0)
        return ud_errf(errmsg, UD_EINVAL, "the write names no keys");
    for (size_t i = 0; i < n; i++) {
        int rc = check_kv_key(items[i].key_len, errmsg);
        if (rc != 0)
            return n > 1 ? ud_errwrap(errmsg, rc, "item %zu", i) : rc;
    }
    struct ud_record h;
    struct ud_record_builder b;
    header(&h, op, UD_ENTRY_KV, UD_TXN_NONE);
    ud_record_builder_init(&b, &h);
    for (size_t i = 0; i < n; i++)
        ud_record_add_kv(&b, items[i].key, items[i].key_len,
                         op == UD_OP_DELETE ? NULL : items[i].value,
                         op == UD_OP_DELETE ? 0 : items[i].value_len);
    return finish(&b, rec, len, errmsg);
}

int ud_writer_http_row_record(enum ud_op op, const struct ud_row *rows, size_t n, uint8_t **rec,
                              size_t *len, char *errmsg)
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
    header(&h, op, UD_ENTRY_ROW, UD_TXN_NONE);
    ud_record_builder_init(&b, &h);
    for (size_t i = 0; i < n; i++)
        add_row(&b, &rows[i], op);
    return finish(&b, rec, len, errmsg);
}

int ud_writer_http_begin_record(enum ud_op op, enum ud_entry_type type, const uint8_t id[16],
                                uint8_t **rec, size_t *len, char *errmsg)
{
    struct ud_record h;
    struct ud_record_builder b;
    header(&h, op, type, UD_TXN_BEGIN);
    memcpy(h.txn_id, id, UD_TXN_ID_SIZE);
    ud_record_builder_init(&b, &h);
    return finish(&b, rec, len, errmsg);
}

int ud_writer_http_txn_kv_record(const uint8_t id[16], const struct ud_txn_info *info,
                                 const struct ud_kv *kv, uint8_t **rec, size_t *len, char *errmsg)
{
    int rc = check_kv_key(kv->key_len, errmsg);
    if (rc != 0)
        return rc;
    struct ud_record h;
    struct ud_record_builder b;
    txn_header(&h, id, info, UD_ENTRY_KV, UD_TXN_PREPARE);
    ud_record_builder_init(&b, &h);
    int del = info->op == UD_OP_DELETE;
    ud_record_add_kv(&b, kv->key, kv->key_len, del ? NULL : kv->value, del ? 0 : kv->value_len);
    return finish(&b, rec, len, errmsg);
}

int ud_writer_http_txn_row_record(const uint8_t id[16], const struct ud_txn_info *info,
                                  const struct ud_row *row, uint8_t **rec, size_t *len,
                                  char *errmsg)
{
    int rc = check_row(row, (enum ud_op)info->op, errmsg);
    if (rc != 0)
        return rc;
    struct ud_record h;
    struct ud_record_builder b;
    txn_header(&h, id, info, UD_ENTRY_ROW, UD_TXN_PREPARE);
    ud_record_builder_init(&b, &h);
    add_row(&b, row, (enum ud_op)info->op);
    return finish(&b, rec, len, errmsg);
}

int ud_writer_http_txn_lob_record(const uint8_t id[16], const struct ud_txn_info *info,
                                  const uint8_t *key, size_t key_len, uint64_t offset,
                                  const uint8_t *chunk, size_t chunk_len, uint8_t **rec,
                                  size_t *len, char *errmsg)
{
    if (key_len == 0)
        return ud_errf(errmsg, UD_EINVAL, "lob key is empty");
    if (key_len > UD_MAX_LOB_KEY)
        return ud_errf(errmsg, UD_ELIMIT, "lob key of %zu bytes exceeds the limit of %d bytes",
                       key_len, UD_MAX_LOB_KEY);
    int del = info->op == UD_OP_DELETE;
    if (!del && chunk_len == 0)
        return ud_errf(errmsg, UD_EINVAL, "lob chunk is empty: send 1 byte to 1 MiB");
    if (chunk_len > (1u << 20))
        return ud_errf(errmsg, UD_ELIMIT, "lob chunk of %zu bytes exceeds the limit of %u bytes",
                       chunk_len, 1u << 20);
    struct ud_record h;
    struct ud_record_builder b;
    txn_header(&h, id, info, UD_ENTRY_LOB, UD_TXN_PREPARE);
    h.lob_offset = del ? 0 : offset;
    ud_record_builder_init(&b, &h);
    ud_record_add_kv(&b, key, key_len, del ? NULL : chunk, del ? 0 : chunk_len);
    return finish(&b, rec, len, errmsg);
}

int ud_writer_http_end_record(const uint8_t id[16], const struct ud_txn_info *info,
                              enum ud_txn_state state, uint8_t **rec, size_t *len, char *errmsg)
{
    struct ud_record h;
    struct ud_record_builder b;
    txn_header(&h, id, info, (enum ud_entry_type)info->entry_type, state);
    ud_record_builder_init(&b, &h);
    return finish(&b, rec, len, errmsg);
}

int ud_writer_http_lob_position(const struct ud_txn_info *info, const uint8_t *key, size_t key_len,
                                uint64_t offset, size_t len,
                                const struct ud_writer_http_chunk *chunks, size_t nchunks,
                                int complete, uint64_t *at, char *errmsg)
{
    if (info->lob_key_len > 0 &&
        (info->lob_key_len != key_len || memcmp(info->lob_key, key, key_len) != 0))
        return ud_errf(errmsg, UD_ECONFLICT,
                       "this transaction holds lob key %.*s: a lob transaction holds exactly one "
                       "key",
                       (int)info->lob_key_len, (const char *)info->lob_key);
    if (info->op == UD_OP_DELETE) {
        *at = 0;
        return 0;
    }
    if (offset == UINT64_MAX || offset == info->bytes) {
        *at = info->bytes;
        return 0;
    }
    /* A retried chunk: its bytes are all held already (a client that lost our answer). */
    if (offset < info->bytes && len <= info->bytes - offset && len > 0) {
        if (!complete)
            return 1;
        for (size_t i = 0; i < nchunks; i++)
            if (chunks[i].offset == offset && chunks[i].len == len)
                return 1;
    }
    return ud_errf(errmsg, UD_ECONFLICT,
                   "lob chunk at offset %llu (%zu bytes) does not continue the object: the "
                   "expected offset is %llu",
                   (unsigned long long)offset, len, (unsigned long long)info->bytes);
}

int ud_writer_http_if_match_parse(const char *v, size_t len, uint64_t *lsn, int *any)
{
    *any = 0;
    *lsn = 0;
    while (len > 0 && (v[0] == ' ' || v[0] == '\t'))
        v++, len--;
    while (len > 0 && (v[len - 1] == ' ' || v[len - 1] == '\t'))
        len--;
    if (len == 1 && v[0] == '*') {
        *any = 1;
        return 0;
    }
    if (len >= 2 && v[0] == '"' && v[len - 1] == '"')
        v++, len -= 2;
    if (len == 0 || len > 20)
        return UD_EINVAL;
    uint64_t x = 0;
    for (size_t i = 0; i < len; i++) {
        if (v[i] < '0' || v[i] > '9')
            return UD_EINVAL;
        uint64_t d = (uint64_t)(v[i] - '0');
        if (x > (UINT64_MAX - d) / 10)
            return UD_EINVAL;
        x = x * 10 + d;
    }
    *lsn = x;
    return 0;
}
