#!/usr/bin/env python3
"""End to end, large objects: a 20 MB LOB uploaded through the chunked transaction API in 1 MiB
chunks (the body limit, inclusive), one chunk retried, read back byte-identical over HTTP/1.1 and
h2c, and again after a restart. Byte ranges of a multi-chunk LOB (curl -r, If-Range, curl -C -
resuming a cut download): 206 with exactly the bytes asked, inside chunks and across their
boundaries, 416, the forms answered with the whole object, and their counts in /metrics."""

import hashlib
import os
import random
import re
import subprocess
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
            # The same offset and length with other bytes is not that retry: answered 200, the
            # client would believe the object holds bytes it does not.
            other = bytes(b ^ 0xff for b in chunk[:16]) + chunk[16:]
            r = h.post(NS + "/tx/%s/lob?key=%s&offset=%d" % (txn, key, off), other,
                       headers=OCTETS)
            doc = expect_error(r, 409, "a retried LOB chunk with other bytes")
            check("differs from the chunk appended there" in doc.get("error", "") and
                  "expectedOffset" not in doc, "the refusal of other bytes: %r" % doc)
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
    return expect_write(h.post(NS + "/tx/%s/commit" % txn), "LOB commit", last)["lsn"]


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
    doc = expect_error(h.post(NS + "/tx/%s/lob?key=two&offset=0" % txn, b"2", headers=OCTETS),
                       409, "a second key in a LOB transaction")
    check("expectedOffset" not in doc, "a second key's refusal names an offset: %r" % doc)
    expect_write(h.post(NS + "/tx/%s/abort" % txn), "abort")


# --- byte ranges ----------------------------------------------------------------------------------

RKEY = "files:ranges.bin"
RDATA = random.Random(21).randbytes(5 * CHUNK + 777)  # six chunks, the last one short
RSIZE = len(RDATA)
ranged = {}  # "lsn": the commit LSN of RKEY, "data": its bytes


def metric(route, code):
    r = expect(server.http(False).get("/metrics"), 200, "GET /metrics")
    m = re.search(r'unison_http_requests_total\{route="%s",code="%d"\} (\d+)' % (route, code),
                  r.body.decode())
    return int(m.group(1)) if m else 0


def get_range(h, spec, headers=()):
    """GET of RKEY with curl -r spec (curl sends Range: bytes=spec)."""
    return h.get(NS + "/lob?key=" + RKEY, curl_args=["-r", spec], headers=headers, timeout=120)


def check_lob_headers(r, label):
    check(r.headers.get("etag") == '"%d"' % ranged["lsn"] and
          r.headers.get("accept-ranges") == "bytes",
          "%s: ETag %r (the commit LSN is %d), Accept-Ranges %r" %
          (label, r.headers.get("etag"), ranged["lsn"], r.headers.get("accept-ranges")))


def expect_part(r, first, last, label):
    data = ranged["data"]
    size = len(data)
    check(r.status == 206, "%s: expected 206, got %d (%d bytes)" % (label, r.status, len(r.body)))
    check(r.headers.get("content-range") == "bytes %d-%d/%d" % (first, last, size),
          "%s: Content-Range %r, expected bytes %d-%d/%d" %
          (label, r.headers.get("content-range"), first, last, size))
    check(r.headers.get("content-length") == str(last - first + 1),
          "%s: Content-Length %r for %d bytes" %
          (label, r.headers.get("content-length"), last - first + 1))
    want = data[first:last + 1]
    if r.body != want:
        diff = next((i for i in range(min(len(r.body), len(want))) if r.body[i] != want[i]),
                    min(len(r.body), len(want)))
        check(False, "%s: %d bytes back, %d expected; they differ from byte %d of the range" %
              (label, len(r.body), len(want), diff))
    check_lob_headers(r, label)


def expect_whole(r, label):
    check(r.status == 200 and r.body == ranged["data"] and "content-range" not in r.headers,
          "%s: expected 200 with the whole %d-byte object, got %r (%d bytes, Content-Range %r)" %
          (label, len(ranged["data"]), r, len(r.body), r.headers.get("content-range")))
    check_lob_headers(r, label)


