/* Read commands served from the engine: GET, MGET, EXISTS, TYPE, SCAN and the hash (row) reads. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/resp/resp_int.h"

/* A callback return that stops an engine read early; distinct from every UD_E* code. */
#define STOP_FOUND  (-1)
#define STOP_TOOBIG (-2)

static void reply_too_big(struct ud_resp_buf *b)
{
    ud_resp_add_errorf(b, "ERR reply would exceed %u bytes; ask for fewer keys or fields",
                       UD_RESP_MAX_REPLY);
}

/* Engine callbacks of GET-like commands: the value is used where it lies (ud_ns_kv_get_with). */
static int add_bulk_value(void *arg, const uint8_t *value, size_t len, uint64_t lsn)
{
    (void)lsn;
    ud_resp_add_bulk(arg, value, len);
    return 0;
}

static int value_length(void *arg, const uint8_t *value, size_t len, uint64_t lsn)
{
    (void)value, (void)lsn;
    *(size_t *)arg = len;
    return 0;
}

static int stop_at_first(void *arg, const uint8_t *name, size_t name_len, const uint8_t *value,
                         size_t value_len, uint64_t lsn)
{
    (void)arg, (void)name, (void)name_len, (void)value, (void)value_len, (void)lsn;
    return STOP_FOUND;
}

/* 1 when a row with this key has a visible column, 0 when not, -rc on an engine failure. */
static int row_exists(struct ud_ns *ns, const uint8_t *key, size_t len)
{
    struct ud_row row = {key, len, NULL, 0};
    int rc = ud_ns_row_get(ns, &row, stop_at_first, NULL);
    if (rc == STOP_FOUND)
        return 1;
    if (rc == 0 || rc == UD_ENOTFOUND || rc == UD_ELIMIT)
        return 0; /* a key over the row limit cannot name a row */
    return -rc;
}

int ud_resp_key_kinds(struct ud_ns *ns, const uint8_t *key, size_t len, int *kv, int *row)
{
    int rc = ud_ns_kv_exists(ns, key, len);
    if (rc < 0)
        return -rc;
    *kv = rc;
    if ((rc = row_exists(ns, key, len)) < 0)
        return -rc;
    *row = rc;
    return 0;
}

void ud_resp_cmd_get(struct ud_resp_call *c)
{
    if (c->ctx->batch.enabled) {
        ud_resp_batch_get(c);
        return;
    }
    struct ud_ns *ns;
    if (ud_resp_check_kv_key(c, c->argv[1], c->argvlen[1]) != 0 || ud_resp_acquire_ns(c, &ns))
        return;
    /* The bulk reply is appended by the engine's callback, straight from the stored value. */
    struct ud_resp_buf *b = ud_resp_reply(c);
    int rc = ud_ns_kv_get_with(ns, c->argv[1], c->argvlen[1], add_bulk_value, b);
    ud_resp_release_ns(c, ns);
    if (rc == UD_ENOTFOUND)
        ud_resp_add_null(b);
    else if (rc != 0)
        ud_resp_reply_engine_error(b, "read failed", rc);
}

void ud_resp_cmd_strlen(struct ud_resp_call *c)
{
    struct ud_ns *ns;
    if (ud_resp_check_kv_key(c, c->argv[1], c->argvlen[1]) != 0 || ud_resp_acquire_ns(c, &ns))
        return;
    size_t vlen = 0;
    int rc = ud_ns_kv_get_with(ns, c->argv[1], c->argvlen[1], value_length, &vlen);
    ud_resp_release_ns(c, ns);
    if (rc == 0 || rc == UD_ENOTFOUND)
        ud_resp_add_int(ud_resp_reply(c), rc == 0 ? (long long)vlen : 0);
    else
        ud_resp_reply_engine_error(ud_resp_reply(c), "read failed", rc);
}

/*
 * MGET reads every key through one engine reader: one memtable view and one LMDB snapshot, so an
 * MSET (one record) is seen whole or not at all, as on a single-threaded Redis, even while the
 * apply thread applies it between two of the keys.
 */
