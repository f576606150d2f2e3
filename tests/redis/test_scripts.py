"""The scheduler's Lua scripts (shared/lua/reserve.lua, rest.lua,
release.lua) run directly on a real redis-server: no C code involved.

One redis-server for the module (a second one under libfaketime for the
clock test); each test starts from FLUSHALL. State is set with SET/HSET to
times ~1000 s ahead of Redis' clock (FAR), so those results are exact to
the microsecond whatever the clock does meanwhile. Where a result depends
on the script's own "now", it is bracketed by TIME before and after the
call (Redis runs one command at a time, so the script's TIME falls in
between): no tolerance either.
"""

import collections
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
PREFIX = "cproxy-test:{cp}"
DAY_MS = 86400000

SERVER = None

Res = collections.namedtuple("Res", "key wait slot t0 t1")


def setUpModule():
    global SERVER
    if shutil.which("redis-server") is None:
        raise unittest.SkipTest("redis-server is not installed")
    SERVER = RedisServer().start()


def tearDownModule():
    if SERVER is not None:
        SERVER.stop()


class ScriptCase(unittest.TestCase):
    """A clean database, the scripts loaded, and helpers."""

    def server(self):
        return SERVER

    def setUp(self):
        self.r = self.server().client()
        self.addCleanup(self.r.close)
        self.r("FLUSHALL")
        self.s = Scripts(self.r, PREFIX)
        self.far = self.r.time_us() + 1000 * SEC

    # -- state -----------------------------------------------------------
    def get(self, key):
        v = self.r("GET", key)
        return None if v is None else int(v)

    def rr(self):
        return self.get(self.s.rr)

    def timeline(self):
        return self.get(self.s.slot)

    def field(self, name):
        v = self.r("HGET", self.s.keys, name)
        return None if v is None else int(v)

    def hset(self, **fields):
        args = []
        for k, v in fields.items():
            args += [k, v]
        self.r("HSET", self.s.keys, *args)

    def snapshot(self):
        """Every key with its value (TTLs aside)."""
        out = {}
        for k in self.r("KEYS", "*"):
            t = self.r("TYPE", k)
            out[k] = (self.r("HGETALL", k) if t == "hash" else self.r("GET", k))
        return out

    # -- calls -------------------------------------------------------------
    def reserve(self, *args, **kw):
        """reserve.lua, checking that wait == slot - now for the script's
        now, which lies between TIME before and TIME after."""
        t0 = self.r.time_us()
        reply = self.s.reserve(*args, **kw)
        t1 = self.r.time_us()
        self.assertEqual(len(reply), 3, reply)
        key, wait, slot = reply
        self.assertTrue(slot - t1 <= wait <= slot - t0,
                        "wait %d is not slot %d - now (now in [%d, %d])"
                        % (wait, slot, t0, t1))
        self.assertGreaterEqual(wait, 0)
        return Res(key, wait, slot, t0, t1)

    def reserve_many(self, count, *args, **kw):
        """[(key, slot)] of count reservations."""
        out = []
        for _ in range(count):
            res = self.reserve(*args, **kw)
            out.append((res.key, res.slot))
        return out

    def assertNow(self, res):
        """res was reserved for the script's own now: wait 0."""
        self.assertGreaterEqual(res.key, 0)
        self.assertEqual(res.wait, 0)
        self.assertTrue(res.t0 <= res.slot <= res.t1,
                        "slot %d is not now [%d, %d]" % (res.slot, res.t0, res.t1))


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

    def test_global_skips_resting_keys(self):
        """global scope: a resting key is skipped, the position moves past the key taken; a past rest is no rest."""
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

    def test_key_scope_earliest_next_slot(self):
        """key scope: the key whose next slot is earliest, ties in round-robin order."""
        f = self.far
        self.hset(s0=f + 300 * MS, s1=f + 100 * MS, s2=f + 200 * MS)
        got = []
        for _ in range(4):
            res = self.reserve(3, IV, perkey=True)
            got.append((res.key, res.slot - f))
            self.assertEqual(self.rr(), res.key + 1)
            self.assertEqual(self.field("s%d" % res.key), res.slot + IV)
        # s: 300,100,200 -> key 1; 300,300,200 -> key 2; 300,300,400 from
        # position 0 -> key 0 (tie with 1); 500,300,400 -> key 1
        self.assertEqual(got, [(1, 100 * MS), (2, 200 * MS), (0, 300 * MS),
                               (1, 300 * MS)])

    def test_key_scope_ties_in_round_robin_order(self):
        """key scope: equal next slots go in round-robin order from the position."""
        f = self.far
        self.hset(s0=f, s1=f, s2=f)
        self.r("SET", self.s.rr, 2)
        self.assertEqual(self.reserve_many(6, 3, IV, perkey=True),
                         [(2, f), (0, f), (1, f),
                          (2, f + IV), (0, f + IV), (1, f + IV)])

    def test_key_scope_skips_resting_keys(self):
        """key scope: the earliest key is skipped while it rests."""
        f = self.far
        self.hset(s0=f, s1=f + 1 * SEC, s2=f + 2 * SEC, c0=f + 10 * SEC)
        self.assertEqual(self.reserve_many(2, 3, IV, perkey=True),
                         [(1, f + 1 * SEC), (1, f + 1 * SEC + IV)])


