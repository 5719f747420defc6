/*
 * The durable floor: the newest LSN this log was once known to hold durably at a point where it
 * became the only copy of its records (a raft snapshot lets raft drop its log; a flush lets LMDB's
 * checkpoint pass them). Recovery then tells a torn write (past the floor: cut, as always) from
 * damage to records that were durable (at or below it: refused), docs/format-wal.md "Durable
 * floor".
 *
 * The file ({dir}/durable-floor, 1024 bytes, created at open) holds two 512-byte slots, written
 * alternately, each alone in its sector and fsynced before the next write may go to the other: a
 * torn write can spoil only the slot being written, and the other still holds the floor before it,
 * which is lower and so still true. A slot: magic, version, sequence number, LSN, CRC32C of those
 * 24 bytes, zeros.
 */
#include <stdio.h>
#include <string.h>

#include "core/crc32c.h"
#include "core/endian.h"
#include "core/log.h"
#include "core/wal_int.h"

#define FLOOR_MAGIC   0x46464455u /* the bytes "UDFF" */
#define FLOOR_VERSION 1u
#define FLOOR_SLOT    512u
#define FLOOR_SIZE    (2u * FLOOR_SLOT)
#define FLOOR_CRC_LEN 24u

enum slot_state { SLOT_EMPTY, SLOT_VALID, SLOT_BAD };

static enum slot_state decode_slot(const uint8_t *p, uint64_t *seq, uint64_t *lsn)
{
    bool zero = true;
    for (uint32_t i = 0; i < FLOOR_SLOT && zero; i++)
        zero = p[i] == 0;
    if (zero)
        return SLOT_EMPTY; /* never written: the file was created, no floor raised since */
    if (ud_get_le32(p) != FLOOR_MAGIC || ud_get_le32(p + 4) != FLOOR_VERSION ||
        ud_get_le32(p + FLOOR_CRC_LEN) != ud_crc32c(0, p, FLOOR_CRC_LEN))
        return SLOT_BAD;
    *seq = ud_get_le64(p + 8);
    *lsn = ud_get_le64(p + 16);
    return SLOT_VALID;
}

static int floor_path(struct ud_wal *wal, char *path, size_t size, char *errmsg)
{
    int n = snprintf(path, size, "%s/%s", wal->dir, UD_WAL_FLOOR_NAME);
    if (n < 0 || (size_t)n >= size)
        return ud_errf(errmsg, UD_EINVAL, "%s/%s: path too long", wal->dir, UD_WAL_FLOOR_NAME);
    return 0;
}

/* True when map holds nothing but zeros (or nothing): a file created whose allocation or first
 * raise never reached the disk. */
static bool all_zero(const uint8_t *map, uint64_t size)
{
    for (uint64_t i = 0; i < size; i++)
        if (map[i] != 0)
            return false;
    return true;
}

/* Takes the floor from the valid slot with the higher sequence number. */
static int read_slots(struct ud_wal *wal, const char *path, const uint8_t *map, uint64_t size,
                      char *errmsg)
{
    if (size != FLOOR_SIZE)
        return ud_errf(errmsg, UD_ECORRUPT, "%s: %llu bytes, expected %u", path,
                       (unsigned long long)size, FLOOR_SIZE);
    uint64_t seq[2] = {0, 0}, lsn[2] = {0, 0};
    enum slot_state st[2];
    for (int i = 0; i < 2; i++)
        st[i] = decode_slot(map + i * FLOOR_SLOT, &seq[i], &lsn[i]);
    if (st[0] == SLOT_BAD && st[1] == SLOT_BAD)
        return ud_errf(errmsg, UD_ECORRUPT,
                       "%s: both slots are damaged (a torn write spoils at most one)", path);
    for (int i = 0; i < 2; i++) {
        if (st[i] != SLOT_VALID || (wal->floor_slot >= 0 && seq[i] < wal->floor_seq))
            continue;
        wal->floor_seq = seq[i];
        wal->floor_lsn = lsn[i];
        wal->floor_slot = i;
    }
    if (st[0] == SLOT_BAD || st[1] == SLOT_BAD)
        ud_warn("wal", "%s: slot %d is damaged (a torn write); using the other one, LSN %llu", path,
                st[0] == SLOT_BAD ? 0 : 1, (unsigned long long)wal->floor_lsn);
    return 0;
}

/* Creates the file zeroed (no floor) and makes its entry durable. */
static int create_file(struct ud_wal *wal, const char *path, char *errmsg)
{
    struct ud_fs_file *f;
    uint8_t *map;
    uint64_t size;
    int rc = wal->fs->open(wal->fs, path, 1, FLOOR_SIZE, &f, &map, &size, errmsg);
    if (rc == 0) {
        wal->fs->close(wal->fs, f);
        rc = wal->fs->sync_dir(wal->fs, wal->dir, errmsg);
    }
    return rc != 0 ? ud_errwrap(errmsg, rc, "create %s", path) : 0;
}

