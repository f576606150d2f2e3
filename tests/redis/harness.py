"""A throw-away redis-server on a unix socket, a tiny RESP client, and the
scheduler's Lua scripts (shared/lua/*.lua) loaded into it as the C code
does (SCRIPT LOAD, then EVALSHA).

Standard library only. Every server started here is stopped by its PID:
by stop(), and otherwise at interpreter exit (atexit).
"""

import atexit
import glob
import hashlib
import os
import shutil
import socket
import subprocess
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
# CPROXY_LUA_DIR: other copies of the scripts (e.g. to check that a
# deliberately broken script fails the tests).
LUA_DIR = os.environ.get("CPROXY_LUA_DIR") or os.path.join(ROOT, "shared", "lua")

_RUNNING = []  # servers not yet stopped, for the atexit safety net


class RedisError(Exception):
    """An error reply (the text after '-')."""


class Client:
    """One connection; client(*args) sends a command, returns its reply:
    str for simple and bulk strings, int, list, None for nil."""

    def __init__(self, path, timeout=5.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.rfile = self.sock.makefile("rb")

    def close(self):
        self.rfile.close()
        self.sock.close()

    def send(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            if not isinstance(a, bytes):
                a = str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(out))

    def read(self):
        line = self.rfile.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError("connection to redis closed")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RedisError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            return self.rfile.read(n + 2)[:-2].decode()
        if kind == b"*":
            n = int(rest)
            if n < 0:
                return None
            return [self.read() for _ in range(n)]
        raise RedisError("unexpected reply line %r" % line)

    def __call__(self, *args):
        self.send(*args)
        return self.read()

    def time_us(self):
        sec, usec = self("TIME")
        return int(sec) * 1000000 + int(usec)


class RedisServer:
    """redis-server --port 0 on a unix socket in a mkdtemp() directory,
    no persistence. env: extra environment (e.g. libfaketime's)."""

    def __init__(self, env=None):
        self.env = env or {}
        self.dir = None
        self.proc = None
        self.path = None

    def start(self, timeout=5.0):
        self.dir = tempfile.mkdtemp(prefix="cproxy-redis-scripts-")
        self.path = os.path.join(self.dir, "redis.sock")
        self.log = os.path.join(self.dir, "redis.log")
        env = dict(os.environ)
        env.update(self.env)
        cmd = ["redis-server", "--port", "0", "--unixsocket", self.path,
               "--unixsocketperm", "700", "--save", "", "--appendonly", "no",
               "--dir", self.dir, "--logfile", self.log, "--daemonize", "no"]
        with open(self.log + ".stderr", "wb") as err:
            self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=err)
        _RUNNING.append(self)
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("redis-server exited (%s): %s"
                                   % (self.proc.returncode, self._log_tail()))
            if os.path.exists(self.path):
                try:
                    c = Client(self.path, timeout=1.0)
                    try:
                        if c("PING") == "PONG":
                            return
                    finally:
                        c.close()
                except (OSError, RedisError):
                    pass
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server not ready after %.0f s: %s"
                                   % (timeout, self._log_tail()))
            time.sleep(0.01)

    def _log_tail(self):
        text = ""
        for p in (self.log, self.log + ".stderr"):
            try:
                with open(p, errors="replace") as f:
                    text += f.read()[-600:]
            except OSError:
                pass
        return text.strip() or "(no log)"

    def client(self):
        return Client(self.path)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
        if self in _RUNNING:
            _RUNNING.remove(self)


@atexit.register
def _stop_all():
    for s in list(_RUNNING):
        s.stop()


def faketime_env(offset):
    """The environment that runs a program under libfaketime with a fixed
    offset (e.g. "+2d"), or None when libfaketime is not installed.

    Debian's redis-server allocates with the shared libjemalloc, which
    deadlocks libfaketime's initialisation (wolfcw/libfaketime#130: both
    call each other through calloc/clock_gettime). Preloading glibc's
    libc_malloc_debug first routes malloc to glibc, which breaks the cycle.
    """
    pats = [os.environ.get("FAKETIME_LIB", ""),
            "/usr/lib/*/faketime/libfaketime.so.1",
            "/usr/lib/faketime/libfaketime.so.1",
            "/usr/lib64/faketime/libfaketime.so.1",
            "/usr/local/lib/faketime/libfaketime.so.1"]
    lib = next((p for pat in pats if pat for p in sorted(glob.glob(pat))), None)
    if lib is None:
        return None
    pre = [lib]
    dbg = sorted(glob.glob("/usr/lib/*/libc_malloc_debug.so.0") +
                 glob.glob("/lib/*/libc_malloc_debug.so.0") +
                 glob.glob("/usr/lib64/libc_malloc_debug.so.0"))
    if dbg:
        pre.insert(0, dbg[0])
    return {"LD_PRELOAD": " ".join(pre), "FAKETIME": offset}


