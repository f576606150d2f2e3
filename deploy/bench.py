#!/usr/bin/env python3
"""Benchmark cerebras-proxy against direct HTTPS and a plain nginx proxy_pass.

    python3 deploy/bench.py BINARY OUTDIR        (`make bench`)

Starts, inside one temporary directory and on loopback / unix sockets only:

  redis-server            unix socket (deploy/stack.py)
  mock upstream           tests/mock_upstream.py over HTTPS (paced streams)
  fast upstream           a private nginx on 127.0.0.1 serving HTTPS with the
                          test certificate: `return 200 <fixed chat.completion>`
                          on /v1/chat/completions, and a 100 MiB SSE file for
                          requests with X-Request-Id: bench-big
  B  nginx proxy_pass     a private nginx proxying to either upstream
                          (buffering off, upstream keepalive 32, HTTP/1.1,
                          proxy_ssl_session_reuse on)
  C  the stack            nginx (shipped nginx.conf.example) -> fastcgi_pass
                          -> cerebras-proxy workers -> Redis + upstream

and compares A (the upstream directly, HTTPS), B and C. Writes
OUTDIR/results.md (a markdown table, also printed) and OUTDIR/results.json.
Every process is started here and stopped by PID (deploy/stack.py's Stack).
KEEP_STACK_DIR=1 keeps the temporary directory (logs, configs).
BENCH_ONLY=phase,phase runs only those phases (sweep, latency, syscalls,
throughput, roundtrips, paced, memory, mocklatency, streaming, redisbench,
concurrency, spacing); for development.

The sections of the table follow the numbering of the measurements:
1 added latency, 2 throughput and CPU, 3 streaming, 4 memory, 5 Redis round
trips, 6 slot reservations per second, 7 concurrent streams, 8 spacing fidelity.
"""

import asyncio
import concurrent.futures
import hashlib
import json
import math
import os
import platform
import re
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from stack import (MOCK_KEYS, Stack, can_connect, free_port,  # noqa: E402
                   nginx_main_conf, render_nginx_site, wait_for)

T0 = time.monotonic()
CLK_TCK = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024

CHAT_BODY = json.dumps({"model": "llama3.1-8b",
                        "messages": [{"role": "user", "content": "Hello proxy"}]},
                       separators=(",", ":")).encode()
FAST_REPLY = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000,
    "model": "llama3.1-8b", "system_fingerprint": "fp_bench",
    "choices": [{"index": 0, "message": {"role": "assistant",
                                         "content": "Hello from the fast upstream"},
                 "finish_reason": "stop", "logprobs": None}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18},
    "time_info": {"queue_time": 0.0001, "prompt_time": 0.0004,
                  "completion_time": 0.007, "total_time": 0.008, "created": 1700000000.0},
}, separators=(",", ":"))
BIG_BYTES = 100 * MIB
CHAT_PATH = "/v1/chat/completions"

# Sizes of the runs (the whole bench must stay well under ~8 minutes).
LAT_N = 500              # timed requests per path and upstream
LAT_WARM = 50
LAT_ROUNDS = 10          # paths interleaved in rounds: background noise hits all alike
SPACED_N = 40            # C with the default 200 ms spacing, paced requests
SPACING_N = 60           # spacing fidelity: requests at a 100 ms interval
SWEEP = [2, 4, 8, 16, 32]
SWEEP_SECS = 3
TPUT_SECS = 5
TPUT_CONNS = [32, 256]
RT_N = 2000              # requests for the Redis round-trip count
MEM_REQUESTS = 100000
STREAMS = 10             # streams per path (50 events, 20 ms apart)
CONC = 500               # concurrent streams
CONC_EVENTS, CONC_GAP_MS = 100, 100
REDIS_BENCH_N = 200000

WRK_LUA = r"""
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"
local limit = tonumber(os.getenv("BENCH_LIMIT") or "0")
if limit > 0 then
  local n = 0
  function response(status, headers, body)
    n = n + 1
    if n >= limit then wrk.thread:stop() end
  end
end
function done(s, lat, req)
  io.write(string.format('BENCHJSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
    '"p50_us":%d,"p99_us":%d,"mean_us":%.1f}\n',
    s.requests, s.duration, s.bytes, s.errors.connect, s.errors.read,
    s.errors.write, s.errors.status, s.errors.timeout,
    lat:percentile(50), lat:percentile(99), lat.mean))
end
"""


def progress(msg):
    print("[%6.1fs] %s" % (time.monotonic() - T0, msg), flush=True)


def pct(values, p):
    """Nearest-rank percentile of a non-empty list."""
    v = sorted(values)
    if not v:
        return float("nan")
    k = max(0, min(len(v) - 1, int(math.ceil(p / 100.0 * len(v))) - 1))
    return v[k]


def run(argv, **kw):
    return subprocess.run(argv, capture_output=True, text=True, **kw)


# --------------------------------------------------------------------------
# /proc: processes, CPU, memory
# --------------------------------------------------------------------------

def children(pid):
    out = []
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            try:
                with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
                    out += [int(x) for x in f.read().split()]
            except OSError:
                pass
    except OSError:
        pass
    return out


def cpu_ticks(pid):
    """(utime, stime) of the whole process (all its threads), in ticks."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]), int(fields[12])
    except (OSError, IndexError, ValueError):
        return 0, 0


def ctx_switches(pid):
    """Voluntary + involuntary context switches of all threads of pid."""
    n = 0
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return 0
    for tid in tids:
        try:
            with open("/proc/%d/task/%s/status" % (pid, tid)) as f:
                for line in f:
                    if "ctxt_switches:" in line:
                        n += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            pass
    return n


def smaps(pid):
    """{"uss","pss","rss"} in bytes from /proc/PID/smaps_rollup."""
    d = {}
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
                    d[parts[0][:-1]] = int(parts[1]) * 1024
    except OSError:
        return None
    return {"uss": d.get("Private_Clean", 0) + d.get("Private_Dirty", 0),
            "pss": d.get("Pss", 0), "rss": d.get("Rss", 0)}


def tcp_active_opens():
    """Outgoing TCP connections opened so far, machine-wide (/proc/net/snmp)."""
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Tcp:")]
    return int(rows[1][rows[0].index("ActiveOpens")])


def machine_busy():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


# --------------------------------------------------------------------------
# The stack, with the bench's own nginx instances
# --------------------------------------------------------------------------

class BenchStack(Stack):
    """deploy/stack.py's Stack plus: the fast nginx upstream, the nginx
    proxy_pass baseline, an nginx for the stack with worker_processes auto
    and many connections, and workers started with any --processes/--threads."""

    def __init__(self, binary):
        super().__init__(binary)
        self.fast_port = self.fast_plain_port = None
        self.pp_fast_port = self.pp_mock_port = None
        self.worker_shape = None
        self.big_file = os.path.join(self.dir, "big.sse")

    def _nginx(self, name, body, ports, workers="auto", conns=8192):
        conf = os.path.join(self.dir, name + ".conf")
        with open(conf, "w") as f:
            f.write(nginx_main_conf(
                self.dir, name, body, "deploy/bench.py", workers=workers, conns=conns,
                access_log=False, main_extra="worker_rlimit_nofile 20000;\n",
                http_extra="    keepalive_requests 100000;\n    keepalive_timeout 300s;\n"))
        self._spawn(name, ["nginx", "-p", self.dir, "-c", conf,
                           "-e", os.path.join(self.dir, name + "-error.log")])
        wait_for(lambda: (self._check_alive(name),
                          all(can_connect(("127.0.0.1", p)) for p in ports))[1],
                 10, name)

    # C: the shipped site, in an nginx with worker_processes auto.
    def start_nginx(self, port=None, prefix=None):
        self.port = port or free_port()
        self._nginx("nginx", render_nginx_site(self.fcgi_sock, self.port), [self.port])

    def start_fast_upstream(self):
        self.fast_port, self.fast_plain_port = free_port(), free_port()
        event = (b'data: {"id":"chatcmpl-big","object":"chat.completion.chunk",'
                 b'"choices":[{"index":0,"delta":{"content":"' + b"x" * 900 +
                 b'"},"finish_reason":null}]}\n\n')
        done = b"data: [DONE]\n\n"
        n = (BIG_BYTES - len(done)) // len(event)
        with open(self.big_file, "wb") as f:
            block = event * 1024
            for _ in range(n // 1024):
                f.write(block)
            f.write(event * (n % 1024))
            f.write(b" " * (BIG_BYTES - len(done) - n * len(event)) + done)
        crt = os.path.join(self.certs, "server.crt")
        key = os.path.join(self.certs, "server.key")
        body = """
    server {
        listen 127.0.0.1:%(tls)d ssl;
        listen 127.0.0.1:%(plain)d;
        ssl_certificate %(crt)s;
        ssl_certificate_key %(key)s;
        location = %(path)s {
            if ($http_x_request_id = "bench-big") { rewrite ^ /__big last; }
            default_type application/json;
            return 200 '%(reply)s';
        }
        location = /__big {
            internal;
            types { }
            default_type text/event-stream;
            alias %(big)s;
            error_page 405 =200 $uri;   # POST to a static file: serve it anyway
        }
    }""" % {"tls": self.fast_port, "plain": self.fast_plain_port, "crt": crt,
            "key": key, "path": CHAT_PATH, "reply": FAST_REPLY, "big": self.big_file}
        self._nginx("fastup", body, [self.fast_port, self.fast_plain_port], workers=1)

    def start_proxy_pass(self):
        self.pp_fast_port, self.pp_mock_port = free_port(), free_port()
        ca = self.ca_file()

        def site(port, up):
            return """
    server {
        listen 127.0.0.1:%(port)d;
        client_max_body_size 16m;
        location / {
            proxy_pass https://%(up)s;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_ssl_session_reuse on;
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate %(ca)s;
            proxy_ssl_name localhost;
            proxy_read_timeout 600s;
        }
    }""" % {"port": port, "up": up, "ca": ca}

        body = """
    upstream bench_fast { server 127.0.0.1:%d; keepalive 32; keepalive_requests 100000; }
    upstream bench_mock { server 127.0.0.1:%d; keepalive 32; keepalive_requests 100000; }
