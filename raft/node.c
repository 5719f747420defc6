/* Raft node lifecycle: data dir and cluster id, transport, raft_init/bootstrap/start, close. */
#include "raft/node.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <raft.h>
#include <raft/uv.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "core/dir.h"
#include "core/err.h"
#include "core/log.h"
#include "raft/aio_calls.h"
#include "raft/checksum.h"
#include "raft/log_reserve.h"
#include "raft/segment_alloc.h"
#include "raft/set_aside.h"
#include "raft/transport.h"
#include "writer/writer.h"

#define LOG "raft"

/*
 * raft's log segment files. raft_uv preallocates each, fills it, then finalizes it (fsync, rename,
 * directory fsync) while a prepared one takes over; its default of 8 MiB meant several rotations
 * a second under a sustained load, competing with the log writes: redis-benchmark SET (1 KiB
 * values, 800 requests outstanding) measured 41-48k/s with 8 MiB and 51-60k/s with 32, 64 or
 * 128 MiB, interleaved on the same (loaded) machine. Costs: up to two prepared segments are
 * preallocated on disk, and raft deletes its log behind a snapshot one whole segment at a time.
 * It must hold the largest raft command (UD_COMMAND_MAX_SIZE, 6 MiB).
 */
#define SEGMENT_SIZE (64u << 20)

/* See raft_set_install_snapshot_timeout in ud_raft_node_start. */
#define INSTALL_SNAPSHOT_TIMEOUT_MS 3000

enum node_state {
    NODE_INIT,
    NODE_RUNNING,
    NODE_CLOSING,
    NODE_CLOSED,
};

struct ud_raft_node {
    enum node_state state;
    uv_loop_t *loop;
    struct raft raft; /* raft.data = this */
    struct raft_io io;
    /* raft_uv's own close and the callback raft gave it: see io_close_once. */
    void (*io_close)(struct raft_io *io, raft_io_close_cb cb);
    raft_io_close_cb io_close_cb;
    int io_close_fired;
    /* raft_uv's append, and the leader's log write held while raft_apply sends the entry to the
     * followers (see append_after_sends). */
    int (*io_append)(struct raft_io *io, struct raft_io_append *req,
                     const struct raft_entry entries[], unsigned n, raft_io_append_cb cb);
    int proposing;
    struct {
        struct raft_io_append *req;
        const struct raft_entry *entries;
        unsigned n;
        raft_io_append_cb cb;
    } held;
    struct ud_raft_transport transport;
    struct ud_fsm *fsm; /* owned */
    char raft_dir[PATH_MAX];
    char bind[160];    /* numeric ip:port raft listens on */
    char address[160]; /* advertised to peers */
    int port;
    int io_inited;
    unsigned inflight;
    unsigned ops; /* barriers, membership changes and transfers in flight */
    /* Their callbacks run from this timer, never inside raft's own callback: calling into raft
     * there (a barrier from a failed apply's callback while the leader steps down) crashed
     * raft 0.15 (NULL read in raft_barrier, seen with AddressSanitizer). */
    uv_timer_t op_timer;
    int op_timer_open;
    struct op *done_ops, *done_tail;
    /* Leadership watch: a new leader appends a barrier, because raft 0.15 commits entries of
     * earlier terms only together with one of its own term (it appends no no-op on election). */
    uv_timer_t watch;
    int watch_open;
    int leading;           /* raft state was LEADER at the last look */
    uint64_t barrier_term; /* the term the pending barrier was appended in */
    /* The term whose barrier raft has applied while this node led, 0 when none: the node is
     * ready in that term only (a leader's term is at least 1) ... */
    uint64_t ready_term;
    uint64_t ready_after; /* ... once the FSM has applied this many queued entries */
    int barrier_pending;
    int pipeline_open;       /* the FSM's apply pipeline runs or is closing */
    int raft_closing;        /* raft_close was called */
    uint64_t close_deadline; /* loop time (ms) after which a stop closes raft anyway */
    uint64_t reserve_retry;  /* loop time (ms) of the next try to restore raft's log reserve */
    struct raft_barrier barrier;
    int raft_closed;
    void (*done)(void *arg);
    void *done_arg;
    void (*on_behind)(void *arg);
    void *behind_arg;
    int behind_reported;
};

/* A proposal waiting for its entry to be applied. */
struct proposal {
    struct raft_apply req; /* req.data = this */
    struct ud_raft_node *node;
    ud_raft_propose_cb cb;
    void *arg;
};

static const char *state_name(enum node_state s)
{
    static const char *names[] = {"init", "running", "closing", "closed"};
    return names[s];
}

/* The only place the state changes: every move not in the diagram of node.h is a bug. */
static void transition(struct ud_raft_node *n, enum node_state to)
{
    int ok = (n->state == NODE_INIT && (to == NODE_RUNNING || to == NODE_CLOSING)) ||
             (n->state == NODE_RUNNING && to == NODE_CLOSING) ||
             (n->state == NODE_CLOSING && to == NODE_CLOSED);
    if (!ok)
        ud_error(LOG, "illegal node transition %s -> %s", state_name(n->state), state_name(to));
    UD_ASSERT(ok);
    ud_debug(LOG, "node %s -> %s", state_name(n->state), state_name(to));
    n->state = to;
}

/* raft's codes are small integers that collide with errno values: never let them escape. */
static int from_raft(int rv)
{
    switch (rv) {
    case 0:
        return 0;
    case RAFT_NOMEM:
        return UD_ENOMEM;
    case RAFT_NOSPACE:
        return UD_ENOSPC;
    case RAFT_CORRUPT:
        return UD_ECORRUPT;
    case RAFT_BADID:
    case RAFT_INVALID:
    case RAFT_NAMETOOLONG:
    case RAFT_DUPLICATEID:
    case RAFT_DUPLICATEADDRESS:
    case RAFT_BADROLE:
    case RAFT_MALFORMED:
        return UD_EINVAL;
    case RAFT_NOTLEADER:
    case RAFT_LEADERSHIPLOST:
    case RAFT_SHUTDOWN:
    case RAFT_CANCELED:
        return UD_ECLOSED;
    case RAFT_TOOBIG:
        return UD_ELIMIT;
    case RAFT_BUSY:
        return UD_EBUSY;
    case RAFT_NOTFOUND:
        return UD_ENOTFOUND;
    case RAFT_NOCONNECTION: /* a server to promote could not be reached */
        return UD_ETIMEDOUT;
    default:
        return UD_EIO;
    }
}

/* --- files -------------------------------------------------------------------------------------
 */

