/* The write seam: queue requests, group-commit them into raft entries, answer with their LSNs. */
#include "writer/submit.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "core/recbuf.h"
#include "core/registry.h"
#include "proto/command.h"
#include "proto/record.h"
#include "raft/fsm.h"
#include "raft/log_reserve.h"
#include "raft/node.h"
#include "writer/cluster.h"
#include "writer/writer.h"

#define LOG "submit"

#define DEFAULT_MAX_BYTES    (1u << 20)
#define DEFAULT_MAX_INFLIGHT 4
/* How often requests held by admission control look at the flush again. */
#define ADMIT_RETRY_MS 2

enum request_kind {
    REQ_RECORDS,
    REQ_NS_CREATE,
    REQ_NS_DELETE,
};

struct request {
    struct request *next;
    size_t room; /* records the arrays have room for (at least 1) */
    enum request_kind kind;
    char ns[UD_NS_NAME_MAX + 1];
    uint8_t **records; /* each malloc'd and owned; the array lives in this allocation */
    size_t *lens;      /* in this allocation */
    size_t n;
    size_t bytes;         /* what its records add to a command */
    uint64_t deadline_ms; /* admission control gives up at this loop time (uv_now) */
    uint64_t queued_ns;   /* ud_mono_ns when submitted: the stage timings */
    size_t key_len;       /* of the idempotency key, 0 when none */
    uint8_t cond_kind;    /* of its one record's condition (UD_COMMAND_COND_*), 0 when none */
    uint64_t cond_lsn;
    ud_submit_cb cb;
    void *arg;
    int status; /* non-zero: refused before proposing, answered at the next gather */
    /* The large buffers last: request_new zeroes everything before them, and they are only
     * read up to key_len and once status is set. */
    uint8_t key[UD_COMMAND_KEY_MAX];        /* idempotency key */
    uint8_t digest[UD_COMMAND_DIGEST_SIZE]; /* its request's; all zero when unknown */
    char errmsg[UD_ERRMSG_SIZE];
};

/* Requests proposed together as one raft entry, in the order their records were encoded. */
struct batch {
    struct ud_submitter *s;
    struct request *reqs;
    size_t nrecords;
    int keyed;       /* some request carries an idempotency key: the command has a keys section */
    int conditional; /* some request carries a condition: the command has a conditions section */
    size_t nreqs;
    uint64_t queue_ns;    /* summed over its requests */
    uint64_t proposed_ns; /* raft_apply */
};

/* A namespace as seen by one gather: looked up and admitted once per gather. */
struct slot {
    char name[UD_NS_NAME_MAX + 1];
    int status;                   /* 0 admitted, UD_EBUSY (flush behind), UD_ENOTFOUND */
    struct request *first, *last; /* a batch's requests of this namespace, while building */
};

struct ud_submitter {
    struct ud_writer *w;
    uv_prepare_t prepare;
    uv_check_t check;
    uv_timer_t admit_timer;
    struct request *head, *tail;            /* queued, oldest first */
    struct request *refused, *refused_tail; /* refused in ud_submit, answered by the next gather */
    int wake;               /* something to do: new requests, a free slot, a retry */
    int held;               /* requests wait for admission control */
    uint64_t held_since_ns; /* ud_mono_ns when the current hold began; 0 when none */
    unsigned inflight;
    uint32_t max_bytes;
    uint32_t max_inflight;
    uint32_t admission_timeout_ms;
    uint64_t hlc; /* last HLC stamped */
    int closing;
    int handles; /* open libuv handles */
    int gathering;
    struct slot *slots;
    size_t nslots, cap_slots;
    struct ud_submit_stats stats;
};

/* --- requests -------------------------------------------------------------------------------- */

/* Answered one-record requests kept for the next ones (the loop thread's own list): a pipeline
 * of writes allocates hundreds at once, more than the allocator's per-thread cache holds, and
 * zeroing each one's message and key buffers cost as much again. */
#define MAX_SPARE_REQUESTS 1024
static _Thread_local struct request *spare_requests;
static _Thread_local size_t nspare_requests;

static void request_free(struct request *r)
{
    for (size_t i = 0; i < r->n; i++)
        ud_recbuf_free(r->records[i], r->lens[i]);
    if (r->room != 1 || nspare_requests >= MAX_SPARE_REQUESTS) {
        free(r);
        return;
    }
    r->next = spare_requests;
    spare_requests = r;
    nspare_requests++;
}

static void spare_requests_free(void)
{
    while (spare_requests != NULL) {
        struct request *next = spare_requests->next;
        free(spare_requests);
        spare_requests = next;
    }
    nspare_requests = 0;
}

