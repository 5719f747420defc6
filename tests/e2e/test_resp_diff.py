#!/usr/bin/env python3
"""End to end, RESP against the real redis-server: the same raw request bytes go to a redis-server
(its own loopback port and directory, no persistence) and to a unison-writer, and the raw reply
bytes must be identical, for every supported command: normal use, arity errors, binary keys and
values, missing keys, repeated keys, inline commands, pipelines, malformed requests. Where we
answer differently on purpose, the case names its row of INTENDED (the same table is in docs/resp.md
"Differences from Redis") and checks what each server answers instead of comparing bytes.

Also redis-cli against both: --scan --pattern, -r 3 PING, and --pipe mass insertion of 10,000 SETs.

The expected bytes are Redis 7.0's texts (Debian 12's redis-server 7.0.15, which .ci/run installs):
with another version of redis-server the suite fails at once and says so, since a newer Redis
answers some of these requests with other texts, which would look like our bugs here.
"""

import os
import random
import re
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Failure, Suite, check, free_port, redis_cli, resp_command, wait_for  # noqa

P = "resp"

# The intended differences, each with its reason. Every byte not covered by one of these rows must
# be what redis-server answers.
INTENDED = {
    "hash-order": "HGETALL, HKEYS and HVALS list a hash's fields in byte order: a row's columns "
                  "are stored sorted. Redis lists a small hash in insertion order and a large one "
                  "in hash-table order, and documents no order; compared as sets of pairs.",
    "separate-types": "strings (KV entries) and hashes (rows) are separate spaces of a namespace, "
                      "so one key can be both: a string command on a hash key sees no string (and "
                      "the reverse), where Redis answers WRONGTYPE.",
    "set-options": "SET takes no options (keys do not expire; no conditional writes): EX, PX, "
                   "EXAT, PXAT, KEEPTTL, NX, XX and GET are refused with -ERR ... not supported, "
                   "where Redis applies them.",
    "limits": "a key is 1..511 bytes, a field at least 1 byte, a bulk string at most 4 MiB and a "
              "command at most 1048576 arguments (a record is at most 4 MiB); Redis accepts empty "
              "keys and fields, 512 MiB strings and, for an authenticated client, 2^31-1 "
              "arguments.",
    "select": "SELECT picks a namespace, by name or by index (0 the default namespace, then the "
              "others in name order), not one of 16 numbered databases.",
    "identity": "HELLO, INFO, COMMAND, CLIENT ID and CONFIG GET describe this server (its name "
                "and version, connection ids, its command table, appendonly yes); compared in "
                "shape and in the fields that mean the same.",
    "resp3": "only RESP2 is served: HELLO 3 answers -NOPROTO, where Redis switches to RESP3.",
    "scan-cursor": "a SCAN cursor is a handle the server keeps, and keys come in byte order; "
                   "Redis's cursor is a hash-table position: an iteration is compared as the set "
                   "of keys it returned, and a cursor the server never returned is an error.",
    "subcommand": "an unknown or unsupported subcommand of CONFIG, CLIENT or COMMAND is answered "
                  "with the supported ones; Redis says 'Try CONFIG HELP' (HELP is not served).",
    "command-list-filterby": "COMMAND LIST FILTERBY MODULE|ACLCAT|PATTERN arg is refused with -ERR "
                             "COMMAND LIST FILTERBY is not supported, where Redis filters its "
                             "list; every other form of FILTERBY is Redis's syntax error on both.",
    "crlf-after-bulk": "a bulk string not followed by CRLF is a protocol error (the connection "
                       "closes); Redis does not look at those two bytes.",
    "not-served": "commands outside the supported set (DBSIZE, KEYS, FLUSHALL, EXPIRE, INCR, "
                  "WATCH, ...) get Redis's unknown-command error.",
    "multi": "transactions are not served: MULTI is refused, and so is every command after it up "
             "to EXEC (-EXECABORT, as Redis answers a transaction one of whose commands failed "
             "to queue) or DISCARD, so that a transaction sent in one go is never half applied.",
}

suite = Suite("resp_diff")
server = suite.writer("w")
suite.server = server
redis = None  # the RedisServer


# --- redis-server ---------------------------------------------------------------------------------


class RedisServer:
    """One redis-server on a free loopback port with its own directory, no RDB or AOF."""

    def __init__(self, workdir):
        self.dir = os.path.join(workdir, "redis")
        os.makedirs(self.dir, exist_ok=True)
        self.proc = None
        self.port = None

    def start(self):
        for _ in range(5):  # a port free a moment ago may be taken meanwhile: try another
            self.port = free_port()
            log = open(os.path.join(self.dir, "redis.log"), "ab")
            self.proc = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "no", "--dir", self.dir, "--daemonize", "no"],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL)
            log.close()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                        s.sendall(b"PING\r\n")
                        if s.recv(16) == b"+PONG\r\n":
                            if self.answers_on(s):
                                return self
                            break  # another server took the port: ours cannot bind it
                except OSError:
                    time.sleep(0.05)
            self.stop()
        raise Failure("redis-server did not start; see %s/redis.log" % self.dir, "test")

    def answers_on(self, s):
        """Whether the server on connection s is the redis-server started here: its INFO server
        names our process (another process may have taken the port between free_port() and the
        bind, and then answers PING while ours fails to bind and exits)."""
        s.sendall(b"INFO server\r\n")
        buf = b""
        while True:
            b = s.recv(65536)
            if not b:
                return False
            buf += b
            if not buf.startswith(b"$"):
                return False
            if b"\r\n" in buf:
                head = buf.index(b"\r\n") + 2
                if len(buf) >= head + int(buf[1:head - 2]) + 2:
                    break
        return b"\r\nprocess_id:%d\r\n" % self.proc.pid in buf

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(20)


# --- raw replies ----------------------------------------------------------------------------------


