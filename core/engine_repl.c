/* Engine, replication side: stream readers, the stream listener, the followers' retention floor
 * and snapshot copies (docs/replication.md). */
#include "core/engine_int.h"

int ud_ns_stream_open(struct ud_ns *ns, uint64_t from_lsn, struct ud_wal_reader **out)
{
    return ud_wal_reader_open(ns->wal, from_lsn, UD_WAL_READ_TRUSTED, out);
}

uint64_t ud_ns_incarnation(const struct ud_ns *ns)
{
    return ud_store_incarnation(ns->store);
}

int ud_ns_stamp_incarnation(struct ud_ns *ns, uint64_t incarnation, char *errmsg)
{
    return ud_store_stamp_incarnation(ns->store, incarnation, errmsg);
}

uint64_t ud_ns_durable_lsn(struct ud_ns *ns)
{
    return ud_wal_durable_lsn(ns->wal);
}

void ud_ns_stream_range(struct ud_ns *ns, uint64_t *first_lsn, uint64_t *visible_lsn)
{
    *first_lsn = ud_wal_first_lsn(ns->wal);
    *visible_lsn = ud_wal_visible_lsn(ns->wal);
}

void ud_ns_set_stream_listener(struct ud_ns *ns, void (*fn)(void *arg, uint64_t lsn), void *arg)
{
    ud_wal_set_listener(ns->wal, fn, arg);
}

void ud_ns_set_retain_floor(struct ud_ns *ns, uint64_t lsn)
{
    __atomic_store_n(&ns->retain_floor, lsn, __ATOMIC_RELEASE);
}

uint64_t ud_ns_retain_floor(struct ud_ns *ns)
{
    return __atomic_load_n(&ns->retain_floor, __ATOMIC_ACQUIRE);
}

int ud_ns_checkpoint(struct ud_ns *ns, struct ud_checkpoint *cp, char *errmsg)
{
    int rc = ud_store_read_checkpoint(ns->store, cp, errmsg);
    return rc != 0 ? ud_errwrap(errmsg, rc, "namespace %s: read checkpoint", ns->name) : 0;
}

int ud_ns_snapshot_copy(struct ud_ns *ns, int fd, char *errmsg)
{
    int rc = ud_store_copy_fd(ns->store, fd, 1, errmsg);
    return rc != 0 ? ud_errwrap(errmsg, rc, "namespace %s: snapshot", ns->name) : 0;
}
