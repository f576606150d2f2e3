"""9 bursts: N streams sent at once to the workers at their shipped
defaults (--processes 4, no --threads), with the spacing set so the N
slots span N x spacing: is each stream's first event on schedule, what
did the workers' threads cost at the peak, and do the extra threads go
away again?"""

import asyncio
import os
import re
import threading
import time

from .clients import MockEvents, stream_request
from .common import (BURST_CASES, BURST_EVENTS, BURST_GAP_MS, BURST_IDLE_TIMEOUT_MS,
                     BURST_SAMPLE_S, BURST_TIMEOUT_S, MIB, pct, progress)
from .procfs import listen_overflows, smaps, thread_count

BURST_PROCESSES = 4
# Set in the bench's own environment, these would reach the workers (the
# stack passes its environment on) and the run would not be at the defaults.
# (WORKER_IDLE_TIMEOUT_MS is set here for every case.)
POOL_VARS = ("WORKER_THREADS", "WORKER_MAX_THREADS")


def _median(values):
    return pct(values, 50) if values else None


class BurstPhases:
    def burst(self):
        st = self.st
        set_vars = [v for v in POOL_VARS if v in os.environ]
        if set_vars:
            self.notes.append("Burst: %s set in the bench's environment reached the workers: "
                              "not the shipped defaults." % ", ".join(set_vars))
        res = {"processes": BURST_PROCESSES, "threads_option": None,
               "events": BURST_EVENTS, "gap_ms": BURST_GAP_MS,
               "worker_idle_timeout_ms": BURST_IDLE_TIMEOUT_MS,
               "sample_s": BURST_SAMPLE_S, "cases": []}
        self.R["burst"] = res
        for n, spacing in BURST_CASES:
            res["cases"].append(self._burst_case(n, spacing))
        st.stop_workers()
        return res

    # ---- one case ------------------------------------------------------------
    def _burst_case(self, n, spacing_ms):
        st = self.st
        tag = "burst%d" % n
        progress("burst: %d streams (%d events %d ms apart) at once, RATE_LIMIT_INTERVAL_MS=%d, "
                 "--processes %d, WORKER_IDLE_TIMEOUT_MS=%d (mock upstream)" % (
                     n, BURST_EVENTS, BURST_GAP_MS, spacing_ms, BURST_PROCESSES,
                     BURST_IDLE_TIMEOUT_MS))
        self.mock.reset()
        st.start_bench_workers(BURST_PROCESSES, None, upstream="mock", env={
            "RATE_LIMIT_INTERVAL_MS": str(spacing_ms),
            "WORKER_IDLE_TIMEOUT_MS": str(BURST_IDLE_TIMEOUT_MS)})
        self.settle_warmups()
        time.sleep(0.5)
        idle = self._burst_sample()
        log_at = os.path.getsize(st.worker_log)

        # Peak: sampled until the last stream ends.
        peak = {"uss": idle["uss"], "threads": idle["threads"], "per_pid_threads": {},
                "samples": 0, "pids": set(idle["per_pid"])}
        stop = threading.Event()

        def sampler():
            while not stop.is_set():
                s = self._burst_sample()
                peak["samples"] += 1
                peak["uss"] = max(peak["uss"], s["uss"])
                peak["threads"] = max(peak["threads"], s["threads"])
                peak["pids"] |= set(s["per_pid"])
                for p, v in s["per_pid"].items():
                    peak["per_pid_threads"][p] = max(peak["per_pid_threads"].get(p, 0),
                                                     v["threads"])
                stop.wait(BURST_SAMPLE_S)

        th = threading.Thread(target=sampler, daemon=True)
        th.start()
        ov0 = listen_overflows()
        try:
            t0, results = asyncio.run(self._burst_clients(st.port, n, tag))
        finally:
            stop.set()
            th.join()
        t_end = time.monotonic()
        ov1 = listen_overflows()
        peak["listen_overflows"] = None if ov0 is None or ov1 is None else ov1 - ov0

        # After: wait for the threads above the idle count to retire.
        retire_deadline = t_end + BURST_IDLE_TIMEOUT_MS / 1000.0 + 10
        retired_s = None
        while time.monotonic() < retire_deadline:
            if self._burst_sample(memory=False)["threads"] <= idle["threads"]:
                retired_s = time.monotonic() - t_end
                break
            time.sleep(BURST_SAMPLE_S)
        time.sleep(0.3)
        after = self._burst_sample()

        log = self._burst_log(log_at, tag)
        return self._burst_figures(n, spacing_ms, t0, results, idle, peak, after,
                                   retired_s, log)

    def _burst_sample(self, memory=True):
        """USS and threads of the worker processes (the supervisor's
        children), summed, and per process."""
        per = {}
        for p in self.st.worker_pids():
            m = smaps(p) if memory else None
            per[p] = {"uss": m["uss"] if m else 0, "threads": thread_count(p)}
        return {"uss": sum(v["uss"] for v in per.values()),
                "threads": sum(v["threads"] for v in per.values()), "per_pid": per}

    def _burst_log(self, log_at, tag):
        """The workers' log since log_at: {request id: fields} of this burst's
        chat lines, and every warning or error line."""
        with open(self.st.worker_log, "rb") as f:
            f.seek(log_at)
            text = f.read().decode("utf-8", "replace")
        lines, problems = {}, []
        for line in text.splitlines():
            m = re.search(r"cerebras-proxy\[(\d+)\]: info: chat id=(%s-\d+) (.*)$" % tag, line)
            if m:
                d = dict(re.findall(r"(\w+)=(\S+)", m.group(3)))
                d["pid"] = int(m.group(1))
                d["outcome"] = m.group(3).split()[-1]
                lines[m.group(2)] = d
            elif ": warning:" in line or ": error:" in line:
                problems.append(line)
        return {"chat": lines, "problems": problems}

    # ---- the client ------------------------------------------------------------
    async def _burst_clients(self, port, n, tag):
        """n connections to nginx, opened first; then every request written
        in one go (the barrier); then each stream read to its end. Times are
        time.monotonic(), relative to the first write (t0)."""
        reqs = [stream_request(BURST_EVENTS, BURST_GAP_MS,
                               b"Accept: text/event-stream\r\nX-Request-Id: %s-%d\r\n"
                               % (tag.encode(), i)) for i in range(n)]
        conns = await asyncio.gather(*[asyncio.open_connection("127.0.0.1", port)
                                       for _ in range(n)], return_exceptions=True)
        results = [{"id": "%s-%d" % (tag, i), "status": None, "events": 0, "complete": False,
                    "send": None, "first": None, "first_sent": None, "end": None,
                    "error": None} for i in range(n)]
        t0 = time.monotonic()
        for i, c in enumerate(conns):
            if isinstance(c, BaseException):
                results[i]["error"] = "connect: %r" % (c,)
                continue
            c[1].write(reqs[i])
            results[i]["send"] = time.monotonic() - t0
        deadline = t0 + BURST_TIMEOUT_S

        async def one(i, reader, writer):
            r = results[i]
            p = MockEvents()
            try:
                await writer.drain()
                while not p.done:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise asyncio.TimeoutError
                    data = await asyncio.wait_for(reader.read(65536), left)
                    t = time.monotonic() - t0
                    if not data:
                        break
                    evs = p.feed(data)
                    r["events"] += len(evs)
                    if evs and r["first"] is None:
                        r["first"] = t
                        r["first_sent"] = evs[0]["mock_sent"] - t0   # the mock's clock is ours
                    if p.done:
                        r["end"] = t
                if r["end"] is None:
                    r["end"] = time.monotonic() - t0
            except asyncio.TimeoutError:
                r["error"] = "timeout after %d s" % BURST_TIMEOUT_S
            except Exception as e:
                r["error"] = repr(e)
            finally:
                writer.close()
            r["status"] = p.status
            r["complete"] = (p.status == 200 and p.got_done_marker and
                             r["events"] == BURST_EVENTS)

        await asyncio.gather(*[one(i, c[0], c[1]) for i, c in enumerate(conns)
                               if not isinstance(c, BaseException)])
        return t0, results

    # ---- the figures -------------------------------------------------------------
    def _burst_figures(self, n, spacing_ms, t0, results, idle, peak, after, retired_s, log):
        statuses = {}
        for r in results:
            statuses[str(r["status"])] = statuses.get(str(r["status"]), 0) + 1
        chat = log["chat"]
        got = [r for r in results if r["first"] is not None]
        # Rank k of each request: its slot's rank on the timeline, from the
        # workers' log; without a slot for every such request, the rank of
        # its first event.
        slots = {r["id"]: int(chat[r["id"]]["slot"]) for r in got
                 if r["id"] in chat and chat[r["id"]].get("slot", "").isdigit()}
        if got and len(slots) == len(got):
            order, ranked_by = sorted(got, key=lambda r: slots[r["id"]]), "slot"
        else:
            order, ranked_by = sorted(got, key=lambda r: r["first"]), "first event"
        late, late_up = [], []
        for k, r in enumerate(order):
            late.append(r["first"] - k * spacing_ms / 1000.0)
            late_up.append(r["first_sent"] - k * spacing_ms / 1000.0)
        def field(name):
            """A number field of the burst's log lines ("-" and absent left out)."""
            return [float(d[name]) for d in chat.values()
                    if re.match(r"^-?[\d.]+$", d.get(name, ""))]

        thread_ms, backlog_ms, late_ms = field("thread_ms"), field("backlog_ms"), field("late_ms")
        for r in results:
            d = chat.get(r["id"], {})
            r["log"] = {k: d[k] for k in ("pid", "slot", "wait_ms", "late_ms", "ttfb_ms",
                                          "backlog_ms", "thread_ms", "outcome") if k in d}
        per_pid = {}
        for d in chat.values():
            per_pid[d["pid"]] = per_pid.get(d["pid"], 0) + 1
        ends = [r["end"] for r in results if r["end"] is not None]
        firsts = [r["first"] for r in got]
        out = {
            "streams": n, "spacing_ms": spacing_ms,
            "complete": sum(1 for r in results if r["complete"]),
            "statuses": statuses,
            "errors": [{"id": r["id"], "error": r["error"]} for r in results if r["error"]][:10],
            "send_spread_ms": max([r["send"] for r in results if r["send"] is not None]
                                  or [0]) * 1e3,
            "total_s": max(ends) if ends else None,
            "first_event_median_s": _median(firsts),
            "first_event_max_s": max(firsts) if firsts else None,
            "ranked_by": ranked_by,
            "lateness_median_ms": _median(late) * 1e3 if late else None,
            "lateness_max_ms": max(late) * 1e3 if late else None,
            "mock_lateness_median_ms": _median(late_up) * 1e3 if late_up else None,
            "mock_lateness_max_ms": max(late_up) * 1e3 if late_up else None,
            "log_lines": len(chat),
            "thread_ms_max": max(thread_ms) if thread_ms else None,
            "thread_ms_median": _median(thread_ms),
            "backlog_ms_max": max(backlog_ms) if backlog_ms else None,
            "late_ms_max": max(late_ms) if late_ms else None,
            "outcomes": sorted(set(d["outcome"] for d in chat.values())),
            "new_conns_total": sum(int(d.get("new_conns", "0")) for d in chat.values()
                                   if d.get("new_conns", "0").isdigit()),
            "requests_per_process": sorted(per_pid.values(), reverse=True),
            "uss_idle": idle["uss"], "uss_peak": peak["uss"], "uss_after": after["uss"],
            "uss_per_request": (peak["uss"] - idle["uss"]) / n,
            "threads_idle": idle["threads"], "threads_peak": peak["threads"],
            "threads_after": after["threads"],
            "threads_peak_per_process": sorted(peak["per_pid_threads"].values(), reverse=True),
            "threads_retired_after_s": retired_s,
            "worker_pids_seen": len(peak["pids"] | set(after["per_pid"])),
            "listen_overflows": peak["listen_overflows"],
            "samples": peak["samples"],
            "problems": log["problems"][:20], "problems_total": len(log["problems"]),
            "per_request": [{k: (round(v, 4) if isinstance(v, float) else v)
                             for k, v in r.items()} for r in results],
        }
        if retired_s is None:
            self.notes.append("Burst %d x %d ms: the worker threads did not come back to the "
                              "idle count (%d) within %.0f s of the last stream's end (%d "
                              "then)." % (n, spacing_ms, idle["threads"],
                                          BURST_IDLE_TIMEOUT_MS / 1000.0 + 10,
                                          after["threads"]))
        if out["complete"] != n:
            self.notes.append("Burst %d x %d ms: %d of %d streams complete; statuses %s; "
                              "first errors %s" % (n, spacing_ms, out["complete"], n, statuses,
                                                   out["errors"][:3]))
        if peak["listen_overflows"]:
            self.notes.append("Burst %d x %d ms: %d TCP connections overflowed a listen queue "
                              "during the burst (TcpExt ListenOverflows, machine-wide; the "
                              "mock's queue holds 128): each such connect was retried after "
                              "1 s, so thread_ms (a new thread connects upstream before it "
                              "takes a request) shows about 1 s for as many requests."
                              % (n, spacing_ms, peak["listen_overflows"]))
        if log["problems"]:
            self.notes.append("Burst %d x %d ms: %d warning/error lines in the workers' log, "
                              "first: %s" % (n, spacing_ms, len(log["problems"]),
                                             log["problems"][0]))
        f = lambda v, fmt: "-" if v is None else fmt % v
        progress("  %d/%d complete (%s) in %s s; first event median %s / max %s s; lateness "
                 "median %s / max %s ms (mock sent: %s / %s); max thread_ms %s, backlog_ms %s, "
                 "late_ms %s; per process %s"
                 % (out["complete"], n, ", ".join("%s: %d" % kv for kv in sorted(statuses.items())),
                    f(out["total_s"], "%.2f"), f(out["first_event_median_s"], "%.2f"),
                    f(out["first_event_max_s"], "%.2f"), f(out["lateness_median_ms"], "%.0f"),
                    f(out["lateness_max_ms"], "%.0f"), f(out["mock_lateness_median_ms"], "%.0f"),
                    f(out["mock_lateness_max_ms"], "%.0f"), f(out["thread_ms_max"], "%.1f"),
                    f(out["backlog_ms_max"], "%.1f"), f(out["late_ms_max"], "%.1f"),
                    out["requests_per_process"]))
        progress("  workers USS idle %.1f / peak %.1f / after %.1f MiB (%.3f MiB per request in "
                 "flight); threads idle %d / peak %d / after %d (retired %s); listen overflows %s"
                 % (
                     idle["uss"] / MIB, peak["uss"] / MIB, after["uss"] / MIB,
                     out["uss_per_request"] / MIB, idle["threads"], peak["threads"],
                     after["threads"], f(retired_s, "after %.1f s") if retired_s is not None
                     else "NOT within the wait", out["listen_overflows"]))
        return out
