/*
 * test_sched_local.c - the per-host scheduler on an injected clock: the
 * same rotation, spacing, rests, queue bound, budgets, probes and
 * settlements as reserve.lua and settle.lua (tests/redis/ checks the
 * scripts themselves against Redis).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>

#include <cmocka.h>

#include "sched_local.h"
#include "sched_redis.h" /* SCHED_POLL_US */

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "unit.h"

#define MS  1000000LL /* ns */
#define SEC (1000 * MS)
#define T0  (1000 * SEC)

static int64_t fake_now;

static int64_t
fake_clock(void)
{
	return fake_now;
}

/*
 * A budget that never holds a request back: declared, so nothing
 * probes, and on the day window, so a slot booked far ahead does not
 * make the bucket look spent now.
 */
static const long long unlimited[CONFIG_NLIMITS] = {0, 0, 0, 0, 1000000000000LL,
						    0};

struct fixture {
	struct config cfg;
	struct sched_local l;
	char prefix[64];
	int key_org[8];
	char org_fps[8][9];
	struct declared_limits dl[2];
};

static struct sched_request rq_default = {.sr_model = "model", .sr_tokens = 10};

/*
 * A fresh shared state (its own name) on the fake clock at T0; the keys
 * all of one organisation, every model declared unlimited.
 */
static void
setup(struct fixture *f, int nkeys, long iv_ms, int per_key, long floor_ms,
      long max_wait_ms)
{
	static int serial;
	char errbuf[128];
	char name[64];
	int i;

	memset(f, 0, sizeof(*f));
	snprintf(f->prefix, sizeof(f->prefix), "{unit-%ld-%d}", (long)getpid(),
		 serial++);
	f->cfg.redis_prefix = f->prefix;
	f->cfg.redis_url = (char *)"none";
	f->cfg.nkeys = nkeys;
	f->cfg.interval_ms = iv_ms;
	f->cfg.scope_per_key = per_key;
	f->cfg.global_interval_ms = floor_ms;
	f->cfg.queue_max_wait_ms = max_wait_ms;
	f->cfg.key_cooldown_ms = 60000;
	for (i = 0; i < 8; i++)
		snprintf(f->org_fps[i], sizeof(f->org_fps[i]), "0rg%05u",
			 (unsigned)(unsigned char)i);
	f->cfg.key_org = f->key_org;
	f->cfg.org_fps = f->org_fps;
	f->cfg.norgs = 1;
	f->cfg.limits = f->dl;
	f->cfg.nlimits = 1;
	memcpy(f->dl[0].dl_cap, unlimited, sizeof(unlimited));
	sched_local_name(&f->cfg, name, sizeof(name));
	(void)shm_unlink(name); /* a failed test skips its teardown */
	if (sched_local_open(&f->l, &f->cfg, errbuf, sizeof(errbuf)) != CP_OK)
		fail_msg("sched_local_open: %s", errbuf);
	f->l.sl_now = fake_clock;
	fake_now = T0;
}

static void
teardown(struct fixture *f)
{
	char name[64];

	sched_local_name(&f->cfg, name, sizeof(name));
	sched_local_close(&f->l);
	(void)shm_unlink(name);
}

/* Key i's organisation is orgs[i]. */
static void
set_orgs(struct fixture *f, const int *orgs)
{
	int i;

	f->cfg.norgs = 0;
	for (i = 0; i < f->cfg.nkeys; i++) {
		f->key_org[i] = orgs[i];
		if (orgs[i] + 1 > f->cfg.norgs)
			f->cfg.norgs = orgs[i] + 1;
	}
}

/*
 * Declares caps for every model (model NULL: the only entry), or for
 * one model on top of the unlimited default.
 */
static void
declare(struct fixture *f, const char *model, const long long *caps)
{
	struct declared_limits *dl = &f->dl[model != NULL ? 1 : 0];

	dl->dl_model = (char *)model;
	memcpy(dl->dl_cap, caps, sizeof(dl->dl_cap));
	f->cfg.nlimits = model != NULL ? 2 : 1;
}

/* Nothing declared: every budget starts unknown and probes. */
static void
no_limits(struct fixture *f)
{
	f->cfg.nlimits = 0;
}

static struct slot
reserve_rq(struct fixture *f, const struct sched_request *rq)
{
	struct slot s;

	sched_local_reserve(&f->l, rq, &s);
	assert_int_equal(s.s_local, 1);
	assert_ptr_equal(s.s_req, rq);
	return s;
}

static struct slot
reserve(struct fixture *f)
{
	return reserve_rq(f, &rq_default);
}

/* The limits of a header block as the request path hands them over. */
static const struct hdr_limit *
limits_of(const char *hdrs, struct hdr_limit out[HDR_NLIMITS])
{
	if (hdrs == NULL)
		return NULL;
	hdr_limits(hdrs, out);
	return out;
}

/* Settles s's answer: status, header block (taken now), tokens used. */
static int
answer(struct fixture *f, const struct slot *s, long status, const char *hdrs,
       int64_t hdr_ns, long long used)
{
	struct sched_outcome o;
	struct hdr_limit lim[HDR_NLIMITS];

	memset(&o, 0, sizeof(o));
	o.so_mode = SETTLE_ANSWER;
	o.so_status = status;
	o.so_rest_ms = -1;
	o.so_limits = limits_of(hdrs, lim);
	o.so_hdr_ns = hdr_ns;
	o.so_used = used;
	return sched_local_settle(&f->l, s, "answer", &o);
}

static void
release(struct fixture *f, const struct slot *s)
{
	assert_int_equal(sched_local_settle(&f->l, s, "release", NULL), -1);
}

/* One limit's headers: "x-ratelimit-limit-<what>: k" and remaining. */
static const char *
limit_hdrs(char *buf, size_t bufsz, int l, long long k, long long rem)
{
	static const char *const what[] = {
		"requests-minute", "tokens-minute", "requests-hour",
		"tokens-hour",	   "requests-day",  "tokens-day",
	};

	snprintf(buf, bufsz,
		 "content-type: application/json\r\n"
		 "x-ratelimit-limit-%s: %lld\r\n"
		 "x-ratelimit-remaining-%s: %lld\r\n",
		 what[l], k, what[l], rem);
	return buf;
}

/* Asserts s is key's slot at `at`, set by why. */
static void
assert_slot(const struct slot *s, int key, int64_t at, int why)
{
	if (s->s_key != key || s->s_deadline_ns != at || s->s_why != why ||
	    s->s_at_us != at / 1000 || s->s_wait_us != (at - fake_now) / 1000)
		fail_msg("slot {key %d, at T0%+lld ms, why %d, wait %lld us}, "
			 "want {key %d, at T0%+lld ms, why %d}",
			 s->s_key, (long long)((s->s_deadline_ns - T0) / MS),
			 s->s_why, (long long)s->s_wait_us, key,
			 (long long)((at - T0) / MS), why);
}

/* Global scope: keys in turn, one timeline spaced by the interval. */
static void
test_rotation_and_spacing(void **state)
{
	struct fixture f;
	static const int want_key[] = {0, 1, 2, 0, 1};
	struct slot s;
	size_t i;

	(void)state;
	setup(&f, 3, 200, 0, 0, 30000);
	for (i = 0; i < NELEM(want_key); i++) {
		s = reserve(&f);
		assert_slot(&s, want_key[i], T0 + (int64_t)i * 200 * MS,
			    i == 0 ? SLOT_WHY_NONE : SLOT_WHY_SPACING);
		assert_int_equal(s.s_probe, 0);
		assert_int_equal(s.s_cq, (long long)i + 1);
		assert_int_equal(s.s_ct, ((long long)i + 1) * 10);
	}
	/* Later on, a free timeline gives "now". */
	fake_now = T0 + 10000 * MS;
	s = reserve(&f);
	assert_slot(&s, 2, fake_now, SLOT_WHY_NONE);
	teardown(&f);
}

/* Interval 0: rotation only, every slot "now". */
static void
test_no_spacing(void **state)
{
	struct fixture f;
	struct slot s;
	int i;

	(void)state;
	setup(&f, 2, 0, 0, 0, 30000);
	for (i = 0; i < 4; i++) {
		s = reserve(&f);
		assert_slot(&s, i % 2, T0, SLOT_WHY_NONE);
	}
	teardown(&f);
}

/*
 * Resting keys are skipped; a rest is only ever lengthened. When every
 * key rests, the request queues on the first back within the longest
 * wait (why: disabled keys), else it is refused until then.
 */
static void
test_rests(void **state)
{
	struct fixture f;
	struct slot s;

	(void)state;
	setup(&f, 3, 0, 0, 0, 30000);
	sched_local_rest(&f.l, 1, 5000, 0);
	sched_local_rest(&f.l, 1, 1000, 0); /* shorter: ignored */
	assert_int_equal(reserve(&f).s_key, 0);
	assert_int_equal(reserve(&f).s_key, 2);
	assert_int_equal(reserve(&f).s_key, 0);
	sched_local_rest(&f.l, 0, 3000, 0);
	sched_local_rest(&f.l, 2, 4000, 0);
	s = reserve(&f);
	assert_slot(&s, 0, T0 + 3000 * MS, SLOT_WHY_DISABLED); /* back first */
	fake_now = T0 + 3000 * MS;
	assert_int_equal(reserve(&f).s_key, 0);
	fake_now = T0 + 5000 * MS;
	assert_int_equal(reserve(&f).s_key, 1);
	sched_local_rest(&f.l, 0, 50000, 0);
	sched_local_rest(&f.l, 1, 40000, 0);
	sched_local_rest(&f.l, 2, 60000, 0);
	s = reserve(&f);
	assert_int_equal(s.s_key, SLOT_ALL_RESTING);
	assert_int_equal(s.s_why, SLOT_WHY_DISABLED);
	assert_int_equal(s.s_wait_us, 40000 * 1000); /* key 1 is back first */
	assert_int_equal(s.s_at_us, (fake_now + 40000 * MS) / 1000);
	teardown(&f);
}