class Spacing(ScriptCase):

    def test_global_spacing_exact(self):
        """global scope: reservations are exactly the interval apart on the timeline; ARGV[4] (floor) is ignored."""
        f = self.far
        self.r("SET", self.s.slot, f)
        self.assertEqual(self.reserve_many(4, 2, IV, floor=5 * IV),
                         [(0, f), (1, f + IV), (0, f + 2 * IV), (1, f + 3 * IV)])
        self.assertEqual(self.timeline(), f + 4 * IV)

    def test_global_first_is_now_then_interval(self):
        """global scope, fresh state: the first is now (wait 0), the next exactly one interval later."""
        a = self.reserve(2, IV)
        self.assertNow(a)
        self.assertEqual(self.timeline(), a.slot + IV)
        b = self.reserve(2, IV)
        self.assertEqual((b.key, b.slot), (1, a.slot + IV))
        self.assertGreater(b.wait, 0)

    def test_interval_zero_means_no_spacing(self):
        """interval 0: every reservation is now, the (stale) timeline is neither read nor written."""
        self.r("SET", self.s.slot, self.far)
        for _ in range(5):
            self.assertNow(self.reserve(2, 0))
        self.assertEqual(self.timeline(), self.far)
        self.r("DEL", self.s.slot)
        self.assertNow(self.reserve(2, 0))
        self.assertEqual(self.r("EXISTS", self.s.slot), 0)

    def test_key_scope_spacing_per_key(self):
        """key scope, floor 0: each key's reservations are the interval apart; keys may share a slot."""
        f = self.far
        self.hset(s0=f, s1=f)
        self.assertEqual(self.reserve_many(4, 2, IV, perkey=True),
                         [(0, f), (1, f), (0, f + IV), (1, f + IV)])
        self.assertEqual(self.field("s0"), f + 2 * IV)
        self.assertEqual(self.field("s1"), f + 2 * IV)
        self.assertEqual(self.r("EXISTS", self.s.slot), 0)

    def test_key_scope_floor_between_keys(self):
        """key scope: the global floor separates any two reservations across keys."""
        f = self.far
        self.hset(s0=f, s1=f)
        want = [(0, f, f + FLOOR), (1, f + FLOOR, f + 2 * FLOOR),
                (0, f + IV, f + IV + FLOOR), (1, f + FLOOR + IV, f + IV + 2 * FLOOR)]
        for key, slot, line in want:
            res = self.reserve(2, IV, perkey=True, floor=FLOOR)
            self.assertEqual((res.key, res.slot), (key, slot))
            self.assertEqual(self.timeline(), line)
            self.assertEqual(self.field("s%d" % key), slot + IV)

    def test_key_scope_floor_follows_late_key_slot(self):
        """key scope: a slot pushed late by its key's timeline moves the global timeline to slot + floor."""
        f = self.far
        self.r("SET", self.s.slot, f)
        late = f + 5 * SEC
        self.hset(s0=late, s1=late + 100 * MS)
        res = self.reserve(2, IV, perkey=True, floor=FLOOR)
        self.assertEqual((res.key, res.slot), (0, late))
        self.assertEqual(self.timeline(), late + FLOOR)
        self.assertEqual(self.field("s0"), late + IV)
        # key 1: its own slot (late + 100 ms) is after the floor (late + 50 ms)
        res = self.reserve(2, IV, perkey=True, floor=FLOOR)
        self.assertEqual((res.key, res.slot), (1, late + 100 * MS))
        self.assertEqual(self.timeline(), late + 100 * MS + FLOOR)

    def test_key_scope_interval_zero(self):
        """key scope, interval 0: only the floor spaces; no per-key slot is stored. Both 0: no spacing at all."""
        f = self.far
        self.r("SET", self.s.slot, f)
        self.assertEqual(self.reserve_many(3, 2, 0, perkey=True, floor=FLOOR),
                         [(0, f), (1, f + FLOOR), (0, f + 2 * FLOOR)])
        self.assertEqual(self.r("EXISTS", self.s.keys), 0)
        self.r("FLUSHALL")
        for _ in range(3):
            self.assertNow(self.reserve(2, 0, perkey=True, floor=0))
        self.assertEqual(sorted(self.r("KEYS", "*")), [self.s.rr])


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
        """a rested key is skipped while now < end and taken again from its end on (both scopes)."""
        for perkey in (False, True):
            with self.subTest(perkey=perkey):
                self.r("FLUSHALL")
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

    def test_all_resting(self):
        """every key rests: {-1, wait, until} with until the earliest end; nothing written (both scopes)."""
        f = self.far
        for perkey in (False, True):
            with self.subTest(perkey=perkey):
                self.r("FLUSHALL")
                self.hset(c0=f + 3 * SEC, c1=f + 1 * SEC, c2=f + 2 * SEC, s2=f)
                before = self.snapshot()
                res = self.reserve(3, IV, perkey=perkey, floor=FLOOR)
                self.assertEqual((res.key, res.slot), (-1, f + 1 * SEC))
                self.assertEqual(self.snapshot(), before)


