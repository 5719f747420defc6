#!/usr/bin/env python3
"""End to end, RESP: the Redis-protocol front end driven by redis-cli (and a raw socket for
pipelining and binary data): PING, ECHO, HELLO 2, COMMAND, CONFIG GET, INFO, SELECT, GET, SET,
DEL, EXISTS, MGET, MSET, SCAN, HSET/HGET/HMGET/HDEL/HGETALL, refused options, error texts, and
that RESP writes are committed like HTTP writes (visible over HTTP with an LSN)."""

import os
import signal
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Failure, RespConn, Suite, b64, check, expect_json, expect_write,  # noqa
                     redis_cli, resp_command, resp_raw, unb64)

suite = Suite("resp")
server = suite.writer("w")
suite.server = server

P = "resp"


def cli(*args, stdin=None):
    """redis-cli --raw: (exit status, stdout text without the final newline, stderr)."""
    rc, out, err = redis_cli(server.ports["resp"], *args, stdin=stdin)
    return rc, out.decode(errors="replace").rstrip("\n"), err


def ok(*args):
    rc, out, err = cli(*args)
    check(rc == 0 and not out.startswith("ERR") and not out.startswith("WRONGTYPE"),
          "%s: rc %d, %r %r" % (" ".join(map(str, args))[:80], rc, out[:200], err), P)
    return out


def error(*args, contains=None):
    """The command must be refused with an error reply whose text says why (checked on the raw
    protocol: redis-cli prints error replies like any other text)."""
    c = RespConn(server.ports["resp"])
    try:
        r = c.call(*args)
    finally:
        c.close()
    check(isinstance(r, Failure), "%s was accepted: %r" % (" ".join(map(str, args))[:80], r), P)
    text = str(r)
    if contains:
        check(contains.lower() in text.lower(),
              "%s: error %r does not mention %r" % (" ".join(map(str, args))[:80], text[:200],
                                                    contains), P)
    return text


def start():
    server.start()


# --- cases ----------------------------------------------------------------------------------------


def connection_commands():
    check(ok("PING") == "PONG", "PING", P)
    check(ok("PING", "hello") == "hello", "PING hello", P)
    check(ok("ECHO", "a b c") == "a b c", "ECHO", P)
    out = ok("HELLO", "2")
    check("proto" in out and "2" in out, "HELLO 2 reply lacks proto 2: %r" % out, P)
    error("HELLO", "3")
    ok("COMMAND", "COUNT")
    ok("COMMAND")
    ok("COMMAND", "DOCS")
    # What redis-benchmark reads at start.
    for param in ("save", "appendonly"):
        rc, out, err = cli("CONFIG", "GET", param)
        check(rc == 0 and "ERR" not in out, "CONFIG GET %s: %r %r" % (param, out, err), P)
    info = ok("INFO")
    check("# Server" in info or "redis_version" in info or "role" in info,
          "INFO lacks the usual sections: %r" % info[:200], P)
    # What monitoring reads: the memory and persistence sections, with numbers.
    mem = dict(line.split(":", 1) for line in ok("INFO", "memory").splitlines() if ":" in line)
    check(int(mem.get("used_memory", "0")) > 1 << 20 and mem.get("maxmemory") == "0",
          "INFO memory: %r" % mem, P)
    check("loading:0" in ok("INFO", "persistence").splitlines(), "INFO persistence lacks loading:0",
          P)
    # redis-cli itself starts and works when commands come on stdin.
    rc, out, err = redis_cli(server.ports["resp"], stdin=b"PING\nSET stdin-key v\nGET stdin-key\n")
    check(rc == 0 and out.split() == [b"PONG", b"OK", b"v"],
          "redis-cli with commands on stdin: %r %r" % (out, err), P)


