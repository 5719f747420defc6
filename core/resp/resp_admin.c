/* Connection and server commands: PING, ECHO, HELLO, AUTH, SELECT, CLIENT, QUIT, COMMAND, CONFIG,
 * INFO, TIME. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/err.h"
#include "core/resp/resp_int.h"

void ud_resp_cmd_ping(struct ud_resp_call *c)
{
    if (c->argc > 2) {
        ud_resp_add_error(ud_resp_reply(c), "ERR wrong number of arguments for 'ping' command");
        return;
    }
    if (c->argc == 2)
        ud_resp_add_bulk(ud_resp_reply(c), c->argv[1], c->argvlen[1]);
    else
        ud_resp_add_simple(ud_resp_reply(c), "PONG");
}

void ud_resp_cmd_echo(struct ud_resp_call *c)
{
    ud_resp_add_bulk(ud_resp_reply(c), c->argv[1], c->argvlen[1]);
}

void ud_resp_cmd_quit(struct ud_resp_call *c)
{
    ud_resp_add_simple(ud_resp_reply(c), "OK");
    c->session->quit = 1;
}

void ud_resp_cmd_time(struct ud_resp_call *c)
{
    uint64_t ns = ud_now_ns();
    struct ud_resp_buf *b = ud_resp_reply(c);
    ud_resp_add_array(b, 2);
    ud_resp_add_bulk_ull(b, ns / 1000000000u);
    ud_resp_add_bulk_ull(b, ns % 1000000000u / 1000u);
}

/* --- authentication: there are no passwords, so behave as Redis's passwordless default user. */

static int check_auth(struct ud_resp_call *c, size_t user)
{
    if (c->argvlen[user] == 7 && memcmp(c->argv[user], "default", 7) == 0)
        return 0;
    ud_resp_add_error(ud_resp_reply(c),
                      "WRONGPASS invalid username-password pair or user is disabled.");
    return -1;
}

void ud_resp_cmd_auth(struct ud_resp_call *c)
{
    if (c->argc == 2) {
        ud_resp_add_error(ud_resp_reply(c),
                          "ERR AUTH <password> called without any password configured for the "
                          "default user. Are you sure your configuration is correct?");
        return;
    }
    if (c->argc != 3) {
        ud_resp_add_error(ud_resp_reply(c), "ERR syntax error");
        return;
    }
    if (check_auth(c, 1) == 0)
        ud_resp_add_simple(ud_resp_reply(c), "OK");
}

static int set_client_name(struct ud_resp_call *c, size_t i)
{
    const uint8_t *n = c->argv[i];
    size_t len = c->argvlen[i];
    if (len >= sizeof c->session->name) {
        ud_resp_add_errorf(ud_resp_reply(c), "ERR client names are at most %zu bytes",
                           sizeof c->session->name - 1);
        return -1;
    }
    for (size_t k = 0; k < len; k++) {
        if (n[k] < '!' || n[k] > '~') {
            ud_resp_add_error(ud_resp_reply(c), "ERR Client names cannot contain spaces, "
                                                "newlines or special characters.");
            return -1;
        }
    }
    memcpy(c->session->name, n, len);
    c->session->name[len] = '\0';
    return 0;
}

/* A relayer serves reads only: clients that route writes by role (Redis's replicas say "replica"
 * in HELLO and "slave" in INFO) must not take it for a primary. A writer takes writes (a
 * follower forwards them), so it is a master. */
static int is_replica(const struct ud_resp_ctx *ctx)
{
    return strcmp(ctx->role, "relayer") == 0;
}

