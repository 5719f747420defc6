#!/usr/bin/env python3
"""End to end, a linearizable read of a large LOB through a follower of a three-writer cluster
(docs/raft.md "Clients and the cluster"): the follower passes the leader's answer on as it
arrives instead of collecting it first. A 20 MiB LOB comes back byte-identical with the leader's
headers over HTTP/1.1 and h2c, and so does a byte range of it; a client reading slowly (curl
--limit-rate) does not make the follower hold the LOB (its RssAnon grows by far less than the
LOB's size while the read runs); clients that go away mid-body are no trouble; a client that stops reading is cut after
[raft] forward_stall_ms; a follower stopped (SIGTERM) mid-body finishes the
reads in flight; a namespace deleted mid-body gives whole or visibly failed transfers; and a leader SIGKILLed mid-body gives the client a failed
transfer (curl exits non-zero, short of Content-Length), never a complete-looking answer."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Suite, Writer, check, wait_for  # noqa: E402
from cluster_lib import leader_of, request, start_writers, three_writers  # noqa: E402

suite = Suite("cluster-stream-read")
nodes = three_writers(suite)
# stalled_client_cut's follower cuts a client that took nothing for this long (the default is
# 60 s). Only there: curl --limit-rate, which the other cases use, reads a burst as fast as it
# comes and then pauses for seconds to bring its average back to the rate.
STALL_MS = 3000
NS = "/api/v1/default"
SIZE = 20 << 20
PATH = NS + "/lob?key=big&consistency=linearizable"
lob = {}  # "data", "lsn"


def follower():
    leader = leader_of(nodes)
    return leader, [n for n in nodes if n is not leader][0]


def upload_lob(port, key, data, chunk=1 << 20, ns=NS):
    def post(path, body=b"", ctype="application/json"):
        status, _, b = request(port, "POST", ns + path, body, {"Content-Type": ctype}, timeout=60)
        check(status == 200, "POST %s: %d %r" % (path, status, b[:200]))
        return json.loads(b)
    txn = post("/tx/begin", b'{"operation":"put","entryType":"lob"}')["txnId"]
    for off in range(0, len(data), chunk):
        post("/tx/%s/lob?key=%s&offset=%d" % (txn, key, off), data[off:off + chunk],
             "application/octet-stream")
    return post("/tx/%s/commit" % txn)["lsn"]


def rss_anon_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return 0


def start_cluster():
    leader = start_writers(nodes)
    lob["data"] = os.urandom(SIZE)
    lob["lsn"] = upload_lob(leader.ports["http"], "big", lob["data"])


def whole_lob_through_follower():
    """The 20 MiB LOB read linearizably through a follower: 200, the leader's ETag, LSN and
    Content-Length, the very bytes; over HTTP/1.1 and h2c."""
    leader, f = follower()
    for http2 in (False, True):
        r = f.http(http2).get(PATH, timeout=120)
        label = "GET of the %d-byte LOB through %s over %s" % (SIZE, f.name,
                                                              "h2c" if http2 else "HTTP/1.1")
        check(r.status == 200 and r.curl_rc == 0, "%s: %d, curl rc %d %s" %
              (label, r.status, r.curl_rc, r.curl_err), "raft")
        check(r.headers.get("etag") == '"%d"' % lob["lsn"] and
              r.headers.get("x-unison-lsn") == str(lob["lsn"]) and
              r.headers.get("accept-ranges") == "bytes" and
              r.headers.get("content-type") == "application/octet-stream",
              "%s: headers %r (commit LSN %d)" % (label, r.headers, lob["lsn"]), "raft")
        if not http2:
            check(r.headers.get("content-length") == str(SIZE), "%s: Content-Length %r" %
                  (label, r.headers.get("content-length")), "raft")
        check(len(r.body) == SIZE and r.body == lob["data"],
              "%s: %d bytes back, identical: %s" % (label, len(r.body), r.body == lob["data"]),
              "raft")


def range_through_follower():
    """A byte range across chunks, read linearizably through a follower: the leader's 206 with
    its Content-Range and the very bytes."""
    leader, f = follower()
    first, last = 3_000_000, 17_654_321
    for http2 in (False, True):
        r = f.http(http2).get(PATH, curl_args=["-r", "%d-%d" % (first, last)], timeout=120)
        label = "Range bytes=%d-%d through %s over %s" % (first, last, f.name,
                                                          "h2c" if http2 else "HTTP/1.1")
        check(r.status == 206 and r.curl_rc == 0 and
              r.headers.get("content-range") == "bytes %d-%d/%d" % (first, last, SIZE),
              "%s: %d, Content-Range %r, curl rc %d" %
              (label, r.status, r.headers.get("content-range"), r.curl_rc), "raft")
        check(r.body == lob["data"][first:last + 1], "%s: %d bytes back, the right ones: %s" %
              (label, len(r.body), r.body == lob["data"][first:last + 1]), "raft")


def slow_curl(node, out, rate, http2=False, path=PATH):
    args = ["curl", "-sS", "--max-time", "120", "--limit-rate", rate, "-o", out,
            "-w", "%{http_code} %{size_download}",
            "--http2-prior-knowledge" if http2 else "--http1.1",
            "http://127.0.0.1:%d%s" % (node.ports["http"], path)]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@contextlib.contextmanager
def slow_reads(f, tag, rate, path=PATH, under_way=64 << 10):
    """Two slow reads through f, over HTTP/1.1 and h2c, each with more than under_way bytes in
    when the block starts; what still runs at its end is killed. Yields (procs, outs)."""
    outs = [os.path.join(suite.workdir, "%s%d.body" % (tag, i)) for i in range(2)]
    procs = [slow_curl(f, outs[i], rate, http2=(i == 1), path=path) for i in range(2)]
    try:
        wait_for("both slow reads under way",
                 lambda: all(os.path.exists(o) and os.path.getsize(o) > under_way for o in outs),
                 30, 0.05)
        yield procs, outs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def read_results(procs, outs, f, what, timeout=120):
    """Waits for each slow read: yields (label, curl rc, curl's -w line, its error, body)."""
    for i, p in enumerate(procs):
        stdout, stderr = p.communicate(timeout=timeout)
        with open(outs[i], "rb") as fh:
            body = fh.read()
        label = "GET through %s over %s, %s" % (f.name, "h2c" if i else "HTTP/1.1", what)
        yield label, p.returncode, stdout.decode(), stderr.decode().strip()[:100], body


def slow_client_bounded_memory():
    """A client reading at 2 MB/s: the follower's anonymous memory grows by far less than the
    LOB while the read runs (it pauses the leader's transfer instead of buffering), and the LOB
    arrives whole."""
    leader, f = follower()
    out = os.path.join(suite.workdir, "slow.body")
    before = rss_anon_kib(f.proc.pid)
    p = slow_curl(f, out, "2M")
    peak = before
    while p.poll() is None:
        peak = max(peak, rss_anon_kib(f.proc.pid))
        time.sleep(0.1)
    stdout, stderr = p.communicate()
    growth_mib = (peak - before) / 1024.0
    print("    follower RssAnon %d KiB before, peak %d KiB during the slow read (+%.1f MiB)" %
          (before, peak, growth_mib))
    with open(out, "rb") as fh:
        body = fh.read()
    check(p.returncode == 0 and stdout.split()[0] == b"200" and body == lob["data"],
          "slow GET through %s: curl rc %d %r %r, %d bytes, identical: %s" %
          (f.name, p.returncode, stdout, stderr[:200], len(body), body == lob["data"]), "raft")
    check(growth_mib < 8, "the follower's RssAnon grew by %.1f MiB while passing on a %d MiB "
          "LOB to a slow client" % (growth_mib, SIZE >> 20), "raft")


def client_gone_mid_body():
    """Slow clients (HTTP/1.1 and h2c) that go away mid-body: the follower drops the leader's
    transfer with them (a sanitizer build checks the order of those frees) and answers the next
    read whole."""
    leader, f = follower()
    with slow_reads(f, "gone", "1M"):
        pass
    r = f.http().get(PATH, timeout=120)
    check(f.alive() and r.status == 200 and r.body == lob["data"],
          "GET through %s after two clients went away mid-body: %d, %d bytes, identical: %s" %
          (f.name, r.status, len(r.body), r.body == lob["data"]), "raft")


def stalled_client_cut():
    """A client that stops reading a linearizable LOB read passed on by a follower is cut once it
    has taken nothing for [raft] forward_stall_ms (not before): its HTTP/1.1 answer ends short of
    Content-Length, the follower says so in its log and answers the next read whole."""
    leader, f = follower()
    f.stop_clean()
    f.extra += ["--set", "raft.forward_stall_ms=%d" % STALL_MS]
    f.start()
    try:
        stalled_read_cut(f)
    finally:
        f.stop_clean()
        del f.extra[-2:]
        f.start()


def stalled_read_cut(f):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.settimeout(30)
    sock.connect(("127.0.0.1", f.ports["http"]))
    log_before = os.path.getsize(f.log_path)
    try:
        sock.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % PATH.encode())
        got = sock.recv(65536)
        check(got.startswith(b"HTTP/1.1 200"), "GET through %s: %r" % (f.name, got[:80]), "raft")
        t0 = time.monotonic()

        def cut_logged():
            with open(f.log_path, "rb") as fh:
                fh.seek(log_before)
                return b"took nothing for %d ms" % STALL_MS in fh.read()
        wait_for("%s to cut the stalled read" % f.name, cut_logged, 60, 0.1)
        took = time.monotonic() - t0
        while True:
            try:
                chunk = sock.recv(1 << 20)
            except ConnectionResetError:
                break
            if not chunk:
                break
            got += chunk
    finally:
        sock.close()
    body = got.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in got else b""
    print("    cut after %.1f s without reading; %d of %d body bytes had arrived" %
          (took, len(body), SIZE))
    check(took >= STALL_MS / 1000.0 - 0.5, "cut %.1f s after the client stopped reading, before "
          "the %d ms bound" % (took, STALL_MS), "raft")
    check(len(body) < SIZE, "the stalled answer came whole (%d bytes)" % len(body), "raft")
    r = f.http().get(PATH, timeout=120)
    check(r.status == 200 and r.body == lob["data"],
          "GET through %s after the cut: %d, %d bytes, identical: %s" %
          (f.name, r.status, len(r.body), r.body == lob["data"]), "raft")


