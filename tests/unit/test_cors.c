/*
 * test_cors.c - CORS header lines for ordinary and preflight responses.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>

#include <cmocka.h>

#include "cors.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

#include "unit.h"

#define LIST "https://a.example, https://b.example"
#define EXPOSE                                                                 \
	"Access-Control-Expose-Headers: *, X-Request-Id, Retry-After, "        \
	"X-Cache, "                                                            \
	"Age, x-ratelimit-limit-requests-day, "                                \
	"x-ratelimit-remaining-requests-day, x-ratelimit-reset-requests-day, " \
	"x-ratelimit-limit-tokens-minute, "                                    \
	"x-ratelimit-remaining-tokens-minute, "                                \
	"x-ratelimit-reset-tokens-minute\r\n"
#define ALLOW_ANY   "Access-Control-Allow-Origin: *\r\n" EXPOSE
#define VARY_ORIGIN "Vary: Origin\r\n"
#define METHODS	    "Access-Control-Allow-Methods: GET, HEAD, POST, OPTIONS\r\n"
#define MAX_AGE	    "Access-Control-Max-Age: 86400\r\n"
#define FALLBACK_HEADERS                                                       \
	"Access-Control-Allow-Headers: Content-Type, Authorization\r\n"
#define VARY_REQ_HEADERS "Vary: Access-Control-Request-Headers\r\n"

/* cors_headers: the exact bytes appended. */

struct cors_case {
	const char *allowed;
	const char *origin;
	const char *want;
};

static const struct cors_case cors_cases[] = {
	{"*", NULL, ALLOW_ANY},
	{"*", "", ALLOW_ANY},
	{"*", "https://a.example", ALLOW_ANY},
	{"*", "https://evil.example", ALLOW_ANY},
	{LIST, "https://a.example",
	 VARY_ORIGIN
	 "Access-Control-Allow-Origin: https://a.example\r\n" EXPOSE},
	{LIST, "https://b.example",
	 VARY_ORIGIN
	 "Access-Control-Allow-Origin: https://b.example\r\n" EXPOSE},
	{LIST, "https://c.example", VARY_ORIGIN},
	{LIST, NULL, VARY_ORIGIN},
	{LIST, "", VARY_ORIGIN},
	/* prefixes and extensions of a listed origin are other origins */
	{LIST, "https://a.example.evil", VARY_ORIGIN},
	{LIST, "https://a.exampl", VARY_ORIGIN},
	{LIST, "https://a.example/", VARY_ORIGIN},
	{LIST, "http://a.example", VARY_ORIGIN},
	{LIST, "https://A.example", VARY_ORIGIN},
	{LIST, " https://a.example", VARY_ORIGIN},
	{LIST, "https://a.example, https://b.example", VARY_ORIGIN},
	{LIST, "*", VARY_ORIGIN},
	{LIST, "null", VARY_ORIGIN},
	/* a one-origin list; spaces and tabs around entries */
	{"https://only.example", "https://only.example",
	 VARY_ORIGIN
	 "Access-Control-Allow-Origin: https://only.example\r\n" EXPOSE},
	{"  https://x.example\t,\thttps://y.example  ", "https://y.example",
	 VARY_ORIGIN
	 "Access-Control-Allow-Origin: https://y.example\r\n" EXPOSE},
	{"https://x.example,,https://y.example", "https://y.example",
	 VARY_ORIGIN
	 "Access-Control-Allow-Origin: https://y.example\r\n" EXPOSE},
	/* "*" inside a list is not a wildcard */
	{"https://x.example, *", "https://z.example", VARY_ORIGIN},
};

static void
test_cors_headers(void **state)
{
	struct buf b;
	size_t i;

	(void)state;
	for (i = 0; i < NELEM(cors_cases); i++) {
		const struct cors_case *t = &cors_cases[i];

		buf_init(&b, 4096);
		if (cors_headers(&b, t->allowed, t->origin) != CP_OK)
			fail_msg("row %zu: cors_headers failed", i);
		if (b.b_p == NULL || strcmp(b.b_p, t->want) != 0)
			fail_msg("row %zu {%s, %s}: got \"%s\", want \"%s\"", i,
				 t->allowed, nz(t->origin), nz(b.b_p), t->want);
		buf_free(&b);
	}
}

