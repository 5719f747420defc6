/* WALFS segment objects: naming, creation, sealing, reference counts and the sparse LSN index. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/endian.h"
#include "core/log.h"
#include "core/wal_int.h"

void ud_wal_segment_name(uint32_t id, char *out)
{
    snprintf(out, UD_WAL_SEG_NAME_LEN + 1, "%010u.seg", id);
}

int ud_wal_segment_path(const struct ud_wal *wal, const char *name, char *out, size_t outlen)
{
    int n = snprintf(out, outlen, "%s/%s", wal->dir, name);
    return n < 0 || (size_t)n >= outlen ? UD_ELIMIT : 0;
}

struct ud_wal_segment *ud_wal_segment_alloc(struct ud_wal *wal, uint32_t id)
{
    struct ud_wal_segment *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    s->id = id;
    s->fs = wal->fs;
    ud_wal_segment_name(id, s->name);
    atomic_init(&s->count, 0);
    atomic_init(&s->refs, 1);
    atomic_init(&s->written, 0);
    atomic_init(&s->published, 0);
    atomic_init(&s->wake_at, UINT64_MAX);
    atomic_init(&s->preparing_from, UINT64_MAX);
    atomic_init(&s->sync_wake_at,
                wal->mode == UD_WAL_SYNC_NONE ? UD_WAL_BG_SYNC_BYTES : UINT64_MAX);
    return s;
}

void ud_wal_segment_ref(struct ud_wal_segment *s)
{
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
}

void ud_wal_segment_unref(struct ud_wal_segment *s)
{
    if (s == NULL)
        return;
    if (atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
        return;
    if (s->file != NULL)
        s->fs->close(s->fs, s->file);
    free(s->index);
    free(s);
}

void ud_wal_segment_write_header(struct ud_wal_segment *s)
{
    struct ud_wal_header h = {
        .magic = UD_WAL_MAGIC,
        .version = UD_WAL_VERSION,
        .created_ns = s->created_ns,
        .modified_ns = s->modified_ns,
        .write_offset = s->end,
        .entry_count = atomic_load_explicit(&s->count, memory_order_relaxed),
        .flags = s->sealed ? UD_WAL_FLAG_SEALED : UD_WAL_FLAG_ACTIVE,
        .first_lsn = s->first_lsn,
    };
    ud_wal_header_encode(&h, s->map);
}

void ud_wal_segment_set_end(struct ud_wal_segment *s, uint64_t off)
{
    s->end = s->synced = off;
    atomic_store_explicit(&s->written, off, memory_order_relaxed);
    atomic_store_explicit(&s->published, off, memory_order_relaxed);
    atomic_store_explicit(&s->wake_at, off + 1, memory_order_relaxed); /* the first append */
}

int ud_wal_segment_create(struct ud_wal *wal, uint32_t id, uint64_t first_lsn,
                          struct ud_wal_segment **out, char *errmsg)
{
    char path[4096];
    struct ud_wal_segment *s = ud_wal_segment_alloc(wal, id);
    if (s == NULL)
        return ud_errf(errmsg, UD_ENOMEM, "create segment %010u: out of memory", id);
    if (ud_wal_segment_path(wal, s->name, path, sizeof path) != 0) {
        free(s);
        return ud_errf(errmsg, UD_EINVAL, "create segment %010u: directory path too long", id);
    }
    int rc =
        wal->fs->open(wal->fs, path, 1, wal->segment_size, &s->file, &s->map, &s->size, errmsg);
    if (rc != 0) {
        ud_errwrap(errmsg, rc, "create segment %s", s->name);
        free(s);
        return rc;
    }
    s->first_lsn = first_lsn;
    s->created_ns = s->modified_ns = ud_now_ns();
    ud_wal_segment_set_end(s, UD_WAL_SEGMENT_HEADER_SIZE);
    ud_wal_segment_write_header(s);

    /* The header must be durable before the directory entry: recovery discards a newest segment
     * whose header is unreadable, and must never find a named file whose header is lost while
     * records after it survived. */
    rc = wal->fs->sync(wal->fs, s->file, 0, UD_WAL_SEGMENT_HEADER_SIZE, errmsg);
    if (rc == 0)
        rc = wal->fs->sync_dir(wal->fs, wal->dir, errmsg);
    if (rc != 0) {
        char ignored[UD_ERRMSG_SIZE];
        ud_errwrap(errmsg, rc, "create segment %s", s->name);
        wal->fs->close(wal->fs, s->file);
        wal->fs->unlink(wal->fs, path, ignored);
        free(s);
        return rc;
    }
    atomic_fetch_add_explicit(&wal->syncs, 1, memory_order_relaxed);
    ud_debug("wal", "created segment %s in %s, first lsn %llu", s->name, wal->dir,
             (unsigned long long)first_lsn);
    *out = s;
    return 0;
}