/* A slot beyond the queue bound is refused and reserves nothing. */
static void
test_queue_bound(void **state)
{
	struct fixture f;
	struct slot s;

	(void)state;
	setup(&f, 2, 200, 0, 0, 500);
	assert_int_equal(reserve(&f).s_deadline_ns, T0);
	assert_int_equal(reserve(&f).s_deadline_ns, T0 + 200 * MS);
	assert_int_equal(reserve(&f).s_deadline_ns, T0 + 400 * MS);
	s = reserve(&f);
	assert_int_equal(s.s_key, SLOT_TOO_FAR);
	assert_int_equal(s.s_why, SLOT_WHY_SPACING);
	assert_int_equal(s.s_wait_us, 600 * 1000);
	s = reserve(&f);
	assert_int_equal(s.s_key, SLOT_TOO_FAR);
	/* Nothing was taken: the next slot is still T0 + 600, charge 4. */
	fake_now = T0 + 100 * MS;
	s = reserve(&f);
	assert_slot(&s, 1, T0 + 600 * MS, SLOT_WHY_SPACING);
	assert_int_equal(s.s_cq, 4);
	teardown(&f);
}

/*
 * Release is exact: any booked slot goes back (the timeline is a set of
 * slots), and so does its charge.
 */
static void
test_release(void **state)
{
	static const long long one_a_minute[CONFIG_NLIMITS] = {1, 0, 0,
							       0, 0, 0};
	static const struct sched_request rq = {.sr_model = "one-a-minute",
						.sr_tokens = 10};
	struct fixture f;
	struct slot a;
	struct slot b;
	struct slot c;

	(void)state;
	setup(&f, 2, 200, 0, 0, 120000);
	a = reserve(&f);
	b = reserve(&f);
	c = reserve(&f);
	assert_int_equal(c.s_deadline_ns, T0 + 400 * MS);
	assert_int_equal(c.s_cq, 3);
	release(&f, &a); /* not the last: it goes back all the same */
	a = reserve(&f);
	assert_slot(&a, 1, T0, SLOT_WHY_NONE);
	assert_int_equal(a.s_cq,
			 4); /* given back, still counted (settle.lua) */
	release(&f, &b);
	release(&f, &a);
	c = reserve(&f);
	assert_slot(&c, 0, T0, SLOT_WHY_NONE);
	assert_int_equal(reserve(&f).s_deadline_ns, T0 + 200 * MS);
	assert_int_equal(reserve(&f).s_deadline_ns, T0 + 600 * MS);

	/* The charge: one a minute, the second waits; released, the next
	 * waits as long, not a minute more. */
	declare(&f, "one-a-minute", one_a_minute);
	fake_now = T0 + 10 * SEC;
	a = reserve_rq(&f, &rq);
	assert_int_equal(a.s_deadline_ns, T0 + 10 * SEC);
	b = reserve_rq(&f, &rq);
	assert_int_equal(b.s_deadline_ns, T0 + 70 * SEC);
	assert_int_equal(b.s_why, 0);
	release(&f, &b);
	c = reserve_rq(&f, &rq);
	assert_int_equal(c.s_deadline_ns, T0 + 70 * SEC);
	assert_int_equal(c.s_why, 0);
	assert_int_equal(c.s_cq, 3);
	teardown(&f);
}

/* Key scope: each key its own timeline; the earliest key wins. */
static void
test_key_scope(void **state)
{
	struct fixture f;
	struct slot s;
	int i;

	(void)state;
	setup(&f, 2, 1000, 1, 0, 30000);
	for (i = 0; i < 2; i++) {
		s = reserve(&f);
		assert_slot(&s, i, T0, SLOT_WHY_NONE);
	}
	s = reserve(&f);
	assert_slot(&s, 0, T0 + 1000 * MS, SLOT_WHY_SPACING);
	fake_now = T0 + 500 * MS;
	s = reserve(&f);
	assert_slot(&s, 1, T0 + 1000 * MS, SLOT_WHY_SPACING);
	teardown(&f);
}

/*
 * Regression: in key scope the global floor holds around the slot
 * actually given, also when a key's own timeline pushed that slot late.
 * The old per-host code moved the floor timeline from its own value, so
 * a key back from a rest could be sent 200 ms after another here, under
 * a 400 ms floor. Key 2, resting for 50 ms, queues behind its rest.
 */
static void
test_key_scope_floor(void **state)
{
	struct fixture f;
	struct slot s[4];
	int i;

	(void)state;
	setup(&f, 3, 1000, 1, 400, 30000);
	sched_local_rest(&f.l, 2, 50, 0);
	for (i = 0; i < 3; i++)
		s[i] = reserve(&f);
	assert_slot(&s[0], 0, T0, SLOT_WHY_NONE);
	assert_slot(&s[1], 1, T0 + 400 * MS, SLOT_WHY_SPACING);
	assert_slot(&s[2], 2, T0 + 800 * MS, SLOT_WHY_SPACING);
	fake_now = T0 + 60 * MS;
	s[3] = reserve(&f);
	/* Key 0's own 1000 ms from T0, then the floor from T0 + 800. */
	assert_slot(&s[3], 0, T0 + 1200 * MS, SLOT_WHY_SPACING);
	/* Giving that slot back frees it for the next. */
	release(&f, &s[3]);
	assert_int_equal(reserve(&f).s_deadline_ns, T0 + 1200 * MS);
	teardown(&f);
}

struct booked {
	int64_t bk_at;
	int bk_key;
};

static int
booked_cmp(const void *a, const void *b)
{
	const struct booked *x = a;
	const struct booked *y = b;

	return x->bk_at < y->bk_at ? -1 : x->bk_at > y->bk_at;
}

/*
 * Key scope with a floor, random arrival times, rests and releases (of
 * any recent slot): every two slots handed out (and not given back) are
 * a floor apart, and the slots of one key an interval apart.
 */
static void
test_key_scope_invariants(void **state)
{
	enum { N = 3000, KEYS = 4 };
	static struct slot held[2 * N];
	static int live[2 * N];
	static struct booked bk[2 * N];
	struct fixture f;
	struct slot s;
	uint32_t rnd = 12345;
	int64_t at0;
	int n = 0;
	int nb = 0;
	int i;
	int j;
	int k;

	(void)state;
	setup(&f, KEYS, 700, 1, 150, 3600000);
	for (i = 0; i < N; i++) {
		rnd = rnd * 1103515245u + 12345u;
		fake_now += (int64_t)(rnd >> 16) % 400 * MS;
		if ((rnd >> 8) % 17 == 0)
			sched_local_rest(&f.l, (int)(rnd >> 4) % KEYS,
					 (long)(rnd >> 12) % 3000, 0);
		s = reserve(&f);
		if (s.s_key < 0)
			continue;
		held[n] = s;
		live[n] = 1;
		n++;
		if ((rnd >> 10) % 11 != 0)
			continue;
		k = n - 1 - (int)((rnd >> 20) % 8);
		if (k < 0 || !live[k])
			continue;
		release(&f, &held[k]);
		live[k] = 0;
		if (k == n - 1) {
			/* The latest goes back, and to the next taker. */
			at0 = held[k].s_deadline_ns;
			s = reserve(&f);
			if (s.s_deadline_ns != at0)
				fail_msg("a released slot was not reused");
			held[n] = s;
			live[n] = 1;
			n++;
		}
	}
	assert_true(n > N / 2);
	for (i = 0; i < n; i++) {
		if (live[i]) {
			bk[nb].bk_at = held[i].s_deadline_ns;
			bk[nb].bk_key = held[i].s_key;
			nb++;
		}
	}
	qsort(bk, (size_t)nb, sizeof(bk[0]), booked_cmp);
	for (i = 0; i + 1 < nb; i++) {
		if (bk[i + 1].bk_at - bk[i].bk_at < 150 * MS)
			fail_msg("slots %d and %d are %lld ms apart", i, i + 1,
				 (long long)((bk[i + 1].bk_at - bk[i].bk_at) /
					     MS));
		for (j = i + 1; j < nb && bk[j].bk_at - bk[i].bk_at < 700 * MS;
		     j++)
			if (bk[j].bk_key == bk[i].bk_key)
				fail_msg("key %d: slots %d and %d %lld ms "
					 "apart",
					 bk[i].bk_key, i, j,
					 (long long)((bk[j].bk_at -
						      bk[i].bk_at) /
						     MS));
	}
	teardown(&f);
}

/* A full timeline refuses (SLOT_TOO_FAR) instead of overflowing. */
static void
test_timeline_full(void **state)
{
	struct fixture f;
	struct slot s;
	int i;

	(void)state;
	setup(&f, 1, 1, 0, 0, 10000);
	for (i = 0; i < SCHED_LOCAL_SLOTS; i++) {
		s = reserve(&f);
		assert_int_equal(s.s_deadline_ns, T0 + i * MS);
	}
	s = reserve(&f);
	assert_int_equal(s.s_key, SLOT_TOO_FAR);
	assert_int_equal(s.s_why, SLOT_WHY_SPACING);
	assert_int_equal(s.s_deadline_ns, T0 + SCHED_LOCAL_SLOTS * MS);
	/* Once the first slots are past, there is room again. */
	fake_now = T0 + 10 * MS;
	s = reserve(&f);
	assert_slot(&s, 0, T0 + SCHED_LOCAL_SLOTS * MS, SLOT_WHY_SPACING);
	teardown(&f);

	/* Key scope: each key's own timeline, the same. */
	setup(&f, 2, 1, 1, 0, 10000);
	for (i = 0; i < 2 * SCHED_LOCAL_KEY_SLOTS; i++) {
		s = reserve(&f);
		assert_int_equal(s.s_key, i % 2);
		assert_int_equal(s.s_deadline_ns, T0 + i / 2 * MS);
	}
	s = reserve(&f);
	assert_int_equal(s.s_key, SLOT_TOO_FAR);
	sched_local_rest(&f.l, 0, 1000, 0);
	assert_int_equal(reserve(&f).s_key, SLOT_TOO_FAR);
	fake_now = T0 + 10 * MS;
	s = reserve(&f);
	assert_slot(&s, 1, T0 + SCHED_LOCAL_KEY_SLOTS * MS, SLOT_WHY_SPACING);
	teardown(&f);
}

