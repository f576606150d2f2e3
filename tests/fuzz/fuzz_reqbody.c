/*
 * fuzz_reqbody.c - the request body reader (shared/reqbody.c).
 *
 * Input: a chat request's body, exactly as many bytes as the client sent.
 * reqbody_read() must not read past them, must leave a NUL-terminated
 * model and sane counts; when it accepts a body without a max,
 * reqbody_add_max() (REQUEST_DEFAULT_MAX_COMPLETION_TOKENS) must leave a
 * body that still reads as a chat request (duplicate members allowed: a
 * "max_completion_tokens": null is not a max) with the same model and
 * messages, and, when the body had no max_completion_tokens member at
 * all, that max.
 */
#include "fuzz.h"

#include "reqbody.h"

#include <jansson.h>

/* Reads b like reqbody_read, but tolerating duplicate members. */
static int
reread(const struct buf *b, const struct reqbody *before, long long n,
       int had_member)
{
	json_error_t e;
	json_t *root;
	json_t *v;
	int ok;

	root = json_loadb(b->b_p, b->b_len, 0, &e);
	if (root == NULL || !json_is_object(root))
		fuzz_fail("reqbody_add_max: result is not a JSON object: %s",
			  e.text);
	ok = json_is_string(json_object_get(root, "model")) &&
	     json_is_array(json_object_get(root, "messages")) &&
	     json_array_size(json_object_get(root, "messages")) ==
		     (size_t)before->rb_messages;
	v = json_object_get(root, "max_completion_tokens");
	if (!had_member && (!json_is_integer(v) || json_integer_value(v) != n))
		ok = 0;
	json_decref(root);
	return ok;
}

/* Does the (accepted, so duplicate-free) body have the member at all? */
static int
has_member(const char *body, size_t size)
{
	json_error_t e;
	json_t *root = json_loadb(body, size, 0, &e);
	int has;

	if (root == NULL)
		fuzz_fail("an accepted body does not parse: %s", e.text);
	has = json_object_get(root, "max_completion_tokens") != NULL;
	json_decref(root);
	return has;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct reqbody rb;
	struct buf b;
	char why[256];
	char *body = fuzz_memdup(data, size);
	long long n = (long long)(size * 977 % 100000);
	int had_member;

	/* The same bytes as a legacy completion's body ("prompt"). */
	memset(&rb, 0x5a, sizeof(rb));
	if (reqbody_read_kind(body, size, REQBODY_COMPLETION, &rb, why,
			      sizeof(why)) == CP_OK) {
		if (strlen(rb.rb_model) >= sizeof(rb.rb_model))
			fuzz_fail("completion: model not terminated");
		if (rb.rb_prompt_est < 0 || rb.rb_messages < 1 ||
		    rb.rb_max_completion < -1)
			fuzz_fail("completion: bad counts");
	} else if (strlen(why) >= sizeof(why))
		fuzz_fail("completion: why not terminated");
	memset(&rb, 0x5a, sizeof(rb));
	if (reqbody_read(body, size, &rb, why, sizeof(why)) != CP_OK) {
		if (strlen(why) >= sizeof(why))
			fuzz_fail("why not terminated");
		free(body);
		return 0;
	}
	if (strlen(rb.rb_model) >= sizeof(rb.rb_model))
		fuzz_fail("model not terminated");
	if (rb.rb_prompt_est < 0 || rb.rb_messages < 0 ||
	    rb.rb_max_completion < -1)
		fuzz_fail("negative counts");
	if (rb.rb_max_completion < 0) {
		had_member = has_member(body, size);
		buf_init(&b, size + 64);
		if (buf_add(&b, body, size) != CP_OK)
			abort();
		if (reqbody_add_max(&b, n) != CP_OK)
			fuzz_fail("reqbody_add_max failed");
		if (!reread(&b, &rb, n, had_member))
			fuzz_fail("reqbody_add_max broke the body");
		buf_free(&b);
	}
	free(body);
	return 0;
}