static void answer(struct request *r, int status, const char *errmsg, const uint64_t *lsns,
                   size_t n)
{
    ud_submit_cb cb = r->cb;
    r->cb = NULL;
    /* errmsg may point into r: free it only after the callback. */
    if (cb != NULL)
        cb(r->arg, status, errmsg != NULL ? errmsg : "", lsns, n);
    request_free(r);
}

/* Answers every request of a detached list with status and errmsg, or with its own when status
 * is -1. */
static void answer_list(struct request *r, int status, const char *errmsg)
{
    while (r != NULL) {
        struct request *next = r->next;
        if (status < 0)
            answer(r, r->status, r->errmsg, NULL, 0);
        else
            answer(r, status, errmsg, NULL, 0);
        r = next;
    }
}

/* --- a submitter that is gone: answer from a one-shot timer, never inside ud_submit ----------- */

struct orphan {
    uv_timer_t timer;
    ud_submit_cb cb;
    void *arg;
};

static void orphan_closed_cb(uv_handle_t *h)
{
    free(h->data);
}

static void orphan_timer_cb(uv_timer_t *t)
{
    struct orphan *o = t->data;
    ud_submit_cb cb = o->cb;
    o->cb = NULL;
    uv_close((uv_handle_t *)&o->timer, orphan_closed_cb);
    cb(o->arg, UD_ECLOSED, "the write path is closed", NULL, 0);
}

static void answer_orphan(struct ud_writer *w, ud_submit_cb cb, void *arg)
{
    struct orphan *o = calloc(1, sizeof *o);
    if (o == NULL || uv_timer_init(w->loop, &o->timer) != 0)
        abort(); /* network glue aborts on OOM (STYLE.md): a lost callback would hang a client */
    o->timer.data = o;
    o->cb = cb;
    o->arg = arg;
    uv_timer_start(&o->timer, orphan_timer_cb, 0, 0);
}

/* --- HLC ------------------------------------------------------------------------------------- */

/* The floor of the next entry's HLCs: max(last stamped, wall clock ns - 1), also at or above
 * anything an earlier leader stamped (seen by the FSM), so a record's HLC never goes backwards
 * across a leader change. Each record then takes floor + 1, + 2, ...: one clock read and one look
 * at the FSM per entry, not per record. */
static void hlc_floor(struct ud_submitter *s)
{
    uint64_t floor = s->hlc;
    if (s->w->raft != NULL) {
        struct ud_fsm_stats st;
        ud_fsm_stats(ud_raft_node_fsm(s->w->raft), &st);
        if (st.max_hlc > floor)
            floor = st.max_hlc;
    }
    uint64_t now = ud_now_ns();
    if (now - 1 > floor)
        floor = now - 1;
    s->hlc = floor;
}

static uint64_t next_hlc(struct ud_submitter *s)
{
    return ++s->hlc;
}

/* --- namespace slots of one gather ------------------------------------------------------------ */

static struct slot *slot_of(struct ud_submitter *s, struct request *r)
{
    for (size_t i = 0; i < s->nslots; i++) {
        if (strcmp(s->slots[i].name, r->ns) == 0) {
            return &s->slots[i];
        }
    }
    if (s->nslots == s->cap_slots) {
        size_t cap = s->cap_slots ? s->cap_slots * 2 : 8;
        struct slot *v = realloc(s->slots, cap * sizeof *v);
        if (v == NULL)
            abort();
        s->slots = v;
        s->cap_slots = cap;
    }
    struct slot *sl = &s->slots[s->nslots];
    memset(sl, 0, sizeof *sl);
    snprintf(sl->name, sizeof sl->name, "%s", r->ns);
    struct ud_ns *ns;
    sl->status = ud_registry_acquire(s->w->registry, r->ns, &ns);
    if (sl->status != 0) {
        sl->status = UD_ENOTFOUND;
    } else {
        /* Admission control (ARCHITECTURE.md section 6): apply cannot wait for the flush, so
         * writes wait here while the namespace is max_sealed memtables behind. Never blocks. */
        sl->status = ud_ns_admit(ns, 0);
        ud_registry_release(s->w->registry, ns);
    }
    s->nslots++;
    return sl;
}

