#!/usr/bin/env python3
"""End to end, a deposed leader never answers a linearizable read (TESTING.md; docs/raft.md
"Clients and the cluster"). Each writer reaches each other one through its own small TCP proxy
(raft connections carry one direction's messages), so a leader can be cut off from both others
in both directions on loopback, without network namespaces. The leader, with a long election
timeout, still believes it leads when the other two have elected a new leader and acknowledged a
write: a linearizable read sent to it must not return the value it had (it answers 503 once its
barrier fails); after healing it follows the new leader and has the new value."""

import http.client
import json
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Failure, Suite, Writer, b64, check, free_port, unb64, wait_for  # noqa: E402

suite = Suite("cluster-deposed")


class Link:
    """127.0.0.1:port -> upstream, forwarding both ways until cut: then bytes are dropped and the
    sockets kept (no FIN or RST tells raft, as in a real partition). Healing closes the
    connections that lost bytes (TCP would have delivered them late or reset the connection; a
    stream with a hole would be misread), so raft reconnects."""

    def __init__(self, upstream):
        self.upstream = upstream
        self._cut = False
        self.pairs = []
        self.lock = threading.Lock()
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.listener.accept()
            except OSError:
                return
            try:
                u = socket.create_connection(("127.0.0.1", self.upstream), timeout=5)
                u.settimeout(None)
            except OSError:
                c.close()
                continue
            with self.lock:
                self.pairs.append((c, u))
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @property
    def cut(self):
        return self._cut

    @cut.setter
    def cut(self, on):
        with self.lock:
            if self._cut and not on:
                for pair in self.pairs:
                    for sock in pair:
                        try:
                            sock.shutdown(socket.SHUT_RDWR)
                        except OSError:
                            pass
                self.pairs = []
            self._cut = on

    def _pump(self, src, dst):
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                for s in (src, dst):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                return
            if not self.cut:
                try:
                    dst.sendall(data)
                except OSError:
                    return


N = 3
RAFT = [free_port() for _ in range(N)]
HTTP = [free_port() for _ in range(N)]
links = {(i, j): Link(RAFT[j]) for i in range(N) for j in range(N) if i != j}
nodes = []
for i in range(N):
    peers = []
    for j in range(N):
        port = RAFT[j] if i == j else links[(i, j)].port
        peers.append('"%d@127.0.0.1:%d,http=127.0.0.1:%d"' % (j + 1, port, HTTP[j]))
    # Writer 1 leads and keeps believing it does for 4 s without hearing from a majority.
    cfg = ("[raft]\nnode_id = %d\ncluster_id = \"deposed\"\npeers = [%s]\n"
           "election_timeout_ms = %d\nheartbeat_timeout_ms = 100\nleader_wait_ms = 3000\n"
           % (i + 1, ", ".join(peers), 4000 if i == 0 else 1000))
    nodes.append(suite.writer("n%d" % (i + 1), config=cfg, ports={"raft": RAFT[i],
                                                                   "http": HTTP[i]}))


def request(n, method, path, body=None, timeout=30):
    c = http.client.HTTPConnection("127.0.0.1", n.ports["http"], timeout=timeout)
    try:
        c.request(method, path, body=body,
                  headers={"Content-Type": "application/json"} if body is not None else {})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def is_leader(n):
    try:
        st, b = request(n, "GET", "/status/leader", timeout=3)
    except OSError:
        return False
    return st == 200 and json.loads(b).get("isLeader") is True


def leader_among(candidates, timeout=15):
    return wait_for("a leader among %r" % [n.name for n in candidates],
                    lambda: next((n for n in candidates if is_leader(n)), None), timeout, 0.1)


def cut(i, on):
    for (a, b), link in links.items():
        if a == i or b == i:
            link.cut = on


def start():
    for n in nodes:
        n.start(wait_namespace=None)
    leader = leader_among(nodes)
    if leader is not nodes[0]:
        st, b = request(leader, "POST", "/admin/cluster/transfer", json.dumps({"id": 1}))
        check(st == 200, "transfer to writer 1: %d %r" % (st, b), "raft")
    wait_for("writer 1 leading", lambda: is_leader(nodes[0]), 15, 0.1)
    for n in nodes:
        n.wait_namespace("default", 30)


def deposed_leader_read():
    old = nodes[0]
    st, b = request(old, "PUT", "/api/v1/default/kv/x", json.dumps({"value": b64("old")}))
    check(st == 200, "write on the leader: %d %r" % (st, b))
    cut(0, True)
    t0 = time.monotonic()
    new = leader_among(nodes[1:], 10)
    st, b = request(new, "PUT", "/api/v1/default/kv/x", json.dumps({"value": b64("new")}))
    check(st == 200, "write on the new leader: %d %r" % (st, b), "raft")
    new_lsn = json.loads(b)["lsn"]
    # The scenario needs the cut-off writer to still believe it leads (4 s election timeout).
    check(is_leader(old), "writer 1 stopped believing it leads after %.1f s: the scenario "
          "needs it to still lead" % (time.monotonic() - t0), "raft")
    st, b = request(old, "GET", "/api/v1/default/kv/x?consistency=linearizable", timeout=30)
    took = time.monotonic() - t0
    if st == 200:
        check(unb64(json.loads(b)["value"]) != b"old",
              "the deposed leader answered a linearizable read with its stale value", "raft")
    check(st == 503, "linearizable read on the cut-off leader: %d %r" % (st, b), "raft")
    print("    the cut-off leader answered 503 %.1f s after the cut: %s" %
          (took, json.loads(b)["error"]))
    cut(0, False)

    def caught_up():
        st, b = request(old, "GET", "/api/v1/default/kv/x")
        doc = json.loads(b)
        return st == 200 and unb64(doc["value"]) == b"new" and doc["lsn"] == new_lsn
    wait_for("writer 1 following the new leader", caught_up, 20, 0.2)
    check(not is_leader(old), "writer 1 leads again after healing", "raft")


def stop_all():
    Writer.stop_all(nodes)


suite.run([start, deposed_leader_read, stop_all])
