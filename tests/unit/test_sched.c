/*
 * test_sched.c - decoding the reservation script's reply from hand-built
 * hiredis replies, what the scripts' text relies on, and the clock sync.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>

#include <cmocka.h>

#include "sched_redis.h"

#include <stdio.h>
#include <string.h>

#include "unit.h"

/* A reply element as the table describes it. */
struct elem {
	int type;
	long long integer;
	const char *str;
};

#define INT(n)                                                                 \
	{                                                                      \
		REDIS_REPLY_INTEGER, (n), NULL                                 \
	}
#define STR(s)                                                                 \
	{                                                                      \
		REDIS_REPLY_STRING, 0, (s)                                     \
	}
#define NIL                                                                    \
	{                                                                      \
		REDIS_REPLY_NIL, 0, NULL                                       \
	}

#define AT 1795670190744031LL

/*
 * reserve.lua's replies: {key, wait, at, why, probe, cq, ct, rt, first}
 * for a reserved key (>= 0), {key, wait, at, why} for SLOT_ALL_RESTING
 * (-1), SLOT_TOO_FAR (-2), SLOT_POLL (-3: why 9, a probe, or a budget
 * 0..5), why in -1..9; SLOT_CLIENT (-4) with why 10 (the client's rate)
 * or 11 (its requests in flight), and only it.
 */
struct decode_case {
	const char *desc;
	int nkeys;
	size_t nelem;
	struct elem e[9];
	int ret;
	/* when ret == 0: */
	int key;
	int64_t wait_us;
	int64_t at_us;
	int why;
	int probe;
	long long cq, ct, rt;
};

/* A reserved reply's nine integers (first: 1, s_first checked). */
#define RESERVED(key, wait, at, why, probe, cq, ct, rt)                        \
	{                                                                      \
		INT(key), INT(wait), INT(at), INT(why), INT(probe), INT(cq),   \
			INT(ct), INT(rt), INT(1)                               \
	}

