/*
 * Which namespaces a relayer follows: the configured list (each with its own upstreams, or the
 * default ones), or, when none is configured, every namespace it already holds plus every one the
 * default upstreams list at GET /api/v1 (asked every discover_interval_ms, so new namespaces are
 * followed as they appear; a namespace deleted upstream keeps its last state here).
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/http_client.h"
#include "core/log.h"
#include "relayer/relayer.h"

#define LOG "discover"

static void follow_default(struct ud_relayer *r, const char *name)
{
    if (ud_relayer_follower(r, name) != NULL || !ud_ns_name_valid(name))
        return;
    char *ups[UD_RELAYER_MAX_UPSTREAMS];
    for (unsigned i = 0; i < r->config->nupstreams; i++)
        ups[i] = r->config->upstreams[i];
    char errmsg[UD_ERRMSG_SIZE];
    if (ud_relayer_follow(r, name, ups, r->config->nupstreams, errmsg) != 0)
        ud_error(LOG, "follow namespace %s: %s", name, errmsg);
}

static void list_done(void *arg, const struct ud_http_result *res)
{
    struct ud_relayer *r = arg;
    r->discover_xfer = NULL;
    if (r->stopping)
        return;
    const char *up = r->config->upstreams[r->discover_upstream];
    if (res->rc != 0 || res->status != 200) {
        char why[sizeof r->discover_error];
        if (res->rc != 0)
            snprintf(why, sizeof why, "namespace list: %s", res->errmsg);
        else
            snprintf(why, sizeof why, "namespace list: GET %s/api/v1: status %ld", up, res->status);
        /* Logged when it changes, not every interval. */
        if (strcmp(why, r->discover_error) != 0)
            ud_warn(LOG, "%s", why);
        snprintf(r->discover_error, sizeof r->discover_error, "%s", why);
        /* Ask the next upstream next time. */
        r->discover_upstream = (r->discover_upstream + 1) % r->config->nupstreams;
        return;
    }
    r->discover_error[0] = '\0';
    json_error_t jerr;
    json_t *doc = json_loadb((const char *)res->body, res->body_len, 0, &jerr);
    json_t *list = doc != NULL ? json_object_get(doc, "namespaces") : NULL;
    if (!json_is_array(list)) {
        ud_warn(LOG, "namespace list from %s is not {\"namespaces\":[...]}", up);
        json_decref(doc);
        return;
    }
    size_t i;
    json_t *v;
    json_array_foreach(list, i, v)
    {
        if (json_is_string(v))
            follow_default(r, json_string_value(v));
    }
    json_decref(doc);
}

static void discover_cb(uv_timer_t *t)
{
    struct ud_relayer *r = t->data;
    if (r->stopping || r->discover_xfer != NULL)
        return;
    char url[UD_RELAYER_URL_MAX + 16], errmsg[UD_ERRMSG_SIZE];
    snprintf(url, sizeof url, "%s/api/v1", r->config->upstreams[r->discover_upstream]);
    struct ud_http_request req = {.url = url,
                                  .timeout_ms = 5000,
                                  .collect_max = 1u << 20,
                                  .ca_file = r->config->tls_ca,
                                  .on_done = list_done,
                                  .arg = r};
    if (ud_http_client_start(r->client, &req, &r->discover_xfer, errmsg) != 0)
        ud_warn(LOG, "namespace list: %s", errmsg);
}

static void follow_local(void *arg, const char *name)
{
    follow_default(arg, name);
}

int ud_relayer_discover_start(struct ud_relayer *r, char *errmsg)
{
    const struct ud_relayer_config *c = r->config;
    uv_timer_init(r->loop, &r->discover_timer);
    r->discover_timer.data = r;
    if (c->nnamespaces > 0) {
        for (unsigned i = 0; i < c->nnamespaces; i++) {
            const struct ud_relayer_ns *ns = &c->namespaces[i];
            char *ups[UD_RELAYER_MAX_UPSTREAMS];
            unsigned n = ns->nupstreams > 0 ? ns->nupstreams : c->nupstreams;
            for (unsigned k = 0; k < n; k++)
                ups[k] = (char *)(ns->nupstreams > 0 ? ns->upstreams[k] : c->upstreams[k]);
            int rc = ud_relayer_follow(r, ns->name, ups, n, errmsg);
            if (rc != 0)
                return rc;
        }
        return 0;
    }
    /* Everything held here resumes at once; the upstreams' lists add the rest. */
    if (ud_registry_list(r->registry, follow_local, r, NULL) != 0)
        ud_warn("relayer", "out of memory listing the namespaces held here: each resumes only "
                           "once an upstream's list names it");
    uv_timer_start(&r->discover_timer, discover_cb, 0, c->discover_interval_ms);
    return 0;
}

void ud_relayer_discover_stop(struct ud_relayer *r)
{
    uv_timer_stop(&r->discover_timer);
    ud_http_transfer_cancel(r->discover_xfer);
    r->discover_xfer = NULL;
    uv_close((uv_handle_t *)&r->discover_timer, NULL);
}
