/*
 * Write API, KV: PUT/DELETE kv/{key} (with If-Match) and POST kv/batch.
 *
 * If-Match is checked on this node (the leader) against the key's current LSN, and only while no
 * other HTTP write to the key is in flight: writes to one key are tracked in a slot, and a
 * conditional write waits in the slot's queue until the key has settled. The check and the
 * submit then run in the same loop turn, so no HTTP write can come between them. What remains is
 * a write to the key arriving by another path (RESP, a transaction's commit) while the
 * conditional write is between its check and its apply (one group-commit round trip):
 * docs/http-api.md says so.
 */
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/http/body.h"
#include "core/log.h"
#include "raft/node.h"
#include "writer/cluster.h"
#include "writer/http_digest.h"
#include "writer/http_write.h"
#include "writer/submit.h"
#include "writer/writer.h"

/*
 * At concurrency 256 a leader holds hundreds of PUTs between their arrival and their answer, each
 * with a kv_write: more than glibc's per-thread cache keeps, so each went through the allocator's
 * bins. Keeping up to SPARES answered single-key kv_writes for the next PUTs took the leader's
 * calloc calls from 2.13 to 1.10 per write (docs/benchmarks.md). Up to SPARES emptied slots with
 * room for a key of up to SLOT_KEY_ROOM bytes are kept the same way, for PUTs to a key that has no
 * slot; the keys of the load measured repeated, so slots were rarely allocated there and what
 * keeping them saves was not measured.
 */
#define SPARES        1024
#define SLOT_KEY_ROOM 64
/* A keyed conditional write whose check found the apply thread inside a keyed request
 * (ud_fsm_unless_keyed busy) is tried again this much later: the loop does not wait for the
 * apply thread (a WAL roll there fsyncs), nor spin on a lock held that long. */
#define RETRY_MS 1

/* A KV key with HTTP writes in flight or waiting. */
struct ud_writer_http_slot {
    struct ud_writer_http_slot *next; /* hash chain, or the spare list */
    uint32_t hash;
    uint32_t inflight; /* submitted, not yet called back */
    struct kv_write *qhead, *qtail;
    struct ud_writer_http_slot *retry_next; /* on wh->retry_slots when retrying */
    int retrying;
    size_t key_len; /* the key has room for max(key_len, SLOT_KEY_ROOM) bytes */
    char ns[UD_NS_NAME_MAX + 1];
    uint8_t key[];
};

struct kv_write {
    struct ud_writer_http *wh;
    struct ud_http_req *r;
    char ns[UD_NS_NAME_MAX + 1];
    uint8_t *rec; /* owned until submitted */
    size_t rec_len;
    size_t nitems; /* for "processed" */
    int batch;
    int conditional;
    int if_any;
    uint64_t if_lsn;
    /* Of a keyed write, taken when the request arrives (kw_digest): the server drops the body
     * once the handler returns, and a write that waits in its key's queue is submitted after
     * that. A key (kw->key) means a digest: no flag says so. */
    const char *key; /* the request's Idempotency-Key, or NULL */
    size_t key_len;
    uint8_t digest[UD_COMMAND_DIGEST_SIZE];
    struct kv_write *qnext; /* the slot's queue, or the spare list (NULL once off the queue) */
    size_t nslots;
    struct ud_writer_http_slot *slots[]; /* one per item (repeats allowed) */
};

static uint32_t slot_hash(const char *ns, const uint8_t *key, size_t len)
{
    uint32_t h = 2166136261u;
    for (const char *p = ns; *p != '\0'; p++)
        h = (h ^ (uint8_t)*p) * 16777619u;
    h = (h ^ 0xFFu) * 16777619u;
    for (size_t i = 0; i < len; i++)
        h = (h ^ key[i]) * 16777619u;
    return h;
}

static struct ud_writer_http_slot *slot_get(struct ud_writer_http *wh, const char *ns,
                                            const uint8_t *key, size_t len)
{
    uint32_t h = slot_hash(ns, key, len);
    struct ud_writer_http_slot **b = &wh->slots[h % UD_WRITER_HTTP_SLOT_BUCKETS];
    struct ud_writer_http_slot *s;
    for (s = *b; s != NULL; s = s->next)
        if (s->hash == h && s->key_len == len && memcmp(s->key, key, len) == 0 &&
            strcmp(s->ns, ns) == 0)
            return s;
    if (len <= SLOT_KEY_ROOM && wh->spare_slots != NULL) {
        s = wh->spare_slots;
        wh->spare_slots = s->next;
        wh->nspare_slots--;
    } else {
        size_t room = len > SLOT_KEY_ROOM ? len : SLOT_KEY_ROOM;
        if ((s = malloc(sizeof *s + room)) == NULL)
            abort();
    }
    s->inflight = 0;
    s->qhead = s->qtail = NULL;
    s->retrying = 0;
    s->hash = h;
    s->key_len = len;
    memcpy(s->key, key, len);
    strcpy(s->ns, ns);
    s->next = *b;
    *b = s;
    return s;
}

