#!/usr/bin/env python3
"""End to end, restarts: write many things of every kind, stop with SIGTERM (exit 0), start again
and read everything back with the same LSNs; then SIGKILL a writer under load, several times, and
check that every acknowledged write survived."""

import os
import random
import signal
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Failure, RespConn, Suite, b64, check, expect, expect_json, expect_write,  # noqa
                     redis_cli, resp_command, unb64)

suite = Suite("restart")
# Small memtables and segments: the run crosses flushes and segment rotations (a segment must
# still hold a whole 1 MiB LOB chunk record).
server = suite.writer("w", args=["--set", "storage.memtable_bytes=1MiB",
                                 "--set", "storage.segment_size=2MiB"])

NS = "/api/v1/default"
rng = random.Random(7)
expected_kv = {}  # (ns, key) -> (value bytes or None if deleted, lsn or None)
expected_rows = {}  # key -> {col: value}
expected_lob = {}  # key -> bytes


def put_kv(h, ns, key, value):
    doc = expect_write(h.put("/api/v1/%s/kv/%s" % (ns, key), '{"value":"%s"}' % b64(value)),
                       "PUT " + key)
    expected_kv[(ns, key)] = (value, doc["lsn"])


def write_everything():
    h = server.http()
    h2 = server.http(True)
    # Single puts over both protocols.
    for i in range(150):
        put_kv(h if i % 2 else h2, "default", "single:%d" % i, os.urandom(rng.randrange(1, 3000)))
    # Batches.
    for b in range(10):
        items = [("batch:%d:%d" % (b, i), os.urandom(rng.randrange(1, 2000))) for i in range(100)]
        body = '{"operation":"put","items":[%s]}' % ",".join(
            '{"key":"%s","value":"%s"}' % (k, b64(v)) for k, v in items)
        doc = expect_write(h.post(NS + "/kv/batch", body), "batch put")
        for k, v in items:
            expected_kv[("default", k)] = (v, doc["lsn"])
    # Overwrites and deletes.
    for i in range(0, 150, 3):
        put_kv(h, "default", "single:%d" % i, b"overwritten %d" % i)
    for i in range(1, 150, 5):
        doc = expect_write(h.delete(NS + "/kv/single:%d" % i), "DELETE")
        expected_kv[("default", "single:%d" % i)] = (None, None)
    # Rows with merges and column deletes.
    for i in range(40):
        cols = {"c%d" % j: os.urandom(50) for j in range(5)}
        expect_write(h.put(NS + "/row/row:%d" % i, '{"columns":{%s}}' % ",".join(
            '"%s":"%s"' % (c, b64(v)) for c, v in cols.items())), "PUT row")
        expected_rows["row:%d" % i] = cols
    for i in range(0, 40, 4):
        expect_write(h.delete(NS + "/row/row:%d/columns?columns=c1,c3" % i), "DELETE columns")
        del expected_rows["row:%d" % i]["c1"], expected_rows["row:%d" % i]["c3"]
    # Over RESP, pipelined.
    data = b"".join(resp_command("SET", "resp:%d" % i, "r%d" % i) for i in range(1000))
    rc, out, err = redis_cli(server.ports["resp"], "--pipe", stdin=data, raw=False)
    check(rc == 0 and b"errors: 0" in out, "redis-cli --pipe: %r %r" % (out, err), "resp")
    for i in range(1000):
        expected_kv[("default", "resp:%d" % i)] = (b"r%d" % i, None)
    # A LOB of 3 MiB, and a committed and an open transaction.
    lob = os.urandom(3 * 1024 * 1024 + 12345)
    txn = expect_write(h.post(NS + "/tx/begin", '{"operation":"put","entryType":"lob"}'),
                       "begin")["txnId"]
    for off in range(0, len(lob), 1 << 20):
        expect_write(h.post(NS + "/tx/%s/lob?key=big.bin&offset=%d" % (txn, off),
                            lob[off:off + (1 << 20)],
                            headers=["Content-Type: application/octet-stream"]), "LOB chunk")
    expect_write(h.post(NS + "/tx/%s/commit" % txn), "commit")
    expected_lob["big.bin"] = lob
    txn = expect_write(h.post(NS + "/tx/begin", '{"operation":"put","entryType":"kv"}'),
                       "begin")["txnId"]
    expect_write(h.post(NS + "/tx/%s/kv" % txn, '{"key":"txn:a","value":"%s"}' % b64("A")), "append")
    expect_write(h.post(NS + "/tx/%s/commit" % txn), "commit")
    expected_kv[("default", "txn:a")] = (b"A", None)
    open_txn = expect_write(h.post(NS + "/tx/begin", '{"operation":"put","entryType":"kv"}'),
                            "begin")["txnId"]
    expect_write(h.post(NS + "/tx/%s/kv" % open_txn, '{"key":"txn:open","value":"%s"}' % b64("x")),
                 "append to the open transaction")
    expected_kv[("default", "txn:open")] = (None, None)
    # Another namespace.
    expect_json(h.put("/api/v1/second"), 200, "create namespace second")
    for i in range(50):
        put_kv(h, "second", "k%d" % i, b"second %d" % i)


