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

static enum cp_err
add_member(struct buf *body, const char *name, long long n)
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
	mlen = (size_t)snprintf(member, sizeof(member), "\"%s\":%lld,", name,
				n);
	err = buf_reserve(body, mlen);
	if (err)
		return err;
	memmove(body->b_p + at + mlen, body->b_p + at, body->b_len - at);
	memcpy(body->b_p + at, member, mlen);
	buf_commit(body, mlen);
	return CP_OK;
}

enum cp_err
reqbody_add_max(struct buf *body, long long n)
{
	return add_member(body, "max_completion_tokens", n);
}

enum cp_err
reqbody_add_max_for(const struct reqbody *rb, struct buf *body, long long n)
{
	return add_member(body,
			  rb->rb_kind == REQBODY_COMPLETION
				  ? "max_tokens"
				  : "max_completion_tokens",
			  n);
}

/* Bytes of text in a completion's prompt; -1 if it is not one. */
static long long
prompt_bytes(json_t *prompt, int *count)
{
	json_t *p;
	size_t i;
	long long n = 0;

	*count = 1;
	if (json_is_string(prompt))
		return (long long)json_string_length(prompt);
	if (!json_is_array(prompt))
		return -1;
	*count = 0;
	json_array_foreach(prompt, i, p)
	{
		if (json_is_string(p)) {
			n += (long long)json_string_length(p);
			(*count)++;
		} else if (json_is_integer(p))
			n += BYTES_PER_TOKEN; /* a token id */
		else if (json_is_array(p)) {
			/* one prompt as token ids */
			n += (long long)json_array_size(p) * BYTES_PER_TOKEN;
			(*count)++;
		} else
			return -1;
	}
	if (*count == 0)
		*count = 1;
	return n;
}

enum cp_err
reqbody_read(const char *body, size_t len, struct reqbody *rb, char *why,
	     size_t whysz)
{
	return reqbody_read_kind(body, len, REQBODY_CHAT, rb, why, whysz);
}

enum cp_err
reqbody_read_kind(const char *body, size_t len, enum reqbody_kind kind,
		  struct reqbody *rb, char *why, size_t whysz)
{
	json_error_t e;
	json_t *root;
	json_t *model;
	json_t *msgs;
	json_t *m;
	size_t i;
	size_t bytes = 0;
	enum cp_err err = CP_ERR_BADREQ;
	long long pbytes = 0;
	int nprompts = 0;

	memset(rb, 0, sizeof(*rb));
	rb->rb_kind = kind;
	rb->rb_max_completion = -1;
	root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &e);
	if (root == NULL) {
		snprintf(why, whysz,
			 "the body is not valid JSON: %s (at byte %d)", e.text,
			 e.position);
		return CP_ERR_BADREQ;
	}
	model = json_object_get(root, "model");
	msgs = json_object_get(root, kind == REQBODY_COMPLETION ? "prompt"
								: "messages");
	if (kind == REQBODY_COMPLETION && msgs != NULL)
		pbytes = prompt_bytes(msgs, &nprompts);
	if (!json_is_object(root))
		snprintf(why, whysz, "the body must be a JSON object");
	else if (!json_is_string(model) || json_string_length(model) == 0)
		snprintf(why, whysz, "\"model\" must be a non-empty string");
	else if (kind == REQBODY_COMPLETION && (msgs == NULL || pbytes < 0))
		snprintf(why, whysz,
			 "\"prompt\" must be a string or an array of strings "
			 "or token ids");
	else if (kind == REQBODY_CHAT && !json_is_array(msgs))
		snprintf(why, whysz, "\"messages\" must be an array");
	else
		err = CP_OK;
	if (err == CP_OK) {
		if (json_string_length(model) < sizeof(rb->rb_model))
			memcpy(rb->rb_model, json_string_value(model),
			       json_string_length(model) + 1);
		if (kind == REQBODY_COMPLETION) {
			bytes = (size_t)pbytes;
			rb->rb_messages = nprompts;
		} else
			json_array_foreach(msgs, i, m)
			{
				bytes += content_bytes(
					json_object_get(m, "content"));
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
