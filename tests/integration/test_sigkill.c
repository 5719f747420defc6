/* SIGKILL recovery test: a writer process killed at random points keeps every acknowledged write.
 */

/*
 * Notes.
 *
 * What it proves, and what it does not. 30 times, the driver starts crash_writer (argv[1]) on the
 * same namespace directory, lets it write from 4 threads for a random 50-500 ms after it reported
 * "ready" (and until it acknowledged at least MIN_ACKS writes), kills it with SIGKILL by PID, and
 * then opens the namespace in this process. That open must succeed (the dead process's lock is
 * released by the kernel) and recovery must give back every write the writer printed as
 * acknowledged, with its exact value and LSN, rows with all their columns, aborted transactions
 * invisible, dense LSNs in the WAL (no gap, no duplicate, each record's LSN field equal to its
 * position) with the acknowledged record at each acknowledged LSN, and the next write at last + 1.
 * While a writer runs, an in-process open is refused with UD_ELOCKED (checked every 5th round).
 *
 * A killed process's page cache survives, so a writer that never fsyncs would pass this test:
 * it proves recovery and framing (torn frames at the kill point, memtable replay, LMDB checkpoint
 * plus WAL replay, lock release), not durability. Durability is test_powerloss.c's job.
 */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/engine.h"
#include "core/err.h"
#include "core/wal.h"
#include "proto/record.h"
#include "tests/lib/testutil.h"

#define ROUNDS    30
#define MIN_ACKS  10
#define VALUE_MAX 200
#define KEY_MAX   64

extern char **environ;
static const char *g_writer_path;

/* Same definition as in crash_writer.c: the value stored under key. */
static size_t test_value(const char *key, size_t key_len, uint8_t *buf)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < key_len; i++)
        h = (h ^ (uint8_t)key[i]) * 0x100000001b3ull;
    size_t len = 1 + (size_t)(ud_test_rand(&h) % VALUE_MAX);
    ud_test_fill(&h, buf, len);
    return len;
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* One acknowledged write. kind is the key's first letter: k (KV put), r (row put with columns
 * c0..c2), a (aborted transaction: must stay invisible), p (the driver's own write after
 * recovery, a KV put). */
struct ack {
    uint64_t lsn;
    char key[KEY_MAX];
};

struct ack_vec {
    struct ack *v;
    size_t n;
    size_t cap;
};

static void ack_push(struct ack_vec *av, uint64_t lsn, const char *key)
{
    if (av->n == av->cap) {
        size_t cap = av->cap ? av->cap * 2 : 4096;
        struct ack *v = realloc(av->v, cap * sizeof *v);
        if (v == NULL)
            abort();
        av->v = v;
        av->cap = cap;
    }
    struct ack *a = &av->v[av->n++];
    a->lsn = lsn;
    snprintf(a->key, sizeof a->key, "%s", key);
}

/* ---- running one writer process ---------------------------------------------------------- */

struct writer_run {
    pid_t pid;
    int fd; /* read end of the writer's stdout */
    char *buf;
    size_t len;
    size_t cap;
    int eof;
};

/* Reads what is available within timeout_ms. Returns -1 on a read error. */
static int pump(struct writer_run *w, int timeout_ms)
{
    struct pollfd p = {.fd = w->fd, .events = POLLIN};
    int n = poll(&p, 1, timeout_ms);
    if (n < 0)
        return errno == EINTR ? 0 : -1;
    if (n == 0)
        return 0;
    if (w->cap - w->len < 65536) {
        size_t cap = w->cap * 2 + 65536;
        char *b = realloc(w->buf, cap);
        if (b == NULL)
            return -1;
        w->buf = b;
        w->cap = cap;
    }
    ssize_t r = read(w->fd, w->buf + w->len, w->cap - w->len);
    if (r < 0)
        return errno == EINTR || errno == EAGAIN ? 0 : -1;
    if (r == 0)
        w->eof = 1;
    w->len += (size_t)r;
    return 0;
}

static size_t count_lines(const struct writer_run *w)
{
    size_t n = 0;
    for (size_t i = 0; i < w->len; i++)
        n += w->buf[i] == '\n';
    return n;
}

static int spawn_writer(struct writer_run *w, const char *dir, unsigned round)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0)
        return -1;
    char run[16];
    snprintf(run, sizeof run, "%u", round);
    char *argv[] = {(char *)g_writer_path, (char *)dir, run, "4", NULL};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], STDOUT_FILENO);
    int rc = posix_spawn(&w->pid, g_writer_path, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
    if (rc != 0) {
        close(fds[0]);
        errno = rc;
        return -1;
    }
    w->fd = fds[0];
    return 0;
}