class Raw:
    """A socket that reads whole RESP2 replies as their exact bytes."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def close(self):
        self.s.close()

    def _fill(self):
        b = self.s.recv(1 << 20)
        if not b:
            raise EOFError
        self.buf += b

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        i = self.buf.index(b"\r\n") + 2
        line, self.buf = self.buf[:i], self.buf[i:]
        return line

    def reply(self):
        line = self._line()
        t = line[:1]
        if t == b"$":
            n = int(line[1:-2])
            if n < 0:
                return line
            while len(self.buf) < n + 2:
                self._fill()
            data, self.buf = self.buf[:n + 2], self.buf[n + 2:]
            return line + data
        if t == b"*":
            n = int(line[1:-2])
            return line + b"".join(self.reply() for _ in range(max(n, 0)))
        if t == b"%":  # RESP3, after HELLO 3 on redis-server: a map of n pairs
            n = int(line[1:-2])
            return line + b"".join(self.reply() for _ in range(2 * n))
        if t in (b"+", b"-", b":"):
            return line
        raise Failure("not a RESP2 reply: %r" % line[:80], P)

    def closed(self, wait=3.0):
        """True when the peer closed the connection (and sent nothing more) within wait s."""
        self.s.settimeout(wait)
        try:
            while True:
                self._fill()
        except (EOFError, ConnectionResetError):
            return not self.buf
        except socket.timeout:
            return False


def exchange(port, payload, n, chunk=None, closes=None):
    """Sends payload on a new connection (in pieces of chunk bytes when given), reads n replies.
    Returns (the replies' bytes, or what was received before a close or silence, marked; whether the
    connection was closed afterwards, when closes is asked)."""
    c = Raw(port)
    try:
        try:
            if chunk:
                for i in range(0, len(payload), chunk):
                    c.s.sendall(payload[i:i + chunk])
                    time.sleep(0.001)
            else:
                c.s.sendall(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed after an error reply to the start of the request: read that reply
        parts = []
        try:
            for _ in range(n):
                parts.append(c.reply())
        except (EOFError, ConnectionResetError):
            parts.append(b"<closed>" + c.buf)
        except socket.timeout:
            parts.append(b"<no reply>" + c.buf)
        got = b"".join(parts)
        # A close comes at once after the reply; a connection that stays open is given 0.3 s.
        return got, (c.closed(3.0 if closes else 0.3) if closes is not None else None)
    finally:
        c.close()


def both(payload, n=1, chunk=None, closes=None):
    r = exchange(redis.port, payload, n, chunk, closes)
    o = exchange(server.ports["resp"], payload, n, chunk, closes)
    return r, o


def show(b, limit=300):
    return repr(b[:limit]) + ("... (%d bytes)" % len(b) if len(b) > limit else "")


# Byte differences found by same() in the running case: the case goes on and fails at its end
# with all of them (see every_difference).
mismatches = []


def same(payload, n=1, what=None, chunk=None, closes=None):
    """The n replies to payload are byte-identical; with closes=True/False both servers also close
    (or keep) the connection afterwards. Returns the reply bytes."""
    (r, rc), (o, oc) = both(payload, n, chunk, closes)
    what = what or show(payload, 120)
    if r != o:
        mismatches.append("%s:\n      redis-server: %s\n      ours:         %s" %
                          (what, show(r), show(o)))
    elif closes is not None and (rc != closes or oc != closes):
        mismatches.append("%s: connection closed afterwards: redis-server %s, ours %s "
                          "(expected %s)" % (what, rc, oc, closes))
    return r


def every_difference(case):
    """The case, failing at its end with every byte difference it found."""
    def run():
        del mismatches[:]
        case()
        if mismatches:
            raise Failure("%d replies differ:\n    " % len(mismatches) +
                          "\n    ".join(mismatches), P)
    run.__name__ = case.__name__
    return run


def cmd(*args):
    return resp_command(*args)


def same_cmd(*args):
    return same(cmd(*args))


def differs(row, payload, n=1, redis_ok=None, ours_ok=None, closes=None, chunk=None):
    """An intended difference (row of INTENDED): each server's answer is checked by its own
    predicate instead of comparing the bytes; the difference is printed as a TAP comment."""
    check(row in INTENDED, "no INTENDED row %r" % row, "test")
    (r, rc), (o, oc) = both(payload, n, chunk, closes)
    what = show(payload, 80)
    if redis_ok is not None:
        check(redis_ok(r), "%s [%s]: redis-server answered %s" % (what, row, show(r)), P)
    if ours_ok is not None:
        check(ours_ok(o), "%s [%s]: ours answered %s (redis-server %s)" % (what, row, show(o),
                                                                           show(r)), P)
    if closes is not None:
        check(oc == closes, "%s [%s]: ours closed the connection: %s" % (what, row, oc), P)
    print("# intended [%s] %s: redis-server %s, ours %s" % (row, what, show(r, 80), show(o, 80)),
          flush=True)
    return r, o


def is_error(prefix=b"-ERR"):
    return lambda b: b.startswith(prefix) and b.endswith(b"\r\n") and b.count(b"\r\n") == 1


def parse(raw):
    """A reply's bytes as Python values: bytes, int, None, lists; errors and status lines as
    ('-', text) and ('+', text)."""
    def one(i):
        j = raw.index(b"\r\n", i)
        t, v, i = raw[i:i + 1], raw[i + 1:j], j + 2
        if t == b"*":
            n = int(v)
            if n < 0:
                return None, i
            out = []
            for _ in range(n):
                x, i = one(i)
                out.append(x)
            return out, i
        if t == b"$":
            n = int(v)
            return (None, i) if n < 0 else (raw[i:i + n], i + n + 2)
        if t == b":":
            return int(v), i
        return (t.decode(), v), i

    value, end = one(0)
    check(end == len(raw), "trailing bytes after a reply: %r" % raw[end:end + 40], P)
    return value


def sync_delete(*keys):
    """Deletes keys on both servers without comparing (after an intended difference wrote on one
    server only), so that both keyspaces are the same again."""
    both(cmd("DEL", *keys))


def installed_version():
    """What `redis-server --version` says: "7.0.15", or the error text."""
    try:
        out = subprocess.run(["redis-server", "--version"], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        return "unknown (%s)" % e
    m = re.search(rb"\bv=(\d+\.\d+\.\S+)", out)
    return m.group(1).decode() if m else "unknown (%r)" % out.strip()[:100]


REDIS_VERSION = installed_version()


# --- cases ----------------------------------------------------------------------------------------


def redis_server_version():
    """The expected replies are Redis 7.0's texts: with any other redis-server the suite stops
    here, before differences that would look like our bugs (Redis 8 answers SCAN ... TYPE with a
    name that is no type with -ERR unknown type name, 7.0 with no keys)."""
    check(REDIS_VERSION.startswith("7.0."),
          "redis-server is %s, not 7.0.x: this suite compares replies byte for byte with Redis "
          "7.0's texts (Debian 12's redis-server 7.0.15, which .ci/run installs); run it with "
          "that version first in PATH" % REDIS_VERSION, "test")


def start():
    global redis
    redis_server_version()
    redis = RedisServer(suite.workdir).start()
    server.start()


def connection():
    for args in (["PING"], ["PING", "hi"], ["PING", "a", "b"], ["ping"], ["PiNg", "x"],
                 ["ECHO", "x"], ["echo", ""], ["ECHO"], ["ECHO", "a", "b"],
                 ["ECHO", b"\x00\r\n\xff"], ["SELECT", "0"], ["SELECT"], ["SELECT", "0", "1"],
                 ["AUTH"], ["AUTH", "x"], ["AUTH", "default", "x"], ["AUTH", "someone", "x"],
                 ["CLIENT", "SETNAME", "me"], ["CLIENT", "SETNAME", "a b"], ["CLIENT", "GETNAME"],
                 ["CLIENT"], ["CLIENT", "ID", "x"], ["client", "getname", "x"],
                 ["CLIENT", "SETNAME"], ["CLIENT", "SETNAME", "a", "b"], ["CLIENT", "INFO", "x"],
                 ["COMMAND", "LIST", "x"], ["TIME", "x"], ["QUIT", "x"],
                 ["CONFIG", "GET", "save"], ["CONFIG", "GET", "nosuchparam"], ["CONFIG", "GET"],
                 ["CONFIG", "GET", "SAVE"], ["CONFIG", "GET", "Save", "save"],
                 ["CONFIG", "GET", "SAV*"], ["CONFIG", "GET", "save", "sav?"],
                 ["CONFIG", "GET", "sa\\ve"], ["CONFIG", "GET", "SA\\VE"],
                 ["CONFIG", "GET", "sa\\v*"], ["CONFIG", "GET", "sa\\ve", "save"],
                 ["CONFIG"], ["COMMAND", "INFO", "nosuchcommand"], ["COMMAND", "COUNT", "x"],
                 ["INFO", "nosuchsection"], ["HELLO", "x"], ["HELLO", "1"], ["HELLO", "4"],
                 ["HELLO", "02"], ["HELLO", "-0"], ["HELLO", "+2"], ["HELLO", " 2"],
                 ["HELLO", "2.0"], ["HELLO", ""],
                 ["HELLO", "2", "BOGUS"], ["HELLO", "2", "SETNAME"], ["HELLO", "2", "AUTH", "x"]):
        same_cmd(*args)
    # A name set by CLIENT SETNAME is what CLIENT GETNAME answers on that connection.
    same(cmd("CLIENT", "SETNAME", "abc") + cmd("CLIENT", "GETNAME"), 2)
    # QUIT answers +OK and closes.
    same(cmd("QUIT"), 1, closes=True)
    same(b"QUIT\r\n", 1, closes=True)


def strings():
    for args in (["SET", "s:k", "v"], ["GET", "s:k"], ["GET", "s:missing"], ["SET", "s:k", "v2"],
                 ["GET", "s:k"], ["STRLEN", "s:k"], ["STRLEN", "s:missing"], ["TYPE", "s:k"],
                 ["TYPE", "s:missing"],
                 # arity
                 ["GET"], ["GET", "a", "b"], ["SET"], ["SET", "s:k"], ["STRLEN"], ["TYPE"],
                 ["MGET"], ["MSET"], ["DEL"], ["UNLINK"], ["EXISTS"], ["set", "s:k"], ["gEt"],
                 # anything after the value that is not an option
                 ["SET", "s:k", "v", "BOGUS"], ["SET", "s:k", "v", "1"],
                 # EXISTS and DEL count every argument / every distinct key
                 ["EXISTS", "s:k", "s:k", "s:missing", "s:k"], ["EXISTS", "s:missing"],
                 ["MSET", "s:a", "1", "s:b", "2", "s:c", "3"],
                 ["MGET", "s:a", "s:missing", "s:b", "s:a", "s:nope", "s:c"],
                 ["MGET", "s:missing"],
                 ["MSET", "s:a"], ["MSET", "s:a", "1", "s:b"],
                 ["MSET", "s:a", "1", "s:b", "2", "s:c"],
                 ["MSET", "s:d", "1", "s:d", "2", "s:d", "3"], ["GET", "s:d"],
                 ["DEL", "s:a", "s:a", "s:b", "s:missing", "s:b"], ["DEL", "s:a"],
                 ["UNLINK", "s:c", "s:c", "s:d"], ["EXISTS", "s:a", "s:b", "s:c", "s:d"],
                 ["MGET", "s:a", "s:b", "s:c", "s:d"]):
        same_cmd(*args)


def binary_safe():
    huge = bytes(range(256)) * 4096  # 1 MiB, every byte value
    big = b"\r\n\x00" * 100000
    for args in (["SET", b"b:\x00k\r\ney", b"v\r\n\x00a\r\n"], ["GET", b"b:\x00k\r\ney"],
                 ["GET", b"b:\x00k\r\ne"], ["EXISTS", b"b:\x00k\r\ney", b"b:\x00k"],
                 ["SET", b"b:empty", b""], ["GET", b"b:empty"], ["STRLEN", b"b:empty"],
                 ["EXISTS", b"b:empty"], ["MGET", b"b:empty", b"b:\x00k\r\ney"],
                 ["SET", b"b:\r\n", b"\r\n"], ["GET", b"b:\r\n"],
                 ["SET", b"b:\xff\xfe", b"\x00"], ["GET", b"b:\xff\xfe"],
                 ["SET", b"b:huge", huge], ["GET", b"b:huge"], ["STRLEN", b"b:huge"],
                 ["MSET", b"b:big1", big, b"b:big2", huge, b"b:e2", b""],
                 ["MGET", b"b:big1", b"b:missing", b"b:big2", b"b:e2"],
                 ["ECHO", huge], ["PING", big],
                 ["HSET", b"b:h\x00\r\n", b"f\x00\r\n", b"v\r\n\x00", b"e", b"", b"big", huge],
                 ["HGET", b"b:h\x00\r\n", b"f\x00\r\n"], ["HGET", b"b:h\x00\r\n", b"e"],
                 ["HMGET", b"b:h\x00\r\n", b"big", b"f\x00", b"e"], ["HLEN", b"b:h\x00\r\n"],
                 ["HEXISTS", b"b:h\x00\r\n", b"e"],
                 ["DEL", b"b:\x00k\r\ney", b"b:empty", b"b:\r\n", b"b:\xff\xfe", b"b:huge",
                  b"b:big1", b"b:big2", b"b:e2", b"b:h\x00\r\n"]):
        same_cmd(*args)


def hashes():
    for args in (["HSET", "h:1", "f1", "v1", "f2", "v2", "f3", "v3"],  # 3 new
                 ["HSET", "h:1", "f1", "x", "f4", "v4", "f4", "y", "f5", "v5"],  # 2 new
                 ["HSET", "h:1", "f1", "again"],  # 0 new
                 ["HGET", "h:1", "f1"], ["HGET", "h:1", "f4"], ["HGET", "h:1", "nope"],
                 ["HGET", "h:missing", "f1"],
                 ["HMGET", "h:1", "f1", "nope", "f5", "f1"], ["HMGET", "h:missing", "a", "b"],
                 ["HLEN", "h:1"], ["HLEN", "h:missing"], ["HEXISTS", "h:1", "f2"],
                 ["HEXISTS", "h:1", "nope"], ["HEXISTS", "h:missing", "f"], ["TYPE", "h:1"],
                 ["EXISTS", "h:1", "h:1", "h:missing"],
                 ["HGETALL", "h:missing"], ["HKEYS", "h:missing"], ["HVALS", "h:missing"],
                 ["HDEL", "h:1", "f2", "f2", "nope"],  # 1
                 ["HDEL", "h:1", "nope"], ["HDEL", "h:missing", "f1"],
                 ["HMSET", "h:2", "a", "1", "b", "2"], ["HMSET", "h:2", "a", "3"],
                 ["HGET", "h:2", "a"],
                 ["HDEL", "h:2", "a", "b"], ["EXISTS", "h:2"], ["TYPE", "h:2"], ["HLEN", "h:2"],
                 # arity
                 ["HSET"], ["HSET", "h:1"], ["HSET", "h:1", "f"], ["HSET", "h:1", "f", "v", "g"],
                 ["HMSET", "h:1", "f"], ["HGET", "h:1"], ["HGET", "h:1", "a", "b"],
                 ["HMGET", "h:1"], ["HDEL", "h:1"], ["HGETALL"], ["HGETALL", "h:1", "x"],
                 ["HKEYS"], ["HVALS", "a", "b"],
                 ["HLEN"], ["HEXISTS", "h:1"], ["hset", "x"], ["HgetAll"],
                 ["DEL", "h:1", "h:1", "h:2"], ["EXISTS", "h:1"]):
        same_cmd(*args)
    # Fields given in byte order come back in that order from both servers.
    same_cmd("HSET", "h:3", "a", "1", "b", "2", "c", "3")
    same_cmd("HGETALL", "h:3")
    same_cmd("HKEYS", "h:3")
    same_cmd("HVALS", "h:3")
    # Fields in another order: Redis answers in insertion order, ours in byte order [hash-order].
    same_cmd("HSET", "h:4", "zz", "1", "aa", "2", "mm", "3")
    same_cmd("HSET", "h:4", "bb", "4")
    pairs = lambda b: sorted(zip(parse(b)[::2], parse(b)[1::2]))  # noqa: E731
    r, o = differs("hash-order", cmd("HGETALL", "h:4"),
                   ours_ok=lambda b: parse(b) == [b"aa", b"2", b"bb", b"4", b"mm", b"3",
                                                  b"zz", b"1"])
    check(pairs(r) == pairs(o), "HGETALL h:4: other pairs: %r vs %r" % (pairs(r), pairs(o)), P)
    r, o = differs("hash-order", cmd("HKEYS", "h:4"))
    check(sorted(parse(r)) == parse(o), "HKEYS h:4: %r vs %r" % (parse(r), parse(o)), P)
    r, o = differs("hash-order", cmd("HVALS", "h:4"))
    check(sorted(parse(r)) == sorted(parse(o)), "HVALS h:4: %r vs %r" % (parse(r), parse(o)), P)
    same_cmd("DEL", "h:3", "h:4")


def separate_types():
    """[separate-types] A string command on a hash key answers as if the key were missing; Redis
    answers WRONGTYPE. Both then have the same keys again."""
    wrongtype = is_error(b"-WRONGTYPE Operation against a key holding the wrong kind of value")
    same_cmd("SET", "t:s", "v")
    same_cmd("HSET", "t:h", "f", "v")
    for args, ours in ((["GET", "t:h"], b"$-1\r\n"), (["STRLEN", "t:h"], b":0\r\n"),
                       (["HGET", "t:s", "f"], b"$-1\r\n"), (["HGETALL", "t:s"], b"*0\r\n"),
                       (["HLEN", "t:s"], b":0\r\n"), (["HDEL", "t:s", "f"], b":0\r\n"),
                       (["HEXISTS", "t:s", "f"], b":0\r\n"),
                       (["HMGET", "t:s", "f"], b"*1\r\n$-1\r\n")):
        differs("separate-types", cmd(*args), redis_ok=wrongtype, ours_ok=lambda b: b == ours)
    # MGET answers nil for a key of another type on both.
    same_cmd("MGET", "t:h", "t:s")
    # A write of the other type: Redis refuses it, ours writes the other space of the key.
    differs("separate-types", cmd("HSET", "t:s", "f", "v"), redis_ok=wrongtype,
            ours_ok=lambda b: b == b":1\r\n")
    differs("separate-types", cmd("TYPE", "t:s"), redis_ok=lambda b: b == b"+string\r\n",
            ours_ok=lambda b: b == b"+string\r\n")
    # SET replaces a hash in Redis; here the key is then both a string and a hash.
    differs("separate-types", cmd("SET", "t:h", "v"), redis_ok=lambda b: b == b"+OK\r\n",
            ours_ok=lambda b: b == b"+OK\r\n")
    differs("separate-types", cmd("HGET", "t:h", "f"), redis_ok=wrongtype,
            ours_ok=lambda b: b == b"$1\r\nv\r\n")
    # DEL of a key that is both counts it once, and removes both.
    same_cmd("DEL", "t:s", "t:h", "t:s")
    same_cmd("EXISTS", "t:s", "t:h")


def set_options():
    """[set-options] Ours refuses every SET option; Redis applies it. Malformed options are errors
    on both."""
    same_cmd("SET", "o:k", "before")
    refused = lambda opt: is_error(  # noqa: E731
        b"-ERR SET option '%s' is not supported (keys do not expire and SET takes no options)" %
        opt.upper().encode())
    for opts in (["EX", "10"], ["ex", "10"], ["PX", "100000"], ["EXAT", "4102444800"],
                 ["PXAT", "4102444800000"], ["KEEPTTL"], ["NX"], ["XX"], ["GET"],
                 ["XX", "GET"], ["EX", "10", "NX"]):
        differs("set-options", cmd("SET", "o:k", "after", *opts),
                redis_ok=lambda b: not b.startswith(b"-"), ours_ok=refused(opts[0]))
        sync_delete("o:k")
        same_cmd("SET", "o:k", "before")
    for opts in (["EX"], ["EX", "x"], ["EX", "0"], ["EX", "-1"], ["PX"], ["NX", "XX"],
                 ["EX", "10", "PX", "10"]):
        differs("set-options", cmd("SET", "o:k", "after", *opts), redis_ok=is_error(),
                ours_ok=is_error())
    same_cmd("GET", "o:k")
    same_cmd("DEL", "o:k")


def limits():
    """[limits] What Redis accepts and a record cannot hold."""
    err = is_error()
    differs("limits", cmd("SET", "", "v"), redis_ok=lambda b: b == b"+OK\r\n",
            ours_ok=is_error(b"-ERR empty keys are not supported"))
    differs("limits", cmd("GET", ""), redis_ok=lambda b: b == b"$1\r\nv\r\n", ours_ok=err)
    sync_delete("")
    differs("limits", cmd("HSET", "l:h", "", "v"), redis_ok=lambda b: b == b":1\r\n",
            ours_ok=is_error(b"-ERR empty field names are not supported"))
    sync_delete("l:h")
    differs("limits", cmd("SET", "k" * 512, "v"), redis_ok=lambda b: b == b"+OK\r\n",
            ours_ok=is_error(b"-ERR key is 512 bytes; the limit is 511"))
    sync_delete("k" * 512)
    same_cmd("SET", "k" * 511, "v")
    same_cmd("GET", "k" * 511)
    same_cmd("DEL", "k" * 511)
    # A bulk string over 4 MiB: a protocol error here (the connection closes), a value in Redis.
    n = 4 * 1024 * 1024 + 1
    differs("limits", b"*3\r\n$3\r\nSET\r\n$3\r\nl:b\r\n$%d\r\n%s\r\n" % (n, b"x" * n),
            redis_ok=lambda b: b == b"+OK\r\n",
            ours_ok=is_error(b"-ERR Protocol error: invalid bulk length: 4194305 bytes, one "
                             b"argument is at most 4194304"), closes=True,
            chunk=1 << 20)
    sync_delete("l:b")
    # More than 1048576 arguments.
    n = 1048577
    differs("limits", b"*%d\r\n" % n + b"$1\r\nx\r\n" * n,
            redis_ok=lambda b: b.startswith(b"-ERR unknown command 'x'"),
            ours_ok=is_error(b"-ERR Protocol error: invalid multibulk length"), closes=True,
            chunk=1 << 20)


def errors():
    for args in (["NOSUCH"], ["nosuch", "a", "b"], ["NoSuCh", "x" * 200],
                 ["nosuch"] + ["abcdefghij"] * 30, ["nosuch", "a" * 100, "b" * 100],
                 ["nosuch", b"a\r\nb", b"c\x00d", b"\xff"], [b"no\r\nsuch", "x"],
                 [b"no\x00such"], ["x" * 300], [""], ["", "a"]):
        same_cmd(*args)
    for name in ("get", "set", "del", "exists", "mget", "mset", "strlen", "type", "unlink",
                 "hset", "hmset", "hget", "hmget", "hdel", "hgetall", "hkeys", "hvals", "hlen",
                 "hexists", "scan", "select", "echo", "config", "client", "auth"):
        same_cmd(name.upper())
        same_cmd(name.capitalize())
    for args in (["PING", "a", "b"], ["TYPE", "a", "b"], ["STRLEN", "a", "b"],
                 ["HGETALL", "a", "b"], ["HLEN", "a", "b"], ["HEXISTS", "a"],
                 ["HEXISTS", "a", "b", "c"], ["TIME", "a"]):
        same_cmd(*args)
    # Subcommands Redis knows and we refuse, and ones neither knows [subcommand].
    for args in (["CONFIG", "BOGUS"], ["CLIENT", "BOGUS"], ["COMMAND", "BOGUS"],
                 ["CLIENT", "KILL", "x"], ["COMMAND", "GETKEYS"]):
        differs("subcommand", cmd(*args), redis_ok=is_error(), ours_ok=is_error())
    differs("subcommand", cmd("CONFIG", "SET", "save", ""), ours_ok=is_error(
        b"-ERR CONFIG SET is not supported: only CONFIG GET is; settings come from the "
        b"configuration file"))
    # COMMAND LIST FILTERBY: every form but the one Redis applies is its syntax error on both.
    for args in (["COMMAND", "LIST", "FILTERBY"], ["COMMAND", "LIST", "FILTERBY", "PATTERN"],
                 ["COMMAND", "LIST", "FILTERBY", "PATTERN", "get*", "x"],
                 ["COMMAND", "LIST", "FILTERBY", "BOGUS", "x"],
                 ["COMMAND", "LIST", "x", "FILTERBY", "PATTERN"],
                 ["COMMAND", "LIST", "FILTERBY", "PATTERN", "a", "FILTERBY", "PATTERN", "b"]):
        same_cmd(*args)
    for args in (["PATTERN", "get*"], ["aclcat", "read"], ["MODULE", "m"]):
        differs("command-list-filterby", cmd("COMMAND", "LIST", "FILTERBY", *args),
                redis_ok=lambda b: b.startswith(b"*"),
                ours_ok=is_error(b"-ERR COMMAND LIST FILTERBY is not supported: COMMAND LIST "
                                 b"lists every command"))
    # CLIENT SETINFO (Redis 7.2, sent by client libraries) is served; Redis 7.0 does not know it.
    differs("subcommand", cmd("CLIENT", "SETINFO", "lib-name", "x"),
            ours_ok=lambda b: b == b"+OK\r\n")
    # Commands we do not serve answer the unknown-command error [not-served].
    for args in (["DBSIZE"], ["KEYS", "*"], ["EXPIRE", "e:x", "10"], ["INCR", "e:n"],
                 ["RENAME", "e:x", "e:y"], ["WATCH", "e:x"], ["LPUSH", "e:l", "a"]):
        differs("not-served", cmd(*args),
                ours_ok=is_error(b"-ERR unknown command '%s', with args beginning with: %s" %
                                 (args[0].encode(), b"".join(b"'%s' " % a.encode()
                                                             for a in args[1:]))))
    sync_delete("e:n", "e:l")
    # EXEC and DISCARD without MULTI: Redis's errors.
    same_cmd("EXEC")
    same_cmd("DISCARD")


def multi():
    """A transaction sent in one go, as redis-py's pipeline() sends one: Redis applies it at EXEC;
    here nothing of it runs, and the client learns so from every answer [multi]."""
    tx = cmd("MULTI") + cmd("SET", "m:x", "1") + cmd("GET", "m:x") + cmd("EXEC")
    r, o = differs("multi", tx, 4,
                   redis_ok=lambda b: b == b"+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n+OK\r\n$1\r\n1\r\n")
    lines = o.split(b"\r\n")[:-1]
    check(len(lines) == 4 and lines[0].startswith(b"-ERR MULTI is not supported") and
          all(x.startswith(b"-ERR command not run: MULTI was refused") for x in lines[1:3]) and
          lines[3] == b"-EXECABORT Transaction discarded because of previous errors.",
          "the refused transaction was answered %s" % show(o), P)
    check(exchange(server.ports["resp"], cmd("EXISTS", "m:x"), 1)[0] == b":0\r\n",
          "a SET inside a refused MULTI was applied", P)
    # DISCARD ends the refusal; QUIT still closes inside it; a nested MULTI is Redis's error.
    o, _ = exchange(server.ports["resp"], cmd("MULTI") + cmd("MULTI") + cmd("PING") +
                    cmd("DISCARD") + cmd("PING"), 5)
    lines = o.split(b"\r\n")[:-1]
    check(len(lines) == 5 and lines[1] == b"-ERR MULTI calls can not be nested" and
          lines[2].startswith(b"-ERR command not run") and lines[3] == b"+OK" and
          lines[4] == b"+PONG", "MULTI, MULTI, PING, DISCARD, PING: %s" % show(o), P)
    o, closed = exchange(server.ports["resp"], cmd("MULTI") + cmd("QUIT"), 2, closes=True)
    check(o.endswith(b"+OK\r\n") and closed, "QUIT inside a refused MULTI: %s, closed %s" %
          (show(o), closed), P)
    sync_delete("m:x")


def protocol():
    ping = cmd("PING")
    # Requests skipped by both, then a PING: its PONG must be the only reply.
    for skipped in (b"*0\r\n", b"*-1\r\n", b"*-5\r\n", b"\r\n", b"\n", b"   \r\n",
                    b"\r\n\r\n\r\n", b"*0\r\n*0\r\n"):
        same(skipped + ping, 1, closes=False)
    # Inline commands, as redis-cli and telnet users send them.
    for inline, n in ((b"PING\r\n", 1), (b"ping\n", 1), (b"PING hello\r\n", 1),
                      (b"  PING   \r\n\tPING\r\n", 2), (b"SET i:a b\r\nGET i:a\r\nDEL i:a\r\n", 3),
                      (b"SET i:a b\nGET i:a\nDEL i:a i:a\n", 3), (b"ECHO 'a\\'b' \"c\\td\"\r\n", 1),
                      (b"ECHO \"\\x41\\x4a\\x4\"\r\n", 1),
                      (b"SET i:q \"\\x00\\r\\n\"\r\nGET i:q\r\n", 2),
                      (b"ECHO \"\" ''\r\n", 1), (b"PING\rx\r\n", 1), (b"GeT i:q\r\n", 1),
                      (b"DEL i:q\r\n", 1), (b"PING\r\n*1\r\n$4\r\nPING\r\n", 2),
                      (b"*1\r\n$4\r\nPING\r\nPING\r\n", 2), (b"$3\r\nGET\r\n", 2),
                      (b"NOSUCH a b\r\n", 1)):
        same(inline, n, closes=False)
    # Leading zeros, a plus sign, a space, a bare LF after a length: what Redis accepts.
    for odd in (b"*01\r\n$04\r\nPING\r\n", b"*+1\r\n$+4\r\nPING\r\n", b"*1 \r\n$4\r\nPING\r\n",
                b"*1\n$4\r\nPING\r\n"):
        same(odd, 1)
    # Protocol errors: Redis's message, then the connection closes; a request before the bad one in
    # the same bytes is answered first.
    for bad in (b"*x\r\n", b"*\r\n", b"*-0\r\n", b"*12345678901234567890\r\n", b"*9999999999\r\n",
                b"*1\r\n$-1\r\n", b"*1\r\n$-5\r\n", b"*1\r\n$-0\r\n", b"*1\r\n$abc\r\n",
                b"*1\r\n$\r\n", b"*1\r\n$99999999999\r\n", b"*1\r\n$536870913\r\n",
                b"*1\r\n+PING\r\n", b"*2\r\n$3\r\nGET\r\n:1\r\n", b"*1\r\n$4 \r\nPING\r\n",
                b"*" + b"1" * 70000, b"*1\r\n$" + b"1" * 70000, b"x" * 70000,
                b"PING \"unbalanced\r\n", b"ECHO 'a'b\r\n", b"GET \"a\"b\r\n"):
        same(bad, 1, closes=True)
        same(ping + bad, 2, closes=True)
    # [crlf-after-bulk]
    differs("crlf-after-bulk", b"*1\r\n$4\r\nPINGxx", redis_ok=lambda b: b == b"+PONG\r\n",
            ours_ok=is_error(b"-ERR Protocol error: expected CRLF after bulk string"), closes=True)


def pipelines():
    # Reads after writes in one batch see them; counts see the batch's earlier writes.
    batch = [cmd("SET", "p:a", "1"), cmd("GET", "p:a"), cmd("SET", "p:a", "2"), cmd("GET", "p:a"),
             cmd("DEL", "p:a", "p:a"), cmd("GET", "p:a"), cmd("DEL", "p:a"),
             cmd("MSET", "p:b", "1", "p:c", "2", "p:b", "3"), cmd("MGET", "p:a", "p:b", "p:c"),
             cmd("EXISTS", "p:a", "p:b", "p:c", "p:b"), cmd("HSET", "p:h", "f", "1", "g", "2"),
             cmd("HSET", "p:h", "f", "3", "h", "4"), cmd("HGET", "p:h", "f"),
             cmd("HDEL", "p:h", "f", "x"), cmd("HDEL", "p:h", "f"), cmd("HLEN", "p:h"),
             cmd("NOSUCH"), cmd("GET"), cmd("SET", "p:d", b"\x00" * 1000), cmd("STRLEN", "p:d"),
             b"GET p:b\r\n", cmd("PING"), cmd("DEL", "p:b", "p:c", "p:d", "p:h"),
             cmd("MGET", "p:b", "p:c", "p:d")]
    payload = b"".join(batch)
    same(payload, len(batch), "a batch of %d mixed reads and writes" % len(batch))
    # The same batch delivered in small pieces (requests split across reads).
    for chunk in (1, 7, 64):
        same(payload, len(batch), "the batch in pieces of %d bytes" % chunk, chunk=chunk)
    # A long pipeline: 2000 SETs, GETs, DELs interleaved.
    big = []
    for i in range(500):
        k = "p:%d" % i
        big += [cmd("SET", k, "v%d" % i), cmd("GET", k), cmd("EXISTS", k, "p:none")]
    for i in range(0, 500, 2):
        big += [cmd("DEL", "p:%d" % i, "p:%d" % (i + 1), "p:%d" % i)]
    big.append(cmd("MGET", *["p:%d" % i for i in range(0, 500, 7)]))
    same(b"".join(big), len(big), "a pipeline of %d commands" % len(big))
    # Large values in a pipeline (replies larger than the socket buffers).
    vals = [os.urandom(100000) for _ in range(20)]
    reqs = [cmd("SET", "p:big%d" % i, v) for i, v in enumerate(vals)]
    reqs += [cmd("GET", "p:big%d" % i) for i in range(20)]
    reqs += [cmd("MGET", *["p:big%d" % i for i in range(20)])]
    reqs += [cmd("DEL", *["p:big%d" % i for i in range(20)])]
    same(b"".join(reqs), len(reqs), "a pipeline of 20 x 100 KB SETs and GETs")


def server_commands():
    """[identity] Replies that describe the server: compared in shape and in what means the same."""
    def hello_same(r, o):
        pr, po = parse(r), parse(o)
        check(isinstance(po, list) and pr[::2] == po[::2],
              "HELLO keys: %r vs %r" % (pr[::2], po[::2]), P)
        dr, do = dict(zip(pr[::2], pr[1::2])), dict(zip(po[::2], po[1::2]))
        for k in (b"proto", b"mode", b"role", b"modules"):
            check(dr[k] == do[k], "HELLO %s: redis-server %r, ours %r" % (k, dr[k], do[k]), P)
        check(do[b"server"] == b"unisondb" and isinstance(do[b"id"], int), "HELLO: %r" % do, P)
    for args in (["HELLO"], ["HELLO", "2"], ["HELLO", "2", "SETNAME", "x"],
                 ["HELLO", "2", "AUTH", "default", "pw"]):
        hello_same(*differs("identity", cmd(*args)))
    # [resp3]
    differs("resp3", cmd("HELLO", "3"), redis_ok=lambda b: b.startswith(b"%"),
            ours_ok=is_error(b"-NOPROTO sorry, this protocol version is not supported: only RESP2 "
                             b"(HELLO 2) is served, RESP3 is not"))
    # CLIENT ID, TIME, COMMAND COUNT: integers and arrays of the same shape.
    r, o = differs("identity", cmd("CLIENT", "ID"))
    check(isinstance(parse(o), int), "CLIENT ID: %r" % o, P)
    # CLIENT INFO: key=value fields; those clients read as integers (redis-py: id, db, ...) are
    # integers, db the selected namespace's SELECT index (0: the default namespace).
    r, o = differs("identity", cmd("CLIENT", "INFO"))
    fr = dict(f.split(b"=", 1) for f in parse(r).split())
    fo = dict(f.split(b"=", 1) for f in parse(o).split())
    for k, v in fo.items():
        check(k in fr or k == b"ns", "CLIENT INFO field %r is not Redis's" % k, P)
        if k in (b"id", b"db", b"sub", b"psub", b"multi"):
            check(v.lstrip(b"-").isdigit(), "CLIENT INFO %s=%r is not an integer" % (k, v), P)
    check(fo.get(b"db") == b"0" and fo.get(b"ns") == b"default" and fo.get(b"resp") == b"2",
          "CLIENT INFO: %r" % o, P)
    r, o = differs("identity", cmd("TIME"))
    pr, po = parse(r), parse(o)
    check(len(po) == 2 and all(x.isdigit() for x in po) and abs(int(pr[0]) - int(po[0])) < 60,
          "TIME: %r vs %r" % (pr, po), P)
    r, o = differs("identity", cmd("COMMAND", "COUNT"))
    check(isinstance(parse(o), int) and parse(o) > 20, "COMMAND COUNT: %r" % o, P)
    # Every command of ours is Redis's command with Redis's arity and key positions.
    ours = parse(exchange(server.ports["resp"], cmd("COMMAND", "LIST"), 1)[0])
    for name in ours:
        r, o = both(cmd("COMMAND", "INFO", name))
        pr, po = parse(r[0]), parse(o[0])
        if pr == [None]:
            check(name == b"barrier", "COMMAND INFO %s: Redis does not know it" % name, P)
            continue
        pick = lambda i: [i[0][j] for j in (0, 1, 3, 4, 5)]  # noqa: E731
        check(pick(pr) == pick(po), "COMMAND INFO %s (name, arity, first, last, step): "
              "redis-server %r, ours %r" % (name, pick(pr), pick(po)), P)
    differs("identity", cmd("COMMAND", "INFO", "client|id"),
            ours_ok=lambda b: b == b"*1\r\n$-1\r\n")
    r, o = differs("identity", cmd("CONFIG", "GET", "appendonly"))
    check(parse(o) == [b"appendonly", b"yes"] and parse(r)[0] == b"appendonly",
          "CONFIG GET appendonly: %r" % o, P)
    for section in ([], ["server"], ["keyspace"]):
        r, o = differs("identity", cmd("INFO", *section))
        check(o.startswith(b"$") and (section == ["keyspace"] or b"redis_version:" in o),
              "INFO %s: %r" % (section, o[:200]), P)
    # [select]
    differs("select", cmd("SELECT", "1"), redis_ok=lambda b: b == b"+OK\r\n",
            ours_ok=is_error(b"-ERR namespace index 1 is out of range"))
    differs("select", cmd("SELECT", "16"), redis_ok=is_error(b"-ERR DB index is out of range"),
            ours_ok=is_error(b"-ERR namespace index 16 is out of range"))
    for name in ("abc", "00", "+0", " 0", "0x"):
        differs("select", cmd("SELECT", name),
                redis_ok=is_error(b"-ERR value is not an integer or out of range"),
                ours_ok=is_error(b"-ERR unknown namespace '%s'" % name.encode()))


def scan():
    keys = ["sc:%03d" % i for i in range(150)]
    same_cmd("MSET", *sum([[k, "v"] for k in keys], []))
    for i in range(0, 150, 10):
        same_cmd("HSET", "sc:h%03d" % i, "f", "v")
    same_cmd("SET", "sd:x", "v")
    want = set(k.encode() for k in keys) | set(b"sc:h%03d" % i for i in range(0, 150, 10))

    def iterate(port, *opts):
        seen, cursor = [], b"0"
        for _ in range(1000):
            reply = parse(exchange(port, cmd("SCAN", cursor, *opts), 1)[0])
            cursor, got = reply
            seen += got
            if cursor == b"0":
                return seen
        raise Failure("SCAN %r did not end" % (opts,), P)

    for opts in (["MATCH", "sc:*", "COUNT", "7"], ["MATCH", "sc:*"],
                 ["COUNT", "1000", "MATCH", "sc:*"],
                 ["MATCH", "sc:h*", "COUNT", "3"], ["MATCH", "sc:007"], ["MATCH", "sc:9*"],
                 ["MATCH", "sc:*", "TYPE", "hash"], ["TYPE", "string", "MATCH", "sc:*"],
                 ["MATCH", "nothing:*"], ["MATCH", "sc:*", "TYPE", "list"],
                 ["MATCH", "sc:*", "TYPE", "nosuchtype"], ["TYPE", "HASH", "MATCH", "sc:*"]):
        r, o = iterate(redis.port, *opts), iterate(server.ports["resp"], *opts)
        check(sorted(set(r)) == sorted(o) and len(o) == len(set(o)),
              "SCAN %s [scan-cursor: compared as sets]: redis-server %d keys, ours %d (%r)" %
              (" ".join(opts), len(set(r)), len(o), sorted(set(r) ^ set(o))[:5]), P)
        if opts[:2] == ["MATCH", "sc:*"] and len(opts) == 2:
            check(set(o) == want, "SCAN MATCH sc:* missed keys", P)
    print("# intended [scan-cursor] SCAN iterations compared as sets of keys", flush=True)
    for args in (["SCAN"], ["SCAN", "x"], ["SCAN", "0", "COUNT", "0"], ["SCAN", "0", "COUNT", "x"],
                 ["SCAN", "0", "COUNT"], ["SCAN", "0", "MATCH"], ["SCAN", "0", "BOGUS", "1"],
                 ["SCAN", "0", "TYPE"], ["SCAN", " 0"], ["SCAN", "0 "], ["SCAN", "0x"],
                 ["SCAN", "0", "COUNT", "010"], ["SCAN", "0", "COUNT", "+10"],
                 ["SCAN", "0", "COUNT", "-1"], ["SCAN", "0", "COUNT", "99999999999999999999"],
                 ["SCAN", "99999999999999999999"], ["SCAN", "0", "COUNT", "1", "COUNT", "x"],
                 ["SCAN", "+"], ["SCAN", "-"], ["SCAN", b"x\x000"], ["SCAN", b" \x00"],
                 ["SCAN", "1" + "0" * 40], ["SCAN", "-18446744073709551616"]):
        same_cmd(*args)
    # Cursors Redis reads as 0 (strtoul, up to a NUL byte) start an iteration: all keys in one call
    # with COUNT 1000 [scan-cursor: ours in byte order].
    for start in ("00", "+0", "-0", "", "0" * 40, "-" + "0" * 40, b"0\x00x", b"\x00",
                  b"+0\x00 1"):
        r, o = both(cmd("SCAN", start, "MATCH", "sc:h*", "COUNT", "1000"))
        pr, po = parse(r[0]), parse(o[0])
        check(pr[0] == po[0] == b"0" and sorted(pr[1]) == po[1] and len(po[1]) == 15,
              "SCAN %r: redis-server %s, ours %s" % (start, show(r[0]), show(o[0])), P)
    for cursor in ("-1", "12345"):
        differs("scan-cursor", cmd("SCAN", cursor), redis_ok=lambda b: b.startswith(b"*2\r\n"),
                ours_ok=is_error())
    same_cmd("DEL", *keys)
    same_cmd("DEL", *["sc:h%03d" % i for i in range(0, 150, 10)], "sd:x")


def random_pipelines():
    """Random pipelines of the data commands over a few string and hash keys (binary ones among
    them), on one connection per server: every reply identical, HGETALL/HKEYS/HVALS as sets
    [hash-order]. The seed is printed; UD_RESP_DIFF_SEED repeats a run."""
    seed = (int(os.environ.get("UD_RESP_DIFF_SEED", "0")) or
            random.SystemRandom().randrange(1, 10**9))
    print("# random_pipelines seed %d" % seed, flush=True)
    rng = random.Random(seed)

    def val():
        k = rng.random()
        if k < 0.1:
            return b""
        if k < 0.2:
            return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 20)))
        if k < 0.25:
            return b"\r\n\x00" * rng.randrange(1, 5000)
        return b"v%d" % rng.randrange(1000)

    # Strings and hashes use different keys: a key of both types is an intended difference.
    def skey():
        return rng.choice([b"r:s1", b"r:s2", b"r:s3", b"r:s\x00\r\n", b"r:sx"])

    def hkey():
        return rng.choice([b"r:h1", b"r:h2", b"r:h\r\n"])

    def anykey():
        return rng.choice([skey, hkey])()

    def field():
        return rng.choice([b"a", b"b", b"c", b"\x00", b"\r\n", b"zz"])

    def pairs(n, key_fn):
        return sum([[key_fn(), val()] for _ in range(n)], [])

    gens = [lambda: [b"SET", skey(), val()], lambda: [b"GET", skey()],
            lambda: [b"MGET"] + [skey() for _ in range(rng.randrange(1, 6))],
            lambda: [b"MSET"] + pairs(rng.randrange(1, 4), skey),
            lambda: [b"DEL"] + [anykey() for _ in range(rng.randrange(1, 5))],
            lambda: [b"UNLINK"] + [anykey() for _ in range(rng.randrange(1, 4))],
            lambda: [b"EXISTS"] + [anykey() for _ in range(rng.randrange(1, 5))],
            lambda: [b"TYPE", anykey()], lambda: [b"STRLEN", skey()],
            lambda: [b"HSET", hkey()] + pairs(rng.randrange(1, 5), field),
            lambda: [b"HMSET", hkey()] + pairs(rng.randrange(1, 4), field),
            lambda: [b"HGET", hkey(), field()],
            lambda: [b"HMGET", hkey()] + [field() for _ in range(rng.randrange(1, 5))],
            lambda: [b"HDEL", hkey()] + [field() for _ in range(rng.randrange(1, 5))],
            lambda: [b"HGETALL", hkey()], lambda: [b"HKEYS", hkey()], lambda: [b"HVALS", hkey()],
            lambda: [b"HLEN", hkey()], lambda: [b"HEXISTS", hkey(), field()],
            lambda: [b"ECHO", val()], lambda: [b"PING"]]
    cr, co = Raw(redis.port), Raw(server.ports["resp"])
    try:
        for batch in range(1500):
            cmds = [rng.choice(gens)() for _ in range(rng.randrange(1, 30))]
            payload = b"".join(cmd(*a) for a in cmds)
            cr.s.sendall(payload)
            co.s.sendall(payload)
            for a in cmds:
                r, o = cr.reply(), co.reply()
                if r != o and a[0] in (b"HGETALL", b"HKEYS", b"HVALS"):
                    pr, po = parse(r), parse(o)
                    if a[0] == b"HGETALL":
                        pr, po = sorted(zip(pr[::2], pr[1::2])), list(zip(po[::2], po[1::2]))
                    if sorted(pr) == sorted(po):
                        continue
                if r != o:
                    mismatches.append("seed %d, batch %d, %s:\n      redis-server: %s\n"
                                      "      ours:         %s" % (seed, batch, show(cmd(*a), 120),
                                                                  show(r), show(o)))
            if len(mismatches) > 10:
                break
    finally:
        cr.close()
        co.close()
    same_cmd("DEL", b"r:s1", b"r:s2", b"r:s3", b"r:s\x00\r\n", b"r:sx", b"r:h1", b"r:h2",
             b"r:h\r\n")


def redis_cli_tools():
    """redis-cli itself against both: --scan --pattern, -r 3 PING, --pipe mass insertion."""
    def cli(port, *args, stdin=None):
        rc, out, err = redis_cli(port, *args, stdin=stdin, raw=False, timeout=120)
        return rc, out, err.strip()

    def same_cli(*args, stdin=None, sort=False):
        r = cli(redis.port, *args, stdin=stdin)
        o = cli(server.ports["resp"], *args, stdin=stdin)
        if sort:
            r = (r[0], b"\n".join(sorted(r[1].splitlines())), r[2])
            o = (o[0], b"\n".join(sorted(o[1].splitlines())), o[2])
        check(r == o, "redis-cli %s:\n      redis-server: %s\n      ours:         %s" %
              (" ".join(args), show(repr(r).encode()), show(repr(o).encode())), P)
        return o[1]

    same_cli("-r", "3", "PING")
    same_cmd("MSET", *sum([["p%d" % i, "v"] for i in range(30)], []))
    same_cmd("HSET", "ph", "f", "v")
    same_cmd("SET", "q1", "v")
    out = same_cli("--scan", "--pattern", "p*", sort=True)
    check(len(out.splitlines()) == 31, "redis-cli --scan --pattern 'p*': %r" % out[:200], P)
    same_cmd("DEL", "ph", "q1", *["p%d" % i for i in range(30)])
    same_cli("-r", "2", "ECHO", "a\nb")
    # Mass insertion: 10,000 SETs in the protocol, one of them refused (an arity error).
    lines = [cmd("SET", "mass:%05d" % i, "value-%d-%s" % (i, "x" * (i % 50))) for i in range(10000)]
    lines.insert(5000, cmd("SET", "mass:broken"))
    out = same_cli("--pipe", stdin=b"".join(lines))
    check(b"errors: 1, replies: 10001" in out, "redis-cli --pipe: %r" % out, P)
    # Both hold the same 10,000 keys (no DBSIZE here: --scan counts them) and values.
    out = same_cli("--scan", "--pattern", "mass:*", sort=True)
    check(len(out.splitlines()) == 10000, "redis-cli --scan found %d keys" % len(out.splitlines()),
          P)
    same_cli("--scan", "--pattern", "mass:0999*", sort=True)
    same_cli("--scan", "--pattern", "nothing*")
    for i in range(0, 10000, 1000):
        same_cmd("MGET", *["mass:%05d" % j for j in range(i, i + 1000)])
    same_cli("--scan", sort=True)
    for i in range(0, 10000, 1000):
        same_cmd("DEL", *["mass:%05d" % j for j in range(i, i + 1000)])


def same_keyspace():
    """At the end both servers hold the same keys (every intended difference cleaned up)."""
    def keys(port):
        rc, out, err = redis_cli(port, "--scan", raw=False)
        return sorted(out.splitlines())
    r, o = keys(redis.port), keys(server.ports["resp"])
    check(r == o, "keyspaces differ: only redis-server %r, only ours %r" %
          (sorted(set(r) - set(o))[:10], sorted(set(o) - set(r))[:10]), P)
    for k in o:
        same_cmd("TYPE", k)


try:
    cases = [every_difference(case) for case in (
        connection, strings, binary_safe, hashes, separate_types, set_options, limits, errors,
        multi, protocol, pipelines, random_pipelines, server_commands, scan, redis_cli_tools,
        same_keyspace)]
    # With another redis-server only start runs: it fails, naming the version.
    suite.run([start] + (cases if REDIS_VERSION.startswith("7.0.") else []))
finally:
    if redis is not None:
        redis.stop()