def strings():
    check(ok("SET", "k1", "v1") == "OK", "SET", P)
    check(ok("GET", "k1") == "v1", "GET", P)
    check(ok("GET", "never-set") == "", "GET of a missing key is nil", P)
    check(ok("EXISTS", "k1", "never-set", "k1") == "2", "EXISTS counts each argument", P)
    check(ok("MSET", "m1", "a", "m2", "b", "m3", "c") == "OK", "MSET", P)
    check(ok("MGET", "m1", "nope", "m3").split("\n") == ["a", "", "c"], "MGET", P)
    check(ok("DEL", "m1", "m2", "nope") == "2", "DEL counts the keys removed", P)
    check(ok("EXISTS", "m1") == "0", "DEL removed m1", P)
    # Values with spaces, newlines and binary bytes round trip (raw socket: exact bytes).
    c = RespConn(server.ports["resp"])
    try:
        blob = bytes(range(256)) * 40
        check(c.call("SET", b"bin\x00key\xff", blob) == "OK", "binary SET", P)
        check(c.call("GET", b"bin\x00key\xff") == blob, "binary GET differs", P)
        check(c.call("SET", "empty", b"") == "OK", "SET empty", P)
        check(c.call("GET", "empty") == b"", "empty value", P)
    finally:
        c.close()


def refused_options():
    check(ok("SET", "opt", "before") == "OK", "SET", P)
    for opts in (["EX", "10"], ["PX", "100"], ["NX"], ["XX"], ["KEEPTTL"], ["GET"], ["EXAT", "1"]):
        error("SET", "opt", "after", *opts)
    check(ok("GET", "opt") == "before", "a refused SET option changed the value", P)
    error("NOSUCHCOMMAND", "x", contains="unknown command")
    error("GET", contains="wrong number of arguments")
    error("SET", "only-key", contains="wrong number of arguments")
    error("MSET", "a", "b", "c", contains="wrong number of arguments")
    error("HSET", "h", "f", contains="wrong number of arguments")


def hashes():
    check(ok("HSET", "user:1", "name", "Alice", "email", "a@x") == "2", "HSET adds 2 fields", P)
    check(ok("HSET", "user:1", "name", "Alicia") == "0", "HSET of an existing field adds 0", P)
    check(ok("HGET", "user:1", "name") == "Alicia", "HGET", P)
    check(ok("HGET", "user:1", "nope") == "", "HGET of a missing field is nil", P)
    check(ok("HMGET", "user:1", "email", "nope", "name").split("\n") == ["a@x", "", "Alicia"],
          "HMGET", P)
    got = ok("HGETALL", "user:1").split("\n")
    check(dict(zip(got[::2], got[1::2])) == {"name": "Alicia", "email": "a@x"},
          "HGETALL: %r" % got, P)
    check(ok("HDEL", "user:1", "email", "nope") == "1", "HDEL counts removed fields", P)
    check(ok("HGETALL", "user:1").split("\n") == ["name", "Alicia"], "HGETALL after HDEL", P)
    check(ok("HGETALL", "no-such-row") == "", "HGETALL of a missing row is empty", P)

    # Rows written over RESP are the HTTP API's rows, and the other way round.
    h = server.http()
    doc = expect_json(h.get("/api/v1/default/row/user:1"), 200, "HTTP GET of a RESP row", P)
    check({k: unb64(v) for k, v in doc["columns"].items()} == {"name": b"Alicia"},
          "HTTP sees another row: %r" % doc, P)
    expect_write(h.put("/api/v1/default/row/user:2", '{"columns":{"c":"%s"}}' % b64("http")),
                 "HTTP PUT row")
    check(ok("HGET", "user:2", "c") == "http", "RESP does not see the HTTP row", P)


def scan():
    ok("MSET", *sum([["scan:%03d" % i, str(i)] for i in range(120)], []))
    ok("SET", "scanx", "not matched")
    cursor, seen, rounds = "0", [], 0
    while True:
        out = ok("SCAN", cursor, "MATCH", "scan:*", "COUNT", "25").split("\n")
        cursor, keys = out[0], [k for k in out[1:] if k]
        check(len(keys) <= 25, "SCAN COUNT 25 returned %d keys" % len(keys), P)
        seen += keys
        rounds += 1
        if cursor == "0" or rounds > 50:
            break
    check(sorted(seen) == ["scan:%03d" % i for i in range(120)],
          "SCAN MATCH scan:* returned %d keys (%r...)" % (len(seen), sorted(seen)[:5]), P)
    check(len(seen) == len(set(seen)), "SCAN returned duplicates", P)
    error("SCAN", "0", "MATCH", "*scan", contains="prefix")
    error("SCAN", "not-a-cursor")


