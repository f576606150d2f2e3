"""The scheduler's Lua scripts (shared/lua/reserve.lua, settle.lua,
rest.lua) run directly on a real redis-server: no C code involved.

One redis-server for the module (a second one under libfaketime for the
clock test); each test starts from FLUSHALL. Where a result would depend on
the script's own "now", either the state makes it not matter (a budget that
rests until FAR, ~1000 s ahead of Redis' clock: every request is ready then
exactly, and the slots follow from it to the microsecond), or the result is
bracketed by TIME before and after the call (Redis runs one command at a
time, so the script's TIME falls in between): no tolerance either way.

Tests marked @script_bug expect what a script's header comment promises and
the script does not do (yet): they are expected failures, reported apart by
run.py, and become failures the day the script is fixed (then drop the mark).
CPROXY_SCRIPT_BUGS=fail runs them as ordinary tests, to see how they fail.
"""

import collections
import functools
import os
import re
import shutil
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import RedisServer, Scripts, faketime_env  # noqa: E402

SEC = 1000000
MS = 1000
IV = 200 * MS          # interval
FLOOR = 50 * MS        # the global floor in key scope
POLL = 50 * MS         # how long to wait while a probe is out
PROBE_TTL = 30 * SEC   # how long a probe holds its budget
PREFIX = "cproxy-test:{cp}"
DAY_MS = 86400000
M = "llama3.1-8b"      # the model of most tests
M2 = "qwen-3-32b"      # another model
# The budgets, in budget order: requests-minute, tokens-minute,
# requests-hour, tokens-hour, requests-day, tokens-day.
RPM, TPM, RPH, TPH, RPD, TPD = range(6)
WINDOW = [60 * SEC, 60 * SEC, 3600 * SEC, 3600 * SEC, 86400 * SEC, 86400 * SEC]
NONE = (0,) * 6
WHY_NONE, WHY_SPACING, WHY_DISABLED, WHY_REST, WHY_PROBE = -1, 6, 7, 8, 9
WHY_CLIENT_RATE, WHY_CLIENT_CONC = 10, 11
LEASE = 900 * SEC      # a seat's lease (sched_redis.h SCHED_SEAT_LEASE_MS)


def limits(**kw):
    """Six declared limits, e.g. limits(rpm=6): the others 0 (none)."""
    names = ("rpm", "tpm", "rph", "tph", "rpd", "tpd")
    return tuple(kw.get(n, 0) for n in names)


SERVER = None

# key, wait, slot (the until of -1), why, probe, cq, ct, rt, first: the
# reply (the last five None unless reserved); t0, t1: TIME around the call; req:
# the arguments of the call, which settle() passes on.
Res = collections.namedtuple("Res", "key wait slot why probe cq ct rt first t0 t1 req")


def script_bug(reason):
    """Marks a test that expects what a script's header comment promises
    and the script does not do: an expected failure, listed by run.py."""
    def mark(test):
        @functools.wraps(test)
        def wrapper(self, *a, **kw):
            return test(self, *a, **kw)
        wrapper.__doc__ = "SCRIPT BUG: %s -- %s" % (reason, (test.__doc__ or "").strip())
        if os.environ.get("CPROXY_SCRIPT_BUGS") == "fail":
            return wrapper
        return unittest.expectedFailure(wrapper)
    return mark


def setUpModule():
    global SERVER
    if shutil.which("redis-server") is None:
        raise unittest.SkipTest("redis-server is not installed")
    SERVER = RedisServer().start()


def tearDownModule():
    if SERVER is not None:
        SERVER.stop()


