/* LOB reads: the manifest, and a chunk-at-a-time reader that takes each chunk from the store when
 * flushed or else from the WAL, so an object is never held in memory (docs/format-lmdb.md). */
#include <stdlib.h>
#include <string.h>

#include "core/endian.h"
#include "core/engine_int.h"
#include "core/err.h"

int ud_lob_manifest_parse(const uint8_t *buf, size_t len, struct ud_lob_manifest *m)
{
    if (len < UD_LOB_MANIFEST_HEADER || ud_get_le32(buf) != UD_LOB_MANIFEST_VERSION)
        return UD_ECORRUPT;
    m->size = ud_get_le64(buf + 4);
    m->commit_lsn = ud_get_le64(buf + 12);
    m->count = ud_get_le32(buf + 20);
    if ((len - UD_LOB_MANIFEST_HEADER) / UD_LOB_MANIFEST_CHUNK != m->count ||
        (len - UD_LOB_MANIFEST_HEADER) % UD_LOB_MANIFEST_CHUNK != 0)
        return UD_ECORRUPT;
    m->chunks = buf + UD_LOB_MANIFEST_HEADER;
    uint64_t sum = 0;
    for (uint32_t i = 0; i < m->count; i++)
        sum += ud_get_le32(m->chunks + (size_t)i * UD_LOB_MANIFEST_CHUNK + 8);
    return sum == m->size ? 0 : UD_ECORRUPT;
}

void ud_lob_manifest_chunk(const struct ud_lob_manifest *m, uint32_t i, uint64_t *lsn,
                           uint32_t *len)
{
    const uint8_t *c = m->chunks + (size_t)i * UD_LOB_MANIFEST_CHUNK;
    *lsn = ud_get_le64(c);
    *len = ud_get_le32(c + 8);
}

int ud_lob_chunk_from_wal(struct ud_ns *ns, uint64_t lsn, uint32_t len,
                          struct ud_wal_reader **reader, const uint8_t **data, char *errmsg)
{
    struct ud_wal_reader *r = NULL;
    /* Undurable: a chunk is readable as soon as its commit was applied, synced or not. */
    int rc = ud_wal_reader_open(ns->wal, lsn, UD_WAL_READ_UNDURABLE, &r);
    if (rc != 0)
        return ud_errf(errmsg, rc, "lob chunk at LSN %llu: open WAL reader: %s",
                       (unsigned long long)lsn, ud_strerror(rc));
    const uint8_t *rec;
    uint32_t rec_len;
    uint64_t got;
    rc = ud_wal_reader_next(r, &rec, &rec_len, &got);
    if (rc == UD_EAGAIN)
        rc = UD_EIO; /* the manifest names a record the WAL does not show */
    if (rc != 0) {
        ud_wal_reader_close(r);
        return ud_errf(errmsg, rc, "lob chunk at LSN %llu: read WAL: %s", (unsigned long long)lsn,
                       ud_strerror(rc));
    }
    struct ud_record dec;
    struct ud_entry_iter it;
    struct ud_entry e;
    int ok = got == lsn && ud_record_decode(rec, rec_len, &dec, NULL) == 0 &&
             dec.entry_type == UD_ENTRY_LOB;
    if (ok) {
        ud_entry_iter_init(&it, &dec);
        ok = ud_entry_iter_next(&it, &e) && e.value_len == len;
    }
    if (!ok) {
        ud_wal_reader_close(r);
        return ud_errf(errmsg, UD_ECORRUPT,
                       "lob chunk at LSN %llu: the WAL record there is not a %u-byte lob chunk",
                       (unsigned long long)lsn, len);
    }
    *reader = r;
    *data = e.value;
    return 0;
}

/* --- the reader ------------------------------------------------------------------------------- */

struct ud_lob_reader {
    struct ud_ns *ns;
    struct ud_buf manifest; /* owned copy */
    struct ud_lob_manifest m;
    uint32_t next;
    uint8_t *buf; /* a store chunk copied out of its short snapshot */
    size_t cap;
    struct ud_wal_reader *wal; /* holds the current WAL chunk's view */
};

