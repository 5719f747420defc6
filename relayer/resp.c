/*
 * unison-relayer's RESP front end: the core read commands, and the writer's write commands either
 * answered "-READONLY" naming the upstream (as a Redis replica answers writes) or, with
 * [relayer] forward_writes, encoded here and forwarded upstream (relayer/resp_forward.c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/log.h"
#include "core/resp/resp_server.h"
#include "core/resp/resp_write.h"
#include "relayer/relayer.h"

#define LOG "resp"

static void cmd_readonly(struct ud_resp_call *c)
{
    struct ud_relayer *r = c->app;
    const char *up = ud_relayer_upstream_for(r, c->session->ns);
    ud_resp_add_errorf(ud_resp_reply(c),
                       "READONLY You can't write against a read only relayer; writes go to its "
                       "upstream %s",
                       up);
}

/* The writer's write commands (writer/resp_write.c), same arity and key positions. */
static const struct ud_resp_command readonly_commands[] = {
    {"del", -2, UD_RESP_CMD_WRITE, 1, -1, 1, cmd_readonly, "Refused: this relayer is read-only.",
     "generic"},
    {"hdel", -3, UD_RESP_CMD_WRITE, 1, 1, 1, cmd_readonly, "Refused: this relayer is read-only.",
     "hash"},
    {"hmset", -4, UD_RESP_CMD_WRITE, 1, 1, 1, cmd_readonly, "Refused: this relayer is read-only.",
     "hash"},
    {"hset", -4, UD_RESP_CMD_WRITE, 1, 1, 1, cmd_readonly, "Refused: this relayer is read-only.",
     "hash"},
    {"mset", -3, UD_RESP_CMD_WRITE, 1, -1, 2, cmd_readonly, "Refused: this relayer is read-only.",
     "string"},
    {"set", -3, UD_RESP_CMD_WRITE, 1, 1, 1, cmd_readonly, "Refused: this relayer is read-only.",
     "string"},
    {"unlink", -2, UD_RESP_CMD_WRITE, 1, -1, 1, cmd_readonly, "Refused: this relayer is read-only.",
     "generic"},
};

/* With forward_writes: the writer's write commands with its flags (writer/resp_write.c). DEL,
 * HSET and HDEL read this relayer's copy for their counts, after the connection's earlier
 * writes were applied here (the forwarded replies wait for that). */
static const struct ud_resp_command forward_commands[] = {
    {"del", -2, UD_RESP_CMD_READ | UD_RESP_CMD_WRITE, 1, -1, 1, ud_resp_cmd_del,
     "Deletes strings and hashes (forwarded upstream); returns how many of the keys existed.",
     "generic"},
    {"hdel", -3, UD_RESP_CMD_READ | UD_RESP_CMD_WRITE, 1, 1, 1, ud_resp_cmd_hdel,
     "Deletes fields of a hash (forwarded upstream); returns how many existed.", "hash"},
    {"hmset", -4, UD_RESP_CMD_WRITE, 1, 1, 1, ud_resp_cmd_hmset,
     "Sets fields of a hash (forwarded upstream).", "hash"},
    {"hset", -4, UD_RESP_CMD_READ | UD_RESP_CMD_WRITE, 1, 1, 1, ud_resp_cmd_hset,
     "Sets fields of a hash (forwarded upstream); returns how many were new.", "hash"},
    {"mset", -3, UD_RESP_CMD_WRITE, 1, -1, 2, ud_resp_cmd_mset,
     "Sets several strings atomically (forwarded upstream).", "string"},
    {"set", -3, UD_RESP_CMD_WRITE, 1, 1, 1, ud_resp_cmd_set,
     "Sets the string value of a key (forwarded upstream).", "string"},
    {"unlink", -2, UD_RESP_CMD_READ | UD_RESP_CMD_WRITE, 1, -1, 1, ud_resp_cmd_del, "Same as DEL.",
     "generic"},
};

static void relayer_info(void *app, const char *section, struct ud_resp_buf *text)
{
    struct ud_relayer *r = app;
    if (section != NULL && strcmp(section, "replication") != 0)
        return;
    char s[UD_RELAYER_URL_MAX + 128];
    int n =
        snprintf(s, sizeof s, "# Replication\r\nrole:relayer\r\nupstream:%s\r\nnamespaces:%zu\r\n",
                 ud_relayer_upstream_for(r, NULL), r->nfollowers);
    ud_resp_buf_append(text, s, (size_t)n);
}

int ud_relayer_resp_start(struct ud_relayer *r, char *errmsg)
{
    r->resp = NULL;
    r->resp_port = 0;
    if (r->config->resp_listen[0] == '\0')
        return 0;
    struct ud_resp_server_options o;
    memset(&o, 0, sizeof o);
    o.loop = r->loop;
    o.listen = r->config->resp_listen;
    o.commands.registry = r->registry;
    /* A new connection starts on the first configured namespace, else "default". */
    o.commands.default_ns = r->config->nnamespaces > 0 ? r->config->namespaces[0].name : "default";
    if (r->config->forward_writes) {
        o.commands.commands = forward_commands;
        o.commands.ncommands = sizeof forward_commands / sizeof forward_commands[0];
        o.commands.submit = ud_relayer_resp_submit;
    } else {
        o.commands.commands = readonly_commands;
        o.commands.ncommands = sizeof readonly_commands / sizeof readonly_commands[0];
    }
    o.commands.app = r;
    o.commands.info = relayer_info;
    o.commands.role = "relayer";
    return ud_resp_server_start(&o, &r->resp, &r->resp_port, errmsg);
}

struct resp_stop {
    struct ud_relayer *r;
    void (*done)(struct ud_relayer *r);
};

static void resp_stopped(void *arg)
{
    struct resp_stop *st = arg;
    struct ud_relayer *r = st->r;
    void (*done)(struct ud_relayer *) = st->done;
    free(st);
    r->resp = NULL;
    if (done != NULL)
        done(r);
}

void ud_relayer_resp_stop(struct ud_relayer *r, void (*done)(struct ud_relayer *r))
{
    ud_relayer_resp_forwards_cancel(r);
    if (r->resp == NULL) {
        if (done != NULL)
            done(r);
        return;
    }
    struct resp_stop *st = malloc(sizeof *st);
    if (st == NULL)
        abort();
    st->r = r;
    st->done = done;
    ud_resp_server_stop(r->resp, resp_stopped, st);
}
