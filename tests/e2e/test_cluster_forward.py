#!/usr/bin/env python3
"""End to end, what a follower passes on when it forwards to the leader of a two-writer cluster
(docs/raft.md "Clients and the cluster"): a write's If-Match and Idempotency-Key whatever their
length (a follower answers them as the leader answers them directly: a value the leader cannot
take is its 400, never a dropped header and an unconditional write), and a linearizable GET or
HEAD answered with the leader's status, ETag, X-Unison-Lsn and Content-Length; a HEAD is sent on
as HEAD, so the HEAD of a large LOB (over 64 MiB) gives its size without its body, and a GET of
it comes through whole (passed on as it arrives: test_cluster_stream_read.py), as do byte ranges
of it. A linearizable LOB read's Range and If-Range go to the leader whole: the
follower answers the leader's 206 or 416 with its Content-Range (curl -r over HTTP/1.1 and h2c).
A forwarded write whose answer is lost after the leader applied it is answered "outcome unknown"
and applied once: curl's silent re-send of it on a fresh connection, refused, is not taken for
"never sent", and a write without an Idempotency-Key is not re-sent at all (through a proxy that
keeps listening the re-send reached the leader and applied it twice), nor is a RESP SET (its
records carry no key). A follower SIGTERMed under
writes without a key answers none of those the leader applied with a definite failure."""

import hashlib
import http.client
import json
import os
import random
import re
import signal
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Failure, RespConn, Suite, Writer, b64, check, free_port, unb64,  # noqa: E402
                     wait_for)
from cluster_lib import get, leader_of, put, request  # noqa: E402
from relayer_lib import wal_records  # noqa: E402


class AnswerDropper:
    """A TCP proxy in front of a writer's HTTP port. drop_next_answer(): the next response bytes
    from the writer are dropped, the client's connection is closed without a byte of them, and
    for refuse_s seconds connects are refused (the listener is closed), then taken again; with
    refuse_s 0 the proxy keeps listening (a load balancer that lost one connection).
    refuse_as_follower(seconds): for that long each request is answered by the proxy itself as a
    writer that does not lead answers a forwarded one (503, unison-not-leader), and counted.
    hold_connects(): open connections are closed and new ones never complete (SYNs dropped) until
    release_connects()."""

    def __init__(self, listen_port, upstream_port, refuse_s=0.5):
        self.listen_port, self.upstream_port, self.refuse_s = listen_port, upstream_port, refuse_s
        self.lock = threading.Lock()
        self.armed = False
        self.dropped = 0
        self.refusing_until = 0.0
        self.answer_delay_s = 0.0
        self.refused = 0
        self.holding = False
        self.fillers = []
        self.socks = []
        self.closed = False
        self.listener = None
        self._listen()
        threading.Thread(target=self._accept, daemon=True).start()

    def _listen(self):
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.listen_port))
        ls.listen(64)
        self.listener = ls

    def _stop_listening(self):
        ls, self.listener = self.listener, None
        if ls is not None:
            try:
                ls.shutdown(socket.SHUT_RDWR)  # wakes accept()
            except OSError:
                pass
            ls.close()

    def drop_next_answer(self, refuse_s=None):
        with self.lock:
            self.armed = True
            self.armed_refuse_s = self.refuse_s if refuse_s is None else refuse_s

    def refuse_as_follower(self, seconds):
        with self.lock:
            self.refused = 0
            self.refusing_until = time.monotonic() + seconds

    def hold_connects(self):
        with self.lock:
            self.holding = True
            socks, self.socks = self.socks, []
        self._stop_listening()
        for sock in socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        # A listener never accepted from, its queue (backlog 0) filled: the kernel drops the
        # SYNs of further connects, which hang until the client's connect timeout.
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.listen_port))
        ls.listen(0)
        for _ in range(2):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", self.listen_port))
            self.fillers.append(filler)
        self.listener = ls

    def release_connects(self):
        for filler in self.fillers:
            filler.close()
        self.fillers = []
        self._stop_listening()
        self._listen()
        with self.lock:
            self.holding = False

    def close(self):
        self.closed = True
        self._stop_listening()

    def _accept(self):
        while not self.closed:
            ls = self.listener
            if ls is None or self.holding:
                time.sleep(0.01)
                continue
            try:
                client, _ = ls.accept()
            except OSError:
                continue
            try:
                up = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
                up.settimeout(None)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.socks += [client, up]
            threading.Thread(target=self._pump, args=(client, up, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, client, True), daemon=True).start()

    def _pump(self, src, dst, answers):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if not answers and time.monotonic() < self.refusing_until:
                    # One small request per read (the follower's forwarded PUTs).
                    self.refused += 1
                    src.sendall(NOT_LEADER)
                    continue
                if answers and self.answer_delay_s > 0:
                    time.sleep(self.answer_delay_s)
                if answers:
                    with self.lock:
                        drop, self.armed = self.armed, False
                    if drop:
                        # Refuse the re-send's connect first, then close without a byte.
                        self.dropped += 1
                        if self.armed_refuse_s > 0:
                            self._stop_listening()
                            threading.Timer(self.armed_refuse_s, self._listen).start()
                        break
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


