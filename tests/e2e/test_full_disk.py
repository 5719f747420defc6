#!/usr/bin/env python3
"""End to end, a full disk: the writer's data directory on a small tmpfs (root only: it mounts
one; without root the suite reports itself skipped, exit 77), filled until a write fails. Then
new writes are refused promptly with a 500 (RESP: an error) that names the cause, reads go on,
and once space returns writes resume and every acknowledged write, and the write that was in
flight when the disk filled (committed in raft's log), reads back."""

import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Failure, RespConn, Suite, Writer, b64, check, expect_json,  # noqa: E402
                     unb64, wait_for)

if os.geteuid() != 0:
    print("1..0 # SKIP mounting a tmpfs for a full disk needs root")
    sys.exit(77)

suite = Suite("full_disk")
P = "writer"
NS = "/api/v1/default"
MOUNT = os.path.join(suite.workdir, "disk")
FILLER = os.path.join(MOUNT, "filler")
# raft preallocates its open segments (about 200 MB here); the rest is what the test fills.
DISK_MB = 320
state = {"mounted": False, "acked": {}, "in_flight": None}


def mount():
    os.makedirs(MOUNT, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%dm" % DISK_MB, "tmpfs", MOUNT],
                   check=True, timeout=30)
    state["mounted"] = True


def unmount():
    if state["mounted"]:
        subprocess.run(["umount", "-l", MOUNT], timeout=30)
        state["mounted"] = False


server = None


def start():
    global server
    mount()
    server = Writer(suite.exe, MOUNT, "w",
                    args=["--set", "storage.segment_size=4MiB", "--set", "storage.map_size=16MiB"])
    suite.writers.append(server)
    server.start()
    h = server.http()
    r = h.put(NS + "/kv/before", '{"value":"%s"}' % b64("written before"))
    check(r.status == 200, "PUT before the disk fills: %r" % r, "http")


def free_bytes():
    st = os.statvfs(MOUNT)
    return st.f_bavail * st.f_frsize


def fill_disk(leave):
    """Allocates filler files until about `leave` bytes are free. The writer allocates too (raft
    prepares its next segment in the background), so a piece that no longer fits is retried
    smaller."""
    n = 0
    while free_bytes() > leave + (256 << 10) and n < 64:
        size = free_bytes() - leave
        path = "%s.%d" % (FILLER, n)
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
        try:
            while size > (256 << 10):
                try:
                    os.posix_fallocate(fd, 0, size)
                    break
                except OSError:
                    size //= 2
        finally:
            os.close(fd)
        n += 1


def fill_until_refused():
    """Leaves 2 MiB free, then writes 300 KB values until one is not acknowledged."""
    fill_disk(2 << 20)
    h = server.http()
    for i in range(60):
        value = os.urandom(300000)
        try:
            r = h.put(NS + "/kv/fill%d" % i, '{"value":"%s"}' % b64(value), timeout=5)
        except Failure:
            r = None  # no answer within 5 s
        if r is not None and r.status == 200:
            state["acked"]["fill%d" % i] = value
            continue
        # The write that hit the full disk: its entry is in raft's log and waits to be applied,
        # so its client gets no answer until space returns.
        check(r is None, "the write that filled the disk was answered %r" % r, P)
        state["in_flight"] = ("fill%d" % i, value)
        return
    raise Failure("60 writes of 300 KB fit in 2 MiB of free space", P)


def writes_refused_with_cause():
    h = server.http()
    t0 = time.monotonic()
    r = h.put(NS + "/kv/refused", '{"value":"%s"}' % b64("x"), timeout=20)
    took = time.monotonic() - t0
    doc = expect_json(r, 500, "PUT on a full disk")
    check("no space left on device" in doc.get("error", "").lower(),
          "the refusal does not name the full disk: %r" % doc, P)
    check(took < 10, "the refusal took %.1f s" % took, P)
    c = RespConn(server.ports["resp"])
    try:
        got = c.call("SET", "refused", "x")
    finally:
        c.close()
    check(isinstance(got, Failure) and "no space left on device" in str(got).lower(),
          "RESP SET on a full disk: %r" % (got,), "resp")


def reads_go_on():
    h = server.http()
    doc = expect_json(h.get(NS + "/kv/before"), 200, "GET on a full disk")
    check(unb64(doc["value"]) == b"written before", "GET before: %r" % doc, P)
    for k, v in state["acked"].items():
        doc = expect_json(h.get(NS + "/kv/" + k), 200, "GET " + k)
        check(unb64(doc["value"]) == v, "acknowledged %s reads back different bytes" % k, P)
    check(h.get("/healthz").status == 200, "healthz on a full disk", P)


def writes_resume():
    for name in os.listdir(MOUNT):
        if name.startswith("filler."):
            os.unlink(os.path.join(MOUNT, name))
    h = server.http()

    def put_ok():
        r = h.put(NS + "/kv/after", '{"value":"%s"}' % b64("after"), timeout=10)
        return r.status == 200

    wait_for("a write after space returned", put_ok, timeout=30, interval=0.5)
    doc = expect_json(h.get(NS + "/kv/after"), 200, "GET after")
    check(unb64(doc["value"]) == b"after", "GET after: %r" % doc, P)
    key, value = state["in_flight"]
    doc = expect_json(h.get(NS + "/kv/" + key), 200,
                      "GET of the write in flight when the disk filled (committed in raft)")
    check(unb64(doc["value"]) == value, "the in-flight write reads back different bytes", P)
    for k, v in state["acked"].items():
        doc = expect_json(h.get(NS + "/kv/" + k), 200, "GET " + k)
        check(unb64(doc["value"]) == v, "acknowledged %s reads back different bytes" % k, P)
    server.stop_clean()


try:
    suite.run([start, fill_until_refused, writes_refused_with_cause, reads_go_on, writes_resume])
finally:
    for w in suite.writers:
        try:
            w.kill()
        except Exception:
            pass
    unmount()
    for d in (MOUNT, suite.workdir):
        try:
            os.rmdir(d)  # only when empty: a failed run keeps its logs
        except OSError:
            pass