uint64_t ud_wal_prepare_step(uint64_t size)
{
    uint64_t step = size / 16 < UD_WAL_PREPARE_STEP ? size / 16 : UD_WAL_PREPARE_STEP;
    step &= ~(uint64_t)4095; /* whole pages: a step never shares one with the next */
    return step > 4096 ? step : 4096;
}

uint64_t ud_wal_prepare_near_step(uint64_t step)
{
    uint64_t near = (step / 4) & ~(uint64_t)4095;
    return near > 4096 ? near : 4096;
}

int ud_wal_segment_seal(struct ud_wal *wal, struct ud_wal_segment *s, char *errmsg)
{
    /* Frames first, then the sealed header, each made durable in that order: a header that
     * says "sealed, N records" must never reach the disk before those records do, or a power
     * loss between the two leaves a sealed segment with missing records, which recovery rightly
     * refuses (the power-loss test found this when both shared one sync). */
    int rc = ud_wal_sync_range(wal, s, s->synced, s->end, errmsg);
    if (rc == 0) {
        s->sealed = true;
        s->modified_ns = ud_now_ns();
        ud_wal_segment_write_header(s);
        rc = wal->fs->sync(wal->fs, s->file, 0, UD_WAL_SEGMENT_HEADER_SIZE, errmsg);
        atomic_fetch_add_explicit(&wal->syncs, 1, memory_order_relaxed);
    }
    if (rc != 0)
        return ud_errwrap(errmsg, rc, "seal segment %s", s->name);
    s->synced = s->end;
    /* Ends the helper's readying of the file (a step under way finishes first): the descriptor
     * it writes through goes now. */
    pthread_mutex_lock(&wal->prepare_lock);
    s->prepared = s->size;
    pthread_mutex_unlock(&wal->prepare_lock);
    if (wal->fs->done_writing != NULL)
        wal->fs->done_writing(wal->fs, s->file);
    ud_debug("wal", "sealed segment %s: %llu records, %llu bytes", s->name,
             (unsigned long long)atomic_load(&s->count), (unsigned long long)s->end);
    return 0;
}

int ud_wal_segment_index_add(struct ud_wal *wal, struct ud_wal_segment *s, uint64_t record,
                             uint64_t off)
{
    if (record % wal->index_interval != 0)
        return 0;
    if (s->index_len == s->index_cap) {
        uint32_t cap = s->index_cap ? s->index_cap * 2 : 64;
        uint64_t *p = realloc(s->index, cap * sizeof *p);
        if (p == NULL)
            return UD_ENOMEM;
        s->index = p;
        s->index_cap = cap;
    }
    UD_ASSERT(s->index_len == record / wal->index_interval);
    s->index[s->index_len++] = off;
    return 0;
}

uint64_t ud_wal_segment_locate(struct ud_wal *wal, struct ud_wal_segment *s, uint64_t k)
{
    uint64_t count = atomic_load_explicit(&s->count, memory_order_acquire);
    if (k >= count)
        return s->end;
    uint64_t j = k / wal->index_interval;
    UD_ASSERT(j < s->index_len);
    uint64_t off = s->index[j];
    /* Frames the file does not hold yet are read in the stage, which the lock keeps in place. */
    uint64_t written = atomic_load_explicit(&s->written, memory_order_acquire);
    for (uint64_t i = j * wal->index_interval; i < k; i++) {
        const uint8_t *frame = off < written ? s->map + off : ud_wal_stage_at(wal, off);
        uint32_t len = ud_get_le32(frame + 4);
        uint64_t next = off + ud_wal_frame_size(len);
        /* Frames below count were validated when written or recovered; a length changed behind
         * our back must not walk out of the mapping. The reader reports the bad frame. */
        if (len == 0 || next > s->size)
            break;
        off = next;
    }
    return off;
}

uint32_t ud_wal_find_segment(struct ud_wal *wal, uint64_t lsn)
{
    /* Largest i with first_lsn <= lsn: an empty sealed segment shares its first LSN with the
     * next one, and the later segment is the one that holds the record. */
    uint32_t lo = 0, hi = wal->nsegs;
    while (hi - lo > 1) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (wal->segs[mid]->first_lsn <= lsn)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}
