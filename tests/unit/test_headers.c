/*
 * test_headers.c - which upstream response headers reach the client, and
 * which client headers may go upstream.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>

#include <cmocka.h>

#include "headers.h"

#include <string.h>
#include <strings.h>

#include "unit.h"

/* hdr_forward_response */

struct fwd_case {
	const char *line;
	int want;
};

static const struct fwd_case fwd_cases[] = {
	/* end-to-end headers pass */
	{"Content-Type: text/event-stream\r\n", 1},
	{"content-type: application/json\r\n", 1},
	{"x-ratelimit-remaining-requests-day: 1\r\n", 1},
	{"x-ratelimit-reset-tokens-minute: 12.5\r\n", 1},
	{"X-Request-Id: a\r\n", 0},
	{"x-request-id: a\r\n", 0},
	{"Content-Encoding: gzip\r\n", 1},
	{"cerebras-request-id: x\r\n", 1},
	{"X-Empty:\r\n", 1},
	{"X-Tab: a\tb\r\n", 1},
	{"X-Utf8: caf\xc3\xa9\r\n", 1},
	{"X-No-Crlf: yes", 1},
	{"X-Lf-Only: yes\n", 1},
	{"X-Content-Length: 5\r\n", 1},
	{"Content-Lengths: 5\r\n", 1},
	{"Dates: x\r\n", 1},
	/* hop-by-hop, framing, cookies, server identity, upstream CORS */
	{"Connection: keep-alive\r\n", 0},
	{"connection: close\r\n", 0},
	{"CONNECTION: close\r\n", 0},
	{"Keep-Alive: timeout=5\r\n", 0},
	{"Transfer-Encoding: chunked\r\n", 0},
	{"transfer-encoding: chunked\r\n", 0},
	{"Content-Length: 42\r\n", 0},
	{"content-length: 42\r\n", 0},
	{"Set-Cookie: a=b; Secure\r\n", 0},
	{"set-cookie: a=b\r\n", 0},
	{"Set-Cookie2: a=b\r\n", 0},
	{"Date: Mon, 01 Jan 2024 00:00:00 GMT\r\n", 0},
	{"Server: cloudflare\r\n", 0},
	{"server: nginx\r\n", 0},
	{"Status: 200 OK\r\n", 0},
	{"Access-Control-Allow-Origin: *\r\n", 0},
	{"access-control-allow-origin: https://x.example\r\n", 0},
	{"Access-Control-Expose-Headers: x-ratelimit-limit\r\n", 0},
	{"Access-Control-Allow-Credentials: true\r\n", 0},
	{"X-Accel-Buffering: yes\r\n", 0},
	{"x-accel-redirect: /internal\r\n", 0},
	{"Upgrade: h2c\r\n", 0},
	{"Trailer: x\r\n", 0},
	{"TE: trailers\r\n", 0},
	{"te: trailers\r\n", 0},
	{"Proxy-Authenticate: Basic\r\n", 0},
	{"Proxy-Connection: close\r\n", 0},
	{"Alt-Svc: h3=\":443\"\r\n", 0},
	{"alt-svc: clear\r\n", 0},
	{"Cache-Control: no-cache\r\n", 0},
	{"Strict-Transport-Security: max-age=1\r\n", 0},
	/* not header lines at all */
	{"HTTP/1.1 200 OK\r\n", 0},
	{"HTTP/2 200\r\n", 0},
	{"HTTP/1.1 100 Continue\r\n", 0},
	{"\r\n", 0},
	{"\n", 0},
	{"", 0},
	{" continued\r\n", 0},
	{"\tcontinued: x\r\n", 0},
	{"NoColonHere\r\n", 0},
	{": no name\r\n", 0},
	{"Bad Name: x\r\n", 0},
	{"Bad-Name : x\r\n", 0},
	{"Bad(Name): x\r\n", 0},
	{"Bad/Name: x\r\n", 0},
	/* control characters in the value */
	{"X-A: a\x01b\r\n", 0},
	{"X-A: a\rb\r\n", 0},
	{"X-A: a\nb\r\n", 0},
	{"X-A: a\x7f\r\n", 0},
	{"X-A: \x1b[31m\r\n", 0},
};

static void
test_hdr_forward_response(void **state)
{
	size_t i;
	int got;

	(void)state;
	for (i = 0; i < NELEM(fwd_cases); i++) {
		got = hdr_forward_response(fwd_cases[i].line,
					   strlen(fwd_cases[i].line));
		if (got != fwd_cases[i].want)
			fail_msg("row %zu \"%s\": got %d, want %d", i,
				 fwd_cases[i].line, got, fwd_cases[i].want);
	}
}

