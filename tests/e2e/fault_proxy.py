"""A TCP proxy that damages what an upstream sends, for the relayer's fault tests.

FaultProxy listens on 127.0.0.1 (port 0, or listen_port) and forwards every connection to the upstream port.
Faults are armed for the NEXT connection only (one shot, so that the follower converges once it
reconnects) and hit the upstream -> client direction (responses, where WAL streams flow):

  corrupt(after)    flip one bit of the response byte at offset `after`
  truncate(after)   close both sides once `after` response bytes were forwarded
  blackhole(after)  after `after` bytes forward nothing more in either direction but keep both
                    sockets open (a partition: no FIN, no RST; only missing heartbeats tell)
  delay(ms)         hold every response piece for ms milliseconds (slow, but correct)

One fault is armed for the next request instead, on any connection (the proxy keeps listening):

  drop_answer(prefix)  the answer to the next request whose bytes begin with prefix is dropped:
                       the connection is closed without a byte of it (the upstream read, and
                       may have acted on, the request)

Counters say what happened: connections, faults_fired. Python standard library only; threads
with blocking sockets (the tests use a few connections).
"""

import socket
import threading
import time


class FaultProxy:
    def __init__(self, upstream_port, upstream_host="127.0.0.1", listen_port=0):
        self.upstream = (upstream_host, upstream_port)
        self.lock = threading.Lock()
        self.armed = None  # (kind, value) for the next connection
        self.drop_prefix = None  # drop_answer's prefix, until a request matched it
        self.connections = 0
        self.faults_fired = 0
        self.socks = []
        self.closed = False
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", listen_port))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    # --- arming ------------------------------------------------------------------------------

    def _arm(self, kind, value):
        with self.lock:
            self.armed = (kind, value)

    def corrupt(self, after):
        self._arm("corrupt", after)

    def truncate(self, after):
        self._arm("truncate", after)

    def blackhole(self, after):
        self._arm("blackhole", after)

    def delay(self, ms):
        self._arm("delay", ms)

    def drop_answer(self, prefix):
        with self.lock:
            self.drop_prefix = prefix

    def close(self):
        self.closed = True
        try:
            # Wakes the accept thread: a close alone leaves it blocked in accept(), still
            # taking connections on the listening socket.
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.listener.close()
        except OSError:
            pass
        with self.lock:
            socks = list(self.socks)
        for s in socks:
            try:
                s.close()
            except OSError:
                pass

    # --- forwarding --------------------------------------------------------------------------

    def _accept(self):
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                up = socket.create_connection(self.upstream, timeout=5)
                up.settimeout(None)
            except OSError:
                client.close()
                continue
            with self.lock:
                fault, self.armed = self.armed, None
                self.connections += 1
                self.socks += [client, up]
            state = {"dead": False, "hole": False, "drop": False}
            threading.Thread(target=self._pump, args=(client, up, None, state, False),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(up, client, fault, state, True),
                             daemon=True).start()

    def _fired(self):
        with self.lock:
            self.faults_fired += 1

    def _pump(self, src, dst, fault, state, answers):
        """Copies src -> dst, applying fault (response direction only)."""
        sent = 0
        kind, value = fault if fault else (None, 0)
        try:
            while not state["dead"]:
                data = src.recv(65536)
                if not data:
                    break
                if state["hole"]:
                    continue  # swallowed: the partition keeps both sockets open
                if not answers:  # a request: does its answer get dropped?
                    with self.lock:
                        if self.drop_prefix is not None and data.startswith(self.drop_prefix):
                            self.drop_prefix = None
                            state["drop"] = True
                elif state["drop"]:
                    self._fired()
                    break  # the answer: closed without a byte of it
                if kind == "delay":
                    time.sleep(value / 1000.0)
                elif kind in ("corrupt", "truncate", "blackhole") and sent + len(data) > value:
                    cut = value - sent
                    if kind == "corrupt":
                        data = data[:cut] + bytes([data[cut] ^ 0x01]) + data[cut + 1:]
                        self._fired()
                        kind = None
                    elif kind == "truncate":
                        dst.sendall(data[:cut])
                        self._fired()
                        break
                    else:
                        dst.sendall(data[:cut])
                        self._fired()
                        state["hole"] = True
                        continue
                dst.sendall(data)
                sent += len(data)
        except OSError:
            pass
        if state["hole"] and not state["dead"]:
            # Keep the sockets open until the other side gives up (or the proxy closes).
            while not self.closed and not state["dead"]:
                try:
                    if not src.recv(65536):
                        break
                except OSError:
                    break
        state["dead"] = True
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass
