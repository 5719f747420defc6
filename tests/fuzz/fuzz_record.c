/* libFuzzer target for the log record decoder: arbitrary bytes are either refused with a
 * documented code and a message, or accepted and then re-encoded byte for byte by the builder. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "proto/record.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_record: check failed: %s (line %d)\n", #cond, __LINE__);         \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static void check_refusal(int rv, const char *errmsg, size_t size)
{
    CHECK(rv == UD_ETRUNCATED || rv == UD_EVERSION || rv == UD_ECORRUPT || rv == UD_ELIMIT);
    CHECK(errmsg[0] != '\0');
    CHECK(memchr(errmsg, '\0', UD_ERRMSG_SIZE) != NULL);
    if (rv == UD_ELIMIT)
        CHECK(size > UD_RECORD_MAX_SIZE);
}

/* Rebuilds the accepted record from its decoded view and compares with the input. */
static void check_reencoding(const uint8_t *data, size_t size, const struct ud_record *rec)
{
    struct ud_record_builder b;
    ud_record_builder_init(&b, rec);

    struct ud_entry_iter it;
    struct ud_entry e;
    uint32_t entries = 0;
    ud_entry_iter_init(&it, rec);
    while (ud_entry_iter_next(&it, &e)) {
        /* Views stay inside the input. */
        CHECK(e.key >= data && e.key + e.key_len <= data + size);
        CHECK(e.value >= data && e.value + e.value_len <= data + size);
        CHECK(e.key_len > 0);
        if (rec->entry_type == UD_ENTRY_ROW) {
            CHECK(e.value_len == 0);
            CHECK(ud_record_add_row(&b, e.key, e.key_len) == 0);
            struct ud_column_iter cit;
            struct ud_column c;
            uint32_t columns = 0;
            ud_column_iter_init(&cit, &e);
            while (ud_column_iter_next(&cit, &c)) {
                CHECK(c.name >= data && c.value + c.value_len <= data + size);
                CHECK(ud_record_add_column(&b, c.name, c.name_len, c.value, c.value_len) == 0);
                columns++;
            }
            CHECK(columns == e.column_count);
        } else {
            CHECK(e.column_count == 0 && e.columns_len == 0);
            CHECK(ud_record_add_kv(&b, e.key, e.key_len, e.value, e.value_len) == 0);
        }
        entries++;
    }
    CHECK(entries == rec->entry_count);

    uint8_t *out = NULL;
    size_t out_len = 0;
    CHECK(ud_record_builder_finish(&b, &out, &out_len) == 0);
    CHECK(out_len == size);
    CHECK(memcmp(out, data, size) == 0);
    free(out);
}

/* Decodes an exactly sized copy, so that a read past `len` is caught by ASan even when the
 * bytes come from a larger buffer. */
static int decode_copy(const uint8_t *buf, size_t len, struct ud_record *rec, char *errmsg)
{
    uint8_t *copy = malloc(len > 0 ? len : 1);
    CHECK(copy != NULL);
    if (len > 0)
        memcpy(copy, buf, len);
    int rv = ud_record_decode(copy, len, rec, errmsg);
    if (rv == 0)
        check_reencoding(copy, len, rec);
    free(copy);
    return rv;
}

/*
 * Second use of each input: as a recipe for a well-formed record. Raw bytes rarely get past the
 * header rules to rows with columns; recipes reach every shape at once, and the damaged copies
 * made from them below exercise the decoder's refusals inside valid-looking entries.
 */
struct recipe {
    const uint8_t *p;
    const uint8_t *end;
};

#define RECIPE_MAX_COLUMNS 4

struct recipe_entry {
    const uint8_t *key, *value;
    size_t key_len, value_len;
    size_t ncols;
    const uint8_t *name[RECIPE_MAX_COLUMNS], *cvalue[RECIPE_MAX_COLUMNS];
    size_t name_len[RECIPE_MAX_COLUMNS], cvalue_len[RECIPE_MAX_COLUMNS];
};

