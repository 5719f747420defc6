/* Log record codec: validating zero-copy decoder, iterators and builder (docs/format-record.md). */
#include "proto/record.h"

#include <stdlib.h>
#include <string.h>

#include "core/endian.h"
#include "core/err.h"

/* Header field offsets (the table in record.h); named so error messages and code agree. */
#define OFF_VERSION       0
#define OFF_OP            1
#define OFF_ENTRY_TYPE    2
#define OFF_TXN_STATE     3
#define OFF_ENTRY_COUNT   4
#define OFF_LSN           8
#define OFF_HLC           16
#define OFF_RAFT_INDEX    24
#define OFF_RAFT_POS      32
#define OFF_FLAGS         36
#define OFF_TXN_ID        40
#define OFF_TXN_BEGIN_LSN 56
#define OFF_LOB_OFFSET    64

static int txn_id_is_zero(const uint8_t *id)
{
    uint8_t acc = 0;
    for (int i = 0; i < UD_TXN_ID_SIZE; i++)
        acc |= id[i];
    return acc == 0;
}

static int has_entries(uint8_t txn_state)
{
    return txn_state == UD_TXN_NONE || txn_state == UD_TXN_PREPARE;
}

/*
 * Rules on the fixed header fields, shared by the decoder (code UD_ECORRUPT) and the builder
 * (code UD_EINVAL) so that the builder can never produce a record the decoder refuses.
 */
static int check_header(const struct ud_record *h, int code, char *errmsg)
{
    if (h->op < UD_OP_PUT || h->op > UD_OP_UPDATE)
        return ud_errf(errmsg, code, "record: op %u at offset %d is not put, delete or update",
                       h->op, OFF_OP);
    if (h->entry_type < UD_ENTRY_KV || h->entry_type > UD_ENTRY_LOB)
        return ud_errf(errmsg, code, "record: entry_type %u at offset %d is not kv, row or lob",
                       h->entry_type, OFF_ENTRY_TYPE);
    if (h->txn_state > UD_TXN_ABORT)
        return ud_errf(errmsg, code, "record: txn_state %u at offset %d is not a known state",
                       h->txn_state, OFF_TXN_STATE);
    if (h->flags != 0)
        return ud_errf(errmsg, code, "record: flags 0x%x at offset %d must be 0 in version %d",
                       h->flags, OFF_FLAGS, UD_RECORD_VERSION);
    if (h->op == UD_OP_UPDATE && h->txn_state == UD_TXN_NONE)
        return ud_errf(errmsg, code,
                       "record: op update at offset %d is only allowed inside a transaction",
                       OFF_OP);
    if (h->txn_state == UD_TXN_NONE && !txn_id_is_zero(h->txn_id))
        return ud_errf(errmsg, code,
                       "record: txn_id at offset %d must be zero when txn_state is none",
                       OFF_TXN_ID);
    if ((h->txn_state == UD_TXN_NONE || h->txn_state == UD_TXN_BEGIN) && h->txn_begin_lsn != 0)
        return ud_errf(errmsg, code,
                       "record: txn_begin_lsn %llu at offset %d must be 0 when txn_state is %s",
                       (unsigned long long)h->txn_begin_lsn, OFF_TXN_BEGIN_LSN,
                       ud_txn_state_name(h->txn_state));
    if (h->lob_offset != 0 && (h->entry_type != UD_ENTRY_LOB || !has_entries(h->txn_state)))
        return ud_errf(errmsg, code,
                       "record: lob_offset %llu at offset %d is only allowed on a lob chunk "
                       "(entry_type lob, txn_state none or prepare)",
                       (unsigned long long)h->lob_offset, OFF_LOB_OFFSET);
    return 0;
}

/* Rules tying entry_count to the record's shape; shared like check_header. */
static int check_entry_count(uint8_t entry_type, uint8_t txn_state, uint32_t count, int code,
                             char *errmsg)
{
    if (!has_entries(txn_state)) {
        if (count != 0)
            return ud_errf(errmsg, code,
                           "record: entry_count %u at offset %d must be 0 when txn_state is %s",
                           count, OFF_ENTRY_COUNT, ud_txn_state_name(txn_state));
        return 0;
    }
    if (count == 0)
        return ud_errf(errmsg, code,
                       "record: entry_count at offset %d is 0 but txn_state %s needs entries",
                       OFF_ENTRY_COUNT, ud_txn_state_name(txn_state));
    if (entry_type == UD_ENTRY_LOB && count != 1)
        return ud_errf(errmsg, code,
                       "record: entry_count %u at offset %d must be 1 for a lob chunk", count,
                       OFF_ENTRY_COUNT);
    return 0;
}