void ud_resp_cmd_mget(struct ud_resp_call *c)
{
    struct ud_ns *ns;
    if (ud_resp_check_kv_keys(c, 1) != 0)
        return;
    struct ud_resp_buf *b = ud_resp_reply(c);
    struct ud_kv_reader *r = ud_resp_reader(c->ctx);
    if (r == NULL) {
        ud_resp_reply_engine_error(b, "read failed", UD_ENOMEM);
        return;
    }
    if (ud_resp_acquire_ns(c, &ns))
        return;
    int rc = ud_kv_reader_open(r, ns);
    if (rc != 0) {
        ud_resp_release_ns(c, ns);
        ud_resp_reply_engine_error(b, "read failed", rc);
        return;
    }
    size_t start = b->len;
    ud_resp_add_array(b, c->argc - 1);
    for (size_t i = 1; i < c->argc; i++) {
        const uint8_t *value;
        size_t len;
        rc = ud_kv_reader_get(r, c->argv[i], c->argvlen[i], &value, &len, NULL);
        if (rc == 0) {
            ud_resp_add_bulk(b, value, len);
        } else if (rc == UD_ENOTFOUND) {
            ud_resp_add_null(b);
        } else {
            b->len = start;
            ud_resp_reply_engine_error(b, "read failed", rc);
            break;
        }
        if (b->len - start > UD_RESP_MAX_REPLY) {
            b->len = start;
            reply_too_big(b);
            break;
        }
    }
    ud_kv_reader_close(r);
    ud_resp_release_ns(c, ns);
}

/* EXISTS counts every argument that names a string or a hash (repeats count again, as in Redis).
 */
void ud_resp_cmd_exists(struct ud_resp_call *c)
{
    struct ud_ns *ns;
    if (ud_resp_check_kv_keys(c, 1) != 0)
        return;
    if (ud_resp_acquire_ns(c, &ns))
        return;
    long long n = 0;
    int rc = 0;
    for (size_t i = 1; i < c->argc && rc >= 0; i++) {
        rc = ud_ns_kv_exists(ns, c->argv[i], c->argvlen[i]);
        if (rc == 0)
            rc = row_exists(ns, c->argv[i], c->argvlen[i]);
        if (rc > 0)
            n++;
    }
    ud_resp_release_ns(c, ns);
    if (rc < 0)
        ud_resp_reply_engine_error(ud_resp_reply(c), "read failed", -rc);
    else
        ud_resp_add_int(ud_resp_reply(c), n);
}

/* TYPE: "string" for a KV key, "hash" for a row, "none". The two models are separate spaces, so a
 * key can be both; it is reported as a string then. */
void ud_resp_cmd_type(struct ud_resp_call *c)
{
    struct ud_ns *ns;
    if (ud_resp_check_kv_key(c, c->argv[1], c->argvlen[1]) != 0 || ud_resp_acquire_ns(c, &ns))
        return;
    int rc = ud_ns_kv_exists(ns, c->argv[1], c->argvlen[1]);
    const char *type = "string";
    if (rc == 0) {
        rc = row_exists(ns, c->argv[1], c->argvlen[1]);
        type = rc > 0 ? "hash" : "none";
    }
    ud_resp_release_ns(c, ns);
    if (rc < 0)
        ud_resp_reply_engine_error(ud_resp_reply(c), "read failed", -rc);
    else
        ud_resp_add_simple(ud_resp_reply(c), type);
}

/* --- hashes: a hash is a wide-column row, a field a column ------------------------------------ */

struct field {
    size_t name_off, name_len;
    size_t value_off, value_len;
};

/* Columns read from a row, copied out of the engine's views. */
struct fields {
    struct field *v;
    size_t n, cap;
    struct ud_resp_buf bytes;
    int want_values;
};

static int collect_field(void *arg, const uint8_t *name, size_t name_len, const uint8_t *value,
                         size_t value_len, uint64_t lsn)
{
    (void)lsn;
    struct fields *f = arg;
    if (!f->want_values)
        value_len = 0;
    if (f->bytes.len + name_len + value_len > UD_RESP_MAX_REPLY)
        return STOP_TOOBIG;
    if (f->n == f->cap) {
        size_t cap = f->cap ? 2 * f->cap : 16;
        struct field *v = realloc(f->v, cap * sizeof *v);
        if (v == NULL)
            abort();
        f->v = v;
        f->cap = cap;
    }
    struct field *x = &f->v[f->n++];
    x->name_off = f->bytes.len;
    x->name_len = name_len;
    ud_resp_buf_append(&f->bytes, name, name_len);
    x->value_off = f->bytes.len;
    x->value_len = value_len;
    ud_resp_buf_append(&f->bytes, value, value_len);
    return 0;
}

