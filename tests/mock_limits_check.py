#!/usr/bin/python3
"""Standalone checks of the mock upstream's rate-limit emulation.

Usage: python3 tests/mock_limits_check.py

Starts tests/mock_upstream.py on 127.0.0.1 (certificates from
tests/gen_certs.sh in a temporary directory, --port 0), configures limits
with ``POST /__mock/limits`` and checks them with plain HTTPS requests that
trust the test CA: the x-ratelimit-* headers, the continuous refill, the flat
429 body without Retry-After, per-model overrides, keys of one org sharing
buckets, the give-back of unused completion tokens, the counters, reset and
the off switch.  Prints one line per check and exits 1 if any failed.
Takes about 12 s (one bucket is left to refill for 10 s; the other checks
run meanwhile).  Python 3.11 standard library only.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import math
import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
MOCK = os.path.join(HERE, "mock_upstream.py")
GEN_CERTS = os.path.join(HERE, "gen_certs.sh")
PATH = "/v1/chat/completions"
DEFAULT_MODEL = "llama3.1-8b"

# Tolerances.
RESET_TOL = 0.5         # s, on x-ratelimit-reset-* values
RATE_TOL = 0.03         # relative, on the measured refill rate
EARLY = 9.0             # s after the first charge: the refill is not there yet
LATE = 10.3             # s after the first answer: one request refilled

REQ_BODY = ('{"message":"Requests per %s limit exceeded - too many requests sent.",'
            '"type":"too_many_requests_error","param":"quota","code":"request_quota_exceeded"}')
TOK_BODY = ('{"message":"Tokens per %s limit exceeded - too many tokens processed.",'
            '"type":"too_many_requests_error","param":"quota","code":"token_quota_exceeded"}')


class Failed(Exception):
    pass


def expect(cond, what):
    if not cond:
        raise Failed(what)


def near(a, b, tol, what):
    expect(a is not None and abs(a - b) <= tol, f"{what}: {a!r}, want {b!r} +- {tol}")


class Mock:
    """A mock_upstream.py process and plain HTTPS requests to it."""

    def __init__(self, tmp):
        subprocess.run(["bash", GEN_CERTS, tmp], check=True, stdout=subprocess.DEVNULL)
        self.proc = subprocess.Popen(
            [sys.executable, MOCK, "--cert", os.path.join(tmp, "server.crt"),
             "--key", os.path.join(tmp, "server.key"), "--host", "127.0.0.1", "--port", "0"],
            stdout=subprocess.PIPE)
        line = self.proc.stdout.readline().decode().split()
        if len(line) != 2 or line[0] != "READY":
            self.stop()
            raise RuntimeError("mock upstream did not start")
        self.port = int(line[1])
        self.ctx = ssl.create_default_context(cafile=os.path.join(tmp, "ca.crt"))
        self.seq = 0

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def call(self, method, path, body=None, headers=None):
        """One request on a fresh connection: (status, {lower name: value}, body)."""
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx, timeout=20)
        try:
            data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
            conn.request(method, path, body=data, headers=headers or {})
            r = conn.getresponse()
            try:
                raw = r.read()
            except http.client.IncompleteRead as e:   # a stream aborted on purpose
                raw = e.partial
            hdrs = {}
            for k, v in r.getheaders():
                hdrs.setdefault(k.lower(), []).append(v)
            return r.status, hdrs, raw
        finally:
            conn.close()

    def control(self, method, path, obj=None):
        st, _, raw = self.call(method, path, obj)
        return st, json.loads(raw)

    def limits(self, cfg):
        st, out = self.control("POST", "/__mock/limits", cfg)
        expect(st == 200, f"POST /__mock/limits: {st} {out}")
        return out

    def state(self):
        return self.control("GET", "/__mock/limits")[1]

    def chat(self, key, content="x" * 40, model=None, stream=False, mock=None, **extra):
        """A chat request; returns (status, headers, body, tag)."""
        self.seq += 1
        tag = f"chk-{self.seq}"
        req = {"messages": [{"role": "user", "content": content}], "stream": stream, **extra}
        if model is not None:
            req["model"] = model
        if mock is not None:
            req["mock"] = mock
        st, h, raw = self.call("POST", PATH, req, {"Authorization": f"Bearer {key}",
                                                   "Content-Type": "application/json",
                                                   "X-Check-Id": tag})
        return st, h, raw, tag

    def record(self, tag, timeout=5.0):
        """The finished record of request ``tag``."""
        end = time.monotonic() + timeout
        while True:
            st, recs = self.control("GET", "/__mock/requests")
            for r in recs:
                if r["headers"].get("x-check-id") == tag and r["t_done"] is not None:
                    return r
            if time.monotonic() > end:
                raise Failed(f"no finished record for {tag}")
            time.sleep(0.02)


def h1(h, name):
    v = h.get(name)
    return v[0] if v else None


def limit_headers(h):
    return {k: v[0] for k, v in h.items() if k.startswith("x-ratelimit-")}


def reset_of(h, name):
    v = h1(h, "x-ratelimit-reset-" + name)
    expect(v is not None and re.fullmatch(r"\d+\.\d\d", v), f"reset-{name} format: {v!r}")
    return float(v)


def level(state, org, model, name):
    return state["orgs"][org]["models"][model]["limits"][name]["level"]


def usage_of_stream(raw):
    for line in raw.decode().splitlines():
        if line.startswith("data: {") and '"usage"' in line:
            return json.loads(line[6:])["usage"]
    return None


# Everything is configured at once (a POST refills every bucket), so the
# other checks run while org-a's request bucket refills.
CONFIG = {"orgs": {
    # refill, sharing keys, the 429 body
    "org-a": {"keys": ["a-1", "a-2"],
              "limits": {"requests-minute": 6, "tokens-day": 100000}},
    # per-model overrides and max_seq_len
    "org-b": {"keys": ["b-1"],
              "limits": {"requests-minute": 100, "tokens-minute": 60000},
              "models": {"big-model": {"limits": {"tokens-minute": 1000}, "max_seq_len": 4096},
                         "small-model": {"limits": {"requests-minute": None}}}},
    # give-back after streams
    "org-c": {"keys": ["c-1"], "limits": {"tokens-day": 10000}},
    # hour limit message
    "org-d": {"keys": ["d-1"], "limits": {"requests-hour": 1}},
    # concurrent admissions
    "org-e": {"keys": ["e-1"], "limits": {"requests-day": 20}},
}}


def main():
    results = []
    tmp = tempfile.mkdtemp(prefix="mock-limits-")
    mock = None
    t_start = time.monotonic()
    ctx = {}

    def check(name, fn):
        try:
            detail = fn()
            results.append(True)
            print(f"ok    {name}" + (f": {detail}" if detail else ""), flush=True)
        except Exception as e:  # noqa: BLE001 - report and go on
            results.append(False)
            msg = str(e) if isinstance(e, Failed) else traceback.format_exc().strip()
            print(f"FAIL  {name}: {msg}", flush=True)

    try:
        mock = Mock(tmp)

        def off_by_default():
            st = mock.state()
            expect(st["enabled"] is False and st["orgs"] == {}, f"state {st}")
            s, h, raw, tag = mock.chat("a-1")
            expect(s == 200, f"status {s}")
            expect(h1(h, "x-ratelimit-remaining-requests-day") == "14399"
                   and h1(h, "x-ratelimit-reset-tokens-minute") == "11.38",
                   f"fixed headers {limit_headers(h)}")
            rec = mock.record(tag)
            body_len = rec["body_len"]
            expect(json.loads(raw)["usage"]["prompt_tokens"] == max(1, body_len // 4),
                   "prompt_tokens is body_len // 4 while off")
            expect((rec["org"], rec["admitted"], rec["refused_limit"], rec["charged_tokens"])
                   == (None, True, None, 0), f"record {rec}")
            return "fixed STANDARD_HEADERS, nothing charged"
        check("off by default", off_by_default)

        def bad_config():
            for cfg in ({"orgs": {"o": {"limits": {"requests-second": 1}}}},
                        {"orgs": {"o": {"limits": {"requests-minute": 0}}}},
                        {"orgs": {"o": {"keys": ["k"]}, "p": {"keys": ["k"]}}},
                        {"orgs": []}):
                st, out = mock.control("POST", "/__mock/limits", cfg)
                expect(st == 400, f"{cfg}: {st}")
            expect(mock.state()["enabled"] is False, "a bad config changed the state")
            return "4 bad bodies -> 400"
        check("bad configuration refused", bad_config)

        out = mock.limits(CONFIG)
        expect(out.get("enabled") is True, f"POST answer {out}")

        # ---- org-a: headers, keys sharing, refusal --------------------------
        def headers_consistent():
            ctx["t1_send"] = time.monotonic()
            s, h, raw, tag = mock.chat("a-1", content="y" * 40, max_tokens=100)
            ctx["t1_recv"] = time.monotonic()
            expect(s == 200, f"status {s}")
            lh = limit_headers(h)
            want = {"x-ratelimit-limit-requests-minute", "x-ratelimit-limit-tokens-day",
                    "x-ratelimit-remaining-requests-minute", "x-ratelimit-remaining-tokens-day",
                    "x-ratelimit-reset-requests-minute", "x-ratelimit-reset-tokens-day"}
            expect(set(lh) == want, f"header names {sorted(lh)}")
            expect(all(len(v) == 1 for k, v in h.items() if k.startswith("x-ratelimit-")),
                   "a header sent twice")
            expect(lh["x-ratelimit-limit-requests-minute"] == "6"
                   and lh["x-ratelimit-limit-tokens-day"] == "100000", f"limits {lh}")
            # prompt 40 chars // 4 = 10, completion charge 100
            expect(lh["x-ratelimit-remaining-requests-minute"] == "5", f"remaining {lh}")
            expect(lh["x-ratelimit-remaining-tokens-day"] == "99890", f"remaining {lh}")
            near(reset_of(h, "requests-minute"), 10.0, RESET_TOL, "reset-requests-minute")
            near(reset_of(h, "tokens-day"), 110 * 86400 / 100000, RESET_TOL, "reset-tokens-day")
            expect("retry-after" not in h, "Retry-After on a 200")
            expect(h1(h, "set-cookie") is not None and h1(h, "keep-alive") is not None,
                   "the other standard headers are gone")
            u = json.loads(raw)["usage"]
            expect(u["prompt_tokens"] == 10, f"usage {u}")
            rec = mock.record(tag)
            expect(rec["org"] == "org-a" and rec["model"] == DEFAULT_MODEL
                   and rec["admitted"] is True and rec["refused_limit"] is None
                   and rec["charged_tokens"] == 110
                   and rec["returned_tokens"] == 100 - u["completion_tokens"],
                   f"record {[(k, rec[k]) for k in ('org', 'model', 'admitted', 'refused_limit', 'charged_tokens', 'returned_tokens')]}")
            lv = level(mock.state(), "org-a", DEFAULT_MODEL, "tokens-day")
            spent = 10 + u["completion_tokens"]
            expect(100000 - spent - 0.01 <= lv <= 100000 - spent + 2, f"tokens-day level {lv}")
            return (f"limit/remaining/reset for requests-minute and tokens-day, "
                    f"charged 110, gave back {rec['returned_tokens']} after the JSON answer")
        check("headers present and consistent (JSON answer)", headers_consistent)

        def keys_share():
            seen = []
            for i, key in enumerate(["a-1", "a-1", "a-2", "a-2", "a-2"]):
                s, h, raw, tag = mock.chat(key, max_tokens=10)
                expect(s == 200, f"request {i + 2}: {s}")
                seen.append(int(h1(h, "x-ratelimit-remaining-requests-minute")))
                last_h = h
            expect(seen == [4, 3, 2, 1, 0], f"remaining {seen}")
            # level = 0.1 * (time since the first charge): full again in 60 s minus that
            r = reset_of(last_h, "requests-minute")
            elapsed = time.monotonic() - ctx["t1_send"]
            expect(60.0 - elapsed - 0.02 <= r <= 60.0, f"reset-requests-minute {r} ({elapsed:.2f} s in)")
            return "a-1, a-1, a-2, a-2, a-2 -> remaining 4 3 2 1 0"
        check("two keys of one org share buckets", keys_share)

        def refusal():
            before = mock.state()
            s, h, raw, tag = mock.chat("a-2", max_tokens=10)
            after = mock.state()
            expect(s == 429, f"status {s}")
            expect(raw.decode() == REQ_BODY % "minute", f"body {raw!r}")
            expect("retry-after" not in h, "Retry-After present")
            expect(h1(h, "content-type") == "application/json", "content-type")
            expect(h1(h, "x-ratelimit-remaining-requests-minute") == "0"
                   and h1(h, "x-ratelimit-limit-requests-minute") == "6", f"headers {limit_headers(h)}")
            rec = mock.record(tag)
            expect(rec["status"] == 429 and rec["admitted"] is False
                   and rec["refused_limit"] == "requests-minute" and rec["charged_tokens"] == 0,
                   f"record {rec}")
            dt = after["t"] - before["t"]
            d_tok = (level(after, "org-a", DEFAULT_MODEL, "tokens-day")
                     - level(before, "org-a", DEFAULT_MODEL, "tokens-day"))
            near(d_tok, dt * 100000 / 86400, 0.01, "tokens-day change across the refusal")
            d_req = (level(after, "org-a", DEFAULT_MODEL, "requests-minute")
                     - level(before, "org-a", DEFAULT_MODEL, "requests-minute"))
            near(d_req, dt * 0.1, 0.001, "requests-minute change across the refusal")
            m = after["orgs"]["org-a"]["models"][DEFAULT_MODEL]
            expect(m["admitted"] == 6 and m["refused"] == {"requests-minute": 1}
                   and len(m["refusal_times"]) == 1
                   and before["t"] <= m["refusal_times"][0] <= after["t"], f"counters {m}")
            return "flat request_quota_exceeded body, no Retry-After, nothing charged, counted"
        check("429 flat body, no Retry-After", refusal)

        # ---- org-b: per-model override ---------------------------------------
        def per_model():
            s, h, raw, tag = mock.chat("b-1", model="big-model")   # 10 + 4096 > 1000
            expect(s == 429 and raw.decode() == TOK_BODY % "minute", f"{s} {raw!r}")
            expect("retry-after" not in h, "Retry-After present")
            expect(mock.record(tag)["refused_limit"] == "tokens-minute", "refused_limit")
            expect(h1(h, "x-ratelimit-limit-tokens-minute") == "1000"
                   and h1(h, "x-ratelimit-remaining-tokens-minute") == "1000"
                   and h1(h, "x-ratelimit-limit-requests-minute") == "100", f"{limit_headers(h)}")
            s, h, raw, tag = mock.chat("b-1", model="big-model", max_tokens=100)
            expect(s == 200, f"status {s}")
            expect(h1(h, "x-ratelimit-limit-tokens-minute") == "1000"
                   and h1(h, "x-ratelimit-remaining-tokens-minute") == "890", f"{limit_headers(h)}")
            s, h, raw, tag = mock.chat("b-1", max_tokens=100, max_completion_tokens=50)
            expect(s == 200 and h1(h, "x-ratelimit-limit-tokens-minute") == "60000"
                   and h1(h, "x-ratelimit-remaining-tokens-minute") == "59940", f"{limit_headers(h)}")
            expect(mock.record(tag)["charged_tokens"] == 60, "max_completion_tokens first")
            s, h, raw, tag = mock.chat("b-1", model="small-model")
            expect(s == 200, f"status {s}")
            expect(set(limit_headers(h)) == {"x-ratelimit-limit-tokens-minute",
                                             "x-ratelimit-remaining-tokens-minute",
                                             "x-ratelimit-reset-tokens-minute"},
                   f"small-model headers {sorted(limit_headers(h))}")
            expect(mock.record(tag)["charged_tokens"] == 10 + 8192, "default max_seq_len 8192")
            st = mock.state()["orgs"]["org-b"]["models"]
            expect(st["big-model"]["max_seq_len"] == 4096
                   and st["big-model"]["refused"] == {"tokens-minute": 1}
                   and set(st["small-model"]["limits"]) == {"tokens-minute"}, f"state {st}")
            return ("big-model: tokens-minute 1000, max_seq_len 4096 -> token_quota_exceeded; "
                    "small-model drops requests-minute; others 60000")
        check("per-model override", per_model)

        def hour_message():
            s, _, _, _ = mock.chat("d-1")
            s2, h, raw, tag = mock.chat("d-1")
            expect(s == 200 and s2 == 429 and raw.decode() == REQ_BODY % "hour", f"{s} {s2} {raw!r}")
            near(reset_of(h, "requests-hour"), 3600.0, RESET_TOL + 1, "reset-requests-hour")
            return "Requests per hour limit exceeded"
        check("hour limit message", hour_message)

        # ---- org-c: give-back after streams ------------------------------------
        def stream_giveback():
            s, h, raw, tag = mock.chat("c-1", content="z" * 400, stream=True,
                                       max_tokens=500, mock={"events": 5})
            expect(s == 200, f"status {s}")
            expect(h1(h, "x-ratelimit-remaining-tokens-day") == "9400", f"{limit_headers(h)}")
            u = usage_of_stream(raw)
            expect(u is not None and u["prompt_tokens"] == 100 and u["completion_tokens"] == 5,
                   f"usage {u}")
            rec = mock.record(tag)
            expect(rec["charged_tokens"] == 600 and rec["returned_tokens"] == 495, f"record {rec}")
            lv = level(mock.state(), "org-c", DEFAULT_MODEL, "tokens-day")
            expect(10000 - 105 - 0.01 <= lv <= 10000 - 105 + 1, f"level after the stream {lv}")
            # An aborted stream settles with the events sent.
            s, h, raw, tag = mock.chat("c-1", content="z" * 400, stream=True, max_tokens=500,
                                       mock={"events": 5, "close_after_events": 2})
            rec = mock.record(tag)
            expect(rec["closed_by_server"] and rec["returned_tokens"] == 498, f"record {rec}")
            lv = level(mock.state(), "org-c", DEFAULT_MODEL, "tokens-day")
            expect(10000 - 207 - 0.01 <= lv <= 10000 - 207 + 1, f"level after the abort {lv}")
            return "charged 600 (100 + 500), 495 given back at the end (498 for an abort at 2)"
        check("unused tokens given back after a stream", stream_giveback)

        def unlimited_key():
            s, h, raw, tag = mock.chat("nobody", content="q" * 80)
            expect(s == 200 and not limit_headers(h), f"{s} {limit_headers(h)}")
            expect(json.loads(raw)["usage"]["prompt_tokens"] == 20, "prompt estimate")
            rec = mock.record(tag)
            expect(rec["org"] is None and rec["admitted"] and rec["charged_tokens"] == 0, f"{rec}")
            return "no x-ratelimit-* headers, not charged"
        check("unlisted key is unlimited", unlimited_key)

        def concurrent_admissions():
            with concurrent.futures.ThreadPoolExecutor(40) as ex:
                sts = list(ex.map(lambda _: mock.chat("e-1", max_tokens=1)[0], range(40)))
            m = mock.state()["orgs"]["org-e"]["models"][DEFAULT_MODEL]
            expect(sts.count(200) == 20 and sts.count(429) == 20, f"statuses {sts}")
            expect(m["admitted"] == 20 and m["refused"] == {"requests-day": 20}, f"counters {m}")
            return "40 at once against requests-day 20 -> 20 admitted, 20 refused"
        check("thread-safe admission", concurrent_admissions)

        # ---- org-a again: the refill -----------------------------------------
        def refill():
            s1 = mock.state()
            time.sleep(0.5)
            s2 = mock.state()
            rate = ((level(s2, "org-a", DEFAULT_MODEL, "requests-minute")
                     - level(s1, "org-a", DEFAULT_MODEL, "requests-minute")) / (s2["t"] - s1["t"]))
            near(rate, 0.1, 0.1 * RATE_TOL, "requests-minute refill rate per s")
            wait = ctx["t1_send"] + EARLY - time.monotonic()
            expect(wait > 0, f"checks before the refill took too long ({-wait:.1f} s late)")
            time.sleep(wait)
            s, h, _, _ = mock.chat("a-1", max_tokens=10)
            early = time.monotonic() - ctx["t1_send"]
            expect(s == 429, f"{early:.2f} s after the first charge: {s}")
            time.sleep(max(0.0, ctx["t1_recv"] + LATE - time.monotonic()))
            late = time.monotonic() - ctx["t1_recv"]
            s, h, _, tag = mock.chat("a-2", max_tokens=10)
            expect(s == 200, f"{late:.2f} s after the first answer: {s}")
            expect(h1(h, "x-ratelimit-remaining-requests-minute") == "0", "remaining after refill")
            return (f"rate {rate:.4f}/s (want 0.1); refused at +{early:.2f} s, "
                    f"admitted at +{late:.2f} s")
        check("bucket refills at limit / window (requests-minute 6)", refill)

        # ---- reset and the off switch ------------------------------------------
        def reset_keep():
            st, _ = mock.control("POST", "/__mock/reset", {"keep_limits": True})
            s = mock.state()
            m = s["orgs"]["org-a"]["models"][DEFAULT_MODEL]
            expect(st == 200 and s["enabled"] and s["admitted"] == 0 and s["refused"] == 0
                   and m["refusal_times"] == [] and m["limits"]["requests-minute"]["level"] < 1,
                   f"state {m}")
            expect(mock.control("GET", "/__mock/requests")[1] == [], "records kept")
            st, _ = mock.control("POST", "/__mock/reset", {})
            s = mock.state()
            expect(st == 200 and s["enabled"] is False and s["orgs"] == {}, f"state {s}")
            return "keep_limits: counters cleared, levels kept; plain reset: emulation off"
        check("reset semantics", reset_keep)

        def off_switch():
            mock.limits(CONFIG)
            s, h, _, _ = mock.chat("a-1")
            expect(s == 200 and h1(h, "x-ratelimit-limit-requests-minute") == "6", "on again")
            out = mock.limits({})
            expect(out["enabled"] is False and mock.state()["enabled"] is False, f"{out}")
            for i in range(8):
                s, h, raw, tag = mock.chat("a-1")
                expect(s == 200, f"request {i}: {s}")
            expect(h1(h, "x-ratelimit-remaining-requests-day") == "14399"
                   and "x-ratelimit-limit-requests-minute" not in h, f"{limit_headers(h)}")
            rec = mock.record(tag)
            expect(rec["org"] is None and rec["charged_tokens"] == 0, f"record {rec}")
            return "{} -> fixed headers again, 8 requests all 200"
        check("off switch", off_switch)
    finally:
        if mock is not None:
            mock.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    failed = results.count(False)
    print(f"integration (mock limits): {len(results) - failed} passed, {failed} failed "
          f"({time.monotonic() - t_start:.1f} s)")
    return 1 if failed or not results else 0


if __name__ == "__main__":
    sys.exit(main())
