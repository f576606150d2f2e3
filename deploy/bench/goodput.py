"""10 goodput under the organisations' limits: GP_SECS of requests offered at
twice what the mock's limits allow, through the stack at the shipped
defaults, against an oracle that knows the limits.

The shape: two organisations, org-a with the keys gp-a1|gp-a2 (one group in
CEREBRAS_API_KEYS: they share its limits) and org-b with gp-b1; two models,
llama3.1-8b (requests-minute binds) and gpt-oss-120b (a small tokens-minute
binds); half of the requests stream, half are JSON. Every request asks
max_completion_tokens well above what its answer really uses (the mock
answers GP_COMPLETION[model] tokens), so the reservations are charged more
than is spent and the settlements' refunds decide the throughput of the
tokens-bound model: without them it would be about 2/3 of the oracle.

How to read the row (section 10 of the table):
  served / oracle   answers (200) whose request reached the mock within the
                    window (the GP_SECS of offering), against what the
                    mock's buckets allow in that window: per (organisation,
                    model) and limit, capacity x (1 + window / limit's
                    window) (full at the start, refilled continuously),
                    divided by the cost of one request (1 for a requests
                    limit, the tokens the mock really kept per admitted
                    request, charged - returned, for a tokens limit); the
                    smallest is the binding limit. Target >= 95%.
  upstream 429s     refusals the mock counted per (organisation, model):
                    the proxy sent something the budget did not hold.
                    Target <= 1 each (0 expected).
  outcomes          what the client got: offered = 200 + the proxy's own
                    429s (all_keys_cooling_down: no budget within
                    QUEUE_MAX_WAIT_MS; proxy_saturated: the timeline full)
                    + upstream 429s relayed + requests still queued when the
                    offering ended plus GP_GRACE_S, which the client closes
                    (their slots are released) + anything else.
  Redis round trips EVALSHA/EVAL calls (INFO commandstats, before and after)
                    per offered request, then every command the workers
                    sent (MONITOR) per offered request, by command: reserve
                    and settle (EVALSHA, named by the SHA1 of
                    shared/lua/*.lua), "<script> (EVAL)" (the first call
                    of a script on a connection that had not learnt its
                    SHA1), SCRIPT LOAD, rest (a key rested after a 429
                    naming no limit). Expected (the issue's target): one
                    reserve per request and one settle per attempt that
                    had a slot (after its answer, or to release the slot
                    when the client left; a probe settles twice, at its
                    headers and at its end). Reserve runs more often while
                    a probe is out (the others ask again every 50 ms),
                    while a request waits for tokens that requests still
                    out may give back (asked again, not booked: every
                    200 ms at most) and once per retry: "polls". A refused request costs
                    one reserve and no settle, so the average per offered
                    request is under 2 when many are refused. The worker
                    threads started for the load open connections of
                    their own (new connections), each of which pays the
                    SCRIPT LOADs and EVALs.
  waited_for        why the answered requests waited, from the workers' log.
  reachable         per tokens-bound budget: the n-th request needs its
                    whole charge in the bucket, the n - 1 before it having
                    given back what they did not use, so a perfect
                    scheduler reaches floor((capacity x (1 + window /
                    limit's window) - charge) / used) + 1: the oracle above
                    counts (charge - used) / used + a fraction more.

The spacing: RATE_LIMIT_INTERVAL_MS (200 ms by default) allows 1 + window /
interval requests in the window, all budgets together. The limits below keep
the oracle under that, but the buckets start full: while their initial
capacity drains (the first ~36 s) the spacing binds, then the refill rate
(1.9 requests/s over the four budgets, under the spacing's 5/s). The row says
which binds over the whole window.
"""

import asyncio
import hashlib
import json
import math
import os
import re
import subprocess
import threading
import time

from client import ResponseParser

from .common import CHAT_PATH, ROOT, progress, run

