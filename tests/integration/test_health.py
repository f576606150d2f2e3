"""Integration tests of readiness and the status command (issue 13, points
3 and 8): GET /readyz going to 503 and back when Redis is killed under
REDIS_FALLBACK=refuse, staying ready on the per-host fallback, 503 when
every key is disabled (401) or cooling down (429); `cerebras-proxy status`
(text and --json) against the running stack: keys by index and
fingerprint, their state and what they were sent today, the learned
budgets, the Redis address with its password masked, and never an API key
or a client token.
"""

import json
import os
import re
import subprocess
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import harness  # noqa: E402
from harness import (BINARY, KEYS, MOCK, REDIS_PREFIX, ST, ProxyTest,  # noqa: E402
                     chat_body)
import stack  # noqa: E402 (deploy/, put on the path by harness)

TOKEN = "cp-health-5e1f0c9a7b32"
TOKEN2 = "cp-health-other-88aa41c2"


def setUpModule():
    harness.setUpModule()


def tearDownModule():
    # The client tokens must be nowhere either (the harness checks the keys).
    try:
        for name in os.listdir(ST.dir):
            if name.endswith(".log") and name != "mock.log":
                with open(os.path.join(ST.dir, name), "rb") as f:
                    text = f.read().decode("utf-8", "replace")
                for t in (TOKEN, TOKEN2):
                    if t in text:
                        raise AssertionError("client token in %s" % name)
    finally:
        harness.tearDownModule()


def fingerprints():
    """[key i's fingerprint] as --check-config prints them."""
    p = subprocess.run([BINARY, "--check-config"], env=dict(os.environ, **ST.worker_env),
                       capture_output=True, text=True, timeout=10)
    m = re.search(r"^CEREBRAS_API_KEYS=\d+ keys?: (.*)$", p.stdout, re.M)
    if m is None:
        raise AssertionError("no CEREBRAS_API_KEYS line in --check-config: %s" % p.stdout)
    return re.findall(r"#\d+\(([0-9a-f]{8})\)", m.group(1))


class HealthTest(ProxyTest):
    env = {"RATE_LIMIT_INTERVAL_MS": "0"}
    restores_workers = True

    def setUp(self):
        super().setUp()
        MOCK.config({})
        # Nothing learned or counted by an earlier test: no budget rests,
        # no day's counts.
        names = ST.redis_cli("--scan", "--pattern", REDIS_PREFIX + ":*").split()
        if names:
            ST.redis_cli("DEL", *names)

    def ready(self, method="GET"):
        return self.req(method, "/readyz")

    def await_ready(self, status, timeout=20, code=None):
        """The first /readyz answer with that status (and code), polled."""
        def check():
            r = self.ready()
            if r.status != status:
                return None
            if code is not None and r.json()["error"]["code"] != code:
                return None
            return r
        return stack.wait_for(check, timeout, "/readyz %d %s" % (status, code or ""),
                              interval=0.1)

    def assertNotReady(self, r, code):
        self.assertOpenAIError(r, 503, code)
        self.assertEqual(r.header("Cache-Control"), "no-store")
        self.assertGreaterEqual(int(r.header("Retry-After")), 1)

    def status(self, *args, env=None, check=True):
        """`cerebras-proxy status ARGS` with the workers' environment (and env)."""
        full = dict(os.environ, **ST.worker_env)
        full.update(self.env)
        full.update(env or {})
        p = subprocess.run([BINARY, "status"] + list(args), env=full,
                           capture_output=True, text=True, timeout=20)
        for where, text in (("stdout", p.stdout), ("stderr", p.stderr)):
            for i, k in enumerate(KEYS):
                self.assertNotIn(k, text, "API key #%d in status %s" % (i, where))
            for t in (TOKEN, TOKEN2):
                self.assertNotIn(t, text, "client token in status %s" % where)
        if check:
            self.assertEqual(p.returncode, 0, p.stderr)
        return p


