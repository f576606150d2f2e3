"""Integration tests of a worker process's thread pool (fcgi/pool.c) behind
nginx: a burst of streams at the shipped defaults gets each first event at
its slot, threads grow with the load and retire after an idle spell, the
cap is logged and bounded (429 proxy_saturated), health checks and
preflights are answered at the cap, the open-file limit sizes the cap, and
SIGTERM drains a loaded pool.

mod_fcgid sends a process one request at a time (no pool there), so this
module runs behind nginx only.
"""

import concurrent.futures
import os
import re
import resource
import subprocess
import threading
import time
import unittest

from harness import (APACHE, BINARY, MOCK, ST, ProxyTest, chat_body, log_fields,  # noqa: F401
                     setUpModule, stack, tearDownModule)

# A request waits for a worker thread at most this long in a burst on this
# 2-core machine (threads are started and warmed while the requests queue);
# with a fixed pool of 4 x 1 threads (the old defaults) the 100th request of
# the burst below waited ~70 s.
THREAD_WAIT_MAX_MS = 3000.0


def worker_pids():
    """The worker processes: the supervisor's children."""
    return stack.children(ST.procs["workers"].pid)


def task_count(pid):
    """The worker threads of process pid (named cp-worker by the pool)."""
    n = 0
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            try:
                with open("/proc/%d/task/%s/comm" % (pid, tid)) as f:
                    n += f.read().strip() == "cp-worker"
            except OSError:
                # The thread retired between the listing and the read:
                # the open gives ENOENT, the read ESRCH.
                pass
    except OSError:
        pass
    return n


def first_event_time(resp):
    """time.monotonic() of the first content event's arrival, or None."""
    return next((t for t, body in resp.arrivals if b"mock_index" in body), None)


@unittest.skipIf(APACHE, "mod_fcgid: one request per process, no thread pool")
class PoolTest(ProxyTest):
    """One worker process by default, started again as the class ends."""
    workers = 1
    restores_workers = True


class TestBurstAtDefaults(PoolTest):
    """`make run`'s shape: 4 processes, no thread settings (the defaults)."""
    workers = 4
    env = {"RATE_LIMIT_INTERVAL_MS": "20"}

    def test_hundred_streams_each_first_event_at_its_slot(self):
        n, spacing_ms = 100, 20
        barrier = threading.Barrier(n)
        t0 = []

        def one(i):
            barrier.wait()
            if i == 0:
                t0.append(time.monotonic())
            return self.chat(chat_body(stream=True, mock={"events": 30, "gap_ms": 100}),
                             headers={"X-Request-Id": "burst-%03d" % i}, timeout=120)

        with concurrent.futures.ThreadPoolExecutor(n) as ex:
            rs = list(ex.map(one, range(n)))
        for r in rs:
            self.assertEqual(r.status, 200, r.text()[:300])
            self.assertEqual(r.body.count(b"mock_index"), 30)
            self.assertTrue(r.body.endswith(b"data: [DONE]\n\n"))
        slots = log_fields("burst-", "slot")
        sent = log_fields("burst-", "sent_mono")
        waits = log_fields("burst-", "thread_ms")
        self.assertEqual(len(slots), n)
        # The schedule: one slot every 20 ms, exactly (Redis time) ...
        gaps = sorted(b - a for a, b in zip(sorted(slots.values()), sorted(slots.values())[1:]))
        self.assertEqual(gaps[0], spacing_ms * 1000, gaps[:5])
        # ... nginx said when it handed each request over (X-Request-Start) ...
        self.assertEqual(len(re.findall(r"chat id=burst-\d+ .* backlog_ms=\d+\.\d ",
                                        ST.log_text())), n)
        # ... and no request waited long for a thread to take it.
        self.assertLess(max(waits.values()), THREAD_WAIT_MAX_MS, sorted(waits.values())[-5:])
        # Each first event reached the client soon after its request left
        # at its slot (the workers' CLOCK_MONOTONIC is the client's).
        for i, r in enumerate(rs):
            rid = "burst-%03d" % i
            lag = first_event_time(r) - sent[rid]
            self.assertLess(lag, 1.0, (rid, lag))
        # The whole burst is spacing-bound: 99 x 20 ms of slots after the
        # threads took the requests, not 25 rounds of 3-second streams.
        last_first = max(first_event_time(r) for r in rs) - t0[0]
        self.assertLess(last_first, (n - 1) * spacing_ms / 1000 + THREAD_WAIT_MAX_MS / 1000 + 1.0)