/* Only len bytes are looked at: libcurl's lines are not NUL-terminated. */
static void
test_hdr_forward_response_len(void **state)
{
	static const char line[] = "X-Request-No: a\r\nConnection: close\r\n";
	static const char nul[] = "X-A: a\0b\r\n";

	(void)state;
	assert_int_equal(hdr_forward_response(line, 17), 1);
	assert_int_equal(hdr_forward_response(line + 17, strlen(line + 17)), 0);
	/* A prefix that stops inside the name has no colon. */
	assert_int_equal(hdr_forward_response(line, 5), 0);
	assert_int_equal(hdr_forward_response(line, 0), 0);
	/* A NUL byte inside the value is a control character. */
	assert_int_equal(hdr_forward_response(nul, sizeof(nul) - 1), 0);
}

/* hdr_trim_eol */

struct trim_case {
	const char *line;
	size_t want;
};

static const struct trim_case trim_cases[] = {
	{"abc\r\n", 3},	    {"abc\n", 3},   {"abc\r", 3},    {"abc", 3},
	{"abc\r\n\r\n", 3}, {"a\r\r\n", 1}, {"a\nb\r\n", 3}, {"\r\n", 0},
	{"\n", 0},	    {"", 0},	    {" \r\n", 1},    {"a \t\r\n", 3},
};

static void
test_hdr_trim_eol(void **state)
{
	size_t i;
	size_t got;

	(void)state;
	for (i = 0; i < NELEM(trim_cases); i++) {
		got = hdr_trim_eol(trim_cases[i].line,
				   strlen(trim_cases[i].line));
		if (got != trim_cases[i].want)
			fail_msg("row %zu: got %zu, want %zu", i, got,
				 trim_cases[i].want);
	}
	/* Only the first len bytes count. */
	assert_int_equal(hdr_trim_eol("ab\r\n", 2), 2);
	assert_int_equal(hdr_trim_eol("ab\r\n", 3), 2);
}

/* hdr_value_ok */

struct value_case {
	const char *v;
	size_t max;
	int want;
};

static const struct value_case value_cases[] = {
	{"application/json", 1024, 1},
	{"", 1024, 1},
	{"", 0, 1},
	{"a\tb", 1024, 1},
	{"OpenAI/Python 1.0", 1024, 1},
	{"caf\xc3\xa9", 1024, 1},
	{"a\rb", 1024, 0},
	{"a\nb", 1024, 0},
	{"a\r\nX-Injected: 1", 1024, 0},
	{"\x7f", 1024, 0},
	{"a\x01", 1024, 0},
	{"\x1f", 1024, 0},
	{"\x1b[0m", 1024, 0},
	/* length cap */
	{"abcd", 4, 1},
	{"abcd", 5, 1},
	{"abcd", 3, 0},
	{"a", 0, 0},
};

static void
test_hdr_value_ok(void **state)
{
	size_t i;
	int got;

	(void)state;
	for (i = 0; i < NELEM(value_cases); i++) {
		got = hdr_value_ok(value_cases[i].v, value_cases[i].max);
		if (got != value_cases[i].want)
			fail_msg("row %zu \"%s\" max %zu: got %d, want %d", i,
				 value_cases[i].v, value_cases[i].max, got,
				 value_cases[i].want);
	}
}

/* hdr_request_allowed */

static const struct hdr_forward *
find_cgi(const char *cgi)
{
	const struct hdr_forward *h;

	for (h = hdr_request_allowed; h->hf_cgi != NULL; h++)
		if (strcmp(h->hf_cgi, cgi) == 0)
			return h;
	return NULL;
}

static const struct hdr_forward *
find_name(const char *name)
{
	const struct hdr_forward *h;

	for (h = hdr_request_allowed; h->hf_cgi != NULL; h++)
		if (strcasecmp(h->hf_name, name) == 0)
			return h;
	return NULL;
}

static void
test_hdr_request_allowed(void **state)
{
	static const char *const never_cgi[] = {
		"HTTP_AUTHORIZATION",
		"HTTP_COOKIE",
		"HTTP_PROXY_AUTHORIZATION",
		"HTTP_HOST",
		"HTTP_CONNECTION",
		"HTTP_TRANSFER_ENCODING",
		"CONTENT_LENGTH",
		"HTTP_PROXY",
		"CONTENT_TYPE",
	};
	static const char *const never_name[] = {
		"Authorization",  "Cookie",	"Proxy-Authorization",
		"Host",		  "Connection", "Transfer-Encoding",
		"Content-Length", "Proxy",
	};
	const struct hdr_forward *h;
	size_t i;
	size_t n = 0;

	(void)state;
	/* The proxy always sends Content-Type: application/json itself. */
	assert_null(find_name("Content-Type"));
	h = find_cgi("HTTP_ACCEPT");
	assert_non_null(h);
	assert_string_equal(h->hf_name, "Accept");
	for (i = 0; i < NELEM(never_cgi); i++)
		if (find_cgi(never_cgi[i]) != NULL)
			fail_msg("%s is forwarded upstream", never_cgi[i]);
	for (i = 0; i < NELEM(never_name); i++)
		if (find_name(never_name[i]) != NULL)
			fail_msg("%s is forwarded upstream", never_name[i]);
	/* Every row is complete and its name a plain header name. */
	for (h = hdr_request_allowed; h->hf_cgi != NULL; h++) {
		assert_non_null(h->hf_name);
		assert_true(h->hf_name[0] != '\0');
		assert_null(strpbrk(h->hf_name, " :\r\n"));
		n++;
	}
	assert_null(h->hf_name);
	assert_true(n > 0);
}

