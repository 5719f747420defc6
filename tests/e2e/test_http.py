#!/usr/bin/env python3
"""End to end, HTTP: every route of the seed API reference and of the additions in the issue,
driven with curl over HTTP/1.1 and over h2c with prior knowledge, each checking the documented
status codes, fields and values (docs/http-api.md), and every documented error."""

import calendar
import json
import os
import re
import struct
import subprocess
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Failure, Suite, b64, check, expect, expect_error, expect_json,  # noqa: E402
                     expect_write, unb64, wait_for)

suite = Suite("http")
# Small WAL segments so that the WAL backup has sealed segments to copy; idle namespaces flushed
# soon, so that stats has a lastFlushTime to show.
server = suite.writer("w", args=["--set", "storage.segment_size=1MiB",
                                 "--set", "storage.idle_flush_ms=200"])
suite.server = server

NS = "/api/v1/default"


def kv_get(h, key, what):
    r = h.get(NS + "/kv/" + urllib.parse.quote(key, safe=""))
    if r.status == 404:
        doc = expect_json(r, 404, what)
        check(doc.get("found") is False and doc.get("value") == "",
              "%s: missing key must answer {\"value\":\"\",\"found\":false}, got %r" % (what, doc))
        return None
    doc = expect_json(r, 200, what)
    check(doc.get("found") is True, "%s: found is not true: %r" % (what, doc))
    check(isinstance(doc.get("lsn"), int) and doc["lsn"] > 0, "%s: GET lacks the key's lsn: %r" %
          (what, doc))
    return unb64(doc["value"])


def row_get(h, key, columns=None):
    q = "?columns=" + ",".join(columns) if columns else ""
    r = h.get(NS + "/row/" + urllib.parse.quote(key, safe="") + q)
    if r.status == 404:
        return None
    doc = expect_json(r, 200, "GET row %s" % key)
    check(doc.get("found") is True and doc.get("rowKey") == key,
          "GET row %s: expected rowKey and found: %r" % (key, doc))
    return {k: unb64(v) for k, v in doc["columns"].items()}


# --- key-value ------------------------------------------------------------------------------------


def kv(h, p):
    key = p + "user:123"
    value = b'{"name":"John","age":30}'
    put = expect_write(h.put(NS + "/kv/" + key, '{"value":"%s"}' % b64(value)), "PUT kv")
    check(kv_get(h, key, "GET kv") == value, "GET kv returned another value")
    resp = h.get(NS + "/kv/" + key)
    r = expect_json(resp, 200, "GET kv")
    check(r["lsn"] == put["lsn"], "GET kv lsn %r is not the PUT's %d" % (r.get("lsn"), put["lsn"]))
    check(resp.headers.get("etag") == '"%d"' % put["lsn"],
          "GET kv: ETag %r, expected \"%d\"" % (resp.headers.get("etag"), put["lsn"]))

    # Overwrite, then delete: each write gets a higher LSN.
    put2 = expect_write(h.put(NS + "/kv/" + key, '{"value":"%s"}' % b64(b"v2")), "PUT kv again",
                        put["lsn"])
    check(kv_get(h, key, "GET kv") == b"v2", "overwrite not visible")
    expect_write(h.delete(NS + "/kv/" + key), "DELETE kv", put2["lsn"])
    check(kv_get(h, key, "GET deleted kv") is None, "deleted key still found")

    # Binary keys travel percent-encoded; '/' inside a key is part of the key.
    for raw in [p + "bin\x00\xff\x01", p + "a/b/c", p + "sp ace?q=1#f", p + "caf\u00e9"]:
        enc = urllib.parse.quote(raw.encode("latin-1" if "\xff" in raw else "utf-8"), safe="")
        expect_write(h.put(NS + "/kv/" + enc, '{"value":"%s"}' % b64(raw.encode("utf-8"))),
                     "PUT kv %r" % raw)
        doc = expect_json(h.get(NS + "/kv/" + enc), 200, "GET kv %r" % raw)
        check(unb64(doc["value"]) == raw.encode("utf-8"), "GET kv %r: wrong value" % raw)
    # The empty value is a value.
    expect_write(h.put(NS + "/kv/" + p + "empty", '{"value":""}'), "PUT empty value")
    check(kv_get(h, p + "empty", "GET empty value") == b"", "empty value not returned as empty")


def kv_batch(h, p):
    items = [{"key": p + "b:%d" % i, "value": b64("value%d" % i)} for i in range(5)]
    body = '{"operation":"put","items":[%s]}' % ",".join(
        '{"key":"%s","value":"%s"}' % (i["key"], i["value"]) for i in items)
    doc = expect_write(h.post(NS + "/kv/batch", body), "batch put")
    check(doc.get("processed") == 5, "batch put: processed %r, expected 5" % doc.get("processed"))
    for i in range(5):
        check(kv_get(h, p + "b:%d" % i, "GET batch key") == b"value%d" % i, "batch value %d" % i)
    body = '{"operation":"delete","keys":["%s","%s"]}' % (p + "b:0", p + "b:1")
    doc = expect_write(h.post(NS + "/kv/batch", body), "batch delete")
    check(doc.get("processed") == 2, "batch delete: processed %r" % doc.get("processed"))
    check(kv_get(h, p + "b:0", "GET") is None and kv_get(h, p + "b:1", "GET") is None,
          "batch-deleted keys still found")
    check(kv_get(h, p + "b:2", "GET") == b"value2", "batch delete removed too much")
    expect_error(h.post(NS + "/kv/batch", '{"operation":"merge","items":[]}'), 400,
                 "batch with an unknown operation")


# --- wide-column rows -----------------------------------------------------------------------------


def rows(h, p):
    key = p + "user:john"
    cols = {"name": b"John Doe", "email": b"john@example.com", "age": b"30", "city": b"Paris"}
    body = '{"columns":{%s}}' % ",".join('"%s":"%s"' % (k, b64(v)) for k, v in cols.items())
    expect_write(h.put(NS + "/row/" + key, body), "PUT row")
    check(row_get(h, key) == cols, "GET row: columns differ")
    check(row_get(h, key, ["name", "email"]) == {"name": cols["name"], "email": cols["email"]},
          "GET row ?columns=name,email returned other columns")
    # A put merges columns into the row.
    expect_write(h.put(NS + "/row/" + key, '{"columns":{"age":"%s"}}' % b64("31")), "PUT merge")
    got = row_get(h, key)
    check(got is not None and got.get("age") == b"31" and got.get("name") == b"John Doe",
          "partial row put did not merge: %r" % got)
    expect_write(h.delete(NS + "/row/" + key + "/columns?columns=age,city"), "DELETE columns")
    got = row_get(h, key)
    check(got == {"name": cols["name"], "email": cols["email"]},
          "after deleting age,city the row is %r" % got)
    expect_write(h.delete(NS + "/row/" + key), "DELETE row")
    doc = expect_json(h.get(NS + "/row/" + key), 404, "GET deleted row")
    check(doc == {"rowKey": key, "columns": {}, "found": False},
          "missing row answer %r" % doc)
    expect_error(h.delete(NS + "/row/" + key + "/columns"), 400, "DELETE columns without ?columns=")