static const struct decode_case decode_cases[] = {
	{"reserved", 2, 9, RESERVED(1, 200000, AT, 6, 0, 5, 5000, 120), 0, 1,
	 200000, AT, 6, 0, 5, 5000, 120},
	{"probe, sent at once", 1, 9, RESERVED(0, 0, AT, -1, 1, 1, 600, 0), 0,
	 0, 0, AT, -1, 1, 1, 600, 0},
	{"last key", 256, 9, RESERVED(255, 5, AT, 0, 0, 1, 1, 1), 0, 255, 5, AT,
	 0, 0, 1, 1, 1},
	{"long wait, tokens-day", 3, 9,
	 RESERVED(2, 3600000000LL, AT, 5, 0, 9, 90000000000LL, 7), 0, 2,
	 3600000000LL, AT, 5, 0, 9, 90000000000LL, 7},
	{"probe why is the top of the range", 2, 9,
	 RESERVED(0, 0, AT, 9, 0, 1, 1, 0), 0, 0, 0, AT, 9, 0, 1, 1, 0},
	/* Nothing reserved: four elements. */
	{"all disabled",
	 2,
	 4,
	 {INT(-1), INT(5000000), INT(AT), INT(7)},
	 0,
	 -1,
	 5000000,
	 AT,
	 7,
	 0,
	 0,
	 0,
	 0},
	{"requests-day spent",
	 2,
	 4,
	 {INT(-1), INT(43200000000LL), INT(AT), INT(4)},
	 0,
	 -1,
	 43200000000LL,
	 AT,
	 4,
	 0,
	 0,
	 0,
	 0},
	{"too far",
	 2,
	 4,
	 {INT(-2), INT(40000000), INT(AT), INT(6)},
	 0,
	 -2,
	 40000000,
	 AT,
	 6,
	 0,
	 0,
	 0,
	 0},
	{"poll: a probe is out",
	 2,
	 4,
	 {INT(-3), INT(50000), INT(0), INT(9)},
	 0,
	 -3,
	 50000,
	 0,
	 9,
	 0,
	 0,
	 0,
	 0},
	{"poll: tokens out may come back",
	 2,
	 4,
	 {INT(-3), INT(200000), INT(0), INT(1)},
	 0,
	 -3,
	 200000,
	 0,
	 1,
	 0,
	 0,
	 0,
	 0},
	{"client rate",
	 2,
	 4,
	 {INT(-4), INT(20000000), INT(AT), INT(10)},
	 0,
	 -4,
	 20000000,
	 AT,
	 10,
	 0,
	 0,
	 0,
	 0},
	{"client concurrency",
	 2,
	 4,
	 {INT(-4), INT(1000000), INT(AT), INT(11)},
	 0,
	 -4,
	 1000000,
	 AT,
	 11,
	 0,
	 0,
	 0,
	 0},
	/* Malformed. */
	{"key below SLOT_CLIENT",
	 2,
	 4,
	 {INT(-5), INT(1000000), INT(AT), INT(11)},
	 -1,
	 0,
	 0,
	 0,
	 0,
	 0,
	 0,
	 0,
	 0},
	{"client with a budget's why",
	 2,
	 4,
	 {INT(-4), INT(1000000), INT(AT), INT(0)},
	 -1,
	 0,
	 0,
	 0,
	 0,
	 0,
	 0,
	 0,
	 0},
	{"client why above 11",
	 2,
	 4,
	 {INT(-4), INT(1000000), INT(AT), INT(12)},
	 -1,
	 0,
	 0,
	 0,
	 0,
	 0,
	 0,
	 0,
	 0},
	{"client why on a poll",
	 2,
	 4,
	 {INT(-3), INT(50000), INT(0), INT(11)},
	 -1,
	 0,
	 0,
	 0,
	 0,
	 0,
	 0,
	 0,
	 0},
	{"client why on a reservation", 2, 9,
	 RESERVED(0, 0, AT, 10, 0, 1, 1, 0), -1, 0, 0, 0, 0, 0, 0, 0, 0},
	{"client, negative wait",
	 2,
	 4,
	 {INT(-4), INT(-1), INT(AT), INT(10)},
	 -1,
	 0,
	 0,
	 0,
	 0,
	 0,
	 0,
	 0,
	 0},
	{"client, string why",
	 2,
	 4,
	 {INT(-4), INT(1000000), INT(AT), STR("11")},
	 -1,
	 0,
	 0,
	 0,
	 0,
	 0,
	 0,
	 0,
	 0},
	{"empty array", 2, 0, {INT(0)}, -1, 0, 0, 0, 0, 0, 0, 0, 0},
	{"two elements",
	 2,
	 2,
	 {INT(1), INT(200000)},
	 -1,
	 0,
	 0,
	 0,
	 0,
	 0,
	 0,
	 0,
	 0},
	{"three elements (the old reply)",
	 2,
	 3,
	 {INT(1), INT(200000), INT(AT)},
	 -1,
	 0,
	 0,
	 0,
	 0,
	 0,
	 0,
	 0,
	 0},
	{"reserved with four elements",
	 2,
	 4,
	 {INT(1), INT(0), INT(AT), INT(-1)},
	 -1,
	 0,
	 0,
	 0,
	 0,
	 0,
	 0,
	 0,
	 0},
	{"reserved with seven elements",
	 2,
	 7,
	 {INT(1), INT(0), INT(AT), INT(-1), INT(0), INT(1), INT(1)},
	 -1,
	 0,
	 0,
	 0,
	 0,
	 0,
	 0,
	 0,
	 0},
	{"poll with three elements",
	 2,
	 3,
	 {INT(-3), INT(50000), INT(0)},
	 -1,
	 0,
	 0,
	 0,
	 0,
	 0,
	 0,
	 0,
	 0},
	{"string key",
	 2,
	 8,
	 {STR("1"), INT(0), INT(AT), INT(-1), INT(0), INT(1), INT(1), INT(0)},
	 -1,
	 0,
	 0,
	 0,
	 0,
	 0,
	 0,
	 0,
	 0},
	{"string wait",
	 2,
	 4,
	 {INT(-1), STR("0"), INT(AT), INT(7)},
	 -1,
	 0,
	 0,
	 0,
	 0,
	 0,
	 0,
	 0,
	 0},
	{"string at",
	 2,
	 8,
	 {INT(1), INT(0), STR("1795670190744031"), INT(-1), INT(0), INT(1),
	  INT(1), INT(0)},
	 -1,
	 0,
	 0,
	 0,
	 0,
	 0,
	 0,
	 0,
	 0},
	{"string why",
	 2,
	 4,
	 {INT(-2), INT(0), INT(AT), STR("6")},
	 -1,
	 0,
	 0,
	 0,
	 0,
	 0,
	 0,
	 0,
	 0},
	{"string probe",
	 2,
	 8,
	 {INT(1), INT(0), INT(AT), INT(-1), STR("1"), INT(1), INT(1), INT(0)},
	 -1,
	 0,
	 0,
	 0,
	 0,
	 0,
	 0,
	 0,
	 0},
	{"nil rt",
	 2,
	 8,
	 {INT(1), INT(0), INT(AT), INT(-1), INT(0), INT(1), INT(1), NIL},
	 -1,
	 0,
	 0,
	 0,
	 0,
	 0,
	 0,
	 0,
	 0},
	{"nil wait",
	 2,
	 8,
	 {INT(1), NIL, INT(AT), INT(-1), INT(0), INT(1), INT(1), INT(0)},
	 -1,
	 0,
	 0,
	 0,
	 0,
	 0,
	 0,
	 0,
	 0},
	{"key == nkeys", 2, 9, RESERVED(2, 0, AT, -1, 0, 1, 1, 0), -1, 0, 0, 0,
	 0, 0, 0, 0, 0},
	{"key > nkeys", 2, 9, RESERVED(7, 0, AT, -1, 0, 1, 1, 0), -1, 0, 0, 0,
	 0, 0, 0, 0, 0},
	{"huge key", 2, 9, RESERVED(4294967297LL, 0, AT, -1, 0, 1, 1, 0), -1, 0,
	 0, 0, 0, 0, 0, 0, 0},
	{"SLOT_CLIENT with the probe's why",
	 2,
	 4,
	 {INT(-4), INT(0), INT(AT), INT(9)},
	 -1,
	 0,
	 0,
	 0,
	 0,
	 0,
	 0,
	 0,
	 0},
	{"negative wait", 2, 9, RESERVED(0, -1, AT, -1, 0, 1, 1, 0), -1, 0, 0,
	 0, 0, 0, 0, 0, 0},
	{"why below -1", 2, 9, RESERVED(0, 0, AT, -2, 0, 1, 1, 0), -1, 0, 0, 0,
	 0, 0, 0, 0, 0},
	{"why above 9",
	 2,
	 4,
	 {INT(-1), INT(0), INT(AT), INT(10)},
	 -1,
	 0,
	 0,
	 0,
	 0,
	 0,
	 0,
	 0,
	 0},
	{"eight elements (an older script)",
	 2,
	 8,
	 {INT(0), INT(0), INT(AT), INT(-1), INT(0), INT(1), INT(1), INT(0)},
	 -1,
	 0,
	 0,
	 0,
	 0,
	 0,
	 0,
	 0,
	 0},
	{"no keys", 0, 9, RESERVED(0, 0, AT, -1, 0, 1, 1, 0), -1, 0, 0, 0, 0, 0,
	 0, 0, 0},
};