void ud_resp_cmd_hello(struct ud_resp_call *c)
{
    if (c->argc >= 2) {
        long long ver;
        if (!ud_resp_arg_ll(c, 1, &ver)) {
            ud_resp_add_error(ud_resp_reply(c),
                              "ERR Protocol version is not an integer or out of range");
            return;
        }
        if (ver < 2 || ver > 3) {
            ud_resp_add_error(ud_resp_reply(c), "NOPROTO unsupported protocol version");
            return;
        }
        if (ver != 2) {
            ud_resp_add_errorf(ud_resp_reply(c),
                               "NOPROTO sorry, this protocol version is not supported: only "
                               "RESP2 (HELLO 2) is served, RESP%lld is not",
                               ver);
            return;
        }
        for (size_t i = 2; i < c->argc; i++) {
            if (ud_resp_arg_is(c, i, "auth") && i + 2 < c->argc) {
                if (check_auth(c, i + 1) != 0)
                    return;
                i += 2;
            } else if (ud_resp_arg_is(c, i, "setname") && i + 1 < c->argc) {
                if (set_client_name(c, i + 1) != 0)
                    return;
                i += 1;
            } else {
                char opt[64];
                ud_resp_printable(opt, sizeof opt, c->argv[i], c->argvlen[i], 32);
                ud_resp_add_errorf(ud_resp_reply(c), "ERR Syntax error in HELLO option '%s'", opt);
                return;
            }
        }
    }
    struct ud_resp_buf *b = ud_resp_reply(c);
    ud_resp_add_array(b, 14);
    ud_resp_add_bulk_str(b, "server");
    ud_resp_add_bulk_str(b, "unisondb");
    ud_resp_add_bulk_str(b, "version");
    ud_resp_add_bulk_str(b, UD_RESP_REDIS_VERSION);
    ud_resp_add_bulk_str(b, "proto");
    ud_resp_add_int(b, 2);
    ud_resp_add_bulk_str(b, "id");
    ud_resp_add_int(b, (long long)c->session->id);
    ud_resp_add_bulk_str(b, "mode");
    ud_resp_add_bulk_str(b, "standalone");
    ud_resp_add_bulk_str(b, "role");
    ud_resp_add_bulk_str(b, is_replica(c->ctx) ? "replica" : "master");
    ud_resp_add_bulk_str(b, "modules");
    ud_resp_add_array(b, 0);
}

/* --- SELECT ----------------------------------------------------------------------------------- */

/*
 * Namespace indexes (SELECT n, INFO namespaces): 0 is the namespace every connection starts on
 * (the default namespace, when it exists), then the others in name order. Index 0 has to be where
 * a connection already is: Redis clients treat a new connection as being on database 0 and never
 * send SELECT 0 (`redis-cli -n 0` does not), so with plain name order `-n 0` would silently use
 * the default namespace whenever another name sorts before it.
 */
struct ns_walk {
    const char *first; /* the default namespace when it exists, else NULL */
    size_t next;       /* index of the next namespace in name order */
    void (*fn)(void *arg, const char *name, size_t index);
    void *arg;
};

static void ns_walk_one(void *arg, const char *name)
{
    struct ns_walk *w = arg;
    if (w->first == NULL || strcmp(name, w->first) != 0)
        w->fn(w->arg, name, w->next++);
}

/* Calls fn for every namespace with its index, in index order; *n is how many there were.
 * Returns 0, or UD_ENOMEM when the others than the default could not be listed. */
static int ns_by_index(struct ud_resp_ctx *ctx,
                       void (*fn)(void *arg, const char *name, size_t index), void *arg, size_t *n)
{
    struct ns_walk w = {.fn = fn, .arg = arg};
    struct ud_ns *ns;
    if (ctx->default_ns[0] != '\0' &&
        ud_registry_acquire(ctx->registry, ctx->default_ns, &ns) == 0) {
        ud_registry_release(ctx->registry, ns);
        w.first = ctx->default_ns;
        w.next = 1;
        fn(arg, ctx->default_ns, 0);
    }
    int rc = ud_registry_list(ctx->registry, ns_walk_one, &w, NULL);
    *n = w.next;
    return rc;
}

struct pick {
    size_t want;
    char name[UD_NS_NAME_MAX + 1];  /* the namespace of index want */
    char first[UD_NS_NAME_MAX + 1]; /* the namespace of index 0 */
};

static void pick_nth(void *arg, const char *name, size_t index)
{
    struct pick *p = arg;
    if (index == p->want)
        snprintf(p->name, sizeof p->name, "%s", name);
    if (index == 0)
        snprintf(p->first, sizeof p->first, "%s", name);
}

struct pick_name {
    const char *name;
    long long index; /* of name, or -1 */
};

static void find_named(void *arg, const char *name, size_t index)
{
    struct pick_name *p = arg;
    if (strcmp(name, p->name) == 0)
        p->index = (long long)index;
}

