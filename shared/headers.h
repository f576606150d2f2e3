/*
 * headers.h - what crosses the proxy in each direction (pure, no I/O).
 *
 * Upstream -> client: end-to-end headers pass; hop-by-hop headers, framing
 * (Content-Length: the web server frames the stream), cookies, the
 * upstream's own CORS and server identity do not.
 * Client -> upstream: only an allow-list (hdr_request_allowed); the
 * client's Authorization and Cookie never go upstream. Content-Type is
 * always application/json (the only body the API takes), so a browser may
 * send text/plain and skip the CORS preflight round trip.
 */
#ifndef CP_HEADERS_H
#define CP_HEADERS_H

#include <stddef.h>

/*
 * line is one response header line as libcurl hands it over, with or
 * without the trailing CRLF. Returns 1 if it should reach the client.
 * Status lines, continuation lines and malformed lines return 0.
 */
int hdr_forward_response(const char *line, size_t len);

/* Length of line without trailing CR/LF characters. */
size_t hdr_trim_eol(const char *line, size_t len);

/*
 * How long a key should rest after a 429, from the response's header block
 * ("Name: value\r\n" lines): Retry-After (seconds), else the largest
 * x-ratelimit-reset-<what> (seconds, fractional) among the limits whose
 * x-ratelimit-remaining-<what> is 0. Milliseconds, or -1 if the headers
 * say nothing usable.
 */
long hdr_cooldown_ms(const char *block);

/* 1 if the header block has a header called name (case-insensitive). */
int hdr_has(const char *block, const char *name);

/*
 * The limits Cerebras announces on an answer, x-ratelimit-limit-<what>,
 * x-ratelimit-remaining-<what> and x-ratelimit-reset-<what> (seconds,
 * fractional), for each <what> in hdr_limit_names; each pair is used only
 * if present and sane.
 */
#define HDR_NLIMITS 6
extern const char *const hdr_limit_names[HDR_NLIMITS]; /* "tokens-minute"... */

struct hdr_limit {
	int hl_known;		/* limit and remaining both given */
	long long hl_limit;	/* the bucket's capacity */
	long long hl_remaining; /* what is left of it now */
	long hl_reset_ms;	/* until it is full again; -1 unknown */
};

/* Fills out[] from a response's header block ("Name: value\r\n" lines). */
void hdr_limits(const char *block, struct hdr_limit out[HDR_NLIMITS]);

/*
 * A client header value that may be copied into an upstream request:
 * no control characters, at most max bytes.
 */
int hdr_value_ok(const char *v, size_t max);

/*
 * Request headers the proxy forwards upstream, as CGI variable names and
 * header names; terminated by a {NULL, NULL} row.
 */
struct hdr_forward {
	const char *hf_cgi;  /* e.g. "HTTP_ACCEPT" */
	const char *hf_name; /* e.g. "Accept" */
};
extern const struct hdr_forward hdr_request_allowed[];

#endif
