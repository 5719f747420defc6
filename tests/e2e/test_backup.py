#!/usr/bin/env python3
"""End to end, backups (docs/http-api.md "Backups"): concurrent btree backups into one path never
answer 200 for a damaged copy, symbolic links under the backup root are refused and never
followed, and wal/backup copies only the segments after afterSegmentId."""

import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Failure, Suite, check, expect_error, expect_json,  # noqa: E402
                     redis_cli, wait_for)

suite = Suite("backup")
# Small WAL segments so that wal/backup has sealed segments to copy; idle namespaces flushed soon,
# so that a btree backup holds every key written.
server = suite.writer("w", args=["--set", "storage.segment_size=1MiB",
                                 "--set", "storage.idle_flush_ms=200"])
suite.server = server

NS = "/api/v1/default"
KEYS = 40000
VALUE = b"v" * 1500


def root():
    return os.path.join(server.data_dir, "backups")


def fill():
    """KEYS keys of 1.5 KB through RESP (~60 MB of LMDB, so that a copy takes a while), then
    waits until they are flushed into LMDB, which is what a btree backup copies."""
    payload = b"".join(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" %
                       (len(k), k, len(VALUE), VALUE)
                       for k in (b"bk:%06d" % i for i in range(KEYS)))
    rc, out, err = redis_cli(server.ports["resp"], "--pipe", stdin=payload, raw=False, timeout=120)
    check(rc == 0 and b"errors: 0" in out, "redis-cli --pipe: rc %d %r %s" % (rc, out[-200:], err))
    h = server.http()
    lsn = expect_json(h.get(NS + "/offset"), 200, "GET offset")["lsn"]
    wait_for("the fill's flush",
             lambda: expect_json(h.get(NS + "/stats"), 200, "GET stats")["flushedLsn"] >= lsn,
             timeout=60, interval=0.1)


def kv_entries(path):
    """Every key of the copy's kv database read back (mdb_dump walks every page): their count,
    or a Failure naming what is wrong with the file."""
    p = subprocess.run(["mdb_dump", "-n", "-s", "kv", path], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=60)
    if p.returncode != 0:
        what = ("killed by signal %d" % -p.returncode if p.returncode < 0 else
                "rc %d" % p.returncode)
        raise Failure("mdb_dump %s: %s: %s" % (path, what, p.stderr.decode().strip()), "backup")
    lines = p.stdout.split(b"\n")
    try:
        body = lines[lines.index(b"HEADER=END") + 1:lines.index(b"DATA=END")]
    except ValueError:
        raise Failure("mdb_dump %s: no complete dump" % path, "backup")
    return len(body) // 2


