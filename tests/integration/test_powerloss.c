/* Power-loss durability test: acknowledged writes survive simulated crashes, LSNs stay dense. */

/*
 * Notes.
 *
 * What it proves. A namespace runs on the power-loss layer (tests/lib/fs_powerloss.h): WAL bytes
 * reach the "disk" only through the layer's sync, and a simulated crash keeps a random subset of
 * the unsynced 512-byte sectors. Each round opens the same namespace directory (so recovery runs
 * on top of earlier recoveries), lets 4 writer threads put unique keys (single puts, batches, row
 * puts, committed and aborted transactions; one value in ten spans several sectors) with sync
 * ALWAYS, and cuts the power at a random point: when the N-th write is acknowledged, inside the
 * N-th sync of the WAL (a whole group commit unsynced), or a random few milliseconds after the
 * first writes. It then closes the namespace (it must not hang) and reopens it from the disk files
 * with a fresh layer or with plain POSIX (alternating). Then:
 *  - every write the API acknowledged (returned 0) reads back with its exact value and LSN;
 *  - a write whose outcome is unknown (in flight at the crash) is all there or all absent, and
 *    keeps that outcome in every later round (no resurrection, no late loss);
 *  - aborted or never-committed transactions are invisible;
 *  - after recovery the next write gets LSN last + 1;
 *  - the WAL, opened directly after closing the namespace, holds dense LSNs from the first
 *    retained record to the last, each record's LSN field equals its position, and the record at
 *    each acknowledged LSN is the one that was acknowledged there.
 * A small memtable budget and small WAL segments make LMDB flushes, segment rotations and retention
 * happen within the rounds; LMDB's own I/O is real (durable at its commit), which is consistent
 * because the engine syncs the WAL before a flush commits.
 *
 * The control (test_control_without_fsync). The same harness runs with the layer in lying mode:
 * sync returns success and writes nothing, as if the WAL's fsync were removed. Then acknowledged
 * writes are lost at crashes, and the control asserts that the checks above detect it in at least
 * one round: the evidence that this test fails when fsync is missing. The control keeps everything
 * in the WAL (large memtable, so no LMDB flush) and starts each round from an empty namespace:
 * nothing but the WAL's fsync stands between an acknowledgement and durability. Its numbers
 * (acknowledged, lost, rounds with losses) are printed as TAP diagnostics.
 *
 * Mutations tried by hand on a copy of the tree: acknowledging without waiting for the WAL sync
 * (ud_ns_wait_durable returning at once) fails in the first round; syncing each range but its last
 * 8 bytes (a frame trailer) fails within two rounds (lost writes, or recovery refusing a WAL that
 * ends before the LMDB checkpoint). Not caught: a recovery that truncates the torn tail without
 * zeroing it, because that only matters when a later frame lines up exactly with a stale one.
 *
 * Limits. The layer's directory operations are durable at once, so the WAL's directory fsyncs are
 * not tested here. A SIGKILL test (test_sigkill.c) covers recovery of a real process separately.
 *
 * Environment: UD_TEST_SEED (reproduce a run's random choices; thread timing still varies),
 * UD_POWERLOSS_ROUNDS (default 200), UD_POWERLOSS_CONTROL_ROUNDS (default 20).
 */

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/engine.h"
#include "core/err.h"
#include "core/wal.h"
#include "proto/record.h"
#include "tests/lib/fs_powerloss.h"
#include "tests/lib/testutil.h"

#define WRITERS             4
#define MAX_KEYS            4
#define PROBE_THREAD        99
#define MIN_ACKED_PER_ROUND 20
#define VALUE_MAX           4000

/* ---- watchdog: a hang (close after a crash, a writer stuck) fails the run instead of stalling */

static _Atomic uint64_t wd_deadline_ns;
static const char *_Atomic wd_phase;
static pthread_once_t wd_once = PTHREAD_ONCE_INIT;

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static void *watchdog_main(void *arg)
{
    (void)arg;
    for (;;) {
        sleep_ms(100);
        uint64_t d = atomic_load(&wd_deadline_ns);
        if (d != 0 && mono_ns() > d) {
            printf("# watchdog: %s did not finish in time\n", atomic_load(&wd_phase));
            fflush(stdout);
            abort();
        }
    }
    return NULL;
}

static void watchdog_start(void)
{
    pthread_t t;
    if (pthread_create(&t, NULL, watchdog_main, NULL) == 0)
        pthread_detach(t);
}

static void wd_arm(const char *phase, unsigned seconds)
{
    pthread_once(&wd_once, watchdog_start);
    atomic_store(&wd_phase, phase);
    atomic_store(&wd_deadline_ns, mono_ns() + (uint64_t)seconds * 1000000000ull);
}

static void wd_disarm(void)
{
    atomic_store(&wd_deadline_ns, 0);
}

/* ---- the model of what was written ------------------------------------------------------- */

enum op_kind {
    OP_KV = 1,     /* one key */
    OP_BATCH,      /* nkeys keys in one record */
    OP_ROW,        /* one row, nkeys columns */
    OP_TXN_COMMIT, /* KV transaction of nkeys parts, committed */
    OP_TXN_ABORT,  /* KV transaction of nkeys parts, aborted */
};

enum op_state {
    ST_PENDING = 1, /* the visible-making call was made but not acknowledged: all or nothing */
    ST_ACKED,       /* acknowledged: must be present with its value forever */
    ST_PRESENT,     /* was pending, found present after recovery: must stay */
    ST_ABSENT,      /* never visible (aborted, uncommitted) or pending and found absent */
};

struct op {
    uint32_t round;
    uint32_t seq;
    uint16_t thread;
    uint8_t kind;
    uint8_t state;
    uint8_t nkeys;
    uint8_t txn_open; /* a BEGIN may be in the log without COMMIT/ABORT: abort it after recovery */
    uint64_t vseed;
    uint64_t lsn; /* of the record that made it visible, when known (0: unknown) */
    uint8_t txn_id[UD_TXN_ID_SIZE];
};

struct op_vec {
    struct op *v;
    size_t n;
    size_t cap;
};

static struct op *op_push(struct op_vec *ov)
{
    if (ov->n == ov->cap) {
        size_t cap = ov->cap ? ov->cap * 2 : 1024;
        struct op *v = realloc(ov->v, cap * sizeof *v);
        if (v == NULL)
            abort();
        ov->v = v;
        ov->cap = cap;
    }
    struct op *op = &ov->v[ov->n++];
    memset(op, 0, sizeof *op);
    return op;
}