""" % (self.fast_port, self.mock_port)
        body += site(self.pp_fast_port, "bench_fast") + site(self.pp_mock_port, "bench_mock")
        self._nginx("ppnginx", body, [self.pp_fast_port, self.pp_mock_port])

    def stop_workers(self):
        super().stop_workers()
        self.worker_shape = None

    def fast_base(self):
        return "https://127.0.0.1:%d/v1" % self.fast_port

    def start_bench_workers(self, processes, threads=None, env=None, upstream="fast"):
        """(Re)starts the workers; waits for all processes, then warms them."""
        self.stop_workers()
        wenv = {"REDIS_URL": self.redis_url(), "CEREBRAS_API_KEYS": MOCK_KEYS,
                "CEREBRAS_CA_FILE": self.ca_file(), "RATE_LIMIT_INTERVAL_MS": "0",
                "CEREBRAS_API_BASE": self.fast_base() if upstream == "fast" else self.mock_base()}
        wenv.update(env or {})
        self.start_workers(processes, wenv, threads=threads)
        self.worker_shape = (processes, threads, upstream, wenv["RATE_LIMIT_INTERVAL_MS"])
        return self.procs["workers"]

    # pids by part
    def pids(self, name):
        p = self.procs.get(name)
        if p is None or p.poll() is not None:
            return []
        return [p.pid] + children(p.pid)

    def worker_pids(self):
        """The worker processes (not the supervisor)."""
        p = self.procs.get("workers")
        return children(p.pid) if p else []

    def parts(self):
        return {"nginx": self.pids("nginx"), "workers": self.pids("workers"),
                "redis": self.pids("redis")}


# --------------------------------------------------------------------------
# Clients
# --------------------------------------------------------------------------

def tls_context(ca):
    ctx = ssl.create_default_context(cafile=ca)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class HttpConn:
    """A keep-alive HTTP/1.1 client connection (plain or TLS), small and
    constant overhead: one sendall per request, a buffered reader."""

    def __init__(self, port, tls=None):
        self.port, self.tls = port, tls
        self.sock = self.f = None

    def connect(self):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls:
            s = self.tls.wrap_socket(s, server_hostname="127.0.0.1")
        self.sock, self.f = s, s.makefile("rb", buffering=65536)

    def close(self):
        for x in (self.f, self.sock):
            try:
                if x:
                    x.close()
            except OSError:
                pass
        self.sock = self.f = None

    def request(self, body=CHAT_BODY, path=CHAT_PATH, extra=b""):
        """Returns (status, body). Raises OSError/ValueError on a broken connection."""
        if self.sock is None:
            self.connect()
        self.sock.sendall(b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                          b"Content-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s"
                          % (path.encode(), len(body), extra, body))
        f = self.f
        line = f.readline()
        if not line:
            raise ConnectionError("connection closed")
        status = int(line.split()[1])
        clen, chunked, close = None, False, False
        while True:
            h = f.readline()
            if h in (b"\r\n", b"\n", b""):
                break
            k, _, v = h.partition(b":")
            k, v = k.strip().lower(), v.strip().lower()
            if k == b"content-length":
                clen = int(v)
            elif k == b"transfer-encoding" and b"chunked" in v:
                chunked = True
            elif k == b"connection" and v == b"close":
                close = True
        if chunked:
            parts = []
            while True:
                size = int(f.readline().split(b";")[0], 16)
                if size == 0:
                    while f.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                parts.append(f.read(size))
                self.t_body = time.perf_counter()   # the last body byte is in
                f.readline()
            data = b"".join(parts)
        elif clen is not None:
            data = f.read(clen)
        else:
            data, close = f.read(), True
        if close:
            self.close()
        return status, data

    def timed(self, **kw):
        """(seconds, status, body); one reconnect on a connection the server closed."""
        for attempt in (0, 1):
            t0 = time.perf_counter()
            self.t_body = None
            try:
                st, body = self.request(**kw)
                t1 = time.perf_counter()
                self.body_secs = (self.t_body or t1) - t0
                return t1 - t0, st, body
            except (OSError, ValueError):
                self.close()
                if attempt:
                    raise


class StreamParser:
    """Incremental HTTP response parser (chunked / length / close framing)
    yielding complete SSE events."""

    def __init__(self):
        self.head = bytearray()
        self.status = None
        self.chunked = False
        self.clen = None
        self.raw = bytearray()
        self.sse = bytearray()
        self.need = 0            # bytes left of the current chunk's data
        self.state = "size"      # size | data | crlf
        self.done = False
        self.got_done_marker = False

    def feed(self, data):
        """Returns the content events (dicts with mock_index) completed by data."""
        if self.status is None:
            self.head += data
            i = self.head.find(b"\r\n\r\n")
            if i < 0:
                return []
            head, data = bytes(self.head[:i]), bytes(self.head[i + 4:])
            lines = head.split(b"\r\n")
            self.status = int(lines[0].split()[1])
            for h in lines[1:]:
                k, _, v = h.partition(b":")
                k, v = k.strip().lower(), v.strip().lower()
                if k == b"transfer-encoding" and b"chunked" in v:
                    self.chunked = True
                elif k == b"content-length":
                    self.clen = int(v)
        if self.chunked:
            self.raw += data
            self._dechunk()
        else:
            self.sse += data
            if self.clen is not None:
                self.clen -= len(data)
                if self.clen <= 0:
                    self.done = True
        return self._events()

    def _dechunk(self):
        raw = self.raw
        while raw and not self.done:
            if self.state == "size":
                i = raw.find(b"\r\n")
                if i < 0:
                    return
                size = int(bytes(raw[:i]).split(b";")[0], 16)
                del raw[:i + 2]
                if size == 0:
                    self.done = True
                    return
                self.need, self.state = size, "data"
            elif self.state == "data":
                take = min(self.need, len(raw))
                self.sse += raw[:take]
                del raw[:take]
                self.need -= take
                if self.need == 0:
                    self.state = "crlf"
            else:
                if len(raw) < 2:
                    return
                del raw[:2]
                self.state = "size"

    def _events(self):
        out = []
        while True:
            i = self.sse.find(b"\n\n")
            if i < 0:
                return out
            block = bytes(self.sse[:i])
            del self.sse[:i + 2]
            for line in block.split(b"\n"):
                if not line.startswith(b"data:"):
                    continue
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    self.got_done_marker = True
                    continue
                try:
                    obj = json.loads(payload)
                except ValueError:
                    continue
                if isinstance(obj, dict) and "mock_index" in obj:
                    out.append(obj)


def stream_request(events, gap_ms, extra=b""):
    """A streaming chat request (HTTP/1.1, Connection: close) for the mock."""
    body = json.dumps({"model": "llama3.1-8b", "stream": True,
                       "messages": [{"role": "user", "content": "Hello proxy"}],
                       "mock": {"events": events, "gap_ms": gap_ms}}).encode()
    return (b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"%sConnection: close\r\nContent-Length: %d\r\n\r\n%s"
            % (CHAT_PATH.encode(), extra, len(body), body))


def stream_once(port, tls, events, gap_ms):
    """One SSE stream over a new connection; per-event lag from the mock's
    send stamp (mock_sent, time.monotonic in the mock) to our recv()."""
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if tls:
        s = tls.wrap_socket(s, server_hostname="127.0.0.1")
    req = stream_request(events, gap_ms, b"Accept: text/event-stream\r\n")
    p = StreamParser()
    lags, coalesced, first, n = [], 0, None, 0
    t_send = time.monotonic()
    s.sendall(req)
    try:
        while not p.done:
            data = s.recv(65536)
            t = time.monotonic()
            if not data:
                break
            evs = p.feed(data)
            if evs:
                if first is None:
                    first = t - t_send
                coalesced += len(evs) - 1
                n += len(evs)
                lags += [t - e["mock_sent"] for e in evs]
    finally:
        s.close()
    return {"status": p.status, "events": n, "complete": n == events and p.got_done_marker,
            "lags": lags, "coalesced": coalesced, "ttfe": first}


# --------------------------------------------------------------------------
# Tools: wrk, redis
# --------------------------------------------------------------------------

class Tools:
    def __init__(self, st, outdir):
        self.st = st
        self.lua = os.path.join(st.dir, "post.lua")
        with open(self.lua, "w") as f:
            f.write(WRK_LUA)

    def wrk(self, url, conns, secs, limit=0, threads=2, body=CHAT_BODY):
        env = dict(os.environ, BENCH_BODY=body.decode(), BENCH_LIMIT=str(limit))
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        r = run(["wrk", "-t%d" % min(threads, conns), "-c%d" % conns, "-d%ds" % secs,
                 "--timeout", "10s", "-s", self.lua, url], env=env)
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        m = re.search(r"^BENCHJSON (.*)$", r.stdout, re.M)
        if not m:
            raise RuntimeError("wrk failed: %s %s" % (r.stdout[-500:], r.stderr[-500:]))
        d = json.loads(m.group(1))
        d["rps"] = d["requests"] / (d["duration_us"] / 1e6)
        d["errors"] = d["connect"] + d["read"] + d["write"] + d["status"] + d["timeout"]
        d["client_cpu_s"] = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
        return d

    def cmdstats(self, usec=False):
        """{command: calls} (or {command: (calls, usec)}) from INFO commandstats."""
        out = {}
        for line in self.st.redis_cli("INFO", "commandstats").splitlines():
            m = re.match(r"cmdstat_([^:]+):calls=(\d+),usec=(\d+)", line)
            if m:
                out[m.group(1)] = ((int(m.group(2)), int(m.group(3))) if usec
                                   else int(m.group(2)))
        return out


def extract_c_string(path, name):
    """The text of `const char name[] = "..." "...";` in a C file."""
    with open(path) as f:
        src = f.read()
    m = re.search(r"const\s+char\s+%s\s*\[\s*\]\s*=" % re.escape(name), src)
    if not m:
        raise RuntimeError("%s not found in %s" % (name, path))
    i, parts = m.end(), []
    esc = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "0": "\0"}
    while True:
        while src[i].isspace():
            i += 1
        if src.startswith("/*", i):
            i = src.index("*/", i) + 2
        elif src[i] == '"':
            i += 1
            while src[i] != '"':
                if src[i] == "\\":
                    if src[i + 1] not in esc:
                        raise RuntimeError("unknown escape \\%s in %s" % (src[i + 1], name))
                    parts.append(esc[src[i + 1]])
                    i += 2
                else:
                    parts.append(src[i])
                    i += 1
            i += 1
        elif src[i] == ";":
            return "".join(parts)
        else:
            raise RuntimeError("unexpected %r in %s" % (src[i], name))


# --------------------------------------------------------------------------
# The measurements
# --------------------------------------------------------------------------

class Bench:
    def __init__(self, binary, outdir):
        self.binary = os.path.abspath(binary)
        self.outdir = outdir
        self.st = BenchStack(binary)
        self.tools = Tools(self.st, outdir)
        self.R = {}          # raw results -> results.json
        self.notes = []
        self.rows = []       # table rows
        self.threads_ok = "--threads" in run([self.binary, "--help"]).stdout
        self.best_p = 4

    # ---- helpers -----------------------------------------------------------
    def url(self, port, scheme="http"):
        return "%s://127.0.0.1:%d%s" % (scheme, port, CHAT_PATH)

    def targets(self, upstream):
        st = self.st
        tls = tls_context(st.ca_file())
        if upstream == "fast":
            return {"A": (st.fast_port, tls), "B": (st.pp_fast_port, None), "C": (st.port, None)}
        return {"A": (st.mock_port, tls), "B": (st.pp_mock_port, None), "C": (st.port, None)}

    def workers(self, processes, threads=None, upstream="fast", env=None, warm=True):
        self.st.start_bench_workers(processes, threads, env, upstream)
        if warm:
            # Every process/thread gets requests: Redis connection, script
            # cached, upstream connection open.
            self.tools.wrk(self.url(self.st.port), min(64, max(2, processes * (threads or 1))), 1)

    def ensure_workers(self, processes, threads=None, upstream="fast"):
        """Restarts the workers only if they run another shape (interval 0)."""
        if self.st.worker_shape != (processes, threads, upstream, "0"):
            self.workers(processes, threads, upstream)

    def cpu_snapshot(self, parts):
        """{part: (user ticks, system ticks, context switches)}"""
        out = {}
        for k, v in parts.items():
            t = [cpu_ticks(p) for p in v]
            out[k] = (sum(x[0] for x in t), sum(x[1] for x in t),
                      sum(ctx_switches(p) for p in v))
        return out

    def mem(self, pids):
        out = {}
        for p in pids:
            m = smaps(p)
            if m:
                out[p] = m
        return out

    # ---- 1. latency -----------------------------------------------------------
    def latency(self, upstream):
        progress("latency (%s upstream): %d requests per path, keep-alive, interleaved"
                 % (upstream, LAT_N))
        tg = self.targets(upstream)
        if upstream == "fast":
            tg = dict(tg, **{"A_plain": (self.st.fast_plain_port, None)})
        conns = {k: HttpConn(port, tls) for k, (port, tls) in tg.items()}
        log_at = os.path.getsize(self.st.worker_log) if os.path.exists(self.st.worker_log) else 0
        samples = {k: [] for k in tg}
        body_samples = {k: [] for k in tg}
        bad = {k: 0 for k in tg}
        for k, c in conns.items():
            for _ in range(LAT_WARM):
                c.timed()
        per = LAT_N // LAT_ROUNDS
        for _ in range(LAT_ROUNDS):
            for k, c in conns.items():
                for _ in range(per):
                    dt, stt, body = c.timed()
                    if stt != 200 or b"chat.completion" not in body:
                        bad[k] += 1
                    samples[k].append(dt)
                    body_samples[k].append(c.body_secs)
        for c in conns.values():
            c.close()
        res = {k: {"n": len(v), "p50_ms": pct(v, 50) * 1e3, "p99_ms": pct(v, 99) * 1e3,
                   "mean_ms": sum(v) / len(v) * 1e3, "bad": bad[k],
                   # chunked answers (C): when the last body byte was in, before
                   # the terminating chunk
                   "body_p50_ms": pct(body_samples[k], 50) * 1e3}
               for k, v in samples.items()}
        # The workers' own view of the same requests (their log lines).
        view = {"late_ms": [], "ttfb_ms": [], "total_ms": []}
        with open(self.st.worker_log, "rb") as f:
            f.seek(log_at)
            for line in f.read().decode("utf-8", "replace").splitlines():
                if " chat id=" not in line:
                    continue
                for k in view:
                    m = re.search(r" %s=([0-9.]+)" % k, line)
                    if m:
                        view[k].append(float(m.group(1)))
        res["C"]["worker_log_p50"] = {k: pct(v, 50) for k, v in view.items() if v}
        self.R.setdefault("latency", {})[upstream] = res
        for k in ("A", "B", "C"):
            progress("  %s p50 %.3f ms  p99 %.3f ms%s" % (
                k, res[k]["p50_ms"], res[k]["p99_ms"], "  (%d bad)" % bad[k] if bad[k] else ""))
        return res

    def latency_paced(self):
        """Requests with idle time in between, as real traffic has: A, B and C
        in rotation 75 ms apart, so each path idles ~225 ms between two of its
        requests. C runs with the default spacing (RATE_LIMIT_INTERVAL_MS=200):
        each request reserves a slot that is already due, so this shows the
        scheduler's own overhead (clock offset, sleep until the slot)."""
        progress("paced latency: A, B, C each every ~225 ms, C with RATE_LIMIT_INTERVAL_MS=200, "
                 "%d requests per path" % SPACED_N)
        self.workers(self.best_p, env={"RATE_LIMIT_INTERVAL_MS": "200"}, warm=False)
        tg = self.targets("fast")
        conns = {k: HttpConn(port, tls) for k, (port, tls) in tg.items()}
        samples = {k: [] for k in tg}
        for i in range(8 + SPACED_N):
            for k, c in conns.items():
                dt, stt, body = c.timed()
                if i >= 8:
                    samples[k].append(dt)
                time.sleep(0.075)
        for c in conns.values():
            c.close()
        res = {k: {"n": len(v), "p50_ms": pct(v, 50) * 1e3, "p99_ms": pct(v, 99) * 1e3,
                   "max_ms": max(v) * 1e3} for k, v in samples.items()}
        self.R["latency_paced"] = res
        progress("  p50 A %.3f  B %.3f  C %.3f ms" % tuple(res[k]["p50_ms"] for k in "ABC"))

    # ---- 8. spacing fidelity ---------------------------------------------------
    def spacing(self):
        """SPACING_N requests from 8 concurrent clients through C (4 worker
        processes, RATE_LIMIT_INTERVAL_MS=100, the Python mock): how close
        to the interval consecutive upstream arrivals are. Arrival times are
        the mock's stamps (a Python thread after TLS and parsing, so they
        carry its own jitter); send times are the workers' own (sent_mono
        in their log, the same clock)."""
        progress("spacing fidelity: %d requests, 8 clients, 100 ms interval" % SPACING_N)
        self.workers(4, upstream="mock", env={"RATE_LIMIT_INTERVAL_MS": "100"}, warm=False)
        self._mock_reset()
        mark = os.path.getsize(self.st.worker_log)

        def client(i):
            c = HttpConn(self.st.port)
            for j in range(i, SPACING_N, 8):
                c.request(extra=b"X-Request-Id: spacing-%d\r\n" % j)
            c.close()

        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            list(ex.map(client, range(8)))
        recs = [r for r in self._mock_get("/__mock/requests")
                if (r.get("headers") or {}).get("x-request-id", "").startswith("spacing-")]
        arr = sorted(r["t"] for r in recs)
        with open(self.st.worker_log, "rb") as f:
            f.seek(mark)
            text = f.read().decode("utf-8", "replace")
        sent = sorted(float(m) for m in re.findall(r"chat id=spacing-\d+ .* sent_mono=([\d.]+)", text))
        late = [float(m) for m in re.findall(r"chat id=spacing-\d+ .* late_ms=(-?[\d.]+)", text)]
        gaps = lambda ts: [(b - a) * 1e3 for a, b in zip(ts, ts[1:])]
        ag, sg = gaps(arr), gaps(sent)
        res = {"n": len(arr), "interval_ms": 100.0,
               "arrival_min_ms": min(ag), "arrival_p50_ms": pct(ag, 50),
               "arrival_early_2ms": sum(1 for g in ag if g < 98.0),
               "send_min_ms": min(sg), "send_p50_ms": pct(sg, 50),
               "send_early_2ms": sum(1 for g in sg if g < 98.0),
               "late_p50_ms": pct(late, 50), "late_max_ms": max(late), "gaps": len(ag)}
        self.R["spacing"] = res
        progress("  arrival gaps min %.2f p50 %.2f ms (%d < 98); send gaps min %.2f (%d < 98)"
                 % (res["arrival_min_ms"], res["arrival_p50_ms"], res["arrival_early_2ms"],
                    res["send_min_ms"], res["send_early_2ms"]))

    # ---- 5. Redis round trips ---------------------------------------------------
    def redis_round_trips(self):
        progress("Redis round trips: MONITOR (top-level commands) and INFO commandstats "
                 "(incl. commands run inside scripts) around %d requests" % RT_N)
        res = {}
        p = 4
        # Cold: the first requests of freshly started workers.
        self.workers(p, warm=False)
        res["cold"] = self._count_redis(50)
        res["cold"]["workers"] = p
        # Steady state (workers warmed with wrk).
        self.workers(p)
        res["warm"] = self._count_redis(RT_N)
        # Redis' own time in the script, without MONITOR (which slows it).
        res["warm"]["script_usec_per_request"] = \
            self._count_redis(1000, monitor=False)["script_usec_per_request"]
        self.R["redis_round_trips"] = res
        w, c = res["warm"], res["cold"]
        progress("  warm: %.4f round trips per request %s; %.2f commands executed per request "
                 "(incl. inside the script) %s" % (w["per_request"], w["per_command"],
                                                   w["executed_per_request"], w["executed"]))
        progress("  cold (first 50 requests after start, %d workers): %.3f round trips per "
                 "request %s" % (p, c["per_request"], c["per_command"]))

    def _count_redis(self, n, monitor=True):
        st = self.st
        before = self.tools.cmdstats(usec=True)
        lines, first = [], "OK"
        if monitor:
            mon = subprocess.Popen(["redis-cli", "-s", st.redis_sock, "MONITOR"],
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            first = mon.stdout.readline()
            th = threading.Thread(target=lambda: lines.extend(mon.stdout), daemon=True)
            th.start()
        c = HttpConn(st.port)
        bad = 0
        try:
            for _ in range(n):
                if c.timed()[1] != 200:
                    bad += 1
        finally:
            c.close()
            if monitor:
                time.sleep(0.3)
                mon.terminate()
                mon.wait()
                th.join(2)
        after = self.tools.cmdstats(usec=True)
        top, nested = {}, 0
        for line in lines:
            m = re.match(r'^\d+\.\d+ \[\d+ (\S+)\] "([^"]*)"(?: "([^"]*)")?', line)
            if not m:
                continue
            if m.group(1) == "lua":
                nested += 1
                continue
            cmd = m.group(2).lower()
            if cmd == "script" and m.group(3):
                cmd += " " + m.group(3).lower()
            top[cmd] = top.get(cmd, 0) + 1
        total = sum(top.values())
        executed, usec = {}, 0
        for k, (calls, us) in after.items():
            d = calls - before.get(k, (0, 0))[0]
            if d and k not in ("info", "monitor"):       # our own
                executed[k] = round(d / n, 4)
                if k in ("evalsha", "eval"):
                    usec += us - before.get(k, (0, 0))[1]
        return {"requests": n, "bad": bad, "monitor_ok": first.strip() == "OK",
                "script_usec_per_request": round(usec / n, 1),
                "round_trips": total, "per_request": total / n,
                "per_command": {k: round(v / n, 4) for k, v in sorted(top.items())},
                "nested_per_request": nested / n,
                "executed_per_request": sum(executed.values()), "executed": executed}

    # ---- 2. throughput + CPU -------------------------------------------------
    def sweep(self):
        progress("worker count sweep for C (fast upstream, spacing off, -c 32, %d s each)"
                 % SWEEP_SECS)
        res = {}
        for p in SWEEP:
            self.workers(p)
            d = self.tools.wrk(self.url(self.st.port), 32, SWEEP_SECS)
            res[p] = d["rps"]
            progress("  --processes %-3d %8.0f req/s%s" % (
                p, d["rps"], "  (%d errors)" % d["errors"] if d["errors"] else ""))
        self.best_p = max(res, key=res.get)
        self.R["sweep_rps"] = res
        self.R["best_processes"] = self.best_p
        progress("  best: --processes %d" % self.best_p)

    def throughput(self):
        st = self.st
        configs = [("C", self.best_p, None)]
        if self.threads_ok:
            # As many accepting threads as the best process count had
            # processes: the same concurrency, in 2 processes.
            configs.append(("Ct", 2, max(2, self.best_p // 2)))
        out = {}
        for conns in TPUT_CONNS:
            row = {}
            progress("throughput, -c %d, %d s per path (fast upstream)" % (conns, TPUT_SECS))
            row["A"] = self._measured_wrk(self.url(st.fast_port, "https"), conns, {})
            row["B"] = self._measured_wrk(self.url(st.pp_fast_port), conns,
                                          {"nginx": st.pids("ppnginx")})
            for name, p, t in configs:
                self.ensure_workers(p, t)
                row[name] = self._measured_wrk(self.url(st.port), conns, st.parts())
                row[name]["shape"] = {"processes": p, "threads": t}
            for k, d in row.items():
                progress("  %-2s %8.0f req/s  p50 %.2f ms  p99 %.2f ms  cpu/req %s%s" % (
                    k, d["rps"], d["p50_us"] / 1e3, d["p99_us"] / 1e3,
                    " ".join("%s=%.0fus" % (a, b) for a, b in d["cpu_us_per_req"].items()),
                    "  ERRORS %d" % d["errors"] if d["errors"] else ""))
            out[conns] = row
            # back to the processes-only shape for the next round
        self.R["throughput"] = out

    def _measured_wrk(self, url, conns, parts):
        parts = dict(parts)
        parts["upstream"] = self.st.pids("fastup")
        c0 = self.cpu_snapshot(parts)
        m0 = machine_busy()
        o0 = tcp_active_opens()
        d = self.tools.wrk(url, conns, TPUT_SECS)
        o1 = tcp_active_opens()
        c1 = self.cpu_snapshot(parts)
        m1 = machine_busy()
        # Connections opened during the run (wrk's own, once per connection,
        # happen at its start): beyond them, proxies re-connecting upstream.
        d["tcp_opens"] = o1 - o0
        n = max(1, d["requests"])
        tick = 1e6 / CLK_TCK / n
        cpu = {k: ((c1[k][0] - c0[k][0]) + (c1[k][1] - c0[k][1])) * tick for k in parts}
        sys_us = {k: (c1[k][1] - c0[k][1]) * tick for k in parts}
        ctx = {k: (c1[k][2] - c0[k][2]) / n for k in parts}
        ours = [k for k in parts if k != "upstream"]
        if ours:
            cpu["total"] = sum(cpu[k] for k in ours)
            sys_us["total"] = sum(sys_us[k] for k in ours)
            ctx["total"] = sum(ctx[k] for k in ours)
        cpu["client"] = d["client_cpu_s"] * 1e6 / n
        d["cpu_us_per_req"] = {k: round(v, 1) for k, v in cpu.items()}
        d["sys_us_per_req"] = {k: round(v, 1) for k, v in sys_us.items()}
        d["ctx_switches_per_req"] = {k: round(v, 2) for k, v in ctx.items()}
        span = max(1, m1[1] - m0[1])
        d["machine_busy_pct"] = round(100.0 * (m1[0] - m0[0]) / span, 1)
        # CPU used by anything else on the machine meanwhile (noise).
        known = sum((c1[k][0] - c0[k][0]) + (c1[k][1] - c0[k][1]) for k in parts) + \
            d["client_cpu_s"] * CLK_TCK
        d["others_busy_pct"] = round(max(0.0, 100.0 * ((m1[0] - m0[0]) - known) / span), 1)
        return d

    def syscalls(self):
        """Diagnostic: system calls per request of each part (strace -c on a
        sequential keep-alive client, so every call belongs to a request)."""
        if shutil.which("strace") is None:
            self.notes.append("strace is not installed: no system call counts.")
            return
        st = self.st
        n = 500
        progress("system calls per request (strace -c, %d sequential requests, B and C)" % n)
        res = {}
        for path, port, parts in (
                ("C", st.port, {"nginx": st.pids("nginx"), "workers": st.pids("workers"),
                                "redis": st.pids("redis"), "upstream": st.pids("fastup")}),
                ("B", st.pp_fast_port, {"nginx": st.pids("ppnginx"),
                                        "upstream": st.pids("fastup")})):
            c = HttpConn(port)
            for _ in range(20):
                c.timed()
            tracers = {}
            for part, pids in parts.items():
                out = os.path.join(st.dir, "strace-%s-%s.txt" % (path, part))
                argv = ["strace", "-c", "-f", "-o", out]
                for pid in pids:
                    argv += ["-p", str(pid)]
                tracers[part] = (subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                                  stderr=subprocess.DEVNULL), out)
            time.sleep(0.7)
            try:
                for _ in range(n):
                    c.timed()
            finally:
                c.close()
                time.sleep(0.2)
                for tp, _ in tracers.values():
                    tp.send_signal(signal.SIGINT)
                for tp, _ in tracers.values():
                    try:
                        tp.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        tp.kill()
                        tp.wait()
            res[path] = {}
            for part, (_, out) in tracers.items():
                calls = {}
                try:
                    with open(out) as f:
                        for line in f:
                            fl = line.split()
                            if len(fl) >= 5 and fl[3].isdigit() and fl[-1] != "total":
                                calls[fl[-1]] = calls.get(fl[-1], 0) + int(fl[3])
                except OSError:
                    pass
                res[path][part] = {"per_request": round(sum(calls.values()) / n, 2),
                                   "by_call": {k: round(v / n, 2) for k, v in
                                               sorted(calls.items(), key=lambda kv: -kv[1])
                                               if v / n >= 0.05}}
            progress("  %s: %s" % (path, ", ".join("%s %.1f" % (k, v["per_request"])
                                                   for k, v in res[path].items())))
        self.R["syscalls"] = res

    # ---- 4. memory --------------------------------------------------------------
    def memory(self, tput_c32):
        st = self.st
        progress("memory: idle, after %d requests, during/after a 100 MiB stream "
                 "(--processes %d, fast upstream)" % (MEM_REQUESTS, self.best_p))
        self.workers(self.best_p)
        time.sleep(0.5)
        res = {"processes": self.best_p}
        res["idle"] = self._mem_parts()
        # 100k requests: each wrk thread stops after its share.
        done, rps = 0, max(500.0, tput_c32)
        t_start = time.monotonic()
        while done < MEM_REQUESTS:
            left = MEM_REQUESTS - done
            secs = int(left / rps * 1.15) + 2
            d = self.tools.wrk(self.url(st.port), 32, secs, limit=(left + 1) // 2)
            done += d["requests"]
            if d["errors"]:
                res.setdefault("errors", 0)
                res["errors"] += d["errors"]
            rps = max(200.0, d["requests"] / (d["duration_us"] / 1e6))
        res["requests_done"] = done
        res["requests_secs"] = round(time.monotonic() - t_start, 1)
        time.sleep(0.5)
        res["after_100k"] = self._mem_parts()
        progress("  %d requests in %.1f s" % (done, res["requests_secs"]))
        res["big"] = self._big_stream()
        self.R["memory"] = res
        return res

    def _mem_parts(self):
        """USS/PSS per part, and per process in "per_pid" (bytes)."""
        st = self.st
        out = {}
        sup = st.procs["workers"].pid
        for part, pids in (("nginx", st.pids("nginx")), ("redis", st.pids("redis"))):
            m = self.mem(pids)
            out[part] = {"uss": sum(x["uss"] for x in m.values()),
                         "pss": sum(x["pss"] for x in m.values()), "n": len(m),
                         "per_pid": {str(k): {"uss": v["uss"], "pss": v["pss"]}
                                     for k, v in m.items()}}
        w = self.mem(st.worker_pids())
        s = smaps(sup) or {"uss": 0, "pss": 0}
        out["workers"] = {"uss": sum(x["uss"] for x in w.values()),
                          "pss": sum(x["pss"] for x in w.values()), "n": len(w),
                          "max_uss": max((x["uss"] for x in w.values()), default=0),
                          "per_pid": {str(k): {"uss": v["uss"], "pss": v["pss"]}
                                      for k, v in w.items()}}
        out["supervisor"] = {"pid": sup, "uss": s["uss"], "pss": s["pss"]}
        return out

    def _big_stream(self):
        """100 MiB of SSE through C, read at ~50 MB/s (slower than the path can
        go, so back-pressure is exercised), sampling smaps every 200 ms."""
        st = self.st
        wpids = st.worker_pids()
        npids = st.pids("nginx")
        before = {p: smaps(p) for p in wpids + npids}
        samples = []
        stop = threading.Event()

        def sampler():
            while not stop.is_set():
                samples.append((time.monotonic(), {p: smaps(p) for p in wpids + npids}))
                stop.wait(0.2)

        th = threading.Thread(target=sampler, daemon=True)
        s = socket.create_connection(("127.0.0.1", st.port), timeout=60)
        body = b'{"model":"llama3.1-8b","stream":true,"messages":[]}'
        s.sendall(b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  b"X-Request-Id: bench-big\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
                  % (CHAT_PATH.encode(), len(body), body))
        th.start()
        total, rate, t0 = 0, 50e6, time.monotonic()
        head = b""
        tail = b""
        while True:
            data = s.recv(262144)
            if not data:
                break
            if len(head) < 200:
                head += data[:200]
            tail = (tail + data)[-64:]
            total += len(data)
            ahead = total / rate - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)
        secs = time.monotonic() - t0
        s.close()
        stop.set()
        th.join()
        time.sleep(0.5)
        after = {p: smaps(p) for p in wpids + npids}
        ok = head.startswith(b"HTTP/1.1 200") and total > BIG_BYTES and b"data: [DONE]" in tail

        def growth(pids, which):
            g = {}
            for p in pids:
                b = (before.get(p) or {}).get(which, 0)
                peak = max([(smp.get(p) or {}).get(which, 0) for _, smp in samples] + [b])
                aft = (after.get(p) or {}).get(which, 0)
                g[p] = (b, peak, aft)
            return g

        wg = growth(wpids, "uss")
        ng = growth(npids, "uss")
        res = {"ok": ok, "bytes": total, "secs": round(secs, 2), "samples": len(samples),
               "workers_max_growth_during": max(pk - b for b, pk, a in wg.values()),
               "workers_max_growth_after": max(a - b for b, pk, a in wg.values()),
               "workers_uss_before_total": sum(b for b, pk, a in wg.values()),
               "workers_uss_peak_max": max(pk for b, pk, a in wg.values()),
               "nginx_max_growth_during": max(pk - b for b, pk, a in ng.values()),
               "nginx_max_growth_after": max(a - b for b, pk, a in ng.values()),
               "per_pid_uss_before_peak_after": {
                   "workers": {str(p): v for p, v in wg.items()},
                   "nginx": {str(p): v for p, v in ng.items()}},
               "per_pid_pss_before_peak_after": {
                   "workers": {str(p): v for p, v in growth(wpids, "pss").items()},
                   "nginx": {str(p): v for p, v in growth(npids, "pss").items()}}}
        progress("  100 MiB stream: %s, %.1f MB in %.1f s, %d samples; worker USS growth "
                 "during %+.0f KiB, after %+.0f KiB; nginx during %+.0f KiB"
                 % ("ok" if ok else "INCOMPLETE", total / 1e6, secs, len(samples),
                    res["workers_max_growth_during"] / 1024,
                    res["workers_max_growth_after"] / 1024, res["nginx_max_growth_during"] / 1024))
        return res

    # ---- 3. streaming -------------------------------------------------------------
    def streaming(self):
        progress("streaming: %d streams per path, 50 events 20 ms apart (mock upstream)"
                 % STREAMS)
        tg = self.targets("mock")
        res = {}
        raw = {k: [] for k in tg}
        for k, (port, tls) in tg.items():       # warm each path once
            stream_once(port, tls, 3, 0)
        for i in range(STREAMS):
            for k, (port, tls) in tg.items():
                raw[k].append(stream_once(port, tls, 50, 20))
        for k, runs in raw.items():
            lags = [x for r in runs for x in r["lags"]]
            ttfe = [r["ttfe"] for r in runs if r["ttfe"] is not None]
            res[k] = {"streams": len(runs),
                      "complete": sum(1 for r in runs if r["complete"]),
                      "events": sum(r["events"] for r in runs),
                      "coalesced": sum(r["coalesced"] for r in runs),
                      "lag_p50_ms": pct(lags, 50) * 1e3, "lag_p99_ms": pct(lags, 99) * 1e3,
                      "lag_max_ms": max(lags) * 1e3 if lags else float("nan"),
                      "ttfe_p50_ms": pct(ttfe, 50) * 1e3, "ttfe_max_ms": max(ttfe) * 1e3}
            progress("  %s lag p50 %.3f p99 %.3f max %.3f ms; first event p50 %.3f ms; "
                     "coalesced %d; complete %d/%d" % (
                         k, res[k]["lag_p50_ms"], res[k]["lag_p99_ms"], res[k]["lag_max_ms"],
                         res[k]["ttfe_p50_ms"], res[k]["coalesced"], res[k]["complete"],
                         len(runs)))
        self.R["streaming"] = res

    # ---- 6. Redis reservations per second -----------------------------------------
    def redis_bench(self):
        st = self.st
        text = extract_c_string(os.path.join(ROOT, "shared", "sched.c"), "sched_script")
        sha = hashlib.sha1(text.encode()).hexdigest()
        # The workers served requests already: Redis knows their script.
        known = st.redis_cli("SCRIPT", "EXISTS", sha).strip()
        loaded = run(["redis-cli", "-s", st.redis_sock, "SCRIPT", "LOAD", text]).stdout.strip()
        if loaded != sha:
            raise RuntimeError("SCRIPT LOAD gave %r, expected %s" % (loaded, sha))
        res = {"sha": sha, "same_as_workers": known == "1", "variants": {}}
        # ARGV as sched_reserve passes them: nkeys, interval us, "1" if key
        # scope, floor us, max wait us. KEYS: rr, slot, keys hash.
        keys = ["{bench}:rr", "{bench}:slot", "{bench}:keys"]
        variants = [("interval 0 (no spacing; rotation only)", ["3", "0", "0", "0", "30000000"]),
                    ("interval 1 us (slot GET+SET each time)", ["3", "1", "0", "0", "30000000"])]
        for name, argv in variants:
            progress("redis-benchmark EVALSHA reserve, %s, -n %d -c 50 -P 1"
                     % (name, REDIS_BENCH_N))
            r = run(["redis-benchmark", "-s", st.redis_sock, "-n", str(REDIS_BENCH_N),
                     "-c", "50", "-P", "1", "--csv", "EVALSHA", sha, "3"] + keys + argv)
            rows = [ln for ln in r.stdout.splitlines() if ln.startswith('"EVALSHA')]
            if not rows:
                raise RuntimeError("redis-benchmark: %s %s" % (r.stdout[-300:], r.stderr[-300:]))
            f = [x.strip('"') for x in rows[-1].split('","')]
            res["variants"][name] = {"rps": float(f[1]), "p50_ms": float(f[4]),
                                     "p99_ms": float(f[6]), "argv": argv}
            progress("  %.0f reservations/s (p50 %.3f ms)" % (float(f[1]), float(f[4])))
        # A reservation answer must be a real one.
        chk = st.redis_cli("EVALSHA", sha, "3", *keys, "3", "0", "0", "0", "30000000")
        res["sample_reply"] = chk.split()
        st.redis_cli("DEL", *keys)
        self.R["redis_bench"] = res

    # ---- 7. concurrent streams --------------------------------------------------------
    def concurrency(self):
        st = self.st
        if self.threads_ok:
            shape = (2, 256)
        else:
            shape = (CONC, None)
        progress("concurrency: %d streams of %d events %d ms apart through C "
                 "(--processes %d%s, mock upstream)" % (
                     CONC, CONC_EVENTS, CONC_GAP_MS, shape[0],
                     " --threads %d" % shape[1] if shape[1] else ", no --threads support"))
        self._mock_reset()
        st.start_bench_workers(shape[0], shape[1], upstream="mock")
        # Let start-up warm-ups (HEAD to the upstream), if any, settle.
        last, stable_since = -1, time.monotonic()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            n = self._mock_warmups()
            if n != last:
                last, stable_since = n, time.monotonic()
            elif time.monotonic() - stable_since > 1.0:
                break
            time.sleep(0.2)
        time.sleep(0.5)
        idle = self._mem_parts()
        peak = {"uss": 0, "pss": 0, "nginx_uss": 0}
        stop = threading.Event()

        def sampler():
            while not stop.is_set():
                w = self.mem(st.pids("workers"))
                ng = self.mem(st.pids("nginx"))
                u = sum(x["uss"] for x in w.values())
                if u > peak["uss"]:
                    peak["uss"], peak["pss"] = u, sum(x["pss"] for x in w.values())
                peak["nginx_uss"] = max(peak["nginx_uss"], sum(x["uss"] for x in ng.values()))
                stop.wait(0.5)

        th = threading.Thread(target=sampler, daemon=True)
        th.start()
        t0 = time.monotonic()
        results = asyncio.run(self._conc_clients(st.port))
        secs = time.monotonic() - t0
        stop.set()
        th.join()
        complete = sum(1 for r in results if r["complete"])
        statuses = {}
        for r in results:
            statuses[str(r["status"])] = statuses.get(str(r["status"]), 0) + 1
        idle_uss = idle["workers"]["uss"] + idle["supervisor"]["uss"]
        idle_pss = idle["workers"]["pss"] + idle["supervisor"]["pss"]
        res = {"processes": shape[0], "threads": shape[1], "streams": CONC,
               "complete": complete, "statuses": statuses, "secs": round(secs, 1),
               "idle_workers_uss": idle_uss, "idle_workers_pss": idle_pss,
               "peak_workers_uss": peak["uss"], "peak_workers_pss": peak["pss"],
               "peak_nginx_uss": peak["nginx_uss"], "idle_nginx_uss": idle["nginx"]["uss"],
               "per_stream_uss": (peak["uss"] - idle_uss) / CONC,
               "per_stream_pss": (peak["pss"] - idle_pss) / CONC,
               "per_stream_total_uss": peak["uss"] / CONC,
               "ttfe_p50_ms": pct([r["ttfe"] for r in results if r["ttfe"]], 50) * 1e3,
               "ttfe_max_ms": max([r["ttfe"] for r in results if r["ttfe"]] or [0]) * 1e3,
               "failures": [r for r in results if not r["complete"]][:5]}
        self.R["concurrency"] = res
        progress("  %d/%d complete in %.1f s; workers USS idle %.1f MiB, peak %.1f MiB: "
                 "%.3f MiB per stream (%.3f MiB incl. idle)" % (
                     complete, CONC, secs, idle_uss / MIB, peak["uss"] / MIB,
                     res["per_stream_uss"] / MIB, res["per_stream_total_uss"] / MIB))
        st.stop_workers()

    async def _conc_clients(self, port):
        req = stream_request(CONC_EVENTS, CONC_GAP_MS)

        async def one():
            r = {"status": None, "complete": False, "ttfe": None, "error": None}
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                t0 = time.monotonic()
                writer.write(req)
                await writer.drain()
                buf = bytearray()
                while True:
                    chunk = await reader.read(65536)
                    if not chunk:
                        break
                    if r["ttfe"] is None and b'"mock_index"' in chunk:
                        r["ttfe"] = time.monotonic() - t0
                    buf += chunk
                writer.close()
                line = bytes(buf[:buf.find(b"\r\n")]).split()
                r["status"] = int(line[1]) if len(line) > 1 and line[1].isdigit() else None
                # De-chunk and parse: an event may span two chunks.
                parser = StreamParser()
                evs = parser.feed(bytes(buf))
                r["events"] = len(evs)
                r["complete"] = (parser.status == 200 and parser.got_done_marker and
                                 sorted(e["mock_index"] for e in evs) ==
                                 list(range(CONC_EVENTS)))
                if not r["complete"]:
                    r["head"] = bytes(buf[:300]).decode("utf-8", "replace")
                    r["tail"] = bytes(buf[-300:]).decode("utf-8", "replace")
            except Exception as e:   # counted as incomplete
                r["error"] = repr(e)
            return r

        tasks = [asyncio.wait_for(one(), CONC_EVENTS * CONC_GAP_MS / 1000 + 60)
                 for _ in range(CONC)]
        out = []
        for r in await asyncio.gather(*tasks, return_exceptions=True):
            out.append(r if isinstance(r, dict) else
                       {"status": None, "complete": False, "ttfe": None, "error": repr(r)})
        return out

    def _mock_get(self, path):
        ctx = tls_context(self.st.ca_file())
        with urllib.request.urlopen("https://127.0.0.1:%d%s" % (self.st.mock_port, path),
                                    context=ctx, timeout=10) as r:
            return json.loads(r.read())

    def _mock_warmups(self):
        try:
            return self._mock_get("/__mock/warmups").get("warmups", 0)
        except OSError:
            return 0

    def _mock_reset(self):
        ctx = tls_context(self.st.ca_file())
        req = urllib.request.Request("https://127.0.0.1:%d/__mock/reset" % self.st.mock_port,
                                     data=b"", method="POST")
        urllib.request.urlopen(req, context=ctx, timeout=10).read()

    # ---- orchestration -------------------------------------------------------------
    def run_all(self):
        st = self.st
        progress("starting: redis, mock upstream, fast nginx upstream, nginx proxy_pass, "
                 "nginx for the stack (dir %s)" % st.dir)
        st.start_redis()
        st.start_mock()
        st.start_fast_upstream()
        st.start_proxy_pass()
        st.start_nginx()
        progress("--threads supported: %s" % ("yes" if self.threads_ok else "no"))

        only = [x for x in os.environ.get("BENCH_ONLY", "").split(",") if x]
        phases = [
            ("sweep", self.sweep),
            ("latency", lambda: (self.ensure_workers(self.best_p), self.latency("fast"))),
            ("syscalls", lambda: (self.ensure_workers(self.best_p), self.syscalls())),
            ("throughput", self.throughput),
            ("roundtrips", self.redis_round_trips),
            ("paced", self.latency_paced),
            ("memory", lambda: self.memory(
                self.R.get("throughput", {}).get(32, {}).get("C", {}).get("rps", 3000))),
            ("mocklatency", lambda: (self.ensure_workers(4, upstream="mock"),
                                     self.latency("mock"))),
            ("streaming", lambda: (self.ensure_workers(4, upstream="mock"), self.streaming())),
            ("redisbench", self.redis_bench),
            ("concurrency", self.concurrency),
            ("spacing", self.spacing),
        ]
        for name, fn in phases:
            if only and name not in only:
                continue
            fn()

    # ---- report ---------------------------------------------------------------------
    def report(self, elapsed):
        R = self.R
        rows = []

        def row(no, measure, upstream, a="", b="", c="", target="", ok=None):
            rows.append({"no": no, "measure": measure, "upstream": upstream, "A": a, "B": b,
                         "C": c, "target": target,
                         "result": "" if ok is None else ("pass" if ok else "miss")})

        f3 = lambda v: "%.3f" % v
        up_fast, up_mock = "fast nginx", "Python mock"
        best = R.get("best_processes", 4)
        for up, lab in (("fast", up_fast), ("mock", up_mock)):
            L = R.get("latency", {}).get(up)
            if not L:
                continue
            procs = best if up == "fast" else 4
            row("1", "latency p50 (ms) [C: --processes %d]" % procs, lab, f3(L["A"]["p50_ms"]),
                f3(L["B"]["p50_ms"]), f3(L["C"]["p50_ms"]))
            row("1", "latency p99 (ms)", lab, f3(L["A"]["p99_ms"]), f3(L["B"]["p99_ms"]),
                f3(L["C"]["p99_ms"]))
            add50c = L["C"]["p50_ms"] - L["A"]["p50_ms"]
            row("1", "added p50 vs A (ms)", lab, "",
                "%+.3f" % (L["B"]["p50_ms"] - L["A"]["p50_ms"]), "%+.3f" % add50c,
                "C <= 0.15", add50c <= 0.15)
            row("1", "added p99 vs A (ms)", lab, "",
                "%+.3f" % (L["B"]["p99_ms"] - L["A"]["p99_ms"]),
                "%+.3f" % (L["C"]["p99_ms"] - L["A"]["p99_ms"]))
            wl = L["C"].get("worker_log_p50", {})
            if wl:
                row("1", "  C as the workers log it, p50 (ms): late (slot -> send), upstream "
                    "first byte, handler total", lab, "", "", "%.3f, %.1f, %.1f" % (
                        wl.get("late_ms", float("nan")), wl.get("ttfb_ms", float("nan")),
                        wl.get("total_ms", float("nan"))))
            gap = L["C"]["p50_ms"] - L["C"]["body_p50_ms"]
            row("1", "  C: whole body in, p50 (ms); the terminating chunk came later by",
                lab, "", "", "%.3f; %+.3f" % (L["C"]["body_p50_ms"], gap))
            if "A_plain" in L:
                row("1", "  A over plain HTTP instead, p50 / p99 (ms)", lab,
                    "%.3f / %.3f" % (L["A_plain"]["p50_ms"], L["A_plain"]["p99_ms"]))
        P = R.get("latency_paced")
        if P:
            row("1", "paced: one request per path every ~225 ms, p50 / p99 (ms); "
                "C with the default 200 ms spacing", up_fast,
                *["%.3f / %.3f" % (P[k]["p50_ms"], P[k]["p99_ms"]) for k in "ABC"])
            row("1", "  paced: added p50 vs A (ms)", up_fast, "",
                "%+.3f" % (P["B"]["p50_ms"] - P["A"]["p50_ms"]),
                "%+.3f" % (P["C"]["p50_ms"] - P["A"]["p50_ms"]))
        if "sweep_rps" in R:
            row("2", "C req/s by --processes (-c 32, %d s each)" % SWEEP_SECS, up_fast, "", "",
                ", ".join("%s: %.0f" % (k, v) for k, v in R["sweep_rps"].items()))
        T = R.get("throughput", {})
        for conns, r in T.items():
            ratio = r["C"]["rps"] / r["B"]["rps"]
            row("2", "throughput -c %s (req/s) [C: --processes %d]" % (conns, best), up_fast,
                "%.0f" % r["A"]["rps"], "%.0f" % r["B"]["rps"],
                "%.0f (%.2fx B)" % (r["C"]["rps"], ratio), ">= 0.4x B", ratio >= 0.4)
            if "Ct" in r:
                rt = r["Ct"]["rps"] / r["B"]["rps"]
                sh = r["Ct"]["shape"]
                row("2", "throughput -c %s, C threaded --processes %d --threads %d (req/s)"
                    % (conns, sh["processes"], sh["threads"]), up_fast, "", "",
                    "%.0f (%.2fx B)" % (r["Ct"]["rps"], rt), ">= 0.4x B", rt >= 0.4)
            cb, cc = r["B"]["cpu_us_per_req"], r["C"]["cpu_us_per_req"]
            row("2", "CPU us/req -c %s, nginx + workers + redis (B: nginx)" % conns, up_fast, "",
                "%.0f" % cb["total"], "%.0f" % cc["total"], "C <= 150", cc["total"] <= 150)
            sb, sc = r["B"]["sys_us_per_req"], r["C"]["sys_us_per_req"]
            row("2", "  by part, us/req (of which kernel)", up_fast,
                "upstream %.0f" % r["A"]["cpu_us_per_req"]["upstream"],
                "nginx %.0f (%.0f); upstream %.0f" % (cb["nginx"], sb["nginx"], cb["upstream"]),
                "nginx %.0f (%.0f), workers %.0f (%.0f), redis %.0f (%.0f); upstream %.0f" % (
                    cc["nginx"], sc["nginx"], cc["workers"], sc["workers"], cc["redis"],
                    sc["redis"], cc["upstream"]))
            if "Ct" in r:
                ct, st_ = r["Ct"]["cpu_us_per_req"], r["Ct"]["sys_us_per_req"]
                row("2", "  C threaded: CPU us/req (of which kernel)", up_fast, "", "",
                    "total %.0f: nginx %.0f (%.0f), workers %.0f (%.0f), redis %.0f (%.0f)" % (
                        ct["total"], ct["nginx"], st_["nginx"], ct["workers"], st_["workers"],
                        ct["redis"], st_["redis"]), "<= 150", ct["total"] <= 150)
            xb, xc = r["B"]["ctx_switches_per_req"], r["C"]["ctx_switches_per_req"]
            row("2", "  context switches per request", up_fast, "",
                "%.2f" % xb["total"], "%.2f (nginx %.2f, workers %.2f, redis %.2f)" % (
                    xc["total"], xc["nginx"], xc["workers"], xc["redis"]))
            row("2", "  wrk latency p50 / p99 (ms); machine CPU busy (by other work)", up_fast,
                *["%.2f / %.2f; %.0f%% (%.0f%%)" % (
                    r[k]["p50_us"] / 1e3, r[k]["p99_us"] / 1e3, r[k]["machine_busy_pct"],
                    r[k]["others_busy_pct"]) for k in "ABC"])
            row("2", "  TCP connections opened during the run (wrk's own: %s)" % conns, up_fast,
                *[str(r[k]["tcp_opens"]) for k in "ABC"])
            errs = {k: v["errors"] for k, v in r.items() if v["errors"]}
            if errs:
                row("2", "  wrk errors (connect/read/write/status/timeout)", up_fast,
                    *[str(r[k]["errors"]) for k in "ABC"])
        SC = R.get("syscalls")
        if SC:
            row("2", "system calls per request (strace -c, sequential)", up_fast, "",
                ", ".join("%s %.1f" % (k, v["per_request"]) for k, v in SC["B"].items()),
                ", ".join("%s %.1f" % (k, v["per_request"]) for k, v in SC["C"].items()))
        S = R.get("streaming")
        if S:
            A, B, C = S["A"], S["B"], S["C"]
            row("3", "per-event lag p50 / p99 / max (ms)", up_mock,
                *["%.3f / %.3f / %.3f" % (x["lag_p50_ms"], x["lag_p99_ms"], x["lag_max_ms"])
                  for x in (A, B, C)])
            add = C["lag_p99_ms"] - A["lag_p99_ms"]
            row("3", "added per-event lag p99 vs A (ms)", up_mock, "",
                "%+.3f" % (B["lag_p99_ms"] - A["lag_p99_ms"]), "%+.3f" % add, "C <= 0.5",
                add <= 0.5)
            row("3", "coalesced events (of %d)" % C["events"], up_mock, str(A["coalesced"]),
                str(B["coalesced"]), str(C["coalesced"]), "C = 0", C["coalesced"] == 0)
            d = C["ttfe_p50_ms"] - A["ttfe_p50_ms"]
            row("3", "time to first event p50 (ms)", up_mock, f3(A["ttfe_p50_ms"]),
                f3(B["ttfe_p50_ms"]), "%.3f (%+.3f)" % (C["ttfe_p50_ms"], d),
                "C within 1 ms of A", d <= 1.0)
            row("3", "complete streams", up_mock, *["%d/%d" % (x["complete"], x["streams"])
                                                    for x in (A, B, C)])
        M = R.get("memory")
        if M:
            idle, aft = M["idle"], M["after_100k"]
            mx = idle["workers"]["max_uss"]
            row("4", "idle USS per worker process, max (MiB) [--processes %d]" % M["processes"],
                up_fast, "", "", "%.2f" % (mx / MIB), "<= 1.5", mx <= 1.5 * MIB)
            row("4", "  idle USS / PSS (MiB): workers+supervisor; nginx; redis", up_fast, "", "",
                "%.2f / %.2f; %.2f / %.2f; %.2f / %.2f" % (
                    (idle["workers"]["uss"] + idle["supervisor"]["uss"]) / MIB,
                    (idle["workers"]["pss"] + idle["supervisor"]["pss"]) / MIB,
                    idle["nginx"]["uss"] / MIB, idle["nginx"]["pss"] / MIB,
                    idle["redis"]["uss"] / MIB, idle["redis"]["pss"] / MIB))
            g = aft["workers"]["uss"] / max(1, idle["workers"]["uss"]) - 1
            row("4", "workers USS after %d requests (MiB)" % M["requests_done"],
                up_fast, "", "", "%.2f -> %.2f (%+.1f%%); nginx %.2f -> %.2f; redis %.2f -> %.2f"
                % (idle["workers"]["uss"] / MIB, aft["workers"]["uss"] / MIB, 100 * g,
                   idle["nginx"]["uss"] / MIB, aft["nginx"]["uss"] / MIB,
                   idle["redis"]["uss"] / MIB, aft["redis"]["uss"] / MIB),
                "<= +10%", g <= 0.10)
            bg = M["big"]
            flat = bg["ok"] and bg["workers_max_growth_during"] <= 256 * 1024 and \
                bg["workers_max_growth_after"] <= 256 * 1024
            row("4", "100 MiB stream: worker USS growth during / after (KiB)",
                "fast nginx (static SSE file)", "", "",
                "%+.0f / %+.0f (%s, %.1f s, %d samples); nginx %+.0f / %+.0f" % (
                    bg["workers_max_growth_during"] / 1024, bg["workers_max_growth_after"] / 1024,
                    "complete" if bg["ok"] else "INCOMPLETE", bg["secs"], bg["samples"],
                    bg["nginx_max_growth_during"] / 1024, bg["nginx_max_growth_after"] / 1024),
                "flat (<= 256 KiB)", flat)
        RT = R.get("redis_round_trips")
        if RT:
            w = RT["warm"]
            row("5", "Redis round trips per request (MONITOR, %d requests)" % w["requests"],
                up_fast, "", "", "%.4f (%s)" % (w["per_request"], ", ".join(
                    "%s %.4f" % kv for kv in w["per_command"].items())),
                "exactly 1", abs(w["per_request"] - 1.0) < 1e-9 and w["bad"] == 0)
            row("5", "  commands executed per request, incl. inside the script "
                "(INFO commandstats); Redis time in the script", up_fast, "", "",
                "%.2f (%s); %.1f us" % (w["executed_per_request"], ", ".join(
                    "%s %.2f" % kv for kv in sorted(w["executed"].items())),
                    w["script_usec_per_request"]))
            c = RT["cold"]
            row("5", "  round trips, first 50 requests after a start (%d workers)"
                % c["workers"], up_fast, "", "", "%.3f (%s)" % (c["per_request"], ", ".join(
                    "%s %.3f" % kv for kv in c["per_command"].items())))
        RB = R.get("redis_bench")
        if RB:
            for name, v in RB["variants"].items():
                row("6", "slot reservations/s, one Redis, EVALSHA reserve: %s" % name, "-", "",
                    "", "%.0f (p50 %.3f ms)" % (v["rps"], v["p50_ms"]))
        CC = R.get("concurrency")
        if CC:
            shape = "--processes %d%s" % (CC["processes"], " --threads %d" % CC["threads"]
                                          if CC["threads"] else "")
            row("7", "%d concurrent 10 s streams (%s): complete; all done after; first event "
                "p50 / max" % (CC["streams"], shape), up_mock, "", "",
                "%d/%d (%s); %.1f s; %.0f / %.0f ms" % (
                    CC["complete"], CC["streams"], ", ".join(
                        "%s: %d" % kv for kv in sorted(CC["statuses"].items())), CC["secs"],
                    CC["ttfe_p50_ms"], CC["ttfe_max_ms"]), "all complete",
                CC["complete"] == CC["streams"])
            per = CC["per_stream_uss"]
            # Each thread opens its upstream connection when it starts, so the
            # idle figure already holds most of a stream's cost: judge the
            # peak per stream (the "500 streams in at most 75 MiB").
            total = CC["per_stream_total_uss"]
            row("7", "  workers USS idle -> peak (MiB); (peak - idle) / %d; peak / %d (MiB)"
                % (CC["streams"], CC["streams"]), up_mock, "", "",
                "%.1f -> %.1f; %.3f (PSS %.3f); %.3f" % (
                    CC["idle_workers_uss"] / MIB, CC["peak_workers_uss"] / MIB, per / MIB,
                    CC["per_stream_pss"] / MIB, total / MIB),
                "peak <= 75 MiB (500 x 0.1 + base)",
                CC["peak_workers_uss"] <= 75 * MIB if CC["threads"] else False)
            row("7", "  nginx USS idle -> peak (MiB)", up_mock, "", "", "%.1f -> %.1f" % (
                CC["idle_nginx_uss"] / MIB, CC["peak_nginx_uss"] / MIB))
        SP = R.get("spacing")
        if SP:
            row("8", "spacing, %d requests at %d ms (8 clients, 4 workers): arrival gaps at "
                "the mock min / p50 (ms); gaps more than 2 ms short" % (SP["n"], SP["interval_ms"]),
                up_mock, "", "", "%.2f / %.2f; %d of %d" % (
                    SP["arrival_min_ms"], SP["arrival_p50_ms"], SP["arrival_early_2ms"],
                    SP["gaps"]), "none > 2 ms early", SP["arrival_early_2ms"] == 0)
            row("8", "  send gaps at the workers min / p50 (ms); more than 2 ms short; wake-up "
                "after the slot p50 / max (ms)", up_mock, "", "", "%.2f / %.2f; %d; %.3f / %.3f"
                % (SP["send_min_ms"], SP["send_p50_ms"], SP["send_early_2ms"],
                   SP["late_p50_ms"], SP["late_max_ms"]))
        self.rows = rows

        head = ("| # | Measure | Upstream | A direct (HTTPS) | B nginx proxy_pass "
                "| C cerebras-proxy | Target | Result |")
        lines = [head, "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            lines.append("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
                r["no"], r["measure"], r["upstream"], r["A"], r["B"], r["C"], r["target"],
                r["result"]))
        shape = ("C used --processes %d (best req/s of the sweep %s at -c 32)"
                 % (best, SWEEP))
        if self.threads_ok:
            shape += ("; 'C threaded' = --processes 2 --threads %d (as many threads as C "
                      "has processes)" % max(2, best // 2))
        m = R["meta"]
        notes = [
            "%s, commit %s%s, %s, %d CPUs (load average %s at the start, %s at the end); "
            "%s; %s; %s. The bench took %.0f s." % (
                m["date"], m["commit"][:12], " (+ uncommitted changes)" if m["dirty"] else "",
                m["uname"], m["nproc"], m["loadavg_at_start"], m.get("loadavg_at_end", "?"),
                m["nginx"], m["redis"].split(" sha=")[0], m["curl"].split(" OpenSSL")[0],
                elapsed),
            "Upstreams: *fast nginx* = a private nginx (1 worker process) on 127.0.0.1 over "
            "HTTPS with the test certificate, answering `return 200` with a fixed "
            "chat.completion JSON (%d bytes); *Python mock* = tests/mock_upstream.py (HTTPS; "
            "stamps each SSE event with `mock_sent`, its time.monotonic())." % len(FAST_REPLY),
            "A = the upstream directly over HTTPS (the client does TLS); B = nginx proxy_pass "
            "(proxy_buffering off, proxy_request_buffering off, upstream keepalive 32, "
            "proxy_http_version 1.1, proxy_ssl_session_reuse on, upstream certificate "
            "verified); C = nginx fastcgi_pass (the shipped nginx.conf.example) -> workers -> "
            "Redis (unix socket) + upstream. B and C are plain HTTP on 127.0.0.1; both nginx "
            "run worker_processes auto, access_log off, keepalive_requests 100000.",
            "Workers: RATE_LIMIT_INTERVAL_MS=0 (rotation still through Redis: one EVALSHA per "
            "request) except in the paced row, 3 keys, LOG_REQUESTS=1 (the default: one log "
            "line per request). " + shape + ".",
            "Latency: one keep-alive Python client (http.client-like, one sendall per request), "
            "%d timed requests per path after %d warm-up, the paths interleaved in %d rounds. "
            "Throughput: wrk -t2, %d s per run, POST of a %d-byte JSON body (Lua script). "
            "CPU = utime+stime from /proc/PID/stat (all threads) of nginx master+workers, the "
            "supervisor and all worker processes, and redis-server, over the run, divided by "
            "the requests completed; 'upstream' (fast nginx) is shown for context and not in "
            "the total; wrk itself used about %s us per request on the same 2 CPUs."
            % (LAT_N, LAT_WARM, LAT_ROUNDS, TPUT_SECS, len(CHAT_BODY),
               "/".join("%.0f" % r["C"]["cpu_us_per_req"]["client"]
                        for r in R.get("throughput", {}).values()) or "?"),
            "Streaming: %d sequential streams per path (new connection each, 50 events 20 ms "
            "apart); lag = the client's time.monotonic() after the recv() that completed the "
            "event - the mock's stamp; coalesced = content events completed by the same recv() "
            "as an earlier one; first event = from the request's sendall." % STREAMS,
            "Memory: USS = Private_Clean+Private_Dirty and PSS from /proc/PID/smaps_rollup. "
            "100 MiB stream: a static text/event-stream file served by the fast nginx (POST "
            "with X-Request-Id: bench-big), read by the client at ~50 MB/s (slower than the "
            "path, so back-pressure is exercised), worker and nginx memory sampled every "
            "200 ms.",
            "Redis round trips: commands the workers sent, counted with MONITOR (commands "
            "run by the Lua script show as [lua] and are not round trips).",
            "Redis bench: the reserve script extracted from shared/sched.c (sha1 %s, %s), "
            "SCRIPT LOAD, then redis-benchmark -n %d -c 50 -P 1 EVALSHA sha 3 {bench}:rr "
            "{bench}:slot {bench}:keys 3 <interval us> 0 0 30000000 (ARGV as sched_reserve: "
            "nkeys, interval, key scope, floor, max wait)." % (
                R.get("redis_bench", {}).get("sha", "?")[:12],
                "the one the workers use (SCRIPT EXISTS)"
                if R.get("redis_bench", {}).get("same_as_workers")
                else "NOT the one in Redis after the workers ran", REDIS_BENCH_N),
            "B's upstream keepalive pool keeps 32 idle connections per nginx worker: at "
            "-c 256 the others are closed after each request, so B re-connects (TLS, session "
            "reused) to its upstream many times (see 'TCP connections opened'), which costs it "
            "CPU there; C's workers keep one upstream connection each.",
            "This machine is a 2-CPU VM shared with other work: every wake-up of an idle "
            "process costs a hypervisor round trip, so paths with more process hops pay more; "
            "absolute numbers are noisy.",
        ]
        if not self.threads_ok:
            notes.append("The binary has no --threads: the concurrency run used --processes %d "
                         "(one process per stream), so its per-stream memory is that of process "
                         "mode." % CONC)
        notes += self.notes
        md = "# cerebras-proxy benchmark\n\n" + "\n".join(lines) + "\n\n" + \
            "\n".join("- " + n for n in notes) + "\n"
        return md


def meta(binary):
    def first(argv):
        try:
            r = run(argv)
            return (r.stdout + r.stderr).strip().splitlines()[0]
        except (OSError, IndexError):
            return "?"

    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    rev = run(["git", "-C", ROOT, "rev-parse", "HEAD"]).stdout.strip() or "?"
    dirty = bool(run(["git", "-C", ROOT, "status", "--porcelain",
                      "--untracked-files=no"]).stdout.strip())
    return {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "commit": rev, "dirty": dirty,
            "uname": " ".join(platform.uname()[:3] + (platform.uname().machine,)),
            "nproc": os.cpu_count(), "loadavg_at_start": load,
            "nginx": first(["nginx", "-v"]), "redis": first(["redis-server", "--version"]),
            "curl": first(["curl", "--version"]), "wrk": first(["wrk", "-v"]),
            "proxy": first([binary, "--version"]), "python": sys.version.split()[0]}


def main():
    if len(sys.argv) != 3:
        print("usage: bench.py BINARY OUTDIR", file=sys.stderr)
        return 2
    binary, outdir = sys.argv[1], sys.argv[2]
    for tool in ("wrk", "nginx", "redis-server", "redis-cli", "redis-benchmark"):
        if shutil.which(tool) is None:
            print("bench: %s is not installed (make test-deps)" % tool, file=sys.stderr)
            return 1
    os.makedirs(outdir, exist_ok=True)
    b = Bench(binary, outdir)
    b.R["meta"] = meta(b.binary)

    def on_signal(sig, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    rc = 0
    try:
        b.run_all()
    except KeyboardInterrupt:
        progress("interrupted; stopping")
        rc = 130
    except Exception as e:    # report what we have, then fail
        import traceback
        traceback.print_exc()
        b.notes.append("The bench FAILED: %r; results are partial." % (e,))
        rc = 1
    finally:
        b.st.stop()
    elapsed = time.monotonic() - T0
    b.R["elapsed_s"] = round(elapsed, 1)
    with open("/proc/loadavg") as f:
        b.R["meta"]["loadavg_at_end"] = " ".join(f.read().split()[:3])
    try:
        md = b.report(elapsed)
    except Exception:
        import traceback
        traceback.print_exc()
        md = "# cerebras-proxy benchmark\n\nreport failed; see results.json\n"
        rc = rc or 1
    b.R["rows"] = b.rows
    b.R["notes"] = b.notes
    with open(os.path.join(outdir, "results.json"), "w") as f:
        json.dump(b.R, f, indent=1, default=str)
    with open(os.path.join(outdir, "results.md"), "w") as f:
        f.write(md)
    print()
    print(md)
    progress("wrote %s/results.md and results.json" % outdir)
    return rc


if __name__ == "__main__":
    sys.exit(main())