static void describe_status(int status, char *buf, size_t len)
{
    if (WIFEXITED(status))
        snprintf(buf, len, "exited with status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(buf, len, "killed by signal %d", WTERMSIG(status));
    else
        snprintf(buf, len, "status 0x%x", status);
}

/* ---- checks ------------------------------------------------------------------------------- */

struct totals {
    uint64_t acked;
    uint64_t checked;
    uint64_t rows_checked;
    uint64_t aborted_checked;
    uint64_t wal_records;
    uint64_t wal_matched;
    uint64_t elocked_checks;
    uint64_t run_ms;
};

struct failure {
    unsigned count;
    char first[512];
};

static void failf(struct failure *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void failf(struct failure *f, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (f->count++ < 10)
        printf("# FAIL: %s\n", msg);
    if (f->first[0] == '\0')
        snprintf(f->first, sizeof f->first, "%s", msg);
}

struct row_check {
    const char *row;
    int seen;
    int bad;
    uint64_t lsn;
};

static int row_col_cb(void *arg, const uint8_t *name, size_t name_len, const uint8_t *value,
                      size_t value_len, uint64_t lsn)
{
    struct row_check *rc = arg;
    char want_name[4], full[128];
    uint8_t want[VALUE_MAX + 8];
    snprintf(want_name, sizeof want_name, "c%d", rc->seen);
    int fl = snprintf(full, sizeof full, "%s#%s", rc->row, want_name);
    size_t wl = test_value(full, (size_t)fl, want);
    if (rc->seen >= 3 || name_len != 2 || memcmp(name, want_name, 2) != 0 || value_len != wl ||
        memcmp(value, want, wl) != 0 || lsn != rc->lsn)
        rc->bad = 1;
    rc->seen++;
    return 0;
}

static void check_ack(struct ud_ns *ns, const struct ack *a, struct ud_buf *val, struct totals *t,
                      struct failure *f)
{
    size_t kl = strlen(a->key);
    uint64_t lsn = 0;
    t->checked++;
    if (a->key[0] == 'r') {
        struct ud_row row = {(const uint8_t *)a->key, kl, NULL, 0};
        struct row_check chk = {a->key, 0, 0, a->lsn};
        int rc = ud_ns_row_get(ns, &row, row_col_cb, &chk);
        t->rows_checked++;
        if (rc != 0)
            failf(f, "row %s (LSN %" PRIu64 "): %s", a->key, a->lsn, ud_strerror(rc));
        else if (chk.bad || chk.seen != 3)
            failf(f, "row %s (LSN %" PRIu64 "): %d columns, wrong name, value or LSN: %d", a->key,
                  a->lsn, chk.seen, chk.bad);
        return;
    }
    val->len = 0;
    int rc = ud_ns_kv_get(ns, a->key, kl, val, &lsn);
    if (a->key[0] == 'a') {
        t->aborted_checked++;
        if (rc != UD_ENOTFOUND)
            failf(f, "key %s of an aborted transaction: %s, want not found", a->key,
                  ud_strerror(rc));
        return;
    }
    uint8_t want[VALUE_MAX + 8];
    size_t wl = test_value(a->key, kl, want);
    if (rc != 0)
        failf(f, "acknowledged key %s (LSN %" PRIu64 "): %s", a->key, a->lsn, ud_strerror(rc));
    else if (val->len != wl || memcmp(val->data, want, wl) != 0)
        failf(f, "key %s: value of %zu bytes differs from the acknowledged %zu", a->key, val->len,
              wl);
    else if (lsn != a->lsn)
        failf(f, "key %s: LSN %" PRIu64 ", acknowledged %" PRIu64, a->key, lsn, a->lsn);
}

static int cmp_ack_lsn(const void *x, const void *y)
{
    const struct ack *a = *(const struct ack *const *)x, *b = *(const struct ack *const *)y;
    return a->lsn < b->lsn ? -1 : a->lsn > b->lsn;
}

static int record_matches(const struct ack *a, const uint8_t *data, uint32_t len)
{
    struct ud_record rec;
    if (ud_record_decode(data, len, &rec, NULL) != 0)
        return 0;
    if (a->key[0] == 'a')
        return rec.txn_state == UD_TXN_ABORT;
    int row = a->key[0] == 'r';
    if (rec.txn_state != UD_TXN_NONE || rec.op != UD_OP_PUT || rec.entry_count != 1 ||
        rec.entry_type != (row ? UD_ENTRY_ROW : UD_ENTRY_KV))
        return 0;
    struct ud_entry_iter it;
    struct ud_entry e;
    ud_entry_iter_init(&it, &rec);
    if (!ud_entry_iter_next(&it, &e))
        return 0;
    size_t kl = strlen(a->key);
    return e.key_len == kl && memcmp(e.key, a->key, kl) == 0 && (!row || e.column_count == 3);
}

/* Reads the closed namespace's WAL: dense LSNs, LSN fields, acknowledged records in place. */
static void check_wal(const char *ns_dir, struct ack_vec *acks, struct totals *t, struct failure *f,
                      uint64_t *last_out)
{
    char path[4096], errmsg[UD_ERRMSG_SIZE] = "";
    snprintf(path, sizeof path, "%s/wal", ns_dir);
    struct ud_wal_options wo = {.dir = path, .segment_size = 256u << 10};
    struct ud_wal *wal = NULL;
    int rc = ud_wal_open(&wo, &wal, errmsg);
    if (rc != 0) {
        failf(f, "wal open %s: %s (%s)", path, ud_strerror(rc), errmsg);
        return;
    }
    struct ud_wal_stats ws;
    ud_wal_stats(wal, &ws);
    *last_out = ws.last_lsn;

    struct ack **known = malloc((acks->n + 1) * sizeof *known);
    if (known == NULL)
        abort();
    size_t nk = 0;
    for (size_t i = 0; i < acks->n; i++)
        if (acks->v[i].lsn >= ws.first_lsn)
            known[nk++] = &acks->v[i];
    qsort(known, nk, sizeof *known, cmp_ack_lsn);
    for (size_t i = 1; i < nk; i++)
        if (known[i]->lsn == known[i - 1]->lsn)
            failf(f, "keys %s and %s were both acknowledged at LSN %" PRIu64, known[i - 1]->key,
                  known[i]->key, known[i]->lsn);
    if (nk > 0 && known[nk - 1]->lsn > ws.last_lsn)
        failf(f, "acknowledged LSN %" PRIu64 " (%s) is beyond the WAL's last %" PRIu64,
              known[nk - 1]->lsn, known[nk - 1]->key, ws.last_lsn);

    struct ud_wal_reader *rd = NULL;
    rc = ud_wal_reader_open(wal, ws.first_lsn, UD_WAL_READ_UNDURABLE, &rd);
    if (rc != 0) {
        failf(f, "wal reader at %" PRIu64 ": %s", ws.first_lsn, ud_strerror(rc));
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
            failf(f, "wal read after LSN %" PRIu64 ": %s", expect - 1, ud_strerror(rc));
            break;
        }
        t->wal_records++;
        if (lsn != expect)
            failf(f, "wal LSN %" PRIu64 " where %" PRIu64 " was expected", lsn, expect);
        if (len < UD_RECORD_HEADER_SIZE || ud_record_get_lsn(data) != lsn)
            failf(f, "wal record at LSN %" PRIu64 " carries another LSN", lsn);
        while (k < nk && known[k]->lsn < lsn)
            k++;
        if (k < nk && known[k]->lsn == lsn) {
            if (record_matches(known[k], data, len))
                t->wal_matched++;
            else
                failf(f, "wal record at LSN %" PRIu64 " is not the acknowledged %s", lsn,
                      known[k]->key);
        }
        expect = lsn + 1;
    }
    if (expect != ws.last_lsn + 1)
        failf(f, "wal ends at LSN %" PRIu64 ", stats say last %" PRIu64, expect - 1, ws.last_lsn);
    ud_wal_reader_close(rd);
out:
    free(known);
    ud_wal_close(wal);
}

static void engine_opts(const char *dir, struct ud_engine_options *o)
{
    memset(o, 0, sizeof *o);
    o->dir = dir;
    o->name = "sigkill";
    o->sync_mode = UD_WAL_SYNC_ALWAYS;
    o->segment_size = 256u << 10; /* as crash_writer */
    o->memtable_bytes = 256u << 10;
    o->map_size = 256u << 20;
}

/*
 * Runs one writer until it is killed and collects its acknowledged lines into acks. Never leaves
 * the child running. Returns 0, or -1 with f describing why.
 */
static int run_writer(const char *dir, unsigned round, uint64_t *rng, struct ack_vec *acks,
                      struct totals *t, struct failure *f, size_t *round_acks)
{
    struct writer_run w = {.pid = -1, .fd = -1};
    if (spawn_writer(&w, dir, round) != 0) {
        failf(f, "spawn %s: %s", g_writer_path, strerror(errno));
        return -1;
    }
    int ret = 0;
    uint64_t start = mono_ms();
    /* The writer recovers the namespace first; wait (bounded) for it to say it is writing. */
    while (!w.eof && (w.len < 6 || memchr(w.buf, '\n', w.len) == NULL) && mono_ms() - start < 60000)
        if (pump(&w, 100) != 0)
            break;
    if (w.len < 6 || memcmp(w.buf, "ready\n", 6) != 0) {
        failf(f, "round %u: the writer did not report ready (%zu bytes read, eof %d)", round, w.len,
              w.eof);
        ret = -1;
        goto kill;
    }
    memmove(w.buf, w.buf + 6, w.len - 6);
    w.len -= 6;

    if (round % 5 == 0) {
        /* The namespace is locked while another process has it open. */
        struct ud_engine_options o;
        engine_opts(dir, &o);
        struct ud_ns *ns = NULL;
        char errmsg[UD_ERRMSG_SIZE] = "";
        int rc = ud_ns_open(&o, &ns, errmsg);
        t->elocked_checks++;
        if (rc != UD_ELOCKED) {
            failf(f, "round %u: open while the writer runs: %s, want UD_ELOCKED (%s)", round,
                  ud_strerror(rc), errmsg);
            if (rc == 0)
                ud_ns_close(ns);
            ret = -1;
            goto kill;
        }
    }

    uint64_t ready = mono_ms();
    uint64_t deadline = ready + 50 + ud_test_rand(rng) % 451;
    while (!w.eof) {
        uint64_t now = mono_ms();
        if (now >= deadline && count_lines(&w) >= MIN_ACKS)
            break;
        if (now - ready > 30000) {
            failf(f, "round %u: fewer than %d writes acknowledged in 30 s", round, MIN_ACKS);
            ret = -1;
            break;
        }
        if (pump(&w, now < deadline ? (int)(deadline - now) : 10) != 0)
            break;
    }
    if (w.eof) {
        failf(f, "round %u: the writer closed its output before it was killed", round);
        ret = -1;
    }
    t->run_ms += mono_ms() - ready;

kill:
    kill(w.pid, SIGKILL);
    uint64_t kill_at = mono_ms();
    while (!w.eof && mono_ms() - kill_at < 10000)
        if (pump(&w, 100) != 0)
            break;
    int status = 0;
    while (waitpid(w.pid, &status, 0) < 0 && errno == EINTR)
        ;
    close(w.fd);
    if (!(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)) {
        char desc[64];
        describe_status(status, desc, sizeof desc);
        failf(f, "round %u: the writer %s before the kill (see its stderr)", round, desc);
        ret = -1;
    }

    /* Every line is complete: each was one write(2) of less than PIPE_BUF bytes. */
    size_t n = 0;
    char *p = w.buf, *end = w.buf + w.len;
    while (p < end) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        if (nl == NULL) {
            failf(f, "round %u: a torn output line (%zu bytes)", round, (size_t)(end - p));
            ret = -1;
            break;
        }
        *nl = '\0';
        char key[KEY_MAX];
        uint64_t lsn;
        if (sscanf(p, "%" SCNu64 " %63s", &lsn, key) != 2 || lsn == 0) {
            failf(f, "round %u: bad line '%s'", round, p);
            ret = -1;
        } else {
            ack_push(acks, lsn, key);
            n++;
        }
        p = nl + 1;
    }
    free(w.buf);
    *round_acks = n;
    t->acked += n;
    return ret;
}

