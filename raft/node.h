/*
 * A writer's raft node: its data directory, cluster identity, TCP transport, bootstrap and
 * lifecycle, and the one way to propose an entry (ARCHITECTURE.md section 9, docs/raft.md).
 * Callers never see <raft.h>: codes are translated to UD_E* here.
 *
 * Lifecycle (one transition function asserts these moves):
 *
 *   INIT --start ok--> RUNNING --stop--> CLOSING --raft closed--> CLOSED (freed)
 *     \--start failed after raft_init--> CLOSING (the loop finishes the close)
 *
 * Loop thread only.
 */
#ifndef UD_RAFT_NODE_H
#define UD_RAFT_NODE_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core/registry.h"
#include "raft/fsm.h"
#include "writer/config.h"

struct ud_raft_node;

struct ud_raft_node_options {
    uv_loop_t *loop;
    struct ud_registry *registry; /* borrowed; outlives the node */
    const char *data_dir; /* raft keeps {data_dir}/raft; identity in {data_dir}/cluster-id */
    const char *cluster_id;
    uint64_t node_id;                 /* >= 1 */
    const char *listen;               /* numeric "ip:port" to bind; port 0 = any free port */
    const char *advertise;            /* "" or NULL: the bound listen address */
    const struct ud_raft_peer *peers; /* voters of the initial configuration; 0 = just this node */
    unsigned npeers;
    uint32_t election_timeout_ms;  /* 0: raft's default */
    uint32_t heartbeat_timeout_ms; /* 0: raft's default */
    uint32_t snapshot_threshold;   /* 0: raft's default (entries only, then) */
    uint32_t snapshot_trailing;    /* entries; with snapshot_threshold */
    uint64_t snapshot_bytes;       /* 0: no byte budget (ud_fsm_set_snapshot_policy) */
    uint64_t snapshot_trailing_bytes;
    int join; /* do not bootstrap: wait to be added to a running cluster (admin API) */
    /* Out-of-band catch-up (docs/raft.md): called from the node's watch timer, never inside a
     * raft callback, once a snapshot from the leader failed to restore because the namespaces
     * are behind it (ud_raft_node_take_behind gives the plan). NULL: only logged. */
    void (*on_behind)(void *arg);
    void *behind_arg;
    /* A start that fails with UD_ERANGE (raft's own snapshot is ahead of the namespaces) moves
     * the catch-up plan here (may be NULL); once that failed node has closed (its raft port is
     * free again), closed(closed_arg) is called from the loop (may be NULL). */
    struct ud_catchup_plan *behind;
    /* Namespaces a catch-up found deleted on the peers since the snapshot (may be NULL): see
     * ud_fsm_waive. */
    const struct ud_catchup_plan *waived;
    void (*closed)(void *arg);
    void *closed_arg;
};

/*
 * Creates {data_dir}/raft, checks or records the cluster id, binds the raft port, initializes raft
 * with the FSM over the registry, bootstraps the configured voters (or just this node) on a new
 * data directory, and starts raft (which replays its log into the FSM).
 * Returns 0 and *out, or:
 *   UD_EINVAL   bad options; this node's id is not among the peers; the data directory belongs to
 *               another cluster (errmsg names both ids and the file);
 *   UD_EIO, UD_ENOSPC, UD_ENOMEM, UD_ECORRUPT  from the file system or raft (errmsg says which);
 *   UD_ERANGE   raft's snapshot is ahead of this node's namespaces (see ud_fsm_restore).
 * On failure after raft was initialized, closing finishes when the loop runs.
 */
int ud_raft_node_start(const struct ud_raft_node_options *o, struct ud_raft_node **out,
                       char *errmsg);

/* Moves the catch-up plan of a failed restore into *plan, with the HTTP URLs of the other
 * members in the FSM's directory added; 1 when there was one, else 0. */
int ud_raft_node_take_behind(struct ud_raft_node *n, struct ud_catchup_plan *plan);

/* Refuses new proposals, lets those in flight finish (at most 5 s: raft 0.15 crashes when it is
 * closed with log writes in flight), closes raft (proposals still pending are answered with
 * UD_ECLOSED), then calls done(arg) from the loop and frees the node. */
void ud_raft_node_stop(struct ud_raft_node *n, void (*done)(void *arg), void *arg);

/* Bound raft port and the address this node advertises (owned by the node). */
int ud_raft_node_port(const struct ud_raft_node *n);
const char *ud_raft_node_address(const struct ud_raft_node *n);

/* 1 when raft says this node leads (proposals are accepted). */
int ud_raft_node_is_leader(struct ud_raft_node *n);
/* 1 when this node leads and its leadership barrier has been applied: every entry committed by
 * earlier leaders is applied here (for /readyz and linearizable reads). */
int ud_raft_node_leader_ready(struct ud_raft_node *n);
/* Raft connections accepted / connected with TCP_NODELAY set, and accepted ones read through
 * raft/recv_batch.h (see raft/transport.h). */
void ud_raft_node_transport_counts(const struct ud_raft_node *n, unsigned *accepted,
                                   unsigned *connected, unsigned *batched);
/* The current leader as known here: *id 0 and *address NULL when none. */
void ud_raft_node_leader(struct ud_raft_node *n, uint64_t *id, const char **address);
uint64_t ud_raft_node_last_applied(struct ud_raft_node *n);
/* raft's current term here: a node that leads in the same term at two moments led throughout. */
uint64_t ud_raft_node_term(struct ud_raft_node *n);
struct ud_fsm *ud_raft_node_fsm(struct ud_raft_node *n);

