#!/usr/bin/env python3
"""Helpers of tests/bench/bench_cluster.sh: free ports, h2load log statistics, status parsing and
the failover trial (a client writing continuously while the leader is killed).

  cluster_tool.py free-ports N
  cluster_tool.py stats LOG.tsv...              h2load --log-file files of one load
  cluster_tool.py etcd-leader < status.json     `etcdctl endpoint status -w json`: leader endpoint
  cluster_tool.py etcd-revision < status.json   the highest revision among the endpoints
  cluster_tool.py json-get KEY.KEY... < doc     one value of a JSON document
  cluster_tool.py settled < cluster.json        /status/cluster: one leader, all reachable, caught up
  cluster_tool.py failover --kill-pid PID --leader PORT --survivors PORT,PORT [...]

Every figure is printed as NAME=VALUE on one line, for the shell to read.
"""
import argparse
import base64
import http.client
import json
import os
import signal
import socket
import sys
import threading
import time


def free_ports(n):
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    print(" ".join(str(p) for p in ports))


def percentile(sorted_vals, q):
    if not sorted_vals:
        return 0.0
    i = min(len(sorted_vals) - 1, max(0, int(len(sorted_vals) * q + 0.5) - 1))
    return sorted_vals[i]


def stats(files):
    """The steady window of a load made of several h2load processes: from the moment the last
    process sent its first request to the moment the first process ended. Processes start one
    after the other, so the figures count only the time when all of them were running: the rate
    is the 2xx answers that ended in the window over its length, the latencies those of the
    requests that started in it. With one process the window is its whole run."""
    procs = []
    for path in files:
        rows = []
        with open(path) as f:
            for line in f:
                parts = line.split("\t")
                if len(parts) < 3:
                    continue
                start, status, dur = int(parts[0]), int(parts[1]), int(parts[2])
                rows.append((start, status, dur))
        if not rows:
            print("error=no requests in %s" % path)
            sys.exit(1)
        procs.append(rows)
    lo = max(min(r[0] for r in rows) for rows in procs)
    hi = min(max(r[0] + r[2] for r in rows) for rows in procs)
    total = sum(len(rows) for rows in procs)
    errors_total = sum(1 for rows in procs for r in rows if not 200 <= r[1] < 300)
    if hi <= lo:
        print("error=the h2load processes did not overlap (window %.3f s)" % ((hi - lo) / 1e6))
        sys.exit(1)
    ok = 0
    errors = 0
    lat = []
    for rows in procs:
        for start, status, dur in rows:
            end = start + dur
            good = 200 <= status < 300
            if lo <= end <= hi and good:
                ok += 1
            if lo <= start <= hi:
                if good:
                    lat.append(dur / 1000.0)
                else:
                    errors += 1
    lat.sort()
    window = (hi - lo) / 1e6
    span = (max(r[0] + r[2] for rows in procs for r in rows) -
            min(r[0] for rows in procs for r in rows)) / 1e6
    print("rate=%.1f ok=%d errors=%d errors_total=%d requests=%d window_s=%.3f span_s=%.3f "
          "p50_ms=%.3f p99_ms=%.3f max_ms=%.3f max_per_proc=%d" %
          (ok / window, ok, errors, errors_total, total, window, span, percentile(lat, 0.50),
           percentile(lat, 0.99), lat[-1] if lat else 0.0, max(len(rows) for rows in procs)))


def etcd_leader(doc):
    for ep in doc:
        st = ep["Status"]
        if st.get("leader") and st["header"]["member_id"] == st["leader"]:
            print(ep["Endpoint"])
            return
    sys.exit(1)


def json_get(path, doc):
    for k in path.split("."):
        doc = doc[k]
    print(doc)


def settled(doc):
    """Exit 0 when every member is reachable, exactly one leads, and every member has applied
    the leader's last index (no load runs while this is asked)."""
    members = doc.get("members", [])
    if len(members) < 3 or not all(m.get("reachable") for m in members):
        sys.exit(1)
    leaders = [m for m in members if m.get("state") == "leader"]
    if len(leaders) != 1:
        sys.exit(1)
    last = leaders[0]["lastIndex"]
    if any(m.get("appliedIndex", 0) < last or m.get("leaderId") != leaders[0]["id"]
           for m in members):
        sys.exit(1)
    print("leader=%d index=%d" % (leaders[0]["id"], last))


# --- failover --------------------------------------------------------------------------------------


class Log:
    def __init__(self):
        self.lock = threading.Lock()
        self.acks = []  # (sent, answered, port, status)
        self.stop = threading.Event()

    def add(self, sent, answered, port, status):
        with self.lock:
            self.acks.append((sent, answered, port, status))