def lob_ranges():
    """Ranges that start and end inside chunks, across one and several chunk boundaries, a whole
    chunk, open ends, suffixes, a clamped end, and all of it (still a 206), over HTTP/1.1 and h2c,
    each compared byte for byte; each counted as a 206 of lob_get in /metrics."""
    h = server.http(False)
    ranged["lsn"] = upload(h, RKEY, RDATA, retry_at=2)
    ranged["data"] = RDATA
    forms = [
        ("0-0", 0, 0),
        ("100-199", 100, 199),  # inside the first chunk
        ("%d-%d" % (CHUNK - 10, CHUNK + 9), CHUNK - 10, CHUNK + 9),  # across one boundary
        ("%d-%d" % (CHUNK + 5, 4 * CHUNK + 3), CHUNK + 5, 4 * CHUNK + 3),  # across three
        ("%d-%d" % (2 * CHUNK, 3 * CHUNK - 1), 2 * CHUNK, 3 * CHUNK - 1),  # exactly chunk 2
        ("%d-%d" % (3 * CHUNK - 1, 3 * CHUNK), 3 * CHUNK - 1, 3 * CHUNK),  # the two bytes at one
        ("%d-" % (3 * CHUNK + 123), 3 * CHUNK + 123, RSIZE - 1),  # to the end
        ("-%d" % (CHUNK + 100), RSIZE - CHUNK - 100, RSIZE - 1),  # a suffix over a boundary
        ("-1", RSIZE - 1, RSIZE - 1),
        ("%d-%d" % (RSIZE - 10, RSIZE + 1000), RSIZE - 10, RSIZE - 1),  # the end clamped
        ("%d-" % (RSIZE - 1), RSIZE - 1, RSIZE - 1),
        ("0-", 0, RSIZE - 1),  # everything, asked as a range: still a 206
        ("-%d" % (2 * RSIZE), 0, RSIZE - 1),
        ("0-99999999999999999999999", 0, RSIZE - 1),  # past 2^64: clamped too
    ]
    before = metric("lob_get", 206)
    for http2 in (False, True):
        c = server.http(http2)
        for spec, first, last in forms:
            expect_part(get_range(c, spec), first, last,
                        "Range bytes=%s over %s" % (spec, "h2c" if http2 else "HTTP/1.1"))
    got = metric("lob_get", 206) - before
    check(got == 2 * len(forms), "/metrics counts %d lob_get 206 answers, %d were sent" %
          (got, 2 * len(forms)))


def lob_range_unsatisfiable():
    """A first byte at or past the end and bytes=-0: 416, Content-Range: bytes */SIZE, and a JSON
    error naming the range and the size; counted as a 416 of lob_get."""
    before = metric("lob_get", 416)
    n = 0
    for http2 in (False, True):
        c = server.http(http2)
        for spec in ("%d-" % RSIZE, "%d-%d" % (RSIZE + 5, RSIZE + 10), "-0",
                     "99999999999999999999999-"):
            r = get_range(c, spec)
            label = "Range bytes=%s of a %d-byte LOB" % (spec, RSIZE)
            doc = expect_error(r, 416, label, contains="bytes=" + spec)
            check(str(RSIZE) in doc["error"], "%s: the error %r does not name the size" %
                  (label, doc["error"]))
            check(r.headers.get("content-range") == "bytes */%d" % RSIZE,
                  "%s: Content-Range %r" % (label, r.headers.get("content-range")))
            check_lob_headers(r, label)
            n += 1
    got = metric("lob_get", 416) - before
    check(got == n, "/metrics counts %d lob_get 416 answers, %d were sent" % (got, n))


