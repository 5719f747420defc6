/* Raft FSM tests: three writers on raft_fixture (each its own registry) converge to identical WAL
 * bytes through a leader change, and keep equal states at equal applied index through kills,
 * cut links, deposed leaders and I/O faults; replay skipping; snapshots and restore; the codec. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <raft.h>
#include <raft/fixture.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "core/endian.h"
#include "core/err.h"
#include "core/fs.h"
#include "core/registry.h"
#include "core/wal.h"
#include "proto/command.h"
#include "proto/record.h"
#include "raft/fsm.h"
#include "raft/fsm_tables.h"
#include "raft/set_aside.h"
#include "tests/lib/fs_full.h"
#include "tests/lib/testutil.h"

#define CHECK_RC(rc, want, errmsg)                                                                 \
    do {                                                                                           \
        int rc_ = (rc);                                                                            \
        if (rc_ != (want))                                                                         \
            print_message("unexpected rc %d (%s), want %d: %s\n", rc_, ud_strerror(rc_),           \
                          (int)(want), (errmsg));                                                  \
        assert_int_equal(rc_, (want));                                                             \
    } while (0)

#define NSERVERS 3
#define SEGMENT  (1u << 20)

static struct ud_engine_options engine_defaults(void)
{
    struct ud_engine_options o;
    memset(&o, 0, sizeof o);
    /* As the writer runs them: raft's log is the durable copy. */
    o.sync_mode = UD_WAL_SYNC_NONE;
    o.segment_size = SEGMENT;
    o.map_size = 32u << 20;
    return o;
}

/* Opens the registry in dir as the writer runs it. */
static struct ud_registry *open_registry(const char *dir)
{
    char errmsg[UD_ERRMSG_SIZE] = "";
    struct ud_engine_options eo = engine_defaults();
    struct ud_registry *reg;
    CHECK_RC(ud_registry_open(dir, &eo, &reg, errmsg), 0, errmsg);
    return reg;
}

/* ... with its FSM. */
static void open_node(const char *dir, struct ud_registry **reg, struct ud_fsm **fsm)
{
    char errmsg[UD_ERRMSG_SIZE] = "";
    *reg = open_registry(dir);
    CHECK_RC(ud_fsm_init(*reg, fsm, errmsg), 0, errmsg);
}

/* Closes what open_node opened and removes dir (freed). */
static void close_node(char *dir, struct ud_registry *reg, struct ud_fsm *fsm)
{
    ud_fsm_close(fsm);
    ud_registry_close(reg);
    ud_test_rmtree(dir);
    free(dir);
}

/* --- records and commands ---------------------------------------------------------------------
 */

struct rec {
    uint8_t *buf;
    size_t len;
};

static struct rec kv_record(const char *key, const char *value, uint64_t hlc)
{
    struct ud_record hdr;
    memset(&hdr, 0, sizeof hdr);
    hdr.op = UD_OP_PUT;
    hdr.entry_type = UD_ENTRY_KV;
    hdr.txn_state = UD_TXN_NONE;
    hdr.hlc = hlc;
    struct ud_record_builder b;
    ud_record_builder_init(&b, &hdr);
    ud_record_add_kv(&b, key, strlen(key), value, strlen(value));
    struct rec r;
    assert_int_equal(ud_record_builder_finish(&b, &r.buf, &r.len), 0);
    return r;
}

/* A COMMIT of a transaction no one began: the engine rejects it with UD_ENOTFOUND. */
static struct rec stray_commit(uint8_t tag)
{
    struct ud_record hdr;
    memset(&hdr, 0, sizeof hdr);
    hdr.op = UD_OP_PUT;
    hdr.entry_type = UD_ENTRY_KV;
    hdr.txn_state = UD_TXN_COMMIT;
    memset(hdr.txn_id, tag, sizeof hdr.txn_id);
    hdr.txn_begin_lsn = 1;
    struct ud_record_builder b;
    ud_record_builder_init(&b, &hdr);
    struct rec r;
    assert_int_equal(ud_record_builder_finish(&b, &r.buf, &r.len), 0);
    return r;
}

/* A command of up to 4 groups; records are freed after encoding. */
struct group_spec {
    const char *ns;
    struct rec recs[16];
    size_t n;
};

static uint8_t *encode(struct group_spec *g, size_t ngroups, size_t *len, int raft_alloc)
{
    size_t size = UD_COMMAND_HEADER_SIZE;
    for (size_t i = 0; i < ngroups; i++) {
        size += ud_command_group_size(g[i].ns);
        for (size_t j = 0; j < g[i].n; j++)
            size += UD_COMMAND_RECORD_OVERHEAD + g[i].recs[j].len;
    }
    size = UD_COMMAND_ALIGN(size);
    uint8_t *buf = raft_alloc ? raft_malloc(size) : malloc(size);
    assert_non_null(buf);
    struct ud_command_writer w;
    ud_command_writer_init(&w, buf, size);
    for (size_t i = 0; i < ngroups; i++) {
        assert_int_equal(ud_command_writer_group(&w, g[i].ns), 0);
        for (size_t j = 0; j < g[i].n; j++) {
            assert_int_equal(ud_command_writer_record(&w, g[i].recs[j].buf, g[i].recs[j].len), 0);
            free(g[i].recs[j].buf);
        }
    }
    assert_int_equal(ud_command_writer_finish(&w, len), 0);
    assert_int_equal(*len, size);
    return buf;
}

static uint8_t *encode_ns(enum ud_command_kind kind, const char *ns, size_t *len, int raft_alloc)
{
    size_t size = ud_command_ns_size(ns);
    uint8_t *buf = raft_alloc ? raft_malloc(size) : malloc(size);
    assert_int_equal(ud_command_encode_ns(kind, ns, buf, size, len), 0);
    return buf;
}

/* --- a cluster of FSMs on raft_fixture ---------------------------------------------------------
 */

struct server {
    char *dir;
    struct ud_registry *reg;
    struct ud_fsm *fsm;
};

struct cluster {
    struct raft_fixture f;
    struct server s[NSERVERS];
    uv_loop_t *loop;       /* the apply pipelines' (cluster_open_piped), or NULL */
    int piped_open;        /* pipelines not yet closed */
    int stopped[NSERVERS]; /* pipelines a test stopped itself */
};

/* What the proposer's callback saw. */
struct outcome {
    int done;
    int status;
    int result_status;
    size_t n;
    uint64_t lsns[64];
    int statuses[64];
    char msg[UD_ERRMSG_SIZE];
};

static void apply_cb(struct raft_apply *req, int status, void *result)
{
    struct outcome *o = req->data;
    o->done = 1;
    o->status = status;
    if (status == 0) {
        const struct ud_fsm_result *res = result;
        o->result_status = res->status;
        o->n = res->nrecords;
        for (size_t i = 0; i < res->nrecords && i < 64; i++) {
            o->lsns[i] = res->records[i].lsn;
            o->statuses[i] = res->records[i].status;
            if (res->records[i].status != 0)
                snprintf(o->msg, sizeof o->msg, "%s", ud_fsm_result_msg(res, i));
        }
        if (res->status != 0)
            snprintf(o->msg, sizeof o->msg, "%s", res->errmsg);
    }
    free(req);
}

/* A leader's snapshot that does not decode on one follower (a corrupted transfer, or a leader of
 * a newer format): while `on`, the InstallSnapshot messages server `server` receives get
 * version byte 9 in their metadata, before the FSM and raft see them. cluster_open_piped puts
 * this in every server's receive path while `wrap` is set. */
static struct {
    int wrap;
    int on;
    unsigned server;
    unsigned garbled;
    struct raft_io *io[NSERVERS];
    int (*start[NSERVERS])(struct raft_io *io, unsigned msecs, raft_io_tick_cb tick,
                           raft_io_recv_cb recv);
    raft_io_recv_cb recv[NSERVERS];
} garble;

static unsigned garble_index(struct raft_io *io)
{
    for (unsigned i = 0; i < NSERVERS; i++)
        if (garble.io[i] == io)
            return i;
    fail();
    return 0;
}

static void garble_recv(struct raft_io *io, struct raft_message *m)
{
    unsigned i = garble_index(io);
    if (garble.on && i == garble.server && m->type == RAFT_IO_INSTALL_SNAPSHOT &&
        m->install_snapshot.data.len > 0) {
        ((uint8_t *)m->install_snapshot.data.base)[0] = 9;
        garble.garbled++;
    }
    garble.recv[i](io, m);
}

static int garble_start(struct raft_io *io, unsigned msecs, raft_io_tick_cb tick,
                        raft_io_recv_cb recv)
{
    unsigned i = garble_index(io);
    garble.recv[i] = recv;
    return garble.start[i](io, msecs, tick, garble_recv);
}

/* A cluster whose FSMs apply through their pipelines (as in the writer) when loop is not NULL:
 * deliveries and the pipelines' closing run on loop. */
static void cluster_open_piped(struct cluster *c, const char *tag, unsigned snapshot_threshold,
                               struct ud_engine_options o, uv_loop_t *loop)
{
    memset(c, 0, sizeof *c);
    c->loop = loop;
    assert_int_equal(raft_fixture_initialize(&c->f), 0);
    for (unsigned i = 0; i < NSERVERS; i++) {
        char t[64];
        snprintf(t, sizeof t, "%s-%u", tag, i);
        char errmsg[UD_ERRMSG_SIZE] = "";
        c->s[i].dir = ud_test_tmpdir(t);
        CHECK_RC(ud_registry_open(c->s[i].dir, &o, &c->s[i].reg, errmsg), 0, errmsg);
        CHECK_RC(ud_fsm_init(c->s[i].reg, &c->s[i].fsm, errmsg), 0, errmsg);
        assert_int_equal(raft_fixture_grow(&c->f, ud_fsm_raft(c->s[i].fsm)), 0);
        struct raft *r = raft_fixture_get(&c->f, i);
        if (garble.wrap) { /* under the FSM's own wrapper (ud_fsm_attach) */
            garble.io[i] = r->io;
            garble.start[i] = r->io->start;
            r->io->start = garble_start;
        }
        ud_fsm_attach(c->s[i].fsm, r);
        if (snapshot_threshold) {
            raft_set_snapshot_threshold(r, snapshot_threshold);
            raft_set_snapshot_trailing(r, snapshot_threshold / 2);
        }
        if (loop != NULL) {
            CHECK_RC(ud_fsm_start_pipeline(c->s[i].fsm, loop, errmsg), 0, errmsg);
            c->piped_open++;
        }
    }
    struct raft_configuration conf;
    assert_int_equal(raft_fixture_configuration(&c->f, NSERVERS, &conf), 0);
    assert_int_equal(raft_fixture_bootstrap(&c->f, &conf), 0);
    raft_configuration_close(&conf);
    assert_int_equal(raft_fixture_start(&c->f), 0);
    assert_true(raft_fixture_step_until_has_leader(&c->f, 10000));
}

static void cluster_open_with(struct cluster *c, const char *tag, unsigned snapshot_threshold,
                              struct ud_engine_options o)
{
    cluster_open_piped(c, tag, snapshot_threshold, o, NULL);
}

static void cluster_open(struct cluster *c, const char *tag, unsigned snapshot_threshold)
{
    cluster_open_with(c, tag, snapshot_threshold, engine_defaults());
}

static void piped_closed(void *arg)
{
    struct cluster *c = arg;
    c->piped_open--;
}

static void cluster_close_raft(struct cluster *c)
{
    /* The pipelines first, as the writer's node does: raft frees its log when it closes. */
    for (unsigned i = 0; c->loop != NULL && i < NSERVERS; i++)
        if (!c->stopped[i])
            ud_fsm_stop_pipeline(c->s[i].fsm, piped_closed, c);
    while (c->piped_open > 0)
        uv_run(c->loop, UV_RUN_ONCE);
    raft_fixture_close(&c->f);
    for (unsigned i = 0; i < NSERVERS; i++) {
        ud_fsm_close(c->s[i].fsm);
        c->s[i].fsm = NULL;
        ud_registry_close(c->s[i].reg);
        c->s[i].reg = NULL;
    }
}

static void cluster_free(struct cluster *c)
{
    for (unsigned i = 0; i < NSERVERS; i++) {
        ud_test_rmtree(c->s[i].dir);
        free(c->s[i].dir);
    }
}

/* raft_apply of buf (raft_malloc'd, transferred) on server i, answered in o; steps nothing.
 * Returns raft_apply's code; on failure buf is freed and o is not answered. */
static int submit(struct cluster *c, unsigned i, uint8_t *buf, size_t len, struct outcome *o)
{
    struct raft_apply *req = malloc(sizeof *req);
    assert_non_null(req);
    memset(o, 0, sizeof *o);
    req->data = o;
    struct raft_buffer b = {.base = buf, .len = len};
    int rc = raft_apply(raft_fixture_get(&c->f, i), req, &b, 1, apply_cb);
    if (rc != 0) {
        raft_free(buf);
        free(req);
    }
    return rc;
}

/* Proposes buf on the leader and steps until every live server applied it. */
static void propose(struct cluster *c, uint8_t *buf, size_t len, struct outcome *o)
{
    unsigned leader = raft_fixture_leader_index(&c->f);
    assert_true(leader < NSERVERS);
    struct raft *r = raft_fixture_get(&c->f, leader);
    assert_int_equal(submit(c, leader, buf, len, o), 0);
    raft_index index = raft_last_index(r);
    for (unsigned i = 0; i < NSERVERS; i++)
        if (raft_fixture_alive(&c->f, i))
            assert_true(raft_fixture_step_until_applied(&c->f, i, index, 10000));
    assert_true(o->done);
    assert_int_equal(o->status, 0);
}

static void propose_ns(struct cluster *c, enum ud_command_kind kind, const char *ns,
                       struct outcome *o)
{
    size_t len;
    uint8_t *buf = encode_ns(kind, ns, &len, 1);
    propose(c, buf, len, o);
}

/* One entry: `na` puts to alpha, `nb` to beta, and a stray commit in beta when `stray`; keys
 * "a-<round>-<i>" and "b-<round>-<i>". Allocated with raft_malloc, for raft_apply. */
static uint8_t *encode_mixed(int round, size_t na, size_t nb, int stray, size_t *len)
{
    struct group_spec g[2] = {{.ns = "alpha"}, {.ns = "beta"}};
    char k[32], v[64];
    for (size_t i = 0; i < na; i++) {
        snprintf(k, sizeof k, "a-%03d-%zu", round, i);
        snprintf(v, sizeof v, "value of %s", k);
        g[0].recs[g[0].n++] = kv_record(k, v, 1000u * (uint64_t)round + i + 1);
    }
    for (size_t i = 0; i < nb; i++) {
        if (stray && i == nb / 2)
            g[1].recs[g[1].n++] = stray_commit((uint8_t)round);
        snprintf(k, sizeof k, "b-%03d-%zu", round, i);
        snprintf(v, sizeof v, "beta %s", k);
        g[1].recs[g[1].n++] = kv_record(k, v, 1000u * (uint64_t)round + 500 + i);
    }
    return encode(g, 2, len, 1);
}

static void propose_mixed(struct cluster *c, int round, size_t na, size_t nb, int stray,
                          struct outcome *o)
{
    size_t len;
    uint8_t *buf = encode_mixed(round, na, nb, stray, &len);
    propose(c, buf, len, o);
    assert_int_equal(o->result_status, 0);
    assert_int_equal(o->n, na + nb + (stray ? 1 : 0));
}

/* Reads every record of root/ns/wal into a malloc'd array of copies. */
struct wal_dump {
    uint64_t first;
    size_t n;
    struct rec *recs;
};

static void dump_wal(const char *root, const char *ns, struct wal_dump *d)
{
    char dir[1024], errmsg[UD_ERRMSG_SIZE] = "";
    snprintf(dir, sizeof dir, "%s/%s/wal", root, ns);
    struct ud_wal_options o = {.dir = dir, .segment_size = SEGMENT, .sync_mode = UD_WAL_SYNC_NONE};
    struct ud_wal *wal;
    CHECK_RC(ud_wal_open(&o, &wal, errmsg), 0, errmsg);
    d->first = ud_wal_first_lsn(wal);
    uint64_t last = ud_wal_last_lsn(wal);
    d->n = (size_t)(last + 1 - d->first);
    d->recs = calloc(d->n + 1, sizeof *d->recs);
    struct ud_wal_reader *r;
    assert_int_equal(ud_wal_reader_open(wal, d->first, UD_WAL_READ_UNDURABLE, &r), 0);
    for (size_t i = 0; i < d->n; i++) {
        const uint8_t *data;
        uint32_t len;
        uint64_t lsn;
        assert_int_equal(ud_wal_reader_next(r, &data, &len, &lsn), 0);
        assert_int_equal(lsn, d->first + i);
        d->recs[i].buf = malloc(len);
        memcpy(d->recs[i].buf, data, len);
        d->recs[i].len = len;
    }
    ud_wal_reader_close(r);
    ud_wal_close(wal);
}

static void dump_free(struct wal_dump *d)
{
    for (size_t i = 0; i < d->n; i++)
        free(d->recs[i].buf);
    free(d->recs);
}

static uint64_t ns_last_lsn(struct ud_registry *reg, const char *name)
{
    struct ud_ns *ns;
    assert_int_equal(ud_registry_acquire(reg, name, &ns), 0);
    struct ud_ns_stats st;
    ud_ns_stats(ns, &st);
    ud_registry_release(reg, ns);
    return st.last_lsn;
}

/* --- tests -------------------------------------------------------------------------------------
 */

static void test_cluster_converges_through_failover(void **state)
{
    (void)state;
    struct cluster c;
    cluster_open(&c, "raft-failover", 0);
    struct outcome o;

    /* Namespaces are raft commands too: created on every server. */
    propose_ns(&c, UD_COMMAND_NS_CREATE, "alpha", &o);
    assert_int_equal(o.result_status, 0);
    propose_ns(&c, UD_COMMAND_NS_CREATE, "beta", &o);
    assert_int_equal(o.result_status, 0);
    propose_ns(&c, UD_COMMAND_NS_CREATE, "beta", &o);
    assert_int_equal(o.result_status, UD_EEXIST);
    propose_ns(&c, UD_COMMAND_NS_DELETE, "gamma", &o);
    assert_int_equal(o.result_status, UD_ENOTFOUND);

    uint64_t want_alpha = 0, want_beta = 0;
    int round = 0;
    for (; round < 15; round++) {
        propose_mixed(&c, round, 5, 3, round % 4 == 1, &o);
        /* LSNs are dense per namespace in command order; a rejected record takes none. */
        for (size_t i = 0; i < 5; i++)
            assert_int_equal(o.lsns[i], ++want_alpha);
        for (size_t i = 5; i < o.n; i++) {
            if (o.statuses[i] != 0) {
                assert_int_equal(o.statuses[i], UD_ENOTFOUND);
                assert_int_equal(o.lsns[i], 0);
                assert_non_null(strstr(o.msg, "transaction"));
            } else {
                assert_int_equal(o.lsns[i], ++want_beta);
            }
        }
    }

    /* Kill the leader; a new one takes over and the writes go on. */
    unsigned old = raft_fixture_leader_index(&c.f);
    raft_fixture_kill(&c.f, old);
    assert_true(raft_fixture_step_until_has_no_leader(&c.f, 10000));
    assert_true(raft_fixture_step_until_has_leader(&c.f, 20000));
    unsigned leader = raft_fixture_leader_index(&c.f);
    assert_int_not_equal(leader, old);
    for (; round < 30; round++) {
        propose_mixed(&c, round, 4, 2, round % 3 == 0, &o);
        for (size_t i = 0; i < 4; i++)
            assert_int_equal(o.lsns[i], ++want_alpha);
        for (size_t i = 4; i < o.n; i++)
            if (o.statuses[i] == 0)
                assert_int_equal(o.lsns[i], ++want_beta);
    }
    /* The old leader comes back and catches up from the log. */
    raft_fixture_revive(&c.f, old);
    for (; round < 35; round++)
        propose_mixed(&c, round, 2, 2, 0, &o);
    want_alpha += 10;
    want_beta += 10;
    raft_index last = raft_last_index(raft_fixture_get(&c.f, raft_fixture_leader_index(&c.f)));
    assert_true(raft_fixture_step_until_applied(&c.f, NSERVERS, last, 20000));

    for (unsigned i = 0; i < NSERVERS; i++) {
        assert_int_equal(ns_last_lsn(c.s[i].reg, "alpha"), want_alpha);
        assert_int_equal(ns_last_lsn(c.s[i].reg, "beta"), want_beta);
        struct ud_fsm_stats st;
        ud_fsm_stats(c.s[i].fsm, &st);
        assert_int_equal(st.applied, want_alpha + want_beta);
        assert_int_equal(st.skipped, 0);
        assert_true(st.rejected > 0);
    }
    cluster_close_raft(&c);

    /* Identical WAL bytes per LSN on every server, raft positions included. */
    const char *names[] = {"alpha", "beta"};
    for (int n = 0; n < 2; n++) {
        struct wal_dump d[NSERVERS];
        for (unsigned i = 0; i < NSERVERS; i++)
            dump_wal(c.s[i].dir, names[n], &d[i]);
        assert_int_equal(d[0].first, 1);
        assert_int_equal(d[0].n, n == 0 ? want_alpha : want_beta);
        uint64_t prev_index = 0;
        uint32_t prev_pos = 0;
        for (size_t k = 0; k < d[0].n; k++) {
            struct ud_record rec;
            assert_int_equal(ud_record_decode(d[0].recs[k].buf, d[0].recs[k].len, &rec, NULL), 0);
            assert_int_equal(rec.lsn, k + 1);
            assert_int_not_equal(rec.txn_state, UD_TXN_COMMIT); /* the stray commits: no LSN */
            assert_true(rec.raft_index > prev_index ||
                        (rec.raft_index == prev_index && rec.raft_pos > prev_pos));
            prev_index = rec.raft_index;
            prev_pos = rec.raft_pos;
            for (unsigned i = 1; i < NSERVERS; i++) {
                assert_int_equal(d[i].first, d[0].first);
                assert_int_equal(d[i].n, d[0].n);
                assert_int_equal(d[i].recs[k].len, d[0].recs[k].len);
                assert_memory_equal(d[i].recs[k].buf, d[0].recs[k].buf, d[0].recs[k].len);
            }
        }
        for (unsigned i = 0; i < NSERVERS; i++)
            dump_free(&d[i]);
    }
    cluster_free(&c);
}

/* Bytes of the entries raft holds in memory (its log after the last snapshot, plus trailing). */
static size_t raft_log_bytes(struct raft *r, size_t *max_entry)
{
    const struct raft_log *l = &r->log;
    size_t bytes = 0;
    for (size_t i = l->front; i != l->back; i = (i + 1) % l->size) {
        bytes += l->entries[i].buf.len;
        if (l->entries[i].buf.len > *max_entry)
            *max_entry = l->entries[i].buf.len;
    }
    return bytes;
}

/* The snapshot policy bounds raft's log by bytes: with an entry threshold far away, snapshots
 * come after snapshot_bytes of entries and keep snapshot_trailing_bytes behind them. Without the
 * byte budget (the control run) no snapshot is taken at all. */