/* Builds r (an array of nelem replies) from e; str points into strs. */
static void
build(redisReply *r, redisReply *elems, redisReply **ptrs, char strs[][32],
      const struct elem *e, size_t nelem)
{
	size_t i;

	memset(r, 0, sizeof(*r));
	r->type = REDIS_REPLY_ARRAY;
	r->elements = nelem;
	r->element = nelem > 0 ? ptrs : NULL;
	for (i = 0; i < nelem; i++) {
		memset(&elems[i], 0, sizeof(elems[i]));
		elems[i].type = e[i].type;
		elems[i].integer = e[i].integer;
		if (e[i].str != NULL) {
			snprintf(strs[i], sizeof(strs[i]), "%s", e[i].str);
			elems[i].str = strs[i];
			elems[i].len = strlen(strs[i]);
		}
		ptrs[i] = &elems[i];
	}
}

static void
test_sched_redis_decode(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < NELEM(decode_cases); i++) {
		const struct decode_case *t = &decode_cases[i];
		redisReply r;
		redisReply elems[9];
		redisReply *ptrs[9];
		char strs[9][32];
		struct slot s;
		char errbuf[256];
		int ret;

		build(&r, elems, ptrs, strs, t->e, t->nelem);
		memset(&s, 0, sizeof(s));
		s.s_key = -42;
		errbuf[0] = '\0';
		ret = sched_redis_decode(&r, t->nkeys, &s, errbuf,
					 sizeof(errbuf));
		if ((ret != 0) != (t->ret != 0))
			fail_msg("row %zu (%s): returned %d, want %d", i,
				 t->desc, ret, t->ret);
		if (ret == 0) {
			/* For key < 0, the last four stay as they were (0). */
			if (s.s_key != t->key || s.s_wait_us != t->wait_us ||
			    s.s_at_us != t->at_us || s.s_why != t->why ||
			    s.s_probe != t->probe || s.s_cq != t->cq ||
			    s.s_ct != t->ct || s.s_rt != t->rt ||
			    s.s_first != (s.s_key >= 0))
				fail_msg("row %zu (%s): got {%d, %lld, %lld, "
					 "%d, %d, %lld, %lld, %lld}",
					 i, t->desc, s.s_key,
					 (long long)s.s_wait_us,
					 (long long)s.s_at_us, s.s_why,
					 s.s_probe, s.s_cq, s.s_ct, s.s_rt);
		} else {
			if (errbuf[0] == '\0')
				fail_msg("row %zu (%s): no reason in errbuf", i,
					 t->desc);
			if (s.s_key != -42)
				fail_msg("row %zu (%s): slot written on "
					 "failure",
					 i, t->desc);
		}
	}
}

