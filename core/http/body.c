/* JSON request bodies: jansson parsing, strict base64, and the checks the API documents. */
#include "core/http/body.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/http/json.h"

/* --- the body's memory: blocks freed together ------------------------------------------------- */

struct ud_http_body_blk {
    struct ud_http_body_blk *next;
    max_align_t data[];
};

void ud_http_body_init(struct ud_http_body *b)
{
    b->blocks = NULL;
    b->inline_used = 0;
}

void ud_http_body_free(struct ud_http_body *b)
{
    while (b->blocks != NULL) {
        struct ud_http_body_blk *n = b->blocks->next;
        free(b->blocks);
        b->blocks = n;
    }
}

/* Inside the struct while it has room (a PUT's value: a heap block of just over 1 KiB for a 1 KiB
 * value missed malloc's per-thread cache, 1 % of the leader's loop thread at concurrency 256),
 * then one block per allocation: parsed bodies hold few allocations (arrays, a value, keys).
 * Network glue may abort on OOM (STYLE.md), and a 1 MiB body never needs much. */
static void *body_alloc(struct ud_http_body *b, size_t n)
{
    size_t a = sizeof(max_align_t);
    size_t rounded = n == 0 ? a : (n + a - 1) / a * a;
    if (n <= sizeof b->inline_buf && rounded <= sizeof b->inline_buf - b->inline_used) {
        void *p = (char *)b->inline_buf + b->inline_used;
        b->inline_used += rounded;
        return p;
    }
    struct ud_http_body_blk *blk = malloc(sizeof *blk + (n ? n : 1));
    if (blk == NULL)
        abort();
    blk->next = b->blocks;
    b->blocks = blk;
    return blk->data;
}

/* --- helpers ---------------------------------------------------------------------------------- */

static int load(const void *in, size_t len, json_t **root, char *errmsg)
{
    /* A UTF-8 byte order mark before the JSON text is ignored (RFC 8259 section 8.1 lets parsers
     * do so): some Windows tools write one, and the body is the same JSON either way. */
    if (len >= 3 && memcmp(in, "\xEF\xBB\xBF", 3) == 0) {
        in = (const char *)in + 3;
        len -= 3;
    }
    if (len == 0)
        return ud_errf(errmsg, UD_EINVAL, "malformed JSON: the request body is empty");
    json_error_t e;
    *root = json_loadb(in, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &e);
    if (*root == NULL)
        return ud_errf(errmsg, UD_EINVAL, "malformed JSON: %s (line %d, column %d)", e.text, e.line,
                       e.column);
    if (!json_is_object(*root)) {
        json_decref(*root);
        *root = NULL;
        return ud_errf(errmsg, UD_EINVAL, "malformed JSON: the body must be a JSON object");
    }
    return 0;
}

/* Decodes a base64 JSON string into body memory. */
static int b64_field(struct ud_http_body *b, json_t *v, const char *field, const uint8_t **out,
                     size_t *out_len, char *errmsg)
{
    if (v == NULL)
        return ud_errf(errmsg, UD_EINVAL, "field \"%s\" is required", field);
    if (!json_is_string(v))
        return ud_errf(errmsg, UD_EINVAL, "field \"%s\" must be a base64 string", field);
    size_t sl = json_string_length(v);
    uint8_t *dst = body_alloc(b, ud_b64_decoded_max(sl));
    if (ud_b64_decode(json_string_value(v), sl, dst, out_len) != 0)
        return ud_errf(errmsg, UD_EINVAL, "invalid base64 encoding in field \"%s\"", field);
    *out = dst;
    return 0;
}

