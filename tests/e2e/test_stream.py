#!/usr/bin/env python3
"""End to end, the upstream side of replication (docs/replication.md): a real unison-writer,
curl -N over HTTP/1.1 and h2c as the stream clients.

- records of every kind streamed from LSN 1 are, byte for byte, the frames of the writer's WAL
  segment files on disk, and the stream parser of proto/stream.h (tests/e2e/stream_check.c)
  accepts the whole capture;
- live tail: a record written after the client connected arrives; heartbeats when idle;
- a `from` beyond the last LSN waits with heartbeats and continues once the LSN exists;
- the snapshot download is an LMDB file with the data and the checkpoint of its header;
- 410 once retention removed old segments;
- acks, /status/replicas, acks=isr waiting for an ack and timing out with 503.
"""

import json
import os
import re
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Failure, Http, Suite, b64, check, expect, expect_error, expect_json,  # noqa
                     expect_write, wait_for)

suite = Suite("stream")
# Small segments and memtables so that flushes, rotation and retention happen within the test;
# a short acks=isr timeout and follower timeout keep the ISR cases quick.
server = suite.writer("w", args=[
    "--set", "storage.segment_size=256KiB", "--set", "storage.memtable_bytes=1MiB",
    "--set", "storage.retention_max_segments=2",
    "--set", "replication.ack_timeout_ms=1500", "--set", "replication.follower_timeout_ms=4000",
    "--set", "replication.isr_max_lag_ms=3000"])
suite.server = server
NS = "/api/v1/default"
CHECKER = os.environ.get("UD_STREAM_CHECK")
TRAILER = bytes.fromhex("deadbeeffeedface")

# --- CRC32C and frame parsing (docs/format-stream.md, docs/format-wal.md) ---------------------------

_TABLE = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _TABLE.append(_c)


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def wal_frames(buf, off, end, first_lsn, out):
    """Splits stored WAL frames in buf[off:end] into out[lsn] = frame bytes; returns the count."""
    lsn = first_lsn
    while end - off >= 16:
        crc, n = struct.unpack_from("<II", buf, off)
        if n == 0:
            break
        size = (16 + n + 7) & ~7
        check(off + size <= end, "frame of LSN %d runs past its container" % lsn)
        check(buf[off + 8 + n:off + 16 + n] == TRAILER, "bad trailer at LSN %d" % lsn)
        out[lsn] = bytes(buf[off:off + size])
        off += size
        lsn += 1
    return lsn - first_lsn


def parse_stream(data):
    """-> (records {lsn: frame bytes}, heartbeats [(last, time_ns, first)], order of LSNs)."""
    records, heartbeats, order = {}, [], []
    off = 0
    while len(data) - off >= 24:
        ver, typ, res, count, lsn, blen, crc = struct.unpack_from("<BBHIQII", data, off)
        check(ver == 1 and res == 0, "bad frame header at byte %d" % off)
        check(crc == crc32c(data[off:off + 20]), "bad header CRC at byte %d" % off)
        if len(data) - off - 24 < blen:
            break  # cut by the capture
        body = data[off + 24:off + 24 + blen]
        if typ == 1:
            got = {}
            n = wal_frames(body, 0, len(body), lsn, got)
            check(n == count, "records frame at LSN %d holds %d frames, header says %d" %
                  (lsn, n, count))
            check(sum(len(v) for v in got.values()) == blen, "records frame has trailing bytes")
            for k in sorted(got):
                check(k not in records, "LSN %d sent twice" % k)
                records[k] = got[k]
                order.append(k)
        elif typ == 2:
            check(blen == 16 and count == 0, "bad heartbeat frame")
            t, first = struct.unpack_from("<QQ", body, 0)
            heartbeats.append((lsn, t, first))
        else:
            raise Failure("unknown frame type %d" % typ)
        off += 24 + blen
    return records, heartbeats, order


