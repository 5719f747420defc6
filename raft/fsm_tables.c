/* The FSM's idempotency window and member directory, and their snapshot encoding. */
#include "raft/fsm_tables.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/endian.h"
#include "core/err.h"

#define NBUCKETS (UD_IDEM_WINDOW * 2)

static uint32_t key_hash(const char *ns, const uint8_t *key, size_t len)
{
    uint32_t h = 2166136261u;
    for (const char *p = ns; *p != '\0'; p++)
        h = (h ^ (uint8_t)*p) * 16777619u;
    h = (h ^ 0xFFu) * 16777619u;
    for (size_t i = 0; i < len; i++)
        h = (h ^ key[i]) * 16777619u;
    return h;
}

int ud_idem_init(struct ud_idem *t)
{
    memset(t, 0, sizeof *t);
    t->ring = calloc(UD_IDEM_WINDOW, sizeof *t->ring);
    t->buckets = malloc(NBUCKETS * sizeof *t->buckets);
    if (t->ring == NULL || t->buckets == NULL) {
        ud_idem_free(t);
        return UD_ENOMEM;
    }
    ud_idem_clear(t);
    return 0;
}

/* Frees the names of the window's entries and empties it (buckets untouched). */
static void drop_entries(struct ud_idem *t)
{
    for (uint32_t i = 0; i < t->count; i++) {
        struct ud_idem_entry *e = &t->ring[(t->head + i) % UD_IDEM_WINDOW];
        free(e->name);
        e->name = NULL;
    }
    t->head = t->count = 0;
    t->name_bytes = 0;
}

void ud_idem_free(struct ud_idem *t)
{
    if (t->ring != NULL)
        drop_entries(t);
    free(t->ring);
    free(t->buckets);
    t->ring = NULL;
    t->buckets = NULL;
}

void ud_idem_clear(struct ud_idem *t)
{
    drop_entries(t);
    for (size_t i = 0; i < NBUCKETS; i++)
        t->buckets[i] = -1;
}

const struct ud_idem_entry *ud_idem_find(const struct ud_idem *t, const char *ns,
                                         const uint8_t *key, size_t key_len)
{
    if (t->count == 0)
        return NULL;
    size_t ns_len = strlen(ns);
    uint32_t h = key_hash(ns, key, key_len);
    for (int32_t i = t->buckets[h % NBUCKETS]; i >= 0; i = t->ring[i].next) {
        const struct ud_idem_entry *e = &t->ring[i];
        if (e->hash == h && e->key_len == key_len && e->ns_len == ns_len &&
            memcmp(e->name + ns_len, key, key_len) == 0 && memcmp(e->name, ns, ns_len) == 0)
            return e;
    }
    return NULL;
}

/* Unlinks ring slot i from its hash chain and drops its name. */
static void forget_slot(struct ud_idem *t, int32_t i)
{
    struct ud_idem_entry *e = &t->ring[i];
    int32_t *p = &t->buckets[e->hash % NBUCKETS];
    while (*p >= 0 && *p != i)
        p = &t->ring[*p].next;
    if (*p == i)
        *p = e->next;
    t->name_bytes -= (size_t)e->ns_len + e->key_len;
    free(e->name);
    e->name = NULL;
}

int ud_idem_same_request(const struct ud_idem_entry *e, const uint8_t *digest)
{
    static const uint8_t unknown[UD_COMMAND_DIGEST_SIZE];
    return digest == NULL || memcmp(digest, unknown, sizeof unknown) == 0 ||
           memcmp(e->digest, unknown, sizeof unknown) == 0 ||
           memcmp(e->digest, digest, sizeof e->digest) == 0;
}

