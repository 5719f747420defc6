/* The writer's RESP front end: write commands committed through raft, and its server's start/stop.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/log.h"
#include "core/resp/resp_server.h"
#include "proto/record.h"
#include "writer/cluster.h"
#include "writer/submit.h"
#include "writer/writer.h"

_Static_assert(UD_WRITER_RESP_MAX_CLIENTS == UD_RESP_DEFAULT_MAX_CLIENTS &&
                   UD_WRITER_RESP_IDLE_TIMEOUT_MS == UD_RESP_DEFAULT_IDLE_TIMEOUT &&
                   UD_WRITER_RESP_MAX_OUTPUT == UD_RESP_DEFAULT_MAX_OUTPUT &&
                   UD_WRITER_RESP_MAX_PENDING == UD_RESP_DEFAULT_MAX_PENDING,
               "[resp] defaults in writer/config.h differ from the RESP server's");

#define LOG "resp"

/* A write waiting for raft: where its reply goes and what it says on success. */
struct pending_write {
    struct ud_resp_slot *slot;
    struct ud_writer *w;
    long long count; /* the integer reply; -1 answers +OK */
    char ns[UD_NS_NAME_MAX + 1];
};

/*
 * Maps a submit failure to a reply. Admission control (the flush is behind) is TRYAGAIN, which
 * Redis clients treat as "retry later"; a follower that does not forward names the leader with
 * MOVED (or READONLY as a Redis replica does); the rest are ERR with the engine's or raft's
 * message.
 */
static void reply_submit_error(struct ud_resp_buf *b, const struct pending_write *p, int status,
                               const char *errmsg)
{
    const char *msg = errmsg != NULL && errmsg[0] != '\0' ? errmsg : ud_strerror(status);
    switch (status) {
    case UD_EBUSY:
        ud_resp_add_errorf(b, "TRYAGAIN write not admitted, retry later: %s", msg);
        break;
    case UD_ECLOSED:
        /* A follower with forwarding off names the leader (docs/resp.md); a follower that
         * forwards only fails here when no leader could take the write. */
        if (strncmp(msg, "MOVED ", 6) == 0)
            ud_resp_add_errorf(b, "%s", msg);
        else if (!p->w->stopping && strncmp(msg, "this writer is not the leader", 29) == 0)
            ud_resp_add_errorf(b, "READONLY %s", msg);
        else
            ud_resp_add_errorf(b, "ERR unavailable: %s", msg);
        break;
    case UD_ENOTFOUND:
        ud_resp_add_errorf(b, "ERR unknown namespace '%s' (it was deleted; SELECT another one)",
                           p->ns);
        break;
    default:
        ud_resp_add_errorf(b, "ERR %s: %s", ud_strerror(status), msg);
        break;
    }
}

static void write_done(void *arg, int status, const char *errmsg, const uint64_t *lsns, size_t n)
{
    struct pending_write *p = arg;
    struct ud_resp_buf *b = ud_resp_slot_buf(p->slot);
    (void)lsns;
    (void)n;
    if (status != 0)
        reply_submit_error(b, p, status, errmsg);
    else if (p->count < 0)
        ud_resp_add_simple(b, "OK");
    else
        ud_resp_add_int(b, p->count);
    ud_resp_slot_finish(p->slot);
    free(p);
}

/* Hands n encoded records to raft; the reply follows their commit (count < 0: +OK). */
static void submit(struct ud_resp_call *c, uint8_t **records, size_t *lens, size_t n,
                   long long count)
{
    struct pending_write *p = malloc(sizeof *p);
    if (p == NULL)
        abort();
    p->slot = ud_resp_defer(c);
    p->w = c->app;
    p->count = count;
    size_t nl = strnlen(c->session->ns, sizeof p->ns - 1);
    memcpy(p->ns, c->session->ns, nl);
    p->ns[nl] = '\0';
    ud_submit(p->w, c->session->ns, records, lens, n, write_done, p);
}

