/*
 * test_util.c - parse_ll, is_tchar, cp_strerror, capped buffers,
 * json_escape, log_escape, key_fingerprint, http_reason.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>

#include <cmocka.h>

#include "log.h"
#include "respond.h"
#include "util.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "unit.h"

/* parse_ll */

struct parse_ll_case {
	const char *str;
	long long min;
	long long max;
	enum cp_err ret;
	long long out;	    /* when ret == CP_OK */
	const char *errstr; /* when ret == CP_ERR_INVAL */
};

static const struct parse_ll_case parse_ll_cases[] = {
	{"0", 0, 10, CP_OK, 0, NULL},
	{"42", 0, 100, CP_OK, 42, NULL},
	{"-5", -10, 10, CP_OK, -5, NULL},
	{"10", 0, 10, CP_OK, 10, NULL},
	{"-10", -10, 10, CP_OK, -10, NULL},
	{"007", 0, 10, CP_OK, 7, NULL},
	{"9223372036854775807", 0, LLONG_MAX, CP_OK, LLONG_MAX, NULL},
	{"-9223372036854775808", LLONG_MIN, 0, CP_OK, LLONG_MIN, NULL},
	{"", 0, 10, CP_ERR_INVAL, 0, "empty"},
	{NULL, 0, 10, CP_ERR_INVAL, 0, "empty"},
	{"abc", 0, 10, CP_ERR_INVAL, 0, "not a number"},
	{"4x", 0, 10, CP_ERR_INVAL, 0, "not a number"},
	{" 4", 0, 10, CP_ERR_INVAL, 0, "not a number"},
	{"4 ", 0, 10, CP_ERR_INVAL, 0, "not a number"},
	{"+4", 0, 10, CP_ERR_INVAL, 0, "not a number"},
	{"-", 0, 10, CP_ERR_INVAL, 0, "not a number"},
	{"--5", -10, 10, CP_ERR_INVAL, 0, "not a number"},
	{"-+5", -10, 10, CP_ERR_INVAL, 0, "not a number"},
	{"- 5", -10, 10, CP_ERR_INVAL, 0, "not a number"},
	{"0x10", 0, 100, CP_ERR_INVAL, 0, "not a number"},
	{"1.5", 0, 10, CP_ERR_INVAL, 0, "not a number"},
	{"-1", 0, 10, CP_ERR_INVAL, 0, "too small"},
	{"4", 5, 10, CP_ERR_INVAL, 0, "too small"},
	{"11", 0, 10, CP_ERR_INVAL, 0, "too large"},
	{"99999999999999999999", 0, LLONG_MAX, CP_ERR_INVAL, 0, "too large"},
	{"9223372036854775808", 0, LLONG_MAX, CP_ERR_INVAL, 0, "too large"},
	{"-99999999999999999999", LLONG_MIN, 0, CP_ERR_INVAL, 0, "too small"},
};

static void
test_parse_ll(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < NELEM(parse_ll_cases); i++) {
		const struct parse_ll_case *t = &parse_ll_cases[i];
		long long out = 12345;
		const char *errstr = NULL;
		enum cp_err ret;

		ret = parse_ll(t->str, t->min, t->max, &out, &errstr);
		if (ret != t->ret)
			fail_msg("row %zu \"%s\": returned %d, want %d", i,
				 t->str ? t->str : "(null)", (int)ret,
				 (int)t->ret);
		if (t->ret == CP_OK) {
			if (out != t->out)
				fail_msg("row %zu \"%s\": out %lld, want %lld",
					 i, t->str, out, t->out);
		} else {
			if (errstr == NULL || strcmp(errstr, t->errstr) != 0)
				fail_msg("row %zu \"%s\": errstr \"%s\", want "
					 "\"%s\"",
					 i, t->str ? t->str : "(null)",
					 errstr ? errstr : "(null)", t->errstr);
			/* A failure leaves *out alone. */
			if (out != 12345)
				fail_msg("row %zu: out changed on failure", i);
		}
	}
}

/* is_tchar: RFC 9110 token characters */

struct tchar_case {
	const char *chars;
	int want;
};

static const struct tchar_case tchar_cases[] = {
	{"abcxyzABCXYZ0189", 1},
	{"!#$%&'*+-.^_`|~", 1},
	{" \t\r\n\"(),/:;<=>?@[\\]{}", 0},
	{"\x01\x1f\x7f\x80\xc3\xa9\xff", 0},
};

