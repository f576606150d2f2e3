"""Integration tests of issue 12's hardening, behind the web server:

- an upstream (or a gateway in front of it) that echoes the Authorization
  header it received, in a response header, an error body or a stream's
  event (the mock's echo_auth), hands no API key to the client: each is
  masked (shared/scrub.c), the workers log one warning naming the key by
  index and fingerprint only, and an answer without a key is relayed
  byte for byte;
- client-supplied values (X-Request-Id, the model) cannot put a line break
  or a terminal escape into the log (shared/log.c);
- 150 requests queued for their slots and dropped by their clients all at
  once give their slots back, so the next request is not made to wait
  behind slots nobody will use (nginx only).

The module's teardown runs the harness' secrets check (check_no_secrets)
over every response, log line, Redis key and value, and --check-config.
"""

import json
import re
import socket
import time
import unittest

from harness import (APACHE, KEYS, MOCK, REDIS_PREFIX, ST, ProxyTest, chat_body,  # noqa: F401
                     log_lines, setUpModule, stack, tearDownModule, wait_log_lines)

# The workers' warning for an answer that held a key (shared/upstream.c).
SCRUB_WARNING = re.compile(
    r"warning: upstream answer \(status (\d+)\) held an API key (\d+) time\(s\), "
    r"first key #(\d) \(([0-9a-f]{8})\): masked")


def key_fps():
    """{fingerprint: index} of KEYS, from --check-config's line
    "CEREBRAS_API_KEYS=3 keys: #0(1a2b3c4d) #1(...) ..."."""
    import subprocess
    import os
    from harness import BINARY
    p = subprocess.run([BINARY, "--check-config"], env=dict(os.environ, **ST.worker_env),
                       capture_output=True, text=True, timeout=10)
    return {fp: int(i) for i, fp in re.findall(r"#(\d+)\(([0-9a-f]{8})\)", p.stdout)}


class TestKeyEcho(ProxyTest):
    """The mock echoes the Authorization header it received (echo_auth)."""

    def assertNoKey(self, r):
        text = r.text()
        for i, k in enumerate(KEYS):
            self.assertNotIn(k, text, "API key #%d reached the client" % i)
        # Every byte of it is masked (a key under 24 bytes keeps none).
        self.assertRegex(text, r"Bearer \*{%d,}" % min(len(k) for k in KEYS))

    def warnings_since(self, mark):
        return SCRUB_WARNING.findall(ST.log_text()[mark:])

    def test_echoed_in_a_header_and_json_reply(self):
        mark = len(ST.log_text())
        r = self.chat(chat_body(mock={"echo_auth": True}))
        self.assertEqual(r.status, 200, r.text())
        self.assertNoKey(r)
        rec = MOCK.requests()[-1]
        self.assertEqual(r.header("X-Echo-Authorization"), "Bearer " + "*" * len(rec["key"]))
        # Same length, so Content-Length (as the mock sent it) still fits.
        self.assertEqual(len(r.body), len(rec["response_body"].encode()))
        self.assertEqual(r.json()["choices"][0]["message"]["content"],
                         "Hello from the mock (you sent Authorization: Bearer %s)"
                         % ("*" * len(rec["key"])))
        # One warning for the answer (a header and the body: 2 found),
        # naming the key the mock saw by index and fingerprint.
        got = stack.wait_for(lambda: self.warnings_since(mark), 5, "the scrub warning")
        self.assertEqual(len(got), 1, got)
        status, n, idx, fp = got[0]
        self.assertEqual((status, n), ("200", "2"))
        self.assertEqual(KEYS[int(idx)], rec["key"])
        self.assertEqual(key_fps()[fp], int(idx))

    def test_echoed_in_error_bodies(self):
        for status in (400, 500):
            with self.subTest(status=status):
                MOCK.reset()
                mark = len(ST.log_text())
                # 400 is relayed at once; a 500 on every key is retried on
                # the others and the last relayed.
                MOCK.config({k: {"status": status, "echo_auth": True} for k in KEYS})
                r = self.chat()
                self.assertEqual(r.status, status, r.text())
                self.assertNoKey(r)
                err = r.json()
                msg = err["message"] if "message" in err else err["error"]["message"]
                self.assertRegex(msg, r"^invalid header Authorization: Bearer \*{18,}$")
                got = stack.wait_for(
                    lambda: (lambda w: w if len(w) >= len(MOCK.requests()) else None)(
                        self.warnings_since(mark)), 5, "a warning per answer")
                self.assertEqual({w[0] for w in got}, {str(status)})
        MOCK.config({})

    def test_echoed_in_a_stream_event(self):
        mark = len(ST.log_text())
        r = self.chat(chat_body(stream=True, mock={"echo_auth": True, "events": 2}))
        self.assertEqual(r.status, 200, r.text())
        self.assertNoKey(r)
        rec = MOCK.requests()[-1]
        echo = json.loads(r.events()[1][len("data: "):])   # after the heartbeat
        self.assertEqual(echo["choices"][0]["delta"]["content"],
                         "you sent Authorization: Bearer " + "*" * len(rec["key"]))
        self.assertTrue(r.body.endswith(b"data: [DONE]\n\n"), r.body[-80:])
        stack.wait_for(lambda: self.warnings_since(mark), 5, "the scrub warning")

    def test_key_split_across_two_chunks_is_masked(self):
        # The echo event is written in two chunks 300 ms apart, cut in the
        # middle of the key: the proxy holds the first chunk's end (the
        # start of a key) until the second comes.
        mark = len(ST.log_text())
        r = self.chat(chat_body(stream=True, mock={"echo_auth": True, "echo_split_ms": 300,
                                                   "events": 1}))
        self.assertEqual(r.status, 200, r.text())
        self.assertNoKey(r)
        # The client did receive the echo in more than one piece.
        self.assertGreaterEqual(len(r.arrivals), 2)
        got = stack.wait_for(lambda: self.warnings_since(mark), 5, "the scrub warning")
        self.assertEqual(got[0][1], "2", got)   # the header and the event

    def test_answer_without_a_key_is_byte_identical(self):
        # Text that looks like a key's start or comes close to one: nothing
        # is masked, nothing held back for good.
        reply = "near misses: %s %s sk-test- sk- s cs csk- and the end sk-test-ALPHA-000" % (
            KEYS[0][:-1], KEYS[1].lower())
        mark = len(ST.log_text())
        r = self.chat(chat_body(mock={"reply": reply}))
        self.assertEqual(r.status, 200, r.text())
        rec = MOCK.requests()[-1]
        self.assertEqual(r.body, rec["response_body"].encode())
        self.assertEqual(r.json()["choices"][0]["message"]["content"], reply)
        rs = self.chat(chat_body(stream=True, mock={"events": 5}))
        self.assertEqual(rs.status, 200)
        self.assertEqual(len(rs.events()), 1 + 5 + 1 + 1)   # heartbeat, 5, usage, [DONE]
        self.assertNotIn(b"*", rs.body)
        self.assertEqual(self.warnings_since(mark), [])


