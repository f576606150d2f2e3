/*
 * test_metrics.c - the metrics' exposition: label values escaped, status
 * codes and names kept to bounded label sets, histogram buckets
 * cumulative with "le" inclusive, the limit a 429 ran out of, the gauges;
 * on counters in the test's own memory (metrics_use), not shared memory.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>

#include <cmocka.h>

#include "metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unit.h"

static void *mem;
static char org_fp[1][9] = {"0a1b2c3d"};

static struct config
test_config(void)
{
	struct config c;

	memset(&c, 0, sizeof(c));
	c.nkeys = 2;
	c.norgs = 1;
	c.org_fps = org_fp;
	return c;
}

static int
setup(void **state)
{
	(void)state;
	mem = calloc(1, metrics_size());
	if (mem == NULL)
		return -1;
	metrics_use(mem);
	return 0;
}

static int
teardown(void **state)
{
	(void)state;
	metrics_use(NULL);
	free(mem);
	mem = NULL;
	return 0;
}

/* The scrape's text, rendered without a view of the scheduler. */
static char *
render(const struct config *cfg, const struct sched_view *v)
{
	struct buf b;
	char *out;

	buf_init(&b, 1 << 22);
	assert_int_equal(metrics_render(cfg, v, &b), CP_OK);
	out = strdup(b.b_p);
	buf_free(&b);
	assert_non_null(out);
	return out;
}

static void
assert_has(const char *text, const char *line)
{
	if (strstr(text, line) == NULL)
		fail_msg("no \"%s\" in:\n%s", line, text);
}

static void
assert_lacks(const char *text, const char *s)
{
	if (strstr(text, s) != NULL)
		fail_msg("\"%s\" in:\n%s", s, text);
}

struct esc_case {
	const char *in;
	const char *out;
};

static const struct esc_case esc_cases[] = {
	{"", ""},
	{"llama3.1-8b", "llama3.1-8b"},
	{"we\"ird\\model", "we\\\"ird\\\\model"},
	{"a\nb", "a\\nb"},
	{"\\\\\n\"", "\\\\\\\\\\n\\\""},
	{"tab\there", "tab\there"}, /* only \, " and newline are escaped */
};

static void
test_escape(void **state)
{
	struct buf b;
	size_t i;

	(void)state;
	for (i = 0; i < NELEM(esc_cases); i++) {
		buf_init(&b, 1024);
		assert_int_equal(metrics_escape(&b, esc_cases[i].in), CP_OK);
		if (strcmp(b.b_p ? b.b_p : "", esc_cases[i].out) != 0)
			fail_msg("row %zu: got \"%s\"", i, nz(b.b_p));
		buf_free(&b);
	}
}

static void
test_status_codes_bounded(void **state)
{
	struct config cfg = test_config();
	static const int statuses[] = {200, 200, 418, 299, 700, 0, 429, 499};
	char *text;
	size_t i;

	(void)state;
	for (i = 0; i < NELEM(statuses); i++)
		metrics_request_done(METRICS_ROUTE_CHAT, statuses[i], 1000);
	metrics_request_done(metrics_route_of(ROUTE_NOT_FOUND), 404, 1000);
	metrics_request_done(metrics_route_of(ROUTE_MODEL), 200, 1000);
	metrics_upstream(1, 0, -1, 0);
	metrics_upstream(1, 503, 12.5, 300);
	metrics_upstream(7, 200, 1, 0); /* beyond nkeys: not shown */
	text = render(&cfg, NULL);
	assert_has(text, "cerebras_proxy_requests_total{route=\"chat\","
			 "code=\"200\"} 2\n");
	assert_has(text, "{route=\"chat\",code=\"4xx\"} 1\n");
	assert_has(text, "{route=\"chat\",code=\"2xx\"} 1\n");
	assert_has(text, "{route=\"chat\",code=\"other\"} 1\n");
	assert_has(text, "{route=\"chat\",code=\"none\"} 1\n");
	assert_has(text, "{route=\"chat\",code=\"429\"} 1\n");
	assert_has(text, "{route=\"chat\",code=\"499\"} 1\n");
	assert_has(text, "{route=\"other\",code=\"404\"} 1\n");
	assert_has(text, "{route=\"models\",code=\"200\"} 1\n");
	assert_has(text, "cerebras_proxy_upstream_requests_total{key=\"1\","
			 "code=\"none\"} 1\n");
	assert_has(text, "{key=\"1\",code=\"503\"} 1\n");
	assert_lacks(text, "key=\"7\"");
	/* Only an answer has a first byte; every attempt a lateness. */
	assert_has(text, "cerebras_proxy_upstream_time_to_first_byte_seconds_"
			 "count 2\n");
	assert_has(text, "cerebras_proxy_slot_lateness_seconds_count 3\n");
	assert_has(text, "cerebras_proxy_redis_up 0\n");
	assert_lacks(text, "cerebras_proxy_key_state");
	free(text);
}

