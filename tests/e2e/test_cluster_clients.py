#!/usr/bin/env python3
"""End to end, clients of a three-writer cluster (docs/raft.md "Clients and the cluster"): writes
sent to any writer (HTTP and RESP) land once and read back on every writer, a follower answers a
forwarded write only once it applied it, linearizable reads on a follower, Idempotency-Key, the
cluster status, leadership transfer, 307 / -MOVED with forwarding off, and, while clients write
to all three, the leader SIGKILLed (a new leader within 10 s, the old one catches up), then a
follower SIGKILLed (the leader keeps serving, the follower restarts and catches up): every
acknowledged write present once on every writer, the same WAL bytes at every LSN on every writer,
and the history of writes and linearizable reads on shared keys through both kills linearizable
(lincheck.py)."""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Failure, RespConn, Suite, Writer, check, free_port, unb64, wait_for  # noqa: E402
from cluster_lib import (Load, Record, check_acked_everywhere, check_history, check_wals,  # noqa
                         get, leader_of, put, request, start_writers, wait_applied)

suite = Suite("cluster-clients")
N = 3
RAFT = [free_port() for _ in range(N)]
HTTP = [free_port() for _ in range(N)]
RESP = [free_port() for _ in range(N)]
PEERS = ", ".join('"%d@127.0.0.1:%d,http=127.0.0.1:%d,resp=127.0.0.1:%d"' %
                  (i + 1, RAFT[i], HTTP[i], RESP[i]) for i in range(N))
nodes = []
for i in range(N):
    cfg = ("[raft]\nnode_id = %d\ncluster_id = \"e2e\"\npeers = [%s]\n"
           "election_timeout_ms = 1000\nheartbeat_timeout_ms = 100\nleader_wait_ms = 8000\n"
           # raft keeps enough log for a writer down a few seconds under load: catching up
           # beyond it (out of band, over HTTP) is not this test's subject.
           "snapshot_threshold = 20000\nsnapshot_trailing = 20000\n"
           % (i + 1, PEERS))
    nodes.append(suite.writer("n%d" % (i + 1), config=cfg,
                              ports={"raft": RAFT[i], "http": HTTP[i], "resp": RESP[i]}))
HISTORY_KEYS = ["h-%d" % i for i in range(6)]
rec = Record(HISTORY_KEYS)  # acknowledged writes, and the history of the shared keys
acked = rec.acked


def follower(leader):
    return [n for n in nodes if n is not leader and n.alive()][0]


def check_value(n, key, value, lsn, query=""):
    status, doc = get(n.ports["http"], key, query)
    check(status == 200, "%s: GET %s%s answered %d %r" % (n.name, key, query, status, doc), "raft")
    check(unb64(doc["value"]) == value, "%s: %s has another value" % (n.name, key), "raft")
    check(doc.get("lsn") == lsn, "%s: %s has LSN %r, the write answered %d" %
          (n.name, key, doc.get("lsn"), lsn), "raft")


# --- cases ----------------------------------------------------------------------------------------


def start_cluster():
    start_writers(nodes)