/* Admission held r past its deadline: the flush is behind, and says why when it fails. */
static void refuse_ahead_of_flush(struct ud_submitter *s, struct request *r)
{
    char why[UD_ERRMSG_SIZE] = "";
    int failing = 0;
    struct ud_ns *ns;
    if (ud_registry_acquire(s->w->registry, r->ns, &ns) == 0) {
        failing = ud_ns_flush_failure(ns, why, sizeof why);
        ud_registry_release(s->w->registry, ns);
    }
    /* The cause first: the flush's own message names paths and may be cut. */
    if (failing == UD_ENOSPC)
        r->status = ud_errf(r->errmsg, UD_EBUSY,
                            "namespace %s: writes are ahead of the flush to storage, which fails: "
                            "the disk is full; retry once space is free (%s)",
                            r->ns, why);
    else if (failing != 0)
        r->status = ud_errf(r->errmsg, UD_EBUSY,
                            "namespace %s: writes are ahead of the flush to storage, which fails "
                            "(%s); retry later",
                            r->ns, why);
    else
        r->status =
            ud_errf(r->errmsg, UD_EBUSY,
                    "namespace %s: writes are ahead of the flush to storage; retry later", r->ns);
}

/* --- proposing -------------------------------------------------------------------------------- */

static void maybe_free(struct ud_submitter *s);

static void batch_done(struct ud_submitter *s, struct batch *b, int status, const char *errmsg,
                       const struct ud_fsm_result *res)
{
    if (status == 0 && res->status != 0) {
        status = res->status;
        errmsg = res->errmsg;
    }
    if (status == 0 && res->kind == UD_COMMAND_RECORDS && res->nrecords != b->nrecords) {
        status = UD_EIO;
        errmsg = "the applied entry does not match the proposal";
        ud_error(LOG, "raft entry %llu: %zu results for %zu records",
                 (unsigned long long)res->raft_index, res->nrecords, b->nrecords);
    }
    if (status != 0 || res->kind != UD_COMMAND_RECORDS) {
        answer_list(b->reqs, status, errmsg);
        return;
    }
    /* On the stack: a callback may stop raft, which answers other batches re-entrantly. */
    uint64_t lsns[UD_SUBMIT_MAX_RECORDS];
    size_t ri = 0;
    struct request *r = b->reqs;
    while (r != NULL) {
        struct request *next = r->next;
        int st = 0;
        const char *msg = "";
        UD_ASSERT(r->n <= UD_SUBMIT_MAX_RECORDS);
        for (size_t i = 0; i < r->n; i++, ri++) {
            lsns[i] = res->records[ri].lsn;
            if (st == 0 && res->records[ri].status != 0) {
                st = res->records[ri].status;
                msg = ud_fsm_result_msg(res, ri);
                if (msg[0] == '\0') /* the FSM could not keep its message (out of memory) */
                    msg = ud_strerror(st);
            }
        }
        answer(r, st, msg, lsns, r->n);
        r = next;
    }
}

/* Adds an applied entry's stage timings, each weighted by its requests. Four clock reads per
 * entry, one per request: cheap next to the rest of a write. */
static void account(struct ud_submitter *s, const struct batch *b, const struct ud_fsm_result *res)
{
    uint64_t now = ud_mono_ns();
    uint64_t n = b->nreqs;
    if (res->committed_ns < b->proposed_ns || res->applied_ns < res->committed_ns ||
        now < res->applied_ns)
        return; /* not stamped (an entry applied before this node proposed it cannot be) */
    s->stats.requests += n;
    s->stats.entries++;
    s->stats.queue_ns += b->queue_ns;
    s->stats.commit_ns += (res->committed_ns - b->proposed_ns) * n;
    s->stats.apply_ns += (res->applied_ns - res->committed_ns) * n;
    s->stats.deliver_ns += (now - res->applied_ns) * n;
}

static void proposal_cb(void *arg, int status, const struct ud_fsm_result *res, const char *errmsg)
{
    struct batch *b = arg;
    struct ud_submitter *s = b->s;
    s->inflight--;
    s->wake = 1;
    if (status == 0 && res->status == 0 && res->kind == UD_COMMAND_RECORDS)
        account(s, b, res);
    batch_done(s, b, status, errmsg, res);
    free(b);
    /* The next gather (this iteration's check phase) fills the freed slot. */
    if (s->closing)
        maybe_free(s);
}

