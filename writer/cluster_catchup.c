/*
 * Out-of-band catch-up of this writer (docs/raft.md "Out-of-band catch-up"): when raft's snapshot
 * is ahead of the namespaces (at start, or sent by the leader), raft is closed, the namespaces
 * catch up from a peer over HTTP (core/catchup.h), and raft starts again on the same raft
 * directory, whose snapshot then restores as a no-op. Namespaces whose WAL was found corrupt at
 * startup are re-fetched the same way before raft first starts.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/catchup.h"
#include "core/clock.h"
#include "core/dir.h"
#include "core/err.h"
#include "core/log.h"
#include "raft/fsm.h"
#include "raft/node.h"
#include "writer/writer.h"

#define LOG "catchup"

/* The wait before raft starts again after a leader's snapshot did not decode here: it doubles
 * while the same happens again within UNDECODABLE_CALM_MS (a leader of a newer format sends the
 * same again at every start), and raft is closed meanwhile. */
#define UNDECODABLE_WAIT_MIN_MS 1000u
#define UNDECODABLE_WAIT_MAX_MS 60000u
#define UNDECODABLE_CALM_MS     (10u * 60u * 1000u)

struct ud_writer_catchup {
    struct ud_writer *w;
    void (*failed)(struct ud_writer *w, int rc);
    struct ud_catchup *worker;             /* running, or NULL */
    struct ud_catchup_plan plan;           /* the next round, waiting for raft to close */
    int raft_closing;                      /* a raft node is closing; the round starts after */
    int round;                             /* rounds started, for the log */
    void (*end_done)(struct ud_writer *w); /* ud_writer_raft_end in progress */
    int ending;
    char why[UD_ERRMSG_SIZE + 256]; /* why raft was closed, when it says more than the plan */
    char status[UD_ERRMSG_SIZE + 600];
};

/* From the catch-up's thread: the store it installed says which namespace the next raft start
 * stamps it as, not a create marker this node left for another namespace of the name. */
static int worker_installed(void *arg, const char *ns, uint64_t incarnation, char *errmsg)
{
    struct ud_writer_catchup *c = arg;
    return ud_fsm_created_marker_agree(ud_registry_root(c->w->registry), ns, incarnation, errmsg);
}

static void start_round(struct ud_writer_catchup *c);

/* Peers from the configuration complete the plan's (the snapshot's and the FSM's directory). */
static void add_config_peers(struct ud_writer *w, struct ud_catchup_plan *p)
{
    const struct ud_writer_config *cfg = w->config;
    for (unsigned i = 0; i < cfg->npeers; i++)
        if (cfg->peers[i].id != cfg->node_id)
            ud_catchup_plan_peer(p, cfg->peers[i].http);
}

static void finish_end(struct ud_writer_catchup *c)
{
    struct ud_writer *w = c->w;
    void (*done)(struct ud_writer *) = c->end_done;
    ud_catchup_plan_free(&c->plan);
    ud_catchup_plan_free(&w->behind);
    ud_catchup_plan_free(&w->waived);
    w->catchup = NULL;
    free(c);
    ud_writer_raft_stop(w, done); /* raft may have started meanwhile; NULL raft: done at once */
}

static void raft_started_again(struct ud_writer_catchup *c)
{
    struct ud_writer *w = c->w;
    char errmsg[UD_ERRMSG_SIZE] = "";
    int rc = ud_writer_raft_start(w, errmsg);
    if (rc == 0) {
        ud_info(LOG, "out-of-band catch-up done; raft started again");
        ud_catchup_plan_free(&c->plan);
        w->catchup = NULL;
        free(c);
        return;
    }
    if (rc == UD_ERANGE && w->behind.ntargets > 0) {
        /* The snapshot moved on meanwhile (or a peer was behind): another round. */
        ud_warn(LOG, "%s; catching up again", errmsg);
        c->why[0] = '\0'; /* this round has its own reason: the namespaces behind */
        c->plan = w->behind;
        memset(&w->behind, 0, sizeof w->behind);
        add_config_peers(w, &c->plan);
        c->raft_closing = 1;
        return;
    }
    ud_error(LOG, "raft start after the catch-up failed: %s", errmsg);
    void (*failed)(struct ud_writer *, int) = c->failed;
    w->catchup = NULL;
    ud_catchup_plan_free(&c->plan);
    free(c);
    failed(w, rc);
}

static void worker_done(void *arg, int rc, const char *errmsg, const struct ud_catchup_plan *plan)
{
    struct ud_writer_catchup *c = arg;
    c->worker = NULL;
    /* The next raft start's restore may skip what the peers deleted since the snapshot. */
    ud_catchup_plan_free(&c->w->waived);
    if (rc == 0 && plan != NULL) {
        c->w->waived.snapshot_index = plan->snapshot_index;
        for (size_t i = 0; i < plan->ntargets; i++)
            if (plan->targets[i].gone)
                ud_catchup_plan_target(&c->w->waived, plan->targets[i].ns, plan->targets[i].lsn);
    }
    if (c->ending) {
        finish_end(c);
        return;
    }
    if (rc != 0) {
        ud_error(LOG, "out-of-band catch-up failed: %s", errmsg);
        struct ud_writer *w = c->w;
        void (*failed)(struct ud_writer *, int) = c->failed;
        w->catchup = NULL;
        ud_catchup_plan_free(&c->plan);
        free(c);
        failed(w, rc);
        return;
    }
    raft_started_again(c);
}