static int cluster_id_valid(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > 63)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)id[i] <= 0x20 || (unsigned char)id[i] >= 0x7f)
            return 0;
    return 1;
}

/*
 * raft_uv 0.15 can report its close twice: its close callback fires from whichever completion
 * finds everything closed, and a completion arriving after that (seen when the node stops right
 * after the leadership barrier) finds the same and fires it again. raft's callback frees its
 * address and log each time, so the second call was a double free (AddressSanitizer, unit-submit,
 * about one run in six under load). The callback raft hands to io->close is passed on once.
 */
static void io_closed_once_cb(struct raft_io *io)
{
    struct ud_raft_node *n =
        (struct ud_raft_node *)((char *)io - offsetof(struct ud_raft_node, io));
    if (n->io_close_fired) {
        ud_warn(LOG, "raft storage reported its close a second time; ignored");
        return;
    }
    n->io_close_fired = 1;
    raft_io_close_cb cb = n->io_close_cb;
    n->io_close_cb = NULL;
    if (cb != NULL)
        cb(io);
}

static void io_close_once(struct raft_io *io, raft_io_close_cb cb)
{
    struct ud_raft_node *n =
        (struct ud_raft_node *)((char *)io - offsetof(struct ud_raft_node, io));
    n->io_close_cb = cb;
    n->io_close(io, io_closed_once_cb);
}

static void deliver_ops(struct ud_raft_node *n);

/* Test hook (node.h): starts of held log writes left to fail. */
static unsigned held_start_failures;

void ud_raft_node_fail_held_appends(unsigned count)
{
    held_start_failures = count;
}

static void op_timer_cb(uv_timer_t *t)
{
    struct ud_raft_node *n = t->data;
    deliver_ops(n);
}

/*
 * Submits the append held during raft_apply. One that fails to start stops the process at once,
 * before any other raft I/O: the entry has already been sent to the followers, and no way to go
 * on is safe. Told of the failure, raft 0.15 truncates the leader's log and stays leader, so the
 * next proposal takes the same index in the same term, which the followers ignore (they hold an
 * entry of that index and term) and later commit instead: two states. Starting the write again is
 * no better: raft_uv's append can fail after it has queued the request and moved its next index
 * (a retry writes the entry twice), and a storage that never recovers leaves a leader that still
 * heartbeats, so no other node is elected. Stopped, this node no longer heartbeats; the
 * followers, which hold the entry, elect a leader that may still commit it, and this node takes
 * it from that leader when restarted. As a database stops on a log write it cannot make.
 */
static void submit_held_append(struct ud_raft_node *n)
{
    struct raft_io_append *req = n->held.req;
    if (req == NULL)
        return;
    n->held.req = NULL;
    int rv;
    if (held_start_failures > 0) {
        held_start_failures--;
        rv = RAFT_NOMEM;
    } else {
        rv = n->io_append(&n->io, req, n->held.entries, n->held.n, n->held.cb);
    }
    if (rv == 0)
        return;
    ud_error(LOG,
             "raft stopped: the leader's log write could not start: %s; writes in flight may "
             "still be applied by a later leader; exiting with status %d; restart the writer",
             raft_strerror(rv), UD_EXIT_RAFT_LOG_WRITE);
    _exit(UD_EXIT_RAFT_LOG_WRITE);
}

/*
 * raft 0.15's raft_apply submits the leader's own log write (an io_submit with its virtio
 * doorbell, 14 % of the leader's CPU at concurrency 1) before it sends the entry to the
 * followers, so every follower starts its write that much later, on the critical path of every
 * write (docs/benchmarks.md "The leader's log write after the sends"). While raft_apply runs, the
 * append it asks for is held and submitted as soon as raft_apply returns, after the sends: raft
 * (thesis 10.2.1) lets the leader write its log in parallel with replicating it, and the leader
 * still counts itself only once its write completed (raft calls the callback then). Appends
 * anywhere else (followers, barriers, elections) go through at once; a second one during
 * raft_apply first submits the held one, so the log is written in order.
 */
static int append_after_sends(struct raft_io *io, struct raft_io_append *req,
                              const struct raft_entry entries[], unsigned n, raft_io_append_cb cb)
{
    struct ud_raft_node *node =
        (struct ud_raft_node *)((char *)io - offsetof(struct ud_raft_node, io));
    if (node->proposing && node->held.req == NULL) {
        node->held.req = req;
        node->held.entries = entries;
        node->held.n = n;
        node->held.cb = cb;
        return 0;
    }
    submit_held_append(node);
    return node->io_append(io, req, entries, n, cb);
}

/*
 * A data directory belongs to one cluster for life: {data_dir}/cluster-id is written on first
 * start (write, fsync, rename, fsync dir) and compared on every later start, so a node pointed at
 * another cluster's directory refuses to start instead of mixing two raft logs.
 */
static int check_cluster_id(const char *data_dir, const char *cluster_id, char *errmsg)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/cluster-id", data_dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        char have[128];
        ssize_t n = read(fd, have, sizeof have - 1);
        int err = errno;
        close(fd);
        if (n < 0)
            return ud_errf(errmsg, UD_EIO, "read %s: %s", path, strerror(err));
        have[n] = '\0';
        have[strcspn(have, "\r\n")] = '\0';
        if (strcmp(have, cluster_id) != 0)
            return ud_errf(errmsg, UD_EINVAL,
                           "data directory %s belongs to cluster \"%s\" (%s), but this node is "
                           "configured for cluster \"%s\"; refusing to start",
                           data_dir, have, path, cluster_id);
        return 0;
    }
    if (errno != ENOENT)
        return ud_errf(errmsg, ud_err_from_errno(errno), "open %s: %s", path, strerror(errno));
    char line[80];
    int len = snprintf(line, sizeof line, "%s\n", cluster_id);
    int rc = ud_dir_write_file(path, line, (size_t)len, UD_DIR_SYNC, errmsg);
    if (rc == 0)
        ud_info(LOG, "data directory %s now belongs to cluster \"%s\"", data_dir, cluster_id);
    return rc;
}

/*
 * Resolves the listen address. raft binds it inside raft_start, after raft_init has taken the
 * address it advertises (and a bootstrap configuration may already hold it), so port 0 is
 * resolved first: bind a socket to learn a free port, release it, and give raft that port.
 */
