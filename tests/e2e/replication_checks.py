"""Checks shared by the replication end-to-end tests: what a namespace holds, read over HTTP, and
the record bytes of a node's WAL segment files per LSN (docs/format-wal.md)."""

import glob
import os
import struct

from harness import Failure, check, expect_json

TRAILER = bytes.fromhex("deadbeeffeedface")


def scan_all(h, path):
    """Every item of an ordered scan (kv or row), following the resume cursor."""
    items, start = [], None
    while True:
        q = "%s?limit=1000%s" % (path, "&start=" + start if start else "")
        doc = expect_json(h.get(q), 200, "scan " + path)
        items += doc["items"]
        start = doc.get("next")
        if not start:
            return items


def wal_records(node, ns="default"):
    """{lsn: record bytes} of every frame in the node's WAL of ns; checks density."""
    out = {}
    for path in sorted(glob.glob(os.path.join(node.data_dir, "namespaces", ns, "wal", "*.seg"))):
        with open(path, "rb") as f:
            seg = f.read()
        first = struct.unpack_from("<Q", seg, 44)[0]
        off, n = 64, 0
        while off + 16 <= len(seg):
            length = struct.unpack_from("<I", seg, off + 4)[0]
            if length == 0 or off + 16 + length > len(seg) or \
                    seg[off + 8 + length:off + 16 + length] != TRAILER:
                break
            data = seg[off + 8:off + 8 + length]
            lsn = struct.unpack_from("<Q", data, 8)[0]
            check(lsn == first + n, "%s: %s frame %d carries LSN %d, expected %d" %
                  (node.name, os.path.basename(path), n, lsn, first + n), "relayer")
            check(lsn not in out, "%s: LSN %d twice in the WAL" % (node.name, lsn), "relayer")
            out[lsn] = data
            off += (16 + length + 7) & ~7
            n += 1
    if out:
        lo, hi = min(out), max(out)
        check(len(out) == hi - lo + 1, "%s: WAL has gaps between LSN %d and %d (%d records)" %
              (node.name, lo, hi, len(out)), "relayer")
    return out


def check_wal_equal(upstream, follower, upto):
    """The follower's WAL reaches upto and holds the upstream's record bytes at every LSN both
    hold. Returns how many LSNs were compared."""
    up, fo = wal_records(upstream), wal_records(follower)
    check(fo and max(fo) >= upto, "%s's WAL ends at %s, expected LSN %d" %
          (follower.name, max(fo) if fo else None, upto), "relayer")
    common = [lsn for lsn in fo if lsn in up]
    check(len(common) > 0, "no LSN in both WALs", "relayer")
    for lsn in common:
        if up[lsn] != fo[lsn]:
            raise Failure("LSN %d: %s's record bytes differ from %s's" %
                          (lsn, follower.name, upstream.name), "relayer")
    return len(common)
