"""Three writers of a test build (nospace_writer.c, badsnap_writer.c: the product's objects with
one fault switched on while a flag file exists) whose raft addresses in the configuration are
proxies' (fault_proxy.py), so that a test can cut the others off from one writer: its own raft
messages to them still go out, and with pre-vote they depose nobody."""

import os
import socket
import time

from harness import Failure, Writer, check, expect_json, free_port
from catchup_lib import log_since_start
from cluster_lib import leader_of
from fault_proxy import FaultProxy
from relayer_lib import wal_records


def node_status(node):
    return expect_json(node.http().get("/status/node"), 200, "%s /status/node" % node.name)


class GatedCluster:
    def __init__(self, suite, cluster_id, flag_env, flag_name, build_mark, written, args=()):
        """flag_env: the variable naming a writer's flag file for the test build; build_mark:
        what the test build logs at start; written: the catchup_lib.Written the writes go to."""
        self.raft = [free_port() for _ in range(3)]
        self.gate_ports = [free_port() for _ in range(3)]
        peers = ", ".join('"%d@127.0.0.1:%d"' % (i + 1, p) for i, p in enumerate(self.gate_ports))
        self.flags = [os.path.join(suite.workdir, "%s-n%d" % (flag_name, i + 1))
                      for i in range(3)]
        self.flag_env, self.build_mark, self.written = flag_env, build_mark, written
        self.gates = {}
        self.nodes = []
        for i in range(3):
            cfg = ("[raft]\nnode_id = %d\ncluster_id = \"%s\"\npeers = [%s]\n"
                   "election_timeout_ms = 1000\nheartbeat_timeout_ms = 100\nleader_wait_ms = 2000\n"
                   "snapshot_threshold = 16\nsnapshot_trailing = 8\n" % (i + 1, cluster_id, peers))
            self.nodes.append(suite.writer("n%d" % (i + 1), config=cfg,
                                           ports={"raft": self.raft[i]}, args=list(args)))

    def flag(self, node):
        return self.flags[self.nodes.index(node)]

    def open_gate(self, i):
        self.gates[i] = FaultProxy(self.raft[i], listen_port=self.gate_ports[i])

    def close_gate(self, i):
        """The others can no longer reach writer i: the proxy's connections are shut down."""
        g = self.gates.pop(i)
        with g.lock:
            socks = list(g.socks)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        g.close()

    def start_node(self, node):
        node.start(wait_namespace=None, env={self.flag_env: self.flag(node)})

    def start(self):
        """Opens the gates, starts the three writers and returns the leader once every writer
        serves the default namespace."""
        for i in range(3):
            self.open_gate(i)
        for n in self.nodes:
            self.start_node(n)
        leader = leader_of(self.nodes)
        for n in self.nodes:
            n.wait_namespace("default", 30)
            check(self.build_mark in log_since_start(n), "%s is not the %s" %
                  (n.name, self.build_mark))
        return leader

    def write_until(self, leader, done, keys):
        """Writes to default on leader until done(its /status/node) holds; returns that status."""
        for n in range(1000):
            st = node_status(leader)
            if done(st):
                return st
            self.written.put(leader, next(keys), os.urandom(200))
        raise Failure("%s: its raft log did not move on after %d writes: %r" %
                      (leader.name, n, st), "raft")

    def leave_behind(self, leader, follower):
        """Cuts follower off while the others commit past what their logs keep, then lets it
        back. raft sends a snapshot only to a peer it has not heard from for an election timeout
        (1 s) and whose next index its log no longer holds, and messages queued before may still
        carry entries: the leader's log must start past its own last index of the moment the
        follower's index was passed (test_cluster_catchup.py leader_log_past)."""
        follower_last = node_status(follower)["lastIndex"]
        self.close_gate(self.nodes.index(follower))
        try:
            time.sleep(3.0)
            keys = ("away%d" % i for i in range(1 << 30))
            reach = follower_last
            for _ in range(2):
                reach = self.write_until(leader, lambda st, r=reach: st["firstIndex"] > r + 1,
                                         keys)["lastIndex"]
            print("    %s's raft log starts past index %d (%s stopped at %d)" %
                  (leader.name, reach + 1, follower.name, follower_last))
            # raft takes its snapshots asynchronously: the leader's newest must be stored before
            # the follower is back. Otherwise the follower may first get an older one, and then
            # this one, whose restore runs on the usual path.
            time.sleep(1.5)
        finally:
            self.open_gate(self.nodes.index(follower))

    def wals_identical(self):
        """Stops the writers; every WAL holds the leader's LSNs with byte-identical records."""
        leader = leader_of(self.nodes)
        Writer.stop_all(self.nodes)
        wals = {n.name: wal_records(n, part="raft") for n in self.nodes}
        ref = wals[leader.name]
        check(ref, "%s's WAL is empty" % leader.name, "raft")
        for n in self.nodes:
            w = wals[n.name]
            check(set(w) == set(ref), "%s has LSNs %d..%d, %s %d..%d" %
                  (n.name, min(w, default=0), max(w, default=0), leader.name, min(ref), max(ref)),
                  "raft")
            diff = [lsn for lsn in sorted(w) if w[lsn] != ref[lsn]]
            check(not diff, "%s's WAL differs from %s's at LSNs %r" % (n.name, leader.name,
                                                                     diff[:10]), "raft")
        print("    %d records byte-identical on all three" % len(ref))
