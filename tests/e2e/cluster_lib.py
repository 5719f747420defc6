"""Clients of a writer cluster on loopback, shared by the multi-process cluster tests
(test_cluster_clients.py, test_power_cut.py): a small HTTP client, load clients that record every
acknowledged write, history clients whose operations on a few shared keys go to the
linearizability checker (lincheck.py), and the checks made once the cluster has settled."""

import http.client
import json
import os
import random
import threading
import time

from harness import Failure, b64, check, free_port, unb64, wait_for
from lincheck import check as linearizable_failures
from relayer_lib import wal_records


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
    """The one writer among candidates that says it leads; fails on two leaders at once or when
    one of them exited."""
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


def three_writers(suite, cluster_id="e2e", args=None):
    """Writers n1, n2, n3 of one raft cluster on loopback (free raft ports, elections at 1 s,
    heartbeats every 100 ms), made but not started."""
    raft = [free_port() for _ in range(3)]
    peers = ", ".join('"%d@127.0.0.1:%d"' % (i + 1, p) for i, p in enumerate(raft))
    nodes = []
    for i in range(3):
        cfg = ("[raft]\nnode_id = %d\ncluster_id = \"%s\"\npeers = [%s]\n"
               "election_timeout_ms = 1000\nheartbeat_timeout_ms = 100\n" % (i + 1, cluster_id, peers))
        nodes.append(suite.writer("n%d" % (i + 1), config=cfg, ports={"raft": raft[i]},
                                  args=list(args or [])))
    return nodes


def start_writers(nodes):
    """Starts every node, waits for a leader and for the default namespace on each; returns the
    leader."""
    for n in nodes:
        n.start(wait_namespace=None)
    leader = leader_of(nodes)
    print("    leader: %s" % leader.name)
    for n in nodes:
        n.wait_namespace("default", 30)
    return leader


# --- what the clients saw -------------------------------------------------------------------------


class Record:
    """Every write a client saw acknowledged (key -> (value bytes, LSN)), and the history of
    operations on the shared keys."""

    def __init__(self, history_keys):
        self.acked = {}
        self.lock = threading.Lock()
        self.history = []
        self.keys = list(history_keys)

    def ack(self, key, value, lsn):
        with self.lock:
            self.acked[key] = (value, lsn)

    def add(self, op):
        with self.lock:
            self.history.append(op)


class Client(threading.Thread):
    """Writes its own keys to one writer until stopped; records acknowledged writes. A write
    that failed is retried with the same Idempotency-Key, so it applies at most once; one never
    acknowledged has an unknown outcome and is not recorded."""

    def __init__(self, rec, node, name):
        super().__init__(daemon=True)
        self.rec, self.node, self.cname = rec, node, name
        self.ok = self.failed = 0
        self.stopping = threading.Event()

    def run(self):
        k = 0
        while not self.stopping.is_set():
            key, value = "%s-%d" % (self.cname, k), os.urandom(64)
            for attempt in range(40):
                try:
                    status, _, body = put(self.node.ports["http"], key, value,
                                          {"Idempotency-Key": key})
                except OSError:
                    status, body = 0, b""
                if status == 200:
                    self.rec.ack(key, value, json.loads(body)["lsn"])
                    self.ok += 1
                    break
                self.failed += 1
                if self.stopping.is_set():
                    break
                time.sleep(0.05)
            k += 1


class HistoryClient(threading.Thread):
    """Overwrites (or reads linearizably) the shared keys through one writer and records each
    operation's call and return times. A write is retried with its Idempotency-Key; one never
    acknowledged has an unknown outcome (ret None); a read that failed is dropped."""

    def __init__(self, rec, node, kind, seed):
        super().__init__(daemon=True)
        self.rec, self.node, self.kind = rec, node, kind
        self.stopping = threading.Event()
        self.rnd = random.Random(seed)

    def run(self):
        k = 0
        while not self.stopping.is_set():
            key = self.rnd.choice(self.rec.keys)
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
                    if self.stopping.is_set():
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
                else:
                    time.sleep(0.05)
            self.rec.add(op)
            k += 1


class Load:
    """`with Load(rec, nodes, tag):` two load clients per writer and, per writer, one history
    writer and one linearizable reader, all stopped and joined on exit."""

    def __init__(self, rec, nodes, tag, per_node=2):
        self.clients = [Client(rec, n, "%s-%s-%d" % (tag, n.name, j))
                        for n in nodes for j in range(per_node)]
        self.hist = [HistoryClient(rec, n, kind, "%s-%s-%s" % (tag, n.name, kind))
                     for n in nodes for kind in ("w", "r")]

    def __enter__(self):
        for c in self.clients + self.hist:
            c.start()
        return self

    def __exit__(self, *exc):
        for c in self.clients + self.hist:
            c.stopping.set()
        for c in self.clients + self.hist:
            c.join(60)

    def ok(self, node=None):
        return sum(c.ok for c in self.clients if node is None or c.node is node)

    def failed(self):
        return sum(c.failed for c in self.clients)