static void builder_init(struct ud_record_builder *b, enum ud_op op, enum ud_entry_type type)
{
    struct ud_record h;
    ud_engine_record_header(&h, op, type, UD_TXN_NONE, 0); /* the submit seam stamps the hlc */
    ud_record_builder_init(b, &h);
}

/* Finishes a record; on failure replies the error (a record is at most 4 MiB) and returns -1. */
static int builder_finish(struct ud_resp_call *c, struct ud_record_builder *b, uint8_t **rec,
                          size_t *len)
{
    int rc = ud_record_builder_finish(b, rec, len);
    if (rc == 0)
        return 0;
    if (rc == UD_ELIMIT)
        ud_resp_add_errorf(ud_resp_reply(c),
                           "ERR write too large: one write is at most %u bytes of keys, values "
                           "and headers",
                           UD_RECORD_MAX_SIZE);
    else
        ud_resp_add_errorf(ud_resp_reply(c), "ERR encode write: %s", ud_strerror(rc));
    return -1;
}

/*
 * Orders the arguments first, first + step, ... by their bytes and keeps the last occurrence of
 * each (a later SET of the same key in one MSET wins, as in Redis). Writes their indexes to idx
 * and returns how many are distinct.
 */
static int cmp_arg(const void *a, const void *b, void *arg)
{
    const struct ud_resp_call *c = arg;
    size_t i = *(const size_t *)a, j = *(const size_t *)b;
    size_t n = c->argvlen[i] < c->argvlen[j] ? c->argvlen[i] : c->argvlen[j];
    int r = n ? memcmp(c->argv[i], c->argv[j], n) : 0;
    if (r == 0)
        r = c->argvlen[i] < c->argvlen[j] ? -1 : c->argvlen[i] > c->argvlen[j];
    if (r == 0)
        r = i < j ? -1 : i > j; /* stable: the last occurrence sorts last */
    return r;
}

static int same_arg(const struct ud_resp_call *c, size_t i, size_t j)
{
    return c->argvlen[i] == c->argvlen[j] && memcmp(c->argv[i], c->argv[j], c->argvlen[i]) == 0;
}

static size_t *distinct(const struct ud_resp_call *c, size_t first, size_t step, size_t *count)
{
    size_t n = (c->argc - first + step - 1) / step;
    size_t *idx = malloc((n ? n : 1) * sizeof *idx);
    if (idx == NULL)
        abort();
    for (size_t k = 0; k < n; k++)
        idx[k] = first + k * step;
    qsort_r(idx, n, sizeof *idx, cmp_arg, (void *)c);
    size_t out = 0;
    for (size_t k = 0; k < n; k++) {
        if (k + 1 < n && same_arg(c, idx[k], idx[k + 1]))
            continue; /* a later occurrence follows */
        idx[out++] = idx[k];
    }
    *count = out;
    return idx;
}

/* --- strings ---------------------------------------------------------------------------------- */

static const char *const set_options[] = {"nx", "xx", "get", "ex", "px", "exat", "pxat", "keepttl"};

/* SET key value: no options. Expiry, conditional and GET options are refused by name rather than
 * ignored. */
static void cmd_set(struct ud_resp_call *c)
{
    if (c->argc > 3) {
        for (size_t k = 0; k < sizeof set_options / sizeof set_options[0]; k++) {
            if (ud_resp_arg_is(c, 3, set_options[k])) {
                char opt[16];
                size_t i = 0;
                for (; set_options[k][i] != '\0'; i++)
                    opt[i] = (char)(set_options[k][i] - 32);
                opt[i] = '\0';
                ud_resp_add_errorf(ud_resp_reply(c),
                                   "ERR SET option '%s' is not supported (keys do not expire and "
                                   "SET takes no options)",
                                   opt);
                return;
            }
        }
        ud_resp_add_error(ud_resp_reply(c), "ERR syntax error");
        return;
    }
    if (ud_resp_check_kv_key(c, c->argv[1], c->argvlen[1]) != 0)
        return;
    struct ud_record_builder b;
    uint8_t *rec;
    size_t len;
    builder_init(&b, UD_OP_PUT, UD_ENTRY_KV);
    ud_record_add_kv(&b, c->argv[1], c->argvlen[1], c->argv[2], c->argvlen[2]);
    if (builder_finish(c, &b, &rec, &len) != 0)
        return;
    submit(c, &rec, &len, 1, -1);
}