int ud_record_decode(const uint8_t *buf, size_t len, struct ud_record *rec, char *errmsg)
{
    /* The version byte is looked at first: a future version may change everything after it,
     * including the header size, so "unsupported" must win over "truncated". */
    if (len == 0)
        return ud_errf(errmsg, UD_ETRUNCATED, "record: empty, the header needs %d bytes",
                       UD_RECORD_HEADER_SIZE);
    if (buf[OFF_VERSION] != UD_RECORD_VERSION)
        return ud_errf(errmsg, UD_EVERSION,
                       "record: version %u at offset %d is not supported (this build reads %d)",
                       buf[OFF_VERSION], OFF_VERSION, UD_RECORD_VERSION);
    if (len > UD_RECORD_MAX_SIZE)
        return ud_errf(errmsg, UD_ELIMIT, "record: %zu bytes exceeds the limit of %u bytes", len,
                       UD_RECORD_MAX_SIZE);
    if (len < UD_RECORD_HEADER_SIZE)
        return ud_errf(errmsg, UD_ETRUNCATED,
                       "record: %zu bytes end inside the header, which needs %d bytes", len,
                       UD_RECORD_HEADER_SIZE);

    rec->version = buf[OFF_VERSION];
    rec->op = buf[OFF_OP];
    rec->entry_type = buf[OFF_ENTRY_TYPE];
    rec->txn_state = buf[OFF_TXN_STATE];
    rec->entry_count = ud_get_le32(buf + OFF_ENTRY_COUNT);
    rec->lsn = ud_get_le64(buf + OFF_LSN);
    rec->hlc = ud_get_le64(buf + OFF_HLC);
    rec->raft_index = ud_get_le64(buf + OFF_RAFT_INDEX);
    rec->raft_pos = ud_get_le32(buf + OFF_RAFT_POS);
    rec->flags = ud_get_le32(buf + OFF_FLAGS);
    memcpy(rec->txn_id, buf + OFF_TXN_ID, UD_TXN_ID_SIZE);
    rec->txn_begin_lsn = ud_get_le64(buf + OFF_TXN_BEGIN_LSN);
    rec->lob_offset = ud_get_le64(buf + OFF_LOB_OFFSET);
    rec->entries = buf + UD_RECORD_HEADER_SIZE;
    rec->entries_len = len - UD_RECORD_HEADER_SIZE;

    int rv = check_header(rec, UD_ECORRUPT, errmsg);
    if (rv != 0)
        return rv;
    rv = check_entry_count(rec->entry_type, rec->txn_state, rec->entry_count, UD_ECORRUPT, errmsg);
    if (rv != 0)
        return rv;

    /* One pass over the entries. Every length is compared with the bytes left before it is used,
     * so no read goes past buf + len whatever the length fields say. `off` stays <= len. */
    const int is_row = rec->entry_type == UD_ENTRY_ROW;
    const int is_delete = rec->op == UD_OP_DELETE;
    size_t off = UD_RECORD_HEADER_SIZE;
    for (uint32_t i = 0; i < rec->entry_count; i++) {
        if (off == len)
            return ud_errf(errmsg, UD_ECORRUPT,
                           "record: entry_count %u at offset %d but the record ends after %u "
                           "entries at offset %zu",
                           rec->entry_count, OFF_ENTRY_COUNT, i, off);
        if (len - off < 2)
            return ud_errf(errmsg, UD_ETRUNCATED,
                           "record: entry %u key_len at offset %zu is cut off by the end of the "
                           "record",
                           i, off);
        uint16_t key_len = ud_get_le16(buf + off);
        if (key_len == 0)
            return ud_errf(errmsg, UD_ECORRUPT, "record: entry %u key_len at offset %zu is 0", i,
                           off);
        off += 2;
        if (len - off < key_len)
            return ud_errf(errmsg, UD_ETRUNCATED,
                           "record: entry %u key of %u bytes at offset %zu runs past the end of "
                           "the record (%zu bytes)",
                           i, key_len, off, len);
        off += key_len;
        if (len - off < 4)
            return ud_errf(errmsg, UD_ETRUNCATED,
                           "record: entry %u value_len at offset %zu is cut off by the end of the "
                           "record",
                           i, off);
        uint32_t value_len = ud_get_le32(buf + off);
        if (value_len != 0 && is_row)
            return ud_errf(errmsg, UD_ECORRUPT,
                           "record: entry %u value_len %u at offset %zu must be 0 in a row entry "
                           "(values belong to columns)",
                           i, value_len, off);
        if (value_len != 0 && is_delete)
            return ud_errf(errmsg, UD_ECORRUPT,
                           "record: entry %u value_len %u at offset %zu must be 0 in a delete", i,
                           value_len, off);
        off += 4;
        if (len - off < value_len)
            return ud_errf(errmsg, UD_ETRUNCATED,
                           "record: entry %u value of %u bytes at offset %zu runs past the end of "
                           "the record (%zu bytes)",
                           i, value_len, off, len);
        off += value_len;
        if (len - off < 4)
            return ud_errf(errmsg, UD_ETRUNCATED,
                           "record: entry %u column_count at offset %zu is cut off by the end of "
                           "the record",
                           i, off);
        uint32_t column_count = ud_get_le32(buf + off);
        if (column_count != 0 && !is_row)
            return ud_errf(errmsg, UD_ECORRUPT,
                           "record: entry %u column_count %u at offset %zu must be 0 in a %s entry",
                           i, column_count, off, ud_entry_type_name(rec->entry_type));
        off += 4;
        for (uint32_t j = 0; j < column_count; j++) {
            if (len - off < 2)
                return ud_errf(errmsg, UD_ETRUNCATED,
                               "record: entry %u column %u name_len at offset %zu is cut off by "
                               "the end of the record",
                               i, j, off);
            uint16_t name_len = ud_get_le16(buf + off);
            /* An empty name would alias the row itself in the row key space (core/keyspace.h). */
            if (name_len == 0)
                return ud_errf(errmsg, UD_ECORRUPT,
                               "record: entry %u column %u name_len at offset %zu is 0", i, j, off);
            off += 2;
            if (len - off < name_len)
                return ud_errf(errmsg, UD_ETRUNCATED,
                               "record: entry %u column %u name of %u bytes at offset %zu runs "
                               "past the end of the record (%zu bytes)",
                               i, j, name_len, off, len);
            off += name_len;
            if (len - off < 4)
                return ud_errf(errmsg, UD_ETRUNCATED,
                               "record: entry %u column %u value_len at offset %zu is cut off by "
                               "the end of the record",
                               i, j, off);
            uint32_t cvalue_len = ud_get_le32(buf + off);
            if (cvalue_len != 0 && is_delete)
                return ud_errf(errmsg, UD_ECORRUPT,
                               "record: entry %u column %u value_len %u at offset %zu must be 0 "
                               "in a delete",
                               i, j, cvalue_len, off);
            off += 4;
            if (len - off < cvalue_len)
                return ud_errf(errmsg, UD_ETRUNCATED,
                               "record: entry %u column %u value of %u bytes at offset %zu runs "
                               "past the end of the record (%zu bytes)",
                               i, j, cvalue_len, off, len);
            off += cvalue_len;
        }
    }
    if (off != len)
        return ud_errf(errmsg, UD_ECORRUPT,
                       "record: %zu trailing bytes at offset %zu after the %u entries of "
                       "entry_count",
                       len - off, off, rec->entry_count);
    return 0;
}

