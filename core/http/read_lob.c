/*
 * Read API, LOBs: GET lob?key= streams the object chunk by chunk with an h2o generator; the whole
 * object is never in memory (one chunk, at most 1 MiB, is copied per write so that a stream can
 * be cut loose from its namespace while a write is in flight). A Range (one byte range, with an
 * optional If-Range on the ETag "COMMIT_LSN") streams only those bytes: the reader starts at the
 * chunk holding the first one, so the chunks before it are never read.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/err.h"
#include "core/http/http_int.h"
#include "core/http/range.h"
#include "core/keyspace.h"
#include "core/log.h"

struct chunk_holder {
    uint8_t *buf; /* owned: freed with the h2o request (h2o may write from it until then) */
    size_t cap;
};

struct ud_http_lob_stream {
    h2o_generator_t super; /* first: h2o passes this address back */
    struct ud_http_server *s;
    h2o_req_t *h;
    struct ud_lob_reader *rd; /* NULL once cancelled or finished */
    struct ud_ns *ns;         /* referenced while rd is open */
    char ns_name[UD_NS_NAME_MAX + 1];
    struct chunk_holder *chunk; /* in h->pool */
    uint64_t remaining;         /* bytes still to send */
    size_t skip; /* bytes to leave out at the start of the next chunk (a range's start) */
    int status;  /* 200, or 206 for a range */
    size_t metrics;
    uint64_t start_ns;
    int cancelled;
    struct ud_http_lob_stream *prev, *next;
};

static void holder_dispose(void *p)
{
    struct chunk_holder *c = p;
    free(c->buf);
    c->buf = NULL;
}

static void release_source(struct ud_http_lob_stream *st)
{
    if (st->rd != NULL) {
        ud_lob_reader_close(st->rd);
        st->rd = NULL;
    }
    if (st->ns != NULL) {
        ud_registry_release(st->s->opts.registry, st->ns);
        st->ns = NULL;
    }
}

static void stream_end(struct ud_http_lob_stream *st, int status)
{
    struct ud_http_server *s = st->s;
    release_source(st);
    if (st->prev != NULL)
        st->prev->next = st->next;
    else
        s->streams = st->next;
    if (st->next != NULL)
        st->next->prev = st->prev;
    ud_http_metrics_observe(&s->metrics, st->metrics, status, ud_mono_ns() - st->start_ns);
    free(st);
    ud_http_server_unref(s);
}

/* Sends the next chunk, the end, or an error. Called at start and from proceed only, so a send
 * is never issued while the previous one is in flight. */
static void send_next(struct ud_http_lob_stream *st)
{
    h2o_req_t *h = st->h;
    if (st->cancelled || st->rd == NULL) {
        h2o_send(h, NULL, 0, H2O_SEND_STATE_ERROR);
        stream_end(st, 503);
        return;
    }
    const uint8_t *data;
    size_t len;
    int rc = ud_lob_reader_next(st->rd, &data, &len);
    if (rc == 0 && st->skip > 0) {
        /* ud_lob_reader_seek put the range's first byte inside this chunk. */
        if (st->skip >= len) {
            rc = UD_ECORRUPT;
        } else {
            data += st->skip;
            len -= st->skip;
        }
        st->skip = 0;
    }
    if (rc == 0 && len > st->remaining) {
        /* A range ends inside its last chunk; the whole object ends with its last chunk. */
        if (st->status == 200)
            rc = UD_ECORRUPT;
        len = (size_t)st->remaining;
    }
    if (rc != 0 || (len == 0 && st->remaining > 0)) {
        ud_error(UD_HTTP_LOG, "namespace %s: lob stream cut after %llu bytes left: %s", st->ns_name,
                 (unsigned long long)st->remaining,
                 rc != 0 ? ud_strerror(rc) : "the object ended early");
        h2o_send(h, NULL, 0, H2O_SEND_STATE_ERROR);
        stream_end(st, 500);
        return;
    }
    if (len > st->chunk->cap) {
        uint8_t *p = realloc(st->chunk->buf, len);
        if (p == NULL)
            abort();
        st->chunk->buf = p;
        st->chunk->cap = len;
    }
    if (len > 0)
        memcpy(st->chunk->buf, data, len);
    st->remaining -= len;
    h2o_iovec_t iov = h2o_iovec_init(st->chunk->buf, len);
    if (st->remaining == 0) {
        h2o_send(h, &iov, len > 0 ? 1 : 0, H2O_SEND_STATE_FINAL);
        stream_end(st, st->status);
        return;
    }
    h2o_send(h, &iov, 1, H2O_SEND_STATE_IN_PROGRESS);
}