class TestElasticPool(PoolTest):
    env = {"RATE_LIMIT_INTERVAL_MS": "0", "WORKER_THREADS": "2", "WORKER_IDLE_TIMEOUT_MS": "1000"}

    def test_threads_grow_with_the_load_then_retire(self):
        self.restart_workers(self.env)
        pid, = worker_pids()
        # the 2 warm threads (besides main and the acceptor)
        stack.wait_for(lambda: task_count(pid) == 2, 10, "2 threads at rest")
        n = 30
        peak = []
        # Counted once all 30 stream at once.
        on_data = self.once_all_streaming(n, lambda: peak.append(task_count(pid)))

        with concurrent.futures.ThreadPoolExecutor(n) as ex:
            rs = list(ex.map(lambda i: self.chat(
                chat_body(stream=True, mock={"events": 10, "gap_ms": 100}),
                headers={"X-Request-Id": "grow-%d" % i}, on_data=on_data), range(n)))
        self.assertEqual([r.status for r in rs], [200] * n)
        # One thread per stream at least.
        self.assertGreaterEqual(peak[0], n, peak)
        # After an idle second the extra threads end: back to the minimum.
        counts = []
        try:
            stack.wait_for(lambda: counts.append(task_count(pid)) or counts[-1] == 2, 15,
                           "threads back to 2")
        except RuntimeError:
            self.fail("threads did not come back to 2: %s...%s\n%s" % (
                counts[:3], counts[-3:], ST.log_text()[-3000:]))
        # ... and stay there: the minimum never retires (two idle spells).
        time.sleep(2.0)
        self.assertEqual(task_count(pid), 2)
        # The pool still serves, growing again as needed.
        self.assertEqual(self.chat().status, 200)


class TestCap(PoolTest):
    env = {"RATE_LIMIT_INTERVAL_MS": "0", "WORKER_THREADS": "1", "WORKER_MAX_THREADS": "2"}

    def streams(self, n, prefix, events=20, **kw):
        """n concurrent 100 ms-gap streams, started in order, each once the
        previous one has been handed to the mock."""
        ex = concurrent.futures.ThreadPoolExecutor(n)
        self.addCleanup(ex.shutdown)
        futs = []
        for i in range(n):
            futs.append(ex.submit(self.chat, chat_body(stream=True, mock={"events": events,
                                                                         "gap_ms": 100}),
                                  headers={"X-Request-Id": "%s-%d" % (prefix, i)}, **kw))
        return futs

    def test_at_the_cap_requests_wait_and_health_checks_do_not(self):
        self.restart_workers(dict(self.env, QUEUE_MAX_WAIT_MS="30000"))
        futs = self.streams(2, "cap")
        stack.wait_for(lambda: len(MOCK.requests()) == 2, 10, "2 streams at the mock")
        # Both threads stream: the next request waits for one, accepted.
        late = self.streams(1, "capq")
        stack.wait_for(lambda: "all 2 threads busy (WORKER_MAX_THREADS)" in ST.log_text(),
                       10, "the cap logged")
        # Health checks and preflights do not wait behind the streams.
        t = time.monotonic()
        r = self.req("GET", "/")
        self.assertEqual((r.status, r.body), (200, b"OK"))
        r = self.req("OPTIONS", "/v1/chat/completions",
                     headers={"Origin": "https://app.example",
                              "Access-Control-Request-Method": "POST"})
        self.assertEqual(r.status, 204)
        self.assertLess(time.monotonic() - t, 1.0)
        self.assertFalse(any(f.done() for f in futs + late))
        for f in futs + late:
            r = f.result(60)
            self.assertEqual(r.status, 200)
            self.assertTrue(r.body.endswith(b"data: [DONE]\n\n"))
        # The queued one started when a stream ended (2 s in).
        waited = log_fields("capq-", "thread_ms")["capq-0"]
        self.assertGreater(waited, 1000.0)

    def test_a_request_queued_past_its_wait_gets_429(self):
        self.restart_workers(dict(self.env, QUEUE_MAX_WAIT_MS="500"))
        futs = self.streams(2, "sat", events=30)
        stack.wait_for(lambda: len(MOCK.requests()) == 2, 10, "2 streams at the mock")
        t = time.monotonic()
        r = self.chat(headers={"X-Request-Id": "sat-q", "Origin": "https://app.example"})
        took = time.monotonic() - t
        self.assertOpenAIError(r, 429, "proxy_saturated")
        self.assertEqual(r.header("Retry-After"), "1")
        self.assertGreaterEqual(took, 0.5)
        self.assertLess(took, 2.5)       # 500 ms, swept every 200 ms
        self.assertEqual(len(MOCK.requests()), 2)   # it spent nothing
        self.assertIn("found no free thread within QUEUE_MAX_WAIT_MS=500", ST.log_text())
        for f in futs:
            self.assertEqual(f.result(60).status, 200)

    def test_a_full_queue_leaves_connections_in_the_backlog_and_says_so(self):
        self.restart_workers(dict(self.env, QUEUE_MAX_WAIT_MS="30000"))
        # 2 streaming + 2 queued (as many as threads) fill the process ...
        futs = self.streams(2, "full", events=15)
        stack.wait_for(lambda: len(MOCK.requests()) == 2, 10, "2 streams at the mock")
        futs += self.streams(3, "fullq", events=1)
        stack.wait_for(lambda: "new connections wait in the listen backlog" in ST.log_text(),
                       10, "the full queue logged")
        # ... and the fifth waits in the backlog until room is made: all
        # are served in the end.
        for f in futs:
            self.assertEqual(f.result(60).status, 200)