/* The iterators trust a record the decoder accepted, so they only step over the lengths. */

void ud_entry_iter_init(struct ud_entry_iter *it, const struct ud_record *rec)
{
    it->p = rec->entries;
    it->end = rec->entries + rec->entries_len;
}

int ud_entry_iter_next(struct ud_entry_iter *it, struct ud_entry *e)
{
    if (it->p >= it->end)
        return 0;
    const uint8_t *p = it->p;
    e->key_len = ud_get_le16(p);
    e->key = p + 2;
    p += 2 + e->key_len;
    e->value_len = ud_get_le32(p);
    e->value = p + 4;
    p += 4 + e->value_len;
    e->column_count = ud_get_le32(p);
    p += 4;
    e->columns = p;
    for (uint32_t j = 0; j < e->column_count; j++) {
        p += 2 + ud_get_le16(p);
        p += 4 + ud_get_le32(p);
    }
    e->columns_len = (size_t)(p - e->columns);
    it->p = p;
    return 1;
}

void ud_column_iter_init(struct ud_column_iter *it, const struct ud_entry *e)
{
    it->p = e->columns;
    it->end = e->columns + e->columns_len;
}

int ud_column_iter_next(struct ud_column_iter *it, struct ud_column *c)
{
    if (it->p >= it->end)
        return 0;
    const uint8_t *p = it->p;
    c->name_len = ud_get_le16(p);
    c->name = p + 2;
    p += 2 + c->name_len;
    c->value_len = ud_get_le32(p);
    c->value = p + 4;
    it->p = p + 4 + c->value_len;
    return 1;
}

