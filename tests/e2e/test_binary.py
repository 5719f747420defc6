#!/usr/bin/env python3
"""End to end, the binary itself: --version, --help, flag and configuration errors (file, line and
key), the deploy/ examples, the zero-config default, the ports file and log lines, the data
directory lock, and the graceful stop on SIGTERM/SIGINT (in-flight requests finish, exit 0) with
a second signal exiting at once; the open files limit raised."""

import http.client
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Failure, Suite, b64, check, crash_part, expect_json, expect_write,  # noqa
                     redis_cli, wait_for)

suite = Suite("binary")
SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
P = "writer"


def run(*args, cwd=None, timeout=30):
    p = subprocess.run([suite.exe] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       cwd=cwd, timeout=timeout, stdin=subprocess.DEVNULL)
    return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")


def write(name, text):
    path = os.path.join(suite.workdir, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def version_and_help():
    rc, out, err = run("--version")
    check(rc == 0 and re.fullmatch(r"unison-writer \d+\.\d+\.\d+\n", out),
          "--version: rc %d, %r %r" % (rc, out, err), P)
    rc, out, err = run("--help")
    check(rc == 0 and out.startswith("Usage: unison-writer"), "--help: rc %d %r" % (rc, out), P)
    for flag in ("--config", "--data-dir", "--http", "--resp", "--raft", "--ports-file",
                 "--log-level", "--version", "--help"):
        check(flag in out, "--help does not mention %s" % flag, P)


def bad_flags():
    for args, want in [(["--bogus"], "unknown option --bogus"),
                       (["--http"], "--http needs a value"),
                       (["stray"], "unexpected argument stray"),
                       (["--http", "localhost:80"], "not an IP address"),
                       (["--http", "127.0.0.1:99999"], "above 65535"),
                       (["--raft", "[::1]:4100"], "IPv4"),
                       (["--log-level", "loud"], "debug, info, warn, error"),
                       (["--set", "raft.nodeid=2"], "did you mean node_id"),
                       (["--set", "storage.sync_mode"], "SECTION.KEY=VALUE"),
                       (["--config", os.path.join(suite.workdir, "missing.toml")],
                        "No such file")]:
        rc, out, err = run(*args)
        check(rc == 2, "%r: exit status %d, expected 2" % (args, rc), P)
        check(want in err, "%r: message %r lacks %r" % (args, err.strip(), want), P)
    # The environment's log level is checked as the flag is (the logger would take it as info).
    p = subprocess.run([suite.exe, "--check-config"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, timeout=30,
                       env=dict(os.environ, UD_LOG_LEVEL="verbose"))
    check(p.returncode == 2 and b"UD_LOG_LEVEL=verbose: expected debug, info, warn or error"
          in p.stderr, "UD_LOG_LEVEL=verbose: rc %d %r" % (p.returncode, p.stderr), P)


def config_errors():
    cases = [
        ("[server]\nlog_level = \"info\"\n\n[raft]\nnodeid = 2\n", 5,
         "[raft] unknown key nodeid (did you mean node_id?)"),
        ("[server]\n[servr]\n", 2, "unknown section [servr]"),
        ("[raft]\npeers = [\n  \"1@127.0.0.1:4101\",\n  \"two@127.0.0.1:4102\",\n]\n", 4,
         "[raft] peers: \"two@127.0.0.1:4102\""),
        ("[http]\nmax_body = 99999999\n", 2, "[http] max_body: 99999999 is out of range"),
        ("[storage]\nsync_mode = \"sometimes\"\n", 2, "[storage] sync_mode"),
        ("[write]\ncommit_max_inflight = \"4\"\n", 2,
         "[write] commit_max_inflight: expected an integer, found a string"),
        ("[server]\ndata_dir = \"x\" # ok\nports_file = 'p' junk\n", 3, "unexpected 'j'"),
        ("[raft]\nnode_id = 1.5\n", 2, "floats are not supported"),
    ]
    for text, line, want in cases:
        path = write("bad.toml", text)
        rc, out, err = run("--config", path, "--check-config")
        check(rc == 2, "config %r: exit status %d, expected 2 (%s)" % (text, rc, err.strip()), P)
        prefix = "%s:%d: " % (path, line)
        check(prefix in err and want in err, "config %r: message %r lacks %r and %r" %
              (text, err.strip(), prefix, want), P)
    # Cross-key checks name the keys.
    path = write("cross.toml", "[raft]\nnode_id = 4\npeers = [\"1@127.0.0.1:4101\"]\n")
    rc, out, err = run("--config", path, "--check-config")
    check(rc == 2 and "node_id 4 is not among them" in err, "node_id not in peers: %r" % err, P)
    # The reserved [relayer] section is accepted by the writer.
    path = write("relayer.toml", "[relayer]\nupstreams = [\"http://127.0.0.1:4000\"]\n")
    rc, out, err = run("--config", path, "--check-config")
    check(rc == 0 and "configuration ok" in out, "[relayer] section refused: %r" % err, P)


def deploy_examples():
    deploy = os.path.join(SRC, "deploy")
    files = sorted(f for f in os.listdir(deploy) if f.endswith(".toml"))
    check(files, "no example configuration in deploy/", P)
    for f in files:
        rc, out, err = run("--config", os.path.join(deploy, f), "--check-config")
        check(rc == 0, "deploy/%s: %s" % (f, err.strip()), P)


def port_free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def zero_config():
    """No arguments: ./unison-data, HTTP 4000, RESP 6380, raft 4100, namespace default."""
    busy = [p for p in (4000, 6380, 4100) if not port_free(p)]
    if busy:
        print("    skipped: default ports %r are in use on this machine" % busy)
        return
    cwd = os.path.join(suite.workdir, "zero")
    os.makedirs(cwd)
    log = open(os.path.join(cwd, "server.log"), "wb")
    proc = subprocess.Popen([suite.exe], cwd=cwd, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    try:
        def ready():
            # A 404 for a key of the namespace, not for the namespace: the writer creates it
            # through raft once it leads, a log write after its HTTP port opens.
            if proc.poll() is not None:
                raise Failure("exited with %d" % proc.returncode, P)
            r = subprocess.run(["curl", "-s", "-w", " %{http_code}",
                                "http://127.0.0.1:4000/api/v1/default/kv/probe"],
                               stdout=subprocess.PIPE)
            return r.stdout.endswith(b" 404") and b"namespace not found" not in r.stdout
        wait_for("the zero-config writer on 127.0.0.1:4000", ready, 30, 0.1)
        r = subprocess.run(["curl", "-s", "-X", "PUT", "http://127.0.0.1:4000/api/v1/default/kv/z",
                            "-d", '{"value":"%s"}' % b64("zero")], stdout=subprocess.PIPE)
        check(b'"success":true' in r.stdout.replace(b" ", b""), "PUT on :4000: %r" % r.stdout,
              "http")
        rc, out, err = redis_cli(6380, "GET", "z")
        check(out.strip() == b"zero", "RESP on :6380: %r %r" % (out, err), "resp")
        with socket.create_connection(("127.0.0.1", 4100), timeout=5):
            pass
        check(os.path.isdir(os.path.join(cwd, "unison-data")), "no ./unison-data", P)
        proc.send_signal(signal.SIGINT)
        status = proc.wait(60)
        if status != 0:
            with open(os.path.join(cwd, "server.log")) as f:
                tail = "\n".join(f.read().splitlines()[-8:])
            raise Failure("SIGINT: exit status %r:\n%s" % (status, tail), crash_part(tail))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


def ports_and_logs():
    w = suite.writer("logs", args=["--log-level", "info"])
    w.start()
    with open(w.ports_file) as f:
        ports = json.load(f)
    check(set(ports) == {"http", "resp", "raft", "https"} and ports["https"] is None,
          "ports file %r" % ports, P)
    with open(w.log_path) as f:
        log = f.read()
    for name in ("http", "resp", "raft"):
        check(re.search(r"listening: %s on 127\.0\.0\.1:%d\b" % (name, ports[name]), log),
              "no log line for the bound %s listener (port %d)" % (name, ports[name]), P)
    # One line per event: timestamp, level, module, message.
    for line in log.splitlines():
        if line.startswith("=====") or not line.strip():
            continue
        check(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (debug|info|warn|error) \S+ ",
                       line), "log line without timestamp, level and module: %r" % line, P)
    # A second process on the same data directory is refused, naming the lock.
    rc, out, err = run("--data-dir", w.data_dir, "--http", "127.0.0.1:0", "--resp", "127.0.0.1:0",
                       "--raft", "127.0.0.1:0")
    check(rc == 1 and "in use" in err, "second writer on one data dir: rc %d %r" %
          (rc, err[-300:]), P)
    w.stop_clean("SIGTERM")
    check(not os.path.exists(w.ports_file), "ports file left after the stop", P)
    with open(w.log_path) as f:
        log = f.read()
    check("stopped (exit status 0)" in log, "no final log line", P)

    # --log-level error: no info lines.
    w = suite.writer("quiet", args=["--log-level", "error"])
    w.start()
    w.stop_clean("SIGTERM")
    with open(w.log_path) as f:
        lines = [l for l in f.read().splitlines() if l and not l.startswith("=====")]
    check(not [l for l in lines if " info " in l or " debug " in l],
          "--log-level error still logs info lines: %r" % lines[:3], P)


def graceful_stop():
    """SIGTERM during a slow download: the response completes, new connections are refused, and
    the process exits 0."""
    w = suite.writer("graceful")
    w.start()
    h = w.http()
    txn = expect_write(h.post("/api/v1/default/tx/begin", '{"operation":"put","entryType":"lob"}'),
                       "begin")["txnId"]
    data = os.urandom(12 << 20)  # more than the socket buffers hold: still in flight at SIGTERM
    for off in range(0, len(data), 1 << 20):
        expect_write(h.post("/api/v1/default/tx/%s/lob?key=slow&offset=%d" % (txn, off),
                            data[off:off + (1 << 20)],
                            headers=["Content-Type: application/octet-stream"]), "chunk")
    expect_write(h.post("/api/v1/default/tx/%s/commit" % txn), "commit")

    s = socket.create_connection(("127.0.0.1", w.ports["http"]), timeout=30)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s.sendall(b"GET /api/v1/default/lob?key=slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    first = s.recv(4096)
    check(first.startswith(b"HTTP/1.1 200"), "slow download: %r" % first[:60], "http")
    w.signal(signal.SIGTERM)
    time.sleep(0.5)
    # New connections are not served any more.
    refused = False
    try:
        with socket.create_connection(("127.0.0.1", w.ports["http"]), timeout=2) as c:
            c.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            refused = c.recv(100) == b""
    except OSError:
        refused = True
    check(refused, "a new connection was served after SIGTERM", "http")
    check(w.alive(), "the process exited before the in-flight download finished", P)
    body = first
    while True:
        b = s.recv(1 << 16)
        if not b:
            break
        body += b
    s.close()
    payload = body.split(b"\r\n\r\n", 1)[1]
    check(len(payload) >= len(data) and data in payload,
          "the in-flight download was cut at %d of %d bytes" % (len(payload), len(data)), "http")
    status = w.proc.wait(60)
    check(status == 0, "exit status %d after a graceful stop:\n%s" % (status, w.log_tail(8)),
          crash_part(w.log_tail(8)))


def stop_with_idle_keepalive():
    """Idle HTTP/1.1 keep-alive connections (a client's pool after its requests, and one that
    never sent a byte) do not hold a graceful stop: exit 0 well before h2o's 10 s idle timeout."""
    w = suite.writer("idle")
    w.start()
    pooled = http.client.HTTPConnection("127.0.0.1", w.ports["http"], timeout=30)
    for _ in range(2):
        pooled.request("GET", "/healthz")
        r = pooled.getresponse()
        check(r.status == 200 and r.getheader("connection", "").lower() != "close",
              "keep-alive GET /healthz: %d %r" % (r.status, r.getheader("connection")), "http")
        r.read()
    silent = socket.create_connection(("127.0.0.1", w.ports["http"]), timeout=30)
    time.sleep(0.2)
    t0 = time.monotonic()
    w.signal(signal.SIGTERM)
    try:
        status = w.proc.wait(15)
    except subprocess.TimeoutExpired:
        w.kill()
        raise Failure("still running 15 s after SIGTERM with idle keep-alive connections", P)
    took = time.monotonic() - t0
    pooled.close()
    silent.close()
    check(status == 0, "exit status %d:\n%s" % (status, w.log_tail(8)), P)
    check(took < 5, "idle keep-alive connections held the stop for %.1f s" % took, "http")


def second_signal():
    """A request that never finishes holds the stop; the second signal exits at once."""
    w = suite.writer("second")
    w.start()
    s = socket.create_connection(("127.0.0.1", w.ports["http"]), timeout=30)
    # Half a request body: the server waits for the rest, so this request stays in flight.
    s.sendall(b"PUT /api/v1/default/kv/x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    time.sleep(0.3)
    w.signal(signal.SIGTERM)
    time.sleep(1.0)
    t0 = time.monotonic()
    w.signal(signal.SIGINT)
    try:
        w.proc.wait(10)
    except subprocess.TimeoutExpired:
        raise Failure("still running 10 s after a second signal", P)
    check(time.monotonic() - t0 < 5, "the second signal did not exit at once", P)
    s.close()
    # The data directory is usable again right away.
    w.start()
    w.stop_clean("SIGTERM after the restart")


def open_files_raised():
    """Started with a soft limit of 256 open files, the writer raises it to the hard limit (it
    holds two descriptors per HTTP connection): 300 clients connected at once are all answered."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 1024:
        print("    skipped: the hard limit of open files is %d" % hard)
        return
    w = suite.writer("nofile")
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        w.start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    with open("/proc/%d/limits" % w.proc.pid) as f:
        row = [line.split() for line in f if line.startswith("Max open files")][0]
    check(row[3] == row[4] == str(hard), "the writer's open files limit: %s" % row, P)
    conns = []
    try:
        for _ in range(300):
            c = http.client.HTTPConnection("127.0.0.1", w.ports["http"], timeout=30)
            c.connect()
            conns.append(c)
        answered = 0
        for c in conns:
            c.request("GET", "/healthz")
            r = c.getresponse()
            r.read()
            answered += r.status == 200
        check(answered == len(conns), "%d of %d connections answered 200" %
              (answered, len(conns)), "http")
    finally:
        for c in conns:
            c.close()
    w.stop_clean()


suite.run([version_and_help, bad_flags, config_errors, deploy_examples, zero_config,
           ports_and_logs, graceful_stop, stop_with_idle_keepalive, second_signal,
           open_files_raised])
