#!/usr/bin/env python3
"""End to end, what a follower passes on when it forwards to the leader of a two-writer cluster
(docs/raft.md "Clients and the cluster"): a write's If-Match and Idempotency-Key whatever their
length (a follower answers them as the leader answers them directly: a value the leader cannot
take is its 400, never a dropped header and an unconditional write)."""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Suite, check, free_port, unb64  # noqa: E402
from cluster_lib import get, leader_of, put  # noqa: E402

suite = Suite("cluster-forward")
N = 2
RAFT = [free_port() for _ in range(N)]
HTTP = [free_port() for _ in range(N)]
PEERS = ", ".join('"%d@127.0.0.1:%d,http=127.0.0.1:%d"' % (i + 1, RAFT[i], HTTP[i])
                  for i in range(N))
nodes = []
for i in range(N):
    cfg = ("[raft]\nnode_id = %d\ncluster_id = \"e2e\"\npeers = [%s]\n"
           "election_timeout_ms = 1000\nheartbeat_timeout_ms = 100\nleader_wait_ms = 2000\n"
           % (i + 1, PEERS))
    nodes.append(suite.writer("n%d" % (i + 1), config=cfg,
                              ports={"raft": RAFT[i], "http": HTTP[i]}))
NS = "/api/v1/default"
# An RFC 9110 list of entity tags: valid HTTP, but not a value this writer's If-Match takes.
LONG_IF_MATCH = ", ".join('"%d"' % (1000000 + i) for i in range(60))  # 659 bytes
LONG_KEYS = ["k" * 129, "k" * 150, "k" * 600]  # an Idempotency-Key takes 1..128 bytes


def roles():
    leader = leader_of(nodes)
    return leader, [n for n in nodes if n is not leader][0]


def start_cluster():
    for n in nodes:
        n.start(wait_namespace=None)
    print("    leader: %s" % leader_of(nodes).name)
    for n in nodes:
        n.wait_namespace("default", 30)


def value_at(node, key):
    """(value, lsn) of key read through the leader, None when absent."""
    status, doc = get(node.ports["http"], key, "?consistency=linearizable")
    check(status in (200, 404), "linearizable GET %s on %s: %d %r" % (key, node.name, status, doc))
    return (unb64(doc["value"]), doc["lsn"]) if status == 200 else None


def same_answer(key, value, headers, what):
    """The write sent to the leader and to the follower is answered alike, and neither writes."""
    leader, f = roles()
    before = value_at(leader, key)
    got = {}
    for n in (leader, f):
        status, _, body = put(n.ports["http"], key, value, headers)
        got[n.name] = (status, json.loads(body).get("error", "") if body else "")
    sl, sf = got[leader.name][0], got[f.name][0]
    check(sl == sf, "%s: the leader answered %r, the follower %r" % (what, got[leader.name],
                                                                     got[f.name]), "raft")
    check(sl == 400, "%s: answered %r by the leader" % (what, got[leader.name]), "http")
    after = value_at(f, key)
    check(after == before, "%s: %s was %r and is now %r" % (what, key, before, after), "raft")


def forwarded_preconditions():
    """If-Match and Idempotency-Key go to the leader whole: a long If-Match (a list of ETags) or
    Idempotency-Key is the leader's 400 on a follower too, and nothing is written; a short
    If-Match is evaluated by the leader (412 on a mismatch, 200 on a match)."""
    leader, f = roles()
    status, _, body = put(leader.ports["http"], "cond", b"v1")
    check(status == 200, "PUT cond: %d %r" % (status, body))
    lsn = json.loads(body)["lsn"]
    same_answer("cond", b"unconditional", {"If-Match": LONG_IF_MATCH},
                "If-Match of %d bytes" % len(LONG_IF_MATCH))
    for k in LONG_KEYS:
        same_answer("idem-long", b"twice?", {"Idempotency-Key": k},
                    "Idempotency-Key of %d bytes" % len(k))
    status, _, body = put(f.ports["http"], "cond", b"stale", {"If-Match": '"%d"' % (lsn + 1000)})
    check(status == 412, "a stale If-Match through the follower: %d %r" % (status, body), "raft")
    check(value_at(f, "cond") == (b"v1", lsn), "cond changed by a write that failed its If-Match")
    status, _, body = put(f.ports["http"], "cond", b"v2", {"If-Match": '"%d"' % lsn})
    check(status == 200, "a current If-Match through the follower: %d %r" % (status, body), "raft")
    check(value_at(leader, "cond") == (b"v2", json.loads(body)["lsn"]), "cond after its If-Match")
    # A 128-byte key is taken, through the follower as on the leader: applied once.
    k = {"Idempotency-Key": "i" * 128}
    s1, _, b1 = put(f.ports["http"], "idem-128", b"first", k)
    s2, _, b2 = put(leader.ports["http"], "idem-128", b"second", k)
    check(s1 == 200 and s2 == 200 and json.loads(b1)["lsn"] == json.loads(b2)["lsn"],
          "a 128-byte Idempotency-Key twice: %d %r / %d %r" % (s1, b1, s2, b2), "raft")


suite.run([start_cluster, forwarded_preconditions])
