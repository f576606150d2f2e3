"""Integration tests of the proxy's HTTP surface: routes, forwarding, streaming,
a cross-origin browser, the binary as a CGI program, configuration errors,
and requests for the secrets check (tests/integration/harness.py).
"""

import collections
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
sys.path.insert(0, HERE)

import harness  # noqa: E402
from harness import (MOCK, ST, setUpModule, tearDownModule,  # noqa: E402,F401
                     APACHE, BINARY, CLIENT_SECRET, KEYS, PREFIX, ROOT,
                     ProxyTest, chat_body)
import stack  # noqa: E402 (deploy/, put on the path by harness)


class TestRoutes(ProxyTest):
    def test_get_root_is_ok(self):
        r = self.req("GET", "/")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body, b"OK")
        self.assertCors(r)

    def test_healthz_is_ok(self):
        for method, body in (("GET", b"OK"), ("HEAD", b"")):
            r = self.req(method, "/healthz")
            self.assertEqual((r.status, r.body), (200, body))
            self.assertCors(r)
        r = self.req("POST", "/healthz", chat_body())
        self.assertOpenAIError(r, 405, "method_not_allowed")
        self.assertEqual(r.header("Allow"), "GET, HEAD, OPTIONS")
        self.assertEqual(MOCK.requests(), [])

    def test_request_ids(self):
        # A sane id is kept: upstream, in the response, in the log line.
        for rid in ("rid-Kept_1.2:3@x+y/z=", "0f8fad5b-d9cb-469f-a165-70867728950e"):
            r = self.chat(headers={"X-Request-Id": rid})
            self.assertEqual((r.status, r.header_all("X-Request-Id")), (200, [rid]))
            self.assertIn("X-Request-Id", r.header("Access-Control-Expose-Headers", ""))
            self.assertEqual(MOCK.requests()[-1]["headers"].get("x-request-id"), rid)
            self.assertIn(rid, harness.wait_log_lines(rid, 1))
        # None, or not sane (too long, a space, a quote): one is made, and
        # used everywhere; the upstream's own X-Request-Id is not passed on.
        for sent in (None, "x" * 129, "has space", 'q"uote'):
            MOCK.reset()
            hdrs = {} if sent is None else {"X-Request-Id": sent}
            r = self.chat(chat_body(mock={"headers": {"X-Request-Id": "upstream-own"}}),
                          headers=hdrs)
            self.assertEqual(r.status, 200, r.text())
            made = r.header_all("X-Request-Id")
            self.assertEqual(len(made), 1, r.headers)
            self.assertRegex(made[0], r"^req-[0-9a-f]{24}$")
            self.assertEqual(MOCK.requests()[0]["headers"].get("x-request-id"), made[0])
            harness.wait_log_lines(made[0], 1)
        # Errors carry it too.
        r = self.chat(b"{", headers={"X-Request-Id": "rid-error-1"})
        self.assertEqual((r.status, r.header("X-Request-Id")), (400, "rid-error-1"))

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
        self.assertOpenAIError(self.chat(path="/v1/embeddings"), 404, "not_found")
        self.assertOpenAIError(self.chat(path="/v1/models/a/b"), 404, "not_found")

    def test_wrong_method_is_405_with_allow(self):
        r = self.req("GET", "/v1/chat/completions")
        self.assertOpenAIError(r, 405, "method_not_allowed")
        self.assertEqual(r.header("Allow"), "POST, OPTIONS")
        r = self.req("PUT", "/", body="x")
        self.assertOpenAIError(r, 405, "method_not_allowed")
        self.assertEqual(r.header("Allow"), "GET, HEAD, POST, OPTIONS")
        r = self.chat(path="/v1/models")
        self.assertOpenAIError(r, 405, "method_not_allowed")
        self.assertEqual(r.header("Allow"), "GET, HEAD, OPTIONS")
        r = self.req("GET", "/v1/completions")
        self.assertOpenAIError(r, 405, "method_not_allowed")
        self.assertEqual(r.header("Allow"), "POST, OPTIONS")

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

    def test_the_log_says_how_long_the_web_server_held_the_request(self):
        # The shipped configs set X-Request-Start to when the web server
        # handed the request over, replacing a client's (this one would
        # make no sense: 1 s after the epoch, logged as "-").
        # The answer takes 1.5 s: that is no part of the wait before it.
        r = self.chat(chat_body(mock={"delay_ms": 1500}),
                      headers={"X-Request-Id": "held-1", "X-Request-Start": "t=1"})
        self.assertEqual(r.status, 200)
        lines = []
        stack.wait_for(lambda: lines.extend(l for l in ST.log_text().splitlines()
                                            if " chat id=held-1 " in l) or lines,
                       10, "the request's log line")
        m = re.search(r" backlog_ms=(\S+) thread_ms=(\S+) ", lines[0])
        self.assertIsNotNone(m, lines[0])
        self.assertRegex(m.group(1), r"^\d+\.\d$", lines[0])
        self.assertLess(float(m.group(1)), 1000.0)
        self.assertLess(float(m.group(2)), 1000.0)

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
        # The workers connected and loaded the scripts when they started, so
        # each request sends Redis exactly one command before it is sent
        # upstream (EVALSHA of reserve.lua) and one after its answer
        # (EVALSHA of settle.lua). MONITOR shows every command a client sent
        # (those a script ran say "lua"). First every key's budget is learnt
        # (a probe's headers are settled apart: one more round trip).
        for _ in range(2 * len(KEYS)):
            self.assertEqual(self.chat().status, 200)
        mon = subprocess.Popen(["redis-cli", "-s", ST.redis_sock, "MONITOR"],
                               stdout=subprocess.PIPE, text=True)
        guard = threading.Timer(60, mon.kill)  # never hang on a miss
        guard.start()
        try:
            self.assertEqual(mon.stdout.readline().strip(), "OK")
            n = 10
            for _ in range(n):
                self.assertEqual(self.chat().status, 200)
            # The last settlement may still be on its way (it follows the
            # client's last byte): wait for 2n commands, then a marker
            # command shows nothing else came.
            lines = []
            while len([l for l in lines if " lua]" not in l]) < 2 * n:
                line = mon.stdout.readline()
                self.assertTrue(line, "MONITOR ended early")
                lines.append(line)
            ST.redis_cli("ECHO", "round-trip-test-end")
            while True:
                line = mon.stdout.readline()
                self.assertTrue(line, "MONITOR ended early")
                if "round-trip-test-end" in line:
                    break
                lines.append(line)
        finally:
            guard.cancel()
            mon.kill()
            mon.wait()
        sent = [l for l in lines if " lua]" not in l]
        cmds = [l.split('"')[1].lower() for l in sent]
        if APACHE:
            # mod_fcgid starts processes on demand; each loads the script
            # as it starts, before it accepts its first request.
            cmds = [c for c in cmds if c != "script"]
        self.assertEqual(cmds, ["evalsha"] * (2 * n), sent)
        # Reserve, then settle, request after request: n of each (a
        # settlement follows the client's last byte, so the next request's
        # reservation may come before it).
        shas = [l.split('"')[3] for l in sent]
        self.assertEqual(sorted(collections.Counter(shas).values()), [n, n], sent)
        self.assertEqual(len([s for s in shas if s == shas[0]]), n, sent)

    def test_upstream_connection_is_reused(self):
        # Each worker opened its upstream connection when it started (a
        # HEAD warm-up): no request, not even a worker's first, opens one.
        for i in range(12):
            self.assertEqual(self.chat(headers={"X-Request-Id": "reuse-%d" % i}).status, 200)
        # (A worker logs a request after its last byte: wait for all 12.)
        lines = list(harness.wait_log_lines("reuse-", 12).values())
        conns = [int(re.search(r"new_conns=(-?\d+)", l).group(1)) for l in lines]
        self.assertEqual(conns, [0] * 12, lines)


