/*
 * test_usage.c - the token counts read in passing from JSON answers and
 * event streams, however the bytes are cut into chunks.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>

#include <cmocka.h>

#include "usage.h"

#include <string.h>

#include "unit.h"

struct json_case {
	const char *text;
	int found;
	long long prompt;
	long long completion;
};

static const struct json_case json_cases[] = {
	{"{\"id\":\"x\",\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":"
	 "34,\"total_tokens\":46}}",
	 1, 12, 34},
	{"{\"usage\":{\"completion_tokens\":5}}", 1, -1, 5},
	{"{\"usage\":{\"prompt_tokens\":-1,\"completion_tokens\":2.5}}", 0, -1,
	 -1},
	{"{\"usage\":null}", 0, -1, -1},
	{"{\"usage\":{\"prompt_tokens\":1}", 0, -1, -1}, /* cut short */
	{"{\"usage\":{\"prompt_tokens\":1},\"usage\":{}}", 0, -1, -1},
	{"[1,2]", 0, -1, -1},
	{"", 0, -1, -1},
};

static void
test_usage_from_json(void **state)
{
	struct usage u;
	size_t i;

	(void)state;
	for (i = 0; i < NELEM(json_cases); i++) {
		const struct json_case *t = &json_cases[i];
		int found;

		u.u_prompt = u.u_completion = -1;
		found = usage_from_json(t->text, strlen(t->text), &u);
		if (found != t->found || u.u_prompt != t->prompt ||
		    u.u_completion != t->completion)
			fail_msg("row %zu: got %d %lld %lld", i, found,
				 u.u_prompt, u.u_completion);
	}
}

/* A stream as Cerebras sends it: deltas, then usage, then [DONE]. */
static const char stream[] =
	"data: {\"choices\":[{\"delta\":{\"content\":\"He said "
	"\\\"usage\\\"\"}}]}"
	"\n\n"
	": keep-alive comment\n\n"
	"data: {\"choices\":[{\"delta\":{}}],\"usage\":{\"prompt_tokens\":7,"
	"\"completion_tokens\":9}}\r\n\r\n"
	"data: [DONE]\n\n";

/* Every cut of the stream into 1..3 chunks reads the same usage. */
static void
test_usage_scan_stream_any_chunks(void **state)
{
	struct usage_scan s;
	size_t n = strlen(stream);
	size_t a, b;

	(void)state;
	for (a = 0; a <= n; a += 3) {
		for (b = a; b <= n; b += 7) {
			usage_scan_init(&s, 1);
			usage_scan_feed(&s, stream, a);
			usage_scan_feed(&s, stream + a, b - a);
			usage_scan_feed(&s, stream + b, n - b);
			usage_scan_end(&s);
			if (s.sc_usage.u_prompt != 7 ||
			    s.sc_usage.u_completion != 9)
				fail_msg("cut at %zu, %zu: %lld %lld", a, b,
					 s.sc_usage.u_prompt,
					 s.sc_usage.u_completion);
			usage_scan_free(&s);
		}
	}
}

static void
test_usage_scan_json_and_nothing(void **state)
{
	static const char json[] =
		"{\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}";
	struct usage_scan s;

	(void)state;
	usage_scan_init(&s, 0);
	usage_scan_feed(&s, json, 10);
	/* nothing is read before the answer is whole */
	assert_int_equal(s.sc_usage.u_prompt, -1);
	usage_scan_feed(&s, json + 10, strlen(json) - 10);
	usage_scan_end(&s);
	assert_int_equal(s.sc_usage.u_prompt, 3);
	assert_int_equal(s.sc_usage.u_completion, 4);
	usage_scan_free(&s);

	/* a stream without usage, one that ends mid-event */
	usage_scan_init(&s, 1);
	usage_scan_feed(&s, "data: {\"a\":1}\n\ndata: {\"usage\":", 31);
	usage_scan_end(&s);
	assert_int_equal(s.sc_usage.u_prompt, -1);
	assert_int_equal(s.sc_usage.u_completion, -1);
	usage_scan_free(&s);
}

/* An event larger than what is kept is skipped, the next still read. */
static void
test_usage_scan_oversized_event(void **state)
{
	static const char tail[] = "\"}\n\ndata: {\"usage\":{\"prompt_tokens\":"
				   "1,\"completion_tokens\":2}}\n\n";
	char chunk[4096];
	struct usage_scan s;
	size_t i;

	(void)state;
	memset(chunk, 'x', sizeof(chunk));
	usage_scan_init(&s, 1);
	usage_scan_feed(&s, "data: {\"usage\":\"", 16);
	for (i = 0; i < 100; i++) /* 400 KiB in one event */
		usage_scan_feed(&s, chunk, sizeof(chunk));
	usage_scan_feed(&s, tail, strlen(tail));
	usage_scan_end(&s);
	assert_int_equal(s.sc_usage.u_prompt, 1);
	assert_int_equal(s.sc_usage.u_completion, 2);
	usage_scan_free(&s);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_usage_from_json),
		cmocka_unit_test(test_usage_scan_stream_any_chunks),
		cmocka_unit_test(test_usage_scan_json_and_nothing),
		cmocka_unit_test(test_usage_scan_oversized_event),
	};

	return cmocka_run_group_tests_name("test_usage", tests, NULL, NULL);
}
