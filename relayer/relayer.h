/*
 * The unison-relayer process: one libuv loop runs the followers (one per namespace, each tailing
 * an upstream's WAL stream through the HTTP client), the HTTP and RESP front ends and namespace
 * discovery; each follower applies records on its own thread (relayer/apply.c). main.c starts
 * and stops the parts; they reach each other through struct ud_relayer.
 */
#ifndef UD_RELAYER_RELAYER_H
#define UD_RELAYER_RELAYER_H

#include <pthread.h>
#include <stdint.h>
#include <uv.h>

#include "core/http/json.h"
#include "core/registry.h"
#include "proto/stream.h"
#include "relayer/config.h"

struct ud_http_client;
struct ud_http_server;
struct ud_http_transfer;
struct ud_resp_server;
struct ud_follower;
struct ud_resp_call;
struct resp_fwd;

struct ud_relayer {
    uv_loop_t *loop;
    struct ud_relayer_config *config;
    struct ud_registry *registry; /* every namespace this relayer holds */
    char ns_root[1100];           /* the registry's root directory */
    struct ud_http_client *client;
    struct ud_http_server *http;
    struct ud_resp_server *resp;
    struct ud_follower **followers; /* one per followed namespace, in creation order */
    size_t nfollowers, cap_followers;
    uv_timer_t discover_timer; /* GET /api/v1 on the default upstreams */
    struct ud_http_transfer *discover_xfer;
    size_t discover_upstream; /* which default upstream the next discovery asks */
    char discover_error[256]; /* why the last namespace list could not be read; "" when it was */
    int http_port, https_port, resp_port;
    int stopping;
    struct resp_fwd *resp_forwards; /* RESP writes waiting for the upstream (resp_forward.c) */
};

/* --- followers (relayer/follower.c) ----------------------------------------------------------
 *
 * A follower keeps one namespace in step with an upstream:
 *
 *   CONNECTING --200--------------------------------------> STREAMING
 *        |  \--410 or no local namespace--> BOOTSTRAPPING --snapshot installed, caught up--^
 *        |                                       |
 *        +--error, 404, bad frame, no heartbeat--+--> BACKOFF --timer--> CONNECTING
 *   (any state) --stop--> STOPPED
 *
 * BACKOFF waits 100 ms doubling to 5 s (each with up to 50 % jitter) per consecutive failure and
 * moves to the next upstream of the list; the stream resumes at the namespace's last LSN + 1.
 */
enum ud_follower_state {
    UD_FOLLOWER_CONNECTING = 0,
    UD_FOLLOWER_BOOTSTRAPPING,
    UD_FOLLOWER_STREAMING,
    UD_FOLLOWER_BACKOFF,
    UD_FOLLOWER_STOPPED,
};

const char *ud_follower_state_name(enum ud_follower_state s);

/* Creates and starts the follower of namespace ns with its upstream list (copied). Returns 0,
 * UD_ENOMEM, UD_EEXIST (already followed). */
int ud_relayer_follow(struct ud_relayer *r, const char *ns, char *const *upstreams, size_t n,
                      char *errmsg);
/* The follower of ns, or NULL. */
struct ud_follower *ud_relayer_follower(struct ud_relayer *r, const char *ns);
/* Stops every follower (transfers cancelled, apply threads joined); done is called once all are
 * stopped (from the loop). */
void ud_relayer_followers_stop(struct ud_relayer *r, void (*done)(struct ud_relayer *r));
/* Frees the stopped followers. */
void ud_relayer_followers_free(struct ud_relayer *r);

/* The upstream a follower currently uses (for 403 / READONLY messages); "" when unknown. */
const char *ud_follower_upstream(const struct ud_follower *f);
/* When the follower deleted its copy because its upstream said the namespace was deleted: the
 * delete's raft index as told (UD_DELETED_AT_UNKNOWN when not told); 0 otherwise (read by
 * downstream relayers from this relayer's 404s, x-unison-ns-deleted and -deleted-at). */
uint64_t ud_follower_upstream_deleted(const struct ud_follower *f);
/* The upstream serving namespace ns (its follower's current one, else the first default). */
const char *ud_relayer_upstream_for(struct ud_relayer *r, const char *ns);
/* Appends {"namespace":..,"state":..,...} for /status/upstream. */
void ud_follower_status_json(struct ud_follower *f, struct ud_jbuf *out);
/* Appends Prometheus lines (labelled by namespace) for /metrics. */
void ud_relayer_followers_metrics(struct ud_relayer *r, struct ud_jbuf *out);
/* 1 when every follower is STREAMING. */
int ud_relayer_followers_ready(struct ud_relayer *r, char *why, size_t size);

/* --- namespace discovery (relayer/discover.c) ------------------------------------------------ */

/* Starts following the configured namespaces and, when no list is configured, discovers the
 * default upstreams' namespaces every discover_interval_ms. */
int ud_relayer_discover_start(struct ud_relayer *r, char *errmsg);
void ud_relayer_discover_stop(struct ud_relayer *r);

/* --- front ends (relayer/http.c, relayer/resp.c) --------------------------------------------- */

int ud_relayer_http_start(struct ud_relayer *r, char *errmsg);
void ud_relayer_http_stop(struct ud_relayer *r, void (*done)(struct ud_relayer *r));
int ud_relayer_resp_start(struct ud_relayer *r, char *errmsg);
void ud_relayer_resp_stop(struct ud_relayer *r, void (*done)(struct ud_relayer *r));

/* --- RESP writes forwarded upstream (relayer/resp_forward.c) --------------------------------- */

/* The RESP write commands' submit hook with [relayer] forward_writes: sends the records to the
 * session namespace's upstream and answers with its outcome once they are applied here. */
void ud_relayer_resp_submit(struct ud_resp_call *c, uint8_t **records, size_t *lens, size_t n,
                            long long count);
/* Answers every forwarded write still waiting with an error (the relayer is stopping). */
void ud_relayer_resp_forwards_cancel(struct ud_relayer *r);

#endif