class TestLogInjection(ProxyTest):
    """A client's X-Request-Id and model cannot break or forge a log line."""

    def test_one_line_with_controls_escaped(self):
        # nginx and Apache refuse CR and LF in a header; ESC, DEL, tab and
        # UTF-8 (U+2028 LINE SEPARATOR) get through nginx to the workers,
        # Apache refuses ESC and DEL too (a 400 of its own).
        rid = "inj-1\x1b[31mred\x7f\tx\u2028y"
        if APACHE:
            rid = "inj-1[31mred\tx\u2028y"
        forged = "cerebras-proxy[1]: error: forged"
        model = "llama3.1-8b\r\n%s\x1b]0;title\x07" % forged
        # Such a model is refused before it is used (400: it would name
        # Redis keys); such an id is replaced by one the proxy makes,
        # which the response carries; the refusal is logged by that id.
        r = self.chat(chat_body(model=model), headers={"X-Request-Id": rid})
        self.assertEqual(r.status, 400, r.text())
        self.assertEqual(r.json()["error"]["code"], "invalid_request_body")
        made = r.header("X-Request-Id")
        self.assertRegex(made, r"^req-[0-9a-f]{24}$")
        lines = wait_log_lines(made, 1)
        line = list(lines.values())[0]
        text = ST.log_text()
        self.assertEqual(len([ln for ln in text.splitlines() if made in ln]), 1, lines)
        self.assertIn("invalid_request_body", line)
        self.assertNotIn("inj-1", text)
        self.assertNotRegex(text, r"(?m)^cerebras-proxy\[1\]: error: forged")
        for c in "\x1b\x7f\x07\r\u2028":
            self.assertNotIn(c, text)

    def test_method_and_path(self):
        # A method the proxy does not serve is logged (escaped); a path with
        # encoded line breaks never reaches a log line raw.
        self.req("GET", "/v1/chat/completions%0d%0aforged")
        self.req("POST", "/v1/chat/completions%0d%0aforged", chat_body())
        text = ST.log_text()
        self.assertNotRegex(text, r"(?m)^forged")
        self.assertNotIn("\r", text)


@unittest.skipIf(APACHE, "mod_fcgid sends a process one request at a time: "
                 "150 queued requests would need 150 worker processes")