void ud_idem_insert(struct ud_idem *t, const char *ns, const uint8_t *key, size_t key_len,
                    const uint8_t *digest, uint64_t first_lsn, uint32_t nrecords, int32_t status)
{
    size_t ns_len = strlen(ns);
    if (key_len == 0 || key_len > UD_COMMAND_KEY_MAX || ns_len > UD_NS_NAME_MAX)
        return;
    /* Every writer must remember the same keys: no allocation failure may make one skip a key. */
    uint8_t *name = malloc(ns_len + key_len);
    if (name == NULL)
        abort();
    memcpy(name, ns, ns_len);
    memcpy(name + ns_len, key, key_len);
    int32_t slot;
    if (t->count == UD_IDEM_WINDOW) {
        slot = (int32_t)t->head; /* forget the oldest */
        forget_slot(t, slot);
        t->head = (t->head + 1) % UD_IDEM_WINDOW;
    } else {
        slot = (int32_t)((t->head + t->count) % UD_IDEM_WINDOW);
        t->count++;
    }
    struct ud_idem_entry *e = &t->ring[slot];
    *e = (struct ud_idem_entry){.name = name,
                                .first_lsn = first_lsn,
                                .nrecords = nrecords,
                                .status = status,
                                .hash = key_hash(ns, key, key_len),
                                .ns_len = (uint8_t)ns_len,
                                .key_len = (uint8_t)key_len};
    if (digest != NULL)
        memcpy(e->digest, digest, sizeof e->digest);
    e->next = t->buckets[e->hash % NBUCKETS];
    t->buckets[e->hash % NBUCKETS] = slot;
    t->name_bytes += ns_len + key_len;
}

void ud_directory_set(struct ud_directory *d, uint64_t id, const char *http, const char *resp)
{
    unsigned i = 0;
    while (i < d->n && d->e[i].id != id)
        i++;
    if (i == d->n) {
        if (d->n == UD_DIRECTORY_MAX) {
            memmove(&d->e[0], &d->e[1], (UD_DIRECTORY_MAX - 1) * sizeof d->e[0]);
            i = UD_DIRECTORY_MAX - 1;
        } else {
            d->n++;
        }
    } else {
        /* Most recently set last, so a full directory replaces the stalest entry. */
        memmove(&d->e[i], &d->e[i + 1], (d->n - 1 - i) * sizeof d->e[0]);
        i = d->n - 1;
    }
    d->e[i].id = id;
    snprintf(d->e[i].http, sizeof d->e[i].http, "%s", http);
    snprintf(d->e[i].resp, sizeof d->e[i].resp, "%s", resp);
}

const struct ud_directory_entry *ud_directory_get(const struct ud_directory *d, uint64_t id)
{
    for (unsigned i = 0; i < d->n; i++)
        if (d->e[i].id == id)
            return &d->e[i];
    return NULL;
}

/* --- snapshot section -------------------------------------------------------------------------
 *   u32 member_count | member{member_count}   member: u64 id | u8 len | http | u8 len | resp
 *   u32 key_count | key{key_count}            key: u8 ns_len | ns | u8 key_len | key |
 *                                                  u64 first_lsn | u32 nrecords | i32 status |
 *                                                  digest (16 bytes; not in snapshot
 *                                                  metadata before version 4)
 * Keys oldest first, so decoding rebuilds the same window order.
 */

size_t ud_tables_encoded_size(const struct ud_idem *t, const struct ud_directory *d)
{
    return 8 + d->n * (8 + 2 + UD_COMMAND_MEMBER_HTTP_MAX + UD_COMMAND_MEMBER_RESP_MAX) +
           (size_t)t->count * (2 + 16 + UD_COMMAND_DIGEST_SIZE) + t->name_bytes;
}

void ud_tables_encode(const struct ud_idem *t, const struct ud_directory *d, uint8_t *buf,
                      size_t *len)
{
    size_t off = *len;
    ud_put_le32(buf + off, d->n);
    off += 4;
    for (unsigned i = 0; i < d->n; i++) {
        ud_put_le64(buf + off, d->e[i].id);
        off += 8;
        const char *s[2] = {d->e[i].http, d->e[i].resp};
        for (int k = 0; k < 2; k++) {
            size_t n = strlen(s[k]);
            buf[off] = (uint8_t)n;
            memcpy(buf + off + 1, s[k], n);
            off += 1 + n;
        }
    }
    ud_put_le32(buf + off, t->count);
    off += 4;
    for (uint32_t i = 0; i < t->count; i++) {
        const struct ud_idem_entry *e = &t->ring[(t->head + i) % UD_IDEM_WINDOW];
        buf[off] = e->ns_len;
        memcpy(buf + off + 1, e->name, e->ns_len);
        off += 1 + e->ns_len;
        buf[off] = e->key_len;
        memcpy(buf + off + 1, e->name + e->ns_len, e->key_len);
        off += 1 + e->key_len;
        ud_put_le64(buf + off, e->first_lsn);
        ud_put_le32(buf + off + 8, e->nrecords);
        ud_put_le32(buf + off + 12, (uint32_t)e->status);
        memcpy(buf + off + 16, e->digest, UD_COMMAND_DIGEST_SIZE);
        off += 16 + UD_COMMAND_DIGEST_SIZE;
    }
    *len = off;
}