class ScriptCase(unittest.TestCase):
    """A clean database, the scripts loaded, and helpers.

    KNOWN: the budgets of organisations 0..2 for M and M2 are marked as
    seen with no limit (an answer without limits came), so requests need
    no probe and only the spacing places them."""

    KNOWN = True

    def server(self):
        return SERVER

    def setUp(self):
        self.r = self.server().client()
        self.addCleanup(self.r.close)
        self.r("FLUSHALL")
        self.s = Scripts(self.r, PREFIX)
        self.far = self.r.time_us() + 1000 * SEC
        if self.KNOWN:
            for model in (M, M2):
                for org in range(3):
                    self.bset(org, model, seen=1)

    # -- state -----------------------------------------------------------
    def get(self, key):
        v = self.r("GET", key)
        return None if v is None else int(v)

    def rr(self):
        return self.get(self.s.rr)

    def zset(self, key):
        """{member: score} of a sorted set."""
        r = self.r("ZRANGE", key, 0, -1, "WITHSCORES")
        return {r[i]: int(r[i + 1]) for i in range(0, len(r), 2)}

    def timeline(self):
        """The global timeline's booked slots, sorted."""
        z = self.zset(self.s.slot)
        for m, v in z.items():
            self.assertEqual(m, "%d" % v)
        return sorted(z.values())

    def ktimeline(self):
        """The per-key timelines: sorted [(key, slot)]."""
        out = []
        for m, v in self.zset(self.s.kslot).items():
            i, at = m.split(":")
            self.assertEqual(int(at), v)
            out.append((int(i), v))
        return sorted(out)

    def field(self, name):
        v = self.r("HGET", self.s.keys, name)
        return None if v is None else int(v)

    def hset(self, **fields):
        args = []
        for k, v in fields.items():
            args += [k, v]
        self.r("HSET", self.s.keys, *args)

    def bget(self, name, org=0, model=M):
        """A field of a budget hash, as an int (None: absent)."""
        v = self.r("HGET", self.s.budget(org, model), name)
        return None if v is None else int(v)

    def bset(self, org=0, model=M, **fields):
        args = []
        for k, v in fields.items():
            args += [k, v]
        self.r("HSET", self.s.budget(org, model), *args)

    def bkey(self, org=0, model=M):
        """The name of a budget hash."""
        return self.s.budget(org, model)

    def budget(self, org=0, model=M):
        """A budget hash as a dict of ints (rt absent: 0, nothing given back)."""
        v = self.r("HGETALL", self.s.budget(org, model))
        out = {v[i]: int(v[i + 1]) for i in range(0, len(v), 2)}
        out.setdefault("rt", 0)
        return out

    def hold(self, till, org=0, model=M):
        """The budget rests until till (x): every request for it is ready
        then exactly, why 8."""
        self.bset(org, model, x=till)

    def snapshot(self):
        """Every key with its value (TTLs aside)."""
        out = {}
        for k in self.r("KEYS", "*"):
            t = self.r("TYPE", k)
            if t == "hash":
                out[k] = self.r("HGETALL", k)
            elif t == "zset":
                out[k] = self.r("ZRANGE", k, 0, -1, "WITHSCORES")
            else:
                out[k] = self.r("GET", k)
        return out

    # -- calls -------------------------------------------------------------
    def reserve(self, nkeys, interval, **kw):
        """reserve.lua, checking the reply's shape and that wait == slot -
        now for the script's now, which lies between TIME before and after
        (-3 for a probe: wait is the poll, slot 0, why 9; -3 for tokens
        still out: slot 0, a token budget's why, wait 4 to 40 polls --
        assertSoftWait checks it exactly where the test knows ready)."""
        kw.setdefault("model", M)
        t0 = self.r.time_us()
        reply = self.s.reserve(nkeys, interval, **kw)
        t1 = self.r.time_us()
        self.assertIsInstance(reply, list, reply)
        key, wait, slot, why = reply[:4]
        if key >= 0:
            self.assertEqual(len(reply), 9, reply)
            self.assertLess(key, nkeys, reply)
            self.assertIn(reply[4], (0, 1), reply)
            self.assertIn(reply[8], (0, 1), reply)
        else:
            self.assertEqual(len(reply), 4, reply)
            self.assertIn(key, (-1, -2, -3, -4), reply)
        if key == -4:
            self.assertIn(why, (WHY_CLIENT_RATE, WHY_CLIENT_CONC), reply)
            self.assertGreater(wait, 0, reply)
        else:
            self.assertLess(why, WHY_CLIENT_RATE, reply)
        if key == -3 and why == WHY_PROBE:
            self.assertEqual((wait, slot), (kw.get("poll", POLL), 0))
        elif key == -3:
            # A wait for tokens still out: asked again a quarter of the
            # way there, 4 to 40 polls.
            poll = kw.get("poll", POLL)
            self.assertIn(why, (TPM, TPH, TPD), reply)
            self.assertEqual(slot, 0, reply)
            self.assertTrue(4 * poll <= wait <= 40 * poll, reply)
        else:
            self.assertTrue(slot - t1 <= wait <= slot - t0,
                            "wait %d is not slot %d - now (now in [%d, %d])"
                            % (wait, slot, t0, t1))
            self.assertGreaterEqual(wait, 0)
        req = dict(kw, nkeys=nkeys, interval=interval)
        rest = reply[4:] if key >= 0 else [None] * 5
        return Res(key, wait, slot, why, *rest, t0=t0, t1=t1, req=req)

    def reserve_many(self, count, *args, **kw):
        """[(key, slot)] of count reservations."""
        out = []
        for _ in range(count):
            res = self.reserve(*args, **kw)
            out.append((res.key, res.slot))
        return out

    def settle(self, res, mode="answer", slot=None, **kw):
        """settle.lua for reservation res (its key, slot, charge, counters,
        probe flag, organisation and model); returns (its answer, TIME
        before, TIME after). slot: another slot to pass (the time the
        request was sent, e.g. one in the past: an answer that took that
        long), res.slot if None."""
        self.assertGreaterEqual(res.key, 0, res)
        if slot is None:
            slot = res.slot
        req = res.req
        orgs = req.get("orgs") or [0] * req["nkeys"]
        args = dict(tokens=req.get("tokens", 0), limits=req.get("limits", NONE),
                    cq=res.cq, ct=res.ct, rt=res.rt, probe=bool(res.probe),
                    first=bool(res.first),
                    org=orgs[res.key], model=req.get("model", M))
        args.update(kw)
        if "age" not in kw:
            # The headers came at the request's slot (unless the test says
            # otherwise): an age beyond it makes the refill count from the
            # slot exactly (settle.lua never counts from before the slot).
            args["age"] = 10 ** 15
        t0 = self.r.time_us()
        ret = self.s.settle(res.key, slot, mode, **args)
        t1 = self.r.time_us()
        return ret, t0, t1

    def assertNow(self, res, why=WHY_NONE):
        """res was reserved for the script's own now: wait 0."""
        self.assertGreaterEqual(res.key, 0, res)
        self.assertEqual(res.wait, 0, res)
        self.assertTrue(res.t0 <= res.slot <= res.t1,
                        "slot %d is not now [%d, %d]" % (res.slot, res.t0, res.t1))
        self.assertEqual(res.why, why, res)

    def assertSoftWait(self, res, ready, poll=POLL):
        """res is a -3 for tokens still out whose budget is ready at ready:
        wait is floor((ready - now) / 4) clamped to [4 * poll, 40 * poll]
        for the script's now, which lies between TIME before and after (the
        clamp is monotonic in now: the values at t1 and t0 bracket it)."""
        def clamp(now):
            return min(max((ready - now) // 4, 4 * poll), 40 * poll)
        self.assertEqual((res.key, res.slot), (-3, 0), res)
        self.assertBetween(clamp(res.t1), res.wait, clamp(res.t0),
                           "wait %d is not (%d - now) / 4 in [%d, %d] polls (now in [%d, %d])"
                           % (res.wait, ready, 4, 40, res.t0, res.t1))

    def assertBetween(self, lo, v, hi, msg=None):
        self.assertTrue(lo <= v <= hi, msg or "%r is not in [%r, %r]" % (v, lo, hi))

    def assertLevelSet(self, l, level, t0, t1, org=0, model=M, k=None):
        """Budget l's e is now - level * window / k for a now in [t0, t1]
        (e is stored rounded up to the microsecond)."""
        if k is None:
            k = self.bget("k%d" % l, org, model)
        e = self.bget("e%d" % l, org, model)
        back = level * WINDOW[l] / k
        self.assertBetween(t0 - back, e, t1 - back + 1,
                           "e%d = %s is not now - %s (now in [%d, %d])" % (l, e, back, t0, t1))

    def assertLevelAt(self, l, level, at, org=0, model=M, k=None):
        """Budget l's level was level at time at (us), refilling since: e
        is at - level * window / k. An answer's remaining is its level at
        the request's slot, so this holds whenever settle.lua set e and
        the level did not reach the cap meanwhile, whatever the script's
        now. e is stored rounded up; doubles resolve a quarter of a us at
        ~1.8e15 us, hence the half us either side."""
        if k is None:
            k = self.bget("k%d" % l, org, model)
        e = self.bget("e%d" % l, org, model)
        want = at - level * WINDOW[l] / k
        self.assertBetween(want - 0.5, e, want + 1.5,
                           "e%d = %s is not %d - %s" % (l, e, at, level * WINDOW[l] / k))


class Rotation(ScriptCase):

    def test_global_round_robin_and_position(self):
        """global scope: keys 0,1,2,0,1,2,0; the position is the chosen key + 1."""
        seen = []
        for _ in range(7):
            res = self.reserve(3, 0)
            self.assertNow(res)
            seen.append(res.key)
            self.assertEqual(self.rr(), res.key + 1)
        self.assertEqual(seen, [0, 1, 2, 0, 1, 2, 0])

    def test_global_starts_at_stored_position(self):
        """global scope: the walk starts at the stored position modulo the key count."""
        self.r("SET", self.s.rr, 4)
        self.assertEqual(self.reserve(3, 0).key, 1)
        self.assertEqual(self.rr(), 2)
        self.assertEqual(self.reserve(3, 0).key, 2)
        self.assertEqual(self.rr(), 3)
        self.assertEqual(self.reserve(3, 0).key, 0)

    def test_global_skips_disabled_keys(self):
        """global scope: a disabled key is skipped, the position moves past the key taken; a past rest is no rest."""
        self.hset(c0=self.far - 2000 * SEC, c1=self.far)
        keys = []
        for _ in range(4):
            res = self.reserve(3, IV)
            keys.append(res.key)
            self.assertEqual(self.rr(), res.key + 1)
        self.assertEqual(keys, [0, 2, 0, 2])
        self.r("SET", self.s.rr, 1)
        self.assertEqual(self.reserve(3, IV).key, 2)
        self.assertEqual(self.rr(), 3)

    def test_key_scope_earliest_slot(self):
        """key scope: the key whose first free slot on its timeline is earliest wins, ties in round-robin order."""
        f = self.far
        self.hold(f)
        # key 0 free from f + 400 ms, key 1 from f + 200 ms, key 2 from f + 100 ms
        self.r("ZADD", self.s.kslot, f, "0:%d" % f, f + IV, "0:%d" % (f + IV),
               f, "1:%d" % f, f - 100 * MS, "2:%d" % (f - 100 * MS))
        got = []
        for _ in range(4):
            res = self.reserve(3, IV, perkey=True)
            got.append((res.key, res.slot - f))
            self.assertEqual(self.rr(), res.key + 1)
            self.assertIn((res.key, res.slot), self.ktimeline())
            self.assertEqual(res.why, WHY_SPACING)
        # then key 2 from f + 300 ms; at f + 400 ms keys 0 and 1 tie: key 0
        # comes first from the position (3 % 3)
        self.assertEqual(got, [(2, 100 * MS), (1, 200 * MS), (2, 300 * MS),
                               (0, 400 * MS)])
        self.assertEqual(self.r("EXISTS", self.s.slot), 0)

    def test_key_scope_ties_in_round_robin_order(self):
        """key scope: equal slots go in round-robin order from the position."""
        f = self.far
        self.hold(f)
        self.r("SET", self.s.rr, 2)
        self.assertEqual(self.reserve_many(6, 3, IV, perkey=True),
                         [(2, f), (0, f), (1, f),
                          (2, f + IV), (0, f + IV), (1, f + IV)])

    def test_key_scope_skips_disabled_keys(self):
        """key scope: the key with the earliest slot is skipped while it is disabled."""
        f = self.far
        self.hold(f)
        self.hset(c0=f + 10 * SEC)
        self.r("ZADD", self.s.kslot, f, "1:%d" % f, f, "2:%d" % f,
               f + IV, "2:%d" % (f + IV))
        self.assertEqual(self.reserve_many(2, 3, IV, perkey=True),
                         [(1, f + IV), (2, f + 2 * IV)])


class Spacing(ScriptCase):

    def test_global_spacing_exact(self):
        """global scope: reservations are exactly the interval apart on the timeline; ARGV[4] (floor) is ignored."""
        f = self.far
        self.hold(f)
        got = []
        for _ in range(4):
            res = self.reserve(2, IV, floor=5 * IV)
            got.append((res.key, res.slot, res.why))
        self.assertEqual(got, [(0, f, WHY_REST), (1, f + IV, WHY_SPACING),
                               (0, f + 2 * IV, WHY_SPACING), (1, f + 3 * IV, WHY_SPACING)])
        self.assertEqual(self.timeline(), [f, f + IV, f + 2 * IV, f + 3 * IV])
        self.assertEqual(self.r("EXISTS", self.s.kslot), 0)

    def test_global_first_is_now_then_interval(self):
        """global scope, fresh state: the first is now (wait 0), the next exactly one interval later."""
        a = self.reserve(2, IV)
        self.assertNow(a)
        self.assertEqual(self.timeline(), [a.slot])
        b = self.reserve(2, IV)
        self.assertEqual((b.key, b.slot, b.why), (1, a.slot + IV, WHY_SPACING))
        self.assertGreater(b.wait, 0)

    def test_global_first_free_moment(self):
        """global scope: a request takes the first moment at least one interval from every booked slot, before later slots if there is room."""
        f = self.far
        self.hold(f)
        self.r("ZADD", self.s.slot, f, f, f + 3 * IV, f + 3 * IV, f + 10 * SEC, f + 10 * SEC)
        self.assertEqual(self.reserve_many(3, 1, IV),
                         [(0, f + IV), (0, f + 2 * IV), (0, f + 4 * IV)])
        # a hole narrower than two intervals is no room
        self.r("FLUSHALL")
        self.hold(f)
        self.r("ZADD", self.s.slot, f + IV // 2, f + IV // 2, f + 2 * IV, f + 2 * IV)
        self.assertEqual(self.reserve_many(1, 1, IV), [(0, f + 3 * IV)])

    def test_interval_zero_means_no_spacing(self):
        """interval 0: every reservation is now, the (stale) timeline is neither read nor written."""
        self.r("ZADD", self.s.slot, self.far, self.far)
        for _ in range(5):
            self.assertNow(self.reserve(2, 0))
        self.assertEqual(self.timeline(), [self.far])
        self.r("DEL", self.s.slot)
        self.assertNow(self.reserve(2, 0))
        self.assertEqual(self.r("EXISTS", self.s.slot), 0)
        self.assertEqual(self.r("EXISTS", self.s.kslot), 0)

    def test_key_scope_spacing_per_key(self):
        """key scope, floor 0: each key's reservations are the interval apart; keys may share a slot; no global timeline."""
        f = self.far
        self.hold(f)
        self.assertEqual(self.reserve_many(4, 2, IV, perkey=True),
                         [(0, f), (1, f), (0, f + IV), (1, f + IV)])
        self.assertEqual(self.ktimeline(), [(0, f), (0, f + IV), (1, f), (1, f + IV)])
        self.assertEqual(self.r("EXISTS", self.s.slot), 0)

    def test_key_scope_floor_between_keys(self):
        """key scope: the global floor separates any two reservations across keys, the interval those of one key."""
        f = self.far
        self.hold(f)
        want = [(0, f), (1, f + FLOOR), (0, f + IV), (1, f + IV + FLOOR)]
        for n, (key, slot) in enumerate(want):
            res = self.reserve(2, IV, perkey=True, floor=FLOOR)
            self.assertEqual((res.key, res.slot), (key, slot))
            self.assertEqual(self.timeline(), sorted(s for _, s in want[:n + 1]))
            self.assertIn((key, slot), self.ktimeline())

    def test_key_scope_own_timeline_and_floor(self):
        """key scope: a key's own later slot pushes it past; the floor then spaces it from other keys' slots."""
        f = self.far
        self.hold(f)
        self.r("ZADD", self.s.kslot, f, "0:%d" % f, f + 100 * MS, "1:%d" % (f + 100 * MS))
        self.r("ZADD", self.s.slot, f + IV + 20 * MS, f + IV + 20 * MS)
        # key 0: its own slot f -> f + IV; the floor from f + IV + 20 ms ->
        # f + IV + 70 ms. key 1: its own slot -> f + 300 ms. Key 0 wins.
        res = self.reserve(2, IV, perkey=True, floor=FLOOR)
        self.assertEqual((res.key, res.slot, res.why), (0, f + IV + 70 * MS, WHY_SPACING))
        # key 0 again: f + 470 ms; key 1: f + 300 ms, then the floor from
        # f + 270 ms -> f + 320 ms
        res = self.reserve(2, IV, perkey=True, floor=FLOOR)
        self.assertEqual((res.key, res.slot), (1, f + 320 * MS))
        self.assertEqual(self.timeline(), [f + IV + 20 * MS, f + IV + 70 * MS, f + 320 * MS])
        self.assertEqual(self.ktimeline(), [(0, f), (0, f + 270 * MS), (1, f + 100 * MS),
                                            (1, f + 320 * MS)])

    def test_key_scope_interval_zero(self):
        """key scope, interval 0: only the floor spaces; no per-key slot is stored. Both 0: no spacing at all."""
        f = self.far
        self.hold(f)
        self.assertEqual(self.reserve_many(3, 2, 0, perkey=True, floor=FLOOR),
                         [(0, f), (1, f + FLOOR), (0, f + 2 * FLOOR)])
        self.assertEqual(self.r("EXISTS", self.s.kslot), 0)
        self.r("FLUSHALL")
        self.bset(seen=1)
        for _ in range(3):
            self.assertNow(self.reserve(2, 0, perkey=True, floor=0))
        self.assertEqual(sorted(self.r("KEYS", "*")), sorted([self.s.rr, self.bkey()]))


class Rests(ScriptCase):

    def test_rest_end_in_redis_time(self):
        """rest.lua: the rest ends duration after Redis' now; it is stored as c<key>."""
        t0 = self.r.time_us()
        till = self.s.rest(1, 10 * SEC)
        t1 = self.r.time_us()
        self.assertTrue(t0 + 10 * SEC <= till <= t1 + 10 * SEC, (t0, till, t1))
        self.assertEqual(self.field("c1"), till)
        self.assertIsNone(self.field("c0"))

    def test_rested_key_skipped_until_its_end(self):
        """a disabled key is skipped while now < end and taken again from its end on (both scopes)."""
        for perkey in (False, True):
            with self.subTest(perkey=perkey):
                self.r("FLUSHALL")
                self.bset(seen=1)
                till = self.s.rest(0, 150 * MS)
                skipped = 0
                deadline = time.monotonic() + 5
                while True:
                    self.r("SET", self.s.rr, 0)
                    # interval 0: the slot is the script's now
                    res = self.reserve(2, 0, perkey=perkey)
                    if res.slot < till:
                        self.assertEqual(res.key, 1, (res, till))
                        skipped += 1
                    else:
                        self.assertEqual(res.key, 0, (res, till))
                        break
                    self.assertLess(time.monotonic(), deadline, "rest never ended")
                    time.sleep(0.01)
                self.assertGreater(skipped, 0)

    def test_rest_only_lengthened(self):
        """rest.lua: a shorter rest leaves the longer one; a longer one replaces it."""
        t0 = self.r.time_us()
        long_end = self.s.rest(2, 100 * SEC)
        self.assertEqual(self.s.rest(2, 1 * SEC), long_end)
        self.assertEqual(self.s.rest(2, 0), long_end)
        self.assertEqual(self.field("c2"), long_end)
        longer = self.s.rest(2, 200 * SEC)
        t1 = self.r.time_us()
        self.assertTrue(t0 + 200 * SEC <= longer <= t1 + 200 * SEC)
        self.assertEqual(self.field("c2"), longer)

    def test_all_disabled_beyond_max_wait(self):
        """every key disabled past the longest wait: {-1, wait, until, 7} with until the earliest end; nothing written (both scopes)."""
        f = self.far
        for perkey in (False, True):
            with self.subTest(perkey=perkey):
                self.r("FLUSHALL")
                self.bset(seen=1)
                self.hset(c0=f + 3 * SEC, c1=f + 1 * SEC, c2=f + 2 * SEC)
                self.r("ZADD", self.s.kslot, f, "2:%d" % f)
                before = self.snapshot()
                res = self.reserve(3, IV, perkey=perkey, floor=FLOOR, max_wait=10 * SEC)
                self.assertEqual((res.key, res.slot, res.why), (-1, f + 1 * SEC, WHY_DISABLED))
                self.assertEqual(self.snapshot(), before)

    def test_all_disabled_within_max_wait_queued(self):
        """every key disabled, the earliest end within the longest wait: the request is queued on that key until its end (why 7), not refused."""
        f = self.far
        self.hset(c0=f + 3 * SEC, c1=f + 1 * SEC, c2=f + 2 * SEC)
        res = self.reserve(3, IV)
        self.assertEqual((res.key, res.slot, res.why), (1, f + 1 * SEC, WHY_DISABLED))

    def test_disabled_and_out_of_budget(self):
        """one key disabled, the other's organisation out of budget, both past the longest wait: -1 until the earlier of the two, with its why."""
        f = self.far
        for c0, until, why in ((f + 1 * SEC, f + 1 * SEC, WHY_DISABLED),
                               (f + 5 * SEC, f + 2 * SEC, WHY_REST)):
            with self.subTest(why=why):
                self.r("FLUSHALL")
                self.bset(0, seen=1)
                self.bset(1, seen=1)
                self.hold(f + 2 * SEC, org=1)
                self.hset(c0=c0)
                res = self.reserve(2, IV, orgs=[0, 1], max_wait=10 * SEC)
                self.assertEqual((res.key, res.slot, res.why), (-1, until, why))


class QueueBound(ScriptCase):

    BIG = 10 * SEC  # an interval much longer than a call

    def test_too_far_global(self):
        """global scope: ready within the longest wait but a slot beyond it gives {-2, wait, slot, 6}; nothing written."""
        f = self.far
        self.hold(f)
        self.r("SET", self.s.rr, 1)
        self.r("ZADD", self.s.slot, f, f)
        before = self.snapshot()
        t = self.r.time_us()
        # ready at f (within the wait), slot f + BIG (beyond it)
        res = self.reserve(3, self.BIG, max_wait=f - t + self.BIG // 2)
        self.assertEqual((res.key, res.slot, res.why), (-2, f + self.BIG, WHY_SPACING))
        self.assertEqual(self.snapshot(), before)
        res = self.reserve(3, self.BIG, max_wait=2000 * SEC)
        self.assertEqual((res.key, res.slot), (1, f + self.BIG))

    def test_too_far_key_scope(self):
        """key scope: the earliest key's slot beyond the longest wait gives -2; position, timelines, budget unchanged."""
        f = self.far
        self.hold(f)
        self.r("ZADD", self.s.kslot, f, "0:%d" % f, f, "1:%d" % f)
        self.hset(c2=f + 10 * SEC)
        before = self.snapshot()
        t = self.r.time_us()
        res = self.reserve(3, self.BIG, perkey=True, floor=FLOOR,
                           max_wait=f - t + self.BIG // 2)
        self.assertEqual((res.key, res.slot, res.why), (-2, f + self.BIG, WHY_SPACING))
        self.assertEqual(self.snapshot(), before)
        self.assertEqual(self.r("EXISTS", self.s.rr), 0)

    def test_zero_wait_bound(self):
        """longest wait 0: a slot now is taken; the next one (interval later) is refused without a trace."""
        a = self.reserve(2, IV, max_wait=0)
        self.assertNow(a)
        before = self.snapshot()
        b = self.reserve(2, IV, max_wait=0)
        self.assertEqual((b.key, b.slot, b.why), (-2, a.slot + IV, WHY_SPACING))
        self.assertEqual(self.snapshot(), before)


class Release(ScriptCase):
    """settle.lua mode "release": the request was never sent."""

    def test_release_is_exact_global(self):
        """global scope: a released slot leaves the timeline whatever was booked after it; the next request takes it."""
        f = self.far
        self.hold(f)
        a, b, c = (self.reserve(3, IV) for _ in range(3))
        self.assertEqual([a.slot, b.slot, c.slot], [f, f + IV, f + 2 * IV])
        self.assertEqual(self.settle(b, "release")[0], -1)
        self.assertEqual(self.timeline(), [f, f + 2 * IV])
        d = self.reserve(3, IV)
        self.assertEqual(d.slot, f + IV)
        self.assertEqual(self.settle(a, "release")[0], -1)
        self.assertEqual(self.timeline(), [f + IV, f + 2 * IV])
        self.assertEqual(self.reserve(3, IV).slot, f)
        # a slot never booked: nothing moves
        before = self.timeline()
        self.s.settle(0, f + 7, "release", model=M)
        self.assertEqual(self.timeline(), before)

    def test_release_key_scope(self):
        """key scope: the slot leaves the key's timeline and the global one; other keys' slots stay."""
        f = self.far
        self.hold(f)
        a = self.reserve(2, IV, perkey=True, floor=FLOOR)
        b = self.reserve(2, IV, perkey=True, floor=FLOOR)
        c = self.reserve(2, IV, perkey=True, floor=FLOOR)
        self.assertEqual([(a.key, a.slot), (b.key, b.slot), (c.key, c.slot)],
                         [(0, f), (1, f + FLOOR), (0, f + IV)])
        self.settle(a, "release")
        self.assertEqual(self.ktimeline(), [(0, f + IV), (1, f + FLOOR)])
        self.assertEqual(self.timeline(), [f + FLOOR, f + IV])
        # key 0 at f would be FLOOR from key 1's slot: it fits again
        d = self.reserve(2, IV, perkey=True, floor=FLOOR)
        self.assertEqual((d.key, d.slot), (0, f))

    def test_release_gives_back_the_charge(self):
        """the charge goes back to every budget: e<l> as before the reservation.
        cq and ct stay (charges made, for the corrections of requests
        reserved after it: they then err low, never high)."""
        lim = limits(rpm=6, tpm=1000, rph=100, tph=10000, rpd=1000, tpd=100000)
        self.reserve(1, 0, limits=lim, tokens=100)
        before = self.budget()
        a = self.reserve(1, 0, limits=lim, tokens=100)
        self.assertEqual((a.cq, a.ct), (2, 200))
        self.assertNotEqual(self.budget(), before)
        self.assertEqual(self.settle(a, "release")[0], -1)
        before.update(cq=2, ct=200)
        self.assertEqual(self.budget(), before)

    def test_release_interval_zero(self):
        """interval 0: no timeline to touch; the charge still goes back."""
        self.reserve(1, 0, limits=limits(rpm=6))
        e = self.bget("e0")
        a = self.reserve(1, 0, limits=limits(rpm=6))
        self.assertEqual(self.bget("e0"), e + 10 * SEC)
        self.settle(a, "release")
        self.assertEqual(self.bget("e0"), e)
        self.assertEqual(self.r("EXISTS", self.s.slot), 0)
        self.assertEqual(self.r("EXISTS", self.s.kslot), 0)

    def test_release_of_a_probe(self):
        """a released probe frees its budget: the next request is the probe."""
        self.r("FLUSHALL")
        a = self.reserve(1, 0)
        self.assertEqual(a.probe, 1)
        self.assertEqual(self.reserve(1, 0).key, -3)
        self.settle(a, "release")
        self.assertIsNone(self.bget("p"))
        b = self.reserve(1, 0)
        self.assertEqual((b.key, b.probe), (0, 1))


class Probe(ScriptCase):
    """An organisation's budget for a model nobody has seen an answer of."""

    KNOWN = False

    def test_first_is_the_probe_others_poll(self):
        """unknown budget: the first reservation is the probe (p set); the next get -3 with wait = poll until its answer."""
        a = self.reserve(2, 0, tokens=100)
        self.assertNow(a)
        self.assertEqual((a.key, a.probe, a.cq, a.ct, a.rt), (0, 1, 1, 100, 0))
        self.assertBetween(a.t0 + PROBE_TTL, self.bget("p"), a.t1 + PROBE_TTL)
        before = self.snapshot()
        for poll in (POLL, 70 * MS):
            res = self.reserve(2, 0, tokens=100, poll=poll)
            self.assertEqual((res.key, res.wait, res.slot, res.why), (-3, poll, 0, WHY_PROBE))
        self.assertEqual(self.snapshot(), before)
        ret, _, _ = self.settle(a, status=200, headers={TPM: (60000, 59900), RPD: (14400, 14399)})
        self.assertEqual(ret, -1)
        self.assertIsNone(self.bget("p"))
        self.assertEqual((self.bget("seen"), self.bget("k1"), self.bget("k4")), (1, 60000, 14400))
        b = self.reserve(2, 0, tokens=100)
        self.assertNow(b)
        self.assertEqual((b.key, b.probe, b.cq), (1, 0, 2))

    def test_declared_limits_skip_the_probe(self):
        """declared limits make the budget known: no probe, no p."""
        for n in range(3):
            a = self.reserve(1, 0, limits=limits(rpd=14400), tokens=10)
            self.assertNow(a)
            self.assertEqual((a.probe, a.cq), (0, n + 1))
        self.assertIsNone(self.bget("p"))

    def test_probe_held_only_for_its_ttl(self):
        """a probe whose answer never came holds the budget until p: then the next request is the probe."""
        a = self.reserve(1, 0, probe_ttl=5 * SEC)
        self.assertBetween(a.t0 + 5 * SEC, self.bget("p"), a.t1 + 5 * SEC)
        self.assertEqual(self.reserve(1, 0).key, -3)
        self.bset(p=self.r.time_us() - 1)
        b = self.reserve(1, 0)
        self.assertEqual((b.key, b.probe), (0, 1))

    def test_other_organisation_flows_during_a_probe(self):
        """a probe holds only its own organisation: a key of another (known) one takes the request; -3 only when nothing else is ready within a poll."""
        self.bset(1, seen=1)
        a = self.reserve(2, 0, orgs=[0, 1])
        self.assertEqual((a.key, a.probe), (0, 1))
        for _ in range(2):
            b = self.reserve(2, 0, orgs=[0, 1])
            self.assertNow(b)
            self.assertEqual((b.key, b.probe), (1, 0))
        # organisation 1 ready only in 60 s (within the wait, beyond a poll)
        poll = 10 * SEC
        self.bset(1, k0=1, e0=self.r.time_us())
        self.assertEqual(self.reserve(2, 0, orgs=[0, 1], poll=poll).key, -3)
        # ready within a poll: booked there
        self.bset(1, e0=self.r.time_us() - 60 * SEC + poll // 2)
        c = self.reserve(2, 0, orgs=[0, 1], poll=poll)
        self.assertEqual((c.key, c.why), (1, RPM))
        self.assertEqual(c.slot, self.bget("e0", 1))

    def test_answer_without_limits(self):
        """a probe's admitted answer without limits: seen, the budget has no limit; an answer that never came (status 0): the next request is the probe."""
        a = self.reserve(1, 0)
        self.settle(a, status=0)
        self.assertIsNone(self.bget("p"))
        self.assertIsNone(self.bget("seen"))
        b = self.reserve(1, 0)
        self.assertEqual(b.probe, 1)
        self.settle(b, status=200)
        self.assertEqual(self.bget("seen"), 1)
        for _ in range(3):
            c = self.reserve(1, 0)
            self.assertNow(c)
            self.assertEqual(c.probe, 0)

    def test_usage_mode(self):
        """"usage" after a probe's headers were settled: only the usage counts (tokens levels, rt); p, cq and the limits stay."""
        a = self.reserve(1, 0, tokens=400)
        self.settle(a, status=200, headers={TPM: (1000, 600), TPH: (100000, 99600)})
        self.bset(p=12345)
        before = dict(e1=self.bget("e1"), e3=self.bget("e3"), cq=self.bget("cq"), ct=self.bget("ct"))
        self.assertEqual(self.settle(a, "usage", status=200, used=100)[0], -1)
        self.assertEqual(self.bget("e1"), before["e1"] - 300 * WINDOW[TPM] // 1000)
        self.assertEqual(self.bget("e3"), before["e3"] - 300 * WINDOW[TPH] // 100000)
        self.assertEqual((self.bget("rt"), self.bget("cq"), self.bget("ct")), (300, before["cq"], before["ct"]))
        self.assertEqual(self.bget("p"), 12345)
        self.assertEqual((self.bget("k1"), self.bget("k3")), (1000, 100000))


class Budgets(ScriptCase):
    """The budgets through reserve.lua: continuous token buckets."""

    def test_requests_minute_pacing(self):
        """requests-minute cap 6 (declared or learned): 6 at once, then one every 10 s, why 0."""
        for learned in (False, True):
            with self.subTest(learned=learned):
                self.r("FLUSHALL")
                lim = limits(rpm=6)
                if learned:
                    self.bset(seen=1, k0=6)
                    lim = NONE
                first = self.reserve(1, 0, limits=lim)
                self.assertNow(first)
                self.assertEqual(self.bget("e0"), first.slot - 50 * SEC)
                for _ in range(5):
                    self.assertNow(self.reserve(1, 0, limits=lim))
                for n in (1, 2):
                    res = self.reserve(1, 0, limits=lim)
                    self.assertEqual((res.key, res.slot, res.why, res.cq),
                                     (0, first.slot + n * 10 * SEC, RPM, 6 + n))

    def test_tokens_minute(self):
        """tokens-minute cap 1000, estimate 400: two at once; the third when 200 more tokens came back, 12 s later (why 1)."""
        a = self.reserve(1, 0, limits=limits(tpm=1000), tokens=400)
        b = self.reserve(1, 0, limits=limits(tpm=1000), tokens=400)
        self.assertNow(a)
        self.assertNow(b)
        self.assertEqual((b.cq, b.ct), (2, 800))
        # 800 tokens are still out and may come back with the answers'
        # usage: the third is not booked 12 s ahead but asks again a
        # quarter of the way there, 3 s, clamped to 40 polls.
        self.assertEqual(self.bget("ot"), 800)
        p = self.reserve(1, 0, limits=limits(tpm=1000), tokens=400)
        self.assertEqual((p.key, p.why, p.wait), (-3, TPM, 40 * POLL))
        self.assertSoftWait(p, a.slot + 12 * SEC)
        # Both answered, all charged tokens used: nothing can come back
        # early, so the third is booked when 200 tokens have refilled.
        self.settle(a, status=200, used=400)
        self.settle(b, status=200, used=400)
        self.assertEqual(self.bget("ot"), 0)
        c = self.reserve(1, 0, limits=limits(tpm=1000), tokens=400)
        self.assertEqual((c.key, c.slot, c.why), (0, a.slot + 12 * SEC, TPM))
        self.assertEqual(self.bget("e1"), a.slot + 12 * SEC)

    def test_tokens_out_that_cannot_cover_are_booked(self):
        """tokens still out that could not make up the shortfall even if all
        came back: the wait is booked at once."""
        a = self.reserve(1, 0, limits=limits(tpm=1000), tokens=900)
        b = self.reserve(1, 0, limits=limits(tpm=1000, rpm=10), tokens=100)
        self.assertNow(a)
        self.assertNow(b)
        self.settle(a, status=200, used=900)
        # 100 out (b), 0 left: 950 needed, at most 100 can come back.
        c = self.reserve(1, 0, limits=limits(tpm=1000), tokens=950)
        self.assertEqual((c.key, c.why), (0, TPM))
        self.assertEqual(c.slot, a.slot + 57 * SEC)

    def test_soft_wait_quarter_of_the_way_clamped(self):
        """a wait for tokens still out (-3, not booked, nothing written) asks
        again a quarter of the way to ready, clamped to 4 .. 40 polls
        (ARGV[10]): a short wait gives 4 polls, a long one 40, a middle one
        a quarter of it."""
        for poll in (POLL, 70 * MS):
            # ready in: 500 ms (an eighth: below 4 polls), 20 s (5 s: above
            # 40 polls), 4 s (1 s: between)
            for ahead, want in ((500 * MS, 4 * poll), (20 * SEC, 40 * poll), (4 * SEC, None)):
                with self.subTest(poll=poll, ahead=ahead):
                    self.r("FLUSHALL")
                    self.bset(seen=1)
                    # tokens-minute 1000, 400 a request: ready when e1 + 24 s
                    # is; two requests' 800 tokens out could cover it.
                    t = self.r.time_us()
                    ready = t + ahead
                    self.bset(k1=1000, e1=ready - 24 * SEC, ot=800)
                    before = self.snapshot()
                    res = self.reserve(1, 0, tokens=400, poll=poll)
                    self.assertEqual((res.key, res.slot, res.why), (-3, 0, TPM))
                    self.assertSoftWait(res, ready, poll)
                    if want is not None:
                        self.assertEqual(res.wait, want)
                    else:
                        self.assertBetween((ready - res.t1) // 4, res.wait, ahead // 4)
                        self.assertTrue(4 * poll < res.wait < 40 * poll, res)
                    self.assertEqual(self.snapshot(), before)

    def test_estimate_beyond_the_cap(self):
        """an estimate beyond the cap costs the whole bucket: one at once, the next a full window later."""
        a = self.reserve(1, 0, limits=limits(tph=1000), tokens=5000)
        self.assertNow(a)
        self.bset(ot=0)  # nothing out that could come back early
        b = self.reserve(1, 0, limits=limits(tph=1000), tokens=5000)
        self.assertEqual((b.slot, b.why), (a.slot + 3600 * SEC, TPH))

    def test_latest_budget_sets_the_slot(self):
        """several limits: the one that admits the request last sets its slot and its why."""
        lim = limits(rpm=60, tpm=1000, rph=100, tph=10000)
        a = self.reserve(1, 0, limits=lim, tokens=6000)
        self.assertNow(a)
        # tokens-minute: the cap (1000) is all gone, back in 60 s;
        # tokens-hour: 4000 left, 2000 more in 720 s
        self.bset(ot=0)  # nothing out that could come back early
        b = self.reserve(1, 0, limits=lim, tokens=6000)
        self.assertEqual((b.slot, b.why), (a.slot + 720 * SEC, TPH))

    def test_requests_day_spent(self):
        """requests-day spent past the longest wait: {-1, wait, until, 4}, until one request has come back (86400/cap s); nothing written. Within the wait: queued."""
        lim = limits(rpd=2)
        a = self.reserve(1, 0, limits=lim)
        self.reserve(1, 0, limits=lim)
        before = self.snapshot()
        res = self.reserve(1, 0, limits=lim, max_wait=60 * SEC)
        self.assertEqual((res.key, res.slot, res.why), (-1, a.slot + 43200 * SEC, RPD))
        self.assertEqual(self.snapshot(), before)
        res = self.reserve(1, 0, limits=lim, max_wait=86400 * SEC)
        self.assertEqual((res.key, res.slot, res.why), (0, a.slot + 43200 * SEC, RPD))

    def test_waiting_request_holds_nobody_back(self):
        """a request waiting for one model's budget books its own later slot; another model's request goes at the next free moment, not after it."""
        big = 1 * SEC
        a1 = self.reserve(1, big, limits=limits(rpm=1), model=M)
        self.assertNow(a1)
        a2 = self.reserve(1, big, limits=limits(rpm=1), model=M)
        self.assertEqual((a2.slot, a2.why), (a1.slot + 60 * SEC, RPM))
        budget_m = self.budget(0, M)
        b1 = self.reserve(1, big, model=M2)
        self.assertEqual((b1.slot, b1.why), (a1.slot + big, WHY_SPACING))
        b2 = self.reserve(1, big, model=M2)
        self.assertEqual(b2.slot, a1.slot + 2 * big)
        self.assertEqual(self.timeline(), [a1.slot, a1.slot + big, a1.slot + 2 * big,
                                           a1.slot + 60 * SEC])
        self.assertEqual(self.budget(0, M), budget_m)
        # M2's budget was charged, not M's
        self.assertEqual(self.bget("cq", model=M2), 2)
        self.assertEqual(self.bget("cq", model=M), 2)

    def test_models_independent(self):
        """each model has its own budget: M spent, M2 flows (interval 0: at once)."""
        self.reserve(1, 0, limits=limits(rpm=1), model=M)
        self.assertEqual(self.reserve(1, 0, limits=limits(rpm=1), model=M).why, RPM)
        for _ in range(3):
            self.assertNow(self.reserve(1, 0, model=M2))

    def test_one_organisation_one_budget(self):
        """keys of one organisation ("0,0") share its budget; of two ("0,1") each has its own."""
        lim = limits(rpm=1)
        a = self.reserve(2, 0, limits=lim, orgs=[0, 0])
        b = self.reserve(2, 0, limits=lim, orgs=[0, 0])
        self.assertEqual((a.key, a.why), (0, WHY_NONE))
        self.assertEqual((b.key, b.slot, b.why, b.cq), (1, a.slot + 60 * SEC, RPM, 2))
        self.assertIsNone(self.r("HGET", self.bkey(1), "cq"))
        self.r("FLUSHALL")
        a = self.reserve(2, 0, limits=lim, orgs=[0, 1])
        b = self.reserve(2, 0, limits=lim, orgs=[0, 1])
        self.assertNow(a)
        self.assertNow(b)
        self.assertEqual([(a.key, a.cq), (b.key, b.cq)], [(0, 1), (1, 1)])
        self.assertEqual((self.bget("cq", 0), self.bget("cq", 1)), (1, 1))

    def test_key_of_ready_organisation_chosen(self):
        """the key whose organisation is ready wins over the round-robin order; its organisation is charged."""
        lim = limits(rpm=1)
        self.reserve(3, 0, limits=lim, orgs=[0, 1, 0])    # org 0 spent
        self.r("SET", self.s.rr, 2)
        res = self.reserve(3, 0, limits=lim, orgs=[0, 1, 0])
        self.assertNow(res)
        self.assertEqual((res.key, res.cq), (1, 1))
        self.assertEqual(self.rr(), 2)
        # both spent: the earlier one (org 0, spent first) wins
        res = self.reserve(3, 0, limits=lim, orgs=[0, 1, 0])
        self.assertEqual((res.key, res.why), (2, RPM))

    def test_counters(self):
        """cq, ct count the organisation's charges; rt what the answers gave back; the reply carries them after this charge."""
        a = self.reserve(1, 0, tokens=400)
        b = self.reserve(1, 0, tokens=300)
        self.assertEqual((a.cq, a.ct, a.rt, b.cq, b.ct, b.rt), (1, 400, 0, 2, 700, 0))
        self.settle(a, status=200, used=100)
        c = self.reserve(1, 0, tokens=50)
        self.assertEqual((c.cq, c.ct, c.rt), (3, 750, 300))


class Settle(ScriptCase):
    """What an answer teaches the budgets (settle.lua mode "answer")."""

    def known(self, **caps):
        """Limits learned from earlier answers: k<l>."""
        names = ("rpm", "tpm", "rph", "tph", "rpd", "tpd")
        self.bset(**{"k%d" % names.index(n): v for n, v in caps.items()})

    def ring_time(self, org=0, model=M):
        """When the latest give-back came: the time of the ring's newest
        entry (r<ri % 16> = "time:rt")."""
        ri = self.bget("ri", org, model)
        v = self.r("HGET", self.bkey(org, model), "r%d" % (ri % 16))
        return int(v.split(":")[0])

    def set_mine(self, l, level, org=0, model=M):
        """The proxy's own level of budget l is level now (e<l>)."""
        k = self.bget("k%d" % l, org, model)
        self.bset(org, model, **{"e%d" % l: self.r.time_us() - level * WINDOW[l] // k})

    # An answer's remaining is taken as of the request's slot (ARGV[2]),
    # refilled since: base (plus, for tokens, what came back after the
    # slot). The upstream may or may not have admitted the requests
    # reserved after this one (after) before it computed remaining, so it
    # can mean a level from base - after to base; slack = max(this
    # request's charge, k / 50). A proxy's own level above base + slack is
    # set down to base - after: the requests reserved after this one may
    # be booked for later, and then are surely not in remaining. One below
    # base - slack is set up, to base, only when this request was alone
    # all its life: none out when it was reserved (first), the only one out
    # when it settles (ot == its charge) and none reserved after it (cq ==
    # its cq); otherwise it is left alone (a request reserved before this
    # one and admitted upstream after it is in neither remaining nor
    # after, even once settled: a raise would count it twice). A 429, a first answer (seen
    # not set) or a new capacity set base - after outright.

    def test_headers_lower_the_level(self):
        """remaining below the proxy's level lowers it to remaining as of the request's slot less the requests reserved after this one: they may be booked for later and then are not in it."""
        self.known(rpm=100, tpm=100000)
        r = self.reserve(1, 0, tokens=1000)
        self.reserve(1, 0, tokens=1000)
        self.reserve(1, 0, tokens=1500)
        ret, t0, t1 = self.settle(r, status=200, headers={RPM: (100, 50), TPM: (100000, 60000)})
        self.assertEqual(ret, -1)
        # two reserved after it, 2500 tokens
        self.assertLevelAt(RPM, 50 - 2, r.slot)
        self.assertLevelAt(TPM, 60000 - 2500, r.slot)
        self.assertEqual((self.bget("cq"), self.bget("ct")), (3, 3500))

    def test_headers_raise_the_level(self):
        """remaining above the proxy's level raises it to remaining as of the slot (base) when the request was alone: none out when it was reserved or since. Otherwise a low level is left alone."""
        self.known(rpm=10)
        rs = [self.reserve(1, 0, tokens=1000) for _ in range(10)]
        self.assertEqual(self.reserve(1, 0, tokens=1000, max_wait=0).key, -1)
        for r in rs[:9]:
            self.settle(r, status=200)  # no limits: nothing moves
        self.assertEqual(self.bget("ot"), 1000)
        # The upstream admitted rs[9] first (remaining 9), but the nine
        # out when it was reserved may have come after it: left alone.
        e0 = self.bget("e0")
        self.settle(rs[9], status=200, headers={RPM: (10, 9)})
        self.assertEqual(self.bget("e0"), e0)
        self.assertEqual(self.reserve(1, 0, tokens=1000, max_wait=0).key, -1)
        # Four reserved, the proxy's own level low (10, 10000) where the
        # answers say 60, 60000: left alone while another is out or one
        # was reserved after the request.
        self.r("DEL", self.bkey())
        self.bset(seen=1)
        self.known(rpm=100, tpm=100000)
        rs = [self.reserve(1, 0, tokens=1000) for _ in range(4)]
        self.set_mine(RPM, 10)
        self.set_mine(TPM, 10000)
        e = self.budget()
        hdrs = {RPM: (100, 60), TPM: (100000, 60000)}
        self.settle(rs[0], status=200, headers=hdrs)  # three after it
        self.assertEqual((self.bget("e0"), self.bget("e1")), (e["e0"], e["e1"]))
        self.settle(rs[3], status=200, headers=hdrs)  # rs[1], rs[2] out
        self.assertEqual((self.bget("e0"), self.bget("e1")), (e["e0"], e["e1"]))
        self.settle(rs[1], status=200)
        self.assertEqual(self.bget("ot"), 1000)
        # rs[2] is the only one out, but rs[3] was reserved after it
        self.settle(rs[2], status=200, headers=hdrs)
        self.assertEqual((self.bget("e0"), self.bget("e1")), (e["e0"], e["e1"]))
        self.assertEqual(self.bget("ot"), 0)
        # alone: raised to base (nothing after it to take off)
        r = self.reserve(1, 0, tokens=1000)
        self.settle(r, status=200, headers=hdrs)
        self.assertLevelAt(RPM, 60, r.slot)
        self.assertLevelAt(TPM, 60000, r.slot)

    def test_headers_allow_for_tokens_given_back(self):
        """tokens that came back after the request's slot (rt, read from
        the ring of give-backs at the slot's time) are not in its
        remaining: added to it (then the tokens reserved after it taken
        off) when the proxy's own level is set down to it, or, the request
        alone, up to it; a low level with another out is left alone."""
        # order "after": r, x, one more (out), x's 600 back after r's
        # slot; "before": x, r, the same (x was out when r was reserved:
        # r is never alone, and a low level is left alone). The proxy's
        # own: 97600 / 98600 (None), or 0; want None: left alone.
        cases = (("after", None, 60000 + 600 - 2000), ("after", 0, None),
                 ("before", None, 60000 + 600), ("before", 0, None))
        for order, mine, want in cases:
            with self.subTest(order=order, mine=mine):
                self.r("DEL", self.bkey())
                self.bset(seen=1)
                self.known(tpm=100000)
                if order == "after":
                    r = self.reserve(1, 0, tokens=1000)
                    x = self.reserve(1, 0, tokens=1000)
                    self.reserve(1, 0, tokens=1000)
                else:
                    x = self.reserve(1, 0, tokens=1000)
                    r = self.reserve(1, 0, tokens=1000)
                self.settle(x, status=200, used=400)
                self.assertEqual(self.bget("rt"), 600)
                self.assertGreater(self.ring_time(), r.slot)
                if mine is not None:
                    self.set_mine(TPM, mine)
                e1 = self.bget("e1")
                self.settle(r, status=200, headers={TPM: (100000, 60000)})
                if want is None:
                    self.assertEqual(self.bget("e1"), e1)
                else:
                    self.assertLevelAt(TPM, want, r.slot)

    def test_headers_include_what_came_back_before_them(self):
        """a give-back before the request's slot (it was reserved earlier
        and waited for its slot) is in the remaining: not added again,
        whether the proxy's own level is set down (the tokens reserved
        after it taken off) or, the request alone, up; a low level with
        another out is left alone."""
        # order "after": r, x, one more (out); "before": x, then r once
        # x is settled (r alone). want None: left alone.
        cases = (("after", None, 60000 - 2000), ("after", 0, None),
                 ("before", None, 60000), ("before", 0, 60000))
        for order, mine, want in cases:
            with self.subTest(order=order, mine=mine):
                self.r("DEL", self.bkey())
                self.bset(seen=1)
                self.known(tpm=100000)
                if order == "after":
                    r = self.reserve(1, 0, tokens=1000)
                    x = self.reserve(1, 0, tokens=1000)
                    self.reserve(1, 0, tokens=1000)
                    self.settle(x, status=200, used=400)
                else:
                    x = self.reserve(1, 0, tokens=1000)
                    self.settle(x, status=200, used=400)
                    r = self.reserve(1, 0, tokens=1000)
                if mine is not None:
                    self.set_mine(TPM, mine)
                e1 = self.bget("e1")
                # r was sent when x's 600 had come back (at its slot, exactly).
                sent = self.ring_time()
                self.settle(r, slot=sent, status=200, headers={TPM: (100000, 60000)})
                if want is None:
                    self.assertEqual(self.bget("e1"), e1)
                else:
                    self.assertLevelAt(TPM, want, sent)

    def test_headers_spent_make_the_next_wait(self):
        """remaining 0 with nothing reserved after: the next request waits one refill (60 s / k)."""
        self.known(rpm=100)
        r = self.reserve(1, 0)
        self.settle(r, status=200, headers={RPM: (100, 0)})
        e = self.bget("e0")
        res = self.reserve(1, 0)
        self.assertEqual((res.slot, res.why), (e + 600 * MS, RPM))

    def test_headers_as_of_the_slot_and_cap(self):
        """remaining is the level when the headers came (now - ARGV[12], never before the slot ARGV[2]), refilled since, up to the cap; the headers' cap replaces the declared one."""
        r = self.reserve(1, 0, limits=limits(rpm=50))
        # Sent 6 s ago, headers just in (age 0): 50 now, no refill counted
        # (the upstream may have admitted it just now).
        _, t0, t1 = self.settle(r, slot=r.slot - 6 * SEC, status=200, headers={RPM: (100, 50)}, age=0)
        self.assertEqual(self.bget("k0"), 100)
        self.assertLevelSet(RPM, 50, t0, t1)
        # Sent 6 s ago, headers 4 s ago: 50 then, refilled 4 s since.
        self.settle(r, slot=r.slot - 6 * SEC, status=200, headers={RPM: (100, 50)}, age=4 * SEC)
        e = self.bget("e0")
        self.settle(r, slot=r.slot - 6 * SEC, status=429, headers={RPM: (100, 50)}, age=4 * SEC)
        self.assertLess(abs(self.bget("e0") - e), 2000)  # the same level, a few us later
        # Headers older than the slot: counted from the slot.
        self.settle(r, slot=r.slot - 6 * SEC, status=429, headers={RPM: (100, 50)}, age=100 * SEC)
        self.assertLevelAt(RPM, 50, r.slot - 6 * SEC)
        # Sent 30 s ago: 95 + 50 refilled, capped at 100 now. A big age
        # changes nothing.
        _, t0, t1 = self.settle(r, slot=r.slot - 30 * SEC, status=200,
                                headers={RPM: (100, 95)}, age=1000 * SEC)
        self.assertLevelSet(RPM, 100, t0, t1)

    def test_headers_slot_not_yet_come(self):
        """a slot after the script's now (never so for a sent request) is taken as now: remaining is the level now."""
        self.known(rpm=100)
        r = self.reserve(1, 0)
        _, t0, t1 = self.settle(r, slot=self.far, status=200, headers={RPM: (100, 40)})
        self.assertLevelSet(RPM, 40, t0, t1)

    def test_band_within_left_alone(self):
        """a proxy's own level within what the answer can mean (base - after .. base), give or take the slack (the request's charge or k / 50, the larger), leaves e<l> alone."""
        cases = (
            # rpm 100: slack 2; tpm 100000, 3000 tokens: slack 3000 (k /
            # 50: 2000). The proxy's own: 99, 97000; nothing after.
            (dict(rpm=100, tpm=100000), 3000, 0, {RPM: (100, 98), TPM: (100000, 94500)}),
            (dict(rpm=100, tpm=100000), 3000, 0, {RPM: (100, 100), TPM: (100000, 99500)}),
            # rpm 1000: slack 20 (k / 50); 100 tokens: slack 2000 (k / 50).
            # The proxy's own: 999, 99900.
            (dict(rpm=1000, tpm=100000), 100, 0, {RPM: (1000, 980), TPM: (100000, 98000)}),
            (dict(rpm=1000, tpm=100000), 100, 0, {RPM: (1000, 1000), TPM: (100000, 100000)}),
            # nine reserved after it (1000 tokens each): the proxy's own is
            # 90, 90000, what the answer can mean 95 - 9 .. 95 (slack 2),
            # 96000 - 9000 .. 96000 (slack 2000): either way, alone.
            (dict(rpm=100, tpm=100000), 1000, 9, {RPM: (100, 95), TPM: (100000, 96000)}),
        )
        for caps, tokens, after, headers in cases:
            with self.subTest(caps=caps, tokens=tokens, after=after, headers=headers):
                self.r("DEL", self.bkey())
                self.bset(seen=1)
                self.known(**caps)
                r = self.reserve(1, 0, tokens=tokens)
                for _ in range(after):
                    self.reserve(1, 0, tokens=tokens)
                before = self.budget()
                self.settle(r, status=200, headers=headers)
                self.assertEqual((self.bget("e0"), self.bget("e1")), (before["e0"], before["e1"]))

    def test_band_beyond_sets_down(self):
        """a proxy's own level above what the answer can mean by more than the slack is set to base - after (remaining as of the slot less the charges reserved after this one): those may be booked for later and then are not in remaining; by less, left alone."""
        # One reserved after it: the proxy's own 98, 98000; the answer
        # means 94 .. 95 (slack 2), 94900 .. 95900 (slack 2000): set to
        # 94, 94900.
        self.known(rpm=100, tpm=100000)
        r = self.reserve(1, 0, tokens=1000)
        self.reserve(1, 0, tokens=1000)
        self.settle(r, status=200, headers={RPM: (100, 95), TPM: (100000, 95900)})
        self.assertLevelAt(RPM, 95 - 1, r.slot)
        self.assertLevelAt(TPM, 95900 - 1000, r.slot)
        # the slack of a charge above k / 50: 3000 tokens, k 100000; the
        # proxy's own 97000: 94500 is within 3000 of it, 93500 not (set
        # to 93500: nothing reserved after it).
        self.r("DEL", self.bkey())
        self.bset(seen=1)
        self.known(tpm=100000)
        r = self.reserve(1, 0, tokens=3000)
        e1 = self.bget("e1")
        self.settle(r, status=200, headers={TPM: (100000, 94500)})
        self.assertEqual(self.bget("e1"), e1)
        self.settle(r, status=200, headers={TPM: (100000, 93500)})
        self.assertLevelAt(TPM, 93500, r.slot)
        # lowering needs no request alone: one reserved before it, still
        # out, the proxy's own 98, 98000, the answer 90, 90000 (nothing
        # after it): set to 90, 90000
        self.r("DEL", self.bkey())
        self.bset(seen=1)
        self.known(rpm=100, tpm=100000)
        self.reserve(1, 0, tokens=1000)
        r = self.reserve(1, 0, tokens=1000)
        self.settle(r, status=200, headers={RPM: (100, 90), TPM: (100000, 90000)})
        self.assertLevelAt(RPM, 90, r.slot)
        self.assertLevelAt(TPM, 90000, r.slot)
        self.assertEqual(self.bget("ot"), 1000)

    def test_band_beyond_sets_up(self):
        """a proxy's own level below what the answer can mean by more than the slack is set up to base (remaining as of the slot) only when the request was alone (the only one out, none reserved after it); by less, or with another out or one reserved after it, left alone."""
        # Ten reserved: the proxy's own is 90, 90000; slacks 2 and 2000.
        self.known(rpm=100, tpm=100000)
        rs = [self.reserve(1, 0, tokens=1000) for _ in range(10)]
        e = self.budget()
        # the ninth (one after it): 92 - 1 - 2, 92000 - 1000 - 2000 at
        # the least: 90 and 90000 within
        self.settle(rs[8], status=200, headers={RPM: (100, 92), TPM: (100000, 92000)})
        self.assertEqual((self.bget("e0"), self.bget("e1")), (e["e0"], e["e1"]))
        # the eighth (two after it): 95 - 2 - 2 and 94100 - 2000 - 2000
        # above 90, 90000, but not alone: left alone
        self.settle(rs[7], status=200, headers={RPM: (100, 95), TPM: (100000, 94100)})
        self.assertEqual((self.bget("e0"), self.bget("e1")), (e["e0"], e["e1"]))
        # the tenth (none after it, seven out): left alone
        self.settle(rs[9], status=200, headers={RPM: (100, 95), TPM: (100000, 94100)})
        self.assertEqual((self.bget("e0"), self.bget("e1")), (e["e0"], e["e1"]))
        for r in rs[:7]:
            self.settle(r, status=200)
        self.assertEqual(self.bget("ot"), 0)
        # alone, the proxy's own 89, 89000: within the slack of 90,
        # 90000, left alone
        r = self.reserve(1, 0, tokens=1000)
        e = self.budget()
        self.settle(r, status=200, headers={RPM: (100, 90), TPM: (100000, 90000)})
        self.assertEqual((self.bget("e0"), self.bget("e1")), (e["e0"], e["e1"]))
        # alone, the proxy's own 88, 88000: 95 - 2, 94100 - 2000 above
        # them: set to 95, 94100
        r = self.reserve(1, 0, tokens=1000)
        self.settle(r, status=200, headers={RPM: (100, 95), TPM: (100000, 94100)})
        self.assertLevelAt(RPM, 95, r.slot)
        self.assertLevelAt(TPM, 94100, r.slot)
        self.assertNow(self.reserve(1, 0, tokens=1000))

    def test_band_below_raised_only_alone(self):
        """a level below base - slack is raised to base only when the request was alone all its life: none out when it was reserved (first), none but it out now (ot is its charge), none reserved after it (cq is its cq). A request reserved before it and admitted upstream after it is in neither remaining nor after, even once settled; a settled one reserved after it still counts (it may have been admitted first)."""
        hdrs = {RPM: (100, 60), TPM: (100000, 60000)}
        # (what happens around r, raised?)
        for around, raised in (("before out", False), ("after out", False),
                               ("after settled", False), ("before settled", False),
                               ("settled before", True), ("alone", True)):
            with self.subTest(around=around):
                self.r("DEL", self.bkey())
                self.bset(seen=1)
                self.known(rpm=100, tpm=100000)
                other = None
                if around.startswith("before"):
                    other = self.reserve(1, 0, tokens=1000)
                if around == "settled before":
                    self.settle(self.reserve(1, 0, tokens=1000), status=200)
                r = self.reserve(1, 0, tokens=1000)
                if around.startswith("after"):
                    other = self.reserve(1, 0, tokens=1000)
                if around.endswith("settled"):
                    self.settle(other, status=200)
                self.set_mine(RPM, 10)
                self.set_mine(TPM, 10000)
                e = self.budget()
                self.assertEqual(self.settle(r, status=200, headers=hdrs)[0], -1)
                if raised:
                    self.assertLevelAt(RPM, 60, r.slot)
                    self.assertLevelAt(TPM, 60000, r.slot)
                else:
                    self.assertEqual((self.bget("e0"), self.bget("e1")), (e["e0"], e["e1"]))
                    self.assertEqual(self.bget("seen"), 1)
                self.assertEqual(self.bget("ot"),
                                 1000 if around.endswith("out") else 0)

    def test_band_429_always_sets(self):
        """a 429's limits set the levels to base - after even within the slack (and its charge is not given back on them)."""
        # The proxy's own: 98, 98000 (one after it); the answer means 97
        # .. 98, 97000 .. 98000: left alone but for the 429.
        self.known(rpm=100, tpm=100000)
        r = self.reserve(1, 0, tokens=1000)
        self.reserve(1, 0, tokens=1000)
        ret, _, _ = self.settle(r, status=429, headers={RPM: (100, 98), TPM: (100000, 98000)})
        self.assertEqual(ret, -1)
        self.assertLevelAt(RPM, 98 - 1, r.slot)
        self.assertLevelAt(TPM, 98000 - 1000, r.slot)

    def test_band_first_answer_always_sets(self):
        """the first answer (seen not set) sets the levels even within the slack and at the declared capacity; the next one within it does not."""
        self.r("FLUSHALL")
        lim = limits(rpm=100, tpm=100000)
        r = self.reserve(1, 0, limits=lim, tokens=1000)
        self.assertEqual(r.probe, 0)  # declared limits: no probe
        self.assertIsNone(self.bget("seen"))
        # The proxy's own: 99, 99000; the headers 1 and 1000 below.
        self.settle(r, status=200, headers={RPM: (100, 98), TPM: (100000, 98000)})
        self.assertEqual(self.bget("seen"), 1)
        self.assertLevelAt(RPM, 98, r.slot)
        self.assertLevelAt(TPM, 98000, r.slot)
        r2 = self.reserve(1, 0, limits=lim, tokens=1000)
        e = self.budget()
        # The proxy's own: 97, 97000; the headers 1 and 1000 below.
        self.settle(r2, status=200, headers={RPM: (100, 96), TPM: (100000, 96000)})
        self.assertEqual((self.bget("e0"), self.bget("e1")), (e["e0"], e["e1"]))

    def test_band_new_capacity_always_sets(self):
        """an announced capacity other than the one stored (or declared) sets the level even within the slack."""
        self.known(rpm=100)
        r = self.reserve(1, 0)
        # The proxy's own at k 1000: 990; the headers 5 below (slack 20).
        self.settle(r, status=200, headers={RPM: (1000, 985)})
        self.assertEqual(self.bget("k0"), 1000)
        self.assertLevelAt(RPM, 985, r.slot)
        # declared 100, announced 1000: the same
        self.r("FLUSHALL")
        self.bset(seen=1)
        r = self.reserve(1, 0, limits=limits(rpm=100))
        self.settle(r, status=200, headers={RPM: (1000, 985)}, limits=limits(rpm=100))
        self.assertLevelAt(RPM, 985, r.slot)

    def test_band_refused_left_alone_gives_the_charge_back(self):
        """a refused request (no answer, a 5xx) whose announced limit was left alone (within the slack) gets its charge back on it, as on a limit never announced; one set beyond the slack does not."""
        for status in (0, 500, 503):
            with self.subTest(status=status):
                self.r("DEL", self.bkey())
                self.bset(seen=1)
                self.known(rpm=100, tpm=100000)
                self.reserve(1, 0, tokens=1000)
                before = self.budget()
                r = self.reserve(1, 0, tokens=1000)
                # The proxy's own: 98 (the headers say so too); 98000,
                # 39000 above the headers' (beyond the slack).
                self.settle(r, status=status, headers={RPM: (100, 98), TPM: (100000, 59000)})
                self.assertEqual(self.bget("e0"), before["e0"])
                self.assertLevelAt(TPM, 59000, r.slot)
                # the same levels upstream as in the proxy: both given back
                e1 = self.bget("e1")
                r = self.reserve(1, 0, tokens=1000)
                self.settle(r, status=status, headers={RPM: (100, 98), TPM: (100000, 58000)})
                self.assertEqual((self.bget("e0"), self.bget("e1")), (before["e0"], e1))
                self.assertEqual((self.bget("cq"), self.bget("ct")), (3, 3000))

    def test_usage_refund(self):
        """an admitted answer's usage below the estimate raises the tokens levels (not the requests ones); above it, lowers them."""
        self.known(rpm=100, tpm=1000, tph=100000, tpd=1000000)
        a = self.reserve(1, 0, tokens=400)
        before = {l: self.bget("e%d" % l) for l in range(6)}
        self.assertEqual(self.settle(a, status=200, used=100)[0], -1)
        self.assertEqual(self.bget("e0"), before[0])
        self.assertEqual(self.bget("e1"), before[1] - 300 * 60 * SEC // 1000)
        self.assertEqual(self.bget("e3"), before[3] - 300 * 3600 * SEC // 100000)
        self.assertEqual(self.bget("e5"), before[5] - 300 * 86400 * SEC // 1000000)
        self.assertEqual(self.bget("rt"), 300)
        b = self.reserve(1, 0, tokens=400)
        e1 = self.bget("e1")
        self.settle(b, status=200, used=500)
        self.assertEqual((self.bget("e1"), self.bget("rt")), (e1 + 100 * 60 * SEC // 1000, 200))

    def test_no_refund_without_usage_or_admission(self):
        """usage unknown (-1): the estimate stays charged; a refused answer's usage counts for nothing (its whole charge goes back)."""
        self.known(tpm=100000)
        a = self.reserve(1, 0, tokens=400)
        e1 = self.bget("e1")
        self.settle(a, status=200, used=-1)
        self.assertEqual((self.bget("e1"), self.bget("rt")), (e1, 0))
        b = self.reserve(1, 0, tokens=400)
        e1 = self.bget("e1")
        self.settle(b, status=503, used=100)
        self.assertEqual((self.bget("e1"), self.bget("rt")), (e1 - 400 * 60 * SEC // 100000, 0))

    def test_not_admitted_gives_the_charge_back(self):
        """no answer (status 0), a 429 or a 5xx without limits: the charge goes back to every budget (cq and ct stay); no rest without a rest time."""
        lim = limits(rpm=6, tpm=1000, rph=100, tph=10000, rpd=1000, tpd=100000)
        self.reserve(1, 0, limits=lim, tokens=100)
        for status in (0, 429, 500):
            with self.subTest(status=status):
                before = self.budget()
                a = self.reserve(1, 0, limits=lim, tokens=100)
                self.assertEqual(self.settle(a, status=status, used=100)[0], -1)
                before.update(cq=a.cq, ct=a.ct)
                self.assertEqual(self.budget(), before)

    def test_429_names_the_spent_limit(self):
        """a 429 whose limits show one with less left than the request's cost returns it (the first in budget order); no rest; the headers set the levels as of the slot."""
        self.known(tpm=1000, rpd=14400)
        for headers, want in (({TPM: (1000, 399), RPD: (14400, 100)}, TPM),
                              ({TPM: (1000, 500), RPD: (14400, 0)}, RPD),
                              ({TPM: (1000, 0), RPD: (14400, 0)}, TPM)):
            with self.subTest(headers=headers, want=want):
                a = self.reserve(1, 0, tokens=400)
                self.reserve(1, 0, tokens=400)
                cq, ct = self.bget("cq"), self.bget("ct")
                ret, t0, t1 = self.settle(a, status=429, headers=headers, rest=5 * SEC)
                self.assertEqual(ret, want)
                self.assertIsNone(self.bget("x"))
                self.assertLevelAt(TPM, headers[TPM][1] - 400, a.slot)
                self.assertLevelAt(RPD, headers[RPD][1] - 1, a.slot)
                self.assertEqual((self.bget("cq"), self.bget("ct")), (cq, ct))
                self.r("DEL", self.bkey())
                self.known(tpm=1000, rpd=14400)
                self.bset(seen=1)

    def test_429_nothing_spent_rests_the_budget(self):
        """a 429 whose limits show nothing spent rests the budget (x, returns 8): that model's requests wait for the rest's end while another model flows."""
        self.known(tpm=100000, rpd=14400)
        a = self.reserve(1, IV, tokens=400)
        ret, t0, t1 = self.settle(a, status=429, headers={TPM: (100000, 90000), RPD: (14400, 14000)},
                                  rest=20 * SEC)
        self.assertEqual(ret, WHY_REST)
        x = self.bget("x")
        self.assertBetween(t0 + 20 * SEC, x, t1 + 20 * SEC)
        # a shorter rest keeps the longer one
        self.assertEqual(self.settle(a, status=429, rest=1 * SEC)[0], WHY_REST)
        self.assertEqual(self.bget("x"), x)
        # that model: refused past the longest wait, else queued for the rest's end
        res = self.reserve(1, IV, max_wait=5 * SEC)
        self.assertEqual((res.key, res.slot, res.why), (-1, x, WHY_REST))
        res = self.reserve(1, IV)
        self.assertEqual((res.key, res.slot, res.why), (0, x, WHY_REST))
        # the other model flows meanwhile, spaced only from a's slot
        c = self.reserve(1, IV, model=M2)
        self.assertLessEqual(c.slot, max(c.t1, a.slot + IV))
        self.assertEqual(c.why, WHY_SPACING if c.wait else WHY_NONE)
        self.assertIsNone(self.bget("x", model=M2))

    def test_429_without_limits_rests(self):
        """a 429 without limits: the charge goes back and the budget rests (8)."""
        self.reserve(1, 0, limits=limits(rpm=6))
        before = self.bget("e0")
        a = self.reserve(1, 0, limits=limits(rpm=6))
        ret, t0, t1 = self.settle(a, status=429, rest=3 * SEC)
        self.assertEqual(ret, WHY_REST)
        self.assertEqual(self.bget("e0"), before)
        self.assertBetween(t0 + 3 * SEC, self.bget("x"), t1 + 3 * SEC)

    def test_refused_with_some_limits_gives_back_the_others(self):
        """a 429 announcing tokens-minute only: the declared requests-minute budget gets the refused request's charge back."""
        lim = limits(rpm=6)
        self.reserve(1, 0, limits=lim, tokens=100)
        e0 = self.bget("e0")
        a = self.reserve(1, 0, limits=lim, tokens=100)
        self.settle(a, status=429, headers={TPM: (1000, 0)}, rest=5 * SEC)
        self.assertEqual(self.bget("e0"), e0)

    def test_seen(self):
        """seen is set by an answer with limits (any status) or an admitted one without; not by a refusal without limits."""
        self.r("FLUSHALL")
        for status, headers, seen in ((0, None, None), (429, None, None), (500, None, None),
                                      (429, {RPD: (10, 5)}, 1), (200, None, 1)):
            with self.subTest(status=status, headers=headers):
                self.r("FLUSHALL")
                a = self.reserve(1, 0)
                self.settle(a, status=status, headers=headers)
                self.assertEqual(self.bget("seen"), seen)


class Recording(ScriptCase):
    """What the scripts record for the inspection (sched_inspect: the status
    command, /readyz, /metrics): rest.lua's d<i>; settle.lua's s<i>, r<i>
    in the per-key hash, the day's counters, the budgets in use."""

    DAY_US = 86400 * SEC

    def kfield(self, name):
        return self.field(name)

    def day(self):
        v = self.r("HGETALL", self.s.day)
        return {v[i]: int(v[i + 1]) for i in range(0, len(v), 2)}

    def test_disablement_recorded_apart(self):
        """rest.lua with disabled: d<i> is the disablement's end (c<i> too); a plain rest leaves d<i> alone; neither is ever shortened."""
        till = self.s.rest(0, 100 * SEC, disabled=True)
        self.assertEqual((self.kfield("c0"), self.kfield("d0")), (till, till))
        self.s.rest(0, 10 * SEC, disabled=True)
        self.assertEqual((self.kfield("c0"), self.kfield("d0")), (till, till))
        t1 = self.s.rest(1, 10 * SEC)
        self.assertEqual((self.kfield("c1"), self.kfield("d1")), (t1, None))
        # a rest longer than a disablement: c<i> lengthened, d<i> kept
        t2 = self.s.rest(0, 200 * SEC)
        self.assertEqual((self.kfield("c0"), self.kfield("d0")), (t2, till))

    def test_answer_counted_with_status_and_usage(self):
        """an answer: s<i> its status, r<i> 0, q<i> + 1, t<i> + its usage, d today (Redis' UTC day)."""
        a = self.reserve(2, 0, tokens=100)
        ret, t0, t1 = self.settle(a, status=200, used=42)
        self.assertEqual(self.kfield("s%d" % a.key), 200)
        self.assertEqual(self.kfield("r%d" % a.key), 0)
        d = self.day()
        self.assertIn(d["d"], (t0 // self.DAY_US, t1 // self.DAY_US))
        self.assertEqual((d["q%d" % a.key], d["t%d" % a.key]), (1, 42))
        b = self.reserve(2, 0, tokens=100)
        self.assertNotEqual(b.key, a.key)
        self.settle(b, status=500)
        c = self.reserve(2, 0, tokens=100)
        self.settle(c, status=200, used=8)
        d = self.day()
        self.assertEqual((d["q%d" % a.key], d["t%d" % a.key]), (2, 50))
        self.assertEqual((d["q%d" % b.key], d.get("t%d" % b.key)), (1, None))
        self.assertEqual(self.kfield("s%d" % b.key), 500)

    def test_no_answer_counted_status_kept(self):
        """a request that got no answer (status 0) counts as sent; the last status stays what it was."""
        a = self.reserve(1, 0)
        self.settle(a, status=401)
        b = self.reserve(1, 0)
        self.settle(b, status=0)
        self.assertEqual(self.kfield("s0"), 401)
        self.assertEqual(self.day()["q0"], 2)

    def test_probe_counted_once(self):
        """a probe: its headers count the request and its status, its usage the tokens; neither twice."""
        self.r("FLUSHALL")
        a = self.reserve(1, 0, tokens=10)
        self.assertEqual(a.probe, 1)
        self.settle(a, "headers", status=200, headers={TPM: (1000, 900)})
        self.assertEqual(self.day().get("q0"), 1)
        self.assertIsNone(self.day().get("t0"))
        self.settle(a, "usage", status=200, used=7)
        self.assertEqual((self.day()["q0"], self.day()["t0"]), (1, 7))
        self.assertEqual(self.kfield("s0"), 200)

    def test_release_recorded_nowhere_but_the_index(self):
        """a release (never sent) counts nothing and leaves the per-key hash alone."""
        a = self.reserve(1, IV)
        self.settle(a, "release")
        self.assertEqual(self.r("EXISTS", self.s.day), 0)
        self.assertEqual(self.r("HGETALL", self.s.keys), [])
        self.assertIsNotNone(self.r("ZSCORE", self.s.bx, self.bkey()))

    def test_429_records_when_the_budget_admits_again(self):
        """a 429 that spent a limit: r<i> is when its budget holds a request again (the level as corrected); a later answer that is not a 429 clears it."""
        self.bset(k0=2)
        a = self.reserve(1, 0, limits=limits(rpm=2))
        ret, t0, t1 = self.settle(a, status=429, headers={RPM: (2, 0)}, rest=5 * SEC)
        self.assertEqual(ret, RPM)
        r = self.kfield("r0")
        e0 = self.bget("e0")
        # e0 is stored rounded up; r from the unrounded value, rounded up
        self.assertBetween(e0 + WINDOW[RPM] // 2 - 1, r, e0 + WINDOW[RPM] // 2)
        self.assertGreater(r, t1)
        self.assertEqual(self.kfield("s0"), 429)
        b = self.reserve(1, 0, limits=limits(rpm=2), max_wait=10**13)
        self.settle(b, status=200)
        self.assertEqual((self.kfield("s0"), self.kfield("r0")), (200, 0))

    def test_429_rest_recorded(self):
        """a 429 that names no limit rests the budget: r<i> is the rest's end."""
        a = self.reserve(1, 0)
        ret, t0, t1 = self.settle(a, status=429, rest=20 * SEC)
        self.assertEqual(ret, WHY_REST)
        self.assertEqual(self.kfield("r0"), self.bget("x"))
        self.assertBetween(t0 + 20 * SEC, self.kfield("r0"), t1 + 20 * SEC)

    def test_new_day_starts_from_zero(self):
        """the counters of another day are dropped at the first settlement of a new one."""
        today = self.r.time_us() // self.DAY_US
        self.r("HSET", self.s.day, "d", today - 1, "q0", 5, "t0", 500, "q1", 3)
        a = self.reserve(2, 0)
        self.settle(a, status=200, used=1)
        self.assertEqual(self.day(), {"d": today, "q%d" % a.key: 1, "t%d" % a.key: 1})

    def test_budget_index(self):
        """the budget settled is in the index, scored with the settlement's time; entries older than a day are dropped."""
        self.r("ZADD", self.s.bx, self.r.time_us() - 2 * self.DAY_US, "gone")
        a = self.reserve(1, 0)
        ret, t0, t1 = self.settle(a, status=200)
        z = self.zset(self.s.bx)
        self.assertEqual(list(z), [self.bkey()])
        self.assertBetween(t0, z[self.bkey()], t1)

    def test_records_expire(self):
        """the day's counters live two days, the index a day, the per-key hash at least a day (longer than the cooling it records)."""
        self.bset(k4=1)
        a = self.reserve(1, 0, limits=limits(rpd=1))
        self.settle(a, status=429, headers={RPD: (1, 0)})
        r = self.kfield("r0")
        t = self.r.time_us()
        self.assertBetween(2 * DAY_MS - 1000, self.r("PTTL", self.s.day), 2 * DAY_MS)
        self.assertBetween(DAY_MS - 1000, self.r("PTTL", self.s.bx), DAY_MS)
        self.assertGreaterEqual(self.r("PTTL", self.s.keys) * MS, r - t + (DAY_MS - 1000) * MS)


class ClientLimits(ScriptCase):
    """A client's own limits (ARGV[11..16], its two keys last in KEYS): a
    rate bucket charged by first attempts that book a slot, and seats for
    its requests in flight."""

    CL = "00c0ffee00c0ffee"

    @staticmethod
    def seat(i):
        return "%016x" % (0x5ea7000000000000 + i)

    def creserve(self, i, nkeys=1, interval=0, **kw):
        """reserve.lua for seat i of client CL."""
        return self.reserve(nkeys, interval, client=self.CL, seat=self.seat(i), **kw)

    def bucket_e(self):
        v = self.r("HGET", self.s.client_bucket(self.CL), "e")
        return None if v is None else int(v)

    def seats(self):
        """{seat: lease end} of client CL."""
        return self.zset(self.s.client_seats(self.CL))

    def assertRefused(self, res, why, until=None):
        self.assertEqual((res.key, res.why), (-4, why), res)
        if why == WHY_CLIENT_CONC:
            self.assertEqual(res.wait, SEC, res)
        if until is not None:
            self.assertEqual(res.slot, until, res)

    def test_rate_admits_n_then_refuses(self):
        """rate 3 a minute: three first attempts go at once, the fourth gets -4 why 10 until the bucket holds one (e + window / rate), nothing booked or charged."""
        for i in range(3):
            res = self.creserve(i, rate=3, window=60 * SEC, limits=limits(rpm=100))
            self.assertNow(res)
            if i == 0:
                first = res
        # full at the first (e = now - window), three charges of 20 s
        e = self.bucket_e()
        self.assertBetween(first.t0, e, first.t1)
        self.assertEqual(self.bget("cq"), 3)
        before = self.snapshot()
        res = self.creserve(3, rate=3, window=60 * SEC, limits=limits(rpm=100))
        self.assertRefused(res, WHY_CLIENT_RATE, e + 20 * SEC)
        self.assertEqual(self.snapshot(), before)

    def test_rate_refills_continuously(self):
        """the bucket refills rate per window continuously, up to rate: half a request short waits half a refill; a long-idle bucket holds rate, no more."""
        t = self.r.time_us()
        kw = dict(rate=3, window=60 * SEC)
        self.r("HSET", self.s.client_bucket(self.CL), "e", t - 10 * SEC)
        self.assertRefused(self.creserve(0, **kw), WHY_CLIENT_RATE, t + 10 * SEC)
        self.r("HSET", self.s.client_bucket(self.CL), "e", t - 20 * SEC - 1)
        self.assertNow(self.creserve(1, **kw))
        self.assertEqual(self.bucket_e(), t - 1)
        self.assertRefused(self.creserve(2, **kw), WHY_CLIENT_RATE, t - 1 + 20 * SEC)
        # idle for ten windows: full, three requests
        self.r("HSET", self.s.client_bucket(self.CL), "e", t - 600 * SEC)
        for i in range(3):
            self.assertNow(self.creserve(10 + i, **kw))
        self.assertEqual(self.creserve(13, **kw).key, -4)

    def test_retries_not_charged(self):
        """an attempt after the first is neither checked against nor charged to the rate."""
        t = self.r.time_us()
        self.r("HSET", self.s.client_bucket(self.CL), "e", t + 100 * SEC)
        res = self.creserve(0, rate=1, window=60 * SEC, attempt=1)
        self.assertNow(res)
        self.assertEqual(self.bucket_e(), t + 100 * SEC)
        self.assertRefused(self.creserve(0, rate=1, window=60 * SEC),
                           WHY_CLIENT_RATE, t + 160 * SEC)

    def test_polls_and_refusals_not_charged(self):
        """a poll (-3), a refusal (-1, -2) charge the client nothing; the reservation that follows does."""
        kw = dict(rate=1, window=60 * SEC)
        ck = self.s.client_bucket(self.CL)
        self.r("HDEL", self.bkey(), "seen")
        self.bset(p=self.far)
        res = self.creserve(0, **kw)
        self.assertEqual((res.key, res.why), (-3, WHY_PROBE), res)
        self.assertEqual(self.r("EXISTS", ck), 0)
        self.bset(seen=1, p=0)
        self.hset(c0=self.far)
        res = self.creserve(0, max_wait=SEC, **kw)
        self.assertEqual((res.key, res.why), (-1, WHY_DISABLED), res)
        self.assertEqual(self.r("EXISTS", ck), 0)
        self.r("HDEL", self.s.keys, "c0")
        self.assertNow(self.reserve(1, IV, max_wait=0))
        res = self.creserve(0, interval=IV, max_wait=0, **kw)
        self.assertEqual(res.key, -2, res)
        self.assertEqual(self.r("EXISTS", ck), 0)
        res = self.creserve(0, interval=IV, **kw)
        self.assertEqual(res.key, 0, res)
        self.assertBetween(res.t0 - 60 * SEC + 60 * SEC, self.bucket_e(), res.t1)
        self.assertRefused(self.creserve(1, **kw), WHY_CLIENT_RATE)

    def test_concurrency(self):
        """two in flight: a third gets -4 why 11 (ask again in 1 s); a seat reserving again (a retry, a poll's next call) counts once and renews its lease; done frees it."""
        kw = dict(concurrent=2)
        a = self.creserve(0, **kw)
        b = self.creserve(1, **kw)
        self.assertNow(a)
        self.assertNow(b)
        z = self.seats()
        self.assertEqual(sorted(z), [self.seat(0), self.seat(1)])
        self.assertBetween(a.t0 + LEASE, z[self.seat(0)], a.t1 + LEASE)
        self.assertRefused(self.creserve(2, **kw), WHY_CLIENT_CONC)
        again = self.creserve(0, attempt=1, **kw)
        self.assertNow(again)
        self.assertNow(self.creserve(0, **kw))
        z = self.seats()
        self.assertEqual(len(z), 2)
        self.assertGreaterEqual(z[self.seat(0)], again.t0 + LEASE)
        self.assertEqual(self.s.client_done(self.CL, self.seat(0)), 1)
        self.assertNow(self.creserve(2, **kw))
        self.assertEqual(sorted(self.seats()), [self.seat(1), self.seat(2)])
        self.assertEqual(self.creserve(3, **kw).key, -4)

    def test_concurrency_refusal_books_nothing(self):
        """-4 why 11: the timeline, the budget, the position and the seats are as they were."""
        f = self.far
        self.hold(f)
        kw = dict(concurrent=1, limits=limits(rpm=100), tokens=10)
        self.assertEqual(self.creserve(0, interval=IV, **kw).slot, f)
        before = self.snapshot()
        res = self.creserve(1, interval=IV, **kw)
        self.assertRefused(res, WHY_CLIENT_CONC)
        self.assertEqual(self.snapshot(), before)
        self.assertEqual(self.timeline(), [f])
        self.assertEqual((self.bget("cq"), self.bget("ct")), (1, 10))

    def test_expired_seat_frees(self):
        """a seat whose lease has ended (a crashed worker's) no longer counts and is dropped; one still leased counts."""
        cf = self.s.client_seats(self.CL)
        t = self.r.time_us()
        self.r("ZADD", cf, t - 1, "dead")
        self.assertNow(self.creserve(0, concurrent=1))
        self.assertEqual(list(self.seats()), [self.seat(0)])
        self.r("DEL", cf)
        self.r("ZADD", cf, t + 10 * SEC, "live")
        self.assertRefused(self.creserve(1, concurrent=1), WHY_CLIENT_CONC)
        # a short lease: the next request finds it ended
        self.r("DEL", cf)
        self.creserve(2, concurrent=1, lease=1)
        self.assertNow(self.creserve(3, concurrent=1))
        self.assertEqual(list(self.seats()), [self.seat(3)])

    def test_refused_reservation_leaves_no_seat(self):
        """-1 and -2 take no seat; a seat taken by an earlier poll stays (its request ends with sched_client_done)."""
        kw = dict(concurrent=2)
        self.hset(c0=self.far)
        self.assertEqual(self.creserve(0, max_wait=SEC, **kw).key, -1)
        self.assertEqual(self.r("EXISTS", self.s.client_seats(self.CL)), 0)
        self.r("HDEL", self.s.keys, "c0")
        self.assertNow(self.reserve(1, IV, max_wait=0))
        self.assertEqual(self.creserve(0, interval=IV, max_wait=0, **kw).key, -2)
        self.assertEqual(self.r("EXISTS", self.s.client_seats(self.CL)), 0)
        # polled, then refused: the seat stays
        self.r("HDEL", self.bkey(), "seen")
        self.bset(p=self.far)
        self.assertEqual(self.creserve(1, **kw).key, -3)
        self.assertEqual(list(self.seats()), [self.seat(1)])
        self.hset(c0=self.far)
        self.bset(seen=1, p=0)
        self.assertEqual(self.creserve(1, max_wait=SEC, **kw).key, -1)
        self.assertEqual(list(self.seats()), [self.seat(1)])

    def test_poll_keeps_its_seat(self):
        """a polling request holds its seat (once) between polls: a new one is refused while it polls."""
        self.r("HDEL", self.bkey(), "seen")
        self.bset(p=self.far)
        for _ in range(3):
            self.assertEqual(self.creserve(0, concurrent=1).key, -3)
        self.assertEqual(list(self.seats()), [self.seat(0)])
        self.assertRefused(self.creserve(1, concurrent=1), WHY_CLIENT_CONC)

    def test_rate_checked_before_concurrency(self):
        """over both limits, the rate answers (its wait is exact)."""
        self.assertNow(self.creserve(0, rate=1, window=60 * SEC, concurrent=1))
        res = self.creserve(1, rate=1, window=60 * SEC, concurrent=1)
        self.assertRefused(res, WHY_CLIENT_RATE, self.bucket_e() + 60 * SEC)

    def test_no_client_limits_unchanged(self):
        """no client, a client without limits, a client within its limits: the same slots; no client key is written without limits."""
        f = self.far
        runs = []
        for kw in (dict(), dict(client=self.CL, seat=self.seat(0)),
                   dict(client=self.CL, seat=self.seat(0), rate=100,
                        window=60 * SEC, concurrent=10)):
            self.r("FLUSHALL")
            self.hold(f)
            runs.append([(r.key, r.slot, r.why, r.cq)
                         for r in (self.reserve(2, IV, limits=limits(rpm=100), **kw)
                                   for _ in range(4))])
            if "rate" not in kw:
                self.assertEqual(self.r("EXISTS", self.s.client_bucket(self.CL),
                                        self.s.client_seats(self.CL)), 0)
        self.assertEqual(runs[0], runs[1])
        self.assertEqual(runs[0], runs[2])

    def test_client_keys_expire(self):
        """the bucket expires a second after a window, the seats a second after a lease."""
        res = self.creserve(0, rate=5, window=60 * SEC, concurrent=2, lease=100 * SEC)
        self.assertNow(res)
        self.assertBetween(60000, self.r("PTTL", self.s.client_bucket(self.CL)), 61000)
        self.assertBetween(100000, self.r("PTTL", self.s.client_seats(self.CL)), 101000)


class Expiry(ScriptCase):

    def test_global_timeline_expires_after_its_slot(self):
        """the global timeline's PTTL covers its latest slot and ends ~1 s after it."""
        f = self.far
        self.hold(f)
        a = self.reserve(2, IV)
        pttl = self.r("PTTL", self.s.slot)
        t = self.r.time_us()
        self.assertGreaterEqual(pttl * MS, a.slot + IV - t)
        self.assertLessEqual(pttl, (a.slot + IV - a.t0) // MS + 1000)

    def test_key_timelines_expire_after_their_slot(self):
        """the per-key timelines' PTTL covers the slot just booked and ends ~1 s after it."""
        f = self.far
        self.hold(f)
        a = self.reserve(2, IV, perkey=True)
        pttl = self.r("PTTL", self.s.kslot)
        t = self.r.time_us()
        self.assertGreaterEqual(pttl * MS, a.slot + IV - t)
        self.assertLessEqual(pttl, (a.slot + IV - a.t0) // MS + 1000)

    def test_timelines_outlive_every_booked_slot(self):
        """a slot booked before a later one leaves the timelines alive until the later one has passed (both scopes)."""
        for perkey, key in ((False, self.s.slot), (True, self.s.kslot)):
            with self.subTest(perkey=perkey):
                self.r("FLUSHALL")
                self.bset(model=M2, seen=1)
                self.reserve(1, IV, perkey=perkey, floor=FLOOR, limits=limits(rpm=1))
                late = self.reserve(1, IV, perkey=perkey, floor=FLOOR, limits=limits(rpm=1))
                self.assertGreater(late.wait, 50 * SEC)
                self.reserve(1, IV, perkey=perkey, floor=FLOOR, model=M2)
                pttl = self.r("PTTL", key)
                t = self.r.time_us()
                self.assertGreaterEqual(pttl * MS, late.slot - t,
                                        "%s expires in %d ms, holding a slot %d ms ahead"
                                        % (key, pttl, (late.slot - t) // MS))

    def test_key_state_expires(self):
        """rest.lua: the per-key hash lives a day past the rest's end."""
        till = self.s.rest(0, 100 * SEC)
        pttl = self.r("PTTL", self.s.keys)
        t = self.r.time_us()
        self.assertGreaterEqual(pttl * MS, till - t + (DAY_MS - 1000) * MS)
        self.assertLessEqual(pttl, 100 * 1000 + DAY_MS)

    def test_round_robin_position_expires(self):
        """the round-robin position reserve.lua writes expires a day after its last use."""
        self.reserve(2, IV)
        pttl = self.r("PTTL", self.s.rr)
        self.assertBetween(DAY_MS - 1000, pttl, DAY_MS)

    def test_budget_expires_a_day_after_its_last_write(self):
        """reserve.lua: the budget hash lives a day past the slot it charged; settle.lua: at least a day."""
        f = self.far
        self.hold(f)
        a = self.reserve(1, IV, limits=limits(rpm=6))
        pttl = self.r("PTTL", self.bkey())
        t = self.r.time_us()
        self.assertBetween((a.slot - t) // MS + DAY_MS - 1000, pttl, (a.slot - a.t0) // MS + DAY_MS)
        # settle keeps a longer expiry, lengthens a shorter one to a day
        self.settle(a, status=200, used=0)
        self.assertGreater(self.r("PTTL", self.bkey()), DAY_MS + 900 * 1000)
        self.r("PEXPIRE", self.bkey(), 2000)
        self.settle(a, status=200, used=0)
        self.assertBetween(DAY_MS - 1000, self.r("PTTL", self.bkey()), DAY_MS)
        # a budget hash settle.lua creates (it expired meanwhile) expires too
        self.r("DEL", self.bkey())
        self.settle(a, "release")
        self.assertBetween(DAY_MS - 1000, self.r("PTTL", self.bkey()), DAY_MS)

    def test_every_key_written_expires(self):
        """every key the scripts create has an expiry (nothing seeded by the test)."""
        self.r("FLUSHALL")
        s = self.s
        a = self.reserve(2, IV, orgs=[0, 1], tokens=10)              # probe of org 0
        self.reserve(2, IV, orgs=[0, 1], tokens=10, poll=SEC)        # probe of org 1
        self.settle(a, status=200, headers={TPM: (1000, 900)})
        self.settle(a, "usage", status=200, used=5)
        b = self.reserve(2, IV, perkey=True, floor=FLOOR, limits=limits(rpd=10), model=M2)
        self.settle(b, "release")
        c = self.reserve(2, IV, perkey=True, floor=FLOOR, limits=limits(rpd=10), model=M2)
        self.settle(c, status=429, headers={RPD: (10, 9)}, rest=SEC)
        s.rest(1, 10 * SEC)
        cl = "00c0ffee00c0ffee"
        res = self.reserve(1, IV, client=cl, seat="5ea7000000000001", rate=10,
                           window=60 * SEC, concurrent=2, limits=limits(rpd=10), model="m3")
        self.assertEqual(res.key, 0, res)
        keys = self.r("KEYS", "*")
        self.assertEqual(sorted(keys), sorted([s.rr, s.slot, s.kslot, s.keys, s.day, s.bx,
                                               s.budget(0, M),
                                               s.budget(1, M), s.budget(0, M2), s.budget(0, "m3"),
                                               s.client_bucket(cl), s.client_seats(cl)]))
        for k in keys:
            self.assertGreater(self.r("PTTL", k), 0, "%s has no expiry" % k)


class Keys(ScriptCase):
    """Every key a script touches is one of its KEYS."""

    MONITOR_LINE = re.compile(r'^\+?[0-9.]+ \[\d+ (\S+)\] (.*)$')

    @staticmethod
    def monitor_args(text):
        """The arguments of a MONITOR line (sdscatrepr quoting)."""
        args = []
        i = 0
        esc = {"n": "\n", "r": "\r", "t": "\t", "a": "\a", "b": "\b",
               '"': '"', "\\": "\\"}
        while i < len(text):
            if text[i] == " ":
                i += 1
                continue
            assert text[i] == '"', text
            i += 1
            cur = []
            while text[i] != '"':
                if text[i] == "\\":
                    n = text[i + 1]
                    if n == "x":
                        cur.append(chr(int(text[i + 2:i + 4], 16)))
                        i += 4
                    else:
                        cur.append(esc[n])
                        i += 2
                else:
                    cur.append(text[i])
                    i += 1
            args.append("".join(cur))
            i += 1
        return args

    def exercise(self):
        """Every path of the three scripts."""
        s = self.s
        o = dict(orgs=[0, 1, 0])
        self.r("FLUSHALL")
        a = self.reserve(3, IV, tokens=100, **o)                       # probe
        self.reserve(3, IV, tokens=100, **o)                           # probe, org 1
        self.reserve(3, IV, tokens=100, **o)                           # -3
        self.settle(a, status=200, headers={RPM: (2, 1), TPM: (1000, 900)})
        self.settle(a, "usage", status=200, used=50)
        b = self.reserve(3, IV, tokens=100, **o)
        self.settle(b, "release")
        self.reserve(3, IV, tokens=100, **o)
        self.reserve(3, IV, tokens=100, max_wait=0, **o)               # org 0 spent, 1 probing: -3
        self.reserve(3, 0, limits=limits(rpm=1), model=M2, **o)        # interval 0
        c = self.reserve(3, IV, perkey=True, floor=FLOOR, limits=limits(rpm=1), model=M2, **o)
        self.settle(c, status=429, headers={RPM: (1, 0)})
        d = self.reserve(3, IV, perkey=True, floor=FLOOR, limits=limits(rpm=100), model=M2, **o)
        self.settle(d, status=429, rest=SEC)
        self.settle(d, "release")
        self.reserve(3, IV, perkey=True, floor=FLOOR, max_wait=0, model=M2, **o)
        s.rest(0, 10 * SEC)
        s.rest(0, 1 * SEC)
        s.rest(1, 10 * SEC)
        s.rest(2, 10 * SEC)
        self.reserve(3, IV, **o)                                       # -1
        self.reserve(3, IV, perkey=True, floor=FLOOR, **o)             # -1
        c = dict(client="00c0ffee00c0ffee", rate=1, window=60 * SEC, concurrent=1,
                 model=M2, limits=limits(rpm=100), **o)
        self.assertEqual(self.reserve(3, IV, seat="5ea7000000000001", max_wait=SEC, **c).key, -1)
        self.r("DEL", s.keys)
        self.assertGreaterEqual(self.reserve(3, IV, seat="5ea7000000000001", **c).key, 0)
        self.assertEqual(self.reserve(3, IV, seat="5ea7000000000002", **c).why, 10)
        self.assertEqual(self.reserve(3, IV, seat="5ea7000000000002", attempt=1, **c).why, 11)
        s.client_done("00c0ffee00c0ffee", "5ea7000000000001")

    def test_scripts_touch_only_their_keys(self):
        """MONITOR: every command a script ran names only KEYS; SCAN: nothing else exists afterwards."""
        declared = {self.s.rr, self.s.slot, self.s.keys, self.s.kslot,
                    self.s.day, self.s.bx, self.s.budget(0, M), self.s.budget(1, M),
                    self.s.budget(0, M2), self.s.budget(1, M2),
                    self.s.client_bucket("00c0ffee00c0ffee"),
                    self.s.client_seats("00c0ffee00c0ffee")}
        mon = self.server().client()
        self.addCleanup(mon.close)
        self.assertEqual(mon("MONITOR"), "OK")
        self.exercise()
        marker = "end-of-exercise-%d" % os.getpid()
        self.r("ECHO", marker)
        touched = set()
        commands = set()
        while True:
            m = self.MONITOR_LINE.match(mon.read())
            self.assertIsNotNone(m)
            args = self.monitor_args(m.group(2))
            if m.group(1) != "lua":
                if args == ["ECHO", marker]:
                    break
                continue
            commands.add(args[0].upper())
            if args[0].upper() == "TIME":
                continue
            touched.update(self.r("COMMAND", "GETKEYS", *args))
        self.assertTrue({"TIME", "GET", "SET", "HMGET", "HSET", "HGET", "HDEL",
                         "HINCRBY", "PTTL", "PEXPIRE", "ZADD", "ZREM",
                         "ZRANGEBYSCORE", "ZREMRANGEBYSCORE", "ZSCORE",
                         "ZCARD"} <= commands, commands)
        self.assertTrue(touched, "MONITOR showed no script command")
        self.assertLessEqual(touched, declared)
        found = set()
        cursor = "0"
        while True:
            cursor, batch = self.r("SCAN", cursor, "COUNT", 1000)
            found.update(batch)
            if cursor == "0":
                break
        self.assertTrue(found, "the scripts wrote nothing")
        self.assertLessEqual(found, touched)


FAKE_OFFSET_US = 2 * 86400 * SEC
FAKE_SERVER = None


class RedisClock(ScriptCase):
    """The slots are in Redis' time: a second redis-server runs two days
    ahead under libfaketime; the test's own clock is not."""

    @classmethod
    def setUpClass(cls):
        global FAKE_SERVER
        env = faketime_env("+2d")
        if env is None:
            raise unittest.SkipTest("libfaketime (libfaketime.so.1) is not installed")
        FAKE_SERVER = RedisServer(env=env).start()

    @classmethod
    def tearDownClass(cls):
        global FAKE_SERVER
        if FAKE_SERVER is not None:
            FAKE_SERVER.stop()
            FAKE_SERVER = None

    def server(self):
        return FAKE_SERVER

    def assertTwoDaysAhead(self, us):
        local = time.time_ns() // 1000
        self.assertLess(abs(us - local - FAKE_OFFSET_US), 60 * SEC,
                        "%d is %.0f s from the test's clock, not 2 days"
                        % (us, (us - local) / SEC))

    def test_server_clock_is_faked(self):
        """the libfaketime server's TIME is two days ahead of the test's clock."""
        self.assertTwoDaysAhead(self.r.time_us())

    def test_slots_in_redis_time(self):
        """reserve.lua and rest.lua: slots and rest ends are on that server's clock, two days ahead."""
        a = self.reserve(2, IV)
        self.assertNow(a)
        self.assertTwoDaysAhead(a.slot)
        b = self.reserve(2, IV)
        self.assertEqual(b.slot, a.slot + IV)
        self.assertTrue(0 < b.wait <= IV)
        t0 = self.r.time_us()
        till = self.s.rest(0, 10 * SEC)
        t1 = self.r.time_us()
        self.assertTrue(t0 + 10 * SEC <= till <= t1 + 10 * SEC)
        self.assertTwoDaysAhead(till - 10 * SEC)

    def test_budgets_in_redis_time(self):
        """reserve.lua and settle.lua: a probe's hold, the buckets and a rest are on that server's clock."""
        self.r("FLUSHALL")
        a = self.reserve(1, 0, probe_ttl=5 * SEC)
        self.assertTwoDaysAhead(self.bget("p") - 5 * SEC)
        self.settle(a, status=200, headers={RPM: (10, 0)})
        e0 = self.bget("e0")
        self.assertTwoDaysAhead(e0)
        b = self.reserve(1, 0)
        self.assertEqual((b.slot, b.why), (e0 + 6 * SEC, RPM))
        self.assertTwoDaysAhead(b.slot)
        self.settle(b, status=429, rest=7 * SEC)
        self.assertTwoDaysAhead(self.bget("x") - 7 * SEC)


if __name__ == "__main__":
    unittest.main()
