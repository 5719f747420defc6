/*
 * Redis protocol (RESP2) as plain data: an incremental request parser, reply encoders into a
 * growable buffer, and the per-connection queue that keeps replies in request order when some of
 * them complete later (writes answered after raft). No sockets here (docs/resp.md).
 */
#ifndef UD_CORE_RESP_RESP_H
#define UD_CORE_RESP_RESP_H

#include <stddef.h>
#include <stdint.h>

/*
 * Request limits. Redis allows 512 MiB bulk strings; ours stop at 4 MiB because nothing larger
 * can be stored (a record is at most UD_RECORD_MAX_SIZE = 4 MiB) and a connection must not be
 * able to make the server buffer more than that per argument. A whole request is capped at 8 MiB
 * (Redis: a 1 GiB query buffer): one 4 MiB value fits with room to spare, a write is at most one
 * raft command anyway, and 1000 connections cannot pin more than 8 GiB between them. The argument
 * count and the inline size are Redis's own limits.
 */
#define UD_RESP_MAX_BULK       (4u << 20)    /* bytes of one bulk string */
#define UD_RESP_REDIS_MAX_BULK (512ll << 20) /* redis-server's default proto-max-bulk-len */
#define UD_RESP_MAX_ARGS       (1u << 20)    /* elements of one request array */
#define UD_RESP_MAX_INLINE     (64u << 10)   /* bytes of an inline command or a header line */
#define UD_RESP_MAX_REQUEST    (8u << 20)    /* bytes of one whole request */

/* --- parser ----------------------------------------------------------------------------------- */

enum ud_resp_parse_result {
    UD_RESP_NEED_MORE = 0, /* the command is incomplete: call again with more bytes */
    UD_RESP_COMMAND = 1,   /* a complete command: argc/argv/argvlen are set */
    UD_RESP_PROTOCOL = -1, /* malformed input: errmsg holds the reply; close after sending it */
};

struct ud_resp_parser {
    /* Limits (set by ud_resp_parser_init; tests may lower them). */
    size_t max_bulk;
    size_t max_args;
    size_t max_inline;
    size_t max_request;

    /* Result of UD_RESP_COMMAND: views valid until the next call, reset or free. Multibulk
     * arguments point into the caller's buffer; inline ones into the parser's own storage. */
    size_t argc;
    const uint8_t **argv;
    size_t *argvlen;
    /* The protocol error to send, "ERR Protocol error: ..." (no "-", no CRLF). */
    char errmsg[128];

    /* Progress through an incomplete multibulk command, relative to the command's first byte
     * (the buffer may move between calls; its bytes must not). */
    int in_multibulk;
    size_t pos;         /* first byte not yet examined */
    long long nargs;    /* announced element count */
    long long bulk_len; /* length of the bulk being read; -1 while its header is awaited */
    size_t need;        /* bytes from the command's first byte needed to progress; 0: unknown */
    size_t *off;        /* offset of argument i from the command's first byte */
    size_t cap;         /* capacity of off, argv and argvlen */
    uint8_t *line;      /* inline command: unquoted arguments */
    size_t line_cap;
};

void ud_resp_parser_init(struct ud_resp_parser *p);
void ud_resp_parser_free(struct ud_resp_parser *p);
/* Forgets the progress of an incomplete command (the next call starts at a command boundary). */
void ud_resp_parser_reset(struct ud_resp_parser *p);

/*
 * Parses the next command at the start of buf[0..len). Accepts RESP arrays of bulk strings
 * ("*2\r\n$3\r\nGET\r\n$1\r\na\r\n") and inline commands ("GET a\r\n", with Redis's quoting:
 * "double quotes" with \n \r \t \b \a \\ \" \xHH escapes, 'single quotes' with \'). Empty
 * commands ("*0\r\n", "*-1\r\n", blank lines) are skipped as Redis skips them.
 *
 * *consumed is set on every return to the number of bytes the caller drops from the front of buf:
 *   UD_RESP_COMMAND    the command and any empty commands before it;
 *   UD_RESP_NEED_MORE  only skipped empty commands; the parser keeps its progress through the
 *                      incomplete command, which now starts at buf + *consumed. The next call
 *                      must pass that command's bytes (moved if need be) plus what arrived since;
 *   UD_RESP_PROTOCOL   0; errmsg is Redis's message for the fault ("ERR Protocol error: invalid
 *                      bulk length", "... invalid multibulk length", "... expected '$', got
 *                      'x'", "... too big inline request", "... unbalanced quotes in request",
 *                      "... too big mbulk count string", "... too big bulk count string", and
 *                      ours: "... expected CRLF after bulk string", "... request is larger than
 *                      N bytes"). The stream cannot be resynchronised: reply and close.
 * Never reads beyond buf + len; allocation failure aborts (network glue).
 */
int ud_resp_parse(struct ud_resp_parser *p, const uint8_t *buf, size_t len, size_t *consumed);

/* After UD_RESP_NEED_MORE: how many bytes, counted from the incomplete command's first byte, the
 * parser needs before it can progress (the end of the bulk string being read), or 0 when it does
 * not know (a header line). Lets the reader size its buffer once for a large value. */
