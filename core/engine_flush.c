/* Sealing memtables, the flush thread that writes them to LMDB with the checkpoint, WAL retention
 * and admission control (docs/engine.md "Flush"). */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/arena.h"
#include "core/clock.h"
#include "core/endian.h"
#include "core/engine_int.h"
#include "core/err.h"
#include "core/keyspace.h"
#include "core/log.h"

/* LOB chunk bytes go to the store in transactions of at most this many bytes, so a flush of a
 * huge object never holds more than this in LMDB's dirty pages. */
#define CHUNK_BATCH_BYTES (16u << 20)
#define BACKOFF_MIN_MS    100
#define BACKOFF_MAX_MS    5000

/* --- sealing ---------------------------------------------------------------------------------- */

int ud_ns_seal_locked(struct ud_ns *ns)
{
    struct ud_memtable *fresh;
    if (ud_memtable_create(&fresh, ns->seal_bytes) != 0)
        goto nomem;
    struct ud_checkpoint_txn *txns = NULL;
    if (ns->ntxns > 0) {
        if ((txns = malloc(ns->ntxns * sizeof *txns)) == NULL) {
            ud_memtable_unref(fresh);
            goto nomem;
        }
        for (size_t i = 0; i < ns->ntxns; i++) {
            memcpy(txns[i].id, ns->txns[i]->id, UD_TXN_ID_SIZE);
            txns[i].first_lsn = ns->txns[i]->begin_lsn;
        }
    }
    if (!ns->pooling) {
        /* Writes came back after an idle spell (idle_release): this memtable's blocks are kept
         * for the next one again. */
        ud_arena_pool_reserve(ns->pool_bytes);
        ns->pooling = true;
    }
    pthread_mutex_lock(&ns->view_lock);
    if (ns->nsealed == ns->cap_sealed) {
        size_t cap = ns->cap_sealed ? ns->cap_sealed * 2 : 4;
        struct ud_sealed *p = realloc(ns->sealed, cap * sizeof *p);
        if (p == NULL) {
            pthread_mutex_unlock(&ns->view_lock);
            free(txns);
            ud_memtable_unref(fresh);
            goto nomem;
        }
        ns->sealed = p;
        ns->cap_sealed = cap;
    }
    /* The checkpoint is the namespace's last LSN, not the memtable's newest entry: BEGIN, PREPARE
     * and ABORT records take LSNs without memtable entries. */
    ns->sealed[ns->nsealed++] = (struct ud_sealed){
        .mem = ns->active, .last_lsn = ns->last_lsn, .txns = txns, .ntxns = (uint32_t)ns->ntxns};
    ns->active = fresh;
    pthread_cond_signal(&ns->flush_cv);
    pthread_mutex_unlock(&ns->view_lock);
    ns->sealed_upto = ns->last_lsn;
    return 0;
nomem:
    ud_warn(UD_ENGINE_LOG, "namespace %s: cannot seal the memtable: out of memory", ns->name);
    return UD_ENOMEM;
}

/* --- LOB chunks ------------------------------------------------------------------------------- */

struct chunk_batch {
    struct ud_ns *ns;
    struct ud_txn_chunk *v; /* offset unused */
    size_t n, cap;
    uint64_t bytes;
    char errmsg[UD_ERRMSG_SIZE];
};

static int chunk_batch_fn(struct ud_store_batch *b, void *arg)
{
    struct chunk_batch *cb = arg;
    for (size_t i = 0; i < cb->n; i++) {
        struct ud_wal_reader *r;
        const uint8_t *data;
        int rc = ud_lob_chunk_from_wal(cb->ns, cb->v[i].lsn, cb->v[i].len, &r, &data, cb->errmsg);
        if (rc != 0)
            return rc;
        rc = ud_store_batch_lob_chunk_put(b, cb->v[i].lsn, data, cb->v[i].len);
        ud_wal_reader_close(r);
        if (rc != 0)
            return ud_errf(cb->errmsg, rc, "store lob chunk of LSN %llu: %s",
                           (unsigned long long)cb->v[i].lsn, ud_strerror(rc));
    }
    return 0;
}

