#!/usr/bin/env python3
"""End to end, a relayer behind a fault-injecting proxy (tests/e2e/fault_proxy.py): a WAL stream
that is corrupted, truncated, black-holed (no FIN, no RST: only missing heartbeats tell) or slowed
down is detected, nothing of a damaged frame is applied, the relayer reconnects by itself and
converges: the same data as the writer, and its WAL holds the writer's record bytes at every LSN.
Then `?acks=isr` writes: answered once the relayer acknowledged them (promptly, not at its
once-a-second idle ack), and 503 naming the count once the relayer is stopped. Last, writes
forwarded by relayers whose answer from the writer is lost: "outcome unknown" over HTTP and, two
hops down, over RESP, and applied once.

Each case stops the relayer, writes ~300 KiB more on the writer, arms one fault for the next
connection through the proxy, and starts the relayer again: it resumes from its own last LSN, so
the damaged connection carries the catch-up of exactly those records. A copy damaged on disk
while the relayer is stopped is set aside and bootstrapped again.

usage: test_relayer_faults.py path/to/unison-writer path/to/unison-relayer"""

import glob
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fault_proxy import FaultProxy  # noqa: E402
from harness import (Relayer, Suite, b64, check, expect_json, expect_write,  # noqa: E402
                     redis_cli, unb64, wait_for)
from relayer_lib import check_wal_equal, scan_all, wal_records  # noqa: E402

if len(sys.argv) < 3:
    sys.exit(__doc__)
RELAYER = os.path.abspath(sys.argv[2])
suite = Suite("relayer-faults")
suite.only = sys.argv[3:]
NS = "/api/v1/default"

writer = suite.writer("w", args=["--set", "replication.ack_timeout_ms=2000"])
state = {"proxy": None, "relayer": None, "n": 0}


def setup():
    """The relayer follows the writer through the proxy."""
    writer.start()
    proxy = FaultProxy(writer.ports["http"])
    state["proxy"] = proxy
    r = Relayer(RELAYER, suite.workdir, "r1", ["http://127.0.0.1:%d" % proxy.port])
    suite.writers.append(r)  # killed by the runner if a case fails
    state["relayer"] = r
    r.start()
    upto = write_batch()
    r.wait_lsn(upto)


def last_lsn(node):
    return expect_json(node.http().get(NS + "/checkpoint"), 200, "checkpoint")["lsn"]


def write_batch(batches=10, per_batch=30):
    """batches KV batch records of per_batch 1 KiB values (~300 KiB); returns the last LSN."""
    h = writer.http()
    lsn = 0
    for _ in range(batches):
        items = []
        for _ in range(per_batch):
            state["n"] += 1
            i = state["n"]
            items.append('{"key":"k%06d","value":"%s"}' % (i, b64((b"%08d" % i) * 128)))
        body = '{"operation":"put","items":[%s]}' % ",".join(items)
        lsn = expect_write(h.post(NS + "/kv/batch", body), "batch up to k%06d" % state["n"],
                           lsn)["lsn"]
    return lsn


def converged(upto, what):
    """The relayer applied upto, holds the writer's KV pairs, and its WAL bytes equal."""
    r = state["relayer"]
    r.wait_lsn(upto, timeout=60)
    want = {unb64(i["key"]): unb64(i["value"]) for i in scan_all(writer.http(), NS + "/kv")}
    got = {unb64(i["key"]): unb64(i["value"]) for i in scan_all(r.http(), NS + "/kv")}
    check(got == want, "%s: the relayer holds %d keys, the writer %d, %d differ" %
          (what, len(got), len(want), sum(1 for k in want if got.get(k) != want[k])), "relayer")
    check_wal_equal(writer, r, upto)


def reconnects():
    return state["relayer"].status()["reconnects"]


def fault_case(arm, what, expect_reconnect=True):
    r, proxy = state["relayer"], state["proxy"]
    r.stop_clean()
    upto = write_batch()
    fired0 = proxy.faults_fired
    arm(proxy)
    r.start()  # its counters start at 0
    converged(upto, what)
    if expect_reconnect:
        check(proxy.faults_fired == fired0 + 1, "%s: the fault did not fire" % what, "relayer")
        check(reconnects() >= 1, "%s: converged without a reconnect" % what, "relayer")
        check(proxy.connections >= 2, "%s: one connection only" % what, "relayer")


def corrupt():
    # 100 KiB into the catch-up: inside the records, past the headers and the first heartbeat.
    fault_case(lambda p: p.corrupt(100 * 1024), "a flipped bit in the stream")


def truncate():
    fault_case(lambda p: p.truncate(150 * 1024), "a stream cut in the middle of a frame")


def blackhole():
    # The connection stays open and silent: only the missing heartbeats can tell.
    fault_case(lambda p: p.blackhole(120 * 1024), "a black-holed stream")


def delay():
    fault_case(lambda p: p.delay(20), "a slow stream", expect_reconnect=False)


def damaged_copy():
    """A byte flipped in the first record of the relayer's active WAL segment while it is
    stopped. Its shutdown flush raised the WAL's durable floor past that record, so this is
    damage, not a torn write (docs/format-wal.md "Durable floor"): the relayer moves its copy
    aside, bootstraps the namespace again from the writer and converges, instead of refusing to
    start."""
    r = state["relayer"]
    r.stop_clean()
    upto = write_batch()
    wal = os.path.join(r.data_dir, "namespaces", "default", "wal")
    seg = sorted(glob.glob(os.path.join(wal, "*.seg")))[-1]
    with open(seg, "r+b") as f:
        head = f.read(64 + 16)
        check(int.from_bytes(head[40:44], "little") == 1 and head[68:72] != b"\0" * 4,
              "%s is not an active segment holding a record" % seg, "relayer")
        f.seek(64 + 8 + 24)  # inside the first record's data
        b = f.read(1)
        f.seek(64 + 8 + 24)
        f.write(bytes([b[0] ^ 0xFF]))
    r.start()
    converged(upto, "a damaged copy")
    aside = glob.glob(os.path.join(r.data_dir, "namespaces", "default.corrupt-*"))
    check(len(aside) == 1, "the damaged copy was not kept aside: %r" % aside, "relayer")
    log = r.log_tail(200)
    check(os.path.basename(seg) in log and "durable floor" in log and
          "bootstrapped again from the upstream" in log,
          "the log does not say what was damaged and what became of it:\n" + log, "relayer")


