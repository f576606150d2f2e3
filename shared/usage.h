/*
 * usage.h - the token counts Cerebras reports for an answer ("usage":
 * prompt_tokens and completion_tokens), read in passing as the answer goes
 * to the client: from a JSON answer once it is whole, and from an event
 * stream out of the event that carries them (the last one). Nothing is
 * held back or delayed: the scanner only looks at bytes already sent.
 */
#ifndef CP_USAGE_H
#define CP_USAGE_H

#include "util.h"

#include <stddef.h>

struct usage {
	long long u_prompt;	/* prompt tokens, -1 if unknown */
	long long u_completion; /* completion tokens, -1 if unknown */
};

struct usage_scan {
	int sc_sse;	   /* an event stream, else one JSON document */
	int sc_skip;	   /* the current event (or the JSON) is too big */
	int sc_line_start; /* the last byte seen ended a line */
	struct buf sc_buf; /* the current event, or the JSON so far */
	struct usage sc_usage;
};

void usage_scan_init(struct usage_scan *s, int sse);
void usage_scan_free(struct usage_scan *s);

/* The next bytes of the answer, as they were sent to the client. */
void usage_scan_feed(struct usage_scan *s, const char *p, size_t n);

/* The answer has ended: a JSON answer is read now. */
void usage_scan_end(struct usage_scan *s);

/*
 * Reads "usage" from one JSON document (an answer, or an event's data);
 * 1 if it held prompt_tokens or completion_tokens, with u set, else 0.
 */
int usage_from_json(const char *text, size_t len, struct usage *u);

#endif
