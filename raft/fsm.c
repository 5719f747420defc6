/* The writer's raft FSM: committed commands -> ud_ns_apply on every namespace, snapshot metadata.
 */
#include "raft/fsm.h"

#include <raft.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/endian.h"
#include "core/log.h"
#include "proto/command.h"
#include "proto/record.h"

#define LOG "raft"

/* Offsets in the record header (proto/record.h). */
#define RECORD_HLC_OFFSET        16
#define RECORD_RAFT_INDEX_OFFSET 24
#define RECORD_RAFT_POS_OFFSET   32

/* Snapshot metadata layout (docs/raft.md "Snapshots"). */
#define SNAPSHOT_VERSION     1
#define SNAPSHOT_HEADER_SIZE 16
#define SNAPSHOT_NS_FIXED    (1 + 8 + 8 + 4)

struct ud_fsm {
    struct raft_fsm rf; /* rf.data = this */
    struct raft *raft;  /* borrowed */
    struct ud_registry *reg;
    struct ud_fsm_result res;
    size_t cap_records;
    size_t cap_msgs;
    uint8_t *scratch; /* owned: the record being stamped and applied */
    size_t cap_scratch;
    struct ud_fsm_stats stats;
    int err; /* UD_E* code of the last failure of a raft hook, errmsg its message */
    char errmsg[UD_ERRMSG_SIZE];
};

const char *ud_fsm_result_msg(const struct ud_fsm_result *res, size_t i)
{
    if (i >= res->nrecords || res->records[i].msg < 0 || (size_t)res->records[i].msg >= res->nmsgs)
        return "";
    return res->msgs[res->records[i].msg];
}

/*
 * Outcomes that follow from the replicated state alone, so every writer reaches the same one: they
 * are recorded and the entry goes on. Anything else (I/O, a full disk, memory) is this node's
 * problem and must not turn into a different outcome here than on the others.
 */
static int deterministic(int rc)
{
    switch (rc) {
    case UD_ECORRUPT:
    case UD_EINVAL:
    case UD_ELIMIT:
    case UD_ENOTFOUND:
    case UD_EEXIST:
    case UD_ETXN:
    case UD_ERANGE:
    case UD_ECONFLICT:
        return 1;
    default:
        return 0;
    }
}

static int grow(void **p, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap)
        return 0;
    size_t n = *cap ? *cap : 64;
    while (n < need)
        n *= 2;
    void *q = realloc(*p, n * size);
    if (q == NULL)
        return UD_ENOMEM;
    *p = q;
    *cap = n;
    return 0;
}

static void set_rejected(struct ud_fsm *fsm, size_t i, int status, const char *msg)
{
    struct ud_fsm_result *res = &fsm->res;
    res->records[i].lsn = 0;
    res->records[i].status = status;
    res->records[i].msg = -1;
    if (grow((void **)&res->msgs, &fsm->cap_msgs, res->nmsgs + 1, sizeof *res->msgs) == 0) {
        snprintf(res->msgs[res->nmsgs], sizeof res->msgs[0], "%s", msg);
        res->records[i].msg = (int32_t)res->nmsgs++;
    }
    fsm->stats.rejected++;
}

