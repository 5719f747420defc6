/*
 * WALFS stage: the anonymous memory appends are built in before they are written into the
 * segment file.
 *
 * Storing records through a shared mapping of the file cost the kernel ~4 us of CPU per 4 KiB page
 * (a page-cache folio, its zero-fill from the preallocated extent, ext4's page_mkwrite, the page
 * table walk of MADV_POPULATE_WRITE), about 1 us per 1 KiB record, whoever faulted it in. The
 * stage is faulted in once per WAL and reused; its bytes reach the file by pwrite of whole runs
 * of frames (the write path allocates large folios and marks only the blocks it wrote dirty), from
 * the helper thread behind the appender, from every sync before its fsync, and from a reader that
 * wants frames the file does not hold yet. Readers and recovery still read the file's mapping.
 */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/log.h"
#include "core/wal_int.h"

static uint8_t *map_stage(uint64_t size)
{
    /* Not populated: the appender faults each page in once, at its first pass, and reuses it. */
    void *p = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

int ud_wal_stage_init(struct ud_wal *wal, char *errmsg)
{
    wal->stage = map_stage(UD_WAL_STAGE_BYTES);
    if (wal->stage == NULL)
        return ud_errf(errmsg, UD_ENOMEM, "map the append stage (%llu bytes): %s",
                       (unsigned long long)UD_WAL_STAGE_BYTES, strerror(errno));
    wal->stage_size = UD_WAL_STAGE_BYTES;
    return 0;
}

void ud_wal_stage_free(struct ud_wal *wal)
{
    if (wal->stage != NULL)
        munmap(wal->stage, (size_t)wal->stage_size);
    wal->stage = NULL;
}

/* reader: the bytes are wanted for a read. They are written even when the log failed earlier
 * (appends stopped, so the stage still holds exactly the published frames, and writing them
 * again where a write failed changes nothing durable): published frames stay readable. */
static int write_out(struct ud_wal *wal, struct ud_wal_segment *s, uint64_t to, bool reader,
                     char *errmsg)
{
    if (atomic_load_explicit(&s->written, memory_order_acquire) >= to)
        return 0;
    int rc = 0;
    bool failed_before = false;
    char msg[UD_ERRMSG_SIZE];
    pthread_mutex_lock(&wal->write_lock);
    uint64_t from = atomic_load_explicit(&s->written, memory_order_relaxed);
    if (!reader && atomic_load(&wal->failed)) {
        rc = UD_EIO;
        failed_before = true;
    } else if (to > from) {
        /* Only the active segment has bytes beyond written, and the stage holds them all: its
         * base moves only to an end that was written out. */
        UD_ASSERT(from >= wal->stage_base);
        /* The helper is readying a range these bytes reach into (its zeros must land first):
         * rare, the helper keeps ahead of the appends. */
        if (to > atomic_load(&s->preparing_from)) {
            pthread_mutex_lock(&wal->prepare_lock);
            pthread_mutex_unlock(&wal->prepare_lock);
        }
        rc = wal->fs->write(wal->fs, s->file, from, wal->stage + (from - wal->stage_base),
                            to - from, msg);
        if (rc == 0)
            atomic_store_explicit(&s->written, to, memory_order_release);
    }
    pthread_mutex_unlock(&wal->write_lock);
    if (rc == 0)
        return 0;
    if (failed_before)
        return ud_wal_fail_error(wal, errmsg);
    /* The file may hold part of the range: nothing later may be appended behind it. */
    ud_errwrap(msg, rc, "segment %s", s->name);
    if (reader) /* its caller has no message to pass on; an earlier failure keeps the log's */
        ud_error("wal", "%s: write out for a read: %s", wal->dir, msg);
    ud_wal_set_failed(wal, msg); /* keeps the first failure's message */
    return ud_errf(errmsg, UD_EIO, "%s", msg);
}

int ud_wal_write_out(struct ud_wal *wal, struct ud_wal_segment *s, uint64_t to, char *errmsg)
{
    return write_out(wal, s, to, false, errmsg);
}

int ud_wal_sync_range(struct ud_wal *wal, struct ud_wal_segment *s, uint64_t from, uint64_t to,
                      char *errmsg)
{
    int rc = ud_wal_write_out(wal, s, to, errmsg);
    if (rc != 0 || to <= from)
        return rc;
    rc = wal->fs->sync(wal->fs, s->file, from, to - from, errmsg);
    atomic_fetch_add_explicit(&wal->syncs, 1, memory_order_relaxed);
    return rc;
}

int ud_wal_write_published(struct ud_wal *wal, struct ud_wal_segment *s)
{
    return write_out(wal, s, atomic_load_explicit(&s->published, memory_order_acquire), true, NULL);
}

int ud_wal_stage_reserve(struct ud_wal *wal, struct ud_wal_segment *s, uint64_t fsize)
{
    if (s->end + fsize - wal->stage_base <= wal->stage_size)
        return 0;
    int rc = ud_wal_write_out(wal, s, s->end, NULL); /* the log's failure says why */
    if (rc != 0)
        return rc;
    /* A frame larger than the stage gets a stage of its own size, given back here the next
     * time the stage is full and the frame that does not fit is an ordinary one (a rotation,
     * ud_wal_stage_restart, keeps the size). */
    long ps = sysconf(_SC_PAGESIZE);
    uint64_t page = ps > 0 ? (uint64_t)ps : 4096;
    uint64_t want =
        fsize > UD_WAL_STAGE_BYTES ? (fsize + page - 1) & ~(page - 1) : UD_WAL_STAGE_BYTES;
    pthread_mutex_lock(&wal->write_lock);
    if (want != wal->stage_size) {
        uint8_t *p = map_stage(want);
        if (p == NULL) {
            int err = errno;
            pthread_mutex_unlock(&wal->write_lock);
            ud_error("wal", "%s: append: map a stage of %llu bytes: %s", wal->dir,
                     (unsigned long long)want, strerror(err));
            return UD_ENOMEM;
        }
        munmap(wal->stage, (size_t)wal->stage_size);
        wal->stage = p;
        wal->stage_size = want;
    }
    wal->stage_base = s->end;
    pthread_mutex_unlock(&wal->write_lock);
    return 0;
}

void ud_wal_stage_restart(struct ud_wal *wal, struct ud_wal_segment *s)
{
    pthread_mutex_lock(&wal->write_lock);
    wal->stage_base = s->end;
    pthread_mutex_unlock(&wal->write_lock);
}
