#!/usr/bin/env python3
"""End to end, malformed input: broken JSON, bad base64, bodies of exactly 1 MiB and 1 MiB + 1
(HTTP/1.1, chunked, h2c), keys of 0 and 512 bytes, '..' and '%2e%2e' in keys, namespaces and
backup paths, unknown namespaces and transactions, garbage and truncated RESP frames, and slow
clients. Each gets its documented error, and after each the server still serves HTTP and RESP."""

import json
import os
import socket
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Suite, b64, check, expect, expect_error, expect_json, expect_write,  # noqa
                     redis_cli, resp_command, resp_raw, unb64)

suite = Suite("malformed")
server = suite.writer("w")
suite.server = server

NS = "/api/v1/default"
MIB = 1 << 20


def both():
    return [(server.http(False), "h1"), (server.http(True), "h2")]


def still_serves():
    """HTTP over both protocols and RESP answer normally."""
    for h, proto in both():
        expect_write(h.put(NS + "/kv/alive", '{"value":"%s"}' % b64(proto)), "PUT after the case")
        doc = expect_json(h.get(NS + "/kv/alive"), 200, "GET after the case")
        check(unb64(doc["value"]) == proto.encode(), "GET after the case: wrong value")
    rc, out, err = redis_cli(server.ports["resp"], "PING")
    check(rc == 0 and out.strip() == b"PONG", "RESP PING after the case: %r %r" % (out, err), "resp")


def start():
    server.start()


# --- JSON and base64 ------------------------------------------------------------------------------


def broken_json():
    bodies = ["", "{", "}", "[]", "null", "42", '"value"', '{"value":"%s"} trailing' % b64("x"),
              '{"value":"%s",}' % b64("x"), "{'value':'eA=='}", '{"value":"eA==" "x":1}',
              '{"value":"\\ud800"}', "\xff\xfe{}", "[" * 100000 + "]" * 100000,
              '{"value":' + '{"a":' * 5000 + "1" + "}" * 5000 + "}"]
    for h, proto in both():
        for body in bodies:
            b = body.encode("latin-1") if body.startswith("\xff") else body.encode()
            expect_error(h.put(NS + "/kv/json", b), 400, "%s PUT kv with body %r" %
                         (proto, body[:40]))
        for path, body in [("/kv/batch", '{"operation":"put","items":{}}'),
                           ("/kv/batch", '{"operation":"put","items":[{"key":1,"value":""}]}'),
                           ("/kv/batch", '{"operation":"delete","keys":"k"}'),
                           ("/row/batch", '{"operation":"put","rows":[{"columns":{}}]}'),
                           ("/tx/begin", "{"), ("/wal/backup", "[1,2]"),
                           ("/btree/backup", '{"path":7}')]:
            expect_error(h.post(NS + path, body), 400, "%s POST %s %r" % (proto, path, body))
        expect_error(h.put(NS + "/row/json", '{"columns":[1,2]}'), 400, proto + " row columns list")
        # A UTF-8 byte order mark before the JSON is ignored (RFC 8259 section 8.1); one anywhere
        # else is not JSON, and a BOM alone is an empty body.
        expect(h.put(NS + "/kv/bom", b"\xef\xbb\xbf" + ('{"value":"%s"}' % b64(proto)).encode()),
               200, proto + " PUT kv with a UTF-8 BOM")
        check(unb64(expect_json(h.get(NS + "/kv/bom"), 200, "GET kv bom")["value"]) ==
              proto.encode(), proto + ": the body after the BOM was not the one written")
        expect_error(h.put(NS + "/kv/bom", b" \xef\xbb\xbf{}"), 400, proto + " BOM after a space")
        expect_error(h.put(NS + "/kv/bom", b"\xef\xbb\xbf"), 400, proto + " a BOM alone", "empty")
        # A byte that is not UTF-8 inside the value makes the body malformed JSON, and the answer
        # says so rather than blaming the base64.
        expect_error(h.put(NS + "/kv/utf8", b'{"value":"\xff"}'), 400,
                     proto + " PUT kv with a byte that is not UTF-8", "malformed JSON")
    still_serves()


