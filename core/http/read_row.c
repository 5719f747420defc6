/* Read API, rows: GET row/{key}[?columns=a,b] and ordered scans GET row?prefix=&start=&limit=. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/http/body.h"
#include "core/http/http_int.h"
#include "core/keyspace.h"

struct row_out {
    struct ud_jbuf j;
    size_t ncols;
    uint64_t lsn; /* newest column */
};

static int row_column(void *arg, const uint8_t *name, size_t name_len, const uint8_t *value,
                      size_t value_len, uint64_t lsn)
{
    struct row_out *o = arg;
    if (o->ncols++ > 0)
        ud_jbuf_raw(&o->j, ",", 1);
    ud_jbuf_str(&o->j, name, name_len);
    ud_jbuf_raw(&o->j, ":", 1);
    ud_jbuf_b64(&o->j, value, value_len);
    if (lsn > o->lsn)
        o->lsn = lsn;
    return o->j.err != 0 ? UD_ENOMEM : 0;
}

void ud_http_on_row_get(struct ud_http_req *r, void *arg)
{
    (void)arg;
    char errmsg[UD_ERRMSG_SIZE];
    size_t kl, qlen;
    const uint8_t *k = ud_http_req_key(r, &kl);
    const char *q = ud_http_req_query(r, &qlen);
    static struct ud_col cols[UD_HTTP_MAX_COLUMNS]; /* loop thread only */
    uint8_t list[4096];
    size_t ll = 0, ncols = 0;
    int rc = ud_http_query_get(q, qlen, "columns", list, sizeof list, &ll, errmsg);
    if (rc == 0)
        rc = ud_http_columns_split(list, ll, cols, UD_HTTP_MAX_COLUMNS, &ncols, errmsg);
    if (rc != 0 && rc != UD_ENOTFOUND) {
        ud_http_reply_error(r, 400, "%s", errmsg);
        return;
    }
    struct ud_row row = {k, kl, cols, ncols};
    struct row_out o = {.ncols = 0};
    ud_jbuf_init(&o.j);
    ud_jbuf_lit(&o.j, "{\"rowKey\":");
    ud_jbuf_str(&o.j, k, kl);
    ud_jbuf_lit(&o.j, ",\"columns\":{");
    rc = ud_ns_row_get(r->ns, &row, row_column, &o);
    if (rc == UD_ENOTFOUND) {
        ud_jbuf_lit(&o.j, "},\"found\":false}");
        ud_http_reply_json(r, 404, &o.j);
        return;
    }
    if (rc != 0) {
        ud_jbuf_free(&o.j);
        if (rc == UD_ELIMIT)
            ud_http_reply_error(r, 400,
                                "row key of %zu bytes is too long: a row key plus a column name "
                                "may take %d bytes (NUL bytes in the row key count twice)",
                                kl, UD_MAX_ROW_KEY_ENCODED);
        else
            ud_http_reply_code(r, rc, "row read failed");
        return;
    }
    ud_jbuf_lit(&o.j, "},\"found\":true,\"lsn\":");
    ud_jbuf_u64(&o.j, o.lsn);
    ud_jbuf_lit(&o.j, "}");
    ud_http_reply_json(r, 200, &o.j);
}

/* Row scans: the engine calls back per column; items are closed when the row key changes. */
struct scan_out {
    struct ud_jbuf j;
    size_t nrows;
    uint8_t row[UD_MAX_KEY];
    size_t row_len;
    size_t ncols;
};

static int scan_column(void *arg, const uint8_t *row, size_t row_len, const uint8_t *name,
                       size_t name_len, const uint8_t *value, size_t value_len, uint64_t lsn)
{
    (void)lsn;
    struct scan_out *o = arg;
    struct ud_jbuf *j = &o->j;
    if (o->nrows == 0 || row_len != o->row_len || memcmp(row, o->row, row_len) != 0) {
        if (o->nrows++ > 0)
            ud_jbuf_lit(j, "}},");
        ud_jbuf_lit(j, "{\"key\":");
        ud_jbuf_b64(j, row, row_len);
        ud_jbuf_lit(j, ",\"columns\":{");
        if (row_len > sizeof o->row)
            return UD_ELIMIT;
        memcpy(o->row, row, row_len);
        o->row_len = row_len;
        o->ncols = 0;
    }
    if (o->ncols++ > 0)
        ud_jbuf_raw(j, ",", 1);
    ud_jbuf_str(j, name, name_len);
    ud_jbuf_raw(j, ":", 1);
    ud_jbuf_b64(j, value, value_len);
    return j->err != 0 ? UD_ENOMEM : 0;
}

void ud_http_on_row_scan(struct ud_http_req *r, void *arg)
{
    (void)arg;
    uint8_t prefix[UD_MAX_KEY + 1], start[UD_MAX_KEY + 1];
    struct ud_scan scan;
    if (ud_http_scan_params(r, &scan, prefix, start, UD_MAX_KEY) != 0)
        return;
    struct scan_out *o = calloc(1, sizeof *o);
    if (o == NULL)
        abort();
    ud_jbuf_init(&o->j);
    ud_jbuf_lit(&o->j, "{\"items\":[");
    struct ud_buf next = {0};
    int rc = ud_ns_row_scan(r->ns, &scan, scan_column, o, &next);
    if (rc != 0) {
        ud_jbuf_free(&o->j);
        free(o);
        ud_buf_free(&next);
        ud_http_reply_code(r, rc, "row scan failed");
        return;
    }
    if (o->nrows > 0)
        ud_jbuf_lit(&o->j, "}}");
    ud_jbuf_lit(&o->j, "],\"next\":");
    if (next.len > 0)
        ud_jbuf_b64(&o->j, next.data, next.len);
    else
        ud_jbuf_lit(&o->j, "null");
    ud_jbuf_lit(&o->j, "}");
    ud_buf_free(&next);
    struct ud_jbuf j = o->j;
    free(o);
    ud_http_reply_json(r, 200, &j);
}
