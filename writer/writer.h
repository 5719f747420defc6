/*
 * The unison-writer process: one libuv loop runs raft, the HTTP and RESP front ends and the FSM.
 * Each part is started and stopped by main.c in order; handlers reach the others through this.
 */
#ifndef UD_WRITER_WRITER_H
#define UD_WRITER_WRITER_H

#include <stdint.h>
#include <uv.h>

#include "core/catchup.h"
#include "core/registry.h"
#include "writer/config.h"

struct ud_raft_node; /* raft/node.h */
struct ud_submitter; /* writer/submit.c */
struct ud_cluster;   /* writer/cluster.c */
struct ud_http_server;
struct ud_resp_server;
struct ud_metrics;
struct ud_writer_catchup; /* writer/cluster_catchup.c */

struct ud_writer {
    uv_loop_t *loop;
    struct ud_writer_config *config;
    struct ud_registry *registry; /* every namespace of this writer */
    struct ud_raft_node *raft;
    struct ud_submitter *submitter;
    struct ud_cluster *cluster; /* forwarding, consistency, cluster admin */
    struct ud_http_server *http;
    struct ud_resp_server *resp;
    struct ud_metrics *metrics;
    int http_port; /* bound ports, reported in the log and the ports file */
    int https_port;
    int resp_port;
    int raft_port;
    int stopping; /* set on SIGTERM/SIGINT: listeners closed, in-flight requests finishing */
    /* Out-of-band catch-up (writer/cluster_catchup.c, docs/raft.md): in progress, or NULL. Its
     * hooks into raft (NULL where raft runs alone, as in unit tests): raft_behind is called from
     * the node's timer when a leader's snapshot is ahead of the namespaces; a start failing with
     * UD_ERANGE leaves its plan in `behind` and calls raft_failed_closed once that node closed. */
    struct ud_writer_catchup *catchup;
    void (*raft_behind)(struct ud_writer *w);
    void (*raft_failed_closed)(struct ud_writer *w);
    void (*catchup_failed)(struct ud_writer *w, int rc);
    struct ud_catchup_plan behind;
    struct ud_catchup_plan waived; /* namespaces the last catch-up found deleted on the peers */
    /* Raft restarts for a leader's snapshot that did not decode here: the wait before the next
     * one (doubling, writer/cluster_catchup.c) and when the last one was asked for. */
    unsigned undecodable_wait_ms;
    uint64_t undecodable_at_ms;
};

/* Each front end: start binds its listener(s) and records the port; stop closes the listener and
 * calls done once every in-flight request has been answered. Implemented by their modules. */
int ud_writer_raft_start(struct ud_writer *w, char *errmsg);
void ud_writer_raft_stop(struct ud_writer *w, void (*done)(struct ud_writer *w));
int ud_writer_submit_init(struct ud_writer *w, char *errmsg);
void ud_writer_submit_close(struct ud_writer *w);
int ud_writer_http_start(struct ud_writer *w, char *errmsg);
void ud_writer_http_stop(struct ud_writer *w, void (*done)(struct ud_writer *w));
int ud_writer_resp_start(struct ud_writer *w, char *errmsg);
void ud_writer_resp_stop(struct ud_writer *w, void (*done)(struct ud_writer *w));

/*
 * Raft with out-of-band catch-up (writer/cluster_catchup.c): starts raft, or, when raft's
 * snapshot is ahead of the namespaces, the catch-up from a peer that starts raft after it.
 * `corrupt` lists namespaces moved aside at startup (their WAL was damaged) to be re-fetched
 * before raft starts (may be NULL). Returns 0 when either is under way. A catch-up that fails
 * for good (no peer known, local storage failure) calls failed(w, rc) from the loop.
 */
int ud_writer_raft_begin(struct ud_writer *w, const struct ud_catchup_plan *corrupt,
                         void (*failed)(struct ud_writer *w, int rc), char *errmsg);
/*
 * Startup in a cluster: a namespace whose WAL is damaged (ud_registry_open_damaged's callback,
 * arg a struct ud_writer_damaged) is moved aside to {root}/{ns}.corrupt-{UTC time} and added to
 * the plan, to be fetched again from a peer before raft starts. Non-zero (the open then fails
 * naming the damage, as before) for a single writer, when no [raft] peers entry has http=, or
 * when the rename fails.
 */
struct ud_writer_damaged {
    struct ud_writer *w;
    const char *root; /* the registry's root */
    struct ud_catchup_plan plan;
};
int ud_writer_set_aside_damaged(void *arg, const char *name, const char *why);

/* Cancels a catch-up in progress and stops raft; done once both are over. */
void ud_writer_raft_end(struct ud_writer *w, void (*done)(struct ud_writer *w));
/* While this node catches up out of band (raft not running): a line saying what it does, for
 * /readyz and the status pages; NULL otherwise. */
const char *ud_writer_catching_up(struct ud_writer *w);
/* For a namespace not registered here: the raft index of its delete when this node knows it was
 * deleted (its raft tombstone, ud_fsm_ns_deleted), which its 404s then say to relayers
 * (x-unison-ns-deleted, -deleted-at). 0 while catching up out of band: namespaces are being
 * replaced one by one, nothing is known for sure. */
uint64_t ud_writer_ns_deleted(struct ud_writer *w, const char *name);

/* Raft state for /status/leader, /readyz and INFO: 1 when this node leads. */
int ud_writer_is_leader(struct ud_writer *w);

#endif