static int resolve_listen(struct ud_raft_node *n, const char *listen, char *errmsg)
{
    const char *colon = listen != NULL ? strrchr(listen, ':') : NULL;
    if (colon == NULL || colon == listen || (size_t)(colon - listen) >= 64)
        return ud_errf(errmsg, UD_EINVAL, "raft listen address \"%s\": expected ip:port",
                       listen ? listen : "");
    char host[64];
    memcpy(host, listen, (size_t)(colon - listen));
    host[colon - listen] = '\0';
    char *end;
    errno = 0;
    long port = strtol(colon + 1, &end, 10);
    struct sockaddr_in sa;
    if (colon[1] == '\0' || *end != '\0' || errno != 0 || port < 0 || port > 65535 ||
        uv_ip4_addr(host, (int)port, &sa) != 0)
        return ud_errf(errmsg, UD_EINVAL,
                       "raft listen address \"%s\": expected a numeric IPv4 ip:port (raft's "
                       "TCP transport binds IPv4 only)",
                       listen);
    if (port == 0) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        socklen_t sl = sizeof sa;
        int one = 1;
        if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
            bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
            getsockname(fd, (struct sockaddr *)&sa, &sl) != 0) {
            int err = errno;
            if (fd >= 0)
                close(fd);
            return ud_errf(errmsg, ud_err_from_errno(err), "bind raft port on %s: %s", host,
                           strerror(err));
        }
        close(fd);
        port = ntohs(sa.sin_port);
    }
    n->port = (int)port;
    snprintf(n->bind, sizeof n->bind, "%s:%ld", host, port);
    return 0;
}

/* --- close -------------------------------------------------------------------------------------
 */

/* The node is freed once raft and the watch timer have both closed. */
static void maybe_closed(struct ud_raft_node *n)
{
    if (!n->raft_closed || n->watch_open || n->pipeline_open || n->op_timer_open)
        return;
    /* raft closed its io (and with it the transport); now release their memory. */
    raft_uv_close(&n->io);
    ud_raft_transport_close(&n->transport);
    ud_fsm_close(n->fsm);
    transition(n, NODE_CLOSED);
    deliver_ops(n); /* finished while closing: their callbacks see a closed node */
    void (*done)(void *) = n->done;
    void *arg = n->done_arg;
    n->done = NULL;
    ud_info(LOG, "raft node closed");
    ud_raft_reserve_close();
    free(n);
    if (done != NULL)
        done(arg);
}

static void raft_closed_cb(struct raft *r)
{
    struct ud_raft_node *n = r->data;
    /* Writes raft cancelled as it closed may still be in the kernel until their segments' AIO
     * contexts are destroyed (raft/aio_calls.h); a catch-up reopens this log right after. */
    ud_raft_aio_drain();
    n->raft_closed = 1;
    maybe_closed(n);
}

static void watch_closed_cb(uv_handle_t *h)
{
    struct ud_raft_node *n = h->data;
    n->watch_open = 0;
    maybe_closed(n);
}

static void op_timer_closed_cb(uv_handle_t *h)
{
    struct ud_raft_node *n = h->data;
    n->op_timer_open = 0;
    maybe_closed(n);
}

static void pipeline_closed_cb(void *arg)
{
    struct ud_raft_node *n = arg;
    n->pipeline_open = 0;
    maybe_closed(n);
}

/* Stops the watch and the apply pipeline and closes raft; the node goes when all are done. */
static void finish_close(struct ud_raft_node *n)
{
    n->raft_closing = 1;
    if (n->watch_open)
        uv_close((uv_handle_t *)&n->watch, watch_closed_cb);
    if (n->op_timer_open)
        uv_close((uv_handle_t *)&n->op_timer, op_timer_closed_cb);
    /* Entries raft has applied are answered (the apply thread finishes them first); raft applies
     * nothing more once it closes. */
    if (n->pipeline_open)
        ud_fsm_stop_pipeline(n->fsm, pipeline_closed_cb, n);
    /* A segment allocation waiting for room gives up now; raft, closing, discards it. */
    ud_raft_reserve_closing();
    /* Pending proposals (and the barrier) fail with RAFT_LEADERSHIPLOST inside raft_close. */
    raft_close(&n->raft, raft_closed_cb);
}

/* How long a stop lets the proposals and the barrier in flight finish before closing raft
 * anyway, and how often it looks. */
#define CLOSE_DRAIN_MS 5000
#define CLOSE_POLL_MS  2

static void maybe_finish_close(struct ud_raft_node *n);

static void close_poll_cb(uv_timer_t *t)
{
    maybe_finish_close(t->data);
}

/*
 * raft 0.15 crashes in raft_close when log writes are in flight: each canceled append truncates
 * the log from its first entry, and releasing the next canceled append's entries then walks a
 * reference table that no longer holds them (a NULL dereference in logRelease; seen with
 * AddressSanitizer when clients disconnected with writes in flight just before SIGTERM). So a
 * stop waits, bounded, until what raft is writing has been committed and applied; proposals are
 * refused meanwhile (the node is CLOSING). Writes in flight finish instead of failing.
 */
static void maybe_finish_close(struct ud_raft_node *n)
{
    if (n->raft_closing)
        return;
    /* A leader's appends queued behind a segment allocation that waits for room would be
     * canceled by raft_close, which crashes raft 0.15 (above; a follower's canceled appends are
     * only released): the stop waits for room, however long, and says so. Killing the process is
     * safe meanwhile: nothing it has not stored was answered. */
    if (n->watch_open && ud_raft_reserve_waiting() && raft_state(&n->raft) == RAFT_LEADER) {
        if (uv_now(n->loop) >= n->close_deadline) {
            ud_warn(LOG, "stopping: raft's log waits for room on a full disk, and the stop "
                         "waits for it (free space; SIGKILL loses no acknowledged write)");
            n->close_deadline = uv_now(n->loop) + CLOSE_DRAIN_MS;
        }
        uv_timer_start(&n->watch, close_poll_cb, 100, 0);
        return;
    }
    if ((n->inflight > 0 || n->ops > 0 || n->barrier_pending) && n->watch_open &&
        uv_now(n->loop) < n->close_deadline) {
        /* The watch timer is done watching leadership; it polls the drain now. */
        uv_timer_start(&n->watch, close_poll_cb, CLOSE_POLL_MS, 0);
        return;
    }
    if (n->inflight > 0 || n->ops > 0 || n->barrier_pending)
        ud_warn(LOG, "closing raft with %u proposal(s) and %u other operation(s) still in flight",
                n->inflight, n->ops);
    finish_close(n);
}

static void close_node(struct ud_raft_node *n)
{
    transition(n, NODE_CLOSING);
    n->leading = 0;
    n->ready_term = 0;
    n->close_deadline = uv_now(n->loop) + CLOSE_DRAIN_MS;
    maybe_finish_close(n);
}