/* Replies that are not arrays at all. */
static void
test_sched_decode_not_array(void **state)
{
	static const int types[] = {
		REDIS_REPLY_INTEGER,
		REDIS_REPLY_NIL,
		REDIS_REPLY_STATUS,
		REDIS_REPLY_STRING,
	};
	char text[] = "OK";
	redisReply r;
	struct slot s;
	char errbuf[128];
	size_t i;

	(void)state;
	for (i = 0; i < NELEM(types); i++) {
		memset(&r, 0, sizeof(r));
		r.type = types[i];
		r.integer = 1;
		if (types[i] == REDIS_REPLY_STATUS ||
		    types[i] == REDIS_REPLY_STRING) {
			r.str = text;
			r.len = strlen(text);
		}
		errbuf[0] = '\0';
		if (sched_redis_decode(&r, 2, &s, errbuf, sizeof(errbuf)) !=
		    CP_ERR_REDIS)
			fail_msg("type %d: decoded", types[i]);
		assert_true(errbuf[0] != '\0');
	}
}

/* An error reply is reported with Redis' own text. */
static void
test_sched_decode_error_reply(void **state)
{
	char text[] = "NOSCRIPT No matching script. Please use EVAL.";
	redisReply r;
	struct slot s;
	char errbuf[256];
	char small[16];

	(void)state;
	memset(&r, 0, sizeof(r));
	r.type = REDIS_REPLY_ERROR;
	r.str = text;
	r.len = strlen(text);
	assert_int_equal(sched_redis_decode(&r, 2, &s, errbuf, sizeof(errbuf)),
			 CP_ERR_REDIS);
	assert_non_null(strstr(errbuf, "NOSCRIPT"));
	assert_non_null(strstr(errbuf, "No matching script"));

	/* A short errbuf is truncated, still NUL-terminated. */
	memset(small, 'Z', sizeof(small));
	assert_int_equal(sched_redis_decode(&r, 2, &s, small, sizeof(small)),
			 CP_ERR_REDIS);
	assert_non_null(memchr(small, '\0', sizeof(small)));
}

/*
 * The scripts run on Redis' clock and touch only the keys they are
 * given: reserve.lua its four and the budgets (KEYS[5 + org]), settle.lua
 * its six, rest.lua its one.
 */
static void
test_sched_script(void **state)
{
	(void)state;
	assert_non_null(strstr(sched_lua_reserve, "redis.call('TIME')"));
	assert_non_null(strstr(sched_lua_reserve, "KEYS[1]"));
	assert_non_null(strstr(sched_lua_reserve, "KEYS[2]"));
	assert_non_null(strstr(sched_lua_reserve, "KEYS[3]"));
	assert_non_null(strstr(sched_lua_reserve, "KEYS[4]"));
	assert_non_null(strstr(sched_lua_reserve, "KEYS[5 + o]"));
	/* The client's two keys come last, when its arguments are given. */
	assert_non_null(strstr(sched_lua_reserve, "KEYS[#KEYS - 1]"));
	assert_non_null(strstr(sched_lua_reserve, "KEYS[#KEYS]"));
	assert_non_null(strstr(sched_lua_reserve, "#ARGV >= 16"));
	assert_non_null(strstr(sched_lua_settle, "redis.call('TIME')"));
	assert_non_null(strstr(sched_lua_settle, "KEYS[1]"));
	assert_non_null(strstr(sched_lua_settle, "KEYS[3]"));
	assert_non_null(strstr(sched_lua_settle, "KEYS[6]"));
	assert_null(strstr(sched_lua_settle, "KEYS[7]"));
	assert_non_null(strstr(sched_lua_rest, "redis.call('TIME')"));
	assert_null(strstr(sched_lua_rest, "KEYS[2]"));
}