static int chunk_batch_write(struct chunk_batch *cb, char *errmsg)
{
    if (cb->n == 0)
        return 0;
    cb->errmsg[0] = '\0';
    int rc = ud_store_write(cb->ns->store, chunk_batch_fn, cb, errmsg);
    if (rc != 0 && cb->errmsg[0] != '\0')
        ud_errf(errmsg, rc, "%s", cb->errmsg);
    cb->n = 0;
    cb->bytes = 0;
    return rc;
}

/*
 * Copies the chunks of every LOB committed in the memtable into the store's lob_chunk database,
 * before the checkpoint transaction publishes the manifests. Chunks are keyed by their unique
 * LSN, so they stay invisible until then, and copying them again after a crash is harmless.
 */
static int copy_lob_chunks(struct ud_ns *ns, struct ud_memtable *mem, char *errmsg)
{
    struct chunk_batch cb = {.ns = ns};
    struct ud_memtable_iter it;
    ud_memtable_iter_init(&it, mem);
    int rc = 0;
    for (ud_memtable_iter_seek(&it, UD_SPACE_LOB, NULL, 0); ud_memtable_iter_valid(&it);
         ud_memtable_iter_next_key(&it)) {
        struct ud_mem_entry e;
        ud_memtable_iter_entry(&it, &e);
        if (e.space != UD_SPACE_LOB)
            break;
        if (e.kind != UD_MEM_LOB)
            continue;
        struct ud_lob_manifest m;
        if (ud_lob_manifest_parse(e.value, e.value_len, &m) != 0) {
            rc = ud_errf(errmsg, UD_ECORRUPT, "lob manifest committed at LSN %llu is corrupt",
                         (unsigned long long)e.lsn);
            goto out;
        }
        for (uint32_t i = 0; i < m.count; i++) {
            if (cb.n == cb.cap) {
                size_t cap = cb.cap ? cb.cap * 2 : 64;
                struct ud_txn_chunk *p = realloc(cb.v, cap * sizeof *p);
                if (p == NULL) {
                    rc = ud_errf(errmsg, UD_ENOMEM, "out of memory listing lob chunks");
                    goto out;
                }
                cb.v = p;
                cb.cap = cap;
            }
            struct ud_txn_chunk *c = &cb.v[cb.n++];
            ud_lob_manifest_chunk(&m, i, &c->lsn, &c->len);
            cb.bytes += c->len;
            if (cb.bytes >= CHUNK_BATCH_BYTES && (rc = chunk_batch_write(&cb, errmsg)) != 0)
                goto out;
        }
    }
    rc = chunk_batch_write(&cb, errmsg);
out:
    free(cb.v);
    return rc;
}

/* --- the flush transactions ------------------------------------------------------------------ */

/*
 * A sealed memtable goes to the store in several LMDB transactions, each covering the next run of
 * keys in key order, so that the pages one transaction dirties (anonymous memory until its commit,
 * kept by LMDB for reuse afterwards) stay near flush_txn_bytes whatever the memtable holds. Only
 * the last one writes the checkpoint: until then the store may hold versions newer than its
 * checkpoint, which replay writes again (docs/engine.md "Flush").
 *
 * Each entry is counted as one page (a random key in a large tree dirties about one leaf) plus its
 * bytes (large values take overflow pages): an upper bound for random keys, several times the real
 * count when consecutive keys share leaves.
 */
#define ENTRY_PAGE_BYTES 4096u
/* flush_txn_bytes by default: the size of the LOB chunk transactions above. */
#define DEFAULT_TXN_BYTES (16ull << 20)

/* Where a flush transaction starts: the key of the entry it writes first, and the row tombstone
 * in force there (a whole-row tombstone sorts before its columns and may be in an earlier
 * transaction). */
struct flush_pos {
    int started; /* 0: the memtable's first entry */
    uint8_t space;
    uint8_t key[UD_MAX_KEY];
    uint32_t key_len;
    uint8_t tomb_prefix[UD_MAX_KEY];
    uint32_t tomb_len;
    uint64_t tomb;
};

struct flush_ctx {
    struct ud_ns *ns;
    const struct ud_sealed *s;
    struct flush_pos from; /* where this transaction starts */
    struct flush_pos next; /* set by flush_fn: where the next one starts */
    uint64_t budget;       /* flush_txn_bytes, or no limit (one transaction) */
    int done;              /* set by flush_fn: this transaction wrote the checkpoint */
    struct ud_buf val;
    struct ud_buf old; /* a previous manifest */
    char errmsg[UD_ERRMSG_SIZE];
};

