/*
 * The HTTP front end shared by the serving binaries: h2o listeners on the process's libuv loop
 * (HTTP/1.1 and h2c prior knowledge on the plain port, ALPN h2/http1.1 on the TLS port when a
 * certificate is configured), a router over the raw request path, the body limit, request
 * metrics, ?min_lsn= waits, and the read API (kv, rows, LOB streams, scans, offsets, stats,
 * checkpoints, namespaces, health and metrics). Write routes are added by the binary.
 *
 * This header has no h2o types: handlers see a struct ud_http_req through the accessors below and
 * answer it with exactly one ud_http_reply* call, now or later (asynchronously) on the loop thread.
 *
 * Loop thread only, unless stated otherwise.
 */
#ifndef UD_CORE_HTTP_HTTP_H
#define UD_CORE_HTTP_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core/http/json.h"
#include "core/registry.h"

/* The body limit (inclusive) and h2o's own limit above it (ARCHITECTURE.md section 4): bodies
 * up to h2o's limit reach us and get our JSON 413; larger ones are refused by h2o itself (a
 * plain-text 413 on HTTP/1.1, RST_STREAM(REFUSED_STREAM) on HTTP/2). h2o's limit is
 * ud_http_h2o_limit(max_body): 4 MiB, or max_body + 1 MiB when that is more. */
#define UD_HTTP_DEFAULT_MAX_BODY 1048576u
#define UD_HTTP_H2O_MAX_BODY     (4u << 20)

enum ud_http_method {
    UD_HTTP_GET = 1u,
    UD_HTTP_PUT = 2u,
    UD_HTTP_POST = 4u,
    UD_HTTP_DELETE = 8u,
    UD_HTTP_HEAD = 16u,
    UD_HTTP_OTHER = 32u,
};

struct ud_http_server;
struct ud_http_req;

typedef void (*ud_http_handler)(struct ud_http_req *req, void *arg);

/* Route flags. */
#define UD_HTTP_ROUTE_NS                                                                           \
    1u                           /* {ns} must name an existing namespace (else 404), acquired for  \
                                    the handler's synchronous part: ud_http_req_ns */
#define UD_HTTP_ROUTE_MIN_LSN 2u /* ?min_lsn=N waits (bounded) until {ns} applied LSN N */
#define UD_HTTP_ROUTE_KEY     4u /* {key} is percent-decoded into ud_http_req_key; empty -> 400 */
#define UD_HTTP_ROUTE_ACKS                                                                         \
    8u /* a write: ?acks=isr makes its success reply wait for followers (docs/replication.md); the \
          handler reports the LSN written with ud_http_req_wrote */
#define UD_HTTP_ROUTE_WRITE 16u /* commits through raft: node.intercept may forward it */
/* A GET route serves HEAD too (as GET without the body, RFC 9110 section 9.3.2): handlers that
 * reply with ud_http_reply* need nothing for that, since h2o leaves the body out of an answer to
 * HEAD. Routes that stream their answer themselves either answer HEAD with ud_http_reply_head or
 * set this flag, which leaves HEAD out of the route (405). */
#define UD_HTTP_ROUTE_NO_HEAD 32u
/* The handler evaluates If-Match (or passes it on to a server that does: a relayer forwarding a
 * write to its upstream). On any other PUT, POST or DELETE route an If-Match is a 400, as
 * are If-None-Match and If-Unmodified-Since on every one: a client that sends a precondition counts
 * on the write happening only if it holds (RFC 9110 section 13.1), so it is refused, not ignored.
 */
#define UD_HTTP_ROUTE_IF_MATCH 64u
/* A write whose handler reads no state that earlier raft entries change (leadership transfer,
 * membership, records a follower forwards): a new leader runs it at once instead of holding it
 * until it has applied earlier leaders' entries (writer/cluster.c). */
#define UD_HTTP_ROUTE_BLIND_WRITE 128u
/* The handler honours Idempotency-Key (a retry under it is answered with the first attempt's
 * outcome), or passes it on to a server that does. On any other PUT, POST or DELETE route the
 * header is a 400, as If-Match is: a client that sends a key counts on a retry being safe, and a
 * follower forwarding a keyed write lets curl re-send it (writer/cluster.c). */
#define UD_HTTP_ROUTE_IDEMPOTENCY_KEY 256u

