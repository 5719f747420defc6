#!/usr/bin/env python3
"""End to end, writers whose applied state is behind what the cluster acknowledged, and what a
client may still count on then. Three writers built as unison-writer-nospace (nospace_writer.c:
a writer's namespace WALs cannot create a segment while its flag file exists, so its apply
stalls while raft goes on):
- a RESP DEL through a follower that has not applied a key's write yet deletes the key;
- RESP BARRIER on such a follower is refused once it has waited 5 s, rather than a stale +OK;
- a new leader that has not applied earlier leaders' entries holds HTTP writes until it has (what
  transactions and LOB chunk positions are checked against), while a leadership transfer away
  from it goes through at once;
- a conditional write sent to a leader whose apply is stalled behind a write in flight, which then
  steps down, never overwrites the acknowledged write: its condition travels with it and is
  judged where it is applied, not against that node's lagging state;
- a transaction begun on one leader, kept busy through another, and committed after leadership
  came back is not aborted as idle by the first leader's old idea of its last activity.
After a stop every writer's WAL holds the same LSNs with byte-identical records."""

import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Failure, RespConn, Suite, b64, check, unb64, wait_for  # noqa: E402
from catchup_lib import Written, log_since_start  # noqa: E402
from cluster_lib import get, leader_of, put, request  # noqa: E402
from gated_cluster import GatedCluster  # noqa: E402

suite = Suite("cluster-behind")
written = Written()
IDLE_MS = 3000
# Small segments: a few dozen writes need a new one.
cluster = GatedCluster(suite, "e2e-behind", "UD_NOSPACE_FLAG", "disk-full", "no-space test build",
                       written, args=["--set", "storage.segment_size=64KiB",
                                      "--set", "write.txn_idle_timeout_ms=%d" % IDLE_MS])
nodes = cluster.nodes
VALUE = 1500
FULL_WRITES = 150  # about 3.5 segments


def node_id(node):
    return nodes.index(node) + 1


def start_cluster():
    leader = cluster.start()
    for i in range(20):
        written.put(leader, "before%d" % i, os.urandom(VALUE))
    for n in nodes:
        written.reads_back(n)


def stall(node, leader, prefix):
    """Stops node's apply (its disk is full) while leader goes on committing."""
    stops = log_since_start(node).count("apply stopped")
    open(cluster.flag(node), "w").close()
    for i in range(FULL_WRITES):
        written.put(leader, "%s%d" % (prefix, i), os.urandom(VALUE))

    def stalled():
        if not node.alive():
            raise Failure("%s exited:\n%s" % (node.name, node.log_tail()), "raft")
        return log_since_start(node).count("apply stopped") > stops
    wait_for("%s's apply stopping on its full disk" % node.name, stalled, 15, 0.2)


def unstall(node):
    if os.path.exists(cluster.flag(node)):
        os.unlink(cluster.flag(node))
    written.reads_back(node, timeout=30)


def stalled_step(fn):
    """Runs a step that stalls a writer; its disk has room again afterwards, however it ended."""
    def step():
        try:
            fn()
        finally:
            for n in nodes:
                if os.path.exists(cluster.flag(n)):
                    os.unlink(cluster.flag(n))
                    try:
                        written.reads_back(n, timeout=30)
                    except Failure as e:
                        print("    %s did not catch up: %s" % (n.name, e))
    step.__name__ = fn.__name__
    step.__doc__ = fn.__doc__
    return step


def linearizable(node, key):
    return get(node.ports["http"], key, "?consistency=linearizable")


