"""Integration tests of GET /metrics (issue 13): the host's counters in
shared memory, added to by every worker process and thread, read back by
any worker's scrape in the Prometheus text format, parsed here by a real
Prometheus parser (Debian's python3-prometheus-client).

The counters must equal what the mock upstream saw (requests per key and
status, every attempt; tokens from usage) across 4 worker processes of 3
threads; METRICS_ALLOW refuses other addresses; no API key or client
token appears in the output; label sets stay bounded.

Each class starts with the host's metrics removed (they outlive the
workers, as the scheduler's state does), so the values are absolute.
"""

import concurrent.futures
import json
import os
import re
import signal
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import harness  # noqa: E402
from harness import MOCK, ST, APACHE, KEYS, RESPONSES, ProxyTest, chat_body  # noqa: E402
import stack  # noqa: E402 (deploy/, put on the path by harness)

try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:       # a pyenv python3: Debian's package is for /usr/bin/python3
    sys.path.append("/usr/lib/python3/dist-packages")
    from prometheus_client.parser import text_string_to_metric_families

TOK_A = "cp-metrics-a-5d1f0c7e9b"
TOK_B = "cp-metrics-b-2a8e4f6c1d"
TOKENS = (TOK_A, TOK_B)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# A model name with the characters a label value must escape (a body's
# model may hold any visible ASCII).
ODD_MODEL = 'we"ird\\model'
FINGERPRINTS = set()       # of the metrics objects this module made


def setUpModule():
    harness.setUpModule()


def tearDownModule():
    try:
        found = ["%s... in response #%d" % (t[:12], i)
                 for i, text in enumerate(RESPONSES) for t in TOKENS if t in text]
        if found:
            raise AssertionError("client tokens in the output: " + "; ".join(found))
    finally:
        try:
            harness.tearDownModule()
        finally:
            for fp in FINGERPRINTS:
                remove_metrics(fp)


def remove_metrics(fp):
    """Removes the host's metrics of the workers whose scheduler state has
    fingerprint fp (/dev/shm/cerebras-proxy-metrics<layout>-<fp>-<euid>)."""
    name = re.compile(r"cerebras-proxy-metrics\d+-%s-\d+" % re.escape(fp))
    for f in os.listdir(stack.SHM_DIR):
        if name.fullmatch(f):
            try:
                os.unlink(os.path.join(stack.SHM_DIR, f))
            except FileNotFoundError:
                pass


def forget_metrics(env):
    """A fresh start for the metrics of workers with env (over the stack's)."""
    fp = stack.host_state_fingerprint(harness.BINARY,
                                      dict(os.environ, **dict(ST.worker_env, **env)))
    if fp is not None:
        FINGERPRINTS.add(fp)
        remove_metrics(fp)


def bearer(tok):
    return {"Authorization": "Bearer " + tok}


class Scrape:
    """One /metrics answer, parsed: samples {(name, ((label, value), ...)): value}."""

    def __init__(self, text):
        self.text = text
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples = {}
        for f in self.families.values():
            for s in f.samples:
                k = (s.name, tuple(sorted(s.labels.items())))
                if k in self.samples:
                    raise AssertionError("sample %r twice" % (k,))
                self.samples[k] = s.value

    def get(self, name, **labels):
        """The sample's value, 0 if absent (a counter not yet counted)."""
        return self.samples.get((name, tuple(sorted(labels.items()))), 0)

    def where(self, name, **match):
        """{labels: value} of the samples of name whose labels include match."""
        out = {}
        for (n, labels), v in self.samples.items():
            d = dict(labels)
            if n == name and all(d.get(k) == v2 for k, v2 in match.items()):
                out[labels] = v
        return out

    def total(self, name, **match):
        return sum(self.where(name, **match).values())

    def label_values(self, name, label):
        return {dict(labels).get(label) for labels in self.where(name)}


def usage_of(r):
    """(prompt, completion) tokens of a chat answer, JSON or a stream."""
    text = r.body.decode()
    if r.header("Content-Type", "").startswith("text/event-stream"):
        u = None
        for line in text.splitlines():
            if line.startswith("data: {"):
                obj = json.loads(line[6:])
                if obj.get("usage"):
                    u = obj["usage"]
        assert u is not None, text[-300:]
    else:
        u = json.loads(text)["usage"]
    return u["prompt_tokens"], u["completion_tokens"]