def row_batch(h, p):
    body = ('{"operation":"put","rows":[{"rowKey":"%s","columns":{"name":"%s","email":"%s"}},'
            '{"rowKey":"%s","columns":{"name":"%s"}}]}' %
            (p + "user:1", b64("Alice"), b64("alice@example.com"), p + "user:2", b64("Bob")))
    doc = expect_write(h.post(NS + "/row/batch", body), "row batch put")
    check(doc.get("processed") == 2, "row batch: processed %r" % doc.get("processed"))
    check(row_get(h, p + "user:1") == {"name": b"Alice", "email": b"alice@example.com"},
          "row batch: user:1 differs")
    check(row_get(h, p + "user:2") == {"name": b"Bob"}, "row batch: user:2 differs")
    body = ('{"operation":"delete","rows":[{"rowKey":"%s","columns":["email"]},{"rowKey":"%s"}]}'
            % (p + "user:1", p + "user:2"))
    doc = expect_write(h.post(NS + "/row/batch", body), "row batch delete")
    check(doc.get("processed") == 2, "row batch delete: processed %r" % doc.get("processed"))
    check(row_get(h, p + "user:1") == {"name": b"Alice"}, "row batch delete of a column")
    check(row_get(h, p + "user:2") is None, "row batch delete of a whole row")


# --- transactions ---------------------------------------------------------------------------------


def begin(h, op, entry_type):
    doc = expect_write(h.post(NS + "/tx/begin", '{"operation":"%s","entryType":"%s"}' %
                              (op, entry_type)), "tx begin %s %s" % (op, entry_type))
    txn = doc.get("txnId")
    check(isinstance(txn, str) and re.fullmatch(r"[0-9a-f]{32}", txn),
          "txnId %r is not 32 hexadecimal characters" % txn)
    return txn


def txn_kv(h, p):
    txn = begin(h, "put", "kv")
    for k, v in [("alice", "1000"), ("bob", "2000"), ("log:123", "alice -> bob: 100")]:
        expect_write(h.post(NS + "/tx/%s/kv" % txn, '{"key":"%s","value":"%s"}' %
                            (p + "account:" + k, b64(v))), "tx append kv")
    check(kv_get(h, p + "account:alice", "GET before commit") is None,
          "a transaction's part is visible before the commit")
    expect_write(h.post(NS + "/tx/%s/commit" % txn), "tx commit")
    check(kv_get(h, p + "account:alice", "GET after commit") == b"1000", "committed alice")
    check(kv_get(h, p + "account:log:123", "GET after commit") == b"alice -> bob: 100",
          "committed log")
    expect_error(h.post(NS + "/tx/%s/kv" % txn, '{"key":"x","value":""}'), 404,
                 "append to a committed transaction", "transaction")

    # Abort discards.
    txn = begin(h, "put", "kv")
    expect_write(h.post(NS + "/tx/%s/kv" % txn, '{"key":"%s","value":"%s"}' %
                        (p + "aborted", b64("x"))), "tx append")
    expect_write(h.post(NS + "/tx/%s/abort" % txn), "tx abort")
    check(kv_get(h, p + "aborted", "GET after abort") is None, "aborted part became visible")
    expect_error(h.post(NS + "/tx/%s/commit" % txn), 404, "commit after abort", "transaction")

    # A delete transaction names keys only.
    txn = begin(h, "delete", "kv")
    expect_write(h.post(NS + "/tx/%s/kv" % txn, '{"key":"%s"}' % (p + "account:bob")),
                 "tx delete append")
    expect_write(h.post(NS + "/tx/%s/commit" % txn), "tx delete commit")
    check(kv_get(h, p + "account:bob", "GET") is None, "delete transaction left bob")
    check(kv_get(h, p + "account:alice", "GET") == b"1000", "delete transaction removed alice")

    # A transaction accepts only its own entry type.
    txn = begin(h, "put", "kv")
    expect_error(h.post(NS + "/tx/%s/row" % txn, '{"rowKey":"r","columns":{"c":"%s"}}' % b64("v")),
                 400, "row append to a kv transaction", "kv transaction")
    expect_write(h.post(NS + "/tx/%s/abort" % txn), "tx abort")

    # update of an absent key fails with 404 (at the append or at the commit) and writes nothing.
    txn = begin(h, "update", "kv")
    expect(h.post(NS + "/tx/%s/kv" % txn, '{"key":"%s","value":"%s"}' % (p + "absent", b64("x"))),
           404, "update append of an absent key")
    expect_write(h.post(NS + "/tx/%s/commit" % txn), "commit of the empty update")
    check(kv_get(h, p + "absent", "GET") is None, "update created an absent key")
    txn = begin(h, "update", "kv")
    expect_write(h.post(NS + "/tx/%s/kv" % txn, '{"key":"%s","value":"%s"}' %
                        (p + "account:alice", b64("1500"))), "update append of a present key")
    expect_write(h.post(NS + "/tx/%s/commit" % txn), "commit update")
    check(kv_get(h, p + "account:alice", "GET") == b"1500", "update of a present key")


def txn_row(h, p):
    txn = begin(h, "put", "row")
    expect_write(h.post(NS + "/tx/%s/row" % txn, '{"rowKey":"%s","columns":{"name":"%s",'
                        '"status":"%s"}}' % (p + "user:charlie", b64("Charlie"), b64("active"))),
                 "tx append row")
    check(row_get(h, p + "user:charlie") is None, "row visible before commit")
    expect_write(h.post(NS + "/tx/%s/commit" % txn), "tx commit row")
    check(row_get(h, p + "user:charlie") == {"name": b"Charlie", "status": b"active"},
          "committed row differs")


def txn_lob(h, p):
    key = p + "file:doc.pdf"
    chunks = [os.urandom(100000), os.urandom(77777)]
    txn = begin(h, "put", "lob")
    for c in chunks:
        expect_write(h.post(NS + "/tx/%s/lob?key=%s" % (txn, key), c,
                            headers=["Content-Type: application/octet-stream"]), "tx append lob")
    r = h.get(NS + "/lob?key=" + key)
    check(r.status == 404, "LOB visible before the commit: %r" % r)
    expect_write(h.post(NS + "/tx/%s/commit" % txn), "tx commit lob")
    r = expect(h.get(NS + "/lob?key=" + key), 200, "GET lob")
    check(r.body == b"".join(chunks), "GET lob: %d bytes back, %d written, or content differs" %
          (len(r.body), sum(map(len, chunks))))
    expect_error(h.get(NS + "/lob?key=" + p + "no-such-lob"), 404, "GET missing lob")


def txn_idempotent(h, p):
    """Retried transaction requests with an Idempotency-Key: the begin answers the same
    transaction, an append and the commit the first attempt's LSN (the commit also after the
    transaction ended), and nothing is applied twice."""
    def key(name):
        return ["Idempotency-Key: %s%s" % (p, name)]
    body = '{"operation":"put","entryType":"kv"}'
    first = expect_write(h.post(NS + "/tx/begin", body, headers=key("begin")), "keyed tx begin")
    again = expect_write(h.post(NS + "/tx/begin", body, headers=key("begin")), "retried tx begin")
    txn = first.get("txnId")
    check(again.get("txnId") == txn and again.get("lsn") == first["lsn"],
          "a retried begin began another transaction: %r then %r" % (first, again))
    other = begin(h, "put", "kv")
    check(other != txn, "a begin without a key reused the keyed transaction %s" % txn)
    expect_write(h.post(NS + "/tx/%s/abort" % other), "tx abort")

    part = '{"key":"%s","value":"%s"}' % (p + "idem:a", b64("1"))
    a1 = expect_write(h.post(NS + "/tx/%s/kv" % txn, part, headers=key("part")), "keyed append")
    a2 = expect_write(h.post(NS + "/tx/%s/kv" % txn, part, headers=key("part")), "retried append")
    check(a1["lsn"] == a2["lsn"], "a retried append took LSN %d, then %d" % (a1["lsn"], a2["lsn"]))
    c1 = expect_write(h.post(NS + "/tx/%s/commit" % txn, headers=key("commit")), "keyed commit")
    c2 = expect_write(h.post(NS + "/tx/%s/commit" % txn, headers=key("commit")), "retried commit")
    check(c1["lsn"] == c2["lsn"], "a retried commit answered LSN %d, then %d" % (c1["lsn"], c2["lsn"]))
    check(kv_get(h, p + "idem:a", "GET after the keyed commit") == b"1", "keyed transaction value")
    # The log holds one begin, one part and one commit: the next write follows the commit.
    nxt = expect_write(h.put(NS + "/kv/" + p + "idem:b", '{"value":"%s"}' % b64("x")), "PUT")
    check(nxt["lsn"] == c1["lsn"] + 1, "retries took LSNs: the commit was %d, the next write %d" %
          (c1["lsn"], nxt["lsn"]))
    # Another key on the ended transaction is not a retry: it is unknown.
    expect_error(h.post(NS + "/tx/%s/commit" % txn, headers=key("commit-2")), 404,
                 "commit of an ended transaction with a new key", "transaction")