struct ud_http_route {
    const char *name;    /* metrics label, e.g. "kv_get" (static string) */
    unsigned methods;    /* UD_HTTP_* bits */
    const char *pattern; /* see ud_http_route_match (core/http/path.h); static string */
    unsigned flags;
    ud_http_handler fn;
    void *arg;
};

/* Node state reported by /readyz, /status/leader and /metrics. Any callback may be NULL. */
struct ud_http_node {
    /* 1 when this node accepts writes (the raft leader), else 0. */
    int (*is_leader)(void *arg);
    /* 1 when ready to serve; else 0 and a reason in why (size bytes). */
    int (*ready)(void *arg, char *why, size_t size);
    /* Appends JSON members (",\"name\":value" each) to the /status/leader object. */
    void (*leader_json)(void *arg, struct ud_jbuf *out);
    /* Appends Prometheus text lines to /metrics. */
    void (*metrics)(void *arg, struct ud_jbuf *out);
    /* Called for every request that matched a route (after the body limit, before {ns} and {key}
     * are decoded): 0 runs the route here and now; 1 means the callback took r over and answers
     * it, or later calls ud_http_req_resume(r) to run the route after all. */
    int (*intercept)(void *arg, struct ud_http_req *r);
    /* Called right before each reply is sent, to add headers with ud_http_set_header. */
    void (*on_reply)(void *arg, struct ud_http_req *r);
    /* A request header the node asks about for every request (ud_http_req_marked): looked up once
     * as the request arrives, while its headers are in the cache; at the reply, hundreds of
     * requests later under load, the lookup missed the cache (1-2 % of the leader's loop). A
     * lowercase name in static storage (not copied), or NULL. */
    const char *mark_header;
    /* Nonzero when namespace name is known to be deleted here, not merely absent: a writer that
     * applied its delete (and no create since), a relayer that dropped its copy because its
     * upstream said so. The value is the delete's raft index (UINT64_MAX: not known). Its 404
     * "namespace not found" answers then carry `x-unison-ns-deleted: 1` and
     * `x-unison-ns-deleted-at: INDEX`, the only 404 on which a relayer drops its copy, and only a
     * copy created before INDEX (docs/relayer.md "Limits"). */
    uint64_t (*ns_deleted)(void *arg, const char *name);
    void *arg;
};

struct ud_http_options {
    const char *listen;     /* "host:port" (port 0 = any); required */
    const char *tls_listen; /* used when tls_cert is set */
    const char *tls_cert;   /* PEM chain; NULL or "" = no TLS listener */
    const char *tls_key;
    size_t max_body;              /* inclusive; 0 = UD_HTTP_DEFAULT_MAX_BODY; at most 64 MiB */
    uint32_t min_lsn_timeout_ms;  /* longest ?min_lsn= wait; 0 = 5000 */
    uint64_t wal_segment_size;    /* for the WAL bytes metric; 0 = UD_WAL_DEFAULT_SEGMENT_SIZE */
    struct ud_registry *registry; /* borrowed for the server's lifetime */
    struct ud_http_node node;
};

/*
 * Creates a server on loop (nothing is bound yet). opts strings are copied.
 * Returns 0, UD_EINVAL (bad address, unreadable certificate or key; errmsg says which).
 */
int ud_http_server_new(uv_loop_t *loop, const struct ud_http_options *opts,
                       struct ud_http_server **out, char *errmsg);

/* Which TLS file a certificate problem is about (ud_http_tls_check's *bad_part). */
#define UD_HTTP_TLS_CERT 1
#define UD_HTTP_TLS_KEY  2

/*
 * Loads the PEM certificate chain cert and private key key as the TLS listener would, and frees
 * them again: configuration checks call it before anything else starts. Returns 0, or UD_EINVAL
 * with *bad_part set to UD_HTTP_TLS_CERT or UD_HTTP_TLS_KEY and errmsg saying what is wrong with
 * that file ("k.pem: No such file or directory", "k.pem does not match the certificate in c.pem",
 * "c.pem: no PEM certificate chain could be read (...)"), or UD_ENOMEM (*bad_part 0).
 */
int ud_http_tls_check(const char *cert, const char *key, int *bad_part, char *errmsg);

/* Adds a route (before listen). Routes are tried in the order added; the first whose pattern and
 * method match wins; a path that matches only with other methods gets 405. 0 or UD_ELIMIT. */