def stalled_follower_del_and_barrier():
    """A follower that has not applied a key's write: RESP DEL through it deletes the key on the
    leader (it used to delete only the keys it found itself), and BARRIER through it is refused
    once it waited 5 s to apply (it used to answer +OK, and the reads after it were stale)."""
    leader = leader_of(nodes)
    follower = [n for n in nodes if n is not leader][0]
    stall(follower, leader, "full")
    for key in ("gone", "gone-hash"):
        status, _, body = put(leader.ports["http"], key, b"soon deleted")
        check(status == 200, "PUT %s on %s: %d %r" % (key, leader.name, status, body[:200]))
    r = RespConn(leader.ports["resp"])
    check(r.call("HSET", "gone-hash", "f", "v", "g", "w") == 2, "HSET on the leader", "resp")
    r.close()
    check(get(follower.ports["http"], "gone")[0] == 404,
          "%s applied gone although its apply is stalled" % follower.name, "raft")
    r = RespConn(follower.ports["resp"])
    for args in (("DEL", "gone", "gone-hash"), ("HDEL", "gone-hash", "f")):
        reply = r.call(*args)
        check(isinstance(reply, int), "%s through %s: %r" % (args, follower.name, reply), "resp")
    for key in ("gone", "gone-hash"):
        status, doc = linearizable(leader, key)
        check(status == 404, "DEL %s through %s did not delete it: %d %r" %
              (key, follower.name, status, doc), "resp")
    lr = RespConn(leader.ports["resp"])
    fields = lr.call("HGETALL", "gone-hash")
    lr.close()
    check(fields == [] or fields == {}, "DEL gone-hash through %s left fields %r" %
          (follower.name, fields), "resp")
    t0 = time.monotonic()
    reply = r.call("BARRIER")
    took = time.monotonic() - t0
    r.close()
    check(isinstance(reply, Failure) and "unavailable" in str(reply),
          "BARRIER on %s, whose apply is stalled: %r after %.1f s (a stale +OK)" %
          (follower.name, reply, took), "raft")
    print("    BARRIER on the stalled %s: %s after %.1f s" % (follower.name, reply, took))
    unstall(follower)
    check(get(follower.ports["http"], "gone")[0] == 404, "%s: gone is back" % follower.name)


def new_leader_behind_holds_conditional_write():
    """Leadership moves to a writer whose apply is stalled: it leads in raft but has not applied
    earlier leaders' entries. A PUT with If-Match must not be judged against that stale state: the
    FSM judges it after those entries (and the leader holds HTTP writes until it applied them).
    If-Match naming the acknowledged version then
    passes (it was refused with 412: the stale version differs), and If-Match naming the older
    version is refused (it would have passed and overwritten an acknowledged write)."""
    leader = leader_of(nodes)
    target = [n for n in nodes if n is not leader][0]
    status, _, body = put(leader.ports["http"], "cas", b"first")
    check(status == 200, "PUT cas: %d %r" % (status, body[:200]))
    first = json.loads(body)["lsn"]
    stall(target, leader, "behind")
    status, _, body = put(leader.ports["http"], "cas", b"second")
    check(status == 200, "PUT cas again: %d %r" % (status, body[:200]))
    second = json.loads(body)["lsn"]
    status, _, body = request(leader.ports["http"], "POST", "/admin/cluster/transfer",
                              json.dumps({"id": node_id(target)}).encode())
    check(status == 200, "transfer to %s: %d %r" % (target.name, status, body), "raft")
    check(leader_of(nodes, 10) is target, "%s does not lead" % target.name, "raft")
    status, doc = get(target.ports["http"], "cas")
    check(status == 200 and doc["lsn"] == first, "%s is not behind: cas %d %r" %
          (target.name, status, doc), "raft")
    # The way out of a leader whose apply is stuck: a transfer away from it is not held back
    # as a write waiting for that leader to be ready.
    started = time.monotonic()
    status, _, body = request(target.ports["http"], "POST", "/admin/cluster/transfer",
                              json.dumps({"id": node_id(leader)}).encode())
    took = time.monotonic() - started
    print("    transfer away from the stalled leader %s: %d after %.1f s" %
          (target.name, status, took))
    check(status == 200, "transfer from the stalled %s to %s: %d %r" %
          (target.name, leader.name, status, body), "raft")
    check(leader_of(nodes, 10) is leader, "%s does not lead again" % leader.name, "raft")
    status, _, body = request(leader.ports["http"], "POST", "/admin/cluster/transfer",
                              json.dumps({"id": node_id(target)}).encode())
    check(status == 200, "transfer back to %s: %d %r" % (target.name, status, body), "raft")
    check(leader_of(nodes, 10) is target, "%s does not lead again" % target.name, "raft")
    out = {}

    def conditional():
        out["answer"] = put(target.ports["http"], "cas", b"third", {"If-Match": str(second)})
    t = threading.Thread(target=conditional)
    t.start()
    time.sleep(0.5)
    os.unlink(cluster.flag(target))
    t.join(30)
    check("answer" in out, "the conditional PUT on %s did not finish" % target.name)
    status, _, body = out["answer"]
    print("    If-Match %d (acknowledged) on the new leader %s that had applied only LSN %d: "
          "%d %s" % (second, target.name, first, status, body[:100].decode(errors="replace")))
    check(status == 200, "If-Match %d on %s, whose apply was behind, answered %d %r: the "
          "precondition was checked against its stale state" % (second, target.name, status,
                                                                 body[:200]), "raft")
    third = json.loads(body)["lsn"]
    status, _, body = put(target.ports["http"], "cas", b"fourth", {"If-Match": str(second)})
    check(status == 412, "If-Match %d after LSN %d: %d %r" % (second, third, status, body[:200]))
    status, doc = linearizable(target, "cas")
    check(status == 200 and doc["lsn"] == third, "cas after the conditional PUTs: %d %r" %
          (status, doc), "raft")
    written.reads_back(target, timeout=30)


