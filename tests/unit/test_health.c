/*
 * test_health.c - the readiness verdict (health_judge) and the status
 * command's output (status_print) on views made here: no Redis, no
 * shared memory.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>

#include <cmocka.h>

#include "health.h"
#include "status.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unit.h"

#define OK  KEY_STATE_OK
#define RST KEY_STATE_RESTING
#define DIS KEY_STATE_DISABLED

struct judge_case {
	enum cp_err err;
	int nkeys;
	enum sched_key_state st[3];
	int64_t until[3];
	enum health_reason want;
	int usable;
	int64_t soonest;
	const char *why;
};

static const struct judge_case judge_cases[] = {
	{CP_OK, 3, {OK, OK, OK}, {0, 0, 0}, HEALTH_READY, 3, 0, "all usable"},
	{CP_OK, 3, {DIS, RST, OK}, {9, 5, 0}, HEALTH_READY, 1, 5, "one usable"},
	{CP_OK,
	 2,
	 {RST, RST},
	 {800, 300},
	 HEALTH_COOLING_DOWN,
	 0,
	 300,
	 "all resting"},
	{CP_OK,
	 2,
	 {DIS, RST},
	 {3600000, 2000},
	 HEALTH_COOLING_DOWN,
	 0,
	 2000,
	 "one resting, one disabled: cooling down"},
	{CP_OK,
	 3,
	 {DIS, DIS, DIS},
	 {10, 20, 5},
	 HEALTH_DISABLED,
	 0,
	 5,
	 "all disabled"},
	{CP_ERR_REDIS,
	 1,
	 {OK},
	 {0},
	 HEALTH_REDIS_UNREACHABLE,
	 0,
	 0,
	 "state unreadable"},
};

static void
test_judge(void **state)
{
	struct sched_key_view keys[3];
	struct sched_view v;
	int64_t soonest;
	int usable;
	size_t i;
	int k;

	(void)state;
	for (i = 0; i < NELEM(judge_cases); i++) {
		const struct judge_case *c = &judge_cases[i];

		memset(&v, 0, sizeof(v));
		memset(keys, 0, sizeof(keys));
		v.sv_nkeys = c->nkeys;
		v.sv_keys = keys;
		for (k = 0; k < c->nkeys; k++) {
			keys[k].kv_state = c->st[k];
			keys[k].kv_until_ms = c->until[k];
		}
		if (health_judge(c->err, &v, &usable, &soonest) != c->want ||
		    usable != c->usable || soonest != c->soonest)
			fail_msg("%s: got usable %d soonest %lld", c->why,
				 usable, (long long)soonest);
	}
	assert_string_equal(health_reason_name(HEALTH_REDIS_UNREACHABLE),
			    "redis_unreachable");
	assert_string_equal(health_reason_name(HEALTH_COOLING_DOWN),
			    "all_keys_cooling_down");
	assert_string_equal(health_reason_name(HEALTH_DISABLED),
			    "all_keys_disabled");
}

static const char *
lookup(const char *name, void *ctx)
{
	(void)ctx;
	if (strcmp(name, "CEREBRAS_API_KEYS") == 0)
		return "csk-unit-secret-1|csk-unit-secret-2,csk-unit-secret-3";
	if (strcmp(name, "REDIS_URL") == 0)
		return "redis://:unit-redis-pw@127.0.0.1:6390/2";
	if (strcmp(name, "PROXY_TOKENS") == 0)
		return "unit-client-token-1";
	return NULL;
}

/* Runs status_print into a string (freed by the caller). */
static char *
printed(const struct config *cfg, const struct sched_view *v, int json)
{
	char *out = NULL;
	size_t len = 0;
	FILE *fp = open_memstream(&out, &len);

	assert_non_null(fp);
	assert_int_equal(status_print(cfg, v, 1700000000000LL, json, fp), 0);
	assert_int_equal(fclose(fp), 0);
	return out;
}

/*
 * Both forms: every key by index, fingerprint and organisation, its
 * state, the budgets, the Redis address masked; no key, token or
 * password anywhere.
 */