/*
 * SELECT <name> picks that namespace; SELECT <n> picks the namespace of index n (ns_by_index: 0
 * is the default namespace, then name order), so `redis-cli -n 1` works. A namespace whose name
 * is all digits is found by name first.
 */
void ud_resp_cmd_select(struct ud_resp_call *c)
{
    char name[UD_NS_NAME_MAX + 1];
    const uint8_t *a = c->argv[1];
    size_t len = c->argvlen[1];
    struct ud_ns *ns;
    if (len <= UD_NS_NAME_MAX && memchr(a, 0, len) == NULL) {
        memcpy(name, a, len);
        name[len] = '\0';
        if (ud_ns_name_valid(name) && ud_registry_acquire(c->ctx->registry, name, &ns) == 0) {
            ud_registry_release(c->ctx->registry, ns);
            memcpy(c->session->ns, name, len + 1);
            ud_resp_add_simple(ud_resp_reply(c), "OK");
            return;
        }
    }
    long long idx;
    if (ud_resp_arg_ll(c, 1, &idx)) {
        struct pick p = {.want = idx < 0 ? SIZE_MAX : (size_t)idx};
        size_t n;
        if (ns_by_index(c->ctx, pick_nth, &p, &n) != 0) {
            ud_resp_add_errorf(ud_resp_reply(c), "ERR out of memory listing the namespaces");
            return;
        }
        if (idx < 0 || (size_t)idx >= n || p.name[0] == '\0') {
            if (n > 0 && strcmp(c->ctx->default_ns, p.first) == 0)
                ud_resp_add_errorf(ud_resp_reply(c),
                                   "ERR namespace index %lld is out of range: there are %zu "
                                   "namespaces (0 is '%s', then the others in name order)",
                                   idx, n, p.first);
            else
                ud_resp_add_errorf(ud_resp_reply(c),
                                   "ERR namespace index %lld is out of range: there are %zu "
                                   "namespaces (indexes count from 0 in name order)",
                                   idx, n);
            return;
        }
        snprintf(c->session->ns, sizeof c->session->ns, "%s", p.name);
        ud_resp_add_simple(ud_resp_reply(c), "OK");
        return;
    }
    char shown[160];
    ud_resp_printable(shown, sizeof shown, a, len, 100);
    ud_resp_add_errorf(ud_resp_reply(c), "ERR unknown namespace '%s'", shown);
}

/* Whether a subcommand has its number of arguments, counted with the command as Redis's arity
 * (n exactly, -n at least n); if not, Redis's error naming it as "client|id" and false. */
static int subcommand_arity(struct ud_resp_call *c, const char *full_name, int arity)
{
    if (arity >= 0 ? c->argc == (size_t)arity : c->argc >= (size_t)-arity)
        return 1;
    ud_resp_add_errorf(ud_resp_reply(c), "ERR wrong number of arguments for '%s' command",
                       full_name);
    return 0;
}

/* --- CLIENT ----------------------------------------------------------------------------------- */