# --- checks once the cluster has settled ----------------------------------------------------------


def wait_applied(nodes, rec, timeout=30):
    """Until every writer applied the highest acknowledged LSN; returns it."""
    with rec.lock:
        key, (_, last) = max(rec.acked.items(), key=lambda kv: kv[1][1])
    for n in nodes:
        wait_for("%s at LSN %d" % (n.name, last),
                 lambda: get(n.ports["http"], key, "?min_lsn=%d" % last)[0] == 200, timeout)
    return last


def check_acked_everywhere(nodes, rec):
    """Every acknowledged write reads back on every writer with its value and LSN."""
    missing = []
    for n in nodes:
        for key, (value, lsn) in sorted(rec.acked.items()):
            st, doc = get(n.ports["http"], key)
            if st != 200 or unb64(doc["value"]) != value or doc.get("lsn") != lsn:
                missing.append((n.name, key, st, doc and doc.get("lsn"), lsn))
    check(not missing, "%d acknowledged writes missing or different (writer, key, status, LSN, "
          "acknowledged LSN): %r" % (len(missing), missing[:10]), "raft")


def check_wals(nodes, rec, last, exact=False):
    """The WAL records (dense, each carrying its LSN: wal_records) are the same bytes at every LSN
    on every writer, reach last, hold each acknowledged write in the record at its LSN, and hold
    each acknowledged value exactly once (a retry applied twice would add a second record).
    exact: every writer has exactly the same LSNs (the WALs were read after a stop); otherwise
    the ones of a running writer may trail by a few records not yet written back. Returns the
    number of LSNs."""
    wals = [wal_records(n, part="raft") for n in nodes]
    for n, w in zip(nodes[1:], wals[1:]):
        common = set(w) & set(wals[0])
        if exact:
            check(set(w) == set(wals[0]), "%s has LSNs %s..%s, %s %s..%s" %
                  (n.name, min(w, default=None), max(w, default=None), nodes[0].name,
                   min(wals[0], default=None), max(wals[0], default=None)), "raft")
        check(len(common) >= last - 5, "%s shares only %d LSNs with %s" %
              (n.name, len(common), nodes[0].name), "raft")
        diff = [l for l in sorted(common) if w[l] != wals[0][l]]
        check(not diff, "%s and %s have different WAL bytes at LSNs %r" %
              (n.name, nodes[0].name, diff[:10]), "raft")
    check(max(wals[0], default=0) >= last, "the WAL ends before LSN %d" % last, "raft")
    if exact:
        for n, w in zip(nodes, wals):
            bad = [k for k, (v, l) in rec.acked.items() if l not in w or v not in w[l]]
            check(not bad, "%s: acknowledged writes not in the WAL record at their LSN: %r" %
                  (n.name, bad[:10]), "raft")
    blob = b"\x00".join(wals[0].values())
    dups = [k for k, (v, _) in rec.acked.items() if len(v) >= 16 and blob.count(v) != 1]
    check(not dups, "values not in exactly one WAL record: %r" % dups[:5], "raft")
    return len(wals[0])


def check_history(nodes, rec, min_ops=50):
    """Final linearizable reads of the shared keys on every writer close the history, which must
    be linearizable per key; and the checker must refuse a copy of it whose last read of the
    first key returns that key's first written value (overwritten since). Returns
    (writes, reads, seconds spent checking)."""
    for n in nodes:
        for key in rec.keys:
            call = time.monotonic()
            st, doc = get(n.ports["http"], key, "?consistency=linearizable")
            check(st in (200, 404), "%s: final read of %s: %d %r" % (n.name, key, st, doc))
            rec.add({"key": key, "kind": "r", "call": call, "ret": time.monotonic(),
                     "value": unb64(doc["value"]).decode() if st == 200 else None})
    history = rec.history
    writes = sum(1 for o in history if o["kind"] == "w")
    reads = sum(1 for o in history if o["kind"] == "r" and o["ret"] is not None)
    check(writes > min_ops and reads > min_ops,
          "too small a history: %d writes, %d reads" % (writes, reads))
    t0 = time.monotonic()
    bad = linearizable_failures(history)
    check(not bad, "histories of keys %r are not linearizable" % bad, "raft")
    k0 = rec.keys[0]
    last = [o for o in history if o["key"] == k0 and o["kind"] == "r"][-1]
    first = [o for o in history if o["key"] == k0 and o["kind"] == "w" and o["ret"]][0]
    tampered = [dict(o, value=first["value"]) if o is last else o for o in history]
    check(last["value"] != first["value"] and linearizable_failures(tampered) == [k0],
          "the checker accepted a stale final read of %s" % k0)
    return writes, reads, time.monotonic() - t0
