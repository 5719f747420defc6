#!/usr/bin/env python3
"""End to end, a follower whose disk fills, without root: three writers built as
unison-writer-nospace (nospace_writer.c: the product's objects, whose namespace WALs cannot create
a segment while a flag file exists, as on a full disk). The follower's apply stops at the first
segment it cannot create and retries on its own; the cluster goes on committing, and the other
two serve every write; the follower serves what it applied and not more. Once space returns
(the flag removed) the follower applies the rest by itself, with no restart. Then its disk fills
again and it is cut off while the others commit past what their logs keep: back, it gets the
leader's snapshot while its apply is stalled, the restore fails (raft does not try it again), and
once space returns it closes raft, catches up and starts raft again by itself. After a stop every
writer's WAL holds the same LSNs with byte-identical records."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Failure, Suite, check, wait_for  # noqa: E402
from catchup_lib import Written, log_since_start, wait_rejoined  # noqa: E402
from cluster_lib import leader_of  # noqa: E402
from gated_cluster import GatedCluster  # noqa: E402

suite = Suite("cluster-full-follower")
written = Written()
# Small segments: a few dozen writes need a new one.
cluster = GatedCluster(suite, "e2e-full", "UD_NOSPACE_FLAG", "disk-full", "no-space test build",
                       written, args=["--set", "storage.segment_size=64KiB"])
nodes = cluster.nodes
VALUE = 1500
FULL_WRITES = 150  # about 3.5 segments


def write_everywhere(leader, prefix, count):
    """count acknowledged writes on leader, then each reads back on every writer."""
    for i in range(count):
        written.put(leader, "%s%d" % (prefix, i), os.urandom(VALUE))
    for n in nodes:
        written.reads_back(n)


def start_cluster():
    write_everywhere(cluster.start(), "before", 20)


def follower_disk_fills_and_empties():
    leader = leader_of(nodes)
    follower = [n for n in nodes if n is not leader][0]
    others = [n for n in nodes if n is not follower]
    flag = cluster.flag(follower)
    open(flag, "w").close()
    print("    %s's disk is full; %s leads" % (follower.name, leader.name))
    for i in range(FULL_WRITES):
        written.put(leader, "full%d" % i, os.urandom(VALUE))
    for n in others:
        written.reads_back(n)

    def stalled():
        if not follower.alive():
            raise Failure("%s exited:\n%s" % (follower.name, follower.log_tail()), "raft")
        log = log_since_start(follower)
        return "apply stopped" in log and "No space left on device" in log
    wait_for("%s's apply stopping on its full disk" % follower.name, stalled, 15, 0.2)
    last = "full%d" % (FULL_WRITES - 1)
    r = follower.http().get("/api/v1/default/kv/" + last)
    check(r.status == 404, "%s serves %s although its disk is full (%d)" %
          (follower.name, last, r.status), "raft")
    check(follower.http().get("/healthz").status == 200, "%s stopped answering /healthz" %
          follower.name, "http")

    os.unlink(flag)
    written.reads_back(follower, timeout=30)
    check("applying resumed" in log_since_start(follower),
          "%s's log does not show its apply resuming:\n%s" % (follower.name,
                                                             follower.log_tail()), "raft")
    write_everywhere(leader, "after", 10)
    check("catch-up round" not in log_since_start(follower),
          "%s closed raft for a catch-up although its log still held what it missed:\n%s" %
          (follower.name, follower.log_tail()), "raft")


def stalled_follower_gets_the_snapshot():
    leader = leader_of(nodes)
    follower = [n for n in nodes if n is not leader][0]
    flag = cluster.flag(follower)
    stops = log_since_start(follower).count("apply stopped")
    open(flag, "w").close()
    print("    %s's disk is full again; %s leads" % (follower.name, leader.name))
    for i in range(FULL_WRITES):
        written.put(leader, "again%d" % i, os.urandom(VALUE))
    wait_for("%s's apply stopping again" % follower.name,
             lambda: log_since_start(follower).count("apply stopped") > stops, 15, 0.2)
    cluster.leave_behind(leader, follower)

    def restore_failed():
        if not follower.alive():
            raise Failure("%s exited:\n%s" % (follower.name, follower.log_tail()), "raft")
        return " raft restore" in log_since_start(follower)
    wait_for("%s's restore of the leader's snapshot failing while stalled" % follower.name,
             restore_failed, 30, 0.2)
    print("    %s got the leader's snapshot while stalled; space returns" % follower.name)
    os.unlink(flag)
    wait_rejoined(follower, timeout=60)
    log = log_since_start(follower)
    check("no namespace to fetch" in log, "%s's raft restart did not start with a round "
          "without targets:\n%s" % (follower.name, follower.log_tail()), "raft")
    print("    %s closed raft and started it again by itself (%d catch-up round(s))" %
          (follower.name, log.count("catch-up round ") - log.count(": peer ")))
    written.reads_back(follower, timeout=30)
    write_everywhere(leader_of(nodes), "restarted", 10)


suite.run([start_cluster, follower_disk_fills_and_empties, stalled_follower_gets_the_snapshot,
           cluster.wals_identical])