# --- metadata and backups -------------------------------------------------------------------------


def meta(h, p):
    expect_write(h.put(NS + "/kv/" + p + "meta", '{"value":"%s"}' % b64("m")), "PUT")
    doc = expect_json(h.get(NS + "/offset"), 200, "GET offset")
    check(doc.get("namespace") == "default", "offset: namespace %r" % doc.get("namespace"))
    for f in ("segmentId", "offset", "lsn", "durableLsn"):
        check(isinstance(doc.get(f), int), "offset: %s missing: %r" % (f, doc))
    doc = expect_json(h.get(NS + "/stats"), 200, "GET stats")
    for f in ("opsReceived", "opsFlushed", "currentSegment", "currentOffset"):
        check(isinstance(doc.get(f), int), "stats: %s missing: %r" % (f, doc))
    check("lastFlushTime" in doc, "stats: lastFlushTime missing: %r" % doc)
    check(doc["opsReceived"] > 0, "stats: opsReceived is 0 after writes")
    # Once the write is flushed (the namespace idle for 200-400 ms), lastFlushTime is the time of
    # that flush as the reference writes it: RFC 3339, UTC, to the second.
    written_lsn = expect_json(h.get(NS + "/offset"), 200, "GET offset")["lsn"]

    def flushed():
        d = expect_json(h.get(NS + "/stats"), 200, "GET stats")
        return d if d["flushedLsn"] >= written_lsn else None
    doc = wait_for("the write's flush", flushed, timeout=20, interval=0.1)
    t = doc.get("lastFlushTime")
    check(isinstance(t, str) and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", t) is not None,
          "stats: lastFlushTime after a flush is %r, not an RFC 3339 UTC time" % t)
    at = calendar.timegm(time.strptime(t, "%Y-%m-%dT%H:%M:%SZ"))
    check(abs(at - time.time()) < 60, "stats: lastFlushTime %s is not about now" % t)
    doc = expect_json(h.get(NS + "/checkpoint"), 200, "GET checkpoint")
    for f in ("recordProcessed", "segmentId", "offset", "lsn", "flushedLsn"):
        check(isinstance(doc.get(f), int), "checkpoint: %s missing: %r" % (f, doc))
    check(doc.get("namespace") == "default", "checkpoint: namespace %r" % doc.get("namespace"))
    check(doc["flushedLsn"] <= doc["lsn"], "checkpoint: flushedLsn above lsn: %r" % doc)
    # The checkpoint's position is where replay resumes: right after the flushed records. With
    # everything flushed that is the WAL's end; a write not yet flushed lies between the two.
    if doc["flushedLsn"] == doc["lsn"]:
        end = expect_json(h.get(NS + "/stats"), 200, "GET stats")
        expect_write(h.put(NS + "/kv/after-checkpoint", '{"value":"eA=="}'), "PUT after flush")
        later = expect_json(h.get(NS + "/checkpoint"), 200, "GET checkpoint")
        now = expect_json(h.get(NS + "/stats"), 200, "GET stats")
        if later["flushedLsn"] == doc["flushedLsn"]:
            check((later["segmentId"], later["offset"]) ==
                  (end["currentSegment"], end["currentOffset"]) and
                  (now["currentSegment"], now["currentOffset"]) > (later["segmentId"],
                                                                   later["offset"]),
                  "checkpoint position %r, the WAL's end %r before the write and %r after" %
                  ((later["segmentId"], later["offset"]),
                   (end["currentSegment"], end["currentOffset"]),
                   (now["currentSegment"], now["currentOffset"])))


def backups(h, p):
    # Fill more than one 1 MiB segment so that sealed segments exist.
    big = b64(os.urandom(60000))
    for i in range(24):
        expect_write(h.put(NS + "/kv/%sfill:%d" % (p, i), '{"value":"%s"}' % big), "PUT fill")
    root = os.path.realpath(os.path.join(server.data_dir, "backups", "default"))

    doc = expect_json(h.post(NS + "/wal/backup", '{"afterSegmentId":0,"backupDir":"wal/%sdaily"}'
                             % p), 200, "wal backup")
    check(isinstance(doc.get("backups"), list) and doc["backups"],
          "wal backup copied no sealed segment: %r" % doc)
    for b in doc["backups"]:
        check(isinstance(b.get("segmentId"), int), "wal backup entry lacks segmentId: %r" % b)
        path = os.path.realpath(b["path"])
        check(path.startswith(root + os.sep), "backup %s is outside %s" % (path, root))
        check(os.path.getsize(path) > 0, "backup file %s is empty or missing" % path)
    expect_error(h.post(NS + "/wal/backup", '{"backupDir":"wal/%sdaily"}' % p), 409,
                 "wal backup into a directory that is not empty")
    last = doc["backups"][-1]["segmentId"]
    doc = expect_json(h.post(NS + "/wal/backup", '{"afterSegmentId":%d,"backupDir":"wal/%sincr"}'
                             % (last, p)), 200, "incremental wal backup")
    check(all(b["segmentId"] > last for b in doc.get("backups", [])),
          "afterSegmentId %d not honoured: %r" % (last, doc))

    doc = expect_json(h.post(NS + "/btree/backup", '{"path":"snapshots/%susers.snapshot"}' % p),
                      200, "btree backup")
    path = os.path.realpath(doc.get("path", ""))
    check(path.startswith(root + os.sep), "btree backup %s is outside %s" % (path, root))
    check(isinstance(doc.get("bytes"), int) and doc["bytes"] > 0 and
          os.path.getsize(path) == doc["bytes"], "btree backup: bytes %r, file %s" %
          (doc.get("bytes"), path))
    left = [f for f in os.listdir(os.path.dirname(path)) if "~tmp" in f]
    check(not left, "btree backup left its temporary file: %r" % left)

    for bad in ["/etc/passwd", "../escape", "a/../../escape", "snapshots/../../x", "%2e%2e/x",
                "a/%2E%2E/%2e%2e/x", ""]:
        expect_error(h.post(NS + "/btree/backup", '{"path":"%s"}' % bad), 400,
                     "btree backup to %r" % bad)
        expect_error(h.post(NS + "/wal/backup", '{"backupDir":"%s"}' % bad), 400,
                     "wal backup to %r" % bad)


# --- beyond the reference -------------------------------------------------------------------------