static void
test_is_tchar(void **state)
{
	size_t i;
	const char *p;

	(void)state;
	for (i = 0; i < NELEM(tchar_cases); i++)
		for (p = tchar_cases[i].chars; *p != '\0'; p++)
			if (is_tchar(*p) != tchar_cases[i].want)
				fail_msg("is_tchar(0x%02x) is %d, want %d",
					 (unsigned char)*p, is_tchar(*p),
					 tchar_cases[i].want);
	assert_int_equal(is_tchar('\0'), 0);
}

/* cp_strerror: every code has its own text. */
static void
test_cp_strerror(void **state)
{
	int i;
	int j;

	(void)state;
	assert_string_equal(cp_strerror(CP_OK), "ok");
	assert_string_equal(cp_strerror(CP_ERR_CONFIG),
			    "invalid configuration");
	assert_string_equal(cp_strerror(CP_ERR_INVAL), "invalid value");
	for (i = CP_OK; i <= CP_ERR_CONFIG; i++) {
		if (strcmp(cp_strerror((enum cp_err)i), "unknown error") == 0)
			fail_msg("code %d has no text", i);
		for (j = CP_OK; j < i; j++)
			if (strcmp(cp_strerror((enum cp_err)i),
				   cp_strerror((enum cp_err)j)) == 0)
				fail_msg("codes %d and %d share a text", j, i);
	}
	assert_string_equal(cp_strerror((enum cp_err)9999), "unknown error");
}

/* buf_* */

static void
test_buf_cap(void **state)
{
	struct buf b;

	(void)state;
	buf_init(&b, 8);
	assert_null(b.b_p);
	assert_int_equal(buf_add(&b, "abcd", 4), CP_OK);
	assert_int_equal(buf_adds(&b, "efgh"), CP_OK);
	assert_int_equal(b.b_len, 8);
	assert_string_equal(b.b_p, "abcdefgh");
	/* One byte over the cap fails and changes nothing. */
	assert_int_equal(buf_add(&b, "i", 1), CP_ERR_TOOBIG);
	assert_int_equal(buf_adds(&b, "i"), CP_ERR_TOOBIG);
	assert_int_equal(buf_printf(&b, "%d", 1), CP_ERR_TOOBIG);
	assert_int_equal(b.b_len, 8);
	assert_string_equal(b.b_p, "abcdefgh");
	/* Adding nothing at the cap is fine. */
	assert_int_equal(buf_add(&b, "", 0), CP_OK);
	assert_int_equal(b.b_len, 8);
	buf_free(&b);
	assert_null(b.b_p);
	assert_int_equal(b.b_len, 0);

	/* A single add larger than the cap, on an empty buffer. */
	buf_init(&b, 3);
	assert_int_equal(buf_add(&b, "abcd", 4), CP_ERR_TOOBIG);
	assert_int_equal(b.b_len, 0);
	buf_free(&b);

	/* A huge length must not wrap around the cap check. */
	buf_init(&b, 16);
	assert_int_equal(buf_add(&b, "ab", 2), CP_OK);
	assert_int_equal(buf_add(&b, "x", SIZE_MAX), CP_ERR_TOOBIG);
	assert_int_equal(buf_add(&b, "x", SIZE_MAX - 1), CP_ERR_TOOBIG);
	assert_string_equal(b.b_p, "ab");
	buf_free(&b);
}

/* reserve + commit: how the request body is read, straight into the buffer. */
static void
test_buf_reserve_commit(void **state)
{
	struct buf b;

	(void)state;
	buf_init(&b, 10);
	assert_int_equal(buf_reserve(&b, 6), CP_OK);
	assert_non_null(b.b_p);
	assert_true(b.b_cap >= 7);
	memcpy(b.b_p, "abcdef", 6);
	buf_commit(&b, 4); /* fewer than reserved */
	assert_int_equal(b.b_len, 4);
	assert_string_equal(b.b_p, "abcd");
	assert_int_equal(buf_reserve(&b, 6), CP_OK); /* exactly to the cap */
	assert_int_equal(buf_reserve(&b, 7), CP_ERR_TOOBIG);
	assert_int_equal(buf_reserve(&b, SIZE_MAX), CP_ERR_TOOBIG);
	buf_commit(&b, 0);
	assert_string_equal(b.b_p, "abcd");
	buf_free(&b);
}

