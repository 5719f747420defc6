#!/usr/bin/env python3
"""End to end, clients of a three-writer cluster (docs/raft.md "Clients and the cluster"): writes
sent to any writer (HTTP and RESP) land once and read back on every writer, a follower answers a
forwarded write only once it applied it, linearizable reads on a follower, Idempotency-Key, the
cluster status, leadership transfer, 307 / -MOVED with forwarding off, and a leader SIGKILLed
while clients write to all three: a new leader within 10 s, the old one catches up, every
acknowledged write present once, the same WAL bytes at every LSN on every writer, and the history
of writes and linearizable reads on shared keys linearizable (lincheck.py)."""

import http.client
import json
import os
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Failure, RespConn, Suite, b64, check, expect_json, expect_write,  # noqa
                     free_port, unb64, wait_for)
from lincheck import check as linearizable_failures  # noqa: E402
from relayer_lib import wal_records  # noqa: E402

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
acked = {}  # key -> (value bytes, lsn): every write a client saw acknowledged
acked_lock = threading.Lock()
history = []  # operations on the HISTORY_KEYS for the linearizability check (lincheck.py)
history_lock = threading.Lock()
HISTORY_KEYS = ["h-%d" % i for i in range(6)]


# --- a small HTTP client for many requests (curl per request is too slow for load) --------------


