"""The web server's own errors and its limits per client address, with the
shipped nginx.conf.example / apache.conf.example (issue 12).

An error the web server makes itself (a URI, a header or a body too large, a
malformed request, the workers down or too slow, a client over its limits)
must reach a browser as the workers' errors do: an OpenAI-style JSON body
{"error":{"message","type","code"}}, Content-Type application/json and one
Access-Control-Allow-Origin header, with the status kept. The workers' own
errors, some with the same statuses (413, 414, 502), must pass unchanged,
and their CORS header must not be doubled.
"""

import concurrent.futures
import os
import re
import socket
import time
import unittest

from harness import (APACHE, MOCK, ST, ProxyTest, chat_body, RESPONSES,  # noqa: F401
                     setUpModule, tearDownModule)
from client import Response, ResponseParser
import stack

# The shipped body limit of both servers (client_max_body_size 16m,
# FcgidMaxRequestLen 16777216), the workers' MAX_BODY_BYTES default.
BODY_LIMIT = 16 * 1024 * 1024


class FrontTest(ProxyTest):
    def raw(self, data, timeout=30):
        """Sends data as it is on a new connection; the parsed response."""
        parser = ResponseParser()
        with socket.create_connection(("127.0.0.1", ST.port), timeout=timeout) as s:
            s.sendall(data)
            while not parser.done:
                chunk = s.recv(65536)
                if not chunk:
                    break
                parser.feed(chunk)
        self.assertIsNotNone(parser.status, "no response to %r" % data[:80])
        r = Response()
        r.status, r.reason, r.headers = parser.status, parser.reason, parser.headers
        r.raw_head, r.body = parser.raw_head, bytes(parser.body)
        RESPONSES.append(r.text())
        return r

    def assertServerError(self, r, status, code):
        """An error the web server made, in the shipped JSON form."""
        err = self.assertOpenAIError(r, status, code)   # status, one CORS header, JSON type
        self.assertEqual(r.header("Content-Type"), "application/json", r.body)
        self.assertEqual(set(r.json()), {"error"})
        self.assertEqual(set(err), {"message", "type", "param", "code"})
        self.assertIsNone(err["param"])
        self.assertNotIn(b"<html", r.body.lower())
        return err

    def assertProxyError(self, r, status, code, message_start):
        """An error the workers made, as they made it (not replaced)."""
        err = self.assertOpenAIError(r, status, code)
        self.assertTrue(err["message"].startswith(message_start), err)
        self.assertTrue(r.body.endswith(b"}}\n"), r.body)   # the workers' own framing
        return err


