#!/usr/bin/env python3
"""End to end, the out-of-band catch-up of a writer (docs/raft.md "Out-of-band catch-up"): three
writers whose raft keeps only a few entries (snapshot_threshold 16, trailing 8). A follower kept
down while the cluster writes far more than that (in an existing namespace and in one created
while it was down) gets the leader's snapshot, which it is behind: it closes raft, fetches the
namespaces over HTTP from a peer, and starts raft again. Afterwards every acknowledged write reads
back on it with its LSN, its WAL records are byte-identical to the leader's at every LSN, and it
keeps following new writes.

Then the same with every peer unreachable over HTTP (each writer advertises its HTTP address
through a gate the test closes): the follower closes raft and keeps trying, says catching-up,
stops cleanly on SIGTERM in the middle, and at its next start (raft's stored snapshot is now ahead
of its namespaces, so raft cannot start) catches up before raft starts once the gates open."""

import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Failure, Suite, Writer, b64, check, expect_json, free_port, unb64, wait_for  # noqa
from catchup_lib import Written, log_since_start, same_wal, wait_rejoined  # noqa
from cluster_lib import leader_of, start_writers  # noqa
from fault_proxy import FaultProxy  # noqa

suite = Suite("cluster-catchup")
RAFT = [free_port() for _ in range(3)]
HTTP = [free_port() for _ in range(3)]
GATE = [free_port() for _ in range(3)]  # each writer's advertised HTTP address
PEERS = ", ".join('"%d@127.0.0.1:%d"' % (i + 1, p) for i, p in enumerate(RAFT))
nodes = []
for i in range(3):
    cfg = ("[http]\nadvertise = \"http://127.0.0.1:%d\"\n"
           "[raft]\nnode_id = %d\ncluster_id = \"e2e\"\npeers = [%s]\n"
           "election_timeout_ms = 1000\nheartbeat_timeout_ms = 100\nleader_wait_ms = 1000\n"
           "snapshot_threshold = 16\nsnapshot_trailing = 8\n" % (GATE[i], i + 1, PEERS))
    nodes.append(suite.writer("n%d" % (i + 1), config=cfg,
                              ports={"raft": RAFT[i], "http": HTTP[i]},
                              args=["--set", "storage.segment_size=256KiB"]))
gates = {}


def open_gates():
    for i in range(3):
        if i not in gates:
            gates[i] = FaultProxy(HTTP[i], listen_port=GATE[i])


def close_gates():
    for i in list(gates):
        gates.pop(i).close()


written = Written()
write = written.put
reads_back = written.reads_back


def status_state(node):
    r = node.http().get("/status/node", timeout=5)
    return r.json().get("state") if r.status == 200 else None


def wals_match(leader, follower):
    for ns in ("default", "later"):
        n = same_wal(leader, follower, ns)
        print("    %s: %d records byte-identical on %s and %s" % (ns, n, leader.name,
                                                                 follower.name))


def start_cluster():
    open_gates()
    leader = start_writers(nodes)
    for i in range(10):
        write(leader, "before%d" % i, os.urandom(64))
    for n in nodes:
        reads_back(n)


def follower_behind_the_snapshot():
    leader = leader_of(nodes)
    follower = [n for n in nodes if n is not leader][0]
    follower.signal(signal.SIGKILL)
    follower.proc.wait(30)
    print("    %s killed; the cluster writes on" % follower.name)
    # Far more entries than raft keeps (one entry per write), in an existing namespace and in
    # one created while the follower is down.
    expect_json(leader.http().put("/api/v1/later"), 200, "create namespace later")
    for i in range(80):
        write(leader, "down%d" % i, os.urandom(200))
        if i % 2 == 0:
            write(leader, "k%d" % i, os.urandom(100), "later")
    follower.start(wait_namespace=None)
    wait_rejoined(follower)
    reads_back(follower)
    # It follows again: new writes reach it through raft.
    for i in range(10):
        write(leader, "after%d" % i, os.urandom(50), "later")
    reads_back(follower)
    wals_match(leader, follower)