static void fields_free(struct fields *f)
{
    free(f->v);
    ud_resp_buf_free(&f->bytes);
}

static int cmp_field(const void *a, const void *b, void *arg)
{
    const struct field *x = a, *y = b;
    const uint8_t *base = ((const struct fields *)arg)->bytes.data;
    size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
    int r = n ? memcmp(base + x->name_off, base + y->name_off, n) : 0;
    if (r != 0)
        return r;
    return x->name_len < y->name_len ? -1 : x->name_len > y->name_len;
}

static const struct field *find_field(const struct fields *f, const uint8_t *name, size_t len)
{
    size_t lo = 0, hi = f->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const struct field *x = &f->v[mid];
        size_t n = x->name_len < len ? x->name_len : len;
        int r = n ? memcmp(f->bytes.data + x->name_off, name, n) : 0;
        if (r == 0)
            r = x->name_len < len ? -1 : x->name_len > len;
        if (r == 0)
            return x;
        if (r < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/*
 * Reads the hash at argv[1]: every field when fields_at == 0, else the fields named by argv[from
 * ..]. Returns 0 (f filled, possibly empty), or non-zero after replying the error.
 */
static int read_hash(struct ud_resp_call *c, size_t fields_at, int want_values, struct fields *f)
{
    struct ud_ns *ns;
    const uint8_t *key = c->argv[1];
    size_t key_len = c->argvlen[1];
    memset(f, 0, sizeof *f);
    f->want_values = want_values;
    if (ud_resp_check_row_key(c, key, key_len) != 0)
        return -1;
    size_t ncols = fields_at ? c->argc - fields_at : 0;
    for (size_t i = 0; i < ncols; i++)
        if (ud_resp_check_field(c, key, key_len, c->argvlen[fields_at + i]) != 0)
            return -1;
    struct ud_col *cols = NULL;
    if (ncols > 0) {
        cols = calloc(ncols, sizeof *cols);
        if (cols == NULL)
            abort();
        for (size_t i = 0; i < ncols; i++) {
            cols[i].name = c->argv[fields_at + i];
            cols[i].name_len = c->argvlen[fields_at + i];
        }
    }
    if (ud_resp_acquire_ns(c, &ns)) {
        free(cols);
        return -1;
    }
    struct ud_row row = {key, key_len, cols, ncols};
    int rc = ud_ns_row_get(ns, &row, collect_field, f);
    ud_resp_release_ns(c, ns);
    free(cols);
    if (rc == 0 || rc == UD_ENOTFOUND) {
        /* Named reads may answer in request order; lookups below need name order. */
        if (f->n > 1)
            qsort_r(f->v, f->n, sizeof *f->v, cmp_field, f);
        return 0;
    }
    if (rc == STOP_TOOBIG)
        reply_too_big(ud_resp_reply(c));
    else
        ud_resp_reply_engine_error(ud_resp_reply(c), "read failed", rc);
    fields_free(f);
    return -1;
}

void ud_resp_cmd_hget(struct ud_resp_call *c)
{
    struct fields f;
    if (read_hash(c, 2, 1, &f) != 0)
        return;
    const struct field *x = find_field(&f, c->argv[2], c->argvlen[2]);
    if (x != NULL)
        ud_resp_add_bulk(ud_resp_reply(c), f.bytes.data + x->value_off, x->value_len);
    else
        ud_resp_add_null(ud_resp_reply(c));
    fields_free(&f);
}

void ud_resp_cmd_hexists(struct ud_resp_call *c)
{
    struct fields f;
    if (read_hash(c, 2, 0, &f) != 0)
        return;
    ud_resp_add_int(ud_resp_reply(c), find_field(&f, c->argv[2], c->argvlen[2]) != NULL);
    fields_free(&f);
}

void ud_resp_cmd_hmget(struct ud_resp_call *c)
{
    struct fields f;
    if (read_hash(c, 2, 1, &f) != 0)
        return;
    struct ud_resp_buf *b = ud_resp_reply(c);
    size_t start = b->len;
    ud_resp_add_array(b, c->argc - 2);
    for (size_t i = 2; i < c->argc; i++) {
        const struct field *x = find_field(&f, c->argv[i], c->argvlen[i]);
        if (x != NULL)
            ud_resp_add_bulk(b, f.bytes.data + x->value_off, x->value_len);
        else
            ud_resp_add_null(b);
        if (b->len - start > UD_RESP_MAX_REPLY) {
            b->len = start;
            reply_too_big(b);
            break;
        }
    }
    fields_free(&f);
}

enum { ALL_PAIRS, ALL_NAMES, ALL_VALUES };

static void reply_all(struct ud_resp_call *c, int what)
{
    struct fields f;
    if (read_hash(c, 0, what != ALL_NAMES, &f) != 0)
        return;
    struct ud_resp_buf *b = ud_resp_reply(c);
    ud_resp_add_array(b, what == ALL_PAIRS ? 2 * f.n : f.n);
    for (size_t i = 0; i < f.n; i++) {
        if (what != ALL_VALUES)
            ud_resp_add_bulk(b, f.bytes.data + f.v[i].name_off, f.v[i].name_len);
        if (what != ALL_NAMES)
            ud_resp_add_bulk(b, f.bytes.data + f.v[i].value_off, f.v[i].value_len);
    }
    fields_free(&f);
}

void ud_resp_cmd_hgetall(struct ud_resp_call *c)
{
    reply_all(c, ALL_PAIRS);
}

void ud_resp_cmd_hkeys(struct ud_resp_call *c)
{
    reply_all(c, ALL_NAMES);
}

void ud_resp_cmd_hvals(struct ud_resp_call *c)
{
    reply_all(c, ALL_VALUES);
}

static int count_field(void *arg, const uint8_t *name, size_t name_len, const uint8_t *value,
                       size_t value_len, uint64_t lsn)
{
    (void)name, (void)name_len, (void)value, (void)value_len, (void)lsn;
    (*(long long *)arg)++;
    return 0;
}

void ud_resp_cmd_hlen(struct ud_resp_call *c)
{
    struct ud_ns *ns;
    if (ud_resp_check_row_key(c, c->argv[1], c->argvlen[1]) != 0 || ud_resp_acquire_ns(c, &ns))
        return;
    long long n = 0;
    struct ud_row row = {c->argv[1], c->argvlen[1], NULL, 0};
    int rc = ud_ns_row_get(ns, &row, count_field, &n);
    ud_resp_release_ns(c, ns);
    if (rc == 0 || rc == UD_ENOTFOUND)
        ud_resp_add_int(ud_resp_reply(c), n);
    else
        ud_resp_reply_engine_error(ud_resp_reply(c), "read failed", rc);
}

/* --- SCAN ------------------------------------------------------------------------------------- */

/* Keys collected from one model's scan, in order. */
struct keylist {
    size_t *off, *len;
    size_t n, cap;
    struct ud_resp_buf bytes;
    struct ud_buf next; /* the engine's resume key (empty: exhausted) */
};

static void keylist_add(struct keylist *k, const uint8_t *key, size_t len)
{
    if (k->n == k->cap) {
        size_t cap = k->cap ? 2 * k->cap : 16;
        size_t *o = realloc(k->off, cap * sizeof *o);
        size_t *l = o ? realloc(k->len, cap * sizeof *l) : NULL;
        if (o == NULL || l == NULL)
            abort();
        k->off = o;
        k->len = l;
        k->cap = cap;
    }
    k->off[k->n] = k->bytes.len;
    k->len[k->n] = len;
    k->n++;
    ud_resp_buf_append(&k->bytes, key, len);
}

static void keylist_free(struct keylist *k)
{
    free(k->off);
    free(k->len);
    ud_resp_buf_free(&k->bytes);
    ud_buf_free(&k->next);
}

static int scan_kv_cb(void *arg, const uint8_t *key, size_t key_len, const uint8_t *value,
                      size_t value_len, uint64_t lsn)
{
    (void)value, (void)value_len, (void)lsn;
    keylist_add(arg, key, key_len);
    return 0;
}

static int scan_row_cb(void *arg, const uint8_t *row, size_t row_len, const uint8_t *name,
                       size_t name_len, const uint8_t *value, size_t value_len, uint64_t lsn)
{
    (void)name, (void)name_len, (void)value, (void)value_len, (void)lsn;
    struct keylist *k = arg;
    /* Called once per column: a row is listed once. */
    if (k->n > 0 && k->len[k->n - 1] == row_len &&
        memcmp(k->bytes.data + k->off[k->n - 1], row, row_len) == 0)
        return 0;
    keylist_add(k, row, row_len);
    return 0;
}

static int keycmp(const uint8_t *a, size_t al, const uint8_t *b, size_t bl)
{
    size_t n = al < bl ? al : bl;
    int r = n ? memcmp(a, b, n) : 0;
    if (r != 0)
        return r;
    return al < bl ? -1 : al > bl;
}

/*
 * Turns a MATCH pattern into a prefix: "prefix*" (with \x escapes) or a literal pattern (which
 * matches one key). Returns 0, or -1 for any other glob.
 */
static int match_prefix(const uint8_t *p, size_t n, uint8_t *out, size_t *out_len, int *exact)
{
    size_t o = 0;
    *exact = 1;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\\' && i + 1 < n) {
            out[o++] = p[++i];
        } else if (p[i] == '*' && i + 1 == n) {
            *exact = 0;
        } else if (p[i] == '*' || p[i] == '?' || p[i] == '[') {
            return -1;
        } else {
            out[o++] = p[i];
        }
    }
    *out_len = o;
    return 0;
}

