"""Linearizability checker for histories of a key-value store (TESTING.md "Checking
linearizability"): the Wing & Gong search with Lowe's memoization of (linearized set, state), as
described by Horn & Kroening (2015), run per key (linearizability is local, so a history is
linearizable when each key's is), with each key a register.

An operation is a dict:
    {"key": k, "kind": "w" | "r", "value": v, "call": t0, "ret": t1}
kind "w" writes value; kind "r" read value (None: the key was absent). call and ret are
CLOCK_MONOTONIC times taken by the client before sending and after the answer; ret None means the
outcome is unknown (a timeout, a 503 after the request may have been applied, a crash): such a
write may have taken effect at any time after its call, or never; such a read tells nothing and
is dropped. On equal timestamps calls come before returns (the operations may overlap).
"""

import math


class _Entry:
    __slots__ = ("op", "is_call", "match", "prev", "next", "time", "order")

    def __init__(self, op, is_call, time, order):
        self.op, self.is_call, self.time, self.order = op, is_call, time, order
        self.match = self.prev = self.next = None


def _step(state, op):
    """Register semantics: (ok, new state)."""
    if op["kind"] == "w":
        return True, op["value"]
    return op["value"] == state, state


def check_key(ops, initial=None):
    """True when the operations on one key are linearizable from the initial value."""
    ops = [o for o in ops if not (o["kind"] == "r" and o.get("ret") is None)]
    events = []
    for i, o in enumerate(ops):
        ret = o["ret"] if o.get("ret") is not None else math.inf
        call = _Entry(i, True, o["call"], 0)
        back = _Entry(i, False, ret, 1)
        call.match = back
        events += [call, back]
    # Calls before returns at equal times: an operation returning at t and one called at t
    # overlap, which allows more orders, never fewer.
    events.sort(key=lambda e: (e.time, e.order))
    head = _Entry(None, False, -math.inf, 0)
    prev = head
    for e in events:
        prev.next, e.prev = e, prev
        prev = e

    def lift(e):
        e.prev.next = e.next
        if e.next is not None:
            e.next.prev = e.prev
        m = e.match
        m.prev.next = m.next
        if m.next is not None:
            m.next.prev = m.prev

    def unlift(e):
        m = e.match
        m.prev.next = m
        if m.next is not None:
            m.next.prev = m
        e.prev.next = e
        if e.next is not None:
            e.next.prev = e

    state, linearized = initial, 0
    cache = set()
    stack = []
    entry = head.next
    while head.next is not None:
        if entry.is_call:
            op = ops[entry.op]
            ok, new_state = _step(state, op)
            if ok:
                new_lin = linearized | (1 << entry.op)
                if (new_lin, new_state) not in cache:
                    cache.add((new_lin, new_state))
                    stack.append((entry, state))
                    state, linearized = new_state, new_lin
                    lift(entry)
                    entry = head.next
                    continue
            entry = entry.next
        else:
            # The earliest pending return: some call before it must be linearized first.
            if not stack:
                return False
            entry, state = stack.pop()
            linearized &= ~(1 << entry.op)
            unlift(entry)
            entry = entry.next
    return True


def check(history, initial=None):
    """Checks a whole history per key: returns the keys whose history is not linearizable."""
    by_key = {}
    for o in history:
        by_key.setdefault(o["key"], []).append(o)
    return sorted(k for k, ops in by_key.items() if not check_key(ops, initial))