/* Copies a non-empty JSON string (a key or a name: UTF-8, NUL allowed) into body memory. */
static int str_field(struct ud_http_body *b, json_t *v, const char *field, const uint8_t **out,
                     size_t *out_len, char *errmsg)
{
    if (v == NULL)
        return ud_errf(errmsg, UD_EINVAL, "field \"%s\" is required", field);
    if (!json_is_string(v))
        return ud_errf(errmsg, UD_EINVAL, "field \"%s\" must be a string", field);
    size_t sl = json_string_length(v);
    if (sl == 0)
        return ud_errf(errmsg, UD_EINVAL, "field \"%s\" is empty", field);
    uint8_t *dst = body_alloc(b, sl);
    memcpy(dst, json_string_value(v), sl);
    *out = dst;
    *out_len = sl;
    return 0;
}

static int op_field(json_t *root, int allow_update, enum ud_op *op, char *errmsg)
{
    json_t *v = json_object_get(root, "operation");
    if (v == NULL)
        return ud_errf(errmsg, UD_EINVAL, "field \"operation\" is required");
    const char *s = json_string_value(v);
    if (s != NULL && strcmp(s, "put") == 0)
        *op = UD_OP_PUT;
    else if (s != NULL && strcmp(s, "delete") == 0)
        *op = UD_OP_DELETE;
    else if (s != NULL && allow_update && strcmp(s, "update") == 0)
        *op = UD_OP_UPDATE;
    else
        return ud_errf(errmsg, UD_EINVAL, "field \"operation\" must be %s",
                       allow_update ? "\"put\", \"update\" or \"delete\""
                                    : "\"put\" or \"delete\"");
    return 0;
}

/* An array field with 1..max elements. */
static int array_field(json_t *root, const char *field, size_t max, json_t **out, char *errmsg)
{
    json_t *v = json_object_get(root, field);
    if (v == NULL)
        return ud_errf(errmsg, UD_EINVAL, "field \"%s\" is required", field);
    if (!json_is_array(v))
        return ud_errf(errmsg, UD_EINVAL, "field \"%s\" must be an array", field);
    if (json_array_size(v) == 0)
        return ud_errf(errmsg, UD_EINVAL, "field \"%s\" is empty", field);
    if (json_array_size(v) > max)
        return ud_errf(errmsg, UD_EINVAL, "field \"%s\" has %zu elements; the limit is %zu", field,
                       json_array_size(v), max);
    *out = v;
    return 0;
}

/* Columns with values: an object {name: b64}, at least one. */
static int columns_values(struct ud_http_body *b, json_t *v, const char *field,
                          struct ud_col **cols, size_t *ncols, char *errmsg)
{
    if (v == NULL)
        return ud_errf(errmsg, UD_EINVAL, "field \"%s\" is required", field);
    if (!json_is_object(v))
        return ud_errf(errmsg, UD_EINVAL, "field \"%s\" must be an object of base64 strings",
                       field);
    size_t n = json_object_size(v);
    if (n == 0)
        return ud_errf(errmsg, UD_EINVAL, "field \"%s\" names no columns", field);
    if (n > UD_HTTP_MAX_COLUMNS)
        return ud_errf(errmsg, UD_EINVAL, "field \"%s\" has %zu columns; the limit is %d", field, n,
                       UD_HTTP_MAX_COLUMNS);
    struct ud_col *c = body_alloc(b, n * sizeof *c);
    size_t i = 0;
    const char *name;
    size_t name_len;
    json_t *val;
    void *tmp;
    json_object_keylen_foreach_safe(v, tmp, name, name_len, val)
    {
        char f[160];
        snprintf(f, sizeof f, "%s.%.*s", field, (int)(name_len > 64 ? 64 : name_len), name);
        if (name_len == 0)
            return ud_errf(errmsg, UD_EINVAL, "field \"%s\" has an empty column name", field);
        uint8_t *nm = body_alloc(b, name_len);
        memcpy(nm, name, name_len);
        c[i].name = nm;
        c[i].name_len = name_len;
        int rc = b64_field(b, val, f, &c[i].value, &c[i].value_len, errmsg);
        if (rc != 0)
            return rc;
        i++;
    }
    *cols = c;
    *ncols = i;
    return 0;
}