/*
 * An unknown budget (nothing declared, no answer seen) takes one request,
 * the probe; the others poll until its answer settles, or its hold ends.
 */
static void
test_probe(void **state)
{
	static const struct sched_request rq2 = {.sr_model = "other",
						 .sr_tokens = 10};
	struct fixture f;
	struct slot p;
	struct slot s;
	char hdrs[256];

	(void)state;
	setup(&f, 2, 0, 0, 0, 30000);
	no_limits(&f);
	f.cfg.connect_timeout_ms = 1000;
	f.cfg.first_byte_timeout_ms = 3000; /* the hold: 5 s */
	p = reserve(&f);
	assert_slot(&p, 0, T0, SLOT_WHY_NONE);
	assert_int_equal(p.s_probe, 1);
	s = reserve(&f);
	assert_int_equal(s.s_key, SLOT_POLL);
	assert_int_equal(s.s_why, SLOT_WHY_PROBE);
	assert_int_equal(s.s_wait_us, strtoll(SCHED_POLL_US, NULL, 10));
	fake_now = T0 + 4900 * MS;
	assert_int_equal(reserve(&f).s_key, SLOT_POLL);
	/* Another model is another budget: its own probe. */
	s = reserve_rq(&f, &rq2);
	assert_int_equal(s.s_key, 1);
	assert_int_equal(s.s_probe, 1);
	/* The probe's answer (limits learnt) lets the others through. */
	assert_int_equal(answer(&f, &p, 200,
				limit_hdrs(hdrs, sizeof(hdrs), 0, 100, 99),
				fake_now, 10),
			 -1);
	s = reserve(&f);
	assert_int_equal(s.s_key, 0);
	assert_int_equal(s.s_probe, 0);
	assert_int_equal(s.s_deadline_ns, fake_now);
	/* rq2's probe is not answered: its hold ends after 5 s. */
	assert_int_equal(reserve_rq(&f, &rq2).s_key, SLOT_POLL);
	fake_now = T0 + 4900 * MS + 5001 * MS;
	p = reserve_rq(&f, &rq2);
	assert_true(p.s_key >= 0);
	assert_int_equal(p.s_probe, 1);
	/* A probe given back frees the budget for the next probe. */
	release(&f, &p);
	p = reserve_rq(&f, &rq2);
	assert_int_equal(p.s_probe, 1);
	/* An answer refused without limits teaches nothing: probe again. */
	assert_int_equal(answer(&f, &p, 500, NULL, 0, -1), -1);
	p = reserve_rq(&f, &rq2);
	assert_int_equal(p.s_probe, 1);
	/* An answer without limits: there are none to keep. */
	assert_int_equal(
		answer(&f, &p, 200, "content-type: x\r\n", fake_now, 5), -1);
	s = reserve_rq(&f, &rq2);
	assert_true(s.s_key >= 0);
	assert_int_equal(s.s_probe, 0);
	teardown(&f);
}

/* One probe per organisation: another organisation's does not hold it. */
static void
test_probe_per_org(void **state)
{
	static const int orgs[] = {0, 1};
	struct fixture f;
	struct slot s;

	(void)state;
	setup(&f, 2, 0, 0, 0, 30000);
	set_orgs(&f, orgs);
	no_limits(&f);
	s = reserve(&f);
	assert_int_equal(s.s_key, 0);
	assert_int_equal(s.s_probe, 1);
	s = reserve(&f);
	assert_int_equal(s.s_key, 1);
	assert_int_equal(s.s_probe, 1);
	assert_int_equal(reserve(&f).s_key, SLOT_POLL);
	teardown(&f);
}

/* Declared limits make the budget known: no probe. */
static void
test_declared_skips_probe(void **state)
{
	static const long long rpm6[CONFIG_NLIMITS] = {6, 0, 0, 0, 0, 0};
	struct fixture f;
	struct slot s;

	(void)state;
	setup(&f, 1, 0, 0, 0, 30000);
	declare(&f, NULL, rpm6);
	s = reserve(&f);
	assert_int_equal(s.s_probe, 0);
	s = reserve(&f);
	assert_int_equal(s.s_probe, 0);
	assert_int_equal(s.s_deadline_ns, T0);
	teardown(&f);
}

/* Six requests a minute: a burst of six, then one every 10 s. */
static void
test_requests_minute(void **state)
{
	static const long long rpm6[CONFIG_NLIMITS] = {6, 0, 0, 0, 0, 0};
	struct fixture f;
	struct slot s;
	int i;

	(void)state;
	setup(&f, 1, 0, 0, 0, 60000);
	declare(&f, NULL, rpm6);
	for (i = 0; i < 6; i++) {
		s = reserve(&f);
		assert_slot(&s, 0, T0, SLOT_WHY_NONE);
	}
	for (i = 1; i <= 3; i++) {
		s = reserve(&f);
		assert_slot(&s, 0, T0 + i * 10 * SEC, 0);
	}
	/* Half a minute on, the refill has been booked already. */
	fake_now = T0 + 30 * SEC;
	s = reserve(&f);
	assert_slot(&s, 0, T0 + 40 * SEC, 0);
	teardown(&f);
}

/*
 * 1000 tokens a minute, 600 a request: the second waits until 600 have
 * refilled. While the first is out (unsettled), its usage may give
 * tokens back early, so that wait is not booked but asked again
 * (SLOT_POLL, why tokens-minute) a quarter of the way there, 200 ms to
 * 2 s. An estimate beyond the capacity is charged the capacity.
 */
static void
test_tokens_pacing(void **state)
{
	static const long long tpm[CONFIG_NLIMITS] = {0, 1000, 0, 0, 0, 0};
	static const struct sched_request rq = {.sr_model = "model",
						.sr_tokens = 600};
	static const struct sched_request big = {.sr_model = "big",
						 .sr_tokens = 5000};
	struct fixture f;
	struct slot a;
	struct slot s;

	(void)state;
	setup(&f, 1, 0, 0, 0, 120000);
	declare(&f, NULL, tpm);
	a = reserve_rq(&f, &rq);
	assert_slot(&a, 0, T0, SLOT_WHY_NONE);
	assert_int_equal(a.s_ct, 600);
	s = reserve_rq(&f, &rq);
	assert_int_equal(s.s_key, SLOT_POLL);
	assert_int_equal(s.s_why, 1);
	/* A quarter of the 12 s, within 4..40 polls: 2 s. */
	assert_int_equal(s.s_wait_us, 40 * strtoll(SCHED_POLL_US, NULL, 10));
	/* It used all 600: nothing comes back, the wait is booked. */
	assert_int_equal(answer(&f, &a, 200, NULL, 0, 600), -1);
	s = reserve_rq(&f, &rq);
	assert_slot(&s, 0, T0 + 12 * SEC, 1);
	/* Out, but even all of it back would not cover the next. */
	s = reserve_rq(&f, &rq);
	assert_slot(&s, 0, T0 + 48 * SEC, 1);

	a = reserve_rq(&f, &big);
	assert_slot(&a, 0, T0, SLOT_WHY_NONE);
	assert_int_equal(reserve_rq(&f, &big).s_key, SLOT_POLL);
	assert_int_equal(answer(&f, &a, 200, NULL, 0, 1000), -1);
	s = reserve_rq(&f, &big);
	assert_slot(&s, 0, T0 + 60 * SEC, 1);
	teardown(&f);
}

/*
 * A spent day limit: no key can take the request within the longest
 * wait; the answer names requests-day and the wait until one refills.
 */
static void
test_day_spent(void **state)
{
	static const long long rpd2[CONFIG_NLIMITS] = {0, 0, 0, 0, 2, 0};
	struct fixture f;
	struct slot s;

	(void)state;
	setup(&f, 2, 0, 0, 0, 30000);
	declare(&f, NULL, rpd2);
	assert_int_equal(reserve(&f).s_deadline_ns, T0);
	assert_int_equal(reserve(&f).s_deadline_ns, T0 + 0);
	s = reserve(&f);
	assert_int_equal(s.s_key, SLOT_ALL_RESTING);
	assert_int_equal(s.s_why, 4);
	assert_int_equal(s.s_wait_us, 43200LL * 1000000);
	assert_int_equal(s.s_at_us, (T0 + 43200 * SEC) / 1000);
	teardown(&f);
}

/* Each model has its own budget. */
static void
test_models_independent(void **state)
{
	static const long long rpm1[CONFIG_NLIMITS] = {1, 0, 0, 0, 0, 0};
	static const struct sched_request a = {.sr_model = "model-a",
					       .sr_tokens = 10};
	static const struct sched_request b = {.sr_model = "model-b",
					       .sr_tokens = 10};
	struct fixture f;
	struct slot s;

	(void)state;
	setup(&f, 1, 0, 0, 0, 120000);
	declare(&f, NULL, rpm1);
	s = reserve_rq(&f, &a);
	assert_slot(&s, 0, T0, SLOT_WHY_NONE);
	assert_int_equal(s.s_cq, 1);
	s = reserve_rq(&f, &b);
	assert_slot(&s, 0, T0, SLOT_WHY_NONE);
	assert_int_equal(s.s_cq, 1);
	s = reserve_rq(&f, &a);
	assert_slot(&s, 0, T0 + 60 * SEC, 0);
	assert_int_equal(s.s_cq, 2);
	s = reserve_rq(&f, &b);
	assert_slot(&s, 0, T0 + 60 * SEC, 0);
	teardown(&f);
}