static void
test_histogram_buckets(void **state)
{
	struct config cfg = test_config();
	char *text;

	(void)state;
	/* le is inclusive: 1 ms lands in le="0.001". */
	metrics_queue_wait(1000000);
	metrics_queue_wait(1001000);
	metrics_queue_wait(-5); /* a clock step: 0 */
	metrics_queue_wait(3600LL * 1000000000);
	text = render(&cfg, NULL);
	assert_has(text,
		   "# TYPE cerebras_proxy_queue_wait_seconds histogram\n");
	assert_has(text,
		   "cerebras_proxy_queue_wait_seconds_bucket{le=\"0.001\"} "
		   "2\n");
	assert_has(text,
		   "cerebras_proxy_queue_wait_seconds_bucket{le=\"0.005\"} "
		   "3\n");
	assert_has(text, "cerebras_proxy_queue_wait_seconds_bucket{le=\"60\"} "
			 "3\n");
	assert_has(text,
		   "cerebras_proxy_queue_wait_seconds_bucket{le=\"+Inf\"} "
		   "4\n");
	assert_has(text, "cerebras_proxy_queue_wait_seconds_count 4\n");
	assert_has(text, "cerebras_proxy_queue_wait_seconds_sum 3600.002001\n");
	/* A route not seen has no duration series. */
	assert_lacks(text, "request_duration_seconds_bucket{route=\"ready\"");
	free(text);
}

static void
test_names_bounded_and_escaped(void **state)
{
	struct config cfg = test_config();
	char model[32];
	char client[32];
	char *text;
	int i;

	(void)state;
	for (i = 0; i < METRICS_MODELS + 8; i++) {
		snprintf(model, sizeof(model), "model-%02d", i);
		snprintf(client, sizeof(client), "client-%02d",
			 i % (METRICS_CLIENTS + 1));
		metrics_tokens(0, model, client, 10, 1);
	}
	for (i = METRICS_MODELS + 8; i < 2 * METRICS_CLIENTS; i++) {
		snprintf(client, sizeof(client), "client-%02d", i);
		metrics_tokens(1, "model-00", client, 1, -1);
	}
	metrics_tokens(1, "we\"ird\\model", "", 5, 6); /* a full table */
	metrics_tokens(1, "model-00", NULL, -1, -1);   /* nothing known */
	text = render(&cfg, NULL);
	assert_has(text, "cerebras_proxy_tokens_total{key=\"0\",model="
			 "\"model-00\",kind=\"prompt\"} 10\n");
	assert_has(text, "{key=\"0\",model=\"model-31\",kind=\"completion\"} "
			 "1\n");
	assert_lacks(text, "model-32");
	assert_has(text, "{key=\"0\",model=\"other\",kind=\"prompt\"} 80\n");
	assert_has(text, "{key=\"1\",model=\"other\",kind=\"prompt\"} 5\n");
	assert_has(text, "{key=\"1\",model=\"other\",kind=\"completion\"} 6\n");
	assert_has(text, "{key=\"1\",model=\"model-00\",kind=\"prompt\"} 88\n");
	assert_lacks(text,
		     "{key=\"1\",model=\"model-00\",kind=\"completion\"}");
	assert_has(text, "cerebras_proxy_client_tokens_total{client="
			 "\"client-63\",kind=\"prompt\"} 1\n");
	assert_lacks(text, "client-64\"");
	/* client-64..127, beyond the first 64 names. */
	assert_has(text, "{client=\"other\",kind=\"prompt\"} 64\n");
	free(text);
}