class MetricsTest(ProxyTest):
    workers = 4
    env = {"RATE_LIMIT_INTERVAL_MS": "0", "WORKER_THREADS": "3", "WORKER_MAX_THREADS": "3"}

    @classmethod
    def setUpClass(cls):
        ST.stop_workers()
        forget_metrics(cls.env)
        ST.start_workers(cls.workers, cls.env)

    def setUp(self):
        super().setUp()
        # Budgets and rests learned by an earlier test are gone.
        ST.redis_cli("FLUSHALL")

    def scrape(self, path="/metrics", port=None):
        r = self.req("GET", path, port=port)
        self.assertEqual(r.status, 200, r.text())
        self.assertEqual(r.header("Content-Type"), CONTENT_TYPE)
        self.assertEqual(r.header("Cache-Control"), "no-store")
        s = Scrape(r.body.decode())
        self.check_format(s)
        return s

    def check_format(self, s):
        """Every family has HELP and TYPE; every name the prefix and
        Prometheus' suffixes; histograms cumulative, +Inf == _count."""
        helped = set(re.findall(r"^# HELP (\S+) ", s.text, re.M))
        typed = dict(re.findall(r"^# TYPE (\S+) (\S+)$", s.text, re.M))
        self.assertEqual(helped, set(typed))
        for name, kind in typed.items():
            self.assertTrue(name.startswith("cerebras_proxy_"), name)
            if kind == "counter":
                self.assertTrue(name.endswith("_total"), name)
            if kind == "histogram":
                self.assertTrue(name.endswith("_seconds"), name)
        names = set(typed) | {n + x for n in typed for x in ("_bucket", "_sum", "_count")}
        for line in s.text.splitlines():
            if not line.startswith("#"):
                self.assertIn(re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0), names, line)
        for f in s.families.values():
            if f.type != "histogram":
                continue
            series = {}
            for x in f.samples:
                if x.name.endswith("_bucket"):
                    key = tuple(sorted((k, v) for k, v in x.labels.items() if k != "le"))
                    series.setdefault(key, []).append((float(x.labels["le"]), x.value))
            for key, buckets in series.items():
                counts = [v for _, v in sorted(buckets)]
                self.assertEqual(counts, sorted(counts), (f.name, key))
                self.assertEqual(sorted(buckets)[-1][0], float("inf"))
                self.assertEqual(counts[-1], s.get(f.name + "_count", **dict(key)), (f.name, key))

    def wait_scrape(self, cond, what, timeout=10, restarting=False):
        """A scrape once cond(scrape) holds (a worker counts a request
        after its client may already have the last byte). restarting:
        the workers are being started again, a 502 meanwhile is no failure."""
        def attempt():
            if restarting and self.req("GET", "/metrics").status != 200:
                return None
            s = self.scrape()
            return s if cond(s) else None
        return stack.wait_for(attempt, timeout, what, interval=0.1)


