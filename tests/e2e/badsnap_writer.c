/* Test build of unison-writer to which the leader's raft snapshots do not decode on command. */

/*
 * unison-writer-badsnap is unison-writer's own objects linked with this file and
 * -Wl,--wrap=ud_fsm_attach (tests/e2e/meson.build), as unison-writer-nospace is: nothing in the
 * product changes. While the file named by UD_BADSNAP_FLAG exists, the restore of a snapshot the
 * leader sends (an InstallSnapshot, while raft runs; not the stored one raft loads at its start)
 * sees format version 9 in its first byte, as from a leader of a newer format or a corrupted
 * transfer: the FSM's restore check then refuses the bytes as undecodable.
 */
#include <raft.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "raft/fsm.h"

void __real_ud_fsm_attach(struct ud_fsm *fsm, struct raft *r);
void __wrap_ud_fsm_attach(struct ud_fsm *fsm, struct raft *r);

static int (*restore_of_fsm)(struct raft_fsm *fsm, struct raft_buffer *buf);
static struct raft *attached;

static int garbled_restore(struct raft_fsm *fsm, struct raft_buffer *buf)
{
    const char *flag = getenv("UD_BADSNAP_FLAG");
    if (flag != NULL && access(flag, F_OK) == 0 && raft_state(attached) != RAFT_UNAVAILABLE &&
        buf->len > 0) {
        ((unsigned char *)buf->base)[0] = 9;
        fprintf(stderr, "bad-snapshot test build: the leader's snapshot gets version byte 9\n");
    }
    return restore_of_fsm(fsm, buf);
}

void __wrap_ud_fsm_attach(struct ud_fsm *fsm, struct raft *r)
{
    __real_ud_fsm_attach(fsm, r);
    struct raft_fsm *rf = ud_fsm_raft(fsm);
    if (rf->restore != garbled_restore) {
        restore_of_fsm = rf->restore;
        rf->restore = garbled_restore;
    }
    attached = r;
    const char *flag = getenv("UD_BADSNAP_FLAG");
    fprintf(stderr,
            "bad-snapshot test build: the leader's snapshots do not decode while %s exists\n",
            flag != NULL ? flag : "(UD_BADSNAP_FLAG unset)");
}
