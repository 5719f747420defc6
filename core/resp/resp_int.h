/* Shared inside core/resp: the command context and the built-in command handlers. */
#ifndef UD_CORE_RESP_RESP_INT_H
#define UD_CORE_RESP_RESP_INT_H

#include <stdint.h>

#include "core/keyspace.h"
#include "core/resp/resp_cmd.h"

#ifndef UD_VERSION_STRING
#define UD_VERSION_STRING "0.0.0"
#endif

/* The Redis version we answer to clients that check it (HELLO, INFO redis_version): the command
 * subset and replies follow Redis 7.0. */
#define UD_RESP_REDIS_VERSION "7.0.0"

/* A SCAN position: the next key to return. */
struct ud_resp_scan_pos {
    uint64_t id; /* the cursor naming it; 0: none */
    uint16_t key_len;
    uint8_t key[UD_MAX_KEY];
};

/* One SCAN iteration's slot: the cursor its last step returned, and the one before, which a
 * client repeating a step whose answer it lost sends again. Every cursor of a slot is congruent
 * to the slot's index modulo UD_RESP_MAX_CURSORS, and a slot's cursors only grow. */
struct ud_resp_cursor {
    char ns[UD_NS_NAME_MAX + 1];
    struct ud_resp_scan_pos cur, prev;
};

/*
 * Consecutive GETs of one connection's pipelined batch, between ud_resp_batch_begin and
 * ud_resp_batch_end (resp_batch.c). They share one namespace reference and one engine reader, and
 * each value is copied into its reply only after the next few GETs were looked up: the copy reads
 * lines prefetched meanwhile instead of waiting for each one.
 */
#define UD_RESP_BATCH_COPIES 16

struct ud_resp_value_copy {
    size_t off;         /* where the value goes in the batch's reply buffer */
    const uint8_t *src; /* the value where it lies: valid while the reader is open */
    size_t len;
};

struct ud_resp_batch {
    int enabled;                     /* between ud_resp_batch_begin and ud_resp_batch_end */
    struct ud_kv_reader *reader;     /* owned; allocated at first use, open while GETs share it */
    struct ud_ns *ns;                /* acquired while the reader is open */
    struct ud_resp_session *session; /* whose namespace the reader is open on */
    struct ud_resp_buf *buf;         /* the replies the pending copies go into */
    struct ud_resp_value_copy copies[UD_RESP_BATCH_COPIES]; /* a ring, oldest at head */
    size_t head, n;
};

/* Completes the pending copies and closes the reader (the batch stays enabled): before any other
 * command runs, since it may move reply bytes or read the namespace on its own. */
void ud_resp_batch_break(struct ud_resp_ctx *ctx);
/* GET inside an enabled batch. */
void ud_resp_batch_get(struct ud_resp_call *c);
/* The connection's engine reader, closed (a command other than GET runs only after the batch's
 * reader was closed), allocated at first use; NULL when out of memory. A command that opens it
 * closes it before it returns. */
struct ud_kv_reader *ud_resp_reader(struct ud_resp_ctx *ctx);

struct ud_resp_ctx {
    struct ud_registry *registry;
    char default_ns[UD_NS_NAME_MAX + 1];
    char role[32];
    void *app;
    void (*info)(void *app, const char *section, struct ud_resp_buf *text);
    void (*submit)(struct ud_resp_call *c, uint8_t **records, size_t *lens, size_t n,
                   long long count);
    int port;
    unsigned max_clients;
    unsigned idle_timeout_s;
    uint64_t started_ms; /* monotonic, for uptime */
    uint64_t next_client_id;
    struct ud_resp_stats stats;

    /* Every command, sorted by name: the binary's, then the built-in ones not overridden. */
    const struct ud_resp_command **commands;
    size_t ncommands;

    /* SCAN iterations: a ring of slots, one per iteration, indexed by cursor %
     * UD_RESP_MAX_CURSORS, allocated on first use; a new iteration takes the slot after the
     * previous new one's. */
    struct ud_resp_cursor *cursors;
    size_t cursor_next;

    struct ud_resp_batch batch;
};

/* Built-in commands (resp_cmd.c lists them; handlers in resp_admin.c and resp_read.c). */
extern const struct ud_resp_command ud_resp_builtin[];
extern const size_t ud_resp_nbuiltin;

void ud_resp_cmd_ping(struct ud_resp_call *c);
void ud_resp_cmd_echo(struct ud_resp_call *c);
void ud_resp_cmd_hello(struct ud_resp_call *c);
void ud_resp_cmd_auth(struct ud_resp_call *c);
void ud_resp_cmd_select(struct ud_resp_call *c);
void ud_resp_cmd_client(struct ud_resp_call *c);
void ud_resp_cmd_quit(struct ud_resp_call *c);
void ud_resp_cmd_command(struct ud_resp_call *c);
void ud_resp_cmd_config(struct ud_resp_call *c);
void ud_resp_cmd_info(struct ud_resp_call *c);
void ud_resp_cmd_time(struct ud_resp_call *c);

void ud_resp_cmd_get(struct ud_resp_call *c);
void ud_resp_cmd_mget(struct ud_resp_call *c);
void ud_resp_cmd_strlen(struct ud_resp_call *c);
void ud_resp_cmd_exists(struct ud_resp_call *c);
void ud_resp_cmd_type(struct ud_resp_call *c);
void ud_resp_cmd_scan(struct ud_resp_call *c);
void ud_resp_cmd_hget(struct ud_resp_call *c);
void ud_resp_cmd_hmget(struct ud_resp_call *c);
void ud_resp_cmd_hgetall(struct ud_resp_call *c);
void ud_resp_cmd_hkeys(struct ud_resp_call *c);
void ud_resp_cmd_hvals(struct ud_resp_call *c);
void ud_resp_cmd_hlen(struct ud_resp_call *c);
void ud_resp_cmd_hexists(struct ud_resp_call *c);

/* Redis's glob match (*, ?, [...], \x) on a NUL-free pattern; used for CONFIG GET names. */
int ud_resp_glob(const char *pattern, const char *s);

/* Parses a decimal argument as Redis does for integers. Returns 1 and *out, or 0. */
int ud_resp_arg_ll(const struct ud_resp_call *c, size_t i, long long *out);

#endif