def read_everything(label):
    h = server.http()
    bad = []
    items = sorted(expected_kv.items())
    # Every value of the default namespace over RESP (pipelined: fast); over HTTP, with the LSN
    # each key was written at, every key of other namespaces and every 10th of the default one.
    c = RespConn(server.ports["resp"])
    try:
        default = [(k, v) for (ns, k), (v, _) in items if ns == "default"]
        got = c.get_many([k for k, _ in default])
    finally:
        c.close()
    for (key, value), g in zip(default, got):
        if g != value:
            bad.append("default/%s: %s over RESP" %
                       (key, "missing" if g is None else "present" if value is None
                        else "value differs"))
    for n, ((ns, key), (value, lsn)) in enumerate(items):
        if ns == "default" and n % 10 != 0:
            continue
        r = h.get("/api/v1/%s/kv/%s" % (ns, key))
        if value is None:
            if r.status != 404:
                bad.append("%s/%s: deleted or uncommitted, but %r" % (ns, key, r))
            continue
        if r.status != 200:
            bad.append("%s/%s: %r" % (ns, key, r))
            continue
        doc = r.json()
        if unb64(doc["value"]) != value:
            bad.append("%s/%s: value differs" % (ns, key))
        elif lsn is not None and doc.get("lsn") != lsn:
            bad.append("%s/%s: lsn %r, was %d" % (ns, key, doc.get("lsn"), lsn))
        if len(bad) > 10:
            break
    for key, cols in expected_rows.items():
        doc = expect_json(h.get(NS + "/row/" + key), 200, "GET row " + key)
        got = {c: unb64(v) for c, v in doc["columns"].items()}
        if got != cols:
            bad.append("row %s: columns %r, expected %r" % (key, sorted(got), sorted(cols)))
    for key, data in expected_lob.items():
        r = expect(h.get(NS + "/lob?key=" + key), 200, "GET lob " + key)
        if r.body != data:
            bad.append("lob %s: %d bytes back, %d written or content differs" %
                       (key, len(r.body), len(data)))
    check(not bad, "%s: %d mismatches:\n      %s" % (label, len(bad), "\n      ".join(bad[:10])),
          "writer")