void ud_raft_node_stop(struct ud_raft_node *n, void (*done)(void *arg), void *arg)
{
    n->done = done;
    n->done_arg = arg;
    close_node(n);
}

/* --- leadership ------------------------------------------------------------------------------ */

/* How often the node looks at raft's state: raft 0.15 has no leadership-change callback. */
#define WATCH_INTERVAL_MS 20

static void barrier_cb(struct raft_barrier *req, int status)
{
    struct ud_raft_node *n = req->data;
    n->barrier_pending = 0;
    if (status != 0 || n->state != NODE_RUNNING || !n->leading ||
        n->barrier_term != n->raft.current_term)
        return; /* a barrier of an earlier term: the watch appends one in this term */
    n->ready_term = n->barrier_term;
    /* Ready once the apply thread has also applied what raft handed it before the barrier. */
    n->ready_after = ud_fsm_handed(n->fsm);
    ud_info(LOG, "leading: every earlier entry is committed (up to raft index %llu)",
            (unsigned long long)raft_last_applied(&n->raft));
}

static void watch_cb(uv_timer_t *t)
{
    struct ud_raft_node *n = t->data;
    if (ud_raft_log_short() && uv_now(n->loop) >= n->reserve_retry) {
        n->reserve_retry = uv_now(n->loop) + 1000;
        ud_raft_reserve_restore();
    }
    /* A snapshot from the leader that this node is behind, or whose restore failed (raft 0.15
     * may not retry it): raft cannot go on here until the namespaces have caught up out of
     * band and raft has started again, which the owner does with raft closed. */
    if (n->state == NODE_RUNNING && !n->behind_reported && ud_fsm_behind_pending(n->fsm)) {
        n->behind_reported = 1;
        ud_warn(LOG, "the leader's raft snapshot did not restore here (this node's namespaces are "
                     "behind it, or the restore failed): out-of-band catch-up and a raft restart "
                     "needed");
        if (n->on_behind != NULL) {
            n->on_behind(n->behind_arg);
            return;
        }
    }
    int leading = raft_state(&n->raft) == RAFT_LEADER;
    if (leading && !n->leading) {
        ud_info(LOG, "this node (%llu, %s) is now the raft leader", (unsigned long long)n->raft.id,
                n->address);
        n->ready_term = 0;
    } else if (!leading && n->leading) {
        ud_info(LOG, "this node is no longer the raft leader");
        n->ready_term = 0;
    } else if (leading && n->ready_term != 0 && n->ready_term != n->raft.current_term) {
        /* Stepped down and won again between two looks: ready only after a barrier of this
         * term. */
        ud_info(LOG, "this node leads again, in raft term %llu",
                (unsigned long long)n->raft.current_term);
        n->ready_term = 0;
    }
    n->leading = leading;
    if (leading && n->ready_term != n->raft.current_term && !n->barrier_pending) {
        n->barrier.data = n;
        n->barrier_term = n->raft.current_term;
        int rv = raft_barrier(&n->raft, &n->barrier, barrier_cb);
        if (rv == 0)
            n->barrier_pending = 1;
        else
            ud_warn(LOG, "leader barrier: %s; retrying", raft_strerror(rv));
    }
}

/* --- start -------------------------------------------------------------------------------------
 */

/* {data_dir}/raft-reserve: one segment's room for raft's log on a full disk (log_reserve.h). */
static int open_reserve(const char *data_dir, char *errmsg)
{
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/raft-reserve", data_dir) >= (int)sizeof path)
        return ud_errf(errmsg, UD_EINVAL, "%s/raft-reserve: path too long", data_dir);
    return ud_raft_reserve_open(path, SEGMENT_SIZE, errmsg);
}

static void node_free_early(struct ud_raft_node *n)
{
    if (n->io_inited)
        raft_uv_close(&n->io);
    ud_raft_transport_close(&n->transport);
    ud_fsm_close(n->fsm);
    ud_raft_reserve_close();
    free(n);
}

static int bootstrap(struct ud_raft_node *n, const struct ud_raft_node_options *o, char *errmsg)
{
    struct raft_configuration conf;
    raft_configuration_init(&conf);
    int rv = 0;
    if (o->npeers == 0) {
        rv = raft_configuration_add(&conf, o->node_id, n->address, RAFT_VOTER);
    } else {
        for (unsigned i = 0; i < o->npeers && rv == 0; i++)
            rv = raft_configuration_add(
                &conf, o->peers[i].id,
                o->peers[i].id == o->node_id ? n->address : o->peers[i].address, RAFT_VOTER);
    }
    if (rv != 0) {
        raft_configuration_close(&conf);
        return ud_errf(errmsg, from_raft(rv), "raft configuration: %s", raft_strerror(rv));
    }
    rv = raft_bootstrap(&n->raft, &conf);
    raft_configuration_close(&conf);
    if (rv == RAFT_CANTBOOTSTRAP) {
        /* Not a new data directory: raft keeps the configuration it has. */
        ud_info(LOG, "raft state found in %s: not bootstrapping", n->raft_dir);
        return 0;
    }
    if (rv != 0)
        return ud_errf(errmsg, from_raft(rv), "raft bootstrap in %s: %s", n->raft_dir,
                       raft_errmsg(&n->raft));
    ud_info(LOG, "bootstrapped a new cluster of %u voter(s) in %s", o->npeers ? o->npeers : 1,
            n->raft_dir);
    return 0;
}