def lob_range_ignored():
    """Several ranges, another unit, last < first and malformed values get 200 and the whole
    object; HEAD ignores Range and announces Accept-Ranges and the ETag."""
    for http2 in (False, True):
        c = server.http(http2)
        for spec in ("0-1,5-6", "%d-%d,0-0" % (CHUNK, CHUNK + 1), "5-3"):
            expect_whole(get_range(c, spec), "Range bytes=%s" % spec)
        for value in ("items=0-5", "bytes = 0-5", "bytes=0x10-", "bytes=5"):
            expect_whole(c.get(NS + "/lob?key=" + RKEY, headers=["Range: " + value], timeout=120),
                         "Range: %s" % value)
        r = c.head(NS + "/lob?key=" + RKEY, curl_args=["-r", "0-5"])
        check(r.status == 200 and r.headers.get("content-length") == str(RSIZE) and
              "content-range" not in r.headers,
              "HEAD with Range bytes=0-5: %r, Content-Length %r, Content-Range %r" %
              (r, r.headers.get("content-length"), r.headers.get("content-range")))
        check_lob_headers(r, "HEAD with a Range")


def lob_if_range():
    """If-Range with the ETag honours the Range; another tag, a weak tag or a date gets the whole
    object. After an overwrite, the old ETag gets the new object whole: a client resuming a
    download never splices two versions."""
    for http2 in (False, True):
        c = server.http(http2)
        etag = '"%d"' % ranged["lsn"]
        expect_part(get_range(c, "%d-%d" % (CHUNK - 3, CHUNK + 3), ["If-Range: " + etag]),
                    CHUNK - 3, CHUNK + 3, "If-Range %s" % etag)
        for other in ('"%d"' % (ranged["lsn"] + 1), 'W/' + etag, "Sun, 22 Nov 2026 16:00:00 GMT",
                      str(ranged["lsn"])):
            expect_whole(get_range(c, "10-20", ["If-Range: " + other]), "If-Range: %s" % other)
        # If-Range without a Range changes nothing.
        expect_whole(c.get(NS + "/lob?key=" + RKEY, headers=["If-Range: " + etag], timeout=120),
                     "If-Range without a Range")
    old = '"%d"' % ranged["lsn"]
    new_data = random.Random(22).randbytes(2 * CHUNK + 5)
    ranged["lsn"] = upload(server.http(False), RKEY, new_data)
    ranged["data"] = new_data
    for http2 in (False, True):
        c = server.http(http2)
        expect_whole(get_range(c, "10-20", ["If-Range: " + old]), "If-Range with the ETag "
                     "before the overwrite")
        expect_part(get_range(c, "10-%d" % CHUNK, ["If-Range: " + '"%d"' % ranged["lsn"]]), 10,
                    CHUNK, "If-Range with the new ETag")


def lob_resume():
    """curl -C - resumes a download cut after 1.5 MiB: the file ends up equal to the object."""
    data = ranged["data"]
    path = os.path.join(suite.workdir, "resumed.bin")
    for http2 in (False, True):
        with open(path, "wb") as f:
            f.write(data[:CHUNK + CHUNK // 2])
        p = subprocess.run(["curl", "-sS", "--max-time", "60", "-C", "-", "-o", path,
                            "--http2-prior-knowledge" if http2 else "--http1.1",
                            "http://127.0.0.1:%d%s/lob?key=%s" % (server.ports["http"], NS, RKEY)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=90)
        with open(path, "rb") as f:
            got = f.read()
        check(p.returncode == 0 and got == data,
              "curl -C - (%s): rc %d (%s), %d bytes in the file, the object has %d%s" %
              ("h2c" if http2 else "HTTP/1.1", p.returncode, p.stderr.decode().strip(), len(got),
               len(data), "" if got[:len(data)] == data[:len(got)] else ", and they differ"))
    os.unlink(path)


def after_restart():
    server.stop_clean("SIGTERM")
    server.start()
    read_back(server.http(False), KEY, DATA, "after a restart")
    expect_part(get_range(server.http(True), "%d-%d" % (CHUNK - 1, CHUNK + 1)), CHUNK - 1,
                CHUNK + 1, "a range after a restart")


suite.run([start, lob_20mb_h1, lob_over_h2, overwrite_and_abort, lob_ranges,
           lob_range_unsatisfiable, lob_range_ignored, lob_if_range, lob_resume, after_restart])