/* Encodes the batch (requests already grouped by namespace) and proposes it. */
static void propose(struct ud_submitter *s, struct batch *b, size_t size)
{
    char errmsg[UD_ERRMSG_SIZE] = "";
    int rc;
    uint8_t *buf = NULL;
    size_t len = 0;
    struct request *r = b->reqs;
    if (s->w->raft == NULL) {
        rc = ud_errf(errmsg, UD_ECLOSED, "raft is stopped");
        goto fail;
    }
    size = UD_COMMAND_ALIGN(size);
    buf = ud_raft_buf_alloc(size);
    if (buf == NULL) {
        rc = ud_errf(errmsg, UD_ENOMEM, "out of memory for a raft entry of %zu bytes", size);
        goto fail;
    }
    if (r->kind != REQ_RECORDS) {
        rc = ud_command_encode_ns(r->kind == REQ_NS_CREATE ? UD_COMMAND_NS_CREATE
                                                           : UD_COMMAND_NS_DELETE,
                                  r->ns, buf, size, &len);
    } else {
        struct ud_command_writer cw;
        ud_command_writer_init(&cw, buf, size);
        const char *group = NULL;
        hlc_floor(s);
        for (; r != NULL; r = r->next) {
            if (group == NULL || strcmp(group, r->ns) != 0) {
                ud_command_writer_group(&cw, r->ns);
                group = r->ns;
            }
            for (size_t i = 0; i < r->n; i++) {
                ud_record_set_hlc(r->records[i], next_hlc(s));
                ud_command_writer_record(&cw, r->records[i], r->lens[i]);
                /* The entry holds the record now. Freed while it is still in the cache: at the
                 * answer, a commit later and hundreds of requests on, free touched cold memory
                 * (3 % of the leader's loop thread at concurrency 256). Kept for the next
                 * request's record of that size (core/recbuf.h). */
                ud_recbuf_free(r->records[i], r->lens[i]);
                r->records[i] = NULL;
            }
        }
        /* The keys section: each keyed request's records, by position in the command. */
        uint32_t pos = 0;
        for (r = b->reqs; b->keyed && r != NULL; r = r->next) {
            if (r->key_len > 0)
                ud_command_writer_key(&cw, pos, (uint32_t)r->n, r->key, r->key_len, r->digest);
            pos += (uint32_t)r->n;
        }
        /* The conditions section: the FSM judges each when it applies the record. */
        pos = 0;
        for (r = b->reqs; b->conditional && r != NULL; r = r->next) {
            if (r->cond_kind != 0)
                ud_command_writer_cond(&cw, pos, r->cond_kind, r->cond_lsn);
            pos += (uint32_t)r->n;
        }
        rc = ud_command_writer_finish(&cw, &len);
    }
    if (rc != 0) {
        ud_errf(errmsg, rc, "encode raft command: %s", ud_strerror(rc));
        goto fail;
    }
    UD_ASSERT(len == size);
    b->proposed_ns = ud_mono_ns();
    for (r = b->reqs; r != NULL; r = r->next) {
        b->nreqs++;
        b->queue_ns += b->proposed_ns - r->queued_ns;
    }
    rc = ud_raft_node_propose(s->w->raft, buf, len, proposal_cb, b, errmsg);
    if (rc != 0)
        goto fail;
    s->inflight++;
    return;
fail:
    ud_raft_buf_free(buf);
    answer_list(b->reqs, rc, errmsg);
    free(b);
}

/*
 * Takes the next entry's worth of requests off the queue: a namespace command alone, or records
 * requests up to max_bytes (a request is never split; one larger than max_bytes goes alone), in
 * queue order, leaving behind those whose namespace admission control holds. Returns the encoded
 * size, 0 when nothing can go now.
 */
static size_t take_batch(struct ud_submitter *s, struct batch *b, uint64_t now,
                         struct request **answers)
{
    size_t size = UD_COMMAND_HEADER_SIZE;
    size_t taken = 0;
    for (size_t i = 0; i < s->nslots; i++)
        s->slots[i].first = s->slots[i].last = NULL;
    struct request **pp = &s->head;
    struct request *prev = NULL;
    while (*pp != NULL) {
        struct request *r = *pp;
        if (r->kind != REQ_RECORDS) {
            if (taken > 0)
                break; /* namespace commands keep their place in the order */
            *pp = r->next;
            if (s->tail == r)
                s->tail = prev;
            r->next = NULL;
            b->reqs = r;
            return ud_command_ns_size(r->ns);
        }
        struct slot *sl = slot_of(s, r);
        if (sl->status == UD_ENOTFOUND || (sl->status == UD_EBUSY && now >= r->deadline_ms)) {
            /* Refused (answered by the caller, in order: later requests of this namespace meet
             * the same fate). */
            *pp = r->next;
            if (s->tail == r)
                s->tail = prev;
            if (sl->status == UD_ENOTFOUND)
                r->status = ud_errf(r->errmsg, UD_ENOTFOUND, "namespace not found: %s", r->ns);
            else
                refuse_ahead_of_flush(s, r);
            r->next = *answers;
            *answers = r;
            continue;
        }
        if (sl->status == UD_EBUSY) {
            s->held = 1;
            prev = r;
            pp = &r->next;
            continue; /* held: the admission timer looks again */
        }
        size_t add = r->bytes + (sl->first == NULL ? ud_command_group_size(r->ns) : 0) +
                     (r->key_len > 0 && !b->keyed ? UD_COMMAND_KEYS_OVERHEAD : 0) +
                     (r->cond_kind != 0 && !b->conditional ? UD_COMMAND_CONDS_OVERHEAD : 0);
        if (taken > 0 && UD_COMMAND_ALIGN(size + add) > s->max_bytes)
            break;
        if (r->key_len > 0)
            b->keyed = 1;
        if (r->cond_kind != 0)
            b->conditional = 1;
        *pp = r->next;
        if (s->tail == r)
            s->tail = prev;
        r->next = NULL;
        if (sl->last != NULL)
            sl->last->next = r;
        else
            sl->first = r;
        sl->last = r;
        size += add;
        b->nrecords += r->n;
        taken++;
    }
    if (taken == 0)
        return 0;
    /* Chain the namespace groups in the order the namespaces first appeared. */
    struct request **tailp = &b->reqs;
    for (size_t i = 0; i < s->nslots; i++) {
        if (s->slots[i].first == NULL)
            continue;
        *tailp = s->slots[i].first;
        tailp = &s->slots[i].last->next;
    }
    *tailp = NULL;
    return size;
}