int ud_http_server_add_route(struct ud_http_server *s, const struct ud_http_route *r);

/* Adds the read API and the status endpoints (docs/http-api.md). */
int ud_http_register_reads(struct ud_http_server *s);

/* Replication settings ([replication] in the configuration, docs/configuration.md). */
struct ud_http_repl_options {
    uint32_t min_isr;             /* acks=isr: followers that must apply a write; 0 = 1 */
    uint64_t isr_max_lag_ms;      /* ISR bound on lag and last-ack age; 0 = 5000 */
    uint64_t isr_max_lag_records; /* ISR bound in records; 0 = none */
    uint64_t follower_timeout_ms; /* silent followers are forgotten after; 0 = 30000 */
    uint64_t ack_timeout_ms;      /* acks=isr wait before 503; 0 = 5000 */
    uint64_t stream_batch_bytes;  /* WAL bytes per records frame; 0 = 1 MiB */
    uint32_t heartbeat_ms;        /* idle time before a heartbeat frame; 0 = 1000 */
    int retain_for_isr;           /* WAL retention keeps what ISR followers have not applied */
};

/*
 * Adds the replication endpoints served by writers and relayers alike (docs/replication.md):
 * GET /api/v1/{ns}/wal/stream, GET /api/v1/{ns}/snapshot, POST /api/v1/{ns}/wal/ack and
 * GET /status/replicas, plus their /metrics lines. Once per server, before listen.
 * Returns 0, UD_ELIMIT (routes), UD_EINVAL (called twice), UD_ENOMEM.
 */
int ud_http_register_replication(struct ud_http_server *s, const struct ud_http_repl_options *o);

/* The lowest LSN applied anywhere in this node's subtree for ns: min(own, each follower's applied
 * and reported subtree_min LSN) over the followers that acknowledged here and are not forgotten.
 * A relayer reports it upstream as its own subtree_min_lsn. s may be NULL (own is returned). */
uint64_t ud_http_subtree_min_lsn(struct ud_http_server *s, const char *ns, uint64_t own);

/* Binds and listens; *port and *tls_port (may be NULL; 0 without TLS) get the bound ports.
 * Returns 0 or UD_EIO (errmsg names the address and the error). */
int ud_http_server_listen(struct ud_http_server *s, int *port, int *tls_port, char *errmsg);

/*
 * Graceful stop: closes the listeners, asks connections to close (HTTP/2 GOAWAY, HTTP/1.1 after
 * the current response), answers ?min_lsn= waiters with 503, lets in-flight requests and LOB
 * streams finish, then calls done(arg) (from a later loop iteration, never inside this call).
 * Connections still open 20 s later are shut down (their clients see the connection end), and
 * done comes at most 2 s after that.
 */
void ud_http_server_stop(struct ud_http_server *s, void (*done)(void *arg), void *arg);

/* Frees a server that was never started, or after its stop's done callback. NULL allowed. */
void ud_http_server_free(struct ud_http_server *s);

/*
 * A namespace delete is coming: ends this node's LOB streams of namespace ns (their clients see
 * a truncated body), releases their references, and answers new LOB downloads of ns with 503
 * until ud_http_server_ns_closed. LOB streams are the only HTTP requests that hold a namespace
 * across loop iterations, so ud_registry_delete run on the loop thread then never waits for one
 * (it would wait forever: the stream needs the loop to finish). NULL s is allowed.
 */
void ud_http_server_ns_closing(struct ud_http_server *s, const char *ns);
/* The delete of ns happened or failed: LOB downloads of that name are served again. */
void ud_http_server_ns_closed(struct ud_http_server *s, const char *ns);
/* 1 while ns is between ud_http_server_ns_closing and ud_http_server_ns_closed. */
int ud_http_server_ns_is_closing(struct ud_http_server *s, const char *ns);

uv_loop_t *ud_http_server_loop(struct ud_http_server *s);
/* One pointer for the binary's own state (borrowed; the server never touches it). */
void ud_http_server_set_app(struct ud_http_server *s, void *app);
void *ud_http_server_app(struct ud_http_server *s);
struct ud_registry *ud_http_server_registry(struct ud_http_server *s);

/* Requests being served (LOB streams included) and open connections. */
void ud_http_server_load(struct ud_http_server *s, size_t *requests, size_t *connections);

