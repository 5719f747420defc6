/* Write API, rows: PUT/DELETE row/{key}, DELETE row/{key}/columns?columns=, POST row/batch. */
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/http/body.h"
#include "core/http/path.h"
#include "writer/http_write.h"

static void write_rows(struct ud_http_req *r, struct ud_writer_http *wh, enum ud_op op,
                       const struct ud_row *rows, size_t n, size_t processed)
{
    char errmsg[UD_ERRMSG_SIZE];
    uint8_t *rec;
    size_t len;
    int rc = ud_engine_encode_rows(op, rows, n, 0, &rec, &len, errmsg);
    if (rc != 0) {
        ud_http_reply_code(r, rc, errmsg);
        return;
    }
    ud_writer_http_submit(wh, r, rec, len, processed);
}

void ud_writer_http_on_row_put(struct ud_http_req *r, void *arg)
{
    char errmsg[UD_ERRMSG_SIZE];
    size_t kl, bl;
    const uint8_t *key = ud_http_req_key(r, &kl);
    const uint8_t *body = ud_http_req_body(r, &bl);
    struct ud_http_body b;
    ud_http_body_init(&b);
    struct ud_row row = {key, kl, NULL, 0};
    struct ud_col *cols;
    int rc = ud_http_parse_row_put(&b, body, bl, &cols, &row.ncols, errmsg);
    if (rc != 0)
        ud_http_reply_code(r, rc, errmsg);
    else {
        row.cols = cols;
        write_rows(r, arg, UD_OP_PUT, &row, 1, 0);
    }
    ud_http_body_free(&b);
}

void ud_writer_http_on_row_delete(struct ud_http_req *r, void *arg)
{
    size_t kl;
    const uint8_t *key = ud_http_req_key(r, &kl);
    struct ud_row row = {key, kl, NULL, 0};
    write_rows(r, arg, UD_OP_DELETE, &row, 1, 0);
}

void ud_writer_http_on_row_delete_columns(struct ud_http_req *r, void *arg)
{
    char errmsg[UD_ERRMSG_SIZE];
    size_t kl, qlen, ll = 0, ncols = 0;
    const uint8_t *key = ud_http_req_key(r, &kl);
    const char *q = ud_http_req_query(r, &qlen);
    uint8_t *list = malloc(8192);
    struct ud_col *cols = malloc(UD_HTTP_MAX_COLUMNS * sizeof *cols);
    if (list == NULL || cols == NULL)
        abort();
    int rc = ud_http_query_get(q, qlen, "columns", list, 8192, &ll, errmsg);
    if (rc == UD_ENOTFOUND || (rc == 0 && ll == 0))
        rc = ud_errf(errmsg, UD_EINVAL,
                     "query parameter columns is required: DELETE row/{key}/columns?columns=a,b "
                     "(DELETE row/{key} deletes the whole row)");
    if (rc == 0)
        rc = ud_http_columns_split(list, ll, cols, UD_HTTP_MAX_COLUMNS, &ncols, errmsg);
    if (rc != 0) {
        ud_http_reply_error(r, 400, "%s", errmsg);
    } else {
        struct ud_row row = {key, kl, cols, ncols};
        write_rows(r, arg, UD_OP_DELETE, &row, 1, 0);
    }
    free(cols);
    free(list);
}

void ud_writer_http_on_row_batch(struct ud_http_req *r, void *arg)
{
    char errmsg[UD_ERRMSG_SIZE];
    size_t bl;
    const uint8_t *body = ud_http_req_body(r, &bl);
    struct ud_http_body b;
    ud_http_body_init(&b);
    struct ud_http_row_batch batch;
    int rc = ud_http_parse_row_batch(&b, body, bl, &batch, errmsg);
    if (rc != 0)
        ud_http_reply_code(r, rc, errmsg);
    else
        write_rows(r, arg, batch.op, batch.rows, batch.n, batch.n);
    ud_http_body_free(&b);
}
