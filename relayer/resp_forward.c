/*
 * RESP writes forwarded upstream ([relayer] forward_writes): the shared write commands
 * (core/resp/resp_write.c) encode the records here, exactly as on a writer, and this file sends
 * them to the namespace's upstream as `POST /internal/v1/{ns}/records` (body: each record as
 * `u32 length | bytes`, little-endian; docs/raft.md). A writer commits them through its submit
 * seam; an upstream relayer that forwards too passes the request on, so it climbs to a writer.
 * The reply waits (bounded) until this relayer has applied the write's last LSN, so that the
 * connection's next read sees it.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/err.h"
#include "core/http/http.h"
#include "core/http_client.h"
#include "core/log.h"
#include "core/resp/resp_cmd.h"
#include "proto/record_list.h"
#include "relayer/relayer.h"

#define LOG "resp"

/* The longest wait for the upstream's answer, and then for the write to arrive here. */
#define FORWARD_TIMEOUT_MS 30000
#define APPLY_WAIT_MS      5000
#define APPLY_POLL_MS      2

struct resp_fwd {
    struct ud_relayer *r;
    struct ud_resp_slot *slot;
    struct ud_http_transfer *t;
    long long count;
    uint64_t last_lsn; /* the write's last LSN; 0 until the upstream answered */
    uint64_t deadline_ms;
    char code[16];
    char ns[UD_NS_NAME_MAX + 1];
    char upstream[UD_RELAYER_URL_MAX];
    uv_timer_t timer;
    struct resp_fwd *prev, *next; /* r->resp_forwards */
};

static void unlink_fwd(struct resp_fwd *f)
{
    if (f->prev != NULL)
        f->prev->next = f->next;
    else
        f->r->resp_forwards = f->next;
    if (f->next != NULL)
        f->next->prev = f->prev;
}

static void fwd_closed(uv_handle_t *h)
{
    free(h->data);
}

static void finish(struct resp_fwd *f)
{
    ud_resp_slot_finish(f->slot);
    unlink_fwd(f);
    uv_close((uv_handle_t *)&f->timer, fwd_closed);
}

static void reply_success(struct resp_fwd *f)
{
    struct ud_resp_buf *b = ud_resp_slot_buf(f->slot);
    if (f->count < 0)
        ud_resp_add_simple(b, "OK");
    else
        ud_resp_add_int(b, f->count);
    finish(f);
}

/* 1 once this relayer's copy of the namespace has applied the write (or the namespace is gone
 * here, so there is nothing to wait for). */
static int applied_here(struct resp_fwd *f)
{
    struct ud_ns *ns;
    if (ud_registry_acquire(f->r->registry, f->ns, &ns) != 0)
        return 1;
    struct ud_ns_stats st;
    ud_ns_stats(ns, &st);
    ud_registry_release(f->r->registry, ns);
    return st.last_lsn >= f->last_lsn;
}

/* Polls the applied LSN: the follower applies on its own thread and has no waiter list; a write
 * forwarded over RESP is answered within a poll period of arriving here. After APPLY_WAIT_MS the
 * write is answered anyway: it was committed upstream, and an error would invite a retry. */
static void on_poll(uv_timer_t *t)
{
    struct resp_fwd *f = t->data;
    if (applied_here(f) || (ud_mono_ns() / 1000000u) >= f->deadline_ms) {
        uv_timer_stop(t);
        reply_success(f);
    }
}

/* The writer's replies for a submit error (writer/resp_write.c), from the code the upstream
 * named in its unison-code header and the message of its {"error": ...} body. */
static void reply_upstream_error(struct resp_fwd *f, const struct ud_http_result *res)
{
    struct ud_resp_buf *b = ud_resp_slot_buf(f->slot);
    char msg[512] = "";
    json_t *doc =
        res->body != NULL ? json_loadb((const char *)res->body, res->body_len, 0, NULL) : NULL;
    const char *e = doc != NULL ? json_string_value(json_object_get(doc, "error")) : NULL;
    snprintf(msg, sizeof msg, "%s", e != NULL ? e : "");
    json_decref(doc);
    int code = f->code[0] != '\0' ? atoi(f->code) : 0;
    if (code == UD_EBUSY)
        ud_resp_add_errorf(b, "TRYAGAIN write not admitted, retry later: %s", msg);
    else if (code == UD_EINDOUBT) /* msg begins with "outcome unknown: " */
        ud_resp_add_errorf(b, "ERR %s", msg[0] ? msg : ud_strerror(code));
    else if (code == UD_ENOTFOUND)
        ud_resp_add_errorf(b, "ERR unknown namespace '%s' (it was deleted; SELECT another one)",
                           f->ns);
    else if (res->status == 403)
        ud_resp_add_errorf(b, "READONLY %s", msg[0] ? msg : "the upstream refused the write");
    else if (code == UD_ECLOSED || res->status == 503)
        ud_resp_add_errorf(b, "ERR unavailable: upstream %s: %s", f->upstream,
                           msg[0] ? msg : "no leader took the write");
    else if (code != 0)
        ud_resp_add_errorf(b, "ERR %s: %s", ud_strerror(code), msg);
    else
        ud_resp_add_errorf(b, "ERR upstream %s answered %ld: %s", f->upstream, res->status, msg);
    finish(f);
}

