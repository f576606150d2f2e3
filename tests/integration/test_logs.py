"""Integration tests of the workers' log format (issue 13): with
LOG_FORMAT=json every line a worker writes is one JSON object, with the
request lines' fields as the text form shows them; text stays the default.

The requests go through real nginx (or Apache with mod_fcgid) to the mock
upstream; the lines are read from the workers' stderr as the harness keeps
it (deploy/stack.py: workers.log, or Apache's error log, where the workers'
stderr goes as it is, between Apache's own "[...]" lines).
"""

import json
import os
import re
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import harness  # noqa: E402
from harness import (MOCK, ST, setUpModule, tearDownModule,  # noqa: E402,F401
                     APACHE, KEYS, ProxyTest, chat_body)
import stack  # noqa: E402 (deploy/, put on the path by harness)

# The members every line has, and those a chat line adds (shared/log.h).
COMMON = {"ts", "level", "pid", "msg"}
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
TOKEN = re.compile(r"^([a-z_]+)=(\S*)$")


def fingerprint(key):
    """key_fingerprint(): 8 hex digits of the key's 32-bit FNV-1a hash."""
    h = 2166136261
    for b in key.encode():
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return "%08x" % h


def log_since(offset):
    """The workers' lines written after byte offset of their log."""
    with open(ST.worker_log, "rb") as f:
        f.seek(offset)
        return f.read().decode("utf-8", "replace").splitlines()


def log_size():
    try:
        return os.path.getsize(ST.worker_log)
    except FileNotFoundError:
        return 0


def text_value(v):
    """A text-form token's value as the JSON form gives it."""
    if v == "-":
        return None
    if re.fullmatch(r"-?(0|[1-9]\d*)", v):
        return int(v)
    if re.fullmatch(r"-?(0|[1-9]\d*)\.\d+", v):
        return float(v)
    return v