/* Two keys of one organisation share its budget; two organisations not. */
static void
test_orgs(void **state)
{
	static const long long rpm1[CONFIG_NLIMITS] = {1, 0, 0, 0, 0, 0};
	static const int one[] = {0, 0};
	static const int two[] = {0, 1};
	struct fixture f;
	struct slot s;

	(void)state;
	setup(&f, 2, 0, 0, 0, 120000);
	set_orgs(&f, one);
	declare(&f, NULL, rpm1);
	s = reserve(&f);
	assert_slot(&s, 0, T0, SLOT_WHY_NONE);
	s = reserve(&f);
	assert_slot(&s, 1, T0 + 60 * SEC, 0);
	teardown(&f);

	setup(&f, 2, 0, 0, 0, 120000);
	set_orgs(&f, two);
	declare(&f, NULL, rpm1);
	s = reserve(&f);
	assert_slot(&s, 0, T0, SLOT_WHY_NONE);
	s = reserve(&f);
	assert_slot(&s, 1, T0, SLOT_WHY_NONE);
	s = reserve(&f);
	assert_slot(&s, 0, T0 + 60 * SEC, 0);
	teardown(&f);
}

/*
 * The headers correct the level: 5 remaining when the request was
 * admitted (taken as its slot), one request charged since (in flight,
 * unseen by the headers), so 4 more go at once where the model alone
 * would let 8 through. The remaining refills from the slot on: 0 left,
 * answered 6 s later, is one request.
 */
static void
test_header_correction(void **state)
{
	static const long long rpm10[CONFIG_NLIMITS] = {10, 0, 0, 0, 0, 0};
	static const struct sched_request b = {.sr_model = "model-b",
					       .sr_tokens = 10};
	struct fixture f;
	struct slot first;
	struct slot s;
	char hdrs[256];
	int i;

	(void)state;
	setup(&f, 1, 0, 0, 0, 120000);
	declare(&f, NULL, rpm10);
	first = reserve(&f);
	assert_int_equal(reserve(&f).s_cq, 2);
	assert_int_equal(answer(&f, &first, 200,
				limit_hdrs(hdrs, sizeof(hdrs), 0, 10, 5),
				fake_now, 10),
			 -1);
	for (i = 0; i < 4; i++) {
		s = reserve(&f);
		assert_slot(&s, 0, T0, SLOT_WHY_NONE);
	}
	s = reserve(&f);
	assert_slot(&s, 0, T0 + 6 * SEC, 0);

	first = reserve_rq(&f, &b);
	fake_now = T0 + 6 * SEC;
	/* Its headers came when it was sent: refilled 6 s since. */
	assert_int_equal(answer(&f, &first, 200,
				limit_hdrs(hdrs, sizeof(hdrs), 0, 10, 0),
				first.s_deadline_ns, 10),
			 -1);
	s = reserve_rq(&f, &b);
	assert_slot(&s, 0, T0 + 6 * SEC, SLOT_WHY_NONE);
	s = reserve_rq(&f, &b);
	assert_slot(&s, 0, T0 + 12 * SEC, 0);
	teardown(&f);
}

/*
 * Once an answer was seen, a level within two of the request's charges
 * (or 2% of the capacity) of the proxy's own is left alone; one further
 * off is set.
 */
static void
test_header_band(void **state)
{
	static const long long rpm10[CONFIG_NLIMITS] = {10, 0, 0, 0, 0, 0};
	static const struct sched_request m2 = {.sr_model = "model-2",
						.sr_tokens = 10};
	struct fixture f;
	struct slot a;
	struct slot s;
	char hdrs[256];
	int i;

	(void)state;
	setup(&f, 1, 0, 0, 0, 120000);
	declare(&f, NULL, rpm10);
	a = reserve(&f);
	assert_int_equal(answer(&f, &a, 200,
				limit_hdrs(hdrs, sizeof(hdrs), 0, 10, 9),
				fake_now, 10),
			 -1);
	a = reserve(&f); /* the proxy's level: 8 */
	assert_int_equal(answer(&f, &a, 200,
				limit_hdrs(hdrs, sizeof(hdrs), 0, 10, 7),
				fake_now, 10),
			 -1);
	for (i = 0; i < 8; i++) {
		s = reserve(&f);
		assert_slot(&s, 0, T0, SLOT_WHY_NONE);
	}
	s = reserve(&f);
	assert_slot(&s, 0, T0 + 6 * SEC, 0);

	a = reserve_rq(&f, &m2);
	assert_int_equal(answer(&f, &a, 200,
				limit_hdrs(hdrs, sizeof(hdrs), 0, 10, 9),
				fake_now, 10),
			 -1);
	a = reserve_rq(&f, &m2);
	assert_int_equal(answer(&f, &a, 200,
				limit_hdrs(hdrs, sizeof(hdrs), 0, 10, 4),
				fake_now, 10),
			 -1);
	for (i = 0; i < 4; i++) {
		s = reserve_rq(&f, &m2);
		assert_slot(&s, 0, T0, SLOT_WHY_NONE);
	}
	s = reserve_rq(&f, &m2);
	assert_slot(&s, 0, T0 + 6 * SEC, 0);
	teardown(&f);
}

/*
 * rq's model, 10 requests a minute: one answer (9 left) sets the level,
 * then b[0..n-1] are reserved: the proxy's level is 9 - n.
 */
static void
n_out(struct fixture *f, const struct sched_request *rq, struct slot *b, int n)
{
	struct slot a;
	char hdrs[256];
	int i;

	a = reserve_rq(f, rq);
	assert_int_equal(answer(f, &a, 200,
				limit_hdrs(hdrs, sizeof(hdrs), 0, 10, 9),
				fake_now, -1),
			 -1);
	for (i = 0; i < n; i++)
		b[i] = reserve_rq(f, rq);
}

/* Settles s with 10 requests a minute, rem of them left. */
static void
answer_rpm10(struct fixture *f, const struct slot *s, long long rem)
{
	char hdrs[256];

	assert_int_equal(answer(f, s, 200,
				limit_hdrs(hdrs, sizeof(hdrs), 0, 10, rem),
				fake_now, -1),
			 -1);
}

/* The level of rq's budget (10 a minute) is n: n go now, the next 6 s on. */
static void
assert_level(struct fixture *f, const struct sched_request *rq, int n)
{
	struct slot s;
	int i;

	for (i = 0; i < n; i++) {
		s = reserve_rq(f, rq);
		assert_slot(&s, 0, fake_now, SLOT_WHY_NONE);
	}
	s = reserve_rq(f, rq);
	assert_slot(&s, 0, fake_now + 6 * SEC, 0);
}

/*
 * A proxy's level below what an answer can mean (by more than the slack,
 * one request) is raised, to the remaining, only when the request was
 * alone all its life: none out when it was reserved (s_first), the only
 * one out now (b_ot its charge), none reserved after it (b_cq its cq). A
 * request reserved before it and admitted upstream after it is in
 * neither its remaining nor the later charges, even once settled. With
 * another out, or one reserved after it (settled or not), left alone.
 */
static void
test_header_raise_alone(void **state)
{
	static const long long rpm10[CONFIG_NLIMITS] = {10, 0, 0, 0, 0, 0};
	static const struct sched_request alone = {.sr_model = "alone",
						   .sr_tokens = 10};
	static const struct sched_request within = {.sr_model = "within",
						    .sr_tokens = 10};
	static const struct sched_request early = {.sr_model = "before-settled",
						   .sr_tokens = 10};
	static const struct sched_request before = {.sr_model = "before-out",
						    .sr_tokens = 10};
	static const struct sched_request after = {.sr_model = "after-out",
						   .sr_tokens = 10};
	static const struct sched_request settled = {
		.sr_model = "after-settled", .sr_tokens = 10};
	struct fixture f;
	struct slot b[8];
	int i;

	(void)state;
	setup(&f, 1, 0, 0, 0, 120000);
	declare(&f, NULL, rpm10);

	/* Those reserved before it settled first, none after: 1 raised to 6. */
	n_out(&f, &alone, b, 7);
	for (i = 0; i < 7; i++)
		assert_int_equal(answer(&f, &b[i], 200, NULL, 0, -1), -1);
	b[7] = reserve_rq(&f, &alone);
	assert_int_equal(b[7].s_first, 1);
	answer_rpm10(&f, &b[7], 6);
	assert_level(&f, &alone, 6);

	/*
	 * The same seven settled, but after it was reserved: out beside it,
	 * any may have been admitted upstream after it (not in its
	 * remaining): left at 1.
	 */
	n_out(&f, &early, b, 8);
	assert_int_equal(b[7].s_first, 0);
	for (i = 0; i < 7; i++)
		assert_int_equal(answer(&f, &b[i], 200, NULL, 0, -1), -1);
	answer_rpm10(&f, &b[7], 6);
	assert_level(&f, &early, 1);

	/* Alone, 2 left: within the slack of 1, left alone. */
	n_out(&f, &within, b, 7);
	for (i = 0; i < 7; i++)
		assert_int_equal(answer(&f, &b[i], 200, NULL, 0, -1), -1);
	b[7] = reserve_rq(&f, &within);
	assert_int_equal(b[7].s_first, 1);
	answer_rpm10(&f, &b[7], 2);
	assert_level(&f, &within, 1);

	/* The last reserved, the seven before it still out: left at 1. */
	n_out(&f, &before, b, 8);
	answer_rpm10(&f, &b[7], 6);
	assert_level(&f, &before, 1);

	/*
	 * One reserved after it, out: 9 left, 1 after, the proxy's 1 (the
	 * old rule raised it to 8): left alone.
	 */
	n_out(&f, &after, b, 8);
	for (i = 0; i < 6; i++)
		assert_int_equal(answer(&f, &b[i], 200, NULL, 0, -1), -1);
	answer_rpm10(&f, &b[6], 9);
	assert_level(&f, &after, 1);

	/* The same, the one after it settled first: the only one out, but
	 * not the last reserved: left alone. */
	n_out(&f, &settled, b, 8);
	for (i = 0; i < 6; i++)
		assert_int_equal(answer(&f, &b[i], 200, NULL, 0, -1), -1);
	assert_int_equal(answer(&f, &b[7], 200, NULL, 0, -1), -1);
	answer_rpm10(&f, &b[6], 9);
	assert_level(&f, &settled, 1);
	teardown(&f);
}

