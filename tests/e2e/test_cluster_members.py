#!/usr/bin/env python3
"""End to end, cluster membership (docs/raft.md "Membership"): a data directory of another
cluster is refused; a single writer (one-voter cluster) grows to three with the admin API, then to
four and five, shrinks back to three and moves its leadership, all under write load; every
acknowledged write ends on every member with the same LSN, the grown cluster survives the loss of
its leader, and with a single writer left a write fails with 503 after [raft] leader_wait_ms."""

import http.client
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Failure, Suite, Writer, b64, check, free_port, unb64, wait_for  # noqa

suite = Suite("cluster-members")
N = 5
RAFT = [free_port() for _ in range(N)]
HTTP = [free_port() for _ in range(N)]
nodes = []
for i in range(N):
    # Writer 1 is a single writer (it bootstraps itself); the others join it.
    cfg = ("[raft]\nnode_id = %d\ncluster_id = \"grow\"\nelection_timeout_ms = 1000\n"
           "heartbeat_timeout_ms = 100\nsnapshot_threshold = 20000\nsnapshot_trailing = 20000\n"
           "leader_wait_ms = 2000\n"
           "%s" % (i + 1, "" if i == 0 else "join = true\n"))
    nodes.append(suite.writer("n%d" % (i + 1), config=cfg,
                              ports={"raft": RAFT[i], "http": HTTP[i]}))
# Writers the cluster must refuse: one that bootstrapped a cluster of its own, one of another
# cluster (it waits to join).
STRAY_RAFT, STRAY_HTTP, FOREIGN_RAFT, FOREIGN_HTTP = (free_port() for _ in range(4))
stray = suite.writer("stray", config="[raft]\nnode_id = 7\ncluster_id = \"grow\"\n",
                     ports={"raft": STRAY_RAFT, "http": STRAY_HTTP})
foreign = suite.writer("foreign",
                       config="[raft]\nnode_id = 8\ncluster_id = \"other\"\njoin = true\n",
                       ports={"raft": FOREIGN_RAFT, "http": FOREIGN_HTTP})
members = []  # nodes in the configuration
acked = {}
acked_lock = threading.Lock()


def request(port, method, path, body=None, timeout=30):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body,
                  headers={"Content-Type": "application/json"} if body is not None else {})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def status_cluster(n):
    s, b = request(n.ports["http"], "GET", "/status/cluster")
    check(s == 200, "/status/cluster on %s: %d %r" % (n.name, s, b), "http")
    return json.loads(b)


def leader_of(candidates, timeout=15):
    def find():
        found = []
        for n in candidates:
            try:
                s, b = request(n.ports["http"], "GET", "/status/leader", timeout=3)
            except OSError:
                continue
            if s == 200 and json.loads(b).get("isLeader") is True:
                found.append(n)
        check(len(found) <= 1, "two leaders: %r" % [n.name for n in found], "raft")
        return found[0] if found else None
    return wait_for("a leader among %r" % [n.name for n in candidates], find, timeout, 0.1)


class Load(threading.Thread):
    """One write at a time to the members in turn (forwarded by followers), retried with its
    Idempotency-Key until acknowledged. Keys are the load's own: a write given up when the load
    stops may still apply, and must not overwrite a key acknowledged by an earlier load."""

    def __init__(self, tag):
        super().__init__(daemon=True)
        self.tag = tag
        self.stopping = threading.Event()
        self.ok = 0

    def run(self):
        k = 0
        while not self.stopping.is_set():
            key, value = "%s-%d" % (self.tag, k), os.urandom(32)
            for attempt in range(100):
                n = members[(k + attempt) % len(members)]
                try:
                    s, b = request(n.ports["http"], "PUT", "/api/v1/default/kv/" + key,
                                   json.dumps({"value": b64(value)}).encode(), timeout=15)
                except OSError:
                    s = 0
                if s == 200:
                    with acked_lock:
                        acked[key] = (value, json.loads(b)["lsn"])
                    self.ok += 1
                    break
                if self.stopping.is_set():
                    break
                time.sleep(0.05)
            k += 1


def add(via, n, role="voter"):
    i = nodes.index(n)
    body = {"id": i + 1, "raftAddress": "127.0.0.1:%d" % RAFT[i],
            "httpAddress": "127.0.0.1:%d" % HTTP[i], "role": role}
    s, b = request(via.ports["http"], "POST", "/admin/cluster/members", json.dumps(body).encode(),
                   timeout=60)
    check(s == 200, "add %s via %s: %d %r" % (n.name, via.name, s, b), "raft")
    members.append(n)