/* Applies the records of one group; *pos and *ri advance over all of them. */
static int apply_group(struct ud_fsm *fsm, uint64_t index, const struct ud_command_group *g,
                       uint32_t *pos, size_t *ri)
{
    struct ud_fsm_result *res = &fsm->res;
    struct ud_command_iter it;
    const uint8_t *rec;
    size_t len;
    struct ud_ns *ns = NULL;
    int rc = ud_registry_acquire(fsm->reg, g->ns, &ns);
    if (rc != 0) {
        char msg[UD_ERRMSG_SIZE];
        snprintf(msg, sizeof msg, "namespace not found: %s", g->ns);
        for (uint32_t i = 0; i < g->nrecords; i++, (*pos)++, (*ri)++)
            set_rejected(fsm, *ri, UD_ENOTFOUND, msg);
        return 0;
    }
    uint64_t last_index;
    uint32_t last_pos;
    ud_ns_last_raft_position(ns, &last_index, &last_pos);
    ud_command_group_iter_init(&it, g);
    rc = 0;
    while (ud_command_next_record(&it, &rec, &len)) {
        uint32_t p = (*pos)++;
        size_t i = (*ri)++;
        /* Already in the WAL: raft replays its log after a restart (or retries this entry after
         * a storage failure) and the namespace recovered it from its own log. */
        if (index < last_index || (index == last_index && p <= last_pos)) {
            fsm->stats.skipped++;
            continue;
        }
        if (grow((void **)&fsm->scratch, &fsm->cap_scratch, len, 1) != 0) {
            rc = ud_errf(res->errmsg, UD_ENOMEM, "raft entry %llu: out of memory",
                         (unsigned long long)index);
            break;
        }
        /* A copy: raft keeps the entry's buffer to send to followers. */
        memcpy(fsm->scratch, rec, len);
        ud_put_le64(fsm->scratch + RECORD_RAFT_INDEX_OFFSET, index);
        ud_put_le32(fsm->scratch + RECORD_RAFT_POS_OFFSET, p);
        uint64_t lsn = 0;
        char msg[UD_ERRMSG_SIZE] = "";
        int arc = ud_ns_apply(ns, fsm->scratch, len, &lsn, msg);
        if (arc == 0) {
            res->records[i].lsn = lsn;
            res->records[i].status = 0;
            res->records[i].msg = -1;
            last_index = index;
            last_pos = p;
            fsm->stats.applied++;
            uint64_t hlc = ud_get_le64(fsm->scratch + RECORD_HLC_OFFSET);
            if (hlc > fsm->stats.max_hlc)
                fsm->stats.max_hlc = hlc;
        } else if (deterministic(arc)) {
            set_rejected(fsm, i, arc, msg);
        } else {
            rc = ud_errf(res->errmsg, arc, "raft entry %llu: namespace %s: record %u: %s",
                         (unsigned long long)index, g->ns, p, msg);
            break;
        }
    }
    ud_registry_release(fsm->reg, ns);
    return rc;
}

static int apply_records(struct ud_fsm *fsm, uint64_t index, const struct ud_command *cmd,
                         int retry)
{
    struct ud_fsm_result *res = &fsm->res;
    if (grow((void **)&res->records, &fsm->cap_records, cmd->nrecords, sizeof *res->records) != 0)
        return ud_errf(res->errmsg, UD_ENOMEM, "raft entry %llu: out of memory for %u results",
                       (unsigned long long)index, cmd->nrecords);
    /* A retried entry keeps the outcomes of the records its first attempt applied. */
    if (!retry || res->nrecords != cmd->nrecords) {
        for (uint32_t i = 0; i < cmd->nrecords; i++)
            res->records[i] = (struct ud_fsm_record_result){.lsn = 0, .status = 0, .msg = -1};
        res->nrecords = cmd->nrecords;
    }
    struct ud_command_iter it;
    struct ud_command_group g;
    uint32_t pos = 0;
    size_t ri = 0;
    ud_command_iter_init(&it, cmd);
    while (ud_command_next_group(&it, &g)) {
        int rc = apply_group(fsm, index, &g, &pos, &ri);
        if (rc != 0)
            return rc;
    }
    return 0;
}

int ud_fsm_apply(struct ud_fsm *fsm, uint64_t index, const uint8_t *buf, size_t len,
                 const struct ud_fsm_result **out)
{
    struct ud_fsm_result *res = &fsm->res;
    int retry = res->raft_index == index;
    if (!retry) {
        res->raft_index = index;
        res->nrecords = 0;
        res->nmsgs = 0;
    }
    res->kind = 0;
    res->status = 0;
    res->errmsg[0] = '\0';
    *out = res;

    struct ud_command cmd;
    char err[UD_ERRMSG_SIZE] = "";
    int rc = ud_command_decode(buf, len, &cmd, err);
    if (rc != 0) {
        /* Every writer decodes the same bytes the same way: a rejection, not a failure. */
        res->status = ud_errf(res->errmsg, UD_ECORRUPT, "raft entry %llu does not decode: %s",
                              (unsigned long long)index, err);
        ud_error(LOG, "%s", res->errmsg);
        fsm->stats.entries++;
        return 0;
    }
    res->kind = cmd.kind;
    switch (cmd.kind) {
    case UD_COMMAND_RECORDS:
        rc = apply_records(fsm, index, &cmd, retry);
        break;
    case UD_COMMAND_NS_CREATE:
        /* Replaying a create after a restart meets the namespace already there: UD_EEXIST, and
         * the result goes to no one. */
        rc = ud_registry_create(fsm->reg, cmd.ns, res->errmsg);
        if (deterministic(rc)) {
            res->status = rc;
            rc = 0;
        }
        break;
    default: /* UD_COMMAND_NS_DELETE */
        rc = ud_registry_delete(fsm->reg, cmd.ns, res->errmsg);
        /* The namespace is gone from the registry even when removing its files failed: the
         * outcome is the same everywhere, only leftover files differ. */
        if (rc != 0 && !deterministic(rc))
            ud_error(LOG, "raft entry %llu: delete namespace %s: %s", (unsigned long long)index,
                     cmd.ns, res->errmsg);
        res->status = rc;
        rc = 0;
        break;
    }
    if (rc != 0) {
        ud_error(LOG, "apply stopped: %s", res->errmsg);
        return rc;
    }
    fsm->stats.entries++;
    return 0;
}

