/* Write API, namespaces: PUT /api/v1/{ns} creates, DELETE /api/v1/{ns} deletes (raft commands). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "writer/http_write.h"
#include "writer/submit.h"

struct ns_call {
    struct ud_writer_http *wh;
    struct ud_http_req *r;
    int create;
    char ns[UD_NS_NAME_MAX + 1];
};

static void ns_done(void *arg, int status, const char *errmsg, const uint64_t *lsns, size_t n)
{
    (void)lsns;
    (void)n;
    struct ns_call *c = arg;
    if (!c->create)
        ud_http_server_ns_closed(c->wh->srv, c->ns);
    if (status == 0) {
        if (!c->create)
            ud_writer_http_txns_forget_ns(c->wh, c->ns);
        struct ud_jbuf j;
        ud_jbuf_init(&j);
        ud_jbuf_lit(&j, "{\"success\":true,\"namespace\":");
        ud_jbuf_str(&j, c->ns, strlen(c->ns));
        ud_jbuf_printf(&j, ",\"%s\":true}", c->create ? "created" : "deleted");
        ud_http_reply_json(c->r, 200, &j);
    } else if (status == UD_EEXIST) {
        ud_http_reply_error(c->r, 409, "namespace already exists: %s", c->ns);
    } else if (status == UD_ENOTFOUND) {
        ud_http_reply_error(c->r, 404, "namespace not found: %s", c->ns);
    } else {
        ud_writer_http_reply_submit_error(c->r, status, errmsg);
    }
    free(c);
}

static void ns_call(struct ud_http_req *r, struct ud_writer_http *wh, int create)
{
    const char *ns = ud_http_req_ns_name(r);
    if (!ud_ns_name_valid(ns)) {
        if (create)
            ud_http_reply_error(r, 400,
                                "invalid namespace name %s: names are 1 to %d characters of "
                                "A-Z a-z 0-9 _ -",
                                ns, UD_NS_NAME_MAX);
        else
            ud_http_reply_error(r, 404, "namespace not found: %s", ns);
        return;
    }
    struct ns_call *c = calloc(1, sizeof *c);
    if (c == NULL)
        abort();
    c->wh = wh;
    c->r = r;
    c->create = create;
    snprintf(c->ns, sizeof c->ns, "%s", ns);
    if (create) {
        ud_submit_ns_create(wh->w, c->ns, ns_done, c);
    } else {
        /* This node's LOB readers let go of the namespace first, so that its removal does not
         * wait for slow clients. */
        ud_http_server_ns_closing(wh->srv, c->ns);
        ud_submit_ns_delete(wh->w, c->ns, ns_done, c);
    }
}

void ud_writer_http_on_ns_create(struct ud_http_req *r, void *arg)
{
    ns_call(r, arg, 1);
}

void ud_writer_http_on_ns_delete(struct ud_http_req *r, void *arg)
{
    ns_call(r, arg, 0);
}