static void test_snapshot_by_bytes(void **state)
{
    (void)state;
    for (int budget = 1; budget >= 0; budget--) {
        struct cluster c;
        cluster_open(&c, budget ? "raft-snapbytes" : "raft-snapbytes-off", 0);
        char errmsg[UD_ERRMSG_SIZE] = "";
        for (unsigned i = 0; i < NSERVERS; i++)
            CHECK_RC(ud_fsm_set_snapshot_policy(c.s[i].fsm, 100000, budget ? 8192 : 0, 100000,
                                                budget ? 4096 : 0, errmsg),
                     0, errmsg);
        struct outcome o;
        propose_ns(&c, UD_COMMAND_NS_CREATE, "alpha", &o);
        propose_ns(&c, UD_COMMAND_NS_CREATE, "beta", &o);
        size_t max_entry = 0;
        for (int round = 0; round < 60; round++) {
            propose_mixed(&c, round, 10, 10, 0, &o);
            for (unsigned i = 0; i < NSERVERS; i++) {
                size_t bytes = raft_log_bytes(raft_fixture_get(&c.f, i), &max_entry);
                /* Between two snapshots the log grows by at most the budget (and the entry that
                 * crosses it) on top of what the last one kept. */
                if (budget)
                    assert_true(bytes <= 8192 + 4096 + 2 * max_entry);
            }
        }
        assert_true(max_entry > 1000 && max_entry < 4096); /* the bound above means something */
        for (unsigned i = 0; i < NSERVERS; i++) {
            struct ud_fsm_stats st;
            ud_fsm_stats(c.s[i].fsm, &st);
            if (budget)
                assert_true(st.snapshots >= 60 * max_entry / 8192 / 2);
            else
                assert_int_equal(st.snapshots, 0);
        }
        cluster_close_raft(&c);
        cluster_free(&c);
    }
}

/* Snapshots fsync the WALs and describe each namespace; restoring one is a no-op when this node
 * is at or beyond it and refused (with the reason) when it is behind. */
static void test_snapshot_and_restore(void **state)
{
    (void)state;
    struct cluster c;
    cluster_open(&c, "raft-snap", 8);
    struct outcome o;
    propose_ns(&c, UD_COMMAND_NS_CREATE, "alpha", &o);
    propose_ns(&c, UD_COMMAND_NS_CREATE, "beta", &o);
    for (int round = 0; round < 40; round++)
        propose_mixed(&c, round, 3, 1, 0, &o);
    for (unsigned i = 0; i < NSERVERS; i++) {
        struct ud_fsm_stats st;
        ud_fsm_stats(c.s[i].fsm, &st);
        assert_true(st.snapshots >= 3);
    }

    char errmsg[UD_ERRMSG_SIZE] = "";
    uint8_t *snap;
    size_t snap_len;
    CHECK_RC(ud_fsm_snapshot(c.s[0].fsm, 42, &snap, &snap_len, errmsg), 0, errmsg);
    CHECK_RC(ud_fsm_snapshot_sync(c.s[0].fsm, snap, snap_len, errmsg), 0, errmsg);
    for (unsigned i = 0; i < NSERVERS; i++)
        CHECK_RC(ud_fsm_restore(c.s[i].fsm, snap, snap_len, errmsg), 0, errmsg);
    /* A namespace deleted after the snapshot (a restart before the next one restores it): not
     * needed, the log after the snapshot deletes it again. */
    uint64_t alpha_lsn = ns_last_lsn(c.s[0].reg, "alpha"),
             beta_lsn = ns_last_lsn(c.s[0].reg, "beta");
    propose_ns(&c, UD_COMMAND_NS_DELETE, "beta", &o);
    assert_int_equal(o.result_status, 0);
    for (unsigned i = 0; i < NSERVERS; i++)
        CHECK_RC(ud_fsm_restore(c.s[i].fsm, snap, snap_len, errmsg), 0, errmsg);
    /* The record of that delete cannot be read (here: a directory in its place) or holds no
     * index: the restore fails with the cause, instead of taking beta for never deleted and
     * asking the peers for a namespace they no longer have. */
    char tomb[4096];
    snprintf(tomb, sizeof tomb, "%s/.raft-deleted-beta", ud_registry_root(c.s[0].reg));
    assert_int_equal(unlink(tomb), 0);
    assert_int_equal(mkdir(tomb, 0755), 0);
    assert_int_equal(ud_fsm_restore(c.s[0].fsm, snap, snap_len, errmsg), UD_EIO);
    assert_non_null(strstr(errmsg, ".raft-deleted-beta"));
    struct ud_catchup_plan none = {0};
    assert_int_equal(ud_fsm_take_behind(c.s[0].fsm, &none), 0);
    assert_int_equal(rmdir(tomb), 0);
    FILE *garbled = fopen(tomb, "w");
    assert_non_null(garbled);
    fputs("x\n", garbled);
    fclose(garbled);
    assert_int_equal(ud_fsm_restore(c.s[0].fsm, snap, snap_len, errmsg), UD_ECORRUPT);
    assert_non_null(strstr(errmsg, "does not hold a raft index"));
    assert_int_equal(unlink(tomb), 0);
    /* Without the record, beta is needed again (a catch-up target). */
    assert_int_equal(ud_fsm_restore(c.s[0].fsm, snap, snap_len, errmsg), UD_ERANGE);
    assert_int_equal(ud_fsm_take_behind(c.s[0].fsm, &none), 1);
    ud_catchup_plan_free(&none);

    /* A node with nothing: behind, with a message saying what is needed. */
    char *dir = ud_test_tmpdir("raft-snap-empty");
    struct ud_registry *reg;
    struct ud_fsm *fsm;
    open_node(dir, &reg, &fsm);
    assert_int_equal(ud_fsm_restore(fsm, snap, snap_len, errmsg), UD_ERANGE);
    assert_non_null(strstr(errmsg, "catch-up"));
    /* Every namespace behind is a catch-up target with the snapshot's LSN, not just the first. */
    struct ud_catchup_plan plan = {0};
    assert_int_equal(ud_fsm_take_behind(fsm, &plan), 1);
    assert_int_equal(plan.ntargets, 2);
    for (size_t i = 0; i < plan.ntargets; i++) {
        assert_true(strcmp(plan.targets[i].ns, "alpha") == 0 ||
                    strcmp(plan.targets[i].ns, "beta") == 0);
        assert_int_equal(plan.targets[i].lsn,
                         strcmp(plan.targets[i].ns, "alpha") == 0 ? alpha_lsn : beta_lsn);
        assert_true(plan.targets[i].lsn > 0);
    }
    ud_catchup_plan_free(&plan);
    assert_int_equal(ud_fsm_take_behind(fsm, &plan), 0); /* taken */
    CHECK_RC(ud_registry_create(reg, "alpha", errmsg), 0, errmsg);
    CHECK_RC(ud_registry_create(reg, "beta", errmsg), 0, errmsg);
    assert_int_equal(ud_fsm_restore(fsm, snap, snap_len, errmsg), UD_ERANGE);
    assert_non_null(strstr(errmsg, "holds LSN 0"));
    assert_int_equal(ud_fsm_take_behind(fsm, &plan), 1);
    assert_int_equal(plan.ntargets, 2);
    ud_catchup_plan_free(&plan);
    /* Namespaces the peers deleted after this snapshot are not needed to restore it, and only
     * for this snapshot. */
    struct ud_catchup_plan gone = {.snapshot_index = 41};
    CHECK_RC(ud_catchup_plan_target(&gone, "alpha", 1), 0, "plan");
    CHECK_RC(ud_catchup_plan_target(&gone, "beta", 1), 0, "plan");
    ud_fsm_waive(fsm, &gone);
    assert_int_equal(ud_fsm_restore(fsm, snap, snap_len, errmsg), UD_ERANGE);
    ud_catchup_plan_free(&plan);
    assert_int_equal(ud_fsm_take_behind(fsm, &plan), 1);
    ud_catchup_plan_free(&plan);
    gone.snapshot_index = 42;
    ud_fsm_waive(fsm, &gone);
    CHECK_RC(ud_fsm_restore(fsm, snap, snap_len, errmsg), 0, errmsg);
    ud_fsm_waive(fsm, NULL);
    ud_catchup_plan_free(&gone);
    /* A restore that succeeds leaves no plan behind. */
    CHECK_RC(ud_fsm_restore(c.s[1].fsm, snap, snap_len, errmsg), 0, errmsg);
    assert_int_equal(ud_fsm_take_behind(c.s[1].fsm, &plan), 0);
    /* Malformed metadata. */
    assert_int_equal(ud_fsm_restore(fsm, snap, 10, errmsg), UD_ECORRUPT);
    assert_int_equal(ud_fsm_restore(fsm, snap, snap_len - 1, errmsg), UD_ECORRUPT);
    free(snap);
    close_node(dir, reg, fsm);

    cluster_close_raft(&c);
    cluster_free(&c);
}

/*
 * A namespace deleted and created again after a snapshot starts at LSN 1 again and can pass the
 * LSN the snapshot lists for the old one. A node that holds that LSN of the other namespace is not
 * caught up: the record there came from another raft entry. With the delete recorded here, raft's
 * log after the snapshot deletes and creates it again (not needed); without it (a node that was
 * away during both), the namespace is a catch-up target whose local copy is to be replaced.
 * Before the check, such a restore succeeded and raft's later entries went on top of the other
 * namespace's records (e2e-cluster_catchup, namespace_created_again_while_away, waited for a key
 * that never came).
 */
static void test_restore_finds_namespace_created_again(void **state)
{
    (void)state;
    struct cluster c;
    cluster_open(&c, "raft-again", 1000);
    struct outcome o;
    propose_ns(&c, UD_COMMAND_NS_CREATE, "alpha", &o);
    propose_ns(&c, UD_COMMAND_NS_CREATE, "beta", &o);
    for (int round = 0; round < 10; round++)
        propose_mixed(&c, round, 3, 1, 0, &o);
    char errmsg[UD_ERRMSG_SIZE] = "";
    uint8_t *snap;
    size_t snap_len;
    raft_index at = raft_last_index(raft_fixture_get(&c.f, 0));
    CHECK_RC(ud_fsm_snapshot(c.s[0].fsm, at, &snap, &snap_len, errmsg), 0, errmsg);
    uint64_t alpha_lsn = ns_last_lsn(c.s[0].reg, "alpha");

    propose_ns(&c, UD_COMMAND_NS_DELETE, "alpha", &o);
    assert_int_equal(o.result_status, 0);
    propose_ns(&c, UD_COMMAND_NS_CREATE, "alpha", &o);
    assert_int_equal(o.result_status, 0);
    for (int round = 10; round < 25; round++)
        propose_mixed(&c, round, 3, 1, 0, &o);
    assert_true(ns_last_lsn(c.s[0].reg, "alpha") > alpha_lsn);

    CHECK_RC(ud_fsm_restore(c.s[0].fsm, snap, snap_len, errmsg), 0, errmsg);
    char tomb[4096];
    snprintf(tomb, sizeof tomb, "%s/.raft-deleted-alpha", ud_registry_root(c.s[1].reg));
    assert_int_equal(unlink(tomb), 0);
    assert_int_equal(ud_fsm_restore(c.s[1].fsm, snap, snap_len, errmsg), UD_ERANGE);
    print_message("# %s\n", errmsg);
    assert_non_null(strstr(errmsg, "another namespace of that name"));
    struct ud_catchup_plan plan = {0};
    assert_int_equal(ud_fsm_take_behind(c.s[1].fsm, &plan), 1);
    assert_int_equal(plan.ntargets, 1); /* beta is the snapshot's */
    assert_string_equal(plan.targets[0].ns, "alpha");
    assert_int_equal(plan.targets[0].lsn, alpha_lsn);
    assert_int_equal(plan.targets[0].replace, 1);
    ud_catchup_plan_free(&plan);
    free(snap);
    cluster_close_raft(&c);
    cluster_free(&c);
}

/* Puts n records of 8 KiB to one namespace in one entry (keys "<ns>-<round>-<i>"). */
static void propose_big(struct cluster *c, const char *ns, int round, size_t n, struct outcome *o)
{
    static char v[8192];
    memset(v, 'v', sizeof v - 1);
    struct group_spec g = {.ns = ns};
    char k[48];
    for (size_t i = 0; i < n; i++) {
        snprintf(k, sizeof k, "%s-%03d-%zu", ns, round, i);
        g.recs[g.n++] = kv_record(k, v, 1000u * (uint64_t)round + i + 1);
    }
    size_t len;
    uint8_t *buf = encode(&g, 1, &len, 1);
    propose(c, buf, len, o);
    assert_int_equal(o->result_status, 0);
}

/*
 * A node away while alpha was deleted and created again restores a snapshot listing the new alpha
 * at LSN new_records (0: created, nothing written yet), below the LSN of its old copy. Retention
 * removed the old copy's record at that LSN (64 KiB segments, one sealed kept), so only its newest
 * record's raft position tells the copies apart. Before, a record retention removed, or a
 * namespace listed at LSN 0, let the old copy pass for caught up and the restore succeeded.
 */
static void restore_on_node_away(int new_records)
{
    struct ud_engine_options eo = engine_defaults();
    eo.segment_size = 64u << 10;
    eo.retention.max_segments = 1;
    struct cluster c;
    cluster_open_with(&c, new_records ? "raft-away" : "raft-away-empty", 0, eo);
    struct outcome o;
    propose_ns(&c, UD_COMMAND_NS_CREATE, "alpha", &o);
    propose_ns(&c, UD_COMMAND_NS_CREATE, "beta", &o);
    for (int round = 0; round < 10; round++)
        propose_big(&c, "alpha", round, 4, &o);
    unsigned away = (raft_fixture_leader_index(&c.f) + 1) % NSERVERS;
    struct ud_registry *reg = c.s[away].reg;
    uint64_t old_lsn = ns_last_lsn(reg, "alpha");
    struct ud_ns *ns;
    char errmsg[UD_ERRMSG_SIZE] = "";
    assert_int_equal(ud_registry_acquire(reg, "alpha", &ns), 0);
    CHECK_RC(ud_ns_flush(ns, errmsg), 0, errmsg);
    uint64_t ri;
    uint32_t rp;
    /* The precondition: the record at the LSN the snapshot will list is gone here (retention
     * runs on the flush thread just after the flush is reported done). */
    int rc = 0;
    for (int i = 0; i < 500 && rc != UD_EGONE; i++) {
        rc = ud_ns_raft_position_at(ns, new_records ? (uint64_t)new_records : 1, &ri, &rp);
        if (rc != UD_EGONE)
            usleep(10000);
    }
    assert_int_equal(rc, UD_EGONE);
    ud_registry_release(reg, ns);
    raft_fixture_kill(&c.f, away);

    propose_ns(&c, UD_COMMAND_NS_DELETE, "alpha", &o);
    assert_int_equal(o.result_status, 0);
    propose_ns(&c, UD_COMMAND_NS_CREATE, "alpha", &o);
    assert_int_equal(o.result_status, 0);
    if (new_records)
        propose_big(&c, "alpha", 20, (size_t)new_records, &o);
    propose_big(&c, "beta", 21, 2, &o);
    unsigned leader = raft_fixture_leader_index(&c.f);
    raft_index at = raft_last_index(raft_fixture_get(&c.f, leader));
    uint8_t *snap;
    size_t snap_len;
    CHECK_RC(ud_fsm_snapshot(c.s[leader].fsm, at, &snap, &snap_len, errmsg), 0, errmsg);
    assert_int_equal(ns_last_lsn(c.s[leader].reg, "alpha"), (uint64_t)new_records);
    assert_true(old_lsn > (uint64_t)new_records);

    assert_int_equal(ud_fsm_restore(c.s[away].fsm, snap, snap_len, errmsg), UD_ERANGE);
    print_message("# %s\n", errmsg);
    assert_non_null(strstr(errmsg, "another namespace of that name"));
    struct ud_catchup_plan plan = {0};
    assert_int_equal(ud_fsm_take_behind(c.s[away].fsm, &plan), 1);
    assert_int_equal(plan.ntargets, 2); /* beta is behind too, not to be replaced */
    for (size_t i = 0; i < plan.ntargets; i++)
        if (strcmp(plan.targets[i].ns, "alpha") == 0) {
            assert_int_equal(plan.targets[i].lsn, (uint64_t)new_records);
            assert_int_equal(plan.targets[i].replace, 1);
        } else {
            assert_string_equal(plan.targets[i].ns, "beta");
            assert_int_equal(plan.targets[i].replace, 0);
        }
    ud_catchup_plan_free(&plan);
    free(snap);
    cluster_close_raft(&c);
    cluster_free(&c);
}

static void test_restore_finds_created_again_past_retention(void **state)
{
    (void)state;
    restore_on_node_away(3);
}

static void test_restore_finds_created_again_still_empty(void **state)
{
    (void)state;
    restore_on_node_away(0);
}

/* The same entry applied again (raft replaying its log after a restart) is skipped record by
 * record, also after the namespace was reopened and its memtable flushed. */
