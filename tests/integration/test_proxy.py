"""Integration tests: real redis-server, real nginx with the shipped config,
cerebras-proxy worker processes, and the HTTPS mock upstream.

The stack is started once for the module (deploy/stack.py); each test class
restarts the workers with the environment it needs.
"""

import concurrent.futures
import glob
import hashlib
import json
import os
import re
import shutil
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
# Slot spacing tolerances. The slots are exact in Redis time (asserted to
# the microsecond). A worker wakes for its slot typically 0.1-0.3 ms late
# (the median send gap is asserted within 1 ms of the interval), but on this
# 2-core machine, shared by the client threads, nginx or Apache, the
# workers, Redis and the mock, a wake-up is now and then up to ~10 ms late,
# which shortens the next gap by as much (SEND_JITTER_MS, from the workers'
# own log). The mock stamps each arrival in a Python thread after TLS and
# parsing, which adds up to ~10 ms more (ARRIVAL_JITTER_MS). Precise
# figures are the benchmark's business, not the tests'.
SEND_JITTER_MS = 15.0
ARRIVAL_JITTER_MS = 15.0

ST = None
MOCK = None
RESPONSES = []     # every response the tests saw, checked for leaked keys


def setUpModule():
    global ST, MOCK
    ST = stack.Stack(BINARY, server=SERVER)
    try:
        ST.start_redis()
        ST.start_mock()
        ST.worker_env = {
            "CEREBRAS_API_KEYS": ",".join(KEYS),
            "CEREBRAS_API_BASE": ST.mock_base(),
            "CEREBRAS_CA_FILE": ST.ca_file(),
            "REDIS_URL": ST.redis_url(),
        }
        ST.start_server(prefix=PREFIX)
        ST.start_workers(4)
    except Exception:
        ST.stop()
        raise
    MOCK = Mock(ST.mock_port, ST.ca_file())


def tearDownModule():
    if ST is not None:
        ST.stop()


def chat_body(**kw):
    body = {"model": "llama3.1-8b", "messages": [{"role": "user", "content": "Hello proxy"}]}
    body.update(kw)
    return body


def slots_from_log(id_prefix):
    """{request id: slot (Redis time, us)} from the workers' request log."""
    slot_of = {}
    for line in ST.log_text().splitlines():
        m = re.search(r"chat id=(%s\S+) .* slot=(\d+)" % re.escape(id_prefix), line)
        if m:
            slot_of[m.group(1)] = int(m.group(2))
    return slot_of


class ProxyTest(unittest.TestCase):
    workers = 4
    env = {"RATE_LIMIT_INTERVAL_MS": "0"}

    @classmethod
    def setUpClass(cls):
        ST.stop_workers()
        ST.start_workers(cls.workers, cls.env)

    def setUp(self):
        MOCK.reset()
        # Each test starts with every key healthy and an empty timeline.
        # Rotation starts at key #0.
        ST.redis_cli("DEL", "{cerebras-proxy}:keys", "{cerebras-proxy}:slot",
                     "{cerebras-proxy}:rr")

    def req(self, method="GET", path="/", body=None, headers=None, port=None, **kw):
        r = request(port or ST.port, method, path, body, headers, **kw)
        RESPONSES.append(r.text())
        return r

    def chat(self, body=None, headers=None, path="/v1/chat/completions", **kw):
        return self.req("POST", path, body if body is not None else chat_body(), headers, **kw)

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