/*
 * SCAN cursors. An iteration keeps one slot for its whole life: each step's cursor replaces the
 * one before the step's own (kept, so that a step repeated after a lost answer still resumes),
 * so a slot is given up only when UD_RESP_MAX_CURSORS newer iterations have started. Had every
 * step taken a slot of its own, a fast scan elsewhere would expire a slow scanner's cursor
 * within 4096 of its steps.
 */
static struct ud_resp_scan_pos *cursor_find(struct ud_resp_ctx *ctx, uint64_t id,
                                            struct ud_resp_cursor **slot)
{
    if (ctx->cursors == NULL)
        return NULL;
    *slot = &ctx->cursors[id % UD_RESP_MAX_CURSORS];
    if ((*slot)->cur.id == id)
        return &(*slot)->cur;
    return (*slot)->prev.id == id ? &(*slot)->prev : NULL;
}

/* The next position of the iteration in slot (NULL: a new iteration, which takes the next slot of
 * the ring) after a step from the cursor from; returns the cursor naming it. */
static uint64_t cursor_next(struct ud_resp_ctx *ctx, struct ud_resp_cursor *slot, uint64_t from,
                            const char *ns, const uint8_t *key, size_t len)
{
    if (ctx->cursors == NULL) {
        ctx->cursors = calloc(UD_RESP_MAX_CURSORS, sizeof *ctx->cursors);
        if (ctx->cursors == NULL)
            abort();
    }
    if (slot == NULL) {
        slot = &ctx->cursors[ctx->cursor_next];
        ctx->cursor_next = (ctx->cursor_next + 1) % UD_RESP_MAX_CURSORS;
        snprintf(slot->ns, sizeof slot->ns, "%s", ns);
        slot->prev.id = 0;
    } else if (from == slot->cur.id) {
        slot->prev = slot->cur;
    } /* else a repeated step from prev: the cursor it had returned is replaced */
    uint64_t index = (uint64_t)(slot - ctx->cursors);
    uint64_t top = slot->cur.id > slot->prev.id ? slot->cur.id : slot->prev.id;
    /* A slot's first cursor is its index (0 starts an iteration: slot 0's is the ring size). */
    uint64_t id = top != 0 ? top + UD_RESP_MAX_CURSORS : index != 0 ? index : UD_RESP_MAX_CURSORS;
    slot->cur.id = id;
    memcpy(slot->cur.key, key, len);
    slot->cur.key_len = (uint16_t)len;
    return id;
}