def writes_to_every_node():
    """HTTP and RESP writes to each writer: forwarded by followers, answered once applied there
    (read-your-writes on the same writer at once), and readable with the same LSN everywhere."""
    for i, n in enumerate(nodes):
        for k in range(5):
            key, value = "w%d-%d" % (i, k), os.urandom(50)
            status, _, body = put(n.ports["http"], key, value)
            check(status == 200, "%s: PUT %s answered %d %r" % (n.name, key, status, body), "raft")
            lsn = json.loads(body)["lsn"]
            acked[key] = (value, lsn)
            check_value(n, key, value, lsn)  # no ?min_lsn: applied here before the answer
        r = RespConn(n.ports["resp"])
        for k in range(5):
            key = "r%d-%d" % (i, k)
            reply = r.call("SET", key, "resp-%d-%d" % (i, k))
            check(reply == "OK", "%s: RESP SET %s: %r" % (n.name, key, reply), "resp")
            got = r.call("GET", key)
            check(got == ("resp-%d-%d" % (i, k)).encode(),
                  "%s: RESP GET %s right after SET: %r" % (n.name, key, got), "resp")
        r.close()
    for n in nodes:
        for key, (value, lsn) in acked.items():
            wait_for("%s on %s" % (key, n.name),
                     lambda: get(n.ports["http"], key, "?min_lsn=%d" % lsn)[0] == 200, 10)
            check_value(n, key, value, lsn)
    # Each write landed once: the namespace's LSN counts exactly the 30 writes made.
    def lsns():
        status, _, body = request(nodes[0].ports["http"], "GET", "/status/cluster")
        got = {m["id"]: m.get("namespaces", {}).get("default")
               for m in json.loads(body)["members"]}
        check(all(v is not None and v <= 30 for v in got.values()),
              "30 writes made; the default namespace's LSNs: %r" % got, "raft")
        return got if set(got.values()) == {30} else None
    wait_for("LSN 30 on every writer", lsns, 10)


def cluster_status():
    status, _, body = request(nodes[1].ports["http"], "GET", "/status/cluster")
    check(status == 200, "/status/cluster: %d %r" % (status, body), "http")
    doc = json.loads(body)
    check(len(doc["members"]) == 3, "/status/cluster lists %d members" % len(doc["members"]))
    leader = leader_of(nodes)
    for m in doc["members"]:
        i = m["id"] - 1
        check(m["raftAddress"] == "127.0.0.1:%d" % RAFT[i], "member %r" % m)
        check(m["httpAddress"] == "http://127.0.0.1:%d" % HTTP[i], "member %r" % m)
        check(m["role"] == "voter" and m["reachable"] is True, "member %r" % m)
        check(m["isLeader"] == (nodes[i] is leader), "member %r; leader %s" % (m, leader.name))
        check(m["appliedIndex"] > 0 and m["lastIndex"] >= m["appliedIndex"], "member %r" % m)
        check(m["state"] == ("leader" if nodes[i] is leader else "follower"), "member %r" % m)


def linearizable_read():
    """A write acknowledged by one writer is seen at once by a linearizable read on another."""
    leader = leader_of(nodes)
    others = [n for n in nodes if n is not leader]
    for k in range(10):
        a, b = others[k % 2], others[(k + 1) % 2]
        key, value = "lin-%d" % k, os.urandom(20)
        status, _, body = put(a.ports["http"], key, value)
        check(status == 200, "PUT on %s: %d %r" % (a.name, status, body))
        lsn = json.loads(body)["lsn"]
        acked[key] = (value, lsn)
        check_value(b, key, value, lsn, "?consistency=linearizable")
    # RESP: BARRIER, then GET on the same connection, on the other follower.
    r = RespConn(others[1].ports["resp"])
    for k in range(5):
        value = os.urandom(16).hex().encode()
        status, _, body = put(others[0].ports["http"], "lin-resp", value)
        check(status == 200, "PUT on %s: %d %r" % (others[0].name, status, body))
        acked["lin-resp"] = (value, json.loads(body)["lsn"])
        r.send(b"*1\r\n$7\r\nBARRIER\r\n*2\r\n$3\r\nGET\r\n$8\r\nlin-resp\r\n")
        ok, got = r.reply(), r.reply()
        check(ok == "OK" and got == value, "RESP BARRIER + GET on %s: %r %r, the write was %r" %
              (others[1].name, ok, got, value), "resp")
    r.close()
    status, doc = get(others[0].ports["http"], "lin-0", "?consistency=sometimes")
    check(status == 400 and "linearizable" in doc["error"], "bad consistency: %d %r" % (status, doc))