static int buf_reserve(struct ud_buf *b, size_t len)
{
    if (b->cap >= len && b->data != NULL)
        return 0;
    uint8_t *p = realloc(b->data, len > 64 ? len : 64);
    if (p == NULL)
        return UD_ENOMEM;
    b->data = p;
    b->cap = len > 64 ? len : 64;
    return 0;
}

/* Deletes the chunks of the manifest the store holds for key unless it is keep_lsn's. */
static int drop_old_chunks(struct flush_ctx *f, struct ud_store_batch *b, const uint8_t *key,
                           size_t key_len, uint64_t keep_lsn)
{
    const uint8_t *v;
    size_t vl;
    int rc = ud_store_batch_get(b, UD_SPACE_LOB, key, key_len, &v, &vl);
    if (rc == UD_ENOTFOUND)
        return 0;
    if (rc != 0)
        return rc;
    /* Copied: the view ends at the next write. */
    if ((rc = buf_reserve(&f->old, vl)) != 0)
        return rc;
    memcpy(f->old.data, v, vl);
    struct ud_lob_manifest m;
    if (ud_lob_manifest_parse(f->old.data, vl, &m) != 0)
        return ud_errf(f->errmsg, UD_ECORRUPT, "stored lob manifest is corrupt");
    if (m.commit_lsn == keep_lsn)
        return 0;
    for (uint32_t i = 0; i < m.count; i++) {
        uint64_t lsn;
        uint32_t len;
        ud_lob_manifest_chunk(&m, i, &lsn, &len);
        if ((rc = ud_store_batch_lob_chunk_del(b, lsn)) != 0)
            return rc;
    }
    return 0;
}

static int put_versioned(struct flush_ctx *f, struct ud_store_batch *b,
                         const struct ud_mem_entry *e)
{
    int rc = buf_reserve(&f->val, 8 + (size_t)e->value_len);
    if (rc != 0)
        return rc;
    ud_put_le64(f->val.data, e->lsn);
    memcpy(f->val.data + 8, e->value, e->value_len);
    return ud_store_batch_put(b, e->space, e->key, e->key_len, f->val.data,
                              8 + (size_t)e->value_len);
}

/* Writes the newest version of one key; pos carries the row tombstone in force. */
static int flush_entry(struct flush_ctx *f, struct ud_store_batch *b, const struct ud_mem_entry *e,
                       struct flush_pos *pos)
{
    if (e->space == UD_SPACE_KV)
        return e->kind == UD_MEM_TOMBSTONE ? ud_store_batch_del(b, UD_SPACE_KV, e->key, e->key_len)
                                           : put_versioned(f, b, e);
    if (e->space == UD_SPACE_ROW) {
        if (e->kind == UD_MEM_ROW_TOMBSTONE) {
            /* The row prefix sorts before its columns: drop every stored column, then only this
             * memtable's columns newer than the tombstone follow. */
            memcpy(pos->tomb_prefix, e->key, e->key_len);
            pos->tomb_len = e->key_len;
            pos->tomb = e->lsn;
            return ud_store_batch_del_prefix(b, UD_SPACE_ROW, e->key, e->key_len);
        }
        int under = pos->tomb_len > 0 && e->key_len > pos->tomb_len &&
                    memcmp(e->key, pos->tomb_prefix, pos->tomb_len) == 0;
        if (under && e->lsn <= pos->tomb)
            return 0;
        return e->kind == UD_MEM_TOMBSTONE ? ud_store_batch_del(b, UD_SPACE_ROW, e->key, e->key_len)
                                           : put_versioned(f, b, e);
    }
    if (e->space == UD_SPACE_LOB) {
        int rc = drop_old_chunks(f, b, e->key, e->key_len, e->kind == UD_MEM_LOB ? e->lsn : 0);
        if (rc == 0 && e->kind == UD_MEM_LOB)
            rc = ud_store_batch_put(b, UD_SPACE_LOB, e->key, e->key_len, e->value, e->value_len);
        else if (rc == 0)
            rc = ud_store_batch_del(b, UD_SPACE_LOB, e->key, e->key_len);
        return rc;
    }
    return 0;
}

/*
 * One flush transaction: the newest versions from f->from on until about flush_txn_bytes are
 * written (f->next is then where the next transaction starts), or to the memtable's end, when it
 * also writes the checkpoint (f->done). Depends only on f->from: ud_store_write runs it again
 * from the start after growing the map.
 */