def select():
    h = server.http()
    for ns in ("aaa_first", "zzz_last"):
        r = h.put("/api/v1/" + ns)
        check(r.status in (200, 409), "create namespace %s: %r" % (ns, r), "http")
    c = RespConn(server.ports["resp"])
    try:
        check(c.call("SELECT", "zzz_last") == "OK", "SELECT by name", P)
        check(c.call("SET", "sel", "in-zzz") == "OK", "SET in zzz_last", P)
        # Index 0 is the default namespace (where connections start), then name order.
        check(c.call("SELECT", "1") == "OK", "SELECT 1", P)  # aaa_first sorts first of the rest
        check(c.call("GET", "sel") is None, "namespaces are not isolated over RESP", P)
        check(c.call("SET", "sel", "in-aaa") == "OK", "SET in aaa_first", P)
        r = c.call("SELECT", "no_such_namespace")
        check(isinstance(r, Failure), "SELECT of an unknown namespace was accepted", P)
        r = c.call("SELECT", "999")
        check(isinstance(r, Failure), "SELECT of an index past the namespaces was accepted", P)
        check(c.call("GET", "sel") == b"in-aaa", "a refused SELECT changed the namespace", P)
    finally:
        c.close()
    for ns, want in (("zzz_last", "in-zzz"), ("aaa_first", "in-aaa")):
        doc = expect_json(h.get("/api/v1/%s/kv/sel" % ns), 200, "HTTP GET in " + ns, P)
        check(unb64(doc["value"]) == want.encode(), "HTTP sees %r in %s" % (doc, ns), P)
    check(ok("GET", "sel") == "", "a new connection starts in the default namespace", P)
    # redis-cli -n N: -n 0 sends no SELECT (db 0 is where a connection starts), so index 0 must be
    # that namespace; -n 1 is the first of the others in name order.
    check(ok("-n", "0", "SET", "by-index", "zero") == "OK", "redis-cli -n 0 SET", P)
    check(ok("-n", "1", "SET", "by-index", "one") == "OK", "redis-cli -n 1 SET", P)
    for ns, want in (("default", b"zero"), ("aaa_first", b"one")):
        doc = expect_json(h.get("/api/v1/%s/kv/by-index" % ns), 200, "HTTP GET in " + ns, P)
        check(unb64(doc["value"]) == want, "redis-cli -n wrote %r into %s" % (doc, ns), P)
    rc, out, err = cli("INFO", "namespaces")
    lines = [l for l in out.splitlines() if l.startswith("ns_")]
    check(lines and lines[0].startswith("ns_default:index=0,") and
          lines[1].startswith("ns_aaa_first:index=1,"), "INFO namespaces order: %r" % lines, P)


def pipelining():
    c = RespConn(server.ports["resp"])
    try:
        n = 2000
        c.send(b"".join(resp_command("SET", "pipe:%d" % i, "v%d" % i) for i in range(n)))
        replies = [c.reply() for _ in range(n)]
        check(replies == ["OK"] * n, "pipelined SETs: %r" % [r for r in replies if r != "OK"][:3],
              P)
        c.send(b"".join(resp_command("GET", "pipe:%d" % i) for i in range(n)) +
               resp_command("PING"))
        replies = [c.reply() for _ in range(n + 1)]
        check(replies[:n] == [b"v%d" % i for i in range(n)] and replies[n] == "PONG",
              "pipelined GETs answered out of order or wrong", P)
    finally:
        c.close()
    # Mass insertion the way redis documents it.
    data = b"".join(resp_command("SET", "mass:%d" % i, str(i)) for i in range(500))
    rc, out, err = redis_cli(server.ports["resp"], "--pipe", stdin=data, raw=False)
    check(rc == 0 and b"errors: 0" in out and b"replies: 500" in out,
          "redis-cli --pipe: %r %r" % (out, err), P)
    check(ok("GET", "mass:499") == "499", "mass insertion value", P)