def follower_stopped_mid_body():
    """SIGTERM to a follower while it passes linearizable reads on to slow clients (HTTP/1.1 and
    h2c): the reads in flight finish whole (docs/http-api.md "Shutdown": within 20 s on HTTP/1.1,
    10 s after the GOAWAY on HTTP/2), new connections are refused meanwhile, and the follower exits
    0; started again, it serves the read whole."""
    leader, f = follower()
    # 20 MiB at 8 MB/s: under 3 s per read, well inside HTTP/2's 10 s.
    with slow_reads(f, "stopped", "8M", under_way=1 << 20) as (procs, outs):
        f.signal(signal.SIGTERM)
        port = f.ports["http"]

        def refused():
            return subprocess.run(["curl", "-sS", "--max-time", "5", "-o", "/dev/null",
                                   "http://127.0.0.1:%d/healthz" % port],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  timeout=30).returncode == 7  # couldn't connect
        wait_for("%s refusing new connections while it stops" % f.name, refused, 10, 0.05)
        for label, rc, line, err, body in read_results(procs, outs, f, "stopped mid-body", 60):
            print("    %s: curl rc %d, %s, %d bytes" % (label, rc, line, len(body)))
            check(rc == 0 and line.startswith("200 ") and body == lob["data"],
                  "%s: curl rc %d (%s), %d of %d bytes, identical: %s" %
                  (label, rc, err, len(body), SIZE, body == lob["data"]), "raft")
        status = f.proc.wait(60)
        check(status == 0, "%s after SIGTERM mid-read: exit status %s:\n%s" %
              (f.name, status, f.log_tail(8)), "raft")
    f.start(wait_namespace="default")
    r = f.http().get(PATH, timeout=120)
    check(r.status == 200 and r.body == lob["data"],
          "GET through %s after its restart: %d, %d bytes, identical: %s" %
          (f.name, r.status, len(r.body), r.body == lob["data"]), "raft")


