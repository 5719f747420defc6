/*
 * Write API, transactions (ARCHITECTURE.md section 6): tx/begin, tx/{id}/kv|row|lob,
 * tx/{id}/commit|abort. The leader picks the id (16 random bytes); begin, each append, commit and
 * abort are one record each through the submit seam. The engine's open-transaction table is the
 * truth (it survives restarts and is the same on every writer); the table here only adds what a
 * leader needs on top: one request at a time per transaction (a concurrent one gets 409) and the
 * time of the last activity, for idle aborts proposed by a loop timer.
 *
 * An Idempotency-Key on any of these requests goes with its record through the submit seam
 * (docs/raft.md "Idempotency"): a retried begin answers the id of the transaction the first one
 * began (read back from its record), a retried append or commit the first one's LSN, also once
 * the transaction has ended.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "core/crc32c.h"
#include "core/err.h"
#include "core/http/body.h"
#include "core/http/path.h"
#include "core/keyspace.h"
#include "core/log.h"
#include "core/wal.h"
#include "proto/record.h"
#include "raft/node.h"
#include "writer/http_digest.h"
#include "writer/http_write.h"
#include "writer/submit.h"
#include "writer/writer.h"

#define TXN_LOG "http-txn"

struct ud_writer_http_txn {
    struct ud_writer_http_txn *next;
    uint8_t id[16];
    char ns[UD_NS_NAME_MAX + 1];
    uint64_t last_active_ms; /* uv_now */
    uint64_t term;           /* raft term this node led in when it added the entry (0: none) */
    int busy;                /* a request (or an idle abort) on it is in flight */
    int seen;                /* found in the engine's table by the latest idle sweep */
    /* LOB chunks appended through this node, to recognize exact retries. complete: every chunk
     * of the transaction is listed (it began here, on this leader). */
    struct ud_writer_http_chunk *chunks;
    size_t nchunks, cap;
    int complete;
};

static void txn_free(struct ud_writer_http_txn *t)
{
    free(t->chunks);
    free(t);
}

static void chunk_add(struct ud_writer_http_txn *t, uint64_t offset, uint64_t len, uint32_t crc)
{
    if (t->nchunks == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 16;
        void *p = realloc(t->chunks, cap * sizeof *t->chunks);
        if (p == NULL) {
            t->complete = 0; /* fall back to the range rule */
            return;
        }
        t->chunks = p;
        t->cap = cap;
    }
    t->chunks[t->nchunks++] = (struct ud_writer_http_chunk){offset, len, crc};
}

static struct ud_writer_http_txn *txn_find(struct ud_writer_http *wh, const char *ns,
                                           const uint8_t id[16])
{
    for (struct ud_writer_http_txn *t = wh->txns; t != NULL; t = t->next)
        if (memcmp(t->id, id, 16) == 0 && strcmp(t->ns, ns) == 0)
            return t;
    return NULL;
}

/* The raft term in which this node leads and has applied earlier leaders' entries, else 0. */
static uint64_t leading_term(struct ud_writer *w)
{
    if (!ud_writer_is_leader(w))
        return 0;
    if (w->raft == NULL)
        return 1; /* leads without raft (the HTTP unit test's writer): one term */
    return ud_raft_node_leader_ready(w->raft) ? ud_raft_node_term(w->raft) : 0;
}

static struct ud_writer_http_txn *txn_add(struct ud_writer_http *wh, const char *ns,
                                          const uint8_t id[16])
{
    struct ud_writer_http_txn *t = calloc(1, sizeof *t);
    if (t == NULL)
        abort();
    memcpy(t->id, id, 16);
    snprintf(t->ns, sizeof t->ns, "%s", ns);
    t->last_active_ms = uv_now(wh->w->loop);
    t->term = leading_term(wh->w);
    t->next = wh->txns;
    wh->txns = t;
    return t;
}

static void txn_remove(struct ud_writer_http *wh, struct ud_writer_http_txn *t)
{
    struct ud_writer_http_txn **p = &wh->txns;
    while (*p != NULL && *p != t)
        p = &(*p)->next;
    if (*p == t)
        *p = t->next;
    txn_free(t);
}