int ud_raft_node_start(const struct ud_raft_node_options *o, struct ud_raft_node **out,
                       char *errmsg)
{
    if (o->loop == NULL || o->registry == NULL || o->data_dir == NULL || o->data_dir[0] == '\0')
        return ud_errf(errmsg, UD_EINVAL, "raft node needs a loop, a registry and a data dir");
    if (o->node_id == 0)
        return ud_errf(errmsg, UD_EINVAL, "raft node id must be >= 1");
    if (o->cluster_id == NULL || !cluster_id_valid(o->cluster_id))
        return ud_errf(errmsg, UD_EINVAL,
                       "cluster id \"%s\" must be 1 to 63 printable characters without spaces",
                       o->cluster_id ? o->cluster_id : "");
    const struct ud_raft_peer *self = NULL;
    for (unsigned i = 0; i < o->npeers; i++)
        if (o->peers[i].id == o->node_id)
            self = &o->peers[i];
    if (o->npeers > 0 && self == NULL)
        return ud_errf(errmsg, UD_EINVAL, "raft node id %llu is not among the %u configured peers",
                       (unsigned long long)o->node_id, o->npeers);

    struct ud_raft_node *n = calloc(1, sizeof *n);
    if (n == NULL)
        return ud_errf(errmsg, UD_ENOMEM, "out of memory creating the raft node");
    n->loop = o->loop;
    n->raft.data = n;
    n->on_behind = o->on_behind;
    n->behind_arg = o->behind_arg;
    snprintf(n->raft_dir, sizeof n->raft_dir, "%s/raft", o->data_dir);
    int rc;
    if ((rc = ud_dir_create(o->data_dir, errmsg)) != 0 ||
        (rc = ud_dir_create(n->raft_dir, errmsg)) != 0 ||
        (rc = check_cluster_id(o->data_dir, o->cluster_id, errmsg)) != 0 ||
        (rc = open_reserve(o->data_dir, errmsg)) != 0 ||
        (rc = resolve_listen(n, o->listen, errmsg)) != 0)
        goto fail;
    if (o->advertise != NULL && o->advertise[0] != '\0')
        snprintf(n->address, sizeof n->address, "%s", o->advertise);
    else if (self != NULL)
        snprintf(n->address, sizeof n->address, "%s", self->address);
    else
        snprintf(n->address, sizeof n->address, "%s", n->bind);
    if ((rc = ud_fsm_init(o->registry, &n->fsm, errmsg)) != 0)
        goto fail;
    if ((rc = ud_fsm_set_data_dir(n->fsm, o->data_dir, errmsg)) != 0)
        goto fail;
    ud_fsm_waive(n->fsm, o->waived);

    /* A leader's snapshot that did not decode here, recorded when the restore refused it. */
    uint64_t set_aside;
    if ((rc = ud_raft_set_aside_undecodable(o->data_dir, n->raft_dir, &set_aside, errmsg)) != 0)
        goto fail;

    int rv = ud_raft_transport_init(&n->transport, o->loop, n->bind);
    if (rv != 0) {
        rc = ud_errf(errmsg, from_raft(rv), "raft transport: %s", n->transport.outer.errmsg);
        goto fail;
    }
    rv = raft_uv_init(&n->io, o->loop, n->raft_dir, &n->transport.outer);
    if (rv != 0) {
        rc = ud_errf(errmsg, from_raft(rv), "raft storage in %s: %s", n->raft_dir, n->io.errmsg);
        goto fail;
    }
    n->io_inited = 1;
    n->io_close = n->io.close;
    n->io.close = io_close_once;
    n->io_append = n->io.append;
    n->io.append = append_after_sends;
    /* raft 0.15 recovers from a segment it cannot load by renaming it and every later one out of
     * the way and starting without them: committed entries would vanish silently. A node whose
     * log is damaged must not start (TESTING.md: it must not vote or lead) and says why. */
    raft_uv_set_auto_recovery(&n->io, false);
    raft_uv_set_segment_size(&n->io, SEGMENT_SIZE);
    /* Segments are written out with zeros as raft allocates them (raft/segment_alloc.h), as
     * far as a snapshot cycle of small entries fills one: each raft snapshot closes the open
     * segment, so with a small threshold most of a 64 MiB segment would be written for nothing.
     * 2 KiB per entry of the threshold, at least 1 MiB, at most the snapshot's byte budget and
     * the segment. Many clients' large entries run past it (without the zeros' bytes). */
    size_t threshold = o->snapshot_threshold ? o->snapshot_threshold : 8192;
    size_t zero = threshold * 2048;
    if (o->snapshot_bytes && zero > o->snapshot_bytes)
        zero = o->snapshot_bytes;
    if (zero < (1u << 20))
        zero = 1u << 20;
    if (zero > SEGMENT_SIZE)
        zero = SEGMENT_SIZE;
    ud_raft_segment_zero_fill(zero);
    /* The log writes past the zeros are taken without RWF_NOWAIT on ext4, where what that costs
     * the loop was measured (raft/aio_calls.h); elsewhere raft keeps its pool thread. */
    struct statfs fs;
    int ext4 = 0;
    if (statfs(n->raft_dir, &fs) != 0)
        ud_warn("raft", "statfs %s: %s; raft's log writes keep RWF_NOWAIT", n->raft_dir,
                strerror(errno));
    else
        ext4 = fs.f_type == EXT4_SUPER_MAGIC;
    ud_raft_aio_log_writes_wait(ext4);
    ud_debug("raft",
             "log segments in %s: the first %zu bytes of each written out (%lu so far), "
             "writes past them %s, %s checksums",
             n->raft_dir, zero, ud_raft_segments_zero_filled(),
             ext4 ? "taken asynchronously (ext4)" : "through raft's pool thread when refused",
             ud_raft_checksum_impl());
    rv = raft_init(&n->raft, &n->io, ud_fsm_raft(n->fsm), o->node_id, n->address);
    if (rv != 0) {
        rc = ud_errf(errmsg, from_raft(rv), "raft init in %s: %s", n->raft_dir,
                     raft_errmsg(&n->raft));
        goto fail;
    }
    ud_fsm_attach(n->fsm, &n->raft);
    if (o->election_timeout_ms)
        raft_set_election_timeout(&n->raft, o->election_timeout_ms);
    if (o->heartbeat_timeout_ms)
        raft_set_heartbeat_timeout(&n->raft, o->heartbeat_timeout_ms);
    if (o->snapshot_threshold &&
        (rc = ud_fsm_set_snapshot_policy(n->fsm, o->snapshot_threshold, o->snapshot_bytes,
                                         o->snapshot_trailing, o->snapshot_trailing_bytes,
                                         errmsg)) != 0)
        goto fail_started;
    /* A node returning from a partition must not depose a healthy leader. */
    raft_set_pre_vote(&n->raft, true);
    /* raft 0.15 waits this long for the answer to an InstallSnapshot before it sends the
     * snapshot again (30 s by default, meant for snapshots of the data): one sent to a follower
     * that was down, or that was busy, held its out-of-band catch-up back for 30 s. Ours are a
     * few KiB of metadata. */
    raft_set_install_snapshot_timeout(&n->raft, INSTALL_SNAPSHOT_TIMEOUT_MS);
    /* Before raft_start: a single voter applies its log inside it. */
    if ((rc = ud_fsm_start_pipeline(n->fsm, o->loop, errmsg)) != 0)
        goto fail_started;
    n->pipeline_open = 1;

    if (!o->join && (rc = bootstrap(n, o, errmsg)) != 0)
        goto fail_started;
    /* Loads the snapshot (ud_fsm_restore) and the log; a single voter elects itself and applies
     * the log at once, which is how the FSM replays after a restart. */
    rv = raft_start(&n->raft);
    if (rv != 0) {
        const char *fsm_err;
        int fsm_rc = ud_fsm_error(n->fsm, &fsm_err);
        const char *raft_err = raft_errmsg(&n->raft);
        if (raft_err[0] == '\0')
            raft_err = raft_strerror(rv);
        /* The FSM's reason (a snapshot ahead of the namespaces, a failed replay) says more than
         * the code raft passed on for it. */
        if (fsm_rc != 0)
            rc = ud_errf(errmsg, fsm_rc, "raft start in %s: %s", n->raft_dir, fsm_err);
        else
            rc = ud_errf(errmsg, from_raft(rv), "raft start in %s: %s", n->raft_dir, raft_err);
        goto fail_started;
    }
    if (o->join && n->raft.configuration.n == 0)
        ud_info(LOG, "not bootstrapping ([raft] join): waiting to be added to a cluster");
    else if (o->join)
        ud_info(LOG, "[raft] join: raft state found in %s, rejoining its cluster", n->raft_dir);
    /* The replay raft_start handed to the apply thread must have worked, as it had to when raft
     * applied inside raft_start: a node that cannot apply its own log does not start. */
    if ((rc = ud_fsm_wait_applied(n->fsm, errmsg)) != 0) {
        ud_errwrap(errmsg, rc, "raft start in %s: replaying the log", n->raft_dir);
        goto fail_started;
    }
    transition(n, NODE_RUNNING);
    uv_timer_init(o->loop, &n->op_timer);
    n->op_timer.data = n;
    n->op_timer_open = 1;
    uv_timer_init(o->loop, &n->watch);
    n->watch.data = n;
    n->watch_open = 1;
    uv_timer_start(&n->watch, watch_cb, 0, WATCH_INTERVAL_MS);
    uv_unref((uv_handle_t *)&n->watch);
    ud_info(LOG, "raft node %llu of cluster \"%s\" listening on %s, advertising %s",
            (unsigned long long)o->node_id, o->cluster_id, n->bind, n->address);
    *out = n;
    return 0;

fail_started:
    if (rc == UD_ERANGE && o->behind != NULL)
        ud_fsm_take_behind(n->fsm, o->behind);
    /* raft_init succeeded: its io holds loop handles, so only raft_close may free them. */
    n->done = o->closed;
    n->done_arg = o->closed_arg;
    close_node(n);
    return rc;
fail:
    node_free_early(n);
    return rc;
}

