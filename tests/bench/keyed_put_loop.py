#!/usr/bin/env python3
"""Loop-thread CPU per KV PUT of a ~1 MiB body with and without an Idempotency-Key, on a fresh
single writer (docs/benchmarks.md "The request digest on the loop thread"). Blocks of N PUTs
alternate: without a key, with a new key per PUT, ...; each block's figure is the writer's main
thread (the loop) CPU time from /proc/PID/task/PID/schedstat divided by N. Sequential PUTs over one
connection; the data directory is removed at the end.

usage: keyed_put_loop.py WRITER_BINARY [N_PER_BLOCK [BLOCKS]]"""
import base64
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

writer = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 40
blocks = int(sys.argv[3]) if len(sys.argv) > 3 else 6
d = tempfile.mkdtemp(prefix="keyed-put-loop-", dir=os.environ.get("PROF_DIR", "/tmp"))
p = subprocess.Popen([writer, "-d", d + "/data", "--http", "127.0.0.1:0", "--resp", "127.0.0.1:0",
                      "--raft", "127.0.0.1:0", "--ports-file", d + "/ports.json",
                      "--log-level", "warn"],
                     stdout=open(d + "/w.log", "w"), stderr=subprocess.STDOUT)
try:
    for _ in range(100):
        if os.path.exists(d + "/ports.json") and os.path.getsize(d + "/ports.json") > 0:
            break
        time.sleep(0.1)
    port = json.load(open(d + "/ports.json"))["http"]
    time.sleep(1)

    def loop_cpu_s():
        with open("/proc/%d/task/%d/schedstat" % (p.pid, p.pid)) as f:
            return int(f.read().split()[0]) / 1e9

    # {"value": base64 of 786,000 bytes}: a body of 1,048,013 bytes.
    body = json.dumps({"value": base64.b64encode(os.urandom(786000)).decode()}).encode()
    c = http.client.HTTPConnection("127.0.0.1", port)
    res = {"none": [], "key": []}
    for b in range(blocks):
        mode = "none" if b % 2 == 0 else "key"
        t0 = loop_cpu_s()
        for i in range(n):
            h = {"Content-Type": "application/json"}
            if mode == "key":
                h["Idempotency-Key"] = uuid.uuid4().hex
            c.request("PUT", "/api/v1/default/kv/big-%d" % (i % 16), body, h)
            r = c.getresponse()
            r.read()
            if r.status != 200:
                sys.exit("PUT answered %d" % r.status)
        res[mode].append((loop_cpu_s() - t0) * 1e3 / n)
    print("body %d bytes; loop ms per PUT: without a key %s; with one %s" % (
        len(body), " ".join("%.3f" % x for x in res["none"]),
        " ".join("%.3f" % x for x in res["key"])))
finally:
    p.terminate()
    p.wait()
    shutil.rmtree(d, ignore_errors=True)