/* Past the end a recipe reads zeros, so every input is a complete recipe. */
static uint8_t take(struct recipe *r)
{
    return r->p < r->end ? *r->p++ : 0;
}

/* Takes n bytes, or fewer when the recipe runs out. */
static const uint8_t *take_bytes(struct recipe *r, size_t *n)
{
    size_t left = (size_t)(r->end - r->p);
    if (*n > left)
        *n = left;
    const uint8_t *p = r->p;
    r->p += *n;
    return p;
}

/* Reads the next entry; 0 when the recipe has no room for another key. */
static int recipe_next(struct recipe *r, uint8_t entry_type, int delete, struct recipe_entry *e)
{
    if (r->p >= r->end)
        return 0;
    e->key_len = 1 + take(r) % 8u;
    e->key = take_bytes(r, &e->key_len);
    if (e->key_len == 0)
        return 0;
    e->value_len = entry_type == UD_ENTRY_ROW || delete ? 0 : take(r) % 32u;
    e->value = take_bytes(r, &e->value_len);
    e->ncols = 0;
    if (entry_type != UD_ENTRY_ROW)
        return 1;
    size_t want = take(r) % (RECIPE_MAX_COLUMNS + 1u);
    for (size_t j = 0; j < want; j++) {
        size_t nl = 1 + take(r) % 4u;
        const uint8_t *name = take_bytes(r, &nl);
        if (nl == 0)
            break;
        size_t vl = delete ? 0 : take(r) % 16u;
        e->cvalue[e->ncols] = take_bytes(r, &vl);
        e->cvalue_len[e->ncols] = vl;
        e->name[e->ncols] = name;
        e->name_len[e->ncols] = nl;
        e->ncols++;
    }
    return 1;
}

