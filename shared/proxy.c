/*
 * proxy.c - the request handler.
 */
#include "proxy.h"

#include "cors.h"
#include "headers.h"
#include "log.h"
#include "respond.h"
#include "route.h"

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define READ_CHUNK	8192	     /* request body read size */
#define BODY_KEEP_BYTES (256 * 1024) /* body buffer kept between requests */

#define PATH_MAX_LEN 2048

/*
 * Sent when a stream breaks after it started: an SSE "error" event in the
 * OpenAI error shape, and no "data: [DONE]", so the client can tell.
 */
#define STREAM_ERROR_EVENT                                                     \
	"\n\nevent: error\ndata: {\"error\":{\"message\":\"the upstream "      \
	"stream broke off\",\"type\":\"upstream_error\",\"param\":null,"       \
	"\"code\":\"stream_interrupted\"}}\n\n"
#define HDR_VALUE_MAX 4096

enum cp_err
worker_init(struct worker *w, const struct config *cfg, char *errbuf,
	    size_t errsz)
{
	enum cp_err err;

	memset(w, 0, sizeof(*w));
	w->w_cfg = cfg;
	buf_init(&w->w_body, (size_t)cfg->max_body_bytes);
	buf_init(&w->w_hdrs, 16 * 1024);
	err = sched_init(&w->w_sched, cfg, errbuf, errsz);
	if (err)
		return err;
	err = upstream_init(&w->w_up, cfg, errbuf, errsz);
	if (err) {
		sched_free(&w->w_sched);
		return err;
	}
	return CP_OK;
}

void
worker_warm(struct worker *w)
{
	sched_warm(&w->w_sched);
	upstream_warm(&w->w_up);
}

void
worker_free(struct worker *w)
{
	sched_free(&w->w_sched);
	upstream_free(&w->w_up);
	buf_free(&w->w_body);
	buf_free(&w->w_hdrs);
}

/*
 * Reads the request body to EOF (CONTENT_LENGTH may be empty or absent,
 * e.g. for chunked requests), up to the configured cap.
 */
static enum cp_err
read_body(const struct request_io *io, struct buf *body)
{
	size_t want;
	char probe;
	int n;
	enum cp_err err;

	/* Straight into the buffer: no copy, and no 16 KiB on the stack. */
	buf_reset(body);
	for (;;) {
		want = body->b_max - body->b_len;
		if (want > READ_CHUNK)
			want = READ_CHUNK;
		if (want == 0) {
			/* At the cap: any more input is too much. */
			n = io->io_read(io->io_ctx, &probe, 1);
			return n < 0   ? CP_ERR_IO
			       : n > 0 ? CP_ERR_TOOBIG
				       : CP_OK;
		}
		err = buf_reserve(body, want);
		if (err)
			return err;
		n = io->io_read(io->io_ctx, body->b_p + body->b_len, (int)want);
		if (n < 0)
			return CP_ERR_IO;
		if (n == 0)
			return CP_OK; /* buf_reserve made b_p valid */
		buf_commit(body, (size_t)n);
	}
}

static atomic_int abs_sleep_failed; /* logged once per process */

/* Sleeps until the absolute CLOCK_MONOTONIC time deadline_ns. */
static void
sleep_until(int64_t deadline_ns)
{
	struct timespec ts;
	int64_t left;
	int rc;

	if (mono_ns() >= deadline_ns)
		return; /* a sleep call costs a timer even when due */
	ts.tv_sec = (time_t)(deadline_ns / 1000000000);
	ts.tv_nsec = (long)(deadline_ns % 1000000000);
	do
		rc = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
	while (rc == EINTR);
	if (rc == 0)
		return;
	/* Never send early: fall back to relative sleeps (e.g. faked clocks). */
	if (!atomic_exchange(&abs_sleep_failed, 1))
		log_warnx("clock_nanosleep(TIMER_ABSTIME): %s; using relative "
			  "sleeps",
			  strerror(rc));
	while ((left = deadline_ns - mono_ns()) > 0) {
		ts.tv_sec = (time_t)(left / 1000000000);
		ts.tv_nsec = (long)(left % 1000000000);
		(void)nanosleep(&ts, NULL);
	}
}

