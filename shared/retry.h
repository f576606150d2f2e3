/*
 * retry.h - what to do after one upstream attempt (pure, no I/O).
 *
 * One decision for the whole request path: whether the upstream's answer
 * may reach the client (asked as soon as its status is known, so an
 * answer that will be retried is never relayed), and, once the attempt
 * has ended, whether to stand by it, try another key, answer with an
 * error of our own, or cut a response that had already started.
 */
#ifndef CP_RETRY_H
#define CP_RETRY_H

#include "util.h"

enum retry_action {
	RETRY_RELAY, /* the upstream's answer stands, as relayed */
	RETRY_AGAIN, /* try another key: nothing reached the client */
	RETRY_FAIL,  /* answer with our own error (rv_status, rv_code...) */
	RETRY_CUT,   /* too late for a status: end the response short */
	RETRY_GONE,  /* the client left: nothing more to send */
};

struct retry_verdict {
	enum retry_action rv_action;
	int rv_status;		/* RETRY_FAIL: HTTP status */
	const char *rv_type;	/* RETRY_FAIL: OpenAI error type */
	const char *rv_code;	/* RETRY_FAIL: OpenAI error code */
	const char *rv_message; /* RETRY_FAIL: for the client */
};

/*
 * The verdict on an attempt that ended with err (upstream_forward's
 * result), after the upstream answered status (0 if it did not), with
 * started set once the response's status went to the client, and
 * attempts_left more attempts allowed.
 *   CP_OK: a 401/403 (a refusal of our key, never relayed) or a 429/5xx
 *     is retried while attempts are left; then a refused key becomes 502
 *     upstream_auth_failed and a 429/5xx is relayed; any other status is
 *     relayed.
 *   CP_ERR_HUP: RETRY_GONE.
 *   Any other error: RETRY_CUT once started; else CP_ERR_UPSTREAM_TOOBIG
 *     is 502 upstream_headers_too_large at once (another key gets the
 *     same answer), timeouts and transport failures are retried while
 *     attempts are left, then 504 upstream_timeout or 502
 *     upstream_unreachable.
 */
struct retry_verdict retry_decide(enum cp_err err, long status, int started,
				  int attempts_left);

/* Whether an answer with this status may reach the client now. */
int retry_relays(long status, int attempts_left);

#endif