def restart_behind_closed_gates(leader, follower, prefix):
    """Kills follower, writes far more than raft keeps, and starts it again with every peer's
    advertised HTTP address closed: its catch-up cannot reach anyone."""
    follower_last = node_status(follower)["lastIndex"]
    follower.signal(signal.SIGKILL)
    follower.proc.wait(30)
    leader_log_past(leader, follower, follower_last, prefix, time.monotonic())
    close_gates()
    follower.start(wait_namespace=None)


def node_status(node):
    return expect_json(node.http().get("/status/node"), 200, "%s /status/node" % node.name)


def write_until(leader, done, what, keys):
    """Writes to default on leader (keys: an iterator of key names) until done(its
    /status/node) holds; returns that status. raft snapshots only after an apply, so waiting
    without writing could wait forever."""
    for n in range(1000):
        st = node_status(leader)
        check(st["state"] == "leader", "%s stopped leading while the test waited for %s: %r" %
              (leader.name, what, st), "raft")
        if done(st):
            return st
        write(leader, next(keys), os.urandom(200))
    raise Failure("%s: no %s after %d writes: %r" % (leader.name, what, n, st), "raft")


def leader_log_past(leader, follower, follower_last, prefix, killed):
    """With follower down at raft index follower_last, writes until raft on leader can only
    send it a snapshot, whatever is still queued for it. The leader sends entries after an
    index only while its log holds that index (firstIndex - 1 or later); raft 0.15's transport
    keeps the messages to an unreachable peer queued (each with the entries it was built with)
    until a connection attempt fails, 1 s apart, and delivers them if the peer is back by then:
    a follower restarted quickly applies what the messages built before the leader's log moved
    on carried (seen once: a follower got entries past a snapshot the test had waited for).
    Once the log starts past follower_last + 1 every message to it carries no entries; once it
    starts past the leader's last index of that moment, none queued earlier can bring the
    follower to where the leader still has entries. Both hold only once raft treats the follower
    as gone (killed: when it was): while its progress is still in pipeline mode each new message
    carries the next entries, whatever the log's start; and raft sends a snapshot only to a peer
    it heard from within the last election timeout (1 s here; its check runs once per timeout),
    which such a message too would carry on the peer's return. So nothing is written until 3 s
    after the kill."""
    time.sleep(max(0.0, killed + 3.0 - time.monotonic()))
    keys = ("%s%d" % (prefix, i) for i in range(1 << 30))
    reach = follower_last
    for _ in range(2):
        reach = write_until(leader, lambda st, r=reach: st["firstIndex"] > r + 1,
                            "raft log starting past index %d" % (reach + 1), keys)["lastIndex"]
    print("    %s's raft log starts past index %d (%s stopped at %d)" %
          (leader.name, reach + 1, follower.name, follower_last))
    return keys


def stopped_while_catching_up():
    leader = leader_of(nodes)
    follower = [n for n in nodes if n is not leader][-1]
    restart_behind_closed_gates(leader, follower, "again")

    def stuck():
        if not follower.alive():
            raise Failure("%s exited:\n%s" % (follower.name, follower.log_tail()), "raft")
        return status_state(follower) == "catching-up"
    wait_for("%s catching up (no peer reachable)" % follower.name, stuck, 30, 0.2)
    time.sleep(1)
    check(status_state(follower) == "catching-up", "%s stopped catching up without a peer" %
          follower.name, "raft")
    log = log_since_start(follower)
    check("closing raft for an out-of-band catch-up" in log and "Couldn't connect" in log,
          "%s's log does not show the catch-up trying its peers:\n%s" %
          (follower.name, follower.log_tail()), "raft")
    r = follower.http().get("/readyz")
    check(r.status == 503 and b"catching up" in r.body, "/readyz while catching up: %d %r" %
          (r.status, r.body), "raft")
    # Reads keep being served meanwhile.
    value, lsn = written.acked[("default", "before0")]
    doc = expect_json(follower.http().get("/api/v1/default/kv/before0"), 200,
                      "read during the catch-up", "raft")
    check(unb64(doc["value"]) == value, "read during the catch-up: another value", "raft")
    # Writes are refused (no raft here), not lost: the client is told to retry.
    r = follower.http().put("/api/v1/default/kv/refused", '{"value":"%s"}' % b64("x"))
    check(r.status == 503, "a write during the catch-up: %d %r" % (r.status, r.body), "raft")
    follower.stop_clean("SIGTERM during the catch-up")
    open_gates()
    follower.start(wait_namespace=None)
    wait_rejoined(follower)
    check("catching up out of band before raft starts" in log_since_start(follower),
          "%s started raft without catching up first:\n%s" % (follower.name,
                                                                follower.log_tail()), "raft")
    reads_back(follower)
    write(leader, "last", b"last")
    reads_back(follower)
    wals_match(leader, follower)


