/*
 * Raft command: the payload of one raft log entry of the writer cluster (docs/format-command.md).
 *
 * One entry carries either a batch of log records grouped by namespace (group commit gathers the
 * requests of one loop iteration into it) or one namespace creation/deletion. All integers are
 * little-endian.
 *
 *   off size field
 *   0   1    version    UD_COMMAND_VERSION
 *   1   1    kind       enum ud_command_kind
 *   2   2    flags      RECORDS: 0, UD_COMMAND_FLAG_KEYS, or that | UD_COMMAND_FLAG_DIGESTS,
 *                          each optionally | UD_COMMAND_FLAG_CONDITIONS; other kinds: 0
 *   4   4    count      RECORDS: number of groups (>= 1); other kinds: 1
 *   8   ...  body
 *
 *   RECORDS body:            group{count} [keys, with UD_COMMAND_FLAG_KEYS]
 *                            [conditions, with UD_COMMAND_FLAG_CONDITIONS]
 *     group:                 u8 name_len | name | u32 record_count (>= 1) | record{record_count}
 *     record:                u32 len | len bytes encoded with proto/record.h
 *     keys:                  u32 key_count (>= 1) | key{key_count}
 *     key:                   u32 first_pos | u32 record_count (>= 1) | u8 key_len | key bytes
 *                            [| digest, UD_COMMAND_DIGEST_SIZE bytes, with
 *                            UD_COMMAND_FLAG_DIGESTS]
 *                            (idempotency keys of requests: their records are first_pos ..
 *                            first_pos + record_count - 1 of the command, in one group; ranges
 *                            ascending and disjoint; the digest identifies the request that
 *                            carried the key, all zero when unknown)
 *     conditions:            u32 cond_count (>= 1) | cond{cond_count}
 *     cond:                  u32 pos | u8 kind | u64 lsn
 *                            (a record's precondition, judged by the FSM when it applies the
 *                            record: pos < the command's records, ascending, one per record;
 *                            kind UD_COMMAND_COND_LSN: the key's current version has LSN lsn,
 *                            0 = the key is absent; UD_COMMAND_COND_EXISTS: the key exists, lsn 0)
 *   NS_CREATE/NS_DELETE body: u8 name_len | name
 *   MEMBER body:             u64 id | u8 http_len | http URL | u8 resp_len | resp host:port
 *
 * Names match [A-Za-z0-9_-]{1,64}. Records carry LSN 0 and raft position 0/0: the FSM assigns
 * them while applying (ARCHITECTURE.md sections 5 and 6).
 *
 * The body is followed by 0 to 7 zero bytes so that the command's length is a multiple of 8:
 * raft 0.15 requires entry lengths to be (an assert compiled out of Debian's build); after an
 * unaligned entry its loader misreads the closed segment at the next start (format-command.md).
 */
#ifndef UD_PROTO_COMMAND_H
#define UD_PROTO_COMMAND_H

#include <stddef.h>
#include <stdint.h>

#define UD_COMMAND_VERSION     1
#define UD_COMMAND_HEADER_SIZE 8
#define UD_COMMAND_NAME_MAX    64
/* Largest command accepted by the decoder and the writer. Group commit keeps entries far smaller
 * (commit_max_bytes); this bounds what one oversized request may take. It stays below raft_uv's
 * 8 MiB segment size (one entry is written into one segment) and above the largest record
 * (UD_RECORD_MAX_SIZE, 4 MiB) with its framing. */
#define UD_COMMAND_MAX_SIZE (6u << 20)
/* Bytes a record adds to a command besides its own: its u32 length. */
#define UD_COMMAND_RECORD_OVERHEAD 4
/* Length of a command whose header and body take n bytes: padded to a multiple of 8. */
#define UD_COMMAND_ALIGN(n) (((size_t)(n) + 7) & ~(size_t)7)

enum ud_command_kind {
    UD_COMMAND_RECORDS = 1,
    UD_COMMAND_NS_CREATE = 2,
    UD_COMMAND_NS_DELETE = 3,
    UD_COMMAND_MEMBER = 4, /* a writer's HTTP and RESP addresses, for forwarding and status */
};

/* RECORDS flag: a keys section follows the groups. */
#define UD_COMMAND_FLAG_KEYS 1u
/* RECORDS flag, only with UD_COMMAND_FLAG_KEYS: every key carries the digest of its request
 * (docs/raft.md "Idempotency"). Commands written before digests existed have keys without. */
#define UD_COMMAND_FLAG_DIGESTS 2u
/* RECORDS flag: a conditions section follows the groups (and the keys section, if any): records
 * applied only when their key's current version matches (docs/format-command.md "Conditions"). */
#define UD_COMMAND_FLAG_CONDITIONS 4u
/* Kinds of a condition. */
#define UD_COMMAND_COND_LSN    1 /* the key's current version has LSN lsn (0: the key is absent) */
#define UD_COMMAND_COND_EXISTS 2 /* the key exists (lsn 0) */

