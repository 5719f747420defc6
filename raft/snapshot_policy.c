#include "raft/snapshot_policy.h"

#include <stdlib.h>
#include <string.h>

#include "core/err.h"

int ud_snapshot_policy_init(struct ud_snapshot_policy *p, uint32_t max_entries, uint64_t max_bytes,
                            uint32_t max_trailing, uint64_t trailing_bytes)
{
    memset(p, 0, sizeof *p);
    p->max_entries = max_entries;
    p->max_bytes = max_bytes;
    p->max_trailing = max_trailing;
    p->trailing_bytes = trailing_bytes;
    if (max_trailing > 0 && trailing_bytes > 0) {
        p->sizes = calloc(max_trailing, sizeof *p->sizes);
        if (p->sizes == NULL)
            return UD_ENOMEM;
    }
    return 0;
}

void ud_snapshot_policy_free(struct ud_snapshot_policy *p)
{
    free(p->sizes);
    p->sizes = NULL;
}

int ud_snapshot_policy_applied(struct ud_snapshot_policy *p, size_t len)
{
    uint32_t size = len > UINT32_MAX ? UINT32_MAX : (uint32_t)len;
    if (p->sizes != NULL) {
        p->sizes[p->next] = size;
        p->next = (p->next + 1) % p->max_trailing;
        if (p->count < p->max_trailing)
            p->count++;
    }
    p->bytes += size;
    return p->max_bytes > 0 && p->bytes >= p->max_bytes;
}

uint32_t ud_snapshot_policy_taken(struct ud_snapshot_policy *p)
{
    p->bytes = 0;
    if (p->sizes == NULL)
        return p->max_trailing;
    /* The newest entries whose sizes fit, walking back from the latest. Entries raft logs without
     * applying them here (configuration changes, barriers) are small and not in the ring: raft
     * keeps a few entries fewer than counted, never more bytes. */
    uint64_t sum = 0;
    uint32_t keep = 0, at = p->next;
    /* At least the newest entry, whatever its size: a follower one entry behind must not need
     * an out-of-band catch-up because one entry exceeded trailing_bytes. */
    if (p->count > 0 && p->max_trailing > 0) {
        at = at == 0 ? p->max_trailing - 1 : at - 1;
        sum = p->sizes[at];
        keep = 1;
    }
    while (keep < p->count) {
        at = at == 0 ? p->max_trailing - 1 : at - 1;
        if (sum + p->sizes[at] > p->trailing_bytes)
            break;
        sum += p->sizes[at];
        keep++;
    }
    return keep;
}