/* A length-prefixed string of at most max bytes of printable ASCII at buf[*off]. */
static int get_str(const uint8_t *buf, size_t len, size_t *off, size_t max, char *out)
{
    if (len - *off < 1)
        return -1;
    size_t n = buf[*off];
    if (n > max || len - *off - 1 < n)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (buf[*off + 1 + i] <= 0x20 || buf[*off + 1 + i] >= 0x7f)
            return -1;
    memcpy(out, buf + *off + 1, n);
    out[n] = '\0';
    *off += 1 + n;
    return 0;
}

static int walk(struct ud_idem *t, struct ud_directory *d, const uint8_t *buf, size_t len,
                size_t *off, int digests, char *errmsg)
{
    size_t fixed = 16 + (digests ? UD_COMMAND_DIGEST_SIZE : 0);
    size_t at = *off;
    if (len - at < 4)
        return ud_errf(errmsg, UD_ECORRUPT, "member count at byte %zu: metadata ends", at);
    uint32_t nm = ud_get_le32(buf + at);
    at += 4;
    if (nm > UD_DIRECTORY_MAX)
        return ud_errf(errmsg, UD_ECORRUPT, "%u members at byte %zu (at most %d)", nm, at - 4,
                       UD_DIRECTORY_MAX);
    for (uint32_t i = 0; i < nm; i++) {
        struct ud_directory_entry e;
        if (len - at < 8)
            return ud_errf(errmsg, UD_ECORRUPT, "member %u at byte %zu: metadata ends", i, at);
        e.id = ud_get_le64(buf + at);
        at += 8;
        if (e.id == 0 || get_str(buf, len, &at, UD_COMMAND_MEMBER_HTTP_MAX, e.http) != 0 ||
            get_str(buf, len, &at, UD_COMMAND_MEMBER_RESP_MAX, e.resp) != 0)
            return ud_errf(errmsg, UD_ECORRUPT, "member %u before byte %zu is malformed", i, at);
        if (d != NULL)
            ud_directory_set(d, e.id, e.http, e.resp);
    }
    if (len - at < 4)
        return ud_errf(errmsg, UD_ECORRUPT, "key count at byte %zu: metadata ends", at);
    uint32_t nk = ud_get_le32(buf + at);
    at += 4;
    if (nk > UD_IDEM_WINDOW)
        return ud_errf(errmsg, UD_ECORRUPT, "%u idempotency keys at byte %zu (at most %d)", nk,
                       at - 4, UD_IDEM_WINDOW);
    for (uint32_t i = 0; i < nk; i++) {
        char ns[UD_NS_NAME_MAX + 1];
        size_t start = at;
        if (get_str(buf, len, &at, UD_NS_NAME_MAX, ns) != 0 || len - at < 1)
            return ud_errf(errmsg, UD_ECORRUPT, "idempotency key %u at byte %zu is malformed", i,
                           start);
        size_t kl = buf[at];
        if (kl == 0 || kl > UD_COMMAND_KEY_MAX || len - at - 1 < kl + fixed)
            return ud_errf(errmsg, UD_ECORRUPT, "idempotency key %u at byte %zu is malformed", i,
                           start);
        const uint8_t *key = buf + at + 1;
        at += 1 + kl;
        if (t != NULL)
            ud_idem_insert(t, ns, key, kl, digests ? buf + at + 16 : NULL, ud_get_le64(buf + at),
                           ud_get_le32(buf + at + 8), (int32_t)ud_get_le32(buf + at + 12));
        at += fixed;
    }
    *off = at;
    return 0;
}

int ud_tables_decode(struct ud_idem *t, struct ud_directory *d, const uint8_t *buf, size_t len,
                     size_t *off, int digests, char *errmsg)
{
    size_t at = *off;
    int rc = walk(NULL, NULL, buf, len, &at, digests, errmsg);
    if (rc != 0)
        return rc;
    if (t == NULL && d == NULL) {
        *off = at;
        return 0;
    }
    if (t != NULL)
        ud_idem_clear(t);
    if (d != NULL)
        memset(d, 0, sizeof *d);
    at = *off;
    walk(t, d, buf, len, &at, digests, errmsg);
    *off = at;
    return 0;
}