class TestJsonLog(ProxyTest):
    env = {"RATE_LIMIT_INTERVAL_MS": "0", "LOG_FORMAT": "json"}
    restores_workers = True

    @classmethod
    def setUpClass(cls):
        ST.stop_workers()
        cls.log_from = log_size()
        ST.start_workers(cls.workers, cls.env)

    def worker_lines(self):
        """[(raw line, parsed object)] of every worker line since the class
        started its workers; fails on a line that is not one JSON object.
        Under Apache its own lines ("[date] [module:level] ...") are
        skipped, and no worker line may be in the text form."""
        out = []
        for line in log_since(self.log_from):
            if APACHE and line.startswith("["):
                self.assertNotIn("cerebras-proxy[", line)
                continue
            try:
                obj = json.loads(line)
            except ValueError as e:
                self.fail("not JSON (%s): %r" % (e, line))
            self.assertIsInstance(obj, dict, line)
            out.append((line, obj))
        return out

    def request_line(self, rid):
        """The parsed JSON line of the request with id rid, once written."""
        def find():
            got = [o for _, o in self.worker_lines() if o.get("id") == rid]
            return got[-1] if got else None
        return stack.wait_for(find, 10, "the log line of %s" % rid, interval=0.05)

    def assert_common(self, line, obj):
        self.assertLessEqual(len(line.encode()) + 1, 1023, line)
        self.assertTrue(COMMON <= set(obj), line)
        self.assertRegex(obj["ts"], TS)
        self.assertIn(obj["level"], ("info", "warning", "error"))
        self.assertIsInstance(obj["pid"], int)
        self.assertIsInstance(obj["msg"], str)

    def assert_fields_match_msg(self, obj):
        """The fields are the msg's text-form tokens: the event word, each
        name=value with the value as the text log shows it, the rest the
        outcome."""
        words = obj["msg"].split(" ")
        self.assertEqual(obj["event"], words[0])
        want = {}
        i = 1
        while i < len(words) and TOKEN.match(words[i]):
            name, value = TOKEN.match(words[i]).groups()
            want.setdefault(name, text_value(value) if name != "id" else value)
            i += 1
        rest = " ".join(words[i:])
        got = {k: v for k, v in obj.items() if k not in COMMON | {"event", "outcome"}}
        self.assertEqual(got, want, obj["msg"])
        if rest:
            self.assertEqual(obj["outcome"], rest)
        else:
            self.assertNotIn("outcome", obj)

    def test_every_line_is_json_with_the_text_fields(self):
        # A chat, a stream, a bad body (400), an unknown path (404) and
        # the models list.
        r_chat = self.chat(chat_body(mock={"reply": "one two three"}),
                           headers={"X-Request-Id": "jlog-chat"})
        self.assertEqual(r_chat.status, 200, r_chat.text())
        chat_rec = MOCK.requests()[-1]
        MOCK.reset()
        r_stream = self.chat(chat_body(stream=True, mock={"events": 5}))
        self.assertEqual(r_stream.status, 200, r_stream.text())
        stream_rec = MOCK.requests()[-1]
        r_bad = self.chat(b"not json", headers={"Content-Type": "application/json",
                                                "X-Request-Id": "jlog-bad"})
        self.assertEqual(r_bad.status, 400, r_bad.text())
        r_404 = self.req("GET", "/v1/no-such-thing", headers={"X-Request-Id": "jlog-404"})
        self.assertEqual(r_404.status, 404, r_404.text())
        # Another event's line in the same shape.
        r_models = self.req("GET", "/v1/models", headers={"X-Request-Id": "jlog-models"})
        models = self.request_line("jlog-models")
        self.assertEqual((models["event"], models["status"]), ("models", r_models.status))
        self.assert_fields_match_msg(models)

        # The stream's id was made by the proxy: the header names it.
        stream_id = r_stream.header("X-Request-Id")
        self.assertTrue(stream_id, r_stream.headers)
        for r, rid, rec in ((r_chat, "jlog-chat", chat_rec), (r_stream, stream_id, stream_rec)):
            self.assertEqual(r.header("X-Request-Id"), rid)
            obj = self.request_line(rid)
            self.assertEqual(obj["event"], "chat")
            self.assertEqual(obj["level"], "info")
            self.assertEqual(obj["status"], 200)
            self.assertEqual(obj["model"], "llama3.1-8b")
            # No client tokens: the client is the address.
            self.assertIn(obj["client"], ("127.0.0.1", "::1"))
            self.assertEqual(obj["outcome"], "ok")
            # The key that served it, by index and fingerprint only.
            k = KEYS.index(rec["key"])
            self.assertEqual(obj["key"], "#%d(%s)" % (k, fingerprint(KEYS[k])))
            # Usage as the answer reported it, as numbers.
            usage = re.findall(r'"usage": ?\{"prompt_tokens": ?(\d+), ?"completion_tokens": ?(\d+)',
                               r.body.decode())
            self.assertEqual(len(usage), 1, r.body[-400:])
            self.assertEqual((obj["prompt_tokens"], obj["completion_tokens"]),
                             tuple(int(x) for x in usage[0]))
            for name in ("slot", "bytes", "new_conns"):
                self.assertIsInstance(obj[name], int, obj)
            for name in ("wait_ms", "total_ms", "ttfb_ms", "thread_ms"):
                self.assertIsInstance(obj[name], (int, float), obj)
                self.assertGreaterEqual(obj[name], 0, obj)
            self.assertEqual(obj["est_tokens"], "7+?")
            self.assertIn("budget", obj)
            self.assertIn("waited_for", obj)
            self.assert_fields_match_msg(obj)

        bad = self.request_line("jlog-bad")
        self.assertEqual((bad["event"], bad["status"]), ("chat", 400))
        self.assertEqual(bad["outcome"], "refused: invalid_request_body (body)")
        self.assertIn(bad["client"], ("127.0.0.1", "::1", None))
        self.assert_fields_match_msg(bad)

        # Every line parses; the start-up line too; a request line carries
        # its fields, any other line only ts, level, pid and msg.
        lines = stack.wait_for(
            lambda: (lambda ls: ls if any(o["msg"].startswith("Initialized with ")
                                          for _, o in ls) else None)(self.worker_lines()),
            10, "a start-up line")
        ids = set()
        for line, obj in lines:
            self.assert_common(line, obj)
            if "event" in obj:
                self.assert_fields_match_msg(obj)
                ids.add(obj.get("id"))
            else:
                self.assertEqual(set(obj), COMMON, line)
        self.assertTrue({"jlog-chat", stream_id, "jlog-bad", "jlog-models"} <= ids, ids)
        start = [o for _, o in lines if o["msg"].startswith("Initialized with ")]
        self.assertEqual(start[0]["level"], "info")
        self.assertEqual(set(start[0]), COMMON)
        self.assertRegex(start[0]["msg"], r"^Initialized with 3 API keys\.")


class TestTextIsDefault(ProxyTest):
    """Without LOG_FORMAT the lines stay "cerebras-proxy[PID]: LEVEL: ..."."""

    @classmethod
    def setUpClass(cls):
        ST.stop_workers()
        cls.log_from = log_size()
        ST.start_workers(cls.workers, cls.env)

    def test_text_lines(self):
        r = self.chat(headers={"X-Request-Id": "tlog-chat"})
        self.assertEqual(r.status, 200, r.text())
        line = harness.wait_log_lines("tlog-chat", 1)["tlog-chat"]
        self.assertRegex(line, r"cerebras-proxy\[\d+\]: info: chat id=tlog-chat key=#\d\(")
        self.assertTrue(line.endswith(" ok"), line)
        for line in log_since(self.log_from):
            if APACHE and line.startswith("["):
                continue
            self.assertFalse(line.startswith("{"), line)
            self.assertRegex(line, r"^cerebras-proxy\[\d+\]: (info|warning|error): ")


if __name__ == "__main__":
    unittest.main()
