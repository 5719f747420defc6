#!/usr/bin/env python3
"""End to end, a three-writer cluster under network partitions (TESTING.md): each writer runs in
its own network namespace, joined to the others by veth pairs on a bridge in a hub namespace; the
test's clients stay in the root namespace, joined to the same bridge, so they reach every writer
whatever the writers can say to each other. Cuts are iptables DROP rules inside a writer's
namespace against a peer's address (both directions), healed by flushing them.

Scenarios, each under load (clients writing unique keys on all three writers, and writes and
linearizable reads of a few shared keys recorded as a history):
  1. the leader isolated from both followers: a new leader takes writes; nothing the old leader
     acknowledged is lost, and no linearizable read it answers is stale;
  2. one follower isolated;
  3. a bridge partition: n1 and n2 cannot talk, both see n3;
  4. flapping partitions: random cuts and heals every 1-3 s for 60 s (the issue's figure).
After each scenario heals: every acknowledged write is on all three writers exactly once, the WAL
records are the same bytes at every LSN, and the history is linearizable (lincheck.py).

Needs root (CAP_NET_ADMIN), ip and iptables: without them the suite fails, it does not skip.
Every namespace and link is removed at the end, and every process stopped by its PID."""

import http.client
import json
import os
import random
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Failure, Suite, Writer, b64, check, unb64, wait_for  # noqa: E402
from lincheck import check as linearizable_failures  # noqa: E402
from relayer_lib import wal_records  # noqa: E402

PID = os.getpid()
NET = "10.213.%d" % (PID % 250 + 1)  # a /24 of our own per run
HUB = "udp-hub-%d" % PID
NS = ["udp-n%d-%d" % (i + 1, PID) for i in range(3)]
ADDR = ["%s.%d" % (NET, i + 1) for i in range(3)]
CLIENT_ADDR = "%s.100" % NET
ROOT_VETH = "udpc%d" % PID  # the root namespace's end of the clients' link (<= 15 characters)
RAFT_PORT, HTTP_PORT, RESP_PORT = 7100, 8100, 6400
PACE = 0.02  # a client's pause between operations: enough load, checks that stay short
FLAP_SECONDS = 60