/* Column names for deletes: an array of strings, or an object whose names are used. */
static int columns_names(struct ud_http_body *b, json_t *v, const char *field, struct ud_col **cols,
                         size_t *ncols, char *errmsg)
{
    *cols = NULL;
    *ncols = 0;
    if (v == NULL || json_is_null(v))
        return 0;
    size_t n = json_is_array(v) ? json_array_size(v) : json_is_object(v) ? json_object_size(v) : 0;
    if (!json_is_array(v) && !json_is_object(v))
        return ud_errf(errmsg, UD_EINVAL, "field \"%s\" must be an array of column names", field);
    if (n > UD_HTTP_MAX_COLUMNS)
        return ud_errf(errmsg, UD_EINVAL, "field \"%s\" has %zu columns; the limit is %d", field, n,
                       UD_HTTP_MAX_COLUMNS);
    struct ud_col *c = body_alloc(b, (n ? n : 1) * sizeof *c);
    memset(c, 0, (n ? n : 1) * sizeof *c);
    if (json_is_array(v)) {
        for (size_t i = 0; i < n; i++) {
            char f[96];
            snprintf(f, sizeof f, "%s[%zu]", field, i);
            int rc = str_field(b, json_array_get(v, i), f, &c[i].name, &c[i].name_len, errmsg);
            if (rc != 0)
                return rc;
        }
    } else {
        size_t i = 0;
        const char *name;
        size_t name_len;
        json_t *val;
        void *tmp;
        json_object_keylen_foreach_safe(v, tmp, name, name_len, val)
        {
            (void)val;
            if (name_len == 0)
                return ud_errf(errmsg, UD_EINVAL, "field \"%s\" has an empty column name", field);
            uint8_t *nm = body_alloc(b, name_len);
            memcpy(nm, name, name_len);
            c[i].name = nm;
            c[i].name_len = name_len;
            i++;
        }
    }
    *cols = c;
    *ncols = n;
    return 0;
}

/* --- the bodies ------------------------------------------------------------------------------- */

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/*
 * The shape nearly every PUT kv body has, {"value":"<base64>"}, parsed without building a JSON
 * tree: jansson took ~45% of the loop's time under load. Returns 1 when the body has exactly
 * that shape with no escape in the string (then *b64 and *b64_len are set), 0 for anything
 * else, which the general parser then handles (escapes, other fields, errors).
 */
static int kv_put_shape(const char *p, size_t len, const char **b64, size_t *b64_len)
{
    const char *end = p + len;
    p = skip_ws(p, end);
    if (end - p < 11 || memcmp(p, "{", 1) != 0)
        return 0;
    p = skip_ws(p + 1, end);
    if (end - p < 7 || memcmp(p, "\"value\"", 7) != 0)
        return 0;
    p = skip_ws(p + 7, end);
    if (p == end || *p != ':')
        return 0;
    p = skip_ws(p + 1, end);
    if (p == end || *p != '"')
        return 0;
    /* The string's end; without a backslash no escape can hide in it, and the base64 decoder
     * rejects every other byte that is not base64 (as it would after jansson). */
    const char *start = ++p;
    p = memchr(start, '"', (size_t)(end - start));
    if (p == NULL || memchr(start, '\\', (size_t)(p - start)) != NULL)
        return 0;
    *b64 = start;
    *b64_len = (size_t)(p - start);
    p = skip_ws(p + 1, end);
    if (p == end || *p != '}')
        return 0;
    return skip_ws(p + 1, end) == end;
}

