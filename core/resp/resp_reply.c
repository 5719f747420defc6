/* RESP2 reply encoders and the per-connection queue that keeps replies in request order. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/resp/resp.h"

/* --- buffer ----------------------------------------------------------------------------------- */

void ud_resp_buf_free(struct ud_resp_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

uint8_t *ud_resp_buf_reserve(struct ud_resp_buf *b, size_t n)
{
    if (b->cap - b->len < n) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap - b->len < n)
            cap *= 2;
        uint8_t *d = realloc(b->data, cap);
        if (d == NULL)
            abort(); /* network glue: out of memory is fatal, as in h2o */
        b->data = d;
        b->cap = cap;
    }
    return b->data + b->len;
}

void ud_resp_buf_append(struct ud_resp_buf *b, const void *p, size_t n)
{
    if (n == 0)
        return;
    memcpy(ud_resp_buf_reserve(b, n), p, n);
    b->len += n;
}

/* --- encoders --------------------------------------------------------------------------------- */

/* Writes v in decimal to out (at least 21 bytes) and returns the length. */
static size_t fmt_ll(char *out, long long v)
{
    char tmp[24];
    size_t n = 0;
    unsigned long long u = v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    size_t o = 0;
    if (v < 0)
        out[o++] = '-';
    while (n > 0)
        out[o++] = tmp[--n];
    return o;
}

static size_t fmt_ull(char *out, unsigned long long u)
{
    char tmp[24];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    size_t o = 0;
    while (n > 0)
        out[o++] = tmp[--n];
    return o;
}

/* "<type><n>\r\n" */
static void add_header(struct ud_resp_buf *b, char type, long long n)
{
    uint8_t *p = ud_resp_buf_reserve(b, 24);
    p[0] = (uint8_t)type;
    size_t l = 1 + fmt_ll((char *)p + 1, n);
    p[l++] = '\r';
    p[l++] = '\n';
    b->len += l;
}

/* A line of a status or error reply: CR and LF would end it early, so they become spaces. */
static void add_line(struct ud_resp_buf *b, char type, const char *s, size_t n)
{
    uint8_t *p = ud_resp_buf_reserve(b, n + 3);
    p[0] = (uint8_t)type;
    for (size_t i = 0; i < n; i++)
        p[1 + i] = (s[i] == '\r' || s[i] == '\n') ? ' ' : (uint8_t)s[i];
    p[n + 1] = '\r';
    p[n + 2] = '\n';
    b->len += n + 3;
}

void ud_resp_add_simple(struct ud_resp_buf *b, const char *s)
{
    add_line(b, '+', s, strlen(s));
}

void ud_resp_add_error(struct ud_resp_buf *b, const char *msg)
{
    add_line(b, '-', msg, strlen(msg));
}

