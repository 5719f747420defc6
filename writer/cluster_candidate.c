/*
 * Before a writer joins the configuration: is it a writer this cluster may take? raft cannot tell.
 * A writer that bootstrapped a cluster of its own holds entries whose index and term may equal
 * this cluster's, so raft's log matching takes them for the same entries and the two histories
 * mix silently (same LSNs, different data). So the leader asks the candidate (GET /status/node)
 * who it is, which cluster its data directory belongs to, and which raft configuration its log
 * holds, and refuses the add when the answer shows another writer, another cluster, or a raft
 * log with no member in common with this configuration (docs/raft.md "Membership").
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/http_client.h"
#include "core/log.h"
#include "raft/node.h"
#include "writer/cluster.h"
#include "writer/writer.h"

#define LOG            "cluster"
#define CHECK_MS       2000
#define CHECK_BODY_MAX (256u << 10)

struct candidate_check {
    struct ud_writer *w;
    uint64_t id;
    char http[160];
    ud_cluster_candidate_cb cb;
    void *arg;
};

static void finish(struct candidate_check *c, int status, const char *why)
{
    c->cb(c->arg, status, why);
    free(c);
}

/* Whether the candidate's configuration shares a member (same id at the same address) with ours,
 * the candidate itself apart: a writer that bootstrapped alone lists only itself, which a leader
 * that has it as a spare lists too. */
static int shares_member(struct ud_writer *w, uint64_t candidate, json_t *conf)
{
    struct ud_raft_member m[UD_CLUSTER_MAX_MEMBERS];
    unsigned n = ud_raft_node_members(w->raft, m, UD_CLUSTER_MAX_MEMBERS);
    size_t i;
    json_t *e;
    json_array_foreach(conf, i, e)
    {
        json_t *id = json_object_get(e, "id");
        const char *addr = json_string_value(json_object_get(e, "raftAddress"));
        if (!json_is_integer(id) || addr == NULL || (uint64_t)json_integer_value(id) == candidate)
            continue;
        for (unsigned k = 0; k < n && k < UD_CLUSTER_MAX_MEMBERS; k++)
            if (m[k].id == (uint64_t)json_integer_value(id) && strcmp(m[k].address, addr) == 0)
                return 1;
    }
    return 0;
}

/* "5@127.0.0.1:4105, ..." of the candidate's configuration, for the refusal. */
static void describe(json_t *conf, char *out, size_t size)
{
    size_t o = 0, i;
    json_t *e;
    out[0] = '\0';
    json_array_foreach(conf, i, e)
    {
        const char *addr = json_string_value(json_object_get(e, "raftAddress"));
        int n = snprintf(out + o, size - o, "%s%lld@%s", o ? ", " : "",
                         (long long)json_integer_value(json_object_get(e, "id")),
                         addr != NULL ? addr : "?");
        if (n < 0 || (size_t)n >= size - o)
            break;
        o += (size_t)n;
    }
}

static void judge(struct candidate_check *c, json_t *doc)
{
    struct ud_writer *w = c->w;
    char why[UD_ERRMSG_SIZE];
    json_t *id = json_object_get(doc, "id");
    if (json_is_integer(id) && (uint64_t)json_integer_value(id) != c->id) {
        snprintf(why, sizeof why, "the writer at %s is writer %lld, not %llu", c->http,
                 (long long)json_integer_value(id), (unsigned long long)c->id);
        finish(c, UD_ECONFLICT, why);
        return;
    }
    /* Writers before these fields answer without them: nothing more to compare. */
    const char *cluster = json_string_value(json_object_get(doc, "clusterId"));
    if (cluster != NULL && strcmp(cluster, w->config->cluster_id) != 0) {
        snprintf(why, sizeof why,
                 "it belongs to cluster '%.64s', not '%.64s': start it with an empty data "
                 "directory, this cluster_id and [raft] join = true",
                 cluster, w->config->cluster_id);
        finish(c, UD_ECONFLICT, why);
        return;
    }
    json_t *conf = json_object_get(doc, "configuration");
    json_t *last = json_object_get(doc, "lastIndex");
    if (json_is_array(conf) && json_array_size(conf) > 0 && json_is_integer(last) &&
        json_integer_value(last) > 0 && !shares_member(w, c->id, conf)) {
        char members[160];
        describe(conf, members, sizeof members);
        snprintf(why, sizeof why,
                 "it holds another cluster's raft log, which would mix with this one's: start it "
                 "with an empty data directory and [raft] join = true (its members: %s)",
                 members);
        finish(c, UD_ECONFLICT, why);
        return;
    }
    finish(c, 0, NULL);
}

static void fetched(void *arg, const struct ud_http_result *res)
{
    struct candidate_check *c = arg;
    if (c->w->raft == NULL || c->w->stopping) {
        finish(c, UD_ECLOSED, "the writer is shutting down");
        return;
    }
    json_t *doc = NULL;
    if (res->rc == 0 && res->status == 200 && res->body != NULL)
        doc = json_loadb((const char *)res->body, res->body_len, 0, NULL);
    if (!json_is_object(doc)) {
        /* Not reachable yet (a writer is often added before it starts): the add goes on, and
         * raft reaches it later; what it holds then is not checked. */
        ud_warn(LOG, "add writer %llu: could not ask it who it is (%s): added unchecked",
                (unsigned long long)c->id,
                res->rc != 0 ? res->errmsg : "unexpected answer to /status/node");
        json_decref(doc);
        finish(c, 0, NULL);
        return;
    }
    judge(c, doc);
    json_decref(doc);
}

void ud_cluster_check_candidate(struct ud_writer *w, uint64_t id, const char *http,
                                ud_cluster_candidate_cb cb, void *arg)
{
    struct candidate_check *c = calloc(1, sizeof *c);
    if (c == NULL)
        abort(); /* network glue: out of memory is fatal, as in h2o */
    c->w = w;
    c->id = id;
    c->cb = cb;
    c->arg = arg;
    snprintf(c->http, sizeof c->http, "%s", http);
    char errmsg[UD_ERRMSG_SIZE];
    if (ud_cluster_fetch_node_status(w, http, CHECK_MS, CHECK_BODY_MAX, fetched, c, errmsg) != 0) {
        struct ud_http_result res = {.rc = UD_EIO, .errmsg = errmsg};
        fetched(c, &res);
    }
}
