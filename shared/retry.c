/*
 * retry.c - the retry decision.
 */
#include "retry.h"

static int
key_refused(long status)
{
	return status == 401 || status == 403;
}

/* Worth another key: the upstream is busy or limited, not the request. */
static int
transient(long status)
{
	return status == 429 || status >= 500;
}

int
retry_relays(long status, int attempts_left)
{
	return retry_decide(CP_OK, status, 0, attempts_left).rv_action ==
	       RETRY_RELAY;
}

static struct retry_verdict
fail(int status, const char *type, const char *code, const char *message)
{
	struct retry_verdict v;

	v.rv_action = RETRY_FAIL;
	v.rv_status = status;
	v.rv_type = type;
	v.rv_code = code;
	v.rv_message = message;
	return v;
}

static struct retry_verdict
act(enum retry_action a)
{
	struct retry_verdict v = {a, 0, NULL, NULL, NULL};

	return v;
}

struct retry_verdict
retry_decide(enum cp_err err, long status, int started, int attempts_left)
{
	int more = attempts_left > 0;

	if (err == CP_ERR_HUP)
		return act(RETRY_GONE);
	if (err == CP_OK) {
		if ((key_refused(status) || transient(status)) && more &&
		    !started)
			return act(RETRY_AGAIN);
		if (key_refused(status) && !started)
			return fail(502, "upstream_error",
				    "upstream_auth_failed",
				    "the Cerebras API refused the proxy's API "
				    "key; the proxy's operator has to fix its "
				    "configuration");
		return act(RETRY_RELAY);
	}
	if (started)
		return act(RETRY_CUT);
	if (err == CP_ERR_UPSTREAM_TOOBIG)
		return fail(502, "upstream_error", "upstream_headers_too_large",
			    "the Cerebras API answered with more headers "
			    "than the proxy accepts");
	if (more)
		return act(RETRY_AGAIN);
	if (err == CP_ERR_UPSTREAM_TIMEOUT)
		return fail(504, "upstream_timeout", "upstream_timeout",
			    "the Cerebras API did not answer in time");
	return fail(502, "upstream_error", "upstream_unreachable",
		    "the proxy could not get an answer from the Cerebras API");
}
