/*
 * The RESP write commands (SET, MSET, DEL/UNLINK, HSET, HMSET, HDEL) turned into encoded records.
 * One encoder for every binary: the writer commits the records through raft, a relayer that
 * forwards writes sends them to its upstream. Both hand them to the context's submit hook
 * (ud_resp_ctx_options.submit), which owns the records and answers the command.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/engine.h"
#include "core/err.h"
#include "core/keyspace.h"
#include "core/resp/resp_int.h"
#include "core/resp/resp_write.h"
#include "proto/record.h"

/* Hands n encoded records to the binary; the reply follows its outcome (count < 0: +OK). */
static void submit(struct ud_resp_call *c, uint8_t **records, size_t *lens, size_t n,
                   long long count)
{
    c->ctx->submit(c, records, lens, n, count);
}

static void builder_init(struct ud_record_builder *b, enum ud_op op, enum ud_entry_type type)
{
    struct ud_record h;
    ud_engine_record_header(&h, op, type, UD_TXN_NONE, 0); /* the submit seam stamps the hlc */
    ud_record_builder_init(b, &h);
}

/* Replies the error of an encode that failed with rc (a record is at most 4 MiB). */
static void reply_encode_error(struct ud_resp_call *c, int rc)
{
    if (rc == UD_ELIMIT)
        ud_resp_add_errorf(ud_resp_reply(c),
                           "ERR write too large: one write is at most %u bytes of keys, values "
                           "and headers",
                           UD_RECORD_MAX_SIZE);
    else
        ud_resp_add_errorf(ud_resp_reply(c), "ERR encode write: %s", ud_strerror(rc));
}

/* Finishes a record; on failure replies the error and returns -1. */
static int builder_finish(struct ud_resp_call *c, struct ud_record_builder *b, uint8_t **rec,
                          size_t *len)
{
    int rc = ud_record_builder_finish(b, rec, len);
    if (rc == 0)
        return 0;
    reply_encode_error(c, rc);
    return -1;
}

/*
 * Orders the arguments first, first + step, ... by their bytes and keeps the last occurrence of
 * each (a later SET of the same key in one MSET wins, as in Redis). Writes their indexes to idx
 * and returns how many are distinct.
 */
static int cmp_arg(const void *a, const void *b, void *arg)
{
    const struct ud_resp_call *c = arg;
    size_t i = *(const size_t *)a, j = *(const size_t *)b;
    size_t n = c->argvlen[i] < c->argvlen[j] ? c->argvlen[i] : c->argvlen[j];
    int r = n ? memcmp(c->argv[i], c->argv[j], n) : 0;
    if (r == 0)
        r = c->argvlen[i] < c->argvlen[j] ? -1 : c->argvlen[i] > c->argvlen[j];
    if (r == 0)
        r = i < j ? -1 : i > j; /* stable: the last occurrence sorts last */
    return r;
}

static int same_arg(const struct ud_resp_call *c, size_t i, size_t j)
{
    return c->argvlen[i] == c->argvlen[j] && memcmp(c->argv[i], c->argv[j], c->argvlen[i]) == 0;
}

static size_t *distinct(const struct ud_resp_call *c, size_t first, size_t step, size_t *count)
{
    size_t n = (c->argc - first + step - 1) / step;
    size_t *idx = malloc((n ? n : 1) * sizeof *idx);
    if (idx == NULL)
        abort();
    for (size_t k = 0; k < n; k++)
        idx[k] = first + k * step;
    qsort_r(idx, n, sizeof *idx, cmp_arg, (void *)c);
    size_t out = 0;
    for (size_t k = 0; k < n; k++) {
        if (k + 1 < n && same_arg(c, idx[k], idx[k + 1]))
            continue; /* a later occurrence follows */
        idx[out++] = idx[k];
    }
    *count = out;
    return idx;
}

/* --- strings ---------------------------------------------------------------------------------- */

static const char *const set_options[] = {"nx", "xx", "get", "ex", "px", "exat", "pxat", "keepttl"};

/* SET key value: no options. Expiry, conditional and GET options are refused by name rather than
 * ignored. */
void ud_resp_cmd_set(struct ud_resp_call *c)
{
    if (c->argc > 3) {
        for (size_t k = 0; k < sizeof set_options / sizeof set_options[0]; k++) {
            if (ud_resp_arg_is(c, 3, set_options[k])) {
                char opt[16];
                size_t i = 0;
                for (; set_options[k][i] != '\0'; i++)
                    opt[i] = (char)(set_options[k][i] - 32);
                opt[i] = '\0';
                ud_resp_add_errorf(ud_resp_reply(c),
                                   "ERR SET option '%s' is not supported (keys do not expire and "
                                   "SET takes no options)",
                                   opt);
                return;
            }
        }
        ud_resp_add_error(ud_resp_reply(c), "ERR syntax error");
        return;
    }
    if (ud_resp_check_kv_key(c, c->argv[1], c->argvlen[1]) != 0)
        return;
    /* One buffer for the record, from the loop's spares (core/recbuf.h: sizes are rounded up to
     * a class). The key was checked above, so a failure is a write too large or out of memory,
     * and the reply names it (no errmsg needed). */
    struct ud_kv kv = {c->argv[1], c->argvlen[1], c->argv[2], c->argvlen[2]};
    uint8_t *rec;
    size_t len;
    int rc = ud_engine_encode_kv(UD_OP_PUT, &kv, 1, 0, &rec, &len, NULL);
    if (rc != 0) {
        reply_encode_error(c, rc);
        return;
    }
    submit(c, &rec, &len, 1, -1);
}