/* --- queries ------------------------------------------------------------------------------------
 */

int ud_raft_node_port(const struct ud_raft_node *n)
{
    return n->port;
}

const char *ud_raft_node_address(const struct ud_raft_node *n)
{
    return n->address;
}

int ud_raft_node_is_leader(struct ud_raft_node *n)
{
    return n->state == NODE_RUNNING && raft_state(&n->raft) == RAFT_LEADER;
}

int ud_raft_node_leader_ready(struct ud_raft_node *n)
{
    /* Ready for the term of its barrier only: a step down and a new win between two looks of
     * the watch must not carry readiness into the new term. */
    return ud_raft_node_is_leader(n) && n->ready_term == n->raft.current_term &&
           ud_fsm_finished(n->fsm) >= n->ready_after;
}

void ud_raft_node_transport_counts(const struct ud_raft_node *n, unsigned *accepted,
                                   unsigned *connected, unsigned *batched)
{
    *accepted = n->transport.nodelay_accepted;
    *connected = n->transport.nodelay_connected;
    *batched = n->transport.recv_batched;
}

void ud_raft_node_leader(struct ud_raft_node *n, uint64_t *id, const char **address)
{
    raft_id lid = 0;
    const char *addr = NULL;
    if (n->state == NODE_RUNNING)
        raft_leader(&n->raft, &lid, &addr);
    *id = lid;
    *address = addr;
}

uint64_t ud_raft_node_term(struct ud_raft_node *n)
{
    return n->raft.current_term;
}

uint64_t ud_raft_node_last_applied(struct ud_raft_node *n)
{
    return raft_last_applied(&n->raft);
}

struct ud_fsm *ud_raft_node_fsm(struct ud_raft_node *n)
{
    return n->fsm;
}

int ud_raft_node_take_behind(struct ud_raft_node *n, struct ud_catchup_plan *plan)
{
    if (!ud_fsm_take_behind(n->fsm, plan))
        return 0;
    ud_fsm_directory_peers(n->fsm, n->raft.id, plan);
    return 1;
}

unsigned ud_raft_node_inflight(const struct ud_raft_node *n)
{
    return n->inflight;
}

/* --- proposals ------------------------------------------------------------------------------- */

void *ud_raft_buf_alloc(size_t len)
{
    return raft_malloc(len);
}

void ud_raft_buf_free(void *buf)
{
    raft_free(buf);
}

/* The proposal's entry is applied on this node (or the pipeline stopped before it could be: the
 * entry is committed and applied when the writer starts again, so the proposer must not hear a
 * plain failure; the FSM's message says so, with the cause). */
static void applied_cb(void *arg, int status, const struct ud_fsm_result *res, const char *errmsg)
{
    struct proposal *p = arg;
    struct ud_raft_node *n = p->node;
    ud_raft_propose_cb cb = p->cb;
    void *cb_arg = p->arg;
    free(p);
    n->inflight--;
    if (status != 0) {
        char msg[UD_ERRMSG_SIZE * 2];
        cb(cb_arg,
           ud_err_indoubt(msg, sizeof msg, "%s", errmsg != NULL ? errmsg : ud_strerror(status)),
           NULL, msg);
        return;
    }
    cb(cb_arg, 0, res, errmsg);
}

static void apply_cb(struct raft_apply *req, int status, void *result)
{
    struct proposal *p = req->data;
    struct ud_raft_node *n = p->node;
    if (status != 0) {
        /* raft took the entry and may have sent it to followers (also before its own log write
         * failed): leadership lost, shutdown or a failed write, a later leader may commit it. */
        ud_raft_propose_cb cb = p->cb;
        void *arg = p->arg;
        free(p);
        n->inflight--;
        char msg[UD_ERRMSG_SIZE];
        cb(arg, ud_err_indoubt(msg, sizeof msg, "raft: %s", raft_strerror(status)), NULL, msg);
        return;
    }
    /* Committed; answered once the FSM has applied it (at once without the apply pipeline). */
    ud_fsm_on_applied(n->fsm, result, applied_cb, p);
}

