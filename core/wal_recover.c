/* WALFS recovery at open: list segment files, verify sealed ones, cut the active one's torn tail
 * (above the durable floor, core/wal_floor.c). */
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/wal_int.h"

/* Accepts exactly "{id:010}.seg" with 1 <= id <= UINT32_MAX. */
static bool parse_segment_name(const char *name, uint32_t *id)
{
    if (strlen(name) != UD_WAL_SEG_NAME_LEN || strcmp(name + 10, ".seg") != 0)
        return false;
    uint64_t v = 0;
    for (int i = 0; i < 10; i++) {
        if (name[i] < '0' || name[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(name[i] - '0');
    }
    if (v == 0 || v > UINT32_MAX)
        return false;
    *id = (uint32_t)v;
    return true;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static int list_segments(struct ud_wal *wal, uint32_t **ids_out, uint32_t *n_out, char *errmsg)
{
    DIR *d = opendir(wal->dir);
    if (d == NULL)
        return ud_errf(errmsg, UD_EIO, "list %s: %s", wal->dir, strerror(errno));
    uint32_t *ids = NULL, n = 0, cap = 0;
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        uint32_t id;
        if (!parse_segment_name(e->d_name, &id))
            continue;
        if (n == cap) {
            uint32_t ncap = cap ? cap * 2 : 16;
            uint32_t *p = realloc(ids, ncap * sizeof *p);
            if (p == NULL) {
                rc = ud_errf(errmsg, UD_ENOMEM, "list %s: out of memory", wal->dir);
                goto out;
            }
            ids = p;
            cap = ncap;
        }
        ids[n++] = id;
    }
    if (n > 1)
        qsort(ids, n, sizeof *ids, cmp_u32);
    for (uint32_t i = 1; i < n; i++) {
        if (ids[i] != ids[i - 1] + 1) {
            rc = ud_errf(errmsg, UD_ECORRUPT,
                         "segment %010u.seg is missing between %010u.seg and %010u.seg",
                         ids[i - 1] + 1, ids[i - 1], ids[i]);
            goto out;
        }
    }
out:
    closedir(d);
    if (rc != 0) {
        free(ids);
        return rc;
    }
    *ids_out = ids;
    *n_out = n;
    return 0;
}

static int open_segment(struct ud_wal *wal, uint32_t id, struct ud_wal_segment **out, char *errmsg)
{
    char path[4096];
    struct ud_wal_segment *s = ud_wal_segment_alloc(wal, id);
    if (s == NULL)
        return ud_errf(errmsg, UD_ENOMEM, "open segment %010u.seg: out of memory", id);
    if (ud_wal_segment_path(wal, s->name, path, sizeof path) != 0) {
        free(s);
        return ud_errf(errmsg, UD_EINVAL, "open segment %010u.seg: path too long", id);
    }
    int rc = wal->fs->open(wal->fs, path, 0, 0, &s->file, &s->map, &s->size, errmsg);
    if (rc != 0) {
        ud_errwrap(errmsg, rc == UD_ENOTFOUND ? UD_EIO : rc, "open segment %s", s->name);
        free(s);
        return rc == UD_ENOTFOUND ? UD_EIO : rc;
    }
    *out = s;
    return 0;
}

/* A sealed segment must hold exactly entry_count valid frames up to its write offset. */
static int verify_sealed(struct ud_wal *wal, struct ud_wal_segment *s,
                         const struct ud_wal_header *h, char *errmsg)
{
    uint64_t off = UD_WAL_SEGMENT_HEADER_SIZE, k = 0;
    while (off < h->write_offset) {
        uint32_t len;
        enum ud_wal_frame_status st = ud_wal_frame_check(s->map, h->write_offset, off, &len);
        if (st != UD_WAL_FRAME_OK)
            return ud_errf(errmsg, UD_ECORRUPT, "segment %s: %s at offset %llu", s->name,
                           st == UD_WAL_FRAME_END ? "missing record" : ud_wal_frame_status_str(st),
                           (unsigned long long)off);
        if (ud_wal_segment_index_add(wal, s, k, off) != 0)
            return ud_errf(errmsg, UD_ENOMEM, "segment %s: index: out of memory", s->name);
        off += ud_wal_frame_size(len);
        k++;
    }
    if (k != h->entry_count)
        return ud_errf(errmsg, UD_ECORRUPT,
                       "segment %s: header says %llu records, found %llu up to offset %llu",
                       s->name, (unsigned long long)h->entry_count, (unsigned long long)k,
                       (unsigned long long)off);
    ud_wal_segment_set_end(s, off);
    s->sealed = true;
    atomic_store(&s->count, k);
    return 0;
}

/* End offset (8-aligned, exclusive) of the last non-zero byte in [from, to), or from if none. */
static uint64_t last_nonzero_end(const uint8_t *p, uint64_t from, uint64_t to)
{
    uint64_t hi = from;
    uint64_t off = from;
    /* Word-wise OR over 64-byte blocks: this runs over the whole preallocated tail of the
     * active segment at every open, so it is kept to a memory-bandwidth loop. */
    while (to - off >= 64) {
        uint64_t w[8];
        memcpy(w, p + off, sizeof w);
        if ((w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7]) != 0)
            hi = off + 64;
        off += 64;
    }
    for (; off < to; off++)
        if (p[off] != 0)
            hi = (off + 8) & ~(uint64_t)7;
    return hi < to ? hi : to;
}

/*
 * The active segment holds every frame up to the first invalid one. Everything after that point is
 * a torn write or garbage and must be zeroed durably before new frames go there: a new, shorter
 * frame could otherwise line up with an old valid frame behind it and resurrect that record under
 * a new LSN at the next recovery.
 */
static int recover_active(struct ud_wal *wal, struct ud_wal_segment *s,
                          const struct ud_wal_header *h, char *errmsg)
{
    uint64_t off = UD_WAL_SEGMENT_HEADER_SIZE, k = 0;
    enum ud_wal_frame_status st;
    for (;;) {
        uint32_t len;
        st = ud_wal_frame_check(s->map, s->size, off, &len);
        if (st != UD_WAL_FRAME_OK)
            break;
        if (ud_wal_segment_index_add(wal, s, k, off) != 0)
            return ud_errf(errmsg, UD_ENOMEM, "segment %s: index: out of memory", s->name);
        off += ud_wal_frame_size(len);
        k++;
    }
    /* Past the floor the invalid frame may be a torn write; at or below it, the record was
     * durable once and raft's log or the store may have let go of their copy since: cutting
     * here would lose acknowledged records. Nothing is zeroed: the bytes are the evidence. */
    uint64_t first_bad = s->first_lsn + k;
    if (wal->floor_lsn >= first_bad)
        return ud_errf(errmsg, UD_ECORRUPT,
                       "segment %s: %s at offset %llu (LSN %llu, durable floor %llu, %s): "
                       "damaged, not torn",
                       s->name, ud_wal_frame_status_str(st), (unsigned long long)off,
                       (unsigned long long)first_bad, (unsigned long long)wal->floor_lsn,
                       UD_WAL_FLOOR_NAME);
    uint64_t hi = last_nonzero_end(s->map, off, s->size);
    if (hi > off) {
        ud_warn("wal", "segment %s in %s: %s at offset %llu: zeroing %llu bytes of torn tail",
                s->name, wal->dir, ud_wal_frame_status_str(st), (unsigned long long)off,
                (unsigned long long)(hi - off));
        memset(s->map + off, 0, hi - off);
    }
    if (k < h->entry_count)
        ud_warn("wal", "segment %s in %s: header counted %llu records, %llu survived", s->name,
                wal->dir, (unsigned long long)h->entry_count, (unsigned long long)k);
    /* One sync makes the zeroed tail durable and also every recovered frame, which may have
     * been in the page cache only (a killed process leaves them there): after open,
     * durable_lsn == last_lsn is true. */
    int rc = wal->fs->sync(wal->fs, s->file, 0, hi, errmsg);
    atomic_fetch_add_explicit(&wal->syncs, 1, memory_order_relaxed);
    if (rc != 0)
        return ud_errwrap(errmsg, rc, "segment %s: sync recovered tail", s->name);
    ud_wal_segment_set_end(s, off);
    s->sealed = false;
    atomic_store(&s->count, k);
    return 0;
}

/*
 * A newest segment whose header never fully reached the disk (short file, or a checksum that does
 * not match) and that holds no frame was being created when the process stopped: creation syncs
 * the header before anything is appended, so it can go. A header with a matching checksum but
 * impossible fields was written whole by someone and is corruption, never discarded: dropping it
 * could restart the LSN sequence.
 */
static bool discardable(struct ud_wal_segment *s)
{
    uint32_t len;
    if (ud_wal_header_intact(s->map, s->size))
        return false;
    return s->map == NULL ||
           ud_wal_frame_check(s->map, s->size, UD_WAL_SEGMENT_HEADER_SIZE, &len) != UD_WAL_FRAME_OK;
}

static int discard_newest(struct ud_wal *wal, uint32_t id, const char *why, char *errmsg)
{
    char name[UD_WAL_SEG_NAME_LEN + 2], path[4096];
    ud_wal_segment_name(id, name);
    if (ud_wal_segment_path(wal, name, path, sizeof path) != 0)
        return ud_errf(errmsg, UD_EINVAL, "segment %s: path too long", name);
    ud_warn("wal",
            "segment %s in %s: %s and no records: removing a segment whose creation did "
            "not finish",
            name, wal->dir, why);
    int rc = wal->fs->unlink(wal->fs, path, errmsg);
    if (rc == 0)
        rc = wal->fs->sync_dir(wal->fs, wal->dir, errmsg);
    if (rc != 0)
        return ud_errwrap(errmsg, rc == UD_ENOTFOUND ? UD_EIO : rc, "discard segment %s", name);
    return 0;
}

int ud_wal_recover(struct ud_wal *wal, char *errmsg)
{
    uint32_t *ids = NULL, n = 0;
    int rc = list_segments(wal, &ids, &n, errmsg);
    if (rc != 0)
        return rc;

    uint32_t next_id = n > 0 ? ids[0] : 1;
    struct ud_wal_segment *s = NULL;
    for (uint32_t i = 0; i < n; i++) {
        bool last = i == n - 1;
        rc = open_segment(wal, ids[i], &s, errmsg);
        if (rc != 0)
            goto out;
        struct ud_wal_header h;
        char why[UD_ERRMSG_SIZE];
        rc = ud_wal_header_decode(s->map, s->size, &h, why);
        if (rc != 0) {
            if (last && rc == UD_ECORRUPT && discardable(s)) {
                ud_wal_segment_unref(s);
                s = NULL;
                rc = discard_newest(wal, ids[i], why, errmsg);
                if (rc != 0)
                    goto out;
                next_id = ids[i];
                break;
            }
            ud_errf(errmsg, rc, "segment %s: %s", s->name, why);
            goto out;
        }
        if (wal->nsegs > 0) {
            struct ud_wal_segment *prev = wal->segs[wal->nsegs - 1];
            uint64_t expect = prev->first_lsn + atomic_load(&prev->count);
            if (h.first_lsn != expect) {
                rc = ud_errf(errmsg, UD_ECORRUPT,
                             "segment %s: first LSN %llu, but segment %s ends before LSN %llu",
                             s->name, (unsigned long long)h.first_lsn, prev->name,
                             (unsigned long long)expect);
                goto out;
            }
        }
        s->first_lsn = h.first_lsn;
        s->created_ns = h.created_ns;
        s->modified_ns = h.modified_ns;
        if (h.flags == UD_WAL_FLAG_SEALED) {
            rc = verify_sealed(wal, s, &h, errmsg);
            if (rc == 0 && wal->fs->done_writing != NULL)
                wal->fs->done_writing(wal->fs, s->file); /* never written again */
        } else if (!last) {
            rc = ud_errf(errmsg, UD_ECORRUPT,
                         "segment %s: not sealed, but newer segment %010u.seg "
                         "exists",
                         s->name, ids[i + 1]);
        } else {
            rc = recover_active(wal, s, &h, errmsg);
        }
        if (rc != 0)
            goto out;
        rc = ud_wal_push_segment(wal, s);
        if (rc != 0) {
            ud_errf(errmsg, rc, "segment %s: out of memory", s->name);
            goto out;
        }
        next_id = s->id + 1;
        s = NULL;
    }

    /* An empty directory, or a log whose newest segment is sealed (the process stopped between
     * sealing and creating the next one), gets a fresh active segment. */
    struct ud_wal_segment *tail = wal->nsegs > 0 ? wal->segs[wal->nsegs - 1] : NULL;
    /* The active segment checks its own frames against the floor; this catches a log that lost
     * whole files after the floor was raised (segments replaced or removed by hand), before a
     * new segment goes into its directory. */
    uint64_t end = tail ? tail->first_lsn + atomic_load(&tail->count) - 1 : wal->start_lsn - 1;
    if (wal->floor_lsn > end) {
        rc = ud_errf(errmsg, UD_ECORRUPT,
                     "the log ends at LSN %llu, but it was durable up to LSN %llu (%s/%s); if "
                     "its segments were replaced on purpose, remove that file",
                     (unsigned long long)end, (unsigned long long)wal->floor_lsn, wal->dir,
                     UD_WAL_FLOOR_NAME);
        goto out;
    }
    if (tail == NULL || tail->sealed) {
        uint64_t first = tail ? tail->first_lsn + atomic_load(&tail->count) : wal->start_lsn;
        rc = ud_wal_segment_create(wal, next_id, first, &s, errmsg);
        if (rc != 0)
            goto out;
        rc = ud_wal_push_segment(wal, s);
        if (rc != 0) {
            ud_errf(errmsg, rc, "segment %s: out of memory", s->name);
            goto out;
        }
        s = NULL;
    }

    struct ud_wal_segment *head = wal->segs[0];
    tail = wal->segs[wal->nsegs - 1];
    uint64_t last_lsn = tail->first_lsn + atomic_load(&tail->count) - 1;
    ud_wal_stage_restart(wal, tail); /* appends go on there */
    atomic_store(&wal->first_lsn, head->first_lsn);
    atomic_store(&wal->last_lsn, last_lsn);
    atomic_store(&wal->durable_lsn, last_lsn);
    ud_debug("wal", "opened %s: %u segments, LSN %llu..%llu", wal->dir, wal->nsegs,
             (unsigned long long)head->first_lsn, (unsigned long long)last_lsn);
out:
    if (s != NULL)
        ud_wal_segment_unref(s);
    free(ids);
    return rc;
}
