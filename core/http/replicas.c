/* Follower bookkeeping: acks, lag, the ISR set, the retention floor and acks=isr waits. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/http/replicas.h"
#include "core/registry.h"

/* Observations closer together than this share one entry (its time is when the first of them
 * was seen), so the ring covers RING * SPACING_MS = 10 s of steady writes: lag in ms is exact to
 * within SPACING_MS, and a lag beyond what the ring covers reads as at least its age. */
#define RING       1024
#define SPACING_MS 10

struct sample {
    uint64_t lsn;
    uint64_t ms;
};

struct nsobs {
    char name[UD_NS_NAME_MAX + 1];
    struct sample ring[RING];
    size_t head; /* index of the oldest */
    size_t n;
};

struct follower {
    char ns[UD_NS_NAME_MAX + 1];
    char id[UD_REPLICA_ID_MAX + 1];
    char address[UD_REPLICA_ADDRESS_MAX + 1];
    uint64_t applied_lsn;
    uint64_t subtree_min_lsn;
    uint64_t last_ack_ms;
};

struct waiter {
    char ns[UD_NS_NAME_MAX + 1];
    uint64_t lsn;
    uint64_t deadline_ms;
    ud_replicas_wait_cb cb;
    void *arg;
    struct waiter *next;
};

struct ud_replicas {
    struct ud_replicas_options o;
    struct follower *f; /* in order of first ack */
    size_t nf, capf;
    struct nsobs **obs;
    size_t nobs;
    struct waiter *waiters;
    size_t nwaiters;
};

int ud_replicas_new(const struct ud_replicas_options *opts, struct ud_replicas **out)
{
    struct ud_replicas *r = calloc(1, sizeof *r);
    if (r == NULL)
        return UD_ENOMEM;
    r->o = *opts;
    if (r->o.min_isr == 0)
        r->o.min_isr = 1;
    if (r->o.isr_max_lag_ms == 0)
        r->o.isr_max_lag_ms = 5000;
    if (r->o.follower_timeout_ms == 0)
        r->o.follower_timeout_ms = 30000;
    *out = r;
    return 0;
}

const struct ud_replicas_options *ud_replicas_options(const struct ud_replicas *r)
{
    return &r->o;
}

static void call_waiters(struct waiter *list, int status, struct ud_replicas *r)
{
    while (list != NULL) {
        struct waiter *w = list;
        list = w->next;
        w->cb(w->arg, status, 0, r->o.min_isr);
        free(w);
    }
}

void ud_replicas_free(struct ud_replicas *r)
{
    if (r == NULL)
        return;
    struct waiter *w = r->waiters;
    r->waiters = NULL;
    r->nwaiters = 0;
    call_waiters(w, UD_ECLOSED, r);
    for (size_t i = 0; i < r->nobs; i++)
        free(r->obs[i]);
    free(r->obs);
    free(r->f);
    free(r);
}

static struct nsobs *obs_find(struct ud_replicas *r, const char *ns)
{
    for (size_t i = 0; i < r->nobs; i++)
        if (strcmp(r->obs[i]->name, ns) == 0)
            return r->obs[i];
    return NULL;
}

void ud_replicas_observe(struct ud_replicas *r, const char *ns, uint64_t lsn, uint64_t now_ms)
{
    struct nsobs *o = obs_find(r, ns);
    if (o == NULL) {
        struct nsobs **p = realloc(r->obs, (r->nobs + 1) * sizeof *p);
        if (p == NULL)
            abort();
        r->obs = p;
        o = calloc(1, sizeof *o);
        if (o == NULL)
            abort();
        snprintf(o->name, sizeof o->name, "%s", ns);
        r->obs[r->nobs++] = o;
    }
    if (o->n > 0) {
        struct sample *newest = &o->ring[(o->head + o->n - 1) % RING];
        if (lsn <= newest->lsn)
            return;
        if (now_ms < newest->ms + SPACING_MS) {
            newest->lsn = lsn;
            return;
        }
    }
    if (o->n == RING) {
        o->head = (o->head + 1) % RING;
        o->n--;
    }
    o->ring[(o->head + o->n) % RING] = (struct sample){lsn, now_ms};
    o->n++;
}

/* Newest observed LSN of ns (0 when none). */
static uint64_t obs_last(struct ud_replicas *r, const char *ns)
{
    struct nsobs *o = obs_find(r, ns);
    return o != NULL && o->n > 0 ? o->ring[(o->head + o->n - 1) % RING].lsn : 0;
}

/* Age of the oldest observation above applied: how long the follower has missed a record. */
static uint64_t lag_ms(struct ud_replicas *r, const char *ns, uint64_t applied, uint64_t now_ms)
{
    struct nsobs *o = obs_find(r, ns);
    if (o == NULL)
        return 0;
    for (size_t k = 0; k < o->n; k++) {
        const struct sample *s = &o->ring[(o->head + k) % RING];
        if (s->lsn > applied)
            return now_ms > s->ms ? now_ms - s->ms : 0;
    }
    return 0;
}

