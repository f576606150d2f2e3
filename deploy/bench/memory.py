"""4 memory (idle, after many requests, during a 100 MiB stream) and
7 concurrent streams."""

import asyncio
import socket
import threading
import time

from .clients import MockEvents, stream_request
from .common import (BIG_BYTES, CHAT_PATH, CONC, CONC_EVENTS, CONC_GAP_MS, MEM_REQUESTS, MIB,
                     pct, progress)
from .procfs import smaps, thread_count


class MemoryPhases:
    def memory(self, tput_c32):
        st = self.st
        progress("memory: idle, after %d requests, during/after a 100 MiB stream "
                 "(--processes %d, fast upstream)" % (MEM_REQUESTS, self.best_p))
        # Extra threads retire after 1 s idle (default 30 s), so that the
        # leak check compares pools of the same size, each after load.
        self.workers(self.best_p, env={"WORKER_IDLE_TIMEOUT_MS": "1000"})
        time.sleep(0.5)
        res = {"processes": self.best_p}
        res["idle"] = self._mem_parts()
        # The pools grow to what 32 connections need (a thread per request
        # in flight) and shrink back: the baseline of the leak check.
        self.tools.wrk(self.url(st.port), 32, 2)
        res["warm_threads"] = self._settle_threads(res["idle"])
        res["warm"] = self._mem_parts()
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
        res["after_threads"] = self._settle_threads(res["idle"])
        res["after_100k"] = self._mem_parts()
        progress("  %d requests in %.1f s" % (done, res["requests_secs"]))
        res["big"] = self._big_stream()
        self.R["memory"] = res
        return res

    def _settle_threads(self, idle):
        """Waits (up to 15 s) until the workers have as many threads as when
        idle, plus 1 s for the memory to be given back; returns the count."""
        want = idle["workers"]["threads"]
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            n = sum(thread_count(p) for p in self.st.worker_pids())
            if n <= want:
                break
            time.sleep(0.1)
        time.sleep(1.0)
        return sum(thread_count(p) for p in self.st.worker_pids())

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
        out["workers"] = {"threads": sum(thread_count(p) for p in w),
                          "uss": sum(x["uss"] for x in w.values()),
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

    def concurrency(self):
        st = self.st
        # Two processes at the shipped thread settings: each pool grows to
        # the streams it gets (before the elastic pool: --threads 256).
        shape = (2, None) if self.threads_ok else (CONC, None)
        progress("concurrency: %d streams of %d events %d ms apart through C "
                 "(--processes %d%s, mock upstream)" % (
                     CONC, CONC_EVENTS, CONC_GAP_MS, shape[0],
                     " --threads %d" % shape[1] if shape[1] else ", no --threads support"))
        self.mock.reset()
        st.start_bench_workers(shape[0], shape[1], upstream="mock")
        # Let start-up warm-ups (HEAD to the upstream), if any, settle.
        self.settle_warmups()
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
                # De-chunk and parse: an event may span two chunks.
                parser = MockEvents()
                evs = parser.feed(bytes(buf))
                r["status"] = parser.status
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
