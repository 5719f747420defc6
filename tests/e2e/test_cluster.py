#!/usr/bin/env python3
"""End to end, three writers as one raft cluster on loopback (the deploy/n1-n3 topology on free
ports): one leader, the default namespace on every writer, writes on the leader readable on every
writer with the same LSN, a write on a follower forwarded to the leader, a leader stopped with
SIGTERM replaced by a new one, and the old leader catching up after its restart."""

import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Failure, Suite, Writer, b64, check, expect_json, expect_write,  # noqa
                     unb64, wait_for)
from cluster_lib import leader_of, start_writers, three_writers  # noqa: E402

suite = Suite("cluster")
nodes = three_writers(suite)
written = {}  # key -> (value, lsn)


def on_every(candidates, key, value, lsn, timeout=15):
    for n in candidates:
        def has():
            r = n.http().get("/api/v1/default/kv/" + key, timeout=5)
            if r.status != 200:
                return False
            doc = r.json()
            check(unb64(doc["value"]) == value, "%s: %s has another value" % (n.name, key), "raft")
            check(doc.get("lsn") == lsn, "%s: %s has LSN %r, the leader gave %d" %
                  (n.name, key, doc.get("lsn"), lsn), "raft")
            return True
        wait_for("%s on %s" % (key, n.name), has, timeout, 0.1)


def start_cluster():
    leader = start_writers(nodes)


def replicate():
    leader = leader_of(nodes)
    h = leader.http()
    for i in range(30):
        v = os.urandom(100)
        doc = expect_write(h.put("/api/v1/default/kv/c%d" % i, '{"value":"%s"}' % b64(v)), "PUT")
        written["c%d" % i] = (v, doc["lsn"])
    for key, (v, lsn) in written.items():
        on_every(nodes, key, v, lsn)
    # Namespace creation is a raft command too.
    expect_json(h.put("/api/v1/replicated_ns"), 200, "create namespace on the leader")
    for n in nodes:
        n.wait_namespace("replicated_ns", 15)


def delete_cuts_streams_everywhere():
    """A namespace deleted through the leader is deleted on every writer by raft: a WAL stream
    of it on another writer is cut too (docs/replication.md), not left open on deleted files."""
    leader = leader_of(nodes)
    h = leader.http()
    expect_json(h.put("/api/v1/doomed"), 200, "create namespace doomed")
    for n in nodes:
        n.wait_namespace("doomed", 15)
    expect_write(h.put("/api/v1/doomed/kv/a", '{"value":"%s"}' % b64("a")), "PUT")
    streams = []
    for n in nodes:
        out = os.path.join(n.dir, "doomed-stream.bin")
        streams.append((n, out, subprocess.Popen(
            ["curl", "-sN", "-o", out,
             "http://127.0.0.1:%d/api/v1/doomed/wal/stream?from=1" % n.ports["http"]],
            stdin=subprocess.DEVNULL)))
    try:
        for n, out, _ in streams:
            wait_for("a heartbeat from %s" % n.name,
                     lambda: os.path.exists(out) and os.path.getsize(out) >= 40, 10)
        expect_json(h.delete("/api/v1/doomed"), 200, "delete namespace doomed")
        for n, _, p in streams:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                raise Failure("%s kept a WAL stream of the deleted namespace open" % n.name,
                              "replication")
            check(p.returncode != 0, "%s: the stream of a deleted namespace ended cleanly" %
                  n.name, "replication")
    finally:
        for _, _, p in streams:
            if p.poll() is None:
                p.kill()
            p.wait(10)


def follower_write():
    """A follower forwards the write to the leader, whose HTTP address it learned from the
    member directory (these peers entries carry none), and answers once it applied it."""
    leader = leader_of(nodes)
    follower = [n for n in nodes if n is not leader][0]
    r = follower.http().put("/api/v1/default/kv/via-follower", '{"value":"%s"}' % b64("f"))
    doc = expect_write(r, "PUT on a follower (forwarded)")
    got = expect_json(follower.http().get("/api/v1/default/kv/via-follower"), 200,
                      "read on the follower right after its forwarded write", "raft")
    check(got.get("lsn") == doc["lsn"], "the follower answered before applying the write", "raft")
    written["via-follower"] = (b"f", doc["lsn"])
    on_every(nodes, "via-follower", b"f", doc.get("lsn"))


def failover():
    leader = leader_of(nodes)
    t0 = time.monotonic()
    problems = []
    leader.stop_noting("SIGTERM of the leader", problems)
    rest = [n for n in nodes if n is not leader]
    new = leader_of(rest, 15)
    print("    %s took over in %.1f s" % (new.name, time.monotonic() - t0))
    doc = expect_write(new.http().put("/api/v1/default/kv/after-failover",
                                      '{"value":"%s"}' % b64("af")), "PUT on the new leader")
    written["after-failover"] = (b"af", doc["lsn"])
    check(doc["lsn"] > max(l for _, l in written.values() if l != doc["lsn"]),
          "the new leader reused an LSN", "raft")
    on_every(rest, "after-failover", b"af", doc["lsn"])
    # The old leader comes back as a follower and catches up.
    leader.start(wait_namespace=None)
    for key, (v, lsn) in written.items():
        on_every([leader], key, v, lsn, 30)
    if problems:
        raise problems[0]


def stop_all():
    Writer.stop_all(nodes)


suite.run([start_cluster, replicate, delete_cuts_streams_everywhere, follower_write, failover,
           stop_all])
