"""What the proxy's integration test modules share (test_http,
test_scheduling, test_failures, test_lifecycle): real redis-server, real
nginx with the shipped config (or Apache with mod_fcgid: PROXY_SERVER),
cerebras-proxy worker processes, and the HTTPS mock upstream.

Each module takes setUpModule and tearDownModule from here: a stack of its
own (deploy/stack.py), started by start_stack() and stopped by
stop_stack(), reached through ST and MOCK; each test class restarts the
workers with the environment it needs. Before the stack
stops, stop_stack() checks that no API key leaked (check_no_secrets): a leak
makes the module's teardown fail, which unittest reports as an error.
"""

import ast
import concurrent.futures
import glob
import os
import re
import subprocess
import sys
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "deploy"))
sys.path.insert(0, HERE)

import stack  # noqa: E402
from client import Mock, request  # noqa: E402

BINARY = os.environ.get("CEREBRAS_PROXY_BIN", os.path.join(ROOT, "build", "cerebras-proxy"))
# The web server in front: nginx (the default) or apache (mod_fcgid).
SERVER = os.environ.get("PROXY_SERVER", "nginx")
APACHE = SERVER == "apache"
KEYS = ["sk-test-ALPHA-0001", "sk-test-BRAVO-0002", "sk-test-CHARLIE-0003"]
CLIENT_SECRET = "client-own-token-XYZZY"
PREFIX = "/cerebras"
REDIS_PREFIX = "{cerebras-proxy}"
# Slot spacing tolerances. The slots are exact in Redis time (asserted to
# the microsecond). A worker wakes for its slot typically 0.1-0.3 ms late
# (the median send gap is asserted within 1 ms of the interval), but on this
# 2-core machine, shared by the client threads, nginx or Apache, the
# workers, Redis and the mock, a wake-up is now and then 10-20 ms late,
# which shortens the next gap by as much; and each worker translates the
# slot to its own clock by its best bracket of a Redis reply, which may be a
# few ms wide on a busy machine. The worker logs both for each request
# (late_ms, clock_ms), and assert_sends_spaced checks a short gap against
# them. The mock stamps each arrival in a Python thread after TLS and
# parsing, which adds up to ~10 ms more (ARRIVAL_JITTER_MS). Precise figures
# are the benchmark's business, not the tests'.
ARRIVAL_JITTER_MS = 15.0

_stack = None      # the running module's stack (start_stack)
_mock = None       # its mock upstream's control endpoints
RESPONSES = []     # every response the module's tests saw, checked for leaked keys


class _Running:
    """Stands for what start_stack() made last: the test modules bind ST
    and MOCK once, at import, and always reach the running module's."""

    def __init__(self, name):
        object.__setattr__(self, "_name", name)

    def __getattr__(self, attr):
        return getattr(globals()[self._name], attr)

    def __setattr__(self, attr, value):
        setattr(globals()[self._name], attr, value)


ST = _Running("_stack")
MOCK = _Running("_mock")


def start_stack():
    """Starts Redis, the mock, the web server (also under PREFIX) and four
    workers with KEYS; returns (stack, mock)."""
    global _stack, _mock
    RESPONSES.clear()
    st = stack.Stack(BINARY, server=SERVER)
    try:
        st.start_redis()
        st.start_mock()
        st.worker_env = {
            "CEREBRAS_API_KEYS": ",".join(KEYS),
            "CEREBRAS_API_BASE": st.mock_base(),
            "CEREBRAS_CA_FILE": st.ca_file(),
            "REDIS_URL": st.redis_url(),
        }
        st.start_server(prefix=PREFIX)
        st.start_workers(4)
    except Exception:
        st.stop()
        raise
    _stack = st
    _mock = Mock(st.mock_port, st.ca_file())
    return _stack, _mock


def stop_stack():
    """check_no_secrets(), then stops the stack, whatever the check found."""
    global _stack, _mock
    if _stack is None:
        return
    try:
        check_no_secrets()
    finally:
        _stack.stop()
        _stack = _mock = None


def setUpModule():
    """A test module's fixture: `from harness import setUpModule,
    tearDownModule` gives it a stack of its own."""
    start_stack()


def tearDownModule():
    stop_stack()


# What each Redis type's value is read with, for the secrets check.
_REDIS_READ = {"string": ["GET"], "hash": ["HGETALL"], "list": ["LRANGE", 0, -1],
               "set": ["SMEMBERS"], "zset": ["ZRANGE", 0, -1, "WITHSCORES"],
               "stream": ["XRANGE", "-", "+"]}