def disk_frames():
    """Every frame of the writer's WAL segment files: {lsn: frame bytes}."""
    d = os.path.join(server.data_dir, "namespaces", "default", "wal")
    out = {}
    for name in sorted(os.listdir(d)):
        if not name.endswith(".seg"):
            continue
        with open(os.path.join(d, name), "rb") as f:
            buf = f.read()
        first_lsn = struct.unpack_from("<Q", buf, 44)[0]
        wal_frames(buf, 64, len(buf), first_lsn, out)
    return out


def checker(from_lsn, path):
    """Runs the C parser (proto/stream.h) over a capture: its summary as a dict."""
    if not CHECKER:
        return None
    p = subprocess.run([CHECKER, str(from_lsn), path], capture_output=True, timeout=60)
    check(p.returncode == 0, "stream parser rejected the capture: %s" % p.stderr.decode(),
          "replication")
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", p.stdout.decode())}


# --- a stream client ------------------------------------------------------------------------------


class Stream:
    """curl -N writing the response body to a file; headers to another."""

    def __init__(self, from_lsn, http2=False, ns="default", name="s"):
        base = os.path.join(server.dir, "%s-%d-%s" % (name, from_lsn, "h2" if http2 else "h1"))
        self.body = base + ".bin"
        self.headers = base + ".hdr"
        args = ["curl", "-sN", "-o", self.body, "-D", self.headers,
                "http://127.0.0.1:%d/api/v1/%s/wal/stream?from=%d" % (server.ports["http"], ns,
                                                                       from_lsn)]
        if http2:
            args.insert(1, "--http2-prior-knowledge")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL)

    def data(self):
        try:
            with open(self.body, "rb") as f:
                return f.read()
        except OSError:
            return b""

    def parsed(self):
        return parse_stream(self.data())

    def header_lines(self):
        with open(self.headers) as f:
            return f.read()

    def wait_lsn(self, lsn, timeout=20):
        return wait_for("LSN %d in the stream" % lsn, lambda: lsn in self.parsed()[0], timeout)

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


def last_lsn():
    return expect_json(server.http().get(NS + "/stats"), 200, "stats")["lsn"]


# --- cases ----------------------------------------------------------------------------------------


def start():
    server.start()


def write_every_kind():
    h = server.http()
    for i in range(30):
        expect_write(h.put(NS + "/kv/k%d" % i, '{"value":"%s"}' % b64(os.urandom(1 + i * 37))),
                     "PUT")
    expect_write(h.post(NS + "/kv/batch", '{"operation":"put","items":[%s]}' % ",".join(
        '{"key":"b%d","value":"%s"}' % (i, b64("v%d" % i)) for i in range(20))), "batch")
    expect_write(h.delete(NS + "/kv/k3"), "DELETE")
    expect_write(h.put(NS + "/row/r1", '{"columns":{"a":"%s","b":"%s"}}' % (b64("A"), b64("B"))),
                 "row")
    expect_write(h.delete(NS + "/row/r1/columns?columns=b"), "column delete")
    txn = expect_write(h.post(NS + "/tx/begin", '{"operation":"put","entryType":"lob"}'),
                       "begin")["txnId"]
    lob = os.urandom(100000)
    for off in range(0, len(lob), 40000):
        expect_write(h.post(NS + "/tx/%s/lob?key=f.bin&offset=%d" % (txn, off),
                            lob[off:off + 40000],
                            headers=["Content-Type: application/octet-stream"]), "LOB chunk")
    expect_write(h.post(NS + "/tx/%s/commit" % txn), "commit")
    txn = expect_write(h.post(NS + "/tx/begin", '{"operation":"put","entryType":"kv"}'),
                       "begin")["txnId"]
    expect_write(h.post(NS + "/tx/%s/kv" % txn, '{"key":"t","value":"%s"}' % b64("T")), "part")
    expect_write(h.post(NS + "/tx/%s/abort" % txn), "abort")