def conditional_write_on_stepped_down_leader():
    """A conditional PUT reaches the leader while a PUT to its key is in flight (committed, not
    applied: the leader's apply is stalled), then leadership moves away and the new leader moves
    the key on. Judged against the old leader's lagging state its stale If-Match would pass, and
    it would overwrite the acknowledged write (a lost update). Its condition is judged by the FSM
    where it is applied, so it is refused: at once while the apply is stalled (nothing proposed),
    412 if it was committed, 503 if it was still queued when leadership went."""
    leader = leader_of(nodes)
    target = [n for n in nodes if n is not leader][0]
    status, _, body = put(leader.ports["http"], "cas2", b"first")
    check(status == 200, "PUT cas2: %d %r" % (status, body[:200]))
    out = {"applied": json.loads(body)["lsn"]}
    stops = log_since_start(leader).count("apply stopped")
    open(cluster.flag(leader), "w").close()

    def fill():
        # PUTs of one key until one is not answered: the leader's apply has stopped on its full
        # disk, and that PUT is in flight (committed, not applied) on the key.
        for _ in range(FULL_WRITES):
            if "stop" in out:
                return
            try:
                status, _, body = request(leader.ports["http"], "PUT", "/api/v1/default/kv/cas2",
                                          json.dumps({"value": b64(os.urandom(VALUE))}).encode(),
                                          timeout=60)
            except OSError:
                return
            if status != 200:
                return
            out["applied"] = json.loads(body)["lsn"]

    def conditional():
        out["third"] = request(leader.ports["http"], "PUT", "/api/v1/default/kv/cas2",
                               json.dumps({"value": b64(b"third")}).encode(),
                               {"If-Match": str(if_match)}, timeout=60)
    threads = [threading.Thread(target=fill)]
    threads[0].start()
    wait_for("%s's apply stopping on its full disk" % leader.name,
             lambda: log_since_start(leader).count("apply stopped") > stops, 30, 0.2)
    time.sleep(0.5)
    out["stop"] = True
    if_match = out["applied"]  # the key's LSN on the stalled leader
    threads.append(threading.Thread(target=conditional))
    threads[1].start()
    time.sleep(0.5)
    status, _, body = request(leader.ports["http"], "POST", "/admin/cluster/transfer",
                              json.dumps({"id": node_id(target)}).encode())
    check(status == 200, "transfer to %s: %d %r" % (target.name, status, body), "raft")
    check(leader_of(nodes, 10) is target, "%s does not lead" % target.name, "raft")
    # The new leader moves the key on: the old one lags behind that write.
    status, _, body = put(target.ports["http"], "cas2", b"fourth")
    check(status == 200, "PUT cas2 on %s: %d %r" % (target.name, status, body[:200]))
    # The PUT in flight is answered once the old leader applies it; the conditional PUT runs then.
    os.unlink(cluster.flag(leader))
    threads[1].join(60)
    check("third" in out, "the conditional PUT on %s did not finish" % leader.name)
    status, _, body = out["third"]
    print("    If-Match %d on %s behind a PUT in flight, leadership gone: %d %s" %
          (if_match, leader.name, status, body[:120].decode(errors="replace")))
    threads[0].join(60)
    check(status in (412, 500, 503), "If-Match %d on %s when it stepped down: %d %r (judged "
          "against its lagging state)" % (if_match, leader.name, status, body[:200]), "raft")
    status, doc = linearizable(target, "cas2")
    check(status == 200 and unb64(doc["value"]) == b"fourth",
          "cas2 after the conditional PUT: %d %r" % (status, doc), "raft")