static void status_of(struct ud_replicas *r, const struct follower *f, uint64_t now_ms,
                      struct ud_replica_status *st)
{
    uint64_t last = obs_last(r, f->ns);
    st->ns = f->ns;
    st->id = f->id;
    st->address = f->address;
    st->applied_lsn = f->applied_lsn;
    st->subtree_min_lsn = f->subtree_min_lsn;
    st->lag_records = last > f->applied_lsn ? last - f->applied_lsn : 0;
    st->lag_ms = lag_ms(r, f->ns, f->applied_lsn, now_ms);
    st->last_ack_age_ms = now_ms > f->last_ack_ms ? now_ms - f->last_ack_ms : 0;
    st->in_isr = st->lag_ms <= r->o.isr_max_lag_ms && st->last_ack_age_ms <= r->o.isr_max_lag_ms &&
                 (r->o.isr_max_lag_records == 0 || st->lag_records <= r->o.isr_max_lag_records);
}

static uint32_t acked(struct ud_replicas *r, const char *ns, uint64_t lsn)
{
    uint32_t n = 0;
    for (size_t i = 0; i < r->nf; i++)
        if (strcmp(r->f[i].ns, ns) == 0 && r->f[i].applied_lsn >= lsn)
            n++;
    return n;
}

/* Calls back the waits of ns that are satisfied now. */
static void resolve(struct ud_replicas *r, const char *ns)
{
    struct waiter *done = NULL, **pp = &r->waiters;
    while (*pp != NULL) {
        struct waiter *w = *pp;
        if (strcmp(w->ns, ns) == 0 && acked(r, ns, w->lsn) >= r->o.min_isr) {
            *pp = w->next;
            r->nwaiters--;
            w->next = done;
            done = w;
            continue;
        }
        pp = &w->next;
    }
    /* Unlinked first: a callback may start a new wait. */
    while (done != NULL) {
        struct waiter *w = done;
        done = w->next;
        w->cb(w->arg, 0, acked(r, ns, w->lsn), r->o.min_isr);
        free(w);
    }
}

static int printable(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
            return 0;
    return 1;
}

int ud_replicas_ack(struct ud_replicas *r, const char *ns, const struct ud_replica_ack *ack,
                    uint64_t last_lsn, uint64_t now_ms, char *errmsg)
{
    size_t il = ack->id != NULL ? strlen(ack->id) : 0;
    if (il == 0 || il > UD_REPLICA_ID_MAX || !printable(ack->id, il))
        return ud_errf(errmsg, UD_EINVAL,
                       "field \"id\" must be 1 to %d printable ASCII characters without spaces",
                       UD_REPLICA_ID_MAX);
    size_t al = ack->address != NULL ? strlen(ack->address) : 0;
    if (al > UD_REPLICA_ADDRESS_MAX || !printable(ack->address ? ack->address : "", al))
        return ud_errf(errmsg, UD_EINVAL,
                       "field \"address\" must be at most %d printable ASCII characters without "
                       "spaces",
                       UD_REPLICA_ADDRESS_MAX);
    if (ack->applied_lsn > last_lsn)
        return ud_errf(errmsg, UD_EINVAL,
                       "applied_lsn %llu is beyond this node's last LSN %llu of namespace %s",
                       (unsigned long long)ack->applied_lsn, (unsigned long long)last_lsn, ns);
    ud_replicas_observe(r, ns, last_lsn, now_ms);
    struct follower *f = NULL;
    for (size_t i = 0; i < r->nf && f == NULL; i++)
        if (strcmp(r->f[i].ns, ns) == 0 && strcmp(r->f[i].id, ack->id) == 0)
            f = &r->f[i];
    if (f == NULL) {
        if (r->nf == UD_REPLICAS_MAX)
            return ud_errf(errmsg, UD_ELIMIT, "this node tracks %d followers already",
                           UD_REPLICAS_MAX);
        if (r->nf == r->capf) {
            size_t cap = r->capf ? r->capf * 2 : 8;
            struct follower *p = realloc(r->f, cap * sizeof *p);
            if (p == NULL)
                abort();
            r->f = p;
            r->capf = cap;
        }
        f = &r->f[r->nf++];
        memset(f, 0, sizeof *f);
        snprintf(f->ns, sizeof f->ns, "%s", ns);
        snprintf(f->id, sizeof f->id, "%s", ack->id);
    }
    /* A follower that restarted from a snapshot or lost an unsynced tail may report less than
     * before: what it reports now is what it has. */
    f->applied_lsn = ack->applied_lsn;
    f->subtree_min_lsn = ack->subtree_min_lsn != 0 && ack->subtree_min_lsn < ack->applied_lsn
                             ? ack->subtree_min_lsn
                             : ack->applied_lsn;
    if (al > 0)
        snprintf(f->address, sizeof f->address, "%s", ack->address);
    f->last_ack_ms = now_ms;
    resolve(r, ns);
    return 0;
}