def stream_equals_disk():
    """From LSN 1 over HTTP/1.1 and h2c: every LSN, the bytes of the segment files."""
    last = last_lsn()
    disk = disk_frames()
    check(set(range(1, last + 1)) <= set(disk), "the WAL on disk lacks LSNs up to %d" % last)
    for http2 in (False, True):
        s = Stream(1, http2)
        try:
            s.wait_lsn(last)
            records, heartbeats, order = s.parsed()
        finally:
            s.close()
        what = "h2c" if http2 else "HTTP/1.1"
        check(order == list(range(1, last + 1)), "%s: LSNs out of order or missing" % what,
              "replication")
        for lsn in range(1, last + 1):
            check(records[lsn] == disk[lsn],
                  "%s: LSN %d streamed differs from the segment file" % (what, lsn), "replication")
        check(heartbeats and heartbeats[0][0] == last and heartbeats[0][2] == 1,
              "%s: the first frame is a heartbeat naming last LSN %d and first LSN 1: %r" %
              (what, last, heartbeats[:1]), "replication")
        hdr = s.header_lines().lower()
        check("content-type: application/x-unison-wal-stream" in hdr and
              "x-unison-stream-version: 1" in hdr and "x-unison-first-lsn: 1" in hdr and
              "x-unison-last-lsn: %d" % last in hdr, "%s: stream headers: %s" % (what, hdr))
        if http2:
            check(hdr.startswith("http/2"), "not HTTP/2: %s" % hdr)
        else:
            check("transfer-encoding: chunked" in hdr, "not chunked: %s" % hdr)
        summary = checker(1, s.body)
        if summary is not None:
            check(summary["records"] >= last and summary["first"] == 1,
                  "%s: stream parser summary %r" % (what, summary), "replication")
    # From the middle: starts exactly there.
    s = Stream(last - 5)
    try:
        s.wait_lsn(last)
        records, _, order = s.parsed()
    finally:
        s.close()
    check(order == list(range(last - 5, last + 1)), "from %d: got %r" % (last - 5, order))


def live_tail_and_heartbeats():
    last = last_lsn()
    s = Stream(last + 1, http2=True)
    try:
        # Idle: heartbeats about every second (the first right after the headers).
        wait_for("3 heartbeats", lambda: len(s.parsed()[1]) >= 3, 10)
        _, hbs, _ = s.parsed()
        check(all(hb[0] == last for hb in hbs), "heartbeats name last LSN %d: %r" % (last, hbs))
        times = [hb[1] for hb in hbs]
        check(all(b - a >= 0.5e9 for a, b in zip(times[1:], times[2:])),
              "idle heartbeats come about once a second: %r" % times)
        t0 = time.monotonic()
        lsn = expect_write(server.http().put(NS + "/kv/live", '{"value":"%s"}' % b64("L")),
                           "PUT while streaming")["lsn"]
        s.wait_lsn(lsn, 5)
        took = time.monotonic() - t0
        check(took < 1.0, "the record arrived %.2f s after its write (pushed, not polled)" % took)
    finally:
        s.close()
    summary = checker(last + 1, s.body)
    if summary is not None:
        check(summary["records"] == 1 and summary["heartbeats"] >= 3, "parser: %r" % summary)


def from_beyond_last_waits():
    last = last_lsn()
    s = Stream(last + 3)
    try:
        wait_for("a heartbeat", lambda: len(s.parsed()[1]) >= 1, 10)
        h = server.http()
        for i in range(4):
            expect_write(h.put(NS + "/kv/ahead%d" % i, '{"value":"%s"}' % b64("x")), "PUT")
        s.wait_lsn(last + 4)
        records, _, order = s.parsed()
        check(order == [last + 3, last + 4], "a stream from beyond the end continues at its "
              "from LSN: %r" % order)
    finally:
        s.close()


def bad_requests():
    h = server.http()
    expect_error(h.get(NS + "/wal/stream"), 400, "no from", "from is required")
    expect_error(h.get(NS + "/wal/stream?from=abc"), 400, "bad from")
    expect_error(h.get(NS + "/wal/stream?from=0"), 400, "from 0")
    expect_error(h.get("/api/v1/nosuch/wal/stream?from=1"), 404, "unknown namespace")
    expect_error(h.get("/api/v1/nosuch/snapshot"), 404, "snapshot of an unknown namespace")
    expect_error(h.post(NS + "/wal/ack", '{"applied_lsn":1}'), 400, "ack without id", "id")
    expect_error(h.post(NS + "/wal/ack", '{"id":"x","applied_lsn":99999999}'), 400,
                 "ack beyond the last LSN", "beyond")
    expect_error(h.put(NS + "/kv/x?acks=all", '{"value":"%s"}' % b64("x")), 400, "acks=all",
                 "acks")


