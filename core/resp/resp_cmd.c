/* RESP command table and dispatch: lookup, arity, read-after-write ordering, shared checks. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/err.h"
#include "core/resp/resp_int.h"

/* Key positions: first, last (-1: every argument from first on), step. */
#define NOKEYS 0, 0, 0
#define KEY1   1, 1, 1

/* The built-in commands: what redis-cli and redis-benchmark need, and the reads. The binary adds
 * its writes (writer/resp_write.c). */
const struct ud_resp_command ud_resp_builtin[] = {
    {"auth", -2, 0, NOKEYS, ud_resp_cmd_auth, "Authenticates the connection.", "connection"},
    {"client", -2, 0, NOKEYS, ud_resp_cmd_client, "CLIENT ID, SETNAME, GETNAME and SETINFO.",
     "connection"},
    {"command", -1, 0, NOKEYS, ud_resp_cmd_command,
     "Describes the commands: COMMAND, COMMAND COUNT, INFO, DOCS and LIST.", "server"},
    {"config", -2, 0, NOKEYS, ud_resp_cmd_config, "CONFIG GET of the settings clients ask for.",
     "server"},
    {"echo", 2, 0, NOKEYS, ud_resp_cmd_echo, "Returns the given string.", "connection"},
    {"exists", -2, UD_RESP_CMD_READ, 1, -1, 1, ud_resp_cmd_exists,
     "Counts the given keys that exist as a string or a hash.", "generic"},
    {"get", 2, UD_RESP_CMD_READ, KEY1, ud_resp_cmd_get, "Returns the string value of a key.",
     "string"},
    {"hello", -1, 0, NOKEYS, ud_resp_cmd_hello, "Handshake; only protocol version 2 is served.",
     "connection"},
    {"hexists", 3, UD_RESP_CMD_READ, KEY1, ud_resp_cmd_hexists,
     "Tells whether a field of a hash (row) exists.", "hash"},
    {"hget", 3, UD_RESP_CMD_READ, KEY1, ud_resp_cmd_hget,
     "Returns the value of a field of a hash (row).", "hash"},
    {"hgetall", 2, UD_RESP_CMD_READ, KEY1, ud_resp_cmd_hgetall,
     "Returns every field and value of a hash (row).", "hash"},
    {"hkeys", 2, UD_RESP_CMD_READ, KEY1, ud_resp_cmd_hkeys,
     "Returns the field names of a hash (row).", "hash"},
    {"hlen", 2, UD_RESP_CMD_READ, KEY1, ud_resp_cmd_hlen,
     "Returns the number of fields of a hash (row).", "hash"},
    {"hmget", -3, UD_RESP_CMD_READ, KEY1, ud_resp_cmd_hmget,
     "Returns the values of fields of a hash (row).", "hash"},
    {"hvals", 2, UD_RESP_CMD_READ, KEY1, ud_resp_cmd_hvals, "Returns the values of a hash (row).",
     "hash"},
    {"info", -1, 0, NOKEYS, ud_resp_cmd_info,
     "Server, clients, stats, replication and namespace information.", "server"},
    {"mget", -2, UD_RESP_CMD_READ, 1, -1, 1, ud_resp_cmd_mget,
     "Returns the values of several keys.", "string"},
    {"ping", -1, 0, NOKEYS, ud_resp_cmd_ping, "Returns PONG, or the given string.", "connection"},
    {"quit", -1, 0, NOKEYS, ud_resp_cmd_quit, "Closes the connection after the replies so far.",
     "connection"},
    {"scan", -2, UD_RESP_CMD_READ, NOKEYS, ud_resp_cmd_scan,
     "Iterates keys in order: MATCH prefix*, COUNT, TYPE string|hash.", "generic"},
    {"select", 2, 0, NOKEYS, ud_resp_cmd_select,
     "Selects a namespace by name, or by index (0: the default namespace, then name order).",
     "connection"},
    {"strlen", 2, UD_RESP_CMD_READ, KEY1, ud_resp_cmd_strlen,
     "Returns the length of the string value of a key.", "string"},
    {"time", 1, 0, NOKEYS, ud_resp_cmd_time, "Returns the server time.", "server"},
    {"type", 2, UD_RESP_CMD_READ, KEY1, ud_resp_cmd_type, "Returns string, hash or none for a key.",
     "generic"},
};
const size_t ud_resp_nbuiltin = sizeof ud_resp_builtin / sizeof ud_resp_builtin[0];