class TestCounters(MetricsTest):
    """The counters equal what the mock saw, across processes and threads."""
    env = dict(MetricsTest.env, PROXY_TOKENS="%s,%s" % TOKENS)

    def test_counters_equal_what_the_mock_saw(self):
        MOCK.config({KEYS[2]: {"status": 503}})     # retried on another key
        jobs = []
        for i in range(36):
            model = ("llama3.1-8b", ODD_MODEL, "qwen-3-32b")[i % 3]
            if i % 4 == 3:      # the legacy completions: their own route
                body = {"model": model, "prompt": "y" * (10 + i), "stream": i % 8 == 3}
                path = "/v1/completions"
            else:
                body = chat_body(model=model, stream=i % 2 == 0,
                                 messages=[{"role": "user", "content": "x" * (10 + i)}])
                path = "/v1/chat/completions"
            jobs.append((path, body, bearer(TOKENS[i % 2])))
        with concurrent.futures.ThreadPoolExecutor(12) as ex:
            rs = list(ex.map(lambda j: self.chat(j[1], j[2], path=j[0]), jobs))
        # A request whose attempts all met key #2 gets its 503.
        statuses = {}
        for (path, _, _), r in zip(jobs, rs):
            k = ("completions" if path == "/v1/completions" else "chat", str(r.status))
            statuses[k] = statuses.get(k, 0) + 1
        self.assertLessEqual({c for _, c in statuses}, {"200", "503"}, statuses)
        recs = harness.finished_records(len(rs))
        attempts = {}
        for x in recs:
            k = (str(KEYS.index(x["key"])), str(x["status"]))
            attempts[k] = attempts.get(k, 0) + 1
        self.assertIn(("2", "503"), attempts)         # some were retried
        self.assertGreater(len({k for k, _ in attempts}), 1)
        # Tokens: the usage each client got, by model and client.
        by_model, by_client = {}, {}
        for (_, body, hdrs), r in zip(jobs, rs):
            if r.status != 200:
                continue
            p, c = usage_of(r)
            client = "token#%d" % TOKENS.index(hdrs["Authorization"][7:])
            for d, k in ((by_model, body["model"]), (by_client, client)):
                d[(k, "prompt")] = d.get((k, "prompt"), 0) + p
                d[(k, "completion")] = d.get((k, "completion"), 0) + c
        want_tokens = sum(by_model.values())
        s = self.wait_scrape(lambda s: s.total("cerebras_proxy_tokens_total") >= want_tokens
                             and s.total("cerebras_proxy_requests_total", route="chat")
                             + s.total("cerebras_proxy_requests_total", route="completions")
                             >= len(rs),
                             "the requests counted")
        got = {(dict(l)["key"], dict(l)["code"]): v
               for l, v in s.where("cerebras_proxy_upstream_requests_total").items()}
        self.assertEqual(got, attempts)
        got = {(dict(l)["route"], dict(l)["code"]): v
               for l, v in s.where("cerebras_proxy_requests_total").items()
               if dict(l)["route"] in ("chat", "completions")}
        self.assertEqual(got, statuses)
        for (model, kind), n in by_model.items():
            self.assertEqual(s.total("cerebras_proxy_tokens_total", model=model, kind=kind), n,
                             (model, kind))
        for (client, kind), n in by_client.items():
            self.assertEqual(s.get("cerebras_proxy_client_tokens_total", client=client, kind=kind),
                             n, (client, kind))
        # Tokens only on the keys that answered 200.
        self.assertEqual(s.total("cerebras_proxy_tokens_total", key="2"), 0)
        self.assertGreater(s.total("cerebras_proxy_tokens_total", key="0"), 0)
        self.assertEqual(s.total("cerebras_proxy_tokens_total"), want_tokens)
        # One queue wait per request; a first byte and a lateness per attempt.
        self.assertEqual(s.get("cerebras_proxy_queue_wait_seconds_count"), len(rs))
        self.assertEqual(s.get("cerebras_proxy_upstream_time_to_first_byte_seconds_count"),
                         len(recs))
        self.assertEqual(s.get("cerebras_proxy_slot_lateness_seconds_count"), len(recs))
        self.assertEqual(s.get("cerebras_proxy_request_duration_seconds_count", route="chat")
                         + s.get("cerebras_proxy_request_duration_seconds_count",
                                 route="completions"), len(rs))
        # The escaped model reads back as sent.
        self.assertIn(ODD_MODEL, s.label_values("cerebras_proxy_tokens_total", "model"))
        self.assertIn('model="we\\"ird\\\\model"', s.text)
        # No key, no token: keys by index, clients by name.
        for secret in KEYS + list(TOKENS):
            self.assertNotIn(secret, s.text)
        self.assertEqual(s.label_values("cerebras_proxy_client_tokens_total", "client"),
                         {"token#0", "token#1"})

    def test_routes_refusals_and_scrapes_are_counted(self):
        before = self.scrape()
        self.assertEqual(self.req("GET", "/healthz").status, 200)
        self.assertEqual(self.req("GET", "/no/such/thing").status, 404)
        self.assertEqual(self.chat(headers=bearer("cp-not-a-token-000")).status, 401)
        self.assertEqual(self.req("OPTIONS", "/v1/chat/completions",
                                  headers={"Origin": "https://a.example",
                                           "Access-Control-Request-Method": "POST"}).status, 204)
        self.assertEqual(self.req("HEAD", "/metrics").status, 200)
        want = {("health", "200"): 1, ("other", "404"): 1, ("chat", "401"): 1,
                ("preflight", "204"): 1, ("metrics", "200"): 2}

        def delta(s):
            return {k: s.get("cerebras_proxy_requests_total", route=k[0], code=k[1])
                    - before.get("cerebras_proxy_requests_total", route=k[0], code=k[1])
                    for k in want}
        # The scrape that reads them is counted only after it has answered.
        s = self.wait_scrape(lambda s: delta(s) == want, "the requests counted")
        self.assertEqual(delta(s), want)
        self.assertEqual(s.get("cerebras_proxy_requests_in_flight"), 1)   # the scrape
        self.assertEqual(s.get("cerebras_proxy_streams_open"), 0)
        self.assertEqual(s.get("cerebras_proxy_redis_up"), 1)
        self.assertEqual(s.get("cerebras_proxy_fallback_active"), 0)

    def test_models_fetch_is_an_upstream_request(self):
        before = self.scrape()
        r = self.req("GET", "/v1/models", headers=bearer(TOKENS[0]))
        self.assertEqual(r.status, 200, r.text())
        fetched = [x for x in MOCK.requests() if x.get("path", "").endswith("/models")]
        self.assertEqual(len(fetched), 1, "the list was not fetched (cached before?)")
        ups = lambda s: s.total("cerebras_proxy_upstream_requests_total", code="200")
        s = self.wait_scrape(lambda s: ups(s) - ups(before) == len(fetched),
                             "the fetch counted")
        self.assertEqual(s.get("cerebras_proxy_requests_total", route="models", code="200")
                         - before.get("cerebras_proxy_requests_total", route="models",
                                      code="200"), 1)
        # No slot: the lateness histogram has no new sample.
        late = lambda s: s.get("cerebras_proxy_slot_lateness_seconds_count")
        self.assertEqual(late(s), late(before))

    def test_rate_limited_by_key_and_limit(self):
        spent = {"x-ratelimit-limit-tokens-minute": "1000",
                 "x-ratelimit-remaining-tokens-minute": "0",
                 "x-ratelimit-reset-tokens-minute": "0.2"}
        MOCK.config({KEYS[0]: {"status": 429, "headers": spent},
                     KEYS[1]: {"status": 429}})
        before = self.scrape()
        for _ in range(3):
            self.chat(headers=bearer(TOK_A))
        recs = harness.finished_records(1)
        want = {}
        for x in recs:
            if x["status"] == 429:
                k = (str(KEYS.index(x["key"])),
                     "tokens-minute" if x["key"] == KEYS[0] else "unknown")
                want[k] = want.get(k, 0) + 1
        self.assertTrue(want)

        def delta(s):
            out = {}
            for l, v in s.where("cerebras_proxy_upstream_rate_limited_total").items():
                d = dict(l)
                v -= before.get("cerebras_proxy_upstream_rate_limited_total", **d)
                if v:
                    out[(d["key"], d["limit"])] = v
            return out
        s = self.wait_scrape(lambda s: delta(s) == want, "the 429s counted")
        self.assertEqual(delta(s), want)
        self.assertLessEqual(s.label_values("cerebras_proxy_upstream_rate_limited_total", "limit"),
                             {"requests-minute", "tokens-minute", "requests-hour", "tokens-hour",
                              "requests-day", "tokens-day", "unknown"})