static int fwd_headers(void *arg, long status)
{
    struct resp_fwd *f = arg;
    (void)status;
    if (!ud_http_transfer_header(f->t, "unison-code", f->code, sizeof f->code))
        f->code[0] = '\0';
    /* A relayer upstream answers its own write in doubt with the outcome header only. */
    char outcome[16];
    if (ud_http_transfer_header(f->t, UD_HTTP_OUTCOME, outcome, sizeof outcome) &&
        strcmp(outcome, "unknown") == 0)
        snprintf(f->code, sizeof f->code, "%d", UD_EINDOUBT);
    return 0;
}

static void fwd_done(void *arg, const struct ud_http_result *res)
{
    struct resp_fwd *f = arg;
    f->t = NULL;
    if (res->rc != 0 && !res->unsent) {
        /* The upstream may have the write (RESP writes carry no idempotency key). */
        char msg[UD_ERRMSG_SIZE * 2];
        ud_err_indoubt(msg, sizeof msg, "forwarded to the upstream %s, no answer: %s", f->upstream,
                       res->errmsg);
        ud_resp_add_errorf(ud_resp_slot_buf(f->slot), "ERR %s", msg);
        finish(f);
        return;
    }
    if (res->rc != 0) {
        ud_resp_add_errorf(ud_resp_slot_buf(f->slot),
                           "ERR unavailable: forwarding the write to the upstream %s failed: %s",
                           f->upstream, res->errmsg);
        finish(f);
        return;
    }
    if (res->status != 200) {
        reply_upstream_error(f, res);
        return;
    }
    json_t *doc =
        res->body != NULL ? json_loadb((const char *)res->body, res->body_len, 0, NULL) : NULL;
    json_int_t lsn = doc != NULL ? json_integer_value(json_object_get(doc, "lsn")) : 0;
    json_int_t count = doc != NULL ? json_integer_value(json_object_get(doc, "count")) : 0;
    json_decref(doc);
    if (lsn <= 0 || count <= 0) {
        /* The upstream committed it (200): an error here would invite a retry that applies the
         * write twice. Answer it without the read-your-writes wait, which needs the LSN. */
        ud_warn(LOG, "the upstream %s accepted a forwarded write but its answer names no LSN",
                f->upstream);
        reply_success(f);
        return;
    }
    f->last_lsn = (uint64_t)lsn + (uint64_t)count - 1;
    if (applied_here(f)) {
        reply_success(f);
        return;
    }
    f->deadline_ms = (ud_mono_ns() / 1000000u) + APPLY_WAIT_MS;
    uv_timer_start(&f->timer, on_poll, APPLY_POLL_MS, APPLY_POLL_MS);
}

void ud_relayer_resp_submit(struct ud_resp_call *c, uint8_t **records, size_t *lens, size_t n,
                            long long count)
{
    struct ud_relayer *r = c->app;
    const char *up = ud_relayer_upstream_for(r, c->session->ns);
    size_t total;
    uint8_t *body = ud_record_list_pack(records, lens, n, &total);
    struct resp_fwd *f = calloc(1, sizeof *f);
    if (f == NULL)
        abort();
    f->r = r;
    f->slot = ud_resp_defer(c);
    f->count = count;
    snprintf(f->ns, sizeof f->ns, "%s", c->session->ns);
    snprintf(f->upstream, sizeof f->upstream, "%s", up);
    uv_timer_init(r->loop, &f->timer);
    f->timer.data = f;
    f->next = r->resp_forwards;
    if (f->next != NULL)
        f->next->prev = f;
    r->resp_forwards = f;
    char url[UD_RELAYER_URL_MAX + UD_NS_NAME_MAX + 64];
    snprintf(url, sizeof url, "%s/internal/v1/%s/records", up, f->ns);
    struct ud_http_request hr = {.url = url,
                                 .method = UD_HTTP_CLIENT_POST,
                                 .body = body,
                                 .body_len = total,
                                 .content_type = "application/octet-stream",
                                 .timeout_ms = FORWARD_TIMEOUT_MS,
                                 .ca_file = r->config->tls_ca,
                                 .send_once = 1, /* no idempotency key: a re-send could apply */
                                 .on_headers = fwd_headers,
                                 .on_done = fwd_done,
                                 .arg = f};
    char errmsg[UD_ERRMSG_SIZE];
    int rc = up[0] == '\0' || r->client == NULL
                 ? ud_errf(errmsg, UD_ECLOSED, "no upstream for namespace %s", f->ns)
                 : ud_http_client_start(r->client, &hr, &f->t, errmsg);
    free(body);
    if (rc != 0) {
        ud_resp_add_errorf(ud_resp_slot_buf(f->slot), "ERR unavailable: forwarding the write: %s",
                           errmsg);
        finish(f);
    }
}

void ud_relayer_resp_forwards_cancel(struct ud_relayer *r)
{
    while (r->resp_forwards != NULL) {
        struct resp_fwd *f = r->resp_forwards;
        ud_http_transfer_cancel(f->t);
        f->t = NULL;
        uv_timer_stop(&f->timer);
        ud_resp_add_errorf(ud_resp_slot_buf(f->slot), "ERR unavailable: the relayer is stopping");
        finish(f);
    }
}