void ud_writer_http_txns_forget_ns(struct ud_writer_http *wh, const char *ns)
{
    struct ud_writer_http_txn **p = &wh->txns;
    while (*p != NULL) {
        struct ud_writer_http_txn *t = *p;
        if (strcmp(t->ns, ns) == 0 && !t->busy) {
            *p = t->next;
            txn_free(t);
        } else {
            p = &t->next;
        }
    }
}

void ud_writer_http_txns_free(struct ud_writer_http *wh)
{
    while (wh->txns != NULL) {
        struct ud_writer_http_txn *t = wh->txns;
        wh->txns = t->next;
        txn_free(t);
    }
}

/* --- a request on a transaction --------------------------------------------------------------- */

enum txn_action { ACT_BEGIN, ACT_APPEND, ACT_COMMIT, ACT_ABORT };

struct txn_call {
    struct ud_writer_http *wh;
    struct ud_http_req *r; /* NULL for an idle abort */
    enum txn_action act;
    uint8_t id[16];
    char ns[UD_NS_NAME_MAX + 1];
    int adopted; /* a retried begin: id is the first begin's transaction */
    /* LOB appends: where the chunk went, for the answer */
    int lob;
    uint64_t offset;
    uint64_t size;
    uint32_t crc; /* of the chunk's bytes */
};

static void reply_txn_ok(struct txn_call *c, uint64_t lsn)
{
    struct ud_jbuf j;
    ud_jbuf_init(&j);
    ud_jbuf_lit(&j, "{");
    if (c->act == ACT_BEGIN) {
        char hex[33];
        ud_http_txn_id_format(c->id, hex);
        ud_jbuf_printf(&j, "\"txnId\":\"%s\",", hex);
    }
    ud_jbuf_lit(&j, "\"success\":true,\"lsn\":");
    ud_jbuf_u64(&j, lsn);
    if (c->lob)
        ud_jbuf_printf(&j, ",\"offset\":%llu,\"size\":%llu", (unsigned long long)c->offset,
                       (unsigned long long)c->size);
    ud_jbuf_lit(&j, "}");
    ud_http_reply_json(c->r, 200, &j);
}

static const char *idempotency_key(struct ud_http_req *r, size_t *len)
{
    *len = 0;
    return r != NULL ? ud_http_req_header(r, "idempotency-key", len) : NULL;
}

/* The transaction id in the record at lsn of namespace name: 0, or an error code. */
static int txn_id_at(struct ud_writer *w, const char *name, uint64_t lsn, uint8_t id[16],
                     char *errmsg)
{
    struct ud_ns *ns;
    if (ud_registry_acquire(w->registry, name, &ns) != 0)
        return ud_errf(errmsg, UD_ENOTFOUND, "namespace not found: %s", name);
    struct ud_wal_reader *rd;
    int rc = ud_ns_stream_open(ns, lsn, &rd);
    if (rc != 0) {
        ud_registry_release(w->registry, ns);
        return ud_errf(errmsg, rc, "reading the first begin's record at LSN %llu: %s",
                       (unsigned long long)lsn,
                       rc == UD_EGONE ? "no longer in the log" : ud_strerror(rc));
    }
    const uint8_t *data;
    uint32_t len;
    uint64_t at;
    struct ud_record rec;
    rc = ud_wal_reader_next(rd, &data, &len, &at);
    if (rc == 0 && at == lsn && (rc = ud_record_decode(data, len, &rec, errmsg)) == 0)
        memcpy(id, rec.txn_id, 16);
    else if (rc == 0 || rc == UD_EAGAIN)
        rc = ud_errf(errmsg, UD_EIO, "the record at LSN %llu could not be read",
                     (unsigned long long)lsn);
    ud_wal_reader_close(rd);
    ud_registry_release(w->registry, ns);
    return rc;
}