/* 1 when (kind, lsn) is a condition this format knows. */
static inline int ud_command_cond_valid(uint8_t kind, uint64_t lsn)
{
    return kind == UD_COMMAND_COND_LSN || (kind == UD_COMMAND_COND_EXISTS && lsn == 0);
}

/* Judges a condition of `kind` (and `lsn` for UD_COMMAND_COND_LSN) against the key's current LSN
 * (0: absent): 0 when it holds, else UD_EPRECONDITION with the HTTP API's 412 message in errmsg
 * (docs/http-api.md "Conditional writes"). */
int ud_command_cond_check(uint8_t kind, uint64_t lsn, uint64_t cur, char *errmsg);
/* Bytes of one condition, and what the conditions section adds once. */
#define UD_COMMAND_COND_SIZE      13
#define UD_COMMAND_CONDS_OVERHEAD 4
/* Bytes of a request digest. */
#define UD_COMMAND_DIGEST_SIZE 16
/* Longest idempotency key. */
#define UD_COMMAND_KEY_MAX 128
/* Longest addresses of a MEMBER command. */
#define UD_COMMAND_MEMBER_HTTP_MAX 159
#define UD_COMMAND_MEMBER_RESP_MAX 127

/* A decoded command: body is a view into the buffer given to ud_command_decode. */
struct ud_command {
    uint8_t version;
    uint8_t kind;
    uint32_t count;                   /* groups (RECORDS) or 1 */
    uint32_t nrecords;                /* RECORDS: records of all groups */
    char ns[UD_COMMAND_NAME_MAX + 1]; /* NS_CREATE/NS_DELETE: the namespace */
    const uint8_t *body;
    size_t body_len; /* RECORDS: the groups */
    uint32_t nkeys;  /* RECORDS with UD_COMMAND_FLAG_KEYS: idempotency keys, else 0 */
    int key_digests; /* the keys carry digests (UD_COMMAND_FLAG_DIGESTS) */
    const uint8_t *keys;
    size_t keys_len;
    uint32_t nconds; /* RECORDS with UD_COMMAND_FLAG_CONDITIONS: conditions, else 0 */
    const uint8_t *conds;
    size_t conds_len;
    uint64_t member_id; /* MEMBER */
    char member_http[UD_COMMAND_MEMBER_HTTP_MAX + 1];
    char member_resp[UD_COMMAND_MEMBER_RESP_MAX + 1];
};

/*
 * Decodes and fully validates buf[0..len): header, every group and name, and every record with
 * ud_record_decode (which must carry LSN 0 and raft position 0/0). Returns 0 and fills *cmd (views
 * into buf, borrowed while buf lives), or:
 *   UD_ETRUNCATED  the buffer ends inside the header, a group, a length or a record;
 *   UD_EVERSION    unknown version byte;
 *   UD_ECORRUPT    unknown kind, non-zero flags, a bad count, an invalid name, an empty group,
 *                  a key or condition section that is malformed (a position outside the
 *                  records or out of order, an unknown condition kind, ...),
 *                  a record the record decoder rejects or that carries an LSN or raft position,
 *                  a length that is not a multiple of 8, padding that is not zero or longer than
 *                  7 bytes;
 *   UD_ELIMIT      len > UD_COMMAND_MAX_SIZE.
 * errmsg (UD_ERRMSG_SIZE, may be NULL) names the field and byte offset at fault.
 */
int ud_command_decode(const uint8_t *buf, size_t len, struct ud_command *cmd, char *errmsg);

/* Iteration over a decoded RECORDS command (cannot fail after ud_command_decode accepted it). */
struct ud_command_group {
    char ns[UD_COMMAND_NAME_MAX + 1];
    uint32_t nrecords;
    const uint8_t *records; /* first record's length field */
    size_t len;             /* bytes of all records of the group */
};

struct ud_command_iter {
    const uint8_t *p;
    const uint8_t *end;
    int digests; /* keys: each carries a digest */
};
void ud_command_iter_init(struct ud_command_iter *it, const struct ud_command *cmd);
/* Returns 1 and fills *g with the next group, 0 at the end. */
int ud_command_next_group(struct ud_command_iter *it, struct ud_command_group *g);

void ud_command_group_iter_init(struct ud_command_iter *it, const struct ud_command_group *g);
/* Returns 1 with *rec and *len viewing the next record of the group, 0 at the end. */
int ud_command_next_record(struct ud_command_iter *it, const uint8_t **rec, size_t *len);

/* Iteration over the idempotency keys of a decoded RECORDS command (ascending first_pos). */
struct ud_command_key {
    uint32_t first_pos;
    uint32_t nrecords;
    const uint8_t *key; /* view into the command */
    size_t key_len;
    const uint8_t *digest; /* UD_COMMAND_DIGEST_SIZE bytes (view), NULL in a command without */
};
void ud_command_keys_iter_init(struct ud_command_iter *it, const struct ud_command *cmd);
int ud_command_next_key(struct ud_command_iter *it, struct ud_command_key *k);

