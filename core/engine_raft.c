/* Raft position of a namespace: where its newest WAL record came from in the raft log. */
#include "core/engine_int.h"
#include "core/err.h"
#include "proto/record.h"

/*
 * Replay has already stamped the position of every record it applied, but when the checkpoint
 * covers the whole WAL nothing is replayed, so the newest record is read back here. The sparse
 * index bounds the scan to one index interval.
 */
int ud_ns_raft_position_load(struct ud_ns *ns, char *errmsg)
{
    uint64_t first = ud_wal_first_lsn(ns->wal);
    uint64_t last = ud_wal_last_lsn(ns->wal);
    if (last < first)
        return 0; /* empty log: 0/0 */
    struct ud_wal_reader *r;
    int rc = ud_wal_reader_open(ns->wal, last, UD_WAL_READ_UNDURABLE, &r);
    if (rc != 0)
        return ud_errf(errmsg, rc, "namespace %s: read raft position of LSN %llu: %s", ns->name,
                       (unsigned long long)last, ud_strerror(rc));
    const uint8_t *data;
    uint32_t len;
    uint64_t lsn;
    rc = ud_wal_reader_next(r, &data, &len, &lsn);
    if (rc == 0 && (lsn != last || len < UD_RECORD_HEADER_SIZE))
        rc = UD_ECORRUPT;
    if (rc == 0) {
        pthread_mutex_lock(&ns->apply_lock);
        ns->raft_index = ud_record_get_raft_index(data);
        ns->raft_pos = ud_record_get_raft_pos(data);
        pthread_mutex_unlock(&ns->apply_lock);
    }
    ud_wal_reader_close(r);
    if (rc != 0)
        return ud_errf(errmsg, rc == UD_EAGAIN ? UD_ECORRUPT : rc,
                       "namespace %s: read raft position of LSN %llu: %s", ns->name,
                       (unsigned long long)last, ud_strerror(rc));
    return 0;
}

void ud_ns_last_raft_position(struct ud_ns *ns, uint64_t *index, uint32_t *pos)
{
    pthread_mutex_lock(&ns->apply_lock);
    *index = ns->raft_index;
    *pos = ns->raft_pos;
    pthread_mutex_unlock(&ns->apply_lock);
}

int ud_ns_raft_position_at(struct ud_ns *ns, uint64_t lsn, uint64_t *index, uint32_t *pos)
{
    struct ud_wal_reader *r;
    int rc = ud_wal_reader_open(ns->wal, lsn, UD_WAL_READ_UNDURABLE, &r);
    if (rc != 0)
        return rc;
    const uint8_t *data;
    uint32_t len;
    uint64_t got;
    rc = ud_wal_reader_next(r, &data, &len, &got);
    if (rc == 0 && (got != lsn || len < UD_RECORD_HEADER_SIZE))
        rc = UD_ECORRUPT;
    if (rc == 0) {
        *index = ud_record_get_raft_index(data);
        *pos = ud_record_get_raft_pos(data);
    }
    ud_wal_reader_close(r);
    return rc;
}

int ud_ns_lsn_of_raft_position(struct ud_ns *ns, uint64_t index, uint32_t pos, uint64_t *lsn)
{
    uint64_t lo = ud_wal_first_lsn(ns->wal), hi = ud_wal_last_lsn(ns->wal);
    if (hi == 0 || lo > hi)
        return UD_EGONE;
    uint64_t first_index;
    uint32_t first_pos;
    int frc = ud_ns_raft_position_at(ns, lo, &first_index, &first_pos);
    if (frc != 0)
        return frc == UD_EAGAIN || frc == UD_ERANGE ? UD_EGONE : frc;
    if (index < first_index || (index == first_index && pos < first_pos))
        return UD_EGONE;
    while (lo <= hi) {
        uint64_t mid = lo + (hi - lo) / 2, ri;
        uint32_t rp;
        int rc = ud_ns_raft_position_at(ns, mid, &ri, &rp);
        if (rc != 0) /* not "refused": what cannot be read may have applied */
            return rc == UD_EAGAIN || rc == UD_ERANGE ? UD_EGONE : rc;
        if (ri == index && rp == pos) {
            *lsn = mid;
            return 0;
        }
        if (ri < index || (ri == index && rp < pos))
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return UD_ENOTFOUND;
}