static size_t kv_key(const struct op *op, unsigned i, char *buf, size_t cap)
{
    return (size_t)snprintf(buf, cap, "k%" PRIu32 ".%u.%" PRIu32 ".%u", op->round,
                            (unsigned)op->thread, op->seq, i);
}

static size_t row_key(const struct op *op, char *buf, size_t cap)
{
    return (size_t)snprintf(buf, cap, "w%" PRIu32 ".%u.%" PRIu32, op->round, (unsigned)op->thread,
                            op->seq);
}

static size_t col_name(unsigned i, char *buf, size_t cap)
{
    return (size_t)snprintf(buf, cap, "c%u", i);
}

/* The value of key/column i of an op: random bytes of random length, regenerated from vseed so
 * the history does not have to hold every value. One value in ten is large (up to ~4 KB): such
 * records span several sectors, so a crash can keep some of a record's sectors and not others,
 * which only the frame checksum can catch. */
static size_t op_value(const struct op *op, unsigned i, uint8_t *buf)
{
    uint64_t st = op->vseed ^ ((uint64_t)(i + 1) * 0x9E3779B97F4A7C15ull);
    uint64_t r = ud_test_rand(&st);
    size_t len =
        r % 10 == 0 ? 300 + (size_t)(r / 10 % (VALUE_MAX - 300)) : 1 + (size_t)(r / 10 % 300);
    ud_test_fill(&st, buf, len);
    return len;
}

/* ---- one round of writers ------------------------------------------------------------------ */

struct round {
    struct ud_ns *ns;
    struct ud_fs_powerloss *pl;
    uint32_t number;
    uint64_t crash_seed;
    uint64_t crash_at; /* crash when this many writes are acknowledged; 0: main thread decides */
    _Atomic uint64_t acked;
    atomic_int crashing;
    atomic_int crashed;
    atomic_int stop;
    atomic_int live_writers;
    pthread_mutex_t err_lock;
    char err[512]; /* first error seen before the crash (a failure) */
};

struct writer {
    struct round *r;
    uint16_t id;
    uint64_t rng;
    struct op_vec ops;
};

static void trigger_crash(struct round *r)
{
    int expected = 0;
    if (!atomic_compare_exchange_strong(&r->crashing, &expected, 1))
        return;
    ud_fs_powerloss_crash(r->pl, r->crash_seed);
    atomic_store(&r->crashed, 1);
    atomic_store(&r->stop, 1);
}

static void note_error(struct round *r, const char *what, int rc, const char *errmsg)
{
    pthread_mutex_lock(&r->err_lock);
    if (r->err[0] == '\0')
        snprintf(r->err, sizeof r->err, "%s: %s (%s)", what, ud_strerror(rc), errmsg);
    pthread_mutex_unlock(&r->err_lock);
}

/* Admission control may refuse a write while flushes catch up: that write was not applied, so
 * the same call is retried until the power is cut. */
#define RETRY_BUSY(r, call)                                                                        \
    __extension__({                                                                                \
        int rc_;                                                                                   \
        while ((rc_ = (call)) == UD_EBUSY && !atomic_load(&(r)->stop))                             \
            sleep_ms(1);                                                                           \
        rc_;                                                                                       \
    })

/* Performs one op; returns 0 when its final call was acknowledged, else the failing code. */
static int run_op(struct writer *w, struct op *op, char *errmsg)
{
    struct round *r = w->r;
    char key[MAX_KEYS][48];
    size_t klen[MAX_KEYS];
    uint8_t val[MAX_KEYS][VALUE_MAX + 8];
    size_t vlen[MAX_KEYS];
    uint64_t lsn = 0;
    int rc;

    for (unsigned i = 0; i < op->nkeys; i++) {
        klen[i] = kv_key(op, i, key[i], sizeof key[i]);
        vlen[i] = op_value(op, i, val[i]);
    }
    switch (op->kind) {
    case OP_KV:
        op->state = ST_PENDING;
        rc = RETRY_BUSY(r, ud_ns_kv_put(r->ns, key[0], klen[0], val[0], vlen[0], &lsn, errmsg));
        break;
    case OP_BATCH: {
        struct ud_kv items[MAX_KEYS];
        for (unsigned i = 0; i < op->nkeys; i++)
            items[i] = (struct ud_kv){(const uint8_t *)key[i], klen[i], val[i], vlen[i]};
        op->state = ST_PENDING;
        rc = RETRY_BUSY(r, ud_ns_kv_batch_put(r->ns, items, op->nkeys, &lsn, errmsg));
        break;
    }
    case OP_ROW: {
        char rk[48], cn[MAX_KEYS][8];
        struct ud_col cols[MAX_KEYS];
        size_t rkl = row_key(op, rk, sizeof rk);
        for (unsigned i = 0; i < op->nkeys; i++) {
            size_t nl = col_name(i, cn[i], sizeof cn[i]);
            cols[i] = (struct ud_col){(const uint8_t *)cn[i], nl, val[i], vlen[i]};
        }
        struct ud_row row = {(const uint8_t *)rk, rkl, cols, op->nkeys};
        op->state = ST_PENDING;
        rc = RETRY_BUSY(r, ud_ns_row_put(r->ns, &row, &lsn, errmsg));
        break;
    }
    case OP_TXN_COMMIT:
    case OP_TXN_ABORT:
        /* Nothing is visible before COMMIT: until then the op is absent whatever happens. */
        op->state = ST_ABSENT;
        op->txn_open = 1;
        rc =
            RETRY_BUSY(r, ud_ns_txn_begin(r->ns, UD_OP_PUT, UD_ENTRY_KV, op->txn_id, NULL, errmsg));
        for (unsigned i = 0; rc == 0 && i < op->nkeys; i++)
            rc = RETRY_BUSY(
                r, ud_ns_txn_kv(r->ns, op->txn_id, key[i], klen[i], val[i], vlen[i], NULL, errmsg));
        if (rc != 0)
            break;
        if (op->kind == OP_TXN_ABORT) {
            rc = RETRY_BUSY(r, ud_ns_txn_abort(r->ns, op->txn_id, &lsn, errmsg));
            if (rc == 0)
                op->txn_open = 0;
            break;
        }
        op->state = ST_PENDING;
        rc = RETRY_BUSY(r, ud_ns_txn_commit(r->ns, op->txn_id, &lsn, errmsg));
        if (rc == 0) {
            op->txn_open = 0;
            op->state = ST_ACKED;
        }
        op->lsn = rc == 0 ? lsn : 0;
        return rc;
    default:
        abort();
    }
    if (rc == 0 && op->state == ST_PENDING) {
        op->state = ST_ACKED;
        op->lsn = lsn;
    }
    return rc;
}

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    struct round *r = w->r;
    char errmsg[UD_ERRMSG_SIZE];
    uint32_t seq = 0;

    while (!atomic_load(&r->stop)) {
        struct op *op = op_push(&w->ops);
        op->round = r->number;
        op->thread = w->id;
        op->seq = seq++;
        op->vseed = ud_test_rand(&w->rng);
        unsigned pick = (unsigned)(ud_test_rand(&w->rng) % 100);
        unsigned extra = (unsigned)(ud_test_rand(&w->rng) % (MAX_KEYS - 1));
        if (pick < 70) {
            op->kind = OP_KV;
            op->nkeys = 1;
        } else if (pick < 80) {
            op->kind = OP_BATCH;
            op->nkeys = (uint8_t)(2 + extra);
        } else if (pick < 90) {
            op->kind = OP_ROW;
            op->nkeys = (uint8_t)(1 + extra);
        } else if (pick < 96) {
            op->kind = OP_TXN_COMMIT;
            op->nkeys = (uint8_t)(1 + extra);
        } else {
            op->kind = OP_TXN_ABORT;
            op->nkeys = (uint8_t)(1 + extra % 2);
        }
        errmsg[0] = '\0';
        int rc = run_op(w, op, errmsg);
        if (rc == 0) {
            if (op->state == ST_ACKED) {
                uint64_t n = atomic_fetch_add(&r->acked, 1) + 1;
                if (r->crash_at != 0 && n == r->crash_at)
                    trigger_crash(r);
            }
            continue;
        }
        /* Errors are expected once the power is cut (crashing is set before a cut from here
         * starts, and a cut inside a sync marks the layer dead before that sync returns, so an
         * error seen while both are clear cannot come from the crash). */
        if (!atomic_load(&r->crashing) && !ud_fs_powerloss_dead(r->pl))
            note_error(r, "write before the crash", rc, errmsg);
        break;
    }
    atomic_fetch_sub(&r->live_writers, 1);
    return NULL;
}