class TestDescriptors(PoolTest):
    env = {"RATE_LIMIT_INTERVAL_MS": "0"}

    def test_the_open_file_limit_sizes_the_cap_and_nothing_is_lost(self):
        # 80 descriptors: (80 - 32) / 5 = 9 requests in flight at most.
        wrapper = os.path.join(ST.dir, "low-nofile.sh")
        with open(wrapper, "w") as f:
            f.write('#!/bin/sh\nexec prlimit --nofile=80:80 -- %s "$@"\n' % os.path.abspath(BINARY))
        os.chmod(wrapper, 0o755)
        real = ST.binary
        ST.binary = wrapper
        try:
            self.restart_workers(self.env)
        finally:
            ST.binary = real
        stack.wait_for(lambda: "WORKER_MAX_THREADS=512 lowered to 9: the open-file limit is 80"
                       in ST.log_text(), 10, "the lowered cap logged")
        n = 20
        with concurrent.futures.ThreadPoolExecutor(n) as ex:
            rs = list(ex.map(lambda i: self.chat(
                chat_body(stream=True, mock={"events": 5, "gap_ms": 100}),
                headers={"X-Request-Id": "nofile-%d" % i}), range(n)))
        self.assertEqual([r.status for r in rs], [200] * n)
        self.assertNotIn("accept failed", ST.log_text())
        pid, = worker_pids()
        self.assertLessEqual(task_count(pid), 9)


    def test_out_of_descriptors_accept_pauses_and_goes_on(self):
        self.restart_workers(self.env)
        pid, = worker_pids()
        self.assertEqual(self.chat().status, 200)   # every thread connected
        soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
        # The limit bounds descriptor numbers; 3 leaves none but stdin,
        # stdout and stderr, which never close, so no lower one can come
        # free. The accept() waiting now has its number already (the
        # kernel takes it before it waits): one more connection gets in,
        # the next finds no number left: EMFILE, and the connection stays
        # in the listen backlog.
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (3, hard))
        try:
            self.assertEqual(self.chat().status, 200)
            ex = concurrent.futures.ThreadPoolExecutor(1)
            self.addCleanup(ex.shutdown)
            fut = ex.submit(self.chat, headers={"X-Request-Id": "emfile-1"}, timeout=60)
            stack.wait_for(lambda: "accept: Too many open files" in ST.log_text(), 10,
                           "the failed accept logged")
            self.assertFalse(fut.done())
        finally:
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
        # The acceptor tries again within a second: the request is served.
        self.assertEqual(fut.result(30).status, 200)
        self.assertNotIn("stops accepting", ST.log_text())
        self.assertEqual(worker_pids(), [pid])


class TestDrainUnderLoad(PoolTest):
    env = {"RATE_LIMIT_INTERVAL_MS": "0"}

    def test_sigterm_finishes_what_the_grown_pool_serves(self):
        self.restart_workers(self.env)
        p = ST.procs["workers"]
        n = 12   # the pool starts with 2 threads and grows to 12 and more
        on_data = self.once_all_streaming(n, p.terminate)
        seen = on_data.seen

        with concurrent.futures.ThreadPoolExecutor(n) as ex:
            rs = list(ex.map(lambda i: self.chat(
                chat_body(stream=True, mock={"events": 8, "gap_ms": 150}),
                headers={"X-Request-Id": "drain-%d" % i}, on_data=on_data), range(n)))
        self.assertEqual(len(seen), n)
        for r in rs:   # all were running at the stop: all finished
            self.assertEqual(r.status, 200)
            self.assertTrue(r.body.endswith(b"data: [DONE]\n\n"), r.body[-200:])
        self.assertEqual(p.wait(15), 0)
        self.assertEqual(self.req("GET", "/").status, 502)   # nobody accepts now


@unittest.skipIf(APACHE, "mod_fcgid: one request per process, no thread pool")
class TestSettings(unittest.TestCase):
    def check(self, *args, **env):
        full = dict(os.environ, CEREBRAS_API_KEYS="sk-x", REDIS_URL="none", **env)
        return subprocess.run([BINARY, "--check-config"] + list(args), env=full,
                              capture_output=True, text=True, timeout=10)

    def test_defaults_and_options(self):
        out = self.check().stdout
        self.assertIn("WORKER_THREADS=2\n", out)
        self.assertIn("WORKER_MAX_THREADS=512\n", out)
        self.assertIn("WORKER_IDLE_TIMEOUT_MS=30000\n", out)
        out = self.check("--threads", "8", "--max-threads", "64").stdout
        self.assertIn("WORKER_THREADS=8\n", out)
        self.assertIn("WORKER_MAX_THREADS=64\n", out)
        # The minimum wins over a lower maximum.
        out = self.check(WORKER_THREADS="600").stdout
        self.assertIn("WORKER_MAX_THREADS=600\n", out)

    def test_bad_values_stop_the_start(self):
        r = self.check(WORKER_MAX_THREADS="0")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("WORKER_MAX_THREADS", r.stderr)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1)
        r = self.check(WORKER_IDLE_TIMEOUT_MS="soon")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("WORKER_IDLE_TIMEOUT_MS", r.stderr)


if __name__ == "__main__":
    unittest.main()
