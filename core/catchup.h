/*
 * Out-of-band catch-up of a writer's namespaces from a peer writer over HTTP (docs/raft.md
 * "Out-of-band catch-up"): the same snapshot and WAL stream endpoints relayers use
 * (docs/replication.md), applied byte for byte, so the caught-up WAL is identical to the peer's at
 * every LSN.
 *
 * A plan names the namespaces and the LSN each must reach, and the peers' HTTP base URLs. A
 * catch-up runs the plan on a thread of its own, with its own libuv loop and HTTP client, so the
 * caller's loop keeps serving reads meanwhile; it tries the peers in turn with a backoff until
 * every target is reached or it is cancelled, then calls done on the caller's loop.
 */
#ifndef UD_CORE_CATCHUP_H
#define UD_CORE_CATCHUP_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core/registry.h"

#define UD_CATCHUP_URL_MAX 160

struct ud_catchup_target {
    char ns[UD_NS_NAME_MAX + 1];
    uint64_t lsn; /* at least this LSN; 0: whatever the peer holds when the catch-up starts */
    /* Set by the catch-up: a peer that runs raft and has applied at least snapshot_index does not
     * have the namespace (deleted since). Nothing is fetched; the restore of that snapshot may
     * skip it (ud_fsm_waive). */
    int gone;
    /* The local copy is another namespace of that name (deleted and created again while this
     * node was away): it gives way to a peer's snapshot, whatever LSN it holds. */
    int replace;
};

struct ud_catchup_plan {
    uint64_t snapshot_index; /* raft index of the snapshot the targets come from; 0: none */
    struct ud_catchup_target *targets;
    size_t ntargets;
    char (*peers)[UD_CATCHUP_URL_MAX]; /* "http://127.0.0.1:4002", tried in this order */
    size_t npeers;
    /* For a plan without targets only (ud_catchup_start): done comes after this long, a backoff
     * between rounds (the leader's snapshot does not decode here). 0: at once. */
    unsigned wait_ms;
};

/* Adds a target, or raises the LSN of the namespace's target. 0 or UD_ENOMEM. */
int ud_catchup_plan_target(struct ud_catchup_plan *p, const char *ns, uint64_t lsn);
/* The same, and the local copy is to be replaced (see replace). 0 or UD_ENOMEM. */
int ud_catchup_plan_replace(struct ud_catchup_plan *p, const char *ns, uint64_t lsn);
/* Adds a peer URL unless it is empty or already listed. 0 or UD_ENOMEM. */
int ud_catchup_plan_peer(struct ud_catchup_plan *p, const char *url);
/* Frees the arrays and leaves an empty plan. */
void ud_catchup_plan_free(struct ud_catchup_plan *p);

struct ud_catchup_options {
    uv_loop_t *loop; /* the caller's: done is called from it */
    struct ud_registry *registry;
    const char *ns_root; /* the registry's root: download and work directories go there */
    const struct ud_engine_options *engine; /* copied: segment size, sync mode of bootstraps */
    /* The end: rc 0 (every target reached, each namespace's WAL fsynced, or found gone: plan
     * says which), UD_ECLOSED (cancelled), UD_ENOTFOUND (no peer to ask), or a local storage
     * failure (UD_EIO, UD_ENOSPC, UD_ENOMEM) with errmsg naming the namespace. */
    void (*done)(void *arg, int rc, const char *errmsg, const struct ud_catchup_plan *plan);
    void *arg;
    /* Optional, from the catch-up's thread: what the caller keeps about the namespace outside
     * its store (raft's create marker) is made to agree with a peer's store installed in place
     * of the local one. Called with incarnation 0 (forget it, durably) before each install, and
     * after one with the installed store's incarnation when it has one: a crash between leaves
     * nothing about another namespace of the name. Returns 0, or a local failure (UD_EIO,
     * UD_ENOSPC: errmsg says what) that ends the catch-up. */
    int (*installed)(void *arg, const char *ns, uint64_t incarnation, char *errmsg);
};

struct ud_catchup;

/* Starts the thread; the plan is moved into the catch-up (*plan is left empty). A plan without
 * targets starts no thread (nor its loop and HTTP client) and asks no peer: done follows from the
 * caller's loop with rc 0 (after plan->wait_ms, on a timer of that loop; UD_ECLOSED when cancelled
 * meanwhile). Returns 0, UD_ENOMEM or UD_EIO (thread, loop or HTTP client could not
 * be created). */
int ud_catchup_start(const struct ud_catchup_options *o, struct ud_catchup_plan *plan,
                     struct ud_catchup **out, char *errmsg);

/* Asks the thread to stop (the transfer in progress is cut), or ends a plan's wait; done is still
 * called, with UD_ECLOSED unless it had finished. From the caller's loop thread. The catch-up is
 * freed after done returns. */
void ud_catchup_cancel(struct ud_catchup *c);

/* What it is doing, for status pages: "namespace a from http://...: LSN 10 of 250". Thread-safe. */
void ud_catchup_progress(struct ud_catchup *c, char *out, size_t size);

#endif
