#!/usr/bin/env python3
"""End to end, a writer whose WAL is corrupt (docs/raft.md "A damaged WAL at startup"): a byte
flipped inside a sealed WAL segment of a follower while the cluster is stopped. The follower is
started first, alone: it moves the damaged namespace aside, does not start raft (its raft port
stays closed, /status/node says catching-up, /readyz is 503) and waits for a peer to fetch it
from. The two others start and elect a leader among themselves while it still cannot reach them
over HTTP (its peers' http= addresses go through gates the test opens afterwards). Once the gates
open it fetches the namespace, starts raft, and ends with every acknowledged write, WAL records
byte-identical to the leader's, and new writes arriving through raft. A single writer with a
damaged WAL still refuses to start, naming segment and offset; so does one whose active segment
holds a bad record below the WAL's durable floor."""

import glob
import os
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Failure, Suite, Writer, b64, check, expect_json, expect_write, free_port,  # noqa
                     wait_for)
from catchup_lib import Written, catching_up, same_wal, wait_rejoined  # noqa
from cluster_lib import leader_of  # noqa
from fault_proxy import FaultProxy  # noqa

suite = Suite("cluster-refetch")
RAFT = [free_port() for _ in range(3)]
HTTP = [free_port() for _ in range(3)]
GATE = [free_port() for _ in range(3)]  # n1 reaches its peers' HTTP through these
nodes = []
for i in range(3):
    # n1's peers entries name the gates; the others name the real HTTP ports.
    peers = ", ".join('"%d@127.0.0.1:%d,http=127.0.0.1:%d"' %
                      (k + 1, RAFT[k], (GATE[k] if i == 0 else HTTP[k])) for k in range(3))
    cfg = ("[raft]\nnode_id = %d\ncluster_id = \"e2e\"\npeers = [%s]\n"
           "election_timeout_ms = 1000\nheartbeat_timeout_ms = 100\n" % (i + 1, peers))
    nodes.append(suite.writer("n%d" % (i + 1), config=cfg,
                              ports={"raft": RAFT[i], "http": HTTP[i]},
                              args=["--set", "storage.segment_size=256KiB"]))
damaged, others = nodes[0], nodes[1:]
written = Written()
write = written.put
reads_back = written.reads_back


def raft_port_open(node):
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", RAFT[nodes.index(node)])) == 0


def start_and_fill():
    for n in nodes:
        n.start(wait_namespace=None)
    leader = leader_of(nodes)
    for n in nodes:
        n.wait_namespace("default", 30)
    # ~600 KiB: more than two 256 KiB segments on every writer.
    for i in range(75):
        write(leader, "k%d" % i, os.urandom(8000))
    for n in nodes:
        reads_back(n)


def corrupt_sealed_segment():
    for n in nodes:
        n.stop_clean()
    seg = flip_first_sealed_byte(damaged)
    print("    flipped a byte of %s" % os.path.relpath(seg, damaged.data_dir))


def alone_it_stays_out_of_raft():
    damaged.start(wait_namespace=None)

    def set_aside():
        if not damaged.alive():
            raise Failure("%s exited:\n%s" % (damaged.name, damaged.log_tail()), "writer")
        return glob.glob(os.path.join(damaged.data_dir, "namespaces", "default.corrupt-*"))
    kept = wait_for("the damaged namespace moved aside", set_aside, 15)
    print("    kept for inspection: %s" % os.path.relpath(kept[0], damaged.data_dir))
    with open(damaged.log_path, "rb") as f:
        log = f.read().decode(errors="replace")
    check("moved aside to" in log and ".seg" in log and "offset" in log,
          "the log does not name the damaged segment, offset and where the namespace went:\n" +
          damaged.log_tail(), "writer")
    time.sleep(3)  # several election timeouts
    check(catching_up(damaged), "%s does not say it is catching up" % damaged.name, "raft")
    r = damaged.http().get("/readyz")
    check(r.status == 503 and "catching up" in r.body.decode(errors="replace"),
          "/readyz of a node that is catching up: %d %r" % (r.status, r.body), "raft")
    r = damaged.http().get("/status/cluster")
    check(r.status == 503 and "catching up" in r.body.decode(errors="replace"),
          "/status/cluster of a node that is catching up: %d %r" % (r.status, r.body), "raft")
    check(not raft_port_open(damaged), "%s listens on its raft port before it re-fetched" %
          damaged.name, "raft")


def the_others_elect_among_themselves():
    for n in others:
        n.start(wait_namespace=None)
    leader = leader_of(others, 20)
    print("    %s leads" % leader.name)
    for n in others:
        n.wait_namespace("default", 30)
    # Nothing is written meanwhile: the peers' snapshots then reach their last LSN, and the
    # re-fetched namespace's WAL must still hold a record to carry its raft position (without
    # one, raft applied its log again on top of the snapshot: every key at a new LSN).
    # The damaged node still cannot reach anyone over HTTP: it has not voted and does not lead.
    check(catching_up(damaged), "%s stopped catching up without a peer" % damaged.name, "raft")
    check(not raft_port_open(damaged), "%s listens on its raft port before it re-fetched" %
          damaged.name, "raft")
    doc = expect_json(leader.http().get("/status/cluster"), 200, "/status/cluster on the leader")
    me = [m for m in doc["members"] if m["id"] == 1]
    check(me and me[0].get("state") == "catching-up",
          "the leader's /status/cluster shows n1 as %r" % (me[0] if me else None), "raft")
    check(doc.get("leaderId") in (2, 3), "leader id %r" % doc.get("leaderId"), "raft")


