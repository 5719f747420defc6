/*
 * libFuzzer target for the HTTP API's untrusted input: every JSON body parser (the first byte
 * picks one), then the results are used the way the handlers use them (every key, name and value
 * read, values re-encoded to base64 and decoded back, backup paths confined), plus the path and
 * query decoders on the same bytes.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/http/body.h"
#include "core/http/json.h"
#include "core/http/replicas.h"
#include "core/http/path.h"

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c))                                                                                  \
            abort();                                                                               \
    } while (0)

/* Reads every byte and checks that base64 round-trips the value exactly. */
static void use_bytes(const uint8_t *p, size_t n)
{
    CHECK(n == 0 || p != NULL);
    char *enc = malloc(ud_b64_encoded_len(n) + 1);
    uint8_t *dec = malloc(ud_b64_decoded_max(ud_b64_encoded_len(n)) + 1);
    size_t el = ud_b64_encode(p, n, enc), dl = 0;
    CHECK(ud_b64_decode(enc, el, dec, &dl) == 0);
    CHECK(dl == n && (n == 0 || memcmp(dec, p, n) == 0));
    free(enc);
    free(dec);
}

static void use_kv(const struct ud_kv *kv, int with_value)
{
    CHECK(kv->key_len > 0);
    use_bytes(kv->key, kv->key_len);
    if (with_value)
        use_bytes(kv->value, kv->value_len);
}

static void use_row(const struct ud_row *r, int with_values)
{
    CHECK(r->key_len > 0);
    use_bytes(r->key, r->key_len);
    for (size_t i = 0; i < r->ncols; i++) {
        CHECK(r->cols[i].name_len > 0);
        use_bytes(r->cols[i].name, r->cols[i].name_len);
        if (with_values)
            use_bytes(r->cols[i].value, r->cols[i].value_len);
    }
}

static void use_path(const char *p)
{
    char out[2048], errmsg[UD_ERRMSG_SIZE];
    if (ud_http_backup_path("/backups/default", p, "path", out, sizeof out, errmsg) == 0) {
        /* Accepted paths never climb out of the root. */
        CHECK(strncmp(out, "/backups/default/", 17) == 0);
        CHECK(strstr(out, "/../") == NULL && strstr(out, "/./") == NULL);
        CHECK(strchr(out, '%') == NULL && strchr(out, '\\') == NULL);
        size_t l = strlen(out);
        CHECK(!(l >= 3 && strcmp(out + l - 3, "/..") == 0));
    }
}