class TestGauges(MetricsTest):
    """Requests in flight and streams open, host-wide, and robust to a
    worker that dies mid-request."""
    restores_workers = True

    def test_streams_in_flight_then_gone(self):
        # Long enough to outlast mod_fcgid's spawn of a process for each
        # (it waits 1 s before it starts one).
        slow = chat_body(stream=True, mock={"events": 20 if APACHE else 6, "gap_ms": 300})
        with concurrent.futures.ThreadPoolExecutor(3) as ex:
            fs = [ex.submit(self.chat, slow) for _ in range(3)]
            stack.wait_for(lambda: len(MOCK.requests()) >= 3, 10, "three streams at the mock")
            s = self.wait_scrape(lambda s: s.get("cerebras_proxy_streams_open") == 3,
                                 "three streams open")
            self.assertEqual(s.get("cerebras_proxy_requests_in_flight"), 4)
            rs = [f.result() for f in fs]
        self.assertEqual([r.status for r in rs], [200] * 3)
        s = self.wait_scrape(lambda s: s.get("cerebras_proxy_streams_open") == 0,
                             "the streams closed")
        self.assertEqual(s.get("cerebras_proxy_requests_in_flight"), 1)

    @unittest.skipIf(APACHE, "mod_fcgid owns the workers")
    def test_a_killed_worker_leaves_no_gauge_behind(self):
        slow = chat_body(stream=True, mock={"events": 20, "gap_ms": 300})
        with concurrent.futures.ThreadPoolExecutor(2) as ex:
            fs = [ex.submit(self.chat, slow) for _ in range(2)]
            self.wait_scrape(lambda s: s.get("cerebras_proxy_streams_open") == 2,
                             "two streams open")
            # Every worker process killed mid-request; the supervisor
            # starts new ones.
            for pid in stack.children(ST.procs["workers"].pid):
                os.kill(pid, signal.SIGKILL)
            for f in fs:
                f.result()
        s = self.wait_scrape(lambda s: s.get("cerebras_proxy_streams_open") == 0
                             and s.get("cerebras_proxy_requests_in_flight") == 1,
                             "the dead workers' gauges dropped", timeout=20, restarting=True)
        self.assertEqual(s.get("cerebras_proxy_streams_open"), 0)


