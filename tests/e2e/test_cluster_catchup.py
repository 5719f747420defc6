#!/usr/bin/env python3
"""End to end, the out-of-band catch-up of a writer (docs/raft.md "Out-of-band catch-up"): three
writers whose raft keeps only a few entries (snapshot_threshold 16, trailing 8). A follower kept
down while the cluster writes far more than that (in an existing namespace and in one created
while it was down) gets the leader's snapshot, which it is behind: it closes raft, fetches the
namespaces over HTTP from a peer, and starts raft again. Afterwards every acknowledged write reads
back on it with its LSN, its WAL records are byte-identical to the leader's at every LSN, and it
keeps following new writes.

Then the same with every peer unreachable over HTTP (each writer advertises its HTTP address
through a gate the test closes): the follower closes raft and keeps trying, says catching-up,
stops cleanly on SIGTERM in the middle, and at its next start (raft's stored snapshot is now ahead
of its namespaces, so raft cannot start) catches up before raft starts once the gates open."""

import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Failure, Suite, b64, check, expect_json, expect_write, free_port,  # noqa
                     unb64, wait_for)
from fault_proxy import FaultProxy  # noqa
from relayer_lib import wal_records  # noqa

suite = Suite("cluster-catchup")
RAFT = [free_port() for _ in range(3)]
HTTP = [free_port() for _ in range(3)]
GATE = [free_port() for _ in range(3)]  # each writer's advertised HTTP address
PEERS = ", ".join('"%d@127.0.0.1:%d"' % (i + 1, p) for i, p in enumerate(RAFT))
nodes = []
for i in range(3):
    cfg = ("[http]\nadvertise = \"http://127.0.0.1:%d\"\n"
           "[raft]\nnode_id = %d\ncluster_id = \"e2e\"\npeers = [%s]\n"
           "election_timeout_ms = 1000\nheartbeat_timeout_ms = 100\n"
           "snapshot_threshold = 16\nsnapshot_trailing = 8\n" % (GATE[i], i + 1, PEERS))
    nodes.append(suite.writer("n%d" % (i + 1), config=cfg,
                              ports={"raft": RAFT[i], "http": HTTP[i]},
                              args=["--set", "storage.segment_size=256KiB"]))
gates = {}


def open_gates():
    for i in range(3):
        if i not in gates:
            gates[i] = FaultProxy(HTTP[i], listen_port=GATE[i])


def close_gates():
    for i in list(gates):
        gates.pop(i).close()


written = {}  # (ns, key) -> (value, lsn)


def leader_of(candidates, timeout=15):
    def find():
        leaders = []
        for n in candidates:
            if not n.alive():
                raise Failure("%s exited:\n%s" % (n.name, n.log_tail()), "raft")
            r = n.http().get("/status/leader", timeout=5)
            if r.status == 200 and r.json().get("isLeader") is True:
                leaders.append(n)
        check(len(leaders) <= 1, "two leaders at once: %r" % [n.name for n in leaders], "raft")
        return leaders[0] if leaders else None
    return wait_for("a raft leader among %s" % [n.name for n in candidates], find, timeout, 0.2)


def write(node, ns, key, value):
    doc = expect_write(node.http().put("/api/v1/%s/kv/%s" % (ns, key),
                                       '{"value":"%s"}' % b64(value)), "PUT %s/%s" % (ns, key))
    written[(ns, key)] = (value, doc["lsn"])


def reads_back(node, timeout=30):
    """Every acknowledged write reads back on node with the LSN it was acknowledged with."""
    h = node.http()
    for (ns, key), (value, lsn) in sorted(written.items()):
        def has():
            r = h.get("/api/v1/%s/kv/%s" % (ns, key), timeout=5)
            if r.status != 200:
                return False
            doc = r.json()
            check(unb64(doc["value"]) == value, "%s: %s/%s has another value" %
                  (node.name, ns, key), "raft")
            check(doc.get("lsn") == lsn, "%s: %s/%s has LSN %r, acknowledged with %d" %
                  (node.name, ns, key, doc.get("lsn"), lsn), "raft")
            return True
        wait_for("%s/%s on %s" % (ns, key, node.name), has, timeout, 0.1)


def same_wal(a, b, ns):
    """The two WALs of ns hold the same record bytes at every LSN, up to the same last LSN."""
    wa, wb = wal_records(a, ns, "raft"), wal_records(b, ns, "raft")
    check(wa and wb, "%s: empty WAL (%s %d, %s %d records)" % (ns, a.name, len(wa), b.name,
                                                                len(wb)), "raft")
    check(max(wa) == max(wb), "%s: %s's WAL ends at LSN %d, %s's at %d" %
          (ns, a.name, max(wa), b.name, max(wb)), "raft")
    common = [lsn for lsn in wb if lsn in wa]
    check(len(common) == len(wb), "%s: %s holds LSNs %s does not" % (ns, b.name, a.name), "raft")
    for lsn in common:
        if wa[lsn] != wb[lsn]:
            raise Failure("%s LSN %d: %s's record bytes differ from %s's" %
                          (ns, lsn, b.name, a.name), "raft")
    return len(common)


