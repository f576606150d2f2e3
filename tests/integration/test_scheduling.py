"""Integration tests of the scheduling: key rotation, slot spacing (global, per
key, with a floor), no spacing, the queue bound, and threads sharing it all.
"""

import concurrent.futures
import os
import re
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from harness import (MOCK, ST, setUpModule, tearDownModule,  # noqa: E402,F401
                     APACHE, ARRIVAL_JITTER_MS, KEYS, ProxyTest,
                     chat_body, sends_from_log, slots_from_log)


class TestRotation(ProxyTest):
    # One request at a time per process, so that the twelve spread over the
    # four processes and the rotation is shown across them (with thread
    # pools, one process may well take them all).
    env = {"RATE_LIMIT_INTERVAL_MS": "20", "WORKER_THREADS": "1", "WORKER_MAX_THREADS": "1"}

    def test_three_keys_in_strict_rotation_across_four_workers(self):
        n = 12
        with concurrent.futures.ThreadPoolExecutor(n) as ex:
            rs = list(ex.map(lambda i: self.chat(headers={"X-Request-Id": "rot-%d" % i}),
                             range(n)))
        self.assertEqual([r.status for r in rs], [200] * n)
        key_of = {x["headers"]["x-request-id"]: x["key"] for x in self.wait_records(n)}
        # In the order the scheduler handed out the slots, the keys cycle.
        slot_of = slots_from_log("rot-")
        order = sorted(key_of, key=lambda rid: slot_of[rid])
        keys = [key_of[rid] for rid in order]
        self.assertEqual(set(keys), set(KEYS))
        for a, b in zip(keys, keys[1:]):
            self.assertEqual(KEYS.index(b), (KEYS.index(a) + 1) % 3, keys)
        pids = set(re.findall(r"cerebras-proxy\[(\d+)\]: info: chat id=rot-", ST.log_text()))
        if not APACHE:   # mod_fcgid decides itself how many processes to spawn
            self.assertGreaterEqual(len(pids), 2, "requests were served by one worker only")


class TestSpacing(ProxyTest):
    env = {"RATE_LIMIT_INTERVAL_MS": "200"}

    def test_twenty_concurrent_requests_spaced_in_slot_order(self):
        # Warm up: one request per worker (each holds its worker while it
        # waits for its slot), so every worker has its upstream connection
        # and the measurement does not include TLS handshakes.
        with concurrent.futures.ThreadPoolExecutor(self.workers) as ex:
            list(ex.map(lambda _: self.chat(), range(self.workers)))
        MOCK.reset()
        n = 20
        with concurrent.futures.ThreadPoolExecutor(n) as ex:
            rs = list(ex.map(lambda i: self.chat(headers={"X-Request-Id": "spacing-%d" % i}),
                             range(n)))
        self.assertEqual([r.status for r in rs], [200] * n)
        recs = sorted(self.wait_records(n), key=lambda x: x["t"])
        gaps = [(b["t"] - a["t"]) * 1000 for a, b in zip(recs, recs[1:])]
        print("\n    gaps ms at the mock: min %.2f max %.2f mean %.2f"
              % (min(gaps), max(gaps), sum(gaps) / len(gaps)), file=sys.stderr, end=" ")
        self.assertGreaterEqual(min(gaps), 200 - ARRIVAL_JITTER_MS, gaps)
        # Order of arrival == order of the slots Redis handed out.
        slot_of = slots_from_log("spacing-")
        arrival = [x["headers"]["x-request-id"] for x in recs]
        self.assertEqual(arrival, sorted(arrival, key=lambda rid: slot_of[rid]))
        slots = sorted(slot_of[r] for r in arrival)
        self.assertGreaterEqual(min(b - a for a, b in zip(slots, slots[1:])), 200000)
        # When the workers really sent (CLOCK_MONOTONIC, as the mock's t).
        sends = sends_from_log("spacing-")
        self.assertEqual([x["id"] for x in sends], arrival)
        self.assert_sends_spaced(sends, 200)


@unittest.skipIf(APACHE, "mod_fcgid spawns its processes as a burst comes, so the polls and "
                 "the waits need not overlap; the deadlines are the workers' own")
