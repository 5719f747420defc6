#!/usr/bin/env python3
"""End to end, TLS: a self-signed certificate made with the openssl CLI at test time, the writer
started with [http] tls_cert/tls_key/tls_listen, and curl (trusting only that certificate) checking
that ALPN negotiates h2, that HTTP/1.1 works too, that keys written over TLS read back equal over
TLS and plain HTTP, that the body limit answers the same JSON 413 over TLS, and that a LOB streams
back byte-identical. Bad certificate settings are configuration errors naming file, line and key,
refused before the data directory is touched."""

import hashlib
import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Failure, Suite, b64, check, expect, expect_error, expect_json,  # noqa: E402
                     expect_write, unb64)

suite = Suite("tls")
NS = "/api/v1/default"
P = "http"
CERT = os.path.join(suite.workdir, "cert.pem")
KEY = os.path.join(suite.workdir, "key.pem")
OTHER_CERT = os.path.join(suite.workdir, "other-cert.pem")
OTHER_KEY = os.path.join(suite.workdir, "other-key.pem")


def make_cert(cert, key, cn):
    if os.path.exists(cert) and os.path.exists(key):
        return
    p = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                        "-out", cert, "-days", "2", "-subj", "/CN=" + cn,
                        "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    if p.returncode != 0:
        raise Failure("openssl req failed (%d): %s" % (p.returncode, p.stderr.decode()[-400:]))


def tls_config(cert=CERT, key=KEY):
    return ('[http]\ntls_cert = "%s"\ntls_key = "%s"\ntls_listen = "127.0.0.1:0"\n' % (cert, key))


server = suite.writer("w", config=tls_config())
suite.server = server


def start():
    make_cert(CERT, KEY, "unison-test")
    make_cert(OTHER_CERT, OTHER_KEY, "someone-else")
    server.start()
    check(server.ports["https"] > 0, "no bound https port: %r" % server.ports, "writer")
    check("TLS with ALPN h2 and http/1.1" in server.log_tail(), "no TLS listener log line", P)