def redis_names():
    """[(name, quoted)]: every Redis key's name and the same quoted as
    redis-cli quotes it ("a\\r\\nb"), which any name survives (a client's
    model, part of budget key names, may hold spaces or line breaks)."""
    out = []
    for q in ST.redis_cli("--no-raw", "--scan").splitlines():
        out.append((ast.literal_eval(q) if q.startswith('"') else q, q))
    return out


def redis_value(quoted):
    """The value of the Redis key named by quoted (redis_names) as
    redis-cli prints it (every member, field and score), whatever its
    type; "" if it is gone."""
    kind = ST.redis_cli("--quoted-input", "TYPE", quoted)
    cmd = _REDIS_READ.get(kind)
    if cmd is None:
        return "" if kind == "none" else "(unknown type %s)" % kind
    return ST.redis_cli("--quoted-input", cmd[0], quoted, *[str(a) for a in cmd[1:]])


def check_no_secrets():
    """No API key in any response the module's tests saw, in any log of the
    stack's directory but the mock's (the upstream is the one party that
    must see keys), in the command line of any process of the stack, in
    any Redis key name or value, or in what `--check-config` prints for
    the stack's workers; every Redis key name starts with the prefix.
    Raises AssertionError naming every place a key was found."""
    problems = []
    texts = [("response #%d" % i, t) for i, t in enumerate(RESPONSES)]
    if not RESPONSES:
        problems.append("the tests saw no response: nothing to check")
    for name in sorted(glob.glob(os.path.join(ST.dir, "*.log"))):
        if os.path.basename(name) == "mock.log":
            continue
        with open(name, "rb") as f:
            texts.append((os.path.basename(name), f.read().decode("utf-8", "replace")))
    # Under Apache, mod_fcgid starts workers on demand: one request makes
    # sure there is one to look at (not counted as one of the tests').
    texts.append(("the response to GET /", request(ST.port, "GET", "/").text()))
    cmdlines = []
    for name, p in ST.procs.items():
        for pid in [p.pid] + stack.descendants(p.pid):
            try:
                with open("/proc/%d/cmdline" % pid, "rb") as f:
                    cmd = f.read().decode("utf-8", "replace")
            except OSError:
                continue        # gone meanwhile
            cmdlines.append(cmd)
            texts.append(("the command line of pid %d (%s)" % (pid, name), cmd))
    if not any(BINARY in cmd for cmd in cmdlines):
        problems.append("no worker process running %s: no command line checked" % BINARY)
    if ST.redis_cli("PING") != "PONG":
        problems.append("Redis does not answer: its key names were not checked")
    for n, quoted in redis_names():
        if not n.startswith(REDIS_PREFIX + ":"):
            problems.append("Redis key %r does not start with %s:" % (n, REDIS_PREFIX))
        texts.append(("the Redis key name %r" % n, n))
        texts.append(("the value of Redis key %r" % n, redis_value(quoted)))
    # The effective configuration of the workers, as an operator sees it.
    p = subprocess.run([BINARY, "--check-config"], env=dict(os.environ, **ST.worker_env),
                       capture_output=True, text=True, timeout=10)
    if "CEREBRAS_API_KEYS=" not in p.stdout:
        problems.append("--check-config printed no CEREBRAS_API_KEYS line (exit %d): %s"
                        % (p.returncode, p.stderr.strip()[:200]))
    texts.append(("the output of --check-config", p.stdout + p.stderr))
    for where, text in texts:
        for i, k in enumerate(KEYS):
            at = text.find(k)
            if at >= 0:
                problems.append("API key #%d in %s: ...%r..." % (
                    i, where, text[max(0, at - 60):at + len(k) + 20]))
    if problems:
        raise AssertionError("secrets check of the stack in %s:\n  %s"
                             % (ST.dir, "\n  ".join(problems)))


def chat_body(**kw):
    body = {"model": "llama3.1-8b", "messages": [{"role": "user", "content": "Hello proxy"}]}
    body.update(kw)
    return body