/* A SCAN cursor read as Redis reads it (strtoul, base 10, after checking that the first byte is
 * no space): an optional sign, decimal digits with any number of leading zeros, the empty string
 * is 0, and the reading stops at a NUL byte (Redis passes the argument as a C string); nothing else
 * before the NUL. A value over 2^64-1 is refused; a negative number wraps. */
static int scan_cursor(const struct ud_resp_call *c, uint64_t *out)
{
    const uint8_t *p = c->argv[1];
    const uint8_t *nul = memchr(p, 0, c->argvlen[1]);
    size_t n = nul != NULL ? (size_t)(nul - p) : c->argvlen[1];
    size_t i = 0;
    if (n > 0 && isspace(p[0]))
        return 0;
    int negative = n > 0 && p[0] == '-';
    if (n > 0 && (p[0] == '+' || p[0] == '-'))
        i++;
    if (i == n) {
        *out = 0;
        return i == 0; /* a sign without digits is no number; nothing at all is 0 */
    }
    uint64_t v = 0;
    for (; i < n; i++) {
        if (p[i] < '0' || p[i] > '9' || v > (UINT64_MAX - (uint64_t)(p[i] - '0')) / 10)
            return 0;
        v = v * 10 + (uint64_t)(p[i] - '0');
    }
    *out = negative ? 0 - v : v;
    return 1;
}