static int flush_fn(struct ud_store_batch *b, void *arg)
{
    struct flush_ctx *f = arg;
    struct flush_pos *pos = &f->next;
    *pos = f->from;
    f->done = 0;
    uint64_t used = 0;
    struct ud_memtable_iter it;
    ud_memtable_iter_init(&it, f->s->mem);
    if (pos->started)
        ud_memtable_iter_seek(&it, pos->space, pos->key, pos->key_len);
    else
        ud_memtable_iter_first(&it);
    int rc = 0;
    for (; rc == 0 && ud_memtable_iter_valid(&it); ud_memtable_iter_next_key(&it)) {
        struct ud_mem_entry e;
        ud_memtable_iter_entry(&it, &e); /* the newest version of its key */
        if (used >= f->budget) {
            /* The first of several: from its commit on the store is ahead of its checkpoint, also
             * for a process that opens it after a crash (ud_ns_open keeps copies out). */
            if (!f->from.started && (rc = ud_store_batch_set_ahead(b, f->s->last_lsn)) != 0)
                return rc;
            pos->started = 1;
            pos->space = e.space;
            memcpy(pos->key, e.key, e.key_len);
            pos->key_len = e.key_len;
            return 0;
        }
        rc = flush_entry(f, b, &e, pos);
        used += ENTRY_PAGE_BYTES + e.key_len + e.value_len;
    }
    if (rc != 0) {
        if (f->errmsg[0] == '\0')
            ud_errf(f->errmsg, rc, "write LSN batch: %s", ud_strerror(rc));
        return rc;
    }
    struct ud_checkpoint cp = {
        .flushed_lsn = f->s->last_lsn, .txn_count = f->s->ntxns, .txns = f->s->txns};
    f->done = 1;
    return ud_store_batch_set_checkpoint(b, &cp);
}

/* Test hook (ud_flush_fail_after): flush transactions that may still commit; negative: no limit. */
static _Atomic long fail_after = -1;

void ud_flush_fail_after(long after)
{
    atomic_store(&fail_after, after);
}

/* Whether the test hook fails the next flush transaction. */
static int injected_failure(void)
{
    long n = atomic_load(&fail_after);
    while (n > 0 && !atomic_compare_exchange_weak(&fail_after, &n, n - 1))
        ;
    return n == 0;
}

/*
 * Flushes one sealed memtable: the WAL is made durable up to its checkpoint first (an LMDB commit
 * must never cover records the WAL could still lose), LOB chunks next, then the newest versions in
 * bounded transactions, the last of which writes the checkpoint. Every transaction is durable at
 * its commit; a crash between two leaves the store ahead of its checkpoint, which replay repairs.
 */
static int flush_sealed(struct ud_ns *ns, const struct ud_sealed *s, char *errmsg)
{
    int rc = ud_wal_sync_all(ns->wal, errmsg);
    if (rc != 0)
        return ud_errwrap(errmsg, rc, "sync WAL before flush");
    if ((rc = copy_lob_chunks(ns, s->mem, errmsg)) != 0)
        return ud_errwrap(errmsg, rc, "copy lob chunks");
    struct flush_ctx *f = calloc(1, sizeof *f);
    if (f == NULL)
        return ud_errf(errmsg, UD_ENOMEM, "out of memory for the flush");
    f->ns = ns;
    f->s = s;
    /* While a copy of the store starts, one transaction, as large as it takes: the copy must not
     * catch the store ahead of its checkpoint (ud_store_group_begin). After a failure halfway
     * the group is still open, and copies wait until this flush completes. */
    int group = ns->store_ahead || ud_store_group_begin(ns->store);
    f->budget = ns->opts.flush_txn_bytes != 0 ? ns->opts.flush_txn_bytes : DEFAULT_TXN_BYTES;
    if (!group)
        f->budget = UINT64_MAX;
    uint32_t txns = 0;
    while (rc == 0 && !f->done) {
        if (injected_failure()) {
            rc = ud_errf(errmsg, UD_EIO, "flush transaction %u failed (injected)", txns + 1);
            break;
        }
        f->errmsg[0] = '\0';
        rc = ud_store_write(ns->store, flush_fn, f, errmsg);
        if (rc != 0 && f->errmsg[0] != '\0')
            ud_errf(errmsg, rc, "%s", f->errmsg);
        if (rc == 0) {
            f->from = f->next;
            ns->store_ahead = !f->done || s->last_lsn < ns->ahead_upto;
            txns++;
            __atomic_add_fetch(&ns->flush_txns, 1, __ATOMIC_RELAXED);
        }
    }
    if (group && !ns->store_ahead)
        ud_store_group_end(ns->store);
    ud_buf_free(&f->val);
    ud_buf_free(&f->old);
    free(f);
    if (rc != 0)
        return ud_errwrap(errmsg, rc, "checkpoint at LSN %llu (after %u flush transactions)",
                          (unsigned long long)s->last_lsn, txns);
    ud_debug(UD_ENGINE_LOG, "namespace %s: flushed up to LSN %llu in %u transactions", ns->name,
             (unsigned long long)s->last_lsn, txns);
    return 0;
}