/* Buffers for proposals come from raft's allocator. */
void *ud_raft_buf_alloc(size_t len);
void ud_raft_buf_free(void *buf);

/*
 * Called once per proposal, on the loop thread. status 0: the entry was committed and applied on
 * this node, res describes it (borrowed for the call). Otherwise res is NULL and status is
 * UD_EINDOUBT: raft took the entry but it may or may not be applied (leadership lost, shutting
 * down, the leader's log write failed: a new leader may still commit it; or a storage failure
 * kept the committed entry from being applied here before the node stopped: it is applied when
 * the writer starts again); errmsg (borrowed) begins with ud_strerror(UD_EINDOUBT) and says why.
 * A refusal before raft took the entry is ud_raft_node_propose's return value, never this.
 */
typedef void (*ud_raft_propose_cb)(void *arg, int status, const struct ud_fsm_result *res,
                                   const char *errmsg);

/*
 * Proposes one raft entry holding buf[0..len) (from ud_raft_buf_alloc; transferred on success,
 * kept by the caller on failure). cb is called later, never from inside this call.
 * Returns 0, UD_ECLOSED (not the leader or not running), UD_ELIMIT, UD_ENOMEM.
 * If the leader's own log write of the entry, started after the entry was sent to the followers,
 * cannot start, the process exits at once with UD_EXIT_RAFT_LOG_WRITE (node.c,
 * submit_held_append): a later leader may still apply the entry.
 */
int ud_raft_node_propose(struct ud_raft_node *n, void *buf, size_t len, ud_raft_propose_cb cb,
                         void *arg, char *errmsg);

/* Exit status of a process whose raft leader's log write could not start (docs/configuration.md).
 */
#define UD_EXIT_RAFT_LOG_WRITE 3

/*
 * Test hook (every node of the process): the next `count` starts of a leader's log write held
 * during a proposal (node.c, append_after_sends) fail as raft's storage fails one it cannot
 * allocate for (RAFT_NOMEM), so the process exits. 0, the default: none.
 */
void ud_raft_node_fail_held_appends(unsigned count);

/* Proposals whose callback has not fired yet. */
unsigned ud_raft_node_inflight(const struct ud_raft_node *n);

/* --- cluster operations (docs/raft.md "Membership", "Linearizable reads") --------------------- */

uint64_t ud_raft_node_id(const struct ud_raft_node *n);
uint64_t ud_raft_node_last_index(struct ud_raft_node *n);
/* The oldest raft index still in this node's log (last index + 1 when it holds none). As leader
 * it sends a follower entries only if the follower's last index is at least this minus one;
 * below that, its snapshot. */
uint64_t ud_raft_node_first_index(struct ud_raft_node *n);
/* The last raft index covered by this node's newest completed snapshot (0 when none). */
uint64_t ud_raft_node_snapshot_index(struct ud_raft_node *n);
/* Every entry up to this raft index is applied here (the FSM's apply thread included). */
uint64_t ud_raft_node_applied_index(struct ud_raft_node *n);
/* "leader", "candidate", "follower" or "unavailable" (raft's view of this node). */
const char *ud_raft_node_state_name(struct ud_raft_node *n);

enum ud_raft_role {
    UD_RAFT_VOTER = 0,
    UD_RAFT_STANDBY = 1, /* replicates the log, does not vote */
    UD_RAFT_SPARE = 2,   /* in the configuration only */
};
const char *ud_raft_role_name(enum ud_raft_role role);

struct ud_raft_member {
    uint64_t id;
    char address[128];
    enum ud_raft_role role;
};
/* The configuration raft uses now (the last one appended, committed or not): up to max members
 * into out; returns how many there are. */
unsigned ud_raft_node_members(struct ud_raft_node *n, struct ud_raft_member *out, unsigned max);

/* Called once per operation below, on the loop: status 0, or UD_ECLOSED (not the leader, or
 * leadership lost), UD_EINVAL, UD_ENOTFOUND, UD_EBUSY (another change is in progress), UD_EIO;
 * errmsg (borrowed) says why. */
typedef void (*ud_raft_op_cb)(void *arg, int status, const char *errmsg);

/*
 * raft_barrier: status 0 once an entry of this leader's term is committed and applied here,
 * which proves that this node still led when the barrier was appended and that every entry
 * committed before it is applied here (a linearizable read may then use local state). A deposed
 * leader's barrier fails (UD_ECLOSED). Returns 0 (cb later) or an error (cb never called).
 */
int ud_raft_node_barrier(struct ud_raft_node *n, ud_raft_op_cb cb, void *arg, char *errmsg);
/* Membership changes, on the leader: add a server (as a spare: it joins with no role), assign
 * it a role (promotion to voter waits until it has caught up), remove one. Same contract. */
int ud_raft_node_add(struct ud_raft_node *n, uint64_t id, const char *address, ud_raft_op_cb cb,
                     void *arg, char *errmsg);
int ud_raft_node_assign(struct ud_raft_node *n, uint64_t id, enum ud_raft_role role,
                        ud_raft_op_cb cb, void *arg, char *errmsg);
int ud_raft_node_remove(struct ud_raft_node *n, uint64_t id, ud_raft_op_cb cb, void *arg,
                        char *errmsg);
/* Hands leadership to voter id (0: raft picks one). cb's status is 0 when another node leads
 * afterwards, UD_ETIMEDOUT when this one still does. */
int ud_raft_node_transfer(struct ud_raft_node *n, uint64_t id, ud_raft_op_cb cb, void *arg,
                          char *errmsg);

#endif