/* MSET k v [k v ...]: one record, so all keys are written atomically at one LSN. */
static void cmd_mset(struct ud_resp_call *c)
{
    if ((c->argc - 1) % 2 != 0) {
        ud_resp_add_error(ud_resp_reply(c), "ERR wrong number of arguments for 'mset' command");
        return;
    }
    for (size_t i = 1; i < c->argc; i += 2)
        if (ud_resp_check_kv_key(c, c->argv[i], c->argvlen[i]) != 0)
            return;
    size_t n;
    size_t *idx = distinct(c, 1, 2, &n);
    struct ud_record_builder b;
    uint8_t *rec;
    size_t len;
    builder_init(&b, UD_OP_PUT, UD_ENTRY_KV);
    for (size_t k = 0; k < n; k++)
        ud_record_add_kv(&b, c->argv[idx[k]], c->argvlen[idx[k]], c->argv[idx[k] + 1],
                         c->argvlen[idx[k] + 1]);
    free(idx);
    if (builder_finish(c, &b, &rec, &len) != 0)
        return;
    submit(c, &rec, &len, 1, -1);
}

/*
 * DEL/UNLINK key [key ...]: a key may name a string, a hash (row) or both (separate spaces); both
 * are deleted. The reply counts the distinct keys that existed, read from this namespace just
 * before the delete is proposed: this connection's earlier writes are already applied (reads wait
 * for them), but another client's write to the same key that commits in between is not seen, so
 * under such a race the count can be off by those keys. Keys that do not exist are not written
 * at all; no existing key means no write and an immediate :0.
 */
static void cmd_del(struct ud_resp_call *c)
{
    if (ud_resp_check_kv_keys(c, 1) != 0)
        return;
    struct ud_ns *ns;
    if (ud_resp_acquire_ns(c, &ns) != 0)
        return;
    size_t n;
    size_t *idx = distinct(c, 1, 1, &n);
    struct ud_record_builder kb, rb;
    size_t nkv = 0, nrow = 0;
    long long count = 0;
    int rc = 0;
    builder_init(&kb, UD_OP_DELETE, UD_ENTRY_KV);
    builder_init(&rb, UD_OP_DELETE, UD_ENTRY_ROW);
    for (size_t k = 0; k < n && rc == 0; k++) {
        int kv = 0, row = 0;
        const uint8_t *key = c->argv[idx[k]];
        size_t kl = c->argvlen[idx[k]];
        if ((rc = ud_resp_key_kinds(c->ctx, ns, key, kl, &kv, &row)) != 0)
            break;
        if (kv) {
            ud_record_add_kv(&kb, key, kl, NULL, 0);
            nkv++;
        }
        if (row) {
            ud_record_add_row(&rb, key, kl); /* no columns: the whole row */
            nrow++;
        }
        count += kv || row;
    }
    ud_resp_release_ns(c, ns);
    free(idx);
    if (rc != 0 || count == 0) {
        ud_record_builder_reset(&kb);
        ud_record_builder_reset(&rb);
        if (rc != 0)
            ud_resp_reply_engine_error(ud_resp_reply(c), "read failed", rc);
        else
            ud_resp_add_int(ud_resp_reply(c), 0);
        return;
    }
    uint8_t *recs[2];
    size_t lens[2];
    size_t nrec = 0;
    if (nkv == 0)
        ud_record_builder_reset(&kb);
    else if (builder_finish(c, &kb, &recs[nrec], &lens[nrec]) != 0)
        goto fail;
    else
        nrec++;
    if (nrow == 0)
        ud_record_builder_reset(&rb);
    else if (builder_finish(c, &rb, &recs[nrec], &lens[nrec]) != 0)
        goto fail;
    else
        nrec++;
    /* Strings and rows are different record types: two records in one request when a DEL touches
     * both (raft commits them in one entry; they are separate LSNs). */
    submit(c, recs, lens, nrec, count);
    return;
fail:
    ud_record_builder_reset(&rb);
    for (size_t k = 0; k < nrec; k++)
        free(recs[k]);
}

