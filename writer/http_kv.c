/*
 * Write API, KV: PUT/DELETE kv/{key} (with If-Match) and POST kv/batch.
 *
 * If-Match travels with the write as its record's condition (docs/format-command.md
 * "Conditions"): the FSM judges it when it applies the record, on every writer at the same point
 * of the log, so no write to the key by any path (HTTP, RESP, a transaction's commit, a relayer's
 * records) can come between the check and the write. A failed condition comes back as
 * UD_EPRECONDITION with the key's current LSN, answered 412.
 */
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/http/body.h"
#include "core/log.h"
#include "proto/command.h"
#include "writer/cluster.h"
#include "writer/http_digest.h"
#include "writer/http_write.h"
#include "writer/submit.h"
#include "writer/writer.h"

/*
 * At concurrency 256 a leader holds hundreds of PUTs between their arrival and their answer, each
 * with a kv_write: more than glibc's per-thread cache keeps, so each went through the allocator's
 * bins. Keeping up to SPARES answered kv_writes for the next PUTs took the leader's calloc calls
 * from 2.13 to 1.10 per write (docs/benchmarks.md).
 */
#define SPARES 1024

struct kv_write {
    struct ud_writer_http *wh;
    struct ud_http_req *r;
    char ns[UD_NS_NAME_MAX + 1];
    uint8_t *rec; /* owned until submitted */
    size_t rec_len;
    size_t nitems; /* for "processed" */
    int batch;
    struct ud_submit_cond cond; /* If-Match; kind 0: none */
    const char *key;            /* the request's Idempotency-Key, or NULL */
    size_t key_len;
    uint8_t digest[UD_COMMAND_DIGEST_SIZE];
    struct kv_write *next; /* the spare list */
};

void ud_writer_http_kv_free(struct ud_writer_http *wh)
{
    while (wh->spare_writes != NULL) {
        struct kv_write *next = wh->spare_writes->next;
        free(wh->spare_writes);
        wh->spare_writes = next;
    }
    wh->nspare_writes = 0;
}

/* --- shared replies --------------------------------------------------------------------------- */

/* Built on the stack: the answer to every write, where a JSON buffer was one more heap block. */
void ud_writer_http_reply_ok(struct ud_http_req *r, uint64_t lsn)
{
    static const char head[] = "{\"success\":true,\"lsn\":";
    char body[sizeof head + 24];
    size_t len = sizeof head - 1;
    memcpy(body, head, len);
    len += ud_json_u64(body + len, lsn);
    body[len++] = '}';
    body[len++] = '\n';
    ud_http_reply(r, 200, "application/json", body, len);
}

void ud_writer_http_reply_submit_error(struct ud_http_req *r, int status, const char *errmsg)
{
    char msg[UD_ERRMSG_SIZE + 64];
    if (errmsg == NULL || errmsg[0] == '\0') {
        if (status == UD_ENOTFOUND)
            snprintf(msg, sizeof msg, "namespace not found: %s", ud_http_req_ns_name(r));
        else if (status == UD_ECLOSED)
            snprintf(msg, sizeof msg,
                     "this node cannot commit writes now (not the raft leader, or shutting down)");
        else if (status == UD_EBUSY)
            snprintf(msg, sizeof msg, "the flush to LMDB is behind: retry later");
        else
            snprintf(msg, sizeof msg, "failed to write: %s", ud_strerror(status));
        errmsg = msg;
    } else if (status == UD_EIO || status == UD_ENOMEM || status == UD_EMAPFULL) {
        snprintf(msg, sizeof msg, "failed to write: %s", errmsg);
        errmsg = msg;
    }
    /* Nothing was proposed: a follower that forwarded the write waits for the next leader and
     * sends it there (raft refuses proposals during a leadership transfer, too). */
    if (status == UD_ECLOSED && ud_http_req_marked(r)) /* UD_CLUSTER_FORWARDED */
        ud_http_set_header(r, UD_CLUSTER_NOT_LEADER, "1");
    ud_http_reply_code(r, status, errmsg);
}

/* --- the write ------------------------------------------------------------------------------- */

static void kw_free(struct kv_write *kw)
{
    struct ud_writer_http *wh = kw->wh;
    free(kw->rec);
    if (wh->nspare_writes >= SPARES) {
        free(kw);
        return;
    }
    kw->next = wh->spare_writes;
    wh->spare_writes = kw;
    wh->nspare_writes++;
}

/* The 412 of a condition the FSM found false: its message, and the key's current LSN. */
static void reply_precondition(struct ud_http_req *r, const char *errmsg, uint64_t cur)
{
    struct ud_jbuf j;
    ud_jbuf_init(&j);
    ud_jbuf_lit(&j, "{\"error\":");
    ud_jbuf_str(&j, errmsg, strlen(errmsg));
    ud_jbuf_lit(&j, ",\"lsn\":");
    ud_jbuf_u64(&j, cur);
    ud_jbuf_lit(&j, "}");
    ud_http_reply_json(r, 412, &j);
}

