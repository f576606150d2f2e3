/*
 * respond.h - writing a CGI response to the web server, chunk by chunk.
 *
 * Before the first byte, anything can still become a proper status and
 * OpenAI-style JSON error; after it, a failure can only end the stream.
 * Every response carries the CORS headers. Each resp_write() is flushed
 * to the web server at once (one FastCGI record), never buffered; the
 * headers go out with the first body chunk, or at the end of the request.
 */
#ifndef CP_RESPOND_H
#define CP_RESPOND_H

#include "request.h"
#include "util.h"

#include <stddef.h>

struct resp {
	const struct request_io *r_io; /* borrowed */
	const char *r_cors;	       /* borrowed: CORS_ALLOW_ORIGINS */
	const char *r_origin; /* borrowed: request Origin, may be NULL */
	/* borrowed: the request's id, sent as X-Request-Id; NULL: none */
	const char *r_request_id;
	int r_head_only; /* HEAD: headers, no body */
	int r_started;	 /* headers went out */
	int r_hup;	 /* a write failed: the client is gone */
	int r_buffered;	 /* not a stream: let writes pile up until the end */
	int r_sse;	 /* relaying an event stream */
	int r_status;
	size_t r_bytes;	  /* body bytes written */
	struct buf r_hdr; /* owned: header block being built */
};

void resp_init(struct resp *r, const struct request_io *io, const char *cors,
	       const char *origin, int head_only);
void resp_free(struct resp *r);

/*
 * Sends "Status:", Content-Type, the CORS headers, and extra (zero or more
 * complete "Name: value\r\n" lines, may be NULL).
 */
enum cp_err resp_begin(struct resp *r, int status, const char *content_type,
		       const char *extra);

/*
 * Starts relaying an upstream answer: its status and end-to-end header
 * lines (hdrs), then the proxy's policy: an event stream gets
 * "Cache-Control: no-cache" and "X-Accel-Buffering: no" and each write is
 * flushed at once; any other answer gets "Cache-Control: no-store" and
 * leaves in one write with resp_finish (one web-server wake-up, not one
 * per chunk). extra: more header lines (may be NULL).
 */
enum cp_err resp_relay_begin(struct resp *r, long status, int sse,
			     const char *hdrs, const char *extra);

/*
 * Ends a relayed response that broke after it started, when only the
 * body can still say so: an event stream gets an SSE "error" event in the
 * OpenAI error shape and no "data: [DONE]", so its reader can tell.
 */
void resp_cut(struct resp *r);

/*
 * Writes one chunk and flushes it, unless r_buffered is set (a complete
 * JSON answer: it goes out with the end of the request, in one piece).
 * CP_ERR_HUP once the client is gone.
 */
enum cp_err resp_write(struct resp *r, const char *data, size_t len);

/*
 * Ends the response: sends whatever is still buffered (a JSON answer, an
 * error), so a failure of that last write is seen before the request is
 * logged. CP_ERR_HUP if the client is gone.
 */
enum cp_err resp_finish(struct resp *r);

/*
 * A complete OpenAI-style error response:
 * {"error":{"message":...,"type":...,"code":...}}. Does nothing if the
 * response already started.
 */
enum cp_err resp_error(struct resp *r, int status, const char *type,
		       const char *code, const char *message,
		       const char *extra);

/* Appends s to b as the inside of a JSON string. */
enum cp_err json_escape(struct buf *b, const char *s);

/* "OK", "Not Found", ...; "" for unknown codes. */
const char *http_reason(int status);

#endif