void ud_resp_cmd_client(struct ud_resp_call *c)
{
    struct ud_resp_buf *b;
    static const struct {
        const char *name, *full_name;
        int arity;
    } subs[] = {{"id", "client|id", 2},
                {"setname", "client|setname", 3},
                {"getname", "client|getname", 2},
                {"setinfo", "client|setinfo", 4},
                {"info", "client|info", 2}};
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++)
        if (ud_resp_arg_is(c, 1, subs[i].name) &&
            !subcommand_arity(c, subs[i].full_name, subs[i].arity))
            return;
    if (ud_resp_arg_is(c, 1, "id")) {
        ud_resp_add_int(ud_resp_reply(c), (long long)c->session->id);
    } else if (ud_resp_arg_is(c, 1, "setname")) {
        if (set_client_name(c, 2) == 0)
            ud_resp_add_simple(ud_resp_reply(c), "OK");
    } else if (ud_resp_arg_is(c, 1, "getname")) {
        b = ud_resp_reply(c);
        if (c->session->name[0] != '\0')
            ud_resp_add_bulk_str(b, c->session->name);
        else
            ud_resp_add_null(b);
    } else if (ud_resp_arg_is(c, 1, "setinfo")) {
        /* Client libraries announce themselves (redis-py, go-redis); nothing to keep. */
        if (ud_resp_arg_is(c, 2, "lib-name") || ud_resp_arg_is(c, 2, "lib-ver")) {
            ud_resp_add_simple(ud_resp_reply(c), "OK");
        } else {
            char opt[64];
            ud_resp_printable(opt, sizeof opt, c->argv[2], c->argvlen[2], 32);
            ud_resp_add_errorf(ud_resp_reply(c), "ERR Unrecognized option '%s'", opt);
        }
    } else if (ud_resp_arg_is(c, 1, "info")) {
        /* db is the selected namespace's SELECT index, as clients parse it as an integer
         * (redis-py does); ns names it. -1: the namespace was deleted since. */
        struct pick_name f = {.name = c->session->ns, .index = -1};
        size_t n;
        (void)ns_by_index(c->ctx, find_named, &f, &n);
        char line[512];
        snprintf(line, sizeof line,
                 "id=%llu name=%s flags=N db=%lld sub=0 psub=0 multi=-1 user=default resp=2 "
                 "ns=%s\n",
                 (unsigned long long)c->session->id, c->session->name, f.index, c->session->ns);
        ud_resp_add_bulk_str(ud_resp_reply(c), line);
    } else {
        char sub[64];
        ud_resp_printable(sub, sizeof sub, c->argv[1], c->argvlen[1], 32);
        ud_resp_add_errorf(ud_resp_reply(c),
                           "ERR CLIENT %s is not supported (ID, SETNAME, GETNAME, SETINFO and "
                           "INFO are)",
                           sub);
    }
}

/* --- COMMAND ---------------------------------------------------------------------------------- */

static const struct ud_resp_command *find_command(struct ud_resp_ctx *ctx, const uint8_t *name,
                                                  size_t len)
{
    for (size_t i = 0; i < ctx->ncommands; i++) {
        const char *n = ctx->commands[i]->name;
        if (strlen(n) != len)
            continue;
        size_t k = 0;
        for (; k < len; k++) {
            uint8_t ch = name[k];
            if ((ch >= 'A' && ch <= 'Z' ? ch + 32 : ch) != (uint8_t)n[k])
                break;
        }
        if (k == len)
            return ctx->commands[i];
    }
    return NULL;
}

/* Redis 7's ten-element command description. */
static void add_command_info(struct ud_resp_buf *b, const struct ud_resp_command *cmd)
{
    char cat[40];
    ud_resp_add_array(b, 10);
    ud_resp_add_bulk_str(b, cmd->name);
    ud_resp_add_int(b, cmd->arity);
    if (cmd->flags & UD_RESP_CMD_WRITE) {
        ud_resp_add_array(b, 1);
        ud_resp_add_simple(b, "write");
    } else if (cmd->flags & UD_RESP_CMD_READ) {
        ud_resp_add_array(b, 1);
        ud_resp_add_simple(b, "readonly");
    } else {
        ud_resp_add_array(b, 1);
        ud_resp_add_simple(b, "fast");
    }
    ud_resp_add_int(b, cmd->first_key);
    ud_resp_add_int(b, cmd->last_key);
    ud_resp_add_int(b, cmd->key_step);
    snprintf(cat, sizeof cat, "@%s", cmd->group);
    ud_resp_add_array(b, 2);
    ud_resp_add_simple(b, cmd->flags & UD_RESP_CMD_WRITE  ? "@write"
                          : cmd->flags & UD_RESP_CMD_READ ? "@read"
                                                          : "@fast");
    ud_resp_add_simple(b, cat);
    ud_resp_add_array(b, 0); /* tips */
    ud_resp_add_array(b, 0); /* key specs */
    ud_resp_add_array(b, 0); /* subcommands */
}