/* --- snapshots ---------------------------------------------------------------------------------
 */

struct ns_list {
    char (*names)[UD_NS_NAME_MAX + 1];
    size_t n, cap;
    int err;
};

static void collect_name(void *arg, const char *name)
{
    struct ns_list *l = arg;
    if (l->err != 0)
        return;
    if (grow((void **)&l->names, &l->cap, l->n + 1, sizeof *l->names) != 0) {
        l->err = UD_ENOMEM;
        return;
    }
    snprintf(l->names[l->n++], sizeof l->names[0], "%s", name);
}

int ud_fsm_snapshot(struct ud_fsm *fsm, uint64_t index, uint8_t **out, size_t *out_len,
                    char *errmsg)
{
    struct ns_list l = {0};
    ud_registry_list(fsm->reg, collect_name, &l);
    if (l.err != 0) {
        free(l.names);
        return ud_errf(errmsg, UD_ENOMEM, "snapshot: out of memory listing namespaces");
    }
    size_t cap = SNAPSHOT_HEADER_SIZE + l.n * (SNAPSHOT_NS_FIXED + UD_NS_NAME_MAX);
    uint8_t *buf = malloc(cap);
    if (buf == NULL) {
        free(l.names);
        return ud_errf(errmsg, UD_ENOMEM, "snapshot: out of memory");
    }
    size_t len = SNAPSHOT_HEADER_SIZE;
    uint32_t count = 0;
    for (size_t i = 0; i < l.n; i++) {
        struct ud_ns *ns;
        if (ud_registry_acquire(fsm->reg, l.names[i], &ns) != 0)
            continue; /* deleted meanwhile (not by the FSM: it runs on this thread) */
        struct ud_ns_stats st;
        uint64_t ri;
        uint32_t rp;
        ud_ns_stats(ns, &st);
        ud_ns_last_raft_position(ns, &ri, &rp);
        ud_registry_release(fsm->reg, ns);
        size_t n = strlen(l.names[i]);
        buf[len] = (uint8_t)n;
        memcpy(buf + len + 1, l.names[i], n);
        len += 1 + n;
        ud_put_le64(buf + len, st.last_lsn);
        ud_put_le64(buf + len + 8, ri);
        ud_put_le32(buf + len + 16, rp);
        len += 20;
        count++;
    }
    free(l.names);
    buf[0] = SNAPSHOT_VERSION;
    buf[1] = buf[2] = buf[3] = 0;
    ud_put_le32(buf + 4, count);
    ud_put_le64(buf + 8, index);
    *out = buf;
    *out_len = len;
    fsm->stats.snapshots++;
    return 0;
}

int ud_fsm_snapshot_sync(struct ud_fsm *fsm, const uint8_t *buf, size_t len, char *errmsg)
{
    if (len < SNAPSHOT_HEADER_SIZE)
        return ud_errf(errmsg, UD_ECORRUPT, "snapshot metadata of %zu bytes", len);
    uint32_t count = ud_get_le32(buf + 4);
    size_t off = SNAPSHOT_HEADER_SIZE;
    for (uint32_t i = 0; i < count; i++) {
        if (len - off < 1 || len - off - 1 < (size_t)buf[off] + 20)
            return ud_errf(errmsg, UD_ECORRUPT, "snapshot metadata: namespace %u is malformed", i);
        char name[UD_NS_NAME_MAX + 1];
        size_t n = buf[off];
        memcpy(name, buf + off + 1, n);
        name[n] = '\0';
        off += 1 + n + 20;
        struct ud_ns *ns;
        if (ud_registry_acquire(fsm->reg, name, &ns) != 0)
            continue; /* deleted since: its records went with it */
        int rc = ud_ns_sync(ns, errmsg);
        ud_registry_release(fsm->reg, ns);
        if (rc != 0)
            return ud_errwrap(errmsg, rc, "snapshot at raft index %llu",
                              (unsigned long long)ud_get_le64(buf + 8));
    }
    return 0;
}