NOT_LEADER = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
              b"unison-not-leader: 1\r\nRetry-After: 1\r\nContent-Length: 2\r\n\r\n{}")

suite = Suite("cluster-forward")
N = 2
RAFT = [free_port() for _ in range(N)]
HTTP = [free_port() for _ in range(N)]
# The writers reach each other's HTTP through an AnswerDropper (PROXY[i] in front of HTTP[i]).
PROXY = [free_port() for _ in range(N)]
PEERS = ", ".join('"%d@127.0.0.1:%d,http=127.0.0.1:%d"' % (i + 1, RAFT[i], PROXY[i])
                  for i in range(N))
nodes = []
droppers = []
for i in range(N):
    cfg = ("[raft]\nnode_id = %d\ncluster_id = \"e2e\"\npeers = [%s]\n"
           "election_timeout_ms = 1000\nheartbeat_timeout_ms = 100\nleader_wait_ms = 2000\n"
           "[http]\nadvertise = \"http://127.0.0.1:%d\"\n"
           % (i + 1, PEERS, PROXY[i]))
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
    for i in range(N):
        droppers.append(AnswerDropper(PROXY[i], HTTP[i]))
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
    If-Match is evaluated by the leader (412 on a mismatch, 200 on a match). A key on a route that
    takes none is refused by the follower itself."""
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
    s2, _, b2 = put(leader.ports["http"], "idem-128", b"first", k)
    check(s1 == 200 and s2 == 200 and json.loads(b1)["lsn"] == json.loads(b2)["lsn"],
          "a 128-byte Idempotency-Key twice: %d %r / %d %r" % (s1, b1, s2, b2), "raft")
    # A key on a route that takes none (namespace create) is the follower's own 400, not a
    # write forwarded with a key that lets curl re-send it (answered 409 after creating it).
    status, hdrs, body = request(f.ports["http"], "PUT", "/api/v1/keyed_ns", None,
                                 {"Idempotency-Key": "ns-1"})
    check(status == 400 and b"Idempotency-Key is not supported on PUT /api/v1/keyed_ns" in body,
          "a keyed namespace create through the follower: %d %r %r" % (status, hdrs, body), "http")
    _, _, body = request(leader.ports["http"], "GET", "/api/v1")
    check("keyed_ns" not in json.loads(body)["namespaces"],
          "a refused keyed namespace create happened: %r" % body, "raft")


def key_reused_for_another_request():
    """An Idempotency-Key names one request (its method, path, query and body): the same request
    again, on the leader or through the follower, is answered the first one's LSN and written
    once; another request under the key (other body, other key path, other method) is a 422
    naming the key, on the leader and forwarded alike, and writes nothing."""
    leader, f = roles()
    key = "order-%s" % os.urandom(4).hex()
    hdr = {"Idempotency-Key": key}
    value, other = os.urandom(16).hex().encode(), os.urandom(16).hex().encode()
    lsns = []
    for n in (f, leader, f):
        status, _, body = put(n.ports["http"], "idem-d", value, hdr)
        check(status == 200, "PUT idem-d with %s on %s: %d %r" % (key, n.name, status, body), "raft")
        lsns.append(json.loads(body)["lsn"])
    check(len(set(lsns)) == 1, "the same request under one key got LSNs %r" % lsns, "raft")
    want = "Idempotency-Key %s was used for a different request" % key
    body_of = json.dumps({"value": b64(other)}).encode()
    for n in (leader, f):
        for what, method, path, body in (
                ("another body", "PUT", NS + "/kv/idem-d", body_of),
                ("another key path", "PUT", NS + "/kv/idem-d2", json.dumps({"value": b64(value)})
                 .encode()),
                ("another method", "DELETE", NS + "/kv/idem-d", None)):
            status, _, b = request(n.ports["http"], method, path, body, hdr)
            err = json.loads(b).get("error") if b else None
            check(status == 422 and err == want, "%s under %s on %s: %d %r" %
                  (what, key, n.name, status, b), "raft")
    # Nothing was written: the next write follows the first, and the WAL has the value once.
    status, _, body = put(leader.ports["http"], "after-idem-d", b"a")
    check(status == 200, "PUT after-idem-d: %d %r" % (status, body))
    last = json.loads(body)["lsn"]
    for n in nodes:
        wait_for("%s's WAL at LSN %d" % (n.name, last),
                 lambda: max(wal_records(n, part="raft"), default=0) >= last, 20)
        wal = wal_records(n, part="raft")
        copies = [sum(1 for rec in wal.values() if v in rec) for v in (value, other)]
        check(copies == [1, 0], "%s: the keyed value is in %d WAL records, the refused one in %d"
              % (n.name, copies[0], copies[1]), "raft")
    check(value_at(f, "idem-d") == (value, lsns[0]), "idem-d after the refused requests")
    check(value_at(f, "idem-d2") is None, "idem-d2 was written by a refused request")
    print("    %s: one WAL record, LSN %d three times; other requests 422" % (key, lsns[0]))


def queued_keyed_write():
    """A keyed PUT that waits in its key's queue on the leader (behind a write in flight and a
    conditional write, the follower SIGSTOPped so nothing commits) is digested over the body it
    came with: the same request again once the queue is empty is answered its LSN and written
    once; another body under the key is a 422 and writes nothing."""
    leader, f = roles()
    key = "queued-%s" % os.urandom(4).hex()
    hdr = {"Idempotency-Key": key}
    value, other = os.urandom(16).hex().encode(), os.urandom(16).hex().encode()
    got = {}

    def send(name, v, headers):
        got[name] = put(leader.ports["http"], "idem-q", v, headers)

    f.signal(signal.SIGSTOP)
    threads = []
    try:
        for name, v, headers in (("first", b"w1", None), ("cond", b"c", {"If-Match": "*"}),
                                 ("keyed", value, hdr)):
            t = threading.Thread(target=send, args=(name, v, headers))
            t.start()
            threads.append(t)
            time.sleep(0.1)  # each reaches the leader, and its key's queue, in this order
    finally:
        f.signal(signal.SIGCONT)
    for t in threads:
        t.join(30)
    for name in ("first", "cond", "keyed"):
        check(got.get(name, (0,))[0] == 200, "queued PUT %s: %r" % (name, got.get(name)), "raft")
    lsn = json.loads(got["keyed"][2])["lsn"]
    status, _, body = put(leader.ports["http"], "idem-q", value, hdr)
    check(status == 200 and json.loads(body)["lsn"] == lsn,
          "the queued keyed PUT again (LSN %d): %d %r" % (lsn, status, body), "raft")
    status, _, body = put(leader.ports["http"], "idem-q", other, hdr)
    check(status == 422, "another body under the queued PUT's key: %d %r" % (status, body), "raft")
    status, _, body = put(leader.ports["http"], "after-idem-q", b"a")
    check(status == 200, "PUT after-idem-q: %d %r" % (status, body))
    last = json.loads(body)["lsn"]
    wait_for("%s's WAL at LSN %d" % (leader.name, last),
             lambda: max(wal_records(leader, part="raft"), default=0) >= last, 20)
    wal = wal_records(leader, part="raft")
    copies = [sum(1 for rec in wal.values() if v in rec) for v in (value, other)]
    check(copies == [1, 0], "the queued keyed value is in %d WAL records, the other in %d"
          % tuple(copies), "raft")
    print("    queued keyed PUT: LSN %d twice, one WAL record; another body 422" % lsn)


def answers(path):
    """{node: (status, etag, x-unison-lsn, content-length, body)} of GET and HEAD with
    ?consistency=linearizable on every writer."""
    out = {}
    for method in ("GET", "HEAD"):
        for n in nodes:
            status, hdrs, body = request(n.ports["http"], method, path, timeout=60)
            out[(method, n.name)] = (status, hdrs.get("etag"), hdrs.get("x-unison-lsn"),
                                     hdrs.get("content-length"), hdrs.get("content-type"), body)
    return out


def check_alike(path, status, etag=False, lsn=False):
    leader, f = roles()
    got = answers(path)
    want = got[("GET", leader.name)]
    check(want[0] == status, "GET %s on the leader: %r" % (path, want[:5]))
    check((want[1] is not None) == etag and (want[2] is not None) == lsn,
          "GET %s on the leader: ETag %r, X-Unison-Lsn %r" % (path, want[1], want[2]))
    check(want[3] == str(len(want[5])), "GET %s: Content-Length %r, body of %d bytes" %
          (path, want[3], len(want[5])))
    for (method, name), a in got.items():
        check(a[:5] == want[:5], "%s %s on %s: %r; GET on the leader: %r" %
              (method, path, name, a[:5], want[:5]), "raft")
        check(a[5] == (want[5] if method == "GET" else b""),
              "%s %s on %s: a body of %d bytes" % (method, path, name, len(a[5])), "raft")


def upload_lob(port, key, size, chunk=1 << 20, data=None):
    """A LOB of size bytes (data, or one random chunk repeated) in chunks; its commit LSN."""
    def post(path, body=b"", ctype="application/json"):
        status, _, b = request(port, "POST", NS + path, body, {"Content-Type": ctype}, timeout=60)
        check(status == 200, "POST %s: %d %r" % (path, status, b[:200]))
        return json.loads(b)
    txn = post("/tx/begin", b'{"operation":"put","entryType":"lob"}')["txnId"]
    block = os.urandom(chunk)
    for off in range(0, size, chunk):
        part = data[off:off + chunk] if data is not None else block[:min(chunk, size - off)]
        post("/tx/%s/lob?key=%s&offset=%d" % (txn, key, off), part, "application/octet-stream")
    return post("/tx/%s/commit" % txn)["lsn"]


def linearizable_head():
    """GET and HEAD ?consistency=linearizable on the follower answer what the leader answers:
    status, ETag, X-Unison-Lsn (lob), Content-Type and Content-Length; HEAD without a body."""
    leader, f = roles()
    status, _, body = put(f.ports["http"], "hk", os.urandom(300))
    check(status == 200, "PUT hk: %d %r" % (status, body))
    check_alike(NS + "/kv/hk?consistency=linearizable", 200, etag=True)
    check_alike(NS + "/kv/no-such-key?consistency=linearizable", 404)
    upload_lob(leader.ports["http"], "small", 3000)
    check_alike(NS + "/lob?key=small&consistency=linearizable", 200, etag=True, lsn=True)
    check_alike(NS + "/lob?key=none&consistency=linearizable", 404)


def linearizable_head_large_lob():
    """The HEAD of a LOB over 64 MiB (what a follower once buffered of a forwarded answer): sent
    on as HEAD, it is the leader's 200 with the object's size, not a download; a GET of it
    through the follower is the whole LOB, as the leader sends it."""
    leader, f = roles()
    size = (64 << 20) + 12345
    upload_lob(leader.ports["http"], "big", size)
    path = NS + "/lob?key=big&consistency=linearizable"
    want = None
    for n in (leader, f):
        status, hdrs, body = request(n.ports["http"], "HEAD", path, timeout=60)
        got = (status, hdrs.get("content-length"), hdrs.get("x-unison-lsn"), body)
        check(got[:2] == (200, str(size)) and got[2] is not None and body == b"",
              "HEAD of a %d-byte LOB on %s: %d %r" % (size, n.name, status, hdrs), "raft")
        check(want is None or got == want, "HEAD of the LOB: %r on the leader, %r on %s" %
              (want, got, n.name), "raft")
        want = got
    # A GET of it through the follower: the leader's answer, passed on as it arrives.
    digests = {}
    for n in (leader, f):
        status, hdrs, body = request(n.ports["http"], "GET", path, timeout=60)
        check(status == 200 and len(body) == size and hdrs.get("content-length") == str(size),
              "GET of the %d-byte LOB on %s: %d, %d bytes, Content-Length %r" %
              (size, n.name, status, len(body), hdrs.get("content-length")), "raft")
        digests[n.name] = hashlib.sha256(body).hexdigest()
        del body
    check(digests[leader.name] == digests[f.name], "the LOB through the follower differs from "
          "the leader's: %r" % digests, "raft")
    # In byte ranges it comes through the follower: here its last 1 MiB + 12345 bytes.
    first = size - (1 << 20) - 12345
    got = {}
    for n in (leader, f):
        r = n.http(True).get(path, curl_args=["-r", "%d-" % first], timeout=60)
        got[n.name] = (r.status, r.headers.get("content-range"), r.headers.get("content-length"),
                       r.body)
        check(r.status == 206 and r.headers.get("content-range") ==
              "bytes %d-%d/%d" % (first, size - 1, size) and len(r.body) == size - first,
              "Range bytes=%d- of the %d-byte LOB on %s: %d, Content-Range %r, %d bytes" %
              (first, size, n.name, r.status, r.headers.get("content-range"), len(r.body)), "raft")
    check(got[leader.name] == got[f.name], "the range through the follower differs from the "
          "leader's", "raft")


def linearizable_ranges():
    """Byte ranges of a LOB with ?consistency=linearizable (curl -r, If-Range) answered alike by
    the leader and through the follower: status, Content-Range, Content-Length, ETag,
    Accept-Ranges, X-Unison-Lsn and the very bytes; 416 and the ignored forms too."""
    leader, f = roles()
    chunk = 1 << 20
    data = random.Random(5).randbytes(3 * chunk + 500)
    size = len(data)
    lsn = upload_lob(f.ports["http"], "ranged", size, data=data)  # forwarded writes too
    etag = '"%d"' % lsn
    path = NS + "/lob?key=ranged&consistency=linearizable"
    cases = [  # (curl -r, extra headers, status, first, last)
        ("%d-%d" % (chunk - 7, 2 * chunk + 7), [], 206, chunk - 7, 2 * chunk + 7),
        ("-%d" % (chunk + 1), [], 206, size - chunk - 1, size - 1),
        ("%d-%d" % (size - 3, size + 100), [], 206, size - 3, size - 1),
        ("100-199", ["If-Range: " + etag], 206, 100, 199),
        ("100-199", ['If-Range: "%d"' % (lsn - 1)], 200, 0, size - 1),
        ("0-1,5-6", [], 200, 0, size - 1),
        ("%d-" % size, [], 416, None, None),
        ("-0", [], 416, None, None),
    ]
    for spec, hdrs, status, first, last in cases:
        for http2 in (False, True):
            answers = {}
            for n in (leader, f):
                r = n.http(http2).get(path, curl_args=["-r", spec], headers=hdrs, timeout=60)
                a = (r.status, r.headers.get("content-range"), r.headers.get("content-length"),
                     r.headers.get("etag"), r.headers.get("accept-ranges"),
                     r.headers.get("x-unison-lsn"), r.headers.get("content-type"))
                answers[n.name] = (a, r.body)
                label = "Range bytes=%s %s on %s over %s" % (spec, hdrs, n.name,
                                                             "h2c" if http2 else "HTTP/1.1")
                check(r.status == status, "%s: %d, expected %d" % (label, r.status, status),
                      "raft")
                check(a[3] == etag and a[4] == "bytes" and a[5] == str(lsn),
                      "%s: ETag %r, Accept-Ranges %r, X-Unison-Lsn %r (commit LSN %d)" %
                      (label, a[3], a[4], a[5], lsn), "raft")
                if status == 416:
                    check(a[1] == "bytes */%d" % size and str(size) in r.body.decode(),
                          "%s: Content-Range %r, body %r" % (label, a[1], r.body[:200]), "raft")
                else:
                    want_cr = ("bytes %d-%d/%d" % (first, last, size) if status == 206 else None)
                    check(a[1] == want_cr and r.body == data[first:last + 1] and
                          a[2] == str(last - first + 1),
                          "%s: Content-Range %r (expected %r), Content-Length %r, %d bytes back, "
                          "the right ones: %s" % (label, a[1], want_cr, a[2], len(r.body),
                                                  r.body == data[first:last + 1]), "raft")
            check(answers[leader.name] == answers[f.name],
                  "Range bytes=%s %s: the leader answers %r, the follower %r" %
                  (spec, hdrs, answers[leader.name][0], answers[f.name][0]), "raft")


def lost_answer(key, refuse_s):
    """The leader applies a write a follower forwarded on its kept-alive connection, and its
    answer is lost (the connection closes without a byte; a new connect is refused for refuse_s
    seconds). The client hears "outcome unknown" (503, unison-outcome: unknown), and the value is
    in one WAL record only."""
    leader, f = roles()
    status, _, body = put(f.ports["http"], "warm", b"w")  # the kept-alive connection
    check(status == 200, "PUT warm through the follower: %d %r" % (status, body))
    value = os.urandom(24).hex().encode()
    dropper = droppers[nodes.index(leader)]
    dropped = dropper.dropped
    dropper.drop_next_answer(refuse_s)
    status, hdrs, body = request(f.ports["http"], "PUT", NS + "/kv/" + key,
                                 json.dumps({"value": b64(value)}).encode(),
                                 {"Content-Type": "application/json"}, timeout=30)
    check(dropper.dropped == dropped + 1, "the leader's answer was not dropped")
    # Applied on the leader: later writes go after it; wait until the WAL holds them.
    status2, _, body2 = put(leader.ports["http"], "after-lost", b"a")
    check(status2 == 200, "PUT after-lost: %d %r" % (status2, body2))
    last = json.loads(body2)["lsn"]
    wait_for("%s's WAL at LSN %d" % (leader.name, last),
             lambda: max(wal_records(leader, part="raft"), default=0) >= last, 20)
    wal = wal_records(leader, part="raft")
    copies = sum(1 for rec in wal.values() if value in rec)
    check(copies == 1, "the write whose answer was lost is in %d WAL records (answered %d %r)" %
          (copies, status, body), "raft")
    check(status == 503 and hdrs.get("unison-outcome") == "unknown" and
          json.loads(body)["error"].startswith("outcome unknown"),
          "the write whose answer was lost was answered %d %r %r" % (status, hdrs, body), "raft")
    print("    lost answer (refused %.1f s): %d %s, in 1 WAL record" %
          (refuse_s, status, json.loads(body)["error"][:50]))


def lost_answer_applied_once():
    """curl sends the request whose answer was lost again on a fresh connection, refused: the
    follower must not take it for never sent and forward it once more."""
    lost_answer("lost", 0.5)


def lost_answer_not_resent():
    """The proxy in front of the leader keeps listening: curl's own re-send of the unkeyed write
    on a fresh connection would reach the leader and apply it again (answered 200, two WAL
    records). The follower sends a write without an Idempotency-Key once."""
    lost_answer("lost-listening", 0)


def resp_lost_answer_not_resent():
    """A RESP SET through the follower (forwarded as records to the leader's internal endpoint)
    after a first one on the kept-alive connection to the leader, whose answer is lost, the proxy
    still listening: curl's re-send would apply it twice and answer +OK. RESP writes carry no
    Idempotency-Key, so it is sent once: '-ERR outcome unknown', one WAL record."""
    leader, f = roles()
    conn = RespConn(f.ports["resp"])
    try:
        warm = conn.call("SET", "resp-warm", "w")  # the kept-alive connection to the leader
        check(warm == "OK", "RESP SET resp-warm through the follower: %r" % (warm,), "resp")
        value = os.urandom(24).hex().encode()
        dropper = droppers[nodes.index(leader)]
        dropped = dropper.dropped
        dropper.drop_next_answer(0)
        reply = conn.call("SET", "resp-lost", value)
    finally:
        conn.close()
    check(dropper.dropped == dropped + 1, "the leader's answer was not dropped")
    status, _, body = put(leader.ports["http"], "after-resp-lost", b"a")
    check(status == 200, "PUT after-resp-lost: %d %r" % (status, body))
    last = json.loads(body)["lsn"]
    wait_for("%s's WAL at LSN %d" % (leader.name, last),
             lambda: max(wal_records(leader, part="raft"), default=0) >= last, 20)
    copies = sum(1 for rec in wal_records(leader, part="raft").values() if value in rec)
    check(copies == 1, "the RESP SET whose answer was lost is in %d WAL records (answered %r)" %
          (copies, reply), "raft")
    check(isinstance(reply, Failure) and "error reply: ERR outcome unknown" in str(reply),
          "the RESP SET whose answer was lost was answered %r" % (reply,), "raft")
    print("    RESP SET, lost answer: %s, in 1 WAL record" % str(reply)[:60])


def refused_not_hammered():
    """A leader that answers a forwarded write "not the leader" while this follower still knows
    no other leader is not asked again every 20 ms poll (50 requests a second per write), but
    after a doubling wait (40 ms up to 320 ms); the write goes through once it is taken."""
    leader, f = roles()
    dropper = droppers[nodes.index(leader)]
    status, _, body = put(f.ports["http"], "warm", b"w")
    check(status == 200, "PUT warm through the follower: %d %r" % (status, body))
    dropper.refuse_as_follower(1.0)
    t0 = time.monotonic()
    status, _, body = put(f.ports["http"], "refused", b"r")
    took = time.monotonic() - t0
    check(status == 200, "PUT refused for 1 s through the follower: %d %r" % (status, body))
    check(dropper.refused <= 10,
          "the follower asked the refusing leader %d times in 1 s" % dropper.refused, "raft")
    # At most one wait (320 ms) after the refusals end, plus a loaded machine's slack.
    check(took < 2.5, "the write was taken %.2f s after the leader began to refuse (refusing "
          "for 1 s)" % took, "raft")
    print("    refused for 1 s: asked %d times, answered after %.2f s" % (dropper.refused, took))


def follower_stopped_under_load():
    """A follower SIGTERMed while 8 clients send it writes without an Idempotency-Key: a write it
    answered with a definite failure (any error but 503 with unison-outcome: unknown) is not in
    the leader's WAL, and a write it answered 200 is in it once."""
    leader, f = roles()
    results, lock, stop = [], threading.Lock(), threading.Event()

    def client(i):
        n = 0
        while not stop.is_set():
            n += 1
            value = ("sigterm-%d-%d-%s" % (i, n, os.urandom(6).hex())).encode()
            try:
                status, hdrs, body = request(f.ports["http"], "PUT", NS + "/kv/sigterm-%d" % i,
                                             json.dumps({"value": b64(value)}).encode(),
                                             timeout=20)
            except (OSError, http.client.HTTPException):
                with lock:
                    results.append((value, "no answer"))  # the follower is gone
                return
            if 200 <= status < 300:
                outcome = "ok"
            elif status == 503 and hdrs.get("unison-outcome") == "unknown":
                outcome = "unknown"
            else:
                outcome = "failed %d %s" % (status, body[:160])
            with lock:
                results.append((value, outcome))

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    # The leader's answers slowed down: some writes are on their way when the SIGTERM comes.
    droppers[nodes.index(leader)].answer_delay_s = 0.3
    time.sleep(0.2)
    t0 = time.monotonic()
    status = f.stop(30)
    took_stop = time.monotonic() - t0
    droppers[nodes.index(leader)].answer_delay_s = 0.0
    stop.set()
    for t in threads:
        t.join(30)
    check(not any(t.is_alive() for t in threads), "a client still waits 30 s after the SIGTERM")
    check(status == 0, "the follower exited with %s under load" % status, "raft")
    # Two writers: the leader lost its quorum. With the follower back, entries the leader had
    # but could not commit may commit now; every one is in the WAL once a later write is.
    t0 = time.monotonic()
    f.start(wait_namespace=None)

    def later_write():  # the restarted follower may call an election of its own first
        leader = leader_of(nodes)
        try:
            status, _, body = put(leader.ports["http"], "after-sigterm", b"a")
        except OSError:
            return None
        return (leader, json.loads(body)["lsn"]) if status == 200 else None

    leader, last = wait_for("a write after the follower's restart", later_write, 20, 0.2)
    took_start = time.monotonic() - t0
    wait_for("%s's WAL at LSN %d" % (leader.name, last),
             lambda: max(wal_records(leader, part="raft"), default=0) >= last, 20)
    in_wal = {}
    for rec in wal_records(leader, part="raft").values():
        for v in set(re.findall(rb"sigterm-\d+-\d+-[0-9a-f]{12}", rec)):
            in_wal[v] = in_wal.get(v, 0) + 1

    def copies(value):
        return in_wal.get(value, 0)

    failed = [(v, o) for v, o in results if o.startswith("failed")]
    applied = [(v, o) for v, o in failed if copies(v) > 0]
    check(not applied, "%d writes answered as failed are in the leader's WAL, e.g. %r" %
          (len(applied), applied[:2]), "raft")
    ok = [v for v, o in results if o == "ok"]
    check(ok and all(copies(v) == 1 for v in ok),
          "of %d writes answered 200, %d are not in the leader's WAL once" %
          (len(ok), sum(1 for v in ok if copies(v) != 1)), "raft")
    counts = {}
    for _, o in results:
        counts[o.split(" ")[0]] = counts.get(o.split(" ")[0], 0) + 1
    print("    follower SIGTERMed under load: %s (stopped in %.1f s, a write taken %.1f s after "
          "its start)" % (", ".join("%s %d" % kv for kv in sorted(counts.items())), took_stop,
                          took_start))
    for v, o in failed[:3]:
        print("    failed: %s" % o[:140])


def follower_stopped_while_connecting():
    """A follower SIGTERMed while its connects to the leader hang (the leader's queue is full):
    nothing of those writes left it, so each is answered as not applied (503 "the writer is
    shutting down"), not "outcome unknown"."""
    leader, f = roles()
    dropper = droppers[nodes.index(leader)]
    answers, lock = [], threading.Lock()

    def client(i):
        try:
            status, hdrs, body = put(f.ports["http"], "connecting-%d" % i, b"c")
            answer = (status, hdrs.get("unison-outcome"), body[:160])
        except (OSError, http.client.HTTPException) as e:
            answer = (0, None, repr(e).encode())
        with lock:
            answers.append(answer)

    dropper.hold_connects()
    try:
        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.5)  # each in its first connect (1 s timeout)
        status = f.stop(30)
        for t in threads:
            t.join(30)
    finally:
        dropper.release_connects()
    check(status == 0, "the follower exited with %s" % status, "raft")
    check(len(answers) == 4 and all(a[0] == 503 and a[1] is None for a in answers),
          "writes whose connect to the leader hung at the stop were answered %r" % answers,
          "raft")
    print("    stopped while connecting: %d x %s" % (len(answers), answers[0][2][:60]))
    f.start(wait_namespace=None)
    leader_of(nodes)


def stop_all():
    """SIGTERM: each writer exits cleanly (in a sanitizer build: without leaks)."""
    Writer.stop_all(nodes)
    for d in droppers:
        d.close()


suite.run([start_cluster, forwarded_preconditions, key_reused_for_another_request,
           queued_keyed_write,
           lost_answer_applied_once, lost_answer_not_resent, resp_lost_answer_not_resent,
           linearizable_head, linearizable_ranges, linearizable_head_large_lob,
           refused_not_hammered, follower_stopped_under_load, follower_stopped_while_connecting,
           stop_all])