class QueueBound(ScriptCase):

    def test_too_far_global(self):
        """global scope: a slot beyond the longest wait gives {-2, wait, slot}; position and timeline unchanged."""
        f = self.far
        self.r("SET", self.s.rr, 1)
        self.r("SET", self.s.slot, f)
        before = self.snapshot()
        res = self.reserve(3, IV, max_wait=500 * SEC)
        self.assertEqual((res.key, res.slot), (-2, f))
        self.assertEqual(self.snapshot(), before)
        res = self.reserve(3, IV, max_wait=2000 * SEC)
        self.assertEqual((res.key, res.slot), (1, f))

    def test_too_far_key_scope(self):
        """key scope: the earliest key's slot beyond the longest wait gives -2; position, timelines, hash unchanged."""
        f = self.far
        self.r("SET", self.s.slot, f - 1 * SEC)
        self.hset(s0=f + 1 * SEC, s1=f, c2=f + 10 * SEC)
        before = self.snapshot()
        res = self.reserve(3, IV, perkey=True, floor=FLOOR, max_wait=500 * SEC)
        self.assertEqual((res.key, res.slot), (-2, f))
        self.assertEqual(self.snapshot(), before)
        self.assertEqual(self.r("EXISTS", self.s.rr), 0)

    def test_zero_wait_bound(self):
        """longest wait 0: a slot now is taken; the next one (interval later) is refused without a trace."""
        a = self.reserve(2, IV, max_wait=0)
        self.assertNow(a)
        before = self.snapshot()
        b = self.reserve(2, IV, max_wait=0)
        self.assertEqual((b.key, b.slot), (-2, a.slot + IV))
        self.assertEqual(self.snapshot(), before)


