/*
 * Log record: the unit of the WAL, of replication and of raft commands (docs/format-record.md).
 *
 * A record is a 72-byte little-endian header followed by `entry_count` entries. Decoding is
 * zero-copy: a decoded record and its entries are views into the caller's buffer.
 *
 *   off size field
 *   0   1    version        UD_RECORD_VERSION
 *   1   1    op             enum ud_op
 *   2   1    entry_type     enum ud_entry_type
 *   3   1    txn_state      enum ud_txn_state
 *   4   4    entry_count
 *   8   8    lsn            0 until assigned by the apply function
 *   16  8    hlc            hybrid logical clock stamped by the proposer (0 when unused)
 *   24  8    raft_index     raft entry that carried the record (0 when not under raft)
 *   32  4    raft_pos       position of the record inside that raft entry
 *   36  4    flags          must be 0 in version 1
 *   40  16   txn_id         zero when txn_state == NONE
 *   56  8    txn_begin_lsn  LSN of the transaction's BEGIN record (PREPARE/COMMIT/ABORT), else 0
 *   64  8    lob_offset     byte offset of a LOB chunk inside its object, else 0
 *   72  ...  entries
 *
 * Entry:  u16 key_len | key | u32 value_len | value | u32 column_count | columns
 * Column: u16 name_len | name | u32 value_len | value
 */
#ifndef UD_PROTO_RECORD_H
#define UD_PROTO_RECORD_H

#include <stddef.h>
#include <stdint.h>

#define UD_RECORD_VERSION     1
#define UD_RECORD_HEADER_SIZE 72
#define UD_TXN_ID_SIZE        16
/* Largest encoded record accepted by the decoder and the builder (a 1 MiB LOB chunk fits). */
#define UD_RECORD_MAX_SIZE   (4u << 20)
#define UD_RECORD_LSN_OFFSET 8

enum ud_op {
    UD_OP_PUT = 1,    /* KV upsert, row column merge, LOB chunk */
    UD_OP_DELETE = 2, /* KV delete; row: named columns, or the whole row when none are named */
    UD_OP_UPDATE = 3, /* like PUT, only allowed in transactions; target must exist */
};

enum ud_entry_type {
    UD_ENTRY_KV = 1,
    UD_ENTRY_ROW = 2,
    UD_ENTRY_LOB = 3,
};

enum ud_txn_state {
    UD_TXN_NONE = 0,    /* a standalone write: all its entries apply atomically */
    UD_TXN_BEGIN = 1,   /* no entries; op and entry_type fix the transaction's kind */
    UD_TXN_PREPARE = 2, /* entries held invisible until COMMIT */
    UD_TXN_COMMIT = 3,  /* no entries */
    UD_TXN_ABORT = 4,   /* no entries */
};

/* A decoded record: every pointer is a view into the buffer given to ud_record_decode. */
struct ud_record {
    uint8_t version;
    uint8_t op;
    uint8_t entry_type;
    uint8_t txn_state;
    uint32_t entry_count;
    uint64_t lsn;
    uint64_t hlc;
    uint64_t raft_index;
    uint32_t raft_pos;
    uint32_t flags;
    uint8_t txn_id[UD_TXN_ID_SIZE];
    uint64_t txn_begin_lsn;
    uint64_t lob_offset;
    const uint8_t *entries; /* first entry */
    size_t entries_len;     /* bytes of all entries */
};

struct ud_entry {
    const uint8_t *key;
    uint16_t key_len;
    const uint8_t *value;
    uint32_t value_len;
    uint32_t column_count;
    const uint8_t *columns; /* encoded columns, iterate with ud_column_iter */
    size_t columns_len;
};

struct ud_column {
    const uint8_t *name;
    uint16_t name_len;
    const uint8_t *value;
    uint32_t value_len;
};

/*
 * Decodes and fully validates buf[0..len). On success fills *rec (views into buf, borrowed for as
 * long as buf lives) and returns 0. Every malformed input is rejected:
 *   UD_ETRUNCATED  the buffer ends inside the header, an entry or a column;
 *   UD_EVERSION    unknown version byte;
 *   UD_ECORRUPT    bad op/entry type/txn state/flags, entry count disagreeing with the bytes,
 *                  trailing bytes, zero-length key, an entry shape the entry type does not allow
 *                  (KV/LOB with columns, row with a value, LOB with != 1 entry), entries on
 *                  BEGIN/COMMIT/ABORT or none on NONE/PREPARE, a txn id on NONE, UPDATE outside
 *                  a transaction, txn_begin_lsn on NONE/BEGIN, lob_offset outside LOB
 *                  entries, an empty column name, a value on a DELETE entry or column;
 *   UD_ELIMIT      len > UD_RECORD_MAX_SIZE.
 * errmsg (UD_ERRMSG_SIZE, may be NULL) names the field and byte offset at fault.
 */