static void run_recipe(const uint8_t *data, size_t size)
{
    struct recipe r = {data, data + size};
    struct ud_record h;
    memset(&h, 0, sizeof h);
    h.op = (uint8_t)(1 + take(&r) % 3u);
    h.entry_type = (uint8_t)(1 + take(&r) % 3u);
    h.txn_state = (uint8_t)(take(&r) % 5u);
    if (h.op == UD_OP_UPDATE && h.txn_state == UD_TXN_NONE)
        h.op = UD_OP_PUT;
    uint8_t id = take(&r);
    if (h.txn_state != UD_TXN_NONE)
        for (int i = 0; i < UD_TXN_ID_SIZE; i++)
            h.txn_id[i] = (uint8_t)(id + i);
    uint8_t begin = take(&r);
    if (h.txn_state >= UD_TXN_PREPARE)
        h.txn_begin_lsn = begin;
    uint8_t chunk = take(&r);
    const int has_entries = h.txn_state == UD_TXN_NONE || h.txn_state == UD_TXN_PREPARE;
    if (h.entry_type == UD_ENTRY_LOB && has_entries)
        h.lob_offset = (uint64_t)chunk << 20;
    h.lsn = take(&r);
    h.hlc = (uint64_t)take(&r) << 40;
    h.raft_index = take(&r);
    h.raft_pos = take(&r);
    size_t cut_at = take(&r);
    cut_at = cut_at << 8 | take(&r);
    size_t flip_at = take(&r);
    flip_at = flip_at << 8 | take(&r);
    uint8_t flip_mask = take(&r) | 1u;

    const struct recipe entries_start = r;
    const int delete = h.op == UD_OP_DELETE;
    size_t max_entries = !has_entries ? 0 : h.entry_type == UD_ENTRY_LOB ? 1 : 64;
    struct ud_record_builder b;
    ud_record_builder_init(&b, &h);
    struct recipe_entry e;
    uint32_t n = 0;
    while (n < max_entries && recipe_next(&r, h.entry_type, delete, &e)) {
        if (h.entry_type == UD_ENTRY_ROW) {
            CHECK(ud_record_add_row(&b, e.key, e.key_len) == 0);
            for (size_t j = 0; j < e.ncols; j++)
                CHECK(ud_record_add_column(&b, e.name[j], e.name_len[j], e.cvalue[j],
                                           e.cvalue_len[j]) == 0);
        } else {
            CHECK(ud_record_add_kv(&b, e.key, e.key_len, e.value, e.value_len) == 0);
        }
        n++;
    }
    uint8_t *out = NULL;
    size_t len = 0;
    int rv = ud_record_builder_finish(&b, &out, &len);
    if (has_entries && n == 0) {
        CHECK(rv == UD_EINVAL && out == NULL);
        return;
    }
    CHECK(rv == 0);
    /* The builder's buffer may be larger than the record: keep an exact copy for ASan. */
    uint8_t *exact = malloc(len);
    CHECK(exact != NULL);
    memcpy(exact, out, len);
    free(out);
    out = exact;

    /* What was built decodes to what the recipe said. */
    struct ud_record rec;
    char errmsg[UD_ERRMSG_SIZE] = "";
    CHECK(ud_record_decode(out, len, &rec, errmsg) == 0);
    check_reencoding(out, len, &rec);
    CHECK(rec.op == h.op && rec.entry_type == h.entry_type && rec.txn_state == h.txn_state);
    CHECK(rec.entry_count == n && rec.lsn == h.lsn && rec.hlc == h.hlc);
    CHECK(rec.raft_index == h.raft_index && rec.raft_pos == h.raft_pos);
    CHECK(memcmp(rec.txn_id, h.txn_id, UD_TXN_ID_SIZE) == 0);
    CHECK(rec.txn_begin_lsn == h.txn_begin_lsn && rec.lob_offset == h.lob_offset);
    struct recipe again = entries_start;
    struct ud_entry_iter it;
    struct ud_entry de;
    ud_entry_iter_init(&it, &rec);
    for (uint32_t i = 0; i < n; i++) {
        CHECK(recipe_next(&again, h.entry_type, delete, &e));
        CHECK(ud_entry_iter_next(&it, &de));
        CHECK(de.key_len == e.key_len && memcmp(de.key, e.key, e.key_len) == 0);
        CHECK(de.value_len == e.value_len && memcmp(de.value, e.value, e.value_len) == 0);
        CHECK(de.column_count == e.ncols);
        struct ud_column_iter cit;
        struct ud_column c;
        ud_column_iter_init(&cit, &de);
        for (size_t j = 0; j < e.ncols; j++) {
            CHECK(ud_column_iter_next(&cit, &c));
            CHECK(c.name_len == e.name_len[j] && memcmp(c.name, e.name[j], c.name_len) == 0);
            CHECK(c.value_len == e.cvalue_len[j] && memcmp(c.value, e.cvalue[j], c.value_len) == 0);
        }
        CHECK(!ud_column_iter_next(&cit, &c));
    }
    CHECK(!ud_entry_iter_next(&it, &de));

    /* Every proper prefix is refused; a flipped byte is refused or still round-trips. */
    rv = decode_copy(out, cut_at % len, &rec, errmsg);
    CHECK(rv == UD_ETRUNCATED || rv == UD_ECORRUPT);
    out[flip_at % len] ^= flip_mask;
    errmsg[0] = '\0';
    rv = decode_copy(out, len, &rec, errmsg);
    if (rv != 0)
        check_refusal(rv, errmsg, len);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct ud_record rec;
    char errmsg[UD_ERRMSG_SIZE] = "";
    int rv = ud_record_decode(data, size, &rec, errmsg);
    if (rv != 0) {
        check_refusal(rv, errmsg, size);
    } else {
        CHECK(rec.version == UD_RECORD_VERSION);
        CHECK(size >= UD_RECORD_HEADER_SIZE);
        CHECK(rec.entries == data + UD_RECORD_HEADER_SIZE);
        CHECK(rec.entries_len == size - UD_RECORD_HEADER_SIZE);
        CHECK(ud_record_get_lsn(data) == rec.lsn);
        check_reencoding(data, size, &rec);
    }
    run_recipe(data, size);
    return 0;
}