def alpn_h2():
    """curl --http2 negotiates h2 by ALPN (curl -w reports version 2), with the certificate
    verified against the one we made."""
    r = expect(server.https(CERT, http2=True).get("/healthz"), 200, "GET /healthz over TLS h2")
    check(r.version == "2", "ALPN did not give HTTP/2: version %s" % r.version, P)
    # Python's TLS client agrees, and a client offering only http/1.1 gets http/1.1.
    for offer, want in ((["h2", "http/1.1"], "h2"), (["http/1.1"], "http/1.1")):
        ctx = ssl.create_default_context(cafile=CERT)
        ctx.set_alpn_protocols(offer)
        with socket.create_connection(("127.0.0.1", server.ports["https"]), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                got = s.selected_alpn_protocol()
                check(got == want, "ALPN offering %r selected %r, expected %r" % (offer, got, want),
                      P)
                cn = dict(x[0] for x in s.getpeercert()["subject"]).get("commonName")
                check(cn == "unison-test", "the server presented certificate CN=%r" % cn, P)


def http11_over_tls():
    r = expect(server.https(CERT, http2=False).get("/healthz"), 200, "GET /healthz over TLS h1")
    check(r.version == "1.1", "HTTP/1.1 over TLS answered as %s" % r.version, P)


def kv_over_tls():
    """Writes over TLS (h2 and HTTP/1.1) read back equal over TLS and over plain HTTP."""
    last = 0
    for http2 in (True, False):
        h = server.https(CERT, http2=http2)
        label = "TLS " + ("h2" if http2 else "h1")
        value = ("value over %s " % label).encode() + os.urandom(64)
        key = "tls-key-%s" % ("h2" if http2 else "h1")
        last = expect_write(h.put(NS + "/kv/" + key, '{"value":"%s"}' % b64(value)),
                            "PUT over " + label, last)["lsn"]
        for reader, rlabel in ((h, label), (server.http(), "plain h1"),
                               (server.https(CERT, not http2), "the other TLS version")):
            doc = expect_json(reader.get(NS + "/kv/" + key), 200, "GET over %s" % rlabel)
            check(doc.get("found") is True and unb64(doc.get("value", "")) == value,
                  "read back over %s: %r, wrote %r" % (rlabel, doc, value), P)
            check(doc.get("lsn") == last, "GET lsn %r, written at %d" % (doc.get("lsn"), last), P)
        expect_write(h.delete(NS + "/kv/" + key), "DELETE over " + label, last)
        doc = expect_json(h.get(NS + "/kv/" + key), 404, "GET deleted key over " + label)
        check(doc == {"value": "", "found": False}, "deleted key over %s: %r" % (label, doc), P)
        expect_error(h.get("/api/v1/nosuchns/kv/x"), 404, "unknown namespace over " + label)


def body_limit_over_tls():
    for http2 in (True, False):
        h = server.https(CERT, http2=http2)
        label = "TLS " + ("h2" if http2 else "h1")
        expect_error(h.put(NS + "/kv/big", b"a" * (1048576 + 1)), 413, "1 MiB + 1 over " + label,
                     "exceeds the limit")
        # 1 MiB exactly passes the limit (and is then refused as JSON, not as too large).
        r = h.put(NS + "/kv/big", b"a" * 1048576)
        expect_error(r, 400, "1 MiB of broken JSON over " + label)


def lob_over_tls():
    """A LOB uploaded in chunks over TLS h2 streams back byte-identical over both versions."""
    h = server.https(CERT, http2=True)
    data = random.Random(7).randbytes(3 * (1 << 20) + 12345)
    txn = expect_write(h.post(NS + "/tx/begin", '{"operation":"put","entryType":"lob"}'),
                       "LOB begin over TLS")["txnId"]
    for off in range(0, len(data), 1 << 20):
        expect_write(h.post(NS + "/tx/%s/lob?key=tls-lob&offset=%d" % (txn, off),
                            data[off:off + (1 << 20)],
                            headers=["Content-Type: application/octet-stream"]),
                     "LOB chunk at %d over TLS" % off)
    expect_write(h.post(NS + "/tx/%s/commit" % txn), "LOB commit over TLS")
    for http2 in (True, False):
        r = expect(server.https(CERT, http2).get(NS + "/lob?key=tls-lob", timeout=120), 200,
                   "GET lob over TLS")
        check(r.body == data, "LOB over TLS %s: %d bytes back (sha256 %s), %d written (%s)" %
              ("h2" if http2 else "h1", len(r.body), hashlib.sha256(r.body).hexdigest()[:12],
               len(data), hashlib.sha256(data).hexdigest()[:12]), P)


def plain_on_tls_port():
    """The TLS port does not answer plaintext HTTP; the plain port does not speak TLS."""
    with socket.create_connection(("127.0.0.1", server.ports["https"]), timeout=10) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(5)
        try:
            got = s.recv(100)
        except (socket.timeout, ConnectionResetError):
            got = b""
        check(not got.startswith(b"HTTP/1.1 200"), "plaintext served on the TLS port: %r" % got, P)
    r = subprocess.run(["curl", "-sS", "--max-time", "10", "--cacert", CERT,
                        "https://127.0.0.1:%d/healthz" % server.ports["http"]],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    check(r.returncode != 0, "TLS handshake succeeded on the plain port", P)


def stop_with_tls_clients():
    """SIGTERM with an idle TLS connection of each protocol open: exit 0 within 5 s (HTTP/2
    connections close at the GOAWAY, idle HTTP/1.1 ones are shut down), and what was written
    before reads back after a restart."""
    w = suite.writer("stop", config=tls_config())
    w.start()
    h = w.https(CERT, http2=True)
    expect_write(h.put(NS + "/kv/durable", '{"value":"%s"}' % b64("kept")), "PUT before stop")
    conns = []
    try:
        for offer in (["h2"], ["http/1.1"]):
            ctx = ssl.create_default_context(cafile=CERT)
            ctx.set_alpn_protocols(offer)
            raw = socket.create_connection(("127.0.0.1", w.ports["https"]), timeout=10)
            conns.append(ctx.wrap_socket(raw, server_hostname="127.0.0.1"))
        t0 = time.monotonic()
        w.signal(signal.SIGTERM)
        try:
            status = w.proc.wait(15)
        except subprocess.TimeoutExpired:
            w.kill()
            raise Failure("still running 15 s after SIGTERM with idle TLS connections open:\n" +
                          w.log_tail(8), P)
        check(status == 0, "exit status %d after SIGTERM:\n%s" % (status, w.log_tail(8)), P)
        check(time.monotonic() - t0 < 5, "stop took %.1f s" % (time.monotonic() - t0), P)
    finally:
        for c in conns:
            c.close()
    w.start()
    doc = expect_json(w.https(CERT, http2=False).get(NS + "/kv/durable"), 200, "GET after restart")
    check(unb64(doc.get("value", "")) == b"kept", "after restart: %r" % doc, P)
    w.stop_clean()


def bad_certificates():
    """Certificate problems are configuration errors (exit 2) that name the file, the line and the
    key, found before the data directory is created."""
    make_cert(CERT, KEY, "unison-test")
    make_cert(OTHER_CERT, OTHER_KEY, "someone-else")
    missing = os.path.join(suite.workdir, "missing.pem")
    cases = [
        (tls_config(cert=missing), 2, "[http] tls_cert", "No such file"),
        (tls_config(key=missing), 3, "[http] tls_key", "No such file"),
        (tls_config(key=OTHER_KEY), 3, "[http] tls_key", "does not match"),
        (tls_config(cert=KEY), 2, "[http] tls_cert", "no PEM certificate"),
        ('[http]\ntls_cert = "%s"\n' % CERT, 2, "[http] tls_cert", "tls_key"),
    ]
    for n, (text, line, key, want) in enumerate(cases):
        path = os.path.join(suite.workdir, "bad%d.toml" % n)
        with open(path, "w") as f:
            f.write(text)
        data = os.path.join(suite.workdir, "bad%d-data" % n)
        p = subprocess.run([suite.exe, "--config", path, "--data-dir", data, "--http",
                            "127.0.0.1:0", "--resp", "127.0.0.1:0", "--raft", "127.0.0.1:0"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30,
                           stdin=subprocess.DEVNULL)
        err = p.stderr.decode(errors="replace")
        check(p.returncode == 2, "case %d: exit status %d, expected 2: %r" % (n, p.returncode, err),
              "writer")
        where = "%s:%d: %s" % (path, line, key)
        check(where in err and want in err,
              "case %d: message %r lacks %r and %r" % (n, err.strip(), where, want), "writer")
        check(not os.path.exists(data), "case %d: the data directory was created" % n, "writer")
        # --check-config finds the same error.
        p = subprocess.run([suite.exe, "--check-config", "--config", path], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=30, stdin=subprocess.DEVNULL)
        check(p.returncode == 2 and want in p.stderr.decode(errors="replace"),
              "case %d: --check-config: %d %r" % (n, p.returncode, p.stderr.decode()), "writer")


suite.run([start, alpn_h2, http11_over_tls, kv_over_tls, body_limit_over_tls, lob_over_tls,
           plain_on_tls_port, stop_with_tls_clients, bad_certificates])