def mget_sees_mset_whole():
    """An MSET is one record: an MGET of its keys sees all of it or none of it, even while the
    record is being applied between two of the keys (MSETs pipelined on one connection, MGETs on
    another, for a few seconds). The values are large enough that raft's entries are applied on
    the apply thread, concurrently with the MGETs on the loop."""
    keys = ["whole:%02d" % i for i in range(64)]
    stop = threading.Event()
    errors = []

    def writer():
        c = RespConn(server.ports["resp"])
        try:
            i = 0
            while not stop.is_set():
                cmds = []
                for _ in range(20):
                    i += 1
                    args = ["MSET"]
                    for k in keys:
                        args += [k, "%08d" % i + "v" * 1024]
                    cmds.append(resp_command(*args))
                c.send(b"".join(cmds))
                for _ in cmds:
                    r = c.reply()
                    if r != "OK":
                        errors.append("MSET: %r" % (r,))
                        return
        except Exception as e:  # reported by the main thread
            errors.append("MSET connection: %r" % e)
        finally:
            c.close()

    t = threading.Thread(target=writer)
    t.start()
    torn = []
    seen = set()
    c = RespConn(server.ports["resp"])
    try:
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline and not errors:
            c.send(b"".join(resp_command("MGET", *keys) for _ in range(20)))
            for _ in range(20):
                r = c.reply()
                values = set(r)
                if len(values) > 1:
                    torn.append(sorted((v or b"")[:8] for v in values)[:4])
                seen.update(values)
    finally:
        stop.set()
        t.join()
        c.close()
    check(not errors, "concurrent MSETs failed: %s" % errors[:1], P)
    check(len(seen) > 100, "too few MSETs were seen for the check to mean anything: %d" % len(seen),
          P)
    check(not torn, "%d MGETs saw part of an MSET, e.g. values %r" % (len(torn), torn[:2]), P)


def large_replies():
    """Replies larger than the socket buffers: pipelined GETs of big values, and one big value."""
    c = RespConn(server.ports["resp"])
    try:
        values = {"big:%d" % i: os.urandom(100000) for i in range(50)}
        c.send(b"".join(resp_command("SET", k, v) for k, v in values.items()))
        check([c.reply() for _ in values] == ["OK"] * len(values), "pipelined big SETs", P)
        c.send(b"".join(resp_command("GET", k) for k in values))
        got = [c.reply() for _ in values]
        check(got == list(values.values()), "pipelined GETs of 50 x 100 KB differ", P)
        small = {"mid:%d" % i: os.urandom(3000) for i in range(1000)}
        c.send(b"".join(resp_command("SET", k, v) for k, v in small.items()))
        check([c.reply() for _ in small] == ["OK"] * len(small), "pipelined SETs", P)
        c.send(b"".join(resp_command("GET", k) for k in small))
        got = [c.reply() for _ in small]
        check(got == list(small.values()), "pipelined GETs of 1000 x 3 KB differ", P)
        blob = os.urandom(768 * 1024)
        check(c.call("SET", "huge", blob) == "OK", "SET of 768 KiB", P)
        check(c.call("GET", "huge") == blob, "GET of 768 KiB differs", P)
    finally:
        c.close()


def committed_like_http():
    h = server.http()
    ok("SET", "lsn-check", "one")
    a = expect_json(h.get("/api/v1/default/kv/lsn-check"), 200, "HTTP GET of a RESP SET", P)
    check(unb64(a["value"]) == b"one" and isinstance(a.get("lsn"), int) and a["lsn"] > 0,
          "RESP SET not visible over HTTP with an LSN: %r" % a, P)
    ok("SET", "lsn-check", "two")
    b = expect_json(h.get("/api/v1/default/kv/lsn-check"), 200, "HTTP GET", P)
    check(b["lsn"] > a["lsn"], "second RESP SET did not take a higher LSN", P)
    expect_write(h.put("/api/v1/default/kv/from-http", '{"value":"%s"}' % b64("h")), "HTTP PUT")
    check(ok("GET", "from-http") == "h", "RESP does not see an HTTP write", P)
    ok("DEL", "lsn-check")
    r = h.get("/api/v1/default/kv/lsn-check")
    check(r.status == 404, "RESP DEL not visible over HTTP: %r" % r, P)