/* A keyed begin answered with an earlier begin's LSN (a retry): its transaction is the one the
 * client began. 0 (c->id set to it), or answered with an error. */
static int adopt_first_begin(struct txn_call *c, uint64_t lsn)
{
    size_t kl;
    if (c->r == NULL || idempotency_key(c->r, &kl) == NULL)
        return 0;
    char errmsg[UD_ERRMSG_SIZE];
    if (lsn == 0) {
        ud_http_reply_error(c->r, 409,
                            "the first begin with this Idempotency-Key began no transaction on "
                            "this writer; begin again with another key");
        return -1;
    }
    uint8_t id[16];
    int rc = txn_id_at(c->wh->w, c->ns, lsn, id, errmsg);
    if (rc != 0) {
        ud_http_reply_code(c->r, rc, errmsg);
        return -1;
    }
    c->adopted = memcmp(id, c->id, 16) != 0;
    memcpy(c->id, id, 16);
    return 0;
}

static void txn_done(void *arg, int status, const char *errmsg, const uint64_t *lsns, size_t n)
{
    struct txn_call *c = arg;
    struct ud_writer_http *wh = c->wh;
    uint64_t lsn = n > 0 ? lsns[0] : 0;
    if (status == 0 && c->act == ACT_BEGIN && adopt_first_begin(c, lsn) != 0) {
        free(c);
        return;
    }
    struct ud_writer_http_txn *t = txn_find(wh, c->ns, c->id);
    if (status == 0 && c->r != NULL && lsn != 0)
        ud_http_req_wrote(c->r, lsn);
    if (t != NULL) {
        t->busy = 0;
        t->last_active_ms = uv_now(wh->w->loop);
    }
    if (status == 0) {
        /* A retried begin's transaction may have begun under another leader: its chunks are
         * not all listed here (txn_claim adds it when it is next used). */
        if (c->act == ACT_BEGIN && t == NULL && !c->adopted)
            txn_add(wh, c->ns, c->id)->complete = 1;
        if (c->lob && t != NULL && c->size > c->offset)
            chunk_add(t, c->offset, c->size - c->offset, c->crc);
        if ((c->act == ACT_COMMIT || c->act == ACT_ABORT) && t != NULL)
            txn_remove(wh, t);
    } else if (t != NULL && c->lob && status != UD_ENOTFOUND) {
        /* The chunk may still be applied (an outcome unknown): it is not listed, so the list no
         * longer tells every chunk held, and a retry of it must be taken by its range. */
        t->complete = 0;
    } else if (t != NULL && status == UD_ENOTFOUND && c->act != ACT_COMMIT) {
        /* The engine no longer knows it (finished elsewhere, or its namespace is gone). */
        txn_remove(wh, t);
    }
    if (c->r == NULL) {
        char hex[33];
        ud_http_txn_id_format(c->id, hex);
        if (status == 0)
            ud_info(TXN_LOG, "namespace %s: idle transaction %s aborted at LSN %llu", c->ns, hex,
                    (unsigned long long)lsn);
        else
            ud_warn(TXN_LOG, "namespace %s: aborting idle transaction %s failed: %s", c->ns, hex,
                    errmsg != NULL && errmsg[0] ? errmsg : ud_strerror(status));
        wh->background--;
        free(c);
        ud_writer_http_stop_progress(wh);
        return;
    }
    if (status == UD_EINDOUBT && c->act == ACT_BEGIN) {
        /* A begin cannot be read back by key: the way on is another begin. */
        char msg[UD_ERRMSG_SIZE];
        snprintf(msg, sizeof msg,
                 "%s; begin again (with another Idempotency-Key): a transaction this begin "
                 "began is aborted once idle",
                 errmsg != NULL && errmsg[0] ? errmsg : ud_strerror(status));
        ud_writer_http_reply_submit_error(c->r, status, msg);
    } else if (status != 0) {
        ud_writer_http_reply_submit_error(c->r, status, errmsg);
    } else {
        reply_txn_ok(c, lsn);
    }
    free(c);
}