static int cmp_command(const void *a, const void *b)
{
    const struct ud_resp_command *x = *(const struct ud_resp_command *const *)a;
    const struct ud_resp_command *y = *(const struct ud_resp_command *const *)b;
    return strcmp(x->name, y->name);
}

int ud_resp_ctx_new(const struct ud_resp_ctx_options *o, struct ud_resp_ctx **out, char *errmsg)
{
    struct ud_resp_ctx *ctx = calloc(1, sizeof *ctx);
    size_t max = o->ncommands + ud_resp_nbuiltin;
    if (ctx == NULL || (ctx->commands = calloc(max, sizeof *ctx->commands)) == NULL) {
        free(ctx);
        return ud_errf(errmsg, UD_ENOMEM, "resp: out of memory");
    }
    ctx->registry = o->registry;
    snprintf(ctx->default_ns, sizeof ctx->default_ns, "%s",
             o->default_ns != NULL ? o->default_ns : "default");
    snprintf(ctx->role, sizeof ctx->role, "%s", o->role != NULL ? o->role : "writer");
    ctx->app = o->app;
    ctx->info = o->info;
    ctx->submit = o->submit;
    ctx->port = o->port;
    ctx->max_clients = o->max_clients;
    ctx->idle_timeout_s = o->idle_timeout_s;
    ctx->started_ms = ud_mono_ns() / 1000000;
    ctx->next_client_id = 1;
    for (size_t i = 0; i < o->ncommands; i++)
        ctx->commands[ctx->ncommands++] = &o->commands[i];
    for (size_t i = 0; i < ud_resp_nbuiltin; i++) {
        int overridden = 0;
        for (size_t j = 0; j < o->ncommands; j++)
            overridden |= strcmp(o->commands[j].name, ud_resp_builtin[i].name) == 0;
        if (!overridden)
            ctx->commands[ctx->ncommands++] = &ud_resp_builtin[i];
    }
    qsort(ctx->commands, ctx->ncommands, sizeof *ctx->commands, cmp_command);
    *out = ctx;
    return 0;
}

void ud_resp_ctx_free(struct ud_resp_ctx *ctx)
{
    if (ctx == NULL)
        return;
    /* A batch still open: its replies' buffers may be gone already; only the read is closed. */
    ctx->batch.n = 0;
    ud_resp_batch_end(ctx);
    ud_kv_reader_free(ctx->batch.reader);
    free(ctx->commands);
    free(ctx->cursors);
    free(ctx);
}

struct ud_resp_stats *ud_resp_ctx_stats(struct ud_resp_ctx *ctx)
{
    return &ctx->stats;
}

void ud_resp_ctx_set_port(struct ud_resp_ctx *ctx, int port)
{
    ctx->port = port;
}

void ud_resp_session_init(struct ud_resp_ctx *ctx, struct ud_resp_session *s)
{
    memset(s, 0, sizeof *s);
    snprintf(s->ns, sizeof s->ns, "%s", ctx->default_ns);
    s->id = ctx->next_client_id++;
}

