/*
 * reqbody.h - what the proxy reads of a chat request's body (or a legacy
 * text completion's): the model, an estimate of the prompt's tokens, and
 * the completion tokens asked for. The body itself is forwarded
 * unchanged.
 *
 * The estimate is deliberately cheap (no tokenizer): the bytes of the
 * messages' text (a string content, or the "text" of each part of an
 * array content), divided by 4 and rounded up, plus 4 per message for the
 * role and framing. It errs on the high side for English text, which is
 * what a budget wants. A completion's prompt counts as messages do: each
 * string (or array of token ids) one message, a token id 4 bytes.
 */
#ifndef CP_REQBODY_H
#define CP_REQBODY_H

#include "util.h"

#include <stddef.h>

#define REQBODY_MODEL_MAX 128

/* Which endpoint's body: the chat, or the legacy text completions. */
enum reqbody_kind {
	REQBODY_CHAT,	    /* "messages": an array */
	REQBODY_COMPLETION, /* "prompt": a string or an array of them */
};

struct reqbody {
	enum reqbody_kind rb_kind;
	char rb_model[REQBODY_MODEL_MAX]; /* "" if not a (short) string */
	long long rb_prompt_est;	  /* estimated prompt tokens */
	long long rb_max_completion;	  /* max_completion_tokens, else
					max_tokens; -1 if neither */
	int rb_messages; /* number of messages (prompts, for a completion) */
};

/*
 * Reads body. CP_OK with rb filled; CP_ERR_BADREQ, with why, if the body
 * is not a JSON object with a string "model" and a "messages" array.
 */
enum cp_err reqbody_read(const char *body, size_t len, struct reqbody *rb,
			 char *why, size_t whysz);

/*
 * reqbody_read for either kind: a completion's body needs a "prompt"
 * (a string, or an array of strings or of token ids) instead of
 * "messages"; its estimate counts the prompt's bytes as a message's.
 */
enum cp_err reqbody_read_kind(const char *body, size_t len,
			      enum reqbody_kind kind, struct reqbody *rb,
			      char *why, size_t whysz);

/*
 * For a body read as a chat request without max_completion_tokens or
 * max_tokens: inserts "max_completion_tokens": n as the object's first
 * member, every other byte left as it was. CP_ERR_TOOBIG if body cannot
 * grow that much.
 */
enum cp_err reqbody_add_max(struct buf *body, long long n);

/*
 * reqbody_add_max for rb's kind: a completion gets "max_tokens" (the
 * legacy endpoint's name), a chat "max_completion_tokens".
 */
enum cp_err reqbody_add_max_for(const struct reqbody *rb, struct buf *body,
				long long n);

#endif