/* MSET k v [k v ...]: one record, so all keys are written atomically at one LSN. */
void ud_resp_cmd_mset(struct ud_resp_call *c)
{
    if ((c->argc - 1) % 2 != 0) {
        ud_resp_add_error(ud_resp_reply(c), "ERR wrong number of arguments for 'mset' command");
        return;
    }
    for (size_t i = 1; i < c->argc; i += 2)
        if (ud_resp_check_kv_key(c, c->argv[i], c->argvlen[i]) != 0)
            return;
    size_t n;
    size_t *idx = distinct(c, 1, 2, &n);
    struct ud_record_builder b;
    uint8_t *rec;
    size_t len;
    builder_init(&b, UD_OP_PUT, UD_ENTRY_KV);
    for (size_t k = 0; k < n; k++)
        ud_record_add_kv(&b, c->argv[idx[k]], c->argvlen[idx[k]], c->argv[idx[k] + 1],
                         c->argvlen[idx[k] + 1]);
    free(idx);
    if (builder_finish(c, &b, &rec, &len) != 0)
        return;
    submit(c, &rec, &len, 1, -1);
}

/*
 * DEL/UNLINK key [key ...]: a key may name a string, a hash (row) or both (separate spaces); both
 * are deleted, for every key named: the state read here may miss writes the cluster acknowledged
 * (a follower or relayer that forwards writes applies them later; another client's write can
 * commit in between), and a delete left out for a key not found here would leave such a write
 * in place. The reply counts the distinct keys that existed in this namespace here just before
 * the delete is sent (this connection's earlier writes are applied: reads wait for them), so it
 * can be off by the keys written elsewhere meanwhile (docs/resp.md).
 */
void ud_resp_cmd_del(struct ud_resp_call *c)
{
    if (ud_resp_check_kv_keys(c, 1) != 0)
        return;
    struct ud_ns *ns;
    if (ud_resp_acquire_ns(c, &ns) != 0)
        return;
    size_t n;
    size_t *idx = distinct(c, 1, 1, &n);
    struct ud_record_builder kb, rb;
    size_t nrow = 0;
    long long count = 0;
    int rc = 0;
    builder_init(&kb, UD_OP_DELETE, UD_ENTRY_KV);
    builder_init(&rb, UD_OP_DELETE, UD_ENTRY_ROW);
    for (size_t k = 0; k < n && rc == 0; k++) {
        int kv = 0, row = 0;
        const uint8_t *key = c->argv[idx[k]];
        size_t kl = c->argvlen[idx[k]];
        if ((rc = ud_resp_key_kinds(ns, key, kl, &kv, &row)) != 0)
            break;
        ud_record_add_kv(&kb, key, kl, NULL, 0);
        /* esc(key) 00 00 over the row limit: no row can have this key (ud_resp_check_row_key) */
        if (ud_row_prefix_len(key, kl) - 2 <= UD_MAX_ROW_KEY_ENCODED) {
            ud_record_add_row(&rb, key, kl); /* no columns: the whole row */
            nrow++;
        }
        count += kv || row;
    }
    ud_resp_release_ns(c, ns);
    free(idx);
    if (rc != 0) {
        ud_record_builder_reset(&kb);
        ud_record_builder_reset(&rb);
        ud_resp_reply_engine_error(ud_resp_reply(c), "read failed", rc);
        return;
    }
    uint8_t *recs[2];
    size_t lens[2];
    size_t nrec = 0;
    if (builder_finish(c, &kb, &recs[nrec], &lens[nrec]) != 0)
        goto fail;
    nrec++;
    if (nrow == 0)
        ud_record_builder_reset(&rb);
    else if (builder_finish(c, &rb, &recs[nrec], &lens[nrec]) != 0)
        goto fail;
    else
        nrec++;
    /* Strings and rows are different record types: two records in one request (raft commits them
     * in one entry; they are separate LSNs). */
    submit(c, recs, lens, nrec, count);
    return;
fail:
    ud_record_builder_reset(&rb);
    for (size_t k = 0; k < nrec; k++)
        free(recs[k]);
}

/* --- hashes (rows) ---------------------------------------------------------------------------- */

struct present {
    const struct ud_resp_call *c;
    const size_t *idx; /* field argument indexes, sorted by bytes */
    size_t n;
    uint8_t *found; /* found[k]: field idx[k] exists */
};