/*
 * Lowering needs no request alone: a proxy's level above what the answer
 * can mean (by more than the slack) is set to its lower end, remaining
 * less the requests reserved after this one, with others out or not.
 */
static void
test_header_lower_not_alone(void **state)
{
	static const long long rpm10[CONFIG_NLIMITS] = {10, 0, 0, 0, 0, 0};
	static const struct sched_request before = {.sr_model = "before-out",
						    .sr_tokens = 10};
	static const struct sched_request after = {.sr_model = "after-out",
						   .sr_tokens = 10};
	static const struct sched_request alone = {.sr_model = "alone",
						   .sr_tokens = 10};
	struct fixture f;
	struct slot b[2];

	(void)state;
	setup(&f, 1, 0, 0, 0, 120000);
	declare(&f, NULL, rpm10);

	/* The proxy's 7; one reserved before it, out; 3 left: set to 3. */
	n_out(&f, &before, b, 2);
	answer_rpm10(&f, &b[1], 3);
	assert_level(&f, &before, 3);

	/* One reserved after it, out; 4 left: set to 4 - 1. */
	n_out(&f, &after, b, 2);
	answer_rpm10(&f, &b[0], 4);
	assert_level(&f, &after, 3);

	/* Alone (the one before it settled); 3 left: set to 3. */
	n_out(&f, &alone, b, 2);
	assert_int_equal(answer(&f, &b[0], 200, NULL, 0, -1), -1);
	answer_rpm10(&f, &b[1], 3);
	assert_level(&f, &alone, 3);
	teardown(&f);
}

/*
 * The correction allows for the tokens given back after the request was
 * admitted (its slot), from the ring of recent give-backs, and not for
 * those that came back before, while it waited for its slot.
 */
static void
test_header_correction_refunds(void **state)
{
	static const long long tpm[CONFIG_NLIMITS] = {0, 60000, 0, 0, 0, 0};
	static const struct sched_request rq = {.sr_model = "model",
						.sr_tokens = 1000};
	static const struct sched_request all = {.sr_model = "model",
						 .sr_tokens = 60000};
	struct fixture f;
	struct slot b;
	struct slot c;
	struct slot d;
	struct slot s;
	char hdrs[256];

	(void)state;
	setup(&f, 1, 2000, 0, 0, 120000);
	declare(&f, NULL, tpm);
	c = reserve_rq(&f, &rq);
	d = reserve_rq(&f, &rq);
	b = reserve_rq(&f, &rq);
	assert_int_equal(b.s_deadline_ns, T0 + 4 * SEC);
	fake_now = T0 + 1 * SEC;
	assert_int_equal(answer(&f, &c, 200, NULL, 0, 0), -1);
	fake_now = T0 + 5 * SEC;
	assert_int_equal(answer(&f, &d, 200, NULL, 0, 0), -1);
	/*
	 * b admitted at T0 + 4 s with 10000 left, refilled by 2000 since;
	 * d's 1000 came back after that (c's before): 13000.
	 */
	fake_now = T0 + 6 * SEC;
	/* Its headers came at its slot: the refill counts from there. */
	assert_int_equal(answer(&f, &b, 200,
				limit_hdrs(hdrs, sizeof(hdrs), 1, 60000, 10000),
				b.s_deadline_ns, -1),
			 -1);
	s = reserve_rq(&f, &all);
	assert_slot(&s, 0, T0 + 53 * SEC, 1);
	teardown(&f);
}

/*
 * The real usage settles the charge: 600 estimated, 100 used, so 500
 * come back and the next 600 go at once.
 */
static void
test_usage_refund(void **state)
{
	static const long long tpm[CONFIG_NLIMITS] = {0, 1000, 0, 0, 0, 0};
	static const struct sched_request rq = {.sr_model = "model",
						.sr_tokens = 600};
	struct fixture f;
	struct slot a;
	struct slot s;

	(void)state;
	setup(&f, 1, 0, 0, 0, 120000);
	declare(&f, NULL, tpm);
	a = reserve_rq(&f, &rq);
	assert_int_equal(reserve_rq(&f, &rq).s_key, SLOT_POLL);
	assert_int_equal(answer(&f, &a, 200, NULL, 0, 100), -1);
	a = reserve_rq(&f, &rq);
	assert_slot(&a, 0, T0, SLOT_WHY_NONE);
	assert_int_equal(a.s_ct, 1200);
	assert_int_equal(a.s_rt, 500);
	assert_int_equal(reserve_rq(&f, &rq).s_key, SLOT_POLL);
	assert_int_equal(answer(&f, &a, 200, NULL, 0, 600), -1);
	s = reserve_rq(&f, &rq);
	assert_slot(&s, 0, T0 + 18 * SEC, 1);
	teardown(&f);
}

/*
 * A probe's headers settle when they come ("headers"), its usage when it
 * ends ("usage"): 400 of 1000 left, then 500 of the 600 charged come
 * back. Its charge is out until the usage.
 */
static void
test_probe_usage(void **state)
{
	static const struct sched_request rq = {.sr_model = "model",
						.sr_tokens = 600};
	struct fixture f;
	struct sched_outcome o;
	struct hdr_limit lim[HDR_NLIMITS];
	struct slot p;
	struct slot s;
	char hdrs[256];

	(void)state;
	setup(&f, 1, 0, 0, 0, 120000);
	no_limits(&f);
	p = reserve_rq(&f, &rq);
	assert_int_equal(p.s_probe, 1);
	memset(&o, 0, sizeof(o));
	o.so_mode = SETTLE_HEADERS;
	o.so_status = 200;
	o.so_rest_ms = -1;
	o.so_limits =
		limits_of(limit_hdrs(hdrs, sizeof(hdrs), 1, 1000, 400), lim);
	o.so_hdr_ns = fake_now;
	o.so_used = -1;
	assert_int_equal(sched_local_settle(&f.l, &p, "headers", &o), -1);
	/* 400 left, 600 out that may come back: ask again. */
	s = reserve_rq(&f, &rq);
	assert_int_equal(s.s_key, SLOT_POLL);
	assert_int_equal(s.s_why, 1);
	o.so_mode = SETTLE_USAGE;
	o.so_limits = NULL;
	o.so_hdr_ns = 0;
	o.so_used = 100;
	assert_int_equal(sched_local_settle(&f.l, &p, "usage", &o), -1);
	s = reserve_rq(&f, &rq);
	assert_int_equal(s.s_probe, 0);
	assert_slot(&s, 0, T0, SLOT_WHY_NONE);
	assert_int_equal(answer(&f, &s, 200, NULL, 0, 600), -1);
	s = reserve_rq(&f, &rq);
	assert_slot(&s, 0, T0 + 18 * SEC, 1);
	teardown(&f);
}

/*
 * A 429: one whose headers show a limit spent names it (0..5) and the
 * budget waits for that bucket; one that shows none rests the budget
 * (8) as long as the upstream said, else KEY_COOLDOWN_MS; other models
 * go on.
 */
static void
test_429(void **state)
{
	static const long long rpm100[CONFIG_NLIMITS] = {100, 0, 0, 0, 0, 0};
	static const struct sched_request a = {.sr_model = "model-a",
					       .sr_tokens = 10};
	static const struct sched_request b = {.sr_model = "model-b",
					       .sr_tokens = 10};
	static const struct sched_request c = {.sr_model = "model-c",
					       .sr_tokens = 10};
	static const struct sched_request d = {.sr_model = "model-d",
					       .sr_tokens = 10};
	struct fixture f;
	struct sched_outcome o;
	struct hdr_limit lim[HDR_NLIMITS];
	struct slot s;
	char hdrs[256];

	(void)state;
	setup(&f, 2, 0, 0, 0, 30000);
	declare(&f, NULL, rpm100);
	f.cfg.key_cooldown_ms = 2000;
	s = reserve_rq(&f, &a);
	memset(&o, 0, sizeof(o));
	o.so_mode = SETTLE_ANSWER;
	o.so_status = 429;
	o.so_rest_ms = 5000;
	o.so_limits =
		limits_of(limit_hdrs(hdrs, sizeof(hdrs), 0, 100, 50), lim);
	o.so_hdr_ns = fake_now;
	o.so_used = -1;
	assert_int_equal(sched_local_settle(&f.l, &s, "answer", &o), 8);
	s = reserve_rq(&f, &a);
	assert_slot(&s, 1, T0 + 5 * SEC, SLOT_WHY_REST);
	s = reserve_rq(&f, &b);
	assert_slot(&s, 0, T0, SLOT_WHY_NONE);

	/* Spent: requests-minute; the next waits for one to refill. */
	s = reserve_rq(&f, &c);
	assert_int_equal(answer(&f, &s, 429,
				limit_hdrs(hdrs, sizeof(hdrs), 0, 100, 0),
				fake_now, -1),
			 0);
	s = reserve_rq(&f, &c);
	assert_int_equal(s.s_deadline_ns, T0 + 600 * MS);
	assert_int_equal(s.s_why, 0);

	/* No headers, no Retry-After: KEY_COOLDOWN_MS. */
	s = reserve_rq(&f, &d);
	assert_int_equal(answer(&f, &s, 429, NULL, 0, -1), 8);
	s = reserve_rq(&f, &d);
	assert_int_equal(s.s_deadline_ns, T0 + 2 * SEC);
	assert_int_equal(s.s_why, SLOT_WHY_REST);
	assert_int_equal(s.s_cq, 2);
	teardown(&f);
}

/*
 * A refused request was never charged upstream: the budgets its
 * answer's headers corrected already leave it out, the others (here the
 * declared requests-minute) get its charge back.
 */