/* Looks the transaction up for a request on it: 0 with *info and *t (busy set), or answered (1).
 * ended_ok: a transaction the engine does not know (any more) is 2, not answered, *t NULL. */
static int txn_claim(struct ud_writer_http *wh, struct ud_http_req *r, struct ud_txn_info *info,
                     uint8_t id[16], struct ud_writer_http_txn **out, int ended_ok)
{
    const char *raw;
    size_t len;
    ud_http_req_param(r, "txn", &raw, &len);
    if (ud_http_txn_id_parse(raw, len, id) != 0) {
        ud_http_reply_error(r, 404, "transaction not found: %.*s (ids are 32 hex characters)",
                            (int)(len > 64 ? 64 : len), raw);
        return 1;
    }
    const char *ns = ud_http_req_ns_name(r);
    struct ud_writer_http_txn *t = txn_find(wh, ns, id);
    char hex[33];
    ud_http_txn_id_format(id, hex);
    if (t != NULL && t->busy) {
        ud_http_reply_error(r, 409,
                            "transaction %s: another request on it is in progress (appends to "
                            "one transaction are serialized)",
                            hex);
        return 1;
    }
    if (t != NULL && t->term != leading_term(wh->w)) {
        /* Added in an earlier leadership: another leader may have had appends and LOB chunks
         * since (forget_other_terms). Not left to the idle sweep, which may not have run yet. */
        txn_remove(wh, t);
        t = NULL;
    }
    if (ud_ns_txn_info(ud_http_req_ns(r), id, info) != 0) {
        if (t != NULL)
            txn_remove(wh, t);
        if (ended_ok) {
            memset(info, 0, sizeof *info);
            *out = NULL;
            return 2;
        }
        ud_http_reply_error(r, 404, "transaction not found: %s", hex);
        return 1;
    }
    if (t == NULL) /* begun before a restart or under another leader */
        t = txn_add(wh, ns, id);
    *out = t;
    return 0;
}

static struct txn_call *call_new(struct ud_writer_http *wh, struct ud_http_req *r,
                                 enum txn_action act, const uint8_t id[16])
{
    struct txn_call *c = calloc(1, sizeof *c);
    if (c == NULL)
        abort();
    c->wh = wh;
    c->r = r;
    c->act = act;
    memcpy(c->id, id, 16);
    snprintf(c->ns, sizeof c->ns, "%s", r != NULL ? ud_http_req_ns_name(r) : "");
    return c;
}

static void submit_call(struct txn_call *c, struct ud_writer_http_txn *t, uint8_t *rec, size_t len)
{
    if (t != NULL)
        t->busy = 1;
    const char *key = NULL;
    size_t kl = 0;
    uint8_t digest[UD_COMMAND_DIGEST_SIZE];
    int keyed = c->r != NULL && ud_http_key_digest(c->r, &key, &kl, digest);
    ud_submit_keyed(c->wh->w, c->ns, (const uint8_t *)key, kl, keyed ? digest : NULL, &rec, &len, 1,
                    txn_done, c);
}

static const char *type_route(int type)
{
    return type == UD_ENTRY_KV ? "kv" : type == UD_ENTRY_ROW ? "row" : "lob";
}

void ud_writer_http_on_txn_begin(struct ud_http_req *r, void *arg)
{
    struct ud_writer_http *wh = arg;
    char errmsg[UD_ERRMSG_SIZE];
    size_t bl;
    const uint8_t *body = ud_http_req_body(r, &bl);
    enum ud_op op;
    enum ud_entry_type type;
    int rc = ud_http_parse_txn_begin(body, bl, &op, &type, errmsg);
    if (rc != 0) {
        ud_http_reply_code(r, rc, errmsg);
        return;
    }
    uint8_t id[16];
    for (size_t got = 0; got < sizeof id;) {
        ssize_t n = getrandom(id + got, sizeof id - got, 0);
        if (n > 0)
            got += (size_t)n;
        else if (n < 0 && errno != EINTR) {
            ud_http_reply_error(r, 500, "getrandom: %s", strerror(errno));
            return;
        }
    }
    uint8_t *rec;
    size_t len;
    if ((rc = ud_engine_encode_txn_begin(op, type, id, 0, &rec, &len, errmsg)) != 0) {
        ud_http_reply_code(r, rc, errmsg);
        return;
    }
    submit_call(call_new(wh, r, ACT_BEGIN, id), NULL, rec, len);
}