/* --- hashes (rows) ---------------------------------------------------------------------------- */

struct present {
    const struct ud_resp_call *c;
    const size_t *idx; /* field argument indexes, sorted by bytes */
    size_t n;
    uint8_t *found; /* found[k]: field idx[k] exists */
};

static int mark_present(void *arg, const uint8_t *name, size_t name_len, const uint8_t *value,
                        size_t value_len, uint64_t lsn)
{
    (void)value, (void)value_len, (void)lsn;
    struct present *p = arg;
    size_t lo = 0, hi = p->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        size_t i = p->idx[mid];
        size_t l = p->c->argvlen[i] < name_len ? p->c->argvlen[i] : name_len;
        int r = l ? memcmp(p->c->argv[i], name, l) : 0;
        if (r == 0)
            r = p->c->argvlen[i] < name_len ? -1 : p->c->argvlen[i] > name_len;
        if (r == 0) {
            p->found[mid] = 1;
            return 0;
        }
        if (r < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

/*
 * Reads which of the distinct fields idx[0..n) exist in the hash at argv[1]. Returns 0 and
 * found[], or -1 after replying the error. Like DEL's count, the answer reflects the state just
 * before the write is proposed.
 */
static int fields_present(struct ud_resp_call *c, const size_t *idx, size_t n, uint8_t *found)
{
    struct ud_ns *ns;
    if (ud_resp_acquire_ns(c, &ns) != 0)
        return -1;
    struct ud_col *cols = calloc(n, sizeof *cols);
    if (cols == NULL)
        abort();
    for (size_t k = 0; k < n; k++) {
        cols[k].name = c->argv[idx[k]];
        cols[k].name_len = c->argvlen[idx[k]];
    }
    struct present p = {c, idx, n, found};
    struct ud_row row = {c->argv[1], c->argvlen[1], cols, n};
    memset(found, 0, n);
    int rc = ud_ns_row_get(ns, &row, mark_present, &p);
    ud_resp_release_ns(c, ns);
    free(cols);
    if (rc != 0 && rc != UD_ENOTFOUND) {
        ud_resp_reply_engine_error(ud_resp_reply(c), "read failed", rc);
        return -1;
    }
    return 0;
}

static int check_hash_args(struct ud_resp_call *c, size_t step)
{
    if (ud_resp_check_row_key(c, c->argv[1], c->argvlen[1]) != 0)
        return -1;
    for (size_t i = 2; i < c->argc; i += step)
        if (ud_resp_check_field(c, c->argv[1], c->argvlen[1], c->argvlen[i]) != 0)
            return -1;
    return 0;
}

/* HSET key f v [f v ...] -> fields that did not exist; HMSET -> +OK. One record: the fields are
 * merged into the row atomically. */
static void hset(struct ud_resp_call *c, int count_new)
{
    if ((c->argc - 2) % 2 != 0) {
        ud_resp_add_errorf(ud_resp_reply(c), "ERR wrong number of arguments for '%s' command",
                           count_new ? "hset" : "hmset");
        return;
    }
    if (check_hash_args(c, 2) != 0)
        return;
    size_t n;
    size_t *idx = distinct(c, 2, 2, &n);
    long long count = -1;
    if (count_new) {
        uint8_t *found = malloc(n);
        if (found == NULL)
            abort();
        if (fields_present(c, idx, n, found) != 0) {
            free(found);
            free(idx);
            return;
        }
        count = 0;
        for (size_t k = 0; k < n; k++)
            count += !found[k];
        free(found);
    }
    struct ud_record_builder b;
    uint8_t *rec;
    size_t len;
    builder_init(&b, UD_OP_PUT, UD_ENTRY_ROW);
    ud_record_add_row(&b, c->argv[1], c->argvlen[1]);
    for (size_t k = 0; k < n; k++)
        ud_record_add_column(&b, c->argv[idx[k]], c->argvlen[idx[k]], c->argv[idx[k] + 1],
                             c->argvlen[idx[k] + 1]);
    free(idx);
    if (builder_finish(c, &b, &rec, &len) != 0)
        return;
    submit(c, &rec, &len, 1, count);
}

static void cmd_hset(struct ud_resp_call *c)
{
    hset(c, 1);
}

static void cmd_hmset(struct ud_resp_call *c)
{
    hset(c, 0);
}

/* HDEL key f [f ...] -> fields removed. Only existing fields are written (a row delete naming no
 * column would delete the whole row); none existing means no write and :0. */
static void cmd_hdel(struct ud_resp_call *c)
{
    if (check_hash_args(c, 1) != 0)
        return;
    size_t n;
    size_t *idx = distinct(c, 2, 1, &n);
    uint8_t *found = malloc(n);
    if (found == NULL)
        abort();
    if (fields_present(c, idx, n, found) != 0)
        goto out;
    long long count = 0;
    for (size_t k = 0; k < n; k++)
        count += found[k];
    if (count == 0) {
        ud_resp_add_int(ud_resp_reply(c), 0);
        goto out;
    }
    struct ud_record_builder b;
    uint8_t *rec;
    size_t len;
    builder_init(&b, UD_OP_DELETE, UD_ENTRY_ROW);
    ud_record_add_row(&b, c->argv[1], c->argvlen[1]);
    for (size_t k = 0; k < n; k++)
        if (found[k])
            ud_record_add_column(&b, c->argv[idx[k]], c->argvlen[idx[k]], NULL, 0);
    if (builder_finish(c, &b, &rec, &len) == 0)
        submit(c, &rec, &len, 1, count);
out:
    free(found);
    free(idx);
}

/* BARRIER: answered +OK once this writer has applied everything the cluster acknowledged before
 * the command arrived (read index through the leader's raft barrier); the connection's later
 * reads wait for it, so BARRIER followed by reads gives linearizable reads (docs/resp.md). */
struct pending_barrier {
    struct ud_resp_slot *slot;
};

static void barrier_done(void *arg, int status, const char *errmsg)
{
    struct pending_barrier *p = arg;
    struct ud_resp_buf *b = ud_resp_slot_buf(p->slot);
    if (status != 0)
        ud_resp_add_errorf(b, "ERR unavailable: %s", errmsg);
    else
        ud_resp_add_simple(b, "OK");
    ud_resp_slot_finish(p->slot);
    free(p);
}

static void cmd_barrier(struct ud_resp_call *c)
{
    struct pending_barrier *p = malloc(sizeof *p);
    if (p == NULL)
        abort();
    p->slot = ud_resp_defer(c);
    ud_cluster_barrier(c->app, barrier_done, p);
}

/*
 * The writer's commands, added to the built-in reads. SET, MSET and HMSET are blind writes:
 * pipelined after one another they are proposed without waiting. DEL, UNLINK, HSET and HDEL read
 * before writing (their replies count keys or fields), so they wait for the connection's earlier
 * writes like any read.
 */
static const struct ud_resp_command write_commands[] = {
    {"barrier", 1, UD_RESP_CMD_READ, 0, 0, 0, cmd_barrier,
     "Waits until this writer has applied every write acknowledged before it (then reads here "
     "are linearizable).",
     "server"},
    {"del", -2, UD_RESP_CMD_READ | UD_RESP_CMD_WRITE, 1, -1, 1, cmd_del,
     "Deletes strings and hashes; returns how many of the keys existed.", "generic"},
    {"hdel", -3, UD_RESP_CMD_READ | UD_RESP_CMD_WRITE, 1, 1, 1, cmd_hdel,
     "Deletes fields of a hash (row); returns how many existed.", "hash"},
    {"hmset", -4, UD_RESP_CMD_WRITE, 1, 1, 1, cmd_hmset, "Sets fields of a hash (row).", "hash"},
    {"hset", -4, UD_RESP_CMD_READ | UD_RESP_CMD_WRITE, 1, 1, 1, cmd_hset,
     "Sets fields of a hash (row); returns how many were new.", "hash"},
    {"mset", -3, UD_RESP_CMD_WRITE, 1, -1, 2, cmd_mset, "Sets several strings atomically.",
     "string"},
    {"set", -3, UD_RESP_CMD_WRITE, 1, 1, 1, cmd_set, "Sets the string value of a key.", "string"},
    {"unlink", -2, UD_RESP_CMD_READ | UD_RESP_CMD_WRITE, 1, -1, 1, cmd_del, "Same as DEL.",
     "generic"},
};

static void writer_info(void *app, const char *section, struct ud_resp_buf *text)
{
    struct ud_writer *w = app;
    char s[256];
    if (section != NULL && strcmp(section, "raft") != 0)
        return;
    int n = snprintf(s, sizeof s, "# Raft\r\nraft_node_id:%llu\r\nraft_leader:%d\r\n",
                     (unsigned long long)w->config->node_id, ud_writer_is_leader(w) ? 1 : 0);
    ud_resp_buf_append(text, s, (size_t)n);
}

int ud_writer_resp_start(struct ud_writer *w, char *errmsg)
{
    w->resp = NULL;
    w->resp_port = 0;
    if (w->config->resp_listen[0] == '\0') {
        ud_info(LOG, "RESP front end disabled (resp listen address is empty)");
        return 0;
    }
    struct ud_resp_server_options o;
    memset(&o, 0, sizeof o);
    o.loop = w->loop;
    o.listen = w->config->resp_listen;
    o.commands.registry = w->registry;
    o.commands.default_ns = w->config->default_namespace;
    o.commands.commands = write_commands;
    o.commands.ncommands = sizeof write_commands / sizeof write_commands[0];
    o.commands.app = w;
    o.commands.info = writer_info;
    o.commands.role = "writer";
    o.max_clients = w->config->resp_max_clients;
    /* 0 in the configuration means never; the server's 0 means its default. */
    o.idle_timeout_ms =
        w->config->resp_idle_timeout_ms > 0 ? (int64_t)w->config->resp_idle_timeout_ms : -1;
    o.max_output = w->config->resp_max_output;
    o.max_pending = w->config->resp_max_pending;
    int port = 0;
    int rc = ud_resp_server_start(&o, &w->resp, &port, errmsg);
    if (rc != 0)
        return rc;
    w->resp_port = port;
    ud_info(LOG, "RESP listening on %s (port %d)", w->config->resp_listen, port);
    return 0;
}

struct resp_stop {
    struct ud_writer *w;
    void (*done)(struct ud_writer *w);
};

static void resp_stopped(void *arg)
{
    struct resp_stop *st = arg;
    struct ud_writer *w = st->w;
    void (*done)(struct ud_writer *) = st->done;
    free(st);
    w->resp = NULL;
    ud_info(LOG, "RESP stopped");
    if (done != NULL)
        done(w);
}

void ud_writer_resp_stop(struct ud_writer *w, void (*done)(struct ud_writer *w))
{
    if (w->resp == NULL) {
        if (done != NULL)
            done(w);
        return;
    }
    struct resp_stop *st = malloc(sizeof *st);
    if (st == NULL)
        abort();
    st->w = w;
    st->done = done;
    ud_resp_server_stop(w->resp, resp_stopped, st);
}