static void
test_status_print(void **state)
{
	struct config cfg;
	struct sched_key_view keys[3];
	struct sched_view *v = calloc(1, sizeof(*v));
	char err[256];
	char *text;
	char *js;
	json_t *root;
	json_t *k;
	json_error_t jerr;
	int i;

	(void)state;
	assert_non_null(v);
	if (config_load(&cfg, lookup, NULL, err, sizeof(err)) != CP_OK)
		fail_msg("config_load: %s", err);
	memset(keys, 0, sizeof(keys));
	v->sv_nkeys = 3;
	v->sv_keys = keys;
	v->sv_redis_up = 1;
	v->sv_from_redis = 1;
	v->sv_depth_ms = 1234;
	keys[0].kv_last_status = 200;
	keys[0].kv_requests = 7;
	keys[0].kv_tokens = 900;
	keys[1].kv_state = KEY_STATE_DISABLED;
	keys[1].kv_until_ms = 3600000;
	keys[1].kv_last_status = 401;
	keys[1].kv_requests = 1;
	keys[2].kv_state = KEY_STATE_RESTING;
	keys[2].kv_until_ms = 1500;
	keys[2].kv_requests = -1;
	keys[2].kv_tokens = -1;
	v->sv_nbudgets = 1;
	v->sv_budgets[0].bv_org = 1;
	snprintf(v->sv_budgets[0].bv_model, sizeof(v->sv_budgets[0].bv_model),
		 "llama3.1-8b");
	v->sv_budgets[0].bv_limit = 1;
	v->sv_budgets[0].bv_level = 500;
	v->sv_budgets[0].bv_cap = 1000;

	text = printed(&cfg, v, 0);
	js = printed(&cfg, v, 1);
	for (i = 0; i < cfg.nkeys; i++) {
		assert_null(strstr(text, cfg.keys[i]));
		assert_null(strstr(js, cfg.keys[i]));
		assert_non_null(strstr(text, cfg.key_fps[i]));
	}
	assert_null(strstr(text, "unit-client-token-1"));
	assert_null(strstr(js, "unit-client-token-1"));
	assert_null(strstr(text, "unit-redis-pw"));
	assert_null(strstr(js, "unit-redis-pw"));
	assert_non_null(strstr(text, "redis://***@127.0.0.1:6390/2"));
	assert_non_null(strstr(text, "2023-11-14T22:13:21Z (in 2 s)"));
	assert_non_null(strstr(text, "tokens-minute"));

	root = json_loads(js, 0, &jerr);
	if (root == NULL)
		fail_msg("status --json does not parse: %s", jerr.text);
	assert_string_equal(
		json_string_value(json_object_get(
			json_object_get(root, "scheduler"), "redis_url")),
		"redis://***@127.0.0.1:6390/2");
	assert_int_equal(json_integer_value(json_object_get(
				 json_object_get(root, "scheduler"),
				 "timeline_depth_ms")),
			 1234);
	assert_int_equal(json_array_size(json_object_get(root, "keys")), 3);
	k = json_array_get(json_object_get(root, "keys"), 1);
	assert_int_equal(json_integer_value(json_object_get(k, "index")), 1);
	assert_string_equal(
		json_string_value(json_object_get(k, "fingerprint")),
		cfg.key_fps[1]);
	assert_string_equal(
		json_string_value(json_object_get(k, "organisation")),
		cfg.org_fps[0]);
	assert_string_equal(json_string_value(json_object_get(k, "state")),
			    "disabled");
	assert_string_equal(json_string_value(json_object_get(k, "until")),
			    "2023-11-14T23:13:20Z");
	k = json_array_get(json_object_get(root, "keys"), 2);
	assert_true(json_is_null(json_object_get(k, "requests_today")));
	assert_true(json_is_null(json_object_get(k, "last_status")));
	k = json_array_get(json_object_get(root, "budgets"), 0);
	assert_string_equal(
		json_string_value(json_object_get(k, "organisation")),
		cfg.org_fps[1]);
	assert_string_equal(json_string_value(json_object_get(k, "limit")),
			    "tokens-minute");
	json_decref(root);
	free(text);
	free(js);
	free(v);
	config_free(&cfg);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_judge),
		cmocka_unit_test(test_status_print),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