def log_fields(id_prefix, field):
    """{request id: float(field)} from the workers' chat log lines of the
    requests whose id starts with id_prefix."""
    out = {}
    for line in ST.log_text().splitlines():
        m = re.search(r"chat id=(%s\S*) .*\b%s=([-\d.]+)" % (re.escape(id_prefix), field), line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def slots_from_log(id_prefix):
    """{request id: slot (Redis time, us)} from the workers' request log."""
    return {rid: int(v) for rid, v in log_fields(id_prefix, "slot").items()}


def sends_from_log(id_prefix):
    """The requests whose id starts with id_prefix as the workers logged
    them, in slot order: dicts with key (index), slot (Redis time, us),
    sent (CLOCK_MONOTONIC, s), late (ms after its deadline, the slot on the
    worker's clock, when its wait ended) and clock (ms: how far that
    deadline may be from the slot)."""
    out = {}
    for line in ST.log_text().splitlines():
        m = re.search(r"chat id=(%s\S*) key=#(\d+)\(.* slot=(\d+) .*late_ms=([-\d.]+) "
                      r"clock_ms=([\d.]+) sent_mono=([\d.]+) " % re.escape(id_prefix), line)
        if m:
            out[m.group(1)] = {"id": m.group(1), "key": int(m.group(2)),
                               "slot": int(m.group(3)), "late": float(m.group(4)),
                               "clock": float(m.group(5)), "sent": float(m.group(6))}
    return sorted(out.values(), key=lambda x: x["slot"])


def log_lines(id_prefix):
    """{request id: its last chat log line} of the requests whose id starts
    with id_prefix (a retried request logs each attempt: the last is its
    outcome)."""
    out = {}
    for line in ST.log_text().splitlines():
        m = re.search(r"chat id=(%s\S*) " % re.escape(id_prefix), line)
        if m:
            out[m.group(1)] = line
    return out


def wait_log_lines(id_prefix, n, timeout=10):
    """log_lines(id_prefix) once it holds n requests (a worker logs a
    request after its response has ended, so the client may be faster)."""
    return stack.wait_for(lambda: (lambda d: d if len(d) >= n else None)(log_lines(id_prefix)),
                          timeout, "%d log lines of %s*" % (n, id_prefix), interval=0.05)


def log_word(line, field):
    """The value of field=... in a log line (a string), or None."""
    m = re.search(r"\b%s=(\S+)" % re.escape(field), line)
    return m.group(1) if m else None


def mock_limits(orgs):
    """Turns on the mock's emulation of Cerebras' limits (tests/mock_upstream.py,
    POST /__mock/limits) with orgs {org: {"keys": [...], "limits": {...},
    "models": {...}}}; every bucket starts full. {} turns it off."""
    return MOCK._call("POST", "/__mock/limits", {"orgs": orgs})


def mock_limits_state():
    """GET /__mock/limits: admitted / refused counts per org and model."""
    return MOCK._call("GET", "/__mock/limits")


def mock_refusals(state=None):
    """{(org, model): limit refusals} of the mock's limits emulation."""
    state = state or mock_limits_state()
    return {(org, m): sum(v["refused"].values())
            for org, o in state["orgs"].items() for m, v in o["models"].items()}


def finished_records(n, timeout=15):
    """The mock's records once there are at least n and every one has ended."""
    return stack.wait_for(
        lambda: (lambda r: r if len(r) >= n and all(x["t_done"] is not None for x in r)
                 else None)(MOCK.requests()),
        timeout, "%d finished requests at the mock" % n, interval=0.05)


class ProxyTest(unittest.TestCase):
    workers = 4
    env = {"RATE_LIMIT_INTERVAL_MS": "0"}
    # Set by a class whose tests stop or restart the workers with other
    # settings: its workers are started again as the class ends, so the
    # next class (and the module's secrets check) finds them as declared.
    restores_workers = False

    @classmethod
    def setUpClass(cls):
        ST.stop_workers()
        ST.start_workers(cls.workers, cls.env)

    @classmethod
    def tearDownClass(cls):
        if cls.restores_workers:
            ST.stop_workers()
            ST.start_workers(cls.workers, cls.env)

    def setUp(self):
        MOCK.reset()
        # Each test starts with every key healthy and an empty timeline.
        # Rotation starts at key #0.
        ST.redis_cli("DEL", REDIS_PREFIX + ":keys", REDIS_PREFIX + ":slot",
                     REDIS_PREFIX + ":rr")

    def req(self, method="GET", path="/", body=None, headers=None, port=None, **kw):
        r = request(port or ST.port, method, path, body, headers, **kw)
        RESPONSES.append(r.text())
        return r

    def chat(self, body=None, headers=None, path="/v1/chat/completions", **kw):
        return self.req("POST", path, body if body is not None else chat_body(), headers, **kw)

    @staticmethod
    def once_all_streaming(n, action):
        """An on_data hook for n concurrent streams: calls action() once
        each of n responses has had its first event; the hook's .seen
        holds those seen."""
        lock = threading.Lock()
        seen = set()

        def on_data(resp):
            if b"mock_index" in resp.body:
                with lock:
                    if id(resp) not in seen:
                        seen.add(id(resp))
                        if len(seen) == n:
                            action()
            return False
        on_data.seen = seen
        return on_data

    @staticmethod
    def sigterm_on_first_event(p, marks):
        """An on_data hook: SIGTERM to process p (the supervisor) once the
        first event has arrived; appends that time to marks."""
        def on_data(resp):
            if not marks and b"mock_index" in resp.body:
                marks.append(time.monotonic())
                p.terminate()
            return False
        return on_data

    def restart_workers(self, env, n=None):
        ST.stop_workers()
        ST.start_workers(n or self.workers, env)

    def assertCors(self, r):
        self.assertEqual(r.header_all("Access-Control-Allow-Origin"), ["*"], r.text())

    def assertOpenAIError(self, r, status, code=None):
        self.assertEqual(r.status, status, r.text())
        self.assertCors(r)
        self.assertTrue(r.header("Content-Type", "").startswith("application/json"), r.text())
        err = r.json()["error"]
        self.assertIsInstance(err["message"], str)
        self.assertTrue(err["message"])
        self.assertIsInstance(err["type"], str)
        self.assertIn("code", err)
        if code is not None:
            self.assertEqual(err["code"], code)
        return err

    def wait_records(self, n, timeout=15):
        return stack.wait_for(lambda: (lambda r: r if len(r) >= n else None)(MOCK.requests()),
                              timeout, "%d requests at the mock" % n, interval=0.05)

    def assert_sends_spaced(self, sends, interval_ms):
        """sends (sends_from_log, of one timeline) were reserved at least
        interval_ms apart in Redis time, exactly, and sent so: no worker
        sent before its deadline, and a gap shorter than the interval is
        explained by what the workers logged: the earlier send's lateness (a
        wake-up delayed on a busy machine) and how far each deadline may be
        from its slot (their clock estimates). The median gap is within 1 ms
        of the interval. Returns the send gaps (ms)."""
        slots = [x["slot"] for x in sends]
        self.assertGreaterEqual(min(b - a for a, b in zip(slots, slots[1:])),
                                interval_ms * 1000, slots)
        self.assertGreaterEqual(min(x["late"] for x in sends), 0, sends)
        gaps = [(b["sent"] - a["sent"]) * 1000 for a, b in zip(sends, sends[1:])]
        for (a, b), gap in zip(zip(sends, sends[1:]), gaps):
            # 0.01 ms: the log's rounding.
            self.assertGreaterEqual(gap + a["late"] + a["clock"] + b["clock"] + 0.01,
                                    (b["slot"] - a["slot"]) / 1000, (a, b, gaps))
        self.assertAlmostEqual(sorted(gaps)[len(gaps) // 2], interval_ms, delta=1.0)
        print("send gaps min %.1f ms (latest wake-up %.1f ms, widest clock estimate %.1f ms)"
              % (min(gaps), max(x["late"] for x in sends), max(x["clock"] for x in sends)),
              file=sys.stderr, end=" ")
        return gaps

    def assert_spaced_burst(self, n):
        """n concurrent requests all succeed, reaching the mock >= 200 ms apart."""
        # Warm-up: every worker opens its upstream connection first (a TLS
        # handshake after the slot would delay that one request).
        with concurrent.futures.ThreadPoolExecutor(self.workers) as ex:
            list(ex.map(lambda _: self.chat(), range(self.workers)))
        MOCK.reset()
        with concurrent.futures.ThreadPoolExecutor(n) as ex:
            rs = list(ex.map(lambda _: self.chat(), range(n)))
        self.assertEqual([r.status for r in rs], [200] * n)
        recs = sorted(self.wait_records(n), key=lambda x: x["t"])
        gaps = [(b["t"] - a["t"]) * 1000 for a, b in zip(recs, recs[1:])]
        self.assertGreaterEqual(min(gaps), 200 - ARRIVAL_JITTER_MS, gaps)
        return recs
