/*
 * proxy.c - the request handler.
 */
#include "proxy.h"

#include "chat.h"
#include "cors.h"
#include "headers.h"
#include "health.h"
#include "log.h"
#include "metrics.h"
#include "models.h"
#include "respond.h"
#include "route.h"

#include <stdio.h>
#include <string.h>

#define BODY_KEEP_BYTES (256 * 1024) /* body buffer kept between requests */
#define PATH_MAX_LEN	2048

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
 * Starts r for the request on io: its CORS origin (if sane) and whether
 * it is a HEAD. Returns the method, "" if none.
 */
static const char *
resp_open(struct resp *r, const struct config *cfg, const struct request_io *io)
{
	const char *method = io->io_param(io->io_ctx, "REQUEST_METHOD");
	const char *origin = io->io_param(io->io_ctx, "HTTP_ORIGIN");

	if (method == NULL)
		method = "";
	if (origin != NULL && !hdr_value_ok(origin, 1024))
		origin = NULL;
	resp_init(r, io, cfg->cors_origins, origin,
		  strcmp(method, "HEAD") == 0);
	return method;
}

/*
 * The request's path below the mount point, into path; CP_ERR_TOOBIG if
 * it is longer.
 */
static enum cp_err
request_path(const struct request_io *io, char *path, size_t pathsz)
{
	struct route_vars rv;

	rv.rv_script_name = io->io_param(io->io_ctx, "SCRIPT_NAME");
	rv.rv_path_info = io->io_param(io->io_ctx, "PATH_INFO");
	rv.rv_document_uri = io->io_param(io->io_ctx, "DOCUMENT_URI");
	rv.rv_request_uri = io->io_param(io->io_ctx, "REQUEST_URI");
	return route_path(&rv, path, pathsz);
}

/* The request's status as the metrics count it: 499 if none went out. */
static int
resp_status(const struct resp *r)
{
	return r->r_started ? r->r_status : 499;
}

/* Since the accept, or (if unknown) since t0. */
static int64_t
since_accept(const struct request_io *io, int64_t t0)
{
	int64_t now = mono_ns();

	if (io->io_accepted_ns > 0 && io->io_accepted_ns <= t0)
		t0 = io->io_accepted_ns;
	return now - t0;
}

void
proxy_handle(struct worker *w, const struct request_io *io)
{
	const struct config *cfg = w->w_cfg;
	int64_t t0 = mono_ns();
	enum route route = ROUTE_NOT_FOUND;
	struct resp r;
	struct buf extra;
	char path[PATH_MAX_LEN];
	const char *method = resp_open(&r, cfg, io);
	const char *allow;
	const char *id;
	size_t idlen = 0;
	char msg[160];
	char esc[64];

	metrics_open(cfg); /* maps them once per process */
	metrics_request_begin();
	buf_init(&extra, 8192);
	if (request_path(io, path, sizeof(path)) != CP_OK) {
		resp_error(&r, 414, "invalid_request_error", "uri_too_long",
			   "request path too long", NULL);
		goto done;
	}
	route = route_decide(method, path, &allow);
	switch (route) {
	case ROUTE_CHAT: chat_handle(w, io, &r, REQBODY_CHAT); break;
	case ROUTE_COMPLETIONS:
		chat_handle(w, io, &r, REQBODY_COMPLETION);
		break;
	case ROUTE_MODELS: models_handle(w, io, &r, NULL, 0); break;
	case ROUTE_MODEL:
		id = route_model_id(path, &idlen);
		models_handle(w, io, &r, id, idlen);
		break;
	case ROUTE_READY: health_ready(w, io, &r); break;
	case ROUTE_METRICS: metrics_handle(w, io, &r); break;
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
			 "no such endpoint; use POST /v1/chat/completions, "
			 "POST /v1/completions or GET /v1/models");
		resp_error(&r, 404, "invalid_request_error", "not_found", msg,
			   NULL);
		break;
	}
done:
	/* Sends what is left (a chat request has done so before its log). */
	(void)resp_finish(&r);
	metrics_request_end(metrics_route_of(route), resp_status(&r),
			    since_accept(io, t0));
	/* A thread keeps a small body buffer, not the largest body it saw. */
	if (w->w_body.b_cap > BODY_KEEP_BYTES)
		buf_free(&w->w_body);
	w->w_served++;
	buf_free(&extra);
	resp_free(&r);
}

void
proxy_refuse_saturated(const struct config *cfg, const struct request_io *io)
{
	int64_t cap = cfg->max_body_bytes;
	int64_t t0 = mono_ns();
	struct resp r;
	char sink[4096];
	char path[PATH_MAX_LEN];
	const char *method;
	const char *allow;
	int n;

	/* The web server sent the whole body already: read it, bounded. */
	while (cap > 0 && (n = io->io_read(io->io_ctx, sink, sizeof(sink))) > 0)
		cap -= n;
	method = resp_open(&r, cfg, io);
	resp_error(&r, 429, "rate_limit_exceeded", "proxy_saturated",
		   "the proxy is saturated: no worker thread came free within "
		   "its queue time; retry after the time in Retry-After",
		   "Retry-After: 1\r\n");
	(void)resp_finish(&r);
	metrics_open(cfg);
	metrics_request_done(
		metrics_route_of(request_path(io, path, sizeof(path)) == CP_OK
					 ? route_decide(method, path, &allow)
					 : ROUTE_NOT_FOUND),
		resp_status(&r), since_accept(io, t0));
	resp_free(&r);
}