void ud_resp_add_errorf(struct ud_resp_buf *b, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    add_line(b, '-', msg, (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1);
}

void ud_resp_add_int(struct ud_resp_buf *b, long long v)
{
    add_header(b, ':', v);
}

void ud_resp_add_bulk(struct ud_resp_buf *b, const void *p, size_t n)
{
    uint8_t *o = ud_resp_buf_reserve(b, n + 26);
    o[0] = '$';
    size_t l = 1 + fmt_ull((char *)o + 1, n);
    o[l++] = '\r';
    o[l++] = '\n';
    if (n > 0)
        memcpy(o + l, p, n);
    l += n;
    o[l++] = '\r';
    o[l++] = '\n';
    b->len += l;
}

size_t ud_resp_add_bulk_room(struct ud_resp_buf *b, size_t n)
{
    uint8_t *o = ud_resp_buf_reserve(b, n + 26);
    o[0] = '$';
    size_t l = 1 + fmt_ull((char *)o + 1, n);
    o[l++] = '\r';
    o[l++] = '\n';
    size_t room = b->len + l;
    l += n;
    o[l++] = '\r';
    o[l++] = '\n';
    b->len += l;
    return room;
}

void ud_resp_add_bulk_str(struct ud_resp_buf *b, const char *s)
{
    ud_resp_add_bulk(b, s, strlen(s));
}

void ud_resp_add_bulk_ull(struct ud_resp_buf *b, unsigned long long v)
{
    char tmp[24];
    ud_resp_add_bulk(b, tmp, fmt_ull(tmp, v));
}

void ud_resp_add_null(struct ud_resp_buf *b)
{
    ud_resp_buf_append(b, "$-1\r\n", 5);
}

void ud_resp_add_null_array(struct ud_resp_buf *b)
{
    ud_resp_buf_append(b, "*-1\r\n", 5);
}

void ud_resp_add_array(struct ud_resp_buf *b, size_t n)
{
    add_header(b, '*', (long long)n);
}

char *ud_resp_printable(char *out, size_t size, const uint8_t *p, size_t n, size_t max)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    size_t i;
    if (size == 0)
        return out;
    for (i = 0; i < n && i < max; i++) {
        uint8_t c = p[i];
        int plain = c >= 0x20 && c < 0x7f && c != '\'' && c != '"' && c != '\\';
        size_t w = plain ? 1 : 4;
        if (o + w + 4 > size) /* keep room for "..." and the terminator */
            break;
        if (plain) {
            out[o++] = (char)c;
        } else {
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    if (i < n && o + 4 <= size) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
    return out;
}

/* --- ordered replies -------------------------------------------------------------------------- */

struct ud_resp_slot {
    struct ud_resp_slot *next;
    struct ud_resp_outq *q; /* NULL once the connection is gone */
    int deferred;           /* its reply is not finished yet */
    int counted;            /* its bytes are included in q->queued */
    struct ud_resp_buf buf;
};

void ud_resp_outq_init(struct ud_resp_outq *q)
{
    memset(q, 0, sizeof *q);
}

/* A sent slot becomes a spare, its buffer emptied but kept when small; or it is freed. */
static void slot_release(struct ud_resp_outq *q, struct ud_resp_slot *s)
{
    if (q->nspare >= UD_RESP_MAX_SPARE_SLOTS) {
        ud_resp_buf_free(&s->buf);
        free(s);
        return;
    }
    if (s->buf.cap > UD_RESP_MAX_SPARE_BUF_BYTES)
        ud_resp_buf_free(&s->buf);
    s->buf.len = 0;
    s->next = q->spare;
    q->spare = s;
    q->nspare++;
}

static struct ud_resp_slot *slot_new(struct ud_resp_outq *q, int deferred)
{
    struct ud_resp_slot *s = q->spare;
    if (s != NULL) {
        q->spare = s->next;
        q->nspare--;
        struct ud_resp_buf keep = s->buf;
        memset(s, 0, sizeof *s);
        s->buf = keep;
    } else if ((s = calloc(1, sizeof *s)) == NULL) {
        abort();
    }
    s->q = q;
    s->deferred = deferred;
    /* The open tail (replies appended to it directly) is closed now: count its bytes. */
    if (q->tail != NULL && !q->tail->counted) {
        q->tail->counted = 1;
        q->queued += q->tail->buf.len;
    }
    if (q->tail != NULL)
        q->tail->next = s;
    else
        q->head = s;
    q->tail = s;
    return s;
}

struct ud_resp_buf *ud_resp_outq_buf(struct ud_resp_outq *q)
{
    if (q->head == NULL)
        return &q->ready;
    if (q->tail->deferred || q->tail->counted)
        slot_new(q, 0);
    return &q->tail->buf;
}

struct ud_resp_slot *ud_resp_outq_defer(struct ud_resp_outq *q)
{
    struct ud_resp_slot *s = slot_new(q, 1);
    q->pending++;
    return s;
}

size_t ud_resp_outq_bytes(const struct ud_resp_outq *q)
{
    size_t n = q->ready.len + q->queued;
    if (q->tail != NULL && !q->tail->counted)
        n += q->tail->buf.len;
    return n;
}

/* Moves every complete reply at the head of the queue to `ready`. */
static void promote(struct ud_resp_outq *q)
{
    while (q->head != NULL && !q->head->deferred) {
        struct ud_resp_slot *s = q->head;
        if (s->counted)
            q->queued -= s->buf.len;
        /* A long reply moves over without a copy; short ones are copied, so `ready` keeps its
         * buffer and the slot its small one. */
        if (q->ready.len == 0 && s->buf.len > q->ready.cap) {
            struct ud_resp_buf t = q->ready;
            q->ready = s->buf;
            s->buf = t;
        } else {
            ud_resp_buf_append(&q->ready, s->buf.data, s->buf.len);
        }
        q->head = s->next;
        if (q->head == NULL)
            q->tail = NULL;
        slot_release(q, s);
    }
}

void ud_resp_outq_detach(struct ud_resp_outq *q)
{
    struct ud_resp_slot *s = q->head;
    while (s != NULL) {
        struct ud_resp_slot *next = s->next;
        s->next = NULL;
        if (s->deferred) {
            s->q = NULL; /* its finish frees it */
        } else {
            ud_resp_buf_free(&s->buf);
            free(s);
        }
        s = next;
    }
    ud_resp_buf_free(&q->ready);
    while (q->spare != NULL) {
        struct ud_resp_slot *next = q->spare->next;
        ud_resp_buf_free(&q->spare->buf);
        free(q->spare);
        q->spare = next;
    }
    q->nspare = 0;
    q->head = q->tail = NULL;
    q->pending = 0;
    q->queued = 0;
}

struct ud_resp_buf *ud_resp_slot_buf(struct ud_resp_slot *s)
{
    return &s->buf;
}

void ud_resp_slot_finish(struct ud_resp_slot *s)
{
    struct ud_resp_outq *q = s->q;
    if (q == NULL) {
        ud_resp_buf_free(&s->buf);
        free(s);
        return;
    }
    s->deferred = 0;
    s->counted = 1;
    q->queued += s->buf.len;
    q->pending--;
    promote(q);
    if (q->on_ready != NULL)
        q->on_ready(q, q->arg);
}
