/* WALFS readers: zero-copy iteration from an LSN across segments, and waits for new records. */
#include <stdlib.h>
#include <time.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/wal_int.h"

struct ud_wal_reader {
    struct ud_wal *wal;
    struct ud_wal_segment *seg; /* pinned: one reference held */
    uint64_t off;               /* frame offset of next_lsn in seg, once seg holds it */
    uint64_t next_lsn;
    unsigned flags;
};

/* Newest LSN this reader may return. In ALWAYS mode a replica must never be shipped a record the
 * node could still lose, so the default horizon is the durable LSN. */
static uint64_t visible_lsn(const struct ud_wal_reader *r)
{
    if (r->wal->mode == UD_WAL_SYNC_ALWAYS && !(r->flags & UD_WAL_READ_UNDURABLE))
        return atomic_load_explicit(&r->wal->durable_lsn, memory_order_acquire);
    return atomic_load_explicit(&r->wal->last_lsn, memory_order_acquire);
}

int ud_wal_reader_open(struct ud_wal *wal, uint64_t from_lsn, unsigned flags,
                       struct ud_wal_reader **out)
{
    struct ud_wal_reader *r = calloc(1, sizeof *r);
    if (r == NULL)
        return UD_ENOMEM;
    pthread_mutex_lock(&wal->lock);
    uint64_t first = atomic_load(&wal->first_lsn);
    uint64_t last = atomic_load(&wal->last_lsn);
    if (from_lsn < first || from_lsn > last + 1) {
        pthread_mutex_unlock(&wal->lock);
        free(r);
        return from_lsn < first ? UD_EGONE : UD_ERANGE;
    }
    struct ud_wal_segment *s = wal->segs[ud_wal_find_segment(wal, from_lsn)];
    r->off = ud_wal_segment_locate(wal, s, from_lsn - s->first_lsn);
    ud_wal_segment_ref(s);
    pthread_mutex_unlock(&wal->lock);
    r->wal = wal;
    r->seg = s;
    r->next_lsn = from_lsn;
    r->flags = flags;
    *out = r;
    return 0;
}

/* Moves to the segment holding next_lsn once the current one has no more records. */
static int advance_segment(struct ud_wal_reader *r)
{
    struct ud_wal *wal = r->wal;
    pthread_mutex_lock(&wal->lock);
    if (r->next_lsn < atomic_load(&wal->first_lsn)) {
        pthread_mutex_unlock(&wal->lock);
        return UD_EGONE;
    }
    struct ud_wal_segment *s = wal->segs[ud_wal_find_segment(wal, r->next_lsn)];
    uint64_t k = r->next_lsn - s->first_lsn;
    if (k >= atomic_load_explicit(&s->count, memory_order_acquire)) {
        pthread_mutex_unlock(&wal->lock);
        return UD_EAGAIN;
    }
    uint64_t off = ud_wal_segment_locate(wal, s, k);
    ud_wal_segment_ref(s);
    pthread_mutex_unlock(&wal->lock);
    ud_wal_segment_unref(r->seg);
    r->seg = s;
    r->off = off;
    return 0;
}

int ud_wal_reader_next(struct ud_wal_reader *r, const uint8_t **data, uint32_t *len, uint64_t *lsn)
{
    if (r->next_lsn > visible_lsn(r))
        return UD_EAGAIN;
    struct ud_wal_segment *s = r->seg;
    if (r->next_lsn >= s->first_lsn + atomic_load_explicit(&s->count, memory_order_acquire)) {
        int rc = advance_segment(r);
        if (rc != 0)
            return rc;
        s = r->seg;
    }
    /* Visible frames may still be in the stage only: the file gets them before they are read.
     * The file holds whole frames up to written, so the one at off is there when off is below. */
    if (r->off >= atomic_load_explicit(&s->written, memory_order_acquire) &&
        ud_wal_write_published(r->wal, s) != 0)
        return UD_EIO;
    uint32_t n;
    enum ud_wal_frame_status st = ud_wal_frame_check(s->map, s->size, r->off, &n);
    if (st != UD_WAL_FRAME_OK) {
        ud_error("wal", "%s: segment %s: %s at offset %llu (LSN %llu)", r->wal->dir, s->name,
                 ud_wal_frame_status_str(st), (unsigned long long)r->off,
                 (unsigned long long)r->next_lsn);
        return UD_ECORRUPT;
    }
    *data = s->map + r->off + 8;
    *len = n;
    *lsn = r->next_lsn;
    r->off += ud_wal_frame_size(n);
    r->next_lsn++;
    return 0;
}

