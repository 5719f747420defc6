/*
 * Replicated state of the writer's FSM besides the namespaces (docs/raft.md): the idempotency
 * window (recent Idempotency-Key values and the outcome of their write) and the member directory
 * (each writer's HTTP and RESP addresses). Both change only by applying raft entries, in log
 * order, so every writer holds the same tables at the same applied index; both travel in raft
 * snapshots so that a restart (or a follower installing a snapshot) rebuilds exactly them.
 *
 * Not thread-safe: used by whoever applies entries (the loop or the FSM's apply thread, never
 * both at once) and by snapshots, which run once the apply thread is idle.
 */
#ifndef UD_RAFT_FSM_TABLES_H
#define UD_RAFT_FSM_TABLES_H

#include <stddef.h>
#include <stdint.h>

#include "core/registry.h"
#include "proto/command.h"

/*
 * How many keys the window remembers: the oldest is forgotten when a new one arrives. A count,
 * not a time, so that every writer forgets the same key at the same entry; for the same reason
 * it is part of the replicated state machine (all writers of a cluster must agree on it). The
 * window must outlast a client's retries across a leader change (a failover takes about 2 s,
 * docs/benchmarks.md) at the cluster's full write rate: 131072 keyed writes are 3.7 s at 35k
 * writes/s, a minute at 2k/s. Memory: 56 bytes an entry, its namespace and key on the heap.
 */
#define UD_IDEM_WINDOW 131072

/* The outcome of a write, remembered under its key. */
struct ud_idem_entry {
    uint8_t *name;      /* ns_len bytes of namespace, then key_len bytes of key (malloc'd) */
    uint64_t first_lsn; /* LSN of its first record; 0 when unknown (replayed after a restart) */
    uint32_t nrecords;
    int32_t status; /* 0 or the rejection (UD_E*) of its first rejected record */
    /* What identifies the request that carried the key (its command's digest): a retry must be
     * the same request. All zero when unknown (a key from before digests existed). */
    uint8_t digest[UD_COMMAND_DIGEST_SIZE];
    uint32_t hash;
    int32_t next; /* hash chain, -1 at the end */
    uint8_t ns_len, key_len;
};

struct ud_idem {
    struct ud_idem_entry *ring; /* UD_IDEM_WINDOW entries, oldest at head */
    uint32_t head, count;
    size_t name_bytes; /* sum of ns_len + key_len over the window: its snapshot size */
    int32_t *buckets;  /* UD_IDEM_WINDOW * 2 chains of ring indexes */
};

/* Returns 0 or UD_ENOMEM. */
int ud_idem_init(struct ud_idem *t);
void ud_idem_free(struct ud_idem *t);
void ud_idem_clear(struct ud_idem *t);

/* The entry of (ns, key), or NULL. Borrowed until the next insert. */
const struct ud_idem_entry *ud_idem_find(const struct ud_idem *t, const char *ns,
                                         const uint8_t *key, size_t key_len);
/* Remembers a key (which must not be present), forgetting the oldest when the window is full.
 * digest: UD_COMMAND_DIGEST_SIZE bytes, or NULL when unknown. */
void ud_idem_insert(struct ud_idem *t, const char *ns, const uint8_t *key, size_t key_len,
                    const uint8_t *digest, uint64_t first_lsn, uint32_t nrecords, int32_t status);
/* 1 when a request of this digest (NULL: unknown) may take the answer remembered in e: the same
 * digest, or either one unknown (a key from before digests existed, which is not refused). */
int ud_idem_same_request(const struct ud_idem_entry *e, const uint8_t *digest);

/* A writer's addresses as announced by a MEMBER command. */
#define UD_DIRECTORY_MAX 16
struct ud_directory_entry {
    uint64_t id;
    char http[UD_COMMAND_MEMBER_HTTP_MAX + 1];
    char resp[UD_COMMAND_MEMBER_RESP_MAX + 1];
};
struct ud_directory {
    struct ud_directory_entry e[UD_DIRECTORY_MAX];
    unsigned n;
};

/* Sets id's addresses (replacing older ones). When the directory is full, the entry set longest
 * ago is replaced: a cluster has at most a few members, so that one is long gone. */
void ud_directory_set(struct ud_directory *d, uint64_t id, const char *http, const char *resp);
const struct ud_directory_entry *ud_directory_get(const struct ud_directory *d, uint64_t id);

/*
 * Snapshot section of both tables (docs/raft.md "Snapshots"), appended to buf at *len (buf has
 * room for ud_tables_encoded_size bytes more). Decoding validates everything before it replaces
 * the tables: 0, or UD_ECORRUPT with errmsg naming the byte offset (tables unchanged). A table
 * passed as NULL is not loaded: both NULL only validates and advances *off. Encoding writes keys
 * with their digests; digests says whether the bytes being decoded have them (snapshot metadata
 * version 4 on; earlier versions' keys decode with the digest unknown).
 */
size_t ud_tables_encoded_size(const struct ud_idem *t, const struct ud_directory *d);
void ud_tables_encode(const struct ud_idem *t, const struct ud_directory *d, uint8_t *buf,
                      size_t *len);
int ud_tables_decode(struct ud_idem *t, struct ud_directory *d, const uint8_t *buf, size_t len,
                     size_t *off, int digests, char *errmsg);

#endif