def bad_base64():
    for h, proto in both():
        for bad in ["abc", "a===", "@@@@", "eA=", "eA==eA==", "e A==", "eA==\n", "\u00e9\u00e9=="]:
            expect_error(h.put(NS + "/kv/b64", json.dumps({"value": bad})), 400,
                         "%s PUT kv value %r" % (proto, bad), "base64")
        expect_error(h.post(NS + "/kv/batch", '{"operation":"put","items":[{"key":"k",'
                            '"value":"!!"}]}'), 400, proto + " batch with bad base64", "base64")
        expect_error(h.put(NS + "/row/b64", '{"columns":{"c":"***"}}'), 400,
                     proto + " row with bad base64", "base64")
        # Nothing half-written: the key never appeared.
        expect(h.get(NS + "/kv/b64"), 404, proto + " GET after refused writes")
    still_serves()


# --- body limit -----------------------------------------------------------------------------------


def kv_body(total):
    """A PUT kv body of exactly total bytes: {"value":"<base64>"} padded with JSON whitespace."""
    raw = (total - 12) // 4 * 3
    body = '{"value":"%s"}' % b64(os.urandom(raw))
    body += " " * (total - len(body))
    assert len(body) == total
    return body


def body_limit():
    exact, over = kv_body(MIB), kv_body(MIB + 1)
    for h, proto in both():
        expect_write(h.put(NS + "/kv/big-" + proto, exact), proto + " PUT of exactly 1 MiB")
        doc = expect_json(h.get(NS + "/kv/big-" + proto), 200, proto + " GET of the 1 MiB value")
        check(len(unb64(doc["value"])) == (MIB - 12) // 4 * 3, "1 MiB value came back wrong")
        expect_error(h.put(NS + "/kv/over-" + proto, over), 413, proto + " PUT of 1 MiB + 1")
        expect(h.get(NS + "/kv/over-" + proto), 404, proto + " refused body was not written")
        expect_error(h.put(NS + "/kv/over3-" + proto, kv_body(3 * MIB)), 413, proto + " PUT of 3 MiB")
        # A LOB chunk of exactly 1 MiB is the seed's own example; one byte more is refused.
        txn = expect_write(h.post(NS + "/tx/begin", '{"operation":"put","entryType":"lob"}'),
                           "begin")["txnId"]
        expect_write(h.post(NS + "/tx/%s/lob?key=big-lob-%s" % (txn, proto), os.urandom(MIB),
                            headers=["Content-Type: application/octet-stream"]),
                     proto + " LOB chunk of exactly 1 MiB")
        expect_error(h.post(NS + "/tx/%s/lob?key=big-lob-%s" % (txn, proto), os.urandom(MIB + 1),
                            headers=["Content-Type: application/octet-stream"]), 413,
                     proto + " LOB chunk of 1 MiB + 1")
        expect_write(h.post(NS + "/tx/%s/abort" % txn), "abort")

    # HTTP/1.1 chunked uploads: the limit counts the decoded body, inclusive.
    h = server.http(False)
    expect_write(h.put(NS + "/kv/chunked", exact, headers=["Transfer-Encoding: chunked"]),
                 "chunked PUT of exactly 1 MiB")
    expect_error(h.put(NS + "/kv/chunked-over", over, headers=["Transfer-Encoding: chunked"]),
                 413, "chunked PUT of 1 MiB + 1")
    still_serves()


# --- keys -----------------------------------------------------------------------------------------


def key_sizes():
    for h, proto in both():
        for method, body in [("PUT", '{"value":"%s"}' % b64("x")), ("GET", None),
                             ("DELETE", None)]:
            expect_error(h.request(method, NS + "/kv/", body=body), 400,
                         "%s %s kv with an empty key" % (proto, method))
        expect_error(h.request("PUT", NS + "/row/", body='{"columns":{"c":"%s"}}' % b64("x")), 400,
                     proto + " PUT row with an empty key")
        expect_error(h.get(NS + "/lob?key="), 400, proto + " GET lob with an empty key")
        expect_error(h.post(NS + "/kv/batch", '{"operation":"put","items":[{"key":"","value":""}]}'),
                     400, proto + " batch with an empty key")

        k511, k512 = "k" * 511, "k" * 512
        expect_write(h.put(NS + "/kv/" + k511, '{"value":"%s"}' % b64("511")), proto + " 511-byte key")
        check(unb64(expect_json(h.get(NS + "/kv/" + k511), 200, "GET 511")["value"]) == b"511",
              "511-byte key value")
        expect_error(h.put(NS + "/kv/" + k512, '{"value":"%s"}' % b64("512")), 400,
                     proto + " PUT of a 512-byte key", "511")
        expect_error(h.get(NS + "/kv/" + k512), 400, proto + " GET of a 512-byte key", "511")
        # The limit is on the decoded key: 512 percent-encoded bytes are 512 bytes.
        expect_error(h.put(NS + "/kv/" + "%41" * 512, '{"value":""}'), 400,
                     proto + " PUT of a percent-encoded 512-byte key")
        expect_write(h.put(NS + "/kv/" + "%41" * 511, '{"value":""}'), proto + " encoded 511 bytes")
        expect_error(h.put(NS + "/row/" + "r" * 512, '{"columns":{"c":"%s"}}' % b64("x")), 400,
                     proto + " PUT row with a 512-byte key")
        expect_error(h.post(NS + "/kv/batch", '{"operation":"put","items":[{"key":"%s","value":""}'
                            ']}' % k512), 400, proto + " batch with a 512-byte key")
        for bad in ["%zz", "%4", "%", "a%2"]:
            expect_error(h.get(NS + "/kv/" + bad), 400, proto + " GET key %r (bad escape)" % bad)
    still_serves()


def dot_dot():
    for h, proto in both():
        # Keys come from the raw path, decoded once: '..' is two characters of the key.
        expect_write(h.put(NS + "/kv/%s/a/../b" % proto, '{"value":"%s"}' % b64("dots")),
                     proto + " PUT kv/a/../b")
        expect(h.get(NS + "/kv/%s/b" % proto), 404, proto + " '..' must not resolve: GET kv/b")
        for path in ["/kv/%s/a/../b", "/kv/%s/a/%%2e%%2e/b", "/kv/%s/a/%%2E%%2E/b",
                     "/kv/%s%%2fa%%2f..%%2fb"]:
            doc = expect_json(h.get(NS + path % proto), 200, proto + " GET " + path)
            check(unb64(doc["value"]) == b"dots", proto + " GET %s: wrong value" % path)
        # Decoded once only: %252e is the three characters "%2e".
        expect_write(h.put(NS + "/kv/%s/%%252e%%252e" % proto, '{"value":"%s"}' % b64("pct")),
                     proto + " PUT kv/%252e%252e")
        doc = expect_json(h.get(NS + "/kv/" + urllib.parse.quote(proto + "/%2e%2e", safe="")), 200,
                          proto + " GET of the literal key '%2e%2e'")
        check(unb64(doc["value"]) == b"pct", "double-encoded key decoded twice")
        expect(h.get(NS + "/kv/%s/.." % proto), 404, proto + " GET kv/proto/.. (a missing key)")

        # Namespaces: '..' is not a name.
        for ns in ["..", "%2e%2e", "%2E%2e", ".", "a%2fb"]:
            r = h.get("/api/v1/%s/kv/x" % ns)
            check(r.status in (400, 404) and "error" in r.json(),
                  "%s GET /api/v1/%s/kv/x: %r" % (proto, ns, r))
        r = h.get("/api/v1/default/../default/kv/%s/a/../b" % proto)
        check(r.status in (400, 404), "%s path with /../ between segments: %r" % (proto, r))

        # Backup paths stay inside the backup root, whatever the encoding.
        for bad in ["../x", "a/../../x", "..", "%2e%2e/x", "%2E%2E%2Fx", "a/%2e%2e/%2e%2e/x",
                    "/abs/x", "//x", "snapshots/..", "a\\u0000b"]:
            expect_error(h.post(NS + "/btree/backup", '{"path":"%s"}' % bad), 400,
                         "%s btree backup to %r" % (proto, bad))
            expect_error(h.post(NS + "/wal/backup", '{"backupDir":"%s"}' % bad), 400,
                         "%s wal backup to %r" % (proto, bad))
        # A file name too long for the copy's temporary name: refused, saying so, before any
        # copy starts (and without the server's own paths).
        doc = expect_error(h.post(NS + "/btree/backup", '{"path":"%s"}' % ("b" * 245)), 400,
                           proto + " btree backup to a 245-byte file name", "longer than 219")
        check(server.data_dir not in doc["error"], "the refusal shows the server's paths: %r" %
              doc["error"])
        expect_error(h.post(NS + "/wal/backup", '{"backupDir":"%s"}' % ("w" * 256)), 400,
                     proto + " wal backup into a 256-byte directory name", "too long")
    # Nothing was written outside the backup root.
    escaped = [p for p in ("x", "escape") if os.path.exists(os.path.join(server.data_dir, p))]
    check(not escaped, "backup paths escaped the root: %r" % escaped)
    still_serves()


def unknown_names():
    for h, proto in both():
        expect_error(h.put("/api/v1/nope/kv/x", '{"value":""}'), 404, proto + " PUT unknown ns",
                     "namespace not found: nope")
        expect_error(h.post("/api/v1/nope/tx/begin", '{"operation":"put","entryType":"kv"}'), 404,
                     proto + " begin in unknown ns", "namespace not found")
        unknown = "0123456789abcdef0123456789abcdef"
        for action, body in [("kv", '{"key":"a","value":""}'),
                             ("row", '{"rowKey":"r","columns":{}}'), ("lob?key=a", "xx"),
                             ("commit", None), ("abort", None)]:
            expect_error(h.post(NS + "/tx/%s/%s" % (unknown, action), body), 404,
                         "%s tx %s of an unknown transaction" % (proto, action),
                         "transaction not found")
        for bad in ["zz", "0123456789abcdef0123456789abcde", "0123456789abcdef0123456789abcdef0",
                    "..", "%2e%2e", "0123456789ABCDEF0123456789ABCDEG"]:
            expect_error(h.post(NS + "/tx/%s/commit" % bad), 404,
                         "%s commit of malformed txn id %r" % (proto, bad), "transaction not found")
        r = h.request("PATCH", NS + "/kv/x", body='{"value":""}')
        check(r.status == 405, "%s PATCH kv: expected 405, got %r" % (proto, r))
    still_serves()


# --- RESP -----------------------------------------------------------------------------------------


def resp_garbage():
    port = server.ports["resp"]
    cases = [
        b"\x00\xff\xfe\x80garbage\r\n",
        b"*2\r\n$3\r\nGET\r\n$10\r\nab",  # truncated bulk, then close
        b"*3\r\n$3\r\nSET\r\n",  # truncated array
        b"*-5\r\n",
        b"*1\r\n$-2\r\n",
        b"*1\r\n$99999999999\r\n",
        b"*99999999999\r\n",
        b"*1\r\n$3\r\nGETXX\r\n",  # bulk longer than declared
        b"*1\r\n:12\r\n",
        b"$3\r\nGET\r\n",
        b"*2\r\n$3\r\nGET\r\n$a\r\nk\r\n",
        b"*1\r\n" + b"$1\r\nx\r" * 3,
        b"\r\n\r\n\r\n",
        b"*" + b"9" * 40 + b"\r\n",
        b"x" * (256 * 1024),  # an endless inline line
    ]
    for payload in cases:
        try:
            out = resp_raw(port, payload, read_timeout=3)
        except OSError:
            out = b""
        check(not out or out.startswith(b"-") or out.startswith(b"+") or out.startswith(b"$") or
              out.startswith(b":") or out.startswith(b"*"),
              "RESP reply to %r is not RESP: %r" % (payload[:30], out[:80]), "resp")
        rc, o, e = redis_cli(port, "PING")
        check(rc == 0 and o.strip() == b"PONG",
              "RESP PING after %r: %r %r" % (payload[:30], o, e), "resp")
    # A protocol error is answered with an error that says so.
    out = resp_raw(port, b"*1\r\n$-2\r\n", read_timeout=3)
    check(out.startswith(b"-ERR") or out.startswith(b"-"), "no error for $-2: %r" % out, "resp")
    # Inline commands work (redis does), and a pipelined garbage line does not eat the next.
    out = resp_raw(port, b"PING\r\n" + resp_command("ECHO", "after"), read_timeout=3)
    check(b"PONG" in out and b"after" in out, "inline PING + ECHO: %r" % out, "resp")
    still_serves()


# --- slow clients ---------------------------------------------------------------------------------


def timed(what, fn, limit=5.0):
    t0 = time.monotonic()
    fn()
    dt = time.monotonic() - t0
    check(dt < limit, "%s took %.1f s while slow clients stall (limit %.0f s)" % (what, dt, limit))


def slow_clients():
    hport, rport = server.ports["http"], server.ports["resp"]
    # A few LOB bytes for a reader that never reads.
    h = server.http(False)
    txn = expect_write(h.post(NS + "/tx/begin", '{"operation":"put","entryType":"lob"}'),
                       "begin")["txnId"]
    for i in range(4):
        expect_write(h.post(NS + "/tx/%s/lob?key=slowlob&offset=%d" % (txn, i * MIB),
                            os.urandom(MIB), headers=["Content-Type: application/octet-stream"]),
                     "LOB chunk")
    expect_write(h.post(NS + "/tx/%s/commit" % txn), "commit")

    stalled = []
    try:
        def conn(port):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            stalled.append(s)
            return s
        # HTTP/1.1: half the headers; all headers and half the body.
        conn(hport).sendall(b"PUT /api/v1/default/kv/slow HTTP/1.1\r\nHost: x\r\nContent-Le")
        conn(hport).sendall(b"PUT /api/v1/default/kv/slow HTTP/1.1\r\nHost: x\r\n"
                            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"val")
        # HTTP/2: half the connection preface.
        conn(hport).sendall(b"PRI * HTTP/2.0\r\n\r\nSM")
        # A LOB reader that never reads its 4 MiB.
        s = conn(hport)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(b"GET /api/v1/default/lob?key=slowlob HTTP/1.1\r\nHost: x\r\n\r\n")
        # RESP: half a command; half a bulk string.
        conn(rport).sendall(b"*3\r\n$3\r\nSET\r\n$1\r\nk")
        conn(rport).sendall(b"*3\r\n$3\r\nSET\r\n$4\r\nslow\r\n$100\r\nabc")
        # Idle connections.
        for _ in range(40):
            conn(hport)
            conn(rport)

        for h2, proto in both():
            timed(proto + " PUT+GET", lambda h2=h2, proto=proto: (
                expect_write(h2.put(NS + "/kv/fast-" + proto, '{"value":"%s"}' % b64("f")), "PUT"),
                expect_json(h2.get(NS + "/kv/fast-" + proto), 200, "GET")))
        timed("RESP SET+GET", lambda: (
            check(redis_cli(rport, "SET", "fast", "1")[1].strip() == b"OK", "SET", "resp"),
            check(redis_cli(rport, "GET", "fast")[1].strip() == b"1", "GET", "resp")))
        r = h.get(NS + "/kv/slow")
        check(r.status == 404, "a half-sent PUT was applied: %r" % r)
    finally:
        for s in stalled:
            s.close()
    still_serves()


suite.run([start, broken_json, bad_base64, body_limit, key_sizes, dot_dot, unknown_names,
           resp_garbage, slow_clients])