static void admit_timer_cb(uv_timer_t *t);

/* The stats' admission figures: a hold lasts from the first gather that leaves requests behind
 * for the flush to the first that does not. */
static void account_hold(struct ud_submitter *s)
{
    if (s->held && s->held_since_ns == 0) {
        s->held_since_ns = ud_mono_ns();
        s->stats.admission_holds++;
    } else if (!s->held && s->held_since_ns != 0) {
        s->stats.admission_held_ns += ud_mono_ns() - s->held_since_ns;
        s->held_since_ns = 0;
    }
}

/* Answers a list built in reverse order, oldest first. */
static void answer_refused(struct request *rev)
{
    struct request *list = NULL;
    while (rev != NULL) {
        struct request *next = rev->next;
        rev->next = list;
        list = rev;
        rev = next;
    }
    while (list != NULL) {
        struct request *next = list->next;
        answer(list, list->status, list->errmsg, NULL, 0);
        list = next;
    }
}

/*
 * Everything queued since the last gather goes out now, as far as max_inflight allows.
 * Callbacks run only after the queue has been restructured: one may submit (the request joins
 * the queue) or even close the submitter.
 */
/* Answers every queued request status and msg. */
static void refuse_queue(struct ud_submitter *s, int status, const char *msg)
{
    struct request *all = s->head;
    s->head = s->tail = NULL;
    answer_list(all, status, msg);
}