def latest_snapshot_index(node):
    return node_status(node)["snapshotIndex"]


def applied_index(node):
    return node_status(node)["appliedIndex"]


def namespace_deleted_after_the_snapshot():
    """The leader's newest snapshot lists a namespace deleted after it: no peer has it any more,
    so the follower cannot fetch it; a peer that has applied past the snapshot says it is gone,
    and the restore of that snapshot does without it."""
    leader = leader_of(nodes)
    follower = [n for n in nodes if n is not leader][0]
    follower.signal(signal.SIGKILL)
    follower.proc.wait(30)
    h = leader.http()
    for attempt in range(5):
        name = "brief%d" % attempt
        expect_json(h.put("/api/v1/" + name), 200, "create namespace " + name)
        created = applied_index(leader)
        for i in range(24):  # more than snapshot_threshold entries: a snapshot lists it
            write(leader, "b%d" % i, b"v", name)
        time.sleep(0.3)  # raft takes its snapshot asynchronously
        before = applied_index(leader)
        expect_json(h.delete("/api/v1/" + name), 200, "delete namespace " + name)
        for k in [k for k in written.acked if k[0] == name]:
            del written.acked[k]
        time.sleep(0.3)
        snap = latest_snapshot_index(leader)
        if created < snap <= before:
            break  # the newest snapshot lists the namespace, the delete came after it
    else:
        raise Failure("could not get a snapshot between a namespace's creation and its delete")
    print("    %s: snapshot at raft index %d lists %s, deleted after it" %
          (leader.name, snap, name))
    follower.start(wait_namespace=None)
    wait_rejoined(follower)
    log = log_since_start(follower)
    check("no longer has it (deleted since)" in log and "which the peers deleted since" in log,
          "%s's log does not show %s found deleted on the peers:\n%s" %
          (follower.name, name, follower.log_tail()), "raft")
    reads_back(follower)
    r = follower.http().get("/api/v1/%s/kv/b0" % name)
    check(r.status == 404, "%s: the deleted namespace %s answers %d" %
          (follower.name, name, r.status), "raft")
    write(leader, "after-delete", b"x")
    reads_back(follower)
    wals_match(leader, follower)


def node_state(node):
    """What node says of itself and of the cluster, for a failure message."""
    out = []
    for path in ("/status/node", "/status/cluster"):
        try:
            r = node.http().get(path, timeout=5)
            out.append("%s: %d %s" % (path, r.status, r.body[:2000].decode(errors="replace")))
        except Exception as e:  # the node may be down: say so rather than hide the first failure
            out.append("%s: %s" % (path, e))
    return "\n".join(out)


def reads_back_saying_state(node, timeout):
    """reads_back, and on a failure what node was doing (its status pages and log)."""
    try:
        reads_back(node, timeout=timeout)
    except Failure as e:
        raise Failure("%s\n%s\n%s's log:\n%s" % (e, node_state(node), node.name,
                                                   node.log_tail(60)), e.part or "raft")