GP_SECS = 60            # the window: requests are offered for this long
GP_GRACE_S = 2.0        # then requests still without an answer get this long
GP_DRAIN_S = 20.0       # streams already answering get this long to end
GP_PROCESSES = 4
GP_KEYS = "gp-a1|gp-a2,gp-b1"
GP_ORGS = {
    "org-a": {"keys": ["gp-a1", "gp-a2"],
              "limits": {"requests-minute": 60, "tokens-minute": 60000},
              "models": {"gpt-oss-120b": {"limits": {"tokens-minute": 3000}}}},
    "org-b": {"keys": ["gp-b1"],
              "limits": {"requests-minute": 30, "tokens-minute": 30000},
              "models": {"gpt-oss-120b": {"limits": {"tokens-minute": 1500}}}},
}
GP_MODELS = ["llama3.1-8b", "gpt-oss-120b"]
# Per model: the user message's length (characters), max_completion_tokens,
# the completion the mock really produces (stream events / JSON words), the
# stream's gap between events and the JSON answer's delay (ms).
GP_PROMPT_CHARS = {"llama3.1-8b": 220, "gpt-oss-120b": 372}
GP_MAX_COMPLETION = {"llama3.1-8b": 256, "gpt-oss-120b": 200}
GP_COMPLETION = {"llama3.1-8b": 30, "gpt-oss-120b": 100}
GP_STREAM_GAP_MS = {"llama3.1-8b": 5, "gpt-oss-120b": 3}
GP_JSON_DELAY_MS = {"llama3.1-8b": 30, "gpt-oss-120b": 50}
GP_SYSTEM = "You are a helpful assistant."   # 28 characters
GP_OFFER = 2.0          # offered / what the limits allow
WINDOWS = {"minute": 60.0, "hour": 3600.0, "day": 86400.0}


def _limit_window(name):
    return WINDOWS[name.split("-")[1]]


def _effective(org, model):
    oc = GP_ORGS[org]
    lim = dict(oc["limits"])
    lim.update(oc["models"].get(model, {}).get("limits", {}))
    return lim