int ud_wal_reader_next_run(struct ud_wal_reader *r, uint64_t max_bytes, const uint8_t **data,
                           uint64_t *len, uint64_t *first_lsn, uint32_t *count)
{
    uint64_t visible = visible_lsn(r);
    if (r->next_lsn > visible)
        return UD_EAGAIN;
    struct ud_wal_segment *s = r->seg;
    uint64_t seg_count = atomic_load_explicit(&s->count, memory_order_acquire);
    if (r->next_lsn >= s->first_lsn + seg_count) {
        int rc = advance_segment(r);
        if (rc != 0)
            return rc;
        s = r->seg;
        seg_count = atomic_load_explicit(&s->count, memory_order_acquire);
    }
    /* Only when the next frame is not in the file yet: the file holds whole frames up to written,
     * and the run stops there (in sync always the visible frames are below it already). */
    uint64_t written = atomic_load_explicit(&s->written, memory_order_acquire);
    if (r->off >= written) {
        if (ud_wal_write_published(r->wal, s) != 0)
            return UD_EIO;
        written = atomic_load_explicit(&s->written, memory_order_acquire);
    }
    /* The run ends at the visibility horizon, at the end of the segment's complete frames, at
     * what the file holds, at max_bytes (after the first frame), and below UINT32_MAX frames. */
    uint64_t last = s->first_lsn + seg_count - 1;
    if (last > visible)
        last = visible;
    uint64_t off = r->off, lsn = r->next_lsn;
    while (lsn <= last && off < written && lsn - r->next_lsn < UINT32_MAX) {
        uint32_t n;
        enum ud_wal_frame_status st = (r->flags & UD_WAL_READ_TRUSTED)
                                          ? ud_wal_frame_check_shape(s->map, s->size, off, &n)
                                          : ud_wal_frame_check(s->map, s->size, off, &n);
        if (st != UD_WAL_FRAME_OK) {
            ud_error("wal", "%s: segment %s: %s at offset %llu (LSN %llu)", r->wal->dir, s->name,
                     ud_wal_frame_status_str(st), (unsigned long long)off, (unsigned long long)lsn);
            if (lsn == r->next_lsn)
                return UD_ECORRUPT;
            break; /* hand out the good frames before it; the next call reports it */
        }
        uint64_t fsize = ud_wal_frame_size(n);
        if (lsn > r->next_lsn && off + fsize - r->off > max_bytes)
            break;
        off += fsize;
        lsn++;
    }
    *data = s->map + r->off;
    *len = off - r->off;
    *first_lsn = r->next_lsn;
    *count = (uint32_t)(lsn - r->next_lsn);
    r->off = off;
    r->next_lsn = lsn;
    return 0;
}

uint64_t ud_wal_reader_lsn(const struct ud_wal_reader *r)
{
    return r->next_lsn;
}

uint64_t ud_wal_visible_lsn(struct ud_wal *wal)
{
    if (wal->mode == UD_WAL_SYNC_ALWAYS)
        return atomic_load_explicit(&wal->durable_lsn, memory_order_acquire);
    return atomic_load_explicit(&wal->last_lsn, memory_order_acquire);
}

int ud_wal_reader_wait(struct ud_wal_reader *r, uint64_t timeout_ms)
{
    struct ud_wal *wal = r->wal;
    uint64_t now = ud_mono_ns();
    uint64_t deadline =
        timeout_ms > (UINT64_MAX - now) / 1000000u ? UINT64_MAX / 2 : now + timeout_ms * 1000000u;
    struct timespec ts = {.tv_sec = (time_t)(deadline / 1000000000u),
                          .tv_nsec = (long)(deadline % 1000000000u)};
    int rc;
    pthread_mutex_lock(&wal->wait_lock);
    atomic_fetch_add(&wal->waiters, 1);
    /* Pairs with the fence in ud_wal_wake_readers (see there). */
    atomic_thread_fence(memory_order_seq_cst);
    for (;;) {
        if (atomic_load(&wal->closed)) {
            rc = UD_ECLOSED;
            break;
        }
        if (visible_lsn(r) >= r->next_lsn) {
            rc = 0;
            break;
        }
        if (ud_mono_ns() >= deadline) {
            rc = UD_ETIMEDOUT;
            break;
        }
        pthread_cond_timedwait(&wal->wait_cond, &wal->wait_lock, &ts);
    }
    atomic_fetch_sub(&wal->waiters, 1);
    pthread_mutex_unlock(&wal->wait_lock);
    return rc;
}

void ud_wal_reader_close(struct ud_wal_reader *r)
{
    if (r == NULL)
        return;
    ud_wal_segment_unref(r->seg);
    free(r);
}