class TestBounds(MetricsTest):
    """Label values are bounded: 32 models and 64 clients, then "other"."""

    def test_models_and_clients_beyond_the_tables_are_other(self):
        # No tokens: clients are addresses; X-Forwarded-For counts when
        # the proxy in front is trusted.
        self.restart_workers(dict(self.env, TRUSTED_PROXIES="127.0.0.1,::1"))
        jobs = [(chat_body(model="model-%02d" % i),
                 {"X-Forwarded-For": "198.51.100.%d" % (i % 80)}) for i in range(90)]
        with concurrent.futures.ThreadPoolExecutor(12) as ex:
            rs = list(ex.map(lambda j: self.chat(j[0], j[1]), jobs))
        self.assertEqual({r.status for r in rs}, {200})
        want = sum(sum(usage_of(r)) for r in rs)
        s = self.wait_scrape(lambda s: s.total("cerebras_proxy_tokens_total") == want,
                             "the tokens counted")
        models = s.label_values("cerebras_proxy_tokens_total", "model")
        clients = s.label_values("cerebras_proxy_client_tokens_total", "client")
        self.assertEqual(len(models - {"other"}), 32, sorted(models))
        self.assertIn("other", models)
        self.assertEqual(len(clients - {"other"}), 64, sorted(clients))
        self.assertIn("other", clients)
        self.assertEqual(s.total("cerebras_proxy_client_tokens_total"), want)
        self.assertLessEqual(s.label_values("cerebras_proxy_upstream_requests_total", "key"),
                             {"0", "1", "2"})