static void
test_buf_nul_terminated(void **state)
{
	struct buf b;

	(void)state;
	buf_init(&b, 1024);
	/* An empty add still yields a valid empty string. */
	assert_int_equal(buf_add(&b, "", 0), CP_OK);
	assert_non_null(b.b_p);
	assert_string_equal(b.b_p, "");
	/* Binary data: only len bytes are taken, then a NUL. */
	assert_int_equal(buf_add(&b, "xyzzy", 3), CP_OK);
	assert_int_equal(b.b_len, 3);
	assert_int_equal(b.b_p[3], '\0');
	assert_string_equal(b.b_p, "xyz");
	assert_int_equal(buf_printf(&b, "-%d-%s", 7, "q"), CP_OK);
	assert_string_equal(b.b_p, "xyz-7-q");
	assert_int_equal(b.b_len, strlen("xyz-7-q"));
	buf_free(&b);
}

static void
test_buf_grow(void **state)
{
	struct buf b;
	char big[4000];
	size_t i;

	(void)state;
	memset(big, 'x', sizeof(big));
	big[sizeof(big) - 1] = '\0';
	buf_init(&b, 1 << 20);
	for (i = 0; i < 100; i++)
		assert_int_equal(buf_add(&b, big, sizeof(big) - 1), CP_OK);
	assert_int_equal(b.b_len, 100 * (sizeof(big) - 1));
	assert_true(b.b_cap > b.b_len);
	assert_int_equal(b.b_p[b.b_len], '\0');
	assert_int_equal(b.b_p[0], 'x');
	assert_int_equal(b.b_p[b.b_len - 1], 'x');
	buf_free(&b);
}