def txn_across_transfers():
    """A transaction begun on B, kept busy through A for longer than the idle timeout, then
    committed after B leads again: B must not abort it as idle from what it knew before."""
    b = leader_of(nodes)
    a = [n for n in nodes if n is not b][0]
    base = "/api/v1/default/tx"

    def post(node, path, body=b"{}"):
        status, _, data = request(node.ports["http"], "POST", base + path, body)
        return status, data
    status, data = post(b, "/begin", b'{"operation":"put","entryType":"kv"}')
    check(status == 200, "tx/begin on %s: %d %r" % (b.name, status, data))
    txn = json.loads(data)["txnId"]

    def transfer(to):
        status, _, body = request(to.ports["http"], "POST", "/admin/cluster/transfer",
                                  json.dumps({"id": node_id(to)}).encode())
        check(status == 200, "transfer to %s: %d %r" % (to.name, status, body), "raft")
        check(leader_of(nodes, 10) is to, "%s does not lead" % to.name, "raft")
    transfer(a)
    deadline = time.monotonic() + IDLE_MS / 1000 + 2
    i = 0
    while time.monotonic() < deadline:
        body = json.dumps({"key": "tk%d" % i, "value": "dg=="}).encode()
        status, data = post(a, "/%s/kv" % txn, body)
        check(status == 200, "append %d through %s: %d %r" % (i, a.name, status, data))
        i += 1
        time.sleep(1)
    transfer(b)
    time.sleep(1.5)  # at least one idle sweep on b
    status, data = post(b, "/%s/commit" % txn)
    check(status == 200, "commit on %s after %d appends through %s: %d %r (aborted as idle?)" %
          (b.name, i, a.name, status, data), "raft")
    print("    transaction of %d appends through %s committed on %s" % (i, a.name, b.name))
    # Applied after the commit: once every writer has it, the WALs can be compared.
    status, _, body = put(b.ports["http"], "after-txn", b"last")
    check(status == 200, "PUT after-txn on %s: %d %r" % (b.name, status, body[:200]))
    for n in nodes:
        wait_for("after-txn on %s" % n.name, lambda n=n: get(n.ports["http"], "after-txn")[0] == 200,
                 30, 0.1)


suite.run([start_cluster, stalled_step(stalled_follower_del_and_barrier),
           stalled_step(new_leader_behind_holds_conditional_write),
           stalled_step(conditional_write_on_stepped_down_leader), txn_across_transfers,
           cluster.wals_identical])
