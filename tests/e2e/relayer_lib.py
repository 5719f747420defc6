"""What the replication tests (relayers and writer clusters) compare: a namespace's contents read over HTTP (every KV pair with its
LSN, every row, given LOBs), and WAL record bytes per LSN read from the segment files
(docs/format-wal.md)."""

import glob
import os
import struct

from harness import Failure, check, expect_json, unb64


# --- what a namespace holds, read over HTTP -------------------------------------------------------


def scan_all(h, path):
    items, start = [], None
    while True:
        q = "%s?limit=1000%s" % (path, "&start=" + start if start else "")
        doc = expect_json(h.get(q), 200, "scan " + path)
        items += doc["items"]
        start = doc.get("next")
        if not start:
            return items


def dump(node, lobs, ns="default"):
    """Every KV pair (with its LSN), every row and the given LOBs, as plain data."""
    h = node.http()
    kv = {unb64(i["key"]): (unb64(i["value"]), i.get("lsn")) for i in
          scan_all(h, "/api/v1/%s/kv" % ns)}
    rows = {unb64(i["key"]): {c: unb64(v) for c, v in i["columns"].items()} for i in
            scan_all(h, "/api/v1/%s/row" % ns)}
    blobs = {}
    for key in lobs:
        r = h.get("/api/v1/%s/lob?key=%s" % (ns, key))
        blobs[key] = r.body if r.status == 200 else r.status
    return kv, rows, blobs


def check_same(a_node, b_node, lobs, what):
    a, b = dump(a_node, lobs), dump(b_node, lobs)
    for part, x, y in (("KV pairs", a[0], b[0]), ("rows", a[1], b[1]), ("LOBs", a[2], b[2])):
        if x != y:
            missing = [k for k in x if k not in y][:5]
            extra = [k for k in y if k not in x][:5]
            differ = [k for k in x if k in y and x[k] != y[k]][:5]
            raise Failure("%s: %s differ between %s (%d) and %s (%d): missing %r, extra %r, "
                          "different %r" % (what, part, a_node.name, len(x), b_node.name, len(y),
                                            missing, extra, differ), "relayer")
    check(len(a[0]) > 0, "%s: nothing to compare" % what)


# --- WAL bytes per LSN, read from the segment files ------------------------------------------------

TRAILER = bytes.fromhex("DEADBEEFFEEDFACE")


def wal_records(node, ns="default", part="relayer"):
    """{lsn: record bytes} of every frame in the node's WAL of ns; checks that each record carries
    its position's LSN and that the LSNs are dense (a failure is put on part)."""
    out = {}
    for path in sorted(glob.glob(os.path.join(node.data_dir, "namespaces", ns, "wal", "*.seg"))):
        with open(path, "rb") as f:
            seg = f.read()
        write_off, count = struct.unpack_from("<QQ", seg, 24)
        first = struct.unpack_from("<Q", seg, 44)[0]
        off, n = 64, 0
        while off + 16 <= len(seg):
            crc, length = struct.unpack_from("<II", seg, off)
            if length == 0 or off + 16 + length > len(seg) or \
                    seg[off + 8 + length:off + 16 + length] != TRAILER:
                break
            data = seg[off + 8:off + 8 + length]
            lsn = struct.unpack_from("<Q", data, 8)[0]
            check(lsn == first + n, "%s: %s frame %d carries LSN %d, expected %d" %
                  (node.name, os.path.basename(path), n, lsn, first + n), part)
            check(lsn not in out, "%s: LSN %d twice in the WAL" % (node.name, lsn), part)
            out[lsn] = data
            off += (16 + length + 7) & ~7
            n += 1
    if out:
        lo, hi = min(out), max(out)
        check(len(out) == hi - lo + 1, "%s: WAL has gaps between LSN %d and %d (%d records)" %
              (node.name, lo, hi, len(out)), part)
    return out


def check_wal_equal(upstream, follower, upto):
    up, fo = wal_records(upstream), wal_records(follower)
    check(fo and max(fo) >= upto, "%s's WAL ends at %s, expected LSN %d" %
          (follower.name, max(fo) if fo else None, upto), "relayer")
    common = [l for l in fo if l in up]
    check(len(common) > 0, "no LSN in both WALs", "relayer")
    for lsn in common:
        if up[lsn] != fo[lsn]:
            raise Failure("LSN %d: %s's record bytes differ from %s's" %
                          (lsn, follower.name, upstream.name), "relayer")
    return len(common)