/* Oldest LSN the WAL must keep after checkpoint s: replay starts at the checkpoint, or at the
 * BEGIN of a transaction open then (its parts, and its LOB chunks, are before the checkpoint), and
 * in-sync followers still need what they have not applied (ud_ns_set_retain_floor). */
static uint64_t keep_lsn(struct ud_ns *ns, const struct ud_sealed *s)
{
    uint64_t keep = s->last_lsn + 1;
    for (uint32_t i = 0; i < s->ntxns; i++)
        if (s->txns[i].first_lsn < keep)
            keep = s->txns[i].first_lsn;
    uint64_t floor = __atomic_load_n(&ns->retain_floor, __ATOMIC_ACQUIRE);
    if (floor != 0 && floor < keep)
        keep = floor;
    return keep;
}

/*
 * The flush thread's step for a namespace that took no write for a whole idle_flush_ms: seals what
 * the active memtable holds, so that the flush writes it out (its memory goes back, and a crash
 * has nothing of it to replay); once nothing is left to flush, returns the namespace's share of
 * the arena pool, which unmaps the blocks the pool kept for it. A namespace that took a burst
 * then holds one empty memtable, not half its budget. Called without view_lock.
 */
static void idle_release(struct ud_ns *ns, uint64_t seen_lsn)
{
    /* Never waits for the lock: its holder may be waiting for this thread (replay's throttle),
     * and a held lock means a write is being applied, so the namespace is not idle. */
    if (pthread_mutex_trylock(&ns->apply_lock) != 0)
        return;
    /* A write since the caller's check: not idle after all. A failed namespace logged a record
     * it did not apply: a checkpoint past it would skip it at the reopen that recovers it. */
    if (ns->last_lsn != seen_lsn || ns->failed) {
        pthread_mutex_unlock(&ns->apply_lock);
        return;
    }
    if (ns->last_lsn > ns->sealed_upto) {
        ud_debug(UD_ENGINE_LOG, "namespace %s: idle, flushing its memtable", ns->name);
        bool was_pooling = ns->pooling;
        /* out of memory: logged, and tried again after the next spell */
        if (ud_ns_seal_locked(ns) == 0 && !was_pooling) {
            /* The seal took the pool share back for the writes it assumed were coming (a
             * trickle after a release): give it up again so this flush unmaps its blocks. */
            ud_arena_pool_unreserve(ns->pool_bytes);
            ns->pooling = false;
        }
    } else if (ns->pooling) {
        ud_arena_pool_unreserve(ns->pool_bytes);
        ns->pooling = false;
    }
    pthread_mutex_unlock(&ns->apply_lock);
}