/* Walks the snapshot's namespace table: validates it all (check == 0), or compares each entry
 * with local state (check == 1; the table is known to be well formed). */
static int restore_walk(struct ud_fsm *fsm, const uint8_t *buf, size_t len, int check, char *errmsg)
{
    uint32_t count = ud_get_le32(buf + 4);
    uint64_t index = ud_get_le64(buf + 8);
    size_t off = SNAPSHOT_HEADER_SIZE;
    for (uint32_t i = 0; i < count; i++) {
        if (len - off < 1 || len - off - 1 < (size_t)buf[off] + 20 ||
            !ud_command_name_valid((const char *)buf + off + 1, buf[off]))
            return ud_errf(errmsg, UD_ECORRUPT,
                           "raft snapshot metadata: namespace %u at byte %zu is malformed", i, off);
        char name[UD_NS_NAME_MAX + 1];
        size_t n = buf[off];
        memcpy(name, buf + off + 1, n);
        name[n] = '\0';
        off += 1 + n;
        uint64_t lsn = ud_get_le64(buf + off);
        off += 20;
        if (!check)
            continue;
        struct ud_ns *ns;
        uint64_t have = 0;
        int found = ud_registry_acquire(fsm->reg, name, &ns) == 0;
        if (found) {
            struct ud_ns_stats st;
            ud_ns_stats(ns, &st);
            have = st.last_lsn;
            ud_registry_release(fsm->reg, ns);
        }
        if (!found)
            return ud_errf(errmsg, UD_ERANGE,
                           "raft snapshot at index %llu needs namespace %s at LSN %llu, which "
                           "this node does not have: out-of-band catch-up from a peer is needed "
                           "(not supported yet)",
                           (unsigned long long)index, name, (unsigned long long)lsn);
        if (have < lsn)
            return ud_errf(errmsg, UD_ERANGE,
                           "raft snapshot at index %llu needs namespace %s at LSN %llu but this "
                           "node holds LSN %llu: out-of-band catch-up from a peer is needed (not "
                           "supported yet)",
                           (unsigned long long)index, name, (unsigned long long)lsn,
                           (unsigned long long)have);
    }
    if (off != len)
        return ud_errf(errmsg, UD_ECORRUPT, "raft snapshot metadata: %zu trailing bytes",
                       len - off);
    return 0;
}

int ud_fsm_restore(struct ud_fsm *fsm, const uint8_t *buf, size_t len, char *errmsg)
{
    if (len < SNAPSHOT_HEADER_SIZE || buf[0] != SNAPSHOT_VERSION || buf[1] || buf[2] || buf[3])
        return ud_errf(errmsg, UD_ECORRUPT, "raft snapshot metadata of %zu bytes: bad header", len);
    int rc = restore_walk(fsm, buf, len, 0, errmsg);
    return rc != 0 ? rc : restore_walk(fsm, buf, len, 1, errmsg);
}

/* --- raft hooks ------------------------------------------------------------------------------- */

static int apply_hook(struct raft_fsm *rf, const struct raft_buffer *buf, void **result)
{
    struct ud_fsm *fsm = rf->data;
    UD_ASSERT(fsm->raft != NULL);
    const struct ud_fsm_result *res;
    int rc = ud_fsm_apply(fsm, raft_last_applied(fsm->raft) + 1, buf->base, buf->len, &res);
    if (rc != 0) {
        fsm->err = rc;
        snprintf(fsm->errmsg, sizeof fsm->errmsg, "%s", res->errmsg);
        return rc == UD_ENOSPC ? RAFT_NOSPACE : rc == UD_ENOMEM ? RAFT_NOMEM : RAFT_IOERR;
    }
    /* Borrowed by raft's apply callback, which runs right after this returns (raft 0.15
     * applyCommand); on followers no one reads it, so nothing is allocated per entry. */
    *result = (void *)res;
    return 0;
}

/* Loop thread: the metadata, as of the index raft records for this snapshot (takeSnapshot uses
 * last_applied). Cheap: no I/O. */