def namespace_created_again_while_away():
    """A namespace deleted and created again (LSNs from 1 again) while the follower was away, and
    raft's snapshot lists the new one at an LSN that the follower's old copy has passed (a few
    writes to it, then many elsewhere: raft keeps none of them in its log). Holding that LSN does
    not make the old copy the new namespace: the record there came from another raft entry. The
    follower's restore says so and its catch-up replaces the copy with a peer's snapshot; it ends
    with the new namespace only (its old keys gone, the new ones at their LSNs, the leader's WAL
    bytes). Without that check the restore took the old copy for caught up and raft's later
    entries went on top of it: the new namespace's first key never came (seen once as a 60 s
    timeout waiting for later/again0)."""
    leader = leader_of(nodes)
    follower = [n for n in nodes if n is not leader][-1]
    old_last = max(l for (ns, _), (_, l) in written.acked.items() if ns == "later")
    follower_last = node_status(follower)["lastIndex"]
    follower.signal(signal.SIGKILL)
    follower.proc.wait(30)
    # First past the follower, so that no entry it can still get is later's delete or create,
    # nor a snapshot taken between them (one without later).
    keys = leader_log_past(leader, follower, follower_last, "away", time.monotonic())
    h = leader.http()
    expect_json(h.delete("/api/v1/later"), 200, "delete namespace later")
    for k in [k for k in written.acked if k[0] == "later"]:
        del written.acked[k]
    expect_json(h.put("/api/v1/later"), 200, "create namespace later again")
    few = 5
    check(few < old_last, "later held only %d records before its delete" % old_last)
    for i in range(few):
        write(leader, "again%d" % i, os.urandom(40), "later")
    # Whatever the follower got while it was away (queued entries of default, a snapshot from
    # before the delete), the leader's log starts after later's few writes: what brings it
    # further is a snapshot listing the new later.
    again_last = node_status(leader)["lastIndex"]
    write_until(leader, lambda st: st["firstIndex"] > again_last + 1,
                "raft log starting past index %d" % (again_last + 1), keys)
    follower.start(wait_namespace=None)
    wait_rejoined(follower)
    # A queued older snapshot makes a first catch-up of default alone; the one that matters may
    # come after it.
    leader_last = node_status(leader)["lastIndex"]
    wait_for("%s applying up to raft index %d" % (follower.name, leader_last),
             lambda: node_status(follower)["appliedIndex"] >= leader_last, 45, 0.2)
    log = log_since_start(follower)
    check("another namespace of that name" in log and "is not the namespace raft's snapshot" in log,
          "%s's log does not show its copy of later found to be another namespace:\n%s\n%s" %
          (follower.name, follower.log_tail(60), node_state(follower)), "raft")
    # The catch-up's install hook made the follower's create marker of later the new namespace's,
    # not the one it applied before going away (which would stamp an unstamped store wrongly).
    def created_marker(node):
        try:
            with open(os.path.join(node.data_dir, "namespaces", ".raft-created-later")) as f:
                return f.read().strip()
        except FileNotFoundError:
            return None
    want, got = created_marker(leader), created_marker(follower)
    check(want is not None, "%s has no create marker of later" % leader.name, "raft")
    check(got == want, "%s's create marker of later is %s, the leader's %s" %
          (follower.name, got, want), "raft")
    for i in range(few, old_last + 20):
        write(leader, "again%d" % i, os.urandom(40), "later")
    reads_back_saying_state(follower, 60)
    r = follower.http().get("/api/v1/later/kv/after0")
    check(r.status == 404, "%s still has a key of the deleted namespace later (%d)" %
          (follower.name, r.status), "raft")
    wals_match(leader, follower)


