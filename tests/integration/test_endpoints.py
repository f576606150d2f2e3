"""Integration tests of the endpoints around the chat route (issue 13):
GET /v1/models and /v1/models/{id} (a per-host cache of Cerebras' list,
client tokens, the upstream down, a 404 relayed) and POST /v1/completions
(the legacy text completions, streamed and not), through real nginx or
Apache, Redis, the workers and the mock upstream; and the OpenAI Node SDK
(the `openai` npm package, v4) against the running stack.

The models cache is a POSIX shared memory object per host
(/dev/shm/cerebras-proxy-models-*): the classes that need it empty remove
the ones this module made before they start their workers, and the module
removes them at its end.
"""

import concurrent.futures
import glob
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import harness  # noqa: E402
from harness import APACHE, KEYS, MOCK, ST, ProxyTest  # noqa: E402
import stack  # noqa: E402 (deploy/, put on the path by harness)

# What tests/mock_upstream.py lists (its MODELS).
MOCK_MODELS = ["llama3.1-8b", "qwen-3-32b"]
TOKEN = "cp-endpoints-5e1f0a9b7c"
SHM_GLOB = "/dev/shm/cerebras-proxy-models-*"
SDK_DIR = os.path.join(ROOT, "build", "sdk")
SDK_SCRIPT = os.path.join(ROOT, "tests", "sdk", "models.mjs")

_shm_before = set()


def setUpModule():
    _shm_before.update(glob.glob(SHM_GLOB))
    harness.setUpModule()


def tearDownModule():
    try:
        harness.tearDownModule()
    finally:
        clear_models_cache()


def clear_models_cache():
    """Removes the models caches made since the module started (the
    workers must be stopped: a running one keeps its mapping)."""
    for f in set(glob.glob(SHM_GLOB)) - _shm_before:
        try:
            os.unlink(f)
        except FileNotFoundError:
            pass


def closed_port():
    """A loopback port nothing listens on (bound, then closed)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def endpoint_lines(event, id_prefix):
    """{request id: its last log line} of the workers' `event id=...`
    lines (models, completions) whose id starts with id_prefix."""
    out = {}
    for line in ST.log_text().splitlines():
        m = re.search(r"\b%s id=(%s\S*) " % (event, re.escape(id_prefix)), line)
        if m:
            out[m.group(1)] = line
    return out


def wait_endpoint_lines(event, id_prefix, n, timeout=10):
    return stack.wait_for(
        lambda: (lambda d: d if len(d) >= n else None)(endpoint_lines(event, id_prefix)),
        timeout, "%d %s log lines of %s*" % (n, event, id_prefix), interval=0.05)


def models_fetches(records=None):
    """The mock's records of GETs of the list and of one model."""
    recs = records if records is not None else MOCK.requests()
    return [r for r in recs if r["method"] == "GET" and "/models" in r["path"]]


class EndpointTest(ProxyTest):
    """Starts its workers with an empty models cache."""

    @classmethod
    def setUpClass(cls):
        ST.stop_workers()
        clear_models_cache()
        ST.start_workers(cls.workers, cls.env)

    def models(self, path="/v1/models", headers=None, method="GET"):
        return self.req(method, path, headers=headers)

    def assertList(self, r):
        self.assertEqual(r.status, 200, r.text())
        self.assertCors(r)
        self.assertTrue(r.header("Content-Type", "").startswith("application/json"), r.text())
        body = r.json()
        self.assertEqual(body["object"], "list")
        self.assertEqual([m["id"] for m in body["data"]], MOCK_MODELS)
        return body