static int snapshot_hook(struct raft_fsm *rf, struct raft_buffer *bufs[], unsigned *n_bufs)
{
    struct ud_fsm *fsm = rf->data;
    uint8_t *meta;
    size_t len;
    int rc = ud_fsm_snapshot(fsm, raft_last_applied(fsm->raft), &meta, &len, fsm->errmsg);
    if (rc != 0) {
        fsm->err = rc;
        ud_error(LOG, "%s; raft keeps its log and retries later", fsm->errmsg);
        return RAFT_BUSY; /* raft 0.15 treats BUSY as "try again next time" */
    }
    struct raft_buffer *b = raft_malloc(sizeof *b);
    void *base = raft_malloc(len);
    if (b == NULL || base == NULL) {
        raft_free(b);
        raft_free(base);
        free(meta);
        return RAFT_NOMEM;
    }
    memcpy(base, meta, len);
    free(meta);
    b->base = base;
    b->len = len;
    *bufs = b;
    *n_bufs = 1;
    return 0;
}

/*
 * Worker thread (raft's async work), before raft stores the snapshot and truncates its log behind
 * it: from then on the WALs are the only copy of those records, and the writer's WALs run without
 * per-record fsync. One fsync per namespace would stall the loop, so it happens here; a failure
 * means no snapshot this time (raft keeps its log).
 */
static int snapshot_async_hook(struct raft_fsm *rf, struct raft_buffer *bufs[], unsigned *n_bufs)
{
    struct ud_fsm *fsm = rf->data;
    char errmsg[UD_ERRMSG_SIZE] = "";
    UD_ASSERT(*n_bufs == 1);
    int rc = ud_fsm_snapshot_sync(fsm, (*bufs)[0].base, (*bufs)[0].len, errmsg);
    if (rc != 0) {
        ud_error(LOG, "%s; raft keeps its log", errmsg);
        return RAFT_IOERR;
    }
    return 0;
}

static int restore_hook(struct raft_fsm *rf, struct raft_buffer *buf)
{
    struct ud_fsm *fsm = rf->data;
    int rc = ud_fsm_restore(fsm, buf->base, buf->len, fsm->errmsg);
    if (rc != 0) {
        fsm->err = rc;
        ud_error(LOG, "restore: %s", fsm->errmsg);
        /* On failure raft 0.15 frees the snapshot (and this buffer) itself. */
        return rc == UD_ECORRUPT ? RAFT_CORRUPT : RAFT_IOERR;
    }
    ud_info(LOG, "raft snapshot restored: local state is at or beyond it, nothing to load");
    raft_free(buf->base);
    return 0;
}

/* --- lifecycle -------------------------------------------------------------------------------- */

int ud_fsm_init(struct ud_registry *reg, struct ud_fsm **out, char *errmsg)
{
    struct ud_fsm *fsm = calloc(1, sizeof *fsm);
    if (fsm == NULL)
        return ud_errf(errmsg, UD_ENOMEM, "out of memory creating the raft FSM");
    fsm->reg = reg;
    /* Version 3 for snapshot_async (set by ud_fsm_attach); snapshot_finalize stays NULL, so raft
     * frees the snapshot buffers. */
    fsm->rf.version = 3;
    fsm->rf.data = fsm;
    fsm->rf.apply = apply_hook;
    fsm->rf.snapshot = snapshot_hook;
    fsm->rf.restore = restore_hook;
    fsm->rf.snapshot_finalize = NULL;
    fsm->rf.snapshot_async = NULL;
    *out = fsm;
    return 0;
}

void ud_fsm_close(struct ud_fsm *fsm)
{
    if (fsm == NULL)
        return;
    free(fsm->res.records);
    free(fsm->res.msgs);
    free(fsm->scratch);
    free(fsm);
}

struct raft_fsm *ud_fsm_raft(struct ud_fsm *fsm)
{
    return &fsm->rf;
}

void ud_fsm_attach(struct ud_fsm *fsm, struct raft *r)
{
    fsm->raft = r;
    /*
     * raft 0.15's raft_init refuses an FSM with snapshot_async unless io->version >= 2, and
     * neither raft_uv nor the fixture report 2 although both implement async_work (uv_queue_work
     * in raft_uv). raft reads the hook when it takes a snapshot, so it is set after raft_init.
     */
    fsm->rf.snapshot_async = snapshot_async_hook;
}

void ud_fsm_stats(const struct ud_fsm *fsm, struct ud_fsm_stats *st)
{
    *st = fsm->stats;
}

int ud_fsm_error(const struct ud_fsm *fsm, const char **errmsg)
{
    *errmsg = fsm->err != 0 ? fsm->errmsg : "";
    return fsm->err;
}