def remove(via, n):
    s, b = request(via.ports["http"], "DELETE", "/admin/cluster/members/%d" % (nodes.index(n) + 1),
                   timeout=60)
    check(s == 200, "remove %s via %s: %d %r" % (n.name, via.name, s, b), "raft")
    members.remove(n)


def check_members(expect):
    def ok():
        doc = status_cluster(expect[0])
        ids = sorted(m["id"] for m in doc["members"])
        want = sorted(nodes.index(n) + 1 for n in expect)
        if ids != want:
            return None
        for m in doc["members"]:
            check(m["role"] == "voter", "member %r is not a voter" % m, "raft")
        return doc
    return wait_for("members %r" % [n.name for n in expect], ok, 15, 0.2)


def cluster_id_refused():
    n = nodes[0]
    n.start(wait_namespace="default")
    n.stop_clean()
    n.extra = ["--set", "raft.cluster_id=other"]
    n.proc = None
    try:
        n.start(wait_namespace=None, timeout=10)
        raise Failure("a writer started on the data directory of another cluster", "raft")
    except Failure as e:
        if "exited" not in str(e):
            raise
    check(n.proc.wait(10) != 0, "the refused start must exit non-zero")
    tail = n.log_tail(5)
    check('belongs to cluster "grow"' in tail and 'configured for cluster "other"' in tail,
          "the refusal must name both clusters:\n" + tail, "raft")
    n.extra = []


def grow_single_to_three():
    single = nodes[0]
    single.start(wait_namespace="default")
    members.append(single)
    for n in nodes[1:3]:
        n.start(wait_namespace=None)
    load = Load("grow")
    load.start()
    time.sleep(0.5)
    add(single, nodes[1])
    add(nodes[1], nodes[2])  # through a follower: forwarded to the leader
    check_members(nodes[:3])
    time.sleep(0.5)
    load.stopping.set()
    load.join(30)
    check(load.ok > 0, "no write acknowledged while growing")
    print("    1 -> 3 writers; %d writes acknowledged meanwhile" % load.ok)
    converged(members)


def grow_to_five_and_back():
    for n in nodes[3:5]:
        n.start(wait_namespace=None)
    load = Load("five")
    load.start()
    time.sleep(0.3)
    leader = leader_of(members)
    add(leader, nodes[3])
    check_members(nodes[:4])
    add(nodes[3], nodes[4])
    check_members(nodes[:5])
    time.sleep(0.3)
    # Back to three: remove the first writer, made the leader first, and another one.
    if leader_of(members) is not nodes[0]:
        s, b = request(nodes[1].ports["http"], "POST", "/admin/cluster/transfer",
                       json.dumps({"id": 1}).encode(), timeout=60)
        check(s == 200, "transfer to writer 1: %d %r" % (s, b), "raft")
        check(leader_of(members, 15) is nodes[0], "writer 1 does not lead", "raft")
    remove(nodes[4], nodes[0])
    # It committed its own removal and knows it: a write to it says so at once, rather than
    # waiting for a leader that will never come.
    t0 = time.monotonic()
    s, b = request(nodes[0].ports["http"], "PUT", "/api/v1/default/kv/removed",
                   json.dumps({"value": b64("r")}).encode())
    check(s == 503 and "it was removed" in json.loads(b)["error"] and
          time.monotonic() - t0 < 1.5,
          "a write to the removed leader: %d %r after %.1f s" % (s, b, time.monotonic() - t0),
          "raft")
    print("    the removed leader answers a write: %d %s" % (s, json.loads(b)["error"][:60]))
    leader = leader_of(members, 15)
    remove(leader, [n for n in members if n is not leader][0])
    check_members(sorted(members, key=nodes.index))
    time.sleep(0.5)
    load.stopping.set()
    load.join(30)
    check(load.ok > 0, "no write acknowledged while the membership changed")
    print("    3 -> 4 -> 5 -> 3 writers (%s); %d writes acknowledged meanwhile" %
          (", ".join(n.name for n in members), load.ok))
    converged(members)