uint64_t ud_record_get_lsn(const uint8_t *buf)
{
    return ud_get_le64(buf + UD_RECORD_LSN_OFFSET);
}

void ud_record_set_lsn(uint8_t *buf, uint64_t lsn)
{
    ud_put_le64(buf + UD_RECORD_LSN_OFFSET, lsn);
}

uint64_t ud_record_get_raft_index(const uint8_t *buf)
{
    return ud_get_le64(buf + OFF_RAFT_INDEX);
}

uint32_t ud_record_get_raft_pos(const uint8_t *buf)
{
    return ud_get_le32(buf + OFF_RAFT_POS);
}

uint64_t ud_record_get_hlc(const uint8_t *buf)
{
    return ud_get_le64(buf + OFF_HLC);
}

void ud_record_set_hlc(uint8_t *buf, uint64_t hlc)
{
    ud_put_le64(buf + OFF_HLC, hlc);
}

void ud_record_set_raft_position(uint8_t *buf, uint64_t index, uint32_t pos)
{
    ud_put_le64(buf + OFF_RAFT_INDEX, index);
    ud_put_le32(buf + OFF_RAFT_POS, pos);
}

/* --- builder ---------------------------------------------------------------------------------- */

/* Room for the header and a few small entries: most standalone writes never reallocate. */
#define BUILDER_INITIAL_CAP 256

/* Makes room for `need` more bytes, doubling the capacity so that n appends cost O(n) copying.
 * The caller has already checked that len + need stays within UD_RECORD_MAX_SIZE. */
static int reserve(struct ud_record_builder *b, size_t need)
{
    if (b->len + need <= b->cap)
        return 0;
    if (b->borrowed)
        return b->err = UD_ELIMIT;
    size_t cap = b->cap * 2;
    if (cap < b->len + need)
        cap = b->len + need;
    uint8_t *p = realloc(b->buf, cap);
    if (p == NULL)
        return b->err = UD_ENOMEM;
    b->buf = p;
    b->cap = cap;
    return 0;
}

static uint8_t *put_bytes(uint8_t *p, const void *src, size_t n)
{
    if (n > 0)
        memcpy(p, src, n);
    return p + n;
}

/* Stores the open row's column count into its entry; the row is closed by the next entry or by
 * finish. */
static void close_row(struct ud_record_builder *b)
{
    if (b->column_count_at != 0) {
        ud_put_le32(b->buf + b->column_count_at, b->column_count);
        b->column_count_at = 0;
        b->column_count = 0;
    }
}

/* Header fields as given to init, read back from the buffer for the per-entry checks. */
static uint8_t hdr_op(const struct ud_record_builder *b)
{
    return b->buf[OFF_OP];
}

static uint8_t hdr_entry_type(const struct ud_record_builder *b)
{
    return b->buf[OFF_ENTRY_TYPE];
}

static uint8_t hdr_txn_state(const struct ud_record_builder *b)
{
    return b->buf[OFF_TXN_STATE];
}

static int header_ok(const struct ud_record *hdr)
{
    /* version 0 means "the current one", so callers may zero-initialise the header. */
    if (hdr->version != 0 && hdr->version != UD_RECORD_VERSION)
        return 0;
    return check_header(hdr, UD_EINVAL, NULL) == 0;
}

