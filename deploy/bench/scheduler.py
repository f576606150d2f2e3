"""5 Redis round trips per request, 6 slot reservations per second (the
reservation script under redis-benchmark), 8 spacing fidelity."""

import concurrent.futures
import hashlib
import os
import re
import subprocess
import threading
import time

from .clients import HttpConn
from .common import REDIS_BENCH_N, ROOT, RT_N, SPACING_N, pct, progress, run


class SchedulerPhases:
    def spacing(self):
        """SPACING_N requests from 8 concurrent clients through C (4 worker
        processes, RATE_LIMIT_INTERVAL_MS=100, the Python mock): how close
        to the interval consecutive upstream arrivals are. Arrival times are
        the mock's stamps (a Python thread after TLS and parsing, so they
        carry its own jitter); send times are the workers' own (sent_mono
        in their log, the same clock)."""
        progress("spacing fidelity: %d requests, 8 clients, 100 ms interval" % SPACING_N)
        self.workers(4, upstream="mock", env={"RATE_LIMIT_INTERVAL_MS": "100"}, warm=False)
        self.mock.reset()
        mark = os.path.getsize(self.st.worker_log)

        def client(i):
            c = HttpConn(self.st.port)
            for j in range(i, SPACING_N, 8):
                c.request(extra=b"X-Request-Id: spacing-%d\r\n" % j)
            c.close()

        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            list(ex.map(client, range(8)))
        recs = [r for r in self.mock.requests()
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

    def redis_bench(self):
        st = self.st
        with open(os.path.join(ROOT, "shared", "lua", "reserve.lua")) as f:
            text = f.read()
        sha = hashlib.sha1(text.encode()).hexdigest()
        # The workers served requests already: Redis knows their script.
        known = st.redis_cli("SCRIPT", "EXISTS", sha).strip()
        loaded = run(["redis-cli", "-s", st.redis_sock, "SCRIPT", "LOAD", text]).stdout.strip()
        if loaded != sha:
            raise RuntimeError("SCRIPT LOAD gave %r, expected %s" % (loaded, sha))
        res = {"sha": sha, "same_as_workers": known == "1", "variants": {}}
        # KEYS and ARGV as sched_reserve passes them (shared/lua/reserve.lua):
        # rr, slot, keys hash, kslot, then one budget hash per organisation
        # (3 keys of 3 organisations); nkeys, interval us, "1" if key scope,
        # floor us, max wait us, each key's organisation, the token
        # estimate, the declared limits (here rpm and tpm so large they
        # never bind: every budget is charged, nothing waits), probe ttl,
        # poll us.
        keys = ["{bench}:rr", "{bench}:slot", "{bench}:keys", "{bench}:kslot"] + \
            ["{bench}:b:org%d:bench-model" % i for i in range(3)]
        tail = ["0,1,2", "1000", "1000000000,1000000000000,0,0,0,0", "131000000", "50000"]
        variants = [("interval 0 (no spacing; budgets charged)",
                     ["3", "0", "0", "0", "30000000"] + tail),
                    ("interval 1 us (a slot booked each time)",
                     ["3", "1", "0", "0", "30000000"] + tail)]
        for name, argv in variants:
            progress("redis-benchmark EVALSHA reserve, %s, -n %d -c 50 -P 1"
                     % (name, REDIS_BENCH_N))
            r = run(["redis-benchmark", "-s", st.redis_sock, "-n", str(REDIS_BENCH_N),
                     "-c", "50", "-P", "1", "--csv", "EVALSHA", sha, str(len(keys))] + keys + argv)
            rows = [ln for ln in r.stdout.splitlines() if ln.startswith('"EVALSHA')]
            if not rows:
                raise RuntimeError("redis-benchmark: %s %s" % (r.stdout[-300:], r.stderr[-300:]))
            f = [x.strip('"') for x in rows[-1].split('","')]
            res["variants"][name] = {"rps": float(f[1]), "p50_ms": float(f[4]),
                                     "p99_ms": float(f[6]), "argv": argv}
            progress("  %.0f reservations/s (p50 %.3f ms)" % (float(f[1]), float(f[4])))
        # A reservation answer must be a real one.
        chk = st.redis_cli("EVALSHA", sha, str(len(keys)), *keys, *variants[0][1])
        res["sample_reply"] = chk.split()
        st.redis_cli("DEL", *keys)
        self.R["redis_bench"] = res