static void start_round(struct ud_writer_catchup *c)
{
    struct ud_writer *w = c->w;
    if (c->ending) {
        finish_end(c);
        return;
    }
    c->round++;
    if (c->plan.ntargets == 0)
        ud_info(LOG, "catch-up round %d: no namespace to fetch; raft starts again after it",
                c->round);
    for (size_t i = 0; i < c->plan.ntargets; i++)
        ud_info(LOG, "catch-up round %d: namespace %s to LSN %llu%s", c->round,
                c->plan.targets[i].ns, (unsigned long long)c->plan.targets[i].lsn,
                c->plan.targets[i].lsn == 0 ? " (the peer's last)" : "");
    for (size_t i = 0; i < c->plan.npeers; i++)
        ud_info(LOG, "catch-up round %d: peer %s", c->round, c->plan.peers[i]);
    struct ud_catchup_options o = {
        .loop = w->loop,
        .registry = w->registry,
        .ns_root = ud_registry_root(w->registry),
        .engine = &w->config->engine,
        .done = worker_done,
        .arg = c,
        .installed = worker_installed,
    };
    char errmsg[UD_ERRMSG_SIZE] = "";
    int rc = ud_catchup_start(&o, &c->plan, &c->worker, errmsg);
    if (rc != 0)
        worker_done(c, rc, errmsg, NULL);
}

/* The node that failed to start, or was stopped for the catch-up, has closed: its raft port is
 * free and nothing applies to the namespaces any more. */
static void raft_closed(struct ud_writer *w)
{
    struct ud_writer_catchup *c = w->catchup;
    if (c == NULL || !c->raft_closing)
        return;
    c->raft_closing = 0;
    start_round(c);
}

/* A running node's restore of the leader's snapshot failed: close raft, then catch up (nothing
 * to fetch when the restore failed for another reason than being behind: raft only starts
 * again, and its restore then says whether a namespace is behind). */
static void raft_behind(struct ud_writer *w)
{
    if (w->catchup != NULL || w->raft == NULL || w->stopping)
        return;
    struct ud_writer_catchup *c = calloc(1, sizeof *c);
    if (c == NULL) {
        /* raft reports a node behind once: without a catch-up it would stay a follower that
         * refuses every snapshot, so the writer stops instead. */
        ud_error(LOG, "out of memory starting the out-of-band catch-up");
        if (w->catchup_failed != NULL)
            w->catchup_failed(w, UD_ENOMEM);
        return;
    }
    c->w = w;
    c->failed = w->catchup_failed;
    if (!ud_raft_node_take_behind(w->raft, &c->plan)) {
        free(c);
        return;
    }
    uint64_t term, index;
    const char *deaf = ud_fsm_deaf(ud_raft_node_fsm(w->raft));
    if (ud_fsm_undecodable(ud_raft_node_fsm(w->raft), &term, &index)) {
        /* Nothing to fetch: raft starts again with that snapshot set aside (the node recorded
         * it), after a wait that grows while it keeps happening. */
        uint64_t now = ud_mono_ns() / 1000000u;
        if (w->undecodable_wait_ms == 0 || now - w->undecodable_at_ms > UNDECODABLE_CALM_MS)
            w->undecodable_wait_ms = UNDECODABLE_WAIT_MIN_MS;
        else if ((w->undecodable_wait_ms *= 2) > UNDECODABLE_WAIT_MAX_MS)
            w->undecodable_wait_ms = UNDECODABLE_WAIT_MAX_MS;
        w->undecodable_at_ms = now;
        c->plan.wait_ms = w->undecodable_wait_ms;
        snprintf(c->why, sizeof c->why,
                 "the leader's raft snapshot at index %llu does not decode here (%s); raft is "
                 "closed (this node neither votes nor leads) and starts again without it",
                 (unsigned long long)index, deaf != NULL ? deaf : "no reason recorded");
        ud_error(LOG, "%s, in %u ms", c->why, c->plan.wait_ms);
    } else if (deaf != NULL) {
        snprintf(c->why, sizeof c->why,
                 "the leader's raft snapshot cannot be checked against this node's state (%s); "
                 "raft is closed (this node neither votes nor leads), and its start fails the "
                 "same way until that is mended",
                 deaf);
    }
    add_config_peers(w, &c->plan);
    w->catchup = c;
    c->raft_closing = 1;
    ud_info(LOG, "closing raft for an out-of-band catch-up from a peer");
    ud_writer_raft_stop(w, raft_closed);
}