/*
 * clock_sync_local: a sequence of samples {sent, recv, redis_now, at} and
 * the local deadline expected for each, with its error bound (all
 * microseconds; the bound ages by 1000 ppm: 1 us per ms).
 */
struct sync_step {
	int64_t sent;
	int64_t recv;
	int64_t redis_now;
	int64_t at;
	int64_t want;
	int64_t want_err;
	const char *why;
};

static const struct sync_step sync_steps[] = {
	/* Redis = local + 1000000. Bracket [9990, 10010]: midpoint, off by
	 * 10 us at most, 199 more by the deadline 199.99 ms later. */
	{10000, 10020, 1010010, 1210010, 210010, 209, "first sample: midpoint"},
	/* A late reply (delivered 5 ms after Redis ran) keeps the estimate:
	 * the slot stays at its absolute time instead of moving 5 ms later.
	 * Its bound has aged 15 us since. */
	{20000, 25020, 1020010, 1220010, 220010, 219, "slow reply ignored"},
	/* A tighter bracket replaces the estimate. */
	{30000, 30004, 1030003, 1230003, 230002, 201, "tighter sample wins"},
	/* The clocks moved by +2 ms (wall clock stepped): this wider bracket
	 * does not win, but no longer holds the estimate, which is clamped
	 * into it, further than its bound allowed: the estimate is now off
	 * by this bracket's width at most. */
	{40000, 40020, 1042010, 1242010, 240020, 220, "clamped into bracket"},
	/* A bracket wider than the estimate's own (4 us, aged 10) holds it
	 * and is narrower than its bound: that bound is now 16. */
	{41000, 41016, 1043000, 1243000, 241010, 215, "a bracket bounds it"},
};

static void
test_clock_sync(void **state)
{
	struct clock_sync cs;
	size_t i;
	int64_t got, err;

	(void)state;
	memset(&cs, 0, sizeof(cs));
	for (i = 0; i < NELEM(sync_steps); i++) {
		const struct sync_step *t = &sync_steps[i];

		struct clock_sample s = {t->sent, t->recv, t->redis_now};

		got = clock_sync_local(&cs, &s, t->at, &err);
		if (got != t->want || err != t->want_err)
			fail_msg("step %zu (%s): got %lld +-%lld, want %lld "
				 "+-%lld",
				 i, t->why, (long long)got, (long long)err,
				 (long long)t->want, (long long)t->want_err);
	}
}

/* An old estimate ages: after a long quiet spell a wider sample wins. */
static void
test_clock_sync_ages(void **state)
{
	struct clock_sync cs;
	struct clock_sample s0 = {0, 4, 1000002};
	struct clock_sample s1 = {100000000, 100001000, 101000800};

	(void)state;
	memset(&cs, 0, sizeof(cs));
	/* Width 4 us at t=0. */
	assert_int_equal(clock_sync_local(&cs, &s0, 1000002, NULL), 2);
	/* 100 s later the old estimate is worth 4 + 100000 us: a 1 ms wide
	 * bracket whose midpoint says offset 1000300 replaces it. */
	assert_int_equal(clock_sync_local(&cs, &s1, 101000800, NULL),
			 100000500);
}

/* The estimate as it is: no estimate, then one aged to the slot. */
static void
test_clock_sync_translate(void **state)
{
	struct clock_sync cs;
	struct clock_sample s = {10000, 10020, 1010010};
	int64_t local = -1, err = -1;

	(void)state;
	memset(&cs, 0, sizeof(cs));
	assert_int_equal(clock_sync_translate(&cs, 1210010, &local, &err), 0);
	assert_int_equal(local, -1);
	(void)clock_sync_local(&cs, &s, 1010010, NULL);
	/* Offset 1000000 +-10 us at local 10020; the slot 2 s after that. */
	assert_int_equal(clock_sync_translate(&cs, 3010020, &local, &err), 1);
	assert_int_equal(local, 2010020);
	assert_int_equal(err, 10 + 2000);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sched_redis_decode),
		cmocka_unit_test(test_sched_decode_not_array),
		cmocka_unit_test(test_sched_decode_error_reply),
		cmocka_unit_test(test_sched_script),
		cmocka_unit_test(test_clock_sync),
		cmocka_unit_test(test_clock_sync_ages),
		cmocka_unit_test(test_clock_sync_translate),
	};

	return cmocka_run_group_tests_name("test_sched", tests, NULL, NULL);
}