class TestPollsMeanwhile(ProxyTest):
    """Requests polling for a probe while others wait for their slots."""
    # One organisation: one probe per model, the other requests poll.
    env = {"RATE_LIMIT_INTERVAL_MS": "200", "CEREBRAS_API_KEYS": "|".join(KEYS)}

    def test_polls_leave_the_deadlines_alone(self):
        # Requests for a model whose budget is unknown wait for its probe's
        # headers by asking Redis again every 50 ms; those answers carry no
        # "now". Requests waiting for their slots meanwhile still go at them
        # (a poll's answer once moved the host's estimate of Redis' clock,
        # by which a waiting worker translates its slot again).
        self.assertEqual(self.chat(headers={"X-Request-Id": "pwarm"}).status, 200)
        MOCK.reset()
        model = "poll-model-%d" % time.monotonic_ns()
        with concurrent.futures.ThreadPoolExecutor(10) as ex:
            polls = [ex.submit(self.chat, chat_body(model=model, mock={"delay_ms": 1500}),
                               {"X-Request-Id": "pp-%d" % i}) for i in range(4)]
            waits = [ex.submit(self.chat, None, {"X-Request-Id": "pw-%d" % i})
                     for i in range(6)]
            rs = [f.result() for f in polls + waits]
        self.assertEqual([r.status for r in rs], [200] * 10)
        # The new model's first request was its probe: the others went
        # after its headers (1.5 s), polling until then, while the others
        # waited for their slots.
        recs = self.wait_records(10)
        pp = sorted((x for x in recs if x["headers"]["x-request-id"].startswith("pp-")),
                    key=lambda x: x["t"])
        pw = [x for x in recs if x["headers"]["x-request-id"].startswith("pw-")]
        self.assertEqual(len(pp), 4)
        self.assertGreaterEqual(pp[1]["t"] - pp[0]["t"], 1.5 - ARRIVAL_JITTER_MS / 1000, pp)
        self.assertLess(min(x["t"] for x in pw), pp[1]["t"])
        sends = sends_from_log("pw-")
        self.assertEqual(len(sends), 6)
        self.assert_sends_spaced(sends, 200)


class TestNoSpacing(ProxyTest):
    workers = 20
    env = {"RATE_LIMIT_INTERVAL_MS": "0"}

    def test_interval_zero_sends_at_once(self):
        n = 20
        # Warm-up: mod_fcgid spawns its processes on demand, a few per
        # second; one slow round makes sure all 20 exist (harmless with nginx).
        with concurrent.futures.ThreadPoolExecutor(n) as ex:
            list(ex.map(lambda _: self.chat(chat_body(mock={"delay_ms": 3000})), range(n)))
        MOCK.reset()
        with concurrent.futures.ThreadPoolExecutor(n) as ex:
            rs = list(ex.map(lambda _: self.chat(chat_body(mock={"delay_ms": 1000})), range(n)))
        self.assertEqual([r.status for r in rs], [200] * n)
        recs = sorted(self.wait_records(n), key=lambda x: x["t"])
        span = (recs[-1]["t"] - recs[0]["t"]) * 1000
        print("\n    20 requests reached the mock within %.1f ms" % span, file=sys.stderr, end=" ")
        # With 200 ms spacing this would take 3800 ms; all overlap instead.
        self.assertLess(span, 1000)
        self.assertLess(max(x["t"] for x in recs), min(x["t_done"] for x in recs))


@unittest.skipIf(APACHE, "mod_fcgid sends one request at a time to a process: one thread")
class TestThreads(ProxyTest):
    """Threads: one process serves several requests at once."""
    workers = 2
    env = {"RATE_LIMIT_INTERVAL_MS": "0", "WORKER_THREADS": "4"}

    def test_eight_streams_at_once_on_two_processes(self):
        self.restart_workers(self.env)
        n = 8
        with concurrent.futures.ThreadPoolExecutor(n) as ex:
            rs = list(ex.map(lambda i: self.chat(
                chat_body(stream=True, mock={"events": 6, "gap_ms": 150}),
                headers={"X-Request-Id": "thr-%d" % i}), range(n)))
        for r in rs:
            self.assertEqual(r.status, 200)
            self.assertEqual(r.body.count(b"mock_index"), 6)
            self.assertTrue(r.body.endswith(b"data: [DONE]\n\n"))
        recs = self.wait_records(n)
        # All eight were streaming at the same time (whichever process took
        # them: each grows its pool as needed) ...
        self.assertLess(max(x["t"] for x in recs), min(x["t_done"] for x in recs))
        # ... and each waited no time for a thread (the log's thread_ms).
        waits = [float(m) for m in re.findall(r"chat id=thr-\d+ .* thread_ms=([\d.]+)",
                                              ST.log_text())]
        self.assertEqual(len(waits), n)

    def test_spacing_holds_between_threads(self):
        self.restart_workers({"RATE_LIMIT_INTERVAL_MS": "100", "WORKER_THREADS": "6"}, n=2)
        # A request per key first, not measured: every organisation's
        # budget is learnt (a probe would hold the burst back and release
        # it by polls) and the fresh processes have served (slow under
        # ThreadSanitizer).
        for _ in KEYS:
            self.assertEqual(self.chat(headers={"X-Request-Id": "thwarm"}).status, 200)
        n = 12
        with concurrent.futures.ThreadPoolExecutor(n) as ex:
            rs = list(ex.map(lambda i: self.chat(headers={"X-Request-Id": "thsp-%d" % i}),
                             range(n)))
        self.assertEqual([r.status for r in rs], [200] * n)
        sends = sends_from_log("thsp-")
        self.assertEqual(len(sends), n)
        self.assert_sends_spaced(sends, 100)