/* Writes the header fields into b->buf (at least the header's size). */
static void start_record(struct ud_record_builder *b, const struct ud_record *hdr)
{
    uint8_t *h = b->buf;
    memset(h, 0, UD_RECORD_HEADER_SIZE);
    h[OFF_VERSION] = UD_RECORD_VERSION;
    h[OFF_OP] = hdr->op;
    h[OFF_ENTRY_TYPE] = hdr->entry_type;
    h[OFF_TXN_STATE] = hdr->txn_state;
    /* entry_count is patched by finish */
    ud_put_le64(h + OFF_LSN, hdr->lsn);
    ud_put_le64(h + OFF_HLC, hdr->hlc);
    ud_put_le64(h + OFF_RAFT_INDEX, hdr->raft_index);
    ud_put_le32(h + OFF_RAFT_POS, hdr->raft_pos);
    ud_put_le32(h + OFF_FLAGS, hdr->flags);
    memcpy(h + OFF_TXN_ID, hdr->txn_id, UD_TXN_ID_SIZE);
    ud_put_le64(h + OFF_TXN_BEGIN_LSN, hdr->txn_begin_lsn);
    ud_put_le64(h + OFF_LOB_OFFSET, hdr->lob_offset);
    b->len = UD_RECORD_HEADER_SIZE;
}

void ud_record_builder_init(struct ud_record_builder *b, const struct ud_record *hdr)
{
    memset(b, 0, sizeof *b);
    if (!header_ok(hdr)) {
        b->err = UD_EINVAL;
        return;
    }
    b->buf = malloc(BUILDER_INITIAL_CAP);
    if (b->buf == NULL) {
        b->err = UD_ENOMEM;
        return;
    }
    b->cap = BUILDER_INITIAL_CAP;
    start_record(b, hdr);
}

void ud_record_builder_init_in(struct ud_record_builder *b, const struct ud_record *hdr,
                               uint8_t *buf, size_t cap)
{
    memset(b, 0, sizeof *b);
    b->borrowed = 1;
    if (!header_ok(hdr)) {
        b->err = UD_EINVAL;
        return;
    }
    if (cap < UD_RECORD_HEADER_SIZE) {
        b->err = UD_ELIMIT;
        return;
    }
    b->buf = buf;
    b->cap = cap;
    start_record(b, hdr);
}

/* Checks and reserves one entry of key_len/value_len; on success the caller writes it. */
static int begin_entry(struct ud_record_builder *b, size_t key_len, size_t value_len)
{
    if (!has_entries(hdr_txn_state(b)))
        return b->err = UD_EINVAL;
    if (hdr_entry_type(b) == UD_ENTRY_LOB && b->entry_count == 1)
        return b->err = UD_EINVAL;
    if (key_len == 0)
        return b->err = UD_EINVAL;
    if (key_len > UINT16_MAX || value_len > UD_RECORD_MAX_SIZE)
        return b->err = UD_ELIMIT;
    /* Each term is bounded above, so the sum cannot overflow size_t. */
    size_t need = ud_record_kv_size(key_len, value_len);
    if (b->len + need > UD_RECORD_MAX_SIZE)
        return b->err = UD_ELIMIT;
    if (reserve(b, need) != 0)
        return b->err;
    close_row(b);
    return 0;
}

/* Writes u16 key_len | key | u32 value_len | value | u32 column_count = 0; returns the offset of
 * column_count. */
static size_t write_entry(struct ud_record_builder *b, const void *key, size_t key_len,
                          const void *value, size_t value_len)
{
    uint8_t *p = b->buf + b->len;
    ud_put_le16(p, (uint16_t)key_len);
    p = put_bytes(p + 2, key, key_len);
    ud_put_le32(p, (uint32_t)value_len);
    p = put_bytes(p + 4, value, value_len);
    ud_put_le32(p, 0);
    size_t column_count_at = (size_t)(p - b->buf);
    b->len = column_count_at + 4;
    b->entry_count++;
    return column_count_at;
}