/* Appends: the body names a part of the transaction's own entry type. */
static void append(struct ud_http_req *r, struct ud_writer_http *wh, enum ud_entry_type route)
{
    char errmsg[UD_ERRMSG_SIZE];
    uint8_t id[16];
    struct ud_txn_info info;
    struct ud_writer_http_txn *t;
    if (txn_claim(wh, r, &info, id, &t, 0) != 0)
        return;
    char hex[33];
    ud_http_txn_id_format(id, hex);
    if (info.entry_type != route) {
        ud_http_reply_error(r, 400, "transaction %s is a %s transaction: append with POST tx/%s/%s",
                            hex, type_route(info.entry_type), hex, type_route(info.entry_type));
        return;
    }
    size_t bl;
    const uint8_t *body = ud_http_req_body(r, &bl);
    struct ud_http_body b;
    ud_http_body_init(&b);
    uint8_t *rec = NULL;
    size_t len = 0;
    int rc;
    struct txn_call *c = call_new(wh, r, ACT_APPEND, id);
    if (route == UD_ENTRY_KV) {
        struct ud_kv kv;
        rc = ud_http_parse_txn_kv(&b, body, bl, (enum ud_op)info.op, &kv, errmsg);
        if (rc == 0)
            rc = ud_engine_encode_txn_kv(id, &info, &kv, 0, &rec, &len, errmsg);
    } else if (route == UD_ENTRY_ROW) {
        struct ud_row row;
        rc = ud_http_parse_txn_row(&b, body, bl, (enum ud_op)info.op, &row, errmsg);
        if (rc == 0)
            rc = ud_engine_encode_txn_row(id, &info, &row, 0, &rec, &len, errmsg);
    } else {
        uint8_t key[UD_MAX_LOB_KEY + 1];
        size_t kl = 0, qlen;
        const char *q = ud_http_req_query(r, &qlen);
        uint64_t offset = UINT64_MAX, at = 0;
        rc = ud_http_query_get(q, qlen, "key", key, sizeof key, &kl, errmsg);
        if (rc == UD_ENOTFOUND || (rc == 0 && kl == 0))
            rc = ud_errf(errmsg, UD_EINVAL, "query parameter key is required (tx/{id}/lob?key=)");
        else if (rc == UD_ELIMIT || (rc == 0 && kl > UD_MAX_LOB_KEY))
            rc =
                ud_errf(errmsg, UD_ELIMIT, "lob key exceeds the limit of %d bytes", UD_MAX_LOB_KEY);
        if (rc == 0) {
            rc = ud_http_query_u64(q, qlen, "offset", 0, UINT64_MAX - 1, &offset, errmsg);
            if (rc == UD_ENOTFOUND)
                rc = 0;
        }
        uint64_t expected = UINT64_MAX;
        if (rc == 0) {
            c->crc = ud_crc32c(0, body, bl);
            rc = ud_writer_http_lob_position(&info, key, kl, offset, bl, c->crc, t->chunks,
                                             t->nchunks, t->complete, &at, &expected, errmsg);
            if (rc == 1) {
                /* A retried chunk: its bytes are held already; nothing new to log. */
                c->lob = 1;
                c->offset = offset;
                c->size = info.bytes;
                t->last_active_ms = uv_now(wh->w->loop);
                reply_txn_ok(c, info.last_lsn);
                free(c);
                ud_http_body_free(&b);
                return;
            }
        }
        if (rc == 0)
            rc = ud_engine_encode_txn_lob(id, &info, key, kl, at, body, bl, 0, &rec, &len, errmsg);
        if (rc == UD_ECONFLICT) {
            struct ud_jbuf j;
            ud_jbuf_init(&j);
            ud_jbuf_lit(&j, "{\"error\":");
            ud_jbuf_str(&j, errmsg, strlen(errmsg));
            if (expected != UINT64_MAX)
                ud_jbuf_printf(&j, ",\"expectedOffset\":%llu", (unsigned long long)expected);
            ud_jbuf_lit(&j, "}");
            ud_http_reply_json(r, 409, &j);
            free(c);
            ud_http_body_free(&b);
            return;
        }
        c->lob = 1;
        c->offset = at;
        c->size = at + (info.op == UD_OP_DELETE ? 0 : bl);
    }
    ud_http_body_free(&b);
    if (rc != 0) {
        free(c);
        ud_http_reply_code(r, rc, errmsg);
        return;
    }
    submit_call(c, t, rec, len);
}