int ud_ns_lob_open(struct ud_ns *ns, const void *key, size_t key_len, struct ud_lob_reader **out,
                   uint64_t *size, uint64_t *lsn)
{
    int rc = ud_ns_check_lob_key(key_len, NULL);
    if (rc != 0)
        return rc;
    struct ud_lob_reader *r = calloc(1, sizeof *r);
    if (r == NULL)
        return UD_ENOMEM;
    r->ns = ns;
    if ((rc = ud_ns_lob_manifest_get(ns, key, key_len, &r->manifest)) != 0 ||
        (rc = ud_lob_manifest_parse(r->manifest.data, r->manifest.len, &r->m)) != 0) {
        ud_lob_reader_close(r);
        return rc;
    }
    if (size != NULL)
        *size = r->m.size;
    if (lsn != NULL)
        *lsn = r->m.commit_lsn;
    *out = r;
    return 0;
}

/* 0 (copied into r->buf), UD_ENOTFOUND (not flushed), or an error. */
static int chunk_from_store(struct ud_lob_reader *r, uint64_t lsn, uint32_t len)
{
    struct ud_store_snap *snap;
    int rc = ud_store_snap_begin(r->ns->store, &snap);
    if (rc != 0)
        return rc;
    const uint8_t *d;
    size_t dl;
    if ((rc = ud_store_lob_chunk_get(snap, lsn, &d, &dl)) == 0) {
        if (dl != len) {
            rc = UD_ECORRUPT;
        } else if (r->cap < dl) {
            uint8_t *p = realloc(r->buf, dl);
            if (p == NULL)
                rc = UD_ENOMEM;
            else
                r->buf = p, r->cap = dl;
        }
        if (rc == 0)
            memcpy(r->buf, d, dl);
    }
    /* One snapshot per chunk: a snapshot held across chunks would block LMDB map growth. */
    ud_store_snap_end(snap);
    return rc;
}

int ud_lob_reader_next(struct ud_lob_reader *r, const uint8_t **data, size_t *len)
{
    if (r->wal != NULL) {
        ud_wal_reader_close(r->wal);
        r->wal = NULL;
    }
    if (r->next >= r->m.count) {
        *data = NULL;
        *len = 0;
        return 0;
    }
    uint64_t lsn;
    uint32_t clen;
    ud_lob_manifest_chunk(&r->m, r->next, &lsn, &clen);
    int rc = chunk_from_store(r, lsn, clen);
    if (rc == UD_ENOTFOUND) {
        rc = ud_lob_chunk_from_wal(r->ns, lsn, clen, &r->wal, data, NULL);
        if (rc == 0) {
            *len = clen;
            r->next++;
            return 0;
        }
        /* Flushed and retained away between the two looks: the store has it now, unless the
         * object was overwritten and its old chunks dropped. */
        if (rc == UD_EGONE || rc == UD_ERANGE) {
            rc = chunk_from_store(r, lsn, clen);
            if (rc == UD_ENOTFOUND)
                rc = UD_ECONFLICT;
        }
    }
    if (rc != 0)
        return rc;
    *data = r->buf;
    *len = clen;
    r->next++;
    return 0;
}

int ud_lob_reader_seek(struct ud_lob_reader *r, uint64_t offset, size_t *skip)
{
    if (offset >= r->m.size)
        return UD_ERANGE;
    if (r->wal != NULL) {
        ud_wal_reader_close(r->wal);
        r->wal = NULL;
    }
    /* The manifest's lengths add up to the size (ud_lob_manifest_parse): a chunk holds offset. */
    uint64_t at = 0;
    for (uint32_t i = 0; i < r->m.count; i++) {
        uint64_t lsn;
        uint32_t len;
        ud_lob_manifest_chunk(&r->m, i, &lsn, &len);
        if (offset < at + len) {
            r->next = i;
            *skip = (size_t)(offset - at);
            return 0;
        }
        at += len;
    }
    UD_ASSERT(0 && "lob manifest lengths do not add up to its size");
    return UD_ECORRUPT;
}

void ud_lob_reader_close(struct ud_lob_reader *r)
{
    if (r == NULL)
        return;
    if (r->wal != NULL)
        ud_wal_reader_close(r->wal);
    ud_buf_free(&r->manifest);
    free(r->buf);
    free(r);
}