static void test_replay_skips_what_the_wal_holds(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("raft-replay");
    char errmsg[UD_ERRMSG_SIZE] = "";
    struct ud_registry *reg;
    struct ud_fsm *fsm;
    open_node(dir, &reg, &fsm);
    const struct ud_fsm_result *res;

    size_t len5, len6, len7, len;
    uint8_t *create = encode_ns(UD_COMMAND_NS_CREATE, "alpha", &len, 0);
    CHECK_RC(ud_fsm_apply(fsm, 4, create, len, &res), 0, res->errmsg);
    assert_int_equal(res->status, 0);
    struct group_spec g5 = {.ns = "alpha"};
    for (int i = 0; i < 3; i++) {
        char k[16];
        snprintf(k, sizeof k, "k5-%d", i);
        g5.recs[g5.n++] = kv_record(k, "v", 10 + (uint64_t)i);
    }
    uint8_t *e5 = encode(&g5, 1, &len5, 0);
    struct group_spec g6 = {.ns = "alpha"};
    g6.recs[g6.n++] = kv_record("k6-0", "v", 20);
    g6.recs[g6.n++] = stray_commit(6);
    g6.recs[g6.n++] = kv_record("k6-2", "v", 21);
    uint8_t *e6 = encode(&g6, 1, &len6, 0);
    struct group_spec g7 = {.ns = "alpha"};
    g7.recs[g7.n++] = kv_record("k7-0", "v", 30);
    uint8_t *e7 = encode(&g7, 1, &len7, 0);

    CHECK_RC(ud_fsm_apply(fsm, 5, e5, len5, &res), 0, res->errmsg);
    assert_int_equal(res->nrecords, 3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(res->records[i].lsn, (uint64_t)i + 1);
    CHECK_RC(ud_fsm_apply(fsm, 6, e6, len6, &res), 0, res->errmsg);
    assert_int_equal(res->records[0].lsn, 4);
    assert_int_equal(res->records[1].status, UD_ENOTFOUND);
    assert_int_equal(res->records[2].lsn, 5);

    /* Applied again: nothing new. */
    CHECK_RC(ud_fsm_apply(fsm, 5, e5, len5, &res), 0, res->errmsg);
    CHECK_RC(ud_fsm_apply(fsm, 6, e6, len6, &res), 0, res->errmsg);
    assert_int_equal(ns_last_lsn(reg, "alpha"), 5);
    struct ud_fsm_stats st;
    ud_fsm_stats(fsm, &st);
    assert_int_equal(st.applied, 5);
    assert_int_equal(st.skipped, 6); /* the rejected commit sits before an applied record */

    /* Flushed to LMDB and reopened: the position comes back from the newest WAL record. */
    struct ud_ns *ns;
    assert_int_equal(ud_registry_acquire(reg, "alpha", &ns), 0);
    CHECK_RC(ud_ns_flush(ns, errmsg), 0, errmsg);
    ud_registry_release(reg, ns);
    ud_fsm_close(fsm);
    ud_registry_close(reg);
    open_node(dir, &reg, &fsm);
    assert_int_equal(ud_registry_acquire(reg, "alpha", &ns), 0);
    uint64_t ri;
    uint32_t rp;
    ud_ns_last_raft_position(ns, &ri, &rp);
    ud_registry_release(reg, ns);
    assert_int_equal(ri, 6);
    assert_int_equal(rp, 2);
    CHECK_RC(ud_fsm_apply(fsm, 4, create, len, &res), 0, res->errmsg);
    assert_int_equal(res->status, UD_EEXIST);
    CHECK_RC(ud_fsm_apply(fsm, 5, e5, len5, &res), 0, res->errmsg);
    CHECK_RC(ud_fsm_apply(fsm, 6, e6, len6, &res), 0, res->errmsg);
    assert_int_equal(ns_last_lsn(reg, "alpha"), 5);
    CHECK_RC(ud_fsm_apply(fsm, 7, e7, len7, &res), 0, res->errmsg);
    assert_int_equal(res->records[0].lsn, 6);
    ud_fsm_stats(fsm, &st);
    assert_int_equal(st.applied, 1);
    assert_int_equal(st.skipped, 6);

    /* A command of a newer format (version, or a flag bit this writer does not know) is not a
     * rejection: another writer may apply it, so recording a rejection would diverge. The entry
     * fails (the pipeline stalls on it) and says what to do. */
    uint8_t v7 = e7[0];
    uint8_t f7 = e7[2];
    e7[0] = 9;
    assert_int_equal(ud_fsm_apply(fsm, 8, e7, len7, &res), UD_EVERSION);
    assert_non_null(strstr(res->errmsg, "command format 9 is newer than this writer: upgrade it"));
    e7[0] = v7;
    e7[2] = (uint8_t)(f7 | 0x40);
    assert_int_equal(ud_fsm_apply(fsm, 8, e7, len7, &res), UD_EVERSION);
    assert_non_null(strstr(res->errmsg, "is newer than this writer: upgrade it"));
    assert_int_equal(ns_last_lsn(reg, "alpha"), 6);
    ud_fsm_stats(fsm, &st);
    assert_int_equal(st.applied, 1);
    /* A malformed command (an unknown kind) is a deterministic rejection of the whole entry. */
    e7[2] = f7;
    e7[1] = 7;
    CHECK_RC(ud_fsm_apply(fsm, 8, e7, len7, &res), 0, res->errmsg);
    assert_int_equal(res->status, UD_ECORRUPT);
    assert_int_equal(ns_last_lsn(reg, "alpha"), 6);

    free(create);
    free(e5);
    free(e6);
    free(e7);
    close_node(dir, reg, fsm);
}

/*
 * A namespace whose WAL lost every record raft wrote (docs/engine.md "Retention"; here the WAL
 * removed outright after a flush): it holds LSNs from its store's checkpoint but its newest record
 * carries no raft position. Raft's log replayed on top would apply its entries again at new LSNs,
 * and a snapshot's check could not tell whether the copy is the one it lists. Both refuse it: the
 * snapshot's restore asks for a catch-up of it (UD_ERANGE), an entry for it fails as a storage
 * failure (not applied, not rejected), as a catch-up refuses such a copy.
 */
static void test_namespace_without_raft_position(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("raft-no-position");
    char errmsg[UD_ERRMSG_SIZE] = "";
    struct ud_registry *reg;
    struct ud_fsm *fsm;
    open_node(dir, &reg, &fsm);
    const struct ud_fsm_result *res;
    size_t len, len2;
    uint8_t *create = encode_ns(UD_COMMAND_NS_CREATE, "alpha", &len, 0);
    CHECK_RC(ud_fsm_apply(fsm, 1, create, len, &res), 0, res->errmsg);
    struct group_spec g = {.ns = "alpha"};
    g.recs[g.n++] = kv_record("k", "v", 10);
    uint8_t *e2 = encode(&g, 1, &len2, 0);
    CHECK_RC(ud_fsm_apply(fsm, 2, e2, len2, &res), 0, res->errmsg);
    assert_int_equal(res->records[0].lsn, 1);
    uint8_t *snap;
    size_t snap_len;
    CHECK_RC(ud_fsm_snapshot(fsm, 2, &snap, &snap_len, errmsg), 0, errmsg);
    struct ud_ns *ns;
    assert_int_equal(ud_registry_acquire(reg, "alpha", &ns), 0);
    CHECK_RC(ud_ns_flush(ns, errmsg), 0, errmsg);
    ud_registry_release(reg, ns);
    ud_fsm_close(fsm);
    ud_registry_close(reg);

    char wal[4096];
    snprintf(wal, sizeof wal, "%s/alpha/wal", dir);
    ud_test_rmtree(wal);
    open_node(dir, &reg, &fsm);
    assert_int_equal(ns_last_lsn(reg, "alpha"), 1);

    int rc = ud_fsm_apply(fsm, 2, e2, len2, &res);
    print_message("# entry 2 again: %s: %s\n", ud_strerror(rc), res->errmsg);
    assert_int_equal(rc, UD_EIO);
    /* The message says the way out (docs/raft.md "Namespaces without a raft position"). */
    assert_non_null(strstr(res->errmsg, "remove its directory"));
    assert_int_equal(ns_last_lsn(reg, "alpha"), 1);

    rc = ud_fsm_restore(fsm, snap, snap_len, errmsg);
    print_message("# restore: %s: %s\n", ud_strerror(rc), errmsg);
    assert_int_equal(rc, UD_ERANGE);
    struct ud_catchup_plan plan = {0};
    assert_int_equal(ud_fsm_take_behind(fsm, &plan), 1);
    assert_int_equal(plan.ntargets, 1);
    assert_string_equal(plan.targets[0].ns, "alpha");
    /* Replaced by a peer's copy, not continued from its LSN: which entries it holds is unknown. */
    assert_true(plan.targets[0].replace);
    ud_catchup_plan_free(&plan);

    free(snap);
    free(create);
    free(e2);
    close_node(dir, reg, fsm);
}

/* --- faults: kills, disconnects and I/O faults, states compared at equal applied index ----------
 */

#define FAULT_ROUNDS 120
#define FP_MAX_INDEX 8192

/*
 * What every server's state looked like at each applied index. A fixture hook (called after
 * every step) fingerprints a server whenever its applied index moved: the FSM's snapshot
 * metadata at that index (each namespace's last LSN and raft position, the member directory, the
 * idempotency window) and every WAL record of both namespaces, LSN by LSN (dense: checked). The
 * first server to reach an index records its fingerprint; every other one that reaches it must
 * match. raft_fixture's hook has no user pointer: one table at a time, in a static.
 */
struct fp_table {
    struct cluster *c;
    uint64_t fp[FP_MAX_INDEX]; /* 0: no server was seen at that index yet */
    raft_index seen[NSERVERS];
    unsigned compared;
    unsigned mismatches;
    raft_index first_mismatch;
};
static struct fp_table *fp_current;

static uint64_t fnv1a(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

static uint64_t server_fingerprint(struct server *s, raft_index applied)
{
    char errmsg[UD_ERRMSG_SIZE] = "";
    uint8_t *snap;
    size_t len;
    CHECK_RC(ud_fsm_snapshot(s->fsm, applied, &snap, &len, errmsg), 0, errmsg);
    uint64_t h = fnv1a(0xcbf29ce484222325ull, snap, len);
    free(snap);
    static const char *const names[] = {"alpha", "beta"};
    for (int n = 0; n < 2; n++) {
        struct ud_ns *ns;
        if (ud_registry_acquire(s->reg, names[n], &ns) != 0)
            continue;
        uint64_t first, visible;
        ud_ns_stream_range(ns, &first, &visible);
        struct ud_wal_reader *r;
        assert_int_equal(ud_ns_stream_open(ns, first, &r), 0);
        for (uint64_t want = first; want <= visible; want++) {
            const uint8_t *data;
            uint32_t dlen;
            uint64_t lsn;
            assert_int_equal(ud_wal_reader_next(r, &data, &dlen, &lsn), 0);
            assert_int_equal(lsn, want);
            h = fnv1a(fnv1a(h, &lsn, sizeof lsn), data, dlen);
        }
        ud_wal_reader_close(r);
        ud_registry_release(s->reg, ns);
    }
    return h | 1; /* never 0, which marks an empty slot */
}

static void fingerprint_hook(struct raft_fixture *f, struct raft_fixture_event *event)
{
    (void)event;
    struct fp_table *t = fp_current;
    for (unsigned i = 0; i < NSERVERS; i++) {
        raft_index applied = raft_last_applied(raft_fixture_get(f, i));
        if (applied == t->seen[i])
            continue;
        assert_true(applied < FP_MAX_INDEX);
        t->seen[i] = applied;
        uint64_t h = server_fingerprint(&t->c->s[i], applied);
        if (t->fp[applied] == 0) {
            t->fp[applied] = h;
            continue;
        }
        t->compared++;
        if (t->fp[applied] != h) {
            if (t->mismatches++ == 0)
                t->first_mismatch = applied;
        }
    }
}

static void heal(struct cluster *c)
{
    for (unsigned i = 0; i < NSERVERS; i++) {
        if (!raft_fixture_alive(&c->f, i))
            raft_fixture_revive(&c->f, i);
        for (unsigned j = 0; j < NSERVERS; j++) {
            if (i != j) {
                raft_fixture_desaturate(&c->f, i, j);
                raft_fixture_reconnect(&c->f, i, j);
            }
        }
    }
}

static void cut_link(struct cluster *c, unsigned i, unsigned j)
{
    raft_fixture_saturate(&c->f, i, j);
    raft_fixture_saturate(&c->f, j, i);
}

/* The record at lsn in ns on server s contains key. */
static int wal_has(struct server *s, const char *name, uint64_t lsn, const char *key)
{
    struct ud_ns *ns;
    assert_int_equal(ud_registry_acquire(s->reg, name, &ns), 0);
    struct ud_wal_reader *r;
    int found = 0;
    if (ud_ns_stream_open(ns, lsn, &r) == 0) {
        const uint8_t *data;
        uint32_t len;
        uint64_t got;
        if (ud_wal_reader_next(r, &data, &len, &got) == 0 && got == lsn)
            found = memmem(data, len, key, strlen(key)) != NULL;
        ud_wal_reader_close(r);
    }
    ud_registry_release(s->reg, ns);
    return found;
}

/*
 * Randomized but deterministic (fixed seed) faults on raft_fixture while the leader of the moment
 * takes one entry per round: a server killed and revived, the leader or one link cut off in both
 * directions (saturated: messages silently dropped), the leader deposed, and I/O failures
 * injected into a server's raft log. Proposals may fail (leadership lost, I/O errors): their
 * outcome is unknown. Throughout, any two servers at the same applied index have the same
 * fingerprint (fp_table). In the end, healed, all three reach the same index with equal
 * fingerprints (so identical WAL bytes at every LSN), and every acknowledged record is in the
 * WAL at its LSN on all three. The control at the end applies a record on one server behind
 * raft's back: the very next entry must be reported as a mismatch.
 */
static void test_faults_keep_states_equal(void **state)
{
    (void)state;
    struct cluster c;
    cluster_open(&c, "raft-faults", 0);
    struct fp_table *t = calloc(1, sizeof *t);
    assert_non_null(t);
    t->c = &c;
    fp_current = t;
    raft_fixture_hook(&c.f, fingerprint_hook);
    struct outcome o;
    propose_ns(&c, UD_COMMAND_NS_CREATE, "alpha", &o);
    propose_ns(&c, UD_COMMAND_NS_CREATE, "beta", &o);

    struct outcome *outs = calloc(FAULT_ROUNDS, sizeof *outs);
    assert_non_null(outs);
    uint64_t rng = 0x5eed1234abcdull;
    unsigned kills = 0, cut_leaders = 0, cut_links = 0, disconnects = 0, deposals = 0;
    unsigned io_faults = 0;
    unsigned proposed = 0, refused = 0;
    for (int round = 0; round < FAULT_ROUNDS; round++) {
        unsigned leader = raft_fixture_leader_index(&c.f);
        unsigned victim = (unsigned)(ud_test_rand(&rng) % NSERVERS);
        switch (ud_test_rand(&rng) % 11) {
        case 0:
            if (raft_fixture_alive(&c.f, victim)) {
                raft_fixture_kill(&c.f, victim);
                kills++;
            }
            break;
        case 1:
            if (leader < NSERVERS) {
                for (unsigned j = 0; j < NSERVERS; j++)
                    if (j != leader)
                        cut_link(&c, leader, j);
                cut_leaders++;
            }
            break;
        case 2:
            cut_link(&c, victim, (victim + 1) % NSERVERS);
            cut_links++;
            break;
        case 3:
            /* raft_fixture_depose needs a leader and a healthy cluster to depose it. */
            heal(&c);
            if (raft_fixture_step_until_has_leader(&c.f, 5000)) {
                raft_fixture_depose(&c.f);
                deposals++;
            }
            break;
        case 4:
            /* The leader's next raft log write fails: the append of the entry proposed below,
             * which raft_apply then refuses. (On a follower any raft I/O failure turns raft 0.15
             * unavailable until a restart: the end of the test does that once.) */
            if (leader < NSERVERS) {
                raft_fixture_io_fault(&c.f, leader, 0, 1);
                io_faults++;
            }
            break;
        case 5:
            /* Unlike a saturated link, sends fail at once (RAFT_NOCONNECTION). */
            raft_fixture_disconnect(&c.f, victim, (victim + 2) % NSERVERS);
            raft_fixture_disconnect(&c.f, (victim + 2) % NSERVERS, victim);
            disconnects++;
            break;
        default:
            heal(&c);
            break;
        }
        leader = raft_fixture_leader_index(&c.f);
        if (leader >= NSERVERS && raft_fixture_step_until_has_leader(&c.f, 3000))
            leader = raft_fixture_leader_index(&c.f);
        if (leader < NSERVERS) {
            size_t len;
            uint8_t *buf = encode_mixed(100 + round, 2, 1, 0, &len);
            if (submit(&c, leader, buf, len, &outs[round]) == 0)
                proposed++;
            else
                refused++;
        }
        raft_fixture_step_until_elapsed(&c.f, 100 + (unsigned)(ud_test_rand(&rng) % 900));
    }

    /* Healed: a last entry reaches all three. */
    heal(&c);
    assert_true(raft_fixture_step_until_has_leader(&c.f, 20000));
    propose_mixed(&c, 999, 1, 1, 0, &o);
    raft_index last = raft_last_index(raft_fixture_get(&c.f, raft_fixture_leader_index(&c.f)));
    assert_true(raft_fixture_step_until_applied(&c.f, NSERVERS, last, 20000));
    raft_fixture_step_until_elapsed(&c.f, 10); /* the hook sees the last applies */
    for (unsigned i = 0; i < NSERVERS; i++)
        assert_int_equal(t->seen[i], raft_last_applied(raft_fixture_get(&c.f, i)));
    assert_int_equal(t->seen[0], t->seen[1]);
    assert_int_equal(t->seen[1], t->seen[2]);
    if (t->mismatches)
        print_message("# %u fingerprint mismatches, the first at applied index %llu\n",
                      t->mismatches, (unsigned long long)t->first_mismatch);
    assert_int_equal(t->mismatches, 0);

    /* Every acknowledged record is on all three, at its LSN. */
    unsigned acked = 0;
    for (int round = 0; round < FAULT_ROUNDS; round++) {
        struct outcome *x = &outs[round];
        if (!x->done || x->status != 0)
            continue;
        assert_int_equal(x->result_status, 0);
        assert_int_equal(x->n, 3);
        for (size_t k = 0; k < 3; k++) {
            char key[32];
            snprintf(key, sizeof key, "%s-%03d-%zu", k < 2 ? "a" : "b", 100 + round, k < 2 ? k : 0);
            for (unsigned i = 0; i < NSERVERS; i++)
                assert_true(wal_has(&c.s[i], k < 2 ? "alpha" : "beta", x->lsns[k], key));
        }
        acked++;
    }
    print_message("# %u rounds: %u kills, %u leaders and %u links cut off, %u links disconnected, "
                  "%u deposed, %u I/O faults; %u entries proposed (%u refused), %u acknowledged, "
                  "the rest unknown; %u fingerprints compared at equal applied index, up to index "
                  "%llu\n",
                  FAULT_ROUNDS, kills, cut_leaders, cut_links, disconnects, deposals, io_faults,
                  proposed, refused, acked, t->compared, (unsigned long long)t->seen[0]);
    /* The faults did happen and the check did compare: otherwise it proves nothing. */
    assert_true(kills > 0 && cut_leaders > 0 && cut_links > 0 && disconnects > 0 && deposals > 0 &&
                io_faults > 0);
    assert_true(acked > FAULT_ROUNDS / 3);
    assert_true(acked < proposed || refused > 0);
    assert_true(t->compared >= acked);

    /* A follower whose raft log write fails turns unavailable (raft 0.15) and applies nothing
     * more; the other two go on. Its state matched theirs up to where it stopped. */
    unsigned leader = raft_fixture_leader_index(&c.f);
    unsigned bad = (leader + 1) % NSERVERS, good = (leader + 2) % NSERVERS;
    raft_fixture_io_fault(&c.f, bad, 0, 1);
    size_t len;
    uint8_t *buf = encode_mixed(997, 1, 1, 0, &len);
    assert_int_equal(submit(&c, leader, buf, len, &o), 0);
    raft_fixture_step_until_elapsed(&c.f, 500);
    assert_int_equal(raft_state(raft_fixture_get(&c.f, bad)), RAFT_UNAVAILABLE);
    raft_fixture_kill(&c.f, bad); /* so that propose() does not wait for it */
    assert_true(raft_fixture_step_until_has_leader(&c.f, 5000));
    assert_int_equal(raft_fixture_leader_index(&c.f), leader);
    for (int round = 0; round < 3; round++)
        propose_mixed(&c, 994 + round, 1, 1, 0, &o);
    raft_fixture_step_until_elapsed(&c.f, 10);
    last = raft_last_applied(raft_fixture_get(&c.f, leader));
    assert_int_equal(t->seen[good], last);
    assert_true(t->seen[bad] < last);
    assert_int_equal(t->mismatches, 0);

    /* Control: a record applied on the leader outside raft makes it diverge, and the very next
     * entry is reported. */
    struct ud_ns *ns;
    char errmsg[UD_ERRMSG_SIZE] = "";
    uint64_t lsn;
    assert_int_equal(ud_registry_acquire(c.s[leader].reg, "alpha", &ns), 0);
    CHECK_RC(ud_ns_kv_put(ns, "rogue", 5, "x", 1, &lsn, errmsg), 0, errmsg);
    ud_registry_release(c.s[leader].reg, ns);
    propose_mixed(&c, 998, 1, 1, 0, &o);
    raft_fixture_step_until_elapsed(&c.f, 10);
    assert_int_equal(t->mismatches, 1);
    assert_int_equal(t->first_mismatch, last + 1);

    raft_fixture_hook(&c.f, NULL);
    cluster_close_raft(&c);
    cluster_free(&c);
    fp_current = NULL;
    free(t);
    free(outs);
}

/* --- the apply thread reads raft's entry buffers ------------------------------------------------
 */

/* A disk that fills under one server's namespaces (its dir): creating a WAL segment fails. */
static struct ud_test_full_fs lag;

/* A piped cluster on a new loop whose servers' disks are `lag` (not full yet), with 64 KiB WAL
 * segments: an entry of 5 records of 8 KiB fills one, so a full disk stalls the next entry. */
static void open_on_full_disk(struct cluster *c, const char *tag, unsigned snapshot_threshold,
                              uv_loop_t *loop)
{
    assert_int_equal(uv_loop_init(loop), 0);
    struct ud_engine_options eo = engine_defaults();
    eo.segment_size = 64u << 10;
    ud_test_full_fs_init(&lag);
    eo.fs = &lag.fs;
    cluster_open_piped(c, tag, snapshot_threshold, eo, loop);
}

/* With the pipeline the result is filled in by the apply thread later (the writer's node waits
 * for it with ud_fsm_on_applied): only raft's status is looked at here. */
static void status_cb(struct raft_apply *req, int status, void *result)
{
    struct outcome *o = req->data;
    (void)result;
    o->done = 1;
    o->status = status;
    free(req);
}

/* buf (raft_malloc'd, transferred) proposed on the leader, stepped until every server but `away`
 * applied it. */
static void propose_without(struct cluster *c, unsigned away, uint8_t *buf, size_t len,
                            struct outcome *o)
{
    unsigned leader = raft_fixture_leader_index(&c->f);
    assert_true(leader < NSERVERS && leader != away);
    struct raft_apply *req = malloc(sizeof *req);
    assert_non_null(req);
    memset(o, 0, sizeof *o);
    req->data = o;
    struct raft_buffer b = {.base = buf, .len = len};
    assert_int_equal(raft_apply(raft_fixture_get(&c->f, leader), req, &b, 1, status_cb), 0);
    raft_index index = raft_last_index(raft_fixture_get(&c->f, leader));
    for (unsigned i = 0; i < NSERVERS; i++)
        if (i != away)
            assert_true(raft_fixture_step_until_applied(&c->f, i, index, 10000));
    assert_true(o->done);
    assert_int_equal(o->status, 0);
}

/* 5 records of 8 KiB to namespace ns (keys "<ns>-<round>-<i>") through propose_without. */
static void propose_big_to_without(struct cluster *c, const char *ns, unsigned away, int round,
                                   struct outcome *o)
{
    static char v[8192];
    memset(v, 'v', sizeof v - 1);
    struct group_spec g = {.ns = ns};
    char k[48];
    for (size_t i = 0; i < 5; i++) {
        snprintf(k, sizeof k, "%s-%03d-%zu", ns, round, i);
        g.recs[g.n++] = kv_record(k, v, 1000u * (uint64_t)round + i + 1);
    }
    size_t len;
    uint8_t *buf = encode(&g, 1, &len, 1);
    propose_without(c, away, buf, len, o);
}

/* propose_big's entry on the leader, stepped until every server but `away` applied it. */
static void propose_big_without(struct cluster *c, unsigned away, int round, struct outcome *o)
{
    propose_big_to_without(c, "alpha", away, round, o);
}

/* Cuts server away off from the others while they commit 12 large entries without it: more
 * than their logs keep (the tests that call this open the cluster with a snapshot threshold of
 * 4), so that once the links heal the leader sends it a snapshot. */
static void leave_behind(struct cluster *c, unsigned away, int *round, struct outcome *o)
{
    for (unsigned j = 0; j < NSERVERS; j++)
        if (j != away)
            cut_link(c, away, j);
    for (int i = 0; i < 12; i++, (*round)++)
        propose_big_without(c, away, *round, o);
}

/* leave_behind, then the links heal with the leader's snapshot garbled on its way to away:
 * steps until raft there stored it and the restore refused it. Returns the snapshot index raft
 * took (past the one it had). */
static raft_index leave_behind_garbled(struct cluster *c, unsigned away, int *round,
                                       struct outcome *o)
{
    struct raft *r = raft_fixture_get(&c->f, away);
    raft_index had = r->log.snapshot.last_index;
    leave_behind(c, away, round, o);
    garble.server = away;
    garble.on = 1;
    heal(c);
    for (int i = 0; i < 2000 && (garble.garbled == 0 || r->snapshot.put.data != NULL); i++)
        raft_fixture_step(&c->f);
    assert_true(garble.garbled >= 1);
    assert_null(r->snapshot.put.data);
    raft_index installed = r->log.snapshot.last_index;
    assert_true(installed > had);
    return installed;
}

static int stalled(struct ud_fsm *fsm)
{
    char errmsg[UD_ERRMSG_SIZE] = "";
    return ud_fsm_check_stalled(fsm, errmsg) != 0;
}

/*
 * The apply thread reads committed entries from raft's own buffers, and raft drops a follower's
 * log when an InstallSnapshot arrives, before the restore hook can wait for the thread. Here a
 * follower's apply stalls on a full disk with entries queued, is cut off while the others
 * snapshot past them, and then receives the leader's snapshot: raft frees its log while the
 * queue still holds those entries. Once the disk has room the thread applies them, from copies
 * the FSM made before raft handled the message (under AddressSanitizer, reading raft's freed
 * buffers instead fails the test).
 */
static void test_queue_outlives_snapshot_install(void **state)
{
    (void)state;
    uv_loop_t loop;
    struct cluster c;
    open_on_full_disk(&c, "raft-borrow", 4, &loop);
    struct outcome o;
    propose_ns(&c, UD_COMMAND_NS_CREATE, "alpha", &o);
    unsigned away = (raft_fixture_leader_index(&c.f) + 1) % NSERVERS;
    struct ud_fsm *fsm = c.s[away].fsm;
    struct raft *r = raft_fixture_get(&c.f, away);

    /* The follower's disk fills: its thread stalls on the first entry that needs a segment,
     * and the entries committed after it queue behind it. */
    lag.dir = c.s[away].dir;
    atomic_store(&lag.full, 1);
    int round = 0;
    for (; round < 8 || !stalled(fsm); round++) {
        assert_true(round < 40);
        propose_big_without(&c, NSERVERS, round, &o);
        uv_run(&loop, UV_RUN_NOWAIT);
        for (int i = 0; i < 100 && !stalled(fsm); i++)
            usleep(1000);
    }
    int queued_rounds = round;
    assert_true(ud_fsm_handed(fsm) > ud_fsm_finished(fsm) + 2);
    uint64_t queued = ud_fsm_handed(fsm) - ud_fsm_finished(fsm);
    /* The queued entries read raft's buffers, on the follower and on the leader (a copy each
     * would make this test pass without exercising anything). */
    struct ud_fsm_stats st;
    ud_fsm_stats(fsm, &st);
    assert_true(st.lent >= queued);
    assert_int_equal(st.owned, 0);
    ud_fsm_stats(c.s[raft_fixture_leader_index(&c.f)].fsm, &st);
    assert_true(st.lent > 0);

    /* Cut off, it falls behind what the others keep in their logs. */
    raft_index had = r->log.snapshot.last_index;
    leave_behind(&c, away, &round, &o);

    /* Back: the leader sends its snapshot, and raft drops the follower's log on receiving it
     * (the restore fails: the follower's apply is stalled). */
    heal(&c);
    for (int i = 0; i < 200 && r->log.snapshot.last_index == had; i++)
        raft_fixture_step(&c.f);
    assert_true(r->log.snapshot.last_index > had);
    /* raft stores the snapshot, then calls the restore hook, which fails: still stalled. */
    for (int i = 0; i < 200 && r->snapshot.put.data != NULL; i++)
        raft_fixture_step(&c.f);
    assert_null(r->snapshot.put.data);
    assert_true(stalled(fsm));
    ud_fsm_stats(fsm, &st);
    assert_true(st.owned > 0); /* copied before raft handled the message */
    print_message("# %" PRIu64 " entries queued when the follower's log was dropped at index "
                  "%llu\n",
                  queued, (unsigned long long)r->log.snapshot.last_index);
    /* raft took the snapshot's position although the restore failed, and does not retry it:
     * the FSM asks for raft to be started again, but not while the pipeline is stalled. */
    raft_index installed = r->log.snapshot.last_index;
    assert_true(r->last_applied < installed);
    assert_false(ud_fsm_behind_pending(fsm));

    /* Room again: the queue applies, from its copies. */
    atomic_store(&lag.full, 0);
    for (int i = 0; i < 5000 && (stalled(fsm) || ud_fsm_handed(fsm) != ud_fsm_finished(fsm)); i++) {
        uv_run(&loop, UV_RUN_NOWAIT);
        usleep(1000);
    }
    assert_false(stalled(fsm));
    assert_int_equal(ud_fsm_handed(fsm), ud_fsm_finished(fsm));
    /* raft still applies nothing past the snapshot on its own ... */
    for (int i = 0; i < 20; i++)
        raft_fixture_step(&c.f);
    assert_true(r->last_applied < installed);
    /* ... so the FSM offers a plan without targets: close raft and start it again (the node's
     * watch timer hands it to the writer's catch-up, which then only restarts raft). */
    assert_true(ud_fsm_behind_pending(fsm));
    struct ud_catchup_plan plan = {0};
    assert_int_equal(ud_fsm_take_behind(fsm, &plan), 1);
    assert_int_equal(plan.ntargets, 0);
    assert_int_equal(plan.snapshot_index, installed);
    ud_catchup_plan_free(&plan);
    assert_false(ud_fsm_behind_pending(fsm));
    assert_int_equal(ud_fsm_take_behind(fsm, &plan), 0);
    struct ud_ns *ns;
    assert_int_equal(ud_registry_acquire(c.s[away].reg, "alpha", &ns), 0);
    for (int k = 0; k < queued_rounds; k++)
        for (int i = 0; i < 5; i++) {
            char key[48];
            snprintf(key, sizeof key, "alpha-%03d-%d", k, i);
            struct ud_buf val = {0};
            uint64_t lsn = 0;
            assert_int_equal(ud_ns_kv_get(ns, key, strlen(key), &val, &lsn), 0);
            assert_int_equal(val.len, 8191);
            assert_int_equal(lsn, 5u * (uint64_t)k + (uint64_t)i + 1);
            ud_buf_free(&val);
        }
    ud_registry_release(c.s[away].reg, ns);
    assert_true(atomic_load(&lag.refused) >= 2);
    cluster_close_raft(&c);
    cluster_free(&c);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static int registered(struct ud_registry *reg, const char *name)
{
    struct ud_ns *ns;
    if (ud_registry_acquire(reg, name, &ns) != 0)
        return 0;
    ud_registry_release(reg, ns);
    return 1;
}

/* After cluster_close_raft: the WAL of ns holds the same bytes at every LSN on every server. */
static void assert_same_wals(struct cluster *c, const char *ns)
{
    struct wal_dump d[NSERVERS];
    for (unsigned i = 0; i < NSERVERS; i++)
        dump_wal(c->s[i].dir, ns, &d[i]);
    for (unsigned i = 1; i < NSERVERS; i++) {
        assert_int_equal(d[i].first, d[0].first);
        assert_int_equal(d[i].n, d[0].n);
        for (size_t k = 0; k < d[0].n; k++) {
            assert_int_equal(d[i].recs[k].len, d[0].recs[k].len);
            assert_memory_equal(d[i].recs[k].buf, d[0].recs[k].buf, d[0].recs[k].len);
        }
    }
    for (unsigned i = 0; i < NSERVERS; i++)
        dump_free(&d[i]);
}

/*
 * A namespace deleted while a follower was cut off, before the snapshot the leader then sends it:
 * the snapshot does not list it, and no log holds the delete any more. The follower's restore
 * deletes it, as that entry would have (it was created before the snapshot). Restoring a snapshot
 * again later (a restart from it) keeps the namespaces created after it, with records or without:
 * raft's log after the snapshot creates them. Before, the restore looked only at the namespaces
 * the snapshot lists: the follower kept beta, and creating beta again was UD_EEXIST there alone.
 */
static void test_restore_deletes_namespace_deleted_while_away(void **state)
{
    (void)state;
    struct cluster c;
    cluster_open(&c, "raft-gone", 4);
    struct outcome o;
    propose_ns(&c, UD_COMMAND_NS_CREATE, "alpha", &o);
    propose_ns(&c, UD_COMMAND_NS_CREATE, "beta", &o);
    propose_mixed(&c, 0, 2, 2, 0, &o);
    unsigned away = (raft_fixture_leader_index(&c.f) + 1) % NSERVERS;
    struct raft *r = raft_fixture_get(&c.f, away);
    raft_index had = r->log.snapshot.last_index;
    for (unsigned j = 0; j < NSERVERS; j++)
        if (j != away)
            cut_link(&c, away, j);
    /* Without it: beta grows past what the logs keep, then is deleted; deleting it again finds
     * nothing, and takes the others' snapshots past the delete. alpha stays as it was, so the
     * snapshot is not ahead of the follower. */
    for (int round = 1; round <= 12; round++)
        propose_big_to_without(&c, "beta", away, round, &o);
    for (int i = 0; i < 8; i++) {
        size_t len;
        uint8_t *buf = encode_ns(UD_COMMAND_NS_DELETE, "beta", &len, 1);
        propose_without(&c, away, buf, len, &o);
    }
    heal(&c);
    unsigned leader = raft_fixture_leader_index(&c.f);
    assert_true(leader < NSERVERS && leader != away);
    raft_index last = raft_last_index(raft_fixture_get(&c.f, leader));
    assert_true(raft_fixture_step_until_applied(&c.f, away, last, 10000));
    assert_true(r->log.snapshot.last_index > had); /* got the leader's snapshot */
    struct ud_catchup_plan plan = {0};
    assert_int_equal(ud_fsm_take_behind(c.s[away].fsm, &plan), 0); /* restored */
    assert_true(registered(c.s[away].reg, "alpha"));
    assert_false(registered(c.s[away].reg, "beta"));
    char tomb[4096];
    snprintf(tomb, sizeof tomb, "%s/.raft-deleted-beta", ud_registry_root(c.s[away].reg));
    assert_int_equal(access(tomb, F_OK), 0);

    /* Created again, beta is the same new namespace everywhere. */
    propose_ns(&c, UD_COMMAND_NS_CREATE, "beta", &o);
    assert_int_equal(o.result_status, 0);
    propose_mixed(&c, 20, 1, 3, 0, &o);

    /* A snapshot, then namespaces created after it, one without records: restoring that
     * snapshot keeps them. Restoring it on running servers also loads its older replicated
     * tables (idempotency, members): harmless here, every server gets the same ones and the
     * test proposes no more after it. */
    char errmsg[UD_ERRMSG_SIZE] = "";
    uint8_t *snap;
    size_t snap_len;
    CHECK_RC(ud_fsm_snapshot(c.s[away].fsm, raft_last_applied(r), &snap, &snap_len, errmsg), 0,
             errmsg);
    propose_ns(&c, UD_COMMAND_NS_CREATE, "gamma", &o);
    propose_ns(&c, UD_COMMAND_NS_CREATE, "delta", &o);
    struct group_spec g = {.ns = "delta"};
    g.recs[g.n++] = kv_record("d", "after the snapshot", 99000);
    size_t len;
    uint8_t *buf = encode(&g, 1, &len, 1);
    propose(&c, buf, len, &o);
    assert_int_equal(o.result_status, 0);
    for (unsigned i = 0; i < NSERVERS; i++) {
        CHECK_RC(ud_fsm_restore(c.s[i].fsm, snap, snap_len, errmsg), 0, errmsg);
        assert_true(registered(c.s[i].reg, "gamma"));
        assert_true(registered(c.s[i].reg, "delta"));
        assert_true(registered(c.s[i].reg, "beta"));
    }
    free(snap);
    cluster_close_raft(&c);
    assert_same_wals(&c, "alpha");
    assert_same_wals(&c, "beta");
    assert_same_wals(&c, "delta");
    cluster_free(&c);
}

/* While set, renaming a path whose target contains this fails with EIO: the rename of a
 * namespace's directory that unregisters it (a failing disk under one server's namespaces).
 * This program's rename comes before the C library's. */
static const char *rename_fails_to;

int rename(const char *from, const char *to)
{
    if (rename_fails_to != NULL && strstr(to, rename_fails_to) != NULL) {
        errno = EIO;
        return -1;
    }
    return renameat(AT_FDCWD, from, AT_FDCWD, to);
}

/*
 * A namespace delete that fails on the leader's storage (the rename that unregisters it) is not
 * that entry's outcome there: the leader does not apply it until the delete succeeds, and then
 * answers the proposer. Before, the entry counted as applied with the error as its result, and
 * beta lived on on the leader alone (its later writes there, rejected on the others).
 */
static void test_failed_delete_is_not_applied(void **state)
{
    (void)state;
    struct cluster c;
    cluster_open(&c, "raft-delfail", 0);
    struct outcome o, del;
    propose_ns(&c, UD_COMMAND_NS_CREATE, "alpha", &o);
    propose_ns(&c, UD_COMMAND_NS_CREATE, "beta", &o);
    propose_mixed(&c, 0, 1, 1, 0, &o);
    unsigned leader = raft_fixture_leader_index(&c.f);
    struct raft *r = raft_fixture_get(&c.f, leader);
    /* Only the leader's: each registry renames into its own root. */
    char blocked[4096];
    snprintf(blocked, sizeof blocked, "%s/.deleted-beta-", ud_registry_root(c.s[leader].reg));
    rename_fails_to = blocked;
    size_t len;
    uint8_t *buf = encode_ns(UD_COMMAND_NS_DELETE, "beta", &len, 1);
    assert_int_equal(submit(&c, leader, buf, len, &del), 0);
    raft_index index = raft_last_index(r);
    for (unsigned i = 0; i < NSERVERS; i++)
        if (i != leader)
            assert_true(raft_fixture_step_until_applied(&c.f, i, index, 10000));
    for (int i = 0; i < 50; i++)
        raft_fixture_step(&c.f);
    assert_true(raft_last_applied(r) < index);
    assert_false(del.done);
    assert_true(registered(c.s[leader].reg, "beta"));
    for (unsigned i = 0; i < NSERVERS; i++)
        if (i != leader)
            assert_false(registered(c.s[i].reg, "beta"));

    /* The disk is back: the leader applies the delete at the next commit, then what follows. */
    rename_fails_to = NULL;
    struct group_spec g = {.ns = "alpha"};
    g.recs[g.n++] = kv_record("a", "after the delete", 99000);
    buf = encode(&g, 1, &len, 1);
    propose(&c, buf, len, &o);
    assert_int_equal(o.result_status, 0);
    assert_true(del.done);
    assert_int_equal(del.status, 0);
    assert_int_equal(del.result_status, 0);
    for (unsigned i = 0; i < NSERVERS; i++)
        assert_false(registered(c.s[i].reg, "beta"));
    cluster_close_raft(&c);
    assert_same_wals(&c, "alpha");
    cluster_free(&c);
}

/* What the proposer of one entry learns through ud_fsm_on_applied, as the writer's node does. */
struct answer {
    struct ud_fsm *fsm;
    int done;
    int status;
    char msg[UD_ERRMSG_SIZE];
};

static void answer_applied(void *arg, int status, const struct ud_fsm_result *res,
                           const char *errmsg)
{
    (void)res;
    struct answer *a = arg;
    a->done = 1;
    a->status = status;
    snprintf(a->msg, sizeof a->msg, "%s", errmsg != NULL ? errmsg : "");
}

static void answer_cb(struct raft_apply *req, int status, void *result)
{
    struct answer *a = req->data;
    free(req);
    if (status != 0) {
        a->done = 1;
        a->status = status;
        return;
    }
    ud_fsm_on_applied(a->fsm, result, answer_applied, a);
}

/*
 * The leader's apply stalls on a full disk and the writer stops: the entries it answers unapplied
 * are committed, and raft applies them at the next start (or the other writers already did). Their
 * proposers are told so (the outcome is not known), not only the disk's error, which reads as a
 * failed write that a client retrying without an Idempotency-Key would then apply twice.
 */
static void test_stop_tells_committed_entries_apart(void **state)
{
    (void)state;
    uv_loop_t loop;
    struct cluster c;
    open_on_full_disk(&c, "raft-stop", 0, &loop);
    struct outcome o;
    propose_ns(&c, UD_COMMAND_NS_CREATE, "alpha", &o);
    unsigned leader = raft_fixture_leader_index(&c.f);
    struct ud_fsm *fsm = c.s[leader].fsm;
    struct raft *r = raft_fixture_get(&c.f, leader);
    lag.dir = c.s[leader].dir;
    atomic_store(&lag.full, 1);

    static char v[8192];
    memset(v, 'v', sizeof v - 1);
    struct answer a[16];
    memset(a, 0, sizeof a);
    int n = 0;
    for (; n < 16 && (n < 3 || !stalled(fsm)); n++) {
        struct group_spec g = {.ns = "alpha"};
        char k[48];
        for (size_t i = 0; i < 5; i++) {
            snprintf(k, sizeof k, "alpha-%03d-%zu", n, i);
            g.recs[g.n++] = kv_record(k, v, 1000u * (uint64_t)n + i + 1);
        }
        size_t len;
        uint8_t *buf = encode(&g, 1, &len, 1);
        struct raft_apply *req = malloc(sizeof *req);
        assert_non_null(req);
        a[n].fsm = fsm;
        req->data = &a[n];
        struct raft_buffer b = {.base = buf, .len = len};
        assert_int_equal(raft_apply(r, req, &b, 1, answer_cb), 0);
        assert_true(raft_fixture_step_until_applied(&c.f, leader, raft_last_index(r), 10000));
        uv_run(&loop, UV_RUN_NOWAIT);
        for (int i = 0; i < 100 && !stalled(fsm); i++)
            usleep(1000);
    }
    assert_true(stalled(fsm));
    uv_run(&loop, UV_RUN_NOWAIT);
    int waiting = 0;
    for (int i = 0; i < n; i++)
        waiting += !a[i].done;
    assert_true(waiting >= 1);

    c.stopped[leader] = 1;
    ud_fsm_stop_pipeline(fsm, piped_closed, &c);
    int told = 0;
    for (int i = 0; i < n; i++) {
        assert_true(a[i].done);
        if (a[i].status == 0)
            continue;
        told++;
        if (told == 1)
            print_message("# answered at the stop: %s: %s\n", ud_strerror(a[i].status), a[i].msg);
        assert_int_equal(a[i].status, UD_EINDOUBT);
        assert_non_null(strstr(a[i].msg, "committed, not applied when the writer stopped"));
        assert_non_null(strstr(a[i].msg, ud_strerror(UD_ENOSPC)));
    }
    /* The stalled head and what queued behind it (those applied before it are answered 0). */
    assert_true(told >= 1 && told <= waiting);
    atomic_store(&lag.full, 0);
    cluster_close_raft(&c);
    cluster_free(&c);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* One record to alpha, key k. */
static void put_alpha(struct cluster *c, const char *k, struct outcome *o)
{
    struct group_spec g = {.ns = "alpha"};
    g.recs[g.n++] = kv_record(k, "a value", 77000);
    size_t len;
    uint8_t *buf = encode(&g, 1, &len, 1);
    propose(c, buf, len, o);
}

/* Runs loop until no server's pipeline is stalled or holds entries, or about five seconds. */
static void drain_pipelines(struct cluster *c)
{
    for (int i = 0; i < 5000; i++) {
        int busy = 0;
        for (unsigned k = 0; k < NSERVERS; k++)
            busy |=
                stalled(c->s[k].fsm) || ud_fsm_handed(c->s[k].fsm) != ud_fsm_finished(c->s[k].fsm);
        if (!busy)
            return;
        uv_run(c->loop, UV_RUN_NOWAIT);
        usleep(1000);
    }
    fail_msg("a pipeline is still stalled or busy");
}

/*
 * With the apply pipeline (every writer), a namespace delete that fails on a server's storage
 * stalls that server's pipeline as a failed RECORDS entry does: raft goes on, the entries after
 * it queue behind it, writes are refused meanwhile (ud_fsm_check_stalled), and the apply thread
 * retries it until it applies. Before, the failure went back to raft: a follower did not apply
 * the delete nor anything after it (and raft 0.15 turns a follower unavailable when that happens
 * on a message without entries), and a leader went on taking writes it could not apply. A
 * namespace whose directory is gone already is deleted (before: refused on every retry).
 */
static void test_failed_delete_stalls_pipeline(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct cluster c;
    cluster_open_piped(&c, "raft-delstall", 0, engine_defaults(), &loop);
    struct outcome o;
    const char *names[] = {"alpha", "beta", "gamma", "delta"};
    for (int i = 0; i < 4; i++)
        propose_ns(&c, UD_COMMAND_NS_CREATE, names[i], &o);
    propose_mixed(&c, 0, 1, 1, 0, &o);
    drain_pipelines(&c);
    unsigned leader = raft_fixture_leader_index(&c.f);
    unsigned away = (leader + 1) % NSERVERS;
    struct raft *r = raft_fixture_get(&c.f, away);
    char blocked[4096], errmsg[UD_ERRMSG_SIZE] = "";

    /* A follower's rename fails: its raft applies the delete and what follows (queued), its
     * pipeline stalls, and raft there stays a follower through heartbeats. */
    snprintf(blocked, sizeof blocked, "%s/.deleted-beta-", ud_registry_root(c.s[away].reg));
    rename_fails_to = blocked;
    propose_ns(&c, UD_COMMAND_NS_DELETE, "beta", &o);
    put_alpha(&c, "after beta", &o);
    for (int i = 0; i < 200; i++)
        raft_fixture_step(&c.f);
    assert_true(stalled(c.s[away].fsm));
    assert_int_not_equal(ud_fsm_check_stalled(c.s[away].fsm, errmsg), 0);
    assert_int_equal(raft_state(r), RAFT_FOLLOWER);
    assert_true(registered(c.s[away].reg, "beta"));
    rename_fails_to = NULL;
    drain_pipelines(&c);
    assert_false(registered(c.s[away].reg, "beta"));

    /* The leader's: it stalls and refuses writes (the writer's admission asks
     * ud_fsm_check_stalled) until the retry deletes it. */
    snprintf(blocked, sizeof blocked, "%s/.deleted-gamma-", ud_registry_root(c.s[leader].reg));
    rename_fails_to = blocked;
    propose_ns(&c, UD_COMMAND_NS_DELETE, "gamma", &o);
    assert_true(stalled(c.s[leader].fsm));
    assert_int_not_equal(ud_fsm_check_stalled(c.s[leader].fsm, errmsg), 0);
    assert_true(registered(c.s[leader].reg, "gamma"));
    rename_fails_to = NULL;
    drain_pipelines(&c);
    assert_int_equal(ud_fsm_check_stalled(c.s[leader].fsm, errmsg), 0);

    /* delta's directory is removed by hand on the follower: its delete applies everywhere. */
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/delta", ud_registry_root(c.s[away].reg));
    ud_test_rmtree(dir);
    propose_ns(&c, UD_COMMAND_NS_DELETE, "delta", &o);
    put_alpha(&c, "after delta", &o);
    drain_pipelines(&c);
    for (unsigned i = 0; i < NSERVERS; i++) {
        assert_false(stalled(c.s[i].fsm));
        for (int k = 1; k < 4; k++)
            assert_false(registered(c.s[i].reg, names[k]));
    }
    cluster_close_raft(&c);
    assert_same_wals(&c, "alpha");
    cluster_free(&c);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/*
 * A snapshot that cannot list the namespaces (the registry out of memory) fails. Before, it
 * listed none and succeeded, and its restore, on this node at its next start or on a follower
 * installing it, deleted every namespace created before it (drop_unlisted). A restore that
 * cannot list them fails too, instead of skipping the deletes it owes.
 */
static void test_listing_failure_fails_snapshot(void **state)
{
    (void)state;
    struct cluster c;
    cluster_open(&c, "raft-listfail", 0);
    struct outcome o;
    propose_ns(&c, UD_COMMAND_NS_CREATE, "alpha", &o);
    propose_ns(&c, UD_COMMAND_NS_CREATE, "beta", &o);
    propose_mixed(&c, 0, 1, 1, 0, &o);
    struct ud_fsm *fsm = c.s[0].fsm;
    uint64_t at = raft_last_applied(raft_fixture_get(&c.f, 0));
    char errmsg[UD_ERRMSG_SIZE] = "";
    uint8_t *snap = NULL;
    size_t snap_len = 0;
    ud_registry_fail_lists(1);
    assert_int_equal(ud_fsm_snapshot(fsm, at, &snap, &snap_len, errmsg), UD_ENOMEM);
    assert_null(snap);
    CHECK_RC(ud_fsm_snapshot(fsm, at, &snap, &snap_len, errmsg), 0, errmsg);
    ud_registry_fail_lists(1);
    assert_int_equal(ud_fsm_restore(fsm, snap, snap_len, errmsg), UD_ENOMEM);
    CHECK_RC(ud_fsm_restore(fsm, snap, snap_len, errmsg), 0, errmsg);
    free(snap);
    assert_true(registered(c.s[0].reg, "alpha"));
    assert_true(registered(c.s[0].reg, "beta"));
    cluster_close_raft(&c);
    cluster_free(&c);
}

/* Takes namespace name out of the table of snapshot buf, as if it had been deleted before the
 * snapshot was taken. */
static void unlist(uint8_t *buf, size_t *len, const char *name)
{
    uint32_t count = ud_get_le32(buf + 4);
    size_t off = 16, n = strlen(name);
    for (uint32_t i = 0; i < count; i++) {
        size_t size = 1 + (size_t)buf[off] + 20;
        if (buf[off] == n && memcmp(buf + off + 1, name, n) == 0) {
            memmove(buf + off, buf + off + size, *len - off - size);
            *len -= size;
            ud_put_le32(buf + 4, count - 1);
            return;
        }
        off += size;
    }
    fail_msg("snapshot does not list %s", name);
}

static uint64_t marker(struct ud_registry *reg, const char *what, const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/.raft-%s-%s", ud_registry_root(reg), what, name);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    unsigned long long v = 0;
    assert_int_equal(fscanf(f, "%llu", &v), 1);
    fclose(f);
    return v;
}

static void set_marker(struct ud_registry *reg, const char *what, const char *name, uint64_t v)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/.raft-%s-%s", ud_registry_root(reg), what, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "%llu\n", (unsigned long long)v);
    fclose(f);
}

static uint64_t incarnation_of(struct ud_registry *reg, const char *name)
{
    struct ud_ns *ns;
    assert_int_equal(ud_registry_acquire(reg, name, &ns), 0);
    uint64_t v = ud_ns_incarnation(ns);
    ud_registry_release(reg, ns);
    return v;
}

/* At start, a store without an incarnation whose create an earlier version applied here (a
 * .raft-created marker newer than its tombstone) gets the marker's index; one of an earlier
 * namespace of the name (tombstone newer), one without a marker and one stamped already keep
 * theirs. */
static void test_stamps_unstamped_namespaces(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("raft-stamp");
    char errmsg[UD_ERRMSG_SIZE] = "";
    struct ud_registry *reg = open_registry(dir);
    const char *names[] = {"older", "recreated", "bare", "stamped"};
    for (int i = 0; i < 3; i++)
        CHECK_RC(ud_registry_create(reg, names[i], errmsg), 0, errmsg);
    CHECK_RC(ud_registry_create_incarnation(reg, "stamped", 30, errmsg), 0, errmsg);
    set_marker(reg, "created", "older", 12);
    set_marker(reg, "created", "recreated", 5);
    set_marker(reg, "deleted", "recreated", 8);
    set_marker(reg, "created", "stamped", 12);
    struct ud_fsm *fsm;
    CHECK_RC(ud_fsm_init(reg, &fsm, errmsg), 0, errmsg);
    assert_int_equal(incarnation_of(reg, "older"), 12);
    assert_int_equal(incarnation_of(reg, "recreated"), 0);
    assert_int_equal(incarnation_of(reg, "bare"), 0);
    assert_int_equal(incarnation_of(reg, "stamped"), 30);
    close_node(dir, reg, fsm);
}

/*
 * A catch-up installs a peer's store in place of this node's, which missed a delete and a re-create
 * of the name: the create marker left by the namespace it had (12) is made to agree with the
 * installed store, so the next FSM init neither stamps an unstamped one ("bare", from a peer of an
 * earlier version) with 12 nor leaves a marker of another namespace beside a stamped one ("new").
 */
static void test_catchup_install_marker(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("raft-catchup-marker");
    char errmsg[UD_ERRMSG_SIZE] = "";
    struct ud_registry *reg = open_registry(dir);
    CHECK_RC(ud_registry_create(reg, "bare", errmsg), 0, errmsg);
    CHECK_RC(ud_registry_create_incarnation(reg, "new", 20, errmsg), 0, errmsg);
    set_marker(reg, "created", "bare", 12);
    set_marker(reg, "created", "new", 12);
    const char *root = ud_registry_root(reg);
    CHECK_RC(ud_fsm_created_marker_agree(root, "bare", 0, errmsg), 0, errmsg);
    CHECK_RC(ud_fsm_created_marker_agree(root, "new", 20, errmsg), 0, errmsg);
    /* Removing a marker that is not there is no error. */
    CHECK_RC(ud_fsm_created_marker_agree(root, "bare", 0, errmsg), 0, errmsg);
    assert_int_equal(marker(reg, "created", "bare"), 0); /* gone */
    assert_int_equal(marker(reg, "created", "new"), 20);
    struct ud_fsm *fsm;
    CHECK_RC(ud_fsm_init(reg, &fsm, errmsg), 0, errmsg);
    assert_int_equal(incarnation_of(reg, "bare"), 0);
    assert_int_equal(incarnation_of(reg, "new"), 20);
    close_node(dir, reg, fsm);
}

/*
 * What a restore does with the namespaces its snapshot does not list, on each server (restoring
 * an older snapshot on running servers: every one gets the same, the replicated tables in it
 * included, and nothing is applied after it). beta and gamma predate the snapshot and are taken
 * out of its table: they are deleted. gamma's delete fails first (the rename of its directory):
 * the restore fails with it and gamma stays, until a restore that can delete it. beta's tombstone
 * already holds a later delete (a replayed log) and keeps it: before, the restore lowered it to
 * the snapshot's index. delta, created after the snapshot, has records but no create marker (a
 * namespace from before the markers, or installed by a catch-up): its newest record, after the
 * snapshot, keeps it. epsilon, created after the snapshot without records or marker, is deleted
 * (raft's log after the snapshot would create it again).
 */
static void test_restore_of_unlisted_namespaces(void **state)
{
    (void)state;
    struct cluster c;
    cluster_open(&c, "raft-unlisted", 0);
    struct outcome o;
    propose_ns(&c, UD_COMMAND_NS_CREATE, "alpha", &o);
    propose_ns(&c, UD_COMMAND_NS_CREATE, "beta", &o);
    propose_ns(&c, UD_COMMAND_NS_CREATE, "gamma", &o);
    propose_mixed(&c, 0, 1, 1, 0, &o);
    char errmsg[UD_ERRMSG_SIZE] = "";
    uint8_t *snap;
    size_t snap_len;
    uint64_t at = raft_last_applied(raft_fixture_get(&c.f, 0));
    CHECK_RC(ud_fsm_snapshot(c.s[0].fsm, at, &snap, &snap_len, errmsg), 0, errmsg);
    unlist(snap, &snap_len, "beta");
    unlist(snap, &snap_len, "gamma");
    propose_ns(&c, UD_COMMAND_NS_CREATE, "delta", &o);
    propose_ns(&c, UD_COMMAND_NS_CREATE, "epsilon", &o);
    struct group_spec g = {.ns = "delta"};
    g.recs[g.n++] = kv_record("d", "after the snapshot", 99000);
    size_t len;
    uint8_t *buf = encode(&g, 1, &len, 1);
    propose(&c, buf, len, &o);
    assert_int_equal(o.result_status, 0);
    for (unsigned i = 0; i < NSERVERS; i++) {
        struct ud_registry *reg = c.s[i].reg;
        char path[4096];
        for (int k = 0; k < 2; k++) {
            snprintf(path, sizeof path, "%s/.raft-created-%s", ud_registry_root(reg),
                     k ? "epsilon" : "delta");
            assert_int_equal(unlink(path), 0);
        }
        set_marker(reg, "deleted", "beta", at + 1000);
        char blocked[4096];
        snprintf(blocked, sizeof blocked, "%s/.deleted-gamma-", ud_registry_root(reg));
        rename_fails_to = blocked;
        assert_int_equal(ud_fsm_restore(c.s[i].fsm, snap, snap_len, errmsg), UD_EIO);
        assert_non_null(strstr(errmsg, "gamma"));
        assert_true(registered(reg, "gamma"));
        rename_fails_to = NULL;
        CHECK_RC(ud_fsm_restore(c.s[i].fsm, snap, snap_len, errmsg), 0, errmsg);
        assert_true(registered(reg, "alpha"));
        assert_false(registered(reg, "beta"));
        assert_false(registered(reg, "gamma"));
        assert_true(registered(reg, "delta"));
        assert_false(registered(reg, "epsilon"));
        assert_int_equal(marker(reg, "deleted", "beta"), at + 1000);
        assert_int_equal(marker(reg, "deleted", "gamma"), at);
        assert_int_equal(marker(reg, "deleted", "epsilon"), at);
    }
    free(snap);
    cluster_close_raft(&c);
    cluster_free(&c);
}

static void touch(const char *dir, const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("x", f);
    fclose(f);
}

static int exists_in(const char *dir, const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return access(path, F_OK) == 0;
}

/* The record of a snapshot to set aside, in data_dir: 1 with its term and index, 0 when none. */
static int read_record(const char *data_dir, uint64_t *term, uint64_t *index)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/raft-snapshot-undecodable", data_dir);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    unsigned long long t = 0, i = 0;
    int n = fscanf(f, "%llu %llu", &t, &i);
    fclose(f);
    *term = t;
    *index = i;
    return n == 2;
}

/*
 * A follower whose restore of the leader's snapshot gets bytes that do not decode (here: a format
 * version from a newer writer). raft 0.15 has already taken the snapshot's position and dropped
 * its log, and takes a copy sent again as held: it would go on storing and acknowledging the
 * leader's entries past the snapshot while applying none of them, for good. The FSM asks for
 * raft to be closed and started again with the stored copy set aside (ud_fsm_undecodable), and
 * until then the follower takes no raft message: nothing past the snapshot is stored here, so
 * setting the snapshot aside loses nothing this node acknowledged. Before, no plan was offered
 * and the follower's log grew past the snapshot.
 */
static void test_undecodable_snapshot_from_leader(void **state)
{
    (void)state;
    garble.wrap = 1;
    garble.on = 0;
    garble.garbled = 0;
    struct cluster c;
    cluster_open(&c, "raft-garble", 4);
    garble.wrap = 0;
    /* As the writer runs raft: a node that hears nothing must not depose a healthy leader. */
    for (unsigned i = 0; i < NSERVERS; i++)
        raft_set_pre_vote(raft_fixture_get(&c.f, i), true);
    struct outcome o;
    propose_ns(&c, UD_COMMAND_NS_CREATE, "alpha", &o);
    unsigned away = (raft_fixture_leader_index(&c.f) + 1) % NSERVERS;
    struct ud_fsm *fsm = c.s[away].fsm;
    struct raft *r = raft_fixture_get(&c.f, away);
    /* The node's data directory, where the record goes: missing at first. */
    char *tmp = ud_test_tmpdir("raft-record"), missing[4096], errmsg[UD_ERRMSG_SIZE] = "";
    snprintf(missing, sizeof missing, "%s/data", tmp);
    CHECK_RC(ud_fsm_set_data_dir(fsm, missing, errmsg), 0, errmsg);
    int round = 0;
    for (; round < 3; round++)
        propose_big_without(&c, NSERVERS, round, &o);

    /* Cut off while the others snapshot past what their logs keep. */
    raft_index installed = leave_behind_garbled(&c, away, &round, &o);
    assert_true(r->last_applied < installed);
    const char *why;
    assert_int_equal(ud_fsm_error(fsm, &why), UD_ECORRUPT);
    assert_non_null(strstr(why, "format version 9"));

    /* The cluster goes on writing: the follower stores nothing past the snapshot. */
    for (int i = 0; i < 6; i++, round++)
        propose_big_without(&c, away, round, &o);
    for (int i = 0; i < 200; i++)
        raft_fixture_step(&c.f);
    /* (raft_fixture_leader_index wants every server to know the leader: not the one cut off.) */
    unsigned leader = NSERVERS;
    for (unsigned i = 0; i < NSERVERS; i++)
        if (raft_state(raft_fixture_get(&c.f, i)) == RAFT_LEADER)
            leader = i;
    assert_true(leader < NSERVERS && leader != away);
    print_message("# follower's log: snapshot at %llu, last index %llu; leader's last index %llu\n",
                  (unsigned long long)installed, (unsigned long long)raft_last_index(r),
                  (unsigned long long)raft_last_index(raft_fixture_get(&c.f, leader)));
    assert_int_equal(raft_last_index(r), installed);
    assert_true(r->last_applied < installed);

    /* The record could not be written (its directory is missing): no restart is asked for,
     * since a start without the record would load that snapshot and fail. Tried again on the
     * next look, it is written and the restart is due. */
    uint64_t term = 0, index = 0;
    assert_int_equal(read_record(missing, &term, &index), 0);
    assert_false(ud_fsm_behind_pending(fsm));
    assert_false(ud_fsm_behind_pending(fsm));
    assert_int_equal(mkdir(missing, 0755), 0);

    /* The plan: no namespace to fetch, raft restarted with that stored snapshot set aside. */
    assert_true(ud_fsm_behind_pending(fsm));
    assert_int_equal(read_record(missing, &term, &index), 1);
    assert_int_equal(index, r->log.snapshot.last_index);
    assert_int_equal(term, r->log.snapshot.last_term);
    assert_int_equal(ud_fsm_undecodable(fsm, &term, &index), 1);
    assert_int_equal(index, installed);
    assert_int_equal(term, r->log.snapshot.last_term);
    struct ud_catchup_plan plan = {0};
    assert_int_equal(ud_fsm_take_behind(fsm, &plan), 1);
    assert_int_equal(plan.ntargets, 0);
    assert_int_equal(plan.snapshot_index, installed);
    ud_catchup_plan_free(&plan);
    assert_false(ud_fsm_behind_pending(fsm));

    /* The others are unaffected: the same bytes decode there. */
    for (unsigned i = 0; i < NSERVERS; i++)
        if (i != away)
            assert_int_equal(ud_fsm_undecodable(c.s[i].fsm, &term, &index), 0);
    garble.on = 0;
    cluster_close_raft(&c);
    cluster_free(&c);
    ud_test_rmtree(tmp);
    free(tmp);
}

/*
 * The same while the follower's apply pipeline is stalled (a full disk): the restart waits for
 * the pipeline, which may take long, but the record is written in the restore hook at once, so a
 * node that crashes or is stopped meanwhile sets the snapshot aside at its next start instead of
 * failing on it. Before, the record was written only when the restart was handed over.
 */
static void test_undecodable_recorded_while_stalled(void **state)
{
    (void)state;
    uv_loop_t loop;
    garble.wrap = 1;
    garble.on = 0;
    garble.garbled = 0;
    struct cluster c;
    open_on_full_disk(&c, "raft-garble-stall", 4, &loop);
    garble.wrap = 0;
    for (unsigned i = 0; i < NSERVERS; i++)
        raft_set_pre_vote(raft_fixture_get(&c.f, i), true);
    struct outcome o;
    propose_ns(&c, UD_COMMAND_NS_CREATE, "alpha", &o);
    unsigned away = (raft_fixture_leader_index(&c.f) + 1) % NSERVERS;
    struct ud_fsm *fsm = c.s[away].fsm;
    struct raft *r = raft_fixture_get(&c.f, away);
    char *data_dir = ud_test_tmpdir("raft-record"), errmsg[UD_ERRMSG_SIZE] = "";
    CHECK_RC(ud_fsm_set_data_dir(fsm, data_dir, errmsg), 0, errmsg);

    /* The follower's disk fills and its apply stalls. */
    lag.dir = c.s[away].dir;
    atomic_store(&lag.full, 1);
    int round = 0;
    for (; round < 8 || !stalled(fsm); round++) {
        assert_true(round < 40);
        propose_big_without(&c, NSERVERS, round, &o);
        uv_run(&loop, UV_RUN_NOWAIT);
        for (int i = 0; i < 100 && !stalled(fsm); i++)
            usleep(1000);
    }
    raft_index installed = leave_behind_garbled(&c, away, &round, &o);
    /* ud_fsm_error may hold the stalled apply thread's newer error by now; the reason the node
     * gives for taking no raft message is the decode error all the same. */
    uint64_t term = 0, index = 0;
    assert_int_equal(ud_fsm_undecodable(fsm, &term, &index), 1);
    assert_int_equal(index, installed);
    assert_non_null(ud_fsm_deaf(fsm));
    assert_non_null(strstr(ud_fsm_deaf(fsm), "format version 9"));

    /* The record is there as the hook returns (before anything asks for the plan), the
     * pipeline still stalled, and no restart yet. */
    term = index = 0;
    assert_int_equal(read_record(data_dir, &term, &index), 1);
    assert_int_equal(index, installed);
    assert_int_equal(term, r->log.snapshot.last_term);
    assert_true(stalled(fsm));
    assert_false(ud_fsm_behind_pending(fsm));

    /* A start at this point (raft_uv's names for that snapshot in raft's directory) sets it
     * aside and leaves the rest. */
    char raft_dir[4096], name[128];
    snprintf(raft_dir, sizeof raft_dir, "%s/raft", data_dir);
    assert_int_equal(mkdir(raft_dir, 0755), 0);
    snprintf(name, sizeof name, "snapshot-%llu-%llu-77", (unsigned long long)term,
             (unsigned long long)index);
    touch(raft_dir, name);
    touch(raft_dir, "metadata1");
    strcat(name, ".meta");
    touch(raft_dir, name);
    uint64_t set_aside = 0;
    CHECK_RC(ud_raft_set_aside_undecodable(data_dir, raft_dir, &set_aside, errmsg), 0, errmsg);
    assert_int_equal(set_aside, installed);
    assert_false(exists_in(raft_dir, name));
    assert_true(exists_in(raft_dir, "metadata1"));
    assert_false(exists_in(data_dir, "raft-snapshot-undecodable"));

    /* Room again: once drained, the restart is due. */
    atomic_store(&lag.full, 0);
    for (int i = 0; i < 5000 && (stalled(fsm) || ud_fsm_handed(fsm) != ud_fsm_finished(fsm)); i++) {
        uv_run(&loop, UV_RUN_NOWAIT);
        usleep(1000);
    }
    assert_true(ud_fsm_behind_pending(fsm));
    struct ud_catchup_plan plan = {0};
    assert_int_equal(ud_fsm_take_behind(fsm, &plan), 1);
    assert_int_equal(plan.ntargets, 0);
    ud_catchup_plan_free(&plan);
    garble.on = 0;
    cluster_close_raft(&c);
    cluster_free(&c);
    assert_int_equal(uv_loop_close(&loop), 0);
    ud_test_rmtree(data_dir);
    free(data_dir);
}

/*
 * A leader's snapshot that decodes but cannot be checked against this node's state: the follower
 * is behind on alpha and alpha's tombstone file here is damaged. raft has taken the snapshot's
 * position without the FSM; going on would acknowledge entries past it that are never applied
 * here. The follower takes no more raft messages and asks for the restart, whose start then
 * fails naming the file (nothing to set aside). Before, it went on storing the leader's entries.
 */
static void test_damaged_tombstone_at_leaders_snapshot(void **state)
{
    (void)state;
    struct cluster c;
    cluster_open(&c, "raft-tomb-bad", 4);
    for (unsigned i = 0; i < NSERVERS; i++)
        raft_set_pre_vote(raft_fixture_get(&c.f, i), true);
    struct outcome o;
    propose_ns(&c, UD_COMMAND_NS_CREATE, "alpha", &o);
    unsigned away = (raft_fixture_leader_index(&c.f) + 1) % NSERVERS;
    struct ud_fsm *fsm = c.s[away].fsm;
    struct raft *r = raft_fixture_get(&c.f, away);
    int round = 0;
    for (; round < 3; round++)
        propose_big_without(&c, NSERVERS, round, &o);
    raft_index had = r->log.snapshot.last_index;
    leave_behind(&c, away, &round, &o);
    char tomb[4096];
    snprintf(tomb, sizeof tomb, "%s/.raft-deleted-alpha", ud_registry_root(c.s[away].reg));
    FILE *f = fopen(tomb, "w");
    assert_non_null(f);
    fputs("garbage\n", f);
    fclose(f);
    heal(&c);
    const char *why;
    for (int i = 0; i < 2000 && (ud_fsm_error(fsm, &why) == 0 || r->snapshot.put.data != NULL); i++)
        raft_fixture_step(&c.f);
    assert_null(r->snapshot.put.data);
    raft_index installed = r->log.snapshot.last_index;
    assert_true(installed > had);
    assert_int_equal(ud_fsm_error(fsm, &why), UD_ECORRUPT);
    assert_non_null(strstr(why, ".raft-deleted-alpha"));
    assert_non_null(ud_fsm_deaf(fsm));
    assert_non_null(strstr(ud_fsm_deaf(fsm), ".raft-deleted-alpha"));

    for (int i = 0; i < 6; i++, round++)
        propose_big_without(&c, away, round, &o);
    for (int i = 0; i < 200; i++)
        raft_fixture_step(&c.f);
    print_message("# follower's log: snapshot at %llu, last index %llu\n",
                  (unsigned long long)installed, (unsigned long long)raft_last_index(r));
    assert_int_equal(raft_last_index(r), installed);
    assert_true(ud_fsm_behind_pending(fsm));
    uint64_t term, index;
    assert_int_equal(ud_fsm_undecodable(fsm, &term, &index), 0);
    struct ud_catchup_plan plan = {0};
    assert_int_equal(ud_fsm_take_behind(fsm, &plan), 1);
    assert_int_equal(plan.ntargets, 0);
    assert_int_equal(plan.snapshot_index, installed);
    ud_catchup_plan_free(&plan);
    assert_int_equal(unlink(tomb), 0);
    cluster_close_raft(&c);
    cluster_free(&c);
}

/* The start after such a restart moves the recorded snapshot's two files out of raft's directory
 * (raft then loads the one before it) and keeps the newest copy for inspection. */
static void test_set_aside_undecodable(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("raft-aside");
    char raft_dir[4096], aside[4096], errmsg[UD_ERRMSG_SIZE] = "";
    snprintf(raft_dir, sizeof raft_dir, "%s/raft", dir);
    snprintf(aside, sizeof aside, "%s/raft-set-aside", dir);
    assert_int_equal(mkdir(raft_dir, 0755), 0);
    const char *kept[] = {"snapshot-2-8-50", "snapshot-2-8-50.meta",
                          "0000000000000001-0000000000000016", "metadata1", "snapshot-3-160-7"};
    for (size_t i = 0; i < sizeof kept / sizeof kept[0]; i++)
        touch(raft_dir, kept[i]);
    touch(raft_dir, "snapshot-3-16-100");
    touch(raft_dir, "snapshot-3-16-100.meta");
    uint64_t index = 1;
    CHECK_RC(ud_raft_set_aside_undecodable(dir, raft_dir, &index, errmsg), 0, errmsg);
    assert_int_equal(index, 0); /* nothing recorded */
    assert_true(exists_in(raft_dir, "snapshot-3-16-100"));

    CHECK_RC(ud_raft_record_undecodable(dir, 3, 16, errmsg), 0, errmsg);
    CHECK_RC(ud_raft_set_aside_undecodable(dir, raft_dir, &index, errmsg), 0, errmsg);
    assert_int_equal(index, 16);
    assert_false(exists_in(raft_dir, "snapshot-3-16-100"));
    assert_false(exists_in(raft_dir, "snapshot-3-16-100.meta"));
    assert_true(exists_in(aside, "snapshot-3-16-100"));
    assert_true(exists_in(aside, "snapshot-3-16-100.meta"));
    for (size_t i = 0; i < sizeof kept / sizeof kept[0]; i++)
        assert_true(exists_in(raft_dir, kept[i]));
    assert_false(exists_in(dir, "raft-snapshot-undecodable"));
    CHECK_RC(ud_raft_set_aside_undecodable(dir, raft_dir, &index, errmsg), 0, errmsg);
    assert_int_equal(index, 0);

    /* The next one replaces it there; one already gone only clears the record. */
    touch(raft_dir, "snapshot-4-32-200");
    touch(raft_dir, "snapshot-4-32-200.meta");
    CHECK_RC(ud_raft_record_undecodable(dir, 4, 32, errmsg), 0, errmsg);
    CHECK_RC(ud_raft_set_aside_undecodable(dir, raft_dir, &index, errmsg), 0, errmsg);
    assert_int_equal(index, 32);
    assert_true(exists_in(aside, "snapshot-4-32-200.meta"));
    assert_false(exists_in(aside, "snapshot-3-16-100"));
    CHECK_RC(ud_raft_record_undecodable(dir, 4, 32, errmsg), 0, errmsg);
    CHECK_RC(ud_raft_set_aside_undecodable(dir, raft_dir, &index, errmsg), 0, errmsg);
    assert_int_equal(index, 32);
    assert_true(exists_in(aside, "snapshot-4-32-200.meta"));
    assert_false(exists_in(dir, "raft-snapshot-undecodable"));

    /* A crash between the two renames: one file already aside, one still in raft's directory.
     * Both end up aside; an older copy there goes. */
    touch(aside, "snapshot-5-48-300.meta");
    touch(raft_dir, "snapshot-5-48-300");
    CHECK_RC(ud_raft_record_undecodable(dir, 5, 48, errmsg), 0, errmsg);
    CHECK_RC(ud_raft_set_aside_undecodable(dir, raft_dir, &index, errmsg), 0, errmsg);
    assert_int_equal(index, 48);
    assert_true(exists_in(aside, "snapshot-5-48-300"));
    assert_true(exists_in(aside, "snapshot-5-48-300.meta"));
    assert_false(exists_in(raft_dir, "snapshot-5-48-300"));
    assert_false(exists_in(aside, "snapshot-4-32-200.meta"));

    /* A record that says nothing usable stops the start, naming the file. */
    char record[4096];
    snprintf(record, sizeof record, "%s/raft-snapshot-undecodable", dir);
    FILE *f = fopen(record, "w");
    assert_non_null(f);
    fputs("garbage\n", f);
    fclose(f);
    assert_int_equal(ud_raft_set_aside_undecodable(dir, raft_dir, &index, errmsg), UD_ECORRUPT);
    assert_non_null(strstr(errmsg, "raft-snapshot-undecodable"));
    ud_test_rmtree(dir);
    free(dir);
}

static void test_command_codec(void **state)
{
    (void)state;
    char errmsg[UD_ERRMSG_SIZE] = "";
    struct group_spec g[2] = {{.ns = "ns-1"}, {.ns = "Other_2"}};
    g[0].recs[g[0].n++] = kv_record("a", "1", 1);
    g[0].recs[g[0].n++] = kv_record("b", "22", 2);
    g[1].recs[g[1].n++] = kv_record("c", "333", 3);
    struct rec copies[3];
    copies[0] = kv_record("a", "1", 1);
    copies[1] = kv_record("b", "22", 2);
    copies[2] = kv_record("c", "333", 3);
    size_t len;
    uint8_t *buf = encode(g, 2, &len, 0);

    struct ud_command cmd;
    CHECK_RC(ud_command_decode(buf, len, &cmd, errmsg), 0, errmsg);
    assert_int_equal(cmd.kind, UD_COMMAND_RECORDS);
    assert_int_equal(cmd.count, 2);
    assert_int_equal(cmd.nrecords, 3);
    struct ud_command_iter it, rit;
    struct ud_command_group grp;
    int k = 0;
    const char *want_ns[] = {"ns-1", "Other_2"};
    ud_command_iter_init(&it, &cmd);
    for (int gi = 0; gi < 2; gi++) {
        assert_true(ud_command_next_group(&it, &grp));
        assert_string_equal(grp.ns, want_ns[gi]);
        ud_command_group_iter_init(&rit, &grp);
        const uint8_t *r;
        size_t rl;
        while (ud_command_next_record(&rit, &r, &rl)) {
            assert_int_equal(rl, copies[k].len);
            assert_memory_equal(r, copies[k].buf, rl);
            k++;
        }
    }
    assert_false(ud_command_next_group(&it, &grp));
    assert_int_equal(k, 3);

    /* Every truncation is refused. */
    for (size_t cut = 0; cut < len; cut++) {
        int rc = ud_command_decode(buf, cut, &cmd, errmsg);
        assert_true(rc == UD_ETRUNCATED || rc == UD_ECORRUPT);
    }
    /* Single-byte corruption of the framing is refused, or decodes to something valid. */
    uint8_t *bad = malloc(len + 1);
    struct {
        size_t off;
        uint8_t val;
        int want;
    } cases[] = {
        {0, 2, UD_EVERSION},   /* a newer version */
        {0, 0, UD_ECORRUPT},   /* version 0 was never written */
        {1, 7, UD_ECORRUPT},   /* kind */
        {2, 2, UD_ECORRUPT},   /* flags (1 is the keys flag; 2 only with it) */
        {2, 8, UD_EVERSION},   /* a flag of a newer format */
        {4, 0, UD_ECORRUPT},   /* zero groups */
        {4, 3, UD_ETRUNCATED}, /* more groups than bytes */
        {8, 0, UD_ECORRUPT},   /* empty name */
        {9, '/', UD_ECORRUPT}, /* bad name character */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        memcpy(bad, buf, len);
        bad[cases[i].off] = cases[i].val;
        assert_int_equal(ud_command_decode(bad, len, &cmd, errmsg), cases[i].want);
        assert_true(errmsg[0] != '\0');
    }
    /* A bad group name names its group. */
    memcpy(bad, buf, len);
    bad[9] = '/';
    assert_int_equal(ud_command_decode(bad, len, &cmd, errmsg), UD_ECORRUPT);
    assert_non_null(strstr(errmsg, "group 0 name at byte 9"));
    /* ... every group, for each way its name can be wrong (the name is decoded once). */
    size_t g1 = UD_COMMAND_HEADER_SIZE + 1 + 4 + 4 + 4 + copies[0].len + 4 + copies[1].len;
    char want[64];
    memcpy(bad, buf, len);
    bad[g1 + 1] = '/';
    assert_int_equal(ud_command_decode(bad, len, &cmd, errmsg), UD_ECORRUPT);
    snprintf(want, sizeof want, "group 1 name at byte %zu (7 bytes) is not", g1 + 1);
    assert_non_null(strstr(errmsg, want));
    assert_int_equal(ud_command_decode(buf, g1 + 3, &cmd, errmsg), UD_ETRUNCATED);
    snprintf(want, sizeof want, "group 1 name at byte %zu: 7 bytes, buffer ends", g1 + 1);
    assert_non_null(strstr(errmsg, want));
    /* A namespace command's name is called by the command's kind. */
    uint8_t ns_cmd[64];
    size_t ns_len;
    CHECK_RC(ud_command_encode_ns(UD_COMMAND_NS_DELETE, "gone", ns_cmd, sizeof ns_cmd, &ns_len), 0,
             "");
    ns_cmd[UD_COMMAND_HEADER_SIZE + 2] = '/';
    assert_int_equal(ud_command_decode(ns_cmd, ns_len, &cmd, errmsg), UD_ECORRUPT);
    snprintf(want, sizeof want, "ns_delete name at byte %d (4 bytes) is not",
             UD_COMMAND_HEADER_SIZE + 1);
    assert_non_null(strstr(errmsg, want));
    /* Trailing bytes. */
    memcpy(bad, buf, len);
    bad[len] = 0;
    assert_int_equal(ud_command_decode(bad, len + 1, &cmd, errmsg), UD_ECORRUPT);
    assert_non_null(strstr(errmsg, "trailing"));
    /* A record that carries an LSN or a raft position. */
    size_t rec_off = UD_COMMAND_HEADER_SIZE + 1 + 4 + 4 + 4; /* group 0's first record */
    memcpy(bad, buf, len);
    ud_put_le64(bad + rec_off + UD_RECORD_LSN_OFFSET, 7);
    assert_int_equal(ud_command_decode(bad, len, &cmd, errmsg), UD_ECORRUPT);
    assert_non_null(strstr(errmsg, "LSN"));
    memcpy(bad, buf, len);
    ud_put_le32(bad + rec_off + 32, 1);
    assert_int_equal(ud_command_decode(bad, len, &cmd, errmsg), UD_ECORRUPT);
    /* A record the record decoder refuses (unknown op). */
    memcpy(bad, buf, len);
    bad[rec_off + 1] = 99;
    assert_int_equal(ud_command_decode(bad, len, &cmd, errmsg), UD_ECORRUPT);
    /* An empty group. */
    memcpy(bad, buf, len);
    ud_put_le32(bad + UD_COMMAND_HEADER_SIZE + 1 + 4, 0);
    assert_int_equal(ud_command_decode(bad, len, &cmd, errmsg), UD_ECORRUPT);
    /* Too large. */
    assert_int_equal(ud_command_decode(buf, UD_COMMAND_MAX_SIZE + 1, &cmd, errmsg), UD_ELIMIT);
    free(bad);

    /* Namespace commands. */
    uint8_t nsbuf[128];
    CHECK_RC(ud_command_encode_ns(UD_COMMAND_NS_DELETE, "gone", nsbuf, sizeof nsbuf, &len), 0, "");
    CHECK_RC(ud_command_decode(nsbuf, len, &cmd, errmsg), 0, errmsg);
    assert_int_equal(cmd.kind, UD_COMMAND_NS_DELETE);
    assert_string_equal(cmd.ns, "gone");
    assert_int_equal(len % 8, 0);
    assert_int_equal(ud_command_decode(nsbuf, 11, &cmd, errmsg), UD_ETRUNCATED);
    assert_int_equal(ud_command_decode(nsbuf, len - 1, &cmd, errmsg), UD_ECORRUPT);
    nsbuf[len - 1] = 1; /* padding must be zero */
    assert_int_equal(ud_command_decode(nsbuf, len, &cmd, errmsg), UD_ECORRUPT);
    nsbuf[len - 1] = 0;
    nsbuf[4] = 2;
    assert_int_equal(ud_command_decode(nsbuf, len, &cmd, errmsg), UD_ECORRUPT);
    assert_int_equal(ud_command_encode_ns(UD_COMMAND_NS_CREATE, "a b", nsbuf, sizeof nsbuf, &len),
                     UD_EINVAL);
    assert_int_equal(ud_command_encode_ns(UD_COMMAND_RECORDS, "a", nsbuf, sizeof nsbuf, &len),
                     UD_EINVAL);
    assert_int_equal(ud_command_encode_ns(UD_COMMAND_NS_CREATE, "abc", nsbuf, 10, &len), UD_ELIMIT);

    /* Writer misuse. */
    struct ud_command_writer w;
    uint8_t small[64];
    ud_command_writer_init(&w, small, sizeof small);
    assert_int_equal(ud_command_writer_record(&w, copies[0].buf, copies[0].len), UD_EINVAL);
    ud_command_writer_init(&w, small, sizeof small);
    assert_int_equal(ud_command_writer_group(&w, "x"), 0);
    assert_int_equal(ud_command_writer_finish(&w, &len), UD_EINVAL); /* empty group */
    ud_command_writer_init(&w, small, sizeof small);
    assert_int_equal(ud_command_writer_group(&w, "x"), 0);
    assert_int_equal(ud_command_writer_record(&w, copies[2].buf, copies[2].len), UD_ELIMIT);
    assert_int_equal(ud_command_writer_finish(&w, &len), UD_ELIMIT); /* sticky */
    ud_command_writer_init(&w, small, sizeof small);
    assert_int_equal(ud_command_writer_finish(&w, &len), UD_EINVAL); /* no group */

    for (int i = 0; i < 3; i++)
        free(copies[i].buf);
    free(buf);
}

/* --- replicated tables: idempotency keys, member directory ------------------------------------
 */

/* A request digest made from a name (the tests' stand-in for writer/http_digest.c). */
static void test_digest(const char *name, uint8_t out[UD_COMMAND_DIGEST_SIZE])
{
    memset(out, 0, UD_COMMAND_DIGEST_SIZE);
    snprintf((char *)out, UD_COMMAND_DIGEST_SIZE, "%s", name);
}

/* A command of size bytes in a new buffer, begun with group "alpha" holding recs (their buffers
 * freed); the caller adds keys and conditions and finishes it. */
static uint8_t *start_alpha(struct ud_command_writer *w, size_t size, struct rec *recs, size_t n)
{
    uint8_t *buf = malloc(size);
    ud_command_writer_init(w, buf, size);
    assert_int_equal(ud_command_writer_group(w, "alpha"), 0);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(ud_command_writer_record(w, recs[i].buf, recs[i].len), 0);
        free(recs[i].buf);
    }
    return buf;
}

/* One group "alpha" of requests; request i has n[i] records and key keys[i] (NULL: none), with
 * the digest named digests[i] (digests NULL: a command without digests, as written before them). */
static uint8_t *encode_keyed_digests(size_t nreq, const size_t *n, const char *const *keys,
                                     const char *const *digests, const char *tag, size_t *len)
{
    struct rec recs[16];
    size_t nrec = 0, size = UD_COMMAND_HEADER_SIZE + ud_command_group_size("alpha") +
                            UD_COMMAND_KEYS_OVERHEAD;
    for (size_t i = 0; i < nreq; i++) {
        for (size_t j = 0; j < n[i]; j++) {
            char k[32];
            snprintf(k, sizeof k, "%s-%zu-%zu", tag, i, j);
            recs[nrec] = kv_record(k, tag, 100 + nrec);
            size += UD_COMMAND_RECORD_OVERHEAD + recs[nrec++].len;
        }
        if (keys[i] != NULL)
            size += ud_command_key_size(strlen(keys[i]));
    }
    struct ud_command_writer w;
    uint8_t *buf = start_alpha(&w, UD_COMMAND_ALIGN(size), recs, nrec);
    uint32_t pos = 0;
    for (size_t i = 0; i < nreq; i++) {
        uint8_t digest[UD_COMMAND_DIGEST_SIZE];
        if (digests != NULL)
            test_digest(digests[i], digest);
        if (keys[i] != NULL)
            assert_int_equal(ud_command_writer_key(&w, pos, (uint32_t)n[i], keys[i],
                                                   strlen(keys[i]), digests ? digest : NULL),
                             0);
        pos += (uint32_t)n[i];
    }
    assert_int_equal(ud_command_writer_finish(&w, len), 0);
    return buf;
}

static uint8_t *encode_keyed(size_t nreq, const size_t *n, const char *const *keys, const char *tag,
                             size_t *len)
{
    return encode_keyed_digests(nreq, n, keys, NULL, tag, len);
}

/* Snapshot metadata of version 4 rewritten in place as version 3 (its keys without digests),
 * the tables at byte at; returns the new length. */
static size_t meta_without_digests(uint8_t *meta, size_t len, size_t at)
{
    uint32_t nm = ud_get_le32(meta + at);
    at += 4;
    for (uint32_t i = 0; i < nm; i++) {
        at += 8;
        at += 1 + meta[at];
        at += 1 + meta[at];
    }
    uint32_t nk = ud_get_le32(meta + at);
    at += 4;
    for (uint32_t i = 0; i < nk; i++) {
        at += 1 + meta[at];
        at += 1 + meta[at] + 16;
        memmove(meta + at, meta + at + UD_COMMAND_DIGEST_SIZE, len - at - UD_COMMAND_DIGEST_SIZE);
        len -= UD_COMMAND_DIGEST_SIZE;
    }
    meta[0] = 3;
    return len;
}

/*
 * A key seen before makes its request's records take the first outcome instead of being applied
 * again; the window travels in the snapshot, so another FSM restored from it decides the same.
 */
static void test_idempotency_keys(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("raft-idem");
    char errmsg[UD_ERRMSG_SIZE] = "";
    struct ud_registry *reg;
    struct ud_fsm *fsm, *fsm2;
    open_node(dir, &reg, &fsm);
    const struct ud_fsm_result *res;
    size_t len;
    uint8_t *create = encode_ns(UD_COMMAND_NS_CREATE, "alpha", &len, 0);
    CHECK_RC(ud_fsm_apply(fsm, 1, create, len, &res), 0, res->errmsg);

    /* Entry 2: "k1" (1 record), "k2" (2 records), one without a key. */
    size_t n2[] = {1, 2, 1};
    const char *keys2[] = {"k1", "k2", NULL};
    uint8_t *e2 = encode_keyed(3, n2, keys2, "first", &len);
    size_t e2_len = len;
    struct ud_command cmd;
    CHECK_RC(ud_command_decode(e2, len, &cmd, errmsg), 0, errmsg);
    assert_int_equal(cmd.nkeys, 2);
    struct ud_command_iter it;
    struct ud_command_key k;
    ud_command_keys_iter_init(&it, &cmd);
    assert_true(ud_command_next_key(&it, &k));
    assert_int_equal(k.first_pos, 0);
    assert_int_equal(k.nrecords, 1);
    assert_memory_equal(k.key, "k1", 2);
    assert_true(ud_command_next_key(&it, &k));
    assert_int_equal(k.first_pos, 1);
    assert_int_equal(k.nrecords, 2);
    assert_false(ud_command_next_key(&it, &k));
    CHECK_RC(ud_fsm_apply(fsm, 2, e2, len, &res), 0, res->errmsg);
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(res->records[i].lsn, i + 1);

    /* Entry 3: "k1" again (other bytes) and a new key: the retry takes LSN 1, nothing new. */
    size_t n3[] = {1, 1};
    const char *keys3[] = {"k1", "k3"};
    uint8_t *e3 = encode_keyed(2, n3, keys3, "retry", &len);
    size_t e3_len = len;
    CHECK_RC(ud_fsm_apply(fsm, 3, e3, len, &res), 0, res->errmsg);
    assert_int_equal(res->records[0].lsn, 1);
    assert_int_equal(res->records[0].status, 0);
    assert_int_equal(res->records[1].lsn, 5);
    assert_int_equal(ns_last_lsn(reg, "alpha"), 5);

    /* The snapshot carries the window: a second FSM restored from it dedupes "k2" too. */
    uint8_t *meta;
    size_t mlen;
    CHECK_RC(ud_fsm_snapshot(fsm, 3, &meta, &mlen, errmsg), 0, errmsg);
    assert_int_equal(meta[0], 4); /* the 131,072-key window, keys with their digests */
    CHECK_RC(ud_fsm_init(reg, &fsm2, errmsg), 0, errmsg);
    meta[0] = 5;
    CHECK_RC(ud_fsm_restore(fsm2, meta, mlen, errmsg), UD_ECORRUPT, errmsg);
    meta[0] = 4;
    CHECK_RC(ud_fsm_restore(fsm2, meta, mlen, errmsg), 0, errmsg);
    /* Versions 3 and 2 (keys without digests; 2 written with the 4,096-key window) are read. */
    size_t v4len = mlen;
    uint8_t *v4 = malloc(mlen);
    memcpy(v4, meta, mlen);
    mlen = meta_without_digests(meta, mlen, 16 + 1 + 5 + 20);
    CHECK_RC(ud_fsm_restore(fsm2, meta, mlen, errmsg), 0, errmsg);
    meta[0] = 2;
    CHECK_RC(ud_fsm_restore(fsm2, meta, mlen, errmsg), 0, errmsg);
    /* A version 4 snapshot's bytes read as version 3 do not decode. */
    v4[0] = 3;
    CHECK_RC(ud_fsm_restore(fsm2, v4, v4len, errmsg), UD_ECORRUPT, errmsg);
    free(v4);
    size_t n4[] = {2};
    const char *keys4[] = {"k2"};
    uint8_t *e4 = encode_keyed(1, n4, keys4, "again", &len);
    CHECK_RC(ud_fsm_apply(fsm2, 4, e4, len, &res), 0, res->errmsg);
    assert_int_equal(res->records[0].lsn, 2);
    assert_int_equal(res->records[1].lsn, 3);
    assert_int_equal(ns_last_lsn(reg, "alpha"), 5);
    /* Without the window (a version 1 snapshot: the namespace table only), it would apply. */
    meta[0] = 1;
    size_t v1len = 16 + 1 + 5 + 20;
    CHECK_RC(ud_fsm_restore(fsm2, meta, v1len, errmsg), 0, errmsg);
    CHECK_RC(ud_fsm_apply(fsm2, 5, e4, len, &res), 0, res->errmsg);
    assert_int_equal(res->records[0].lsn, 6);
    assert_int_equal(ns_last_lsn(reg, "alpha"), 7);

    /* A damaged table is refused before anything is loaded. */
    meta[0] = 2;
    CHECK_RC(ud_fsm_restore(fsm2, meta, mlen - 3, errmsg), UD_ECORRUPT, errmsg);

    /* A restart without a snapshot: raft replays entries 2 and 3, whose records the WAL holds
     * (skipped), and the window learns their keys with the LSNs found in the WAL. */
    struct ud_fsm *fsm3;
    CHECK_RC(ud_fsm_init(reg, &fsm3, errmsg), 0, errmsg);
    CHECK_RC(ud_fsm_apply(fsm3, 2, e2, e2_len, &res), 0, res->errmsg);
    CHECK_RC(ud_fsm_apply(fsm3, 3, e3, e3_len, &res), 0, res->errmsg);
    assert_int_equal(ns_last_lsn(reg, "alpha"), 7);
    size_t n6[] = {2, 1};
    const char *keys6[] = {"k2", "k3"};
    uint8_t *e6 = encode_keyed(2, n6, keys6, "after-restart", &len);
    CHECK_RC(ud_fsm_apply(fsm3, 6, e6, len, &res), 0, res->errmsg);
    assert_int_equal(res->records[0].lsn, 2);
    assert_int_equal(res->records[1].lsn, 3);
    assert_int_equal(res->records[2].lsn, 5);
    assert_int_equal(ns_last_lsn(reg, "alpha"), 7);
    free(e6);
    ud_fsm_close(fsm3);

    free(meta);
    free(create);
    free(e2);
    free(e3);
    free(e4);
    ud_fsm_close(fsm2);
    close_node(dir, reg, fsm);
}

/*
 * A key comes with the digest of its request (writer/http_digest.c): a retry of the same request
 * takes the first answer, another request under the same key is refused (UD_EKEYREUSED, nothing
 * written, the key stays the first request's), on every writer alike: after a snapshot and after
 * a replay too. A key whose digest is unknown (a command or snapshot from before digests) takes
 * the first answer as before.
 */
static void test_idempotency_digests(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("raft-idem-digest");
    char errmsg[UD_ERRMSG_SIZE] = "";
    struct ud_registry *reg;
    struct ud_fsm *fsm, *fsm2, *fsm3;
    open_node(dir, &reg, &fsm);
    const struct ud_fsm_result *res;
    size_t len;
    uint8_t *create = encode_ns(UD_COMMAND_NS_CREATE, "alpha", &len, 0);
    CHECK_RC(ud_fsm_apply(fsm, 1, create, len, &res), 0, res->errmsg);

    size_t one[] = {1, 1}, two[] = {2};
    const char *k1[] = {"k1"}, *k1_other[] = {"k1", "k9"};
    const char *put_a[] = {"PUT a"}, *put_b[] = {"PUT b"}, *put_b_new[] = {"PUT b", "PUT c"};
    uint8_t *first = encode_keyed_digests(1, two, k1, put_a, "first", &len);
    size_t first_len = len;
    CHECK_RC(ud_fsm_apply(fsm, 2, first, len, &res), 0, res->errmsg);
    assert_int_equal(res->records[0].lsn, 1);
    assert_int_equal(res->records[1].lsn, 2);

    /* The same request again (its records stamped anew: other bytes): the first answer. */
    uint8_t *retry = encode_keyed_digests(1, two, k1, put_a, "retry", &len);
    size_t retry_len = len;
    CHECK_RC(ud_fsm_apply(fsm, 3, retry, len, &res), 0, res->errmsg);
    assert_int_equal(res->records[0].status, 0);
    assert_int_equal(res->records[0].lsn, 1);
    assert_int_equal(res->records[1].lsn, 2);
    assert_int_equal(ns_last_lsn(reg, "alpha"), 2);

    /* Another request under k1 in the same entry as a new key: k1's is refused, k9's applies. */
    uint8_t *other = encode_keyed_digests(2, one, k1_other, put_b_new, "other", &len);
    size_t other_len = len;
    CHECK_RC(ud_fsm_apply(fsm, 4, other, len, &res), 0, res->errmsg);
    assert_int_equal(res->records[0].status, UD_EKEYREUSED);
    assert_int_equal(res->records[0].lsn, 0);
    assert_true(res->records[0].msg >= 0);
    assert_string_equal(res->msgs[res->records[0].msg],
                        "Idempotency-Key k1 was used for a different request");
    assert_int_equal(res->records[1].status, 0);
    assert_int_equal(res->records[1].lsn, 3);
    assert_int_equal(ns_last_lsn(reg, "alpha"), 3);
    /* k1 still answers its first request. */
    CHECK_RC(ud_fsm_apply(fsm, 5, retry, retry_len, &res), 0, res->errmsg);
    assert_int_equal(res->records[0].lsn, 1);
    /* A key without a digest (a command from before them) is not refused. */
    uint8_t *legacy = encode_keyed(1, two, k1, "legacy", &len);
    CHECK_RC(ud_fsm_apply(fsm, 6, legacy, len, &res), 0, res->errmsg);
    assert_int_equal(res->records[0].status, 0);
    assert_int_equal(res->records[0].lsn, 1);
    assert_int_equal(ns_last_lsn(reg, "alpha"), 3);

    /* The snapshot keeps the digests: a writer restored from it refuses the other request. */
    uint8_t *meta;
    size_t mlen;
    CHECK_RC(ud_fsm_snapshot(fsm, 6, &meta, &mlen, errmsg), 0, errmsg);
    CHECK_RC(ud_fsm_init(reg, &fsm2, errmsg), 0, errmsg);
    CHECK_RC(ud_fsm_restore(fsm2, meta, mlen, errmsg), 0, errmsg);
    uint8_t *b = encode_keyed_digests(1, two, k1, put_b, "b", &len);
    size_t b_len = len;
    CHECK_RC(ud_fsm_apply(fsm2, 7, b, b_len, &res), 0, res->errmsg);
    assert_int_equal(res->records[0].status, UD_EKEYREUSED);
    assert_int_equal(res->records[1].status, UD_EKEYREUSED);
    assert_int_equal(ns_last_lsn(reg, "alpha"), 3);
    /* From a version 3 snapshot the digest is unknown: the first answer, as before. */
    mlen = meta_without_digests(meta, mlen, 16 + 1 + 5 + 20);
    CHECK_RC(ud_fsm_restore(fsm2, meta, mlen, errmsg), 0, errmsg);
    CHECK_RC(ud_fsm_apply(fsm2, 7, b, b_len, &res), 0, res->errmsg);
    assert_int_equal(res->records[0].status, 0);
    assert_int_equal(res->records[0].lsn, 1);

    /* A restart replays the log (records already in the WAL): the window learns k1 with its
     * digest again, and the other request is refused there too. */
    CHECK_RC(ud_fsm_init(reg, &fsm3, errmsg), 0, errmsg);
    CHECK_RC(ud_fsm_apply(fsm3, 2, first, first_len, &res), 0, res->errmsg);
    CHECK_RC(ud_fsm_apply(fsm3, 4, other, other_len, &res), 0, res->errmsg);
    assert_int_equal(res->records[0].status, UD_EKEYREUSED);
    CHECK_RC(ud_fsm_apply(fsm3, 7, b, b_len, &res), 0, res->errmsg);
    assert_int_equal(res->records[0].status, UD_EKEYREUSED);
    assert_int_equal(ns_last_lsn(reg, "alpha"), 3);

    /* The window is keyed by the namespace's name: deleted and created again, the namespace is
     * empty, and the key still answers its first request (the deleted namespace's LSN, nothing
     * written) or refuses another. */
    uint8_t *del = encode_ns(UD_COMMAND_NS_DELETE, "alpha", &len, 0);
    CHECK_RC(ud_fsm_apply(fsm, 8, del, len, &res), 0, res->errmsg);
    CHECK_RC(ud_fsm_apply(fsm, 9, create, len, &res), 0, res->errmsg);
    assert_int_equal(ns_last_lsn(reg, "alpha"), 0);
    CHECK_RC(ud_fsm_apply(fsm, 10, retry, retry_len, &res), 0, res->errmsg);
    assert_int_equal(res->records[0].status, 0);
    assert_int_equal(res->records[0].lsn, 1);
    CHECK_RC(ud_fsm_apply(fsm, 11, b, b_len, &res), 0, res->errmsg);
    assert_int_equal(res->records[0].status, UD_EKEYREUSED);
    assert_int_equal(ns_last_lsn(reg, "alpha"), 0);
    free(del);

    free(meta);
    free(create);
    free(first);
    free(retry);
    free(other);
    free(legacy);
    free(b);
    ud_fsm_close(fsm3);
    ud_fsm_close(fsm2);
    close_node(dir, reg, fsm);
}

/*
 * A retry must find its key after as many keyed writes as a busy cluster applies while a client
 * waits out a failover: 5,120 other keys here (the window once held 4,096, and a retry through a
 * restarted follower under load was applied twice).
 */
static void test_idempotency_outlasts_busy_retry(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("raft-idem-busy");
    struct ud_registry *reg;
    struct ud_fsm *fsm;
    open_node(dir, &reg, &fsm);
    const struct ud_fsm_result *res;
    size_t len;
    uint8_t *create = encode_ns(UD_COMMAND_NS_CREATE, "alpha", &len, 0);
    CHECK_RC(ud_fsm_apply(fsm, 1, create, len, &res), 0, res->errmsg);
    size_t one[16];
    for (size_t i = 0; i < 16; i++)
        one[i] = 1;
    const char *first[] = {"client-7-write-384"};
    uint8_t *e = encode_keyed(1, one, first, "first", &len);
    CHECK_RC(ud_fsm_apply(fsm, 2, e, len, &res), 0, res->errmsg);
    uint64_t lsn = res->records[0].lsn;
    assert_int_equal(lsn, 1);
    free(e);

    uint64_t index = 3;
    char names[16][32];
    const char *keys[16];
    for (int batch = 0; batch < 320; batch++, index++) {
        for (int i = 0; i < 16; i++) {
            snprintf(names[i], sizeof names[i], "other-%d-%d", batch, i);
            keys[i] = names[i];
        }
        e = encode_keyed(16, one, keys, "busy", &len);
        CHECK_RC(ud_fsm_apply(fsm, index, e, len, &res), 0, res->errmsg);
        free(e);
    }
    assert_int_equal(ns_last_lsn(reg, "alpha"), 1 + 320 * 16);

    e = encode_keyed(1, one, first, "retry", &len);
    CHECK_RC(ud_fsm_apply(fsm, index, e, len, &res), 0, res->errmsg);
    assert_int_equal(res->records[0].status, 0);
    assert_int_equal(res->records[0].lsn, lsn);
    assert_int_equal(ns_last_lsn(reg, "alpha"), 1 + 320 * 16);
    free(e);

    free(create);
    close_node(dir, reg, fsm);
}

/* --- conditions (If-Match judged at apply time) -------------------------------------------- */

/* One record of a conditions command: a PUT of key=value, its condition (kind 0: none) and its
 * request's idempotency key (NULL: none; its digest named after the value). */
struct cond_spec {
    const char *key, *value;
    uint8_t kind;
    uint64_t lsn;
    const char *idem;
};

/* One group "alpha", one record per request, with its conditions and keys. */
static uint8_t *encode_conds(const struct cond_spec *c, size_t n, size_t *len)
{
    struct rec recs[16];
    size_t size = UD_COMMAND_HEADER_SIZE + ud_command_group_size("alpha") +
                  UD_COMMAND_KEYS_OVERHEAD + UD_COMMAND_CONDS_OVERHEAD;
    for (size_t i = 0; i < n; i++) {
        recs[i] = kv_record(c[i].key, c[i].value, 500 + i);
        size += UD_COMMAND_RECORD_OVERHEAD + recs[i].len + UD_COMMAND_COND_SIZE;
        if (c[i].idem != NULL)
            size += ud_command_key_size(strlen(c[i].idem));
    }
    struct ud_command_writer w;
    uint8_t *buf = start_alpha(&w, UD_COMMAND_ALIGN(size), recs, n);
    for (size_t i = 0; i < n; i++) {
        uint8_t digest[UD_COMMAND_DIGEST_SIZE];
        test_digest(c[i].value, digest);
        if (c[i].idem != NULL)
            assert_int_equal(
                ud_command_writer_key(&w, (uint32_t)i, 1, c[i].idem, strlen(c[i].idem), digest), 0);
    }
    for (size_t i = 0; i < n; i++)
        if (c[i].kind != 0)
            assert_int_equal(ud_command_writer_cond(&w, (uint32_t)i, c[i].kind, c[i].lsn), 0);
    assert_int_equal(ud_command_writer_finish(&w, len), 0);
    return buf;
}

#define COND_LSN    UD_COMMAND_COND_LSN
#define COND_EXISTS UD_COMMAND_COND_EXISTS

/* Applies entry index to fsm and checks each record's status and LSN (want_lsn: the LSN given,
 * or for UD_EPRECONDITION the key's current one). */
static const struct ud_fsm_result *apply_expect(struct ud_fsm *fsm, uint64_t index,
                                                const uint8_t *buf, size_t len, size_t n,
                                                const int *want_status, const uint64_t *want_lsn)
{
    const struct ud_fsm_result *res;
    CHECK_RC(ud_fsm_apply(fsm, index, buf, len, &res), 0, res->errmsg);
    assert_int_equal(res->status, 0);
    assert_int_equal(res->nrecords, n);
    for (size_t i = 0; i < n; i++) {
        if (res->records[i].status != want_status[i] || res->records[i].lsn != want_lsn[i])
            print_message("entry %llu record %zu: status %d lsn %llu (%s)\n",
                          (unsigned long long)index, i, res->records[i].status,
                          (unsigned long long)res->records[i].lsn, ud_fsm_result_msg(res, i));
        assert_int_equal(res->records[i].status, want_status[i]);
        assert_int_equal(res->records[i].lsn, want_lsn[i]);
    }
    return res;
}

/*
 * A record's condition is judged when it is applied, against the key as the records before it
 * left it (in the same entry too): equal, absent (0) and exists (*) hold or fail as If-Match
 * says. A failed one writes nothing and consumes no LSN (the next record takes the next one), its
 * result carries UD_EPRECONDITION, the key's current LSN and the HTTP API's message, and its
 * idempotency key is remembered as a rejection (a retry gets the 412 again), while a keyed write
 * that was applied answers its retry from the window whatever its condition says now. Two FSMs
 * applying the same entries end with identical WALs, and a replay after a restart skips everything.
 */
static void test_conditions(void **state)
{
    (void)state;
    char *dir[2] = {ud_test_tmpdir("raft-cond-a"), ud_test_tmpdir("raft-cond-b")};
    char errmsg[UD_ERRMSG_SIZE] = "";
    struct ud_registry *reg[2];
    struct ud_fsm *fsm[2];
    for (int i = 0; i < 2; i++)
        open_node(dir[i], &reg[i], &fsm[i]);
    size_t len[10];
    uint8_t *e[10];
    e[0] = encode_ns(UD_COMMAND_NS_CREATE, "alpha", &len[0], 0);
    const struct cond_spec first[] = {{"k", "v1", 0, 0, NULL}};
    e[1] = encode_conds(first, 1, &len[1]);
    /* Equal holds (k at 1 -> 2); the same condition on the next record now fails (k at 2),
     * consumes no LSN, and the unconditional write after it takes LSN 3. */
    const struct cond_spec equal[] = {
        {"k", "v2", COND_LSN, 1, NULL}, {"k", "v3", COND_LSN, 1, NULL}, {"j", "j1", 0, 0, NULL}};
    e[2] = encode_conds(equal, 3, &len[2]);
    /* Absent (0) and exists (*), holding and failing. */
    const struct cond_spec absent[] = {{"new", "n1", COND_LSN, 0, NULL},
                                       {"k", "v4", COND_LSN, 0, NULL},
                                       {"none", "x", COND_EXISTS, 0, NULL},
                                       {"k", "v5", COND_EXISTS, 0, NULL},
                                       {"none", "y", COND_LSN, 7, NULL}};
    e[3] = encode_conds(absent, 5, &len[3]);
    /* Keyed: a failed condition is remembered like any rejection: the same key again gets the
     * 412 again (with the key's LSN as it is now), even with a condition that holds now. */
    const struct cond_spec keyed_fail[] = {{"k", "v6", COND_LSN, 4, "key-1"}};
    e[4] = encode_conds(keyed_fail, 1, &len[4]);
    const struct cond_spec keyed_ok[] = {{"k", "v6", COND_LSN, 5, "key-1"}};
    e[5] = encode_conds(keyed_ok, 1, &len[5]);
    e[6] = encode_conds(keyed_ok, 1, &len[6]);
    e[7] = encode_conds(first, 1, &len[7]);
    /* A keyed write whose condition fails, and a later, other request under its key whose
     * condition holds: refused as a reuse of the key, nothing applied (also after a replay,
     * below). */
    const struct cond_spec keyed_fail2[] = {{"k", "v8", COND_LSN, 1, "key-2"}};
    e[8] = encode_conds(keyed_fail2, 1, &len[8]);
    const struct cond_spec keyed_ok2[] = {{"j", "j2", COND_LSN, 3, "key-2"}};
    e[9] = encode_conds(keyed_ok2, 1, &len[9]);

    const int ok1[] = {0}, st_equal[] = {0, UD_EPRECONDITION, 0},
              st_absent[] = {0, UD_EPRECONDITION, UD_EPRECONDITION, 0, UD_EPRECONDITION},
              st_fail[] = {UD_EPRECONDITION};
    const uint64_t lsn1[] = {1}, lsn_equal[] = {2, 2, 3}, lsn_absent[] = {4, 2, 0, 5, 0},
                   lsn_keyed_fail[] = {5}, lsn6[] = {6};
    for (int n = 0; n < 2; n++) {
        const struct ud_fsm_result *res;
        CHECK_RC(ud_fsm_apply(fsm[n], 1, e[0], len[0], &res), 0, res->errmsg);
        apply_expect(fsm[n], 2, e[1], len[1], 1, ok1, lsn1);
        res = apply_expect(fsm[n], 3, e[2], len[2], 3, st_equal, lsn_equal);
        assert_string_equal(ud_fsm_result_msg(res, 1),
                            "precondition failed: If-Match 1 but the key is at LSN 2");
        res = apply_expect(fsm[n], 4, e[3], len[3], 5, st_absent, lsn_absent);
        assert_string_equal(ud_fsm_result_msg(res, 1),
                            "precondition failed: If-Match 0 but the key is at LSN 2");
        assert_string_equal(ud_fsm_result_msg(res, 2),
                            "precondition failed: If-Match * but the key does not exist");
        assert_string_equal(ud_fsm_result_msg(res, 4),
                            "precondition failed: If-Match 7 but the key does not exist");
        apply_expect(fsm[n], 5, e[4], len[4], 1, st_fail, lsn_keyed_fail);
        res = apply_expect(fsm[n], 6, e[5], len[5], 1, st_fail, lsn_keyed_fail); /* window */
        assert_string_equal(ud_fsm_result_msg(res, 0), "the first write with this "
                                                       "Idempotency-Key was rejected: "
                                                       "precondition failed");
        apply_expect(fsm[n], 7, e[6], len[6], 1, st_fail, lsn_keyed_fail);
        apply_expect(fsm[n], 8, e[7], len[7], 1, ok1, lsn6);
        assert_int_equal(ns_last_lsn(reg[n], "alpha"), 6);
        struct ud_fsm_stats st;
        ud_fsm_stats(fsm[n], &st);
        assert_int_equal(st.applied, 6);
        assert_int_equal(st.rejected, 7);
    }

    /* A condition on a record that is not a one-key KV write is refused, deterministically. */
    struct group_spec g = {.ns = "alpha", .recs = {stray_commit(3)}, .n = 1};
    size_t slen;
    uint8_t *plain = encode(&g, 1, &slen, 0);
    struct ud_command cmd;
    assert_int_equal(ud_command_decode(plain, slen, &cmd, NULL), 0);
    size_t body_end = UD_COMMAND_HEADER_SIZE + cmd.body_len;
    size_t clen = UD_COMMAND_ALIGN(body_end + UD_COMMAND_CONDS_OVERHEAD + UD_COMMAND_COND_SIZE);
    uint8_t *stray = calloc(1, clen);
    memcpy(stray, plain, body_end);
    ud_put_le16(stray + 2, UD_COMMAND_FLAG_CONDITIONS);
    ud_put_le32(stray + body_end, 1);
    ud_put_le32(stray + body_end + 4, 0);
    stray[body_end + 8] = COND_EXISTS;
    CHECK_RC(ud_command_decode(stray, clen, &cmd, errmsg), 0, errmsg);
    const int st_inval[] = {UD_EINVAL};
    const uint64_t lsn0[] = {0};
    const uint64_t lsn_fail2[] = {6};
    for (int n = 0; n < 2; n++) {
        apply_expect(fsm[n], 9, stray, clen, 1, st_inval, lsn0);
        apply_expect(fsm[n], 10, e[8], len[8], 1, st_fail, lsn_fail2);
    }

    /* A restart replays the log: every record is in the WAL or was refused; nothing new. The
     * keys of failed conditions are remembered there too (the retained WAL covers their
     * positions, so a miss is a refusal): another request under key-2 is refused on both
     * writers alike and not applied. */
    ud_fsm_close(fsm[0]);
    CHECK_RC(ud_fsm_init(reg[0], &fsm[0], errmsg), 0, errmsg);
    for (int i = 1; i < 9; i++) {
        const struct ud_fsm_result *res;
        uint64_t index = i < 8 ? (uint64_t)i + 1 : 10;
        CHECK_RC(ud_fsm_apply(fsm[0], index, e[i], len[i], &res), 0, res->errmsg);
    }
    assert_int_equal(ns_last_lsn(reg[0], "alpha"), 6);
    struct ud_fsm_stats st;
    ud_fsm_stats(fsm[0], &st);
    assert_int_equal(st.applied, 0);
    const int st_reused[] = {UD_EKEYREUSED};
    /* The replay rebuilt key-1 as a failed condition, as the live writer holds it: a retry is
     * answered 412 on both, with the key's LSN now. */
    const uint64_t lsn_k[] = {6};
    for (int n = 0; n < 2; n++)
        apply_expect(fsm[n], 11, e[5], len[5], 1, st_fail, lsn_k);
    for (int n = 0; n < 2; n++) {
        apply_expect(fsm[n], 12, e[9], len[9], 1, st_reused, lsn0);
        assert_int_equal(ns_last_lsn(reg[n], "alpha"), 6);
    }

    free(plain);
    free(stray);
    for (int i = 0; i < 10; i++)
        free(e[i]);
    for (int n = 0; n < 2; n++) {
        ud_fsm_close(fsm[n]);
        ud_registry_close(reg[n]);
    }
    /* Identical WALs on both writers (read once they are closed). */
    struct wal_dump d[2];
    for (int n = 0; n < 2; n++)
        dump_wal(dir[n], "alpha", &d[n]);
    assert_int_equal(d[0].n, 6);
    assert_int_equal(d[1].n, d[0].n);
    for (size_t i = 0; i < d[0].n; i++) {
        assert_int_equal(d[0].recs[i].len, d[1].recs[i].len);
        assert_memory_equal(d[0].recs[i].buf, d[1].recs[i].buf, d[0].recs[i].len);
    }
    for (int n = 0; n < 2; n++)
        dump_free(&d[n]);

    for (int n = 0; n < 2; n++) {
        ud_test_rmtree(dir[n]);
        free(dir[n]);
    }
}

/*
 * A replay skips a keyed write it does not find in the WAL: one older than the retained WAL
 * (retention may have removed it: whether it applied cannot be told), conditional or not, and one
 * refused when first applied (its position inside the retained WAL; the replay cannot know why).
 * Each key is remembered as in doubt, so that a retry is answered "outcome unknown", never applied
 * and never told it succeeded at LSN 0 (as the unconditional ones were): the writers that applied
 * them answer from their window, and this one must write nothing either, or its WAL would part
 * from theirs.
 */
static void test_window_after_replay_miss(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("raft-replay-miss");
    struct ud_registry *reg;
    struct ud_fsm *fsm;
    open_node(dir, &reg, &fsm);
    size_t len[5];
    uint8_t *create = encode_ns(UD_COMMAND_NS_CREATE, "alpha", &len[0], 0);
    const struct cond_spec plain[] = {{"k", "v1", 0, 0, NULL}};
    uint8_t *later = encode_conds(plain, 1, &len[1]);
    const struct cond_spec keyed_cas[] = {{"k", "v2", COND_EXISTS, 0, "key-9"}};
    uint8_t *cas = encode_conds(keyed_cas, 1, &len[2]);
    const struct cond_spec keyed_put[] = {{"k", "v3", 0, 0, "key-8"}};
    uint8_t *old = encode_conds(keyed_put, 1, &len[3]);
    const struct cond_spec keyed_refused[] = {{"k", "v4", 0, 0, "key-7"}};
    uint8_t *refused = encode_conds(keyed_refused, 1, &len[4]);
    const struct ud_fsm_result *res;
    CHECK_RC(ud_fsm_apply(fsm, 1, create, len[0], &res), 0, res->errmsg);
    /* This writer's WAL starts at raft entry 20 (what it held from before has been removed) and
     * holds entries 20 and 22: entry 21 (key-7) was refused here when it was applied. */
    const int ok1[] = {0};
    const uint64_t lsn1[] = {1}, lsn2[] = {2};
    apply_expect(fsm, 20, later, len[1], 1, ok1, lsn1);
    apply_expect(fsm, 22, later, len[1], 1, ok1, lsn2);
    ud_fsm_close(fsm);
    char errmsg[UD_ERRMSG_SIZE] = "";
    CHECK_RC(ud_fsm_init(reg, &fsm, errmsg), 0, errmsg);
    /* The replay meets entries 5 (key-9), 6 (key-8) and 21 (key-7): skipped, none in the WAL. */
    CHECK_RC(ud_fsm_apply(fsm, 5, cas, len[2], &res), 0, res->errmsg);
    CHECK_RC(ud_fsm_apply(fsm, 6, old, len[3], &res), 0, res->errmsg);
    CHECK_RC(ud_fsm_apply(fsm, 21, refused, len[4], &res), 0, res->errmsg);
    /* Their retries: in doubt, nothing written (If-Match * holds: judged, key-9 would apply). */
    const int st_doubt[] = {UD_EINDOUBT};
    const uint64_t lsn0[] = {0};
    apply_expect(fsm, 23, cas, len[2], 1, st_doubt, lsn0);
    res = apply_expect(fsm, 24, old, len[3], 1, st_doubt, lsn0);
    assert_non_null(
        strstr(ud_fsm_result_msg(res, 0), "it was refused, or its record is no longer in the WAL"));
    apply_expect(fsm, 25, refused, len[4], 1, st_doubt, lsn0);
    assert_int_equal(ns_last_lsn(reg, "alpha"), 2);
    free(create);
    free(later);
    free(cas);
    free(old);
    free(refused);
    close_node(dir, reg, fsm);
}

/*
 * A keyed write applied while its namespace existed, replayed by a writer after the namespace was
 * deleted: the replay cannot apply it and does not know whether it applied then, and still
 * remembers its key (in doubt), as the writer that applied it does. After a re-create, a retry is
 * a duplicate on both and applies on neither. A keyed write after a delete is refused everywhere.
 */
static void test_window_after_namespace_delete(void **state)
{
    (void)state;
    char *dir[2] = {ud_test_tmpdir("raft-win-del-a"), ud_test_tmpdir("raft-win-del-b")};
    struct ud_registry *reg[2];
    struct ud_fsm *fsm[2];
    for (int n = 0; n < 2; n++)
        open_node(dir[n], &reg[n], &fsm[n]);
    size_t lc, ld, lw;
    uint8_t *create = encode_ns(UD_COMMAND_NS_CREATE, "alpha", &lc, 0);
    uint8_t *del = encode_ns(UD_COMMAND_NS_DELETE, "alpha", &ld, 0);
    const struct cond_spec keyed[] = {{"k", "v1", 0, 0, "key-n"}};
    uint8_t *put = encode_conds(keyed, 1, &lw);
    const struct ud_fsm_result *res;
    char errmsg[UD_ERRMSG_SIZE] = "";
    const int ok1[] = {0};
    const uint64_t lsn1[] = {1};
    /* A applies entries 1-3 live. */
    CHECK_RC(ud_fsm_apply(fsm[0], 1, create, lc, &res), 0, res->errmsg);
    apply_expect(fsm[0], 2, put, lw, 1, ok1, lsn1);
    CHECK_RC(ud_fsm_apply(fsm[0], 3, del, ld, &res), 0, res->errmsg);
    /* B restarts with the delete already done (its snapshot), then replays entry 2. */
    CHECK_RC(ud_fsm_apply(fsm[1], 1, create, lc, &res), 0, res->errmsg);
    CHECK_RC(ud_fsm_apply(fsm[1], 3, del, ld, &res), 0, res->errmsg);
    ud_fsm_close(fsm[1]);
    CHECK_RC(ud_fsm_init(reg[1], &fsm[1], errmsg), 0, errmsg);
    /* Deleted at entry 3, after this write: whether it applied is not known on B. */
    const int st_doubt[] = {UD_EINDOUBT};
    const uint64_t lsn0[] = {0};
    apply_expect(fsm[1], 2, put, lw, 1, st_doubt, lsn0);
    /* Re-created on both, then the client's retry: a duplicate everywhere. */
    for (int n = 0; n < 2; n++) {
        CHECK_RC(ud_fsm_apply(fsm[n], 4, create, lc, &res), 0, res->errmsg);
        CHECK_RC(ud_fsm_apply(fsm[n], 5, put, lw, &res), 0, res->errmsg);
        assert_int_equal(res->nrecords, 1);
        /* A answers the first answer (LSN 1); B "outcome unknown", as its replay remembered
         * (it never says the write was refused: it was not). */
        assert_int_equal(res->records[0].status, n == 0 ? 0 : UD_EINDOUBT);
        assert_int_equal(res->records[0].lsn, n == 0 ? 1 : 0);
        assert_int_equal(ns_last_lsn(reg[n], "alpha"), 0);
    }
    /* A keyed write after the namespace was deleted (entry 7, after the delete at 6) is refused
     * as not found on every writer, and so is its retry. */
    const struct cond_spec late[] = {{"k", "v2", 0, 0, "key-late"}};
    size_t ll;
    uint8_t *after = encode_conds(late, 1, &ll);
    const int st_nf[] = {UD_ENOTFOUND};
    for (int n = 0; n < 2; n++) {
        CHECK_RC(ud_fsm_apply(fsm[n], 6, del, ld, &res), 0, res->errmsg);
        apply_expect(fsm[n], 7, after, ll, 1, st_nf, lsn0);
        apply_expect(fsm[n], 8, after, ll, 1, st_nf, lsn0);
    }
    free(after);
    /* A name never created: no tombstone, refused as not found. */
    char *fresh = ud_test_tmpdir("raft-win-del-c");
    struct ud_registry *reg_c;
    struct ud_fsm *fsm_c;
    open_node(fresh, &reg_c, &fsm_c);
    const struct cond_spec never[] = {{"k", "v3", 0, 0, "key-never"}};
    size_t lnv;
    uint8_t *nv = encode_conds(never, 1, &lnv);
    apply_expect(fsm_c, 1, nv, lnv, 1, st_nf, lsn0);
    apply_expect(fsm_c, 2, nv, lnv, 1, st_nf, lsn0);
    free(nv);
    close_node(fresh, reg_c, fsm_c);
    free(create);
    free(del);
    free(put);
    for (int n = 0; n < 2; n++) {
        ud_fsm_close(fsm[n]);
        ud_registry_close(reg[n]);
        ud_test_rmtree(dir[n]);
        free(dir[n]);
    }
}

/* Decodes buf after patching byte at (of the conditions section) to v, and expects rc with a
 * message naming what (the field and offset). */
static void cond_reject(const uint8_t *good, size_t len, size_t at, int width, uint64_t v, int rc,
                        const char *what)
{
    uint8_t *buf = malloc(len);
    memcpy(buf, good, len);
    if (width == 1)
        buf[at] = (uint8_t)v;
    else if (width == 4)
        ud_put_le32(buf + at, (uint32_t)v);
    else
        ud_put_le64(buf + at, v);
    struct ud_command cmd;
    char errmsg[UD_ERRMSG_SIZE] = "";
    assert_int_equal(ud_command_decode(buf, len, &cmd, errmsg), rc);
    if (strstr(errmsg, what) == NULL)
        print_message("errmsg \"%s\" does not name \"%s\"\n", errmsg, what);
    assert_non_null(strstr(errmsg, what));
    free(buf);
}

/*
 * The conditions section: encoded after the keys, decoded back record by record; every malformed
 * section is refused with the field and offset; a command without the flag decodes as before; an
 * unknown flag beyond it is a newer format (UD_EVERSION); the writer refuses what the decoder
 * would.
 */
static void test_command_conditions(void **state)
{
    (void)state;
    const struct cond_spec c[] = {{"a", "1", COND_LSN, 9, "key-a"},
                                  {"b", "2", 0, 0, NULL},
                                  {"c", "3", COND_EXISTS, 0, "key-c"},
                                  {"d", "4", COND_LSN, 0, NULL}};
    size_t len;
    uint8_t *buf = encode_conds(c, 4, &len);
    assert_int_equal(len % 8, 0);
    struct ud_command cmd;
    char errmsg[UD_ERRMSG_SIZE] = "";
    CHECK_RC(ud_command_decode(buf, len, &cmd, errmsg), 0, errmsg);
    assert_int_equal(ud_get_le16(buf + 2),
                     UD_COMMAND_FLAG_KEYS | UD_COMMAND_FLAG_DIGESTS | UD_COMMAND_FLAG_CONDITIONS);
    assert_int_equal(cmd.nrecords, 4);
    assert_int_equal(cmd.nkeys, 2);
    assert_int_equal(cmd.nconds, 3);
    struct ud_command_iter it;
    struct ud_command_cond cd;
    ud_command_conds_iter_init(&it, &cmd);
    const uint32_t want_pos[] = {0, 2, 3};
    const uint8_t want_kind[] = {COND_LSN, COND_EXISTS, COND_LSN};
    const uint64_t want_lsn[] = {9, 0, 0};
    for (int i = 0; i < 3; i++) {
        assert_true(ud_command_next_cond(&it, &cd));
        assert_int_equal(cd.pos, want_pos[i]);
        assert_int_equal(cd.kind, want_kind[i]);
        assert_int_equal(cd.lsn, want_lsn[i]);
    }
    assert_false(ud_command_next_cond(&it, &cd));
    struct ud_command_key k;
    ud_command_keys_iter_init(&it, &cmd);
    assert_true(ud_command_next_key(&it, &k));
    assert_int_equal(k.first_pos, 0);
    assert_true(ud_command_next_key(&it, &k));
    assert_int_equal(k.first_pos, 2);
    assert_false(ud_command_next_key(&it, &k));

    /* Conditions without keys. */
    const struct cond_spec nokeys[] = {{"a", "1", 0, 0, NULL}, {"b", "2", COND_LSN, 3, NULL}};
    size_t nlen;
    uint8_t *nk = encode_conds(nokeys, 2, &nlen);
    CHECK_RC(ud_command_decode(nk, nlen, &cmd, errmsg), 0, errmsg);
    assert_int_equal(ud_get_le16(nk + 2), UD_COMMAND_FLAG_CONDITIONS);
    assert_int_equal(cmd.nkeys, 0);
    assert_int_equal(cmd.nconds, 1);
    ud_command_conds_iter_init(&it, &cmd);
    assert_true(ud_command_next_cond(&it, &cd));
    assert_int_equal(cd.pos, 1);
    assert_int_equal(cd.lsn, 3);
    size_t at = (size_t)(cmd.conds - nk); /* the count */

    /* Rejections, each naming the field and its offset. */
    char what[96];
    cond_reject(nk, nlen, at, 4, 0, UD_ECORRUPT, "condition count at byte");
    snprintf(what, sizeof what, "condition 0 at byte %zu names record 2", at + 4);
    cond_reject(nk, nlen, at + 4, 4, 2, UD_ECORRUPT, what);
    snprintf(what, sizeof what, "condition 0 kind 3 at byte %zu is unknown", at + 8);
    cond_reject(nk, nlen, at + 8, 1, 3, UD_ECORRUPT, what);
    cond_reject(nk, nlen, at + 8, 1, 0, UD_ECORRUPT, "kind 0");
    cond_reject(nk, nlen, at + 8, 1, COND_EXISTS, UD_ECORRUPT, "kind exists carries LSN 3");
    /* Two conditions announced, one there: the buffer ends inside the second. */
    cond_reject(nk, nlen, at, 4, 2, UD_ETRUNCATED, "condition 1 at byte");
    /* Not ascending: the same record twice (the first condition copied over the padding). */
    {
        size_t end = at + UD_COMMAND_CONDS_OVERHEAD + UD_COMMAND_COND_SIZE;
        size_t l2 = UD_COMMAND_ALIGN(end + UD_COMMAND_COND_SIZE);
        uint8_t *two = calloc(1, l2);
        memcpy(two, nk, end);
        memcpy(two + end, nk + at + 4, UD_COMMAND_COND_SIZE);
        ud_put_le32(two + at, 2);
        CHECK_RC(ud_command_decode(two, l2, &cmd, errmsg), UD_ECORRUPT, errmsg);
        assert_non_null(strstr(errmsg, "not after the previous condition's"));
        /* Trailing bytes after the section (more than the padding). */
        ud_put_le32(two + at, 1);
        CHECK_RC(ud_command_decode(two, l2, &cmd, errmsg), UD_ECORRUPT, errmsg);
        assert_non_null(strstr(errmsg, "trailing bytes"));
        free(two);
    }
    /* A non-zero padding byte, a length that is not a multiple of 8. */
    {
        size_t end = at + UD_COMMAND_CONDS_OVERHEAD + UD_COMMAND_COND_SIZE;
        assert_true(end < nlen);
        uint8_t *pad = malloc(nlen);
        memcpy(pad, nk, nlen);
        pad[nlen - 1] = 1;
        CHECK_RC(ud_command_decode(pad, nlen, &cmd, errmsg), UD_ECORRUPT, errmsg);
        assert_non_null(strstr(errmsg, "padding byte"));
        CHECK_RC(ud_command_decode(nk, end, &cmd, errmsg), UD_ECORRUPT, errmsg);
        free(pad);
    }
    /* Flags: the conditions flag without a section runs out of buffer; on a namespace command
     * it is not allowed; a bit beyond it is a newer format. */
    {
        struct group_spec g = {.ns = "alpha", .recs = {kv_record("a", "1", 1)}, .n = 1};
        size_t plen;
        uint8_t *plain = encode(&g, 1, &plen, 0);
        CHECK_RC(ud_command_decode(plain, plen, &cmd, errmsg), 0, errmsg);
        assert_int_equal(cmd.nconds, 0); /* without the flag: as before */
        ud_put_le16(plain + 2, UD_COMMAND_FLAG_CONDITIONS);
        int rc = ud_command_decode(plain, plen, &cmd, errmsg);
        assert_true(rc == UD_ETRUNCATED || rc == UD_ECORRUPT);
        ud_put_le16(plain + 2, 8);
        CHECK_RC(ud_command_decode(plain, plen, &cmd, errmsg), UD_EVERSION, errmsg);
        free(plain);
        size_t slen;
        uint8_t *ns = encode_ns(UD_COMMAND_NS_CREATE, "alpha", &slen, 0);
        ud_put_le16(ns + 2, UD_COMMAND_FLAG_CONDITIONS);
        CHECK_RC(ud_command_decode(ns, slen, &cmd, errmsg), UD_ECORRUPT, errmsg);
        free(ns);
    }
    /* The writer refuses what the decoder would: positions out of range or not ascending, an
     * unknown kind, exists with an LSN, a key after a condition, a record after one. */
    {
        uint8_t wb[1024];
        struct ud_command_writer w;
        struct rec r = kv_record("a", "1", 1);
        uint32_t bad_pos[] = {2, 0};
        for (int t = 0; t < 6; t++) {
            ud_command_writer_init(&w, wb, sizeof wb);
            assert_int_equal(ud_command_writer_group(&w, "alpha"), 0);
            assert_int_equal(ud_command_writer_record(&w, r.buf, r.len), 0);
            assert_int_equal(ud_command_writer_record(&w, r.buf, r.len), 0);
            int rc;
            if (t < 2) {
                if (t == 1)
                    assert_int_equal(ud_command_writer_cond(&w, 0, COND_LSN, 1), 0);
                rc = ud_command_writer_cond(&w, bad_pos[t], COND_LSN, 1);
            } else if (t == 2) {
                rc = ud_command_writer_cond(&w, 0, 9, 1);
            } else if (t == 3) {
                rc = ud_command_writer_cond(&w, 0, COND_EXISTS, 1);
            } else {
                assert_int_equal(ud_command_writer_cond(&w, 0, COND_LSN, 1), 0);
                rc = t == 4 ? ud_command_writer_key(&w, 1, 1, "k", 1, NULL)
                            : ud_command_writer_record(&w, r.buf, r.len);
            }
            assert_int_equal(rc, UD_EINVAL);
            assert_int_equal(ud_command_writer_finish(&w, &len), UD_EINVAL); /* sticky */
        }
        free(r.buf);
    }
    free(nk);
    free(buf);
}

/* The window forgets the oldest key first, by count; the member directory keeps the newest
 * addresses; both survive their snapshot encoding. */
static void test_tables(void **state)
{
    (void)state;
    struct ud_idem t, t2;
    assert_int_equal(ud_idem_init(&t), 0);
    assert_int_equal(ud_idem_init(&t2), 0);
    char key[32];
    for (int i = 0; i <= UD_IDEM_WINDOW; i++) {
        int n = snprintf(key, sizeof key, "key-%d", i);
        uint8_t digest[UD_COMMAND_DIGEST_SIZE];
        test_digest(key, digest);
        ud_idem_insert(&t, "ns", (const uint8_t *)key, (size_t)n, i % 2 ? digest : NULL,
                       1000 + (uint64_t)i, 1, 0);
    }
    assert_null(ud_idem_find(&t, "ns", (const uint8_t *)"key-0", 5));
    assert_non_null(ud_idem_find(&t, "ns", (const uint8_t *)"key-1", 5));
    assert_null(ud_idem_find(&t, "other", (const uint8_t *)"key-1", 5));
    int n = snprintf(key, sizeof key, "key-%d", UD_IDEM_WINDOW);
    const struct ud_idem_entry *e = ud_idem_find(&t, "ns", (const uint8_t *)key, (size_t)n);
    assert_non_null(e);
    assert_int_equal(e->first_lsn, 1000 + UD_IDEM_WINDOW);

    struct ud_directory d, d2;
    memset(&d, 0, sizeof d);
    ud_directory_set(&d, 1, "http://127.0.0.1:4001", "127.0.0.1:6381");
    ud_directory_set(&d, 2, "http://127.0.0.1:4002", "");
    ud_directory_set(&d, 1, "http://127.0.0.1:5001", "127.0.0.1:6391");
    assert_int_equal(d.n, 2);
    assert_string_equal(ud_directory_get(&d, 1)->http, "http://127.0.0.1:5001");

    size_t cap = ud_tables_encoded_size(&t, &d), len = 0, off = 0;
    uint8_t *buf = malloc(cap);
    ud_tables_encode(&t, &d, buf, &len);
    assert_true(len <= cap);
    char errmsg[UD_ERRMSG_SIZE];
    CHECK_RC(ud_tables_decode(&t2, &d2, buf, len, &off, 1, errmsg), 0, errmsg);
    assert_int_equal(off, len);
    assert_int_equal(t2.count, UD_IDEM_WINDOW);
    /* Digests survive (known or not): key-3's is its own, key-2's unknown. */
    uint8_t d3[UD_COMMAND_DIGEST_SIZE], d4[UD_COMMAND_DIGEST_SIZE];
    test_digest("key-3", d3);
    test_digest("key-4", d4);
    e = ud_idem_find(&t2, "ns", (const uint8_t *)"key-3", 5);
    assert_true(ud_idem_same_request(e, d3));
    assert_false(ud_idem_same_request(e, d4));
    assert_true(ud_idem_same_request(e, NULL));
    assert_true(ud_idem_same_request(ud_idem_find(&t2, "ns", (const uint8_t *)"key-2", 5), d4));
    /* Read as keys without digests, the same bytes do not decode to the end. */
    off = 0;
    assert_true(ud_tables_decode(NULL, NULL, buf, len, &off, 0, errmsg) != 0 || off != len);
    assert_null(ud_idem_find(&t2, "ns", (const uint8_t *)"key-0", 5));
    assert_non_null(ud_idem_find(&t2, "ns", (const uint8_t *)"key-1", 5));
    assert_string_equal(ud_directory_get(&d2, 2)->http, "http://127.0.0.1:4002");
    assert_string_equal(ud_directory_get(&d2, 1)->resp, "127.0.0.1:6391");
    /* The oldest of the decoded window goes first again: order survived. */
    ud_idem_insert(&t2, "ns", (const uint8_t *)"new", 3, NULL, 1, 1, 0);
    assert_null(ud_idem_find(&t2, "ns", (const uint8_t *)"key-1", 5));
    assert_non_null(ud_idem_find(&t2, "ns", (const uint8_t *)"key-2", 5));
    /* Every truncation is refused: each cut in the directory and the first keys, then 200 more
     * spread over the window (each decode walks up to its cut), the last byte included. */
    for (size_t cut = 0; cut < len; cut = cut < 2048 ? cut + 1 : cut + (len - 2048) / 200 + 1) {
        off = 0;
        assert_int_equal(ud_tables_decode(&t2, &d2, buf, cut, &off, 1, errmsg), UD_ECORRUPT);
    }
    off = 0;
    assert_int_equal(ud_tables_decode(&t2, &d2, buf, len - 1, &off, 1, errmsg), UD_ECORRUPT);
    free(buf);
    ud_idem_free(&t);
    ud_idem_free(&t2);
}

/* Keys sections and member commands the decoder must refuse. */
static void test_command_keys_and_members(void **state)
{
    (void)state;
    char errmsg[UD_ERRMSG_SIZE];
    struct ud_command cmd;
    size_t len;
    size_t n[] = {1, 2};
    const char *keys[] = {"a", "b"};
    uint8_t *buf = encode_keyed(2, n, keys, "x", &len);
    CHECK_RC(ud_command_decode(buf, len, &cmd, errmsg), 0, errmsg);
    /* Find the keys section: the second key's first_pos is 1; make it overlap the first (0). */
    const uint8_t *k = cmd.keys;
    size_t koff = (size_t)(k - buf);
    uint8_t *bad = malloc(len);
    memcpy(bad, buf, len);
    size_t second = koff + 4 + 9 + 1;
    bad[second] = 0;
    assert_int_equal(ud_command_decode(bad, len, &cmd, errmsg), UD_ECORRUPT);
    memcpy(bad, buf, len);
    bad[second + 4] = 9; /* 9 records from position 1: past the end */
    assert_int_equal(ud_command_decode(bad, len, &cmd, errmsg), UD_ECORRUPT);
    memcpy(bad, buf, len);
    bad[koff + 4 + 8] = 0; /* empty key */
    assert_int_equal(ud_command_decode(bad, len, &cmd, errmsg), UD_ECORRUPT);
    memcpy(bad, buf, len);
    bad[2] = 0; /* keys present but no flag: trailing bytes */
    assert_int_equal(ud_command_decode(bad, len, &cmd, errmsg), UD_ECORRUPT);
    free(bad);
    free(buf);

    uint8_t m[64];
    CHECK_RC(
        ud_command_encode_member(7, "http://127.0.0.1:4007", "127.0.0.1:6387", m, sizeof m, &len),
        0, "encode member");
    assert_int_equal(len % 8, 0);
    CHECK_RC(ud_command_decode(m, len, &cmd, errmsg), 0, errmsg);
    assert_int_equal(cmd.kind, UD_COMMAND_MEMBER);
    assert_int_equal(cmd.member_id, 7);
    assert_string_equal(cmd.member_http, "http://127.0.0.1:4007");
    assert_string_equal(cmd.member_resp, "127.0.0.1:6387");
    m[17] = ' ';
    assert_int_equal(ud_command_decode(m, len, &cmd, errmsg), UD_ECORRUPT);
    assert_int_equal(ud_command_encode_member(0, "", "", m, sizeof m, &len), UD_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_command_codec),
        cmocka_unit_test(test_queue_outlives_snapshot_install),
        cmocka_unit_test(test_undecodable_snapshot_from_leader),
        cmocka_unit_test(test_undecodable_recorded_while_stalled),
        cmocka_unit_test(test_damaged_tombstone_at_leaders_snapshot),
        cmocka_unit_test(test_set_aside_undecodable),
        cmocka_unit_test(test_replay_skips_what_the_wal_holds),
        cmocka_unit_test(test_namespace_without_raft_position),
        cmocka_unit_test(test_stop_tells_committed_entries_apart),
        cmocka_unit_test(test_cluster_converges_through_failover),
        cmocka_unit_test(test_faults_keep_states_equal),
        cmocka_unit_test(test_snapshot_and_restore),
        cmocka_unit_test(test_restore_finds_namespace_created_again),
        cmocka_unit_test(test_restore_finds_created_again_past_retention),
        cmocka_unit_test(test_restore_finds_created_again_still_empty),
        cmocka_unit_test(test_restore_deletes_namespace_deleted_while_away),
        cmocka_unit_test(test_failed_delete_is_not_applied),
        cmocka_unit_test(test_failed_delete_stalls_pipeline),
        cmocka_unit_test(test_listing_failure_fails_snapshot),
        cmocka_unit_test(test_restore_of_unlisted_namespaces),
        cmocka_unit_test(test_stamps_unstamped_namespaces),
        cmocka_unit_test(test_catchup_install_marker),
        cmocka_unit_test(test_snapshot_by_bytes),
        cmocka_unit_test(test_idempotency_keys),
        cmocka_unit_test(test_idempotency_outlasts_busy_retry),
        cmocka_unit_test(test_idempotency_digests),
        cmocka_unit_test(test_conditions),
        cmocka_unit_test(test_window_after_replay_miss),
        cmocka_unit_test(test_window_after_namespace_delete),
        cmocka_unit_test(test_command_conditions),
        cmocka_unit_test(test_tables),
        cmocka_unit_test(test_command_keys_and_members),
    };
    return cmocka_run_group_tests_name("raft", tests, NULL, NULL);
}