def transfer_under_load():
    """Leadership moved with the admin API (sent to a follower, forwarded) while writes go on:
    the chosen writer leads and takes writes, and every acknowledged write stays everywhere.
    (Checked to fail when the node's transfer never calls raft_transfer.)"""
    load = Load("transfer")
    load.start()
    time.sleep(0.3)
    leader = leader_of(members)
    target = [n for n in members if n is not leader][0]
    via = [n for n in members if n is not leader][-1]
    before = load.ok
    s, b = request(via.ports["http"], "POST", "/admin/cluster/transfer",
                   json.dumps({"id": nodes.index(target) + 1}).encode())
    check(s == 200, "transfer to %s via %s: %d %r" % (target.name, via.name, s, b), "raft")
    check(leader_of(members, 10) is target, "leadership did not move to %s" % target.name, "raft")
    time.sleep(0.5)
    load.stopping.set()
    load.join(30)
    check(load.ok > before, "no write acknowledged after the transfer")
    print("    leadership %s -> %s under load; %d writes acknowledged meanwhile" %
          (leader.name, target.name, load.ok))
    converged(members)


class UnkeyedLoad(threading.Thread):
    """Writes without an Idempotency-Key to one writer, each attempt under a key of its own (so a
    key present in the end means that attempt applied), never retried; keeps every answer."""

    def __init__(self, tag, node):
        super().__init__(daemon=True)
        self.tag, self.node = tag, node
        self.stopping = threading.Event()
        self.answers = []  # (key, status, unison-outcome header, error message)

    def run(self):
        k = 0
        while not self.stopping.is_set():
            key = "%s-%d" % (self.tag, k)
            k += 1
            c = http.client.HTTPConnection("127.0.0.1", self.node.ports["http"], timeout=30)
            try:
                c.request("PUT", "/api/v1/default/kv/" + key,
                          body=json.dumps({"value": b64(key)}),
                          headers={"Content-Type": "application/json"})
                r = c.getresponse()
                b = r.read()
                err = "" if r.status == 200 else json.loads(b).get("error", "")
                self.answers.append((key, r.status, r.getheader("unison-outcome"), err))
            except OSError as e:
                self.answers.append((key, 0, "unknown", str(e)))  # no answer: unknown too
            finally:
                c.close()


def transfer_unkeyed_outcomes():
    """Leadership moved back and forth under writes without an Idempotency-Key: a write answered
    with a failure that is not "outcome unknown" (503 + unison-outcome: unknown) is applied
    nowhere, and a write forwarded by a writer that never leads is not failed by the transfer
    (the leader refuses it as "not the leader" and the follower waits for the next one)."""
    a = leader_of(members)
    b, bystander = [n for n in members if n is not a][:2]
    direct = [UnkeyedLoad("direct%d" % i, a) for i in range(3)]
    forwarded = [UnkeyedLoad("fwd%d" % i, bystander) for i in range(2)]
    for t in direct + forwarded:
        t.start()
    frm, to = a, b
    for _ in range(4):
        time.sleep(0.4)
        s, body = request(frm.ports["http"], "POST", "/admin/cluster/transfer",
                          json.dumps({"id": nodes.index(to) + 1}).encode())
        check(s == 200, "transfer to %s via %s: %d %r" % (to.name, frm.name, s, body), "raft")
        check(leader_of(members, 10) is to, "leadership did not move to %s" % to.name, "raft")
        frm, to = to, frm
    time.sleep(0.4)
    for t in direct + forwarded:
        t.stopping.set()
    for t in direct + forwarded:
        t.join(40)
    leader = leader_of(members)
    # Every answered write is applied on the leader (barrier: a linearizable read).
    s, _ = request(leader.ports["http"], "GET",
                   "/api/v1/default/kv/never-written?consistency=linearizable")
    check(s == 404, "linearizable read: %d" % s)
    counts = {"ok": 0, "failed": 0, "unknown": 0}
    for t in direct + forwarded:
        for key, status, outcome, err in t.answers:
            s, body = request(leader.ports["http"], "GET", "/api/v1/default/kv/" + key)
            if status == 200:
                counts["ok"] += 1
                check(s == 200, "acknowledged %s missing: %d" % (key, s), "raft")
                acked[key] = (key.encode(), json.loads(body)["lsn"])
            elif outcome == "unknown":
                counts["unknown"] += 1
                check(status in (0, 503) and (status == 0 or err.startswith("outcome unknown")),
                      "%s: outcome unknown with %d %r" % (key, status, err))
            else:
                counts["failed"] += 1
                check(s == 404, "%s was answered %d %r (a failure) but is applied" %
                      (key, status, err), "raft")
                check(t in direct, "%s forwarded by %s failed during a transfer: %d %r" %
                      (key, bystander.name, status, err), "raft")
    check(counts["ok"] > 0, "no write acknowledged: %r" % counts)
    print("    4 transfers under unkeyed writes: %d acknowledged, %d failed (applied nowhere), "
          "%d outcome unknown" % (counts["ok"], counts["failed"], counts["unknown"]))
    converged(members)


