/* Recovery: replays the WAL after the LMDB checkpoint through the apply function (docs/engine.md
 * "Recovery"). */
#include "core/engine_int.h"
#include "core/err.h"
#include "core/log.h"

int ud_ns_replay(struct ud_ns *ns, const struct ud_checkpoint *cp, char *errmsg)
{
    uint64_t first = ud_wal_first_lsn(ns->wal);
    uint64_t last = ud_wal_last_lsn(ns->wal);
    uint64_t ckpt = cp->flushed_lsn;
    /* Appending after a WAL that ends before the checkpoint would reuse LSNs the store holds. */
    if (last < ckpt)
        return ud_errf(errmsg, UD_ECORRUPT,
                       "namespace %s: the WAL ends at LSN %llu but the store's checkpoint is "
                       "LSN %llu: LSNs %llu..%llu are missing from the WAL",
                       ns->name, (unsigned long long)last, (unsigned long long)ckpt,
                       (unsigned long long)last + 1, (unsigned long long)ckpt);
    uint64_t from = ckpt + 1;
    for (uint32_t i = 0; i < cp->txn_count; i++)
        if (cp->txns[i].first_lsn < from)
            from = cp->txns[i].first_lsn;
    if (from < first)
        return ud_errf(errmsg, UD_ECORRUPT,
                       "namespace %s: recovery needs the WAL from LSN %llu (checkpoint %llu, "
                       "%u open transactions) but it starts at LSN %llu: LSNs %llu..%llu are "
                       "missing",
                       ns->name, (unsigned long long)from, (unsigned long long)ckpt, cp->txn_count,
                       (unsigned long long)first, (unsigned long long)from,
                       (unsigned long long)first - 1);
    ns->last_lsn = from - 1;
    if (from > last) {
        ns->last_lsn = last;
        return 0;
    }
    struct ud_wal_reader *r;
    int rc = ud_wal_reader_open(ns->wal, from, UD_WAL_READ_UNDURABLE, &r);
    if (rc != 0)
        return ud_errf(errmsg, rc, "namespace %s: open WAL reader at LSN %llu: %s", ns->name,
                       (unsigned long long)from, ud_strerror(rc));
    ns->replay_cp = cp;
    uint64_t replayed = 0;
    pthread_mutex_lock(&ns->apply_lock);
    while (ns->last_lsn < last) {
        const uint8_t *data;
        uint32_t len;
        uint64_t lsn;
        rc = ud_wal_reader_next(r, &data, &len, &lsn);
        if (rc != 0) {
            rc = ud_errf(errmsg, rc == UD_EAGAIN ? UD_ECORRUPT : rc,
                         "namespace %s: replay stopped at LSN %llu of %llu: %s", ns->name,
                         (unsigned long long)ns->last_lsn + 1, (unsigned long long)last,
                         ud_strerror(rc));
            break;
        }
        UD_ASSERT(lsn == ns->last_lsn + 1);
        enum ud_apply_mode mode = lsn <= ckpt ? UD_APPLY_REPLAY_TXN : UD_APPLY_REPLAY;
        char why[UD_ERRMSG_SIZE] = "";
        rc = ud_ns_apply_core(ns, mode, data, len, NULL, NULL, why);
        if (rc != 0) {
            /* The WAL holds only records that were accepted; a rejection means the log and the
             * store disagree, which must not be papered over. */
            rc = ud_errf(errmsg, UD_ECORRUPT, "namespace %s: replay of LSN %llu rejected: %s",
                         ns->name, (unsigned long long)lsn, why);
            break;
        }
        replayed++;
        /* Bounded memory while replaying a long log (the flush thread never waits for the
         * apply lock, so waiting here is safe). */
        ud_ns_throttle(ns);
    }
    pthread_mutex_unlock(&ns->apply_lock);
    ns->replay_cp = NULL;
    ud_wal_reader_close(r);
    if (rc == 0)
        ud_info(UD_ENGINE_LOG,
                "namespace %s: recovered to LSN %llu (checkpoint %llu, %llu records replayed, "
                "%zu open transactions)",
                ns->name, (unsigned long long)ns->last_lsn, (unsigned long long)ckpt,
                (unsigned long long)replayed, ns->ntxns);
    return rc;
}