static void test_sigkill(void **state)
{
    (void)state;
    const char *s = getenv("UD_TEST_SEED");
    uint64_t seed = s != NULL && s[0] != '\0' ? strtoull(s, NULL, 0)
                                              : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    uint64_t rng = seed | 1;
    printf("# sigkill: seed %" PRIu64 ", writer %s\n", seed, g_writer_path);

    char *base = ud_test_tmpdir("sigkill");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/ns", base);
    struct ack_vec acks = {0};
    struct totals t = {0};
    struct failure f = {0};
    struct ud_buf val = {0};
    uint64_t flushed = 0, segments = 0;

    for (unsigned round = 0; round < ROUNDS; round++) {
        size_t round_begin = acks.n, round_acks = 0;
        if (run_writer(dir, round, &rng, &acks, &t, &f, &round_acks) != 0)
            fail_msg("%s", f.first);
        if (round_acks < MIN_ACKS)
            fail_msg("round %u: only %zu writes acknowledged", round, round_acks);

        /* The killed process's lock is gone: this open must succeed and recover. */
        struct ud_engine_options o;
        engine_opts(dir, &o);
        struct ud_ns *ns = NULL;
        char errmsg[UD_ERRMSG_SIZE] = "";
        int rc = ud_ns_open(&o, &ns, errmsg);
        if (rc != 0)
            fail_msg("round %u: open after the kill: %s (%s)", round, ud_strerror(rc), errmsg);
        for (size_t i = 0; i < acks.n; i++)
            check_ack(ns, &acks.v[i], &val, &t, &f);

        struct ud_ns_stats st;
        ud_ns_stats(ns, &st);
        uint64_t max_acked = 0;
        for (size_t i = round_begin; i < acks.n; i++)
            if (acks.v[i].lsn > max_acked)
                max_acked = acks.v[i].lsn;
        if (st.last_lsn < max_acked)
            failf(&f, "round %u: recovered last LSN %" PRIu64 " < acknowledged %" PRIu64, round,
                  st.last_lsn, max_acked);

        /* Writing after recovery continues at last + 1. */
        char key[KEY_MAX];
        uint8_t v[VALUE_MAX + 8];
        int kl = snprintf(key, sizeof key, "p/%u", round);
        size_t vl = test_value(key, (size_t)kl, v);
        uint64_t lsn = 0;
        rc = ud_ns_kv_put(ns, key, (size_t)kl, v, vl, &lsn, errmsg);
        if (rc != 0)
            failf(&f, "round %u: write after recovery: %s (%s)", round, ud_strerror(rc), errmsg);
        else if (lsn != st.last_lsn + 1)
            failf(&f, "round %u: write after recovery got LSN %" PRIu64 ", want %" PRIu64, round,
                  lsn, st.last_lsn + 1);
        else
            ack_push(&acks, lsn, key);
        ud_ns_stats(ns, &st);
        flushed = st.flushed_lsn;
        segments = st.segment_id;
        ud_ns_close(ns);

        uint64_t last = 0;
        check_wal(dir, &acks, &t, &f, &last);
        if (rc == 0 && last != lsn)
            failf(&f, "round %u: WAL ends at %" PRIu64 ", the last write was %" PRIu64, round, last,
                  lsn);
        printf("# round %u: %zu acknowledged, LSNs up to %" PRIu64 ", %zu writes checked\n", round,
               round_acks, last, acks.n);
        if (f.count > 0)
            fail_msg("round %u: %u problems, first: %s (namespace kept in %s)", round, f.count,
                     f.first, dir);
    }
    /* Every round rechecks all earlier acknowledged writes, so checks count repeats. */
    printf("# sigkill: %d kills, %" PRIu64 " writes acknowledged; %" PRIu64
           " read-back checks (%" PRIu64 " of rows, %" PRIu64 " of aborted keys), %" PRIu64
           " WAL records checked dense, %" PRIu64 " acknowledged LSNs matched in the WAL, "
           "all with repeats across rounds; %" PRIu64 " lock checks; writers ran %" PRIu64
           " ms in all; flushed LSN %" PRIu64 ", active segment %" PRIu64 "\n",
           ROUNDS, t.acked, t.checked, t.rows_checked, t.aborted_checked, t.wal_records,
           t.wal_matched, t.elocked_checks, t.run_ms, flushed, segments);
    assert_true(t.acked >= (uint64_t)ROUNDS * MIN_ACKS);
    assert_true(t.checked >= t.acked);
    assert_true(t.wal_matched > 0);
    assert_true(t.elocked_checks > 0);
    /* The kills landed on a namespace that flushes to LMDB and rotates segments. */
    assert_true(flushed > 0);
    assert_true(segments > 1);
    ud_buf_free(&val);
    free(acks.v);
    ud_test_rmtree(base);
    free(base);
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc != 2) {
        fprintf(stderr, "usage: %s CRASH_WRITER\n", argv[0]);
        return 2;
    }
    g_writer_path = argv[1];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sigkill),
    };
    return cmocka_run_group_tests_name("sigkill", tests, NULL, NULL);
}