/* COMMAND DOCS entry in RESP2 (a map flattened to an array): what redis-cli reads for help. */
static void add_command_docs(struct ud_resp_buf *b, const struct ud_resp_command *cmd)
{
    ud_resp_add_bulk_str(b, cmd->name);
    ud_resp_add_array(b, 6);
    ud_resp_add_bulk_str(b, "summary");
    ud_resp_add_bulk_str(b, cmd->summary != NULL ? cmd->summary : "");
    ud_resp_add_bulk_str(b, "since");
    ud_resp_add_bulk_str(b, "1.0.0");
    ud_resp_add_bulk_str(b, "group");
    ud_resp_add_bulk_str(b, cmd->group != NULL ? cmd->group : "generic");
}

void ud_resp_cmd_command(struct ud_resp_call *c)
{
    struct ud_resp_ctx *ctx = c->ctx;
    struct ud_resp_buf *b = ud_resp_reply(c);
    if (c->argc == 1) {
        ud_resp_add_array(b, ctx->ncommands);
        for (size_t i = 0; i < ctx->ncommands; i++)
            add_command_info(b, ctx->commands[i]);
    } else if (ud_resp_arg_is(c, 1, "count")) {
        if (subcommand_arity(c, "command|count", 2))
            ud_resp_add_int(b, (long long)ctx->ncommands);
    } else if (ud_resp_arg_is(c, 1, "list") && c->argc > 2) {
        /* Refused by name only where Redis would filter (FILTERBY, one of its filter types, an
         * argument); any other form is Redis's syntax error. */
        if (c->argc == 5 && ud_resp_arg_is(c, 2, "filterby") &&
            (ud_resp_arg_is(c, 3, "module") || ud_resp_arg_is(c, 3, "aclcat") ||
             ud_resp_arg_is(c, 3, "pattern")))
            ud_resp_add_error(b, "ERR COMMAND LIST FILTERBY is not supported: COMMAND LIST lists "
                                 "every command");
        else
            ud_resp_add_error(b, "ERR syntax error");
    } else if (ud_resp_arg_is(c, 1, "list")) {
        ud_resp_add_array(b, ctx->ncommands);
        for (size_t i = 0; i < ctx->ncommands; i++)
            ud_resp_add_bulk_str(b, ctx->commands[i]->name);
    } else if (ud_resp_arg_is(c, 1, "info")) {
        if (c->argc == 2) {
            ud_resp_add_array(b, ctx->ncommands);
            for (size_t i = 0; i < ctx->ncommands; i++)
                add_command_info(b, ctx->commands[i]);
            return;
        }
        ud_resp_add_array(b, c->argc - 2);
        for (size_t i = 2; i < c->argc; i++) {
            const struct ud_resp_command *cmd = find_command(ctx, c->argv[i], c->argvlen[i]);
            if (cmd != NULL)
                add_command_info(b, cmd);
            else
                ud_resp_add_null(b); /* Redis's null for an unknown name is a bulk string's */
        }
    } else if (ud_resp_arg_is(c, 1, "docs")) {
        if (c->argc == 2) {
            ud_resp_add_array(b, 2 * ctx->ncommands);
            for (size_t i = 0; i < ctx->ncommands; i++)
                add_command_docs(b, ctx->commands[i]);
            return;
        }
        size_t found = 0;
        for (size_t i = 2; i < c->argc; i++)
            found += find_command(ctx, c->argv[i], c->argvlen[i]) != NULL;
        ud_resp_add_array(b, 2 * found);
        for (size_t i = 2; i < c->argc; i++) {
            const struct ud_resp_command *cmd = find_command(ctx, c->argv[i], c->argvlen[i]);
            if (cmd != NULL)
                add_command_docs(b, cmd);
        }
    } else {
        char sub[64];
        ud_resp_printable(sub, sizeof sub, c->argv[1], c->argvlen[1], 32);
        ud_resp_add_errorf(b,
                           "ERR unknown subcommand or wrong number of arguments for '%s'. "
                           "COMMAND COUNT, DOCS, INFO and LIST are supported",
                           sub);
    }
}

/* --- CONFIG GET ------------------------------------------------------------------------------- */

static size_t count_ns(struct ud_registry *reg)
{
    size_t n = 0;
    ud_registry_list(reg, NULL, NULL, &n); /* only counts: cannot fail */
    return n;
}

/* The settings clients ask for (redis-benchmark reads save and appendonly), with values that
 * describe this server: every write is durable before it is answered, as with appendfsync
 * always. */