/* --- a request ---------------------------------------------------------------------------------
 * Unless stated otherwise, pointers returned here are borrowed until the reply, and body, path,
 * query and header views only during the handler's synchronous part (they live in h2o's memory).
 */

struct ud_http_server *ud_http_req_server(struct ud_http_req *r);
unsigned ud_http_req_method(const struct ud_http_req *r);
/* The namespace name of {ns} ("" when the route has none). */
const char *ud_http_req_ns_name(const struct ud_http_req *r);
/* The acquired namespace (routes with UD_HTTP_ROUTE_NS), during the synchronous part only. */
struct ud_ns *ud_http_req_ns(const struct ud_http_req *r);
/* The decoded {key} (routes with UD_HTTP_ROUTE_KEY); valid until the reply. */
const uint8_t *ud_http_req_key(const struct ud_http_req *r, size_t *len);
/* Raw (percent-encoded) route parameter: 1 found, 0 absent. */
int ud_http_req_param(const struct ud_http_req *r, const char *name, const char **raw, size_t *len);
const uint8_t *ud_http_req_body(const struct ud_http_req *r, size_t *len);
/* Raw query string without '?' (len 0 when none). */
const char *ud_http_req_query(const struct ud_http_req *r, size_t *len);
/* A request header by lowercase name: its value, or NULL. */
const char *ud_http_req_header(const struct ud_http_req *r, const char *name, size_t *len);
/* On how many lines the request gives header name (lowercase): 0 when absent. */
int ud_http_req_header_lines(const struct ud_http_req *r, const char *name);
/* The header as a malloc'd "name: value" line with its whole value, to pass on to another
 * server (forwarding), or NULL when the request has none. Aborts when out of memory. */
char *ud_http_req_header_line(const struct ud_http_req *r, const char *name);
/* 1 when the request carries the node's mark_header. */
int ud_http_req_marked(const struct ud_http_req *r);
/* 1 once the client went away (a reply then only frees the request). */
int ud_http_req_gone(const struct ud_http_req *r);
/* The request wrote a record at lsn (keeps the highest): with ?acks=isr its success reply waits
 * until min_isr followers applied it, or answers 503 naming how many did (docs/replication.md). */
void ud_http_req_wrote(struct ud_http_req *r, uint64_t lsn);
/* The matched route's flags (UD_HTTP_ROUTE_*) and name. */
unsigned ud_http_req_route_flags(const struct ud_http_req *r);
const char *ud_http_req_route_name(const struct ud_http_req *r);
/* Raw (percent-encoded) path without the query. */
const char *ud_http_req_path(const struct ud_http_req *r, size_t *len);

/*
 * Runs the route of a request that node.intercept took over: decodes {ns} and {key} (404/400 as
 * usual), honours ?min_lsn=, and calls the handler. A request whose client went away is freed.
 * Path, query, header and body views of a taken-over request stay valid until this call or the
 * reply (h2o keeps the request until it is answered).
 */
void ud_http_req_resume(struct ud_http_req *r);

/* --- replies: exactly one per request; each frees the request ----------------------------------
 */

/* Adds a response header (before the reply). name and value are copied. */
void ud_http_set_header(struct ud_http_req *r, const char *name, const char *value);
/* 404 "namespace not found: {ns}", with `x-unison-ns-deleted: 1` (and -deleted-at) when the node
 * knows the namespace was deleted (ud_http_node.ns_deleted). */
void ud_http_reply_ns_not_found(struct ud_http_req *r);
void ud_http_reply(struct ud_http_req *r, int status, const char *content_type, const void *body,
                   size_t len);
/* The answer to a HEAD request: status, content_type and a Content-Length of length (what GET
 * would send), without a body. Only for requests whose method is UD_HTTP_HEAD. */
void ud_http_reply_head(struct ud_http_req *r, int status, const char *content_type,
                        uint64_t length);
