"""1 added latency (keep-alive and paced) and 3 streaming (per-event lag)."""

import os
import re
import time

from .clients import HttpConn, stream_once
from .common import LAT_N, LAT_ROUNDS, LAT_WARM, SPACED_N, STREAMS, pct, progress


class LatencyPhases:
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
