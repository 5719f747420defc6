/*
 * The writer as a member of a raft cluster (ARCHITECTURE.md section 9, docs/raft.md "Clients and
 * the cluster"): followers forward writes to the leader over HTTP (or answer 307 / -MOVED when
 * [raft] forward = false), wait for a leader during an election, and answer a forwarded write
 * only once they applied it themselves; ?consistency=linearizable reads go through the leader
 * after a raft barrier; the cluster status and membership admin API; the member directory
 * announcement. Implemented by writer/cluster.c (forwarding and reads) and
 * writer/cluster_admin.c (status, membership, the internal endpoints).
 *
 * Loop thread only.
 */
#ifndef UD_WRITER_CLUSTER_H
#define UD_WRITER_CLUSTER_H

#include <stddef.h>
#include <stdint.h>

#include "core/http/http.h"
#include "writer/submit.h"

struct ud_writer;
struct ud_cluster;
struct ud_http_result;
struct ud_raft_member;

/* Header a follower sets on a request it forwards (value: its node id). A node that receives
 * one never forwards it again: when it does not lead it answers 503 with UD_CLUSTER_NOT_LEADER,
 * and the follower tries again once a leader is known. */
#define UD_CLUSTER_FORWARDED  "unison-forwarded"
#define UD_CLUSTER_NOT_LEADER "unison-not-leader"
/* Response header on forwarded requests: the raft index applied on the answering node when it
 * answered. The follower answers its client once it has applied that index too. */
#define UD_CLUSTER_APPLIED "unison-applied-index"
/* The UD_E* code of a failed internal records write. */
#define UD_CLUSTER_CODE "unison-code"

/* Creates the cluster part (HTTP client, timers) before the HTTP server starts.
 * Returns 0, UD_ENOMEM or UD_EIO (errmsg says why). */
int ud_writer_cluster_init(struct ud_writer *w, char *errmsg);
/* After raft has closed: cancels what is left and frees the part once its handles closed. */
void ud_writer_cluster_close(struct ud_writer *w);

/* struct ud_http_node hooks of the writer (arg: the writer). */
int ud_cluster_intercept(void *arg, struct ud_http_req *r);
void ud_cluster_on_reply(void *arg, struct ud_http_req *r);

/* The status, admin and internal routes (writer/cluster_admin.c). 0 or UD_ELIMIT. */
int ud_cluster_add_routes(struct ud_http_server *srv, struct ud_writer *w);

/*
 * The submit seam on a follower (writer/submit.c calls it for RECORDS requests): forwards the
 * records to the leader's internal endpoint, or answers UD_ECLOSED naming the leader when
 * forwarding is off (errmsg "MOVED 0 host:port" when the leader's RESP address is known). The
 * callback contract is ud_submit's: one call, later, with one LSN per record once this node has
 * applied them. records[i] (malloc'd) are transferred; key may be NULL, digest (of the keyed
 * request, UD_COMMAND_DIGEST_SIZE bytes) too.
 */
void ud_cluster_forward_records(struct ud_writer *w, const char *ns, const uint8_t *key,
                                size_t key_len, const uint8_t *digest, uint8_t **records,
                                const size_t *lens, size_t n, ud_submit_cb cb, void *arg);

/*
 * Read index for RESP's BARRIER (docs/resp.md): cb(arg, 0, "") once this node has applied every
 * entry the leader had committed when the leader's raft barrier (appended after this call)
 * committed; later reads here then see every write acknowledged before the call, on any writer.
 * Fails with UD_ECLOSED and a message when no leader confirms within [raft] leader_wait_ms.
 * cb is called once, later, never inside this call.
 */
typedef void (*ud_cluster_barrier_cb)(void *arg, int status, const char *errmsg);
void ud_cluster_barrier(struct ud_writer *w, ud_cluster_barrier_cb cb, void *arg);

/* The HTTP base URL and RESP address of writer id as known here ("" when not): the member
 * directory first, then [raft] peers, then this node's own listeners. */
void ud_cluster_member_addresses(struct ud_writer *w, uint64_t id, char *http, size_t http_size,
                                 char *resp, size_t resp_size);

/* Members read from a raft configuration at a time (peers start at most 7; the admin API adds). */
#define UD_CLUSTER_MAX_MEMBERS 64

/* Writer id's entry in this node's raft configuration into *out (may be NULL): 1, 0 when it is no
 * member, -1 when there is no configuration to look in (raft not running, not joined yet). */
int ud_cluster_member_of(struct ud_writer *w, uint64_t id, struct ud_raft_member *out);

/* GET {http}/status/node with the cluster's HTTP client, within timeout_ms, keeping up to
 * body_max bytes: on_done(arg, res) later, once; or UD_E* and errmsg when it cannot start. */
int ud_cluster_fetch_node_status(struct ud_writer *w, const char *http, uint32_t timeout_ms,
                                 size_t body_max,
                                 void (*on_done)(void *arg, const struct ud_http_result *res),
                                 void *arg, char *errmsg);

/*
 * Before writer id joins the configuration: asks it (GET {http}/status/node) whether it is that
 * writer, of this cluster, and holds no other cluster's raft log (writer/cluster_candidate.c).
 * cb(arg, 0, NULL) when it may join, or could not be asked (then it is added unchecked, as a
 * writer added before it starts is); UD_ECONFLICT and the reason when not; UD_ECLOSED when this
 * writer stops meanwhile.
 */
typedef void (*ud_cluster_candidate_cb)(void *arg, int status, const char *why);
void ud_cluster_check_candidate(struct ud_writer *w, uint64_t id, const char *http,
                                ud_cluster_candidate_cb cb, void *arg);

/* internal, shared by cluster.c and cluster_admin.c: fn(arg) run from the loop on its next
 * iteration (never inside the caller, so never inside raft's callbacks, from which raft 0.15 must
 * not be entered again). */
void ud_cluster_defer(struct ud_writer *w, void (*fn)(void *arg), void *arg);
/* Parses a "lsn" or other unsigned member out of a small JSON object: 1 found, 0 not. */
int ud_cluster_json_u64(const uint8_t *body, size_t len, const char *name, uint64_t *out);
/* Copies the "error" string member of a JSON object (unescaped, truncated): 1 found, 0 not. */
int ud_cluster_json_error(const uint8_t *body, size_t len, char *out, size_t size);

#endif
