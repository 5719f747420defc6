#!/usr/bin/env python3
"""End to end, relayers on a 3-writer raft cluster: a relayer listing every writer converges,
reads wait for an LSN (?min_lsn=, read-your-writes), and when the writer it streams from is
killed it continues from another writer with no gap and no duplicate (LSNs and record bytes are
identical on every writer); a multi-hub relayer follows one namespace from the cluster and another
from an independent writer.

usage: test_relayer_cluster.py path/to/unison-writer path/to/unison-relayer"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Failure, Relayer, Suite, b64, check, expect_json, expect_write,  # noqa
                     unb64, wait_for)
import relayer_lib as lib  # noqa: E402
from cluster_lib import three_writers  # noqa: E402

if len(sys.argv) < 3:
    sys.exit(__doc__)
RELAYER = os.path.abspath(sys.argv[2])
suite = Suite("relayer-cluster")
suite.only = sys.argv[3:]
NS = "/api/v1/default"

nodes = three_writers(suite, "e2e-relayer", ["--set", "storage.segment_size=2MiB"])
relayers = []


def relayer(name, upstreams, args=()):
    r = Relayer(RELAYER, suite.workdir, name, upstreams, args=args)
    relayers.append(r)
    suite.writers.append(r)
    return r


def leader_of(candidates, timeout=20):
    def find():
        for n in candidates:
            if n.alive():
                r = n.http().get("/status/leader", timeout=5)
                if r.status == 200 and r.json().get("isLeader") is True:
                    return n
        return None
    return wait_for("a raft leader", find, timeout, 0.2)


def write_batch(node, prefix, n):
    h = node.http()
    last = 0
    for b in range(n):
        body = '{"operation":"put","items":[%s]}' % ",".join(
            '{"key":"%s:%d:%d","value":"%s"}' % (prefix, b, i, b64(os.urandom(200)))
            for i in range(50))
        last = expect_write(h.post(NS + "/kv/batch", body), "batch")["lsn"]
    return last


def cluster_failover():
    for n in nodes:
        n.start(wait_namespace=None)
    leader = leader_of(nodes)
    for n in nodes:
        n.wait_namespace("default", 30)
    rc = relayer("rc", [n.http().base for n in nodes]).start()
    last = write_batch(leader, "before", 20)
    rc.wait_lsn(last)
    # Read-your-writes on the relayer: a read with ?min_lsn= of a write waits until it is here.
    doc = expect_write(leader.http().put(NS + "/kv/ryw", '{"value":"%s"}' % b64("mine")), "PUT")
    r = rc.http().get(NS + "/kv/ryw?min_lsn=%d" % doc["lsn"])
    check(r.status == 200 and unb64(r.json()["value"]) == b"mine",
          "GET with min_lsn=%d on the relayer: %r" % (doc["lsn"], r), "relayer")

    followed = rc.status()["upstream"]
    victim = [n for n in nodes if n.http().base == followed][0]
    print("    rc streams from %s; killing it" % victim.name)
    victim.kill()
    survivors = [n for n in nodes if n is not victim]
    leader = leader_of(survivors)
    last = write_batch(leader, "after", 20)
    rc.wait_lsn(last, timeout=60)
    st = rc.status()
    check(st["upstream"] != followed, "rc still names the killed writer: %r" % st, "relayer")
    check(st["applied_lsn"] == last, "rc applied %d, the cluster is at %d" %
          (st["applied_lsn"], last), "relayer")
    lib.check_same(leader, rc, [], "rc after its writer was killed")
    n = lib.check_wal_equal(leader, rc, last)
    print("    rc continued from %s: %d LSNs equal to %s's" % (st["upstream"], n, leader.name))
    victim.start(wait_namespace=None)


def multi_hub():
    leader = leader_of(nodes)
    hub_b = suite.writer("hubb")
    hub_b.start()
    expect_json(hub_b.http().put("/api/v1/catalog"), 200, "create catalog on hub B")
    for i in range(20):
        expect_write(hub_b.http().put("/api/v1/catalog/kv/item%d" % i, '{"value":"%s"}' %
                                      b64("item %d" % i)), "PUT on hub B")
    rm = relayer("rm", [n.http().base for n in nodes if n.alive()],
                 args=["--namespaces", "default,catalog=%s" % hub_b.http().base]).start()
    last_a = write_batch(leader, "hub-a", 2)
    last_b = expect_json(hub_b.http().get("/api/v1/catalog/checkpoint"), 200, "checkpoint")["lsn"]
    rm.wait_lsn(last_a, ns="default")
    rm.wait_lsn(last_b, ns="catalog")
    doc = expect_json(rm.http().get("/api/v1/catalog/kv/item19"), 200, "catalog/item19 on rm")
    check(unb64(doc["value"]) == b"item 19", "catalog/item19: %r" % doc, "relayer")
    check(rm.status("catalog")["upstream"] == hub_b.http().base, "catalog's upstream: %r" %
          rm.status("catalog"), "relayer")
    names = expect_json(rm.http().get("/api/v1"), 200, "namespaces on rm")["namespaces"]
    check(sorted(names) == ["catalog", "default"], "rm follows only what it was told: %r" % names,
          "relayer")
    # Writes go to the upstream of the namespace they address.
    r = rm.http().put("/api/v1/catalog/kv/x", '{"value":"eA=="}')
    check(r.status == 403 and r.json().get("upstream") == hub_b.http().base,
          "a write to catalog on rm: %r" % r, "relayer")
    for r in reversed(relayers):
        r.stop_clean("SIGTERM of %s" % r.name)
    hub_b.stop_clean("SIGTERM of hub B")
    for n in nodes:
        if n.alive():
            n.stop_clean("SIGTERM of %s" % n.name)


suite.server = None
suite.run([cluster_failover, multi_hub])