int ud_raft_node_propose(struct ud_raft_node *n, void *buf, size_t len, ud_raft_propose_cb cb,
                         void *arg, char *errmsg)
{
    if (n->state != NODE_RUNNING)
        return ud_errf(errmsg, UD_ECLOSED, "raft node is %s", state_name(n->state));
    struct proposal *p = calloc(1, sizeof *p);
    if (p == NULL)
        return ud_errf(errmsg, UD_ENOMEM, "out of memory proposing a raft entry");
    p->req.data = p;
    p->node = n;
    p->cb = cb;
    p->arg = arg;
    struct raft_buffer b = {.base = buf, .len = len};
    n->proposing = 1;
    int rv = raft_apply(&n->raft, &p->req, &b, 1, apply_cb);
    n->proposing = 0;
    /* Whatever raft_apply returned, an append it asked for is raft's to complete. */
    submit_held_append(n);
    if (rv != 0) {
        free(p);
        return ud_errf(errmsg, from_raft(rv), "raft apply: %s",
                       rv == RAFT_NOTLEADER ? "this node is not the leader" : raft_strerror(rv));
    }
    n->inflight++;
    return 0;
}

/* --- the writer's raft part (writer/writer.h) ----------------------------------------------- */

static void writer_raft_behind(void *arg)
{
    struct ud_writer *w = arg;
    w->raft_behind(w);
}

static void writer_raft_failed_closed(void *arg)
{
    struct ud_writer *w = arg;
    if (w->raft_failed_closed != NULL)
        w->raft_failed_closed(w);
}

int ud_writer_raft_start(struct ud_writer *w, char *errmsg)
{
    const struct ud_writer_config *c = w->config;
    struct ud_raft_node_options o = {
        .loop = w->loop,
        .registry = w->registry,
        .data_dir = c->data_dir,
        .cluster_id = c->cluster_id,
        .node_id = c->node_id,
        .listen = c->raft_listen,
        .advertise = c->raft_advertise,
        .peers = c->peers,
        .npeers = c->npeers,
        .election_timeout_ms = c->election_timeout_ms,
        .heartbeat_timeout_ms = c->heartbeat_timeout_ms,
        .snapshot_threshold = c->snapshot_threshold,
        .snapshot_trailing = c->snapshot_trailing,
        .snapshot_bytes = c->snapshot_bytes,
        .snapshot_trailing_bytes = c->snapshot_trailing_bytes,
        .join = c->join,
        .on_behind = w->raft_behind != NULL ? writer_raft_behind : NULL,
        .behind_arg = w,
        /* Only a writer that can catch up (writer/cluster_catchup.c) takes the plan over. */
        .behind = w->raft_behind != NULL ? &w->behind : NULL,
        .waived = &w->waived,
        .closed = writer_raft_failed_closed,
        .closed_arg = w,
    };
    int rc = ud_raft_node_start(&o, &w->raft, errmsg);
    if (rc != 0)
        return rc;
    ud_catchup_plan_free(&w->waived); /* used by the restore inside the start */
    w->raft_port = ud_raft_node_port(w->raft);
    return 0;
}

struct writer_stop {
    struct ud_writer *w;
    void (*done)(struct ud_writer *w);
};

static void writer_raft_stopped(void *arg)
{
    struct writer_stop *s = arg;
    struct ud_writer *w = s->w;
    void (*done)(struct ud_writer *) = s->done;
    free(s);
    w->raft = NULL;
    if (done != NULL)
        done(w);
}

void ud_writer_raft_stop(struct ud_writer *w, void (*done)(struct ud_writer *w))
{
    struct writer_stop *s = malloc(sizeof *s);
    if (w->raft == NULL || s == NULL) {
        free(s);
        if (w->raft != NULL) /* out of memory: close anyway, without the notification */
            ud_raft_node_stop(w->raft, NULL, NULL);
        w->raft = NULL;
        if (done != NULL)
            done(w);
        return;
    }
    s->w = w;
    s->done = done;
    ud_raft_node_stop(w->raft, writer_raft_stopped, s);
}

int ud_writer_is_leader(struct ud_writer *w)
{
    return w->raft != NULL && ud_raft_node_is_leader(w->raft);
}

/* --- cluster operations ---------------------------------------------------------------------- */

uint64_t ud_raft_node_id(const struct ud_raft_node *n)
{
    return n->raft.id;
}

uint64_t ud_raft_node_last_index(struct ud_raft_node *n)
{
    return raft_last_index(&n->raft);
}

uint64_t ud_raft_node_first_index(struct ud_raft_node *n)
{
    /* raft 0.15 has no call for it; offset is the index before the first entry it holds. */
    return n->raft.log.offset + 1;
}

uint64_t ud_raft_node_snapshot_index(struct ud_raft_node *n)
{
    return n->raft.log.snapshot.last_index;
}

uint64_t ud_raft_node_applied_index(struct ud_raft_node *n)
{
    return ud_fsm_applied_index(n->fsm, raft_last_applied(&n->raft));
}

const char *ud_raft_node_state_name(struct ud_raft_node *n)
{
    if (n->state != NODE_RUNNING)
        return "unavailable";
    switch (raft_state(&n->raft)) {
    case RAFT_LEADER:
        return "leader";
    case RAFT_CANDIDATE:
        return "candidate";
    case RAFT_FOLLOWER:
        return "follower";
    default:
        return "unavailable";
    }
}

const char *ud_raft_role_name(enum ud_raft_role role)
{
    switch (role) {
    case UD_RAFT_VOTER:
        return "voter";
    case UD_RAFT_STANDBY:
        return "standby";
    default:
        return "spare";
    }
}

static enum ud_raft_role role_from_raft(int role)
{
    return role == RAFT_VOTER     ? UD_RAFT_VOTER
           : role == RAFT_STANDBY ? UD_RAFT_STANDBY
                                  : UD_RAFT_SPARE;
}

unsigned ud_raft_node_members(struct ud_raft_node *n, struct ud_raft_member *out, unsigned max)
{
    const struct raft_configuration *c = &n->raft.configuration;
    for (unsigned i = 0; i < c->n && i < max; i++) {
        out[i].id = c->servers[i].id;
        snprintf(out[i].address, sizeof out[i].address, "%s", c->servers[i].address);
        out[i].role = role_from_raft(c->servers[i].role);
    }
    return c->n;
}

/* One barrier, change or transfer in flight. */
struct op {
    union {
        struct raft_barrier barrier;
        struct raft_change change;
        struct raft_transfer transfer;
    } req;
    struct ud_raft_node *node;
    ud_raft_op_cb cb;
    void *arg;
    struct op *next; /* in done_ops */
    int status;
    char errmsg[UD_ERRMSG_SIZE];
};

static struct op *op_new(struct ud_raft_node *n, ud_raft_op_cb cb, void *arg)
{
    struct op *op = calloc(1, sizeof *op);
    if (op == NULL)
        return NULL;
    op->node = n;
    op->cb = cb;
    op->arg = arg;
    return op;
}