class Release(ScriptCase):

    def test_release_last_slot_global(self):
        """release.lua, global scope: the last slot goes back (1, timeline = slot), then the one before it."""
        f = self.far
        self.r("SET", self.s.slot, f)
        a = self.reserve(3, IV)
        b = self.reserve(3, IV)
        self.assertEqual(self.s.release(b.key, b.slot, IV), 1)
        self.assertEqual(self.timeline(), f + IV)
        self.assertEqual(self.s.release(a.key, a.slot, IV), 1)
        self.assertEqual(self.timeline(), f)
        self.assertEqual(self.reserve(3, IV).slot, f)

    def test_release_refused_after_later_reservation(self):
        """release.lua, global scope: refused (0, nothing changes) once a later slot was handed out."""
        f = self.far
        self.r("SET", self.s.slot, f)
        a = self.reserve(3, IV)
        b = self.reserve(3, IV)
        before = self.snapshot()
        self.assertEqual(self.s.release(a.key, a.slot, IV), 0)
        self.assertEqual(self.s.release(0, f + 7, IV), 0)
        self.assertEqual(self.snapshot(), before)
        self.assertEqual(self.s.release(b.key, b.slot, IV), 1)
        self.assertEqual(self.s.release(a.key, a.slot, IV), 1)
        self.assertEqual(self.timeline(), f)

    def test_release_keeps_ttl(self):
        """release.lua keeps the timeline's expiry as it was (SET ... KEEPTTL)."""
        self.r("SET", self.s.slot, self.far)
        a = self.reserve(2, IV)
        before = self.r("PTTL", self.s.slot)
        self.assertEqual(self.s.release(a.key, a.slot, IV), 1)
        after = self.r("PTTL", self.s.slot)
        # the clock moves on between the two PTTLs: a generous 1 s
        self.assertTrue(before - 1000 <= after <= before, (before, after))

    def test_release_interval_zero(self):
        """release.lua with interval 0: nothing to give back (0), nothing written."""
        a = self.reserve(2, 0)
        before = self.snapshot()
        self.assertEqual(self.s.release(a.key, a.slot, 0), 0)
        self.assertEqual(self.snapshot(), before)

    def test_release_key_scope(self):
        """release.lua, key scope: the key's timeline and the floor go back to the slot."""
        f = self.far
        self.hset(s0=f)
        a = self.reserve(1, IV, perkey=True, floor=FLOOR)
        self.assertEqual((a.key, a.slot), (0, f))
        self.assertEqual(self.s.release(0, f, IV, perkey=True, gap=FLOOR), 1)
        self.assertEqual(self.field("s0"), f)
        self.assertEqual(self.timeline(), f)
        self.assertEqual(self.reserve(1, IV, perkey=True, floor=FLOOR).slot, f)

    def test_release_key_scope_refused_after_later_on_key(self):
        """release.lua, key scope: refused (0, nothing changes) after a later slot on the same key."""
        f = self.far
        self.hset(s0=f)
        a = self.reserve(1, IV, perkey=True, floor=FLOOR)
        self.reserve(1, IV, perkey=True, floor=FLOOR)
        before = self.snapshot()
        self.assertEqual(self.s.release(0, a.slot, IV, perkey=True, gap=FLOOR), 0)
        self.assertEqual(self.snapshot(), before)

    def test_release_key_scope_after_other_key(self):
        """release.lua, key scope: after a later slot on another key only the key's own timeline goes back, not the floor."""
        f = self.far
        self.hset(s0=f, s1=f)
        a = self.reserve(2, IV, perkey=True, floor=FLOOR)
        b = self.reserve(2, IV, perkey=True, floor=FLOOR)
        self.assertEqual([(a.key, a.slot), (b.key, b.slot)], [(0, f), (1, f + FLOOR)])
        self.assertEqual(self.s.release(0, a.slot, IV, perkey=True, gap=FLOOR), 1)
        self.assertEqual(self.field("s0"), f)
        self.assertEqual(self.timeline(), f + 2 * FLOOR)
        self.assertEqual(self.s.release(1, b.slot, IV, perkey=True, gap=FLOOR), 1)
        self.assertEqual(self.field("s1"), f + FLOOR)
        self.assertEqual(self.timeline(), f + FLOOR)


