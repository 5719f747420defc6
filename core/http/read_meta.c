/*
 * Read API, metadata: GET offset, stats, checkpoint (the reference's fields, whose segment/offset
 * are this node's physical WAL position, plus the LSNs that mean the same on every node) and the
 * namespace list GET /api/v1.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/http/http_int.h"

static void begin_ns(struct ud_jbuf *j, const char *ns)
{
    ud_jbuf_lit(j, "{\"namespace\":");
    ud_jbuf_str(j, ns, strlen(ns));
}

void ud_http_on_offset(struct ud_http_req *r, void *arg)
{
    (void)arg;
    struct ud_ns_stats st;
    ud_ns_stats(r->ns, &st);
    struct ud_jbuf j;
    ud_jbuf_init(&j);
    begin_ns(&j, r->ns_name);
    ud_jbuf_printf(&j, ",\"segmentId\":%u,\"offset\":%llu,\"lsn\":%llu,\"durableLsn\":%llu}",
                   st.segment_id, (unsigned long long)st.offset, (unsigned long long)st.last_lsn,
                   (unsigned long long)st.durable_lsn);
    ud_http_reply_json(r, 200, &j);
}

void ud_http_on_stats(struct ud_http_req *r, void *arg)
{
    (void)arg;
    struct ud_ns_stats st;
    ud_ns_stats(r->ns, &st);
    struct ud_jbuf j;
    ud_jbuf_init(&j);
    begin_ns(&j, r->ns_name);
    /* lastFlushTime: RFC 3339 UTC to the second, as the reference shows it; null until the
     * namespace's first flush since it was opened. */
    char flushed_at[32] = "null";
    if (st.last_flush_unix_ms > 0) {
        time_t t = (time_t)(st.last_flush_unix_ms / 1000);
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(flushed_at, sizeof flushed_at, "\"%Y-%m-%dT%H:%M:%SZ\"", &tm);
    }
    ud_jbuf_printf(&j,
                   ",\"opsReceived\":%llu,\"opsFlushed\":%llu,\"currentSegment\":%u,"
                   "\"currentOffset\":%llu,\"lastFlushTime\":%s,\"lsn\":%llu,"
                   "\"durableLsn\":%llu,\"flushedLsn\":%llu,\"memtableBytes\":%llu,"
                   "\"sealedMemtables\":%u,\"openTransactions\":%u,\"walFirstLsn\":%llu,"
                   "\"walSegments\":%u,\"flushErrors\":%llu}",
                   (unsigned long long)st.ops_received, (unsigned long long)st.ops_flushed,
                   st.segment_id, (unsigned long long)st.offset, flushed_at,
                   (unsigned long long)st.last_lsn, (unsigned long long)st.durable_lsn,
                   (unsigned long long)st.flushed_lsn, (unsigned long long)st.memtable_bytes,
                   st.sealed_memtables, st.open_txns, (unsigned long long)st.wal_first_lsn,
                   st.wal_segments, (unsigned long long)st.flush_errors);
    ud_http_reply_json(r, 200, &j);
}

void ud_http_on_checkpoint(struct ud_http_req *r, void *arg)
{
    (void)arg;
    struct ud_ns_stats st;
    ud_ns_stats(r->ns, &st);
    struct ud_jbuf j;
    ud_jbuf_init(&j);
    begin_ns(&j, r->ns_name);
    /* LSNs are dense from 1, so the records covered by the checkpoint are its LSN. Its position
     * is where the first record it does not cover starts in this node's WAL (where a replay
     * resumes); the WAL's current end should the log no longer hold that record. */
    uint32_t segment = st.segment_id;
    uint64_t offset = st.offset;
    (void)ud_ns_wal_position(r->ns, st.flushed_lsn + 1, &segment, &offset);
    ud_jbuf_printf(&j,
                   ",\"recordProcessed\":%llu,\"segmentId\":%u,\"offset\":%llu,\"lsn\":%llu,"
                   "\"flushedLsn\":%llu}",
                   (unsigned long long)st.flushed_lsn, segment, (unsigned long long)offset,
                   (unsigned long long)st.last_lsn, (unsigned long long)st.flushed_lsn);
    ud_http_reply_json(r, 200, &j);
}

struct names {
    struct ud_jbuf *j;
    size_t n;
};

static void add_name(void *arg, const char *name)
{
    struct names *n = arg;
    if (n->n++ > 0)
        ud_jbuf_raw(n->j, ",", 1);
    ud_jbuf_str(n->j, name, strlen(name));
}

void ud_http_on_namespaces(struct ud_http_req *r, void *arg)
{
    (void)arg;
    struct ud_jbuf j;
    ud_jbuf_init(&j);
    ud_jbuf_lit(&j, "{\"namespaces\":[");
    struct names n = {&j, 0};
    if (ud_registry_list(ud_http_server_registry(ud_http_req_server(r)), add_name, &n, NULL) != 0) {
        ud_jbuf_free(&j);
        ud_http_reply_error(r, 500, "out of memory listing the namespaces");
        return;
    }
    ud_jbuf_lit(&j, "]}");
    ud_http_reply_json(r, 200, &j);
}