def idempotency_key():
    leader = leader_of(nodes)
    f = follower(leader)
    hdr = {"Idempotency-Key": "order-17"}
    s1, _, b1 = put(f.ports["http"], "idem", b"first", hdr)
    s2, _, b2 = put(leader.ports["http"], "idem", b"first", hdr)
    check(s1 == 200 and s2 == 200, "idempotent PUTs: %d %r / %d %r" % (s1, b1, s2, b2))
    l1, l2 = json.loads(b1)["lsn"], json.loads(b2)["lsn"]
    check(l1 == l2, "a retried write with the same Idempotency-Key got LSN %d, then %d" % (l1, l2))
    # Another body under the key is not a retry: refused, nothing written.
    s3, _, b3 = put(f.ports["http"], "idem", b"second", hdr)
    check(s3 == 422 and "order-17" in json.loads(b3)["error"],
          "another write under a used Idempotency-Key: %d %r" % (s3, b3))
    for n in nodes:
        check_value(n, "idem", b"first", l1, "?consistency=linearizable")
    acked["idem"] = (b"first", l1)
    # Another key is another write.
    s3, _, b3 = put(f.ports["http"], "idem", b"third", {"Idempotency-Key": "order-18"})
    check(s3 == 200 and json.loads(b3)["lsn"] > l1, "a new key: %d %r" % (s3, b3))
    acked["idem"] = (b"third", json.loads(b3)["lsn"])
    # A conditional write with a key, sent again through another follower and then the leader:
    # the first answer, not the 412 its If-Match (now stale, by that very write) would get.
    l3 = json.loads(b3)["lsn"]
    cas = {"Idempotency-Key": "order-19", "If-Match": str(l3)}
    other = [n for n in nodes if n not in (leader, f) and n.alive()][0]
    answers = [put(n.ports["http"], "idem", b"fourth", cas) for n in (f, other, leader)]
    check([a[0] for a in answers] == [200] * 3, "a conditional keyed PUT via a follower, then "
          "again via another one and the leader: %r" % [(a[0], a[2]) for a in answers])
    lsns = [json.loads(a[2])["lsn"] for a in answers]
    check(lsns[0] > l3 and lsns == [lsns[0]] * 3, "the retried conditional PUT got LSNs %r" % lsns)
    for n in nodes:
        check_value(n, "idem", b"fourth", lsns[0], "?consistency=linearizable")
    acked["idem"] = (b"fourth", lsns[0])


def transfer_leadership():
    leader = leader_of(nodes)
    target = follower(leader)
    tid = nodes.index(target) + 1
    # Sent to a follower: forwarded to the leader like every admin change.
    status, _, body = request(target.ports["http"], "POST", "/admin/cluster/transfer",
                              json.dumps({"id": tid}).encode())
    check(status == 200, "transfer: %d %r" % (status, body), "raft")
    new = leader_of(nodes, 10)
    check(new is target, "leadership went to %s, not %s" % (new.name, target.name), "raft")
    status, _, body = put(leader.ports["http"], "after-transfer", b"t")
    check(status == 200, "write after the transfer: %d %r" % (status, body), "raft")
    acked["after-transfer"] = (b"t", json.loads(body)["lsn"])


def forwarding_off():
    """A follower with [raft] forward = false redirects writes (307 + Location) and linearizable
    reads, and answers RESP writes with -MOVED naming the leader's RESP address."""
    leader = leader_of(nodes)
    f = follower(leader)
    f.stop_clean()
    f.extra = ["--set", "raft.forward=false"]
    f.start(wait_namespace="default")
    leader = leader_of(nodes)
    li = nodes.index(leader)
    status, hdrs, body = put(f.ports["http"], "redirected", b"x")
    check(status == 307, "write on a follower without forwarding: %d %r" % (status, body))
    want = "http://127.0.0.1:%d/api/v1/default/kv/redirected" % HTTP[li]
    check(hdrs.get("location") == want, "Location %r, want %r" % (hdrs.get("location"), want))
    check(json.loads(body)["leader"] == "http://127.0.0.1:%d" % HTTP[li], "body %r" % body)
    status, hdrs, body = request(f.ports["http"], "GET",
                                 "/api/v1/default/kv/idem?consistency=linearizable")
    check(status == 307 and hdrs.get("location", "").endswith("consistency=linearizable"),
          "linearizable read without forwarding: %d %r" % (status, hdrs))
    r = RespConn(f.ports["resp"])
    reply = r.call("SET", "moved", "x")
    r.close()
    check(isinstance(reply, Failure) and "MOVED 0 127.0.0.1:%d" % RESP[li] in str(reply),
          "RESP SET on a follower without forwarding: %r" % reply, "resp")
    status, _ = get(f.ports["http"], "redirected")
    check(status == 404, "the redirected write must not have happened: %d" % status)
    f.stop_clean()
    f.extra = []
    f.start(wait_namespace="default")