def sh(*args, check_rc=True):
    p = subprocess.run(list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    if check_rc and p.returncode != 0:
        raise Failure("%s failed (rc %d): %s" % (" ".join(args), p.returncode,
                                                 p.stderr.decode().strip()), "test")
    return p


def setup_network():
    """The hub with its bridge, one namespace per writer, and the root namespace on the bridge."""
    sh("ip", "netns", "add", HUB)
    sh("ip", "-n", HUB, "link", "add", "br0", "type", "bridge")
    sh("ip", "-n", HUB, "link", "set", "br0", "up")
    for i, ns in enumerate(NS):
        sh("ip", "netns", "add", ns)
        veth = "v%d-%d" % (i + 1, PID)
        sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        sh("ip", "link", "set", veth, "netns", HUB)
        sh("ip", "-n", HUB, "link", "set", veth, "master", "br0")
        sh("ip", "-n", HUB, "link", "set", veth, "up")
        sh("ip", "-n", ns, "addr", "add", ADDR[i] + "/24", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
    sh("ip", "link", "add", ROOT_VETH, "type", "veth", "peer", "name", "vc-%d" % PID,
       "netns", HUB)
    sh("ip", "-n", HUB, "link", "set", "vc-%d" % PID, "master", "br0")
    sh("ip", "-n", HUB, "link", "set", "vc-%d" % PID, "up")
    sh("ip", "addr", "add", CLIENT_ADDR + "/24", "dev", ROOT_VETH)
    sh("ip", "link", "set", ROOT_VETH, "up")


def teardown_network():
    """Removes everything setup_network made; deleting a namespace removes its links."""
    sh("ip", "link", "del", ROOT_VETH, check_rc=False)
    for ns in NS + [HUB]:
        sh("ip", "netns", "del", ns, check_rc=False)


def require_netns():
    """Fails loudly (no skip) when this machine cannot run the suite."""
    problems = []
    if os.geteuid() != 0:
        problems.append("not root (network namespaces and iptables need CAP_NET_ADMIN)")
    for tool in ("ip", "iptables"):
        if subprocess.run(["sh", "-c", "command -v " + tool], stdout=subprocess.DEVNULL).returncode:
            problems.append("%s is not installed" % tool)
    if not problems:
        probe = "udp-probe-%d" % PID
        p = subprocess.run(["ip", "netns", "add", probe], stderr=subprocess.PIPE)
        if p.returncode != 0:
            problems.append("ip netns add failed: %s" % p.stderr.decode().strip())
        else:
            q = subprocess.run(["ip", "netns", "exec", probe, "iptables", "-A", "INPUT", "-s",
                                "192.0.2.77", "-j", "DROP"], stderr=subprocess.PIPE)
            if q.returncode != 0:
                problems.append("iptables in a namespace failed: %s" % q.stderr.decode().strip())
            subprocess.run(["ip", "netns", "del", probe])
    if problems:
        print("Bail out! the partition tests need network namespaces: %s" % "; ".join(problems),
              flush=True)
        sys.exit(1)


require_netns()


class NsWriter(Writer):
    """A writer inside its namespace on its own address; the PID is the writer's (ip netns exec
    execs it)."""

    def __init__(self, exe, workdir, i, config):
        super().__init__(exe, workdir, "n%d" % (i + 1), config=config)
        self.i = i

    def argv(self):
        a = ["ip", "netns", "exec", NS[self.i], self.exe, "--data-dir", self.data_dir,
             "--ports-file", self.ports_file,
             "--http", "%s:%d" % (ADDR[self.i], HTTP_PORT),
             "--resp", "%s:%d" % (ADDR[self.i], RESP_PORT),
             "--raft", "%s:%d" % (ADDR[self.i], RAFT_PORT)]
        return a + ["--config", self.config_path] + self.extra

    def http(self, http2=False):
        from harness import Http
        return Http("http://%s:%d" % (ADDR[self.i], HTTP_PORT), self.dir, http2)


suite = Suite("partitions")
PEERS = ", ".join('"%d@%s:%d,http=%s:%d,resp=%s:%d"' %
                  (i + 1, ADDR[i], RAFT_PORT, ADDR[i], HTTP_PORT, ADDR[i], RESP_PORT)
                  for i in range(3))
nodes = []
for i in range(3):
    cfg = ("[raft]\nnode_id = %d\ncluster_id = \"e2e-part\"\npeers = [%s]\n"
           "election_timeout_ms = 1000\nheartbeat_timeout_ms = 100\nleader_wait_ms = 3000\n"
           "snapshot_threshold = 20000\nsnapshot_trailing = 20000\n" % (i + 1, PEERS))
    w = NsWriter(suite.exe, suite.workdir, i, cfg)
    suite.writers.append(w)
    nodes.append(w)

acked = {}  # key -> (value, lsn): every write a client saw acknowledged
acked_lock = threading.Lock()
history = []  # this scenario's operations on its shared keys
history_lock = threading.Lock()
stats = {}


def request(node, method, path, body=None, headers=None, timeout=8):
    c = http.client.HTTPConnection(ADDR[node.i], HTTP_PORT, timeout=timeout)
    try:
        hdrs = {"Content-Type": "application/json"} if body is not None else {}
        hdrs.update(headers or {})
        c.request(method, path, body=body, headers=hdrs)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def put(node, key, value, headers=None):
    return request(node, "PUT", "/api/v1/default/kv/%s" % key,
                   json.dumps({"value": b64(value)}).encode(), headers)


def get(node, key, query=""):
    status, body = request(node, "GET", "/api/v1/default/kv/%s%s" % (key, query))
    return status, (json.loads(body) if body else None)


def leaders(candidates):
    out = []
    for n in candidates:
        try:
            status, body = request(n, "GET", "/status/leader", timeout=3)
        except OSError:
            continue
        if status == 200 and json.loads(body).get("isLeader") is True:
            out.append(n)
    return out


def leader_of(candidates, timeout=15):
    def find():
        for n in nodes:
            if not n.alive():
                raise Failure("%s exited:\n%s" % (n.name, n.log_tail()), "raft")
        got = leaders(candidates)
        return got[0] if len(got) == 1 else None
    return wait_for("one raft leader among %s" % [n.name for n in candidates], find, timeout, 0.1)


# --- cutting links --------------------------------------------------------------------------------

cuts = set()  # frozenset({i, j}) pairs that cannot talk


def _rule(op, i, j):
    for chain, flag in (("INPUT", "-s"), ("OUTPUT", "-d")):
        sh("ip", "netns", "exec", NS[i], "iptables", op, chain, flag, ADDR[j], "-j", "DROP")


def cut(i, j):
    if frozenset((i, j)) in cuts:
        return
    cuts.add(frozenset((i, j)))
    _rule("-A", i, j)
    _rule("-A", j, i)


def heal_all():
    for ns in NS:
        sh("ip", "netns", "exec", ns, "iptables", "-F")
    cuts.clear()


# --- clients --------------------------------------------------------------------------------------


class Client(threading.Thread):
    """Writes its own unique keys to one writer; records acknowledged writes. A failed write is
    retried with the same Idempotency-Key (it applies at most once), a few times, then given up:
    its outcome is unknown and it is not counted as acknowledged."""

    def __init__(self, node, name):
        super().__init__(daemon=True)
        self.node, self.cname = node, name
        self.ok = self.failed = self.given_up = 0
        self.stopping = threading.Event()

    def run(self):
        k = 0
        while not self.stopping.is_set():
            key, value = "%s-%d" % (self.cname, k), os.urandom(32).hex().encode()
            for attempt in range(10):
                try:
                    status, body = put(self.node, key, value, {"Idempotency-Key": key})
                except OSError:
                    status, body = 0, b""
                if status == 200:
                    with acked_lock:
                        acked[key] = (value, json.loads(body)["lsn"])
                    self.ok += 1
                    time.sleep(PACE)
                    break
                self.failed += 1
                if self.stopping.is_set():
                    break
                time.sleep(0.1)
            else:
                self.given_up += 1
            k += 1


class HistoryClient(threading.Thread):
    """Overwrites, or reads with ?consistency=linearizable, a few shared keys through one writer
    and records call and return times (lincheck.py). An unacknowledged write has an unknown
    outcome (ret None); a read that did not answer 200 / 404 is dropped."""

    def __init__(self, node, kind, keys, seed):
        super().__init__(daemon=True)
        self.node, self.kind, self.keys = node, kind, keys
        self.stopping = threading.Event()
        self.rnd = random.Random(seed)

    def run(self):
        k = 0
        while not self.stopping.is_set():
            key = self.rnd.choice(self.keys)
            if self.kind == "w":
                value = "%s-%d-%s" % (self.node.name, k, os.urandom(4).hex())
                op = {"key": key, "kind": "w", "value": value, "call": time.monotonic(),
                      "ret": None, "node": self.node.name}
                try:
                    st, _ = put(self.node, key, value.encode(), {"Idempotency-Key": value})
                except OSError:
                    st = 0
                if st == 200:
                    op["ret"] = time.monotonic()
                else:
                    time.sleep(0.1)
            else:
                op = {"key": key, "kind": "r", "value": None, "call": time.monotonic(),
                      "ret": None, "node": self.node.name}
                try:
                    st, doc = get(self.node, key, "?consistency=linearizable")
                except (OSError, ValueError):
                    st, doc = 0, None
                if st == 200:
                    op["value"], op["ret"] = unb64(doc["value"]).decode(), time.monotonic()
                elif st == 404 and doc is not None and doc.get("found") is False:
                    op["ret"] = time.monotonic()
                else:
                    time.sleep(0.1)
            with history_lock:
                history.append(op)
            time.sleep(PACE)
            k += 1


class Load:
    def __init__(self, scenario):
        self.keys = ["%s-h%d" % (scenario, i) for i in range(8)]
        self.clients = [Client(n, "%s-%s" % (scenario, n.name)) for n in nodes]
        self.hist = [HistoryClient(n, kind, self.keys, hash((scenario, n.name, kind)))
                     for n in nodes for kind in ("w", "r")]
        del history[:]

    def __enter__(self):
        for c in self.clients + self.hist:
            c.start()
        return self

    def __exit__(self, *exc):
        for c in self.clients + self.hist:
            c.stopping.set()
        for c in self.clients + self.hist:
            c.join(60)

    def per_node(self):
        return {c.node.name: c.ok for c in self.clients}

    def acked_on(self, node):
        return sum(c.ok for c in self.clients if c.node is node)


# --- checks after healing -------------------------------------------------------------------------


def converged(scenario, load):
    """After healing: every acknowledged write on all three writers with its LSN, once; the
    same WAL bytes at every LSN; the scenario's history linearizable."""
    heal_all()
    leader_of(nodes, 20)
    # A marker write through each writer, then every writer must have applied the last one.
    last = 0
    for n in nodes:
        def marker():
            try:
                st, body = put(n, "%s-marker-%s" % (scenario, n.name), b"m")
            except OSError:
                return None
            return json.loads(body)["lsn"] if st == 200 else None
        last = max(last, wait_for("a write through %s after healing" % n.name, marker, 20, 0.1))
    for n in nodes:
        wait_for("%s at LSN %d" % (n.name, last),
                 lambda: get(n, "%s-marker-%s" % (scenario, nodes[0].name),
                             "?min_lsn=%d" % last)[0] == 200, 30, 0.1)
    t0 = time.monotonic()
    with acked_lock:
        everything = dict(acked)
    mine = {k: v for k, v in everything.items() if k.startswith(scenario + "-")}
    # This scenario's acknowledged writes through the API of every writer...
    missing = []
    for n in nodes:
        for key, (value, lsn) in sorted(mine.items()):
            st, doc = get(n, key)
            if st != 200 or unb64(doc["value"]) != value or doc.get("lsn") != lsn:
                missing.append((n.name, key, st, doc and doc.get("lsn"), lsn))
    check(not missing, "%d acknowledged writes missing or different (node, key, status, lsn, "
          "acknowledged lsn): %r" % (len(missing), missing[:10]), "raft")
    # ... and every acknowledged write so far in the WAL record at its LSN on every writer.
    wals = [wal_records(n, part="raft") for n in nodes]
    for n, w in zip(nodes, wals):
        bad = [k for k, (v, l) in everything.items() if l not in w or v not in w[l]]
        check(not bad, "%s: acknowledged writes not in the WAL record at their LSN: %r" %
              (n.name, bad[:10]), "raft")
    for n, w in zip(nodes[1:], wals[1:]):
        check(set(w) == set(wals[0]), "%s has LSNs %d..%d, %s %d..%d" %
              (n.name, min(w), max(w), nodes[0].name, min(wals[0]), max(wals[0])), "raft")
        diff = [l for l in sorted(w) if w[l] != wals[0][l]]
        check(not diff, "%s and %s have different WAL bytes at LSNs %r" %
              (n.name, nodes[0].name, diff[:10]), "raft")
    check(max(wals[0]) >= last, "the WAL ends before LSN %d" % last, "raft")
    # Nothing applied twice: each acknowledged value (random) is in exactly one WAL record.
    blob = b"\x00".join(wals[0].values())
    dups = [k for k, (v, _) in mine.items() if blob.count(v) != 1]
    check(not dups, "acknowledged values not in exactly one WAL record: %r" % dups[:5], "raft")
    # Final linearizable reads on every writer close the history.
    for n in nodes:
        for key in load.keys:
            call = time.monotonic()
            st, doc = get(n, key, "?consistency=linearizable")
            check(st in (200, 404), "%s: final read of %s: %d %r" % (n.name, key, st, doc))
            history.append({"key": key, "kind": "r", "call": call, "ret": time.monotonic(),
                            "value": unb64(doc["value"]).decode() if st == 200 else None,
                            "node": n.name})
    writes = sum(1 for o in history if o["kind"] == "w" and o["ret"] is not None)
    unknown = sum(1 for o in history if o["kind"] == "w" and o["ret"] is None)
    reads = sum(1 for o in history if o["kind"] == "r" and o["ret"] is not None)
    check(writes > 5 and reads > 5, "too small a history: %d writes, %d reads" % (writes, reads))
    bad = linearizable_failures(history)
    t_check = time.monotonic() - t0
    check(not bad, "histories of keys %r are not linearizable" % bad, "raft")
    lost = sum(c.given_up for c in load.clients)
    print("    %s: %d writes acknowledged (%r), %d given up unacknowledged, 0 lost, 0 duplicated;"
          " %d LSNs byte-identical on 3 writers; history %d acknowledged writes, %d unknown, "
          "%d linearizable reads: linearizable (checks %.1f s)" %
          (scenario, sum(load.per_node().values()), load.per_node(), lost, len(wals[0]),
           writes, unknown, reads, t_check), flush=True)


# --- scenarios ------------------------------------------------------------------------------------


def start_cluster():
    setup_network()
    for n in nodes:
        n.start(wait_namespace=None)
    leader = leader_of(nodes, 20)
    print("    leader: %s" % leader.name)
    for n in nodes:
        n.wait_namespace("default", 30)


def leader_isolated():
    old = leader_of(nodes)
    rest = [n for n in nodes if n is not old]
    with Load("iso") as load:
        time.sleep(2)
        t0 = time.monotonic()
        for n in rest:
            cut(old.i, n.i)
        new = leader_of(rest, 10)
        # The new leader takes a write.
        value = os.urandom(16).hex().encode()

        def served():
            try:
                st, body = put(new, "iso-after", value)
            except OSError:
                return False
            if st == 200:
                with acked_lock:
                    acked["iso-after"] = (value, json.loads(body)["lsn"])
            return st == 200
        wait_for("a write on the new leader", served, 10, 0.05)
        print("    %s isolated; %s led and took a write %.2f s later" %
              (old.name, new.name, time.monotonic() - t0), flush=True)
        ok_old = load.acked_on(old)
        time.sleep(3)  # the old leader, cut off, is still asked for writes and reads
        t_heal = time.monotonic()
        heal_all()
        with history_lock:
            reads = sum(1 for o in history if o["node"] == old.name and o["kind"] == "r" and
                        o["ret"] is not None and o["call"] >= t0 and o["ret"] <= t_heal)
        print("    while cut off the old leader %s acknowledged %d writes (they must be on all "
              "three) and answered %d linearizable reads" %
              (old.name, load.acked_on(old) - ok_old, reads), flush=True)
        time.sleep(2)
    converged("iso", load)


def minority_isolated():
    leader = leader_of(nodes)
    f = [n for n in nodes if n is not leader][0]
    with Load("min") as load:
        time.sleep(1.5)
        for n in nodes:
            if n is not f:
                cut(f.i, n.i)
        time.sleep(4)
        check(leader_of([n for n in nodes if n is not f], 10) is leader,
              "the leader changed when a follower was cut off")
        heal_all()
        time.sleep(2)
    converged("min", load)


def bridge_partition():
    with Load("bridge") as load:
        time.sleep(1.5)
        cut(0, 1)
        t0 = time.monotonic()
        time.sleep(5)
        wait_for("a leader while n1 and n2 are cut", lambda: leaders(nodes), 10, 0.1)
        print("    leader while n1 and n2 are cut: %s (%.1f s)" %
              ([n.name for n in leaders(nodes)], time.monotonic() - t0), flush=True)
        heal_all()
        time.sleep(2)
    converged("bridge", load)


def flapping():
    rnd = random.Random(PID)
    with Load("flap") as load:
        t_end = time.monotonic() + FLAP_SECONDS
        events = 0
        while time.monotonic() < t_end:
            heal_all()
            choice = rnd.randrange(4)
            if choice == 0:  # one node isolated
                i = rnd.randrange(3)
                for j in range(3):
                    if j != i:
                        cut(i, j)
            elif choice == 1:  # one link cut
                i, j = rnd.sample(range(3), 2)
                cut(i, j)
            elif choice == 2:  # the leader isolated
                got = leaders(nodes)
                if got:
                    for j in range(3):
                        if j != got[0].i:
                            cut(got[0].i, j)
            events += 1
            time.sleep(rnd.uniform(1, 3))
        heal_all()
        time.sleep(2)
    print("    %d partition changes in %d s" % (events, FLAP_SECONDS), flush=True)
    converged("flap", load)


def stop_all():
    Writer.stop_all(nodes)


try:
    suite.run([start_cluster, leader_isolated, minority_isolated, bridge_partition, flapping,
               stop_all])
finally:
    for n in nodes:
        try:
            n.kill()
        except Exception:
            pass
    teardown_network()