static void
test_refused_charge(void **state)
{
	static const long long rpm2[CONFIG_NLIMITS] = {2, 0, 0, 0, 0, 0};
	struct fixture f;
	struct slot a;
	struct slot s;
	char hdrs[256];

	(void)state;
	setup(&f, 1, 0, 0, 0, 60000);
	declare(&f, NULL, rpm2);
	(void)reserve(&f);
	a = reserve(&f);
	assert_int_equal(answer(&f, &a, 500,
				limit_hdrs(hdrs, sizeof(hdrs), 1, 1000, 1000),
				fake_now, -1),
			 -1);
	s = reserve(&f);
	assert_slot(&s, 0, T0, SLOT_WHY_NONE);
	s = reserve(&f);
	assert_slot(&s, 0, T0 + 30 * SEC, 0);
	/* Refused without limits: every budget gets it back. */
	assert_int_equal(answer(&f, &s, 503, NULL, 0, -1), -1);
	s = reserve(&f);
	assert_slot(&s, 0, T0 + 30 * SEC, 0);
	teardown(&f);
}

/*
 * The budget table is bounded: a new budget beyond it forgets the least
 * recently used one, which probes again; so does one unused for a day.
 */
static void
test_budget_table(void **state)
{
	enum { M = 257 };
	static char names[M][24];
	static struct sched_request rq[M];
	struct fixture f;
	struct slot s;
	int i;

	(void)state;
	setup(&f, 1, 0, 0, 0, 30000);
	no_limits(&f);
	for (i = 0; i < M; i++) {
		snprintf(names[i], sizeof(names[i]), "model-%d", i);
		rq[i].sr_model = names[i];
		rq[i].sr_tokens = 10;
		fake_now += MS;
		s = reserve_rq(&f, &rq[i]);
		assert_int_equal(s.s_probe, 1);
		assert_int_equal(answer(&f, &s, 200, NULL, 0, 10), -1);
	}
	fake_now += MS;
	assert_int_equal(reserve_rq(&f, &rq[M - 1]).s_probe, 0);
	assert_int_equal(reserve_rq(&f, &rq[1]).s_probe, 0);
	assert_int_equal(reserve_rq(&f, &rq[0]).s_probe, 1);
	fake_now += 2 * 86400 * SEC;
	assert_int_equal(reserve_rq(&f, &rq[M - 1]).s_probe, 1);
	teardown(&f);
}

/* --- client limits (reserve.lua's client keys) ------------------------ */

#define CLIENT_ID  "00c0ffee00c0ffee"
#define LEASE_NS   ((int64_t)SCHED_SEAT_LEASE_MS * MS)
#define CLIENT_RQS 64

/* Request `seat` of client c (attempt `attempt`) into *rq. */
static const struct sched_request *
client_rq(struct sched_request *rq, const struct sched_client *c, int seat,
	  int attempt)
{
	memset(rq, 0, sizeof(*rq));
	rq->sr_model = "model";
	rq->sr_tokens = 10;
	rq->sr_client = c;
	snprintf(rq->sr_seat, sizeof(rq->sr_seat), "%016x",
		 0x5ea70000u + (unsigned)seat);
	rq->sr_attempt = attempt;
	return rq;
}

/* Reserves for seat `seat` of c (the request outlives the slot a while). */
static struct slot
creserve(struct fixture *f, const struct sched_client *c, int seat, int attempt)
{
	static struct sched_request rqs[CLIENT_RQS];
	static unsigned next;
	struct sched_request *rq = &rqs[next++ % CLIENT_RQS];

	return reserve_rq(f, client_rq(rq, c, seat, attempt));
}

static void
client_done(struct fixture *f, const struct sched_client *c, int seat)
{
	struct sched_request rq;

	sched_local_client_done(&f->l, client_rq(&rq, c, seat, 0));
}

/* Asserts s is a client refusal for why, waiting wait_ns. */
static void
assert_client(const struct slot *s, int why, int64_t wait_ns)
{
	if (s->s_key != SLOT_CLIENT || s->s_why != why ||
	    s->s_wait_us != wait_ns / 1000 ||
	    s->s_at_us != (fake_now + wait_ns) / 1000 ||
	    s->s_deadline_ns != fake_now + wait_ns)
		fail_msg("slot {key %d, why %d, wait %lld us, at T0%+lld ms}, "
			 "want {key %d, why %d, wait %lld us}",
			 s->s_key, s->s_why, (long long)s->s_wait_us,
			 (long long)((s->s_deadline_ns - T0) / MS), SLOT_CLIENT,
			 why, (long long)(wait_ns / 1000));
}

/*
 * The rate: a bucket of sc_rate refilling sc_rate per window,
 * continuously: three at once, the fourth refused until one refills
 * (nothing booked or charged meanwhile); a long idle bucket holds three,
 * no more.
 */
static void
test_client_rate(void **state)
{
	static const struct sched_client c = {CLIENT_ID, 3, 60000, 0};
	struct fixture f;
	struct slot s;
	int i;

	(void)state;
	setup(&f, 1, 0, 0, 0, 30000);
	for (i = 0; i < 3; i++) {
		s = creserve(&f, &c, i, 0);
		assert_slot(&s, 0, T0, SLOT_WHY_NONE);
	}
	s = creserve(&f, &c, 3, 0);
	assert_client(&s, SLOT_WHY_CLIENT_RATE, 20 * SEC);
	fake_now = T0 + 5 * SEC;
	s = creserve(&f, &c, 3, 0);
	assert_client(&s, SLOT_WHY_CLIENT_RATE, 15 * SEC);
	/* The refusals charged nothing, to the client or the budgets. */
	fake_now = T0 + 20 * SEC;
	s = creserve(&f, &c, 3, 0);
	assert_slot(&s, 0, fake_now, SLOT_WHY_NONE);
	assert_int_equal(s.s_cq, 4);
	s = creserve(&f, &c, 4, 0);
	assert_client(&s, SLOT_WHY_CLIENT_RATE, 20 * SEC);
	/* Continuously: half a refill later, half a refill to wait. */
	fake_now += 10 * SEC;
	s = creserve(&f, &c, 4, 0);
	assert_client(&s, SLOT_WHY_CLIENT_RATE, 10 * SEC);
	/* Idle for ten windows: three, no more. */
	fake_now += 600 * SEC;
	for (i = 0; i < 3; i++)
		assert_int_equal(creserve(&f, &c, 10 + i, 0).s_key, 0);
	s = creserve(&f, &c, 13, 0);
	assert_client(&s, SLOT_WHY_CLIENT_RATE, 20 * SEC);
	/* Another client has its own bucket. */
	{
		static const struct sched_client c2 = {"00000000000000b2", 3,
						       60000, 0};

		assert_int_equal(creserve(&f, &c2, 20, 0).s_key, 0);
	}
	teardown(&f);
}

/*
 * Only a first attempt that books a slot is charged: not a retry, not a
 * poll, not a refusal (SLOT_ALL_RESTING, SLOT_TOO_FAR).
 */
static void
test_client_rate_not_charged(void **state)
{
	static const struct sched_client c = {CLIENT_ID, 1, 60000, 0};
	struct fixture f;
	struct slot p;
	struct slot s;

	(void)state;
	setup(&f, 1, 200, 0, 0, 1000);
	no_limits(&f);
	/* A poll while the budget's probe is out. */
	p = reserve(&f);
	assert_int_equal(p.s_probe, 1);
	assert_int_equal(creserve(&f, &c, 0, 0).s_key, SLOT_POLL);
	assert_int_equal(creserve(&f, &c, 0, 0).s_key, SLOT_POLL);
	assert_int_equal(answer(&f, &p, 200, NULL, 0, 10), -1);
	/* Too far: the timeline is full beyond the longest wait. */
	fake_now = T0 + 10 * SEC;
	assert_int_equal(reserve(&f).s_key, 0);
	f.cfg.queue_max_wait_ms = 0;
	assert_int_equal(creserve(&f, &c, 0, 0).s_key, SLOT_TOO_FAR);
	f.cfg.queue_max_wait_ms = 1000;
	/* Every key resting beyond the longest wait. */
	sched_local_rest(&f.l, 0, 5000, 0);
	s = creserve(&f, &c, 0, 0);
	assert_int_equal(s.s_key, SLOT_ALL_RESTING);
	fake_now += 5 * SEC;
	/* Still full: the one reservation charged. */
	assert_int_equal(creserve(&f, &c, 0, 0).s_key, 0);
	s = creserve(&f, &c, 1, 0);
	assert_client(&s, SLOT_WHY_CLIENT_RATE, 60 * SEC);
	/* A retry is neither checked nor charged. */
	assert_int_equal(creserve(&f, &c, 0, 1).s_key, 0);
	s = creserve(&f, &c, 1, 0);
	assert_client(&s, SLOT_WHY_CLIENT_RATE, 60 * SEC);
	teardown(&f);
}

/*
 * Concurrency: two seats; a third request is refused (ask again in 1 s)
 * with nothing booked; a seat reserving again (a retry, a poll's next
 * call) counts once; a seat given back frees it.
 */
static void
test_client_concurrency(void **state)
{
	static const struct sched_client c = {CLIENT_ID, 0, 0, 2};
	struct fixture f;
	struct slot s;

	(void)state;
	setup(&f, 1, 200, 0, 0, 30000);
	s = creserve(&f, &c, 0, 0);
	assert_slot(&s, 0, T0, SLOT_WHY_NONE);
	s = creserve(&f, &c, 1, 0);
	assert_slot(&s, 0, T0 + 200 * MS, SLOT_WHY_SPACING);
	s = creserve(&f, &c, 2, 0);
	assert_client(&s, SLOT_WHY_CLIENT_CONC, SEC);
	/* Nothing booked: the next (no client) is right after seat 1's. */
	s = reserve(&f);
	assert_slot(&s, 0, T0 + 400 * MS, SLOT_WHY_SPACING);
	assert_int_equal(s.s_cq, 3);
	/* Seat 0 again, a retry and a first attempt: counted once. */
	assert_int_equal(creserve(&f, &c, 0, 1).s_key, 0);
	assert_int_equal(creserve(&f, &c, 0, 0).s_key, 0);
	assert_int_equal(creserve(&f, &c, 2, 0).s_key, SLOT_CLIENT);
	client_done(&f, &c, 0);
	client_done(&f, &c, 0); /* twice: no-op */
	assert_int_equal(creserve(&f, &c, 2, 0).s_key, 0);
	assert_int_equal(creserve(&f, &c, 3, 0).s_key, SLOT_CLIENT);
	client_done(&f, &c, 1);
	client_done(&f, &c, 2);
	assert_int_equal(creserve(&f, &c, 3, 0).s_key, 0);
	assert_int_equal(creserve(&f, &c, 4, 0).s_key, 0);
	teardown(&f);
}