class TestDefaultMaxCompletion(ProxyTest):
    env = {"RATE_LIMIT_INTERVAL_MS": "0", "DEFAULT_MAX_COMPLETION_TOKENS": "256"}

    def test_added_only_to_a_request_that_sets_no_max(self):
        body = json.dumps(chat_body()).encode()
        self.assertEqual(self.chat(body, headers={"Content-Type": "application/json"}).status, 200)
        sent = MOCK.requests()[0]["body"]
        self.assertEqual(sent, '{"max_completion_tokens":256,' + body.decode()[1:])
        for field in ("max_tokens", "max_completion_tokens"):
            MOCK.reset()
            body = json.dumps(chat_body(**{field: 9})).encode()
            self.assertEqual(self.chat(body, headers={"Content-Type": "application/json"}).status,
                             200)
            self.assertEqual(MOCK.requests()[0]["body_sha256"], hashlib.sha256(body).hexdigest())
        # Not a chat request: refused before it spends anything.
        MOCK.reset()
        r = self.chat(b"not json", headers={"Content-Type": "application/json"})
        self.assertEqual(r.status, 400)
        self.assertEqual(r.json()["error"]["code"], "invalid_request_body")
        self.assertEqual(MOCK.requests(), [])


class TestStreaming(ProxyTest):
    def log_line(self, rid):
        lines = []
        stack.wait_for(lambda: lines.extend(l for l in ST.log_text().splitlines()
                                            if " chat id=%s " % rid in l) or lines,
                       10, "the request's log line")
        return lines[0]

    def test_usage_and_budget_are_read_in_passing(self):
        # A stream: usage comes in its last event; a JSON answer: in it.
        for rid, body in (("use-s", chat_body(stream=True, mock={"events": 7})),
                          ("use-j", chat_body(mock={"reply": "one two three"}))):
            MOCK.reset()
            r = self.chat(body, headers={"X-Request-Id": rid})
            self.assertEqual(r.status, 200)
            want = re.findall(r'"usage": ?\{"prompt_tokens": ?(\d+), ?"completion_tokens": ?(\d+)',
                              r.body.decode())
            self.assertEqual(len(want), 1, r.body[-400:])
            line = self.log_line(rid)
            self.assertIn(" prompt_tokens=%s completion_tokens=%s " % want[0], line)
            # The body as the proxy read it: "Hello proxy", 11 bytes, 3
            # tokens + 4 for the message; no max asked for.
            self.assertIn(" model=llama3.1-8b est_tokens=7+? ", line)
            # The tightest of the limits the mock announced.
            self.assertIn(" budget=requests-day:14399/14400 ", line)
        self.assertEqual(want[0][1], "3")

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
      body: JSON.stringify({model: "m", messages: [{role: "user", content: "hi"}], stream: true,
                            mock: {events: 5, gap_ms: 150}})});
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
    // Headers beyond the CORS-safelisted ones, readable only if exposed:
    // a 429's Retry-After (every key answers 429 for this model alone),
    // the request id, the models list's X-Cache.
    r = await fetch(P + "/v1/chat/completions", {method: "POST",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify({model: "browser-429", messages: [{role: "user", content: "hi"}],
                            mock: {status: 429, headers: {"Retry-After": "1"}}})});
    await r.text();
    out.limited = {status: r.status, retry_after: r.headers.get("retry-after"),
                   request_id: r.headers.get("x-request-id")};
    r = await fetch(P + "/v1/models");
    await r.text();
    out.models = {status: r.status, cache: r.headers.get("x-cache"),
                  request_id: r.headers.get("x-request-id")};
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
        # The page could read them (Access-Control-Expose-Headers); null
        # if the browser had hidden them.
        self.assertEqual((report["limited"]["status"], report["limited"]["retry_after"]),
                         (429, "1"), report["limited"])
        self.assertTrue(report["limited"]["request_id"], report["limited"])
        self.assertEqual(report["models"]["status"], 200, report["models"])
        self.assertIn(report["models"]["cache"], ("hit", "miss", "stale"), report["models"])
        self.assertTrue(report["models"]["request_id"], report["models"])
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


class TestSecrets(ProxyTest):
    """Requests that carry a key upstream (a plain one, a stream, one whose
    key the upstream refuses) for the secrets check, harness.check_no_secrets,
    to look at: run here, and again as each module ends."""

    def test_plain_stream_and_refused_key_requests(self):
        rs = [self.chat(), self.chat(chat_body(stream=True)),
              self.chat(chat_body(mock={"status": 401}))]
        self.assertEqual(harness.RESPONSES[-3:], [r.text() for r in rs])   # kept for the check
        self.assertIn("Initialized with 3 API keys.", ST.log_text())
        self.assertTrue(ST.redis_cli("--scan").split())
        harness.check_no_secrets()


if __name__ == "__main__":
    unittest.main()