void ud_writer_http_on_txn_kv(struct ud_http_req *r, void *arg)
{
    append(r, arg, UD_ENTRY_KV);
}

void ud_writer_http_on_txn_row(struct ud_http_req *r, void *arg)
{
    append(r, arg, UD_ENTRY_ROW);
}

void ud_writer_http_on_txn_lob(struct ud_http_req *r, void *arg)
{
    append(r, arg, UD_ENTRY_LOB);
}

static void finish(struct ud_http_req *r, struct ud_writer_http *wh, enum ud_txn_state state)
{
    char errmsg[UD_ERRMSG_SIZE];
    uint8_t id[16];
    struct ud_txn_info info;
    struct ud_writer_http_txn *t;
    size_t kl;
    /* With a key, an ended transaction may be this request's own earlier attempt: its end record
     * goes to the FSM, which answers the first attempt's outcome, or refuses it as unknown. */
    int claim = txn_claim(wh, r, &info, id, &t, idempotency_key(r, &kl) != NULL);
    if (claim == 1)
        return;
    if (claim == 2) { /* any valid shape: the FSM answers it from its window or refuses it */
        info.op = UD_OP_PUT;
        info.entry_type = UD_ENTRY_KV;
    }
    uint8_t *rec;
    size_t len;
    int rc = ud_engine_encode_txn_end(id, &info, state, 0, &rec, &len, errmsg);
    if (rc != 0) {
        ud_http_reply_code(r, rc, errmsg);
        return;
    }
    submit_call(call_new(wh, r, state == UD_TXN_COMMIT ? ACT_COMMIT : ACT_ABORT, id), t, rec, len);
}

void ud_writer_http_on_txn_commit(struct ud_http_req *r, void *arg)
{
    finish(r, arg, UD_TXN_COMMIT);
}

void ud_writer_http_on_txn_abort(struct ud_http_req *r, void *arg)
{
    finish(r, arg, UD_TXN_ABORT);
}

/* --- idle aborts ------------------------------------------------------------------------------ */

struct sweep {
    struct ud_writer_http *wh;
    const char *ns;
    /* ids collected under the engine's lock, handled after it */
    uint8_t (*ids)[16];
    size_t n, cap;
};

static void collect(void *arg, const uint8_t id[16], const struct ud_txn_info *info)
{
    (void)info;
    struct sweep *sw = arg;
    if (sw->n == sw->cap) {
        size_t cap = sw->cap ? sw->cap * 2 : 16;
        void *p = realloc(sw->ids, cap * sizeof *sw->ids);
        if (p == NULL)
            return; /* seen next time */
        sw->ids = p;
        sw->cap = cap;
    }
    memcpy(sw->ids[sw->n++], id, 16);
}