static void on_proceed(h2o_generator_t *g, h2o_req_t *h)
{
    (void)h;
    send_next((struct ud_http_lob_stream *)g);
}

static void on_stop(h2o_generator_t *g, h2o_req_t *h)
{
    (void)h;
    stream_end((struct ud_http_lob_stream *)g, 499);
}

void ud_http_streams_close_ns(struct ud_http_server *s, const char *ns)
{
    for (struct ud_http_lob_stream *st = s->streams; st != NULL; st = st->next) {
        if (strcmp(st->ns_name, ns) == 0 && !st->cancelled) {
            st->cancelled = 1;
            release_source(st); /* the chunk in flight is our copy: safe to let go now */
        }
    }
}

/*
 * The Range of a GET, when it applies (RFC 9110 sections 13.1.5 and 14.2): HEAD ignores it; a
 * Range or If-Range given on two lines is ignored (which value would count is not said); an
 * If-Range that is not the object's strong ETag makes the answer the whole object.
 */
static enum ud_http_range_answer lob_range(struct ud_http_req *r, uint64_t size, const char *etag,
                                           uint64_t *first, uint64_t *last)
{
    size_t len, il;
    const char *v = ud_http_req_header(r, "range", &len);
    if (ud_http_req_method(r) != UD_HTTP_GET || v == NULL ||
        ud_http_req_header_lines(r, "range") != 1)
        return UD_HTTP_RANGE_WHOLE;
    int n_if = ud_http_req_header_lines(r, "if-range");
    if (n_if > 1)
        return UD_HTTP_RANGE_WHOLE;
    const char *iv = n_if == 1 ? ud_http_req_header(r, "if-range", &il) : NULL;
    if (iv != NULL && !ud_http_if_range_holds(iv, il, etag))
        return UD_HTTP_RANGE_WHOLE;
    return ud_http_range_eval(v, len, size, first, last);
}

/* The headers of every answer about an existing object: its LSN, its ETag (strong: a LOB's bytes
 * never change under one commit LSN; an overwrite commits anew) and that ranges are served. */
static void object_headers(struct ud_http_req *r, const char *lsn_text, const char *etag)
{
    ud_http_set_header(r, "x-unison-lsn", lsn_text);
    ud_http_set_header(r, "etag", etag);
    ud_http_set_header(r, "accept-ranges", "bytes");
}

