#!/usr/bin/env python3
"""End to end, relayers: a chain writer -> r1 -> r2 with writes of every kind reads back
identically on r2, and r2's WAL holds the writer's record bytes at every LSN; r1 killed with
SIGKILL and restarted 20 times under load loses and duplicates nothing; relayers refuse writes
(403 over HTTP, -READONLY over redis-cli); a relayer started after its upstream dropped old
segments bootstraps from the snapshot, with a transaction open across the snapshot point; a dead
(SIGSTOPped) upstream is detected by missing heartbeats and the relayer fails over.

usage: test_relayer.py path/to/unison-writer path/to/unison-relayer"""

import http.client
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Failure, Relayer, Suite, b64, check, expect, expect_error, expect_json,  # noqa
                     expect_write, free_port, redis_cli, resp_command, resp_raw, unb64,
                     wait_for)
from relayer_lib import check_same, check_wal_equal, wal_records  # noqa: E402

if len(sys.argv) < 3:
    sys.exit(__doc__)
RELAYER = os.path.abspath(sys.argv[2])
suite = Suite("relayer")
suite.only = sys.argv[3:]
NS = "/api/v1/default"
rng = random.Random(11)

writer = suite.writer("w", args=["--set", "storage.memtable_bytes=1MiB",
                                 "--set", "storage.segment_size=2MiB"])
relayers = []


def relayer(name, upstreams, args=()):
    r = Relayer(RELAYER, suite.workdir, name, upstreams, args=args)
    relayers.append(r)
    suite.writers.append(r)  # killed by the runner if a case fails
    return r