size_t ud_resp_parser_wants(const struct ud_resp_parser *p);

/* --- replies ---------------------------------------------------------------------------------- */

/* A growable output buffer; data is malloc'd (free with ud_resp_buf_free). */
struct ud_resp_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
};

void ud_resp_buf_free(struct ud_resp_buf *b);
/* Makes room for n more bytes and returns where they go (aborts on allocation failure). */
uint8_t *ud_resp_buf_reserve(struct ud_resp_buf *b, size_t n);
void ud_resp_buf_append(struct ud_resp_buf *b, const void *p, size_t n);

/* "+s\r\n". CR and LF inside s become spaces: a status line cannot carry them. */
void ud_resp_add_simple(struct ud_resp_buf *b, const char *s);
/* "-msg\r\n". msg starts with the error code ("ERR ...", "NOPROTO ..."); CR/LF become spaces. */
void ud_resp_add_error(struct ud_resp_buf *b, const char *msg);
void ud_resp_add_errorf(struct ud_resp_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void ud_resp_add_int(struct ud_resp_buf *b, long long v);
void ud_resp_add_bulk(struct ud_resp_buf *b, const void *p, size_t n);
/* "$n\r\n" + n bytes left for the caller + "\r\n". Returns the offset in b of those n bytes, to
 * be filled (by offset: later appends may move b->data) before b is sent. */
size_t ud_resp_add_bulk_room(struct ud_resp_buf *b, size_t n);
void ud_resp_add_bulk_str(struct ud_resp_buf *b, const char *s);
void ud_resp_add_bulk_ull(struct ud_resp_buf *b, unsigned long long v); /* decimal text */
void ud_resp_add_null(struct ud_resp_buf *b);                           /* "$-1\r\n" */
void ud_resp_add_null_array(struct ud_resp_buf *b);                     /* "*-1\r\n" */
/* "*n\r\n": the n elements follow, each encoded by the calls above. */
void ud_resp_add_array(struct ud_resp_buf *b, size_t n);

/*
 * Writes a printable rendering of bytes (at most max of them) into out (size bytes, always
 * terminated) for error messages: control bytes, quotes and non-ASCII become \xHH, and "..." marks
 * a cut. Returns out.
 */
char *ud_resp_printable(char *out, size_t size, const uint8_t *p, size_t n, size_t max);

/* --- ordered replies -------------------------------------------------------------------------- */

/*
 * The replies of one connection, in request order. A command answers at once into
 * ud_resp_outq_buf(), or defers: ud_resp_outq_defer() reserves its place and returns a slot that
 * is filled and finished later (after raft commits a write). Bytes behind an unfinished slot wait
 * in the queue; `ready` holds everything that may be sent now.
 */
struct ud_resp_slot;

/* Spare slots kept per connection (a pipeline's worth of writes) and the largest buffer a spare
 * keeps: more would only hold memory after a burst or a long reply. At most 64 KiB per
 * connection, the size of its read buffer; write replies (+OK, :n) keep 256 bytes each. */
#define UD_RESP_MAX_SPARE_SLOTS     64
#define UD_RESP_MAX_SPARE_BUF_BYTES 1024

struct ud_resp_outq {
    struct ud_resp_buf ready;  /* bytes in order, ready to send */
    struct ud_resp_slot *head; /* replies behind the oldest unfinished slot */
    struct ud_resp_slot *tail;
    size_t pending; /* deferred slots not finished yet */
    size_t queued;  /* bytes held in slots */
    /* Slots already sent, kept with their small buffers for the next replies: a pipelined
     * batch of writes defers one slot per command, and allocating and freeing each (and its
     * buffer) went through the allocator's slow paths on every write. */
    struct ud_resp_slot *spare;
    size_t nspare;
    /* Called (if set) whenever a finish moves bytes to `ready`, or any slot finishes. */
    void (*on_ready)(struct ud_resp_outq *q, void *arg);
    void *arg;
};

void ud_resp_outq_init(struct ud_resp_outq *q);
/* Where the next immediate reply goes: `ready` when nothing is deferred, else a buffer queued
 * behind the last slot. Borrowed until the next call on q. */
struct ud_resp_buf *ud_resp_outq_buf(struct ud_resp_outq *q);
/* Reserves the next reply's place (aborts on allocation failure). */
struct ud_resp_slot *ud_resp_outq_defer(struct ud_resp_outq *q);
/* Bytes not yet handed to the socket: ready + queued. */
size_t ud_resp_outq_bytes(const struct ud_resp_outq *q);
/*
 * The connection is going away: frees everything; unfinished slots become orphans that their
 * finish frees. q may be reused after ud_resp_outq_init.
 */
void ud_resp_outq_detach(struct ud_resp_outq *q);

/* The slot's reply buffer (borrowed until ud_resp_slot_finish). */
struct ud_resp_buf *ud_resp_slot_buf(struct ud_resp_slot *s);
/* Marks the slot's reply complete: the slot is freed, and its bytes become sendable once every
 * earlier reply is complete (on_ready is called). An orphan's reply is dropped. */
void ud_resp_slot_finish(struct ud_resp_slot *s);

#endif