int ud_http_parse_kv_put(struct ud_http_body *b, const void *in, size_t len, const uint8_t **value,
                         size_t *value_len, char *errmsg)
{
    const char *text;
    size_t tl;
    if (kv_put_shape(in, len, &text, &tl)) {
        uint8_t *dst = body_alloc(b, ud_b64_decoded_max(tl));
        /* Not base64: the general parser names what is wrong (a byte that is not UTF-8 makes
         * the body malformed JSON before it makes the value bad base64). */
        if (ud_b64_decode(text, tl, dst, value_len) != 0)
            return ud_http_parse_kv_put_general(b, in, len, value, value_len, errmsg);
        *value = dst;
        return 0;
    }
    return ud_http_parse_kv_put_general(b, in, len, value, value_len, errmsg);
}

int ud_http_parse_kv_put_general(struct ud_http_body *b, const void *in, size_t len,
                                 const uint8_t **value, size_t *value_len, char *errmsg)
{
    json_t *root;
    int rc = load(in, len, &root, errmsg);
    if (rc != 0)
        return rc;
    rc = b64_field(b, json_object_get(root, "value"), "value", value, value_len, errmsg);
    json_decref(root);
    return rc;
}

int ud_http_parse_kv_batch(struct ud_http_body *b, const void *in, size_t len,
                           struct ud_http_kv_batch *out, char *errmsg)
{
    json_t *root, *arr;
    int rc = load(in, len, &root, errmsg);
    if (rc != 0)
        return rc;
    memset(out, 0, sizeof *out);
    if ((rc = op_field(root, 0, &out->op, errmsg)) != 0)
        goto done;
    const char *field = out->op == UD_OP_PUT ? "items" : "keys";
    if ((rc = array_field(root, field, UD_HTTP_MAX_BATCH, &arr, errmsg)) != 0)
        goto done;
    size_t n = json_array_size(arr);
    out->items = body_alloc(b, n * sizeof *out->items);
    memset(out->items, 0, n * sizeof *out->items);
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(arr, i);
        struct ud_kv *kv = &out->items[i];
        char f[64];
        if (out->op == UD_OP_DELETE) {
            snprintf(f, sizeof f, "keys[%zu]", i);
            if ((rc = str_field(b, e, f, &kv->key, &kv->key_len, errmsg)) != 0)
                goto done;
            continue;
        }
        if (!json_is_object(e)) {
            rc = ud_errf(errmsg, UD_EINVAL, "field \"items[%zu]\" must be an object", i);
            goto done;
        }
        snprintf(f, sizeof f, "items[%zu].key", i);
        if ((rc = str_field(b, json_object_get(e, "key"), f, &kv->key, &kv->key_len, errmsg)) != 0)
            goto done;
        snprintf(f, sizeof f, "items[%zu].value", i);
        if ((rc = b64_field(b, json_object_get(e, "value"), f, &kv->value, &kv->value_len,
                            errmsg)) != 0)
            goto done;
    }
    out->n = n;
done:
    json_decref(root);
    return rc;
}

int ud_http_parse_row_put(struct ud_http_body *b, const void *in, size_t len, struct ud_col **cols,
                          size_t *ncols, char *errmsg)
{
    json_t *root;
    int rc = load(in, len, &root, errmsg);
    if (rc != 0)
        return rc;
    rc = columns_values(b, json_object_get(root, "columns"), "columns", cols, ncols, errmsg);
    json_decref(root);
    return rc;
}