def limits_arg(limits):
    """Six limits in budget order (a sequence, or a "a,b,c,d,e,f" string),
    as reserve.lua and settle.lua take them ("0": none)."""
    if isinstance(limits, str):
        return limits
    limits = list(limits)
    if len(limits) != 6:
        raise ValueError("six limits, not %r" % (limits,))
    return ",".join("%d" % v for v in limits)


def headers_arg(headers):
    """The limits an answer announced, as settle.lua's ARGV[10] takes them:
    None (no limits on the answer) gives "-"; a dict {limit index: (limit,
    remaining)} gives twelve numbers, "-1" where not announced; a string
    is passed as it is."""
    if headers is None:
        return "-"
    if isinstance(headers, str):
        return headers
    out = []
    for l in range(6):
        k, rem = headers.get(l, (-1, -1))
        out += ["%d" % k, "%d" % rem]
    return ",".join(out)


class Scripts:
    """The three scripts, loaded with SCRIPT LOAD into the server behind
    client r, called by EVALSHA with the key names the C code builds from
    its prefix (shared/sched_redis.c): <prefix>:rr, :slot, :keys, :kslot,
    :day, :bx, and one budget hash per organisation and model,
    <prefix>:b:<org fingerprint>:<model>."""

    NAMES = ("reserve", "rest", "settle")

    def __init__(self, r, prefix):
        self.r = r
        self.prefix = prefix
        self.rr = prefix + ":rr"
        self.slot = prefix + ":slot"
        self.keys = prefix + ":keys"
        self.kslot = prefix + ":kslot"
        self.day = prefix + ":day"
        self.bx = prefix + ":bx"
        self.sha = {}
        for name in self.NAMES:
            with open(os.path.join(LUA_DIR, name + ".lua"), "rb") as f:
                text = f.read()
            sha = r("SCRIPT", "LOAD", text)
            if sha != hashlib.sha1(text).hexdigest():
                raise RuntimeError("SCRIPT LOAD %s.lua gave %s" % (name, sha))
            self.sha[name] = sha

    def budget(self, org=0, model="m"):
        """The budget hash of organisation org (its index) for model."""
        return "%s:b:%08x:%s" % (self.prefix, 0xf00 + org, model or "-")

    def client_bucket(self, client):
        """The rate bucket hash of client (its id)."""
        return "%s:c:%s" % (self.prefix, client)

    def client_seats(self, client):
        """The sorted set of client's seats."""
        return "%s:cf:%s" % (self.prefix, client)

    def reserve(self, nkeys, interval, perkey=False, floor=0, max_wait=10**13,
                orgs=None, tokens=0, limits=(0,) * 6, probe_ttl=30 * 10**6,
                poll=50000, model="m", client=None, rate=0, window=0,
                concurrent=0, seat="", attempt=0, lease=900 * 10**6):
        """reserve.lua: [key, wait, slot, why, probe, cq, ct, rt, first] or
        [-1|-2|-3|-4, wait, at, why] (times in us). orgs: each key's
        organisation (default: all 0); one budget hash is passed per
        organisation, 0 .. max(orgs). client: its id (None: no client
        limits, the call as before them), with its limits (rate requests
        per window us, concurrent requests in flight), the request's seat,
        its attempt and the seats' lease (us)."""
        if orgs is None:
            orgs = [0] * nkeys
        norgs = max(orgs) + 1
        keys = [self.rr, self.slot, self.keys, self.kslot]
        keys += [self.budget(o, model) for o in range(norgs)]
        args = [nkeys, interval, "1" if perkey else "0", floor,
                max_wait, ",".join("%d" % o for o in orgs), tokens,
                limits_arg(limits), probe_ttl, poll]
        if client is not None:
            keys += [self.client_bucket(client), self.client_seats(client)]
            args += [rate, window, concurrent, seat, attempt, lease]
        return self.r("EVALSHA", self.sha["reserve"], len(keys), *keys, *args)

    def client_done(self, client, seat):
        """What sched_client_done sends: ZREM of the seat."""
        return self.r("ZREM", self.client_seats(client), seat)

    def rest(self, key, duration, disabled=False):
        """rest.lua: the rest's end (us, Redis time). disabled: a
        disablement (a 401/403), recorded apart (d<i>)."""
        return self.r("EVALSHA", self.sha["rest"], 1, self.keys, key, duration,
                      "1" if disabled else "0")

    def settle(self, key, slot, mode, tokens=0, limits=(0,) * 6, cq=0, ct=0,
               rt=0, status=0, headers=None, used=-1, age=0, probe=False,
               rest=0, org=0, model="m", first=False):
        """settle.lua on the budget hash of (org, model): its answer (a
        limit index 0..5, 8 for a rest, -1). headers: see headers_arg.
        first: none of the budget's requests was out when it was reserved
        (reserve.lua's reply)."""
        return self.r("EVALSHA", self.sha["settle"], 6,
                      self.budget(org, model), self.slot, self.kslot,
                      self.keys, self.day, self.bx, key, slot, mode, tokens, limits_arg(limits), cq, ct, rt,
                      status, headers_arg(headers), used, age,
                      "1" if probe else "0", rest, "1" if first else "0")