def add_unreachable():
    """Adding a writer that is not running fails after raft's catch-up gives up, names the cause,
    leaves it as a spare (listed unreachable), and it can be removed again."""
    leader = leader_of(members)
    body = {"id": 9, "raftAddress": "127.0.0.1:%d" % free_port(), "httpAddress": "127.0.0.1:1"}
    s, b = request(leader.ports["http"], "POST", "/admin/cluster/members",
                   json.dumps(body).encode(), timeout=60)
    check(s == 503 and "could not be reached" in json.loads(b)["error"],
          "add of a writer that is not running: %d %r" % (s, b), "raft")
    doc = status_cluster(leader)
    nine = [m for m in doc["members"] if m["id"] == 9]
    check(len(nine) == 1 and nine[0]["role"] == "spare" and nine[0]["reachable"] is False,
          "writer 9 in /status/cluster: %r" % nine, "raft")
    s, b = request(leader.ports["http"], "DELETE", "/admin/cluster/members/9", timeout=60)
    check(s == 200, "remove writer 9: %d %r" % (s, b), "raft")
    check_members(sorted(members, key=nodes.index))


def post(node, path, body):
    s, b = request(node.ports["http"], "POST", path, json.dumps(body).encode(), timeout=60)
    return s, json.loads(b)


def add_refused():
    """raft cannot tell another cluster's log from this one's (same indexes and terms, other
    data): the leader asks a writer who it is before it joins. A writer that bootstrapped itself
    and took a write, a writer of another cluster, a raft address that is a name, the leader's
    own demotion, and transfers and removals naming no voter are refused with what is wrong,
    and the configuration stays as it was."""
    leader = leader_of(members)
    # Writer 7 added before it runs: unchecked, it stays a spare; then it starts without join
    # (it bootstraps alone) and the add is repeated, as the 503 suggests: its own entry, which the
    # cluster lists too, must not let its log in.
    s, doc = post(leader, "/admin/cluster/members",
                  {"id": 7, "raftAddress": "127.0.0.1:%d" % STRAY_RAFT,
                   "httpAddress": "127.0.0.1:%d" % STRAY_HTTP})
    check(s == 503 and "could not be reached" in doc.get("error", ""),
          "add of writer 7 before it runs: %d %r" % (s, doc), "raft")
    stray.start(wait_namespace="default")
    s, _, = request(stray.ports["http"], "PUT", "/api/v1/default/kv/stray",
                    json.dumps({"value": b64("mine")}).encode())
    check(s == 200, "a write to the stray writer: %d" % s)
    foreign.start(wait_namespace=None)
    cases = [
        ({"id": 7, "raftAddress": "127.0.0.1:%d" % STRAY_RAFT,
          "httpAddress": "127.0.0.1:%d" % STRAY_HTTP}, 409,
         "it holds another cluster's raft log, which would mix with this one's: start it with an "
         "empty data directory and [raft] join = true (its members: 7@127.0.0.1:%d)" % STRAY_RAFT),
        ({"id": 6, "raftAddress": "127.0.0.1:%d" % free_port(),
          "httpAddress": "127.0.0.1:%d" % STRAY_HTTP}, 409, "is writer 7, not 6"),
        ({"id": 6, "raftAddress": "127.0.0.1:%d" % STRAY_RAFT}, 409,
         "raft address 127.0.0.1:%d is writer 7's, not writer 6's" % STRAY_RAFT),
        ({"id": 8, "raftAddress": "127.0.0.1:%d" % FOREIGN_RAFT,
          "httpAddress": "127.0.0.1:%d" % FOREIGN_HTTP, "role": "standby"}, 409,
         "it belongs to cluster 'other', not 'grow'"),
        ({"id": 9, "raftAddress": "localhost:%d" % free_port()}, 400,
         "is not an IP address"),
        ({"id": nodes.index(leader) + 1, "raftAddress": "127.0.0.1:%d" % RAFT[nodes.index(leader)],
          "role": "spare"}, 409, "leads: transfer leadership first"),
    ]
    for body, status, why in cases:
        s, doc = post(leader, "/admin/cluster/members", body)
        check(s == status and why in doc.get("error", ""),
              "add %r: %d %r, expected %d naming %r" % (body, s, doc, status, why), "raft")
    spare = [n for n in members if n is not leader][0]
    for body, status, why in [({"id": 9}, 404, "not a member"),
                              ({"id": nodes.index(leader) + 1}, 400, "it leads already")]:
        s, doc = post(spare, "/admin/cluster/transfer", body)
        check(s == status and why in doc.get("error", ""),
              "transfer %r: %d %r, expected %d naming %r" % (body, s, doc, status, why), "raft")
    s, b = request(leader.ports["http"], "DELETE", "/admin/cluster/members/9")
    check(s == 404 and "writer 9: it is not a member" in json.loads(b)["error"],
          "remove of writer 9: %d %r" % (s, b), "raft")
    s, b = request(leader.ports["http"], "DELETE", "/admin/cluster/members/7", timeout=60)
    check(s == 200, "remove of the spare writer 7: %d %r" % (s, b), "raft")
    check_members(sorted(members, key=nodes.index))
    s, b = request(stray.ports["http"], "GET", "/api/v1/default/kv/stray")
    check(s == 200, "the stray writer lost its own write: %d %r" % (s, b))
    Writer.stop_all([stray, foreign], only_alive=True)


