#include "relayer/incarnation.h"

enum ud_incarnation_verdict ud_incarnation_vs_stream(uint64_t copy, int said, uint64_t upstream)
{
    if (!said || upstream == copy)
        return UD_INCARNATION_SAME;
    return upstream > copy ? UD_INCARNATION_NEWER : UD_INCARNATION_BEHIND;
}

enum ud_incarnation_verdict ud_incarnation_vs_deleted(uint64_t copy, uint64_t deleted_at)
{
    return deleted_at > copy ? UD_INCARNATION_NEWER : UD_INCARNATION_BEHIND;
}

int ud_incarnation_copy_is_of(uint64_t created, uint64_t newest_raft_index)
{
    return created != 0 && newest_raft_index > created;
}

int ud_incarnation_copy_continues(uint64_t created, uint64_t newest_raft_index,
                                  uint64_t first_raft_index)
{
    return ud_incarnation_copy_is_of(created, newest_raft_index) &&
           first_raft_index >= newest_raft_index;
}