int ud_record_add_kv(struct ud_record_builder *b, const void *key, size_t key_len,
                     const void *value, size_t value_len)
{
    if (b->err != 0)
        return b->err;
    if (b->buf == NULL)
        return b->err = UD_EINVAL; /* used after finish or reset without init */
    if (hdr_entry_type(b) == UD_ENTRY_ROW)
        return b->err = UD_EINVAL;
    /* A delete names keys only: the engine's API lets callers pass a value it ignores. */
    if (hdr_op(b) == UD_OP_DELETE)
        value_len = 0;
    if (begin_entry(b, key_len, value_len) != 0)
        return b->err;
    write_entry(b, key, key_len, value, value_len);
    return 0;
}

int ud_record_add_row(struct ud_record_builder *b, const void *row, size_t row_len)
{
    if (b->err != 0)
        return b->err;
    if (b->buf == NULL)
        return b->err = UD_EINVAL; /* used after finish or reset without init */
    if (hdr_entry_type(b) != UD_ENTRY_ROW)
        return b->err = UD_EINVAL;
    if (begin_entry(b, row_len, 0) != 0)
        return b->err;
    b->column_count_at = write_entry(b, row, row_len, NULL, 0);
    b->column_count = 0;
    return 0;
}

int ud_record_add_column(struct ud_record_builder *b, const void *name, size_t name_len,
                         const void *value, size_t value_len)
{
    if (b->err != 0)
        return b->err;
    if (b->buf == NULL)
        return b->err = UD_EINVAL; /* used after finish or reset without init */
    if (b->column_count_at == 0 || name_len == 0)
        return b->err = UD_EINVAL;
    if (hdr_op(b) == UD_OP_DELETE)
        value_len = 0;
    if (name_len > UINT16_MAX || value_len > UD_RECORD_MAX_SIZE)
        return b->err = UD_ELIMIT;
    size_t need = 2 + name_len + 4 + value_len;
    if (b->len + need > UD_RECORD_MAX_SIZE)
        return b->err = UD_ELIMIT;
    if (reserve(b, need) != 0)
        return b->err;
    uint8_t *p = b->buf + b->len;
    ud_put_le16(p, (uint16_t)name_len);
    p = put_bytes(p + 2, name, name_len);
    ud_put_le32(p, (uint32_t)value_len);
    p = put_bytes(p + 4, value, value_len);
    b->len = (size_t)(p - b->buf);
    b->column_count++;
    return 0;
}

int ud_record_builder_finish(struct ud_record_builder *b, uint8_t **buf, size_t *len)
{
    *buf = NULL;
    *len = 0;
    if (b->err == 0 && b->buf == NULL)
        b->err = UD_EINVAL;
    if (b->err == 0 && check_entry_count(hdr_entry_type(b), hdr_txn_state(b), b->entry_count,
                                         UD_EINVAL, NULL) != 0)
        b->err = UD_EINVAL;
    if (b->err != 0) {
        int err = b->err;
        ud_record_builder_reset(b);
        return err;
    }
    close_row(b);
    ud_put_le32(b->buf + OFF_ENTRY_COUNT, b->entry_count);
    *buf = b->buf;
    *len = b->len;
    b->buf = NULL;
    ud_record_builder_reset(b);
    return 0;
}

void ud_record_builder_reset(struct ud_record_builder *b)
{
    if (!b->borrowed)
        free(b->buf);
    memset(b, 0, sizeof *b);
}

const char *ud_op_name(int op)
{
    switch (op) {
    case UD_OP_PUT:
        return "put";
    case UD_OP_DELETE:
        return "delete";
    case UD_OP_UPDATE:
        return "update";
    default:
        return "?";
    }
}

const char *ud_entry_type_name(int type)
{
    switch (type) {
    case UD_ENTRY_KV:
        return "kv";
    case UD_ENTRY_ROW:
        return "row";
    case UD_ENTRY_LOB:
        return "lob";
    default:
        return "?";
    }
}

const char *ud_txn_state_name(int state)
{
    switch (state) {
    case UD_TXN_NONE:
        return "none";
    case UD_TXN_BEGIN:
        return "begin";
    case UD_TXN_PREPARE:
        return "prepare";
    case UD_TXN_COMMIT:
        return "commit";
    case UD_TXN_ABORT:
        return "abort";
    default:
        return "?";
    }
}