/* Iteration over the conditions of a decoded RECORDS command (ascending pos). */
struct ud_command_cond {
    uint32_t pos; /* the record's position in the command */
    uint8_t kind; /* UD_COMMAND_COND_LSN or UD_COMMAND_COND_EXISTS */
    uint64_t lsn;
};
void ud_command_conds_iter_init(struct ud_command_iter *it, const struct ud_command *cmd);
int ud_command_next_cond(struct ud_command_iter *it, struct ud_command_cond *c);

/*
 * Writer: encodes a RECORDS command into a caller-provided buffer (so the buffer can come from the
 * raft allocator). Size it with UD_COMMAND_ALIGN(UD_COMMAND_HEADER_SIZE + ud_command_group_size()
 * per group + UD_COMMAND_RECORD_OVERHEAD + len per record); finish adds the zero padding.
 *   ud_command_writer_init(&w, buf, cap);
 *   ud_command_writer_group(&w, "ns1");  ud_command_writer_record(&w, rec, len); ...
 *   ud_command_writer_finish(&w, &len);
 * Errors are sticky and returned by every later call: UD_ELIMIT (cap or UD_COMMAND_MAX_SIZE
 * exceeded), UD_EINVAL (invalid name, a record before any group or shorter than a record header,
 * an empty group, no group at all).
 */
struct ud_command_writer {
    uint8_t *buf; /* borrowed */
    size_t cap;
    size_t len;
    size_t group_count_at; /* offset of the open group's record_count, 0 when none */
    uint32_t ngroups;
    uint32_t group_records;
    uint32_t records; /* written so far (positions) */
    size_t keys_at;   /* offset of key_count, 0 before the first key */
    uint32_t nkeys;
    uint32_t key_next; /* first position the next key may start at */
    int key_digests;   /* the keys written so far carry digests */
    size_t conds_at;   /* offset of cond_count, 0 before the first condition */
    uint32_t nconds;
    uint32_t cond_next; /* first position the next condition may name */
    int err;
};

size_t ud_command_group_size(const char *ns);
void ud_command_writer_init(struct ud_command_writer *w, uint8_t *buf, size_t cap);
int ud_command_writer_group(struct ud_command_writer *w, const char *ns);
int ud_command_writer_record(struct ud_command_writer *w, const uint8_t *rec, size_t len);
/* Bytes the keys section adds: UD_COMMAND_KEYS_OVERHEAD once, ud_command_key_size per key
 * (with its digest). */
#define UD_COMMAND_KEYS_OVERHEAD 4
size_t ud_command_key_size(size_t key_len);
/* After every group and record: the idempotency key of records first_pos .. first_pos + n - 1
 * (key_len 1..UD_COMMAND_KEY_MAX; ascending, disjoint ranges inside one group) and the digest of
 * its request (UD_COMMAND_DIGEST_SIZE bytes). digest NULL writes keys without digests, as
 * commands were before them (for tests that re-encode such a command); all keys of a command
 * must agree, else UD_EINVAL. */
int ud_command_writer_key(struct ud_command_writer *w, uint32_t first_pos, uint32_t n,
                          const void *key, size_t key_len, const uint8_t *digest);
/* After every group, record and key: the condition of record pos (ascending, one per record,
 * kind UD_COMMAND_COND_LSN, or UD_COMMAND_COND_EXISTS with lsn 0), else UD_EINVAL. Each adds
 * UD_COMMAND_COND_SIZE bytes, the first UD_COMMAND_CONDS_OVERHEAD more. */
int ud_command_writer_cond(struct ud_command_writer *w, uint32_t pos, uint8_t kind, uint64_t lsn);
int ud_command_writer_finish(struct ud_command_writer *w, size_t *len);

/* Size (padded) and encoding of an NS_CREATE/NS_DELETE command. Returns 0, UD_EINVAL (bad kind or
 * name), UD_ELIMIT (cap too small). */
size_t ud_command_ns_size(const char *ns);
int ud_command_encode_ns(enum ud_command_kind kind, const char *ns, uint8_t *buf, size_t cap,
                         size_t *len);

/* Size (padded) and encoding of a MEMBER command. Returns 0, UD_EINVAL (id 0, an address too
 * long), UD_ELIMIT (cap too small). */
size_t ud_command_member_size(const char *http, const char *resp);
int ud_command_encode_member(uint64_t id, const char *http, const char *resp, uint8_t *buf,
                             size_t cap, size_t *len);

/* 1 when name matches [A-Za-z0-9_-]{1,64}. */
int ud_command_name_valid(const char *name, size_t len);

const char *ud_command_kind_name(int kind);

#endif
