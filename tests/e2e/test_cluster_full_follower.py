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
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Failure, Suite, Writer, check, expect_json, free_port, wait_for  # noqa: E402
from catchup_lib import Written, log_since_start, wait_rejoined  # noqa: E402
from cluster_lib import leader_of  # noqa: E402
from fault_proxy import FaultProxy  # noqa: E402
from relayer_lib import wal_records  # noqa: E402

suite = Suite("cluster-full-follower")
RAFT = [free_port() for _ in range(3)]
# Each writer's raft address in the configuration is a proxy's, so that a test can cut the others
# off from one writer (its raft messages to them still go out: with pre-vote they depose nobody).
RAFT_GATE = [free_port() for _ in range(3)]
PEERS = ", ".join('"%d@127.0.0.1:%d"' % (i + 1, p) for i, p in enumerate(RAFT_GATE))
FLAGS = [os.path.join(suite.workdir, "disk-full-n%d" % (i + 1)) for i in range(3)]
nodes = []
for i in range(3):
    cfg = ("[raft]\nnode_id = %d\ncluster_id = \"e2e-full\"\npeers = [%s]\n"
           "election_timeout_ms = 1000\nheartbeat_timeout_ms = 100\nleader_wait_ms = 2000\n"
           "snapshot_threshold = 16\nsnapshot_trailing = 8\n"
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


gates = {}


def open_gate(i):
    gates[i] = FaultProxy(RAFT[i], listen_port=RAFT_GATE[i])


def close_gate(i):
    """The others can no longer reach writer i: the proxy's connections are shut down."""
    g = gates.pop(i)
    with g.lock:
        socks = list(g.socks)
    for s in socks:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    g.close()


def start_cluster():
    for i in range(3):
        open_gate(i)
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
    check("catch-up round" not in log_since_start(follower),
          "%s closed raft for a catch-up although its log still held what it missed:\n%s" %
          (follower.name, follower.log_tail()), "raft")


def node_status(node):
    return expect_json(node.http().get("/status/node"), 200, "%s /status/node" % node.name)


def write_until(leader, done, keys):
    """Writes to default on leader until done(its /status/node) holds; returns that status."""
    for n in range(1000):
        st = node_status(leader)
        if done(st):
            return st
        written.put(leader, next(keys), os.urandom(200))
    raise Failure("%s: its raft log did not move on after %d writes: %r" % (leader.name, n, st),
                  "raft")


def stalled_follower_gets_the_snapshot():
    leader = leader_of(nodes)
    follower = [n for n in nodes if n is not leader][0]
    flag = FLAGS[nodes.index(follower)]
    stops = log_since_start(follower).count("apply stopped")
    open(flag, "w").close()
    print("    %s's disk is full again; %s leads" % (follower.name, leader.name))
    for i in range(FULL_WRITES):
        written.put(leader, "again%d" % i, os.urandom(VALUE))
    wait_for("%s's apply stopping again" % follower.name,
             lambda: log_since_start(follower).count("apply stopped") > stops, 15, 0.2)
    # Cut off while the others commit past what their logs keep. raft sends a snapshot
    # only to a peer it has not heard from for an election timeout (1 s) and whose next index
    # its log no longer holds, and messages queued before may still carry entries: the leader's
    # log must start past its own last index of the moment the follower's index was passed
    # (test_cluster_catchup.py leader_log_past).
    follower_last = node_status(follower)["lastIndex"]
    close_gate(nodes.index(follower))
    try:
        time.sleep(3.0)
        keys = ("away%d" % i for i in range(1 << 30))
        reach = follower_last
        for _ in range(2):
            reach = write_until(leader, lambda st, r=reach: st["firstIndex"] > r + 1,
                                keys)["lastIndex"]
        print("    %s's raft log starts past index %d (%s stopped at %d)" %
              (leader.name, reach + 1, follower.name, follower_last))
        # raft takes its snapshots asynchronously: the leader's newest must be stored before the
        # follower is back. Otherwise the follower may first get an older one, and then this
        # one, whose restore (the stall over by then) runs: that path is the usual catch-up.
        time.sleep(1.5)
    finally:
        open_gate(nodes.index(follower))

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


suite.run([start_cluster, follower_disk_fills_and_empties, stalled_follower_gets_the_snapshot,
           wals_identical])