def put(port, path, body, timeout):
    """One PUT on a fresh connection: the HTTP status, or None when the connection failed."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("PUT", path, body, {"content-type": "application/json"})
        r = c.getresponse()
        r.read()
        return r.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        c.close()


def steady_writer(log, port, prefix, body):
    """A client writing continuously to one writer over a keep-alive connection, reconnecting
    after a failure (the load before and during the failover)."""
    i = 0
    c = None
    while not log.stop.is_set():
        i += 1
        sent = time.monotonic()
        try:
            if c is None:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            c.request("PUT", "/api/v1/default/kv/%s-%d" % (prefix, i), body,
                      {"content-type": "application/json"})
            r = c.getresponse()
            r.read()
            log.add(sent, time.monotonic(), port, r.status)
        except (OSError, http.client.HTTPException):
            log.add(sent, time.monotonic(), port, None)
            if c is not None:
                c.close()
            c = None
            time.sleep(0.01)
    if c is not None:
        c.close()


def probe(log, port, prefix, body, every):
    """After the kill: a new write to this survivor every `every` seconds, each on its own thread
    and connection, so that a request parked in the writer (waiting for a leader) does not delay
    the next attempt. Stops at the first acknowledged write of any survivor."""
    n = 0
    threads = []
    while not log.stop.is_set():
        n += 1

        def one(k=n):
            sent = time.monotonic()
            st = put(port, "/api/v1/default/kv/%s-%d" % (prefix, k), body, 10)
            log.add(sent, time.monotonic(), port, st)
        t = threading.Thread(target=one, daemon=True)
        t.start()
        threads.append(t)
        log.stop.wait(every)
    return threads


def failover(a):
    body = json.dumps({"value": base64.b64encode(os.urandom(1024)).decode()}).encode()
    log = Log()
    survivors = [int(p) for p in a.survivors.split(",")]
    writers = [threading.Thread(target=steady_writer, args=(log, p, "%s-s%d" % (a.tag, p), body),
                                daemon=True) for p in [a.leader] + survivors]
    for t in writers:
        t.start()
    time.sleep(a.before)
    with log.lock:
        before = sum(1 for x in log.acks if x[3] is not None and 200 <= x[3] < 300)
    if before == 0:
        log.stop.set()
        print("error=no write was acknowledged before the kill")
        sys.exit(1)
    t_kill = time.monotonic()
    os.kill(a.kill_pid, signal.SIGKILL)
    probes = [threading.Thread(target=probe, args=(log, p, "%s-p%d" % (a.tag, p), body, a.every),
                               daemon=True) for p in survivors]
    for t in probes:
        t.start()
    deadline = t_kill + a.timeout
    first = None
    while time.monotonic() < deadline:
        with log.lock:
            ok = [x for x in log.acks if x[0] >= t_kill and x[2] in survivors and
                  x[3] is not None and 200 <= x[3] < 300]
        if ok:
            first = min(ok, key=lambda x: x[1])
            break
        time.sleep(0.005)
    log.stop.set()
    # The clients' threads are daemons: a request still parked in a writer ends with this process.
    with log.lock:
        failed = sum(1 for x in log.acks if x[0] >= t_kill and x[2] in survivors and
                     (x[3] is None or not 200 <= x[3] < 300) and (first is None or x[1] <= first[1]))
    if first is None:
        print("error=no write acknowledged within %.0f s of the kill" % a.timeout)
        sys.exit(1)
    print("failover_ms=%.1f via=%d acked_before=%d failed_attempts=%d" %
          ((first[1] - t_kill) * 1000, first[2], before, failed))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("free-ports")
    p.add_argument("n", type=int)
    p = sub.add_parser("stats")
    p.add_argument("files", nargs="+")
    sub.add_parser("etcd-leader")
    sub.add_parser("etcd-revision")
    p = sub.add_parser("json-get")
    p.add_argument("path")
    sub.add_parser("settled")
    p = sub.add_parser("failover")
    p.add_argument("--kill-pid", type=int, required=True)
    p.add_argument("--leader", type=int, required=True, help="the leader's HTTP port")
    p.add_argument("--survivors", required=True, help="the other writers' HTTP ports")
    p.add_argument("--before", type=float, default=1.0, help="seconds of writes before the kill")
    p.add_argument("--every", type=float, default=0.02, help="seconds between probe writes")
    p.add_argument("--timeout", type=float, default=20.0)
    p.add_argument("--tag", default="fo")
    a = ap.parse_args()
    if a.cmd == "free-ports":
        free_ports(a.n)
    elif a.cmd == "stats":
        stats(a.files)
    elif a.cmd == "etcd-leader":
        etcd_leader(json.load(sys.stdin))
    elif a.cmd == "etcd-revision":
        print(max(ep["Status"]["header"]["revision"] for ep in json.load(sys.stdin)))
    elif a.cmd == "json-get":
        json_get(a.path, json.load(sys.stdin))
    elif a.cmd == "settled":
        settled(json.load(sys.stdin))
    elif a.cmd == "failover":
        failover(a)


if __name__ == "__main__":
    main()