int ud_record_decode(const uint8_t *buf, size_t len, struct ud_record *rec, char *errmsg);

/* Iterates the entries of a record that ud_record_decode accepted (cannot fail then). */
struct ud_entry_iter {
    const uint8_t *p;
    const uint8_t *end;
};
void ud_entry_iter_init(struct ud_entry_iter *it, const struct ud_record *rec);
/* Returns 1 and fills *e with the next entry, 0 at the end. */
int ud_entry_iter_next(struct ud_entry_iter *it, struct ud_entry *e);

struct ud_column_iter {
    const uint8_t *p;
    const uint8_t *end;
};
void ud_column_iter_init(struct ud_column_iter *it, const struct ud_entry *e);
int ud_column_iter_next(struct ud_column_iter *it, struct ud_column *c);

/* Reads or patches the LSN of an encoded record in place (buf must hold the header). */
uint64_t ud_record_get_lsn(const uint8_t *buf);
void ud_record_set_lsn(uint8_t *buf, uint64_t lsn);
/* Reads the raft index, the position in its raft entry and the HLC stamp of an encoded record
 * (buf must hold the header). */
uint64_t ud_record_get_raft_index(const uint8_t *buf);
uint32_t ud_record_get_raft_pos(const uint8_t *buf);
uint64_t ud_record_get_hlc(const uint8_t *buf);
/* Stamps an encoded record in place: where it sits in the raft log; its HLC. */
void ud_record_set_raft_position(uint8_t *buf, uint64_t index, uint32_t pos);
void ud_record_set_hlc(uint8_t *buf, uint64_t hlc);

/*
 * Builder: encodes one record into a growing heap buffer.
 *   struct ud_record_builder b;
 *   ud_record_builder_init(&b, &hdr);      // hdr: fields of struct ud_record except entries
 *   ud_record_add_kv(&b, k, kl, v, vl);    // KV entry or LOB chunk (value = chunk bytes)
 *   ud_record_add_row(&b, row, rl);        // row entry, then its columns:
 *   ud_record_add_column(&b, n, nl, v, vl);
 *   ud_record_builder_finish(&b, &buf, &len);   // buf transferred to the caller (free())
 * Errors are sticky: the first failure (UD_ENOMEM, UD_ELIMIT when the record would exceed
 * UD_RECORD_MAX_SIZE or a key/name exceeds 65535 bytes, UD_EINVAL for an empty key) is returned by
 * finish, which then frees the buffer. ud_record_builder_reset discards without finishing.
 * The builder does not enforce the model limits (KV key <= 511 ...): the engine does.
 */
struct ud_record_builder {
    uint8_t *buf;
    size_t len;
    size_t cap;
    uint32_t entry_count;
    size_t column_count_at; /* offset of the open row entry's column_count, 0 when none */
    uint32_t column_count;
    int err;
    int borrowed; /* buf is the caller's (ud_record_builder_init_in): never grown or freed */
};

void ud_record_builder_init(struct ud_record_builder *b, const struct ud_record *hdr);
/* The same into the caller's cap bytes at buf, which are never reallocated or freed: a record
 * that would not fit fails with UD_ELIMIT; finish sets *buf to buf. For writing a record straight
 * into its destination (a WAL frame) when its size is known (ud_record_kv_size). */
void ud_record_builder_init_in(struct ud_record_builder *b, const struct ud_record *hdr,
                               uint8_t *buf, size_t cap);

/* Bytes one KV or LOB entry takes in a record (key_len <= 65535, value_len <= the record's
 * size); a record is UD_RECORD_HEADER_SIZE plus its entries. */
static inline size_t ud_record_kv_size(size_t key_len, size_t value_len)
{
    return 2 + key_len + 4 + value_len + 4;
}
int ud_record_add_kv(struct ud_record_builder *b, const void *key, size_t key_len,
                     const void *value, size_t value_len);
int ud_record_add_row(struct ud_record_builder *b, const void *row, size_t row_len);
int ud_record_add_column(struct ud_record_builder *b, const void *name, size_t name_len,
                         const void *value, size_t value_len);
int ud_record_builder_finish(struct ud_record_builder *b, uint8_t **buf, size_t *len);
void ud_record_builder_reset(struct ud_record_builder *b);

/* Short names for logs and errors: "put", "kv", "prepare"...; "?" for unknown values. */
const char *ud_op_name(int op);
const char *ud_entry_type_name(int type);
const char *ud_txn_state_name(int state);

#endif
