/*
 * JSON request bodies of the HTTP API, parsed and validated into plain structs with values
 * base64-decoded (jansson inside, no h2o). Every function returns 0 or UD_EINVAL with errmsg
 * stating what is wrong and naming the field ("invalid base64 encoding in field
 * \"items[1].value\""); the caller answers 400 with it.
 *
 * Memory: everything a parser returns (arrays, decoded values, key strings) lives in the
 * struct ud_http_body given to it (the first few KiB inside it: do not copy the struct once a
 * parser has used it) and stays valid until ud_http_body_free. Unknown fields are
 * ignored (as the reference server does); duplicate fields are rejected.
 */
#ifndef UD_CORE_HTTP_BODY_H
#define UD_CORE_HTTP_BODY_H

#include <stddef.h>
#include <stdint.h>

#include "core/engine.h"

/* Upper bounds that keep one request's work bounded (documented in docs/http-api.md). */
#define UD_HTTP_MAX_BATCH   1024 /* items of a KV batch, rows of a row batch */
#define UD_HTTP_MAX_COLUMNS 1024 /* columns named by one row */

/* Bytes of a body's allocations kept in the struct itself (on the caller's stack): a single PUT's
 * decoded value up to about 4 KiB needs no heap block. */
#define UD_HTTP_BODY_INLINE 4096

struct ud_http_body_blk;
struct ud_http_body {
    struct ud_http_body_blk *blocks; /* owned */
    size_t inline_used;
    max_align_t inline_buf[UD_HTTP_BODY_INLINE / sizeof(max_align_t)];
};

void ud_http_body_init(struct ud_http_body *b);
void ud_http_body_free(struct ud_http_body *b);

/* PUT kv/{key}: {"value": b64}. The common shape is parsed without jansson. */
int ud_http_parse_kv_put(struct ud_http_body *b, const void *in, size_t len, const uint8_t **value,
                         size_t *value_len, char *errmsg);
/* The same through jansson only: the fuzz target checks that both agree. */
int ud_http_parse_kv_put_general(struct ud_http_body *b, const void *in, size_t len,
                                 const uint8_t **value, size_t *value_len, char *errmsg);

/* POST kv/batch: {"operation":"put","items":[{"key":str,"value":b64}...]} or
 * {"operation":"delete","keys":[str...]}. At least one, at most UD_HTTP_MAX_BATCH entries. */
struct ud_http_kv_batch {
    enum ud_op op; /* PUT or DELETE */
    struct ud_kv *items;
    size_t n;
};
int ud_http_parse_kv_batch(struct ud_http_body *b, const void *in, size_t len,
                           struct ud_http_kv_batch *out, char *errmsg);

/* PUT row/{key}: {"columns":{name: b64, ...}} with at least one column. */
int ud_http_parse_row_put(struct ud_http_body *b, const void *in, size_t len, struct ud_col **cols,
                          size_t *ncols, char *errmsg);

/* POST row/batch: {"operation":"put","rows":[{"rowKey":str,"columns":{name:b64}}]} or
 * {"operation":"delete","rows":[{"rowKey":str,"columns":[names] (optional: whole row)}]}. */
struct ud_http_row_batch {
    enum ud_op op;
    struct ud_row *rows;
    size_t n;
};
int ud_http_parse_row_batch(struct ud_http_body *b, const void *in, size_t len,
                            struct ud_http_row_batch *out, char *errmsg);

/* POST tx/begin: {"operation":"put|update|delete","entryType":"kv|row|lob"}. */
int ud_http_parse_txn_begin(const void *in, size_t len, enum ud_op *op, enum ud_entry_type *type,
                            char *errmsg);

/* POST tx/{id}/kv: {"key":str,"value":b64}; for a DELETE transaction "value" may be omitted (and
 * is ignored). */
int ud_http_parse_txn_kv(struct ud_http_body *b, const void *in, size_t len, enum ud_op op,
                         struct ud_kv *out, char *errmsg);

/* POST tx/{id}/row: {"rowKey":str,"columns":{name:b64}}; for a DELETE transaction "columns" is
 * an array of names, an object (its names are used), or absent (the whole row). */
int ud_http_parse_txn_row(struct ud_http_body *b, const void *in, size_t len, enum ud_op op,
                          struct ud_row *out, char *errmsg);

/* POST wal/backup: {"afterSegmentId": int >= 0 (optional, default 0), "backupDir": str}.
 * *dir lives in b. */
int ud_http_parse_wal_backup(struct ud_http_body *b, const void *in, size_t len,
                             uint64_t *after_segment, const char **dir, char *errmsg);

/* POST wal/ack: {"id": str, "applied_lsn": int >= 0, "subtree_min_lsn": int >= 0 (optional),
 * "address": str (optional)}. *id and *address (NULL when absent) live in b. */
int ud_http_parse_wal_ack(struct ud_http_body *b, const void *in, size_t len, const char **id,
                          uint64_t *applied_lsn, uint64_t *subtree_min_lsn, const char **address,
                          char *errmsg);

/* POST btree/backup: {"path": str}. */
int ud_http_parse_btree_backup(struct ud_http_body *b, const void *in, size_t len,
                               const char **path, char *errmsg);

#endif