def writer_dir_refused():
    """A writer's data directory (its cluster-id beside the namespaces) is refused at start: the
    relayer would append its upstream's records to the writer's WALs."""
    d = os.path.join(suite.workdir, "a-writers-dir")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "cluster-id"), "w") as f:
        f.write("unison\n")
    p = subprocess.run([RELAYER, "-u", writer.http().base, "-d", d, "--http", "127.0.0.1:0",
                        "--resp", "off"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       stdin=subprocess.DEVNULL, timeout=30)
    check(p.returncode == 1 and b"is a writer's (it holds cluster-id)" in p.stdout and
          not os.path.exists(os.path.join(d, "namespaces")),
          "a relayer on a writer's data directory: exit %d %r" % (p.returncode, p.stdout[-300:]),
          "relayer")


def last_lsn(node, ns="default"):
    return expect_json(node.http().get("/api/v1/%s/checkpoint" % ns), 200, "checkpoint")["lsn"]


# --- writes of every kind ---------------------------------------------------------------------------

lob_keys = []


def write_every_kind(node, tag):
    h = node.http()
    for i in range(60):
        expect_write(h.put(NS + "/kv/%s:k%d" % (tag, i), '{"value":"%s"}' %
                           b64(os.urandom(rng.randrange(1, 1500)))), "PUT")
    for b in range(4):
        body = '{"operation":"put","items":[%s]}' % ",".join(
            '{"key":"%s:b%d:%d","value":"%s"}' % (tag, b, i, b64(os.urandom(300)))
            for i in range(50))
        expect_write(h.post(NS + "/kv/batch", body), "batch put")
    expect_write(h.post(NS + "/kv/batch", '{"operation":"delete","keys":[%s]}' % ",".join(
        '"%s:b0:%d"' % (tag, i) for i in range(10))), "batch delete")
    for i in range(0, 60, 7):
        expect_write(h.delete(NS + "/kv/%s:k%d" % (tag, i)), "DELETE")
    for i in range(20):
        expect_write(h.put(NS + "/row/%s:row%d" % (tag, i), '{"columns":{%s}}' % ",".join(
            '"c%d":"%s"' % (j, b64(os.urandom(40))) for j in range(4))), "PUT row")
    for i in range(0, 20, 3):
        expect_write(h.delete(NS + "/row/%s:row%d/columns?columns=c1,c2" % (tag, i)),
                     "DELETE columns")
    expect_write(h.delete(NS + "/row/%s:row19" % tag), "DELETE row")
    # A LOB transaction of 2.5 MiB in 1 MiB chunks.
    lob = os.urandom(2 * 1024 * 1024 + 4321)
    txn = expect_write(h.post(NS + "/tx/begin", '{"operation":"put","entryType":"lob"}'),
                       "begin LOB")["txnId"]
    for off in range(0, len(lob), 1 << 20):
        expect_write(h.post(NS + "/tx/%s/lob?key=%s.bin&offset=%d" % (txn, tag, off),
                            lob[off:off + (1 << 20)],
                            headers=["Content-Type: application/octet-stream"]), "LOB chunk")
    expect_write(h.post(NS + "/tx/%s/commit" % txn), "commit LOB")
    lob_keys.append("%s.bin" % tag)
    # A committed KV transaction and an aborted one.
    txn = expect_write(h.post(NS + "/tx/begin", '{"operation":"put","entryType":"kv"}'),
                       "begin")["txnId"]
    expect_write(h.post(NS + "/tx/%s/kv" % txn, '{"key":"%s:txn","value":"%s"}' %
                        (tag, b64("committed"))), "append")
    expect_write(h.post(NS + "/tx/%s/commit" % txn), "commit")
    txn = expect_write(h.post(NS + "/tx/begin", '{"operation":"put","entryType":"kv"}'),
                       "begin")["txnId"]
    expect_write(h.post(NS + "/tx/%s/kv" % txn, '{"key":"%s:aborted","value":"%s"}' %
                        (tag, b64("never"))), "append")
    expect_write(h.post(NS + "/tx/%s/abort" % txn), "abort")
    # Over RESP.
    data = b"".join(resp_command("SET", "%s:resp:%d" % (tag, i), "r%d" % i) for i in range(300))
    rc, out, err = redis_cli(node.ports["resp"], "--pipe", stdin=data, raw=False)
    check(rc == 0 and b"errors: 0" in out, "redis-cli --pipe: %r %r" % (out, err), "resp")


# --- cases ------------------------------------------------------------------------------------------


def chain():
    writer.start()
    fast = ["--set", "relayer.discover_interval_ms=200"]
    r1 = relayer("r1", [writer.http().base], args=fast).start()
    r2 = relayer("r2", [r1.url()], args=fast).start()
    write_every_kind(writer, "a")
    last = last_lsn(writer)
    r1.wait_lsn(last)
    r2.wait_lsn(last)
    # Writes after the followers are streaming arrive through the chain too.
    write_every_kind(writer, "b")
    last = last_lsn(writer)
    r2.wait_lsn(last)
    check_same(writer, r2, lob_keys, "writer vs r2")
    # A LOB byte range on r2 is the writer's: the same 206, Content-Range, ETag (the commit LSN is
    # the same on every hop) and bytes.
    spec = "%d-%d" % ((1 << 20) - 5, (2 << 20) + 5)
    for http2 in (False, True):
        got = [(r.status, r.headers.get("content-range"), r.headers.get("etag"), r.body)
               for r in (n.http(http2).get(NS + "/lob?key=a.bin", curl_args=["-r", spec])
                         for n in (writer, r2))]
        check(got[0][0] == 206 and len(got[0][3]) == (1 << 20) + 11 and got[0] == got[1],
              "Range bytes=%s of a.bin: the writer answers %r, r2 %r" %
              (spec, got[0][:3], got[1][:3]), "relayer")
    h = r2.http()
    check(expect(h.get(NS + "/kv/a:aborted"), 404, "aborted key on r2").status == 404, "")
    doc = expect_json(h.get(NS + "/kv/a:txn"), 200, "committed transaction key on r2")
    check(unb64(doc["value"]) == b"committed", "transaction value on r2: %r" % doc)
    n = check_wal_equal(writer, r2, last)
    print("    r2 matches the writer: %d LSNs compared byte for byte" % n)
    # /metrics agrees with /status/upstream, in Prometheus text with HELP and TYPE.
    text = r2.http().get("/metrics").body.decode()
    samples = {}
    for line in text.splitlines():
        if line.startswith("unison_relayer_") and "{" in line:
            name_labels, value = line.rsplit(" ", 1)
            samples[name_labels] = float(value)
    st = r2.status()
    for metric, field in (("applied_lsn", "applied_lsn"), ("lag_records", "lag_records"),
                          ("records_total", "records"), ("bootstraps_total", "bootstraps")):
        key = 'unison_relayer_%s{namespace="default"}' % metric
        check(key in samples, "/metrics lacks %s" % key, "relayer")
        check("# TYPE unison_relayer_%s " % metric in text, "no TYPE line for %s" % metric)
        check(samples[key] == st[field], "%s is %r in /metrics, %r in /status/upstream" %
              (metric, samples[key], st[field]), "relayer")
    check(samples['unison_relayer_state{namespace="default"}'] == 2, "state metric is not "
          "streaming (2): %r" % samples, "relayer")


def readonly():
    r2 = relayers[1]
    h = r2.http()
    doc = expect_error(h.put(NS + "/kv/x", '{"value":"eA=="}'), 403, "PUT on a relayer",
                       "read-only")
    check(doc.get("upstream") == relayers[0].url(), "403 names %r, not the upstream %s" %
          (doc.get("upstream"), relayers[0].url()), "relayer")
    expect_error(h.post(NS + "/kv/batch", '{"operation":"put","items":[]}'), 403, "batch")
    expect_error(h.post(NS + "/tx/begin", '{"operation":"put","entryType":"kv"}'), 403, "begin")
    expect_error(h.delete(NS + "/row/r"), 403, "DELETE row")
    c = http.client.HTTPConnection("127.0.0.1", r2.ports["http"], timeout=10)
    c.request("DELETE", NS + "/kv/x")
    resp = c.getresponse()
    resp.read()
    c.close()
    check(resp.status == 403 and resp.reason == "Forbidden",
          "HTTP/1.1 status line of a relayer's 403: %d %r" % (resp.status, resp.reason),
          "relayer")
    for args in (("SET", "x", "y"), ("DEL", "x"), ("HSET", "h", "f", "v"), ("MSET", "a", "1")):
        rc, out, err = redis_cli(r2.ports["resp"], *args)
        text = out.decode(errors="replace")
        check(text.startswith("READONLY") and relayers[0].url() in text,
              "%s on a relayer: %r (rc %d)" % (args[0], text, rc), "relayer")
    rc, out, _ = redis_cli(r2.ports["resp"], "GET", "a:txn")
    check(out.strip() == b"committed", "GET over RESP on r2: %r" % out, "relayer")
    # Clients that route writes by role see a replica, as Redis's replicas say.
    rc, out, _ = redis_cli(r2.ports["resp"], "INFO", "replication")
    check(b"role:slave" in out and b"unisondb_role:relayer" in out,
          "INFO replication on a relayer: %r" % out, "relayer")


def subtree():
    """The writer's /status/replicas sees through r1 to r2: r1 reports the lowest applied LSN
    of its subtree, which a stopped r2 holds back."""
    r1, r2 = relayers[0], relayers[1]
    r2_at = r2.status()["applied_lsn"]

    def acked_by(node, follower, lsn):
        doc = expect_json(node.http().get("/status/replicas"), 200, "/status/replicas")
        for ns in doc["namespaces"]:
            for f in ns["followers"] if ns["namespace"] == "default" else []:
                if f["id"] == follower and f["appliedLsn"] == lsn:
                    return f
        return None
    # r1 has r2's ack of where it is (acks go out about once a second).
    wait_for("r2's ack of LSN %d on r1" % r2_at, lambda: acked_by(r1, "r2", r2_at), 10, 0.1)
    r2.signal(signal.SIGSTOP)
    try:
        for i in range(10):
            expect_write(writer.http().put(NS + "/kv/subtree:%d" % i, '{"value":"eA=="}'), "PUT")
        last = last_lsn(writer)
        r1.wait_lsn(last)
        f = wait_for("r1's ack of LSN %d on the writer" % last,
                     lambda: acked_by(writer, "r1", last), 10, 0.1)
        check(f.get("address") == r1.url(), "r1 reports address %r, it serves at %s" %
              (f.get("address"), r1.url()), "relayer")
        check(f["subtreeMinLsn"] == r2_at, "r1's subtree minimum is %r, r2 (stopped) is at %d" %
              (f["subtreeMinLsn"], r2_at), "relayer")
    finally:
        r2.signal(signal.SIGCONT)
    r2.wait_lsn(last)


class Loader(threading.Thread):
    """SETs to the writer over one RESP connection until stopped."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port, self.stop, self.n, self.error = port, False, 0, None

    def run(self):
        try:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
            buf = b""
            while not self.stop:
                s.sendall(b"".join(resp_command("SET", "load:%d" % (self.n + i), "v%d" % i)
                                   for i in range(20)))
                got = 0
                while got < 20:
                    while b"\r\n" not in buf:
                        buf += s.recv(65536)
                    line, buf = buf.split(b"\r\n", 1)
                    check(line == b"+OK", "load SET: %r" % line)
                    got += 1
                self.n += 20
                time.sleep(0.002)
            s.close()
        except Exception as e:  # reported by the case
            self.error = e


def kill_restart():
    r1, r2 = relayers[0], relayers[1]
    load = Loader(writer.ports["resp"])
    load.start()
    rounds = 20
    for i in range(rounds):
        time.sleep(rng.uniform(0.05, 0.3))
        r1.kill()
        r1.start()
        check(load.error is None, "load failed: %s" % load.error)
    load.stop = True
    load.join(30)
    check(load.error is None and load.n > 0, "load: %s after %d writes" % (load.error, load.n))
    last = last_lsn(writer)
    r1.wait_lsn(last)
    r2.wait_lsn(last)
    check_same(writer, r2, lob_keys, "after %d kills of r1" % rounds)
    n = check_wal_equal(writer, r1, last)
    check_wal_equal(writer, r2, last)
    st = r2.status()
    print("    %d writes during %d SIGKILLs of r1; %d LSNs equal; r2 reconnected %d times" %
          (load.n, rounds, n, st["reconnects"]))


def bootstrap_after_retention():
    # A writer of its own that keeps one sealed segment of 256 KiB.
    w2 = suite.writer("w2", args=["--set", "storage.memtable_bytes=1MiB",
                                  "--set", "storage.segment_size=256KiB",
                                  "--set", "storage.retention_max_segments=1",
                                  "--set", "replication.retain_for_isr=0"])
    w2.start()
    h = w2.http()
    for i in range(50):
        expect_write(h.put(NS + "/kv/early:%d" % i, '{"value":"%s"}' % b64("e%d" % i)), "PUT")
    # A transaction that stays open across the snapshot point and commits after it.
    txn = expect_write(h.post(NS + "/tx/begin", '{"operation":"put","entryType":"kv"}'),
                       "begin")["txnId"]
    expect_write(h.post(NS + "/tx/%s/kv" % txn, '{"key":"across","value":"%s"}' %
                        b64("part one")), "append")

    def fill(prefix, n):
        for b in range(n):
            body = '{"operation":"put","items":[%s]}' % ",".join(
                '{"key":"%s:%d:%d","value":"%s"}' % (prefix, b, i, b64(os.urandom(900)))
                for i in range(100))
            expect_write(h.post(NS + "/kv/batch", body), "batch")

    fill("fill", 40)  # ~4 MB: several flushes and segments
    r3 = relayer("r3", [w2.http().base]).start()
    wait_for("r3 streaming", lambda: (r3.status() or {}).get("state") == "streaming", 60)
    expect_write(h.post(NS + "/tx/%s/kv" % txn, '{"key":"across2","value":"%s"}' %
                        b64("part two")), "append after the snapshot")
    expect_write(h.post(NS + "/tx/%s/commit" % txn), "commit after the snapshot")
    last = last_lsn(w2)
    r3.wait_lsn(last)
    check_same(w2, r3, [], "bootstrapped r3")
    doc = expect_json(r3.http().get(NS + "/kv/across"), 200, "transaction across the snapshot")
    check(unb64(doc["value"]) == b"part one", "across: %r" % doc)
    check(r3.status()["bootstraps"] >= 1, "r3 did not bootstrap: %r" % r3.status())
    # r4 follows r3 (two hops from the writer).
    r4 = relayer("r4", [r3.url()]).start()
    r4.wait_lsn(last)
    # r3 stopped, left behind the writer's retention, restarted: 410, bootstrap again, converge;
    # r4, now behind r3's new WAL start, bootstraps from r3 in turn.
    r3.stop_clean("SIGTERM of r3")
    fill("more", 40)
    r3.start()
    # Small writes after the fill: the fill may end exactly where w2 sealed a memtable, and r3's
    # snapshot would then cover the last LSN and leave r4 no record to compare in its WAL.
    for i in range(3):
        expect_write(h.put(NS + "/kv/tail:%d" % i, '{"value":"%s"}' % b64("t%d" % i)), "PUT")
    last = last_lsn(w2)
    r3.wait_lsn(last, timeout=90)
    check(r3.status()["bootstraps"] >= 1, "r3 resumed without a bootstrap although the "
          "writer's WAL moved past it: %r" % r3.status())
    check_same(w2, r3, [], "r3 after falling behind retention")
    r4.wait_lsn(last, timeout=90)
    check_same(w2, r4, [], "r4 behind a re-bootstrapped r3")
    check_wal_equal(w2, r4, last)
    st4 = r4.status()
    print("    r4: %d bootstraps, %d reconnects" % (st4["bootstraps"], st4["reconnects"]))
    check(st4["bootstraps"] >= 2, "r4 did not bootstrap again behind r3: %r" % st4)
    r4.stop_clean("SIGTERM of r4")
    r3.stop_clean("SIGTERM of r3")
    w2.stop_clean("SIGTERM of w2")


def bootstrap_reads_answered():
    """While a relayer downloads a multi-MB snapshot (written to disk off the event loop), the
    namespaces it already serves keep answering reads promptly."""
    w3 = suite.writer("w3", args=["--set", "storage.memtable_bytes=4MiB"])
    w3.start()
    h = w3.http()
    expect_write(h.put(NS + "/kv/probe", '{"value":"%s"}' % b64("here")), "PUT probe")
    expect_json(h.put("/api/v1/big"), 200, "create namespace big")
    for b in range(240):  # ~24 MB of incompressible values
        body = '{"operation":"put","items":[%s]}' % ",".join(
            '{"key":"big:%d:%d","value":"%s"}' % (b, i, b64(os.urandom(1000))) for i in range(100))
        expect_write(h.post("/api/v1/big/kv/batch", body), "batch into big")
    last_big = last_lsn(w3, "big")
    # The smallest apply queue: the download pauses and resumes many times (backpressure).
    rb = relayer("rb", [h.base], args=["--set", "relayer.apply_queue_bytes=64KiB"]).start()
    hr = rb.http()
    wait_for("probe on rb", lambda: hr.get(NS + "/kv/probe").status == 200, 30, 0.01)
    lat, stop = [], threading.Event()

    def probe():  # its own keep-alive connection (the harness's client is not thread-safe)
        c = http.client.HTTPConnection("127.0.0.1", rb.ports["http"], timeout=10)
        try:
            while not stop.is_set():
                t0 = time.monotonic()
                c.request("GET", NS + "/kv/probe")
                r = c.getresponse()
                r.read()
                lat.append((t0, time.monotonic() - t0, r.status))
        finally:
            c.close()

    th = threading.Thread(target=probe)
    th.start()
    boot = []
    try:
        t_end = time.monotonic() + 60
        while time.monotonic() < t_end:
            st = rb.status("big") or {}
            if st.get("state") == "bootstrapping" and not boot:
                boot.append(time.monotonic())
            if st.get("state") == "streaming":
                break
            time.sleep(0.002)
        boot.append(time.monotonic())
    finally:
        stop.set()
        th.join()
    during = [x for x in lat if len(boot) == 2 and boot[0] <= x[0] <= boot[1]]
    worst = max((x[1] for x in lat), default=0.0)
    check(all(x[2] == 200 for x in lat), "a read on rb failed: %r" %
          [x for x in lat if x[2] != 200][:3])
    rb.wait_lsn(last_big, ns="big", timeout=60)
    print("    %d reads answered while big bootstrapped (%.0f ms); slowest %.1f ms" %
          (len(during), (boot[-1] - boot[0]) * 1000 if len(boot) == 2 else 0, worst * 1000))
    check(worst < 1.0, "a read on the relayer took %.0f ms during the bootstrap" % (worst * 1000))
    doc = expect_json(hr.get("/api/v1/big/kv/big:239:99"), 200, "last key of big on rb")
    check(len(unb64(doc["value"])) == 1000, "big:239:99 on rb: %r" % doc)
    rb.stop_clean("SIGTERM of rb")
    w3.stop_clean("SIGTERM of w3")


def replace_r1():
    """r1 thrown away and recreated empty (same address) while the writer is unreachable: r2
    below it hears "namespace not found" from r1 and keeps its copy (a relayer that has not
    caught up is not a deleted namespace); once the writer is back, r1 bootstraps and r2
    continues."""
    r1, r2 = relayers[0], relayers[1]
    before = r2.status()["bootstraps"]
    r1.stop_clean("SIGTERM of r1")
    shutil.rmtree(r1.data_dir)
    writer.signal(signal.SIGSTOP)
    try:
        r1.start()
        wait_for("r2 to hear 'namespace not found' from the new r1", lambda: "not found" in (
            r2.status()["last_error"] or ""), 20, 0.1)
        time.sleep(0.5)  # r2 has acted on the 404
        check(r2.http().get(NS + "/kv/a:txn").status == 200, "r2 dropped its copy", "relayer")
    finally:
        writer.signal(signal.SIGCONT)
    expect_write(writer.http().put(NS + "/kv/after-replace", '{"value":"eA=="}'), "PUT")
    last = last_lsn(writer)
    r1.wait_lsn(last, timeout=60)
    r2.wait_lsn(last, timeout=60)
    st = r2.status()
    check(st["bootstraps"] == before, "r2 bootstrapped again (%d -> %d) because r1 was "
          "recreated: %r" % (before, st["bootstraps"], st), "relayer")
    check_same(writer, r2, lob_keys, "r2 after r1 was recreated")


def discovery():
    """A namespace created on the writer after the relayers started is found and followed, two
    hops down."""
    r2 = relayers[1]
    h = writer.http()
    expect_json(h.put("/api/v1/second"), 200, "create namespace second")
    for i in range(30):
        expect_write(h.put("/api/v1/second/kv/s%d" % i, '{"value":"%s"}' % b64("second %d" % i)),
                     "PUT in second")
    last = last_lsn(writer, "second")
    r2.wait_lsn(last, ns="second", timeout=30)
    doc = expect_json(r2.http().get("/api/v1/second/kv/s29"), 200, "GET second/s29 on r2")
    check(unb64(doc["value"]) == b"second 29", "second/s29 on r2: %r" % doc)
    names = expect_json(r2.http().get("/api/v1"), 200, "namespaces on r2")["namespaces"]
    check("second" in names and "default" in names, "r2 lists %r" % names)
    # Deleted on the writer and created again under the same name (its LSNs start at 1 again):
    # the relayers drop their copies and bootstrap the new namespace, nothing of the old one
    # survives on top of it.
    expect_json(h.delete("/api/v1/second"), 200, "delete namespace second")
    wait_for("second gone from r2", lambda: r2.http().get("/api/v1/second/kv/s29").status == 404,
             30, 0.1)
    # A namespace deleted upstream leaves nothing to follow: the relayers stay ready.
    for r in relayers[:2]:
        resp = r.http().get("/readyz")
        check(resp.status == 200, "%s /readyz after the delete: %d %r" % (r.name, resp.status,
                                                                          resp.body[:200]),
              "relayer")
    expect_json(h.put("/api/v1/second"), 200, "create namespace second again")
    for i in range(3):
        expect_write(h.put("/api/v1/second/kv/s%d" % i, '{"value":"%s"}' % b64("new %d" % i)),
                     "PUT in the new second")
    last = last_lsn(writer, "second")
    check(last < 30, "the new namespace starts its LSNs again (%d)" % last)
    wait_for("the new second on r2", lambda: r2.http().get("/api/v1/second/kv/s2").status == 200,
             30, 0.1)
    r2.wait_lsn(last, ns="second", timeout=30)
    doc = expect_json(r2.http().get("/api/v1/second/kv/s2"), 200, "GET new second/s2 on r2")
    check(unb64(doc["value"]) == b"new 2", "second/s2 on r2 after the recreation: %r" % doc)
    check(r2.http().get("/api/v1/second/kv/s29").status == 404,
          "an old key of the deleted namespace is still on r2", "relayer")


class LocalServer(threading.Thread):
    """An HTTP server of the test's own on a free loopback port, serving from its thread until
    stop(): subclasses build their handler class and call serve() with it."""

    def __init__(self):
        super().__init__(daemon=True)

    def serve(self, handler):
        import http.server
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]

    def run(self):
        self.server.serve_forever()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class NotFoundUpstream(LocalServer):
    """An upstream that answers every request with a plain 404 "namespace not found", as a writer
    does while it has not applied the namespace's create yet (a raft follower behind, or one
    catching up): it proves nothing about a deletion."""

    def __init__(self, stream_incarnation=None, deleted_at=None, stream_gone=False,
                 snapshot_incarnation=None):
        super().__init__()
        import http.server
        self.requests = 0
        self.snapshots = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests += 1
                if snapshot_incarnation is not None and "/snapshot" in self.path:
                    # A snapshot of that incarnation (0: without the header, an upstream of an
                    # earlier version; "0": an explicit 0, a namespace created before
                    # incarnations) whose bytes are not a snapshot: installing it fails.
                    outer.snapshots += 1
                    body = b"not a snapshot"
                    self.send_response(200)
                    if snapshot_incarnation:
                        self.send_header("x-unison-ns-incarnation", str(snapshot_incarnation))
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                if stream_incarnation is not None and "/wal/stream" in self.path:
                    # A writer behind: it still has an earlier namespace of the name.
                    self.send_response(200)
                    self.send_header("x-unison-ns-incarnation", str(stream_incarnation))
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                if stream_gone and "/wal/stream" in self.path:
                    # Its WAL no longer has the relayer's LSN: the relayer must bootstrap.
                    body = b'{"error":"gone","firstLsn":1000000}'
                    self.send_response(410)
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                body = b'{"error":"namespace not found: default"}'
                self.send_response(404)
                if deleted_at is not None:
                    # A writer that applied the delete of an earlier namespace of the name.
                    self.send_header("x-unison-ns-deleted", "1")
                    self.send_header("x-unison-ns-deleted-at", str(deleted_at))
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET

            def log_message(self, *args):
                pass

        self.serve(Handler)


def keeps_copy_while_stopped(r, name, before_key, after_key, why, what, cond, timeout,
                             settle_s=0, while_stopped=None, same_bootstraps=True):
    """With the writer stopped (SIGSTOP), r turns to its other upstreams until cond(); it must
    still serve before_key and not call the namespace deleted ("name dropped its copy <why>").
    settle_s: a wait after cond() for r to act on what it heard. Then the writer resumes, takes
    after_key and r catches up: without a bootstrap of its own unless same_bootstraps is False."""
    before = r.status()["bootstraps"]
    writer.signal(signal.SIGSTOP)
    try:
        wait_for(what, cond, timeout, 0.1)
        time.sleep(settle_s)
        check(r.http().get(NS + "/kv/" + before_key).status == 200,
              "%s dropped its copy %s" % (name, why), "relayer")
        check(not r.status()["upstream_deleted"], "%s says upstream_deleted" % name, "relayer")
        if while_stopped is not None:
            while_stopped()
    finally:
        writer.signal(signal.SIGCONT)
    expect_write(writer.http().put(NS + "/kv/" + after_key, '{"value":"eA=="}'), "PUT")
    r.wait_lsn(last_lsn(writer), timeout=60)
    check(r.http().get(NS + "/kv/" + after_key).status == 200,
          "%s lacks %s" % (name, after_key), "relayer")
    if same_bootstraps:
        check(r.status()["bootstraps"] == before, "%s bootstrapped again: %r" % (name, r.status()),
              "relayer")


def plain_404():
    """A relayer whose upstream list has a writer that answers a plain "namespace not found" (not
    applied the create yet) keeps its copy when it fails over to it; only a 404 saying the
    namespace was deleted (x-unison-ns-deleted, tested in discovery) drops it."""
    fake = NotFoundUpstream()
    fake.start()
    expect_write(writer.http().put(NS + "/kv/before-404", '{"value":"eA=="}'), "PUT")
    rp = relayer("rp", [writer.http().base, fake.url]).start()
    try:
        rp.wait_lsn(last_lsn(writer), timeout=60)
        check(rp.http().get(NS + "/kv/before-404").status == 200, "rp has the copy")
        keeps_copy_while_stopped(
            rp, "rp", "before-404", "after-404", "on a plain 404",
            "rp to hear 'namespace not found' from the second upstream",
            lambda: "not found" in (rp.status()["last_error"] or ""), 20,
            settle_s=0.5)
        rp.stop_clean("SIGTERM of rp")
    finally:
        fake.stop()


def writer_behind():
    """A relayer whose upstream list has writers behind it keeps its copy when it fails over to
    them: one streams an earlier incarnation of the namespace (smaller than the copy's), one an
    explicit incarnation 0 (a namespace created before incarnations: earlier than any stamped
    copy, not "not said"), one says the name was deleted at a raft index before the copy's
    create. None is a re-create, and none is the copy's namespace to continue."""
    stale = NotFoundUpstream(stream_incarnation=1)
    unstamped = NotFoundUpstream(stream_incarnation=0)
    old_delete = NotFoundUpstream(deleted_at=1)
    for fake in (stale, unstamped, old_delete):
        fake.start()
    expect_write(writer.http().put(NS + "/kv/before-behind", '{"value":"eA=="}'), "PUT")
    rb = relayer("rbh", [writer.http().base, stale.url, unstamped.url, old_delete.url]).start()
    try:
        rb.wait_lsn(last_lsn(writer), timeout=60)
        check(rb.http().get(NS + "/kv/before-behind").status == 200, "rbh has the copy")

        def refused_the_unstamped_stream():
            with open(rb.log_path, "rb") as f:
                log = f.read()
            check(b"has an earlier namespace default (incarnation 0, this copy's" in log,
                  "rbh took an explicit incarnation 0 for its copy's namespace", "relayer")
        keeps_copy_while_stopped(
            rb, "rbh", "before-behind", "after-behind", "for an upstream behind",
            "rbh to try every upstream behind twice",
            lambda: min(fake.requests for fake in (stale, unstamped, old_delete)) >= 2, 30,
            while_stopped=refused_the_unstamped_stream)
        rb.stop_clean("SIGTERM of rbh")
    finally:
        for fake in (stale, unstamped, old_delete):
            fake.stop()


def deleted_at_snapshot():
    """A relayer that must bootstrap while it keeps its copy (its upstream's WAL moved on: 410)
    and hears on the snapshot download that the namespace was deleted drops its copy, as it does
    on the stream, instead of serving the deleted namespace forever."""
    gone = NotFoundUpstream(deleted_at=10 ** 15, stream_gone=True)
    gone.start()
    expect_write(writer.http().put(NS + "/kv/before-gone", '{"value":"eA=="}'), "PUT")
    rs = relayer("rsd", [writer.http().base, gone.url]).start()
    try:
        rs.wait_lsn(last_lsn(writer), timeout=60)
        check(rs.http().get(NS + "/kv/before-gone").status == 200, "rsd has the copy")
        writer.signal(signal.SIGSTOP)
        try:
            wait_for("rsd to drop its copy on the snapshot's 'deleted' 404",
                     lambda: rs.status()["upstream_deleted"], 30, 0.1)
            check(rs.http().get(NS + "/kv/before-gone").status == 404,
                  "rsd still serves the deleted namespace", "relayer")
        finally:
            writer.signal(signal.SIGCONT)
        rs.stop_clean("SIGTERM of rsd")
    finally:
        gone.stop()


def kept_copy_snapshot():
    """A relayer that bootstraps while it keeps its copy (its upstreams' WALs moved on: 410)
    refuses a snapshot of an earlier namespace of the name (an upstream behind) instead of
    installing it over the copy (one of an explicit incarnation 0 too: created before
    incarnations), and a failed snapshot without an incarnation does not make it forget its
    copy's: a 'deleted' 404 of an earlier namespace after it still keeps the copy."""
    bare = NotFoundUpstream(stream_gone=True, snapshot_incarnation=0)
    old_delete = NotFoundUpstream(deleted_at=1)
    older = NotFoundUpstream(stream_gone=True, snapshot_incarnation=1)
    zero = NotFoundUpstream(stream_gone=True, snapshot_incarnation="0")
    fakes = (bare, old_delete, older, zero)
    for fake in fakes:
        fake.start()
    expect_write(writer.http().put(NS + "/kv/before-kept", '{"value":"eA=="}'), "PUT")
    rk = relayer("rkc", [writer.http().base] + [fake.url for fake in fakes]).start()
    try:
        rk.wait_lsn(last_lsn(writer), timeout=60)
        check(rk.http().get(NS + "/kv/before-kept").status == 200, "rkc has the copy")
        def refused_the_earlier_snapshot():
            with open(rk.log_path, "rb") as f:
                log = f.read()
            check(b"(snapshot incarnation 1, this copy's" in log,
                  "rkc did not refuse the earlier namespace's snapshot", "relayer")
            check(b"(snapshot incarnation 0, this copy's" in log,
                  "rkc did not refuse the snapshot of incarnation 0", "relayer")
        keeps_copy_while_stopped(
            rk, "rkc", "before-kept", "after-kept", "for an upstream behind",
            "rkc to ask every upstream behind for a snapshot twice",
            lambda: bare.snapshots >= 2 and old_delete.requests >= 2 and older.snapshots >= 2
            and zero.snapshots >= 2,
            60, while_stopped=refused_the_earlier_snapshot, same_bootstraps=False)
        rk.stop_clean("SIGTERM of rkc")
    finally:
        for fake in fakes:
            fake.stop()


def idle_copy_failures():
    """A bootstrap that failed to install (here a snapshot that is not one) counts as a failed
    copy; once a copy of an idle namespace (which never reaches the failed one's next LSN) has
    been caught up for backoff_max_ms, the count goes back to 0, so later reconnects are not
    held back by the failed-copy backoff."""
    fake = NotFoundUpstream(stream_gone=True, snapshot_incarnation=0)
    fake.start()
    expect_write(writer.http().put(NS + "/kv/before-idle", '{"value":"eA=="}'), "PUT")
    rc = relayer("rcf", [writer.http().base, fake.url],
                 args=["--set", "relayer.backoff_max_ms=1000"]).start()
    try:
        rc.wait_lsn(last_lsn(writer), timeout=60)
        writer.signal(signal.SIGSTOP)
        try:
            wait_for("rcf to fail installing the fake snapshot", lambda: fake.snapshots >= 1 and
                     rc.status()["copy_failures"] >= 1, 30, 0.1)
        finally:
            writer.signal(signal.SIGCONT)
        wait_for("rcf to stream again", lambda: rc.status()["state"] == "streaming", 30, 0.1)
        check(rc.http().get(NS + "/kv/before-idle").status == 200, "rcf lacks before-idle",
              "relayer")
        wait_for("rcf's failed-copy count to go back to 0 on an idle namespace",
                 lambda: rc.status()["copy_failures"] == 0, 15, 0.2)
        rc.stop_clean("SIGTERM of rcf")
    finally:
        fake.stop()


def recreated_while_away():
    """A namespace deleted and created again while a relayer was stopped, and written past the
    relayer's LSN: on its restart the relayer resumes by LSN, sees another incarnation in the
    stream's x-unison-ns-incarnation, drops its copy and bootstraps the new namespace instead of
    continuing on top of the old one, from the upstream that showed it: not from its next
    upstream (here one whose snapshot has no incarnation, as a writer behind of an earlier
    version), which could hand it the deleted namespace again."""
    h = writer.http()
    expect_json(h.put("/api/v1/third"), 200, "create namespace third")
    for i in range(5):
        expect_write(h.put("/api/v1/third/kv/old%d" % i, '{"value":"%s"}' % b64("old %d" % i)),
                     "PUT in third")
    lagging = NotFoundUpstream(stream_gone=True, snapshot_incarnation=0)
    lagging.start()
    rq = relayer("rq", [writer.http().base, lagging.url]).start()
    rq.wait_lsn(last_lsn(writer, "third"), ns="third", timeout=30)
    check(rq.http().get("/api/v1/third/kv/old4").status == 200, "rq has third/old4")
    rq.stop_clean("SIGTERM of rq")
    expect_json(h.delete("/api/v1/third"), 200, "delete namespace third")
    expect_json(h.put("/api/v1/third"), 200, "create namespace third again")
    for i in range(12):
        expect_write(h.put("/api/v1/third/kv/new%d" % i, '{"value":"%s"}' % b64("new %d" % i)),
                     "PUT in the new third")
    last = last_lsn(writer, "third")
    check(last > 5, "the new third is past the old one's LSN (%d)" % last)
    rq.start()
    rq.wait_lsn(last, ns="third", timeout=30)
    wait_for("rq to bootstrap the new third", lambda: rq.http().get(
        "/api/v1/third/kv/new0").status == 200, 30, 0.1)
    check(rq.http().get("/api/v1/third/kv/old4").status == 404,
          "rq continued the new third on top of the old copy (old4 still there)", "relayer")
    doc = expect_json(rq.http().get("/api/v1/third/kv/new11"), 200, "GET third/new11 on rq")
    check(unb64(doc["value"]) == b"new 11", "third/new11 on rq: %r" % doc)
    lagging.stop()
    check(lagging.snapshots == 0, "rq asked its next upstream for a snapshot after it saw the "
          "new namespace on the first (%d)" % lagging.snapshots, "relayer")
    rq.stop_clean("SIGTERM of rq")


class RecreatingProxy(LocalServer):
    """Passes every request on to a writer, but as if the namespace had been deleted and created
    again while a relayer downloaded its snapshot: the snapshot comes without an incarnation (an
    upstream of an earlier version), and the WAL stream says another one than the snapshot's
    store holds."""

    def __init__(self, upstream):
        super().__init__()
        import http.server
        self.snapshots = 0
        outer = self
        host, port = upstream.split("//")[1].split(":")

        class Handler(http.server.BaseHTTPRequestHandler):
            # HTTP/1.0: the body ends when the connection closes (the WAL stream never ends).
            def relay(self, method):
                n = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(n) if n else None
                c = http.client.HTTPConnection(host, int(port), timeout=30)
                try:
                    c.request(method, self.path, body=body,
                              headers={"content-type": "application/json"} if body else {})
                    r = c.getresponse()
                    self.send_response(r.status)
                    for k, v in r.getheaders():
                        k = k.lower()
                        if k in ("transfer-encoding", "content-length", "connection"):
                            continue
                        if k == "x-unison-ns-incarnation":
                            if "/snapshot" in self.path:
                                outer.snapshots += 1
                                continue
                            if "/wal/stream" in self.path:
                                v = str(int(v) + 1000)
                        self.send_header(k, v)
                    self.end_headers()
                    while True:
                        data = r.read1(65536)
                        if not data:
                            break
                        self.wfile.write(data)
                        self.wfile.flush()
                except (OSError, http.client.HTTPException):
                    pass  # either side went away
                finally:
                    c.close()

            def do_GET(self):
                self.relay("GET")

            def do_POST(self):
                self.relay("POST")

            def log_message(self, *args):
                pass

        self.serve(Handler)


def recreated_during_bootstrap():
    """A snapshot without an incarnation takes its bootstrap stream's; if the name was deleted
    and created again during the download, that stream is of the new namespace and its records
    (from the oldest transaction open at the snapshot point) would be added to the old one. The
    install refuses a store of another incarnation than the stream's, and bootstraps again: from
    the same upstream, with a backoff that grows, three times in a row before the next upstream."""
    w4 = suite.writer("w4", args=["--set", "storage.memtable_bytes=1MiB"])
    w4.start()
    h = w4.http()
    # A transaction open across the snapshot point: the bootstrap needs records of the stream.
    txn = expect_write(h.post(NS + "/tx/begin", '{"operation":"put","entryType":"kv"}'),
                       "begin")["txnId"]
    expect_write(h.post(NS + "/tx/%s/kv" % txn, '{"key":"across","value":"%s"}' %
                        b64("part one")), "append")
    for b in range(30):  # ~3 MB: flushes with the transaction open
        body = '{"operation":"put","items":[%s]}' % ",".join(
            '{"key":"fill:%d:%d","value":"%s"}' % (b, i, b64(os.urandom(900)))
            for i in range(100))
        expect_write(h.post(NS + "/kv/batch", body), "batch")
    proxy = RecreatingProxy(w4.http().base)
    proxy.start()
    rz = relayer("rz", [proxy.url]).start()
    try:
        def refused():
            with open(rz.log_path, "rb") as f:
                return b"(deleted and created again during the download): not installed" in f.read()
        def served():
            return rz.http().get(NS + "/kv/fill:0:0").status == 200
        wait_for("rz to refuse installing a snapshot of another namespace than its stream's "
                 "(or to install it)", lambda: (proxy.snapshots >= 2 and refused()) or served(),
                 60, 0.2)
        check(not served(), "rz installed a snapshot of another namespace than its bootstrap "
              "stream's and serves it", "relayer")
        # This upstream keeps disagreeing: each refusal counts as a failed copy, so the backoff
        # grows (50 ms doubling to backoff_max_ms) instead of a full download every 100 ms.
        before = proxy.snapshots
        time.sleep(6)
        more = proxy.snapshots - before
        print("    %d more snapshot downloads in 6 s" % more)
        check(more <= 10, "rz downloaded the snapshot %d more times in 6 s: its backoff does not "
              "grow with refused installs" % more, "relayer")
        rz.stop_clean("SIGTERM of rz")
        # With another upstream, the one that keeps disagreeing is left after three refusals in
        # a row, and the bootstrap from the next one installs.
        before = proxy.snapshots
        ry = relayer("ry", [proxy.url, w4.http().base]).start()
        wait_for("ry to bootstrap from its second upstream",
                 lambda: ry.http().get(NS + "/kv/fill:0:0").status == 200, 60, 0.2)
        check(proxy.snapshots - before == 3, "ry asked the upstream that refused for %d "
              "snapshots, not 3, before the next one" % (proxy.snapshots - before), "relayer")
        ry.stop_clean("SIGTERM of ry")
    finally:
        proxy.stop()
    w4.stop_clean("SIGTERM of w4")


def zero_incarnation(node, ns):
    """Takes the incarnation out of a stopped node's store of ns (0, as the store reads an absent
    one), as a writer of an earlier version left it."""
    store = os.path.join(node.data_dir, "namespaces", ns, "lmdb", "data.mdb")
    dump = ("VERSION=3\nformat=bytevalue\ntype=btree\nHEADER=END\n %s\n %s\nDATA=END\n" %
            (b"incarnation".hex(), bytes(8).hex()))
    p = subprocess.run(["mdb_load", "-n", "-s", "meta", store], input=dump.encode(),
                       capture_output=True, timeout=60)
    check(p.returncode == 0, "mdb_load of a zero incarnation: %s" % p.stderr.decode())


def stamped_at_open():
    """A namespace created by a writer of an earlier version has no incarnation in its store, but
    its create left a .raft-created marker: at open, a writer gives the store that marker's index
    (durably: after a second restart it is still there), so every writer says the same incarnation
    for it and a 0 means "created before raft or incarnations". Here the stamp is taken out of a
    stopped writer's store (set to 0, as the store reads an absent one)."""
    ws = suite.writer("ws")
    ws.start()
    expect_json(ws.http().put("/api/v1/olden"), 200, "create namespace olden")
    expect_write(ws.http().put("/api/v1/olden/kv/a", '{"value":"eA=="}'), "PUT in olden")
    r = ws.http().get("/api/v1/olden/snapshot")
    check(r.status == 200, "snapshot of olden: %d" % r.status)
    inc = int(r.headers.get("x-unison-ns-incarnation", "0"))
    check(inc > 0, "olden is stamped at its create: %r" % r.headers)
    with open(os.path.join(ws.data_dir, "namespaces", ".raft-created-olden")) as f:
        check(int(f.read()) == inc, "the create marker holds the incarnation %d" % inc)
    ws.stop_clean("SIGTERM of ws")
    zero_incarnation(ws, "olden")
    for start in ("first", "second"):
        ws.start(wait_namespace="olden")
        r = ws.http().get("/api/v1/olden/snapshot")
        check(r.headers.get("x-unison-ns-incarnation") == str(inc),
              "after the %s restart, olden's incarnation is not its create marker's %d: %r" %
              (start, inc, r.headers), "writer")
        ws.stop_clean("SIGTERM of ws")
    with open(ws.log_path, "rb") as f:
        log = f.read()
    check(log.count(b"namespace olden: incarnation %d, from its create marker" % inc) == 1,
          "ws stamped olden once, from its marker", "writer")


def incarnation_said(node, ns):
    r = node.http().get("/api/v1/%s/snapshot" % ns)
    check(r.status == 200, "snapshot of %s on %s: %d" % (ns, node.name, r.status))
    return r.headers.get("x-unison-ns-incarnation")


def upgraded_copy_kept():
    """A relayer's copy taken from a writer of an earlier version has no incarnation. Once the
    writer is upgraded it stamps its store from its create marker (stamped_at_open) and its stream
    says that incarnation: the copy, whose newest record came after that create, is of the same
    namespace, so the relayer stamps its own copy (durably) and goes on: no drop (which would tell
    its downstream "deleted"), no second bootstrap. The earlier version is played by a writer
    whose store has no stamp and whose create marker is moved away while the relayer copies."""
    wu = suite.writer("wu")
    wu.start()
    # Restarts keep its address: the relayer's only upstream.
    wu.fixed_ports = {k: wu.ports[k] for k in ("http", "resp", "raft")}
    expect_json(wu.http().put("/api/v1/aged"), 200, "create namespace aged")
    expect_write(wu.http().put("/api/v1/aged/kv/a", '{"value":"eA=="}'), "PUT in aged")
    wu.stop_clean("SIGTERM of wu")
    marker = os.path.join(wu.data_dir, "namespaces", ".raft-created-aged")
    with open(marker) as f:
        inc = int(f.read())
    os.rename(marker, marker + ".away")
    zero_incarnation(wu, "aged")
    wu.start(wait_namespace="aged")
    check(incarnation_said(wu, "aged") == "0", "wu without its marker stamped aged")
    ru = relayer("ru", [wu.http().base]).start()
    for i in range(5):
        expect_write(wu.http().put("/api/v1/aged/kv/b%d" % i, '{"value":"eA=="}'), "PUT in aged")
    ru.wait_lsn(last_lsn(wu, "aged"), ns="aged", timeout=30)
    check(incarnation_said(ru, "aged") == "0", "ru's copy of aged has an incarnation already")
    wu.stop_clean("SIGTERM of wu")
    os.rename(marker + ".away", marker)
    wu.start(wait_namespace="aged")  # upgraded: stamps aged from its marker
    check(incarnation_said(wu, "aged") == str(inc), "wu did not stamp aged with %d" % inc)
    expect_write(wu.http().put("/api/v1/aged/kv/c", '{"value":"eA=="}'), "PUT in aged")
    ru.wait_lsn(last_lsn(wu, "aged"), ns="aged", timeout=30)
    for k in ("a", "b4", "c"):
        check(ru.http().get("/api/v1/aged/kv/" + k).status == 200,
              "ru lacks aged/%s after the upgrade" % k, "relayer")
    check(not ru.status("aged")["upstream_deleted"], "ru says aged's upstream deleted it",
          "relayer")
    ru.stop_clean("SIGTERM of ru")
    ru.start()
    ru.wait_lsn(last_lsn(wu, "aged"), ns="aged", timeout=30)
    check(incarnation_said(ru, "aged") == str(inc),
          "ru's copy of aged is not stamped %d after a restart" % inc, "relayer")
    ru.stop_clean("SIGTERM of ru")
    wu.stop_clean("SIGTERM of wu")
    with open(ru.log_path, "rb") as f:
        log = f.read()
    check(b"namespace aged: incarnation %d from" % inc in log and
          log.count(b"kept and stamped") == 1, "ru did not stamp its copy of aged once",
          "relayer")
    check(not any(b"namespace aged:" in line and b"deleting the local copy" in line
                  for line in log.splitlines()), "ru dropped its copy of aged", "relayer")
    check(log.count(b"namespace aged: snapshot of") == 1,
          "ru bootstrapped aged again (%d snapshots)" % log.count(b"namespace aged: snapshot of"),
          "relayer")


def sync_always():
    """A relayer with sync_mode = always fsyncs what it applied (once per drained batch): its own
    downstream, which sees only durable records in that mode, follows within moments, and its acks
    upstream carry what is durable there."""
    sa = relayer("sa", [writer.http().base], args=["--set", "storage.sync_mode=always"]).start()
    sb = relayer("sb", [sa.url()]).start()
    for i in range(20):
        expect_write(writer.http().put(NS + "/kv/always:%d" % i, '{"value":"eA=="}'), "PUT")
    last = last_lsn(writer)
    sa.wait_lsn(last, timeout=30)
    t0 = time.monotonic()
    sb.wait_lsn(last, timeout=5)
    print("    rb below an always-synced relayer caught up in %.2f s" % (time.monotonic() - t0))

    def acked():
        doc = expect_json(writer.http().get("/status/replicas"), 200, "/status/replicas")
        for ns in doc["namespaces"]:
            for f in ns["followers"] if ns["namespace"] == "default" else []:
                if f["id"] == "sa" and f["appliedLsn"] >= last:
                    return f
        return None
    wait_for("sa's ack of LSN %d on the writer" % last, acked, 10, 0.1)
    sb.stop_clean("SIGTERM of sb")
    sa.stop_clean("SIGTERM of sa")


def forwarding():
    """With forward_writes, HTTP writes on a relayer go to its upstream as the same request and
    the upstream's answer comes back; a read with ?min_lsn= of that answer's LSN then sees it."""
    fw = ["--set", "relayer.forward_writes=1"]
    rf = relayer("rf", [writer.http().base], args=fw).start()
    rf.wait_lsn(last_lsn(writer))
    h = rf.http()
    r = h.put(NS + "/kv/fwd", '{"value":"%s"}' % b64("forwarded"))
    doc = expect_write(r, "PUT forwarded by the relayer")
    check(r.headers.get("x-unison-forwarded-to") == writer.http().base,
          "forwarded-to header: %r" % r.headers, "relayer")
    got = expect_json(h.get(NS + "/kv/fwd?min_lsn=%d" % doc["lsn"]), 200, "read your write")
    check(unb64(got["value"]) == b"forwarded", "value read back on rf: %r" % got, "relayer")
    # If-Match goes up with the write, and the writer evaluates it.
    expect_error(h.put(NS + "/kv/fwd", '{"value":"%s"}' % b64("stale"),
                       headers=["If-Match: %d" % (doc["lsn"] + 1000)]), 412,
                 "stale If-Match forwarded", "precondition failed")
    cur = expect_write(h.put(NS + "/kv/fwd", '{"value":"%s"}' % b64("forwarded"),
                             headers=["If-Match: %d" % doc["lsn"]]), "current If-Match forwarded")
    # However long, they go up whole: a value the writer cannot take is its own 400 (a list of
    # ETags in If-Match, an Idempotency-Key over 128 bytes), never a dropped header and a write.
    long_if_match = "If-Match: " + ", ".join('"%d"' % (1000000 + i) for i in range(60))
    for hdr, key in ((long_if_match, "fwd"), ("Idempotency-Key: " + "k" * 450, "fwd-idem")):
        for node in (writer, rf):
            expect_error(node.http().put(NS + "/kv/" + key, '{"value":"%s"}' % b64("unsure"),
                                         headers=[hdr]),
                         400, "%d-byte %s to %s" % (len(hdr), hdr.split(":")[0], node.name))
    got = expect_json(writer.http().get(NS + "/kv/fwd"), 200, "fwd after the long If-Match")
    check(got["lsn"] == cur["lsn"] and unb64(got["value"]) == b"forwarded",
          "a write with a long If-Match changed fwd: %r" % got, "relayer")
    expect(writer.http().get(NS + "/kv/fwd-idem"), 404, "a write with a long Idempotency-Key")
    # If-None-Match is refused by the relayer itself, as by a writer: not forwarded.
    r = h.put(NS + "/kv/fwd-inm", '{"value":"eA=="}', headers=["If-None-Match: *"])
    expect_error(r, 400, "If-None-Match on a relayer write", "If-None-Match")
    check("x-unison-forwarded-to" not in r.headers, "If-None-Match forwarded: %r" % r.headers,
          "relayer")
    expect(writer.http().get(NS + "/kv/fwd-inm"), 404, "a write with If-None-Match")
    lsn = expect_write(h.post(NS + "/kv/batch", '{"operation":"put","items":[%s]}' % ",".join(
        '{"key":"fwdb%d","value":"%s"}' % (i, b64("b%d" % i)) for i in range(5))), "batch")["lsn"]
    txn = expect_write(h.post(NS + "/tx/begin", '{"operation":"put","entryType":"kv"}'),
                       "begin through rf")["txnId"]
    expect_write(h.post(NS + "/tx/%s/kv" % txn, '{"key":"fwdtx","value":"%s"}' % b64("tx")),
                 "append through rf")
    lsn = expect_write(h.post(NS + "/tx/%s/commit" % txn), "commit through rf")["lsn"]
    got = expect_json(h.get(NS + "/kv/fwdtx?min_lsn=%d" % lsn), 200, "transaction read back")
    check(unb64(got["value"]) == b"tx", "fwdtx: %r" % got, "relayer")
    # Errors are the upstream's own: a bad body is its 400.
    expect_error(h.post(NS + "/kv/batch", '{"operation":"put"'), 400, "bad batch forwarded")
    # Forwarding to a relayer that does not forward: its 403 comes back as is.
    rf2 = relayer("rf2", [relayers[0].url()], args=fw).start()
    expect_error(rf2.http().put(NS + "/kv/x", '{"value":"eA=="}'), 403, "forward to r1",
                 "read-only")
    # An unreachable upstream: 502 naming it.
    dead = "http://127.0.0.1:%d" % free_port()
    rd = relayer("rdead", [dead], args=fw + ["--namespaces", "default"]).start()
    expect_error(rd.http().put(NS + "/kv/x", '{"value":"eA=="}'), 502, "forward to nowhere", dead)
    for x in (rd, rf2, rf):
        x.stop_clean("SIGTERM of %s" % x.name)


def forwarding_resp():
    """With forward_writes, RESP writes on a relayer are encoded there, sent up as records (through
    a forwarding relayer too) and answered with the writer's replies once applied locally; errors
    of the upstream come back as the writer would give them."""
    fw = ["--set", "relayer.forward_writes=1"]
    rf = relayer("rrf", [writer.http().base], args=fw).start()
    rf.wait_lsn(last_lsn(writer))
    rf2 = relayer("rrf2", [rf.url()], args=fw).start()
    rf2.wait_lsn(last_lsn(writer))

    def cli(node, *args):
        rc, out, err = redis_cli(node.ports["resp"], *args)
        check(rc == 0, "redis-cli %r on %s: rc %d %s" % (args, node.name, rc, err), "relayer")
        return out.decode(errors="replace").strip()

    for node, tag in ((rf, "one"), (rf2, "two")):
        hop = "%s (%s hop)" % (node.name, tag)
        check(cli(node, "SET", "rf:" + tag, "v-" + tag) == "OK", "SET on " + hop, "relayer")
        # Answered once applied here: a new connection reads it at once.
        got = cli(node, "GET", "rf:" + tag)
        check(got == "v-" + tag, "GET after SET on %s: %r" % (hop, got), "relayer")
        got = cli(writer, "GET", "rf:" + tag)
        check(got == "v-" + tag, "GET on the writer after SET on %s: %r" % (hop, got), "relayer")
        check(cli(node, "MSET", "rfa:" + tag, "1", "rfb:" + tag, "2") == "OK", "MSET " + hop)
        check(cli(node, "HSET", "rfh:" + tag, "f1", "a", "f2", "b") == "2", "HSET counts " + hop)
        check(cli(node, "HSET", "rfh:" + tag, "f1", "c", "f3", "d") == "1", "HSET new " + hop)
        check(cli(node, "HDEL", "rfh:" + tag, "f1", "nope") == "1", "HDEL count " + hop)
        check(cli(node, "HMSET", "rfh:" + tag, "f9", "z") == "OK", "HMSET " + hop)
        got = cli(writer, "HGET", "rfh:" + tag, "f3")
        check(got == "d", "HGET on the writer after %s: %r" % (hop, got), "relayer")
        got = cli(node, "DEL", "rfa:" + tag, "rfb:" + tag, "rf:none", "rfh:" + tag)
        check(got == "3", "DEL count on %s: %r" % (hop, got), "relayer")
        got = cli(writer, "EXISTS", "rfa:" + tag, "rfb:" + tag)
        check(got == "0", "EXISTS on the writer after DEL on %s: %r" % (hop, got), "relayer")
        check(cli(node, "DEL", "rf:none") == "0", "DEL of nothing " + hop)
        # A pipeline on one connection reads its own write.
        out = resp_raw(node.ports["resp"], resp_command("SET", "rfp:" + tag, "p") +
                       resp_command("GET", "rfp:" + tag))
        check(out == b"+OK\r\n$1\r\np\r\n", "pipelined SET+GET on %s: %r" % (hop, out))
        # The writer's own argument errors.
        got = cli(node, "SET", "k", "v", "NX")
        check(got.startswith("ERR SET option 'NX' is not supported"), "SET NX: %r" % got)
    # An upstream relayer that does not forward: its refusal comes back as READONLY.
    rro = relayer("rrf3", [relayers[0].url()], args=fw).start()
    got = cli(rro, "SET", "x", "y")
    check(got.startswith("READONLY") and writer.http().base in got,
          "SET through a read-only upstream: %r" % got, "relayer")
    # An unreachable upstream.
    dead = "http://127.0.0.1:%d" % free_port()
    rd = relayer("rrdead", [dead], args=fw + ["--namespaces", "default"]).start()
    got = cli(rd, "SET", "x", "y")
    check(got.startswith("ERR unavailable") and dead in got, "SET to nowhere: %r" % got)
    for x in (rd, rro, rf2, rf):
        x.stop_clean("SIGTERM of %s" % x.name)


def acks_isr():
    """A write with ?acks=isr answers once the relayer applied it, and 503 naming how many
    followers acknowledged when the relayer is stopped."""
    wi = suite.writer("wisr", args=["--set", "replication.ack_timeout_ms=2000"])
    wi.start()
    ri = relayer("risr", [wi.http().base]).start()
    ri.wait_lsn(last_lsn(wi))
    h = wi.http()
    t0 = time.monotonic()
    doc = expect_write(h.put(NS + "/kv/isr1?acks=isr", '{"value":"%s"}' % b64("one")),
                       "PUT acks=isr")
    check(ri.status()["applied_lsn"] >= doc["lsn"], "acks=isr answered before the relayer "
          "applied LSN %d: %r" % (doc["lsn"], ri.status()), "relayer")
    print("    acks=isr answered after %.0f ms" % ((time.monotonic() - t0) * 1000))
    ri.signal(signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        err = expect_error(h.put(NS + "/kv/isr2?acks=isr", '{"value":"%s"}' % b64("two")), 503,
                           "acks=isr with the relayer stopped", "0 of the 1")
        took = time.monotonic() - t0
        check(1.5 <= took <= 10, "acks=isr gave up after %.1f s (ack_timeout_ms 2000)" % took)
        check(isinstance(err.get("lsn"), int), "503 without the LSN written: %r" % err)
    finally:
        ri.signal(signal.SIGCONT)
    ri.wait_lsn(last_lsn(wi))
    expect_write(h.put(NS + "/kv/isr3?acks=isr", '{"value":"%s"}' % b64("three")),
                 "PUT acks=isr after SIGCONT")
    ri.stop_clean("SIGTERM of risr")
    wi.stop_clean("SIGTERM of wisr")


def tls_upstream():
    """An https upstream: the certificate and its host name are verified; tls_ca names the CA."""
    d = os.path.join(suite.workdir, "tls")
    os.makedirs(d, exist_ok=True)
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    p = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                        "-out", cert, "-days", "2", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    check(p.returncode == 0, "openssl: %s" % p.stderr.decode())
    wt = suite.writer("wtls", args=["--set", "http.tls_cert=" + cert, "--set", "http.tls_key=" + key,
                                    "--set", "http.tls_listen=127.0.0.1:0"])
    wt.start()
    port = wt.ports["https"]
    for i in range(20):
        expect_write(wt.http().put(NS + "/kv/tls%d" % i, '{"value":"%s"}' % b64("t%d" % i)), "PUT")
    last = last_lsn(wt)

    def failing(r, text):
        def f():
            st = r.status()
            return st is not None and st["state"] != "streaming" and \
                text in (st["last_error"] or "")
        wait_for("%s to refuse the upstream (%s)" % (r.name, text), f, 15, 0.1)

    # The system store does not know this self-signed certificate: no namespace list either.
    r = relayer("rtls1", ["https://localhost:%d" % port]).start()
    wait_for("rtls1's discovery error", lambda: "certificate" in (expect_json(
        r.http().get("/status/upstream"), 200, "status").get("discovery_error") or ""), 15, 0.1)
    r.stop_clean("SIGTERM of rtls1")
    r = relayer("rtls1b", ["https://localhost:%d" % port], args=["--namespaces", "default"])
    r.start()
    failing(r, "certificate")
    r.stop_clean("SIGTERM of rtls1b")
    # Trusted, but the address is not the certificate's name.
    r = relayer("rtls2", ["https://127.0.0.1:%d" % port],
                args=["--set", "relayer.tls_ca=" + cert, "--namespaces", "default"])
    r.start()
    failing(r, "subject name")
    r.stop_clean("SIGTERM of rtls2")
    # Trusted and named: streams.
    r = relayer("rtls3", ["https://localhost:%d" % port], args=["--set", "relayer.tls_ca=" + cert])
    r.start()
    r.wait_lsn(last)
    check_same(wt, r, [], "relayer of an https upstream")
    r.stop_clean("SIGTERM of rtls3")
    wt.stop_clean("SIGTERM of wtls")


def failover():
    r1 = relayers[0]
    rc = relayer("rc", [writer.http().base, r1.url()], args=["--log-level", "info"]).start()
    write_every_kind(writer, "c")
    last = last_lsn(writer)
    rc.wait_lsn(last)
    check(rc.status()["upstream"] == writer.http().base, "rc starts on the writer")
    writer.signal(signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        wait_for("rc to fail over to r1", lambda: rc.status()["upstream"] == r1.url() and
                 rc.status()["state"] == "streaming", 20, 0.1)
        took = time.monotonic() - t0
        check(took >= 2.0, "failover after %.1f s, before the heartbeat timeout" % took)
        print("    failover to r1 after %.1f s without heartbeats" % took)
    finally:
        writer.signal(signal.SIGCONT)
    expect_write(writer.http().put(NS + "/kv/after-failover", '{"value":"%s"}' % b64("yes")),
                 "PUT after SIGCONT")
    last = last_lsn(writer)
    rc.wait_lsn(last, timeout=60)
    check_same(writer, rc, lob_keys, "rc after failover")
    for r in reversed(relayers):  # downstream first: nobody streams from a stopping relayer
        if r.alive():
            r.stop_clean("SIGTERM of %s" % r.name)
            check(not os.path.exists(r.ports_file), "%s left its ports file" % r.name)


suite.server = None
suite.run([chain, readonly, writer_dir_refused, subtree, kill_restart, replace_r1, discovery, plain_404, writer_behind, deleted_at_snapshot, kept_copy_snapshot, idle_copy_failures, recreated_while_away, recreated_during_bootstrap, stamped_at_open,
           upgraded_copy_kept,
           sync_always, forwarding, forwarding_resp, bootstrap_after_retention,
           bootstrap_reads_answered,
           acks_isr, tls_upstream,
           failover])