class TestServerErrors(FrontTest):
    def test_uri_too_long_is_414_json(self):
        for path in ("/v1/chat/completions?" + "a" * 20000, "/x.html?" + "b" * 20000):
            self.assertServerError(self.req("GET", path), 414, "uri_too_long")

    def test_body_over_the_limit_is_413_json(self):
        r = self.chat(b"x" * (BODY_LIMIT + 1))
        self.assertServerError(r, 413, "request_too_large")
        self.assertEqual(MOCK.requests(), [])

    def test_header_too_large_is_400_json(self):
        r = self.req("GET", "/", headers={"X-Big": "b" * 20000})
        self.assertServerError(r, 400, "bad_request" if APACHE else "headers_too_large")

    def test_malformed_request_is_400_json(self):
        r = self.raw(b"GARBAGE\r\n\r\n")
        self.assertServerError(r, 400, "bad_request")
        r = self.raw(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")    # no Host
        self.assertServerError(r, 400, "bad_request")

    def test_every_other_refusal_is_json(self):
        """Odd requests each server refuses itself: whatever the status,
        the JSON form (the shipped lists cover them all)."""
        h = b"Host: localhost\r\nConnection: close\r\n"
        post = b"POST /v1/chat/completions HTTP/1.1\r\n" + h
        cases = [
            (b"TRACE / HTTP/1.1\r\n" + h + b"\r\n", None if APACHE else 405),
            (b"GET / HTTP/3.1\r\n" + h + b"\r\n", None if APACHE else 505),
            (post + b"Transfer-Encoding: gzip\r\n\r\n", 400 if APACHE else 501),
            (post + b"Content-Length: abc\r\n\r\n", 400),
            (post + b"Expect: nothing\r\nContent-Length: 2\r\n\r\n{}", 417 if APACHE else None),
            (b"GET /a%00b HTTP/1.1\r\n" + h + b"\r\n", 404 if APACHE else 400),
            (b"GET /../../etc/passwd HTTP/1.1\r\n" + h + b"\r\n", 400),
            (b"GET / HTTP/1.1\r\n" + h + b"".join(b"X-%d: y\r\n" % i for i in range(200))
             + b"\r\n", 400 if APACHE else None),
        ]
        for data, status in cases:
            with self.subTest(request=data[:40]):
                r = self.raw(data)
                if status is not None:
                    self.assertEqual(r.status, status, r.text())
                if r.status >= 400:
                    self.assertOpenAIError(r, r.status)
                    self.assertEqual(r.header("Content-Type"), "application/json", r.text())

    def test_proxy_errors_pass_unchanged(self):
        self.assertProxyError(self.req("GET", "/nope"), 404, "not_found", "no such endpoint")
        r = self.req("PUT", "/v1/chat/completions", "{}")
        self.assertProxyError(r, 405, "method_not_allowed", "method PUT not allowed")
        self.assertEqual(r.header("Allow"), "POST, OPTIONS")

    def test_proxy_502_passes_unchanged(self):
        # A 502 of the workers' own, a status the web server also makes.
        r = self.chat(chat_body(mock={"status": 401, "error_body": '{"message":"no"}'}))
        self.assertProxyError(r, 502, "upstream_auth_failed", "")

    def test_upstream_413_passes_unchanged(self):
        # An upstream error body passes byte for byte, whatever its status.
        body = '{"message":"bad field","type":"invalid_request_error","param":"x","code":"c"}'
        r = self.chat(chat_body(mock={"status": 413, "error_body": body}))
        self.assertEqual((r.status, r.body), (413, body.encode()))
        self.assertCors(r)

    def test_cors_header_once_on_normal_answers(self):
        r = self.req("GET", "/")
        self.assertEqual((r.status, r.body), (200, b"OK"))
        self.assertCors(r)
        r = self.req("OPTIONS", "/v1/chat/completions",
                     headers={"Origin": "https://app.example",
                              "Access-Control-Request-Method": "POST"})
        self.assertEqual(r.status, 204)
        self.assertCors(r)
        r = self.chat()
        self.assertEqual(r.status, 200, r.text())
        self.assertCors(r)
        self.assertEqual(r.json()["object"], "chat.completion")
        r = self.chat(chat_body(stream=True))
        self.assertEqual(r.status, 200, r.text())
        self.assertCors(r)
        self.assertTrue(r.body.endswith(b"data: [DONE]\n\n"))


class TestProxyBodyLimit(FrontTest):
    """The workers' own 413 (MAX_BODY_BYTES below the web server's limit)
    is not replaced by the web server's."""
    env = {"RATE_LIMIT_INTERVAL_MS": "0", "MAX_BODY_BYTES": "4096"}
    restores_workers = True

    def test_workers_413_passes_unchanged(self):
        r = self.chat(chat_body(messages=[{"role": "user", "content": "x" * 8000}]))
        self.assertProxyError(r, 413, "request_too_large", "")
        self.assertEqual(MOCK.requests(), [])


class TestWorkersDown(FrontTest):
    """No worker answers: nginx's 502 (workers stopped, their socket gone),
    Apache's 500 (mod_fcgid starts workers itself: here each one exits at
    once, before its answer)."""
    restores_workers = True

    @unittest.skipIf(APACHE, "mod_fcgid starts the workers itself")
    def test_nginx_workers_stopped_or_socket_gone_is_502_json(self):
        ST.stop_workers()
        self.assertServerError(self.req("GET", "/"), 502, "workers_unavailable")
        self.assertServerError(self.chat(), 502, "workers_unavailable")
        # A socket file that nobody listens on any more, then none at all.
        if not os.path.exists(ST.fcgi_sock):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.bind(ST.fcgi_sock)
        self.assertServerError(self.chat(), 502, "workers_unavailable")
        os.unlink(ST.fcgi_sock)
        self.assertServerError(self.chat(), 502, "workers_unavailable")

    @unittest.skipUnless(APACHE, "Apache only")
    def test_apache_workers_that_end_before_answering_is_500_json(self):
        ST.stop_workers()
        ST.start_workers(self.workers, {"CEREBRAS_API_KEYS": ""})   # each exits at start
        self.assertServerError(self.req("GET", "/"), 500, "web_server_error")
        self.assertServerError(self.chat(), 500, "web_server_error")


class TestWorkersTooSlow(FrontTest):
    """The workers silent for longer than the web server waits: 504 from
    nginx (fastcgi_read_timeout), 500 from mod_fcgid (FcgidIOTimeout), both
    as JSON. The timeout is cut to 2 s for the test."""
    IO_TIMEOUT = 2
    restores_workers = True

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

    def test_silent_workers_give_json_timeout_error(self):
        r = self.chat(chat_body(mock={"delay_ms": 1000 * (self.IO_TIMEOUT + 2)}))
        if APACHE:
            self.assertServerError(r, 500, "web_server_error")
        else:
            self.assertServerError(r, 504, "workers_timeout")


class LimitTest(FrontTest):
    """nginx restarted with its per-address limits set to LIMITS
    (render_nginx_site's front_limits), lifted again after the class."""
    LIMITS = None
    restores_workers = True

    @classmethod
    def setUpClass(cls):
        ST.front_limits = cls.LIMITS
        ST.restart_server()
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        ST.front_limits = None
        ST.restart_server()
        super().tearDownClass()


@unittest.skipUnless(APACHE, "nginx closes a connection whose headers are late without an answer")
class TestSlowClient(FrontTest):
    """mod_reqtimeout (its timeouts cut to 1 s here): headers that do not
    arrive in time get the JSON 408; a body that does not, mod_fcgid's
    500, as JSON too."""
    restores_workers = True

    @classmethod
    def setUpClass(cls):
        ST.read_timeout = 1
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        ST.read_timeout = None
        super().tearDownClass()

    def test_late_headers_are_408_json(self):
        r = self.raw(b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n")
        self.assertServerError(r, 408, "request_timeout")

    def test_late_body_is_500_json(self):
        r = self.raw(b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        self.assertServerError(r, 500, "web_server_error")
        self.assertEqual(MOCK.requests(), [])


@unittest.skipIf(APACHE, "Apache 2.4 has no limit per client address without extra modules "
                         "(apache.conf.example says so)")
class TestConnLimit(LimitTest):
    """limit_conn per address (on as shipped, at 128; 2 here): the third
    request at once from one address is refused with the JSON 429."""
    LIMITS = {"conn": 2}

    def test_third_concurrent_request_is_429_json(self):
        slow = chat_body(mock={"delay_ms": 1500})
        with concurrent.futures.ThreadPoolExecutor(2) as ex:
            held = [ex.submit(self.chat, slow) for _ in range(2)]
            # Both have reached the mock (nginx is serving them).
            self.wait_records(2)
            r = self.chat()
            err = self.assertServerError(r, 429, "client_address_limit")
            self.assertEqual(err["type"], "rate_limit_exceeded")
            self.assertEqual(r.header_all("Retry-After"), ["1"])
            self.assertEqual([f.result().status for f in held], [200, 200])
        # Once they are done, the address may again.
        self.assertEqual(self.chat().status, 200)


@unittest.skipIf(APACHE, "Apache 2.4 has no limit per client address without extra modules")
class TestReqLimit(LimitTest):
    """limit_req per address (commented out as shipped; on here at 1r/s,
    burst 3): requests beyond the burst are refused with the JSON 429."""
    LIMITS = {"rate": "1r/s", "burst": 3}

    def test_requests_beyond_the_burst_are_429_json(self):
        rs = [self.req("GET", "/") for _ in range(8)]
        statuses = [r.status for r in rs]
        # The first, then the burst, pass; what comes faster than 1 a second after is refused.
        self.assertEqual(statuses[:4], [200] * 4, statuses)
        self.assertIn(429, statuses[4:])
        for r in rs:
            if r.status == 429:
                self.assertServerError(r, 429, "client_address_limit")
        time.sleep(1.1)
        self.assertEqual(self.req("GET", "/").status, 200)


class TestShippedConfig(unittest.TestCase):
    """What the examples ship, as their comments and the README say."""

    def test_nginx_as_shipped(self):
        with open(stack.NGINX_EXAMPLE) as f:
            text = f.read()
        # limit_conn on, limit_req commented out, both refusing with 429.
        for line in (stack.NGINX_LIMIT_CONN, stack.NGINX_LIMIT_REQ_ZONE, stack.NGINX_LIMIT_REQ,
                     "limit_conn_status 429;", "limit_req_status 429;"):
            self.assertIn(line, text)
        # fastcgi_intercept_errors stays off: the workers' errors are theirs.
        self.assertNotRegex(text, r"(?m)^\s*fastcgi_intercept_errors\s+on")
        # add_header only inside the error locations, never where the
        # workers' answers pass (it would double their CORS header).
        where = None
        for line in text.splitlines():
            s = line.split("#")[0].strip()
            if s.startswith("location "):
                where = s
            if s.startswith("add_header"):
                self.assertRegex(where or "", r"^location = /\.cerebras-proxy-error/\d+ \{$", line)

    def test_apache_as_shipped(self):
        with open(stack.APACHE_EXAMPLE) as f:
            text = f.read()
        statuses = [int(s) for s in re.findall(r'(?m)^ErrorDocument (\d+) "\{', text)]
        for status in (400, 404, 405, 408, 413, 414, 417, 500, 501, 502, 503, 504, 505):
            self.assertIn(status, statuses)
        # The Header lines name exactly the statuses with an ErrorDocument.
        lines = re.findall(r"(?m)^\s*Header always set .*-in \{([^}]*)\}", text)
        self.assertEqual(len(lines), 2)
        for listed in lines:
            self.assertEqual(sorted(int(s.strip(" '")) for s in listed.split(",")),
                             sorted(statuses), listed)
        # No LimitRequestBody: mod_fcgid 2.3.9 would hand the worker an
        # empty body instead of answering 413.
        self.assertNotRegex(text, r"(?m)^\s*LimitRequestBody")
