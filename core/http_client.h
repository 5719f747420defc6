/*
 * The project's one HTTP client: libcurl's multi interface driven by the process's libuv loop
 * (socket events through uv_poll, curl's timeout through a uv_timer; DEPENDENCIES.md section 6).
 * Used by the relayer (WAL streams, snapshots, acks, namespace lists) and later by forwarding,
 * catch-up and S3. This is the only file pair that includes <curl/curl.h>.
 *
 * A transfer is one request. Its response is delivered as callbacks on the loop thread:
 *   on_headers  once, when the status line and headers are complete (final status, not 1xx);
 *   on_data     for each piece of a 2xx body (streaming; may pause the transfer for backpressure);
 *   on_done     exactly once at the end (unless the transfer was cancelled), with the outcome.
 * A body of a non-2xx response is not given to on_data: up to UD_HTTP_CLIENT_ERROR_BODY bytes of
 * it are collected and passed to on_done (JSON errors name the cause).
 *
 * HTTP/2 over cleartext (h2c prior knowledge) uses one connection per transfer (FRESH_CONNECT +
 * FORBID_REUSE): Debian's curl 7.88.1 fails the second request on a reused h2c connection
 * (curl issue #10634, DEPENDENCIES.md section 6). HTTP/1.1 is the default and fine for streams.
 *
 * Every address is reached directly: a proxy named in the environment (http_proxy) is not used.
 *
 * Loop thread only.
 */
#ifndef UD_CORE_HTTP_CLIENT_H
#define UD_CORE_HTTP_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* Bytes of a non-2xx response body kept for on_done (the rest is dropped). */
#define UD_HTTP_CLIENT_ERROR_BODY (64u << 10)
/* Default connect timeout. */
#define UD_HTTP_CLIENT_CONNECT_TIMEOUT_MS 5000u
/* Seconds a kept-alive connection may have been idle and still be reused: half the 10 s after
 * which our servers close idle connections (IDLE_TIMEOUT_MS in core/http/server.c, which checks
 * the margin at compile time), so a request is not sent on a connection the server is closing. */
#define UD_HTTP_CLIENT_MAX_IDLE_S 5L

/* on_data's return value that pauses the transfer (the same bytes are delivered again after
 * ud_http_transfer_resume, so the callback must not have consumed them). */
#define UD_HTTP_PAUSE (-1)

enum ud_http_client_method {
    UD_HTTP_CLIENT_GET = 0,
    UD_HTTP_CLIENT_POST,
    UD_HTTP_CLIENT_PUT,
    UD_HTTP_CLIENT_DELETE,
    UD_HTTP_CLIENT_HEAD, /* the response's status and headers only: no body is read */
};

enum ud_http_client_version {
    UD_HTTP_CLIENT_HTTP1 = 0, /* HTTP/1.1 (plain), or h2 when TLS negotiates it (ALPN) */
    UD_HTTP_CLIENT_H2C,       /* HTTP/2 prior knowledge on a fresh connection per transfer */
};

struct ud_http_client;
struct ud_http_transfer;

/* The outcome handed to on_done (views valid during the call only). */
struct ud_http_result {
    int rc;              /* 0: a response was received (any status); else UD_E* (below) */
    long status;         /* HTTP status, 0 when none was received */
    const char *errmsg;  /* rc != 0: "GET http://h:p/x: <cause>" naming the URL and the cause */
    const uint8_t *body; /* collected body (collect_max, or a non-2xx body), may be NULL */
    size_t body_len;     /* bytes in body */
    uint64_t bytes;      /* body bytes received in total */
    int http_version;    /* 1 or 2 */
    int unsent;          /* 1 when the request surely never reached the server: no connection
                            was ready for it (name resolution, connect or TLS failed, or a
                            timeout before), so sending it again cannot apply it twice. 0 once
                            curl began to send it, also when curl then re-sent it on a fresh
                            connection that failed (CURLOPT_PREREQFUNCTION), or when a send_once
                            request was not re-sent (rc UD_EIO) */
};

/*
 * A request. Strings and the body are copied by ud_http_client_start.
 *
 * Callbacks (any may be NULL):
 *   on_headers(arg, status): the final status is known; response headers can be read with
 *       ud_http_transfer_header. Return 0 to go on, non-zero to abort (on_done gets UD_ECLOSED).
 *   on_data(arg, data, len): a piece of a 2xx body. Return 0 when consumed, UD_HTTP_PAUSE to
 *       pause (the piece is delivered again after resume), or any other value to abort the
 *       transfer (on_done then gets that value as rc with errmsg "... aborted by the receiver").
 *       Without on_data the body is collected up to collect_max (more is UD_ELIMIT), or written
 *       to file_path.
 *   on_done(arg, result): the end. The transfer is freed after it returns.
 */
