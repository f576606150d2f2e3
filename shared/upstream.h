/*
 * upstream.h - forwarding one request to Cerebras with libcurl.
 *
 * One easy handle per worker (thread), kept across requests so the TCP and
 * TLS connection is reused. The answer goes to a sink (callbacks) as it
 * arrives: its status and filtered headers once, then each chunk of body
 * at once; nothing is buffered here, and nothing here knows what the
 * client is sent: that is the sink's business (respond.c, through
 * proxy.c). One thing is decided here for every sink: no configured API
 * key in the answer reaches it. Each occurrence in a forwarded header or
 * in the body is masked (scrub.h), including one split across two chunks
 * (the bytes that could start a key are held back until the next chunk),
 * and the answer is logged once as a warning naming the key by index and
 * fingerprint.
 */
#ifndef CP_UPSTREAM_H
#define CP_UPSTREAM_H

#include "config.h"
#include "scrub.h"
#include "util.h"

#include <curl/curl.h>

struct upstream {
	const struct config *up_cfg; /* borrowed */
	CURL *up_curl;		     /* owned */
	char up_errbuf[CURL_ERROR_SIZE];
	struct buf up_hdrs; /* owned: filtered upstream headers */
	/*
	 * Every configured API key is masked in what the upstream sends
	 * before it reaches the sink (headers and body): see scrub.h.
	 */
	struct scrub up_scrub; /* owned; its strings borrowed from up_cfg */
	struct buf up_scratch; /* owned: a copy of a chunk being masked */
	struct buf up_hold;    /* owned: a body's tail that may start a key */
};

/* Where the answer goes. Each callback returns CP_OK to go on. */
struct upstream_sink {
	/*
	 * The answer's status, whether it is an event stream, and its
	 * end-to-end headers ("Name: value\r\n" lines, hop-by-hop and CORS
	 * dropped). Called once per answer, before its first body byte (or
	 * at its end if it has none).
	 */
	enum cp_err (*sk_begin)(void *ctx, long status, int sse,
				const char *hdrs);
	/*
	 * One chunk of the body, as it arrived but with keys masked; a few
	 * bytes at a chunk's end that could start a key may come with the
	 * next chunk instead.
	 */
	enum cp_err (*sk_body)(void *ctx, const char *data, size_t len);
	/* 1 once the client has gone (polled while the upstream is silent). */
	int (*sk_gone)(void *ctx);
	void *sk_ctx;
};

/* What the proxy sends besides the body (values borrowed). */
struct upstream_req {
	const char *ur_url; /* the endpoint; NULL: the chat URL */
	const char *ur_key; /* the API key for this request */
	const char
		*ur_hdr_lines; /* "Name: value\n" lines from the allow-list */
	const char *ur_body;
	size_t ur_body_len;
};

struct upstream_res {
	long us_status;	     /* upstream HTTP status, 0 if none */
	long us_connects;    /* new connections this transfer (0 = reused) */
	double us_ttfb_ms;   /* until the first response byte */
	int us_sse;	     /* the answer is text/event-stream */
	enum cp_err us_sink; /* what the sink returned, if it stopped it */
	char us_detail[CURL_ERROR_SIZE]; /* human-readable reason on failure */
};

/* On failure u holds nothing to free and errbuf says why. */
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
 * Sends req and hands the answer to sink. Returns CP_OK once the upstream
 * answer has ended, whatever its status; CP_ERR_HUP if the client went
 * away (the sink said so, or sk_gone); CP_ERR_UPSTREAM_TIMEOUT if the
 * upstream was silent too long; CP_ERR_UPSTREAM_TOOBIG if its header
 * block was over the cap; CP_ERR_UPSTREAM if it could not be reached or
 * broke off; another error the sink returned. res says more.
 */
enum cp_err upstream_forward(struct upstream *u, const struct upstream_req *req,
			     const struct upstream_sink *sink,
			     struct upstream_res *res);

/*
 * GETs req->ur_url (NULL: the chat URL) with req's key and header lines
 * (its body is ignored) on u's handle, which is then set back to POST
 * for the next upstream_forward. The answer's body, keys masked as for a
 * forwarded answer, goes into out (reset first; allocated, "" if the
 * answer had none), within out's cap: beyond it CP_ERR_UPSTREAM_TOOBIG.
 * gone (may be NULL) is polled with gone_ctx while the upstream is
 * silent: 1 ends the transfer with CP_ERR_HUP. Otherwise returns as
 * upstream_forward: CP_OK once an answer ended, whatever its status
 * (res->us_status), with the same timeouts.
 */
enum cp_err upstream_get(struct upstream *u, const struct upstream_req *req,
			 struct buf *out, int (*gone)(void *ctx),
			 void *gone_ctx, struct upstream_res *res);

#endif