def conditional(h, p):
    key = NS + "/kv/" + p + "cas"
    put = expect_write(h.put(key, '{"value":"%s"}' % b64("1")), "PUT")
    lsn = expect_json(h.get(key), 200, "GET")["lsn"]
    check(lsn == put["lsn"], "GET lsn differs from PUT lsn")
    put2 = expect_write(h.put(key, '{"value":"%s"}' % b64("2"), headers=["If-Match: %d" % lsn]),
                        "PUT If-Match current")
    expect(h.put(key, '{"value":"%s"}' % b64("3"), headers=["If-Match: %d" % lsn]), 412,
           "PUT If-Match stale")
    check(kv_get(h, p + "cas", "GET") == b"2", "a refused conditional put changed the value")
    expect(h.delete(key, headers=["If-Match: %d" % lsn]), 412, "DELETE If-Match stale")
    expect_write(h.delete(key, headers=["If-Match: %d" % put2["lsn"]]), "DELETE If-Match current")
    check(kv_get(h, p + "cas", "GET") is None, "conditional delete left the key")
    # A precondition a write cannot evaluate is refused, never ignored: the write does not happen.
    row = NS + "/row/" + p + "cas-row"
    expect_write(h.put(row, '{"columns":{"c":"%s"}}' % b64("1")), "PUT row")
    stale = ["If-Match: 1000000"]
    for method, path, body, hdrs in [
            ("PUT", row, '{"columns":{"c":"%s"}}' % b64("2"), stale),
            ("DELETE", row, None, stale),
            ("DELETE", row + "/columns?columns=c", None, stale),
            ("POST", NS + "/row/batch", '{"operation":"delete","rows":[{"rowKey":"%scas-row"}]}' % p,
             stale),
            ("POST", NS + "/kv/batch", '{"operation":"put","items":[{"key":"%scas","value":"%s"}]}' %
             (p, b64("2")), stale),
            ("PUT", key, '{"value":"%s"}' % b64("2"), ["If-None-Match: *"]),
            ("DELETE", key, None, ["If-Unmodified-Since: Sun, 22 Nov 2026 10:00:00 GMT"])]:
        expect_error(h.request(method, path, body=body, headers=hdrs), 400,
                     "%s %s with %s" % (method, path, hdrs[0]), hdrs[0].split(":")[0])
    check(row_get(h, p + "cas-row") == {"c": b"1"}, "a write with a refused precondition happened")
    check(kv_get(h, p + "cas", "GET") is None, "a write with a refused precondition happened")
    # Two lines of If-Match or Idempotency-Key: only one would be read, so neither is.
    for method, path, body, hdrs in [
            ("PUT", key, '{"value":"%s"}' % b64("4"), ["If-Match: 0", "If-Match: 5"]),
            ("POST", NS + "/kv/batch", '{"operation":"put","items":[{"key":"%scas","value":"%s"}]}' %
             (p, b64("4")), ["Idempotency-Key: a", "Idempotency-Key: b"])]:
        expect_error(h.request(method, path, body=body, headers=hdrs), 400,
                     "%s %s with %s twice" % (method, path, hdrs[0].split(":")[0]),
                     hdrs[0].split(":")[0] + " is given more than once")
    check(kv_get(h, p + "cas", "GET") is None, "a write with a repeated header happened")


def conditional_retry(h, p):
    """A conditional write with an Idempotency-Key that applied, sent again (its answer was lost):
    the first answer, although the key has moved since (by that very write); the write is not
    applied twice. Only a key the window does not hold is judged by its If-Match."""
    path = NS + "/kv/" + p + "cas-retry"
    body = '{"value":"%s"}' % b64("1")
    first = ["If-Match: 0", "Idempotency-Key: %scas-1" % p]
    l1 = expect_write(h.put(path, body, headers=first), "PUT If-Match 0 with a key")["lsn"]
    again = expect_write(h.put(path, body, headers=first), "the same PUT again")
    check(again["lsn"] == l1, "a retried conditional PUT got LSN %d, the first %d" %
          (again["lsn"], l1))
    check(expect_json(h.get(path), 200, "GET")["lsn"] == l1, "the retried PUT was applied again")
    second = ["If-Match: %d" % l1, "Idempotency-Key: %scas-2" % p]
    body2 = '{"value":"%s"}' % b64("2")
    l2 = expect_write(h.put(path, body2, headers=second), "PUT If-Match current with a key")["lsn"]
    check(expect_write(h.put(path, body2, headers=second), "the same PUT again")["lsn"] == l2,
          "a retried PUT If-Match %d did not get LSN %d" % (l1, l2))
    third = ["If-Match: %d" % l2, "Idempotency-Key: %scas-3" % p]
    l3 = expect_write(h.delete(path, headers=third), "DELETE If-Match current with a key")["lsn"]
    check(expect_write(h.delete(path, headers=third), "the same DELETE again")["lsn"] == l3,
          "a retried DELETE If-Match %d did not get LSN %d" % (l2, l3))
    check(kv_get(h, p + "cas-retry", "GET") is None, "the retried DELETE wrote the key")
    # Another request under a used key is refused as such (not judged by its If-Match).
    expect_error(h.put(path, body2, headers=["If-Match: %d" % l1, "Idempotency-Key: %scas-3" % p]),
                 422, "another PUT under a used key", "was used for a different request")
    # A key the window does not hold: its stale If-Match decides, nothing is written.
    expect(h.put(path, body2, headers=["If-Match: %d" % l2, "Idempotency-Key: %scas-4" % p]), 412,
           "PUT If-Match stale with a new key")
    check(kv_get(h, p + "cas-retry", "GET") is None, "a refused conditional PUT wrote the key")


def records_digest(h, p):
    """The internal records endpoint (what a follower forwards a keyed write's records to) refuses
    a unison-request-digest header that is present but not 32 lowercase hex digits, naming the
    header: only an absent one is a follower of an earlier version (digest unknown)."""
    path = "/internal/v1/default/records"
    good = "0123456789abcdef" * 2
    for value, what in [(good[:31], "not 31 bytes"), (good + "0", "not 33 bytes"),
                        (good.upper(), "byte 10 is not one"), ("g" + good[1:], "byte 0 is not one")]:
        hdrs = ["Idempotency-Key: %srecords-1" % p, "unison-request-digest: %s" % value]
        doc = expect_error(h.request("POST", path, body="", headers=hdrs), 400,
                           "records with unison-request-digest %r" % value,
                           "unison-request-digest must be 32 lowercase hex digits")
        check(what in doc["error"], "unison-request-digest %r: %r does not say %r" %
              (value, doc["error"], what))


def scans(h, p):
    keys = [p + "scan:%02d" % i for i in range(25)]
    for k in keys:
        expect_write(h.put(NS + "/kv/" + k, '{"value":"%s"}' % b64("v-" + k)), "PUT scan key")
    expect_write(h.put(NS + "/kv/" + p + "scan;after", '{"value":"%s"}' % b64("x")), "PUT")
    got, start, pages = [], None, 0
    while True:
        q = "prefix=%s&limit=10" % urllib.parse.quote(p + "scan:", safe="")
        if start:
            q += "&start=" + urllib.parse.quote(start, safe="")
        doc = expect_json(h.get(NS + "/kv?" + q), 200, "kv scan")
        items = doc.get("items")
        check(isinstance(items, list) and len(items) <= 10, "scan page: %r" % doc)
        for it in items:
            got.append((unb64(it["key"]).decode(), unb64(it["value"]).decode()))
        pages += 1
        start = doc.get("next")
        if not start or pages > 10:
            break
    check([k for k, _ in got] == keys, "kv scan returned %r" % [k for k, _ in got])
    check(all(v == "v-" + k for k, v in got), "kv scan values differ")
    check(pages == 3, "25 keys in pages of 10 took %d pages" % pages)
    check(doc.get("next") is None, "an exhausted scan's next is %r, not null" % doc.get("next"))
    for bad in ("1001", "0", "-1", "x"):
        expect_error(h.get(NS + "/kv?limit=" + bad), 400, "scan limit " + bad)

    for i in range(3):
        expect_write(h.put(NS + "/row/%srscan:%d" % (p, i), '{"columns":{"c":"%s"}}' % b64(str(i))),
                     "PUT row")
    doc = expect_json(h.get(NS + "/row?prefix=%srscan:" % p), 200, "row scan")
    text = repr(doc)
    for i in range(3):
        check(b64(p + "rscan:%d" % i) in text, "row scan lacks rscan:%d: %r" % (i, doc))