int ud_http_parse_row_batch(struct ud_http_body *b, const void *in, size_t len,
                            struct ud_http_row_batch *out, char *errmsg)
{
    json_t *root, *arr;
    int rc = load(in, len, &root, errmsg);
    if (rc != 0)
        return rc;
    memset(out, 0, sizeof *out);
    if ((rc = op_field(root, 0, &out->op, errmsg)) != 0 ||
        (rc = array_field(root, "rows", UD_HTTP_MAX_BATCH, &arr, errmsg)) != 0)
        goto done;
    size_t n = json_array_size(arr);
    out->rows = body_alloc(b, n * sizeof *out->rows);
    memset(out->rows, 0, n * sizeof *out->rows);
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(arr, i);
        struct ud_row *r = &out->rows[i];
        char f[64];
        if (!json_is_object(e)) {
            rc = ud_errf(errmsg, UD_EINVAL, "field \"rows[%zu]\" must be an object", i);
            goto done;
        }
        snprintf(f, sizeof f, "rows[%zu].rowKey", i);
        if ((rc = str_field(b, json_object_get(e, "rowKey"), f, &r->key, &r->key_len, errmsg)) != 0)
            goto done;
        snprintf(f, sizeof f, "rows[%zu].columns", i);
        struct ud_col *cols;
        size_t nc;
        rc = out->op == UD_OP_PUT
                 ? columns_values(b, json_object_get(e, "columns"), f, &cols, &nc, errmsg)
                 : columns_names(b, json_object_get(e, "columns"), f, &cols, &nc, errmsg);
        if (rc != 0)
            goto done;
        r->cols = cols;
        r->ncols = nc;
    }
    out->n = n;
done:
    json_decref(root);
    return rc;
}

int ud_http_parse_txn_begin(const void *in, size_t len, enum ud_op *op, enum ud_entry_type *type,
                            char *errmsg)
{
    json_t *root;
    int rc = load(in, len, &root, errmsg);
    if (rc != 0)
        return rc;
    if ((rc = op_field(root, 1, op, errmsg)) != 0)
        goto done;
    json_t *v = json_object_get(root, "entryType");
    const char *s = json_string_value(v);
    if (v == NULL)
        rc = ud_errf(errmsg, UD_EINVAL, "field \"entryType\" is required");
    else if (s != NULL && strcmp(s, "kv") == 0)
        *type = UD_ENTRY_KV;
    else if (s != NULL && strcmp(s, "row") == 0)
        *type = UD_ENTRY_ROW;
    else if (s != NULL && strcmp(s, "lob") == 0)
        *type = UD_ENTRY_LOB;
    else
        rc = ud_errf(errmsg, UD_EINVAL, "field \"entryType\" must be \"kv\", \"row\" or \"lob\"");
done:
    json_decref(root);
    return rc;
}

int ud_http_parse_txn_kv(struct ud_http_body *b, const void *in, size_t len, enum ud_op op,
                         struct ud_kv *out, char *errmsg)
{
    json_t *root;
    int rc = load(in, len, &root, errmsg);
    if (rc != 0)
        return rc;
    memset(out, 0, sizeof *out);
    rc = str_field(b, json_object_get(root, "key"), "key", &out->key, &out->key_len, errmsg);
    if (rc == 0 && op != UD_OP_DELETE)
        rc = b64_field(b, json_object_get(root, "value"), "value", &out->value, &out->value_len,
                       errmsg);
    json_decref(root);
    return rc;
}

int ud_http_parse_txn_row(struct ud_http_body *b, const void *in, size_t len, enum ud_op op,
                          struct ud_row *out, char *errmsg)
{
    json_t *root;
    int rc = load(in, len, &root, errmsg);
    if (rc != 0)
        return rc;
    memset(out, 0, sizeof *out);
    rc = str_field(b, json_object_get(root, "rowKey"), "rowKey", &out->key, &out->key_len, errmsg);
    struct ud_col *cols = NULL;
    size_t nc = 0;
    if (rc == 0)
        rc = op == UD_OP_DELETE
                 ? columns_names(b, json_object_get(root, "columns"), "columns", &cols, &nc, errmsg)
                 : columns_values(b, json_object_get(root, "columns"), "columns", &cols, &nc,
                                  errmsg);
    out->cols = cols;
    out->ncols = nc;
    json_decref(root);
    return rc;
}

