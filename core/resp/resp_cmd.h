/*
 * RESP command layer: the command table, per-connection sessions and the read commands served
 * from the engine. A command takes plain data (its arguments, the session) and answers into the
 * connection's ordered reply queue, so everything here is tested without sockets. Binaries add
 * their own commands (the write commands of core/resp/resp_write.c, BARRIER). Loop thread
 * only.
 */
#ifndef UD_CORE_RESP_RESP_CMD_H
#define UD_CORE_RESP_RESP_CMD_H

#include <stddef.h>
#include <stdint.h>

#include "core/registry.h"
#include "core/resp/resp.h"

/* Largest reply a read command builds (MGET, HMGET, HGETALL); beyond it the command answers an
 * error naming the limit instead of making the server hold gigabytes for one client. */
#define UD_RESP_MAX_REPLY (64u << 20)

/* SCAN cursors remembered by one server (oldest forgotten first) and the largest COUNT. */
#define UD_RESP_MAX_CURSORS    4096
#define UD_RESP_MAX_SCAN_COUNT 1000

struct ud_resp_ctx;

/* One connection's state as commands see it. */
struct ud_resp_session {
    char ns[UD_NS_NAME_MAX + 1]; /* selected namespace */
    uint64_t id;                 /* CLIENT ID */
    char name[64];               /* CLIENT SETNAME */
    int quit;                    /* QUIT: close once the replies so far are sent */
    /* A MULTI was refused: every command up to EXEC or DISCARD is refused too (see
     * refuse_in_multi), so that a transaction a client sends in one go is never half applied. */
    int multi_refused;
};

/* One command being executed. Views valid during the handler call only. */
struct ud_resp_call {
    struct ud_resp_ctx *ctx;
    struct ud_resp_session *session;
    struct ud_resp_outq *q;
    size_t argc;
    const uint8_t *const *argv;
    const size_t *argvlen;
    void *app; /* ud_resp_ctx_options.app */
};

typedef void (*ud_resp_command_fn)(struct ud_resp_call *call);

enum ud_resp_command_flags {
    /* Reads data: runs only once every earlier command of its connection has answered, so that a
     * pipelined GET after a SET sees the SET (the SET answers after raft commits it). */
    UD_RESP_CMD_READ = 1,
    UD_RESP_CMD_WRITE = 2, /* changes data (reported by COMMAND INFO as "write") */
};

struct ud_resp_command {
    const char *name; /* lower case */
    int arity;        /* Redis's convention: n = exactly n words with the name, -n = at least n */
    unsigned flags;
    int first_key, last_key, key_step; /* key positions for COMMAND INFO (last -1: to the end) */
    ud_resp_command_fn fn;
    const char *summary; /* for COMMAND DOCS */
    const char *group;   /* "string", "hash", "generic", "connection", "server" */
};

struct ud_resp_ctx_options {
    struct ud_registry *registry; /* borrowed; outlives the context */
    const char *default_ns;       /* a new connection's namespace (copied) */
    /* Commands added by the binary (borrowed, static): consulted before the built-in table. */
    const struct ud_resp_command *commands;
    size_t ncommands;
    void *app;
    /* Appends the binary's INFO sections ("# Raft\r\nraft_leader:1\r\n") to text: all of them
     * when section is NULL, else only the one named (lower case). May be NULL. */
    void (*info)(void *app, const char *section, struct ud_resp_buf *text);
    const char *role; /* INFO "role" and HELLO: "writer", "relayer" */
    /* Takes the n records a write command encoded (core/resp/resp_write.h; ownership of records[]
     * and each record passes to it) and answers the command: +OK when count < 0, else :count, or
     * the write's error. Required when the binary lists those commands. */
    void (*submit)(struct ud_resp_call *c, uint8_t **records, size_t *lens, size_t n,
                   long long count);
    /* Reported by INFO and CONFIG GET (the server sets them). */
    int port;
    unsigned max_clients;
    unsigned idle_timeout_s; /* 0: never */
};

/* Counters kept by the context and the server, reported by INFO. */
struct ud_resp_stats {
    uint64_t connected_clients;
    uint64_t total_connections;
    uint64_t rejected_connections;
    uint64_t total_commands;
    uint64_t protocol_errors;
    uint64_t waited_commands; /* reads held back behind their connection's unanswered writes */
};