static void gather(struct ud_submitter *s)
{
    if (!s->wake || s->gathering || s->closing)
        return;
    s->wake = 0;
    s->gathering = 1;
    struct request *refused = s->refused;
    s->refused = s->refused_tail = NULL;
    answer_list(refused, -1, NULL);
    if (s->head != NULL && !ud_writer_is_leader(s->w)) {
        /* A follower: records go to the leader (writer/cluster.c); namespace commands come
         * here only from this node's own default-namespace logic, which retries. */
        char msg[UD_ERRMSG_SIZE];
        uint64_t id = 0;
        const char *addr = NULL;
        if (s->w->raft != NULL)
            ud_raft_node_leader(s->w->raft, &id, &addr);
        if (addr != NULL)
            snprintf(msg, sizeof msg,
                     "this writer is not the leader; the leader is node %llu at %s",
                     (unsigned long long)id, addr);
        else
            snprintf(msg, sizeof msg, "this writer is not the leader and no leader is known");
        struct request *all = s->head;
        s->head = s->tail = NULL;
        while (all != NULL) {
            struct request *r = all;
            all = r->next;
            r->next = NULL;
            /* A conditional write is not forwarded as records: the leader would apply them
             * without the condition. Answered as during an election: a follower that forwarded
             * the HTTP request sends it whole to the next leader. */
            if (r->kind != REQ_RECORDS || s->w->cluster == NULL || r->cond_kind != 0) {
                answer(r, UD_ECLOSED, msg, NULL, 0);
                continue;
            }
            ud_submit_cb cb = r->cb;
            r->cb = NULL;
            ud_cluster_forward_records(s->w, r->ns, r->key, r->key_len, r->digest, r->records,
                                       r->lens, r->n, cb, r->arg);
            r->n = 0; /* the records went with it */
            request_free(r);
        }
    }
    if (s->head != NULL && s->w->raft != NULL) {
        /* Applying is stalled at an entry that failed with a storage error (a full disk): new
         * writes would only queue behind it, their clients waiting with no answer. They are
         * refused with the cause instead, without waiting for anything: the FSM's apply thread
         * retries the entry on its own, and writes resume once it applies (space returned). */
        char err[UD_ERRMSG_SIZE], msg[UD_ERRMSG_SIZE];
        int rc = ud_fsm_check_stalled(ud_raft_node_fsm(s->w->raft), err);
        if (rc != 0) {
            snprintf(msg, sizeof msg,
                     "writes are stopped until committed entries can be applied: %s; they "
                     "resume once the cause is fixed, reads go on",
                     err);
            refuse_queue(s, rc, msg);
        }
    }
    if (s->head != NULL && ud_raft_log_short()) {
        /* raft's log took its reserve on a full disk: what it has left is for the entries under
         * way, and a failed allocation would crash raft 0.15 (raft/log_reserve.h). Everything
         * queued is refused, new requests and those admission held alike; on a follower they
         * went to the leader above. */
        char msg[UD_ERRMSG_SIZE];
        ud_raft_log_short_reason(msg, sizeof msg);
        refuse_queue(s, UD_ENOSPC, msg);
    }
    uint64_t now = uv_now(s->w->loop);
    struct request *answers = NULL;
    s->nslots = 0;
    s->held = 0;
    int examined = s->head == NULL; /* the queue was looked at: held is this gather's answer */
    while (s->head != NULL && s->inflight < s->max_inflight && !s->closing) {
        examined = 1;
        struct batch *b = calloc(1, sizeof *b);
        if (b == NULL)
            abort();
        b->s = s;
        size_t size = take_batch(s, b, now, &answers);
        if (size == 0) {
            free(b);
            break;
        }
        propose(s, b, size);
    }
    answer_refused(answers);
    if (examined)
        account_hold(s);
    if (s->held && !s->closing && !uv_is_active((uv_handle_t *)&s->admit_timer))
        uv_timer_start(&s->admit_timer, admit_timer_cb, ADMIT_RETRY_MS, 0);
    s->gathering = 0;
}

static void prepare_cb(uv_prepare_t *h)
{
    gather(h->data);
}

static void check_cb(uv_check_t *h)
{
    gather(h->data);
}

static void admit_timer_cb(uv_timer_t *t)
{
    struct ud_submitter *s = t->data;
    s->wake = 1;
    gather(s);
}

/* --- the seam -------------------------------------------------------------------------------- */

/* A request with room for n records (the arrays share its allocation). */
static struct request *request_new(struct ud_submitter *s, enum request_kind kind, const char *ns,
                                   size_t n, ud_submit_cb cb, void *arg)
{
    size_t room = n > 0 ? n : 1;
    struct request *r = NULL;
    if (room == 1 && spare_requests != NULL) {
        r = spare_requests;
        spare_requests = r->next;
        nspare_requests--;
    } else if ((r = malloc(sizeof *r + room * (sizeof *r->records + sizeof *r->lens))) == NULL) {
        abort();
    }
    /* Everything but the key and message buffers starts zeroed (they are last in the struct). */
    memset(r, 0, offsetof(struct request, key));
    r->errmsg[0] = '\0';
    r->room = room;
    r->records = (uint8_t **)(r + 1);
    r->lens = (size_t *)(r->records + room);
    r->kind = kind;
    r->cb = cb;
    r->arg = arg;
    if (ns == NULL || !ud_ns_name_valid(ns)) {
        r->status = kind == REQ_NS_CREATE ? UD_EINVAL : UD_ENOTFOUND;
        snprintf(r->errmsg, sizeof r->errmsg,
                 kind == REQ_NS_CREATE
                     ? "namespace name \"%.64s\" is invalid: names are 1 to 64 characters from "
                       "A-Z, a-z, 0-9, '_' and '-'"
                     : "namespace not found: %.64s",
                 ns != NULL ? ns : "");
    } else {
        memcpy(r->ns, ns, strlen(ns) + 1); /* valid: at most UD_NS_NAME_MAX bytes */
    }
    if (r->status == 0 && (s->closing || s->w->stopping))
        r->status = ud_errf(r->errmsg, UD_ECLOSED, "the writer is shutting down");
    /* uv_now: the loop's cached time, refreshed each iteration; precise enough for a timeout of
     * seconds and free, where a clock read per request is not. */
    r->deadline_ms = uv_now(s->w->loop) + s->admission_timeout_ms;
    r->queued_ns = ud_mono_ns();
    return r;
}

static void enqueue(struct ud_submitter *s, struct request *r)
{
    struct request **head = r->status != 0 ? &s->refused : &s->head;
    struct request **tail = r->status != 0 ? &s->refused_tail : &s->tail;
    if (*tail != NULL)
        (*tail)->next = r;
    else
        *head = r;
    *tail = r;
    s->wake = 1;
}

