#!/usr/bin/env python3
"""deploy/local-cluster.sh works as docs/getting-started.md says: it starts the three writers of
deploy/n1..n3.toml, a write through a follower is read back on another writer, the leader killed
(its printed PID) leaves two writers that elect a leader and take writes while the script goes on,
and SIGTERM to the script stops the rest with exit status 0. The example's ports are fixed
(4001-4003, 6381-6383, 4101-4103), so the test runs in a network namespace of its own (needs
root and unshare; fails without them).

usage: test_deploy_cluster.py path/to/unison-writer"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

if len(sys.argv) < 2:
    sys.exit(__doc__)
if os.environ.get("UD_DEPLOY_NETNS") != "1":
    os.environ["UD_DEPLOY_NETNS"] = "1"
    os.execvp("unshare", ["unshare", "-n", sys.executable] + sys.argv)
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)

WRITER = os.path.abspath(sys.argv[1])
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
tmp = os.environ.get("UD_TEST_TMPDIR") or "/tmp"
data = os.path.join(tmp, "deploy-cluster-%d" % os.getpid())
os.makedirs(data, exist_ok=True)
failures = []


def http(method, port, path, body=None):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), data=body,
                                 method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError as e:
        return 0, str(e)


def until(what, fn, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = fn()
        if got:
            return got
        time.sleep(0.1)
    failures.append("%s: not within %d s" % (what, timeout))
    return None


def leader(ports):
    for port in ports:
        s, doc = http("GET", port, "/status/leader")
        if s == 200 and doc.get("isLeader"):
            return port
    return None


def put(port, key, value):
    s, doc = http("PUT", port, "/api/v1/default/kv/" + key,
                  json.dumps({"value": value}).encode())
    return doc["lsn"] if s == 200 else None


env = dict(os.environ, UNISON_WRITER=WRITER, CLUSTER_DIR=data)
p = subprocess.Popen([os.path.join(ROOT, "deploy", "local-cluster.sh")], env=env,
                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
out = []
started = threading.Event()


def read_output():
    for raw in p.stdout:
        line = raw.decode(errors="replace")
        out.append(line)
        if "(Ctrl-C stops all)" in line:
            started.set()


reader = threading.Thread(target=read_output, daemon=True)
reader.start()
try:
    if not started.wait(60):
        failures.append("the cluster did not start:\n" + "".join(out[-20:]))
    else:
        pids = {int(m.group(2)): int(m.group(1)) for m in
                re.finditer(r"local-cluster: n\d pid (\d+) \(http 127.0.0.1:(\d+)", "".join(out))}
        first = until("a leader", lambda: leader(pids), 30)
        if first is not None:
            follower = [port for port in pids if port != first][0]
            lsn = until("a write through the follower", lambda: put(follower, "one", "MQ=="), 30)
            other = [port for port in pids if port not in (first, follower)][0]
            s, doc = http("GET", other, "/api/v1/default/kv/one?min_lsn=%d" % (lsn or 0))
            if s != 200 or doc.get("value") != "MQ==":
                failures.append("the write read on another writer: %d %r" % (s, doc))
            os.kill(pids[first], signal.SIGKILL)
            rest = [port for port in pids if port != first]
            second = until("a new leader after the leader's kill", lambda: leader(rest), 30)
            lsn = until("a write after the leader's kill", lambda: put(rest[0], "two", "Mg=="), 30)
            s, doc = http("GET", rest[1], "/api/v1/default/kv/two?min_lsn=%d" % (lsn or 0))
            if second is None or s != 200 or doc.get("value") != "Mg==":
                failures.append("after the kill: leader %r, read %d %r" % (second, s, doc))
            if p.poll() is not None:
                failures.append("the script ended when one writer was killed")
finally:
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
    try:
        status = p.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        status = p.wait()
        failures.append("the script did not stop within 60 s")
    reader.join(10)
text = "".join(out)
if status != 0:
    failures.append("the script exited with status %d" % status)
exits = re.findall(r"local-cluster: writer \d+ exited with status (\d+)", text)
if sorted(exits) != ["0", "0", "137"]:
    failures.append("exit statuses: %r\n%s" % (exits, "".join(
        line for line in out if line.startswith("local-cluster"))))
if failures:
    print("not ok 1 - deploy/local-cluster.sh\n    " + "\n    ".join(failures))
    print("1..1")
    sys.exit(1)
print("ok 1 - deploy/local-cluster.sh (3 writers, the leader killed, two go on, clean stop)")
print("1..1")
shutil.rmtree(data, ignore_errors=True)