def survives_a_kill():
    """Three voters of the grown cluster: the leader dies, the other two go on."""
    leader = leader_of(members)
    leader.kill()
    rest = [n for n in members if n is not leader]
    new = leader_of(rest, 10)
    s, b = request(new.ports["http"], "PUT", "/api/v1/default/kv/after",
                   json.dumps({"value": b64("a")}).encode())
    check(s == 200, "write after losing the leader: %d %r" % (s, b), "raft")
    acked["after"] = (b"a", json.loads(b)["lsn"])
    converged(rest)


def no_quorum_503():
    """One writer of three left: no leader can be elected; a write waits [raft] leader_wait_ms
    (2 s here) and fails with 503 + Retry-After, and applies nowhere."""
    alive = [n for n in members if n.alive()]
    check(len(alive) == 2, "expected two live members, found %r" % [n.name for n in alive])
    # The follower is left (a leader left alone would fail the write when it steps down instead).
    leader = leader_of(alive)
    leader.kill()
    lone = [n for n in alive if n is not leader][0]
    c = http.client.HTTPConnection("127.0.0.1", lone.ports["http"], timeout=30)
    t0 = time.monotonic()
    c.request("PUT", "/api/v1/default/kv/no-quorum", body=json.dumps({"value": b64("x")}),
              headers={"Content-Type": "application/json"})
    r = c.getresponse()
    body = r.read()
    took = time.monotonic() - t0
    c.close()
    check(r.status == 503, "write without a quorum: %d %r" % (r.status, body), "raft")
    check(r.getheader("Retry-After") == "1", "503 without Retry-After: %r" % r.getheaders())
    check("leader" in json.loads(body)["error"], "the 503 should say no leader: %r" % body)
    check(1.5 <= took <= 8, "the write waited %.1f s; leader_wait_ms is 2000" % took)
    s, b = request(lone.ports["http"], "GET", "/api/v1/default/kv/no-quorum")
    check(s == 404, "the refused write must not be readable: %d %r" % (s, b), "raft")
    print("    a write without a quorum failed with 503 after %.1f s" % took)


def converged(ns):
    newest, (_, last) = max(acked.items(), key=lambda kv: kv[1][1])
    for n in ns:
        def at():
            s, _ = request(n.ports["http"], "GET",
                           "/api/v1/default/kv/%s?min_lsn=%d" % (newest, last))
            return s == 200
        wait_for("%s at LSN %d" % (n.name, last), at, 20)
        for key, (value, lsn) in acked.items():
            s, b = request(n.ports["http"], "GET", "/api/v1/default/kv/" + key)
            doc = json.loads(b)
            check(s == 200 and unb64(doc["value"]) == value and doc["lsn"] == lsn,
                  "%s: %s is %d %r, acknowledged at LSN %d" % (n.name, key, s, doc, lsn), "raft")


def stop_all():
    Writer.stop_all(nodes, only_alive=True)


suite.run([cluster_id_refused, grow_single_to_three, grow_to_five_and_back, transfer_under_load,
           transfer_unkeyed_outcomes,
           add_unreachable, add_refused, survives_a_kill, no_quorum_503, stop_all])