def kill_under_load(role):
    """Clients write (and read the shared keys linearizably) on all three writers; the leader, or
    a follower, is SIGKILLed. The writers left serve writes within 10 s (a new leader when the
    leader died), a keyed write acknowledged before the kill and retried through another writer
    after it answers with the first LSN, and the killed writer restarts and catches up from raft
    while the load goes on (converged checks the end state)."""
    leader = leader_of(nodes)
    victim = leader if role == "leader" else follower(leader)
    with Load(rec, nodes, "load-" + role) as load:
        time.sleep(1.5)
        # A keyed write acknowledged through a surviving writer just before the kill...
        a, b = [n for n in nodes if n is not victim]
        idem = "kill-idem-" + role
        st, _, body = put(a.ports["http"], idem, b"once", {"Idempotency-Key": idem})
        check(st == 200, "keyed write before the kill: %d %r" % (st, body))
        idem_lsn = json.loads(body)["lsn"]
        t0 = time.monotonic()
        victim.kill()  # SIGKILL
        rest = [n for n in nodes if n is not victim]
        new = leader_of(rest, 10)
        check(role == "leader" or new is leader,
              "leadership moved from %s to %s when a follower died" % (leader.name, new.name),
              "raft")
        # ... retried through the other writer after the kill: answered with the same LSN.
        st, _, body = put(b.ports["http"], idem, b"once", {"Idempotency-Key": idem})
        check(st == 200 and json.loads(body)["lsn"] == idem_lsn,
              "the retry of a keyed write after the %s's death: %d %r (first LSN %d)" %
              (role, st, body, idem_lsn), "raft")
        rec.ack(idem, b"once", idem_lsn)

        # The cluster serves writes within 10 s.
        def served():
            try:
                s, _, b = put(new.ports["http"], "after-kill-" + role, b"k")
            except OSError:
                return False
            if s == 200:
                rec.ack("after-kill-" + role, b"k", json.loads(b)["lsn"])
            return s == 200
        wait_for("a write on the leader", served, 10 - (time.monotonic() - t0), 0.05)
        print("    %s led and took a write %.2f s after the SIGKILL of the %s %s" %
              (new.name, time.monotonic() - t0, role, victim.name))
        time.sleep(1.0)
        victim.start(wait_namespace=None)
        time.sleep(1.5)
    print("    %d writes acknowledged by the load clients, %d attempts failed" %
          (load.ok(), load.failed()))
    check(sum(load.ok(n) for n in rest) > 0, "no write was acknowledged under load")


def kill_leader_under_load():
    kill_under_load("leader")


def kill_follower_under_load():
    kill_under_load("follower")


def converged():
    """Every acknowledged write is on every writer with its LSN, each exactly once, the WAL
    records are the same bytes at every LSN on all three, and the history of the shared keys
    through both kills is linearizable."""
    last = wait_applied(nodes, rec)
    check_acked_everywhere(nodes, rec)
    n = check_wals(nodes, rec, last)
    print("    %d LSNs compared byte for byte on 3 writers" % n)
    writes, reads, secs = check_history(nodes, rec)
    print("    history of %d writes and %d linearizable reads on %d keys is linearizable "
          "(checked in %.1f s)" % (writes, reads, len(HISTORY_KEYS), secs))


def stop_all():
    Writer.stop_all(nodes)


suite.run([start_cluster, writes_to_every_node, cluster_status, linearizable_read,
           idempotency_key, transfer_leadership, forwarding_off, kill_leader_under_load,
           kill_follower_under_load, converged, stop_all])