def _mock_prompt(model):
    """The mock's prompt estimate: characters of all contents // 4."""
    return max(1, (len(GP_SYSTEM) + GP_PROMPT_CHARS[model]) // 4)


def _body(model, stream, i):
    words = " ".join("w%d" % (k % 10) for k in range(GP_COMPLETION[model]))
    text = ("request %d: " % i + "lorem ipsum dolor sit amet " * 40)[:GP_PROMPT_CHARS[model]]
    mock = ({"events": GP_COMPLETION[model], "gap_ms": GP_STREAM_GAP_MS[model]} if stream
            else {"reply": words, "delay_ms": GP_JSON_DELAY_MS[model]})
    b = {"model": model, "max_completion_tokens": GP_MAX_COMPLETION[model],
         "messages": [{"role": "system", "content": GP_SYSTEM},
                      {"role": "user", "content": text}], "mock": mock}
    if stream:
        b["stream"] = True
    return json.dumps(b, separators=(",", ":")).encode()


def oracle_of(limits, secs, used_tokens):
    """{limit name: requests it allows in secs} for one (org, model):
    capacity x (1 + secs / window) over the cost of one request
    (used_tokens for a tokens limit); and the binding name."""
    allow = {}
    for name, cap in limits.items():
        n = cap * (1.0 + secs / _limit_window(name))
        if name.startswith("tokens-"):
            n = n / used_tokens if used_tokens else float("inf")
        allow[name] = n
    bind = min(allow, key=allow.get)
    return allow, bind


def script_shas():
    """{sha1: script name} of shared/lua/*.lua (the text the binary embeds)."""
    out = {}
    d = os.path.join(ROOT, "shared", "lua")
    for f in sorted(os.listdir(d)):
        if f.endswith(".lua"):
            with open(os.path.join(d, f), "rb") as fh:
                out[hashlib.sha1(fh.read()).hexdigest()] = f[:-4]
    return out


def _unrepr(s):
    """The bytes of an argument as MONITOR shows it (Redis' sdscatrepr:
    backslash escapes, \\xHH)."""
    out, i = bytearray(), 0
    esc = {"n": b"\n", "r": b"\r", "t": b"\t", "a": b"\a", "b": b"\b"}
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            n = s[i + 1]
            if n == "x" and i + 3 < len(s):
                out.append(int(s[i + 2:i + 4], 16))
                i += 4
                continue
            out += esc.get(n, n.encode())
            i += 2
            continue
        out += c.encode()
        i += 1
    return bytes(out)


def monitor_commands(lines, shas):
    """[(command, first argument)] of the top-level commands in MONITOR's
    lines (not those a script ran), and shas completed with the SHA1 of
    every script text sent (EVAL, SCRIPT LOAD), named by its first line
    ("-- reserve.lua - ...")."""
    out = []
    for line in lines:
        m = re.match(r'^\d+\.\d+ \[\d+ (\S+)\] (.*)$', line.rstrip("\n"))
        if not m or m.group(1) == "lua":
            continue
        args = re.findall(r'"((?:[^"\\]|\\.)*)"', m.group(2))
        if not args:
            continue
        cmd = args[0].lower()
        text = None
        if cmd == "eval" and len(args) > 1:
            text = args[1]
        elif cmd == "script" and len(args) > 2 and args[1].lower() == "load":
            text = args[2]
        if text is not None:
            mt = re.match(r"-- (\w+)\.lua", text)
            if mt:
                shas[hashlib.sha1(_unrepr(text)).hexdigest()] = mt.group(1)
        out.append((cmd, args[1] if len(args) > 1 else ""))
    return out


def check_config(binary, env):
    """NAME=value settings `--check-config` prints for this environment."""
    r = run([binary, "--check-config"], env=env)
    return dict(line.split("=", 1) for line in r.stdout.splitlines()
                if "=" in line and not line.startswith("#"))


class GoodputPhases:
    def goodput(self):
        st = self.st
        secs = GP_SECS
        # The shipped defaults, as the binary itself states them (nothing
        # of these set in our environment: start_bench_workers only sets
        # RATE_LIMIT_INTERVAL_MS, to the default read here).
        probe_env = {k: v for k, v in os.environ.items()
                     if not k.startswith(("RATE_LIMIT", "QUEUE_", "CEREBRAS_", "REDIS_",
                                          "DEFAULT_MAX", "UPSTREAM_", "KEY_"))}
        probe_env["CEREBRAS_API_KEYS"] = GP_KEYS
        cfg = check_config(self.binary, probe_env)
        interval_ms = int(cfg.get("RATE_LIMIT_INTERVAL_MS", "200"))
        queue_ms = int(cfg.get("QUEUE_MAX_WAIT_MS", "30000"))

        # The plan: per model, GP_OFFER x what its budgets allow in the window.
        plan_u = {m: _mock_prompt(m) + GP_COMPLETION[m] for m in GP_MODELS}
        allow_plan = {}
        for m in GP_MODELS:
            allow_plan[m] = sum(min(oracle_of(_effective(o, m), secs, plan_u[m])[0].values())
                                for o in GP_ORGS)
        spacing_allows = (1 + int(secs * 1000 // interval_ms)) if interval_ms > 0 else None
        items = []
        for j, m in enumerate(GP_MODELS):
            n = int(round(GP_OFFER * allow_plan[m]))
            for k in range(n):
                items.append(((k + 0.5 * (j + 1) / len(GP_MODELS)) * secs / n, m, k % 2 == 0))
        items.sort()
        progress("goodput: %d s, %d requests offered (%s: %.1fx what the limits allow, %s), "
                 "streams and JSON mixed; CEREBRAS_API_KEYS=%s; RATE_LIMIT_INTERVAL_MS=%d "
                 "QUEUE_MAX_WAIT_MS=%d (defaults); spacing allows %s in the window" % (
                     secs, len(items), ", ".join(
                         "%s %d" % (m, sum(1 for x in items if x[1] == m)) for m in GP_MODELS),
                     GP_OFFER, ", ".join("%s %.0f" % kv for kv in allow_plan.items()),
                     GP_KEYS, interval_ms, queue_ms, spacing_allows))

        # Fresh state: no budgets or timelines of earlier phases.
        st.stop_workers()
        st.redis_cli("FLUSHALL")
        st.start_bench_workers(GP_PROCESSES, None, upstream="mock", env={
            "CEREBRAS_API_KEYS": GP_KEYS, "RATE_LIMIT_INTERVAL_MS": str(interval_ms)})
        self.settle_warmups()
        self.mock.reset()
        self.mock._call("POST", "/__mock/limits", {"orgs": GP_ORGS})
        log_at = os.path.getsize(st.worker_log)
        shas = script_shas()
        mon = subprocess.Popen(["redis-cli", "-s", st.redis_sock, "MONITOR"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        mon_ok = mon.stdout.readline().strip() == "OK"
        lines = []
        th = threading.Thread(target=lambda: lines.extend(mon.stdout), daemon=True)
        th.start()
        cs0, conn0 = self.tools.cmdstats(), self._gp_connections()
        try:
            t0, results = asyncio.run(self._gp_clients(st.port, items))
        finally:
            time.sleep(0.5)            # the last settlements
            cs1, conn1 = self.tools.cmdstats(), self._gp_connections()
            mon.terminate()
            mon.wait()
            th.join(2)
        t_load_end = time.monotonic()

        # The mock's view, once every answer it admitted has ended.
        deadline = time.monotonic() + 10
        while True:
            recs = [r for r in self.mock.requests()
                    if (r.get("headers") or {}).get("x-request-id", "").startswith("gp-")]
            if all(r.get("finished") or r.get("t_done") for r in recs) or \
                    time.monotonic() > deadline:
                break
            time.sleep(0.2)
        lim = self.mock._call("GET", "/__mock/limits")
        st.stop_workers()
        # (less the two redis-cli connections of the readings after conn0)
        res = self._gp_figures(secs, t0, items, results, recs, lim, cs0, cs1, conn1 - conn0 - 2,
                               lines, mon_ok, shas, log_at, interval_ms, queue_ms,
                               spacing_allows)
        res["wall_s"] = round(t_load_end - t0, 1)
        self.R["goodput"] = res
        return res

    def _gp_connections(self):
        """Connections Redis has accepted so far (INFO stats)."""
        m = re.search(r"^total_connections_received:(\d+)",
                      self.st.redis_cli("INFO", "stats"), re.M)
        return int(m.group(1)) if m else 0

    # ---- the client ------------------------------------------------------------
    async def _gp_clients(self, port, items):
        """Each item sent at its time on a connection of its own; at the end
        of the window + GP_GRACE_S the requests still without an answer are
        closed (cancelled); the answers under way get GP_DRAIN_S more."""
        results = []
        t0 = time.monotonic() + 0.2
        for i, (at, model, stream) in enumerate(items):
            rid = "gp-%04d-%s-%s" % (i, "l" if model.startswith("llama") else "g",
                                     "s" if stream else "j")
            body = _body(model, stream, i)
            req = (b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                   b"X-Request-Id: %s\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
                   % (CHAT_PATH.encode(), rid.encode(), len(body), body))
            results.append({"id": rid, "model": model, "stream": stream, "at": at, "req": req,
                            "status": None, "send": None, "t_status": None, "end": None,
                            "body": b"", "retry_after": None, "error": None,
                            "cancelled": False, "complete": False})

        async def one(r):
            await asyncio.sleep(max(0.0, t0 + r["at"] - time.monotonic()))
            r["send"] = time.monotonic() - t0
            writer = None
            p = ResponseParser("POST")
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(r.pop("req"))
                await writer.drain()
                while not p.done:
                    data = await reader.read(65536)
                    if not data:
                        break
                    p.feed(data)
                    if p.status is not None and r["status"] is None:
                        r["status"] = p.status
                        r["t_status"] = time.monotonic() - t0
                        r["retry_after"] = p.header("Retry-After")
                r["complete"] = p.done
            except asyncio.CancelledError:
                r["cancelled"] = True
            except Exception as e:
                r["error"] = repr(e)
            finally:
                r["end"] = time.monotonic() - t0
                if writer is not None:
                    writer.close()
            if r["status"] is not None and r["status"] != 200:
                r["body"] = bytes(p.body[:400])

        tasks = [asyncio.ensure_future(one(r)) for r in results]
        await asyncio.sleep(max(0.0, t0 + GP_SECS + GP_GRACE_S - time.monotonic()))
        for t, r in zip(tasks, results):
            if r["status"] is None and not t.done():
                t.cancel()
        await asyncio.wait(tasks, timeout=GP_DRAIN_S)
        for t, r in zip(tasks, results):
            if not t.done():
                t.cancel()
                r["error"] = r["error"] or "still streaming %.0f s after the window" % (
                    GP_GRACE_S + GP_DRAIN_S)
        await asyncio.gather(*tasks, return_exceptions=True)
        return t0, results

    # ---- the figures -------------------------------------------------------------
    def _gp_figures(self, secs, t0, items, results, recs, lim, cs0, cs1, conns, lines, mon_ok,
                    shas, log_at, interval_ms, queue_ms, spacing_allows):
        by_id = {r["headers"]["x-request-id"]: r for r in recs}
        w0, w1 = t0, t0 + secs
        # The client's outcomes.
        out = {"offered": len(results), "ok": 0, "ok_in_window": 0,
               "all_keys_cooling_down": 0, "proxy_saturated": 0, "upstream_429": 0,
               "cancelled": 0, "other": 0, "incomplete_200": 0,
               "proxy_429_without_retry_after": 0}
        other = []
        for r in results:
            code = None
            if r["status"] == 429:
                try:
                    e = json.loads(r["body"])
                    code = (e.get("error") or {}).get("code") if "error" in e else e.get("code")
                except ValueError:
                    pass
            if r["status"] == 200:
                out["ok"] += 1
                if not r["complete"]:
                    out["incomplete_200"] += 1
                rec = by_id.get(r["id"])
                if rec is not None and w0 <= rec["t"] <= w1:
                    out["ok_in_window"] += 1
            elif r["status"] == 429 and code in ("all_keys_cooling_down", "proxy_saturated"):
                out[code] += 1
                if not r["retry_after"]:
                    out["proxy_429_without_retry_after"] += 1
            elif r["status"] == 429:
                out["upstream_429"] += 1
            elif r["cancelled"] and r["status"] is None:
                out["cancelled"] += 1
            else:
                out["other"] += 1
                other.append({k: r[k] for k in ("id", "status", "error", "send", "end")})
        out["adds_up"] = out["offered"] == sum(out[k] for k in (
            "ok", "all_keys_cooling_down", "proxy_saturated", "upstream_429", "cancelled",
            "other"))
        retry_after = sorted(int(r["retry_after"]) for r in results
                             if r["status"] == 429 and (r["retry_after"] or "").isdigit())

        # Per (org, model): served in the window, the oracle, upstream refusals.
        budgets = []
        tot_served = tot_oracle = 0.0
        tot_refill = tot_cap0 = 0.0
        for org in sorted(GP_ORGS):
            for model in GP_MODELS:
                mine = [r for r in recs if r.get("org") == org and r.get("model") == model]
                adm = [r for r in mine if r.get("admitted")]
                used = [r["charged_tokens"] - r["returned_tokens"] for r in adm
                        if r.get("charged_tokens") and r.get("returned_tokens") is not None
                        and not r.get("closed_by_client")]
                u = sum(used) / len(used) if used else _mock_prompt(model) + GP_COMPLETION[model]
                served = sum(1 for r in adm if w0 <= r["t"] <= w1 and r.get("status") == 200)
                m = ((lim.get("orgs", {}).get(org) or {}).get("models") or {}).get(model) or {}
                limits = {n: v["limit"] for n, v in (m.get("limits") or {}).items()} or \
                    _effective(org, model)
                allow, bind = oracle_of(limits, secs, u)
                charged = (sum(r["charged_tokens"] for r in adm) / len(adm)) if adm else None
                # What a perfect scheduler could reach: the n-th request
                # of a tokens-bound budget needs its whole charge in the
                # bucket when the n - 1 before it have given back what
                # they did not use.
                reach = allow[bind]
                if bind.startswith("tokens-") and charged:
                    reach = math.floor((limits[bind] * (1.0 + secs / _limit_window(bind))
                                        - charged) / u) + 1
                cost = 1.0 if bind.startswith("requests-") else u
                tot_cap0 += limits[bind] / cost
                tot_refill += limits[bind] / cost / _limit_window(bind)
                refusals = m.get("refused") or {}
                budgets.append({
                    "org": org, "model": model, "served": served, "oracle": allow[bind],
                    "binding": bind, "allow": {k: round(v, 1) for k, v in allow.items()},
                    "used_tokens_per_request": round(u, 1),
                    "charged_tokens_per_request": round(charged, 1) if charged else None,
                    "reachable": reach,
                    "admitted_total": m.get("admitted", len(adm)),
                    "upstream_429": sum(refusals.values()), "upstream_429_by_limit": refusals,
                    "upstream_429_in_window": sum(1 for t in m.get("refusal_times") or []
                                                  if w0 <= t <= w1),
                    "admitted_at_s": [round(r["t"] - w0, 2) for r in adm],
                    "refused_at_s": [round(t - w0, 2) for t in m.get("refusal_times") or []]})
                tot_served += served
                tot_oracle += allow[bind]
        spacing_rate = 1000.0 / interval_ms if interval_ms > 0 else None
        drain_s = (tot_cap0 / (spacing_rate - tot_refill)
                   if spacing_rate and spacing_rate > tot_refill else None)
        binds = ("the limits (the spacing only while the buckets' initial capacity drains, "
                 "~%.0f s)" % drain_s) if (drain_s is not None and drain_s < secs) else \
            "the spacing (%d ms)" % interval_ms if spacing_allows else "the limits"

        # Redis round trips: every command the workers sent (MONITOR), the
        # scripts named by their SHA1 (EVALSHA) or their first line (EVAL).
        calls = sum(cs1.get(k, 0) - cs0.get(k, 0) for k in ("evalsha", "eval"))
        by_script, commands = {}, {}
        for cmd, arg in monitor_commands(lines, shas):
            if cmd == "evalsha":
                name = shas.get(arg, "unknown script %s" % arg[:8])
            elif cmd == "eval":
                name = "%s (EVAL)" % (re.match(r"-- (\w+)", arg) or [None, "?"])[1]
            elif cmd == "script":
                name = "SCRIPT " + arg.upper()
            elif cmd in ("info", "monitor"):
                continue
            else:
                name = cmd.upper()
            by_script[name] = by_script.get(name, 0) + 1
            commands[cmd] = commands.get(cmd, 0) + 1
        # The workers' log: why the answered requests waited; one line per
        # attempt that had a slot (a request that left while it was still
        # asking for one, or was refused, has none).
        with open(self.st.worker_log, "rb") as f:
            f.seek(log_at)
            text = f.read().decode("utf-8", "replace")
        waited, outcomes, problems, slotted = {}, {}, [], 0
        for line in text.splitlines():
            mm = re.search(r"info: chat id=(gp-\S+) .* status=(\d+) .* waited_for=(\S+) (.*)$",
                           line)
            if mm:
                slotted += 1
                if mm.group(2) == "200":
                    waited[mm.group(3)] = waited.get(mm.group(3), 0) + 1
                key = mm.group(4) if mm.group(2) == "200" else "%s %s" % (mm.group(2),
                                                                          mm.group(4))
                outcomes[key] = outcomes.get(key, 0) + 1
            elif ": warning:" in line or ": error:" in line:
                problems.append(line)

        refused = out["all_keys_cooling_down"] + out["proxy_saturated"]
        n = max(1, len(results))
        reserve = by_script.get("reserve", 0) + by_script.get("reserve (EVAL)", 0)
        settle = by_script.get("settle", 0) + by_script.get("settle (EVAL)", 0)
        total = sum(commands.values())


        res = {
            "secs": secs, "grace_s": GP_GRACE_S, "interval_ms": interval_ms,
            "queue_max_wait_ms": queue_ms,
            "keys": GP_KEYS, "orgs": GP_ORGS, "models": GP_MODELS,
            "spacing_allows": spacing_allows, "binds": binds,
            "buckets_drain_s": round(drain_s, 1) if drain_s is not None else None,
            "served": int(tot_served), "oracle": round(tot_oracle, 1),
            "goodput": tot_served / tot_oracle if tot_oracle else None,
            "budgets": budgets, "outcomes": out, "other": other[:10],
            "retry_after_min_max": [retry_after[0], retry_after[-1]] if retry_after else None,
            "upstream_429_max": max(b["upstream_429"] for b in budgets),
            "redis": {"evalsha_eval_calls": calls, "scripts_per_request": calls / n,
                      "round_trips": total, "round_trips_per_request": total / n,
                      "monitor_ok": mon_ok, "by_command": by_script,
                      "reserve_per_request": reserve / n,
                      "settle_per_request_with_slot": settle / max(1, slotted),
                      "attempts_with_slot": slotted, "refused_by_proxy": refused,
                      "reserve_beyond_one_per_request": reserve - len(results),
                      "new_connections": conns},
            "waited_for": waited, "log_outcomes": outcomes,
            "problems": problems[:20], "problems_total": len(problems),
        }
        progress("  served %d of an oracle of %.1f in the window (%.1f%%), bound by %s" % (
            tot_served, tot_oracle, 100.0 * res["goodput"], binds))
        for b in budgets:
            progress("    %s / %s: %d / %.1f (%s; reachable %d; used %.0f tokens per request, "
                     "charged %s); upstream 429s %d" % (
                         b["org"], b["model"], b["served"], b["oracle"], b["binding"],
                         b["reachable"], b["used_tokens_per_request"],
                         b["charged_tokens_per_request"], b["upstream_429"]) +
                     (" at +%s s" % ", ".join("%.2f" % t for t in b["refused_at_s"])
                      if b["refused_at_s"] else ""))
        progress("  client: %s" % ", ".join("%s %s" % kv for kv in out.items()))
        progress("  Redis: %d EVALSHA/EVAL calls (INFO commandstats), %.2f per request; all "
                 "round trips (MONITOR) %d, %.2f per request: %s; reserve %.2f per request "
                 "(%d beyond one: polls while a probe is out or tokens may come back, retries), "
                 "settle %.2f per attempt with a slot; %d new connections" % (
                     calls, calls / n, total, total / n, by_script, reserve / n,
                     reserve - len(results), settle / max(1, slotted), conns))
        progress("  %d attempts had a slot (log lines); %d requests were closed while "
                 "they still asked for one" % (slotted, out["cancelled"] - outcomes.get(
                     "499 client left while queued", 0)))
        progress("  waited_for of the 200s: %s; log outcomes %s" % (waited, outcomes))
        if problems:
            self.notes.append("Goodput: %d warning/error lines in the workers' log, first: %s"
                              % (len(problems), problems[0]))
        if other:
            self.notes.append("Goodput: %d requests ended otherwise (not 200, 429 or "
                              "cancelled), first: %s" % (len(other), other[:3]))
        return res