int ud_writer_raft_begin(struct ud_writer *w, const struct ud_catchup_plan *corrupt,
                         void (*failed)(struct ud_writer *w, int rc), char *errmsg)
{
    w->raft_behind = raft_behind;
    w->raft_failed_closed = raft_closed;
    w->catchup_failed = failed;
    struct ud_writer_catchup *c = calloc(1, sizeof *c);
    if (c == NULL)
        return ud_errf(errmsg, UD_ENOMEM, "out of memory starting raft");
    c->w = w;
    c->failed = failed;
    if (corrupt != NULL && corrupt->ntargets > 0) {
        for (size_t i = 0; i < corrupt->ntargets; i++)
            ud_catchup_plan_target(&c->plan, corrupt->targets[i].ns, 0);
        add_config_peers(w, &c->plan);
        w->catchup = c;
        ud_warn(LOG, "raft is not started (this node neither votes nor leads) until the "
                     "namespaces with a damaged WAL are fetched again from a peer");
        start_round(c);
        return 0;
    }
    int rc = ud_writer_raft_start(w, errmsg);
    if (rc == UD_ERANGE && w->behind.ntargets > 0) {
        c->plan = w->behind;
        memset(&w->behind, 0, sizeof w->behind);
        add_config_peers(w, &c->plan);
        if (c->plan.npeers == 0) {
            /* A single writer (or one whose peers' HTTP addresses are unknown) has nobody to
             * catch up from: refusing to start says so at once. */
            ud_catchup_plan_free(&c->plan);
            free(c);
            return ud_errwrap(errmsg, rc, "no peer's HTTP address is known to catch up from");
        }
        ud_warn(LOG, "%s; catching up out of band before raft starts", errmsg);
        c->raft_closing = 1; /* the failed node closes on the loop */
        w->catchup = c;
        return 0;
    }
    free(c);
    return rc;
}

void ud_writer_raft_end(struct ud_writer *w, void (*done)(struct ud_writer *w))
{
    struct ud_writer_catchup *c = w->catchup;
    if (c == NULL) {
        ud_catchup_plan_free(&w->behind);
        ud_catchup_plan_free(&w->waived);
        ud_writer_raft_stop(w, done);
        return;
    }
    c->ending = 1;
    c->end_done = done;
    if (c->worker != NULL)
        ud_catchup_cancel(c->worker); /* worker_done finishes the end */
    else if (!c->raft_closing)
        finish_end(c);
    /* else: raft_closed -> start_round finishes the end */
}

const char *ud_writer_catching_up(struct ud_writer *w)
{
    struct ud_writer_catchup *c = w->catchup;
    if (c == NULL)
        return NULL;
    if (c->why[0] != '\0') {
        char progress[256] = "";
        if (c->worker != NULL)
            ud_catchup_progress(c->worker, progress, sizeof progress);
        snprintf(c->status, sizeof c->status, "%s%s%s", c->why, progress[0] ? ": " : "", progress);
    } else if (c->worker != NULL) {
        char progress[256];
        ud_catchup_progress(c->worker, progress, sizeof progress);
        snprintf(c->status, sizeof c->status, "catching up out of band from a peer%s%s",
                 progress[0] ? ": " : "", progress);
    } else {
        snprintf(c->status, sizeof c->status, "catching up out of band: waiting for raft to close");
    }
    return c->status;
}

uint64_t ud_writer_ns_deleted(struct ud_writer *w, const char *name)
{
    if (w->raft == NULL || ud_writer_catching_up(w) != NULL)
        return 0;
    return ud_fsm_ns_deleted(ud_raft_node_fsm(w->raft), name);
}

/* --- namespaces with a damaged WAL at startup ------------------------------------------------ */

static unsigned http_peers(const struct ud_writer_config *cfg)
{
    unsigned n = 0;
    for (unsigned i = 0; i < cfg->npeers; i++)
        if (cfg->peers[i].id != cfg->node_id && cfg->peers[i].http[0] != '\0')
            n++;
    return n;
}

int ud_writer_set_aside_damaged(void *arg, const char *name, const char *why)
{
    struct ud_writer_damaged *d = arg;
    const struct ud_writer_config *cfg = d->w->config;
    if (cfg->npeers < 2)
        return -1; /* a single writer has nobody to fetch it from: it refuses to start */
    if (http_peers(cfg) == 0) {
        ud_error(LOG,
                 "%s; no [raft] peers entry has http=, so namespace %s cannot be fetched "
                 "again from a peer",
                 why, name);
        return -1;
    }
    /* The plan first: when the move fails after it, the open fails and the plan goes unused. */
    if (ud_catchup_plan_target(&d->plan, name, 0) != 0) {
        ud_error(LOG,
                 "%s; namespace %s could not be set aside: out of memory for the catch-up plan",
                 why, name);
        return -1;
    }
    return ud_registry_set_aside(d->root, name, why,
                                 "it is fetched again from a peer before raft starts");
}