class TestReady(HealthTest):

    def test_ready(self):
        r = self.ready()
        self.assertEqual(r.status, 200, r.text())
        self.assertCors(r)
        self.assertEqual(r.header("Cache-Control"), "no-store")
        body = r.json()
        self.assertEqual(body["status"], "ready")
        self.assertEqual(body["source"], "redis")
        self.assertIs(body["fallback"], False)
        self.assertEqual((body["keys"], body["keys_usable"]), (len(KEYS), len(KEYS)))
        h = self.ready("HEAD")
        self.assertEqual((h.status, h.body), (200, b""))
        # Other methods: 405 with Allow.
        r = self.req("POST", "/readyz", {})
        self.assertOpenAIError(r, 405, "method_not_allowed")

    def test_redis_killed_under_refuse_then_back(self):
        self.restart_workers(dict(self.env, REDIS_FALLBACK="refuse"))
        self.addCleanup(self.restart_workers, self.env)
        self.assertEqual(self.ready().status, 200)
        ST.stop_proc("redis")
        try:
            r = self.await_ready(503, code="redis_unreachable")
            self.assertNotReady(r, "redis_unreachable")
            self.assertEqual(r.header("Retry-After"), "1")
            # The liveness check does not care.
            self.assertEqual(self.req("GET", "/healthz").status, 200)
            # Nor does the status command print anything but why.
            p = self.status("--json", env={"REDIS_FALLBACK": "refuse"}, check=False)
            self.assertEqual(p.returncode, 1)
            self.assertEqual(p.stdout, "")
            self.assertEqual(len(p.stderr.strip().splitlines()), 1, p.stderr)
            self.assertIn("REDIS_FALLBACK=refuse", p.stderr)
        finally:
            ST.start_redis()
        r = self.await_ready(200)
        self.assertEqual(r.json()["source"], "redis")

    def test_redis_killed_with_fallback_stays_ready(self):
        ST.stop_proc("redis")
        try:
            def on_fallback():
                r = self.ready()
                self.assertEqual(r.status, 200, r.text())
                return r if r.json()["fallback"] else None
            r = stack.wait_for(on_fallback, 20, "/readyz on the fallback", interval=0.1)
            self.assertEqual(r.json()["source"], "host")
            p = self.status("--json")
            st = json.loads(p.stdout)
            self.assertEqual(st["scheduler"]["source"], "host")
            self.assertIs(st["scheduler"]["redis_up"], False)
            self.assertIs(st["scheduler"]["fallback_active"], True)
        finally:
            ST.start_redis()
        self.await_ready(200)

    def test_all_keys_disabled(self):
        MOCK.config({k: {"status": 401} for k in KEYS})
        self.assertOpenAIError(self.chat(), 502, "upstream_auth_failed")
        r = self.await_ready(503, code="all_keys_disabled", timeout=5)
        self.assertNotReady(r, "all_keys_disabled")
        self.assertGreater(int(r.header("Retry-After")), 3500)
        p = self.status("--json")
        st = json.loads(p.stdout)
        self.assertEqual([k["state"] for k in st["keys"]], ["disabled"] * len(KEYS))
        self.assertEqual([k["last_status"] for k in st["keys"]], [401] * len(KEYS))
        for k in st["keys"]:
            self.assertGreater(k["until_ms"], 3500 * 1000)
            self.assertRegex(k["until"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        # The text form says the same.
        text = self.status().stdout
        self.assertEqual(len(re.findall(r"^  #\d+ .* disabled ", text, re.M)), len(KEYS), text)

    def test_all_keys_cooling_down(self):
        MOCK.config({k: {"status": 429, "headers": {"Retry-After": "30"}} for k in KEYS})
        r = self.chat()
        self.assertEqual(r.status, 429, r.text())
        r = self.await_ready(503, code="all_keys_cooling_down", timeout=5)
        self.assertNotReady(r, "all_keys_cooling_down")
        self.assertIn(int(r.header("Retry-After")), range(25, 31))
        st = json.loads(self.status("--json").stdout)
        self.assertEqual([k["state"] for k in st["keys"]], ["resting"] * len(KEYS))
        self.assertEqual([k["last_status"] for k in st["keys"]], [429] * len(KEYS))
        # One key disabled besides: still cooling down (not all disabled).
        MOCK.config({})
        ST.redis_cli("HSET", REDIS_PREFIX + ":keys", "d0", "99999999999999999",
                     "c0", "99999999999999999")
        self.assertNotReady(self.ready(), "all_keys_cooling_down")


class TestStatus(HealthTest):
    """The status command against the running stack, client tokens set."""
    env = {"RATE_LIMIT_INTERVAL_MS": "0", "PROXY_TOKENS": TOKEN + "," + TOKEN2}

    def auth(self):
        return {"Authorization": "Bearer " + TOKEN}

    def test_readyz_needs_no_token(self):
        self.assertEqual(self.ready().status, 200)
        self.assertOpenAIError(self.chat(), 401, "invalid_proxy_token")

    def test_status_json_counts_what_was_sent(self):
        fps = fingerprints()
        self.assertEqual(len(fps), len(KEYS))
        # Key #2 refused (401: disabled), the others serve.
        MOCK.config({KEYS[2]: {"status": 401}})
        used = []
        for _ in range(7):
            r = self.chat(headers=self.auth())
            self.assertEqual(r.status, 200, r.text())
            u = r.json()["usage"]
            used.append(u["prompt_tokens"] + u["completion_tokens"])
        recs = harness.finished_records(8)
        sent = {k: 0 for k in KEYS}
        tokens = {k: 0 for k in KEYS}
        served = [x for x in recs if x["key"] != KEYS[2]]
        for rec in recs:
            sent[rec["key"]] += 1
        # One request at a time: the i-th answer came from the i-th served record.
        for rec, n in zip(served, used):
            tokens[rec["key"]] += n
        p = self.status("--json")
        st = json.loads(p.stdout)
        self.assertEqual([k["index"] for k in st["keys"]], list(range(len(KEYS))))
        self.assertEqual([k["fingerprint"] for k in st["keys"]], fps)
        for i, k in enumerate(st["keys"]):
            self.assertRegex(k["organisation"], r"^[0-9a-f]{8}$")
            self.assertEqual(k["requests_today"], sent[KEYS[i]], (i, st["keys"], sent))
            self.assertEqual(k["tokens_today"], tokens[KEYS[i]], (i, st["keys"], tokens))
        self.assertEqual([k["state"] for k in st["keys"]], ["ok", "ok", "disabled"])
        self.assertEqual([k["last_status"] for k in st["keys"]], [200, 200, 401])
        self.assertIsNone(st["keys"][0]["until"])
        sch = st["scheduler"]
        self.assertEqual((sch["source"], sch["redis_up"], sch["fallback_active"]),
                         ("redis", True, False))
        self.assertEqual(sch["fallback"], "local")
        self.assertEqual(sch["redis_url"], "unix://%s?db=0" % ST.redis_sock)
        self.assertGreaterEqual(sch["timeline_depth_ms"], 0)
        # The mock's answers (its 401s too) carry limits: the budgets of
        # the three organisations (a key each), for the model, were learned.
        orgs = {k["organisation"] for k in st["keys"]}
        self.assertEqual(len(orgs), len(KEYS))
        learned = {(b["organisation"], b["model"]) for b in st["budgets"]}
        self.assertEqual(learned, {(o, "llama3.1-8b") for o in orgs}, st["budgets"])
        for b in st["budgets"]:
            self.assertIn(b["limit"], ("requests-minute", "tokens-minute", "requests-hour",
                                       "tokens-hour", "requests-day", "tokens-day"))
            self.assertTrue(0 <= b["left"] <= b["cap"], b)
        # The text form: every key by index and fingerprint.
        text = self.status().stdout
        for i, fp in enumerate(fps):
            self.assertRegex(text, r"(?m)^  #%d +%s " % (i, fp))
        self.assertIn("timeline depth", text)
        self.assertIn("llama3.1-8b", text)

    def test_redis_password_masked(self):
        port = stack.free_port()
        env = {"REDIS_URL": "redis://:s3cret-REDIS-pw@127.0.0.1:%d/0" % port}
        # Another REDIS_URL names another per-host state: the command's, removed after.
        full = dict(os.environ, **ST.worker_env)
        full.update(self.env)
        full.update(env)
        self.addCleanup(stack.remove_host_state, stack.host_state_fingerprint(BINARY, full))
        for args in ((), ("--json",)):
            p = self.status(*args, env=env)
            self.assertNotIn("s3cret-REDIS-pw", p.stdout + p.stderr)
            self.assertIn("redis://***@127.0.0.1:%d/0" % port, p.stdout)
        # Without the fallback: exit 1, one line on stderr, no password.
        p = self.status("--json", env=dict(env, REDIS_FALLBACK="refuse"), check=False)
        self.assertEqual(p.returncode, 1)
        self.assertNotIn("s3cret-REDIS-pw", p.stdout + p.stderr)
        self.assertIn("redis://***@127.0.0.1:%d/0" % port, p.stderr)
        self.assertEqual(len(p.stderr.strip().splitlines()), 1, p.stderr)


if __name__ == "__main__":
    unittest.main()