class TestRoutes(ProxyTest):
    def test_get_root_is_ok(self):
        r = self.req("GET", "/")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body, b"OK")
        self.assertCors(r)

    def test_head_root_is_ok_without_body(self):
        r = self.req("HEAD", "/")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body, b"")
        self.assertCors(r)

    def test_preflight_echoes_requested_headers(self):
        r = self.req("OPTIONS", "/v1/chat/completions", headers={
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, authorization, x-stainless-os"})
        self.assertEqual(r.status, 204)
        self.assertCors(r)
        self.assertIn("POST", r.header("Access-Control-Allow-Methods"))
        self.assertEqual(r.header("Access-Control-Allow-Headers"),
                         "content-type, authorization, x-stainless-os")
        self.assertEqual(r.header("Access-Control-Max-Age"), "86400")
        self.assertEqual(r.body, b"")

    def test_preflight_on_any_path(self):
        r = self.req("OPTIONS", "/whatever/else", headers={"Origin": "https://x.example"})
        self.assertEqual(r.status, 204)
        self.assertCors(r)

    def test_unknown_path_is_404(self):
        self.assertOpenAIError(self.req("GET", "/nope"), 404, "not_found")
        self.assertOpenAIError(self.chat(path="/v1/models"), 404, "not_found")

    def test_wrong_method_is_405_with_allow(self):
        r = self.req("GET", "/v1/chat/completions")
        self.assertOpenAIError(r, 405, "method_not_allowed")
        self.assertEqual(r.header("Allow"), "POST, OPTIONS")
        r = self.req("PUT", "/", body="x")
        self.assertOpenAIError(r, 405, "method_not_allowed")
        self.assertEqual(r.header("Allow"), "GET, HEAD, POST, OPTIONS")

    def test_post_root_and_v1_path_both_forward(self):
        for path in ("/", "/v1/chat/completions", "/chat/completions"):
            r = self.chat(path=path)
            self.assertEqual(r.status, 200, path)
            self.assertEqual(r.json()["object"], "chat.completion")
        recs = MOCK.requests()
        self.assertEqual([x["path"] for x in recs], ["/v1/chat/completions"] * 3)

    def test_mounted_under_prefix(self):
        r = self.req("GET", PREFIX + "/", port=ST.prefix_port)
        self.assertEqual((r.status, r.body), (200, b"OK"))
        r = self.chat(path=PREFIX + "/v1/chat/completions", port=ST.prefix_port)
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()["object"], "chat.completion")
        r = self.req("GET", PREFIX + "/v1/chat/completions", port=ST.prefix_port)
        self.assertOpenAIError(r, 405)
        r = self.req("GET", PREFIX + "/v1/nothing", port=ST.prefix_port)
        self.assertOpenAIError(r, 404)

    def test_empty_body_is_400(self):
        self.assertOpenAIError(self.chat(body=""), 400, "empty_body")
        self.assertEqual(MOCK.requests(), [])


class TestForwarding(ProxyTest):
    def test_non_stream_comes_back_byte_for_byte(self):
        r = self.chat(chat_body(mock={"reply": "exact bytes \u00e9\u6f22"}))
        self.assertEqual(r.status, 200)
        self.assertCors(r)
        rec = MOCK.requests()[0]
        self.assertEqual(r.body, rec["response_body"].encode())
        self.assertEqual(r.header("Content-Type"), "application/json")
        self.assertEqual(r.header("x-ratelimit-remaining-requests-day"), "14399")
        self.assertEqual(r.header("X-Mock-Seq"), str(rec["seq"]))

    def test_upstream_status_and_error_body_pass_through(self):
        body = '{"message":"bad field","type":"invalid_request_error","param":"x","code":"wrong_api_format"}'
        r = self.chat(chat_body(mock={"status": 422, "error_body": body}))
        self.assertEqual(r.status, 422)
        self.assertEqual(r.body, body.encode())
        self.assertCors(r)
        self.assertEqual(len(MOCK.requests()), 1)

    def test_upstream_refusing_our_key_is_502_without_its_body(self):
        r = self.chat(chat_body(mock={"status": 401,
                                      "error_body": '{"message":"Wrong API Key sk-test-ALP...0001"}'}))
        self.assertOpenAIError(r, 502, "upstream_auth_failed")
        self.assertNotIn(b"Wrong API Key", r.body)
        self.assertNotIn(b"0001", r.body)
        key = MOCK.requests()[0]["key"]
        self.assertRegex(ST.log_text(), r"API key #%d \([0-9a-f]{8}\) was refused by the upstream \(401\)"
                         % KEYS.index(key))

    def test_hop_by_hop_cookies_and_upstream_cors_are_dropped(self):
        r = self.chat()
        names = [k.lower() for k, _ in r.headers]
        self.assertNotIn("set-cookie", names)
        self.assertNotIn("keep-alive", names)
        self.assertNotIn("content-length", names)    # nginx frames the stream
        self.assertNotEqual(r.header("Server"), "mock-cerebras")
        self.assertEqual(r.header_all("Access-Control-Allow-Origin"), ["*"])

    def test_body_forwarded_unchanged_with_our_key_only(self):
        body = json.dumps(chat_body(temperature=0.25, extra="\u2603")).encode()
        r = self.chat(body, headers={"Content-Type": "application/json",
                                     "Authorization": "Bearer " + CLIENT_SECRET,
                                     "Cookie": "session=" + CLIENT_SECRET,
                                     "X-Request-Id": "rid-forward-1"})
        self.assertEqual(r.status, 200)
        rec = MOCK.requests()[0]
        self.assertEqual(rec["body_sha256"], hashlib.sha256(body).hexdigest())
        self.assertIn(rec["key"], KEYS)
        self.assertEqual(rec["headers"]["authorization"], "Bearer " + rec["key"])
        self.assertNotIn("cookie", rec["headers"])
        self.assertNotIn(CLIENT_SECRET, json.dumps(rec["headers"]))
        self.assertEqual(rec["headers"]["content-type"], "application/json")
        self.assertEqual(rec["headers"]["x-request-id"], "rid-forward-1")

    def test_upstream_always_gets_json_content_type(self):
        # A browser may send text/plain to avoid the preflight round trip.
        r = self.chat(json.dumps(chat_body()), headers={"Content-Type": "text/plain;charset=UTF-8"})
        self.assertEqual(r.status, 200)
        self.assertEqual(MOCK.requests()[0]["headers"]["content-type"], "application/json")

    def test_one_mib_body_intact(self):
        filler = "x" * (1024 * 1024)
        body = json.dumps(chat_body(messages=[{"role": "user", "content": filler}])).encode()
        self.assertGreater(len(body), 1024 * 1024)
        r = self.chat(body, headers={"Content-Type": "application/json"})
        self.assertEqual(r.status, 200, r.text()[:500])
        rec = MOCK.requests()[0]
        self.assertEqual(rec["body_len"], len(body))
        self.assertEqual(rec["body_sha256"], hashlib.sha256(body).hexdigest())

    def test_one_redis_round_trip_per_request(self):
        # The workers connected and loaded the script when they started, so
        # each request sends Redis exactly one command: EVALSHA. MONITOR
        # shows every command a client sent (those a script ran say "lua").
        mon = subprocess.Popen(["redis-cli", "-s", ST.redis_sock, "MONITOR"],
                               stdout=subprocess.PIPE, text=True)
        try:
            self.assertEqual(mon.stdout.readline().strip(), "OK")
            n = 10
            for _ in range(n):
                self.assertEqual(self.chat().status, 200)
            # A marker command: everything before it has been seen.
            ST.redis_cli("ECHO", "round-trip-test-end")
            lines = []
            while True:
                line = mon.stdout.readline()
                self.assertTrue(line, "MONITOR ended early")
                if "round-trip-test-end" in line:
                    break
                lines.append(line)
        finally:
            mon.kill()
            mon.wait()
        sent = [l for l in lines if " lua]" not in l]
        cmds = [l.split('"')[1].lower() for l in sent]
        if APACHE:
            # mod_fcgid starts processes on demand; each loads the script
            # as it starts, before it accepts its first request.
            cmds = [c for c in cmds if c != "script"]
        self.assertEqual(cmds, ["evalsha"] * n, sent)

    def test_upstream_connection_is_reused(self):
        # Each worker opened its upstream connection when it started (a
        # HEAD warm-up): no request, not even a worker's first, opens one.
        for i in range(12):
            self.assertEqual(self.chat(headers={"X-Request-Id": "reuse-%d" % i}).status, 200)
        lines = [l for l in ST.log_text().splitlines() if " chat id=reuse-" in l]
        conns = [int(re.search(r"new_conns=(-?\d+)", l).group(1)) for l in lines]
        self.assertEqual(conns, [0] * 12, lines)


class TestStreaming(ProxyTest):
    def test_each_event_arrives_before_the_next_is_sent(self):
        r = self.chat(chat_body(stream=True, mock={"events": 10, "gap_ms": 150}))
        self.assertEqual(r.status, 200)
        self.assertCors(r)
        self.assertEqual(r.header("Content-Type"), "text/event-stream")
        self.assertEqual(r.header("Cache-Control"), "no-cache")
        rec = MOCK.requests()[0]
        sent = rec["event_times"]
        self.assertEqual(len(sent), 10)
        lags = stream_arrival_check(self, r, sent, 10)
        print("\n    stream lag ms (mock send -> client recv): max %.2f, mean %.2f"
              % (max(lags), sum(lags) / len(lags)), file=sys.stderr, end=" ")
        events = r.events()
        self.assertEqual(events[0], ": mock heartbeat")
        self.assertEqual(events[-1], "data: [DONE]")

    def test_client_leaving_mid_stream_aborts_upstream_and_worker_survives(self):
        seen = []

        def on_data(resp):
            seen.append(resp.body.count(b"mock_index"))
            return resp.body.count(b"mock_index") >= 2

        r = self.chat(chat_body(stream=True, mock={"events": 20, "gap_ms": 200}), on_data=on_data)
        self.assertEqual(r.status, 200)
        t_left = time.monotonic()
        rec = stack.wait_for(lambda: (lambda x: x[0] if x and x[0]["closed_by_client"] else None)(
            MOCK.requests()), 5, "the mock to see the upstream connection closed")
        self.assertLess(len(rec["event_times"]), 20)
        closed_after = rec["t_done"] - t_left
        print("\n    upstream closed %.0f ms after the client left"
              % (closed_after * 1000), file=sys.stderr, end=" ")
        # The worker notices at its next write, one event (200 ms) later,
        # and the mock at its own next write. mod_fcgid passes the hang-up
        # on one write later still.
        self.assertLess(closed_after, 2.0 if APACHE else 1.0)
        for _ in range(4):
            self.assertEqual(self.chat().status, 200)
        self.assertNotIn("killed by signal", ST.log_text())


@unittest.skipIf(APACHE, "mod_fcgid sends one request at a time to a process: WORKER_THREADS stays 1")
class TestThreads(ProxyTest):
    """--threads: one process serves several requests at once."""
    workers = 2
    env = {"RATE_LIMIT_INTERVAL_MS": "0", "WORKER_THREADS": "4"}

    def test_eight_streams_at_once_on_two_processes(self):
        self.restart_workers(self.env)
        n = 8
        with concurrent.futures.ThreadPoolExecutor(n) as ex:
            rs = list(ex.map(lambda i: self.chat(
                chat_body(stream=True, mock={"events": 6, "gap_ms": 150}),
                headers={"X-Request-Id": "thr-%d" % i}), range(n)))
        for r in rs:
            self.assertEqual(r.status, 200)
            self.assertEqual(r.body.count(b"mock_index"), 6)
            self.assertTrue(r.body.endswith(b"data: [DONE]\n\n"))
        recs = self.wait_records(n)
        # All eight were streaming at the same time ...
        self.assertLess(max(x["t"] for x in recs), min(x["t_done"] for x in recs))
        # ... served by two processes, four each.
        pids = re.findall(r"cerebras-proxy\[(\d+)\]: chat id=thr-", ST.log_text())
        self.assertEqual(sorted(pids.count(p) for p in set(pids)), [4, 4])

    def test_spacing_holds_between_threads(self):
        self.restart_workers({"RATE_LIMIT_INTERVAL_MS": "100", "WORKER_THREADS": "6"}, n=2)
        n = 12
        with concurrent.futures.ThreadPoolExecutor(n) as ex:
            rs = list(ex.map(lambda i: self.chat(headers={"X-Request-Id": "thsp-%d" % i}),
                             range(n)))
        self.assertEqual([r.status for r in rs], [200] * n)
        sent = sorted(float(m) for m in re.findall(r"chat id=thsp-\d+ .* sent_mono=([\d.]+)",
                                                   ST.log_text()))
        gaps = [(b - a) * 1000 for a, b in zip(sent, sent[1:])]
        self.assertEqual(len(gaps), n - 1)
        self.assertGreaterEqual(min(gaps), 100 - SEND_JITTER_MS, gaps)
        self.assertAlmostEqual(sorted(gaps)[len(gaps) // 2], 100, delta=1.0)

    def test_sigterm_drains_running_streams_then_exits(self):
        self.restart_workers(self.env, n=1)
        p = ST.procs["workers"]
        n = 3
        lock = threading.Lock()
        started = set()

        def on_data(resp):
            # SIGTERM once all three streams are running (each has had an
            # event): a request not yet accepted would rightly be refused.
            if b"mock_index" in resp.body:
                with lock:
                    if id(resp) not in started:
                        started.add(id(resp))
                        if len(started) == n:
                            p.terminate()
            return False

        with concurrent.futures.ThreadPoolExecutor(n) as ex:
            rs = list(ex.map(lambda _: self.chat(
                chat_body(stream=True, mock={"events": 8, "gap_ms": 150}), on_data=on_data),
                range(n)))
        self.assertEqual(len(started), n)
        for r in rs:   # every stream already running was finished
            self.assertEqual(r.status, 200)
            self.assertTrue(r.body.endswith(b"data: [DONE]\n\n"), r.body[-200:])
        self.assertEqual(p.wait(10), 0)
        self.assertEqual(self.req("GET", "/health").status, 502)   # nobody accepts now

    def test_drain_deadline_cuts_what_is_left(self):
        self.restart_workers(dict(self.env, DRAIN_TIMEOUT_MS="300"), n=1)
        p = ST.procs["workers"]
        marks = []
        on_data = self.sigterm_on_first_event(p, marks)   # SIGTERM mid-stream

        r = self.chat(chat_body(stream=True, mock={"events": 20, "gap_ms": 200}), on_data=on_data)
        self.assertEqual(p.wait(10), 0)
        took = time.monotonic() - marks[0]
        self.assertEqual(r.status, 200)
        self.assertFalse(r.body.endswith(b"data: [DONE]\n\n"))
        self.assertLess(r.body.count(b"mock_index"), 20)
        # 300 ms of grace, not the 4 s the stream still had to go.
        self.assertLess(took, 2.0)
        self.assertIn("still running after DRAIN_TIMEOUT_MS=300", ST.log_text())


class TestRotation(ProxyTest):
    env = {"RATE_LIMIT_INTERVAL_MS": "20"}

    def test_three_keys_in_strict_rotation_across_four_workers(self):
        n = 12
        with concurrent.futures.ThreadPoolExecutor(n) as ex:
            rs = list(ex.map(lambda i: self.chat(headers={"X-Request-Id": "rot-%d" % i}),
                             range(n)))
        self.assertEqual([r.status for r in rs], [200] * n)
        key_of = {x["headers"]["x-request-id"]: x["key"] for x in self.wait_records(n)}
        # In the order the scheduler handed out the slots, the keys cycle.
        slot_of = slots_from_log("rot-")
        order = sorted(key_of, key=lambda rid: slot_of[rid])
        keys = [key_of[rid] for rid in order]
        self.assertEqual(set(keys), set(KEYS))
        for a, b in zip(keys, keys[1:]):
            self.assertEqual(KEYS.index(b), (KEYS.index(a) + 1) % 3, keys)
        pids = set(re.findall(r"cerebras-proxy\[(\d+)\]: chat id=rot-", ST.log_text()))
        if not APACHE:   # mod_fcgid decides itself how many processes to spawn
            self.assertGreaterEqual(len(pids), 2, "requests were served by one worker only")


class TestSpacing(ProxyTest):
    env = {"RATE_LIMIT_INTERVAL_MS": "200"}

    def test_twenty_concurrent_requests_spaced_in_slot_order(self):
        # Warm up: one request per worker (each holds its worker while it
        # waits for its slot), so every worker has its upstream connection
        # and the measurement does not include TLS handshakes.
        with concurrent.futures.ThreadPoolExecutor(self.workers) as ex:
            list(ex.map(lambda _: self.chat(), range(self.workers)))
        MOCK.reset()
        n = 20
        with concurrent.futures.ThreadPoolExecutor(n) as ex:
            rs = list(ex.map(lambda i: self.chat(headers={"X-Request-Id": "spacing-%d" % i}),
                             range(n)))
        self.assertEqual([r.status for r in rs], [200] * n)
        recs = sorted(self.wait_records(n), key=lambda x: x["t"])
        gaps = [(b["t"] - a["t"]) * 1000 for a, b in zip(recs, recs[1:])]
        print("\n    gaps ms at the mock: min %.2f max %.2f mean %.2f"
              % (min(gaps), max(gaps), sum(gaps) / len(gaps)), file=sys.stderr, end=" ")
        self.assertGreaterEqual(min(gaps), 200 - ARRIVAL_JITTER_MS, gaps)
        # Order of arrival == order of the slots Redis handed out.
        slot_of = slots_from_log("spacing-")
        arrival = [x["headers"]["x-request-id"] for x in recs]
        self.assertEqual(arrival, sorted(arrival, key=lambda rid: slot_of[rid]))
        slots = sorted(slot_of[r] for r in arrival)
        self.assertGreaterEqual(min(b - a for a, b in zip(slots, slots[1:])), 200000)
        # When the workers really sent (CLOCK_MONOTONIC, as the mock's t).
        sent = {}
        for line in ST.log_text().splitlines():
            m = re.search(r"chat id=(spacing-\d+) .* sent_mono=([\d.]+)", line)
            if m:
                sent[m.group(1)] = float(m.group(2))
        times = sorted(sent[r] for r in arrival)
        send_gaps = [(b - a) * 1000 for a, b in zip(times, times[1:])]
        print("send gaps ms at the workers: min %.2f" % min(send_gaps), file=sys.stderr, end=" ")
        self.assertGreaterEqual(min(send_gaps), 200 - SEND_JITTER_MS, send_gaps)
        self.assertAlmostEqual(sorted(send_gaps)[len(send_gaps) // 2], 200, delta=1.0)


class TestNoSpacing(ProxyTest):
    workers = 20
    env = {"RATE_LIMIT_INTERVAL_MS": "0"}

    def test_interval_zero_sends_at_once(self):
        n = 20
        # Warm-up: mod_fcgid spawns its processes on demand, a few per
        # second; one slow round makes sure all 20 exist (harmless with nginx).
        with concurrent.futures.ThreadPoolExecutor(n) as ex:
            list(ex.map(lambda _: self.chat(chat_body(mock={"delay_ms": 3000})), range(n)))
        MOCK.reset()
        with concurrent.futures.ThreadPoolExecutor(n) as ex:
            rs = list(ex.map(lambda _: self.chat(chat_body(mock={"delay_ms": 1000})), range(n)))
        self.assertEqual([r.status for r in rs], [200] * n)
        recs = sorted(self.wait_records(n), key=lambda x: x["t"])
        span = (recs[-1]["t"] - recs[0]["t"]) * 1000
        print("\n    20 requests reached the mock within %.1f ms" % span, file=sys.stderr, end=" ")
        # With 200 ms spacing this would take 3800 ms; all overlap instead.
        self.assertLess(span, 1000)
        self.assertLess(max(x["t"] for x in recs), min(x["t_done"] for x in recs))


class TestFailures(ProxyTest):
    env = {"RATE_LIMIT_INTERVAL_MS": "0"}

    @classmethod
    def tearDownClass(cls):
        ST.stop_workers()
        ST.start_workers(cls.workers, cls.env)

    def test_upstream_down_is_502(self):
        port = stack.free_port()   # nothing listens there
        self.restart_workers({"RATE_LIMIT_INTERVAL_MS": "0",
                              "CEREBRAS_API_BASE": "https://127.0.0.1:%d/v1" % port})
        self.assertOpenAIError(self.chat(), 502, "upstream_unreachable")
        self.assertOpenAIError(self.chat(chat_body(stream=True)), 502)

    def test_upstream_certificate_is_verified(self):
        # A CA bundle without the mock's CA: the handshake must fail, so
        # nothing reaches the mock (the store is shared by all threads, and
        # verification is still libcurl's).
        other_ca = os.path.join(ST.dir, "other-ca")
        os.makedirs(other_ca, exist_ok=True)
        subprocess.run(["bash", os.path.join(ROOT, "tests", "gen_certs.sh"), other_ca],
                       check=True, stdout=subprocess.DEVNULL)
        self.restart_workers({"RATE_LIMIT_INTERVAL_MS": "0", "WORKER_THREADS": "2",
                              "CEREBRAS_CA_FILE": os.path.join(other_ca, "ca.crt")})
        self.assertOpenAIError(self.chat(), 502, "upstream_unreachable")
        self.assertEqual(MOCK.requests(), [])
        self.assertIn("certificate", ST.log_text())

    def test_redis_down_is_503_when_told_to_refuse(self):
        self.restart_workers({"RATE_LIMIT_INTERVAL_MS": "0", "REDIS_FALLBACK": "refuse",
                              "REDIS_URL": "unix://" + os.path.join(ST.dir, "no-such.sock")})
        r = self.chat()
        self.assertOpenAIError(r, 503, "scheduler_unavailable")
        self.assertEqual(r.header("Retry-After"), "1")
        self.assertEqual(MOCK.requests(), [])
        # The other routes do not need Redis.
        self.assertEqual(self.req("GET", "/").status, 200)
        self.assertIn("refusing chat requests until it is back", ST.log_text())

    def test_unreachable_redis_falls_back_to_per_host_spacing(self):
        self.restart_workers({"RATE_LIMIT_INTERVAL_MS": "200",
                              "REDIS_URL": "unix://" + os.path.join(ST.dir, "no-such.sock")})
        self.assert_spaced_burst(8)
        self.assertIn("scheduling per host until it is back", ST.log_text())

    def test_no_redis_configured_still_spaces_requests(self):
        self.restart_workers({"RATE_LIMIT_INTERVAL_MS": "200", "REDIS_URL": "none"})
        self.assert_spaced_burst(8)
        self.assertNotIn("unavailable", ST.log_text().split("Initialized")[-1])

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

    def test_redis_killed_and_restarted_loses_no_request(self):
        self.restart_workers({"RATE_LIMIT_INTERVAL_MS": "200"})
        self.assertEqual(self.chat().status, 200)
        ST.stop_proc("redis")
        MOCK.reset()
        self.assert_spaced_burst(6)            # Redis down: per host, spaced
        ST.start_redis()
        MOCK.reset()
        ST.redis_cli("DEL", "{cerebras-proxy}:slot")

        def coordinated_again():
            self.assertEqual(self.chat().status, 200)
            return ST.redis_cli("EXISTS", "{cerebras-proxy}:slot") == "1"
        # Workers retry Redis after a backoff of at most 5 s.
        stack.wait_for(coordinated_again, 15, "workers to use Redis again", interval=0.2)
        self.assertIn("Redis is back", ST.log_text())

    def test_upstream_timeout_is_504(self):
        self.restart_workers({"RATE_LIMIT_INTERVAL_MS": "0",
                              "UPSTREAM_FIRST_BYTE_TIMEOUT_MS": "300"})
        self.assertOpenAIError(self.chat(chat_body(mock={"delay_ms": 2000})), 504, "upstream_timeout")

    @unittest.skipIf(APACHE, "mod_fcgid does not tell a silent worker that the client left "
                     "(it notices only when it next writes, or at FcgidIOTimeout)")
    def test_client_leaving_while_queued_is_never_sent(self):
        self.restart_workers({"RATE_LIMIT_INTERVAL_MS": "3000"}, n=2)
        self.assertEqual(self.chat(headers={"X-Request-Id": "q-first"}).status, 200)
        # The next slot is ~3 s away; this client gives up after 0.3 s.
        t0 = time.monotonic()
        self.chat(headers={"X-Request-Id": "q-gone"}, close_after=0.3, timeout=0.3)
        stack.wait_for(lambda: "id=q-gone" in ST.log_text() and "left while queued" in ST.log_text(),
                       2.5, "the worker to notice the client left")
        self.assertLess(time.monotonic() - t0, 2.9, "noticed only when the slot came")
        # The abandoned slot was given back: the next request takes it.
        self.assertEqual(self.chat(headers={"X-Request-Id": "q-third"}).status, 200)
        ids = [x["headers"].get("x-request-id") for x in MOCK.requests()]
        self.assertEqual(ids, ["q-first", "q-third"])
        slots = slots_from_log("q-")
        self.assertEqual(slots["q-third"], slots["q-gone"])
        self.assertEqual(slots["q-gone"] - slots["q-first"], 3000000)

    @unittest.skipIf(APACHE, "under Apache, mod_fcgid owns the worker processes")
    def test_sigterm_lets_a_running_stream_finish(self):
        self.restart_workers({"RATE_LIMIT_INTERVAL_MS": "0"}, n=2)
        p = ST.procs["workers"]
        sent = []
        on_data = self.sigterm_on_first_event(p, sent)   # SIGTERM mid-stream

        r = self.chat(chat_body(stream=True, mock={"events": 8, "gap_ms": 100}), on_data=on_data)
        self.assertTrue(sent)
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body.count(b"mock_index"), 8)
        self.assertTrue(r.body.endswith(b"data: [DONE]\n\n"))
        self.assertEqual(p.wait(10), 0)

    def test_script_flush_falls_back_to_eval(self):
        self.restart_workers({"RATE_LIMIT_INTERVAL_MS": "0"}, n=1)
        self.assertEqual(self.chat().status, 200)
        self.assertEqual(ST.redis_cli("SCRIPT", "FLUSH"), "OK")
        self.assertEqual(self.chat().status, 200)
        self.assertEqual(self.chat().status, 200)


@unittest.skipIf(APACHE, "does not involve the web server (runs with nginx)")
class TestConfig(unittest.TestCase):
    def run_bad(self, env):
        full = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "CEREBRAS_API_KEYS": ",".join(KEYS)}
        full.update(env)
        full = {k: v for k, v in full.items() if v is not None}
        sock = os.path.join(ST.dir, "bad.sock")
        p = subprocess.run([BINARY, "--listen", "unix:" + sock, "--processes", "1"],
                           env=full, capture_output=True, text=True, timeout=10)
        self.assertFalse(os.path.exists(sock), "bound a socket despite a bad config")
        return p

    def test_bad_values_stop_at_start_with_one_line(self):
        cases = [
            ({"CEREBRAS_API_KEYS": None}, "CEREBRAS_API_KEYS"),
            ({"CEREBRAS_API_KEYS": " , ,"}, "CEREBRAS_API_KEYS"),
            ({"RATE_LIMIT_INTERVAL_MS": "fast"}, "RATE_LIMIT_INTERVAL_MS"),
            ({"RATE_LIMIT_INTERVAL_MS": "-5"}, "RATE_LIMIT_INTERVAL_MS"),
            ({"REDIS_URL": "http://localhost"}, "REDIS_URL"),
            ({"REDIS_URL": "redis://localhost:99999"}, "REDIS_URL"),
            ({"CEREBRAS_API_BASE": "api.cerebras.ai"}, "CEREBRAS_API_BASE"),
            ({"CEREBRAS_CA_FILE": "/nonexistent/ca.pem"}, "CEREBRAS_CA_FILE"),
            ({"CEREBRAS_CA_FILE": os.path.join(ROOT, "README.md")}, "CEREBRAS_CA_FILE"),
        ]
        for env, var in cases:
            p = self.run_bad(env)
            self.assertEqual(p.returncode, 1, (env, p.stderr))
            lines = p.stderr.strip().splitlines()
            self.assertEqual(len(lines), 1, (env, p.stderr))
            self.assertTrue(lines[0].startswith("cerebras-proxy: %s: " % var), (env, lines))
            for k in KEYS:
                self.assertNotIn(k, p.stderr)

    def test_check_config_masks_secrets(self):
        env = dict(os.environ, CEREBRAS_API_KEYS=",".join(KEYS),
                   REDIS_URL="redis://:hunter2secret@127.0.0.1:6379/3")
        p = subprocess.run([BINARY, "--check-config"], env=env, capture_output=True,
                           text=True, timeout=10)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("CEREBRAS_API_KEYS=3 keys", p.stdout)
        self.assertIn("RATE_LIMIT_INTERVAL_MS=200", p.stdout)
        for secret in KEYS + ["hunter2secret"]:
            self.assertNotIn(secret, p.stdout)


BROWSER_PAGE = """<!doctype html><title>cross-origin client</title><script>
const P = "http://127.0.0.1:%(port)d";
async function run() {
  const out = {};
  try {
    let r = await fetch(P + "/v1/chat/completions", {method: "POST",
      headers: {"Content-Type": "application/json", "Authorization": "Bearer browser-token"},
      body: JSON.stringify({model: "m", messages: [{role: "user", content: "hi"}]})});
    out.plain = {status: r.status, body: await r.json()};
    r = await fetch(P + "/v1/chat/completions", {method: "POST",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify({model: "m", stream: true, mock: {events: 5, gap_ms: 150}})});
    const rd = r.body.getReader(), dec = new TextDecoder();
    let text = "";
    const reads = [];
    for (;;) {
      const {done, value} = await rd.read();
      if (done) break;
      text += dec.decode(value, {stream: true});
      reads.push([performance.now(), (text.match(/mock_index/g) || []).length]);
    }
    out.stream = {status: r.status, type: r.headers.get("content-type"), text: text, reads: reads};
    r = await fetch(P + "/nope");
    out.notfound = {status: r.status, body: await r.json()};
  } catch (e) {
    out.error = String(e);
  }
  await fetch("/report", {method: "POST", body: JSON.stringify(out)});
}
run();
</script>"""


@unittest.skipUnless(shutil.which("chromium"), "chromium is not installed (apt-get install chromium)")
class TestBrowser(ProxyTest):
    """A real browser on another origin calls the proxy with fetch()."""

    def test_cross_origin_fetch_plain_stream_and_error(self):
        import http.server
        import threading

        report = {}
        done = threading.Event()
        page = (BROWSER_PAGE % {"port": ST.port}).encode()

        class Page(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                report.update(json.loads(self.rfile.read(n)))
                self.send_response(204)
                self.end_headers()
                done.set()

        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        profile = os.path.join(ST.dir, "chromium-profile")
        browser = subprocess.Popen(
            ["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--user-data-dir=" + profile,
             "http://127.0.0.1:%d/" % srv.server_address[1]],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            self.assertTrue(done.wait(60), "the page never reported back")
        finally:
            browser.terminate()
            try:
                browser.wait(10)
            except subprocess.TimeoutExpired:
                browser.kill()
                browser.wait()
            srv.shutdown()
            srv.server_close()
        self.assertNotIn("error", report, report.get("error"))
        self.assertEqual(report["plain"]["status"], 200)
        self.assertEqual(report["plain"]["body"]["object"], "chat.completion")
        # The preflight really happened (custom Authorization header).
        with open(ST.access_log()) as f:
            self.assertIn('"OPTIONS /v1/chat/completions HTTP/1.1" 204', f.read())
        st = report["stream"]
        self.assertEqual((st["status"], st["type"]), (200, "text/event-stream"))
        self.assertIn("data: [DONE]", st["text"])
        # The events came in separate reads, ~150 ms apart: not buffered.
        firsts = {}
        for t, count in st["reads"]:
            firsts.setdefault(count, t)
        self.assertTrue(all(c in firsts for c in range(1, 6)), st["reads"])
        gaps = [firsts[c + 1] - firsts[c] for c in range(1, 5)]
        # Buffered, they would come in one read; paced 150 ms apart, they
        # come in separate reads over ~600 ms (browser timers and a loaded
        # machine blur single gaps).
        self.assertGreater(min(gaps), 20, gaps)
        self.assertGreater(firsts[5] - firsts[1], 450, gaps)
        self.assertEqual(report["notfound"]["status"], 404)
        self.assertEqual(report["notfound"]["body"]["error"]["code"], "not_found")
        # The browser's own Authorization never went upstream.
        for rec in MOCK.requests():
            self.assertNotIn("browser-token", json.dumps(rec["headers"]))


def stream_arrival_check(test, r, sent, n):
    """Each of the n events reached the client before the next was sent."""
    got = []
    for i in range(n):
        marker = ('"mock_index": %d,' % i).encode()
        for t, body in r.arrivals:
            end = body.find(b"\n\n", body.find(marker)) if marker in body else -1
            if end >= 0:
                got.append(t)
                break
    test.assertEqual(len(got), n)
    lags = [(g - s) * 1000 for g, s in zip(got, sent)]
    for i in range(n - 1):
        test.assertLess(got[i], sent[i + 1],
                        "event %d arrived after event %d was sent (lags ms %s)"
                        % (i, i + 1, [round(x, 2) for x in lags]))
    return lags


@unittest.skipUnless(APACHE, "runs behind Apache (mod_cgid)")
class TestCGI(ProxyTest):
    """The same binary as a plain CGI program: one request per process."""

    CGI = "/cgi-bin/cerebras-proxy.cgi"

    def test_health_and_errors(self):
        r = self.req("GET", self.CGI + "/")
        self.assertEqual((r.status, r.body), (200, b"OK"))
        self.assertCors(r)
        self.assertOpenAIError(self.req("GET", self.CGI + "/nope"), 404, "not_found")
        self.assertOpenAIError(self.req("GET", self.CGI + "/v1/chat/completions"), 405)

    def test_chat_and_stream(self):
        r = self.chat(path=self.CGI + "/v1/chat/completions")
        self.assertEqual(r.status, 200, r.text())
        rec = MOCK.requests()[0]
        self.assertEqual(r.body, rec["response_body"].encode())
        self.assertIn(rec["key"], KEYS)
        MOCK.reset()
        r = self.chat(chat_body(stream=True, mock={"events": 5, "gap_ms": 150}),
                      path=self.CGI + "/v1/chat/completions")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.header("Content-Type"), "text/event-stream")
        lags = stream_arrival_check(self, r, MOCK.requests()[0]["event_times"], 5)
        print("\n    CGI stream lag ms: max %.2f" % max(lags), file=sys.stderr, end=" ")


class TestServerTimeouts(ProxyTest):
    """The web server's I/O timeout is between two reads, not per request.

    The server is rendered with that timeout cut to 2 s so that a paced
    stream longer than it runs in a few seconds; the shipped values are
    checked to be far larger.
    """
    IO_TIMEOUT = 2

    @classmethod
    def setUpClass(cls):
        ST.io_timeout = cls.IO_TIMEOUT
        ST.restart_server()
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        ST.io_timeout = None
        ST.restart_server()
        ST.stop_workers()
        ST.start_workers(cls.workers, cls.env)

    def test_stream_longer_than_the_timeout_is_not_cut(self):
        t0 = time.monotonic()
        r = self.chat(chat_body(stream=True, mock={"events": 6, "gap_ms": 1000}))
        took = time.monotonic() - t0
        self.assertGreater(took, 2.5 * self.IO_TIMEOUT)
        self.assertEqual(r.body.count(b"mock_index"), 6)
        self.assertTrue(r.body.endswith(b"data: [DONE]\n\n"))

    def test_silence_longer_than_the_timeout_is_cut(self):
        # The control: the shortened timeout is really in force.
        r = self.chat(chat_body(stream=True, mock={"events": 3, "stall_after_events": 1,
                                                   "stall_ms": 1000 * (self.IO_TIMEOUT + 2)}))
        self.assertEqual(r.status, 200)
        self.assertNotIn(b"[DONE]", r.body)
        # Let the mock's answer end (in either way) before the next test.
        def ended():
            recs = MOCK.requests()
            return recs and (recs[0]["finished"] or recs[0]["closed_by_client"])
        stack.wait_for(ended, 15, "the mock's answer to end")

    def test_shipped_timeouts_are_far_longer(self):
        with open(os.path.join(ROOT, "nginx.conf.example")) as f:
            nginx = f.read()
        with open(os.path.join(ROOT, "apache.conf.example")) as f:
            apache = f.read()
        # The longest silence the workers allow by default: the queue bound
        # plus the first-byte timeout (30 + 120 s); the idle timeout is 120 s.
        idle_default_s = 150
        read = int(re.search(r"^\s*fastcgi_read_timeout\s+(\d+)s;", nginx, re.M).group(1))
        io = int(re.search(r"^FcgidIOTimeout (\d+)$", apache, re.M).group(1))
        busy = int(re.search(r"^FcgidBusyTimeout (\d+)$", apache, re.M).group(1))
        self.assertGreaterEqual(read, 4 * idle_default_s)   # nginx default: 60
        self.assertGreaterEqual(io, 4 * idle_default_s)     # mod_fcgid default: 40
        self.assertGreaterEqual(busy, 3600)                 # mod_fcgid default: 300


class TestKeyHealth(ProxyTest):
    """429s rest a key, 401/403 disable it, 5xx and stalls fail over: all
    before the first byte reaches the client, shared through Redis."""
    env = {"RATE_LIMIT_INTERVAL_MS": "0", "UPSTREAM_IDLE_TIMEOUT_MS": "600",
           "UPSTREAM_FIRST_BYTE_TIMEOUT_MS": "600"}

    def tearDown(self):
        MOCK.config({})

    def keys_seen(self):
        return [x["key"] for x in MOCK.requests()]

    def test_429_key_rests_for_retry_after_then_serves_again(self):
        MOCK.config({KEYS[1]: {"status": 429, "headers": {"Retry-After": "2"}}})
        t429 = time.monotonic()
        for _ in range(9):
            self.assertEqual(self.chat().status, 200)
        seen = self.keys_seen()
        self.assertEqual(seen.count(KEYS[1]), 1, seen)       # tried once, then skipped
        self.assertEqual(len(seen), 10)                      # 9 answers + 1 retry
        self.assertRegex(ST.log_text(), r"API key #1 \([0-9a-f]{8}\) rate limited \(429\): resting 2000 ms")
        MOCK.config({})
        MOCK.reset()

        def used_again():
            self.assertEqual(self.chat().status, 200)
            return KEYS[1] in self.keys_seen()
        stack.wait_for(used_again, 10, "key #1 to be used again", interval=0.1)
        self.assertGreater(time.monotonic() - t429, 1.9)

    def test_401_key_is_disabled_for_everyone(self):
        MOCK.config({KEYS[0]: {"status": 401}})
        rs = [self.chat() for _ in range(6)]
        self.assertEqual([r.status for r in rs], [200] * 6)
        self.assertEqual(self.keys_seen().count(KEYS[0]), 1)
        self.assertRegex(ST.log_text(), r"API key #0 \([0-9a-f]{8}\) was refused by the upstream \(401\): disabled for 3600 s")
        till = int(ST.redis_cli("HGET", "{cerebras-proxy}:keys", "c0"))
        now_s, now_us = ST.redis_cli("TIME").split()
        rest = till - (int(now_s) * 1000000 + int(now_us))
        self.assertGreater(rest, 3500 * 1000000)

    def test_all_keys_429_gives_429_with_retry_after(self):
        MOCK.config({k: {"status": 429, "headers": {"Retry-After": "5"}} for k in KEYS})
        r = self.chat()
        # Three attempts, the last answer relayed as Cerebras sent it.
        self.assertEqual(r.status, 429)
        self.assertEqual(r.header("Retry-After"), "5")
        self.assertEqual(sorted(self.keys_seen()), sorted(KEYS))
        MOCK.reset()
        r = self.chat()
        err = self.assertOpenAIError(r, 429, "all_keys_cooling_down")
        self.assertIn(int(r.header("Retry-After")), (4, 5))
        self.assertEqual(MOCK.requests(), [])

    def test_500_fails_over_and_does_not_rest_the_key(self):
        MOCK.config({KEYS[0]: {"status": 500}})
        self.assertEqual(self.chat().status, 200)
        self.assertEqual(self.keys_seen(), [KEYS[0], KEYS[1]])
        MOCK.config({})
        MOCK.reset()
        for _ in range(3):
            self.assertEqual(self.chat().status, 200)
        self.assertIn(KEYS[0], self.keys_seen())

    def test_stall_before_headers_fails_over(self):
        MOCK.config({KEYS[0]: {"delay_ms": 5000}})
        t0 = time.monotonic()
        r = self.chat()
        self.assertEqual(r.status, 200)
        self.assertLess(time.monotonic() - t0, 4)
        self.assertEqual(self.keys_seen()[:2], [KEYS[0], KEYS[1]])

    def test_every_attempt_failing_ends_in_one_clean_error(self):
        MOCK.config({k: {"status": 503} for k in KEYS})
        r = self.chat()
        self.assertEqual(r.status, 503)      # the last answer, relayed
        self.assertCors(r)
        self.assertEqual(len(MOCK.requests()), 3)

    def test_client_errors_are_not_retried(self):
        MOCK.config({KEYS[0]: {"status": 400}})
        self.assertEqual(self.chat().status, 400)
        self.assertEqual(self.keys_seen(), [KEYS[0]])

    def test_stream_broken_mid_way_ends_with_an_error_event(self):
        for mock in ({"events": 5, "close_after_events": 2},
                     {"events": 5, "stall_after_events": 2, "stall_ms": 3000}):
            MOCK.reset()
            r = self.chat(chat_body(stream=True, mock=mock))
            self.assertEqual(r.status, 200)
            self.assertEqual(r.body.count(b"mock_index"), 2, mock)
            self.assertNotIn(b"[DONE]", r.body)
            last = r.events()[-1]
            self.assertTrue(last.startswith("event: error\ndata: "), last)
            err = json.loads(last.split("data: ", 1)[1])["error"]
            self.assertEqual(err["code"], "stream_interrupted")
            self.assertEqual(len(MOCK.requests()), 1)   # never retried once started


class TestPerKeyScope(ProxyTest):
    """RATE_LIMIT_SCOPE=key: each key its own 200 ms timeline."""
    workers = 16
    keys4 = KEYS + ["sk-test-DELTA-0004"]
    env = {"RATE_LIMIT_INTERVAL_MS": "200", "RATE_LIMIT_SCOPE": "key",
           "CEREBRAS_API_KEYS": ",".join(KEYS + ["sk-test-DELTA-0004"])}

    def burst(self, n, id_prefix):
        """Warm-up (every process spawned and connected), then n requests
        from 16 clients; returns the mock's records in arrival order."""
        with concurrent.futures.ThreadPoolExecutor(self.workers) as ex:
            list(ex.map(lambda _: self.chat(chat_body(mock={"delay_ms": 3000})),
                        range(self.workers)))
        MOCK.reset()
        with concurrent.futures.ThreadPoolExecutor(16) as ex:
            rs = list(ex.map(lambda i: self.chat(headers={"X-Request-Id": "%s%d" % (id_prefix, i)}),
                             range(n)))
        self.assertEqual([r.status for r in rs], [200] * n)
        return sorted(self.wait_records(n), key=lambda x: x["t"])

    def test_four_keys_give_four_times_the_rate(self):
        n = 60
        recs = self.burst(n, "pk-")
        # n requests over the span plus one interval (the keys run side by
        # side: 15 slots each, 14 intervals apart).
        rate = n / (recs[-1]["t"] - recs[0]["t"] + 0.2)
        print("\n    per-key scope, 4 keys x 200 ms: %.1f req/s" % rate, file=sys.stderr, end=" ")
        self.assertGreater(rate, 17)          # 4 x 5 = 20 in theory
        self.assertLess(rate, 20.5)
        self.assertEqual({x["key"] for x in recs}, set(self.keys4))
        # Per key, when the workers sent (their log: key index, CLOCK_MONOTONIC).
        # The mock's own stamps are too noisy with 16 busy processes on 2
        # cores to judge single gaps; it judged the rate above.
        sent = {}
        for line in ST.log_text().splitlines():
            m = re.search(r"chat id=pk-\d+ key=#(\d+)\(.* sent_mono=([\d.]+)", line)
            if m:
                sent.setdefault(int(m.group(1)), []).append(float(m.group(2)))
        self.assertEqual(sorted(sent), [0, 1, 2, 3])
        for k, ts in sent.items():
            ts.sort()
            gaps = [(b - a) * 1000 for a, b in zip(ts, ts[1:])]
            self.assertGreaterEqual(min(gaps), 200 - SEND_JITTER_MS, (k, gaps))
            self.assertAlmostEqual(sorted(gaps)[len(gaps) // 2], 200, delta=1.0)

    def test_global_floor_spaces_all_keys(self):
        # 4 keys x 200 ms would allow 20/s; a 100 ms floor caps it at 10/s.
        self.restart_workers(dict(self.env, RATE_LIMIT_GLOBAL_INTERVAL_MS="100"))
        n = 30
        recs = self.burst(n, "fl-")
        sent = sorted(float(t) for t in re.findall(r"chat id=fl-\d+ .* sent_mono=([\d.]+)",
                                                   ST.log_text()))
        self.assertEqual(len(sent), n)
        gaps = [(b - a) * 1000 for a, b in zip(sent, sent[1:])]
        self.assertGreaterEqual(min(gaps), 100 - SEND_JITTER_MS, gaps)
        self.assertAlmostEqual(sorted(gaps)[len(gaps) // 2], 100, delta=1.0)
        rate = n / (recs[-1]["t"] - recs[0]["t"] + 0.1)
        print("\n    key scope with a 100 ms floor: %.1f req/s" % rate, file=sys.stderr, end=" ")
        self.assertLess(rate, 10.5)
        self.assertEqual(len({x["key"] for x in recs}), 4)


@unittest.skipIf(APACHE, "mod_fcgid hands a burst to lazily spawned processes over seconds, so "
                 "no burst forms; the bound is the workers' own and is tested behind nginx")
class TestQueueBound(ProxyTest):
    """QUEUE_MAX_WAIT_MS: a slot too far away is refused at once."""
    workers = 20
    env = {"RATE_LIMIT_INTERVAL_MS": "200", "QUEUE_MAX_WAIT_MS": "1000"}

    def test_burst_beyond_the_bound_gets_immediate_429s(self):
        n = 15

        def one(i):
            t = time.monotonic()
            r = self.chat(headers={"X-Request-Id": "burst-%d" % i})
            return r, time.monotonic() - t

        with concurrent.futures.ThreadPoolExecutor(n) as ex:
            out = list(ex.map(one, range(n)))
        ok = [r for r, _ in out if r.status == 200]
        refused = [(r, dt) for r, dt in out if r.status == 429]
        self.assertEqual(len(ok) + len(refused), n)
        self.assertGreaterEqual(len(ok), 5)
        self.assertGreaterEqual(len(refused), 5)
        for r, dt in refused:
            self.assertOpenAIError(r, 429, "proxy_saturated")
            self.assertGreaterEqual(int(r.header("Retry-After")), 1)
            self.assertLess(dt, 0.5, "a refused request waited")
        recs = sorted(self.wait_records(len(ok)), key=lambda x: x["t"])
        self.assertEqual(len(recs), len(ok))
        # The rest were served in the order of their slots, spaced.
        slots = slots_from_log("burst-")
        served = [slots[x["headers"]["x-request-id"]] for x in recs]
        self.assertEqual(served, sorted(served))
        self.assertEqual({b - a for a, b in zip(served, served[1:])}, {200000})
        # Refused requests reserved nothing: the timeline ends right after
        # the last request served.
        self.assertEqual(int(ST.redis_cli("GET", "{cerebras-proxy}:slot")), max(served) + 200000)


class TestZSecrets(ProxyTest):
    """Runs last (alphabetical): checks everything the other tests produced."""

    def test_no_key_in_responses_logs_argv_or_redis(self):
        self.chat()
        self.chat(chat_body(stream=True))
        self.chat(chat_body(mock={"status": 401}))
        self.assertIn("Initialized with 3 API keys.", ST.log_text())
        texts = list(RESPONSES)
        for name in glob.glob(os.path.join(ST.dir, "*.log")):
            if os.path.basename(name) == "mock.log":
                continue   # the upstream is the one party that must see keys
            with open(name, "rb") as f:
                texts.append(f.read().decode("utf-8", "replace"))
        self.assertGreater(len(RESPONSES), 20)
        for k in KEYS:
            for t in texts:
                self.assertNotIn(k, t)
        for pid in subprocess.run(["pgrep", "-f", BINARY], capture_output=True,
                                  text=True).stdout.split():
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                cmd = f.read().decode()
            for k in KEYS:
                self.assertNotIn(k, cmd)
        names = ST.redis_cli("--scan").split()
        self.assertTrue(names)
        for n in names:
            self.assertTrue(n.startswith("{cerebras-proxy}:"), n)
            for k in KEYS:
                self.assertNotIn(k, n)


if __name__ == "__main__":
    unittest.main()