static int mark_present(void *arg, const uint8_t *name, size_t name_len, const uint8_t *value,
                        size_t value_len, uint64_t lsn)
{
    (void)value, (void)value_len, (void)lsn;
    struct present *p = arg;
    size_t lo = 0, hi = p->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        size_t i = p->idx[mid];
        size_t l = p->c->argvlen[i] < name_len ? p->c->argvlen[i] : name_len;
        int r = l ? memcmp(p->c->argv[i], name, l) : 0;
        if (r == 0)
            r = p->c->argvlen[i] < name_len ? -1 : p->c->argvlen[i] > name_len;
        if (r == 0) {
            p->found[mid] = 1;
            return 0;
        }
        if (r < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

/*
 * Reads which of the distinct fields idx[0..n) exist in the hash at argv[1]. Returns 0 and
 * found[], or -1 after replying the error. Like DEL's count, the answer reflects the state just
 * before the write is proposed.
 */
static int fields_present(struct ud_resp_call *c, const size_t *idx, size_t n, uint8_t *found)
{
    struct ud_ns *ns;
    if (ud_resp_acquire_ns(c, &ns) != 0)
        return -1;
    struct ud_col *cols = calloc(n, sizeof *cols);
    if (cols == NULL)
        abort();
    for (size_t k = 0; k < n; k++) {
        cols[k].name = c->argv[idx[k]];
        cols[k].name_len = c->argvlen[idx[k]];
    }
    struct present p = {c, idx, n, found};
    struct ud_row row = {c->argv[1], c->argvlen[1], cols, n};
    memset(found, 0, n);
    int rc = ud_ns_row_get(ns, &row, mark_present, &p);
    ud_resp_release_ns(c, ns);
    free(cols);
    if (rc != 0 && rc != UD_ENOTFOUND) {
        ud_resp_reply_engine_error(ud_resp_reply(c), "read failed", rc);
        return -1;
    }
    return 0;
}

static int check_hash_args(struct ud_resp_call *c, size_t step)
{
    if (ud_resp_check_row_key(c, c->argv[1], c->argvlen[1]) != 0)
        return -1;
    for (size_t i = 2; i < c->argc; i += step)
        if (ud_resp_check_field(c, c->argv[1], c->argvlen[1], c->argvlen[i]) != 0)
            return -1;
    return 0;
}

/* HSET key f v [f v ...] -> fields that did not exist; HMSET -> +OK. One record: the fields are
 * merged into the row atomically. */
static void hset(struct ud_resp_call *c, int count_new)
{
    if ((c->argc - 2) % 2 != 0) {
        ud_resp_add_errorf(ud_resp_reply(c), "ERR wrong number of arguments for '%s' command",
                           count_new ? "hset" : "hmset");
        return;
    }
    if (check_hash_args(c, 2) != 0)
        return;
    size_t n;
    size_t *idx = distinct(c, 2, 2, &n);
    long long count = -1;
    if (count_new) {
        uint8_t *found = malloc(n);
        if (found == NULL)
            abort();
        if (fields_present(c, idx, n, found) != 0) {
            free(found);
            free(idx);
            return;
        }
        count = 0;
        for (size_t k = 0; k < n; k++)
            count += !found[k];
        free(found);
    }
    struct ud_record_builder b;
    uint8_t *rec;
    size_t len;
    builder_init(&b, UD_OP_PUT, UD_ENTRY_ROW);
    ud_record_add_row(&b, c->argv[1], c->argvlen[1]);
    for (size_t k = 0; k < n; k++)
        ud_record_add_column(&b, c->argv[idx[k]], c->argvlen[idx[k]], c->argv[idx[k] + 1],
                             c->argvlen[idx[k] + 1]);
    free(idx);
    if (builder_finish(c, &b, &rec, &len) != 0)
        return;
    submit(c, &rec, &len, 1, count);
}

void ud_resp_cmd_hset(struct ud_resp_call *c)
{
    hset(c, 1);
}

void ud_resp_cmd_hmset(struct ud_resp_call *c)
{
    hset(c, 0);
}

/* HDEL key f [f ...] -> fields removed. Every field named is deleted, found here or not (as DEL:
 * the state read here may miss acknowledged writes); the reply counts those found here. */
void ud_resp_cmd_hdel(struct ud_resp_call *c)
{
    if (check_hash_args(c, 1) != 0)
        return;
    size_t n;
    size_t *idx = distinct(c, 2, 1, &n);
    uint8_t *found = malloc(n);
    if (found == NULL)
        abort();
    if (fields_present(c, idx, n, found) != 0)
        goto out;
    long long count = 0;
    for (size_t k = 0; k < n; k++)
        count += found[k];
    struct ud_record_builder b;
    uint8_t *rec;
    size_t len;
    builder_init(&b, UD_OP_DELETE, UD_ENTRY_ROW);
    ud_record_add_row(&b, c->argv[1], c->argvlen[1]);
    for (size_t k = 0; k < n; k++) /* at least one: a row delete naming none deletes the row */
        ud_record_add_column(&b, c->argv[idx[k]], c->argvlen[idx[k]], NULL, 0);
    if (builder_finish(c, &b, &rec, &len) == 0)
        submit(c, &rec, &len, 1, count);
out:
    free(found);
    free(idx);
}