/*
 * A seat not given back (a crashed worker's) frees itself when its
 * lease ends; each reservation or poll renews it.
 */
static void
test_client_seat_lease(void **state)
{
	static const struct sched_client c = {CLIENT_ID, 0, 0, 1};
	struct fixture f;

	(void)state;
	setup(&f, 1, 0, 0, 0, 30000);
	assert_int_equal(creserve(&f, &c, 0, 0).s_key, 0);
	fake_now = T0 + LEASE_NS - SEC;
	assert_int_equal(creserve(&f, &c, 1, 0).s_key, SLOT_CLIENT);
	assert_int_equal(creserve(&f, &c, 0, 1).s_key, 0); /* renewed */
	fake_now = T0 + LEASE_NS;
	assert_int_equal(creserve(&f, &c, 1, 0).s_key, SLOT_CLIENT);
	fake_now = T0 + 2 * LEASE_NS - SEC;
	assert_int_equal(creserve(&f, &c, 1, 0).s_key, 0);
	teardown(&f);
}

/*
 * A refused reservation (SLOT_ALL_RESTING) takes no seat; a polling
 * request holds its seat between polls (once), and keeps it if then
 * refused.
 */
static void
test_client_seats_polls_refusals(void **state)
{
	static const struct sched_client c = {CLIENT_ID, 0, 0, 1};
	struct fixture f;
	struct slot p;

	(void)state;
	setup(&f, 1, 0, 0, 0, 1000);
	sched_local_rest(&f.l, 0, 5000, 0);
	assert_int_equal(creserve(&f, &c, 0, 0).s_key, SLOT_ALL_RESTING);
	fake_now = T0 + 5 * SEC;
	assert_int_equal(creserve(&f, &c, 1, 0).s_key, 0);
	client_done(&f, &c, 1);
	/* Polls while a probe is out. */
	no_limits(&f);
	p = reserve(&f);
	assert_int_equal(p.s_probe, 1);
	assert_int_equal(creserve(&f, &c, 2, 0).s_key, SLOT_POLL);
	assert_int_equal(creserve(&f, &c, 2, 0).s_key, SLOT_POLL);
	assert_int_equal(creserve(&f, &c, 3, 0).s_key, SLOT_CLIENT);
	sched_local_rest(&f.l, 0, 5000, 0);
	assert_int_equal(creserve(&f, &c, 2, 0).s_key, SLOT_ALL_RESTING);
	assert_int_equal(creserve(&f, &c, 3, 0).s_key, SLOT_CLIENT);
	client_done(&f, &c, 2);
	assert_int_equal(creserve(&f, &c, 3, 0).s_key, SLOT_ALL_RESTING);
	teardown(&f);
}

/*
 * Over both limits the rate answers; a client without limits is no
 * client (nothing kept); a concurrency beyond the seats kept per client
 * is capped at them.
 */
static void
test_client_limits_misc(void **state)
{
	static const struct sched_client both = {CLIENT_ID, 1, 60000, 1};
	static const struct sched_client none = {"00000000000000b2", 0, 0, 0};
	static const struct sched_client many = {"00000000000000b3", 0, 0,
						 1000};
	struct fixture f;
	struct slot s;
	int i;

	(void)state;
	setup(&f, 1, 0, 0, 0, 30000);
	assert_int_equal(creserve(&f, &both, 0, 0).s_key, 0);
	s = creserve(&f, &both, 1, 0);
	assert_client(&s, SLOT_WHY_CLIENT_RATE, 60 * SEC);
	for (i = 0; i < 100; i++)
		assert_int_equal(creserve(&f, &none, i, 0).s_key, 0);
	for (i = 0; i < 64; i++)
		assert_int_equal(creserve(&f, &many, i, 0).s_key, 0);
	s = creserve(&f, &many, 64, 0);
	assert_client(&s, SLOT_WHY_CLIENT_CONC, SEC);
	teardown(&f);
}

/*
 * The client table is bounded: a client beyond it forgets the least
 * recently used one (its bucket full again); a bucket unused for a
 * window is full again anyway.
 */
static void
test_client_table(void **state)
{
	enum { N = 257 };
	static char ids[N][17];
	static struct sched_client cs[N];
	struct fixture f;
	int i;

	(void)state;
	setup(&f, 1, 0, 0, 0, 30000);
	for (i = 0; i < N; i++) {
		snprintf(ids[i], sizeof(ids[i]), "%016x", (unsigned)i);
		cs[i].sc_id = ids[i];
		cs[i].sc_rate = 1;
		cs[i].sc_window_ms = 60000;
		fake_now += MS;
		assert_int_equal(creserve(&f, &cs[i], i, 0).s_key, 0);
	}
	fake_now += MS;
	assert_int_equal(creserve(&f, &cs[N - 1], 0, 0).s_key, SLOT_CLIENT);
	assert_int_equal(creserve(&f, &cs[1], 0, 0).s_key, SLOT_CLIENT);
	assert_int_equal(creserve(&f, &cs[0], 0, 0).s_key, 0); /* forgotten */
	fake_now += 61 * SEC;
	assert_int_equal(creserve(&f, &cs[N - 1], 0, 0).s_key, 0);
	teardown(&f);
}

/*
 * The shared memory object is trusted only if this user made it: one
 * open to others, or of another size, is refused with its name, owner
 * and mode; one of ours is adopted (the same state); a size of 0 (a
 * sibling worker's, just created) is grown.
 */
static void
test_shm_trust(void **state)
{
	struct fixture f;
	struct sched_local l2;
	char errbuf[256];
	char name[64];
	char want[64];
	int fd;

	(void)state;
	setup(&f, 1, 200, 0, 0, 30000);
	/* Adopted: the second mapping sees the first's booking. */
	assert_int_equal(reserve(&f).s_deadline_ns, T0);
	assert_int_equal(sched_local_open(&l2, &f.cfg, errbuf, sizeof(errbuf)),
			 CP_OK);
	l2.sl_now = fake_clock;
	{
		struct slot s;

		sched_local_reserve(&l2, &rq_default, &s);
		assert_int_equal(s.s_deadline_ns, T0 + 200 * MS);
	}
	sched_local_close(&l2);
	sched_local_name(&f.cfg, name, sizeof(name));
	teardown(&f);

	/* Open to others: refused. */
	fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	assert_int_equal(fchmod(fd, 0644), 0);
	assert_int_equal(ftruncate(fd, (off_t)sched_local_size()), 0);
	errbuf[0] = '\0';
	assert_int_equal(sched_local_open(&l2, &f.cfg, errbuf, sizeof(errbuf)),
			 CP_ERR_IO);
	assert_null(l2.sl_state);
	assert_non_null(strstr(errbuf, name));
	assert_non_null(strstr(errbuf, "mode 0644"));
	snprintf(want, sizeof(want), "uid %ld,", (long)geteuid());
	assert_non_null(strstr(errbuf, want));
	/* Another owner: only root can make one to test. */
	if (geteuid() == 0) {
		assert_int_equal(fchmod(fd, 0600), 0);
		assert_int_equal(fchown(fd, 4242, (gid_t)-1), 0);
		assert_int_equal(
			sched_local_open(&l2, &f.cfg, errbuf, sizeof(errbuf)),
			CP_ERR_IO);
		assert_non_null(strstr(errbuf, "uid 4242,"));
		assert_int_equal(fchown(fd, 0, (gid_t)-1), 0);
	}
	/* Another size: refused. */
	assert_int_equal(fchmod(fd, 0600), 0);
	assert_int_equal(ftruncate(fd, 4096), 0);
	assert_int_equal(sched_local_open(&l2, &f.cfg, errbuf, sizeof(errbuf)),
			 CP_ERR_IO);
	assert_non_null(strstr(errbuf, name));
	assert_non_null(strstr(errbuf, "4096 bytes"));
	/* Size 0, ours: grown and used. */
	assert_int_equal(ftruncate(fd, 0), 0);
	assert_int_equal(sched_local_open(&l2, &f.cfg, errbuf, sizeof(errbuf)),
			 CP_OK);
	{
		struct stat sb;

		assert_int_equal(fstat(fd, &sb), 0);
		assert_int_equal(sb.st_size, (off_t)sched_local_size());
	}
	sched_local_close(&l2);
	close(fd);
	(void)shm_unlink(name);
}

struct spinner {
	struct fixture *sp_f;
	int sp_count[8];
};

static void *
spin(void *arg)
{
	struct spinner *sp = arg;
	struct slot s;
	int i;

	for (i = 0; i < 20000; i++) {
		sched_local_reserve(&sp->sp_f->l, &rq_default, &s);
		if (s.s_key >= 0 && s.s_key < 8)
			sp->sp_count[s.s_key]++;
	}
	return NULL;
}

/*
 * Regression: rotation is atomic. Four threads reserving at once get the
 * four keys exactly equally often; the old code read the position,
 * chose, and stored it, so two threads could take the same key.
 */
static void
test_rotation_is_atomic(void **state)
{
	struct fixture f;
	struct spinner sp[4];
	pthread_t tid[4];
	int total[4] = {0, 0, 0, 0};
	int i;
	int k;

	(void)state;
	setup(&f, 4, 0, 0, 0, 30000);
	f.l.sl_now = mono_ns; /* the real clock: shared by the threads */
	memset(sp, 0, sizeof(sp));
	for (i = 0; i < 4; i++) {
		sp[i].sp_f = &f;
		assert_int_equal(pthread_create(&tid[i], NULL, spin, &sp[i]),
				 0);
	}
	for (i = 0; i < 4; i++)
		assert_int_equal(pthread_join(tid[i], NULL), 0);
	for (i = 0; i < 4; i++)
		for (k = 0; k < 4; k++)
			total[k] += sp[i].sp_count[k];
	for (k = 0; k < 4; k++)
		if (total[k] != 20000)
			fail_msg("key %d taken %d times, want 20000 (%d %d %d "
				 "%d)",
				 k, total[k], total[0], total[1], total[2],
				 total[3]);
	teardown(&f);
}

