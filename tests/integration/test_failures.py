"""Integration tests of what fails: the upstream (down, unverifiable, slow),
Redis (down or not configured), a client leaving while queued, key health
(429, 401, 5xx, stalls, broken streams) and the web server's I/O timeouts.
"""

import json
import os
import re
import socket
import struct
import subprocess
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from harness import MOCK, ST, setUpModule, tearDownModule  # noqa: E402,F401 (module fixtures)
from harness import APACHE, KEYS, REDIS_PREFIX, ROOT, ProxyTest, chat_body, slots_from_log  # noqa: E402
import stack  # noqa: E402 (deploy/, put on the path by harness)


class TestFailures(ProxyTest):
    env = {"RATE_LIMIT_INTERVAL_MS": "0"}
    restores_workers = True

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
        # The liveness check needs no Redis either.
        self.assertEqual(self.req("GET", "/healthz").body, b"OK")
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


class TestServerTimeouts(ProxyTest):
    """The web server's I/O timeout is between two reads, not per request.

    The server is rendered with that timeout cut to 2 s so that a paced
    stream longer than it runs in a few seconds; the shipped values are
    checked to be far larger.
    """
    IO_TIMEOUT = 2
    restores_workers = True   # after the server's restart

    @classmethod
    def setUpClass(cls):
        ST.io_timeout = cls.IO_TIMEOUT
        ST.restart_server()
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        ST.io_timeout = None
        ST.restart_server()
        super().tearDownClass()

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


class TestAllResting(ProxyTest):
    """When no key can take a request within QUEUE_MAX_WAIT_MS, it is
    refused at once, with the time the first one can."""
    env = {"RATE_LIMIT_INTERVAL_MS": "0", "QUEUE_MAX_WAIT_MS": "2000"}

    def tearDown(self):
        MOCK.config({})

    def test_all_keys_resting_beyond_the_queue_bound_gives_429(self):
        MOCK.config({k: {"status": 429, "headers": {"Retry-After": "5"}} for k in KEYS})
        self.assertEqual(self.chat().status, 429)
        MOCK.reset()
        r = self.chat()
        self.assertOpenAIError(r, 429, "all_keys_cooling_down")
        self.assertIn(int(r.header("Retry-After")), (4, 5))
        self.assertEqual(MOCK.requests(), [])


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
        # The 429 showed no limit spent (the mock's headers are the fixed
        # ones): that organisation (key #1's alone) rests for this model.
        self.assertRegex(ST.log_text(), r"API key #1 \([0-9a-f]{8}\) rate limited \(429\) on model llama3.1-8b, "
                         r"no budget shown spent: its organisation \([0-9a-f]{8}\) rests 2000 ms for that model")
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
        # Every organisation rests 5 s for this model, within the queue's
        # bound (QUEUE_MAX_WAIT_MS, 30 s): the next request waits for the
        # rest to end, then goes.
        t = time.monotonic()
        r = self.chat()
        self.assertEqual(r.status, 200)
        queued = float(r.header("Server-Timing").split("dur=")[1])
        self.assertGreater(queued, 4000)
        self.assertGreater(time.monotonic() - t, 4.0)
        self.assertEqual(len(MOCK.requests()), 1)

    def test_a_relayed_429_says_when_to_come_back(self):
        # Cerebras sends no Retry-After: the reset of the limit that ran out
        # (0 remaining) becomes one, rounded up.
        MOCK.config({k: {"status": 429, "headers": {
            "x-ratelimit-remaining-tokens-minute": "0",
            "x-ratelimit-reset-tokens-minute": "7.20"}} for k in KEYS})
        r = self.chat()
        self.assertEqual(r.status, 429)
        self.assertEqual(r.header("Retry-After"), "8")
        self.assertCors(r)
        # Nothing said at all: the proxy's own rest for such a key.
        for b in ST.redis_cli("--scan", "--pattern", REDIS_PREFIX + ":b:*").split():
            ST.redis_cli("DEL", b)
        MOCK.reset()
        MOCK.config({k: {"status": 429, "headers": {
            "x-ratelimit-remaining-tokens-minute": "5"}} for k in KEYS})
        r = self.chat()
        self.assertEqual(r.status, 429)
        self.assertEqual(r.header("Retry-After"), str(int(self.env.get("KEY_COOLDOWN_MS", 60000)) // 1000))

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

    def test_oversized_upstream_headers_are_one_clear_error(self):
        # Over the 64 KiB cap on the upstream's header block: another key
        # would get the same answer, so no retry (it used to try every
        # key, then say 502 upstream_unreachable).
        big = {"X-Big-%d" % i: "a" * 20000 for i in range(4)}
        r = self.chat(chat_body(mock={"headers": big}))
        self.assertOpenAIError(r, 502, "upstream_headers_too_large")
        self.assertEqual(self.keys_seen(), [KEYS[0]])
        self.assertNotIn(b"aaaa", r.body)


def fcgi_record(rtype, content, req_id=1):
    pad = (8 - len(content) % 8) % 8
    return struct.pack(">BBHHBB", 1, rtype, req_id, len(content), pad, 0) + content + b"\0" * pad


def fcgi_params(params):
    out = b""
    for k, v in params.items():
        k, v = k.encode(), v.encode()
        for n in (len(k), len(v)):
            out += struct.pack(">B", n) if n < 128 else struct.pack(">I", n | 0x80000000)
        out += k + v
    return out


def fcgi_request(params, body):
    """A whole FastCGI request (responder role), as nginx sends one."""
    return (fcgi_record(1, struct.pack(">HB5x", 1, 0))
            + fcgi_record(4, fcgi_params(params)) + fcgi_record(4, b"")
            + fcgi_record(5, body) + fcgi_record(5, b""))


class TestLastWrite(ProxyTest):
    """The log line is written after the answer's last byte left."""

    @unittest.skipIf(APACHE, "talks FastCGI to the workers' own socket (mod_fcgid spawns its own)")
    def test_failed_last_write_is_logged_as_client_left(self):
        # A JSON answer leaves in one write at the end of the request. A
        # web server that shut its reading side (the worker sees no
        # hang-up, but that write fails) must not be logged "ok" (the
        # old code logged before that write and never saw it fail).
        body = json.dumps(chat_body()).encode()
        params = {"REQUEST_METHOD": "POST", "SCRIPT_NAME": "", "PATH_INFO": "/v1/chat/completions",
                  "REQUEST_URI": "/v1/chat/completions", "CONTENT_TYPE": "application/json",
                  "CONTENT_LENGTH": str(len(body)), "HTTP_X_REQUEST_ID": "lastwrite-1"}
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(ST.fcgi_sock)
            s.sendall(fcgi_request(params, body))
            s.shutdown(socket.SHUT_RD)
            line = stack.wait_for(
                lambda: next((l for l in ST.log_text().splitlines() if "chat id=lastwrite-1 " in l), None),
                10, "the request's log line")
        finally:
            s.close()
        self.assertEqual(len(MOCK.requests()), 1)   # it was forwarded and answered
        self.assertTrue(line.endswith(" client left"), line)
        self.assertIn(" status=200 ", line)


if __name__ == "__main__":
    unittest.main()
