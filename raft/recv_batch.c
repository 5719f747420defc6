/* raft's incoming connections read with one read(2) per wake-up (see recv_batch.h). */
#include "raft/recv_batch.h"

#include <stdatomic.h>
#include <string.h>

/*
 * Parts smaller than this are staged; larger ones are read into raft's buffer as before (no copy,
 * and a staging buffer that small would split them into several reads anyway). An AppendEntries
 * of one 1 KiB record is 1.2 KiB in all, its result 40 bytes.
 */
#define STAGE_SIZE 16384

/*
 * raft's callbacks, the same two functions for every stream raft_uv accepts. libuv calls a
 * stream's alloc_cb and read_cb through the stream's public members of those names, read at each
 * call, so replacing them after uv_read_start redirects the reads of that stream only.
 */
static _Atomic(uv_alloc_cb) inner_alloc;
static _Atomic(uv_read_cb) inner_read;

/*
 * One staging buffer per thread: a read is handed out completely inside the read callback that
 * received it, on the loop's thread, so nothing is kept in it between callbacks (and streams of
 * loops on other threads, as in the in-process tests, have their own).
 */
static _Thread_local char stage[STAGE_SIZE];

/* See struct ud_raft_recv_batch_counts. */
static atomic_ulong staged_reads, staged_parts, split_parts, direct_parts;
static atomic_ulong dropped_bytes, read_errors;

static void alloc_cb(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    /* raft's alloc callback returns the rest of the part it expects, allocating it when a new
     * part starts, and the same window again until that part is filled: asking it here and
     * again when handing out costs nothing. */
    uv_buf_t want = uv_buf_init(NULL, 0);
    atomic_load_explicit(&inner_alloc, memory_order_relaxed)(handle, suggested, &want);
    if (want.base == NULL || want.len == 0 || want.len >= STAGE_SIZE)
        *buf = want; /* raft's own answer: its buffer, or none (libuv reports UV_ENOBUFS) */
    else
        *buf = uv_buf_init(stage, STAGE_SIZE);
}

static void read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    uv_alloc_cb alloc = atomic_load_explicit(&inner_alloc, memory_order_relaxed);
    uv_read_cb read = atomic_load_explicit(&inner_read, memory_order_relaxed);
    if (nread <= 0 || buf->base != stage) {
        /* EAGAIN, EOF, an error, or a part read straight into raft's buffer. */
        if (nread < 0 && nread != UV_EOF)
            atomic_fetch_add_explicit(&read_errors, 1, memory_order_relaxed);
        else if (nread > 0)
            atomic_fetch_add_explicit(&direct_parts, 1, memory_order_relaxed);
        read(stream, nread, buf);
        return;
    }
    atomic_fetch_add_explicit(&staged_reads, 1, memory_order_relaxed);
    const char *p = stage;
    size_t left = (size_t)nread;
    while (left > 0) {
        uv_buf_t part = uv_buf_init(NULL, 0);
        alloc((uv_handle_t *)stream, left, &part);
        if (part.base == NULL || part.len == 0) {
            atomic_fetch_add_explicit(&dropped_bytes, left, memory_order_relaxed);
            read(stream, UV_ENOBUFS, &part); /* what libuv does: raft closes the stream */
            return;
        }
        size_t n = left < part.len ? left : part.len;
        memcpy(part.base, p, n);
        atomic_fetch_add_explicit(&staged_parts, 1, memory_order_relaxed);
        if (n < part.len) /* the rest of this part comes with the next read */
            atomic_fetch_add_explicit(&split_parts, 1, memory_order_relaxed);
        read(stream, (ssize_t)n, &part);
        p += n;
        left -= n;
        /* raft closes a stream whose message does not decode (or when it closes); the bytes
         * after that message belong to nobody. */
        if (uv_is_closing((uv_handle_t *)stream)) {
            atomic_fetch_add_explicit(&dropped_bytes, left, memory_order_relaxed);
            return;
        }
    }
}

int ud_raft_recv_batch_attach(uv_stream_t *stream)
{
    if (stream == NULL || uv_is_closing((uv_handle_t *)stream) || stream->read_cb == NULL ||
        stream->alloc_cb == NULL)
        return 0;
    uv_alloc_cb a = NULL;
    uv_read_cb r = NULL;
    /* The first stream records raft's callbacks; every later one must have the same. */
    atomic_compare_exchange_strong(&inner_alloc, &a, stream->alloc_cb);
    atomic_compare_exchange_strong(&inner_read, &r, stream->read_cb);
    if (atomic_load(&inner_alloc) != stream->alloc_cb ||
        atomic_load(&inner_read) != stream->read_cb)
        return 0;
    stream->alloc_cb = alloc_cb;
    stream->read_cb = read_cb;
    return 1;
}

void ud_raft_recv_batch_counts(struct ud_raft_recv_batch_counts *c)
{
    c->reads = atomic_load(&staged_reads);
    c->parts = atomic_load(&staged_parts);
    c->split_parts = atomic_load(&split_parts);
    c->direct_parts = atomic_load(&direct_parts);
    c->dropped_bytes = atomic_load(&dropped_bytes);
    c->read_errors = atomic_load(&read_errors);
}