static void config_value(struct ud_resp_ctx *ctx, const char *name, char *out, size_t size)
{
    if (strcmp(name, "appendfsync") == 0)
        snprintf(out, size, "always");
    else if (strcmp(name, "appendonly") == 0)
        snprintf(out, size, "yes");
    else if (strcmp(name, "client-query-buffer-limit") == 0)
        snprintf(out, size, "%u", UD_RESP_MAX_REQUEST);
    else if (strcmp(name, "databases") == 0)
        snprintf(out, size, "%zu", count_ns(ctx->registry));
    else if (strcmp(name, "maxclients") == 0)
        snprintf(out, size, "%u", ctx->max_clients);
    else if (strcmp(name, "maxmemory") == 0)
        snprintf(out, size, "0");
    else if (strcmp(name, "maxmemory-policy") == 0)
        snprintf(out, size, "noeviction");
    else if (strcmp(name, "port") == 0)
        snprintf(out, size, "%d", ctx->port);
    else if (strcmp(name, "proto-max-bulk-len") == 0)
        snprintf(out, size, "%u", UD_RESP_MAX_BULK);
    else if (strcmp(name, "save") == 0)
        snprintf(out, size, "%s", "");
    else if (strcmp(name, "timeout") == 0)
        snprintf(out, size, "%u", ctx->idle_timeout_s);
    else
        out[0] = '\0';
}

static const char *const config_names[] = {
    "appendfsync",
    "appendonly",
    "client-query-buffer-limit",
    "databases",
    "maxclients",
    "maxmemory",
    "maxmemory-policy",
    "port",
    "proto-max-bulk-len",
    "save",
    "timeout",
};
#define NCONFIG (sizeof config_names / sizeof config_names[0])