/*
 * Waits until the slot, watching the client connection: returns
 * CP_ERR_HUP if the client leaves meanwhile. The kernel lets poll() time
 * out up to 0.1% late (800 us on an 800 ms wait), so the front end
 * watches all but the last stretch and clock_nanosleep(TIMER_ABSTIME),
 * whose slack is 50 us, ends the wait on time.
 */
static enum cp_err
wait_for_slot(const struct request_io *io, int64_t deadline_ns)
{
	int64_t left = deadline_ns - mono_ns();

	if (left > 0 && io->io_wait_gone(io->io_ctx, deadline_ns - 2000000 -
							     left / 500) != 0)
		return CP_ERR_HUP;
	sleep_until(deadline_ns);
	return CP_OK;
}

/* Collects the allow-listed client headers as "Name: value\n" lines. */
static enum cp_err
forward_headers(const struct request_io *io, struct buf *out)
{
	const struct hdr_forward *f;
	const char *v;
	enum cp_err err;

	buf_reset(out);
	err = buf_adds(out, "Content-Type: application/json\n");
	if (err)
		return err;
	for (f = hdr_request_allowed; f->hf_cgi != NULL; f++) {
		v = io->io_param(io->io_ctx, f->hf_cgi);
		if (v == NULL || v[0] == '\0' ||
		    !hdr_value_ok(v, HDR_VALUE_MAX))
			continue;
		err = buf_printf(out, "%s: %s\n", f->hf_name, v);
		if (err)
			return err;
	}
	return CP_OK;
}

static void
log_request(const struct worker *w, const struct request_io *io,
	    const struct slot *sl, int status, const struct upstream_res *res,
	    size_t bytes, int64_t t0, const char *outcome)
{
	char rid[80];
	const char *v;

	if (!w->w_cfg->log_requests)
		return;
	v = io->io_param(io->io_ctx, "HTTP_X_REQUEST_ID");
	log_escape(v ? v : "-", rid, sizeof(rid));
	log_info("chat id=%s key=#%d(%s) slot=%lld wait_ms=%.1f late_ms=%.3f "
		 "sent_mono=%.6f status=%d "
		 "ttfb_ms=%.1f total_ms=%.1f bytes=%zu new_conns=%ld %s",
		 rid, sl->s_key, w->w_cfg->key_fps[sl->s_key],
		 (long long)sl->s_at_us, (double)sl->s_wait_us / 1000.0,
		 (double)sl->s_late_us / 1000.0,
		 (double)(sl->s_deadline_ns + sl->s_late_us * 1000) / 1e9,
		 status, res->us_ttfb_ms, (double)(mono_ns() - t0) / 1e6, bytes,
		 res->us_connects, outcome);
}

/* 429 when no slot could be had: all keys resting, or the queue is full. */
static void
refuse_busy(struct resp *r, const struct slot *sl)
{
	char extra[64];
	long secs = (long)((sl->s_wait_us + 999999) / 1000000);

	if (secs < 1)
		secs = 1;
	snprintf(extra, sizeof(extra), "Retry-After: %ld\r\n", secs);
	if (sl->s_key == SLOT_ALL_RESTING)
		resp_error(r, 429, "rate_limit_exceeded",
			   "all_keys_cooling_down",
			   "every API key of the proxy is resting after a rate "
			   "limit; retry after the time in Retry-After",
			   extra);
	else
		resp_error(
			r, 429, "rate_limit_exceeded", "proxy_saturated",
			"the proxy is saturated: the next free slot is "
			"further away than its queue allows; retry after the "
			"time in Retry-After",
			extra);
}

/*
 * Finishes the request after one upstream attempt, or returns 0 when
 * another attempt should be made (nothing went to the client yet).
 */