static void *flush_main(void *arg)
{
    struct ud_ns *ns = arg;
    /* Named so per-thread CPU (top -H, /proc/PID/task, perf) tells the flush apart. */
    pthread_setname_np(pthread_self(), "ud-flush");
    uint32_t backoff = 0;
    char errmsg[UD_ERRMSG_SIZE];
    /* The last LSN at the previous idle_flush_ms timeout: unchanged at the next one means no
     * write for a whole period. */
    uint64_t seen_lsn = __atomic_load_n(&ns->last_lsn, __ATOMIC_ACQUIRE);
    pthread_mutex_lock(&ns->view_lock);
    while (!ns->stop) {
        if (ns->nsealed == 0) {
            struct timespec ts = ud_mono_deadline(ns->opts.idle_flush_ms);
            if (pthread_cond_timedwait(&ns->flush_cv, &ns->view_lock, &ts) != ETIMEDOUT)
                continue;
            uint64_t lsn = __atomic_load_n(&ns->last_lsn, __ATOMIC_ACQUIRE);
            if (lsn != seen_lsn || ns->stop) {
                seen_lsn = lsn;
                continue;
            }
            pthread_mutex_unlock(&ns->view_lock);
            idle_release(ns, seen_lsn);
            pthread_mutex_lock(&ns->view_lock);
            continue;
        }
        /* The apply thread may grow (move) the array; copy the oldest entry. */
        struct ud_sealed s = ns->sealed[0];
        pthread_mutex_unlock(&ns->view_lock);
        errmsg[0] = '\0';
        int rc = flush_sealed(ns, &s, errmsg);
        /* Before done_cv: ud_ns_flush's caller reads it with the flush it waited for. */
        struct timespec cpu;
        if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cpu) == 0)
            __atomic_store_n(&ns->flush_cpu_ns,
                             (uint64_t)cpu.tv_sec * 1000000000ull + (uint64_t)cpu.tv_nsec,
                             __ATOMIC_RELAXED);
        pthread_mutex_lock(&ns->view_lock);
        if (rc != 0) {
            backoff = backoff ? backoff * 2 : BACKOFF_MIN_MS;
            if (backoff > BACKOFF_MAX_MS)
                backoff = BACKOFF_MAX_MS;
            ns->flush_errors++;
            ns->flush_failures_gen++;
            ns->flush_err = rc;
            ns->flush_failing = true;
            snprintf(ns->flush_errmsg, sizeof ns->flush_errmsg, "%s", errmsg);
            pthread_cond_broadcast(&ns->done_cv);
            ud_error(UD_ENGINE_LOG,
                     "namespace %s: flush up to LSN %llu failed (%s); retrying in %u ms", ns->name,
                     (unsigned long long)s.last_lsn, errmsg, backoff);
            struct timespec ts = ud_mono_deadline(backoff);
            while (!ns->stop && pthread_cond_timedwait(&ns->flush_cv, &ns->view_lock, &ts) == 0)
                ;
            continue;
        }
        backoff = 0;
        ns->flush_failing = false;
        memmove(&ns->sealed[0], &ns->sealed[1], (ns->nsealed - 1) * sizeof *ns->sealed);
        ns->nsealed--;
        ns->ops_flushed += s.last_lsn - ns->flushed_lsn;
        ns->flushed_lsn = s.last_lsn;
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        ns->last_flush_unix_ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
        pthread_cond_broadcast(&ns->done_cv);
        pthread_mutex_unlock(&ns->view_lock);

        uint32_t removed = 0;
        if (ud_wal_retain(ns->wal, &ns->opts.retention, keep_lsn(ns, &s), &removed, errmsg) != 0)
            ud_warn(UD_ENGINE_LOG, "namespace %s: WAL retention: %s", ns->name, errmsg);
        else if (removed > 0)
            ud_debug(UD_ENGINE_LOG, "namespace %s: retention removed %u WAL segments", ns->name,
                     removed);
        /* Readers still holding it keep their own references. */
        ud_memtable_unref(s.mem);
        free(s.txns);
        pthread_mutex_lock(&ns->view_lock);
    }
    pthread_mutex_unlock(&ns->view_lock);
    return NULL;
}

int ud_ns_flush_start(struct ud_ns *ns, char *errmsg)
{
    int err = pthread_create(&ns->flush_thread, NULL, flush_main, ns);
    if (err != 0)
        return ud_errf(errmsg, UD_ENOMEM, "namespace %s: start flush thread: %s", ns->name,
                       strerror(err));
    ns->flush_started = 1;
    return 0;
}

void ud_ns_flush_stop(struct ud_ns *ns)
{
    if (!ns->flush_started)
        return;
    pthread_mutex_lock(&ns->view_lock);
    ns->stop = 1;
    pthread_cond_broadcast(&ns->flush_cv);
    pthread_cond_broadcast(&ns->done_cv);
    pthread_mutex_unlock(&ns->view_lock);
    pthread_join(ns->flush_thread, NULL);
    ns->flush_started = 0;
}

/* --- admission and explicit flushes ----------------------------------------------------------- */