def namespaces(h, p):
    ns = p.rstrip(":") + "_e2e_ns"
    # An Idempotency-Key on a route that does not take one is refused, not ignored: a client (or
    # a forwarding hop) would count on a retry being answered as the first attempt was.
    key = ["Idempotency-Key: %s-ns" % p.rstrip(":")]
    for method, path, body in [("PUT", "/api/v1/" + ns, None),
                               ("DELETE", "/api/v1/default", None),
                               ("POST", "/admin/cluster/members", '{"id":9,"address":"127.0.0.1:1"}'),
                               ("DELETE", "/admin/cluster/members/9", None),
                               ("POST", "/admin/cluster/transfer", "{}")]:
        expect_error(h.request(method, path, body=body, headers=key), 400,
                     "%s %s with an Idempotency-Key" % (method, path),
                     "Idempotency-Key is not supported on %s %s" % (method, path))
    names = expect_json(h.get("/api/v1"), 200, "list namespaces").get("namespaces")
    check(ns not in names and "default" in names,
          "a refused keyed namespace create or delete happened: %r" % names)
    doc = expect_json(h.put("/api/v1/" + ns), 200, "create namespace")
    check(doc == {"success": True, "namespace": ns, "created": True}, "create answer %r" % doc)
    doc = expect_json(h.get("/api/v1"), 200, "list namespaces")
    names = doc.get("namespaces")
    check(isinstance(names, list) and ns in names and "default" in names and
          names == sorted(names), "namespace list %r" % doc)
    r = h.put("/api/v1/" + ns)
    check(r.status == 409, "creating an existing namespace: expected 409, got %r" % r)
    expect_write(h.put("/api/v1/%s/kv/k" % ns, '{"value":"%s"}' % b64("in " + ns)),
                 "PUT in the new namespace")
    doc = expect_json(h.get("/api/v1/%s/kv/k" % ns), 200, "GET in the new namespace")
    check(unb64(doc["value"]) == ("in " + ns).encode(), "namespaces are not isolated")
    doc = expect_json(h.delete("/api/v1/" + ns), 200, "delete namespace")
    check(doc.get("deleted") is True, "delete answer %r" % doc)
    expect_error(h.get("/api/v1/%s/kv/k" % ns), 404, "GET in a deleted namespace", "namespace")
    expect_error(h.put("/api/v1/bad.name!"), 400, "create a namespace with a bad name")
    expect_error(h.delete("/api/v1/%s_never_created" % p.rstrip(":")), 404,
                 "delete an unknown namespace")


def status(h, p):
    check(expect_json(h.get("/healthz"), 200, "healthz") == {"status": "ok"}, "healthz body")
    check(expect_json(h.get("/readyz"), 200, "readyz").get("ready") is True, "readyz body")
    doc = expect_json(h.get("/status/leader"), 200, "status/leader")
    check(doc.get("isLeader") is True,
          "status/leader does not say this single writer leads: %r" % doc)
    r = expect(h.get("/metrics"), 200, "metrics")
    text = r.body.decode(errors="replace")
    check("# TYPE" in text, "metrics are not Prometheus text")
    for word in ("request", "raft", "wal"):
        check(word in text.lower(), "metrics lack anything about %s" % word)


def parse_metrics(text):
    """Prometheus text exposition: {(name, frozenset(labels)): value}; every sample line must be
    `name{label="v",...} number` and every metric must have HELP and TYPE lines."""
    sample = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
    label = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')
    out, typed, helped = {}, set(), set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            typed.add(line.split()[2])
            continue
        if line.startswith("# HELP "):
            helped.add(line.split()[2])
            continue
        if not line or line.startswith("#"):
            continue
        m = sample.match(line)
        check(m is not None, "metrics line is not Prometheus text: %r" % line)
        labels = dict((k, v) for k, v, _ in label.findall(m.group(3) or ""))
        try:
            value = float(m.group(4))
        except ValueError:
            raise Failure("metrics value is not a number: %r" % line, "http")
        name = m.group(1)
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        check(name in typed or base in typed, "metric %s has no # TYPE line" % name)
        check(name in helped or base in helped, "metric %s has no # HELP line" % name)
        out[(name, frozenset(labels.items()))] = value
    return out


def metric(ms, name, **labels):
    return ms.get((name, frozenset(labels.items())), 0.0)


def metrics(h, p):
    """/metrics counts requests by route and code, has latency histograms, WAL bytes, flush lag
    and raft state, and its counters move by exactly what was done."""
    before = parse_metrics(expect(h.get("/metrics"), 200, "metrics").body.decode())
    for i in range(3):
        expect_write(h.put(NS + "/kv/%smetric%d" % (p, i), '{"value":"%s"}' % b64("m" * 5000)),
                     "PUT")
    expect_error(h.put(NS + "/kv/" + p + "metricbad", '{"value":"!"}'), 400, "bad PUT")
    r = expect(h.get("/metrics"), 200, "metrics")
    check(r.headers.get("content-type", "").startswith("text/plain"),
          "metrics content-type %r" % r.headers.get("content-type"))
    after = parse_metrics(r.body.decode())
    for code, n in (("200", 3), ("400", 1)):
        got = (metric(after, "unison_http_requests_total", route="kv_put", code=code) -
               metric(before, "unison_http_requests_total", route="kv_put", code=code))
        check(got == n, "kv_put %s counter moved by %r, expected %d" % (code, got, n))
    buckets = sorted(((float(dict(k[1])["le"]), v) for k, v in after.items()
                      if k[0] == "unison_http_request_duration_seconds_bucket" and
                      dict(k[1]).get("route") == "kv_put"), key=lambda x: x[0])
    check(buckets and buckets[-1][0] == float("inf"), "kv_put latency histogram lacks +Inf")
    check(all(a[1] <= b[1] for a, b in zip(buckets, buckets[1:])), "histogram not cumulative")
    count = metric(after, "unison_http_request_duration_seconds_count", route="kv_put")
    check(buckets[-1][1] == count and count >= 4, "histogram +Inf %r, count %r" %
          (buckets[-1][1], count))
    wal = (metric(after, "unison_wal_bytes", namespace="default") -
           metric(before, "unison_wal_bytes", namespace="default"))
    check(wal >= 3 * 5000, "WAL bytes grew by %r after 15 KB of writes" % wal)
    check(("unison_flush_lag_records", frozenset({("namespace", "default")})) in after,
          "no flush lag for namespace default")
    check(metric(after, "unison_lsn", namespace="default") >=
          metric(before, "unison_lsn", namespace="default") + 3, "unison_lsn did not move")
    check(metric(after, "unison_raft_leader") == 1, "raft state: this single writer not leader")
    check(metric(after, "unison_raft_leader_id") == 1, "raft leader id is not 1")