@unittest.skipIf(APACHE, "mod_fcgid: one request per process, no thread pool")
class TestSaturation(MetricsTest):
    """The 429 of a request that found no free thread is counted too."""
    workers = 1
    # Both threads started (and warm) before the first request: a thread
    # grown on demand may take longer to warm up (under ASan) than the
    # queue allows, and the second stream would be refused instead. The
    # limits are declared, so neither stream waits for a probe's answer;
    # the streams (6 s) outlast the third request's wait for a thread.
    env = {"RATE_LIMIT_INTERVAL_MS": "0", "WORKER_THREADS": "2", "WORKER_MAX_THREADS": "2",
           "QUEUE_MAX_WAIT_MS": "1500", "CEREBRAS_LIMITS": "rpm=100000,tpm=100000000"}
    restores_workers = True

    def test_saturation_refusal_is_counted(self):
        slow = chat_body(stream=True, mock={"events": 30, "gap_ms": 200})
        with concurrent.futures.ThreadPoolExecutor(2) as ex:
            fs = [ex.submit(self.chat, slow) for _ in range(2)]
            stack.wait_for(lambda: len(MOCK.requests()) == 2 or any(f.done() for f in fs),
                           15, "both threads streaming")
            for f in fs:
                if f.done():
                    self.fail("a stream ended before the third request: %d %s"
                              % (f.result().status, f.result().text()[:300]))
            r = self.chat()
            self.assertOpenAIError(r, 429, "proxy_saturated")
            # GET is served by the acceptor, beside the busy thread.
            s = self.wait_scrape(lambda s: s.get("cerebras_proxy_requests_total",
                                                 route="chat", code="429") == 1,
                                 "the refusal counted")
            self.assertEqual(s.get("cerebras_proxy_streams_open"), 2)
            self.assertEqual(s.get("cerebras_proxy_requests_in_flight"), 3)
            self.assertEqual([f.result().status for f in fs], [200, 200])
        self.assertEqual(len(MOCK.requests()), 2)


class TestWithoutRedis(MetricsTest):
    """REDIS_URL=none: the per-host scheduler's view; counting unchanged."""
    env = dict(MetricsTest.env, REDIS_URL="none")

    def test_counts_and_per_host_view(self):
        for _ in range(2):
            self.assertEqual(self.chat().status, 200)
        s = self.wait_scrape(lambda s: s.total("cerebras_proxy_upstream_requests_total") == 2
                             and s.get("cerebras_proxy_requests_total", route="chat",
                                       code="200") == 2, "the requests counted")
        self.assertEqual(s.get("cerebras_proxy_redis_up"), 0)
        states = s.where("cerebras_proxy_key_state")
        self.assertEqual({dict(l)["key"] for l in states}, {"0", "1", "2"})
        for k in ("0", "1", "2"):
            self.assertEqual(s.total("cerebras_proxy_key_state", key=k), 1, k)
        self.assertEqual(ST.redis_cli("--scan").split(), [], "Redis was used")


class TestAllow(MetricsTest):
    """METRICS_ALLOW: other addresses get 403."""
    restores_workers = True

    def test_outside_metrics_allow_is_403(self):
        self.scrape()
        # The requests come from 127.0.0.1 through the web server.
        self.restart_workers(dict(self.env, METRICS_ALLOW="::1"))
        r = self.req("GET", "/metrics")
        self.assertOpenAIError(r, 403, "metrics_not_allowed")
        self.assertNotIn("cerebras_proxy_", r.text())
        self.restart_workers(dict(self.env, METRICS_ALLOW="10.0.0.0/8, 127.0.0.1/32"))
        self.scrape()
        self.scrape(path=harness.PREFIX + "/metrics", port=ST.prefix_port)
        # Through a proxy on this host (a tunnel, another web server) that
        # is not in TRUSTED_PROXIES: refused, though it comes from 127.0.0.1.
        for h in ({"X-Forwarded-For": "203.0.113.5"}, {"Forwarded": "for=203.0.113.5"}):
            self.assertOpenAIError(self.req("GET", "/metrics", headers=h), 403,
                                   "metrics_not_allowed")
        # Through a trusted proxy: the address it forwarded is the one checked.
        self.restart_workers(dict(self.env, METRICS_ALLOW="10.9.9.9",
                                  TRUSTED_PROXIES="127.0.0.1"))
        r = self.req("GET", "/metrics", headers={"X-Forwarded-For": "10.9.9.9"})
        self.assertEqual(r.status, 200, r.text())
        self.assertOpenAIError(self.req("GET", "/metrics",
                                        headers={"X-Forwarded-For": "203.0.113.5"}),
                               403, "metrics_not_allowed")
        self.assertOpenAIError(self.req("GET", "/metrics"), 403, "metrics_not_allowed")


if __name__ == "__main__":
    unittest.main()