class TestModels(EndpointTest):
    """MODELS_CACHE_S=300: the list fetched once for the host."""
    env = {"RATE_LIMIT_INTERVAL_MS": "0", "MODELS_CACHE_S": "300"}

    def test_a_list_fetched_once_then_cached_for_every_worker(self):
        r = self.models(headers={"X-Request-Id": "ep-list-first"})
        self.assertList(r)
        self.assertEqual(r.header("X-Cache"), "miss")
        self.assertEqual(r.header("X-Request-Id"), "ep-list-first")
        self.assertEqual(r.header("Cache-Control"), "no-store")
        fetched = models_fetches(self.wait_records(1))
        self.assertEqual(len(fetched), 1)
        self.assertTrue(fetched[0]["path"].endswith("/v1/models"), fetched)
        self.assertIn(fetched[0]["key"], KEYS)
        self.assertEqual(fetched[0]["headers"].get("x-request-id"), "ep-list-first")
        line = wait_endpoint_lines("models", "ep-list-first", 1)["ep-list-first"]
        self.assertIn(" status=200 ", line)
        self.assertIn(" cache=miss ", line)
        self.assertRegex(line, r" total_ms=[\d.]+ ")
        # Many at once, so several worker processes (and threads) answer,
        # each from the host's copy, on both paths and under the prefix.
        paths = [("/v1/models", None), ("/models", None),
                 (harness.PREFIX + "/v1/models", ST.prefix_port)] * 6
        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            rs = list(ex.map(lambda i: self.req("GET", paths[i][0], port=paths[i][1], headers={
                "X-Request-Id": "ep-list-hit-%d" % i}), range(len(paths))))
        for r in rs:
            self.assertList(r)
            self.assertEqual(r.header("X-Cache"), "hit", r.text())
            self.assertRegex(r.header("Age", ""), r"^\d+$")
            self.assertEqual(r.body, rs[0].body)
        self.assertEqual(len(models_fetches()), 1, "the cache was asked again")
        lines = wait_endpoint_lines("models", "ep-list-hit-", len(paths))
        pids = {re.match(r"cerebras-proxy\[(\d+)\]", l).group(1) for l in lines.values()}
        for line in lines.values():
            self.assertIn(" cache=hit ", line)
        if not APACHE and not os.environ.get("WORKER_THREADS"):
            self.assertGreater(len(pids), 1, "one worker process served every request")

    def test_retrieve_a_listed_model_from_the_cache(self):
        self.assertList(self.models())
        MOCK.reset()
        for path in ("/v1/models/qwen-3-32b", "/models/qwen-3-32b/"):
            r = self.models(path)
            self.assertEqual(r.status, 200, r.text())
            self.assertCors(r)
            self.assertEqual(r.header("X-Cache"), "hit")
            self.assertEqual(r.json(), {"id": "qwen-3-32b", "object": "model",
                                        "created": 1745971200, "owned_by": "Alibaba"})
        self.assertEqual(models_fetches(), [])

    def test_unknown_model_is_cerebras_404_relayed(self):
        r = self.models("/v1/models/no-such-model", headers={"X-Request-Id": "ep-404"})
        self.assertEqual(r.status, 404, r.text())
        self.assertCors(r)
        self.assertTrue(r.header("Content-Type", "").startswith("application/json"))
        self.assertEqual(r.json()["code"], "model_not_found")
        self.assertIn("no-such-model", r.json()["message"])
        fetched = models_fetches(self.wait_records(1))
        self.assertEqual([f["path"] for f in fetched], ["/v1/models/no-such-model"])
        line = wait_endpoint_lines("models", "ep-404", 1)["ep-404"]
        self.assertIn(" status=404 ", line)
        self.assertIn(" model=no-such-model ", line)

    def test_model_id_escaped_upstream_and_bad_ids_refused(self):
        r = self.models("/v1/models/odd:name@x")
        self.assertEqual(r.status, 404, r.text())
        self.assertEqual(models_fetches(self.wait_records(1))[0]["path"],
                         "/v1/models/odd%3Aname%40x")
        MOCK.reset()
        r = self.models("/v1/models/" + "m" * 200)
        self.assertOpenAIError(r, 400, "invalid_model_id")
        self.assertEqual(MOCK.requests(), [])

    def test_head_answers_headers_only(self):
        r = self.models(method="HEAD")
        self.assertEqual(r.status, 200, r.text())
        self.assertCors(r)
        self.assertEqual(r.body, b"")
        self.assertTrue(r.header("Content-Type", "").startswith("application/json"))

    def test_other_methods_and_paths(self):
        r = self.req("POST", "/v1/models", body={})
        self.assertOpenAIError(r, 405, "method_not_allowed")
        self.assertIn("GET", r.header("Allow"))
        self.assertOpenAIError(self.req("GET", "/v1/embeddings"), 404, "not_found")

    def test_node_openai_sdk(self):
        """models.list(), models.retrieve() (a listed model, then an
        unknown one: the SDK's NotFoundError) and completions.create(),
        streamed and not, through the real `openai` npm package (v4)."""
        node = shutil.which("node")
        npm = shutil.which("npm")
        if node is None or npm is None:
            self.fail("node and npm are needed for the OpenAI Node SDK test "
                      "(deploy/deps.sh test installs them)")
        if not os.path.exists(os.path.join(SDK_DIR, "node_modules", "openai", "package.json")):
            os.makedirs(SDK_DIR, exist_ok=True)
            p = subprocess.run([npm, "install", "--prefix", SDK_DIR, "--no-audit", "--no-fund",
                                "--loglevel=error", "openai@4"],
                               capture_output=True, text=True, timeout=300)
            self.assertEqual(p.returncode, 0, "npm install openai@4 failed:\n%s%s"
                             % (p.stdout[-2000:], p.stderr[-2000:]))
        base = "http://127.0.0.1:%d/v1" % ST.port
        p = subprocess.run([node, SDK_SCRIPT, SDK_DIR, base, "any-key"],
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(p.returncode, 0, "node %s failed:\n%s%s"
                         % (SDK_SCRIPT, p.stdout[-2000:], p.stderr[-2000:]))
        out = json.loads(p.stdout.strip().splitlines()[-1])
        harness.RESPONSES.append(p.stdout)
        self.assertTrue(out["sdk_version"].startswith("4."), out)
        self.assertEqual(out["list"], MOCK_MODELS)
        self.assertEqual(out["retrieved"], {"id": "qwen-3-32b", "object": "model",
                                            "created": 1745971200, "owned_by": "Alibaba"})
        self.assertEqual(out["missing"], {"status": 404, "name": "NotFoundError"})
        self.assertEqual(out["completion"]["object"], "text_completion")
        self.assertEqual(out["completion"]["text"], "Hello from the mock")
        self.assertGreater(out["completion"]["usage"]["completion_tokens"], 0)
        self.assertEqual(out["streamed"], "tok0 tok1 tok2 ")
        recs = MOCK.requests()
        self.assertEqual(sorted(r["path"] for r in recs if r["method"] == "POST"),
                         ["/v1/completions", "/v1/completions"])


class TestChatAfterModels(EndpointTest):
    """One worker, one thread: a chat and a completion right after an
    upstream GET on the same libcurl handle still POST their bodies."""
    workers = 1
    env = {"RATE_LIMIT_INTERVAL_MS": "0", "MODELS_CACHE_S": "300", "WORKER_THREADS": "1"}

    def test_post_after_get_on_the_same_handle(self):
        for i in range(2):
            MOCK.reset()
            self.assertEqual(self.models("/v1/models/no-such-model").status, 404)
            r = self.chat()
            self.assertEqual(r.status, 200, r.text())
            self.assertEqual(r.json()["object"], "chat.completion")
            r = self.req("POST", "/v1/completions",
                         body={"model": "llama3.1-8b", "prompt": "Hi"})
            self.assertEqual(r.status, 200, r.text())
            recs = self.wait_records(3)
            self.assertEqual([(x["method"], x["path"]) for x in recs],
                             [("GET", "/v1/models/no-such-model"),
                              ("POST", "/v1/chat/completions"),
                              ("POST", "/v1/completions")])
            self.assertEqual(recs[0]["body_len"], 0)
            self.assertEqual(json.loads(recs[1]["body"])["messages"][0]["content"], "Hello proxy")
            self.assertEqual(json.loads(recs[2]["body"])["prompt"], "Hi")


class TestModelsTokens(EndpointTest):
    """Client tokens and the origin list cover the models endpoints."""
    env = {"RATE_LIMIT_INTERVAL_MS": "0", "PROXY_TOKENS": TOKEN,
           "CORS_ALLOW_ORIGINS": "https://ok.example"}

    def assertUnauthorized(self, r):
        self.assertEqual(r.status, 401, r.text())
        self.assertEqual(r.json()["error"]["code"], "invalid_proxy_token")
        self.assertEqual(r.header("WWW-Authenticate"), "Bearer", r.text())

    def test_token_needed(self):
        for path in ("/v1/models", "/v1/models/llama3.1-8b"):
            self.assertUnauthorized(self.models(path, headers={"X-Request-Id": "ep-tok-none"}))
            self.assertUnauthorized(self.models(path, headers={"Authorization": "Bearer wrong-token-123"}))
        self.assertEqual(MOCK.requests(), [])
        line = wait_endpoint_lines("models", "ep-tok-none", 1)["ep-tok-none"]
        self.assertIn(" status=401 ", line)
        self.assertIn("invalid_proxy_token", line)
        r = self.models(headers={"Authorization": "Bearer " + TOKEN, "X-Request-Id": "ep-tok-ok"})
        self.assertEqual(r.status, 200, r.text())
        self.assertEqual([m["id"] for m in r.json()["data"]], MOCK_MODELS)
        r = self.models("/v1/models/llama3.1-8b", headers={"x-api-key": TOKEN})
        self.assertEqual(r.status, 200, r.text())
        self.assertEqual(r.json()["id"], "llama3.1-8b")
        line = wait_endpoint_lines("models", "ep-tok-ok", 1)["ep-tok-ok"]
        self.assertIn(" client=", line)
        self.assertNotIn(" client=- ", line)
        self.assertNotIn(TOKEN, ST.log_text())

    def test_origin_not_allowed(self):
        r = self.models(headers={"Authorization": "Bearer " + TOKEN,
                                 "Origin": "https://evil.example"})
        self.assertEqual(r.status, 403, r.text())
        self.assertEqual(r.json()["error"]["code"], "origin_not_allowed")
        r = self.models(headers={"Authorization": "Bearer " + TOKEN,
                                 "Origin": "https://ok.example"})
        self.assertEqual(r.status, 200, r.text())
        self.assertEqual(r.header("Access-Control-Allow-Origin"), "https://ok.example")


class TestModelsUpstreamDown(EndpointTest):
    """Cerebras unreachable and nothing cached: 502."""
    restores_workers = True

    @classmethod
    def setUpClass(cls):
        cls.env = {"RATE_LIMIT_INTERVAL_MS": "0",
                   "CEREBRAS_API_BASE": "https://127.0.0.1:%d/v1" % closed_port()}
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        cls.env = ProxyTest.env
        super().tearDownClass()

    def test_502_when_unreachable_and_nothing_cached(self):
        for path in ("/v1/models", "/v1/models/llama3.1-8b"):
            r = self.models(path, headers={"X-Request-Id": "ep-down"})
            err = self.assertOpenAIError(r, 502, "upstream_unreachable")
            self.assertNotIn("127.0.0.1", err["message"])
        line = wait_endpoint_lines("models", "ep-down", 1)["ep-down"]
        self.assertIn(" status=502 ", line)


class TestModelsNoCache(EndpointTest):
    """MODELS_CACHE_S=0: every request asks Cerebras; keys in turn."""
    env = {"RATE_LIMIT_INTERVAL_MS": "0", "MODELS_CACHE_S": "0"}

    def test_every_request_fetches(self):
        for _ in range(3):
            r = self.models()
            self.assertList(r)
            self.assertEqual(r.header("X-Cache"), "miss")
        self.assertEqual(len(models_fetches(self.wait_records(3))), 3)

    def test_every_key_refused_is_502_auth_failed_and_no_key_shown(self):
        MOCK.config({k: {"status": 401} for k in KEYS})
        r = self.models(headers={"X-Request-Id": "ep-auth"})
        err = self.assertOpenAIError(r, 502, "upstream_auth_failed")
        for k in KEYS:
            self.assertNotIn(k, r.text())
        fetched = models_fetches(self.wait_records(len(KEYS)))
        self.assertEqual(sorted(f["key"] for f in fetched), sorted(KEYS))
        self.assertIn("every API key", err["message"])

    def test_a_refused_key_is_skipped(self):
        MOCK.config({KEYS[0]: {"status": 403}, KEYS[1]: {"status": 403}})
        for _ in range(3):
            self.assertList(self.models())

    def test_a_key_refused_is_disabled_for_every_worker(self):
        """A key refused on the models endpoint is disabled in the
        scheduler, as for chat: no worker asks with it again (each process
        would otherwise start its rotation at key #0)."""
        MOCK.config({KEYS[0]: {"status": 401}})
        for _ in range(8):
            self.assertList(self.models())
        used = [f["key"] for f in models_fetches(self.wait_records(9))]
        self.assertEqual(used.count(KEYS[0]), 1, used)
        self.assertIn("API key #0", ST.log_text())

    @unittest.skipIf(APACHE, "mod_fcgid does not tell a silent worker that the client left "
                     "(it notices only when it next writes, or at FcgidIOTimeout)")
    def test_client_leaving_during_the_fetch_is_499(self):
        MOCK.config({k: {"delay_ms": 3000} for k in KEYS})
        self.req("GET", "/v1/models", headers={"X-Request-Id": "ep-gone"}, close_after=0.3,
                 timeout=0.3)
        line = wait_endpoint_lines("models", "ep-gone", 1)["ep-gone"]
        self.assertIn(" status=499 ", line)
        self.assertIn("client left", line)
        # The fetch was given up when the client left, not waited out.
        self.assertLess(float(harness.log_word(line, "total_ms")), 2500, line)
        MOCK.config({})
        self.assertList(self.models())

    def test_upstream_error_relayed_when_nothing_cached(self):
        MOCK.config({k: {"status": 503} for k in KEYS})
        r = self.models()
        self.assertEqual(r.status, 503, r.text())
        self.assertCors(r)
        self.assertEqual(r.json()["code"], "mock_503")


class TestModelsStale(EndpointTest):
    """MODELS_CACHE_S=1: an expired list is served while Cerebras fails."""
    env = {"RATE_LIMIT_INTERVAL_MS": "0", "MODELS_CACHE_S": "1"}

    def test_stale_list_served_when_refresh_fails(self):
        self.assertList(self.models())
        MOCK.config({k: {"status": 500} for k in KEYS})
        # The list expires after a second: then it is served stale.
        r = stack.wait_for(lambda: (lambda x: x if x.header("X-Cache") == "stale" else None)(
            self.models(headers={"X-Request-Id": "ep-stale"})), 10, "a stale answer",
            interval=0.2)
        self.assertList(r)
        self.assertGreaterEqual(int(r.header("Age")), 1)
        lines = endpoint_lines("models", "ep-stale")
        self.assertTrue(any(" cache=stale " in l for l in lines.values()), lines)
        # A listed model is served from the stale list too.
        r = self.models("/v1/models/llama3.1-8b")
        self.assertEqual(r.status, 200, r.text())
        self.assertEqual(r.json()["id"], "llama3.1-8b")
        self.assertEqual(r.header("X-Cache"), "stale")


class TestCompletions(EndpointTest):
    """POST /v1/completions: scheduled, forwarded and streamed like chat."""
    env = {"RATE_LIMIT_INTERVAL_MS": "0", "DEFAULT_MAX_COMPLETION_TOKENS": "64"}

    def complete(self, body, rid, path="/v1/completions"):
        return self.req("POST", path, body=body, headers={"X-Request-Id": rid})

    def test_json_answer_and_usage_in_the_log(self):
        r = self.complete({"model": "llama3.1-8b", "prompt": "Say hello"}, "ep-cmpl-json")
        self.assertEqual(r.status, 200, r.text())
        self.assertCors(r)
        body = r.json()
        self.assertEqual(body["object"], "text_completion")
        self.assertEqual(body["choices"][0]["text"], "Hello from the mock")
        rec = self.wait_records(1)[0]
        self.assertEqual((rec["method"], rec["path"]), ("POST", "/v1/completions"))
        sent = json.loads(rec["body"])
        self.assertEqual(sent["prompt"], "Say hello")
        self.assertEqual(sent["max_tokens"], 64)   # DEFAULT_MAX_COMPLETION_TOKENS
        self.assertNotIn("max_completion_tokens", sent)
        line = wait_endpoint_lines("completions", "ep-cmpl-json", 1)["ep-cmpl-json"]
        self.assertIn(" status=200 ", line)
        self.assertIn(" model=llama3.1-8b ", line)
        self.assertEqual(harness.log_word(line, "prompt_tokens"),
                         str(body["usage"]["prompt_tokens"]))
        self.assertEqual(harness.log_word(line, "completion_tokens"),
                         str(body["usage"]["completion_tokens"]))
        self.assertRegex(line, r" est_tokens=\d+\+64 ")

    def test_stream(self):
        r = self.complete({"model": "llama3.1-8b", "prompt": ["one", "two"], "stream": True,
                           "max_tokens": 10}, "ep-cmpl-sse", path="/completions")
        self.assertEqual(r.status, 200, r.text())
        self.assertTrue(r.header("Content-Type", "").startswith("text/event-stream"))
        events = [e for e in r.events() if e.startswith("data: ")]
        self.assertEqual(events[-1], "data: [DONE]")
        chunks = [json.loads(e[6:]) for e in events[:-1]]
        self.assertEqual("".join(c["choices"][0]["text"] for c in chunks if c["choices"]),
                         "tok0 tok1 tok2 ")
        self.assertTrue(all(c["object"] == "text_completion" for c in chunks))
        usage = chunks[-1]["usage"]
        line = wait_endpoint_lines("completions", "ep-cmpl-sse", 1)["ep-cmpl-sse"]
        self.assertEqual(harness.log_word(line, "prompt_tokens"), str(usage["prompt_tokens"]))
        self.assertEqual(harness.log_word(line, "completion_tokens"), "3")
        rec = self.wait_records(1)[0]
        self.assertEqual(json.loads(rec["body"])["max_tokens"], 10)

    def test_bad_bodies_refused_before_anything_is_sent(self):
        for body, why in (({"model": "llama3.1-8b"}, "prompt"),
                          ({"model": "llama3.1-8b", "prompt": {"x": 1}}, "prompt"),
                          ({"model": "llama3.1-8b", "messages": []}, "prompt"),
                          ({"prompt": "hi"}, "model")):
            r = self.complete(body, "ep-cmpl-bad")
            err = self.assertOpenAIError(r, 400, "invalid_request_body")
            self.assertIn(why, err["message"])
        self.assertEqual(MOCK.requests(), [])

    def test_upstream_error_relayed(self):
        r = self.complete({"model": "llama3.1-8b", "prompt": "x", "mock": {"status": 422}},
                          "ep-cmpl-422")
        self.assertEqual(r.status, 422, r.text())
        self.assertEqual(r.json()["code"], "mock_422")

    def test_get_is_405(self):
        r = self.req("GET", "/v1/completions")
        self.assertOpenAIError(r, 405, "method_not_allowed")


if __name__ == "__main__":
    unittest.main()
