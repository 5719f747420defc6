#!/usr/bin/env python3
"""End to end, a follower to which the leader's raft snapshot does not decode: three writers built
as unison-writer-badsnap (badsnap_writer.c: the product's objects; while a flag file exists, a
snapshot the leader sends reaches the restore check with format version 9, as from a leader of a
newer format or a corrupted transfer). The follower is cut off while the others commit past what
their logs keep; back, it gets the leader's snapshot, raft stores it and the restore refuses it.
The follower says so (log, /status/node, /readyz), closes raft (it neither votes nor leads), sets
the stored copy aside and starts raft again after a wait, which grows while the leader's snapshot
keeps not decoding; the others go on serving writes. Once the snapshot decodes again (the flag
removed) the follower catches up out of band and follows, with every acknowledged write; after a
stop every writer's WAL holds the same LSNs with byte-identical records. Before, such a follower
applied nothing more and served stale reads for good."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Failure, Suite, check, wait_for  # noqa: E402
from catchup_lib import Written, log_since_start, wait_rejoined  # noqa: E402
from cluster_lib import leader_of  # noqa: E402
from gated_cluster import GatedCluster, node_status  # noqa: E402

suite = Suite("cluster-undecodable")
written = Written()
cluster = GatedCluster(suite, "e2e-badsnap", "UD_BADSNAP_FLAG", "bad-snapshot",
                       "bad-snapshot test build", written)
nodes = cluster.nodes
state = {}


def write_everywhere(leader, prefix, count):
    for i in range(count):
        written.put(leader, "%s%d" % (prefix, i), os.urandom(300))
    for n in nodes:
        written.reads_back(n)


def start_cluster():
    write_everywhere(cluster.start(), "before", 20)


def follower_gets_an_undecodable_snapshot():
    leader = leader_of(nodes)
    follower = [n for n in nodes if n is not leader][0]
    state["leader"], state["follower"] = leader, follower
    open(cluster.flag(follower), "w").close()
    cluster.leave_behind(leader, follower)

    def refused():
        if not follower.alive():
            raise Failure("%s exited:\n%s" % (follower.name, follower.log_tail()), "raft")
        return "does not decode here" in log_since_start(follower)
    wait_for("%s refusing the leader's snapshot" % follower.name, refused, 30, 0.2)
    log = log_since_start(follower)
    check("format version 9" in log, "%s's log does not name the cause:\n%s" %
          (follower.name, follower.log_tail()), "raft")

    def reported():
        st = node_status(follower)
        return st.get("state") == "catching-up" and "does not decode" in st.get("catchingUp", "")
    wait_for("%s's /status/node saying why raft is closed" % follower.name, reported, 10, 0.1)
    r = follower.http().get("/readyz")
    check(r.status == 503 and b"does not decode" in r.body,
          "%s's /readyz while raft is closed: %d %r" % (follower.name, r.status, r.body), "http")
    print("    %s refused the leader's snapshot: %s" % (follower.name,
                                                        node_status(follower)["catchingUp"]))


def keeps_retrying_while_it_does_not_decode():
    leader, follower = state["leader"], state["follower"]
    aside = os.path.join(follower.data_dir, "raft-set-aside")

    def set_aside_again():
        if not follower.alive():
            raise Failure("%s exited:\n%s" % (follower.name, follower.log_tail()), "raft")
        log = log_since_start(follower)
        # The wait is logged when raft is closed for the refusal, a little after the refusal's
        # own line: count the waits, so that the second one's figure is there to check.
        return log.count("starts again without it, in ") >= 2 and log.count("moved to") >= 1
    wait_for("%s setting the snapshot aside and refusing the next one" % follower.name,
             set_aside_again, 30, 0.2)
    files = sorted(os.listdir(aside))
    check(len(files) == 2 and files[0].startswith("snapshot-") and files[1].endswith(".meta"),
          "%s holds %r" % (aside, files), "raft")
    log = log_since_start(follower)
    check("in 1000 ms" in log and "in 2000 ms" in log,
          "%s's waits before raft starts again do not grow:\n%s" % (follower.name,
                                                                   follower.log_tail()), "raft")
    # The others serve writes meanwhile; the follower does not have them.
    for i in range(10):
        written.put(leader, "meanwhile%d" % i, os.urandom(300))
    r = follower.http().get("/api/v1/default/kv/meanwhile9")
    check(r.status == 404, "%s serves a write it cannot have applied (%d)" %
          (follower.name, r.status), "raft")


def killed_once_it_refused():
    """Killed as soon as the restore hook recorded the refused snapshot (the node closes raft for
    it 20 ms later at the earliest, and may be killed before): the next start sets the snapshot
    aside all the same and raft starts without it, instead of failing on it."""
    follower = state["follower"]
    record = os.path.join(follower.data_dir, "raft-snapshot-undecodable")

    def alive():
        if not follower.alive():
            raise Failure("%s exited:\n%s" % (follower.name, follower.log_tail()), "raft")
        return True
    # The record of the last refusal goes when raft starts again; the next refusal writes it.
    wait_for("%s starting raft again" % follower.name,
             lambda: alive() and not os.path.exists(record), 90, 0.005)
    wait_for("%s refusing the leader's snapshot again" % follower.name,
             lambda: alive() and os.path.exists(record), 90, 0.002)
    after = log_since_start(follower).split("takes no more raft messages")[-1]
    closed = "a raft restart needed" in after
    follower.kill()
    cluster.start_node(follower)
    wait_for("%s setting the snapshot aside after the kill" % follower.name,
             lambda: alive() and "moved to" in log_since_start(follower), 30, 0.1)
    follower.wait_namespace("default", 30)
    print("    %s killed with the refusal recorded (%s raft was closed for it), started, set the "
          "snapshot aside" % (follower.name, "after" if closed else "before"))


def follows_once_it_decodes():
    follower = state["follower"]
    os.unlink(cluster.flag(follower))
    wait_rejoined(follower, timeout=90)
    written.reads_back(follower, timeout=30)
    write_everywhere(leader_of(nodes), "after", 10)
    print("    %s caught up and follows" % follower.name)


suite.run([start_cluster, follower_gets_an_undecodable_snapshot,
           keeps_retrying_while_it_does_not_decode, killed_once_it_refused,
           follows_once_it_decodes, cluster.wals_identical])