/* cors_headers appends to what is already there. */
static void
test_cors_headers_appends(void **state)
{
	struct buf b;

	(void)state;
	buf_init(&b, 4096);
	assert_int_equal(buf_adds(&b, "Status: 200 OK\r\n"), CP_OK);
	assert_int_equal(cors_headers(&b, "*", NULL), CP_OK);
	assert_string_equal(b.b_p, "Status: 200 OK\r\n" ALLOW_ANY);
	buf_free(&b);
}

/* A full buffer is an error, not a silently missing header. */
static void
test_cors_headers_cap(void **state)
{
	struct buf b;

	(void)state;
	buf_init(&b, 10);
	assert_int_equal(cors_headers(&b, "*", NULL), CP_ERR_TOOBIG);
	buf_free(&b);
	buf_init(&b, strlen(VARY_ORIGIN) + 5);
	assert_int_equal(cors_headers(&b, LIST, "https://a.example"),
			 CP_ERR_TOOBIG);
	buf_free(&b);
}

/* cors_preflight_headers: the lines a preflight adds to cors_headers'. */

struct preflight_case {
	const char *request_headers;
	const char *want;
};

static const struct preflight_case preflight_cases[] = {
	{"content-type, authorization, x-stainless-os",
	 METHODS MAX_AGE "Access-Control-Allow-Headers: content-type, "
			 "authorization, x-stainless-os\r\n" VARY_REQ_HEADERS},
	{"Content-Type", METHODS MAX_AGE
	 "Access-Control-Allow-Headers: Content-Type\r\n" VARY_REQ_HEADERS},
	{"authorization", METHODS MAX_AGE
	 "Access-Control-Allow-Headers: authorization\r\n" VARY_REQ_HEADERS},
	{"x-a,x-b", METHODS MAX_AGE
	 "Access-Control-Allow-Headers: x-a,x-b\r\n" VARY_REQ_HEADERS},
	/* no requested headers: no Allow-Headers line */
	{NULL, METHODS MAX_AGE},
	{"", METHODS MAX_AGE},
};

static void
test_cors_preflight(void **state)
{
	struct buf b;
	size_t i;

	(void)state;
	for (i = 0; i < NELEM(preflight_cases); i++) {
		const struct preflight_case *t = &preflight_cases[i];

		buf_init(&b, 4096);
		if (cors_preflight_headers(&b, t->request_headers) != CP_OK)
			fail_msg("row %zu: cors_preflight_headers failed", i);
		if (b.b_p == NULL || strcmp(b.b_p, t->want) != 0)
			fail_msg("row %zu {%s}:\ngot  \"%s\"\nwant \"%s\"", i,
				 nz(t->request_headers), nz(b.b_p), t->want);
		buf_free(&b);
	}
}

/* A whole preflight header block, built the way resp_begin builds it. */
static void
test_cors_preflight_block(void **state)
{
	struct buf b;

	(void)state;
	buf_init(&b, 4096);
	assert_int_equal(cors_headers(&b, LIST, "https://b.example"), CP_OK);
	assert_int_equal(cors_preflight_headers(&b, "content-type"), CP_OK);
	assert_string_equal(
		b.b_p, VARY_ORIGIN
		"Access-Control-Allow-Origin: https://b.example\r\n" EXPOSE
			METHODS MAX_AGE "Access-Control-Allow-Headers: "
		"content-type\r\n" VARY_REQ_HEADERS);
	buf_free(&b);

	buf_init(&b, 4096);
	assert_int_equal(cors_headers(&b, "*", NULL), CP_OK);
	assert_int_equal(cors_preflight_headers(&b, NULL), CP_OK);
	assert_string_equal(b.b_p, ALLOW_ANY METHODS MAX_AGE);
	buf_free(&b);
}

/*
 * A requested header list that is not a plain list of names is never
 * echoed (it would let a client inject header lines); the answer falls
 * back to the two headers the proxy needs.
 */
static const char *const bad_request_headers[] = {
	"content-type\r\nX-Injected: 1",
	"content-type\nX-Injected: 1",
	"content-type\rX-Injected: 1",
	"x-a: b",
	"content-type, x-foo(bar)",
	"content-type, x-foo(",
	"content-type;authorization",
	"content-type, \"authorization\"",
	"content-type, x\x01y",
	"content-type, x\x7fy",
	"content-type, caf\xc3\xa9",
	"a/b",
	"a=b",
	"{a}",
};

