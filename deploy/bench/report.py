"""The results as a markdown table with how each row was measured."""

from .common import (BURST_EVENTS, BURST_GAP_MS, BURST_IDLE_TIMEOUT_MS, BURST_TIMEOUT_S,
                     CHAT_BODY, CONC, FAST_REPLY, LAT_N, LAT_ROUNDS, LAT_WARM, MIB,
                     REDIS_BENCH_N, STREAMS, SWEEP, SWEEP_SECS, TPUT_SECS)


def report(R, threads_ok, extra_notes, elapsed):
    """(markdown, rows) of the results R (results.json's data): the table,
    then how it was measured, then extra_notes; elapsed: the bench's
    seconds."""
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
        # Against the pools grown to the load's size (a short run first),
        # when the bench measured that; else against idle.
        base = M.get("warm", idle)
        g = aft["workers"]["uss"] / max(1, base["workers"]["uss"]) - 1
        row("4", "workers USS after %d requests (MiB)%s" % (
            M["requests_done"], ", both after a load and its threads retired (%d, %d)" % (
                M["warm_threads"], M["after_threads"]) if "warm" in M else ""),
            up_fast, "", "", "%.2f -> %.2f (%+.1f%%); nginx %.2f -> %.2f; redis %.2f -> %.2f"
            % (base["workers"]["uss"] / MIB, aft["workers"]["uss"] / MIB, 100 * g,
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
            "exactly 2 (reserve, settle)",
            abs(w["per_request"] - 2.0) < 1e-9 and w["bad"] == 0)
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
            CC["peak_workers_uss"] <= 75 * MIB if CC["processes"] <= 4 else False)
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
    BU = R.get("burst")
    for c in (BU or {}).get("cases", []):
        row("9", "burst: %d streams at once, spacing %d ms (--processes %d, shipped thread "
            "defaults): total (s); statuses; first event median / max (s); see the burst table"
            % (c["streams"], c["spacing_ms"], BU["processes"]), up_mock, "", "",
            "%s; %s; %s / %s" % (_f(c["total_s"], "%.2f"), _statuses(c),
                                 _f(c["first_event_median_s"], "%.2f"),
                                 _f(c["first_event_max_s"], "%.2f")),
            "all 200, complete", _burst_ok(c))
    G = R.get("goodput")
    if G:
        # How to read these rows: deploy/bench/goodput.py's docstring.
        o, rd = G["outcomes"], G["redis"]
        up_lim = "Python mock, limits on"
        row("10", "goodput: %d s at twice the limits (orgs a1\\|a2 and b1; llama3.1-8b "
            "requests-bound, gpt-oss-120b tokens-bound; streams and JSON; spacing %d ms, "
            "queue %d s: the defaults): answers served in the window / oracle; bound by %s"
            % (G["secs"], G["interval_ms"], G["queue_max_wait_ms"] // 1000, G["binds"]),
            up_lim, "", "", "%d / %.1f (%.1f%%)" % (G["served"], G["oracle"],
                                                     100.0 * G["goodput"]),
            ">= 95%", G["goodput"] >= 0.95)
        row("10", "  per (org, model): served / oracle (binding limit; for tokens: tokens "
            "really used / charged at admission per request, and what a perfect scheduler "
            "reaches: the last request needs its whole charge)", up_lim, "", "", "; ".join(
                "%s %s %d / %.1f (%s%s)" % (
                    b["org"], b["model"], b["served"], b["oracle"], b["binding"],
                    "; %.0f / %s; reachable %d" % (
                        b["used_tokens_per_request"],
                        _f(b["charged_tokens_per_request"], "%.0f"), b["reachable"])
                    if b["binding"].startswith("tokens-") else "")
                for b in G["budgets"]))
        row("10", "  upstream 429s per (org, model) (the mock's counts)", up_lim, "", "",
            ", ".join("%s %s: %d" % (b["org"], b["model"], b["upstream_429"])
                      for b in G["budgets"]),
            "<= 1 each", G["upstream_429_max"] <= 1)
        row("10", "  the client's outcomes: offered = 200 + proxy 429 (all_keys_cooling_down, "
            "proxy_saturated) + upstream 429 + queued at the end (closed) + other",
            up_lim, "", "", "%d = %d (%d in the window) + %d + %d + %d + %d + %d%s" % (
                o["offered"], o["ok"], o["ok_in_window"], o["all_keys_cooling_down"],
                o["proxy_saturated"], o["upstream_429"], o["cancelled"], o["other"],
                "" if not o["proxy_429_without_retry_after"] else
                "; %d proxy 429s WITHOUT Retry-After" % o["proxy_429_without_retry_after"]),
            "adds up, Retry-After on each",
            o["adds_up"] and o["proxy_429_without_retry_after"] == 0)
        row("10", "  Redis round trips per offered request: EVAL/EVALSHA (INFO commandstats); "
            "all (MONITOR), by command; reserve per request (of which polls: a probe out, "
            "tokens that may come back), settle per attempt that had a slot; new connections",
            up_lim, "", "", "%.2f; %.2f (%s); %.2f (%d polls), %.2f; %d" % (
                rd["scripts_per_request"], rd["round_trips_per_request"], ", ".join(
                    "%s %d" % kv for kv in sorted(rd["by_command"].items())),
                rd["reserve_per_request"], rd["reserve_beyond_one_per_request"],
                rd["settle_per_request_with_slot"], rd["new_connections"]),
            "~2: 1 reserve + 1 settle (within 5%)",
            abs(rd["reserve_per_request"] - 1) <= 0.05 and
            abs(rd["settle_per_request_with_slot"] - 1) <= 0.05)
        row("10", "  why the answered requests waited (waited_for in the workers' log)",
            up_lim, "", "", ", ".join("%s %d" % kv for kv in sorted(G["waited_for"].items())))
    head = ("| # | Measure | Upstream | A direct (HTTPS) | B nginx proxy_pass "
            "| C cerebras-proxy | Target | Result |")
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
            r["no"], r["measure"], r["upstream"], r["A"], r["B"], r["C"], r["target"],
            r["result"]))
    shape = ("C used --processes %d (best req/s of the sweep %s at -c 32)"
             % (best, SWEEP))
    if threads_ok:
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
        "Workers: RATE_LIMIT_INTERVAL_MS=0 (rotation still through Redis: two EVALSHAs per "
        "request, reserve before it is sent and settle after its answer) except in the "
        "paced, spacing, burst and goodput rows, 3 keys (3 organisations), LOG_REQUESTS=1 "
        "(the default: one log line per request). " + shape + ".",
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
        "Redis bench: the reserve script read from shared/lua/reserve.lua (sha1 %s, %s), "
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
    if not threads_ok:
        notes.append("The binary has no --threads: the concurrency run used --processes %d "
                     "(one process per stream), so its per-stream memory is that of process "
                     "mode." % CONC)
    if G:
        notes.append(
            "Goodput (10): tests/mock_upstream.py with its limits emulation (token buckets per "
            "organisation and model, charged at admission, settled with the real usage), "
            "CEREBRAS_API_KEYS=%s, --processes 4, the shipped defaults otherwise; %d requests "
            "offered evenly over %d s on a connection each (half streams, half JSON, every one "
            "with max_completion_tokens above its real answer); requests without an answer "
            "%.0f s after the window are closed. Oracle = per (organisation, model), the "
            "binding limit's capacity x (1 + window / its window), over one request's cost "
            "(1, or the tokens the mock kept). Full reading guide: deploy/bench/goodput.py."
            % (G["keys"], G["outcomes"]["offered"], G["secs"], G.get("grace_s", 2)))
    notes += extra_notes
    md = "# cerebras-proxy benchmark\n\n" + "\n".join(lines) + "\n\n" + \
        burst_table(BU) + "\n".join("- " + n for n in notes) + "\n"
    return md, rows