def retention_gives_410():
    """Writes enough for flushes to let retention delete the first segments, then from=1 is
    410 naming the oldest retained LSN, and a stream from that LSN works."""
    h = server.http()
    value = b64(os.urandom(3000))
    n = 0

    def first_retained():
        nonlocal n
        for _ in range(100):
            expect_write(h.put(NS + "/kv/fill%d" % (n % 500), '{"value":"%s"}' % value), "fill")
            n += 1
        return expect_json(h.get(NS + "/stats"), 200, "stats")["walFirstLsn"] > 1

    wait_for("retention to remove the first segments", first_retained, 60, 0)
    r = h.get(NS + "/wal/stream?from=1")
    doc = expect_json(r, 410, "stream from a removed LSN")
    first = doc.get("firstLsn")
    check(isinstance(first, int) and first > 1 and "snapshot" in doc.get("error", ""),
          "410 names the oldest retained LSN and the snapshot: %r" % doc)
    s = Stream(first)
    try:
        s.wait_lsn(first + 10)
        _, hbs, order = s.parsed()
        check(order[0] == first and hbs[0][2] == first, "stream from the oldest retained LSN")
    finally:
        s.close()


def snapshot_download():
    h = server.http()
    # Flushes happened (retention case): the snapshot's checkpoint is the store's.
    cp = expect_json(h.get(NS + "/checkpoint"), 200, "checkpoint")
    path = os.path.join(server.dir, "snapshot.mdb")
    hdr_path = path + ".hdr"
    p = subprocess.run(["curl", "-s", "-o", path, "-D", hdr_path, "-w", "%{http_code}",
                        "http://127.0.0.1:%d%s/snapshot" % (server.ports["http"], NS)],
                       capture_output=True, timeout=60)
    check(p.stdout == b"200", "snapshot status %r" % p.stdout)
    with open(hdr_path) as f:
        hdr = f.read().lower()
    m = re.search(r"x-unison-snapshot-lsn: (\d+)", hdr)
    check(m is not None, "x-unison-snapshot-lsn header: %s" % hdr)
    snap_lsn = int(m.group(1))
    check(snap_lsn >= cp["flushedLsn"] > 0, "snapshot LSN %d, checkpoint before %r" %
          (snap_lsn, cp))
    check("x-unison-snapshot-open-txns: 0" in hdr, "no open transactions: %s" % hdr)
    # The file is an LMDB environment: its meta holds the same checkpoint, kv holds the data.
    d = subprocess.run(["mdb_dump", "-n", "-s", "meta", path], capture_output=True, timeout=60)
    check(d.returncode == 0, "mdb_dump meta: %s" % d.stderr.decode())
    lines = [l.strip() for l in d.stdout.decode().splitlines()]
    key = b"checkpoint".hex()
    check(key in lines, "meta has a checkpoint: %r" % lines)
    value = bytes.fromhex(lines[lines.index(key) + 1])
    check(value[0] == 1 and struct.unpack_from("<Q", value, 1)[0] == snap_lsn,
          "the copy's checkpoint is the header's LSN %d: %s" % (snap_lsn, value.hex()))
    # Which namespace of the name the copy is: the header says what the copy's meta holds.
    ikey = b"incarnation".hex()
    check(ikey in lines, "meta has an incarnation: %r" % lines)
    inc = struct.unpack_from("<Q", bytes.fromhex(lines[lines.index(ikey) + 1]))[0]
    check("x-unison-ns-incarnation: %d\n" % inc in hdr,
          "x-unison-ns-incarnation %d header: %s" % (inc, hdr))
    d = subprocess.run(["mdb_dump", "-n", "-s", "kv", path], capture_output=True, timeout=60)
    check(d.returncode == 0, "mdb_dump kv: %s" % d.stderr.decode())
    dump = d.stdout.decode()
    for k in (b"k1", b"b7", b"fill0"):
        check(" " + k.hex() + "\n" in dump, "key %r in the snapshot" % k)
    check(" " + b"k3".hex() + "\n" not in dump, "the deleted key k3 is not in the snapshot")


