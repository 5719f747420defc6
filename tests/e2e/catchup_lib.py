"""What the out-of-band catch-up tests (test_cluster_catchup.py, test_cluster_refetch.py) check on
a writer that fetched namespaces from a peer: acknowledged writes read back with their LSN, WAL
record bytes equal to the leader's at every LSN, and what its log and /status/node say."""

import json

from cluster_lib import put as cluster_put
from harness import Failure, check, expect_json, unb64, wait_for
from relayer_lib import wal_records


class Written:
    """Every acknowledged write: (ns, key) -> (value bytes, LSN)."""

    def __init__(self):
        self.acked = {}

    def put(self, node, key, value, ns="default"):
        status, _, body = cluster_put(node.ports["http"], key, value, ns=ns)
        check(status == 200, "PUT %s/%s on %s: %d %r" % (ns, key, node.name, status, body[:200]))
        doc = json.loads(body)
        check(isinstance(doc.get("lsn"), int) and doc["lsn"] > 0,
              "PUT %s/%s on %s: no LSN in %r" % (ns, key, node.name, doc))
        self.acked[(ns, key)] = (value, doc["lsn"])

    def reads_back(self, node, timeout=30):
        """Every acknowledged write reads back on node with the LSN it was acknowledged with."""
        h = node.http()
        for (ns, key), (value, lsn) in sorted(self.acked.items()):
            def has():
                r = h.get("/api/v1/%s/kv/%s" % (ns, key), timeout=5)
                if r.status != 200:
                    return False
                doc = r.json()
                check(unb64(doc["value"]) == value, "%s: %s/%s has another value" %
                      (node.name, ns, key), "raft")
                check(doc.get("lsn") == lsn, "%s: %s/%s has LSN %r, acknowledged with %d" %
                      (node.name, ns, key, doc.get("lsn"), lsn), "raft")
                return True
            wait_for("%s/%s on %s" % (ns, key, node.name), has, timeout, 0.1)


def same_wal(leader, other, ns):
    """other's WAL of ns holds the leader's record bytes at each of its LSNs, up to the same last
    LSN (it may start later: a namespace fetched through a snapshot starts at its checkpoint)."""
    wa, wb = wal_records(leader, ns, "raft"), wal_records(other, ns, "raft")
    check(wa and wb, "%s: empty WAL (%s %d, %s %d records)" % (ns, leader.name, len(wa),
                                                                other.name, len(wb)), "raft")
    check(max(wa) == max(wb), "%s: %s's WAL ends at LSN %d, %s's at %d" %
          (ns, leader.name, max(wa), other.name, max(wb)), "raft")
    for lsn in wb:
        if lsn not in wa or wa[lsn] != wb[lsn]:
            raise Failure("%s LSN %d: %s's record bytes differ from %s's" %
                          (ns, lsn, other.name, leader.name), "raft")
    return len(wb)


def log_since_start(node):
    """The node's log since its last start."""
    with open(node.log_path, "rb") as f:
        log = f.read().decode(errors="replace")
    return log[log.rfind("===== start"):]


def wait_rejoined(node, timeout=45):
    """Until the node's log says the catch-up is over and raft runs again."""
    def done():
        if not node.alive():
            raise Failure("%s exited:\n%s" % (node.name, node.log_tail()), "writer")
        return "out-of-band catch-up done; raft started again" in log_since_start(node)
    wait_for("%s's out-of-band catch-up" % node.name, done, timeout, 0.2)


def catching_up(node):
    """Whether /status/node says the node is catching up (with what it does)."""
    doc = expect_json(node.http().get("/status/node"), 200, "/status/node of " + node.name)
    return doc.get("state") == "catching-up" and "catchingUp" in doc
