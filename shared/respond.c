/*
 * respond.c - CGI response headers and unbuffered body writes.
 */
#include "respond.h"

#include "cors.h"

#include <stdio.h>
#include <string.h>

#define RESP_MAX_HEADERS (64 * 1024)

void
resp_init(struct resp *r, const struct request_io *io, const char *cors,
	  const char *origin, int head_only)
{
	memset(r, 0, sizeof(*r));
	r->r_io = io;
	r->r_cors = cors;
	r->r_origin = origin;
	r->r_head_only = head_only;
	buf_init(&r->r_hdr, RESP_MAX_HEADERS);
}

void
resp_free(struct resp *r)
{
	buf_free(&r->r_hdr);
}

const char *
http_reason(int status)
{
	switch (status) {
	case 200: return "OK";
	case 201: return "Created";
	case 204: return "No Content";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 402: return "Payment Required";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 411: return "Length Required";
	case 413: return "Content Too Large";
	case 414: return "URI Too Long";
	case 415: return "Unsupported Media Type";
	case 422: return "Unprocessable Content";
	case 429: return "Too Many Requests";
	case 500: return "Internal Server Error";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	}
	return "";
}

/* Writes to the web server; notes a hang-up. */
static enum cp_err
resp_put(struct resp *r, const char *data, size_t len, int flush)
{
	size_t off = 0;
	int chunk;

	if (r->r_hup)
		return CP_ERR_HUP;
	do {
		chunk = len - off > 1 << 30 ? 1 << 30 : (int)(len - off);
		if (r->r_io->io_write(r->r_io->io_ctx, data + off, chunk,
				      flush && off + (size_t)chunk == len) !=
		    CP_OK) {
			r->r_hup = 1;
			return CP_ERR_HUP;
		}
		off += (size_t)chunk;
	} while (off < len);
	return CP_OK;
}

/*
 * Sends the header block: "Status:", Content-Type (may be NULL), the CORS
 * headers, then each of the NULL-terminated header-line groups in lines.
 */
static enum cp_err
resp_begin_lines(struct resp *r, int status, const char *content_type,
		 const char *const *lines)
{
	struct buf *b = &r->r_hdr;
	enum cp_err err;

	if (r->r_started)
		return CP_OK;
	buf_reset(b);
	err = buf_printf(b, "Status: %d %s\r\n", status, http_reason(status));
	if (!err && content_type != NULL)
		err = buf_printf(b, "Content-Type: %s\r\n", content_type);
	if (!err)
		err = cors_headers(b, r->r_cors, r->r_origin);
	/* A page on another origin may read it too (cors_headers). */
	if (!err && r->r_request_id != NULL)
		err = buf_printf(b, "X-Request-Id: %s\r\n", r->r_request_id);
	for (; !err && *lines != NULL; lines++)
		err = buf_adds(b, *lines);
	if (!err)
		err = buf_add(b, "\r\n", 2);
	if (err)
		return err;
	r->r_started = 1;
	r->r_status = status;
	return resp_put(r, b->b_p, b->b_len, 0);
}

enum cp_err
resp_begin(struct resp *r, int status, const char *content_type,
	   const char *extra)
{
	const char *lines[2] = {extra, NULL};

	return resp_begin_lines(r, status, content_type, lines);
}

enum cp_err
resp_relay_begin(struct resp *r, long status, int sse, const char *hdrs,
		 const char *extra)
{
	const char *lines[4] = {hdrs,
				sse ? "Cache-Control: no-cache\r\n"
				      "X-Accel-Buffering: no\r\n"
				    : "Cache-Control: no-store\r\n",
				extra, NULL};

	/* Content-Type is among the upstream's headers already. */
	r->r_sse = sse;
	r->r_buffered = !sse;
	return resp_begin_lines(r, (int)status, NULL, lines);
}

/*
 * Sent when a stream breaks after it started: an SSE "error" event in the
 * OpenAI error shape, and no "data: [DONE]", so the client can tell.
 */
#define STREAM_ERROR_EVENT                                                     \
	"\n\nevent: error\ndata: {\"error\":{\"message\":\"the upstream "      \
	"stream broke off\",\"type\":\"upstream_error\",\"param\":null,"       \
	"\"code\":\"stream_interrupted\"}}\n\n"

void
resp_cut(struct resp *r)
{
	if (r->r_started && r->r_sse)
		(void)resp_write(r, STREAM_ERROR_EVENT,
				 sizeof(STREAM_ERROR_EVENT) - 1);
}

enum cp_err
resp_write(struct resp *r, const char *data, size_t len)
{
	enum cp_err err;

	if (r->r_hup)
		return CP_ERR_HUP;
	if (r->r_head_only)
		return CP_OK;
	err = resp_put(r, data, len, !r->r_buffered);
	if (!err)
		r->r_bytes += len;
	return err;
}

enum cp_err
resp_finish(struct resp *r)
{
	if (r->r_hup)
		return CP_ERR_HUP;
	if (r->r_io->io_finish(r->r_io->io_ctx) != CP_OK) {
		r->r_hup = 1;
		return CP_ERR_HUP;
	}
	return CP_OK;
}

enum cp_err
json_escape(struct buf *b, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	enum cp_err err = CP_OK;
	const char *run = s;
	char esc[7];

	for (; *s != '\0' && !err; s++) {
		unsigned char c = (unsigned char)*s;

		if (c >= 0x20 && c != '"' && c != '\\')
			continue;
		err = buf_add(b, run, (size_t)(s - run));
		if (err)
			break;
		if (c == '"' || c == '\\') {
			esc[0] = '\\';
			esc[1] = (char)c;
			err = buf_add(b, esc, 2);
		} else {
			memcpy(esc, "\\u00", 4);
			esc[4] = hex[c >> 4];
			esc[5] = hex[c & 15];
			err = buf_add(b, esc, 6);
		}
		run = s + 1;
	}
	if (!err)
		err = buf_add(b, run, (size_t)(s - run));
	return err;
}

enum cp_err
resp_error(struct resp *r, int status, const char *type, const char *code,
	   const char *message, const char *extra)
{
	struct buf body;
	enum cp_err err;

	if (r->r_started)
		return CP_OK;
	buf_init(&body, 4096);
	err = buf_adds(&body, "{\"error\":{\"message\":\"");
	if (!err)
		err = json_escape(&body, message);
	if (!err)
		err = buf_adds(&body, "\",\"type\":\"");
	if (!err)
		err = json_escape(&body, type);
	if (!err)
		err = buf_adds(&body, "\",\"param\":null,\"code\":\"");
	if (!err)
		err = json_escape(&body, code);
	if (!err)
		err = buf_adds(&body, "\"}}\n");
	if (!err)
		err = resp_begin(r, status, "application/json", extra);
	if (!err)
		err = resp_write(r, body.b_p, body.b_len);
	buf_free(&body);
	return err;
}