static void
test_buf_printf_large(void **state)
{
	struct buf b;
	char big[1001];

	(void)state;
	memset(big, 'y', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';

	/* More than buf_printf's 512-byte stack buffer. */
	buf_init(&b, 4096);
	assert_int_equal(buf_adds(&b, "<"), CP_OK);
	assert_int_equal(buf_printf(&b, "%s|%d", big, 42), CP_OK);
	assert_int_equal(b.b_len, 1 + 1000 + 3);
	assert_int_equal(b.b_p[0], '<');
	assert_memory_equal(b.b_p + 1, big, 1000);
	assert_string_equal(b.b_p + 1001, "|42");
	buf_free(&b);

	/* Exactly 511 and 512 bytes: both sides of the stack buffer. */
	buf_init(&b, 4096);
	assert_int_equal(buf_printf(&b, "%.511s", big), CP_OK);
	assert_int_equal(b.b_len, 511);
	assert_memory_equal(b.b_p, big, 511);
	buf_reset(&b);
	assert_int_equal(buf_printf(&b, "%.512s", big), CP_OK);
	assert_int_equal(b.b_len, 512);
	assert_memory_equal(b.b_p, big, 512);
	assert_int_equal(b.b_p[512], '\0');
	buf_free(&b);

	/* The cap applies to the large path too. */
	buf_init(&b, 600);
	assert_int_equal(buf_printf(&b, "%s", big), CP_ERR_TOOBIG);
	assert_int_equal(b.b_len, 0);
	buf_free(&b);
}

static void
test_buf_reset(void **state)
{
	struct buf b;
	char *p;
	size_t cap;

	(void)state;
	buf_init(&b, 4096);
	buf_reset(&b); /* on a never-used buffer: harmless */
	assert_null(b.b_p);
	assert_int_equal(buf_adds(&b, "hello, world"), CP_OK);
	p = b.b_p;
	cap = b.b_cap;
	buf_reset(&b);
	assert_int_equal(b.b_len, 0);
	assert_ptr_equal(b.b_p, p);
	assert_int_equal(b.b_cap, cap);
	assert_string_equal(b.b_p, "");
	assert_int_equal(buf_adds(&b, "again"), CP_OK);
	assert_string_equal(b.b_p, "again");
	assert_ptr_equal(b.b_p, p);
	buf_free(&b);
}

/* json_escape */

struct str_case {
	const char *in;
	const char *want;
};

static const struct str_case json_cases[] = {
	{"", ""},
	{"plain text", "plain text"},
	{"a\"b", "a\\\"b"},
	{"\"", "\\\""},
	{"back\\slash", "back\\\\slash"},
	{"line\nbreak", "line\\u000abreak"},
	{"\r\t", "\\u000d\\u0009"},
	{"\x01", "\\u0001"},
	{"\x1f", "\\u001f"},
	{"\x1b[31m", "\\u001b[31m"},
	{"\x7f", "\x7f"},
	{"caf\xc3\xa9", "caf\xc3\xa9"},
	{"\xe2\x82\xac 5", "\xe2\x82\xac 5"},
	{"</script>", "</script>"},
	{"end\\", "end\\\\"},
	{"\"\\\n", "\\\"\\\\\\u000a"},
};

static void
test_json_escape(void **state)
{
	struct buf b;
	size_t i;

	(void)state;
	for (i = 0; i < NELEM(json_cases); i++) {
		buf_init(&b, 1024);
		assert_int_equal(buf_adds(&b, "["), CP_OK);
		assert_int_equal(json_escape(&b, json_cases[i].in), CP_OK);
		assert_int_equal(buf_adds(&b, "]"), CP_OK);
		if (b.b_len != strlen(json_cases[i].want) + 2 ||
		    strncmp(b.b_p + 1, json_cases[i].want, b.b_len - 2) != 0)
			fail_msg("row %zu: got %s", i, b.b_p);
		buf_free(&b);
	}
}

static void
test_json_escape_cap(void **state)
{
	struct buf b;

	(void)state;
	/* "\n" becomes 6 bytes; a cap of 5 refuses it. */
	buf_init(&b, 5);
	assert_int_equal(json_escape(&b, "\n"), CP_ERR_TOOBIG);
	buf_free(&b);
	buf_init(&b, 6);
	assert_int_equal(json_escape(&b, "\n"), CP_OK);
	assert_string_equal(b.b_p, "\\u000a");
	buf_free(&b);
}

/* log_escape */

static const struct str_case log_cases[] = {
	{"", ""},
	{"GET /v1/chat/completions", "GET /v1/chat/completions"},
	{"a\nb", "a\\x0ab"},
	{"a\r\nX-Forged: 1", "a\\x0d\\x0aX-Forged: 1"},
	{"\t", "\\x09"},
	{"say \"hi\"", "say \\x22hi\\x22"},
	{"back\\slash", "back\\x5cslash"},
	{"\x01\x1f\x7f", "\\x01\\x1f\\x7f"},
	{"caf\xc3\xa9", "caf\\xc3\\xa9"},
	{"\x1b[2J", "\\x1b[2J"},
};

static void
test_log_escape(void **state)
{
	char out[256];
	size_t i;

	(void)state;
	for (i = 0; i < NELEM(log_cases); i++) {
		assert_ptr_equal(log_escape(log_cases[i].in, out, sizeof(out)),
				 out);
		if (strcmp(out, log_cases[i].want) != 0)
			fail_msg("row %zu: got \"%s\", want \"%s\"", i, out,
				 log_cases[i].want);
	}
	/* NULL input is an empty string. */
	memset(out, 'Z', sizeof(out));
	log_escape(NULL, out, sizeof(out));
	assert_string_equal(out, "");
}

struct log_trunc_case {
	const char *in;
	size_t outsz;
	const char *want;
};

static const struct log_trunc_case log_trunc_cases[] = {
	{"abcdef", 7, "abcdef"},
	{"abcdef", 6, "abcde"},
	{"abcdef", 4, "abc"},
	{"abcdef", 2, "a"},
	{"abcdef", 1, ""},
	/* An escape is never cut in half. */
	{"\n", 5, "\\x0a"},
	{"\n", 4, ""},
	{"a\n", 5, "a"},
	{"a\nb", 6, "a\\x0a"},
	{"a\nb", 7, "a\\x0ab"},
	{"\"\"", 8, "\\x22"},
	{"\"\"", 9, "\\x22\\x22"},
};

static void
test_log_escape_truncate(void **state)
{
	char out[32];
	size_t i;
	size_t j;

	(void)state;
	for (i = 0; i < NELEM(log_trunc_cases); i++) {
		const struct log_trunc_case *t = &log_trunc_cases[i];

		memset(out, 'Z', sizeof(out));
		log_escape(t->in, out, t->outsz);
		if (memchr(out, '\0', t->outsz) == NULL)
			fail_msg("row %zu: not NUL-terminated within %zu", i,
				 t->outsz);
		if (strcmp(out, t->want) != 0)
			fail_msg("row %zu: got \"%s\", want \"%s\"", i, out,
				 t->want);
		/* Nothing written past outsz. */
		for (j = t->outsz; j < sizeof(out); j++)
			if (out[j] != 'Z')
				fail_msg("row %zu: wrote byte %zu beyond outsz "
					 "%zu",
					 i, j, t->outsz);
	}
	/* outsz 0: nothing written at all. */
	memset(out, 'Z', sizeof(out));
	assert_ptr_equal(log_escape("abc", out, 0), out);
	assert_int_equal(out[0], 'Z');
}

/* key_fingerprint */

static const struct str_case fingerprint_cases[] = {
	/* Published FNV-1a 32-bit test vectors. */
	{"", "811c9dc5"},
	{"a", "e40c292c"},
	{"foobar", "bf9cf968"},
};

static int
is_lower_hex8(const char *s)
{
	size_t i;

	for (i = 0; i < 8; i++)
		if (!((s[i] >= '0' && s[i] <= '9') ||
		      (s[i] >= 'a' && s[i] <= 'f')))
			return 0;
	return s[8] == '\0';
}

static void
test_key_fingerprint(void **state)
{
	static const char *const keys[] = {
		"sk-a",	    "sk-b",	"csk-0123456789abcdef0123456789abcdef",
		"0badc0de", "ffffffff",
	};
	char fa[9];
	char fb[9];
	size_t i;

	(void)state;
	for (i = 0; i < NELEM(fingerprint_cases); i++) {
		key_fingerprint(fingerprint_cases[i].in, fa);
		if (strcmp(fa, fingerprint_cases[i].want) != 0)
			fail_msg("row %zu \"%s\": got %s, want %s", i,
				 fingerprint_cases[i].in, fa,
				 fingerprint_cases[i].want);
	}
	for (i = 0; i < NELEM(keys); i++) {
		memset(fa, 'Z', sizeof(fa));
		key_fingerprint(keys[i], fa);
		if (!is_lower_hex8(fa))
			fail_msg("key %zu: \"%.9s\" is not 8 lowercase hex "
				 "digits",
				 i, fa);
		/* Deterministic. */
		key_fingerprint(keys[i], fb);
		assert_string_equal(fa, fb);
		/* Never the key itself, nor a part of it. */
		if (strstr(keys[i], fa) != NULL || strstr(fa, keys[i]) != NULL)
			fail_msg("key %zu: fingerprint %s reveals the key", i,
				 fa);
	}
	key_fingerprint("sk-a", fa);
	key_fingerprint("sk-b", fb);
	assert_string_not_equal(fa, fb);
}

/* http_reason */

struct reason_case {
	int status;
	const char *want;
};

static const struct reason_case reason_cases[] = {
	{200, "OK"},
	{400, "Bad Request"},
	{404, "Not Found"},
	{405, "Method Not Allowed"},
	{413, "Content Too Large"},
	{429, "Too Many Requests"},
	{500, "Internal Server Error"},
	{502, "Bad Gateway"},
	{503, "Service Unavailable"},
	{504, "Gateway Timeout"},
	{0, ""},
	{-1, ""},
	{299, ""},
	{999, ""},
};

static void
test_http_reason(void **state)
{
	size_t i;
	const char *got;

	(void)state;
	for (i = 0; i < NELEM(reason_cases); i++) {
		got = http_reason(reason_cases[i].status);
		if (got == NULL || strcmp(got, reason_cases[i].want) != 0)
			fail_msg("%d: got \"%s\", want \"%s\"",
				 reason_cases[i].status, got ? got : "(null)",
				 reason_cases[i].want);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_ll),
		cmocka_unit_test(test_is_tchar),
		cmocka_unit_test(test_cp_strerror),
		cmocka_unit_test(test_buf_cap),
		cmocka_unit_test(test_buf_reserve_commit),
		cmocka_unit_test(test_buf_nul_terminated),
		cmocka_unit_test(test_buf_grow),
		cmocka_unit_test(test_buf_printf_large),
		cmocka_unit_test(test_buf_reset),
		cmocka_unit_test(test_json_escape),
		cmocka_unit_test(test_json_escape_cap),
		cmocka_unit_test(test_log_escape),
		cmocka_unit_test(test_log_escape_truncate),
		cmocka_unit_test(test_key_fingerprint),
		cmocka_unit_test(test_http_reason),
	};

	return cmocka_run_group_tests_name("test_util", tests, NULL, NULL);
}
