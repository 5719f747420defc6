#!/usr/bin/env python3
"""End to end, large objects: a 20 MB LOB uploaded through the chunked transaction API in 1 MiB
chunks (the body limit, inclusive), one chunk retried, read back byte-identical over HTTP/1.1 and
h2c, and again after a restart."""

import hashlib
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Suite, check, expect, expect_error, expect_json, expect_write  # noqa: E402

suite = Suite("lob")
server = suite.writer("w")
suite.server = server

NS = "/api/v1/default"
CHUNK = 1 << 20
SIZE = 20 * 1000 * 1000 + 4321  # not a multiple of the chunk size: the last chunk is short
DATA = random.Random(20).randbytes(SIZE)
KEY = "files:backup-20250108.tar.gz"
OCTETS = ["Content-Type: application/octet-stream"]


def start():
    server.start()


def upload(h, key, data, retry_at=None):
    txn = expect_write(h.post(NS + "/tx/begin", '{"operation":"put","entryType":"lob"}'),
                       "LOB begin")["txnId"]
    last = 0
    for n, off in enumerate(range(0, len(data), CHUNK)):
        chunk = data[off:off + CHUNK]
        doc = expect_write(h.post(NS + "/tx/%s/lob?key=%s&offset=%d" % (txn, key, off), chunk,
                                  headers=OCTETS), "LOB chunk %d" % n, last)
        check(doc.get("offset") == off and doc.get("size") == off + len(chunk),
              "chunk %d answer: offset %r size %r, expected %d and %d" %
              (n, doc.get("offset"), doc.get("size"), off, off + len(chunk)))
        last = doc["lsn"]
        if n == retry_at:
            # The client did not see the answer and sends the same chunk again: accepted once.
            r = h.post(NS + "/tx/%s/lob?key=%s&offset=%d" % (txn, key, off), chunk, headers=OCTETS)
            doc = expect_json(r, 200, "retried LOB chunk %d" % n)
            check(doc.get("success") is True and doc.get("lsn") == last and
                  doc.get("size") == off + len(chunk),
                  "retried chunk: %r (the transaction's newest LSN is %d)" % (doc, last))
            # A chunk from the past that is not the same size as what is held, or one past the
            # end, is refused with the offset expected.
            r = h.post(NS + "/tx/%s/lob?key=%s&offset=%d" % (txn, key, off + CHUNK + 1),
                       b"x" * 10, headers=OCTETS)
            doc = expect_error(r, 409, "LOB chunk leaving a gap")
            check(doc.get("expectedOffset") == off + CHUNK,
                  "the refusal of a gap names expectedOffset %r, not %d" %
                  (doc.get("expectedOffset"), off + CHUNK))
        # The object is invisible until the commit.
        if n == 3:
            r = h.get(NS + "/lob?key=" + key)
            check(r.status == 404, "LOB visible before its commit: %r" % r)
    expect_write(h.post(NS + "/tx/%s/commit" % txn), "LOB commit", last)


def read_back(h, key, data, label):
    r = expect(h.get(NS + "/lob?key=" + key, timeout=120), 200, "GET lob (%s)" % label)
    got, want = hashlib.sha256(r.body).hexdigest(), hashlib.sha256(data).hexdigest()
    check(len(r.body) == len(data) and got == want,
          "%s: %d bytes back (sha256 %s), %d written (sha256 %s)" %
          (label, len(r.body), got[:16], len(data), want[:16]))


def lob_20mb_h1():
    h = server.http(False)
    upload(h, KEY, DATA, retry_at=5)
    read_back(h, KEY, DATA, "HTTP/1.1")
    read_back(server.http(True), KEY, DATA, "h2c")


def lob_over_h2():
    h = server.http(True)
    data = DATA[:7 * CHUNK + 99]
    upload(h, "files:h2.bin", data, retry_at=0)
    read_back(h, "files:h2.bin", data, "h2c upload")


def overwrite_and_abort():
    h = server.http(False)
    small = os.urandom(3 * CHUNK)
    upload(h, "files:h2.bin", small)
    read_back(h, "files:h2.bin", small, "overwritten LOB")
    txn = expect_write(h.post(NS + "/tx/begin", '{"operation":"put","entryType":"lob"}'),
                       "begin")["txnId"]
    expect_write(h.post(NS + "/tx/%s/lob?key=files:h2.bin&offset=0" % txn, b"abandoned",
                        headers=OCTETS), "chunk")
    expect_write(h.post(NS + "/tx/%s/abort" % txn), "abort")
    read_back(h, "files:h2.bin", small, "after an aborted overwrite")
    # A LOB transaction holds exactly one key.
    txn = expect_write(h.post(NS + "/tx/begin", '{"operation":"put","entryType":"lob"}'),
                       "begin")["txnId"]
    expect_write(h.post(NS + "/tx/%s/lob?key=one&offset=0" % txn, b"1", headers=OCTETS), "chunk")
    expect_error(h.post(NS + "/tx/%s/lob?key=two&offset=0" % txn, b"2", headers=OCTETS), 409,
                 "a second key in a LOB transaction")
    expect_write(h.post(NS + "/tx/%s/abort" % txn), "abort")


def after_restart():
    server.stop_clean("SIGTERM")
    server.start()
    read_back(server.http(False), KEY, DATA, "after a restart")


suite.run([start, lob_20mb_h1, lob_over_h2, overwrite_and_abort, after_restart])
