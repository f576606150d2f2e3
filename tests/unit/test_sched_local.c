/*
 * test_sched_local.c - the per-host scheduler on an injected clock: the
 * same rotation, spacing, rests, queue bound and release as reserve.lua
 * (tests/redis/ checks the script itself against Redis).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>

#include <cmocka.h>

#include "sched_local.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "unit.h"

#define MS 1000000LL /* ns */
#define T0 (1000 * 1000 * MS)

static int64_t fake_now;

static int64_t
fake_clock(void)
{
	return fake_now;
}

struct fixture {
	struct config cfg;
	struct sched_local l;
	char prefix[64];
};

/* A fresh shared state (its own name) on the fake clock at T0. */
static void
setup(struct fixture *f, int nkeys, long iv_ms, int per_key, long floor_ms,
      long max_wait_ms)
{
	static int serial;
	char errbuf[128];
	char name[64];

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

static struct slot
reserve(struct fixture *f)
{
	struct slot s;

	sched_local_reserve(&f->l, &s);
	assert_int_equal(s.s_local, 1);
	return s;
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
		assert_int_equal(s.s_key, want_key[i]);
		assert_int_equal(s.s_deadline_ns, T0 + (int64_t)i * 200 * MS);
		assert_int_equal(s.s_wait_us, (int64_t)i * 200 * 1000);
		assert_int_equal(s.s_at_us, s.s_deadline_ns / 1000);
	}
	/* Later on, a free timeline gives "now". */
	fake_now = T0 + 10000 * MS;
	s = reserve(&f);
	assert_int_equal(s.s_key, 2);
	assert_int_equal(s.s_deadline_ns, fake_now);
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
		assert_int_equal(s.s_key, i % 2);
		assert_int_equal(s.s_deadline_ns, T0);
	}
	teardown(&f);
}

/* Resting keys are skipped; a rest is only ever lengthened. */
static void
test_rests(void **state)
{
	struct fixture f;
	struct slot s;

	(void)state;
	setup(&f, 3, 0, 0, 0, 30000);
	sched_local_rest(&f.l, 1, 5000);
	sched_local_rest(&f.l, 1, 1000); /* shorter: ignored */
	assert_int_equal(reserve(&f).s_key, 0);
	assert_int_equal(reserve(&f).s_key, 2);
	assert_int_equal(reserve(&f).s_key, 0);
	sched_local_rest(&f.l, 0, 3000);
	sched_local_rest(&f.l, 2, 4000);
	s = reserve(&f);
	assert_int_equal(s.s_key, SLOT_ALL_RESTING);
	assert_int_equal(s.s_wait_us, 3000 * 1000); /* key 0 is back first */
	fake_now = T0 + 3000 * MS;
	assert_int_equal(reserve(&f).s_key, 0);
	fake_now = T0 + 5000 * MS;
	assert_int_equal(reserve(&f).s_key, 1);
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
	assert_int_equal(s.s_wait_us, 600 * 1000);
	s = reserve(&f);
	assert_int_equal(s.s_key, SLOT_TOO_FAR);
	/* Nothing was taken: the next slot is still T0 + 600. */
	fake_now = T0 + 100 * MS;
	s = reserve(&f);
	assert_int_equal(s.s_key, 1);
	assert_int_equal(s.s_deadline_ns, T0 + 600 * MS);
	teardown(&f);
}

/* Only the last slot of a timeline can be given back. */
static void
test_release(void **state)
{
	struct fixture f;
	struct slot a;
	struct slot b;

	(void)state;
	setup(&f, 2, 200, 0, 0, 30000);
	a = reserve(&f);
	b = reserve(&f);
	sched_local_release(&f.l, &a); /* not the last: nothing moves */
	assert_int_equal(reserve(&f).s_deadline_ns, T0 + 400 * MS);
	b = reserve(&f);
	assert_int_equal(b.s_deadline_ns, T0 + 600 * MS);
	sched_local_release(&f.l, &b);
	assert_int_equal(reserve(&f).s_deadline_ns, T0 + 600 * MS);
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
		assert_int_equal(s.s_key, i);
		assert_int_equal(s.s_deadline_ns, T0);
	}
	s = reserve(&f);
	assert_int_equal(s.s_key, 0);
	assert_int_equal(s.s_deadline_ns, T0 + 1000 * MS);
	fake_now = T0 + 500 * MS;
	s = reserve(&f);
	assert_int_equal(s.s_key, 1);
	assert_int_equal(s.s_deadline_ns, T0 + 1000 * MS);
	teardown(&f);
}

