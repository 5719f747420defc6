/* The writer's RESP front end: the shared write commands (core/resp/resp_write.c) committed
 * through raft, BARRIER, and its server's start/stop. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/log.h"
#include "core/resp/resp_server.h"
#include "core/resp/resp_write.h"
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
    struct pending_write *next_spare;
};

/*
 * Maps a submit failure to a reply. Admission control (the flush is behind) is TRYAGAIN, which
 * Redis clients treat as "retry later"; a follower that does not forward names the leader with
 * MOVED (or READONLY as a Redis replica does); a write in doubt is "ERR outcome unknown: ..."
 * (docs/resp.md); the rest are ERR with the engine's or raft's message.
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
    case UD_EINDOUBT: /* msg begins with "outcome unknown: " */
        ud_resp_add_errorf(b, "ERR %s", msg);
        break;
    default:
        ud_resp_add_errorf(b, "ERR %s: %s", ud_strerror(status), msg);
        break;
    }
}

/* Answered writes kept for the next ones (the loop thread's own list): a pipelined batch
 * allocates one per command, more at once than the allocator's per-thread cache holds. */
#define MAX_SPARE_WRITES 1024
static _Thread_local struct pending_write *spare_writes;
static _Thread_local size_t nspare_writes;

static struct pending_write *pending_write_new(void)
{
    struct pending_write *p = spare_writes;
    if (p != NULL) {
        spare_writes = p->next_spare;
        nspare_writes--;
        return p;
    }
    if ((p = malloc(sizeof *p)) == NULL)
        abort();
    return p;
}

static void pending_write_free(struct pending_write *p)
{
    /* A write answered after RESP stopped (w->resp NULL) would be kept after spare_writes_free
     * ran, and never freed. */
    if (p->w->resp == NULL || nspare_writes >= MAX_SPARE_WRITES) {
        free(p);
        return;
    }
    p->next_spare = spare_writes;
    spare_writes = p;
    nspare_writes++;
}

static void spare_writes_free(void)
{
    while (spare_writes != NULL) {
        struct pending_write *next = spare_writes->next_spare;
        free(spare_writes);
        spare_writes = next;
    }
    nspare_writes = 0;
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
    pending_write_free(p);
}

/* The submit hook of the shared write commands (core/resp/resp_write.h): the records go to raft
 * and the reply follows their commit (count < 0: +OK). */
static void submit(struct ud_resp_call *c, uint8_t **records, size_t *lens, size_t n,
                   long long count)
{
    struct pending_write *p = pending_write_new();
    p->slot = ud_resp_defer(c);
    p->w = c->app;
    p->count = count;
    size_t nl = strnlen(c->session->ns, sizeof p->ns - 1);
    memcpy(p->ns, c->session->ns, nl);
    p->ns[nl] = '\0';
    ud_submit(p->w, c->session->ns, records, lens, n, write_done, p);
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
    {"del", -2, UD_RESP_CMD_READ | UD_RESP_CMD_WRITE, 1, -1, 1, ud_resp_cmd_del,
     "Deletes strings and hashes; returns how many of the keys existed.", "generic"},
    {"hdel", -3, UD_RESP_CMD_READ | UD_RESP_CMD_WRITE, 1, 1, 1, ud_resp_cmd_hdel,
     "Deletes fields of a hash (row); returns how many existed.", "hash"},
    {"hmset", -4, UD_RESP_CMD_WRITE, 1, 1, 1, ud_resp_cmd_hmset, "Sets fields of a hash (row).",
     "hash"},
    {"hset", -4, UD_RESP_CMD_READ | UD_RESP_CMD_WRITE, 1, 1, 1, ud_resp_cmd_hset,
     "Sets fields of a hash (row); returns how many were new.", "hash"},
    {"mset", -3, UD_RESP_CMD_WRITE, 1, -1, 2, ud_resp_cmd_mset, "Sets several strings atomically.",
     "string"},
    {"set", -3, UD_RESP_CMD_WRITE, 1, 1, 1, ud_resp_cmd_set, "Sets the string value of a key.",
     "string"},
    {"unlink", -2, UD_RESP_CMD_READ | UD_RESP_CMD_WRITE, 1, -1, 1, ud_resp_cmd_del, "Same as DEL.",
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
    o.commands.submit = submit;
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
    spare_writes_free();
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