/* ---- checks after recovery ------------------------------------------------------------------ */

struct totals {
    uint64_t rounds;
    uint64_t acked;           /* writes acknowledged */
    uint64_t checked;         /* ops checked against the recovered namespace (with repeats) */
    uint64_t checked_acked;   /* of which acknowledged or resolved present */
    uint64_t lost;            /* acknowledged but absent */
    uint64_t wrong;           /* present with another value or LSN */
    uint64_t partial;         /* multi-key write partly visible */
    uint64_t resurrected;     /* must be absent, found present */
    uint64_t pending_present; /* unknown outcome, found present */
    uint64_t pending_absent;  /* unknown outcome, found absent */
    uint64_t wal_records;     /* WAL records checked for density and LSN field */
    uint64_t wal_matched;     /* acknowledged LSNs whose WAL record was matched */
    uint64_t wal_anomalies;   /* gaps, bad LSN fields, undecodable records, mismatches */
    uint64_t open_failures;   /* recovery refused to open */
    uint64_t rounds_with_loss;
    uint64_t flushed_ops; /* records flushed to LMDB during the writer phases */
    uint64_t rotations;   /* active segment id increases seen */
    uint64_t syncs;
    uint64_t prepares;
    uint64_t crashes_in_sync; /* rounds whose power cut happened inside a WAL sync */
    uint64_t sectors_kept;
    uint64_t sectors_dropped;
    uint64_t recovered_txns_aborted;
};

enum outcome { OUT_PRESENT, OUT_ABSENT, OUT_PARTIAL, OUT_WRONG, OUT_ERROR };

struct row_check {
    const struct op *op;
    unsigned seen;
    int bad;
    uint64_t lsn;
};

static int row_col_cb(void *arg, const uint8_t *name, size_t name_len, const uint8_t *value,
                      size_t value_len, uint64_t lsn)
{
    struct row_check *rc = arg;
    uint8_t want[VALUE_MAX + 8];
    char cn[8];
    unsigned i = rc->seen;
    if (i >= rc->op->nkeys) {
        rc->bad = 1;
        return 0;
    }
    size_t nl = col_name(i, cn, sizeof cn);
    size_t wl = op_value(rc->op, i, want);
    if (name_len != nl || memcmp(name, cn, nl) != 0 || value_len != wl ||
        memcmp(value, want, wl) != 0)
        rc->bad = 1;
    if (i == 0)
        rc->lsn = lsn;
    else if (lsn != rc->lsn)
        rc->bad = 1;
    rc->seen++;
    return 0;
}

/* Reads an op back. *lsn gets the LSN the namespace reports for it (0 for transactions, whose
 * per-key LSN the engine may report as the PREPARE's or the COMMIT's). */
static enum outcome read_op(struct ud_ns *ns, const struct op *op, uint64_t *lsn, char *why,
                            size_t why_len)
{
    *lsn = 0;
    if (op->kind == OP_ROW) {
        char rk[48];
        size_t rkl = row_key(op, rk, sizeof rk);
        struct ud_row row = {(const uint8_t *)rk, rkl, NULL, 0};
        struct row_check chk = {op, 0, 0, 0};
        int rc = ud_ns_row_get(ns, &row, row_col_cb, &chk);
        if (rc == UD_ENOTFOUND)
            return OUT_ABSENT;
        if (rc != 0) {
            snprintf(why, why_len, "row_get %s: %s", rk, ud_strerror(rc));
            return OUT_ERROR;
        }
        *lsn = chk.lsn;
        if (chk.bad) {
            snprintf(why, why_len, "row %s: wrong column, value or LSN", rk);
            return OUT_WRONG;
        }
        if (chk.seen != op->nkeys) {
            snprintf(why, why_len, "row %s: %u of %u columns", rk, chk.seen, op->nkeys);
            return OUT_PARTIAL;
        }
        return OUT_PRESENT;
    }

    unsigned found = 0;
    uint64_t first_lsn = 0;
    struct ud_buf val = {0};
    uint8_t want[VALUE_MAX + 8];
    enum outcome out = OUT_PRESENT;
    for (unsigned i = 0; i < op->nkeys; i++) {
        char key[48];
        size_t kl = kv_key(op, i, key, sizeof key);
        uint64_t klsn = 0;
        val.len = 0;
        int rc = ud_ns_kv_get(ns, key, kl, &val, &klsn);
        if (rc == UD_ENOTFOUND)
            continue;
        if (rc != 0) {
            snprintf(why, why_len, "kv_get %s: %s", key, ud_strerror(rc));
            out = OUT_ERROR;
            break;
        }
        size_t wl = op_value(op, i, want);
        if (val.len != wl || memcmp(val.data, want, wl) != 0) {
            snprintf(why, why_len, "key %s: value of %zu bytes differs (want %zu)", key, val.len,
                     wl);
            out = OUT_WRONG;
            break;
        }
        if (found == 0)
            first_lsn = klsn;
        else if (klsn != first_lsn && op->kind != OP_TXN_COMMIT) {
            snprintf(why, why_len, "key %s: LSN %" PRIu64 " differs from the batch's %" PRIu64, key,
                     klsn, first_lsn);
            out = OUT_WRONG;
            break;
        }
        found++;
    }
    ud_buf_free(&val);
    if (out != OUT_PRESENT)
        return out;
    if (found == 0)
        return OUT_ABSENT;
    if (found != op->nkeys) {
        snprintf(why, why_len, "op k%" PRIu32 ".%u.%" PRIu32 ": %u of %u keys visible", op->round,
                 (unsigned)op->thread, op->seq, found, op->nkeys);
        return OUT_PARTIAL;
    }
    *lsn = op->kind == OP_TXN_COMMIT ? 0 : first_lsn;
    return OUT_PRESENT;
}