void ud_resp_cmd_config(struct ud_resp_call *c)
{
    if (!ud_resp_arg_is(c, 1, "get")) {
        char sub[64];
        ud_resp_printable(sub, sizeof sub, c->argv[1], c->argvlen[1], 32);
        ud_resp_add_errorf(ud_resp_reply(c),
                           "ERR CONFIG %s is not supported: only CONFIG GET is; settings come "
                           "from the configuration file",
                           sub);
        return;
    }
    if (c->argc < 3) {
        ud_resp_add_error(ud_resp_reply(c), "ERR wrong number of arguments for 'config|get' "
                                            "command");
        return;
    }
    int matched[NCONFIG] = {0};
    size_t given[NCONFIG] = {0}; /* the argument that named it exactly, 0 for none */
    size_t n = 0;
    for (size_t i = 2; i < c->argc; i++) {
        char pat[129];
        size_t len = c->argvlen[i];
        if (len >= sizeof pat || memchr(c->argv[i], 0, len) != NULL)
            continue; /* no setting has such a name */
        for (size_t k = 0; k < len; k++) {
            uint8_t ch = c->argv[i][k];
            pat[k] = (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
        }
        pat[len] = '\0';
        /* A name without a glob character is looked up as it is, as Redis does: a backslash in
         * it is no escape (sa\ve names nothing; as a glob it would match save). */
        int exact = strpbrk(pat, "*?[") == NULL;
        for (size_t k = 0; k < NCONFIG; k++) {
            int hit =
                exact ? strcmp(pat, config_names[k]) == 0 : ud_resp_glob(pat, config_names[k]);
            if (!matched[k] && hit) {
                matched[k] = 1;
                given[k] = exact ? i : 0;
                n++;
            }
        }
    }
    struct ud_resp_buf *b = ud_resp_reply(c);
    ud_resp_add_array(b, 2 * n);
    for (size_t k = 0; k < NCONFIG; k++) {
        if (!matched[k])
            continue;
        char v[64];
        config_value(c->ctx, config_names[k], v, sizeof v);
        /* A name given without a glob is answered as given ("SAVE"), as Redis does. */
        if (given[k] != 0)
            ud_resp_add_bulk(b, c->argv[given[k]], c->argvlen[given[k]]);
        else
            ud_resp_add_bulk_str(b, config_names[k]);
        ud_resp_add_bulk_str(b, v);
    }
}

/* --- INFO ------------------------------------------------------------------------------------- */

static void textf(struct ud_resp_buf *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void textf(struct ud_resp_buf *t, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n > 0)
        ud_resp_buf_append(t, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

struct ns_info {
    struct ud_resp_ctx *ctx;
    struct ud_resp_buf *text;
};

static void ns_line(void *arg, const char *name, size_t index)
{
    struct ns_info *ni = arg;
    struct ud_ns *ns;
    if (ud_registry_acquire(ni->ctx->registry, name, &ns) != 0)
        return; /* deleted meanwhile */
    struct ud_ns_stats st;
    ud_ns_stats(ns, &st);
    ud_registry_release(ni->ctx->registry, ns);
    textf(ni->text,
          "ns_%s:index=%zu,lsn=%llu,durable_lsn=%llu,flushed_lsn=%llu,memtable_bytes=%llu,"
          "sealed_memtables=%u,open_txns=%u,wal_segments=%u,flush_errors=%llu\r\n",
          name, index, (unsigned long long)st.last_lsn, (unsigned long long)st.durable_lsn,
          (unsigned long long)st.flushed_lsn, (unsigned long long)st.memtable_bytes,
          st.sealed_memtables, st.open_txns, st.wal_segments, (unsigned long long)st.flush_errors);
}

static void info_server(struct ud_resp_ctx *ctx, struct ud_resp_buf *t)
{
    struct utsname u;
    uint64_t up = ud_mono_ns() / 1000000 - ctx->started_ms;
    if (uname(&u) != 0)
        memset(&u, 0, sizeof u);
    textf(t, "# Server\r\n");
    textf(t, "redis_version:%s\r\n", UD_RESP_REDIS_VERSION);
    textf(t, "unisondb_version:%s\r\n", UD_VERSION_STRING);
    textf(t, "redis_mode:standalone\r\n");
    textf(t, "os:%s %s %s\r\n", u.sysname, u.release, u.machine);
    textf(t, "arch_bits:%zu\r\n", sizeof(void *) * 8);
    textf(t, "process_id:%ld\r\n", (long)getpid());
    textf(t, "tcp_port:%d\r\n", ctx->port);
    textf(t, "server_time_usec:%llu\r\n", (unsigned long long)(ud_now_ns() / 1000));
    textf(t, "uptime_in_seconds:%llu\r\n", (unsigned long long)(up / 1000));
    textf(t, "uptime_in_days:%llu\r\n", (unsigned long long)(up / 86400000));
}

static void info_clients(struct ud_resp_ctx *ctx, struct ud_resp_buf *t)
{
    textf(t, "# Clients\r\n");
    textf(t, "connected_clients:%llu\r\n", (unsigned long long)ctx->stats.connected_clients);
    textf(t, "maxclients:%u\r\n", ctx->max_clients);
    textf(t, "client_idle_timeout_seconds:%u\r\n", ctx->idle_timeout_s);
    textf(t, "blocked_clients:0\r\n");
}

static void info_stats(struct ud_resp_ctx *ctx, struct ud_resp_buf *t)
{
    textf(t, "# Stats\r\n");
    textf(t, "total_connections_received:%llu\r\n",
          (unsigned long long)ctx->stats.total_connections);
    textf(t, "total_commands_processed:%llu\r\n", (unsigned long long)ctx->stats.total_commands);
    textf(t, "rejected_connections:%llu\r\n", (unsigned long long)ctx->stats.rejected_connections);
    textf(t, "protocol_errors:%llu\r\n", (unsigned long long)ctx->stats.protocol_errors);
    textf(t, "reads_waited_for_writes:%llu\r\n", (unsigned long long)ctx->stats.waited_commands);
}

/* The process's resident bytes, or 0 when /proc cannot tell. */
static unsigned long long resident_bytes(void)
{
    unsigned long long pages = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f == NULL)
        return 0;
    if (fscanf(f, "%llu %llu", &pages, &rss) != 2)
        rss = 0;
    fclose(f);
    return rss * (unsigned long long)sysconf(_SC_PAGESIZE);
}

/* What monitoring reads from Redis's memory section. Redis's used_memory is its allocator's;
 * here it is the resident set, memtables, the B+tree's mapped pages and buffers included. */
static void info_memory(struct ud_resp_buf *t)
{
    unsigned long long rss = resident_bytes();
    textf(t, "# Memory\r\n");
    textf(t, "used_memory:%llu\r\n", rss);
    textf(t, "used_memory_rss:%llu\r\n", rss);
    textf(t, "maxmemory:0\r\n");
    textf(t, "maxmemory_policy:noeviction\r\n");
}

/* Every write is durable before it is answered (CONFIG GET appendonly: yes); a writer serves
 * only once its recovery is over, so it is never loading. */
static void info_persistence(struct ud_resp_buf *t)
{
    textf(t, "# Persistence\r\n");
    textf(t, "loading:0\r\n");
    textf(t, "async_loading:0\r\n");
    textf(t, "aof_enabled:1\r\n");
}

static void info_replication(struct ud_resp_ctx *ctx, struct ud_resp_buf *t)
{
    textf(t, "# Replication\r\n");
    textf(t, "role:%s\r\n", is_replica(ctx) ? "slave" : "master");
    textf(t, "unisondb_role:%s\r\n", ctx->role);
    textf(t, "connected_slaves:0\r\n");
}

static void info_namespaces(struct ud_resp_call *c, struct ud_resp_buf *t)
{
    struct ns_info ni = {c->ctx, t};
    textf(t, "# Namespaces\r\n");
    textf(t, "selected:%s\r\n", c->session->ns);
    size_t n;
    if (ns_by_index(c->ctx, ns_line, &ni, &n) != 0)
        textf(t, "namespaces_error:out of memory listing them\r\n");
    else
        textf(t, "namespaces:%zu\r\n", n);
}

static const char *const info_sections[] = {"server", "clients",     "memory",    "persistence",
                                            "stats",  "replication", "namespaces"};

static void info_section(struct ud_resp_call *c, const char *name, struct ud_resp_buf *t)
{
    size_t before = t->len;
    if (t->len > 0)
        textf(t, "\r\n");
    size_t start = t->len;
    if (strcmp(name, "server") == 0)
        info_server(c->ctx, t);
    else if (strcmp(name, "clients") == 0)
        info_clients(c->ctx, t);
    else if (strcmp(name, "memory") == 0)
        info_memory(t);
    else if (strcmp(name, "persistence") == 0)
        info_persistence(t);
    else if (strcmp(name, "stats") == 0)
        info_stats(c->ctx, t);
    else if (strcmp(name, "replication") == 0)
        info_replication(c->ctx, t);
    else if (strcmp(name, "namespaces") == 0 || strcmp(name, "keyspace") == 0)
        info_namespaces(c, t);
    else if (c->ctx->info != NULL)
        c->ctx->info(c->app, name, t);
    if (t->len == start)
        t->len = before; /* an unknown section: nothing, not even the separator */
}

/* INFO [section ...]: no section, "default", "all" or "everything" give every section. The
 * namespaces section stands where Redis has "keyspace" (which is accepted as its alias). */
void ud_resp_cmd_info(struct ud_resp_call *c)
{
    struct ud_resp_buf t = {0};
    int all = c->argc == 1;
    for (size_t i = 1; i < c->argc; i++)
        all |= ud_resp_arg_is(c, i, "all") || ud_resp_arg_is(c, i, "default") ||
               ud_resp_arg_is(c, i, "everything");
    if (all) {
        for (size_t i = 0; i < sizeof info_sections / sizeof info_sections[0]; i++)
            info_section(c, info_sections[i], &t);
        if (c->ctx->info != NULL) {
            size_t before = t.len;
            textf(&t, "\r\n");
            size_t start = t.len;
            c->ctx->info(c->app, NULL, &t);
            if (t.len == start)
                t.len = before;
        }
    } else {
        for (size_t i = 1; i < c->argc; i++) {
            char name[33];
            size_t len = c->argvlen[i];
            if (len >= sizeof name || memchr(c->argv[i], 0, len) != NULL)
                continue;
            for (size_t k = 0; k < len; k++) {
                uint8_t ch = c->argv[i][k];
                name[k] = (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
            }
            name[len] = '\0';
            info_section(c, name, &t);
        }
    }
    ud_resp_add_bulk(ud_resp_reply(c), t.data, t.len);
    ud_resp_buf_free(&t);
}