def refetch_and_rejoin():
    gates = [FaultProxy(HTTP[k], listen_port=GATE[k]) for k in (1, 2)]
    try:
        wait_rejoined(damaged, 30)
        reads_back(damaged)
        leader = leader_of(nodes)
        for i in range(5):
            write(leader, "after%d" % i, os.urandom(100))
        reads_back(damaged)
        check(not catching_up(damaged), "%s still says it is catching up" % damaged.name)
        n = same_wal(leader, damaged, "default")
        print("    %d records byte-identical on %s and %s" % (n, leader.name, damaged.name))
    finally:
        for g in gates:
            g.close()


def flip_first_sealed_byte(node):
    segs = sorted(glob.glob(os.path.join(node.data_dir, "namespaces", "default", "wal", "*.seg")))
    check(len(segs) >= 2, "%s has %d WAL segment(s); a sealed one is needed" %
          (node.name, len(segs)))
    with open(segs[0], "r+b") as f:
        head = f.read(64)
        check(int.from_bytes(head[40:44], "little") == 2, "%s is not sealed" % segs[0])
        f.seek(64 + 8 + 24)  # inside the first record's data: its frame CRC no longer matches
        b = f.read(1)
        f.seek(64 + 8 + 24)
        f.write(bytes([b[0] ^ 0xFF]))
    return segs[0]


def single_writer_refuses():
    """Without peers there is nobody to fetch from: the writer refuses to start, naming the
    damaged segment and offset, and leaves the namespace where it is."""
    w = suite.writer("single", args=["--set", "storage.segment_size=256KiB"])
    w.start()
    h = w.http()
    for i in range(40):
        expect_write(h.put("/api/v1/default/kv/s%d" % i, '{"value":"%s"}' %
                           b64(os.urandom(8000))), "PUT on the single writer")
    w.stop_clean()
    seg = flip_first_sealed_byte(w)
    run = subprocess.run(w.argv(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, timeout=30)
    log = run.stdout.decode(errors="replace")
    check(run.returncode == 1, "a single writer with a damaged WAL exited with %d:\n%s" %
          (run.returncode, log[-2000:]), "writer")
    check(os.path.basename(seg) in log and "offset" in log,
          "the refusal does not name segment and offset:\n" + log[-2000:], "writer")
    check(not glob.glob(os.path.join(w.data_dir, "namespaces", "default.corrupt-*")),
          "a single writer moved its damaged namespace aside", "writer")


def single_writer_refuses_damage_below_floor():
    """The active segment's log is cut at a bad record as a torn write only above its durable
    floor (docs/format-wal.md "Durable floor"). Here raft snapshots every 8 entries let raft drop
    its log once the WAL was synced, which raises the floor: the WAL holds the only copy of those
    records, and a flipped byte in its first record makes the writer refuse to start, naming
    segment, offset and floor, and leave every byte as it was. (It used to cut the log there,
    zeroing the only copy of those records, and then fail on raft's snapshot, which needs them.)"""
    w = suite.writer("floor", args=["--set", "raft.snapshot_threshold=8",
                                    "--set", "raft.snapshot_trailing=2",
                                    "--set", "storage.idle_flush_ms=86400000"])
    w.start()
    h = w.http()
    for i in range(60):
        expect_write(h.put("/api/v1/default/kv/f%d" % i, '{"value":"%s"}' %
                           b64(os.urandom(200))), "PUT on the single writer")
    wal = os.path.join(w.data_dir, "namespaces", "default", "wal")

    def floor_raised():
        with open(os.path.join(wal, "durable-floor"), "rb") as f:
            return any(f.read())
    wait_for("a raft snapshot raising the WAL's durable floor", floor_raised, 15, 0.1)
    w.kill()  # no shutdown flush: the raft snapshots alone raised the floor
    seg = os.path.join(wal, "0000000001.seg")
    with open(seg, "r+b") as f:
        f.seek(64 + 8 + 24)  # inside the first record's data
        b = f.read(1)
        f.seek(64 + 8 + 24)
        f.write(bytes([b[0] ^ 0xFF]))
    with open(seg, "rb") as f:
        before = f.read()
    run = subprocess.run(w.argv(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, timeout=30)
    log = run.stdout.decode(errors="replace")
    check(run.returncode == 1, "a single writer with a record damaged below its durable floor "
          "exited with %d:\n%s" % (run.returncode, log[-2000:]), "writer")
    check("0000000001.seg" in log and "offset 64" in log and "durable floor" in log,
          "the refusal does not name segment, offset and floor:\n" + log[-2000:], "writer")
    with open(seg, "rb") as f:
        check(f.read() == before, "the refused start changed %s" % seg, "writer")


def stop_all():
    Writer.stop_all(nodes)


suite.run([start_and_fill, corrupt_sealed_segment, alone_it_stays_out_of_raft,
           the_others_elect_among_themselves, refetch_and_rejoin, stop_all,
           single_writer_refuses, single_writer_refuses_damage_below_floor])