static int
forward_done(struct worker *w, const struct request_io *io, struct resp *r,
	     const struct slot *sl, const struct upstream_res *res,
	     enum cp_err err, int64_t t0, int retry_ok)
{
	switch (err) {
	case CP_OK:
		log_request(w, io, sl, r->r_status, res, r->r_bytes, t0, "ok");
		return 1;
	case CP_ERR_HUP:
		log_request(w, io, sl, r->r_started ? r->r_status : 499, res,
			    r->r_bytes, t0, "client left");
		return 1;
	case CP_ERR_UPSTREAM_RETRY:
		log_request(w, io, sl, (int)res->us_status, res, 0, t0,
			    "retrying on another key");
		return 0;
	case CP_ERR_UPSTREAM_AUTH:
		log_request(w, io, sl, 502, res, 0, t0, res->us_detail);
		if (retry_ok)
			return 0;
		resp_error(r, 502, "upstream_error", "upstream_auth_failed",
			   "the Cerebras API refused the proxy's API key; the "
			   "proxy's operator has to fix its configuration",
			   NULL);
		return 1;
	default: break;
	}
	/* Transport failure or timeout. */
	log_request(w, io, sl, r->r_started ? r->r_status : 502, res,
		    r->r_bytes, t0, res->us_detail);
	if (!r->r_started && retry_ok)
		return 0;
	if (r->r_started) {
		/* Too late for a status: tell a stream's reader it broke. */
		if (res->us_sse)
			(void)resp_write(r, STREAM_ERROR_EVENT,
					 sizeof(STREAM_ERROR_EVENT) - 1);
		return 1;
	}
	if (err == CP_ERR_UPSTREAM_TIMEOUT)
		resp_error(r, 504, "upstream_timeout", "upstream_timeout",
			   "the Cerebras API did not answer in time", NULL);
	else
		resp_error(
			r, 502, "upstream_error", "upstream_unreachable",
			"the proxy could not get an answer from the Cerebras "
			"API",
			NULL);
	return 1;
}

static void
handle_chat(struct worker *w, const struct request_io *io, struct resp *r)
{
	const struct config *cfg = w->w_cfg;
	struct slot sl;
	struct upstream_req ur;
	struct upstream_res res;
	struct sched_outcome so;
	char errbuf[256];
	char timing[64];
	enum cp_err err;
	int64_t t0 = mono_ns();
	int attempt;
	int attempts;

	err = read_body(io, &w->w_body);
	if (err == CP_ERR_TOOBIG) {
		snprintf(errbuf, sizeof(errbuf),
			 "request body larger than %ld bytes",
			 cfg->max_body_bytes);
		resp_error(r, 413, "invalid_request_error", "request_too_large",
			   errbuf, NULL);
		return;
	}
	if (err) {
		resp_error(r, 400, "invalid_request_error", "bad_request_body",
			   "could not read the request body", NULL);
		return;
	}
	if (w->w_body.b_len == 0) {
		resp_error(
			r, 400, "invalid_request_error", "empty_body",
			"the request body is empty: send the chat completion "
			"request as JSON",
			NULL);
		return;
	}
	err = forward_headers(io, &w->w_hdrs);
	if (err) {
		resp_error(r, 400, "invalid_request_error", "bad_headers",
			   "request headers too large", NULL);
		return;
	}
	/* A client that already left gets no slot and no upstream request. */
	if (io->io_gone(io->io_ctx))
		return;
	attempts = cfg->max_attempts < cfg->nkeys ? (int)cfg->max_attempts
						  : cfg->nkeys;
	for (attempt = 1;; attempt++) {
		err = sched_reserve(&w->w_sched, &sl);
		if (err) {
			resp_error(r, 503, "service_unavailable",
				   "scheduler_unavailable",
				   "the proxy cannot reach its scheduler "
				   "(Redis); try again shortly",
				   "Retry-After: 1\r\n");
			return;
		}
		if (sl.s_key < 0) {
			refuse_busy(r, &sl);
			return;
		}
		err = wait_for_slot(io, sl.s_deadline_ns);
		sl.s_late_us = (mono_ns() - sl.s_deadline_ns) / 1000;
		if (err == CP_ERR_HUP) {
			/* Its slot can go to the next request, if still last. */
			sched_release(&w->w_sched, &sl);
			memset(&res, 0, sizeof(res));
			log_request(w, io, &sl, 499, &res, 0, t0,
				    "client left while queued");
			return;
		}
		snprintf(timing, sizeof(timing),
			 "Server-Timing: queue;dur=%.1f\r\n",
			 (double)(mono_ns() - t0) / 1e6);
		memset(&ur, 0, sizeof(ur));
		ur.ur_key = cfg->keys[sl.s_key];
		ur.ur_hdr_lines = w->w_hdrs.b_p;
		ur.ur_body = w->w_body.b_p;
		ur.ur_body_len = w->w_body.b_len;
		ur.ur_io = io;
		ur.ur_extra = timing;
		ur.ur_retry_ok = attempt < attempts;
		err = upstream_forward(&w->w_up, &ur, r, &res);
		so.so_status = res.us_status;
		so.so_rest_ms = res.us_cooldown_ms;
		sched_settle(&w->w_sched, &sl, &so);
		if (!forward_done(w, io, r, &sl, &res, err, t0, ur.ur_retry_ok))
			continue;
		return;
	}
}