/* Command names are matched case-insensitively: lower-case into a small buffer, then bsearch. */
static const struct ud_resp_command *lookup(const struct ud_resp_ctx *ctx, const uint8_t *name,
                                            size_t len)
{
    char lower[32];
    if (len == 0 || len >= sizeof lower)
        return NULL;
    for (size_t i = 0; i < len; i++) {
        uint8_t ch = name[i];
        if (ch == 0)
            return NULL;
        lower[i] = (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
    }
    lower[len] = '\0';
    size_t lo = 0, hi = ctx->ncommands;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int r = strcmp(lower, ctx->commands[mid]->name);
        if (r == 0)
            return ctx->commands[mid];
        if (r < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

/* At most max bytes of an argument, as Redis's "%.128s" formats it: cut at the first NUL byte,
 * other bytes unchanged (the error encoder turns CR and LF into spaces, as Redis does). */
static void argument_text(char *out, size_t size, const uint8_t *p, size_t n, size_t max)
{
    size_t o = 0;
    while (o < n && o < max && o + 1 < size && p[o] != 0) {
        out[o] = (char)p[o];
        o++;
    }
    out[o] = '\0';
}

/* Redis's message for an unknown command, byte for byte: the name and the first arguments, each
 * quoted, cut at 128 bytes. */
static void reply_unknown(struct ud_resp_buf *b, size_t argc, const uint8_t *const *argv,
                          const size_t *argvlen)
{
    char name[129];
    char args[400];
    size_t o = 0;
    argument_text(name, sizeof name, argv[0], argvlen[0], 128);
    args[0] = '\0';
    for (size_t i = 1; i < argc && o < 128; i++) {
        char one[129];
        argument_text(one, sizeof one, argv[i], argvlen[i], 128 - o);
        int n = snprintf(args + o, sizeof args - o, "'%s' ", one);
        if (n < 0 || (size_t)n >= sizeof args - o)
            break;
        o += (size_t)n;
    }
    ud_resp_add_errorf(b, "ERR unknown command '%s', with args beginning with: %s", name, args);
}

static int word_is(const uint8_t *a, size_t len, const char *word)
{
    size_t n = strlen(word);
    if (len != n)
        return 0;
    for (size_t k = 0; k < n; k++)
        if ((a[k] >= 'A' && a[k] <= 'Z' ? a[k] + 32 : a[k]) != (uint8_t)word[k])
            return 0;
    return 1;
}

/*
 * MULTI, EXEC and DISCARD. Transactions are not served, yet clients send MULTI, the commands and
 * EXEC in one go (redis-py's pipeline() does by default) and read the answers afterwards: had
 * only MULTI been refused, the commands would run one by one, unguarded, and the client would
 * learn of the failure from EXEC after its writes had been applied. So a refused MULTI refuses
 * everything up to EXEC (answered as Redis answers a transaction one of whose commands could not
 * be queued) or DISCARD; QUIT still closes. Returns 1 when the command was answered here.
 */
static int refuse_in_multi(struct ud_resp_ctx *ctx, struct ud_resp_session *s,
                           struct ud_resp_outq *q, const uint8_t *name, size_t len)
{
    struct ud_resp_buf *b = ud_resp_outq_buf(q);
    if (word_is(name, len, "multi")) {
        ctx->stats.total_commands++;
        if (s->multi_refused) {
            ud_resp_add_error(b, "ERR MULTI calls can not be nested");
            return 1;
        }
        s->multi_refused = 1;
        ud_resp_add_error(b, "ERR MULTI is not supported: transactions are served by the HTTP "
                             "API; the commands up to EXEC or DISCARD are refused, none runs");
        return 1;
    }
    if (word_is(name, len, "exec") || word_is(name, len, "discard")) {
        ctx->stats.total_commands++;
        int exec = len == 4;
        if (!s->multi_refused)
            ud_resp_add_error(b, exec ? "ERR EXEC without MULTI" : "ERR DISCARD without MULTI");
        else if (exec)
            ud_resp_add_error(b, "EXECABORT Transaction discarded because of previous errors.");
        else
            ud_resp_add_simple(b, "OK");
        s->multi_refused = 0;
        return 1;
    }
    if (!s->multi_refused || word_is(name, len, "quit"))
        return 0;
    ctx->stats.total_commands++;
    ud_resp_add_error(b, "ERR command not run: MULTI was refused, and every command up to EXEC "
                         "or DISCARD is");
    return 1;
}

int ud_resp_exec(struct ud_resp_ctx *ctx, struct ud_resp_session *s, struct ud_resp_outq *q,
                 size_t argc, const uint8_t *const *argv, const size_t *argvlen)
{
    const struct ud_resp_command *cmd = lookup(ctx, argv[0], argvlen[0]);
    if ((cmd == NULL || cmd->fn != ud_resp_cmd_get || s->multi_refused) &&
        (ctx->batch.ns != NULL || ctx->batch.n > 0))
        ud_resp_batch_break(ctx);
    if (cmd == NULL || s->multi_refused) {
        if (refuse_in_multi(ctx, s, q, argv[0], argvlen[0]))
            return UD_RESP_EXEC_DONE;
    }
    if (cmd == NULL) {
        ctx->stats.total_commands++;
        reply_unknown(ud_resp_outq_buf(q), argc, argv, argvlen);
        return UD_RESP_EXEC_DONE;
    }
    if ((cmd->flags & UD_RESP_CMD_READ) && q->pending > 0) {
        ctx->stats.waited_commands++;
        return UD_RESP_EXEC_WAIT;
    }
    ctx->stats.total_commands++;
    if ((cmd->arity > 0 && argc != (size_t)cmd->arity) ||
        (cmd->arity < 0 && argc < (size_t)-cmd->arity)) {
        ud_resp_add_errorf(ud_resp_outq_buf(q), "ERR wrong number of arguments for '%s' command",
                           cmd->name);
        return UD_RESP_EXEC_DONE;
    }
    struct ud_resp_call call = {
        .ctx = ctx,
        .session = s,
        .q = q,
        .argc = argc,
        .argv = argv,
        .argvlen = argvlen,
        .app = ctx->app,
    };
    cmd->fn(&call);
    return UD_RESP_EXEC_DONE;
}

/* --- helpers for command implementations ------------------------------------------------------ */

struct ud_resp_buf *ud_resp_reply(struct ud_resp_call *c)
{
    return ud_resp_outq_buf(c->q);
}

struct ud_resp_slot *ud_resp_defer(struct ud_resp_call *c)
{
    return ud_resp_outq_defer(c->q);
}

int ud_resp_arg_is(const struct ud_resp_call *c, size_t i, const char *word)
{
    return i < c->argc && word_is(c->argv[i], c->argvlen[i], word);
}

int ud_resp_arg_ll(const struct ud_resp_call *c, size_t i, long long *out)
{
    const uint8_t *s = c->argv[i];
    size_t n = c->argvlen[i];
    size_t k = 0;
    int neg = 0;
    unsigned long long v = 0;
    if (n == 0 || n > 20)
        return 0;
    if (s[0] == '-') {
        neg = 1;
        k = 1;
        if (n == 1)
            return 0;
    }
    /* Redis's integers have no leading zeros: "0" is zero, "00", "-0" and "010" are not numbers. */
    if (s[k] == '0' && n > 1)
        return 0;
    for (; k < n; k++) {
        if (s[k] < '0' || s[k] > '9')
            return 0;
        unsigned d = (unsigned)(s[k] - '0');
        if (v > (~0ull - d) / 10)
            return 0;
        v = v * 10 + d;
    }
    if (v > (unsigned long long)INT64_MAX + (unsigned long long)neg)
        return 0;
    *out = neg ? (long long)(0ull - v) : (long long)v;
    return 1;
}

int ud_resp_acquire_ns(struct ud_resp_call *c, struct ud_ns **ns)
{
    if (ud_registry_acquire(c->ctx->registry, c->session->ns, ns) == 0)
        return 0;
    ud_resp_add_errorf(ud_resp_reply(c),
                       "ERR unknown namespace '%s' (it was deleted; SELECT another one)",
                       c->session->ns);
    return -1;
}

void ud_resp_release_ns(struct ud_resp_call *c, struct ud_ns *ns)
{
    ud_registry_release(c->ctx->registry, ns);
}

int ud_resp_check_kv_key(struct ud_resp_call *c, const uint8_t *key, size_t len)
{
    (void)key;
    if (len == 0) {
        ud_resp_add_error(ud_resp_reply(c), "ERR empty keys are not supported");
        return -1;
    }
    if (len > UD_MAX_KV_KEY) {
        ud_resp_add_errorf(ud_resp_reply(c), "ERR key is %zu bytes; the limit is %d", len,
                           UD_MAX_KV_KEY);
        return -1;
    }
    return 0;
}

int ud_resp_check_kv_keys(struct ud_resp_call *c, size_t first)
{
    for (size_t i = first; i < c->argc; i++)
        if (ud_resp_check_kv_key(c, c->argv[i], c->argvlen[i]) != 0)
            return -1;
    return 0;
}

int ud_resp_check_row_key(struct ud_resp_call *c, const uint8_t *row, size_t row_len)
{
    if (row_len == 0) {
        ud_resp_add_error(ud_resp_reply(c), "ERR empty keys are not supported");
        return -1;
    }
    /* esc(row) 00 00: the separator is outside the limit, as in the engine's check. */
    size_t encoded = ud_row_prefix_len(row, row_len) - 2;
    if (encoded > UD_MAX_ROW_KEY_ENCODED) {
        ud_resp_add_errorf(ud_resp_reply(c),
                           "ERR hash key encodes to %zu bytes; the limit is %d (NUL bytes count "
                           "twice)",
                           encoded, UD_MAX_ROW_KEY_ENCODED);
        return -1;
    }
    return 0;
}

int ud_resp_check_field(struct ud_resp_call *c, const uint8_t *row, size_t row_len,
                        size_t field_len)
{
    if (field_len == 0) {
        ud_resp_add_error(ud_resp_reply(c), "ERR empty field names are not supported");
        return -1;
    }
    size_t encoded = ud_row_prefix_len(row, row_len) - 2 + field_len;
    if (encoded > UD_MAX_ROW_KEY_ENCODED) {
        ud_resp_add_errorf(ud_resp_reply(c),
                           "ERR hash key (%zu bytes) and field (%zu bytes) encode to %zu bytes; "
                           "the limit is %d (NUL bytes in the key count twice)",
                           row_len, field_len, encoded, UD_MAX_ROW_KEY_ENCODED);
        return -1;
    }
    return 0;
}

void ud_resp_reply_engine_error(struct ud_resp_buf *b, const char *what, int rc)
{
    ud_resp_add_errorf(b, "ERR %s: %s", what, ud_strerror(rc));
}

/* Matches one pattern token (?, [...], \x or a literal) at *p against c; advances *p past it. */
static int glob_one(const char **pp, char c)
{
    const char *p = *pp;
    int match = 0;
    if (*p == '?') {
        match = 1;
        p++;
    } else if (*p == '[') {
        int neg = p[1] == '^';
        p += neg ? 2 : 1;
        while (*p != '\0' && *p != ']') {
            if (*p == '\\' && p[1] != '\0') {
                p++;
                match |= *p == c;
            } else if (p[1] == '-' && p[2] != '\0' && p[2] != ']') {
                char lo = p[0] < p[2] ? p[0] : p[2];
                char hi = p[0] < p[2] ? p[2] : p[0];
                match |= c >= lo && c <= hi;
                p += 2;
            } else {
                match |= *p == c;
            }
            p++;
        }
        if (*p == ']')
            p++;
        match = match != neg;
    } else {
        if (*p == '\\' && p[1] != '\0')
            p++;
        match = *p == c;
        p++;
    }
    *pp = p;
    return match;
}

/* Iterative, backtracking only to the last '*': linear in pattern times string, so a pattern full
 * of stars cannot make CONFIG GET expensive. */
int ud_resp_glob(const char *p, const char *s)
{
    const char *star_p = NULL, *star_s = NULL;
    while (*s != '\0') {
        if (*p == '*') {
            while (*p == '*')
                p++;
            if (*p == '\0')
                return 1;
            star_p = p;
            star_s = s;
            continue;
        }
        const char *next = p;
        if (*p != '\0' && glob_one(&next, *s)) {
            p = next;
            s++;
            continue;
        }
        if (star_p == NULL)
            return 0;
        p = star_p;
        s = ++star_s;
    }
    while (*p == '*')
        p++;
    return *p == '\0';
}
