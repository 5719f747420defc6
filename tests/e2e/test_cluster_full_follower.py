#!/usr/bin/env python3
"""End to end, a follower whose disk fills, without root: three writers built as
unison-writer-nospace (nospace_writer.c: the product's objects, whose namespace WALs cannot create
a segment while a flag file exists, as on a full disk). The follower's apply stops at the first
segment it cannot create and retries on its own; the cluster goes on committing, and the other
two serve every write; the follower serves what it applied and not more. Once space returns
(the flag removed) the follower applies the rest by itself, with no restart, and after a stop
every writer's WAL holds the same LSNs with byte-identical records."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Failure, Suite, Writer, check, free_port, wait_for  # noqa: E402
from catchup_lib import Written, log_since_start  # noqa: E402
from cluster_lib import leader_of  # noqa: E402
from relayer_lib import wal_records  # noqa: E402

suite = Suite("cluster-full-follower")
RAFT = [free_port() for _ in range(3)]
PEERS = ", ".join('"%d@127.0.0.1:%d"' % (i + 1, p) for i, p in enumerate(RAFT))
FLAGS = [os.path.join(suite.workdir, "disk-full-n%d" % (i + 1)) for i in range(3)]
nodes = []
for i in range(3):
    cfg = ("[raft]\nnode_id = %d\ncluster_id = \"e2e-full\"\npeers = [%s]\n"
           "election_timeout_ms = 1000\nheartbeat_timeout_ms = 100\nleader_wait_ms = 2000\n"
           % (i + 1, PEERS))
    # Small segments: a few dozen writes need a new one.
    nodes.append(suite.writer("n%d" % (i + 1), config=cfg, ports={"raft": RAFT[i]},
                              args=["--set", "storage.segment_size=64KiB"]))
written = Written()
VALUE = 1500
FULL_WRITES = 150  # about 3.5 segments


def write_everywhere(leader, prefix, count):
    """count acknowledged writes on leader, then each reads back on every writer."""
    for i in range(count):
        written.put(leader, "%s%d" % (prefix, i), os.urandom(VALUE))
    for n in nodes:
        written.reads_back(n)


def start_cluster():
    for i, n in enumerate(nodes):
        n.start(wait_namespace=None, env={"UD_NOSPACE_FLAG": FLAGS[i]})
    leader = leader_of(nodes)
    for n in nodes:
        n.wait_namespace("default", 30)
        check("no-space test build" in log_since_start(n), "%s is not the no-space build" %
              n.name)
    write_everywhere(leader, "before", 20)


def follower_disk_fills_and_empties():
    leader = leader_of(nodes)
    follower = [n for n in nodes if n is not leader][0]
    others = [n for n in nodes if n is not follower]
    flag = FLAGS[nodes.index(follower)]
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


def wals_identical():
    leader = leader_of(nodes)
    Writer.stop_all(nodes)
    wals = {n.name: wal_records(n, part="raft") for n in nodes}
    ref = wals[leader.name]
    check(ref, "%s's WAL is empty" % leader.name, "raft")
    for n in nodes:
        w = wals[n.name]
        check(set(w) == set(ref), "%s has LSNs %d..%d, %s %d..%d" %
              (n.name, min(w, default=0), max(w, default=0), leader.name, min(ref), max(ref)),
              "raft")
        diff = [lsn for lsn in sorted(w) if w[lsn] != ref[lsn]]
        check(not diff, "%s's WAL differs from %s's at LSNs %r" % (n.name, leader.name,
                                                                 diff[:10]), "raft")
    print("    %d records byte-identical on all three" % len(ref))


suite.run([start_cluster, follower_disk_fills_and_empties, wals_identical])
