#!/usr/bin/env python3
"""The linearizability checker (lincheck.py) on histories whose answer is known: it must accept
linearizable ones and reject a stale read, a lost write and a read of a value never written. A
checker that accepted everything would pass every cluster test; this proves it does not."""

import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lincheck import check, check_key  # noqa: E402

failures = []
n = 0


def case(name, ok, want):
    global n
    n += 1
    good = ok == want
    if not good:
        failures.append(name)
    print("%s %d - %s" % ("ok" if good else "not ok", n, name))


def w(v, call, ret, key="k"):
    return {"key": key, "kind": "w", "value": v, "call": call, "ret": ret}


def r(v, call, ret, key="k"):
    return {"key": key, "kind": "r", "value": v, "call": call, "ret": ret}


# Sequential histories.
case("sequential writes and reads", check_key([w(1, 0, 1), r(1, 2, 3), w(2, 4, 5), r(2, 6, 7)]),
     True)
case("stale read: 1 read after 2 was acknowledged",
     check_key([w(1, 0, 1), w(2, 2, 3), r(1, 4, 5)]), False)
case("read of a value never written", check_key([w(1, 0, 1), r(3, 2, 3)]), False)
case("absent key read before any write", check_key([r(None, 0, 1), w(1, 2, 3)]), True)
case("absent key read after a write (a lost write)", check_key([w(1, 0, 1), r(None, 2, 3)]),
     False)
# Concurrency allows either order, but not both answers at once.
case("read overlapping a write may see either value",
     check_key([w(1, 0, 1), w(2, 2, 6), r(1, 3, 4), r(2, 5, 7)]), True)
case("reads flip back: 2 then 1 with no write in between",
     check_key([w(1, 0, 1), w(2, 2, 9), r(2, 3, 4), r(1, 5, 6)]), False)
case("equal timestamps: a call at a return's time overlaps it",
     check_key([w(1, 0, 5), r(None, 5, 6)]), True)
# Unknown outcomes: a write that may or may not have happened.
case("unknown write observed later", check_key([w(1, 0, 1), w(2, 2, None), r(2, 5, 6)]), True)
case("unknown write never observed", check_key([w(1, 0, 1), w(2, 2, None), r(1, 5, 6)]), True)
case("unknown write cannot precede its call",
     check_key([w(1, 0, 1), r(2, 2, 3), w(2, 4, None)]), False)
case("unknown read is ignored", check_key([w(1, 0, 1), r(7, 2, None)]), True)
# Per key: one bad key is named, the others pass.
hist = [w(1, 0, 1, "a"), r(1, 2, 3, "a"), w(1, 0, 1, "b"), w(2, 2, 3, "b"), r(1, 4, 5, "b")]
case("check() names the key with the stale read", check(hist) == ["b"], True)

# A random linearizable history (a register with writes applied at a random point inside each
# operation's interval) must pass; making one read stale must fail.
rnd = random.Random(7)
events, t = [], 0.0
for i in range(60):
    t += rnd.random()
    events.append(t)
ops, value = [], None
for i, at in enumerate(events):  # linearization points, in order
    call, ret = at - rnd.random() * 2, at + rnd.random() * 2
    if rnd.random() < 0.5:
        value = i
        ops.append(w(i, call, ret))
    else:
        ops.append(r(value, call, ret))
case("random linearizable history (60 operations)", check_key(list(ops)), True)
reads = [o for o in ops if o["kind"] == "r" and o["value"] is not None]
writes = [o for o in ops if o["kind"] == "w"]
victim = reads[-1]
older = [o for o in writes if o["ret"] < victim["call"] and o["value"] != victim["value"]]
stale = dict(victim, value=older[0]["value"])
case("same history with one read made stale",
     check_key([stale if o is victim else o for o in ops]), False)

print("1..%d" % n)
sys.exit(1 if failures else 0)