def min_lsn(h, p):
    put = expect_write(h.put(NS + "/kv/" + p + "mlsn", '{"value":"%s"}' % b64("x")), "PUT")
    doc = expect_json(h.get(NS + "/kv/%smlsn?min_lsn=%d" % (p, put["lsn"])), 200,
                      "GET ?min_lsn=applied")
    check(unb64(doc["value"]) == b"x", "GET ?min_lsn returned another value")
    r = h.get(NS + "/kv/%smlsn?min_lsn=%d&timeout_ms=200" % (p, put["lsn"] + 1000000), timeout=60)
    expect_error(r, 503, "a GET waiting for an LSN never written", "min_lsn")
    check(r.headers.get("retry-after") == "1", "min_lsn timeout without Retry-After: 1")
    # A timeout_ms out of range is a 400 whether or not the read would have to wait.
    for lsn in (put["lsn"], put["lsn"] + 1000000):
        expect_error(h.get(NS + "/kv/%smlsn?min_lsn=%d&timeout_ms=5001" % (p, lsn)), 400,
                     "min_lsn=%d with timeout_ms above 5000" % lsn, "timeout_ms")


# --- conventions the reference leaves open (docs/http-api.md "Conventions") ----------------------


def conventions(h, p):
    key = NS + "/kv/" + p + "conv"
    # Paths are exact: a trailing slash or an empty segment is no route; inside a key it is key.
    for path in ("/offset/", "/stats/", "/tx/begin/"):
        expect_error(h.get(NS + path), 404, "GET %s" % path, "no route")
    expect_error(h.get("/api/v1//kv/x"), 404, "empty namespace segment", "no route")
    expect_write(h.put(key + "/", '{"value":"%s"}' % b64("slash")), "PUT key ending in /")
    check(kv_get(h, p + "conv/", "GET key ending in /") == b"slash", "key with a trailing slash")
    check(kv_get(h, p + "conv", "GET key without it") is None, "trailing slash dropped from a key")
    # JSON: any Content-Type, unknown names ignored, duplicate names refused.
    expect_write(h.put(key, '{"value":"%s"}' % b64("form"),
                       headers=["Content-Type: application/x-www-form-urlencoded"]),
                 "PUT with curl -d's content type")
    expect_write(h.put(key, '{"value":"%s","ttl":5,"x":{"y":[1]}}' % b64("unknown")),
                 "PUT with unknown fields")
    check(kv_get(h, p + "conv", "GET") == b"unknown", "unknown fields changed the value")
    expect_error(h.put(key, '{"value":"%s","value":"%s"}' % (b64("a"), b64("b"))), 400,
                 "PUT with value twice", "duplicate")
    check(kv_get(h, p + "conv", "GET") == b"unknown", "a refused body changed the value")
    # Nesting: 2,048 levels are taken (the body's object and 2,047 arrays), 2,049 are a 400,
    # jansson's own message; a scalar inside the innermost container is a level too.
    def nested(arrays, inner=""):
        return '{"value":"%s","x":%s%s%s}' % (b64("deep"), "[" * arrays, inner, "]" * arrays)
    expect_write(h.put(key, nested(2047)), "PUT with 2,048 levels of JSON")
    check(kv_get(h, p + "conv", "GET") == b"deep", "the 2,048-level PUT wrote another value")
    for body, levels in ((nested(2048), 2049), (nested(2047, "1"), 2049)):
        expect_error(h.put(key, body.replace(b64("deep"), b64("deeper"))), 400,
                     "PUT with %d levels of JSON" % levels, "maximum parsing depth reached")
    check(kv_get(h, p + "conv", "GET") == b"deep", "a body nested too deep changed the value")
    # Expect: 100-continue, small and large bodies.
    for size in (10, 300000):
        expect_write(h.put(key, '{"value":"%s"}' % b64(os.urandom(size)),
                           headers=["Expect: 100-continue"]), "PUT with Expect, %d bytes" % size)
    # Row reads with ?columns=: names exact, none present is "not found".
    row = NS + "/row/" + p + "conv-row"
    expect_write(h.put(row, '{"columns":{"name":"%s","email":"%s"}}' % (b64("n"), b64("e"))),
                 "PUT row")
    check(row_get(h, p + "conv-row", ["name", "%20email"]) == {"name": b"n"},
          "columns=name, email: a name with a space matched another column")
    doc = expect_json(h.get(row + "?columns=nope"), 404, "GET row with absent columns only")
    check(doc.get("found") is False and doc.get("columns") == {}, "absent columns: %r" % doc)
    expect_error(h.get(row + "?columns=name,,email"), 400, "GET row with an empty column name")
    # Transaction ids are hex in either case.
    txn = begin(h, "put", "kv")
    expect_write(h.post(NS + "/tx/%s/kv" % txn.upper(), '{"key":"%sconv-tx","value":"%s"}' %
                        (p, b64("t"))), "append with the id in upper case")
    expect_write(h.post(NS + "/tx/%s/commit" % txn), "commit")
    check(kv_get(h, p + "conv-tx", "GET") == b"t", "the upper-case append was lost")
    # The value of a KV delete part is ignored, whatever it is: the key is deleted.
    keys = [p + "conv-del%d" % i for i in range(4)]
    for k in keys:
        expect_write(h.put(NS + "/kv/" + k, '{"value":"%s"}' % b64("x")), "PUT " + k)
    txn = begin(h, "delete", "kv")
    for k, value in zip(keys, ('"%s"' % b64("ignored"), '"not base64!"', "42", "null")):
        expect_write(h.post(NS + "/tx/%s/kv" % txn, '{"key":"%s","value":%s}' % (k, value)),
                     "delete part with the value %s" % value)
    expect_write(h.post(NS + "/tx/%s/commit" % txn), "commit of the deletes")
    for k in keys:
        check(kv_get(h, k, "GET after the delete") is None, "%s survived its delete part" % k)


# --- HEAD ---------------------------------------------------------------------------------------


def head(h, p):
    """HEAD on every GET route: GET's status and headers (Content-Length what GET sends), no body.
    Over HTTP/2 a body would be a protocol error for curl; raw_http1_head checks HTTP/1.1."""
    key = p + "head"
    put = expect_write(h.put(NS + "/kv/" + key, '{"value":"%s"}' % b64("headvalue")), "PUT")
    got = expect(h.get(NS + "/kv/" + key), 200, "GET kv")
    r = expect(h.head(NS + "/kv/" + key), 200, "HEAD kv")
    check(r.curl_rc == 0, "HEAD kv: curl failed: %s" % r.curl_err)
    check(r.headers.get("etag") == '"%d"' % put["lsn"], "HEAD kv: ETag %r" % r.headers.get("etag"))
    check(r.headers.get("content-length") == str(len(got.body)),
          "HEAD kv: Content-Length %r, GET sends %d bytes" %
          (r.headers.get("content-length"), len(got.body)))
    check("json" in r.headers.get("content-type", ""), "HEAD kv: content-type %r" %
          r.headers.get("content-type"))
    expect(h.head(NS + "/kv/" + p + "head-missing"), 404, "HEAD of a missing key")
    expect(h.head("/api/v1/invalid-ns/kv/x"), 404, "HEAD in an unknown namespace")
    for path in ("/offset", "/stats", "/checkpoint", "/kv?limit=1", "/row?limit=1"):
        r = expect(h.head(NS + path), 200, "HEAD " + path)
        check(r.curl_rc == 0, "HEAD %s: curl failed: %s" % (path, r.curl_err))
    # A LOB's size and LSN without downloading it.
    data = os.urandom(150000)
    txn = begin(h, "put", "lob")
    expect_write(h.post(NS + "/tx/%s/lob?key=%shead-lob" % (txn, p), data,
                        headers=["Content-Type: application/octet-stream"]), "tx append lob")
    commit = expect_write(h.post(NS + "/tx/%s/commit" % txn), "tx commit lob")
    r = expect(h.head(NS + "/lob?key=%shead-lob" % p), 200, "HEAD lob")
    check(r.curl_rc == 0, "HEAD lob: curl failed: %s" % r.curl_err)
    check(r.headers.get("content-length") == str(len(data)) and
          r.headers.get("x-unison-lsn") == str(commit["lsn"]) and
          r.headers.get("content-type") == "application/octet-stream",
          "HEAD lob: headers %r, expected the size %d and the commit's LSN %d" %
          (r.headers, len(data), commit["lsn"]))
    expect(h.head(NS + "/lob?key=%shead-no-lob" % p), 404, "HEAD of a missing lob")
    # GET routes list HEAD in Allow; the replication streams do not take it.
    r = expect(h.request("PATCH", NS + "/kv/" + key, body="{}"), 405, "PATCH kv")
    check(r.headers.get("allow") == "GET, PUT, DELETE, HEAD", "PATCH kv: Allow %r" %
          r.headers.get("allow"))
    r = expect(h.head(NS + "/snapshot"), 405, "HEAD snapshot")
    check(r.headers.get("allow") == "GET", "HEAD snapshot: Allow %r" % r.headers.get("allow"))
    r = expect(h.head(NS + "/tx/begin"), 405, "HEAD tx/begin")
    check(r.headers.get("allow") == "POST", "HEAD tx/begin: Allow %r" % r.headers.get("allow"))