/* Creates a command context. The option strings are copied. Returns 0 or UD_ENOMEM. */
int ud_resp_ctx_new(const struct ud_resp_ctx_options *o, struct ud_resp_ctx **out, char *errmsg);
void ud_resp_ctx_free(struct ud_resp_ctx *ctx);
struct ud_resp_stats *ud_resp_ctx_stats(struct ud_resp_ctx *ctx);
/* The server learns its port after binding and reports it through INFO. */
void ud_resp_ctx_set_port(struct ud_resp_ctx *ctx, int port);

/* Starts a session on the default namespace with the next client id. */
void ud_resp_session_init(struct ud_resp_ctx *ctx, struct ud_resp_session *s);

enum ud_resp_exec_result {
    UD_RESP_EXEC_DONE = 0, /* answered (now or through a deferred slot) */
    UD_RESP_EXEC_WAIT = 1, /* a read behind unanswered writes: nothing done; run it again once
                            * q->pending is 0 */
};

/*
 * Looks up argv[0] (case-insensitive) and runs the command, answering into q: unknown commands
 * and wrong arity get Redis's errors ("ERR unknown command 'x', with args beginning with: ...",
 * "ERR wrong number of arguments for 'get' command"). argc >= 1.
 */
int ud_resp_exec(struct ud_resp_ctx *ctx, struct ud_resp_session *s, struct ud_resp_outq *q,
                 size_t argc, const uint8_t *const *argv, const size_t *argvlen);

/*
 * A batch: the commands a server executes from one connection's received bytes, in one go. Between
 * begin and end, consecutive GETs share one read of the namespace (engine.h, ud_kv_reader) and
 * their values are copied into the replies a few commands later; any other command, and the end,
 * completes them first. The replies in q are complete only after ud_resp_batch_end, which must run
 * before they are sent and before the loop turns: what the GETs see is fixed at the batch's first
 * GET, which is right only for requests received before it (a write acknowledged since then must
 * be visible to the next request the client sends). Without begin, every GET reads on its own.
 */
void ud_resp_batch_begin(struct ud_resp_ctx *ctx);
void ud_resp_batch_end(struct ud_resp_ctx *ctx);

/* --- for command implementations -------------------------------------------------------------- */

/* Where an immediate reply goes (borrowed until the handler returns). */
struct ud_resp_buf *ud_resp_reply(struct ud_resp_call *c);
/* Reserves the reply's place for an answer given later (ud_resp_slot_buf/ud_resp_slot_finish).
 * The connection holds back later reads until it is finished. */
struct ud_resp_slot *ud_resp_defer(struct ud_resp_call *c);

/* Case-insensitive comparison of argument i with a lower-case word. */
int ud_resp_arg_is(const struct ud_resp_call *c, size_t i, const char *word);

/*
 * Acquires the session's namespace. Returns 0 and *ns (release with ud_resp_release_ns), or
 * non-zero after replying "ERR unknown namespace 'x'".
 */
int ud_resp_acquire_ns(struct ud_resp_call *c, struct ud_ns **ns);
void ud_resp_release_ns(struct ud_resp_call *c, struct ud_ns *ns);

/*
 * Key checks: each replies the error stating the limit and returns non-zero, or returns 0.
 *   kv key:    "ERR empty keys are not supported", "ERR key is 600 bytes; the limit is 511"
 *   hash key:  "ERR hash key encodes to 520 bytes; the limit is 509 (NUL bytes count twice)"
 *   field:     "ERR empty field names are not supported", "ERR hash key (500 bytes) and field
 *              (20 bytes) encode to 520 bytes; the limit is 509 (NUL bytes in the key count
 *              twice)"
 * The limits are the engine's (core/keyspace.h): LMDB keys are at most 511 bytes.
 */
int ud_resp_check_kv_key(struct ud_resp_call *c, const uint8_t *key, size_t len);
/* ud_resp_check_kv_key on every argument from argv[first] on (MGET, EXISTS, DEL). */
int ud_resp_check_kv_keys(struct ud_resp_call *c, size_t first);
int ud_resp_check_row_key(struct ud_resp_call *c, const uint8_t *row, size_t row_len);
int ud_resp_check_field(struct ud_resp_call *c, const uint8_t *row, size_t row_len,
                        size_t field_len);

/*
 * Whether key names a KV entry (*kv = 1) and/or a row (*row = 1); a key too long for a row names
 * none. Returns 0, or the engine's read error (UD_EIO, UD_ENOMEM).
 */
int ud_resp_key_kinds(struct ud_ns *ns, const uint8_t *key, size_t len, int *kv, int *row);

/* The reply for an engine read failure: "ERR <what>: <strerror>" (for UD_EIO and the like). */
void ud_resp_reply_engine_error(struct ud_resp_buf *b, const char *what, int rc);

#endif