struct checker {
    struct totals *t;
    int expect_loss; /* control: count problems instead of failing */
    unsigned printed;
    uint64_t problems;
};

static void problem(struct checker *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void problem(struct checker *c, const char *fmt, ...)
{
    c->problems++;
    if (c->printed++ >= 10)
        return;
    va_list ap;
    va_start(ap, fmt);
    printf("# %s", c->expect_loss ? "control: " : "FAIL: ");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    fflush(stdout);
}

/* Checks one op against the recovered namespace and resolves unknown outcomes. */
static void check_op(struct checker *c, struct ud_ns *ns, struct op *op)
{
    char why[256] = "";
    uint64_t lsn = 0;
    enum outcome out = read_op(ns, op, &lsn, why, sizeof why);
    c->t->checked++;
    if (out == OUT_ERROR || out == OUT_WRONG || out == OUT_PARTIAL) {
        if (out == OUT_PARTIAL)
            c->t->partial++;
        else
            c->t->wrong++;
        problem(c, "round %" PRIu32 " op %u.%" PRIu32 " kind %u state %u: %s", op->round,
                (unsigned)op->thread, op->seq, op->kind, op->state, why);
        return;
    }
    switch (op->state) {
    case ST_ACKED:
    case ST_PRESENT:
        c->t->checked_acked++;
        if (out == OUT_ABSENT) {
            c->t->lost++;
            problem(c,
                    "%s write lost: round %" PRIu32 " thread %u seq %" PRIu32
                    " kind %u LSN %" PRIu64,
                    op->state == ST_ACKED ? "acknowledged" : "recovered", op->round,
                    (unsigned)op->thread, op->seq, op->kind, op->lsn);
        } else if (op->lsn != 0 && lsn != 0 && lsn != op->lsn) {
            c->t->wrong++;
            problem(c,
                    "round %" PRIu32 " op %u.%" PRIu32 ": LSN %" PRIu64 ", acknowledged %" PRIu64,
                    op->round, (unsigned)op->thread, op->seq, lsn, op->lsn);
        }
        break;
    case ST_ABSENT:
        if (out == OUT_PRESENT) {
            c->t->resurrected++;
            problem(c, "round %" PRIu32 " op %u.%" PRIu32 " kind %u must be absent, is visible",
                    op->round, (unsigned)op->thread, op->seq, op->kind);
        }
        break;
    case ST_PENDING:
        if (out == OUT_PRESENT) {
            op->state = ST_PRESENT;
            op->lsn = lsn;
            c->t->pending_present++;
        } else {
            op->state = ST_ABSENT;
            c->t->pending_absent++;
        }
        break;
    default:
        abort();
    }
}

static int cmp_op_lsn(const void *a, const void *b)
{
    const struct op *x = *(const struct op *const *)a, *y = *(const struct op *const *)b;
    return x->lsn < y->lsn ? -1 : x->lsn > y->lsn;
}

/* Does the WAL record at an op's LSN describe that op? */
static int record_matches(const struct op *op, const uint8_t *data, uint32_t len)
{
    struct ud_record rec;
    if (ud_record_decode(data, len, &rec, NULL) != 0)
        return 0;
    if (op->kind == OP_TXN_COMMIT)
        return rec.txn_state == UD_TXN_COMMIT;
    if (rec.txn_state != UD_TXN_NONE || rec.op != UD_OP_PUT)
        return 0;
    if (op->kind == OP_ROW ? rec.entry_type != UD_ENTRY_ROW || rec.entry_count != 1
                           : rec.entry_type != UD_ENTRY_KV || rec.entry_count != op->nkeys)
        return 0;
    struct ud_entry_iter it;
    struct ud_entry e;
    ud_entry_iter_init(&it, &rec);
    if (!ud_entry_iter_next(&it, &e))
        return 0;
    char key[48];
    size_t kl = op->kind == OP_ROW ? row_key(op, key, sizeof key) : kv_key(op, 0, key, sizeof key);
    if (op->kind == OP_ROW && e.column_count != op->nkeys)
        return 0;
    return e.key_len == kl && memcmp(e.key, key, kl) == 0;
}

/*
 * Opens {dir}/wal directly (the namespace is closed) and checks: LSNs dense from first to last,
 * each record's LSN field equal to its position's LSN, every record decodes, and the record at
 * each known op LSN is that op's. *last_out gets the last LSN.
 */
static void check_wal(struct checker *c, const char *ns_dir, uint64_t segment_size,
                      struct op_vec *hist, uint64_t *first_out, uint64_t *last_out)
{
    char path[4096], errmsg[UD_ERRMSG_SIZE] = "";
    snprintf(path, sizeof path, "%s/wal", ns_dir);
    struct ud_wal_options wo = {.dir = path, .segment_size = segment_size};
    struct ud_wal *wal = NULL;
    int rc = ud_wal_open(&wo, &wal, errmsg);
    if (rc != 0) {
        c->t->wal_anomalies++;
        problem(c, "wal open %s: %s (%s)", path, ud_strerror(rc), errmsg);
        return;
    }
    struct ud_wal_stats ws;
    ud_wal_stats(wal, &ws);
    *first_out = ws.first_lsn;
    *last_out = ws.last_lsn;

    /* The known LSNs inside the retained range, in LSN order. */
    size_t nk = 0;
    struct op **known = malloc((hist->n + 1) * sizeof *known);
    if (known == NULL)
        abort();
    for (size_t i = 0; i < hist->n; i++) {
        struct op *op = &hist->v[i];
        if ((op->state == ST_ACKED || op->state == ST_PRESENT) && op->lsn >= ws.first_lsn &&
            op->lsn != 0)
            known[nk++] = op;
    }
    qsort(known, nk, sizeof *known, cmp_op_lsn);
    for (size_t i = 1; i < nk; i++) {
        if (known[i]->lsn == known[i - 1]->lsn) {
            c->t->wal_anomalies++;
            problem(c, "two acknowledged writes share LSN %" PRIu64, known[i]->lsn);
        }
    }

    struct ud_wal_reader *rd = NULL;
    rc = ud_wal_reader_open(wal, ws.first_lsn, UD_WAL_READ_UNDURABLE, &rd);
    if (rc != 0) {
        c->t->wal_anomalies++;
        problem(c, "wal reader at %" PRIu64 ": %s", ws.first_lsn, ud_strerror(rc));
        goto out;
    }
    uint64_t expect = ws.first_lsn;
    size_t k = 0;
    for (;;) {
        const uint8_t *data;
        uint32_t len;
        uint64_t lsn;
        rc = ud_wal_reader_next(rd, &data, &len, &lsn);
        if (rc == UD_EAGAIN)
            break;
        if (rc != 0) {
            c->t->wal_anomalies++;
            problem(c, "wal read after LSN %" PRIu64 ": %s", expect - 1, ud_strerror(rc));
            break;
        }
        c->t->wal_records++;
        if (lsn != expect) {
            c->t->wal_anomalies++;
            problem(c, "wal LSN %" PRIu64 " where %" PRIu64 " was expected (gap or duplicate)", lsn,
                    expect);
        }
        if (len < UD_RECORD_HEADER_SIZE || ud_record_get_lsn(data) != lsn) {
            c->t->wal_anomalies++;
            problem(c, "wal record at LSN %" PRIu64 " carries LSN %" PRIu64, lsn,
                    len >= UD_RECORD_HEADER_SIZE ? ud_record_get_lsn(data) : 0);
        } else {
            struct ud_record rec;
            char derr[UD_ERRMSG_SIZE] = "";
            if (ud_record_decode(data, len, &rec, derr) != 0) {
                c->t->wal_anomalies++;
                problem(c, "wal record at LSN %" PRIu64 " does not decode: %s", lsn, derr);
            }
        }
        while (k < nk && known[k]->lsn < lsn)
            k++;
        if (k < nk && known[k]->lsn == lsn) {
            if (record_matches(known[k], data, len)) {
                c->t->wal_matched++;
            } else {
                c->t->wal_anomalies++;
                problem(c, "wal record at LSN %" PRIu64 " is not the write acknowledged there",
                        lsn);
            }
        }
        expect = lsn + 1;
    }
    if (expect != ws.last_lsn + 1) {
        c->t->wal_anomalies++;
        problem(c, "wal ends at LSN %" PRIu64 ", stats say last %" PRIu64, expect - 1, ws.last_lsn);
    }
    if (nk > 0 && known[nk - 1]->lsn > ws.last_lsn) {
        c->t->wal_anomalies++;
        problem(c, "acknowledged LSN %" PRIu64 " is beyond the WAL's last %" PRIu64,
                known[nk - 1]->lsn, ws.last_lsn);
    }
    ud_wal_reader_close(rd);
out:
    free(known);
    ud_wal_close(wal);
}

/* ---- the harness ---------------------------------------------------------------------------- */

struct harness_cfg {
    const char *tag;
    unsigned fs_flags; /* UD_FS_POWERLOSS_LYING for the control */
    unsigned rounds;
    int expect_loss;        /* control: losses are counted, not failures */
    int fresh_each_round;   /* start every round from an empty namespace */
    size_t memtable_bytes;  /* small: flushes during the round */
    uint64_t segment_size;  /* small: rotations during the round */
    uint32_t keep_segments; /* WAL retention */
};

static uint64_t test_seed(void)
{
    const char *s = getenv("UD_TEST_SEED");
    if (s != NULL && s[0] != '\0')
        return strtoull(s, NULL, 0);
    return (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
}

static unsigned env_uint(const char *name, unsigned dflt)
{
    const char *s = getenv(name);
    return s != NULL && s[0] != '\0' ? (unsigned)strtoul(s, NULL, 10) : dflt;
}

static void engine_opts(const struct harness_cfg *cfg, const char *dir, struct ud_fs *fs,
                        struct ud_engine_options *o)
{
    memset(o, 0, sizeof *o);
    o->dir = dir;
    o->name = cfg->tag;
    o->sync_mode = UD_WAL_SYNC_ALWAYS;
    o->segment_size = cfg->segment_size;
    o->memtable_bytes = cfg->memtable_bytes;
    o->retention.max_segments = cfg->keep_segments;
    o->map_size = 256u << 20;
    o->fs = fs;
}

/* Runs the writers on a fresh power-loss layer until the crash, then closes the namespace. */
static void writer_phase(const struct harness_cfg *cfg, const char *dir, uint32_t number,
                         uint64_t *rng, struct op_vec *hist, struct totals *t, uint64_t *acked_out)
{
    struct round r;
    memset(&r, 0, sizeof r);
    pthread_mutex_init(&r.err_lock, NULL);
    r.number = number;
    r.crash_seed = ud_test_rand(rng);
    assert_int_equal(ud_fs_powerloss_new(cfg->fs_flags, &r.pl), 0);

    struct ud_engine_options o;
    char errmsg[UD_ERRMSG_SIZE] = "";
    engine_opts(cfg, dir, ud_fs_powerloss_fs(r.pl), &o);
    wd_arm("open before the writers", 60);
    int rc = ud_ns_open(&o, &r.ns, errmsg);
    wd_disarm();
    if (rc != 0)
        fail_msg("round %" PRIu32 ": open: %s (%s)", number, ud_strerror(rc), errmsg);
    struct ud_ns_stats before;
    ud_ns_stats(r.ns, &before);

    /* A third of the rounds crash when the N-th write is acknowledged (from inside a writer, so
     * other writers are mid-call), a third inside the N-th sync of the WAL (the power fails
     * during an fsync, with a whole group commit unsynced), the others after a random short
     * delay. */
    unsigned mode = (unsigned)(ud_test_rand(rng) % 3);
    int by_delay = mode == 2;
    r.crash_at = mode == 0 ? MIN_ACKED_PER_ROUND + ud_test_rand(rng) % 1500 : 0;
    if (mode == 1)
        ud_fs_powerloss_crash_at_sync(r.pl, 3 * MIN_ACKED_PER_ROUND + ud_test_rand(rng) % 1000,
                                      r.crash_seed);
    struct writer w[WRITERS];
    pthread_t th[WRITERS];
    atomic_store(&r.live_writers, WRITERS);
    for (int i = 0; i < WRITERS; i++) {
        memset(&w[i], 0, sizeof w[i]);
        w[i].r = &r;
        w[i].id = (uint16_t)i;
        w[i].rng = ud_test_rand(rng) | 1;
        assert_int_equal(pthread_create(&th[i], NULL, writer_main, &w[i]), 0);
    }

    wd_arm("writers reaching the crash point", 60);
    uint64_t delay_ms = ud_test_rand(rng) % 25;
    while (!atomic_load(&r.crashed) && !ud_fs_powerloss_dead(r.pl) &&
           atomic_load(&r.live_writers) > 0) {
        if (by_delay && atomic_load(&r.acked) >= MIN_ACKED_PER_ROUND) {
            sleep_ms((unsigned)delay_ms);
            break;
        }
        sleep_ms(1);
    }
    struct ud_ns_stats mid;
    ud_ns_stats(r.ns, &mid);
    int died_in_sync = mode == 1 && ud_fs_powerloss_dead(r.pl);
    trigger_crash(&r);
    wd_arm("writers stopping after the crash", 30);
    for (int i = 0; i < WRITERS; i++)
        pthread_join(th[i], NULL);
    wd_arm("namespace close after the crash", 30);
    ud_ns_close(r.ns);
    wd_disarm();

    struct ud_fs_powerloss_stats ps;
    ud_fs_powerloss_stats(r.pl, &ps);
    ud_fs_powerloss_free(r.pl);
    t->syncs += ps.syncs;
    t->prepares += ps.prepares;
    t->crashes_in_sync += died_in_sync;
    t->sectors_kept += ps.sectors_kept;
    t->sectors_dropped += ps.sectors_dropped;
    t->flushed_ops += mid.ops_flushed;
    if (mid.segment_id > before.segment_id)
        t->rotations += mid.segment_id - before.segment_id;

    for (int i = 0; i < WRITERS; i++) {
        for (size_t j = 0; j < w[i].ops.n; j++)
            *op_push(hist) = w[i].ops.v[j];
        free(w[i].ops.v);
    }
    *acked_out = atomic_load(&r.acked);
    t->acked += *acked_out;
    pthread_mutex_destroy(&r.err_lock);
    if (r.err[0] != '\0')
        fail_msg("round %" PRIu32 ": %s", number, r.err);
    if (!cfg->expect_loss && *acked_out < MIN_ACKED_PER_ROUND)
        fail_msg("round %" PRIu32 ": only %" PRIu64 " writes acknowledged", number, *acked_out);
}

/*
 * Recovery phase: reopens the namespace from the disk files, checks the ops (this round's all,
 * older ones all every 20 rounds and at the end, else a sample), aborts transactions the crash
 * left open, checks that the next write gets last + 1, closes, then checks the WAL directly.
 * Returns the number of problems found.
 */
static uint64_t recovery_phase(const struct harness_cfg *cfg, const char *dir, uint32_t number,
                               uint64_t *rng, struct op_vec *hist, size_t round_begin,
                               int check_all, struct totals *t)
{
    struct checker c = {t, cfg->expect_loss, 0, 0};
    struct ud_fs_powerloss *pl = NULL;
    /* Alternate the recovering file layer: POSIX is the production path (mmap), a fresh
     * power-loss layer reads the same disk files through the test's own model. */
    int use_posix = number % 2 == 1;
    if (!use_posix)
        assert_int_equal(ud_fs_powerloss_new(0, &pl), 0);

    struct ud_engine_options o;
    char errmsg[UD_ERRMSG_SIZE] = "";
    engine_opts(cfg, dir, use_posix ? NULL : ud_fs_powerloss_fs(pl), &o);
    struct ud_ns *ns = NULL;
    wd_arm("recovery open", 60);
    int rc = ud_ns_open(&o, &ns, errmsg);
    wd_disarm();
    if (rc != 0) {
        t->open_failures++;
        problem(&c, "round %" PRIu32 ": recovery open: %s (%s)", number, ud_strerror(rc), errmsg);
        ud_fs_powerloss_free(pl);
        return c.problems + 1;
    }

    for (size_t i = round_begin; i < hist->n; i++)
        check_op(&c, ns, &hist->v[i]);
    if (check_all) {
        for (size_t i = 0; i < round_begin; i++)
            check_op(&c, ns, &hist->v[i]);
    } else if (round_begin > 0) {
        for (int i = 0; i < 300; i++)
            check_op(&c, ns, &hist->v[ud_test_rand(rng) % round_begin]);
    }

    /* A crash leaves transactions open (BEGIN logged, no COMMIT/ABORT); a new leader would abort
     * them. Doing the same keeps WAL retention moving and checks abort of recovered state. */
    for (size_t i = round_begin; i < hist->n; i++) {
        struct op *op = &hist->v[i];
        if (!op->txn_open)
            continue;
        rc = ud_ns_txn_abort(ns, op->txn_id, NULL, errmsg);
        if (rc == 0)
            t->recovered_txns_aborted++;
        else if (rc != UD_ENOTFOUND)
            problem(&c, "round %" PRIu32 ": abort of a recovered transaction: %s (%s)", number,
                    ud_strerror(rc), errmsg);
        op->txn_open = 0;
    }
    struct ud_ns_stats st;
    ud_ns_stats(ns, &st);
    if (st.open_txns != 0)
        problem(&c, "round %" PRIu32 ": %u transactions still open after cleanup", number,
                st.open_txns);

    /* Writing after recovery continues at last + 1. */
    struct op *probe = op_push(hist);
    probe->round = number;
    probe->thread = PROBE_THREAD;
    probe->kind = OP_KV;
    probe->nkeys = 1;
    probe->vseed = ud_test_rand(rng);
    probe->state = ST_PENDING;
    char key[48];
    uint8_t val[VALUE_MAX + 8];
    size_t kl = kv_key(probe, 0, key, sizeof key);
    size_t vl = op_value(probe, 0, val);
    uint64_t lsn = 0;
    rc = ud_ns_kv_put(ns, key, kl, val, vl, &lsn, errmsg);
    if (rc != 0) {
        problem(&c, "round %" PRIu32 ": write after recovery: %s (%s)", number, ud_strerror(rc),
                errmsg);
    } else {
        probe->state = ST_ACKED;
        probe->lsn = lsn;
        t->acked++;
        if (lsn != st.last_lsn + 1)
            problem(&c,
                    "round %" PRIu32 ": write after recovery got LSN %" PRIu64 ", want %" PRIu64,
                    number, lsn, st.last_lsn + 1);
    }
    /* Now and then a full flush (memtable to LMDB, then retention) between crashes. */
    if (number % 10 == 9 && (rc = ud_ns_flush(ns, errmsg)) != 0)
        problem(&c, "round %" PRIu32 ": flush: %s (%s)", number, ud_strerror(rc), errmsg);
    wd_arm("close after recovery", 60);
    ud_ns_close(ns);
    wd_disarm();
    ud_fs_powerloss_free(pl);

    uint64_t first = 0, last = 0;
    check_wal(&c, dir, cfg->segment_size, hist, &first, &last);
    if (probe->state == ST_ACKED && last != probe->lsn)
        problem(&c, "round %" PRIu32 ": WAL ends at %" PRIu64 ", the last write was %" PRIu64,
                number, last, probe->lsn);
    return c.problems;
}

static void run_harness(const struct harness_cfg *cfg, struct totals *t)
{
    uint64_t seed = test_seed();
    uint64_t rng = seed | 1;
    printf("# %s: seed %" PRIu64 " (set UD_TEST_SEED to reuse), %u rounds\n", cfg->tag, seed,
           cfg->rounds);
    fflush(stdout);

    char *base = ud_test_tmpdir(cfg->tag);
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/ns", base);
    struct op_vec hist = {0};
    memset(t, 0, sizeof *t);

    for (uint32_t n = 0; n < cfg->rounds; n++) {
        if (cfg->fresh_each_round) {
            ud_test_rmtree(dir);
            hist.n = 0;
        }
        size_t round_begin = hist.n;
        uint64_t acked = 0;
        writer_phase(cfg, dir, n, &rng, &hist, t, &acked);
        uint64_t lost_before = t->lost, failures_before = t->open_failures;
        int check_all = n % 20 == 19 || n + 1 == cfg->rounds;
        uint64_t problems = recovery_phase(cfg, dir, n, &rng, &hist, round_begin, check_all, t);
        t->rounds++;
        /* A round loses acknowledged data when one is absent or the namespace cannot be
         * recovered at all. */
        if (t->lost > lost_before || t->open_failures > failures_before)
            t->rounds_with_loss++;
        if (!cfg->expect_loss && problems > 0)
            fail_msg("round %" PRIu32 ": %" PRIu64 " problems (see the diagnostics above); "
                     "namespace kept in %s",
                     n, problems, dir);
        if (cfg->expect_loss && n < 5)
            printf("# %s round %" PRIu32 ": %" PRIu64 " acknowledged, %" PRIu64 " problems\n",
                   cfg->tag, n, acked, problems);
    }
    printf("# %s: %" PRIu64 " rounds (simulated power losses), %" PRIu64
           " writes acknowledged, %" PRIu64 " read-back checks with repeats (%" PRIu64
           " of acknowledged/recovered writes), %" PRIu64 " in-flight writes recovered, %" PRIu64
           " in-flight lost\n",
           cfg->tag, t->rounds, t->acked, t->checked, t->checked_acked, t->pending_present,
           t->pending_absent);
    printf("# %s: WAL %" PRIu64 " records checked dense, %" PRIu64 " acknowledged LSNs matched; "
           "%" PRIu64 " ops flushed to LMDB, %" PRIu64 " segment rotations, %" PRIu64
           " recovered transactions aborted\n",
           cfg->tag, t->wal_records, t->wal_matched, t->flushed_ops, t->rotations,
           t->recovered_txns_aborted);
    printf("# %s: layer %" PRIu64 " syncs, %" PRIu64 " ranges readied ahead, %" PRIu64
           " crashes inside a sync, at crashes %" PRIu64 " sectors kept, %" PRIu64 " dropped\n",
           cfg->tag, t->syncs, t->prepares, t->crashes_in_sync, t->sectors_kept,
           t->sectors_dropped);
    printf("# %s: lost %" PRIu64 ", wrong %" PRIu64 ", partial %" PRIu64 ", resurrected %" PRIu64
           ", WAL anomalies %" PRIu64 ", failed recoveries %" PRIu64 ", rounds with loss %" PRIu64
           "\n",
           cfg->tag, t->lost, t->wrong, t->partial, t->resurrected, t->wal_anomalies,
           t->open_failures, t->rounds_with_loss);
    fflush(stdout);
    free(hist.v);
    ud_test_rmtree(base);
    free(base);
}

/* ---- test cases ------------------------------------------------------------------------------ */

static int read_disk(const char *path, uint8_t *buf, size_t len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return -1;
    size_t n = fread(buf, 1, len, f);
    fclose(f);
    return n == len ? 0 : -1;
}

/* The layer itself: synced bytes survive, unsynced sectors are all-old or all-new, a dead layer
 * writes nothing, the lying mode writes nothing. */
static void test_layer_model(void **state)
{
    (void)state;
    enum { SIZE = 8 * UD_FS_POWERLOSS_SECTOR };
    char *base = ud_test_tmpdir("pl-layer");
    char path[4096], errmsg[UD_ERRMSG_SIZE];
    uint64_t kept = 0, dropped = 0;
    static uint8_t disk[SIZE];

    for (unsigned seed = 1; seed <= 40; seed++) {
        struct ud_fs_powerloss *pl;
        assert_int_equal(ud_fs_powerloss_new(0, &pl), 0);
        struct ud_fs *fs = ud_fs_powerloss_fs(pl);
        struct ud_fs_file *f;
        uint8_t *map;
        uint64_t msize;
        snprintf(path, sizeof path, "%s/f%u", base, seed);
        assert_int_equal(fs->open(fs, path, 1, SIZE, &f, &map, &msize, errmsg), 0);
        assert_int_equal(msize, SIZE);
        for (size_t i = 0; i < SIZE; i++)
            assert_int_equal(map[i], 0);
        memset(map, 0xAA, SIZE);
        /* Sync a range that ends inside sector 2: bytes [1000, 1536) stay unsynced. */
        assert_int_equal(fs->sync(fs, f, 0, 1000, errmsg), 0);
        map[10] = 0x55; /* sector 0 changes again after its sync */
        assert_int_equal(read_disk(path, disk, SIZE), 0);
        assert_int_equal(disk[999], 0xAA);
        assert_int_equal(disk[1000], 0);

        assert_int_equal(ud_fs_powerloss_crash(pl, seed), 0);
        assert_true(ud_fs_powerloss_dead(pl));
        assert_int_equal(fs->sync(fs, f, 0, SIZE, errmsg), UD_EIO);
        struct ud_fs_file *g;
        uint8_t *gm;
        uint64_t gs;
        assert_int_equal(fs->open(fs, path, 0, 0, &g, &gm, &gs, errmsg), UD_EIO);
        fs->close(fs, f);

        assert_int_equal(read_disk(path, disk, SIZE), 0);
        /* Sector 0: synced 0xAA everywhere, byte 10 old (0xAA) or new (0x55) as a unit. */
        for (size_t i = 0; i < UD_FS_POWERLOSS_SECTOR; i++)
            if (i != 10)
                assert_int_equal(disk[i], 0xAA);
        assert_true(disk[10] == 0xAA || disk[10] == 0x55);
        /* Sector 1: fully synced. */
        for (size_t i = 512; i < 1000; i++)
            assert_int_equal(disk[i], 0xAA);
        /* Sector 1 tail and sectors 2..7: each all old (0) or all new (0xAA) from its start. */
        for (size_t s = 1; s < 8; s++) {
            size_t from = s == 1 ? 1000 : s * UD_FS_POWERLOSS_SECTOR;
            size_t to = (s + 1) * UD_FS_POWERLOSS_SECTOR;
            uint8_t v = disk[from];
            assert_true(v == 0 || v == 0xAA);
            for (size_t i = from; i < to; i++)
                assert_int_equal(disk[i], v);
        }
        struct ud_fs_powerloss_stats ps;
        ud_fs_powerloss_stats(pl, &ps);
        assert_int_equal(ps.sectors_kept + ps.sectors_dropped, 8); /* 0, 1 (tail), 2..7 */
        assert_int_equal(ps.syncs, 1);
        assert_int_equal(ps.failed_syncs, 1);
        assert_int_equal(ps.open_files, 0);
        kept += ps.sectors_kept;
        dropped += ps.sectors_dropped;
        ud_fs_powerloss_free(pl);
    }
    assert_true(kept > 0);
    assert_true(dropped > 0);

    /* Reopening reads the disk file; create of an existing file and open of a missing one fail
     * as the contract says. */
    struct ud_fs_powerloss *pl;
    assert_int_equal(ud_fs_powerloss_new(UD_FS_POWERLOSS_LYING, &pl), 0);
    struct ud_fs *fs = ud_fs_powerloss_fs(pl);
    struct ud_fs_file *f;
    uint8_t *map;
    uint64_t msize;
    snprintf(path, sizeof path, "%s/f1", base);
    assert_int_equal(fs->open(fs, path, 1, SIZE, &f, &map, &msize, errmsg), UD_EEXIST);
    assert_int_equal(fs->open(fs, path, 0, 0, &f, &map, &msize, errmsg), 0);
    assert_int_equal(msize, SIZE);
    assert_int_equal(map[512], 0xAA);
    /* Lying mode: the sync succeeds and writes nothing. */
    memset(map, 0x11, SIZE);
    assert_int_equal(fs->sync(fs, f, 0, SIZE, errmsg), 0);
    assert_int_equal(read_disk(path, disk, SIZE), 0);
    assert_int_equal(disk[512], 0xAA);
    fs->close(fs, f);
    snprintf(path, sizeof path, "%s/missing", base);
    assert_int_equal(fs->open(fs, path, 0, 0, &f, &map, &msize, errmsg), UD_ENOTFOUND);
    ud_fs_powerloss_free(pl);
    printf("# layer: 40 crashes, %" PRIu64 " unsynced sectors kept, %" PRIu64 " dropped\n", kept,
           dropped);
    ud_test_rmtree(base);
    free(base);
}

static void test_powerloss(void **state)
{
    (void)state;
    struct harness_cfg cfg = {
        .tag = "powerloss",
        .fs_flags = 0,
        .rounds = env_uint("UD_POWERLOSS_ROUNDS", 200),
        .expect_loss = 0,
        .fresh_each_round = 0,
        .memtable_bytes = 256u << 10,
        .segment_size = 256u << 10,
        .keep_segments = 2,
    };
    struct totals t;
    run_harness(&cfg, &t);
    assert_int_equal(t.rounds, cfg.rounds);
    assert_true(t.acked >= (uint64_t)cfg.rounds * MIN_ACKED_PER_ROUND);
    assert_true(t.checked_acked >= t.acked);
    assert_int_equal(t.lost + t.wrong + t.partial + t.resurrected + t.wal_anomalies, 0);
    assert_int_equal(t.open_failures, 0);
    /* The rounds exercised what they claim to: crashes that lost sectors, flushes, rotations. */
    if (cfg.rounds >= 50) {
        assert_true(t.sectors_dropped > 0);
        assert_true(t.flushed_ops > 0);
        assert_true(t.rotations > 0);
        assert_true(t.wal_matched > 0);
    }
}

static void test_control_without_fsync(void **state)
{
    (void)state;
    struct harness_cfg cfg = {
        .tag = "control-no-fsync",
        .fs_flags = UD_FS_POWERLOSS_LYING,
        .rounds = env_uint("UD_POWERLOSS_CONTROL_ROUNDS", 20),
        .expect_loss = 1,
        .fresh_each_round = 1,
        .memtable_bytes = 64u << 20,
        .segment_size = 1u << 20,
        .keep_segments = 0,
    };
    struct totals t;
    run_harness(&cfg, &t);
    printf("# control: without fsync, %" PRIu64 " of %" PRIu64 " rounds lost acknowledged data "
           "(%" PRIu64 " acknowledged writes lost, %" PRIu64 " failed recoveries)\n",
           t.rounds_with_loss, t.rounds, t.lost, t.open_failures);
    fflush(stdout);
    assert_true(t.acked > 0);
    assert_true(t.rounds_with_loss > 0);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layer_model),
        cmocka_unit_test(test_powerloss),
        cmocka_unit_test(test_control_without_fsync),
    };
    return cmocka_run_group_tests_name("powerloss", tests, NULL, NULL);
}
