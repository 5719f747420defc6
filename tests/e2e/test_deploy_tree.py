#!/usr/bin/env python3
"""deploy/relayer-tree.sh works: with FANOUT=2 it starts a writer -> 2 -> 4 relayer tree, a write
on the writer is read back on the last leaf, and SIGTERM to the script stops every process with
exit status 0.

usage: test_deploy_tree.py path/to/build-dir"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

if len(sys.argv) < 2:
    sys.exit(__doc__)
BUILD = os.path.abspath(sys.argv[1])
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
tmp = os.environ.get("UD_TEST_TMPDIR") or os.path.join(BUILD, "tmp")
data = os.path.join(tmp, "deploy-tree-%d" % os.getpid())
os.makedirs(data, exist_ok=True)
failures = []


def http(method, url, body=None):
    req = urllib.request.Request(url, data=body, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


env = dict(os.environ, UNISON_BUILD=BUILD, TREE_DIR=data, FANOUT="2")
p = subprocess.Popen([os.path.join(ROOT, "deploy", "relayer-tree.sh")], env=env,
                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
lines = []
ports = {}
try:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = p.stdout.readline().decode(errors="replace")
        if not line:
            break
        lines.append(line)
        m = re.match(r"relayer-tree: (\w+)\s+pid \d+\s+http://127.0.0.1:(\d+)", line)
        if m:
            ports[m.group(1)] = int(m.group(2))
        if "(Ctrl-C stops all)" in line:
            break
    names = sorted(ports)
    if names != ["r1", "r11", "r12", "r2", "r21", "r22", "w"]:
        failures.append("the tree did not start: %r\n%s" % (names, "".join(lines[-20:])))
    else:
        w, leaf = ports["w"], ports["r22"]
        status = 0
        for _ in range(100):  # the default namespace is created once the writer leads
            status, _ = http("PUT", "http://127.0.0.1:%d/api/v1/default/kv/hello" % w,
                             b'{"value":"d29ybGQ="}')
            if status == 200:
                break
            time.sleep(0.1)
        if status != 200:
            failures.append("PUT on the writer: %d" % status)
        got = None
        for _ in range(200):
            status, body = http("GET", "http://127.0.0.1:%d/api/v1/default/kv/hello" % leaf)
            if status == 200:
                got = json.loads(body)
                break
            time.sleep(0.05)
        if got is None or got.get("value") != "d29ybGQ=":
            failures.append("the write did not reach the leaf r22: %r" % got)
finally:
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
    try:
        out = p.communicate(timeout=60)[0].decode(errors="replace")
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out = p.communicate()[0].decode(errors="replace")
        failures.append("the script did not stop within 60 s")
    lines.append(out)
exits = re.findall(r"relayer-tree: (\w+) \(pid \d+\) exited with status (\d+)", "".join(lines))
if len(exits) != 7 or any(s != "0" for _, s in exits):
    failures.append("exit statuses: %r" % exits)
if failures:
    print("not ok 1 - deploy/relayer-tree.sh\n    " + "\n    ".join(failures))
    print("1..1")
    sys.exit(1)
print("ok 1 - deploy/relayer-tree.sh (writer -> 2 -> 4, a write read on a leaf, clean stop)")
print("1..1")
shutil.rmtree(data, ignore_errors=True)