void
proxy_handle(struct worker *w, const struct request_io *io)
{
	const struct config *cfg = w->w_cfg;
	struct route_vars rv;
	struct resp r;
	struct buf extra;
	char path[PATH_MAX_LEN];
	const char *method = io->io_param(io->io_ctx, "REQUEST_METHOD");
	const char *origin = io->io_param(io->io_ctx, "HTTP_ORIGIN");
	const char *allow;
	char msg[160];
	char esc[64];

	if (method == NULL)
		method = "";
	if (origin != NULL && !hdr_value_ok(origin, 1024))
		origin = NULL;
	resp_init(&r, io, cfg->cors_origins, origin,
		  strcmp(method, "HEAD") == 0);
	buf_init(&extra, 8192);
	rv.rv_script_name = io->io_param(io->io_ctx, "SCRIPT_NAME");
	rv.rv_path_info = io->io_param(io->io_ctx, "PATH_INFO");
	rv.rv_document_uri = io->io_param(io->io_ctx, "DOCUMENT_URI");
	rv.rv_request_uri = io->io_param(io->io_ctx, "REQUEST_URI");
	if (route_path(&rv, path, sizeof(path)) != 0) {
		resp_error(&r, 414, "invalid_request_error", "uri_too_long",
			   "request path too long", NULL);
		goto done;
	}
	switch (route_decide(method, path, &allow)) {
	case ROUTE_CHAT: handle_chat(w, io, &r); break;
	case ROUTE_HEALTH:
		if (resp_begin(&r, 200, "text/plain; charset=utf-8",
			       "Cache-Control: no-store\r\n") == CP_OK)
			(void)resp_write(&r, "OK", 2);
		break;
	case ROUTE_PREFLIGHT:
		if (cors_preflight_headers(
			    &extra,
			    io->io_param(
				    io->io_ctx,
				    "HTTP_ACCESS_CONTROL_REQUEST_HEADERS")) !=
		    CP_OK)
			break;
		(void)resp_begin(&r, 204, NULL, extra.b_p);
		break;
	case ROUTE_NOT_ALLOWED:
		if (buf_printf(&extra, "Allow: %s\r\n", allow) != CP_OK)
			break;
		snprintf(msg, sizeof(msg),
			 "method %s not allowed here (allowed: %s)",
			 log_escape(method, esc, sizeof(esc)), allow);
		resp_error(&r, 405, "invalid_request_error",
			   "method_not_allowed", msg, extra.b_p);
		break;
	case ROUTE_NOT_FOUND:
		snprintf(msg, sizeof(msg),
			 "no such endpoint; use POST /v1/chat/completions");
		resp_error(&r, 404, "invalid_request_error", "not_found", msg,
			   NULL);
		break;
	}
done:
	/* A thread keeps a small body buffer, not the largest body it saw. */
	if (w->w_body.b_cap > BODY_KEEP_BYTES)
		buf_free(&w->w_body);
	w->w_served++;
	buf_free(&extra);
	resp_free(&r);
}