static void sweep_ns(void *arg, const char *name)
{
    struct sweep *sw = arg;
    struct ud_writer_http *wh = sw->wh;
    struct ud_ns *ns;
    if (ud_registry_acquire(wh->w->registry, name, &ns) != 0)
        return;
    sw->n = 0;
    ud_ns_txn_list(ns, collect, sw);
    for (size_t i = 0; i < sw->n; i++) {
        struct ud_writer_http_txn *t = txn_find(wh, name, sw->ids[i]);
        /* Unknown here: begun before a restart or under a leader that is gone; its idle time
         * counts from now. */
        if (t == NULL)
            t = txn_add(wh, name, sw->ids[i]);
        t->seen = 1;
    }
    uint64_t now = uv_now(wh->w->loop);
    uint64_t idle = wh->w->config->txn_idle_timeout_ms;
    for (struct ud_writer_http_txn *t = wh->txns; t != NULL; t = t->next) {
        if (strcmp(t->ns, name) != 0 || t->busy || now - t->last_active_ms < idle)
            continue;
        struct ud_txn_info info;
        if (ud_ns_txn_info(ns, t->id, &info) != 0)
            continue; /* dropped below as unseen */
        char errmsg[UD_ERRMSG_SIZE];
        uint8_t *rec;
        size_t len;
        if (ud_engine_encode_txn_end(t->id, &info, UD_TXN_ABORT, 0, &rec, &len, errmsg) != 0)
            continue;
        struct txn_call *c = calloc(1, sizeof *c);
        if (c == NULL)
            abort();
        c->wh = wh;
        c->act = ACT_ABORT;
        memcpy(c->id, t->id, 16);
        snprintf(c->ns, sizeof c->ns, "%s", name);
        wh->background++;
        t->busy = 1;
        ud_submit(wh->w, name, &rec, &len, 1, txn_done, c);
    }
    ud_registry_release(wh->w->registry, ns);
}

/*
 * Forgets the entries added in another term than this node's leadership now (all of them on a
 * follower), except those with a request in flight: while another writer led, the transaction
 * may have been appended to (its last activity here is old: the sweep would abort it as idle)
 * and had LOB chunks this node never saw. The next sweep as leader finds the open ones again in
 * the engine's table, idle from then.
 */
static void forget_other_terms(struct ud_writer_http *wh, uint64_t term)
{
    struct ud_writer_http_txn **p = &wh->txns;
    while (*p != NULL) {
        struct ud_writer_http_txn *t = *p;
        if (!t->busy && (term == 0 || t->term != term)) {
            *p = t->next;
            txn_free(t);
        } else {
            p = &t->next;
        }
    }
}

static void idle_cb(uv_timer_t *timer)
{
    struct ud_writer_http *wh = timer->data;
    if (wh->stopping)
        return;
    uint64_t term = leading_term(wh->w);
    forget_other_terms(wh, term);
    /* Only a leader that has applied earlier leaders' entries proposes aborts. */
    if (term == 0)
        return;
    for (struct ud_writer_http_txn *t = wh->txns; t != NULL; t = t->next)
        t->seen = t->busy; /* in-flight requests keep theirs */
    struct sweep sw = {.wh = wh};
    if (ud_registry_list(wh->w->registry, sweep_ns, &sw, NULL) != 0) {
        /* Nothing was seen: forgetting every entry would drop the open ones' state. */
        ud_warn("http", "transactions: out of memory listing the namespaces: no idle "
                        "transaction aborted this round");
        return;
    }
    free(sw.ids);
    /* Finished elsewhere (or its namespace deleted): forget it. */
    struct ud_writer_http_txn **p = &wh->txns;
    while (*p != NULL) {
        struct ud_writer_http_txn *t = *p;
        if (!t->seen) {
            *p = t->next;
            txn_free(t);
        } else {
            p = &t->next;
        }
    }
}

void ud_writer_http_txn_start(struct ud_writer_http *wh)
{
    uint64_t idle = wh->w->config->txn_idle_timeout_ms;
    if (idle == 0)
        return; /* idle aborts disabled */
    /* A quarter of the timeout, within [50 ms, 1 s]: aborts come at most ~25% late. */
    uint64_t every = idle / 4;
    every = every < 50 ? 50 : every > 1000 ? 1000 : every;
    uv_timer_init(wh->w->loop, &wh->idle_timer);
    wh->idle_timer.data = wh;
    uv_timer_start(&wh->idle_timer, idle_cb, every, every);
    wh->idle_timer_on = 1;
}