def acks_isr():
    r = state["relayer"]
    h = writer.http()
    took = []
    for i in range(5):
        t0 = time.monotonic()
        doc = expect_write(h.put(NS + "/kv/isr%d?acks=isr" % i, '{"value":"%s"}' % b64("v")),
                           "acks=isr write %d" % i)
        took.append(time.monotonic() - t0)
        # Answered only once the relayer applied it: readable there at once.
        got = expect_json(r.http().get(NS + "/kv/isr%d" % i), 200, "isr%d on the relayer" % i)
        check(unb64(got["value"]) == b"v" and got["lsn"] == doc["lsn"],
              "isr%d on the relayer: %r" % (i, got), "relayer")
    # Acks follow applies (ack_min_interval_ms 5), not the 1 s idle interval: 5 writes in
    # well under 5 idle intervals.
    check(sum(took) < 2.5, "5 acks=isr writes took %.2f s (%s)" %
          (sum(took), ", ".join("%.3f" % t for t in took)), "relayer")
    print("    acks=isr write latencies: %s s" % ", ".join("%.3f" % t for t in took))
    r.stop_clean()
    t0 = time.monotonic()
    resp = h.put(NS + "/kv/isr-down?acks=isr", '{"value":"%s"}' % b64("w"))
    took = time.monotonic() - t0
    doc = expect_json(resp, 503, "acks=isr with the relayer stopped")
    check(doc.get("acknowledged") == 0 and doc.get("required") == 1,
          "503 names the count: %r" % doc, "relayer")
    check(1.8 < took < 6, "timed out after the configured 2 s: %.2f s" % took, "relayer")
    # The write itself is committed, and the relayer gets it when it comes back.
    r.start()
    r.wait_lsn(doc["lsn"])


def in_wal(value):
    """How many of the writer's WAL records hold value, once its WAL holds every write."""
    last = last_lsn(writer)
    wait_for("the writer's WAL at LSN %d" % last,
             lambda: max(wal_records(writer, part="relayer"), default=0) >= last, 20)
    return sum(1 for rec in wal_records(writer, part="relayer").values() if value in rec)


def forward_in_doubt():
    """r1 forwards writes to the writer through the proxy, r2 forwards to r1. The writer's answer
    to a forwarded write is lost (its connection closed without a byte; the proxy keeps
    listening): r1 answers it "outcome unknown" (503, unison-outcome: unknown) and does not send
    it again; a RESP write on r2 whose answer r1 lost is "-ERR outcome unknown", not "-ERR
    unavailable" (which says nothing was applied). Each is in one WAL record."""
    proxy = state["proxy"]
    fw = ["--set", "relayer.forward_writes=1"]
    r1 = Relayer(RELAYER, suite.workdir, "rf1", ["http://127.0.0.1:%d" % proxy.port], args=fw)
    suite.writers.append(r1)
    r1.start()
    r2 = Relayer(RELAYER, suite.workdir, "rf2", [r1.url()], args=fw)
    suite.writers.append(r2)
    r2.start()
    # The kept-alive connection a re-send would be made on.
    expect_write(r1.http().put(NS + "/kv/warm", '{"value":"%s"}' % b64("w")), "PUT warm on r1")
    value = os.urandom(16).hex()
    fired = proxy.faults_fired
    proxy.drop_answer(b"PUT /api/v1/default/kv/lost-http")
    resp = r1.http().put(NS + "/kv/lost-http", '{"value":"%s"}' % b64(value))
    doc = expect_json(resp, 503, "a forwarded PUT whose answer was lost")
    check(proxy.faults_fired == fired + 1, "the writer's answer was not dropped", "relayer")
    check(resp.headers.get("unison-outcome") == "unknown" and
          doc["error"].startswith("outcome unknown"),
          "a forwarded PUT whose answer was lost: %r %r" % (resp.headers, doc), "relayer")
    copies = in_wal(value.encode())
    check(copies == 1, "the PUT whose answer was lost is in %d WAL records" % copies, "relayer")
    value = os.urandom(16).hex()
    proxy.drop_answer(b"POST /internal/v1/default/records")
    rc, out, err = redis_cli(r2.ports["resp"], "SET", "lost-resp", value)
    got = out.decode(errors="replace").strip()
    check(proxy.faults_fired == fired + 2, "the writer's answer was not dropped (%r)" % got,
          "relayer")
    check(got.startswith("ERR outcome unknown"),
          "a RESP SET two hops down whose answer was lost: %r" % got, "relayer")
    copies = in_wal(value.encode())
    check(copies == 1, "the SET whose answer was lost is in %d WAL records" % copies, "relayer")
    print("    lost answers: HTTP 503 %s; RESP %s" % (doc["error"][:40], got[:40]))
    r2.stop_clean()
    r1.stop_clean()


def finish():
    state["relayer"].stop_clean()
    if state["proxy"]:
        state["proxy"].close()


suite.run([setup, corrupt, truncate, blackhole, delay, damaged_copy, acks_isr, forward_in_doubt, finish])