def sigterm_restart():
    server.start()
    write_everything()
    last = expect_json(server.http().get(NS + "/checkpoint"), 200, "checkpoint")["lsn"]
    read_everything("before the restart")
    # A stop that does not exit 0 is reported at the end, after the read-back (which is what
    # this case is about) has run too.
    stop_problems = []

    def stop(what):
        try:
            server.stop_clean(what)
            check(not os.path.exists(server.ports_file),
                  "the ports file was left after a clean stop", "writer")
        except Failure as e:
            stop_problems.append(e)
            server.kill()

    t0 = time.monotonic()
    stop("SIGTERM after the writes")
    print("    stopped in %.1f s" % (time.monotonic() - t0))
    for round_ in (1, 2):
        server.start()
        read_everything("after restart %d" % round_)
        cp = expect_json(server.http().get(NS + "/checkpoint"), 200, "checkpoint")
        check(cp["lsn"] >= last, "LSN went back from %d to %d after a restart" % (last, cp["lsn"]),
              "raft")
        put_kv(server.http(), "default", "after-restart-%d" % round_, b"new")
        check(expected_kv[("default", "after-restart-%d" % round_)][1] > last,
              "a write after the restart reused an LSN", "raft")
        last = expected_kv[("default", "after-restart-%d" % round_)][1]
        stop("SIGTERM after restart %d" % round_)
    if stop_problems:
        raise stop_problems[0]


class Loader(threading.Thread):
    """SETs over one RESP connection, one at a time; remembers which were acknowledged."""

    def __init__(self, port, prefix):
        super().__init__(daemon=True)
        self.port, self.prefix = port, prefix
        self.acked = []
        self.stop = False

    def run(self):
        try:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
            i = 0
            buf = b""
            while not self.stop:
                key, val = "%s:%d" % (self.prefix, i), "value-%d-%s" % (i, self.prefix)
                s.sendall(resp_command("SET", key, val))
                while b"\r\n" not in buf:
                    b = s.recv(4096)
                    if not b:
                        return
                    buf += b
                line, buf = buf.split(b"\r\n", 1)
                if line == b"+OK":
                    self.acked.append((key, val))
                i += 1
        except OSError:
            return


def lost(acked):
    """The acknowledged (key, value) pairs that do not read back."""
    c = RespConn(server.ports["resp"])
    try:
        out = []
        for i in range(0, len(acked), 500):
            part = acked[i:i + 500]
            got = c.get_many([k for k, _ in part])
            out += [k for (k, v), g in zip(part, got) if g != v.encode()]
        return out
    finally:
        c.close()


def sigkill_survives():
    server.kill()  # whatever an earlier case left running
    acked = []
    for cycle in range(3):
        server.start()
        # Everything acknowledged in earlier cycles is there.
        missing = lost(acked)
        check(not missing, "cycle %d: acknowledged writes lost after SIGKILL: %d of %d, e.g. %r" %
              (cycle, len(missing), len(acked), missing[:5]), "writer")
        loaders = [Loader(server.ports["resp"], "kill%d-%d" % (cycle, j)) for j in range(3)]
        for l in loaders:
            l.start()
        # Some HTTP writes alongside.
        h = server.http()
        http_acked = []
        for i in range(30):
            r = h.put(NS + "/kv/killhttp%d-%d" % (cycle, i), '{"value":"%s"}' % b64("h%d" % i))
            if r.status == 200:
                http_acked.append(("killhttp%d-%d" % (cycle, i), "h%d" % i))
        time.sleep(1.0 + rng.random())
        os.kill(server.proc.pid, signal.SIGKILL)
        server.proc.wait(30)
        for l in loaders:
            l.stop = True
            l.join(10)
        n = sum(len(l.acked) for l in loaders)
        check(n > 0, "cycle %d: no write was acknowledged before the kill" % cycle, "resp")
        print("    cycle %d: %d RESP + %d HTTP writes acknowledged before SIGKILL" %
              (cycle, n, len(http_acked)))
        for l in loaders:
            acked += l.acked
        acked += http_acked
    server.start()
    missing = lost(acked)
    check(not missing, "acknowledged writes lost after SIGKILL: %d of %d, e.g. %r" %
          (len(missing), len(acked), missing[:5]), "writer")
    server.stop_clean("final SIGTERM")


suite.run([sigterm_restart, sigkill_survives])