/* Checks what can be checked before raft sees the records; the FSM validates again. */
static void validate_records(struct request *r)
{
    if (r->n == 0 || r->n > UD_SUBMIT_MAX_RECORDS) {
        r->status = ud_errf(r->errmsg, UD_EINVAL, "a write carries 1 to %d records, not %zu",
                            UD_SUBMIT_MAX_RECORDS, r->n);
        return;
    }
    size_t total = UD_COMMAND_HEADER_SIZE + ud_command_group_size(r->ns);
    for (size_t i = 0; i < r->n; i++) {
        struct ud_record rec;
        char err[UD_ERRMSG_SIZE] = "";
        if (r->records[i] == NULL) {
            r->status = ud_errf(r->errmsg, UD_EINVAL, "record %zu is missing", i);
            return;
        }
        int rc = ud_record_decode(r->records[i], r->lens[i], &rec, err);
        if (rc != 0) {
            r->status = ud_errf(r->errmsg, rc == UD_ELIMIT ? UD_ELIMIT : UD_ECORRUPT,
                                "record %zu: %s", i, err);
            return;
        }
        if (rec.lsn != 0 || rec.raft_index != 0 || rec.raft_pos != 0) {
            r->status = ud_errf(r->errmsg, UD_EINVAL,
                                "record %zu carries an LSN or raft position; they are assigned "
                                "when it is committed",
                                i);
            return;
        }
        r->bytes += UD_COMMAND_RECORD_OVERHEAD + r->lens[i];
        total += UD_COMMAND_RECORD_OVERHEAD + r->lens[i];
    }
    if (UD_COMMAND_ALIGN(total) > UD_COMMAND_MAX_SIZE)
        r->status = ud_errf(r->errmsg, UD_ELIMIT,
                            "a write of %zu bytes exceeds the limit of %u bytes per write", total,
                            UD_COMMAND_MAX_SIZE);
}

void ud_submit(struct ud_writer *w, const char *ns, uint8_t **records, const size_t *lens, size_t n,
               ud_submit_cb cb, void *arg)
{
    ud_submit_keyed(w, ns, NULL, 0, NULL, records, lens, n, cb, arg);
}

static struct request *submit_request(struct ud_writer *w, const char *ns, const uint8_t *key,
                                      size_t key_len, const uint8_t *digest, uint8_t **records,
                                      const size_t *lens, size_t n, ud_submit_cb cb, void *arg);

void ud_submit_keyed(struct ud_writer *w, const char *ns, const uint8_t *key, size_t key_len,
                     const uint8_t *digest, uint8_t **records, const size_t *lens, size_t n,
                     ud_submit_cb cb, void *arg)
{
    struct request *r = submit_request(w, ns, key, key_len, digest, records, lens, n, cb, arg);
    if (r != NULL)
        enqueue(w->submitter, r);
}

void ud_submit_cond(struct ud_writer *w, const char *ns, const uint8_t *key, size_t key_len,
                    const uint8_t *digest, uint8_t *record, size_t len,
                    const struct ud_submit_cond *cond, ud_submit_cb cb, void *arg)
{
    struct request *r = submit_request(w, ns, key, key_len, digest, &record, &len, 1, cb, arg);
    if (r == NULL)
        return;
    if (r->status == 0 && cond != NULL) {
        if (!ud_command_cond_valid(cond->kind, cond->lsn)) {
            r->status = ud_errf(r->errmsg, UD_EINVAL, "condition kind %u with LSN %llu", cond->kind,
                                (unsigned long long)cond->lsn);
        } else {
            r->cond_kind = cond->kind;
            r->cond_lsn = cond->lsn;
            r->bytes += UD_COMMAND_COND_SIZE;
        }
    }
    enqueue(w->submitter, r);
}

/* The request of a records submit, not queued yet; NULL when there is no write path (answered
 * already). */