def namespace_deleted_mid_body():
    """The namespace deleted (on the leader, a raft command) while a follower passes a linearizable
    read of its LOB on to slow clients: each client gets either the whole LOB or a transfer that
    visibly failed (curl non-zero, short of Content-Length), never a short answer that looks
    complete; both writers keep serving, and the name reads as not found everywhere after."""
    leader, f = follower()
    lport = leader.ports["http"]
    status, _, b = request(lport, "PUT", "/api/v1/doomed", b"", {}, timeout=30)
    check(status in (200, 201), "PUT /api/v1/doomed: %d %r" % (status, b[:200]), "raft")
    for n in nodes:
        n.wait_namespace("doomed", 30)
    data = os.urandom(SIZE)
    upload_lob(lport, "big", data, ns="/api/v1/doomed")
    path = "/api/v1/doomed/lob?key=big&consistency=linearizable"
    with slow_reads(f, "doomed", "2M", path=path, under_way=1 << 20) as (procs, outs):
        status, _, b = request(lport, "DELETE", "/api/v1/doomed", b"", {}, timeout=30)
        check(status == 200, "DELETE /api/v1/doomed mid-read: %d %r" % (status, b[:200]), "raft")
        for label, rc, line, err, body in read_results(procs, outs, f,
                                                       "namespace deleted mid-body"):
            whole = rc == 0 and body == data
            cut = rc != 0 and len(body) < SIZE
            print("    %s: curl rc %d, %s, %d bytes: %s" %
                  (label, rc, line, len(body), "whole" if whole else "cut" if cut else "WRONG"))
            check(whole or cut, "%s: curl rc %d (%s), %d of %d bytes, identical: %s" %
                  (label, rc, err, len(body), SIZE, body == data), "raft")
    for n in nodes:
        check(n.alive(), "%s died after the namespace was deleted mid-read:\n%s" %
              (n.name, n.log_tail(8)), "raft")
        wait_for("%s to drop namespace doomed" % n.name,
                 lambda: n.http().get("/api/v1/doomed/kv/x").status == 404, 30, 0.1)


