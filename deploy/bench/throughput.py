"""2 throughput and CPU per request: the worker-count sweep, wrk runs with
CPU accounting, and system calls per request."""

import os
import shutil
import signal
import subprocess
import time

from .clients import HttpConn
from .common import CLK_TCK, SWEEP, SWEEP_SECS, TPUT_CONNS, TPUT_SECS, progress
from .procfs import machine_busy, tcp_active_opens


class ThroughputPhases:
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
