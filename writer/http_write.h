/*
 * The writer's HTTP write API (writer/http_*.c): state shared by its handlers, and the plain
 * functions that turn parsed requests into log records (tested without sockets).
 * Loop thread only.
 */
#ifndef UD_WRITER_HTTP_WRITE_H
#define UD_WRITER_HTTP_WRITE_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core/engine.h"
#include "core/http/http.h"
#include "core/registry.h"

struct ud_writer;
struct ud_writer_http_txn;
struct kv_write;

/* Everything the write handlers share; the route arg of every write route. */
struct ud_writer_http {
    struct ud_writer *w;
    struct ud_http_server *srv;
    /* Open transactions this node knows (ARCHITECTURE.md section 6): appends serialized, idle
     * ones aborted. */
    struct ud_writer_http_txn *txns;
    uv_timer_t idle_timer;
    int idle_timer_on; /* open (started, not yet closed): a stop waits for its close */
    /* Answered KV writes kept for the next ones (http_kv.c). */
    struct kv_write *spare_writes;
    size_t nspare_writes;
    size_t background; /* idle aborts in flight: their callbacks need this struct */
    int stopping;
    void (*done)(struct ud_writer *w);
    int server_stopped;
};

/* Records are encoded with the engine's encoders (core/engine.h, ud_engine_encode_*) with hlc 0:
 * the submit seam stamps it. They check the model limits, so a bad request is answered 400
 * without a raft round trip. */

/* A LOB chunk this node appended: (offset, len) and the CRC32C of its bytes. */
struct ud_writer_http_chunk {
    uint64_t offset;
    uint64_t len;
    uint32_t crc;
};

/*
 * Where a LOB chunk of len bytes with CRC32C crc at offset (UINT64_MAX: "append at the end")
 * goes, given what the transaction holds: 0 with *at set (append there), 1 (a retry of a chunk
 * already held: answer success without a record), or UD_ECONFLICT (errmsg says why; *expected is
 * the offset the next chunk must take when the conflict is about where the chunk goes, otherwise
 * UINT64_MAX). A retry must repeat a chunk of `chunks` exactly, bytes included, when the list is
 * complete (every chunk was appended through this node); otherwise, after a restart or a leader
 * change, any range already held is taken as a retry.
 */
int ud_writer_http_lob_position(const struct ud_txn_info *info, const uint8_t *key, size_t key_len,
                                uint64_t offset, size_t len, uint32_t crc,
                                const struct ud_writer_http_chunk *chunks, size_t nchunks,
                                int complete, uint64_t *at, uint64_t *expected, char *errmsg);

/* If-Match: "*" (*any = 1), or an LSN, quoted or not ("0": the key must be absent).
 * 0 or UD_EINVAL. */
int ud_writer_http_if_match_parse(const char *v, size_t len, uint64_t *lsn, int *any);

/* --- handlers ----------------------------------------------------------------------------- */

/* writer/http_kv.c */
void ud_writer_http_on_kv_put(struct ud_http_req *r, void *arg);
void ud_writer_http_on_kv_delete(struct ud_http_req *r, void *arg);
void ud_writer_http_on_kv_batch(struct ud_http_req *r, void *arg);
/* Frees the spare KV writes. */
void ud_writer_http_kv_free(struct ud_writer_http *wh);

/* writer/http_row.c */
void ud_writer_http_on_row_put(struct ud_http_req *r, void *arg);
void ud_writer_http_on_row_delete(struct ud_http_req *r, void *arg);
void ud_writer_http_on_row_delete_columns(struct ud_http_req *r, void *arg);
void ud_writer_http_on_row_batch(struct ud_http_req *r, void *arg);

/* writer/http_txn.c */
void ud_writer_http_on_txn_begin(struct ud_http_req *r, void *arg);
void ud_writer_http_on_txn_kv(struct ud_http_req *r, void *arg);
void ud_writer_http_on_txn_row(struct ud_http_req *r, void *arg);
void ud_writer_http_on_txn_lob(struct ud_http_req *r, void *arg);
void ud_writer_http_on_txn_commit(struct ud_http_req *r, void *arg);
void ud_writer_http_on_txn_abort(struct ud_http_req *r, void *arg);
void ud_writer_http_txn_start(struct ud_writer_http *wh);
/* writer/http_server.c: finishes a stop once the server stopped, idle aborts called back and
 * the idle timer closed. */
void ud_writer_http_stop_progress(struct ud_writer_http *wh);
void ud_writer_http_txns_forget_ns(struct ud_writer_http *wh, const char *ns);
void ud_writer_http_txns_free(struct ud_writer_http *wh);

/* writer/http_ns.c */
void ud_writer_http_on_ns_create(struct ud_http_req *r, void *arg);
void ud_writer_http_on_ns_delete(struct ud_http_req *r, void *arg);

/* writer/http_backup.c */
void ud_writer_http_on_wal_backup(struct ud_http_req *r, void *arg);
void ud_writer_http_on_btree_backup(struct ud_http_req *r, void *arg);

/* Shared replies: {"success":true,"lsn":N} and the answer for a failed submit (status from the
 * seam's code: 404 unknown namespace/transaction, 400 rejected records, 409 transaction state,
 * 503 + Retry-After for admission control, shutdown and not leading (with unison-not-leader on a
 * forwarded request), 503 + unison-outcome: unknown for a write in doubt, 500 storage errors). */
void ud_writer_http_reply_ok(struct ud_http_req *r, uint64_t lsn);
/* Submits one record for r's namespace and answers {"success":true,"lsn":N} (plus
 * "processed": processed when processed > 0), or the submit error. rec is transferred. */
void ud_writer_http_submit(struct ud_writer_http *wh, struct ud_http_req *r, uint8_t *rec,
                           size_t len, size_t processed);
void ud_writer_http_reply_submit_error(struct ud_http_req *r, int status, const char *errmsg);

#endif
