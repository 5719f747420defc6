"""Shared pieces of the end-to-end tests: a real unison-writer process on port 0 with its own data
directory under the build directory, curl and redis-cli as the clients, and a small runner that
goes on after a failed case, names the part of the server each failure belongs to, and checks
after every case that the server still serves.

Python 3 standard library only. Every process started here is killed by PID in a finally block.
The work directory is removed after a run without failures unless UD_E2E_KEEP is set.
"""

import base64
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import traceback

# --- small helpers --------------------------------------------------------------------------------


def b64(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.b64encode(data).decode()


def unb64(text):
    return base64.b64decode(text, validate=True)


class Failure(Exception):
    """A check that did not hold. part names who should look: http, resp, raft, writer."""

    def __init__(self, message, part=None):
        super().__init__(message)
        self.part = part


def check(cond, message, part=None):
    if not cond:
        raise Failure(message, part)


def wait_for(what, fn, timeout=30.0, interval=0.05):
    """Polls fn until it returns a true value (returned), at most timeout seconds."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            v = fn()
            if v:
                return v
        except Failure as e:
            last_error = e
        time.sleep(interval)
    raise Failure("timed out after %.0f s waiting for %s%s" %
                  (timeout, what, " (last: %s)" % last_error if last_error else ""))


def tmp_root(writer_exe):
    """Test data lives under the build directory (never /tmp: tmpfs hides durability bugs)."""
    root = os.environ.get("UD_TEST_TMPDIR")
    if not root:
        root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(writer_exe))), "tmp")
    os.makedirs(root, exist_ok=True)
    return root


_handed_out = set()


def free_port():
    """A port that was free a moment ago (for raft peers, whose addresses must be known first).

    Taken below the kernel's ephemeral range (ip_local_port_range, 32768-60999 by default), from
    which bind(0) would also pick it: there every outgoing connection of the suites running in
    parallel (curl, raft, h2load) may take it before the server binds it."""
    low = 32768
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    rng = random.SystemRandom()
    for _ in range(1000):
        port = rng.randrange(10000, max(low, 10001))
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- HTTP through curl ----------------------------------------------------------------------------


class Response:
    def __init__(self, status, version, headers, body, curl_rc, curl_err):
        self.status = status
        self.version = version
        self.headers = headers
        self.body = body
        self.curl_rc = curl_rc
        self.curl_err = curl_err

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError:
            raise Failure("response is not JSON (status %d): %r" % (self.status, self.body[:200]),
                          "http")

    def __repr__(self):
        return "HTTP/%s %d %r" % (self.version, self.status, self.body[:300])


class Http:
    """curl against one server, over HTTP/1.1 or h2c with prior knowledge; with tls_ca (the PEM
    certificate to trust) over TLS, where HTTP/2 is negotiated by ALPN."""

    def __init__(self, base_url, workdir, http2=False, tls_ca=None):
        self.base = base_url
        self.workdir = workdir
        self.http2 = http2
        self.tls_ca = tls_ca
        self.seq = 0

    def request(self, method, path, body=None, headers=(), timeout=60, expect_version=True,
                curl_args=()):
        """curl_args: further curl options (e.g. ["-r", "0-99"])."""
        self.seq += 1
        stem = os.path.join(self.workdir, "curl.%d" % os.getpid())
        body_out, hdr_out = stem + ".body", stem + ".hdr"
        # HEAD through -I: with -X HEAD curl would wait for the body Content-Length announces.
        args = ["curl", "-sS", "--path-as-is", "--max-time", str(timeout)]
        args += ["-I"] if method == "HEAD" else ["-X", method]
        args += ["-o", body_out, "-D", hdr_out, "-w", "%{http_code} %{http_version}",
                 "-H", "Expect:"]
        if self.tls_ca is not None:
            args += ["--cacert", self.tls_ca, "--http2" if self.http2 else "--http1.1"]
        else:
            args.append("--http2-prior-knowledge" if self.http2 else "--http1.1")
        for h in headers:
            args += ["-H", h]
        args += list(curl_args)
        if body is not None:
            if isinstance(body, str):
                body = body.encode()
            body_in = stem + ".in"
            with open(body_in, "wb") as f:
                f.write(body)
            args += ["--data-binary", "@" + body_in]
            if not any(h.lower().startswith("content-type:") for h in headers):
                args += ["-H", "Content-Type: application/json"]
        args.append(self.base + path)
        p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout + 30)
        out = p.stdout.decode().split()
        status = int(out[0]) if out and out[0].isdigit() else 0
        version = out[1] if len(out) > 1 else "?"
        body_bytes = b""
        if os.path.exists(body_out):
            with open(body_out, "rb") as f:
                body_bytes = f.read() if method != "HEAD" else b""  # -I writes the headers there
            os.unlink(body_out)
        hdrs = {}
        if os.path.exists(hdr_out):
            with open(hdr_out, "rb") as f:
                for line in f.read().decode("latin-1").splitlines():
                    if ":" in line and not line.startswith("HTTP/"):
                        k, v = line.split(":", 1)
                        hdrs[k.strip().lower()] = v.strip()
            os.unlink(hdr_out)
        if status == 0:
            raise Failure("curl %s %s failed (rc %d): %s" %
                          (method, path[:120], p.returncode, p.stderr.decode().strip()), "http")
        if expect_version:
            want = "2" if self.http2 else "1.1"
            check(version == want, "%s %s answered over HTTP/%s, not HTTP/%s" %
                  (method, path[:80], version, want), "http")
        return Response(status, version, hdrs, body_bytes, p.returncode, p.stderr.decode())

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def put(self, path, body=None, **kw):
        return self.request("PUT", path, body=body, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body=body, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)

    def head(self, path, **kw):
        return self.request("HEAD", path, **kw)


def expect(resp, status, what, part="http"):
    check(resp.status == status, "%s: expected %d, got %r" % (what, status, resp), part)
    return resp


def expect_json(resp, status, what, part="http"):
    expect(resp, status, what, part)
    ctype = resp.headers.get("content-type", "")
    check("json" in ctype, "%s: content-type %r is not JSON" % (what, ctype), part)
    return resp.json()


def expect_error(resp, status, what, contains=None, part="http"):
    """A documented error: the status and a JSON {"error": "..."} that says what is wrong."""
    doc = expect_json(resp, status, what, part)
    check(isinstance(doc, dict) and isinstance(doc.get("error"), str) and doc["error"],
          "%s: expected {\"error\": ...}, got %r" % (what, doc), part)
    if contains is not None:
        check(contains.lower() in doc["error"].lower(),
              "%s: error %r does not mention %r" % (what, doc["error"], contains), part)
    return doc


def expect_write(resp, what, last_lsn=None):
    """A write answer: 200 {"success": true, "lsn": N} with N above any earlier LSN."""
    doc = expect_json(resp, 200, what)
    check(doc.get("success") is True, "%s: success is not true: %r" % (what, doc))
    lsn = doc.get("lsn")
    check(isinstance(lsn, int) and lsn > 0, "%s: no LSN in the write answer: %r" % (what, doc))
    if last_lsn is not None:
        check(lsn > last_lsn, "%s: LSN %d not above the previous %d" % (what, lsn, last_lsn))
    return doc


# --- RESP through redis-cli -----------------------------------------------------------------------


def redis_cli(port, *args, stdin=None, raw=True, timeout=30):
    """Runs redis-cli (no retries, no TTY formatting); returns (rc, stdout bytes, stderr text)."""
    cmd = ["redis-cli", "-h", "127.0.0.1", "-p", str(port)]
    if raw:
        cmd.append("--raw")
    cmd += [str(a) for a in args]
    p = subprocess.run(cmd, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout)
    return p.returncode, p.stdout, p.stderr.decode()


def resp_raw(port, payload, read_timeout=5.0, expect_close=False):
    """Sends raw bytes to the RESP port and returns what came back until a quiet period."""
    with socket.create_connection(("127.0.0.1", port), timeout=read_timeout) as s:
        s.sendall(payload)
        chunks = []
        s.settimeout(0.5 if not expect_close else read_timeout)
        deadline = time.monotonic() + read_timeout
        while time.monotonic() < deadline:
            try:
                b = s.recv(65536)
            except socket.timeout:
                if chunks:
                    break
                continue
            except ConnectionResetError:
                break
            if not b:
                break
            chunks.append(b)
        return b"".join(chunks)


def resp_command(*args):
    """Encodes a command as a RESP array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, str):
            a = a.encode()
        elif isinstance(a, int):
            a = str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class RespConn:
    """A minimal RESP client: exact bytes in and out, error replies returned as Failure values."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.buf = b""

    def close(self):
        self.s.close()

    def send(self, data):
        self.s.sendall(data)

    def _recv(self):
        try:
            return self.s.recv(65536)
        except socket.timeout:
            raise Failure("no RESP reply within %.0f s (%d bytes of a reply buffered)" %
                          (self.s.gettimeout(), len(self.buf)), "resp")

    def _line(self):
        while b"\r\n" not in self.buf:
            b = self._recv()
            if not b:
                raise Failure("RESP connection closed mid-reply", "resp")
            self.buf += b
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            b = self._recv()
            if not b:
                raise Failure("RESP connection closed mid-bulk", "resp")
            self.buf += b
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def reply(self):
        line = self._line()
        t, rest = line[:1], line[1:]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            return Failure("error reply: " + rest.decode(errors="replace"), "resp")
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if t in (b"*", b"%"):
            n = int(rest)
            if n < 0:
                return None
            return [self.reply() for _ in range(n * (2 if t == b"%" else 1))]
        raise Failure("not a RESP reply: %r" % line[:80], "resp")

    def call(self, *args):
        self.send(resp_command(*args))
        return self.reply()

    def get_many(self, keys, batch=100):
        """Pipelined GETs, batch at a time: the values (bytes or None) in order."""
        out = []
        for i in range(0, len(keys), batch):
            part = keys[i:i + batch]
            self.send(b"".join(resp_command("GET", k) for k in part))
            out += [self.reply() for _ in part]
        return out


def crash_part(log_tail):
    """Guesses from the last log lines which part made the process fail: the last line first
    (an assertion message), then the module names of the lines before it."""
    needles = (("h2o", "http"), (" http ", "http"), ("libraft", "raft"), (" raft ", "raft"),
               (" resp ", "resp"))
    lines = log_tail.lower().splitlines()
    for text in (lines[-1:], lines):
        for needle, part in needles:
            if any(needle in l for l in text):
                return part
    return "writer"


# --- the server process ---------------------------------------------------------------------------


class Writer:
    """One unison-writer process with its own data directory; every port 0 unless given."""

    def __init__(self, exe, workdir, name="w", args=(), config=None, ports=None):
        self.exe = exe
        self.name = name
        self.dir = os.path.join(workdir, name)
        os.makedirs(self.dir, exist_ok=True)
        self.data_dir = os.path.join(self.dir, "data")
        self.ports_file = os.path.join(self.dir, "ports.json")
        self.log_path = os.path.join(self.dir, "server.log")
        self.extra = list(args)
        self.config_path = None
        if config is not None:
            self.config_path = os.path.join(self.dir, "writer.toml")
            with open(self.config_path, "w") as f:
                f.write(config)
        self.fixed_ports = ports  # {"http": p, "resp": p, "raft": p} or None
        self.proc = None
        self.ports = None

    def argv(self):
        p = self.fixed_ports or {}
        a = [self.exe, "--data-dir", self.data_dir, "--ports-file", self.ports_file,
             "--http", "127.0.0.1:%d" % p.get("http", 0),
             "--resp", "127.0.0.1:%d" % p.get("resp", 0),
             "--raft", "127.0.0.1:%d" % p.get("raft", 0)]
        if self.config_path:
            a += ["--config", self.config_path]
        return a + self.extra

    def start(self, wait_namespace="default", timeout=30, env=None):
        """env: variables added to the environment of this start only."""
        if os.path.exists(self.ports_file):
            os.unlink(self.ports_file)
        log = open(self.log_path, "ab")
        log.write(b"\n===== start %s\n" % " ".join(self.argv()).encode())
        log.flush()
        self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                     env=dict(os.environ, **env) if env else None)
        log.close()

        def ports_ready():
            if self.proc.poll() is not None:
                raise Failure("%s exited with %d during start:\n%s" %
                              (self.name, self.proc.returncode, self.log_tail()), "writer")
            if not os.path.exists(self.ports_file):
                return None
            with open(self.ports_file) as f:
                return json.load(f)

        self.ports = wait_for("%s's ports file" % self.name, ports_ready, timeout)
        for k in ("http", "resp", "raft"):
            check(isinstance(self.ports.get(k), int) and self.ports[k] > 0,
                  "ports file lacks a bound %s port: %r" % (k, self.ports), "writer")
        check("https" in self.ports, "ports file lacks https: %r" % self.ports, "writer")
        if wait_namespace:
            self.wait_namespace(wait_namespace, timeout)
        return self

    def wait_namespace(self, ns, timeout=30):
        """Until a read in ns answers 'missing key' rather than 'no such namespace'."""
        h = self.http()

        def ready():
            if self.proc.poll() is not None:
                raise Failure("%s exited with %d:\n%s" %
                              (self.name, self.proc.returncode, self.log_tail()), "writer")
            r = h.get("/api/v1/%s/kv/__probe__" % ns, timeout=5)
            if r.status == 404:
                try:
                    return r.json().get("found") is False
                except Failure:
                    return False
            return r.status == 200

        wait_for("namespace %s on %s" % (ns, self.name), ready, timeout, 0.1)

    def http(self, http2=False):
        return Http("http://127.0.0.1:%d" % self.ports["http"], self.dir, http2)

    def https(self, ca, http2=True):
        """curl over the TLS listener, trusting the certificate ca (HTTP/2 by ALPN when http2)."""
        check(isinstance(self.ports.get("https"), int) and self.ports["https"] > 0,
              "ports file has no bound https port: %r" % self.ports, "writer")
        return Http("https://127.0.0.1:%d" % self.ports["https"], self.dir, http2, tls_ca=ca)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        if self.alive():
            os.kill(self.proc.pid, sig)

    def stop(self, timeout=60):
        """SIGTERM and wait: returns the exit status."""
        if self.proc is None:
            return None
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise Failure("%s did not stop within %d s after SIGTERM:\n%s" %
                          (self.name, timeout, self.log_tail()), "writer")

    def stop_clean(self, what="SIGTERM"):
        """SIGTERM must end in exit status 0; otherwise the failure names the part whose log
        lines end the log (an assertion in h2o is the HTTP part's, and so on)."""
        status = self.stop()
        if status != 0:
            tail = self.log_tail(8)
            raise Failure("%s: %s exited with status %s:\n%s" % (what, self.name, status, tail),
                          crash_part(tail))
        return status

    def stop_noting(self, what, problems):
        """Like stop_clean, but a bad exit is appended to problems (to raise after the rest of
        the case has run) and the process is surely gone afterwards."""
        try:
            self.stop_clean(what)
        except Failure as e:
            problems.append(e)
            self.kill()

    @staticmethod
    def stop_all(writers, only_alive=False):
        """SIGTERM every writer (those still running, with only_alive) and check each exits
        cleanly; the first bad exit is raised once all are stopped."""
        problems = []
        for w in writers:
            if not only_alive or w.alive():
                w.stop_noting("SIGTERM", problems)
        if problems:
            raise problems[0]

    def kill(self):
        if self.alive():
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)

    def log_tail(self, lines=40):
        try:
            with open(self.log_path, "rb") as f:
                text = f.read().decode(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join("    " + l for l in text.splitlines()[-lines:])


# --- the runner -----------------------------------------------------------------------------------


class Suite:
    """Runs cases in order; a failed case is reported and the next one runs. After each case the
    server (if any) must still be alive and serving; if it died it is restarted for the rest."""

    def __init__(self, name):
        self.name = name
        if len(sys.argv) < 2:
            sys.exit("usage: %s path/to/unison-writer" % sys.argv[0])
        self.exe = os.path.abspath(sys.argv[1])
        self.only = sys.argv[2:]
        self.workdir = os.path.join(tmp_root(self.exe), "e2e-%s-%d" % (name, os.getpid()))
        shutil.rmtree(self.workdir, ignore_errors=True)
        os.makedirs(self.workdir)
        self.results = []
        self.writers = []
        self.server = None  # the writer health-checked after each case

    def writer(self, name="w", **kw):
        w = Writer(self.exe, self.workdir, name, **kw)
        self.writers.append(w)
        return w

    def _serving(self, w):
        r = w.http().get("/healthz", timeout=10)
        return r.status == 200

    def run(self, cases):
        n = 0
        try:
            for fn in cases:
                if self.only and fn.__name__ not in self.only:
                    continue
                n += 1
                label = fn.__name__
                t0 = time.monotonic()
                try:
                    fn()
                    if self.server is not None:
                        check(self.server.alive(), "server died during the case:\n" +
                              self.server.log_tail(), "writer")
                        check(self._serving(self.server), "server no longer answers /healthz",
                              "http")
                    self.results.append((label, None, None))
                    print("ok %d - %s (%.1f s)" % (n, label, time.monotonic() - t0), flush=True)
                except Exception as e:  # a case failed: report it and go on
                    part = getattr(e, "part", None) or "?"
                    detail = str(e) if isinstance(e, Failure) else traceback.format_exc()
                    self.results.append((label, part, detail))
                    print("not ok %d - %s [%s]\n    %s" % (n, label, part,
                                                          detail.replace("\n", "\n    ")),
                          flush=True)
                    if self.server is not None and not self.server.alive():
                        print("    server died; log tail:\n%s\n    restarting it" %
                              self.server.log_tail(), flush=True)
                        try:
                            self.server.start()
                        except Failure as e2:
                            print("    restart failed: %s" % e2, flush=True)
                            break
        finally:
            for w in self.writers:
                try:
                    w.kill()
                except Exception:
                    pass
        failed = [r for r in self.results if r[1] is not None]
        print("1..%d" % n)
        print("# %s: %d passed, %d failed" % (self.name, n - len(failed), len(failed)))
        for label, part, _ in failed:
            print("#   FAILED %s (part: %s)" % (label, part))
        if not failed and not os.environ.get("UD_E2E_KEEP"):
            shutil.rmtree(self.workdir, ignore_errors=True)
        else:
            print("# data and logs kept in %s" % self.workdir)
        sys.exit(1 if failed or n == 0 else 0)


class Relayer(Writer):
    """One unison-relayer process (same life cycle as Writer): upstreams is a list of URLs."""

    def __init__(self, exe, workdir, name, upstreams, args=(), config=None):
        super().__init__(exe, workdir, name, args=args, config=config)
        self.upstreams = list(upstreams)

    def argv(self):
        # A restart keeps the HTTP port: it is the address its downstream relayers follow.
        http = self.ports["http"] if self.ports else 0
        a = [self.exe, "--data-dir", self.data_dir, "--ports-file", self.ports_file,
             "--http", "127.0.0.1:%d" % http, "--resp", "127.0.0.1:0", "--id", self.name,
             "--upstream", ",".join(self.upstreams)]
        if self.config_path:
            a += ["--config", self.config_path]
        return a + self.extra

    def start(self, wait_namespace=None, timeout=30):
        if os.path.exists(self.ports_file):
            os.unlink(self.ports_file)
        log = open(self.log_path, "ab")
        log.write(b"\n===== start %s\n" % " ".join(self.argv()).encode())
        log.flush()
        self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()

        def ports_ready():
            if self.proc.poll() is not None:
                raise Failure("%s exited with %d during start:\n%s" %
                              (self.name, self.proc.returncode, self.log_tail()), "relayer")
            if not os.path.exists(self.ports_file):
                return None
            with open(self.ports_file) as f:
                return json.load(f)

        self.ports = wait_for("%s's ports file" % self.name, ports_ready, timeout)
        check(isinstance(self.ports.get("http"), int) and isinstance(self.ports.get("resp"), int),
              "relayer ports file lacks http/resp: %r" % self.ports, "relayer")
        return self

    def url(self):
        return "http://127.0.0.1:%d" % self.ports["http"]

    def status(self, ns="default"):
        """The follower of ns in /status/upstream, or None."""
        r = self.http().get("/status/upstream", timeout=10)
        check(r.status == 200, "%s: /status/upstream: %r" % (self.name, r), "relayer")
        for f in r.json()["namespaces"]:
            if f["namespace"] == ns:
                return f
        return None

    def wait_lsn(self, lsn, ns="default", timeout=60):
        """Until the follower of ns applied lsn (and streams)."""
        def caught_up():
            if self.proc.poll() is not None:
                raise Failure("%s exited with %d:\n%s" %
                              (self.name, self.proc.returncode, self.log_tail()), "relayer")
            st = self.status(ns)
            return st is not None and st["applied_lsn"] >= lsn and st["state"] == "streaming"
        wait_for("%s to apply LSN %d of %s" % (self.name, lsn, ns), caught_up, timeout, 0.05)