/* Runs the callbacks of finished operations, oldest first (from the op timer, or at close). */
static void deliver_ops(struct ud_raft_node *n)
{
    struct op *op = n->done_ops;
    n->done_ops = n->done_tail = NULL;
    while (op != NULL) {
        struct op *next = op->next;
        ud_raft_op_cb cb = op->cb;
        void *arg = op->arg;
        int status = op->status;
        char msg[UD_ERRMSG_SIZE];
        memcpy(msg, op->errmsg, sizeof msg);
        free(op);
        cb(arg, status, msg);
        op = next;
    }
}

/* raft called back: the outcome is kept and delivered from the loop (see op_timer). */
static void op_done(struct op *op, int status, const char *errmsg)
{
    struct ud_raft_node *n = op->node;
    n->ops--;
    op->status = status;
    snprintf(op->errmsg, sizeof op->errmsg, "%s", errmsg);
    op->next = NULL;
    if (n->done_tail != NULL)
        n->done_tail->next = op;
    else
        n->done_ops = op;
    n->done_tail = op;
    if (n->op_timer_open && !uv_is_closing((uv_handle_t *)&n->op_timer))
        uv_timer_start(&n->op_timer, op_timer_cb, 0, 0);
}

static void op_finish(struct op *op, int rv, const char *what)
{
    char msg[UD_ERRMSG_SIZE] = "";
    if (rv != 0)
        snprintf(msg, sizeof msg, "raft %s: %s", what,
                 rv == RAFT_NOTLEADER || rv == RAFT_LEADERSHIPLOST
                     ? "this node is no longer the leader"
                     : raft_strerror(rv));
    op_done(op, from_raft(rv), msg);
}

static int op_start_failed(struct ud_raft_node *n, struct op *op, int rv, const char *what,
                           char *errmsg)
{
    free(op);
    const char *why = rv == RAFT_NOTLEADER ? "this node is not the leader" : raft_errmsg(&n->raft);
    if (why == NULL || why[0] == '\0')
        why = raft_strerror(rv);
    return ud_errf(errmsg, from_raft(rv), "raft %s: %s", what, why);
}

static int op_precheck(struct ud_raft_node *n, struct op **op, ud_raft_op_cb cb, void *arg,
                       char *errmsg)
{
    if (n->state != NODE_RUNNING)
        return ud_errf(errmsg, UD_ECLOSED, "raft node is %s", state_name(n->state));
    if ((*op = op_new(n, cb, arg)) == NULL)
        return ud_errf(errmsg, UD_ENOMEM, "out of memory");
    return 0;
}

/* A barrier is done once raft applied it; the FSM's apply thread may still be applying the
 * entries before it, so the caller waits for ud_raft_node_applied_index as well (see
 * writer/cluster.c), which is why the barrier's index is not enough here. */
static void op_barrier_cb(struct raft_barrier *req, int status)
{
    op_finish(req->data, status, "barrier");
}

int ud_raft_node_barrier(struct ud_raft_node *n, ud_raft_op_cb cb, void *arg, char *errmsg)
{
    struct op *op;
    int rc = op_precheck(n, &op, cb, arg, errmsg);
    if (rc != 0)
        return rc;
    op->req.barrier.data = op;
    int rv = raft_barrier(&n->raft, &op->req.barrier, op_barrier_cb);
    if (rv != 0)
        return op_start_failed(n, op, rv, "barrier", errmsg);
    n->ops++;
    return 0;
}

static void op_change_cb(struct raft_change *req, int status)
{
    op_finish(req->data, status, "membership change");
}

int ud_raft_node_add(struct ud_raft_node *n, uint64_t id, const char *address, ud_raft_op_cb cb,
                     void *arg, char *errmsg)
{
    struct op *op;
    int rc = op_precheck(n, &op, cb, arg, errmsg);
    if (rc != 0)
        return rc;
    op->req.change.data = op;
    int rv = raft_add(&n->raft, &op->req.change, id, address, op_change_cb);
    if (rv != 0)
        return op_start_failed(n, op, rv, "add", errmsg);
    n->ops++;
    return 0;
}

int ud_raft_node_assign(struct ud_raft_node *n, uint64_t id, enum ud_raft_role role,
                        ud_raft_op_cb cb, void *arg, char *errmsg)
{
    struct op *op;
    int rc = op_precheck(n, &op, cb, arg, errmsg);
    if (rc != 0)
        return rc;
    op->req.change.data = op;
    int r = role == UD_RAFT_VOTER     ? RAFT_VOTER
            : role == UD_RAFT_STANDBY ? RAFT_STANDBY
                                      : RAFT_SPARE;
    int rv = raft_assign(&n->raft, &op->req.change, id, r, op_change_cb);
    if (rv != 0)
        return op_start_failed(n, op, rv, "assign", errmsg);
    n->ops++;
    return 0;
}

int ud_raft_node_remove(struct ud_raft_node *n, uint64_t id, ud_raft_op_cb cb, void *arg,
                        char *errmsg)
{
    struct op *op;
    int rc = op_precheck(n, &op, cb, arg, errmsg);
    if (rc != 0)
        return rc;
    op->req.change.data = op;
    int rv = raft_remove(&n->raft, &op->req.change, id, op_change_cb);
    if (rv != 0)
        return op_start_failed(n, op, rv, "remove", errmsg);
    n->ops++;
    return 0;
}

/* raft 0.15's transfer callback carries no status: it fires when the target won an election or
 * when the transfer timed out (an election timeout), so the outcome is read off raft's state. */
static void op_transfer_cb(struct raft_transfer *req)
{
    struct op *op = req->data;
    struct ud_raft_node *n = op->node;
    int still = n->state == NODE_RUNNING && raft_state(&n->raft) == RAFT_LEADER;
    op_done(op, still ? UD_ETIMEDOUT : 0,
            still ? "leadership transfer: the target did not take over in time; this node still "
                    "leads"
                  : "");
}

int ud_raft_node_transfer(struct ud_raft_node *n, uint64_t id, ud_raft_op_cb cb, void *arg,
                          char *errmsg)
{
    struct op *op;
    int rc = op_precheck(n, &op, cb, arg, errmsg);
    if (rc != 0)
        return rc;
    op->req.transfer.data = op;
    int rv = raft_transfer(&n->raft, &op->req.transfer, id, op_transfer_cb);
    if (rv != 0)
        return op_start_failed(n, op, rv, "transfer", errmsg);
    n->ops++;
    return 0;
}