static struct request *submit_request(struct ud_writer *w, const char *ns, const uint8_t *key,
                                      size_t key_len, const uint8_t *digest, uint8_t **records,
                                      const size_t *lens, size_t n, ud_submit_cb cb, void *arg)
{
    struct ud_submitter *s = w->submitter;
    if (s == NULL) {
        for (size_t i = 0; records != NULL && i < n; i++)
            free(records[i]);
        answer_orphan(w, cb, arg);
        return NULL;
    }
    /* Ownership of the records passes here on every path. */
    size_t have = records != NULL ? n : 0;
    struct request *r = request_new(s, REQ_RECORDS, ns, have, cb, arg);
    r->n = have;
    if (r->n > 0) {
        memcpy(r->records, records, r->n * sizeof *r->records);
        memcpy(r->lens, lens, r->n * sizeof *r->lens);
    }
    if (r->status == 0)
        validate_records(r);
    if (r->status == 0 && key != NULL && key_len > 0) {
        if (key_len > UD_COMMAND_KEY_MAX) {
            r->status =
                ud_errf(r->errmsg, UD_EINVAL, "Idempotency-Key of %zu bytes: at most %d bytes",
                        key_len, UD_COMMAND_KEY_MAX);
        } else {
            memcpy(r->key, key, key_len);
            r->key_len = key_len;
            if (digest != NULL)
                memcpy(r->digest, digest, sizeof r->digest);
            else
                memset(r->digest, 0, sizeof r->digest);
            r->bytes += ud_command_key_size(key_len);
        }
    }
    return r;
}

void ud_submit_ns_create(struct ud_writer *w, const char *ns, ud_submit_cb cb, void *arg)
{
    struct ud_submitter *s = w->submitter;
    if (s == NULL) {
        answer_orphan(w, cb, arg);
        return;
    }
    enqueue(s, request_new(s, REQ_NS_CREATE, ns, 0, cb, arg));
}

void ud_submit_ns_delete(struct ud_writer *w, const char *ns, ud_submit_cb cb, void *arg)
{
    struct ud_submitter *s = w->submitter;
    if (s == NULL) {
        answer_orphan(w, cb, arg);
        return;
    }
    enqueue(s, request_new(s, REQ_NS_DELETE, ns, 0, cb, arg));
}

void ud_submit_stats(struct ud_writer *w, struct ud_submit_stats *st)
{
    struct ud_submitter *s = w->submitter;
    if (s == NULL)
        memset(st, 0, sizeof *st);
    else
        *st = s->stats;
}

/* --- lifecycle ------------------------------------------------------------------------------- */

int ud_writer_submit_init(struct ud_writer *w, char *errmsg)
{
    struct ud_submitter *s = calloc(1, sizeof *s);
    if (s == NULL)
        return ud_errf(errmsg, UD_ENOMEM, "out of memory creating the write path");
    s->w = w;
    const struct ud_writer_config *c = w->config;
    s->max_bytes = c != NULL && c->commit_max_bytes ? c->commit_max_bytes : DEFAULT_MAX_BYTES;
    s->max_inflight =
        c != NULL && c->commit_max_inflight ? c->commit_max_inflight : DEFAULT_MAX_INFLIGHT;
    s->admission_timeout_ms = c != NULL ? c->admission_timeout_ms : 0;
    uv_prepare_init(w->loop, &s->prepare);
    uv_check_init(w->loop, &s->check);
    uv_timer_init(w->loop, &s->admit_timer);
    s->handles = 3;
    s->prepare.data = s->check.data = s->admit_timer.data = s;
    /*
     * Group commit without a timer wait: requests queued during the poll phase (network reads)
     * are gathered by the check handle right after it; those queued by timers or other
     * prepare-phase work by the prepare handle before the loop blocks. Neither keeps the loop
     * alive on its own.
     */
    uv_prepare_start(&s->prepare, prepare_cb);
    uv_check_start(&s->check, check_cb);
    uv_unref((uv_handle_t *)&s->prepare);
    uv_unref((uv_handle_t *)&s->check);
    w->submitter = s;
    return 0;
}

static void handle_closed_cb(uv_handle_t *h)
{
    struct ud_submitter *s = h->data;
    s->handles--;
    maybe_free(s);
}

static void maybe_free(struct ud_submitter *s)
{
    if (s->handles > 0 || s->inflight > 0)
        return;
    free(s->slots);
    free(s);
    spare_requests_free();
    ud_recbuf_trim();
}

void ud_writer_submit_close(struct ud_writer *w)
{
    struct ud_submitter *s = w->submitter;
    if (s == NULL)
        return;
    w->submitter = NULL;
    s->closing = 1;
    struct request *all = s->head;
    struct request *refused = s->refused;
    s->head = s->tail = s->refused = s->refused_tail = NULL;
    /* Proposed entries are answered by raft (applied, or UD_ECLOSED when raft closes). */
    answer_list(refused, -1, NULL);
    answer_list(all, UD_ECLOSED, "the writer is shutting down");
    uv_close((uv_handle_t *)&s->prepare, handle_closed_cb);
    uv_close((uv_handle_t *)&s->check, handle_closed_cb);
    uv_close((uv_handle_t *)&s->admit_timer, handle_closed_cb);
}