def acks_and_isr():
    h = server.http()
    last = last_lsn()
    # No follower yet: acks=isr times out with 503 naming how many acknowledged.
    t0 = time.monotonic()
    r = h.put(NS + "/kv/isr0?acks=isr", '{"value":"%s"}' % b64("a"))
    took = time.monotonic() - t0
    doc = expect_json(r, 503, "acks=isr with no follower")
    check(doc.get("acknowledged") == 0 and doc.get("required") == 1 and
          "0 of the 1 required" in doc.get("error", ""), "503 names the count: %r" % doc)
    check("retry-after" in r.headers, "503 has Retry-After: %r" % r.headers)
    check(1.3 < took < 5, "timed out after the configured 1.5 s: %.2f" % took)
    isr0 = doc["lsn"]
    # The write itself is committed.
    expect(h.get(NS + "/kv/isr0"), 200, "the acks=isr write is committed")

    # A follower acks: listed with address and lag; in the ISR once caught up.
    expect_json(h.post(NS + "/wal/ack", '{"id":"r1","applied_lsn":%d,"subtree_min_lsn":%d,'
                       '"address":"127.0.0.1:9999"}' % (isr0 - 1, isr0 - 3)), 200, "ack")
    st = expect_json(h.get("/status/replicas"), 200, "status/replicas")
    ns = [n for n in st["namespaces"] if n["namespace"] == "default"][0]
    f = ns["followers"][0]
    check(f["id"] == "r1" and f["address"] == "127.0.0.1:9999" and f["appliedLsn"] == isr0 - 1
          and f["lagRecords"] == 1 and f["subtreeMinLsn"] == isr0 - 3,
          "status/replicas follower: %r" % f)
    check(st["minIsr"] == 1, "minIsr: %r" % st)

    # acks=isr waits for the ack of its LSN, then answers 200.
    result = {}
    # Its own curl files: requests run from two threads at once.
    bg_dir = os.path.join(server.dir, "bg")
    os.makedirs(bg_dir, exist_ok=True)
    bg = Http("http://127.0.0.1:%d" % server.ports["http"], bg_dir)

    def write():
        result["r"] = bg.put(NS + "/kv/isr1?acks=isr", '{"value":"%s"}' % b64("b"))
        result["t"] = time.monotonic()

    t = threading.Thread(target=write)
    t.start()
    wait_for("the write to be applied", lambda: last_lsn() > isr0, 5)
    time.sleep(0.3)
    check(t.is_alive(), "acks=isr answered before any follower acknowledged its LSN")
    lsn = last_lsn()
    expect_json(h.post(NS + "/wal/ack", '{"id":"r1","applied_lsn":%d}' % lsn), 200, "ack")
    t.join(10)
    doc = expect_write(result["r"], "acks=isr after the ack")
    check(doc["lsn"] == lsn, "the acked write's LSN: %r" % doc)
    st = expect_json(h.get("/status/replicas"), 200, "status/replicas")
    ns = [n for n in st["namespaces"] if n["namespace"] == "default"][0]
    f = ns["followers"][0]
    check(f["inIsr"] is True and f["lagRecords"] == 0 and ns["isrCount"] == 1,
          "caught-up follower in the ISR: %r" % ns)
    # Its retention floor follows the ISR (refreshed every second).
    wait_for("the retention floor", lambda: [
        n for n in expect_json(h.get("/status/replicas"), 200, "status")["namespaces"]
        if n["namespace"] == "default"][0]["retainFloorLsn"] == lsn + 1, 5)
    m = h.get("/metrics").body.decode()
    for line in ("unison_replication_followers 1", "unison_replication_isr_waits_total"
                 "{result=\"ok\"} 1", "unison_replication_isr_waits_total{result=\"timeout\"} 1"):
        check(line in m, "metrics line %s" % line)
    check(re.search(r"unison_stream_bytes_total [1-9]", m), "stream bytes counted")

    # The follower stops acking: it leaves the ISR, is forgotten, and acks=isr times out again.
    wait_for("the silent follower to be forgotten",
             lambda: not [n for n in expect_json(h.get("/status/replicas"), 200, "st")
                          ["namespaces"] if n["namespace"] == "default"][0]["followers"], 10)
    expect_json(h.put(NS + "/kv/isr2?acks=isr", '{"value":"%s"}' % b64("c")), 503,
                "acks=isr after the follower went away")