class TestMassDisconnect(ProxyTest):
    """150 requests queued for their slots (400 ms apart: the last one
    60 s away) are dropped by their clients at once; their slots must come
    back wherever they sit in the timeline, so the next request takes the
    first free one instead of waiting behind a minute of dead slots. (The
    spacing leaves more than 100 queued even when the 150 take 15 s to
    get their slots, as on a loaded machine under ASan.)"""
    interval_ms = 400
    n = 150
    workers = 4
    # A thread for each request in any one process: a burst of connections
    # goes to whichever process is accepting (one took 129 of the 150 under
    # ASan), and a request waiting for a thread has no slot yet, so the
    # queue drained at the spacing's pace while it waited (64 threads at
    # most: 77 to 86 of 150 still queued, where the test needs 100).
    env = {"RATE_LIMIT_INTERVAL_MS": str(interval_ms), "QUEUE_MAX_WAIT_MS": "90000",
           "WORKER_THREADS": "48", "WORKER_MAX_THREADS": "160"}
    restores_workers = True
    rid = "mass"   # request ids: rid-000 ... rid-149, rid-next

    def slots_booked(self):
        """Slots booked in Redis' timeline (the per-host scheduler's are
        not visible: None)."""
        if self.env.get("REDIS_URL") == "none":
            return None
        out = ST.redis_cli("ZCARD", REDIS_PREFIX + ":slot")
        return int(out) if out.isdigit() else 0

    def wait_all_queued(self):
        """Returns once every request has a slot (those already past theirs
        have been answered meanwhile)."""
        served = lambda: len(log_lines(self.rid + "-"))
        if self.slots_booked() is None:
            # Per host, the booked slots are not to be seen from here: the
            # requests have been read (nginx holds none back at these
            # numbers) once the answered ones go at the interval's pace.
            stack.wait_for(lambda: served() >= 5, 30, "the first answers", interval=0.1)
            time.sleep(2.0)
            return self.n - served()
        stack.wait_for(lambda: self.slots_booked() + served() >= self.n, 30,
                       "%d requests with a slot" % self.n, interval=0.1)
        return self.slots_booked()

    def open_request(self, rid):
        body = json.dumps(chat_body()).encode()
        head = ("POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n"
                "Content-Type: application/json\r\nContent-Length: %d\r\n"
                "X-Request-Id: %s\r\nConnection: close\r\n\r\n" % (len(body), rid))
        s = socket.create_connection(("127.0.0.1", ST.port), timeout=10)
        s.sendall(head.encode() + body)
        return s

    def test_dropped_queue_gives_its_slots_back(self):
        socks = []
        try:
            for i in range(self.n):
                socks.append(self.open_request(self.rid + "-%03d" % i))
            queued_before = self.wait_all_queued()
            last_ms = queued_before * self.interval_ms
            self.assertGreater(queued_before, 100, "too few requests still queued")
        finally:
            t_drop = time.monotonic()
            for s in socks:
                # RST, as a crashed or killed client: no lingering close.
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                s.close()
        # Every request is logged: answered (200), or gone while queued
        # or before it had a slot (499).
        left = stack.wait_for(
            lambda: (lambda d: d if len(d) >= self.n else None)(log_lines(self.rid + "-")),
            30, "the %d requests' log lines" % self.n, interval=0.1)
        n499 = sum("status=499" in ln for ln in left.values())
        self.assertGreaterEqual(n499, queued_before - 10, "dropped requests not logged as gone")
        t_logged = time.monotonic() - t_drop
        booked_after = self.slots_booked()
        # The next request: its wait (the workers' wait_ms) is under two
        # intervals, not the minute of the dead queue.
        t = time.monotonic()
        r = self.chat(headers={"X-Request-Id": self.rid + "-next"})
        took = time.monotonic() - t
        self.assertEqual(r.status, 200, r.text())
        line = wait_log_lines(self.rid + "-next", 1)[self.rid + "-next"]
        wait_ms = float(re.search(r"\bwait_ms=([\d.]+)", line).group(1))
        print("\n  mass disconnect: %d queued (last slot ~%d ms away), %d logged 499 within "
              "%.1f s, %s slots still booked after, next request wait_ms=%.1f (took %.2f s)"
              % (queued_before, last_ms, n499, t_logged, booked_after, wait_ms, took))
        if booked_after is not None:
            self.assertLess(booked_after, 3, "slots of dropped requests still booked")
        self.assertLess(wait_ms, 2 * self.interval_ms, line)


class TestMassDisconnectPerHost(TestMassDisconnect):
    """The same with the per-host scheduler (REDIS_URL=none): the four
    processes share one timeline (shared/sched_local.c)."""
    env = dict(TestMassDisconnect.env, REDIS_URL="none")
    rid = "masslocal"


if __name__ == "__main__":
    unittest.main()
