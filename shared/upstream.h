/*
 * upstream.h - forwarding one request to Cerebras with libcurl.
 *
 * One easy handle per worker (thread), kept across requests so the TCP and
 * TLS connection is reused. Each chunk libcurl hands over goes to the
 * client at once through struct resp; nothing is buffered.
 */
#ifndef CP_UPSTREAM_H
#define CP_UPSTREAM_H

#include "config.h"
#include "respond.h"
#include "util.h"

#include <curl/curl.h>

struct upstream {
	const struct config *up_cfg; /* borrowed */
	CURL *up_curl;		     /* owned */
	char up_errbuf[CURL_ERROR_SIZE];
	struct buf up_hdrs; /* owned: filtered upstream headers */
};

/* What the proxy sends besides the body (values borrowed, may be NULL). */
struct upstream_req {
	const char *ur_key; /* the API key for this request */
	const char
		*ur_hdr_lines; /* "Name: value\n" lines from the allow-list */
	const char *ur_body;
	size_t ur_body_len;
	const struct request_io *ur_io; /* the client's, for io_gone */
	const char *ur_extra; /* extra response header lines, may be NULL */
	int ur_retry_ok; /* another attempt may follow: keep 429/5xx back */
};

struct upstream_res {
	long us_status;	     /* upstream HTTP status, 0 if none */
	long us_connects;    /* new connections this transfer (0 = reused) */
	double us_ttfb_ms;   /* until the first response byte */
	int us_sse;	     /* the answer is text/event-stream */
	long us_cooldown_ms; /* a 429's Retry-After or reset time; -1 none */
	char us_detail[CURL_ERROR_SIZE]; /* human-readable reason on failure */
};

enum cp_err upstream_init(struct upstream *u, const struct config *cfg,
			  char *errbuf, size_t errsz);
void upstream_free(struct upstream *u);

/*
 * Opens the TCP and TLS connection before the first request (a HEAD to the
 * chat URL, without credentials, answer discarded), so that request does
 * not pay the handshake after its slot. A failure is logged, not fatal.
 */
void upstream_warm(struct upstream *u);

/*
 * Sends req and streams the answer into resp (status, filtered headers,
 * body). Returns CP_OK once the upstream answer was relayed, whatever its
 * status; CP_ERR_UPSTREAM / CP_ERR_UPSTREAM_TIMEOUT if the upstream failed
 * (resp may have started: then the stream is cut short); CP_ERR_HUP if
 * the client went away; CP_ERR_UPSTREAM_AUTH if the upstream answered 401
 * or 403 (nothing of that answer is relayed); CP_ERR_UPSTREAM_RETRY if it
 * answered 429 or 5xx and req->ur_retry_ok (nothing relayed either).
 */
enum cp_err upstream_forward(struct upstream *u, const struct upstream_req *req,
			     struct resp *resp, struct upstream_res *res);

#endif