def namespace_delete_cuts_streams():
    """Deleting a namespace cuts its streams (not a clean end: the follower must not take it
    for a complete body), other namespaces' streams go on, and a namespace created again under
    the same name streams from LSN 1."""
    h = server.http()
    expect_json(h.put("/api/v1/gone"), 200, "create namespace gone")
    server.wait_namespace("gone")
    for i in range(3):
        expect_write(h.put("/api/v1/gone/kv/k%d" % i, '{"value":"%s"}' % b64("g")), "PUT")
    a, b = Stream(1, ns="gone", name="gone"), Stream(1, http2=True, ns="gone", name="gone")
    other = Stream(last_lsn() + 1, name="other")
    try:
        for s in (a, b):
            s.wait_lsn(3)
        wait_for("the other stream's heartbeat", lambda: other.parsed()[1], 10)
        expect_json(h.delete("/api/v1/gone"), 200, "delete namespace gone")
        for s in (a, b):
            try:
                s.proc.wait(10)
            except subprocess.TimeoutExpired:
                raise Failure("a stream of a deleted namespace is still open", "replication")
            check(s.proc.returncode != 0, "a cut stream must not end cleanly (curl %d)" %
                  s.proc.returncode, "replication")
        check(other.proc.poll() is None, "the default namespace's stream went on")
        lsn = expect_write(server.http().put(NS + "/kv/after-delete", '{"value":"%s"}' % b64("x")),
                           "PUT")["lsn"]
        other.wait_lsn(lsn, 5)
        wait_for("no stream left of gone", lambda: re.search(
            r"unison_stream_subscribers 1\n", h.get("/metrics").body.decode()), 10)
    finally:
        for s in (a, b, other):
            s.close()
    expect_json(h.put("/api/v1/gone"), 200, "create gone again")
    server.wait_namespace("gone")
    lsn = expect_write(h.put("/api/v1/gone/kv/new", '{"value":"%s"}' % b64("n")), "PUT")["lsn"]
    check(lsn == 1, "a new namespace starts at LSN 1: %d" % lsn)
    s = Stream(1, ns="gone", name="again")
    try:
        s.wait_lsn(1)
        check(s.parsed()[2] == [1], "the new namespace's stream holds its one record")
    finally:
        s.close()


def graceful_stop_with_streams():
    """SIGTERM with streams open: they end and the writer exits 0 promptly."""
    a, b = Stream(last_lsn() + 1), Stream(last_lsn() + 1, http2=True)
    try:
        wait_for("both streams", lambda: a.parsed()[1] and b.parsed()[1], 10)
        t0 = time.monotonic()
        server.stop_clean("SIGTERM with streams open")
        check(time.monotonic() - t0 < 10, "stop took %.1f s" % (time.monotonic() - t0))
        for s in (a, b):
            s.proc.wait(10)
            check(s.proc.returncode == 0, "a stream client saw a clean end (curl %d)" %
                  s.proc.returncode)
    finally:
        a.close()
        b.close()
    server.start()


suite.run([start, write_every_kind, stream_equals_disk, live_tail_and_heartbeats,
           from_beyond_last_waits, bad_requests, retention_gives_410, snapshot_download,
           acks_and_isr, namespace_delete_cuts_streams, graceful_stop_with_streams])