static void
test_view_and_gauges(void **state)
{
	struct config cfg = test_config();
	struct sched_key_view keys[2];
	struct sched_view *v = calloc(1, sizeof(*v));
	char *text;

	(void)state;
	assert_non_null(v);
	memset(keys, 0, sizeof(keys));
	keys[1].kv_state = KEY_STATE_RESTING;
	keys[1].kv_until_ms = 1500;
	v->sv_redis_up = 1;
	v->sv_depth_ms = 250;
	v->sv_nkeys = 2;
	v->sv_keys = keys;
	v->sv_nbudgets = 2;
	v->sv_budgets[0].bv_org = 0;
	snprintf(v->sv_budgets[0].bv_model, sizeof(v->sv_budgets[0].bv_model),
		 "a\"b");
	v->sv_budgets[0].bv_limit = 1;
	v->sv_budgets[0].bv_level = 59000;
	v->sv_budgets[0].bv_cap = 60000;
	v->sv_budgets[1].bv_org = 5; /* no such organisation: left out */
	metrics_request_begin();
	metrics_request_begin();
	metrics_request_end(METRICS_ROUTE_HEALTH, 200, 0);
	metrics_stream(1);
	text = render(&cfg, v);
	assert_has(text, "cerebras_proxy_requests_in_flight 1\n");
	assert_has(text, "cerebras_proxy_streams_open 1\n");
	assert_has(text, "cerebras_proxy_redis_up 1\n");
	assert_has(text, "cerebras_proxy_fallback_active 0\n");
	assert_has(text, "cerebras_proxy_schedule_depth_seconds 0.250\n");
	assert_has(text,
		   "cerebras_proxy_key_state{key=\"0\",state=\"ok\"} 1\n");
	assert_has(text,
		   "cerebras_proxy_key_state{key=\"1\",state=\"ok\"} 0\n");
	assert_has(text, "cerebras_proxy_key_state{key=\"1\",state=\"resting\"}"
			 " 1\n");
	assert_has(text, "cerebras_proxy_key_rest_seconds{key=\"1\"} 1.500\n");
	assert_has(text, "cerebras_proxy_budget_remaining{org=\"0a1b2c3d\","
			 "model=\"a\\\"b\",limit=\"tokens-minute\"} 59000\n");
	assert_has(text, "cerebras_proxy_budget_capacity{org=\"0a1b2c3d\","
			 "model=\"a\\\"b\",limit=\"tokens-minute\"} 60000\n");
	assert_int_equal(
		strstr(text, "org=\"") == strstr(text, "org=\"0a1b2c3d\""), 1);
	metrics_request_end(METRICS_ROUTE_HEALTH, 200, 0);
	metrics_stream(-1);
	free(text);
	free(v);
}

static void
test_off(void **state)
{
	struct config cfg = test_config();
	struct buf b;

	(void)state;
	metrics_use(NULL);
	/* Recording is a no-op; the exposition says it is off. */
	metrics_request_begin();
	metrics_request_end(METRICS_ROUTE_CHAT, 200, 5);
	metrics_tokens(0, "m", "c", 1, 1);
	buf_init(&b, 1024);
	assert_int_equal(metrics_render(&cfg, NULL, &b), CP_ERR_IO);
	buf_free(&b);
	metrics_use(mem);
}

static void
test_name(void **state)
{
	struct config cfg = test_config();
	char prefix[] = "{cerebras-proxy}";
	char url[] = "redis://127.0.0.1:6379";
	char name[96];

	(void)state;
	cfg.redis_prefix = prefix;
	cfg.redis_url = url;
	cfg.redis_enabled = 1;
	metrics_name(&cfg, name, sizeof(name));
	/* The scheduler state's fingerprint and euid, "metrics1-" before. */
	if (strncmp(name, "/cerebras-proxy-metrics1-", 25) != 0 ||
	    strlen(name) < 25 + 10)
		fail_msg("name %s", name);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_escape),
		cmocka_unit_test_setup_teardown(test_status_codes_bounded,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_histogram_buckets, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_names_bounded_and_escaped,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_view_and_gauges, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_off, setup, teardown),
		cmocka_unit_test(test_name),
	};

	return cmocka_run_group_tests_name("test_metrics", tests, NULL, NULL);
}
