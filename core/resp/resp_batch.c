/* Pipelined GETs of one connection answered from one engine read, their value copies overlapped. */
#include <string.h>

#include "core/err.h"
#include "core/resp/resp_int.h"

/*
 * Why. Under redis-benchmark's GET load (-P 16, 1 KiB values, 100,000 keys) most of a GET's CPU is
 * waiting for memory: the LMDB leaf page or memtable node that holds the value, then the value's
 * 16 cache lines as it is copied into the reply. Looked up and copied one after the other, every
 * GET waits for its own lines. Here a GET reserves its reply's bytes, prefetches the value and
 * leaves the copy for later; the copy runs once UD_RESP_BATCH_COPIES more GETs were looked up, by
 * which time the lines have arrived. The engine reader keeps the values in place until then, and
 * takes the namespace's view (locks, memtable references, LMDB snapshot) once per batch.
 */

/* Lines prefetched per value; larger values are copied at once (the hardware prefetcher follows a
 * long copy by itself, and a few such values would flush the lines prefetched for the others). */
#define PREFETCH_MAX 4096

static void copy_oldest(struct ud_resp_batch *bt)
{
    struct ud_resp_value_copy *v = &bt->copies[bt->head];
    memcpy(bt->buf->data + v->off, v->src, v->len);
    bt->head = (bt->head + 1) % UD_RESP_BATCH_COPIES;
    bt->n--;
}

static void copy_all(struct ud_resp_batch *bt)
{
    while (bt->n > 0)
        copy_oldest(bt);
}

void ud_resp_batch_break(struct ud_resp_ctx *ctx)
{
    struct ud_resp_batch *bt = &ctx->batch;
    copy_all(bt);
    bt->buf = NULL;
    if (bt->ns == NULL)
        return;
    ud_kv_reader_close(bt->reader);
    ud_registry_release(ctx->registry, bt->ns);
    bt->ns = NULL;
    bt->session = NULL;
}

void ud_resp_batch_begin(struct ud_resp_ctx *ctx)
{
    ctx->batch.enabled = 1;
}

void ud_resp_batch_end(struct ud_resp_ctx *ctx)
{
    ud_resp_batch_break(ctx);
    ctx->batch.enabled = 0;
}

struct ud_kv_reader *ud_resp_reader(struct ud_resp_ctx *ctx)
{
    struct ud_resp_batch *bt = &ctx->batch;
    UD_ASSERT(bt->ns == NULL);
    if (bt->reader == NULL && ud_kv_reader_new(&bt->reader) != 0)
        return NULL;
    return bt->reader;
}

/* The reader open on the session's namespace, or NULL after replying the error. */
static struct ud_kv_reader *reader_for(struct ud_resp_call *c)
{
    struct ud_resp_batch *bt = &c->ctx->batch;
    if (bt->ns != NULL && bt->session == c->session)
        return bt->reader;
    ud_resp_batch_break(c->ctx);
    if (ud_resp_reader(c->ctx) == NULL) {
        ud_resp_reply_engine_error(ud_resp_reply(c), "read failed", UD_ENOMEM);
        return NULL;
    }
    struct ud_ns *ns;
    if (ud_resp_acquire_ns(c, &ns) != 0)
        return NULL;
    int rc = ud_kv_reader_open(bt->reader, ns);
    if (rc != 0) {
        ud_resp_release_ns(c, ns);
        ud_resp_reply_engine_error(ud_resp_reply(c), "read failed", rc);
        return NULL;
    }
    bt->ns = ns;
    bt->session = c->session;
    return bt->reader;
}

/* Appends the bulk reply of value, its copy left pending while it is small enough to prefetch. */
static void add_value(struct ud_resp_batch *bt, struct ud_resp_buf *b, const uint8_t *value,
                      size_t len)
{
    if (len > PREFETCH_MAX || (bt->buf != NULL && bt->buf != b)) {
        copy_all(bt);
        ud_resp_add_bulk(b, value, len);
        return;
    }
    /* Every line the value touches, from the one its first byte is on. */
    uintptr_t line = (uintptr_t)value & ~(uintptr_t)63;
    for (uintptr_t end = (uintptr_t)value + len; line < end; line += 64)
        __builtin_prefetch((const void *)line);
    if (bt->n == UD_RESP_BATCH_COPIES)
        copy_oldest(bt);
    bt->buf = b;
    size_t tail = (bt->head + bt->n) % UD_RESP_BATCH_COPIES;
    bt->copies[tail] = (struct ud_resp_value_copy){ud_resp_add_bulk_room(b, len), value, len};
    bt->n++;
}

void ud_resp_batch_get(struct ud_resp_call *c)
{
    struct ud_resp_batch *bt = &c->ctx->batch;
    if (ud_resp_check_kv_key(c, c->argv[1], c->argvlen[1]) != 0)
        return;
    struct ud_kv_reader *r = reader_for(c);
    if (r == NULL)
        return;
    struct ud_resp_buf *b = ud_resp_reply(c);
    const uint8_t *value;
    size_t len;
    int rc = ud_kv_reader_get(r, c->argv[1], c->argvlen[1], &value, &len, NULL);
    if (rc == 0) {
        add_value(bt, b, value, len);
    } else if (rc == UD_ENOTFOUND) {
        ud_resp_add_null(b);
    } else {
        /* Start the next GET from a fresh view and snapshot. */
        ud_resp_batch_break(c->ctx);
        ud_resp_reply_engine_error(b, "read failed", rc);
    }
}
