/*
 * test_retry.c - the retry decision, as a table: (upstream_forward's
 * result, the upstream status, whether the response started, attempts
 * left) -> what the request path does.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>

#include <cmocka.h>

#include "retry.h"

#include <string.h>

#include "unit.h"

struct retry_case {
	enum cp_err err;
	long status;
	int started;
	int left;
	enum retry_action want;
	int want_status;       /* RETRY_FAIL */
	const char *want_code; /* RETRY_FAIL */
};

static const struct retry_case retry_cases[] = {
	/* Answers: relayed, unless worth another key while one is left. */
	{CP_OK, 200, 0, 2, RETRY_RELAY, 0, NULL},
	{CP_OK, 200, 1, 0, RETRY_RELAY, 0, NULL},
	{CP_OK, 204, 0, 0, RETRY_RELAY, 0, NULL},
	{CP_OK, 400, 0, 2, RETRY_RELAY, 0, NULL},
	{CP_OK, 404, 0, 2, RETRY_RELAY, 0, NULL},
	{CP_OK, 422, 0, 2, RETRY_RELAY, 0, NULL},
	{CP_OK, 429, 0, 1, RETRY_AGAIN, 0, NULL},
	{CP_OK, 429, 0, 0, RETRY_RELAY, 0, NULL},
	{CP_OK, 500, 0, 1, RETRY_AGAIN, 0, NULL},
	{CP_OK, 503, 0, 0, RETRY_RELAY, 0, NULL},
	/* A refusal of our key is never relayed. */
	{CP_OK, 401, 0, 1, RETRY_AGAIN, 0, NULL},
	{CP_OK, 403, 0, 2, RETRY_AGAIN, 0, NULL},
	{CP_OK, 401, 0, 0, RETRY_FAIL, 502, "upstream_auth_failed"},
	{CP_OK, 403, 0, 0, RETRY_FAIL, 502, "upstream_auth_failed"},
	/* The client left: nothing more to do, whatever else happened. */
	{CP_ERR_HUP, 200, 1, 2, RETRY_GONE, 0, NULL},
	{CP_ERR_HUP, 0, 0, 2, RETRY_GONE, 0, NULL},
	/* Failures before the status went out: another key, then ours. */
	{CP_ERR_UPSTREAM, 0, 0, 1, RETRY_AGAIN, 0, NULL},
	{CP_ERR_UPSTREAM, 0, 0, 0, RETRY_FAIL, 502, "upstream_unreachable"},
	{CP_ERR_UPSTREAM_TIMEOUT, 0, 0, 1, RETRY_AGAIN, 0, NULL},
	{CP_ERR_UPSTREAM_TIMEOUT, 0, 0, 0, RETRY_FAIL, 504, "upstream_timeout"},
	{CP_ERR_NOMEM, 0, 0, 1, RETRY_AGAIN, 0, NULL},
	{CP_ERR_NOMEM, 0, 0, 0, RETRY_FAIL, 502, "upstream_unreachable"},
	/* Another key would get the same oversized header block. */
	{CP_ERR_UPSTREAM_TOOBIG, 200, 0, 2, RETRY_FAIL, 502,
	 "upstream_headers_too_large"},
	{CP_ERR_UPSTREAM_TOOBIG, 0, 0, 0, RETRY_FAIL, 502,
	 "upstream_headers_too_large"},
	/* After the status went out, only the stream can be cut. */
	{CP_ERR_UPSTREAM, 200, 1, 2, RETRY_CUT, 0, NULL},
	{CP_ERR_UPSTREAM_TIMEOUT, 200, 1, 0, RETRY_CUT, 0, NULL},
	{CP_ERR_NOMEM, 200, 1, 1, RETRY_CUT, 0, NULL},
};

static void
test_retry_decide(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < NELEM(retry_cases); i++) {
		const struct retry_case *t = &retry_cases[i];
		struct retry_verdict v =
			retry_decide(t->err, t->status, t->started, t->left);

		if (v.rv_action != t->want)
			fail_msg("row %zu: action %d, want %d", i,
				 (int)v.rv_action, (int)t->want);
		if (t->want != RETRY_FAIL)
			continue;
		if (v.rv_status != t->want_status ||
		    strcmp(v.rv_code, t->want_code) != 0)
			fail_msg("row %zu: %d %s, want %d %s", i, v.rv_status,
				 v.rv_code, t->want_status, t->want_code);
		if (v.rv_type == NULL || v.rv_message == NULL ||
		    v.rv_message[0] == '\0')
			fail_msg("row %zu: no type or message", i);
	}
}

/* Asked when the status arrives: only what would stand is relayed. */
static void
test_retry_relays(void **state)
{
	(void)state;
	assert_true(retry_relays(200, 2));
	assert_true(retry_relays(400, 2));
	assert_true(retry_relays(429, 0));
	assert_true(retry_relays(502, 0));
	assert_false(retry_relays(429, 1));
	assert_false(retry_relays(500, 1));
	assert_false(retry_relays(401, 1));
	assert_false(retry_relays(401, 0));
	assert_false(retry_relays(403, 0));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_retry_decide),
		cmocka_unit_test(test_retry_relays),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