int ud_wal_floor_open(struct ud_wal *wal, char *errmsg)
{
    char path[4096];
    int rc = floor_path(wal, path, sizeof path, errmsg);
    if (rc != 0)
        return rc;
    wal->floor_slot = -1;
    struct ud_fs_file *f;
    uint8_t *map;
    uint64_t size;
    rc = wal->fs->open(wal->fs, path, 0, 0, &f, &map, &size, errmsg);
    if (rc == 0 && size < FLOOR_SIZE && all_zero(map, size)) {
        /* Creation is two metadata updates (the entry, the allocation) and a crash can come
         * between them: a short file of zeros never held a floor. */
        wal->fs->close(wal->fs, f);
        ud_warn("wal", "%s: %llu bytes of zeros (its creation did not finish): created again", path,
                (unsigned long long)size);
        rc = wal->fs->unlink(wal->fs, path, errmsg);
        if (rc != 0 && rc != UD_ENOTFOUND)
            return ud_errwrap(errmsg, rc, "remove %s", path);
        rc = UD_ENOTFOUND;
    }
    if (rc == UD_ENOTFOUND) {
        /* A log from before the floor existed, or a new one: no floor yet. The file is created
         * now, so that raising it later is one write and one fsync; on a full disk the first
         * raise creates it (opening a log must not need free space). */
        rc = create_file(wal, path, errmsg);
        if (rc == UD_ENOSPC) {
            ud_warn("wal", "%s; the first raise of the durable floor creates it", errmsg);
            rc = 0;
        }
        return rc;
    }
    if (rc != 0)
        return ud_errwrap(errmsg, rc, "open %s", path);
    rc = read_slots(wal, path, map, size, errmsg);
    wal->fs->close(wal->fs, f);
    return rc;
}

/* Writes slot (FLOOR_SLOT bytes) at off of the file and syncs it. */
static int write_slot(struct ud_wal *wal, uint64_t off, const uint8_t *slot, char *errmsg)
{
    /* Opened per raise, which comes once per flush or raft snapshot: a descriptor held for the
     * WAL's life would be one more per namespace, for nothing most of the time. */
    char path[4096];
    struct ud_fs_file *f = NULL;
    uint8_t *map;
    uint64_t size;
    int rc = floor_path(wal, path, sizeof path, errmsg);
    if (rc == 0)
        rc = wal->fs->open(wal->fs, path, 0, 0, &f, &map, &size, errmsg);
    if (rc == UD_ENOTFOUND && (rc = create_file(wal, path, errmsg)) == 0)
        rc = wal->fs->open(wal->fs, path, 0, 0, &f, &map, &size, errmsg);
    if (rc == 0 && size != FLOOR_SIZE)
        rc = ud_errf(errmsg, UD_EIO, "%llu bytes, expected %u", (unsigned long long)size,
                     FLOOR_SIZE);
    if (rc == 0)
        rc = wal->fs->write(wal->fs, f, off, slot, FLOOR_SLOT, errmsg);
    if (rc == 0)
        rc = wal->fs->sync(wal->fs, f, off, FLOOR_SLOT, errmsg);
    if (f != NULL)
        wal->fs->close(wal->fs, f);
    return rc;
}

int ud_wal_floor_raise(struct ud_wal *wal, uint64_t lsn, char *errmsg)
{
    int rc = 0;
    pthread_mutex_lock(&wal->floor_lock);
    if (lsn > wal->floor_lsn) {
        /* Always the slot that does not hold the floor: a torn write then leaves the floor. */
        int target = wal->floor_slot == 0 ? 1 : 0;
        uint64_t seq = wal->floor_seq + 1;
        uint8_t slot[FLOOR_SLOT] = {0};
        ud_put_le32(slot, FLOOR_MAGIC);
        ud_put_le32(slot + 4, FLOOR_VERSION);
        ud_put_le64(slot + 8, seq);
        ud_put_le64(slot + 16, lsn);
        ud_put_le32(slot + FLOOR_CRC_LEN, ud_crc32c(0, slot, FLOOR_CRC_LEN));
        rc = write_slot(wal, (uint64_t)target * FLOOR_SLOT, slot, errmsg);
        if (rc == 0) {
            wal->floor_seq = seq;
            wal->floor_lsn = lsn;
            wal->floor_slot = target;
        } else {
            /* The slot may hold anything now; the other one still holds the floor, and the next
             * raise writes this slot again. A full disk keeps its code; anything else is an
             * I/O failure of the sync that asked for the raise. */
            if (rc != UD_ENOSPC)
                rc = UD_EIO;
            ud_errwrap(errmsg, rc, "%s/%s: raise to LSN %llu", wal->dir, UD_WAL_FLOOR_NAME,
                       (unsigned long long)lsn);
        }
    }
    pthread_mutex_unlock(&wal->floor_lock);
    return rc;
}

uint64_t ud_wal_floor(struct ud_wal *wal)
{
    pthread_mutex_lock(&wal->floor_lock);
    uint64_t lsn = wal->floor_lsn;
    pthread_mutex_unlock(&wal->floor_lock);
    return lsn;
}