/* hdr_cooldown_ms: how long a key rests after a 429. */
struct cooldown_case {
	const char *block;
	long want;
};

static const struct cooldown_case cooldown_cases[] = {
	{"", -1},
	{"Retry-After: 3\r\n", 3000},
	{"retry-after:  7 \r\n", 7000},
	{"Retry-After: 0.5\r\n", 500},
	{"Retry-After: Wed, 21 Oct 2026 07:28:00 GMT\r\n", -1},
	{"Retry-After: -4\r\n", -1},
	/* Retry-After wins over the reset headers */
	{"x-ratelimit-remaining-tokens-minute: 0\r\n"
	 "x-ratelimit-reset-tokens-minute: 11.38\r\n"
	 "Retry-After: 2\r\n",
	 2000},
	/* the reset of the limit that ran out */
	{"x-ratelimit-remaining-requests-day: 14399\r\n"
	 "x-ratelimit-reset-requests-day: 33011.38\r\n"
	 "x-ratelimit-remaining-tokens-minute: 0\r\n"
	 "x-ratelimit-reset-tokens-minute: 11.38\r\n",
	 11380},
	/* two ran out: the longer rest */
	{"x-ratelimit-remaining-requests-day: 0\r\n"
	 "x-ratelimit-reset-requests-day: 33011.382\r\n"
	 "x-ratelimit-remaining-tokens-minute: 0\r\n"
	 "x-ratelimit-reset-tokens-minute: 11.38\r\n",
	 33011382},
	/* a reset with no exhausted limit says nothing */
	{"x-ratelimit-remaining-tokens-minute: 5\r\n"
	 "x-ratelimit-reset-tokens-minute: 11.38\r\n",
	 -1},
	/* a name that merely starts like one */
	{"Retry-After-Ish: 9\r\n", -1},
};

static void
test_hdr_cooldown_ms(void **state)
{
	size_t i;
	long got;

	(void)state;
	for (i = 0; i < NELEM(cooldown_cases); i++) {
		got = hdr_cooldown_ms(cooldown_cases[i].block);
		if (got != cooldown_cases[i].want)
			fail_msg("row %zu: got %ld, want %ld", i, got,
				 cooldown_cases[i].want);
	}
}

/* hdr_limits: every announced pair, only sane ones known */

static void
test_hdr_limits(void **state)
{
	static const char block[] =
		"x-ratelimit-limit-requests-day: 14400\r\n"
		"x-ratelimit-remaining-requests-day: 14399\r\n"
		"x-ratelimit-reset-requests-day: 33011.38\r\n"
		"X-RateLimit-Limit-Tokens-Minute: 60000\r\n"
		"x-ratelimit-remaining-tokens-minute: 0\r\n"
		"x-ratelimit-reset-tokens-minute: 11.38\r\n"
		"x-ratelimit-limit-requests-minute: 30\r\n"
		"x-ratelimit-remaining-requests-minute: 31\r\n"
		"x-ratelimit-limit-tokens-hour: 1e6\r\n"
		"x-ratelimit-remaining-tokens-hour: 5\r\n"
		"x-ratelimit-remaining-tokens-day: 7\r\n";
	struct hdr_limit l[HDR_NLIMITS];
	size_t i;

	(void)state;
	hdr_limits(block, l);
	for (i = 0; i < HDR_NLIMITS; i++) {
		const char *n = hdr_limit_names[i];

		if (strcmp(n, "requests-day") == 0) {
			assert_true(l[i].hl_known);
			assert_int_equal(l[i].hl_limit, 14400);
			assert_int_equal(l[i].hl_remaining, 14399);
			assert_int_equal(l[i].hl_reset_ms, 33011380);
		} else if (strcmp(n, "tokens-minute") == 0) {
			/* names are case-insensitive; 0 left is known */
			assert_true(l[i].hl_known);
			assert_int_equal(l[i].hl_limit, 60000);
			assert_int_equal(l[i].hl_remaining, 0);
			assert_int_equal(l[i].hl_reset_ms, 11380);
		} else {
			/* more left than the limit, a float count, a pair
			 * without its limit, nothing at all: unknown */
			if (l[i].hl_known)
				fail_msg("%s: known", n);
			if (strcmp(n, "requests-hour") == 0)
				assert_int_equal(l[i].hl_reset_ms, -1);
		}
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hdr_forward_response),
		cmocka_unit_test(test_hdr_forward_response_len),
		cmocka_unit_test(test_hdr_trim_eol),
		cmocka_unit_test(test_hdr_value_ok),
		cmocka_unit_test(test_hdr_request_allowed),
		cmocka_unit_test(test_hdr_cooldown_ms),
		cmocka_unit_test(test_hdr_limits),
	};

	return cmocka_run_group_tests_name("test_headers", tests, NULL, NULL);
}
