/* Read-only queries over a namespace's open transactions, for the serving layers. */
#include <string.h>

#include "core/engine_int.h"

static void describe(const struct ud_txn *t, struct ud_txn_info *info)
{
    memset(info, 0, sizeof *info);
    info->op = t->op;
    info->entry_type = t->type;
    info->begin_lsn = t->begin_lsn;
    info->last_lsn = t->last_lsn;
    info->bytes = t->bytes;
    /* A LOB transaction holds chunk references, not parts: count those so that callers see
     * progress for every entry type. */
    info->parts = (uint32_t)(t->type == UD_ENTRY_LOB ? t->nchunks : t->nparts);
    if (t->lob_key != NULL) {
        info->lob_key_len = t->lob_key_len;
        memcpy(info->lob_key, t->lob_key, t->lob_key_len);
    }
}

int ud_ns_txn_info(struct ud_ns *ns, const uint8_t id[16], struct ud_txn_info *info)
{
    pthread_mutex_lock(&ns->apply_lock);
    struct ud_txn *t = ud_ns_txn_find(ns, id);
    if (t != NULL)
        describe(t, info);
    pthread_mutex_unlock(&ns->apply_lock);
    return t != NULL ? 0 : UD_ENOTFOUND;
}

size_t ud_ns_txn_list(struct ud_ns *ns,
                      void (*fn)(void *arg, const uint8_t id[16], const struct ud_txn_info *info),
                      void *arg)
{
    /* fn runs under the apply lock (it must not call back into the namespace, as the header
     * says); a snapshot copy would cost an allocation per call for no gain. */
    pthread_mutex_lock(&ns->apply_lock);
    size_t n = ns->ntxns;
    for (size_t i = 0; i < n; i++) {
        struct ud_txn_info info;
        describe(ns->txns[i], &info);
        fn(arg, ns->txns[i]->id, &info);
    }
    pthread_mutex_unlock(&ns->apply_lock);
    return n;
}