/* The name: one per prefix and Redis URL; what --check-config shows. */
static void
test_name(void **state)
{
	struct config a;
	struct config b;
	char na[64];
	char nb[64];
	char want[32];

	(void)state;
	memset(&a, 0, sizeof(a));
	a.redis_prefix = (char *)"{cerebras-proxy}";
	a.redis_url = (char *)"redis://127.0.0.1:6379/0";
	a.redis_enabled = 1;
	b = a;
	sched_local_name(&a, na, sizeof(na));
	sched_local_name(&b, nb, sizeof(nb));
	assert_string_equal(na, nb);
	assert_int_equal(strncmp(na, "/cerebras-proxy-", 16), 0);
	assert_int_equal(strlen(na), 16 + 8 + 1 + strlen(strrchr(na, '-') + 1));
	snprintf(want, sizeof(want), "-%ld", (long)geteuid());
	assert_string_equal(strrchr(na, '-'), want);
	b.redis_prefix = (char *)"{other}";
	sched_local_name(&b, nb, sizeof(nb));
	assert_string_not_equal(na, nb);
	b = a;
	b.redis_enabled = 0;
	sched_local_name(&b, nb, sizeof(nb));
	assert_string_not_equal(na, nb);
}

static int64_t fake_day = 20000;

static int64_t
fake_today(void)
{
	return fake_day;
}

/* sched_local_inspect into v (keys: the caller's, nkeys of them). */
static void
inspect(struct fixture *f, struct sched_view *v, struct sched_key_view *keys)
{
	memset(v, 0, sizeof(*v));
	v->sv_nkeys = f->cfg.nkeys;
	v->sv_keys = keys;
	sched_local_inspect(&f->l, v);
}

/*
 * What settle records per key for the inspection (settle.lua's s<i>,
 * r<i> and the day's counts; rest.lua's d<i>): each answer counted on its
 * key, tokens from the usage, the last status, a disablement apart from a
 * rest, a 429's cooling until its budget admits again, and the counts
 * starting again on a new (UTC) day.
 */
static void
test_inspect_keys(void **state)
{
	struct fixture f;
	struct sched_view *v = calloc(1, sizeof(*v));
	struct sched_key_view keys[3];
	struct sched_outcome o;
	struct slot s;

	(void)state;
	assert_non_null(v);
	setup(&f, 3, 0, 0, 0, 30000);
	f.l.sl_day = fake_today;
	inspect(&f, v, keys);
	assert_int_equal(keys[0].kv_state, KEY_STATE_OK);
	assert_int_equal(keys[0].kv_requests, 0);
	assert_int_equal(keys[0].kv_last_status, 0);
	assert_int_equal(v->sv_depth_ms, 0);

	s = reserve(&f); /* key 0: 200, 42 tokens */
	assert_int_equal(s.s_key, 0);
	answer(&f, &s, 200, NULL, 0, 42);
	s = reserve(&f); /* key 1: refused, disabled as sched_settle does */
	assert_int_equal(s.s_key, 1);
	answer(&f, &s, 401, NULL, 0, -1);
	sched_local_rest(&f.l, 1, 5000, 1);
	s = reserve(&f); /* key 2: a 429 that rests its budget 3 s */
	assert_int_equal(s.s_key, 2);
	memset(&o, 0, sizeof(o));
	o.so_mode = SETTLE_ANSWER;
	o.so_status = 429;
	o.so_rest_ms = 3000;
	o.so_used = -1;
	assert_int_equal(sched_local_settle(&f.l, &s, "answer", &o),
			 SLOT_WHY_REST);
	s = reserve(&f); /* key 0 again, never sent: counts nothing */
	assert_int_equal(s.s_key, 0);
	release(&f, &s);

	inspect(&f, v, keys);
	assert_int_equal(keys[0].kv_state, KEY_STATE_OK);
	assert_int_equal(keys[0].kv_last_status, 200);
	assert_int_equal(keys[0].kv_requests, 1);
	assert_int_equal(keys[0].kv_tokens, 42);
	assert_int_equal(keys[1].kv_state, KEY_STATE_DISABLED);
	assert_int_equal(keys[1].kv_until_ms, 5000);
	assert_int_equal(keys[1].kv_last_status, 401);
	assert_int_equal(keys[1].kv_requests, 1);
	assert_int_equal(keys[1].kv_tokens, 0);
	assert_int_equal(keys[2].kv_state, KEY_STATE_RESTING);
	assert_int_equal(keys[2].kv_until_ms, 3000);
	assert_int_equal(keys[2].kv_last_status, 429);

	/* A plain rest is resting, not disabled. */
	sched_local_rest(&f.l, 0, 700, 0);
	fake_now += 1000 * MS;
	inspect(&f, v, keys);
	assert_int_equal(keys[0].kv_state,
			 KEY_STATE_OK); /* its 700 ms passed */
	assert_int_equal(keys[1].kv_until_ms, 4000);
	assert_int_equal(keys[2].kv_until_ms, 2000);
	sched_local_rest(&f.l, 0, 700, 0);
	inspect(&f, v, keys);
	assert_int_equal(keys[0].kv_state, KEY_STATE_RESTING);
	assert_int_equal(keys[0].kv_until_ms, 700);

	/* Over: usable again, the last status kept. */
	fake_now += 6000 * MS;
	inspect(&f, v, keys);
	assert_int_equal(keys[1].kv_state, KEY_STATE_OK);
	assert_int_equal(keys[2].kv_state, KEY_STATE_OK);
	assert_int_equal(keys[1].kv_last_status, 401);

	/* A new day: counted from zero. */
	fake_day++;
	inspect(&f, v, keys);
	assert_int_equal(keys[0].kv_requests, 0);
	assert_int_equal(keys[0].kv_tokens, 0);
	s = reserve(&f);
	answer(&f, &s, 200, NULL, 0, 5);
	inspect(&f, v, keys);
	assert_int_equal(keys[s.s_key].kv_requests, 1);
	assert_int_equal(keys[s.s_key].kv_tokens, 5);
	teardown(&f);
	free(v);
}

/*
 * The budgets and the timeline's depth: each known limit of each live
 * budget with its level now and its cap; the last booked slot's distance.
 */
static void
test_inspect_budgets_and_depth(void **state)
{
	static const long long caps[CONFIG_NLIMITS] = {10, 0, 0, 0, 0, 1000};
	struct fixture f;
	struct sched_view *v = calloc(1, sizeof(*v));
	struct sched_key_view keys[2];
	struct sched_budget_view *bv;
	struct slot s;
	int i;

	(void)state;
	assert_non_null(v);
	setup(&f, 2, 200, 0, 0, 30000);
	declare(&f, NULL, caps);
	for (i = 0; i < 3; i++)
		s = reserve(&f);
	inspect(&f, v, keys);
	/* Three slots booked 200 ms apart from now: the last 400 ms ahead. */
	assert_int_equal(v->sv_depth_ms, 400);
	assert_int_equal(v->sv_nbudgets, 2);
	bv = &v->sv_budgets[0];
	assert_int_equal(bv->bv_org, 0);
	assert_string_equal(bv->bv_model, "model");
	assert_int_equal(bv->bv_limit, 0);
	assert_int_equal(bv->bv_cap, 10);
	/* 3 requests charged, the latest at +400 ms: 7 left, less a bit. */
	assert_true(bv->bv_level == 6 || bv->bv_level == 7);
	bv = &v->sv_budgets[1];
	assert_int_equal(bv->bv_limit, 5);
	assert_int_equal(bv->bv_cap, 1000);
	assert_true(bv->bv_level >= 969 && bv->bv_level <= 970);
	(void)s;
	teardown(&f);
	free(v);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rotation_and_spacing),
		cmocka_unit_test(test_no_spacing),
		cmocka_unit_test(test_rests),
		cmocka_unit_test(test_queue_bound),
		cmocka_unit_test(test_release),
		cmocka_unit_test(test_key_scope),
		cmocka_unit_test(test_key_scope_floor),
		cmocka_unit_test(test_key_scope_invariants),
		cmocka_unit_test(test_timeline_full),
		cmocka_unit_test(test_probe),
		cmocka_unit_test(test_probe_per_org),
		cmocka_unit_test(test_declared_skips_probe),
		cmocka_unit_test(test_requests_minute),
		cmocka_unit_test(test_tokens_pacing),
		cmocka_unit_test(test_day_spent),
		cmocka_unit_test(test_models_independent),
		cmocka_unit_test(test_orgs),
		cmocka_unit_test(test_header_correction),
		cmocka_unit_test(test_header_band),
		cmocka_unit_test(test_header_raise_alone),
		cmocka_unit_test(test_header_lower_not_alone),
		cmocka_unit_test(test_header_correction_refunds),
		cmocka_unit_test(test_usage_refund),
		cmocka_unit_test(test_probe_usage),
		cmocka_unit_test(test_429),
		cmocka_unit_test(test_refused_charge),
		cmocka_unit_test(test_budget_table),
		cmocka_unit_test(test_rotation_is_atomic),
		cmocka_unit_test(test_name),
		cmocka_unit_test(test_client_rate),
		cmocka_unit_test(test_client_rate_not_charged),
		cmocka_unit_test(test_client_concurrency),
		cmocka_unit_test(test_client_seat_lease),
		cmocka_unit_test(test_client_seats_polls_refusals),
		cmocka_unit_test(test_client_limits_misc),
		cmocka_unit_test(test_client_table),
		cmocka_unit_test(test_shm_trust),
		cmocka_unit_test(test_inspect_keys),
		cmocka_unit_test(test_inspect_budgets_and_depth),
	};

	return cmocka_run_group_tests_name("test_sched_local", tests, NULL,
					   NULL);
}
