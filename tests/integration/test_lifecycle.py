"""Integration tests of the workers' life: SIGTERM drains what runs (worker
processes, and threads within one), and Redis going away and coming back.
"""

import concurrent.futures
import os
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from harness import MOCK, ST, setUpModule, tearDownModule  # noqa: E402,F401 (module fixtures)
from harness import APACHE, ProxyTest, chat_body  # noqa: E402
import stack  # noqa: E402 (deploy/, put on the path by harness)



@unittest.skipIf(APACHE, "under Apache, mod_fcgid owns the worker processes (and sends one "
                 "request at a time to each: WORKER_THREADS stays 1)")
class TestDrain(ProxyTest):
    """SIGTERM to the supervisor: what runs is finished, within DRAIN_TIMEOUT_MS."""
    workers = 2
    env = {"RATE_LIMIT_INTERVAL_MS": "0", "WORKER_THREADS": "4"}
    restores_workers = True   # the tests stop them

    def test_sigterm_drains_running_streams_then_exits(self):
        self.restart_workers(self.env, n=1)
        p = ST.procs["workers"]
        n = 3
        # SIGTERM once all three streams are running (each has had an
        # event): a request not yet accepted would rightly be refused.
        on_data = self.once_all_streaming(n, p.terminate)
        started = on_data.seen

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


class TestRedisRestart(ProxyTest):
    """Redis killed and started again, its script cache flushed: no request lost."""
    env = {"RATE_LIMIT_INTERVAL_MS": "0"}
    restores_workers = True

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

    def test_script_flush_falls_back_to_eval(self):
        self.restart_workers({"RATE_LIMIT_INTERVAL_MS": "0"}, n=1)
        self.assertEqual(self.chat().status, 200)
        self.assertEqual(ST.redis_cli("SCRIPT", "FLUSH"), "OK")
        self.assertEqual(self.chat().status, 200)
        self.assertEqual(self.chat().status, 200)


if __name__ == "__main__":
    unittest.main()