def raw_http1_head():
    """HTTP/1.1 HEAD answers carry no body: a GET pipelined behind two HEADs (a LOB and a key) on
    one connection gets its own answer right after their headers."""
    import socket
    h = server.http(False)
    data = os.urandom(70000)
    txn = begin(h, "put", "lob")
    expect_write(h.post(NS + "/tx/%s/lob?key=raw-head-lob" % txn, data,
                        headers=["Content-Type: application/octet-stream"]), "tx append lob")
    expect_write(h.post(NS + "/tx/%s/commit" % txn), "tx commit lob")
    expect_write(h.put(NS + "/kv/raw-head", '{"value":"%s"}' % b64("v")), "PUT")
    c = socket.create_connection(("127.0.0.1", server.ports["http"]))
    try:
        c.settimeout(10)
        c.sendall(b"HEAD /api/v1/default/lob?key=raw-head-lob HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"HEAD /api/v1/default/kv/raw-head HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /api/v1/default/kv/raw-head HTTP/1.1\r\nHost: x\r\n\r\n")
        buf = b""
        # Until the GET's body has come (or, if the HEADs sent bodies, more bytes than that).
        while not buf.endswith(b"}\n") and len(buf) < 200000:
            more = c.recv(65536)
            if not more:
                break
            buf += more
    finally:
        c.close()
    parts = buf.split(b"\r\n\r\n")
    check(len(parts) == 4 and parts[0].startswith(b"HTTP/1.1 200") and
          b"content-length: %d" % len(data) in parts[0].lower() and
          parts[1].startswith(b"HTTP/1.1 200") and parts[2].startswith(b"HTTP/1.1 200") and
          parts[3].startswith(b'{"value":"dg=="'),
          "HEAD, HEAD, GET on one connection: expected three answers, only the GET's with a body, "
          "got %d bytes: %r" % (len(buf), buf[:600]))


# --- documented errors ----------------------------------------------------------------------------


def errors(h, p):
    expect_error(h.put(NS + "/kv/" + p + "e", '{"value":"not base64!"}'), 400, "invalid base64",
                 "base64")
    expect_error(h.put(NS + "/kv/" + p + "e", '{"value":'), 400, "malformed JSON")
    expect_error(h.put(NS + "/kv/" + p + "e", '{"valu":"%s"}' % b64("x")), 400, "no value field")
    expect_error(h.put(NS + "/kv/" + p + "e", '{"value":12}'), 400, "value not a string")
    expect_error(h.put(NS + "/row/" + p + "e", '{"columns":{"c":"%%%"}}'), 400,
                 "row with invalid base64", "base64")
    expect_error(h.post(NS + "/tx/begin", '{"operation":"put","entryType":"blob"}'), 400,
                 "begin with an unknown entryType")
    expect_error(h.post(NS + "/tx/begin", '{"operation":"upsert","entryType":"kv"}'), 400,
                 "begin with an unknown operation")

    for path, method, body in [("/kv/x", "GET", None), ("/kv/x", "PUT", '{"value":""}'),
                               ("/kv/x", "DELETE", None), ("/row/x", "GET", None),
                               ("/kv/batch", "POST", '{"operation":"put","items":[]}'),
                               ("/tx/begin", "POST", '{"operation":"put","entryType":"kv"}'),
                               ("/lob?key=x", "GET", None), ("/offset", "GET", None),
                               ("/stats", "GET", None), ("/checkpoint", "GET", None)]:
        expect_error(h.request(method, "/api/v1/invalid-ns" + path, body=body), 404,
                     "%s %s in an unknown namespace" % (method, path),
                     "namespace not found: invalid-ns")

    doc = expect_json(h.get(NS + "/kv/" + p + "never-written"), 404, "missing key")
    check(doc == {"value": "", "found": False} or
          (doc.get("value") == "" and doc.get("found") is False),
          "missing key answer %r" % doc)
    expect_error(h.post(NS + "/tx/2a3b4c5d6e7f8a9b0c1d2e3f4a5b6c7d/commit"), 404,
                 "commit of an unknown transaction", "transaction not found")
    expect_error(h.post(NS + "/tx/2a3b4c5d6e7f8a9b0c1d2e3f4a5b6c7d/kv", '{"key":"a","value":""}'),
                 404, "append to an unknown transaction", "transaction not found")
    expect_error(h.get(NS + "/no-such-route"), 404, "unknown route")
    r = h.request("PATCH", NS + "/kv/x", body='{"value":""}')
    check(r.status == 405 and "GET" in r.headers.get("allow", ""),
          "PATCH kv: expected 405 with Allow, got %r (Allow %r)" % (r, r.headers.get("allow")))


# --- one HTTP/1.1 connection, raw: what arrives while a request is being answered ---------------


def raw_http1_while_answering():
    """h2o pauses a connection's reads while it answers a request, and the writer keeps that
    pause without epoll_ctl (core/http/read_pause.c): bytes, a FIN or a reset that arrive during a
    write's commit must end the pause and be seen exactly as before. Two PUTs and a GET sent in
    one packet are all answered, in order; a PUT followed at once by the client's FIN is answered
    and the connection then closed by the server; a PUT followed by a reset leaves the server
    serving; each answered write is readable on a fresh connection."""
    import socket
    port = server.ports["http"]

    def pauses():
        text = server.http(False).get("/metrics").body.decode()
        got = dict(re.findall(r"(?m)^(unison_(?:http_read_pauses(?:_ended)?|epoll_rearms_skipped)"
                              r"_total) (\d+)$", text))
        check(len(got) == 3, "/metrics lacks the read pause counters: %r" % got)
        return tuple(int(got[k]) for k in ("unison_http_read_pauses_total",
                                          "unison_http_read_pauses_ended_total",
                                          "unison_epoll_rearms_skipped_total"))

    before = pauses()

    def put(key, value, extra=b""):
        body = ('{"value":"%s"}' % b64(value)).encode()
        return (b"PUT " + (NS + "/kv/" + key).encode() + b" HTTP/1.1\r\nHost: x\r\n" + extra +
                b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) +
                body)

    def read_answers(sock, n, timeout=10):
        sock.settimeout(timeout)
        data, answers = b"", []
        while len(answers) < n:
            head_end = data.find(b"\r\n\r\n")
            if head_end >= 0:
                head = data[:head_end].decode("latin-1")
                m = re.search(r"(?im)^content-length: *(\d+)", head)
                length = int(m.group(1)) if m else 0
                if len(data) >= head_end + 4 + length:
                    answers.append((int(head.split()[1]), data[head_end + 4:head_end + 4 + length]))
                    data = data[head_end + 4 + length:]
                    continue
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return answers, data

    # Pipelined: the second and third requests arrive with the first, or while it commits.
    with socket.create_connection(("127.0.0.1", port)) as c:
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.sendall(put("pipe-1", b"one"))
        time.sleep(0.0005)
        c.sendall(put("pipe-2", b"two") +
                  b"GET " + (NS + "/kv/pipe-1").encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        answers, _ = read_answers(c, 3)
        check([a[0] for a in answers] == [200, 200, 200],
              "pipelined PUT, PUT, GET: statuses %r" % [a[0] for a in answers])
        lsns = [json.loads(a[1])["lsn"] for a in answers]
        check(lsns[0] < lsns[1] and lsns[2] == lsns[0],
              "pipelined PUT, PUT, GET: LSNs %r (the GET must see the first PUT)" % lsns)
    # The client's FIN right behind its request: answered, then the server closes.
    with socket.create_connection(("127.0.0.1", port)) as c:
        c.sendall(put("fin-1", b"fin"))
        c.shutdown(socket.SHUT_WR)
        answers, rest = read_answers(c, 2)
        check([a[0] for a in answers] == [200] and rest == b"",
              "PUT then FIN: expected one 200 answer then the close, got %r, %r" % (answers, rest))
    # A reset right behind the request: the server goes on serving others.
    c = socket.create_connection(("127.0.0.1", port))
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.sendall(put("rst-1", b"rst"))
    c.close()
    h = server.http(False)
    for key, value in (("pipe-1", b"one"), ("pipe-2", b"two"), ("fin-1", b"fin")):
        check(kv_get(h, key, "GET %s" % key) == value, "GET %s after the raw connection" % key)
    # h2o stops reading at each request and restarts after each answer (reqread_start), so each
    # request pauses once: the three GETs above and the /metrics request below make 4, the
    # pipelined PUT, PUT, GET 3 more and the PUT before the FIN 1 (the reset may come before its
    # PUT is read). At least 8, then, of which the raw connections' alone give more than 4. The
    # FIN arrives before the PUT's commit can end (that needs another turn of the loop), so at
    # least that pause ended on an event: the path above went through it, not around it.
    after = pauses()
    check(after[0] - before[0] >= 8 and after[1] - before[1] >= 1,
          "read pauses %r -> %r: fewer than 8 pauses (the raw connections' requests were not "
          "paused) or none ended by an event" % (before, after))
    # Each answer that ended a pause left libuv a no-op re-registration, which was left out.
    check(after[2] > before[2], "no epoll re-registration was left out: %r -> %r" % (before, after))


def wal_history(key, from_lsn, to_lsn):
    """The LSNs of the WAL's records that write key (KV PUT or DELETE, one entry each, as HTTP
    and RESP write them) between from_lsn and to_lsn, read back through the replication stream
    (docs/replication.md: frames of u8 version, u8 type, u16, u32 count, u64 first LSN, u32 body
    length, u32 CRC; a records frame's body holds WAL frames: u32 CRC, u32 length, the record,
    an 8-byte trailer, padded to 8)."""
    url = "http://127.0.0.1:%d%s/wal/stream?from=%d" % (server.ports["http"], NS, from_lsn)
    lsns, seen, data = [], 0, b""
    deadline = time.time() + 30
    while seen < to_lsn and time.time() < deadline:
        p = subprocess.run(["curl", "-sN", "-m", "3", url], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, timeout=30)
        data = p.stdout
        lsns, seen = [], from_lsn - 1
        off = 0
        while len(data) - off >= 24:
            _, typ, _, count, lsn, blen, _ = struct.unpack_from("<BBHIQII", data, off)
            if len(data) - off - 24 < blen:
                break
            body = data[off + 24:off + 24 + blen]
            off += 24 + blen
            if typ != 1:
                continue
            at = 0
            for i in range(count):
                n = struct.unpack_from("<I", body, at + 4)[0]
                rec = body[at + 8:at + 8 + n]
                at += (16 + n + 7) & ~7
                seen = lsn + i
                if rec[2] != 1 or struct.unpack_from("<I", rec, 4)[0] != 1:
                    continue  # not a one-entry KV record
                kl = struct.unpack_from("<H", rec, 72)[0]
                if rec[74:74 + kl] == key and lsn + i <= to_lsn:
                    lsns.append(lsn + i)
    check(seen >= to_lsn, "the WAL stream from %d ended at LSN %d, before %d" %
          (from_lsn, seen, to_lsn))
    return lsns


def cas_race():
    """A compare-and-set loop over HTTP (GET the key's LSN, PUT with If-Match that LSN) while
    redis-cli SETs the same key every few milliseconds (some CAS win, some lose): every CAS that succeeded must have replaced
    exactly the version it named. The WAL holds the key's history: the record before each
    successful CAS's must have its If-Match LSN, or a SET slipped between the check and the write
    (a lost update). The condition is judged by the FSM as it applies the record, so none can."""
    h = server.http(False)
    key = "cas-race"
    path = NS + "/kv/" + key
    start = expect_write(h.put(path, '{"value":"%s"}' % b64("0")), "PUT cas-race")["lsn"]
    sets = subprocess.Popen(["redis-cli", "-h", "127.0.0.1", "-p", str(server.ports["resp"]),
                             "-r", "800", "-i", "0.008", "SET", key, "resp"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    won, lost, i = [], 0, 0
    try:
        while sets.poll() is None and i < 1000:
            i += 1
            cur = expect_json(h.get(path), 200, "GET cas-race")["lsn"]
            r = h.put(path, '{"value":"%s"}' % b64("cas-%d" % i), headers=["If-Match: %d" % cur])
            if r.status == 412:
                lost += 1
                doc = r.json()
                check(doc.get("lsn", 0) > cur and
                      ("If-Match %d but the key is at LSN %d" % (cur, doc["lsn"])) in
                      doc.get("error", ""), "412 body %r for If-Match %d" % (doc, cur))
                continue
            won.append((cur, expect_write(r, "PUT cas-race If-Match %d" % cur)["lsn"]))
    finally:
        if sets.poll() is None:
            sets.kill()
        sets.wait(30)
    check(len(won) > 0 and lost > 0, "the race was not run: %d CAS won, %d refused" %
          (len(won), lost))
    last = max(l for _, l in won)
    history = wal_history(key.encode(), start, last)
    before = {history[k]: history[k - 1] for k in range(1, len(history))}
    bad = [(m, l, before.get(l)) for m, l in won if before.get(l) != m]
    check(not bad, "%d of %d successful CAS overwrote another version than their If-Match "
          "(If-Match, LSN, the record before it): %r" % (len(bad), len(won), bad[:5]))


# Each route family over both protocols, with its own key prefix.
CASES = []
for proto, http2 in (("h1", False), ("h2", True)):
    for fn in (kv, kv_batch, rows, row_batch, txn_kv, txn_row, txn_lob, txn_idempotent, meta, backups, conditional,
               conditional_retry, records_digest, scans, namespaces, status, metrics, min_lsn,
               conventions, head, errors):
        def case(fn=fn, proto=proto, http2=http2):
            fn(server.http(http2), proto + ":")
        case.__name__ = "%s_%s" % (fn.__name__, proto)
        CASES.append(case)


def start():
    server.start()


start.__name__ = "start"
suite.run([start] + CASES + [raw_http1_while_answering, raw_http1_head, cas_race])