def request(port, method, path, body=None, headers=None, timeout=15):
    """(status, headers dict, body bytes), or raises OSError / http.client errors."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        hdrs = {"Content-Type": "application/json"} if body is not None else {}
        hdrs.update(headers or {})
        c.request(method, path, body=body, headers=hdrs)
        r = c.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        c.close()


def put(port, key, value, headers=None, ns="default"):
    return request(port, "PUT", "/api/v1/%s/kv/%s" % (ns, key),
                   json.dumps({"value": b64(value)}).encode(), headers)


def get(port, key, query="", ns="default"):
    status, _, body = request(port, "GET", "/api/v1/%s/kv/%s%s" % (ns, key, query))
    return status, (json.loads(body) if body else None)


def leader_of(candidates, timeout=15):
    def find():
        leaders = []
        for n in candidates:
            if not n.alive():
                raise Failure("%s exited:\n%s" % (n.name, n.log_tail()), "raft")
            try:
                status, _, body = request(n.ports["http"], "GET", "/status/leader", timeout=3)
            except OSError:
                continue
            if status == 200 and json.loads(body).get("isLeader") is True:
                leaders.append(n)
        check(len(leaders) <= 1, "two leaders at once: %r" % [n.name for n in leaders], "raft")
        return leaders[0] if leaders else None
    return wait_for("a raft leader among %s" % [n.name for n in candidates], find, timeout, 0.1)


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
    for n in nodes:
        n.start(wait_namespace=None)
    leader = leader_of(nodes)
    print("    leader: %s" % leader.name)
    for n in nodes:
        n.wait_namespace("default", 30)


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
    s2, _, b2 = put(leader.ports["http"], "idem", b"second", hdr)
    check(s1 == 200 and s2 == 200, "idempotent PUTs: %d %r / %d %r" % (s1, b1, s2, b2))
    l1, l2 = json.loads(b1)["lsn"], json.loads(b2)["lsn"]
    check(l1 == l2, "a retried write with the same Idempotency-Key got LSN %d, then %d" % (l1, l2))
    for n in nodes:
        check_value(n, "idem", b"first", l1, "?consistency=linearizable")
    acked["idem"] = (b"first", l1)
    # Another key is another write.
    s3, _, b3 = put(f.ports["http"], "idem", b"third", {"Idempotency-Key": "order-18"})
    check(s3 == 200 and json.loads(b3)["lsn"] > l1, "a new key: %d %r" % (s3, b3))
    acked["idem"] = (b"third", json.loads(b3)["lsn"])


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


class Client(threading.Thread):
    """Writes its own keys to one writer until stopped; records acknowledged writes. A write
    that failed is retried with the same Idempotency-Key, so it applies at most once."""

    def __init__(self, node, name):
        super().__init__(daemon=True)
        self.node, self.cname = node, name
        self.stop_at = None
        self.ok = self.failed = 0
        self.stopping = threading.Event()

    def run(self):
        k = 0
        while not self.stopping.is_set():
            key, value = "%s-%d" % (self.cname, k), os.urandom(64)
            for attempt in range(40):
                try:
                    status, _, body = put(self.node.ports["http"], key, value,
                                          {"Idempotency-Key": key}, )
                except OSError:
                    status, body = 0, b""
                if status == 200:
                    with acked_lock:
                        acked[key] = (value, json.loads(body)["lsn"])
                    self.ok += 1
                    break
                self.failed += 1
                if self.stopping.is_set():
                    break
                time.sleep(0.05)
            k += 1


class HistoryClient(threading.Thread):
    """Overwrites (or reads linearizably) a few shared keys through one writer and records each
    operation's call and return times. A write is retried with its Idempotency-Key; one never
    acknowledged has an unknown outcome (ret None); a read that failed is dropped."""

    def __init__(self, node, kind, seed):
        super().__init__(daemon=True)
        self.node, self.kind = node, kind
        self.stopping = threading.Event()
        self.rnd = __import__("random").Random(seed)

    def run(self):
        k = 0
        while not self.stopping.is_set():
            key = self.rnd.choice(HISTORY_KEYS)
            if self.kind == "w":
                value = "%s-%d-%s" % (self.node.name, k, os.urandom(4).hex())
                op = {"key": key, "kind": "w", "value": value, "call": time.monotonic(),
                      "ret": None}
                for attempt in range(20):
                    try:
                        st, _, _ = put(self.node.ports["http"], key, value.encode(),
                                       {"Idempotency-Key": value})
                    except OSError:
                        st = 0
                    if st == 200:
                        op["ret"] = time.monotonic()
                        break
                    time.sleep(0.05)
            else:
                op = {"key": key, "kind": "r", "value": None, "call": time.monotonic(),
                      "ret": None}
                try:
                    st, doc = get(self.node.ports["http"], key, "?consistency=linearizable")
                except (OSError, ValueError):
                    st, doc = 0, None
                if st == 200:
                    op["value"], op["ret"] = unb64(doc["value"]).decode(), time.monotonic()
                elif st == 404 and doc is not None and doc.get("found") is False:
                    op["ret"] = time.monotonic()
            with history_lock:
                history.append(op)
            k += 1


def kill_leader_under_load():
    leader = leader_of(nodes)
    clients = [Client(n, "load-%s-%d" % (n.name, j)) for n in nodes for j in range(2)]
    clients += [HistoryClient(n, kind, i * 2 + (kind == "r"))
                for i, n in enumerate(nodes) for kind in ("w", "r")]
    for c in clients:
        c.start()
    time.sleep(1.5)
    # A keyed write acknowledged through a follower just before the kill...
    a, b = [n for n in nodes if n is not leader]
    st, _, body = put(a.ports["http"], "kill-idem", b"once", {"Idempotency-Key": "kill-idem"})
    check(st == 200, "keyed write before the kill: %d %r" % (st, body))
    idem_lsn = json.loads(body)["lsn"]
    t0 = time.monotonic()
    leader.kill()  # SIGKILL
    rest = [n for n in nodes if n is not leader]
    new = leader_of(rest, 10)
    # ... retried through the other writer under the new leader: answered with the same LSN.
    st, _, body = put(b.ports["http"], "kill-idem", b"twice", {"Idempotency-Key": "kill-idem"})
    check(st == 200 and json.loads(body)["lsn"] == idem_lsn,
          "the retry of a keyed write after the leader's death: %d %r (first LSN %d)" %
          (st, body, idem_lsn), "raft")
    acked["kill-idem"] = (b"once", idem_lsn)
    # The new leader serves writes within 10 s.
    def served():
        try:
            s, _, b = put(new.ports["http"], "after-kill", b"k")
        except OSError:
            return False
        if s == 200:
            acked["after-kill"] = (b"k", json.loads(b)["lsn"])
        return s == 200
    wait_for("a write on the new leader", served, 10 - (time.monotonic() - t0), 0.05)
    print("    %s led and took a write %.2f s after the SIGKILL of %s" %
          (new.name, time.monotonic() - t0, leader.name))
    time.sleep(1.0)
    leader.start(wait_namespace=None)
    time.sleep(1.5)
    for c in clients:
        c.stopping.set()
    for c in clients:
        c.join(30)
    load = [c for c in clients if isinstance(c, Client)]
    print("    %d writes acknowledged by the load clients, %d attempts failed" %
          (sum(c.ok for c in load), sum(c.failed for c in load)))
    check(sum(c.ok for c in load if c.node is not leader) > 0,
          "no write was acknowledged under load")


def converged():
    """Every acknowledged write is on every writer with its LSN, each exactly once, and the WAL
    records are the same bytes at every LSN on all three."""
    last = max(l for _, l in acked.values())
    for n in nodes:
        wait_for("%s at LSN %d" % (n.name, last),
                 lambda: get(n.ports["http"], "after-kill", "?min_lsn=%d" % last)[0] == 200, 30)
    for n in nodes:
        for key, (value, lsn) in sorted(acked.items()):
            check_value(n, key, value, lsn)
    # No duplicate: each acknowledged key holds its value at one LSN, and the WAL holds each
    # key once (a retry that applied twice would add a second record of the key).
    wals = [wal_records(n, part="raft") for n in nodes]
    for n, w in zip(nodes[1:], wals[1:]):
        common = set(w) & set(wals[0])
        check(len(common) >= last - 5, "%s shares only %d LSNs with %s" %
              (n.name, len(common), nodes[0].name), "raft")
        diff = [l for l in sorted(common) if w[l] != wals[0][l]]
        check(not diff, "%s and %s have different WAL bytes at LSNs %r" %
              (n.name, nodes[0].name, diff[:10]), "raft")
    check(max(wals[0]) >= last, "the WAL ends before LSN %d" % last, "raft")
    # Each acknowledged value (random bytes) is in exactly one WAL record: nothing applied twice.
    blob = b"\x00".join(wals[0].values())
    dups = [k for k, (v, _) in acked.items() if len(v) >= 16 and blob.count(v) != 1]
    check(not dups, "values not in exactly one WAL record: %r" % dups[:5], "raft")
    print("    %d LSNs compared byte for byte on 3 writers" % len(wals[0]))
    # Final linearizable reads of the shared keys on every writer, then the history check.
    for n in nodes:
        for key in HISTORY_KEYS:
            call = time.monotonic()
            st, doc = get(n.ports["http"], key, "?consistency=linearizable")
            check(st in (200, 404), "%s: final read of %s: %d %r" % (n.name, key, st, doc))
            history.append({"key": key, "kind": "r", "call": call, "ret": time.monotonic(),
                            "value": unb64(doc["value"]).decode() if st == 200 else None})
    writes = sum(1 for o in history if o["kind"] == "w")
    reads = sum(1 for o in history if o["kind"] == "r" and o["ret"] is not None)
    check(writes > 50 and reads > 50, "too small a history: %d writes, %d reads" % (writes, reads))
    t0 = time.monotonic()
    bad = linearizable_failures(history)
    check(not bad, "histories of keys %r are not linearizable" % bad, "raft")
    # The checker is not blind on this history: the last read of h-0 made to return the first
    # value written there (overwritten since) must be refused.
    last = [o for o in history if o["key"] == "h-0" and o["kind"] == "r"][-1]
    first = [o for o in history if o["key"] == "h-0" and o["kind"] == "w" and o["ret"]][0]
    tampered = [dict(o, value=first["value"]) if o is last else o for o in history]
    check(last["value"] != first["value"] and linearizable_failures(tampered) == ["h-0"],
          "the checker accepted a stale final read of h-0")
    print("    history of %d writes and %d linearizable reads on %d keys is linearizable "
          "(checked in %.1f s)" % (writes, reads, len(HISTORY_KEYS), time.monotonic() - t0))


def stop_all():
    problems = []
    for n in nodes:
        n.stop_noting("SIGTERM", problems)
    if problems:
        raise problems[0]


suite.run([start_cluster, writes_to_every_node, cluster_status, linearizable_read,
           idempotency_key, transfer_leadership, forwarding_off, kill_leader_under_load,
           converged, stop_all])