static void decoders(const uint8_t *data, size_t size)
{
    char errmsg[UD_ERRMSG_SIZE];
    uint8_t *out = malloc(size + 1);
    size_t n = 0;
    if (ud_http_pct_decode((const char *)data, size, out, &n, errmsg) == 0)
        CHECK(n <= size);
    /* The bytes as a raw path and as a query string. */
    if (size > 0 && data[0] == '/') {
        struct ud_http_params p;
        const char *pats[] = {"/api/v1/{ns}/kv/{key*}", "/api/v1/{ns}/row/{key*}/columns",
                              "/api/v1/{ns}/tx/{txn}/lob", "/api/v1"};
        for (size_t i = 0; i < sizeof pats / sizeof pats[0]; i++) {
            if (ud_http_route_match(pats[i], (const char *)data, size, &p)) {
                for (size_t k = 0; k < p.n; k++) {
                    CHECK(p.v[k].raw >= (const char *)data);
                    CHECK(p.v[k].raw + p.v[k].len <= (const char *)data + size);
                }
            }
        }
    }
    uint8_t v[600];
    uint64_t u;
    ud_http_query_get((const char *)data, size, "key", v, sizeof v, &n, errmsg);
    ud_http_query_u64((const char *)data, size, "limit", 1, 1000, &u, errmsg);
    struct ud_col cols[8];
    ud_http_columns_split(data, size, cols, 8, &n, errmsg);
    uint8_t id[16];
    ud_http_txn_id_parse((const char *)data, size, id);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    uint8_t which = data[0];
    const uint8_t *in = data + 1;
    size_t len = size - 1;
    char errmsg[UD_ERRMSG_SIZE];
    struct ud_http_body b;
    ud_http_body_init(&b);
    enum ud_op op = (which & 0x10) ? UD_OP_DELETE : UD_OP_PUT;
    switch (which % 10) {
    case 0: {
        const uint8_t *v, *v2;
        size_t vl, vl2;
        int rc = ud_http_parse_kv_put(&b, in, len, &v, &vl, errmsg);
        /* The jansson-free shape and the general parser agree on every input. */
        int rc2 = ud_http_parse_kv_put_general(&b, in, len, &v2, &vl2, errmsg);
        CHECK(rc == rc2);
        if (rc == 0) {
            CHECK(vl == vl2 && (vl == 0 || memcmp(v, v2, vl) == 0));
            use_bytes(v, vl);
        }
        break;
    }
    case 1: {
        struct ud_http_kv_batch kb;
        if (ud_http_parse_kv_batch(&b, in, len, &kb, errmsg) == 0) {
            CHECK(kb.n >= 1 && kb.n <= UD_HTTP_MAX_BATCH);
            for (size_t i = 0; i < kb.n; i++)
                use_kv(&kb.items[i], kb.op == UD_OP_PUT);
        }
        break;
    }
    case 2: {
        struct ud_col *c;
        size_t n;
        if (ud_http_parse_row_put(&b, in, len, &c, &n, errmsg) == 0) {
            struct ud_row r = {(const uint8_t *)"r", 1, c, n};
            CHECK(n >= 1);
            use_row(&r, 1);
        }
        break;
    }
    case 3: {
        struct ud_http_row_batch rb;
        if (ud_http_parse_row_batch(&b, in, len, &rb, errmsg) == 0)
            for (size_t i = 0; i < rb.n; i++)
                use_row(&rb.rows[i], rb.op == UD_OP_PUT);
        break;
    }
    case 4: {
        enum ud_entry_type t;
        enum ud_op o;
        if (ud_http_parse_txn_begin(in, len, &o, &t, errmsg) == 0)
            CHECK((o == UD_OP_PUT || o == UD_OP_DELETE || o == UD_OP_UPDATE) &&
                  (t == UD_ENTRY_KV || t == UD_ENTRY_ROW || t == UD_ENTRY_LOB));
        break;
    }
    case 5: {
        struct ud_kv kv;
        if (ud_http_parse_txn_kv(&b, in, len, op, &kv, errmsg) == 0)
            use_kv(&kv, op != UD_OP_DELETE);
        break;
    }
    case 6: {
        struct ud_row r;
        if (ud_http_parse_txn_row(&b, in, len, op, &r, errmsg) == 0)
            use_row(&r, op != UD_OP_DELETE);
        break;
    }
    case 7: {
        uint64_t after;
        const char *dir;
        if (ud_http_parse_wal_backup(&b, in, len, &after, &dir, errmsg) == 0) {
            CHECK(after <= UINT32_MAX);
            use_path(dir);
        }
        break;
    }
    case 9: {
        /* wal/ack: what the parser accepts goes to the follower tracker as the handler does. */
        const char *id, *address;
        uint64_t applied, subtree;
        if (ud_http_parse_wal_ack(&b, in, len, &id, &applied, &subtree, &address, errmsg) == 0) {
            CHECK(id != NULL);
            use_bytes((const uint8_t *)id, strlen(id));
            struct ud_replicas_options o = {0};
            struct ud_replicas *r;
            CHECK(ud_replicas_new(&o, &r) == 0);
            struct ud_replica_ack a = {id, address, applied, subtree};
            int rc = ud_replicas_ack(r, "ns", &a, UINT64_MAX / 2, 1, errmsg);
            size_t idl = strlen(id);
            if (rc == 0) {
                /* Accepted ids are what /status/replicas prints unescaped-safe: 1..128 visible
                 * ASCII characters. */
                CHECK(idl >= 1 && idl <= UD_REPLICA_ID_MAX);
                for (size_t i = 0; i < idl; i++)
                    CHECK(id[i] > 0x20 && id[i] < 0x7f);
                CHECK(ud_replicas_followers(r) == 1);
            } else {
                CHECK(rc == UD_EINVAL && ud_replicas_followers(r) == 0);
            }
            ud_replicas_free(r);
        }
        break;
    }
    default: {
        const char *p;
        if (ud_http_parse_btree_backup(&b, in, len, &p, errmsg) == 0)
            use_path(p);
        break;
    }
    }
    ud_http_body_free(&b);
    decoders(in, len);
    return 0;
}