def _f(v, fmt):
    return "n/a" if v is None else fmt % v


def _statuses(c):
    return ", ".join("%s: %d" % kv for kv in sorted(c["statuses"].items()))


def _burst_ok(c):
    return c["statuses"] == {"200": c["streams"]} and c["complete"] == c["streams"]


def burst_table(BU):
    """Section 9 as a table of its own (one row per case), with what each
    column means; "" without burst results."""
    if not BU or not BU.get("cases"):
        return ""
    lines = [
        "## 9 Bursts: N streams sent at once (--processes %d, no --threads)" % BU["processes"],
        "",
        "| N x spacing | Total (s) | Statuses | First event median / max (s) "
        "| Lateness median / max (ms) | Mock-side lateness median / max (ms) "
        "| thread_ms max | backlog_ms / late_ms max | Workers USS idle / peak / after (MiB) "
        "| Per request in flight (MiB) "
        "| Threads idle / peak / after (retired after) | Requests per process |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in BU["cases"]:
        lines.append("| %d x %d ms | %s | %s%s | %s / %s | %s / %s | %s / %s | %s | %s / %s | "
                     "%.1f / %.1f / %.1f | %.3f | %d / %d / %d (%s) | %s |" % (
                         c["streams"], c["spacing_ms"], _f(c["total_s"], "%.2f"), _statuses(c),
                         "" if _burst_ok(c) else " (%d complete)" % c["complete"],
                         _f(c["first_event_median_s"], "%.2f"),
                         _f(c["first_event_max_s"], "%.2f"),
                         _f(c["lateness_median_ms"], "%.0f"), _f(c["lateness_max_ms"], "%.0f"),
                         _f(c["mock_lateness_median_ms"], "%.0f"),
                         _f(c["mock_lateness_max_ms"], "%.0f"),
                         _f(c["thread_ms_max"], "%.1f"), _f(c.get("backlog_ms_max"), "%.1f"),
                         _f(c.get("late_ms_max"), "%.1f"),
                         c["uss_idle"] / MIB, c["uss_peak"] / MIB, c["uss_after"] / MIB,
                         c["uss_per_request"] / MIB, c["threads_idle"], c["threads_peak"],
                         c["threads_after"], _f(c["threads_retired_after_s"], "%.1f s")
                         if c["threads_retired_after_s"] is not None else "not retired",
                         "/".join(str(x) for x in c["requests_per_process"])))
    lines += [
        "",
        "- N x spacing: N streams (%d events %d ms apart from the Python mock, %.0f s each) "
        "written on N connections to nginx opened beforehand, all in one go, with "
        "RATE_LIMIT_INTERVAL_MS = spacing; the workers restarted for each case, thread "
        "settings at the defaults, WORKER_IDLE_TIMEOUT_MS=%d (default 30000) so that 'after' "
        "comes within seconds; each case cut off after %d s." % (
            BURST_EVENTS, BURST_GAP_MS, BURST_EVENTS * BURST_GAP_MS / 1000.0,
            BURST_IDLE_TIMEOUT_MS, BURST_TIMEOUT_S),
        "- Total: from the first request written to the last byte of the last stream.",
        "- Statuses: the HTTP status of every response (all must be 200, with %d events and "
        "[DONE])." % BURST_EVENTS,
        "- First event median / max: from the first request written to each stream's first "
        "content event at the client.",
        "- Lateness: first event - k x spacing, k = the rank of the request's slot (slot= in "
        "the workers' log; the rank of the first events if a line is missing): the wait beyond "
        "the request's place in the queue (ideally the upstream's time to first byte).",
        "- Mock-side lateness: the same with the mock's send stamp of the first event "
        "(mock_sent, the same clock): the part of the lateness before the upstream answered.",
        "- thread_ms max: the longest a request waited for a worker thread after its process "
        "accepted it (thread_ms= in the workers' log; n/a: the binary does not log it).",
        "- backlog_ms / late_ms max: the longest wait of a connection before a worker "
        "accepted it (backlog_ms=, from nginx's X-Request-Start; n/a without it) and the "
        "latest a worker sent a request after its slot (late_ms=).",
        "- Workers USS: Private_Clean+Private_Dirty (smaps_rollup) summed over the worker "
        "processes (the supervisor's children): before the burst, the maximum of samples "
        "every %.0f ms during it, and after the streams ended and the extra threads retired."
        % (BU["sample_s"] * 1e3),
        "- Per request in flight: (peak - idle) / N.",
        "- Threads: /proc/PID/task entries summed over the worker processes at the same "
        "instants; (retired after): seconds from the last stream's end until back at the "
        "idle count.",
        "- Requests per process: the burst's chat log lines per worker process.",
        "", ""]
    return "\n".join(lines)