size_t ud_replicas_list(struct ud_replicas *r, const char *ns, uint64_t now_ms,
                        void (*fn)(void *arg, const struct ud_replica_status *st), void *arg)
{
    size_t n = 0;
    for (size_t i = 0; i < r->nf; i++) {
        if (ns != NULL && strcmp(r->f[i].ns, ns) != 0)
            continue;
        struct ud_replica_status st;
        status_of(r, &r->f[i], now_ms, &st);
        if (fn != NULL)
            fn(arg, &st);
        n++;
    }
    return n;
}

void ud_replicas_count(struct ud_replicas *r, const char *ns, uint64_t now_ms, uint32_t *isr,
                       uint32_t *followers)
{
    *isr = *followers = 0;
    for (size_t i = 0; i < r->nf; i++) {
        if (strcmp(r->f[i].ns, ns) != 0)
            continue;
        struct ud_replica_status st;
        status_of(r, &r->f[i], now_ms, &st);
        (*followers)++;
        if (st.in_isr)
            (*isr)++;
    }
}

uint64_t ud_replicas_retain_floor(struct ud_replicas *r, const char *ns, uint64_t now_ms)
{
    uint64_t floor = 0;
    for (size_t i = 0; i < r->nf; i++) {
        if (strcmp(r->f[i].ns, ns) != 0)
            continue;
        struct ud_replica_status st;
        status_of(r, &r->f[i], now_ms, &st);
        if (st.in_isr && (floor == 0 || st.applied_lsn + 1 < floor))
            floor = st.applied_lsn + 1;
    }
    return floor;
}

int ud_replicas_wait(struct ud_replicas *r, const char *ns, uint64_t lsn, uint64_t deadline_ms,
                     uint64_t now_ms, ud_replicas_wait_cb cb, void *arg)
{
    (void)now_ms;
    if (acked(r, ns, lsn) >= r->o.min_isr)
        return 1;
    struct waiter *w = calloc(1, sizeof *w);
    if (w == NULL)
        abort();
    snprintf(w->ns, sizeof w->ns, "%s", ns);
    w->lsn = lsn;
    w->deadline_ms = deadline_ms;
    w->cb = cb;
    w->arg = arg;
    w->next = r->waiters;
    r->waiters = w;
    r->nwaiters++;
    return 0;
}

uint64_t ud_replicas_tick(struct ud_replicas *r, uint64_t now_ms)
{
    size_t j = 0;
    for (size_t i = 0; i < r->nf; i++)
        if (now_ms < r->f[i].last_ack_ms + r->o.follower_timeout_ms)
            r->f[j++] = r->f[i];
    r->nf = j;
    uint64_t next = UINT64_MAX;
    for (size_t i = 0; i < r->nf; i++)
        if (r->f[i].last_ack_ms + r->o.follower_timeout_ms < next)
            next = r->f[i].last_ack_ms + r->o.follower_timeout_ms;
    struct waiter *expired = NULL, **pp = &r->waiters;
    while (*pp != NULL) {
        struct waiter *w = *pp;
        if (now_ms >= w->deadline_ms) {
            *pp = w->next;
            r->nwaiters--;
            w->next = expired;
            expired = w;
            continue;
        }
        if (w->deadline_ms < next)
            next = w->deadline_ms;
        pp = &w->next;
    }
    while (expired != NULL) {
        struct waiter *w = expired;
        expired = w->next;
        w->cb(w->arg, UD_ETIMEDOUT, acked(r, w->ns, w->lsn), r->o.min_isr);
        free(w);
    }
    return next;
}

void ud_replicas_forget_ns(struct ud_replicas *r, const char *ns)
{
    size_t j = 0;
    for (size_t i = 0; i < r->nf; i++)
        if (strcmp(r->f[i].ns, ns) != 0)
            r->f[j++] = r->f[i];
    r->nf = j;
    for (size_t i = 0; i < r->nobs; i++) {
        if (strcmp(r->obs[i]->name, ns) == 0) {
            free(r->obs[i]);
            r->obs[i] = r->obs[--r->nobs];
            break;
        }
    }
    struct waiter *gone = NULL, **pp = &r->waiters;
    while (*pp != NULL) {
        struct waiter *w = *pp;
        if (strcmp(w->ns, ns) == 0) {
            *pp = w->next;
            r->nwaiters--;
            w->next = gone;
            gone = w;
            continue;
        }
        pp = &w->next;
    }
    while (gone != NULL) {
        struct waiter *w = gone;
        gone = w->next;
        w->cb(w->arg, UD_ECLOSED, 0, r->o.min_isr);
        free(w);
    }
}

size_t ud_replicas_followers(const struct ud_replicas *r)
{
    return r->nf;
}

size_t ud_replicas_waiting(const struct ud_replicas *r)
{
    return r->nwaiters;
}