struct ud_http_request {
    const char *url;
    enum ud_http_client_method method;
    enum ud_http_client_version version;
    const char *content_type; /* of body; NULL with a body: application/json */
    const void *body;
    size_t body_len;
    const char *const *headers;  /* extra "Name: value" lines, NULL-terminated; may be NULL */
    uint32_t connect_timeout_ms; /* 0: UD_HTTP_CLIENT_CONNECT_TIMEOUT_MS */
    uint32_t timeout_ms;         /* whole transfer; 0: none (streams) */
    /* Abort when fewer than low_speed_bytes arrive per second for low_speed_time_s seconds;
     * 0: off. A stream with heartbeats uses its own idle timer instead (finer than seconds). */
    uint32_t low_speed_time_s;
    uint32_t low_speed_bytes;
    size_t collect_max;    /* without on_data and file_path: largest body collected; 0: 1 MiB */
    const char *file_path; /* without on_data: 2xx body written to this file (created/truncated,
                              not fsynced: the caller syncs it when it needs durability) */
    /* https: PEM file of the certificate authorities to trust instead of the system's; NULL or
     * "": the system store. The server's certificate and host name are always verified. */
    const char *ca_file;
    /* 1: sent at most once. When a kept-alive connection dies before any answer, curl sends the
     * request again on a fresh connection; for a write without an idempotency key that second
     * send could apply it twice, so the transfer ends instead (rc UD_EIO, unsent 0: the server
     * may have it). */
    int send_once;
    int (*on_headers)(void *arg, long status);
    int (*on_data)(void *arg, const void *data, size_t len);
    void (*on_done)(void *arg, const struct ud_http_result *res);
    void *arg;
};

/* Creates a client on loop. Returns 0, UD_ENOMEM or UD_EIO (curl could not be initialized). */
int ud_http_client_new(uv_loop_t *loop, struct ud_http_client **out, char *errmsg);

/*
 * Cancels every transfer (no callbacks), closes the client's handles and frees it once they are
 * closed; done(arg) (may be NULL) is then called from the loop. NULL c is allowed (done is not
 * called then).
 */
void ud_http_client_close(struct ud_http_client *c, void (*done)(void *arg), void *arg);

/*
 * Starts a transfer. *out (may be NULL) is a handle valid until on_done returns or the transfer is
 * cancelled. Returns 0, UD_EINVAL (no URL, or a scheme other than http/https: errmsg names it),
 * UD_ENOMEM, UD_EIO (file_path cannot be created: errmsg names it). Nothing is called back after
 * a failed start.
 * Transfer errors reach on_done: UD_EIO (connection refused, reset, DNS, TLS, protocol error),
 * UD_ETIMEDOUT (connect, whole-transfer or low-speed timeout), UD_ETRUNCATED (the connection ended
 * before the body did), UD_ELIMIT (collected body over collect_max), UD_ENOSPC/UD_EIO (writing
 * file_path), the code returned by on_data, UD_ECLOSED (aborted by on_headers).
 */
int ud_http_client_start(struct ud_http_client *c, const struct ud_http_request *req,
                         struct ud_http_transfer **out, char *errmsg);

/*
 * Cancels a transfer: no callback of it runs after this call, and its connection is closed.
 * Allowed from any callback of any transfer, including its own on_headers/on_data, but not from
 * its own on_done (the transfer is over then). NULL is allowed.
 */
void ud_http_transfer_cancel(struct ud_http_transfer *t);

/* Pauses delivery (like on_data returning UD_HTTP_PAUSE). */
void ud_http_transfer_pause(struct ud_http_transfer *t);
/* Resumes a paused transfer. Buffered bytes are delivered to on_data later on the loop (never
 * inside this call). */
void ud_http_transfer_resume(struct ud_http_transfer *t);

/* A response header by name (case-insensitive), copied into out (size bytes, NUL-terminated):
 * 1 when present, 0 when not. Valid from on_headers on. */
int ud_http_transfer_header(const struct ud_http_transfer *t, const char *name, char *out,
                            size_t size);

/* 1 once curl began to send t's request (some of it may have reached the server), 0 while it is
 * still resolving or connecting. NULL is allowed (0). */
int ud_http_transfer_started(const struct ud_http_transfer *t);

/* Transfers in progress (cancelled ones excluded). */
size_t ud_http_client_active(const struct ud_http_client *c);

#endif
