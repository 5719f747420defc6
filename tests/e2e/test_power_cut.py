#!/usr/bin/env python3
"""End to end, a three-writer cluster whose power is cut on all three writers at once, under load,
several times (issue 5: "all three killed together through the power-loss storage layer").

The writers are unison-writer-powerloss (powerloss_writer.c): the product's objects with every
namespace WAL on the power-loss file layer of tests/lib/fs_powerloss.h, and SIGUSR1 as the power
cut: each differing 512-byte sector of every WAL file that was not fsynced is written or dropped at
random (keep probability 0, 1/4, 1/2, 3/4 or 1 per cut), then the process ends at once (_exit).
powerloss_writer.c says which files the cut covers and why that is the right model: the WALs,
which the writer runs without per-record fsync, lose their unsynced tail; raft's log and LMDB,
durable by their own fsyncs before they count, keep what they wrote. What is tested is the
raft/WAL split of docs/raft.md "Durability": raft's log brings back every acknowledged record,
which needs every WAL fsynced before raft stores a snapshot and truncates its log behind it. The
writers take a raft snapshot every 4096 entries, every 2-3 s under this load.

Each round: clients write unique keys on all three writers (acknowledged writes recorded) and
overwrite / read linearizably a few shared keys (the history), the power of all three is cut at
once, the three restart and elect a leader, and the clients go on (a write that was not answered
is retried with its Idempotency-Key). After the last round: every acknowledged write is on every
writer exactly once with its LSN, the history is linearizable (lincheck.py); then the writers stop
and their WALs are compared: dense LSNs, the same LSNs on all three, byte-identical records at
every LSN, each acknowledged value in exactly one record, the one at its LSN. The test also fails
when no cut dropped an unsynced sector (it would have proved nothing).

Shown to fail when broken (by hand): with the WAL fsync before a raft snapshot removed (raft/fsm.c
ud_fsm_snapshot_sync skipping its ud_ns_sync), the writers restart with their raft snapshot ahead
of their WAL. Before the out-of-band catch-up existed they refused to start in the first round;
since, each asks the others for the records it lost, none has them, no leader is elected and the
test fails ("timed out ... waiting for a raft leader", first round in that run, 60 s). Running
with UD_POWERLOSS_LYING=1 in the environment (every WAL fsync a no-op) fails the same way, not
always in the first round: a writer that lost records may get them from one that kept them.

UD_POWER_CUT_SEED=N in the environment repeats a run's crash choices (the seed is printed)."""

import os
import random
import re
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Suite, check, free_port  # noqa: E402
from cluster_lib import (Load, Record, check_acked_everywhere, check_history, check_wals,  # noqa
                         leader_of, wait_applied)

ROUNDS = 4
LOAD_BEFORE_CUT = 2.5  # seconds of load before each cut
LOAD_AFTER_RESTART = 1.5
POWER_CUT_EXIT = 86  # powerloss_writer.c

suite = Suite("power-cut")
SEED = int(os.environ.get("UD_POWER_CUT_SEED", os.getpid()))
N = 3
RAFT = [free_port() for _ in range(N)]
HTTP = [free_port() for _ in range(N)]
RESP = [free_port() for _ in range(N)]
PEERS = ", ".join('"%d@127.0.0.1:%d,http=127.0.0.1:%d,resp=127.0.0.1:%d"' %
                  (i + 1, RAFT[i], HTTP[i], RESP[i]) for i in range(N))
nodes = []
for i in range(N):
    cfg = ("[raft]\nnode_id = %d\ncluster_id = \"e2e-power\"\npeers = [%s]\n"
           "election_timeout_ms = 1000\nheartbeat_timeout_ms = 100\nleader_wait_ms = 8000\n"
           # Frequent raft snapshots: a writer restarts from its newest one and replays only the
           # log after it, so the WAL fsync before each snapshot is what keeps the records it
           # covers. The trailing log (at most the threshold) is long enough for a writer that
           # restarts a moment after the others to catch up from raft's log: out-of-band
           # catch-up is not this test's subject.
           "snapshot_threshold = 4096\nsnapshot_trailing = 4096\n"
           # Small segments: rotations under load, and small heap copies in the layer.
           "[storage]\nsegment_size = \"1MiB\"\n" % (i + 1, PEERS))
    nodes.append(suite.writer("n%d" % (i + 1), config=cfg,
                              ports={"raft": RAFT[i], "http": HTTP[i], "resp": RESP[i]}))
