/*
 * test_reqbody.c - the model and token estimate read from a chat body (or
 * a legacy completion's), and the bodies that are not such requests.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>

#include <cmocka.h>

#include "reqbody.h"

#include <stdio.h>
#include <string.h>

#include "unit.h"

struct rb_case {
	const char *body;
	enum cp_err ret;
	const char *model;    /* or the reason's text, on CP_ERR_BADREQ */
	long long prompt_est; /* ceil(text bytes / 4) + 4 per message */
	long long max_completion;
};

static const struct rb_case rb_cases[] = {
	{"{\"model\":\"llama3.1-8b\",\"messages\":[{\"role\":\"user\","
	 "\"content\":\"Hello proxy\"}]}",
	 CP_OK, "llama3.1-8b", 3 + 4, -1},
	/* two messages, 8 + 1 bytes; max_completion_tokens wins */
	{"{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":"
	 "\"12345678\"},{\"role\":\"user\",\"content\":\"x\"}],"
	 "\"max_tokens\":10,\"max_completion_tokens\":20}",
	 CP_OK, "m", 3 + 8, 20},
	/* parts: only their text counts; max_tokens alone */
	{"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":["
	 "{\"type\":\"text\",\"text\":\"abcd\"},{\"type\":\"image_url\"},"
	 "{\"type\":\"text\",\"text\":\"e\"}]}],\"max_tokens\":5}",
	 CP_OK, "m", 2 + 4, 5},
	/* no messages at all; a negative or fractional max is no max */
	{"{\"model\":\"m\",\"messages\":[],\"max_tokens\":-3}", CP_OK, "m", 0,
	 -1},
	{"{\"model\":\"m\",\"messages\":[],\"max_completion_tokens\":1.5}",
	 CP_OK, "m", 0, -1},
	/* not chat requests */
	{"[]", CP_ERR_BADREQ, "JSON object", 0, -1},
	{"{\"messages\":[]}", CP_ERR_BADREQ, "\"model\"", 0, -1},
	{"{\"model\":\"\",\"messages\":[]}", CP_ERR_BADREQ, "\"model\"", 0, -1},
	{"{\"model\":7,\"messages\":[]}", CP_ERR_BADREQ, "\"model\"", 0, -1},
	{"{\"model\":\"m\",\"messages\":{}}", CP_ERR_BADREQ, "\"messages\"", 0,
	 -1},
	{"{\"model\":\"m\",\"model\":\"n\",\"messages\":[]}", CP_ERR_BADREQ,
	 "not valid JSON", 0, -1},
	{"{\"model\":\"m\",", CP_ERR_BADREQ, "not valid JSON", 0, -1},
	{"", CP_ERR_BADREQ, "not valid JSON", 0, -1},
};

/* Reads each row's body as kind and checks what came out. */
static void
check_cases(const struct rb_case *cases, size_t n, enum reqbody_kind kind)
{
	struct reqbody rb;
	char why[160];
	size_t i;

	for (i = 0; i < n; i++) {
		const struct rb_case *t = &cases[i];
		enum cp_err ret;

		why[0] = '\0';
		ret = reqbody_read_kind(t->body, strlen(t->body), kind, &rb,
					why, sizeof(why));
		if (ret != t->ret)
			fail_msg("row %zu: returned %d (%s)", i, (int)ret, why);
		if (ret != CP_OK) {
			if (strstr(why, t->model) == NULL)
				fail_msg("row %zu: reason \"%s\"", i, why);
			continue;
		}
		if (rb.rb_kind != kind || strcmp(rb.rb_model, t->model) != 0 ||
		    rb.rb_prompt_est != t->prompt_est ||
		    rb.rb_max_completion != t->max_completion)
			fail_msg("row %zu: %s %lld %lld", i, rb.rb_model,
				 rb.rb_prompt_est, rb.rb_max_completion);
	}
}

static void
test_reqbody_read(void **state)
{
	(void)state;
	check_cases(rb_cases, NELEM(rb_cases), REQBODY_CHAT);
}

/* A legacy completion's body: "prompt" instead of "messages". */
static const struct rb_case cmpl_cases[] = {
	/* a string: 8 bytes, one prompt */
	{"{\"model\":\"m\",\"prompt\":\"12345678\"}", CP_OK, "m", 2 + 4, -1},
	/* strings: 5 bytes, two prompts; max_tokens is the legacy max */
	{"{\"model\":\"m\",\"prompt\":[\"abcd\",\"e\"],\"max_tokens\":5}",
	 CP_OK, "m", 2 + 8, 5},
	/* token ids: 4 bytes each, one prompt */
	{"{\"model\":\"m\",\"prompt\":[1,2,3]}", CP_OK, "m", 3 + 4, -1},
	/* arrays of token ids: one prompt each */
	{"{\"model\":\"m\",\"prompt\":[[1,2],[3]]}", CP_OK, "m", 3 + 8, -1},
	{"{\"model\":\"m\",\"prompt\":\"\",\"max_completion_tokens\":7}", CP_OK,
	 "m", 4, 7},
	/* not completions */
	{"{\"model\":\"m\"}", CP_ERR_BADREQ, "\"prompt\"", 0, -1},
	{"{\"model\":\"m\",\"messages\":[]}", CP_ERR_BADREQ, "\"prompt\"", 0,
	 -1},
	{"{\"model\":\"m\",\"prompt\":{}}", CP_ERR_BADREQ, "\"prompt\"", 0, -1},
	{"{\"model\":\"m\",\"prompt\":[\"a\",true]}", CP_ERR_BADREQ,
	 "\"prompt\"", 0, -1},
	{"{\"model\":\"m\",\"prompt\":null}", CP_ERR_BADREQ, "\"prompt\"", 0,
	 -1},
	{"{\"prompt\":\"x\"}", CP_ERR_BADREQ, "\"model\"", 0, -1},
	{"[\"x\"]", CP_ERR_BADREQ, "JSON object", 0, -1},
};

static void
test_reqbody_completion(void **state)
{
	(void)state;
	check_cases(cmpl_cases, NELEM(cmpl_cases), REQBODY_COMPLETION);
}

/* A completion gets "max_tokens", a chat "max_completion_tokens". */
static void
test_reqbody_add_max_for(void **state)
{
	static const char body[] = "{\"model\":\"m\",\"prompt\":\"hi\"}";
	struct reqbody rb;
	struct buf b;
	char why[160];

	(void)state;
	buf_init(&b, 1024);
	assert_int_equal(buf_adds(&b, body), CP_OK);
	assert_int_equal(reqbody_read_kind(b.b_p, b.b_len, REQBODY_COMPLETION,
					   &rb, why, sizeof(why)),
			 CP_OK);
	assert_int_equal(reqbody_add_max_for(&rb, &b, 64), CP_OK);
	assert_string_equal(b.b_p, "{\"max_tokens\":64,\"model\":\"m\","
				   "\"prompt\":\"hi\"}");
	assert_int_equal(reqbody_read_kind(b.b_p, b.b_len, REQBODY_COMPLETION,
					   &rb, why, sizeof(why)),
			 CP_OK);
	assert_int_equal(rb.rb_max_completion, 64);
	buf_free(&b);
	rb.rb_kind = REQBODY_CHAT;
	buf_init(&b, 1024);
	assert_int_equal(buf_adds(&b, "{\"model\":\"m\",\"messages\":[]}"),
			 CP_OK);
	assert_int_equal(reqbody_add_max_for(&rb, &b, 8), CP_OK);
	assert_string_equal(b.b_p, "{\"max_completion_tokens\":8,\"model\":"
				   "\"m\",\"messages\":[]}");
	buf_free(&b);
}

/* A model name too long to keep is read as unknown, not cut. */
static void
test_reqbody_long_model(void **state)
{
	char body[512];
	char model[300];
	struct reqbody rb;
	char why[160];

	(void)state;
	memset(model, 'a', sizeof(model) - 1);
	model[sizeof(model) - 1] = '\0';
	snprintf(body, sizeof(body), "{\"model\":\"%s\",\"messages\":[]}",
		 model);
	assert_int_equal(
		reqbody_read(body, strlen(body), &rb, why, sizeof(why)), CP_OK);
	assert_string_equal(rb.rb_model, "");
}

/* The max goes in first; every other byte stays. */
static void
test_reqbody_add_max(void **state)
{
	static const char body[] =
		"  {\"model\":\"m\",\"messages\":[{\"content\":\"{x\"}]}\n";
	struct reqbody rb;
	struct buf b;
	char why[160];

	(void)state;
	buf_init(&b, 1024);
	assert_int_equal(buf_adds(&b, body), CP_OK);
	assert_int_equal(reqbody_add_max(&b, 256), CP_OK);
	assert_string_equal(b.b_p,
			    "  {\"max_completion_tokens\":256,\"model\":"
			    "\"m\",\"messages\":[{\"content\":\"{x\"}]}\n");
	assert_int_equal(reqbody_read(b.b_p, b.b_len, &rb, why, sizeof(why)),
			 CP_OK);
	assert_int_equal(rb.rb_max_completion, 256);
	buf_free(&b);
	/* No room under the body's cap: left as it was. */
	buf_init(&b, sizeof(body) - 1);
	assert_int_equal(buf_adds(&b, body), CP_OK);
	assert_int_equal(reqbody_add_max(&b, 256), CP_ERR_TOOBIG);
	assert_string_equal(b.b_p, body);
	buf_free(&b);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reqbody_read),
		cmocka_unit_test(test_reqbody_long_model),
		cmocka_unit_test(test_reqbody_add_max),
		cmocka_unit_test(test_reqbody_completion),
		cmocka_unit_test(test_reqbody_add_max_for),
	};

	return cmocka_run_group_tests_name("test_reqbody", tests, NULL, NULL);
}
