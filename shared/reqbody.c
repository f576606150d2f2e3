/*
 * reqbody.c - the model and token estimate of a chat request (see
 * reqbody.h), read with jansson.
 */
#include "reqbody.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

#define TOKENS_PER_MESSAGE 4
#define BYTES_PER_TOKEN	   4

/* Bytes of text in one message's content (a string or an array of parts). */
static size_t
content_bytes(json_t *content)
{
	json_t *part;
	json_t *text;
	size_t i;
	size_t n = 0;

	if (json_is_string(content))
		return json_string_length(content);
	if (!json_is_array(content))
		return 0;
	json_array_foreach(content, i, part)
	{
		text = json_object_get(part, "text");
		if (json_is_string(text))
			n += json_string_length(text);
	}
	return n;
}

/* A token count field: a non-negative integer, else -1. */
static long long
count_field(json_t *root, const char *name)
{
	json_t *v = json_object_get(root, name);

	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return -1;
	return (long long)json_integer_value(v);
}

enum cp_err
reqbody_add_max(struct buf *body, long long n)
{
	char member[48];
	const char *brace;
	size_t at;
	size_t mlen;
	enum cp_err err;

	brace = memchr(body->b_p, '{', body->b_len);
	if (brace == NULL)
		return CP_ERR_INVAL;
	at = (size_t)(brace - body->b_p) + 1;
	/* The object has members ("model", "messages"): a comma follows. */
	mlen = (size_t)snprintf(member, sizeof(member),
				"\"max_completion_tokens\":%lld,", n);
	err = buf_reserve(body, mlen);
	if (err)
		return err;
	memmove(body->b_p + at + mlen, body->b_p + at, body->b_len - at);
	memcpy(body->b_p + at, member, mlen);
	buf_commit(body, mlen);
	return CP_OK;
}

enum cp_err
reqbody_read(const char *body, size_t len, struct reqbody *rb, char *why,
	     size_t whysz)
{
	json_error_t e;
	json_t *root;
	json_t *model;
	json_t *msgs;
	json_t *m;
	size_t i;
	size_t bytes = 0;
	enum cp_err err = CP_ERR_BADREQ;

	memset(rb, 0, sizeof(*rb));
	rb->rb_max_completion = -1;
	root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &e);
	if (root == NULL) {
		snprintf(why, whysz,
			 "the body is not valid JSON: %s (at byte %d)", e.text,
			 e.position);
		return CP_ERR_BADREQ;
	}
	model = json_object_get(root, "model");
	msgs = json_object_get(root, "messages");
	if (!json_is_object(root))
		snprintf(why, whysz, "the body must be a JSON object");
	else if (!json_is_string(model) || json_string_length(model) == 0)
		snprintf(why, whysz, "\"model\" must be a non-empty string");
	else if (!json_is_array(msgs))
		snprintf(why, whysz, "\"messages\" must be an array");
	else
		err = CP_OK;
	if (err == CP_OK) {
		if (json_string_length(model) < sizeof(rb->rb_model))
			memcpy(rb->rb_model, json_string_value(model),
			       json_string_length(model) + 1);
		json_array_foreach(msgs, i, m)
		{
			bytes += content_bytes(json_object_get(m, "content"));
			rb->rb_messages++;
		}
		rb->rb_prompt_est =
			(long long)((bytes + BYTES_PER_TOKEN - 1) /
				    BYTES_PER_TOKEN) +
			(long long)rb->rb_messages * TOKENS_PER_MESSAGE;
		rb->rb_max_completion =
			count_field(root, "max_completion_tokens");
		if (rb->rb_max_completion < 0)
			rb->rb_max_completion = count_field(root, "max_tokens");
	}
	json_decref(root);
	return err;
}