void ud_http_on_lob_get(struct ud_http_req *r, void *arg)
{
    (void)arg;
    struct ud_http_server *s = ud_http_req_server(r);
    char errmsg[UD_ERRMSG_SIZE];
    uint8_t key[UD_MAX_LOB_KEY + 1];
    size_t kl = 0, qlen;
    const char *q = ud_http_req_query(r, &qlen);
    int rc = ud_http_query_get(q, qlen, "key", key, sizeof key, &kl, errmsg);
    if (rc == UD_ENOTFOUND || (rc == 0 && kl == 0)) {
        ud_http_reply_error(r, 400, "query parameter key is required (GET lob?key=...)");
        return;
    }
    if (rc == UD_ELIMIT || (rc == 0 && kl > UD_MAX_LOB_KEY)) {
        ud_http_reply_error(r, 400, "lob key exceeds the limit of %d bytes", UD_MAX_LOB_KEY);
        return;
    }
    if (rc != 0) {
        ud_http_reply_error(r, 400, "%s", errmsg);
        return;
    }
    if (ud_http_server_ns_is_closing(s, r->ns_name)) {
        ud_http_set_header(r, "retry-after", "1");
        ud_http_reply_error(r, 503, "namespace %s is being deleted", r->ns_name);
        return;
    }
    struct ud_lob_reader *rd = NULL;
    uint64_t size = 0, lsn = 0;
    rc = ud_ns_lob_open(r->ns, key, kl, &rd, &size, &lsn);
    if (rc == UD_ENOTFOUND) {
        ud_http_reply_error(r, 404, "lob not found: %.*s", (int)kl, (const char *)key);
        return;
    }
    if (rc != 0) {
        ud_http_reply_code(r, rc, "lob read failed");
        return;
    }
    char lsn_text[24], etag[24], crange[80]; /* "bytes A-B/SIZE": at most 68 */
    snprintf(lsn_text, sizeof lsn_text, "%llu", (unsigned long long)lsn);
    snprintf(etag, sizeof etag, "\"%llu\"", (unsigned long long)lsn);
    if (ud_http_req_method(r) == UD_HTTP_HEAD) {
        /* The object's size and LSN without reading it. */
        ud_lob_reader_close(rd);
        object_headers(r, lsn_text, etag);
        ud_http_reply_head(r, 200, "application/octet-stream", size);
        return;
    }
    uint64_t first = 0, last = 0;
    size_t skip = 0;
    enum ud_http_range_answer ra = lob_range(r, size, etag, &first, &last);
    if (ra == UD_HTTP_RANGE_UNSATISFIABLE) {
        ud_lob_reader_close(rd);
        size_t rl = 0;
        const char *rv = ud_http_req_header(r, "range", &rl);
        snprintf(crange, sizeof crange, "bytes */%llu", (unsigned long long)size);
        object_headers(r, lsn_text, etag);
        ud_http_set_header(r, "content-range", crange);
        ud_http_reply_error(r, 416, "range %.*s is not satisfiable: lob %.*s has %llu bytes",
                            (int)(rl > 200 ? 200 : rl), rv != NULL ? rv : "", (int)kl,
                            (const char *)key, (unsigned long long)size);
        return;
    }
    if (ra == UD_HTTP_RANGE_PARTIAL && (rc = ud_lob_reader_seek(rd, first, &skip)) != 0) {
        ud_lob_reader_close(rd); /* not reached: first < size */
        ud_http_reply_code(r, rc, "lob range seek failed");
        return;
    }
    struct ud_http_lob_stream *st = calloc(1, sizeof *st);
    if (st == NULL)
        abort();
    /* The request's reference ends with the handler; the stream holds its own. */
    if (ud_registry_acquire(s->opts.registry, r->ns_name, &st->ns) != 0) {
        free(st);
        ud_lob_reader_close(rd);
        ud_http_reply_error(r, 404, "namespace not found: %s", r->ns_name);
        return;
    }
    st->super.proceed = on_proceed;
    st->super.stop = on_stop;
    st->s = s;
    st->rd = rd;
    st->remaining = ra == UD_HTTP_RANGE_PARTIAL ? last - first + 1 : size;
    st->skip = skip;
    st->status = ra == UD_HTTP_RANGE_PARTIAL ? 206 : 200;
    st->metrics = r->metrics;
    st->start_ns = r->start_ns;
    snprintf(st->ns_name, sizeof st->ns_name, "%s", r->ns_name);
    object_headers(r, lsn_text, etag);
    if (ra == UD_HTTP_RANGE_PARTIAL) {
        snprintf(crange, sizeof crange, "bytes %llu-%llu/%llu", (unsigned long long)first,
                 (unsigned long long)last, (unsigned long long)size);
        ud_http_set_header(r, "content-range", crange);
    }
    h2o_req_t *h = ud_http_req_take(r);
    st->h = h;
    st->chunk = h2o_mem_alloc_shared(&h->pool, sizeof *st->chunk, holder_dispose);
    st->chunk->buf = NULL;
    st->chunk->cap = 0;
    st->next = s->streams;
    if (s->streams != NULL)
        s->streams->prev = st;
    s->streams = st;
    h->res.status = st->status;
    h->res.reason = ud_http_reason(st->status);
    h->res.content_length = st->remaining;
    h2o_add_header(&h->pool, &h->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   H2O_STRLIT("application/octet-stream"));
    h2o_start_response(h, &st->super);
    send_next(st);
}