class Expiry(ScriptCase):

    def test_global_timeline_expires_after_its_slot(self):
        """the global timeline's PTTL covers its next slot and ends ~1 s after it."""
        f = self.far
        self.r("SET", self.s.slot, f)
        a = self.reserve(2, IV)
        pttl = self.r("PTTL", self.s.slot)
        t = self.r.time_us()
        self.assertGreaterEqual(pttl * MS, f + IV - t)
        self.assertLessEqual(pttl, (f + IV - a.t0) // MS + 1000)

    def test_key_state_expires(self):
        """the per-key hash gets an expiry from reserve.lua (key scope): a day past the slot it holds."""
        a = self.reserve(2, IV, perkey=True)
        pttl = self.r("PTTL", self.s.keys)
        self.assertGreater(pttl, 0)
        self.assertLessEqual(pttl, DAY_MS + (a.slot + IV - a.t0) // MS + 1)

    def test_rest_expiry_outlives_rest(self):
        """rest.lua: the hash lives a day past the rest's end."""
        till = self.s.rest(0, 100 * SEC)
        pttl = self.r("PTTL", self.s.keys)
        t = self.r.time_us()
        self.assertGreaterEqual(pttl * MS, till - t + (DAY_MS - 1000) * MS)
        self.assertLessEqual(pttl, 100 * 1000 + DAY_MS)

    def test_round_robin_position_expires(self):
        """the round-robin position reserve.lua writes expires (PTTL > 0)."""
        self.reserve(2, IV)
        self.assertGreater(self.r("PTTL", self.s.rr), 0,
                           "reserve.lua SETs %s without an expiry" % self.s.rr)

    def test_key_state_outlives_its_slots(self):
        """key scope: the per-key hash does not expire before the per-key slot just written (its expiry is refreshed)."""
        f = self.far
        self.hset(s0=f)
        # a hash first written a day ago: its expiry is nearly over
        self.r("PEXPIRE", self.s.keys, 2000)
        a = self.reserve(1, IV, perkey=True)
        pttl = self.r("PTTL", self.s.keys)
        t = self.r.time_us()
        self.assertGreaterEqual(pttl * MS, a.slot + IV - t,
                                "the hash holding s0 = %d expires in %d ms"
                                % (a.slot + IV, pttl))


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
        f = self.far
        s = self.s
        a = self.reserve(3, IV)                                  # fresh, global
        s.release(a.key, a.slot, IV)                             # given back
        self.reserve(3, IV)
        self.reserve(3, IV)
        s.release(a.key, a.slot, IV)                             # refused
        self.reserve(3, 0)                                       # interval 0
        self.reserve(3, IV, max_wait=0)                          # -2
        b = self.reserve(3, IV, perkey=True, floor=FLOOR)        # key scope
        s.release(b.key, b.slot, IV, perkey=True, gap=FLOOR)
        self.reserve(3, IV, perkey=True, floor=FLOOR, max_wait=0)
        s.rest(0, 10 * SEC)
        s.rest(0, 1 * SEC)
        s.rest(1, 10 * SEC)
        s.rest(2, 10 * SEC)
        self.reserve(3, IV)                                      # -1
        self.reserve(3, IV, perkey=True, floor=FLOOR)            # -1
        self.hset(c0=0, c1=0, c2=0, s0=f)
        self.reserve(3, IV, perkey=True, floor=FLOOR)

    def test_scripts_touch_only_their_keys(self):
        """MONITOR: every command a script ran names only KEYS; SCAN: nothing else exists afterwards."""
        declared = {self.s.rr, self.s.slot, self.s.keys}
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
        self.assertTrue({"TIME", "GET", "SET", "HMGET", "HSET", "HGET",
                         "PTTL", "PEXPIRE"} <= commands, commands)
        self.assertTrue(touched, "MONITOR showed no script command")
        self.assertLessEqual(touched, declared)
        found = set()
        cursor = "0"
        while True:
            cursor, batch = self.r("SCAN", cursor, "COUNT", 1000)
            found.update(batch)
            if cursor == "0":
                break
        self.assertEqual(found, declared)


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


if __name__ == "__main__":
    unittest.main()
