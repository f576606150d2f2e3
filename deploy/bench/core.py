"""class Bench: the stack, the tools, the results, and the phases in order
(each phase is a method of one of the mixins it is made of)."""

import os
import time

from client import Mock

from .burst import BurstPhases
from .clients import tls_context
from .common import CHAT_PATH, progress, run
from .goodput import GoodputPhases
from .latency import LatencyPhases
from .memory import MemoryPhases
from .procfs import cpu_ticks, ctx_switches, smaps
from .scheduler import SchedulerPhases
from .servers import BenchStack
from .throughput import ThroughputPhases
from .tools import Tools


class Bench(LatencyPhases, ThroughputPhases, MemoryPhases, SchedulerPhases, BurstPhases,
            GoodputPhases):
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
        self.mock = None     # the mock upstream's control endpoints (client.Mock)

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

    def mock_warmups(self):
        """The start-up warm-ups (HEAD requests) the mock has seen; 0 if it
        does not answer."""
        try:
            return self.mock.warmups()
        except OSError:
            return 0

    def settle_warmups(self):
        """Waits (up to 20 s) for the start-up warm-ups (HEAD requests to
        the upstream) of freshly started workers to stop coming."""
        last, stable_since = -1, time.monotonic()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            n = self.mock_warmups()
            if n != last:
                last, stable_since = n, time.monotonic()
            elif time.monotonic() - stable_since > 1.0:
                break
            time.sleep(0.2)

    # ---- orchestration -------------------------------------------------------------
    def run_all(self):
        st = self.st
        progress("starting: redis, mock upstream, fast nginx upstream, nginx proxy_pass, "
                 "nginx for the stack (dir %s)" % st.dir)
        st.start_redis()
        st.start_mock()
        self.mock = Mock(st.mock_port, st.ca_file())
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
            ("burst", self.burst),
            ("goodput", self.goodput),
        ]
        for name, fn in phases:
            if only and name not in only:
                continue
            fn()