def curl_backup(rel):
    body = '{"path":"%s"}' % rel
    return subprocess.Popen(["curl", "-sS", "--http1.1", "-o", "-", "-w", "\n%{http_code}",
                             "-H", "Content-Type: application/json", "--data-binary", body,
                             "http://127.0.0.1:%d%s/btree/backup" % (server.ports["http"], NS)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def concurrent_btree():
    fill()
    abs_root = os.path.realpath(os.path.join(root(), "default"))
    # The second request starts while the first one copies (staggered over the first's copy time,
    # measured once): each 200 is checked the moment it arrives, while the other job may still
    # be writing.
    t0 = time.monotonic()
    expect_json(server.http().post(NS + "/btree/backup", '{"path":"race/probe.snapshot"}'), 200,
                "btree backup")
    copy_s = time.monotonic() - t0
    oks = errors = 0
    for rnd in range(8):
        rel = "race/r%d.snapshot" % rnd
        path = os.path.join(abs_root, rel)
        a = curl_backup(rel)
        time.sleep(copy_s * (0.3 + 0.1 * rnd))
        b = curl_backup(rel)
        pending = [a, b]
        published = {}  # inode -> (mtime, size) when a 200 named it
        while pending:
            for p in list(pending):
                if p.poll() is None:
                    continue
                pending.remove(p)
                out = p.stdout.read().decode()
                body, _, code = out.rpartition("\n")
                if code == "200":
                    oks += 1
                    st = os.stat(path)
                    published[st.st_ino] = (st.st_mtime_ns, st.st_size)
                    n = kv_entries(path)  # now, with the other request maybe still copying
                    check(n == KEYS, "round %d: a 200 for %s, whose copy holds %d of %d keys" %
                          (rnd, path, n, KEYS), "backup")
                else:
                    errors += 1
                    check(code in ("409", "500", "503") and '"error"' in body,
                          "round %d: neither 200 nor a clear error: %s %r" % (rnd, code, body),
                          "backup")
            time.sleep(0.002)
        # A file answered with 200 is not written to afterwards (the other request's copy may
        # replace it, as a whole).
        st = os.stat(path)
        check(published.get(st.st_ino, (st.st_mtime_ns, st.st_size)) == (st.st_mtime_ns,
                                                                         st.st_size),
              "round %d: %s was written to after its 200 answer: %r then (%d, %d)" %
              (rnd, path, published.get(st.st_ino), st.st_mtime_ns, st.st_size), "backup")
        n = kv_entries(path)
        check(n == KEYS, "round %d: after both answers %s holds %d of %d keys" % (rnd, path, n,
                                                                                  KEYS), "backup")
        left = [f for f in os.listdir(os.path.dirname(path)) if "tmp" in f]
        check(not left, "round %d: temporary files left behind: %r" % (rnd, left), "backup")
    # Each copy has its own temporary file, and nothing else runs: every request succeeds.
    check(oks == 16, "only %d of 16 concurrent backups succeeded (%d errors)" % (oks, errors),
          "backup")
    print("# concurrent btree backups: %d answered 200, %d errors (one copy %.2f s)" %
          (oks, errors, copy_s))


def symlinks():
    h = server.http()
    outside = os.path.join(server.dir, "outside")
    os.makedirs(outside, exist_ok=True)
    victim = os.path.join(outside, "victim")
    with open(victim, "w") as f:
        f.write("keep me")
    ns_dir = os.path.join(root(), "default")
    os.makedirs(ns_dir, exist_ok=True)

    # A symbolic link in the middle of the path, and as the WAL backup's directory.
    os.symlink(outside, os.path.join(ns_dir, "linked"))
    for route, field in (("/btree/backup", "path"), ("/wal/backup", "backupDir")):
        expect_error(h.post(NS + route, '{"%s":"linked/x"}' % field), 400,
                     "%s through a symbolic link" % route, contains="default/linked")
    expect_error(h.post(NS + "/wal/backup", '{"backupDir":"linked"}'), 400,
                 "wal/backup into a symbolic link", contains="default/linked")
    check(sorted(os.listdir(outside)) == ["victim"],
          "a backup wrote through a symbolic link: %r" % os.listdir(outside), "backup")

    # A symbolic link planted where a temporary file could be named is never written through:
    # the copy goes to a file of its own, created exclusively.
    snaps = os.path.join(ns_dir, "snaps")
    os.makedirs(snaps, exist_ok=True)
    for name in ("s.snapshot.tmp", "s.snapshot.tmp.1", "s.snapshot~tmp"):
        os.symlink(victim, os.path.join(snaps, name))
    doc = expect_json(h.post(NS + "/btree/backup", '{"path":"snaps/s.snapshot"}'), 200,
                      "btree backup next to planted links")
    with open(victim) as f:
        check(f.read() == "keep me", "the backup wrote through a planted link", "backup")
    check(not os.path.islink(doc["path"]) and kv_entries(doc["path"]) == KEYS,
          "btree backup next to planted links: %r" % doc, "backup")

    # A symbolic link at the path itself is replaced by the copy; its target is left alone.
    os.symlink(victim, os.path.join(snaps, "l.snapshot"))
    doc = expect_json(h.post(NS + "/btree/backup", '{"path":"snaps/l.snapshot"}'), 200,
                      "btree backup onto a symbolic link")
    with open(victim) as f:
        check(f.read() == "keep me", "the backup wrote through the link at its path", "backup")
    check(not os.path.islink(doc["path"]) and kv_entries(doc["path"]) == KEYS,
          "btree backup onto a symbolic link: %r" % doc, "backup")

    # A btree path naming an existing directory is the client's mistake, named, and nothing in
    # the directory is touched.
    expect_error(h.post(NS + "/btree/backup", '{"path":"snaps"}'), 400,
                 "btree backup onto a directory", contains="default/snaps is a directory")
    check(os.path.isdir(snaps), "btree backup onto a directory replaced it", "backup")

    # A symbolic link as the namespace's directory under the root.
    os.rename(ns_dir, ns_dir + ".real")
    os.symlink(outside, ns_dir)
    try:
        for route, field in (("/btree/backup", "path"), ("/wal/backup", "backupDir")):
            expect_error(h.post(NS + route, '{"%s":"y"}' % field), 400,
                         "%s with a linked namespace directory" % route, contains="default")
        check(sorted(os.listdir(outside)) == ["victim"],
              "a backup followed the namespace's link: %r" % os.listdir(outside), "backup")
    finally:
        os.unlink(ns_dir)
        os.rename(ns_dir + ".real", ns_dir)


def wal_after():
    h = server.http()
    doc = expect_json(h.post(NS + "/wal/backup", '{"backupDir":"wal/all"}'), 200, "wal backup")
    ids = [b["segmentId"] for b in doc["backups"]]
    check(len(ids) >= 3, "too few sealed segments for the test: %r" % ids, "backup")
    after = ids[-2]
    doc = expect_json(h.post(NS + "/wal/backup", '{"afterSegmentId":%d,"backupDir":"wal/tail"}'
                             % after), 200, "wal backup after %d" % after)
    got = [b["segmentId"] for b in doc["backups"]]
    # Segments sealed since the first backup may follow; none at or before after.
    check(all(i > after for i in got) and set(i for i in ids if i > after) <= set(got),
          "afterSegmentId %d: got %r of %r" % (after, got, ids), "backup")
    tail = os.path.join(root(), "default", "wal", "tail")
    on_disk = sorted(int(f[:10]) for f in os.listdir(tail))
    check(on_disk == sorted(got), "wal/tail holds %r, the answer lists %r" % (on_disk, got),
          "backup")


def concurrent_wal():
    """Two wal/backups into one directory at once: one copies, the other is a 409 (the directory
    is not empty, or a file it was about to create exists) and leaves nothing of its own."""
    url = "http://127.0.0.1:%d%s/wal/backup" % (server.ports["http"], NS)
    for rnd in range(4):
        body = '{"backupDir":"wal/race%d"}' % rnd
        procs = [subprocess.Popen(["curl", "-sS", "--http1.1", "-o", "-", "-w", "\n%{http_code}",
                                   "-H", "Content-Type: application/json", "--data-binary", body,
                                   url], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for _ in range(2)]
        answers = [p.communicate(timeout=120)[0].decode().rpartition("\n") for p in procs]
        codes = sorted(a[2] for a in answers)
        check(codes == ["200", "409"], "round %d: answers %r" % (rnd, answers), "backup")
        ok = [a[0] for a in answers if a[2] == "200"][0]
        listed = sorted(os.path.basename(p) for p in re.findall(r'"path":"([^"]+)"', ok))
        held = sorted(os.listdir(os.path.join(root(), "default", "wal", "race%d" % rnd)))
        check(listed and listed == held, "round %d: the directory holds %r, the 200 lists %r" %
              (rnd, held, listed), "backup")


def start():
    server.start()


start.__name__ = "start"
suite.run([start, concurrent_btree, symlinks, wal_after, concurrent_wal])