static void
test_cors_preflight_not_echoed(void **state)
{
	struct buf b;
	size_t i;

	(void)state;
	for (i = 0; i < NELEM(bad_request_headers); i++) {
		const char *rh = bad_request_headers[i];

		buf_init(&b, 4096);
		assert_int_equal(cors_preflight_headers(&b, rh), CP_OK);
		if (strstr(b.b_p, rh) != NULL)
			fail_msg("row %zu: request headers echoed: %s", i,
				 b.b_p);
		if (strstr(b.b_p, "Injected") != NULL ||
		    strstr(b.b_p, "x-foo") != NULL)
			fail_msg("row %zu: part of the request headers "
				 "echoed: %s",
				 i, b.b_p);
		if (strcmp(b.b_p,
			   METHODS MAX_AGE FALLBACK_HEADERS VARY_REQ_HEADERS) !=
		    0)
			fail_msg("row %zu: got \"%s\"", i, b.b_p);
		buf_free(&b);
	}
}

/* A header list beyond the length cap is not echoed either. */
static void
test_cors_preflight_long_list(void **state)
{
	struct buf b;
	char *rh;
	size_t n = 5000;

	(void)state;
	rh = malloc(n + 1);
	assert_non_null(rh);
	memset(rh, 'x', n);
	rh[n] = '\0';
	buf_init(&b, 65536);
	assert_int_equal(cors_preflight_headers(&b, rh), CP_OK);
	assert_null(strstr(b.b_p, "xxxxxxxx"));
	assert_non_null(strstr(b.b_p, FALLBACK_HEADERS));
	buf_free(&b);
	free(rh);
}

/* cors_header_list_ok */

struct list_case {
	const char *s;
	int want;
};

static const struct list_case list_cases[] = {
	{"content-type", 1},
	{"Content-Type, Authorization", 1},
	{"content-type, authorization, x-stainless-os", 1},
	{"content-type,authorization", 1},
	{"content-type,\tauthorization", 1},
	{"x-stainless-arch,x-stainless-lang,x-stainless-package-version", 1},
	{"a!#$%&'*+-.^_`|~z", 1},
	{"X-Request-Id", 1},
	{"", 0},
	{"a:b", 0},
	{"content-type\r\n", 0},
	{"content-type\n", 0},
	{"content-type\r", 0},
	{"a(b)", 0},
	{"a(b", 0},
	{"(", 0},
	{"a)", 0},
	{"a;b", 0},
	{"a/b", 0},
	{"a=b", 0},
	{"a\"b", 0},
	{"a\\b", 0},
	{"a?b", 0},
	{"a@b", 0},
	{"[a]", 0},
	{"{a}", 0},
	{"<a>", 0},
	{"a\x01", 0},
	{"a\x7f", 0},
	{"\xc3\xa9", 0},
};

static void
test_cors_header_list_ok(void **state)
{
	size_t i;
	int got;

	(void)state;
	for (i = 0; i < NELEM(list_cases); i++) {
		got = cors_header_list_ok(list_cases[i].s);
		if (got != list_cases[i].want)
			fail_msg("row %zu \"%s\": got %d, want %d", i,
				 list_cases[i].s, got, list_cases[i].want);
	}
}

/* The length cap is 2048 bytes. */
static void
test_cors_header_list_ok_cap(void **state)
{
	char s[2050];

	(void)state;
	memset(s, 'a', sizeof(s));
	s[2048] = '\0';
	assert_int_equal(cors_header_list_ok(s), 1);
	s[2048] = 'a';
	s[2049] = '\0';
	assert_int_equal(cors_header_list_ok(s), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cors_headers),
		cmocka_unit_test(test_cors_headers_appends),
		cmocka_unit_test(test_cors_headers_cap),
		cmocka_unit_test(test_cors_preflight),
		cmocka_unit_test(test_cors_preflight_block),
		cmocka_unit_test(test_cors_preflight_not_echoed),
		cmocka_unit_test(test_cors_preflight_long_list),
		cmocka_unit_test(test_cors_header_list_ok),
		cmocka_unit_test(test_cors_header_list_ok_cap),
	};

	return cmocka_run_group_tests_name("test_cors", tests, NULL, NULL);
}
