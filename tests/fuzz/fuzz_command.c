/* libFuzzer target for the raft command decoder (records with their keys section, namespace and
 * member commands) and for the FSM tables section of raft snapshots: arbitrary bytes are refused
 * with a documented code and a message, or accepted and then encoded back byte for byte. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "proto/command.h"
#include "raft/fsm_tables.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_command: check failed: %s (line %d)\n", #cond, __LINE__);        \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* Encodes a decoded RECORDS command again (groups, records, keys) into out. */
static size_t reencode_records(const struct ud_command *cmd, uint8_t *out, size_t cap)
{
    struct ud_command_writer w;
    struct ud_command_iter it, rit, kit;
    struct ud_command_group g;
    struct ud_command_key k;
    const uint8_t *rec;
    size_t len;
    ud_command_writer_init(&w, out, cap);
    ud_command_iter_init(&it, cmd);
    while (ud_command_next_group(&it, &g)) {
        CHECK(ud_command_writer_group(&w, g.ns) == 0);
        ud_command_group_iter_init(&rit, &g);
        while (ud_command_next_record(&rit, &rec, &len))
            CHECK(ud_command_writer_record(&w, rec, len) == 0);
    }
    ud_command_keys_iter_init(&kit, cmd);
    while (ud_command_next_key(&kit, &k))
        CHECK(ud_command_writer_key(&w, k.first_pos, k.nrecords, k.key, k.key_len, k.digest) == 0);
    CHECK(ud_command_writer_finish(&w, &len) == 0);
    return len;
}

static void fuzz_command(const uint8_t *data, size_t size)
{
    struct ud_command cmd;
    char errmsg[UD_ERRMSG_SIZE] = "";
    int rc = ud_command_decode(data, size, &cmd, errmsg);
    if (rc != 0) {
        CHECK(rc == UD_ETRUNCATED || rc == UD_EVERSION || rc == UD_ECORRUPT || rc == UD_ELIMIT);
        CHECK(errmsg[0] != '\0');
        return;
    }
    uint8_t *out = malloc(size + 8);
    CHECK(out != NULL);
    size_t len = 0;
    if (cmd.kind == UD_COMMAND_RECORDS)
        len = reencode_records(&cmd, out, size + 8);
    else if (cmd.kind == UD_COMMAND_MEMBER)
        CHECK(ud_command_encode_member(cmd.member_id, cmd.member_http, cmd.member_resp, out,
                                       size + 8, &len) == 0);
    else
        CHECK(ud_command_encode_ns(cmd.kind, cmd.ns, out, size + 8, &len) == 0);
    CHECK(len == size);
    CHECK(memcmp(out, data, size) == 0);
    free(out);
}

/* The tables section: accepted bytes decode to tables whose encoding (keys with digests) decodes
 * to the same. */
static void fuzz_tables(const uint8_t *data, size_t size, int digests)
{
    static struct ud_idem t1, t2;
    static struct ud_directory d1, d2;
    static int ready;
    if (!ready) {
        CHECK(ud_idem_init(&t1) == 0 && ud_idem_init(&t2) == 0);
        ready = 1;
    }
    char errmsg[UD_ERRMSG_SIZE] = "";
    size_t off = 0;
    int rc = ud_tables_decode(&t1, &d1, data, size, &off, digests, errmsg);
    if (rc != 0) {
        CHECK(rc == UD_ECORRUPT && errmsg[0] != '\0');
        return;
    }
    CHECK(off <= size);
    size_t cap = ud_tables_encoded_size(&t1, &d1), len = 0, len2 = 0, off2 = 0;
    uint8_t *a = malloc(cap + 1), *b = malloc(cap + 1);
    CHECK(a != NULL && b != NULL);
    ud_tables_encode(&t1, &d1, a, &len);
    CHECK(len <= cap);
    CHECK(ud_tables_decode(&t2, &d2, a, len, &off2, 1, errmsg) == 0 && off2 == len);
    ud_tables_encode(&t2, &d2, b, &len2);
    CHECK(len2 == len && memcmp(a, b, len) == 0);
    free(a);
    free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* The first byte picks the decoder, so one corpus grows for both. */
    if (size == 0)
        return 0;
    if (data[0] & 1) /* its second bit: keys with digests (snapshot version 4) or without */
        fuzz_tables(data + 1, size - 1, (data[0] & 2) != 0);
    else
        fuzz_command(data + 1, size - 1);
    return 0;
}