rec = Record(["h-%d" % i for i in range(6)])
cuts = []  # (round, node, keep permille, sectors kept, sectors dropped)
CUT_LINE = re.compile(r"POWER CUT \(seed (\d+)\): (\d+) open WAL files, keep probability "
                      r"(\d+)/1000, (\d+) unsynced sectors kept, (\d+) dropped")


def start_all(rnd):
    """Starts the three together (a writer far behind the others would need the out-of-band
    catch-up); each gets its own crash seed."""
    errors = []

    def start(n, seed):
        try:
            n.start(wait_namespace=None, env={"UD_POWERLOSS_SEED": str(seed)})
        except Exception as e:
            errors.append(e)
    threads = [threading.Thread(target=start,
                                args=(n, random.Random("%d-%d-%d" % (SEED, rnd, i)).getrandbits(63)))
               for i, n in enumerate(nodes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    leader = leader_of(nodes, 20)
    for n in nodes:
        n.wait_namespace("default", 30)
    return leader


def cut_all(rnd):
    """SIGUSR1 to the three writers back to back: the power of all three fails together."""
    for n in nodes:
        check(n.alive(), "%s died before the power cut:\n%s" % (n.name, n.log_tail()), "writer")
    for n in nodes:
        os.kill(n.proc.pid, signal.SIGUSR1)
    for n in nodes:
        status = n.proc.wait(30)
        check(status == POWER_CUT_EXIT, "%s: exit status %s after the power cut, not %d:\n%s" %
              (n.name, status, POWER_CUT_EXIT, n.log_tail()), "writer")
        with open(n.log_path, errors="replace") as f:
            found = CUT_LINE.findall(f.read())
        check(found, "%s logged no power cut" % n.name, "test")
        _, files, keep, kept, dropped = (int(x) for x in found[-1])
        cuts.append((rnd, n.name, keep, kept, dropped))


def start_cluster():
    leader = start_all(0)
    print("    leader: %s; crash seed %d (UD_POWER_CUT_SEED)" % (leader.name, SEED), flush=True)


def power_cuts_under_load():
    for rnd in range(ROUNDS):
        t0 = time.monotonic()
        with Load(rec, nodes, "r%d" % rnd, per_node=1) as load:
            time.sleep(LOAD_BEFORE_CUT)
            before = load.ok()
            cut_all(rnd)
            leader = start_all(rnd + 1)
            time.sleep(LOAD_AFTER_RESTART)
        mine = [c for c in cuts if c[0] == rnd]
        print("    round %d: %d writes acknowledged before the cut, %d in all; cut kept/dropped "
              "%s unsynced WAL sectors; %s leads after the restart (%.1f s)" %
              (rnd + 1, before, load.ok(),
               ", ".join("%s %d/%d" % (c[1], c[3], c[4]) for c in mine), leader.name,
               time.monotonic() - t0), flush=True)
        check(load.ok() > before > 0, "round %d: no write acknowledged before and after the cut"
              % (rnd + 1))
    dropped = sum(c[4] for c in cuts)
    check(dropped > 0, "no power cut dropped an unsynced WAL sector: the test proved nothing",
          "test")
    print("    %d power cuts dropped %d unsynced WAL sectors in all" % (len(cuts), dropped))


def converged():
    """Checks over HTTP while the writers run, then the WAL files once they stopped (the layer
    writes a WAL's unsynced bytes to its file only when the WAL syncs, which a stop does)."""
    last = wait_applied(nodes, rec)
    check_acked_everywhere(nodes, rec)
    writes, reads, secs = check_history(nodes, rec)
    print("    %d acknowledged writes on every writer; history of %d writes and %d linearizable "
          "reads linearizable (checked in %.1f s)" % (len(rec.acked), writes, reads, secs))
    problems = []
    for n in nodes:
        n.stop_noting("SIGTERM", problems)
    if problems:
        raise problems[0]
    count = check_wals(nodes, rec, last, exact=True)
    snaps = [len([f for f in os.listdir(os.path.join(n.data_dir, "raft"))
                  if f.startswith("snapshot-")]) for n in nodes]
    check(all(snaps), "a writer has no raft snapshot: %r" % snaps, "test")
    print("    %d LSNs dense and byte-identical on 3 writers" % count)


suite.run([start_cluster, power_cuts_under_load, converged])