static void slot_maybe_free(struct ud_writer_http *wh, struct ud_writer_http_slot *s)
{
    if (s->inflight > 0 || s->qhead != NULL || s->retrying)
        return;
    struct ud_writer_http_slot **p = &wh->slots[s->hash % UD_WRITER_HTTP_SLOT_BUCKETS];
    while (*p != s)
        p = &(*p)->next;
    *p = s->next;
    if (s->key_len > SLOT_KEY_ROOM || wh->nspare_slots >= SPARES) {
        free(s);
        return;
    }
    s->next = wh->spare_slots;
    wh->spare_slots = s;
    wh->nspare_slots++;
}

void ud_writer_http_slots_free(struct ud_writer_http *wh)
{
    for (size_t i = 0; i < UD_WRITER_HTTP_SLOT_BUCKETS; i++) {
        while (wh->slots[i] != NULL) {
            struct ud_writer_http_slot *s = wh->slots[i];
            wh->slots[i] = s->next;
            free(s);
        }
    }
    while (wh->spare_slots != NULL) {
        struct ud_writer_http_slot *next = wh->spare_slots->next;
        free(wh->spare_slots);
        wh->spare_slots = next;
    }
    while (wh->spare_writes != NULL) {
        struct kv_write *next = wh->spare_writes->qnext;
        free(wh->spare_writes);
        wh->spare_writes = next;
    }
    wh->nspare_slots = wh->nspare_writes = 0;
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

/* --- the write and its slot(s) ---------------------------------------------------------------- */

static void kw_free(struct kv_write *kw)
{
    struct ud_writer_http *wh = kw->wh;
    free(kw->rec);
    if (kw->nslots != 1 || wh->nspare_writes >= SPARES) {
        free(kw);
        return;
    }
    kw->qnext = wh->spare_writes; /* NULL until here: kw is on no slot's queue */
    wh->spare_writes = kw;
    wh->nspare_writes++;
}

static void kv_done(void *arg, int status, const char *errmsg, const uint64_t *lsns, size_t n);

/* The version a conditional write is checked against: the key's LSN (0: absent). */
struct version {
    struct kv_write *kw;
    int ns_missing;
    int rc; /* of the read; UD_ENOTFOUND is an absent key */
    uint64_t cur;
};

static void read_version(void *arg)
{
    struct version *v = arg;
    struct ud_writer_http *wh = v->kw->wh;
    struct ud_writer_http_slot *slot = v->kw->slots[0];
    struct ud_ns *ns;
    if (ud_registry_acquire(wh->w->registry, v->kw->ns, &ns) != 0) {
        v->ns_missing = 1;
        return;
    }
    struct ud_buf b = {0};
    v->rc = ud_ns_kv_get(ns, slot->key, slot->key_len, &b, &v->cur);
    ud_buf_free(&b);
    ud_registry_release(wh->w->registry, ns);
}

/*
 * Checks If-Match against the key's current version: 0 to go on, -1 when the check must wait (the
 * apply thread is inside a keyed request: ud_fsm_unless_keyed), or 1 answered (412, 404...). A
 * keyed write whose key the FSM's window holds goes on unchecked: it is a retry of a write that
 * was applied (its condition held then, and the key has moved since, by that very write perhaps),
 * and the FSM answers it with the first write's outcome; or another request under a used key,
 * which the FSM refuses. The window and the key's version are read together (ud_fsm_unless_keyed).
 */
static int precondition(struct kv_write *kw)
{
    struct ud_writer_http *wh = kw->wh;
    struct version v = {.kw = kw};
    if (kw->key != NULL && wh->w->raft != NULL) {
        int known = ud_fsm_unless_keyed(ud_raft_node_fsm(wh->w->raft), kw->ns,
                                        (const uint8_t *)kw->key, kw->key_len, read_version, &v);
        if (known != 0)
            return known < 0 ? -1 : 0; /* busy, or a retry: goes on unchecked */
    } else {
        read_version(&v);
    }
    if (v.ns_missing) {
        ud_http_reply_ns_not_found(kw->r);
        return 1;
    }
    uint64_t cur = v.cur;
    if (v.rc == UD_ENOTFOUND) {
        cur = 0;
    } else if (v.rc != 0) {
        ud_http_reply_code(kw->r, v.rc, "reading the key for If-Match failed");
        return 1;
    }
    int ok = kw->if_any ? cur != 0 : cur == kw->if_lsn;
    if (ok)
        return 0;
    struct ud_jbuf j;
    ud_jbuf_init(&j);
    char msg[160];
    if (kw->if_any)
        snprintf(msg, sizeof msg, "precondition failed: If-Match * but the key does not exist");
    else if (cur == 0)
        snprintf(msg, sizeof msg, "precondition failed: If-Match %llu but the key does not exist",
                 (unsigned long long)kw->if_lsn);
    else
        snprintf(msg, sizeof msg, "precondition failed: If-Match %llu but the key is at LSN %llu",
                 (unsigned long long)kw->if_lsn, (unsigned long long)cur);
    ud_jbuf_lit(&j, "{\"error\":");
    ud_jbuf_str(&j, msg, strlen(msg));
    ud_jbuf_lit(&j, ",\"lsn\":");
    ud_jbuf_u64(&j, cur);
    ud_jbuf_lit(&j, "}");
    ud_http_reply_json(kw->r, 412, &j);
    return 1;
}

static void drain(struct ud_writer_http *wh, struct ud_writer_http_slot *s);

static void retry_cb(uv_timer_t *timer)
{
    struct ud_writer_http *wh = timer->data;
    struct ud_writer_http_slot *s = wh->retry_slots;
    wh->retry_slots = NULL;
    while (s != NULL) {
        struct ud_writer_http_slot *next = s->retry_next;
        s->retrying = 0;
        drain(wh, s); /* may free s, or put it on the list again */
        s = next;
    }
}

/* Puts kw (a conditional single-key write) back at the head of its key's queue, to be run again
 * RETRY_MS later: writes to the key that came after it stay behind it. */
static void retry_later(struct kv_write *kw)
{
    struct ud_writer_http *wh = kw->wh;
    struct ud_writer_http_slot *s = kw->slots[0];
    kw->qnext = s->qhead;
    s->qhead = kw;
    if (s->qtail == NULL)
        s->qtail = kw;
    if (!s->retrying) {
        s->retrying = 1;
        s->retry_next = wh->retry_slots;
        wh->retry_slots = s;
    }
    if (!uv_is_active((uv_handle_t *)&wh->retry_timer))
        uv_timer_start(&wh->retry_timer, retry_cb, RETRY_MS, 0);
}

/* Submits kw (after its precondition); kw is freed by kv_done, or here when answered early.
 * 1 when kw went back to its key's queue to be tried again (retry_later). */
static int run(struct kv_write *kw)
{
    struct ud_writer_http *wh = kw->wh;
    if (ud_http_req_gone(kw->r)) {
        ud_http_reply_error(kw->r, 499, "client went away"); /* only frees */
        kw_free(kw);
        return 0;
    }
    if (kw->conditional && wh->w->raft != NULL &&
        !(ud_writer_is_leader(wh->w) && ud_raft_node_leader_ready(wh->w->raft))) {
        /* Waited in its key's queue while this node lost leadership (the write in flight ahead
         * of it is answered once applied here, or in doubt): checked here against state that
         * lags the new leader's, it could pass a stale If-Match, and its records forwarded to
         * the leader would apply unchecked (a lost update). Answered as during an election
         * instead: a follower that forwarded it sends it whole to the next leader, which checks
         * it; a client retries (e2e-cluster_behind). */
        ud_writer_http_reply_submit_error(kw->r, UD_ECLOSED, NULL);
        kw_free(kw);
        return 0;
    }
    if (kw->conditional) {
        int rc = precondition(kw);
        if (rc < 0 && !wh->stopping) {
            retry_later(kw);
            return 1;
        }
        if (rc < 0) {
            ud_writer_http_reply_submit_error(kw->r, UD_ECLOSED, "the writer is shutting down");
            rc = 1;
        }
        if (rc != 0) {
            kw_free(kw);
            return 0;
        }
    }
    for (size_t i = 0; i < kw->nslots; i++)
        kw->slots[i]->inflight++;
    uint8_t *rec = kw->rec;
    size_t len = kw->rec_len;
    kw->rec = NULL;
    ud_submit_keyed(wh->w, kw->ns, (const uint8_t *)kw->key, kw->key_len,
                    kw->key != NULL ? kw->digest : NULL, &rec, &len, 1, kv_done, kw);
    return 0;
}

/* Runs the writes queued on a slot while they may go: a conditional one only once nothing else
 * is in flight on the key. */
static void drain(struct ud_writer_http *wh, struct ud_writer_http_slot *s)
{
    while (s->qhead != NULL) {
        struct kv_write *kw = s->qhead;
        if (kw->conditional && s->inflight > 0)
            break;
        s->qhead = kw->qnext;
        if (s->qhead == NULL)
            s->qtail = NULL;
        kw->qnext = NULL;
        if (run(kw))
            break;
    }
    slot_maybe_free(wh, s);
}

void ud_writer_http_kv_start(struct ud_writer_http *wh)
{
    uv_timer_init(wh->w->loop, &wh->retry_timer);
    wh->retry_timer.data = wh;
    wh->timers_open++;
}

void ud_writer_http_kv_stop(struct ud_writer_http *wh)
{
    /* wh->stopping is set: a write run from here on that would wait is answered instead. */
    while (wh->retry_slots != NULL)
        retry_cb(&wh->retry_timer);
}

static void kv_done(void *arg, int status, const char *errmsg, const uint64_t *lsns, size_t n)
{
    struct kv_write *kw = arg;
    struct ud_writer_http *wh = kw->wh;
    for (size_t i = 0; status == 0 && i < n; i++)
        ud_http_req_wrote(kw->r, lsns[i]);
    if (status != 0) {
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
    for (size_t i = 0; i < kw->nslots; i++)
        kw->slots[i]->inflight--;
    /* Each distinct slot drains once (a batch may name a key twice). */
    for (size_t i = 0; i < kw->nslots; i++) {
        struct ud_writer_http_slot *s = kw->slots[i];
        int seen = 0;
        for (size_t k = 0; k < i && !seen; k++)
            seen = kw->slots[k] == s;
        if (!seen)
            drain(wh, s);
    }
    kw_free(kw);
}

static struct kv_write *kw_new(struct ud_writer_http *wh, struct ud_http_req *r, size_t nslots)
{
    struct kv_write *kw;
    if (nslots == 1 && wh->spare_writes != NULL) {
        kw = wh->spare_writes;
        wh->spare_writes = kw->qnext;
        wh->nspare_writes--;
        memset(kw, 0, sizeof *kw + sizeof kw->slots[0]);
    } else if ((kw = calloc(1, sizeof *kw + nslots * sizeof kw->slots[0])) == NULL) {
        abort();
    }
    kw->wh = wh;
    kw->r = r;
    kw->nslots = nslots;
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
    struct kv_write *kw = kw_new(wh, r, 1);
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
        if (ud_writer_http_if_match_parse(h, hl, &kw->if_lsn, &kw->if_any) != 0) {
            kw_free(kw);
            ud_http_reply_error(r, 400,
                                "If-Match must be an LSN (as returned by GET and every write), "
                                "\"0\" for an absent key, or *");
            return;
        }
        kw->conditional = 1;
    }
    kw_digest(kw);
    struct ud_writer_http_slot *s = slot_get(wh, kw->ns, key, kl);
    kw->slots[0] = s;
    if (s->qhead != NULL || (kw->conditional && s->inflight > 0)) {
        if (s->qtail != NULL)
            s->qtail->qnext = kw;
        else
            s->qhead = kw;
        s->qtail = kw;
        return;
    }
    run(kw);
    slot_maybe_free(wh, s);
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
    struct kv_write *kw = kw_new(wh, r, batch.n);
    kw->batch = 1;
    kw->nitems = batch.n;
    rc = ud_engine_encode_kv(batch.op, batch.items, batch.n, 0, &kw->rec, &kw->rec_len, errmsg);
    if (rc != 0) {
        ud_http_body_free(&b);
        kw_free(kw);
        ud_http_reply_code(r, rc, errmsg);
        return;
    }
    /* Batches do not wait for a key to settle; they only make conditional writes wait. */
    for (size_t i = 0; i < batch.n; i++)
        kw->slots[i] = slot_get(wh, kw->ns, batch.items[i].key, batch.items[i].key_len);
    ud_http_body_free(&b);
    kw_digest(kw);
    run(kw);
}