class TestPerKeyScope(ProxyTest):
    """RATE_LIMIT_SCOPE=key: each key its own 200 ms timeline."""
    workers = 16
    keys4 = KEYS + ["sk-test-DELTA-0004"]
    env = {"RATE_LIMIT_INTERVAL_MS": "200", "RATE_LIMIT_SCOPE": "key",
           "CEREBRAS_API_KEYS": ",".join(KEYS + ["sk-test-DELTA-0004"])}

    def burst(self, n, id_prefix):
        """Warm-up (every process spawned and connected), then n requests
        from 16 clients; returns the mock's records in arrival order."""
        with concurrent.futures.ThreadPoolExecutor(self.workers) as ex:
            list(ex.map(lambda _: self.chat(chat_body(mock={"delay_ms": 3000})),
                        range(self.workers)))
        MOCK.reset()
        with concurrent.futures.ThreadPoolExecutor(16) as ex:
            rs = list(ex.map(lambda i: self.chat(headers={"X-Request-Id": "%s%d" % (id_prefix, i)}),
                             range(n)))
        self.assertEqual([r.status for r in rs], [200] * n)
        return sorted(self.wait_records(n), key=lambda x: x["t"])

    def test_four_keys_give_four_times_the_rate(self):
        n = 60
        recs = self.burst(n, "pk-")
        # n requests over the span plus one interval (the keys run side by
        # side: 15 slots each, 14 intervals apart).
        rate = n / (recs[-1]["t"] - recs[0]["t"] + 0.2)
        print("\n    per-key scope, 4 keys x 200 ms: %.1f req/s" % rate, file=sys.stderr, end=" ")
        self.assertGreater(rate, 17)          # 4 x 5 = 20 in theory
        self.assertLess(rate, 20.5)
        self.assertEqual({x["key"] for x in recs}, set(self.keys4))
        # Per key, when the workers sent (their log: key index, CLOCK_MONOTONIC).
        # The mock's own stamps are too noisy with 16 busy processes on 2
        # cores to judge single gaps; it judged the rate above.
        sends = sends_from_log("pk-")
        self.assertEqual(len(sends), n)
        self.assertEqual({x["key"] for x in sends}, {0, 1, 2, 3})
        for k in range(4):
            self.assert_sends_spaced([x for x in sends if x["key"] == k], 200)

    def test_global_floor_spaces_all_keys(self):
        # 4 keys x 200 ms would allow 20/s; a 100 ms floor caps it at 10/s.
        self.restart_workers(dict(self.env, RATE_LIMIT_GLOBAL_INTERVAL_MS="100"))
        n = 30
        recs = self.burst(n, "fl-")
        sends = sends_from_log("fl-")
        self.assertEqual(len(sends), n)
        self.assert_sends_spaced(sends, 100)
        rate = n / (recs[-1]["t"] - recs[0]["t"] + 0.1)
        print("\n    key scope with a 100 ms floor: %.1f req/s" % rate, file=sys.stderr, end=" ")
        self.assertLess(rate, 10.5)
        self.assertEqual(len({x["key"] for x in recs}), 4)


@unittest.skipIf(APACHE, "mod_fcgid hands a burst to lazily spawned processes over seconds, so "
                 "no burst forms; the bound is the workers' own and is tested behind nginx")
class TestQueueBound(ProxyTest):
    """QUEUE_MAX_WAIT_MS: a slot too far away is refused at once."""
    workers = 20
    env = {"RATE_LIMIT_INTERVAL_MS": "200", "QUEUE_MAX_WAIT_MS": "1000"}

    def test_burst_beyond_the_bound_gets_immediate_429s(self):
        n = 15

        def one(i):
            t = time.monotonic()
            r = self.chat(headers={"X-Request-Id": "burst-%d" % i})
            return r, time.monotonic() - t

        with concurrent.futures.ThreadPoolExecutor(n) as ex:
            out = list(ex.map(one, range(n)))
        ok = [r for r, _ in out if r.status == 200]
        refused = [(r, dt) for r, dt in out if r.status == 429]
        self.assertEqual(len(ok) + len(refused), n)
        self.assertGreaterEqual(len(ok), 5)
        self.assertGreaterEqual(len(refused), 5)
        for r, dt in refused:
            self.assertOpenAIError(r, 429, "proxy_saturated")
            self.assertGreaterEqual(int(r.header("Retry-After")), 1)
            self.assertLess(dt, 0.5, "a refused request waited")
        recs = sorted(self.wait_records(len(ok)), key=lambda x: x["t"])
        self.assertEqual(len(recs), len(ok))
        # The rest were served in the order of their slots, spaced.
        slots = slots_from_log("burst-")
        served = [slots[x["headers"]["x-request-id"]] for x in recs]
        self.assertEqual(served, sorted(served))
        self.assertEqual({b - a for a, b in zip(served, served[1:])}, {200000})
        # Refused requests reserved nothing: the last slot booked on the
        # timeline is the last request served.
        last = ST.redis_cli("ZRANGE", "{cerebras-proxy}:slot", "-1", "-1").split()
        self.assertEqual([int(x) for x in last], [max(served)])


if __name__ == "__main__":
    unittest.main()