def namespace_deleted_while_away():
    """A namespace deleted while the follower was away, and raft's snapshot taken after the
    delete: the snapshot does not list it, and no log holds the delete any more. The follower's
    restore deletes its copy as the delete would have (it was created before the snapshot), here
    at the raft start after its catch-up of default: it answers 404 for the namespace, and
    creating it again makes the same new namespace there as on the leader. Before, the follower
    kept its copy and served its keys (and a create of that name was UD_EEXIST there alone)."""
    leader = leader_of(nodes)
    follower = [n for n in nodes if n is not leader][0]
    doc = expect_json(follower.http().get("/api/v1/later/kv/again0"), 200,
                      "%s: later/again0 before the delete" % follower.name)
    follower_last = node_status(follower)["lastIndex"]
    follower.signal(signal.SIGKILL)
    follower.proc.wait(30)
    # First past the follower, so that no entry it can still get is later's delete.
    keys = leader_log_past(leader, follower, follower_last, "gone", time.monotonic())
    expect_json(leader.http().delete("/api/v1/later"), 200, "delete namespace later")
    for k in [k for k in written.acked if k[0] == "later"]:
        del written.acked[k]
    deleted_at = node_status(leader)["lastIndex"]
    write_until(leader, lambda st: st["firstIndex"] > deleted_at + 1,
                "raft log starting past index %d" % (deleted_at + 1), keys)
    follower.start(wait_namespace=None)
    wait_rejoined(follower)
    leader_last = node_status(leader)["lastIndex"]
    wait_for("%s applying up to raft index %d" % (follower.name, leader_last),
             lambda: node_status(follower)["appliedIndex"] >= leader_last, 45, 0.2)
    r = follower.http().get("/api/v1/later/kv/again0")
    check(r.status == 404, "%s still serves the deleted namespace later: %d %r (before: %r)" %
          (follower.name, r.status, r.body[:200], doc), "raft")
    log = log_since_start(follower)
    check("does not list namespace later" in log,
          "%s's log does not show its copy of later deleted:\n%s\n%s" %
          (follower.name, follower.log_tail(60), node_state(follower)), "raft")
    expect_json(leader.http().put("/api/v1/later"), 200, "create namespace later again")
    for i in range(5):
        write(leader, "anew%d" % i, os.urandom(40), "later")
    reads_back_saying_state(follower, 60)
    wals_match(leader, follower)


def own_newest_record_gone():
    """A follower whose newest record of default is no longer in its own WAL (its segments
    removed while it was stopped, every record flushed to LMDB at the stop: what retention leaves
    once a newer, still empty segment follows a flushed one) and whose raft snapshot is ahead of
    its namespaces (it stopped during a catch-up with no peer reachable), so it catches up before
    raft starts. It cannot compare that record with a peer's, and no peer can change that: it
    replaces its copy with a peer's snapshot instead of asking the peers again for as long as it
    runs."""
    leader = leader_of(nodes)
    follower = [n for n in nodes if n is not leader][0]
    restart_behind_closed_gates(leader, follower, "unchecked")
    wait_for("%s catching up (no peer reachable)" % follower.name,
             lambda: status_state(follower) == "catching-up", 30, 0.2)
    follower.stop_clean("SIGTERM during the catch-up")
    wal = os.path.join(follower.data_dir, "namespaces", "default", "wal")
    for name in os.listdir(wal):
        os.unlink(os.path.join(wal, name))
    open_gates()
    follower.start(wait_namespace=None)
    wait_rejoined(follower)
    log = log_since_start(follower)
    check("catching up out of band before raft starts" in log and
          "cannot be checked against" in log,
          "%s's log does not show its copy replaced before raft starts:\n%s" %
          (follower.name, follower.log_tail()), "raft")
    reads_back(follower)
    write(leader, "after-unchecked", b"x")
    reads_back(follower)
    wals_match(leader, follower)


def stop_all():
    try:
        Writer.stop_all(nodes)
    finally:
        close_gates()


suite.run([start_cluster, follower_behind_the_snapshot, stopped_while_catching_up,
           namespace_deleted_after_the_snapshot, namespace_created_again_while_away,
           namespace_deleted_while_away, own_newest_record_gone, stop_all])