def leader_killed_mid_body():
    """The leader SIGKILLed while a follower passes its answer on to slow clients (HTTP/1.1 and
    h2c): each client's transfer fails (curl non-zero, fewer bytes than the LOB), never a
    complete-looking 200. The LOB is larger than the socket buffers between leader and clients
    hold (13-14 MB were seen to arrive after the kill), so the leader dies with bytes unsent."""
    leader, f = follower()
    huge = os.urandom(1 << 20) * 48
    upload_lob(leader.ports["http"], "huge", huge)
    path = NS + "/lob?key=huge&consistency=linearizable"
    try:
        with slow_reads(f, "cut", "2M", path=path) as (procs, outs):
            leader.kill()
            for label, rc, line, err, body in read_results(procs, outs, f,
                                                           "leader killed mid-body"):
                print("    %s: curl rc %d, %d of %d bytes, %s" %
                      (label, rc, len(body), len(huge), err))
                check(rc != 0 and len(body) < len(huge), "%s: curl rc %d (%r), %d of %d bytes" %
                      (label, rc, line, len(body), len(huge)), "raft")
    finally:
        leader.start(wait_namespace=None)
        leader_of(nodes)
        leader.wait_namespace("default", 30)



def stop_all():
    """SIGTERM: each writer exits cleanly (in a sanitizer build: without leaks)."""
    Writer.stop_all(nodes)


suite.run([start_cluster, whole_lob_through_follower, range_through_follower,
           slow_client_bounded_memory, client_gone_mid_body, stalled_client_cut,
           follower_stopped_mid_body,
           namespace_deleted_mid_body, leader_killed_mid_body, stop_all])