static void kv_done(void *arg, int status, const char *errmsg, const uint64_t *lsns, size_t n)
{
    struct kv_write *kw = arg;
    for (size_t i = 0; status == 0 && i < n; i++)
        ud_http_req_wrote(kw->r, lsns[i]);
    if (status == UD_EPRECONDITION && n == 1) {
        reply_precondition(kw->r, errmsg, lsns[0]);
    } else if (status != 0) {
        ud_writer_http_reply_submit_error(kw->r, status, errmsg);
    } else if (kw->batch) {
        struct ud_jbuf j;
        ud_jbuf_init(&j);
        ud_jbuf_printf(&j, "{\"success\":true,\"processed\":%zu,\"lsn\":", kw->nitems);
        ud_jbuf_u64(&j, n > 0 ? lsns[0] : 0);
        ud_jbuf_lit(&j, "}");
        ud_http_reply_json(kw->r, 200, &j);
    } else {
        ud_writer_http_reply_ok(kw->r, n > 0 ? lsns[0] : 0);
    }
    kw_free(kw);
}

/* Submits kw, with its condition; kw is freed by kv_done. */
static void run(struct kv_write *kw)
{
    uint8_t *rec = kw->rec;
    size_t len = kw->rec_len;
    kw->rec = NULL;
    const uint8_t *digest = kw->key != NULL ? kw->digest : NULL;
    ud_submit_cond(kw->wh->w, kw->ns, (const uint8_t *)kw->key, kw->key_len, digest, rec, len,
                   kw->cond.kind != 0 ? &kw->cond : NULL, kv_done, kw);
}

static struct kv_write *kw_new(struct ud_writer_http *wh, struct ud_http_req *r)
{
    struct kv_write *kw;
    if (wh->spare_writes != NULL) {
        kw = wh->spare_writes;
        wh->spare_writes = kw->next;
        wh->nspare_writes--;
        memset(kw, 0, sizeof *kw);
    } else if ((kw = calloc(1, sizeof *kw)) == NULL) {
        abort();
    }
    kw->wh = wh;
    kw->r = r;
    strcpy(kw->ns, ud_http_req_ns_name(r));
    return kw;
}

/* The request's key and digest, taken while its body is still there. */
static void kw_digest(struct kv_write *kw)
{
    ud_http_key_digest(kw->r, &kw->key, &kw->key_len, kw->digest);
}

/* PUT and DELETE of one key. */
static void single(struct ud_http_req *r, struct ud_writer_http *wh, enum ud_op op)
{
    char errmsg[UD_ERRMSG_SIZE];
    size_t kl, bl;
    const uint8_t *key = ud_http_req_key(r, &kl);
    const uint8_t *body = ud_http_req_body(r, &bl);
    struct ud_kv kv = {key, kl, NULL, 0};
    struct ud_http_body b;
    ud_http_body_init(&b);
    int rc =
        op == UD_OP_PUT ? ud_http_parse_kv_put(&b, body, bl, &kv.value, &kv.value_len, errmsg) : 0;
    struct kv_write *kw = kw_new(wh, r);
    if (rc == 0)
        rc = ud_engine_encode_kv(op, &kv, 1, 0, &kw->rec, &kw->rec_len, errmsg);
    ud_http_body_free(&b);
    if (rc != 0) {
        kw_free(kw);
        ud_http_reply_code(r, rc, errmsg);
        return;
    }
    size_t hl;
    const char *h = ud_http_req_header(r, "if-match", &hl);
    if (h != NULL) {
        uint64_t lsn;
        int any;
        if (ud_writer_http_if_match_parse(h, hl, &lsn, &any) != 0) {
            kw_free(kw);
            ud_http_reply_error(r, 400,
                                "If-Match must be an LSN (as returned by GET and every write), "
                                "\"0\" for an absent key, or *");
            return;
        }
        kw->cond.kind = any ? UD_COMMAND_COND_EXISTS : UD_COMMAND_COND_LSN;
        kw->cond.lsn = any ? 0 : lsn;
    }
    kw_digest(kw);
    run(kw);
}

void ud_writer_http_on_kv_put(struct ud_http_req *r, void *arg)
{
    single(r, arg, UD_OP_PUT);
}

void ud_writer_http_on_kv_delete(struct ud_http_req *r, void *arg)
{
    single(r, arg, UD_OP_DELETE);
}

void ud_writer_http_on_kv_batch(struct ud_http_req *r, void *arg)
{
    struct ud_writer_http *wh = arg;
    char errmsg[UD_ERRMSG_SIZE];
    size_t bl;
    const uint8_t *body = ud_http_req_body(r, &bl);
    struct ud_http_body b;
    ud_http_body_init(&b);
    struct ud_http_kv_batch batch;
    int rc = ud_http_parse_kv_batch(&b, body, bl, &batch, errmsg);
    if (rc != 0) {
        ud_http_body_free(&b);
        ud_http_reply_code(r, rc, errmsg);
        return;
    }
    struct kv_write *kw = kw_new(wh, r);
    kw->batch = 1;
    kw->nitems = batch.n;
    rc = ud_engine_encode_kv(batch.op, batch.items, batch.n, 0, &kw->rec, &kw->rec_len, errmsg);
    if (rc != 0) {
        ud_http_body_free(&b);
        kw_free(kw);
        ud_http_reply_code(r, rc, errmsg);
        return;
    }
    ud_http_body_free(&b);
    kw_digest(kw);
    run(kw);
}