/* Sends j as application/json and frees it; a buffer that ran out of memory gives a 500. */
void ud_http_reply_json(struct ud_http_req *r, int status, struct ud_jbuf *j);
/* {"error": message} with status. */
void ud_http_reply_error(struct ud_http_req *r, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The response header marking a write whose outcome is unknown (UD_EINDOUBT): it may have been
 * committed, or not. Value "unknown". */
#define UD_HTTP_OUTCOME "unison-outcome"
/* {"error": errmsg} with the status of ud_http_status_for(code), and Retry-After on 503; for
 * UD_EINDOUBT UD_HTTP_OUTCOME: unknown instead of Retry-After. */
void ud_http_reply_code(struct ud_http_req *r, int code, const char *errmsg);

/* --- streamed replies: a body passed on as it arrives from elsewhere (core/http/reply_stream.c)
 * A follower passing on its leader's answer to a linearizable read (writer/cluster.c) starts its
 * own answer when the leader's headers arrive and writes the leader's body on piece by piece. At
 * most two buffers of UD_HTTP_STREAM_BUFFER bytes are held: beyond that the writer is told to
 * wait until the client has taken what was sent.
 */

#define UD_HTTP_STREAM_BUFFER  (256u << 10)
#define UD_HTTP_LENGTH_UNKNOWN UINT64_MAX /* no Content-Length: chunked (HTTP/1.1) */

struct ud_http_stream;

/*
 * Answers r with status, content_type, the headers set with ud_http_set_header and a body of
 * length bytes (UD_HTTP_LENGTH_UNKNOWN: not announced) to come through ud_http_stream_write. r is
 * taken over (freed). Callbacks, never run inside the stream's own functions except on_gone (see
 * ud_http_stream_write):
 *   on_room(arg): a write refused with UD_EAGAIN may be tried again;
 *   on_gone(arg): the client went away, or the server shut its connection down; the stream is
 *       freed, nothing of it may be used any more.
 * Returns NULL when the client of r has gone already (r is freed; no callback runs).
 */
struct ud_http_stream *ud_http_stream_start(struct ud_http_req *r, int status,
                                            const char *content_type, uint64_t length,
                                            void (*on_room)(void *arg), void (*on_gone)(void *arg),
                                            void *arg);
/* Passes len bytes on (copied): 0, or UD_EAGAIN when UD_HTTP_STREAM_BUFFER bytes wait already
 * (nothing taken: try again after on_room). 0 bytes do nothing. on_gone may run inside this call
 * (the client went away as the bytes were sent); the stream is then freed when it returns 0. */
int ud_http_stream_write(struct ud_http_stream *st, const void *data, size_t len);
/* The body is complete: what is gathered goes out and the answer ends. No callback runs after
 * this; st is freed (now or once h2o has written the last piece). NULL is allowed. */
void ud_http_stream_end(struct ud_http_stream *st);
/* The source broke mid-body: the client's answer is cut (HTTP/1.1: the connection closes before
 * Content-Length bytes or the last chunk; HTTP/2: RST_STREAM), so it never looks complete. No
 * callback runs after this. NULL is allowed. */
void ud_http_stream_abort(struct ud_http_stream *st);

/* 1 when a piece has waited more than bound_ms for the client to take it (h2o has not written
 * it out): a client that stopped reading. */
int ud_http_stream_stalled(const struct ud_http_stream *st, uint64_t bound_ms);
/* Like ud_http_stream_abort, and when a piece waits for the client, its connection is shut down
 * so that the answer ends now rather than when the client reads again (on HTTP/2 with every
 * other stream of that connection). No callback runs after this. NULL is allowed. */
void ud_http_stream_cut(struct ud_http_stream *st);

/* --- plain rules, tested without sockets ---------------------------------------------------- */

/* HTTP status for a UD_E* code: ENOTFOUND 404; EINVAL, ECORRUPT, ELIMIT, ERANGE, ETRUNCATED,
 * EVERSION 400; EEXIST, ETXN, ECONFLICT 409; EBUSY, ECLOSED, EAGAIN, ETIMEDOUT 503; EGONE 410;
 * everything else (EIO, ENOSPC, ENOMEM, EMAPFULL, ...) 500. */
int ud_http_status_for(int code);
/* h2o's own body limit for a max_body: max(4 MiB, max_body + 1 MiB). */
size_t ud_http_h2o_limit(size_t max_body);
/* 0 when a body of len bytes is within limit (inclusive), else UD_ELIMIT with the message of
 * the JSON 413. */
int ud_http_body_check(size_t len, size_t limit, char *errmsg);
/* A decimal header value such as Content-Length or an incarnation (surrounding whitespace already
 * removed): 1 with *out when s is only
 * decimal digits and fits below UD_HTTP_LENGTH_UNKNOWN, else 0 (empty, a sign, junk after the
 * digits, overflow). */
int ud_http_parse_length(const char *s, uint64_t *out);

#endif