def configured_limits():
    """[resp] max_clients, idle_timeout_ms, max_output and max_pending from the configuration file
    are what the server enforces and reports (CONFIG GET, INFO)."""
    w = suite.writer("limits", config="[resp]\nmax_clients = 2\nidle_timeout_ms = 1500\n"
                                      "max_output = \"64KiB\"\nmax_pending = 8\n")
    w.start()
    port = w.ports["resp"]
    conns = []
    try:
        a, b = RespConn(port), RespConn(port)
        conns += [a, b]
        check(a.call("CONFIG", "GET", "maxclients") == [b"maxclients", b"2"],
              "CONFIG GET maxclients", P)
        check(b.call("CONFIG", "GET", "timeout") == [b"timeout", b"2"],
              "CONFIG GET timeout: 1500 ms is 2 s in Redis's seconds", P)
        # A third connection is over max_clients: Redis's error, then the connection closes.
        got = resp_raw(port, resp_command("PING"), expect_close=True)
        check(got == b"-ERR max number of clients reached\r\n",
              "third client with max_clients = 2: %r" % got, P)
        # An idle connection is closed after idle_timeout_ms (checked once a second or faster).
        a.send(resp_command("PING"))
        check(a.reply() == "PONG", "PING before idling", P)
        t0 = time.monotonic()
        a.s.settimeout(10)
        try:
            left = a.s.recv(10)
        except ConnectionResetError:
            left = b""
        idle = time.monotonic() - t0
        check(left == b"" and 1.2 < idle < 4.0,
              "idle connection: got %r after %.1f s, expected a close after ~1.5 s" % (left, idle),
              P)
        # With max_output = 64 KiB and max_pending = 8, a pipeline of many writes and large reads
        # is still answered completely and in order (reading pauses, nothing is dropped).
        c = RespConn(port)
        conns.append(c)
        big = b"v" * 100000
        n = 60
        c.send(b"".join(resp_command("SET", "lim:%d" % i, big + b"%d" % i) for i in range(n)) +
               b"".join(resp_command("GET", "lim:%d" % i) for i in range(n)))
        replies = [c.reply() for _ in range(2 * n)]
        check(replies[:n] == ["OK"] * n, "pipelined SETs: %r" % [r for r in replies[:n]
                                                                 if r != "OK"][:3], P)
        bad = [i for i in range(n) if replies[n + i] != big + b"%d" % i]
        check(not bad, "pipelined GETs %r answered wrong values" % bad[:5], P)
    finally:
        for c in conns:
            c.close()
    w.stop_clean()


def stop_with_slow_reader():
    """SIGTERM while a client that reads slowly, and keeps sending, has pipelined GETs of large
    values: the replies the server sent reach the client whole and the connection ends with a
    clean close, not a reset that throws away replies already sent (closing a socket with unread
    input resets it). The writer exits 0."""
    w = suite.writer("slowreader")
    w.start()
    value = os.urandom(256 << 10)
    c = RespConn(w.ports["resp"])
    check(c.call("SET", "big", value) == "OK", "SET of 256 KiB", P)
    c.close()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    sock.connect(("127.0.0.1", w.ports["resp"]))
    get = resp_command("GET", "big")
    sending = threading.Event()
    sending.set()

    def keep_sending():
        try:
            while sending.is_set():
                sock.sendall(get * 8)
        except OSError:
            pass  # the server closed the connection
    sender = threading.Thread(target=keep_sending, daemon=True)
    sender.start()
    got = bytearray()
    ended = None
    term_at = None
    try:
        while ended is None:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                ended = "reset"
                break
            if not chunk:
                ended = "closed"
                break
            got += chunk
            if len(got) >= (1 << 20) and term_at is None:
                w.signal(signal.SIGTERM)
                term_at = time.monotonic()
            time.sleep(0.001)  # slow, yet well within the RESP stop's 5 s for what is left
    finally:
        sending.clear()
        sock.close()
        sender.join(10)
    one = b"$%d\r\n%s\r\n" % (len(value), value)
    whole, rest = divmod(len(got), len(one))
    print("    %d bytes: %d whole replies and %d bytes more, then %s %.1f s after SIGTERM" %
          (len(got), whole, rest, ended, time.monotonic() - (term_at or time.monotonic())))
    check(ended == "closed" and rest == 0 and got == one * whole,
          "a slow reader stopped mid-pipeline: %d whole replies and %d bytes more, then %s" %
          (whole, rest, ended), P)
    status = w.proc.wait(60)
    check(status == 0, "exit status %s after SIGTERM:\n%s" % (status, w.log_tail(8)), P)


suite.run([start, connection_commands, strings, refused_options, hashes, scan, select, pipelining,
           mget_sees_mset_whole, large_replies, committed_like_http, configured_limits,
           stop_with_slow_reader])
