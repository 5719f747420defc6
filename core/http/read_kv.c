/* Read API, KV: GET kv/{key} (value, found, lsn) and ordered scans GET kv?prefix=&start=&limit=. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/http/http_int.h"
#include "core/keyspace.h"

#define SCAN_DEFAULT_LIMIT 100
#define SCAN_MAX_LIMIT     1000

/*
 * The JSON answer of a found key. A short value is encoded from where it lies (no copy of it
 * first). A long one is copied out and encoded after the read: the read runs inside the store's
 * snapshot, which holds off a growth of the map (and, behind the waiting growth, every other
 * reader), and encoding takes about 0.6 ms per MiB against 0.02 ms for the copy
 * (docs/benchmarks.md "Reads").
 */
#define KV_ENCODE_IN_PLACE_MAX (64u << 10)

struct kv_answer {
    struct ud_jbuf j;
    uint8_t *copy; /* a long value, encoded once the read is over */
    size_t copy_len;
    uint64_t lsn;
};

static void kv_answer_json(struct ud_jbuf *j, const uint8_t *value, size_t len, uint64_t lsn)
{
    ud_jbuf_lit(j, "{\"value\":");
    ud_jbuf_b64(j, value, len);
    ud_jbuf_lit(j, ",\"found\":true,\"lsn\":");
    ud_jbuf_u64(j, lsn);
    ud_jbuf_lit(j, "}");
}

static int kv_answer_fill(void *arg, const uint8_t *value, size_t len, uint64_t lsn)
{
    struct kv_answer *a = arg;
    a->lsn = lsn;
    if (len <= KV_ENCODE_IN_PLACE_MAX) {
        kv_answer_json(&a->j, value, len, lsn);
        return 0;
    }
    a->copy_len = len; /* also named by the error when the copy cannot be made */
    if ((a->copy = malloc(len)) == NULL)
        return UD_ENOMEM;
    memcpy(a->copy, value, len);
    return 0;
}

void ud_http_on_kv_get(struct ud_http_req *r, void *arg)
{
    (void)arg;
    size_t kl;
    const uint8_t *k = ud_http_req_key(r, &kl);
    if (kl > UD_MAX_KV_KEY) {
        ud_http_reply_error(r, 400, "key of %zu bytes exceeds the limit of %d bytes", kl,
                            UD_MAX_KV_KEY);
        return;
    }
    struct kv_answer a = {.lsn = 0};
    ud_jbuf_init(&a.j);
    int rc = ud_ns_kv_get_with(r->ns, k, kl, kv_answer_fill, &a);
    if (rc == 0 && a.copy != NULL)
        kv_answer_json(&a.j, a.copy, a.copy_len, a.lsn);
    free(a.copy);
    if (rc == UD_ENOTFOUND) {
        ud_jbuf_free(&a.j);
        static const char missing[] = "{\"value\":\"\",\"found\":false}\n";
        ud_http_reply(r, 404, "application/json", missing, sizeof missing - 1);
        return;
    }
    if (rc != 0) {
        ud_jbuf_free(&a.j);
        char msg[96];
        if (rc == UD_ENOMEM && a.copy_len > 0)
            snprintf(msg, sizeof msg, "out of memory copying a value of %zu bytes out of the store",
                     a.copy_len);
        else
            snprintf(msg, sizeof msg, "%s",
                     rc == UD_ENOSPC ? "disk full while reading" : "kv read failed");
        ud_http_reply_code(r, rc, msg);
        return;
    }
    char etag[32];
    snprintf(etag, sizeof etag, "\"%llu\"", (unsigned long long)a.lsn);
    ud_http_set_header(r, "etag", etag);
    ud_http_reply_json(r, 200, &a.j);
}

int ud_http_scan_params(struct ud_http_req *r, struct ud_scan *scan, uint8_t *prefix,
                        uint8_t *start, size_t cap)
{
    char errmsg[UD_ERRMSG_SIZE];
    size_t qlen;
    const char *q = ud_http_req_query(r, &qlen);
    memset(scan, 0, sizeof *scan);
    size_t n = 0;
    int rc = ud_http_query_get(q, qlen, "prefix", prefix, cap, &n, errmsg);
    if (rc != 0 && rc != UD_ENOTFOUND) {
        ud_http_reply_error(r, 400, "%s", errmsg);
        return 1;
    }
    scan->prefix = prefix;
    scan->prefix_len = rc == 0 ? n : 0;
    const char *raw;
    size_t rawlen;
    if (ud_http_query_raw(q, qlen, "start", &raw, &rawlen) && rawlen > 0) {
        /* The cursor is the base64 of a key: decode percent escapes first ('+' and '/' may come
         * escaped or not). */
        char text[1024];
        size_t tl;
        if (rawlen > sizeof text ||
            ud_http_pct_decode(raw, rawlen, (uint8_t *)text, &tl, errmsg) != 0 ||
            ud_b64_decoded_max(tl) > cap + 3 || ud_b64_decode(text, tl, start, &n) != 0 ||
            n > cap) {
            ud_http_reply_error(r, 400,
                                "invalid base64 encoding in query parameter start (the \"next\" "
                                "cursor of a previous page)");
            return 1;
        }
        scan->start = start;
        scan->start_len = n;
    }
    uint64_t limit = SCAN_DEFAULT_LIMIT;
    rc = ud_http_query_u64(q, qlen, "limit", 1, SCAN_MAX_LIMIT, &limit, errmsg);
    if (rc != 0 && rc != UD_ENOTFOUND) {
        ud_http_reply_error(r, 400, "%s", errmsg);
        return 1;
    }
    scan->limit = (uint32_t)limit;
    return 0;
}

struct scan_out {
    struct ud_jbuf j;
    size_t n;
};

static int kv_item(void *arg, const uint8_t *key, size_t key_len, const uint8_t *value,
                   size_t value_len, uint64_t lsn)
{
    struct scan_out *o = arg;
    struct ud_jbuf *j = &o->j;
    if (o->n++ > 0)
        ud_jbuf_raw(j, ",", 1);
    ud_jbuf_lit(j, "{\"key\":");
    ud_jbuf_b64(j, key, key_len);
    ud_jbuf_lit(j, ",\"value\":");
    ud_jbuf_b64(j, value, value_len);
    ud_jbuf_lit(j, ",\"lsn\":");
    ud_jbuf_u64(j, lsn);
    ud_jbuf_lit(j, "}");
    return j->err != 0 ? UD_ENOMEM : 0;
}

void ud_http_on_kv_scan(struct ud_http_req *r, void *arg)
{
    (void)arg;
    uint8_t prefix[UD_MAX_KEY + 1], start[UD_MAX_KEY + 1];
    struct ud_scan scan;
    if (ud_http_scan_params(r, &scan, prefix, start, UD_MAX_KEY) != 0)
        return;
    struct scan_out o = {.n = 0};
    struct ud_jbuf *j = &o.j;
    ud_jbuf_init(j);
    ud_jbuf_lit(j, "{\"items\":[");
    struct ud_buf next = {0};
    int rc = ud_ns_kv_scan(r->ns, &scan, kv_item, &o, &next);
    if (rc != 0) {
        ud_jbuf_free(j);
        ud_buf_free(&next);
        ud_http_reply_code(r, rc, "kv scan failed");
        return;
    }
    ud_jbuf_lit(j, "],\"next\":");
    if (next.len > 0)
        ud_jbuf_b64(j, next.data, next.len);
    else
        ud_jbuf_lit(j, "null");
    ud_jbuf_lit(j, "}");
    ud_buf_free(&next);
    ud_http_reply_json(r, 200, j);
}