static int path_string(struct ud_http_body *b, json_t *root, const char *field, const char **out,
                       char *errmsg)
{
    json_t *v = json_object_get(root, field);
    if (v == NULL)
        return ud_errf(errmsg, UD_EINVAL, "field \"%s\" is required", field);
    if (!json_is_string(v))
        return ud_errf(errmsg, UD_EINVAL, "field \"%s\" must be a string", field);
    size_t sl = json_string_length(v);
    if (memchr(json_string_value(v), '\0', sl) != NULL)
        return ud_errf(errmsg, UD_EINVAL, "invalid path: field \"%s\" contains a NUL byte", field);
    char *s = body_alloc(b, sl + 1);
    memcpy(s, json_string_value(v), sl + 1);
    *out = s;
    return 0;
}

int ud_http_parse_wal_backup(struct ud_http_body *b, const void *in, size_t len,
                             uint64_t *after_segment, const char **dir, char *errmsg)
{
    json_t *root;
    int rc = load(in, len, &root, errmsg);
    if (rc != 0)
        return rc;
    *after_segment = 0;
    json_t *v = json_object_get(root, "afterSegmentId");
    if (v != NULL && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 ||
            json_integer_value(v) > (json_int_t)UINT32_MAX)
            rc = ud_errf(errmsg, UD_EINVAL,
                         "field \"afterSegmentId\" must be an integer from 0 to %u", UINT32_MAX);
        else
            *after_segment = (uint64_t)json_integer_value(v);
    }
    if (rc == 0)
        rc = path_string(b, root, "backupDir", dir, errmsg);
    json_decref(root);
    return rc;
}

int ud_http_parse_btree_backup(struct ud_http_body *b, const void *in, size_t len,
                               const char **path, char *errmsg)
{
    json_t *root;
    int rc = load(in, len, &root, errmsg);
    if (rc != 0)
        return rc;
    rc = path_string(b, root, "path", path, errmsg);
    json_decref(root);
    return rc;
}

/* An optional non-negative integer field that fits an LSN. */
static int lsn_field(json_t *root, const char *field, int required, uint64_t *out, char *errmsg)
{
    json_t *v = json_object_get(root, field);
    *out = 0;
    if (v == NULL || json_is_null(v))
        return required ? ud_errf(errmsg, UD_EINVAL, "field \"%s\" is required", field) : 0;
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return ud_errf(errmsg, UD_EINVAL, "field \"%s\" must be an integer >= 0", field);
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

static int opt_string(struct ud_http_body *b, json_t *root, const char *field, const char **out,
                      char *errmsg)
{
    json_t *v = json_object_get(root, field);
    *out = NULL;
    if (v == NULL || json_is_null(v))
        return 0;
    if (!json_is_string(v))
        return ud_errf(errmsg, UD_EINVAL, "field \"%s\" must be a string", field);
    size_t sl = json_string_length(v);
    if (memchr(json_string_value(v), '\0', sl) != NULL)
        return ud_errf(errmsg, UD_EINVAL, "field \"%s\" contains a NUL byte", field);
    char *s = body_alloc(b, sl + 1);
    memcpy(s, json_string_value(v), sl + 1);
    *out = s;
    return 0;
}

int ud_http_parse_wal_ack(struct ud_http_body *b, const void *in, size_t len, const char **id,
                          uint64_t *applied_lsn, uint64_t *subtree_min_lsn, const char **address,
                          char *errmsg)
{
    json_t *root;
    int rc = load(in, len, &root, errmsg);
    if (rc != 0)
        return rc;
    rc = opt_string(b, root, "id", id, errmsg);
    if (rc == 0 && *id == NULL)
        rc = ud_errf(errmsg, UD_EINVAL, "field \"id\" is required");
    if (rc == 0)
        rc = lsn_field(root, "applied_lsn", 1, applied_lsn, errmsg);
    if (rc == 0)
        rc = lsn_field(root, "subtree_min_lsn", 0, subtree_min_lsn, errmsg);
    if (rc == 0)
        rc = opt_string(b, root, "address", address, errmsg);
    json_decref(root);
    return rc;
}