size_t ud_ns_seal_bytes(size_t budget)
{
    /* Two sealed memtables and the fresh active one's filter fill the budget; the filter sized
     * for half the budget is at least the one a memtable sealed a little below that gets. */
    size_t filter = ud_memtable_filter_bytes(budget / 2);
    return budget > filter + 1 ? (budget - filter) / 2 : 1;
}

/*
 * Whether writers must wait for the flush (view_lock held): max_sealed memtables are pending, or
 * the memtables (the active one and the one being flushed included, each with its key filter)
 * hold the memtable budget. Memtables are sealed a little below half the budget
 * (ud_ns_seal_bytes), so with the defaults one memtable fills while the previous one is flushed,
 * and writers wait when it is full before that flush ends: the memtables never hold more than the
 * budget plus one record per writer admitted just before.
 */
static int behind_locked(struct ud_ns *ns)
{
    if (ns->nsealed == 0)
        return 0;
    if (ns->nsealed >= ns->opts.max_sealed)
        return 1;
    size_t bytes = ud_memtable_bytes(ns->active);
    for (size_t i = 0; i < ns->nsealed; i++)
        bytes += ud_memtable_bytes(ns->sealed[i].mem);
    return bytes >= ns->opts.memtable_bytes;
}

int ud_ns_flush_failure(struct ud_ns *ns, char *why, size_t size)
{
    pthread_mutex_lock(&ns->view_lock);
    int rc = ns->flush_failing ? ns->flush_err : 0;
    if (rc != 0)
        snprintf(why, size, "%s", ns->flush_errmsg);
    pthread_mutex_unlock(&ns->view_lock);
    return rc;
}

int ud_ns_admit(struct ud_ns *ns, uint64_t timeout_ms)
{
    struct timespec ts = ud_mono_deadline(timeout_ms);
    pthread_mutex_lock(&ns->view_lock);
    while (behind_locked(ns) && !ns->stop)
        if (pthread_cond_timedwait(&ns->done_cv, &ns->view_lock, &ts) == ETIMEDOUT)
            break;
    int busy = behind_locked(ns);
    pthread_mutex_unlock(&ns->view_lock);
    return busy ? UD_EBUSY : 0;
}

void ud_ns_throttle(struct ud_ns *ns)
{
    pthread_mutex_lock(&ns->view_lock);
    uint64_t gen = ns->flush_failures_gen;
    /* A failing flush must not stall recovery forever: memory grows instead, and the log says
     * why. */
    while (behind_locked(ns) && !ns->stop && gen == ns->flush_failures_gen)
        pthread_cond_wait(&ns->done_cv, &ns->view_lock);
    pthread_mutex_unlock(&ns->view_lock);
}

int ud_ns_flush(struct ud_ns *ns, char *errmsg)
{
    pthread_mutex_lock(&ns->apply_lock);
    if (ns->failed) {
        /* Its last record is logged but not applied: a checkpoint past it would lose it. */
        pthread_mutex_unlock(&ns->apply_lock);
        return ud_errf(errmsg, UD_EIO, "namespace %s failed earlier; reopen it to recover",
                       ns->name);
    }
    int rc = 0;
    /* Seal even an empty memtable when records arrived: BEGIN/PREPARE records move the
     * checkpoint (and its open-transaction table) without memtable entries. */
    if (ns->last_lsn > ns->sealed_upto)
        rc = ud_ns_seal_locked(ns);
    uint64_t target = ns->sealed_upto;
    pthread_mutex_unlock(&ns->apply_lock);
    if (rc != 0)
        return ud_errf(errmsg, rc, "namespace %s: seal memtable: out of memory", ns->name);
    pthread_mutex_lock(&ns->view_lock);
    uint64_t gen = ns->flush_failures_gen;
    while (ns->flushed_lsn < target && gen == ns->flush_failures_gen && !ns->stop)
        pthread_cond_wait(&ns->done_cv, &ns->view_lock);
    if (ns->flushed_lsn >= target)
        rc = 0;
    else if (gen != ns->flush_failures_gen)
        rc = ud_errf(errmsg, ns->flush_err, "namespace %s: flush: %s", ns->name, ns->flush_errmsg);
    else
        rc = ud_errf(errmsg, UD_ECLOSED, "namespace %s is closing", ns->name);
    pthread_mutex_unlock(&ns->view_lock);
    return rc;
}