/*
 * Regression: in key scope the global floor is kept from the slot
 * actually given (slot + floor, as reserve.lua does), also when a key's
 * own timeline pushed that slot late. The old per-host code moved the
 * floor timeline from its own value, so a key back from a rest could be
 * sent 200 ms after another here, under a 400 ms floor.
 */
static void
test_key_scope_floor(void **state)
{
	struct fixture f;
	struct slot s[4];
	int i;

	(void)state;
	setup(&f, 3, 1000, 1, 400, 30000);
	sched_local_rest(&f.l, 2, 50);
	for (i = 0; i < 3; i++)
		s[i] = reserve(&f);
	assert_int_equal(s[0].s_deadline_ns, T0);
	assert_int_equal(s[1].s_deadline_ns, T0 + 400 * MS);
	assert_int_equal(s[2].s_key, 0);
	assert_int_equal(s[2].s_deadline_ns, T0 + 1000 * MS);
	fake_now = T0 + 60 * MS; /* key 2 is back */
	s[3] = reserve(&f);
	assert_int_equal(s[3].s_deadline_ns, T0 + 1400 * MS);
	/* Giving that slot back moves the floor back too. */
	sched_local_release(&f.l, &s[3]);
	assert_int_equal(reserve(&f).s_deadline_ns, T0 + 1400 * MS);
	teardown(&f);
}

/*
 * Key scope with a floor, random arrival times, rests and releases:
 * every two slots handed out (and not given back) are a floor apart,
 * and the slots of one key an interval apart.
 */
static void
test_key_scope_invariants(void **state)
{
	enum { N = 3000, KEYS = 4 };
	static int64_t at[N];
	static int key[N];
	struct fixture f;
	struct slot s;
	uint32_t rnd = 12345;
	int64_t at0;
	int n = 0;
	int i;
	int j;

	(void)state;
	setup(&f, KEYS, 700, 1, 150, 3600000);
	for (i = 0; i < N; i++) {
		rnd = rnd * 1103515245u + 12345u;
		fake_now += (int64_t)(rnd >> 16) % 400 * MS;
		if ((rnd >> 8) % 17 == 0)
			sched_local_rest(&f.l, (int)(rnd >> 4) % KEYS,
					 (long)(rnd >> 12) % 3000);
		s = reserve(&f);
		if (s.s_key < 0)
			continue;
		if ((rnd >> 10) % 11 == 0) {
			/* The last slot goes back, and to the next taker. */
			sched_local_release(&f.l, &s);
			at0 = s.s_deadline_ns;
			s = reserve(&f);
			if (s.s_deadline_ns != at0)
				fail_msg("a released slot was not reused");
		}
		at[n] = s.s_deadline_ns;
		key[n] = s.s_key;
		n++;
	}
	assert_true(n > N / 2);
	for (i = 0; i < n; i++) {
		for (j = i + 1; j < n && j < i + 50; j++) {
			int64_t gap =
				at[j] > at[i] ? at[j] - at[i] : at[i] - at[j];

			if (gap < 150 * MS)
				fail_msg("slots %d and %d are %lld ms apart", i,
					 j, (long long)(gap / MS));
			if (key[i] == key[j] && gap < 700 * MS)
				fail_msg(
					"key %d: slots %d and %d %lld ms apart",
					key[i], i, j, (long long)(gap / MS));
		}
	}
	teardown(&f);
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
		sched_local_reserve(&sp->sp_f->l, &s);
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
		cmocka_unit_test(test_rotation_is_atomic),
		cmocka_unit_test(test_name),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