/*
 * SCAN cursor [MATCH pattern] [COUNT n] [TYPE string|hash]. Keys come in byte order, KV keys and
 * row keys merged (a key that is both is listed once). The cursor is a number the server maps to
 * the next key to return; 0 starts and ends an iteration. Unlike Redis, every key present for the
 * whole iteration is returned exactly once, in order.
 */
void ud_resp_cmd_scan(struct ud_resp_call *c)
{
    struct ud_resp_ctx *ctx = c->ctx;
    struct ud_resp_buf *b;
    uint64_t cursor;
    uint8_t prefix[UD_MAX_KEY], start_key[UD_MAX_KEY];
    size_t prefix_len = 0;
    int exact = 0;
    long long count = 10;
    int want_kv = 1, want_rows = 1;

    if (!scan_cursor(c, &cursor)) {
        ud_resp_add_error(ud_resp_reply(c), "ERR invalid cursor");
        return;
    }
    for (size_t i = 2; i < c->argc; i += 2) {
        if (i + 1 >= c->argc) {
            ud_resp_add_error(ud_resp_reply(c), "ERR syntax error");
            return;
        }
        if (ud_resp_arg_is(c, i, "match")) {
            char shown[160];
            if (c->argvlen[i + 1] > UD_MAX_KEY ||
                match_prefix(c->argv[i + 1], c->argvlen[i + 1], prefix, &prefix_len, &exact) != 0) {
                ud_resp_printable(shown, sizeof shown, c->argv[i + 1], c->argvlen[i + 1], 100);
                ud_resp_add_errorf(ud_resp_reply(c),
                                   "ERR SCAN MATCH supports prefix patterns ('prefix*') and "
                                   "literal keys only; '%s' is neither",
                                   shown);
                return;
            }
        } else if (ud_resp_arg_is(c, i, "count")) {
            if (!ud_resp_arg_ll(c, i + 1, &count)) {
                ud_resp_add_error(ud_resp_reply(c), "ERR value is not an integer or out of range");
                return;
            }
            if (count < 1) {
                ud_resp_add_error(ud_resp_reply(c), "ERR syntax error");
                return;
            }
            if (count > UD_RESP_MAX_SCAN_COUNT)
                count = UD_RESP_MAX_SCAN_COUNT; /* COUNT is a hint, in Redis too */
        } else if (ud_resp_arg_is(c, i, "type")) {
            /* Any other name (list, set, no type at all) matches nothing, as in Redis. */
            want_kv = ud_resp_arg_is(c, i + 1, "string");
            want_rows = ud_resp_arg_is(c, i + 1, "hash");
        } else {
            ud_resp_add_error(ud_resp_reply(c), "ERR syntax error");
            return;
        }
    }

    const uint8_t *start = NULL;
    size_t start_len = 0;
    struct ud_resp_cursor *slot = NULL;
    if (cursor != 0) {
        struct ud_resp_scan_pos *pos = cursor_find(ctx, (uint64_t)cursor, &slot);
        if (pos == NULL) {
            ud_resp_add_errorf(ud_resp_reply(c),
                               "ERR SCAN cursor %llu is unknown or expired (the server keeps the "
                               "%d most recently started iterations); start again from 0",
                               (unsigned long long)cursor, UD_RESP_MAX_CURSORS);
            return;
        }
        if (strcmp(slot->ns, c->session->ns) != 0) {
            ud_resp_add_errorf(ud_resp_reply(c),
                               "ERR SCAN cursor %llu belongs to namespace '%s', not '%s'",
                               (unsigned long long)cursor, slot->ns, c->session->ns);
            return;
        }
        /* Copied: the step's own next cursor may replace this position in the slot. */
        memcpy(start_key, pos->key, pos->key_len);
        start = start_key;
        start_len = pos->key_len;
    }

    struct ud_ns *ns;
    if (ud_resp_acquire_ns(c, &ns))
        return;
    struct keylist kv = {0}, rows = {0};
    struct ud_scan sc = {prefix, prefix_len, start, start_len, exact ? 1 : (uint32_t)count};
    int rc = 0;
    if (want_kv)
        rc = ud_ns_kv_scan(ns, &sc, scan_kv_cb, &kv, &kv.next);
    /* A prefix too long for a row key names no row. */
    if (rc == 0 && want_rows && ud_row_prefix_len(prefix, prefix_len) - 2 <= UD_MAX_ROW_KEY_ENCODED)
        rc = ud_ns_row_scan(ns, &sc, scan_row_cb, &rows, &rows.next);
    ud_resp_release_ns(c, ns);
    if (rc != 0) {
        ud_resp_reply_engine_error(ud_resp_reply(c), "scan failed", rc);
        goto out;
    }

    /* Merge the two ordered lists, taking at most count distinct keys. */
    size_t i = 0, j = 0, taken = 0;
    size_t *pick_off = calloc(kv.n + rows.n + 1, sizeof *pick_off);
    size_t *pick_len = calloc(kv.n + rows.n + 1, sizeof *pick_len);
    const uint8_t **pick_base = calloc(kv.n + rows.n + 1, sizeof *pick_base);
    if (pick_off == NULL || pick_len == NULL || pick_base == NULL)
        abort();
    while ((long long)taken < count && (i < kv.n || j < rows.n)) {
        int r;
        if (i >= kv.n)
            r = 1;
        else if (j >= rows.n)
            r = -1;
        else
            r = keycmp(kv.bytes.data + kv.off[i], kv.len[i], rows.bytes.data + rows.off[j],
                       rows.len[j]);
        if (r <= 0) {
            pick_base[taken] = kv.bytes.data;
            pick_off[taken] = kv.off[i];
            pick_len[taken] = kv.len[i];
            i++;
            if (r == 0)
                j++;
        } else {
            pick_base[taken] = rows.bytes.data;
            pick_off[taken] = rows.off[j];
            pick_len[taken] = rows.len[j];
            j++;
        }
        taken++;
    }
    /* Resume at the smallest key not returned: the first untaken of either list, or the
     * engine's resume key of a list that was taken whole. */
    const uint8_t *resume = NULL;
    size_t resume_len = 0;
    const uint8_t *cand[2];
    size_t cand_len[2];
    cand[0] = i < kv.n ? kv.bytes.data + kv.off[i] : kv.next.len ? kv.next.data : NULL;
    cand_len[0] = i < kv.n ? kv.len[i] : kv.next.len;
    cand[1] = j < rows.n ? rows.bytes.data + rows.off[j] : rows.next.len ? rows.next.data : NULL;
    cand_len[1] = j < rows.n ? rows.len[j] : rows.next.len;
    for (int k = 0; k < 2; k++) {
        if (cand[k] != NULL &&
            (resume == NULL || keycmp(cand[k], cand_len[k], resume, resume_len) < 0)) {
            resume = cand[k];
            resume_len = cand_len[k];
        }
    }
    if (exact)
        resume = NULL; /* the literal key sorts first among the keys it prefixes */

    b = ud_resp_reply(c);
    ud_resp_add_array(b, 2);
    if (resume != NULL)
        ud_resp_add_bulk_ull(b, cursor_next(ctx, slot, cursor, c->session->ns, resume, resume_len));
    else
        ud_resp_add_bulk_str(b, "0");
    size_t shown = 0;
    for (size_t k = 0; k < taken; k++)
        shown += !exact || keycmp(pick_base[k] + pick_off[k], pick_len[k], prefix, prefix_len) == 0;
    ud_resp_add_array(b, shown);
    for (size_t k = 0; k < taken; k++)
        if (!exact || keycmp(pick_base[k] + pick_off[k], pick_len[k], prefix, prefix_len) == 0)
            ud_resp_add_bulk(b, pick_base[k] + pick_off[k], pick_len[k]);
    free(pick_off);
    free(pick_len);
    free(pick_base);
out:
    keylist_free(&kv);
    keylist_free(&rows);
}