def log_since_start(node):
    with open(node.log_path, "rb") as f:
        log = f.read().decode(errors="replace")
    return log[log.rfind("===== start"):]


def status_state(node):
    r = node.http().get("/status/node", timeout=5)
    return r.json().get("state") if r.status == 200 else None


def start_cluster():
    open_gates()
    for n in nodes:
        n.start(wait_namespace=None)
    leader = leader_of(nodes)
    print("    leader: %s" % leader.name)
    for n in nodes:
        n.wait_namespace("default", 30)
    for i in range(10):
        write(leader, "default", "before%d" % i, os.urandom(64))
    for n in nodes:
        reads_back(n)


def follower_behind_the_snapshot():
    leader = leader_of(nodes)
    follower = [n for n in nodes if n is not leader][0]
    follower.signal(signal.SIGKILL)
    follower.proc.wait(30)
    print("    %s killed; the cluster writes on" % follower.name)
    # Far more entries than raft keeps (one entry per write), in an existing namespace and in
    # one created while the follower is down.
    expect_json(leader.http().put("/api/v1/later"), 200, "create namespace later")
    for i in range(80):
        write(leader, "default", "down%d" % i, os.urandom(200))
        if i % 2 == 0:
            write(leader, "later", "k%d" % i, os.urandom(100))
    follower.start(wait_namespace=None)

    def caught_up():
        with open(follower.log_path, "rb") as f:
            log = f.read().decode(errors="replace")
        if not follower.alive():
            raise Failure("%s exited:\n%s" % (follower.name, follower.log_tail()), "raft")
        return "out-of-band catch-up done; raft started again" in log
    wait_for("%s's out-of-band catch-up" % follower.name, caught_up, 45, 0.2)
    reads_back(follower)
    # It follows again: new writes reach it through raft.
    for i in range(10):
        write(leader, "later", "after%d" % i, os.urandom(50))
    reads_back(follower)
    for ns in ("default", "later"):
        n = same_wal(leader, follower, ns)
        print("    %s: %d records byte-identical on %s and %s" % (ns, n, leader.name,
                                                                 follower.name))


def stopped_while_catching_up():
    leader = leader_of(nodes)
    follower = [n for n in nodes if n is not leader][-1]
    follower.signal(signal.SIGKILL)
    follower.proc.wait(30)
    for i in range(60):
        write(leader, "default", "again%d" % i, os.urandom(200))
    close_gates()
    follower.start(wait_namespace=None)

    def stuck():
        if not follower.alive():
            raise Failure("%s exited:\n%s" % (follower.name, follower.log_tail()), "raft")
        return status_state(follower) == "catching-up"
    wait_for("%s catching up (no peer reachable)" % follower.name, stuck, 30, 0.2)
    time.sleep(1)
    check(status_state(follower) == "catching-up", "%s stopped catching up without a peer" %
          follower.name, "raft")
    log = log_since_start(follower)
    check("closing raft for an out-of-band catch-up" in log and "Couldn't connect" in log,
          "%s's log does not show the catch-up trying its peers:\n%s" %
          (follower.name, follower.log_tail()), "raft")
    r = follower.http().get("/readyz")
    check(r.status == 503 and b"catching up" in r.body, "/readyz while catching up: %d %r" %
          (r.status, r.body), "raft")
    # Reads keep being served meanwhile.
    value, lsn = written[("default", "before0")]
    doc = expect_json(follower.http().get("/api/v1/default/kv/before0"), 200,
                      "read during the catch-up", "raft")
    check(unb64(doc["value"]) == value, "read during the catch-up: another value", "raft")
    follower.stop_clean("SIGTERM during the catch-up")
    open_gates()
    follower.start(wait_namespace=None)
    wait_for("%s's catch-up before raft starts" % follower.name,
             lambda: "out-of-band catch-up done; raft started again" in log_since_start(follower),
             45, 0.2)
    check("catching up out of band before raft starts" in log_since_start(follower),
          "%s started raft without catching up first:\n%s" % (follower.name,
                                                                follower.log_tail()), "raft")
    reads_back(follower)
    write(leader, "default", "last", b"last")
    reads_back(follower)
    for ns in ("default", "later"):
        n = same_wal(leader, follower, ns)
        print("    %s: %d records byte-identical on %s and %s" % (ns, n, leader.name,
                                                                 follower.name))


def stop_all():
    problems = []
    for n in nodes:
        n.stop_noting("SIGTERM", problems)
    close_gates()
    if problems:
        raise problems[0]


suite.run([start_cluster, follower_behind_the_snapshot, stopped_while_catching_up, stop_all])
